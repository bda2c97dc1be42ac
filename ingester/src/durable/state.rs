//! Where the log stands (its segments, the one being written, the committed
//! end), shared by the `Wal` handle, its writer thread and its readers.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::durable::segment::Position;
use crate::telemetry::health::RecentFailure;
use crate::telemetry::metrics::Metrics;

/// Where the log stands, shared by the writer, the reader and deletions.
#[derive(Debug)]
pub(super) struct State {
    /// Segment files on disk, sealed or current.
    pub(super) segments: BTreeSet<u64>,
    /// The segment being written.
    pub(super) current: u64,
    /// End of fsynced data in the current segment.
    pub(super) committed: u64,
    /// The writer has stopped; the current segment is sealed too.
    pub(super) closed: bool,
}

pub(super) struct Shared {
    pub(super) dir: PathBuf,
    /// Where reading starts: the checkpoint of the previous run.
    pub(super) start: Position,
    pub(super) state: Mutex<State>,
    pub(super) changed: Condvar,
    pub(super) bytes: AtomicU64,
    pub(super) max_bytes: u64,
    /// Write or fsync failures, for readiness.
    pub(super) failures: RecentFailure,
    pub(super) metrics: Arc<Metrics>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // State updates are single assignments; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn add_bytes(&self, n: u64) {
        let now = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        self.metrics
            .wal_bytes
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    pub(super) fn sub_bytes(&self, n: u64) {
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
