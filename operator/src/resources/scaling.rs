//! How many ingesters run: the replicas the operator applies (none while
//! autoscaled), the kind of workload a scaler targets, mode `hpa`'s
//! HorizontalPodAutoscaler and the PodDisruptionBudget.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Owner, ingester_name, selector_labels};
use crate::crd::{AutoscalingMode, LogDrain};

/// The PodDisruptionBudget of a LogDrain with more than one ingester
/// (`None` otherwise: with one pod, a budget would block every node
/// drain): one pod at a time may be evicted.
/// `replicas` is the workload's count as stored (the spec's, or the
/// autoscaler's).
pub(crate) fn pod_disruption_budget(owner: &Owner, replicas: i32) -> Option<PodDisruptionBudget> {
    if replicas <= 1 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: owner.meta(ingester_name(&owner.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}
/// The Deployment's (or StatefulSet's) `spec.replicas` as the operator
/// applies it: left out
/// while autoscaled, so the operator's apply never undoes what the scaler
/// (its own autoscaler or an HPA, through the scale subresource) set.
pub(super) fn deployment_replicas(ld: &LogDrain) -> Option<i32> {
    (ld.spec.ingester.autoscaling_mode() == AutoscalingMode::Manual)
        .then_some(ld.spec.ingester.replicas)
}

/// The kind of workload that runs a LogDrain's ingesters: a StatefulSet
/// when the buffer is a claim per pod, else a Deployment.
pub(crate) fn workload_kind(ld: &LogDrain) -> &'static str {
    if ld
        .spec
        .ingester
        .buffer_storage
        .persistent_volume_claim
        .is_some()
    {
        "StatefulSet"
    } else {
        "Deployment"
    }
}

/// Mode `hpa`'s `autoscaling/v2` HorizontalPodAutoscaler, named like the
/// Deployment it scales: average CPU utilisation of the pods, between
/// `minReplicas` and `maxReplicas`. `None` in the other modes.
pub(crate) fn horizontal_pod_autoscaler(
    owner: &Owner,
    ld: &LogDrain,
) -> Option<HorizontalPodAutoscaler> {
    let a = ld
        .spec
        .ingester
        .autoscaling
        .as_ref()
        .filter(|a| a.mode == AutoscalingMode::Hpa)?;
    Some(HorizontalPodAutoscaler {
        metadata: owner.meta(ingester_name(&owner.name)),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_string()),
                kind: workload_kind(ld).to_string(),
                name: ingester_name(&owner.name),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_string(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_string(),
                    target: MetricTarget {
                        type_: "Utilization".to_string(),
                        average_utilization: Some(a.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        },
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::fixtures::{defaults, logdrain, with_claim};
    use crate::resources::{deployment, statefulset};

    #[test]
    fn autoscaled_deployments_leave_the_replicas_to_the_scaler() {
        let mut ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        assert!(horizontal_pod_autoscaler(&owner, &ld).is_none());
        for (mode, hpa) in [("operator", false), ("hpa", true)] {
            ld.spec.ingester.autoscaling = Some(
                serde_json::from_value(json!({
                    "mode": mode, "minReplicas": 2, "maxReplicas": 6,
                    "targetMessagesPerSecond": 1000, "targetCpuUtilizationPercentage": 60,
                }))
                .expect("autoscaling"),
            );
            let d = deployment(&owner, &ld, &defaults());
            assert_eq!(d.spec.and_then(|s| s.replicas), None, "{mode}");
            assert_eq!(
                horizontal_pod_autoscaler(&owner, &ld).is_some(),
                hpa,
                "{mode}"
            );
        }
        let hpa = horizontal_pod_autoscaler(&owner, &ld).expect("hpa");
        assert_eq!(hpa.metadata.name.as_deref(), Some("prod-ingester"));
        assert_eq!(
            hpa.metadata.owner_references,
            Some(vec![owner.reference.clone()])
        );
        let spec = hpa.spec;
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "prod-ingester");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
        let metric = &spec.metrics.expect("metrics")[0];
        let cpu = metric.resource.as_ref().expect("resource metric");
        assert_eq!(cpu.name, "cpu");
        assert_eq!(cpu.target.average_utilization, Some(60));
    }

    #[test]
    fn an_autoscaled_statefulset_leaves_the_replicas_to_the_scaler_and_the_hpa_targets_it() {
        let mut ld = with_claim(None);
        let owner = Owner::of(&ld).expect("owner");
        ld.spec.ingester.autoscaling = Some(
            serde_json::from_value(json!({"mode": "hpa", "minReplicas": 2, "maxReplicas": 6}))
                .expect("autoscaling"),
        );
        let set = statefulset(&owner, &ld, &defaults()).expect("statefulset");
        assert_eq!(set.spec.and_then(|s| s.replicas), None);
        let hpa = horizontal_pod_autoscaler(&owner, &ld).expect("hpa");
        assert_eq!(hpa.spec.scale_target_ref.kind, "StatefulSet");
        assert_eq!(hpa.spec.scale_target_ref.name, "prod-ingester");
    }

    #[test]
    fn a_budget_only_with_more_than_one_ingester() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let pdb = pod_disruption_budget(&owner, 3).expect("budget with 3 replicas");
        assert_eq!(pdb.metadata.name.as_deref(), Some("prod-ingester"));
        let spec = pdb.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.and_then(|s| s.match_labels),
            Some(selector_labels("prod"))
        );
        assert!(pod_disruption_budget(&owner, 1).is_none());
        assert!(pod_disruption_budget(&owner, 0).is_none());
    }
}
