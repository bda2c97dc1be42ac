//! Prometheus metrics of the operator, served on `--metrics-addr` `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HerokuCallLabels {
    /// `list`, `create`, `delete`.
    pub operation: String,
    /// `ok`, or the error kind (`unauthorized`, `rate_limited`, ...).
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DrainChangeLabels {
    /// `created` or `removed`.
    pub change: String,
}

/// One LogDrain, for the series that are per LogDrain.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LogDrainLabels {
    pub namespace: String,
    pub logdrain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CompactionRunLabels {
    pub namespace: String,
    pub logdrain: String,
    /// `succeeded` or `failed`.
    pub result: String,
}

/// The numbers of one finished compaction run, as its report gave them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CompactionCounts {
    pub(crate) succeeded: bool,
    pub(crate) objects_merged: u64,
    pub(crate) objects_written: u64,
    pub(crate) bytes_before: u64,
    pub(crate) bytes_after: u64,
    pub(crate) records_verified: u64,
}

/// The compaction runs of each LogDrain (`spec.archive.compaction`),
/// counted once per Job.
#[derive(Clone, Default)]
pub(crate) struct CompactionMetrics {
    runs: Family<CompactionRunLabels, Counter>,
    objects_merged: Family<LogDrainLabels, Counter>,
    objects_written: Family<LogDrainLabels, Counter>,
    bytes_before: Family<LogDrainLabels, Counter>,
    bytes_after: Family<LogDrainLabels, Counter>,
    records_verified: Family<LogDrainLabels, Counter>,
    last_success: Family<LogDrainLabels, Gauge<i64, AtomicI64>>,
}

impl CompactionMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "compaction_runs",
            "Compaction runs (Jobs of a LogDrain's compaction CronJob) finished, by result",
            self.runs.clone(),
        );
        registry.register(
            "compaction_objects_merged",
            "Archive objects compaction merged into larger ones (and deleted)",
            self.objects_merged.clone(),
        );
        registry.register(
            "compaction_objects_written",
            "Archive objects compaction wrote",
            self.objects_written.clone(),
        );
        registry.register(
            "compaction_bytes_before",
            "Bytes of the archive objects compaction merged",
            self.bytes_before.clone(),
        );
        registry.register(
            "compaction_bytes_after",
            "Bytes of the archive objects compaction wrote in their place",
            self.bytes_after.clone(),
        );
        registry.register(
            "compaction_records_verified",
            "Records compaction counted in its inputs and found again in the objects it wrote",
            self.records_verified.clone(),
        );
        registry.register(
            "compaction_last_success_timestamp_seconds",
            "When the last successful compaction run of a LogDrain finished (Unix time)",
            self.last_success.clone(),
        );
    }

    /// Counts one finished run of LogDrain `namespace/name`.
    pub(crate) fn run_finished(&self, namespace: &str, name: &str, run: &CompactionCounts) {
        let ld = LogDrainLabels {
            namespace: namespace.to_string(),
            logdrain: name.to_string(),
        };
        let result = if run.succeeded { "succeeded" } else { "failed" };
        self.runs
            .get_or_create(&CompactionRunLabels {
                namespace: namespace.to_string(),
                logdrain: name.to_string(),
                result: result.to_string(),
            })
            .inc();
        self.objects_merged
            .get_or_create(&ld)
            .inc_by(run.objects_merged);
        self.objects_written
            .get_or_create(&ld)
            .inc_by(run.objects_written);
        self.bytes_before
            .get_or_create(&ld)
            .inc_by(run.bytes_before);
        self.bytes_after.get_or_create(&ld).inc_by(run.bytes_after);
        self.records_verified
            .get_or_create(&ld)
            .inc_by(run.records_verified);
    }

    /// The last success as the LogDrain's status records it, so the gauge
    /// survives an operator restart.
    pub(crate) fn last_success(&self, namespace: &str, name: &str, unix: i64) {
        self.last_success
            .get_or_create(&LogDrainLabels {
                namespace: namespace.to_string(),
                logdrain: name.to_string(),
            })
            .set(unix);
    }

    /// Drops LogDrain `namespace/name`'s series (compaction turned off, or
    /// the LogDrain deleted), so no alert waits on a run that never comes.
    pub(crate) fn forget(&self, namespace: &str, name: &str) {
        let ld = LogDrainLabels {
            namespace: namespace.to_string(),
            logdrain: name.to_string(),
        };
        for result in ["succeeded", "failed"] {
            self.runs.remove(&CompactionRunLabels {
                namespace: namespace.to_string(),
                logdrain: name.to_string(),
                result: result.to_string(),
            });
        }
        for family in [
            &self.objects_merged,
            &self.objects_written,
            &self.bytes_before,
            &self.bytes_after,
            &self.records_verified,
        ] {
            family.remove(&ld);
        }
        self.last_success.remove(&ld);
    }
}

