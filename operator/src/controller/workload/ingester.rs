//! The ingester workload: a Deployment (emptyDir buffers) or, with
//! `bufferStorage.persistentVolumeClaim`, a StatefulSet, never both; its
//! PodDisruptionBudget; and the buffer claims no ingester pod mounts any
//! more (scaled down, or the StatefulSet replaced by a Deployment), each
//! emptied by a flush Job before it is deleted.
//!
//! A stopping pod flushes its own log within its grace period; the Job is
//! the safety net for whatever it could not (grace period exceeded, node
//! lost, the pod killed). A claim is deleted only after its Job exited 0,
//! which the ingester's `--flush-and-exit` does only once the log on the
//! claim is empty, so nothing acknowledged is left on a volume no pod
//! mounts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::controller::Context;
use crate::controller::owned::{apply_owned, delete_owned};
use crate::controller::status::conditions::Cond;
use crate::crd::LogDrain;
use crate::error::{Error, Result};
use crate::resources::{self, Owner};

/// A failed flush Job is left this long (so its pod's log can be read and
/// the retries are spaced), then replaced by a new one.
const FLUSH_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What the LogDrain's status reports of its ingesters, from whichever
/// workload runs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Workload {
    /// `Deployment` or `StatefulSet`.
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    pub(crate) replicas: i32,
    /// `spec.replicas` as stored: the LogDrain's, or the autoscaler's.
    pub(crate) spec_replicas: Option<i32>,
    pub(crate) ready_replicas: i32,
    pub(crate) available_replicas: i32,
    /// Messages of the workload's conditions that are not True.
    pub(crate) problems: Vec<String>,
    /// A released claim waits for a pod to go or a Job to finish: look
    /// again soon rather than at the next resync.
    pub(crate) recheck: bool,
}

/// Applies the workload the spec asks for, removes the other kind, keeps
/// the budget in step and handles released claims.
pub(crate) async fn sync_workload(
    ctx: &Context,
    owner: &Owner,
    ld: &LogDrain,
    reference: &ObjectReference,
) -> Result<Workload> {
    let defaults = &ctx.settings.ingester;
    let name = resources::ingester_name(&owner.name);
    let mut recheck_soon = false;
    let mut workload = match resources::statefulset(owner, ld, defaults) {
        Some(wanted) => {
            let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &owner.namespace);
            let existing = sets.get_opt(&name).await?.filter(|s| owned_by(s, owner));
            let set = match existing {
                // Still going (below): the new one is made once it is gone.
                Some(old) if old.metadata.deletion_timestamp.is_some() => {
                    recheck_soon = true;
                    old
                }
                // Kubernetes refuses changes to a StatefulSet's claim
                // templates: the set is deleted leaving its pods and claims
                // (orphan), and the next reconcile makes the new one, which
                // adopts them. Claims made from now on get the new template.
                Some(old) if claim_templates_differ(&old, &wanted) => {
                    sets.delete(&name, &DeleteParams::orphan()).await?;
                    ctx.publish(
                        reference,
                        EventType::Normal,
                        "StatefulSetReplaced",
                        format!("bufferStorage.persistentVolumeClaim changed: StatefulSet {name} is re-created with the new claim template, its pods and existing claims are kept"),
                    )
                    .await;
                    recheck_soon = true;
                    old
                }
                _ => apply_owned(ctx, &owner.namespace, &wanted).await?,
            };
            delete_owned::<Deployment>(ctx, owner, &name).await?;
            let spec_replicas = set.spec.as_ref().and_then(|s| s.replicas);
            let status = set.status.unwrap_or_default();
            Workload {
                kind: "StatefulSet",
                name: name.clone(),
                replicas: status.replicas,
                spec_replicas,
                ready_replicas: status.ready_replicas.unwrap_or(0),
                available_replicas: status.available_replicas.unwrap_or(0),
                problems: status
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| c.status != "True")
                    .filter_map(|c| c.message)
                    .collect(),
                recheck: false,
            }
        }
        None => {
            let deployment = resources::deployment(owner, ld, defaults);
            let deployment = apply_owned(ctx, &owner.namespace, &deployment).await?;
            delete_owned::<StatefulSet>(ctx, owner, &name).await?;
            let spec_replicas = deployment.spec.as_ref().and_then(|s| s.replicas);
            let status = deployment.status.unwrap_or_default();
            Workload {
                kind: "Deployment",
                name: name.clone(),
                replicas: status.replicas.unwrap_or(0),
                spec_replicas,
                ready_replicas: status.ready_replicas.unwrap_or(0),
                available_replicas: status.available_replicas.unwrap_or(0),
                problems: status
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| c.status != "True")
                    .filter_map(|c| c.message)
                    .collect(),
                recheck: false,
            }
        }
    };
    // What the workload runs, which the autoscaler may have changed.
    let replicas = workload.spec_replicas.unwrap_or(ld.spec.ingester.replicas);
    match resources::pod_disruption_budget(owner, replicas) {
        Some(pdb) => {
            apply_owned(ctx, &owner.namespace, &pdb).await?;
        }
        None => {
            delete_owned::<PodDisruptionBudget>(ctx, owner, &name).await?;
        }
    }
    let in_set = ld
        .spec
        .ingester
        .buffer_storage
        .persistent_volume_claim
        .is_some()
        .then_some(replicas);
    workload.recheck = sync_claims(ctx, owner, ld, reference, in_set)
        .await?
        .recheck
        || recheck_soon;
    Ok(workload)
}

