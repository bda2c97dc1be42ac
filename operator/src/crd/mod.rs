//! The `LogDrain` custom resource (`drainpipe.dev/v1alpha1`).
//!
//! The doc comments on these types become the CRD's OpenAPI descriptions, so
//! they are written for `kubectl explain` readers, not for Rust readers.

use std::collections::{BTreeMap, BTreeSet};

use drainpipe_contract::app::APP_NAME_PATTERN;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// Where Heroku reaches the ingester: set exactly one of `url` (HTTPS
/// drains) and `syslogTls` (syslog+tls drains).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.url) || has(self.ingress)) != has(self.syslogTls)").message("set exactly one of endpoint.url or endpoint.ingress (HTTPS drains) and endpoint.syslogTls (syslog+tls drains)"))]
#[x_kube(validation = Rule::new("!has(self.otlpTransport) || self.otlpTransport != 'grpc' || has(self.otlpGrpc)").message("otlpTransport grpc needs otlpGrpc, the host:port of the ingester's OTLP/gRPC listener"))]
pub struct EndpointSpec {
    /// Public HTTPS base URL of the ingester as Heroku sees it (an Ingress or
    /// load balancer in front of the ingester Service), without a trailing
    /// slash, credentials, query or fragment, e.g.
    /// `https://logs.example.com`. Each app's drain is
    /// `{url}/logplex/{app}` with the drain password added by drainpipe.
    /// Leave it out when `syslogTls` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 200))]
    #[x_kube(validation = Rule::new("self.matches('^https://[^/@?#\\\\s]+(/[^@?#\\\\s]*[^/@?#\\\\s])?$')").message("must be an https:// URL without credentials, query, fragment or trailing slash, e.g. https://logs.example.com"))]
    pub url: Option<String>,

    /// `host:port` where Heroku reaches the ingester's syslog listener over
    /// TLS, without a scheme, e.g. `logs.example.com:6514`: a LoadBalancer
    /// Service (or TCP proxy) in front of the ingester pods' `syslog` port,
    /// see `ingester.syslog`. Each app's drain is then
    /// `syslog+tls://{syslogTls}`, carrying no credentials: the ingester
    /// tells apps apart by the drain token Logplex sends as the syslog
    /// HOSTNAME, and drops messages whose token it does not know. The
    /// ingester learns each token from the routes Secret once Heroku has
    /// made the drain, so a new app's first messages (before the Secret
    /// reaches the pods, about a minute) are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 261))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$') && int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535").message("must be host:port (a DNS name or IPv4 address, and a port from 1 to 65535) without a scheme, e.g. logs.example.com:6514"))]
    pub syslog_tls: Option<String>,

    /// An Ingress the operator creates for the ingester Service (owned by
    /// the LogDrain, removed with this field), routing `/logplex` on `host`
    /// to it. `url` then defaults to `https://{host}`. Heroku drains only to
    /// HTTPS with a certificate it trusts: name a TLS Secret, e.g. one
    /// cert-manager fills through a `cert-manager.io/cluster-issuer`
    /// annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<EndpointIngress>,

    /// How the telemetry drains of Fir apps reach the ingester (Fir apps
    /// have no Logplex drains; drainpipe reads each app's generation from
    /// Heroku): `http` (default) registers an OTLP/HTTP drain to
    /// `{url}/otlp/{app}`, `grpc` an OTLP/gRPC drain to `otlpGrpc`. Either
    /// carries the header `Authorization: Bearer <drain password>`; gRPC
    /// drains also `X-Drainpipe-App: <app>`. Cedar apps are not affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_transport: Option<OtlpTransport>,

    /// `host:port` where Heroku reaches the ingester's OTLP/gRPC listener,
    /// e.g. `logs.example.com:4317`; used when `otlpTransport` is `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 261))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$')").message("must be host:port without a scheme, e.g. logs.example.com:4317"))]
    pub otlp_grpc: Option<String>,
}

/// How the telemetry drains of Fir apps reach the ingester (Fir apps have no
/// Logplex drains; drainpipe reads each app's generation from Heroku):
/// `http` (default) registers an OTLP/HTTP drain to `{url}/otlp/{app}`,
/// `grpc` an OTLP/gRPC drain to `otlpGrpc`. Either carries the header
/// `Authorization: Bearer <drain password>`; gRPC drains also
/// `X-Drainpipe-App: <app>`. Cedar apps are not affected.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum OtlpTransport {
    /// OTLP/HTTP (Heroku's `otlphttp` exporter) to `{url}/otlp/{app}`.
    #[default]
    Http,
    /// OTLP/gRPC (Heroku's `otlp` exporter) to `otlpGrpc`.
    Grpc,
}

