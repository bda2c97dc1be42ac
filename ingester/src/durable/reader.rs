//! Reading the log back in order, for the uploader, following the writer.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::durable::entry::{Entry, MAX_RECORD, RECORD_HEADER, split_header};
use crate::durable::segment::{HEADER, Position, segment_path};
use crate::durable::state::Shared;

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
    pub(super) fn segment_done(&self) -> bool {
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
    pub(super) shared: Arc<Shared>,
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) file: Option<File>,
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
