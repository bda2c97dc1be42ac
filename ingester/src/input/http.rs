//! HTTP front: `POST /logplex/{app}`; the operations endpoints on the same
//! port are answered by `ops`.
//!
//! Status codes follow Logplex's rules (see `docs/architecture.md`, Data path): 200 only when the
//! request is durable, 401/403/404 for auth and routing, 413 over the body
//! limit, 503 + Retry-After when the data cannot be made durable right now.
//! The content of a body never causes a 4xx: parsing happens later and keeps
//! every byte.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::header::{ALLOW, AUTHORIZATION, CONTENT_LENGTH, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use drainpipe_contract::app::valid_app_name;

use crate::archive::direct::Direct;
use crate::durable::{AppendError, Entry, Wal};
use crate::input::dedupe::{Claim, Dedupe};
use crate::input::ops;
use crate::input::otlp_http;
use crate::input::response::{Body, plain, with_header};
use crate::input::routes::{Denied, Routes};
use crate::parse::BodyFormat;
use crate::telemetry::metrics::Metrics;

/// Seconds Logplex is asked to wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "5";
/// How long a request waits for memory held by other requests' bodies.
const INFLIGHT_WAIT: Duration = Duration::from_secs(2);
/// How long an answered request's unread body may take to arrive.
const DISCARD_WAIT: Duration = Duration::from_secs(5);

/// What [`Sink::store`] says once the write-ahead log has closed.
pub(crate) const SHUTTING_DOWN: &str = "shutting down";
/// Why nothing is stored while the log is over `--wal-max-bytes`.
pub(crate) const WAL_FULL: &str = "write-ahead log full";
/// Why a body is refused while `--max-inflight-bytes` are held by others.
pub(crate) const INFLIGHT_FULL: &str = "too many request bodies in memory";

/// Where accepted requests are made durable.
pub enum Sink {
    Wal(Arc<Wal>),
    Archive(Arc<Direct>),
}

impl Sink {
    pub(crate) async fn store(&self, entry: Entry) -> Result<(), &'static str> {
        match self {
            Sink::Wal(wal) => wal.append(entry).await.map_err(|e| match e {
                AppendError::Full => WAL_FULL,
                AppendError::Io => "write-ahead log write failed",
                AppendError::Closed => SHUTTING_DOWN,
            }),
            Sink::Archive(direct) => direct
                .submit(entry)
                .await
                .map_err(|()| "archive unavailable"),
        }
    }

    /// Readiness (`/readyz`).
    fn is_ready(&self) -> bool {
        match self {
            Sink::Wal(wal) => wal.is_healthy(),
            Sink::Archive(direct) => direct.is_healthy(),
        }
    }

    /// Worth reading the body and trying? (A recent failure is no reason
    /// to refuse: the next attempt is how recovery is noticed.)
    pub(crate) fn accepts(&self) -> bool {
        match self {
            Sink::Wal(wal) => wal.accepts(),
            Sink::Archive(_) => true,
        }
    }
}

/// Everything a request handler needs.
pub struct Server {
    pub routes: Routes,
    pub metrics: Arc<Metrics>,
    pub sink: Sink,
    pub dedupe: Arc<Dedupe>,
    pub max_body: u64,
    /// Bytes of request bodies held in memory at once.
    inflight: Arc<Semaphore>,
    inflight_max: u64,
    ready: AtomicBool,
}

