//! `POST /v1/push`: a partner's personal push, sent now. Its answers keep the
//! partner contract's exact shapes (a hapi/Joi service before us), so they differ
//! from the other routes' `{"error": code, "message": …}`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder,
    Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::formats;
use super::openapi::ErrorBody;
use super::{ApiState, KeyOf};
use crate::clock::Clock;
use crate::config::{AppConfig, PushLimits};
use crate::domain::campaign::Message;
use crate::store::{NewPush, Store, TopicRule};

/// Deliveries of transactional pushes are leased ahead of campaign retries (0).
pub const PUSH_PRIORITY: i16 = 10;

/// A validated push request.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRequest {
    pub user_ids: Vec<String>,
    pub install_ids: Vec<String>,
    pub message: Message,
    pub topic: Option<String>,
    pub primary_only: bool,
}

/// Requests per minute per API key, on the engine's clock (so tests can move it).
///
/// The contract is "at most `per_minute` in any 60 seconds", so the quota keeps
/// the times of each key's last `per_minute` accepted requests (a sliding log)
/// and admits a request only when the oldest of them is a minute old. A token
/// bucket (burst of `per_minute`, then one every 60/`per_minute` s) let about
/// twice the contract through in a rolling minute.
pub struct PushQuota {
    per_minute: usize,
    accepted: std::sync::Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
    clock: Arc<dyn Clock>,
}

/// The window the quota counts in.
const QUOTA_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl PushQuota {
    pub fn new(per_minute: u32, clock: Arc<dyn Clock>) -> Self {
        Self {
            per_minute: usize::try_from(per_minute.max(1)).unwrap_or(usize::MAX),
            accepted: std::sync::Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// `Err(seconds to wait)` when the key has used its requests of the last minute.
    fn check(&self, key: &str) -> Result<(), u64> {
        let now = self.clock.now();
        let mut accepted = self
            .accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Keys that have been quiet for a minute are forgotten.
        if accepted.len() > 1024 {
            accepted.retain(|_, times| times.back().is_some_and(|t| now - *t < QUOTA_WINDOW));
        }
        let times = accepted.entry(key.to_owned()).or_default();
        while times.front().is_some_and(|t| now - *t >= QUOTA_WINDOW) {
            times.pop_front();
        }
        if times.len() < self.per_minute {
            times.push_back(now);
            return Ok(());
        }
        let free_at = times.front().map_or(now, |t| *t + QUOTA_WINDOW);
        let wait = (free_at - now).num_milliseconds().max(1);
        Err(u64::try_from((wait + 999) / 1000).unwrap_or(1))
    }
}

/// The request's members: what [`parse`] takes and [`PushBody`] documents.
pub const FIELDS: [&str; 10] = [
    "userIds",
    "installIds",
    "message",
    "deeplink",
    "url",
    "topic",
    "devices",
    "ttl",
    "data",
    "collapseKey",
];

/// The members of its `message`.
pub const MESSAGE_FIELDS: [&str; 3] = ["title", "summary", "image"];

/// The request as documented; [`parse`] reads it from a `Value` itself, to
/// answer in the contract's words (a test keeps the members alike, and
/// `tests/openapi_schemas.rs` the constraints).
pub struct PushBody;

impl PartialSchema for PushBody {
    fn schema() -> RefOr<Schema> {
        let text = |description: &str| formats::string(description, formats::NOT_BLANK);
        let ids = |description: &str| {
            ArrayBuilder::new()
                .items(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(256))
                        .pattern(Some("^[^\\u0000]+$")),
                )
                .description(Some(description))
        };
        let fields = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "userIds",
                ids("Users by external id; an id of digits only that is no external id is \
                     tried as a phone number. At most `server.push.max_ids` (1000) ids in all."),
            )
            .property("installIds", ids("Anonymous installs by install id."))
            .property("message", Ref::from_schema_name(PushMessage::name()))
            .required("message")
            .property(
                "deeplink",
                formats::string("A URI the app opens (any scheme).", formats::URI),
            )
            .property(
                "url",
                formats::string("An http(s) URL the app opens.", formats::HTTP_URL),
            )
            .property(
                "topic",
                text("One of the app's topics (`[apps.<app>.topics]`): users who opted out are left out."),
            )
            .property("devices", Ref::from_schema_name(PushDevices::name()))
            .property(
                "ttl",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(2_419_200))
                    .description(Some("Seconds the providers keep trying, at most 2419200 (28 days).")),
            )
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some("String values the app receives with the push.")),
            )
            .property(
                "collapseKey",
                text("A newer push with the same key replaces one still waiting on the device."),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .description(Some(
                "A push to users and installs. The message's text, image and data together \
                 must fit APNs' 4096-byte payload.",
            ));
        let some = |member: &str| {
            ObjectBuilder::new()
                .required(member)
                .property(member, ArrayBuilder::new().min_items(Some(1)))
        };
        AllOfBuilder::new()
            .item(fields)
            .item(
                AnyOfBuilder::new()
                    .item(some("userIds"))
                    .item(some("installIds")),
            )
            .into()
    }
}

