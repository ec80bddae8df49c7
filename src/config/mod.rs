//! Typed settings: `config/meridian.toml` (or `--config PATH`), every key
//! overridable as `MERIDIAN_SECTION__KEY` in the environment.

mod apps;
mod engine;

use crate::domain::zone::parse_zone;
use apps::{check_base_url, check_file, valid_ident};
pub use apps::{
    ApnsConfig, AppConfig, ConnectionConfig, FcmConfig, FrequencyCap, HookConfig, IdentityConfig,
    IdentityMode, TopicConfig,
};
pub use engine::{EngineConfig, RetentionConfig};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_PATH: &str = "config/meridian.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {path}: no such file")]
    Missing { path: String },
    #[error("{0}")]
    Load(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub campaigns: CampaignsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Tenants, by id.
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created on first start) or `postgres://…`.
    #[serde(default = "default_db_url")]
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Apply migrations when `serve` starts.
    #[serde(default = "yes")]
    pub migrate_on_start: bool,
    /// How long SQLite waits for a lock before giving up.
    #[serde(default = "default_busy_timeout", with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// Postgres only: how long a call waits for a free connection of the pool
    /// before it fails (a database that is down, or a pool too small for the load).
    #[serde(default = "default_acquire_timeout", with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Postgres only: the server cancels any statement running longer
    /// (`statement_timeout`); `0s`, the default, is no limit, as in Postgres.
    /// Migrations run without it: building an index on a large table may take long.
    #[serde(default, with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: default_db_url(),
            max_connections: default_max_connections(),
            migrate_on_start: true,
            busy_timeout: default_busy_timeout(),
            acquire_timeout: default_acquire_timeout(),
            statement_timeout: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Limits of `POST /v1/push`, per API key.
    #[serde(default)]
    pub push: PushLimits,
    /// The web console under `/console`.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Limits of what mobile apps call (client keys, keyless receipts).
    #[serde(default)]
    pub client: ClientLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            push: PushLimits::default(),
            console: ConsoleConfig::default(),
            client: ClientLimits::default(),
        }
    }
}

/// Requests per minute that mobile apps may make: per client key (every
/// install of an app shares its key, so these are the app's whole audience)
/// and per source address (one device, or one NAT). Server keys are not
/// limited here. 0 turns a limit off (per address: when every request comes
/// through one proxy, which this server sees as one address). Past a limit
/// the answer is 429 with `Retry-After`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientLimits {
    /// `POST /v1/devices`, `DELETE /v1/devices/{token}` and subscriptions.
    #[serde(default = "default_registrations_per_key")]
    pub registrations_per_key: u32,
    #[serde(default = "default_registrations_per_address")]
    pub registrations_per_address: u32,
    /// `POST /v1/receipts` with a client key or none.
    #[serde(default = "default_receipts_per_key")]
    pub receipts_per_key: u32,
    #[serde(default = "default_receipts_per_address")]
    pub receipts_per_address: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            registrations_per_key: default_registrations_per_key(),
            registrations_per_address: default_registrations_per_address(),
            receipts_per_key: default_receipts_per_key(),
            receipts_per_address: default_receipts_per_address(),
        }
    }
}

fn default_registrations_per_key() -> u32 {
    60_000
}

fn default_registrations_per_address() -> u32 {
    60
}

fn default_receipts_per_key() -> u32 {
    600_000
}

fn default_receipts_per_address() -> u32 {
    600
}

/// The console's sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A session unused this long ends.
    #[serde(default = "default_console_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however active.
    #[serde(default = "default_console_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Marks the session cookie `Secure`: set it when the console is reached over
    /// HTTPS (through a TLS proxy), so the browser never sends it in clear.
    #[serde(default)]
    pub secure_cookie: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            idle_timeout: default_console_idle(),
            max_age: default_console_max_age(),
            secure_cookie: false,
        }
    }
}

fn default_console_idle() -> Duration {
    Duration::from_secs(2 * 3600)
}

fn default_console_max_age() -> Duration {
    Duration::from_secs(12 * 3600)
}

/// The partner contract's limits on transactional pushes, per API key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushLimits {
    /// Ids (user ids and install ids together) in one request.
    #[serde(default = "default_push_max_ids")]
    pub max_ids: usize,
    /// Requests per minute; the next one is answered 429 with Retry-After.
    #[serde(default = "default_push_per_minute")]
    pub requests_per_minute: u32,
}

