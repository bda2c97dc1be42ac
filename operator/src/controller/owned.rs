//! Writes of the objects a LogDrain owns: server-side apply under the
//! operator's field manager, and deletion of one only when it is ours. Every
//! concern that owns objects (the workload, scaling, the orchestrators)
//! writes through these.

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::{Context, MANAGER};
use crate::error::{Error, Result};
use crate::resources::Owner;

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
    Ok(api
        .patch(&name, &apply_params(), &Patch::Apply(obj))
        .await?)
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
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
