//! The controller's settings and shared state: the clients it calls, the
//! metrics, the event recorder and the memory of what it verified.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;

use super::heroku::backoff::AppFailure;
use super::memory::KnownDrain;
use super::memory::{AppIdentity, ScalerMemory, Verified};
use super::{MANAGER, fingerprint, truncate};
use crate::crd::{CompactionStatus, LogDrain};
use crate::glue::Catalog;
use crate::heroku::{
    ApiToken, AppInfo, Drain, DrainUrl, EnsuredDrain, HerokuClient, HerokuError, TelemetryDrain,
    WantedExporter,
};
use crate::lifecycle::Buckets;
use crate::metrics::{HerokuCallLabels, Metrics};
use crate::resources::IngesterDefaults;

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
    /// `ArchiveFresh` turns False for an app without an object this long.
    pub archive_stale_after: Duration,
    /// How often a LogDrain scaled by the operator is reconciled, so its
    /// pods' load is read (`spec.ingester.autoscaling.mode: operator`).
    pub autoscale_interval: Duration,
    /// Share (0 to 1) of Heroku's hourly request refill the periodic drift
    /// checks may spend (`--heroku-budget-share`); the rest is left to the
    /// account's other clients (controller/heroku/pacing.rs).
    pub heroku_budget_share: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(600),
            namespaces: Vec::new(),
            ingester: IngesterDefaults::new(default_ingester_image()),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            app_concurrency: 4,
            concurrency: 16,
            instance: None,
            archive_stale_after: Duration::from_secs(2 * 3600),
            autoscale_interval: Duration::from_secs(15),
            heroku_budget_share: 0.5,
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
    pub(crate) fn for_region(&self, region: &str) -> Catalog {
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

/// Shared state of the controller.
pub struct Context {
    pub(crate) client: Client,
    pub(crate) heroku: HerokuClient,
    pub(crate) catalogs: Catalogs,
    /// S3 clients for the archives' lifecycle rules.
    pub(crate) buckets: Buckets,
    pub metrics: Metrics,
    pub(crate) settings: Settings,
    pub(super) recorder: Recorder,
    /// Reads the ingester pods' `/metrics`.
    pub(super) pod_http: reqwest::Client,
    /// (LogDrain uid, app) → the app's drain as this process last saw it.
    pub(super) drains_known: Mutex<HashMap<(String, String), KnownDrain>>,
    /// LogDrain uid → fingerprint of the status this process last wrote.
    pub(super) status_written: Mutex<HashMap<String, u64>>,
    /// `owner uid/kind/namespace/name` of each owned object this process applied →
    /// the fingerprint of what it applied and the resourceVersion the
    /// apiserver answered (owned.rs).
    pub(super) applied: Mutex<HashMap<String, (u64, String)>>,
    /// LogDrain uid → catalog state last verified.
    pub(super) catalog_verified: Mutex<HashMap<String, Verified>>,
    /// LogDrain uid → lifecycle rule last verified.
    pub(super) retention_verified: Mutex<HashMap<String, Verified>>,
    /// LogDrain uid → suspension (no drain left) last verified.
    pub(super) suspension_verified: Mutex<HashMap<String, Verified>>,
    /// (LogDrain uid, app) → the app's id and generation from App Info;
    /// `None` when it must be asked again.
    pub(super) app_identities: Mutex<HashMap<(String, String), Option<AppIdentity>>>,
    /// LogDrain uid → the autoscaler's reads, recommendations and claim.
    pub(super) scalers: Mutex<HashMap<String, ScalerMemory>>,
    /// LogDrain uid → `status.compaction` as this process last computed
    /// it, its runs counted; the object at hand may predate it (memory.rs).
    pub(super) compaction_counted: Mutex<HashMap<String, CompactionStatus>>,
    /// LogDrain uid → consecutive failures, for the retry backoff.
    pub(super) failures: Mutex<HashMap<String, u32>>,
    /// (LogDrain uid, app) → the app's last failed Heroku call, waited out
    /// before the next.
    pub(super) app_failures: Mutex<HashMap<(String, String), AppFailure>>,
    /// Every LogDrain the controllers watch, for the Glue union.
    pub(super) stores: RwLock<Vec<Store<LogDrain>>>,
    /// `HerokuClient::requests_sent` when last copied into the metrics.
    pub(super) heroku_requests_seen: AtomicU64,
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
        // The AWS configuration the catalogs use serves S3 too; tests with
        // a fixed catalog hand theirs in with `with_buckets`.
        let buckets = match &catalogs {
            Catalogs::PerRegion { config, .. } => Buckets::new(config.as_ref().clone()),
            Catalogs::Fixed(_) => Buckets::none(),
        };
        Context {
            client,
            heroku,
            catalogs,
            buckets,
            metrics,
            settings,
            recorder,
            pod_http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            drains_known: Mutex::default(),
            status_written: Mutex::default(),
            applied: Mutex::default(),
            catalog_verified: Mutex::default(),
            suspension_verified: Mutex::default(),
            retention_verified: Mutex::default(),
            app_identities: Mutex::default(),
            scalers: Mutex::default(),
            compaction_counted: Mutex::default(),
            failures: Mutex::default(),
            app_failures: Mutex::default(),
            stores: RwLock::default(),
            heroku_requests_seen: AtomicU64::new(0),
        }
    }

    /// The S3 clients lifecycle rules are written with.
    pub fn with_buckets(mut self, buckets: Buckets) -> Context {
        self.buckets = buckets;
        self
    }

    /// The Heroku calls, counted by operation and outcome.
    pub(super) async fn list_drains(
        &self,
        token: &ApiToken,
        app: &str,
    ) -> Result<Vec<Drain>, HerokuError> {
        let r = self.heroku.list_drains(token, app).await;
        self.heroku_called("list", &r);
        r
    }

    pub(super) async fn create_drain(
        &self,
        token: &ApiToken,
        app: &str,
        url: &DrainUrl,
    ) -> Result<EnsuredDrain, HerokuError> {
        let r = self.heroku.create_drain(token, app, url).await;
        self.heroku_called("create", &r);
        r
    }

    pub(super) async fn delete_drain(
        &self,
        token: &ApiToken,
        app: &str,
        id: &str,
    ) -> Result<bool, HerokuError> {
        let r = self.heroku.delete_drain(token, app, id).await;
        self.heroku_called("delete", &r);
        r
    }

    pub(super) async fn app_info(
        &self,
        token: &ApiToken,
        app: &str,
    ) -> Result<AppInfo, HerokuError> {
        let r = self.heroku.app_info(token, app).await;
        self.heroku_called("app_info", &r);
        r
    }

    pub(super) async fn list_telemetry_drains(
        &self,
        token: &ApiToken,
        app: &str,
    ) -> Result<Vec<TelemetryDrain>, HerokuError> {
        let r = self.heroku.list_telemetry_drains(token, app).await;
        self.heroku_called("telemetry_list", &r);
        r
    }

    pub(super) async fn create_telemetry_drain(
        &self,
        token: &ApiToken,
        app: &str,
        owner_id: &str,
        wanted: &WantedExporter,
    ) -> Result<TelemetryDrain, HerokuError> {
        let r = self
            .heroku
            .create_telemetry_drain(token, app, owner_id, wanted)
            .await;
        self.heroku_called("telemetry_create", &r);
        r
    }

    pub(super) async fn update_telemetry_drain(
        &self,
        token: &ApiToken,
        app: &str,
        id: &str,
        wanted: &WantedExporter,
    ) -> Result<Option<TelemetryDrain>, HerokuError> {
        let r = self
            .heroku
            .update_telemetry_drain(token, app, id, wanted)
            .await;
        self.heroku_called("telemetry_update", &r);
        r
    }

    pub(super) async fn delete_telemetry_drain(
        &self,
        token: &ApiToken,
        app: &str,
        id: &str,
    ) -> Result<bool, HerokuError> {
        let r = self.heroku.delete_telemetry_drain(token, app, id).await;
        self.heroku_called("telemetry_delete", &r);
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
    pub(super) fn all_logdrains(&self) -> Vec<Arc<LogDrain>> {
        self.stores
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|s| s.state())
            .collect()
    }

    pub(super) async fn publish(
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
