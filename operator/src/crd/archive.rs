//! Where the logs go and how they are found again: the S3 archive
//! (`spec.archive`) with its lifecycle rule, and the Glue catalog table
//! (`spec.catalog`).

use drainpipe_contract::schema::ArchiveFormat;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the ingester archives the logs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSpec {
    /// An S3 (or S3-compatible) bucket.
    pub s3: S3Archive,
    /// How archive objects are encoded: `json` (default; gzip JSON lines
    /// under `{prefix}{app}/...`) or `parquet` (Apache Parquet under
    /// `{prefix}format=parquet/{app}/...`, a folder of its own because
    /// Athena reads every object of a table with one SerDe). The Glue table
    /// a drainpipe-managed catalog keeps is switched to the format's SerDe
    /// and folder; objects already written stay where they are (see
    /// `compaction`, which converts closed JSON days into Parquet).
    #[serde(default)]
    pub format: Format,
    /// Merges each closed day's small objects into few large ones (and,
    /// with `format: parquet`, converts closed JSON days), run by a
    /// CronJob `<name>-compaction` with the ingester image. Omit to run
    /// none (removing it deletes the CronJob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionSpec>,
}

/// The encoding of archive objects (`spec.archive.format`), the CRD's
/// spelling of the contract's `ArchiveFormat` (which carries no schema).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// gzip JSON lines, read through the OpenX JSON SerDe.
    #[default]
    Json,
    /// Apache Parquet (ZSTD), read through Hive's Parquet SerDe.
    Parquet,
}

impl From<Format> for ArchiveFormat {
    fn from(f: Format) -> ArchiveFormat {
        match f {
            Format::Json => ArchiveFormat::Json,
            Format::Parquet => ArchiveFormat::Parquet,
        }
    }
}

impl From<ArchiveFormat> for Format {
    fn from(f: ArchiveFormat) -> Format {
        match f {
            ArchiveFormat::Json => Format::Json,
            ArchiveFormat::Parquet => Format::Parquet,
        }
    }
}

/// The smallest and largest `compaction.targetSize`: below 16 MiB the
/// merged objects stay small for Athena; above 1 GiB the compactor's
/// memory (about one output object and one input) outgrows a small node.
pub const TARGET_SIZE_MIN: u64 = 16 << 20;
pub const TARGET_SIZE_MAX: u64 = 1 << 30;

/// When and how the archive is compacted (`spec.archive.compaction`).
///
/// Each run (`drainpipe-ingester compact`) looks at every closed UTC day
/// of every app (a day is closed `grace` after its midnight), merges its
/// objects into objects of about `targetSize`, checks that the merged
/// objects hold as many records as their inputs, and only then deletes the
/// inputs. A run killed at any point and run again leaves every record
/// exactly once. Its outcome is `status.compaction` and the condition
/// `CompactionSucceeded`, which never affects `Ready`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CompactionSpec {
    /// When runs start, in cron syntax (five fields, or `@daily`,
    /// `@hourly`...) read in UTC (default `17 3 * * *`, 03:17 UTC every
    /// day). A run still going when the next is due makes that one wait
    /// (`concurrencyPolicy: Forbid`).
    #[serde(default = "default_schedule")]
    #[schemars(
        length(max = 100),
        regex(
            pattern = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|([0-9A-Za-z*?/,-]+ +){4}[0-9A-Za-z*?/,-]+)$"
        )
    )]
    pub schedule: String,
    /// Size of the merged objects, from `16MiB` to `1GiB` (default
    /// `128MiB`; `MiB`, `GiB`, `MB` or `GB`). A day smaller than this
    /// becomes one object.
    #[serde(default = "default_target_size")]
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]{1,5}(MiB|GiB|MB|GB)$"))]
    #[x_kube(validation = Rule::new("[int(self.substring(0, size(self) - (self.endsWith('iB') ? 3 : 2))) * (self.endsWith('GiB') ? 1073741824 : self.endsWith('MiB') ? 1048576 : self.endsWith('GB') ? 1000000000 : 1000000)].all(n, n >= 16777216 && n <= 1073741824)").message("targetSize must be from 16MiB to 1GiB"))]
    pub target_size: String,
    /// How long after a UTC day's midnight the day counts as closed
    /// (default `2h`; `90m`, `6h`...): late messages and ingesters still
    /// uploading their write-ahead log may add objects to yesterday until
    /// then. A day with objects newer than this is left for the next run.
    #[serde(default = "default_grace")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub grace: String,
    /// Stop scheduling runs (default false); a run already going finishes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// CPU and memory of the compaction pod. Without it: a request of
    /// 100m CPU and `targetSize` + 128 MiB of memory, and a memory limit of
    /// twice `targetSize` + 256 MiB (the compactor holds about one output
    /// object and one input in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for CompactionSpec {
    fn default() -> Self {
        CompactionSpec {
            schedule: default_schedule(),
            target_size: default_target_size(),
            grace: default_grace(),
            suspend: false,
            resources: None,
        }
    }
}

fn default_schedule() -> String {
    "17 3 * * *".to_string()
}

fn default_target_size() -> String {
    "128MiB".to_string()
}

fn default_grace() -> String {
    "2h".to_string()
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
    /// `{prefix}{app}/{YYYY}/{MM}/{DD}/...json.gz` (with `format: parquet`,
    /// `{prefix}format=parquet/{app}/{YYYY}/{MM}/{DD}/...parquet`).
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
