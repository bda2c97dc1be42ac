//! Fir apps: the operator reads each app's generation from App Info and
//! gives Cedar apps a log drain, Fir apps a telemetry drain (logs only,
//! OTLP/HTTP to `{endpoint.url}/otlp/{app}` or OTLP/gRPC to
//! `endpoint.otlpGrpc`, authenticated by `Authorization: Bearer <drain
//! password>`). Against the real kube-apiserver and the Heroku fake, which
//! models telemetry drains from Heroku's published schema
//! (tests/src/heroku_fake.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use drainpipe_operator::crd::{DrainKind, LogDrain};
use drainpipe_tests::heroku_fake::{FakeOptions, FakeTelemetryDrain};
use drainpipe_tests::operator::{ENDPOINT, Harness, condition_is, status_drains, wait_for};
use kube::api::{Patch, PatchParams};
use reqwest::Method;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// The foreign drain a person added to a Fir app for another consumer (the
/// schema's example endpoint and headers).
const FOREIGN_ENDPOINT: &str = "https://api.otelproduct.example/consumer";

async fn harness(prefix: &str, cedar: &[&str], fir: &[&str]) -> Harness {
    let h = Harness::new(
        prefix,
        FakeOptions {
            // Small pages: every list follows Next-Range.
            page_size: 1,
            ..FakeOptions::default()
        },
    )
    .await;
    for app in cedar {
        h.heroku.add_app(app);
    }
    for app in fir {
        h.heroku.add_fir_app(app);
    }
    h
}

fn bearer(password: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("Authorization".to_string(), format!("Bearer {password}"))])
}

/// App `app`'s telemetry drains to `endpoint`: there must be exactly one.
fn our_telemetry_drain(h: &Harness, app: &str, endpoint: &str) -> FakeTelemetryDrain {
    let ours: Vec<FakeTelemetryDrain> = h
        .heroku
        .telemetry_drains(app)
        .into_iter()
        .filter(|d| d.endpoint == endpoint)
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "app {app} telemetry drains to {endpoint}: {ours:?}"
    );
    ours[0].clone()
}

fn foreign(h: &Harness, app: &str) -> FakeTelemetryDrain {
    h.heroku.insert_telemetry_drain(
        app,
        "otlphttp",
        FOREIGN_ENDPOINT,
        &[("API-Key", "example_api_key_012345")],
    )
}

fn recorded(ld: &LogDrain, app: &str) -> drainpipe_operator::crd::DrainStatus {
    status_drains(ld)
        .into_iter()
        .find(|d| d.app == app)
        .unwrap_or_else(|| panic!("status.drains has no {app}: {:?}", status_drains(ld)))
}

