//! Delivery: the dispatcher task groups what the workers matched and hands
//! due messages to one sender task per rule, which posts them.
//!
//! Every queue here is bounded and every wait has an end, so a slow, failing
//! or hanging destination costs only its own messages: a sender gives a
//! message [`DELIVERY_BOUND`] to be accepted (request timeouts, 429 waits
//! and retries included), then drops it and counts its lines; while it
//! works, the dispatcher drops what does not fit its queue. The workers
//! never wait for any of this (`Alerts::offer` only tries to send).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drainpipe_contract::alerts::{Destination, GroupKey};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::alert::Alerts;
use crate::alert::group::{Grouper, Message};
use crate::alert::slack::{self, Answer};
use crate::alert::tap::Delta;
use crate::alert::{alertmanager, rules::Rule};
use crate::telemetry::alerts::{RuleCodeLabel, RuleLabel, RuleReasonLabel};
use crate::telemetry::metrics::Metrics;

/// How long a message may take to be accepted before it is dropped.
pub(crate) const DELIVERY_BOUND: Duration = Duration::from_secs(60);
/// One request's limit; a hanging destination costs this per attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack's documented rate for an incoming webhook.
const SLACK_PACE: Duration = Duration::from_secs(1);
/// Messages waiting for one rule's sender.
const SENDER_QUEUE: usize = 16;
const TICK: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// When the next request to a destination URL may go, shared by every rule
/// posting to that URL: Slack's limit is per webhook, and several rules
/// often post to one channel.
type Pace = Arc<tokio::sync::Mutex<Instant>>;

/// One rule's sender as the dispatcher sees it.
struct Sender {
    destination: Destination,
    tx: mpsc::Sender<Vec<Message>>,
    task: JoinHandle<()>,
    /// Slack's reason while the destination is off.
    disabled: Arc<Mutex<Option<String>>>,
}

/// Group the workers' matches and feed the senders, until the hub is gone.
pub(crate) async fn dispatch(
    hub: Weak<Alerts>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Vec<Delta>>,
    mut flush_rx: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e.without_url(), "cannot build the HTTP client for alert destinations; alerts are off");
            return;
        }
    };
    let mut grouper = Grouper::default();
    let mut senders: HashMap<Arc<str>, Sender> = HashMap::new();
    let mut paces: HashMap<String, Pace> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                let Some(rules) = hub.upgrade().map(|h| h.rules()) else { break };
                take(batch, &rules.rules, &mut grouper, &metrics);
            }
            Some(done) = flush_rx.recv() => {
                // Matches offered before the request are in the queue.
                while let Ok(batch) = rx.try_recv() {
                    let Some(rules) = hub.upgrade().map(|h| h.rules()) else { break };
                    take(batch, &rules.rules, &mut grouper, &metrics);
                }
                hand_out(grouper.drain(), &senders, &metrics);
                // Closing their queues lets each sender finish what it holds and end.
                let tasks: Vec<JoinHandle<()>> = senders.drain().map(|(_, s)| s.task).collect();
                for task in tasks {
                    let _ = task.await;
                }
                let _ = done.send(());
                return;
            }
            _ = ticker.tick() => {
                let Some(rules) = hub.upgrade().map(|h| h.rules()) else { break };
                sync_senders(&mut senders, &mut paces, &rules.rules, &client, &metrics);
                let (due, orphaned) = grouper.due(Instant::now(), |name| {
                    rules.rules.iter().find(|r| &*r.name == name).map(|r| (r.first_wait, r.min_interval))
                });
                for (rule, n) in orphaned {
                    drop_lines(&metrics, &rule, "rule_removed", n);
                }
                hand_out(due, &senders, &metrics);
            }
        }
    }
    for (_, s) in senders {
        s.task.abort();
    }
}

/// A chunk's matches into their groups; lines of a removed rule or of a
/// group with no room are dropped and counted.
fn take(batch: Vec<Delta>, rules: &[Rule], grouper: &mut Grouper, metrics: &Metrics) {
    let now = Instant::now();
    for delta in batch {
        let rule = Arc::clone(&delta.rule);
        let lines = delta.count;
        let refused = match rules.iter().find(|r| r.name == rule) {
            Some(r) => grouper
                .add(delta, r, now)
                .err()
                .map(|n| (n, "too_many_groups")),
            None => Some((lines, "rule_removed")),
        };
        if let Some((n, reason)) = refused {
            drop_lines(metrics, &rule, reason, n);
        }
    }
}

