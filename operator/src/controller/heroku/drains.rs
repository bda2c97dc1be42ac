//! The Heroku half of a reconcile: one drain of ours per listed app, none
//! for apps no longer listed.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use super::identity::{app_address, identify, named, resolve_renames};
use super::log_drains::{drain_url, sync_log_app};
use super::report::{Change, ErrorSummary, HerokuOutcome, describe, drains_ok, drifted_or};
use super::telemetry_drains::{sync_fir_app, wanted_exporter};
use super::token::heroku_token;
use crate::controller::memory::AppIdentity;
use crate::controller::status::conditions::Cond;
use crate::controller::{Context, fingerprint};
use crate::crd::{DrainKind, DrainStatus, DrainTarget, LogDrain, OtlpTarget};
use crate::error::{Error, Result};
use crate::heroku::{ApiToken, DrainUrl, Generation, HerokuError, WantedExporter};
use drainpipe_contract::routes::{AppRoute, RoutesFile};

/// What each listed app's drain should be, whichever its generation: the
/// log drain URL (Cedar) and the telemetry exporter (Fir; `None` when the
/// endpoint has no OTLP target, an error only for Fir apps).
#[derive(Clone, Debug)]
pub(crate) struct Desired {
    pub(crate) url: DrainUrl,
    pub(crate) otlp: Option<WantedExporter>,
    /// What the ingesters accept for the app now (the routes Secret before
    /// this reconcile), for the drift check; not part of the fingerprint.
    pub(crate) accepted: Option<AppRoute>,
}

impl Desired {
    /// What a verification or a failure was for: a change of either target
    /// (endpoint, transport, password) checks the app with Heroku again.
    pub(crate) fn fingerprint(&self) -> u64 {
        fingerprint(&(self.url.expose_secret(), &self.otlp))
    }
}

/// The drains each listed app should have; the first app whose log drain
/// URL cannot be built fails them all (the endpoint is the same for all).
fn desired_drains(
    apps: &BTreeSet<String>,
    target: Option<&DrainTarget>,
    otlp: Option<&OtlpTarget>,
    password: &str,
) -> Result<BTreeMap<String, Desired>, HerokuError> {
    apps.iter()
        .map(|app| {
            let url = drain_url(target, app, password)?;
            let otlp = wanted_exporter(otlp, app, password).ok();
            Ok((
                app.clone(),
                Desired {
                    url,
                    otlp,
                    accepted: None,
                },
            ))
        })
        .collect()
}

/// What the Heroku half of a reconcile has to do.
#[derive(Debug)]
struct DrainsPlan {
    /// Drains of apps no longer listed: to delete.
    stale: Vec<DrainStatus>,
    /// Listed apps to check with Heroku: those without a recorded drain, and
    /// those whose drain was not verified recently for what is desired.
    todo: Vec<(String, Desired)>,
}

/// Desired drains against the recorded ones. `fresh(app, fingerprint)` says
/// whether `app`'s drain was verified recently for the desired drain
/// fingerprinted.
fn plan_drains(
    desired: &BTreeMap<String, Desired>,
    drains: &BTreeMap<String, DrainStatus>,
    fresh: impl Fn(&str, u64) -> bool,
) -> DrainsPlan {
    let stale = drains
        .values()
        .filter(|d| !desired.contains_key(&d.app))
        .cloned()
        .collect();
    let todo = desired
        .iter()
        .filter(|(app, d)| !(drains.contains_key(*app) && fresh(app, d.fingerprint())))
        .map(|(a, d)| (a.clone(), d.clone()))
        .collect();
    DrainsPlan { stale, todo }
}

/// One app's outcome: its drain, or why there is none.
type AppResult = (
    String,
    Desired,
    Result<(DrainStatus, Vec<Change>), HerokuError>,
);

