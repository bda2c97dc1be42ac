//! Command line and environment configuration.
//!
//! Every flag can also be set through a `DRAINPIPE_*` environment variable so
//! the same binary is configured by a Kubernetes Deployment without a shell.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use drainpipe_contract::schema::ArchiveFormat;
use drainpipe_contract::units::{parse_duration, parse_size};

use crate::archive::objects::ObjectFormat;
use crate::compact::parse_format;

/// When a request is answered 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    /// After the body is fsynced in the local write-ahead log.
    Wal,
    /// After the object holding the body is stored in the archive.
    Archive,
}

/// Shape of the ingester's own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// drainpipe ingester: receives Heroku Logplex drains and archives them as
/// gzip JSON lines or Parquet, partitioned by app and UTC day.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "drainpipe-ingester",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Config {
    /// `compact`: merge closed days' objects (see `compact --help`).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the HTTP listener (drains, /healthz, /readyz, /metrics).
    #[arg(long, env = "DRAINPIPE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where objects go: `file:///abs/path`, `file://./relative/path` or
    /// `s3://bucket/prefix/` (prefix defaults to `logs/`).
    #[arg(long, env = "DRAINPIPE_ARCHIVE", default_value = "file://./archive")]
    pub archive: String,

    /// How often the ingester proves it can write to the archive: a small
    /// object under `{prefix}_drainpipe-probe/`, written and deleted, at
    /// start-up and then at this interval (`drainpipe_archive_writable`).
    #[arg(long, env = "DRAINPIPE_ARCHIVE_PROBE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub archive_probe_interval: Duration,

    /// Directory of the write-ahead log (`--ack wal`).
    #[arg(long, env = "DRAINPIPE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Routes file (YAML) listing the accepted apps, their passwords and
    /// drain tokens; re-read when it changes. Without it any app is accepted
    /// without authentication, and only on a loopback address.
    #[arg(long, env = "DRAINPIPE_ROUTES")]
    pub routes: Option<PathBuf>,

    /// When to answer 200: `wal` (fsynced locally) or `archive` (stored).
    #[arg(long, env = "DRAINPIPE_ACK", value_enum, default_value = "wal")]
    pub ack: AckMode,

    /// Object format: `json` (gzip JSON lines under `{prefix}{app}/`) or
    /// `parquet` (ZSTD Parquet under `{prefix}format=parquet/{app}/`; rows
    /// sorted by time; an open object holds its rows uncompressed, at most
    /// --flush-bytes per worker).
    #[arg(long, env = "DRAINPIPE_FORMAT", default_value = "json", value_parser = parse_format)]
    pub format: ArchiveFormat,

    /// Close an archive object this long after its first record.
    #[arg(long, env = "DRAINPIPE_FLUSH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// Close an archive object once it holds this much JSON (uncompressed),
    /// or this much Arrow data for Parquet.
    #[arg(long, env = "DRAINPIPE_FLUSH_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub flush_bytes: u64,

    /// Largest accepted request body; larger requests get 413.
    #[arg(long, env = "DRAINPIPE_MAX_BODY", default_value = "16MiB", value_parser = parse_size)]
    pub max_body: u64,

    /// Bound of the write-ahead log on disk; past it requests get 503 until
    /// the uploader catches up.
    #[arg(long, env = "DRAINPIPE_WAL_MAX_BYTES", default_value = "1GiB", value_parser = parse_size)]
    pub wal_max_bytes: u64,

    /// Size at which the write-ahead log starts a new segment file.
    #[arg(long, env = "DRAINPIPE_WAL_SEGMENT_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub wal_segment_bytes: u64,

    /// Request bodies held in memory at once (being received or waiting for
    /// the log); past it requests wait briefly, then get 503.
    #[arg(long, env = "DRAINPIPE_MAX_INFLIGHT_BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub max_inflight_bytes: u64,

    /// gzip level of archive objects (0-9).
    #[arg(long, env = "DRAINPIPE_GZIP_LEVEL", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub gzip_level: u32,

    /// Uploads running at once.
    #[arg(long, env = "DRAINPIPE_UPLOAD_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub upload_concurrency: u32,

    /// Threads that parse and compress the log into objects (default: one
    /// per core, at most 8).
    #[arg(long, env = "DRAINPIPE_WORKERS", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Option<u32>,

    /// How many acknowledged (drain token, frame id) pairs are remembered to
    /// answer Logplex retries without storing them twice.
    #[arg(long, env = "DRAINPIPE_DEDUPE_CAPACITY", default_value_t = 100_000)]
    pub dedupe_capacity: usize,

    /// Format of the ingester's own logs.
    #[arg(long, env = "DRAINPIPE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Address of the syslog-drain listener (TCP, or TLS with
    /// --syslog-tls-cert/--syslog-tls-key): octet-counted RFC 5424 with the
    /// drain token as HOSTNAME. Off unless set.
    #[arg(long, env = "DRAINPIPE_SYSLOG_LISTEN")]
    pub syslog_listen: Option<SocketAddr>,

    /// PEM certificate chain for syslog over TLS (TLS 1.2 and 1.3); re-read
    /// when the file changes.
    #[arg(long, env = "DRAINPIPE_SYSLOG_TLS_CERT", requires = "syslog_tls_key")]
    pub syslog_tls_cert: Option<PathBuf>,

    /// PEM private key of --syslog-tls-cert; re-read when the file changes.
    #[arg(long, env = "DRAINPIPE_SYSLOG_TLS_KEY", requires = "syslog_tls_cert")]
    pub syslog_tls_key: Option<PathBuf>,

    /// Syslog connections open at once; more are closed at once.
    #[arg(long, env = "DRAINPIPE_SYSLOG_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub syslog_max_connections: u32,

    /// Syslog connections open at once from one IP address.
    #[arg(long, env = "DRAINPIPE_SYSLOG_MAX_CONNECTIONS_PER_PEER", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub syslog_max_connections_per_peer: u32,

    /// A syslog connection that delivers no complete frame for this long
    /// is closed (silent or trickling peers cannot hold it forever).
    #[arg(long, env = "DRAINPIPE_SYSLOG_IDLE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub syslog_idle_timeout: Duration,

    /// Longest syslog frame kept whole; a longer one is archived raw in parts
    /// of this size with `parse_error` set. Bounds each connection's memory.
    #[arg(long, env = "DRAINPIPE_SYSLOG_MAX_FRAME", default_value = "64KiB", value_parser = parse_size)]
    pub syslog_max_frame: u64,

    /// After SIGTERM, keep accepting requests this long with `/readyz`
    /// answering 503 (and `/healthz` 200), so load balancers that follow
    /// readiness stop sending before the listeners close; then finish
    /// requests in flight and flush everything. `0s` (default) closes the
    /// listeners at once (on Kubernetes the pod's `preStop` sleep covers
    /// endpoint propagation instead).
    #[arg(long, env = "DRAINPIPE_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// A connection older than this is closed: an HTTP/1.1 keep-alive one
    /// after the request it carries (`Connection: close`), an OTLP/gRPC
    /// (HTTP/2) one by a GOAWAY, which lets its calls in flight finish. So
    /// senders open new connections and a Service or L4 load balancer
    /// spreads them over pods that started since (Logplex and the OTLP
    /// exporters keep one connection per drain for as long as it is open).
    /// `0s` never closes.
    #[arg(long, env = "DRAINPIPE_MAX_CONNECTION_AGE", default_value = "60s", value_parser = parse_duration)]
    pub max_connection_age: Duration,

    /// Open no listener: upload everything the write-ahead log in
    /// `--data-dir` holds to `--archive`, then exit 0 once the log is
    /// empty, non-zero when it is not (archive unreachable within
    /// `--flush-timeout`, or stopped by SIGTERM). For a buffer volume no ingester mounts any more
    /// (the operator's flush Job on a released claim).
    #[arg(long, env = "DRAINPIPE_FLUSH_AND_EXIT")]
    pub flush_and_exit: bool,

    /// How long `--flush-and-exit` tries before giving up with a non-zero
    /// exit (the log is left as it is; nothing is lost).
    #[arg(long, env = "DRAINPIPE_FLUSH_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub flush_timeout: Duration,

    /// Address of the OTLP/gRPC listener (Fir telemetry drains registered
    /// with `--transport grpc`): LogsService/Export over HTTP/2, or TLS with
    /// --otlp-grpc-tls-cert/--otlp-grpc-tls-key. Off unless set.
    #[arg(long, env = "DRAINPIPE_OTLP_GRPC_LISTEN")]
    pub otlp_grpc_listen: Option<SocketAddr>,

    /// PEM certificate chain for OTLP/gRPC over TLS (ALPN h2); re-read when
    /// the file changes.
    #[arg(
        long,
        env = "DRAINPIPE_OTLP_GRPC_TLS_CERT",
        requires = "otlp_grpc_tls_key"
    )]
    pub otlp_grpc_tls_cert: Option<PathBuf>,

    /// PEM private key of --otlp-grpc-tls-cert; re-read when the file changes.
    #[arg(
        long,
        env = "DRAINPIPE_OTLP_GRPC_TLS_KEY",
        requires = "otlp_grpc_tls_cert"
    )]
    pub otlp_grpc_tls_key: Option<PathBuf>,
}

