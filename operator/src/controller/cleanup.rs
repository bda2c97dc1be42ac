//! Deletion of a LogDrain: its Heroku drains go (deletionPolicy Delete) or
//! stay (Retain); the owned objects go with it by owner reference, once
//! the buffer claims (which it does not own) are flushed and deleted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::Context;
use super::heroku::removal::remove_ours;
use super::heroku::report::ErrorSummary;
use super::heroku::retain;
use super::heroku::token::heroku_token;
use super::workload::ingester;
use crate::crd::{DeletionPolicy, DrainStatus, LogDrain};
use crate::error::{Error, Result};
use crate::resources;

pub(super) async fn cleanup(ld: Arc<LogDrain>, ctx: &Context) -> Result<Action> {
    // Buffer claims are not owned (they must outlive their pods): nothing
    // would ever upload or delete them after the LogDrain is gone.
    ingester::flush_before_deletion(ctx, &ld).await?;
    ctx.metrics
        .compaction
        .forget(&ld.namespace().unwrap_or_default(), &ld.name_any());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::status;
    use crate::controller::heroku::removal::apps_to_clean;
    use std::collections::BTreeSet;

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
