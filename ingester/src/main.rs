//! The `drainpipe-ingester` binary: flags, logging, the runtime and signals
//! around the library's [`drainpipe_ingester::run`].

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use drainpipe_ingester::compact::CompactConfig;
use drainpipe_ingester::config::{Command, Config, LogFormat};

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(Command::Compact(compact)) = &config.command {
        // Its stdout is the report; its own log goes to stderr.
        init_logging(config.log_format, std::io::stderr);
        std::process::exit(run_compact(compact));
    }
    init_logging(config.log_format, std::io::stdout);
    config.validate()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("drainpipe")
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

/// `compact`: the report on stdout (and in `--report`), and the exit code
/// the Job's status shows: 0 done, 1 a partition failed, 2 cannot run.
fn run_compact(config: &CompactConfig) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("drainpipe-compact")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return 2;
        }
    };
    let report = match runtime.block_on(drainpipe_ingester::compact::run(config)) {
        Ok(report) => report,
        Err(e) => {
            tracing::error!(error = %e, "compact cannot run");
            return 2;
        }
    };
    let json = serde_json::to_string(&report).unwrap_or_default();
    println!("{json}");
    if let Some(path) = &config.report
        && let Err(e) = std::fs::write(path, &json)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the compaction report file");
    }
    tracing::info!(
        partitions = report.partitions_compacted,
        objects_merged = report.objects_merged,
        objects_written = report.objects_written,
        bytes_before = report.bytes_before,
        bytes_after = report.bytes_after,
        records_verified = report.records_verified,
        failed = report.partitions_failed,
        "compaction finished"
    );
    if report.succeeded() { 0 } else { 1 }
}

fn init_logging<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRAINPIPE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Run until SIGTERM or SIGINT, then shut down gracefully; or, with
/// `--flush-and-exit`, empty the log and exit.
async fn serve(config: Config) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM that arrives while the log is recovered or
    // right after the listeners open must still mean a graceful stop, not
    // the default action (exit at once, nothing flushed).
    let signals = Signals::install()?;
    if config.flush_and_exit {
        return flush(config, signals).await;
    }
    let shutdown = CancellationToken::new();
    let running = drainpipe_ingester::run(config, shutdown.clone()).await?;
    signals.wait().await;
    shutdown.cancel();
    running.wait().await?;
    Ok(())
}

/// `--flush-and-exit` until the log is empty, or until SIGTERM or SIGINT (the
/// flush Job's pod evicted or deleted). A signal fails the flush with a line
/// saying so, instead of the process vanishing by the signal: what is not yet
/// uploaded stays in the log, which survives being stopped anywhere (as after
/// kill -9), for the next flush.
async fn flush(config: Config, signals: Signals) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    tokio::select! {
        flushed = drainpipe_ingester::flush(config, None) => {
            let flushed = flushed.context("--flush-and-exit")?;
            tracing::info!(
                requests = flushed.requests,
                bytes = flushed.bytes,
                "the write-ahead log is empty: everything is in the archive"
            );
            Ok(())
        }
        () = signals.wait() => anyhow::bail!(
            "--flush-and-exit: stopped by a signal before the write-ahead log in {} was empty; \
             what is left stays there for the next flush",
            data_dir.display()
        ),
    }
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
