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

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use crate::parse::BodyFormat;
use crate::telemetry::health::{RecentFailure, UNREADY_AFTER_FAILURE};
use crate::telemetry::metrics::Metrics;

const MAGIC: &[u8; 8] = b"DPWAL\x00\x00\x01";
const HEADER: u64 = MAGIC.len() as u64;
const RECORD_HEADER: usize = 8;
const PAYLOAD_VERSION: u8 = 1;
/// Anything longer is corruption: bodies are capped far below this.
const MAX_RECORD: u32 = 1 << 30;
/// Upper bound of one group commit, so a flood of requests still gets acks
/// in steps instead of one huge write.
const MAX_GROUP_BYTES: usize = 64 << 20;

const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const CHECKPOINT_TAG: &str = "drainpipe-wal-checkpoint-v1";

/// A place in the log: segment and byte offset (ordered as the log is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub seq: u64,
    pub offset: u64,
}

const FLAG_TOKEN: u8 = 1;
const FLAG_FRAME: u8 = 2;
const FLAG_COUNT: u8 = 4;
/// The body holds syslog-drain frames (`BodyFormat::SyslogFrames`).
const FLAG_SYSLOG: u8 = 8;

/// One received request, as logged and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub app: String,
    pub drain_token: Option<String>,
    pub frame_id: Option<String>,
    pub msg_count: Option<u64>,
    pub received_at_us: i64,
    /// How `body` is framed.
    pub format: BodyFormat,
    pub body: Bytes,
}

impl Entry {
    fn encoded_len(&self) -> usize {
        RECORD_HEADER + self.payload_len()
    }

    fn payload_len(&self) -> usize {
        2 + 8
            + 8
            + 4
            + 4
            + 4
            + self.app.len()
            + self.drain_token.as_ref().map_or(0, String::len)
            + self.frame_id.as_ref().map_or(0, String::len)
            + self.body.len()
    }

    /// Append `[len][crc][payload]` to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; RECORD_HEADER]);
        let mut flags = 0;
        if self.drain_token.is_some() {
            flags |= FLAG_TOKEN;
        }
        if self.frame_id.is_some() {
            flags |= FLAG_FRAME;
        }
        if self.msg_count.is_some() {
            flags |= FLAG_COUNT;
        }
        if self.format == BodyFormat::SyslogFrames {
            flags |= FLAG_SYSLOG;
        }
        let token = self.drain_token.as_deref().unwrap_or("");
        let frame = self.frame_id.as_deref().unwrap_or("");
        out.push(PAYLOAD_VERSION);
        out.push(flags);
        out.extend_from_slice(&self.received_at_us.to_le_bytes());
        out.extend_from_slice(&self.msg_count.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&len32(self.app.len()).to_le_bytes());
        out.extend_from_slice(&len32(token.len()).to_le_bytes());
        out.extend_from_slice(&len32(frame.len()).to_le_bytes());
        out.extend_from_slice(self.app.as_bytes());
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(frame.as_bytes());
        out.extend_from_slice(&self.body);
        let payload = &out[start + RECORD_HEADER..];
        let len = len32(payload.len());
        let crc = crc32fast::hash(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decode a payload whose CRC was checked; `payload` is a slice of a
    /// shared buffer, so the body is not copied.
    fn decode(payload: Bytes) -> Option<Entry> {
        let p = &payload[..];
        if p.len() < 30 || p[0] != PAYLOAD_VERSION {
            return None;
        }
        let flags = p[1];
        let received_at_us = i64::from_le_bytes(p[2..10].try_into().ok()?);
        let msg_count = u64::from_le_bytes(p[10..18].try_into().ok()?);
        let app_len = u32::from_le_bytes(p[18..22].try_into().ok()?) as usize;
        let token_len = u32::from_le_bytes(p[22..26].try_into().ok()?) as usize;
        let frame_len = u32::from_le_bytes(p[26..30].try_into().ok()?) as usize;
        let mut at = 30usize;
        let mut take = |n: usize| -> Option<std::ops::Range<usize>> {
            let end = at.checked_add(n)?;
            (end <= p.len()).then(|| {
                let r = at..end;
                at = end;
                r
            })
        };
        let app = take(app_len)?;
        let token = take(token_len)?;
        let frame = take(frame_len)?;
        let text = |r: std::ops::Range<usize>| String::from_utf8(p[r].to_vec()).ok();
        Some(Entry {
            app: text(app)?,
            drain_token: if flags & FLAG_TOKEN != 0 {
                Some(text(token)?)
            } else {
                None
            },
            frame_id: if flags & FLAG_FRAME != 0 {
                Some(text(frame)?)
            } else {
                None
            },
            msg_count: (flags & FLAG_COUNT != 0).then_some(msg_count),
            received_at_us,
            format: if flags & FLAG_SYSLOG != 0 {
                BodyFormat::SyslogFrames
            } else {
                BodyFormat::LogplexHttps
            },
            body: payload.slice(at..),
        })
    }
}

fn len32(n: usize) -> u32 {
    // Callers keep headers and bodies far below 4 GiB (max body, header limits).
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("write-ahead log segment {path}: {source}")]
    Segment { path: PathBuf, source: io::Error },
    #[error("cannot start the write-ahead log writer thread: {0}")]
    Thread(io::Error),
}

