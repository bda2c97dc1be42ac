//! Archive objects being built for one app and UTC day: gzip JSON lines or
//! Parquet (`--format`).
//!
//! Both acknowledgement modes use these: the write-ahead log uploader keeps
//! objects open for up to `--flush-interval`, `--ack archive` builds one set
//! per group of requests.
//!
//! A JSON object is compressed as its lines come, so an open one holds its
//! gzip bytes. A Parquet object is written whole when it closes (its rows
//! sorted by time first), so an open one holds its rows as Arrow arrays,
//! several times their compressed size: [`OpenObject::memory`] tells the
//! uploader what each holds, and it closes the largest when a worker's open
//! objects pass their bound.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use bytes::Bytes;
use drainpipe_contract::schema::ArchiveFormat;
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::alert::tap::{Tap, Tapped};
use crate::archive::backend::object_key;
use crate::durable::Entry;
use crate::encode::batch::{BatchStats, LineSink, RequestMeta, encode_body};
use crate::encode::columns::{Columns, time_ordered};
use crate::encode::parquet_file;
use crate::encode::record::{Record, WriterCache};
use crate::parse::timestamp::Day;

/// ZSTD level of the Parquet objects the ingester writes: the fastest, as
/// gzip level 1 is for JSON; compaction rewrites closed days smaller.
pub const INGEST_ZSTD_LEVEL: i32 = 1;

/// The records of one request (or chunk) for one day, in the object format.
#[derive(Debug)]
pub enum DayRows {
    Json(Vec<u8>),
    Rows(Box<Columns>),
}

impl DayRows {
    pub fn is_empty(&self) -> bool {
        match self {
            DayRows::Json(json) => json.is_empty(),
            DayRows::Rows(rows) => rows.is_empty(),
        }
    }
}

/// The records of one app, one buffer per day (a request rarely spans more
/// than one, so a short list beats a map).
#[derive(Debug)]
pub struct DaySink {
    format: ArchiveFormat,
    cache: WriterCache,
    pub days: Vec<(Day, DayRows)>,
}

impl DaySink {
    pub fn new(format: ArchiveFormat) -> DaySink {
        DaySink {
            format,
            cache: WriterCache::default(),
            days: Vec::new(),
        }
    }
}

impl LineSink for DaySink {
    fn push(&mut self, day: Day, record: &Record<'_>) {
        let i = match self.days.iter().position(|(d, _)| *d == day) {
            Some(i) => i,
            None => {
                let rows = match self.format {
                    ArchiveFormat::Json => DayRows::Json(Vec::with_capacity(64 << 10)),
                    ArchiveFormat::Parquet => DayRows::Rows(Box::default()),
                };
                self.days.push((day, rows));
                self.days.len() - 1
            }
        };
        match &mut self.days[i].1 {
            DayRows::Json(json) => record.write_json_line_cached(json, &mut self.cache),
            DayRows::Rows(rows) => rows.push(record),
        }
    }
}

/// Parse one logged request into `sink`, with the request's metadata as it
/// was received. Both acknowledgement modes encode through here, so their
/// objects hold the same lines.
pub(crate) fn encode_entry(entry: &Entry, sink: &mut impl LineSink) -> BatchStats {
    let meta = RequestMeta {
        app: &entry.app,
        drain_token: entry.drain_token.as_deref(),
        frame_id: entry.frame_id.as_deref(),
        msg_count: entry.msg_count,
        received_at_us: entry.received_at_us,
    };
    encode_body(&meta, entry.format, &entry.body, sink)
}

/// Encoded records of many requests, grouped by app and day.
#[derive(Debug)]
pub(crate) struct Encoded {
    format: ArchiveFormat,
    pub(crate) apps: HashMap<Arc<str>, DaySink>,
    pub(crate) stats: BatchStats,
}

impl Encoded {
    pub(crate) fn new(format: ArchiveFormat) -> Encoded {
        Encoded {
            format,
            apps: HashMap::new(),
            stats: BatchStats::default(),
        }
    }

