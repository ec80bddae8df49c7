//! The OpenAPI 3.1 document, served at `GET /openapi.json`, and the route table
//! it is built from. Each route is registered once, from its handler's
//! `#[utoipa::path]`: the router serves the path and methods that annotation
//! declares, and the document lists its operation, so the two cannot differ.

use std::borrow::Cow;

use axum::handler::Handler;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use axum::{Extension, Router};
use serde::Serialize;
use utoipa::openapi::path::{HttpMethod, Paths};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use super::{ApiError, ApiState};
use crate::domain::keys::KeyKind;
use crate::domain::state::{CampaignState, SlotState, StateMachine};

/// The security scheme every route but `/health` and `/openapi.json` requires.
pub const BEARER: &str = "bearer";

/// The operation extension listing the kinds of API key a route answers.
pub const KEY_KINDS: &str = "x-meridian-key-kinds";

/// The document's fixed parts; `Routes` adds the paths and their schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Meridian",
        description = "Self-hosted push notifications: users, devices and subscriptions, \
                       personal pushes, campaigns and their messages. Every route but \
                       `/health` and `/openapi.json` takes an app's API key as \
                       `Authorization: Bearer <key>` and sees only that app's data. \
                       A server key (your backend) may call every route; a client key \
                       (publishable, in the mobile app) only those whose \
                       `x-meridian-key-kinds` lists `client`, and gets 403 elsewhere.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    security(("bearer" = [])),
    modifiers(&BearerScheme),
    tags(
        (name = "service", description = "Liveness and this document"),
        (name = "audience", description = "Users, devices and subscriptions"),
        (name = "messages", description = "Deliveries and receipts"),
        (name = "push", description = "Personal pushes, in a partner contract's shapes"),
        (name = "campaigns", description = "Campaigns and their lifecycle"),
    )
)]
struct Fixed;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut Document) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some("An app's API key (`meridian apikey create`).".to_owned());
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(http));
    }
}

/// The router and the document's paths, built together.
pub struct Routes<S> {
    router: Router<ApiState<S>>,
    paths: Paths,
    schemas: Vec<(String, RefOr<Schema>)>,
}

impl<S: crate::store::Store> Routes<S> {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Paths::new(),
            schemas: Vec::new(),
        }
    }

    /// Serves `handler` where its annotation `P` (the `__path_<handler>` type
    /// that `#[utoipa::path]` makes) says, and documents it there. The schemas
    /// and tags come through utoipa's `__dev` traits, as utoipa-axum takes them.
    pub fn add<P, H, T>(self, annotation: P, handler: H) -> Self
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences + for<'t> utoipa::__dev::Tags<'t>,
        H: Handler<T, ApiState<S>>,
        T: 'static,
    {
        self.add_for(annotation, handler, &[KeyKind::Server])
    }

    /// As [`Routes::add`], for a route a mobile app calls with a client key
    /// too (its handler takes [`super::AnyKey`]; every other key-taking
    /// handler refuses client keys).
    pub fn add_for_clients<P, H, T>(self, annotation: P, handler: H) -> Self
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences + for<'t> utoipa::__dev::Tags<'t>,
        H: Handler<T, ApiState<S>>,
        T: 'static,
    {
        self.add_for(annotation, handler, &KeyKind::ALL)
    }

    fn add_for<P, H, T>(mut self, _annotation: P, handler: H, kinds: &[KeyKind]) -> Self
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences + for<'t> utoipa::__dev::Tags<'t>,
        H: Handler<T, ApiState<S>>,
        T: 'static,
    {
        let path = P::path();
        let methods = P::methods();
        let filter = methods
            .iter()
            .map(method_filter)
            .reduce(MethodFilter::or)
            .unwrap_or(MethodFilter::GET);
        // The one place the API's routes are added (clippy.toml refuses others).
        #[allow(clippy::disallowed_methods)]
        let router = self.router.route(&path, axum::routing::on(filter, handler));
        self.router = router;
        let mut operation = P::operation();
        // Which kinds of key may call it: said on every route that takes a key.
        let keyless = operation.security.as_ref().is_some_and(|s| {
            s.len() == 1 && serde_json::to_value(&s[0]).is_ok_and(|v| v == serde_json::json!({}))
        });
        if !keyless {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            operation
                .extensions
                .get_or_insert_with(Default::default)
                .insert(KEY_KINDS.to_owned(), serde_json::json!(names));
            let note = format!("\n\nAPI key kinds: {}.", names.join(", "));
            operation.description = Some(operation.description.take().unwrap_or_default() + &note);
        }
        let tags = <P as utoipa::__dev::Tags>::tags();
        if !tags.is_empty() {
            operation.tags = Some(tags.into_iter().map(str::to_owned).collect());
        }
        self.paths.add_path_operation(&path, methods, operation);
        P::schemas(&mut self.schemas);
        self
    }

    /// The whole document.
    pub fn document(&self) -> Document {
        let mut doc = Fixed::openapi();
        doc.paths = self.paths.clone();
        let components = doc.components.get_or_insert_with(Default::default);
        components.schemas.extend(self.schemas.iter().cloned());
        components
            .schemas
            .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
        doc
    }

    /// The router, with the document for `GET /openapi.json`.
    pub fn into_router(self) -> Router<ApiState<S>> {
        let doc = std::sync::Arc::new(self.document());
        self.router.layer(Extension(doc))
    }
}

