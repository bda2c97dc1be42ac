//! The Kubernetes objects a LogDrain owns: the drain password Secret, the
//! routes Secret, the ingester Deployment and its Service. Pure builders:
//! the controller applies them with server-side apply.
//!
//! This module keeps what every builder shares: the names, labels and
//! owner of the objects, the paths and ports inside the ingester pod, and
//! the two Secrets. The workloads and the rest live in its files: the
//! ingester pod (`pod`), the operator-wide pod settings (`defaults`), the
//! buffer's bound and the stop sequence (`grace`), the StatefulSet of a
//! buffer claim and its flush Jobs (`buffer`), the Service and Ingress
//! (`networking`), and the autoscaler and disruption budget (`scaling`).

use std::collections::BTreeMap;

use drainpipe_contract::routes::RoutesFile;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::crd::LogDrain;

mod buffer;
mod compaction;
mod defaults;
mod grace;
mod networking;
mod pod;
mod scaling;

#[cfg(test)]
pub(crate) use buffer::buffer_claim_name;
pub(crate) use buffer::{FLUSH_CLAIM_ANNOTATION, buffer_claim_ordinal, flush_job, statefulset};
pub(crate) use compaction::{
    COMPACT_CONTAINER, compaction_cronjob, compaction_name, compaction_selector,
};
pub use defaults::{IngesterDefaults, IngesterPodDefaults, PullPolicy};
pub(crate) use grace::quantity_bytes;
pub(crate) use networking::{ingress, service};
pub(crate) use pod::deployment;
pub(crate) use scaling::{horizontal_pod_autoscaler, pod_disruption_budget, workload_kind};

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
/// Name of the write-ahead log's volume (the emptyDir, or the StatefulSet's
/// claim template, whose claims are `buffer-<name>-ingester-N`).
pub(crate) const BUFFER_VOLUME: &str = "buffer";

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

/// `{base}{suffix}` when it fits in `max` characters, else the start of
/// `base`, a digest of all of it and `suffix`: names that are also label
/// values (63) or that Kubernetes extends (a CronJob's, 52) stay unique
/// and the same from every operator build.
pub(crate) fn bounded_name(base: &str, suffix: &str, max: usize) -> String {
    let name = format!("{base}{suffix}");
    if name.len() <= max {
        return name;
    }
    // FNV-1a: the same name from every operator build.
    let digest = base.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let head: String = base
        .chars()
        .take(max.saturating_sub(suffix.len() + 13))
        .collect();
    format!("{}-{digest:08x}{suffix}", head.trim_end_matches('-'))
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

/// `s3://bucket/prefix` as the ingester's `--archive` takes it.
pub(crate) fn archive_url(ld: &LogDrain) -> String {
    let s3 = &ld.spec.archive.s3;
    format!("s3://{}/{}", s3.bucket, s3.prefix)
}
/// Serializes routes for the routes Secret.
pub(crate) fn routes_yaml(
    routes: &RoutesFile,
) -> Result<String, drainpipe_contract::routes::RoutesError> {
    routes.to_yaml()
}

/// What the tests of every file build on: a stored LogDrain and the
/// operator's defaults.
#[cfg(test)]
mod fixtures {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::PodSpec;
    use serde_json::json;

    use super::IngesterDefaults;
    use crate::crd::{LogDrain, LogDrainSpec};

    pub(super) fn logdrain() -> LogDrain {
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

    pub(super) fn defaults() -> IngesterDefaults {
        IngesterDefaults::new("ghcr.io/drainpipe/ingester:0.1.0".to_string())
    }

    pub(super) fn pod_of(d: Deployment) -> PodSpec {
        d.spec.and_then(|s| s.template.spec).expect("pod spec")
    }

    pub(super) fn with_claim(class: Option<&str>) -> LogDrain {
        let mut ld = logdrain();
        let mut claim = json!({"size": "10Gi"});
        if let Some(class) = class {
            claim["storageClassName"] = json!(class);
        }
        ld.spec.ingester.buffer_storage.persistent_volume_claim =
            Some(serde_json::from_value(claim).expect("claim"));
        ld
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::logdrain;
    use super::*;

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
