//! Heroku apps by id: an app keeps its id across a rename (and its drains
//! with it), while its old name stops answering. So once a drain of ours is
//! known, its app is addressed by the id recorded next to it
//! (`status.drains[].appId`), and a listed app name whose id is a recorded
//! one is that same app under its new name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use crate::controller::Context;
use crate::controller::memory::AppIdentity;
use crate::crd::DrainStatus;
use crate::heroku::{ApiToken, Drain, Generation, HerokuError, TelemetryDrain};

/// How to address an app: its id when recorded, else its name.
pub(crate) fn app_address(app: &str, app_id: Option<&str>) -> String {
    app_id.unwrap_or(app).to_string()
}

/// `app`'s drains and the address that found them: by `app_id` first; when
/// Heroku no longer knows that id (the app was deleted), by name, which may
/// now be another app.
pub(crate) async fn list_app(
    ctx: &Context,
    token: &ApiToken,
    app: &str,
    app_id: Option<&str>,
) -> Result<(String, Vec<Drain>), HerokuError> {
    if let Some(id) = app_id {
        match ctx.list_drains(token, id).await {
            Ok(listed) => return Ok((id.to_string(), listed)),
            Err(HerokuError::AppNotFound { .. }) => {}
            Err(e) => return Err(named(e, app)),
        }
    }
    ctx.list_drains(token, app)
        .await
        .map(|listed| (app.to_string(), listed))
        .map_err(|e| named(e, app))
}

/// App Info for `app` (by name): its id and generation, remembered for the
/// next reconciles. An answer without a generation takes `hint` (what a
/// refusal by Heroku said), else fails with
/// [`HerokuError::GenerationUnknown`]: never a guess.
pub(crate) async fn identify(
    ctx: &Context,
    token: &ApiToken,
    uid: &str,
    app: &str,
    hint: Option<Generation>,
) -> Result<AppIdentity, HerokuError> {
    let info = ctx.app_info(token, app).await.map_err(|e| named(e, app))?;
    let generation = match (info.generation(), hint) {
        (Err(HerokuError::GenerationUnknown { .. }), Some(g)) => g,
        (g, _) => g.map_err(|e| named(e, app))?,
    };
    let identity = AppIdentity {
        id: Some(info.id.clone()),
        generation,
    };
    ctx.set_app_identity(uid, app, Some(identity.clone()));
    Ok(identity)
}

/// `app`'s telemetry drains and the address that found them, like
/// [`list_app`]: by `app_id` first, by name when that id is gone.
pub(crate) async fn list_telemetry_app(
    ctx: &Context,
    token: &ApiToken,
    app: &str,
    app_id: Option<&str>,
) -> Result<(String, Vec<TelemetryDrain>), HerokuError> {
    if let Some(id) = app_id {
        match ctx.list_telemetry_drains(token, id).await {
            Ok(listed) => return Ok((id.to_string(), listed)),
            Err(HerokuError::AppNotFound { .. }) => {}
            Err(e) => return Err(named(e, app)),
        }
    }
    ctx.list_telemetry_drains(token, app)
        .await
        .map(|listed| (app.to_string(), listed))
        .map_err(|e| named(e, app))
}

/// The app id to record for `app`: the one Heroku gives on the drain kept,
/// else the id it was addressed by.
pub(crate) fn app_id_of(kept: &Drain, app: &str, address: &str) -> Option<String> {
    kept.app
        .as_ref()
        .map(|a| a.id.clone())
        .or_else(|| (address != app).then(|| address.to_string()))
}

