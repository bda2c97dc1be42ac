//! Write-ahead log: what makes a 200 durable in `--ack wal` mode.
//!
//! Request bodies are kept raw (parsing happens later, off the request path).
//! One writer thread owns the current segment file; requests hand it entries
//! over a bounded channel and wait for the fsync that covers them. Everything
//! that arrives while an fsync runs is written and synced by the next one, so
//! concurrent requests share fsyncs (group commit).
//!
//! Layout of `--data-dir`: segment files `{seq:020}.wal`, each a magic header
//! followed by records `[len u32 LE][crc32 u32 LE][payload: len bytes]`. The
//! CRC covers the payload, so a tail torn by a crash is found and cut off at
//! the next start. A segment is sealed once the writer moves to the next one;
//! the uploader deletes sealed segments whose data is in the archive.
//!
//! The uploader also records a *checkpoint*: a position before which every
//! record is in a stored object. A restart replays from there, so a crash
//! re-archives (duplicates) only what was still in open objects, not whole
//! segments.
//!
//! Files: `entry` (the record format and its CRC), `segment` (segment
//! files, start-up checks, the checkpoint file), `state` (what the writer,
//! readers and deletions share), `writer` (group commit), `reader` (reading
//! back for the uploader), `error`; this file has the `Wal` handle tying
//! them together.

mod entry;
mod error;
mod reader;
mod segment;
mod state;
mod writer;

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

pub use crate::durable::entry::Entry;
pub use crate::durable::error::{AppendError, WalError};
pub use crate::durable::reader::{Chunk, Read, WalReader};
pub use crate::durable::segment::Position;
use crate::durable::segment::{
    HEADER, create_segment, list_segments, read_checkpoint, scan_segment, segment_path,
    write_checkpoint,
};
use crate::durable::state::{Shared, State};
use crate::durable::writer::{Msg, Writer};
use crate::telemetry::health::{RecentFailure, UNREADY_AFTER_FAILURE};
use crate::telemetry::metrics::Metrics;

/// Options of `Wal::open`.
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// Appends queued for the writer at most (each also holds memory
    /// accounted by the server's in-flight limit).
    pub queue: usize,
}

/// What was found in the log at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Segments left by the previous run (they are replayed first).
    pub segments: usize,
    pub entries: u64,
    pub bytes: u64,
    /// Bytes cut off torn or corrupt tails.
    pub truncated: u64,
    /// Segments already archived according to the checkpoint, deleted now.
    pub archived_segments: usize,
    /// Where replay starts.
    pub replay_from: Position,
    /// (drain token, frame id) of logged requests: a crash between fsync and
    /// response makes Logplex retry them, and they must not be stored twice.
    pub frames: Vec<(String, String)>,
}

