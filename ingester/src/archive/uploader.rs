//! Turns the write-ahead log into archive objects (`--ack wal`).
//!
//! - the *reader* thread reads log entries in order (from the page cache)
//!   and hands chunks of them to the least busy worker;
//! - each *worker* thread parses its chunks into JSON lines and appends them
//!   to its own open gzip objects, one per (app, day), closing an object by
//!   age or size. Parsing and compression are most of the CPU; symmetric
//!   workers spread both over the cores whatever the mix of apps;
//! - the *upload* task stores closed objects, retrying with backoff forever
//!   (the log absorbs an archive outage), a few at a time.
//!
//! Each object remembers the log position of the first chunk it took data
//! from. The *watermark* is the lowest of: those positions over objects not
//! yet stored, the starts of chunks handed out but not processed, and the end
//! of what was handed out. Only stored data lies before it: it is written as
//! the log's checkpoint, where a restart resumes, and segments wholly before
//! it are deleted.
//!
//! Objects normally close by age or size, but an object holds its log
//! segments until it is stored. When what open objects pin passes half the
//! log's bound, workers close the objects that hold the oldest segment
//! early, so many open objects (apps x days x workers) can never fill the
//! log by themselves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::alert::Alerts;
use crate::alert::tap::Tap;
use crate::archive::backend::Archive;
use crate::archive::objects::{Encoded, Finished, ObjectFormat, OpenObject};
use crate::durable::{Chunk, Position, Read, Wal, WalReader};
use crate::parse::timestamp::Day;
use crate::telemetry::metrics::Metrics;
use drainpipe_contract::schema::ArchiveFormat;

/// Bytes of log read and parsed in one step.
const READ_CHUNK: usize = 4 << 20;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct UploaderOptions {
    pub flush_interval: Duration,
    pub flush_bytes: u64,
    pub object: ObjectFormat,
    /// Uploads at once.
    pub concurrency: usize,
    /// Parse-and-compress threads.
    pub workers: usize,
}

/// How far the log is archived.
#[derive(Debug, Default)]
struct Tracker {
    /// Objects open or being uploaded, with the log position of the first
    /// chunk they took data from.
    live: BTreeMap<u64, Position>,
    /// Starts of chunks handed to workers and not processed yet.
    in_work: BTreeSet<Position>,
    /// End of everything handed out.
    dispatched: Position,
    /// The last checkpoint written.
    saved: Position,
}

impl Tracker {
    /// Everything before this position is in stored objects.
    fn watermark(&self) -> Position {
        let mut w = self.dispatched;
        if let Some(&first) = self.live.values().min() {
            w = w.min(first);
        }
        if let Some(&first) = self.in_work.first() {
            w = w.min(first);
        }
        w
    }

    fn idle(&self) -> bool {
        self.live.is_empty() && self.in_work.is_empty()
    }
}