pub(crate) async fn sync_drains(
    ctx: &Context,
    ld: &LogDrain,
    uid: &str,
    reference: &ObjectReference,
    password: &str,
    drains: &mut BTreeMap<String, DrainStatus>,
    accepted: &RoutesFile,
) -> HerokuOutcome {
    let apps = ld.app_set();
    let target = ld.spec.endpoint.target();
    let otlp = ld.spec.endpoint.otlp_target();
    let desired = match desired_drains(&apps, target.as_ref(), otlp.as_ref(), password) {
        Ok(desired) => desired,
        Err(e) => {
            return HerokuOutcome {
                condition: Cond::failed(e.reason(), e.to_string()),
                error: Some(Error::Heroku(e)),
            };
        }
    };
    // Periodic re-checks within the budget share (pacing.rs); a drain never
    // verified for what is desired now is checked at once.
    let pacing = ctx.pacing();
    let resync = ctx.settings.resync;
    let DrainsPlan { stale, todo } = plan_drains(&desired, drains, |app, fp| {
        ctx.drain_verified_age(uid, app, fp)
            .is_some_and(|age| pacing.fresh(age, resync))
    });
    let ok =
        |drains: &BTreeMap<String, DrainStatus>| drains_ok(drains, target.as_ref(), otlp.as_ref());
    if todo.is_empty() && stale.is_empty() {
        return HerokuOutcome {
            condition: ok(drains),
            error: None,
        };
    }

    let token = match heroku_token(ctx, ld).await {
        Ok(t) => t,
        Err(e) => {
            return HerokuOutcome {
                condition: Cond::failed(e.reason(), e.to_string()),
                error: Some(e),
            };
        }
    };

    let mut errors: Vec<(String, HerokuError)> = Vec::new();
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    let handled: BTreeSet<String> = apps
        .iter()
        .cloned()
        .chain(stale.iter().map(|d| d.app.clone()))
        .collect();
    ctx.keep_app_failures(uid, &handled);
    let inputs = |what: u64| fingerprint(&(token.expose_secret(), what, ld.metadata.generation));
    let delete_inputs = inputs(fingerprint(&"delete"));

    // Apps waiting out a failure are not called at all.
    let mut ready = Vec::new();
    for (app, want) in todo {
        match ctx.app_waiting(uid, &app, inputs(want.fingerprint())) {
            Some(waiting) => {
                notes.insert(app.clone(), waiting.note());
                errors.push((app, waiting.error));
            }
            None => ready.push((app, want)),
        }
    }

    // App Info, once, for each app without a record: its generation decides
    // its drain kind, its id finds an app renamed on Heroku and then in
    // spec.apps (whose record moves to the new name).
    let unknown: Vec<String> = ready
        .iter()
        .filter(|(app, _)| {
            !drains.contains_key(app) && !matches!(ctx.app_identity(uid, app), Some(Some(_)))
        })
        .map(|(app, _)| app.clone())
        .collect();
    let identified: BTreeMap<String, Result<AppIdentity, HerokuError>> =
        futures::stream::iter(unknown.into_iter().map(|app| {
            let token = token.clone();
            async move {
                let r = identify(ctx, &token, uid, &app, None).await;
                (app, r)
            }
        }))
        .buffer_unordered(ctx.settings.app_concurrency.max(1))
        .collect()
        .await;
    let ids: BTreeMap<String, String> = ready
        .iter()
        .filter(|(app, _)| !drains.contains_key(app))
        .filter_map(|(app, _)| {
            let id = match identified.get(app) {
                Some(Ok(i)) => i.id.clone(),
                Some(Err(_)) => None,
                None => ctx.app_identity(uid, app).flatten().and_then(|i| i.id),
            };
            Some((app.clone(), id?))
        })
        .collect();
    let stale = resolve_renames(ctx, uid, reference, stale, &ids, drains).await;

    // Removed apps: delete the drain this LogDrain made.
    for d in stale {
        if let Some(waiting) = ctx.app_waiting(uid, &d.app, delete_inputs) {
            notes.insert(d.app.clone(), waiting.note());
            errors.push((d.app.clone(), waiting.error));
            continue;
        }
        match remove_stale(ctx, &token, &d).await {
            Ok(outcome) => {
                ctx.app_succeeded(uid, &d.app);
                drains.remove(&d.app);
                ctx.drain_removed(uid, &d);
                announce_stale(ctx, reference, &d, outcome).await;
            }
            Err(e) => {
                let wait = ctx.app_failed(uid, &d.app, delete_inputs, &e);
                notes.insert(d.app.clone(), wait.to_string());
                errors.push((d.app.clone(), e));
            }
        }
    }

    // Listed apps: one list each, then only the writes that are needed.
    let mut identified = identified;
    let results: Vec<AppResult> = futures::stream::iter(ready.into_iter().map(|(app, want)| {
        let known = drains.get(&app).cloned();
        let prefetched = identified.remove(&app);
        let want = Desired {
            accepted: accepted.apps.get(&app).cloned(),
            ..want
        };
        let token = token.clone();
        async move {
            let r = sync_app(ctx, uid, &token, &app, &want, known.as_ref(), prefetched).await;
            (app, want, r)
        }
    }))
    .buffer_unordered(ctx.settings.app_concurrency.max(1))
    .collect()
    .await;
    let mut drifted = Vec::new();
    for (app, want, result) in results {
        match result {
            Ok((status, changes)) => {
                ctx.app_succeeded(uid, &app);
                ctx.set_drain_verified(uid, &app, want.fingerprint(), status.clone());
                drains.insert(app.clone(), status);
                for change in changes {
                    if let Change::Drifted(d) = &change {
                        drifted.push(d.to_string());
                    }
                    announce(ctx, reference, &app, &want, change).await;
                }
            }
            Err(e) => {
                ctx.unverify_drain(uid, &app);
                let wait = ctx.app_failed(uid, &app, inputs(want.fingerprint()), &e);
                notes.insert(app.clone(), wait.to_string());
                errors.push((app, e));
            }
        }
    }

    let Some(summary) = ErrorSummary::with_notes(errors, &notes) else {
        return HerokuOutcome {
            condition: drifted_or(ok(drains), &drifted),
            error: None,
        };
    };
    let message = format!(
        "{} of {} apps have no drain yet: {}",
        summary.count,
        apps.len().max(summary.count),
        summary.text
    );
    let first = summary.first;
    HerokuOutcome {
        condition: Cond::failed(first.reason(), message.clone()),
        error: Some(Error::Drains { message, first }),
    }
}

