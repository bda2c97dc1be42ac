//! Alert rules compiled for the hot path: which records match, and the
//! values of the fields a rule groups by.
//!
//! Rules run in the uploader's workers on records that are already parsed,
//! so a match costs a few comparisons; the cheap fields are checked before
//! the regular expression.

use std::sync::Arc;
use std::time::Duration;

use drainpipe_contract::alerts::{
    AlertRule, Destination, GroupKey, RuleError, check_all, glob_regex, message_regex,
};
use regex::Regex;

use crate::encode::record::Record;
use crate::parse::logfmt::{Piece, Unescape, Value};

/// The rules of the current routes file.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
}

/// One compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) name: Arc<str>,
    apps: Vec<String>,
    source: Option<Regex>,
    proc_id: Option<Regex>,
    severity_at_most: Option<u8>,
    status: Option<(i32, i32)>,
    codes: Vec<String>,
    message: Option<Regex>,
    /// Keys lowercased, as records carry them.
    attributes: Vec<(String, String)>,
    pub(crate) group_by: Vec<GroupKey>,
    pub(crate) first_wait: Duration,
    pub(crate) min_interval: Duration,
    pub(crate) max_samples: usize,
    pub(crate) destination: Destination,
}

impl RuleSet {
    /// Compile the valid rules; the invalid ones come back with their
    /// error (the operator renders only valid rules, so these are files
    /// written by hand).
    pub fn compile(rules: &[AlertRule]) -> (RuleSet, Vec<(String, RuleError)>) {
        let errors: Vec<(usize, String, RuleError)> = check_all(rules);
        let compiled = rules
            .iter()
            .enumerate()
            .filter(|(i, _)| !errors.iter().any(|(e, _, _)| e == i))
            .filter_map(|(_, r)| Rule::compile(r))
            .collect();
        let errors = errors.into_iter().map(|(_, name, e)| (name, e)).collect();
        (RuleSet { rules: compiled }, errors)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Rule {
    /// `None` only if a pattern that [`AlertRule::check`] accepted fails to
    /// build, which the shared builders rule out.
    fn compile(rule: &AlertRule) -> Option<Rule> {
        let m = &rule.matches;
        let glob = |g: &Option<String>| match g {
            Some(g) => glob_regex(g).ok().map(Some),
            None => Some(None),
        };
        Some(Rule {
            name: Arc::from(rule.name.as_str()),
            apps: m.apps.clone(),
            source: glob(&m.source)?,
            proc_id: glob(&m.proc_id)?,
            severity_at_most: m.severity_at_most,
            status: m.status.map(|r| (i32::from(r.min), i32::from(r.max))),
            codes: m.code.clone(),
            message: match &m.message {
                Some(p) => Some(message_regex(p).ok()?),
                None => None,
            },
            attributes: m
                .attributes
                .iter()
                .map(|(k, v)| (k.to_lowercase(), v.clone()))
                .collect(),
            group_by: rule.group_by().to_vec(),
            first_wait: rule.first_wait().ok()?,
            min_interval: rule.min_interval().ok()?,
            max_samples: rule.max_samples() as usize,
            destination: rule.destination.clone(),
        })
    }

    /// Whether `r` is a line this rule wants.
    pub(crate) fn matches(&self, r: &Record<'_>) -> bool {
        if !self.apps.is_empty() && !self.apps.iter().any(|a| a == r.app) {
            return false;
        }
        if let Some(max) = self.severity_at_most
            && r.severity.is_none_or(|s| s > max)
        {
            return false;
        }
        if let Some((min, max)) = self.status
            && r.router.status.is_none_or(|s| s < min || s > max)
        {
            return false;
        }
        if !self.codes.is_empty() && !self.codes.iter().any(|want| has_code(r, want)) {
            return false;
        }
        if !glob_matches(self.source.as_ref(), r.source)
            || !glob_matches(self.proc_id.as_ref(), r.proc_id)
        {
            return false;
        }
        if !self.attributes.iter().all(|(k, v)| has_attribute(r, k, v)) {
            return false;
        }
        self.message
            .as_ref()
            .is_none_or(|re| re.is_match(r.message))
    }

    /// The group's values, in `group_by` order, joined by U+001F (a
    /// character no field holds) so one string keys the group.
    pub(crate) fn group_key(&self, r: &Record<'_>, out: &mut String) {
        out.clear();
        for (i, key) in self.group_by.iter().enumerate() {
            if i > 0 {
                out.push('\u{1f}');
            }
            match key {
                GroupKey::App => out.push_str(r.app),
                GroupKey::Source => out.push_str(r.source.unwrap_or("-")),
                GroupKey::ProcId => out.push_str(r.proc_id.unwrap_or("-")),
                GroupKey::Severity => out.push_str(r.severity.map_or("-", severity_name)),
                GroupKey::Code => match (r.router.code, platform_code(r)) {
                    (Some(c), _) => push_value(out, &c),
                    (None, Some(code)) => out.push_str(code),
                    (None, None) => out.push('-'),
                },
                GroupKey::Status => match r.router.status {
                    Some(s) => out.push_str(&s.to_string()),
                    None => out.push('-'),
                },
            }
        }
    }
}

/// A group key back as (label, value) pairs.
pub(crate) fn group_labels<'k>(
    group_by: &[GroupKey],
    key: &'k str,
) -> Vec<(&'static str, &'k str)> {
    group_by
        .iter()
        .map(|k| k.label())
        .zip(key.split('\u{1f}'))
        .collect()
}

/// The syslog keyword of a severity, as Alertmanager labels and Slack show it.
pub(crate) fn severity_name(severity: u8) -> &'static str {
    match severity {
        0 => "emerg",
        1 => "alert",
        2 => "crit",
        3 => "err",
        4 => "warning",
        5 => "notice",
        6 => "info",
        _ => "debug",
    }
}

