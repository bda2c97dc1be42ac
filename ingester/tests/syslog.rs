//! Syslog drains against the real binary: a rustls client over loopback
//! (and plain TCP) sending Logplex syslog-drain streams, records read back
//! from the folder archive.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value as Json, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use common::*;

const BLOG_TOKEN: &str = "d.fedcba98-7654-3210-fedc-ba9876543210";
const UNKNOWN_TOKEN: &str = "d.00000000-1111-2222-3333-444444444444";

fn routes() -> String {
    format!(
        "apps:\n  shop:\n    password: s3cr3t-pw\n    drainTokens: [{TOKEN}]\n  blog:\n    password: other-pw\n    drainTokens: [{BLOG_TOKEN}]\n"
    )
}

/// A Logplex syslog-drain message: HOSTNAME is the drain token, MSGID and
/// STRUCTURED-DATA are NILVALUEs.
fn drain_line(token: &str, proc_id: &str, text: &str) -> Vec<u8> {
    format!("<190>1 2026-06-17T12:00:00.123456+00:00 {token} app {proc_id} - - {text}").into_bytes()
}

const ROUTER: &str = r#"at=info method=GET path="/orders?page=2" host=shop.herokuapp.com request_id=d7c85cc2-b289-4443-8c1d-2327066d6a3e fwd="37.73.223.49" dyno=web.1 connect=1ms service=18ms status=200 bytes=153 protocol=https"#;

/// Octet counting as Logplex frames syslog: the count covers the message.
fn counted(msg: &[u8]) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg);
    out
}

/// The syslog address the ingester logged.
async fn syslog_addr(ing: &Ingester, scheme: &str) -> SocketAddr {
    ing.logged_addr(&format!("syslog drains on {scheme}://"))
        .await
}

/// A self-signed certificate for `localhost` written as PEM files.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate certificate");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    (cert, key, certified.cert.der().clone())
}

fn connector(trusted: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("add root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("server name");
    connector(trusted).connect(name, tcp).await
}

/// Records whose `message` contains `needle`.
fn find<'a>(records: &'a [Json], needle: &str) -> Vec<&'a Json> {
    records
        .iter()
        .filter(|r| r["message"].as_str().is_some_and(|m| m.contains(needle)))
        .collect()
}

async fn wait_for_records(archive: &Path, n: usize) -> Vec<Json> {
    eventually(
        Duration::from_secs(30),
        &format!("{n} archived records"),
        || {
            let records = all_records(archive);
            (records.len() >= n).then_some(records)
        },
    )
    .await
}

