//! An app's campaigns, a campaign, its live region and its actions.

use super::*;

struct CampaignRow {
    id: i64,
    key: String,
    name: String,
    state: String,
    next_send: String,
    updated: String,
    /// Percent of its recipients settled; `None` before it runs.
    progress: Option<u32>,
}

#[derive(Template)]
#[template(path = "console/campaigns.html")]
struct CampaignsPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    app: &'a str,
    states: Vec<String>,
    state: String,
    q: String,
    rows: Vec<CampaignRow>,
    can_edit: bool,
    /// The next page's link, when there are more.
    older: Option<String>,
}

/// Campaigns a page lists.
const PAGE: i64 = 50;

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    q: String,
    /// The cursor: campaigns older than this id.
    before: Option<i64>,
}

pub async fn campaigns<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    let state = CampaignState::parse(&query.state).ok();
    let needle = query.q.trim().to_lowercase();
    let next = st.store.campaign_next_send_list(&app).await?;
    let mut progress: std::collections::HashMap<i64, (f64, f64)> = Default::default();
    for slot in st.store.campaign_progress_list(&app).await? {
        if slot.counts() {
            let entry = progress.entry(slot.campaign_id).or_default();
            entry.0 += slot.settled();
            entry.1 += slot.planned_count as f64;
        }
    }
    let percent = |c: &crate::store::CampaignRecord| match c.state {
        CampaignState::Completed => Some(100),
        CampaignState::Running | CampaignState::Paused => Some(
            progress
                .get(&c.id)
                .filter(|(_, planned)| *planned > 0.0)
                .map_or(0, |(done, planned)| (100.0 * done / planned).floor() as u32),
        ),
        _ => None,
    };
    let page = st
        .store
        .campaign_list_page(
            &app,
            &crate::store::CampaignFilter {
                state,
                search: (!needle.is_empty()).then_some(needle.as_str()),
                before_id: query.before,
                limit: PAGE,
            },
        )
        .await?;
    let older = (page.len() as i64 == PAGE)
        .then(|| page.last().map(|c| c.id))
        .flatten()
        .map(|id| {
            let mut url = url::form_urlencoded::Serializer::new(String::new());
            url.append_pair("state", &query.state)
                .append_pair("q", &query.q)
                .append_pair("before", &id.to_string());
            format!("/console/apps/{app}/campaigns?{}", url.finish())
        });
    let rows = page
        .into_iter()
        .map(|c| CampaignRow {
            progress: percent(&c),
            next_send: next
                .get(&c.id)
                .map_or_else(|| "—".to_owned(), |t| minute(*t)),
            id: c.id,
            key: c.key,
            name: c.name,
            state: c.state.to_string(),
            updated: minute(c.updated_at),
        })
        .collect();
    let html = CampaignsPage {
        asset_version: asset_version(),
        nav: Some(s.nav(&app)),
        app: &app,
        states: CampaignState::ALL.iter().map(|s| s.to_string()).collect(),
        state: state.map(|s| s.to_string()).unwrap_or_default(),
        q: query.q.clone(),
        rows,
        can_edit: s.session.role.can(Permission::EditCampaigns),
        older,
    }
    .render()?;
    Ok(Html(html).into_response())
}

struct SlotRow {
    zone: String,
    local: String,
    utc: String,
    disposition: String,
    planned: i64,
    sent: i64,
    not_sent: i64,
    failed: i64,
    token_invalid: i64,
    suppressed: i64,
    /// Waiting for another attempt (or leased for one right now).
    retrying: i64,
    state: String,
}

#[derive(Template)]
#[template(path = "console/live.html")]
struct LivePart<'a> {
    app: &'a str,
    id: i64,
    trigger: &'a str,
    state: String,
    totals: Vec<(String, i64)>,
    slots: Vec<SlotRow>,
    /// Zones with no recipient (yet): their sends, folded away.
    empty: Vec<SlotRow>,
    /// Messages settled (sent or not) and planned, for the progress bar.
    settled: i64,
    planned: i64,
    funnel: Vec<crate::console::charts::Stage>,
    per_minute: Option<crate::console::charts::BarChart>,
}

#[derive(Template)]
#[template(path = "console/campaign.html")]
struct CampaignPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    app: &'a str,
    id: i64,
    key: String,
    name: String,
    revision: i32,
    title: String,
    body: String,
    flash: Option<String>,
    actions: Vec<&'static str>,
    can_test: bool,
    can_edit: bool,
    csrf: String,
    live: String,
}

/// Statuses that count as sent, and as final without a send.
const SENT: &[&str] = &["sent", "delivered", "opened"];
const NOT_SENT: &[&str] = &[
    "failed",
    "token_invalid",
    "suppressed",
    "expired",
    "cancelled",
];

