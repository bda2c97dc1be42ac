//! Scaling the ingesters (`spec.ingester.autoscaling`) against the real
//! kube-apiserver and kube-controller-manager: the ingester pods run on the
//! test environment's node, `drainpipe-loadgen` drives load into the first
//! one, and the operator scales the Deployment up and back down with
//! events. Mode `hpa` creates a HorizontalPodAutoscaler the API server
//! accepts, and the operator leaves the replicas alone.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::operator::{Harness, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

struct Loadgen(Child);

impl Drop for Loadgen {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The addresses of LogDrain `name`'s Ready ingester pods.
async fn ready_pod_ips(h: &Harness, name: &str) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(h.client.clone(), &h.ns);
    let selector =
        format!("app.kubernetes.io/instance={name},app.kubernetes.io/name=drainpipe-ingester");
    let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status?;
            let ready = status
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(status.pod_ip).flatten()
        })
        .collect()
}

/// The notes of the events with `reason` about LogDrain `name`.
async fn notes(h: &Harness, name: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(h.client.clone(), &h.ns);
    let events = api.list(&ListParams::default()).await.expect("list events");
    let mut events: Vec<Event> = events
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding
                    .as_ref()
                    .is_some_and(|r| r.name.as_deref() == Some(name))
        })
        .collect();
    // Oldest first: the list comes in name order.
    events.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    events.into_iter().filter_map(|e| e.note).collect()
}

async fn replicas(h: &Harness, deployment: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(h.client.clone(), &h.ns)
        .get(deployment)
        .await
        .ok()?
        .spec?
        .replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_scales_the_ingesters_up_under_load_and_down_after_the_window() {
    let bin = drainpipe_tests::ingester::workspace_binary("drainpipe-loadgen");
    let mut h = Harness::new("autoscale", FakeOptions::default()).await;
    h.on_node().await;
    // The load generator's app: `--app-prefix as`, one drain.
    h.heroku.add_app("as-1");
    h.settings.autoscale_interval = Duration::from_secs(1);
    h.start();
    let mut spec = h.spec(&["as-1"], None);
    spec["ingester"] = json!({"autoscaling": {
        "mode": "operator",
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetMessagesPerSecond": 100,
        "scaleDownStabilization": "5s",
    }});
    h.apply("as", spec).await;
    h.wait_drains_registered("as", &["as-1"]).await;

    // One pod, no load: the operator keeps it at minReplicas.
    let first = wait_for("the first ingester pod Ready", 3 * MINUTE, || async {
        let ips = ready_pod_ips(&h, "as").await;
        (ips.len() == 1).then(|| format!("http://{}:8080", ips[0]))
    })
    .await;
    assert_eq!(replicas(&h, "as-ingester").await, Some(1));
    let token = h.heroku.drains("as-1")[0].token.clone();
    let password = h.drain_password("as").await;

    let load = Loadgen(
        Command::new(&bin)
            .args([
                "--url",
                &first,
                "--drains",
                "1",
                "--app-prefix",
                "as",
                "--tokens",
                &token,
                "--body-kb",
                "4",
                "--duration",
                "5m",
            ])
            .env("DRAINPIPE_LOADGEN_PASSWORD", &password)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start drainpipe-loadgen"),
    );
    let up = wait_for("a ScaledUp event", MINUTE, || async {
        notes(&h, "as", "ScaledUp").await.into_iter().next()
    })
    .await;
    assert!(up.starts_with("1 -> "), "{up}");
    assert!(up.contains("msg/s over 1 pod, target 100 per pod"), "{up}");
    wait_for("3 replicas (maxReplicas)", MINUTE, || async {
        (replicas(&h, "as-ingester").await == Some(3)).then_some(())
    })
    .await;
    wait_for("3 ingester pods Ready", 3 * MINUTE, || async {
        (ready_pod_ips(&h, "as").await.len() == 3).then_some(())
    })
    .await;

    // The load stops: back to minReplicas once the 5 s window has passed.
    // Usually in one step; on a loaded machine the load may have dipped
    // inside the window first, and a step that stops above 1 says so.
    drop(load);
    // The event follows the scale write, so wait for the event itself.
    let downs = wait_for("a ScaledDown event to 1", MINUTE, || async {
        let downs = notes(&h, "as", "ScaledDown").await;
        downs
            .last()
            .is_some_and(|d| d.contains(" -> 1: "))
            .then_some(downs)
    })
    .await;
    let (last, steps) = downs.split_last().expect("a ScaledDown event");
    assert!(last.contains(" -> 1: 0 msg/s over"), "{downs:#?}");
    assert!(last.ends_with("minReplicas 1"), "{downs:#?}");
    for step in steps {
        assert!(
            step.contains("by the highest recommendation within 5s"),
            "{downs:#?}"
        );
    }
    wait_for("1 replica again", MINUTE, || async {
        (replicas(&h, "as-ingester").await == Some(1)).then_some(())
    })
    .await;
    let ld = h.get("as").await;
    assert_eq!(
        ld.spec.ingester.replicas, 2,
        "the spec's replicas are not touched"
    );

    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_hpa_creates_a_valid_hpa_and_leaves_the_replicas_alone() {
    let mut h = Harness::new("hpa", FakeOptions::default()).await;
    h.heroku.add_app("hpa-web");
    h.settings.resync = Duration::from_secs(1);
    h.start();
    let mut spec = h.spec(&["hpa-web"], None);
    spec["ingester"] = json!({"replicas": 2, "autoscaling": {
        "mode": "hpa", "minReplicas": 2, "maxReplicas": 5,
        "targetCpuUtilizationPercentage": 60,
    }});
    h.apply("hp", spec.clone()).await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(h.client.clone(), &h.ns);
    let hpa = wait_for("the HorizontalPodAutoscaler", MINUTE, || async {
        hpas.get_opt("hp-ingester").await.ok().flatten()
    })
    .await;
    let ld = h.get("hp").await;
    assert_eq!(
        hpa.owner_references().first().map(|o| o.uid.clone()),
        ld.metadata.uid
    );
    assert_eq!(hpa.spec.scale_target_ref.kind, "Deployment");
    assert_eq!(hpa.spec.scale_target_ref.name, "hp-ingester");
    assert_eq!((hpa.spec.min_replicas, hpa.spec.max_replicas), (Some(2), 5));
    let cpu = hpa.spec.metrics.clone().unwrap_or_default();
    assert_eq!(
        cpu.first()
            .and_then(|m| m.resource.as_ref())
            .and_then(|r| r.target.average_utilization),
        Some(60)
    );

    // Someone (the HPA's controller, here a person) scales the Deployment:
    // reconciles come and go, the replicas stay.
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), &h.ns);
    wait_for("the Deployment", MINUTE, || async {
        deployments.get_opt("hp-ingester").await.ok().flatten()
    })
    .await;
    deployments
        .patch_scale(
            "hp-ingester",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("scale the Deployment by hand");
    for i in 0..3 {
        h.poke("hp", i).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            replicas(&h, "hp-ingester").await,
            Some(4),
            "after reconcile {i}"
        );
    }

    // Back to manual: the HPA goes, the spec's replicas come back.
    spec["ingester"]["autoscaling"]["mode"] = json!("manual");
    h.apply("hp", spec).await;
    wait_for("the HPA deleted", MINUTE, || async {
        hpas.get_opt("hp-ingester")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    wait_for("2 replicas from the spec", MINUTE, || async {
        (replicas(&h, "hp-ingester").await == Some(2)).then_some(())
    })
    .await;
    h.teardown().await;
}
