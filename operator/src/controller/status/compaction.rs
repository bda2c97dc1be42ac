//! `CompactionSucceeded` and `status.compaction`: what the runs of the
//! compaction CronJob did. A run is a Job; the report of a finished one is
//! its pod's termination message (`drainpipe-ingester compact --report
//! /dev/termination-log`, a `contract::compaction::CompactionReport` as
//! JSON). Each finished Job is counted once in the metrics and gets one
//! event: the status remembers the last counted Job (time and name), and so
//! does this process, whose memory is newer when the object at hand
//! predates the status it wrote last. The condition never affects `Ready`:
//! logs flow whatever compaction does.

use drainpipe_contract::compaction::CompactionReport;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;

use super::conditions::Cond;
use crate::controller::Context;
use crate::crd::{CompactionRun, CompactionSpec, CompactionStatus};
use crate::error::Result;
use crate::metrics::CompactionCounts;
use crate::resources;

/// `status.compaction.lastRun.result`.
pub(crate) const SUCCEEDED: &str = "Succeeded";
pub(crate) const FAILED: &str = "Failed";

/// A Job of the CronJob that finished.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Finished {
    name: String,
    uid: String,
    at: Timestamp,
    /// `Complete` (the compactor exited 0), else `Failed`.
    complete: bool,
    /// The `Failed` condition's reason and message.
    failure: Option<String>,
}

impl Finished {
    /// Runs are counted in this order, and only after the last counted.
    fn key(&self) -> (i64, &str) {
        (self.at.as_second(), &self.name)
    }
}

fn finished(job: &Job) -> Option<Finished> {
    let status = job.status.as_ref()?;
    let done = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))?;
    let at = done
        .last_transition_time
        .as_ref()
        .or(status.completion_time.as_ref())?
        .0;
    let complete = done.type_ == "Complete";
    let failure = (!complete).then(|| match (done.reason.as_deref(), done.message.as_deref()) {
        (Some(r), Some(m)) => format!("{r}: {m}"),
        (Some(r), None) => r.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => "the Job failed".to_string(),
    });
    Some(Finished {
        name: job.name_any(),
        uid: job.uid()?,
        at,
        complete,
        failure,
    })
}

/// How the compactor container of the Job's last pod ended: its report
/// (the termination message) if it wrote one, and a description of the end.
fn ending(pods: &[&Pod]) -> (Option<CompactionReport>, Option<String>) {
    let last: Option<&ContainerStateTerminated> = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|c| c.name == resources::COMPACT_CONTAINER)
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .max_by_key(|t| t.finished_at.as_ref().map(|f| f.0));
    let Some(t) = last else {
        return (None, None);
    };
    let report = t
        .message
        .as_deref()
        .and_then(|m| serde_json::from_str::<CompactionReport>(m.trim()).ok());
    let end = format!(
        "container {} ended: {} (exit code {})",
        resources::COMPACT_CONTAINER,
        t.reason.as_deref().unwrap_or("terminated"),
        t.exit_code
    );
    (report, Some(end))
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The run a finished Job stands for.
fn run_of(f: &Finished, report: Option<&CompactionReport>, end: Option<&str>) -> CompactionRun {
    let succeeded = f.complete && report.is_none_or(CompactionReport::succeeded);
    let error = (!succeeded).then(|| match report {
        Some(r) => r
            .error
            .clone()
            .unwrap_or_else(|| format!("{} partitions failed", r.partitions_failed)),
        // No report: the process never got to write one (killed, out of
        // memory, deadline): the Job and the container say why.
        None => [f.failure.as_deref(), end]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; "),
    });
    let r = report.cloned().unwrap_or_default();
    CompactionRun {
        job: f.name.clone(),
        job_uid: f.uid.clone(),
        result: if succeeded { SUCCEEDED } else { FAILED }.to_string(),
        finished_at: Time(f.at),
        partitions_seen: count(r.partitions_seen),
        partitions_compacted: count(r.partitions_compacted),
        partitions_failed: count(r.partitions_failed),
        objects_merged: count(r.objects_merged),
        objects_written: count(r.objects_written),
        bytes_before: count(r.bytes_before),
        bytes_after: count(r.bytes_after),
        records_verified: count(r.records_verified),
        error,
    }
}

