//! Syslog drains over TCP or TLS: the accept loop and one task per
//! connection.
//!
//! A connection is read, decoded ([`crate::parse::syslog_stream`]) and routed by
//! drain token (HOSTNAME) frame by frame; the frames of each read go to the
//! same sink as HTTPS drains (one write-ahead log entry per app, sharing the
//! log's group commit) and the next read starts only once they are durable.
//! When the sink cannot take more (log at its bound, archive down with
//! `--ack archive`) the connection stops reading, so TCP pushes back on the
//! sender instead of anything read being dropped.
//!
//! Limits keep a peer from holding resources: connections at once (global
//! and per IP address), memory per connection (`--syslog-max-frame` plus one
//! read), a TLS handshake deadline, and an idle timeout that counts from the
//! last complete frame, so a peer trickling bytes is closed as surely as a
//! silent one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::durable::Entry;
use crate::input::intake::{Server, now_us};
use crate::input::routes::TokenRoute;
use crate::input::tls::ReloadingTls;
use crate::parse::BodyFormat;
use crate::parse::syslog_stream::{self, Decoder, Frame, FrameKind};
use crate::telemetry::metrics::{Metrics, ReasonLabel, ResultLabel};
use drainpipe_contract::app::valid_app_name;

/// Bytes asked of the socket per read (one read's frames make one log entry
/// per app, so larger reads mean fewer, larger appends).
const READ_CHUNK: usize = 128 << 10;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a token's app is remembered by a connection before the routes
/// are asked again (they reload every second).
const ROUTE_CACHE: Duration = Duration::from_secs(1);
/// Waits while the sink cannot take data: first and longest.
const BACKOFF_START: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Limits of the syslog listener.
#[derive(Debug, Clone)]
pub struct SyslogOptions {
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub idle_timeout: Duration,
    pub max_frame: usize,
}

