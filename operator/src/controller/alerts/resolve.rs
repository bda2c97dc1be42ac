//! From `spec.alerts` and the Secrets they name to the rules the ingesters
//! run (`drainpipe_contract::alerts`), with no I/O: each rule either
//! resolves and passes the contract's checks, or becomes a problem the
//! `AlertsReady` condition names. One bad rule never stops the others.

use std::collections::BTreeMap;

use drainpipe_contract::alerts::{
    AlertMatch, AlertRule, AlertmanagerDestination, Destination, GroupKey, RuleError,
    SlackDestination, StatusRange, check_all,
};

use crate::controller::status::alerts::AlertProblem;
use crate::crd::{AlertGroupKey, AlertMatchSpec, AlertRuleSpec, AlertmanagerSpec, SlackSpec};

/// A Secret as the rules read it: its resourceVersion and its data.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct SecretData {
    pub(crate) version: String,
    pub(crate) data: BTreeMap<String, Vec<u8>>,
}

/// The rules to write into the routes Secret, and the ones left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rendered {
    pub(crate) rules: Vec<AlertRule>,
    pub(crate) problems: Vec<AlertProblem>,
}

/// Stands in for a webhook URL whose Secret is missing, so the rest of the
/// rule is still checked (and reported first); never written anywhere.
const NO_URL: &str = "https://secret.invalid/";

/// Resolve every rule against `secrets` (name to data; absent: no such
/// Secret) and check the result as the ingester will.
pub(crate) fn resolve(specs: &[AlertRuleSpec], secrets: &BTreeMap<String, SecretData>) -> Rendered {
    let mut candidates = Vec::with_capacity(specs.len());
    let mut pending = Vec::with_capacity(specs.len());
    for spec in specs {
        let (destination, problem) = destination(spec, secrets);
        candidates.push(contract_rule(spec, destination));
        pending.push(problem);
    }
    let mut errors: BTreeMap<usize, RuleError> = check_all(&candidates)
        .into_iter()
        .map(|(i, _, e)| (i, e))
        .collect();
    let mut out = Rendered::default();
    for (i, (rule, problem)) in candidates.into_iter().zip(pending).enumerate() {
        let problem = match (errors.remove(&i), problem) {
            (Some(e), _) | (None, Some(Problem::Invalid(e))) => Some(AlertProblem::InvalidRule {
                rule: rule.name.clone(),
                error: one_line(&e.to_string()),
            }),
            (None, Some(Problem::Secret { secret, problem })) => {
                Some(AlertProblem::SecretMissing {
                    rule: rule.name.clone(),
                    secret,
                    problem,
                })
            }
            (None, None) => None,
        };
        match problem {
            Some(p) => out.problems.push(p),
            None => out.rules.push(rule),
        }
    }
    out
}

/// The destinations the ingesters report disabled (rule to Slack's
/// reason), for the rules that run, in spec order.
pub(crate) fn disabled(
    specs: &[AlertRuleSpec],
    rendered: &Rendered,
    reported: &BTreeMap<String, String>,
) -> Vec<AlertProblem> {
    specs
        .iter()
        .filter(|s| rendered.rules.iter().any(|r| r.name == s.name))
        .filter_map(|s| {
            Some(AlertProblem::DestinationDisabled {
                rule: s.name.clone(),
                reason: reported.get(&s.name)?.clone(),
                secret: s.secret_names().next().map(str::to_string),
            })
        })
        .collect()
}

/// Why a rule cannot run before the contract's checks.
enum Problem {
    Invalid(RuleError),
    Secret { secret: String, problem: String },
}

/// The rule's destination with its Secret resolved; when that fails, a
/// stand-in (so the rest is still checked) and the problem.
fn destination(
    spec: &AlertRuleSpec,
    secrets: &BTreeMap<String, SecretData>,
) -> (Destination, Option<Problem>) {
    match (&spec.slack, &spec.alertmanager) {
        (Some(slack), None) => match slack_destination(slack, secrets) {
            Ok(d) => (d, None),
            Err(p) => (stand_in(), Some(p)),
        },
        (None, Some(am)) => alertmanager_destination(am, secrets),
        _ => (
            stand_in(),
            Some(Problem::Invalid(RuleError::Destination(
                "set exactly one of slack or alertmanager",
            ))),
        ),
    }
}