/// Whether the stored StatefulSet's claim templates ask for another class
/// or size than the wanted one's (the fields a LogDrain sets; the server's
/// defaults in the rest are not compared). Sizes are compared in bytes, as
/// the server rewrites quantities in its canonical form; one that
/// `quantity_bytes` cannot read counts as unchanged, so a rewritten form
/// never replaces the set over and over (a real change then fails the
/// apply with the server's own message).
fn claim_templates_differ(stored: &StatefulSet, wanted: &StatefulSet) -> bool {
    let key = |s: &StatefulSet| -> Vec<(Option<String>, Option<String>, Option<u64>)> {
        s.spec
            .iter()
            .flat_map(|s| s.volume_claim_templates.iter().flatten())
            .map(|t| {
                let spec = t.spec.as_ref();
                (
                    t.metadata.name.clone(),
                    spec.and_then(|s| s.storage_class_name.clone()),
                    spec.and_then(|s| s.resources.as_ref())
                        .and_then(|r| r.requests.as_ref())
                        .and_then(|r| r.get("storage"))
                        .and_then(|q| resources::quantity_bytes(&q.0)),
                )
            })
            .collect()
    };
    let (old, new) = (key(stored), key(wanted));
    old.len() != new.len()
        || old.iter().zip(&new).any(|(o, n)| {
            o.0 != n.0 || o.1 != n.1 || (o.2.is_some() && n.2.is_some() && o.2 != n.2)
        })
}

/// Before a deleted LogDrain goes: its StatefulSet is deleted (its pods
/// flush on SIGTERM) and every claim is flushed and deleted like a
/// released one. `Err` while a claim is left, which keeps the finalizer.
pub(crate) async fn flush_before_deletion(ctx: &Context, ld: &LogDrain) -> Result<()> {
    let owner = Owner::of(ld).ok_or(Error::MissingObjectKey)?;
    let reference = ld.object_ref(&());
    delete_owned::<StatefulSet>(ctx, &owner, &resources::ingester_name(&owner.name)).await?;
    let claims = sync_claims(ctx, &owner, ld, &reference, None).await?.left;
    if claims > 0 {
        return Err(Error::BuffersNotFlushed { claims });
    }
    Ok(())
}

/// What one pass over the claims left.
struct ClaimsPass {
    /// A claim waits on something that changes soon.
    recheck: bool,
    /// Claims of this plan not deleted (in use, flushing, failed).
    left: usize,
}

/// A flush Job as far as the plan cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobState {
    Running,
    Succeeded,
    /// Failed this long ago.
    Failed(Duration),
}

