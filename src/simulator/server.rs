//! The HTTP/2 server: accepting connections, routing, the control endpoints, recording and scripted behaviour.

use super::apns::apns;
use super::fcm::fcm;
use super::oauth::oauth;
use super::{lock, Behaviour, RecordedSend, State, Stats};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(super) async fn accept_loop(
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

pub(super) async fn serve<I, S>(
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

pub(super) fn respond(status: StatusCode, headers: &[(&str, String)], body: Value) -> Reply {
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
pub(super) mod names {
    use hyper::header::HeaderName;
    pub const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
    pub const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
    pub const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
    pub const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
    pub const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
    pub const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");
}

pub(super) fn header<'r>(
    req: &'r hyper::http::request::Parts,
    name: &HeaderName,
) -> Option<&'r str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// An answer; hyper's connections send it as `Full<Bytes>`, ours as h2 DATA.
pub(super) type Reply = Response<Bytes>;

/// Whether a request is a send (delayed by `latency_ms`), as opposed to a token
/// grant or a control request.
pub(super) fn is_send(parts: &hyper::http::request::Parts) -> bool {
    let p = parts.uri.path();
    parts.method == hyper::Method::POST
        && (p.starts_with("/3/device/")
            || (p.starts_with("/v1/projects/") && p.ends_with("/messages:send")))
}

/// `client_cert`: the connection presented a certificate our CA issued (APNs certificate auth).
pub(super) async fn handle(state: &State, req: Request<Incoming>, client_cert: bool) -> Reply {
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
pub(super) fn route(
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
pub(super) fn record(
    state: &State,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    reply: Reply,
) -> Reply {
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
pub(super) async fn serve_h2<T>(
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
pub(super) fn read_body(
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

pub(super) fn answer_h2(
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
pub(super) enum Answer {
    Accepted(Reply),
    Other(Reply),
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Self {
        Self::Other(r)
    }
}

/// Adds one accepted send to the stats, in one critical section.
pub(super) fn count_accepted(state: &State, token: &str, now: i64, apns: bool, iat: Option<i64>) {
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
pub(super) fn ok(headers: Option<(HeaderName, HeaderValue)>, body: Bytes) -> Reply {
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

pub(super) fn unregistered(state: &State, token: &str) -> bool {
    lock(&state.behaviour)
        .unregistered_prefix
        .as_deref()
        .is_some_and(|p| !p.is_empty() && token.starts_with(p))
}

pub(super) async fn delay(state: &State) {
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

pub(super) fn update_behaviour(state: &State, body: &[u8]) -> Reply {
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
pub(super) fn scripted_failure(state: &State) -> Option<(u16, Option<u64>)> {
    let mut b = lock(&state.behaviour);
    let fail = if b.fail_next > 0 {
        b.fail_next -= 1;
        true
    } else {
        b.fail_rate > 0.0 && fastrand::f64() < b.fail_rate
    };
    fail.then_some((b.fail_status, b.retry_after_secs))
}

pub(super) fn count_error(state: &State, reason: &str) {
    *lock(&state.stats)
        .errors_by_reason
        .entry(reason.to_owned())
        .or_default() += 1;
}