/// A router line's `code=H12`, or a platform line's `Error R14 (...)`.
fn has_code(r: &Record<'_>, want: &str) -> bool {
    match r.router.code {
        Some(c) => value_eq(&c, want),
        None => platform_code(r) == Some(want),
    }
}

/// The code of a Heroku platform error line (`Error R14 (Memory quota
/// exceeded)`, `Error L10 (output buffer overflow): ...`), as the Dev
/// Center's error-code list writes them: a capital letter and digits.
fn platform_code<'r>(r: &Record<'r>) -> Option<&'r str> {
    if r.source != Some("heroku") {
        return None;
    }
    let rest = r.message.strip_prefix("Error ")?;
    let (code, after) = rest.split_once(' ')?;
    let mut bytes = code.bytes();
    let well_formed = bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && (2..=4).contains(&code.len())
        && bytes.all(|b| b.is_ascii_digit());
    (well_formed && after.starts_with('(')).then_some(code)
}

fn glob_matches(glob: Option<&Regex>, value: Option<&str>) -> bool {
    match glob {
        None => true,
        Some(re) => value.is_some_and(|v| re.is_match(v)),
    }
}

fn has_attribute(r: &Record<'_>, key: &str, want: &str) -> bool {
    r.kv.iter()
        .any(|(k, v)| k.eq_ignore_ascii_case(key) && value_eq(v, want))
        || r.attributes
            .iter()
            .chain(r.resource)
            .any(|(k, v)| k.eq_ignore_ascii_case(key) && v == want)
}

