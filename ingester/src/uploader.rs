//! Turns the write-ahead log into archive objects (`--ack wal`).
//!
//! Three stages, so parsing and compression run on different cores:
//! 1. the *encoder* thread reads log entries in order (from the page cache)
//!    and parses each body into JSON lines grouped by app and day;
//! 2. the *compressor* thread appends those lines to open gzip objects, one
//!    per (app, day), and closes an object by age or size;
//! 3. the *upload* task stores closed objects, retrying with backoff forever
//!    (the log absorbs an archive outage), a few at a time.
//!
//! Each object remembers the log position of the first chunk it took data
//! from. The *watermark*, the lowest such position over objects not yet
//! stored (or the end of what has been processed), has only stored data
//! before it: it is written as the log's checkpoint, where a restart
//! resumes, and segments wholly before it are deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::archive::Archive;
use crate::batch::Day;
use crate::metrics::Metrics;
use crate::objects::{Encoded, Finished, OpenObject};
use crate::wal::{Position, Read, Wal};

/// Bytes of log read and parsed in one step.
const READ_CHUNK: usize = 4 << 20;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct UploaderOptions {
    pub flush_interval: Duration,
    pub flush_bytes: u64,
    pub gzip_level: u32,
    pub concurrency: usize,
}

/// How far the log is archived.
#[derive(Debug, Default)]
struct Tracker {
    /// Objects open or being uploaded, with the log position of the first
    /// chunk they took data from.
    live: BTreeMap<u64, Position>,
    /// Everything before this has been written into objects.
    processed: Position,
    /// The last checkpoint written.
    saved: Position,
}

impl Tracker {
    /// Everything before this position is in stored objects.
    fn watermark(&self) -> Position {
        self.live
            .values()
            .min()
            .map_or(self.processed, |&first| first.min(self.processed))
    }
}

struct Shared {
    wal: Arc<Wal>,
    tracker: Mutex<Tracker>,
    /// The encoder has read everything committed so far.
    caught_up: AtomicBool,
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Move the checkpoint forward and delete segments wholly before it.
    fn advance(&self) {
        let watermark = {
            let mut tracker = self.tracker();
            let watermark = tracker.watermark();
            if watermark <= tracker.saved {
                return;
            }
            // Under the lock so two writers never race on the temp file.
            if let Err(e) = self.wal.save_checkpoint(watermark) {
                tracing::warn!(error = %e, "cannot write the write-ahead log checkpoint (a restart would replay more)");
            }
            tracker.saved = watermark;
            watermark
        };
        self.wal.delete_before(watermark.seq);
    }
}

struct ChunkMsg {
    start: Position,
    end: Position,
    encoded: Encoded,
}

struct Upload {
    id: u64,
    object: Finished,
    records_from: (Arc<str>, Day),
}

/// Start the pipeline. The returned task ends once the log is closed and
/// everything in it is stored and deleted.
pub fn start(
    wal: Arc<Wal>,
    archive: Arc<Archive>,
    metrics: Arc<Metrics>,
    options: UploaderOptions,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let start = wal.start();
    let shared = Arc::new(Shared {
        wal: Arc::clone(&wal),
        tracker: Mutex::new(Tracker {
            live: BTreeMap::new(),
            processed: start,
            saved: start,
        }),
        caught_up: AtomicBool::new(false),
    });
    let (chunk_tx, chunk_rx) = sync_channel::<ChunkMsg>(2);
    let (upload_tx, upload_rx) = mpsc::channel::<Upload>(options.concurrency.max(1));

    let reader = wal.reader();
    let enc_metrics = Arc::clone(&metrics);
    let enc_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("wal-encoder".into())
        .spawn(move || encode_loop(reader, chunk_tx, &enc_metrics, &enc_shared))?;

    let comp_shared = Arc::clone(&shared);
    let prefix = archive.prefix().to_owned();
    let comp_options = options.clone();
    std::thread::Builder::new()
        .name("wal-compressor".into())
        .spawn(move || compress_loop(chunk_rx, upload_tx, &comp_shared, &prefix, &comp_options))?;

    Ok(tokio::spawn(upload_loop(
        upload_rx,
        archive,
        metrics,
        shared,
        options.concurrency,
    )))
}

