//! Outgoing hooks: signed HTTP POSTs to a partner's endpoint — the status webhook
//! (batches of status changes) and the fallback channel (e.g. an SMS gateway).
//! Signing, bodies and the reading of answers are pure; `HookClient` is the I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::config::HookConfig;
use crate::store::{LeasedFallback, OutboxEvent};

/// The header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
/// (Stripe's scheme: the timestamp is signed too, so a captured request cannot be
/// replayed later with another one).
pub const SIGNATURE_HEADER: &str = "x-meridian-signature";

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{key}: cannot read {path}: {source}")]
    Secret {
        key: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{key}: {message}")]
    Client { key: String, message: String },
}

/// Why a POST did not land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    pub message: String,
    /// Worth trying again (network, timeout, 408, 425, 429, 5xx); other 4xx are not.
    pub retry: bool,
    /// What the endpoint asked for with `Retry-After` (seconds).
    pub retry_after: Option<Duration>,
}

/// The signature header's value for `body` at `at`.
pub fn sign(secret: &[u8], at: DateTime<Utc>, body: &[u8]) -> String {
    let t = at.timestamp();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex = crate::domain::bytes::to_hex(tag.as_ref());
    format!("t={t},v1={hex}")
}

/// Checks a signature header the way a receiver should: the HMAC matches (in
/// constant time) and the timestamp is within `tolerance` of `now`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(tolerance) = i64::try_from(tolerance.as_secs()) else {
        return false;
    };
    if (now.timestamp() - t).abs() > tolerance {
        return false;
    }
    let Some(tag) = crate::domain::bytes::from_hex(v1) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let signed = format!("{t}.");
    let mut message = signed.into_bytes();
    message.extend_from_slice(body);
    ring::hmac::verify(&key, &message, &tag).is_ok()
}

/// The status webhook's body: one app's status changes, oldest first.
pub fn status_body(app_id: &str, events: &[OutboxEvent]) -> Value {
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "messageId": e.delivery_id,
                "requestId": e.request_id,
                "campaignId": e.campaign_id,
                "userId": e.user_external_id,
                "status": e.status,
                "detail": e.detail,
                "at": e.at,
            })
        })
        .collect();
    json!({"app": app_id, "events": events})
}

/// The fallback channel's body: who, what and why.
pub fn fallback_body(f: &LeasedFallback) -> Value {
    let message = &f.message.0;
    json!({
        "requestId": f.request_id,
        "userId": f.user_external_id,
        "phone": f.phone,
        "title": message.get("title"),
        "text": message.get("body"),
        "reason": f.reason,
        "topic": f.topic,
    })
}

/// Reads an answer: 2xx lands; 408, 425, 429 and 5xx are worth another attempt.
pub fn classify(status: u16, retry_after: Option<&str>) -> Result<(), HookFailure> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let retry = matches!(status, 408 | 425 | 429) || status >= 500;
    Err(HookFailure {
        message: format!("HTTP {status}"),
        retry,
        retry_after: retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs),
    })
}

/// Wait before attempt `attempt + 1` of a hook: 5 s doubling to at most an hour,
/// never shorter than the endpoint's `Retry-After`.
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let doubled = Duration::from_secs(5).saturating_mul(1u32 << attempt.saturating_sub(1).min(12));
    doubled
        .min(Duration::from_secs(3600))
        .max(retry_after.unwrap_or_default())
}

/// The HMAC key a secret file holds: its bytes as they are, less one trailing
/// line ending (`\n` or `\r\n`, as an editor or `echo` leaves). Not decoded as
/// text: a key with non-UTF-8 bytes signed with a mangled key before.
pub fn secret_bytes(mut file: Vec<u8>) -> Vec<u8> {
    if file.last() == Some(&b'\n') {
        file.pop();
        if file.last() == Some(&b'\r') {
            file.pop();
        }
    }
    file
}

