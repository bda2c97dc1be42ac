//! The operator's one retry-delay rule: `base * 2^attempt`, capped.
//!
//! Heroku calls and Glue's read-modify-write wait a jittered delay in the
//! upper half of that, so many reconciles backing off together spread out;
//! the controller's per-LogDrain requeue takes the delay itself and jitters
//! it by ±10% like every requeue ([`jittered`]).

use std::time::Duration;

use rand::Rng;

/// `base * 2^attempt` capped by `max`; the doubling stops at 2^16 so the
/// multiplication cannot overflow before the cap applies.
pub(crate) fn ceiling(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16)).min(max)
}

/// A delay drawn from the upper half of [`ceiling`]: `[c/2, c]`.
pub(crate) fn exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    let full = ceiling(base, max, attempt);
    if full.is_zero() {
        return full;
    }
    let micros = u64::try_from(full.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::rng().random_range(micros / 2..=micros))
}

/// `d` ± 10%, so LogDrains created together do not resync together.
pub(crate) fn jittered(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..1.1);
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..20 {
            let d = exponential(base, max, attempt);
            let full = base.saturating_mul(1 << attempt.min(16)).min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert_eq!(ceiling(base, max, 0), base);
        assert_eq!(ceiling(base, max, 3), Duration::from_millis(800));
        assert_eq!(ceiling(base, max, 40), max);
        assert_eq!(exponential(Duration::ZERO, max, 3), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(600));
            assert!(d >= Duration::from_secs(540) && d <= Duration::from_secs(660));
        }
    }
}