/// One buffer claim of the LogDrain, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) name: String,
    /// From the name `buffer-<name>-ingester-N`; `None` for another name.
    pub(crate) ordinal: Option<u32>,
    /// An ingester pod (not a flush Job's) has it as a volume.
    pub(crate) mounted: bool,
    /// Being deleted already.
    pub(crate) deleting: bool,
    /// Its flush Job, if any.
    pub(crate) job: Option<JobState>,
}

/// What to do with one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimStep {
    /// In use by the StatefulSet, or not one this plan touches.
    Keep,
    /// Released, but its pod is still stopping (flushing it) or its flush
    /// Job still running.
    Wait,
    /// Released and unmounted, no Job yet: start one.
    StartFlush,
    /// A pod came back on it (scale-up) while a Job existed: delete the
    /// Job, the pod uploads the log itself.
    CancelFlush,
    /// The Job emptied it: delete the claim (and the Job).
    Delete,
    /// The Job failed recently: keep the claim, report it, wait.
    FlushFailed,
    /// The Job failed a while ago: replace it with a new one.
    RetryFlush,
}

/// The pure decision: which claims are released (ordinal at or above the
/// StatefulSet's replicas, or every claim when no StatefulSet is wanted:
/// `in_set` is `None`) and what to do with each. A claim is deleted only
/// after its flush Job succeeded while no ingester pod mounted it.
pub(crate) fn plan_claims(claims: &[Claim], in_set: Option<i32>) -> Vec<(String, ClaimStep)> {
    claims
        .iter()
        .map(|c| {
            let step = match c.ordinal {
                _ if c.deleting => ClaimStep::Keep,
                None => ClaimStep::Keep,
                Some(ordinal) => {
                    let wanted = in_set.is_some_and(|r| i64::from(ordinal) < i64::from(r));
                    match (wanted || c.mounted, c.job) {
                        (true, Some(_)) => ClaimStep::CancelFlush,
                        (true, None) if wanted => ClaimStep::Keep,
                        // Its pod is still stopping: it flushes on its own.
                        (true, None) => ClaimStep::Wait,
                        (false, None) => ClaimStep::StartFlush,
                        (false, Some(JobState::Running)) => ClaimStep::Wait,
                        (false, Some(JobState::Succeeded)) => ClaimStep::Delete,
                        (false, Some(JobState::Failed(age))) if age >= FLUSH_RETRY_AFTER => {
                            ClaimStep::RetryFlush
                        }
                        (false, Some(JobState::Failed(_))) => ClaimStep::FlushFailed,
                    }
                }
            };
            (c.name.clone(), step)
        })
        .collect()
}

fn job_state(job: &Job, now: Timestamp) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete").is_some() {
        return JobState::Succeeded;
    }
    if let Some(failed) = holds("Failed") {
        let at = failed.last_transition_time.as_ref().map_or(now, |t| t.0);
        return JobState::Failed(now.duration_since(at).unsigned_abs());
    }
    JobState::Running
}

