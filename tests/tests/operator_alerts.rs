//! `spec.alerts` end to end against the real kube-apiserver: the operator
//! resolves each rule's Secret into the routes Secret the ingesters read,
//! names every rule it leaves out in `AlertsReady`, follows the Secrets as
//! they are fixed or rotated, and reports a destination the ingester pods
//! (real ones, on the test environment's node) disabled when the fake
//! Slack said the channel is gone. The API server itself refuses a rule
//! with two destinations.

use std::collections::BTreeMap;
use std::time::Duration;

use drainpipe_contract::alerts::{AlertRule, Destination};
use drainpipe_operator::crd::LogDrain;
use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::node::{Logplex, router_frame};
use drainpipe_tests::operator::{
    Harness, TEST_MANAGER, condition, condition_is, condition_reason, wait_for,
};
use drainpipe_tests::slack_fake::SlackFake;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);
const WEBHOOK: &str = "https://hooks.slack.example/services/T0/B0/first-sekrit";
const LATE_WEBHOOK: &str = "https://hooks.slack.example/services/T0/B1/late-sekrit";
const ROTATED_WEBHOOK: &str = "https://hooks.slack.example/services/T0/B0/rotated-sekrit";
const AM_TOKEN: &str = "am-t0ken-sekrit";

fn rules() -> serde_json::Value {
    let slack = |secret: &str| json!({"webhookSecretRef": {"name": secret}});
    json!([
        {"name": "router-5xx",
         "match": {"source": "heroku", "procId": "router", "status": {"min": 500, "max": 599}},
         "slack": slack("slack-alerts"), "groupBy": ["app", "status"]},
        {"name": "bad-regex", "match": {"message": "Error R1[45"}, "slack": slack("slack-alerts")},
        {"name": "late-secret", "match": {"code": ["H12"]},
         "slack": {"webhookSecretRef": {"name": "slack-late", "key": "webhook"}}},
        {"name": "app-errors", "match": {"source": "app", "severityAtMost": 3},
         "alertmanager": {"url": "http://alertmanager.monitoring:9093",
                          "credentialsSecretRef": {"name": "am-auth"}}},
    ])
}

/// The rules in the routes Secret once they satisfy `check`.
async fn wait_routes(
    h: &Harness,
    what: &str,
    check: impl Fn(&[AlertRule]) -> bool,
) -> Vec<AlertRule> {
    let check = &check;
    wait_for(what, MINUTE, || async move {
        let routes = h.routes("shop").await?;
        check(&routes.alerts).then_some(routes.alerts)
    })
    .await
}

fn names(rules: &[AlertRule]) -> Vec<&str> {
    rules.iter().map(|r| r.name.as_str()).collect()
}

fn webhook(rules: &[AlertRule], name: &str) -> Option<(String, String)> {
    match &rules.iter().find(|r| r.name == name)?.destination {
        Destination::Slack(s) => Some((s.webhook_url.clone(), s.secret_version.clone())),
        Destination::Alertmanager(_) => None,
    }
}

/// The LogDrain once `AlertsReady` has `status` (True, False).
async fn wait_alerts_ready(h: &Harness, status: &str) -> LogDrain {
    h.wait_status("shop", &format!("AlertsReady {status}"), MINUTE, |ld| {
        condition_is(ld, "AlertsReady", status)
    })
    .await
}

