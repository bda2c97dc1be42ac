//! Alert rules as the ingester reads them: the LogDrain's `spec.alerts`
//! with Secret references already resolved by the operator (webhook URLs
//! and credentials are in the routes Secret, never in the LogDrain).
//!
//! The operator validates every rule with [`AlertRule::check`] before it
//! renders one, and the ingester compiles the same patterns with
//! [`glob_regex`] and [`message_regex`], so a rule the operator accepts is
//! one the ingester can run.
//!
//! ```yaml
//! alerts:
//!   - name: router-5xx
//!     match: {source: heroku, procId: router, status: {min: 500, max: 599}}
//!     destination:
//!       slack: {webhookUrl: "https://hooks.slack.com/services/...", secretVersion: "4711"}
//!     groupBy: [app, source, severity]
//!     firstWait: 30s
//!     minInterval: 1m
//!     maxSamples: 10
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::parse_duration;

/// Defaults of the optional rule fields, as docs/operations.md states them.
pub const DEFAULT_FIRST_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_SAMPLES: u32 = 10;
pub const MAX_SAMPLES_LIMIT: u32 = 40;
/// How long an Alertmanager alert stays firing after the last matching line.
pub const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(300);
/// Longest accepted regular expression source, and compiled program size:
/// a rule runs on every line, so a runaway pattern is refused up front.
pub const MAX_PATTERN_LEN: usize = 1024;
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One rule: which lines, where to, and how to group them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertRule {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: AlertMatch,
    pub destination: Destination,
    /// Fields whose values form a group; empty means the default
    /// (app, source, severity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<GroupKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_wait: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_samples: Option<u32>,
}

/// What a line must have to match; every field given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertMatch {
    /// App names; empty means every app of the LogDrain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// Glob (`*`, `?`) on the syslog APP-NAME (`app`, `heroku`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Glob on the PROCID (`router`, `web.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_id: Option<String>,
    /// Syslog severity at most this (0 emergency .. 7 debug).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_at_most: Option<u8>,
    /// Router HTTP status, both ends included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusRange>,
    /// Heroku error codes (`H12`, `R14`); any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<String>,
    /// Regular expression (Rust `regex` syntax) searched in the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// logfmt pairs or OTLP attributes (record or resource), exact values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

/// A field lines are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GroupKey {
    App,
    Source,
    ProcId,
    Severity,
    Code,
    Status,
}

impl GroupKey {
    pub const DEFAULT: [GroupKey; 3] = [GroupKey::App, GroupKey::Source, GroupKey::Severity];

    /// The label name in Alertmanager and in messages.
    pub fn label(self) -> &'static str {
        match self {
            GroupKey::App => "app",
            GroupKey::Source => "source",
            GroupKey::ProcId => "proc_id",
            GroupKey::Severity => "severity",
            GroupKey::Code => "code",
            GroupKey::Status => "status",
        }
    }
}

/// Where a rule's messages go, credentials resolved. Written as a map with
/// exactly one key (`slack:` or `alertmanager:`), as the LogDrain spells it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DestinationFields", into = "DestinationFields")]
pub enum Destination {
    Slack(SlackDestination),
    Alertmanager(AlertmanagerDestination),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DestinationFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slack: Option<SlackDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alertmanager: Option<AlertmanagerDestination>,
}

impl TryFrom<DestinationFields> for Destination {
    type Error = &'static str;
    fn try_from(d: DestinationFields) -> Result<Self, Self::Error> {
        match (d.slack, d.alertmanager) {
            (Some(s), None) => Ok(Destination::Slack(s)),
            (None, Some(a)) => Ok(Destination::Alertmanager(a)),
            _ => Err("a destination is exactly one of slack or alertmanager"),
        }
    }
}

