//! Crash safety: several drains send, the ingester is killed with SIGKILL
//! mid-stream and restarted on the same data dir; every message that got a
//! 200 must be in the archive. Duplicates are allowed (at-least-once) and
//! reported.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const DRAINS: usize = 6;
const MSGS: usize = 50;

fn frame_msgs(drain: usize, frame: usize) -> Vec<Vec<u8>> {
    (0..MSGS)
        .map(|m| {
            app_line(&format!(
                "drain {drain} frame {frame} msg {m} {}",
                "q".repeat(300)
            ))
        })
        .collect()
}

/// Two apps, so objects of one are stored while the other's are open.
fn app(drain: usize) -> &'static str {
    if drain.is_multiple_of(2) {
        "shop"
    } else {
        "blog"
    }
}

#[derive(Default)]
struct Drain {
    acked: Vec<usize>,
    /// Sent, no 200 seen (Logplex retries it).
    pending: Option<usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_loses_nothing_acknowledged() {
    let dirs = Dirs::new();
    let args = dirs.args(&["--flush-interval", "300ms", "--wal-segment-bytes", "1MiB"]);
    let ing = Ingester::start(&args, &[]);
    let base = ing.base.clone();
    let drains: Vec<Arc<Mutex<Drain>>> = (0..DRAINS).map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (d, state) in drains.iter().enumerate() {
        let state = Arc::clone(state);
        let base = base.clone();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut frame = 0;
            // One request in flight per drain, as Logplex does.
            while !stop.load(Ordering::Relaxed) {
                state.lock().expect("lock").pending = Some(frame);
                let id = format!("D{d}-F{frame}");
                let r = c
                    .post(format!("{base}/logplex/{}", app(d)))
                    .header("Logplex-Drain-Token", format!("d.drain-{d}"))
                    .header("Logplex-Frame-Id", &id)
                    .header("Logplex-Msg-Count", MSGS.to_string())
                    .body(body(&frame_msgs(d, frame)))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let mut s = state.lock().expect("lock");
                        s.acked.push(frame);
                        s.pending = None;
                        frame += 1;
                    }
                    Ok(r) if r.status() == 503 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    // The ingester is gone.
                    Err(_) => return,
                }
            }
        }));
    }
    // Let some objects be closed and segments deleted before the crash.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ing = ing;
    ing.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("drain task");
    }

    let mut ing = Ingester::start(&args, &[]);
    // Logplex retries what got no answer, with the same frame id.
    let c = client();
    let mut retried = 0;
    for (d, state) in drains.iter().enumerate() {
        let pending = state.lock().expect("lock").pending;
        if let Some(frame) = pending {
            let r = c
                .post(format!("{}/logplex/{}", ing.base, app(d)))
                .header("Logplex-Drain-Token", format!("d.drain-{d}"))
                .header("Logplex-Frame-Id", format!("D{d}-F{frame}"))
                .body(body(&frame_msgs(d, frame)))
                .send()
                .await
                .expect("retry");
            assert_eq!(r.status(), 200);
            state.lock().expect("lock").acked.push(frame);
            retried += 1;
        }
    }
    assert!(ing.terminate(Duration::from_secs(60)).success());

    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in all_records(&dirs.archive()) {
        let m = r["message"].as_str().expect("message").to_owned();
        *seen.entry(m).or_default() += 1;
    }
    let mut acked_msgs = 0;
    let mut missing = Vec::new();
    for (d, state) in drains.iter().enumerate() {
        for &frame in &state.lock().expect("lock").acked {
            for (m, msg) in frame_msgs(d, frame).iter().enumerate() {
                acked_msgs += 1;
                let text = String::from_utf8(msg.clone()).expect("utf8");
                let text = text.split(" - ").nth(1).expect("message part").to_owned();
                if !seen.contains_key(&text) {
                    missing.push(format!("drain {d} frame {frame} msg {m}"));
                }
            }
        }
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let total: usize = seen.values().sum();
    println!(
        "crash safety: {acked_msgs} acknowledged messages from {DRAINS} drains ({retried} frames retried after the restart); \
         archive holds {total} records, {duplicates} duplicates ({:.2}%), {} missing",
        100.0 * duplicates as f64 / total.max(1) as f64,
        missing.len()
    );
    assert!(
        acked_msgs > DRAINS * MSGS,
        "too little traffic before the kill"
    );
    assert!(
        missing.is_empty(),
        "acknowledged but not archived: {missing:?}"
    );
    assert_eq!(
        dirs.wal_bytes(),
        0,
        "the log is empty after a clean shutdown"
    );
}