fn run_key(status: &CompactionStatus) -> Option<(i64, &str)> {
    let run = status.last_run.as_ref()?;
    Some((run.finished_at.0.as_second(), run.job.as_str()))
}

/// The finished Jobs `seen` has not counted, in the order they finished.
fn unseen<'a>(seen: &CompactionStatus, finished: &'a [Finished]) -> Vec<&'a Finished> {
    let mut new: Vec<&Finished> = finished
        .iter()
        .filter(|f| run_key(seen).is_none_or(|last| f.key() > last))
        .collect();
    new.sort_by(|a, b| a.key().cmp(&b.key()));
    new
}

/// `status.compaction` after counting the CronJob's Jobs that finished
/// since the last counted one: a metric update and an event for each.
/// `old` is the status of the object at hand.
pub(crate) async fn sync_runs(
    ctx: &Context,
    namespace: &str,
    ld_name: &str,
    uid: &str,
    reference: &ObjectReference,
    cronjob: &CronJob,
    old: Option<&CompactionStatus>,
) -> Result<CompactionStatus> {
    let selector = ListParams::default().labels(&resources::compaction_selector(ld_name));
    let cron_uid = cronjob.uid().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let finished: Vec<Finished> = jobs
        .list(&selector)
        .await?
        .items
        .iter()
        .filter(|j| j.owner_references().iter().any(|o| o.uid == cron_uid))
        .filter_map(finished)
        .collect();
    // Whichever saw the later run: this process or the status.
    let old = old.cloned().unwrap_or_default();
    let base = match ctx.compaction_counted(uid) {
        Some(mine) if run_key(&mine) >= run_key(&old) => mine,
        _ => old,
    };
    let new = unseen(&base, &finished);
    let mut status = base.clone();
    if !new.is_empty() {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        let pods = pods.list(&selector).await?.items;
        for f in new {
            let own: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.owner_references().iter().any(|o| o.uid == f.uid))
                .collect();
            let (report, end) = ending(&own);
            let run = run_of(f, report.as_ref(), end.as_deref());
            report_run(ctx, namespace, ld_name, reference, &run).await;
            if run.result == SUCCEEDED {
                status.last_successful_run = Some(run.finished_at.clone());
            }
            status.last_run = Some(run);
            ctx.set_compaction_counted(uid, Some(status.clone()));
        }
    }
    if let Some(t) = &status.last_successful_run {
        ctx.metrics
            .compaction
            .last_success(namespace, ld_name, t.0.as_second());
    }
    Ok(status)
}

/// The metrics and the event of one finished run.
async fn report_run(
    ctx: &Context,
    namespace: &str,
    ld_name: &str,
    reference: &ObjectReference,
    run: &CompactionRun,
) {
    let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
    ctx.metrics.compaction.run_finished(
        namespace,
        ld_name,
        &CompactionCounts {
            succeeded: run.result == SUCCEEDED,
            objects_merged: unsigned(run.objects_merged),
            objects_written: unsigned(run.objects_written),
            bytes_before: unsigned(run.bytes_before),
            bytes_after: unsigned(run.bytes_after),
            records_verified: unsigned(run.records_verified),
        },
    );
    match &run.error {
        None => {
            ctx.publish(
                reference,
                EventType::Normal,
                "Compacted",
                format!("compaction Job {}: {}", run.job, numbers(run)),
            )
            .await;
        }
        Some(error) => {
            ctx.publish(
                reference,
                EventType::Warning,
                "CompactionFailed",
                format!(
                    "compaction Job {} failed: {error}; the next run retries what it left (`kubectl logs job/{}`)",
                    run.job, run.job
                ),
            )
            .await;
        }
    }
}

