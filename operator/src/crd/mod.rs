//! The `LogDrain` custom resource (`drainpipe.dev/v1alpha1`).
//!
//! The doc comments on these types become the CRD's OpenAPI descriptions, so
//! they are written for `kubectl explain` readers, not for Rust readers.
//!
//! This module holds the resource itself (`LogDrainSpec`'s top level, the
//! Heroku token reference, the deletion policy) and re-exports the rest
//! from its files, one per section of the spec: `endpoint`, `archive`
//! (with the catalog), `ingester`, `alerts`, and `status`. The CEL rules
//! (`x_kube(validation = ...)`) stay on the types and fields they check.

use std::collections::BTreeSet;

use drainpipe_contract::app::APP_NAME_PATTERN;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod alerts;
mod archive;
mod endpoint;
mod ingester;
mod status;
pub use alerts::{
    AlertGroupKey, AlertMatchSpec, AlertRuleSpec, AlertmanagerSpec, SecretRef, SlackSpec,
    StatusRangeSpec, WebhookSecretRef,
};
pub use archive::{
    ArchiveSpec, CatalogSpec, CompactionSpec, Format, GlueCatalog, S3Archive, S3Lifecycle,
    StorageClass, TARGET_SIZE_MAX, TARGET_SIZE_MIN,
};
pub use endpoint::{
    DrainTarget, EndpointIngress, EndpointSpec, IngressTls, OtlpTarget, OtlpTransport,
};
pub use ingester::{
    AutoscalingMode, BufferClaim, BufferStorage, IngesterAutoscaling, IngesterOtlpGrpc,
    IngesterSpec, IngesterSyslog,
};
pub use status::{
    AppLastObject, CompactionRun, CompactionStatus, DrainKind, DrainStatus, LogDrainStatus,
};

/// The finalizer that holds a deleted LogDrain until its Heroku drains are handled.
pub const FINALIZER: &str = "drainpipe.dev/cleanup";

/// A LogDrain ships the logs of a set of Heroku apps into an S3 archive that
/// Athena can query: drainpipe registers one Heroku drain per app (HTTPS or
/// syslog+tls), runs the ingester that receives them, and keeps the Glue
/// table's partition projection listing every app.
// kube's printcolumn(...) items repeat `type_`/`name` keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "drainpipe.dev",
    version = "v1alpha1",
    kind = "LogDrain",
    plural = "logdrains",
    singular = "logdrain",
    shortname = "ld",
    namespaced,
    status = "LogDrainStatus",
    derive = "PartialEq",
    doc = "LogDrain ships the logs of Heroku apps into an S3 archive queryable with Athena: one Heroku drain per app, an ingester Deployment receiving them, and a Glue table whose partition projection lists every app.",
    scale(
        spec_replicas_path = ".spec.ingester.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Apps",
        type_ = "integer",
        description = "Number of Heroku apps drained",
        json_path = ".status.appCount"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Whether every drain, the catalog and the ingester are in place",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        description = "Why the LogDrain is or is not ready",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Last object",
        type_ = "date",
        description = "When the newest archive object of any app was stored",
        json_path = ".status.lastObjectAt"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.ingester) || !has(self.ingester.syslog) || has(self.endpoint.syslogTls)").message("ingester.syslog configures the listener of syslog+tls drains: set endpoint.syslogTls too, or remove ingester.syslog"))]
pub struct LogDrainSpec {
    /// Heroku app names whose logs this LogDrain archives (Heroku's app-name
    /// rules: 3 to 30 characters, lowercase letters, digits and dashes,
    /// starting with a letter). Each app gets exactly one drain pointing at
    /// the endpoint. Removing an app removes its drain; its archived logs
    /// stay queryable.
    #[schemars(
        length(min = 1, max = 500),
        inner(regex(pattern = APP_NAME_PATTERN))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub apps: Vec<String>,

    /// Access to the Heroku Platform API.
    pub heroku: HerokuSpec,

    /// Where Heroku reaches the ingester.
    pub endpoint: EndpointSpec,

    /// Where the ingester archives the logs.
    pub archive: ArchiveSpec,

    /// The query catalog kept in step with the archive. Omit to manage no
    /// catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogSpec>,

    /// The ingesters that receive the drains (a Deployment, or a
    /// StatefulSet with `bufferStorage.persistentVolumeClaim`).
    #[serde(default)]
    pub ingester: IngesterSpec,

    /// What happens to the Heroku drains when this LogDrain is deleted:
    /// `Delete` removes the drains drainpipe created; `Retain` (default)
    /// leaves them registered (Heroku keeps sending, so point them elsewhere
    /// or remove them by hand). Archived logs and the catalog table are never
    /// deleted by drainpipe.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Emergency stop (default false): `true` removes the Heroku drains this
    /// LogDrain made, so Heroku stops sending, while the ingesters keep
    /// running until what they received is archived and the drain password
    /// is kept; `Ready` is then False with reason `Suspended`. Setting it
    /// back to `false` registers the drains again with the same password.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// Alert rules on the logs: lines matching a rule are grouped and sent
    /// to Slack or Alertmanager by the ingesters, after they are safely in
    /// the write-ahead log (never slowing what Heroku is answered). The
    /// `AlertsReady` condition names each rule that cannot run (a bad
    /// regular expression, a missing Secret, a Slack channel that is gone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub alerts: Vec<AlertRuleSpec>,
}

/// Access to the Heroku Platform API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HerokuSpec {
    /// A Secret in the LogDrain's namespace holding a Heroku API token (for
    /// example from `heroku authorizations:create`) allowed to manage the
    /// apps' log drains. Changing the Secret takes effect on the next call.
    pub api_token_secret_ref: SecretKeySelector,
}

