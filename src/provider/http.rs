//! The HTTP/2 client under both providers: a few long-lived connections to one
//! origin (TLS with rustls, or h2c for a plaintext simulator), requests
//! multiplexed as streams, used round-robin, reconnected when one breaks.
//!
//! It talks to `h2` (the HTTP/2 implementation inside hyper) directly: each send
//! opens a stream and awaits its answer in the caller's task. hyper's client
//! connection (and reqwest above it) add a dispatch channel, a spawned task and
//! two one-shot channels per request; with no per-request task the send path
//! costs far less CPU (measured with `cargo bench --bench providers`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::http::{HeaderMap, Method, Request, StatusCode, Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::{config_error, HttpSettings, Outcome, ProviderError};

/// Send a PING on a connection idle this long, and drop it if no PONG comes.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failed connect, callers within this window get the same error at once
/// instead of queueing behind another attempt.
const CONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// A failing origin is logged at most this often: a storm of sends to a
/// provider that cannot be reached must not flood the journal.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why a request got no HTTP answer. Always worth another try.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("timeout: no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Connect(String),
    #[error("transport: {0}")]
    H2(#[from] h2::Error),
    #[error("transport: {0}")]
    Request(String),
}

impl TransportError {
    pub(crate) fn outcome(&self) -> Outcome {
        let mut reason = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            reason.push_str(&format!(": {s}"));
            source = s.source();
        }
        Outcome::Retry {
            reason,
            after: None,
        }
    }
}

/// An HTTP answer, body read in full.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Debug)]
struct Conn {
    send: h2::client::SendRequest<Bytes>,
    /// Set by the connection's driver task when the connection ends.
    closed: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Slot {
    current: Mutex<Option<Arc<Conn>>>,
    /// One connect at a time per slot; the others wait for its result.
    connecting: tokio::sync::Mutex<Option<(Instant, String)>>,
}

/// Where to connect, and how.
struct Origin {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A small set of long-lived HTTP/2 connections to one origin, used round-robin.
#[derive(Debug)]
pub(crate) struct H2Pool {
    origin: Origin,
    slots: Vec<Slot>,
    next: AtomicUsize,
    timeout: Duration,
    connect_timeout: Duration,
    /// When a failed connect was last logged, and how many failed since.
    warned: Mutex<(Option<Instant>, u64)>,
    /// The same for credentials the provider refused.
    warned_auth: Mutex<(Option<Instant>, u64)>,
}

impl H2Pool {
    /// `base` is the origin (`https://host[:port]` or `http://…` for h2c); its
    /// path is ignored. `identity` is a PEM certificate chain and key for TLS
    /// client authentication. `key` names the config section in errors.
    pub(crate) fn new(
        s: &HttpSettings,
        base: &str,
        key: &str,
        identity: Option<&[u8]>,
    ) -> Result<Self, ProviderError> {
        let url = url::Url::parse(base).map_err(|e| config_error(key, e.to_string()))?;
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(config_error(key, format!("{base}: no host"))),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| config_error(key, format!("{base}: no port")))?;
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or(&host)),
            None => url.host_str().unwrap_or(&host).to_owned(),
        };
        let authority = Authority::try_from(authority.as_str())
            .map_err(|e| config_error(key, format!("{base}: {e}")))?;
        let (scheme, tls) = match url.scheme() {
            "https" => {
                let config = tls_config(s.ca_file.as_deref(), key, identity)?;
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| config_error(key, format!("{base}: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                (Scheme::HTTPS, Some((connector, name)))
            }
            "http" => (Scheme::HTTP, None),
            other => {
                return Err(config_error(
                    key,
                    format!("{base}: unsupported scheme {other}"),
                ))
            }
        };
        Ok(Self {
            origin: Origin {
                scheme,
                authority,
                host,
                port,
                tls,
            },
            slots: (0..s.connections.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            timeout: s.timeout,
            connect_timeout: s.timeout.min(Duration::from_secs(10)),
            warned: Mutex::new((None, 0)),
            warned_auth: Mutex::new((None, 0)),
        })
    }

    /// The absolute URI of `path_and_query` on this origin.
    pub(crate) fn uri(&self, path_and_query: PathAndQuery) -> Result<Uri, TransportError> {
        Uri::builder()
            .scheme(self.origin.scheme.clone())
            .authority(self.origin.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| TransportError::Request(e.to_string()))
    }

    /// Sends `head` with `body` on the next connection and reads the whole answer,
    /// all within the configured timeout. A request that never reached a
    /// connection that turned out closed is sent once more on a new one.
    pub(crate) async fn send(
        &self,
        head: Request<()>,
        body: Bytes,
    ) -> Result<Reply, TransportError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        match tokio::time::timeout(self.timeout, self.send_on(slot, head, body)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(self.timeout)),
        }
    }

