//! `spec.ingester.bufferStorage.persistentVolumeClaim` against the real
//! kube-apiserver: the ingesters run as a StatefulSet (no Deployment) and
//! back, the PodDisruptionBudget follows the replicas, and a scale-down
//! leaves no unarchived log behind: the released claim gets a flush Job,
//! which the test runs as the kubelet would (the real ingester's
//! `--flush-and-exit` on a directory standing for the volume, holding what
//! a real ingester acknowledged before it was killed -9) against MinIO;
//! only then is the claim deleted, and every acknowledged message is in
//! the archive.
//!
//! The test cluster runs no StatefulSet, Job or PVC-protection controller
//! and no kubelet, so the test plays them: it creates the claims and pods
//! the StatefulSet controller would, deletes the pod a scale-down stops,
//! and marks the Job complete once the flush exited 0.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::ingester::archived_records;
use drainpipe_tests::operator::{Harness, condition, condition_is, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// `cmd` with none of this process's DRAINPIPE_/AWS_ settings.
fn clean(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("DRAINPIPE_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

/// A real ingester on loopback writing its log to `wal`, its objects held
/// for an hour: what it acknowledges stays on the "volume".
struct Writer {
    child: Child,
    base: String,
}

impl Writer {
    fn start(wal: &Path, scratch: &Path) -> Writer {
        let mut cmd = clean(Command::new(drainpipe_tests::ingester::workspace_binary(
            "drainpipe-ingester",
        )));
        cmd.args(["--listen", "127.0.0.1:0", "--flush-interval", "1h"])
            .arg("--data-dir")
            .arg(wal)
            .arg("--archive")
            .arg(format!("file://{}", scratch.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start drainpipe-ingester");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split(',').next().unwrap_or("").to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the ingester logs its address");
        Writer {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// Posts `n` Logplex requests for `app`; returns the acknowledged texts.
    async fn send(&self, app: &str, n: usize) -> BTreeSet<String> {
        let c = reqwest::Client::new();
        let mut acked = BTreeSet::new();
        for r in 0..n {
            let texts: Vec<String> = (0..10)
                .map(|m| format!("{app} request {r} msg {m} {}", "b".repeat(100)))
                .collect();
            let mut body = Vec::new();
            for t in &texts {
                let line = format!("<190>1 2026-12-02T01:00:00.000000+00:00 host app web.1 - {t}");
                body.extend_from_slice(format!("{} {line}\n", line.len() + 1).as_bytes());
            }
            let res = c
                .post(format!("{}/logplex/{app}", self.base))
                .header("Content-Type", "application/logplex-1")
                .header("Logplex-Msg-Count", texts.len().to_string())
                .header("Logplex-Frame-Id", format!("F{r}"))
                .header(
                    "Logplex-Drain-Token",
                    "d.01234567-89ab-cdef-0123-456789abcdef",
                )
                .body(body)
                .send()
                .await
                .expect("POST to the ingester");
            assert_eq!(res.status(), 200);
            acked.extend(texts);
        }
        acked
    }

    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

fn wal_bytes(wal: &Path) -> u64 {
    std::fs::read_dir(wal)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Every message under `prefix` in the test bucket.
async fn archived(h: &Harness, prefix: &str) -> BTreeSet<String> {
    archived_records(&h.env, prefix)
        .await
        .iter()
        .filter_map(|r| r["message"].as_str().map(str::to_owned))
        .collect()
}

fn pvc_spec(h: &Harness, apps: &[&str], replicas: i32) -> serde_json::Value {
    let mut spec = h.spec(apps, None);
    spec["ingester"] = json!({
        "replicas": replicas,
        "bufferStorage": {"persistentVolumeClaim": {"size": "1Gi", "storageClassName": "standard"}},
    });
    spec
}

/// Plays the StatefulSet controller: claim `ordinal` (from the set's
/// claim template) and the pod that mounts it.
async fn create_claim_and_pod(h: &Harness, set: &StatefulSet, ordinal: u32) {
    let spec = set.spec.as_ref().expect("statefulset spec");
    let set_name = set.name_any();
    let template = &spec
        .volume_claim_templates
        .as_ref()
        .expect("claim templates")[0];
    let claim_name = format!("{}-{set_name}-{ordinal}", template.name_any());
    let mut claim = template.clone();
    claim.metadata.name = Some(claim_name.clone());
    claim.metadata.namespace = Some(h.ns.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(h.client.clone(), &h.ns);
    if claims
        .get_opt(&claim_name)
        .await
        .expect("get claim")
        .is_none()
    {
        claims
            .create(&PostParams::default(), &claim)
            .await
            .unwrap_or_else(|e| panic!("creating claim {claim_name}: {e}"));
    }
    let mut pod_spec = spec.template.spec.clone().expect("pod template");
    pod_spec.volumes.get_or_insert_with(Vec::new).push(
        serde_json::from_value(json!({
            "name": template.name_any(),
            "persistentVolumeClaim": {"claimName": claim_name},
        }))
        .expect("claim volume"),
    );
    pod_spec.automount_service_account_token = Some(false);
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{set_name}-{ordinal}")),
            labels: spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone()),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    };
    h.create_pod(&pod).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_buffer_runs_a_statefulset_with_a_budget_and_switching_back_removes_it() {
    let mut h = Harness::new("buffer-sts", FakeOptions::default()).await;
    h.heroku.add_app("buf-web");
    h.start();
    h.apply("buf", pvc_spec(&h, &["buf-web"], 2)).await;

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
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("standard"));
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

    // The status reads the StatefulSet: first nothing available...
    let ld = h
        .wait_status(
            "buf",
            "IngesterAvailable from the StatefulSet",
            MINUTE,
            |ld| {
                condition(ld, "IngesterAvailable")
                    .is_some_and(|c| c.reason == "StatefulSetUnavailable")
            },
        )
        .await;
    assert!(condition(&ld, "IngesterAvailable").is_some_and(|c| {
        c.message
            .contains("kubectl describe statefulset buf-ingester")
    }));
    // ...then what the StatefulSet controller reports.
    sets.patch_status(
        "buf-ingester",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "replicas": 2, "readyReplicas": 2, "availableReplicas": 2,
            "currentReplicas": 2, "updatedReplicas": 2,
        }})),
    )
    .await
    .expect("StatefulSet status");
    let ld = h
        .wait_status("buf", "2 ready replicas", MINUTE, |ld| {
            ld.status.as_ref().is_some_and(|s| s.ready_replicas == 2)
                && condition_is(ld, "IngesterAvailable", "True")
        })
        .await;
    assert_eq!(ld.status.as_ref().map(|s| s.replicas), Some(2));

    // A bigger claim: Kubernetes refuses to change a StatefulSet's claim
    // templates, so the set is re-created (its pods and claims orphaned,
    // then adopted).
    let first_uid = set.uid();
    let mut bigger = pvc_spec(&h, &["buf-web"], 2);
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
    h.apply("buf", pvc_spec(&h, &["buf-web"], 1)).await;
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
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_down_flushes_the_released_claim_before_deleting_it() {
    let mut h = Harness::new("buffer-flush", FakeOptions::default()).await;
    h.heroku.add_app("flush-web");
    h.start();
    h.apply("flush", pvc_spec(&h, &["flush-web"], 2)).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), &h.ns);
    let set = wait_for("the ingester StatefulSet", MINUTE, || {
        let sets = sets.clone();
        async move { sets.get_opt("flush-ingester").await.ok()? }
    })
    .await;
    for ordinal in [0, 1] {
        create_claim_and_pod(&h, &set, ordinal).await;
    }
    let claim0 = "buffer-flush-ingester-0";
    let claim1 = "buffer-flush-ingester-1";

    // Pod 1 acknowledges messages and dies with them in its log (kill -9):
    // the volume of claim 1 now holds data no archive has.
    let volume = tempfile::tempdir().expect("stand-in for claim 1's volume");
    let wal = volume.path().join("wal");
    let scratch = tempfile::tempdir().expect("scratch");
    let writer = Writer::start(&wal, scratch.path());
    let acked = writer.send("flush-web", 30).await;
    writer.kill9();
    assert!(wal_bytes(&wal) > 0, "the log holds the acknowledged data");
    let prefix = format!("{}/", h.ns);
    assert!(archived(&h, &prefix).await.is_empty());

    // Scale down to 1: the StatefulSet controller deletes pod 1, and its
    // claim is retained.
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &h.ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(h.client.clone(), &h.ns);
    h.apply("flush", pvc_spec(&h, &["flush-web"], 1)).await;
    // While pod 1 still stops (flushing itself), no Job.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        flush_job(&h, claim1).await.is_none(),
        "pod 1 still mounts its claim"
    );
    pods.delete("flush-ingester-1", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod 1");

    let job = wait_for("the flush Job of the released claim", MINUTE, || {
        let h = &h;
        async move { flush_job(h, claim1).await }
    })
    .await;
    assert!(flush_job(&h, claim0).await.is_none(), "claim 0 is in use");

    // Scaled up again before the Job ran: the pod comes back on its claim
    // and the Job is cancelled.
    h.apply("flush", pvc_spec(&h, &["flush-web"], 2)).await;
    drop(job);
    wait_for("the flush Job to be cancelled", MINUTE, || {
        let h = &h;
        async move { flush_job(h, claim1).await.is_none().then_some(()) }
    })
    .await;
    // And down again, for good this time.
    h.apply("flush", pvc_spec(&h, &["flush-web"], 1)).await;
    let job = wait_for("a new flush Job", MINUTE, || {
        let h = &h;
        async move {
            flush_job(h, claim1)
                .await
                .filter(|j| j.metadata.deletion_timestamp.is_none())
        }
    })
    .await;
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("job pod");
    let volume_claim = pod.volumes.as_ref().and_then(|v| {
        v.iter().find_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
    });
    assert_eq!(volume_claim.as_deref(), Some(claim1));
    let container = &pod.containers[0];
    let args = container.args.clone().expect("args");
    assert_eq!(args[0], "--flush-and-exit");

    // The kubelet's part: the Job's command line on the volume, the data
    // dir mapped to the stand-in directory, with the pod's environment.
    let data_dir = args
        .iter()
        .position(|a| a == "--data-dir")
        .expect("--data-dir");
    let mut args = args.clone();
    let in_pod = args[data_dir + 1].clone();
    let mount = container.volume_mounts.as_ref().expect("mounts")[0]
        .mount_path
        .clone();
    args[data_dir + 1] = volume
        .path()
        .join(
            in_pod
                .strip_prefix(&format!("{mount}/"))
                .expect("under the mount"),
        )
        .display()
        .to_string();
    assert_eq!(args[data_dir + 1], wal.display().to_string());
    let mut cmd = clean(Command::new(drainpipe_tests::ingester::workspace_binary(
        "drainpipe-ingester",
    )));
    for e in container.env.clone().unwrap_or_default() {
        cmd.env(e.name, e.value.unwrap_or_default());
    }
    // The pod's identity (its ServiceAccount's role) as MinIO's keys.
    cmd.env("AWS_ACCESS_KEY_ID", &h.env.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &h.env.secret_key);
    let out = cmd
        .args(&args)
        .output()
        .expect("run the flush Job's command");
    assert!(
        out.status.success(),
        "--flush-and-exit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(wal_bytes(&wal), 0, "exit 0 means the volume's log is empty");
    // Flushed, but the Job not complete yet: the claim must still be there.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = claims
        .get(claim1)
        .await
        .expect("claim 1 before its Job completed");
    assert!(
        still.metadata.deletion_timestamp.is_none(),
        "a claim may go only after its flush Job succeeded"
    );
    h.mark_job_complete(&job.name_any()).await;

    // The claim goes (deletion asked; no PVC-protection controller runs
    // here to finish it), claim 0 stays.
    wait_for("the released claim to be deleted", MINUTE, || {
        let claims = claims.clone();
        async move {
            match claims.get_opt(claim1).await.ok()? {
                None => Some(()),
                Some(c) => c.metadata.deletion_timestamp.map(|_| ()),
            }
        }
    })
    .await;
    let kept = claims.get(claim0).await.expect("claim 0");
    assert!(kept.metadata.deletion_timestamp.is_none());
    wait_for("the finished Job to be removed", MINUTE, || {
        let h = &h;
        async move {
            let job = flush_job(h, claim1).await;
            job.is_none_or(|j| j.metadata.deletion_timestamp.is_some())
                .then_some(())
        }
    })
    .await;

    let seen = archived(&h, &prefix).await;
    let missing: Vec<&String> = acked.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages not archived, e.g. {:?}",
        missing.len(),
        acked.len(),
        missing.first()
    );
    let reasons = h.event_reasons("flush").await;
    for reason in [
        "BufferFlushStarted",
        "BufferFlushCancelled",
        "BufferClaimDeleted",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }

    // Let the claims go (the PVC-protection controller's part), then
    // delete: the LogDrain waits for claim 0 to be flushed too.
    release_claims(&claims).await;
    h.logdrains()
        .delete("flush", &DeleteParams::default())
        .await
        .expect("delete LogDrain");
    // The StatefulSet goes first; its controller would then stop pod 0.
    wait_for("the StatefulSet to be deleted", MINUTE, || {
        let sets = sets.clone();
        async move {
            let gone = match sets.get_opt("flush-ingester").await.ok()? {
                None => true,
                Some(s) => s.metadata.deletion_timestamp.is_some(),
            };
            gone.then_some(())
        }
    })
    .await;
    pods.delete("flush-ingester-0", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod 0");
    let job = wait_for("the flush Job of claim 0 on deletion", MINUTE, || {
        let h = &h;
        async move { flush_job(h, claim0).await }
    })
    .await;
    assert!(
        h.logdrains().get_opt("flush").await.expect("get").is_some(),
        "the LogDrain waits for its claims"
    );
    // The flush fails (archive unreachable, say): the claim and the
    // LogDrain stay, with a warning.
    h.mark_job_failed(&job.name_any()).await;
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
    let kept = claims
        .get(claim0)
        .await
        .expect("claim 0 after a failed flush");
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert!(h.logdrains().get_opt("flush").await.expect("get").is_some());
    // Deleting the failed Job retries at once.
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), &h.ns);
    jobs.delete(&job.name_any(), &DeleteParams::background())
        .await
        .expect("delete the failed Job");
    let job = wait_for("a new flush Job for claim 0", MINUTE, || {
        let h = &h;
        let old = job.uid();
        async move {
            flush_job(h, claim0)
                .await
                .filter(|j| j.uid() != old && j.metadata.deletion_timestamp.is_none())
        }
    })
    .await;
    h.mark_job_complete(&job.name_any()).await;
    wait_for(
        "the LogDrain to go once its claims are flushed",
        MINUTE,
        || {
            let h = &h;
            let claims = claims.clone();
            async move {
                release_claims(&claims).await;
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
    h.teardown().await;
}

/// Removes the PVC-protection finalizer, as its controller does once no
/// pod uses a claim being deleted.
async fn release_claims(claims: &Api<PersistentVolumeClaim>) {
    let Ok(list) = claims.list(&Default::default()).await else {
        return;
    };
    for c in list.items {
        if c.metadata.deletion_timestamp.is_some() {
            let _ = claims
                .patch(
                    &c.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
    }
}
