//! Running the operator in-process against the test environment: the real
//! kube-apiserver (with kube-controller-manager), moto's Glue and the fake
//! Heroku API, one namespace and one Glue database per test.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use drainpipe_contract::routes::RoutesFile;
use drainpipe_operator::controller::{self, Catalogs, Context, Settings};
use drainpipe_operator::crd::{DrainStatus, LogDrain};
use drainpipe_operator::glue::Catalog;
use drainpipe_operator::heroku::{HerokuClient, HerokuOptions};
use drainpipe_operator::lifecycle::Buckets;
use drainpipe_operator::metrics::Metrics;
use drainpipe_operator::resources::{IngesterDefaults, IngesterPodDefaults};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;

use crate::env::TestEnv;
use crate::heroku_fake::{FakeHeroku, FakeOptions};

/// Field manager of what the tests themselves write.
pub const TEST_MANAGER: &str = "drainpipe-tests";

/// The endpoint every test LogDrain uses; nothing listens there (Heroku is
/// fake), it only shapes the drain URLs.
pub const ENDPOINT: &str = "https://logs.example.com";

/// Installs (or updates) the LogDrain CRD and waits until it is served.
pub async fn apply_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = LogDrain::crd();
    let name = crd.name_any();
    api.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|e| panic!("applying the LogDrain CRD: {e}"));
    wait_for(
        "the LogDrain CRD to be established",
        Duration::from_secs(30),
        || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            }
        },
    )
    .await;
}

/// A fresh namespace `ld-{prefix}-{random}`.
pub async fn test_namespace(client: &Client, prefix: &str) -> String {
    let name = format!(
        "ld-{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace object");
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Polls `check` every 200 ms until it returns `Some`, panicking with `what`
/// after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The AWS configuration the operator gets in tests: the test
/// environment's static credentials and region. Endpoints come from each
/// LogDrain's `archive.s3.endpoint` (MinIO, or moto's S3).
pub fn aws_config(env: &TestEnv) -> aws_config::SdkConfig {
    use aws_sdk_s3::config::{Credentials, Region, SharedCredentialsProvider};
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new(env.region.clone()))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            &env.access_key,
            &env.secret_key,
            None,
            None,
            "drainpipe-testenv",
        )))
        .build()
}

/// Heroku client options with waits shrunk for tests.
pub fn fast_heroku_options() -> HerokuOptions {
    HerokuOptions {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
        log_channel_backoff: Duration::from_millis(20),
        request_timeout: Duration::from_secs(10),
        ..HerokuOptions::default()
    }
}

/// One test's world: a namespace, a Glue database name, a fake Heroku with
/// its token in a Secret, and the controller running in-process.
pub struct Harness {
    pub env: TestEnv,
    pub client: Client,
    pub ns: String,
    pub database: String,
    pub heroku: FakeHeroku,
    pub glue: aws_sdk_glue::Client,
    pub settings: Settings,
    pub heroku_options: HerokuOptions,
    /// The running controller's context (metrics, Heroku client).
    pub ctx: Option<Arc<Context>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// Sets the world up; the controller is not started yet.
    pub async fn new(prefix: &str, fake: FakeOptions) -> Harness {
        let env = TestEnv::require();
        let client = env.kube_client().await;
        apply_crd(&client).await;
        let ns = test_namespace(&client, prefix).await;
        let heroku = FakeHeroku::start(fake).await;
        let glue = env.glue_client();
        let settings = Settings {
            namespaces: vec![ns.clone()],
            ingester: IngesterDefaults::new("drainpipe-ingester:test".to_string()),
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(300),
            instance: Some(format!("test-{prefix}")),
            ..Settings::default()
        };
        let h = Harness {
            database: format!("ld_{}", ns.replace('-', "_")),
            env,
            client,
            ns,
            heroku,
            glue,
            settings,
            heroku_options: fast_heroku_options(),
            ctx: None,
            task: None,
        };
        h.put_token_secret("heroku", &h.heroku.token()).await;
        h
    }

