//! The alert path's metrics (`drainpipe_alert_*`), registered with the
//! others by `Metrics::new` (metrics.rs). Labels carry rule names and
//! Slack's error words, never a URL.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleReasonLabel {
    pub rule: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleCodeLabel {
    pub rule: String,
    pub code: String,
}

#[derive(Default)]
pub struct AlertMetrics {
    pub matched: Family<RuleLabel, Counter>,
    pub sent: Family<RuleLabel, Counter>,
    pub dropped: Family<RuleReasonLabel, Counter>,
    pub errors: Family<RuleCodeLabel, Counter>,
    /// 1 while Slack's answer (403, 404, 410) keeps the rule's destination
    /// off; the series goes away once the destination is tried again.
    pub disabled: Family<RuleReasonLabel, Gauge>,
    /// Rules in the routes file that the ingester refused.
    pub invalid_rules: Gauge,
}

impl AlertMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "alert_lines_matched",
            "Log lines that matched an alert rule, by rule",
            self.matched.clone(),
        );
        registry.register(
            "alert_messages_sent",
            "Messages (Slack posts, Alertmanager alerts) the destination accepted, by rule",
            self.sent.clone(),
        );
        registry.register(
            "alert_lines_dropped",
            "Matching lines not delivered, by rule and reason: queue_full, destination_backlog, undeliverable (not accepted within the delivery bound), destination_disabled, rejected, too_many_groups, rule_removed",
            self.dropped.clone(),
        );
        registry.register(
            "alert_destination_errors",
            "Failed deliveries by rule and code: the HTTP status, timeout or connect",
            self.errors.clone(),
        );
        registry.register(
            "alert_destination_disabled",
            "1 while the rule's Slack destination is off after Slack answered 403, 404 or 410 (reason: Slack's error), until its Secret changes",
            self.disabled.clone(),
        );
        registry.register(
            "alert_invalid_rules",
            "Alert rules in the routes file that the ingester refused (see its log)",
            self.invalid_rules.clone(),
        );
    }
}
