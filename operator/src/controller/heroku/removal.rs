//! Removing the drains of ours an app has, of either kind: for suspend, an
//! app leaving `spec.apps`, and deletion under `deletionPolicy: Delete`.
//! Ours are the drains recorded in the status, and those sending to our
//! target with our drain password, so nothing is left behind when the
//! status was lost.

use std::collections::BTreeSet;

use kube::Resource;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::identity::{identify, list_app, list_telemetry_app, named};
use super::log_drains::drain_url;
use super::report::describe;
use super::telemetry_drains::{self, wanted_exporter};
use crate::controller::Context;
use crate::controller::memory::AppIdentity;
use crate::crd::{DrainKind, DrainStatus, LogDrain};
use crate::heroku::{ApiToken, Drain, DrainUrl, Generation, HerokuError};

/// Removes every Heroku drain of this LogDrain: those recorded in `drains`
/// and those sending to its drain URL (when `password` is known), for every
/// listed app and every app a drain was recorded for. Each removal is
/// announced with `why`. Returns the drains removed and the apps that failed.
pub(crate) async fn remove_ours(
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

impl Ours<'_> {
    /// The app's id as recorded, to address it by (it survives renames).
    fn app_id(&self) -> Option<&str> {
        self.recorded.iter().find_map(|d| d.app_id.as_deref())
    }
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
    let app_id = ours.app_id();
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
    let app_id = ours.app_id();
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

/// Every listed app, and every app a drain was recorded for (an app removed
/// from the spec may still have its drain).
pub(crate) fn apps_to_clean(listed: BTreeSet<String>, drains: &[DrainStatus]) -> BTreeSet<String> {
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
}
