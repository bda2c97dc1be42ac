//! Every status code of the HTTP contract (`docs/architecture.md`, Data path),
//! against the real binary.

mod common;

use std::time::Duration;

use common::*;

const ROUTES: &str = "apps:
  shop:
    password: s3cr3t-pw
    drainTokens: [d.01234567-89ab-cdef-0123-456789abcdef]
  blog:
    password: other-pw
";

fn with_routes(dirs: &Dirs, extra: &[&str]) -> Vec<String> {
    let routes = dirs.root.path().join("routes.yaml");
    std::fs::write(&routes, ROUTES).expect("write routes");
    let routes = routes.display().to_string();
    let mut args = vec!["--routes", routes.as_str()];
    args.extend_from_slice(extra);
    dirs.args(&args)
}

#[tokio::test]
async fn status_codes_follow_the_contract() {
    let dirs = Dirs::new();
    let mut ing = Ingester::start(&with_routes(&dirs, &["--max-body", "64KiB"]), &[]);
    let c = client();
    let base = ing.base.clone();
    let msgs = vec![app_line("hello")];

    // 200: no body, Content-Length: 0.
    let r = post(&c, &base, "shop", Some("s3cr3t-pw"), Some("F1"), &msgs).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "0");
    assert_eq!(r.bytes().await.expect("body").len(), 0);

    // The password also works as ?token=.
    let r = c
        .post(format!("{base}/logplex/shop?token=s3cr3t-pw"))
        .header("Logplex-Drain-Token", TOKEN)
        .body(body(&msgs))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);

    // 401: missing, wrong, another app's password, wrong ?token=.
    assert_eq!(
        post(&c, &base, "shop", None, None, &msgs).await.status(),
        401
    );
    assert_eq!(
        post(&c, &base, "shop", Some("nope"), None, &msgs)
            .await
            .status(),
        401
    );
    assert_eq!(
        post(&c, &base, "shop", Some("other-pw"), None, &msgs)
            .await
            .status(),
        401
    );
    let r = c
        .post(format!("{base}/logplex/shop?token=s3cr3t"))
        .body(body(&msgs))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));

    // 403: a drain token this app does not know.
    let r = c
        .post(format!("{base}/logplex/shop"))
        .basic_auth("u", Some("s3cr3t-pw"))
        .header(
            "Logplex-Drain-Token",
            "d.99999999-89ab-cdef-0123-456789abcdef",
        )
        .body(body(&msgs))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);

    // 404: unknown app, unsafe app names, unknown paths.
    assert_eq!(
        post(&c, &base, "unknown-app", Some("s3cr3t-pw"), None, &msgs)
            .await
            .status(),
        404
    );
    assert_eq!(
        post(&c, &base, "a.b", Some("s3cr3t-pw"), None, &msgs)
            .await
            .status(),
        404
    );
    let r = c
        .post(format!("{base}/elsewhere"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);

    // 405: wrong methods.
    let r = c
        .get(format!("{base}/logplex/shop"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = c
        .post(format!("{base}/metrics"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 405);

    // 413: by Content-Length, and by a chunked body that grows past the limit.
    let big = vec![app_line(&"x".repeat(70 * 1024))];
    assert_eq!(
        post(&c, &base, "shop", Some("s3cr3t-pw"), None, &big)
            .await
            .status(),
        413
    );
    assert_eq!(chunked_post_status(ing.addr, 20, 8 * 1024).await, 413);
    assert_eq!(chunked_post_status(ing.addr, 2, 8 * 1024).await, 200);

    // Never a 4xx for content: garbage, a wrong count, invalid UTF-8.
    for garbage in [
        b"this is not octet counted at all".to_vec(),
        b"999 <13>1 truncated".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        Vec::new(),
    ] {
        let r = c
            .post(format!("{base}/logplex/shop"))
            .basic_auth("u", Some("s3cr3t-pw"))
            .header("Logplex-Msg-Count", "7")
            .body(garbage)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
    }

    // Operations endpoints.
    let r = c.get(format!("{base}/healthz")).send().await.expect("send");
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{base}/readyz")).send().await.expect("send");
    assert_eq!(r.status(), 200);
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    for needle in [
        "drainpipe_http_requests_total{status=\"200\"} 7",
        "drainpipe_http_requests_total{status=\"401\"} 4",
        "drainpipe_http_requests_total{status=\"403\"} 1",
        "drainpipe_http_requests_total{status=\"404\"} 2",
        "drainpipe_ack_latency_seconds_count 7",
        "drainpipe_wal_bytes",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Secrets never show up in the process output.
    assert!(ing.terminate(Duration::from_secs(20)).success());
    let logs = ing.logs();
    assert!(!logs.contains("s3cr3t"), "password in logs:\n{logs}");

    // Garbage is archived, not dropped: whole frames with parse_error.
    let records = all_records(&dirs.archive());
    assert!(records.iter().any(|r| r["parse_error"].is_string()));
    assert!(records.iter().any(|r| {
        r["message"] == "this is not octet counted at all"
            || r["message"]
                .as_str()
                .is_some_and(|m| m.contains("this is not octet counted"))
    }));
    assert!(records.iter().any(|r| r["message_b64"].is_string()));
}

#[tokio::test]
async fn past_the_log_bound_it_answers_503_then_catches_up() {
    let dirs = Dirs::new();
    let args = dirs.args(&[
        "--wal-max-bytes",
        "2MiB",
        "--wal-segment-bytes",
        "1MiB",
        "--flush-interval",
        "100ms",
    ]);
    let mut ing = Ingester::start(&args, &[]);
    dirs.block_archive();
    let c = client();
    let filler = "z".repeat(200);
    let mut acked = Vec::new();
    let mut got_503 = false;
    for i in 0..200 {
        let msgs: Vec<Vec<u8>> = (0..100)
            .map(|m| app_line(&format!("req {i} msg {m} {filler}")))
            .collect();
        let r = post(&c, &ing.base, "shop", None, Some(&format!("F{i}")), &msgs).await;
        match r.status().as_u16() {
            200 => acked.push(i),
            503 => {
                assert!(
                    r.headers().contains_key("retry-after"),
                    "503 without Retry-After"
                );
                got_503 = true;
                break;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(got_503, "the log bound was never reached");
    assert!(
        acked.len() >= 5,
        "too few requests before the bound: {}",
        acked.len()
    );
    let r = c
        .get(format!("{}/readyz", ing.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 503, "not ready while the log is full");
    let r = c
        .get(format!("{}/healthz", ing.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "still alive");
    assert!(metric(&c, &ing.base, "drainpipe_upload_errors_total").await >= 1.0);

    // The archive comes back: the log drains and requests are accepted again.
    dirs.unblock_archive();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msgs = vec![app_line("after the outage")];
        let r = post(&c, &ing.base, "shop", None, Some("AFTER"), &msgs).await;
        if r.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no catch-up:\n{}",
            ing.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ing.terminate(Duration::from_secs(60)).success());
    let records = all_records(&dirs.archive());
    assert!(records.iter().any(|r| r["frame_id"] == "AFTER"));
    for i in &acked {
        let n = records
            .iter()
            .filter(|r| r["frame_id"] == format!("F{i}").as_str())
            .count();
        assert_eq!(n, 100, "request {i}: {n} of 100 records archived");
    }
    assert_eq!(
        dirs.wal_bytes(),
        0,
        "the log is empty after a clean shutdown"
    );
}

#[tokio::test]
async fn without_routes_it_refuses_non_loopback_addresses() {
    let dirs = Dirs::new();
    let mut args = dirs.args(&[]);
    args.splice(0..0, ["--listen".to_owned(), "0.0.0.0:0".to_owned()]);
    let err = match Ingester::try_start(&args, &[]) {
        Ok(_) => panic!("started on 0.0.0.0 without routes"),
        Err(out) => out,
    };
    assert!(err.contains("loopback"), "{err}");
}

/// POST a chunked body (no Content-Length) of `n` chunks, return the status.
async fn chunked_post_status(addr: std::net::SocketAddr, n: usize, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = "dTpzM2NyM3QtcHc="; // base64("u:s3cr3t-pw")
    let head = format!(
        "POST /logplex/shop HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    for _ in 0..n {
        let chunk = format!("{size:x}\r\n{}\r\n", "y".repeat(size));
        // The server may answer and close before everything is sent.
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"))
}

/// One response's head, read off a keep-alive connection (the 200s here carry no body).
async fn response_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.expect("read the response");
        assert_eq!(n, 1, "connection closed mid-response: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

/// `--max-connection-age`: a keep-alive connection is closed after the first response once it
/// is that old (`Connection: close`), so a sender reconnects and a Service spreads it over pods
/// started since; younger connections stay open.
#[tokio::test]
async fn an_old_keep_alive_connection_is_closed_after_its_response() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dirs = Dirs::new();
    let ing = Ingester::start(&with_routes(&dirs, &["--max-connection-age", "1s"]), &[]);
    let addr = ing.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("user:s3cr3t-pw")
    };
    let request = |id: &str| {
        let body = body(&[app_line(&format!("keep-alive {id}"))]);
        let mut r = format!(
            "POST /logplex/shop HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nLogplex-Drain-Token: {TOKEN}\r\nLogplex-Msg-Count: 1\r\nLogplex-Frame-Id: {id}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(&body);
        r
    };
    s.write_all(&request("A1")).await.expect("first request");
    let first = response_head(&mut s).await;
    assert!(first.starts_with("http/1.1 200"), "{first}");
    assert!(
        !first.contains("connection: close"),
        "a young connection stays open: {first}"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.write_all(&request("A2"))
        .await
        .expect("second request on the same connection");
    let second = response_head(&mut s).await;
    assert!(
        second.starts_with("http/1.1 200"),
        "still acknowledged: {second}"
    );
    assert!(second.contains("connection: close"), "{second}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .expect("read");
    assert_eq!(n, 0, "nothing after the last response");
}
