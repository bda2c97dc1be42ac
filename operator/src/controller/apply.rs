//! One reconcile of a live LogDrain: the owned objects, then Heroku, then
//! Glue, then the status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use drainpipe_contract::alerts::AlertRule;
use drainpipe_contract::routes::{AppRoute, RoutesFile};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::alerts::render::render_alerts;
use super::alerts::resolve;
use super::catalog::glue::sync_catalog;
use super::catalog::retention::sync_retention;
use super::heroku::drains::sync_drains;
use super::heroku::retain;
use super::heroku::suspend::suspend_drains;
use super::owned::{apply_owned, apply_params, delete_owned};
use super::status::alerts::alerts_condition;
use super::status::compaction::{compaction_condition, rejected_condition, sync_runs};
use super::status::conditions::{Cond, condition, ready_condition};
use super::status::freshness;
use super::status::writable;
use super::workload::compaction::{Compaction, sync_compaction};
use super::workload::ingester::{ingester_condition, sync_workload};
use super::workload::pods;
use super::workload::scaling;
use super::{
    ALERTS_READY, ARCHIVE_FRESH, ARCHIVE_WRITABLE, CATALOG_SYNCED, COMPACTION_SUCCEEDED, Context,
    DRAINS_REGISTERED, INGESTER_AVAILABLE, READY, RETENTION_APPLIED, fingerprint, lock,
};
use crate::backoff::jittered;
use crate::crd::{
    AppLastObject, AutoscalingMode, CompactionStatus, DrainStatus, DrainTarget, LogDrain,
    LogDrainStatus,
};
use crate::error::{Error, Result};
use crate::resources::{self, Owner};

