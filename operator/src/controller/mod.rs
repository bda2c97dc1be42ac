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

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use serde_json::json;

use drainpipe_contract::routes::{AppRoute, RoutesFile};

use crate::crd::{
    DeletionPolicy, DrainStatus, DrainTarget, FINALIZER, GlueCatalog, LogDrain, LogDrainStatus,
};
use crate::error::{Error, Result};
use crate::glue::{Catalog, GlueError, TableRef, TableSpec};
use crate::heroku::{ApiToken, Drain, DrainUrl, EnsuredDrain, HerokuClient, HerokuError};
use crate::metrics::{HerokuCallLabels, Metrics};
use crate::resources::{self, IngesterDefaults, Owner};

/// Field manager of every server-side apply, and the event reporter.
pub const MANAGER: &str = "drainpipe-operator";

/// User name in the drain URLs' credentials (the ingester ignores it).
pub const DRAIN_USER: &str = "drainpipe";

/// Condition types.
pub const READY: &str = "Ready";
pub const DRAINS_REGISTERED: &str = "DrainsRegistered";
pub const CATALOG_SYNCED: &str = "CatalogSynced";
pub const INGESTER_AVAILABLE: &str = "IngesterAvailable";

/// Label selecting the objects the operator owns (narrows its watches).
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=drainpipe-operator";

/// Operator settings the controller needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Drift-check period; each LogDrain is requeued after about this long.
    pub resync: Duration,
    /// Namespaces to watch; empty for all.
    pub namespaces: Vec<String>,
    pub ingester: IngesterDefaults,
    /// First retry after a transient failure; doubles per consecutive failure.
    pub retry_base: Duration,
    /// Longest wait between retries of a failing LogDrain.
    pub retry_max: Duration,
    /// Apps handled concurrently within one LogDrain.
    pub app_concurrency: usize,
    /// LogDrains reconciled concurrently (0: unbounded).
    pub concurrency: u16,
    /// Pod name for events' reporting instance.
    pub instance: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(600),
            namespaces: Vec::new(),
            ingester: IngesterDefaults {
                image: default_ingester_image(),
            },
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            app_concurrency: 4,
            concurrency: 16,
            instance: None,
        }
    }
}

