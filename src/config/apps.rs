//! An app's settings: its providers (APNs, FCM, their connections), topics, hooks, and the checks each gets.

use super::{invalid, ConfigError};
use crate::domain::zone::parse_zone;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// Zone for recipients with no (or an unknown) zone.
    #[serde(default = "default_zone")]
    pub default_timezone: String,
    /// Traffic types users subscribe to, e.g. `marketing`, `transactional`.
    #[serde(default)]
    pub topics: BTreeMap<String, TopicConfig>,
    #[serde(default)]
    pub apns: Option<ApnsConfig>,
    #[serde(default)]
    pub fcm: Option<FcmConfig>,
    /// Where every status change of the app's messages is POSTed, in signed batches.
    #[serde(default)]
    pub webhook: Option<HookConfig>,
    /// The channel a transactional push falls back to (e.g. the partner's SMS
    /// gateway) when push cannot reach the user; a topic's own wins.
    #[serde(default)]
    pub fallback: Option<HookConfig>,
    /// How a client key proves which user a device belongs to.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Active devices a user may have; registering one more deactivates the
    /// least recently registered (`invalid`, reason `device_limit`).
    #[serde(default = "default_max_devices")]
    pub max_devices_per_user: u32,
}

fn default_max_devices() -> u32 {
    10
}

/// Whether a client key needs an identity proof to tie a device (or read and
/// set subscriptions) to a user id, and what checks the proof: the
/// HMAC-SHA256 of the user id, or a JWT (`sub` the user id, `exp` required)
/// signed HS256 with `secret_file` or ES256 with `es256_public_key_file`.
/// Server keys need no proof.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub mode: IdentityMode,
    /// The app's identity secret, shared with the partner's backend only.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// A P-256 public key (PEM, SubjectPublicKeyInfo) for ES256 JWTs.
    #[serde(default)]
    pub es256_public_key_file: Option<PathBuf>,
}

/// `required` (the default): without a valid proof a client key registers
/// anonymous installs only. `optional`: a client may name a user without
/// proof (the app trusts its users), and a proof given is still checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    #[default]
    Required,
    Optional,
}

impl AppConfig {
    /// The fallback channel of a push with this topic (or none).
    pub fn fallback_for(&self, topic: Option<&str>) -> Option<&HookConfig> {
        topic
            .and_then(|t| self.topics.get(t))
            .and_then(|t| t.fallback.as_ref())
            .or(self.fallback.as_ref())
    }
}

/// An outgoing HTTP hook: a status webhook or a fallback channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub url: String,
    /// File holding the HMAC-SHA256 key the `X-Meridian-Signature` header is made with.
    pub secret_file: PathBuf,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_hook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts before a batch (webhook) or a fallback is given up.
    #[serde(default = "default_hook_attempts")]
    pub max_attempts: u32,
    /// Status changes per POST (webhooks).
    #[serde(default = "default_hook_batch")]
    pub batch_size: u32,
    /// Fallbacks only: also fall back when a sent push has no `delivered` (or later)
    /// receipt this long after it was sent.
    #[serde(default, with = "humantime_serde")]
    pub no_receipt_after: Option<Duration>,
}

pub(super) fn default_hook_timeout() -> Duration {
    Duration::from_secs(10)
}

pub(super) fn default_hook_attempts() -> u32 {
    10
}

pub(super) fn default_hook_batch() -> u32 {
    100
}

impl HookConfig {
    pub(super) fn check(&self, key: &str, fallback: bool) -> Result<(), ConfigError> {
        check_base_url(&format!("{key}.url"), &self.url)?;
        check_file(&format!("{key}.secret_file"), &self.secret_file)?;
        if let Some(ca) = &self.ca_file {
            check_file(&format!("{key}.ca_file"), ca)?;
        }
        if self.max_attempts == 0 {
            return Err(invalid(format!("{key}.max_attempts"), "must be at least 1"));
        }
        if !(1..=1000).contains(&self.batch_size) {
            return Err(invalid(
                format!("{key}.batch_size"),
                "must be between 1 and 1000",
            ));
        }
        if !fallback && self.no_receipt_after.is_some() {
            return Err(invalid(
                format!("{key}.no_receipt_after"),
                "only a fallback channel waits for receipts",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Whether a user with no explicit choice counts as subscribed
    /// (true for transactional traffic, false for marketing, which needs an opt-in).
    #[serde(default)]
    pub default_subscribed: bool,
    /// At most `max` pushes of this topic per user in any rolling `per`
    /// (e.g. 2 marketing pushes per 24 h); capped recipients are suppressed, and counted.
    #[serde(default)]
    pub cap: Option<FrequencyCap>,
    /// This topic's own fallback channel (instead of the app's).
    #[serde(default)]
    pub fallback: Option<HookConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub max: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The app's bundle id, sent as `apns-topic`.
    pub bundle_id: String,
    /// Token auth: the `.p8` key, its key id and the team id.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    /// Certificate auth: PEM certificate and key.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_key_file: Option<PathBuf>,
    #[serde(default = "default_apns_url")]
    pub base_url: String,
    /// Extra CA certificate (PEM) to trust, e.g. a proxy's or the simulator's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub connection: ConnectionConfig,
}

/// How hard Meridian pushes one provider for one app.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    #[serde(default = "default_provider_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// HTTP/2 connections kept open; requests are multiplexed over them.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Requests in flight at most.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Messages per second at most (no limit when unset); the provider's own 429s are honoured regardless.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            timeout: default_provider_timeout(),
            connections: default_connections(),
            concurrency: default_concurrency(),
            rate_per_second: None,
        }
    }
}

pub(super) fn default_provider_timeout() -> Duration {
    Duration::from_secs(10)
}

pub(super) fn default_connections() -> usize {
    2
}

pub(super) fn default_concurrency() -> usize {
    1000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// Google service-account JSON (project id, client email, private key, token_uri).
    pub service_account_file: PathBuf,
    #[serde(default = "default_fcm_url")]
    pub base_url: String,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub connection: ConnectionConfig,
}

pub(super) fn default_zone() -> String {
    "UTC".to_owned()
}

pub(super) fn default_apns_url() -> String {
    "https://api.push.apple.com".to_owned()
}

pub(super) fn default_fcm_url() -> String {
    "https://fcm.googleapis.com".to_owned()
}

impl AppConfig {
    pub fn timezone(&self) -> Tz {
        parse_zone(&self.default_timezone).unwrap_or(chrono_tz::UTC)
    }

    pub fn topic_names(&self) -> BTreeSet<&str> {
        self.topics.keys().map(String::as_str).collect()
    }
}

impl ConnectionConfig {
    pub(super) fn check(&self, key: &str) -> Result<(), ConfigError> {
        if self.connections == 0 || self.connections > 64 {
            return Err(invalid(format!("{key}.connections"), "must be 1-64"));
        }
        if self.concurrency == 0 {
            return Err(invalid(format!("{key}.concurrency"), "must be at least 1"));
        }
        if self.rate_per_second == Some(0) {
            return Err(invalid(
                format!("{key}.rate_per_second"),
                "must be at least 1 (or unset for no limit)",
            ));
        }
        if self.timeout.is_zero() {
            return Err(invalid(format!("{key}.timeout"), "must be more than 0"));
        }
        Ok(())
    }
}

pub(super) fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub(super) fn check_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(invalid(key, format!("{} is not a file", path.display()))),
        Err(e) => Err(invalid(key, format!("{}: {e}", path.display()))),
    }
}

pub(super) fn check_base_url(key: &str, s: &str) -> Result<(), ConfigError> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(invalid(key, format!("{s:?} is not an http(s) URL"))),
    }
}
