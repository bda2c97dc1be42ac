//! Routes file reloads (as a mounted Secret updates) and dedupe of retried
//! frames.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// Write `text` the way the kubelet updates a mounted Secret: a new
/// timestamped directory, then an atomic swap of the `..data` symlink.
fn publish_secret(dir: &Path, version: u32, text: &str) {
    let versioned = dir.join(format!("..2026_06_17_{version:02}"));
    std::fs::create_dir_all(&versioned).expect("mkdir");
    std::fs::write(versioned.join("routes.yaml"), text).expect("write");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(versioned.file_name().expect("name"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap");
    let link = dir.join("routes.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/routes.yaml", &link).expect("symlink");
    }
}

async fn status(c: &reqwest::Client, base: &str, app: &str, pw: &str) -> u16 {
    post(c, base, app, Some(pw), None, &[app_line("x")])
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn routes_reload_when_the_mounted_secret_changes() {
    let dirs = Dirs::new();
    let secret = dirs.root.path().join("secret");
    std::fs::create_dir_all(&secret).expect("mkdir");
    publish_secret(&secret, 1, "apps:\n  shop:\n    password: old-pw\n");
    let routes = secret.join("routes.yaml").display().to_string();
    let mut ing = Ingester::start(&dirs.args(&["--routes", &routes]), &[]);
    let c = client();
    let base = ing.base.clone();
    assert_eq!(status(&c, &base, "shop", "old-pw").await, 200);
    assert_eq!(status(&c, &base, "blog", "blog-pw").await, 404);

    publish_secret(
        &secret,
        2,
        "apps:\n  shop:\n    password: new-pw\n  blog:\n    password: blog-pw\n",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status(&c, &base, "shop", "new-pw").await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "new routes never loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&c, &base, "shop", "old-pw").await, 401);
    assert_eq!(status(&c, &base, "blog", "blog-pw").await, 200);

    // A broken file is refused; the last good routes stay in force.
    publish_secret(&secret, 3, "apps:\n  shop:\n    pasword: typo\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(
        &c,
        &base,
        "drainpipe_routes_reloads_total{result=\"error\"}",
    )
    .await
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken routes file was never read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&c, &base, "shop", "new-pw").await, 200);

    // Removing an app: 404 from then on.
    publish_secret(&secret, 4, "apps:\n  shop:\n    password: new-pw\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status(&c, &base, "blog", "blog-pw").await != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "app removal never loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ing.terminate(Duration::from_secs(30)).success());
    let logs = ing.logs();
    for secret in ["old-pw", "new-pw", "blog-pw", "typo"] {
        assert!(!logs.contains(secret), "{secret} in logs:\n{logs}");
    }
}

#[tokio::test]
async fn a_retried_frame_is_acknowledged_but_stored_once() {
    let dirs = Dirs::new();
    let mut ing = Ingester::start(&dirs.args(&["--flush-interval", "1h"]), &[]);
    let c = client();
    let msgs = vec![app_line("only once"), app_line("me too")];
    for _ in 0..3 {
        let r = post(&c, &ing.base, "shop", None, Some("RETRIED"), &msgs).await;
        assert_eq!(r.status(), 200);
    }
    // Concurrent retries of a frame in flight are not stored twice either.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            let base = ing.base.clone();
            let msgs = msgs.clone();
            tokio::spawn(async move {
                post(&c, &base, "shop", None, Some("CONCURRENT"), &msgs)
                    .await
                    .status()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("join"), 200);
    }
    // A different frame id is new data.
    let r = post(&c, &ing.base, "shop", None, Some("OTHER"), &msgs).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        metric(&c, &ing.base, "drainpipe_duplicate_frames_total").await,
        9.0
    );
    assert!(ing.terminate(Duration::from_secs(30)).success());
    let records = all_records(&dirs.archive());
    let count = |f: &str| records.iter().filter(|r| r["frame_id"] == f).count();
    assert_eq!(count("RETRIED"), 2);
    assert_eq!(count("CONCURRENT"), 2);
    assert_eq!(count("OTHER"), 2);
}

#[tokio::test]
async fn a_retry_after_a_restart_is_not_stored_twice() {
    // Logplex retries when the ingester died between fsync and response; the
    // frame is then in the log, and the restarted ingester must know it.
    let dirs = Dirs::new();
    let args = dirs.args(&["--flush-interval", "1h"]);
    let mut ing = Ingester::start(&args, &[]);
    let c = client();
    let msgs = vec![app_line("before the crash")];
    assert_eq!(
        post(&c, &ing.base, "shop", None, Some("F-CRASH"), &msgs)
            .await
            .status(),
        200
    );
    ing.kill9();
    let mut ing = Ingester::start(&args, &[]);
    assert_eq!(
        post(&c, &ing.base, "shop", None, Some("F-CRASH"), &msgs)
            .await
            .status(),
        200
    );
    assert!(ing.terminate(Duration::from_secs(30)).success());
    let records = all_records(&dirs.archive());
    assert_eq!(
        records
            .iter()
            .filter(|r| r["frame_id"] == "F-CRASH")
            .count(),
        1
    );
}
