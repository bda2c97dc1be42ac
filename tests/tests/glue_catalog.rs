//! The operator's Glue catalog module against the test environment's moto
//! server (`scripts/testenv up`).
//!
//! moto 5.2.5 returns a VersionId from GetTable (1, 2, ... per update) but
//! does not check the VersionId sent with UpdateTable, so it never raises
//! ConcurrentModificationException and concurrent writers can lose updates.
//! The module's re-read after each write catches that; to exercise the real
//! Glue behaviour as well, some tests go through [`VersionCheckingProxy`], a
//! small proxy in front of moto that rejects an UpdateTable whose VersionId is
//! stale, as Glue does.
// A failed unwrap is how a test reports an unexpected error.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_glue::types::{Column, SerDeInfo, StorageDescriptor, Table, TableInput};
use drainpipe_contract::schema::{ArchiveFormat, FIELDS};
use drainpipe_operator::glue::{
    APP_VALUES, Catalog, ConflictRetry, GlueError, NEAR_LIMIT_BYTES, PARAMETER_VALUE_LIMIT,
    StorageUpdate, TableRef, TableSpec, YEAR_RANGE, YearPolicy, table_input_from,
};
use drainpipe_tests::env::TestEnv;

fn unique_db() -> String {
    format!("dp_test_{}", uuid::Uuid::new_v4().simple())
}

