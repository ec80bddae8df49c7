//! The provider simulator: a stand-in for APNs, FCM and Google's OAuth token
//! endpoint on one HTTP/2 server (TLS with a generated CA, plus a plaintext
//! h2c/HTTP/1 port). It checks auth and payloads the way Apple and Google do,
//! can be scripted to fail, and counts what it accepted per token so tests can
//! assert "each device got exactly one".
//!
//! Control endpoints: `GET /_sim/stats`, `PUT /_sim/behaviour`, `POST /_sim/reset`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::provider::jwt;

mod tls;

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

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let service = |client_cert: bool| {
                let state = state.clone();
                hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move {
                        Ok::<_, Infallible>(handle(&state, req, client_cert).await.map(Full::new))
                    }
                })
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(1000);
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let session = &stream.get_ref().1;
                        let client_cert =
                            session.peer_certificates().is_some_and(|c| !c.is_empty());
                        if session.alpn_protocol() == Some(b"h2") {
                            serve_h2(stream, state, client_cert, stopped).await;
                        } else {
                            serve(builder, TokioIo::new(stream), service(client_cert), stopped)
                                .await;
                        }
                    }
                }
                None => serve(builder, TokioIo::new(tcp), service(false), stopped).await,
            }
        });
    }
}

async fn serve<I, S>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    mut stopped: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped.changed() => {}
    }
}

fn respond(status: StatusCode, headers: &[(&str, String)], body: Value) -> Reply {
    let bytes = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let mut builder = Response::builder().status(status);
    if !bytes.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    for (k, v) in headers {
        builder = builder.header(*k, v.as_str());
    }
    builder
        .body(bytes)
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}

/// Header names looked up on every send, parsed once (a `&str` key is parsed per lookup).
mod names {
    use hyper::header::HeaderName;
    pub const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
    pub const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
    pub const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
    pub const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
    pub const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
    pub const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");
}

fn header<'r>(req: &'r hyper::http::request::Parts, name: &HeaderName) -> Option<&'r str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// An answer; hyper's connections send it as `Full<Bytes>`, ours as h2 DATA.
type Reply = Response<Bytes>;

/// Whether a request is a send (delayed by `latency_ms`), as opposed to a token
/// grant or a control request.
fn is_send(parts: &hyper::http::request::Parts) -> bool {
    let p = parts.uri.path();
    parts.method == hyper::Method::POST
        && (p.starts_with("/3/device/")
            || (p.starts_with("/v1/projects/") && p.ends_with("/messages:send")))
}

/// `client_cert`: the connection presented a certificate our CA issued (APNs certificate auth).
async fn handle(state: &State, req: Request<Incoming>, client_cert: bool) -> Reply {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return respond(
                StatusCode::BAD_REQUEST,
                &[],
                json!({"error": "unreadable body"}),
            )
        }
    };
    if is_send(&parts) {
        delay(state).await;
    }
    route(state, &parts, &body, client_cert)
}

/// Answers one request whose body has been read (and whose latency has passed).
fn route(
    state: &State,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    client_cert: bool,
) -> Reply {
    let path = parts.uri.path();
    let response = match (parts.method.as_str(), path) {
        ("POST", p) if p.starts_with("/3/device/") => {
            match apns(state, parts, &p["/3/device/".len()..], body, client_cert) {
                Answer::Accepted(r) => return record(state, parts, body, r),
                Answer::Other(r) => r,
            }
        }
        ("POST", p) if p.starts_with("/v1/projects/") && p.ends_with("/messages:send") => {
            let project = &p["/v1/projects/".len()..p.len() - "/messages:send".len()];
            match fcm(state, parts, project, body) {
                Answer::Accepted(r) => return record(state, parts, body, r),
                Answer::Other(r) => r,
            }
        }
        ("POST", "/token") => oauth(state, body),
        ("GET", "/_sim/stats") => {
            return respond(StatusCode::OK, &[], json!(lock(&state.stats).clone()))
        }
        ("PUT", "/_sim/behaviour") => return update_behaviour(state, body),
        ("POST", "/_sim/reset") => {
            *lock(&state.stats) = Stats::default();
            return respond(StatusCode::NO_CONTENT, &[], Value::Null);
        }
        _ => respond(StatusCode::NOT_FOUND, &[], json!({"reason": "BadPath"})),
    };
    let mut stats = lock(&state.stats);
    *stats
        .responses_by_status
        .entry(response.status().as_u16())
        .or_default() += 1;
    response
}

