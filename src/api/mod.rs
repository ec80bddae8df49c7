//! The REST API: partners' backends register users and devices and manage their
//! subscriptions. Every route but health answers only to an app's API key, and
//! sees only that app's data.

pub mod audience;
pub mod campaigns;
pub mod idempotency;
pub mod identity;
pub mod import;
pub mod keys;
pub mod limits;
pub mod messages;
pub mod openapi;
pub mod push;
pub mod receipts;

pub use crate::domain::audience::formats;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::keys::KeyKind;
use crate::store::{Store, StoreError};

/// Largest request body accepted (bulk imports have their own route).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What every handler reaches: the store, the configuration and the clock, the
/// push quota, and (in `serve`) the engine's signal that rows were queued.
pub struct ApiState<S> {
    pub store: Arc<S>,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub push_quota: Arc<push::PushQuota>,
    pub rows_queued: Option<Arc<tokio::sync::Notify>>,
    /// The engine's "ticking recently" probe for `/readyz` (none: engine off).
    pub scheduler: Option<Arc<dyn Fn() -> Result<(), String> + Send + Sync>>,
    /// Each app's identity proof check (client keys naming a user).
    pub identities: Arc<std::collections::HashMap<String, identity::IdentityCheck>>,
    /// The limits of client keys and keyless receipts.
    pub client_quota: Arc<limits::ClientQuota>,
    /// Each app's receipt key, read from the store when first needed.
    pub receipt_keys: Arc<receipts::ReceiptKeys>,
}

impl<S> ApiState<S> {
    pub fn new(store: Arc<S>, config: Arc<Config>, clock: Arc<dyn Clock>) -> Self {
        let push_quota = Arc::new(push::PushQuota::new(
            config.server.push.requests_per_minute,
            clock.clone(),
        ));
        let identities = Arc::new(identity::checks(&config));
        let client_quota = Arc::new(limits::ClientQuota::new(
            &config.server.client,
            clock.clone(),
        ));
        Self {
            store,
            config,
            clock,
            push_quota,
            rows_queued: None,
            scheduler: None,
            identities,
            client_quota,
            receipt_keys: Arc::new(receipts::ReceiptKeys::default()),
        }
    }

    /// `/readyz` also requires the scheduler to be turning.
    pub fn with_scheduler(
        mut self,
        probe: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
    ) -> Self {
        self.scheduler = Some(probe);
        self
    }

    /// Wakes the engine's row loop when a push is queued.
    pub fn with_rows_queued(mut self, notify: Arc<tokio::sync::Notify>) -> Self {
        self.rows_queued = Some(notify);
        self
    }
}

impl<S> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            config: self.config.clone(),
            clock: self.clock.clone(),
            push_quota: self.push_quota.clone(),
            rows_queued: self.rows_queued.clone(),
            scheduler: self.scheduler.clone(),
            identities: self.identities.clone(),
            client_quota: self.client_quota.clone(),
            receipt_keys: self.receipt_keys.clone(),
        }
    }
}

/// The API's routes, each with its OpenAPI operation (see `openapi::Routes`).
pub fn routes<S: Store>() -> openapi::Routes<S> {
    use {audience as a, campaigns as c, messages as m};
    openapi::Routes::new()
        .add(openapi::__path_health, openapi::health)
        .add(openapi::__path_openapi_json, openapi::openapi_json)
        .add(__path_metrics_page, metrics_page::<S>)
        .add(__path_healthz, healthz)
        .add(__path_readyz, readyz::<S>)
        .add(a::__path_put_user, a::put_user::<S>)
        // Streams its body under its own limit (`import::IMPORT_BODY_LIMIT`).
        .add(import::__path_import_users, import::import_users::<S>)
        .add_for_clients(a::__path_put_subscriptions, a::put_subscriptions::<S>)
        .add_for_clients(a::__path_get_subscriptions, a::get_subscriptions::<S>)
        .add_for_clients(a::__path_post_device, a::post_device::<S>)
        .add_for_clients(a::__path_delete_device, a::delete_device::<S>)
        .add(m::__path_list_messages, m::list_messages::<S>)
        .add(m::__path_get_message, m::get_message::<S>)
        .add_for_clients(m::__path_post_receipt, m::post_receipt::<S>)
        .add(push::__path_post_push, push::post_push::<S>)
        .add(c::__path_create, c::create::<S>)
        .add(c::__path_list, c::list::<S>)
        .add(c::__path_preview, c::preview::<S>)
        .add(c::__path_get, c::get::<S>)
        .add(c::__path_edit, c::edit::<S>)
        .add(c::__path_slots, c::slots::<S>)
        .add(c::__path_act, c::act::<S>)
}

/// The API: [`routes`] with the fallbacks, the body limit, the NUL guard and the state.
pub fn router<S: Store>(state: ApiState<S>) -> Router {
    crate::metrics::install();
    routes::<S>()
        .into_router()
        .route_layer(axum::middleware::from_fn(count_requests))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            let message = "the route does not take this method (see Allow)";
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                message,
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(refuse_nul))
        .with_state(state)
}