/// What removing a stale drain found.
#[derive(Debug, PartialEq, Eq)]
enum Removal {
    Removed,
    /// Heroku no longer had it (removed by hand, or its app deleted).
    Gone,
    /// Heroku knows no app of that name and no id was recorded to ask by:
    /// the app was deleted, or renamed with its drain still in place.
    AppNameUnknown,
}

/// Deletes a stale drain, addressing its app by id when recorded.
async fn remove_stale(
    ctx: &Context,
    token: &ApiToken,
    d: &DrainStatus,
) -> Result<Removal, HerokuError> {
    if d.kind == DrainKind::Telemetry {
        // Telemetry drains are addressed by their own id, not the app's.
        return match ctx.delete_telemetry_drain(token, &d.app, &d.id).await {
            Ok(true) => Ok(Removal::Removed),
            Ok(false) => Ok(Removal::Gone),
            Err(e) => Err(named(e, &d.app)),
        };
    }
    let address = app_address(&d.app, d.app_id.as_deref());
    match ctx.delete_drain(token, &address, &d.id).await {
        Ok(true) => Ok(Removal::Removed),
        Ok(false) => Ok(Removal::Gone),
        // Ids are never reused: no app with this id means the app is gone,
        // and its drains with it.
        Err(HerokuError::AppNotFound { .. }) if d.app_id.is_some() => Ok(Removal::Gone),
        Err(HerokuError::AppNotFound { .. }) => Ok(Removal::AppNameUnknown),
        Err(e) => Err(named(e, &d.app)),
    }
}

async fn announce_stale(ctx: &Context, reference: &ObjectReference, d: &DrainStatus, r: Removal) {
    match r {
        Removal::Removed => {
            ctx.metrics.drain_changed("removed");
            ctx.publish(
                reference,
                EventType::Normal,
                "DrainRemoved",
                format!(
                    "removed {} of app {}: the app is no longer listed",
                    describe(d),
                    d.app
                ),
            )
            .await;
        }
        Removal::Gone => {}
        Removal::AppNameUnknown => {
            ctx.publish(
                reference,
                EventType::Warning,
                "DrainNotFound",
                format!(
                    "Heroku knows no app {} any more, so its drain {} ({}) could not be removed; if the app was renamed, remove the drain with `heroku drains:remove {} -a NEW-NAME`",
                    d.app, d.id, d.token, d.token
                ),
            )
            .await;
        }
    }
}

