//! OTLP logs (Heroku Fir telemetry drains) from a real OpenTelemetry client:
//! `scripts/otlp-client`, built by `scripts/testenv install` from the
//! OpenTelemetry Go SDK's otlploghttp exporter (protobuf) and pdata's OTLP/JSON
//! encoding. Every record must arrive, field by field, in the folder archive.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use drainpipe_testenv::TestEnv;

const PASSWORD: &str = "fir-drain-password";

fn start(dirs: &Dirs) -> Ingester {
    let routes = dirs.root.path().join("routes.yaml");
    std::fs::write(
        &routes,
        format!("apps:\n  fir-app:\n    password: {PASSWORD}\n"),
    )
    .expect("routes");
    Ingester::start(
        &dirs.args(&[
            "--routes",
            &routes.display().to_string(),
            "--flush-interval",
            "200ms",
        ]),
        &[],
    )
}

/// Run the client; its exit status says whether every export succeeded.
fn send(
    client: &std::path::Path,
    protocol: &str,
    endpoint: &str,
    password: &str,
    n: usize,
    run: &str,
) -> std::process::Output {
    Command::new(client)
        .args([
            "-protocol",
            protocol,
            "-endpoint",
            endpoint,
            "-header",
            &format!("Authorization=Bearer {password}"),
            "-n",
            &n.to_string(),
            "-run",
            run,
            "-app",
            "fir-app",
            "-batch",
            "100",
            "-retry-for",
            "60s",
        ])
        .output()
        .expect("run otlp-client")
}

async fn records_of_run(dirs: &Dirs, run: &str, n: usize) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(30), "every record archived", || {
        let recs: Vec<_> = all_records(&dirs.archive())
            .into_iter()
            .filter(|r| r["attributes"]["run"] == run)
            .collect();
        (recs.len() >= n).then_some(recs)
    })
    .await
}

fn check(recs: &[serde_json::Value], n: usize, run: &str) {
    assert_eq!(recs.len(), n, "each record exactly once");
    let mut seen = vec![false; n];
    for r in recs {
        let seq: usize = r["attributes"]["seq"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("seq attribute");
        seen[seq] = true;
        assert_eq!(r["app"], "fir-app");
        assert_eq!(r["message"], format!("record {seq} of {run}"));
        let (severity, text) = if seq.is_multiple_of(10) {
            (3, "ERROR")
        } else {
            (6, "INFO")
        };
        assert_eq!(r["severity"], severity, "{r}");
        assert_eq!(r["severity_text"], text);
        assert_eq!(r["resource"]["service.name"], "fir-app");
        assert_eq!(r["proc_id"], "web.1", "from heroku.dyno.name");
        // The client's trace context: the id's bytes are the ASCII of the
        // record number in hex, as otlp-client writes them.
        let want_trace: String = format!("{:016x}", seq + 1)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(r["trace_id"], want_trace);
        assert_eq!(r["span_id"].as_str().map(str::len), Some(16));
        assert_eq!(r["parse_error"], serde_json::Value::Null);
        let log_ts = r["log_ts"].as_str().expect("log_ts");
        assert!(
            log_ts.starts_with("20") && log_ts.ends_with('Z'),
            "{log_ts}"
        );
    }
    assert!(seen.iter().all(|s| *s), "every sequence number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_protobuf_and_pdata_json_records_arrive_field_by_field() {
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let ing = start(&dirs);
    let endpoint = format!("{}/otlp/fir-app", ing.base);
    for (protocol, run) in [("http/protobuf", "proto-run"), ("http/json", "json-run")] {
        let out = send(&client, protocol, &endpoint, PASSWORD, 250, run);
        assert!(
            out.status.success(),
            "{protocol}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recs = records_of_run(&dirs, run, 250).await;
        check(&recs, 250, run);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_other_signals_are_refused_clearly() {
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let ing = start(&dirs);
    let out = send(
        &client,
        "http/protobuf",
        &format!("{}/otlp/fir-app", ing.base),
        "wrong",
        1,
        "bad-pw",
    );
    assert!(!out.status.success(), "a 401 is not retried into success");
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/otlp/fir-app/v1/traces", ing.base))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {PASSWORD}"))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 404);
    let text = res.text().await.expect("body");
    assert!(text.contains("logs only"), "{text}");
    let res = http
        .post(format!("{}/otlp/no-such-app/v1/logs", ing.base))
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 404);
}

/// The archive is down: the ingester logs what it can, then answers 503 with
/// Retry-After once the log is over its bound; the client's own retry
/// delivers everything, exactly once, after the archive comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_retries_on_503_deliver_everything_once_the_ingester_recovers() {
    const N: usize = 20_000;
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let routes = dirs.root.path().join("routes.yaml");
    std::fs::write(
        &routes,
        format!("apps:\n  fir-app:\n    password: {PASSWORD}\n"),
    )
    .expect("routes");
    let ing = Ingester::start(
        &dirs.args(&[
            "--routes",
            &routes.display().to_string(),
            "--flush-interval",
            "200ms",
            "--wal-max-bytes",
            "1MiB",
            "--wal-segment-bytes",
            "1MiB",
        ]),
        &[],
    );
    dirs.block_archive();
    let endpoint = format!("{}/otlp/fir-app", ing.base);
    let sender = std::thread::spawn(move || {
        send(
            &client,
            "http/protobuf",
            &endpoint,
            PASSWORD,
            N,
            "retry-run",
        )
    });
    let http = common::client();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(
        &http,
        &ing.base,
        "drainpipe_http_requests_total{status=\"503\"}",
    )
    .await
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no 503 while the archive is down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dirs.unblock_archive();
    let out = tokio::task::spawn_blocking(move || sender.join().expect("sender thread"))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records_of_run(&dirs, "retry-run", N).await;
    check(&recs, N, "retry-run");
}
