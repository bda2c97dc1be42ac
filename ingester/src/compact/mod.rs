//! `drainpipe-ingester compact`: merge each closed UTC day's small objects
//! into few large ones, and with `--format parquet` convert closed JSON days
//! into Parquet, without losing or doubling a record.
//!
//! - `plan`: which days are closed and which objects go together;
//! - `manifest`: the intent written before anything changes, so a killed
//!   run is finished by the next;
//! - `merge`: the merged object, its records counted on both sides;
//! - `convert`: JSON lines back into records for Parquet.
//!
//! A merge stores its output before deleting its inputs, and S3 cannot swap
//! several keys at once: from the output's PUT to the inputs' DeleteObjects
//! (one request for up to 1,000 keys, normally well under a second) a query
//! listing the day reads both, and a query that listed the day before the
//! delete and opens an input after it fails with a missing file, as Athena
//! does when any object vanishes under it (docs/athena.md).

pub mod convert;
mod manifest;
mod merge;
mod plan;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drainpipe_contract::compaction::CompactionReport;
use drainpipe_contract::schema::{ArchiveFormat, COMPACTION_FOLDER};
use drainpipe_contract::units::{parse_duration, parse_size};
use futures::StreamExt;

use crate::archive::backend::{Archive, ArchiveError};
use crate::archive::store::Listed;
use crate::compact::manifest::{Input, Manifest, State};
use crate::compact::plan::Partition;
use crate::parse::timestamp::format_utc_us;

/// Inputs fetched at once.
const FETCH_CONCURRENCY: usize = 16;
/// S3's limit on one PUT.
const MAX_TARGET: u64 = 5 << 30;
const MIN_TARGET: u64 = 1 << 20;

/// `compact`'s flags; the environment names match the server's where they
/// mean the same (`DRAINPIPE_ARCHIVE`, `DRAINPIPE_FORMAT`).
#[derive(Debug, Clone, clap::Args)]
pub struct CompactConfig {
    /// The archive, as the ingester's `--archive`.
    #[arg(long, env = "DRAINPIPE_ARCHIVE", default_value = "file://./archive")]
    pub archive: String,

    /// The format to write: `json` merges JSON days; `parquet` merges
    /// Parquet days and converts closed JSON days into Parquet.
    #[arg(long, env = "DRAINPIPE_FORMAT", default_value = "json", value_parser = parse_format)]
    pub format: ArchiveFormat,

    /// Size of a merged object: smaller objects of a day are packed up to
    /// it; a day smaller than it becomes one object (1 MiB to 5 GiB).
    #[arg(long, env = "DRAINPIPE_COMPACT_TARGET_SIZE", default_value = "128MiB", value_parser = parse_size)]
    pub target_size: u64,

    /// A UTC day is closed, and compacted, this long after its midnight.
    #[arg(long, env = "DRAINPIPE_COMPACT_GRACE", default_value = "2h", value_parser = parse_duration)]
    pub grace: Duration,

    /// Also write the report (JSON) to this file: the operator sets the
    /// Job's termination message, `/dev/termination-log`.
    #[arg(long, env = "DRAINPIPE_COMPACT_REPORT")]
    pub report: Option<PathBuf>,
}

/// `json` or `parquet`, for clap.
pub fn parse_format(s: &str) -> Result<ArchiveFormat, String> {
    s.parse()
}