/// Why an append was not made durable; the request gets 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("write-ahead log is over its size bound")]
    Full,
    #[error("write-ahead log write or fsync failed")]
    Io,
    #[error("write-ahead log is closed")]
    Closed,
}

/// Where the log stands, shared by the writer, the reader and deletions.
#[derive(Debug)]
struct State {
    /// Segment files on disk, sealed or current.
    segments: BTreeSet<u64>,
    /// The segment being written.
    current: u64,
    /// End of fsynced data in the current segment.
    committed: u64,
    /// The writer has stopped; the current segment is sealed too.
    closed: bool,
}

struct Shared {
    dir: PathBuf,
    /// Where reading starts: the checkpoint of the previous run.
    start: Position,
    state: Mutex<State>,
    changed: Condvar,
    bytes: AtomicU64,
    max_bytes: u64,
    /// Write or fsync failures, for readiness.
    failures: RecentFailure,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // State updates are single assignments; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_bytes(&self, n: u64) {
        let now = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        self.metrics
            .wal_bytes
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    fn sub_bytes(&self, n: u64) {
        let prev = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            })
            .unwrap_or(0);
        let now = prev.saturating_sub(n);
        self.metrics
            .wal_bytes
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }
}

enum Msg {
    Append(Entry, oneshot::Sender<Result<(), AppendError>>),
    /// Seal the current segment if it holds anything.
    Roll,
    Close,
}

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

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for item in fs::read_dir(dir)? {
        let name = item?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_suffix(".wal")
            .and_then(|s| s.parse::<u64>().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// The checkpoint, if one is there and well-formed (anything else: replay
/// everything, which is always safe).
fn read_checkpoint(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join(CHECKPOINT)).ok()?;
    let mut parts = text.split_ascii_whitespace();
    if parts.next()? != CHECKPOINT_TAG {
        return None;
    }
    let seq = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(Position { seq, offset })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Result of checking one segment: its valid length and entries.
struct Scan {
    valid_len: u64,
    file_len: u64,
    entries: u64,
    frames: Vec<(String, String)>,
}

/// Read a segment from the start, checking every record's CRC, up to the
/// first record that is incomplete or corrupt.
fn scan_segment(path: &Path) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut scan = Scan {
        valid_len: 0,
        file_len,
        entries: 0,
        frames: Vec::new(),
    };
    let mut magic = [0u8; HEADER as usize];
    if file_len < HEADER || file.read_exact_at(&mut magic, 0).is_err() || &magic != MAGIC {
        return Ok(scan);
    }
    let mut offset = HEADER;
    while let Some((payload, next)) = read_record(&file, offset, file_len)? {
        let Some(entry) = Entry::decode(payload) else {
            break;
        };
        if let (Some(t), Some(f)) = (entry.drain_token, entry.frame_id) {
            scan.frames.push((t, f));
        }
        scan.entries += 1;
        offset = next;
    }
    scan.valid_len = offset;
    Ok(scan)
}

/// One checked record at `offset`, or None if what is there is not a
/// complete, valid record.
fn read_record(file: &File, offset: u64, end: u64) -> io::Result<Option<(Bytes, u64)>> {
    if end < offset + RECORD_HEADER as u64 {
        return Ok(None);
    }
    let mut header = [0u8; RECORD_HEADER];
    file.read_exact_at(&mut header, offset)?;
    let (len, crc) = split_header(&header);
    if len > MAX_RECORD || offset + RECORD_HEADER as u64 + u64::from(len) > end {
        return Ok(None);
    }
    let mut payload = BytesMut::zeroed(len as usize);
    file.read_exact_at(&mut payload, offset + RECORD_HEADER as u64)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(Some((
        payload.freeze(),
        offset + RECORD_HEADER as u64 + u64::from(len),
    )))
}

fn split_header(h: &[u8; RECORD_HEADER]) -> (u32, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (len, crc)
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
        let tmp = self.shared.dir.join(CHECKPOINT_TMP);
        fs::write(
            &tmp,
            format!("{CHECKPOINT_TAG} {} {}\n", pos.seq, pos.offset),
        )?;
        fs::rename(&tmp, self.shared.dir.join(CHECKPOINT))
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

fn create_segment(dir: &Path, seq: u64) -> Result<File, WalError> {
    let path = segment_path(dir, seq);
    let seg_err = |source| WalError::Segment {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(seg_err)?;
    file.write_all(MAGIC).map_err(seg_err)?;
    file.sync_all().map_err(seg_err)?;
    // The new name must survive a crash too, or its records would vanish.
    sync_dir(dir).map_err(seg_err)?;
    Ok(file)
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    /// Valid (written and synced) length of the current segment.
    len: u64,
    segment_bytes: u64,
    rx: mpsc::Receiver<Msg>,
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        let mut waiting: Vec<oneshot::Sender<Result<(), AppendError>>> = Vec::new();
        let mut closing = false;
        while !closing {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            self.buf.clear();
            waiting.clear();
            let mut roll = false;
            let mut next = Some(first);
            // Take everything queued behind the previous fsync: one write,
            // one fsync for all of it.
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Append(entry, done) => {
                        self.buf.reserve(entry.encoded_len());
                        entry.encode_into(&mut self.buf);
                        waiting.push(done);
                    }
                    Msg::Roll => {
                        roll = true;
                    }
                    Msg::Close => {
                        closing = true;
                        break;
                    }
                }
                if self.buf.len() < MAX_GROUP_BYTES {
                    next = self.rx.try_recv().ok();
                }
            }
            if roll && waiting.is_empty() && self.len > HEADER {
                let _ = self.roll();
            }
            if waiting.is_empty() {
                continue;
            }
            let result = self.commit();
            for done in waiting.drain(..) {
                // The request may have gone away (client timeout); nothing to do.
                let _ = done.send(result);
            }
        }
        // Refuse whatever is still queued, then seal.
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Append(_, done) = msg {
                let _ = done.send(Err(AppendError::Closed));
            }
        }
        if let Err(e) = self.file.sync_all() {
            tracing::error!(error = %e, "write-ahead log: final fsync failed");
        }
        let mut state = self.shared.lock();
        state.closed = true;
        self.shared.changed.notify_all();
    }

    fn commit(&mut self) -> Result<(), AppendError> {
        let started = Instant::now();
        if self.len > HEADER && self.len + self.buf.len() as u64 > self.segment_bytes {
            self.roll()?;
        }
        let write = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&self.buf))
            .and_then(|()| self.file.sync_data());
        match write {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.shared.add_bytes(self.buf.len() as u64);
                self.shared.failures.succeeded();
                let mut state = self.shared.lock();
                state.committed = self.len;
                self.shared.changed.notify_all();
                drop(state);
                tracing::trace!(bytes = self.buf.len(), took = ?started.elapsed(), "group commit");
                Ok(())
            }
            Err(e) => {
                self.fail(&e);
                // Cut what may have reached the file so the uploader never
                // sees records nobody was told are durable. If even that
                // fails, continue in a fresh segment.
                let cut = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_all());
                if let Err(e) = cut {
                    tracing::error!(error = %e, "write-ahead log: cannot trim after a failed write; starting a new segment");
                    let _ = self.roll();
                }
                Err(AppendError::Io)
            }
        }
    }

    fn fail(&self, e: &io::Error) {
        tracing::error!(error = %e, "write-ahead log write failed; answering 503");
        self.shared.metrics.wal_write_errors.inc();
        self.shared.failures.failed();
    }

    /// Seal the current segment and continue in the next one.
    fn roll(&mut self) -> Result<(), AppendError> {
        let next = self.shared.lock().current + 1;
        let file = match create_segment(&self.shared.dir, next) {
            Ok(f) => f,
            Err(e) => {
                let io = match &e {
                    WalError::Segment { source, .. } | WalError::Dir { source, .. } => {
                        io::Error::new(source.kind(), e.to_string())
                    }
                    WalError::Thread(source) => io::Error::new(source.kind(), e.to_string()),
                };
                // A half-created segment would otherwise confuse the next start.
                let _ = fs::remove_file(segment_path(&self.shared.dir, next));
                self.fail(&io);
                return Err(AppendError::Io);
            }
        };
        self.file = file;
        self.len = HEADER;
        self.shared.add_bytes(HEADER);
        let mut state = self.shared.lock();
        state.segments.insert(next);
        state.current = next;
        state.committed = HEADER;
        self.shared
            .metrics
            .wal_segments
            .set(i64::try_from(state.segments.len()).unwrap_or(i64::MAX));
        self.shared.changed.notify_all();
        Ok(())
    }
}

