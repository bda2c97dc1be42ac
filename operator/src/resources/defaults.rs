//! What a cluster administrator sets once for every ingester pod: the
//! image, the chart's `ingester.defaults` (pulling, sizing, security,
//! placement), how those are laid over the hardened settings the operator
//! sets, and the topology spread used when the defaults name none.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, PodSecurityContext, ResourceRequirements,
    SecurityContext, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::selector_labels;

/// Operator-wide settings the Deployment needs.
#[derive(Clone, Debug)]
pub struct IngesterDefaults {
    /// Image used when the LogDrain names none.
    pub image: String,
    /// Pod settings for every ingester (`--ingester-pod-defaults`).
    pub pod: IngesterPodDefaults,
}

impl IngesterDefaults {
    /// `image` and no pod defaults.
    pub fn new(image: String) -> IngesterDefaults {
        IngesterDefaults {
            image,
            pod: IngesterPodDefaults::default(),
        }
    }
}

/// When the kubelet pulls the ingester image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// What a cluster administrator sets once for the ingester pods of every
/// LogDrain (the chart's `ingester.defaults`): pulling, sizing, security and
/// placement. A LogDrain's own `spec.ingester.resources` wins over
/// `resources`; `securityContext` and `podSecurityContext` are laid over the
/// hardened ones the operator sets (fields given here win, the rest stay).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngesterPodDefaults {
    pub image_pull_policy: Option<PullPolicy>,
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    pub resources: Option<ResourceRequirements>,
    pub security_context: Option<SecurityContext>,
    pub pod_security_context: Option<PodSecurityContext>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
    pub affinity: Option<Affinity>,
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    pub priority_class_name: Option<String>,
    /// Environment of every ingester container (and the compaction Job's),
    /// after the operator's own: credentials for an S3-compatible store
    /// without IRSA, say. A name the operator sets (`AWS_REGION`,
    /// `AWS_ENDPOINT_URL_S3`, `DRAINPIPE_FORMAT`) stays the LogDrain's.
    pub env: Option<Vec<EnvVar>>,
}

impl IngesterPodDefaults {
    /// Parses the JSON (or YAML) the chart passes; empty text is no
    /// defaults. Unknown keys are refused, so a typo cannot be ignored.
    pub fn parse(text: &str) -> Result<IngesterPodDefaults, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(IngesterPodDefaults::default());
        }
        serde_yaml::from_str(text)
    }
}

