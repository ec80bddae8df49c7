//! The console's pages and forms. Every handler checks, on the server: a live
//! session, the app granted to the operator (else 404, as if it did not
//! exist), the role's permission (else 403) and, for a form, its CSRF token.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use super::auth::{dummy_hash, random_token, same, token_hash, verify_password};
use super::live::Snapshot;
use super::{
    asset_version, ClientAddress, ConsoleState, LOGIN_COOKIE, MAX_FAILURES_PER_ACCOUNT,
    MAX_FAILURES_PER_ADDRESS, SESSION_COOKIE, THROTTLE_WINDOW_MINUTES,
};
use crate::api::ApiState;
use crate::definitions::{self, Action};
use crate::domain::operator::{normalize_email, Permission};
use crate::domain::state::{CampaignState, StateMachine};
use crate::store::{AuditEntry, NewSession, SessionRecord, Store, StoreError};

/// Why a page is not shown.
#[derive(Debug)]
pub enum PageError {
    /// No live session: to the sign-in page.
    SignIn,
    Forbidden(String),
    NotFound,
    /// The form's CSRF token is missing or wrong.
    Csrf,
    Internal(String),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Internal(e.to_string())
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        PageError::Internal(e.to_string())
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    heading: &'a str,
    message: &'a str,
}

fn error_page(status: StatusCode, heading: &str, message: &str) -> Response {
    let page = ErrorPage {
        asset_version: asset_version(),
        nav: None,
        heading,
        message,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, message.to_owned()).into_response(),
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn => Redirect::to("/console/login").into_response(),
            PageError::Forbidden(why) => error_page(StatusCode::FORBIDDEN, "Not allowed", &why),
            PageError::NotFound => error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page, or it is not yours to see.",
            ),
            PageError::Csrf => error_page(
                StatusCode::FORBIDDEN,
                "The form expired",
                "Reload the page and try again.",
            ),
            PageError::Internal(error) => {
                tracing::error!(message = "Console page failed.", %error);
                error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The error is in the server's log.",
                )
            }
        }
    }
}

/// The header's navigation: the operator's apps and who is signed in.
pub struct Nav {
    apps: Vec<String>,
    current: String,
    admin: bool,
    email: String,
    role: String,
    csrf: String,
}

/// A signed-in request: the session and the apps it may see (configured and granted).
struct Signed {
    session: SessionRecord,
    apps: Vec<String>,
}

impl Signed {
    fn nav(&self, current: &str) -> Nav {
        Nav {
            apps: self.apps.clone(),
            current: current.to_owned(),
            admin: self.session.role.can(Permission::ManageOperators),
            email: self.session.email.clone(),
            role: self.session.role.to_string(),
            csrf: self.session.csrf_token.clone(),
        }
    }

    /// The app if the operator may see it; otherwise 404, as for an unknown app.
    fn app(&self, app: &str) -> Result<(), PageError> {
        if self.apps.iter().any(|a| a == app) {
            Ok(())
        } else {
            Err(PageError::NotFound)
        }
    }

    fn require(&self, p: Permission) -> Result<(), PageError> {
        if self.session.role.can(p) {
            Ok(())
        } else {
            Err(PageError::Forbidden(format!(
                "Your role ({}) cannot do this.",
                self.session.role
            )))
        }
    }

    fn csrf(&self, token: &str) -> Result<(), PageError> {
        if same(&self.session.csrf_token, token) {
            Ok(())
        } else {
            Err(PageError::Csrf)
        }
    }

