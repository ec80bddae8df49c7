//! APNs over HTTP/2: token (ES256 JWT) or certificate auth, one request per
//! notification as a stream on a few long-lived connections.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use hyper::http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::http::uri::PathAndQuery;
use hyper::http::HeaderMap;
use serde_json::json;
use tokio::sync::Semaphore;

use super::http::{post, H2Pool};
use super::jwt::Es256Key;
use super::{config_error, retry_after, HttpSettings, Outcome, ProviderError};
use crate::clock::Clock;
use crate::domain::message::payload::APNS_MAX_PAYLOAD;

pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

/// Re-sign the provider token this often (Apple: at least hourly, at most every 20 minutes).
pub const TOKEN_REFRESH: TimeDelta = TimeDelta::minutes(45);
/// Apple refuses new tokens more often than this (`TooManyProviderTokenUpdates`).
pub const TOKEN_MIN_AGE: TimeDelta = TimeDelta::minutes(20);

#[derive(Debug, Clone)]
pub enum ApnsCredentials {
    /// A `.p8` key (PEM text) with its key id and the team id.
    Token {
        key_pem: String,
        key_id: String,
        team_id: String,
    },
    /// A PEM certificate followed by its PEM private key.
    Certificate { pem: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct ApnsSettings {
    pub base_url: String,
    /// Sent as `apns-topic`.
    pub bundle_id: String,
    pub credentials: ApnsCredentials,
    pub http: HttpSettings,
    /// Requests in flight at most, over all connections.
    pub concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsPriority {
    /// 10: deliver now.
    Immediate,
    /// 5: deliver when power allows.
    Normal,
}

/// One notification to one device.
#[derive(Debug, Clone)]
pub struct ApnsNotification<'a> {
    pub device_token: &'a str,
    /// A UUID; ours is derived from the delivery id.
    pub apns_id: &'a str,
    pub payload: &'a [u8],
    pub priority: ApnsPriority,
    /// When Apple stops trying; `None` sends `0` (try once).
    pub expiration: Option<DateTime<Utc>>,
    pub collapse_id: Option<&'a str>,
}

/// The provider token shared by every request, re-signed by whoever finds it old.
#[derive(Debug)]
struct TokenAuth {
    key: Es256Key,
    key_id: String,
    team_id: String,
    current: RwLock<Arc<ProviderToken>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderToken {
    pub jwt: String,
    pub issued_at: DateTime<Utc>,
    /// `bearer <jwt>`, made once per token rather than once per request.
    bearer: HeaderValue,
}

const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

impl TokenAuth {
    fn sign(
        key: &Es256Key,
        key_id: &str,
        team_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ProviderToken, ProviderError> {
        let jwt = key.sign(
            &json!({"alg": "ES256", "kid": key_id}),
            &json!({"iss": team_id, "iat": now.timestamp()}),
        )?;
        let mut bearer = HeaderValue::try_from(format!("bearer {jwt}"))
            .map_err(|_| super::jwt::JwtError::Sign)?;
        bearer.set_sensitive(true);
        Ok(ProviderToken {
            jwt,
            issued_at: now,
            bearer,
        })
    }

    fn read(&self) -> Arc<ProviderToken> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The shared token, re-signed once it is [`TOKEN_REFRESH`] old (by one caller only).
    fn token(&self, now: DateTime<Utc>) -> Arc<ProviderToken> {
        let cur = self.read();
        if now - cur.issued_at < TOKEN_REFRESH {
            return cur;
        }
        self.replace_if(&cur, now, TOKEN_REFRESH).unwrap_or(cur)
    }

    /// After Apple refused `rejected`: a new token, unless one was already made or
    /// `rejected` is younger than Apple's minimum (then re-signing cannot help).
    fn after_rejection(
        &self,
        rejected: &ProviderToken,
        now: DateTime<Utc>,
    ) -> Option<Arc<ProviderToken>> {
        self.replace_if(rejected, now, TOKEN_MIN_AGE)
    }

    fn replace_if(
        &self,
        seen: &ProviderToken,
        now: DateTime<Utc>,
        min_age: TimeDelta,
    ) -> Option<Arc<ProviderToken>> {
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if guard.issued_at != seen.issued_at {
            return Some(guard.clone());
        }
        if now - seen.issued_at < min_age {
            return None;
        }
        match Self::sign(&self.key, &self.key_id, &self.team_id, now) {
            Ok(t) => {
                *guard = Arc::new(t);
                tracing::info!(message = "APNs provider token re-signed.", key_id = %self.key_id);
                Some(guard.clone())
            }
            Err(error) => {
                tracing::error!(message = "Cannot sign an APNs provider token.", %error);
                None
            }
        }
    }
}

#[derive(Debug)]
pub struct ApnsClient {
    pool: H2Pool,
    /// The base URL's path (empty for Apple), before `/3/device/`.
    path_prefix: String,
    /// `apns-topic`.
    topic: HeaderValue,
    auth: Option<TokenAuth>,
    in_flight: Semaphore,
    clock: Arc<dyn Clock>,
}

fn is_hex_token(t: &str) -> bool {
    !t.is_empty() && t.len() <= 200 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

impl ApnsClient {
    pub fn new(settings: ApnsSettings, clock: Arc<dyn Clock>) -> Result<Self, ProviderError> {
        let base = settings.base_url.trim_end_matches('/').to_owned();
        let url =
            url::Url::parse(&base).map_err(|e| config_error("apns.base_url", e.to_string()))?;
        let path_prefix = url.path().trim_end_matches('/').to_owned();
        let topic = HeaderValue::try_from(settings.bundle_id.as_str())
            .map_err(|e| config_error("apns.bundle_id", e.to_string()))?;
        let (auth, identity) = match &settings.credentials {
            ApnsCredentials::Token {
                key_pem,
                key_id,
                team_id,
            } => {
                let key = Es256Key::from_pem(key_pem)
                    .map_err(|e| config_error("apns.key_file", e.to_string()))?;
                let first = TokenAuth::sign(&key, key_id, team_id, clock.now())?;
                let auth = TokenAuth {
                    key,
                    key_id: key_id.clone(),
                    team_id: team_id.clone(),
                    current: RwLock::new(Arc::new(first)),
                };
                (Some(auth), None)
            }
            ApnsCredentials::Certificate { pem } => (None, Some(pem.as_slice())),
        };
        Ok(Self {
            pool: H2Pool::new(&settings.http, &base, "apns", identity)?,
            path_prefix,
            topic,
            auth,
            in_flight: Semaphore::new(settings.concurrency.max(1)),
            clock,
        })
    }

    /// The provider token now in use (token auth only).
    pub fn provider_token(&self) -> Option<ProviderToken> {
        self.auth
            .as_ref()
            .map(|a| (*a.token(self.clock.now())).clone())
    }

    /// Sends one notification. Never fails: every answer is an [`Outcome`].
    pub async fn send(&self, n: &ApnsNotification<'_>) -> Outcome {
        if n.payload.len() > APNS_MAX_PAYLOAD {
            return Outcome::Rejected {
                reason: format!(
                    "PayloadTooLarge: {} bytes, limit {APNS_MAX_PAYLOAD} (refused before sending)",
                    n.payload.len()
                ),
            };
        }
        if !is_hex_token(n.device_token) {
            return Outcome::TokenInvalid {
                reason: "BadDeviceToken: not a hex device token (refused before sending)"
                    .to_owned(),
            };
        }
        if n.collapse_id.is_some_and(|c| c.len() > 64) {
            return Outcome::Rejected {
                reason: "BadCollapseId: longer than 64 bytes (refused before sending)".to_owned(),
            };
        }
        let Ok(_permit) = self.in_flight.acquire().await else {
            return Outcome::Retry {
                reason: "client closed".to_owned(),
                after: None,
            };
        };
        let mut token = self.auth.as_ref().map(|a| a.token(self.clock.now()));
        let mut refreshed = false;
        loop {
            let outcome = self.send_once(n, token.as_deref()).await;
            let auth_rejected = matches!(&outcome, Outcome::AuthFailed { reason }
                if reason.starts_with("ExpiredProviderToken") || reason.starts_with("InvalidProviderToken"));
            match (&self.auth, &token) {
                (Some(auth), Some(used)) if auth_rejected && !refreshed => {
                    refreshed = true;
                    match auth.after_rejection(used, self.clock.now()) {
                        Some(fresh) => token = Some(fresh),
                        None => return self.warned(outcome),
                    }
                }
                _ => return self.warned(outcome),
            }
        }
    }

    /// `outcome`, logged first when it says our credentials were refused.
    fn warned(&self, outcome: Outcome) -> Outcome {
        if let Outcome::AuthFailed { reason } = &outcome {
            self.pool.warn_auth_failed("apns", reason);
        }
        outcome
    }

    async fn send_once(&self, n: &ApnsNotification<'_>, token: Option<&ProviderToken>) -> Outcome {
        let invalid = |what: &str| Outcome::Rejected {
            reason: format!("{what}: not a valid header value (refused before sending)"),
        };
        let Ok(path) =
            PathAndQuery::try_from(format!("{}/3/device/{}", self.path_prefix, n.device_token))
        else {
            return invalid("device token");
        };
        let uri = match self.pool.uri(path) {
            Ok(u) => u,
            Err(e) => return e.outcome(),
        };
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(APNS_TOPIC, self.topic.clone());
        headers.insert(APNS_PUSH_TYPE, HeaderValue::from_static("alert"));
        let Ok(id) = HeaderValue::try_from(n.apns_id) else {
            return invalid("apns-id");
        };
        headers.insert(APNS_ID, id);
        headers.insert(
            APNS_PRIORITY,
            HeaderValue::from_static(match n.priority {
                ApnsPriority::Immediate => "10",
                ApnsPriority::Normal => "5",
            }),
        );
        headers.insert(
            APNS_EXPIRATION,
            match n.expiration {
                None => HeaderValue::from_static("0"),
                Some(t) => HeaderValue::from(t.timestamp().max(0)),
            },
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(c) = n.collapse_id {
            let Ok(c) = HeaderValue::try_from(c) else {
                return invalid("apns-collapse-id");
            };
            headers.insert(APNS_COLLAPSE_ID, c);
        }
        if let Some(t) = token {
            headers.insert(AUTHORIZATION, t.bearer.clone());
        }
        let reply = match self
            .pool
            .send(post(uri, headers), Bytes::copy_from_slice(n.payload))
            .await
        {
            Ok(r) => r,
            Err(e) => return e.outcome(),
        };
        let status = reply.status.as_u16();
        if status == 200 {
            let provider_id = reply
                .headers
                .get(APNS_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Outcome::Accepted { provider_id };
        }
        let after = retry_after(&reply.headers);
        let reason = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned));
        classify(status, reason.as_deref(), after)
    }
}

/// What an APNs error answer means. Unknown reasons are kept verbatim.
pub fn classify(status: u16, reason: Option<&str>, after: Option<Duration>) -> Outcome {
    let r = reason.unwrap_or("").to_owned();
    let described = if r.is_empty() {
        format!("HTTP {status}")
    } else {
        r.clone()
    };
    match (status, r.as_str()) {
        (200, _) => Outcome::Accepted { provider_id: None },
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            Outcome::TokenInvalid { reason: described }
        }
        (403, _) => Outcome::AuthFailed { reason: described },
        (429, _) | (500..=599, _) => Outcome::Retry {
            reason: described,
            after,
        },
        _ => Outcome::Rejected { reason: described },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_apples_table() {
        assert!(matches!(
            classify(410, Some("Unregistered"), None),
            Outcome::TokenInvalid { .. }
        ));
        assert!(matches!(
            classify(400, Some("BadDeviceToken"), None),
            Outcome::TokenInvalid { .. }
        ));
        assert!(matches!(
            classify(400, Some("DeviceTokenNotForTopic"), None),
            Outcome::TokenInvalid { .. }
        ));
        assert_eq!(
            classify(429, Some("TooManyRequests"), Some(Duration::from_secs(3))),
            Outcome::Retry {
                reason: "TooManyRequests".into(),
                after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            classify(503, Some("ServiceUnavailable"), None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(classify(500, None, None), Outcome::Retry { .. }));
        assert!(matches!(
            classify(403, Some("ExpiredProviderToken"), None),
            Outcome::AuthFailed { .. }
        ));
        assert_eq!(
            classify(413, Some("PayloadTooLarge"), None),
            Outcome::Rejected {
                reason: "PayloadTooLarge".into()
            }
        );
        assert_eq!(
            classify(400, Some("SomethingNew"), None),
            Outcome::Rejected {
                reason: "SomethingNew".into()
            }
        );
        assert_eq!(
            classify(404, None, None),
            Outcome::Rejected {
                reason: "HTTP 404".into()
            }
        );
    }

    #[test]
    fn token_is_shared_then_resigned_once_old() {
        let clock = crate::clock::ManualClock::new(
            chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 23, 10, 0, 0).unwrap(),
        );
        let key = Es256Key::from_pem(&super::super::jwt::generate_p8().unwrap()).unwrap();
        let first = TokenAuth::sign(&key, "K", "T", clock.now()).unwrap();
        let auth = TokenAuth {
            key,
            key_id: "K".into(),
            team_id: "T".into(),
            current: RwLock::new(Arc::new(first.clone())),
        };
        clock.advance(TimeDelta::minutes(10));
        assert_eq!(*auth.token(clock.now()), first);
        // Rejected while younger than 20 minutes: re-signing would be refused by Apple.
        assert!(auth.after_rejection(&first, clock.now()).is_none());
        clock.advance(TimeDelta::minutes(36));
        let second = auth.token(clock.now());
        assert_ne!(*second, first);
        // A caller still holding the old token gets the new one, not a third.
        assert_eq!(
            auth.after_rejection(&first, clock.now()),
            Some(second.clone())
        );
    }
}
