//! Deletion of a LogDrain: its Heroku drains go (deletionPolicy Delete) or
//! stay (Retain); the owned objects go with it by owner reference, once
//! the buffer claims (which it does not own) are flushed and deleted.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::Context;
use super::heroku::drains::{ErrorSummary, describe, drain_url, heroku_token};
use super::heroku::identity::{identify, list_app, list_telemetry_app, named};
use super::heroku::retain;
use super::heroku::telemetry_drains::{self, wanted_exporter};
use super::memory::AppIdentity;
use super::workload::ingester;
use crate::crd::{DeletionPolicy, DrainKind, DrainStatus, LogDrain};
use crate::error::{Error, Result};
use crate::heroku::{ApiToken, Drain, DrainUrl, Generation, HerokuError};
use crate::resources;

pub(super) async fn cleanup(ld: Arc<LogDrain>, ctx: &Context) -> Result<Action> {
    // Buffer claims are not owned (they must outlive their pods): nothing
    // would ever upload or delete them after the LogDrain is gone.
    ingester::flush_before_deletion(ctx, &ld).await?;
    let uid = ld.uid().unwrap_or_default();
    let reference = ld.object_ref(&());
    let (known, _) = ctx.known_drains(&uid);
    let drains = drains_to_clean(ld.status.clone().unwrap_or_default().drains, known);
    if ld.spec.deletion_policy == DeletionPolicy::Retain {
        retain::release_password(ctx, &ld).await?;
        ctx.forget(&uid);
        if !drains.is_empty() {
            ctx.publish(
                &reference,
                EventType::Normal,
                "DrainsRetained",
                format!(
                    "deletionPolicy Retain: left {} Heroku drains registered ({})",
                    drains.len(),
                    drains
                        .iter()
                        .map(|d| d.app.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    let token = match heroku_token(ctx, &ld).await {
        Ok(t) => t,
        Err(e) => {
            ctx.publish(
                &reference,
                EventType::Warning,
                "CleanupBlocked",
                format!("cannot remove the Heroku drains: {e}; fix the Secret, or set deletionPolicy to Retain to let the LogDrain go"),
            )
            .await;
            return Err(e);
        }
    };
    // The drain password Secret may already be gone (foreground deletion);
    // the status ids are what identify our drains then.
    let password = {
        let api: Api<Secret> =
            Api::namespaced(ctx.client.clone(), &ld.namespace().unwrap_or_default());
        let name = resources::password_secret_name(&ld.name_any());
        api.get_opt(&name)
            .await?
            .and_then(|s| resources::secret_value(&s, resources::PASSWORD_KEY))
    };
    let why = "the LogDrain is being deleted (deletionPolicy Delete)";
    let (_, errors) = remove_ours(ctx, &ld, &token, &drains, password.as_deref(), why).await;
    let Some(summary) = ErrorSummary::of(errors) else {
        ctx.forget(&uid);
        return Ok(Action::await_change());
    };
    let message = format!("cannot remove Heroku drains: {}", summary.text);
    ctx.publish(
        &reference,
        EventType::Warning,
        "CleanupFailed",
        message.clone(),
    )
    .await;
    Err(Error::Drains {
        message,
        first: summary.first,
    })
}

/// Removes every Heroku drain of this LogDrain: those recorded in `drains`
/// and those sending to its drain URL (when `password` is known), for every
/// listed app and every app a drain was recorded for. Each removal is
/// announced with `why`. Returns the drains removed and the apps that failed.
pub(super) async fn remove_ours(
    ctx: &Context,
    ld: &LogDrain,
    token: &ApiToken,
    drains: &[DrainStatus],
    password: Option<&str>,
    why: &str,
) -> (Vec<DrainStatus>, Vec<(String, HerokuError)>) {
    let reference = ld.object_ref(&());
    let uid = ld.uid().unwrap_or_default();
    let apps = apps_to_clean(ld.app_set(), drains);
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for app in &apps {
        let recorded: Vec<&DrainStatus> = drains.iter().filter(|d| d.app == *app).collect();
        // An app whose generation cannot be told (App Info names none) is
        // looked at for both kinds: a drain of ours must not be left behind
        // for want of an answer.
        let kinds: &[Generation] = match generation_of(ctx, token, &uid, app, &recorded).await {
            Ok(Generation::Cedar) => &[Generation::Cedar],
            Ok(Generation::Fir) => &[Generation::Fir],
            Err(HerokuError::GenerationUnknown { .. }) => &[Generation::Cedar, Generation::Fir],
            Err(HerokuError::AppNotFound { .. }) => continue,
            Err(e) => {
                errors.push((app.clone(), e));
                continue;
            }
        };
        let ours = Ours {
            app,
            recorded: &recorded,
            password,
        };
        for kind in kinds {
            let result = match kind {
                Generation::Cedar => remove_log_drains(ctx, ld, token, &ours).await,
                Generation::Fir => remove_telemetry_drains(ctx, ld, token, &ours).await,
            };
            let (gone, failed) = match result {
                Ok(r) => r,
                Err(HerokuError::AppNotFound { .. }) => continue,
                Err(e) => {
                    errors.push((app.clone(), e));
                    continue;
                }
            };
            for (st, existed) in gone {
                if existed {
                    announce_removed(ctx, &reference, &st, why).await;
                }
                removed.push(st);
            }
            errors.extend(failed.into_iter().map(|e| (app.clone(), named(e, app))));
        }
    }
    (removed, errors)
}

/// What makes a drain of one app ours when removing: its id recorded, or
/// its target with our credentials (the drain password), as a log drain's
/// URL carries them.
struct Ours<'a> {
    app: &'a str,
    recorded: &'a [&'a DrainStatus],
    /// `None` when the password Secret is gone: only recorded drains.
    password: Option<&'a str>,
}

/// Each drain removed (with whether Heroku still had it), and the deletes
/// that failed.
type Removed = (Vec<(DrainStatus, bool)>, Vec<HerokuError>);

async fn remove_log_drains(
    ctx: &Context,
    ld: &LogDrain,
    token: &ApiToken,
    ours: &Ours<'_>,
) -> Result<Removed, HerokuError> {
    let app = ours.app;
    let app_id = ours.recorded.iter().find_map(|d| d.app_id.as_deref());
    let target = ld.spec.endpoint.target();
    let url = ours
        .password
        .and_then(|p| drain_url(target.as_ref(), app, p).ok());
    let (address, listed) = list_app(ctx, token, app, app_id).await?;
    let (mut removed, mut errors) = (Vec::new(), Vec::new());
    for d in ours_among(&listed, ours.recorded, url.as_ref()) {
        match ctx.delete_drain(token, &address, &d.id).await {
            Ok(existed) => {
                let st = DrainStatus {
                    app: app.to_string(),
                    generation: Some(Generation::Cedar.as_str().to_string()),
                    kind: DrainKind::Log,
                    app_id: app_id.map(str::to_owned),
                    id: d.id.clone(),
                    token: d.token.clone(),
                    url: d.url.without_credentials(),
                };
                removed.push((st, existed));
            }
            Err(e) => errors.push(e),
        }
    }
    Ok((removed, errors))
}

async fn remove_telemetry_drains(
    ctx: &Context,
    ld: &LogDrain,
    token: &ApiToken,
    ours: &Ours<'_>,
) -> Result<Removed, HerokuError> {
    let app = ours.app;
    let app_id = ours.recorded.iter().find_map(|d| d.app_id.as_deref());
    let otlp = ld.spec.endpoint.otlp_target();
    let wanted = ours
        .password
        .and_then(|p| wanted_exporter(otlp.as_ref(), app, p).ok());
    let is_recorded = |id: &str| {
        ours.recorded
            .iter()
            .any(|k| k.kind == DrainKind::Telemetry && k.id == id)
    };
    let (_, listed) = list_telemetry_app(ctx, token, app, app_id).await?;
    let (mut removed, mut errors) = (Vec::new(), Vec::new());
    for d in telemetry_drains::ours_with_credentials(&listed, wanted.as_ref(), is_recorded) {
        match ctx.delete_telemetry_drain(token, app, &d.id).await {
            Ok(existed) => {
                let st = telemetry_drains::telemetry_status(app, d, &d.exporter.endpoint);
                removed.push((st, existed));
            }
            Err(e) => errors.push(e),
        }
    }
    Ok((removed, errors))
}

async fn announce_removed(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    d: &DrainStatus,
    why: &str,
) {
    ctx.metrics.drain_changed("removed");
    ctx.publish(
        reference,
        EventType::Normal,
        "DrainRemoved",
        format!("removed {} of app {}: {why}", describe(d), d.app),
    )
    .await;
}

/// The generation of an app to clean up: from its records, else from this
/// process's memory, else App Info.
async fn generation_of(
    ctx: &Context,
    token: &ApiToken,
    uid: &str,
    app: &str,
    recorded: &[&DrainStatus],
) -> Result<Generation, HerokuError> {
    if let Some(i) = recorded.iter().find_map(|d| AppIdentity::recorded(d)) {
        return Ok(i.generation);
    }
    if let Some(Some(i)) = ctx.app_identity(uid, app) {
        return Ok(i.generation);
    }
    identify(ctx, token, uid, app, None)
        .await
        .map(|i| i.generation)
}

/// The drains to remove: those in the status, plus those this process knows
/// of (the status of the object at hand may miss a drain made just before).
fn drains_to_clean(mut drains: Vec<DrainStatus>, known: Vec<DrainStatus>) -> Vec<DrainStatus> {
    for known in known {
        if !drains
            .iter()
            .any(|d| d.app == known.app && d.id == known.id)
        {
            drains.push(known);
        }
    }
    drains
}

/// Every listed app, and every app a drain was recorded for (an app removed
/// from the spec may still have its drain).
fn apps_to_clean(listed: BTreeSet<String>, drains: &[DrainStatus]) -> BTreeSet<String> {
    listed
        .into_iter()
        .chain(drains.iter().map(|d| d.app.clone()))
        .collect()
}

/// The drains of `app` this LogDrain made: recorded by id, or sending to its
/// drain URL (`None` when the password is gone). Add-on drains never are.
fn ours_among<'a>(
    listed: &'a [Drain],
    recorded: &'a [&'a DrainStatus],
    url: Option<&'a DrainUrl>,
) -> impl Iterator<Item = &'a Drain> + 'a {
    listed.iter().filter(move |d| {
        d.addon.is_none()
            && (recorded.iter().any(|k| k.id == d.id) || url.is_some_and(|u| d.targets(u)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{example_url, heroku_drains, status};

    fn recorded(id: &str) -> DrainStatus {
        DrainStatus {
            id: id.into(),
            ..status("example", "d.x")
        }
    }

    #[test]
    fn cleanup_removes_recorded_drains_and_drains_to_our_url_only() {
        let listed = heroku_drains();
        let drain = recorded("11234567-89ab-cdef-0123-456789abcdef");
        let drains = vec![&drain];
        let url = example_url();
        let ids: Vec<&str> = ours_among(&listed, &drains, Some(&url))
            .map(|d| d.id.as_str())
            .collect();
        // Ours by URL (current and duplicate) and by record (rotated away);
        // neither the add-on's drain nor someone else's.
        assert_eq!(
            ids,
            [
                "01234567-89ab-cdef-0123-456789abcdef",
                "11234567-89ab-cdef-0123-456789abcdef",
                "31234567-89ab-cdef-0123-456789abcdef",
            ]
        );
        // Password Secret gone: only what was recorded.
        let ids: Vec<&str> = ours_among(&listed, &drains, None)
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(ids, ["11234567-89ab-cdef-0123-456789abcdef"]);
        assert_eq!(ours_among(&listed, &[], None).count(), 0);
    }

    #[test]
    fn cleanup_covers_known_drains_and_their_apps() {
        let in_status = vec![status("a-app", "d.1")];
        let known = vec![status("a-app", "d.1"), status("gone-app", "d.2")];
        let drains = drains_to_clean(in_status, known);
        let apps: Vec<&str> = drains.iter().map(|d| d.app.as_str()).collect();
        assert_eq!(apps, ["a-app", "gone-app"]);
        let listed: BTreeSet<String> = ["b-app".to_string()].into();
        let apps: Vec<String> = apps_to_clean(listed, &drains).into_iter().collect();
        assert_eq!(apps, ["a-app", "b-app", "gone-app"]);
    }
}
