//! The web console under `/console`: server-rendered pages (askama templates in
//! `templates/console/`, checked at compile time and escaped by default) over
//! the same store and validation code as the REST API. Operators sign in with
//! a password (`accounts`, `auth`); a session is a random token in an
//! `HttpOnly` cookie, stored hashed; every state-changing form carries the
//! session's CSRF token; every page is sent with a strict CSP (no script at
//! all yet) and may not be framed.

pub mod accounts;
pub mod auth;
pub mod charts;
pub mod compose;
pub mod live;
mod pages;
pub mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::api::ApiState;
use crate::store::Store;

/// The session cookie (host-only, path `/console`).
pub const SESSION_COOKIE: &str = "meridian_session";
/// The sign-in form's CSRF cookie (double submit: no session exists yet).
pub const LOGIN_COOKIE: &str = "meridian_login";

/// Failed sign-ins within [`THROTTLE_WINDOW_MINUTES`] after which an account is
/// refused (whoever tries), and after which an address is refused.
pub const MAX_FAILURES_PER_ACCOUNT: i64 = 5;
pub const MAX_FAILURES_PER_ADDRESS: i64 = 20;
pub const THROTTLE_WINDOW_MINUTES: i64 = 15;

/// The stylesheet, embedded: the binary serves everything the console needs.
const CSS: &str = include_str!("../../static/console.css");
/// htmx 2.0.4 (0BSD), from the npm package `htmx.org`'s `dist/htmx.min.js`,
/// SHA-256 e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447.
const HTMX: &str = include_str!("../../static/htmx.min.js");

/// How long an app's overview is shown before it is counted again: its counts
/// read the app's whole audience, so however many watch, at most this often.
pub const OVERVIEW_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// What the console's handlers reach: the API's state, and the live snapshots.
pub struct ConsoleState<S> {
    pub api: ApiState<S>,
    pub live: Arc<live::LiveCache>,
    /// A draft's plan as if scheduled now, by campaign id and revision: it
    /// counts the whole audience, so it is planned at most every 30 s.
    pub draft_plans: Arc<live::Fresh<(i64, i32), Result<crate::domain::planner::Plan, String>>>,
    /// Each app's overview, by app id, with when it was counted.
    pub overviews:
        Arc<live::Fresh<String, (chrono::DateTime<chrono::Utc>, crate::store::AppOverview)>>,
}

impl<S> ConsoleState<S> {
    pub fn new(api: ApiState<S>, live: Arc<live::LiveCache>) -> Self {
        Self {
            api,
            live,
            overviews: Arc::new(live::Fresh::new(OVERVIEW_FRESH_FOR)),
            draft_plans: Arc::new(live::Fresh::new(OVERVIEW_FRESH_FOR)),
        }
    }

    /// Counts overviews and plans drafts again after `ttl` instead of
    /// [`OVERVIEW_FRESH_FOR`] (a test or benchmark that watches one change).
    pub fn overviews_fresh_for(mut self, ttl: std::time::Duration) -> Self {
        self.overviews = Arc::new(live::Fresh::new(ttl));
        self.draft_plans = Arc::new(live::Fresh::new(ttl));
        self
    }
}

impl<S> Clone for ConsoleState<S> {
    fn clone(&self) -> Self {
        Self {
            api: self.api.clone(),
            live: self.live.clone(),
            overviews: self.overviews.clone(),
            draft_plans: self.draft_plans.clone(),
        }
    }
}

impl<S> std::ops::Deref for ConsoleState<S> {
    type Target = ApiState<S>;

    fn deref(&self) -> &ApiState<S> {
        &self.api
    }
}

/// The console's routes, with the security headers and the client's address.
// HTML pages, not API operations: they have no place in the OpenAPI document
// that `Routes::add` keeps (clippy.toml steers API routes there).
#[allow(clippy::disallowed_methods)]
pub fn router<S: Store>(state: ApiState<S>) -> Router {
    router_with(ConsoleState::new(state, Arc::default()))
}