fn stand_in() -> Destination {
    Destination::Slack(SlackDestination {
        webhook_url: NO_URL.to_string(),
        secret_version: String::new(),
    })
}

fn slack_destination(
    slack: &SlackSpec,
    secrets: &BTreeMap<String, SecretData>,
) -> Result<Destination, Problem> {
    let r = &slack.webhook_secret_ref;
    let missing = |problem: String| Problem::Secret {
        secret: r.name.clone(),
        problem,
    };
    let secret = secrets.get(&r.name).ok_or_else(|| {
        missing(format!(
            "does not exist (slack.webhookSecretRef, key {:?})",
            r.key
        ))
    })?;
    let url = value(secret, &r.key, str::trim)
        .map_err(missing)?
        .ok_or_else(|| missing(format!("has no key {:?}", r.key)))?;
    Ok(Destination::Slack(SlackDestination {
        webhook_url: url,
        secret_version: secret.version.clone(),
    }))
}

/// Keys `token` (bearer), else `username` and `password` (Basic).
fn alertmanager_destination(
    am: &AlertmanagerSpec,
    secrets: &BTreeMap<String, SecretData>,
) -> (Destination, Option<Problem>) {
    let mut d = AlertmanagerDestination {
        url: am.url.clone(),
        username: None,
        password: None,
        bearer_token: None,
        resolve_after: Some(am.resolve_after.clone()),
        secret_version: String::new(),
    };
    let Some(r) = &am.credentials_secret_ref else {
        return (Destination::Alertmanager(d), None);
    };
    let credentials = secrets
        .get(&r.name)
        .ok_or_else(|| {
            "does not exist (alertmanager.credentialsSecretRef, key \"token\" or keys \"username\" and \"password\")"
                .to_string()
        })
        .and_then(|secret| {
            d.secret_version = secret.version.clone();
            let token = value(secret, "token", str::trim)?;
            let user = value(secret, "username", line_end)?;
            let password = value(secret, "password", line_end)?;
            match (token, user, password) {
                (Some(t), _, _) => Ok((None, None, Some(t))),
                (None, Some(u), Some(p)) => Ok((Some(u), Some(p), None)),
                (None, Some(_), None) => Err("has key \"username\" but no key \"password\"".into()),
                (None, None, Some(_)) => Err("has key \"password\" but no key \"username\"".into()),
                (None, None, None) => {
                    Err("has neither key \"token\" nor keys \"username\" and \"password\"".into())
                }
            }
        });
    match credentials {
        Ok((username, password, bearer_token)) => {
            d.username = username;
            d.password = password;
            d.bearer_token = bearer_token;
            (Destination::Alertmanager(d), None)
        }
        Err(problem) => (
            Destination::Alertmanager(d),
            Some(Problem::Secret {
                secret: r.name.clone(),
                problem,
            }),
        ),
    }
}

