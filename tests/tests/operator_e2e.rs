//! The operator end to end: the real kube-apiserver and
//! kube-controller-manager, moto's Glue, the fake Heroku API, and the
//! controller running in-process.
//!
//! The ingester pods tolerate none of the node's taints unless a test
//! gives the operator the node's pod defaults (`Harness::on_node`), so they
//! stay Pending: `IngesterAvailable` (and so `Ready`) is False with reason
//! `DeploymentUnavailable`, as it would be on a cluster with no room for
//! them. The first test then lets them onto the node.

use std::collections::BTreeSet;
use std::time::Duration;

use drainpipe_contract::routes::RoutesFile;
use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::operator::{
    ENDPOINT, Harness, condition, condition_is, condition_reason, status_drains, wait_for,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn fake_options() -> FakeOptions {
    FakeOptions {
        // Small pages exercise the client's Range pagination.
        page_size: 2,
        ..FakeOptions::default()
    }
}

async fn harness(prefix: &str, apps: &[&str]) -> Harness {
    let h = Harness::new(prefix, fake_options()).await;
    for app in apps {
        h.heroku.add_app(app);
    }
    h
}

/// Every app has exactly one drain, to the URL docs/architecture.md gives
/// (`https://drainpipe:<password>@<endpoint>/logplex/<app>`).
fn assert_one_drain_each(h: &Harness, apps: &[&str], password: &str) {
    for app in apps {
        let drains = h.heroku.drains(app);
        assert_eq!(drains.len(), 1, "app {app} drains: {drains:?}");
        let host = ENDPOINT.trim_start_matches("https://");
        assert_eq!(
            drains[0].url,
            format!("https://drainpipe:{password}@{host}/logplex/{app}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_apps_become_drains_a_table_and_an_ingester() {
    let apps = ["shop-web", "shop-worker", "billing-api"];
    let mut h = harness("three", &apps).await;
    h.start();
    let mut spec = h.spec(&apps, Some("logs"));
    spec["ingester"]["replicas"] = json!(3);
    let created = h.apply("shop", spec).await;
    let ld = h.wait_drains_registered("shop", &apps).await;

    // Heroku: one drain per app, with the generated password.
    let password = h.drain_password("shop").await;
    assert_eq!(password.len(), 32);
    assert_one_drain_each(&h, &apps, &password);

    // Status: drain ids and tokens as Heroku has them, no credentials.
    let drains = status_drains(&ld);
    assert_eq!(drains.len(), 3);
    for d in &drains {
        let fake = &h.heroku.drains(&d.app)[0];
        assert_eq!((&d.id, &d.token), (&fake.id, &fake.token));
        assert_eq!(d.url, format!("{ENDPOINT}/logplex/{}", d.app));
    }
    let status_json = serde_json::to_string(&ld.status).expect("status JSON");
    assert!(
        !status_json.contains(&password),
        "password leaked into status"
    );
    let st = ld.status.clone().expect("status");
    assert_eq!(st.app_count, 3);
    assert_eq!(
        st.selector.as_deref(),
        Some("app.kubernetes.io/instance=shop,app.kubernetes.io/name=drainpipe-ingester")
    );

    // Glue: table created with a projection over the three apps.
    assert_eq!(h.projected_apps("logs").await, Some(set(&apps)));
    let table = h
        .glue
        .get_table()
        .database_name(&h.database)
        .name("logs")
        .send()
        .await
        .expect("table exists");
    let params = table
        .table()
        .and_then(|t| t.parameters())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        params.get("projection.app.type").map(String::as_str),
        Some("enum")
    );
    assert_eq!(
        params.get("storage.location.template").cloned(),
        Some(format!(
            "s3://{}/{}/${{app}}/${{year}}/${{month}}/${{day}}/",
            h.env.bucket, h.ns
        ))
    );

    // Owned objects, with the requested replicas.
    let uid = created.uid().expect("uid");
    let owned_by_ld =
        |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.is_some_and(|r| r.iter().any(|o| o.uid == uid && o.controller == Some(true)))
        };
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), &h.ns);
    let dep = deployments.get("shop-ingester").await.expect("Deployment");
    assert!(owned_by_ld(dep.meta().owner_references.as_ref()));
    assert_eq!(dep.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let services: Api<Service> = Api::namespaced(h.client.clone(), &h.ns);
    let svc = services.get("shop-ingester").await.expect("Service");
    assert!(owned_by_ld(svc.meta().owner_references.as_ref()));
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns);
    let pw_secret = secrets
        .get("shop-drain-password")
        .await
        .expect("password Secret");
    assert!(owned_by_ld(pw_secret.meta().owner_references.as_ref()));
    let routes_secret = secrets.get("shop-routes").await.expect("routes Secret");
    assert!(owned_by_ld(routes_secret.meta().owner_references.as_ref()));
    let routes_yaml = routes_secret
        .data
        .as_ref()
        .and_then(|d| d.get("routes.yaml"))
        .map(|b| String::from_utf8_lossy(&b.0).to_string())
        .expect("routes.yaml");
    let routes = RoutesFile::from_yaml(&routes_yaml).expect("routes parse as the ingester does");
    assert_eq!(
        routes.apps.keys().cloned().collect::<BTreeSet<_>>(),
        set(&apps)
    );
    for d in &drains {
        let route = &routes.apps[&d.app];
        assert_eq!(route.password, password);
        assert_eq!(route.drain_tokens, vec![d.token.clone()]);
    }

    // The pods cannot be scheduled (the node's taint): the ingester is
    // honestly unavailable, and so not Ready.
    let ld = h
        .wait_status("shop", "ingester unavailable", MINUTE, |ld| {
            condition_is(ld, "IngesterAvailable", "False")
        })
        .await;
    assert_eq!(
        condition_reason(&ld, "IngesterAvailable"),
        "DeploymentUnavailable"
    );
    assert_eq!(condition_reason(&ld, "Ready"), "DeploymentUnavailable");
    let msg = condition(&ld, "IngesterAvailable")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("0 of 3 ingester pods available"), "{msg}");

    // The administrator gives the ingester pods the node's toleration (the
    // chart's `ingester.tolerations`, which restarts the operator): the
    // pods roll onto the node, and once they are Ready the LogDrain is.
    h.kill().await;
    h.on_node().await;
    h.start();
    // One available pod already makes the LogDrain Ready (logs flow, reason
    // PartiallyAvailable); the pods start one by one, so wait for all.
    let ld = h
        .wait_status("shop", "Ready with 3 ready replicas", 3 * MINUTE, |ld| {
            condition_is(ld, "Ready", "True")
                && ld.status.as_ref().is_some_and(|s| s.ready_replicas == 3)
        })
        .await;
    assert_eq!(condition_reason(&ld, "IngesterAvailable"), "Available");

    // Events for every external change.
    let reasons = h.event_reasons("shop").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "DrainCreated").count(),
        3,
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "TableCreated"), "{reasons:?}");

    // A reconcile with nothing changed makes no Heroku call.
    h.heroku.reset_counts();
    let api = h.logdrains();
    api.patch(
        "shop",
        &PatchParams::apply("poke"),
        &Patch::Apply(json!({
            "apiVersion": "drainpipe.dev/v1alpha1", "kind": "LogDrain",
            "metadata": {"name": "shop", "annotations": {"poke": "1"}}
        })),
    )
    .await
    .expect("annotate");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.heroku.request_count(), 0, "{:?}", h.heroku.requests());

    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_apps() {
    let mut h = harness("addrm", &["app-one", "app-two", "app-three"]).await;
    h.start();
    h.apply("team", h.spec(&["app-one", "app-two"], Some("logs")))
        .await;
    h.wait_drains_registered("team", &["app-one", "app-two"])
        .await;
    let before = h.heroku.counts();

    // Add one: exactly one new drain, the projection grows.
    h.apply(
        "team",
        h.spec(&["app-one", "app-two", "app-three"], Some("logs")),
    )
    .await;
    h.wait_drains_registered("team", &["app-one", "app-two", "app-three"])
        .await;
    let password = h.drain_password("team").await;
    assert_one_drain_each(&h, &["app-one", "app-two", "app-three"], &password);
    // One create call (plus the retry of Heroku's "log channel" 422 for a
    // new app), one drain.
    assert!(h.heroku.counts().create - before.create <= 2);
    let created = h.event_reasons("team").await;
    assert_eq!(
        created.iter().filter(|r| *r == "DrainCreated").count(),
        3,
        "{created:?}"
    );
    assert_eq!(
        h.projected_apps("logs").await,
        Some(set(&["app-one", "app-two", "app-three"]))
    );

    // Remove one: its drain goes, its projection value stays.
    h.apply("team", h.spec(&["app-two", "app-three"], Some("logs")))
        .await;
    h.wait_drains_registered("team", &["app-two", "app-three"])
        .await;
    assert!(h.heroku.drains("app-one").is_empty());
    assert_one_drain_each(&h, &["app-two", "app-three"], &password);
    assert_eq!(
        h.projected_apps("logs").await,
        Some(set(&["app-one", "app-two", "app-three"]))
    );
    let reasons = h.event_reasons("team").await;
    assert!(reasons.iter().any(|r| r == "DrainRemoved"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "AppsAdded"), "{reasons:?}");
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logdrains_share_a_table_in_either_order_and_concurrently() {
    let apps = ["ops-a", "ops-b", "data-c", "data-d"];
    let mut h = harness("union", &apps).await;
    h.start();

    // First order: the managing LogDrain first.
    h.apply("ops", h.spec(&["ops-a", "ops-b"], Some("first")))
        .await;
    h.wait_drains_registered("ops", &["ops-a", "ops-b"]).await;
    let mut data = h.spec(&["data-c"], Some("first"));
    data["catalog"]["glue"]["manageTable"] = json!(false);
    data["endpoint"]["url"] = json!("https://logs-data.example.com");
    h.apply("data", data).await;
    h.wait_drains_registered("data", &["data-c"]).await;
    assert_eq!(
        h.projected_apps("first").await,
        Some(set(&["ops-a", "ops-b", "data-c"]))
    );

    // Second order: the non-managing LogDrain waits for the table, with a
    // reason a person can act on, and joins once it exists.
    let mut data2 = h.spec(&["data-d"], Some("second"));
    data2["catalog"]["glue"]["manageTable"] = json!(false);
    data2["endpoint"]["url"] = json!("https://logs-data.example.com");
    h.apply("data2", data2).await;
    let waiting = h
        .wait_status("data2", "catalog waits for the table", MINUTE, |ld| {
            condition_is(ld, "CatalogSynced", "False")
        })
        .await;
    assert_eq!(
        condition_reason(&waiting, "CatalogSynced"),
        "GlueTableNotFound"
    );
    let mut ops2 = h.spec(&["ops-a"], Some("second"));
    ops2["endpoint"]["url"] = json!("https://logs-ops2.example.com");
    h.apply("ops2", ops2).await;
    h.wait_drains_registered("ops2", &["ops-a"]).await;
    wait_for("data2 to join the second table", MINUTE, || {
        let h = &h;
        async move {
            let ld = h.get("data2").await;
            condition_is(&ld, "CatalogSynced", "True").then_some(())
        }
    })
    .await;
    assert_eq!(
        h.projected_apps("second").await,
        Some(set(&["ops-a", "data-d"]))
    );

    // Concurrently: two managing LogDrains created at once on a new table.
    let mut x = h.spec(&["ops-b"], Some("third"));
    x["endpoint"]["url"] = json!("https://logs-x.example.com");
    let mut y = h.spec(&["data-c", "data-d"], Some("third"));
    y["endpoint"]["url"] = json!("https://logs-y.example.com");
    futures::join!(h.apply("x", x), h.apply("y", y));
    futures::join!(
        h.wait_drains_registered("x", &["ops-b"]),
        h.wait_drains_registered("y", &["data-c", "data-d"])
    );
    assert_eq!(
        h.projected_apps("third").await,
        Some(set(&["ops-b", "data-c", "data-d"]))
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_subresource_changes_the_deployment() {
    let mut h = harness("scale", &["scale-app"]).await;
    h.start();
    h.apply("sc", h.spec(&["scale-app"], None)).await;
    h.wait_drains_registered("sc", &["scale-app"]).await;

    // What `kubectl scale logdrain/sc --replicas=5` sends.
    let api = h.logdrains();
    api.patch_scale(
        "sc",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .expect("patch /scale");
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), &h.ns);
    wait_for("the Deployment to have 5 replicas", MINUTE, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("sc-ingester").await.ok()?;
            (d.spec?.replicas == Some(5)).then_some(())
        }
    })
    .await;
    let ld = h.get("sc").await;
    assert_eq!(ld.spec.ingester.replicas, 5);
    // The scale subresource reads the replicas and selector back from status.
    wait_for("status.replicas to follow", MINUTE, || {
        let api = api.clone();
        async move {
            let scale = api.get_scale("sc").await.ok()?;
            let st = scale.status?;
            (st.replicas == 5
                && st
                    .selector
                    .as_deref()
                    .is_some_and(|s| s.contains("instance=sc")))
            .then_some(())
        }
    })
    .await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_policy_decides_what_happens_to_the_drains() {
    let mut h = harness("delete", &["del-app", "keep-app"]).await;
    h.start();
    h.apply("goes", h.spec(&["del-app"], None)).await;
    let mut retain = h.spec(&["keep-app"], None);
    retain["deletionPolicy"] = json!("Retain");
    retain["endpoint"]["url"] = json!("https://logs-keep.example.com");
    h.apply("stays", retain).await;
    h.wait_drains_registered("goes", &["del-app"]).await;
    h.wait_drains_registered("stays", &["keep-app"]).await;
    assert_eq!(h.heroku.drains("del-app").len(), 1);
    assert_eq!(h.heroku.drains("keep-app").len(), 1);

    let api = h.logdrains();
    for name in ["goes", "stays"] {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for name in ["goes", "stays"] {
        let api = api.clone();
        wait_for(
            &format!("{name} to be gone (finalizer released)"),
            MINUTE,
            || {
                let api = api.clone();
                async move { api.get_opt(name).await.ok()?.is_none().then_some(()) }
            },
        )
        .await;
    }
    assert!(
        h.heroku.drains("del-app").is_empty(),
        "Delete removes the drain"
    );
    assert_eq!(
        h.heroku.drains("keep-app").len(),
        1,
        "Retain keeps the drain"
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heroku_throttling_and_errors_end_in_success_within_budget() {
    let apps = ["busy-one", "busy-two", "busy-three"];
    let mut h = harness("throttle", &apps).await;
    // A run of 5xx, then a spent budget that does not refill.
    h.heroku.set_refill_per_hour(0);
    h.heroku.set_budget(0);
    h.heroku.fail_next(6, 503);
    h.start();
    h.apply("busy", h.spec(&apps, None)).await;
    wait_for("the operator to meet the spent budget", MINUTE, || {
        let h = &h;
        async move { (h.heroku.counts().throttled >= 1).then_some(()) }
    })
    .await;
    let ld = h.get("busy").await;
    assert!(!condition_is(&ld, "DrainsRegistered", "True"));
    // Heroku's budget comes back at 2 requests a second.
    let at_refill = h.heroku.counts();
    h.heroku.set_refill_per_hour(7200);
    let ld = h
        .wait_status(
            "busy",
            "drains registered",
            Duration::from_secs(120),
            |ld| condition_is(ld, "DrainsRegistered", "True") && status_drains(ld).len() == 3,
        )
        .await;
    let password = h.drain_password("busy").await;
    assert_one_drain_each(&h, &apps, &password);
    assert_eq!(status_drains(&ld).len(), 3);
    let counts = h.heroku.counts();
    // The limiter learned the budget from RateLimit-Remaining and paced
    // itself below the refill instead of hammering 429s.
    assert!(
        counts.throttled - at_refill.throttled <= 3,
        "{at_refill:?} then {counts:?}"
    );
    assert_eq!(counts.injected, 6, "{counts:?}");
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_reconcile_and_restarted_converges_without_duplicates() {
    let apps = ["crash-a", "crash-b", "crash-c", "crash-d", "crash-e"];
    let mut h = harness("crash", &apps).await;
    h.settings.app_concurrency = 1;
    // Slow answers keep the reconcile in flight when the kill comes.
    h.heroku.set_latency(Duration::from_millis(250));
    h.start();
    h.apply("crash", h.spec(&apps, None)).await;
    wait_for("the first drain to be created", MINUTE, || {
        let h = &h;
        async move { (h.heroku.counts().create >= 1).then_some(()) }
    })
    .await;
    h.kill().await;
    let created_before_kill = apps
        .iter()
        .filter(|a| !h.heroku.drains(a).is_empty())
        .count();
    assert!(
        created_before_kill < apps.len(),
        "the kill came too late to test anything"
    );

    h.heroku.set_latency(Duration::ZERO);
    h.start();
    h.wait_drains_registered("crash", &apps).await;
    let password = h.drain_password("crash").await;
    assert_one_drain_each(&h, &apps, &password);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_heroku_token_is_used_for_the_next_calls() {
    let mut h = harness("rotate", &["rot-one", "rot-two"]).await;
    h.start();
    h.apply("rot", h.spec(&["rot-one"], None)).await;
    h.wait_drains_registered("rot", &["rot-one"]).await;

    // Heroku revokes the old token: the next change fails, and says why.
    h.heroku.set_token("rotated-token-0002");
    h.apply("rot", h.spec(&["rot-one", "rot-two"], None)).await;
    let failing = h
        .wait_status("rot", "unauthorized", MINUTE, |ld| {
            condition_is(ld, "DrainsRegistered", "False")
        })
        .await;
    assert_eq!(
        condition_reason(&failing, "DrainsRegistered"),
        "HerokuUnauthorized"
    );
    assert_eq!(condition_reason(&failing, "Ready"), "HerokuUnauthorized");

    // The Secret is updated: the watch on it triggers a reconcile long
    // before the 5-minute retry of a failure that needs a person.
    h.put_token_secret("heroku", "rotated-token-0002").await;
    h.wait_drains_registered("rot", &["rot-one", "rot-two"])
        .await;
    let password = h.drain_password("rot").await;
    assert_one_drain_each(&h, &["rot-one", "rot-two"], &password);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_and_unknown_apps_are_reported_actionably() {
    let mut h = harness("report", &["known-app"]).await;
    h.start();
    let mut spec = h.spec(&["known-app"], None);
    spec["heroku"]["apiTokenSecretRef"]["name"] = json!("not-there-yet");
    h.apply("rep", spec.clone()).await;
    let ld = h
        .wait_status("rep", "token missing", MINUTE, |ld| {
            condition_is(ld, "DrainsRegistered", "False")
        })
        .await;
    assert_eq!(
        condition_reason(&ld, "DrainsRegistered"),
        "HerokuTokenMissing"
    );
    let msg = condition(&ld, "DrainsRegistered")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains("not-there-yet") && msg.contains("does not exist"),
        "{msg}"
    );
    // The owned objects exist all the same.
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), &h.ns);
    assert!(
        deployments
            .get_opt("rep-ingester")
            .await
            .expect("get")
            .is_some()
    );

    // Creating the Secret triggers a reconcile through the Secret watch.
    h.put_token_secret("not-there-yet", &h.heroku.token()).await;
    h.wait_drains_registered("rep", &["known-app"]).await;

    // An app Heroku does not know.
    spec["apps"] = json!(["known-app", "ghost-app"]);
    h.apply("rep", spec).await;
    let ld = h
        .wait_status("rep", "app not found", MINUTE, |ld| {
            condition_is(ld, "DrainsRegistered", "False")
        })
        .await;
    assert_eq!(condition_reason(&ld, "DrainsRegistered"), "AppNotFound");
    let msg = condition(&ld, "DrainsRegistered")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("ghost-app"), "{msg}");
    // The known app keeps its drain.
    assert_eq!(status_drains(&ld).len(), 1);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_on_resync() {
    let mut h = harness("drift", &["drift-app"]).await;
    h.settings.resync = Duration::from_secs(4);
    h.start();
    h.apply("drift", h.spec(&["drift-app"], None)).await;
    let ld = h.wait_drains_registered("drift", &["drift-app"]).await;
    let old_id = status_drains(&ld)[0].id.clone();

    // Someone removes the drain by hand (`heroku drains:remove`).
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/apps/drift-app/log-drains/{old_id}",
            h.heroku.base_url()
        ))
        .bearer_auth(h.heroku.token())
        .header("Accept", "application/vnd.heroku+json; version=3")
        .send()
        .await
        .expect("delete request");
    assert!(resp.status().is_success(), "{}", resp.status());
    assert!(h.heroku.drains("drift-app").is_empty());

    // The next resync puts it back.
    let ld = h
        .wait_status("drift", "drain re-created", MINUTE, |ld| {
            status_drains(ld).first().is_some_and(|d| d.id != old_id)
        })
        .await;
    let password = h.drain_password("drift").await;
    assert_one_drain_each(&h, &["drift-app"], &password);
    assert_eq!(status_drains(&ld)[0].id, h.heroku.drains("drift-app")[0].id);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_drain_password_or_moving_the_endpoint_replaces_drains() {
    let mut h = harness("replace", &["rep-app"]).await;
    h.start();
    h.apply("rp", h.spec(&["rep-app"], None)).await;
    let ld = h.wait_drains_registered("rp", &["rep-app"]).await;
    let first = status_drains(&ld)[0].clone();

    // A person rotates the drain password by editing its Secret.
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns);
    secrets
        .patch(
            "rp-drain-password",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "RotatedPassword0123456789abcdef"}})),
        )
        .await
        .expect("rotate the password");
    let ld = h
        .wait_status("rp", "drain replaced", MINUTE, |ld| {
            status_drains(ld).first().is_some_and(|d| d.id != first.id)
        })
        .await;
    assert_one_drain_each(&h, &["rep-app"], "RotatedPassword0123456789abcdef");
    let second = status_drains(&ld)[0].clone();
    let routes = h.routes("rp").await.expect("routes Secret");
    assert_eq!(
        routes.apps["rep-app"].password,
        "RotatedPassword0123456789abcdef"
    );
    assert_eq!(
        routes.apps["rep-app"].drain_tokens,
        vec![second.token.clone()]
    );

    // The endpoint moves: the drain follows.
    let mut moved = h.spec(&["rep-app"], None);
    moved["endpoint"]["url"] = json!("https://logs-moved.example.com/base");
    h.apply("rp", moved).await;
    let ld = h
        .wait_status("rp", "drain moved", MINUTE, |ld| {
            status_drains(ld).first().is_some_and(|d| d.id != second.id)
                && condition_is(ld, "DrainsRegistered", "True")
        })
        .await;
    let drains = h.heroku.drains("rep-app");
    assert_eq!(drains.len(), 1, "{drains:?}");
    assert_eq!(
        drains[0].url,
        "https://drainpipe:RotatedPassword0123456789abcdef@logs-moved.example.com/base/logplex/rep-app"
    );
    assert_eq!(
        status_drains(&ld)[0].url,
        "https://logs-moved.example.com/base/logplex/rep-app"
    );
    let reasons = h.event_reasons("rp").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "DrainReplaced").count(),
        2,
        "{reasons:?}"
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tls_endpoint_registers_syslog_drains_and_opens_the_port() {
    let apps = ["tcp-web", "tcp-worker"];
    let mut h = harness("syslog", &apps).await;
    h.start();
    // First as HTTPS drains, then switched to syslog+tls: the drains follow.
    h.apply("tcp", h.spec(&apps, None)).await;
    let before = h.wait_drains_registered("tcp", &apps).await;
    let https_ids: BTreeSet<String> = status_drains(&before).into_iter().map(|d| d.id).collect();

    let mut spec = h.spec(&apps, None);
    spec["endpoint"] = json!({"syslogTls": "logs.example.com:6514"});
    spec["ingester"]["syslog"] = json!({"tlsSecretName": "tcp-tls"});
    h.apply("tcp", spec).await;
    let ld = h
        .wait_status("tcp", "syslog drains registered", MINUTE, |ld| {
            let drains = status_drains(ld);
            condition_is(ld, "DrainsRegistered", "True")
                && drains.len() == apps.len()
                && drains.iter().all(|d| !https_ids.contains(&d.id))
        })
        .await;

    // Heroku: exactly one drain per app, the syslog URL without credentials.
    for app in apps {
        let drains = h.heroku.drains(app);
        assert_eq!(drains.len(), 1, "app {app} drains: {drains:?}");
        assert_eq!(drains[0].url, "syslog+tls://logs.example.com:6514");
    }
    let drains = status_drains(&ld);
    for d in &drains {
        assert_eq!(d.url, "syslog+tls://logs.example.com:6514");
        assert_eq!(d.id, h.heroku.drains(&d.app)[0].id);
    }
    let msg = condition(&ld, "DrainsRegistered")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("syslog+tls://logs.example.com:6514"), "{msg}");

    // Routes: the ingester finds each app by its drain token.
    let routes = wait_for("routes to pin the syslog tokens", MINUTE, || {
        let h = &h;
        let drains = &drains;
        async move {
            let routes = h.routes("tcp").await?;
            drains
                .iter()
                .all(|d| {
                    routes.apps.get(&d.app).map(|r| &r.drain_tokens) == Some(&vec![d.token.clone()])
                })
                .then_some(routes)
        }
    })
    .await;
    assert_eq!(
        routes.apps.keys().cloned().collect::<BTreeSet<_>>(),
        set(&apps)
    );

    // The ingester listens for syslog with the user's certificate, and the
    // Service exposes the port.
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), &h.ns);
    let pod = wait_for("the Deployment to run the syslog listener", MINUTE, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("tcp-ingester").await.ok()?;
            let pod = d.spec?.template.spec?;
            let args = pod.containers[0].args.clone()?.join(" ");
            args.contains("--syslog-listen 0.0.0.0:6514").then_some(pod)
        }
    })
    .await;
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap_or_default().join(" ");
    assert!(
        args.contains("--syslog-tls-cert /etc/drainpipe-syslog-tls/tls.crt")
            && args.contains("--syslog-tls-key /etc/drainpipe-syslog-tls/tls.key"),
        "{args}"
    );
    assert!(
        c.ports
            .iter()
            .flatten()
            .any(|p| p.name.as_deref() == Some("syslog") && p.container_port == 6514),
        "{:?}",
        c.ports
    );
    let tls_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "syslog-tls")
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.clone());
    assert_eq!(tls_volume.as_deref(), Some("tcp-tls"));
    let services: Api<Service> = Api::namespaced(h.client.clone(), &h.ns);
    let svc = services.get("tcp-ingester").await.expect("Service");
    let ports = svc.spec.and_then(|s| s.ports).unwrap_or_default();
    assert!(
        ports
            .iter()
            .any(|p| p.name.as_deref() == Some("syslog") && p.port == 6514),
        "{ports:?}"
    );
    let reasons = h.event_reasons("tcp").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "DrainReplaced").count(),
        2,
        "{reasons:?}"
    );
    h.teardown().await;
}
