//! The drain password outlives a LogDrain with `deletionPolicy: Retain`.
//!
//! The drains such a LogDrain leaves on Heroku carry its password in their
//! URLs. Were the password Secret owned by the LogDrain, the garbage
//! collector would delete it with the LogDrain, and a re-created LogDrain of
//! the same name (a GitOps prune and re-sync, a namespace restore, an undo)
//! would generate a new password: its drains would differ from the retained
//! ones, so every app would end with two drains, the retained one answered
//! 401 forever. So under Retain the Secret carries no owner reference: a
//! LogDrain re-created under the same name reads the same password, its
//! drain URLs equal the retained drains', and the retained drains are
//! adopted as its own (one drain per app, authenticating). Under Delete the
//! Secret is owned, and goes with the LogDrain like every other object.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::controller::Context;
use crate::crd::{DeletionPolicy, LogDrain};
use crate::error::Result;
use crate::resources::{self, Owner};

/// Whether Secret `name` is `ld`'s drain password Secret.
pub(crate) fn is_password_secret_of(ld: &LogDrain, name: &str) -> bool {
    ld.metadata
        .name
        .as_deref()
        .is_some_and(|n| resources::password_secret_name(n) == name)
}

/// The owner references the password Secret should have under `policy`:
/// those of other owners as they are, plus the LogDrain's under Delete only.
fn wanted_owners(
    current: &[OwnerReference],
    owner: &OwnerReference,
    policy: DeletionPolicy,
) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = current
        .iter()
        .filter(|r| !(r.kind == owner.kind && r.api_version == owner.api_version))
        .cloned()
        .collect();
    if policy == DeletionPolicy::Delete {
        refs.push(owner.clone());
    }
    refs
}

/// Gives the drain password Secret the owner references `policy` calls for
/// (a no-op when it has them, or when there is no Secret).
pub(crate) async fn password_owner(
    ctx: &Context,
    owner: &Owner,
    policy: DeletionPolicy,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = resources::password_secret_name(&owner.name);
    let Some(secret) = api.get_opt(&name).await? else {
        return Ok(());
    };
    let current = secret.owner_references();
    let wanted = wanted_owners(current, &owner.reference, policy);
    if wanted == current {
        return Ok(());
    }
    // A merge patch replaces the list as a whole; the resource version makes
    // it fail (and the reconcile retry) if the Secret changed meanwhile.
    let patch = json!({"metadata": {
        "ownerReferences": wanted,
        "resourceVersion": secret.resource_version(),
    }});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(
        secret = %name,
        policy = ?policy,
        "drain password Secret ownership follows the deletion policy"
    );
    Ok(())
}

/// Before a Retain LogDrain goes: keep its password Secret (the policy may
/// have been set just before the deletion, with no reconcile in between).
pub(crate) async fn release_password(ctx: &Context, ld: &LogDrain) -> Result<()> {
    match Owner::of(ld) {
        Some(owner) => password_owner(ctx, &owner, DeletionPolicy::Retain).await,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(kind: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "drainpipe.dev/v1alpha1".into(),
            kind: kind.into(),
            name: "prod".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn retain_drops_the_logdrain_owner_and_delete_sets_the_current_one() {
        let ours = reference("LogDrain", "uid-new");
        let stale = reference("LogDrain", "uid-old");
        let other = OwnerReference {
            api_version: "v1".into(),
            ..reference("ConfigMap", "uid-cm")
        };
        let current = vec![stale.clone(), other.clone()];
        let retained = wanted_owners(&current, &ours, DeletionPolicy::Retain);
        assert_eq!(retained, std::slice::from_ref(&other));
        // Adopted by a re-created LogDrain under Delete: the new uid.
        assert_eq!(
            wanted_owners(&current, &ours, DeletionPolicy::Delete),
            [other, ours.clone()]
        );
        assert_eq!(
            wanted_owners(std::slice::from_ref(&ours), &ours, DeletionPolicy::Delete),
            [ours]
        );
    }

    #[test]
    fn the_password_secret_is_named_after_the_logdrain() {
        let ld = crate::controller::fixtures::ld(&["a-app"]);
        assert!(is_password_secret_of(&ld, "prod-drain-password"));
        assert!(!is_password_secret_of(&ld, "prod-routes"));
        assert!(!is_password_secret_of(&ld, "heroku"));
    }
}
