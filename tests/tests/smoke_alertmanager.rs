//! The test Alertmanager is the real one, as the ingester's alert destination sees it: alerts
//! posted to `/api/v2/alerts` come back from `GET /api/v2/alerts` with their labels and
//! annotations, and a resolved alert (`endsAt` in the past) is no longer listed.

use std::time::{Duration, Instant};

use drainpipe_tests::env::TestEnv;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("format a timestamp")
}

fn parse(t: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(t.as_str().expect("a timestamp string"), &Rfc3339)
        .expect("an RFC 3339 timestamp")
}

/// Status and body of `POST /api/v2/alerts`.
async fn try_post_alerts(client: &reqwest::Client, am: &str, alerts: &Value) -> (u16, String) {
    let res = client
        .post(format!("{am}/api/v2/alerts"))
        .json(alerts)
        .send()
        .await
        .expect("POST /api/v2/alerts");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

async fn post_alerts(client: &reqwest::Client, am: &str, alerts: &Value) {
    let (status, body) = try_post_alerts(client, am, alerts).await;
    assert_eq!(status, 200, "POST /api/v2/alerts: {body}");
}

/// `GET /api/v2/alerts?filter=alertname="NAME"` plus extra query parameters.
async fn get_alerts(
    client: &reqwest::Client,
    am: &str,
    alertname: &str,
    extra: &[(&str, &str)],
) -> Vec<Value> {
    let filter = format!("alertname=\"{alertname}\"");
    let mut query = vec![("filter", filter.as_str())];
    query.extend_from_slice(extra);
    let res = client
        .get(format!("{am}/api/v2/alerts"))
        .query(&query)
        .send()
        .await
        .expect("GET /api/v2/alerts");
    assert_eq!(res.status().as_u16(), 200);
    res.json::<Vec<Value>>()
        .await
        .expect("a JSON list of alerts")
}

#[tokio::test]
async fn status_reports_the_pinned_release_and_the_test_config() {
    let env = TestEnv::require();
    let am = env.alertmanager();
    let status: Value = reqwest::get(format!("{am}/api/v2/status"))
        .await
        .expect("GET /api/v2/status")
        .json()
        .await
        .expect("status JSON");
    // scripts/testenv.pins: ALERTMANAGER_VERSION=v0.35.0.
    assert_eq!(status["versionInfo"]["version"], "0.35.0", "{status}");
    // No gossip listener: a single, unclustered Alertmanager.
    assert_eq!(status["cluster"]["status"], "disabled", "{status}");
    let config = status["config"]["original"].as_str().unwrap_or_default();
    assert!(config.contains("drainpipe-test-null"), "{config}");
    assert!(config.contains("resolve_timeout: 10s"), "{config}");
}

#[tokio::test]
async fn a_posted_alert_is_listed_with_its_labels_then_resolves() {
    let env = TestEnv::require();
    let am = env.alertmanager();
    let client = reqwest::Client::new();
    let alertname = format!("drainpipe-smoke-{}", uuid::Uuid::new_v4().simple());
    let labels = json!({
        "alertname": alertname,
        "app": "billing",
        "source": "heroku",
        "severity": "3",
    });
    let annotations = json!({
        "summary": "2 lines matched rule h12",
        "lines": "at=error code=H12 desc=\"Request timeout\"\nat=error code=H12 desc=\"Request timeout\"",
    });
    let now = OffsetDateTime::now_utc();
    let first_seen = now - time::Duration::minutes(1);
    let alert = json!([{
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(first_seen),
        "endsAt": rfc3339(now + time::Duration::minutes(5)),
        "generatorURL": "http://drainpipe.invalid/rules/h12",
    }]);
    post_alerts(&client, am, &alert).await;

    let listed = get_alerts(&client, am, &alertname, &[]).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let got = &listed[0];
    assert_eq!(got["labels"], labels);
    assert_eq!(got["annotations"], annotations);
    // Alertmanager runs its silences and inhibitions when asked, so a new alert is `active` at
    // once (not `unprocessed`).
    assert_eq!(got["status"]["state"], "active", "{got}");
    assert_eq!(got["status"]["silencedBy"], json!([]));
    assert_eq!(got["status"]["inhibitedBy"], json!([]));
    assert_eq!(got["receivers"], json!([{"name": "drainpipe-test-null"}]));
    assert_eq!(got["generatorURL"], "http://drainpipe.invalid/rules/h12");
    assert!(got["fingerprint"].as_str().is_some_and(|f| !f.is_empty()));

    // The query parameters: active=false leaves active alerts out; silenced=false and
    // inhibited=false leave out only silenced or inhibited ones.
    assert!(
        get_alerts(&client, am, &alertname, &[("active", "false")])
            .await
            .is_empty()
    );
    for extra in [
        ("silenced", "false"),
        ("inhibited", "false"),
        ("unprocessed", "false"),
    ] {
        assert_eq!(
            get_alerts(&client, am, &alertname, &[extra]).await.len(),
            1,
            "{extra:?}"
        );
    }
    // The same alert is in its group.
    let groups: Vec<Value> = client
        .get(format!("{am}/api/v2/alerts/groups"))
        .query(&[("filter", format!("alertname=\"{alertname}\""))])
        .send()
        .await
        .expect("GET /api/v2/alerts/groups")
        .json()
        .await
        .expect("groups JSON");
    assert_eq!(groups.len(), 1, "{groups:#?}");
    assert_eq!(groups[0]["labels"], json!({"alertname": alertname}));
    assert_eq!(groups[0]["alerts"].as_array().map(Vec::len), Some(1));

    // An endsAt before the startsAt sent with it is refused whole (400), so a resolving client
    // sends the alert's real startsAt, or none (Alertmanager then takes endsAt for it).
    let resolved_at = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let backwards = json!([{
        "labels": labels,
        "startsAt": rfc3339(now + time::Duration::seconds(30)),
        "endsAt": rfc3339(resolved_at),
    }]);
    let (status, body) = try_post_alerts(&client, am, &backwards).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("start time must be before end time"),
        "{body}"
    );
    assert_eq!(get_alerts(&client, am, &alertname, &[]).await.len(), 1);

    // Resolve it: the same labels with endsAt in the past. A resolved alert is not listed at
    // all, whatever the query parameters (no `resolved` state in the v2 API).
    let resolve = json!([{
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(first_seen),
        "endsAt": rfc3339(resolved_at),
    }]);
    let sent = Instant::now();
    post_alerts(&client, am, &resolve).await;
    let listed = get_alerts(&client, am, &alertname, &[]).await;
    assert!(
        listed.is_empty(),
        "resolved alert still listed right after the post: {listed:#?}"
    );
    assert!(sent.elapsed() < Duration::from_secs(2));
    for extra in [
        ("active", "false"),
        ("silenced", "true"),
        ("inhibited", "true"),
        ("unprocessed", "true"),
    ] {
        assert!(
            get_alerts(&client, am, &alertname, &[extra])
                .await
                .is_empty(),
            "{extra:?}"
        );
    }

    // Firing again (endsAt in the future) brings it back; resolving without a startsAt works.
    post_alerts(&client, am, &alert).await;
    let listed = get_alerts(&client, am, &alertname, &[]).await;
    assert_eq!(listed.len(), 1);
    // (Alertmanager keeps milliseconds.)
    let starts = parse(&listed[0]["startsAt"]);
    assert!(
        (starts - first_seen).abs() < time::Duration::milliseconds(1),
        "{starts}"
    );
    let resolve_bare = json!([{"labels": labels, "endsAt": rfc3339(OffsetDateTime::now_utc())}]);
    post_alerts(&client, am, &resolve_bare).await;
    assert!(get_alerts(&client, am, &alertname, &[]).await.is_empty());
}