/// A logfmt value equals `want` once its escapes are resolved.
fn value_eq(v: &Value<'_>, want: &str) -> bool {
    if !v.has_escapes() {
        return v.raw() == want;
    }
    let mut rest = want;
    for piece in Unescape::new(v.raw()) {
        let next = match piece {
            Piece::Text(t) => rest.strip_prefix(t),
            Piece::Char(c) => rest.strip_prefix(c),
        };
        match next {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

fn push_value(out: &mut String, v: &Value<'_>) {
    for piece in Unescape::new(v.raw()) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Char(c) => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::batch::{LineSink, RequestMeta, encode_body};
    use crate::parse::BodyFormat;
    use crate::parse::timestamp::Day;

    /// Records of a Logplex body, as the archive path parses them, with the
    /// rules each one matched.
    fn matched(rules_yaml: &str, lines: &[&str]) -> Vec<(String, Vec<String>)> {
        let rules: Vec<AlertRule> = serde_yaml::from_str(rules_yaml).expect("rules");
        let (set, errors) = RuleSet::compile(&rules);
        assert!(errors.is_empty(), "{errors:?}");
        struct Probe<'s> {
            set: &'s RuleSet,
            buf: Vec<u8>,
            out: Vec<(String, Vec<String>)>,
        }
        impl LineSink for Probe<'_> {
            fn push(&mut self, _day: Day, r: &Record<'_>) {
                r.write_json_line(&mut self.buf);
            }
            fn inspect(&mut self, r: &Record<'_>) {
                let names = self
                    .set
                    .rules
                    .iter()
                    .filter(|rule| rule.matches(r))
                    .map(|rule| rule.name.to_string())
                    .collect();
                self.out.push((r.message.to_owned(), names));
            }
        }
        let mut body = Vec::new();
        for l in lines {
            body.extend_from_slice(format!("{} {l}", l.len()).as_bytes());
        }
        let meta = RequestMeta {
            app: "shop",
            drain_token: None,
            frame_id: None,
            msg_count: None,
            received_at_us: 0,
        };
        let mut probe = Probe {
            set: &set,
            buf: Vec::new(),
            out: Vec::new(),
        };
        encode_body(&meta, BodyFormat::LogplexHttps, &body, &mut probe);
        probe.out
    }

    const RULES: &str = "
- name: router-5xx
  match: {source: heroku, procId: router, status: {min: 500, max: 599}}
  destination: {slack: {webhookUrl: 'https://hooks.example/a'}}
- name: memory
  match: {code: [R14, R15]}
  destination: {slack: {webhookUrl: 'https://hooks.example/a'}}
- name: h12
  match: {code: [H12]}
  destination: {slack: {webhookUrl: 'https://hooks.example/a'}}
- name: app-errors
  match: {source: app, severityAtMost: 3}
  destination: {slack: {webhookUrl: 'https://hooks.example/a'}}
- name: payments
  match: {procId: 'web.*', message: 'payment (failed|declined)', attributes: {customer: acme}}
  destination: {slack: {webhookUrl: 'https://hooks.example/a'}}
";

    #[test]
    fn the_documented_rules_match_exactly_their_lines() {
        let lines = [
            "<158>1 2026-06-17T12:00:00+00:00 host heroku router - at=info method=GET path=\"/\" host=shop.herokuapp.com request_id=a fwd=\"1.2.3.4\" dyno=web.1 connect=1ms service=22ms status=200 bytes=10 protocol=https\n",
            "<158>1 2026-06-17T12:00:01+00:00 host heroku router - at=info method=GET path=\"/x\" host=shop.herokuapp.com request_id=b fwd=\"1.2.3.4\" dyno=web.1 connect=1ms service=22ms status=503 bytes=10 protocol=https\n",
            "<158>1 2026-06-17T12:00:02+00:00 host heroku router - at=error code=H12 desc=\"Request timeout\" method=GET path=\"/slow\" host=shop.herokuapp.com request_id=c fwd=\"1.2.3.4\" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=https\n",
            "<45>1 2026-06-17T12:00:03+00:00 host heroku web.1 - Error R14 (Memory quota exceeded)\n",
            "<190>1 2026-06-17T12:00:04+00:00 host app web.1 - payment failed customer=acme amount=10\n",
            "<190>1 2026-06-17T12:00:05+00:00 host app web.1 - payment failed customer=other\n",
            "<187>1 2026-06-17T12:00:06+00:00 host app worker.1 - ActiveRecord::ConnectionTimeoutError\n",
            "<188>1 2026-06-17T12:00:07+00:00 host app worker.1 - deprecation warning\n",
        ];
        let got = matched(RULES, &lines);
        let names: Vec<Vec<&str>> = got
            .iter()
            .map(|(_, n)| n.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec![],
                vec!["router-5xx"],
                vec!["router-5xx", "h12"],
                // A platform error's code is in its message.
                vec!["memory"],
                vec!["payments"],
                vec![],
                vec!["app-errors"],
                vec![],
            ],
            "{got:?}"
        );
    }

    #[test]
    fn memory_errors_match_by_message_pattern() {
        let rules = "- name: r14\n  match: {source: heroku, message: 'Error R1[45] '}\n  destination: {slack: {webhookUrl: 'https://h/a'}}\n";
        let got = matched(
            rules,
            &[
                "<45>1 2026-06-17T12:00:03+00:00 host heroku web.1 - Error R14 (Memory quota exceeded)\n",
                "<45>1 2026-06-17T12:00:03+00:00 host heroku web.1 - Error R15 (Memory quota vastly exceeded)\n",
                "<45>1 2026-06-17T12:00:03+00:00 host heroku web.1 - Error R10 (Boot timeout)\n",
            ],
        );
        let hits: Vec<bool> = got.iter().map(|(_, n)| !n.is_empty()).collect();
        assert_eq!(hits, vec![true, true, false]);
    }

    #[test]
    fn group_keys_follow_group_by_and_come_back_as_labels() {
        let rules: Vec<AlertRule> = serde_yaml::from_str(
            "- name: a\n  groupBy: [app, code, status]\n  destination: {slack: {webhookUrl: 'https://h/a'}}\n",
        )
        .expect("rules");
        let (set, _) = RuleSet::compile(&rules);
        let rule = &set.rules[0];
        let mut r = Record {
            app: "shop",
            ..Record::default()
        };
        r.router.code = Some(Value::plain("H12"));
        r.router.status = Some(503);
        let mut key = String::new();
        rule.group_key(&r, &mut key);
        assert_eq!(
            group_labels(&rule.group_by, &key),
            vec![("app", "shop"), ("code", "H12"), ("status", "503")]
        );
    }

    #[test]
    fn invalid_rules_are_left_out_with_their_error() {
        let rules: Vec<AlertRule> = serde_yaml::from_str(
            "- name: ok\n  destination: {slack: {webhookUrl: 'https://h/a'}}\n- name: bad\n  match: {message: '('}\n  destination: {slack: {webhookUrl: 'https://h/a'}}\n",
        )
        .expect("rules");
        let (set, errors) = RuleSet::compile(&rules);
        assert_eq!(set.rules.len(), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "bad");
    }

    #[test]
    fn escaped_values_compare_resolved() {
        assert!(value_eq(&Value::quoted(r#"a \"b\""#), r#"a "b""#));
        assert!(!value_eq(&Value::quoted(r#"a \"b\""#), r#"a "b"#));
        assert!(value_eq(&Value::plain("acme"), "acme"));
    }
}
