//! The console's pages and forms. Every handler checks, on the server: a live
//! session, the app granted to the operator (else 404, as if it did not
//! exist), the role's permission (else 403) and, for a form, its CSRF token.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
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
    /// The request does not fit the thing's state (editing a running campaign).
    Conflict(String),
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
            PageError::Conflict(why) => error_page(StatusCode::CONFLICT, "Not possible now", &why),
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
        self.actor(addr).entry(action, app, target, now)
    }

    /// The operator as the audit log and account changes name them.
    fn actor<'a>(&'a self, addr: &'a ClientAddress) -> crate::console::accounts::Actor<'a> {
        crate::console::accounts::Actor {
            operator_id: Some(self.session.operator_id),
            name: &self.session.email,
            address: Some(&addr.0),
        }
    }
}

/// The app's campaign by id, or 404 (another app's is not found either).
async fn campaign_of<S: Store>(
    st: &ApiState<S>,
    app: &str,
    id: i64,
) -> Result<crate::store::CampaignRecord, PageError> {
    st.store
        .campaign_get_by_id(app, id)
        .await?
        .ok_or(PageError::NotFound)
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

/// A field left out reads as empty: the checks below refuse it with a
/// page that says why, never the extractor's bare 422.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CsrfForm {
    csrf: String,
}

/// A send's wall time in its zone, with the zone's offset then. A slot for
/// everyone at once (`*`) has no local time; one for recipients without a
/// zone (`""`) is read in the app's default zone when given.
fn local_time(zone: &str, at: DateTime<Utc>, default: Option<chrono_tz::Tz>) -> String {
    if zone == crate::domain::planner::ALL_ZONES {
        return "the same instant everywhere".to_owned();
    }
    let tz = crate::domain::zone::parse_zone(zone).or(if zone.is_empty() { default } else { None });
    match tz {
        Some(tz) => at
            .with_timezone(&tz)
            .format("%a %d %b %H:%M (UTC%:z)")
            .to_string(),
        None => "?".to_owned(),
    }
}

fn minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

mod admin;
mod audit;
mod campaigns;
mod compose;
mod export;
mod messages;
mod overview;
mod plan;
mod session;

pub use admin::{key_create, key_revoke, keys, operator_add, operator_set, operators};
pub use audit::audit;
pub use campaigns::{
    campaign, campaign_action, campaign_confirm, campaign_live, campaign_test, campaigns,
};
pub use compose::{compose_check, compose_create, compose_edit, compose_new, compose_update};
pub use export::campaign_csv;
pub use messages::{message, messages};
pub use overview::overview;
pub use plan::campaign_plan;
pub use session::{home, login, login_form, logout};
