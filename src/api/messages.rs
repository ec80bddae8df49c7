//! Messages: one delivery with its whole status history, and receipts from the app.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::limits::ClientCall;
use super::openapi::{BodyRefusals, ErrorBody, KeyRefusals};
use super::{page_limit, ApiError, ApiState, AppKey, Body, MaybeKey, Path, Peer, Query};
use crate::domain::keys::KeyKind;
use crate::domain::receipt::{self, ReceiptError};
use crate::domain::state::{DeliveryStatus, StateMachine};
use crate::store::{DeliveryEvent, DeliveryFilter, DeliveryRecord, Receipt, ReceiptOutcome, Store};
use axum::http::StatusCode;

/// One step of a message's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub status: String,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The whole history of a message. Steps the row implies are filled in: every
/// message was queued when its row was made, and a message sent on its first
/// attempt has no `sent` event of its own (only `sent_at`).
pub fn history(record: &DeliveryRecord, events: &[DeliveryEvent]) -> Vec<Step> {
    // A message without a device starts as `no_device`: it was never queued.
    let first = match DeliveryStatus::parse(&record.status) {
        Ok(
            DeliveryStatus::NoDevice
            | DeliveryStatus::FallbackSent
            | DeliveryStatus::FallbackFailed,
        ) => DeliveryStatus::NoDevice,
        _ => DeliveryStatus::Queued,
    };
    let mut steps = vec![Step {
        status: first.as_str().to_owned(),
        at: record.created_at,
        attempt: None,
        detail: None,
    }];
    let sent_recorded = events.iter().any(|e| e.status == "sent");
    if let (Some(at), false) = (record.sent_at, sent_recorded) {
        steps.push(Step {
            status: DeliveryStatus::Sent.as_str().to_owned(),
            at,
            attempt: Some(1),
            detail: record.provider_id.clone(),
        });
    }
    steps.extend(events.iter().map(|e| Step {
        status: e.status.clone(),
        at: e.at,
        attempt: (e.attempt > 0).then_some(e.attempt),
        detail: e.detail.clone(),
    }));
    // Stable: an implied step and a recorded one at the same instant keep their order.
    steps.sort_by_key(|s| s.at);
    steps
}

/// One message (a delivery to one device).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: i64,
    pub campaign_id: Option<i64>,
    pub request_id: Option<String>,
    pub user_id: Option<String>,
    pub token: Option<String>,
    pub platform: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub provider_id: Option<String>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every status it went through, oldest first (`GET /v1/messages/{id}` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Step>,
}

/// A page of messages, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    pub messages: Vec<MessageView>,
    /// The `cursor` of the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// `GET /v1/messages/{id}`: a message with its status history.
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    tag = "messages",
    operation_id = "getMessage",
    params(("id" = i64, Path, description = "The message's id")),
    responses(
        (status = 200, description = "The message with its history", body = MessageView),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 404, description = "No such message in this app", body = ErrorBody),
        KeyRefusals,
    )
)]
pub async fn get_message<S: Store>(
    State(st): State<ApiState<S>>,
    AppKey(app): AppKey,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::field("id", "a message id is a number"))?;
    let (r, events) = st
        .store
        .message_get(&app, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("message {id}")))?;
    let steps = history(&r, &events);
    Ok(Json(view(r, steps)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// A user's external id.
    pub user: Option<String>,
    /// A campaign's id.
    pub campaign: Option<i64>,
    /// A transactional push's `requestId`.
    pub request: Option<String>,
    /// A delivery status (`queued`, `sent`, `opened`, …).
    pub status: Option<String>,
    /// Only messages created at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// Page size, 1–500 (100 when absent).
    pub limit: Option<i64>,
}

/// `GET /v1/messages?user=&campaign=&request=&status=&since=&cursor=&limit=`: an app's
/// messages, newest first. `nextCursor` (the last id of the page) asks for the
/// page after; it is null on the last page.
#[utoipa::path(
    get,
    path = "/v1/messages",
    tag = "messages",
    operation_id = "listMessages",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the app's messages, newest first", body = MessagePage),
        (status = 400, description = "A parameter is wrong; the message names it", body = ErrorBody),
        KeyRefusals,
    )
)]
pub async fn list_messages<S: Store>(
    State(st): State<ApiState<S>>,
    AppKey(app): AppKey,
    Query(q): Query<ListQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let status = match q.status.as_deref() {
        Some(s) => Some(
            DeliveryStatus::parse(s)
                .map_err(|_| ApiError::field("status", format!("{s:?} is not a message status")))?,
        ),
        None => None,
    };
    let before_id =
        match q.cursor.as_deref() {
            Some(c) => Some(c.parse::<i64>().map_err(|_| {
                ApiError::field("cursor", "use the nextCursor of the previous page")
            })?),
            None => None,
        };
    let limit = page_limit(q.limit)?;
    let page = st
        .store
        .message_list(
            &app,
            &DeliveryFilter {
                user_external_id: q.user.as_deref(),
                campaign_id: q.campaign,
                request_id: q.request.as_deref(),
                status,
                since: q.since,
                before_id,
                limit,
            },
        )
        .await?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|m| m.id.to_string()))
        .flatten();
    Ok(Json(MessagePage {
        messages: page.into_iter().map(|r| view(r, Vec::new())).collect(),
        next_cursor: next,
    }))
}

