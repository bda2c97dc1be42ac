//! The LogDrain controller: turns each LogDrain into its owned objects, its
//! Heroku drains and its Glue apps, and reports what it found in the status.
//!
//! A reconcile that finds nothing to change makes no Heroku or Glue call:
//! what was last verified is remembered in memory (per LogDrain uid) and only
//! checked again for drift after half a resync period, so the periodic
//! resync costs one drain list per app and the reconciles triggered by owned
//! objects changing cost nothing outside the cluster.
//!
//! The drains themselves are remembered too, not only read from the status:
//! the object a reconcile gets can predate the status the previous reconcile
//! wrote (the watch lags the write), and from such an object alone the
//! reconcile would list every app again, or lose track of a drain it made.

// The hub every concern talks through: the reconcile context, what the
// operator remembers between reconciles, and the owned-object writes.
mod context;
mod memory;
mod owned;
// One folder per concern (docs/architecture.md, "Code map"); `status` is
// below the others, which never use each other.
mod alerts;
mod catalog;
mod heroku;
mod status;
mod workload;
// The orchestrators: a live LogDrain, and one being deleted.
mod apply;
mod cleanup;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::Instrument;

pub use context::{Catalogs, Context, Settings, default_ingester_image};

use crate::backoff::{self, jittered};
use crate::crd::{FINALIZER, LogDrain};
use crate::error::{Error, Result};

/// Field manager of every server-side apply, and the event reporter.
pub(crate) const MANAGER: &str = "drainpipe-operator";

/// User name in the drain URLs' credentials (the ingester ignores it).
pub(crate) const DRAIN_USER: &str = "drainpipe";

/// Condition types.
pub(crate) const READY: &str = "Ready";
pub(crate) const DRAINS_REGISTERED: &str = "DrainsRegistered";
pub(crate) const CATALOG_SYNCED: &str = "CatalogSynced";
pub(crate) const INGESTER_AVAILABLE: &str = "IngesterAvailable";
pub(crate) const RETENTION_APPLIED: &str = "RetentionApplied";
pub(crate) const ARCHIVE_FRESH: &str = "ArchiveFresh";
pub(crate) const ARCHIVE_WRITABLE: &str = "ArchiveWritable";
pub(crate) const ALERTS_READY: &str = "AlertsReady";
pub(crate) const COMPACTION_SUCCEEDED: &str = "CompactionSucceeded";

/// Label selecting the objects the operator owns (narrows its watches).
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=drainpipe-operator";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn fingerprint<T: Hash>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

// ---------------------------------------------------------------------------
// Running

/// Runs the controller(s) until `shutdown` completes: one over all
/// namespaces, or one per namespace in `settings.namespaces`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let scopes: Vec<Option<String>> = if ctx.settings.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.settings.namespaces.iter().cloned().map(Some).collect()
    };
    let mut runs = Vec::new();
    for ns in scopes {
        let controller = build_controller(&ctx, ns.as_deref());
        lock_stores(&ctx).push(controller.store());
        let ctx = ctx.clone();
        let stop = shutdown.clone();
        runs.push(async move {
            controller
                .graceful_shutdown_on(stop)
                .run(reconcile, error_policy, ctx)
                .for_each(|res| async move {
                    match res {
                        Ok((obj, _)) => tracing::debug!(logdrain = %obj, "reconciled"),
                        Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
                    }
                })
                .await;
        });
    }
    futures::future::join_all(runs).await;
}

fn lock_stores(ctx: &Context) -> std::sync::RwLockWriteGuard<'_, Vec<Store<LogDrain>>> {
    ctx.stores.write().unwrap_or_else(|p| p.into_inner())
}

fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn build_controller(ctx: &Context, ns: Option<&str>) -> Controller<LogDrain> {
    let client = &ctx.client;
    let owned = watcher::Config::default().labels(MANAGED_SELECTOR);
    // A LogDrain is reconciled when what it asks for changes (spec, labels,
    // annotations), when its finalizer is added and when it is being
    // deleted, not when its own status is written: that write was this
    // operator's, and waking on it cost a reconcile per status change.
    let (reader, writer) = reflector::store();
    let deleting = |ld: &LogDrain| Some(u64::from(ld.metadata.deletion_timestamp.is_some()));
    let logdrains = watcher(scoped::<LogDrain>(client, ns), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::finalizers)
                .combine(predicates::labels)
                .combine(predicates::annotations)
                .combine(deleting),
            Default::default(),
        );
    let controller = Controller::for_stream(logdrains, reader)
        .owns(scoped::<Deployment>(client, ns), owned.clone())
        .owns(
            scoped::<k8s_openapi::api::apps::v1::StatefulSet>(client, ns),
            owned.clone(),
        )
        .owns(
            scoped::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(client, ns),
            owned.clone(),
        )
        .owns(
            scoped::<k8s_openapi::api::batch::v1::CronJob>(client, ns),
            owned.clone(),
        )
        // Buffer flush Jobs (owned by the LogDrain) and compaction runs
        // (owned by its CronJob) alike carry the LogDrain's label: a Job
        // finishing wakes its LogDrain, which reads the run's report.
        .watches(
            scoped::<k8s_openapi::api::batch::v1::Job>(client, ns),
            owned.clone(),
            |job| labelled_logdrain(&job.metadata),
        )
        .owns(scoped::<Service>(client, ns), owned.clone())
        .owns(
            scoped::<k8s_openapi::api::networking::v1::Ingress>(client, ns),
            owned.clone(),
        )
        .owns(scoped::<Secret>(client, ns), owned);
    let controller = if ctx.settings.concurrency > 0 {
        controller.with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency),
        )
    } else {
        controller
    };
    // The Heroku token Secret belongs to the user and carries no label of
    // ours: watch Secrets' metadata only (never their data) and map each to
    // the LogDrains that name it. So is the drain password Secret of a
    // LogDrain with deletionPolicy Retain, which it does not own (retain.rs),
    // and the Secrets of its alert rules (alerts/).
    let store = controller.store();
    controller.watches(
        scoped::<PartialObjectMeta<Secret>>(client, ns),
        watcher::Config::default(),
        move |secret| logdrains_referencing(&store, &secret.metadata),
    )
}

