//! The compaction CronJob of `spec.archive.compaction`: the ingester
//! image's `compact` subcommand on a schedule, in a pod built from the
//! ingester pod (same ServiceAccount, so the same S3 identity; the same
//! environment for the AWS SDK; the same hardened security context and
//! operator-wide pod defaults), with none of the ingester pods' labels, so
//! the Service, the disruption budget and the operator's reads of the
//! ingesters' `/metrics` never take it for one.

use std::collections::BTreeMap;

use drainpipe_contract::units::parse_size;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, EnvVar, PodTemplateSpec, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::defaults::IngesterDefaults;
use super::pod::ingester_pod;
use super::{LOGDRAIN_LABEL, Owner, archive_url, bounded_name, labels};
use crate::crd::{CompactionSpec, LogDrain};

/// `app.kubernetes.io/name` of the compaction Jobs and pods.
pub(crate) const COMPACTOR_NAME: &str = "drainpipe-compactor";
/// The container whose termination message is the run's report.
pub(crate) const COMPACT_CONTAINER: &str = "compact";
/// Where the compactor writes its report; the kubelet keeps the file's
/// content as the container's termination message, which the operator
/// reads from the finished pod.
const REPORT_PATH: &str = "/dev/termination-log";
/// A run over an archive full of small objects (the first one, or the
/// first after switching to Parquet) can take hours; one that takes longer
/// than this is stopped, and the next run goes on where it stopped.
const RUN_DEADLINE_SECONDS: i64 = 12 * 3600;
/// How late a run may still start when the CronJob controller missed its
/// time (controller down, cluster upgrade).
const STARTING_DEADLINE_SECONDS: i64 = 3600;

/// The CronJob's name: Kubernetes adds an 11-character suffix to a
/// CronJob's name for its Jobs, so it is at most 52 characters.
pub(crate) fn compaction_name(ld_name: &str) -> String {
    bounded_name(ld_name, "-compaction", 52)
}

/// The label selector of one LogDrain's compaction Jobs and pods.
pub(crate) fn compaction_selector(ld_name: &str) -> String {
    format!("{LOGDRAIN_LABEL}={ld_name},app.kubernetes.io/name={COMPACTOR_NAME}")
}

