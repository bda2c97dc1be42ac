//! `AlertsReady`: does every rule of `spec.alerts` run? A rule is left out
//! of the routes Secret when it is invalid or its Secret is missing (the
//! alerts concern finds that), and an ingester disables a Slack destination
//! Slack refused for good, exporting
//! `drainpipe_alert_destination_disabled{rule,reason} 1` on the `/metrics`
//! the operator already reads (freshness.rs). Messages name rules, Secrets
//! and keys, never a value.

use std::collections::BTreeMap;
use std::fmt;

use super::conditions::Cond;
use super::writable::parse_labels;

const DISABLED: &str = "drainpipe_alert_destination_disabled";

/// Why one rule does not run, worst first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum AlertProblem {
    /// The rule fails the contract's checks; `error` never quotes a URL.
    InvalidRule { rule: String, error: String },
    /// The rule's Secret, or a key in it, is missing or empty; `problem`
    /// names the key (`has no key "url"`).
    SecretMissing {
        rule: String,
        secret: String,
        problem: String,
    },
    /// An ingester disabled the destination after Slack's `reason`.
    DestinationDisabled {
        rule: String,
        reason: String,
        secret: Option<String>,
    },
}

impl AlertProblem {
    fn reason(&self) -> &'static str {
        match self {
            AlertProblem::InvalidRule { .. } => "InvalidRule",
            AlertProblem::SecretMissing { .. } => "SecretMissing",
            AlertProblem::DestinationDisabled { .. } => "DestinationDisabled",
        }
    }
}

impl fmt::Display for AlertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertProblem::InvalidRule { rule, error } => {
                write!(f, "alert rule {rule:?}: {error}")
            }
            AlertProblem::SecretMissing {
                rule,
                secret,
                problem,
            } => write!(f, "alert rule {rule:?}: Secret {secret:?} {problem}"),
            AlertProblem::DestinationDisabled {
                rule,
                reason,
                secret,
            } => {
                write!(
                    f,
                    "alert rule {rule:?}: destination disabled, Slack answered {reason}; "
                )?;
                match secret {
                    Some(s) => write!(f, "it is retried once Secret {s:?} changes"),
                    None => f.write_str("it is retried once its Secret changes"),
                }
            }
        }
    }
}

/// The condition over `rules` rules with `problems` (at most one per rule,
/// in spec order). The reason is the worst problem's; the message lists
/// every one. It changes only when a problem does, so a steady state
/// writes no status.
pub(crate) fn alerts_condition(rules: usize, problems: &[AlertProblem]) -> Cond {
    let Some(worst) = problems.iter().min() else {
        let noun = if rules == 1 { "rule" } else { "rules" };
        return Cond::ok("RulesActive", format!("{rules} {noun} active"));
    };
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Cond::failed(
        worst.reason(),
        format!(
            "{} of {rules} alert rules not active: {}",
            problems.len(),
            list.join("; ")
        ),
    )
}

/// The disabled destinations in a pod's Prometheus text exposition: rule
/// to reason. Values are kept only when they look like what the ingester
/// writes (rule names, Slack's error strings), so nothing else a pod
/// exports can reach the status.
pub(crate) fn parse_disabled(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(DISABLED) else {
            continue;
        };
        let Some((set, value)) = rest.strip_prefix('{').and_then(|r| r.split_once("} ")) else {
            continue;
        };
        if value.trim().parse::<f64>().map_or(true, |v| v < 1.0) {
            continue;
        }
        let labels = parse_labels(set);
        let (Some(rule), Some(reason)) = (labels.get("rule"), labels.get("reason")) else {
            continue;
        };
        let plain = |s: &str, extra: u8| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == extra)
        };
        if plain(rule, b'-') && plain(reason, b'_') {
            out.insert(rule.clone(), reason.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(rule: &str) -> AlertProblem {
        AlertProblem::InvalidRule {
            rule: rule.to_string(),
            error: "match.message: not a valid regular expression: unclosed class".to_string(),
        }
    }

    #[test]
    fn all_rules_running_read_as_active() {
        let c = alerts_condition(3, &[]);
        assert!(c.status);
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            ("RulesActive", "3 rules active")
        );
        assert_eq!(alerts_condition(1, &[]).message, "1 rule active");
    }

    #[test]
    fn the_worst_problem_gives_the_reason_and_every_one_is_named() {
        let missing = AlertProblem::SecretMissing {
            rule: "no-secret".to_string(),
            secret: "slack-missing".to_string(),
            problem: "does not exist (key \"url\")".to_string(),
        };
        let disabled = AlertProblem::DestinationDisabled {
            rule: "gone".to_string(),
            reason: "channel_not_found".to_string(),
            secret: Some("slack-old".to_string()),
        };
        let c = alerts_condition(
            4,
            &[disabled.clone(), missing.clone(), invalid("bad-regex")],
        );
        assert!(!c.status);
        assert_eq!(c.reason, "InvalidRule");
        assert_eq!(
            c.message,
            "3 of 4 alert rules not active: \
             alert rule \"gone\": destination disabled, Slack answered channel_not_found; it is retried once Secret \"slack-old\" changes; \
             alert rule \"no-secret\": Secret \"slack-missing\" does not exist (key \"url\"); \
             alert rule \"bad-regex\": match.message: not a valid regular expression: unclosed class"
        );
        assert_eq!(
            alerts_condition(4, &[disabled.clone(), missing]).reason,
            "SecretMissing"
        );
        assert_eq!(
            alerts_condition(4, &[disabled]).reason,
            "DestinationDisabled"
        );
    }

    #[test]
    fn disabled_destinations_are_read_from_the_exposition() {
        let text = "# TYPE drainpipe_alert_destination_disabled gauge\n\
            drainpipe_alert_destination_disabled{rule=\"router-5xx\",reason=\"channel_not_found\"} 1\n\
            drainpipe_alert_destination_disabled{reason=\"http_403\",rule=\"r14\"} 1\n\
            drainpipe_alert_destination_disabled{rule=\"healed\",reason=\"channel_is_archived\"} 0\n\
            drainpipe_alert_destination_disabled{rule=\"odd\",reason=\"https://hooks.slack.com/x\"} 1\n\
            drainpipe_alert_lines_matched_total{rule=\"router-5xx\"} 12\n";
        let disabled = parse_disabled(text);
        assert_eq!(
            disabled,
            BTreeMap::from([
                ("r14".to_string(), "http_403".to_string()),
                ("router-5xx".to_string(), "channel_not_found".to_string()),
            ])
        );
        assert!(parse_disabled("drainpipe_messages_total 3\n").is_empty());
    }
}