#[tokio::test]
async fn tls_drain_is_archived_exactly_and_unknown_tokens_are_dropped() {
    let dirs = Dirs::new();
    let routes_path = dirs.root.path().join("routes.yaml");
    std::fs::write(&routes_path, routes()).expect("write routes");
    let (cert, key, der) = self_signed(dirs.root.path(), "server");
    let args = dirs.args(&[
        "--routes",
        &routes_path.display().to_string(),
        "--syslog-listen",
        "127.0.0.1:0",
        "--syslog-tls-cert",
        &cert.display().to_string(),
        "--syslog-tls-key",
        &key.display().to_string(),
        "--flush-interval",
        "1s",
    ]);
    let ing = Ingester::start(&args, &[]);
    let addr = syslog_addr(&ing, "tls").await;
    let mut tls = tls_connect(addr, &der).await.expect("TLS handshake");

    // Many frames in one write: routed by token, two dropped.
    let router =
        format!("<158>1 2026-06-17T12:00:01.515030+00:00 {TOKEN} heroku router - - {ROUTER}");
    let sd = format!(
        r#"<165>1 2026-06-17T12:00:02.003Z {TOKEN} app web.2 ID47 [exampleSDID@32473 iut="3" eventSource="App"] structured event"#
    );
    let mut write = Vec::new();
    for msg in [
        router.as_bytes().to_vec(),
        sd.into_bytes(),
        drain_line(BLOG_TOKEN, "worker.1", "blog line"),
        drain_line(UNKNOWN_TOKEN, "web.1", "nobody knows this token"),
        drain_line("-", "web.1", "no token at all"),
    ] {
        write.extend(counted(&msg));
    }
    tls.write_all(&write).await.expect("write");
    tls.flush().await.expect("flush");

    // One frame split across writes (and so across reads).
    let split = counted(&drain_line(TOKEN, "web.1", "split across two writes"));
    let (a, b) = split.split_at(split.len() / 3);
    tls.write_all(a).await.expect("write");
    tls.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    tls.write_all(b).await.expect("write");
    // Newline framing is accepted too.
    let mut nl = drain_line(TOKEN, "web.3", "newline framed");
    nl.push(b'\n');
    tls.write_all(&nl).await.expect("write");
    // A frame cut off by the connection going away.
    let cut = counted(&drain_line(TOKEN, "web.1", "this frame never ends"));
    tls.write_all(&cut[..cut.len() - 10]).await.expect("write");
    tls.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tls);

    wait_for_records(&dirs.archive(), 6).await;
    // Nothing more comes: the dropped frames stay dropped.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let records = all_records(&dirs.archive());
    assert_eq!(records.len(), 6, "{records:#?}");

    let r = find(&records, "method=GET")[0];
    let want = json!({
        "app": "shop",
        "log_ts": "2026-06-17T12:00:01.515030Z",
        "facility": 19,
        "severity": 6,
        "hostname": TOKEN,
        "source": "heroku",
        "proc_id": "router",
        "msg_id": null,
        "message": ROUTER,
        "message_b64": null,
        "drain_token": TOKEN,
        "frame_id": null,
        "kv": {},
        "at": "info",
        "code": null,
        "desc": null,
        "method": "GET",
        "path": "/orders?page=2",
        "host": "shop.herokuapp.com",
        "request_id": "d7c85cc2-b289-4443-8c1d-2327066d6a3e",
        "fwd": "37.73.223.49",
        "dyno": "web.1",
        "protocol": "https",
        "connect_ms": 1,
        "service_ms": 18,
        "status": 200,
        "bytes": 153,
        "l10_dropped": null,
        "parse_error": null,
        // The OTLP columns, empty on syslog records.
        "trace_id": null,
        "span_id": null,
        "severity_text": null,
        "attributes": {},
        "resource": {},
    });
    let mut got = r.clone();
    let received = got
        .as_object_mut()
        .expect("object")
        .remove("received_at")
        .expect("received_at");
    assert!(received.as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(got, want);

    // STRUCTURED-DATA is parsed as RFC 5424 says, not part of the message.
    let r = find(&records, "structured event")[0];
    assert_eq!(r["message"], "structured event");
    assert_eq!(r["msg_id"], "ID47");
    assert_eq!(r["proc_id"], "web.2");
    assert_eq!(r["log_ts"], "2026-06-17T12:00:02.003000Z");
    assert_eq!(r["parse_error"], Json::Null);

    let r = find(&records, "blog line")[0];
    assert_eq!(
        (r["app"].clone(), r["hostname"].clone()),
        (json!("blog"), json!(BLOG_TOKEN))
    );
    assert_eq!(r["proc_id"], "worker.1");

    for text in ["split across two writes", "newline framed"] {
        let r = find(&records, text);
        assert_eq!(r.len(), 1, "{text}");
        assert_eq!(r[0]["message"], text);
        assert_eq!(r[0]["app"], "shop");
        assert_eq!(r[0]["parse_error"], Json::Null);
    }

    // The cut frame is kept raw (without its count), flagged.
    let r = find(&records, "this frame")[0];
    assert_eq!(r["app"], "shop");
    assert_eq!(r["drain_token"], TOKEN);
    assert_eq!(
        r["parse_error"],
        "truncated frame: the stream ended mid-frame"
    );
    let whole =
        String::from_utf8(drain_line(TOKEN, "web.1", "this frame never ends")).expect("utf8");
    assert_eq!(r["message"], &whole[..whole.len() - 10]);

    assert!(find(&records, "nobody knows").is_empty());
    assert!(find(&records, "no token at all").is_empty());
    let c = client();
    let dropped =
        |reason: &str| format!("drainpipe_syslog_dropped_messages_total{{reason=\"{reason}\"}}");
    assert_eq!(metric(&c, &ing.base, &dropped("unknown_token")).await, 1.0);
    assert_eq!(metric(&c, &ing.base, &dropped("missing_token")).await, 1.0);
    assert_eq!(
        metric(&c, &ing.base, "drainpipe_syslog_messages_total").await,
        6.0
    );
    assert_eq!(
        metric(
            &c,
            &ing.base,
            "drainpipe_syslog_connections_total{result=\"accepted\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn plain_tcp_without_routes_names_the_app_by_hostname_and_keeps_long_frames() {
    let dirs = Dirs::new();
    let args = dirs.args(&[
        "--syslog-listen",
        "127.0.0.1:0",
        "--syslog-max-frame",
        "1KiB",
        "--flush-interval",
        "1s",
    ]);
    let ing = Ingester::start(&args, &[]);
    let addr = syslog_addr(&ing, "tcp").await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");

    let long_text = "x".repeat(2500);
    let long = drain_line("myapp", "web.1", &long_text);
    let mut write = counted(&drain_line("myapp", "web.1", "hello over tcp"));
    write.extend(counted(&drain_line(
        TOKEN,
        "web.1",
        "a token is no app name",
    )));
    write.extend(counted(&long));
    write.extend(counted(&drain_line(
        "other-app",
        "run.1",
        "after the long one",
    )));
    // Byte-sized writes for the first frame's count: a count split in reads.
    tcp.write_all(&write[..1]).await.expect("write");
    tcp.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(&write[1..]).await.expect("write");
    tcp.shutdown().await.expect("shutdown");

    // 1 + 3 parts of the long frame + 1.
    let records = wait_for_records(&dirs.archive(), 5).await;
    assert_eq!(records.len(), 5, "{records:#?}");
    let r = find(&records, "hello over tcp")[0];
    assert_eq!(
        (r["app"].clone(), r["hostname"].clone()),
        (json!("myapp"), json!("myapp"))
    );
    let r = find(&records, "after the long one")[0];
    assert_eq!(r["app"], "other-app");
    let mut parts: Vec<&Json> = records
        .iter()
        .filter(|r| !r["parse_error"].is_null())
        .collect();
    assert_eq!(parts.len(), 3);
    parts.sort_by_key(|r| !r["message"].as_str().expect("s").starts_with('<'));
    // The parts may sit in different objects; the header part first, the
    // rest (all `x`) in any order, they make the whole frame.
    let kept: String = parts
        .iter()
        .map(|r| r["message"].as_str().expect("s"))
        .collect();
    assert_eq!(kept.as_bytes(), &long[..]);
    for p in &parts {
        assert_eq!(p["app"], "myapp");
        assert_eq!(
            p["parse_error"],
            "frame over the maximum frame length: kept raw, in parts"
        );
    }
    let c = client();
    assert_eq!(
        metric(
            &c,
            &ing.base,
            "drainpipe_syslog_dropped_messages_total{reason=\"invalid_app_name\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn rotated_tls_certificates_are_picked_up() {
    let dirs = Dirs::new();
    let (cert, key, old) = self_signed(dirs.root.path(), "live");
    let args = dirs.args(&[
        "--syslog-listen",
        "127.0.0.1:0",
        "--syslog-tls-cert",
        &cert.display().to_string(),
        "--syslog-tls-key",
        &key.display().to_string(),
    ]);
    let ing = Ingester::start(&args, &[]);
    let addr = syslog_addr(&ing, "tls").await;
    tls_connect(addr, &old)
        .await
        .expect("handshake with the first certificate");

    // Rotate as a Secret update would: new files swapped in by rename.
    let (new_cert, new_key, new) = self_signed(dirs.root.path(), "next");
    std::fs::rename(&new_key, &key).expect("swap key");
    std::fs::rename(&new_cert, &cert).expect("swap cert");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tls_connect(addr, &new).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tls_connect(addr, &old).await.is_err(),
        "the old certificate is no longer served"
    );
    let c = client();
    assert!(
        metric(
            &c,
            &ing.base,
            "drainpipe_syslog_tls_reloads_total{result=\"ok\"}"
        )
        .await
            >= 1.0
    );
    assert!(!ing.logs().contains("BEGIN"), "no PEM material in the logs");
}

#[tokio::test]
async fn a_full_log_stops_reading_instead_of_dropping() {
    let dirs = Dirs::new();
    let args = dirs.args(&[
        "--syslog-listen",
        "127.0.0.1:0",
        "--wal-max-bytes",
        "2MiB",
        "--wal-segment-bytes",
        "1MiB",
        "--flush-interval",
        "100ms",
    ]);
    let mut ing = Ingester::start(&args, &[]);
    let addr = syslog_addr(&ing, "tcp").await;
    // The log has to hold everything and fills to its bound.
    dirs.block_archive();

    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (written, stop) = (Arc::clone(&written), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            let filler = "z".repeat(200);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut chunk = Vec::new();
                for _ in 0..100 {
                    chunk.extend(counted(&drain_line(
                        "shop",
                        "web.1",
                        &format!("msg {n} {filler}"),
                    )));
                    n += 1;
                }
                tcp.write_all(&chunk).await.expect("write");
                written.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            tcp.shutdown().await.expect("shutdown");
            n
        })
    };

    // The sender is held back: its writes stop completing once the log is
    // full and the socket buffers are.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = (0, std::time::Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = written.load(std::sync::atomic::Ordering::Relaxed);
        if now != last.0 {
            last = (now, std::time::Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) && dirs.wal_bytes() >= 2 << 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sender was never held back ({now} frames written, log {} bytes)\n{}",
            dirs.wal_bytes(),
            ing.logs()
        );
    }
    let c = client();
    let held_at = written.load(std::sync::atomic::Ordering::Relaxed);
    assert!(held_at > 5000, "held back after only {held_at} frames");
    assert!(metric(&c, &ing.base, "drainpipe_upload_errors_total").await >= 1.0);

    // The archive comes back: reading resumes and everything arrives.
    dirs.unblock_archive();
    eventually(Duration::from_secs(60), "the sender to move again", || {
        (written.load(std::sync::atomic::Ordering::Relaxed) > held_at + 1000).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = writer.await.expect("writer");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(&c, &ing.base, "drainpipe_syslog_messages_total").await < total as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "not all frames stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = c
        .get(format!("{}/metrics", ing.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("drainpipe_syslog_dropped_messages_total{")),
        "nothing dropped:\n{text}"
    );
    assert!(ing.terminate(Duration::from_secs(60)).success());
    let records = all_records(&dirs.archive());
    let mut seen = vec![false; total as usize];
    for r in &records {
        let m = r["message"].as_str().expect("message");
        let i: usize = m
            .split(' ')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("numbered");
        seen[i] = true;
    }
    let missing = seen.iter().filter(|s| !**s).count();
    assert_eq!(missing, 0, "{missing} of {total} frames lost");
}

/// Connect to `addr` from the loopback address `from` (any 127.x works).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// Whether the ingester closed the connection within `within` (it never
/// writes to syslog peers, so a read returns only when it closes).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(within, tcp.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("the ingester wrote {n} bytes to a syslog peer"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn connection_limits_and_idle_timeout_hold() {
    let dirs = Dirs::new();
    let args = dirs.args(&[
        "--syslog-listen",
        "127.0.0.1:0",
        "--syslog-max-connections",
        "3",
        "--syslog-max-connections-per-peer",
        "2",
        "--syslog-idle-timeout",
        "2s",
        "--flush-interval",
        "1s",
    ]);
    let ing = Ingester::start(&args, &[]);
    let addr = syslog_addr(&ing, "tcp").await;
    let c = client();

    let mut a1 = connect_from("127.0.0.1", addr).await;
    let mut a2 = connect_from("127.0.0.1", addr).await;
    let mut a3 = connect_from("127.0.0.1", addr).await;
    assert!(
        closed_within(&mut a3, Duration::from_secs(2)).await,
        "a third connection from one address is refused"
    );
    let mut b1 = connect_from("127.0.0.2", addr).await;
    let mut c1 = connect_from("127.0.0.3", addr).await;
    assert!(
        closed_within(&mut c1, Duration::from_secs(2)).await,
        "a fourth connection overall is refused"
    );
    let result = |r: &str| format!("drainpipe_syslog_connections_total{{result=\"{r}\"}}");
    assert_eq!(metric(&c, &ing.base, &result("over_peer_limit")).await, 1.0);
    assert_eq!(metric(&c, &ing.base, &result("over_limit")).await, 1.0);
    assert_eq!(metric(&c, &ing.base, &result("accepted")).await, 3.0);
    assert_eq!(
        metric(&c, &ing.base, "drainpipe_syslog_open_connections").await,
        3.0
    );

    // Idle: a1 keeps sending complete frames, a2 trickles one frame byte by
    // byte without finishing it, b1 says nothing. Only a1 stays open.
    let trickle = counted(&drain_line("myapp", "web.1", "never finished"));
    // The header (with the token) at once, then a byte every 100 ms.
    let mut i = 60;
    a2.write_all(&trickle[..i]).await.expect("write");
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        a1.write_all(&counted(&drain_line(
            "myapp",
            "web.1",
            &format!("alive {i}"),
        )))
        .await
        .expect("a1 stays open");
        if i < trickle.len() - 1 {
            let _ = a2.write_all(&trickle[i..=i]).await;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed_within(&mut a2, Duration::from_secs(1)).await,
        "trickling peer closed"
    );
    assert!(
        closed_within(&mut b1, Duration::from_secs(1)).await,
        "silent peer closed"
    );
    assert!(
        !closed_within(&mut a1, Duration::from_millis(300)).await,
        "busy peer kept"
    );
    assert_eq!(
        metric(
            &c,
            &ing.base,
            "drainpipe_syslog_disconnects_total{reason=\"idle_timeout\"}"
        )
        .await,
        2.0
    );
    // What the trickling peer sent is kept raw, not lost.
    let records = eventually(Duration::from_secs(30), "the trickled frame", || {
        let records = all_records(&dirs.archive());
        records
            .iter()
            .any(|r| !r["parse_error"].is_null())
            .then_some(records)
    })
    .await;
    let cut: Vec<&Json> = records
        .iter()
        .filter(|r| !r["parse_error"].is_null())
        .collect();
    assert_eq!(cut.len(), 1);
    assert_eq!(
        cut[0]["parse_error"],
        "truncated frame: the stream ended mid-frame"
    );
    assert_eq!(cut[0]["app"], "myapp");
    assert!(!find(&records, "alive 60").is_empty());
}

#[tokio::test]
async fn sigterm_with_open_connections_archives_what_was_read() {
    let dirs = Dirs::new();
    let args = dirs.args(&["--syslog-listen", "127.0.0.1:0"]);
    let mut ing = Ingester::start(&args, &[]);
    let addr = syslog_addr(&ing, "tcp").await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut write = Vec::new();
    for i in 0..3 {
        write.extend(counted(&drain_line(
            "myapp",
            "web.1",
            &format!("before the end {i}"),
        )));
    }
    let partial = counted(&drain_line("myapp", "web.1", "half a frame"));
    write.extend_from_slice(&partial[..partial.len() - 5]);
    tcp.write_all(&write).await.expect("write");
    let c = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&c, &ing.base, "drainpipe_syslog_messages_total").await < 3.0 {
        assert!(std::time::Instant::now() < deadline, "frames not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection stays open: shutdown must not wait for it to end.
    let started = std::time::Instant::now();
    assert!(ing.terminate(Duration::from_secs(30)).success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited for the open connection"
    );
    let records = all_records(&dirs.archive());
    assert_eq!(records.len(), 4, "{records:#?}");
    for i in 0..3 {
        assert_eq!(find(&records, &format!("before the end {i}")).len(), 1);
    }
    let r = find(&records, "- - half a")[0];
    assert_eq!(
        r["parse_error"],
        "truncated frame: the stream ended mid-frame"
    );
    assert_eq!(
        dirs.wal_bytes(),
        0,
        "the log is empty after a clean shutdown"
    );
    drop(tcp);
}

#[tokio::test]
async fn ack_archive_stores_each_read_before_reading_on() {
    // With `--ack archive` there is no log: what a connection read is in
    // the archive before the next read, long before any flush interval.
    let dirs = Dirs::new();
    let routes_path = dirs.root.path().join("routes.yaml");
    std::fs::write(&routes_path, routes()).expect("write routes");
    let args = dirs.args(&[
        "--routes",
        &routes_path.display().to_string(),
        "--ack",
        "archive",
        "--syslog-listen",
        "127.0.0.1:0",
        "--flush-interval",
        "10m",
    ]);
    let ing = Ingester::start(&args, &[]);
    let addr = syslog_addr(&ing, "tcp").await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");

    let mut write = Vec::new();
    for (token, text) in [
        (TOKEN, "archived one"),
        (BLOG_TOKEN, "archived two"),
        (TOKEN, "archived three"),
    ] {
        write.extend(counted(&drain_line(token, "web.1", text)));
    }
    tcp.write_all(&write).await.expect("write");
    tcp.flush().await.expect("flush");

    // The connection stays open and the ingester keeps running.
    let records = wait_for_records(&dirs.archive(), 3).await;
    assert_eq!(records.len(), 3, "{records:#?}");
    for (text, app, token) in [
        ("archived one", "shop", TOKEN),
        ("archived two", "blog", BLOG_TOKEN),
        ("archived three", "shop", TOKEN),
    ] {
        let r = find(&records, text);
        assert_eq!(r.len(), 1, "{text}: {records:#?}");
        assert_eq!(
            (r[0]["app"].as_str(), r[0]["hostname"].as_str()),
            (Some(app), Some(token))
        );
    }
}