/// A configuration that parses but cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--listen {0}: without --routes every app is accepted without authentication, so the ingester only listens on a loopback address; give a routes file or listen on 127.0.0.1"
    )]
    OpenOnNonLoopback(SocketAddr),
    #[error(
        "--syslog-listen {0}: without --routes syslog drain tokens cannot be checked, so the syslog listener only listens on a loopback address; give a routes file or listen on 127.0.0.1"
    )]
    SyslogOpenOnNonLoopback(SocketAddr),
    #[error("--syslog-tls-cert and --syslog-tls-key need --syslog-listen")]
    SyslogTlsWithoutListener,
    #[error(
        "--otlp-grpc-listen {0}: without --routes every app is accepted without authentication, so the OTLP/gRPC listener only listens on a loopback address; give a routes file or listen on 127.0.0.1"
    )]
    OtlpGrpcOpenOnNonLoopback(SocketAddr),
    #[error("--otlp-grpc-tls-cert and --otlp-grpc-tls-key need --otlp-grpc-listen")]
    OtlpGrpcTlsWithoutListener,
    #[error("--syslog-max-frame must be between 1 KiB and 16 MiB")]
    SyslogMaxFrame,
    #[error("--flush-bytes must be at least 1 KiB")]
    FlushBytesTooSmall,
    #[error("--max-body must be between 1 KiB and --max-inflight-bytes")]
    MaxBody,
    #[error("--wal-segment-bytes must be at least 1 MiB and at most --wal-max-bytes")]
    SegmentBytes,
    #[error("--archive-probe-interval must be at least 1s")]
    ProbeInterval,
}

