//! Alertmanager's `POST /api/v2/alerts` body for a rule's due messages.
//!
//! One alert per group: labels `alertname` (the rule) and the group's
//! fields (by default app, source and severity), so Alertmanager's own
//! grouping and silences work on them. `startsAt` is the group's first
//! matching line, `endsAt` its last one plus `resolveAfter`: while lines
//! keep matching, every message pushes `endsAt` on; once they stop, the
//! alert resolves by itself.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::alert::group::Message;
use crate::alert::rules::group_labels;
use crate::alert::slack::thousands;
use crate::alert::tap::utc;
use drainpipe_contract::alerts::GroupKey;

/// The body for `messages` of one rule.
pub(crate) fn payload(
    messages: &[Message],
    group_by: &[GroupKey],
    resolve_after: Duration,
    now_us: i64,
) -> Value {
    let alerts: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut labels = Map::new();
            labels.insert("alertname".into(), Value::from(m.rule.as_ref()));
            for (k, v) in group_labels(group_by, &m.group) {
                labels.insert(k.into(), Value::from(v));
            }
            let samples: Vec<String> = m
                .samples
                .iter()
                .map(|s| format!("{} {} {}", utc(s.ts_us), s.proc_id, s.text))
                .collect();
            // The end counts from now when log timestamps lag (a replayed
            // log), so a fresh message never arrives already resolved.
            let resolve_us = i64::try_from(resolve_after.as_micros()).unwrap_or(i64::MAX);
            let ends = m.last_us.max(now_us).saturating_add(resolve_us);
            json!({
                "labels": labels,
                "annotations": {
                    "summary": format!("{}: {} matching lines", m.rule, thousands(m.count)),
                    "lines": thousands(m.count),
                    "samples": samples.join("\n"),
                },
                "startsAt": utc(m.first_us),
                "endsAt": utc(ends),
            })
        })
        .collect();
    Value::Array(alerts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tap::Sample;
    use std::sync::Arc;

    #[test]
    fn alerts_are_labelled_by_rule_and_group_and_resolve_after_the_last_line() {
        let m = Message {
            rule: Arc::from("h12"),
            group: "shop\u{1f}heroku\u{1f}err".into(),
            count: 3,
            samples: vec![Sample {
                ts_us: 1_781_697_600_000_000,
                proc_id: "router".into(),
                text: "at=error code=H12".into(),
            }],
            first_us: 1_781_697_600_000_000,
            last_us: 1_781_697_660_000_000,
        };
        let body = payload(&[m], &GroupKey::DEFAULT, Duration::from_secs(300), 0);
        let a = &body[0];
        assert_eq!(
            a["labels"],
            json!({"alertname": "h12", "app": "shop", "source": "heroku", "severity": "err"})
        );
        assert_eq!(a["startsAt"], "2026-06-17T12:00:00.000000Z");
        assert_eq!(a["endsAt"], "2026-06-17T12:06:00.000000Z");
        assert_eq!(
            a["annotations"]["samples"],
            "2026-06-17T12:00:00.000000Z router at=error code=H12"
        );
        assert_eq!(a["annotations"]["lines"], "3");
    }
}
