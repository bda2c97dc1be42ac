//! Alert rules on the log stream (`spec.alerts`): which lines, where to
//! (Slack or Alertmanager, credentials in Secrets) and how to group them.
//! The operator resolves the Secrets and writes the rules into the routes
//! Secret the ingesters read (`drainpipe_contract::alerts`).

use std::collections::BTreeMap;

use drainpipe_contract::alerts::{MAX_PATTERN_LEN, MAX_SAMPLES_LIMIT};
use drainpipe_contract::app::APP_NAME_PATTERN;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The duration grammar of `firstWait`, `minInterval` and `resolveAfter`.
const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// One alert rule: the lines it matches go, grouped, to exactly one of
/// `slack` and `alertmanager`. A rule the operator cannot run (a bad
/// regular expression, a missing Secret) is left out and named in the
/// `AlertsReady` condition; the other rules still run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.slack) != has(self.alertmanager)").message("an alert rule has exactly one destination: set slack or alertmanager"))]
pub struct AlertRuleSpec {
    /// Name of the rule (1 to 63 of `a-z`, `0-9` and `-`), unique in the
    /// LogDrain: the `alertname` label in Alertmanager, the rule in Slack
    /// messages and the `rule` label of the ingesters' alert metrics.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9-]+$"))]
    pub name: String,

    /// Which lines match; every field given must hold (none: every line).
    #[serde(default, rename = "match")]
    pub matches: AlertMatchSpec,

    /// Post to a Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackSpec>,

    /// Send to Alertmanager (`POST {url}/api/v2/alerts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerSpec>,

    /// The fields whose values form a group: one message (or one
    /// Alertmanager alert) per group. Default `[app, source, severity]`;
    /// also `procId`, `code` and `status`.
    #[serde(default = "default_group_by")]
    #[schemars(length(min = 1, max = 6))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub group_by: Vec<AlertGroupKey>,

    /// How long a new group collects lines before its first message
    /// (default `30s`; `500ms`, `10s`, `2m`...).
    #[serde(default = "default_first_wait")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub first_wait: String,

    /// The shortest time between two messages of one group (default `1m`):
    /// lines matching in between are counted into the next message.
    #[serde(default = "default_min_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub min_interval: String,

    /// Most sample lines quoted in one message (default 10, at most 40);
    /// the message then says how many more lines matched.
    #[serde(default = "default_max_samples")]
    #[schemars(range(max = MAX_SAMPLES_LIMIT))]
    pub max_samples: u32,
}

/// What a line must have to match an alert rule; every field given must
/// hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AlertMatchSpec {
    /// Apps whose lines the rule sees (default: every app of the LogDrain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500), inner(regex(pattern = APP_NAME_PATTERN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub apps: Vec<String>,

    /// Glob on the syslog APP-NAME (`*` any run of characters, `?` one
    /// character): `heroku` for the platform's lines (router, dynos
    /// starting and stopping, R14), `app` for the app's own output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_PATTERN_LEN))]
    pub source: Option<String>,

    /// Glob on the PROCID: `router`, `web.1`, `web.*`, `worker.?`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_PATTERN_LEN))]
    pub proc_id: Option<String>,

    /// Syslog severity at most this: 0 emergency, 1 alert, 2 critical, 3
    /// error, 4 warning, 5 notice, 6 info, 7 debug. OTLP records of Fir apps
    /// map onto it (ERROR is 3, WARN 4, INFO 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 7))]
    pub severity_at_most: Option<u8>,

    /// Router lines whose HTTP status is in this range, both ends included,
    /// e.g. `{min: 500, max: 599}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusRangeSpec>,

    /// Heroku error codes, any of them: `H12` (request timeout), `H13`,
    /// `R14` (memory quota exceeded), `R15`, `L10`...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(regex(pattern = r"^[A-Z][0-9]{1,3}$")))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub code: Vec<String>,

    /// Regular expression searched in the message (Rust `regex` syntax, not
    /// anchored: `Error R1[45]`, `(?i)timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_PATTERN_LEN))]
    pub message: Option<String>,

    /// Exact values of logfmt keys in the message (`at: error`) or of OTLP
    /// record or resource attributes (`service.name: api`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// A range of HTTP status codes, both ends included.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("status.min must not be above status.max"))]
pub struct StatusRangeSpec {
    /// Lowest status matched, e.g. `500`.
    #[schemars(range(min = 100, max = 599))]
    pub min: u16,
    /// Highest status matched, e.g. `599`.
    #[schemars(range(min = 100, max = 599))]
    pub max: u16,
}

/// A field whose values form a group of matching lines.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum AlertGroupKey {
    /// The Heroku app.
    App,
    /// The syslog APP-NAME (`heroku`, `app`).
    Source,
    /// The PROCID (`router`, `web.1`).
    ProcId,
    /// The syslog severity.
    Severity,
    /// The Heroku error code (`H12`).
    Code,
    /// The router's HTTP status.
    Status,
}