    async fn send_on(
        &self,
        slot: &Slot,
        head: Request<()>,
        body: Bytes,
    ) -> Result<Reply, TransportError> {
        let conn = self.conn(slot).await?;
        let ready = match conn.send.clone().ready().await {
            Ok(r) => r,
            Err(_) => {
                // The connection went away before this request was sent: mark it
                // and send once on a fresh one (no risk of a duplicate).
                conn.closed.store(true, Ordering::Release);
                let conn = self.conn(slot).await?;
                conn.send.clone().ready().await?
            }
        };
        exchange(ready, head, body).await
    }

    /// The slot's live connection, connecting when it has none.
    async fn conn(&self, slot: &Slot) -> Result<Arc<Conn>, TransportError> {
        if let Some(c) = live(slot) {
            return Ok(c);
        }
        let mut last_failure = slot.connecting.lock().await;
        if let Some(c) = live(slot) {
            return Ok(c);
        }
        if let Some((at, why)) = &*last_failure {
            if at.elapsed() < CONNECT_BACKOFF {
                return Err(TransportError::Connect(why.clone()));
            }
        }
        // Boxed: the TLS handshake's state is kilobytes, and every send's future
        // would otherwise carry room for it.
        let connect = Box::pin(tokio::time::timeout(self.connect_timeout, self.connect()));
        let connected = match connect.await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Connect(format!(
                "no connection within {:?}",
                self.connect_timeout
            ))),
        };
        match connected {
            Ok(c) => {
                let c = Arc::new(c);
                *slot.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
                *last_failure = None;
                Ok(c)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.to_string()));
                self.warn_connect_failed(&e);
                Err(e)
            }
        }
    }

    /// Logs a failed connect as a warning, at most once per [`WARN_EVERY`] per
    /// origin, with how many failed since the last line. (Each message's own
    /// record keeps the reason too.)
    fn warn_connect_failed(&self, e: &TransportError) {
        let Some(failures) = due_to_warn(&self.warned) else {
            return;
        };
        tracing::warn!(
            message = "Cannot connect to the push provider; sends are retried.",
            origin = %self.origin.authority,
            reason = %e,
            failures_since_last_warning = failures,
        );
    }

    async fn connect(&self) -> Result<Conn, TransportError> {
        let o = &self.origin;
        let tcp = TcpStream::connect((o.host.as_str(), o.port))
            .await
            .map_err(|e| TransportError::Connect(format!("{}:{}: {e}", o.host, o.port)))?;
        let _ = tcp.set_nodelay(true);
        match &o.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(|e| {
                    TransportError::Connect(crate::tls::reason(&e, &o.host, "ca_file"))
                })?;
                handshake(tls).await
            }
            None => handshake(tcp).await,
        }
    }

    /// Logs credentials the provider refused (after the one refresh the
    /// clients make), at most once per [`WARN_EVERY`] per origin: every send
    /// fails the same way until the configuration is fixed.
    pub(crate) fn warn_auth_failed(&self, provider: &str, reason: &str) {
        let Some(failures) = due_to_warn(&self.warned_auth) else {
            return;
        };
        tracing::warn!(
            message = "The push provider refused our credentials; sends are retried.",
            provider,
            origin = %self.origin.authority,
            reason,
            failures_since_last_warning = failures,
        );
    }
}