    fn audit(
        &self,
        action: &str,
        app: Option<&str>,
        target: Option<&str>,
        addr: &ClientAddress,
        now: DateTime<Utc>,
    ) -> AuditEntry {
        AuditEntry {
            at: now,
            operator_id: Some(self.session.operator_id),
            actor: self.session.email.clone(),
            action: action.to_owned(),
            app_id: app.map(str::to_owned),
            target: target.map(str::to_owned),
            address: Some(addr.0.clone()),
            detail: None,
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn signed<S: Store>(st: &ApiState<S>, headers: &HeaderMap) -> Result<Signed, PageError> {
    let token = cookie(headers, SESSION_COOKIE).ok_or(PageError::SignIn)?;
    let now = st.clock.now();
    let idle =
        TimeDelta::from_std(st.config.server.console.idle_timeout).unwrap_or(TimeDelta::hours(2));
    let session = st
        .store
        .session_get(&token_hash(token), now, now - idle)
        .await?
        .ok_or(PageError::SignIn)?;
    let apps = st
        .config
        .apps
        .keys()
        .filter(|a| session.apps.allows(a))
        .cloned()
        .collect();
    Ok(Signed { session, apps })
}

fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `/console`: the operator's first app.
pub async fn home<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    match s.apps.first() {
        Some(app) => Ok(Redirect::to(&format!("/console/apps/{app}/campaigns")).into_response()),
        None => Ok(error_page(
            StatusCode::OK,
            "No app yet",
            "No configured app is granted to you; ask an admin.",
        )),
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    error: Option<&'a str>,
    email: &'a str,
    csrf: &'a str,
}

fn login_page(
    st_secure: bool,
    status: StatusCode,
    error: Option<&str>,
    email: &str,
) -> Result<Response, PageError> {
    let csrf = random_token().map_err(|e| PageError::Internal(e.to_string()))?;
    let html = LoginPage {
        asset_version: asset_version(),
        nav: None,
        error,
        email,
        csrf: &csrf,
    }
    .render()?;
    let mut res = (status, Html(html)).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &csrf, 3600, st_secure),
    );
    Ok(res)
}

pub async fn login_form<S: Store>(
    State(st): State<ConsoleState<S>>,
) -> Result<Response, PageError> {
    login_page(
        st.config.server.console.secure_cookie,
        StatusCode::OK,
        None,
        "",
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    csrf: String,
}

pub async fn login<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let secure = st.config.server.console.secure_cookie;
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(expected, &form.csrf) {
        return Err(PageError::Csrf);
    }
    let now = st.clock.now();
    let email = normalize_email(&form.email).unwrap_or_else(|_| form.email.trim().to_lowercase());
    let since = now - TimeDelta::minutes(THROTTLE_WINDOW_MINUTES);
    let (by_account, by_address) = st
        .store
        .signin_failure_count(&email, &addr.0, since)
        .await?;
    if by_account >= MAX_FAILURES_PER_ACCOUNT || by_address >= MAX_FAILURES_PER_ADDRESS {
        let message =
            format!("Too many failed sign-ins: try again in {THROTTLE_WINDOW_MINUTES} minutes.");
        return login_page(
            secure,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&message),
            &email,
        );
    }
    let operator = st.store.operator_get_by_email(&email).await?;
    let hash = operator
        .as_ref()
        .filter(|o| o.disabled_at.is_none())
        .map_or(dummy_hash(), |o| o.password_hash.as_str())
        .to_owned();
    // Argon2 takes tens of milliseconds by design: off the runtime's threads.
    let password = form.password.clone();
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let operator = match operator {
        Some(o) if matches && o.disabled_at.is_none() => o,
        _ => {
            st.store
                .audit_append(&AuditEntry {
                    at: now,
                    operator_id: None,
                    actor: email.clone(),
                    action: "signin_failed".to_owned(),
                    app_id: None,
                    target: None,
                    address: Some(addr.0.clone()),
                    detail: None,
                })
                .await?;
            return login_page(
                secure,
                StatusCode::UNAUTHORIZED,
                Some("The email or the password is wrong."),
                &email,
            );
        }
    };
    // A fresh token at every sign-in; a session the browser still had ends.
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        st.store.session_delete(&token_hash(old)).await?;
    }
    let token = random_token().map_err(|e| PageError::Internal(e.to_string()))?;
    let csrf = random_token().map_err(|e| PageError::Internal(e.to_string()))?;
    let max_age =
        TimeDelta::from_std(st.config.server.console.max_age).unwrap_or(TimeDelta::hours(12));
    st.store
        .session_create(
            &NewSession {
                token_hash: &token_hash(&token),
                operator_id: operator.id,
                csrf_token: &csrf,
                address: Some(&addr.0),
                expires_at: now + max_age,
            },
            now,
        )
        .await?;
    st.store
        .audit_append(&AuditEntry {
            at: now,
            operator_id: Some(operator.id),
            actor: operator.email.clone(),
            action: "signin".to_owned(),
            app_id: None,
            target: None,
            address: Some(addr.0.clone()),
            detail: None,
        })
        .await?;
    let mut res = Redirect::to("/console").into_response();
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, max_age.num_seconds(), secure),
    );
    h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, secure));
    Ok(res)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout<S: Store>(
    State(st): State<ConsoleState<S>>,
    Extension(addr): Extension<ClientAddress>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.csrf(&form.csrf)?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        st.store.session_delete(&token_hash(token)).await?;
    }
    let now = st.clock.now();
    st.store
        .audit_append(&s.audit("signout", None, None, &addr, now))
        .await?;
    let mut res = Redirect::to("/console/login").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            "",
            0,
            st.config.server.console.secure_cookie,
        ),
    );
    Ok(res)
}