/// A Slack incoming webhook.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlackSpec {
    /// The Secret in the LogDrain's namespace holding the webhook URL
    /// (`https://hooks.slack.com/services/...`). A destination Slack
    /// refused for good (403, 404, 410: the channel is gone or archived)
    /// is tried again once this Secret changes.
    pub webhook_secret_ref: WebhookSecretRef,
}

/// A key of a Secret in the LogDrain's namespace holding a webhook URL.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data (default `url`).
    #[serde(default = "default_webhook_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// An Alertmanager (v2 API).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerSpec {
    /// Base URL, without credentials (they go in `credentialsSecretRef`),
    /// e.g. `http://alertmanager.monitoring:9093`.
    #[schemars(
        length(min = 8, max = 2048),
        regex(pattern = r"^https?://[^/@?#\s]+(/[^\s?#]*)?$")
    )]
    pub url: String,

    /// A Secret in the LogDrain's namespace with keys `username` and
    /// `password` (HTTP Basic), or `token` (a bearer token). Omit when
    /// Alertmanager needs no credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// How long an alert stays firing after its last matching line
    /// (default `5m`): its `endsAt`, so alerts resolve by themselves.
    #[serde(default = "default_resolve_after")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub resolve_after: String,
}

/// A Secret in the LogDrain's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl AlertRuleSpec {
    /// The Secrets the rule reads: its webhook's or its credentials'.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        let slack = self
            .slack
            .iter()
            .map(|s| s.webhook_secret_ref.name.as_str());
        let alertmanager = self
            .alertmanager
            .iter()
            .filter_map(|a| a.credentials_secret_ref.as_ref())
            .map(|r| r.name.as_str());
        slack.chain(alertmanager)
    }
}

fn default_group_by() -> Vec<AlertGroupKey> {
    vec![
        AlertGroupKey::App,
        AlertGroupKey::Source,
        AlertGroupKey::Severity,
    ]
}

fn default_first_wait() -> String {
    "30s".to_string()
}

fn default_min_interval() -> String {
    "1m".to_string()
}

fn default_max_samples() -> u32 {
    drainpipe_contract::alerts::DEFAULT_MAX_SAMPLES
}

fn default_resolve_after() -> String {
    "5m".to_string()
}

fn default_webhook_key() -> String {
    "url".to_string()
}

#[cfg(test)]
mod tests {
    use drainpipe_contract::alerts::{
        DEFAULT_FIRST_WAIT, DEFAULT_MIN_INTERVAL, DEFAULT_RESOLVE_AFTER,
    };
    use drainpipe_contract::units::parse_duration;
    use serde_json::json;

    use super::*;
    use crate::crd::fixtures::{crd_json, spec_schema};

    #[test]
    fn defaults_are_the_contracts() {
        assert_eq!(
            parse_duration(&default_first_wait()),
            Ok(DEFAULT_FIRST_WAIT)
        );
        assert_eq!(
            parse_duration(&default_min_interval()),
            Ok(DEFAULT_MIN_INTERVAL)
        );
        assert_eq!(
            parse_duration(&default_resolve_after()),
            Ok(DEFAULT_RESOLVE_AFTER)
        );
        let rule: AlertRuleSpec = serde_json::from_value(json!({
            "name": "r14",
            "match": {"code": ["R14", "R15"]},
            "slack": {"webhookSecretRef": {"name": "slack-alerts"}},
        }))
        .expect("rule");
        assert_eq!(
            rule.slack
                .as_ref()
                .map(|s| s.webhook_secret_ref.key.as_str()),
            Some("url")
        );
        assert_eq!(rule.group_by, default_group_by());
        assert_eq!(rule.max_samples, 10);
        assert_eq!(rule.secret_names().collect::<Vec<_>>(), ["slack-alerts"]);
    }

    #[test]
    fn the_schema_names_one_destination_and_keys_rules_by_name() {
        let crd = crd_json();
        let alerts = &spec_schema(&crd)["properties"]["alerts"];
        assert_eq!(alerts["x-kubernetes-list-type"], "map");
        assert_eq!(alerts["x-kubernetes-list-map-keys"], json!(["name"]));
        let rule = &alerts["items"];
        assert_eq!(
            rule["x-kubernetes-validations"][0]["rule"],
            "has(self.slack) != has(self.alertmanager)"
        );
        assert_eq!(
            rule["properties"]["groupBy"]["default"],
            json!(["app", "source", "severity"])
        );
        assert_eq!(rule["properties"]["firstWait"]["default"], "30s");
        let m = &rule["properties"]["match"]["properties"];
        assert_eq!(m["severityAtMost"]["maximum"], 7.0);
        assert!(m["procId"].is_object() && m["status"].is_object());
        assert_eq!(
            rule["properties"]["alertmanager"]["properties"]["resolveAfter"]["default"],
            "5m"
        );
    }
}
