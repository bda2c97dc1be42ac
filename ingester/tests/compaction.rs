//! `drainpipe-ingester compact` against MinIO, as the CronJob runs it: the real binary over
//! objects the real ingester wrote, many small ones over two closed days and one open day.
//!
//! - After a run, each closed day is one object (or converted into Parquet), every record is
//!   there exactly once, and the open day is untouched.
//! - A run killed with SIGKILL after each of its changes to the bucket (a proxy in front of MinIO
//!   counts PUTs, POSTs and DELETEs, lets the n-th complete, then kills the process before it
//!   sees the answer) and then run again ends the same way: every record exactly once.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use bytes::Bytes;
use common::{Ingester, S3Env, client, gunzip_lines, post};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Two closed days (with a grace of 2 h, any day before yesterday is closed).
const CLOSED_DAYS: [&str; 2] = ["2026-11-20", "2026-11-21"];
const PER_DAY: usize = 120;
const PER_REQUEST: usize = 10;

fn today() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}

/// Archives `PER_DAY` numbered messages for `app` on each closed day and today, with the real
/// ingester writing `format` to `prefix`, objects closing every 50 ms (many small objects).
async fn archive(env: &S3Env, prefix: &str, app: &str, format: &str, first: usize) -> usize {
    let args: Vec<String> = [
        "--archive",
        &format!("s3://{}/{prefix}", env.bucket),
        "--format",
        format,
        "--flush-interval",
        "50ms",
        "--data-dir",
        &tempfile::tempdir()
            .expect("dir")
            .keep()
            .display()
            .to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut ing = Ingester::start(&args, &env.ingester_env(&env.endpoint));
    let http = client();
    let mut seq = first;
    for day in CLOSED_DAYS.iter().copied().chain([today().as_str()]) {
        for chunk in 0..PER_DAY / PER_REQUEST {
            let msgs: Vec<Vec<u8>> = (0..PER_REQUEST)
                .map(|i| {
                    seq += 1;
                    let t = chunk * PER_REQUEST + i;
                    format!(
                        "<190>1 {day}T{:02}:{:02}:{:02}.000000+00:00 host app web.1 - seq={seq}",
                        t / 3600 % 24,
                        t / 60 % 60,
                        t % 60
                    )
                    .into_bytes()
                })
                .collect();
            let res = post(&http, &ing.base, app, None, None, &msgs).await;
            assert_eq!(res.status(), 200);
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    assert!(ing.terminate(Duration::from_secs(30)).success());
    seq - first
}

/// Key -> `seq` numbers of its records, for every archive object under `prefix`.
async fn contents(env: &S3Env, prefix: &str) -> BTreeMap<String, Vec<usize>> {
    let s3 = env.client();
    let mut out = BTreeMap::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(&env.bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.expect("list").contents() {
            let key = o.key().expect("key").to_owned();
            if !(key.ends_with(".json.gz") || key.ends_with(".parquet")) {
                continue;
            }
            let body = s3
                .get_object()
                .bucket(&env.bucket)
                .key(&key)
                .send()
                .await
                .expect("get")
                .body
                .collect()
                .await
                .expect("body")
                .into_bytes();
            let messages: Vec<String> = if key.ends_with(".parquet") {
                let reader = ParquetRecordBatchReaderBuilder::try_new(body)
                    .expect("parquet")
                    .build()
                    .expect("reader");
                reader
                    .flat_map(|b| {
                        let b = b.expect("batch");
                        let m = b
                            .column_by_name("message")
                            .expect("message")
                            .as_string::<i32>()
                            .clone();
                        (0..m.len()).map(move |i| m.value(i).to_owned())
                    })
                    .collect()
            } else {
                gunzip_lines(&body)
                    .iter()
                    .map(|r| r["message"].as_str().expect("message").to_owned())
                    .collect()
            };
            let seqs = messages
                .iter()
                .map(|m| m.strip_prefix("seq=").expect("seq=N").parse().expect("N"))
                .collect();
            out.insert(key, seqs);
        }
    }
    out
}

/// Objects per day folder.
fn per_day(contents: &BTreeMap<String, Vec<usize>>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for key in contents.keys() {
        let folder = key.rsplit_once('/').expect("folder").0.to_owned();
        *out.entry(folder).or_default() += 1;
    }
    out
}

/// Every seq from `first+1` to `first+n` exactly once.
fn assert_exactly_once(
    contents: &BTreeMap<String, Vec<usize>>,
    first: usize,
    n: usize,
    what: &str,
) {
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for seqs in contents.values() {
        for s in seqs {
            *seen.entry(*s).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(s, _)| s)
        .collect();
    let missing: Vec<_> = (first + 1..=first + n)
        .filter(|s| !seen.contains_key(s))
        .collect();
    assert!(
        twice.is_empty() && missing.is_empty() && seen.len() == n,
        "{what}: {} records, {} twice ({twice:?}), {} missing ({missing:?})",
        seen.len(),
        twice.len(),
        missing.len()
    );
}

fn compact_command(env: &S3Env, endpoint: &str, prefix: &str, format: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drainpipe-ingester"));
    cmd.arg("compact");
    for (k, _) in std::env::vars() {
        if k.starts_with("DRAINPIPE_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("DRAINPIPE_ARCHIVE", format!("s3://{}/{prefix}", env.bucket))
        .env("DRAINPIPE_FORMAT", format)
        .env("DRAINPIPE_LOG", "info");
    for (k, v) in env.ingester_env(endpoint) {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// A compaction run to the end; its report.
fn compact(env: &S3Env, prefix: &str, format: &str) -> serde_json::Value {
    let out = compact_command(env, &env.endpoint, prefix, format)
        .output()
        .expect("run compact");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compact failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("a report line")).expect("report JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_json_days_become_one_object_each_and_the_open_day_is_untouched() {
    let env = S3Env::require();
    let prefix = format!("compact-json-{}/", uuid::Uuid::new_v4().simple());
    let n = archive(&env, &prefix, "shop", "json", 0).await;
    let before = contents(&env, &prefix).await;
    assert_exactly_once(&before, 0, n, "as archived");
    let days_before = per_day(&before);
    assert_eq!(days_before.len(), 3);
    assert!(days_before.values().all(|&c| c > 3), "{days_before:?}");

    let report = compact(&env, &prefix, "json");
    let after = contents(&env, &prefix).await;
    assert_exactly_once(&after, 0, n, "after compaction");
    let days_after = per_day(&after);
    let today_folder = format!("{prefix}shop/{}", today().replace('-', "/"));
    for (folder, count) in &days_after {
        if *folder == today_folder {
            assert_eq!(count, &days_before[folder], "the open day was touched");
        } else {
            assert_eq!(*count, 1, "{folder}");
        }
    }
    let today_keys = |c: &BTreeMap<String, Vec<usize>>| {
        c.keys()
            .filter(|k| k.starts_with(&today_folder))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(today_keys(&after), today_keys(&before));
    assert_eq!(report["recordsVerified"], 2 * PER_DAY);
    assert_eq!(report["partitionsCompacted"], 2);
    assert_eq!(report["objectsWritten"], 2);
    assert_eq!(report["partitionsFailed"], 0);

    // A second run finds nothing to do.
    let again = compact(&env, &prefix, "json");
    assert_eq!(again["objectsMerged"], 0);
    assert_eq!(contents(&env, &prefix).await, after);
}

/// A proxy in front of MinIO that SIGKILLs `victim` once the `kill_after`-th request that
/// changes the bucket (PUT, POST, DELETE) has been answered by MinIO.
struct KillingProxy {
    addr: SocketAddr,
    victim: Arc<AtomicU32>,
    changes: Arc<AtomicUsize>,
}

impl KillingProxy {
    async fn start(upstream: &str, kill_after: usize) -> KillingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let victim = Arc::new(AtomicU32::new(0));
        let changes = Arc::new(AtomicUsize::new(0));
        let upstream: hyper::Uri = upstream.parse().expect("MinIO URL");
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let (v, c) = (Arc::clone(&victim), Arc::clone(&changes));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, upstream, v, c) = (
                    client.clone(),
                    upstream.clone(),
                    Arc::clone(&v),
                    Arc::clone(&c),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (client, upstream, v, c) = (
                            client.clone(),
                            upstream.clone(),
                            Arc::clone(&v),
                            Arc::clone(&c),
                        );
                        async move {
                            let (mut parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let changes_bucket = matches!(
                                parts.method,
                                hyper::Method::PUT | hyper::Method::POST | hyper::Method::DELETE
                            );
                            let path = parts
                                .uri
                                .path_and_query()
                                .map_or("/", |p| p.as_str())
                                .to_owned();
                            parts.uri = format!("{upstream}{}", path.trim_start_matches('/'))
                                .parse()
                                .expect("uri");
                            // The Host header stays as signed (this proxy's address).
                            let res = client
                                .request(hyper::Request::from_parts(parts, Full::new(body)))
                                .await;
                            if changes_bucket && c.fetch_add(1, Ordering::SeqCst) + 1 == kill_after
                            {
                                let pid = v.load(Ordering::SeqCst);
                                if pid != 0 {
                                    let _ = Command::new("kill")
                                        .args(["-KILL", &pid.to_string()])
                                        .status();
                                }
                            }
                            let res = res.map_err(|e| e.to_string())?;
                            let (parts, body) = res.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            Ok::<_, String>(hyper::Response::from_parts(parts, Full::new(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        KillingProxy {
            addr,
            victim,
            changes,
        }
    }
}

/// Copies every object under `from` to `to` (server side), so each kill point starts from
/// the same archive without writing it again.
async fn copy_prefix(env: &S3Env, from: &str, to: &str) {
    let s3 = env.client();
    let mut pages = s3
        .list_objects_v2()
        .bucket(&env.bucket)
        .prefix(from)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.expect("list").contents() {
            let key = o.key().expect("key");
            s3.copy_object()
                .bucket(&env.bucket)
                .copy_source(format!("{}/{key}", env.bucket))
                .key(key.replacen(from, to, 1))
                .send()
                .await
                .expect("copy");
        }
    }
}

/// A LogDrain switched from JSON to Parquet: its closed JSON days are converted and its closed
/// Parquet days merged. Killed after each change the run makes and run again, it always ends
/// with every record exactly once, each closed day one Parquet object, and the open days (JSON
/// and Parquet) untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_after_any_change_and_run_again_keeps_every_record_exactly_once() {
    let env = S3Env::require();
    let template = format!("compact-kill-{}/template/", uuid::Uuid::new_v4().simple());
    let json = archive(&env, &template, "shop", "json", 0).await;
    let parquet = archive(&env, &template, "shop", "parquet", json).await;
    let n = json + parquet;
    let original = contents(&env, &template).await;
    assert_exactly_once(&original, 0, n, "as archived");

    // How many changes a whole run makes: each kill point below is one of them.
    let probe = template.replace("template/", "count/");
    copy_prefix(&env, &template, &probe).await;
    let counter = KillingProxy::start(&env.endpoint, usize::MAX).await;
    let out = compact_command(&env, &format!("http://{}", counter.addr), &probe, "parquet")
        .output()
        .expect("compact");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changes = counter.changes.load(Ordering::SeqCst);
    // Per merged group: manifest, output, commit, delete inputs, delete manifest.
    assert_eq!(
        changes,
        4 * 5,
        "two JSON days converted and two Parquet days merged"
    );
    let done = contents(&env, &probe).await;
    assert_exactly_once(&done, 0, n, "uninterrupted");
    let strip = |c: &BTreeMap<String, Vec<usize>>, p: &str| -> BTreeMap<String, usize> {
        per_day(c)
            .into_iter()
            .map(|(k, v)| (k.replacen(p, "", 1), v))
            .collect()
    };
    let want_days = strip(&done, &probe);

    for kill_after in 1..=changes {
        let prefix = template.replace("template/", &format!("kill-{kill_after}/"));
        copy_prefix(&env, &template, &prefix).await;
        let proxy = KillingProxy::start(&env.endpoint, kill_after).await;
        let mut child =
            compact_command(&env, &format!("http://{}", proxy.addr), &prefix, "parquet")
                .spawn()
                .expect("spawn compact");
        proxy.victim.store(child.id(), Ordering::SeqCst);
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert!(
            !status.success(),
            "kill point {kill_after}: the run was not killed ({status})"
        );

        let report = compact(&env, &prefix, "parquet");
        assert_eq!(
            report["partitionsFailed"], 0,
            "kill point {kill_after}: {report}"
        );
        let after = contents(&env, &prefix).await;
        assert_exactly_once(
            &after,
            0,
            n,
            &format!("killed after change {kill_after}, run again"),
        );
        assert_eq!(strip(&after, &prefix), want_days, "kill point {kill_after}");
        let leftovers = env
            .client()
            .list_objects_v2()
            .bucket(&env.bucket)
            .prefix(format!("{prefix}_drainpipe-compaction/"))
            .send()
            .await
            .expect("list manifests");
        assert_eq!(
            leftovers.key_count(),
            Some(0),
            "kill point {kill_after}: a manifest is left"
        );
    }
}