    /// Creates or replaces the Secret `name` with `token` under key `token`.
    pub async fn put_token_secret(&self, name: &str, token: &str) {
        self.put_secret(name, json!({ "token": token })).await;
    }

    /// Creates or replaces the Secret `name` with `data` (as `stringData`,
    /// key to text); returns its resourceVersion.
    pub async fn put_secret(&self, name: &str, data: serde_json::Value) -> String {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": data,
        }))
        .expect("secret object");
        api.patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|e| panic!("writing Secret {name}: {e}"))
        .metadata
        .resource_version
        .unwrap_or_default()
    }

    /// Makes the ingester pods (and Jobs) this operator writes run on the
    /// real node: the ingester image imported under the chart's name (never
    /// pulled), the node's taint tolerated, and MinIO's keys from the
    /// Secret `s3-credentials` in their environment, as the chart's
    /// `ingester.extraEnv` gives them where there is no IRSA. Call before
    /// [`Harness::start`].
    pub async fn on_node(&mut self) {
        let version = crate::node::app_version();
        crate::node::import_images(&self.env, &[&version]);
        self.put_s3_credentials(&self.env.root_credentials()).await;
        // `session-token` only for temporary credentials (`Harness::put_s3_credentials`).
        let from_secret = |name: &str, key: &str| {
            json!({"name": name, "valueFrom": {"secretKeyRef": {
                "name": "s3-credentials", "key": key, "optional": key == "session-token",
            }}})
        };
        let pod = json!({
            "imagePullPolicy": "Never",
            "tolerations": [{"key": self.env.node().taint_key, "operator": "Exists", "effect": "NoSchedule"}],
            "env": [
                from_secret("AWS_ACCESS_KEY_ID", "access-key"),
                from_secret("AWS_SECRET_ACCESS_KEY", "secret-key"),
                from_secret("AWS_SESSION_TOKEN", "session-token"),
            ],
        });
        self.settings.ingester = IngesterDefaults {
            image: crate::node::chart_image("drainpipe-ingester", &version),
            pod: IngesterPodDefaults::parse(&pod.to_string()).expect("ingester pod defaults"),
        };
    }

    /// Adds `name=value` to the environment of the ingester pods this
    /// operator writes (the chart's `ingester.extraEnv`).
    pub fn pod_env(&mut self, name: &str, value: &str) {
        self.settings.ingester.pod.env.get_or_insert_default().push(
            k8s_openapi::api::core::v1::EnvVar {
                name: name.to_string(),
                value: Some(value.to_string()),
                ..Default::default()
            },
        );
    }

    /// Writes `credentials` into the Secret `s3-credentials` the ingester
    /// pods on the node read ([`Harness::on_node`]); pods started after this
    /// use them.
    pub async fn put_s3_credentials(&self, credentials: &aws_sdk_s3::config::Credentials) {
        let mut data = json!({
            "access-key": credentials.access_key_id(),
            "secret-key": credentials.secret_access_key(),
        });
        if let Some(token) = credentials.session_token() {
            data["session-token"] = json!(token);
        }
        // Written whole, so a key left out (no session token) goes.
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let _ = api.delete("s3-credentials", &DeleteParams::default()).await;
        self.put_secret("s3-credentials", data).await;
    }

    /// Starts the controller in a task with a fresh context, as a newly
    /// started operator process would have.
    pub fn start(&mut self) {
        self.start_as(self.client.clone());
    }

    /// Starts the controller talking to Kubernetes as `client`'s identity
    /// (e.g. the chart's ServiceAccount), to show its permissions suffice.
    pub fn start_as(&mut self, client: Client) {
        let heroku =
            HerokuClient::with_options(&self.heroku.base_url(), self.heroku_options.clone())
                .expect("Heroku client for the fake");
        let ctx = Arc::new(
            Context::new(
                client,
                heroku,
                Catalogs::Fixed(Catalog::new(self.glue.clone())),
                Metrics::new(),
                self.settings.clone(),
            )
            .with_buckets(Buckets::new(aws_config(&self.env))),
        );
        self.ctx = Some(ctx.clone());
        self.task = Some(tokio::spawn(controller::run(ctx, std::future::pending())));
    }

    /// Kills the controller where it stands (an operator crash).
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.ctx = None;
    }

    pub fn logdrains(&self) -> Api<LogDrain> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A LogDrain spec as JSON: `apps`, the test's token Secret, the shared
    /// endpoint, the test bucket, and a catalog on `table` unless `None`.
    pub fn spec(&self, apps: &[&str], table: Option<&str>) -> serde_json::Value {
        let mut spec = json!({
            "apps": apps,
            "heroku": {"apiTokenSecretRef": {"name": "heroku", "key": "token"}},
            "endpoint": {"url": ENDPOINT},
            "archive": {"s3": {
                "bucket": self.env.bucket,
                "prefix": format!("{}/", self.ns),
                "region": self.env.region,
                "endpoint": self.env.s3_endpoint,
            }},
            "ingester": {"replicas": 2},
            "deletionPolicy": "Delete",
        });
        if let Some(table) = table {
            spec["catalog"] = json!({"glue": {
                "database": self.database,
                "table": table,
                "region": self.env.region,
            }});
        }
        spec
    }

    /// Creates or updates a LogDrain by server-side apply.
    pub async fn apply(&self, name: &str, spec: serde_json::Value) -> LogDrain {
        let obj = json!({
            "apiVersion": "drainpipe.dev/v1alpha1",
            "kind": "LogDrain",
            "metadata": {"name": name},
            "spec": spec,
        });
        self.logdrains()
            .patch(
                name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap_or_else(|e| panic!("applying LogDrain {name}: {e}"))
    }

    pub async fn get(&self, name: &str) -> LogDrain {
        self.logdrains()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("reading LogDrain {name}: {e}"))
    }

    /// Waits until the LogDrain's status satisfies `check` for its current
    /// generation.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&LogDrain) -> bool,
    ) -> LogDrain {
        let api = self.logdrains();
        let check = &check;
        wait_for(&format!("LogDrain {name}: {what}"), timeout, || {
            let api = api.clone();
            async move {
                let ld = api.get(name).await.ok()?;
                let st = ld.status.as_ref()?;
                (st.observed_generation == ld.metadata.generation && check(&ld)).then_some(ld)
            }
        })
        .await
    }

    /// Waits until the drains are registered (and the catalog, if any, in step).
    pub async fn wait_drains_registered(&self, name: &str, apps: &[&str]) -> LogDrain {
        let want: BTreeSet<String> = apps.iter().map(|s| s.to_string()).collect();
        self.wait_status(
            name,
            &format!("drains registered for {want:?}"),
            Duration::from_secs(60),
            |ld| {
                let got: BTreeSet<String> =
                    status_drains(ld).iter().map(|d| d.app.clone()).collect();
                condition_is(ld, "DrainsRegistered", "True")
                    && condition_is(ld, "CatalogSynced", "True")
                    && got == want
            },
        )
        .await
    }

    /// The drain password the operator generated for LogDrain `name`.
    pub async fn drain_password(&self, name: &str) -> String {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let s = api
            .get(&format!("{name}-drain-password"))
            .await
            .unwrap_or_else(|e| panic!("reading the drain password Secret: {e}"));
        let bytes = s
            .data
            .and_then(|d| d.get("password").cloned())
            .expect("password key");
        String::from_utf8(bytes.0).expect("UTF-8 password")
    }

    /// `projection.app.values` of a table in this test's database.
    pub async fn projected_apps(&self, table: &str) -> Option<BTreeSet<String>> {
        let out = self
            .glue
            .get_table()
            .database_name(&self.database)
            .name(table)
            .send()
            .await
            .ok()?;
        let values = out
            .table()?
            .parameters()?
            .get("projection.app.values")?
            .clone();
        Some(
            values
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect(),
        )
    }

    /// The events recorded about LogDrain `name`.
    async fn events_of(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let events = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing events: {e}"));
        events
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("LogDrain") && r.name.as_deref() == Some(name)
                })
            })
            .collect()
    }

    /// Reasons of the events recorded about LogDrain `name`.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        self.events_of(name)
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    /// How many times the operator reported `reason` about LogDrain
    /// `name`: events, and the repeats the recorder folded into a series.
    pub async fn event_count(&self, name: &str, reason: &str) -> i32 {
        self.events_of(name)
            .await
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.series.as_ref().map_or(1, |s| s.count))
            .sum()
    }

    /// The routes file in LogDrain `name`'s routes Secret, as the ingester
    /// parses it (`None` while there is none).
    pub async fn routes(&self, name: &str) -> Option<RoutesFile> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let secret = api.get(&format!("{name}-routes")).await.ok()?;
        let bytes = secret.data?.get("routes.yaml")?.0.clone();
        RoutesFile::from_yaml(&String::from_utf8_lossy(&bytes)).ok()
    }

    /// Changes an annotation of LogDrain `name`: a watch event (and so a
    /// reconcile) that changes nothing the operator acts on.
    pub async fn poke(&self, name: &str, value: usize) {
        self.logdrains()
            .patch(
                name,
                &PatchParams::apply("poke").force(),
                &Patch::Apply(json!({
                    "apiVersion": "drainpipe.dev/v1alpha1", "kind": "LogDrain",
                    "metadata": {"name": name, "annotations": {"poke": value.to_string()}}
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("annotating LogDrain {name}: {e}"));
    }

    /// Deletes LogDrain `name` and waits until it is gone (finalizer
    /// released).
    pub async fn delete_and_wait(&self, name: &str) {
        let api = self.logdrains();
        api.delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting LogDrain {name}: {e}"));
        wait_for(
            &format!("LogDrain {name} to be gone"),
            Duration::from_secs(60),
            || {
                let api = api.clone();
                async move { api.get_opt(name).await.ok()?.is_none().then_some(()) }
            },
        )
        .await;
    }

    /// Deletes every LogDrain (the controller releases the finalizers), then
    /// stops the controller and deletes the namespace.
    pub async fn teardown(mut self) {
        let api = self.logdrains();
        if self.task.is_none() {
            self.start();
        }
        let _ = api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let api2 = api.clone();
        wait_for("LogDrains to be deleted", Duration::from_secs(60), || {
            let api = api2.clone();
            async move {
                let list = api.list(&ListParams::default()).await.ok()?;
                list.items.is_empty().then_some(())
            }
        })
        .await;
        self.kill().await;
        let ns: Api<Namespace> = Api::all(self.client.clone());
        let _ = ns.delete(&self.ns, &DeleteParams::default()).await;
        let _ = self
            .glue
            .delete_database()
            .name(&self.database)
            .send()
            .await;
    }
}

/// A pod status as a kubelet reports a Running, Ready pod (`patch_status`
/// body; the test cluster has no nodes).
pub fn ready_pod_status() -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    json!({"status": {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
    }})
}

/// The status drains of a LogDrain (empty without a status).
pub fn status_drains(ld: &LogDrain) -> Vec<DrainStatus> {
    ld.status
        .as_ref()
        .map(|s| s.drains.clone())
        .unwrap_or_default()
}

/// A condition by type.
pub fn condition<'a>(ld: &'a LogDrain, type_: &str) -> Option<&'a Condition> {
    ld.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn condition_is(ld: &LogDrain, type_: &str, status: &str) -> bool {
    condition(ld, type_).is_some_and(|c| c.status == status)
}

pub fn condition_reason(ld: &LogDrain, type_: &str) -> String {
    condition(ld, type_)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// Whether the ingester, reading `routes`, accepts what a drain sending to
/// `drain_url` with Logplex drain token `token` delivers for `app`: the
/// route's password is the URL's, and its pinned tokens (if any yet) include
/// the drain's (the check the ingester makes, `ingester/src/input/routes.rs`).
pub fn routes_accept(routes: &RoutesFile, app: &str, drain_url: &str, token: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(drain_url) else {
        return false;
    };
    let Some(route) = routes.apps.get(app) else {
        return false;
    };
    url.path() == format!("/logplex/{app}")
        && url.password() == Some(route.password.as_str())
        && (route.drain_tokens.is_empty() || route.drain_tokens.iter().any(|t| t == token))
}
