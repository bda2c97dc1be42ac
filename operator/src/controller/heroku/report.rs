//! What the Heroku side reports: the `DrainsRegistered` condition and its
//! error summary, the changes a reconcile made (for events), and how a
//! drain is named in them.

use std::collections::BTreeMap;

use super::drift::Drift;
use crate::controller::status::conditions::Cond;
use crate::crd::{DrainKind, DrainStatus, DrainTarget, OtlpTarget};
use crate::error::Error;
use crate::heroku::{Drain, HerokuError, TelemetryDrain};

pub(crate) struct HerokuOutcome {
    pub(crate) condition: Cond,
    pub(crate) error: Option<Error>,
}

/// Several apps' Heroku errors as one message, the most actionable first
/// (credentials, then missing apps, then the passing troubles): the first
/// names the condition reason and the metric label.
#[derive(Debug)]
pub(crate) struct ErrorSummary {
    /// How many apps failed.
    pub(crate) count: usize,
    /// `app: error` for each, joined by `; `.
    pub(crate) text: String,
    pub(crate) first: HerokuError,
}

impl ErrorSummary {
    /// `None` when nothing failed.
    pub(crate) fn of(errors: Vec<(String, HerokuError)>) -> Option<ErrorSummary> {
        Self::with_notes(errors, &BTreeMap::new())
    }

    /// Each app's error followed by its note, if any (when it is retried).
    pub(crate) fn with_notes(
        mut errors: Vec<(String, HerokuError)>,
        notes: &BTreeMap<String, String>,
    ) -> Option<ErrorSummary> {
        if errors.is_empty() {
            return None;
        }
        errors.sort_by_key(|(app, e)| (e.severity(), app.clone()));
        let text = errors
            .iter()
            .map(|(app, e)| {
                let e = e.to_string();
                match notes.get(app) {
                    // A rate-limit error already names Heroku's wait.
                    Some(note) if !e.contains(note.as_str()) => format!("{app}: {e} ({note})"),
                    _ => format!("{app}: {e}"),
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        let count = errors.len();
        let first = errors.swap_remove(0).1;
        Some(ErrorSummary { count, text, first })
    }
}

/// What happened to one app's drain.
pub(crate) enum Change {
    /// Found before the repair the other changes are (drift.rs).
    Drifted(Drift),
    Created(Drain),
    Replaced(Drain),
    Removed {
        id: String,
        token: String,
    },
    TelemetryCreated(TelemetryDrain),
    TelemetryUpdated(TelemetryDrain),
    TelemetryRemoved {
        id: String,
    },
}

/// `DrainsRegistered` of a reconcile that found (and repaired) drift: still
/// True, since the drains are right again, with the reason `Drifted` and
/// what was wrong, until the next check finds nothing.
pub(crate) fn drifted_or(ok: Cond, drifted: &[String]) -> Cond {
    if drifted.is_empty() {
        return ok;
    }
    Cond::ok(
        "Drifted",
        format!(
            "{}; repaired drift of {} apps (events DrainDrifted): {}",
            ok.message,
            drifted.len(),
            drifted.join("; ")
        ),
    )
}

/// How a recorded drain is named in events: its id, and the token of a
/// log drain (what `heroku drains` shows) or the kind of a telemetry drain.
pub(crate) fn describe(d: &DrainStatus) -> String {
    match d.kind {
        DrainKind::Log => format!("Heroku drain {} ({})", d.id, d.token),
        DrainKind::Telemetry => format!("Heroku telemetry drain {}", d.id),
    }
}

pub(crate) fn drains_ok(
    drains: &BTreeMap<String, DrainStatus>,
    target: Option<&DrainTarget>,
    otlp: Option<&OtlpTarget>,
) -> Cond {
    let telemetry = drains
        .values()
        .filter(|d| d.kind == DrainKind::Telemetry)
        .count();
    let logs = drains.len() - telemetry;
    let to = target.map(DrainTarget::describe).unwrap_or_default();
    let message = match (logs, telemetry) {
        (n, 0) => format!("{n} Heroku drains send to {to}"),
        (0, t) => format!(
            "{t} Heroku telemetry drains (Fir apps) send {}",
            otlp.map(OtlpTarget::describe).unwrap_or_default()
        ),
        (n, t) => format!(
            "{n} Heroku drains (Cedar apps) send to {to}, {t} telemetry drains (Fir apps) {}",
            otlp.map(OtlpTarget::describe).unwrap_or_default()
        ),
    };
    Cond::ok("DrainsRegistered", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_summary_says_where_each_wait_comes_from() {
        let notes = BTreeMap::from([
            (
                "a-app".to_string(),
                "Heroku sent Retry-After: 30 s".to_string(),
            ),
            (
                "b-app".to_string(),
                "backing off 20 s after 3 failures".to_string(),
            ),
        ]);
        let s = ErrorSummary::with_notes(
            vec![
                (
                    "a-app".into(),
                    HerokuError::RateLimited {
                        retry_after: Some(std::time::Duration::from_secs(30)),
                        attempts: 6,
                    },
                ),
                ("b-app".into(), HerokuError::Transport("reset".into())),
                ("c-app".into(), HerokuError::Transport("reset".into())),
            ],
            &notes,
        )
        .expect("errors");
        assert_eq!(
            s.text,
            "a-app: Heroku rate limit exhausted after 6 attempts; Heroku sent Retry-After: 30 s; \
             b-app: cannot reach the Heroku API: reset \
             (backing off 20 s after 3 failures); c-app: cannot reach the Heroku API: reset"
        );
    }

    #[test]
    fn error_summary_leads_with_the_most_actionable_error() {
        assert!(ErrorSummary::of(Vec::new()).is_none());
        let s = ErrorSummary::of(vec![
            ("b-app".into(), HerokuError::Transport("reset".into())),
            (
                "z-app".into(),
                HerokuError::AppNotFound {
                    app: "z-app".into(),
                },
            ),
            ("a-app".into(), HerokuError::Transport("reset".into())),
        ])
        .expect("errors");
        assert_eq!(s.count, 3);
        assert_eq!(
            s.first,
            HerokuError::AppNotFound {
                app: "z-app".into()
            }
        );
        assert_eq!(
            s.text,
            "z-app: Heroku app z-app not found, or the API token's account cannot see it; \
             a-app: cannot reach the Heroku API: reset; b-app: cannot reach the Heroku API: reset"
        );
        assert_eq!(s.first.reason(), "AppNotFound");
    }
}