/// Keeps an accepted send while recording is on; answers `reply` as it is.
fn record(state: &State, parts: &hyper::http::request::Parts, body: &[u8], reply: Reply) -> Reply {
    if state.recording.load(Ordering::Relaxed) {
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("apns-"))
            .filter_map(|(name, v)| Some((name.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let send = RecordedSend {
            path: parts.uri.path().to_owned(),
            headers,
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        };
        lock(&state.sends).push(send);
    }
    reply
}

/// An HTTP/2 connection served with `h2` directly (TLS connections that chose
/// `h2`, which is every provider client). hyper's server spawns a task per
/// stream and flushes per answer; here a request whose body has already arrived
/// (nearly all: HEADERS and DATA come together) is answered inline, so a burst
/// of requests read together is answered in one write. Requests still waiting
/// for their body, or delayed by `latency_ms`, get a task of their own.
async fn serve_h2<T>(
    io: T,
    state: Arc<State>,
    client_cert: bool,
    mut stopped: watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(1000)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake::<_, Bytes>(io);
    let mut conn = tokio::select! {
        c = handshake => match c {
            Ok(c) => c,
            Err(_) => return,
        },
        _ = stopped.changed() => return,
    };
    loop {
        let next = tokio::select! {
            n = conn.accept() => n,
            _ = stopped.changed() => return,
        };
        let Some(Ok((req, respond))) = next else {
            return;
        };
        let (parts, mut recv) = req.into_parts();
        let mut buf = BytesMut::new();
        let inline = lock(&state.behaviour).latency_ms == 0 && {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            matches!(
                read_body(&mut recv, &mut buf, &mut cx),
                std::task::Poll::Ready(_)
            )
        };
        if inline {
            answer_h2(&state, &parts, &mut recv, buf, respond, client_cert);
        } else {
            let state = state.clone();
            tokio::spawn(async move {
                let mut buf = buf;
                let _ = std::future::poll_fn(|cx| read_body(&mut recv, &mut buf, cx)).await;
                if is_send(&parts) {
                    delay(&state).await;
                }
                answer_h2(&state, &parts, &mut recv, buf, respond, client_cert);
            });
        }
    }
}

/// Reads a request body to its end into `buf`; `Err` when the stream broke.
fn read_body(
    recv: &mut h2::RecvStream,
    buf: &mut BytesMut,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Result<(), ()>> {
    use std::task::Poll;
    loop {
        if recv.is_end_stream() {
            return Poll::Ready(Ok(()));
        }
        match recv.poll_data(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let _ = recv.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
            }
            Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(())),
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
        }
    }
}

fn answer_h2(
    state: &State,
    parts: &hyper::http::request::Parts,
    recv: &mut h2::RecvStream,
    buf: BytesMut,
    mut sender: h2::server::SendResponse<Bytes>,
    client_cert: bool,
) {
    let reply = if recv.is_end_stream() {
        route(state, parts, &buf, client_cert)
    } else {
        respond(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"error": "unreadable body"}),
        )
    };
    let (head, body) = reply.into_parts();
    let end = body.is_empty();
    if let Ok(mut stream) = sender.send_response(Response::from_parts(head, ()), end) {
        if !end {
            let _ = stream.send_data(body, true);
        }
    }
}

/// A send's answer: accepted ones were counted (status included) with the send.
enum Answer {
    Accepted(Reply),
    Other(Reply),
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Self {
        Self::Other(r)
    }
}

/// Adds one accepted send to the stats, in one critical section.
fn count_accepted(state: &State, token: &str, now: i64, apns: bool, iat: Option<i64>) {
    let mut stats = lock(&state.stats);
    match stats.accepted_per_token.get_mut(token) {
        Some(n) => *n += 1,
        None => {
            stats.accepted_per_token.insert(token.to_owned(), 1);
        }
    }
    if apns {
        stats.apns_accepted += 1;
    } else {
        stats.fcm_accepted += 1;
    }
    *stats.accepted_per_second.entry(now).or_default() += 1;
    *stats.responses_by_status.entry(200).or_default() += 1;
    if let Some(iat) = iat.filter(|iat| lock(&state.seen_iats).insert(*iat)) {
        stats.apns_token_iats.push(iat);
    }
}

/// A 200 answer with a JSON body (or none), built without a header parse per call.
fn ok(headers: Option<(HeaderName, HeaderValue)>, body: Bytes) -> Reply {
    let json = !body.is_empty();
    let mut r = Response::new(body);
    if json {
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Some((k, v)) = headers {
        r.headers_mut().insert(k, v);
    }
    r
}

fn unregistered(state: &State, token: &str) -> bool {
    lock(&state.behaviour)
        .unregistered_prefix
        .as_deref()
        .is_some_and(|p| !p.is_empty() && token.starts_with(p))
}

async fn delay(state: &State) {
    /// Counts a send out of `sends_waiting` however its wait ends (a stream reset drops it).
    struct Waiting<'a>(&'a AtomicU64);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let ms = lock(&state.behaviour).latency_ms;
    if ms > 0 {
        let now = state.sends_waiting.fetch_add(1, Ordering::Relaxed) + 1;
        let _waiting = Waiting(&state.sends_waiting);
        {
            let mut stats = lock(&state.stats);
            stats.most_sends_at_once = stats.most_sends_at_once.max(now);
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn update_behaviour(state: &State, body: &[u8]) -> Reply {
    let current = serde_json::to_value(lock(&state.behaviour).clone()).unwrap_or(Value::Null);
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return respond(
                StatusCode::BAD_REQUEST,
                &[],
                json!({"error": "expected a JSON object"}),
            )
        }
    };
    let mut merged = current;
    if let (Some(m), Some(p)) = (merged.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            m.insert(k.clone(), v.clone());
        }
    }
    match serde_json::from_value::<Behaviour>(merged) {
        Ok(b) => {
            *lock(&state.behaviour) = b.clone();
            respond(StatusCode::OK, &[], json!(b))
        }
        Err(e) => respond(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"error": e.to_string()}),
        ),
    }
}

