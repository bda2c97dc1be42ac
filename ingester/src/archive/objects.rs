//! Archive objects being built: gzip JSON lines for one app and UTC day.
//!
//! Both acknowledgement modes use these: the write-ahead log uploader keeps
//! objects open for up to `--flush-interval`, `--ack archive` builds one set
//! per group of requests.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::alert::tap::{Tap, Tapped};
use crate::archive::backend::object_key;
use crate::durable::Entry;
use crate::encode::batch::{BatchStats, LineSink, RequestMeta, encode_body};
use crate::parse::timestamp::Day;

/// JSON lines of one app, one buffer per day (a request rarely spans more
/// than one, so a short list beats a map).
#[derive(Debug, Default)]
pub struct DaySink {
    pub days: Vec<(Day, Vec<u8>)>,
}

impl LineSink for DaySink {
    fn buffer(&mut self, day: Day) -> &mut Vec<u8> {
        let i = match self.days.iter().position(|(d, _)| *d == day) {
            Some(i) => i,
            None => {
                self.days.push((day, Vec::with_capacity(64 << 10)));
                self.days.len() - 1
            }
        };
        &mut self.days[i].1
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

/// Encoded JSON lines of many requests, grouped by app and day.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub(crate) apps: HashMap<Arc<str>, DaySink>,
    pub(crate) stats: BatchStats,
}

impl Encoded {
    /// Parse one logged request and append its records, showing them to
    /// the alert rules' `tap` when there are rules.
    pub(crate) fn add(&mut self, entry: &Entry, tap: Option<&mut Tap>) -> BatchStats {
        let sink = match self.apps.get_mut(entry.app.as_str()) {
            Some(sink) => sink,
            None => self.apps.entry(Arc::from(entry.app.as_str())).or_default(),
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

/// One object being written.
pub(crate) struct OpenObject {
    pub(crate) app: Arc<str>,
    pub(crate) day: Day,
    pub(crate) opened: Instant,
    /// Wall-clock time of the first record, for the key.
    created_ms: i64,
    gz: GzEncoder<Vec<u8>>,
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
    pub(crate) fn new(app: Arc<str>, day: Day, level: u32) -> OpenObject {
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        OpenObject {
            app,
            day,
            opened: Instant::now(),
            created_ms,
            gz: GzEncoder::new(Vec::with_capacity(1 << 20), Compression::new(level)),
            json_bytes: 0,
        }
    }

    pub(crate) fn write(&mut self, json: &[u8]) {
        // Writing into a Vec cannot fail.
        let _ = self.gz.write_all(json);
        self.json_bytes += json.len() as u64;
    }

    pub(crate) fn finish(self, prefix: &str) -> Finished {
        let key = object_key(
            prefix,
            &self.app,
            self.day,
            self.created_ms,
            uuid::Uuid::new_v4(),
        );
        // Finishing a gzip stream into a Vec cannot fail either.
        let body = self.gz.finish().unwrap_or_default();
        Finished {
            key,
            body: Bytes::from(body),
            json_bytes: self.json_bytes,
        }
    }
}