/// `GET /metrics`: Prometheus text, with the queue depths read now (no key: it
/// holds counts only, and scrapers carry no API key).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    operation_id = "metrics",
    security(()),
    responses((status = 200, description = "Prometheus text exposition (see docs/operations.md)", body = String, content_type = "text/plain"))
)]
pub async fn metrics_page<S: Store>(
    axum::extract::State(st): axum::extract::State<ApiState<S>>,
) -> Response {
    match st.store.push_queue_depth(st.clock.now()).await {
        Ok(depths) => {
            for (kind, n) in depths {
                crate::metrics::queue_depth(kind, n);
            }
        }
        Err(error) => tracing::warn!(message = "Cannot read queue depths for /metrics.", %error),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// `GET /healthz`: the process is alive (it answers); nothing else is checked, so
/// a supervisor restarts only a process that no longer answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    operation_id = "healthz",
    security(()),
    responses((status = 200, description = "The process answers", body = String, content_type = "text/plain", example = "ok"))
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// What `/readyz` found.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`
    pub status: &'static str,
    pub database: &'static str,
    /// `ok`, or `disabled` when this instance runs no engine.
    pub scheduler: &'static str,
}

/// `GET /readyz`: ready to serve — the database answers and the scheduler turned
/// recently; otherwise 503 naming what is not ready (load balancers stop routing).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the database or the scheduler", body = openapi::ErrorBody),
    )
)]
pub async fn readyz<S: Store>(
    axum::extract::State(st): axum::extract::State<ApiState<S>>,
) -> Response {
    let mut problems = Vec::new();
    if let Err(error) = st.store.ping().await {
        problems.push(format!("database: {error}"));
    }
    let scheduler = match &st.scheduler {
        None => "disabled",
        Some(probe) => match probe() {
            Ok(()) => "ok",
            Err(e) => {
                problems.push(format!("scheduler: {e}"));
                "stuck"
            }
        },
    };
    if problems.is_empty() {
        let body = Readiness {
            status: "ready",
            database: "ok",
            scheduler,
        };
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        problems.join("; "),
    )
    .into_response()
}

/// Counts each request by its route's pattern (not its path: ids would explode
/// the label set), method and status.
async fn count_requests(req: Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    crate::metrics::api_request(route, method, response.status().as_u16());
    response
}

/// A path or query holding `%00` is refused before any handler: Postgres takes
/// U+0000 in no text parameter (an id or filter holding one was a 503 there).
async fn refuse_nul(req: Request, next: axum::middleware::Next) -> Response {
    let uri = req.uri();
    let part = if uri.path().contains("%00") {
        "path"
    } else if uri.query().is_some_and(|q| q.contains("%00")) {
        "query"
    } else {
        return next.run(req).await;
    };
    ApiError::field(part, "must not contain the NUL character (%00)").into_response()
}

/// Every error answer: a status, a stable `error` code and a human `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (429 answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A 400 naming the field and what was wrong with it.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{field}: {problem}"),
        )
    }

    /// A 429: the client's limit per minute is used up.
    pub fn too_many(what: &str, wait: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many {what} from this key or address; retry after {wait} s"),
        );
        e.retry_after = Some(wait.max(1));
        e
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = openapi::ErrorBody {
            error: self.code.into(),
            message: self.message,
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, wait.into());
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what } => Self::not_found(what),
            StoreError::Invalid(message) => {
                Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            StoreError::Invariant(_) => {
                tracing::error!(message = "A stored invariant is broken.", error = %e);
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an internal error; it was logged",
                )
            }
            StoreError::Conflict { key } => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{key} changed concurrently; try again"),
            ),
            other => {
                tracing::error!(message = "Storage failed while serving a request.", error = %other);
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "storage is unavailable; try again",
                )
            }
        }
    }
}

/// The app whose server key authenticated the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppKey(pub String);

/// The app and the server key itself (its hash), for limits kept per key. A
/// client key is refused with 403 (see [`AnyKey`] for the routes it may call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOf {
    pub app: String,
    pub key_hash: String,
}

/// A live key of either kind: the routes a mobile app calls (registering its
/// device, its subscriptions, receipts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnyKey {
    pub app: String,
    pub key_hash: String,
    pub kind: KeyKind,
}

/// What a client key is told on every other route.
pub const CLIENT_KEY_REFUSED: &str = "a client key cannot call this route: it may only register a \
     device or install, unregister its own token, read and set its user's subscriptions and post \
     receipts; use a server key from your backend";