/// What a run did, in words.
fn numbers(run: &CompactionRun) -> String {
    format!(
        "compacted {} of {} closed partitions: {} objects merged into {}, {} bytes into {}, {} records verified",
        run.partitions_compacted,
        run.partitions_seen,
        run.objects_merged,
        run.objects_written,
        run.bytes_before,
        run.bytes_after,
        run.records_verified
    )
}

/// `CompactionSucceeded` from the last run (`cronjob` names the CronJob).
pub(crate) fn compaction_condition(
    cronjob: &str,
    spec: &CompactionSpec,
    status: &CompactionStatus,
) -> Cond {
    let Some(run) = &status.last_run else {
        let suspended = if spec.suspend {
            " (suspended: spec.archive.compaction.suspend is true)"
        } else {
            ""
        };
        return Cond::unknown(
            "NotRunYet",
            format!(
                "no compaction run has finished yet: CronJob {cronjob} runs on `{}` (UTC){suspended}",
                spec.schedule
            ),
        );
    };
    let when = format!("Job {}, finished {}", run.job, run.finished_at.0);
    match &run.error {
        None => Cond::ok("Compacted", format!("last run ({when}) {}", numbers(run))),
        Some(error) => {
            let last_success = status
                .last_successful_run
                .as_ref()
                .map(|t| format!("; last success {}", t.0))
                .unwrap_or_default();
            Cond::failed(
                "CompactionFailed",
                format!(
                    "last run ({when}) failed: {error}{last_success}; see `kubectl logs job/{}`",
                    run.job
                ),
            )
        }
    }
}

