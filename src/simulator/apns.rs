//! APNs as Apple runs it: provider-token auth, topic, headers and payload checks.

use super::fcm::AnyObject;
use super::server::{
    count_accepted, count_error, header, names, ok, respond, scripted_failure, unregistered,
    Answer, Reply,
};
use super::{lock, State};
use crate::provider::jwt;
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

pub(super) fn apns_error(
    state: &State,
    status: u16,
    reason: &str,
    retry_after: Option<u64>,
) -> Reply {
    count_error(state, reason);
    let mut headers = vec![];
    if let Some(s) = retry_after {
        headers.push(("retry-after", s.to_string()));
    }
    let mut body = json!({"reason": reason});
    if status == 410 {
        body["timestamp"] = json!(state.clock.now().timestamp_millis());
    }
    respond(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        &headers,
        body,
    )
}

pub(super) fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks an APNs provider token's signature, key and team; returns (key id, iat).
pub(super) fn verify_provider_token(
    state: &State,
    bearer: &str,
) -> Result<(String, i64), &'static str> {
    let parsed = jwt::decode(bearer).map_err(|_| "InvalidProviderToken")?;
    let kid = parsed
        .header
        .get("kid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let key = state
        .apns_keys
        .iter()
        .find(|k| k.key_id == kid)
        .ok_or("InvalidProviderToken")?;
    if parsed.header.get("alg").and_then(Value::as_str) != Some("ES256")
        || parsed.claims.get("iss").and_then(Value::as_str) != Some(key.team_id.as_str())
        || parsed.verify_es256(&key.public_key).is_err()
    {
        return Err("InvalidProviderToken");
    }
    let iat = parsed
        .claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or("InvalidProviderToken")?;
    Ok((key.key_id.clone(), iat))
}

/// APNs' checks, in the order Apple documents its errors.
pub(super) fn apns(
    state: &State,
    req: &hyper::http::request::Parts,
    token: &str,
    body: &[u8],
    client_cert: bool,
) -> Answer {
    let now = state.clock.now().timestamp();
    // Provider token, unless the connection authenticated with a certificate.
    let bearer = header(req, &hyper::header::AUTHORIZATION)
        .and_then(|a| a.strip_prefix("bearer ").or(a.strip_prefix("Bearer ")));
    let iat = match (bearer, client_cert) {
        (None, true) => None,
        (None, false) => return apns_error(state, 403, "MissingProviderToken", None).into(),
        (Some(bearer), _) => {
            let cached = lock(&state.verified_jwts).get(bearer).map(|(_, iat)| *iat);
            let iat = match cached {
                Some(iat) => iat,
                None => match verify_provider_token(state, bearer) {
                    Ok(v) => {
                        let iat = v.1;
                        lock(&state.verified_jwts).insert(bearer.to_owned(), v);
                        iat
                    }
                    Err(reason) => return apns_error(state, 403, reason, None).into(),
                },
            };
            let expire_before = lock(&state.behaviour).expire_tokens_issued_before;
            if now - iat > 3600 || expire_before.is_some_and(|t| iat < t) {
                return apns_error(state, 403, "ExpiredProviderToken", None).into();
            }
            Some(iat)
        }
    };
    // Headers.
    let Some(topic) = header(req, &names::APNS_TOPIC) else {
        return apns_error(state, 400, "MissingTopic", None).into();
    };
    if !state.apns_topics.is_empty() && !state.apns_topics.iter().any(|t| t == topic) {
        return apns_error(state, 400, "BadTopic", None).into();
    }
    if !matches!(
        header(req, &names::APNS_PUSH_TYPE),
        Some(
            "alert"
                | "background"
                | "location"
                | "voip"
                | "complication"
                | "fileprovider"
                | "mdm"
                | "liveactivity"
        )
    ) {
        return apns_error(state, 400, "InvalidPushType", None).into();
    }
    if header(req, &names::APNS_PRIORITY).is_some_and(|p| !matches!(p, "1" | "5" | "10")) {
        return apns_error(state, 400, "BadPriority", None).into();
    }
    if header(req, &names::APNS_EXPIRATION).is_some_and(|e| e.parse::<i64>().is_err()) {
        return apns_error(state, 400, "BadExpirationDate", None).into();
    }
    let apns_id = req.headers.get(names::APNS_ID);
    if apns_id.is_some_and(|id| id.to_str().map_or(true, |id| !is_uuid(id))) {
        return apns_error(state, 400, "BadMessageId", None).into();
    }
    if header(req, &names::APNS_COLLAPSE_ID).is_some_and(|c| c.len() > 64) {
        return apns_error(state, 400, "BadCollapseId", None).into();
    }
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return apns_error(state, 400, "BadDeviceToken", None).into();
    }
    // Payload.
    if body.is_empty() {
        return apns_error(state, 400, "PayloadEmpty", None).into();
    }
    if body.len() > 4096 {
        return apns_error(state, 413, "PayloadTooLarge", None).into();
    }
    if !apns_body_ok(body) {
        return apns_error(state, 400, "BadPayload", None).into();
    }
    // The device.
    if unregistered(state, token) {
        return apns_error(state, 410, "Unregistered", None).into();
    }
    if let Some((status, after)) = scripted_failure(state) {
        let reason = if status == 429 {
            "TooManyRequests"
        } else {
            "ServiceUnavailable"
        };
        return apns_error(state, status, reason, after).into();
    }
    let id = match apns_id {
        Some(id) => id.clone(),
        None => HeaderValue::try_from(crate::provider::apns_id_for(
            crate::domain::ids::DeliveryId::new(
                state.counter.fetch_add(1, Ordering::Relaxed) as i64
            ),
        ))
        .unwrap_or(HeaderValue::from_static(
            "00000000-0000-4000-8000-000000000000",
        )),
    };
    count_accepted(state, token, now, true, iat);
    Answer::Accepted(ok(
        Some((HeaderName::from_static("apns-id"), id)),
        Bytes::new(),
    ))
}

/// Whether an APNs body is a JSON object whose `aps` is an object. A typed,
/// allocation-free parse first; anything it does not take is decided by the
/// `Value` parse (so the answer is always that of the full parse).
pub(super) fn apns_body_ok(body: &[u8]) -> bool {
    /// `{"aps": {...}, ...}`: an object (never an array, as a derived struct would
    /// also take) with exactly one `aps`, itself an object.
    struct Body;
    impl<'de> Deserialize<'de> for Body {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Body;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an APNs payload")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Body, A::Error> {
                    let mut aps = false;
                    while let Some(key) = m.next_key::<&'de str>()? {
                        if key == "aps" {
                            if aps {
                                return Err(serde::de::Error::duplicate_field("aps"));
                            }
                            m.next_value::<AnyObject>()?;
                            aps = true;
                        } else {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                    if aps {
                        Ok(Body)
                    } else {
                        Err(serde::de::Error::missing_field("aps"))
                    }
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Body>(body).is_ok()
        || serde_json::from_slice::<Value>(body)
            .is_ok_and(|v| v.get("aps").is_some_and(Value::is_object))
}