/// The live region: counts and each zone's send. Polled every 2 s while the
/// campaign can still change.
fn live_part(app: &str, id: i64, snap: &Snapshot) -> Result<String, PageError> {
    let sum = |counts: Option<&std::collections::BTreeMap<String, i64>>, which: &[&str]| {
        counts.map_or(0, |c| which.iter().filter_map(|s| c.get(*s)).sum())
    };
    let settled = matches!(
        snap.state,
        CampaignState::Completed | CampaignState::Cancelled | CampaignState::Draft
    );
    let rows = snap.slots.iter().map(|x| {
        let counts = snap.by_slot.get(&x.id);
        SlotRow {
            local: local_time(&x.zone, x.fire_at, None),
            utc: minute(x.fire_at),
            zone: x.zone.clone(),
            disposition: x.disposition.clone(),
            planned: x.planned_count,
            sent: sum(counts, SENT),
            not_sent: sum(counts, NOT_SENT),
            failed: sum(counts, &["failed"]),
            token_invalid: sum(counts, &["token_invalid"]),
            suppressed: sum(counts, &["suppressed"]),
            retrying: sum(counts, &["retry", "leased"]),
            state: x.state.to_string(),
        }
    });
    // A per-zone campaign has a slot in every zone (for whoever registers
    // there later); the zones nobody is in yet are folded away.
    let (slots, empty): (Vec<SlotRow>, Vec<SlotRow>) =
        rows.partition(|r| r.planned > 0 || r.sent > 0 || r.not_sent > 0);
    let done: i64 = slots.iter().map(|r| r.sent + r.not_sent).sum();
    // Released slots count their recipients as released; pending ones as planned.
    let planned = snap
        .slots
        .iter()
        .map(|x| {
            snap.recipients
                .get(&x.id)
                .copied()
                .unwrap_or(x.planned_count)
        })
        .sum::<i64>();
    Ok(LivePart {
        app,
        id,
        trigger: if settled { "none" } else { "every 2s" },
        state: snap.state.to_string(),
        totals: snap.totals.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        slots,
        empty,
        settled: done,
        planned: planned.max(done),
        funnel: crate::console::charts::funnel(&snap.totals),
        per_minute: crate::console::charts::per_minute(&snap.per_minute),
    }
    .render()?)
}

async fn campaign_page<S: Store>(
    st: &ConsoleState<S>,
    s: &Signed,
    app: &str,
    id: i64,
    flash: Option<String>,
) -> Result<Html<String>, PageError> {
    let c = campaign_of(st, app, id).await?;
    let snap = st
        .live
        .get(&*st.store, app, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let text = |field: &str| {
        c.definition.0["message"][field]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let actions = if s.session.role.can(Permission::EditCampaigns) {
        Action::ALL
            .into_iter()
            .filter(|a| a.admits(c.state))
            .map(Action::as_str)
            .collect()
    } else {
        Vec::new()
    };
    let html = CampaignPage {
        asset_version: asset_version(),
        nav: Some(s.nav(app)),
        app,
        id,
        title: text("title"),
        body: text("body"),
        key: c.key.clone(),
        name: c.name.clone(),
        revision: c.revision,
        flash,
        actions,
        can_test: s.session.role.can(Permission::EditCampaigns),
        can_edit: s.session.role.can(Permission::EditCampaigns) && c.state.is_editable(),
        csrf: s.session.csrf_token.clone(),
        live: live_part(app, id, &snap)?,
    }
    .render()?;
    Ok(Html(html))
}

/// The live region alone, for htmx to swap in.
pub async fn campaign_live<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, i64)>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    let snap = st
        .live
        .get(&*st.store, &app, id)
        .await?
        .ok_or(PageError::NotFound)?;
    Ok(Html(live_part(&app, id, &snap)?).into_response())
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

pub async fn campaign<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, i64)>,
    Query(query): Query<DoneQuery>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    // Only known actions make a message: a link cannot put words on the page.
    let flash = match query.done.as_deref() {
        Some("saved") => Some("Saved.".to_owned()),
        done => done
            .and_then(Action::parse)
            .map(|a| format!("Done: {}.", a.as_str())),
    };
    Ok(campaign_page(&st, &s, &app, id, flash)
        .await?
        .into_response())
}

pub async fn campaign_action<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Path((app, id, action)): Path<(String, i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    s.csrf(&form.csrf)?;
    s.require(Permission::EditCampaigns)?;
    let action = Action::parse(&action).ok_or(PageError::NotFound)?;
    let c = campaign_of(&st, &app, id).await?;
    let now = st.clock.now();
    match definitions::act(&*st.store, &st.config, &c, action, now).await {
        Ok(_) => {
            st.live.forget(id);
            let name = format!("campaign_{}", action.as_str());
            st.store
                .audit_append(&s.audit(&name, Some(&app), Some(&c.key), &addr, now))
                .await?;
            Ok(Redirect::to(&format!(
                "/console/apps/{app}/campaigns/{id}?done={}",
                action.as_str()
            ))
            .into_response())
        }
        Err(e) if e.is_input() => {
            let page = campaign_page(&st, &s, &app, id, Some(e.to_string())).await?;
            Ok((StatusCode::CONFLICT, page).into_response())
        }
        Err(e) => Err(PageError::Internal(e.to_string())),
    }
}