/// A configuration `compact` cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("--target-size must be between 1 MiB and 5 GiB (S3's largest single PUT)")]
    TargetSize,
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl CompactConfig {
    pub fn validate(&self) -> Result<(), CompactError> {
        if !(MIN_TARGET..=MAX_TARGET).contains(&self.target_size) {
            return Err(CompactError::TargetSize);
        }
        Ok(())
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn utc(us: i64) -> String {
    String::from_utf8_lossy(&format_utc_us(us)).into_owned()
}

/// Run once over the whole archive. Failures of single partitions are in
/// the report; only a configuration that cannot run at all is an error.
pub async fn run(config: &CompactConfig) -> Result<CompactionReport, CompactError> {
    run_with_aws(config, None).await
}

/// [`run`], with `aws` (region, credentials, endpoint) for an `s3://`
/// archive instead of the process environment's chain.
pub async fn run_with_aws(
    config: &CompactConfig,
    aws: Option<&aws_config::SdkConfig>,
) -> Result<CompactionReport, CompactError> {
    config.validate()?;
    let archive = Arc::new(Archive::from_url_with(&config.archive, aws).await?);
    let mut run = Run {
        archive,
        to: config.format,
        report: CompactionReport {
            format: config.format,
            started_at: utc(now_us()),
            ..CompactionReport::default()
        },
    };
    tracing::info!(archive = %run.archive.describe(), format = %config.format, target_size = config.target_size, grace = ?config.grace, "compaction started");
    run.all(config).await;
    run.report.finished_at = utc(now_us());
    Ok(run.report)
}

struct Run {
    archive: Arc<Archive>,
    to: ArchiveFormat,
    report: CompactionReport,
}

impl Run {
    fn failed(&mut self, what: &str, error: &str) {
        tracing::error!(partition = what, error, "compaction failed; inputs kept");
        self.report.partitions_failed += 1;
        if self.report.error.is_none() {
            let mut text = format!("{what}: {error}");
            if let Some((cut, _)) = text.char_indices().nth(CompactionReport::MAX_ERROR) {
                text.truncate(cut);
            }
            self.report.error = Some(text);
        }
    }

    async fn all(&mut self, config: &CompactConfig) {
        let prefix = self.archive.prefix().to_owned();
        // Merges a killed run left half done come first: their inputs must
        // not be planned again into a second output.
        let manifests = match self
            .archive
            .list(&format!("{prefix}{COMPACTION_FOLDER}"))
            .await
        {
            Ok(listed) => listed,
            Err(e) => return self.failed("listing manifests", &e.to_string()),
        };
        for m in manifests.iter().filter(|m| m.key.ends_with(".json")) {
            self.resume(&m.key).await;
        }
        let grace = i64::try_from(config.grace.as_micros()).unwrap_or(i64::MAX);
        let now = now_us();
        // Closed JSON days are converted first, and the archive listed again
        // after, so a day's converted object is merged with its Parquet
        // objects in the same run.
        let mut formats = Vec::new();
        if self.to == ArchiveFormat::Parquet {
            formats.push(ArchiveFormat::Json);
        }
        formats.push(self.to);
        for from in formats {
            let listing = match self.archive.list(&prefix).await {
                Ok(listed) => listed,
                Err(e) => return self.failed("listing the archive", &e.to_string()),
            };
            for partition in plan::partitions(&prefix, from, &listing) {
                if !plan::closed(partition.day, now, grace) {
                    continue;
                }
                self.report.partitions_seen += 1;
                self.partition(&partition, config.target_size).await;
            }
        }
    }

    async fn partition(&mut self, partition: &Partition, target: u64) {
        let name = format!(
            "{} {:04}-{:02}-{:02} ({})",
            partition.app,
            partition.day.year,
            partition.day.month,
            partition.day.day,
            partition.format
        );
        let groups = plan::groups(partition, self.to, target);
        if groups.is_empty() {
            return;
        }
        let before = self.report.clone();
        let prefix = self.archive.prefix().to_owned();
        for group in groups {
            let manifest = Manifest {
                version: manifest::VERSION,
                state: State::Planned,
                planned_at: utc(now_us()),
                from: partition.format,
                to: self.to,
                inputs: group
                    .iter()
                    .map(|o| Input {
                        key: o.key.clone(),
                        size: o.size,
                    })
                    .collect(),
                output: output_key(&prefix, partition, self.to, &group),
                output_size: None,
                records: None,
            };
            let key = partition.manifest_key(&prefix);
            if let Err(e) = self
                .archive
                .store(&key, Bytes::from(manifest.to_json()))
                .await
            {
                return self.failed(&name, &format!("cannot write the manifest {key}: {e}"));
            }
            if let Err(e) = self.execute(&key, manifest).await {
                return self.failed(&name, &e);
            }
        }
        let r = &self.report;
        tracing::info!(
            partition = name,
            objects_merged = r.objects_merged - before.objects_merged,
            objects_written = r.objects_written - before.objects_written,
            bytes_before = r.bytes_before - before.bytes_before,
            bytes_after = r.bytes_after - before.bytes_after,
            records_verified = r.records_verified - before.records_verified,
            "partition compacted"
        );
        self.report.partitions_compacted += 1;
    }

    /// Finish what the manifest at `key` says a killed run was doing.
    async fn resume(&mut self, key: &str) {
        let manifest = match self.archive.get(key).await {
            Ok(Some(body)) => Manifest::from_json(&body),
            Ok(None) => return,
            Err(e) => return self.failed(key, &e.to_string()),
        };
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => return self.failed(key, &format!("unreadable manifest: {e}")),
        };
        tracing::info!(manifest = key, state = ?manifest.state, "finishing a merge an earlier run left");
        if let Err(e) = self.execute(key, manifest).await {
            self.failed(key, &e);
        }
    }

    /// Carry a merge from its manifest's state to the end.
    async fn execute(&mut self, key: &str, mut manifest: Manifest) -> Result<(), String> {
        let archive = Arc::clone(&self.archive);
        if manifest.state == State::Planned {
            let fetched = futures::stream::iter(manifest.inputs.clone())
                .map(|input| {
                    let archive = Arc::clone(&archive);
                    async move { (archive.get(&input.key).await, input.key) }
                })
                .buffered(FETCH_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut inputs = Vec::with_capacity(fetched.len());
            for (got, input) in fetched {
                match got {
                    Ok(Some(body)) => inputs.push((input, body)),
                    Ok(None) => {
                        // Not ours to explain (a lifecycle rule, a person):
                        // undo the plan; the next run plans from what is there.
                        archive
                            .delete(&[manifest.output.clone(), key.to_owned()])
                            .await
                            .map_err(|e| e.to_string())?;
                        return Err(format!(
                            "input {input} vanished before the merge; plan dropped, the next run plans again"
                        ));
                    }
                    Err(e) => return Err(format!("reading {input}: {e}")),
                }
            }
            let (from, to) = (manifest.from, manifest.to);
            let merged = tokio::task::spawn_blocking(move || merge::merge(&inputs, from, to))
                .await
                .map_err(|e| format!("merge panicked: {e}"))?;
            let merged = match merged {
                Ok(merged) => merged,
                Err(e) => {
                    // Nothing to finish: drop the plan so the day's other
                    // objects are not held up; the bad input stays and
                    // fails the next run the same way.
                    let _ = archive
                        .delete(&[manifest.output.clone(), key.to_owned()])
                        .await;
                    return Err(e.to_string());
                }
            };
            let size = merged.body.len() as u64;
            archive
                .store(&manifest.output, merged.body)
                .await
                .map_err(|e| format!("storing {}: {e}", manifest.output))?;
            manifest.state = State::Committed;
            manifest.output_size = Some(size);
            manifest.records = Some(merged.records);
            archive
                .store(key, Bytes::from(manifest.to_json()))
                .await
                .map_err(|e| format!("committing the manifest {key}: {e}"))?;
        }
        // Committed: the output holds every input record. Make sure it is
        // really there before anything is deleted.
        let stored = archive
            .size(&manifest.output)
            .await
            .map_err(|e| format!("checking {}: {e}", manifest.output))?;
        if stored != manifest.output_size {
            return Err(format!(
                "the merged object {} is {stored:?} bytes, the manifest says {:?}: inputs kept",
                manifest.output, manifest.output_size
            ));
        }
        let inputs: Vec<String> = manifest
            .input_keys()
            .into_iter()
            .filter(|k| *k != manifest.output)
            .collect();
        archive
            .delete(&inputs)
            .await
            .map_err(|e| format!("deleting the merged inputs: {e}"))?;
        archive
            .delete(&[key.to_owned()])
            .await
            .map_err(|e| format!("deleting the manifest {key}: {e}"))?;
        let r = &mut self.report;
        r.objects_merged += manifest.inputs.len() as u64;
        r.objects_written += 1;
        r.bytes_before += manifest.input_bytes();
        r.bytes_after += manifest.output_size.unwrap_or(0);
        r.records_verified += manifest.records.unwrap_or(0);
        Ok(())
    }
}

/// The merged object's key: in the target format's folder for the day,
/// named like the ingester's objects after the first input's time, so keys
/// still sort by time.
fn output_key(prefix: &str, partition: &Partition, to: ArchiveFormat, group: &[Listed]) -> String {
    let first_ms = group
        .first()
        .and_then(|o| o.key.rsplit('/').next())
        .and_then(|name| name.split('-').next())
        .and_then(|ms| ms.parse::<i64>().ok())
        .unwrap_or_else(|| now_us() / 1000);
    let target = Partition {
        format: to,
        objects: Vec::new(),
        ..partition.clone()
    };
    format!(
        "{}{first_ms}-{}{}",
        target.folder(prefix),
        uuid::Uuid::new_v4(),
        to.extension()
    )
}