/// `CompactionSucceeded` when the API server refused the CronJob.
pub(crate) fn rejected_condition(cronjob: &str, message: &str) -> Cond {
    Cond::failed(
        "CronJobRejected",
        format!(
            "the API server refused CronJob {cronjob}: {message}; fix spec.archive.compaction (no run is scheduled meanwhile)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(name: &str, kind: &str, at: i64, reason: Option<&str>) -> Job {
        let at = Timestamp::from_second(at).expect("time").to_string();
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "status": {"conditions": [{
                "type": kind, "status": "True", "lastTransitionTime": at,
                "reason": reason, "message": reason.map(|_| "Job has reached the specified backoff limit"),
            }]}
        }))
        .expect("job")
    }

    fn pod(job: &str, message: Option<&str>, reason: &str, exit: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{job}-x"), "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": format!("uid-{job}"),
            }]},
            "status": {"containerStatuses": [{
                "name": "compact", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": exit, "reason": reason, "message": message,
                    "finishedAt": "2026-12-07T03:19:12Z",
                }},
            }]}
        }))
        .expect("pod")
    }

    fn report(failed: u64, error: Option<&str>) -> String {
        serde_json::to_string(&CompactionReport {
            format: drainpipe_contract::schema::ArchiveFormat::Parquet,
            started_at: "2026-12-07T03:17:00Z".into(),
            finished_at: "2026-12-07T03:19:12Z".into(),
            partitions_seen: 4,
            partitions_compacted: 3,
            objects_merged: 1440,
            objects_written: 3,
            bytes_before: 90_000,
            bytes_after: 30_000,
            records_verified: 50_000,
            partitions_failed: failed,
            error: error.map(str::to_string),
        })
        .expect("report")
    }

    const T: i64 = 1_765_077_552;

    #[test]
    fn a_complete_job_with_its_report_is_a_successful_run() {
        let f = finished(&job("c-1", "Complete", T, None)).expect("finished");
        let text = report(0, None);
        let p = pod("c-1", Some(&text), "Completed", 0);
        let (report, end) = ending(&[&p]);
        let run = run_of(&f, report.as_ref(), end.as_deref());
        assert_eq!(run.result, SUCCEEDED);
        assert_eq!(run.job, "c-1");
        assert_eq!(run.job_uid, "uid-c-1");
        assert_eq!(run.finished_at.0.as_second(), T);
        assert_eq!(
            (
                run.objects_merged,
                run.objects_written,
                run.records_verified
            ),
            (1440, 3, 50_000)
        );
        assert_eq!(run.error, None);
        let status = CompactionStatus {
            last_successful_run: Some(run.finished_at.clone()),
            last_run: Some(run),
        };
        let c = compaction_condition("shop-compaction", &CompactionSpec::default(), &status);
        assert!(c.status);
        assert_eq!(c.reason, "Compacted");
        assert!(
            c.message
                .contains("compacted 3 of 4 closed partitions: 1440 objects merged into 3"),
            "{}",
            c.message
        );
    }

    #[test]
    fn a_failed_run_names_the_reports_error_or_the_jobs_failure() {
        let f = finished(&job("c-2", "Failed", T, Some("BackoffLimitExceeded"))).expect("finished");
        let text = report(
            1,
            Some("shop/2026/12/05: 3 records missing from the merged object"),
        );
        let p = pod("c-2", Some(&text), "Error", 1);
        let (r, end) = ending(&[&p]);
        let run = run_of(&f, r.as_ref(), end.as_deref());
        assert_eq!(run.result, FAILED);
        assert_eq!(
            run.error.as_deref(),
            Some("shop/2026/12/05: 3 records missing from the merged object")
        );
        assert_eq!(run.partitions_failed, 1);
        let status = CompactionStatus {
            last_successful_run: None,
            last_run: Some(run),
        };
        let c = compaction_condition("shop-compaction", &CompactionSpec::default(), &status);
        assert!(!c.status && !c.unknown);
        assert_eq!(c.reason, "CompactionFailed");
        assert!(c.message.contains("3 records missing"), "{}", c.message);

        // Killed before it could report: the Job and the container say why.
        let p = pod("c-2", None, "OOMKilled", 137);
        let (r, end) = ending(&[&p]);
        let run = run_of(&f, r.as_ref(), end.as_deref());
        assert_eq!(
            run.error.as_deref(),
            Some(
                "BackoffLimitExceeded: Job has reached the specified backoff limit; container compact ended: OOMKilled (exit code 137)"
            )
        );
        // A message that is no report (an older image) is no report.
        let p = pod("c-2", Some("panicked at ..."), "Error", 101);
        assert_eq!(ending(&[&p]).0, None);
    }

    #[test]
    fn runs_are_counted_once_in_the_order_they_finished() {
        let jobs: Vec<Finished> = [
            job("c-3", "Complete", T + 60, None),
            job("c-1", "Complete", T, None),
            job("c-2", "Failed", T + 30, Some("DeadlineExceeded")),
            job("c-4", "Running", T + 90, None),
        ]
        .iter()
        .filter_map(finished)
        .collect();
        assert_eq!(jobs.len(), 3, "a running Job is no run yet");
        let new = unseen(&CompactionStatus::default(), &jobs);
        let names: Vec<&str> = new.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["c-1", "c-2", "c-3"]);
        // After c-2 was counted (and recorded), only c-3 is new.
        let seen = CompactionStatus {
            last_successful_run: None,
            last_run: Some(run_of(&jobs[2], None, None)),
        };
        let new = unseen(&seen, &jobs);
        let names: Vec<&str> = new.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["c-3"]);
    }

    #[test]
    fn before_the_first_run_the_condition_is_unknown() {
        let spec = CompactionSpec {
            suspend: true,
            ..CompactionSpec::default()
        };
        let c = compaction_condition("shop-compaction", &spec, &CompactionStatus::default());
        assert!(c.unknown);
        assert_eq!(c.reason, "NotRunYet");
        assert!(c.message.contains("`17 3 * * *` (UTC)"), "{}", c.message);
        assert!(c.message.contains("suspended"), "{}", c.message);
        let c = rejected_condition("shop-compaction", "spec.schedule: Invalid value");
        assert_eq!(c.reason, "CronJobRejected");
        assert!(!c.status && !c.unknown);
    }
}