/// A field left out reads as empty: the checks below refuse it with a
/// page that says why, never the extractor's bare 422.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TestForm {
    csrf: String,
    /// `user` (an external id) or `install` (an install id).
    to_kind: String,
    to: String,
}

/// Sends the campaign's message now to one user or install (an editor's own
/// phone), as a transactional push through the API's own queueing, whatever
/// the campaign's audience or state; recorded in the audit log.
pub async fn campaign_test<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, i64)>,
    Form(form): Form<TestForm>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    s.csrf(&form.csrf)?;
    s.require(Permission::EditCampaigns)?;
    let c = campaign_of(&st, &app, id).await?;
    let app_config = st.config.app(&app).ok_or(PageError::NotFound)?;
    let to = form.to.trim().to_owned();
    if !matches!(form.to_kind.as_str(), "user" | "install") {
        return Err(PageError::NotFound);
    }
    // User and install ids obey one rule (the API's).
    let invalid = crate::domain::audience::check_external_id("to", &to)
        .err()
        .map(|e| e.to_string());
    if let Some(message) = invalid {
        let page = campaign_page(&st, &s, &app, id, Some(message)).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let message: crate::domain::message::Message =
        serde_json::from_value(c.definition.0["message"].clone())
            .map_err(|e| PageError::Internal(format!("campaign #{id}'s message: {e}")))?;
    let (user_ids, install_ids) = if form.to_kind == "user" {
        (vec![to.clone()], Vec::new())
    } else {
        (Vec::new(), vec![to.clone()])
    };
    let request = crate::api::push::PushRequest {
        user_ids,
        install_ids,
        message,
        topic: None,
        primary_only: false,
    };
    let (request_id, queued) = crate::api::push::queue(&st.api, &app, app_config, &request)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    let now = st.clock.now();
    let mut entry = s.audit("test_push", Some(&app), Some(&c.key), &addr, now);
    entry.detail = Some(format!("{} {to} → {request_id}", form.to_kind));
    st.store.audit_append(&entry).await?;
    let flash = if queued.deliveries == 0 {
        format!(
            "Test push {request_id}: no device found for {} {to:?}.",
            form.to_kind
        )
    } else {
        format!(
            "Test push {request_id} queued for {} device(s) of {} {to:?}; find it under Messages.",
            queued.deliveries, form.to_kind
        )
    };
    Ok(campaign_page(&st, &s, &app, id, Some(flash))
        .await?
        .into_response())
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    app: &'a str,
    id: i64,
    name: String,
    action: &'static str,
    /// What the action will do, in a sentence or two.
    consequence: String,
    csrf: String,
}

/// `GET …/campaigns/{id}/{action}`: what the action will do, and a button to
/// do it. The campaign page's action buttons lead here, so nothing changes
/// on one click; scheduling shows the plan's outline first.
pub async fn campaign_confirm<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
    Path((app, id, action)): Path<(String, i64, String)>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.app(&app)?;
    s.require(Permission::EditCampaigns)?;
    let action = Action::parse(&action).ok_or(PageError::NotFound)?;
    let c = campaign_of(&st, &app, id).await?;
    if !action.admits(c.state) {
        return Err(PageError::Conflict(format!(
            "You cannot {} a {} campaign.",
            action.as_str(),
            c.state
        )));
    }
    let consequence = match action {
        Action::Schedule => match &*super::plan::draft_plan(&st, &c).await? {
            Ok(plan) => {
                let sending: Vec<_> = plan
                    .slots
                    .iter()
                    .filter(|s| {
                        s.recipients > 0
                            && s.disposition != crate::domain::planner::Disposition::Skipped
                    })
                    .collect();
                let recipients: u64 = sending.iter().map(|s| s.recipients).sum();
                match (
                    sending.iter().map(|s| s.fire_at).min(),
                    sending.iter().map(|s| s.fire_at).max(),
                ) {
                    (Some(first), Some(last)) => format!(
                        "{recipients} recipient(s) in {} send(s), from {} to {} UTC, as the audience is now.",
                        sending.len(),
                        minute(first),
                        minute(last)
                    ),
                    _ => "Nobody in the audience yet: each zone's send goes to whoever is there by then.".to_owned(),
                }
            }
            Err(problem) => format!("It cannot be scheduled as it is: {problem}"),
        },
        Action::Pause => "No new message leaves until it is resumed; messages already handed to Apple or Google are not recalled.".to_owned(),
        Action::Resume => "Sending continues where it stopped.".to_owned(),
        Action::Cancel => "Every message not yet sent is cancelled. This cannot be undone.".to_owned(),
    };
    let html = ConfirmPage {
        asset_version: asset_version(),
        nav: Some(s.nav(&app)),
        app: &app,
        id,
        name: c.name.clone(),
        action: action.as_str(),
        consequence,
        csrf: s.session.csrf_token.clone(),
    }
    .render()?;
    Ok(Html(html).into_response())
}