/// How soon to look again at a released buffer claim.
const RECHECK_CLAIMS: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) async fn apply(ld: Arc<LogDrain>, ctx: &Context) -> Result<Action> {
    let owner = Owner::of(&ld).ok_or(Error::MissingObjectKey)?;
    let uid = ld.uid().ok_or(Error::MissingObjectKey)?;
    let reference = ld.object_ref(&());
    let old_status = ld.status.clone().unwrap_or_default();

    // 1. The ingester, with routes for every app before any drain exists,
    // so Heroku's first delivery finds its app (a 404 would be dropped).
    let password = ensure_password(ctx, &owner).await?;
    retain::password_owner(ctx, &owner, ld.spec.deletion_policy).await?;
    // What this process saw last is at least as new as the status of the
    // object at hand, which may predate the last status written.
    let (known, removed) = ctx.known_drains(&uid);
    let mut drains: BTreeMap<String, DrainStatus> = old_status
        .drains
        .iter()
        .filter(|d| !removed.contains(d))
        .cloned()
        .chain(known)
        .map(|d| (d.app.clone(), d))
        .collect();
    let spec_apps = ld.app_set();
    let target = ld.spec.endpoint.target();
    let previous = current_routes(ctx, &owner).await?;
    // The alert rules that can run; the others are named in AlertsReady.
    let alerts = render_alerts(ctx, &ld, &owner.namespace).await?;
    let routes = routes_for(
        &spec_apps,
        &drains,
        &password,
        target.as_ref(),
        &previous,
        &alerts.rules,
    );
    apply_routes(ctx, &owner, &routes).await?;
    scaling::claim_replicas(ctx, &owner, &ld, &uid).await?;
    let workload = sync_workload(ctx, &owner, &ld, &reference).await?;
    apply_owned::<Service>(ctx, &owner.namespace, &resources::service(&owner, &ld)).await?;
    sync_ingress(ctx, &owner, &ld).await?;
    scaling::sync_hpa(ctx, &owner, &ld).await?;
    let compaction = sync_compaction(ctx, &owner, &ld).await?;

    // 2. Heroku.
    let heroku = if ld.spec.suspend {
        suspend_drains(ctx, &ld, &uid, &reference, &password, &mut drains).await
    } else {
        ctx.unverify_suspension(&uid);
        sync_drains(
            ctx,
            &ld,
            &uid,
            &reference,
            &password,
            &mut drains,
            &previous,
        )
        .await
    };
    let new_routes = routes_for(
        &spec_apps,
        &drains,
        &password,
        target.as_ref(),
        &routes,
        &alerts.rules,
    );
    if new_routes != routes {
        apply_routes(ctx, &owner, &new_routes).await?;
    }

    // 3. Glue.
    let catalog = sync_catalog(ctx, &ld, &uid, &reference, &old_status).await;

    // 3b. Retention.
    let retention = sync_retention(ctx, &ld, &uid, &reference, &old_status).await;

    // 3c. Freshness and writability, from the ingester pods' metrics.
    let pods = pods::read_pods(ctx, &owner.namespace, &owner.name).await;
    // 3d. Scaling by load, from the same reads.
    let replicas = scaling::autoscale(ctx, &owner, &ld, &uid, &reference, &workload, &pods).await?;
    let last = pods.last;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let fresh = freshness::fresh_condition(
        &spec_apps,
        &last,
        now,
        pods.since.unwrap_or(now),
        ctx.settings.archive_stale_after,
        pods.read,
    );
    let writable =
        writable::writable_condition(&pods.probes, pods.read, &resources::archive_url(&ld));

    // 4. Status.
    let generation = ld.metadata.generation;
    let mut conditions = Vec::new();
    let old = &old_status.conditions;
    conditions.push(condition(
        old,
        DRAINS_REGISTERED,
        &heroku.condition,
        generation,
    ));
    conditions.push(condition(
        old,
        CATALOG_SYNCED,
        &catalog.condition,
        generation,
    ));
    let wanted = match ld.spec.ingester.autoscaling_mode() {
        AutoscalingMode::Manual => ld.spec.ingester.replicas,
        AutoscalingMode::Operator | AutoscalingMode::Hpa => {
            replicas.unwrap_or(ld.spec.ingester.replicas)
        }
    };
    let ingester = ingester_condition(&workload, wanted);
    conditions.push(condition(old, INGESTER_AVAILABLE, &ingester, generation));
    conditions.push(condition(old, ARCHIVE_FRESH, &fresh, generation));
    conditions.push(condition(old, ARCHIVE_WRITABLE, &writable, generation));
    if let Some(c) = &retention.condition {
        conditions.push(condition(old, RETENTION_APPLIED, c, generation));
    }
    if !ld.spec.alerts.is_empty() {
        let mut problems = alerts.problems.clone();
        problems.extend(resolve::disabled(&ld.spec.alerts, &alerts, &pods.disabled));
        let c = alerts_condition(ld.spec.alerts.len(), &problems);
        conditions.push(condition(old, ALERTS_READY, &c, generation));
    }
    // Not one of Ready's parts: logs flow whatever compaction does.
    let (compaction_status, compaction_cond) =
        compaction_state(ctx, &owner, &uid, &reference, &ld, &compaction, &old_status).await;
    if let Some(c) = &compaction_cond {
        conditions.push(condition(old, COMPACTION_SUCCEEDED, c, generation));
    }
    let ready = ready_condition(
        &ld,
        &[&heroku.condition, &catalog.condition, &ingester, &writable],
    );
    conditions.insert(0, condition(old, READY, &ready, generation));
    let status = LogDrainStatus {
        observed_generation: generation,
        conditions,
        drains: drains.into_values().collect(),
        app_count: i32::try_from(spec_apps.len()).unwrap_or(i32::MAX),
        replicas: workload.replicas,
        ready_replicas: workload.ready_replicas,
        selector: Some(resources::selector_string(&owner.name)),
        last_object_at: last.values().max().and_then(|t| time_at(*t)),
        last_objects: last
            .iter()
            .filter_map(|(app, t)| {
                Some(AppLastObject {
                    app: app.clone(),
                    last_object_at: time_at(*t)?,
                })
            })
            .collect(),
        compaction: compaction_status,
    };
    // The object may predate the status written last: then equal to it is
    // not proof that the stored status is this one.
    let status_fp = fingerprint(&serde_json::to_string(&status).unwrap_or_default());
    let written = lock(&ctx.status_written).get(&uid).copied();
    if status != old_status || written.is_some_and(|w| w != status_fp) {
        patch_status(ctx, &owner, &status).await?;
        lock(&ctx.status_written).insert(uid.clone(), status_fp);
    }

    // 5. Requeue: errors go through error_policy (after the status above
    // told the user what is wrong).
    if let Some(err) = heroku.error.or(catalog.error).or(retention.error) {
        return Err(err);
    }
    lock(&ctx.failures).remove(&uid);
    let every = match ld.spec.ingester.autoscaling_mode() {
        // The load is read on each reconcile.
        AutoscalingMode::Operator => ctx.settings.resync.min(ctx.settings.autoscale_interval),
        AutoscalingMode::Manual | AutoscalingMode::Hpa => ctx.settings.resync,
    };
    if workload.recheck {
        // A released buffer claim waits on a pod or a flush Job.
        return Ok(Action::requeue(RECHECK_CLAIMS.min(every)));
    }
    Ok(Action::requeue(jittered(every)))
}

