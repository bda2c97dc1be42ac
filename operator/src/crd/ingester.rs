//! The ingesters that receive the drains (`spec.ingester`): replicas,
//! image and resources, the syslog and OTLP/gRPC listeners, autoscaling,
//! and the buffer storage (emptyDir or a claim per pod).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The ingesters that receive the drains: a Deployment, or a StatefulSet
/// with `bufferStorage.persistentVolumeClaim`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngesterSpec {
    /// Number of ingester pods (default 2). Also set by `kubectl scale
    /// logdrain/NAME --replicas=N` and by a HorizontalPodAutoscaler through
    /// the scale subresource. Not used while `autoscaling.mode` is
    /// `operator` or `hpa`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Ingester container image; defaults to the operator's
    /// `--ingester-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// CPU and memory requests and limits of the ingester container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Local buffer (write-ahead log) of each ingester pod.
    #[serde(default)]
    pub buffer_storage: BufferStorage,
    /// Service account the ingester pods run as, e.g. one bound to an IAM
    /// role allowed to write the bucket. Defaults to the namespace's
    /// `default` account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
    /// The ingester's syslog listener, used when `endpoint.syslogTls` is
    /// set (defaults apply when this is omitted): the port the pods and the
    /// Service expose, and the TLS certificate the ingester serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<IngesterSyslog>,
    /// The ingester's OTLP/gRPC listener, used when
    /// `endpoint.otlpTransport` is `grpc` (defaults apply when this is
    /// omitted): the port the pods and the Service expose (named
    /// `otlp-grpc`) and the TLS certificate the ingester serves with ALPN
    /// `h2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_grpc: Option<IngesterOtlpGrpc>,
    /// Load-based scaling of the ingester pods. `mode: operator` lets the
    /// operator set the replicas from what each pod's `/metrics` reports
    /// (messages and bytes received per second, write-ahead log fill, 503
    /// answers); `mode: hpa` creates a HorizontalPodAutoscaler on CPU
    /// instead; `manual` (the default, also when this is omitted) runs
    /// `replicas` pods. While it is not `manual`, `replicas` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<IngesterAutoscaling>,
}

/// Who scales the ingester Deployment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingMode {
    /// `spec.ingester.replicas` pods (or `kubectl scale logdrain`). Not
    /// called `off`: YAML 1.1, which kubectl and Helm read, takes an
    /// unquoted `off` for `false`.
    #[default]
    Manual,
    /// The operator, from the pods' own `/metrics`.
    Operator,
    /// A HorizontalPodAutoscaler (`autoscaling/v2`) on CPU utilisation.
    Hpa,
}

