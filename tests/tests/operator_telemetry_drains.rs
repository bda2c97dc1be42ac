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
use drainpipe_tests::heroku_fake::{FakeOptions, FakeTelemetryDrain, herokus_clients_accept};
use drainpipe_tests::operator::{
    ENDPOINT, Harness, condition, condition_is, condition_reason, status_drains, wait_for,
};
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

/// Every request the operator made is a call Heroku's own clients make,
/// with the `Accept` variant they send (tests/src/heroku_fake.rs,
/// `herokus_clients_accept`).
fn assert_requests_as_herokus_clients_send(h: &Harness) {
    for r in h.heroku.requests() {
        assert!(
            r.as_herokus_clients_send(),
            "{} {} with Accept {:?}; Heroku's clients send {:?}",
            r.method,
            r.path,
            r.accept,
            herokus_clients_accept(&r.method, &r.path)
        );
    }
}

/// Forgets what the operator knew: the process is restarted and the
/// LogDrain's `status.drains` is emptied (a restore from a backup without
/// status, a status written by hand), so only Heroku says what is ours.
async fn lose_status(h: &mut Harness, name: &str) {
    h.kill().await;
    h.logdrains()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"drains": []}})),
        )
        .await
        .expect("empty status.drains");
    assert!(status_drains(&h.get(name).await).is_empty());
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
    for app in fir {
        let id = h.heroku.app_id(app).expect("id");
        let tried = h
            .heroku
            .requests()
            .iter()
            .any(|r| r.method == Method::POST && (r.for_app(app) || r.for_app(&id)));
        assert!(!tried, "a log drain was tried on Fir app {app}");
    }
    assert_requests_as_herokus_clients_send(&h);
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
    assert_requests_as_herokus_clients_send(&h);
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

/// Retain, re-creation and removal with the status lost, for both kinds:
/// the operator finds its telemetry drains on Heroku by endpoint and drain
/// password, as it finds its log drains by URL, adopts them instead of
/// making second ones, and removes them on suspend and deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fir_drains_are_adopted_and_removed_when_the_status_is_lost() {
    let mut h = harness("tellost", &["lost-cedar"], &["lost-fir"]).await;
    let other = foreign(&h, "lost-fir");
    h.start();
    let apps = ["lost-cedar", "lost-fir"];
    let endpoint = format!("{ENDPOINT}/otlp/lost-fir");
    let mut spec = h.spec(&apps, None);
    spec["deletionPolicy"] = json!("Retain");
    h.apply("lost", spec.clone()).await;
    h.wait_drains_registered("lost", &apps).await;
    let fir = our_telemetry_drain(&h, "lost-fir", &endpoint);
    let cedar = h.heroku.drains("lost-cedar");
    assert_eq!(cedar.len(), 1);

    // Retain: the LogDrain goes, both drains stay.
    h.delete_and_wait("lost").await;
    assert_eq!(our_telemetry_drain(&h, "lost-fir", &endpoint), fir);
    assert_eq!(h.heroku.drains("lost-cedar"), cedar);

    // Re-created (a new object, no status): both are adopted, none made.
    h.heroku.reset_counts();
    h.apply("lost", spec.clone()).await;
    let ld = h.wait_drains_registered("lost", &apps).await;
    let counts = h.heroku.counts();
    assert_eq!(
        counts.create + counts.telemetry_create,
        0,
        "{:?}",
        h.heroku.requests()
    );
    assert_eq!(recorded(&ld, "lost-fir").id, fir.id);
    assert_eq!(recorded(&ld, "lost-cedar").id, cedar[0].id);

    // Suspended by an operator that knows nothing: it finds both anyway.
    lose_status(&mut h, "lost").await;
    spec["suspend"] = json!(true);
    h.apply("lost", spec.clone()).await;
    h.start();
    h.wait_status("lost", "suspended", MINUTE, |ld| {
        condition_reason(ld, "DrainsRegistered") == "Suspended"
    })
    .await;
    assert!(h.heroku.drains("lost-cedar").is_empty());
    assert_eq!(h.heroku.telemetry_drains("lost-fir"), vec![other.clone()]);

    // Resumed, then deleted under Delete with the status lost again, and
    // with Heroku no longer naming the generation: the operator looks at
    // both kinds of drain rather than guess.
    spec["suspend"] = json!(false);
    spec["deletionPolicy"] = json!("Delete");
    h.apply("lost", spec.clone()).await;
    h.wait_drains_registered("lost", &apps).await;
    our_telemetry_drain(&h, "lost-fir", &endpoint);
    lose_status(&mut h, "lost").await;
    for app in apps {
        h.heroku.hide_generation(app, true);
    }
    h.start();
    h.delete_and_wait("lost").await;
    assert!(h.heroku.drains("lost-cedar").is_empty());
    assert_eq!(h.heroku.telemetry_drains("lost-fir"), vec![other]);
    assert_requests_as_herokus_clients_send(&h);
    h.teardown().await;
}

