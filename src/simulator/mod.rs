//! The provider simulator: a stand-in for APNs, FCM and Google's OAuth token
//! endpoint on one HTTP/2 server (TLS with a generated CA, plus a plaintext
//! h2c/HTTP/1 port). It checks auth and payloads the way Apple and Google do,
//! can be scripted to fail, and counts what it accepted per token so tests can
//! assert "each device got exactly one".
//!
//! Control endpoints: `GET /_sim/stats`, `PUT /_sim/behaviour`, `POST /_sim/reset`.

mod apns;
mod fcm;
mod oauth;
mod server;
mod tls;

use crate::clock::{Clock, SystemClock};
use crate::provider::jwt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use server::accept_loop;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A test-only RSA key for the simulated Google service account. Not a secret:
/// it is only ever trusted by this simulator.
pub const TEST_SERVICE_ACCOUNT_KEY: &str = include_str!("test-service-account-key.pem");

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("tls: {0}")]
    Tls(String),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("key: {0}")]
    Key(#[from] jwt::JwtError),
    #[error("{0}")]
    Config(String),
}

/// An APNs signing key the simulator trusts.
#[derive(Debug, Clone)]
pub struct ApnsKey {
    pub key_id: String,
    pub team_id: String,
    /// Uncompressed P-256 point (see `jwt::Es256Key::public_key`).
    pub public_key: Vec<u8>,
}

/// A Google service account the simulator trusts.
#[derive(Debug, Clone)]
pub struct FcmAccount {
    pub client_email: String,
    pub project_id: String,
    /// DER `RSAPublicKey` (see `jwt::Rs256Key::public_key`).
    pub public_key: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct SimulatorConfig {
    /// The simulator's own "now" (the real clock unless a test shares its clock).
    pub clock: Option<Arc<dyn Clock>>,
    pub tls_addr: Option<SocketAddr>,
    pub plain_addr: Option<SocketAddr>,
    pub apns_keys: Vec<ApnsKey>,
    /// Bundle ids accepted as `apns-topic`; empty accepts any.
    pub apns_topics: Vec<String>,
    pub fcm_accounts: Vec<FcmAccount>,
    pub behaviour: Behaviour,
}

/// What the simulator does besides answering correctly. Every field has a default,
/// so a partial JSON document updates only what it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Device tokens starting with this are unregistered (410 / UNREGISTERED).
    pub unregistered_prefix: Option<String>,
    /// The next N sends fail with `fail_status`.
    pub fail_next: u64,
    /// A fraction of sends (0..1) fail with `fail_status`.
    pub fail_rate: f64,
    /// 429 or 503 (APNs) / 429 QUOTA_EXCEEDED or 503 UNAVAILABLE (FCM).
    pub fail_status: u16,
    /// Sent as `Retry-After` with failures.
    pub retry_after_secs: Option<u64>,
    /// Added to every send.
    pub latency_ms: u64,
    /// APNs provider tokens issued before this unix time are answered `ExpiredProviderToken`.
    pub expire_tokens_issued_before: Option<i64>,
    /// Lifetime of issued OAuth access tokens.
    pub access_token_ttl_secs: i64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            unregistered_prefix: Some("dead".to_owned()),
            fail_next: 0,
            fail_rate: 0.0,
            fail_status: 503,
            retry_after_secs: None,
            latency_ms: 0,
            expire_tokens_issued_before: None,
            access_token_ttl_secs: 3600,
        }
    }
}

/// What the simulator saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Accepted sends per device token (APNs and FCM alike).
    pub accepted_per_token: HashMap<String, u64>,
    pub apns_accepted: u64,
    pub fcm_accepted: u64,
    /// Every answer by HTTP status, over both providers.
    pub responses_by_status: BTreeMap<u16, u64>,
    /// Error answers by reason / error code.
    pub errors_by_reason: BTreeMap<String, u64>,
    pub oauth_grants: u64,
    /// Distinct APNs provider tokens (by `iat`) that were accepted.
    pub apns_token_iats: Vec<i64>,
    /// Accepted sends per unix second (both providers), to check pacing.
    pub accepted_per_second: BTreeMap<i64, u64>,
    /// Most sends held in `latency_ms` at one time: the sender's concurrency
    /// (counted only while there is latency).
    #[serde(default)]
    pub most_sends_at_once: u64,
}

impl SimulatorConfig {
    /// Trusts the keys the configured apps use, so `serve` and `simulate` agree
    /// on one config file.
    pub fn trusting(config: &crate::config::Config) -> Result<Self, SimulatorError> {
        let mut out = Self::default();
        for (id, app) in &config.apps {
            if let Some(a) = &app.apns {
                out.apns_topics.push(a.bundle_id.clone());
                if let Some(path) = &a.key_file {
                    let pem = std::fs::read_to_string(path).map_err(|e| {
                        SimulatorError::Config(format!(
                            "apps.{id}.apns.key_file: {}: {e}",
                            path.display()
                        ))
                    })?;
                    out.apns_keys.push(ApnsKey {
                        key_id: a.key_id.clone().unwrap_or_default(),
                        team_id: a.team_id.clone().unwrap_or_default(),
                        public_key: jwt::Es256Key::from_pem(&pem)?.public_key(),
                    });
                }
            }
            if let Some(f) = &app.fcm {
                let path = &f.service_account_file;
                let text = std::fs::read_to_string(path).map_err(|e| {
                    SimulatorError::Config(format!(
                        "apps.{id}.fcm.service_account_file: {}: {e}",
                        path.display()
                    ))
                })?;
                let account = crate::provider::fcm::ServiceAccount::from_json(&text)
                    .map_err(|e| SimulatorError::Config(format!("apps.{id}.{e}")))?;
                out.fcm_accounts.push(FcmAccount {
                    client_email: account.client_email,
                    project_id: account.project_id,
                    public_key: jwt::Rs256Key::from_pem(&account.private_key)?.public_key(),
                });
            }
        }
        Ok(out)
    }
}

