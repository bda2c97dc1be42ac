//! The API server enforces the CRD's validation (so users get errors at
//! `kubectl apply`, not in a status). That the committed CRD matches the
//! Rust types is operator/tests/cli.rs's check, on the binary's output.

use drainpipe_operator::crd::LogDrain;
use drainpipe_tests::env::TestEnv;
use drainpipe_tests::operator::{apply_crd, test_namespace};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn valid() -> serde_json::Value {
    json!({
        "apps": ["app-one", "app-two"],
        "heroku": {"apiTokenSecretRef": {"name": "heroku", "key": "token"}},
        "endpoint": {"url": "https://logs.example.com"},
        "archive": {"s3": {"bucket": "logs-bucket", "region": "us-east-1"}},
    })
}

fn with(path: &[&str], value: serde_json::Value) -> serde_json::Value {
    let mut spec = valid();
    let mut cur = &mut spec;
    for p in &path[..path.len() - 1] {
        cur = &mut cur[*p];
    }
    cur[path[path.len() - 1]] = value;
    spec
}

/// syslog+tls drains with `listener` as `ingester.syslog`.
fn syslog_listener(listener: serde_json::Value) -> serde_json::Value {
    let mut spec = with(&["endpoint"], json!({"syslogTls": "logs.example.com:514"}));
    spec["ingester"] = json!({ "syslog": listener });
    spec
}