/// The Ingress in front of the ingester Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointIngress {
    /// IngressClass to use (`spec.ingressClassName`); omit for the
    /// cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// Public DNS name Heroku sends to, e.g. `logs.example.com`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
    )]
    pub host: String,
    /// TLS for `host`; omit only when something in front of the Ingress
    /// controller terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
    /// Annotations of the Ingress, e.g.
    /// `cert-manager.io/cluster-issuer: letsencrypt` or the controller's
    /// own settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The certificate the Ingress serves for its host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    /// A `kubernetes.io/tls` Secret in the LogDrain's namespace (cert-manager
    /// creates it when the Ingress carries its issuer annotation).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// What each app's Heroku drain sends to, from `spec.endpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainTarget {
    /// `{url}/logplex/{app}`, with the drain password as credentials.
    Https { url: String },
    /// `syslog+tls://{address}` for every app, without credentials.
    SyslogTls { address: String },
}

impl DrainTarget {
    /// An app's drain URL as the status shows it (no credentials).
    pub fn public_url(&self, app: &str) -> String {
        match self {
            DrainTarget::Https { url } => format!("{}/logplex/{app}", url.trim_end_matches('/')),
            DrainTarget::SyslogTls { address } => format!("syslog+tls://{address}"),
        }
    }

    /// Whether the drain URL carries the drain password (so rotating the
    /// password replaces the drains).
    pub fn carries_password(&self) -> bool {
        matches!(self, DrainTarget::Https { .. })
    }

    /// `https://host/logplex/<app>` or `syslog+tls://host:port`, for
    /// messages.
    pub fn describe(&self) -> String {
        self.public_url("<app>")
    }
}

/// Where each Fir app's telemetry drain sends, from `spec.endpoint`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OtlpTarget {
    /// OTLP/HTTP to `{url}/otlp/{app}`.
    Http { url: String },
    /// OTLP/gRPC to `address` (`host:port`) for every app.
    Grpc { address: String },
}

impl OtlpTarget {
    /// An app's telemetry drain endpoint (it carries no credentials).
    pub fn endpoint(&self, app: &str) -> String {
        match self {
            OtlpTarget::Http { url } => format!("{}/otlp/{app}", url.trim_end_matches('/')),
            OtlpTarget::Grpc { address } => address.clone(),
        }
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            OtlpTarget::Http { .. } => format!("OTLP/HTTP {}", self.endpoint("<app>")),
            OtlpTarget::Grpc { address } => format!("OTLP/gRPC {address}"),
        }
    }
}

impl EndpointSpec {
    /// Where Fir apps' telemetry drains send: `None` for OTLP/HTTP without
    /// an HTTPS endpoint (`syslogTls` only), or gRPC without `otlpGrpc`.
    pub fn otlp_target(&self) -> Option<OtlpTarget> {
        match self.otlp_transport.unwrap_or_default() {
            OtlpTransport::Grpc => self
                .otlp_grpc
                .clone()
                .map(|address| OtlpTarget::Grpc { address }),
            OtlpTransport::Http => match self.target()? {
                DrainTarget::Https { url } => Some(OtlpTarget::Http { url }),
                DrainTarget::SyslogTls { .. } => None,
            },
        }
    }

    /// The drain target, `None` unless exactly one of `url` and `syslogTls`
    /// is set (the schema enforces that; objects stored before it did may
    /// not).
    pub fn target(&self) -> Option<DrainTarget> {
        let https = self
            .url
            .clone()
            .or_else(|| self.ingress.as_ref().map(|i| format!("https://{}", i.host)));
        match (https, &self.syslog_tls) {
            (Some(url), None) => Some(DrainTarget::Https { url }),
            (None, Some(address)) => Some(DrainTarget::SyslogTls {
                address: address.clone(),
            }),
            _ => None,
        }
    }
}

/// Where the ingester archives the logs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSpec {
    /// An S3 (or S3-compatible) bucket.
    pub s3: S3Archive,
}

/// An S3 archive location.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.lifecycle) || size(self.prefix) <= 245").message("with lifecycle set, prefix is at most 245 characters: the rule id drainpipe:{prefix} must fit S3's 255"))]
pub struct S3Archive {
    /// Bucket name. drainpipe does not create it.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix for the archive, empty or ending in `/`; objects are
    /// `{prefix}{app}/{YYYY}/{MM}/{DD}/...json.gz`.
    #[serde(default = "default_prefix")]
    #[schemars(regex(pattern = r"^([^/\s]\S*/)?$"), length(max = 512))]
    pub prefix: String,
    /// AWS region of the bucket, e.g. `eu-west-1`.
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: String,
    /// S3 endpoint URL for S3-compatible stores (MinIO, ...); omit for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^/@?#\s]+(/\S*)?$"))]
    pub endpoint: Option<String>,
    /// Retention of the archive: the operator keeps one S3 lifecycle rule
    /// for `prefix` on the bucket (id `drainpipe:{prefix}`), next to the
    /// bucket's other rules, which it never changes. Omit to manage none
    /// (removing it removes the rule drainpipe made). Needs
    /// `s3:GetLifecycleConfiguration` and `s3:PutLifecycleConfiguration` on
    /// the bucket for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<S3Lifecycle>,
}

