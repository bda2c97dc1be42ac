//! `spec.archive.format` and `spec.archive.compaction` against the real
//! kube-apiserver (with kube-controller-manager's garbage collector) and
//! moto's Glue: the compaction CronJob the API server stored (the ingester
//! image's `compact`, the ingesters' identity and hardening), which goes
//! with the field and with the LogDrain; the ingesters' format; the Glue
//! table of a Parquet LogDrain and a JSON one switched to Parquet; and
//! what a finished run leaves: `status.compaction`, `CompactionSucceeded`
//! (never in `Ready`), one event and the metrics, counted once per Job even
//! across an operator restart.
//!
//! The test cluster runs no CronJob or Job controller and no kubelet, so
//! the test plays them for a run: it creates the Job the CronJob controller
//! would (from the CronJob's template, owned by it) and its pod, writes the
//! pod's end as the kubelet would (the compactor's report as the
//! termination message) and marks the Job finished.

use std::collections::BTreeMap;
use std::time::Duration;

use drainpipe_contract::compaction::CompactionReport;
use drainpipe_contract::schema::ArchiveFormat;
use drainpipe_operator::crd::LogDrain;
use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::operator::{Harness, condition, condition_is, condition_reason, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn env_map(pod: &k8s_openapi::api::core::v1::PodSpec) -> BTreeMap<String, String> {
    pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

async fn cronjob(h: &Harness, name: &str) -> CronJob {
    let api: Api<CronJob> = Api::namespaced(h.client.clone(), &h.ns);
    let name = name.to_string();
    wait_for(&format!("CronJob {name}"), MINUTE, || {
        let api = api.clone();
        let name = name.clone();
        async move { api.get_opt(&name).await.ok()? }
    })
    .await
}

async fn cronjob_gone(h: &Harness, name: &str) {
    let api: Api<CronJob> = Api::namespaced(h.client.clone(), &h.ns);
    let name = name.to_string();
    wait_for(&format!("CronJob {name} to be gone"), MINUTE, || {
        let api = api.clone();
        let name = name.clone();
        async move { api.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_compaction_cronjob_runs_compact_as_the_ingesters_run_and_goes_with_the_field() {
    let mut h = Harness::new("compact-cron", FakeOptions::default()).await;
    h.heroku.add_app("cmp-web");
    h.start();
    let mut spec = h.spec(&["cmp-web"], None);
    spec["archive"]["format"] = json!("parquet");
    spec["archive"]["compaction"] = json!({"schedule": "5 4 * * *", "targetSize": "256MiB"});
    spec["ingester"]["serviceAccountName"] = json!("archive-writer");
    h.apply("cmp", spec.clone()).await;

    // As the API server stored it, so its validation passed.
    let cron = cronjob(&h, "cmp-compaction").await;
    let owner = &cron.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("LogDrain", "cmp")
    );
    let spec_of = &cron.spec;
    assert_eq!(spec_of.schedule, "5 4 * * *");
    assert_eq!(spec_of.time_zone.as_deref(), Some("Etc/UTC"));
    assert_eq!(spec_of.concurrency_policy.as_deref(), Some("Forbid"));
    assert!(spec_of.starting_deadline_seconds.is_some());
    assert!(spec_of.successful_jobs_history_limit.is_some());
    let job = spec_of.job_template.spec.clone().expect("job template");
    assert!(job.backoff_limit.is_some());
    let pod = job.template.spec.expect("pod template");
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("drainpipe-ingester:test"));
    assert_eq!(c.args.as_deref(), Some(&["compact".to_string()][..]));
    assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.service_account_name.as_deref(), Some("archive-writer"));
    let env = env_map(&pod);
    assert_eq!(
        env["DRAINPIPE_ARCHIVE"],
        format!("s3://{}/{}/", h.env.bucket, h.ns)
    );
    assert_eq!(env["DRAINPIPE_FORMAT"], "parquet");
    assert_eq!(env["DRAINPIPE_COMPACT_TARGET_SIZE"], "256MiB");
    assert_eq!(env["DRAINPIPE_COMPACT_GRACE"], "2h");
    assert_eq!(env["DRAINPIPE_COMPACT_REPORT"], "/dev/termination-log");
    assert_eq!(env["AWS_REGION"], h.env.region);
    assert_eq!(env["AWS_ENDPOINT_URL_S3"], h.env.s3_endpoint);
    let sc = c.security_context.as_ref().expect("security context");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let psc = pod.security_context.as_ref().expect("pod security context");
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.run_as_non_root, Some(true));
    let tmp = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/tmp")
        .expect("a writable /tmp");
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .any(|v| v.name == tmp.name && v.empty_dir.is_some())
    );

    // The ingesters write the same format, with the same identity.
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), &h.ns);
    let ingester = deployments
        .get("cmp-ingester")
        .await
        .expect("ingester Deployment")
        .spec
        .and_then(|s| s.template.spec)
        .expect("ingester pod");
    let ingester_env = env_map(&ingester);
    assert_eq!(ingester_env["DRAINPIPE_FORMAT"], "parquet");
    assert_eq!(
        ingester.service_account_name, pod.service_account_name,
        "the same S3 identity"
    );
    assert_eq!(ingester.security_context, pod.security_context);

    let ld = h
        .wait_status("cmp", "CompactionSucceeded before any run", MINUTE, |ld| {
            condition(ld, "CompactionSucceeded").is_some()
        })
        .await;
    let c = condition(&ld, "CompactionSucceeded").expect("condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", "NotRunYet")
    );
    assert!(c.message.contains("`5 4 * * *` (UTC)"), "{}", c.message);

    // The field goes: the CronJob and the condition go.
    let mut without = spec.clone();
    without["archive"]
        .as_object_mut()
        .expect("archive")
        .remove("compaction");
    h.apply("cmp", without).await;
    cronjob_gone(&h, "cmp-compaction").await;
    let ld = h
        .wait_status("cmp", "no CompactionSucceeded", MINUTE, |ld| {
            condition(ld, "CompactionSucceeded").is_none()
        })
        .await;
    assert_eq!(ld.status.and_then(|s| s.compaction), None);

    // Back, with a schedule the CRD's pattern lets through but the
    // CronJob's own validation refuses: the condition says so, the rest of
    // the LogDrain is reconciled, and a good schedule fixes it.
    let mut bad = spec.clone();
    bad["archive"]["compaction"]["schedule"] = json!("99 4 * * *");
    h.apply("cmp", bad).await;
    let ld = h
        .wait_status("cmp", "CronJobRejected", MINUTE, |ld| {
            condition_reason(ld, "CompactionSucceeded") == "CronJobRejected"
        })
        .await;
    let c = condition(&ld, "CompactionSucceeded").expect("condition");
    assert_eq!(c.status, "False");
    assert!(c.message.contains("spec.schedule"), "{}", c.message);
    assert!(condition_is(&ld, "DrainsRegistered", "True"));
    h.apply("cmp", spec.clone()).await;
    cronjob(&h, "cmp-compaction").await;
    h.wait_status("cmp", "the schedule accepted", MINUTE, |ld| {
        condition_reason(ld, "CompactionSucceeded") == "NotRunYet"
    })
    .await;

    // Then the LogDrain deleted: the CronJob goes with it.
    h.delete_and_wait("cmp").await;
    cronjob_gone(&h, "cmp-compaction").await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parquet_logdrains_table_and_a_json_table_switched_to_parquet() {
    let mut h = Harness::new("compact-glue", FakeOptions::default()).await;
    for app in ["pq-web", "js-web", "js-worker"] {
        h.heroku.add_app(app);
    }
    h.start();
    let get = |table: &str| {
        let glue = h.glue.clone();
        let db = h.database.clone();
        let table = table.to_string();
        async move {
            glue.get_table()
                .database_name(db)
                .name(table)
                .send()
                .await
                .expect("GetTable")
                .table
                .expect("table")
        }
    };
    let root = |format: ArchiveFormat| format!("s3://{}/{}/{}", h.env.bucket, h.ns, format.root());

    // Born Parquet.
    let mut spec = h.spec(&["pq-web"], Some("parquet_logs"));
    spec["archive"]["format"] = json!("parquet");
    h.apply("pq", spec).await;
    h.wait_drains_registered("pq", &["pq-web"]).await;
    let table = get("parquet_logs").await;
    let sd = table.storage_descriptor().expect("storage");
    assert_eq!(
        sd.serde_info().and_then(|s| s.serialization_library()),
        Some("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
    );
    assert_eq!(sd.location(), Some(root(ArchiveFormat::Parquet).as_str()));
    let p = table.parameters().expect("parameters");
    assert_eq!(p["classification"], "parquet");
    assert_eq!(
        p["storage.location.template"],
        format!(
            "{}${{app}}/${{year}}/${{month}}/${{day}}/",
            root(ArchiveFormat::Parquet)
        )
    );
    assert_eq!(p["projection.app.values"], "pq-web");

    // Born JSON, then switched: the same table reads Parquet, with its apps.
    let spec = h.spec(&["js-web", "js-worker"], Some("json_logs"));
    h.apply("js", spec.clone()).await;
    h.wait_drains_registered("js", &["js-web", "js-worker"])
        .await;
    let before = get("json_logs").await;
    assert_eq!(
        before
            .storage_descriptor()
            .and_then(|sd| sd.serde_info())
            .and_then(|s| s.serialization_library()),
        Some("org.openx.data.jsonserde.JsonSerDe")
    );
    let mut parquet = spec;
    parquet["archive"]["format"] = json!("parquet");
    h.apply("js", parquet).await;
    let ld = h
        .wait_status("js", "the table switched", MINUTE, |ld| {
            condition_is(ld, "CatalogSynced", "True")
        })
        .await;
    assert_eq!(condition_reason(&ld, "CatalogSynced"), "Synced");
    let after = get("json_logs").await;
    let sd = after.storage_descriptor().expect("storage");
    assert_eq!(
        sd.serde_info().and_then(|s| s.serialization_library()),
        Some("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
    );
    assert_eq!(
        sd.input_format(),
        Some("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
    );
    assert_eq!(sd.location(), Some(root(ArchiveFormat::Parquet).as_str()));
    assert_eq!(
        sd.columns(),
        before.storage_descriptor().expect("storage").columns()
    );
    let p = after.parameters().expect("parameters");
    assert_eq!(p["projection.app.values"], "js-web,js-worker", "kept");
    assert!(
        p["storage.location.template"].starts_with(&root(ArchiveFormat::Parquet)),
        "{}",
        p["storage.location.template"]
    );
    assert_eq!(h.event_count("js", "TableFormatChanged").await, 1);
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), &h.ns);
    let ingester = deployments
        .get("js-ingester")
        .await
        .expect("ingester")
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod");
    assert_eq!(env_map(&ingester)["DRAINPIPE_FORMAT"], "parquet");
    h.teardown().await;
}

/// What the compactor writes to its termination message.
fn report(failed: u64, error: Option<&str>) -> String {
    serde_json::to_string(&CompactionReport {
        format: ArchiveFormat::Json,
        started_at: "2026-12-07T03:17:00.000000Z".into(),
        finished_at: "2026-12-07T03:19:12.000000Z".into(),
        partitions_seen: 6,
        partitions_compacted: 4,
        objects_merged: 1440,
        objects_written: 4,
        bytes_before: 9_000_000,
        bytes_after: 3_000_000,
        records_verified: 50_000,
        partitions_failed: failed,
        error: error.map(str::to_string),
    })
    .expect("report")
}

/// How the compactor's container ended.
struct End<'a> {
    exit_code: i32,
    reason: &'a str,
    message: Option<String>,
}