async fn create(
    api: &Api<LogDrain>,
    name: &str,
    spec: serde_json::Value,
) -> Result<LogDrain, String> {
    let obj: LogDrain = serde_json::from_value(json!({
        "apiVersion": "drainpipe.dev/v1alpha1",
        "kind": "LogDrain",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .map_err(|e| format!("client-side: {e}"))?;
    api.create(&PostParams::default(), &obj)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn api_server_enforces_the_schema() {
    let env = TestEnv::require();
    let client = env.kube_client().await;
    apply_crd(&client).await;
    let ns = test_namespace(&client, "crd").await;
    let api: Api<LogDrain> = Api::namespaced(client.clone(), &ns);

    let ok = create(&api, "ok", valid())
        .await
        .expect("a valid LogDrain is accepted");
    assert_eq!(ok.spec.ingester.replicas, 2, "defaults applied");
    assert_eq!(ok.spec.archive.s3.prefix, "logs/");

    let rejected = [
        ("empty-apps", with(&["apps"], json!([]))),
        ("bad-app", with(&["apps"], json!(["Not_An_App"]))),
        ("short-app", with(&["apps"], json!(["ab"]))),
        ("dup-apps", with(&["apps"], json!(["app-one", "app-one"]))),
        (
            "http-url",
            with(&["endpoint", "url"], json!("http://logs.example.com")),
        ),
        (
            "slash-url",
            with(&["endpoint", "url"], json!("https://logs.example.com/")),
        ),
        (
            "creds-url",
            with(&["endpoint", "url"], json!("https://u:p@logs.example.com")),
        ),
        (
            "query-url",
            with(
                &["endpoint", "url"],
                json!("https://logs.example.com/x?token=1"),
            ),
        ),
        (
            "bad-prefix",
            with(&["archive", "s3", "prefix"], json!("/logs")),
        ),
        ("bad-policy", with(&["deletionPolicy"], json!("Destroy"))),
        ("neg-replicas", with(&["ingester"], json!({"replicas": -1}))),
        (
            "both-endpoints",
            with(
                &["endpoint"],
                json!({"url": "https://logs.example.com", "syslogTls": "logs.example.com:6514"}),
            ),
        ),
        ("no-endpoint", with(&["endpoint"], json!({}))),
        (
            "syslog-scheme",
            with(
                &["endpoint"],
                json!({"syslogTls": "syslog+tls://logs.example.com:6514"}),
            ),
        ),
        (
            "syslog-no-port",
            with(&["endpoint"], json!({"syslogTls": "logs.example.com"})),
        ),
        (
            "syslog-big-port",
            with(
                &["endpoint"],
                json!({"syslogTls": "logs.example.com:70000"}),
            ),
        ),
        (
            "syslog-listener-without-drains",
            with(&["ingester"], json!({"syslog": {"port": 6514}})),
        ),
        ("syslog-low-port", syslog_listener(json!({"port": 514}))),
        (
            "syslog-on-http-port",
            syslog_listener(json!({"port": 8080})),
        ),
    ];
    for (name, spec) in rejected {
        let err = create(&api, name, spec).await.expect_err(name);
        assert!(
            err.contains("Invalid") || err.contains("invalid") || err.contains("client-side"),
            "{name}: {err}"
        );
    }
    // The CEL rule's message reaches the user.
    let err = create(
        &api,
        "creds",
        with(&["endpoint", "url"], json!("https://u:p@logs.example.com")),
    )
    .await
    .expect_err("credentials in the URL");
    assert!(err.contains("without credentials"), "{err}");

    let path_ok = with(
        &["endpoint", "url"],
        json!("https://logs.example.com:8443/drainpipe"),
    );
    create(&api, "path-ok", path_ok)
        .await
        .expect("a URL with a port and a path is accepted");

    // The transport rules' messages say what to do.
    let err = create(
        &api,
        "both",
        with(
            &["endpoint"],
            json!({"url": "https://logs.example.com", "syslogTls": "logs.example.com:6514"}),
        ),
    )
    .await
    .expect_err("two transports");
    assert!(err.contains("exactly one of endpoint.url"), "{err}");
    let err = create(
        &api,
        "lonely-listener",
        with(&["ingester"], json!({"syslog": {"port": 6514}})),
    )
    .await
    .expect_err("a listener without syslog drains");
    assert!(err.contains("set endpoint.syslogTls too"), "{err}");

    // The public port may be privileged; the pods' port is not.
    let syslog_ok = syslog_listener(json!({"tlsSecretName": "logs-tls"}));
    let ok = create(&api, "syslog-ok", syslog_ok)
        .await
        .expect("a syslog+tls LogDrain is accepted");
    let syslog = ok.spec.ingester.syslog.expect("syslog listener");
    assert_eq!(syslog.port, 6514, "default port applied");
    assert_eq!(syslog.tls_secret_name.as_deref(), Some("logs-tls"));

    // Autoscaling: min <= max, min >= 1, a target for mode operator, and
    // the messages say what to set.
    let scaling = |a: serde_json::Value| with(&["ingester"], json!({"autoscaling": a}));
    let err = create(
        &api,
        "min-over-max",
        scaling(json!({"mode": "operator", "minReplicas": 5, "maxReplicas": 2, "targetMessagesPerSecond": 1000})),
    )
    .await
    .expect_err("minReplicas above maxReplicas");
    assert!(err.contains("minReplicas must not be above"), "{err}");
    let err = create(&api, "no-target", scaling(json!({"mode": "operator"})))
        .await
        .expect_err("mode operator without a target");
    assert!(err.contains("set targetMessagesPerSecond"), "{err}");
    for (name, a) in [
        ("zero-min", json!({"mode": "hpa", "minReplicas": 0})),
        ("off-mode", json!({"mode": "off"})),
        (
            "bad-window",
            json!({"mode": "hpa", "scaleDownStabilization": "300"}),
        ),
        (
            "bad-bytes",
            json!({"mode": "operator", "targetBytesPerSecond": "lots"}),
        ),
    ] {
        create(&api, name, scaling(a)).await.expect_err(name);
    }
    let ok = create(
        &api,
        "scaled",
        scaling(json!({"mode": "operator", "targetBytesPerSecond": "8MiB"})),
    )
    .await
    .expect("an autoscaled LogDrain is accepted");
    let a = ok.spec.ingester.autoscaling.expect("autoscaling");
    assert_eq!(
        (a.min_replicas, a.max_replicas),
        (1, 10),
        "defaults applied"
    );
    assert_eq!(a.scale_down_stabilization, "5m");

    // Alert rules: one destination each, unique well-formed names, the
    // schema's grammar and ranges. A regular expression is the operator's
    // to check (Rust syntax): the schema takes any.
    let slack = json!({"webhookSecretRef": {"name": "slack-alerts"}});
    let alerts = |rules: serde_json::Value| with(&["alerts"], rules);
    let err = create(
        &api,
        "two-destinations",
        alerts(json!([{"name": "a", "slack": slack, "alertmanager": {"url": "http://am:9093"}}])),
    )
    .await
    .expect_err("a rule with two destinations");
    assert!(err.contains("exactly one destination"), "{err}");
    for (name, rules) in [
        ("no-destination", json!([{"name": "a"}])),
        (
            "dup-rules",
            json!([{"name": "a", "slack": slack}, {"name": "a", "slack": slack}]),
        ),
        (
            "bad-rule-name",
            json!([{"name": "Router_5xx", "slack": slack}]),
        ),
        (
            "bad-wait",
            json!([{"name": "a", "slack": slack, "firstWait": "30"}]),
        ),
        (
            "bad-severity",
            json!([{"name": "a", "slack": slack, "match": {"severityAtMost": 8}}]),
        ),
        (
            "bad-status",
            json!([{"name": "a", "slack": slack, "match": {"status": {"min": 599, "max": 500}}}]),
        ),
        (
            "am-creds-url",
            json!([{"name": "a", "alertmanager": {"url": "http://u:p@am:9093"}}]),
        ),
        (
            "bad-group",
            json!([{"name": "a", "slack": slack, "groupBy": ["host"]}]),
        ),
    ] {
        create(&api, name, alerts(rules)).await.expect_err(name);
    }
    let ok = create(
        &api,
        "alerted",
        alerts(
            json!([{"name": "router-5xx", "match": {"message": "Error R1[45"}, "slack": slack}]),
        ),
    )
    .await
    .expect("a rule the schema accepts, whatever its pattern");
    let rule = &ok.spec.alerts[0];
    assert_eq!(
        (
            rule.first_wait.as_str(),
            rule.min_interval.as_str(),
            rule.max_samples
        ),
        ("30s", "1m", 10),
        "defaults applied"
    );
    assert_eq!(
        rule.slack
            .as_ref()
            .map(|s| s.webhook_secret_ref.key.as_str()),
        Some("url")
    );

    // Archive format and compaction: the server refuses what the ingester
    // could not run (sent as JSON, so no client-side type stands between).
    let raw = |name: &str, archive: serde_json::Value| {
        let mut spec = valid();
        for (k, v) in archive.as_object().expect("archive fields") {
            spec["archive"][k] = v.clone();
        }
        let api = api.clone();
        let name = name.to_string();
        async move {
            let obj = json!({
                "apiVersion": "drainpipe.dev/v1alpha1", "kind": "LogDrain",
                "metadata": {"name": name}, "spec": spec,
            });
            api.patch(&name, &PatchParams::apply("crd-test"), &Patch::Apply(&obj))
                .await
                .map_err(|e| e.to_string())
        }
    };
    for (name, archive) in [
        ("csv", json!({"format": "csv"})),
        ("format-case", json!({"format": "Parquet"})),
        (
            "schedule-words",
            json!({"compaction": {"schedule": "every night"}}),
        ),
        (
            "schedule-four",
            json!({"compaction": {"schedule": "17 3 * *"}}),
        ),
        (
            "schedule-tz",
            json!({"compaction": {"schedule": "TZ=UTC 17 3 * * *"}}),
        ),
        (
            "schedule-macro",
            json!({"compaction": {"schedule": "@sometimes"}}),
        ),
        ("size-small", json!({"compaction": {"targetSize": "1MiB"}})),
        ("size-large", json!({"compaction": {"targetSize": "2GiB"}})),
        (
            "size-large-mb",
            json!({"compaction": {"targetSize": "1100MB"}}),
        ),
        (
            "size-bare",
            json!({"compaction": {"targetSize": "134217728"}}),
        ),
        (
            "size-unit",
            json!({"compaction": {"targetSize": "128 potatoes"}}),
        ),
        ("grace-bare", json!({"compaction": {"grace": "2"}})),
    ] {
        let err = raw(name, archive).await.expect_err(name);
        assert!(
            err.contains("Invalid") || err.contains("invalid"),
            "{name}: {err}"
        );
    }
    let err = raw(
        "size-message",
        json!({"compaction": {"targetSize": "8MiB"}}),
    )
    .await
    .expect_err("under 16MiB");
    assert!(
        err.contains("targetSize must be from 16MiB to 1GiB"),
        "{err}"
    );
    for (name, size) in [
        ("size-min", "16MiB"),
        ("size-max", "1GiB"),
        ("size-max-mib", "1024MiB"),
        ("size-mb", "512MB"),
    ] {
        raw(name, json!({"compaction": {"targetSize": size}}))
            .await
            .unwrap_or_else(|e| panic!("{size}: {e}"));
    }
    let ok = raw("compacted", json!({"format": "parquet", "compaction": {}}))
        .await
        .expect("parquet with compaction's defaults");
    assert_eq!(
        ok.spec.archive.format,
        drainpipe_operator::crd::Format::Parquet
    );
    let c = ok.spec.archive.compaction.expect("compaction");
    assert_eq!(
        (
            c.schedule.as_str(),
            c.target_size.as_str(),
            c.grace.as_str(),
            c.suspend
        ),
        ("17 3 * * *", "128MiB", "2h", false),
        "defaults applied"
    );
    let ok = raw(
        "daily",
        json!({"compaction": {"schedule": "@daily", "grace": "90m"}}),
    )
    .await
    .expect("a cron macro");
    assert_eq!(
        ok.spec.archive.format,
        drainpipe_operator::crd::Format::Json,
        "default"
    );
    // No operator runs here, so the LogDrains have no finalizer: the namespace goes with them,
    // and no later operator on the cluster (the node test's) takes them up.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .delete(&ns, &Default::default())
        .await
        .expect("delete the test namespace");
}
