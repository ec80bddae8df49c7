//! One app's providers as configured: clients, pacing, and the choice of
//! provider for a device.

use std::num::NonZeroU32;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::apns::{ApnsClient, ApnsCredentials, ApnsNotification, ApnsPriority, ApnsSettings};
use super::fcm::{FcmClient, FcmSettings, ServiceAccount};
use super::{apns_id_for, config_error, HttpSettings, Outcome, Pacer, ProviderError};
use crate::clock::Clock;
use crate::config::{AppConfig, ConnectionConfig};
use crate::domain::campaign::{Message, Platform, Priority};
use crate::domain::ids::DeliveryId;
use crate::domain::message::payload::{self, Envelope, FcmTarget};
use crate::domain::receipt::ReceiptKey;

/// One message to one device.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub delivery_id: DeliveryId,
    pub platform: Platform,
    pub token: &'a str,
    pub locale: Option<&'a str>,
    pub message: &'a Message,
    /// The campaign's id for campaign traffic: a copy re-sent after a crash
    /// replaces, on the device, one still queued.
    pub collapse_key: Option<&'a str>,
    /// When the provider should stop trying (from the message's TTL).
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Paced<C> {
    client: C,
    pacer: Option<Pacer>,
}

impl<C> Paced<C> {
    /// Takes a send slot of the pacer, counting the sends that had to wait.
    async fn ready(&self, provider: &'static str) {
        if let Some(p) = &self.pacer {
            if !p.try_take() {
                crate::metrics::rate_limit_wait(provider);
                p.ready().await;
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct AppProviders {
    apns: Option<Paced<ApnsClient>>,
    fcm: Option<Paced<FcmClient>>,
    /// The app's id and receipt key, which sign each push's receipt token; set
    /// once from the store ([`AppProviders::set_receipt_key`]).
    receipt: std::sync::OnceLock<(String, ReceiptKey)>,
}

fn pacer(c: &ConnectionConfig) -> Option<Pacer> {
    c.rate_per_second.and_then(NonZeroU32::new).map(Pacer::new)
}

fn http(c: &ConnectionConfig, ca_file: Option<&std::path::Path>) -> HttpSettings {
    HttpSettings {
        ca_file: ca_file.map(ToOwned::to_owned),
        timeout: c.timeout,
        connections: c.connections,
    }
}

fn read(key: String, path: &std::path::Path) -> Result<String, ProviderError> {
    std::fs::read_to_string(path).map_err(|e| config_error(key, format!("{}: {e}", path.display())))
}

impl AppProviders {
    /// Builds the clients an app's config names (none is an error only when used).
    pub fn from_config(
        app_id: &str,
        app: &AppConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ProviderError> {
        let key = |k: &str| format!("apps.{app_id}.{k}");
        let apns = match &app.apns {
            None => None,
            Some(a) => {
                let credentials = match (&a.key_file, &a.cert_file) {
                    (Some(k), _) => ApnsCredentials::Token {
                        key_pem: read(key("apns.key_file"), k)?,
                        key_id: a.key_id.clone().unwrap_or_default(),
                        team_id: a.team_id.clone().unwrap_or_default(),
                    },
                    (None, Some(c)) => {
                        let mut pem = read(key("apns.cert_file"), c)?.into_bytes();
                        if let Some(k) = &a.cert_key_file {
                            pem.push(b'\n');
                            pem.extend(read(key("apns.cert_key_file"), k)?.into_bytes());
                        }
                        ApnsCredentials::Certificate { pem }
                    }
                    (None, None) => {
                        return Err(config_error(key("apns"), "needs key_file or cert_file"))
                    }
                };
                let client = ApnsClient::new(
                    ApnsSettings {
                        base_url: a.base_url.clone(),
                        bundle_id: a.bundle_id.clone(),
                        credentials,
                        http: http(&a.connection, a.ca_file.as_deref()),
                        concurrency: a.connection.concurrency,
                    },
                    clock.clone(),
                )?;
                Some(Paced {
                    client,
                    pacer: pacer(&a.connection),
                })
            }
        };
        let fcm = match &app.fcm {
            None => None,
            Some(f) => {
                let account = ServiceAccount::from_json(&read(
                    key("fcm.service_account_file"),
                    &f.service_account_file,
                )?)?;
                let client = FcmClient::new(
                    FcmSettings {
                        base_url: f.base_url.clone(),
                        account,
                        http: http(&f.connection, f.ca_file.as_deref()),
                        concurrency: f.connection.concurrency,
                    },
                    clock,
                )?;
                Some(Paced {
                    client,
                    pacer: pacer(&f.connection),
                })
            }
        };
        Ok(Self {
            apns,
            fcm,
            receipt: std::sync::OnceLock::new(),
        })
    }

    /// Whether pushes carry receipt tokens yet.
    pub fn has_receipt_key(&self) -> bool {
        self.receipt.get().is_some()
    }

    /// The key the app's receipt tokens are signed with (the first one set stays).
    pub fn set_receipt_key(&self, app: &str, key: ReceiptKey) {
        let _ = self.receipt.set((app.to_owned(), key));
    }

    /// Whether any provider can reach a device of this platform.
    pub fn serves(&self, platform: Platform) -> bool {
        match platform {
            Platform::Ios => self.apns.is_some() || self.fcm.is_some(),
            Platform::Android => self.fcm.is_some(),
        }
    }

    /// Which provider a device of this platform is sent through (a metrics label).
    pub fn provider_for(&self, platform: Platform) -> &'static str {
        match (platform, &self.apns) {
            (Platform::Ios, Some(_)) => "apns",
            _ => "fcm",
        }
    }

    /// Sends through APNs (iOS, when configured) or FCM (Android, and iOS without APNs).
    pub async fn send(&self, push: &Push<'_>) -> Outcome {
        // The payload carries the delivery's id as the app reports it back
        // (`POST /v1/receipts {"messageId": …}`); `apns-id` is the UUID made from it.
        let message_id = push.delivery_id.to_string();
        let apns_id = apns_id_for(push.delivery_id);
        let receipt = self
            .receipt
            .get()
            .map(|(app, key)| key.sign(app, push.delivery_id.get()));
        let env = Envelope {
            message_id: &message_id,
            receipt: receipt.as_deref(),
        };
        match (push.platform, &self.apns, &self.fcm) {
            (Platform::Ios, Some(apns), _) => {
                let body = match payload::apns_payload_bytes(push.message, push.locale, env) {
                    Ok(b) => b,
                    Err(e) => {
                        return Outcome::Rejected {
                            reason: format!("payload: {e}"),
                        }
                    }
                };
                apns.ready("apns").await;
                let started = std::time::Instant::now();
                let outcome = apns
                    .client
                    .send(&ApnsNotification {
                        device_token: push.token,
                        apns_id: &apns_id,
                        payload: &body,
                        priority: match push.message.priority {
                            Priority::High => ApnsPriority::Immediate,
                            Priority::Normal => ApnsPriority::Normal,
                        },
                        expiration: push.expires_at,
                        collapse_id: push.collapse_key,
                    })
                    .await;
                crate::metrics::provider_request("apns", outcome.label(), started.elapsed());
                outcome
            }
            (platform, _, Some(fcm)) => {
                let target = FcmTarget {
                    token: push.token,
                    locale: push.locale,
                    ios: platform == Platform::Ios,
                    collapse_key: push.collapse_key,
                };
                let body = match payload::fcm_message_bytes(push.message, target, env) {
                    Ok(b) => b,
                    Err(e) => {
                        return Outcome::Rejected {
                            reason: format!("payload: {e}"),
                        }
                    }
                };
                fcm.ready("fcm").await;
                let started = std::time::Instant::now();
                let outcome = fcm.client.send_json(body.into()).await;
                crate::metrics::provider_request("fcm", outcome.label(), started.elapsed());
                outcome
            }
            (platform, _, None) => Outcome::Rejected {
                reason: format!("no provider configured for {} devices", platform.as_str()),
            },
        }
    }
}

/// What proving one provider's credentials found (`meridian check-providers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialCheck {
    pub provider: &'static str,
    pub works: bool,
    /// One line: what was proven, or the provider's reason.
    pub detail: String,
}

/// A token no device has: 64 hex digits, which Apple answers `BadDeviceToken`
/// once the key, team and topic have passed (`InvalidProviderToken` before).
const MADE_UP_APNS_TOKEN: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Refused by FCM as a registration token once the access token has passed.
const MADE_UP_FCM_TOKEN: &str = "meridian-check-providers-made-up-token";

impl AppProviders {
    /// Proves each configured provider's credentials with one request: APNs a
    /// notification to a made-up token, FCM an access token and then a
    /// `validate_only` message (Google checks it, nothing is delivered).
    pub async fn check(&self) -> Vec<CredentialCheck> {
        let mut found = Vec::new();
        if let Some(apns) = &self.apns {
            let apns_id = apns_id_for(DeliveryId::new(1));
            let outcome = apns
                .client
                .send(&ApnsNotification {
                    device_token: MADE_UP_APNS_TOKEN,
                    apns_id: &apns_id,
                    payload: br#"{"aps":{"alert":"Meridian credential check"}}"#,
                    priority: ApnsPriority::Normal,
                    expiration: None,
                    collapse_id: None,
                })
                .await;
            found.push(verdict("apns", outcome));
        }
        if let Some(fcm) = &self.fcm {
            let body = serde_json::json!({
                "validate_only": true,
                "message": {"token": MADE_UP_FCM_TOKEN, "data": {"check": "credentials"}},
            });
            found.push(verdict("fcm", fcm.client.send(&body).await));
        }
        found
    }
}

/// Whether an answer to a made-up token proves the credentials: refusing the
/// token (or, from a simulator, taking it) means they passed.
fn verdict(provider: &'static str, outcome: Outcome) -> CredentialCheck {
    let (works, detail) = match outcome {
        Outcome::TokenInvalid { reason } => (
            true,
            format!("credentials accepted (the made-up token was refused as expected: {reason})"),
        ),
        // FCM checks the message before the token under validate_only.
        Outcome::Rejected { reason }
            if provider == "fcm" && reason.starts_with("INVALID_ARGUMENT") =>
        {
            (
                true,
                format!(
                    "credentials accepted (the made-up message was refused as expected: {reason})"
                ),
            )
        }
        Outcome::Accepted { .. } => (
            true,
            "credentials accepted (the made-up token was taken: a test server?)".to_owned(),
        ),
        Outcome::AuthFailed { reason } => (false, format!("credentials refused: {reason}")),
        // Unreachable, or (FCM) the access token refused: the reason says which.
        Outcome::Retry { reason, .. } => (false, reason),
        Outcome::Rejected { reason } => (false, format!("refused: {reason}")),
    };
    CredentialCheck {
        provider,
        works,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each provider's answer to a made-up token, as `classify` reads it.
    #[test]
    fn a_refused_made_up_token_proves_the_credentials() {
        let apns = |status, reason| {
            verdict(
                "apns",
                super::super::apns::classify(status, Some(reason), None),
            )
        };
        assert!(apns(400, "BadDeviceToken").works);
        assert!(!apns(403, "InvalidProviderToken").works);
        assert!(
            !apns(400, "TopicDisallowed").works,
            "a wrong topic is not proven"
        );
        assert!(!apns(403, "InvalidProviderToken").detail.is_empty());

        let fcm = |status, body: serde_json::Value| {
            verdict("fcm", super::super::fcm::classify(status, &body, None))
        };
        // Google's answer to a validate_only message for a made-up token.
        let made_up = serde_json::json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "The registration token is not a valid FCM registration token",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                         "errorCode": "INVALID_ARGUMENT"}]}});
        assert!(fcm(400, made_up).works);
        let denied = serde_json::json!({"error": {"code": 403, "status": "PERMISSION_DENIED",
            "message": "Permission 'cloudmessaging.messages.create' denied"}});
        let denied = fcm(403, denied);
        assert!(!denied.works);
        assert!(
            denied.detail.contains("PERMISSION_DENIED"),
            "{}",
            denied.detail
        );
        assert!(
            fcm(
                200,
                serde_json::json!({"name": "projects/p/messages/fake_message_id"})
            )
            .works
        );
    }
}