/// `base` with every field `overlay` sets replaced, recursing into objects
/// (lists are replaced whole), as `kubectl patch --type merge` would.
pub(super) fn overlay<T: Serialize + DeserializeOwned>(base: T, on_top: Option<&T>) -> T {
    let Some(on_top) = on_top else {
        return base;
    };
    fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
        match (base, over) {
            (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
                for (k, v) in o {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, o) if !o.is_null() => *b = o,
            _ => {}
        }
    }
    // Both are k8s-openapi types, which always serialize; should that ever
    // fail, the hardened base stays rather than a half-merged value.
    let (Ok(mut merged), Ok(over)) = (serde_json::to_value(&base), serde_json::to_value(on_top))
    else {
        return base;
    };
    merge(&mut merged, over);
    serde_json::from_value(merged).unwrap_or(base)
}
/// Spread a LogDrain's ingester pods over nodes and zones, without ever
/// leaving one unscheduled for it; used unless `--ingester-pod-defaults`
/// sets `topologySpreadConstraints`.
pub(super) fn default_topology_spread(ld_name: &str) -> Vec<TopologySpreadConstraint> {
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_string(),
            when_unsatisfiable: "ScheduleAnyway".to_string(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(ld_name)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::Owner;
    use crate::resources::deployment;
    use crate::resources::fixtures::{defaults, logdrain, pod_of};

    /// The chart's `ingester.defaults` as the chart renders it (JSON).
    const CHART_DEFAULTS: &str = r#"{"imagePullPolicy":"Always",
        "imagePullSecrets":[{"name":"registry"}],
        "resources":{"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"memory":"512Mi"}},
        "securityContext":{"runAsUser":10001,"capabilities":{"drop":["ALL"],"add":["NET_BIND_SERVICE"]}},
        "podSecurityContext":{"fsGroup":10001,"supplementalGroups":[4000]},
        "nodeSelector":{"kubernetes.io/arch":"amd64"},
        "tolerations":[{"key":"logs","operator":"Exists","effect":"NoSchedule"}],
        "affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"pool","operator":"In","values":["logs"]}]}]}}},
        "topologySpreadConstraints":[{"maxSkew":1,"topologyKey":"topology.kubernetes.io/zone","whenUnsatisfiable":"ScheduleAnyway","labelSelector":{"matchLabels":{"app.kubernetes.io/name":"drainpipe-ingester"}}}],
        "priorityClassName":"logs-critical"}"#;

    #[test]
    fn pod_defaults_reach_every_ingester_pod() {
        let mut ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let mut defaults = defaults();
        defaults.pod = IngesterPodDefaults::parse(CHART_DEFAULTS).expect("chart defaults parse");
        let pod = pod_of(deployment(&owner, &ld, &defaults));
        let c = &pod.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            pod.image_pull_secrets.as_ref().map(|s| s[0].name.as_str()),
            Some("registry")
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("logs-critical"));
        assert_eq!(
            pod.node_selector
                .as_ref()
                .and_then(|n| n.get("kubernetes.io/arch"))
                .map(String::as_str),
            Some("amd64")
        );
        assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
        assert!(
            pod.affinity
                .as_ref()
                .is_some_and(|a| a.node_affinity.is_some())
        );
        assert_eq!(
            pod.topology_spread_constraints
                .as_ref()
                .map(|t| t[0].topology_key.as_str()),
            Some("topology.kubernetes.io/zone")
        );
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        assert_eq!(
            limits.and_then(|l| l.get("memory")).map(|q| q.0.as_str()),
            Some("512Mi")
        );

        // Laid over the hardened context: the given fields change, the rest stay.
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.run_as_user, Some(10001));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.add.clone()),
            Some(vec!["NET_BIND_SERVICE".to_string()])
        );
        let psc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.fs_group, Some(10001));
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );

        // A LogDrain's own resources win over the defaults.
        ld.spec.ingester.resources =
            serde_json::from_value(json!({"limits": {"memory": "2Gi"}})).expect("resources");
        let pod = pod_of(deployment(&owner, &ld, &defaults));
        let limits = pod.containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .expect("limits");
        assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("2Gi"));
    }

    #[test]
    fn without_pod_defaults_the_pod_is_unchanged() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let mut with_empty = defaults();
        with_empty.pod = IngesterPodDefaults::parse("{}").expect("empty object");
        assert_eq!(
            IngesterPodDefaults::parse("").expect("empty"),
            with_empty.pod
        );
        let pod = pod_of(deployment(&owner, &ld, &with_empty));
        assert_eq!(pod, pod_of(deployment(&owner, &ld, &defaults())));
        let c = &pod.containers[0];
        assert_eq!(c.image_pull_policy, None);
        assert_eq!(pod.node_selector, None);
        assert_eq!(
            c.security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem),
            Some(true)
        );
    }

    #[test]
    fn pod_defaults_refuse_typos_and_bad_values() {
        for (bad, says) in [
            (
                r#"{"nodeSelecter": {"a": "b"}}"#,
                "unknown field `nodeSelecter`",
            ),
            (
                r#"{"imagePullPolicy": "Sometimes"}"#,
                "unknown variant `Sometimes`",
            ),
            (r#"{"tolerations": {"key": "x"}}"#, "tolerations"),
        ] {
            let err = IngesterPodDefaults::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn pods_spread_over_nodes_and_zones_unless_the_defaults_say_otherwise() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let pod = pod_of(deployment(&owner, &ld, &defaults()));
        let spread = pod.topology_spread_constraints.expect("default spread");
        let keys: Vec<&str> = spread.iter().map(|t| t.topology_key.as_str()).collect();
        assert_eq!(
            keys,
            ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        );
        for t in &spread {
            assert_eq!(t.max_skew, 1);
            assert_eq!(t.when_unsatisfiable, "ScheduleAnyway");
            assert_eq!(
                t.label_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.clone()),
                Some(selector_labels("prod"))
            );
        }
        // The administrator's own constraints replace the defaults.
        let mut custom = defaults();
        custom.pod = IngesterPodDefaults::parse(CHART_DEFAULTS).expect("chart defaults");
        let pod = pod_of(deployment(&owner, &ld, &custom));
        let spread = pod.topology_spread_constraints.expect("spread");
        assert_eq!(spread.len(), 1);
        assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    }
}