/// The write-ahead log handle shared by request handlers and the uploader.
pub struct Wal {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Wal {
    /// Open the log in `dir`: check and trim what a previous run left, start
    /// a new segment and the writer thread.
    pub fn open(
        dir: &Path,
        options: WalOptions,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Wal>, Recovered), WalError> {
        let dir_err = |source| WalError::Dir {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(dir_err)?;
        let mut recovered = Recovered::default();
        let mut segments = BTreeSet::new();
        let mut total = 0u64;
        for seq in list_segments(dir).map_err(dir_err)? {
            let path = segment_path(dir, seq);
            let seg_err = |source| WalError::Segment {
                path: path.clone(),
                source,
            };
            let scan = scan_segment(&path).map_err(seg_err)?;
            if scan.valid_len < HEADER {
                // Not even a header: a segment created as the previous run died.
                fs::remove_file(&path).map_err(seg_err)?;
                continue;
            }
            if scan.valid_len < scan.file_len {
                let cut = scan.file_len - scan.valid_len;
                tracing::warn!(segment = %path.display(), bytes = cut, "write-ahead log: cutting off a torn or corrupt tail (never acknowledged)");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(seg_err)?;
                f.set_len(scan.valid_len).map_err(seg_err)?;
                f.sync_all().map_err(seg_err)?;
                recovered.truncated += cut;
            }
            recovered.segments += 1;
            recovered.entries += scan.entries;
            recovered.bytes += scan.valid_len;
            recovered.frames.extend(scan.frames);
            total += scan.valid_len;
            segments.insert(seq);
        }
        // Everything before the checkpoint is archived: drop those segments
        // and start reading at it.
        let mut start = Position {
            seq: segments.first().copied().unwrap_or(1),
            offset: HEADER,
        };
        if let Some(cp) = read_checkpoint(dir) {
            let archived: Vec<u64> = segments.range(..cp.seq).copied().collect();
            for seq in archived {
                let path = segment_path(dir, seq);
                let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path).map_err(|source| WalError::Segment { path, source })?;
                segments.remove(&seq);
                total = total.saturating_sub(len);
                recovered.archived_segments += 1;
            }
            if let Some(&first) = segments.first() {
                start = if first == cp.seq {
                    // A checkpoint past a cut tail means the tail was never there.
                    let valid = fs::metadata(segment_path(dir, first)).map_or(HEADER, |m| m.len());
                    Position {
                        seq: first,
                        offset: cp.offset.clamp(HEADER, valid),
                    }
                } else {
                    Position {
                        seq: first,
                        offset: HEADER,
                    }
                };
            } else {
                start = Position {
                    seq: cp.seq.max(1),
                    offset: HEADER,
                };
            }
        }
        recovered.replay_from = start;
        let current = segments.last().map_or(start.seq.max(1), |s| s + 1);
        if segments.is_empty() {
            start = Position {
                seq: current,
                offset: HEADER,
            };
        }
        let file = create_segment(dir, current)?;
        segments.insert(current);
        total += HEADER;

        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            start,
            state: Mutex::new(State {
                segments,
                current,
                committed: HEADER,
                closed: false,
            }),
            changed: Condvar::new(),
            bytes: AtomicU64::new(0),
            max_bytes: options.max_bytes,
            failures: RecentFailure::default(),
            metrics,
        });
        shared.add_bytes(total);
        shared
            .metrics
            .wal_segments
            .set(i64::try_from(shared.lock().segments.len()).unwrap_or(i64::MAX));
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let writer = Writer {
            shared: Arc::clone(&shared),
            file,
            len: HEADER,
            segment_bytes: options.segment_bytes,
            rx,
            buf: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run())
            .map_err(WalError::Thread)?;
        Ok((
            Arc::new(Wal {
                shared,
                tx,
                writer: Mutex::new(Some(handle)),
            }),
            recovered,
        ))
    }

    /// Log `entry` and wait until it is fsynced.
    pub async fn append(&self, entry: Entry) -> Result<(), AppendError> {
        if self.is_full() {
            return Err(AppendError::Full);
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Append(entry, done))
            .await
            .map_err(|_| AppendError::Closed)?;
        wait.await.map_err(|_| AppendError::Closed)?
    }

    /// Ask the writer to seal the current segment (when it holds records)
    /// so it can be deleted once archived. The uploader does this when it
    /// has caught up, so a quiet ingester keeps no archived data in its log
    /// (which a crash would otherwise replay as duplicates).
    pub fn request_roll(&self) {
        // A full queue means traffic, which rolls segments anyway.
        let _ = self.tx.try_send(Msg::Roll);
    }

    /// Bytes of all segment files.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Log bytes from `from` up to `to` (both positions in the log).
    pub fn bytes_between(&self, from: Position, to: Position) -> u64 {
        if from >= to {
            return 0;
        }
        let seqs: Vec<u64> = self
            .shared
            .lock()
            .segments
            .range(from.seq..=to.seq)
            .copied()
            .collect();
        seqs.into_iter()
            .map(|seq| {
                let len = fs::metadata(segment_path(&self.shared.dir, seq)).map_or(0, |m| m.len());
                let start = if seq == from.seq { from.offset } else { 0 };
                let end = if seq == to.seq {
                    to.offset.min(len)
                } else {
                    len
                };
                end.saturating_sub(start)
            })
            .sum()
    }

    /// The size bound (`--wal-max-bytes`).
    pub fn max_bytes(&self) -> u64 {
        self.shared.max_bytes
    }

    pub fn is_full(&self) -> bool {
        self.bytes() >= self.shared.max_bytes
    }

    /// Worth trying to append (under the bound, not closed)?
    pub fn accepts(&self) -> bool {
        !self.is_full() && !self.tx.is_closed()
    }

    /// Readiness: accepting, and no write failure just now.
    pub fn is_healthy(&self) -> bool {
        self.accepts() && !self.shared.failures.within(UNREADY_AFTER_FAILURE)
    }

    /// Stop accepting appends; the writer finishes what is queued, seals the
    /// current segment and exits. Returns once it has.
    pub async fn close(&self) {
        // If the writer is gone the send fails, which is fine: it is closed.
        let _ = self.tx.send(Msg::Close).await;
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// A reader from the oldest segment on.
    pub fn reader(self: &Arc<Self>) -> WalReader {
        WalReader {
            shared: Arc::clone(&self.shared),
            seq: self.shared.start.seq,
            offset: self.shared.start.offset,
            file: None,
        }
    }

    /// Where a new reader starts.
    pub fn start(&self) -> Position {
        self.shared.start
    }

    /// Record that everything before `pos` is archived. Not fsynced: a lost
    /// checkpoint only means more is replayed (duplicates, never loss).
    pub fn save_checkpoint(&self, pos: Position) -> io::Result<()> {
        write_checkpoint(&self.shared.dir, pos)
    }

    /// Delete every segment before `seq` (all archived), except the one
    /// being written.
    pub fn delete_before(&self, seq: u64) {
        let old: Vec<u64> = {
            let state = self.shared.lock();
            state
                .segments
                .range(..seq)
                .copied()
                .filter(|s| *s != state.current || state.closed)
                .collect()
        };
        for s in old {
            match self.delete_segment(s) {
                Ok(()) => {
                    tracing::debug!(segment = s, "write-ahead log segment archived and deleted")
                }
                Err(e) => {
                    tracing::error!(segment = s, error = %e, "cannot delete an archived write-ahead log segment")
                }
            }
        }
    }

    /// Delete a sealed segment whose data is all in the archive. Deleting
    /// one that is already gone is fine (several threads advance the
    /// checkpoint).
    pub fn delete_segment(&self, seq: u64) -> io::Result<()> {
        {
            // Claim it under the lock so only one caller unlinks it.
            let mut state = self.shared.lock();
            if seq == state.current && !state.closed {
                return Err(io::Error::other(
                    "refusing to delete the segment being written",
                ));
            }
            if !state.segments.remove(&seq) {
                return Ok(());
            }
            self.shared
                .metrics
                .wal_segments
                .set(i64::try_from(state.segments.len()).unwrap_or(i64::MAX));
        }
        let path = segment_path(&self.shared.dir, seq);
        let len = fs::metadata(&path)?.len();
        fs::remove_file(&path)?;
        self.shared.sub_bytes(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::durable::entry::tests::entry;

    fn options() -> WalOptions {
        WalOptions {
            max_bytes: 1 << 30,
            segment_bytes: 1 << 20,
            queue: 64,
        }
    }

    fn read_all(reader: &mut WalReader) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        loop {
            match reader
                .next_chunk(1 << 16, Duration::from_millis(50))
                .expect("read")
            {
                Read::Chunk(c) => chunks.push(c),
                Read::Idle | Read::End => return chunks,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_are_read_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let body = "x".repeat(100_000);
        let (wal, recovered) = Wal::open(dir.path(), options(), metrics.clone()).expect("open");
        assert_eq!(recovered.entries, 0);
        // One at a time, 20 x 100 KB roll 1 MiB segments...
        for i in 0..20 {
            wal.append(entry(i, &body)).await.expect("append");
        }
        assert!(wal.shared.lock().segments.len() >= 2);
        // ...and concurrent appends share fsyncs.
        let mut tasks = Vec::new();
        for i in 20..40 {
            let wal = Arc::clone(&wal);
            let e = entry(i, &body);
            tasks.push(tokio::spawn(async move { wal.append(e).await }));
        }
        for t in tasks {
            t.await.expect("join").expect("append");
        }
        wal.close().await;
        assert!(wal.append(entry(99, "late")).await.is_err());

        let (wal, recovered) = Wal::open(dir.path(), options(), metrics).expect("reopen");
        assert_eq!(recovered.entries, 40);
        assert_eq!(recovered.truncated, 0);
        assert_eq!(recovered.frames.len(), 20);
        let mut reader = wal.reader();
        let chunks = tokio::task::spawn_blocking(move || read_all(&mut reader))
            .await
            .expect("join");
        let got: Vec<u64> = chunks
            .iter()
            .flat_map(|c| c.entries.iter())
            .map(|e| (e.received_at_us - 1_781_000_000_000_000) as u64)
            .collect();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..40).collect::<Vec<_>>());
        assert!(
            chunks
                .iter()
                .all(|c| c.entries.iter().all(|e| e.body.len() == 100_000))
        );
        // Every old segment is reported done; the new current one is not.
        let done: Vec<u64> = chunks
            .iter()
            .filter(|c| c.segment_done())
            .map(|c| c.start.seq)
            .collect();
        assert_eq!(done.len(), recovered.segments);
        for seq in done {
            wal.delete_segment(seq).expect("delete");
        }
        assert_eq!(wal.shared.lock().segments.len(), 1);
        assert_eq!(wal.bytes(), HEADER);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_resumes_at_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let body = "c".repeat(200_000);
        let (wal, _) = Wal::open(dir.path(), options(), metrics.clone()).expect("open");
        for i in 0..12 {
            wal.append(entry(i, &body)).await.expect("append");
        }
        // Read 7 entries and call everything before them archived.
        let mut reader = wal.reader();
        let mut seen = 0;
        let mut end = Position::default();
        while seen < 7 {
            match reader
                .next_chunk(1, Duration::from_millis(50))
                .expect("read")
            {
                Read::Chunk(c) => {
                    seen += c.entries.len();
                    end = c.end;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        wal.save_checkpoint(end).expect("checkpoint");
        wal.delete_before(end.seq);
        drop(wal);

        let (wal, recovered) = Wal::open(dir.path(), options(), metrics).expect("reopen");
        assert_eq!(recovered.replay_from, end);
        let mut reader = wal.reader();
        let rest = tokio::task::spawn_blocking(move || read_all(&mut reader))
            .await
            .expect("join");
        let ids: Vec<i64> = rest
            .iter()
            .flat_map(|c| c.entries.iter())
            .map(|e| e.received_at_us - 1_781_000_000_000_000)
            .collect();
        assert_eq!(ids, (seen as i64..12).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_tail_is_cut_off_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let (wal, _) = Wal::open(dir.path(), options(), metrics.clone()).expect("open");
        for i in 0..3 {
            wal.append(entry(i, "hello\n")).await.expect("append");
        }
        wal.close().await;
        let seq = list_segments(dir.path()).expect("list")[0];
        let path = segment_path(dir.path(), seq);
        let full = fs::read(&path).expect("read");
        // A crash in the middle of writing the third record.
        fs::write(&path, &full[..full.len() - 5]).expect("tear");
        let (wal, recovered) = Wal::open(dir.path(), options(), metrics.clone()).expect("reopen");
        assert_eq!(recovered.entries, 2);
        assert!(recovered.truncated > 0);
        // A flipped bit is caught by the CRC as well.
        wal.close().await;
        let mut bytes = fs::read(&path).expect("read");
        let n = bytes.len();
        bytes[n - 2] ^= 0x40;
        fs::write(&path, &bytes).expect("corrupt");
        let (_wal, recovered) = Wal::open(dir.path(), options(), metrics).expect("reopen");
        assert_eq!(recovered.entries, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_appends_past_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = WalOptions {
            max_bytes: 2 << 20,
            segment_bytes: 1 << 20,
            queue: 8,
        };
        let (wal, _) = Wal::open(dir.path(), opts, Arc::new(Metrics::new())).expect("open");
        let body = "y".repeat(300_000);
        let mut full = false;
        for i in 0..20 {
            match wal.append(entry(i, &body)).await {
                Ok(()) => {}
                Err(AppendError::Full) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(full, "the bound was never hit");
        assert!(!wal.is_healthy());
        assert!(wal.bytes() <= (2 << 20) + 300_100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reader_follows_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _) = Wal::open(dir.path(), options(), Arc::new(Metrics::new())).expect("open");
        let mut reader = wal.reader();
        let handle = std::thread::spawn(move || {
            let mut seen = 0;
            loop {
                match reader
                    .next_chunk(1 << 16, Duration::from_secs(5))
                    .expect("read")
                {
                    Read::Chunk(c) => seen += c.entries.len(),
                    Read::Idle => panic!("writer data not seen"),
                    Read::End => return seen,
                }
            }
        });
        for i in 0..10 {
            wal.append(entry(i, "line\n")).await.expect("append");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wal.close().await;
        assert_eq!(handle.join().expect("join"), 10);
    }
}