impl<S: Store> FromRequestParts<ApiState<S>> for AnyKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState<S>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned())
        };
        let mut given = parts
            .headers
            .get_all(axum::http::header::AUTHORIZATION)
            .iter();
        let header = given
            .next()
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <api key>"))?;
        // Two credentials are ambiguous: refused rather than "first wins".
        if given.next().is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Authorization: give exactly one header",
            ));
        }
        let secret = header
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or_else(|| unauthorized("Authorization must be Bearer <api key>"))?;
        let key_hash = keys::hash(secret);
        match state.store.api_key_owner_get(&key_hash).await? {
            // A key of an app no longer configured opens nothing.
            Some(owner) if state.config.apps.contains_key(&owner.app_id) => Ok(Self {
                app: owner.app_id,
                key_hash,
                kind: owner.kind,
            }),
            _ => Err(unauthorized("unknown or revoked API key")),
        }
    }
}

impl<S: Store> FromRequestParts<ApiState<S>> for KeyOf {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState<S>,
    ) -> Result<Self, Self::Rejection> {
        let key = AnyKey::from_request_parts(parts, state).await?;
        match key.kind {
            KeyKind::Server => Ok(Self {
                app: key.app,
                key_hash: key.key_hash,
            }),
            KeyKind::Client => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_key_kind",
                CLIENT_KEY_REFUSED,
            )),
        }
    }
}

/// A key of either kind when the request carries one, none when it has no
/// `Authorization` header (receipts by token); a bad key is still refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaybeKey(pub Option<AnyKey>);

impl<S: Store> FromRequestParts<ApiState<S>> for MaybeKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState<S>,
    ) -> Result<Self, Self::Rejection> {
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Ok(Self(None));
        }
        Ok(Self(Some(AnyKey::from_request_parts(parts, state).await?)))
    }
}

/// The peer's address, when the server was started with it (`serve` is);
/// behind a proxy, the proxy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub Option<std::net::IpAddr>);

impl<St: Send + Sync> FromRequestParts<St> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl AnyKey {
    /// A client key's call counted against its limits (server keys have none).
    pub fn admit<S>(
        &self,
        st: &ApiState<S>,
        call: limits::ClientCall,
        peer: Peer,
    ) -> Result<(), ApiError> {
        if self.kind != KeyKind::Client {
            return Ok(());
        }
        st.client_quota
            .check(call, Some(&self.key_hash), peer.0)
            .map_err(|wait| ApiError::too_many(call.noun(), wait))
    }

    /// A client key acting for user `external_id` shows the app's identity
    /// proof (`X-Meridian-Identity`) unless the app's identity is optional;
    /// server keys act for any user of their app.
    pub fn act_for<S>(
        &self,
        st: &ApiState<S>,
        headers: &axum::http::HeaderMap,
        external_id: &str,
    ) -> Result<(), ApiError> {
        if self.kind != KeyKind::Client {
            return Ok(());
        }
        let proof = headers
            .get(identity::HEADER)
            .map(|v| v.to_str().unwrap_or_default());
        let refuse = |e: identity::ProofError| {
            ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
        };
        let check = st
            .identities
            .get(&self.app)
            .ok_or(identity::ProofError::NotConfigured("readable identity key"))
            .map_err(refuse)?;
        check
            .admit(external_id, proof, st.clock.now())
            .map_err(refuse)
    }
}

/// The credentials of `Bearer <token>`: the scheme is case-insensitive (RFC 9110
/// §11.1), separated from the token by spaces.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl<S: Store> FromRequestParts<ApiState<S>> for AppKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState<S>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(KeyOf::from_request_parts(parts, state).await?.app))
    }
}

/// A JSON body whose rejections are [`ApiError`]s naming the field.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Path parameters whose rejections are JSON [`ApiError`]s like every other
/// (axum's own answer `text/plain`, e.g. for `%FF` in a path).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, St: Send + Sync> FromRequestParts<St> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("path: {}", rejection.body_text()),
            )),
        }
    }
}

/// A query string whose rejections are [`ApiError`]s naming the parameter.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequestParts<St> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(r: QueryRejection) -> ApiError {
    // "Failed to deserialize query string: <problem naming the parameter>".
    let text = r.body_text();
    let message = text
        .split_once(": ")
        .map_or(text.as_str(), |(_, m)| m)
        .to_owned();
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Most items one page holds.
pub const MAX_PAGE: i64 = 500;

/// A page size from `limit` (100 when absent), within 1..=[`MAX_PAGE`].
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(100);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::field(
            "limit",
            format!("between 1 and {MAX_PAGE}"),
        ))
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "bad_request",
    };
    // axum's text is "Failed to deserialize the JSON body into the target type:
    // <path>: <problem>"; the part after the first colon names the field.
    let text = r.body_text();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("body: larger than the limit of {BODY_LIMIT} bytes")
    } else {
        text.split_once(": ")
            .map_or(text.as_str(), |(_, rest)| rest)
            .to_owned()
    };
    ApiError::new(
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        },
        code,
        message,
    )
}

/// A refused user or device field is a 400 naming it.
impl From<crate::domain::audience::InvalidField> for ApiError {
    fn from(e: crate::domain::audience::InvalidField) -> Self {
        Self::field(&e.field, e.message)
    }
}
