//! What a compaction run reports: `drainpipe-ingester compact` writes it as
//! one JSON object to its `--report` file (the Job's termination message,
//! `/dev/termination-log`), and the operator reads it from the finished pod
//! into the LogDrain's status, its metrics and an event.

use serde::{Deserialize, Serialize};

use crate::schema::ArchiveFormat;

/// The outcome of one `drainpipe-ingester compact` run. Kubernetes keeps at
/// most 4,096 bytes of a termination message: the report has no lists, and
/// `error` is cut to [`CompactionReport::MAX_ERROR`] characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactionReport {
    /// The format the run wrote (closed JSON days are converted into it
    /// when it is `parquet`).
    pub format: ArchiveFormat,
    /// RFC 3339 UTC times the run started and ended.
    pub started_at: String,
    pub finished_at: String,
    /// Closed (app, day) partitions looked at, and those rewritten.
    pub partitions_seen: u64,
    pub partitions_compacted: u64,
    /// Input objects merged (and then deleted), and objects written.
    pub objects_merged: u64,
    pub objects_written: u64,
    /// Bytes of the inputs merged, and of the objects written.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records counted in the inputs and found again in the written objects
    /// before any input was deleted.
    pub records_verified: u64,
    /// Partitions that failed; the run goes on with the next one and exits
    /// non-zero at the end.
    pub partitions_failed: u64,
    /// The first failure, without secrets, at most [`Self::MAX_ERROR`]
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CompactionReport {
    pub const MAX_ERROR: usize = 1024;

    /// True when every partition was compacted or needed nothing.
    pub fn succeeded(&self) -> bool {
        self.partitions_failed == 0 && self.error.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_fits_a_termination_message() {
        let report = CompactionReport {
            format: ArchiveFormat::Parquet,
            started_at: "2026-12-07T03:17:00.000000Z".into(),
            finished_at: "2026-12-07T03:19:12.123456Z".into(),
            partitions_seen: u64::MAX,
            partitions_compacted: u64::MAX,
            objects_merged: u64::MAX,
            objects_written: u64::MAX,
            bytes_before: u64::MAX,
            bytes_after: u64::MAX,
            records_verified: u64::MAX,
            partitions_failed: u64::MAX,
            error: Some("é".repeat(CompactionReport::MAX_ERROR)),
        };
        let yaml = serde_yaml::to_string(&report).unwrap();
        assert!(yaml.len() < 4096, "{}", yaml.len());
        let back: CompactionReport = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, report);
        assert!(!back.succeeded());
    }
}
