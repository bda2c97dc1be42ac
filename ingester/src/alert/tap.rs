//! The uploader's view of alert rules: while a chunk of the log is encoded
//! into archive lines, every record passes the rules, and matching lines are
//! summed per rule and group. What leaves a chunk is one small summary per
//! group (a count and a few sample lines), so a storm of matching lines
//! costs the alert path no more than a trickle.

use std::collections::HashMap;
use std::sync::Arc;

use crate::alert::rules::RuleSet;
use crate::encode::batch::LineSink;
use crate::encode::record::Record;
use crate::parse::timestamp::{Day, format_utc_us};

/// Longest sample line kept, in bytes; Slack shows 3,000 characters per
/// section, so a longer line would crowd out the others anyway.
pub(crate) const MAX_SAMPLE_BYTES: usize = 1_000;
/// Ends a sample line that was cut.
pub(crate) const TRUNCATED: &str = " …[truncated]";

/// Matching lines of one rule and group, from one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub(crate) rule: Arc<str>,
    /// The group's values, joined (see `Rule::group_key`).
    pub(crate) group: String,
    pub(crate) count: u64,
    pub(crate) samples: Vec<Sample>,
    /// Timestamps of the first and last matching lines, in microseconds.
    pub(crate) first_us: i64,
    pub(crate) last_us: i64,
}

/// One sample line as a message shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub(crate) ts_us: i64,
    pub(crate) proc_id: String,
    pub(crate) text: String,
}

/// Collects the matches of one chunk.
pub(crate) struct Tap {
    rules: Arc<RuleSet>,
    deltas: Vec<Delta>,
    /// Per rule: group key to its place in `deltas`.
    index: Vec<HashMap<String, usize>>,
    key: String,
}

impl Tap {
    pub(crate) fn new(rules: Arc<RuleSet>) -> Self {
        Tap {
            index: vec![HashMap::new(); rules.rules.len()],
            rules,
            deltas: Vec::new(),
            key: String::new(),
        }
    }

    pub(crate) fn finish(self) -> Vec<Delta> {
        self.deltas
    }

    fn see(&mut self, r: &Record<'_>) {
        for (i, rule) in self.rules.rules.iter().enumerate() {
            if !rule.matches(r) {
                continue;
            }
            rule.group_key(r, &mut self.key);
            let at = match self.index[i].get(self.key.as_str()) {
                Some(&at) => at,
                None => {
                    self.deltas.push(Delta {
                        rule: Arc::clone(&rule.name),
                        group: self.key.clone(),
                        count: 0,
                        samples: Vec::new(),
                        first_us: r.log_ts_us,
                        last_us: r.log_ts_us,
                    });
                    self.index[i].insert(self.key.clone(), self.deltas.len() - 1);
                    self.deltas.len() - 1
                }
            };
            let delta = &mut self.deltas[at];
            delta.count += 1;
            delta.first_us = delta.first_us.min(r.log_ts_us);
            delta.last_us = delta.last_us.max(r.log_ts_us);
            if delta.samples.len() < rule.max_samples {
                delta.samples.push(Sample {
                    ts_us: r.log_ts_us,
                    proc_id: r.proc_id.unwrap_or("-").to_owned(),
                    text: sample_text(r.message),
                });
            }
        }
    }
}

/// The message as a sample: whole, or cut with [`TRUNCATED`].
fn sample_text(message: &str) -> String {
    if message.len() <= MAX_SAMPLE_BYTES {
        return message.to_owned();
    }
    format!("{}{TRUNCATED}", clip(message, MAX_SAMPLE_BYTES))
}

/// A timestamp as messages show it: RFC 3339 UTC with microseconds.
pub(crate) fn utc(us: i64) -> String {
    String::from_utf8_lossy(&format_utc_us(us)).into_owned()
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A line sink that writes archive lines into `inner` and shows every
/// record to the tap.
pub(crate) struct Tapped<'a, S> {
    pub(crate) inner: &'a mut S,
    pub(crate) tap: &'a mut Tap,
}

impl<S: LineSink> LineSink for Tapped<'_, S> {
    fn push(&mut self, day: Day, record: &Record<'_>) {
        self.inner.push(day, record);
    }

    fn inspect(&mut self, record: &Record<'_>) {
        self.tap.see(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drainpipe_contract::alerts::AlertRule;

    fn tap(yaml: &str) -> Tap {
        let rules: Vec<AlertRule> = serde_yaml::from_str(yaml).expect("rules");
        Tap::new(Arc::new(RuleSet::compile(&rules).0))
    }

    #[test]
    fn lines_are_summed_per_group_with_the_first_samples() {
        let mut t = tap(
            "- name: errs\n  maxSamples: 2\n  groupBy: [app]\n  destination: {slack: {webhookUrl: 'https://h/a'}}\n",
        );
        for (i, app) in ["a", "b", "a", "a"].iter().enumerate() {
            let msg = format!("line {i}");
            t.see(&Record {
                app,
                log_ts_us: 100 - i as i64,
                message: &msg,
                ..Record::default()
            });
        }
        let deltas = t.finish();
        assert_eq!(deltas.len(), 2);
        let a = &deltas[0];
        assert_eq!((a.group.as_str(), a.count), ("a", 3));
        assert_eq!((a.first_us, a.last_us), (97, 100));
        let texts: Vec<&str> = a.samples.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, vec!["line 0", "line 2"]);
        assert_eq!((deltas[1].group.as_str(), deltas[1].count), ("b", 1));
    }

    #[test]
    fn clip_keeps_whole_characters() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("héllo", 3), "hé");
        assert_eq!(clip("abc", 10), "abc");
        let long = "x".repeat(MAX_SAMPLE_BYTES + 1);
        assert_eq!(
            sample_text(&long),
            format!("{}{TRUNCATED}", &long[..MAX_SAMPLE_BYTES])
        );
    }
}