impl Stats {
    pub fn total_accepted(&self) -> u64 {
        self.apns_accepted + self.fcm_accepted
    }
}

#[derive(Debug)]
struct State {
    apns_keys: Vec<ApnsKey>,
    apns_topics: Vec<String>,
    fcm_accounts: Vec<FcmAccount>,
    behaviour: Mutex<Behaviour>,
    stats: Mutex<Stats>,
    /// Access tokens issued: value → (project, expiry unix time).
    access_tokens: Mutex<HashMap<String, (String, i64)>>,
    seen_iats: Mutex<HashSet<i64>>,
    /// Provider tokens whose signature was already checked, with their `iat`:
    /// like Apple, verify a token once, not on every request.
    verified_jwts: Mutex<HashMap<String, (String, i64)>>,
    counter: AtomicU64,
    /// Sends now held in `latency_ms`.
    sends_waiting: AtomicU64,
    /// Accepted sends as they arrived, while `record_sends` is on (off by
    /// default: benchmarks send millions).
    recording: std::sync::atomic::AtomicBool,
    sends: Mutex<Vec<RecordedSend>>,
    clock: Arc<dyn Clock>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running simulator. Dropping it stops the listeners.
pub struct Simulator {
    state: Arc<State>,
    pub tls_addr: Option<SocketAddr>,
    pub plain_addr: Option<SocketAddr>,
    /// The CA certificate (PEM) that signed the TLS certificate.
    pub ca_pem: String,
    identity: tls::Identity,
    stop: watch::Sender<bool>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Simulator {
    pub async fn start(config: SimulatorConfig) -> Result<Self, SimulatorError> {
        let identity = tls::generate()?;
        let state = Arc::new(State {
            apns_keys: config.apns_keys,
            apns_topics: config.apns_topics,
            fcm_accounts: config.fcm_accounts,
            behaviour: Mutex::new(config.behaviour),
            stats: Mutex::new(Stats::default()),
            access_tokens: Mutex::new(HashMap::new()),
            seen_iats: Mutex::new(HashSet::new()),
            verified_jwts: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            sends_waiting: AtomicU64::new(0),
            recording: std::sync::atomic::AtomicBool::new(false),
            sends: Mutex::new(Vec::new()),
            clock: config.clock.unwrap_or_else(|| Arc::new(SystemClock)),
        });
        let (stop, stopped) = watch::channel(false);
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| SimulatorError::Listen { addr, source })
        };
        let mut tls_addr = None;
        if let Some(addr) = config.tls_addr {
            let listener = bind(addr).await?;
            tls_addr = listener.local_addr().ok();
            let acceptor = tokio_rustls::TlsAcceptor::from(identity.server.clone());
            tokio::spawn(accept_loop(
                listener,
                Some(acceptor),
                state.clone(),
                stopped.clone(),
            ));
        }
        let mut plain_addr = None;
        if let Some(addr) = config.plain_addr {
            let listener = bind(addr).await?;
            plain_addr = listener.local_addr().ok();
            tokio::spawn(accept_loop(listener, None, state.clone(), stopped));
        }
        Ok(Self {
            state,
            tls_addr,
            plain_addr,
            ca_pem: identity.ca_pem.clone(),
            identity,
            stop,
        })
    }

    /// `https://127.0.0.1:PORT` of the TLS listener.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_addr.map(|a| format!("https://{a}"))
    }

    pub fn plain_url(&self) -> Option<String> {
        self.plain_addr.map(|a| format!("http://{a}"))
    }

    pub fn stats(&self) -> Stats {
        lock(&self.state.stats).clone()
    }

    pub fn reset(&self) {
        *lock(&self.state.stats) = Stats::default();
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *lock(&self.state.behaviour) = b;
    }

    /// A client certificate and key (PEM) the simulator accepts for APNs certificate auth.
    pub fn issue_client_certificate(&self, bundle_id: &str) -> Result<String, SimulatorError> {
        self.identity.issue_client(bundle_id)
    }

    /// Forgets every OAuth access token issued, as Google does when one is revoked.
    pub fn revoke_access_tokens(&self) {
        lock(&self.state.access_tokens).clear();
    }

    pub fn behaviour(&self) -> Behaviour {
        lock(&self.state.behaviour).clone()
    }

    /// Starts (or stops) keeping every accepted send, headers and body, for
    /// tests that check what went over the wire.
    pub fn record_sends(&self, on: bool) {
        self.state.recording.store(on, Ordering::Relaxed);
    }

    /// The accepted sends kept since `record_sends(true)`, in arrival order.
    pub fn recorded_sends(&self) -> Vec<RecordedSend> {
        lock(&self.state.sends).clone()
    }
}

/// One accepted send as it arrived: the request's path, the headers that
/// matter to a device (`apns-id`, `apns-collapse-id`, …) and the JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSend {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

impl RecordedSend {
    /// The device token the send was addressed to (APNs path or FCM `message.token`).
    pub fn token(&self) -> Option<&str> {
        self.path
            .strip_prefix("/3/device/")
            .or_else(|| self.body["message"]["token"].as_str())
    }
}