struct CampaignRow {
    id: i64,
    key: String,
    name: String,
    state: String,
    next_send: String,
    updated: String,
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
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    q: String,
}

fn minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
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
    let rows = st
        .store
        .campaign_list(Some(&app))
        .await?
        .into_iter()
        .filter(|c| state.is_none_or(|s| c.state == s))
        .filter(|c| {
            needle.is_empty()
                || c.key.to_lowercase().contains(&needle)
                || c.name.to_lowercase().contains(&needle)
        })
        .map(|c| CampaignRow {
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
    csrf: String,
    live: String,
}

/// A slot's wall time in its own zone, with the zone's offset then.
fn local_time(zone: &str, at: DateTime<Utc>) -> String {
    if zone == "*" {
        // A `now` or `at` campaign: one slot for every zone at one instant.
        return "the same instant everywhere".to_owned();
    }
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => at
            .with_timezone(&tz)
            .format("%a %d %b %H:%M (UTC%:z)")
            .to_string(),
        Err(_) => "?".to_owned(),
    }
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
    Ok(LivePart {
        app,
        id,
        trigger: if settled { "none" } else { "every 2s" },
        state: snap.state.to_string(),
        totals: snap.totals.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        slots: snap
            .slots
            .iter()
            .map(|x| {
                let counts = snap.by_slot.get(&x.id);
                SlotRow {
                    local: local_time(&x.zone, x.fire_at),
                    utc: minute(x.fire_at),
                    zone: x.zone.clone(),
                    disposition: x.disposition.clone(),
                    planned: x.planned_count,
                    sent: sum(counts, SENT),
                    not_sent: sum(counts, NOT_SENT),
                    state: x.state.to_string(),
                }
            })
            .collect(),
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
    let c = st
        .store
        .campaign_get_by_id(app, id)
        .await?
        .ok_or(PageError::NotFound)?;
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
    let flash = query
        .done
        .as_deref()
        .and_then(Action::parse)
        .map(|a| format!("Done: {}.", a.as_str()));
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
    let c = st
        .store
        .campaign_get_by_id(&app, id)
        .await?
        .ok_or(PageError::NotFound)?;
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

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    app: String,
    target: String,
    address: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage<'a> {
    asset_version: &'a str,
    nav: Option<Nav>,
    entries: Vec<AuditRow>,
}

pub async fn audit<S: Store>(
    State(st): State<ConsoleState<S>>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let s = signed(&st, &headers).await?;
    s.require(Permission::ReadAudit)?;
    let entries = st
        .store
        .audit_list(200)
        .await?
        .into_iter()
        .map(|e| AuditRow {
            at: e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            actor: e.actor,
            action: e.action,
            app: e.app_id.unwrap_or_default(),
            target: e.target.unwrap_or_default(),
            address: e.address.unwrap_or_default(),
        })
        .collect();
    let html = AuditPage {
        asset_version: asset_version(),
        nav: Some(s.nav("")),
        entries,
    }
    .render()?;
    Ok(Html(html).into_response())
}

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
