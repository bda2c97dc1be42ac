//! Pacing of the periodic drift checks within a share of Heroku's request
//! budget.
//!
//! Heroku gives an account one bucket of 4,500 requests an hour, shared by
//! everything that uses the account's tokens: people with the CLI, deploy
//! scripts, CI. A drift check of an app costs one list request, so checking
//! every app each resync would cost `apps x 3600 / resync` an hour: 6,000 at
//! 1,000 apps and the default 10 minutes, more than the whole bucket. So the
//! periodic re-checks may spend only `--heroku-budget-share` of the refill
//! rate, and the time between two checks of one app stretches to fit:
//!
//! ```text
//! interval = max(resync, apps x 3600 s / (share x refill per hour))
//! ```
//!
//! They also wait while Heroku's `RateLimit-Remaining` is below the part of
//! the bucket kept for the account's other clients (`(1 - share) x
//! capacity`): when others spend more, the checks give way.
//!
//! Only periodic re-checks are paced. An app never verified, a changed spec
//! (endpoint, password, token) and a repair are handled at once.

use std::time::Duration;

use crate::controller::Context;
use crate::crd::LogDrain;

/// How the periodic checks are paced right now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Pacing {
    /// Time between two periodic checks of one app.
    pub(crate) interval: Duration,
    /// False while Heroku reports less budget left than is kept for the
    /// account's other clients: periodic checks wait.
    pub(crate) allowed: bool,
}

impl Pacing {
    /// Whether an app verified `age` ago is still fresh. A LogDrain is
    /// looked at every resync, so an app is re-checked at the first look
    /// after `interval - resync / 2`: on average once an interval.
    pub(crate) fn fresh(&self, age: Duration, resync: Duration) -> bool {
        !self.allowed || age < self.interval.saturating_sub(resync / 2)
    }
}

/// The time between two periodic checks of one app, for `apps` apps in all.
pub(crate) fn check_interval(
    apps: usize,
    resync: Duration,
    share: f64,
    refill_per_hour: u32,
) -> Duration {
    let per_hour = share.clamp(0.0, 1.0) * f64::from(refill_per_hour);
    if per_hour <= 0.0 {
        return resync;
    }
    let needed = Duration::from_secs_f64(apps as f64 * 3600.0 / per_hour);
    resync.max(needed)
}

/// Whether periodic checks may spend now: Heroku's last `remaining` is
/// above what is kept for the account's other clients. Unknown (no answer
/// yet) counts as allowed.
pub(crate) fn checks_allowed(remaining: Option<u32>, capacity: u32, share: f64) -> bool {
    let kept = (1.0 - share.clamp(0.0, 1.0)) * f64::from(capacity);
    remaining.is_none_or(|r| f64::from(r) > kept)
}

impl Context {
    /// The pacing of periodic checks now, over every app of every LogDrain
    /// this operator watches. Logs a line (and sets the metric) when the
    /// interval changes.
    pub(crate) fn pacing(&self) -> Pacing {
        let apps: usize = self
            .stores
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|s| s.state())
            .filter(|ld: &std::sync::Arc<LogDrain>| !ld.spec.suspend)
            .map(|ld| ld.app_set().len())
            .sum();
        let s = &self.settings;
        let limits = self.heroku.options().rate_limit;
        let interval = check_interval(
            apps,
            s.resync,
            s.heroku_budget_share,
            limits.refill_per_hour,
        );
        let allowed = checks_allowed(
            self.heroku.rate_limit().server_remaining,
            limits.capacity,
            s.heroku_budget_share,
        );
        let secs = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX);
        let before = self.metrics.check_interval.set(secs);
        if before != secs {
            tracing::info!(
                apps,
                interval_secs = secs,
                budget_share = s.heroku_budget_share,
                "each app's drain is checked with Heroku every {secs} s, within {:.0}% of the account's {} requests an hour",
                s.heroku_budget_share * 100.0,
                limits.refill_per_hour
            );
        }
        Pacing { interval, allowed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_MIN: Duration = Duration::from_secs(600);

    /// docs/operations.md's table: 10, 100 and 1,000 apps at the default
    /// resync (10 minutes) and share (50% of 4,500 an hour).
    #[test]
    fn the_interval_stretches_only_past_what_the_share_allows() {
        assert_eq!(check_interval(10, TEN_MIN, 0.5, 4500), TEN_MIN);
        assert_eq!(check_interval(100, TEN_MIN, 0.5, 4500), TEN_MIN);
        assert_eq!(
            check_interval(1000, TEN_MIN, 0.5, 4500),
            Duration::from_secs(1600)
        );
        // 1,000 apps checked every 1,600 s is 2,250 requests an hour: the
        // share exactly.
        let per_hour = 1000.0 * 3600.0 / 1600.0;
        assert_eq!(per_hour, 0.5 * 4500.0);
        assert_eq!(check_interval(0, TEN_MIN, 0.5, 4500), TEN_MIN);
        assert_eq!(check_interval(1000, TEN_MIN, 0.0, 4500), TEN_MIN);
    }

    #[test]
    fn checks_give_way_when_others_spend_the_bucket() {
        assert!(checks_allowed(None, 4500, 0.5));
        assert!(checks_allowed(Some(4000), 4500, 0.5));
        assert!(!checks_allowed(Some(2250), 4500, 0.5));
        assert!(!checks_allowed(Some(100), 4500, 0.5));
        assert!(checks_allowed(Some(100), 4500, 1.0));
    }

    #[test]
    fn an_app_is_due_half_a_resync_before_its_interval() {
        let resync = Duration::from_secs(60);
        let p = Pacing {
            interval: Duration::from_secs(1600),
            allowed: true,
        };
        assert!(p.fresh(Duration::from_secs(1500), resync));
        assert!(!p.fresh(Duration::from_secs(1570), resync));
        // The same as before pacing when nothing stretches.
        let p = Pacing {
            interval: resync,
            allowed: true,
        };
        assert!(p.fresh(Duration::from_secs(29), resync));
        assert!(!p.fresh(Duration::from_secs(30), resync));
        let held = Pacing {
            allowed: false,
            ..p
        };
        assert!(held.fresh(Duration::from_secs(3600), resync));
    }
}
