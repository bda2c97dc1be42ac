//! The Heroku half of a reconcile: one drain of ours per listed app, none
//! for apps no longer listed.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::drift::{Drift, drift};
use super::identity::{app_address, app_id_of, identify, list_app, named, resolve_renames};
use super::telemetry_drains::{sync_fir_app, wanted_exporter};
use crate::controller::memory::AppIdentity;
use crate::controller::status::conditions::Cond;
use crate::controller::{Context, DRAIN_USER, fingerprint};
use crate::crd::{DrainKind, DrainStatus, DrainTarget, LogDrain, OtlpTarget};
use crate::error::{Error, Result};
use crate::heroku::{
    ApiToken, Drain, DrainUrl, Generation, HerokuError, TelemetryDrain, WantedExporter,
};
use crate::resources;
use drainpipe_contract::routes::{AppRoute, RoutesFile};

pub(crate) struct HerokuOutcome {
    pub(crate) condition: Cond,
    pub(crate) error: Option<Error>,
}

/// The Heroku API token from the Secret the LogDrain names.
pub(crate) async fn heroku_token(ctx: &Context, ld: &LogDrain) -> Result<ApiToken> {
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

/// One app's outcome: its drain, or why there is none.
type AppResult = (
    String,
    Desired,
    Result<(DrainStatus, Vec<Change>), HerokuError>,
);

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
    let DrainsPlan { stale, todo } =
        plan_drains(&desired, drains, |app, fp| ctx.drain_fresh(uid, app, fp));
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

/// How a recorded drain is named in events: its id, and the token of a
/// log drain (what `heroku drains` shows) or the kind of a telemetry drain.
pub(crate) fn describe(d: &DrainStatus) -> String {
    match d.kind {
        DrainKind::Log => format!("Heroku drain {} ({})", d.id, d.token),
        DrainKind::Telemetry => format!("Heroku telemetry drain {}", d.id),
    }
}

fn drains_ok(
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

/// The drain URL `app` should have: HTTPS with the drain password, or the
/// syslog+tls listener (the same for every app).
pub(crate) fn drain_url(
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
        Generation::Cedar => sync_log_app(ctx, token, app, want, known, app_id).await,
        Generation::Fir => {
            let wanted = match &want.otlp {
                Some(w) => w.clone(),
                None => wanted_exporter(None, app, "")?,
            };
            sync_fir_app(ctx, token, app, app_id, &wanted, known).await
        }
    }
}

/// Makes Cedar app `app` have exactly one drain of ours, to `url`. Ours are
/// the drain recorded in the status and any drain to `url` itself; a drain
/// another LogDrain or a person added to the same endpoint is left alone.
async fn sync_log_app(
    ctx: &Context,
    token: &ApiToken,
    app: &str,
    want: &Desired,
    known: Option<&DrainStatus>,
    app_id: Option<&str>,
) -> Result<(DrainStatus, Vec<Change>), HerokuError> {
    let url = &want.url;
    let (address, listed) = list_app(ctx, token, app, app_id).await?;
    let named = |e| named(e, app);
    let mut changes: Vec<Change> = drift(app, &listed, url, known, want.accepted.as_ref())
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
            generation: Some(Generation::Cedar.as_str().to_string()),
            kind: DrainKind::Log,
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
            generation: Some("cedar".into()),
            kind: DrainKind::Log,
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