#[tokio::test]
async fn an_alert_without_ends_at_resolves_after_resolve_timeout() {
    let env = TestEnv::require();
    let am = env.alertmanager();
    let client = reqwest::Client::new();
    let alertname = format!("drainpipe-smoke-timeout-{}", uuid::Uuid::new_v4().simple());
    let posted = OffsetDateTime::now_utc();
    let started = Instant::now();
    post_alerts(
        &client,
        am,
        &json!([{"labels": {"alertname": alertname, "app": "billing"}}]),
    )
    .await;
    let listed = get_alerts(&client, am, &alertname, &[]).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    // Alertmanager sets startsAt to the arrival and endsAt to arrival + resolve_timeout (10 s in
    // the test config).
    let (starts, ends) = (parse(&listed[0]["startsAt"]), parse(&listed[0]["endsAt"]));
    let timeout = ends - starts;
    assert!(
        (time::Duration::milliseconds(9_900)..=time::Duration::milliseconds(10_100))
            .contains(&timeout),
        "endsAt - startsAt = {timeout}"
    );
    assert!((starts - posted).abs() < time::Duration::seconds(2));

    // Listed until then, gone after.
    let deadline = started + Duration::from_secs(20);
    loop {
        if get_alerts(&client, am, &alertname, &[]).await.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still listed after 20 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let gone_after = started.elapsed();
    assert!(
        gone_after >= Duration::from_secs(9),
        "resolved after only {gone_after:?}"
    );
}