/// `ghcr.io/drainpipe/drainpipe-ingester:<operator version>`.
pub fn default_ingester_image() -> String {
    format!(
        "ghcr.io/drainpipe/drainpipe-ingester:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Glue clients by region; LogDrains may name different regions.
#[derive(Clone, Debug)]
pub enum Catalogs {
    /// One catalog for every region (tests, S3-compatible stacks).
    Fixed(Catalog),
    /// One client per region, built from a shared AWS configuration.
    PerRegion {
        config: Box<aws_config::SdkConfig>,
        cache: Arc<Mutex<HashMap<String, Catalog>>>,
    },
}

impl Catalogs {
    pub fn per_region(config: aws_config::SdkConfig) -> Catalogs {
        Catalogs::PerRegion {
            config: Box::new(config),
            cache: Arc::default(),
        }
    }

    /// The catalog for `region`; one shared instance per region so its
    /// per-table locks serialise this process's updates.
    pub fn for_region(&self, region: &str) -> Catalog {
        match self {
            Catalogs::Fixed(c) => c.clone(),
            Catalogs::PerRegion { config, cache } => {
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                cache
                    .entry(region.to_string())
                    .or_insert_with(|| {
                        let conf = aws_sdk_glue::config::Builder::from(config.as_ref())
                            .region(aws_sdk_glue::config::Region::new(region.to_string()))
                            .build();
                        Catalog::new(aws_sdk_glue::Client::from_conf(conf))
                    })
                    .clone()
            }
        }
    }
}

/// What was last verified outside the cluster, so a no-change reconcile can
/// skip the call.
#[derive(Clone, Copy, Debug)]
struct Verified {
    fingerprint: u64,
    at: Instant,
}

/// A drain this process made, found or removed, and when it was last
/// verified.
#[derive(Clone, Debug)]
struct KnownDrain {
    drain: DrainStatus,
    /// `None` after a failed check: the drain is still ours, but must be
    /// verified again.
    verified: Option<Verified>,
    /// Removed from Heroku by this process: a status that still lists it
    /// predates the removal.
    removed: bool,
}

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub heroku: HerokuClient,
    pub catalogs: Catalogs,
    pub metrics: Metrics,
    pub settings: Settings,
    recorder: Recorder,
    /// (LogDrain uid, app) → the app's drain as this process last saw it.
    drains_known: Mutex<HashMap<(String, String), KnownDrain>>,
    /// LogDrain uid → fingerprint of the status this process last wrote.
    status_written: Mutex<HashMap<String, u64>>,
    /// LogDrain uid → catalog state last verified.
    catalog_verified: Mutex<HashMap<String, Verified>>,
    /// LogDrain uid → consecutive failures, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Every LogDrain the controllers watch, for the Glue union.
    stores: RwLock<Vec<Store<LogDrain>>>,
    /// `HerokuClient::requests_sent` when last copied into the metrics.
    heroku_requests_seen: AtomicU64,
}

impl Context {
    pub fn new(
        client: Client,
        heroku: HerokuClient,
        catalogs: Catalogs,
        metrics: Metrics,
        settings: Settings,
    ) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_string(),
                instance: settings.instance.clone(),
            },
        );
        Context {
            client,
            heroku,
            catalogs,
            metrics,
            settings,
            recorder,
            drains_known: Mutex::default(),
            status_written: Mutex::default(),
            catalog_verified: Mutex::default(),
            failures: Mutex::default(),
            stores: RwLock::default(),
            heroku_requests_seen: AtomicU64::new(0),
        }
    }

    fn fresh(&self, v: Option<Verified>, fingerprint: u64) -> bool {
        v.is_some_and(|v| v.fingerprint == fingerprint && v.at.elapsed() < self.settings.resync / 2)
    }

    /// The drains this process knows for LogDrain `uid`: those in place,
    /// and those it removed.
    fn known_drains(&self, uid: &str) -> (Vec<DrainStatus>, Vec<DrainStatus>) {
        let (mut known, mut removed) = (Vec::new(), Vec::new());
        for ((u, _), k) in lock(&self.drains_known).iter() {
            if u == uid {
                if k.removed {
                    removed.push(k.drain.clone());
                } else {
                    known.push(k.drain.clone());
                }
            }
        }
        (known, removed)
    }

    /// Whether `app`'s drain was verified recently for the desired URL
    /// `fingerprint`.
    fn drain_fresh(&self, uid: &str, app: &str, fingerprint: u64) -> bool {
        let known = lock(&self.drains_known);
        let verified = known
            .get(&(uid.to_string(), app.to_string()))
            .and_then(|k| k.verified);
        self.fresh(verified, fingerprint)
    }

    fn set_drain_verified(&self, uid: &str, app: &str, fingerprint: u64, drain: DrainStatus) {
        lock(&self.drains_known).insert(
            (uid.to_string(), app.to_string()),
            KnownDrain {
                drain,
                verified: Some(Verified {
                    fingerprint,
                    at: Instant::now(),
                }),
                removed: false,
            },
        );
    }

    /// The next reconcile checks `app` with Heroku again.
    fn unverify_drain(&self, uid: &str, app: &str) {
        if let Some(k) = lock(&self.drains_known).get_mut(&(uid.to_string(), app.to_string())) {
            k.verified = None;
        }
    }

    fn drain_removed(&self, uid: &str, drain: &DrainStatus) {
        lock(&self.drains_known).insert(
            (uid.to_string(), drain.app.clone()),
            KnownDrain {
                drain: drain.clone(),
                verified: None,
                removed: true,
            },
        );
    }

    fn forget(&self, uid: &str) {
        lock(&self.drains_known).retain(|(u, _), _| u != uid);
        lock(&self.status_written).remove(uid);
        lock(&self.catalog_verified).remove(uid);
        lock(&self.failures).remove(uid);
    }

    /// The Heroku calls, counted by operation and outcome.
    async fn list_drains(&self, token: &ApiToken, app: &str) -> Result<Vec<Drain>, HerokuError> {
        let r = self.heroku.list_drains(token, app).await;
        self.heroku_called("list", &r);
        r
    }

    async fn create_drain(
        &self,
        token: &ApiToken,
        app: &str,
        url: &DrainUrl,
    ) -> Result<EnsuredDrain, HerokuError> {
        let r = self.heroku.create_drain(token, app, url).await;
        self.heroku_called("create", &r);
        r
    }

    async fn delete_drain(
        &self,
        token: &ApiToken,
        app: &str,
        id: &str,
    ) -> Result<bool, HerokuError> {
        let r = self.heroku.delete_drain(token, app, id).await;
        self.heroku_called("delete", &r);
        r
    }

    fn heroku_called<T>(&self, operation: &str, r: &Result<T, HerokuError>) {
        let status = match r {
            Ok(_) => "ok",
            Err(e) => e.metric_label(),
        };
        self.metrics
            .heroku_calls
            .get_or_create(&HerokuCallLabels {
                operation: operation.to_string(),
                status: status.to_string(),
            })
            .inc();
        let sent = self.heroku.requests_sent();
        let before = self.heroku_requests_seen.swap(sent, Ordering::Relaxed);
        self.metrics
            .heroku_requests
            .inc_by(sent.saturating_sub(before));
        let budget = self.heroku.rate_limit();
        let remaining = budget.server_remaining.unwrap_or(budget.local_tokens);
        self.metrics.heroku_remaining.set(i64::from(remaining));
    }

    /// Every watched LogDrain (all controllers' caches).
    fn all_logdrains(&self) -> Vec<Arc<LogDrain>> {
        self.stores
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|s| s.state())
            .collect()
    }

    async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        // The recorder folds events with equal (reason, action) into one
        // series and keeps the first note, so three drains created in a row
        // would read as one drain "x3". The action carries a digest of the
        // note: distinct changes stay distinct events, a repeat of the very
        // same change still counts up a series.
        let note = truncate(note, 1000);
        let action = format!("{reason}-{:08x}", fingerprint(&note) & 0xffff_ffff);
        let event = KubeEvent {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action,
            secondary: None,
        };
        // An event that cannot be written must not fail the change it reports.
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, reason, "cannot record event");
        }
    }
}

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

