//! `spec.ingester.bufferStorage.persistentVolumeClaim` on the test
//! environment's real node: the ingesters run as a StatefulSet (no
//! Deployment) on pre-made local PersistentVolumes, the PodDisruptionBudget
//! follows the replicas, and no released claim goes before a flush Job has
//! emptied it. Nothing is played: kube-controller-manager's StatefulSet,
//! Job and PVC-protection controllers and the kubelet do their parts, and
//! the pods run the project's ingester image.
//!
//! To leave acknowledged data on a claim, a test stops (SIGSTOP) the pod's
//! ingester process before the pod goes: a hung process, which can neither
//! upload nor flush on SIGTERM.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::node::{LocalVolumes, Logplex, archived_ids, stop_container, wait_archived};
use drainpipe_tests::operator::{Harness, condition_is, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn pvc_spec(h: &Harness, apps: &[&str], replicas: i32, class: &str) -> serde_json::Value {
    let mut spec = h.spec(apps, None);
    spec["ingester"] = json!({
        "replicas": replicas,
        "bufferStorage": {"persistentVolumeClaim": {"size": "1Gi", "storageClassName": class}},
    });
    spec
}

/// Waits until LogDrain `name` reports `n` ready replicas and
/// `IngesterAvailable`, read from its StatefulSet.
async fn wait_ready(h: &Harness, name: &str, n: i32) {
    h.wait_status(name, &format!("{n} ready replicas"), 3 * MINUTE, |ld| {
        ld.status.as_ref().is_some_and(|s| s.ready_replicas == n)
            && condition_is(ld, "IngesterAvailable", "True")
    })
    .await;
}

/// The volume claim `claim` is bound to.
async fn bound_volume(h: &Harness, claim: &str) -> String {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(h.client.clone(), &h.ns);
    wait_for(&format!("claim {claim} bound"), MINUTE, || {
        let claims = claims.clone();
        async move {
            let c = claims.get_opt(claim).await.ok()??;
            let bound = c.status.as_ref()?.phase.as_deref() == Some("Bound");
            bound.then(|| c.spec?.volume_name).flatten()
        }
    })
    .await
}

/// Waits until claim `claim` is gone (deleted and released by the
/// PVC-protection controller).
async fn claim_gone(h: &Harness, claim: &str) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(h.client.clone(), &h.ns);
    wait_for(&format!("claim {claim} deleted"), 3 * MINUTE, || {
        let claims = claims.clone();
        async move { claims.get_opt(claim).await.ok()?.is_none().then_some(()) }
    })
    .await;
}

async fn flush_job(h: &Harness, claim: &str) -> Option<Job> {
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), &h.ns);
    jobs.list(&Default::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find(|j| {
            j.annotations()
                .get("drainpipe.dev/buffer-claim")
                .map(String::as_str)
                == Some(claim)
        })
}

/// Pod `name` as kubectl shows it.
async fn pod(h: &Harness, name: &str) -> serde_json::Value {
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &h.ns);
    let pod = pods
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading pod {name}: {e}"));
    serde_json::to_value(pod).expect("pod as JSON")
}

/// Sends 300 lines of `app` from `first` straight to LogDrain `drain`'s pod
/// `name` (its IP, as a sender the Service picked it for would); all must
/// be acknowledged.
async fn send_to_pod(
    h: &Harness,
    drain: &str,
    name: &str,
    app: &str,
    first: u64,
) -> BTreeSet<String> {
    let p = pod(h, name).await;
    let base = format!(
        "http://{}:8080",
        p["status"]["podIP"].as_str().expect("pod IP")
    );
    let password = h.drain_password(drain).await;
    let token = h.heroku.drains(app)[0].token.clone();
    let logplex = Logplex::new(&password, BTreeMap::from([(app.to_string(), token)]));
    let acked = logplex.send(&base, app, first, 300).await;
    assert_eq!(acked.len(), 300, "pod {name} acknowledged every line");
    acked
}

