//! FCM HTTP v1: OAuth2 JWT-bearer grant with a service account, one request per
//! message over long-lived HTTP/2 connections.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use hyper::http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::http::uri::PathAndQuery;
use hyper::http::{HeaderMap, Uri};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{Mutex, Semaphore};

use super::http::{post, H2Pool};
use super::jwt::Rs256Key;
use super::{config_error, retry_after, HttpSettings, Outcome, ProviderError};
use crate::clock::Clock;

pub const DEFAULT_URL: &str = "https://fcm.googleapis.com";
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Refresh the access token this long before it expires.
pub const REFRESH_AHEAD: TimeDelta = TimeDelta::minutes(5);

/// The fields of a Google service-account key file that matter here.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    pub fn from_json(text: &str) -> Result<Self, ProviderError> {
        serde_json::from_str(text)
            .map_err(|e| config_error("fcm.service_account_file", e.to_string()))
    }
}

#[derive(Debug, Clone)]
pub struct FcmSettings {
    pub base_url: String,
    pub account: ServiceAccount,
    pub http: HttpSettings,
    pub concurrency: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub value: String,
    pub expires_at: DateTime<Utc>,
    /// `Bearer <value>`, made once per token rather than once per request.
    bearer: HeaderValue,
}

/// The cached OAuth access token. Expired or near expiry, the first caller
/// fetches a new one while the others wait for it: one grant, not a storm.
#[derive(Debug)]
struct TokenSource {
    key: Rs256Key,
    account: ServiceAccount,
    cached: RwLock<Option<Arc<AccessToken>>>,
    refreshing: Mutex<()>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: i64,
}

impl TokenSource {
    fn fresh(&self, now: DateTime<Utc>) -> Option<Arc<AccessToken>> {
        let cached = self.cached.read().unwrap_or_else(PoisonError::into_inner);
        cached
            .as_ref()
            .filter(|t| t.expires_at - now > REFRESH_AHEAD)
            .cloned()
    }

