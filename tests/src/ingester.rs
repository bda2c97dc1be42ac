//! The real ingester, started in-process with `drainpipe_ingester::run` on a loopback port, for
//! tests that need archive objects exactly as it writes them.
//!
//! It archives to a scratch folder, and [`InProcessIngester::stop`] copies the objects to the
//! test MinIO under a prefix: an in-process ingester's S3 client would read credentials from this
//! process's environment, which a test must not set (edition 2024 makes `set_var` unsafe, and
//! the workspace forbids `unsafe`). The bytes are the ones the ingester wrote.

use std::path::Path;

use clap::Parser as _;
use drainpipe_ingester::config::Config;
use drainpipe_ingester::{Running, run};
use tokio_util::sync::CancellationToken;

use crate::env::TestEnv;

pub struct InProcessIngester {
    base: String,
    http: reqwest::Client,
    running: Running,
    shutdown: CancellationToken,
    dir: tempfile::TempDir,
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    frames: std::sync::atomic::AtomicU64,
}

impl InProcessIngester {
    /// An ingester without a routes file (any app, loopback), `--ack wal`; its objects end up in
    /// `env.bucket` under `prefix` when it stops.
    pub async fn start_s3(env: &TestEnv, prefix: &str) -> Self {
        Self::start_with(env, prefix, &[]).await
    }

    /// Like [`InProcessIngester::start_s3`], with more flags (`--routes FILE`, `--listen ADDR`
    /// replacing the loopback port...).
    pub async fn start_with(env: &TestEnv, prefix: &str, extra: &[String]) -> Self {
        Self::start_inner(env, prefix, None, extra).await
    }

    /// An ingester that archives straight to `env.bucket` under `prefix` with `credentials`
    /// (given to it explicitly, so this process's environment stays untouched), plus `extra`
    /// flags. Its objects are in MinIO as it writes them; [`InProcessIngester::stop`] copies none.
    pub async fn start_s3_as(
        env: &TestEnv,
        prefix: &str,
        credentials: aws_sdk_s3::config::Credentials,
        extra: &[String],
    ) -> Self {
        use aws_config::{BehaviorVersion, Region};
        let aws = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(env.region.clone()))
            .endpoint_url(&env.s3_endpoint)
            .credentials_provider(credentials)
            .load()
            .await;
        Self::start_inner(env, prefix, Some(aws), extra).await
    }

    /// Archives to a scratch folder, or with `aws` straight to MinIO.
    async fn start_inner(
        env: &TestEnv,
        prefix: &str,
        aws: Option<aws_config::SdkConfig>,
        extra: &[String],
    ) -> Self {
        let dir = tempfile::tempdir().expect("scratch dir");
        let root = dir.path();
        let mut args = vec!["drainpipe-ingester".to_owned()];
        if !extra.iter().any(|a| a == "--listen") {
            args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let archive = match aws {
            Some(_) => format!("s3://{}/{prefix}", env.bucket),
            None => format!("file://{}", root.join("archive").display()),
        };
        args.extend([
            "--archive".to_owned(),
            archive,
            "--data-dir".to_owned(),
            root.join("data").display().to_string(),
        ]);
        args.extend(extra.iter().cloned());
        let config = Config::try_parse_from(args).expect("ingester flags");
        config.validate().expect("valid ingester flags");
        let shutdown = CancellationToken::new();
        let running = match aws {
            Some(aws) => drainpipe_ingester::run_with_aws(config, aws, shutdown.clone()).await,
            None => run(config, shutdown.clone()).await,
        }
        .expect("start the ingester");
        InProcessIngester {
            base: format!("http://{}", running.http),
            http: reqwest::Client::new(),
            running,
            shutdown,
            dir,
            s3: env.s3_client(),
            bucket: env.bucket.clone(),
            prefix: prefix.to_owned(),
            frames: Default::default(),
        }
    }

    /// The ingester's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// POSTs one OTLP/HTTP JSON logs request (Fir telemetry drain) for `app`; panics unless it
    /// is 200.
    pub async fn post_otlp_json(&self, app: &str, request: &serde_json::Value) {
        let res = self
            .http
            .post(format!("{}/otlp/{app}/v1/logs", self.base))
            .header("Content-Type", "application/json")
            .json(request)
            .send()
            .await
            .expect("POST to the in-process ingester");
        assert_eq!(res.status(), 200, "the ingester refused the OTLP request");
    }

    /// POSTs one Logplex request (octet-counted `frames`) for `app`; panics unless it is 200.
    pub async fn post_logplex(&self, app: &str, frames: &[Vec<u8>]) {
        let res = self
            .logplex_request(app, "d.01234567-89ab-cdef-0123-456789abcdef", frames)
            .send()
            .await
            .expect("POST to the ingester");
        assert_eq!(res.status(), 200, "ingester answered {}", res.status());
    }

    /// POSTs one Logplex request for `app` as Logplex sends it to a drain URL: the URL's
    /// credentials as basic auth and the drain `token`. Returns the HTTP status.
    pub async fn post_logplex_as(
        &self,
        app: &str,
        credentials: (&str, &str),
        token: &str,
        frames: &[Vec<u8>],
    ) -> u16 {
        self.logplex_request(app, token, frames)
            .basic_auth(credentials.0, Some(credentials.1))
            .send()
            .await
            .expect("POST to the ingester")
            .status()
            .as_u16()
    }

    /// A Logplex request for `app` with drain `token` and a new frame id, as Logplex frames it.
    fn logplex_request(
        &self,
        app: &str,
        token: &str,
        frames: &[Vec<u8>],
    ) -> reqwest::RequestBuilder {
        let body = logplex_body(frames);
        let id = self
            .frames
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.http
            .post(format!("{}/logplex/{app}", self.base))
            .header("Content-Type", "application/logplex-1")
            .header("Logplex-Msg-Count", frames.len().to_string())
            .header("Logplex-Frame-Id", format!("{id:032X}"))
            .header("Logplex-Drain-Token", token)
            .body(body)
    }

    /// The ingester's HTTP address, `http://IP:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Stops the ingester (it archives everything it acknowledged) and copies its objects to S3.
    /// Returns how many objects were copied.
    pub async fn stop(self) -> usize {
        self.shutdown.cancel();
        self.running.wait().await.expect("ingester stopped cleanly");
        let root = self.dir.path().join("archive").join("logs");
        let mut files = Vec::new();
        collect(&root, &mut files);
        for file in &files {
            let rel = file
                .strip_prefix(&root)
                .expect("below the archive root")
                .to_string_lossy()
                .into_owned();
            let body = std::fs::read(file).expect("read archive object");
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(format!("{}{rel}", self.prefix))
                .body(body.into())
                .send()
                .await
                .expect("copy object to MinIO");
        }
        files.len()
    }
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "gz" || e == "parquet")
        {
            out.push(path);
        }
    }
}

