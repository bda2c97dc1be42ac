//! The Heroku request budget, shared by every clone of a `HerokuClient`.
//!
//! Heroku gives each account a bucket of 4,500 request tokens that refills
//! continuously (about 75 a minute) and reports what is left in
//! `RateLimit-Remaining`. The bucket is per *account*, so other clients using
//! the same token (a person with the CLI, CI jobs) spend it too: the server's
//! figure is taken as the truth whenever a response carries it, and the local
//! bucket only fills the gaps between responses. Once the bucket is empty,
//! requests are paced at the refill rate instead of being sent into a 429.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How the local model of Heroku's bucket behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Tokens in a full bucket (Heroku: 4,500).
    pub capacity: u32,
    /// Tokens added per hour (Heroku: 4,500).
    pub refill_per_hour: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            capacity: 4500,
            refill_per_hour: 4500,
        }
    }
}

/// What the limiter knows at one instant, for metrics and status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitSnapshot {
    /// The last `RateLimit-Remaining` Heroku reported, if any response had one.
    pub server_remaining: Option<u32>,
    /// Whole tokens the local bucket holds now (after refill).
    pub local_tokens: u32,
    /// Time left in a pause imposed by a 429 (zero when not paused).
    pub paused_for: Duration,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last_refill: Instant,
    server_remaining: Option<u32>,
    paused_until: Option<Instant>,
}

/// A token bucket shared through an `Arc`; cloning shares the budget.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    config: RateLimitConfig,
    state: Arc<Mutex<State>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter {
            config,
            state: Arc::new(Mutex::new(State {
                tokens: f64::from(config.capacity),
                last_refill: Instant::now(),
                server_remaining: None,
                paused_until: None,
            })),
        }
    }

    pub fn config(&self) -> RateLimitConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the numbers invalid
        // (every update is a plain store), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refill_per_sec(&self) -> f64 {
        f64::from(self.config.refill_per_hour) / 3600.0
    }

    fn refill(&self, s: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(s.last_refill).as_secs_f64();
        s.tokens =
            (s.tokens + elapsed * self.refill_per_sec()).min(f64::from(self.config.capacity));
        s.last_refill = now;
    }

    /// How long the caller must wait before it may send; zero means a token
    /// was taken and the request may go now.
    fn try_acquire(&self, now: Instant) -> Duration {
        let mut s = self.lock();
        if let Some(until) = s.paused_until {
            if until > now {
                return until - now;
            }
            s.paused_until = None;
        }
        self.refill(&mut s, now);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            return Duration::ZERO;
        }
        let rate = self.refill_per_sec();
        if rate <= 0.0 {
            // No refill configured: waiting cannot help, but never spin.
            return Duration::from_secs(1);
        }
        Duration::from_secs_f64(((1.0 - s.tokens) / rate).max(0.001))
    }

    /// Waits until the budget allows one more request, then takes it.
    pub async fn acquire(&self) {
        loop {
            let wait = self.try_acquire(Instant::now());
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Records Heroku's `RateLimit-Remaining`: the account-wide truth.
    pub fn observe_remaining(&self, remaining: u32) {
        let mut s = self.lock();
        let now = Instant::now();
        self.refill(&mut s, now);
        s.server_remaining = Some(remaining);
        s.tokens = f64::from(remaining.min(self.config.capacity));
    }

    /// Records a 429: nobody sharing this limiter sends until `pause` is over.
    pub fn observe_throttled(&self, pause: Duration) {
        let mut s = self.lock();
        let now = Instant::now();
        self.refill(&mut s, now);
        s.tokens = 0.0;
        s.server_remaining = Some(0);
        let until = now + pause;
        s.paused_until = Some(match s.paused_until {
            Some(existing) if existing > until => existing,
            _ => until,
        });
    }

    pub fn snapshot(&self) -> RateLimitSnapshot {
        let mut s = self.lock();
        let now = Instant::now();
        self.refill(&mut s, now);
        RateLimitSnapshot {
            server_remaining: s.server_remaining,
            local_tokens: s.tokens.max(0.0).floor() as u32,
            paused_for: s
                .paused_until
                .map(|u| u.saturating_duration_since(now))
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn takes_tokens_until_empty_then_asks_to_wait_for_refill() {
        let rl = RateLimiter::new(RateLimitConfig {
            capacity: 2,
            refill_per_hour: 3600,
        });
        let now = Instant::now();
        assert_eq!(rl.try_acquire(now), Duration::ZERO);
        assert_eq!(rl.try_acquire(now), Duration::ZERO);
        let wait = rl.try_acquire(now);
        // One token a second: the third request waits about a second.
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn server_remaining_overrides_the_local_estimate() {
        let rl = RateLimiter::new(RateLimitConfig::default());
        rl.observe_remaining(0);
        let snap = rl.snapshot();
        assert_eq!(snap.server_remaining, Some(0));
        assert_eq!(snap.local_tokens, 0);
        assert!(!rl.try_acquire(Instant::now()).is_zero());
    }

    #[test]
    fn a_429_pauses_every_clone() {
        let rl = RateLimiter::new(RateLimitConfig::default());
        let other = rl.clone();
        rl.observe_throttled(Duration::from_secs(30));
        let wait = other.try_acquire(Instant::now());
        assert!(wait > Duration::from_secs(29), "{wait:?}");
        assert!(other.snapshot().paused_for > Duration::from_secs(29));
    }

    #[test]
    fn a_shorter_pause_does_not_cut_a_longer_one() {
        let rl = RateLimiter::new(RateLimitConfig::default());
        rl.observe_throttled(Duration::from_secs(30));
        rl.observe_throttled(Duration::from_secs(1));
        assert!(rl.snapshot().paused_for > Duration::from_secs(29));
    }
}