/// A record that says Cedar for an app now on Fir (a log-drain record from
/// before generations were recorded, for an app since re-created on Fir):
/// Heroku refuses the log drain, and the operator asks App Info again and
/// registers a telemetry drain in the same attempt, without a loop of
/// refused creates. When App Info names no generation, the refusal's own
/// words settle it; with neither, the condition names the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_log_drain_is_followed_by_the_right_kind() {
    let mut h = harness("telref", &[], &["ref-fir", "ref-hint"]).await;
    h.settings.resync = Duration::from_secs(4);
    // ref-hint's App Info names no generation: the refusal decides.
    h.heroku.hide_generation("ref-hint", true);
    h.apply("ref", h.spec(&["ref-fir", "ref-hint"], None)).await;
    // The legacy records: kind log, no generation, no app id.
    let legacy: Vec<serde_json::Value> = ["ref-fir", "ref-hint"]
        .iter()
        .map(|app| {
            json!({"app": app, "id": format!("00000000-0000-0000-0000-00000000000{}", app.len() % 10),
                   "token": "d.legacy", "url": format!("{ENDPOINT}/logplex/{app}")})
        })
        .collect();
    h.logdrains()
        .patch_status(
            "ref",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"drains": legacy}})),
        )
        .await
        .expect("legacy status");
    h.start();
    let ld = h
        .wait_drains_registered("ref", &["ref-fir", "ref-hint"])
        .await;
    for app in ["ref-fir", "ref-hint"] {
        let d = our_telemetry_drain(&h, app, &format!("{ENDPOINT}/otlp/{app}"));
        let rec = recorded(&ld, app);
        assert_eq!((rec.kind, rec.id), (DrainKind::Telemetry, d.id));
        assert!(h.heroku.drains(app).is_empty());
    }
    let refused = h
        .heroku
        .requests()
        .iter()
        .filter(|r| r.method == Method::POST && r.path.ends_with("/log-drains"))
        .count();
    assert_eq!(
        refused,
        2,
        "one refused create per app: {:?}",
        h.heroku.requests()
    );

    // A new app whose App Info names no generation, and no refusal to go
    // by: the condition says which app and why; nothing is created for it.
    h.heroku.add_fir_app("ref-new");
    h.heroku.hide_generation("ref-new", true);
    h.heroku.reset_counts();
    h.apply("ref", h.spec(&["ref-fir", "ref-hint", "ref-new"], None))
        .await;
    let ld = h
        .wait_status("ref", "ref-new undecided", MINUTE, |ld| {
            condition_reason(ld, "DrainsRegistered") == "GenerationUnknown"
        })
        .await;
    let message = condition(&ld, "DrainsRegistered")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("ref-new") && message.contains("generation"),
        "{message}"
    );
    assert_eq!(h.heroku.counts().writes(), 0, "{:?}", h.heroku.requests());
    h.heroku.hide_generation("ref-new", false);
    h.wait_drains_registered("ref", &["ref-fir", "ref-hint", "ref-new"])
        .await;
    our_telemetry_drain(&h, "ref-new", &format!("{ENDPOINT}/otlp/ref-new"));
    assert_requests_as_herokus_clients_send(&h);
    h.teardown().await;
}
