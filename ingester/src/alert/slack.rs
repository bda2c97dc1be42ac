//! Slack incoming-webhook messages: the Block Kit payload of one group's
//! message, kept inside Slack's limits, and what Slack's answers mean.
//!
//! Limits (api.slack.com/reference/block-kit): at most 50 blocks, a section's
//! text at most 3,000 characters, a header's at most 150, at most 10 fields
//! of 2,000. Sample lines are packed into sections line by line; a line that
//! does not fit a section alone is cut with a marker, never mid-character.

use serde_json::{Value, json};

use crate::alert::group::Message;
use crate::alert::rules::group_labels;
use crate::alert::tap::{TRUNCATED, clip, utc};
use drainpipe_contract::alerts::GroupKey;

pub(crate) const MAX_BLOCKS: usize = 50;
pub(crate) const MAX_SECTION_CHARS: usize = 3_000;
const MAX_HEADER_CHARS: usize = 150;
const FENCE: &str = "```";

/// The JSON body posted to the webhook.
pub(crate) fn payload(m: &Message, group_by: &[GroupKey]) -> Value {
    let labels = group_labels(group_by, &m.group);
    let app = labels
        .iter()
        .find(|(k, _)| *k == "app")
        .map_or("", |(_, v)| *v);
    let title = format!(
        "{}: {} matching line{}{}",
        m.rule,
        thousands(m.count),
        if m.count == 1 { "" } else { "s" },
        if app.is_empty() {
            String::new()
        } else {
            format!(" from {app}")
        },
    );
    let mut fields: Vec<Value> = labels
        .iter()
        .map(|(k, v)| mrkdwn(&format!("*{k}*\n{}", escape(v))))
        .collect();
    fields.push(mrkdwn(&format!("*rule*\n{}", escape(&m.rule))));
    fields.push(mrkdwn(&format!("*first*\n{}", utc(m.first_us))));
    fields.push(mrkdwn(&format!("*last*\n{}", utc(m.last_us))));
    fields.truncate(10);

    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip_chars(&title, MAX_HEADER_CHARS)}}),
        json!({"type": "section", "fields": fields}),
    ];
    let more = m.count.saturating_sub(m.samples.len() as u64);
    // Room for the samples: what the header, fields and the count leave.
    let room = MAX_BLOCKS - blocks.len() - 1;
    let lines: Vec<String> = m
        .samples
        .iter()
        .map(|s| {
            // The time of day to milliseconds; the date is in the fields.
            format!("{} {} {}", &utc(s.ts_us)[11..23], s.proc_id, s.text)
        })
        .collect();
    let (sections, left_out) = pack(&lines, room);
    for text in sections {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
    }
    let more = more + left_out as u64;
    if more > 0 {
        blocks.push(json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("and {} more line{}", thousands(more), if more == 1 { "" } else { "s" })}
        ]}));
    }
    json!({"text": title, "blocks": blocks})
}

/// Sample lines as code sections of at most [`MAX_SECTION_CHARS`], at most
/// `room` of them; also how many lines did not fit.
fn pack(lines: &[String], room: usize) -> (Vec<String>, usize) {
    // Characters a section holds between its fences.
    let budget = MAX_SECTION_CHARS - 2 * FENCE.len() - 2;
    let mut sections: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_chars = 0;
    for (i, line) in lines.iter().enumerate() {
        let mut line = escape(&line.replace(FENCE, "'''"));
        let mut chars = line.chars().count();
        if chars > budget {
            line = format!(
                "{}{TRUNCATED}",
                clip_chars(&line, budget - TRUNCATED.chars().count())
            );
            chars = line.chars().count();
        }
        let needed = chars + usize::from(current_chars > 0);
        if current_chars > 0 && current_chars + needed > budget {
            if sections.len() + 1 == room {
                return (finish(sections, current), lines.len() - i);
            }
            sections.push(fence(&current));
            current.clear();
            current_chars = 0;
        }
        if current_chars > 0 {
            current.push('\n');
            current_chars += 1;
        }
        current.push_str(&line);
        current_chars += chars;
    }
    (finish(sections, current), 0)
}

fn finish(mut sections: Vec<String>, current: String) -> Vec<String> {
    if !current.is_empty() {
        sections.push(fence(&current));
    }
    sections
}

fn fence(text: &str) -> String {
    format!("{FENCE}\n{text}\n{FENCE}")
}

fn mrkdwn(text: &str) -> Value {
    json!({"type": "mrkdwn", "text": text})
}

/// Slack's mrkdwn control characters.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn clip_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => clip(text, end),
        None => text,
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What an answer from Slack means for the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Sent,
    /// 429: wait this long (Retry-After, default 1 s) and send again.
    RateLimited(std::time::Duration),
    /// 403, 404, 410: the webhook is gone or refused for good; the reason
    /// is Slack's error string.
    Gone(String),
    /// 5xx and other answers: try again later.
    Failed,
    /// 400: this payload will never be accepted.
    Rejected(String),
}

