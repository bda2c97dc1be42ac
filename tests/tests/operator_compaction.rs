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
//! Runs are real: the test starts one now as `kubectl create job
//! --from=cronjob/...` does (the controller manager runs no CronJob
//! controller, so schedules never fire), and the Job controller and the
//! node's kubelet run the ingester image's `compact` over what the
//! LogDrain's ingester pods archived. A run is reported from the report the
//! compactor left as its termination message; a run killed before it could
//! report (the Job's and the container's own words) is covered by the unit
//! tests of `controller/status/compaction.rs`, as a real OOM kill cannot be
//! brought about on demand here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drainpipe_contract::compaction::CompactionReport;
use drainpipe_contract::schema::ArchiveFormat;
use drainpipe_operator::crd::LogDrain;
use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::ingester::object_keys;
use drainpipe_tests::node::{Logplex, archived_ids, run, wait_archived};
use drainpipe_tests::operator::{Harness, condition, condition_is, condition_reason, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
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

/// Starts a run now, as `kubectl create job --from=cronjob/...` does (a
/// Job from the CronJob's template, owned by it); the Job controller and
/// the kubelet run it on the node.
fn start_run(h: &Harness, cron: &str, job: &str) {
    run(
        &h.env.node().kubectl,
        &[
            "create",
            "job",
            job,
            &format!("--from=cronjob/{cron}"),
            "-n",
            &h.ns,
        ],
        &h.env,
        None,
    );
}

/// The report the compactor left as the termination message of the last
/// pod of Job `job`.
async fn run_report(h: &Harness, job: &str) -> CompactionReport {
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &h.ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .expect("list the run's pods");
    let message = list
        .items
        .iter()
        .filter_map(|p| {
            let status = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
            let ended = status.state.as_ref()?.terminated.as_ref()?;
            Some((ended.finished_at.clone()?, ended.message.clone()?))
        })
        .max_by(|a, b| a.0.0.cmp(&b.0.0))
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("no pod of {job} ended with a report: {list:?}"));
    serde_json::from_str(&message).unwrap_or_else(|e| panic!("{job}'s report {message}: {e}"))
}