async fn announce(
    ctx: &Context,
    reference: &ObjectReference,
    app: &str,
    want: &Desired,
    change: Change,
) {
    let base = want.url.without_credentials();
    let endpoint = want
        .otlp
        .as_ref()
        .map(|w| w.endpoint.clone())
        .unwrap_or_default();
    let (reason, note) = match change {
        Change::Drifted(d) => {
            ctx.publish(
                reference,
                EventType::Warning,
                "DrainDrifted",
                format!(
                    "{d}; repairing: the drain to {base} is kept or re-registered (events DrainCreated, DrainReplaced)"
                ),
            )
            .await;
            return;
        }
        Change::Created(d) => {
            ctx.metrics.drain_changed("created");
            (
                "DrainCreated",
                format!(
                    "created Heroku drain {} ({}) for app {app} to {base}",
                    d.id, d.token
                ),
            )
        }
        Change::Replaced(d) => {
            ctx.metrics.drain_changed("removed");
            (
                "DrainReplaced",
                format!(
                    "removed Heroku drain {} ({}) of app {app}: replaced by the drain to {base}",
                    d.id, d.token
                ),
            )
        }
        Change::Removed { id, token } => {
            ctx.metrics.drain_changed("removed");
            (
                "DrainRemoved",
                format!("removed Heroku drain {id} ({token}) of app {app}"),
            )
        }
        Change::TelemetryCreated(d) => {
            ctx.metrics.drain_changed("created");
            (
                "TelemetryDrainCreated",
                format!(
                    "created Heroku telemetry drain {} (logs, {}) for Fir app {app} to {endpoint}",
                    d.id, d.exporter.exporter_type
                ),
            )
        }
        Change::TelemetryUpdated(d) => {
            ctx.metrics.drain_changed("updated");
            (
                "TelemetryDrainUpdated",
                format!(
                    "updated Heroku telemetry drain {} of Fir app {app}: now logs, {} to {endpoint} with the current drain password",
                    d.id, d.exporter.exporter_type
                ),
            )
        }
        Change::TelemetryRemoved { id } => {
            ctx.metrics.drain_changed("removed");
            (
                "DrainRemoved",
                format!("removed Heroku telemetry drain {id} of app {app}: a duplicate of ours"),
            )
        }
    };
    ctx.publish(reference, EventType::Normal, reason, note)
        .await;
}

/// Makes `app` have exactly one drain of ours, of the kind its generation
/// takes: a log drain (Cedar) or a telemetry drain (Fir). The generation
/// comes from this process's memory, else the app's record, else App Info
/// (`prefetched` when the reconcile already asked). A recorded app id that
/// Heroku no longer knows, or Heroku refusing the drain (422), makes the
/// operator ask App Info again at once and, when the app turns out to be on
/// the other generation, register the other kind in the same attempt.
async fn sync_app(
    ctx: &Context,
    uid: &str,
    token: &ApiToken,
    app: &str,
    want: &Desired,
    known: Option<&DrainStatus>,
    prefetched: Option<Result<AppIdentity, HerokuError>>,
) -> Result<(DrainStatus, Vec<Change>), HerokuError> {
    let remembered = match ctx.app_identity(uid, app) {
        Some(memo) => memo,
        None => known.and_then(AppIdentity::recorded),
    };
    let (identity, asked) = match (prefetched, remembered) {
        (Some(r), _) => (r?, true),
        (None, Some(i)) => (i, false),
        (None, None) => (identify(ctx, token, uid, app, None).await?, true),
    };
    match sync_kind(ctx, token, app, want, known, &identity).await {
        // The recorded id is gone: the app was deleted, perhaps made again
        // under the same name, perhaps on the other generation.
        Err(HerokuError::AppNotFound { .. }) if !asked && identity.id.is_some() => {
            let fresh = identify(ctx, token, uid, app, None).await?;
            sync_kind(ctx, token, app, want, None, &fresh).await
        }
        Err(refused @ HerokuError::Api { status: 422, .. }) => {
            let tried = identity.generation;
            // An App Info without a generation is settled by the refusal
            // when it names the other generation.
            let hint = refusal_names_other(&refused, tried);
            match identify(ctx, token, uid, app, hint).await {
                Ok(fresh) if fresh.generation != tried => {
                    tracing::info!(
                        app,
                        was = tried.as_str(),
                        now = fresh.generation.as_str(),
                        "Heroku refused the drain kind: the app is on the other generation"
                    );
                    sync_kind(ctx, token, app, want, None, &fresh).await
                }
                // Same generation: the refusal is about something else,
                // and says so itself.
                Ok(_) => Err(refused),
                Err(e) => {
                    ctx.set_app_identity(uid, app, None);
                    Err(e)
                }
            }
        }
        other => other,
    }
}

