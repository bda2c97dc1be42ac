//! OTLP logs (Heroku Fir telemetry drains) from a real OpenTelemetry client:
//! `scripts/otlp-client`, built by `scripts/testenv install` from the
//! OpenTelemetry Go SDK's otlploghttp and otlploggrpc exporters (protobuf)
//! and pdata's OTLP/JSON encoding. Every record must arrive, field by field,
//! in the folder archive.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use drainpipe_testenv::TestEnv;

const PASSWORD: &str = "fir-drain-password";

fn start(dirs: &Dirs) -> Ingester {
    start_with(dirs, &[])
}

/// The ingester with the routes file of `fir-app` and `extra` flags.
fn start_with(dirs: &Dirs, extra: &[&str]) -> Ingester {
    start_apps(dirs, &["fir-app"], extra)
}

/// The ingester with a routes file of `apps`, each with [`PASSWORD`].
fn start_apps(dirs: &Dirs, apps: &[&str], extra: &[&str]) -> Ingester {
    let routes = dirs.root.path().join("routes.yaml");
    let entries: String = apps
        .iter()
        .map(|app| format!("  {app}:\n    password: {PASSWORD}\n"))
        .collect();
    std::fs::write(&routes, format!("apps:\n{entries}")).expect("routes");
    let routes = routes.display().to_string();
    let mut args = vec!["--routes", &routes, "--flush-interval", "200ms"];
    args.extend_from_slice(extra);
    Ingester::start(&dirs.args(&args), &[])
}

/// Run the client; its exit status says whether every export succeeded.
fn send(
    client: &Path,
    protocol: &str,
    endpoint: &str,
    password: &str,
    n: usize,
    run: &str,
) -> std::process::Output {
    send_with(
        client,
        &[
            "-protocol",
            protocol,
            "-endpoint",
            endpoint,
            "-header",
            &format!("Authorization=Bearer {password}"),
        ],
        n,
        run,
    )
}

/// Run the client with `args` (protocol, endpoint, headers, ...).
fn send_with(client: &Path, args: &[&str], n: usize, run: &str) -> std::process::Output {
    Command::new(client)
        .args(args)
        .args([
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

/// The client over gRPC to `endpoint` (`host:port`) as `app` with
/// `password`, plus `extra` flags (`-ca`, `-compression`).
fn send_grpc(
    client: &Path,
    endpoint: &str,
    app: &str,
    password: &str,
    extra: &[&str],
    n: usize,
    run: &str,
) -> std::process::Output {
    let app_header = format!("x-drainpipe-app={app}");
    let auth = format!("authorization=Bearer {password}");
    let mut args = vec![
        "-protocol",
        "grpc",
        "-endpoint",
        endpoint,
        "-header",
        &app_header,
        "-header",
        &auth,
    ];
    args.extend_from_slice(extra);
    send_with(client, &args, n, run)
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

/// Both encodings, to the endpoint as the exporter completes it (`/v1/logs`
/// appended, the Collector's `endpoint`) and as registered (`-as-given`,
/// the Collector's `logs_endpoint`): Heroku does not document which of the
/// two its exporter posts to, so both get the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_protobuf_and_pdata_json_records_arrive_field_by_field() {
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let ing = start(&dirs);
    let endpoint = format!("{}/otlp/fir-app", ing.base);
    let auth = format!("Authorization=Bearer {PASSWORD}");
    for (protocol, as_given, run) in [
        ("http/protobuf", false, "proto-run"),
        ("http/json", false, "json-run"),
        ("http/protobuf", true, "bare-proto"),
        ("http/json", true, "bare-json"),
    ] {
        let mut args = vec![
            "-protocol",
            protocol,
            "-endpoint",
            &endpoint,
            "-header",
            &auth,
        ];
        if as_given {
            args.push("-as-given");
        }
        let out = send_with(&client, &args, 250, run);
        assert!(
            out.status.success(),
            "{protocol} (as given: {as_given}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recs = records_of_run(&dirs, run, 250).await;
        check(&recs, 250, run);
    }
}

/// Both spellings of the endpoint (with `/v1/logs` appended and as
/// registered) refuse a wrong password and an unknown app; other signals
/// and other paths are not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_other_signals_are_refused_clearly() {
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let ing = start(&dirs);
    let endpoint = format!("{}/otlp/fir-app", ing.base);
    for as_given in [false, true] {
        let mut args = vec![
            "-protocol",
            "http/protobuf",
            "-endpoint",
            &endpoint,
            "-header",
            "Authorization=Bearer wrong",
        ];
        if as_given {
            args.push("-as-given");
        }
        let out = send_with(&client, &args, 1, "bad-pw");
        assert!(
            !out.status.success(),
            "a 401 is not retried into success (as given: {as_given})"
        );
    }
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
    for path in ["/otlp/no-such-app", "/otlp/no-such-app/v1/logs"] {
        let res = http
            .post(format!("{}{path}", ing.base))
            .header("content-type", "application/x-protobuf")
            .body(Vec::new())
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 404, "{path}");
    }
    let res = http
        .post(format!("{}/otlp/fir-app/v2/logs", ing.base))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {PASSWORD}"))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(
        res.status(),
        404,
        "only /otlp/{{app}} and /otlp/{{app}}/v1/logs"
    );
}

/// The archive is down: the ingester logs what it can, then answers 503 with
/// Retry-After once the log is over its bound; the client's own retry
/// delivers everything, exactly once, after the archive comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_retries_on_503_deliver_everything_once_the_ingester_recovers() {
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let ing = start_with(&dirs, SMALL_LOG);
    dirs.block_archive();
    let endpoint = format!("{}/otlp/fir-app", ing.base);
    let sender = std::thread::spawn(move || {
        send(
            &client,
            "http/protobuf",
            &endpoint,
            PASSWORD,
            OUTAGE_RECORDS,
            "retry-run",
        )
    });
    deliver_through_outage(
        &dirs,
        &ing,
        "drainpipe_http_requests_total{status=\"503\"}",
        "retry-run",
        sender,
    )
    .await;
}