/// Plays the CronJob controller, the Job controller and the kubelet for
/// one run: the Job from the CronJob's template (owned by the CronJob),
/// its pod, the pod's end, then the Job finished.
async fn run(h: &Harness, cron: &CronJob, job_name: &str, end: End<'_>) {
    let template = cron.spec.job_template.clone();
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), &h.ns);
    let job = Job {
        metadata: ObjectMeta {
            name: Some(job_name.to_string()),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "CronJob".into(),
                    name: cron.name_any(),
                    uid: cron.uid().expect("cronjob uid"),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                },
            ]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    };
    let job = jobs
        .create(&PostParams::default(), &job)
        .await
        .unwrap_or_else(|e| panic!("creating Job {job_name}: {e}"));
    let job_spec = job.spec.clone().expect("job spec");
    let mut pod_spec = job_spec.template.spec.clone().expect("pod spec");
    pod_spec.automount_service_account_token = Some(false);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{job_name}-run")),
            // The API server added the Job's own labels to its template.
            labels: job_spec.template.metadata.and_then(|m| m.labels),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: job_name.to_string(),
                    uid: job.uid().expect("job uid"),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                },
            ]),
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    };
    h.create_pod(&pod).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &h.ns);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let phase = if end.exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    let status = json!({"status": {
        "phase": phase,
        "containerStatuses": [{
            "name": "compact", "image": "drainpipe-ingester:test", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {
                "exitCode": end.exit_code, "reason": end.reason, "message": end.message,
                "startedAt": now, "finishedAt": now,
            }},
        }],
    }});
    pods.patch_status(
        &format!("{job_name}-run"),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .expect("the pod's end, as the kubelet reports it");
    if end.exit_code == 0 {
        h.mark_job_complete(job_name).await;
    } else {
        h.mark_job_failed(job_name).await;
    }
}

