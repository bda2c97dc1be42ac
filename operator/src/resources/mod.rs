//! The Kubernetes objects a LogDrain owns: the drain password Secret, the
//! routes Secret, the ingester Deployment and its Service. Pure builders:
//! the controller applies them with server-side apply.

use std::collections::BTreeMap;

use drainpipe_contract::routes::RoutesFile;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    Lifecycle, LifecycleHandler, LocalObjectReference, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, SleepAction, Toleration,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::{AutoscalingMode, LogDrain};

/// Key of the drain password in `<name>-drain-password`.
pub(crate) const PASSWORD_KEY: &str = "password";
/// Key of the routes file in `<name>-routes`.
pub(crate) const ROUTES_KEY: &str = "routes.yaml";
/// Where the ingester container finds the routes Secret.
pub(crate) const ROUTES_DIR: &str = "/etc/drainpipe";
/// Where the ingester container keeps its write-ahead log.
pub(crate) const DATA_DIR: &str = "/var/lib/drainpipe";
/// The ingester's HTTP port inside the pod.
pub(crate) const INGESTER_PORT: i32 = 8080;
/// Where the ingester container finds the syslog TLS Secret. Not under
/// `ROUTES_DIR`: a mount point cannot be made inside a Secret volume.
pub(crate) const SYSLOG_TLS_DIR: &str = "/etc/drainpipe-syslog-tls";
/// Where the ingester container finds the OTLP/gRPC TLS Secret.
pub(crate) const OTLP_GRPC_TLS_DIR: &str = "/etc/drainpipe-otlp-grpc-tls";

/// A listener the ingester opens besides HTTP, for this LogDrain's drains:
/// syslog+TLS (Cedar `syslogTls`) and OTLP/gRPC (Fir over gRPC). One list
/// so the flags, the pod and Service ports and the certificate mounts
/// cannot disagree.
struct Listener {
    /// Port name on the pod and the Service, prefix of the volume name.
    name: &'static str,
    /// `--{flag}-listen`, `--{flag}-tls-cert`, `--{flag}-tls-key`.
    flag: &'static str,
    port: i32,
    tls_secret_name: Option<String>,
    tls_dir: &'static str,
}

fn listeners(ld: &LogDrain) -> Vec<Listener> {
    let syslog = ld.syslog_listener().map(|l| Listener {
        name: "syslog",
        flag: "syslog",
        port: l.port,
        tls_secret_name: l.tls_secret_name,
        tls_dir: SYSLOG_TLS_DIR,
    });
    let grpc = ld.otlp_grpc_listener().map(|l| Listener {
        name: "otlp-grpc",
        flag: "otlp-grpc",
        port: l.port,
        tls_secret_name: l.tls_secret_name,
        tls_dir: OTLP_GRPC_TLS_DIR,
    });
    syslog.into_iter().chain(grpc).collect()
}

const MANAGED_BY: &str = "drainpipe-operator";
/// Label on every object a LogDrain owns, naming it.
pub(crate) const LOGDRAIN_LABEL: &str = "drainpipe.dev/logdrain";

pub(crate) fn password_secret_name(ld_name: &str) -> String {
    format!("{ld_name}-drain-password")
}

pub(crate) fn routes_secret_name(ld_name: &str) -> String {
    format!("{ld_name}-routes")
}

pub(crate) fn ingester_name(ld_name: &str) -> String {
    format!("{ld_name}-ingester")
}

/// A fresh drain password: 32 alphanumerics (about 190 bits), safe in a URL
/// userinfo without escaping.
pub(crate) fn generate_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Labels that select one LogDrain's ingester pods.
pub(crate) fn selector_labels(ld_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "drainpipe-ingester".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            ld_name.to_string(),
        ),
    ])
}