/// Entries read back in log order, for the uploader.
#[derive(Debug)]
pub struct Chunk {
    /// Log position of the first entry.
    pub start: Position,
    /// Log position just after the last entry (the next segment's start
    /// when the chunk ends a sealed segment).
    pub end: Position,
    pub entries: Vec<Entry>,
}

impl Chunk {
    /// The segment is sealed and this chunk ends it (the uploader needs no
    /// flag: it deletes by position).
    #[cfg(test)]
    fn segment_done(&self) -> bool {
        self.end.seq > self.start.seq
    }
}

#[derive(Debug)]
pub enum Read {
    Chunk(Chunk),
    /// Nothing new within the wait.
    Idle,
    /// The log is closed and everything has been read.
    End,
}

/// Reads the log from the oldest segment on, following the writer.
pub struct WalReader {
    shared: Arc<Shared>,
    seq: u64,
    offset: u64,
    file: Option<File>,
}

impl WalReader {
    /// The next entries (about `max_bytes` of them, at least one), waiting up
    /// to `wait` for the writer when everything committed has been read.
    pub fn next_chunk(&mut self, max_bytes: usize, wait: Duration) -> io::Result<Read> {
        let deadline = Instant::now() + wait;
        let (end, sealed) = {
            let mut state = self.shared.lock();
            loop {
                if !state.segments.contains(&self.seq) {
                    // Deleted or never existed: go on with the next one.
                    match state.segments.range(self.seq..).next() {
                        Some(&s) => {
                            self.seq = s;
                            self.offset = HEADER;
                            self.file = None;
                        }
                        None => return Ok(Read::End),
                    }
                }
                if self.seq < state.current || state.closed {
                    break (None, true);
                }
                if self.offset < state.committed {
                    break (Some(state.committed), false);
                }
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Read::Idle);
                }
                state = self
                    .shared
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        let file = match self.file.take() {
            Some(f) => f,
            None => File::open(segment_path(&self.shared.dir, self.seq))?,
        };
        // A sealed segment is complete on disk: read it to its end.
        let end = match end {
            Some(end) => end,
            None => file.metadata()?.len(),
        };
        let start = Position {
            seq: self.seq,
            offset: self.offset,
        };
        let entries = self.read_entries(&file, end, max_bytes)?;
        self.file = Some(file);
        if sealed && (self.offset >= end || entries.is_none()) {
            if self.offset < end {
                tracing::error!(
                    segment = self.seq,
                    offset = self.offset,
                    "write-ahead log: corrupt record in a sealed segment; the rest of it is skipped"
                );
            }
            let chunk = Chunk {
                start,
                end: Position {
                    seq: self.seq + 1,
                    offset: 0,
                },
                entries: entries.unwrap_or_default(),
            };
            self.seq += 1;
            self.offset = HEADER;
            self.file = None;
            return Ok(Read::Chunk(chunk));
        }
        match entries {
            Some(entries) => Ok(Read::Chunk(Chunk {
                start,
                end: Position {
                    seq: self.seq,
                    offset: self.offset,
                },
                entries,
            })),
            // Committed data always has valid records; this is a broken disk.
            None => Err(io::Error::other(format!(
                "write-ahead log segment {}: corrupt record at offset {} below the committed end",
                self.seq, self.offset
            ))),
        }
    }