/// Decides whether this send is scripted to fail; returns (status, retry-after).
fn scripted_failure(state: &State) -> Option<(u16, Option<u64>)> {
    let mut b = lock(&state.behaviour);
    let fail = if b.fail_next > 0 {
        b.fail_next -= 1;
        true
    } else {
        b.fail_rate > 0.0 && fastrand::f64() < b.fail_rate
    };
    fail.then_some((b.fail_status, b.retry_after_secs))
}

fn count_error(state: &State, reason: &str) {
    *lock(&state.stats)
        .errors_by_reason
        .entry(reason.to_owned())
        .or_default() += 1;
}

fn apns_error(state: &State, status: u16, reason: &str, retry_after: Option<u64>) -> Reply {
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

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks an APNs provider token's signature, key and team; returns (key id, iat).
fn verify_provider_token(state: &State, bearer: &str) -> Result<(String, i64), &'static str> {
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
fn apns(
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
            state.counter.fetch_add(1, Ordering::Relaxed) as i64,
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
fn apns_body_ok(body: &[u8]) -> bool {
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

/// A JSON object whose values all deserialize as `T`; keeps nothing. With
/// `IgnoredAny`, any object; with `&str`, an object of strings without escapes
/// (FCM `data`).
struct ObjectOf<T>(std::marker::PhantomData<T>);

type AnyObject = ObjectOf<serde::de::IgnoredAny>;
type PlainStrings<'a> = ObjectOf<&'a str>;

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
struct FcmSend<'a> {
    token: &'a str,
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
const FCM_SURELY_SMALL: usize = 1024;

/// The device token of an FCM body that passes every check, read without a
/// `Value`; `None` sends the body through the full checks (and their errors).
fn fcm_fast(body: &[u8]) -> Option<&str> {
    if body.len() > FCM_SURELY_SMALL {
        return None;
    }
    let token = serde_json::from_slice::<FcmSend<'_>>(body).ok()?.token;
    (!token.is_empty() && token.len() <= 4096).then_some(token)
}

fn fcm_error(
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
fn fcm(state: &State, req: &hyper::http::request::Parts, project: &str, body: &[u8]) -> Answer {
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
    if let Some(token) = fcm_fast(body) {
        return fcm_accept(state, project, token, now);
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
    fcm_accept(state, project, token, now)
}

/// After the checks of the body: the device, scripted failures, then success.
fn fcm_accept(state: &State, project: &str, token: &str, now: i64) -> Answer {
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

/// Google's token endpoint for the JWT-bearer grant.
fn oauth(state: &State, body: &[u8]) -> Reply {
    let invalid = |why: &str| {
        count_error(state, "invalid_grant");
        respond(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"error": "invalid_grant", "error_description": why}),
        )
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return respond(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"error": "unsupported_grant_type"}),
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return invalid("missing assertion");
    };
    let Ok(parsed) = jwt::decode(assertion) else {
        return invalid("malformed assertion");
    };
    let iss = parsed
        .claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(account) = state.fcm_accounts.iter().find(|a| a.client_email == iss) else {
        return invalid("unknown service account");
    };
    if parsed.verify_rs256(&account.public_key).is_err() {
        return invalid("Invalid JWT Signature.");
    }
    let now = state.clock.now().timestamp();
    let claim = |k: &str| parsed.claims.get(k).and_then(Value::as_i64).unwrap_or(0);
    let scope_ok = parsed
        .claims
        .get("scope")
        .and_then(Value::as_str)
        .is_some_and(|s| s.split(' ').any(|s| s == crate::provider::fcm::SCOPE));
    let aud_ok = parsed
        .claims
        .get("aud")
        .and_then(Value::as_str)
        .is_some_and(|a| a.ends_with("/token"));
    if !scope_ok || !aud_ok {
        return invalid("bad scope or audience");
    }
    if claim("exp") <= now || claim("iat") > now + 300 || claim("exp") - claim("iat") > 3600 {
        return invalid("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.");
    }
    let ttl = lock(&state.behaviour).access_token_ttl_secs;
    let value = format!(
        "sim-access-{}-{}",
        state.counter.fetch_add(1, Ordering::Relaxed),
        fastrand::u64(..)
    );
    lock(&state.access_tokens).insert(value.clone(), (account.project_id.clone(), now + ttl));
    lock(&state.stats).oauth_grants += 1;
    respond(
        StatusCode::OK,
        &[],
        json!({"access_token": value, "expires_in": ttl, "token_type": "Bearer"}),
    )
}

#[cfg(test)]
mod fast_path_tests {
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