async fn set_apps(h: &Harness, name: &str, spec: &mut serde_json::Value, apps: &[&str]) {
    spec["apps"] = json!(apps);
    h.apply(name, spec.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cedar_apps_get_log_drains_and_fir_apps_telemetry_drains() {
    let cedar = ["cedar-one", "cedar-two"];
    let fir = ["fir-one", "fir-two"];
    let mut h = harness("tel", &cedar, &fir).await;
    h.settings.resync = Duration::from_secs(4);
    let other = foreign(&h, "fir-two");
    // Registered by hand as docs/operations.md used to say, before the
    // operator did it, with a password since rotated: adopted, not doubled.
    let by_hand = h.heroku.insert_telemetry_drain(
        "fir-one",
        "otlphttp",
        &format!("{ENDPOINT}/otlp/fir-one"),
        &[("Authorization", "Bearer an-old-password")],
    );
    h.start();
    let all = ["cedar-one", "cedar-two", "fir-one", "fir-two"];
    let mut spec = h.spec(&all, None);
    h.apply("mixed", spec.clone()).await;
    let ld = h.wait_drains_registered("mixed", &all).await;
    let password = h.drain_password("mixed").await;

    for app in cedar {
        let drains = h.heroku.drains(app);
        assert_eq!(drains.len(), 1, "{app}: {drains:?}");
        assert!(
            drains[0]
                .url
                .ends_with(&format!("@logs.example.com/logplex/{app}")),
            "{}",
            drains[0].url
        );
        assert!(h.heroku.telemetry_drains(app).is_empty(), "{app}");
        let rec = recorded(&ld, app);
        assert_eq!(rec.kind, DrainKind::Log);
        assert_eq!(rec.generation.as_deref(), Some("cedar"));
        assert_eq!(rec.id, drains[0].id);
    }
    for app in fir {
        assert!(h.heroku.drains(app).is_empty(), "{app} has no log drain");
        let d = our_telemetry_drain(&h, app, &format!("{ENDPOINT}/otlp/{app}"));
        assert_eq!(d.exporter_type, "otlphttp");
        assert_eq!(d.signals, ["logs"]);
        assert_eq!(d.headers, bearer(&password), "{app}");
        assert_eq!(Some(d.owner_id.clone()), h.heroku.app_id(app));
        let rec = recorded(&ld, app);
        assert_eq!(rec.kind, DrainKind::Telemetry);
        assert_eq!(rec.generation.as_deref(), Some("fir"));
        assert_eq!(rec.id, d.id);
        assert_eq!(rec.app_id, h.heroku.app_id(app));
        assert_eq!(rec.url, format!("{ENDPOINT}/otlp/{app}"));
        assert!(rec.token.is_empty());
    }
    assert_eq!(
        our_telemetry_drain(&h, "fir-one", &by_hand.endpoint).id,
        by_hand.id,
        "the hand-made drain was updated in place"
    );
    assert_eq!(
        h.heroku
            .telemetry_drains("fir-two")
            .iter()
            .filter(|d| **d == other)
            .count(),
        1,
        "the foreign drain is untouched"
    );
    let counts = h.heroku.counts();
    assert_eq!(counts.telemetry_create, 1, "{:?}", h.heroku.requests());
    assert_eq!(counts.telemetry_update, 1, "{:?}", h.heroku.requests());
    assert!(condition_is(&ld, "DrainsRegistered", "True"));
    let routes = h.routes("mixed").await.expect("routes");
    for app in fir {
        let r = &routes.apps[app];
        assert_eq!(r.password, password);
        assert!(r.drain_tokens.is_empty(), "{app}: {:?}", r.drain_tokens);
    }
    let reasons = h.event_reasons("mixed").await;
    for (reason, n) in [
        ("DrainCreated", 2),
        ("TelemetryDrainCreated", 1),
        ("TelemetryDrainUpdated", 1),
    ] {
        assert_eq!(
            reasons.iter().filter(|r| *r == reason).count(),
            n,
            "{reason}: {reasons:?}"
        );
    }

    // Resyncs: one list per app of its own kind, no App Info (the generation
    // is recorded), no write.
    h.heroku.reset_counts();
    let ids: Vec<String> = all.iter().filter_map(|a| h.heroku.app_id(a)).collect();
    wait_for("every app checked again", MINUTE, || {
        let h = &h;
        let ids = &ids;
        async move {
            let requests = h.heroku.requests();
            ids.iter()
                .all(|id| {
                    requests
                        .iter()
                        .any(|r| r.method == Method::GET && r.for_app(id))
                })
                .then_some(())
        }
    })
    .await;
    let counts = h.heroku.counts();
    assert_eq!(counts.writes(), 0, "{:?}", h.heroku.requests());
    assert_eq!(counts.app_info, 0, "{:?}", h.heroku.requests());
    for app in fir {
        let id = h.heroku.app_id(app).expect("id");
        assert!(
            !h.heroku
                .requests()
                .iter()
                .any(|r| r.for_app(&id) && r.path.ends_with("/log-drains")),
            "no log-drain call for Fir app {app}"
        );
    }

    // Someone edits our drain's header: the next resync updates it back.
    let d = our_telemetry_drain(&h, "fir-two", &format!("{ENDPOINT}/otlp/fir-two"));
    h.heroku
        .set_telemetry_headers(&d.id, &[("Authorization", "Bearer tampered")]);
    wait_for("the header put back", MINUTE, || {
        let h = &h;
        let password = &password;
        async move {
            let now = our_telemetry_drain(h, "fir-two", &format!("{ENDPOINT}/otlp/fir-two"));
            (now.headers == bearer(password)).then_some(now)
        }
    })
    .await;
    assert_eq!(h.heroku.counts().telemetry_create, 0);
    assert_eq!(
        our_telemetry_drain(&h, "fir-two", &format!("{ENDPOINT}/otlp/fir-two")).id,
        d.id,
        "updated in place"
    );

    // fir-two leaves the spec: only its telemetry drain of ours goes.
    let before: Vec<String> = status_drains(&h.get("mixed").await)
        .into_iter()
        .filter(|d| d.app != "fir-two")
        .map(|d| d.id)
        .collect();
    let three = ["cedar-one", "cedar-two", "fir-one"];
    set_apps(&h, "mixed", &mut spec, &three).await;
    let ld = h.wait_drains_registered("mixed", &three).await;
    assert_eq!(h.heroku.telemetry_drains("fir-two"), vec![other.clone()]);
    let after: Vec<String> = status_drains(&ld).into_iter().map(|d| d.id).collect();
    assert_eq!(after, before, "the other apps' drains are the same");
    assert!(
        h.event_reasons("mixed")
            .await
            .iter()
            .any(|r| r == "DrainRemoved")
    );

    // Deleted with deletionPolicy Delete: every drain of ours goes, the
    // foreign one stays.
    h.delete_and_wait("mixed").await;
    for app in all {
        assert!(h.heroku.drains(app).is_empty(), "{app}");
    }
    assert_eq!(h.heroku.all_telemetry_drains(), vec![other]);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_removes_telemetry_drains_and_resume_restores_them() {
    let mut h = harness("telsus", &["sus-cedar"], &["sus-fir"]).await;
    let other = foreign(&h, "sus-fir");
    h.start();
    let apps = ["sus-cedar", "sus-fir"];
    let mut spec = h.spec(&apps, None);
    h.apply("sus", spec.clone()).await;
    h.wait_drains_registered("sus", &apps).await;
    let endpoint = format!("{ENDPOINT}/otlp/sus-fir");
    our_telemetry_drain(&h, "sus-fir", &endpoint);

    spec["suspend"] = json!(true);
    h.apply("sus", spec.clone()).await;
    let ld = h
        .wait_status("sus", "suspended", MINUTE, |ld| {
            status_drains(ld).is_empty() && !condition_is(ld, "Ready", "True")
        })
        .await;
    assert!(condition_is(&ld, "DrainsRegistered", "False"));
    assert!(h.heroku.drains("sus-cedar").is_empty());
    assert_eq!(h.heroku.telemetry_drains("sus-fir"), vec![other.clone()]);

    spec["suspend"] = json!(false);
    h.apply("sus", spec).await;
    let ld = h.wait_drains_registered("sus", &apps).await;
    let d = our_telemetry_drain(&h, "sus-fir", &endpoint);
    assert_eq!(recorded(&ld, "sus-fir").id, d.id);
    assert_eq!(d.headers, bearer(&h.drain_password("sus").await));
    assert_eq!(h.heroku.drains("sus-cedar").len(), 1);
    assert!(h.heroku.telemetry_drains("sus-fir").contains(&other));
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_transport_registers_otlp_drains_naming_the_app() {
    let mut h = harness("telgrpc", &[], &["grpc-fir"]).await;
    h.start();
    let mut spec = h.spec(&["grpc-fir"], None);
    spec["endpoint"]["otlpTransport"] = json!("grpc");

    // Without the gRPC address the API server refuses the LogDrain.
    let refused = h
        .logdrains()
        .patch(
            "grpc",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({
                "apiVersion": "drainpipe.dev/v1alpha1", "kind": "LogDrain",
                "metadata": {"name": "grpc"}, "spec": spec,
            })),
        )
        .await
        .expect_err("otlpTransport grpc without otlpGrpc");
    assert!(refused.to_string().contains("otlpGrpc"), "{refused}");

    spec["endpoint"]["otlpGrpc"] = json!("logs.example.com:4317");
    h.apply("grpc", spec).await;
    let ld = h.wait_drains_registered("grpc", &["grpc-fir"]).await;
    let d = our_telemetry_drain(&h, "grpc-fir", "logs.example.com:4317");
    assert_eq!(d.exporter_type, "otlp");
    let mut want = bearer(&h.drain_password("grpc").await);
    want.insert("X-Drainpipe-App".into(), "grpc-fir".into());
    assert_eq!(d.headers, want);
    assert_eq!(recorded(&ld, "grpc-fir").url, "logs.example.com:4317");
    h.teardown().await;
}
