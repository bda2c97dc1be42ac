//! The ingester started in-process with `drainpipe_ingester::run`: the
//! addresses come from its return value, not from its log lines.

mod common;

use std::time::Duration;

use clap::Parser as _;
use common::*;
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

use drainpipe_ingester::config::Config;

fn config(dirs: &Dirs, extra: &[&str]) -> Config {
    let mut args = vec!["drainpipe-ingester".to_owned()];
    args.extend(dirs.args(&["--listen", "127.0.0.1:0"]));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let config = Config::try_parse_from(args).expect("flags");
    config.validate().expect("valid flags");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_the_bound_addresses_and_archives_everything_on_shutdown() {
    let dirs = Dirs::new();
    let shutdown = CancellationToken::new();
    let running = drainpipe_ingester::run(
        config(
            &dirs,
            &["--syslog-listen", "127.0.0.1:0", "--flush-interval", "1h"],
        ),
        shutdown.clone(),
    )
    .await
    .expect("start");
    let syslog = running.syslog.expect("a syslog address");
    assert_ne!(running.http.port(), 0, "the bound port, not the flag's 0");
    assert_ne!(syslog.port(), 0);

    let base = format!("http://{}", running.http);
    let client = client();
    let ready = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("ready probe");
    assert_eq!(ready.status(), 200);
    let res = post(
        &client,
        &base,
        "shop",
        None,
        Some("F1"),
        &[app_line("over http")],
    )
    .await;
    assert_eq!(res.status(), 200);

    let mut tcp = tokio::net::TcpStream::connect(syslog)
        .await
        .expect("connect");
    tcp.write_all(&frame(
        b"<190>1 2026-06-17T12:00:00+00:00 shop app web.1 - - over syslog",
    ))
    .await
    .expect("write");
    tcp.shutdown().await.expect("close");
    drop(tcp);
    // Read and counted by the server before shutdown is asked for.
    for _ in 0..200 {
        if metric(&client, &base, "drainpipe_syslog_messages_total").await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&client, &base, "drainpipe_syslog_messages_total").await,
        1.0
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("stops within 30 s")
        .expect("clean stop");
    let messages: Vec<String> = all_records(&dirs.archive())
        .iter()
        .filter_map(|r| r["message"].as_str().map(str::to_owned))
        .collect();
    assert!(messages.iter().any(|m| m == "over http"), "{messages:?}");
    assert!(messages.iter().any(|m| m == "over syslog"), "{messages:?}");
}

#[tokio::test]
async fn run_fails_on_a_bad_archive_before_accepting_anything() {
    let dirs = Dirs::new();
    let mut config = config(&dirs, &[]);
    config.archive = "ftp://nowhere".to_owned();
    let err = drainpipe_ingester::run(config, CancellationToken::new())
        .await
        .expect_err("an unknown archive scheme");
    assert!(
        err.to_string().starts_with("--archive ftp://nowhere"),
        "{err}"
    );
}