impl Server {
    pub fn new(
        routes: Routes,
        metrics: Arc<Metrics>,
        sink: Sink,
        dedupe: Arc<Dedupe>,
        max_body: u64,
        max_inflight_bytes: u64,
    ) -> Arc<Server> {
        let permits = usize::try_from(max_inflight_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Arc::new(Server {
            routes,
            metrics,
            sink,
            dedupe,
            max_body,
            inflight: Arc::new(Semaphore::new(permits)),
            inflight_max: permits as u64,
            ready: AtomicBool::new(true),
        })
    }

    /// Readiness goes false (shutdown); requests are still served.
    pub fn set_unready(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        let method = req.method();
        if let Some(app) = path.strip_prefix("/logplex/") {
            if method != Method::POST {
                return with_header(
                    plain(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
                    ALLOW,
                    "POST",
                );
            }
            let app = app.to_owned();
            return self.counted(self.drain(&app, req)).await;
        }
        if let Some(rest) = path.strip_prefix(otlp_http::PREFIX) {
            let rest = rest.to_owned();
            return self.counted(otlp_http::handle(&self, &rest, req)).await;
        }
        let ready = || self.ready.load(Ordering::Relaxed) && self.sink.is_ready();
        ops::answer(path, method, ready, &self.metrics)
            .unwrap_or_else(|| plain(StatusCode::NOT_FOUND, "not found\n"))
    }

    /// A drain request's answer, counted by status, with the latency of
    /// every acknowledgement.
    async fn counted(&self, answer: impl Future<Output = Response<Body>>) -> Response<Body> {
        let started = Instant::now();
        let response = answer.await;
        let status = response.status();
        self.metrics.request(status.as_u16());
        if status == StatusCode::OK {
            self.metrics
                .ack_latency
                .observe(started.elapsed().as_secs_f64());
        }
        response
    }

    async fn drain(&self, app: &str, req: Request<Incoming>) -> Response<Body> {
        let received_at_us = now_us();
        if !valid_app_name(app) {
            return plain(StatusCode::NOT_FOUND, "unknown app\n");
        }
        let headers = req.headers();
        let drain_token = header_str(headers, "logplex-drain-token");
        let frame_id = header_str(headers, "logplex-frame-id");
        let msg_count =
            header_str(headers, "logplex-msg-count").and_then(|c| c.trim().parse().ok());
        let password = password(headers, req.uri().query());
        match self
            .routes
            .check(app, password.as_deref(), drain_token.as_deref())
        {
            Ok(()) => {}
            Err(Denied::UnknownApp) => return plain(StatusCode::NOT_FOUND, "unknown app\n"),
            Err(Denied::BadPassword) => {
                return with_header(
                    plain(StatusCode::UNAUTHORIZED, "wrong or missing password\n"),
                    WWW_AUTHENTICATE,
                    "Basic realm=\"drainpipe\"",
                );
            }
            Err(Denied::TokenMismatch) => {
                return plain(
                    StatusCode::FORBIDDEN,
                    "drain token does not match this app\n",
                );
            }
        }
        let content_length =
            header_str(headers, CONTENT_LENGTH.as_str()).and_then(|l| l.parse::<u64>().ok());
        if content_length.is_some_and(|l| l > self.max_body) {
            return too_large();
        }

        let key = drain_token.clone().zip(frame_id.clone());
        let guard = match self.dedupe.claim_waiting(key).await {
            Claim::New(guard) => guard,
            Claim::Duplicate | Claim::Wait(_) => {
                self.metrics.duplicate_frames.inc();
                discard_body(req.into_body(), self.max_body).await;
                return ok();
            }
        };
        let (body, permit) = match self.receive(req.into_body(), content_length).await {
            Ok(received) => received,
            Err(refused) => return refused.logplex(),
        };
        let entry = Entry {
            app: app.to_owned(),
            drain_token,
            frame_id,
            msg_count,
            received_at_us,
            format: BodyFormat::LogplexHttps,
            body,
        };
        let stored = self.sink.store(entry).await;
        drop(permit);
        match stored {
            Ok(()) => {
                guard.ack();
                ok()
            }
            Err(why) => unavailable(why),
        }
    }
}

/// Why a request body was not taken in; each transport words the answer.
pub(crate) enum Refused {
    /// 503: nothing can be made durable right now.
    Unavailable(&'static str),
    /// 413: the body is over the limit.
    TooLarge,
    /// 400: the connection broke mid-body.
    Broken,
}

impl Refused {
    fn logplex(self) -> Response<Body> {
        match self {
            Refused::Unavailable(why) => unavailable(why),
            Refused::TooLarge => too_large(),
            Refused::Broken => plain(StatusCode::BAD_REQUEST, "request body could not be read\n"),
        }
    }
}

impl Server {
    /// Take a request body in, within the memory and durability limits: the
    /// write-ahead log must accept, and the body's bytes must fit in the
    /// in-flight budget (the permit holds them until the body is stored).
    pub(crate) async fn receive(
        &self,
        body: Incoming,
        content_length: Option<u64>,
    ) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), Refused> {
        if !self.sink.accepts() {
            discard_body(body, self.max_body).await;
            return Err(Refused::Unavailable(WAL_FULL));
        }
        let want = content_length
            .unwrap_or(self.max_body)
            .min(self.inflight_max);
        let permit = match tokio::time::timeout(
            INFLIGHT_WAIT,
            Arc::clone(&self.inflight).acquire_many_owned(u32::try_from(want).unwrap_or(u32::MAX)),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                discard_body(body, self.max_body).await;
                return Err(Refused::Unavailable(INFLIGHT_FULL));
            }
        };
        let body = match read_body(body, self.max_body).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return Err(Refused::TooLarge),
            Err(BodyError::Broken) => return Err(Refused::Broken),
        };
        self.metrics.received_bytes.inc_by(body.len() as u64);
        Ok((body, permit))
    }
}

