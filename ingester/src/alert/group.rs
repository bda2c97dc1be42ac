//! Grouping of matching lines into messages, as a plain state machine over
//! the time it is given (so tests need no clock).
//!
//! A group is one rule and one set of `groupBy` values. Its first message
//! waits `firstWait` after its first line, so a burst arrives as one
//! message; later messages come at most one per `minInterval`, each with
//! the first `maxSamples` lines since the last one and the count of the
//! rest. A group that has been quiet for `minInterval` after its last
//! message is forgotten, and its next line starts a new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alert::rules::Rule;
use crate::alert::tap::{Delta, Sample};

/// Groups kept at once over all rules; lines of further groups are dropped
/// (and counted) until old ones are forgotten.
pub(crate) const MAX_GROUPS: usize = 10_000;

/// A message due for a destination: the same summary a chunk gives
/// (count, samples, first and last timestamps), over every line since the
/// group's last message.
pub(crate) type Message = Delta;

#[derive(Debug)]
struct Group {
    pending: Option<Pending>,
    last_sent: Option<Instant>,
}

#[derive(Debug)]
struct Pending {
    since: Instant,
    count: u64,
    samples: Vec<Sample>,
    first_us: i64,
    last_us: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Grouper {
    groups: HashMap<(Arc<str>, String), Group>,
}

impl Grouper {
    /// Take a chunk's lines of one group. `Err(lines)` when the group is
    /// new and there is no room for it.
    pub(crate) fn add(&mut self, delta: Delta, rule: &Rule, now: Instant) -> Result<(), u64> {
        let full = self.groups.len() >= MAX_GROUPS;
        let key = (delta.rule, delta.group);
        let group = match self.groups.get_mut(&key) {
            Some(g) => g,
            None if full => return Err(delta.count),
            None => self.groups.entry(key).or_insert(Group {
                pending: None,
                last_sent: None,
            }),
        };
        let p = group.pending.get_or_insert_with(|| Pending {
            since: now,
            count: 0,
            samples: Vec::new(),
            first_us: delta.first_us,
            last_us: delta.last_us,
        });
        p.count += delta.count;
        p.first_us = p.first_us.min(delta.first_us);
        p.last_us = p.last_us.max(delta.last_us);
        let room = rule.max_samples.saturating_sub(p.samples.len());
        p.samples.extend(delta.samples.into_iter().take(room));
        Ok(())
    }

    /// Messages due at `now`; groups whose rule is gone are dropped and
    /// their pending lines returned as the second value.
    pub(crate) fn due(
        &mut self,
        now: Instant,
        rule: impl Fn(&str) -> Option<(Duration, Duration)>,
    ) -> (Vec<Message>, Vec<(Arc<str>, u64)>) {
        let mut out = Vec::new();
        let mut orphaned = Vec::new();
        self.groups.retain(|(name, group_key), g| {
            let Some((first_wait, min_interval)) = rule(name) else {
                if let Some(p) = &g.pending {
                    orphaned.push((Arc::clone(name), p.count));
                }
                return false;
            };
            let ready = match (&g.pending, g.last_sent) {
                (None, Some(sent)) => {
                    // Quiet since its last message: forget it.
                    return now.duration_since(sent) < min_interval;
                }
                (None, None) => return false,
                (Some(p), None) => now.duration_since(p.since) >= first_wait,
                (Some(_), Some(sent)) => now.duration_since(sent) >= min_interval,
            };
            if ready && let Some(p) = g.pending.take() {
                out.push(Message {
                    rule: Arc::clone(name),
                    group: group_key.clone(),
                    count: p.count,
                    samples: p.samples,
                    first_us: p.first_us,
                    last_us: p.last_us,
                });
                g.last_sent = Some(now);
            }
            true
        });
        out.sort_by(|a, b| (&a.rule, &a.group).cmp(&(&b.rule, &b.group)));
        (out, orphaned)
    }

    /// Every pending message now, whatever its wait (the ingester is
    /// stopping).
    pub(crate) fn drain(&mut self) -> Vec<Message> {
        let mut out: Vec<Message> = self
            .groups
            .drain()
            .filter_map(|((rule, group), g)| {
                g.pending.map(|p| Message {
                    rule,
                    group,
                    count: p.count,
                    samples: p.samples,
                    first_us: p.first_us,
                    last_us: p.last_us,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.rule, &a.group).cmp(&(&b.rule, &b.group)));
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::rules::RuleSet;
    use drainpipe_contract::alerts::AlertRule;

    fn rule() -> RuleSet {
        let rules: Vec<AlertRule> = serde_yaml::from_str(
            "- name: r\n  firstWait: 30s\n  minInterval: 60s\n  maxSamples: 3\n  destination: {slack: {webhookUrl: 'https://h/a'}}\n",
        )
        .expect("rules");
        RuleSet::compile(&rules).0
    }

    fn delta(group: &str, n: u64) -> Delta {
        Delta {
            rule: Arc::from("r"),
            group: group.to_owned(),
            count: n,
            samples: (0..n.min(5))
                .map(|i| Sample {
                    ts_us: i as i64,
                    proc_id: "web.1".into(),
                    text: format!("{group} {i}"),
                })
                .collect(),
            first_us: 0,
            last_us: n as i64,
        }
    }

    #[test]
    fn first_wait_then_one_message_per_interval_with_the_rest_counted() {
        let set = rule();
        let r = &set.rules[0];
        let timing = |_: &str| Some((r.first_wait, r.min_interval));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut g = Grouper::default();
        g.add(delta("a", 4), r, at(0)).expect("room");
        g.add(delta("a", 2), r, at(10)).expect("room");
        assert!(g.due(at(29), timing).0.is_empty(), "first wait");
        let (sent, _) = g.due(at(30), timing);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].count, 6);
        assert_eq!(sent[0].samples.len(), 3, "at most maxSamples");
        // A storm after the first message: nothing before the interval.
        for s in 31..89 {
            g.add(delta("a", 100), r, at(s)).expect("room");
            assert!(g.due(at(s), timing).0.is_empty());
        }
        let (sent, _) = g.due(at(90), timing);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].count, 5800);
        // Quiet for an interval: forgotten; the next line waits firstWait again.
        assert!(g.due(at(150), timing).0.is_empty());
        assert_eq!(g.len(), 0);
        g.add(delta("a", 1), r, at(200)).expect("room");
        assert!(g.due(at(220), timing).0.is_empty());
        assert_eq!(g.due(at(230), timing).0.len(), 1);
        // Stopping: what waits goes now.
        g.add(delta("a", 2), r, at(231)).expect("room");
        g.add(delta("b", 1), r, at(231)).expect("room");
        let drained = g.drain();
        assert_eq!(
            drained
                .iter()
                .map(|m| (m.group.as_str(), m.count))
                .collect::<Vec<_>>(),
            vec![("a", 2), ("b", 1)]
        );
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn groups_are_bounded_and_removed_rules_give_their_lines_back() {
        let set = rule();
        let r = &set.rules[0];
        let now = Instant::now();
        let mut g = Grouper::default();
        for i in 0..MAX_GROUPS {
            g.add(delta(&i.to_string(), 1), r, now).expect("room");
        }
        assert_eq!(g.add(delta("one-too-many", 7), r, now), Err(7));
        g.add(delta("0", 1), r, now)
            .expect("an existing group still takes lines");
        let (sent, orphaned) = g.due(now, |_| None);
        assert!(sent.is_empty());
        assert_eq!(
            orphaned.iter().map(|(_, n)| n).sum::<u64>(),
            MAX_GROUPS as u64 + 1
        );
        assert_eq!(g.len(), 0);
    }
}