/// Load-based scaling of the ingester pods.
///
/// With `mode: operator` the operator reads every ready pod's `/metrics`
/// on each reconcile (every few seconds while on) and computes rates from
/// the counters' change between two reads. The replicas wanted are the
/// total rate divided by the per-pod target (the larger of the two targets
/// when both are set); a pod whose write-ahead log is over `walFillPercent`
/// of its bound, or that answers more than `http503PerSecond` 503s per
/// second, asks for at least one pod more. Scaling up happens at once;
/// scaling down only to the highest number wanted within
/// `scaleDownStabilization`, never below `minReplicas` or the number of
/// pods still flushing their log, never above `maxReplicas`. Each change is
/// an event `ScaledUp`/`ScaledDown` with the numbers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not be above autoscaling.maxReplicas"))]
#[x_kube(validation = Rule::new("self.mode != 'operator' || has(self.targetMessagesPerSecond) || has(self.targetBytesPerSecond)").message("autoscaling mode operator needs a target per pod: set targetMessagesPerSecond, targetBytesPerSecond or both"))]
pub struct IngesterAutoscaling {
    /// `manual` (default): `spec.ingester.replicas` pods; `operator`: the
    /// operator scales by load; `hpa`: a HorizontalPodAutoscaler on CPU.
    #[serde(default)]
    pub mode: AutoscalingMode,
    /// Fewest ingester pods (default 1, at least 1).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Most ingester pods (default 10).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Messages per second one pod should take (mode `operator`), counted
    /// as the ingester parses them (`drainpipe_messages_total`), e.g.
    /// `10000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_messages_per_second: Option<i64>,
    /// Request bytes per second one pod should take (mode `operator`),
    /// counted as received (`drainpipe_received_bytes_total` plus
    /// `drainpipe_syslog_received_bytes_total`), as a size: `5MiB`, `8MB`,
    /// `1048576`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+([kKmMgGtT]([iI]?[bB])?|[bB])?$"))]
    pub target_bytes_per_second: Option<String>,
    /// A pod whose write-ahead log holds more than this percentage of its
    /// bound (`drainpipe_wal_bytes` / `drainpipe_wal_max_bytes`; at the
    /// bound it answers 503) asks for at least one pod more (default 50).
    #[serde(default = "default_wal_fill_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub wal_fill_percent: i32,
    /// A pod answering more 503s per second than this
    /// (`drainpipe_http_requests_total{status="503"}`) asks for at least one
    /// pod more (default 0.05, the chart's alert threshold).
    #[serde(default = "default_http503_per_second")]
    #[schemars(range(min = 0.0))]
    pub http503_per_second: f64,
    /// How long a lower load must last before pods are removed: the
    /// replicas never drop below the highest number wanted within this
    /// window (default `5m`; `30s`, `10m`, `1h`...).
    #[serde(default = "default_scale_down_stabilization")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub scale_down_stabilization: String,
    /// Mode `hpa`: the average CPU utilisation (percent of the pods' CPU
    /// request, so set `resources.requests.cpu`) the
    /// HorizontalPodAutoscaler keeps (default 70).
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_min_replicas() -> i32 {
    1
}

fn default_max_replicas() -> i32 {
    10
}

fn default_wal_fill_percent() -> i32 {
    50
}

fn default_http503_per_second() -> f64 {
    0.05
}

fn default_scale_down_stabilization() -> String {
    "5m".to_string()
}

fn default_target_cpu() -> i32 {
    70
}

impl IngesterSpec {
    /// Who scales the ingester pods (`Manual` without `autoscaling`).
    pub fn autoscaling_mode(&self) -> AutoscalingMode {
        self.autoscaling
            .as_ref()
            .map(|a| a.mode)
            .unwrap_or_default()
    }
}

/// The ingester's syslog listener (for `endpoint.syslogTls` drains).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngesterSyslog {
    /// TCP port of the syslog listener, named `syslog` on the pods and on
    /// the `<name>-ingester` Service (default 6514; 1024 or above, as the
    /// ingester runs without privileges). Expose it as
    /// `endpoint.syslogTls`, e.g. with a Service of type LoadBalancer
    /// selecting the ingester pods (its public port may differ).
    #[serde(default = "default_syslog_port")]
    #[schemars(range(min = 1024, max = 65535))]
    #[x_kube(validation = Rule::new("self != 8080").message("8080 is the ingester's HTTP port: pick another syslog port"))]
    pub port: i32,
    /// A Secret of type `kubernetes.io/tls` (keys `tls.crt` and `tls.key`,
    /// e.g. from cert-manager) in the LogDrain's namespace: the certificate
    /// the ingester presents to Heroku, for the host in
    /// `endpoint.syslogTls`. It is mounted into the pods and re-read when it
    /// changes. Omit it when a load balancer in front terminates TLS and
    /// forwards plain TCP to the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
}

impl Default for IngesterSyslog {
    fn default() -> Self {
        IngesterSyslog {
            port: default_syslog_port(),
            tls_secret_name: None,
        }
    }
}

fn default_syslog_port() -> i32 {
    6514
}

/// The ingester's OTLP/gRPC listener (for `endpoint.otlpTransport: grpc`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngesterOtlpGrpc {
    /// TCP port of the OTLP/gRPC listener, named `otlp-grpc` on the pods
    /// and on the `<name>-ingester` Service (default 4317, OTLP's gRPC
    /// port). Expose it as `endpoint.otlpGrpc`, e.g. with a Service of type
    /// LoadBalancer or an HTTP/2-capable load balancer.
    #[serde(default = "default_otlp_grpc_port")]
    #[schemars(range(min = 1024, max = 65535))]
    #[x_kube(validation = Rule::new("self != 8080").message("8080 is the ingester's HTTP port: pick another OTLP/gRPC port"))]
    pub port: i32,
    /// A Secret of type `kubernetes.io/tls` (keys `tls.crt` and `tls.key`)
    /// in the LogDrain's namespace: the certificate the ingester presents
    /// to Heroku's gRPC exporter for the host in `endpoint.otlpGrpc`,
    /// mounted into the pods and re-read when it changes. Omit it when a
    /// load balancer in front terminates TLS and speaks HTTP/2 (h2c) to
    /// the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
}

impl Default for IngesterOtlpGrpc {
    fn default() -> Self {
        IngesterOtlpGrpc {
            port: default_otlp_grpc_port(),
            tls_secret_name: None,
        }
    }
}

fn default_otlp_grpc_port() -> i32 {
    4317
}

impl Default for IngesterSpec {
    fn default() -> Self {
        IngesterSpec {
            replicas: default_replicas(),
            image: None,
            resources: None,
            buffer_storage: BufferStorage::default(),
            service_account_name: None,
            syslog: None,
            otlp_grpc: None,
            autoscaling: None,
        }
    }
}