/// The generation a refusal of `tried`'s drain kind names as the one the
/// app is on, if it names the other one as a word.
fn refusal_names_other(refused: &HerokuError, tried: Generation) -> Option<Generation> {
    let HerokuError::Api { message, .. } = refused else {
        return None;
    };
    let other = match tried {
        Generation::Cedar => Generation::Fir,
        Generation::Fir => Generation::Cedar,
    };
    message
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(other.as_str()))
        .then_some(other)
}

async fn sync_kind(
    ctx: &Context,
    token: &ApiToken,
    app: &str,
    want: &Desired,
    known: Option<&DrainStatus>,
    identity: &AppIdentity,
) -> Result<(DrainStatus, Vec<Change>), HerokuError> {
    // A record of the other kind is not this app's drain any more.
    let kind = match identity.generation {
        Generation::Cedar => DrainKind::Log,
        Generation::Fir => DrainKind::Telemetry,
    };
    let known = known.filter(|k| k.kind == kind);
    let app_id = known
        .and_then(|k| k.app_id.as_deref())
        .or(identity.id.as_deref());
    match identity.generation {
        Generation::Cedar => {
            sync_log_app(
                ctx,
                token,
                app,
                &want.url,
                want.accepted.as_ref(),
                known,
                app_id,
            )
            .await
        }
        Generation::Fir => {
            let wanted = match &want.otlp {
                Some(w) => w.clone(),
                None => wanted_exporter(None, app, "")?,
            };
            sync_fir_app(ctx, token, app, app_id, &wanted, known).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{https, status};

    #[test]
    fn the_plan_checks_unverified_apps_and_removes_unlisted_ones() {
        let apps: BTreeSet<String> = ["a-app", "b-app", "c-app"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let target = https("https://logs.example.com");
        let otlp = OtlpTarget::Http {
            url: "https://logs.example.com".into(),
        };
        let desired = desired_drains(&apps, Some(&target), Some(&otlp), "pw").expect("urls");
        let drains = BTreeMap::from([
            ("a-app".to_string(), status("a-app", "d.1")),
            ("b-app".to_string(), status("b-app", "d.2")),
            ("gone-app".to_string(), status("gone-app", "d.3")),
        ]);
        let a_fp = desired["a-app"].fingerprint();
        // a-app verified recently; b-app not; c-app has no drain yet.
        let plan = plan_drains(&desired, &drains, |app, fp| app == "a-app" && fp == a_fp);
        let todo: Vec<&str> = plan.todo.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(todo, ["b-app", "c-app"]);
        assert_eq!(plan.todo[0].1.url, desired["b-app"].url);
        let stale: Vec<&str> = plan.stale.iter().map(|d| d.app.as_str()).collect();
        assert_eq!(stale, ["gone-app"]);

        // Everything fresh and listed: nothing to ask Heroku.
        let settled = BTreeMap::from([
            ("a-app".to_string(), status("a-app", "d.1")),
            ("b-app".to_string(), status("b-app", "d.2")),
            ("c-app".to_string(), status("c-app", "d.4")),
        ]);
        let plan = plan_drains(&desired, &settled, |_, _| true);
        assert!(plan.todo.is_empty() && plan.stale.is_empty());

        assert!(desired_drains(&apps, None, None, "pw").is_err());
        // Without an OTLP target only Fir apps fail (when they are met).
        let syslog = DrainTarget::SyslogTls {
            address: "logs.example.com:6514".into(),
        };
        let d = desired_drains(&apps, Some(&syslog), None, "pw").expect("syslog");
        assert!(d.values().all(|d| d.otlp.is_none()));
        // A new password is a new fingerprint for both kinds.
        let rotated = desired_drains(&apps, Some(&target), Some(&otlp), "pw2").expect("urls");
        assert_ne!(rotated["a-app"].fingerprint(), a_fp);
    }
}