fn apps(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn catalog(env: &TestEnv) -> Catalog {
    Catalog::new(env.glue_client()).with_retry(ConflictRetry {
        max_attempts: 50,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
    })
}

async fn get_table(env: &TestEnv, t: &TableRef) -> Table {
    env.glue_client()
        .get_table()
        .database_name(&t.database)
        .name(&t.table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
}

#[tokio::test]
async fn creates_database_and_table_once() {
    let env = TestEnv::require();
    let c = catalog(&env);
    let t = TableRef::new(unique_db(), "heroku_logs");
    let spec = TableSpec::new(&env.bucket, "logs/").with_apps(["app-one", "app-two", "app-three"]);

    assert!(c.ensure_table(&t, &spec).await.unwrap(), "created");
    assert!(
        !c.ensure_table(&t, &spec).await.unwrap(),
        "second call finds it"
    );

    let table = get_table(&env, &t).await;
    assert_eq!(table.table_type(), Some("EXTERNAL_TABLE"));
    let sd = table.storage_descriptor().unwrap();
    let cols: Vec<_> = sd
        .columns()
        .iter()
        .map(|c| (c.name(), c.r#type().unwrap()))
        .collect();
    // Every record field is a column except `app`, which is the partition
    // key (Athena rejects a column and a partition key of one name).
    let want: Vec<_> = FIELDS
        .iter()
        .filter(|f| f.name != "app")
        .map(|f| (f.name, f.kind.hive()))
        .collect();
    assert_eq!(cols, want);
    assert_eq!(
        sd.location(),
        Some(format!("s3://{}/logs/", env.bucket).as_str())
    );
    assert_eq!(
        sd.serde_info().unwrap().serialization_library(),
        Some("org.openx.data.jsonserde.JsonSerDe")
    );
    assert_eq!(
        sd.input_format(),
        Some("org.apache.hadoop.mapred.TextInputFormat")
    );
    assert_eq!(
        sd.output_format(),
        Some("org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat")
    );
    let keys: Vec<_> = table.partition_keys().iter().map(Column::name).collect();
    assert_eq!(keys, ["app", "year", "month", "day"]);
    let p = table.parameters().unwrap();
    assert_eq!(p["projection.enabled"], "true");
    assert_eq!(p["projection.app.type"], "enum");
    assert_eq!(p[APP_VALUES], "app-one,app-three,app-two");
    assert_eq!(
        p["storage.location.template"],
        format!(
            "s3://{}/logs/${{app}}/${{year}}/${{month}}/${{day}}/",
            env.bucket
        )
    );
    assert_eq!(
        c.projected_apps(&t).await.unwrap(),
        apps(&["app-one", "app-two", "app-three"])
    );
}

/// The storage half of a table as Athena reads it.
fn storage_of(table: &Table) -> (String, String, String, String, String, String) {
    let sd = table.storage_descriptor().unwrap();
    let p = table.parameters().unwrap();
    (
        sd.serde_info()
            .unwrap()
            .serialization_library()
            .unwrap()
            .to_owned(),
        sd.input_format().unwrap().to_owned(),
        sd.output_format().unwrap().to_owned(),
        sd.location().unwrap().to_owned(),
        p["storage.location.template"].clone(),
        p["classification"].clone(),
    )
}

#[tokio::test]
async fn a_parquet_table_reads_the_parquet_root_and_a_json_table_switches_to_it() {
    let env = TestEnv::require();
    let c = catalog(&env);
    let db = unique_db();
    let parquet_spec = TableSpec::new(&env.bucket, "logs/")
        .with_apps(["app-one"])
        .with_format(ArchiveFormat::Parquet);

    // Created as Parquet: Hive's Parquet SerDe over {prefix}format=parquet/.
    let born = TableRef::new(db.clone(), "born_parquet");
    assert!(c.ensure_table(&born, &parquet_spec).await.unwrap());
    let parquet = storage_of(&get_table(&env, &born).await);
    let root = format!("s3://{}/logs/format=parquet/", env.bucket);
    assert_eq!(
        parquet,
        (
            "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe".to_owned(),
            "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat".to_owned(),
            "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat".to_owned(),
            root.clone(),
            format!("{root}${{app}}/${{year}}/${{month}}/${{day}}/"),
            "parquet".to_owned(),
        )
    );
    assert_eq!(
        c.ensure_storage(&born, &parquet_spec).await.unwrap(),
        None,
        "nothing to change"
    );

    // Created as JSON, apps added since, a parameter set by a person: the
    // switch changes the storage and keeps the rest.
    let switched = TableRef::new(db, "was_json");
    let json_spec = TableSpec::new(&env.bucket, "logs/").with_apps(["app-one"]);
    c.ensure_table(&switched, &json_spec).await.unwrap();
    c.ensure_apps(&switched, &apps(&["app-two"])).await.unwrap();
    let before = get_table(&env, &switched).await;
    let input = table_input_from(before.clone(), |p| {
        p.insert("team".into(), "logs".into());
    })
    .unwrap();
    env.glue_client()
        .update_table()
        .database_name(&switched.database)
        .table_input(input)
        .send()
        .await
        .unwrap();
    let change = c
        .ensure_storage(&switched, &parquet_spec)
        .await
        .unwrap()
        .expect("the table read JSON");
    assert_eq!(
        change,
        StorageUpdate {
            from: Some(ArchiveFormat::Json),
            to: ArchiveFormat::Parquet,
            location: root.clone(),
        }
    );
    let after = get_table(&env, &switched).await;
    assert_eq!(storage_of(&after), parquet);
    let p = after.parameters().unwrap();
    assert_eq!(
        p[APP_VALUES], "app-one,app-two",
        "projection.app.values kept"
    );
    assert_eq!(p["team"], "logs");
    assert!(!p.contains_key("compressionType"), "gzip is JSON's");
    assert_eq!(p[YEAR_RANGE], before.parameters().unwrap()[YEAR_RANGE]);
    let sd = after.storage_descriptor().unwrap();
    assert_eq!(sd.columns(), before.storage_descriptor().unwrap().columns());
    assert_eq!(after.partition_keys(), before.partition_keys());
    assert!(
        sd.serde_info()
            .unwrap()
            .parameters()
            .is_none_or(|p| !p.contains_key("ignore.malformed.json"))
    );
    assert_eq!(
        c.ensure_storage(&switched, &parquet_spec).await.unwrap(),
        None
    );

    // And back: JSON's SerDe, folder and gzip again.
    let back = c
        .ensure_storage(&switched, &json_spec)
        .await
        .unwrap()
        .expect("the table read Parquet");
    assert_eq!(back.from, Some(ArchiveFormat::Parquet));
    let json = get_table(&env, &switched).await;
    assert_eq!(
        storage_of(&json).0,
        "org.openx.data.jsonserde.JsonSerDe",
        "{json:?}"
    );
    assert_eq!(json.parameters().unwrap()["compressionType"], "gzip");
    assert_eq!(
        json.storage_descriptor().unwrap().location(),
        Some(format!("s3://{}/logs/", env.bucket).as_str())
    );
}

#[tokio::test]
async fn missing_table_is_reported_not_created() {
    let env = TestEnv::require();
    let c = catalog(&env);
    let db = unique_db();
    c.ensure_database(&db).await.unwrap();
    let t = TableRef::new(db, "absent");
    let err = c.ensure_apps(&t, &apps(&["a-app"])).await.unwrap_err();
    assert_eq!(err, GlueError::TableNotFound { table: t.clone() });
    assert!(err.to_string().contains("manageTable"), "{err}");
}

#[tokio::test]
async fn apps_from_two_callers_are_united_and_never_removed() {
    let env = TestEnv::require();
    let first = catalog(&env);
    let second = catalog(&env); // separate client and locks, like another operator
    let t = TableRef::new(unique_db(), "logs");
    first
        .ensure_table(
            &t,
            &TableSpec::new(&env.bucket, "logs/").with_apps(["team-a-web"]),
        )
        .await
        .unwrap();

    let up = first
        .ensure_apps(&t, &apps(&["team-a-web", "team-a-api"]))
        .await
        .unwrap();
    assert_eq!(up.added, ["team-a-api"]);
    let up = second
        .ensure_apps(&t, &apps(&["team-b-web"]))
        .await
        .unwrap();
    assert_eq!(up.added, ["team-b-web"]);
    assert_eq!(up.app_count, 3);
    assert!(!up.near_limit);

    // The first LogDrain drops an app: the value stays (its data stays queryable).
    let before = get_table(&env, &t).await;
    let up = first.ensure_apps(&t, &apps(&["team-a-web"])).await.unwrap();
    assert!(up.added.is_empty());
    assert_eq!(
        get_table(&env, &t).await.version_id(),
        before.version_id(),
        "no write when nothing is missing"
    );
    assert_eq!(
        first.projected_apps(&t).await.unwrap(),
        apps(&["team-a-web", "team-a-api", "team-b-web"])
    );
    // Existing values keep their order; new ones are appended.
    assert_eq!(
        get_table(&env, &t).await.parameters().unwrap()[APP_VALUES],
        "team-a-web,team-a-api,team-b-web"
    );
}

/// moto does not check VersionId, so two *processes* updating the table at
/// once can lose an app: B writes values computed from a read taken before
/// A's write. Each writer re-reads after writing, but A may have confirmed and
/// returned before B's stale write lands. Real Glue rejects B's write instead
/// (see the proxy tests below). On moto, the repair is the next reconcile,
/// which ensures the same apps again: that is what this test checks.
#[tokio::test]
async fn on_moto_a_lost_concurrent_update_is_repaired_by_the_next_reconcile() {
    let env = TestEnv::require();
    let t = TableRef::new(unique_db(), "logs");
    catalog(&env)
        .ensure_table(
            &t,
            &TableSpec::new(&env.bucket, "logs/").with_apps(["seed"]),
        )
        .await
        .unwrap();
    let wanted = |writer: usize| -> BTreeSet<String> {
        (0..10).map(|i| format!("w{writer}-app-{i}")).collect()
    };
    let mut tasks = Vec::new();
    for writer in 0..2 {
        let c = catalog(&env).with_private_locks();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for app in wanted(writer) {
                c.ensure_apps(&t, &BTreeSet::from([app])).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let after_race = catalog(&env).projected_apps(&t).await.unwrap();
    eprintln!(
        "moto kept {} of 21 values after the race (lost updates: {})",
        after_race.len(),
        21 - after_race.len()
    );
    // The resync: each writer ensures its whole set once more.
    for writer in 0..2 {
        catalog(&env)
            .with_private_locks()
            .ensure_apps(&t, &wanted(writer))
            .await
            .unwrap();
    }
    let got = catalog(&env).projected_apps(&t).await.unwrap();
    assert_eq!(got.len(), 21, "{got:?}");
    assert!(after_race.is_subset(&got), "nothing is ever removed");
    for writer in 0..2 {
        assert!(wanted(writer).is_subset(&got), "{got:?}");
    }
}

/// Catalogs of one process share per-table locks, however many are built.
#[tokio::test]
async fn concurrent_updates_from_catalogs_of_one_process_lose_nothing() {
    let env = TestEnv::require();
    let t = TableRef::new(unique_db(), "logs");
    catalog(&env)
        .ensure_table(
            &t,
            &TableSpec::new(&env.bucket, "logs/").with_apps(["seed"]),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for writer in 0..2 {
        let c = catalog(&env); // a separate client each, like per-LogDrain catalogs
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                c.ensure_apps(&t, &apps(&[&format!("w{writer}-app-{i}")]))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let got = catalog(&env).projected_apps(&t).await.unwrap();
    assert_eq!(got.len(), 21, "{got:?}");
}

#[tokio::test]
async fn concurrent_updates_in_one_process_are_serialised() {
    let env = TestEnv::require();
    let c = catalog(&env);
    let t = TableRef::new(unique_db(), "logs");
    c.ensure_table(
        &t,
        &TableSpec::new(&env.bucket, "logs/").with_apps(["seed"]),
    )
    .await
    .unwrap();
    let (left, right) = (apps(&["left-app"]), apps(&["right-app"]));
    let (a, b) = tokio::join!(c.ensure_apps(&t, &left), c.ensure_apps(&t, &right));
    assert_eq!(a.unwrap().added, ["left-app"]);
    assert_eq!(b.unwrap().added, ["right-app"]);
    assert_eq!(
        c.projected_apps(&t).await.unwrap(),
        apps(&["seed", "left-app", "right-app"])
    );
}

/// A table made by hand with fields the operator does not set itself: every
/// one of them must survive an UpdateTable.
#[tokio::test]
async fn update_preserves_every_other_table_field() {
    let env = TestEnv::require();
    let client = env.glue_client();
    let c = catalog(&env);
    let t = TableRef::new(unique_db(), "custom");
    c.ensure_database(&t.database).await.unwrap();

    let base = TableSpec::new(&env.bucket, "custom-prefix/").with_apps(["existing-app"]);
    let generated = base.table_input(&t.table).unwrap();
    let mut sd = generated.storage_descriptor().unwrap().clone();
    sd = StorageDescriptor::builder()
        .set_columns(Some(
            sd.columns()
                .iter()
                .cloned()
                .chain([Column::builder()
                    .name("extra_col")
                    .r#type("string")
                    .comment("added by a person")
                    .parameters("k", "v")
                    .build()
                    .unwrap()])
                .collect(),
        ))
        .set_location(sd.location().map(str::to_owned))
        .set_input_format(sd.input_format().map(str::to_owned))
        .set_output_format(sd.output_format().map(str::to_owned))
        .compressed(true)
        .number_of_buckets(-1)
        .stored_as_sub_directories(false)
        .serde_info(
            SerDeInfo::builder()
                .name("custom-serde")
                .serialization_library("org.openx.data.jsonserde.JsonSerDe")
                .parameters("ignore.malformed.json", "true")
                .parameters("mapping.ts", "log_ts")
                .build(),
        )
        .parameters("sd-param", "kept")
        .build();
    let input = TableInput::builder()
        .name(&t.table)
        .description("hand-made table")
        .owner("data-team")
        .retention(30)
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(sd)
        .set_partition_keys(Some(generated.partition_keys().to_vec()))
        .set_parameters(generated.parameters().cloned())
        .parameters("custom.param", "kept too")
        .parameters("projection.year.range", "2015,2030")
        .build()
        .unwrap();
    client
        .create_table()
        .database_name(&t.database)
        .table_input(input)
        .send()
        .await
        .unwrap();

    let before = get_table(&env, &t).await;
    assert!(
        !c.ensure_table(&t, &base).await.unwrap(),
        "an existing table is not replaced"
    );
    let up = c.ensure_apps(&t, &apps(&["new-app"])).await.unwrap();
    assert_eq!(up.added, ["new-app"]);
    let after = get_table(&env, &t).await;

    assert_ne!(
        before.version_id(),
        after.version_id(),
        "the update made a new version"
    );
    let normalise = |mut table: Table| {
        table.version_id = None;
        table.update_time = None;
        if let Some(p) = table.parameters.as_mut() {
            p.remove(APP_VALUES);
        }
        table
    };
    assert_eq!(
        after.parameters().unwrap()[APP_VALUES],
        "existing-app,new-app"
    );
    assert_eq!(normalise(after), normalise(before));
}

#[tokio::test]
async fn near_limit_is_flagged_and_over_limit_is_refused() {
    let env = TestEnv::require();
    let c = catalog(&env);
    let t = TableRef::new(unique_db(), "big");
    c.ensure_table(&t, &TableSpec::new(&env.bucket, "logs/"))
        .await
        .unwrap();

    // 30-character names (Heroku's longest) plus a comma each.
    let name = |i: usize| format!("a{i:0>28}z");
    let many: BTreeSet<String> = (0..NEAR_LIMIT_BYTES / 31 + 10).map(name).collect();
    let up = c.ensure_apps(&t, &many).await.unwrap();
    assert!(up.values_len > NEAR_LIMIT_BYTES && up.values_len <= PARAMETER_VALUE_LIMIT);
    assert!(up.near_limit);

    let too_many: BTreeSet<String> = (0..PARAMETER_VALUE_LIMIT / 31 + 10).map(name).collect();
    let err = c.ensure_apps(&t, &too_many).await.unwrap_err();
    assert!(matches!(err, GlueError::TooManyApps { .. }), "{err:?}");
    assert_eq!(
        c.projected_apps(&t).await.unwrap().len(),
        many.len(),
        "nothing written"
    );
}

#[tokio::test]
async fn stale_version_id_is_retried_through_a_version_checking_proxy() {
    let env = TestEnv::require();
    let proxy = VersionCheckingProxy::start(env.clone()).await;
    let c = Catalog::new(proxy.glue_client())
        .with_private_locks()
        .with_retry(ConflictRetry {
            max_attempts: 10,
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
        });
    let t = TableRef::new(unique_db(), "logs");
    c.ensure_table(
        &t,
        &TableSpec::new(&env.bucket, "logs/").with_apps(["seed"]),
    )
    .await
    .unwrap();

    // Someone else updates the table between our GetTable and our UpdateTable.
    proxy.interfere_once(t.clone(), "intruder-app");
    let up = c.ensure_apps(&t, &apps(&["our-app"])).await.unwrap();
    assert_eq!(up.added, ["our-app"]);
    assert!(
        proxy.conflicts() >= 1,
        "the proxy rejected the stale VersionId"
    );
    assert_eq!(
        c.projected_apps(&t).await.unwrap(),
        apps(&["seed", "intruder-app", "our-app"])
    );
}

#[tokio::test]
async fn concurrent_writers_through_the_version_checking_proxy_lose_nothing() {
    let env = TestEnv::require();
    let proxy = VersionCheckingProxy::start(env.clone()).await;
    let t = TableRef::new(unique_db(), "logs");
    catalog(&env)
        .ensure_table(
            &t,
            &TableSpec::new(&env.bucket, "logs/").with_apps(["seed"]),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for writer in 0..3 {
        // Private locks: three "processes" racing, settled by VersionId alone.
        let c = Catalog::new(proxy.glue_client())
            .with_private_locks()
            .with_retry(ConflictRetry {
                max_attempts: 100,
                backoff_base: Duration::from_millis(2),
                backoff_max: Duration::from_millis(40),
            });
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                c.ensure_apps(&t, &apps(&[&format!("p{writer}-app-{i}")]))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(catalog(&env).projected_apps(&t).await.unwrap().len(), 16);
    assert!(proxy.conflicts() >= 1, "the writers did race");
}

#[tokio::test]
async fn a_view_is_refused() {
    let env = TestEnv::require();
    let c = catalog(&env);
    let t = TableRef::new(unique_db(), "a_view");
    c.ensure_database(&t.database).await.unwrap();
    env.glue_client()
        .create_table()
        .database_name(&t.database)
        .table_input(
            TableInput::builder()
                .name(&t.table)
                .table_type("VIRTUAL_VIEW")
                .view_original_text("/* Presto View */")
                .storage_descriptor(StorageDescriptor::builder().build())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let err = c.ensure_apps(&t, &apps(&["x-app"])).await.unwrap_err();
    assert!(matches!(err, GlueError::InvalidTable { .. }), "{err:?}");
}

#[test]
fn table_input_from_a_created_table_is_what_was_created() {
    // Sanity of the helper the preservation test relies on (no server).
    let spec = TableSpec::new("b", "logs/").with_apps(["x"]);
    let input = spec.table_input("t").unwrap();
    let table = Table::builder()
        .name("t")
        .set_description(input.description().map(str::to_owned))
        .set_storage_descriptor(input.storage_descriptor().cloned())
        .set_partition_keys(Some(input.partition_keys().to_vec()))
        .set_table_type(input.table_type().map(str::to_owned))
        .set_parameters(input.parameters().cloned())
        .build()
        .unwrap();
    assert_eq!(table_input_from(table, |_| {}).unwrap(), input);
}

/// Glue's optimistic locking, in front of moto: an UpdateTable whose
/// VersionId is not the table's current one gets ConcurrentModificationException.
struct VersionCheckingProxy {
    addr: std::net::SocketAddr,
    env: TestEnv,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    moto: String,
    direct: aws_sdk_glue::Client,
    http: reqwest::Client,
    update_lock: tokio::sync::Mutex<()>,
    interfere: std::sync::Mutex<Option<(TableRef, String)>>,
    conflicts: AtomicU64,
}

impl Drop for VersionCheckingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl VersionCheckingProxy {
    async fn start(env: TestEnv) -> VersionCheckingProxy {
        let state = Arc::new(ProxyState {
            moto: env.glue_endpoint.trim_end_matches('/').to_owned(),
            direct: env.glue_client(),
            http: reqwest::Client::new(),
            update_lock: tokio::sync::Mutex::new(()),
            interfere: std::sync::Mutex::new(None),
            conflicts: AtomicU64::new(0),
        });
        let shared = state.clone();
        let app =
            axum::Router::new().fallback(move |req: axum::http::Request<axum::body::Body>| {
                let state = shared.clone();
                async move { proxy(state, req).await }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        VersionCheckingProxy {
            addr,
            env,
            state,
            task,
        }
    }

    fn glue_client(&self) -> aws_sdk_glue::Client {
        let mut env = self.env.clone();
        env.glue_endpoint = format!("http://{}", self.addr);
        env.glue_client()
    }

    /// Before the next UpdateTable of `t` is checked, another writer adds
    /// `app` to the table directly, making the request's VersionId stale.
    fn interfere_once(&self, t: TableRef, app: &str) {
        *self.state.interfere.lock().unwrap() = Some((t, app.to_owned()));
    }

    fn conflicts(&self) -> u64 {
        self.state.conflicts.load(Ordering::Relaxed)
    }
}

async fn proxy(
    state: Arc<ProxyState>,
    req: axum::http::Request<axum::body::Body>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();

    let _held = if target == "AWSGlue.UpdateTable" {
        let held = state.update_lock.lock().await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let db = v["DatabaseName"].as_str().unwrap_or_default().to_owned();
        let name = v["TableInput"]["Name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let interference = {
            let mut slot = state.interfere.lock().unwrap();
            match slot.as_ref() {
                Some((t, _)) if t.database == db && t.table == name => slot.take(),
                _ => None,
            }
        };
        if let Some((t, app)) = interference {
            let current = state
                .direct
                .get_table()
                .database_name(&t.database)
                .name(&t.table)
                .send()
                .await
                .unwrap();
            let input = table_input_from(current.table.unwrap(), |p| {
                let values = p.get(APP_VALUES).cloned().unwrap_or_default();
                p.insert(APP_VALUES.into(), format!("{values},{app}"));
            })
            .unwrap();
            state
                .direct
                .update_table()
                .database_name(&t.database)
                .table_input(input)
                .send()
                .await
                .unwrap();
        }
        if let Some(sent) = v["VersionId"].as_str() {
            let current = state
                .direct
                .get_table()
                .database_name(&db)
                .name(&name)
                .send()
                .await;
            let current_version = current
                .ok()
                .and_then(|o| o.table)
                .and_then(|t| t.version_id);
            if current_version.as_deref().is_some_and(|cur| cur != sent) {
                state.conflicts.fetch_add(1, Ordering::Relaxed);
                let body = serde_json::json!({
                    "__type": "ConcurrentModificationException",
                    "Message": "Update table failed due to concurrent modifications.",
                });
                let mut resp =
                    axum::response::Response::new(axum::body::Body::from(body.to_string()));
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                let h = resp.headers_mut();
                h.insert(
                    "content-type",
                    "application/x-amz-json-1.1".parse().unwrap(),
                );
                h.insert(
                    "x-amzn-errortype",
                    "ConcurrentModificationException".parse().unwrap(),
                );
                return resp;
            }
        }
        Some(held)
    } else {
        None
    };

    let mut fwd = state
        .http
        .request(parts.method.clone(), format!("{}{}", state.moto, parts.uri))
        .body(body.to_vec());
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            fwd = fwd.header(k, v);
        }
    }
    let resp = fwd.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
    *out.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap();
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}

#[tokio::test]
async fn year_range_follows_the_calendar_without_dropping_old_years() {
    let env = TestEnv::require();
    let c = catalog(&env);
    let t = TableRef::new(unique_db(), "heroku_logs");
    // A table from before: eighty years projected.
    let spec = TableSpec::new(&env.bucket, "logs/")
        .with_apps(["app-one"])
        .with_years(2020, 2099);
    assert!(c.ensure_table(&t, &spec).await.unwrap());
    let policy = Some(YearPolicy {
        created: 2026,
        now: 2026,
    });
    let up = c
        .ensure_projection(&t, &apps(&["app-one"]), policy)
        .await
        .unwrap();
    assert_eq!(
        up.years,
        Some((2020, 2027)),
        "first year kept, end next year"
    );
    assert!(up.added.is_empty());
    let params = get_table(&env, &t).await.parameters.unwrap();
    assert_eq!(params[YEAR_RANGE], "2020,2027");
    assert_eq!(params[APP_VALUES], "app-one", "the apps are untouched");

    let again = c
        .ensure_projection(&t, &apps(&["app-one"]), policy)
        .await
        .unwrap();
    assert_eq!(again.years, None, "nothing to change: no write");

    // A new year starts: the end moves with it, together with a new app.
    let next = Some(YearPolicy {
        created: 2026,
        now: 2027,
    });
    let up = c
        .ensure_projection(&t, &apps(&["app-one", "app-two"]), next)
        .await
        .unwrap();
    assert_eq!(up.years, Some((2020, 2028)));
    assert_eq!(up.added, ["app-two"]);
    let params = get_table(&env, &t).await.parameters.unwrap();
    assert_eq!(params[YEAR_RANGE], "2020,2028");

    // A table drainpipe does not manage keeps its range (no policy).
    let other = c
        .ensure_projection(&t, &apps(&["app-one"]), None)
        .await
        .unwrap();
    assert_eq!(other.years, None);
}

/// A table made before the record schema gained the OTLP columns: a managed
/// table gains them at the end, in schema order, with nothing else changed;
/// a table drainpipe does not manage is left alone.
#[tokio::test]
async fn a_managed_table_gains_new_record_fields_as_trailing_columns() {
    let env = TestEnv::require();
    let c = catalog(&env);
    let t = TableRef::new(unique_db(), "heroku_logs");
    let spec = TableSpec::new(&env.bucket, "logs/").with_apps(["app-one"]);
    assert!(c.ensure_table(&t, &spec).await.unwrap());
    let older = [
        "trace_id",
        "span_id",
        "severity_text",
        "attributes",
        "resource",
    ];
    let mut table = get_table(&env, &t).await;
    table
        .storage_descriptor
        .as_mut()
        .and_then(|sd| sd.columns.as_mut())
        .unwrap()
        .retain(|col| !older.contains(&col.name()));
    let input = drainpipe_operator::glue::table_input_from(table, |_| {}).unwrap();
    env.glue_client()
        .update_table()
        .database_name(&t.database)
        .table_input(input)
        .send()
        .await
        .unwrap();

    let untouched = c
        .ensure_projection(&t, &apps(&["app-one"]), None)
        .await
        .unwrap();
    assert!(untouched.columns_added.is_empty(), "no policy: not managed");

    let policy = Some(YearPolicy {
        created: 2026,
        now: 2026,
    });
    let up = c
        .ensure_projection(&t, &apps(&["app-one"]), policy)
        .await
        .unwrap();
    assert_eq!(up.columns_added, older);
    let table = get_table(&env, &t).await;
    let names: Vec<&str> = table
        .storage_descriptor()
        .unwrap()
        .columns()
        .iter()
        .map(|col| col.name())
        .collect();
    let want: Vec<&str> = FIELDS
        .iter()
        .map(|f| f.name)
        .filter(|n| *n != "app")
        .collect();
    assert_eq!(
        names, want,
        "old columns first, new ones appended in schema order"
    );
    assert_eq!(table.parameters.unwrap()[APP_VALUES], "app-one");

    let again = c
        .ensure_projection(&t, &apps(&["app-one"]), policy)
        .await
        .unwrap();
    assert!(again.columns_added.is_empty(), "nothing to add: no write");
}