fn view(r: DeliveryRecord, history: Vec<Step>) -> MessageView {
    MessageView {
        id: r.id,
        campaign_id: r.campaign_id,
        request_id: r.request_id,
        user_id: r.user_external_id,
        token: r.token,
        platform: r.platform,
        status: r.status,
        attempts: r.attempts,
        provider_id: r.provider_id,
        reason: r.error_reason,
        created_at: r.created_at,
        updated_at: r.updated_at,
        history,
    }
}

/// What happened on the device.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    Delivered,
    Opened,
    Dismissed,
}

/// A receipt: the token the push carried (from the app on the device, with a
/// client key or none), or the message id (server keys only). Its schema is
/// written out below: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReceiptBody {
    pub receipt: Option<String>,
    pub message_id: Option<i64>,
    pub status: ReceiptKind,
    pub action: Option<String>,
}

impl utoipa::PartialSchema for ReceiptBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, AllOfBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
        };
        let or_null = |t: Type| SchemaType::from_iter([t, Type::Null]);
        use utoipa::openapi::Ref;
        let fields = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A receipt: the push's `receipt` token (from the app, with a client key or none) \
                 or its `messageId` (a server key only), not both.",
            ))
            .property(
                "receipt",
                ObjectBuilder::new()
                    .schema_type(or_null(Type::String))
                    .min_length(Some(32))
                    .max_length(Some(32))
                    .description(Some(
                        "`meridian.receipt` (APNs) or `meridian_receipt` (FCM data)",
                    )),
            )
            .property(
                "messageId",
                ObjectBuilder::new()
                    .schema_type(or_null(Type::Integer))
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    ))),
            )
            .property("status", Ref::from_schema_name("ReceiptKind"))
            .required("status")
            .property(
                "action",
                ObjectBuilder::new()
                    .schema_type(or_null(Type::String))
                    .pattern(Some("^[A-Za-z0-9._-]{1,64}$"))
                    .description(Some("The id of the button tapped (with `opened`)")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        // Exactly one of the two is given (a null counts as not given).
        let has = |member: &str, t: Type| {
            ObjectBuilder::new()
                .required(member)
                .property(member, ObjectBuilder::new().schema_type(t))
        };
        AllOfBuilder::new()
            .item(fields)
            .item(
                OneOfBuilder::new()
                    .item(has("receipt", Type::String))
                    .item(has("messageId", Type::Integer)),
            )
            .into()
    }
}

impl ToSchema for ReceiptBody {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "ReceiptKind".to_owned(),
            <ReceiptKind as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// Whether a receipt moved the message's status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptAnswer {
    pub message_id: i64,
    /// False for a repeated or late receipt, which changes nothing.
    pub recorded: bool,
}