/// The compaction CronJob, `None` without `spec.archive.compaction`.
pub(crate) fn compaction_cronjob(
    owner: &Owner,
    ld: &LogDrain,
    defaults: &IngesterDefaults,
) -> Option<CronJob> {
    let spec = ld.spec.archive.compaction.as_ref()?;
    let mut pod = ingester_pod(owner, ld, defaults);
    pod.restart_policy = Some("Never".to_string());
    pod.topology_spread_constraints = None;
    // Stopping mid-run is safe (the next run finishes the partition), so a
    // stop need not wait long.
    pod.termination_grace_period_seconds = Some(30);
    // A writable /tmp on the read-only root file system; nothing else.
    pod.volumes = Some(vec![Volume {
        name: "tmp".to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }]);
    for c in &mut pod.containers {
        c.name = COMPACT_CONTAINER.to_string();
        c.args = Some(vec!["compact".to_string()]);
        let mut env = c.env.take().unwrap_or_default();
        for (name, value) in [
            ("DRAINPIPE_ARCHIVE", archive_url(ld)),
            ("DRAINPIPE_COMPACT_TARGET_SIZE", spec.target_size.clone()),
            ("DRAINPIPE_COMPACT_GRACE", spec.grace.clone()),
            ("DRAINPIPE_COMPACT_REPORT", REPORT_PATH.to_string()),
        ] {
            env.push(EnvVar {
                name: name.to_string(),
                value: Some(value),
                ..EnvVar::default()
            });
        }
        c.env = Some(env);
        c.ports = None;
        c.readiness_probe = None;
        c.liveness_probe = None;
        c.lifecycle = None;
        c.resources = Some(
            spec.resources
                .clone()
                .unwrap_or_else(|| default_resources(spec)),
        );
        c.termination_message_path = Some(REPORT_PATH.to_string());
        c.termination_message_policy = Some("File".to_string());
        c.volume_mounts = Some(vec![VolumeMount {
            name: "tmp".to_string(),
            mount_path: "/tmp".to_string(),
            ..VolumeMount::default()
        }]);
    }
    let mut job_labels = labels(&owner.name);
    job_labels.insert(
        "app.kubernetes.io/name".to_string(),
        COMPACTOR_NAME.to_string(),
    );
    Some(CronJob {
        metadata: owner.meta(compaction_name(&owner.name)),
        spec: CronJobSpec {
            schedule: spec.schedule.clone(),
            // Days are UTC days: a schedule in the controller manager's
            // local time would move the run around the grace period.
            time_zone: Some("Etc/UTC".to_string()),
            suspend: Some(spec.suspend),
            concurrency_policy: Some("Forbid".to_string()),
            starting_deadline_seconds: Some(STARTING_DEADLINE_SECONDS),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    active_deadline_seconds: Some(RUN_DEADLINE_SECONDS),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(job_labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
        },
        status: None,
    })
}

/// Requests and limits sized by `targetSize`: the compactor holds about
/// one output object and one input in memory.
fn default_resources(spec: &CompactionSpec) -> ResourceRequirements {
    // The CRD bounds the size; an object stored before that rule gets the
    // default's.
    let target = parse_size(&spec.target_size).unwrap_or(128 << 20);
    let mib = |bytes: u64| Quantity(format!("{}Mi", bytes.div_ceil(1 << 20)));
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".to_string())),
            ("memory".to_string(), mib(target.saturating_add(128 << 20))),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            mib(target.saturating_mul(2).saturating_add(256 << 20)),
        )])),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::fixtures::{defaults, logdrain, pod_of};
    use crate::resources::{deployment, selector_labels};

    fn with_compaction(compaction: serde_json::Value) -> LogDrain {
        let mut ld = logdrain();
        ld.spec.archive.compaction = Some(serde_json::from_value(compaction).expect("compaction"));
        ld.spec.ingester.service_account_name = Some("logs-writer".to_string());
        ld
    }

    fn env_of(pod: &k8s_openapi::api::core::v1::PodSpec) -> BTreeMap<String, String> {
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn no_compaction_no_cronjob() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        assert!(compaction_cronjob(&owner, &ld, &defaults()).is_none());
    }

    #[test]
    fn the_cronjob_runs_compact_as_the_ingesters_run() {
        let mut ld = with_compaction(json!({"targetSize": "256MiB", "grace": "3h"}));
        ld.spec.archive.format = crate::crd::Format::Parquet;
        let owner = Owner::of(&ld).expect("owner");
        let cron = compaction_cronjob(&owner, &ld, &defaults()).expect("cronjob");
        assert_eq!(cron.metadata.name.as_deref(), Some("prod-compaction"));
        assert_eq!(
            cron.metadata.owner_references,
            Some(vec![owner.reference.clone()])
        );
        let spec = cron.spec;
        assert_eq!(spec.schedule, "17 3 * * *");
        assert_eq!(spec.time_zone.as_deref(), Some("Etc/UTC"));
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        assert_eq!(spec.suspend, Some(false));
        assert!(spec.starting_deadline_seconds.is_some());
        let job = spec.job_template.spec.expect("job spec");
        assert_eq!(job.backoff_limit, Some(2));
        let template = job.template;
        let pod_labels = template
            .metadata
            .and_then(|m| m.labels)
            .expect("pod labels");
        assert_eq!(pod_labels[LOGDRAIN_LABEL], "prod");
        assert!(
            !selector_labels("prod")
                .iter()
                .all(|(k, v)| pod_labels.get(k) == Some(v)),
            "the Service and the budget must not select the compaction pod: {pod_labels:?}"
        );
        let pod = template.spec.expect("pod");
        let ingester = pod_of(deployment(&owner, &ld, &defaults()));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("logs-writer"));
        assert_eq!(pod.security_context, ingester.security_context);
        let c = &pod.containers[0];
        assert_eq!(c.name, COMPACT_CONTAINER);
        assert_eq!(c.image, ingester.containers[0].image);
        assert_eq!(c.args.as_deref(), Some(&["compact".to_string()][..]));
        assert_eq!(
            c.security_context, ingester.containers[0].security_context,
            "non-root, read-only root file system, no capabilities"
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(c.termination_message_path.as_deref(), Some(REPORT_PATH));
        assert!(c.ports.is_none() && c.readiness_probe.is_none() && c.lifecycle.is_none());
        let env = env_of(&pod);
        assert_eq!(env["DRAINPIPE_ARCHIVE"], "s3://logs-bucket/logs/");
        assert_eq!(env["DRAINPIPE_FORMAT"], "parquet");
        assert_eq!(env["DRAINPIPE_COMPACT_TARGET_SIZE"], "256MiB");
        assert_eq!(env["DRAINPIPE_COMPACT_GRACE"], "3h");
        assert_eq!(env["DRAINPIPE_COMPACT_REPORT"], "/dev/termination-log");
        // Exactly what the ingesters get for the AWS SDK.
        for (k, v) in env_of(&ingester) {
            assert_eq!(env.get(&k), Some(&v), "{k}");
        }
        let volumes = pod.volumes.expect("volumes");
        assert_eq!(volumes.len(), 1);
        assert!(volumes[0].empty_dir.is_some());
        let mounts = c.volume_mounts.clone().expect("mounts");
        assert_eq!(mounts[0].mount_path, "/tmp");
        // Sized by the target: 2 x 256 MiB + 256 MiB.
        let limits = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .expect("limits");
        assert_eq!(limits["memory"].0, "768Mi");
    }

    #[test]
    fn the_spec_sets_schedule_suspension_and_resources() {
        let ld = with_compaction(json!({
            "schedule": "@hourly", "suspend": true,
            "resources": {"limits": {"memory": "3Gi"}},
        }));
        let owner = Owner::of(&ld).expect("owner");
        let spec = compaction_cronjob(&owner, &ld, &defaults())
            .expect("cronjob")
            .spec;
        assert_eq!(spec.schedule, "@hourly");
        assert_eq!(spec.suspend, Some(true));
        let pod = spec.job_template.spec.and_then(|s| s.template.spec);
        let limits = pod
            .and_then(|p| p.containers[0].resources.clone())
            .and_then(|r| r.limits)
            .expect("limits");
        assert_eq!(limits["memory"].0, "3Gi");
    }

    #[test]
    fn names_fit_what_kubernetes_allows_a_cronjob() {
        assert_eq!(compaction_name("shop"), "shop-compaction");
        let long = "a".repeat(60);
        let name = compaction_name(&long);
        assert!(name.len() <= 52, "{name}");
        assert!(name.ends_with("-compaction"));
        assert_ne!(name, compaction_name(&"a".repeat(61)));
        assert_eq!(name, compaction_name(&long), "stable");
    }
}