/// `kubectl delete pod --grace-period=0 --force`; a pod already gone is fine.
async fn force_delete(h: &Harness, pod: &str) {
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &h.ns);
    match pods
        .delete(pod, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => panic!("deleting pod {pod}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_buffer_runs_a_statefulset_with_a_budget_and_switching_back_removes_it() {
    let mut h = Harness::new("buffer-sts", FakeOptions::default()).await;
    h.on_node().await;
    h.heroku.add_app("buf-web");
    h.start();
    let volumes = LocalVolumes::create(&h.env, &format!("{}-local", h.ns), 2, "2Gi");
    let class = volumes.class.clone();
    h.apply("buf", pvc_spec(&h, &["buf-web"], 2, &class)).await;

    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), &h.ns);
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), &h.ns);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), &h.ns);
    // Stored by the apiserver, so it passed its validation.
    let set = wait_for("the ingester StatefulSet", MINUTE, || {
        let sets = sets.clone();
        async move { sets.get_opt("buf-ingester").await.ok()? }
    })
    .await;
    let spec = set.spec.clone().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let claim = &spec
        .volume_claim_templates
        .clone()
        .expect("claim templates")[0];
    let claim_spec = claim.spec.clone().expect("claim spec");
    assert_eq!(
        claim_spec.storage_class_name.as_deref(),
        Some(class.as_str())
    );
    assert_eq!(
        claim_spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned())
            .map(|q| q.0),
        Some("1Gi".to_string())
    );
    let retention = spec
        .persistent_volume_claim_retention_policy
        .expect("retention policy");
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    let pod = spec.template.spec.clone().expect("pod");
    let sleep = pod.containers[0]
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|p| p.sleep.as_ref())
        .map(|s| s.seconds);
    assert_eq!(sleep, Some(10), "the preStop sleep the apiserver accepted");
    assert!(
        pod.topology_spread_constraints
            .unwrap_or_default()
            .iter()
            .any(|t| t.topology_key == "topology.kubernetes.io/zone")
    );
    assert!(
        deployments
            .get_opt("buf-ingester")
            .await
            .expect("get")
            .is_none(),
        "no Deployment next to the StatefulSet"
    );
    let pdb = wait_for("the PodDisruptionBudget", MINUTE, || {
        let budgets = budgets.clone();
        async move { budgets.get_opt("buf-ingester").await.ok()? }
    })
    .await;
    assert_eq!(
        pdb.spec.and_then(|s| s.max_unavailable),
        Some(IntOrString::Int(1))
    );

    // The status reads the StatefulSet: both pods Ready on the node, each
    // on its claim, bound to one of the local volumes.
    wait_ready(&h, "buf", 2).await;
    for ordinal in [0, 1] {
        let claim = format!("buffer-buf-ingester-{ordinal}");
        let volume = bound_volume(&h, &claim).await;
        assert!(volume.starts_with(&class), "{claim} bound to {volume}");
    }

    // A bigger claim: Kubernetes refuses to change a StatefulSet's claim
    // templates, so the set is re-created (its pods and claims orphaned,
    // then adopted).
    let first_uid = set.uid();
    let mut bigger = pvc_spec(&h, &["buf-web"], 2, &class);
    bigger["ingester"]["bufferStorage"]["persistentVolumeClaim"]["size"] = json!("2Gi");
    h.apply("buf", bigger).await;
    let replaced = wait_for("the StatefulSet re-created with 2Gi claims", MINUTE, || {
        let sets = sets.clone();
        async move {
            let s = sets.get_opt("buf-ingester").await.ok()??;
            let size = s
                .spec
                .as_ref()?
                .volume_claim_templates
                .as_ref()?
                .first()?
                .spec
                .as_ref()?
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")?
                .0
                .clone();
            (size == "2Gi").then_some(s)
        }
    })
    .await;
    assert_ne!(replaced.uid(), first_uid);
    assert!(
        h.event_reasons("buf")
            .await
            .iter()
            .any(|r| r == "StatefulSetReplaced")
    );

    // One replica: no budget (it would block every node drain).
    h.apply("buf", pvc_spec(&h, &["buf-web"], 1, &class)).await;
    wait_for("the budget to go at 1 replica", MINUTE, || {
        let budgets = budgets.clone();
        async move {
            budgets
                .get_opt("buf-ingester")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;

    // Back to emptyDir: a Deployment again, the StatefulSet gone.
    let mut spec = h.spec(&["buf-web"], None);
    spec["ingester"] = json!({"replicas": 2});
    h.apply("buf", spec).await;
    let deployment = wait_for("the Deployment back", MINUTE, || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("buf-ingester").await.ok()? }
    })
    .await;
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod");
    assert!(
        pod.volumes
            .unwrap_or_default()
            .iter()
            .any(|v| v.name == "buffer" && v.empty_dir.is_some())
    );
    wait_for("the StatefulSet to be deleted", MINUTE, || {
        let sets = sets.clone();
        async move {
            let gone = match sets.get_opt("buf-ingester").await.ok()? {
                None => true,
                Some(s) => s.metadata.deletion_timestamp.is_some(),
            };
            gone.then_some(())
        }
    })
    .await;
    wait_for("the budget with 2 replicas again", MINUTE, || {
        let budgets = budgets.clone();
        async move { budgets.get_opt("buf-ingester").await.ok()? }
    })
    .await;
    // Both claims were released (pod 1 at the scale-down, pod 0 with the
    // StatefulSet): each emptied by a flush Job, then deleted.
    for ordinal in [0, 1] {
        claim_gone(&h, &format!("buffer-buf-ingester-{ordinal}")).await;
    }
    let reasons = h.event_reasons("buf").await;
    for reason in ["BufferFlushStarted", "BufferClaimDeleted"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn released_claims_are_flushed_by_a_job_before_they_go_and_a_failed_flush_keeps_them() {
    let mut h = Harness::new("buffer-flush", FakeOptions::default()).await;
    h.on_node().await;
    h.heroku.add_app("flush-web");
    h.start();
    let volumes = LocalVolumes::create(&h.env, &format!("{}-local", h.ns), 2, "1Gi");
    h.apply("flush", pvc_spec(&h, &["flush-web"], 2, &volumes.class))
        .await;
    wait_ready(&h, "flush", 2).await;
    let claim0 = "buffer-flush-ingester-0";
    let claim1 = "buffer-flush-ingester-1";
    let prefix = format!("{}/", h.ns);

    // Pod 1 acknowledges lines (held for the flush interval, 60 s), then
    // hangs: what it acknowledged is only on claim 1's volume.
    let acked1 = send_to_pod(&h, "flush", "flush-ingester-1", "flush-web", 0).await;
    stop_container(&pod(&h, "flush-ingester-1").await);
    let archived = archived_ids(&h.env, &prefix, "flush-web").await;
    assert!(
        archived.is_disjoint(&acked1),
        "nothing of pod 1 archived before it hung: the test needs the lines on the claim"
    );

    // Scale down to 1: the StatefulSet controller stops pod 1, its claim
    // is retained. While the pod still mounts the claim, no Job.
    h.apply("flush", pvc_spec(&h, &["flush-web"], 1, &volumes.class))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        flush_job(&h, claim1).await.is_none(),
        "pod 1 still mounts its claim"
    );
    // The hung pod would hold its claim for its whole grace period.
    force_delete(&h, "flush-ingester-1").await;
    wait_for("the flush Job of the released claim", MINUTE, || {
        let h = &h;
        async move { flush_job(h, claim1).await }
    })
    .await;
    assert!(flush_job(&h, claim0).await.is_none(), "claim 0 is in use");
    // The Job's pod uploads the log on the claim; only then does the claim go.
    claim_gone(&h, claim1).await;
    wait_archived(&h.env, &prefix, "flush-web", &acked1).await;
    let kept = Api::<PersistentVolumeClaim>::namespaced(h.client.clone(), &h.ns)
        .get(claim0)
        .await
        .expect("claim 0");
    assert!(kept.metadata.deletion_timestamp.is_none());
    let reasons = h.event_reasons("flush").await;
    for reason in ["BufferFlushStarted", "BufferClaimDeleted"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }

    // Pod 0 acknowledges lines and hangs too, then its volume breaks: its
    // write-ahead log directory moved aside, a file in its place, so the
    // ingester cannot open it. Deleting the LogDrain waits for claim 0.
    let acked0 = send_to_pod(&h, "flush", "flush-ingester-0", "flush-web", 1_000).await;
    stop_container(&pod(&h, "flush-ingester-0").await);
    let volume0 = volumes.path(&bound_volume(&h, claim0).await);
    let (wal, aside) = (volume0.join("wal"), volume0.join("wal.aside"));
    std::fs::rename(&wal, &aside).expect("move the log aside");
    std::fs::write(&wal, b"not a directory").expect("a file where the log was");
    h.logdrains()
        .delete("flush", &DeleteParams::default())
        .await
        .expect("delete LogDrain");
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), &h.ns);
    wait_for("the StatefulSet to be deleted", MINUTE, || {
        let sets = sets.clone();
        async move {
            sets.get_opt("flush-ingester")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    force_delete(&h, "flush-ingester-0").await;
    // The Job's pod fails on every try; after its back-off limit the Job
    // fails: a warning, and the claim and the LogDrain stay.
    let failed = wait_for("the flush Job of claim 0 to fail", 4 * MINUTE, || {
        let h = &h;
        async move {
            let job = flush_job(h, claim0).await?;
            let failed = job
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Failed" && c.status == "True");
            failed.then_some(job)
        }
    })
    .await;
    wait_for("the BufferFlushFailed warning", MINUTE, || {
        let h = &h;
        async move {
            h.event_reasons("flush")
                .await
                .iter()
                .any(|r| r == "BufferFlushFailed")
                .then_some(())
        }
    })
    .await;
    let kept = Api::<PersistentVolumeClaim>::namespaced(h.client.clone(), &h.ns)
        .get(claim0)
        .await
        .expect("claim 0 after a failed flush");
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert!(
        h.logdrains().get_opt("flush").await.expect("get").is_some(),
        "the LogDrain waits for its claims"
    );

    // The volume mended, deleting the failed Job retries at once: the new
    // Job uploads pod 0's lines, the claim goes, and so does the LogDrain.
    std::fs::remove_file(&wal).expect("remove the file");
    std::fs::rename(&aside, &wal).expect("put the log back");
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), &h.ns);
    jobs.delete(&failed.name_any(), &DeleteParams::background())
        .await
        .expect("delete the failed Job");
    wait_for(
        "the LogDrain to go once its claims are flushed",
        3 * MINUTE,
        || {
            let h = &h;
            async move {
                h.logdrains()
                    .get_opt("flush")
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
    claim_gone(&h, claim0).await;
    wait_archived(&h.env, &prefix, "flush-web", &acked0).await;
    h.teardown().await;
}