enum BodyError {
    TooLarge,
    Broken,
}

/// Collect a body, stopping as soon as it passes `max` (a chunked body has
/// no Content-Length to check up front).
async fn read_body(mut body: Incoming, max: u64) -> Result<Bytes, BodyError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > max {
                return Err(BodyError::TooLarge);
            }
            if buf.is_empty() && body.is_end_stream() {
                // The whole body in one frame: keep it without copying.
                return Ok(data);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Read a body we answer without keeping, so the client reads our answer
/// and the connection stays usable: a response sent over an unread body
/// makes hyper close the connection, which the client sees as a failed
/// request rather than the 503 or 200 it was given. Nothing is buffered.
async fn discard_body(mut body: Incoming, max: u64) {
    let mut seen = 0u64;
    let drain = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > max {
                    return;
                }
            }
        }
    };
    // A peer that stops sending gets the answer anyway (and loses the
    // connection) rather than holding the request forever.
    let _ = tokio::time::timeout(DISCARD_WAIT, drain).await;
}

/// Microseconds since the Unix epoch, when a request arrived.
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

pub(crate) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The drain password: HTTP Basic (any user name), `Bearer` (telemetry
/// drains) or `?token=`.
pub(crate) fn password(headers: &HeaderMap, query: Option<&str>) -> Option<Vec<u8>> {
    if let Some(auth) = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes) {
        let (scheme, rest) = auth.split_at(auth.len().min(6));
        if auth.len() > 7 && auth[..7].eq_ignore_ascii_case(b"bearer ") {
            // OTLP telemetry drains: the header the operator put on the drain.
            return Some(auth[7..].trim_ascii().to_vec());
        }
        if scheme.eq_ignore_ascii_case(b"basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim_ascii())
                .ok()?;
            let colon = decoded.iter().position(|b| *b == b':')?;
            return Some(decoded[colon + 1..].to_vec());
        }
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(percent_decode)
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn ok() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

fn too_large() -> Response<Body> {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body over the limit\n",
    )
}

pub(crate) fn unavailable(why: &'static str) -> Response<Body> {
    tracing::debug!(reason = why, "answering 503");
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "cannot make data durable now; retry\n",
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    r
}

/// The next connection (no Nagle delay: answers are small), or None once
/// `shutdown` is cancelled.
pub(crate) async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = shutdown.cancelled() => return None,
        }
    }
}

/// Accept connections until `shutdown`, then let in-flight requests finish
/// (at most `grace`) and return.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(30));
    while let Some((stream, _)) = accept(&listener, &shutdown).await {
        let server = Arc::clone(&server);
        let service = service_fn(move |req| {
            let server = Arc::clone(&server);
            async move { Ok::<_, Infallible>(server.handle(req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    finish(graceful, grace, "HTTP").await;
}

/// Ask the connections `graceful` watches to close once their requests are
/// answered, and wait for that at most `grace`.
pub(crate) async fn finish(
    graceful: hyper_util::server::graceful::GracefulShutdown,
    grace: Duration,
    listener: &str,
) {
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "{listener} requests still running after the shutdown grace period; closing"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_from_basic_auth_or_token() {
        let mut h = HeaderMap::new();
        // user "u", password "p:w d" (a colon in the password is allowed)
        let enc = base64::engine::general_purpose::STANDARD.encode("u:p:w d");
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {enc}")).expect("hv"),
        );
        assert_eq!(password(&h, None), Some(b"p:w d".to_vec()));
        assert_eq!(
            password(&HeaderMap::new(), Some("a=1&token=s%3Acr+t%zz")),
            Some(b"s:cr t%zz".to_vec())
        );
        assert_eq!(password(&HeaderMap::new(), Some("a=1")), None);
        assert_eq!(password(&HeaderMap::new(), None), None);
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(password(&h, None), None);
    }
}
