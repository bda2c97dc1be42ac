//! The writer thread: takes queued appends, writes and fsyncs them together
//! (group commit), answers each request, and rolls to a new segment.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::durable::entry::Entry;
use crate::durable::error::{AppendError, WalError};
use crate::durable::segment::{HEADER, create_segment, segment_path};
use crate::durable::state::Shared;

/// Upper bound of one group commit, so a flood of requests still gets acks
/// in steps instead of one huge write.
const MAX_GROUP_BYTES: usize = 64 << 20;

pub(super) enum Msg {
    Append(Entry, oneshot::Sender<Result<(), AppendError>>),
    /// Seal the current segment if it holds anything.
    Roll,
    Close,
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) file: File,
    /// Valid (written and synced) length of the current segment.
    pub(super) len: u64,
    pub(super) segment_bytes: u64,
    pub(super) rx: mpsc::Receiver<Msg>,
    pub(super) buf: Vec<u8>,
}

impl Writer {
    pub(super) fn run(mut self) {
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
                let took = started.elapsed();
                self.shared
                    .metrics
                    .wal_commit_latency
                    .observe(took.as_secs_f64());
                tracing::trace!(bytes = self.buf.len(), ?took, "group commit");
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