fn default_replicas() -> i32 {
    2
}

/// The ingester's local buffer (write-ahead log): messages acknowledged to
/// Heroku but not yet uploaded. A pod flushes it to the archive when it is
/// stopped. By default an emptyDir, which a node failure takes with it;
/// with `persistentVolumeClaim` each pod gets a volume of its own that a
/// rescheduled pod finds again (the ingesters then run as a StatefulSet).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BufferStorage {
    /// Size limit of the emptyDir buffer (default `2Gi`). When it is full
    /// the ingester answers 503 and Heroku retries. Not used with
    /// `persistentVolumeClaim`, whose `size` bounds the buffer instead.
    #[serde(default = "default_buffer_size")]
    pub size_limit: Quantity,
    /// A PersistentVolumeClaim per ingester pod instead of the emptyDir:
    /// the ingesters run as a StatefulSet (claims `buffer-<name>-ingester-N`),
    /// so what a pod acknowledged survives the loss of its node and is
    /// uploaded by the pod rescheduled onto the claim. On scale-down the
    /// operator runs a flush Job on every claim no pod mounts any more and
    /// deletes the claim only once the Job emptied it. Removing this field
    /// goes back to a Deployment with emptyDir buffers (the claims are
    /// flushed and deleted the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<BufferClaim>,
}

/// The volume claim of each ingester pod's buffer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BufferClaim {
    /// StorageClass of the claims; omit for the cluster's default class. A
    /// class whose volumes are bound to one zone keeps a rescheduled pod in
    /// that zone; a node failure then needs another node in the same zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// Requested size of each claim, e.g. `10Gi`. The ingester refuses data
    /// (503, Heroku retries) at 80% of it, and the pods' termination grace
    /// period grows with it (time to upload a full buffer).
    pub size: Quantity,
}

impl Default for BufferStorage {
    fn default() -> Self {
        BufferStorage {
            size_limit: default_buffer_size(),
            persistent_volume_claim: None,
        }
    }
}

fn default_buffer_size() -> Quantity {
    Quantity("2Gi".to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::fixtures::{crd_json, spec_schema};

    #[test]
    fn buffer_claims_need_a_size_and_take_an_optional_class() {
        let crd = crd_json();
        let claim = &spec_schema(&crd)["properties"]["ingester"]["properties"]["bufferStorage"]["properties"]
            ["persistentVolumeClaim"];
        assert_eq!(claim["required"], json!(["size"]));
        assert!(claim["properties"]["storageClassName"].is_object());
        let b: BufferStorage =
            serde_json::from_value(json!({"persistentVolumeClaim": {"size": "10Gi"}}))
                .expect("claim without a class");
        let c = b.persistent_volume_claim.expect("claim");
        assert_eq!(c.size.0, "10Gi");
        assert_eq!(c.storage_class_name, None);
        assert_eq!(b.size_limit.0, "2Gi");
    }

    #[test]
    fn autoscaling_is_manual_by_default_and_validated_by_the_schema() {
        let crd = crd_json();
        let a = &spec_schema(&crd)["properties"]["ingester"]["properties"]["autoscaling"];
        assert_eq!(
            a["properties"]["mode"]["enum"],
            json!(["manual", "operator", "hpa"])
        );
        assert_eq!(a["properties"]["mode"]["default"], "manual");
        assert_eq!(a["properties"]["minReplicas"]["minimum"], 1.0);
        assert_eq!(a["properties"]["scaleDownStabilization"]["default"], "5m");
        let rules: Vec<&str> = a["x-kubernetes-validations"]
            .as_array()
            .expect("autoscaling rules")
            .iter()
            .filter_map(|r| r["rule"].as_str())
            .collect();
        assert!(
            rules.contains(&"self.minReplicas <= self.maxReplicas"),
            "{rules:?}"
        );
        assert!(
            rules
                .iter()
                .any(|r| r.contains("has(self.targetMessagesPerSecond)"))
        );

        assert_eq!(
            IngesterSpec::default().autoscaling_mode(),
            AutoscalingMode::Manual
        );
        let spec: IngesterSpec = serde_json::from_value(json!({
            "autoscaling": {"mode": "operator", "targetMessagesPerSecond": 5000}
        }))
        .expect("ingester spec");
        assert_eq!(spec.autoscaling_mode(), AutoscalingMode::Operator);
        let a = spec.autoscaling.expect("autoscaling");
        assert_eq!((a.min_replicas, a.max_replicas), (1, 10));
        assert_eq!(a.wal_fill_percent, 50);
        assert_eq!(a.scale_down_stabilization, "5m");
        assert_eq!(a.target_cpu_utilization_percentage, 70);
    }
}