/// Subcommands beside the server.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Merge each closed UTC day's small objects into few large ones (and,
    /// with `--format parquet`, convert closed JSON days into Parquet), then
    /// exit: 0 when every partition is done, 1 when one failed, 2 when the
    /// configuration is wrong. Safe to kill at any point and run again.
    Compact(crate::compact::CompactConfig),
}

impl Config {
    /// How the archive objects are written.
    pub fn object_format(&self) -> ObjectFormat {
        ObjectFormat {
            format: self.format,
            gzip_level: self.gzip_level,
        }
    }

    /// Parse-and-compress threads to run.
    pub fn workers(&self) -> usize {
        match self.workers {
            Some(n) => n as usize,
            None => std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
        }
    }

    /// Checks that need more than one flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.routes.is_none() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::OpenOnNonLoopback(self.listen));
        }
        if let Some(addr) = self.syslog_listen
            && self.routes.is_none()
            && !addr.ip().is_loopback()
        {
            return Err(ConfigError::SyslogOpenOnNonLoopback(addr));
        }
        if self.syslog_listen.is_none()
            && (self.syslog_tls_cert.is_some() || self.syslog_tls_key.is_some())
        {
            return Err(ConfigError::SyslogTlsWithoutListener);
        }
        if let Some(addr) = self.otlp_grpc_listen
            && self.routes.is_none()
            && !addr.ip().is_loopback()
        {
            return Err(ConfigError::OtlpGrpcOpenOnNonLoopback(addr));
        }
        if self.otlp_grpc_listen.is_none()
            && (self.otlp_grpc_tls_cert.is_some() || self.otlp_grpc_tls_key.is_some())
        {
            return Err(ConfigError::OtlpGrpcTlsWithoutListener);
        }
        if !(1 << 10..=16 << 20).contains(&self.syslog_max_frame) {
            return Err(ConfigError::SyslogMaxFrame);
        }
        if self.flush_bytes < 1024 {
            return Err(ConfigError::FlushBytesTooSmall);
        }
        if self.max_body < 1024 || self.max_body > self.max_inflight_bytes {
            return Err(ConfigError::MaxBody);
        }
        if self.wal_segment_bytes < 1 << 20 || self.wal_segment_bytes > self.wal_max_bytes {
            return Err(ConfigError::SegmentBytes);
        }
        if self.archive_probe_interval < Duration::from_secs(1) {
            return Err(ConfigError::ProbeInterval);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::try_parse_from(["drainpipe-ingester"]).expect("defaults parse");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.archive, "file://./archive");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.ack, AckMode::Wal);
        assert_eq!(c.flush_interval, Duration::from_secs(60));
        assert_eq!(c.flush_bytes, 64 << 20);
        assert_eq!(c.max_body, 16 << 20);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.archive_probe_interval, Duration::from_secs(300));
        c.validate().expect("defaults are valid");
        let c = Config::try_parse_from(["x", "--archive-probe-interval", "500ms"]).expect("parses");
        assert!(c.validate().is_err(), "probing more than once a second");
    }

    #[test]
    fn open_mode_refuses_non_loopback() {
        let c = Config::try_parse_from(["x", "--listen", "0.0.0.0:8080"]).expect("parses");
        let err = c.validate().expect_err("must refuse");
        assert!(err.to_string().contains("loopback"), "{err}");
        let c = Config::try_parse_from(["x", "--listen", "0.0.0.0:8080", "--routes", "r.yaml"])
            .expect("parses");
        c.validate().expect("routes make it valid");
        let c = Config::try_parse_from(["x", "--listen", "[::1]:8080"]).expect("parses");
        c.validate().expect("v6 loopback is fine");
    }

    #[test]
    fn syslog_flags() {
        let c = Config::try_parse_from(["x"]).expect("parses");
        assert_eq!(c.syslog_listen, None);
        assert_eq!(c.syslog_max_frame, 64 << 10);
        assert_eq!(c.syslog_idle_timeout, Duration::from_secs(600));
        // Open mode (no routes): loopback only, as for HTTP.
        let c = Config::try_parse_from(["x", "--syslog-listen", "0.0.0.0:6514"]).expect("parses");
        let err = c.validate().expect_err("open mode on all interfaces");
        assert!(err.to_string().contains("loopback"), "{err}");
        let c = Config::try_parse_from([
            "x",
            "--syslog-listen",
            "0.0.0.0:6514",
            "--routes",
            "r.yaml",
            "--syslog-tls-cert",
            "c.pem",
            "--syslog-tls-key",
            "k.pem",
        ])
        .expect("parses");
        c.validate().expect("valid with routes and TLS");
        assert!(
            Config::try_parse_from(["x", "--syslog-tls-cert", "c.pem"]).is_err(),
            "a certificate needs its key"
        );
        let c = Config::try_parse_from(["x", "--syslog-tls-cert", "c", "--syslog-tls-key", "k"])
            .expect("parses");
        assert!(c.validate().is_err(), "TLS without a listener");
        let c = Config::try_parse_from([
            "x",
            "--syslog-listen",
            "127.0.0.1:6514",
            "--syslog-max-frame",
            "100",
        ])
        .expect("parses");
        assert!(c.validate().is_err(), "tiny frames");
    }

    #[test]
    fn otlp_grpc_flags() {
        let c = Config::try_parse_from(["x"]).expect("parses");
        assert_eq!(c.otlp_grpc_listen, None);
        let c =
            Config::try_parse_from(["x", "--otlp-grpc-listen", "0.0.0.0:4317"]).expect("parses");
        let err = c.validate().expect_err("open mode on all interfaces");
        assert!(err.to_string().contains("loopback"), "{err}");
        let c = Config::try_parse_from([
            "x",
            "--otlp-grpc-listen",
            "0.0.0.0:4317",
            "--routes",
            "r.yaml",
            "--otlp-grpc-tls-cert",
            "c.pem",
            "--otlp-grpc-tls-key",
            "k.pem",
        ])
        .expect("parses");
        c.validate().expect("valid with routes and TLS");
        assert!(
            Config::try_parse_from(["x", "--otlp-grpc-tls-key", "k.pem"]).is_err(),
            "a key needs its certificate"
        );
        let c =
            Config::try_parse_from(["x", "--otlp-grpc-tls-cert", "c", "--otlp-grpc-tls-key", "k"])
                .expect("parses");
        assert!(c.validate().is_err(), "TLS without a listener");
    }
}