/// The `.json.gz` object `key` of the test bucket, decompressed.
async fn gunzipped(env: &TestEnv, s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    use std::io::Read as _;
    let body = s3
        .get_object()
        .bucket(&env.bucket)
        .key(key)
        .send()
        .await
        .expect("get archive object")
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes();
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(&body[..])
        .read_to_end(&mut text)
        .expect("gzip JSON lines");
    text
}

/// Every record (JSON line) of the `.json.gz` objects under `prefix` in the test bucket.
pub async fn archived_records(env: &TestEnv, prefix: &str) -> Vec<serde_json::Value> {
    let s3 = env.s3_client();
    let keys = object_keys(env, prefix).await;
    let mut records = Vec::new();
    for key in keys.iter().filter(|k| k.ends_with(".json.gz")) {
        let text = gunzipped(env, &s3, key).await;
        let text = text.strip_suffix(b"\n").unwrap_or(&text);
        if text.is_empty() {
            continue;
        }
        records.extend(
            text.split(|b| *b == b'\n')
                .map(|l| serde_json::from_slice::<serde_json::Value>(l).expect("JSON line")),
        );
    }
    records
}

/// How many records (lines) the `.json.gz` objects under `prefix` hold, counted without parsing
/// them: for archives of millions of lines, where [`archived_records`] takes minutes.
pub async fn archived_count(env: &TestEnv, prefix: &str) -> usize {
    let s3 = env.s3_client();
    let mut count = 0;
    for key in object_keys(env, prefix)
        .await
        .iter()
        .filter(|k| k.ends_with(".json.gz"))
    {
        count += gunzipped(env, &s3, key)
            .await
            .iter()
            .filter(|b| **b == b'\n')
            .count();
    }
    count
}

/// Runs `drainpipe-ingester compact` in this process over the test bucket's `prefix`, writing
/// `format` (with `parquet`, closed JSON days are converted too), every closed day into one
/// object, and returns its report.
pub async fn compact(
    env: &TestEnv,
    prefix: &str,
    format: drainpipe_contract::schema::ArchiveFormat,
) -> drainpipe_contract::compaction::CompactionReport {
    use aws_config::{BehaviorVersion, Region};
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(env.region.clone()))
        .endpoint_url(&env.s3_endpoint)
        .credentials_provider(env.root_credentials())
        .load()
        .await;
    let config = drainpipe_ingester::compact::CompactConfig {
        archive: format!("s3://{}/{prefix}", env.bucket),
        format,
        target_size: 1 << 30,
        grace: std::time::Duration::from_secs(2 * 3600),
        report: None,
    };
    drainpipe_ingester::compact::run_with_aws(&config, Some(&aws))
        .await
        .expect("compact runs")
}

/// Keys of the archive objects (`.json.gz`, `.parquet`) under `prefix` in the test bucket.
pub async fn object_keys(env: &TestEnv, prefix: &str) -> Vec<String> {
    let s3 = env.s3_client();
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(&env.bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.expect("list objects").contents() {
            let key = o.key().unwrap_or_default();
            if key.ends_with(".json.gz") || key.ends_with(".parquet") {
                keys.push(key.to_owned());
            }
        }
    }
    keys
}

/// A binary of the ingester package next to the running test executable (`drainpipe-ingester`,
/// `drainpipe-loadgen`): `cargo test --workspace` builds them for the ingester's own tests.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo test --workspace` (or `cargo build -p drainpipe-ingester --bin {name}` first)",
        bin.display()
    );
    bin
}

/// A Logplex POST body: each frame octet-counted (its length with the trailing newline, a space,
/// the frame, the newline), as Logplex sends them.
pub fn logplex_body(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for f in frames {
        body.extend_from_slice(format!("{} ", f.len() + 1).as_bytes());
        body.extend_from_slice(f);
        body.push(b'\n');
    }
    body
}