/// The LogDrain an object of ours names by its label.
fn labelled_logdrain(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ObjectRef<LogDrain>> {
    let name = meta
        .labels
        .as_ref()?
        .get(crate::resources::LOGDRAIN_LABEL)?;
    Some(ObjectRef::new(name).within(meta.namespace.as_deref()?))
}

fn logdrains_referencing(
    store: &Store<LogDrain>,
    secret: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<ObjectRef<LogDrain>> {
    let (Some(name), Some(ns)) = (secret.name.as_deref(), secret.namespace.as_deref()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|ld| {
            ld.metadata.namespace.as_deref() == Some(ns)
                && (ld.spec.heroku.api_token_secret_ref.name == name
                    || heroku::retain::is_password_secret_of(ld, name)
                    || ld.alert_secret_names().contains(name))
        })
        .map(|ld| ObjectRef::from_obj(ld.as_ref()))
        .collect()
}

// ---------------------------------------------------------------------------
// Reconcile

/// The span of everything done for one LogDrain, so each line logged says
/// which LogDrain it concerns.
fn logdrain_span(ld: &LogDrain) -> tracing::Span {
    tracing::info_span!(
        "reconcile",
        namespace = %ld.namespace().unwrap_or_default(),
        name = %ld.name_any(),
    )
}

/// Entry point for one LogDrain, with the finalizer guarding deletion.
pub async fn reconcile(ld: Arc<LogDrain>, ctx: Arc<Context>) -> Result<Action> {
    let span = logdrain_span(&ld);
    reconcile_in_span(ld, ctx).instrument(span).await
}

async fn reconcile_in_span(ld: Arc<LogDrain>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let ns = ld.namespace().ok_or(Error::MissingObjectKey)?;
    let api: Api<LogDrain> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, ld, |event| async {
        match event {
            Finalizer::Apply(ld) => apply::apply(ld, &ctx).await,
            Finalizer::Cleanup(ld) => cleanup::cleanup(ld, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    })
}

/// Retry policy: what the service asked for, else exponential per LogDrain
/// from `retry_base`, capped by `retry_max`; failures that need a person
/// start at the cap (their fix triggers a reconcile anyway).
pub(crate) fn error_policy(ld: Arc<LogDrain>, err: &Error, ctx: Arc<Context>) -> Action {
    let _span = logdrain_span(&ld).entered();
    ctx.metrics.reconcile_failed(&err.metric_label());
    let uid = ld.uid().unwrap_or_default();
    let failures = {
        let mut f = lock(&ctx.failures);
        let n = f.entry(uid.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let s = &ctx.settings;
    // Failed apps wait their own time (app_backoff): requeue when the first
    // of them may be called again (no jitter below it), but no later than
    // the resync, so the LogDrain's other apps are still checked for drift
    // on time while one app backs off.
    let app_wait = matches!(err, Error::Drains { .. } | Error::Heroku(_))
        .then(|| ctx.next_app_retry(&uid))
        .flatten()
        .map(|d| d.min(jittered(s.resync)));
    let wait = if let Some(d) = app_wait {
        d
    } else if let Some(d) = err.retry_after() {
        jittered(d.min(s.retry_max))
    } else if err.is_transient() {
        jittered(backoff::ceiling(
            s.retry_base,
            s.retry_max,
            failures.saturating_sub(1),
        ))
    } else {
        jittered(s.retry_max)
    };
    tracing::warn!(
        logdrain = %ObjectRef::from_obj(ld.as_ref()),
        error = %err,
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(wait)
}

#[cfg(test)]
mod fixtures {
    use serde_json::json;

    use crate::crd::{DrainStatus, DrainTarget, LogDrain, LogDrainSpec};
    use crate::heroku::{Drain, DrainUrl, TelemetryDrain};

    pub(super) fn ld(apps: &[&str]) -> LogDrain {
        let spec: LogDrainSpec = serde_json::from_value(json!({
            "apps": apps,
            "heroku": {"apiTokenSecretRef": {"name": "heroku", "key": "token"}},
            "endpoint": {"url": "https://logs.example.com"},
            "archive": {"s3": {"bucket": "logs-bucket", "region": "eu-west-1"}},
        }))
        .expect("spec");
        LogDrain::new("prod", spec)
    }

    pub(super) fn https(url: &str) -> DrainTarget {
        DrainTarget::Https {
            url: url.to_string(),
        }
    }

    /// `GET /apps/example/log-drains` as Heroku answers it (see
    /// operator/testdata/heroku/README.md for what each drain stands for).
    pub(super) fn heroku_drains() -> Vec<Drain> {
        serde_json::from_str(include_str!("../../testdata/heroku/log-drains.json"))
            .expect("the Heroku sample parses as the client parses answers")
    }

    /// `GET /apps/example/telemetry-drains` as Heroku answers it for a Fir
    /// app (operator/testdata/heroku/README.md).
    pub(super) fn heroku_telemetry_drains() -> Vec<TelemetryDrain> {
        serde_json::from_str(include_str!("../../testdata/heroku/telemetry-drains.json"))
            .expect("the Heroku sample parses as the client parses answers")
    }

    /// The URL the fixture's app `example` should drain to.
    pub(super) fn example_url() -> DrainUrl {
        DrainUrl::new("https://drainpipe:pw-current@logs.example.com/logplex/example")
    }

    pub(super) fn status(app: &str, token: &str) -> DrainStatus {
        DrainStatus {
            app: app.into(),
            generation: None,
            kind: crate::crd::DrainKind::Log,
            app_id: None,
            id: format!("id-{app}"),
            token: token.into(),
            url: format!("https://logs.example.com/logplex/{app}"),
        }
    }
}