impl<S: crate::store::Store> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

fn method_filter(m: &HttpMethod) -> MethodFilter {
    match m {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Trace => MethodFilter::TRACE,
    }
}

/// `GET /health`: answers `ok` while the process serves.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    operation_id = "health",
    security(()),
    responses((status = 200, description = "The server is up", body = String, content_type = "text/plain", example = "ok"))
)]
pub async fn health() -> &'static str {
    "ok"
}

/// `GET /openapi.json`: this document, built from the routes' annotations.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    operation_id = "openapi",
    security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object, content_type = "application/json"))
)]
pub async fn openapi_json(Extension(doc): Extension<std::sync::Arc<Document>>) -> Response {
    match serde_json::to_vec(&*doc) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the document does not serialize: {e}"),
        )
        .into_response(),
    }
}

/// Every error answer's body, but `/v1/push`'s (see `push.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthorized`, `not_found`, `conflict`,
    /// `invalid_transition`, `not_editable`, `idempotency_mismatch`,
    /// `idempotency_in_progress`, `payload_too_large`, `unsupported_media_type`,
    /// `method_not_allowed`, `unavailable`.
    #[schema(example = "bad_request")]
    pub error: Cow<'static, str>,
    /// What was wrong, naming the field or parameter first.
    #[schema(example = "timezone: \"Mars/Olympus\" is not an IANA time zone")]
    pub message: String,
}

/// What every route with an API key can answer besides its own answers.
#[derive(IntoResponses)]
pub enum KeyRefusals {
    /// No key, or an unknown or revoked one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Storage is unavailable; try again.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// What every route reading a JSON body can answer besides its own answers.
#[derive(IntoResponses)]
pub enum BodyRefusals {
    /// Malformed JSON, a wrong type, an unknown or missing field; the message names it.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// A body over 1 MiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// A body that is not `application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
}

/// A state machine's states as a string enum, from the machine's own list.
fn states<M: StateMachine>(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(M::ALL.iter().map(|s| s.as_str())))
        .into()
}

impl PartialSchema for CampaignState {
    fn schema() -> RefOr<Schema> {
        states::<Self>("A campaign's lifecycle state")
    }
}

impl ToSchema for CampaignState {}

impl PartialSchema for SlotState {
    fn schema() -> RefOr<Schema> {
        states::<Self>("A send slot's state")
    }
}

impl ToSchema for SlotState {}