/// A log bound the outage tests fill quickly.
const SMALL_LOG: &[&str] = &["--wal-max-bytes", "1MiB", "--wal-segment-bytes", "1MiB"];
/// Records sent through an outage: several MiB, past [`SMALL_LOG`].
const OUTAGE_RECORDS: usize = 20_000;

/// The archive is down (blocked by the caller) while `sender` sends
/// [`OUTAGE_RECORDS`] records of `run`: once the ingester has refused a
/// request (`refusals`, a metric), the archive comes back, and the client's
/// own retries must deliver every record exactly once.
async fn deliver_through_outage(
    dirs: &Dirs,
    ing: &Ingester,
    refusals: &str,
    run: &str,
    sender: std::thread::JoinHandle<std::process::Output>,
) {
    let http = common::client();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(&http, &ing.base, refusals).await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no {refusals} while the archive is down"
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
    let recs = records_of_run(dirs, run, OUTAGE_RECORDS).await;
    check(&recs, OUTAGE_RECORDS, run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_records_arrive_field_by_field_gzip_or_not() {
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let ing = start_with(&dirs, &["--otlp-grpc-listen", "127.0.0.1:0"]);
    let endpoint = ing.logged_addr("OTLP/gRPC on http://").await.to_string();
    for (compression, run) in [("gzip", "grpc-gzip-run"), ("none", "grpc-plain-run")] {
        let out = send_grpc(
            &client,
            &endpoint,
            "fir-app",
            PASSWORD,
            &["-compression", compression],
            250,
            run,
        );
        assert!(
            out.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recs = records_of_run(&dirs, run, 250).await;
        check(&recs, 250, run);
    }
    let http = common::client();
    let ok = metric(
        &http,
        &ing.base,
        "drainpipe_grpc_requests_total{code=\"OK\"}",
    )
    .await;
    assert!(
        ok >= 6.0,
        "at least three calls of at most 100 records per run: {ok}"
    );
}

/// `--max-connection-age` on OTLP/gRPC: an HTTP/2 connection that old gets a
/// GOAWAY and is closed once its calls have ended, so an exporter opens a new
/// one (through a Service, to pods started since). The SDK exporter, whose
/// calls span several such ages, loses and repeats nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_grpc_connection_is_closed_by_goaway_and_the_exporter_loses_nothing() {
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let ing = start_with(
        &dirs,
        &[
            "--otlp-grpc-listen",
            "127.0.0.1:0",
            "--max-connection-age",
            "200ms",
        ],
    );
    let endpoint = ing.logged_addr("OTLP/gRPC on http://").await;
    // A bare HTTP/2 connection with no call on it: the ingester ends it once
    // it is 200 ms old, not before.
    let tcp = tokio::net::TcpStream::connect(endpoint)
        .await
        .expect("connect");
    let opened = std::time::Instant::now();
    let (_calls, conn) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("HTTP/2 handshake");
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the ingester ends an old connection");
    assert!(ended.is_ok(), "ended by a GOAWAY, not an error: {ended:?}");
    assert!(
        opened.elapsed() >= Duration::from_millis(150),
        "ended at {:?}, before its age",
        opened.elapsed()
    );

    let run = "grpc-aged-run";
    let out = send_grpc(
        &client,
        &endpoint.to_string(),
        "fir-app",
        PASSWORD,
        &[],
        3000,
        run,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records_of_run(&dirs, run, 3000).await;
    check(&recs, 3000, run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_wrong_token_is_unauthenticated_and_unknown_app_not_found() {
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let ing = start_with(&dirs, &["--otlp-grpc-listen", "127.0.0.1:0"]);
    let endpoint = ing.logged_addr("OTLP/gRPC on http://").await.to_string();
    for (app, password, code) in [
        ("fir-app", "wrong", "Unauthenticated"),
        ("no-such-app", PASSWORD, "NotFound"),
    ] {
        let out = send_grpc(&client, &endpoint, app, password, &[], 1, "refused");
        assert!(
            !out.status.success(),
            "{app}: refused, not retried into success"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("code = {code}")),
            "{app}: {stderr}"
        );
    }
    // Without the app header the call cannot be routed at all.
    let out = send_with(
        &client,
        &[
            "-protocol",
            "grpc",
            "-endpoint",
            &endpoint,
            "-header",
            &format!("authorization=Bearer {PASSWORD}"),
        ],
        1,
        "no-app",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("x-drainpipe-app"), "{stderr}");
    let http = common::client();
    for (code, n) in [
        ("UNAUTHENTICATED", 1.0),
        ("NOT_FOUND", 1.0),
        ("INVALID_ARGUMENT", 1.0),
    ] {
        let name = format!("drainpipe_grpc_requests_total{{code=\"{code}\"}}");
        assert_eq!(metric(&http, &ing.base, &name).await, n, "{name}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        all_records(&dirs.archive()).is_empty(),
        "nothing refused is archived"
    );
}

/// The archive is down: once the log is over its bound the ingester answers
/// RESOURCE_EXHAUSTED with a RetryInfo, which the gRPC exporter retries
/// after its delay; everything arrives, exactly once, after the archive
/// comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_retries_deliver_everything_once_the_ingester_recovers() {
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let mut flags = vec!["--otlp-grpc-listen", "127.0.0.1:0"];
    flags.extend_from_slice(SMALL_LOG);
    let ing = start_with(&dirs, &flags);
    let endpoint = ing.logged_addr("OTLP/gRPC on http://").await.to_string();
    dirs.block_archive();
    let sender = std::thread::spawn(move || {
        let run = "grpc-retry-run";
        send_grpc(
            &client,
            &endpoint,
            "fir-app",
            PASSWORD,
            &[],
            OUTAGE_RECORDS,
            run,
        )
    });
    deliver_through_outage(
        &dirs,
        &ing,
        "drainpipe_grpc_requests_total{code=\"RESOURCE_EXHAUSTED\"}",
        "grpc-retry-run",
        sender,
    )
    .await;
}

/// A self-signed certificate for `localhost` written as PEM files.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate certificate");
    let cert = dir.join("grpc.crt");
    let key = dir.join("grpc.key");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

/// The protocol the server picks when offered `h2` (gRPC clients refuse a
/// server that picks none).
async fn negotiated_alpn(addr: SocketAddr, ca: &Path) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_file(ca).expect("CA");
    roots.add(der).expect("add root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_negotiates_h2_and_delivers() {
    let env = TestEnv::require();
    let client = env.otlp_client().to_owned();
    let dirs = Dirs::new();
    let (cert, key) = self_signed(dirs.root.path());
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let ing = start_with(
        &dirs,
        &[
            "--otlp-grpc-listen",
            "127.0.0.1:0",
            "--otlp-grpc-tls-cert",
            &cert_s,
            "--otlp-grpc-tls-key",
            &key_s,
        ],
    );
    let addr = ing.logged_addr("OTLP/gRPC on https://").await;
    assert_eq!(
        negotiated_alpn(addr, &cert).await.as_deref(),
        Some(&b"h2"[..])
    );
    let endpoint = format!("localhost:{}", addr.port());
    let out = send_grpc(
        &client,
        &endpoint,
        "fir-app",
        PASSWORD,
        &["-ca", &cert_s],
        250,
        "grpc-tls-run",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records_of_run(&dirs, "grpc-tls-run", 250).await;
    check(&recs, 250, "grpc-tls-run");
}

/// `drainpipe-loadgen --otlp-grpc` (the OTLP/gRPC benchmark's client) sends
/// real `LogsService/Export` calls: everything it counts as acknowledged is
/// archived, and a wrong password shows as the gRPC code, not as success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_grpc_mode_acknowledges_exactly_what_is_archived() {
    let dirs = Dirs::new();
    let mut ing = start_apps(
        &dirs,
        &["lg-1", "lg-2"],
        &["--otlp-grpc-listen", "127.0.0.1:0"],
    );
    let endpoint = ing.logged_addr("OTLP/gRPC on http://").await;
    let loadgen = |password: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_drainpipe-loadgen"))
            .args(["--otlp-grpc", &format!("http://{endpoint}")])
            .args(["--app-prefix", "lg", "--drains", "2", "--requests", "20"])
            .args(["--body-kb", "8", "--pool", "2"])
            .env("DRAINPIPE_LOADGEN_PASSWORD", password)
            .output()
            .expect("run drainpipe-loadgen");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let report = loadgen("wrong");
    assert!(
        report.contains("status:       Unauthenticated=20"),
        "{report}"
    );
    assert!(report.contains("acknowledged: 0 messages"), "{report}");

    let report = loadgen(PASSWORD);
    assert!(report.contains("status:       Ok=20"), "{report}");
    let acked: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("acknowledged: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no acknowledged line in {report}"));
    assert!(acked > 20, "{report}");
    let status = ing.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; logs:\n{}", ing.logs());
    let recs = all_records(&dirs.archive());
    assert_eq!(recs.len(), acked, "archived = acknowledged");
    for app in ["lg-1", "lg-2"] {
        assert!(
            recs.iter().any(|r| r["app"] == app),
            "records of {app} archived"
        );
    }
}
