//! Prometheus metrics served on `GET /metrics`.
//!
//! One `Metrics` value is shared by every part of the runtime; all metrics
//! are lock-free atomics except the label families, whose label sets are few.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::encode::batch::BatchStats;
use crate::telemetry::alerts::AlertMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

/// A gRPC status code by its canonical name (`OK`, `UNAVAILABLE`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

/// The outcome of the latest archive write probe (`archive/probe.rs`):
/// codes and action names only, never an error's text.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// `written`, `denied` or `failed`.
    pub result: &'static str,
    /// The refused action (`s3:PutObject`, `write`), empty when written.
    pub action: &'static str,
    /// The store's error code (`AccessDenied`, `NoSuchBucket`...).
    pub code: String,
    /// `deleted`, `denied`, `failed`, or empty when nothing was written.
    pub delete: &'static str,
    /// The refused delete action (`s3:DeleteObject`), empty otherwise.
    pub delete_action: &'static str,
}

/// Every metric of the ingester.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<StatusLabel, Counter>,
    pub grpc_requests: Family<CodeLabel, Counter>,
    pub received_bytes: Counter,
    pub messages: Counter,
    pub parse_errors: Counter,
    pub invalid_utf8: Counter,
    pub count_mismatches: Counter,
    pub l10_dropped: Counter,
    pub kv_case_collisions: Counter,
    pub duplicate_frames: Counter,
    pub ack_latency: Histogram,
    /// One group commit of the write-ahead log: write and fsync of every
    /// append queued behind the previous one. A request waits for the
    /// commit under way and then its own, so its ack is about two of these
    /// plus receiving its body.
    pub wal_commit_latency: Histogram,
    pub wal_bytes: Gauge,
    /// `--wal-max-bytes`, so an alert can compare `wal_bytes` with it.
    pub wal_max_bytes: Gauge,
    pub wal_segments: Gauge,
    pub wal_write_errors: Counter,
    pub archive_objects: Counter,
    /// Unix time of the newest object stored per app by this process.
    pub archive_last_object: Family<AppLabel, Gauge>,
    pub archive_bytes: Counter,
    pub upload_latency: Histogram,
    pub upload_errors: Counter,
    /// Parquet objects closed early because a worker's open objects held
    /// more than `--flush-bytes` of rows.
    pub objects_closed_for_memory: Counter,
    /// 1 when the latest write probe stored its object, else 0.
    pub archive_writable: Gauge,
    /// Unix time of the latest write probe; 0 before the first.
    pub archive_probe_time: Gauge,
    /// One series: the latest probe's outcome.
    pub archive_probe: Family<ProbeLabels, Gauge>,
    pub routes_reloads: Family<ResultLabel, Counter>,
    pub syslog_connections: Gauge,
    pub syslog_connections_total: Family<ResultLabel, Counter>,
    pub syslog_disconnects: Family<ReasonLabel, Counter>,
    pub syslog_received_bytes: Counter,
    pub syslog_messages: Counter,
    pub syslog_dropped: Family<ReasonLabel, Counter>,
    pub syslog_tls_reloads: Family<ResultLabel, Counter>,
    pub otlp_grpc_tls_reloads: Family<ResultLabel, Counter>,
    pub alerts: AlertMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("drainpipe");
        let m = Metrics {
            requests: Family::default(),
            grpc_requests: Family::default(),
            received_bytes: Counter::default(),
            messages: Counter::default(),
            parse_errors: Counter::default(),
            invalid_utf8: Counter::default(),
            count_mismatches: Counter::default(),
            l10_dropped: Counter::default(),
            kv_case_collisions: Counter::default(),
            duplicate_frames: Counter::default(),
            // 0.5 ms .. ~16 s: fsync on a slow disk and archive round trips.
            ack_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            wal_commit_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            wal_bytes: Gauge::default(),
            wal_max_bytes: Gauge::default(),
            archive_last_object: Family::default(),
            wal_segments: Gauge::default(),
            wal_write_errors: Counter::default(),
            archive_objects: Counter::default(),
            archive_bytes: Counter::default(),
            upload_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            upload_errors: Counter::default(),
            objects_closed_for_memory: Counter::default(),
            archive_writable: Gauge::default(),
            archive_probe_time: Gauge::default(),
            archive_probe: Family::default(),
            routes_reloads: Family::default(),
            alerts: AlertMetrics::default(),
            syslog_connections: Gauge::default(),
            syslog_connections_total: Family::default(),
            syslog_disconnects: Family::default(),
            syslog_received_bytes: Counter::default(),
            syslog_messages: Counter::default(),
            syslog_dropped: Family::default(),
            syslog_tls_reloads: Family::default(),
            otlp_grpc_tls_reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "Logplex drain requests answered, by HTTP status",
            m.requests.clone(),
        );
        registry.register(
            "grpc_requests",
            "OTLP/gRPC Export calls answered, by gRPC status code",
            m.grpc_requests.clone(),
        );
        registry.register_with_unit(
            "received",
            "Request body bytes received on drains",
            Unit::Bytes,
            m.received_bytes.clone(),
        );
        registry.register(
            "messages",
            "Messages (frames) written to archive objects",
            m.messages.clone(),
        );
        registry.register(
            "parse_errors",
            "Frames kept raw with parse_error set",
            m.parse_errors.clone(),
        );
        registry.register(
            "kv_case_collisions",
            "logfmt keys folded into an earlier key of the same message that differed only in case (kv keys are lowercase; the last value is kept)",
            m.kv_case_collisions.clone(),
        );
        registry.register(
            "invalid_utf8_messages",
            "Messages that were not valid UTF-8 (message_b64 set)",
            m.invalid_utf8.clone(),
        );
        registry.register(
            "msg_count_mismatches",
            "Requests whose Logplex-Msg-Count differs from the frames found",
            m.count_mismatches.clone(),
        );
        registry.register(
            "logplex_dropped_messages",
            "Messages Logplex reports dropped (Error L10)",
            m.l10_dropped.clone(),
        );
        registry.register(
            "duplicate_frames",
            "Retried frames already acknowledged, answered 200 and not stored again",
            m.duplicate_frames.clone(),
        );
        registry.register_with_unit(
            "ack_latency",
            "Time from request start to a 200",
            Unit::Seconds,
            m.ack_latency.clone(),
        );
        registry.register_with_unit(
            "wal_commit_latency",
            "Time of one write-ahead log group commit (write and fsync of every append queued behind the previous one)",
            Unit::Seconds,
            m.wal_commit_latency.clone(),
        );
        registry.register_with_unit(
            "wal",
            "Write-ahead log size on disk",
            Unit::Bytes,
            m.wal_bytes.clone(),
        );
        registry.register_with_unit(
            "wal_max",
            "Bound of the write-ahead log (--wal-max-bytes): at it, requests are answered 503",
            Unit::Bytes,
            m.wal_max_bytes.clone(),
        );
        registry.register(
            "wal_segments",
            "Write-ahead log segment files on disk",
            m.wal_segments.clone(),
        );
        registry.register(
            "wal_write_errors",
            "Failed write-ahead log writes or fsyncs (requests answered 503)",
            m.wal_write_errors.clone(),
        );
        registry.register(
            "archive_objects",
            "Objects stored in the archive",
            m.archive_objects.clone(),
        );
        registry.register_with_unit(
            "archive_last_object_timestamp",
            "Unix time when this process last stored an object of the app",
            Unit::Seconds,
            m.archive_last_object.clone(),
        );
        registry.register_with_unit(
            "archive",
            "Compressed bytes stored in the archive",
            Unit::Bytes,
            m.archive_bytes.clone(),
        );
        registry.register_with_unit(
            "upload_latency",
            "Time to store one object (successful attempts)",
            Unit::Seconds,
            m.upload_latency.clone(),
        );
        registry.register(
            "upload_errors",
            "Failed attempts to store an object (retried)",
            m.upload_errors.clone(),
        );
        registry.register(
            "objects_closed_for_memory",
            "Parquet objects closed before their age or size because one worker's open objects held more than --flush-bytes of rows",
            m.objects_closed_for_memory.clone(),
        );
        registry.register(
            "archive_writable",
            "1 when the latest write probe stored an object under the archive prefix, 0 when it was refused (see drainpipe_archive_probe_info)",
            m.archive_writable.clone(),
        );
        registry.register_with_unit(
            "archive_probe_timestamp",
            "Unix time of the latest archive write probe; 0 before the first",
            Unit::Seconds,
            m.archive_probe_time.clone(),
        );
        registry.register(
            "archive_probe_info",
            "The latest archive write probe: result (written, denied, failed), the refused action and the store's error code, and whether the probe object was deleted",
            m.archive_probe.clone(),
        );
        registry.register(
            "routes_reloads",
            "Routes file reloads, by result",
            m.routes_reloads.clone(),
        );
        registry.register(
            "syslog_open_connections",
            "Syslog-drain connections open now",
            m.syslog_connections.clone(),
        );
        registry.register(
            "syslog_connections",
            "Syslog-drain connections by outcome of accepting them: accepted, over_limit (global), over_peer_limit, tls_failed",
            m.syslog_connections_total.clone(),
        );
        registry.register(
            "syslog_disconnects",
            "Syslog-drain connections ended, by reason: eof, idle_timeout, read_error, shutdown",
            m.syslog_disconnects.clone(),
        );
        registry.register_with_unit(
            "syslog_received",
            "Bytes read from syslog-drain connections",
            Unit::Bytes,
            m.syslog_received_bytes.clone(),
        );
        registry.register(
            "syslog_messages",
            "Syslog-drain frames made durable (write-ahead log, or archive with --ack archive)",
            m.syslog_messages.clone(),
        );
        registry.register(
            "syslog_dropped_messages",
            "Syslog-drain frames dropped, by reason: unknown_token, missing_token, invalid_app_name (no routes file), shutdown",
            m.syslog_dropped.clone(),
        );
        registry.register(
            "syslog_tls_reloads",
            "Syslog TLS certificate reloads after the files changed, by result",
            m.syslog_tls_reloads.clone(),
        );
        registry.register(
            "otlp_grpc_tls_reloads",
            "OTLP/gRPC TLS certificate reloads after the files changed, by result",
            m.otlp_grpc_tls_reloads.clone(),
        );
        m.alerts.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// Count what the parser reported for one request body.
    pub fn record_batch(&self, stats: &BatchStats) {
        self.messages.inc_by(stats.messages);
        self.parse_errors.inc_by(stats.parse_errors);
        self.invalid_utf8.inc_by(stats.invalid_utf8);
        self.l10_dropped.inc_by(stats.l10_dropped);
        self.kv_case_collisions.inc_by(stats.kv_case_collisions);
        if stats.count_mismatch {
            self.count_mismatches.inc();
        }
    }

    pub fn request(&self, status: u16) {
        self.requests.get_or_create(&StatusLabel { status }).inc();
    }

    pub fn grpc_request(&self, code: &'static str) {
        self.grpc_requests.get_or_create(&CodeLabel { code }).inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_metrics_operators_look_for() {
        let m = Metrics::new();
        m.request(200);
        m.request(200);
        m.request(503);
        m.record_batch(&BatchStats {
            messages: 411,
            parse_errors: 1,
            invalid_utf8: 2,
            l10_dropped: 7,
            kv_case_collisions: 3,
            count_mismatch: true,
        });
        m.ack_latency.observe(0.004);
        m.wal_max_bytes.set(1 << 30);
        m.archive_last_object
            .get_or_create(&AppLabel {
                app: "shop-web".into(),
            })
            .set(1_764_633_600);
        let text = m.render();
        for line in [
            "drainpipe_http_requests_total{status=\"200\"} 2",
            "drainpipe_http_requests_total{status=\"503\"} 1",
            "drainpipe_messages_total 411",
            "drainpipe_parse_errors_total 1",
            "drainpipe_logplex_dropped_messages_total 7",
            "drainpipe_msg_count_mismatches_total 1",
            "drainpipe_kv_case_collisions_total 3",
            "drainpipe_ack_latency_seconds_count 1",
            "drainpipe_wal_bytes 0",
            "drainpipe_wal_max_bytes 1073741824",
            "drainpipe_archive_last_object_timestamp_seconds{app=\"shop-web\"} 1764633600",
            "drainpipe_upload_errors_total 0",
            "drainpipe_duplicate_frames_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
