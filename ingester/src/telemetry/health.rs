//! Readiness after a failure: a replica that could not make data durable
//! reports not ready for a while, then ready again so it gets the traffic
//! that tells whether it recovered. (Staying unready until a success would
//! never end: an unready pod gets no requests to succeed with.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a failure keeps readiness false.
pub const UNREADY_AFTER_FAILURE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RecentFailure {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last failure plus one; 0: none
    /// since the last success.
    failed_at: AtomicU64,
}

impl Default for RecentFailure {
    fn default() -> Self {
        RecentFailure {
            epoch: Instant::now(),
            failed_at: AtomicU64::new(0),
        }
    }
}

impl RecentFailure {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn failed(&self) {
        self.failed_at.store(self.now_ms() + 1, Ordering::Relaxed);
    }

    pub fn succeeded(&self) {
        self.failed_at.store(0, Ordering::Relaxed);
    }

    /// A failure within `window` and no success since.
    pub fn within(&self, window: Duration) -> bool {
        let at = self.failed_at.load(Ordering::Relaxed);
        at != 0 && self.now_ms().saturating_sub(at - 1) < window.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_expire_and_successes_clear_them() {
        let f = RecentFailure::default();
        assert!(!f.within(Duration::from_secs(10)));
        f.failed();
        assert!(f.within(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!f.within(Duration::from_millis(10)));
        f.failed();
        f.succeeded();
        assert!(!f.within(Duration::from_secs(10)));
    }
}