fn message(ld: &LogDrain) -> String {
    condition(ld, "AlertsReady")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_reach_the_routes_and_bad_ones_are_named() {
    let mut h = Harness::new("alerts", FakeOptions::default()).await;
    h.on_node().await;
    h.heroku.add_app("shop-web");
    let version = h.put_secret("slack-alerts", json!({"url": WEBHOOK})).await;
    h.put_secret("am-auth", json!({"token": AM_TOKEN})).await;
    h.start();
    let mut spec = h.spec(&["shop-web"], None);
    spec["alerts"] = rules();
    h.apply("shop", spec.clone()).await;

    // The invalid regex and the missing Secret are named; the others run.
    let ld = wait_alerts_ready(&h, "False").await;
    assert_eq!(condition_reason(&ld, "AlertsReady"), "InvalidRule");
    let text = message(&ld);
    assert!(
        text.starts_with("2 of 4 alert rules not active: "),
        "{text}"
    );
    assert!(
        text.contains(
            "alert rule \"bad-regex\": match.message: not a valid regular expression: unclosed character class"
        ),
        "{text}"
    );
    assert!(
        text.contains("alert rule \"late-secret\": Secret \"slack-late\" does not exist (slack.webhookSecretRef, key \"webhook\")"),
        "{text}"
    );
    let status = serde_json::to_string(&ld.status).expect("status JSON");
    assert!(
        !status.contains("sekrit"),
        "a secret in the status: {status}"
    );

    let rules = wait_routes(&h, "the valid rules in the routes", |r| {
        names(r) == ["router-5xx", "app-errors"]
    })
    .await;
    assert_eq!(
        webhook(&rules, "router-5xx"),
        Some((WEBHOOK.to_string(), version))
    );
    match &rules[1].destination {
        Destination::Alertmanager(am) => {
            assert_eq!(am.url, "http://alertmanager.monitoring:9093");
            assert_eq!(am.bearer_token.as_deref(), Some(AM_TOKEN));
            assert_eq!(am.resolve_after.as_deref(), Some("5m"));
        }
        Destination::Slack(_) => panic!("app-errors goes to Alertmanager"),
    }
    assert_eq!(rules[0].matches.proc_id.as_deref(), Some("router"));
    assert_eq!(rules[0].first_wait().ok(), Some(Duration::from_secs(30)));

    // Creating the missing Secret is noticed on its own: the rule appears.
    h.put_secret("slack-late", json!({"webhook": LATE_WEBHOOK}))
        .await;
    let rules = wait_routes(&h, "the late rule in the routes", |r| {
        names(r) == ["router-5xx", "late-secret", "app-errors"]
    })
    .await;
    assert_eq!(
        webhook(&rules, "late-secret").map(|w| w.0),
        Some(LATE_WEBHOOK.to_string())
    );
    let ld = h
        .wait_status("shop", "only bad-regex left out", MINUTE, |ld| {
            message(ld).starts_with("1 of 4 alert rules not active")
        })
        .await;
    assert!(message(&ld).contains("\"bad-regex\""), "{}", message(&ld));
    assert!(!message(&ld).contains("late-secret"), "{}", message(&ld));

    // Fixing the pattern: every rule runs.
    spec["alerts"][1]["match"]["message"] = json!("Error R1[45]");
    h.apply("shop", spec.clone()).await;
    let ld = wait_alerts_ready(&h, "True").await;
    assert_eq!(condition_reason(&ld, "AlertsReady"), "RulesActive");
    assert_eq!(message(&ld), "4 rules active");
    wait_routes(&h, "all four rules in the routes", |r| r.len() == 4).await;

    // A rotated webhook reaches the routes with the Secret's new version.
    let rotated = h
        .put_secret("slack-alerts", json!({"url": ROTATED_WEBHOOK}))
        .await;
    let rules = wait_routes(&h, "the rotated webhook in the routes", |r| {
        webhook(r, "router-5xx").is_some_and(|w| w.0 == ROTATED_WEBHOOK)
    })
    .await;
    assert_eq!(
        webhook(&rules, "router-5xx"),
        Some((ROTATED_WEBHOOK.to_string(), rotated))
    );

    // The webhook's channel is gone (Slack answers 404 channel_not_found):
    // the ingester pods on the node post a router 503 there, disable the
    // destination, and say so in their /metrics, which the operator reads.
    let slack = SlackFake::start_on(h.env.node().ip).await;
    slack.gone(404);
    h.put_secret("slack-alerts", json!({"url": slack.webhook_url()}))
        .await;
    let password = h.drain_password("shop").await;
    let token = h.heroku.drains("shop-web")[0].token.clone();
    let logplex = Logplex::new(&password, BTreeMap::from([("shop-web".to_string(), token)]));
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &h.ns);
    let mut pokes = 0;
    // The kubelet swaps the routes Secret volume within a minute or two; until then the pods
    // post to the old webhook, which goes nowhere.
    let ld = wait_for("DestinationDisabled", 4 * MINUTE, || {
        let (h, pods, logplex) = (&h, &pods, &logplex);
        pokes += 1;
        let poke = pokes;
        async move {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
                .await
                .ok()?;
            for ip in list
                .items
                .iter()
                .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            {
                logplex
                    .post(
                        &format!("http://{ip}:8080"),
                        "shop-web",
                        0,
                        &[router_frame("shop-web", 0)],
                    )
                    .await;
            }
            // Pod metrics changes reach no watch of the operator's: poke.
            h.poke("shop", poke).await;
            let ld = h.get("shop").await;
            (condition_reason(&ld, "AlertsReady") == "DestinationDisabled").then_some(ld)
        }
    })
    .await;
    assert_eq!(
        message(&ld),
        "1 of 4 alert rules not active: alert rule \"router-5xx\": destination disabled, \
         Slack answered channel_not_found; it is retried once Secret \"slack-alerts\" changes"
    );
    assert!(
        slack.requests().iter().any(|r| r.status == Some(404)),
        "the pods posted to the webhook and were refused"
    );

    // The API server refuses a rule with two destinations.
    let mut both = spec.clone();
    both["alerts"][0]["alertmanager"] = json!({"url": "http://alertmanager.monitoring:9093"});
    let refused = h
        .logdrains()
        .patch(
            "shop",
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "drainpipe.dev/v1alpha1",
                "kind": "LogDrain",
                "metadata": {"name": "shop"},
                "spec": both,
            })),
        )
        .await
        .expect_err("two destinations are refused");
    assert!(
        refused.to_string().contains("exactly one destination"),
        "{refused}"
    );

    h.teardown().await;
}