/// `status.compaction` and `CompactionSucceeded` (both `None` without
/// `spec.archive.compaction`). Reading the runs is not worth failing the
/// reconcile over: on an error the status keeps what it said.
async fn compaction_state(
    ctx: &Context,
    owner: &Owner,
    uid: &str,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    ld: &LogDrain,
    compaction: &Compaction,
    old_status: &LogDrainStatus,
) -> (Option<CompactionStatus>, Option<Cond>) {
    let name = resources::compaction_name(&owner.name);
    let old = old_status.compaction.as_ref();
    match (compaction, &ld.spec.archive.compaction) {
        (Compaction::Scheduled(cronjob), Some(spec)) => {
            let status = match sync_runs(
                ctx,
                &owner.namespace,
                &owner.name,
                uid,
                reference,
                cronjob,
                old,
            )
            .await
            {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the compaction runs");
                    old.cloned().unwrap_or_default()
                }
            };
            let cond = compaction_condition(&name, spec, &status);
            (Some(status), Some(cond))
        }
        (Compaction::Rejected(message), _) => {
            (old.cloned(), Some(rejected_condition(&name, message)))
        }
        _ => {
            ctx.metrics.compaction.forget(&owner.namespace, &owner.name);
            ctx.set_compaction_counted(uid, None);
            (None, None)
        }
    }
}

fn time_at(unix: i64) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

