//! Alerts from the log stream (`spec.alerts`, rules in the routes file).
//!
//! Rules run after the write-ahead log, never on the acknowledgement path:
//! the uploader's workers show every record they encode to a [`tap::Tap`]
//! and offer what matched to the dispatcher without waiting
//! ([`Alerts::offer`]); grouping and posting happen in tasks of their own
//! (`deliver`). So a slow, failing or hanging destination can delay
//! neither an acknowledgement nor an archive object; what it cannot take
//! within a bound is dropped and counted.
//!
//! - `rules`: compiled rules, matching, group keys;
//! - `tap`: per-chunk sums of matching lines (the workers' side);
//! - `group`: first wait, minimum interval, samples and counts;
//! - `slack`, `alertmanager`: the two payloads and Slack's answers;
//! - `deliver`: the dispatcher and the per-rule senders.

pub(crate) mod alertmanager;
pub(crate) mod deliver;
pub(crate) mod group;
pub(crate) mod rules;
pub(crate) mod slack;
pub(crate) mod tap;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use drainpipe_contract::alerts::AlertRule;
use tokio::sync::{mpsc, oneshot};

use crate::alert::rules::RuleSet;
use crate::alert::tap::Delta;
use crate::telemetry::alerts::RuleLabel;
use crate::telemetry::metrics::Metrics;

/// Chunks' matches waiting for the dispatcher. A chunk's matches are one
/// summary per group, so this is chunks, not lines.
const OFFER_QUEUE: usize = 256;

/// The live rules and the way to the dispatcher; shared by the routes
/// reloader (which sets rules) and the uploader's workers (which match).
pub(crate) struct Alerts {
    rules: RwLock<Arc<RuleSet>>,
    tx: mpsc::Sender<Vec<Delta>>,
    /// Asks the dispatcher to send everything pending and stop.
    flush_tx: mpsc::Sender<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
}

impl Alerts {
    /// The hub, with its dispatcher task started on the current runtime.
    pub(crate) fn start(metrics: Arc<Metrics>) -> Arc<Alerts> {
        let (tx, rx) = mpsc::channel(OFFER_QUEUE);
        let (flush_tx, flush_rx) = mpsc::channel(1);
        let hub = Arc::new(Alerts {
            rules: RwLock::new(Arc::new(RuleSet::default())),
            tx,
            flush_tx,
            metrics,
        });
        // A weak reference: the dispatcher ends with the hub (whose sender
        // closes the queue) instead of keeping it alive.
        tokio::spawn(deliver::dispatch(
            Arc::downgrade(&hub),
            Arc::clone(&hub.metrics),
            rx,
            flush_rx,
        ));
        hub
    }

    /// Replace the rules (a routes file was read). Invalid rules are left
    /// out, logged by name and counted; the others run.
    pub(crate) fn set_rules(&self, rules: &[AlertRule]) {
        let (set, errors) = RuleSet::compile(rules);
        for (name, error) in &errors {
            tracing::error!(rule = %name, %error, "alert rule refused; the other rules run");
        }
        self.metrics
            .alerts
            .invalid_rules
            .set(i64::try_from(errors.len()).unwrap_or(i64::MAX));
        let count = set.rules.len();
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        if count > 0 || !errors.is_empty() {
            tracing::info!(rules = count, refused = errors.len(), "alert rules loaded");
        }
    }

    /// On shutdown, once every record is archived (and so offered): send
    /// what the groups still hold without waiting out `firstWait` or
    /// `minInterval`, for at most `bound`. What is not delivered by then is
    /// lost with the process; the lines themselves are in the archive.
    pub(crate) async fn flush(&self, bound: Duration) {
        let (done, wait) = oneshot::channel();
        if self.flush_tx.send(done).await.is_err() {
            return;
        }
        if tokio::time::timeout(bound, wait).await.is_err() {
            tracing::warn!(
                ?bound,
                "alert messages still being delivered at shutdown are given up"
            );
        }
    }

    /// The rules now in force.
    pub(crate) fn rules(&self) -> Arc<RuleSet> {
        Arc::clone(&self.rules.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Hand a chunk's matches to the dispatcher without waiting; when it is
    /// behind, they are dropped and counted.
    pub(crate) fn offer(&self, deltas: Vec<Delta>) {
        if deltas.is_empty() {
            return;
        }
        for d in &deltas {
            self.metrics
                .alerts
                .matched
                .get_or_create(&RuleLabel {
                    rule: d.rule.to_string(),
                })
                .inc_by(d.count);
        }
        if let Err(e) = self.tx.try_send(deltas) {
            let deltas = match e {
                mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d,
            };
            for d in deltas {
                deliver::drop_lines(&self.metrics, &d.rule, "queue_full", d.count);
            }
        }
    }
}
