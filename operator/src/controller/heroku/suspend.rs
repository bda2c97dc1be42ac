//! `spec.suspend`: the emergency stop. The drains this LogDrain made are
//! removed (the cleanup's removal, reused), everything needed to register
//! them again stays: the drain password, the routes (the ingesters keep
//! accepting what Logplex already has in flight) and the ingesters, which
//! archive what they acknowledged.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use super::removal::remove_ours;
use super::report::{ErrorSummary, HerokuOutcome};
use super::token::heroku_token;
use crate::controller::status::conditions::Cond;
use crate::controller::{Context, fingerprint};
use crate::crd::{DrainStatus, LogDrain};
use crate::error::Error;

/// The condition reason (on `DrainsRegistered`, and so on `Ready`).
pub(crate) const SUSPENDED: &str = "Suspended";

/// What a suspension was verified for: the apps and the endpoint. A change
/// of either while suspended is checked with Heroku again.
fn suspension_fingerprint(ld: &LogDrain) -> u64 {
    fingerprint(&(
        ld.app_set(),
        ld.spec.endpoint.target().map(|t| t.describe()),
    ))
}

/// Removes this LogDrain's Heroku drains; `drains` is left with none of
/// those removed. A suspension verified recently makes no Heroku call.
pub(crate) async fn suspend_drains(
    ctx: &Context,
    ld: &LogDrain,
    uid: &str,
    reference: &ObjectReference,
    password: &str,
    drains: &mut BTreeMap<String, DrainStatus>,
) -> HerokuOutcome {
    let fp = suspension_fingerprint(ld);
    // Checking a suspension lists every app: paced like drift checks.
    let pacing = ctx.pacing();
    let fresh = ctx
        .suspension_verified_age(uid, fp)
        .is_some_and(|age| pacing.fresh(age, ctx.settings.resync));
    if drains.is_empty() && fresh {
        return suspended(0);
    }
    let token = match heroku_token(ctx, ld).await {
        Ok(t) => t,
        Err(e) => {
            return HerokuOutcome {
                condition: Cond::failed(e.reason(), format!("spec.suspend is true, but {e}")),
                error: Some(e),
            };
        }
    };
    let recorded: Vec<DrainStatus> = drains.values().cloned().collect();
    let why = "spec.suspend is true (emergency stop)";
    let (removed, errors) = remove_ours(ctx, ld, &token, &recorded, Some(password), why).await;
    for d in &removed {
        drains.remove(&d.app);
        ctx.drain_removed(uid, d);
    }
    if let Some(summary) = ErrorSummary::of(errors) {
        ctx.unverify_suspension(uid);
        let message = format!(
            "spec.suspend is true, but {} apps may still have a drain: {}",
            summary.count, summary.text
        );
        return HerokuOutcome {
            condition: Cond::failed(summary.first.reason(), message.clone()),
            error: Some(Error::Drains {
                message,
                first: summary.first,
            }),
        };
    }
    // Everything recorded is gone, also what Heroku no longer listed.
    for d in std::mem::take(drains).into_values() {
        ctx.drain_removed(uid, &d);
    }
    ctx.set_suspension_verified(uid, fp);
    if !removed.is_empty() {
        ctx.publish(
            reference,
            EventType::Normal,
            "DrainsSuspended",
            format!(
                "spec.suspend is true: removed {} Heroku drains; set it to false to register them again",
                removed.len()
            ),
        )
        .await;
    }
    suspended(removed.len())
}

fn suspended(removed_now: usize) -> HerokuOutcome {
    let now = if removed_now > 0 {
        format!(" (removed {removed_now} just now)")
    } else {
        String::new()
    };
    HerokuOutcome {
        condition: Cond::failed(
            SUSPENDED,
            format!(
                "spec.suspend is true: no Heroku drain is registered{now}; the ingesters keep running and the drain password is kept, `suspend: false` registers the drains again"
            ),
        ),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::ld;

    #[test]
    fn suspension_is_checked_again_when_apps_or_endpoint_change() {
        let a = ld(&["a-app"]);
        let b = ld(&["a-app", "b-app"]);
        assert_ne!(suspension_fingerprint(&a), suspension_fingerprint(&b));
        let mut moved = a.clone();
        moved.spec.endpoint.url = Some("https://other.example.com".into());
        assert_ne!(suspension_fingerprint(&a), suspension_fingerprint(&moved));
        assert_eq!(
            suspension_fingerprint(&a),
            suspension_fingerprint(&a.clone())
        );
    }

    #[test]
    fn a_suspended_logdrain_is_not_ready_and_says_how_to_resume() {
        let o = suspended(2);
        assert!(!o.condition.status);
        assert_eq!(o.condition.reason, SUSPENDED);
        assert!(o.condition.message.contains("removed 2 just now"));
        assert!(o.condition.message.contains("`suspend: false`"));
        assert!(o.error.is_none());
    }
}