/// The operator's metrics; cheap to clone, shared by the controller and the
/// Heroku and Glue call sites.
#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Counter,
    pub(crate) failures: Family<ErrorLabels, Counter>,
    pub(crate) reconcile_duration: Histogram,
    pub(crate) heroku_calls: Family<HerokuCallLabels, Counter>,
    pub(crate) heroku_requests: Counter,
    pub(crate) heroku_remaining: Gauge<i64, AtomicI64>,
    /// Seconds between two periodic drift checks of one app.
    pub check_interval: Gauge<i64, AtomicI64>,
    pub(crate) drain_changes: Family<DrainChangeLabels, Counter>,
    pub glue_updates: Counter,
    pub leader: Gauge<i64, AtomicI64>,
    pub(crate) compaction: CompactionMetrics,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("drainpipe_operator");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration =
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        let heroku_calls = Family::<HerokuCallLabels, Counter>::default();
        let heroku_requests = Counter::default();
        let heroku_remaining = Gauge::<i64, AtomicI64>::default();
        let check_interval = Gauge::<i64, AtomicI64>::default();
        let drain_changes = Family::<DrainChangeLabels, Counter>::default();
        let glue_updates = Counter::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "reconciles",
            "LogDrain reconciles started",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "LogDrain reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one LogDrain reconcile took",
            reconcile_duration.clone(),
        );
        registry.register(
            "heroku_calls",
            "Heroku drain operations (list, create, delete, app_info, telemetry_list, telemetry_create, telemetry_update, telemetry_delete), by outcome",
            heroku_calls.clone(),
        );
        registry.register(
            "heroku_requests",
            "HTTP requests sent to the Heroku API, retries and pages included",
            heroku_requests.clone(),
        );
        registry.register(
            "heroku_ratelimit_remaining",
            "Heroku API requests left in the account's budget (RateLimit-Remaining)",
            heroku_remaining.clone(),
        );
        registry.register(
            "heroku_check_interval_seconds",
            "Seconds between two periodic drift checks of one app's drain, stretched to fit --heroku-budget-share",
            check_interval.clone(),
        );
        registry.register(
            "heroku_drain_changes",
            "Heroku drains created, updated (telemetry drains) or removed",
            drain_changes.clone(),
        );
        registry.register(
            "glue_updates",
            "Glue tables created or updated",
            glue_updates.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let compaction = CompactionMetrics::default();
        compaction.register(&mut registry);
        Metrics {
            reconciles,
            failures,
            reconcile_duration,
            heroku_calls,
            heroku_requests,
            heroku_remaining,
            check_interval,
            drain_changes,
            glue_updates,
            leader,
            compaction,
            registry: Arc::new(registry),
        }
    }

    /// Starts timing one reconcile; the duration is recorded when the guard drops.
    pub(crate) fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.reconcile_duration.clone(),
        }
    }

    pub(crate) fn reconcile_failed(&self, label: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: label.to_string(),
            })
            .inc();
    }

    pub(crate) fn drain_changed(&self, change: &str) {
        self.drain_changes
            .get_or_create(&DrainChangeLabels {
                change: change.to_string(),
            })
            .inc();
    }

    /// Prometheus text exposition, as `/metrics` serves it.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records a reconcile's duration on drop, so early returns are timed too.
pub(crate) struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_by_label() {
        let m = Metrics::new();
        {
            let _t = m.reconcile_started();
        }
        m.reconcile_failed("heroku_unauthorized");
        m.glue_updates.inc();
        let text = m.encode();
        assert!(
            text.contains("drainpipe_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "drainpipe_operator_reconcile_failures_total{error=\"heroku_unauthorized\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("drainpipe_operator_reconcile_duration_seconds_count 1"));
        assert!(text.contains("drainpipe_operator_glue_updates_total 1"));
    }

    #[test]
    fn compaction_series_are_per_logdrain_and_go_with_it() {
        let m = Metrics::new();
        let run = CompactionCounts {
            succeeded: true,
            objects_merged: 1440,
            objects_written: 2,
            bytes_before: 9_000,
            bytes_after: 3_000,
            records_verified: 50_000,
        };
        m.compaction.run_finished("logs", "shop", &run);
        m.compaction.last_success("logs", "shop", 1_765_000_000);
        let text = m.encode();
        for line in [
            "drainpipe_operator_compaction_runs_total{namespace=\"logs\",logdrain=\"shop\",result=\"succeeded\"} 1",
            "drainpipe_operator_compaction_objects_merged_total{namespace=\"logs\",logdrain=\"shop\"} 1440",
            "drainpipe_operator_compaction_bytes_before_total{namespace=\"logs\",logdrain=\"shop\"} 9000",
            "drainpipe_operator_compaction_bytes_after_total{namespace=\"logs\",logdrain=\"shop\"} 3000",
            "drainpipe_operator_compaction_records_verified_total{namespace=\"logs\",logdrain=\"shop\"} 50000",
            "drainpipe_operator_compaction_last_success_timestamp_seconds{namespace=\"logs\",logdrain=\"shop\"} 1765000000",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        m.compaction.forget("logs", "shop");
        assert!(!m.encode().contains("logdrain=\"shop\""));
    }
}