/// The archive objects of `app` under this test's prefix.
async fn app_objects(h: &Harness, app: &str) -> Vec<String> {
    object_keys(&h.env, &format!("{}/", h.ns))
        .await
        .into_iter()
        .filter(|k| k.contains(&format!("/{app}/")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_run_is_reported_once_in_status_events_and_metrics() {
    let mut h = Harness::new("compact-runs", FakeOptions::default()).await;
    h.on_node().await;
    // Objects closed every 2 s: each batch of lines makes objects of its own, for the run to
    // merge.
    h.pod_env("DRAINPIPE_FLUSH_INTERVAL", "2s");
    h.heroku.add_app("run-web");
    h.start();
    let mut spec = h.spec(&["run-web"], None);
    spec["archive"]["compaction"] = json!({});
    h.apply("runs", spec).await;
    cronjob(&h, "runs-compaction").await;
    h.wait_status("runs", "Ready", 3 * MINUTE, |ld| {
        condition_is(ld, "Ready", "True")
            && ld.status.as_ref().is_some_and(|s| s.ready_replicas == 2)
    })
    .await;

    // Lines of a closed day (DAY), in three batches to the Service, each
    // archived before the next: several small objects in one partition.
    let service = Api::<Service>::namespaced(h.client.clone(), &h.ns)
        .get("runs-ingester")
        .await
        .expect("the ingesters' Service");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let base = format!("http://{cluster_ip}:8080");
    let password = h.drain_password("runs").await;
    let token = h.heroku.drains("run-web")[0].token.clone();
    let logplex = Logplex::new(&password, BTreeMap::from([("run-web".to_string(), token)]));
    let prefix = format!("{}/", h.ns);
    let mut acked = BTreeSet::new();
    for batch in 0..3 {
        let sent = logplex.send(&base, "run-web", batch * 1_000, 200).await;
        assert_eq!(sent.len(), 200, "every line acknowledged");
        acked.extend(sent);
        wait_archived(&h.env, &prefix, "run-web", &acked).await;
    }
    let before = app_objects(&h, "run-web").await;
    assert!(before.len() >= 3, "small objects to merge: {before:?}");

    // A run that compacted: the report in the status, the condition True.
    start_run(&h, "runs-compaction", "runs-compaction-1");
    let ld = h
        .wait_status("runs", "the first run in the status", 3 * MINUTE, |ld| {
            last_run_is(ld, "runs-compaction-1")
        })
        .await;
    let report = run_report(&h, "runs-compaction-1").await;
    assert_eq!(
        (
            report.partitions_compacted,
            report.objects_merged,
            report.objects_written,
            report.records_verified,
            report.partitions_failed,
        ),
        (1, before.len() as u64, 1, 600, 0),
        "{report:?}"
    );
    let after = app_objects(&h, "run-web").await;
    assert_eq!(after.len(), 1, "one object for the day: {after:?}");
    assert_eq!(
        archived_ids(&h.env, &prefix, "run-web").await,
        acked,
        "the merged object holds every line"
    );
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
        (
            report.partitions_seen as i64,
            report.partitions_compacted as i64,
            report.objects_merged as i64,
            report.objects_written as i64,
            report.bytes_before as i64,
            report.bytes_after as i64,
            report.records_verified as i64
        ),
        "the status shows the run's own report"
    );
    assert_eq!(last.error, None);
    assert_eq!(status.last_successful_run, Some(last.finished_at.clone()));
    let c = condition(&ld, "CompactionSucceeded").expect("condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "Compacted")
    );
    let merged = format!("{} objects merged into 1", before.len());
    assert!(c.message.contains(&merged), "{}", c.message);
    assert!(condition_is(&ld, "Ready", "True"));
    assert_eq!(h.event_count("runs", "Compacted").await, 1);
    let text = metrics(&h);
    let labels = format!("namespace=\"{}\",logdrain=\"runs\"", h.ns);
    for line in [
        format!("drainpipe_operator_compaction_runs_total{{{labels},result=\"succeeded\"}} 1"),
        format!(
            "drainpipe_operator_compaction_objects_merged_total{{{labels}}} {}",
            report.objects_merged
        ),
        format!("drainpipe_operator_compaction_objects_written_total{{{labels}}} 1"),
        format!(
            "drainpipe_operator_compaction_bytes_before_total{{{labels}}} {}",
            report.bytes_before
        ),
        format!(
            "drainpipe_operator_compaction_bytes_after_total{{{labels}}} {}",
            report.bytes_after
        ),
        format!("drainpipe_operator_compaction_records_verified_total{{{labels}}} 600"),
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

    // A damaged object in the day (not gzip): the run fails the partition
    // with a report, each of the Job's tries (its back-off limit) the
    // same, and the inputs stay. Its error in the status, Ready unmoved,
    // one event and one failed run counted for the whole Job.
    let damaged = format!(
        "{}/damaged.json.gz",
        after[0].rsplit_once('/').expect("a folder").0
    );
    h.env
        .s3_client()
        .put_object()
        .bucket(&h.env.bucket)
        .key(&damaged)
        .body(b"this is not gzip".to_vec().into())
        .send()
        .await
        .expect("put the damaged object");
    start_run(&h, "runs-compaction", "runs-compaction-2");
    let ld = h
        .wait_status("runs", "the failed run in the status", 3 * MINUTE, |ld| {
            last_run_is(ld, "runs-compaction-2")
        })
        .await;
    let report = run_report(&h, "runs-compaction-2").await;
    assert_eq!(report.partitions_failed, 1, "{report:?}");
    let error = report.error.clone().expect("the report's error");
    let c = condition(&ld, "CompactionSucceeded").expect("condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "CompactionFailed")
    );
    assert!(c.message.contains(&error), "{} names {error}", c.message);
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
    let mut kept = app_objects(&h, "run-web").await;
    kept.sort();
    let mut want = vec![after[0].clone(), damaged.clone()];
    want.sort();
    assert_eq!(kept, want, "a failed partition keeps its inputs");
    h.env
        .s3_client()
        .delete_object()
        .bucket(&h.env.bucket)
        .key(&damaged)
        .send()
        .await
        .expect("remove the damaged object");
    assert_eq!(
        archived_ids(&h.env, &prefix, "run-web").await,
        acked,
        "nothing lost"
    );
    h.teardown().await;
}