/// Start, restart (destination or its Secret changed) and stop senders to
/// match the rules. A restarted sender starts enabled.
fn sync_senders(
    senders: &mut HashMap<Arc<str>, Sender>,
    paces: &mut HashMap<String, Pace>,
    rules: &[Rule],
    client: &reqwest::Client,
    metrics: &Arc<Metrics>,
) {
    senders.retain(|name, s| {
        let keep = rules
            .iter()
            .any(|r| r.name == *name && r.destination == s.destination);
        if !keep {
            s.task.abort();
            clear_disabled(metrics, name, &s.disabled);
        }
        keep
    });
    for rule in rules {
        if senders.contains_key(&rule.name) {
            continue;
        }
        let (tx, rx) = mpsc::channel(SENDER_QUEUE);
        let disabled = Arc::new(Mutex::new(None));
        let pace = paces
            .entry(destination_url(&rule.destination).to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Instant::now())));
        let target = Target {
            pace: Arc::clone(pace),
            rule: Arc::clone(&rule.name),
            destination: rule.destination.clone(),
            group_by: rule.group_by.clone(),
            client: client.clone(),
            metrics: Arc::clone(metrics),
            disabled: Arc::clone(&disabled),
        };
        senders.insert(
            Arc::clone(&rule.name),
            Sender {
                destination: rule.destination.clone(),
                tx,
                task: tokio::spawn(target.run(rx)),
                disabled,
            },
        );
    }
    // A URL no sender holds any more.
    paces.retain(|_, pace| Arc::strong_count(pace) > 1);
}

fn destination_url(destination: &Destination) -> &str {
    match destination {
        Destination::Slack(s) => &s.webhook_url,
        Destination::Alertmanager(a) => &a.url,
    }
}

fn clear_disabled(metrics: &Metrics, rule: &str, disabled: &Mutex<Option<String>>) {
    let reason = disabled.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(reason) = reason {
        metrics.alerts.disabled.remove(&RuleReasonLabel {
            rule: rule.to_owned(),
            reason,
        });
    }
}

/// Due messages to their senders: one batch per rule (Alertmanager takes a
/// list; Slack's sender posts them one by one).
fn hand_out(due: Vec<Message>, senders: &HashMap<Arc<str>, Sender>, metrics: &Metrics) {
    let mut by_rule: HashMap<Arc<str>, Vec<Message>> = HashMap::new();
    for m in due {
        by_rule.entry(Arc::clone(&m.rule)).or_default().push(m);
    }
    for (rule, batch) in by_rule {
        let lines: u64 = batch.iter().map(|m| m.count).sum();
        let Some(sender) = senders.get(&rule) else {
            drop_lines(metrics, &rule, "rule_removed", lines);
            continue;
        };
        if sender.tx.try_send(batch).is_err() {
            drop_lines(metrics, &rule, "destination_backlog", lines);
        }
    }
}

pub(crate) fn drop_lines(metrics: &Metrics, rule: &str, reason: &str, lines: u64) {
    if lines == 0 {
        return;
    }
    metrics
        .alerts
        .dropped
        .get_or_create(&RuleReasonLabel {
            rule: rule.to_owned(),
            reason: reason.to_owned(),
        })
        .inc_by(lines);
}

/// One rule's destination and what it needs to post.
struct Target {
    rule: Arc<str>,
    pace: Pace,
    destination: Destination,
    group_by: Vec<GroupKey>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    disabled: Arc<Mutex<Option<String>>>,
}

/// How one attempt ended.
enum Outcome {
    Sent,
    Retry(Duration),
    Gone(String),
    Rejected(String),
}

impl Target {
    async fn run(self, mut rx: mpsc::Receiver<Vec<Message>>) {
        while let Some(batch) = rx.recv().await {
            match &self.destination {
                Destination::Slack(_) => {
                    for m in batch {
                        let lines = m.count;
                        self.deliver(std::slice::from_ref(&m), lines).await;
                    }
                }
                Destination::Alertmanager(_) => {
                    let lines = batch.iter().map(|m| m.count).sum();
                    self.deliver(&batch, lines).await;
                }
            }
        }
    }

