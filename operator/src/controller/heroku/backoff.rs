//! Per-app retry waits: an app whose Heroku call failed is not called again
//! before its wait is over, however many reconciles the watches trigger in
//! between (status writes, owned objects, other apps' changes). The wait is
//! the one the LogDrain-level retry rule would pick ([`crate::backoff`]),
//! counted per app, so one failing app neither hammers Heroku nor holds the
//! others back.
//!
//! A wait ends early when what the call depends on changes: the API token,
//! the drain URL, or the LogDrain's spec (its generation). That is what a
//! person fixing the cause changes, and the change triggers a reconcile.

use std::fmt;
use std::time::{Duration, Instant};

use crate::backoff;
use crate::controller::{Context, Settings, lock};
use crate::heroku::HerokuError;

/// Why an app waits, and for how long: said in the status so a person knows
/// whether Heroku asked for the wait or the operator chose it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Heroku's `Retry-After` (capped by the longest retry wait).
    RetryAfter(Duration),
    /// The operator's own exponential backoff after `failures` failures in a
    /// row.
    Backoff { wait: Duration, failures: u32 },
}

impl Wait {
    pub(crate) fn duration(&self) -> Duration {
        match self {
            Wait::RetryAfter(d) | Wait::Backoff { wait: d, .. } => *d,
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::RetryAfter(d) => write!(f, "Heroku sent Retry-After: {} s", secs(*d)),
            Wait::Backoff { wait, failures } => write!(
                f,
                "backing off {} s after {failures} failure{}",
                secs(*wait),
                if *failures == 1 { "" } else { "s" }
            ),
        }
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil() as u64
}

/// The wait after an app's `failures`-th failure in a row with `err`: what
/// Heroku asked for, else exponential from `retry_base` for passing
/// troubles, else the longest wait (a person has to act, and their change
/// ends the wait).
pub(crate) fn wait_after(settings: &Settings, err: &HerokuError, failures: u32) -> Wait {
    if let Some(d) = err.retry_after() {
        return Wait::RetryAfter(d.min(settings.retry_max));
    }
    let wait = if err.is_transient() {
        backoff::ceiling(
            settings.retry_base,
            settings.retry_max,
            failures.saturating_sub(1),
        )
    } else {
        settings.retry_max
    };
    Wait::Backoff { wait, failures }
}

/// One app's last failure.
#[derive(Clone, Debug)]
pub(crate) struct AppFailure {
    failures: u32,
    /// Fingerprint of what the call depended on (token, URL, generation).
    inputs: u64,
    retry_at: Instant,
    pub(crate) error: HerokuError,
    pub(crate) wait: Wait,
}

impl AppFailure {
    /// The wait as the status reports it: the same words as when the call
    /// failed (no countdown), so waiting writes no new status.
    pub(crate) fn note(&self) -> String {
        self.wait.to_string()
    }
}

impl Context {
    /// Records a failure of `app`'s call made with `inputs`; returns the wait.
    pub(crate) fn app_failed(&self, uid: &str, app: &str, inputs: u64, err: &HerokuError) -> Wait {
        let mut all = lock(&self.app_failures);
        let key = (uid.to_string(), app.to_string());
        let failures = all
            .get(&key)
            .filter(|f| f.inputs == inputs)
            .map_or(0, |f| f.failures)
            .saturating_add(1);
        let wait = wait_after(&self.settings, err, failures);
        all.insert(
            key,
            AppFailure {
                failures,
                inputs,
                retry_at: Instant::now() + wait.duration(),
                error: err.clone(),
                wait: wait.clone(),
            },
        );
        wait
    }

    /// The failure `app` is still waiting out, if its inputs are unchanged.
    pub(crate) fn app_waiting(&self, uid: &str, app: &str, inputs: u64) -> Option<AppFailure> {
        lock(&self.app_failures)
            .get(&(uid.to_string(), app.to_string()))
            .filter(|f| f.inputs == inputs && Instant::now() < f.retry_at)
            .cloned()
    }

    pub(crate) fn app_succeeded(&self, uid: &str, app: &str) {
        lock(&self.app_failures).remove(&(uid.to_string(), app.to_string()));
    }

    /// How long until the first of LogDrain `uid`'s failed apps may be
    /// called again (`None` when none waits).
    pub(crate) fn next_app_retry(&self, uid: &str) -> Option<Duration> {
        let now = Instant::now();
        lock(&self.app_failures)
            .iter()
            .filter(|((u, _), f)| u == uid && f.retry_at > now)
            .map(|(_, f)| f.retry_at - now)
            .min()
    }

    /// Drops the failures of apps no longer handled (neither listed nor
    /// with a drain to remove).
    pub(crate) fn keep_app_failures(&self, uid: &str, apps: &std::collections::BTreeSet<String>) {
        lock(&self.app_failures).retain(|(u, app), _| u != uid || apps.contains(app));
    }

    pub(crate) fn forget_app_failures(&self, uid: &str) {
        lock(&self.app_failures).retain(|(u, _), _| u != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            ..Settings::default()
        }
    }

    #[test]
    fn waits_say_where_they_come_from() {
        let s = settings();
        let limited = HerokuError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            attempts: 6,
        };
        let w = wait_after(&s, &limited, 1);
        assert_eq!(w, Wait::RetryAfter(Duration::from_secs(30)));
        assert_eq!(w.to_string(), "Heroku sent Retry-After: 30 s");

        // No Retry-After: the operator's own backoff, and it says so.
        let silent = HerokuError::RateLimited {
            retry_after: None,
            attempts: 6,
        };
        let w = wait_after(&s, &silent, 3);
        assert_eq!(w.duration(), Duration::from_secs(20));
        assert_eq!(w.to_string(), "backing off 20 s after 3 failures");
        assert_eq!(
            wait_after(&s, &silent, 1).to_string(),
            "backing off 5 s after 1 failure"
        );
    }

    #[test]
    fn waits_grow_for_passing_troubles_and_start_at_the_cap_for_the_rest() {
        let s = settings();
        let down = HerokuError::Api {
            status: 503,
            id: "unavailable".into(),
            message: "The service is temporarily unavailable.".into(),
        };
        let waits: Vec<u64> = (1..=8)
            .map(|n| wait_after(&s, &down, n).duration().as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        // A wrong token or a missing app needs a person.
        let w = wait_after(&s, &HerokuError::Unauthorized, 1);
        assert_eq!(w.duration(), s.retry_max);
        // Heroku's Retry-After never holds an app beyond the cap.
        let long = HerokuError::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
            attempts: 1,
        };
        assert_eq!(wait_after(&s, &long, 1).duration(), s.retry_max);
    }
}
