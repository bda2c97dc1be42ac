//! The ingester as one call: [`run`] binds the listeners, opens the log,
//! starts the uploader and the servers, and returns the bound addresses; the
//! binary and the in-process tests both start it this way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::alert::Alerts;
use crate::archive::backend::{Archive, ArchiveError};
use crate::archive::direct::{Direct, DirectOptions};
use crate::archive::probe;
use crate::archive::uploader::{self, UploaderOptions};
use crate::config::{AckMode, Config};
use crate::durable::{Recovered, Wal, WalError, WalOptions};
use crate::input::dedupe::Dedupe;
use crate::input::http;
use crate::input::intake::{Server, Sink};
use crate::input::otlp_grpc;
use crate::input::routes::{LoadError, Routes};
use crate::input::syslog::server::{self as syslog_server, SyslogOptions};
use crate::input::tls::{ReloadingTls, TlsError, TlsListener};
use crate::telemetry::metrics::Metrics;

/// How long in-flight requests may take to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const ROUTES_POLL: Duration = Duration::from_secs(1);
/// How long pending alert messages may take to go out at shutdown; within
/// the chart's termination grace, after the archive flush.
const ALERT_FLUSH: Duration = Duration::from_secs(5);

/// Why the ingester did not start. The message says which flag or resource,
/// the source says what went wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Routes(#[from] LoadError),
    #[error("--archive {url}")]
    Archive {
        url: String,
        #[source]
        source: ArchiveError,
    },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listener address")]
    ListenerAddr(#[source] std::io::Error),
    #[error("cannot listen for syslog on {addr}")]
    SyslogListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("syslog listener address")]
    SyslogListenerAddr(#[source] std::io::Error),
    #[error("--syslog-tls-cert/--syslog-tls-key")]
    Tls(#[source] TlsError),
    #[error("cannot listen for OTLP/gRPC on {addr}")]
    OtlpGrpcListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("OTLP/gRPC listener address")]
    OtlpGrpcListenerAddr(#[source] std::io::Error),
    #[error("--otlp-grpc-tls-cert/--otlp-grpc-tls-key")]
    OtlpGrpcTls(#[source] TlsError),
    #[error("cannot open the write-ahead log")]
    Wal(#[source] WalError),
    #[error("cannot start the uploader")]
    Uploader(#[source] std::io::Error),
}

/// Why `--flush-and-exit` did not leave an empty log.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("uploader task")]
    Uploader(#[source] JoinError),
    #[error(
        "the write-ahead log still holds {bytes} bytes after {timeout:?} (is the archive reachable?); it is left as it is"
    )]
    TimedOut { bytes: u64, timeout: Duration },
    #[error("the write-ahead log still holds {bytes} bytes after the upload finished")]
    NotEmpty { bytes: u64 },
}

/// What `--flush-and-exit` found and uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Requests the log held.
    pub requests: u64,
    /// Bytes of log they took.
    pub bytes: u64,
}

/// A task of the running ingester that panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("server task")]
    Server(#[source] JoinError),
    #[error("syslog task")]
    Syslog(#[source] JoinError),
    #[error("OTLP/gRPC task")]
    OtlpGrpc(#[source] JoinError),
    #[error("uploader task")]
    Uploader(#[source] JoinError),
    #[error("shutdown task")]
    Shutdown(#[source] JoinError),
}

/// A started ingester: where it listens, and the task that ends once
/// shutdown was asked for and everything received is in the archive.
#[derive(Debug)]
pub struct Running {
    /// The bound Logplex HTTP (and ops endpoints) address.
    pub http: SocketAddr,
    /// The bound syslog-drain address, when `--syslog-listen` is set.
    pub syslog: Option<SocketAddr>,
    /// The bound OTLP/gRPC address, when `--otlp-grpc-listen` is set.
    pub otlp_grpc: Option<SocketAddr>,
    done: JoinHandle<Result<(), RunError>>,
}

impl Running {
    /// Wait until the ingester has stopped: after `shutdown` (given to
    /// [`run`]) is cancelled, requests are finished and every received
    /// body is stored.
    pub async fn wait(self) -> Result<(), RunError> {
        self.done.await.map_err(RunError::Shutdown)?
    }
}

/// Start the ingester described by `config` (already validated); it runs on
/// the current tokio runtime until `shutdown` is cancelled. Everything that
/// can fail on a bad flag fails here, before anything is accepted.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    start(config, None, shutdown).await
}

/// Like [`run`], with an `s3://` archive reached with `aws` (region,
/// credentials, endpoint) instead of the process environment: for
/// embedding, and for tests that run ingesters with different identities
/// in one process.
pub async fn run_with_aws(
    config: Config,
    aws: aws_config::SdkConfig,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    start(config, Some(aws), shutdown).await
}

/// The archive of `config.archive`, for the ingester and its flush mode.
async fn open_archive(
    config: &Config,
    aws: Option<&aws_config::SdkConfig>,
) -> Result<Arc<Archive>, StartError> {
    let archive = Archive::from_url_with(&config.archive, aws)
        .await
        .map_err(|source| StartError::Archive {
            url: config.archive.clone(),
            source,
        })?;
    Ok(Arc::new(archive))
}

/// `--flush-and-exit`: upload everything the log in `config.data_dir`
/// holds to `config.archive` and return once the log is empty. Nothing is
/// listened on and nothing new is accepted; `Ok` only when no segment is
/// left, so a caller may delete the volume.
pub async fn flush(
    config: Config,
    aws: Option<aws_config::SdkConfig>,
) -> Result<Flushed, FlushError> {
    let metrics = Arc::new(Metrics::new());
    let archive = open_archive(&config, aws.as_ref()).await?;
    let (wal, recovered) = open_wal(&config, &metrics)?;
    tracing::info!(
        segments = recovered.segments,
        requests = recovered.entries,
        bytes = recovered.bytes,
        truncated_bytes = recovered.truncated,
        "flushing the write-ahead log in {} to {}",
        config.data_dir.display(),
        archive.describe(),
    );
    // A flush Job reads no routes file: no rules, nothing to alert on.
    let alerts = Alerts::start(Arc::clone(&metrics));
    let task = start_uploader(&config, &wal, &archive, &metrics, &alerts)?;
    // Closed before anything could be appended: the uploader reads to the
    // end and stores every object, as on a shutdown.
    wal.close().await;
    match tokio::time::timeout(config.flush_timeout, task).await {
        Ok(joined) => joined.map_err(FlushError::Uploader)?,
        Err(_) => {
            return Err(FlushError::TimedOut {
                bytes: wal.bytes(),
                timeout: config.flush_timeout,
            });
        }
    }
    let left = wal.bytes();
    if left > 0 {
        return Err(FlushError::NotEmpty { bytes: left });
    }
    Ok(Flushed {
        requests: recovered.entries,
        bytes: recovered.bytes,
    })
}

fn open_wal(config: &Config, metrics: &Arc<Metrics>) -> Result<(Arc<Wal>, Recovered), StartError> {
    metrics
        .wal_max_bytes
        .set(i64::try_from(config.wal_max_bytes).unwrap_or(i64::MAX));
    Wal::open(
        &config.data_dir,
        WalOptions {
            max_bytes: config.wal_max_bytes,
            segment_bytes: config.wal_segment_bytes,
            queue: 4096,
        },
        Arc::clone(metrics),
    )
    .map_err(StartError::Wal)
}

fn start_uploader(
    config: &Config,
    wal: &Arc<Wal>,
    archive: &Arc<Archive>,
    metrics: &Arc<Metrics>,
    alerts: &Arc<Alerts>,
) -> Result<JoinHandle<()>, StartError> {
    uploader::start(
        Arc::clone(wal),
        Arc::clone(archive),
        Arc::clone(metrics),
        Arc::clone(alerts),
        UploaderOptions {
            flush_interval: config.flush_interval,
            flush_bytes: config.flush_bytes,
            object: config.object_format(),
            concurrency: config.upload_concurrency as usize,
            workers: config.workers(),
        },
    )
    .map_err(StartError::Uploader)
}

async fn start(
    config: Config,
    aws: Option<aws_config::SdkConfig>,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let alerts = Alerts::start(Arc::clone(&metrics));
    let routes = match &config.routes {
        Some(path) => {
            let routes = Routes::load(path)?;
            alerts.set_rules(&routes.alert_rules());
            routes.watch(
                path.clone(),
                ROUTES_POLL,
                Arc::clone(&metrics),
                Arc::clone(&alerts),
            );
            routes
        }
        None => Routes::open(),
    };
    let archive = open_archive(&config, aws.as_ref()).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let listen = listener.local_addr().map_err(StartError::ListenerAddr)?;
    // Bound (and its certificate loaded) before anything is accepted, so a
    // bad flag fails the start instead of the first connection.
    let syslog = match config.syslog_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::SyslogListen { addr, source })?;
            let tls = match (&config.syslog_tls_cert, &config.syslog_tls_key) {
                (Some(cert), Some(key)) => Some(Arc::new(
                    ReloadingTls::load(cert, key, TlsListener::Syslog, Arc::clone(&metrics))
                        .map_err(StartError::Tls)?,
                )),
                _ => None,
            };
            Some((listener, tls))
        }
        None => None,
    };
    let otlp_grpc = match config.otlp_grpc_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::OtlpGrpcListen { addr, source })?;
            let tls = match (&config.otlp_grpc_tls_cert, &config.otlp_grpc_tls_key) {
                (Some(cert), Some(key)) => Some(Arc::new(
                    ReloadingTls::load(cert, key, TlsListener::OtlpGrpc, Arc::clone(&metrics))
                        .map_err(StartError::OtlpGrpcTls)?,
                )),
                _ => None,
            };
            Some((listener, tls))
        }
        None => None,
    };
    let dedupe = Dedupe::new(config.dedupe_capacity);

    let (sink, uploader) = match config.ack {
        AckMode::Wal => {
            let (wal, recovered) = open_wal(&config, &metrics)?;
            if recovered.entries > 0 || recovered.truncated > 0 {
                tracing::info!(
                    segments = recovered.segments,
                    requests = recovered.entries,
                    bytes = recovered.bytes,
                    truncated_bytes = recovered.truncated,
                    "write-ahead log from the previous run: uploading it first"
                );
            }
            dedupe.seed(recovered.frames);
            let task = start_uploader(&config, &wal, &archive, &metrics, &alerts)?;
            (Sink::Wal(wal), Some(task))
        }
        AckMode::Archive => {
            let direct = Direct::start(
                Arc::clone(&archive),
                Arc::clone(&metrics),
                Arc::clone(&alerts),
                DirectOptions {
                    object: config.object_format(),
                    concurrency: config.upload_concurrency as usize,
                },
            );
            (Sink::Archive(direct), None)
        }
    };

    let server = Server::new(
        routes.clone(),
        Arc::clone(&metrics),
        sink,
        dedupe,
        config.max_body,
        config.max_inflight_bytes,
    );
    tracing::info!(
        "drainpipe-ingester listening on http://{listen}, archiving to {}, ack={}, accepting {}",
        archive.describe(),
        match config.ack {
            AckMode::Wal => format!("wal (log in {})", config.data_dir.display()),
            AckMode::Archive => "archive".to_owned(),
        },
        accepting(&routes, config.routes.as_ref()),
    );

    // The servers stop on their own token, cancelled only after readiness
    // is withdrawn, so no probe sees "ready" from a stopping ingester.
    let stop = CancellationToken::new();
    let (syslog_addr, syslog_serving) = match syslog {
        Some((listener, tls)) => {
            let addr = listener
                .local_addr()
                .map_err(StartError::SyslogListenerAddr)?;
            tracing::info!(
                "syslog drains on {}://{addr} (max frame {} bytes, {} connections, {} per peer, idle timeout {:?})",
                if tls.is_some() { "tls" } else { "tcp" },
                config.syslog_max_frame,
                config.syslog_max_connections,
                config.syslog_max_connections_per_peer,
                config.syslog_idle_timeout,
            );
            let serving = tokio::spawn(syslog_server::serve(
                listener,
                tls,
                Arc::clone(&server),
                SyslogOptions {
                    max_connections: config.syslog_max_connections as usize,
                    max_connections_per_peer: config.syslog_max_connections_per_peer as usize,
                    idle_timeout: config.syslog_idle_timeout,
                    max_frame: usize::try_from(config.syslog_max_frame).unwrap_or(usize::MAX),
                },
                stop.clone(),
                SHUTDOWN_GRACE,
            ));
            (Some(addr), Some(serving))
        }
        None => (None, None),
    };
    let (otlp_grpc_addr, otlp_grpc_serving) = match otlp_grpc {
        Some((listener, tls)) => {
            let addr = listener
                .local_addr()
                .map_err(StartError::OtlpGrpcListenerAddr)?;
            tracing::info!(
                "OTLP/gRPC on {}://{addr} (app from x-drainpipe-app metadata)",
                if tls.is_some() { "https" } else { "http" },
            );
            let serving = tokio::spawn(otlp_grpc::serve(
                listener,
                tls,
                Arc::clone(&server),
                stop.clone(),
                SHUTDOWN_GRACE,
                config.max_connection_age,
            ));
            (Some(addr), Some(serving))
        }
        None => (None, None),
    };
    let probing = probe::start(
        Arc::clone(&archive),
        Arc::clone(&metrics),
        config.archive_probe_interval,
        stop.clone(),
    );
    let serving = tokio::spawn(http::serve(
        listener,
        Arc::clone(&server),
        stop.clone(),
        SHUTDOWN_GRACE,
        config.max_connection_age,
    ));
    let shutdown_delay = config.shutdown_delay;
    let stopping_alerts = Arc::clone(&alerts);
    let done = tokio::spawn(async move {
        shutdown.cancelled().await;
        // Readiness first: whatever routes by /readyz stops sending while
        // the listeners still take what is already on its way.
        server.set_unready();
        if !shutdown_delay.is_zero() {
            tracing::info!(
                delay = ?shutdown_delay,
                "shutting down: /readyz answers 503, still accepting until the delay is over"
            );
            tokio::time::sleep(shutdown_delay).await;
        }
        tracing::info!(
            "shutting down: finishing requests, then flushing everything to the archive"
        );
        stop.cancel();
        serving.await.map_err(RunError::Server)?;
        // Stopped with `stop`; a probe cut short is of no consequence.
        let _ = probing.await;
        if let Some(task) = syslog_serving {
            task.await.map_err(RunError::Syslog)?;
        }
        if let Some(task) = otlp_grpc_serving {
            task.await.map_err(RunError::OtlpGrpc)?;
        }
        match &server.sink {
            Sink::Wal(wal) => {
                wal.close().await;
                if let Some(task) = uploader {
                    task.await.map_err(RunError::Uploader)?;
                }
            }
            Sink::Archive(direct) => direct.close().await,
        }
        tracing::info!("everything is in the archive; sending pending alert messages");
        stopping_alerts.flush(ALERT_FLUSH).await;
        tracing::info!("bye");
        Ok(())
    });
    Ok(Running {
        http: listen,
        syslog: syslog_addr,
        otlp_grpc: otlp_grpc_addr,
        done,
    })
}

/// Who the HTTP front accepts, for the start-up line.
fn accepting(routes: &Routes, path: Option<&PathBuf>) -> String {
    match routes.app_count() {
        Some(n) => format!(
            "{n} apps from {}",
            path.map_or(String::new(), |p| p.display().to_string())
        ),
        None => "any app, no authentication (no --routes)".to_owned(),
    }
}