impl Default for PushLimits {
    fn default() -> Self {
        Self {
            max_ids: default_push_max_ids(),
            requests_per_minute: default_push_per_minute(),
        }
    }
}

fn default_push_max_ids() -> usize {
    1000
}

fn default_push_per_minute() -> u32 {
    10
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignsConfig {
    /// Campaign definitions applied when `serve` starts.
    #[serde(default = "default_campaigns_dir")]
    pub dir: PathBuf,
}

impl Default for CampaignsConfig {
    fn default() -> Self {
        Self {
            dir: default_campaigns_dir(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `meridian=debug,sqlx=warn`; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise (e.g. under systemd).
    #[default]
    Auto,
    Text,
    Json,
}

fn default_db_url() -> String {
    "sqlite://data/meridian.db".to_owned()
}

fn default_max_connections() -> u32 {
    8
}

fn yes() -> bool {
    true
}

fn default_busy_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_acquire_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_campaigns_dir() -> PathBuf {
    PathBuf::from("campaigns")
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl DatabaseConfig {
    /// The file of a `sqlite:` URL, without its `?options` (`None` for another
    /// scheme; empty when the URL names none).
    pub fn sqlite_path(&self) -> Option<&str> {
        let rest = self.url.strip_prefix("sqlite:")?.trim_start_matches("//");
        Some(rest.split('?').next().unwrap_or(rest))
    }

    pub fn kind(&self) -> Result<DatabaseKind, ConfigError> {
        if let Some(path) = self.sqlite_path() {
            if path.is_empty() {
                return Err(invalid(
                    "database.url",
                    "sqlite URL has no path (e.g. sqlite://data/meridian.db)",
                ));
            }
            Ok(DatabaseKind::Sqlite)
        } else if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            match url::Url::parse(&self.url) {
                // sqlx 0.8.6 with rustls 0.23.24+ checks the host name under
                // verify-ca too (launchbadge/sqlx#3793, fixed after 0.8.6): refused
                // here rather than failing at connect as if the name were wrong.
                Ok(u) if u
                    .query_pairs()
                    .any(|(k, v)| matches!(&*k, "sslmode" | "ssl-mode") && v == "verify-ca") =>
                {
                    Err(invalid(
                        "database.url",
                        "sslmode=verify-ca is not supported (the Postgres driver would check the \
                         host name as well): use verify-full with the name the server's certificate \
                         was issued for, or require",
                    ))
                }
                // A Unix socket's directory is given as `?host=/path`.
                Ok(u) if u.host().is_some() || u.query_pairs().any(|(k, _)| k == "host") => {
                    Ok(DatabaseKind::Postgres)
                }
                _ => Err(invalid("database.url", "is not a valid postgres:// URL")),
            }
        } else {
            Err(invalid(
                "database.url",
                format!(
                    "unsupported scheme in {:?}: use sqlite://PATH or postgres://…",
                    redact_url(&self.url)
                ),
            ))
        }
    }
}

/// The URL without its secrets, for messages and logs: the password of
/// `user:password@`, and the value of every query parameter that names one
/// (`?password=…`, `sslpassword=…`, `…secret…`, `…token…`). A URL that does
/// not parse is shown as its scheme alone: where its secrets are is unknown.
pub fn redact_url(s: &str) -> String {
    let Ok(mut u) = url::Url::parse(s) else {
        return match s.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://*** (not a valid URL)"),
            None => "*** (not a valid URL)".to_owned(),
        };
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let secret = |name: &str| {
        let name = name.to_ascii_lowercase();
        ["password", "secret", "token"]
            .iter()
            .any(|s| name.contains(s))
    };
    if u.query_pairs().any(|(name, _)| secret(&name)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

impl Config {
    /// Loads the file (the default path only if it exists) and the environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        match path {
            Some(p) if !p.exists() => {
                return Err(ConfigError::Missing {
                    path: p.display().to_string(),
                })
            }
            Some(p) => figment = figment.merge(Toml::file_exact(p)),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_PATH))
            }
            None => {}
        }
        // Only `SECTION__KEY` names are settings; MERIDIAN_TEST_PG_URL and the like are not.
        let env = Env::prefixed("MERIDIAN_")
            .filter(|k| k.as_str().contains("__"))
            .split("__");
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Load(figment_message(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: URLs, zones, names, and that credential files exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database.kind()?;
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        self.engine.validate()?;
        self.retention.validate()?;
        if self.server.push.max_ids == 0 {
            return Err(invalid("server.push.max_ids", "must be at least 1"));
        }
        if self.server.push.requests_per_minute == 0 {
            return Err(invalid(
                "server.push.requests_per_minute",
                "must be at least 1",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("{:?}: {e}", self.log.level)));
        }
        for (id, app) in &self.apps {
            let key = |k: &str| format!("apps.{id}.{k}");
            if !valid_ident(id) {
                return Err(invalid(
                    format!("apps.{id}"),
                    "app ids are 1-64 lowercase letters, digits, '-' or '_'",
                ));
            }
            if app.max_devices_per_user == 0 {
                return Err(invalid(key("max_devices_per_user"), "must be at least 1"));
            }
            if let Some(f) = &app.identity.secret_file {
                check_file(&key("identity.secret_file"), f)?;
            }
            if let Some(f) = &app.identity.es256_public_key_file {
                check_file(&key("identity.es256_public_key_file"), f)?;
            }
            if parse_zone(&app.default_timezone).is_none() {
                return Err(invalid(
                    key("default_timezone"),
                    format!("unknown IANA time zone {:?}", app.default_timezone),
                ));
            }
            for (topic, t) in &app.topics {
                if !valid_ident(topic) {
                    return Err(invalid(
                        key(&format!("topics.{topic}")),
                        "topic names are 1-64 lowercase letters, digits, '-' or '_'",
                    ));
                }
                if let Some(cap) = t.cap {
                    if cap.max == 0 {
                        return Err(invalid(
                            key(&format!("topics.{topic}.cap.max")),
                            "must be at least 1 (leave the cap out for no cap)",
                        ));
                    }
                    if cap.per < Duration::from_secs(60)
                        || cap.per > Duration::from_secs(90 * 86_400)
                    {
                        return Err(invalid(
                            key(&format!("topics.{topic}.cap.per")),
                            "must be between 1 minute and 90 days",
                        ));
                    }
                }
            }
            for (topic, t) in &app.topics {
                if let Some(f) = &t.fallback {
                    f.check(&key(&format!("topics.{topic}.fallback")), true)?;
                }
            }
            if let Some(w) = &app.webhook {
                w.check(&key("webhook"), false)?;
            }
            if let Some(f) = &app.fallback {
                f.check(&key("fallback"), true)?;
            }
            if let Some(apns) = &app.apns {
                check_base_url(&key("apns.base_url"), &apns.base_url)?;
                if apns.bundle_id.trim().is_empty() {
                    return Err(invalid(key("apns.bundle_id"), "must not be empty"));
                }
                match (&apns.key_file, &apns.cert_file) {
                    (Some(k), None) => {
                        check_file(&key("apns.key_file"), k)?;
                        if apns.key_id.as_deref().is_none_or(str::is_empty) {
                            return Err(invalid(key("apns.key_id"), "is required with key_file"));
                        }
                        if apns.team_id.as_deref().is_none_or(str::is_empty) {
                            return Err(invalid(key("apns.team_id"), "is required with key_file"));
                        }
                    }
                    (None, Some(c)) => {
                        check_file(&key("apns.cert_file"), c)?;
                        match &apns.cert_key_file {
                            Some(k) => check_file(&key("apns.cert_key_file"), k)?,
                            None => {
                                return Err(invalid(
                                    key("apns.cert_key_file"),
                                    "is required with cert_file",
                                ))
                            }
                        }
                    }
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            key("apns"),
                            "set key_file (token auth) or cert_file (certificate auth), not both",
                        ))
                    }
                    (None, None) => {
                        return Err(invalid(
                            key("apns"),
                            "needs key_file (token auth) or cert_file (certificate auth)",
                        ))
                    }
                }
                if let Some(ca) = &apns.ca_file {
                    check_file(&key("apns.ca_file"), ca)?;
                }
                apns.connection.check(&key("apns.connection"))?;
            }
            if let Some(fcm) = &app.fcm {
                check_base_url(&key("fcm.base_url"), &fcm.base_url)?;
                check_file(&key("fcm.service_account_file"), &fcm.service_account_file)?;
                if let Some(ca) = &fcm.ca_file {
                    check_file(&key("fcm.ca_file"), ca)?;
                }
                fcm.connection.check(&key("fcm.connection"))?;
            }
        }
        Ok(())
    }

    pub fn app(&self, id: &str) -> Option<&AppConfig> {
        self.apps.get(id)
    }
}

