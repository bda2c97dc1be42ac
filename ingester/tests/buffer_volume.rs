//! The write-ahead log on a volume that outlives the process (a
//! StatefulSet's claim): an ingester killed with SIGKILL while holding
//! acknowledged data leaves it on the volume, and either the ingester started
//! again on it (a rescheduled pod) or `--flush-and-exit` (the operator's
//! flush Job on a released claim) archives every acknowledged message. And
//! the graceful stop: on SIGTERM `/readyz` turns 503 at once while
//! `/healthz` stays 200, and the process exits only once the log is empty.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const REQUESTS: usize = 40;
const MSGS: usize = 20;

/// Flags that keep everything acknowledged in the log and nothing in the
/// archive until the process stops: objects close only after an hour.
fn holding(dirs: &Dirs) -> Vec<String> {
    dirs.args(&["--flush-interval", "1h", "--wal-segment-bytes", "1MiB"])
}

fn text(request: usize, msg: usize) -> String {
    format!("request {request} msg {msg} {}", "v".repeat(200))
}

/// Posts `n` Logplex requests; returns the texts of the acknowledged ones.
async fn send_acknowledged(base: &str, first: usize, n: usize) -> BTreeSet<String> {
    let c = client();
    let mut acked = BTreeSet::new();
    for r in first..first + n {
        let msgs: Vec<String> = (0..MSGS).map(|m| text(r, m)).collect();
        let lines: Vec<Vec<u8>> = msgs.iter().map(|m| app_line(m)).collect();
        let res = post(&c, base, "shop", None, Some(&format!("F{r}")), &lines).await;
        assert_eq!(res.status(), 200, "request {r}");
        acked.extend(msgs);
    }
    acked
}

fn archived(dirs: &Dirs) -> BTreeSet<String> {
    all_records(&dirs.archive())
        .iter()
        .filter_map(|r| r["message"].as_str().map(str::to_owned))
        .collect()
}

fn assert_all_archived(dirs: &Dirs, acked: &BTreeSet<String>) {
    let seen = archived(dirs);
    let missing: Vec<&String> = acked.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages not archived, e.g. {:?}",
        missing.len(),
        acked.len(),
        missing.first()
    );
}

/// Runs `drainpipe-ingester --flush-and-exit` on `dirs` to completion;
/// `extra` flags come last (a second `--archive` replaces the folder).
fn flush_and_exit(dirs: &Dirs, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    flush_command(dirs, extra, envs)
        .output()
        .expect("run --flush-and-exit")
}

