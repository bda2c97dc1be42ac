use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use drainpipe_ingester::archive::backend::Archive;
use drainpipe_ingester::archive::direct::{Direct, DirectOptions};
use drainpipe_ingester::archive::uploader::{self, UploaderOptions};
use drainpipe_ingester::config::{AckMode, Config, LogFormat};
use drainpipe_ingester::durable::{Wal, WalOptions};
use drainpipe_ingester::input::dedupe::Dedupe;
use drainpipe_ingester::input::http::{self, Server, Sink};
use drainpipe_ingester::input::routes::Routes;
use drainpipe_ingester::input::syslog::server::{self as syslog_server, SyslogOptions};
use drainpipe_ingester::input::syslog::tls::ReloadingTls;
use drainpipe_ingester::telemetry::metrics::Metrics;

/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const ROUTES_POLL: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logging(config.log_format);
    config.validate()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("drainpipe")
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(config))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRAINPIPE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let routes = match &config.routes {
        Some(path) => {
            let routes = Routes::load(path)?;
            routes.watch(path.clone(), ROUTES_POLL, Arc::clone(&metrics));
            routes
        }
        None => Routes::open(),
    };
    let archive = Arc::new(
        Archive::from_url(&config.archive)
            .await
            .with_context(|| format!("--archive {}", config.archive))?,
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let listen = listener.local_addr().context("listener address")?;
    // Bound (and its certificate loaded) before anything is accepted, so a
    // bad flag fails the start instead of the first connection.
    let syslog = match config.syslog_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for syslog on {addr}"))?;
            let tls = match (&config.syslog_tls_cert, &config.syslog_tls_key) {
                (Some(cert), Some(key)) => Some(Arc::new(
                    ReloadingTls::load(cert, key, Arc::clone(&metrics))
                        .context("--syslog-tls-cert/--syslog-tls-key")?,
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
            let (wal, recovered) = Wal::open(
                &config.data_dir,
                WalOptions {
                    max_bytes: config.wal_max_bytes,
                    segment_bytes: config.wal_segment_bytes,
                    queue: 4096,
                },
                Arc::clone(&metrics),
            )
            .context("cannot open the write-ahead log")?;
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
            let task = uploader::start(
                Arc::clone(&wal),
                Arc::clone(&archive),
                Arc::clone(&metrics),
                UploaderOptions {
                    flush_interval: config.flush_interval,
                    flush_bytes: config.flush_bytes,
                    gzip_level: config.gzip_level,
                    concurrency: config.upload_concurrency as usize,
                    workers: config.workers(),
                },
            )
            .context("cannot start the uploader")?;
            (Sink::Wal(wal), Some(task))
        }
        AckMode::Archive => {
            let direct = Direct::start(
                Arc::clone(&archive),
                Arc::clone(&metrics),
                DirectOptions {
                    gzip_level: config.gzip_level,
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
    let auth = match routes.app_count() {
        Some(n) => format!(
            "{n} apps from {}",
            config
                .routes
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        ),
        None => "any app, no authentication (no --routes)".to_owned(),
    };
    tracing::info!(
        "drainpipe-ingester listening on http://{listen}, archiving to {}, ack={}, accepting {auth}",
        archive.describe(),
        match config.ack {
            AckMode::Wal => format!("wal (log in {})", config.data_dir.display()),
            AckMode::Archive => "archive".to_owned(),
        },
    );

    let shutdown = CancellationToken::new();
    let syslog_serving = match syslog {
        Some((listener, tls)) => {
            let addr = listener.local_addr().context("syslog listener address")?;
            tracing::info!(
                "syslog drains on {}://{addr} (max frame {} bytes, {} connections, {} per peer, idle timeout {:?})",
                if tls.is_some() { "tls" } else { "tcp" },
                config.syslog_max_frame,
                config.syslog_max_connections,
                config.syslog_max_connections_per_peer,
                config.syslog_idle_timeout,
            );
            Some(tokio::spawn(syslog_server::serve(
                listener,
                tls,
                Arc::clone(&server),
                SyslogOptions {
                    max_connections: config.syslog_max_connections as usize,
                    max_connections_per_peer: config.syslog_max_connections_per_peer as usize,
                    idle_timeout: config.syslog_idle_timeout,
                    max_frame: usize::try_from(config.syslog_max_frame).unwrap_or(usize::MAX),
                },
                shutdown.clone(),
                SHUTDOWN_GRACE,
            )))
        }
        None => None,
    };
    let serving = tokio::spawn(http::serve(
        listener,
        Arc::clone(&server),
        shutdown.clone(),
        SHUTDOWN_GRACE,
    ));
    wait_for_signal().await?;
    tracing::info!("shutting down: finishing requests, then flushing everything to the archive");
    server.set_unready();
    shutdown.cancel();
    serving.await.context("server task")?;
    if let Some(task) = syslog_serving {
        task.await.context("syslog task")?;
    }
    match &server.sink {
        Sink::Wal(wal) => {
            wal.close().await;
            if let Some(task) = uploader {
                task.await.context("uploader task")?;
            }
        }
        Sink::Archive(direct) => direct.close().await,
    }
    tracing::info!("everything is in the archive; bye");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