impl ToSchema for PushBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((PushMessage::name().into_owned(), PushMessage::schema()));
        schemas.push((PushDevices::name().into_owned(), PushDevices::schema()));
    }
}

/// `primary`: one device per user; `all` (the default): every active device.
#[allow(dead_code)] // documentation only
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum PushDevices {
    Primary,
    All,
}

/// The push's visible content.
pub struct PushMessage;

impl PartialSchema for PushMessage {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("The push's visible content."))
            .property("title", formats::string("The title.", formats::NOT_BLANK))
            .required("title")
            .property(
                "summary",
                formats::string("The body text.", formats::NOT_BLANK),
            )
            .required("summary")
            .property(
                "image",
                formats::string("An http(s) URL of an image.", formats::HTTP_URL),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for PushMessage {}

/// A push queued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushAccepted {
    #[schema(schema_with = always_true)]
    pub success: bool,
    /// Names the push's messages (`GET /v1/messages?request=`).
    #[schema(example = "req_0123456789abcdef0123456789abcdef")]
    pub request_id: String,
    /// Deliveries queued, one per device.
    pub accepted: u64,
    /// Ids, in request order, that matched no user or install.
    pub unknown: Vec<String>,
}

/// A valid request not served: `Too Many Requests` (429), `Integration is
/// unavailable` (503).
#[derive(Debug, Serialize, ToSchema)]
pub struct PushRefused {
    #[schema(schema_with = always_false)]
    pub success: bool,
    #[schema(example = "Integration is unavailable")]
    pub error: String,
}

/// A request refused in hapi's words: `Bad Request` (400), `Request Entity Too
/// Large` (413), `Unsupported Media Type` (415).
#[derive(Debug, Serialize, ToSchema)]
pub struct ContractError {
    #[schema(example = "Bad Request")]
    pub error: String,
    #[schema(example = "child \"userIds\" fails because [\"userIds\" must be an array]")]
    pub message: String,
}

/// A 503's body: the contract's `Integration is unavailable`, or the common
/// error body when storage failed before the request was read (checking the key).
pub struct PushUnavailable;

impl PartialSchema for PushUnavailable {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name(PushRefused::name()))
            .item(Ref::from_schema_name(ErrorBody::name()))
            .into()
    }
}

impl ToSchema for PushUnavailable {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((PushRefused::name().into_owned(), PushRefused::schema()));
        schemas.push((ErrorBody::name().into_owned(), ErrorBody::schema()));
    }
}

fn always(value: bool) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([value]))
        .into()
}

fn always_true() -> RefOr<Schema> {
    always(true)
}

fn always_false() -> RefOr<Schema> {
    always(false)
}