/// An S3 lifecycle rule over the LogDrain's prefix, e.g. `transitionDays:
/// 90` (Glacier Flexible Retrieval from day 90) and `expireDays: 365`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.transitionDays) || has(self.expireDays)").message("set transitionDays, expireDays or both"))]
#[x_kube(validation = Rule::new("!has(self.transitionDays) || !has(self.expireDays) || self.expireDays > self.transitionDays").message("expireDays must be later than transitionDays"))]
pub struct S3Lifecycle {
    /// Days after creation when objects move to `storageClass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub transition_days: Option<i32>,
    /// Storage class objects move to after `transitionDays` (default
    /// `GLACIER`, Glacier Flexible Retrieval). Athena cannot read `GLACIER`
    /// or `DEEP_ARCHIVE` objects without restoring them first.
    #[serde(default)]
    pub storage_class: StorageClass,
    /// Days after creation when objects are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub expire_days: Option<i32>,
}

/// An S3 storage class a lifecycle rule can transition objects to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StorageClass {
    /// Glacier Flexible Retrieval.
    #[default]
    Glacier,
    /// Glacier Deep Archive.
    DeepArchive,
    /// Glacier Instant Retrieval (Athena reads it directly).
    GlacierIr,
    /// Standard-Infrequent Access (30 days at least).
    StandardIa,
    /// One Zone-Infrequent Access (30 days at least).
    OnezoneIa,
    /// Intelligent-Tiering.
    IntelligentTiering,
}

fn default_prefix() -> String {
    "logs/".to_string()
}

/// The query catalog kept in step with the archive.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CatalogSpec {
    /// An AWS Glue Data Catalog table (what Athena queries).
    pub glue: GlueCatalog,
}

/// An AWS Glue table with partition projection over the archive.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GlueCatalog {
    /// Glue database name (lowercase letters, digits, underscores).
    #[schemars(regex(pattern = r"^[a-z0-9_]{1,255}$"))]
    pub database: String,
    /// Glue table name (lowercase letters, digits, underscores). Several
    /// LogDrains may share one table when they archive to the same location;
    /// its app list is then the union of theirs.
    #[schemars(regex(pattern = r"^[a-z0-9_]{1,255}$"))]
    pub table: String,
    /// AWS region of the Glue catalog, e.g. `eu-west-1`.
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: String,
    /// Create the database and table when missing (default true). When
    /// false, the table must exist and drainpipe only adds apps to its
    /// `projection.app.values`.
    #[serde(default = "default_true")]
    pub manage_table: bool,
}

fn default_true() -> bool {
    true
}

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

/// What happens to the Heroku drains when the LogDrain is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Remove the drains drainpipe created.
    Delete,
    /// Leave the drains registered with Heroku.
    #[default]
    Retain,
}

/// Observed state of a LogDrain.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogDrainStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `DrainsRegistered`, `CatalogSynced` and `IngesterAvailable`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The Heroku drains drainpipe created, one per app.
    #[serde(default)]
    pub drains: Vec<DrainStatus>,
    /// Number of apps in the spec.
    #[serde(default)]
    pub app_count: i32,
    /// Ingester pods (scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Ingester pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the ingester pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// When the newest archive object of any app was stored, as the
    /// ingester pods report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_object_at: Option<Time>,
    /// Per app, when its newest archive object was stored (apps the running
    /// ingester pods have archived since they started).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_objects: Vec<AppLastObject>,
}

/// The newest archive object of one app.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AppLastObject {
    /// Heroku app name.
    pub app: String,
    /// When its newest object was stored.
    pub last_object_at: Time,
}

/// Which kind of Heroku drain an app has.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum DrainKind {
    /// A Logplex log drain (Cedar apps; `heroku drains`).
    #[default]
    Log,
    /// A telemetry drain, logs only (Fir apps; `heroku telemetry`).
    Telemetry,
}

