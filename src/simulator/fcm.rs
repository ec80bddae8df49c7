//! FCM HTTP v1 as Google runs it: OAuth bearer, the message's shape, and a fast path for the common small send.

use super::server::{
    count_accepted, count_error, header, ok, respond, scripted_failure, unregistered, Answer, Reply,
};
use super::{lock, State};
use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// A JSON object whose values all deserialize as `T`; keeps nothing. With
/// `IgnoredAny`, any object; with `&str`, an object of strings without escapes
/// (FCM `data`).
pub(super) struct ObjectOf<T>(std::marker::PhantomData<T>);

pub(super) type AnyObject = ObjectOf<serde::de::IgnoredAny>;

pub(super) type PlainStrings<'a> = ObjectOf<&'a str>;

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOf<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = ObjectOf<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<ObjectOf<T>, A::Error> {
                while m.next_entry::<serde::de::IgnoredAny, T>()?.is_some() {}
                Ok(ObjectOf(std::marker::PhantomData))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The device token of `{"message": {"token": "...", "data": {...}, ...}}`, read
/// as objects only (a derived struct would also take arrays), each key once,
/// every `data` value an unescaped string.
pub(super) struct FcmSend<'a> {
    pub(super) token: &'a str,
}

impl<'de> Deserialize<'de> for FcmSend<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Message<'a>(&'a str);
        impl<'de> Deserialize<'de> for Message<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Message<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("an FCM message")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut m: A,
                    ) -> Result<Message<'de>, A::Error> {
                        let (mut token, mut data) = (None, false);
                        while let Some(key) = m.next_key::<&'de str>()? {
                            match key {
                                "token" if token.is_none() => token = Some(m.next_value()?),
                                "data" if !data => {
                                    m.next_value::<PlainStrings>()?;
                                    data = true;
                                }
                                "token" | "data" => {
                                    return Err(serde::de::Error::custom("duplicate key"))
                                }
                                _ => {
                                    m.next_value::<serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        token
                            .map(Message)
                            .ok_or_else(|| serde::de::Error::missing_field("token"))
                    }
                }
                d.deserialize_map(V)
            }
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FcmSend<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an FCM send")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<FcmSend<'de>, A::Error> {
                let mut token = None;
                while let Some(key) = m.next_key::<&'de str>()? {
                    if key == "message" && token.is_none() {
                        token = Some(m.next_value::<Message<'de>>()?.0);
                    } else if key == "message" {
                        return Err(serde::de::Error::custom("duplicate key"));
                    } else {
                        m.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                token
                    .map(|token| FcmSend { token })
                    .ok_or_else(|| serde::de::Error::missing_field("message"))
            }
        }
        d.deserialize_map(V)
    }
}

/// A body this short cannot re-serialize past FCM's 4096-byte limit: compact
/// output never exceeds its input by more than a number's reformatting (at most
/// 3.8× for a run of `1e15`-style numbers), and 1024 × 3.8 < 4096.
pub(super) const FCM_SURELY_SMALL: usize = 1024;

/// The device token of an FCM body that passes every check, read without a
/// `Value`; `None` sends the body through the full checks (and their errors).
pub(super) fn fcm_fast(body: &[u8]) -> Option<&str> {
    if body.len() > FCM_SURELY_SMALL {
        return None;
    }
    let token = serde_json::from_slice::<FcmSend<'_>>(body).ok()?.token;
    (!token.is_empty() && token.len() <= 4096).then_some(token)
}

pub(super) fn fcm_error(
    state: &State,
    status: u16,
    code: &str,
    message: &str,
    retry_after: Option<u64>,
) -> Reply {
    count_error(state, code);
    let grpc_status = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        _ => "UNAVAILABLE",
    };
    let mut headers = vec![];
    if let Some(s) = retry_after {
        headers.push(("retry-after", s.to_string()));
    }
    let body = json!({"error": {
        "code": status, "message": message, "status": grpc_status,
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
    }});
    respond(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        &headers,
        body,
    )
}