/// `POST /v1/receipts`: the app reports what happened on the device. A status
/// only moves forward; a repeated or late receipt changes nothing and says so.
#[utoipa::path(
    post,
    path = "/v1/receipts",
    tag = "messages",
    operation_id = "postReceipt",
    request_body = ReceiptBody,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Recorded, or not when it would move the status back", body = ReceiptAnswer),
        (status = 403, description = "The receipt token is forged or of another app's message", body = ErrorBody),
        (status = 404, description = "No such message in this app (by message id)", body = ErrorBody),
        (status = 429, description = "Too many receipts from this client key or address; see Retry-After", body = ErrorBody),
        BodyRefusals,
        KeyRefusals,
    )
)]
pub async fn post_receipt<S: Store>(
    State(st): State<ApiState<S>>,
    MaybeKey(key): MaybeKey,
    peer: Peer,
    Body(body): Body<ReceiptBody>,
) -> Result<Json<ReceiptAnswer>, ApiError> {
    let server = key.as_ref().is_some_and(|k| k.kind == KeyKind::Server);
    if !server {
        st.client_quota
            .check(
                ClientCall::Receipt,
                key.as_ref().map(|k| k.key_hash.as_str()),
                peer.0,
            )
            .map_err(|wait| ApiError::too_many(ClientCall::Receipt.noun(), wait))?;
    }
    if let Some(action) = &body.action {
        let ok = (1..=64).contains(&action.len())
            && action
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(ApiError::field(
                "action",
                "a button id: 1-64 letters, digits, '-', '_' or '.'",
            ));
        }
    }
    let forged = |e: ReceiptError| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "receipt_forged",
            format!("receipt: {e}"),
        )
    };
    let (app, id) = match (&body.receipt, body.message_id, &key) {
        (Some(_), Some(_), _) => {
            return Err(ApiError::field("messageId", "give a receipt token or a message id, not both"))
        }
        (None, None, _) => return Err(ApiError::field("receipt", "the push's receipt token is required")),
        // A message id alone is trusted from a server key only: anyone could
        // count up ids.
        (None, Some(id), Some(k)) if server => (k.app.clone(), id),
        (None, Some(_), _) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_key_kind",
                "messageId: only a server key reports by message id; an app reports with the push's receipt token",
            ))
        }
        (Some(token), None, Some(k)) => {
            let keys = st.receipt_keys.get(&*st.store, &k.app).await?.ok_or_else(|| forged(ReceiptError::Forged))?;
            (k.app.clone(), keys.verify(&k.app, token).map_err(forged)?)
        }
        (Some(token), None, None) => {
            let claimed = receipt::claimed_id(token).map_err(forged)?;
            // The message's app says whose key must have made the token.
            let app = st.store.message_app_get(claimed).await?.ok_or_else(|| forged(ReceiptError::Forged))?;
            let keys = st.receipt_keys.get(&*st.store, &app).await?.ok_or_else(|| forged(ReceiptError::Forged))?;
            let id = keys.verify(&app, token).map_err(forged)?;
            (app, id)
        }
    };
    let status = match body.status {
        ReceiptKind::Delivered => DeliveryStatus::Delivered,
        ReceiptKind::Opened => DeliveryStatus::Opened,
        ReceiptKind::Dismissed => DeliveryStatus::Dismissed,
    };
    let outcome = st
        .store
        .receipt_record(
            &Receipt {
                app_id: &app,
                id,
                status,
                action: body.action.as_deref(),
                webhook: st.config.app(&app).is_some_and(|a| a.webhook.is_some()),
            },
            st.clock.now(),
        )
        .await?;
    Ok(Json(ReceiptAnswer {
        message_id: id,
        recorded: outcome == ReceiptOutcome::Recorded,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record(sent_at: Option<DateTime<Utc>>) -> DeliveryRecord {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        DeliveryRecord {
            id: 1,
            campaign_id: Some(1),
            request_id: None,
            user_external_id: None,
            token: None,
            platform: None,
            status: "sent".into(),
            attempts: 1,
            provider_id: Some("apns-1".into()),
            error_reason: None,
            created_at: t0,
            updated_at: t0,
            sent_at,
        }
    }

    fn event(status: &str, secs: i64) -> DeliveryEvent {
        DeliveryEvent {
            status: status.into(),
            attempt: 0,
            detail: None,
            at: Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
                + chrono::TimeDelta::seconds(secs),
        }
    }

    #[test]
    fn implied_steps_are_filled_in_once() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let steps = history(&record(Some(t0)), &[event("opened", 60)]);
        let names: Vec<&str> = steps.iter().map(|s| s.status.as_str()).collect();
        assert_eq!(names, ["queued", "sent", "opened"]);
        assert_eq!(steps[1].detail.as_deref(), Some("apns-1"));

        // Retried, then sent: the `sent` event is recorded, not implied again.
        let later = t0 + chrono::TimeDelta::seconds(30);
        let steps = history(
            &record(Some(later)),
            &[event("retry", 1), event("sent", 30)],
        );
        let names: Vec<&str> = steps.iter().map(|s| s.status.as_str()).collect();
        assert_eq!(names, ["queued", "retry", "sent"]);

        let steps = history(&record(None), &[event("failed", 1)]);
        let names: Vec<&str> = steps.iter().map(|s| s.status.as_str()).collect();
        assert_eq!(names, ["queued", "failed"]);
    }
}
