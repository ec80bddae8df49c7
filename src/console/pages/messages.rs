//! Messages found by user, phone, request or campaign, and one message with its history.

use super::*;

struct MessageRow {
    id: i64,
    user: String,
    origin: String,
    platform: String,
    status: String,
    attempts: i32,
    created: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "console/messages.html")]
struct MessagesPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    app: &'a str,
    kinds: Vec<(String, &'static str)>,
    by: String,
    q: String,
    note: Option<String>,
    searched: bool,
    rows: Vec<MessageRow>,
}

#[derive(Deserialize)]
pub struct FindQuery {
    #[serde(default)]
    by: String,
    #[serde(default)]
    q: String,
}

/// What a message was sent for: its campaign or its push request.
fn origin(campaign: Option<i64>, request: Option<&str>) -> String {
    match (campaign, request) {
        (Some(c), _) => format!("campaign #{c}"),
        (None, Some(r)) => format!("push {r}"),
        (None, None) => String::new(),
    }
}

/// The newest messages found, at most this many.
const FOUND: i64 = 50;

/// `/console/apps/{app}/messages`: an app's messages by user, phone number,
/// push request id or campaign (id or key), newest first.
pub async fn messages<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(query): Query<FindQuery>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    let q = query.q.trim().to_owned();
    let by = if query.by.is_empty() {
        "user".to_owned()
    } else {
        query.by.clone()
    };
    let mut note = None;
    let mut rows = Vec::new();
    let searched = !q.is_empty();
    if searched {
        let mut filter = crate::store::DeliveryFilter {
            user_external_id: None,
            campaign_id: None,
            request_id: None,
            status: None,
            since: None,
            before_id: None,
            limit: FOUND,
        };
        let mut users = Vec::new();
        let mut ok = true;
        match by.as_str() {
            "user" => users.push(q.clone()),
            "phone" => match crate::domain::audience::normalize_phone(&q) {
                Some(phone) => {
                    users = st.store.user_find_by_phone(&app, &phone).await?;
                    if users.is_empty() {
                        note = Some(format!("No user has the number {phone}."));
                        ok = false;
                    }
                }
                None => {
                    note = Some(
                        "That is not a phone number (E.164, such as +4915112345678).".to_owned(),
                    );
                    ok = false;
                }
            },
            "request" => filter.request_id = Some(&q),
            "campaign" => {
                let found = match q.parse::<i64>() {
                    Ok(id) => st.store.campaign_get_by_id(&app, id).await?,
                    Err(_) => st.store.campaign_get(&app, &q).await?,
                };
                match found {
                    Some(c) => filter.campaign_id = Some(c.id),
                    None => {
                        note = Some("No campaign has that id or key.".to_owned());
                        ok = false;
                    }
                }
            }
            _ => return Err(PageError::NotFound),
        }
        if ok {
            let mut found = Vec::new();
            if users.is_empty() {
                found = st.store.message_list(&app, &filter).await?;
            } else {
                for user in &users {
                    filter.user_external_id = Some(user);
                    found.extend(st.store.message_list(&app, &filter).await?);
                }
                found.sort_by_key(|m| std::cmp::Reverse(m.id));
                found.truncate(FOUND as usize);
            }
            rows = found
                .into_iter()
                .map(|m| MessageRow {
                    origin: origin(m.campaign_id, m.request_id.as_deref()),
                    id: m.id,
                    user: m.user_external_id.unwrap_or_default(),
                    platform: m.platform.unwrap_or_default(),
                    status: m.status,
                    attempts: m.attempts,
                    created: minute(m.created_at),
                    reason: m.error_reason.unwrap_or_default(),
                })
                .collect();
        }
    }
    let html = MessagesPage {
        asset_version: asset_version(),
        nav: Some(s.nav(&app)),
        app: &app,
        kinds: [
            ("user", "user id"),
            ("phone", "phone number"),
            ("request", "push request id"),
            ("campaign", "campaign id or key"),
        ]
        .into_iter()
        .map(|(v, label)| (v.to_owned(), label))
        .collect(),
        by,
        q,
        note,
        searched,
        rows,
    }
    .render()?;
    Ok(Html(html).into_response())
}

struct EventRow {
    at: String,
    status: String,
    attempt: i32,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    app: &'a str,
    id: i64,
    status: String,
    user: String,
    origin: String,
    platform: String,
    token: String,
    provider_id: String,
    reason: String,
    events: Vec<EventRow>,
}

/// One message with its status history as a timeline.
pub async fn message<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, i64)>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    let (m, events) = st
        .store
        .message_get(&app, id)
        .await?
        .ok_or(PageError::NotFound)?;
    // The API's history, steps the row implies included: one rule for both.
    let steps = crate::api::messages::history(&m, &events);
    let html = MessagePage {
        asset_version: asset_version(),
        nav: Some(s.nav(&app)),
        app: &app,
        id,
        origin: origin(m.campaign_id, m.request_id.as_deref()),
        status: m.status,
        user: m.user_external_id.unwrap_or_default(),
        platform: m.platform.unwrap_or_default(),
        token: m.token.unwrap_or_default(),
        provider_id: m.provider_id.unwrap_or_default(),
        reason: m.error_reason.unwrap_or_default(),
        events: steps
            .into_iter()
            .map(|e| EventRow {
                at: e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                status: e.status,
                attempt: e.attempt.unwrap_or(0),
                detail: e.detail.unwrap_or_default(),
            })
            .collect(),
    }
    .render()?;
    Ok(Html(html).into_response())
}
