//! `Idempotency-Key`: a client that sends a request again (its answer was lost)
//! gets the first answer again instead of a second effect. Stripe's rules: the
//! same key with the same request within 24 hours replays the stored answer
//! (`Idempotent-Replayed: true`); the same key with another request is a 422;
//! a key whose request is still running is a 409. Only successful answers are
//! kept: a refused request wrote nothing, so running it again is harmless.

use std::future::Future;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::TimeDelta;
use serde_json::Value;

use super::{keys, ApiError, ApiState};
use crate::store::{ClaimOutcome, ClaimTimes, IdempotencyKey, Store};

pub const HEADER: &str = "idempotency-key";

/// How long a key's answer is kept.
pub const TTL: TimeDelta = TimeDelta::hours(24);

/// A claim unfinished for this long was left by a request that died (a crash,
/// a dropped connection) and is taken over by the next request with its key.
pub const STALE: TimeDelta = TimeDelta::minutes(5);

/// The key a request carries, if any.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| {
            ApiError::field(
                "Idempotency-Key",
                "must be 1 to 255 printable ASCII characters without spaces",
            )
        })
}

/// What makes two requests the same: the route and the body as it was
/// understood (normalized, so key order and spelled-out defaults do not matter).
pub fn fingerprint(route: &str, body: &Value) -> String {
    keys::hash(&format!("{route}\n{body}"))
}

/// Runs `request` at most once per idempotency key of the app (every time when
/// the request has none) and answers with its JSON.
pub async fn once<S: Store>(
    st: &ApiState<S>,
    app: &str,
    headers: &HeaderMap,
    fingerprint: &str,
    request: impl Future<Output = Result<(StatusCode, Value), ApiError>>,
) -> Result<Response, ApiError> {
    let Some(key) = key_of(headers)? else {
        let (status, body) = request.await?;
        return Ok(json(status, body.to_string(), false));
    };
    let k = IdempotencyKey {
        app_id: app,
        key: &key,
        request_hash: fingerprint,
    };
    let now = st.clock.now();
    let times = ClaimTimes {
        now,
        expired_before: now - TTL,
        stale_before: now - STALE,
    };
    match st.store.idempotency_key_claim(&k, times).await? {
        ClaimOutcome::Replay { status, response } => Ok(json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            response,
            true,
        )),
        ClaimOutcome::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_mismatch",
            "Idempotency-Key: already used with a different request",
        )),
        ClaimOutcome::InProgress => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_in_progress",
            "Idempotency-Key: a request with this key is still running; try again shortly",
        )),
        ClaimOutcome::Claimed => match request.await {
            Ok((status, body)) => {
                let text = body.to_string();
                if let Err(error) = st
                    .store
                    .idempotency_key_finish(&k, status.as_u16(), &text)
                    .await
                {
                    // The work is done and stands; a retry runs it again (a create
                    // finds its campaign unchanged) once the claim goes stale.
                    tracing::warn!(message = "Could not keep an idempotent answer.", %error);
                }
                Ok(json(status, text, false))
            }
            Err(e) => {
                if let Err(error) = st.store.idempotency_key_release(&k).await {
                    tracing::warn!(message = "Could not release an idempotency key.", %error);
                }
                Err(e)
            }
        },
    }
}

fn json(status: StatusCode, body: String, replayed: bool) -> Response {
    let mut response = (status, [(CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
