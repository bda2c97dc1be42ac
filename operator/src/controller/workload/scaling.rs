//! Who sets the ingester workload's (Deployment's or StatefulSet's) replicas (`spec.ingester.autoscaling`):
//! the LogDrain's `replicas` (mode `manual`), the operator from the pods' load
//! (mode `operator`, decided in autoscale.rs), or a HorizontalPodAutoscaler
//! (mode `hpa`).
//!
//! In the two autoscaled modes the operator's server-side apply of the
//! Deployment leaves `spec.replicas` out, so it never fights whoever scales.
//! A field its manager stops applying is removed (reset to 1) unless
//! another manager owns it too, so before the first such apply the replicas
//! are claimed as they are by a second field manager, `AUTOSCALER`, through
//! the scale subresource; the operator's scale decisions are applied under
//! that manager as well.

use std::time::Instant;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::autoscale::{self, Inputs, Policy};
use super::ingester::Workload;
use super::pods::PodReports;
use crate::controller::Context;
use crate::controller::owned::{apply_owned, delete_owned};
use crate::crd::{AutoscalingMode, LogDrain};
use crate::error::Result;
use crate::resources::{self, Owner};

/// Field manager of the replicas while the ingesters are autoscaled.
pub(crate) const AUTOSCALER: &str = "drainpipe-autoscaler";

/// Sets the workload's (Deployment's or StatefulSet's) replicas through its
/// scale subresource, owned by `AUTOSCALER`. With a `resource_version` the
/// write is refused (409) if the workload changed since it was read.
async fn set_replicas(
    ctx: &Context,
    owner: &Owner,
    ld: &LogDrain,
    replicas: i32,
    resource_version: Option<&str>,
) -> kube::Result<()> {
    let name = resources::ingester_name(&owner.name);
    let mut metadata = json!({"name": name, "namespace": owner.namespace});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    let scale = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": metadata,
        "spec": {"replicas": replicas},
    });
    let params = PatchParams::apply(AUTOSCALER).force();
    let patch = Patch::Apply(&scale);
    if resources::workload_kind(ld) == "StatefulSet" {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        api.patch_scale(&name, &params, &patch).await?;
    } else {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        api.patch_scale(&name, &params, &patch).await?;
    }
    Ok(())
}

/// The workload's stored `spec.replicas` and the resource version read;
/// `None` before it exists.
async fn stored_replicas(
    ctx: &Context,
    owner: &Owner,
    ld: &LogDrain,
) -> Result<Option<(i32, Option<String>)>> {
    let name = resources::ingester_name(&owner.name);
    let read = |meta: kube::api::ObjectMeta, replicas: Option<i32>| {
        replicas.map(|r| (r, meta.resource_version))
    };
    Ok(if resources::workload_kind(ld) == "StatefulSet" {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        api.get_opt(&name)
            .await?
            .and_then(|s| read(s.metadata, s.spec?.replicas))
    } else {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        api.get_opt(&name)
            .await?
            .and_then(|d| read(d.metadata, d.spec?.replicas))
    })
}

/// Before the Deployment is applied without replicas: make `AUTOSCALER`
/// own them at their current value (kept within min and max), once per
/// LogDrain and process. Mode `manual` forgets the claim (the operator's own
/// apply owns the replicas again).
pub(crate) async fn claim_replicas(
    ctx: &Context,
    owner: &Owner,
    ld: &LogDrain,
    uid: &str,
) -> Result<()> {
    let Some(a) = ld
        .spec
        .ingester
        .autoscaling
        .as_ref()
        .filter(|a| a.mode != AutoscalingMode::Manual)
    else {
        ctx.forget_scaler(uid);
        return Ok(());
    };
    if ctx.with_scaler(uid, |m| m.claimed) {
        return Ok(());
    }
    let policy = Policy::of(a);
    // The claim writes back what it read, so it must not undo a scale made
    // in between (an HPA's or a person's): the write is conditional on the
    // version read, and a conflict reads again.
    let mut attempts = 0;
    loop {
        // A workload not created yet starts at 1 and is scaled after the apply.
        let Some((current, version)) = stored_replicas(ctx, owner, ld).await? else {
            return Ok(());
        };
        let claimed = current.clamp(policy.min, policy.max);
        match set_replicas(ctx, owner, ld, claimed, version.as_deref()).await {
            Ok(()) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 3 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
    ctx.with_scaler(uid, |m| m.claimed = true);
    Ok(())
}

/// Mode `operator`: reads the load from `pods`, decides and applies the
/// replicas, with an event on every change. Returns the Deployment's
/// replicas after it.
pub(crate) async fn autoscale(
    ctx: &Context,
    owner: &Owner,
    ld: &LogDrain,
    uid: &str,
    reference: &ObjectReference,
    workload: &Workload,
    pods: &PodReports,
) -> Result<Option<i32>> {
    let current = workload.spec_replicas;
    let Some(a) = ld
        .spec
        .ingester
        .autoscaling
        .as_ref()
        .filter(|a| a.mode == AutoscalingMode::Operator)
    else {
        return Ok(current);
    };
    let current = current.unwrap_or(1);
    let policy = Policy::of(a);
    let now = Instant::now();
    let min_gap = ctx.settings.autoscale_interval / 2;
    let decision = ctx.with_scaler(uid, |m| {
        let loads = autoscale::update_loads(&mut m.pods, &pods.loads, min_gap);
        m.history
            .retain(|(at, _)| now.saturating_duration_since(*at) <= policy.scale_down_window);
        let decision = autoscale::decide(&Inputs {
            policy: &policy,
            current,
            pods: &loads,
            flushing: pods.flushing,
            history: &m.history,
            now,
        });
        m.history.push((now, decision.recommendation));
        decision
    });
    if decision.desired == current {
        tracing::debug!(reason = %decision.reason, "ingester replicas unchanged");
        return Ok(Some(current));
    }
    set_replicas(ctx, owner, ld, decision.desired, None).await?;
    ctx.with_scaler(uid, |m| m.claimed = true);
    let reason = if decision.desired > current {
        "ScaledUp"
    } else {
        "ScaledDown"
    };
    tracing::info!(workload = %workload.name, kind = workload.kind, reason, detail = %decision.reason, "scaled the ingesters");
    ctx.publish(reference, EventType::Normal, reason, decision.reason)
        .await;
    Ok(Some(decision.desired))
}

/// The HorizontalPodAutoscaler of mode `hpa`, or none: one this LogDrain
/// owns goes when the mode changes (one of the same name it does not own
/// is left alone).
pub(crate) async fn sync_hpa(ctx: &Context, owner: &Owner, ld: &LogDrain) -> Result<()> {
    match resources::horizontal_pod_autoscaler(owner, ld) {
        Some(hpa) => {
            apply_owned(ctx, &owner.namespace, &hpa).await?;
        }
        None => {
            delete_owned::<HorizontalPodAutoscaler>(
                ctx,
                owner,
                &resources::ingester_name(&owner.name),
            )
            .await?;
        }
    }
    Ok(())
}