/// The contract's answers.
fn answer(status: StatusCode, body: impl Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

fn refused(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    answer(
        status,
        ContractError {
            error: error.to_owned(),
            message: message.into(),
        },
    )
}

fn bad_request(message: impl Into<String>) -> Response {
    refused(StatusCode::BAD_REQUEST, "Bad Request", message)
}

fn not_served(status: StatusCode, error: &str) -> Response {
    answer(
        status,
        PushRefused {
            success: false,
            error: error.to_owned(),
        },
    )
}

fn unavailable() -> Response {
    not_served(
        StatusCode::SERVICE_UNAVAILABLE,
        "Integration is unavailable",
    )
}

/// `POST /v1/push`: a personal push to users or installs, queued to be sent now.
#[utoipa::path(
    post,
    path = "/v1/push",
    tag = "push",
    operation_id = "push",
    request_body = PushBody,
    responses(
        (status = 200, description = "Queued, one message per device", body = PushAccepted),
        (status = 400, description = "Refused; the message names the member in Joi's words", body = ContractError),
        (status = 413, description = "A body over 1 MiB", body = ContractError),
        (status = 415, description = "A body that is not `application/json`", body = ContractError),
        (status = 429, description = "Past `server.push.requests_per_minute` for this key",
         body = PushRefused, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 503, description = "The app has no provider configured, or storage is unavailable",
         body = PushUnavailable),
    )
)]
pub async fn post_push<S: Store>(
    State(st): State<ApiState<S>>,
    key: KeyOf,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(wait) = st.push_quota.check(&key.key_hash) {
        let mut r = not_served(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
        return r;
    }
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request Entity Too Large",
                format!(
                    "Payload content length greater than maximum allowed: {}",
                    super::BODY_LIMIT
                ),
            )
        }
        Err(r) => return bad_request(r.body_text()),
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            "Content-Type must be application/json",
        );
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Invalid request payload JSON format");
    };
    let Some(app) = st.config.app(&key.app) else {
        return unavailable();
    };
    let request = match parse(&value, &st.config.server.push, app) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    if app.apns.is_none() && app.fcm.is_none() {
        return unavailable();
    }
    match queue(&st, &key.app, app, &request).await {
        Ok((request_id, q)) => answer(
            StatusCode::OK,
            PushAccepted {
                success: true,
                request_id,
                accepted: q.deliveries,
                unknown: q.unknown,
            },
        ),
        Err(error) => {
            tracing::error!(message = "Cannot queue a push.", %error);
            unavailable()
        }
    }
}