impl From<Destination> for DestinationFields {
    fn from(d: Destination) -> Self {
        match d {
            Destination::Slack(s) => DestinationFields {
                slack: Some(s),
                alertmanager: None,
            },
            Destination::Alertmanager(a) => DestinationFields {
                slack: None,
                alertmanager: Some(a),
            },
        }
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackDestination {
    pub webhook_url: String,
    /// The Secret's resourceVersion: a destination disabled by Slack's
    /// answer is tried again once this changes.
    #[serde(default)]
    pub secret_version: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertmanagerDestination {
    /// Base URL; alerts go to `{url}/api/v2/alerts`.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    /// How long an alert stays firing after its last matching line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_after: Option<String>,
    #[serde(default)]
    pub secret_version: String,
}

/// Why a rule cannot run. Never quotes a URL or a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule name must be 1-63 characters of a-z, 0-9 and '-'")]
    Name,
    #[error("match.{field}: {reason}")]
    Pattern { field: &'static str, reason: String },
    #[error("match.status: min {min} is above max {max}")]
    StatusRange { min: u16, max: u16 },
    #[error("match.severityAtMost: {0} is not a syslog severity (0-7)")]
    Severity(u8),
    #[error("{field}: {reason}")]
    Duration { field: &'static str, reason: String },
    #[error("maxSamples: {0} is above the limit of {MAX_SAMPLES_LIMIT}")]
    MaxSamples(u32),
    #[error("destination: {0}")]
    Destination(&'static str),
    #[error("a rule with this name comes earlier")]
    Duplicate,
}

impl AlertRule {
    /// Every check the ingester would otherwise fail on.
    pub fn check(&self) -> Result<(), RuleError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(RuleError::Name);
        }
        let m = &self.matches;
        for (field, glob) in [("source", &m.source), ("procId", &m.proc_id)] {
            if let Some(glob) = glob {
                glob_regex(glob).map_err(|reason| RuleError::Pattern { field, reason })?;
            }
        }
        if let Some(re) = &m.message {
            message_regex(re).map_err(|reason| RuleError::Pattern {
                field: "message",
                reason,
            })?;
        }
        if let Some(s) = m.severity_at_most.filter(|s| *s > 7) {
            return Err(RuleError::Severity(s));
        }
        if let Some(r) = m.status.filter(|r| r.min > r.max) {
            return Err(RuleError::StatusRange {
                min: r.min,
                max: r.max,
            });
        }
        self.first_wait()?;
        self.min_interval()?;
        if let Some(n) = self.max_samples.filter(|n| *n > MAX_SAMPLES_LIMIT) {
            return Err(RuleError::MaxSamples(n));
        }
        match &self.destination {
            Destination::Slack(s) => {
                if !(s.webhook_url.starts_with("https://") || s.webhook_url.starts_with("http://"))
                {
                    return Err(RuleError::Destination(
                        "the Slack webhook URL is not an http(s) URL",
                    ));
                }
            }
            Destination::Alertmanager(a) => {
                if !(a.url.starts_with("https://") || a.url.starts_with("http://")) {
                    return Err(RuleError::Destination(
                        "the Alertmanager URL is not an http(s) URL",
                    ));
                }
                a.resolve_after()?;
            }
        }
        Ok(())
    }

    pub fn first_wait(&self) -> Result<Duration, RuleError> {
        duration("firstWait", self.first_wait.as_deref(), DEFAULT_FIRST_WAIT)
    }

    pub fn min_interval(&self) -> Result<Duration, RuleError> {
        duration(
            "minInterval",
            self.min_interval.as_deref(),
            DEFAULT_MIN_INTERVAL,
        )
    }

    pub fn max_samples(&self) -> u32 {
        self.max_samples.unwrap_or(DEFAULT_MAX_SAMPLES)
    }

    pub fn group_by(&self) -> &[GroupKey] {
        if self.group_by.is_empty() {
            &GroupKey::DEFAULT
        } else {
            &self.group_by
        }
    }
}

impl AlertmanagerDestination {
    pub fn resolve_after(&self) -> Result<Duration, RuleError> {
        duration(
            "alertmanager.resolveAfter",
            self.resolve_after.as_deref(),
            DEFAULT_RESOLVE_AFTER,
        )
    }
}

fn duration(
    field: &'static str,
    text: Option<&str>,
    default: Duration,
) -> Result<Duration, RuleError> {
    match text {
        None => Ok(default),
        Some(t) => parse_duration(t).map_err(|reason| RuleError::Duration { field, reason }),
    }
}

/// Check a list of rules: the first error of each rule, by position and
/// name, and whether names repeat.
pub fn check_all(rules: &[AlertRule]) -> Vec<(usize, String, RuleError)> {
    let mut errors = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let result = if rules[..i].iter().any(|r| r.name == rule.name) {
            Err(RuleError::Duplicate)
        } else {
            rule.check()
        };
        if let Err(e) = result {
            errors.push((i, rule.name.clone(), e));
        }
    }
    errors
}

/// A glob (`*` any run of characters, `?` one character, anything else
/// literal) as an anchored regular expression.
pub fn glob_regex(glob: &str) -> Result<regex::Regex, String> {
    if glob.len() > MAX_PATTERN_LEN {
        return Err(format!("longer than {MAX_PATTERN_LEN} characters"));
    }
    let mut re = String::with_capacity(glob.len() + 8);
    re.push_str("^(?s:");
    let mut literal = [0u8; 4];
    for c in glob.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(c.encode_utf8(&mut literal))),
        }
    }
    re.push_str(")$");
    build(&re)
}

