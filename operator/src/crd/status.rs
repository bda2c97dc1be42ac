//! The observed state of a LogDrain (`status`): conditions, the Heroku
//! drains drainpipe made, the scale subresource's counts and the newest
//! archive objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a LogDrain.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogDrainStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `DrainsRegistered`, `CatalogSynced`, `IngesterAvailable`,
    /// `ArchiveFresh` and `ArchiveWritable`; `RetentionApplied` with
    /// `spec.archive.s3.lifecycle`, `AlertsReady` with `spec.alerts`,
    /// `CompactionSucceeded` with `spec.archive.compaction`.
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
    /// The compaction runs of `spec.archive.compaction` (absent without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionStatus>,
}

/// What the compaction CronJob's runs did.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CompactionStatus {
    /// When the last run that succeeded finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_run: Option<Time>,
    /// The last run that finished, successful or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<CompactionRun>,
}

/// One finished compaction run (a Job of the CronJob), with the numbers
/// its report gave.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CompactionRun {
    /// The Job (`kubectl logs job/NAME` shows its output).
    pub job: String,
    /// The Job's uid: the operator counts each run once in its metrics and
    /// events, also across its own restarts.
    pub job_uid: String,
    /// `Succeeded` or `Failed`.
    pub result: String,
    /// When the Job finished.
    pub finished_at: Time,
    /// Closed (app, day) partitions looked at.
    #[serde(default)]
    pub partitions_seen: i64,
    /// Partitions rewritten (merged, or converted to Parquet).
    #[serde(default)]
    pub partitions_compacted: i64,
    /// Partitions that failed (each is retried by the next run).
    #[serde(default)]
    pub partitions_failed: i64,
    /// Input objects merged (then deleted).
    #[serde(default)]
    pub objects_merged: i64,
    /// Objects written in their place.
    #[serde(default)]
    pub objects_written: i64,
    /// Bytes of the merged inputs.
    #[serde(default)]
    pub bytes_before: i64,
    /// Bytes of the objects written.
    #[serde(default)]
    pub bytes_after: i64,
    /// Records counted in the inputs and found again in the written
    /// objects before any input was deleted.
    #[serde(default)]
    pub records_verified: i64,
    /// Why the run failed: the report's first error, or the Job's own
    /// failure (deadline, back-off limit, the container's end) when the
    /// run left no report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
