//! The S3 backend against the real MinIO of the test environment
//! (`scripts/testenv up`), including an archive outage.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn msgs(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|m| app_line(&format!("{tag} msg {m} {}", "s".repeat(250))))
        .collect()
}

fn messages(objects: &std::collections::BTreeMap<String, Vec<serde_json::Value>>) -> Vec<String> {
    objects
        .values()
        .flatten()
        .map(|r| r["message"].as_str().expect("message").to_owned())
        .collect()
}

#[tokio::test]
async fn s3_archive_writes_partitioned_objects_to_minio() {
    let env = S3Env::require();
    let prefix = format!("it-{}/", uuid::Uuid::new_v4());
    let dirs = Dirs::new();
    let mut args = dirs.args(&["--flush-interval", "200ms"]);
    args[1] = format!("s3://{}/{prefix}", env.bucket);
    let mut ing = Ingester::start(&args, &env.ingester_env(&env.endpoint));
    assert!(
        ing.logs()
            .contains(&format!("s3://{}/{prefix}", env.bucket))
    );
    let c = client();
    for (app, tag) in [("shop", "first"), ("blog", "second")] {
        let r = post(&c, &ing.base, app, None, Some(tag), &msgs(tag, 20)).await;
        assert_eq!(r.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let objects = loop {
        let objects = env.read(&prefix).await;
        if objects.values().map(Vec::len).sum::<usize>() == 40 {
            break objects;
        }
        assert!(
            Instant::now() < deadline,
            "objects never reached MinIO: {objects:?}\n{}",
            ing.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (key, records) in &objects {
        let app = records[0]["app"].as_str().expect("app");
        assert!(
            key.starts_with(&format!("{prefix}{app}/2026/06/17/")) && key.ends_with(".json.gz"),
            "{key}"
        );
        for r in records {
            assert_eq!(r["app"], app);
            assert_eq!(r["log_ts"], "2026-06-17T12:00:00.123456Z");
            assert_eq!(
                r["frame_id"],
                if app == "shop" { "first" } else { "second" }
            );
        }
    }
    assert!(metric(&c, &ing.base, "drainpipe_archive_objects_total").await >= 2.0);
    assert!(ing.terminate(Duration::from_secs(30)).success());
}

#[tokio::test]
async fn s3_archive_mode_acknowledges_after_the_put() {
    let env = S3Env::require();
    let prefix = format!("it-{}/", uuid::Uuid::new_v4());
    let dirs = Dirs::new();
    let mut args = dirs.args(&["--ack", "archive"]);
    args[1] = format!("s3://{}/{prefix}", env.bucket);
    let mut ing = Ingester::start(&args, &env.ingester_env(&env.endpoint));
    let c = client();
    let r = post(&c, &ing.base, "shop", None, Some("A1"), &msgs("direct", 10)).await;
    assert_eq!(r.status(), 200);
    // Already stored: read right away.
    let objects = env.read(&prefix).await;
    assert_eq!(messages(&objects).len(), 10);
    assert!(ing.terminate(Duration::from_secs(30)).success());
}

#[tokio::test]
async fn s3_archive_mode_answers_503_while_the_archive_is_down() {
    let env = S3Env::require();
    let proxy = Proxy::start(minio_addr(&env)).await;
    let prefix = format!("it-{}/", uuid::Uuid::new_v4());
    let dirs = Dirs::new();
    let mut args = dirs.args(&["--ack", "archive"]);
    args[1] = format!("s3://{}/{prefix}", env.bucket);
    let endpoint = format!("http://{}", proxy.addr);
    let mut ing = Ingester::start(&args, &env.ingester_env(&endpoint));
    let c = client();
    assert_eq!(
        post(&c, &ing.base, "shop", None, Some("B1"), &msgs("up", 3))
            .await
            .status(),
        200
    );
    proxy.cut();
    let r = post(&c, &ing.base, "shop", None, Some("B2"), &msgs("down", 3)).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let r = c
        .get(format!("{}/readyz", ing.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 503);
    proxy.restore();
    // Logplex retries the same frame.
    let r = post(&c, &ing.base, "shop", None, Some("B2"), &msgs("down", 3)).await;
    assert_eq!(r.status(), 200);
    assert!(ing.terminate(Duration::from_secs(30)).success());
    let all = messages(&env.read(&prefix).await);
    for m in msgs("up", 3).iter().chain(&msgs("down", 3)) {
        let text = String::from_utf8_lossy(m);
        let text = text.split(" - ").nth(1).expect("message");
        assert!(all.iter().any(|a| a == text), "missing {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archive_outage_is_absorbed_by_the_log_then_caught_up() {
    let env = S3Env::require();
    let proxy = Proxy::start(minio_addr(&env)).await;
    let prefix = format!("it-{}/", uuid::Uuid::new_v4());
    let dirs = Dirs::new();
    let mut args = dirs.args(&[
        "--flush-interval",
        "200ms",
        "--flush-bytes",
        "256KiB",
        "--wal-max-bytes",
        "4MiB",
        "--wal-segment-bytes",
        "1MiB",
    ]);
    args[1] = format!("s3://{}/{prefix}", env.bucket);
    let endpoint = format!("http://{}", proxy.addr);
    let mut ing = Ingester::start(&args, &env.ingester_env(&endpoint));
    let c = client();
    let base = ing.base.clone();
    let mut acked: Vec<String> = Vec::new();
    let send = |tag: String| {
        let c = c.clone();
        let base = base.clone();
        async move {
            let r = post(&c, &base, "shop", None, Some(&tag), &msgs(&tag, 100)).await;
            (
                tag,
                r.status().as_u16(),
                r.headers().contains_key("retry-after"),
            )
        }
    };

    // Archive up.
    for i in 0..5 {
        let (tag, status, _) = send(format!("before-{i}")).await;
        assert_eq!(status, 200);
        acked.push(tag);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.read(&prefix).await.is_empty() {
        assert!(Instant::now() < deadline, "nothing reached MinIO");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Archive down: the log absorbs requests until its bound, then 503.
    proxy.cut();
    let mut during = 0;
    let mut refused = false;
    for i in 0..1000 {
        let (tag, status, retry_after) = send(format!("during-{i}")).await;
        match status {
            200 => {
                acked.push(tag);
                during += 1;
            }
            503 => {
                assert!(retry_after, "503 without Retry-After");
                refused = true;
                break;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(refused, "the log bound was never reached");
    assert!(during >= 20, "the log absorbed only {during} requests");
    let r = c
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 503, "not ready while the log is full");
    // The SDK retries on its own first; our count follows its final error.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&c, &base, "drainpipe_upload_errors_total").await < 1.0 {
        assert!(Instant::now() < deadline, "upload errors never counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("archive outage: {during} requests acknowledged from the log, then 503");

    // Archive back: the log drains, readiness returns, new data is accepted.
    let restored = Instant::now();
    proxy.restore();
    loop {
        let r = c
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        if r.status() == 200 {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(90),
            "no catch-up after the archive came back:\n{}",
            ing.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "archive outage: ready again {:?} after the archive came back",
        restored.elapsed()
    );
    for i in 0..5 {
        let (tag, status, _) = send(format!("after-{i}")).await;
        assert_eq!(status, 200);
        acked.push(tag);
    }
    assert!(ing.terminate(Duration::from_secs(90)).success());

    let objects = env.read(&prefix).await;
    let have: HashSet<String> = messages(&objects).into_iter().collect();
    let total: usize = objects.values().map(Vec::len).sum();
    let mut missing = 0;
    for tag in &acked {
        for m in msgs(tag, 100) {
            let text = String::from_utf8_lossy(&m);
            if !have.contains(text.split(" - ").nth(1).expect("message")) {
                missing += 1;
            }
        }
    }
    println!(
        "archive outage: {} acknowledged messages, {total} records in MinIO ({} duplicates), {missing} missing",
        acked.len() * 100,
        total - have.len()
    );
    assert_eq!(missing, 0, "acknowledged messages lost in the outage");
    assert_eq!(dirs.wal_bytes(), 0);
}

fn minio_addr(env: &S3Env) -> SocketAddr {
    let hostport = env
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/');
    std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .expect("resolve MinIO")
        .next()
        .expect("MinIO address")
}

/// A TCP proxy in front of MinIO that can be cut (every connection reset,
/// new ones refused) and restored: an archive outage without touching the
/// shared MinIO.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, conns2) = (Arc::clone(&up), Arc::clone(&conns));
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().expect("conns").push(task.abort_handle());
            }
        });
        Proxy { addr, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().expect("conns").drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