/// One Heroku drain drainpipe created.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrainStatus {
    /// Heroku app name.
    pub app: String,
    /// The app's Heroku generation, `cedar` or `fir`, as Heroku's App Info
    /// said when drainpipe first saw the app (it is asked again only when
    /// the app id changes or Heroku refuses the drain kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// `log` (a Logplex drain, `heroku drains`) or `telemetry` (a telemetry
    /// drain, `heroku telemetry`).
    #[serde(default)]
    pub kind: DrainKind,
    /// Heroku app id (`heroku apps:info --json` shows it). drainpipe
    /// addresses the app by this id once known, so a rename on Heroku does
    /// not lose the drain; when `spec.apps` then names the app by its new
    /// name, the same app's drain is replaced by one to the new name's URL,
    /// never duplicated or left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Heroku drain id (`heroku drains --json` or `heroku telemetry`
    /// shows it).
    pub id: String,
    /// Drain token Logplex sends in `Logplex-Drain-Token` (log drains only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// The drain URL without its credentials, or the telemetry drain's
    /// endpoint.
    pub url: String,
}

impl LogDrain {
    /// Apps in the spec, deduplicated (the API server already rejects
    /// duplicates; this keeps the operator correct on objects written before
    /// the CRD had that rule).
    pub fn app_set(&self) -> BTreeSet<String> {
        self.spec.apps.iter().cloned().collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn crd_json() -> Value {
        serde_json::to_value(LogDrain::crd()).expect("crd serializes")
    }

    fn spec_schema(crd: &Value) -> &Value {
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    }

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
    fn endpoint_url_has_a_cel_rule_with_a_message() {
        let crd = crd_json();
        let url = &spec_schema(&crd)["properties"]["endpoint"]["properties"]["url"];
        let rules = url["x-kubernetes-validations"].as_array().expect("rules");
        assert_eq!(rules.len(), 1);
        assert!(
            rules[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("https://")
        );
    }

    #[test]
    fn endpoint_takes_exactly_one_transport_and_syslog_needs_it() {
        let crd = crd_json();
        let endpoint = &spec_schema(&crd)["properties"]["endpoint"];
        let rules = endpoint["x-kubernetes-validations"]
            .as_array()
            .expect("endpoint rules");
        assert_eq!(
            rules[0]["rule"],
            "(has(self.url) || has(self.ingress)) != has(self.syslogTls)"
        );
        let required = endpoint["required"].as_array().cloned().unwrap_or_default();
        assert!(required.is_empty(), "{required:?}");
        let syslog = &endpoint["properties"]["syslogTls"];
        assert!(
            syslog["x-kubernetes-validations"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("host:port")
        );
        let spec_rules = spec_schema(&crd)["x-kubernetes-validations"]
            .as_array()
            .expect("spec rules");
        assert!(
            spec_rules[0]["rule"]
                .as_str()
                .unwrap_or("")
                .contains("has(self.endpoint.syslogTls)")
        );
        let port = &spec_schema(&crd)["properties"]["ingester"]["properties"]["syslog"]["properties"]
            ["port"];
        assert_eq!(port["default"], 6514);
    }

    #[test]
    fn targets_and_the_syslog_listener_follow_the_endpoint() {
        let base = json!({
            "apps": ["my-app"],
            "heroku": {"apiTokenSecretRef": {"name": "heroku", "key": "token"}},
            "endpoint": {"url": "https://logs.example.com"},
            "archive": {"s3": {"bucket": "logs-bucket", "region": "eu-west-1"}},
        });
        let https: LogDrainSpec = serde_json::from_value(base.clone()).expect("https spec");
        let ld = LogDrain::new("a", https);
        assert_eq!(
            ld.spec.endpoint.target().map(|t| t.public_url("my-app")),
            Some("https://logs.example.com/logplex/my-app".to_string())
        );
        assert_eq!(ld.syslog_listener(), None);

        let mut syslog = base;
        syslog["endpoint"] = json!({"syslogTls": "logs.example.com:6514"});
        let ld = LogDrain::new("b", serde_json::from_value(syslog).expect("syslog spec"));
        let target = ld.spec.endpoint.target().expect("target");
        assert_eq!(
            target.public_url("my-app"),
            "syslog+tls://logs.example.com:6514"
        );
        assert!(!target.carries_password());
        assert_eq!(ld.syslog_listener(), Some(IngesterSyslog::default()));
        assert_eq!(IngesterSyslog::default().port, 6514);

        let ingress: EndpointSpec =
            serde_json::from_value(json!({"ingress": {"host": "logs.example.com"}}))
                .expect("ingress");
        assert_eq!(
            ingress.target().map(|t| t.public_url("my-app")),
            Some("https://logs.example.com/logplex/my-app".to_string())
        );

        let both: EndpointSpec = serde_json::from_value(
            json!({"url": "https://logs.example.com", "syslogTls": "logs.example.com:6514"}),
        )
        .expect("both");
        assert_eq!(both.target(), None);
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

    #[test]
    fn crd_yaml_round_trips() {
        let yaml = crd_yaml().expect("yaml");
        assert!(yaml.starts_with("apiVersion: apiextensions.k8s.io/v1\n"));
        let back: Value = serde_yaml::from_str(&yaml).expect("parses");
        assert_eq!(back, crd_json());
    }
}