/// Accept connections until `shutdown`, then wait (at most `grace`) for
/// open connections to store what they have read.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    server: Arc<Server>,
    options: SyslogOptions,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let max = options.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let peers = Arc::new(Peers::default());
    let options = Arc::new(options);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "syslog accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let metrics = &server.metrics;
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            connection_result(metrics, "over_limit");
            tracing::debug!(%peer, "syslog connection refused: --syslog-max-connections reached");
            continue;
        };
        let Some(peer_slot) = Peers::claim(&peers, peer.ip(), options.max_connections_per_peer)
        else {
            connection_result(metrics, "over_peer_limit");
            tracing::debug!(%peer, "syslog connection refused: --syslog-max-connections-per-peer reached");
            continue;
        };
        connection_result(metrics, "accepted");
        let (server, options, tls, shutdown) = (
            Arc::clone(&server),
            Arc::clone(&options),
            tls.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let _held = (slot, peer_slot, OpenGauge::new(&server.metrics));
            let conn = Connection::new(server, options, peer, shutdown);
            match tls {
                None => conn.run(stream).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => conn.run(stream).await,
                        Ok(Err(e)) => {
                            connection_result(&conn.server.metrics, "tls_failed");
                            tracing::debug!(%peer, error = %e, "syslog TLS handshake failed");
                        }
                        Err(_) => {
                            connection_result(&conn.server.metrics, "tls_failed");
                            tracing::debug!(%peer, "syslog TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "syslog connections still storing after the shutdown grace period; closing"
        );
    }
}

fn connection_result(metrics: &Metrics, result: &'static str) {
    metrics
        .syslog_connections_total
        .get_or_create(&ResultLabel { result })
        .inc();
}

/// Open connections per IP address.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`Peers`], given back on drop.
struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    fn claim(peers: &Arc<Peers>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut counts = peers.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: Arc::clone(peers),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.peers.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// `drainpipe_syslog_open_connections`, kept right by drop.
struct OpenGauge(Arc<Metrics>);

impl OpenGauge {
    fn new(metrics: &Arc<Metrics>) -> OpenGauge {
        metrics.syslog_connections.inc();
        OpenGauge(Arc::clone(metrics))
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.syslog_connections.dec();
    }
}

/// Where a drain token's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    app: Arc<str>,
    token: Arc<str>,
}

/// A frame's fate: stored for a target, or dropped for a reason (a
/// `drainpipe_syslog_dropped_messages_total` label).
type Routed = Result<Target, &'static str>;

/// The frames of one read, grouped by target.
struct Batch {
    groups: Vec<(Target, Vec<u8>, u64)>,
    /// Initial capacity of a group's body: about what the read holds.
    capacity: usize,
}

impl Batch {
    fn push(&mut self, target: &Target, frame: &Frame<'_>) {
        let i = match self.groups.iter().position(|(t, _, _)| t == target) {
            Some(i) => i,
            None => {
                self.groups
                    .push((target.clone(), Vec::with_capacity(self.capacity), 0));
                self.groups.len() - 1
            }
        };
        let (_, body, frames) = &mut self.groups[i];
        syslog_stream::push_stored(body, frame.kind, frame.bytes);
        *frames += 1;
    }
}

struct Connection {
    server: Arc<Server>,
    options: Arc<SyslogOptions>,
    peer: SocketAddr,
    shutdown: CancellationToken,
    /// The last token looked up, its route and when.
    cache: Option<(Vec<u8>, Routed, Instant)>,
    /// Route of the oversized frame being passed on in parts.
    continuing: Option<Routed>,
    /// Drop reasons already logged for this connection (once each).
    logged: Vec<&'static str>,
}

impl Connection {
    fn new(
        server: Arc<Server>,
        options: Arc<SyslogOptions>,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Connection {
        Connection {
            server,
            options,
            peer,
            shutdown,
            cache: None,
            continuing: None,
            logged: Vec::new(),
        }
    }

    async fn run<S: AsyncRead + Unpin>(mut self, mut stream: S) {
        let mut decoder = Decoder::new(self.options.max_frame);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let idle = self.options.idle_timeout;
        let mut deadline = tokio::time::Instant::now() + idle;
        let reason = loop {
            // Backpressure: read nothing the sink cannot take now.
            if !self.wait_for_sink().await {
                break self.finish(&mut decoder, &mut buf, "shutdown").await;
            }
            buf.reserve(READ_CHUNK);
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => read,
                () = self.shutdown.cancelled() => {
                    break self.finish(&mut decoder, &mut buf, "shutdown").await;
                }
            };
            let end = match read {
                Ok(Ok(0)) => Some("eof"),
                Ok(Ok(n)) => {
                    self.server.metrics.syslog_received_bytes.inc_by(n as u64);
                    None
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %self.peer, error = %e, "syslog read failed");
                    Some("read_error")
                }
                Err(_) => Some("idle_timeout"),
            };
            if let Some(reason) = end {
                break self.finish(&mut decoder, &mut buf, reason).await;
            }
            if self.take_frames(&mut decoder, &mut buf, false).await {
                deadline = tokio::time::Instant::now() + idle;
            }
        };
        self.server
            .metrics
            .syslog_disconnects
            .get_or_create(&ReasonLabel { reason })
            .inc();
        tracing::debug!(peer = %self.peer, reason, "syslog connection closed");
    }

    /// The stream ends: keep what is buffered (a partial frame raw).
    async fn finish(
        &mut self,
        decoder: &mut Decoder,
        buf: &mut BytesMut,
        reason: &'static str,
    ) -> &'static str {
        self.take_frames(decoder, buf, true).await;
        reason
    }

    /// Decode what is buffered, route it and make it durable. True when at
    /// least one frame (or part) was complete.
    async fn take_frames(&mut self, decoder: &mut Decoder, buf: &mut BytesMut, eof: bool) -> bool {
        let received_at_us = now_us();
        let mut batch = Batch {
            groups: Vec::new(),
            capacity: buf.len() + 1024,
        };
        let mut frames = 0u64;
        let used = decoder.decode(&buf[..], eof, |frame| {
            frames += 1;
            match self.route(&frame) {
                Ok(target) => batch.push(&target, &frame),
                Err(reason) => self.dropped(reason),
            }
        });
        buf.advance(used);
        for (target, body, n) in batch.groups {
            let entry = Entry {
                app: target.app.to_string(),
                drain_token: Some(target.token.to_string()),
                frame_id: None,
                msg_count: None,
                received_at_us,
                format: BodyFormat::SyslogFrames,
                body: Bytes::from(body),
            };
            if self.store(entry).await {
                self.server.metrics.syslog_messages.inc_by(n);
            } else {
                self.server
                    .metrics
                    .syslog_dropped
                    .get_or_create(&ReasonLabel { reason: "shutdown" })
                    .inc_by(n);
            }
        }
        frames > 0
    }

    fn route(&mut self, frame: &Frame<'_>) -> Routed {
        if frame.continues {
            return self.continuing.clone().unwrap_or(Err("missing_token"));
        }
        let routed = self.resolve(syslog_stream::hostname(frame.bytes));
        if frame.kind == FrameKind::Oversized {
            self.continuing = Some(routed.clone());
        }
        routed
    }

    fn resolve(&mut self, token: Option<&[u8]>) -> Routed {
        let Some(token) = token else {
            return Err("missing_token");
        };
        if let Some((last, routed, at)) = &self.cache
            && last == token
            && at.elapsed() < ROUTE_CACHE
        {
            return routed.clone();
        }
        let routed = match self.server.routes.app_for_token(token) {
            TokenRoute::App(app) => Ok(Target {
                app: Arc::from(app),
                token: Arc::from(String::from_utf8_lossy(token)),
            }),
            TokenRoute::Unknown => Err("unknown_token"),
            // No routes file (loopback only): HOSTNAME names the app.
            TokenRoute::Open => match std::str::from_utf8(token) {
                Ok(app) if valid_app_name(app) => Ok(Target {
                    app: Arc::from(app),
                    token: Arc::from(app),
                }),
                _ => Err("invalid_app_name"),
            },
        };
        self.cache = Some((token.to_vec(), routed.clone(), Instant::now()));
        routed
    }

    fn dropped(&mut self, reason: &'static str) {
        self.server
            .metrics
            .syslog_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
        if !self.logged.contains(&reason) {
            self.logged.push(reason);
            // The token itself is never logged: it is the drain's only credential.
            tracing::warn!(peer = %self.peer, reason, "dropping syslog frames (see drainpipe_syslog_dropped_messages_total)");
        }
    }

    /// Wait until the sink takes data again; false on shutdown.
    async fn wait_for_sink(&self) -> bool {
        let mut backoff = BACKOFF_START;
        while !self.server.sink.accepts() {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.shutdown.cancelled() => return false,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        true
    }

    /// Make `entry` durable, retrying (and not reading meanwhile) until it
    /// is; false only when the sink has closed for shutdown.
    async fn store(&self, entry: Entry) -> bool {
        let mut backoff = BACKOFF_START;
        loop {
            match self.server.sink.store(entry.clone()).await {
                Ok(()) => return true,
                Err(why) => {
                    if why == crate::input::intake::SHUTTING_DOWN {
                        return false;
                    }
                    tracing::debug!(peer = %self.peer, reason = why, "syslog frames not durable yet; holding the connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
