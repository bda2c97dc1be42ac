//! Where the logs go and how they are found again: the S3 archive
//! (`spec.archive`) with its lifecycle rule, and the Glue catalog table
//! (`spec.catalog`).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