/// The drain password: read from its Secret, generated when absent.
async fn ensure_password(ctx: &Context, owner: &Owner) -> Result<String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = resources::password_secret_name(&owner.name);
    for _ in 0..3 {
        match api.get_opt(&name).await? {
            Some(secret) => {
                if let Some(p) = resources::secret_value(&secret, resources::PASSWORD_KEY)
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                {
                    return Ok(p);
                }
                // Emptied by hand: regenerate (and so rotate the drains).
                let password = resources::generate_password();
                let secret = resources::password_secret(owner, password.clone());
                api.patch(&name, &apply_params(), &Patch::Apply(&secret))
                    .await?;
                return Ok(password);
            }
            None => {
                let password = resources::generate_password();
                let secret = resources::password_secret(owner, password.clone());
                // Create, not apply: two reconciles racing must not both win
                // with different passwords.
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => return Ok(password),
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(Error::PasswordSecretContended {
        namespace: owner.namespace.clone(),
        name,
    })
}

/// The Ingress of `spec.endpoint.ingress`, or none: one this LogDrain made
/// goes when the field does.
async fn sync_ingress(ctx: &Context, owner: &Owner, ld: &LogDrain) -> Result<()> {
    if let Some(ingress) = resources::ingress(owner, ld) {
        apply_owned(ctx, &owner.namespace, &ingress).await?;
        return Ok(());
    }
    delete_owned::<Ingress>(ctx, owner, &resources::ingester_name(&owner.name)).await
}

/// Routes: every listed app, plus apps whose drain is still registered
/// (being removed), with the drain password and the known drain tokens.
///
/// An app's token is pinned only while its recorded drain is the one wanted:
/// same target URL, and, for HTTPS drains, registered with the current
/// password (the routes Secret last written says which). While an HTTPS
/// drain is being replaced the new drain's token is not known yet, and
/// pinning the old one would make the ingester answer the new drain 403,
/// which Logplex drops for good; so the route accepts any token with the
/// password until the new token is known. Syslog drains are told apart by
/// token alone: their tokens are what the ingester routes by.
///
/// `alerts` are the rules that can run, Secrets resolved (alerts/).
fn routes_for(
    apps: &BTreeSet<String>,
    drains: &BTreeMap<String, DrainStatus>,
    password: &str,
    target: Option<&DrainTarget>,
    previous: &RoutesFile,
    alerts: &[AlertRule],
) -> RoutesFile {
    let mut routes = RoutesFile {
        alerts: alerts.to_vec(),
        ..RoutesFile::default()
    };
    for app in apps.iter().chain(drains.keys()) {
        let same_password = previous
            .apps
            .get(app)
            .is_none_or(|r| r.password == password);
        let wanted = target.filter(|t| same_password || !t.carries_password());
        let drain_tokens = drains
            .get(app)
            .filter(|d| !apps.contains(app) || wanted.is_some_and(|t| d.url == t.public_url(app)))
            // Telemetry drains have no token: OTLP is told apart by password.
            .filter(|d| !d.token.is_empty())
            .map(|d| vec![d.token.clone()])
            .unwrap_or_default();
        routes.apps.insert(
            app.clone(),
            AppRoute {
                password: password.to_string(),
                drain_tokens,
            },
        );
    }
    routes
}

/// The routes file currently in the routes Secret (empty when none).
async fn current_routes(ctx: &Context, owner: &Owner) -> Result<RoutesFile> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let secret = api
        .get_opt(&resources::routes_secret_name(&owner.name))
        .await?;
    Ok(secret
        .and_then(|s| resources::secret_value(&s, resources::ROUTES_KEY))
        .and_then(|text| RoutesFile::from_yaml(&text).ok())
        .unwrap_or_default())
}

async fn apply_routes(ctx: &Context, owner: &Owner, routes: &RoutesFile) -> Result<()> {
    let yaml = resources::routes_yaml(routes).map_err(Error::Routes)?;
    apply_owned(
        ctx,
        &owner.namespace,
        &resources::routes_secret(owner, yaml),
    )
    .await?;
    Ok(())
}

async fn patch_status(ctx: &Context, owner: &Owner, status: &LogDrainStatus) -> Result<()> {
    let api: Api<LogDrain> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let patch = json!({
        "apiVersion": "drainpipe.dev/v1alpha1",
        "kind": "LogDrain",
        "status": status,
    });
    api.patch_status(&owner.name, &apply_params(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{https, status};

    #[test]
    fn routes_cover_listed_apps_and_apps_being_removed() {
        let apps: BTreeSet<String> = ["a-app", "b-app"].iter().map(|s| s.to_string()).collect();
        let drains = BTreeMap::from([
            ("a-app".to_string(), status("a-app", "d.1")),
            ("gone-app".to_string(), status("gone-app", "d.2")),
        ]);
        let routes = routes_for(
            &apps,
            &drains,
            "pw",
            Some(&https("https://logs.example.com")),
            &RoutesFile::default(),
            &[],
        );
        let names: Vec<&str> = routes.apps.keys().map(String::as_str).collect();
        assert_eq!(names, ["a-app", "b-app", "gone-app"]);
        assert_eq!(routes.apps["a-app"].drain_tokens, ["d.1"]);
        // No token known yet: the ingester accepts any token with the password.
        assert!(routes.apps["b-app"].drain_tokens.is_empty());
        assert!(routes.apps.values().all(|r| r.password == "pw"));
    }

    #[test]
    fn routes_unpin_the_token_of_a_drain_being_replaced() {
        let apps: BTreeSet<String> = ["a-app", "b-app"].iter().map(|s| s.to_string()).collect();
        let drains = BTreeMap::from([
            ("a-app".to_string(), status("a-app", "d.1")),
            ("b-app".to_string(), status("b-app", "d.2")),
        ]);
        let target = https("https://logs.example.com");
        let endpoint = Some(&target);
        let settled = routes_for(&apps, &drains, "pw", endpoint, &RoutesFile::default(), &[]);
        assert_eq!(settled.apps["a-app"].drain_tokens, ["d.1"]);

        // The password was rotated: the recorded drains carry the old one.
        let rotated = routes_for(&apps, &drains, "new-pw", endpoint, &settled, &[]);
        assert!(rotated.apps.values().all(|r| r.drain_tokens.is_empty()));
        assert!(rotated.apps.values().all(|r| r.password == "new-pw"));

        // The endpoint moved: the recorded drains go elsewhere.
        let moved = routes_for(
            &apps,
            &drains,
            "pw",
            Some(&https("https://new.example.com")),
            &settled,
            &[],
        );
        assert!(moved.apps.values().all(|r| r.drain_tokens.is_empty()));

        // Once the new drains are recorded, their tokens are pinned again.
        let renewed = BTreeMap::from([
            ("a-app".to_string(), status("a-app", "d.3")),
            ("b-app".to_string(), status("b-app", "d.4")),
        ]);
        let after = routes_for(&apps, &renewed, "new-pw", endpoint, &rotated, &[]);
        assert_eq!(after.apps["b-app"].drain_tokens, ["d.4"]);
    }

    #[test]
    fn syslog_routes_pin_tokens_whatever_the_password() {
        let apps: BTreeSet<String> = ["a-app", "b-app"].iter().map(|s| s.to_string()).collect();
        let syslog = |app: &str, token: &str| DrainStatus {
            url: "syslog+tls://logs.example.com:6514".to_string(),
            ..status(app, token)
        };
        let drains = BTreeMap::from([
            ("a-app".to_string(), syslog("a-app", "d.1")),
            // Still the HTTPS drain: being replaced, its token not pinned.
            ("b-app".to_string(), status("b-app", "d.2")),
        ]);
        let target = DrainTarget::SyslogTls {
            address: "logs.example.com:6514".to_string(),
        };
        let settled = routes_for(
            &apps,
            &drains,
            "pw",
            Some(&target),
            &RoutesFile::default(),
            &[],
        );
        assert_eq!(settled.apps["a-app"].drain_tokens, ["d.1"]);
        assert!(settled.apps["b-app"].drain_tokens.is_empty());
        // A password rotation does not touch syslog drains: tokens stay.
        let rotated = routes_for(&apps, &drains, "new-pw", Some(&target), &settled, &[]);
        assert_eq!(rotated.apps["a-app"].drain_tokens, ["d.1"]);
    }
}