/// The message pattern: unanchored, as `grep -E` searches.
pub fn message_regex(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("longer than {MAX_PATTERN_LEN} characters"));
    }
    build(pattern)
}

fn build(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::Syntax(s) => format!("not a valid regular expression: {s}"),
            regex::Error::CompiledTooBig(_) => "the regular expression is too large".to_owned(),
            _ => "not a valid regular expression".to_owned(),
        })
}

// Debug never shows URLs or credentials: rules end up in logs and errors.
impl fmt::Debug for AlertRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertRule")
            .field("name", &self.name)
            .field("match", &self.matches)
            .field("destination", &self.destination)
            .field("group_by", &self.group_by)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

impl Destination {
    /// `slack` or `alertmanager`, for metrics and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Slack(_) => "slack",
            Destination::Alertmanager(_) => "alertmanager",
        }
    }

    pub fn secret_version(&self) -> &str {
        match self {
            Destination::Slack(s) => &s.secret_version,
            Destination::Alertmanager(a) => &a.secret_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> AlertRule {
        serde_yaml::from_str(yaml).expect("rule")
    }

    const SLACK: &str =
        "destination: {slack: {webhookUrl: 'https://hooks.slack.com/services/T0/B0/sekrit'}}";

    #[test]
    fn a_documented_rule_parses_with_defaults() {
        let r = rule(&format!(
            "name: router-5xx\nmatch: {{source: heroku, procId: router, status: {{min: 500, max: 599}}}}\n{SLACK}\n"
        ));
        assert_eq!(r.check(), Ok(()));
        assert_eq!(r.first_wait(), Ok(DEFAULT_FIRST_WAIT));
        assert_eq!(r.group_by(), &GroupKey::DEFAULT);
        assert_eq!(r.matches.status, Some(StatusRange { min: 500, max: 599 }));
        assert!(!format!("{r:?}").contains("sekrit"));
        let again: AlertRule =
            serde_yaml::from_str(&serde_yaml::to_string(&r).expect("yaml")).expect("parse");
        assert!(again == r);
        let both = "name: x\ndestination: {slack: {webhookUrl: 'https://a'}, alertmanager: {url: 'http://b'}}\n";
        assert!(serde_yaml::from_str::<AlertRule>(both).is_err());
    }

    #[test]
    fn bad_rules_say_which_field_without_the_url() {
        let bad = rule(&format!("name: x\nmatch: {{message: 'H1[2'}}\n{SLACK}\n"));
        let err = bad.check().expect_err("bad regex");
        assert!(
            err.to_string()
                .starts_with("match.message: not a valid regular expression"),
            "{err}"
        );
        let bad = rule(&format!("name: x\nfirstWait: soon\n{SLACK}\n"));
        assert!(matches!(
            bad.check(),
            Err(RuleError::Duration {
                field: "firstWait",
                ..
            })
        ));
        let bad = rule("name: x\ndestination: {slack: {webhookUrl: 'ftp://sekrit'}}\n");
        let err = bad.check().expect_err("bad url");
        assert!(!err.to_string().contains("sekrit"));
        let bad = rule(&format!("name: Bad_Name\n{SLACK}\n"));
        assert_eq!(bad.check(), Err(RuleError::Name));
        let two = [
            rule(&format!("name: a\n{SLACK}\n")),
            rule(&format!("name: a\n{SLACK}\n")),
        ];
        let errors = check_all(&two);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 1);
        assert_eq!(errors[0].2, RuleError::Duplicate);
    }

    #[test]
    fn globs_are_anchored_and_literal_but_for_star_and_question_mark() {
        let g = glob_regex("web.*").expect("glob");
        assert!(g.is_match("web.1"));
        assert!(g.is_match("web.12"));
        assert!(!g.is_match("webx1"), "the dot is literal");
        assert!(!g.is_match("xweb.1"));
        let g = glob_regex("r?uter").expect("glob");
        assert!(g.is_match("router"));
        assert!(!g.is_match("rooouter"));
    }
}