/// The `drainpipe-ingester --flush-and-exit` command of [`flush_and_exit`].
fn flush_command(dirs: &Dirs, extra: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut args = vec![
        "--flush-and-exit".to_owned(),
        "--data-dir".to_owned(),
        dirs.data().display().to_string(),
    ];
    if !extra.contains(&"--archive") {
        args.push("--archive".to_owned());
        args.push(format!("file://{}", dirs.archive().display()));
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drainpipe-ingester"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DRAINPIPE_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd.args(&args);
    cmd
}

/// An S3 archive whose endpoint refuses every connection: an outage that
/// begins after start-up, as far as the uploader can tell.
const UNREACHABLE_S3: &[(&str, &str)] = &[
    ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_ACCESS_KEY_ID", "drainpipe-test"),
    ("AWS_SECRET_ACCESS_KEY", "drainpipe-test-secret"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_on_the_same_volume_after_kill_9_archives_every_acknowledged_message() {
    let dirs = Dirs::new();
    let mut ing = Ingester::start(&holding(&dirs), &[]);
    let acked = send_acknowledged(&ing.base, 0, REQUESTS).await;
    ing.kill9();
    assert!(
        archived(&dirs).is_empty(),
        "the test needs the acknowledged data to be only in the log when the process dies"
    );
    assert!(dirs.wal_bytes() > 0, "the log holds what was acknowledged");

    // The rescheduled pod: the same volume, a new process.
    let mut again = Ingester::start(&holding(&dirs), &[]);
    let status = again.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}; logs:\n{}", again.logs());
    assert_all_archived(&dirs, &acked);
    assert_eq!(dirs.wal_bytes(), 0, "nothing left on the volume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_and_exit_empties_a_volume_left_by_kill_9_and_fails_while_the_archive_is_down_or_on_sigterm()
 {
    let dirs = Dirs::new();
    let mut ing = Ingester::start(&holding(&dirs), &[]);
    let acked = send_acknowledged(&ing.base, 0, REQUESTS).await;
    ing.kill9();
    let held = dirs.wal_bytes();
    assert!(held > 0);

    // Archive down: non-zero exit within the timeout, the log untouched.
    let started = Instant::now();
    let out = flush_and_exit(
        &dirs,
        &["--flush-timeout", "2s", "--archive", "s3://logs/x/"],
        UNREACHABLE_S3,
    );
    assert!(
        !out.status.success(),
        "--flush-and-exit must fail while the archive refuses writes"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("still holds"), "{stderr}");
    assert!(
        dirs.wal_bytes() >= held,
        "a failed flush must leave the log in place"
    );

    // Stopped by SIGTERM mid-flush (the Job's pod evicted): a non-zero exit
    // that says why, not death by the signal, and the log untouched.
    let log_path = dirs.root.path().join("flush-sigterm.log");
    let log = File::create(&log_path).expect("flush log");
    let mut child = flush_command(
        &dirs,
        &["--flush-timeout", "5m", "--archive", "s3://logs/x/"],
        UNREACHABLE_S3,
    )
    .stdout(log.try_clone().expect("flush log"))
    .stderr(log)
    .spawn()
    .expect("spawn --flush-and-exit");
    let printed = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Logged once the signal handlers are in place and the upload began.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !printed().contains("flushing the write-ahead log") {
        assert!(
            Instant::now() < deadline,
            "--flush-and-exit did not start within 30 s:\n{}",
            printed()
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "--flush-and-exit exited early:\n{}",
            printed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm(child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("--flush-and-exit ignored SIGTERM for 20 s:\n{}", printed());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(1),
        "{status}: a stopped flush exits 1 (not by the signal):\n{}",
        printed()
    );
    assert!(printed().contains("stopped by a signal"), "{}", printed());
    assert!(
        dirs.wal_bytes() >= held,
        "a stopped flush must leave the log in place"
    );

    let out = flush_and_exit(&dirs, &[], &[]);
    assert!(
        out.status.success(),
        "--flush-and-exit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_archived(&dirs, &acked);
    assert_eq!(dirs.wal_bytes(), 0, "exit 0 means the log is empty");

    // Nothing left: a second run has nothing to do and still succeeds.
    let out = flush_and_exit(&dirs, &[], &[]);
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_withdraws_readiness_first_and_exits_with_the_log_uploaded() {
    let dirs = Dirs::new();
    let mut args = holding(&dirs);
    args.extend(["--shutdown-delay".to_owned(), "4s".to_owned()]);
    let mut ing = Ingester::start(&args, &[]);
    let c = client();
    let status = |path: &'static str| {
        let c = c.clone();
        let base = ing.base.clone();
        async move {
            c.get(format!("{base}{path}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    };
    assert_eq!(status("/readyz").await, Some(200));
    let mut acked = send_acknowledged(&ing.base, 0, REQUESTS).await;

    let sent = Instant::now();
    sigterm(ing.pid());
    // Readiness goes first: well within the delay, the process still
    // answers, unready but alive.
    loop {
        match status("/readyz").await {
            Some(503) => break,
            Some(200) => {}
            other => panic!("/readyz answered {other:?} during the shutdown delay"),
        }
        assert!(
            // Half the delay: room for a loaded machine, and still long
            // before the listeners close.
            sent.elapsed() < Duration::from_secs(2),
            "/readyz still 200 two seconds after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status("/healthz").await, Some(200), "liveness stays OK");
    // What is already on its way is still taken and acknowledged.
    // A few, so they fit in the delay even on a loaded machine.
    acked.extend(send_acknowledged(&ing.base, REQUESTS, 5).await);

    assert!(ing.wait(Duration::from_secs(60)).success());
    assert!(
        sent.elapsed() >= Duration::from_secs(4),
        "the listeners stayed open for the delay"
    );
    let logs = ing.logs();
    let unready = logs.find("/readyz answers 503").expect("delay logged");
    let flushed = logs
        .find("everything is in the archive")
        .expect("flush logged");
    assert!(unready < flushed, "readiness is withdrawn before the flush");
    assert_all_archived(&dirs, &acked);
    assert_eq!(
        dirs.wal_bytes(),
        0,
        "the log is empty when the process exits"
    );
}

/// A SIGTERM that arrives right after the listeners open (a pod deleted as
/// it starts) is a graceful stop too: the signal handlers are installed
/// before the ingester starts, so the default action (exit at once, by the
/// signal) never applies. Before they were, this failed now and then.
#[test]
fn sigterm_right_after_start_up_is_a_graceful_stop() {
    let dirs = Dirs::new();
    for _ in 0..20 {
        let mut ing = Ingester::start(&holding(&dirs), &[]);
        let status = ing.terminate(Duration::from_secs(30));
        assert!(status.success(), "{status}; logs:\n{}", ing.logs());
    }
}