/// Finds the LogDrain's claims, plans and carries out each step.
async fn sync_claims(
    ctx: &Context,
    owner: &Owner,
    ld: &LogDrain,
    reference: &ObjectReference,
    in_set: Option<i32>,
) -> Result<ClaimsPass> {
    let ns = &owner.namespace;
    let ours =
        ListParams::default().labels(&format!("{}={}", resources::LOGDRAIN_LABEL, owner.name));
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let found = claims_api.list(&ours).await?.items;
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let jobs: Vec<Job> = jobs_api
        .list(&ours)
        .await?
        .items
        .into_iter()
        .filter(|j| owned_by(j, owner))
        .collect();
    if found.is_empty() && jobs.is_empty() {
        return Ok(ClaimsPass {
            recheck: false,
            left: 0,
        });
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mounted: BTreeSet<String> = pods
        .list(&ListParams::default().labels(&resources::selector_string(&owner.name)))
        .await?
        .items
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .flat_map(|p| p.spec.iter().flat_map(|s| s.volumes.iter().flatten()))
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect();
    let now = Timestamp::now();
    let by_claim: BTreeMap<String, &Job> = jobs
        .iter()
        .filter_map(|j| {
            let claim = j.annotations().get(resources::FLUSH_CLAIM_ANNOTATION)?;
            Some((claim.clone(), j))
        })
        .collect();
    let claims: Vec<Claim> = found
        .iter()
        .map(|c| {
            let name = c.name_any();
            Claim {
                ordinal: resources::buffer_claim_ordinal(&owner.name, &name),
                mounted: mounted.contains(&name),
                deleting: c.metadata.deletion_timestamp.is_some(),
                job: by_claim.get(&name).map(|j| job_state(j, now)),
                name,
            }
        })
        .collect();
    let mut recheck = false;
    let mut left = 0;
    for (claim, step) in plan_claims(&claims, in_set) {
        let job = by_claim.get(&claim).map(|j| j.name_any());
        let ours = resources::buffer_claim_ordinal(&owner.name, &claim).is_some();
        let deleting = claims.iter().any(|c| c.name == claim && c.deleting);
        if ours && !deleting && step != ClaimStep::Delete {
            left += 1;
        }
        match step {
            ClaimStep::Keep => {}
            ClaimStep::Wait => recheck = true,
            ClaimStep::StartFlush => {
                let job = resources::flush_job(owner, ld, &ctx.settings.ingester, &claim);
                recheck = true;
                match jobs_api.create(&PostParams::default(), &job).await {
                    Ok(_) => {}
                    // Made by a reconcile that raced this one.
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
                ctx.publish(
                    reference,
                    EventType::Normal,
                    "BufferFlushStarted",
                    format!(
                        "no ingester pod mounts buffer claim {claim}: Job {} uploads what its write-ahead log holds before the claim is deleted",
                        job.name_any()
                    ),
                )
                .await;
            }
            ClaimStep::CancelFlush => {
                if let Some(job) = &job {
                    delete_job(&jobs_api, job).await?;
                    ctx.publish(
                        reference,
                        EventType::Normal,
                        "BufferFlushCancelled",
                        format!("an ingester pod uses buffer claim {claim} again: flush Job {job} deleted, the pod uploads the log itself"),
                    )
                    .await;
                }
            }
            ClaimStep::Delete => {
                match claims_api.delete(&claim, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                if let Some(job) = &job {
                    delete_job(&jobs_api, job).await?;
                }
                ctx.publish(
                    reference,
                    EventType::Normal,
                    "BufferClaimDeleted",
                    format!("buffer claim {claim} deleted: its flush Job found the write-ahead log empty or uploaded all of it"),
                )
                .await;
            }
            ClaimStep::FlushFailed => {
                ctx.publish(
                    reference,
                    EventType::Warning,
                    "BufferFlushFailed",
                    format!(
                        "flush Job {} of buffer claim {claim} failed: the claim is kept with its data and the flush retried in {} s (delete the Job to retry now); see `kubectl logs job/{}`",
                        job.as_deref().unwrap_or_default(),
                        FLUSH_RETRY_AFTER.as_secs(),
                        job.as_deref().unwrap_or_default(),
                    ),
                )
                .await;
            }
            ClaimStep::RetryFlush => {
                if let Some(job) = &job {
                    delete_job(&jobs_api, job).await?;
                }
                recheck = true;
            }
        }
    }
    // Jobs of claims that are gone have nothing left to do.
    let names: BTreeSet<&str> = claims.iter().map(|c| c.name.as_str()).collect();
    for (claim, job) in &by_claim {
        if !names.contains(claim.as_str()) {
            delete_job(&jobs_api, &job.name_any()).await?;
        }
    }
    Ok(ClaimsPass { recheck, left })
}

fn owned_by<K: Resource>(obj: &K, owner: &Owner) -> bool {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner.reference.uid)
}

/// Deletes a Job with its pods (a Job's own default would orphan them).
async fn delete_job(api: &Api<Job>, name: &str) -> Result<()> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `IngesterAvailable`: how many of the wanted ingester pods are available.
pub(crate) fn ingester_condition(workload: &Workload, replicas: i32) -> Cond {
    if replicas == 0 {
        return Cond::failed(
            "ScaledToZero",
            "spec.ingester.replicas is 0: nothing receives the drains, and Heroku drops what it cannot deliver",
        );
    }
    let available = workload.available_replicas;
    if available >= replicas {
        return Cond::ok(
            "Available",
            format!("{available} of {replicas} ingester pods available"),
        );
    }
    let detail = workload.problems.join("; ");
    let hint = format!(
        "see `kubectl describe {} {}` and its pods' events",
        workload.kind.to_lowercase(),
        workload.name
    );
    let detail = if detail.is_empty() {
        hint
    } else {
        format!("{detail}; {hint}")
    };
    if available > 0 {
        Cond::ok(
            "PartiallyAvailable",
            format!("{available} of {replicas} ingester pods available: {detail}"),
        )
    } else {
        Cond::failed(
            &format!("{}Unavailable", workload.kind),
            format!("0 of {replicas} ingester pods available: {detail}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(ordinal: u32, mounted: bool, job: Option<JobState>) -> Claim {
        Claim {
            name: resources::buffer_claim_name("prod", ordinal),
            ordinal: Some(ordinal),
            mounted,
            deleting: false,
            job,
        }
    }

    fn steps(claims: &[Claim], in_set: Option<i32>) -> Vec<ClaimStep> {
        plan_claims(claims, in_set)
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    #[test]
    fn claims_below_the_replicas_are_kept_and_released_ones_flushed() {
        // Scaled from 3 to 1: claim 1's pod is still stopping, claim 2's gone.
        let claims = [
            claim(0, true, None),
            claim(1, true, None),
            claim(2, false, None),
        ];
        assert_eq!(
            steps(&claims, Some(1)),
            [ClaimStep::Keep, ClaimStep::Wait, ClaimStep::StartFlush]
        );
        // A claim of the set whose pod is not there yet is not released.
        assert_eq!(steps(&[claim(0, false, None)], Some(1)), [ClaimStep::Keep]);
    }

    #[test]
    fn a_claim_is_deleted_only_after_its_job_succeeded() {
        assert_eq!(
            steps(&[claim(2, false, Some(JobState::Running))], Some(1)),
            [ClaimStep::Wait]
        );
        assert_eq!(
            steps(&[claim(2, false, Some(JobState::Succeeded))], Some(1)),
            [ClaimStep::Delete]
        );
        // Failed: kept with its data; a new Job only after a while.
        assert_eq!(
            steps(
                &[claim(
                    2,
                    false,
                    Some(JobState::Failed(Duration::from_secs(5)))
                )],
                Some(1)
            ),
            [ClaimStep::FlushFailed]
        );
        assert_eq!(
            steps(
                &[claim(2, false, Some(JobState::Failed(FLUSH_RETRY_AFTER)))],
                Some(1)
            ),
            [ClaimStep::RetryFlush]
        );
    }

    #[test]
    fn a_pod_coming_back_cancels_the_flush() {
        // Scaled back up to 3 while claim 2's Job ran, or even after it
        // succeeded: the claim is the set's again, never deleted.
        for job in [JobState::Running, JobState::Succeeded] {
            assert_eq!(
                steps(&[claim(2, false, Some(job))], Some(3)),
                [ClaimStep::CancelFlush]
            );
            assert_eq!(
                steps(&[claim(2, true, Some(job))], Some(1)),
                [ClaimStep::CancelFlush]
            );
        }
    }

    #[test]
    fn without_a_statefulset_every_claim_is_released() {
        let claims = [claim(0, false, None), claim(1, true, None)];
        assert_eq!(
            steps(&claims, None),
            [ClaimStep::StartFlush, ClaimStep::Wait]
        );
    }

    #[test]
    fn foreign_and_deleting_claims_are_left_alone() {
        let other = Claim {
            name: "data-something-else".to_string(),
            ordinal: None,
            mounted: false,
            deleting: false,
            job: None,
        };
        let deleting = Claim {
            deleting: true,
            ..claim(4, false, Some(JobState::Succeeded))
        };
        assert_eq!(
            steps(&[other, deleting], Some(1)),
            [ClaimStep::Keep, ClaimStep::Keep]
        );
    }

    #[test]
    fn a_changed_claim_size_or_class_means_a_new_statefulset() {
        use crate::resources::IngesterDefaults;
        let mut ld = crate::controller::fixtures::ld(&["a-app"]);
        ld.metadata.namespace = Some("logs".into());
        ld.metadata.uid = Some("uid-1".into());
        let owner = Owner::of(&ld).expect("owner");
        let defaults = IngesterDefaults::new("img".into());
        let with = |ld: &mut LogDrain, claim: serde_json::Value| {
            ld.spec.ingester.buffer_storage.persistent_volume_claim =
                Some(serde_json::from_value(claim).expect("claim"));
            resources::statefulset(&owner, ld, &defaults).expect("statefulset")
        };
        let small = with(&mut ld, serde_json::json!({"size": "1Gi"}));
        let again = with(&mut ld, serde_json::json!({"size": "1Gi"}));
        assert!(!claim_templates_differ(&small, &again));
        // Replicas and the pod template may change in place.
        ld.spec.ingester.replicas = 7;
        let scaled = with(&mut ld, serde_json::json!({"size": "1Gi"}));
        assert!(!claim_templates_differ(&small, &scaled));
        let big = with(&mut ld, serde_json::json!({"size": "2Gi"}));
        assert!(claim_templates_differ(&small, &big));
        // The server's canonical form of the same size is no change.
        let bytes = with(&mut ld, serde_json::json!({"size": "1073741824"}));
        assert!(!claim_templates_differ(&small, &bytes));
        let classed = with(
            &mut ld,
            serde_json::json!({"size": "1Gi", "storageClassName": "fast"}),
        );
        assert!(claim_templates_differ(&small, &classed));
    }

    #[test]
    fn job_states_come_from_the_conditions() {
        // Whole seconds, as condition times are.
        let now = Timestamp::from_second(Timestamp::now().as_second()).expect("now");
        let job = |type_: &str, ago: i64| -> Job {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "j"},
                "status": {"conditions": [{
                    "type": type_, "status": "True",
                    "lastTransitionTime": Timestamp::from_second(now.as_second() - ago)
                        .expect("time").to_string(),
                }]}
            }))
            .expect("job")
        };
        assert_eq!(job_state(&job("Complete", 0), now), JobState::Succeeded);
        assert_eq!(
            job_state(&job("Failed", 30), now),
            JobState::Failed(Duration::from_secs(30))
        );
        assert_eq!(job_state(&job("Suspended", 0), now), JobState::Running);
        assert_eq!(job_state(&Job::default(), now), JobState::Running);
    }

    #[test]
    fn ingester_condition_reads_the_workload() {
        let mut w = Workload {
            kind: "Deployment",
            name: "prod-ingester".into(),
            ..Workload::default()
        };
        let c = ingester_condition(&w, 2);
        assert!(!c.status);
        assert_eq!(c.reason, "DeploymentUnavailable");
        assert!(
            c.message
                .contains("kubectl describe deployment prod-ingester")
        );
        w.available_replicas = 2;
        assert!(ingester_condition(&w, 2).status);
        assert_eq!(ingester_condition(&w, 0).reason, "ScaledToZero");
        let set = Workload {
            kind: "StatefulSet",
            name: "prod-ingester".into(),
            problems: vec!["pod prod-ingester-0 pending".into()],
            ..Workload::default()
        };
        let c = ingester_condition(&set, 2);
        assert_eq!(c.reason, "StatefulSetUnavailable");
        assert!(c.message.contains("pod prod-ingester-0 pending"));
        assert!(
            c.message
                .contains("kubectl describe statefulset prod-ingester")
        );
    }
}