fn encode_loop(
    mut reader: crate::wal::WalReader,
    tx: SyncSender<ChunkMsg>,
    metrics: &Metrics,
    shared: &Shared,
) {
    loop {
        match reader.next_chunk(READ_CHUNK, Duration::from_millis(250)) {
            Ok(Read::Chunk(chunk)) => {
                shared.caught_up.store(false, Ordering::Relaxed);
                let mut encoded = Encoded::default();
                for entry in &chunk.entries {
                    let stats = encoded.add(entry);
                    metrics.record_batch(&stats);
                }
                let msg = ChunkMsg {
                    start: chunk.start,
                    end: chunk.end,
                    encoded,
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
            Ok(Read::Idle) => shared.caught_up.store(true, Ordering::Relaxed),
            Ok(Read::End) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the write-ahead log; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn compress_loop(
    rx: std::sync::mpsc::Receiver<ChunkMsg>,
    tx: mpsc::Sender<Upload>,
    shared: &Shared,
    prefix: &str,
    options: &UploaderOptions,
) {
    let mut open: HashMap<(Arc<str>, Day), (u64, OpenObject)> = HashMap::new();
    let mut next_id = 0u64;
    let tick =
        (options.flush_interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let close = |key: (Arc<str>, Day), id: u64, object: OpenObject| -> bool {
        let object = object.finish(prefix);
        tx.blocking_send(Upload {
            id,
            object,
            records_from: key,
        })
        .is_ok()
    };
    loop {
        let msg = match rx.recv_timeout(tick) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if let Some(msg) = msg {
            for (app, sink) in msg.encoded.apps {
                for (day, json) in sink.days {
                    if json.is_empty() {
                        continue;
                    }
                    let key = (Arc::clone(&app), day);
                    let (_, object) = open.entry(key.clone()).or_insert_with(|| {
                        next_id += 1;
                        shared.tracker().live.insert(next_id, msg.start);
                        (
                            next_id,
                            OpenObject::new(Arc::clone(&app), day, options.gzip_level),
                        )
                    });
                    object.write(&json);
                    if object.json_bytes >= options.flush_bytes
                        && let Some((id, object)) = open.remove(&key)
                        && !close(key, id, object)
                    {
                        return;
                    }
                }
            }
            shared.tracker().processed = msg.end;
            shared.advance();
        }
        if open.is_empty()
            && shared.caught_up.load(Ordering::Relaxed)
            && shared.tracker().live.is_empty()
        {
            shared.wal.request_roll();
        }
        let now = Instant::now();
        let aged: Vec<(Arc<str>, Day)> = open
            .iter()
            .filter(|(_, (_, o))| now.duration_since(o.opened) >= options.flush_interval)
            .map(|(k, _)| k.clone())
            .collect();
        for key in aged {
            if let Some((id, object)) = open.remove(&key)
                && !close(key, id, object)
            {
                return;
            }
        }
    }
    // The log is closed and read to its end: flush everything.
    for (key, (id, object)) in open.drain() {
        if !close(key, id, object) {
            return;
        }
    }
}

async fn upload_loop(
    mut rx: mpsc::Receiver<Upload>,
    archive: Arc<Archive>,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    concurrency: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut running = JoinSet::new();
    while let Some(upload) = rx.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let archive = Arc::clone(&archive);
        let metrics = Arc::clone(&metrics);
        let shared = Arc::clone(&shared);
        running.spawn(async move {
            store_with_retry(&archive, &metrics, &upload.object, &upload.records_from).await;
            drop(slot);
            shared.tracker().live.remove(&upload.id);
            let shared2 = Arc::clone(&shared);
            // Checkpoint and deletions are file system work.
            let _ = tokio::task::spawn_blocking(move || shared2.advance()).await;
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    let _ = tokio::task::spawn_blocking(move || shared.advance()).await;
}

/// Store one object, retrying until it works.
pub(crate) async fn store_with_retry(
    archive: &Archive,
    metrics: &Metrics,
    object: &Finished,
    from: &(Arc<str>, Day),
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = Instant::now();
        match archive.put(&object.key, object.body.clone()).await {
            Ok(()) => {
                metrics
                    .upload_latency
                    .observe(started.elapsed().as_secs_f64());
                metrics.archive_objects.inc();
                metrics.archive_bytes.inc_by(object.body.len() as u64);
                tracing::debug!(key = %object.key, bytes = object.body.len(), json_bytes = object.json_bytes, "object stored");
                return;
            }
            Err(e) => {
                metrics.upload_errors.inc();
                tracing::warn!(app = %from.0, error = %e, retry_in = ?backoff, "storing an archive object failed; the write-ahead log keeps the data");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(seq: u64, offset: u64) -> Position {
        Position { seq, offset }
    }

    #[test]
    fn the_watermark_waits_for_the_oldest_live_object() {
        let mut t = Tracker {
            processed: pos(5, 100),
            ..Tracker::default()
        };
        assert_eq!(t.watermark(), pos(5, 100));
        t.live.insert(1, pos(5, 8)); // object 1 took data from (5, 8) on
        t.live.insert(2, pos(5, 60));
        t.processed = pos(7, 0);
        assert_eq!(t.watermark(), pos(5, 8));
        t.live.remove(&1);
        assert_eq!(t.watermark(), pos(5, 60));
        t.live.remove(&2);
        assert_eq!(t.watermark(), pos(7, 0));
    }
}