/// One configured endpoint with its secret and its own TLS trust.
pub struct HookClient {
    http: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    pub config: HookConfig,
}

impl HookClient {
    pub fn new(key: &str, config: &HookConfig) -> Result<Self, HookError> {
        let secret = std::fs::read(&config.secret_file).map_err(|source| HookError::Secret {
            key: format!("{key}.secret_file"),
            path: config.secret_file.display().to_string(),
            source,
        })?;
        let secret = secret_bytes(secret);
        let client_error = |message: String| HookError::Client {
            key: key.to_owned(),
            message,
        };
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("meridian/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|source| HookError::Secret {
                key: format!("{key}.ca_file"),
                path: ca.display().to_string(),
                source,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| client_error(format!("ca_file: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| client_error(e.to_string()))?;
        Ok(Self {
            http,
            url: config.url.clone(),
            secret,
            config: config.clone(),
        })
    }

    /// POSTs a signed JSON body; `idempotency_key` lets the receiver drop a repeat
    /// (an attempt whose answer was lost is sent again).
    pub async fn post(
        &self,
        body: &Value,
        idempotency_key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), HookFailure> {
        let bytes = serde_json::to_vec(body).map_err(|e| HookFailure {
            message: e.to_string(),
            retry: false,
            retry_after: None,
        })?;
        let signature = sign(&self.secret, now, &bytes);
        let response = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header("idempotency-key", idempotency_key)
            .body(bytes)
            .send()
            .await
            .map_err(|e| HookFailure {
                message: format!("{}", e.without_url()),
                retry: true,
                retry_after: None,
            })?;
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        classify(response.status().as_u16(), retry_after.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_secret_file_is_its_bytes_less_one_line_ending() {
        assert_eq!(secret_bytes(b"s3cret\n".to_vec()), b"s3cret");
        assert_eq!(secret_bytes(b"s3cret\r\n".to_vec()), b"s3cret");
        // Spaces and a second newline are part of the key; so are non-UTF-8 bytes.
        assert_eq!(secret_bytes(b" s3cret \n\n".to_vec()), b" s3cret \n");
        let binary = vec![0xff, 0xfe, 0x00, 0x80, b'\n'];
        assert_eq!(secret_bytes(binary), [0xff, 0xfe, 0x00, 0x80]);
    }

    #[test]
    fn a_signature_verifies_and_a_changed_body_or_old_timestamp_does_not() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let h = sign(b"s3cret", at, b"{\"a\":1}");
        assert!(h.starts_with("t=1795428000,v1="), "{h}");
        let five = Duration::from_secs(300);
        assert!(verify(b"s3cret", &h, b"{\"a\":1}", at, five));
        assert!(!verify(b"s3cret", &h, b"{\"a\":2}", at, five));
        assert!(!verify(b"other", &h, b"{\"a\":1}", at, five));
        assert!(!verify(
            b"s3cret",
            &h,
            b"{\"a\":1}",
            at + chrono::TimeDelta::minutes(6),
            five
        ));
        assert!(!verify(b"s3cret", "v1=00", b"{}", at, five));
    }

    #[test]
    fn backoff_doubles_to_an_hour_and_honours_retry_after() {
        assert_eq!(backoff(1, None), Duration::from_secs(5));
        assert_eq!(backoff(2, None), Duration::from_secs(10));
        assert_eq!(backoff(4, None), Duration::from_secs(40));
        assert_eq!(backoff(30, None), Duration::from_secs(3600));
        assert_eq!(
            backoff(1, Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn answers_are_read_as_landed_retry_or_give_up() {
        assert_eq!(classify(204, None), Ok(()));
        let e = classify(429, Some("30")).unwrap_err();
        assert!(e.retry);
        assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
        assert!(classify(503, None).unwrap_err().retry);
        assert!(classify(408, None).unwrap_err().retry);
        assert!(!classify(400, None).unwrap_err().retry);
        assert!(!classify(404, None).unwrap_err().retry);
    }
}
