//! Deletion of a LogDrain: its Heroku drains go (deletionPolicy Delete) or
//! stay (Retain); the owned objects go with it by owner reference.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::Context;
use super::drains::{drain_url, heroku_token};
use crate::crd::{DeletionPolicy, LogDrain};
use crate::error::{Error, Result};
use crate::heroku::HerokuError;
use crate::resources;

pub(super) async fn cleanup(ld: Arc<LogDrain>, ctx: &Context) -> Result<Action> {
    let uid = ld.uid().unwrap_or_default();
    let reference = ld.object_ref(&());
    // The status of the object at hand may miss a drain made just before.
    let mut drains = ld.status.clone().unwrap_or_default().drains;
    let (known, _) = ctx.known_drains(&uid);
    for known in known {
        if !drains
            .iter()
            .any(|d| d.app == known.app && d.id == known.id)
        {
            drains.push(known);
        }
    }
    if ld.spec.deletion_policy == DeletionPolicy::Retain {
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
    let target = ld.spec.endpoint.target();
    let apps: BTreeSet<String> = ld
        .app_set()
        .into_iter()
        .chain(drains.iter().map(|d| d.app.clone()))
        .collect();
    let mut errors = Vec::new();
    for app in &apps {
        let url = password
            .as_deref()
            .and_then(|p| drain_url(target.as_ref(), app, p).ok());
        let listed = match ctx.list_drains(&token, app).await {
            Ok(l) => l,
            // A deleted app has no drains left to remove.
            Err(HerokuError::AppNotFound { .. }) => continue,
            Err(e) => {
                errors.push((app.clone(), e));
                continue;
            }
        };
        let ours = listed.iter().filter(|d| {
            d.addon.is_none()
                && (drains.iter().any(|k| k.app == *app && k.id == d.id)
                    || url.as_ref().is_some_and(|u| d.targets(u)))
        });
        for d in ours {
            match ctx.delete_drain(&token, app, &d.id).await {
                Ok(true) => {
                    ctx.metrics.drain_changed("removed");
                    ctx.publish(
                        &reference,
                        EventType::Normal,
                        "DrainRemoved",
                        format!(
                            "removed Heroku drain {} ({}) of app {app}: the LogDrain is being deleted (deletionPolicy Delete)",
                            d.id, d.token
                        ),
                    )
                    .await;
                }
                Ok(false) => {}
                Err(e) => errors.push((app.clone(), e)),
            }
        }
    }
    if errors.is_empty() {
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    errors.sort_by_key(|(app, e)| (e.severity(), app.clone()));
    let message = errors
        .iter()
        .map(|(app, e)| format!("{app}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!("cannot remove Heroku drains: {message}");
    ctx.publish(
        &reference,
        EventType::Warning,
        "CleanupFailed",
        message.clone(),
    )
    .await;
    Err(Error::Drains {
        message,
        first: errors.swap_remove(0).1,
    })
}