/// [`router`] over a given state (tests read its live cache).
#[allow(clippy::disallowed_methods)] // see `router`
pub fn router_with<S: Store>(state: ConsoleState<S>) -> Router {
    Router::new()
        .route("/console", get(pages::home::<S>))
        .route("/console/", get(pages::home::<S>))
        .route(
            "/console/login",
            get(pages::login_form::<S>).post(pages::login::<S>),
        )
        .route("/console/logout", post(pages::logout::<S>))
        .route("/console/apps/{app}", get(pages::overview::<S>))
        .route("/console/apps/{app}/campaigns", get(pages::campaigns::<S>))
        .route(
            "/console/apps/{app}/campaigns/new",
            get(pages::compose_new::<S>).post(pages::compose_create::<S>),
        )
        .route(
            "/console/apps/{app}/campaigns/{id}/edit",
            get(pages::compose_edit::<S>).post(pages::compose_update::<S>),
        )
        .route(
            "/console/apps/{app}/campaigns/{id}/deliveries.csv",
            get(pages::campaign_csv::<S>),
        )
        .route(
            "/console/apps/{app}/campaigns/{id}/plan",
            get(pages::campaign_plan::<S>),
        )
        .route(
            "/console/apps/{app}/compose/check",
            post(pages::compose_check::<S>),
        )
        .route(
            "/console/apps/{app}/campaigns/{id}",
            get(pages::campaign::<S>),
        )
        .route(
            "/console/apps/{app}/campaigns/{id}/{action}",
            get(pages::campaign_confirm::<S>).post(pages::campaign_action::<S>),
        )
        .route(
            "/console/apps/{app}/campaigns/{id}/test",
            post(pages::campaign_test::<S>),
        )
        .route(
            "/console/apps/{app}/campaigns/{id}/live",
            get(pages::campaign_live::<S>),
        )
        .route("/console/apps/{app}/messages", get(pages::messages::<S>))
        .route(
            "/console/apps/{app}/messages/{id}",
            get(pages::message::<S>),
        )
        .route(
            "/console/apps/{app}/keys",
            get(pages::keys::<S>).post(pages::key_create::<S>),
        )
        .route(
            "/console/apps/{app}/keys/{name}/revoke",
            post(pages::key_revoke::<S>),
        )
        .route(
            "/console/operators",
            get(pages::operators::<S>).post(pages::operator_add::<S>),
        )
        .route(
            "/console/operators/{id}/{verb}",
            post(pages::operator_set::<S>),
        )
        .route("/console/audit", get(pages::audit::<S>))
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/static/htmx.min.js", get(htmx))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn(client_address))
        .with_state(state)
}

/// The API's router with the console beside it, on one port.
#[allow(clippy::disallowed_methods)] // see `router`
pub fn beside<S: Store>(api: Router, state: ApiState<S>) -> Router {
    api.merge(router(state))
}

/// [`beside`] over a given console state (tests read its live cache).
#[allow(clippy::disallowed_methods)] // see `router`
pub fn beside_with<S: Store>(api: Router, state: ConsoleState<S>) -> Router {
    api.merge(router_with(state))
}

/// The address a request came from, as the audit log and the throttle see it.
#[derive(Debug, Clone)]
pub struct ClientAddress(pub String);

async fn client_address(mut req: Request, next: Next) -> Response {
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
    req.extensions_mut().insert(ClientAddress(addr));
    next.run(req).await
}

/// No script may run but our own files (there are none yet), nothing loads
/// from elsewhere, forms post only here, no page may be framed; pages are
/// never cached (they show live state and carry CSRF tokens).
async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/console/static/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A version of the stylesheet for its URL and ETag: the first 16 hex digits
/// of its SHA-256, so a new build's file is fetched again.
pub fn asset_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| auth::token_hash(CSS)[..16].to_owned())
}

async fn stylesheet(headers: HeaderMap) -> Response {
    asset(&headers, CSS, "text/css; charset=utf-8", asset_version())
}

async fn htmx(headers: HeaderMap) -> Response {
    asset(
        &headers,
        HTMX,
        "text/javascript; charset=utf-8",
        "htmx-2.0.4",
    )
}

/// An embedded file with its ETag; `304` when the browser has it.
fn asset(headers: &HeaderMap, body: &'static str, content_type: &str, version: &str) -> Response {
    let etag = format!("\"{version}\"");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "public, max-age=3600");
    let res = if fresh {
        builder
            .status(axum::http::StatusCode::NOT_MODIFIED)
            .body(axum::body::Body::empty())
    } else {
        builder
            .header(header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body))
    };
    res.unwrap_or_else(|_| Response::new(axum::body::Body::empty()))
}