struct Shared {
    wal: Arc<Wal>,
    tracker: Mutex<Tracker>,
    /// The reader has read everything committed so far.
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

struct Upload {
    id: u64,
    object: Finished,
    app: Arc<str>,
}

/// Start the pipeline. The returned task ends once the log is closed and
/// everything in it is stored and deleted.
pub(crate) fn start(
    wal: Arc<Wal>,
    archive: Arc<Archive>,
    metrics: Arc<Metrics>,
    alerts: Arc<Alerts>,
    options: UploaderOptions,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let start = wal.start();
    let shared = Arc::new(Shared {
        wal: Arc::clone(&wal),
        tracker: Mutex::new(Tracker {
            dispatched: start,
            saved: start,
            ..Tracker::default()
        }),
        caught_up: AtomicBool::new(false),
    });
    let (upload_tx, upload_rx) = mpsc::channel::<Upload>(options.concurrency.max(1));
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..options.workers.max(1) {
        let (tx, rx) = sync_channel::<Chunk>(1);
        workers.push(tx);
        let worker = Worker {
            shared: Arc::clone(&shared),
            metrics: Arc::clone(&metrics),
            alerts: Arc::clone(&alerts),
            upload: upload_tx.clone(),
            prefix: archive.prefix().to_owned(),
            options: options.clone(),
            open: HashMap::new(),
            next_id: Arc::clone(&next_id),
        };
        std::thread::Builder::new()
            .name(format!("wal-worker-{i}"))
            .spawn(move || worker.run(rx))?;
    }
    drop(upload_tx);
    let reader = wal.reader();
    let read_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("wal-reader".into())
        .spawn(move || read_loop(reader, workers, &read_shared))?;

    Ok(tokio::spawn(upload_loop(
        upload_rx,
        archive,
        metrics,
        shared,
        options.concurrency,
    )))
}

fn read_loop(mut reader: WalReader, workers: Vec<SyncSender<Chunk>>, shared: &Shared) {
    let mut next = 0usize;
    loop {
        match reader.next_chunk(READ_CHUNK, Duration::from_millis(250)) {
            Ok(Read::Chunk(chunk)) => {
                shared.caught_up.store(false, Ordering::Relaxed);
                {
                    let mut tracker = shared.tracker();
                    tracker.dispatched = chunk.end;
                    if chunk.entries.is_empty() {
                        // Only a segment boundary: nothing for a worker to do.
                        drop(tracker);
                        shared.advance();
                        continue;
                    }
                    tracker.in_work.insert(chunk.start);
                }
                if !dispatch(&workers, &mut next, chunk) {
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

/// Give `chunk` to an idle worker, else wait for the next one in turn.
fn dispatch(workers: &[SyncSender<Chunk>], next: &mut usize, mut chunk: Chunk) -> bool {
    for i in 0..workers.len() {
        let w = (*next + i) % workers.len();
        match workers[w].try_send(chunk) {
            Ok(()) => {
                *next = (w + 1) % workers.len();
                return true;
            }
            Err(TrySendError::Full(c)) => chunk = c,
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
    let w = *next;
    *next = (w + 1) % workers.len();
    workers[w].send(chunk).is_ok()
}

/// One parse-and-compress thread with its own open objects.
struct Worker {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    alerts: Arc<Alerts>,
    upload: mpsc::Sender<Upload>,
    prefix: String,
    options: UploaderOptions,
    open: HashMap<(Arc<str>, Day), Open>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

struct Open {
    id: u64,
    /// Start of the chunk that opened it.
    first: Position,
    object: OpenObject,
}

impl Worker {
    fn run(mut self, rx: Receiver<Chunk>) {
        let tick = (self.options.flush_interval / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            match rx.recv_timeout(tick) {
                Ok(chunk) => {
                    if !self.process(chunk) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.open.is_empty()
                && self.shared.caught_up.load(Ordering::Relaxed)
                && self.shared.tracker().idle()
            {
                // Everything is stored: seal the segment so it can go.
                self.shared.wal.request_roll();
            }
            if !self.close_aged() || !self.relieve_pressure() {
                return;
            }
        }
        // The log is closed and read to its end: flush everything.
        let keys: Vec<(Arc<str>, Day)> = self.open.keys().cloned().collect();
        for key in keys {
            if !self.close(&key) {
                return;
            }
        }
    }

    fn process(&mut self, chunk: Chunk) -> bool {
        let mut encoded = Encoded::new(self.options.object.format);
        let rules = self.alerts.rules();
        let mut tap = (!rules.is_empty()).then(|| Tap::new(rules));
        for entry in &chunk.entries {
            let stats = encoded.add(entry, tap.as_mut());
            self.metrics.record_batch(&stats);
        }
        if let Some(tap) = tap {
            self.alerts.offer(tap.finish());
        }
        for (app, sink) in encoded.apps {
            for (day, rows) in sink.days {
                if rows.is_empty() {
                    continue;
                }
                let key = (Arc::clone(&app), day);
                let open = self.open.entry(key.clone()).or_insert_with(|| {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    self.shared.tracker().live.insert(id, chunk.start);
                    Open {
                        id,
                        first: chunk.start,
                        object: OpenObject::new(Arc::clone(&app), day, self.options.object),
                    }
                });
                open.object.write(rows);
                if open.object.json_bytes >= self.options.flush_bytes && !self.close(&key) {
                    return false;
                }
            }
        }
        if !self.bound_memory() {
            return false;
        }
        self.shared.tracker().in_work.remove(&chunk.start);
        self.shared.advance();
        self.relieve_pressure()
    }

    /// Parquet objects hold their rows uncompressed until they close: past
    /// `--flush-bytes` over all of this worker's open objects, close the
    /// largest, so memory stays within workers x flush-bytes however many
    /// (app, day) objects are open. (An open JSON object holds gzip output.)
    fn bound_memory(&mut self) -> bool {
        if self.options.object.format != ArchiveFormat::Parquet {
            return true;
        }
        let bound = usize::try_from(self.options.flush_bytes).unwrap_or(usize::MAX);
        let mut held: usize = self.open.values().map(|o| o.object.memory()).sum();
        while held > bound {
            let Some((key, memory)) = self
                .open
                .iter()
                .map(|(k, o)| (k.clone(), o.object.memory()))
                .max_by_key(|(_, m)| *m)
            else {
                return true;
            };
            held -= memory;
            self.metrics.objects_closed_for_memory.inc();
            if !self.close(&key) {
                return false;
            }
        }
        true
    }

    fn close_aged(&mut self) -> bool {
        let now = Instant::now();
        let aged: Vec<(Arc<str>, Day)> = self
            .open
            .iter()
            .filter(|(_, o)| now.duration_since(o.object.opened) >= self.options.flush_interval)
            .map(|(k, _)| k.clone())
            .collect();
        aged.iter().all(|key| self.close(key))
    }

    /// Past half the log's bound, close the objects that keep its oldest
    /// segment from being deleted.
    fn relieve_pressure(&mut self) -> bool {
        let wal = &self.shared.wal;
        // Cheap test first: the log as a whole under half its bound.
        if wal.bytes() < wal.max_bytes() / 2 {
            return true;
        }
        // Only what objects pin counts: a backlog not read yet is no reason
        // to make small objects.
        let (watermark, dispatched) = {
            let t = self.shared.tracker();
            (t.watermark(), t.dispatched)
        };
        if wal.bytes_between(watermark, dispatched) < wal.max_bytes() / 2 {
            return true;
        }
        let oldest = watermark.seq;
        let holding: Vec<(Arc<str>, Day)> = self
            .open
            .iter()
            .filter(|(_, o)| o.first.seq <= oldest)
            .map(|(k, _)| k.clone())
            .collect();
        holding.iter().all(|key| self.close(key))
    }

    /// Finish an object and queue it for upload; false when the uploader is
    /// gone (shutting down).
    fn close(&mut self, key: &(Arc<str>, Day)) -> bool {
        let Some(Open { id, object, .. }) = self.open.remove(key) else {
            return true;
        };
        let object = match object.finish(&self.prefix) {
            Ok(object) => object,
            Err(e) => {
                // A bug, not bad input (any record encodes). The object stays
                // live, so the write-ahead log keeps its records: the log
                // fills and says so rather than losing them.
                self.metrics.upload_errors.inc();
                tracing::error!(app = %key.0, error = %e, "cannot write an archive object; its records stay in the write-ahead log");
                return true;
            }
        };
        self.upload
            .blocking_send(Upload {
                id,
                object,
                app: Arc::clone(&key.0),
            })
            .is_ok()
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
            store_with_retry(&archive, &metrics, &upload.object, &upload.app).await;
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
    app: &str,
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
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                metrics
                    .archive_last_object
                    .get_or_create(&crate::telemetry::metrics::AppLabel {
                        app: app.to_string(),
                    })
                    .set(now);
                tracing::debug!(key = %object.key, bytes = object.body.len(), json_bytes = object.json_bytes, "object stored");
                return;
            }
            Err(e) => {
                metrics.upload_errors.inc();
                tracing::warn!(app, error = %e, retry_in = ?backoff, "storing an archive object failed; the write-ahead log keeps the data");
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
    fn the_watermark_waits_for_live_objects_and_chunks_in_work() {
        let mut t = Tracker {
            dispatched: pos(5, 100),
            ..Tracker::default()
        };
        assert_eq!(t.watermark(), pos(5, 100));
        t.live.insert(1, pos(5, 8)); // object 1 took data from (5, 8) on
        t.live.insert(2, pos(5, 60));
        t.in_work.insert(pos(5, 40));
        t.dispatched = pos(7, 0);
        assert_eq!(t.watermark(), pos(5, 8));
        t.live.remove(&1);
        assert_eq!(t.watermark(), pos(5, 40));
        t.in_work.remove(&pos(5, 40));
        assert_eq!(t.watermark(), pos(5, 60));
        t.live.remove(&2);
        assert_eq!(t.watermark(), pos(7, 0));
        assert!(t.idle());
    }
}