/// FCM HTTP v1's checks.
pub(super) fn fcm(
    state: &State,
    req: &hyper::http::request::Parts,
    project: &str,
    body: &[u8],
) -> Answer {
    let now = state.clock.now().timestamp();
    let bearer = header(req, &hyper::header::AUTHORIZATION)
        .and_then(|a| a.strip_prefix("Bearer ").or(a.strip_prefix("bearer ")));
    let granted = bearer.and_then(|b| {
        lock(&state.access_tokens)
            .get(b)
            .map(|(p, expires)| (p == project, *expires))
    });
    let Some((same_project, expires)) = granted else {
        return fcm_error(
            state,
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        )
        .into();
    };
    if expires <= now {
        return fcm_error(
            state,
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        )
        .into();
    }
    if !same_project {
        return fcm_error(
            state,
            403,
            "SENDER_ID_MISMATCH",
            "Permission denied for this project.",
            None,
        )
        .into();
    }
    // `validate_only` (`meridian check-providers`): checked like a send, then
    // answered as Google does, with nothing delivered or counted.
    let validate_only = body.windows(15).any(|w| w == b"\"validate_only\"");
    if !validate_only {
        if let Some(token) = fcm_fast(body) {
            return fcm_accept(state, project, token, now);
        }
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return fcm_error(
            state,
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
            None,
        )
        .into();
    };
    let Some(message) = v.get("message").and_then(Value::as_object) else {
        return fcm_error(state, 400, "INVALID_ARGUMENT", "Missing message.", None).into();
    };
    let Some(token) = message.get("token").and_then(Value::as_str) else {
        return fcm_error(
            state,
            400,
            "INVALID_ARGUMENT",
            "Recipient of the message is not set.",
            None,
        )
        .into();
    };
    if token.is_empty() || token.len() > 4096 {
        return fcm_error(
            state,
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            None,
        )
        .into();
    }
    if let Some(data) = message.get("data") {
        let Some(map) = data.as_object() else {
            return fcm_error(
                state,
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.data'",
                None,
            )
            .into();
        };
        if let Some((i, _)) = map.values().enumerate().find(|(_, v)| !v.is_string()) {
            return fcm_error(
                state,
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid value at 'message.data[{i}].value' (TYPE_STRING)"),
                None,
            )
            .into();
        }
    }
    if serde_json::to_vec(message).map_or(0, |b| b.len()) > 4096 {
        return fcm_error(state, 400, "INVALID_ARGUMENT", "Message is too big", None).into();
    }
    if v.get("validate_only").and_then(Value::as_bool) == Some(true) {
        let name = format!("projects/{project}/messages/fake_message_id");
        return Answer::Other(respond(StatusCode::OK, &[], json!({ "name": name })));
    }
    fcm_accept(state, project, token, now)
}

/// After the checks of the body: the device, scripted failures, then success.
pub(super) fn fcm_accept(state: &State, project: &str, token: &str, now: i64) -> Answer {
    if unregistered(state, token) {
        return fcm_error(
            state,
            404,
            "UNREGISTERED",
            "Requested entity was not found.",
            None,
        )
        .into();
    }
    if let Some((status, after)) = scripted_failure(state) {
        let code = if status == 429 {
            "QUOTA_EXCEEDED"
        } else {
            "UNAVAILABLE"
        };
        return fcm_error(
            state,
            status,
            code,
            "The service is currently unavailable.",
            after,
        )
        .into();
    }
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    count_accepted(state, token, now, false, None);
    let mut body = Vec::with_capacity(64 + project.len());
    body.extend_from_slice(b"{\"name\":");
    let name = format!("projects/{project}/messages/0:{n}");
    if serde_json::to_writer(&mut body, &name).is_err() {
        return Answer::Other(respond(StatusCode::INTERNAL_SERVER_ERROR, &[], Value::Null));
    }
    body.push(b'}');
    Answer::Accepted(ok(None, Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    use super::super::apns::apns_body_ok;
    use super::*;

    fn slow_fcm_accepts(body: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return false;
        };
        let Some(message) = v.get("message").and_then(Value::as_object) else {
            return false;
        };
        let Some(token) = message.get("token").and_then(Value::as_str) else {
            return false;
        };
        let data_ok = message.get("data").is_none_or(|d| {
            d.as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
        });
        !token.is_empty()
            && token.len() <= 4096
            && data_ok
            && serde_json::to_vec(message).map_or(0, |b| b.len()) <= 4096
    }

    #[test]
    fn fast_checks_never_accept_what_the_full_parse_refuses() {
        let fcm: &[&str] = &[
            r#"{"message":{"token":"t","data":{"a":"b"}}}"#,
            r#"{"message":{"token":"t"}}"#,
            r#"{"message":{"token":"t","data":null}}"#,
            r#"{"message":{"token":"t","data":{"a":1}}}"#,
            r#"{"message":{"token":"t","data":["a"]}}"#,
            r#"{"message":["t"]}"#,
            r#"[{"token":"t"}]"#,
            r#"{"message":{"token":""}}"#,
            r#"{"message":{"token":5}}"#,
            r#"{"message":{"token":"t","token":"u"}}"#,
            r#"{"message":{"token":"t\u0041"}}"#,
            r#"{"message":{"token":"t"},"message":{}}"#,
            r#"{"message":{"token":"t"}} x"#,
            r#"{"message":{"token":"t","x":[1e15,2e15,-3e15]}}"#,
        ];
        for body in fcm {
            let fast = fcm_fast(body.as_bytes()).is_some();
            assert!(!fast || slow_fcm_accepts(body.as_bytes()), "{body}");
        }
        assert_eq!(fcm_fast(fcm[0].as_bytes()), Some("t"));
        let apns: &[(&str, bool)] = &[
            (r#"{"aps":{"alert":"x"},"meridian":{"id":"1"}}"#, true),
            (r#"{"aps":{}}"#, true),
            (r#"{"aps":1}"#, false),
            (r#"{"aps":null}"#, false),
            (r#"[{"aps":{}}]"#, false),
            (r#"{"other":{}}"#, false),
            (r#"{"aps":{},"aps":{}}"#, true),
            (r#"{"aps":{}} trailing"#, false),
            (r#"{"aps":{"a":"\u00e9"}}"#, true),
        ];
        for (body, expected) in apns {
            assert_eq!(apns_body_ok(body.as_bytes()), *expected, "{body}");
        }
    }
}