/// Why a checked push could not be queued (never the caller's fault).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no request id: {0}")]
    Random(#[from] super::keys::RandomError),
    #[error("the message: {0}")]
    Message(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Queues a checked push of `app_id` (the API's `POST /v1/push` and the
/// console's test push): a new request id, a row per device found, the
/// engine's row loop woken. Returns the request id and what was queued.
pub async fn queue<S: Store>(
    st: &ApiState<S>,
    app_id: &str,
    app: &AppConfig,
    request: &PushRequest,
) -> Result<(String, crate::store::PushQueued), QueueError> {
    let request_id = request_id()?;
    let message = serde_json::to_value(&request.message)?;
    let users: Vec<(String, Option<String>)> = request
        .user_ids
        .iter()
        .map(|id| (id.clone(), phone_of(id)))
        .collect();
    let topic = request.topic.as_deref().and_then(|t| {
        app.topics.get(t).map(|c| TopicRule {
            name: t,
            default_subscribed: c.default_subscribed,
            cap: None,
        })
    });
    let fallback = app.fallback_for(request.topic.as_deref());
    let queued = st
        .store
        .push_queue(
            &NewPush {
                app_id,
                request_id: &request_id,
                message: &message,
                users: &users,
                install_ids: &request.install_ids,
                topic,
                primary_only: request.primary_only,
                priority: PUSH_PRIORITY,
                webhook: app.webhook.is_some(),
                fallback: fallback.is_some(),
                no_receipt_after: fallback.and_then(|f| f.no_receipt_after),
            },
            st.clock.now(),
        )
        .await?;
    if let Some(wake) = &st.rows_queued {
        wake.notify_one();
    }
    Ok((request_id, queued))
}

/// `req_` and 16 random bytes in hex.
fn request_id() -> Result<String, super::keys::RandomError> {
    let bytes = super::keys::random_bytes::<16>()?;
    Ok(format!("req_{}", crate::domain::bytes::to_hex(&bytes)))
}

/// The phone number an id of digits only is tried as when no external id matches.
fn phone_of(id: &str) -> Option<String> {
    if id.bytes().all(|b| b.is_ascii_digit()) {
        crate::domain::audience::normalize_phone(&format!("+{id}"))
    } else {
        None
    }
}

/// Validates a request the way the contract's Joi schema did, with its messages:
/// `child "userIds" fails because ["userIds" must be an array]`.
pub fn parse(body: &Value, limits: &PushLimits, app: &AppConfig) -> Result<PushRequest, String> {
    let Some(obj) = body.as_object() else {
        return Err("\"value\" must be an object".to_owned());
    };
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("\"{k}\" is not allowed"));
    }
    let user_ids = ids(obj, "userIds", limits.max_ids)?;
    let install_ids = ids(obj, "installIds", limits.max_ids)?;
    if user_ids.is_empty() && install_ids.is_empty() {
        return Err("\"value\" must contain at least one of [userIds, installIds]".to_owned());
    }
    if user_ids.len() + install_ids.len() > limits.max_ids {
        return Err(format!(
            "\"value\" must contain at most {} ids in userIds and installIds together",
            limits.max_ids
        ));
    }
    let m = match obj.get("message") {
        None => return Err(child("message", "\"message\" is required")),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(child("message", "\"message\" must be an object")),
    };
    let in_message = |e: String| child("message", &e);
    if let Some(k) = m.keys().find(|k| !MESSAGE_FIELDS.contains(&k.as_str())) {
        return Err(in_message(format!("\"{k}\" is not allowed")));
    }
    let title = string(m, "title", true).map_err(in_message)?;
    let summary = string(m, "summary", true).map_err(in_message)?;
    let image = string(m, "image", false).map_err(in_message)?;
    if image.as_deref().is_some_and(|i| !is_http(i)) {
        return Err(in_message(child(
            "image",
            "\"image\" must be a valid uri with a scheme matching the http|https pattern",
        )));
    }
    let deeplink = string(obj, "deeplink", false)?;
    if deeplink
        .as_deref()
        .is_some_and(|d| url::Url::parse(d).is_err())
    {
        return Err(child("deeplink", "\"deeplink\" must be a valid uri"));
    }
    let url = string(obj, "url", false)?;
    if url.as_deref().is_some_and(|u| !is_http(u)) {
        return Err(child(
            "url",
            "\"url\" must be a valid uri with a scheme matching the http|https pattern",
        ));
    }
    let topic = string(obj, "topic", false)?;
    if let Some(t) = &topic {
        if !app.topics.contains_key(t) {
            let names: Vec<&str> = app.topics.keys().map(String::as_str).collect();
            return Err(child(
                "topic",
                &format!("\"topic\" must be one of [{}]", names.join(", ")),
            ));
        }
    }
    let primary_only = match string(obj, "devices", false)?.as_deref() {
        None | Some("all") => false,
        Some("primary") => true,
        Some(_) => {
            return Err(child(
                "devices",
                "\"devices\" must be one of [primary, all]",
            ))
        }
    };
    let ttl = match obj.get("ttl") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(s) if s <= 2_419_200 => Some(std::time::Duration::from_secs(s)),
            Some(_) => {
                return Err(child(
                    "ttl",
                    "\"ttl\" must be less than or equal to 2419200",
                ))
            }
            None => return Err(child("ttl", "\"ttl\" must be a non-negative integer")),
        },
    };
    let data = match obj.get("data") {
        None => BTreeMap::new(),
        Some(Value::Object(d)) => {
            if let Some((k, _)) = d.iter().find(|(_, v)| !v.is_string()) {
                return Err(child(
                    "data",
                    &child(k, &format!("\"{k}\" must be a string")),
                ));
            }
            d.clone().into_iter().collect()
        }
        Some(_) => return Err(child("data", "\"data\" must be an object")),
    };
    let message = Message {
        title: title.unwrap_or_default(),
        body: summary.unwrap_or_default(),
        image,
        deeplink,
        url,
        data,
        ttl,
        collapse_key: string(obj, "collapseKey", false)?,
        ..Message::default()
    };
    // What the campaign model checks too (e.g. the APNs 4 KB payload).
    message
        .validate()
        .map_err(|e| format!("\"value\" fails because [{e}]"))?;
    Ok(PushRequest {
        user_ids,
        install_ids,
        message,
        topic,
        primary_only,
    })
}

fn child(key: &str, reason: &str) -> String {
    format!("child \"{key}\" fails because [{reason}]")
}

