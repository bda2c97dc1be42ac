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

    /// Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
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
}