/// `d` ± 10%, so LogDrains created together do not resync together.
pub fn jittered(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..1.1);
    d.mul_f64(factor)
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
    let controller = Controller::new(scoped::<LogDrain>(client, ns), watcher::Config::default())
        .owns(scoped::<Deployment>(client, ns), owned.clone())
        .owns(scoped::<Service>(client, ns), owned.clone())
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
    // the LogDrains that name it.
    let store = controller.store();
    controller.watches(
        scoped::<PartialObjectMeta<Secret>>(client, ns),
        watcher::Config::default(),
        move |secret| logdrains_referencing(&store, &secret.metadata),
    )
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
                && ld.spec.heroku.api_token_secret_ref.name == name
        })
        .map(|ld| ObjectRef::from_obj(ld.as_ref()))
        .collect()
}

// ---------------------------------------------------------------------------
// Reconcile

/// Entry point for one LogDrain, with the finalizer guarding deletion.
pub async fn reconcile(ld: Arc<LogDrain>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let ns = ld.namespace().ok_or(Error::MissingObjectKey)?;
    let api: Api<LogDrain> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, ld, |event| async {
        match event {
            Finalizer::Apply(ld) => apply(ld, &ctx).await,
            Finalizer::Cleanup(ld) => cleanup(ld, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// Retry policy: what the service asked for, else exponential per LogDrain
/// from `retry_base`, capped by `retry_max`; failures that need a person
/// start at the cap (their fix triggers a reconcile anyway).
pub fn error_policy(ld: Arc<LogDrain>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(&err.metric_label());
    let uid = ld.uid().unwrap_or_default();
    let failures = {
        let mut f = lock(&ctx.failures);
        let n = f.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let s = &ctx.settings;
    let wait = if let Some(d) = err.retry_after() {
        d.min(s.retry_max)
    } else if err.is_transient() {
        s.retry_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(s.retry_max)
    } else {
        s.retry_max
    };
    tracing::warn!(
        logdrain = %ObjectRef::from_obj(ld.as_ref()),
        error = %err,
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(jittered(wait))
}

async fn apply(ld: Arc<LogDrain>, ctx: &Context) -> Result<Action> {
    let owner = Owner::of(&ld).ok_or(Error::MissingObjectKey)?;
    let uid = ld.uid().ok_or(Error::MissingObjectKey)?;
    let reference = ld.object_ref(&());
    let old_status = ld.status.clone().unwrap_or_default();

    // 1. The ingester, with routes for every app before any drain exists,
    // so Heroku's first delivery finds its app (a 404 would be dropped).
    let password = ensure_password(ctx, &owner).await?;
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
    let routes = routes_for(&spec_apps, &drains, &password, target.as_ref(), &previous);
    apply_routes(ctx, &owner, &routes).await?;
    let deployment = apply_owned(
        ctx,
        &owner.namespace,
        &resources::deployment(&owner, &ld, &ctx.settings.ingester),
    )
    .await?;
    apply_owned::<Service>(ctx, &owner.namespace, &resources::service(&owner, &ld)).await?;

    // 2. Heroku.
    let heroku = sync_drains(ctx, &ld, &uid, &reference, &password, &mut drains).await;
    let new_routes = routes_for(&spec_apps, &drains, &password, target.as_ref(), &routes);
    if new_routes != routes {
        apply_routes(ctx, &owner, &new_routes).await?;
    }

    // 3. Glue.
    let catalog = sync_catalog(ctx, &ld, &uid, &reference, &old_status).await;

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
    let ingester = ingester_condition(&deployment, ld.spec.ingester.replicas);
    conditions.push(condition(old, INGESTER_AVAILABLE, &ingester, generation));
    let ready = ready_condition(&ld, &[&heroku.condition, &catalog.condition, &ingester]);
    conditions.insert(0, condition(old, READY, &ready, generation));
    let dep_status = deployment.status.as_ref();
    let status = LogDrainStatus {
        observed_generation: generation,
        conditions,
        drains: drains.into_values().collect(),
        app_count: i32::try_from(spec_apps.len()).unwrap_or(i32::MAX),
        replicas: dep_status.and_then(|s| s.replicas).unwrap_or(0),
        ready_replicas: dep_status.and_then(|s| s.ready_replicas).unwrap_or(0),
        selector: Some(resources::selector_string(&owner.name)),
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
    if let Some(err) = heroku.error.or(catalog.error) {
        return Err(err);
    }
    lock(&ctx.failures).remove(&uid);
    Ok(Action::requeue(jittered(ctx.settings.resync)))
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
    Err(Error::Kube(kube::Error::Service(
        "the drain password Secret keeps changing".into(),
    )))
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

async fn apply_owned<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K>
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
fn routes_for(
    apps: &BTreeSet<String>,
    drains: &BTreeMap<String, DrainStatus>,
    password: &str,
    target: Option<&DrainTarget>,
    previous: &RoutesFile,
) -> RoutesFile {
    let mut routes = RoutesFile::default();
    for app in apps.iter().chain(drains.keys()) {
        let same_password = previous
            .apps
            .get(app)
            .is_none_or(|r| r.password == password);
        let wanted = target.filter(|t| same_password || !t.carries_password());
        let drain_tokens = drains
            .get(app)
            .filter(|d| !apps.contains(app) || wanted.is_some_and(|t| d.url == t.public_url(app)))
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
    let yaml = resources::routes_yaml(routes).map_err(|e| Error::Routes(e.to_string()))?;
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

// ---------------------------------------------------------------------------
// Conditions

/// A condition's content before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    fn ok(reason: &str, message: impl Into<String>) -> Cond {
        Cond {
            status: true,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    fn failed(reason: &str, message: impl Into<String>) -> Cond {
        Cond {
            status: false,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// A status condition; the transition time moves only when the status does.
fn condition(old: &[Condition], type_: &str, c: &Cond, generation: Option<i64>) -> Condition {
    let status = if c.status { "True" } else { "False" };
    let last_transition_time = old
        .iter()
        .find(|o| o.type_ == type_ && o.status == status)
        .map(|o| o.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: c.reason.clone(),
        message: truncate(c.message.clone(), 32_000),
        observed_generation: generation,
        last_transition_time,
    }
}

fn ingester_condition(deployment: &Deployment, replicas: i32) -> Cond {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    if replicas == 0 {
        return Cond::failed(
            "ScaledToZero",
            "spec.ingester.replicas is 0: nothing receives the drains, and Heroku drops what it cannot deliver",
        );
    }
    let status = deployment.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    if available >= replicas {
        return Cond::ok(
            "Available",
            format!("{available} of {replicas} ingester pods available"),
        );
    }
    let detail = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.status != "True")
        .filter_map(|c| c.message)
        .collect::<Vec<_>>()
        .join("; ");
    let hint = format!("see `kubectl describe deployment {name}` and its pods' events");
    let detail = if detail.is_empty() {
        hint
    } else {
        format!("{detail}; {hint}")
    };
    if available > 0 {
        Cond::ok(
            "PartiallyAvailable",
            format!("{available} of {replicas} ingester pods available: {detail}"),
        )
    } else {
        Cond::failed(
            "DeploymentUnavailable",
            format!("0 of {replicas} ingester pods available: {detail}"),
        )
    }
}

/// Ready means logs flow end to end: drains registered, the catalog (if
/// any) in step and an ingester pod available to receive them.
fn ready_condition(ld: &LogDrain, parts: &[&Cond]) -> Cond {
    if let Some(failed) = parts.iter().find(|c| !c.status) {
        return Cond::failed(&failed.reason, failed.message.clone());
    }
    let s3 = &ld.spec.archive.s3;
    Cond::ok(
        "Ready",
        format!(
            "{} apps drain into s3://{}/{}",
            ld.spec.apps.len(),
            s3.bucket,
            s3.prefix
        ),
    )
}

// ---------------------------------------------------------------------------
// Heroku

struct HerokuOutcome {
    condition: Cond,
    error: Option<Error>,
}

/// The Heroku API token from the Secret the LogDrain names.
async fn heroku_token(ctx: &Context, ld: &LogDrain) -> Result<ApiToken> {
    let ns = ld.namespace().ok_or(Error::MissingObjectKey)?;
    let sel = &ld.spec.heroku.api_token_secret_ref;
    let missing = |problem: String| Error::HerokuTokenMissing {
        namespace: ns.clone(),
        name: sel.name.clone(),
        problem,
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = api
        .get_opt(&sel.name)
        .await?
        .ok_or_else(|| missing("does not exist".to_string()))?;
    let value = resources::secret_value(&secret, &sel.key)
        .ok_or_else(|| missing(format!("has no key {:?}", sel.key)))?;
    let token = ApiToken::new(value);
    if token.is_empty() {
        return Err(missing(format!("holds an empty value under {:?}", sel.key)));
    }
    Ok(token)
}

fn heroku_reason(e: &HerokuError) -> &'static str {
    match e {
        HerokuError::Unauthorized => "HerokuUnauthorized",
        HerokuError::Forbidden { .. } => "HerokuForbidden",
        HerokuError::AppNotFound { .. } => "AppNotFound",
        HerokuError::RateLimited { .. } => "HerokuRateLimited",
        HerokuError::LogChannelPending { .. } => "LogChannelPending",
        HerokuError::Api { status, .. } if *status >= 500 => "HerokuUnavailable",
        HerokuError::Transport(_) => "HerokuUnavailable",
        HerokuError::InvalidDrainUrl(_) => "InvalidEndpoint",
        _ => "HerokuError",
    }
}

/// One app's outcome: its drain, or why there is none.
type AppResult = (
    String,
    DrainUrl,
    Result<(DrainStatus, Vec<Change>), HerokuError>,
);

/// What happened to one app's drain.
enum Change {
    Created(Drain),
    Replaced(Drain),
    Removed { id: String, token: String },
}

async fn sync_drains(
    ctx: &Context,
    ld: &LogDrain,
    uid: &str,
    reference: &ObjectReference,
    password: &str,
    drains: &mut BTreeMap<String, DrainStatus>,
) -> HerokuOutcome {
    let apps = ld.app_set();
    let target = ld.spec.endpoint.target();
    let mut desired: BTreeMap<String, DrainUrl> = BTreeMap::new();
    for app in &apps {
        match drain_url(target.as_ref(), app, password) {
            Ok(url) => {
                desired.insert(app.clone(), url);
            }
            Err(e) => {
                return HerokuOutcome {
                    condition: Cond::failed(heroku_reason(&e), e.to_string()),
                    error: Some(Error::Heroku(e)),
                };
            }
        }
    }
    let stale: Vec<DrainStatus> = drains
        .values()
        .filter(|d| !apps.contains(&d.app))
        .cloned()
        .collect();
    let todo: Vec<(String, DrainUrl)> = desired
        .iter()
        .filter(|(app, url)| {
            !(drains.contains_key(*app)
                && ctx.drain_fresh(uid, app, fingerprint(&url.expose_secret())))
        })
        .map(|(a, u)| (a.clone(), u.clone()))
        .collect();
    let ok = || drains_ok(apps.len(), target.as_ref());
    if todo.is_empty() && stale.is_empty() {
        return HerokuOutcome {
            condition: ok(),
            error: None,
        };
    }

    let token = match heroku_token(ctx, ld).await {
        Ok(t) => t,
        Err(e) => {
            let reason = match e {
                Error::HerokuTokenMissing { .. } => "HerokuTokenMissing",
                _ => "KubernetesError",
            };
            return HerokuOutcome {
                condition: Cond::failed(reason, e.to_string()),
                error: Some(e),
            };
        }
    };

    let mut errors: Vec<(String, HerokuError)> = Vec::new();

    // Removed apps: delete the drain this LogDrain made.
    for d in stale {
        match ctx.delete_drain(&token, &d.app, &d.id).await {
            Ok(existed) => {
                drains.remove(&d.app);
                ctx.drain_removed(uid, &d);
                if existed {
                    ctx.metrics.drain_changed("removed");
                    ctx.publish(
                        reference,
                        EventType::Normal,
                        "DrainRemoved",
                        format!(
                            "removed Heroku drain {} ({}) of app {}: the app is no longer listed",
                            d.id, d.token, d.app
                        ),
                    )
                    .await;
                }
            }
            Err(e) => errors.push((d.app.clone(), e)),
        }
    }

    // Listed apps: one list each, a create when the drain is missing.
    let results: Vec<AppResult> = futures::stream::iter(todo.into_iter().map(|(app, url)| {
        let known = drains.get(&app).cloned();
        let token = token.clone();
        async move {
            let r = sync_app(ctx, &token, &app, &url, known.as_ref()).await;
            (app, url, r)
        }
    }))
    .buffer_unordered(ctx.settings.app_concurrency.max(1))
    .collect()
    .await;
    for (app, url, result) in results {
        match result {
            Ok((status, changes)) => {
                let fp = fingerprint(&url.expose_secret());
                ctx.set_drain_verified(uid, &app, fp, status.clone());
                drains.insert(app.clone(), status);
                for change in changes {
                    announce(ctx, reference, &app, &url, change).await;
                }
            }
            Err(e) => {
                ctx.unverify_drain(uid, &app);
                errors.push((app, e));
            }
        }
    }

    if errors.is_empty() {
        return HerokuOutcome {
            condition: ok(),
            error: None,
        };
    }
    // The most actionable error leads: credentials, then missing apps, then
    // the passing troubles.
    errors.sort_by_key(|(app, e)| (severity(e), app.clone()));
    let message = errors
        .iter()
        .map(|(app, e)| format!("{app}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!(
        "{} of {} apps have no drain yet: {message}",
        errors.len(),
        apps.len().max(errors.len())
    );
    let first = errors.swap_remove(0).1;
    HerokuOutcome {
        condition: Cond::failed(heroku_reason(&first), message.clone()),
        error: Some(Error::Drains { message, first }),
    }
}

fn severity(e: &HerokuError) -> u8 {
    match e {
        HerokuError::Unauthorized => 0,
        HerokuError::Forbidden { .. } => 1,
        HerokuError::AppNotFound { .. } => 2,
        HerokuError::InvalidDrainUrl(_) => 3,
        _ if !e.is_transient() => 4,
        _ => 5,
    }
}

fn drains_ok(n: usize, target: Option<&DrainTarget>) -> Cond {
    let to = target.map(DrainTarget::describe).unwrap_or_default();
    Cond::ok(
        "DrainsRegistered",
        format!("{n} Heroku drains send to {to}"),
    )
}

/// The drain URL `app` should have: HTTPS with the drain password, or the
/// syslog+tls listener (the same for every app).
fn drain_url(
    target: Option<&DrainTarget>,
    app: &str,
    password: &str,
) -> Result<DrainUrl, HerokuError> {
    match target {
        Some(DrainTarget::Https { url }) => DrainUrl::for_app(url, app, DRAIN_USER, password),
        Some(DrainTarget::SyslogTls { address }) => DrainUrl::syslog_tls(address),
        None => Err(HerokuError::InvalidDrainUrl(
            "set exactly one of spec.endpoint.url and spec.endpoint.syslogTls".to_string(),
        )),
    }
}

async fn announce(
    ctx: &Context,
    reference: &ObjectReference,
    app: &str,
    url: &DrainUrl,
    change: Change,
) {
    let base = url.without_credentials();
    let (reason, note) = match change {
        Change::Created(d) => {
            ctx.metrics.drain_changed("created");
            (
                "DrainCreated",
                format!(
                    "created Heroku drain {} ({}) for app {app} to {base}",
                    d.id, d.token
                ),
            )
        }
        Change::Replaced(d) => {
            ctx.metrics.drain_changed("removed");
            (
                "DrainReplaced",
                format!(
                    "removed Heroku drain {} ({}) of app {app}: replaced by the drain to {base}",
                    d.id, d.token
                ),
            )
        }
        Change::Removed { id, token } => {
            ctx.metrics.drain_changed("removed");
            (
                "DrainRemoved",
                format!("removed Heroku drain {id} ({token}) of app {app}"),
            )
        }
    };
    ctx.publish(reference, EventType::Normal, reason, note)
        .await;
}

/// Makes `app` have exactly one drain of ours, to `url`. Ours are the drain
/// recorded in the status and any drain to `url` itself; a drain another
/// LogDrain or a person added to the same endpoint is left alone.
async fn sync_app(
    ctx: &Context,
    token: &ApiToken,
    app: &str,
    url: &DrainUrl,
    known: Option<&DrainStatus>,
) -> Result<(DrainStatus, Vec<Change>), HerokuError> {
    let listed = ctx.list_drains(token, app).await?;
    let mut changes = Vec::new();
    let existing = listed
        .iter()
        .filter(|d| d.addon.is_none())
        .find(|d| d.targets(url))
        .cloned();
    let kept = match existing {
        Some(d) => d,
        None => {
            let ensured = ctx.create_drain(token, app, url).await?;
            if ensured.created {
                changes.push(Change::Created(ensured.drain.clone()));
            }
            ensured.drain
        }
    };
    // The drain recorded before, when it is not the one kept: the endpoint or
    // the password changed. Removed after the new one exists, so Heroku
    // always has somewhere to send.
    if let Some(old) = known.filter(|k| k.id != kept.id)
        && let Some(old) = listed.iter().find(|d| d.id == old.id && d.addon.is_none())
        && ctx.delete_drain(token, app, &old.id).await?
    {
        changes.push(Change::Replaced(old.clone()));
    }
    for dup in listed
        .iter()
        .filter(|d| d.addon.is_none() && d.id != kept.id && d.targets(url))
    {
        // Two drains to the very same URL (Heroku normally refuses that).
        if ctx.delete_drain(token, app, &dup.id).await? {
            changes.push(Change::Removed {
                id: dup.id.clone(),
                token: dup.token.clone(),
            });
        }
    }
    Ok((
        DrainStatus {
            app: app.to_string(),
            id: kept.id.clone(),
            token: kept.token.clone(),
            url: url.without_credentials(),
        },
        changes,
    ))
}

// ---------------------------------------------------------------------------
// Glue

struct CatalogOutcome {
    condition: Cond,
    error: Option<Error>,
}

fn same_table(a: &GlueCatalog, b: &GlueCatalog) -> bool {
    a.database == b.database && a.table == b.table && a.region == b.region
}

/// Apps of every watched LogDrain that targets the same table as `glue`.
fn table_union(ctx: &Context, ld: &LogDrain, glue: &GlueCatalog) -> BTreeSet<String> {
    let mut apps = ld.app_set();
    for other in ctx.all_logdrains() {
        if let Some(c) = &other.spec.catalog
            && same_table(&c.glue, glue)
        {
            apps.extend(other.spec.apps.iter().cloned());
        }
    }
    apps
}

fn glue_reason(e: &GlueError) -> &'static str {
    match e {
        GlueError::DatabaseNotFound { .. } | GlueError::TableNotFound { .. } => "GlueTableNotFound",
        GlueError::AccessDenied { .. } => "GlueAccessDenied",
        GlueError::TooManyApps { .. } => "GlueTooManyApps",
        GlueError::InvalidTable { .. } => "GlueInvalidTable",
        _ => "GlueError",
    }
}

async fn sync_catalog(
    ctx: &Context,
    ld: &LogDrain,
    uid: &str,
    reference: &ObjectReference,
    old_status: &LogDrainStatus,
) -> CatalogOutcome {
    let Some(catalog) = &ld.spec.catalog else {
        return CatalogOutcome {
            condition: Cond::ok(
                "NotConfigured",
                "spec.catalog is not set: no catalog to keep in step",
            ),
            error: None,
        };
    };
    let glue = &catalog.glue;
    let s3 = &ld.spec.archive.s3;
    let union = table_union(ctx, ld, glue);
    let fp = fingerprint(&(
        glue.database.as_str(),
        glue.table.as_str(),
        glue.region.as_str(),
        glue.manage_table,
        s3.bucket.as_str(),
        s3.prefix.as_str(),
        &union,
    ));
    let previous = lock(&ctx.catalog_verified).get(uid).copied();
    let old_cond = old_status
        .conditions
        .iter()
        .find(|c| c.type_ == CATALOG_SYNCED);
    if ctx.fresh(previous, fp)
        && let Some(old) = old_cond.filter(|c| c.status == "True")
    {
        return CatalogOutcome {
            condition: Cond::ok(&old.reason, old.message.clone()),
            error: None,
        };
    }
    let table = TableRef::new(glue.database.clone(), glue.table.clone());
    let client = ctx.catalogs.for_region(&glue.region);
    let result = async {
        let mut created = false;
        if glue.manage_table {
            let spec = TableSpec::new(s3.bucket.clone(), s3.prefix.clone()).with_apps(union.iter());
            created = client.ensure_table(&table, &spec).await?;
        }
        let update = client.ensure_apps(&table, &union).await?;
        Ok::<_, GlueError>((created, update))
    }
    .await;
    match result {
        Ok((created, update)) => {
            lock(&ctx.catalog_verified).insert(
                uid.to_string(),
                Verified {
                    fingerprint: fp,
                    at: Instant::now(),
                },
            );
            if created {
                ctx.metrics.glue_updates.inc();
                ctx.publish(
                    reference,
                    EventType::Normal,
                    "TableCreated",
                    format!(
                        "created Glue table {table} over s3://{}/{} with partition projection",
                        s3.bucket, s3.prefix
                    ),
                )
                .await;
            }
            if !update.added.is_empty() {
                ctx.metrics.glue_updates.inc();
                ctx.publish(
                    reference,
                    EventType::Normal,
                    "AppsAdded",
                    format!(
                        "added {} to projection.app.values of Glue table {table}",
                        update.added.join(", ")
                    ),
                )
                .await;
            }
            if update.near_limit {
                let message = format!(
                    "projection.app.values of {table} lists {} apps in {} bytes, near Glue's 512,000-byte limit: split apps across tables",
                    update.app_count, update.values_len
                );
                ctx.publish(
                    reference,
                    EventType::Warning,
                    "ProjectionNearLimit",
                    message.clone(),
                )
                .await;
                return CatalogOutcome {
                    condition: Cond::ok("ProjectionNearLimit", message),
                    error: None,
                };
            }
            CatalogOutcome {
                condition: Cond::ok(
                    "Synced",
                    format!(
                        "Glue table {table} projects {} apps, {} of them from this LogDrain",
                        update.app_count,
                        ld.app_set().len()
                    ),
                ),
                error: None,
            }
        }
        Err(e) => {
            lock(&ctx.catalog_verified).remove(uid);
            CatalogOutcome {
                condition: Cond::failed(glue_reason(&e), e.to_string()),
                error: Some(Error::Glue(e)),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Deletion

async fn cleanup(ld: Arc<LogDrain>, ctx: &Context) -> Result<Action> {
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
    errors.sort_by_key(|(app, e)| (severity(e), app.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LogDrainSpec;

    fn ld(apps: &[&str]) -> LogDrain {
        let spec: LogDrainSpec = serde_json::from_value(json!({
            "apps": apps,
            "heroku": {"apiTokenSecretRef": {"name": "heroku", "key": "token"}},
            "endpoint": {"url": "https://logs.example.com"},
            "archive": {"s3": {"bucket": "logs-bucket", "region": "eu-west-1"}},
        }))
        .expect("spec");
        LogDrain::new("prod", spec)
    }

    fn https(url: &str) -> DrainTarget {
        DrainTarget::Https {
            url: url.to_string(),
        }
    }

    fn status(app: &str, token: &str) -> DrainStatus {
        DrainStatus {
            app: app.into(),
            id: format!("id-{app}"),
            token: token.into(),
            url: format!("https://logs.example.com/logplex/{app}"),
        }
    }

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
        let settled = routes_for(&apps, &drains, "pw", endpoint, &RoutesFile::default());
        assert_eq!(settled.apps["a-app"].drain_tokens, ["d.1"]);

        // The password was rotated: the recorded drains carry the old one.
        let rotated = routes_for(&apps, &drains, "new-pw", endpoint, &settled);
        assert!(rotated.apps.values().all(|r| r.drain_tokens.is_empty()));
        assert!(rotated.apps.values().all(|r| r.password == "new-pw"));

        // The endpoint moved: the recorded drains go elsewhere.
        let moved = routes_for(
            &apps,
            &drains,
            "pw",
            Some(&https("https://new.example.com")),
            &settled,
        );
        assert!(moved.apps.values().all(|r| r.drain_tokens.is_empty()));

        // Once the new drains are recorded, their tokens are pinned again.
        let renewed = BTreeMap::from([
            ("a-app".to_string(), status("a-app", "d.3")),
            ("b-app".to_string(), status("b-app", "d.4")),
        ]);
        let after = routes_for(&apps, &renewed, "new-pw", endpoint, &rotated);
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
        let settled = routes_for(&apps, &drains, "pw", Some(&target), &RoutesFile::default());
        assert_eq!(settled.apps["a-app"].drain_tokens, ["d.1"]);
        assert!(settled.apps["b-app"].drain_tokens.is_empty());
        // A password rotation does not touch syslog drains: tokens stay.
        let rotated = routes_for(&apps, &drains, "new-pw", Some(&target), &settled);
        assert_eq!(rotated.apps["a-app"].drain_tokens, ["d.1"]);
    }

    #[test]
    fn drain_urls_follow_the_endpoint() {
        let h = drain_url(Some(&https("https://logs.example.com")), "a-app", "pw").expect("https");
        assert_eq!(
            h.expose_secret(),
            "https://drainpipe:pw@logs.example.com/logplex/a-app"
        );
        let target = DrainTarget::SyslogTls {
            address: "logs.example.com:6514".to_string(),
        };
        let s = drain_url(Some(&target), "a-app", "pw").expect("syslog");
        assert_eq!(s.expose_secret(), "syslog+tls://logs.example.com:6514");
        assert!(drain_url(None, "a-app", "pw").is_err());
    }

    #[test]
    fn condition_keeps_transition_time_while_status_holds() {
        let first = condition(&[], READY, &Cond::failed("X", "x"), Some(1));
        let old = vec![Condition {
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            ..first.clone()
        }];
        let same = condition(&old, READY, &Cond::failed("Y", "y"), Some(2));
        assert_eq!(same.last_transition_time, Time(Timestamp::UNIX_EPOCH));
        assert_eq!(same.reason, "Y");
        let flipped = condition(&old, READY, &Cond::ok("Ready", "ok"), Some(2));
        assert_ne!(flipped.last_transition_time, Time(Timestamp::UNIX_EPOCH));
        assert_eq!(flipped.status, "True");
    }

    #[test]
    fn ready_takes_the_first_failing_reason() {
        let ld = ld(&["a-app"]);
        let ok = Cond::ok("Fine", "");
        let bad = Cond::failed("AppNotFound", "a-app: not found");
        let ing = Cond::failed("DeploymentUnavailable", "0 of 2");
        let r = ready_condition(&ld, &[&ok, &bad, &ing]);
        assert!(!r.status);
        assert_eq!(r.reason, "AppNotFound");
        let r = ready_condition(&ld, &[&ok, &ok]);
        assert!(r.status);
        assert_eq!(r.message, "1 apps drain into s3://logs-bucket/logs/");
    }

    #[test]
    fn ingester_condition_reads_the_deployment() {
        let mut d = Deployment::default();
        d.metadata.name = Some("prod-ingester".into());
        let c = ingester_condition(&d, 2);
        assert!(!c.status);
        assert_eq!(c.reason, "DeploymentUnavailable");
        assert!(
            c.message
                .contains("kubectl describe deployment prod-ingester")
        );
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            available_replicas: Some(2),
            ..Default::default()
        });
        assert!(ingester_condition(&d, 2).status);
        assert_eq!(ingester_condition(&d, 0).reason, "ScaledToZero");
    }

    #[test]
    fn heroku_errors_map_to_actionable_reasons() {
        assert_eq!(
            heroku_reason(&HerokuError::Unauthorized),
            "HerokuUnauthorized"
        );
        assert_eq!(
            heroku_reason(&HerokuError::AppNotFound { app: "x".into() }),
            "AppNotFound"
        );
        assert_eq!(
            heroku_reason(&HerokuError::Api {
                status: 503,
                id: "x".into(),
                message: "down".into()
            }),
            "HerokuUnavailable"
        );
        assert!(
            severity(&HerokuError::Unauthorized) < severity(&HerokuError::Transport("x".into()))
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(600));
            assert!(d >= Duration::from_secs(540) && d <= Duration::from_secs(660));
        }
    }
}
