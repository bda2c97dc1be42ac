//! Buffer volumes and graceful drain: the StatefulSet of
//! `bufferStorage.persistentVolumeClaim`, the names of its claims, and the
//! flush Jobs that empty a released claim before the operator deletes it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodTemplateSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::defaults::IngesterDefaults;
use super::pod::{ingester_pod, pod_template};
use super::scaling::deployment_replicas;
use super::{
    BUFFER_VOLUME, DATA_DIR, Owner, archive_url, bounded_name, ingester_name, labels,
    selector_labels,
};
use crate::crd::LogDrain;

/// The ingester StatefulSet of `bufferStorage.persistentVolumeClaim`
/// (`None` without one): the Deployment's pod template, plus a claim per
/// pod. Claims are retained when the set is scaled down or deleted; the
/// operator deletes each only after a flush Job emptied it.
pub(crate) fn statefulset(
    owner: &Owner,
    ld: &LogDrain,
    defaults: &IngesterDefaults,
) -> Option<StatefulSet> {
    let claim = ld
        .spec
        .ingester
        .buffer_storage
        .persistent_volume_claim
        .as_ref()?;
    let template = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(BUFFER_VOLUME.to_string()),
            labels: Some(labels(&owner.name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: claim.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    claim.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    Some(StatefulSet {
        metadata: owner.meta(ingester_name(&owner.name)),
        spec: Some(StatefulSetSpec {
            replicas: deployment_replicas(ld),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                ..LabelSelector::default()
            },
            template: pod_template(owner, ld, defaults),
            volume_claim_templates: Some(vec![template]),
            // The pods need no ordered start or stop: each has its own log.
            pod_management_policy: Some("Parallel".to_string()),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_string()),
                    when_scaled: Some("Retain".to_string()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        status: None,
    })
}

/// The name of claim `ordinal` of LogDrain `ld_name`'s StatefulSet (the
/// StatefulSet controller names them; the operator only reads them back).
#[cfg(test)]
pub(crate) fn buffer_claim_name(ld_name: &str, ordinal: u32) -> String {
    format!("{BUFFER_VOLUME}-{}-{ordinal}", ingester_name(ld_name))
}

/// The ordinal of a claim of LogDrain `ld_name`'s StatefulSet, `None` for
/// any other name.
pub(crate) fn buffer_claim_ordinal(ld_name: &str, claim: &str) -> Option<u32> {
    let prefix = format!("{BUFFER_VOLUME}-{}-", ingester_name(ld_name));
    let digits = claim.strip_prefix(&prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
/// Annotation of a flush Job naming the claim it empties.
pub(crate) const FLUSH_CLAIM_ANNOTATION: &str = "drainpipe.dev/buffer-claim";

/// How long a flush Job tries before it fails (the ingester's
/// `--flush-timeout`); the Job's deadline adds the pod's start.
const FLUSH_TIMEOUT_SECONDS: i64 = 600;

/// A Job's name is also a label value (`job-name`), at most 63 characters.
pub(crate) fn flush_job_name(claim: &str) -> String {
    bounded_name(claim, "-flush", 63)
}

/// The Job that empties a released claim: the ingester image with
/// `--flush-and-exit` on the claim, exit 0 only once the log on it is
/// empty. Its pod carries none of the ingester pods' selector labels, so
/// the Service never routes to it and the budget does not count it.
pub(crate) fn flush_job(
    owner: &Owner,
    ld: &LogDrain,
    defaults: &IngesterDefaults,
    claim: &str,
) -> Job {
    let mut pod = ingester_pod(owner, ld, defaults);
    pod.restart_policy = Some("Never".to_string());
    // The claim decides the node; spreading does not apply.
    pod.topology_spread_constraints = None;
    pod.termination_grace_period_seconds = Some(30);
    pod.volumes = Some(vec![Volume {
        name: BUFFER_VOLUME.to_string(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_string(),
            read_only: None,
        }),
        ..Volume::default()
    }]);
    for c in &mut pod.containers {
        c.name = "flush".to_string();
        c.args = Some(vec![
            "--flush-and-exit".to_string(),
            "--archive".to_string(),
            archive_url(ld),
            "--data-dir".to_string(),
            format!("{DATA_DIR}/wal"),
            "--flush-timeout".to_string(),
            format!("{FLUSH_TIMEOUT_SECONDS}s"),
            "--log-format".to_string(),
            "json".to_string(),
        ]);
        c.ports = None;
        c.readiness_probe = None;
        c.liveness_probe = None;
        c.lifecycle = None;
        c.volume_mounts = Some(vec![VolumeMount {
            name: BUFFER_VOLUME.to_string(),
            mount_path: DATA_DIR.to_string(),
            ..VolumeMount::default()
        }]);
    }
    let mut pod_labels = labels(&owner.name);
    pod_labels.insert(
        "app.kubernetes.io/name".to_string(),
        "drainpipe-flush".to_string(),
    );
    let mut metadata = owner.meta(flush_job_name(claim));
    metadata.annotations = Some(BTreeMap::from([(
        FLUSH_CLAIM_ANNOTATION.to_string(),
        claim.to_string(),
    )]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            active_deadline_seconds: Some(FLUSH_TIMEOUT_SECONDS * 2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::deployment;
    use crate::resources::fixtures::{defaults, logdrain, pod_of, with_claim};

    #[test]
    fn a_buffer_claim_makes_a_statefulset_with_the_deployments_pod() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        assert!(statefulset(&owner, &ld, &defaults()).is_none());

        let ld = with_claim(Some("fast-ssd"));
        let set = statefulset(&owner, &ld, &defaults()).expect("statefulset");
        assert_eq!(set.metadata.name.as_deref(), Some("prod-ingester"));
        assert_eq!(
            set.metadata.owner_references,
            Some(vec![owner.reference.clone()])
        );
        let spec = set.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let retention = spec
            .persistent_volume_claim_retention_policy
            .expect("retention policy");
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        let templates = spec.volume_claim_templates.expect("claim templates");
        assert_eq!(templates.len(), 1);
        let claim = &templates[0];
        assert_eq!(claim.metadata.name.as_deref(), Some(BUFFER_VOLUME));
        let claim_spec = claim.spec.as_ref().expect("claim spec");
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast-ssd"));
        assert_eq!(
            claim_spec.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_string()][..])
        );
        let size = claim_spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.as_str());
        assert_eq!(size, Some("10Gi"));
        assert_eq!(buffer_claim_name("prod", 2), "buffer-prod-ingester-2");

        // The same pod as the Deployment's, but the buffer is the claim: no
        // emptyDir, the mount stays, and the log is bounded by the claim.
        let pod = spec.template.spec.expect("pod");
        let deployed = pod_of(deployment(&owner, &ld, &defaults()));
        assert_eq!(pod, deployed, "one pod builder for both workloads");
        let volumes = pod.volumes.clone().expect("volumes");
        assert!(
            volumes.iter().all(|v| v.name != BUFFER_VOLUME),
            "{volumes:?}"
        );
        let c = &pod.containers[0];
        assert!(
            c.volume_mounts
                .as_ref()
                .expect("mounts")
                .iter()
                .any(|m| m.name == BUFFER_VOLUME && m.mount_path == DATA_DIR)
        );
        let args = c.args.clone().expect("args").join(" ");
        assert!(
            args.contains(&format!("--wal-max-bytes {}", (10u64 << 30) / 10 * 8)),
            "{args}"
        );
        // No class: the cluster's default.
        let set = statefulset(&owner, &with_claim(None), &defaults()).expect("statefulset");
        let templates = set
            .spec
            .and_then(|s| s.volume_claim_templates)
            .expect("templates");
        assert_eq!(
            templates[0]
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone()),
            None
        );
    }

    #[test]
    fn claim_ordinals_come_only_from_this_logdrains_claims() {
        assert_eq!(
            buffer_claim_ordinal("prod", "buffer-prod-ingester-0"),
            Some(0)
        );
        assert_eq!(
            buffer_claim_ordinal("prod", "buffer-prod-ingester-12"),
            Some(12)
        );
        assert_eq!(buffer_claim_ordinal("prod", "buffer-prod-ingester-x"), None);
        assert_eq!(buffer_claim_ordinal("prod", "buffer-prod-ingester-"), None);
        assert_eq!(
            buffer_claim_ordinal("prod", "buffer-prod-other-ingester-1"),
            None
        );
        assert_eq!(buffer_claim_ordinal("prod", "data-prod-ingester-1"), None);
    }

    #[test]
    fn the_flush_job_empties_one_claim_and_is_no_ingester_pod() {
        let ld = with_claim(None);
        let owner = Owner::of(&ld).expect("owner");
        let claim = buffer_claim_name("prod", 2);
        let job = flush_job(&owner, &ld, &defaults(), &claim);
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("buffer-prod-ingester-2-flush")
        );
        assert_eq!(
            job.metadata.owner_references,
            Some(vec![owner.reference.clone()])
        );
        assert_eq!(
            job.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(FLUSH_CLAIM_ANNOTATION))
                .map(String::as_str),
            Some(claim.as_str())
        );
        let template = job.spec.expect("spec").template;
        let pod_labels = template.metadata.and_then(|m| m.labels).expect("labels");
        let selector = selector_labels("prod");
        assert!(
            !selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "the Service and the budget must not select the flush pod: {pod_labels:?}"
        );
        let pod = template.spec.expect("pod");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let volumes = pod.volumes.expect("volumes");
        assert_eq!(volumes.len(), 1);
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some(claim.as_str())
        );
        let c = &pod.containers[0];
        let args = c.args.clone().expect("args").join(" ");
        assert!(args.starts_with("--flush-and-exit "), "{args}");
        assert!(args.contains("--archive s3://logs-bucket/logs/"), "{args}");
        assert!(
            args.contains(&format!("--data-dir {DATA_DIR}/wal")),
            "{args}"
        );
        assert!(c.readiness_probe.is_none() && c.ports.is_none() && c.lifecycle.is_none());
        assert_eq!(c.image.as_deref(), Some("ghcr.io/drainpipe/ingester:0.1.0"));
        assert!(
            c.env
                .as_ref()
                .expect("env")
                .iter()
                .any(|e| e.name == "AWS_ENDPOINT_URL_S3")
        );

        // Job names are label values: at most 63 characters, still unique.
        let long = buffer_claim_name(&"a".repeat(60), 1);
        let name = flush_job_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert_ne!(name, flush_job_name(&buffer_claim_name(&"a".repeat(60), 2)));
        assert_eq!(name, flush_job_name(&long), "stable");
    }
}