    /// Read whole records from `self.offset` up to `end`, about `max_bytes`
    /// of them. None when the record at the offset is invalid.
    fn read_entries(
        &mut self,
        file: &File,
        end: u64,
        max_bytes: usize,
    ) -> io::Result<Option<Vec<Entry>>> {
        if self.offset >= end {
            return Ok(Some(Vec::new()));
        }
        if end - self.offset < RECORD_HEADER as u64 {
            return Ok(None);
        }
        let mut want = (end - self.offset).min(max_bytes as u64) as usize;
        // Make sure at least the first record fits in the read.
        let mut header = [0u8; RECORD_HEADER];
        file.read_exact_at(&mut header, self.offset)?;
        let (first_len, _) = split_header(&header);
        if first_len > MAX_RECORD {
            return Ok(None);
        }
        let first_total = RECORD_HEADER + first_len as usize;
        if (end - self.offset) < first_total as u64 {
            return Ok(None);
        }
        want = want.max(first_total);
        let mut buf = BytesMut::zeroed(want);
        file.read_exact_at(&mut buf, self.offset)?;
        let buf = buf.freeze();
        let mut entries = Vec::new();
        let mut at = 0usize;
        while at + RECORD_HEADER <= buf.len() {
            let mut h = [0u8; RECORD_HEADER];
            h.copy_from_slice(&buf[at..at + RECORD_HEADER]);
            let (len, crc) = split_header(&h);
            let total = RECORD_HEADER + len as usize;
            if len > MAX_RECORD || at + total > buf.len() {
                break;
            }
            let payload = buf.slice(at + RECORD_HEADER..at + total);
            if crc32fast::hash(&payload) != crc {
                return Ok(if entries.is_empty() {
                    None
                } else {
                    Some(entries)
                });
            }
            match Entry::decode(payload) {
                Some(e) => entries.push(e),
                None => {
                    return Ok(if entries.is_empty() {
                        None
                    } else {
                        Some(entries)
                    });
                }
            }
            at += total;
            self.offset += total as u64;
        }
        Ok(Some(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, body: &str) -> Entry {
        Entry {
            app: "shop".into(),
            drain_token: Some("d.11111111-2222-3333-4444-555555555555".into()),
            frame_id: i.is_multiple_of(2).then(|| format!("F{i:030X}")),
            msg_count: (!i.is_multiple_of(3)).then_some(i),
            received_at_us: 1_781_000_000_000_000 + i as i64,
            format: if i.is_multiple_of(5) {
                BodyFormat::SyslogFrames
            } else {
                BodyFormat::LogplexHttps
            },
            body: Bytes::from(body.to_owned()),
        }
    }

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

    #[test]
    fn entries_round_trip() {
        for i in 0..6 {
            let e = entry(
                i,
                "83 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed\n",
            );
            let mut buf = Vec::new();
            e.encode_into(&mut buf);
            assert_eq!(buf.len(), e.encoded_len());
            let payload = Bytes::from(buf).slice(RECORD_HEADER..);
            assert_eq!(Entry::decode(payload), Some(e));
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