/// A key in a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// What happens to the Heroku drains when the LogDrain is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Remove the drains drainpipe created.
    Delete,
    /// Leave the drains registered with Heroku.
    #[default]
    Retain,
}

impl LogDrain {
    /// Apps in the spec, deduplicated (the API server already rejects
    /// duplicates; this keeps the operator correct on objects written before
    /// the CRD had that rule).
    pub fn app_set(&self) -> BTreeSet<String> {
        self.spec.apps.iter().cloned().collect()
    }

    /// The encoding the ingesters write and the catalog reads.
    pub fn archive_format(&self) -> drainpipe_contract::schema::ArchiveFormat {
        self.spec.archive.format.into()
    }

    /// The Secrets `spec.alerts` reads, each once.
    pub fn alert_secret_names(&self) -> BTreeSet<&str> {
        self.spec
            .alerts
            .iter()
            .flat_map(AlertRuleSpec::secret_names)
            .collect()
    }

    /// The syslog listener the ingester runs: `Some` when the drains are
    /// syslog+tls.
    pub fn syslog_listener(&self) -> Option<IngesterSyslog> {
        matches!(
            self.spec.endpoint.target(),
            Some(DrainTarget::SyslogTls { .. })
        )
        .then(|| self.spec.ingester.syslog.clone().unwrap_or_default())
    }

    /// The OTLP/gRPC listener the ingesters open: only when Fir apps'
    /// telemetry drains are registered over gRPC.
    pub fn otlp_grpc_listener(&self) -> Option<IngesterOtlpGrpc> {
        matches!(
            self.spec.endpoint.otlp_target(),
            Some(OtlpTarget::Grpc { .. })
        )
        .then(|| self.spec.ingester.otlp_grpc.clone().unwrap_or_default())
    }
}

/// The CRD as YAML, as `drainpipe-operator crd` prints it and
/// `crds/logdrain.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&LogDrain::crd())
}

/// What the tests of every file read: the CRD as JSON and its spec schema.
#[cfg(test)]
mod fixtures {
    use kube::CustomResourceExt;
    use serde_json::Value;

    use super::LogDrain;

    pub(super) fn crd_json() -> Value {
        serde_json::to_value(LogDrain::crd()).expect("crd serializes")
    }

    pub(super) fn spec_schema(crd: &Value) -> &Value {
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{crd_json, spec_schema};
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn names_scope_and_subresources() {
        let crd = crd_json();
        assert_eq!(crd["metadata"]["name"], "logdrains.drainpipe.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["ld"]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["subresources"]["status"], json!({}));
        assert_eq!(
            version["subresources"]["scale"],
            json!({
                "specReplicasPath": ".spec.ingester.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector"
            })
        );
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .expect("printer columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(columns, ["Apps", "Ready", "Reason", "Last object", "Age"]);
    }

    #[test]
    fn apps_are_a_non_empty_set_of_heroku_names() {
        let crd = crd_json();
        let apps = &spec_schema(&crd)["properties"]["apps"];
        assert_eq!(apps["minItems"], 1);
        assert_eq!(apps["x-kubernetes-list-type"], "set");
        assert_eq!(apps["items"]["pattern"], APP_NAME_PATTERN);
        let required = spec_schema(&crd)["required"].as_array().expect("required");
        for field in ["apps", "heroku", "endpoint", "archive"] {
            assert!(required.contains(&json!(field)), "{field} required");
        }
    }

    #[test]
    fn every_spec_field_is_documented() {
        fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    let p = format!("{path}.{name}");
                    if prop.get("description").is_none() {
                        missing.push(p.clone());
                    }
                    walk(&p, prop, missing);
                }
            }
            if schema["items"].is_object() {
                walk(&format!("{path}[]"), &schema["items"], missing);
            }
        }
        let crd = crd_json();
        let mut missing = Vec::new();
        walk("spec", spec_schema(&crd), &mut missing);
        // ResourceRequirements comes documented from k8s-openapi.
        assert!(missing.is_empty(), "undocumented fields: {missing:?}");
    }

    #[test]
    fn defaults_are_in_the_schema_and_in_serde() {
        let crd = crd_json();
        let spec = spec_schema(&crd);
        assert_eq!(spec["properties"]["deletionPolicy"]["default"], "Retain");
        assert_eq!(
            spec["properties"]["archive"]["properties"]["s3"]["properties"]["prefix"]["default"],
            "logs/"
        );
        let ld: LogDrainSpec = serde_json::from_value(json!({
            "apps": ["my-app"],
            "heroku": {"apiTokenSecretRef": {"name": "heroku", "key": "token"}},
            "endpoint": {"url": "https://logs.example.com"},
            "archive": {"s3": {"bucket": "logs-bucket", "region": "eu-west-1"}},
            "catalog": {"glue": {"database": "logs", "table": "heroku", "region": "eu-west-1"}}
        }))
        .expect("minimal spec");
        assert_eq!(ld.ingester.replicas, 2);
        assert_eq!(ld.archive.s3.prefix, "logs/");
        assert_eq!(ld.deletion_policy, DeletionPolicy::Retain);
        assert!(ld.catalog.as_ref().is_some_and(|c| c.glue.manage_table));
        assert_eq!(ld.ingester.buffer_storage.size_limit.0, "2Gi");
        assert_eq!(ld.ingester.buffer_storage.persistent_volume_claim, None);
    }

    #[test]
    fn crd_yaml_round_trips() {
        let yaml = crd_yaml().expect("yaml");
        assert!(yaml.starts_with("apiVersion: apiextensions.k8s.io/v1\n"));
        let back: Value = serde_yaml::from_str(&yaml).expect("parses");
        assert_eq!(back, crd_json());
    }
}
