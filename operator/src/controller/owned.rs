//! Writes of the objects a LogDrain owns: server-side apply under the
//! operator's field manager, and deletion of one only when it is ours. Every
//! concern that owns objects (the workload, scaling, the orchestrators)
//! writes through these.
//!
//! An apply that would change nothing is not sent: when this process last
//! applied the very same object and the object is still at the
//! resourceVersion that apply left (nobody changed it since), a read
//! replaces the write. A resync of a settled LogDrain then writes nothing
//! to the apiserver.

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::{Context, MANAGER, fingerprint, lock};
use crate::error::{Error, Result};
use crate::resources::Owner;

/// The key of an owned object in `Context::applied`: its owner's uid first,
/// so forgetting a LogDrain forgets its objects.
fn applied_key<K: Resource<DynamicType = ()>>(
    owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    ns: &str,
    name: &str,
) -> String {
    let owner = owners.first().map(|o| o.uid.as_str()).unwrap_or_default();
    format!("{owner}/{}/{ns}/{name}", K::kind(&()))
}

pub(crate) fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

pub(crate) async fn apply_owned<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.meta().name.clone().ok_or(Error::MissingObjectKey)?;
    let key = applied_key::<K>(obj.owner_references(), ns, &name);
    let wanted = fingerprint(&serde_json::to_string(obj).unwrap_or_default());
    let last = lock(&ctx.applied).get(&key).cloned();
    if let Some((applied, version)) = last
        && applied == wanted
        && let Some(live) = api.get_opt(&name).await?
        && live.resource_version().as_deref() == Some(version.as_str())
    {
        return Ok(live);
    }
    let applied = api
        .patch(&name, &apply_params(), &Patch::Apply(obj))
        .await?;
    if let Some(version) = applied.resource_version() {
        lock(&ctx.applied).insert(key, (wanted, version));
    }
    Ok(applied)
}

/// Deletes object `name` of kind `K` when this LogDrain owns it (one of
/// the same name it does not own is left alone), with its dependents.
pub(crate) async fn delete_owned<K>(ctx: &Context, owner: &Owner, name: &str) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let ours = api.get_opt(name).await?.is_some_and(|o| {
        o.owner_references()
            .iter()
            .any(|r| r.uid == owner.reference.uid)
    });
    if ours {
        lock(&ctx.applied).remove(&applied_key::<K>(
            std::slice::from_ref(&owner.reference),
            &owner.namespace,
            name,
        ));
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn an_applied_object_is_remembered_under_its_logdrain() {
        let owner = OwnerReference {
            api_version: "drainpipe.dev/v1alpha1".into(),
            kind: "LogDrain".into(),
            name: "prod".into(),
            uid: "uid-1".into(),
            ..OwnerReference::default()
        };
        let key = applied_key::<Secret>(std::slice::from_ref(&owner), "logs", "prod-routes");
        assert_eq!(key, "uid-1/Secret/logs/prod-routes");
        // Forgetting LogDrain uid-1 drops keys with this prefix only.
        assert!(key.starts_with("uid-1/"));
        assert!(!key.starts_with("uid-10/"));
        assert_eq!(
            applied_key::<Secret>(&[], "logs", "prod-drain-password"),
            "/Secret/logs/prod-drain-password"
        );
    }
}