fn last_run_is(ld: &LogDrain, job: &str) -> bool {
    ld.status
        .as_ref()
        .and_then(|s| s.compaction.as_ref())
        .and_then(|c| c.last_run.as_ref())
        .is_some_and(|r| r.job == job)
}

fn metrics(h: &Harness) -> String {
    h.ctx.as_ref().expect("operator running").metrics.encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_run_is_reported_once_in_status_events_and_metrics() {
    let mut h = Harness::new("compact-runs", FakeOptions::default()).await;
    h.heroku.add_app("run-web");
    h.start();
    let mut spec = h.spec(&["run-web"], None);
    spec["archive"]["compaction"] = json!({});
    h.apply("runs", spec).await;
    let cron = cronjob(&h, "runs-compaction").await;
    // Playing the kubelet for the ingesters: the LogDrain is Ready.
    wait_for("ingester pods to exist", MINUTE, || {
        let h = &h;
        async move { (h.mark_ingester_pods_ready("runs").await >= 2).then_some(()) }
    })
    .await;
    h.wait_status("runs", "Ready", MINUTE, |ld| {
        condition_is(ld, "Ready", "True")
            && ld.status.as_ref().is_some_and(|s| s.ready_replicas == 2)
    })
    .await;

    // A run that compacted: its numbers in the status, the condition True.
    let success = report(0, None);
    run(
        &h,
        &cron,
        "runs-compaction-1",
        End {
            exit_code: 0,
            reason: "Completed",
            message: Some(success),
        },
    )
    .await;
    let ld = h
        .wait_status("runs", "the first run in the status", MINUTE, |ld| {
            last_run_is(ld, "runs-compaction-1")
        })
        .await;
    let status = ld
        .status
        .as_ref()
        .and_then(|s| s.compaction.clone())
        .expect("status.compaction");
    let last = status.last_run.clone().expect("lastRun");
    assert_eq!(last.result, "Succeeded");
    assert_eq!(
        (
            last.partitions_seen,
            last.partitions_compacted,
            last.objects_merged,
            last.objects_written,
            last.bytes_before,
            last.bytes_after,
            last.records_verified
        ),
        (6, 4, 1440, 4, 9_000_000, 3_000_000, 50_000)
    );
    assert_eq!(last.error, None);
    assert_eq!(status.last_successful_run, Some(last.finished_at.clone()));
    let c = condition(&ld, "CompactionSucceeded").expect("condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "Compacted")
    );
    assert!(
        c.message.contains("1440 objects merged into 4"),
        "{}",
        c.message
    );
    assert!(condition_is(&ld, "Ready", "True"));
    assert_eq!(h.event_count("runs", "Compacted").await, 1);
    let text = metrics(&h);
    let labels = format!("namespace=\"{}\",logdrain=\"runs\"", h.ns);
    for line in [
        format!("drainpipe_operator_compaction_runs_total{{{labels},result=\"succeeded\"}} 1"),
        format!("drainpipe_operator_compaction_objects_merged_total{{{labels}}} 1440"),
        format!("drainpipe_operator_compaction_objects_written_total{{{labels}}} 4"),
        format!("drainpipe_operator_compaction_bytes_before_total{{{labels}}} 9000000"),
        format!("drainpipe_operator_compaction_bytes_after_total{{{labels}}} 3000000"),
        format!("drainpipe_operator_compaction_records_verified_total{{{labels}}} 50000"),
        format!(
            "drainpipe_operator_compaction_last_success_timestamp_seconds{{{labels}}} {}",
            last.finished_at.0.as_second()
        ),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }

    // An operator restart counts nothing again; the last success stays.
    h.kill().await;
    h.start();
    h.poke("runs", 1).await;
    let success_gauge = format!(
        "drainpipe_operator_compaction_last_success_timestamp_seconds{{{labels}}} {}",
        last.finished_at.0.as_second()
    );
    wait_for(
        "the restarted operator's last-success gauge",
        MINUTE,
        || {
            let text = metrics(&h);
            let line = success_gauge.clone();
            async move { text.contains(&line).then_some(()) }
        },
    )
    .await;
    let text = metrics(&h);
    assert!(
        !text.contains("drainpipe_operator_compaction_runs_total{"),
        "the run was counted again after the restart:\n{text}"
    );
    assert_eq!(h.event_count("runs", "Compacted").await, 1);

    // A run that failed with a report: its error, and Ready unmoved.
    let failed = report(
        1,
        Some("run-web/2026/12/05: 3 records missing from the merged object; inputs kept"),
    );
    run(
        &h,
        &cron,
        "runs-compaction-2",
        End {
            exit_code: 1,
            reason: "Error",
            message: Some(failed),
        },
    )
    .await;
    let ld = h
        .wait_status("runs", "the failed run in the status", MINUTE, |ld| {
            last_run_is(ld, "runs-compaction-2")
        })
        .await;
    let c = condition(&ld, "CompactionSucceeded").expect("condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "CompactionFailed")
    );
    assert!(c.message.contains("3 records missing"), "{}", c.message);
    assert!(
        condition_is(&ld, "Ready", "True"),
        "compaction never makes a LogDrain unready"
    );
    let status = ld.status.and_then(|s| s.compaction).expect("status");
    assert_eq!(
        status.last_successful_run,
        Some(last.finished_at.clone()),
        "the last success is still the first run"
    );
    assert_eq!(status.last_run.map(|r| r.result).as_deref(), Some("Failed"));
    assert_eq!(h.event_count("runs", "CompactionFailed").await, 1);
    assert!(metrics(&h).contains(&format!(
        "drainpipe_operator_compaction_runs_total{{{labels},result=\"failed\"}} 1"
    )));

    // A run killed before it could report: the Job's and the container's
    // own words.
    run(
        &h,
        &cron,
        "runs-compaction-3",
        End {
            exit_code: 137,
            reason: "OOMKilled",
            message: None,
        },
    )
    .await;
    let ld = h
        .wait_status("runs", "the killed run in the status", MINUTE, |ld| {
            last_run_is(ld, "runs-compaction-3")
        })
        .await;
    let c = condition(&ld, "CompactionSucceeded").expect("condition");
    assert_eq!(c.reason, "CompactionFailed");
    assert!(
        c.message.contains("BackoffLimitExceeded") && c.message.contains("OOMKilled"),
        "{}",
        c.message
    );
    assert_eq!(h.event_count("runs", "CompactionFailed").await, 2);
    assert_eq!(h.event_count("runs", "Compacted").await, 1);
    h.teardown().await;
}