/// Classify Slack's answer by its status, `Retry-After` and body.
pub(crate) fn answer(status: u16, retry_after: Option<&str>, body: &str) -> Answer {
    let reason = || {
        let word = body.trim();
        if !word.is_empty()
            && word.len() <= 64
            && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            word.to_owned()
        } else {
            format!("http_{status}")
        }
    };
    match status {
        200..=299 => Answer::Sent,
        429 => Answer::RateLimited(std::time::Duration::from_secs(
            retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 300),
        )),
        403 | 404 | 410 => Answer::Gone(reason()),
        400 => Answer::Rejected(reason()),
        _ => Answer::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tap::Sample;
    use std::sync::Arc;

    fn message(samples: Vec<Sample>, count: u64) -> Message {
        Message {
            rule: Arc::from("router-5xx"),
            group: "shop\u{1f}heroku\u{1f}info".into(),
            count,
            samples,
            first_us: 1_781_697_600_000_000,
            last_us: 1_781_697_660_000_000,
        }
    }

    fn sample(text: &str) -> Sample {
        Sample {
            ts_us: 1_781_697_600_123_000,
            proc_id: "router".into(),
            text: text.into(),
        }
    }

    fn sections(p: &Value) -> Vec<String> {
        p["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .filter(|b| b["type"] == "section" && b["text"].is_object())
            .map(|b| b["text"]["text"].as_str().expect("text").to_owned())
            .collect()
    }

    #[test]
    fn a_message_shows_group_rule_times_samples_and_the_rest_counted() {
        let p = payload(
            &message(vec![sample("at=error code=H12 <x>"), sample("b")], 1236),
            &GroupKey::DEFAULT,
        );
        assert_eq!(
            p["text"], "router-5xx: 1,236 matching lines from shop",
            "{p:#}"
        );
        let fields = p["blocks"][1]["fields"].as_array().expect("fields");
        let texts: Vec<&str> = fields
            .iter()
            .map(|f| f["text"].as_str().expect("t"))
            .collect();
        assert_eq!(texts[0], "*app*\nshop");
        assert_eq!(texts[2], "*severity*\ninfo");
        assert!(texts.contains(&"*first*\n2026-06-17T12:00:00.000000Z"));
        assert_eq!(
            sections(&p),
            vec![
                "```\n12:00:00.123 router at=error code=H12 &lt;x&gt;\n12:00:00.123 router b\n```"
            ]
        );
        let last = p["blocks"]
            .as_array()
            .expect("blocks")
            .last()
            .cloned()
            .expect("last");
        assert_eq!(last["elements"][0]["text"], "and 1,234 more lines");
    }

    #[test]
    fn long_lines_are_cut_with_a_marker_and_sections_stay_within_limits() {
        let long = "é".repeat(5_000);
        let many: Vec<Sample> = (0..40).map(|_| sample(&"x".repeat(900))).collect();
        for samples in [vec![sample(&long)], many] {
            let n = samples.len() as u64;
            let p = payload(&message(samples, n), &GroupKey::DEFAULT);
            let blocks = p["blocks"].as_array().expect("blocks");
            assert!(blocks.len() <= MAX_BLOCKS);
            let secs = sections(&p);
            assert!(!secs.is_empty());
            for s in &secs {
                assert!(
                    s.chars().count() <= MAX_SECTION_CHARS,
                    "{}",
                    s.chars().count()
                );
                assert!(s.starts_with("```\n") && s.ends_with("\n```"));
            }
            let lines: usize = secs.iter().map(|s| s.lines().count() - 2).sum();
            let more = blocks
                .last()
                .and_then(|b| b["elements"][0]["text"].as_str())
                .and_then(|t| t.strip_prefix("and "))
                .and_then(|t| t.split(' ').next())
                .map_or(0, |n| n.replace(',', "").parse::<usize>().expect("count"));
            assert_eq!(lines + more, n as usize, "every line shown or counted");
        }
        let p = payload(&message(vec![sample(&long)], 1), &GroupKey::DEFAULT);
        assert!(sections(&p)[0].ends_with("…[truncated]\n```"));
    }

    #[test]
    fn more_lines_than_blocks_are_counted_not_lost() {
        let samples: Vec<Sample> = (0..60).map(|_| sample(&"y".repeat(2_900))).collect();
        let p = payload(&message(samples, 60), &GroupKey::DEFAULT);
        let blocks = p["blocks"].as_array().expect("blocks");
        assert_eq!(blocks.len(), MAX_BLOCKS);
        let shown = sections(&p).len();
        assert_eq!(
            blocks[MAX_BLOCKS - 1]["elements"][0]["text"],
            format!("and {} more lines", 60 - shown)
        );
    }

    #[test]
    fn answers_as_slack_gives_them() {
        assert_eq!(answer(200, None, "ok"), Answer::Sent);
        assert_eq!(
            answer(429, Some("7"), "rate_limited"),
            Answer::RateLimited(std::time::Duration::from_secs(7))
        );
        assert_eq!(
            answer(404, None, "channel_not_found"),
            Answer::Gone("channel_not_found".into())
        );
        assert_eq!(
            answer(410, None, "channel_is_archived"),
            Answer::Gone("channel_is_archived".into())
        );
        assert_eq!(answer(403, None, "<html>"), Answer::Gone("http_403".into()));
        assert_eq!(
            answer(400, None, "invalid_blocks"),
            Answer::Rejected("invalid_blocks".into())
        );
        assert_eq!(answer(503, None, ""), Answer::Failed);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