fn is_http(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// An optional (or required) non-empty string field.
fn string(obj: &Map<String, Value>, key: &str, required: bool) -> Result<Option<String>, String> {
    match obj.get(key) {
        None if required => Err(child(key, &format!("\"{key}\" is required"))),
        None => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(child(key, &format!("\"{key}\" is not allowed to be empty")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(child(key, &format!("\"{key}\" must be a string"))),
    }
}

/// An optional array of ids: non-empty strings of at most 256 characters.
fn ids(obj: &Map<String, Value>, key: &str, max: usize) -> Result<Vec<String>, String> {
    let items = match obj.get(key) {
        None => return Ok(vec![]),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(child(key, &format!("\"{key}\" must be an array"))),
    };
    if items.len() > max {
        return Err(child(
            key,
            &format!("\"{key}\" must contain less than or equal to {max} items"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = |reason: &str| {
                child(
                    key,
                    &format!("\"{key}\" at position {i} fails because [\"{i}\" {reason}]"),
                )
            };
            match v {
                Value::String(s) if s.is_empty() => Err(at("is not allowed to be empty")),
                // Postgres cannot take U+0000 in a text parameter: a 400, not a 503.
                Value::String(s) if s.contains('\0') => {
                    Err(at("must not contain the NUL character"))
                }
                Value::String(s) if s.chars().count() > 256 => Err(at(
                    "length must be less than or equal to 256 characters long",
                )),
                Value::String(s) => Ok(s.clone()),
                _ => Err(at("must be a string")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The names of an object schema's properties and its required ones.
    fn members<T: ToSchema>() -> (Vec<String>, Vec<String>) {
        match T::schema() {
            RefOr::T(Schema::Object(o)) => (o.properties.keys().cloned().collect(), o.required),
            // The members, then the constraints across them.
            RefOr::T(Schema::AllOf(all)) => match all.items.first() {
                Some(RefOr::T(Schema::Object(o))) => {
                    (o.properties.keys().cloned().collect(), o.required.clone())
                }
                _ => panic!("{} starts with no object schema", T::name()),
            },
            _ => panic!("{} is not an object schema", T::name()),
        }
    }

    #[test]
    fn the_documented_body_is_what_parse_reads() {
        let sorted = |names: &[&str]| {
            let mut v: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
            v.sort();
            v
        };
        let (mut fields, required) = members::<PushBody>();
        fields.sort();
        assert_eq!(fields, sorted(&FIELDS));
        assert_eq!(required, ["message"]);
        let (mut fields, mut required) = members::<PushMessage>();
        fields.sort();
        required.sort();
        assert_eq!(fields, sorted(&MESSAGE_FIELDS));
        assert_eq!(required, ["summary", "title"]);
    }

    fn app() -> AppConfig {
        toml::from_str(
            "default_timezone = \"UTC\"\n[topics]\nmarketing = { default_subscribed = false }\ntransactional = { default_subscribed = true }\n",
        )
        .unwrap()
    }

    fn check(body: Value) -> Result<PushRequest, String> {
        parse(&body, &PushLimits::default(), &app())
    }

    fn ok() -> Value {
        json!({"userIds": ["79999999999", "user-42"], "installIds": ["iid-1"],
               "message": {"title": "Order shipped", "summary": "Your order 1234 is on its way", "image": "https://cdn.example.com/a.png"},
               "deeplink": "shop://orders/1234", "topic": "transactional", "devices": "primary"})
    }

    #[test]
    fn the_contract_example_is_accepted() {
        let r = check(ok()).unwrap();
        assert_eq!(r.user_ids, ["79999999999", "user-42"]);
        assert_eq!(r.install_ids, ["iid-1"]);
        assert_eq!(r.message.title, "Order shipped");
        assert_eq!(r.message.body, "Your order 1234 is on its way");
        assert_eq!(r.message.deeplink.as_deref(), Some("shop://orders/1234"));
        assert_eq!(r.topic.as_deref(), Some("transactional"));
        assert!(r.primary_only);
    }

    #[test]
    fn errors_name_the_field_in_the_contract_words() {
        let cases = [
            (json!({"userIds": "u1"}), "child \"userIds\" fails because [\"userIds\" must be an array]"),
            (json!({"userIds": ["u", 7], "message": {"title": "t", "summary": "s"}}),
             "child \"userIds\" fails because [\"userIds\" at position 1 fails because [\"1\" must be a string]]"),
            (json!({"message": {"title": "t", "summary": "s"}}),
             "\"value\" must contain at least one of [userIds, installIds]"),
            (json!({"userIds": ["u"]}), "child \"message\" fails because [\"message\" is required]"),
            (json!({"userIds": ["u"], "message": {"summary": "s"}}),
             "child \"message\" fails because [child \"title\" fails because [\"title\" is required]]"),
            (json!({"userIds": ["u"], "message": {"title": "", "summary": "s"}}),
             "child \"message\" fails because [child \"title\" fails because [\"title\" is not allowed to be empty]]"),
            (json!({"userIds": ["u"], "message": {"title": "t", "summary": "s", "image": "ftp://x"}}),
             "child \"message\" fails because [child \"image\" fails because [\"image\" must be a valid uri with a scheme matching the http|https pattern]]"),
            (json!({"userIds": ["u"], "message": {"title": "t", "summary": "s"}, "topic": "news"}),
             "child \"topic\" fails because [\"topic\" must be one of [marketing, transactional]]"),
            (json!({"userIds": ["u"], "message": {"title": "t", "summary": "s"}, "devices": "one"}),
             "child \"devices\" fails because [\"devices\" must be one of [primary, all]]"),
            (json!({"userIds": ["u"], "message": {"title": "t", "summary": "s"}, "extra": 1}),
             "\"extra\" is not allowed"),
            (json!({"userIds": ["u"], "message": {"title": "t", "summary": "s"}, "data": {"n": 1}}),
             "child \"data\" fails because [child \"n\" fails because [\"n\" must be a string]]"),
            (json!([1]), "\"value\" must be an object"),
            (json!({"installIds": ["a\u{0}"], "message": {"title": "t", "summary": "s"}}),
             "child \"installIds\" fails because [\"installIds\" at position 0 fails because [\"0\" must not contain the NUL character]]"),
            (json!({"userIds": ["u"], "message": {"title": "t", "summary": "s"}, "data": {"n": "\u{0}"}}),
             "\"value\" fails because [message.data.n: must not contain the NUL character (\\u0000)]"),
        ];
        for (body, want) in cases {
            assert_eq!(check(body.clone()).unwrap_err(), want, "{body}");
        }
    }

    #[test]
    fn at_most_max_ids_in_all() {
        let ids: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
        let body = json!({"userIds": ids, "message": {"title": "t", "summary": "s"}});
        assert_eq!(
            check(body).unwrap_err(),
            "child \"userIds\" fails because [\"userIds\" must contain less than or equal to 1000 items]"
        );
        let ids: Vec<String> = (0..600).map(|i| format!("u{i}")).collect();
        let body =
            json!({"userIds": ids, "installIds": ids, "message": {"title": "t", "summary": "s"}});
        assert!(check(body).unwrap_err().contains("at most 1000 ids"));
        let ids: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
        let body = json!({"userIds": ids, "message": {"title": "t", "summary": "s"}});
        assert_eq!(check(body).unwrap().user_ids.len(), 1000);
    }

    #[test]
    fn the_apns_limit_applies_to_pushes_too() {
        let body =
            json!({"userIds": ["u"], "message": {"title": "t", "summary": "x".repeat(5000)}});
        let e = check(body).unwrap_err();
        assert!(e.contains("APNs payload"), "{e}");
    }

    #[test]
    fn only_digit_ids_are_tried_as_phones() {
        assert_eq!(phone_of("79999999999").as_deref(), Some("+79999999999"));
        assert_eq!(phone_of("user-42"), None);
        assert_eq!(phone_of("123"), None);
    }

    #[test]
    fn the_quota_refuses_the_eleventh_request_of_a_minute() {
        let clock = crate::clock::ManualClock::new(
            chrono::DateTime::UNIX_EPOCH + chrono::TimeDelta::days(20_000),
        );
        let quota = PushQuota::new(10, Arc::new(clock.clone()));
        for _ in 0..10 {
            assert_eq!(quota.check("k1"), Ok(()));
        }
        assert_eq!(
            quota.check("k1"),
            Err(60),
            "the oldest frees its place in a minute"
        );
        assert_eq!(quota.check("k2"), Ok(()), "keys have their own quota");
        clock.advance(chrono::TimeDelta::seconds(6));
        assert_eq!(
            quota.check("k1"),
            Err(54),
            "six seconds on, still ten in the window"
        );
        clock.advance(chrono::TimeDelta::seconds(54));
        for _ in 0..10 {
            assert_eq!(quota.check("k1"), Ok(()));
        }
        assert!(quota.check("k1").is_err());
    }

    /// Never more than the contract's number in any 60-second window: requests
    /// every 3 s for ten minutes, each window of the accepted ones checked. A
    /// token bucket let 15 through in 31 s and about 19 in a rolling minute.
    #[test]
    fn no_sixty_second_window_holds_more_than_the_quota() {
        let clock = crate::clock::ManualClock::new(
            chrono::DateTime::UNIX_EPOCH + chrono::TimeDelta::days(20_000),
        );
        let quota = PushQuota::new(10, Arc::new(clock.clone()));
        let mut accepted = Vec::new();
        for _ in 0..200 {
            if quota.check("k").is_ok() {
                accepted.push(clock.now());
            }
            clock.advance(chrono::TimeDelta::seconds(3));
        }
        for (i, start) in accepted.iter().enumerate() {
            let within = accepted[i..]
                .iter()
                .take_while(|t| **t - *start < QUOTA_WINDOW)
                .count();
            assert!(
                within <= 10,
                "{within} accepted within a minute from {start}"
            );
        }
        // And the quota is used: ten in every minute of the run.
        assert_eq!(accepted.len(), 100);
    }
}