    /// Parse one logged request and append its records, showing them to
    /// the alert rules' `tap` when there are rules.
    pub(crate) fn add(&mut self, entry: &Entry, tap: Option<&mut Tap>) -> BatchStats {
        let format = self.format;
        let sink = match self.apps.get_mut(entry.app.as_str()) {
            Some(sink) => sink,
            None => self
                .apps
                .entry(Arc::from(entry.app.as_str()))
                .or_insert_with(|| DaySink::new(format)),
        };
        let stats = match tap {
            Some(tap) => encode_entry(entry, &mut Tapped { inner: sink, tap }),
            None => encode_entry(entry, sink),
        };
        self.stats.messages += stats.messages;
        self.stats.parse_errors += stats.parse_errors;
        self.stats.invalid_utf8 += stats.invalid_utf8;
        self.stats.l10_dropped += stats.l10_dropped;
        stats
    }
}

/// How objects are written: the format, and gzip's level for JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectFormat {
    pub format: ArchiveFormat,
    pub gzip_level: u32,
}

enum Body {
    Gzip(Box<GzEncoder<Vec<u8>>>),
    /// Batches, one per chunk or request, and their memory; put in time
    /// order when the object is written.
    Parquet(Vec<RecordBatch>, usize),
}

/// One object being written.
pub(crate) struct OpenObject {
    pub(crate) app: Arc<str>,
    pub(crate) day: Day,
    pub(crate) opened: Instant,
    /// Wall-clock time of the first record, for the key.
    created_ms: i64,
    format: ArchiveFormat,
    body: Body,
    /// What the records take as JSON lines, or as Arrow arrays for Parquet:
    /// `--flush-bytes` closes the object past it.
    pub(crate) json_bytes: u64,
}

/// A finished object, ready to store.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub(crate) key: String,
    pub(crate) body: Bytes,
    pub(crate) json_bytes: u64,
}

impl OpenObject {
    pub(crate) fn new(app: Arc<str>, day: Day, format: ObjectFormat) -> OpenObject {
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let body = match format.format {
            ArchiveFormat::Json => Body::Gzip(Box::new(GzEncoder::new(
                Vec::with_capacity(1 << 20),
                Compression::new(format.gzip_level),
            ))),
            ArchiveFormat::Parquet => Body::Parquet(Vec::new(), 0),
        };
        OpenObject {
            app,
            day,
            opened: Instant::now(),
            created_ms,
            format: format.format,
            body,
            json_bytes: 0,
        }
    }

    /// Append one request's (or chunk's) records of this app and day.
    pub(crate) fn write(&mut self, rows: DayRows) {
        match (&mut self.body, rows) {
            (Body::Gzip(gz), DayRows::Json(json)) => {
                // Writing into a Vec cannot fail.
                let _ = gz.write_all(&json);
                self.json_bytes += json.len() as u64;
            }
            (Body::Parquet(batches, memory), DayRows::Rows(mut rows)) => match rows.finish() {
                Ok(batch) => {
                    let size = batch.get_array_memory_size();
                    *memory += size;
                    self.json_bytes += size as u64;
                    batches.push(batch);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot build Arrow arrays (a bug); records lost")
                }
            },
            // The sink and the object are made from one format.
            _ => tracing::error!("records of one format offered to an object of the other (a bug)"),
        }
    }

    /// Memory the open object holds.
    pub(crate) fn memory(&self) -> usize {
        match &self.body {
            Body::Gzip(gz) => gz.get_ref().capacity(),
            Body::Parquet(_, memory) => *memory,
        }
    }

    pub(crate) fn finish(self, prefix: &str) -> Result<Finished, parquet_file::Error> {
        let key = object_key(
            prefix,
            self.format,
            &self.app,
            self.day,
            self.created_ms,
            uuid::Uuid::new_v4(),
        );
        let body = match self.body {
            // Finishing a gzip stream into a Vec cannot fail either.
            Body::Gzip(gz) => gz.finish().unwrap_or_default(),
            Body::Parquet(batches, _) => {
                let mut writer = parquet_file::FileWriter::new(INGEST_ZSTD_LEVEL)?;
                for batch in time_ordered(batches)? {
                    writer.write(&batch)?;
                }
                writer.finish()?
            }
        };
        Ok(Finished {
            key,
            body: Bytes::from(body),
            json_bytes: self.json_bytes,
        })
    }
}