/// Errors name the app as the spec does, whatever address was used.
pub(crate) fn named(e: HerokuError, app: &str) -> HerokuError {
    match e {
        HerokuError::AppNotFound { .. } => HerokuError::AppNotFound {
            app: app.to_string(),
        },
        HerokuError::Forbidden { id, message, .. } => HerokuError::Forbidden {
            app: app.to_string(),
            id,
            message,
        },
        HerokuError::LogChannelPending { attempts, .. } => HerokuError::LogChannelPending {
            app: app.to_string(),
            attempts,
        },
        HerokuError::GenerationUnknown { .. } => HerokuError::GenerationUnknown {
            app: app.to_string(),
        },
        other => other,
    }
}

/// The stale drain record of the app whose id is `app_id`, if any.
fn renamed_from(stale: &[DrainStatus], app_id: &str) -> Option<usize> {
    stale
        .iter()
        .position(|d| d.app_id.as_deref() == Some(app_id))
}

/// Finds the listed apps that are a stale record's app under a new name
/// (renamed on Heroku, then in `spec.apps`): their records move to the new
/// name, so the drain is replaced on the same app (new URL first, then the
/// old drain removed) instead of being deleted under a name Heroku no longer
/// knows and a second one created. `ids` are the App Info answers the
/// reconcile got for listed apps without a record ([`identify`]): no call of
/// its own. Returns the records still stale.
pub(crate) async fn resolve_renames(
    ctx: &Context,
    uid: &str,
    reference: &ObjectReference,
    mut stale: Vec<DrainStatus>,
    ids: &BTreeMap<String, String>,
    drains: &mut BTreeMap<String, DrainStatus>,
) -> Vec<DrainStatus> {
    for (app, id) in ids {
        if drains.contains_key(app) {
            continue;
        }
        let Some(i) = renamed_from(&stale, id) else {
            continue;
        };
        let old = stale.swap_remove(i);
        drains.remove(&old.app);
        ctx.drain_removed(uid, &old);
        ctx.app_succeeded(uid, &old.app);
        drains.insert(
            app.clone(),
            DrainStatus {
                app: app.clone(),
                ..old.clone()
            },
        );
        ctx.publish(
            reference,
            EventType::Normal,
            "AppRenamed",
            format!(
                "Heroku app {} (id {id}) is now named {app}: its drain {} moves to the new name",
                old.app, old.id
            ),
        )
        .await;
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{heroku_drains, status};

    #[test]
    fn an_app_is_found_by_its_recorded_id_under_a_new_name() {
        let old = DrainStatus {
            app_id: Some("01234567-89ab-cdef-0123-456789abcdef".into()),
            ..status("old-name", "d.1")
        };
        let legacy = status("other-app", "d.2");
        let stale = vec![legacy, old];
        assert_eq!(
            renamed_from(&stale, "01234567-89ab-cdef-0123-456789abcdef"),
            Some(1)
        );
        assert_eq!(
            renamed_from(&stale, "ffffffff-89ab-cdef-0123-456789abcdef"),
            None
        );
    }

    #[test]
    fn the_app_id_comes_from_herokus_drain_or_the_address() {
        let listed = heroku_drains();
        let kept = &listed[0];
        assert_eq!(
            app_id_of(kept, "example", "example").as_deref(),
            Some("01234567-89ab-cdef-0123-456789abcdef")
        );
        let bare = Drain {
            app: None,
            ..kept.clone()
        };
        assert_eq!(app_id_of(&bare, "example", "id-1").as_deref(), Some("id-1"));
        assert_eq!(app_id_of(&bare, "example", "example"), None);
        assert_eq!(app_address("example", Some("id-1")), "id-1");
        assert_eq!(app_address("example", None), "example");
    }

    #[test]
    fn errors_name_the_app_as_the_spec_does() {
        let e = named(
            HerokuError::AppNotFound {
                app: "01234567-89ab-cdef-0123-456789abcdef".into(),
            },
            "shop-web",
        );
        assert_eq!(
            e,
            HerokuError::AppNotFound {
                app: "shop-web".into()
            }
        );
        assert_eq!(
            named(HerokuError::Unauthorized, "shop-web"),
            HerokuError::Unauthorized
        );
    }
}