/// A value without the line end `echo` leaves (spaces may belong to it).
fn line_end(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

/// A Secret value as text, `trim`med: `None` without the key; an error
/// (naming the key, never the value) when it is not text or is empty.
fn value(secret: &SecretData, key: &str, trim: fn(&str) -> &str) -> Result<Option<String>, String> {
    let Some(bytes) = secret.data.get(key) else {
        return Ok(None);
    };
    let text =
        std::str::from_utf8(bytes).map_err(|_| format!("holds no text under key {key:?}"))?;
    let text = trim(text);
    if text.is_empty() {
        return Err(format!("holds an empty value under key {key:?}"));
    }
    Ok(Some(text.to_string()))
}

fn contract_rule(spec: &AlertRuleSpec, destination: Destination) -> AlertRule {
    AlertRule {
        name: spec.name.clone(),
        matches: contract_match(&spec.matches),
        destination,
        group_by: spec.group_by.iter().map(|k| group_key(*k)).collect(),
        first_wait: Some(spec.first_wait.clone()),
        min_interval: Some(spec.min_interval.clone()),
        max_samples: Some(spec.max_samples),
    }
}

fn contract_match(m: &AlertMatchSpec) -> AlertMatch {
    AlertMatch {
        apps: m.apps.clone(),
        source: m.source.clone(),
        proc_id: m.proc_id.clone(),
        severity_at_most: m.severity_at_most,
        status: m.status.map(|s| StatusRange {
            min: s.min,
            max: s.max,
        }),
        code: m.code.clone(),
        message: m.message.clone(),
        attributes: m.attributes.clone(),
    }
}

fn group_key(k: AlertGroupKey) -> GroupKey {
    match k {
        AlertGroupKey::App => GroupKey::App,
        AlertGroupKey::Source => GroupKey::Source,
        AlertGroupKey::ProcId => GroupKey::ProcId,
        AlertGroupKey::Severity => GroupKey::Severity,
        AlertGroupKey::Code => GroupKey::Code,
        AlertGroupKey::Status => GroupKey::Status,
    }
}

/// A rule error on one line: the regex crate's syntax errors span several
/// (the pattern, a caret, then `error: ...`); a condition message keeps
/// the text before them and the final `error:` line.
fn one_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines.map(str::trim).filter(|l| !l.is_empty()).collect();
    let Some(last) = rest.last() else {
        return first.to_string();
    };
    match (
        first.strip_suffix("regex parse error:"),
        last.strip_prefix("error: "),
    ) {
        (Some(head), Some(why)) => format!("{head}{why}"),
        _ => std::iter::once(first.trim())
            .chain(rest)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const URL: &str = "https://hooks.slack.com/services/T0/B0/sekrit";

    fn spec(rule: serde_json::Value) -> AlertRuleSpec {
        serde_json::from_value(rule).expect("rule spec")
    }

    fn slack(name: &str, secret: &str) -> AlertRuleSpec {
        spec(json!({"name": name, "slack": {"webhookSecretRef": {"name": secret}}}))
    }

    /// A Secret's name, resourceVersion and data.
    type Fixture<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn secrets(items: &[Fixture<'_>]) -> BTreeMap<String, SecretData> {
        items
            .iter()
            .map(|(name, version, data)| {
                let data = data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect();
                (
                    name.to_string(),
                    SecretData {
                        version: version.to_string(),
                        data,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_slack_rule_takes_its_url_and_version_from_the_secret() {
        let rule = spec(json!({
            "name": "router-5xx",
            "match": {"source": "heroku", "procId": "router", "status": {"min": 500, "max": 599},
                      "attributes": {"service.name": "api"}},
            "slack": {"webhookSecretRef": {"name": "slack-alerts"}},
            "groupBy": ["app", "status"],
            "maxSamples": 5,
        }));
        let found = secrets(&[("slack-alerts", "4711", &[("url", &format!("{URL}\n"))])]);
        let r = resolve(&[rule], &found);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let rule = &r.rules[0];
        assert_eq!(rule.name, "router-5xx");
        assert_eq!(
            rule.destination,
            Destination::Slack(SlackDestination {
                webhook_url: URL.to_string(),
                secret_version: "4711".to_string(),
            })
        );
        assert_eq!(
            rule.matches.status,
            Some(StatusRange { min: 500, max: 599 })
        );
        assert_eq!(rule.matches.proc_id.as_deref(), Some("router"));
        assert_eq!(rule.matches.attributes["service.name"], "api");
        assert_eq!(rule.group_by(), [GroupKey::App, GroupKey::Status]);
        assert_eq!(rule.max_samples(), 5);
        assert_eq!(
            rule.first_wait().ok(),
            Some(std::time::Duration::from_secs(30))
        );
    }

    #[test]
    fn alertmanager_credentials_are_a_token_or_a_user_and_password() {
        let am = |name: &str, secret: Option<&str>| {
            let mut am =
                json!({"url": "http://alertmanager.monitoring:9093", "resolveAfter": "10m"});
            if let Some(s) = secret {
                am["credentialsSecretRef"] = json!({"name": s});
            }
            spec(json!({"name": name, "alertmanager": am}))
        };
        let found = secrets(&[
            ("bearer", "1", &[("token", " t0ken \n"), ("username", "u")]),
            (
                "basic",
                "2",
                &[("username", "bob"), ("password", "pa ss\n")],
            ),
            ("half", "3", &[("username", "bob")]),
            ("empty", "4", &[("token", "\n")]),
        ]);
        let r = resolve(
            &[
                am("open", None),
                am("bearer", Some("bearer")),
                am("basic", Some("basic")),
                am("half", Some("half")),
                am("empty", Some("empty")),
                am("gone", Some("gone")),
            ],
            &found,
        );
        let creds: Vec<_> = r
            .rules
            .iter()
            .map(|rule| match &rule.destination {
                Destination::Alertmanager(a) => (
                    rule.name.as_str(),
                    a.username.as_deref(),
                    a.password.as_deref(),
                    a.bearer_token.as_deref(),
                    a.secret_version.as_str(),
                ),
                Destination::Slack(_) => panic!("alertmanager rule"),
            })
            .collect();
        assert_eq!(
            creds,
            [
                ("open", None, None, None, ""),
                ("bearer", None, None, Some("t0ken"), "1"),
                ("basic", Some("bob"), Some("pa ss"), None, "2"),
            ]
        );
        let texts: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "alert rule \"half\": Secret \"half\" has key \"username\" but no key \"password\"",
                "alert rule \"empty\": Secret \"empty\" holds an empty value under key \"token\"",
                "alert rule \"gone\": Secret \"gone\" does not exist (alertmanager.credentialsSecretRef, \
                 key \"token\" or keys \"username\" and \"password\")",
            ]
        );
        assert!(
            r.problems
                .iter()
                .all(|p| matches!(p, AlertProblem::SecretMissing { .. }))
        );
    }

    #[test]
    fn bad_rules_are_left_out_and_named_and_the_others_run() {
        let mut bad_regex = slack("bad-regex", "slack-alerts");
        bad_regex.matches.message = Some("Error R1[45".to_string());
        let mut bad_both = slack("both", "slack-alerts");
        bad_both.alertmanager =
            Some(serde_json::from_value(json!({"url": "http://am:9093"})).expect("am"));
        let found = secrets(&[
            ("slack-alerts", "7", &[("url", URL)]),
            ("no-key", "8", &[("webhook", URL)]),
            ("not-a-url", "9", &[("url", "hooks.slack.com/sekrit")]),
        ]);
        let specs = [
            slack("good", "slack-alerts"),
            bad_regex,
            slack("missing", "slack-missing"),
            slack("keyless", "no-key"),
            slack("ftp", "not-a-url"),
            bad_both,
        ];
        let r = resolve(&specs, &found);
        let names: Vec<&str> = r.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        let texts: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "alert rule \"bad-regex\": match.message: not a valid regular expression: unclosed character class",
                "alert rule \"missing\": Secret \"slack-missing\" does not exist (slack.webhookSecretRef, key \"url\")",
                "alert rule \"keyless\": Secret \"no-key\" has no key \"url\"",
                "alert rule \"ftp\": destination: the Slack webhook URL is not an http(s) URL",
                "alert rule \"both\": destination: set exactly one of slack or alertmanager",
            ]
        );
        assert!(texts.iter().all(|t| !t.contains("sekrit")));
        assert!(matches!(r.problems[0], AlertProblem::InvalidRule { .. }));
        assert!(matches!(r.problems[1], AlertProblem::SecretMissing { .. }));

        // A bad pattern is named even while the rule's Secret is missing.
        let mut both_wrong = slack("both-wrong", "slack-missing");
        both_wrong.matches.proc_id = Some("web.*".to_string());
        both_wrong.first_wait = "soon".to_string();
        let r = resolve(&[both_wrong], &found);
        assert!(
            matches!(&r.problems[0], AlertProblem::InvalidRule { error, .. } if error.starts_with("firstWait: ")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn disabled_destinations_name_the_secret_to_change() {
        let specs = [slack("a", "slack-a"), slack("b", "slack-b")];
        let found = secrets(&[("slack-a", "1", &[("url", URL)])]);
        let rendered = resolve(&specs, &found);
        let reported = BTreeMap::from([
            ("a".to_string(), "channel_not_found".to_string()),
            ("b".to_string(), "http_410".to_string()),
            ("removed".to_string(), "http_403".to_string()),
        ]);
        let problems = disabled(&specs, &rendered, &reported);
        // b does not run (its Secret is missing): only a is disabled.
        assert_eq!(
            problems,
            [AlertProblem::DestinationDisabled {
                rule: "a".to_string(),
                reason: "channel_not_found".to_string(),
                secret: Some("slack-a".to_string()),
            }]
        );
    }

    #[test]
    fn multi_line_errors_become_one_line() {
        assert_eq!(one_line("plain"), "plain");
        assert_eq!(one_line("a\n  b\n"), "a b");
    }
}