/// The selector as a string, for the scale subresource.
pub(crate) fn selector_string(ld_name: &str) -> String {
    selector_labels(ld_name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels(ld_name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(ld_name);
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        MANAGED_BY.to_string(),
    );
    labels.insert(LOGDRAIN_LABEL.to_string(), ld_name.to_string());
    labels
}

/// Name, namespace and owner of the LogDrain, needed by every builder.
#[derive(Clone, Debug)]
pub(crate) struct Owner {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) reference: OwnerReference,
}

impl Owner {
    /// `None` when the object lacks a name, namespace or uid (not yet stored).
    pub fn of(ld: &LogDrain) -> Option<Owner> {
        Some(Owner {
            name: ld.metadata.name.clone()?,
            namespace: ld.metadata.namespace.clone()?,
            reference: ld.controller_owner_ref(&())?,
        })
    }

    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name)),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

fn secret(meta: ObjectMeta, key: &str, value: String) -> Secret {
    Secret {
        metadata: meta,
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// The drain password Secret, written once: later reconciles read it back so
/// a person can rotate the password by editing it.
pub(crate) fn password_secret(owner: &Owner, password: String) -> Secret {
    secret(
        owner.meta(password_secret_name(&owner.name)),
        PASSWORD_KEY,
        password,
    )
}

/// The routes Secret mounted into the ingester.
pub(crate) fn routes_secret(owner: &Owner, routes_yaml: String) -> Secret {
    secret(
        owner.meta(routes_secret_name(&owner.name)),
        ROUTES_KEY,
        routes_yaml,
    )
}

/// Reads a Secret value as UTF-8 text (from `data`, or from `stringData`
/// when a client wrote that and the server has not normalized it).
pub(crate) fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(bytes.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

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
    fn as_str(self) -> &'static str {
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
fn overlay<T: Serialize + DeserializeOwned>(base: T, on_top: Option<&T>) -> T {
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

/// `s3://bucket/prefix` as the ingester's `--archive` takes it.
pub(crate) fn archive_url(ld: &LogDrain) -> String {
    let s3 = &ld.spec.archive.s3;
    format!("s3://{}/{}", s3.bucket, s3.prefix)
}

/// Parses the Kubernetes quantity forms people write for volume sizes
/// (`512Mi`, `2Gi`, `1G`, `1073741824`); `None` for anything fancier.
pub(crate) fn quantity_bytes(q: &str) -> Option<u64> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (digits, suffix) = q.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The ingester Deployment (emptyDir buffers).
pub(crate) fn deployment(owner: &Owner, ld: &LogDrain, defaults: &IngesterDefaults) -> Deployment {
    Deployment {
        metadata: owner.meta(ingester_name(&owner.name)),
        spec: Some(DeploymentSpec {
            replicas: deployment_replicas(ld),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                ..LabelSelector::default()
            },
            template: pod_template(owner, ld, defaults),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The one ingester pod template, of the Deployment and of the StatefulSet.
fn pod_template(owner: &Owner, ld: &LogDrain, defaults: &IngesterDefaults) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&owner.name)),
            ..ObjectMeta::default()
        }),
        spec: Some(ingester_pod(owner, ld, defaults)),
    }
}

/// The ingester's command line.
fn ingester_args(ld: &LogDrain) -> Vec<String> {
    let mut args = vec![
        "--listen".to_string(),
        format!("0.0.0.0:{INGESTER_PORT}"),
        "--routes".to_string(),
        format!("{ROUTES_DIR}/{ROUTES_KEY}"),
        "--archive".to_string(),
        archive_url(ld),
        "--data-dir".to_string(),
        format!("{DATA_DIR}/wal"),
        "--log-format".to_string(),
        "json".to_string(),
    ];
    for l in listeners(ld) {
        args.push(format!("--{}-listen", l.flag));
        args.push(format!("0.0.0.0:{}", l.port));
        if l.tls_secret_name.is_some() {
            args.push(format!("--{}-tls-cert", l.flag));
            args.push(format!("{}/tls.crt", l.tls_dir));
            args.push(format!("--{}-tls-key", l.flag));
            args.push(format!("{}/tls.key", l.tls_dir));
        }
    }
    // The write-ahead log must refuse data (503, Heroku retries) before the
    // emptyDir hits its limit, which would get the pod evicted (or the
    // claim fills up, which would fail the writes).
    if let Some(bytes) = wal_max_bytes(ld) {
        args.push("--wal-max-bytes".to_string());
        args.push(bytes.to_string());
    }
    args
}

/// The ingester's `--wal-max-bytes`: 80% of the buffer volume (the claim's
/// size, else the emptyDir's limit); `None` for a size written in a form
/// `quantity_bytes` does not read (the ingester's default applies).
pub(crate) fn wal_max_bytes(ld: &LogDrain) -> Option<u64> {
    let buffer = &ld.spec.ingester.buffer_storage;
    let size = match &buffer.persistent_volume_claim {
        Some(claim) => &claim.size,
        None => &buffer.size_limit,
    };
    quantity_bytes(&size.0).map(|bytes| bytes / 10 * 8)
}

/// Where the archive is, for the AWS SDK in the ingester.
fn ingester_env(ld: &LogDrain) -> Vec<EnvVar> {
    let mut env = vec![EnvVar {
        name: "AWS_REGION".to_string(),
        value: Some(ld.spec.archive.s3.region.clone()),
        ..EnvVar::default()
    }];
    if let Some(endpoint) = &ld.spec.archive.s3.endpoint {
        env.push(EnvVar {
            name: "AWS_ENDPOINT_URL_S3".to_string(),
            value: Some(endpoint.clone()),
            ..EnvVar::default()
        });
    }
    env
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn ingester_ports(ld: &LogDrain) -> Vec<ContainerPort> {
    let mut ports = vec![ContainerPort {
        name: Some("http".to_string()),
        container_port: INGESTER_PORT,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }];
    for l in listeners(ld) {
        ports.push(ContainerPort {
            name: Some(l.name.to_string()),
            container_port: l.port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        });
    }
    ports
}

/// The pod's volumes and the container's mounts of them: the routes
/// Secret, the write-ahead log's emptyDir (or, with a claim, only its
/// mount) and, for syslog+TLS, the certificate Secret.
fn ingester_volumes(owner: &Owner, ld: &LogDrain) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut mounts = vec![
        VolumeMount {
            name: "routes".to_string(),
            mount_path: ROUTES_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: BUFFER_VOLUME.to_string(),
            mount_path: DATA_DIR.to_string(),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![Volume {
        name: "routes".to_string(),
        // A whole-directory mount (not subPath) so Secret updates
        // reach the running ingester, which re-reads the file.
        secret: Some(SecretVolumeSource {
            secret_name: Some(routes_secret_name(&owner.name)),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }];
    // With a claim the StatefulSet's claim template supplies the volume.
    if ld
        .spec
        .ingester
        .buffer_storage
        .persistent_volume_claim
        .is_none()
    {
        volumes.push(Volume {
            name: BUFFER_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(ld.spec.ingester.buffer_storage.size_limit.clone()),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    for (l, tls_secret) in listeners(ld)
        .into_iter()
        .filter_map(|l| l.tls_secret_name.clone().map(|s| (l, s)))
    {
        mounts.push(VolumeMount {
            name: format!("{}-tls", l.name),
            mount_path: l.tls_dir.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        // Whole directory again: a renewed certificate reaches the
        // ingester, which re-reads the files when they change.
        volumes.push(Volume {
            name: format!("{}-tls", l.name),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls_secret),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    (volumes, mounts)
}

fn ingester_pod(owner: &Owner, ld: &LogDrain, defaults: &IngesterDefaults) -> PodSpec {
    let spec = &ld.spec.ingester;
    let pod = &defaults.pod;
    let (volumes, mounts) = ingester_volumes(owner, ld);
    let hardened = SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    };
    let container = Container {
        name: "ingester".to_string(),
        image: Some(spec.image.clone().unwrap_or_else(|| defaults.image.clone())),
        image_pull_policy: pod.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(ingester_args(ld)),
        env: Some(ingester_env(ld)),
        ports: Some(ingester_ports(ld)),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: spec.resources.clone().or_else(|| pod.resources.clone()),
        volume_mounts: Some(mounts),
        security_context: Some(overlay(hardened, pod.security_context.as_ref())),
        lifecycle: Some(pre_stop_sleep()),
        ..Container::default()
    };
    let hardened_pod = PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    };
    PodSpec {
        containers: vec![container],
        service_account_name: spec.service_account_name.clone(),
        termination_grace_period_seconds: Some(grace_period_seconds(wal_max_bytes(ld))),
        security_context: Some(overlay(hardened_pod, pod.pod_security_context.as_ref())),
        volumes: Some(volumes),
        image_pull_secrets: pod.image_pull_secrets.clone(),
        node_selector: pod.node_selector.clone(),
        tolerations: pod.tolerations.clone(),
        affinity: pod.affinity.clone(),
        topology_spread_constraints: Some(
            pod.topology_spread_constraints
                .clone()
                .unwrap_or_else(|| default_topology_spread(&owner.name)),
        ),
        priority_class_name: pod.priority_class_name.clone(),
        ..PodSpec::default()
    }
}

/// The ClusterIP Service in front of the ingester pods: port 8080 (`http`),
/// the syslog port (`syslog`) for syslog+tls drains and the OTLP/gRPC port
/// (`otlp-grpc`) for Fir apps over gRPC. An Ingress or load
/// balancer the user owns exposes it as `endpoint.url` or
/// `endpoint.syslogTls`.
pub(crate) fn service(owner: &Owner, ld: &LogDrain) -> Service {
    let mut ports = vec![ServicePort {
        name: Some("http".to_string()),
        port: INGESTER_PORT,
        target_port: Some(IntOrString::String("http".to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }];
    for l in listeners(ld) {
        ports.push(ServicePort {
            name: Some(l.name.to_string()),
            port: l.port,
            target_port: Some(IntOrString::String(l.name.to_string())),
            protocol: Some("TCP".to_string()),
            ..ServicePort::default()
        });
    }
    Service {
        metadata: owner.meta(ingester_name(&owner.name)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&owner.name)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The Ingress of `spec.endpoint.ingress`, named like the Service: only
/// `/logplex` (Logplex drains) and `/otlp` (Fir apps' OTLP/HTTP telemetry
/// drains) are routed, so the ingester's `/metrics` and health endpoints
/// stay inside the cluster.
pub(crate) fn ingress(owner: &Owner, ld: &LogDrain) -> Option<Ingress> {
    let spec = ld.spec.endpoint.ingress.as_ref()?;
    let mut metadata = owner.meta(ingester_name(&owner.name));
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: ingester_name(&owner.name),
            port: Some(ServiceBackendPort {
                name: Some("http".to_string()),
                number: None,
            }),
        }),
        resource: None,
    };
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: ["/logplex", "/otlp"]
                        .into_iter()
                        .map(|path| HTTPIngressPath {
                            path: Some(path.to_string()),
                            path_type: "Prefix".to_string(),
                            backend: backend.clone(),
                        })
                        .collect(),
                }),
            }]),
            tls: spec.tls.as_ref().map(|t| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(t.secret_name.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    })
}

// ---------------------------------------------------------------------------
// Buffer volumes and graceful drain: the StatefulSet of
// `bufferStorage.persistentVolumeClaim`, its flush Jobs, the
// PodDisruptionBudget, and the stop sequence every ingester pod gets.

/// Name of the write-ahead log's volume (the emptyDir, or the StatefulSet's
/// claim template, whose claims are `buffer-<name>-ingester-N`).
pub(crate) const BUFFER_VOLUME: &str = "buffer";

/// The `preStop` sleep: on deletion the pod leaves the Service's endpoints
/// at once, but kube-proxy, Ingress controllers and cloud load balancers
/// learn it over a few seconds; until then they still send to the pod,
/// which keeps accepting. Only then does the kubelet send SIGTERM.
pub(crate) const PRE_STOP_SECONDS: i64 = 10;

/// Upload rate a stopping ingester is assumed to reach, in bytes of log per
/// second (parse, gzip level 1 and store; docs/benchmarks.md measures far
/// more per core, this leaves room for a slow link or a busy node).
pub(crate) const ASSUMED_UPLOAD_BYTES_PER_SECOND: u64 = 16 << 20;

/// After SIGTERM, before the flush: requests in flight may take up to the
/// ingester's 10 s shutdown grace, and the last objects need their uploads.
const SHUTDOWN_MARGIN_SECONDS: i64 = 30;

/// `terminationGracePeriodSeconds`: the `preStop` sleep, plus the margin,
/// plus the time to upload a full buffer at the assumed rate:
/// `10 + 30 + ceil(wal_max_bytes / 16 MiB/s)` (143 s for the default 2Gi
/// emptyDir). A buffer of unknown size keeps the earlier fixed 120 s.
pub(crate) fn grace_period_seconds(wal_max_bytes: Option<u64>) -> i64 {
    let Some(bytes) = wal_max_bytes else {
        return 120;
    };
    let upload = bytes.div_ceil(ASSUMED_UPLOAD_BYTES_PER_SECOND);
    PRE_STOP_SECONDS
        .saturating_add(SHUTDOWN_MARGIN_SECONDS)
        .saturating_add(i64::try_from(upload).unwrap_or(i64::MAX))
}

/// The container's `preStop` hook: the kubelet's own sleep (Kubernetes
/// 1.30+), as the image has no shell and no `sleep` binary.
fn pre_stop_sleep() -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            sleep: Some(SleepAction {
                seconds: PRE_STOP_SECONDS,
            }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    }
}

/// Spread a LogDrain's ingester pods over nodes and zones, without ever
/// leaving one unscheduled for it; used unless `--ingester-pod-defaults`
/// sets `topologySpreadConstraints`.
fn default_topology_spread(ld_name: &str) -> Vec<TopologySpreadConstraint> {
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

/// Annotation of a flush Job naming the claim it empties.
pub(crate) const FLUSH_CLAIM_ANNOTATION: &str = "drainpipe.dev/buffer-claim";

/// How long a flush Job tries before it fails (the ingester's
/// `--flush-timeout`); the Job's deadline adds the pod's start.
const FLUSH_TIMEOUT_SECONDS: i64 = 600;

/// A Job's name is also a label value (`job-name`), at most 63 characters.
pub(crate) fn flush_job_name(claim: &str) -> String {
    let name = format!("{claim}-flush");
    if name.len() <= 63 {
        return name;
    }
    // FNV-1a: the same name from every operator build.
    let digest = claim.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let head: String = claim.chars().take(44).collect();
    format!("{}-{digest:08x}-flush", head.trim_end_matches('-'))
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

/// The Deployment's (or StatefulSet's) `spec.replicas` as the operator
/// applies it: left out
/// while autoscaled, so the operator's apply never undoes what the scaler
/// (its own autoscaler or an HPA, through the scale subresource) set.
fn deployment_replicas(ld: &LogDrain) -> Option<i32> {
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

/// Serializes routes for the routes Secret.
pub(crate) fn routes_yaml(
    routes: &RoutesFile,
) -> Result<String, drainpipe_contract::routes::RoutesError> {
    routes.to_yaml()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LogDrainSpec;
    use serde_json::json;

    fn logdrain() -> LogDrain {
        let spec: LogDrainSpec = serde_json::from_value(json!({
            "apps": ["app-one", "app-two"],
            "heroku": {"apiTokenSecretRef": {"name": "heroku", "key": "token"}},
            "endpoint": {"url": "https://logs.example.com"},
            "archive": {"s3": {"bucket": "logs-bucket", "region": "eu-west-1",
                               "endpoint": "http://minio:9000"}},
            "ingester": {"replicas": 3, "bufferStorage": {"sizeLimit": "1Gi"}}
        }))
        .expect("spec");
        let mut ld = LogDrain::new("prod", spec);
        ld.metadata.namespace = Some("logs".to_string());
        ld.metadata.uid = Some("0b5e5f4e-1111-2222-3333-444455556666".to_string());
        ld
    }

    fn defaults() -> IngesterDefaults {
        IngesterDefaults::new("ghcr.io/drainpipe/ingester:0.1.0".to_string())
    }

    fn pod_of(d: Deployment) -> PodSpec {
        d.spec.and_then(|s| s.template.spec).expect("pod spec")
    }

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
    fn owner_reference_points_at_the_logdrain() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        assert_eq!(owner.reference.kind, "LogDrain");
        assert_eq!(owner.reference.api_version, "drainpipe.dev/v1alpha1");
        assert_eq!(owner.reference.controller, Some(true));
        let svc = service(&owner, &ld);
        assert_eq!(svc.metadata.owner_references, Some(vec![owner.reference]));
        assert_eq!(svc.metadata.name.as_deref(), Some("prod-ingester"));
    }

    #[test]
    fn deployment_runs_the_ingester_against_the_archive() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let d = deployment(&owner, &ld, &defaults());
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("template labels");
        for (k, v) in spec.selector.match_labels.as_ref().expect("selector") {
            assert_eq!(
                template_labels.get(k),
                Some(v),
                "template lacks selector label {k}"
            );
        }
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/drainpipe/ingester:0.1.0"));
        let args = c.args.clone().expect("args").join(" ");
        assert!(args.contains("--listen 0.0.0.0:8080"), "{args}");
        assert!(
            args.contains("--routes /etc/drainpipe/routes.yaml"),
            "{args}"
        );
        assert!(args.contains("--archive s3://logs-bucket/logs/"), "{args}");
        assert!(args.contains(&format!("--wal-max-bytes {}", (1u64 << 30) / 10 * 8)));
        let env = c.env.clone().expect("env");
        assert!(
            env.iter().any(|e| e.name == "AWS_ENDPOINT_URL_S3"
                && e.value.as_deref() == Some("http://minio:9000"))
        );
        let readiness = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
        assert_eq!(readiness.and_then(|h| h.path.as_deref()), Some("/readyz"));
        let volumes = pod.volumes.expect("volumes");
        assert_eq!(
            volumes[0]
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("prod-routes")
        );
    }

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
    fn grpc_telemetry_drains_open_the_otlp_grpc_port_with_the_tls_secret() {
        let mut ld = logdrain();
        let args_of = |ld: &LogDrain| {
            let owner = Owner::of(ld).expect("owner");
            let d = deployment(&owner, ld, &defaults());
            let pod = d.spec.and_then(|s| s.template.spec).expect("pod");
            (pod.containers[0].args.clone().expect("args").join(" "), pod)
        };
        // OTLP/HTTP (the default) shares port 8080: no extra listener.
        assert!(!args_of(&ld).0.contains("otlp-grpc"));

        ld.spec.endpoint = serde_json::from_value(json!({
            "url": "https://logs.example.com",
            "otlpTransport": "grpc",
            "otlpGrpc": "otlp.example.com:443",
        }))
        .expect("endpoint");
        ld.spec.ingester.otlp_grpc = Some(crate::crd::IngesterOtlpGrpc {
            port: 4317,
            tls_secret_name: Some("otlp-tls".to_string()),
        });
        let (args, pod) = args_of(&ld);
        assert!(args.contains("--otlp-grpc-listen 0.0.0.0:4317 --otlp-grpc-tls-cert /etc/drainpipe-otlp-grpc-tls/tls.crt --otlp-grpc-tls-key /etc/drainpipe-otlp-grpc-tls/tls.key"), "{args}");
        assert!(!args.contains("--syslog"), "{args}");
        let ports = pod.containers[0].ports.clone().expect("ports");
        assert!(
            ports
                .iter()
                .any(|p| p.name.as_deref() == Some("otlp-grpc") && p.container_port == 4317)
        );
        let mounted = pod.containers[0]
            .volume_mounts
            .clone()
            .expect("mounts")
            .iter()
            .any(|m| m.name == "otlp-grpc-tls" && m.mount_path == OTLP_GRPC_TLS_DIR);
        assert!(mounted);
        let tls = pod
            .volumes
            .expect("volumes")
            .iter()
            .find(|v| v.name == "otlp-grpc-tls")
            .and_then(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.clone());
        assert_eq!(tls.as_deref(), Some("otlp-tls"));
        let owner = Owner::of(&ld).expect("owner");
        let svc_ports = service(&owner, &ld)
            .spec
            .and_then(|s| s.ports)
            .expect("service ports");
        assert!(svc_ports.iter().any(|p| p.port == 4317
            && p.target_port == Some(IntOrString::String("otlp-grpc".to_string()))));
    }

    #[test]
    fn syslog_drains_open_the_syslog_port_with_the_tls_secret() {
        let mut ld = logdrain();
        ld.spec.endpoint = serde_json::from_value(json!({"syslogTls": "logs.example.com:6514"}))
            .expect("endpoint");
        ld.spec.ingester.syslog = Some(crate::crd::IngesterSyslog {
            port: 6514,
            tls_secret_name: Some("logs-tls".to_string()),
        });
        let owner = Owner::of(&ld).expect("owner");
        let d = deployment(&owner, &ld, &defaults());
        let pod = d.spec.and_then(|s| s.template.spec).expect("pod");
        let c = &pod.containers[0];
        let args = c.args.clone().expect("args").join(" ");
        assert!(args.contains("--syslog-listen 0.0.0.0:6514"), "{args}");
        assert!(
            args.contains("--syslog-tls-cert /etc/drainpipe-syslog-tls/tls.crt --syslog-tls-key /etc/drainpipe-syslog-tls/tls.key"),
            "{args}"
        );
        let ports = c.ports.clone().expect("ports");
        assert!(
            ports
                .iter()
                .any(|p| p.name.as_deref() == Some("syslog") && p.container_port == 6514)
        );
        let volumes = pod.volumes.expect("volumes");
        let tls = volumes
            .iter()
            .find(|v| v.name == "syslog-tls")
            .and_then(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.as_deref());
        assert_eq!(tls, Some("logs-tls"));
        let svc_ports = service(&owner, &ld)
            .spec
            .and_then(|s| s.ports)
            .expect("service ports");
        assert!(
            svc_ports.iter().any(|p| p.port == 6514
                && p.target_port == Some(IntOrString::String("syslog".to_string())))
        );

        // TLS terminated in front: plain TCP, no certificate flags.
        ld.spec.ingester.syslog = None;
        let d = deployment(&owner, &ld, &defaults());
        let args = d
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod")
            .containers[0]
            .args
            .clone()
            .expect("args")
            .join(" ");
        assert!(args.contains("--syslog-listen 0.0.0.0:6514"), "{args}");
        assert!(!args.contains("--syslog-tls"), "{args}");
    }

    #[test]
    fn the_ingress_routes_only_logplex_and_otlp_to_the_service_with_tls() {
        let mut ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        assert!(ingress(&owner, &ld).is_none());
        ld.spec.endpoint.url = None;
        ld.spec.endpoint.ingress = Some(
            serde_json::from_value(serde_json::json!({
                "className": "nginx",
                "host": "logs.example.com",
                "tls": {"secretName": "logs-tls"},
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            }))
            .expect("ingress spec"),
        );
        let ing = ingress(&owner, &ld).expect("ingress");
        assert_eq!(ing.metadata.name.as_deref(), Some("prod-ingester"));
        assert_eq!(
            ing.metadata
                .annotations
                .as_ref()
                .map(|a| a["cert-manager.io/cluster-issuer"].as_str()),
            Some("letsencrypt")
        );
        let spec = ing.spec.expect("spec");
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rule = &spec.rules.expect("rules")[0];
        assert_eq!(rule.host.as_deref(), Some("logs.example.com"));
        let paths = &rule.http.as_ref().expect("http").paths;
        let routed: Vec<&str> = paths.iter().filter_map(|p| p.path.as_deref()).collect();
        assert_eq!(routed, ["/logplex", "/otlp"]);
        let path = &paths[0];
        let svc = path.backend.service.as_ref().expect("service backend");
        assert_eq!(svc.name, "prod-ingester");
        let tls = &spec.tls.expect("tls")[0];
        assert_eq!(tls.secret_name.as_deref(), Some("logs-tls"));
        assert_eq!(
            tls.hosts.as_deref(),
            Some(&["logs.example.com".to_string()][..])
        );
    }

    #[test]
    fn https_drains_run_no_syslog_listener() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let d = deployment(&owner, &ld, &defaults());
        let c = &d
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod")
            .containers[0];
        assert!(!c.args.clone().expect("args").join(" ").contains("syslog"));
        assert_eq!(c.ports.as_ref().map(Vec::len), Some(1));
        let svc_ports = service(&owner, &ld)
            .spec
            .and_then(|s| s.ports)
            .expect("ports");
        assert_eq!(svc_ports.len(), 1);
    }

    fn with_claim(class: Option<&str>) -> LogDrain {
        let mut ld = logdrain();
        let mut claim = json!({"size": "10Gi"});
        if let Some(class) = class {
            claim["storageClassName"] = json!(class);
        }
        ld.spec.ingester.buffer_storage.persistent_volume_claim =
            Some(serde_json::from_value(claim).expect("claim"));
        ld
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

    #[test]
    fn pods_sleep_before_sigterm_and_get_time_to_upload_a_full_buffer() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let pod = pod_of(deployment(&owner, &ld, &defaults()));
        let sleep = pod.containers[0]
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .map(|s| s.seconds);
        assert_eq!(sleep, Some(PRE_STOP_SECONDS));
        // 1Gi emptyDir: 80% is 858993459 bytes, 52 s at 16 MiB/s.
        assert_eq!(pod.termination_grace_period_seconds, Some(10 + 30 + 52));

        assert_eq!(grace_period_seconds(Some(0)), 40);
        assert_eq!(grace_period_seconds(Some(1)), 41);
        assert_eq!(grace_period_seconds(Some(16 << 20)), 41);
        // The default 2Gi emptyDir.
        assert_eq!(grace_period_seconds(Some((2u64 << 30) / 10 * 8)), 143);
        assert_eq!(grace_period_seconds(None), 120);
        // A 100Gi claim: the grace period follows the buffer.
        let big = (100u64 << 30) / 10 * 8;
        assert_eq!(grace_period_seconds(Some(big)), 40 + 5120);
        let mut ld = with_claim(None);
        ld.spec.ingester.buffer_storage.persistent_volume_claim =
            Some(serde_json::from_value(json!({"size": "100Gi"})).expect("claim"));
        let pod = pod_of(deployment(&owner, &ld, &defaults()));
        assert_eq!(pod.termination_grace_period_seconds, Some(40 + 5120));
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

    #[test]
    fn selector_string_matches_the_labels() {
        assert_eq!(
            selector_string("prod"),
            "app.kubernetes.io/instance=prod,app.kubernetes.io/name=drainpipe-ingester"
        );
    }

    #[test]
    fn passwords_are_long_random_and_url_safe() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("2Gi"), Some(2 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1024"), Some(1024));
        assert_eq!(quantity_bytes("1.5Gi"), None);
        assert_eq!(quantity_bytes("1e9"), None);
    }

    #[test]
    fn secret_values_read_back() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let s = password_secret(&owner, "hunter2hunter2".to_string());
        assert_eq!(s.metadata.name.as_deref(), Some("prod-drain-password"));
        assert_eq!(
            secret_value(&s, PASSWORD_KEY).as_deref(),
            Some("hunter2hunter2")
        );
        assert_eq!(secret_value(&s, "other"), None);
    }
}