/// One line naming the key, from figment's error (which may hold several).
fn figment_message(e: &figment::Error) -> String {
    let mut e = e.clone();
    let key = e.path.join(".");
    e.path.clear();
    // The value is quoted back; a URL put under the wrong key keeps its password out.
    if let figment::error::Kind::InvalidType(figment::error::Actual::Str(v), _)
    | figment::error::Kind::InvalidValue(figment::error::Actual::Str(v), _) = &mut e.kind
    {
        *v = redact_url(v);
    }
    let mut msg = e.kind.to_string();
    if let Some(meta) = e.metadata.as_ref() {
        if let Some(src) = &meta.source {
            msg = format!("{msg} (in {src})");
        }
    }
    if key.is_empty() {
        format!("config: {msg}")
    } else {
        format!("{key}: {msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let c: Config = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Load(figment_message(&e)))?;
        c.validate()?;
        Ok(c)
    }

    /// Every setting Meridian reads is in `config/example.toml`, set or
    /// commented out: a field added to the configuration without it fails here.
    #[test]
    fn the_example_lists_every_setting() {
        let text = include_str!("../../config/example.toml");
        // Commented-out settings (`# key = "value"`) count; uncommented, they parse.
        let setting =
            regex::Regex::new(r#"^#\s*([a-z_0-9]+\s*=\s*(?:"|\d|true|false|\[|\{).*)$"#).unwrap();
        let all: String = text
            .lines()
            .map(|l| match setting.captures(l) {
                Some(c) => format!("{}\n", &c[1]),
                None => format!("{l}\n"),
            })
            .collect();
        let example: toml::Value = toml::from_str(&all).unwrap();
        let config: Config = Figment::from(Toml::string(&all)).extract().unwrap();
        let read = toml::Value::try_from(&config).unwrap();
        let mut missing = Vec::new();
        settings_missing(&read, &example, "", &mut missing);
        // A fallback is a hook like the webhook, but posts one push at a time.
        missing.retain(|m| m != "apps.shop.topics.transactional.fallback.batch_size");
        assert!(
            missing.is_empty(),
            "settings absent from config/example.toml: {missing:?}"
        );
        // The check can fail: a setting taken out of the example is found.
        let without: toml::Value = toml::from_str(&all.replace("flush_every = ", "# ")).unwrap();
        let mut missing = Vec::new();
        settings_missing(&read, &without, "", &mut missing);
        assert!(
            missing.contains(&"engine.flush_every".to_owned()),
            "{missing:?}"
        );
    }

    /// The keys of `read` (every setting, as the configuration writes itself
    /// out) that `example` lacks, as dotted paths.
    fn settings_missing(
        read: &toml::Value,
        example: &toml::Value,
        at: &str,
        missing: &mut Vec<String>,
    ) {
        let toml::Value::Table(table) = read else {
            return;
        };
        for (key, value) in table {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match example.get(key) {
                None => missing.push(path),
                Some(e) => settings_missing(value, e, &path, missing),
            }
        }
    }

    #[test]
    fn defaults_are_embedded_sqlite() {
        let c = from_toml("").unwrap();
        assert_eq!(c.database.kind().unwrap(), DatabaseKind::Sqlite);
        assert_eq!(c.database.url, "sqlite://data/meridian.db");
    }

    #[test]
    fn retention_is_read_and_checked() {
        let c = from_toml("[retention]\ndeliveries = \"30d\"\nhistory = \"7d\"\nchunks = \"0s\"")
            .unwrap();
        assert_eq!(c.retention.deliveries, Duration::from_secs(30 * 24 * 3600));
        assert!(c.retention.chunks.is_zero());
        assert_eq!(c.retention.webhooks, Duration::from_secs(30 * 24 * 3600));
        for (text, key) in [
            ("idempotency_keys = \"1h\"", "retention.idempotency_keys: "),
            (
                "deliveries = \"7d\"\nhistory = \"30d\"",
                "retention.history: ",
            ),
            ("batch = 0", "retention.batch: "),
            ("every = \"10ms\"", "retention.every: "),
        ] {
            let err = from_toml(&format!("[retention]\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(key), "{text}: {err}");
        }
        // Keeping messages for ever with a shorter history is fine.
        from_toml("[retention]\ndeliveries = \"0s\"\nhistory = \"7d\"").unwrap();
    }

    #[test]
    fn bad_url_names_the_key() {
        let err = from_toml("[database]\nurl = \"mysql://x\"")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("database.url: "), "{err}");
    }

    #[test]
    fn unknown_key_names_the_key() {
        let err = from_toml("[database]\nurl = \"sqlite://x.db\"\npool = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("database") && err.contains("pool"), "{err}");
    }

    #[test]
    fn missing_credential_file_names_the_key() {
        let err = from_toml("[apps.shop.fcm]\nservice_account_file = \"/nonexistent/sa.json\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("apps.shop.fcm.service_account_file: /nonexistent/sa.json"),
            "{err}"
        );
    }

    #[test]
    fn frequency_caps_are_read_and_checked() {
        let c = from_toml("[apps.shop.topics]\nmarketing = { cap = { max = 2, per = \"24h\" } }")
            .unwrap();
        let cap = c.apps["shop"].topics["marketing"].cap;
        assert_eq!(
            cap,
            Some(FrequencyCap {
                max: 2,
                per: Duration::from_secs(86_400)
            })
        );
        for (cap, key) in [
            (
                "{ max = 0, per = \"24h\" }",
                "apps.shop.topics.marketing.cap.max: ",
            ),
            (
                "{ max = 2, per = \"1s\" }",
                "apps.shop.topics.marketing.cap.per: ",
            ),
        ] {
            let err = from_toml(&format!(
                "[apps.shop.topics]\nmarketing = {{ cap = {cap} }}"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn hooks_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "k").unwrap();
        let s = secret.display();
        let c = from_toml(&format!(
            "[apps.shop.webhook]\nurl = \"https://h.example/status\"\nsecret_file = \"{s}\"\n\
             [apps.shop.fallback]\nurl = \"https://sms.example/send\"\nsecret_file = \"{s}\"\nno_receipt_after = \"10m\"\n\
             [apps.shop.topics.otp.fallback]\nurl = \"https://otp.example/send\"\nsecret_file = \"{s}\"\n"
        ))
        .unwrap();
        let app = &c.apps["shop"];
        assert_eq!(app.webhook.as_ref().unwrap().batch_size, 100);
        assert_eq!(
            app.fallback_for(Some("otp")).unwrap().url,
            "https://otp.example/send"
        );
        assert_eq!(
            app.fallback_for(None).unwrap().url,
            "https://sms.example/send"
        );
        assert_eq!(
            app.fallback_for(Some("other")).unwrap().url,
            "https://sms.example/send"
        );
        let cases = [
            (format!("[apps.shop.webhook]\nurl = \"ftp://x\"\nsecret_file = \"{s}\""), "apps.shop.webhook.url"),
            ("[apps.shop.webhook]\nurl = \"https://x\"\nsecret_file = \"/nonexistent\"".to_owned(), "apps.shop.webhook.secret_file"),
            (format!("[apps.shop.webhook]\nurl = \"https://x\"\nsecret_file = \"{s}\"\nno_receipt_after = \"1m\""), "apps.shop.webhook.no_receipt_after"),
            (format!("[apps.shop.fallback]\nurl = \"https://x\"\nsecret_file = \"{s}\"\nmax_attempts = 0"), "apps.shop.fallback.max_attempts"),
        ];
        for (text, key) in cases {
            let err = from_toml(&text).unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn bad_default_zone_names_the_key() {
        let err = from_toml("[apps.shop]\ndefault_timezone = \"Europe/Nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("apps.shop.default_timezone: "), "{err}");
    }

    #[test]
    fn a_misplaced_url_is_quoted_without_its_password() {
        let e = from_toml("[database]\nmax_connections = \"postgres://u:secret@h/db\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("database.max_connections:"), "{e}");
        assert!(e.contains("u:***@h") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn password_is_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn secrets_in_the_query_are_redacted_too() {
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=hunter2&sslpassword=k3y"),
            "postgres://u@h/db?sslmode=require&password=***&sslpassword=***"
        );
        let odd = redact_url("postgres://u:hunter2@[::1/db?password=hunter2");
        assert!(!odd.contains("hunter2"), "{odd}");
    }
}