    async fn get(
        &self,
        http: &OAuthEndpoint,
        clock: &dyn Clock,
    ) -> Result<Arc<AccessToken>, String> {
        if let Some(t) = self.fresh(clock.now()) {
            return Ok(t);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        if let Some(t) = self.fresh(clock.now()) {
            return Ok(t);
        }
        let token = Arc::new(self.fetch(http, clock.now()).await?);
        *self.cached.write().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        tracing::info!(message = "FCM access token fetched.", account = %self.account.client_email, expires_at = %token.expires_at);
        Ok(token)
    }

    /// Forgets `stale` after Google refused it (unless it was already replaced).
    fn invalidate(&self, stale: &AccessToken) {
        let mut cached = self.cached.write().unwrap_or_else(PoisonError::into_inner);
        if cached.as_deref() == Some(stale) {
            *cached = None;
        }
    }

    async fn fetch(&self, http: &OAuthEndpoint, now: DateTime<Utc>) -> Result<AccessToken, String> {
        let iat = now.timestamp();
        let assertion = self
            .key
            .sign(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &json!({
                    "iss": self.account.client_email,
                    "scope": SCOPE,
                    "aud": self.account.token_uri,
                    "iat": iat,
                    "exp": iat + 3600,
                }),
            )
            .map_err(|e| format!("signing the OAuth assertion: {e}"))?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let reply = http
            .pool
            .send(post(http.uri.clone(), headers), Bytes::from(form))
            .await
            .map_err(|e| format!("OAuth token endpoint: {e}"))?;
        let (status, body) = (reply.status, reply.body);
        if !status.is_success() {
            return Err(format!(
                "OAuth token endpoint answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| format!("OAuth token endpoint answer: {e}"))?;
        let mut bearer = HeaderValue::try_from(format!("Bearer {}", t.access_token))
            .map_err(|_| "OAuth token endpoint answer: access token is not a header value")?;
        bearer.set_sensitive(true);
        Ok(AccessToken {
            value: t.access_token,
            expires_at: now + TimeDelta::seconds(t.expires_in.max(0)),
            bearer,
        })
    }
}

/// Google's token endpoint, which may be on another host than FCM.
#[derive(Debug)]
struct OAuthEndpoint {
    pool: H2Pool,
    uri: Uri,
}

/// The part of FCM's answer to a successful send that we keep.
#[derive(Deserialize)]
struct Sent {
    name: Option<String>,
}

#[derive(Debug)]
pub struct FcmClient {
    pool: H2Pool,
    oauth: OAuthEndpoint,
    send_uri: Uri,
    tokens: TokenSource,
    in_flight: Semaphore,
    clock: Arc<dyn Clock>,
}

impl FcmClient {
    pub fn new(settings: FcmSettings, clock: Arc<dyn Clock>) -> Result<Self, ProviderError> {
        let base = settings.base_url.trim_end_matches('/');
        url::Url::parse(base).map_err(|e| config_error("fcm.base_url", e.to_string()))?;
        let key = Rs256Key::from_pem(&settings.account.private_key)
            .map_err(|e| config_error("fcm.service_account_file", format!("private_key: {e}")))?;
        let token_uri: Uri = settings
            .account
            .token_uri
            .parse()
            .map_err(|e| config_error("fcm.service_account_file", format!("token_uri: {e}")))?;
        let oauth_pool = H2Pool::new(
            &HttpSettings {
                connections: 1,
                ..settings.http.clone()
            },
            &settings.account.token_uri,
            "fcm",
            None,
        )?;
        let oauth = OAuthEndpoint {
            uri: oauth_pool
                .uri(
                    token_uri
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| PathAndQuery::from_static("/")),
                )
                .map_err(|e| config_error("fcm.service_account_file", format!("token_uri: {e}")))?,
            pool: oauth_pool,
        };
        let pool = H2Pool::new(&settings.http, base, "fcm", None)?;
        let base_path = url::Url::parse(base)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let send_path = PathAndQuery::try_from(format!(
            "{base_path}/v1/projects/{}/messages:send",
            settings.account.project_id
        ))
        .map_err(|e| config_error("fcm.service_account_file", format!("project_id: {e}")))?;
        let send_uri = pool
            .uri(send_path)
            .map_err(|e| config_error("fcm.base_url", e.to_string()))?;
        Ok(Self {
            pool,
            oauth,
            send_uri,
            tokens: TokenSource {
                key,
                account: settings.account,
                cached: RwLock::new(None),
                refreshing: Mutex::new(()),
            },
            in_flight: Semaphore::new(settings.concurrency.max(1)),
            clock,
        })
    }

    /// Sends one message (`{"message": {...}}` as built by `payload::fcm_message`).
    pub async fn send(&self, message: &Value) -> Outcome {
        match serde_json::to_vec(message) {
            Ok(body) => self.send_json(Bytes::from(body)).await,
            Err(e) => Outcome::Rejected {
                reason: format!("payload: {e}"),
            },
        }
    }

    /// Sends one message already serialized (`payload::fcm_message_bytes`).
    pub async fn send_json(&self, body: Bytes) -> Outcome {
        let Ok(_permit) = self.in_flight.acquire().await else {
            return Outcome::Retry {
                reason: "client closed".to_owned(),
                after: None,
            };
        };
        let mut retried_auth = false;
        loop {
            let token = match self.tokens.get(&self.oauth, self.clock.as_ref()).await {
                Ok(t) => t,
                Err(reason) => {
                    return Outcome::Retry {
                        reason,
                        after: None,
                    }
                }
            };
            let mut headers = HeaderMap::with_capacity(2);
            headers.insert(AUTHORIZATION, token.bearer.clone());
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let reply = match self
                .pool
                .send(post(self.send_uri.clone(), headers), body.clone())
                .await
            {
                Ok(r) => r,
                Err(e) => return e.outcome(),
            };
            let status = reply.status.as_u16();
            if (200..300).contains(&status) {
                // The common answer: read only the message name, not a whole `Value`.
                if let Ok(sent) = serde_json::from_slice::<Sent>(&reply.body) {
                    return Outcome::Accepted {
                        provider_id: sent.name,
                    };
                }
            }
            let after = retry_after(&reply.headers);
            let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            if status == 401 && !retried_auth {
                // An access token Google no longer accepts: fetch a new one, once.
                retried_auth = true;
                self.tokens.invalidate(&token);
                continue;
            }
            let outcome = classify(status, &body, after);
            if let Outcome::AuthFailed { reason } = &outcome {
                self.pool.warn_auth_failed("fcm", reason);
            }
            return outcome;
        }
    }
}

/// The FcmError code of an error answer (`error.details[].errorCode`), else its `status`.
pub fn error_code(body: &Value) -> Option<&str> {
    let error = body.get("error")?;
    error
        .get("details")
        .and_then(Value::as_array)
        .and_then(|ds| {
            ds.iter()
                .find_map(|d| d.get("errorCode").and_then(Value::as_str))
        })
        .or_else(|| error.get("status").and_then(Value::as_str))
}

/// What an FCM answer means. Unknown codes are kept verbatim.
pub fn classify(status: u16, body: &Value, after: Option<Duration>) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Accepted {
            provider_id: body.get("name").and_then(Value::as_str).map(str::to_owned),
        };
    }
    let code = error_code(body).unwrap_or("").to_owned();
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    let reason = match (code.is_empty(), message.is_empty()) {
        (true, _) => format!("HTTP {status}"),
        (false, true) => code.clone(),
        (false, false) => format!("{code}: {message}"),
    };
    let about_token = message.to_ascii_lowercase().contains("token");
    match code.as_str() {
        "UNREGISTERED" | "SENDER_ID_MISMATCH" => Outcome::TokenInvalid { reason },
        "INVALID_ARGUMENT" if about_token => Outcome::TokenInvalid { reason },
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" => Outcome::Retry { reason, after },
        "THIRD_PARTY_AUTH_ERROR" | "UNAUTHENTICATED" | "PERMISSION_DENIED" => {
            Outcome::AuthFailed { reason }
        }
        _ if status == 429 || status >= 500 => Outcome::Retry { reason, after },
        _ if status == 401 || status == 403 => Outcome::AuthFailed { reason },
        _ => Outcome::Rejected { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: &str, code: Option<&str>, message: &str) -> Value {
        let details = code.map_or(json!([]), |c| {
            json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}])
        });
        json!({"error": {"code": 400, "message": message, "status": status, "details": details}})
    }

    #[test]
    fn classification_follows_googles_table() {
        assert_eq!(
            classify(200, &json!({"name": "projects/p/messages/1"}), None),
            Outcome::Accepted {
                provider_id: Some("projects/p/messages/1".into())
            }
        );
        assert!(matches!(
            classify(404, &error("NOT_FOUND", Some("UNREGISTERED"), "gone"), None),
            Outcome::TokenInvalid { .. }
        ));
        assert!(matches!(
            classify(
                400,
                &error(
                    "INVALID_ARGUMENT",
                    Some("INVALID_ARGUMENT"),
                    "The registration token is not a valid FCM registration token"
                ),
                None
            ),
            Outcome::TokenInvalid { .. }
        ));
        assert!(matches!(
            classify(
                400,
                &error(
                    "INVALID_ARGUMENT",
                    Some("INVALID_ARGUMENT"),
                    "Invalid value at 'message.data[0].value'"
                ),
                None
            ),
            Outcome::Rejected { .. }
        ));
        assert_eq!(
            classify(
                429,
                &error("RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), ""),
                Some(Duration::from_secs(60))
            ),
            Outcome::Retry {
                reason: "QUOTA_EXCEEDED".into(),
                after: Some(Duration::from_secs(60))
            }
        );
        assert!(matches!(
            classify(503, &error("UNAVAILABLE", Some("UNAVAILABLE"), ""), None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(500, &Value::Null, None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(
                403,
                &error("PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"), ""),
                None
            ),
            Outcome::TokenInvalid { .. }
        ));
        assert!(matches!(
            classify(
                401,
                &error("UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR"), ""),
                None
            ),
            Outcome::AuthFailed { .. }
        ));
        assert_eq!(
            classify(
                400,
                &error("FAILED_PRECONDITION", Some("NEW_CODE"), ""),
                None
            ),
            Outcome::Rejected {
                reason: "NEW_CODE".into()
            }
        );
    }
}
