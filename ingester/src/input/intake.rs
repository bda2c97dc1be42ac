//! The intake every front hands requests to: [`Server`] (routes, metrics,
//! the in-flight memory budget), [`Sink`] (where a request is made durable)
//! and what the fronts share to take a request in: reading a body within the
//! limits, the drain password, the accept loop and the graceful end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::archive::direct::Direct;
use crate::durable::{AppendError, Entry, Wal};
use crate::input::dedupe::Dedupe;
use crate::input::routes::Routes;
use crate::telemetry::metrics::Metrics;

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

    /// Worth sending traffic to (`/readyz`): not stopping, and the sink
    /// healthy.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.sink.is_ready()
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
pub(crate) async fn discard_body(mut body: Incoming, max: u64) {
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

/// Wait at most `grace` for `all_closed`: every connection told to close once
/// its requests are answered, and closed.
pub(crate) async fn finish(
    all_closed: impl std::future::Future<Output = ()>,
    grace: Duration,
    listener: &str,
) {
    if tokio::time::timeout(grace, all_closed).await.is_err() {
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