/// Counts one failure; `Some(failures since the last warning)` when a warning
/// is due (none in the last [`WARN_EVERY`]).
fn due_to_warn(state: &Mutex<(Option<Instant>, u64)>) -> Option<u64> {
    let mut warned = state.lock().unwrap_or_else(PoisonError::into_inner);
    warned.1 += 1;
    if warned.0.is_some_and(|at| at.elapsed() < WARN_EVERY) {
        return None;
    }
    warned.0 = Some(Instant::now());
    Some(std::mem::take(&mut warned.1))
}

fn live(slot: &Slot) -> Option<Arc<Conn>> {
    slot.current
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .filter(|c| !c.closed.load(Ordering::Acquire))
        .cloned()
}

async fn handshake<T>(io: T) -> Result<Conn, TransportError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        // Answers are small; large windows only matter for our own sends,
        // which the server's settings govern.
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_concurrent_reset_streams(1024)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| TransportError::Connect(format!("HTTP/2 handshake: {e}")))?;
    let closed = Arc::new(AtomicBool::new(false));
    let ping = connection.ping_pong();
    let flag = closed.clone();
    tokio::spawn(async move {
        let keep_alive = async move {
            let Some(mut ping) = ping else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(KEEP_ALIVE).await;
                match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, ping.ping(h2::Ping::opaque())).await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(message = "HTTP/2 keep-alive failed.", %error);
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(
                            message = "HTTP/2 keep-alive: no PONG; dropping the connection."
                        );
                        return;
                    }
                }
            }
        };
        tokio::select! {
            r = connection => {
                if let Err(error) = r {
                    tracing::debug!(message = "HTTP/2 connection ended.", %error);
                }
            }
            _ = keep_alive => {}
        }
        flag.store(true, Ordering::Release);
    });
    Ok(Conn { send, closed })
}

async fn exchange(
    mut send: h2::client::SendRequest<Bytes>,
    head: Request<()>,
    body: Bytes,
) -> Result<Reply, TransportError> {
    let end = body.is_empty();
    let (response, mut stream) = send.send_request(head, end)?;
    if !end {
        // Bodies are small (≤ 4 KB): h2 buffers them until the window allows.
        stream.send_data(body, true)?;
    }
    let (parts, mut recv) = response.await?.into_parts();
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    while let Some(chunk) = std::future::poll_fn(|cx| recv.poll_data(cx)).await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        match (&mut first, &mut rest) {
            (None, _) => first = Some(chunk),
            (Some(f), None) => {
                let mut all = BytesMut::from(&f[..]);
                all.extend_from_slice(&chunk);
                rest = Some(all);
            }
            (Some(_), Some(all)) => all.extend_from_slice(&chunk),
        }
    }
    let body = match (first, rest) {
        (_, Some(all)) => all.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    };
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// A POST request head for `uri`.
pub(crate) fn post(uri: Uri, headers: HeaderMap) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

fn tls_config(
    ca_file: Option<&Path>,
    key: &str,
    identity: Option<&[u8]>,
) -> Result<rustls::ClientConfig, ProviderError> {
    let mut roots = rustls::RootCertStore::empty();
    // The system's roots, as for any HTTPS client, plus the configured CA.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let ca_key = format!("{key}.ca_file");
        let pem = std::fs::read(path)
            .map_err(|e| config_error(&ca_key, format!("{}: {e}", path.display())))?;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| config_error(&ca_key, format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| config_error(&ca_key, format!("{}: {e}", path.display())))?;
            found += 1;
        }
        if found == 0 {
            return Err(config_error(
                &ca_key,
                format!("{}: no PEM certificate", path.display()),
            ));
        }
    }
    if roots.is_empty() {
        return Err(config_error(
            format!("{key}.ca_file"),
            "no trusted CA certificates: the system has none and no ca_file is set",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(key, e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let cert_key = format!("{key}.cert_file");
            let chain = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| config_error(&cert_key, e.to_string()))?;
            if chain.is_empty() {
                return Err(config_error(&cert_key, "no PEM certificate"));
            }
            let private = PrivateKeyDer::from_pem_slice(pem)
                .map_err(|e| config_error(&cert_key, format!("private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| config_error(&cert_key, e.to_string()))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