    /// Post until accepted, refused for good, or out of time (the wait for
    /// other rules' posts to the same URL included).
    async fn deliver(&self, messages: &[Message], lines: u64) {
        if self.is_disabled() {
            drop_lines(&self.metrics, &self.rule, "destination_disabled", lines);
            return;
        }
        let deadline = Instant::now() + DELIVERY_BOUND;
        let Ok(mut next) = tokio::time::timeout_at(deadline.into(), self.pace.lock()).await else {
            drop_lines(&self.metrics, &self.rule, "undeliverable", lines);
            return;
        };
        let next = &mut *next;
        let mut backoff = Duration::from_secs(1);
        loop {
            if *next > deadline {
                drop_lines(&self.metrics, &self.rule, "undeliverable", lines);
                return;
            }
            tokio::time::sleep_until((*next).into()).await;
            match self.attempt(messages).await {
                Outcome::Sent => {
                    self.metrics
                        .alerts
                        .sent
                        .get_or_create(&RuleLabel {
                            rule: self.rule.to_string(),
                        })
                        .inc_by(messages.len() as u64);
                    if matches!(self.destination, Destination::Slack(_)) {
                        *next = Instant::now() + SLACK_PACE;
                    }
                    return;
                }
                Outcome::Retry(wait) => {
                    // 429 says how long; otherwise back off.
                    let wait = if wait.is_zero() {
                        let w = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        w
                    } else {
                        wait
                    };
                    *next = Instant::now() + wait;
                }
                Outcome::Gone(reason) => {
                    tracing::warn!(rule = %self.rule, %reason, "Slack refused the webhook for good; the rule's destination is off until its Secret changes");
                    self.metrics
                        .alerts
                        .disabled
                        .get_or_create(&RuleReasonLabel {
                            rule: self.rule.to_string(),
                            reason: reason.clone(),
                        })
                        .set(1);
                    *self.disabled.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                    drop_lines(&self.metrics, &self.rule, "destination_disabled", lines);
                    return;
                }
                Outcome::Rejected(reason) => {
                    tracing::warn!(rule = %self.rule, %reason, "the alert destination rejected a message; it is dropped");
                    drop_lines(&self.metrics, &self.rule, "rejected", lines);
                    return;
                }
            }
        }
    }

    fn is_disabled(&self) -> bool {
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    async fn attempt(&self, messages: &[Message]) -> Outcome {
        let request = match &self.destination {
            Destination::Slack(s) => self
                .client
                .post(&s.webhook_url)
                .json(&slack::payload(&messages[0], &self.group_by)),
            Destination::Alertmanager(a) => {
                let url = format!("{}/api/v2/alerts", a.url.trim_end_matches('/'));
                let body = alertmanager::payload(
                    messages,
                    &self.group_by,
                    a.resolve_after().unwrap_or_default(),
                    now_us(),
                );
                let mut request = self.client.post(url).json(&body);
                if let Some(token) = &a.bearer_token {
                    request = request.bearer_auth(token);
                } else if let Some(user) = &a.username {
                    request = request.basic_auth(user, a.password.as_deref());
                }
                request
            }
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let code = if e.is_timeout() { "timeout" } else { "connect" };
                self.error(code);
                tracing::debug!(rule = %self.rule, code, error = %e.without_url(), "alert delivery failed; retrying");
                return Outcome::Retry(Duration::ZERO);
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match tokio::time::timeout(REQUEST_TIMEOUT, response.text()).await {
            Ok(Ok(text)) => text,
            _ => String::new(),
        };
        let answer = slack::answer(status, retry_after.as_deref(), &body);
        if answer != Answer::Sent {
            self.error(&status.to_string());
        }
        match (answer, &self.destination) {
            (Answer::Sent, _) => Outcome::Sent,
            (Answer::RateLimited(wait), _) => Outcome::Retry(wait),
            (Answer::Gone(reason), Destination::Slack(_)) => Outcome::Gone(reason),
            (Answer::Rejected(reason), _) => Outcome::Rejected(reason),
            // Alertmanager behind a proxy may answer 403/404 for a moment:
            // only Slack's answers are final.
            (Answer::Gone(_) | Answer::Failed, _) => Outcome::Retry(Duration::ZERO),
        }
    }

    fn error(&self, code: &str) {
        self.metrics
            .alerts
            .errors
            .get_or_create(&RuleCodeLabel {
                rule: self.rule.to_string(),
                code: code.to_owned(),
            })
            .inc();
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
