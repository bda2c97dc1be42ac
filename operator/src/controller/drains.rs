//! The Heroku half of a reconcile: one drain of ours per listed app, none
//! for apps no longer listed.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::conditions::Cond;
use super::drift::{Drift, drift};
use super::identity::{app_address, app_id_of, list_app, named, resolve_renames};
use super::{Context, DRAIN_USER, fingerprint};
use crate::crd::{DrainStatus, DrainTarget, LogDrain};
use crate::error::{Error, Result};
use crate::heroku::{ApiToken, Drain, DrainUrl, HerokuError};
use crate::resources;
use drainpipe_contract::routes::{AppRoute, RoutesFile};

pub(super) struct HerokuOutcome {
    pub(super) condition: Cond,
    pub(super) error: Option<Error>,
}

/// The Heroku API token from the Secret the LogDrain names.
pub(super) async fn heroku_token(ctx: &Context, ld: &LogDrain) -> Result<ApiToken> {
    let ns = ld.namespace().ok_or(Error::MissingObjectKey)?;
    let sel = &ld.spec.heroku.api_token_secret_ref;
    let missing = |problem: String| Error::HerokuTokenMissing {
        namespace: ns.clone(),
        name: sel.name.clone(),
        problem,
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = api
        .get_opt(&sel.name)
        .await?
        .ok_or_else(|| missing("does not exist".to_string()))?;
    let value = resources::secret_value(&secret, &sel.key)
        .ok_or_else(|| missing(format!("has no key {:?}", sel.key)))?;
    let token = ApiToken::new(value);
    if token.is_empty() {
        return Err(missing(format!("holds an empty value under {:?}", sel.key)));
    }
    Ok(token)
}

/// The drain URL each listed app should have; the first app whose URL
/// cannot be built fails them all (the endpoint is the same for all).
fn desired_urls(
    apps: &BTreeSet<String>,
    target: Option<&DrainTarget>,
    password: &str,
) -> Result<BTreeMap<String, DrainUrl>, HerokuError> {
    apps.iter()
        .map(|app| Ok((app.clone(), drain_url(target, app, password)?)))
        .collect()
}

/// What the Heroku half of a reconcile has to do.
#[derive(Debug)]
struct DrainsPlan {
    /// Drains of apps no longer listed: to delete.
    stale: Vec<DrainStatus>,
    /// Listed apps to check with Heroku: those without a recorded drain, and
    /// those whose drain was not verified recently for the desired URL.
    todo: Vec<(String, DrainUrl)>,
}

/// Desired drains against the recorded ones. `fresh(app, fingerprint)` says
/// whether `app`'s drain was verified recently for the URL fingerprinted.
fn plan_drains(
    desired: &BTreeMap<String, DrainUrl>,
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
        .filter(|(app, url)| {
            !(drains.contains_key(*app) && fresh(app, fingerprint(&url.expose_secret())))
        })
        .map(|(a, u)| (a.clone(), u.clone()))
        .collect();
    DrainsPlan { stale, todo }
}

/// Several apps' Heroku errors as one message, the most actionable first
/// (credentials, then missing apps, then the passing troubles): the first
/// names the condition reason and the metric label.
#[derive(Debug)]
pub(super) struct ErrorSummary {
    /// How many apps failed.
    pub(super) count: usize,
    /// `app: error` for each, joined by `; `.
    pub(super) text: String,
    pub(super) first: HerokuError,
}

impl ErrorSummary {
    /// `None` when nothing failed.
    pub(super) fn of(errors: Vec<(String, HerokuError)>) -> Option<ErrorSummary> {
        Self::with_notes(errors, &BTreeMap::new())
    }

    /// Each app's error followed by its note, if any (when it is retried).
    pub(super) fn with_notes(
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

/// One app's outcome: its drain, or why there is none.
type AppResult = (
    String,
    DrainUrl,
    Result<(DrainStatus, Vec<Change>), HerokuError>,
);

/// What happened to one app's drain.
enum Change {
    /// Found before the repair the other changes are (drift.rs).
    Drifted(Drift),
    Created(Drain),
    Replaced(Drain),
    Removed {
        id: String,
        token: String,
    },
}

pub(super) async fn sync_drains(
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
    let desired = match desired_urls(&apps, target.as_ref(), password) {
        Ok(desired) => desired,
        Err(e) => {
            return HerokuOutcome {
                condition: Cond::failed(e.reason(), e.to_string()),
                error: Some(Error::Heroku(e)),
            };
        }
    };
    let DrainsPlan { stale, todo } =
        plan_drains(&desired, drains, |app, fp| ctx.drain_fresh(uid, app, fp));
    let ok = || drains_ok(apps.len(), target.as_ref());
    if todo.is_empty() && stale.is_empty() {
        return HerokuOutcome {
            condition: ok(),
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
    let inputs = |what: &str| fingerprint(&(token.expose_secret(), what, ld.metadata.generation));

    // An app renamed on Heroku and then in spec.apps keeps its drain record.
    let waiting = |app: &str, url: &DrainUrl| {
        ctx.app_waiting(uid, app, inputs(url.expose_secret()))
            .is_some()
    };
    let stale = resolve_renames(ctx, &token, uid, reference, stale, &todo, waiting, drains).await;

    // Removed apps: delete the drain this LogDrain made.
    for d in stale {
        let fp = inputs("delete");
        if let Some(waiting) = ctx.app_waiting(uid, &d.app, fp) {
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
                let wait = ctx.app_failed(uid, &d.app, fp, &e);
                notes.insert(d.app.clone(), wait.to_string());
                errors.push((d.app.clone(), e));
            }
        }
    }

    // Listed apps: one list each, a create when the drain is missing; apps
    // still waiting out a failure are not called.
    let mut ready = Vec::new();
    for (app, url) in todo {
        match ctx.app_waiting(uid, &app, inputs(url.expose_secret())) {
            Some(waiting) => {
                notes.insert(app.clone(), waiting.note());
                errors.push((app, waiting.error));
            }
            None => ready.push((app, url)),
        }
    }
    let results: Vec<AppResult> = futures::stream::iter(ready.into_iter().map(|(app, url)| {
        let known = drains.get(&app).cloned();
        let route = accepted.apps.get(&app).cloned();
        let token = token.clone();
        async move {
            let r = sync_app(ctx, &token, &app, &url, known.as_ref(), route.as_ref()).await;
            (app, url, r)
        }
    }))
    .buffer_unordered(ctx.settings.app_concurrency.max(1))
    .collect()
    .await;
    let mut drifted = Vec::new();
    for (app, url, result) in results {
        match result {
            Ok((status, changes)) => {
                ctx.app_succeeded(uid, &app);
                let fp = fingerprint(&url.expose_secret());
                ctx.set_drain_verified(uid, &app, fp, status.clone());
                drains.insert(app.clone(), status);
                for change in changes {
                    if let Change::Drifted(d) = &change {
                        drifted.push(d.to_string());
                    }
                    announce(ctx, reference, &app, &url, change).await;
                }
            }
            Err(e) => {
                ctx.unverify_drain(uid, &app);
                let wait = ctx.app_failed(uid, &app, inputs(url.expose_secret()), &e);
                notes.insert(app.clone(), wait.to_string());
                errors.push((app, e));
            }
        }
    }

    let Some(summary) = ErrorSummary::with_notes(errors, &notes) else {
        return HerokuOutcome {
            condition: drifted_or(ok(), &drifted),
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
                    "removed Heroku drain {} ({}) of app {}: the app is no longer listed",
                    d.id, d.token, d.app
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

/// `DrainsRegistered` of a reconcile that found (and repaired) drift: still
/// True, since the drains are right again, with the reason `Drifted` and
/// what was wrong, until the next check finds nothing.
fn drifted_or(ok: Cond, drifted: &[String]) -> Cond {
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

fn drains_ok(n: usize, target: Option<&DrainTarget>) -> Cond {
    let to = target.map(DrainTarget::describe).unwrap_or_default();
    Cond::ok(
        "DrainsRegistered",
        format!("{n} Heroku drains send to {to}"),
    )
}

/// The drain URL `app` should have: HTTPS with the drain password, or the
/// syslog+tls listener (the same for every app).
pub(super) fn drain_url(
    target: Option<&DrainTarget>,
    app: &str,
    password: &str,
) -> Result<DrainUrl, HerokuError> {
    match target {
        Some(DrainTarget::Https { url }) => DrainUrl::for_app(url, app, DRAIN_USER, password),
        Some(DrainTarget::SyslogTls { address }) => DrainUrl::syslog_tls(address),
        None => Err(HerokuError::InvalidDrainUrl(
            "set exactly one of spec.endpoint.url and spec.endpoint.syslogTls".to_string(),
        )),
    }
}

async fn announce(
    ctx: &Context,
    reference: &ObjectReference,
    app: &str,
    url: &DrainUrl,
    change: Change,
) {
    let base = url.without_credentials();
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
    };
    ctx.publish(reference, EventType::Normal, reason, note)
        .await;
}

/// The drain of ours already sending to `url`, if any. Add-on drains are
/// never ours: only removing the add-on removes them.
fn ours_to<'a>(listed: &'a [Drain], url: &DrainUrl) -> Option<&'a Drain> {
    listed
        .iter()
        .filter(|d| d.addon.is_none())
        .find(|d| d.targets(url))
}

/// The drains of ours an app has besides the one kept.
#[derive(Debug)]
struct Obsolete<'a> {
    /// The drain recorded before, when it is not the one kept: the endpoint
    /// or the password changed.
    replaced: Option<&'a Drain>,
    /// Other drains to the very same URL (Heroku normally refuses that).
    duplicates: Vec<&'a Drain>,
}

fn obsolete<'a>(
    listed: &'a [Drain],
    url: &DrainUrl,
    known: Option<&DrainStatus>,
    kept_id: &str,
) -> Obsolete<'a> {
    let replaced = known
        .filter(|k| k.id != kept_id)
        .and_then(|old| listed.iter().find(|d| d.id == old.id && d.addon.is_none()));
    let duplicates = listed
        .iter()
        .filter(|d| d.addon.is_none() && d.id != kept_id && d.targets(url))
        .collect();
    Obsolete {
        replaced,
        duplicates,
    }
}

/// Makes `app` have exactly one drain of ours, to `url`. Ours are the drain
/// recorded in the status and any drain to `url` itself; a drain another
/// LogDrain or a person added to the same endpoint is left alone.
async fn sync_app(
    ctx: &Context,
    token: &ApiToken,
    app: &str,
    url: &DrainUrl,
    known: Option<&DrainStatus>,
    accepted: Option<&AppRoute>,
) -> Result<(DrainStatus, Vec<Change>), HerokuError> {
    let (address, listed) =
        list_app(ctx, token, app, known.and_then(|k| k.app_id.as_deref())).await?;
    let named = |e| named(e, app);
    let mut changes: Vec<Change> = drift(app, &listed, url, known, accepted)
        .map(Change::Drifted)
        .into_iter()
        .collect();
    let kept = match ours_to(&listed, url).cloned() {
        Some(d) => d,
        None => {
            let ensured = ctx
                .create_drain(token, &address, url)
                .await
                .map_err(named)?;
            if ensured.created {
                changes.push(Change::Created(ensured.drain.clone()));
            }
            ensured.drain
        }
    };
    // Removed after the new one exists, so Heroku always has somewhere to
    // send.
    let Obsolete {
        replaced,
        duplicates,
    } = obsolete(&listed, url, known, &kept.id);
    if let Some(old) = replaced
        && ctx
            .delete_drain(token, &address, &old.id)
            .await
            .map_err(named)?
    {
        changes.push(Change::Replaced(old.clone()));
    }
    for dup in duplicates {
        if ctx
            .delete_drain(token, &address, &dup.id)
            .await
            .map_err(named)?
        {
            changes.push(Change::Removed {
                id: dup.id.clone(),
                token: dup.token.clone(),
            });
        }
    }
    Ok((
        DrainStatus {
            app: app.to_string(),
            app_id: app_id_of(&kept, app, &address),
            id: kept.id.clone(),
            token: kept.token.clone(),
            url: url.without_credentials(),
        },
        changes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{example_url, heroku_drains, https, status};

    #[test]
    fn drain_urls_follow_the_endpoint() {
        let h = drain_url(Some(&https("https://logs.example.com")), "a-app", "pw").expect("https");
        assert_eq!(
            h.expose_secret(),
            "https://drainpipe:pw@logs.example.com/logplex/a-app"
        );
        let target = DrainTarget::SyslogTls {
            address: "logs.example.com:6514".to_string(),
        };
        let s = drain_url(Some(&target), "a-app", "pw").expect("syslog");
        assert_eq!(s.expose_secret(), "syslog+tls://logs.example.com:6514");
        assert!(drain_url(None, "a-app", "pw").is_err());
    }

    fn known(id: &str) -> DrainStatus {
        DrainStatus {
            app: "example".into(),
            app_id: None,
            id: id.into(),
            token: format!("d.{id}"),
            url: "https://logs.example.com/logplex/example".into(),
        }
    }

    #[test]
    fn the_drain_kept_is_ours_to_the_url_never_an_addons() {
        let listed = heroku_drains();
        let kept = ours_to(&listed, &example_url()).expect("ours is listed");
        assert_eq!(kept.id, "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(kept.token, "d.01234567-89ab-cdef-0123-456789abcdef");
        // Only the add-on's drain goes to the URL: it is not ours.
        let addon_only: Vec<Drain> = listed.into_iter().filter(|d| d.addon.is_some()).collect();
        assert!(ours_to(&addon_only, &example_url()).is_none());
        let other =
            DrainUrl::new("https://drainpipe:pw-current@elsewhere.example.com/logplex/example");
        assert!(ours_to(&heroku_drains(), &other).is_none());
    }

    #[test]
    fn obsolete_drains_are_the_one_replaced_and_duplicates_of_ours() {
        let listed = heroku_drains();
        let kept = "01234567-89ab-cdef-0123-456789abcdef";
        // The status recorded the drain from before the password rotation.
        let old = known("11234567-89ab-cdef-0123-456789abcdef");
        let o = obsolete(&listed, &example_url(), Some(&old), kept);
        assert_eq!(o.replaced.map(|d| d.id.as_str()), Some(old.id.as_str()));
        // The same URL spelled differently; not the add-on's drain to it.
        let dups: Vec<&str> = o.duplicates.iter().map(|d| d.token.as_str()).collect();
        assert_eq!(dups, ["d.31234567-89ab-cdef-0123-456789abcdef"]);

        // Recorded and kept are the same drain: nothing replaced.
        let o = obsolete(&listed, &example_url(), Some(&known(kept)), kept);
        assert!(o.replaced.is_none());
        // A recorded drain Heroku no longer lists, or an add-on's: left be.
        let gone = known("99999999-89ab-cdef-0123-456789abcdef");
        assert!(
            obsolete(&listed, &example_url(), Some(&gone), kept)
                .replaced
                .is_none()
        );
        let addon = known("21234567-89ab-cdef-0123-456789abcdef");
        assert!(
            obsolete(&listed, &example_url(), Some(&addon), kept)
                .replaced
                .is_none()
        );
    }

    #[test]
    fn the_plan_checks_unverified_apps_and_removes_unlisted_ones() {
        let apps: BTreeSet<String> = ["a-app", "b-app", "c-app"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let target = https("https://logs.example.com");
        let desired = desired_urls(&apps, Some(&target), "pw").expect("urls");
        let drains = BTreeMap::from([
            ("a-app".to_string(), status("a-app", "d.1")),
            ("b-app".to_string(), status("b-app", "d.2")),
            ("gone-app".to_string(), status("gone-app", "d.3")),
        ]);
        let a_fp = fingerprint(&desired["a-app"].expose_secret());
        // a-app verified recently; b-app not; c-app has no drain yet.
        let plan = plan_drains(&desired, &drains, |app, fp| app == "a-app" && fp == a_fp);
        let todo: Vec<&str> = plan.todo.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(todo, ["b-app", "c-app"]);
        assert_eq!(plan.todo[0].1, desired["b-app"]);
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

        assert!(desired_urls(&apps, None, "pw").is_err());
    }

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
