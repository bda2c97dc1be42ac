//! What ends up in the archive, record by record, in both ack modes.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn samples() -> Vec<Vec<u8>> {
    let mut msgs: Vec<Vec<u8>> = [
        // Router line, last microsecond of 2026-06-17.
        "<158>1 2026-06-17T23:59:59.999999+00:00 host heroku router - at=info method=GET path=\"/jobs?page=2\" host=shop.herokuapp.com request_id=8601b555-6a76-4b1f-9c2a-2d3c5f0d1a2b fwd=\"203.0.113.7\" dyno=web.1 connect=0ms service=22ms status=200 bytes=1548 protocol=https",
        // Router error.
        "<158>1 2026-06-17T12:00:00.000001+00:00 host heroku router - at=error code=H12 desc=\"Request timeout\" method=POST path=\"/upload\" host=shop.herokuapp.com request_id=0f0e0d0c-6a76-4b1f-9c2a-2d3c5f0d1a2b fwd=\"203.0.113.8\" dyno=web.2 connect=1ms service=30000ms status=503 bytes=0 protocol=https",
        // App lines that begin with a request id or a dash: the text stays.
        "<190>1 2026-06-17T12:00:01.5+00:00 host app web.1 - [8601b555-6a76] Completed 200 OK in 21ms",
        "<190>1 2026-06-17T12:00:02+00:00 host app worker.1 - - starting job 42",
        // An offset: 02:00 at +02:00 is midnight UTC, the next day.
        "<190>1 2026-06-18T02:00:00.25+02:00 host app web.1 - after midnight UTC",
        // Logplex reports drops.
        "<172>1 2026-06-18T00:00:01+00:00 host heroku logplex - Error L10 (output buffer overflow): 7 messages dropped since 2026-06-18T00:00:00+00:00.",
        // Add-on metrics: logfmt pairs.
        "<134>1 2026-06-17T12:00:03+00:00 host app heroku-postgres - source=DATABASE sample#db_size=4347350804bytes sample#tables=43",
    ]
    .iter()
    .map(|m| m.as_bytes().to_vec())
    .collect();
    // Invalid UTF-8 in the message: kept exactly in message_b64.
    let mut bad = b"<190>1 2026-06-17T12:00:04+00:00 host app web.1 - caf\xe9 latin-1".to_vec();
    bad.extend_from_slice(b"");
    msgs.push(bad);
    msgs
}

fn by_message<'a>(records: &'a [Value], needle: &str) -> &'a Value {
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| r["message"].as_str().is_some_and(|m| m.contains(needle)))
        .collect();
    assert_eq!(found.len(), 1, "records with {needle:?}: {found:?}");
    found[0]
}

fn check_records(objects: &std::collections::BTreeMap<String, Vec<Value>>, prefix: &str) {
    // Partitioned by app and the message's own UTC day.
    for (key, records) in objects {
        let rest = key
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{key} not under {prefix}"));
        let parts: Vec<&str> = rest.split('/').collect();
        assert_eq!(parts.len(), 5, "{key}");
        assert_eq!(parts[0], "shop");
        let name = parts[4];
        let (ms, uuid) = name
            .strip_suffix(".json.gz")
            .and_then(|n| n.split_once('-'))
            .unwrap_or_else(|| panic!("object name {name}"));
        assert!(
            ms.parse::<u64>().is_ok_and(|ms| ms > 1_700_000_000_000),
            "{name}"
        );
        assert!(uuid.parse::<uuid::Uuid>().is_ok(), "{name}");
        let day = format!("{}-{}-{}", parts[1], parts[2], parts[3]);
        for r in records {
            assert!(
                r["log_ts"].as_str().is_some_and(|t| t.starts_with(&day)),
                "{r} in {key}"
            );
        }
    }
    let records: Vec<Value> = objects.values().flatten().cloned().collect();
    assert_eq!(records.len(), samples().len());
    for r in &records {
        assert_eq!(r["app"], "shop");
        assert_eq!(r["drain_token"], TOKEN);
        assert_eq!(r["frame_id"], "FRAME-1");
        assert_eq!(r["hostname"], "host");
        assert!(
            r["received_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
            "{r}"
        );
        assert!(r["parse_error"].is_null(), "{r}");
    }

    let r = by_message(&records, "path=\"/jobs?page=2\"");
    assert_eq!(r["log_ts"], "2026-06-17T23:59:59.999999Z");
    assert_eq!(r["facility"], 19);
    assert_eq!(r["severity"], 6);
    assert_eq!(r["source"], "heroku");
    assert_eq!(r["proc_id"], "router");
    assert!(r["msg_id"].is_null());
    assert_eq!(r["at"], "info");
    assert_eq!(r["method"], "GET");
    assert_eq!(r["path"], "/jobs?page=2");
    assert_eq!(r["host"], "shop.herokuapp.com");
    assert_eq!(r["request_id"], "8601b555-6a76-4b1f-9c2a-2d3c5f0d1a2b");
    assert_eq!(r["fwd"], "203.0.113.7");
    assert_eq!(r["dyno"], "web.1");
    assert_eq!(r["protocol"], "https");
    assert_eq!(r["connect_ms"], 0);
    assert_eq!(r["service_ms"], 22);
    assert_eq!(r["status"], 200);
    assert_eq!(r["bytes"], 1548);

    let r = by_message(&records, "code=H12");
    assert_eq!(r["at"], "error");
    assert_eq!(r["code"], "H12");
    assert_eq!(r["desc"], "Request timeout");
    assert_eq!(r["service_ms"], 30000);
    assert_eq!(r["status"], 503);

    let r = by_message(&records, "Completed 200 OK");
    assert_eq!(r["message"], "[8601b555-6a76] Completed 200 OK in 21ms");
    assert_eq!(r["log_ts"], "2026-06-17T12:00:01.500000Z");
    assert_eq!(r["source"], "app");
    assert_eq!(r["proc_id"], "web.1");
    assert!(r["status"].is_null());

    let r = by_message(&records, "starting job 42");
    assert_eq!(r["message"], "- starting job 42");
    assert_eq!(r["proc_id"], "worker.1");

    let r = by_message(&records, "after midnight UTC");
    assert_eq!(r["log_ts"], "2026-06-18T00:00:00.250000Z");

    let r = by_message(&records, "Error L10");
    assert_eq!(r["l10_dropped"], 7);
    assert_eq!(r["proc_id"], "logplex");

    let r = by_message(&records, "sample#db_size");
    assert_eq!(r["kv"]["source"], "DATABASE");
    assert_eq!(r["kv"]["sample#db_size"], "4347350804bytes");
    assert_eq!(r["proc_id"], "heroku-postgres");

    let r = by_message(&records, "latin-1");
    assert_eq!(r["message"], "caf\u{fffd} latin-1");
    // base64 of "caf\xe9 latin-1"
    assert_eq!(r["message_b64"], "Y2Fm6SBsYXRpbi0x");
}

async fn post_samples(base: &str) {
    let c = client();
    let r = post(&c, base, "shop", None, Some("FRAME-1"), &samples()).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn wal_mode_archives_every_record_with_its_fields() {
    let dirs = Dirs::new();
    let mut ing = Ingester::start(&dirs.args(&["--flush-interval", "1h"]), &[]);
    post_samples(&ing.base).await;
    // Objects are open for an hour: SIGTERM must flush them.
    assert!(ing.terminate(Duration::from_secs(30)).success());
    let objects = read_archive(&dirs.archive());
    let days: Vec<String> = objects
        .keys()
        .map(|k| k.rsplit_once('/').expect("key").0.to_owned())
        .collect();
    assert_eq!(days, ["logs/shop/2026/06/17", "logs/shop/2026/06/18"]);
    check_records(&objects, "logs/");
}

#[tokio::test]
async fn archive_mode_answers_only_after_the_object_is_stored() {
    let dirs = Dirs::new();
    let mut ing = Ingester::start(&dirs.args(&["--ack", "archive"]), &[]);
    post_samples(&ing.base).await;
    // No flush, no shutdown: a 200 already means stored.
    let objects = read_archive(&dirs.archive());
    check_records(&objects, "logs/");
    assert!(!dirs.data().exists(), "--ack archive keeps no local log");
    assert!(ing.terminate(Duration::from_secs(30)).success());
}

#[tokio::test]
async fn age_closes_objects_while_running() {
    let dirs = Dirs::new();
    let mut ing = Ingester::start(&dirs.args(&["--flush-interval", "300ms"]), &[]);
    post_samples(&ing.base).await;
    let objects = eventually(Duration::from_secs(10), "objects closed by age", || {
        let o = read_archive(&dirs.archive());
        (o.values().map(Vec::len).sum::<usize>() == samples().len()).then_some(o)
    })
    .await;
    check_records(&objects, "logs/");
    // Once everything is archived the log is sealed and deleted: only the
    // new, empty segment (its 8-byte header) remains.
    eventually(Duration::from_secs(10), "log trimmed", || {
        (dirs.wal_bytes() <= 8).then_some(())
    })
    .await;
    assert!(ing.terminate(Duration::from_secs(30)).success());
}

#[tokio::test]
async fn size_closes_objects() {
    let dirs = Dirs::new();
    let mut ing = Ingester::start(
        &dirs.args(&["--flush-interval", "1h", "--flush-bytes", "64KiB"]),
        &[],
    );
    let c = client();
    for i in 0..10 {
        let msgs: Vec<Vec<u8>> = (0..100)
            .map(|m| app_line(&format!("req {i} msg {m} {}", "p".repeat(100))))
            .collect();
        assert_eq!(
            post(&c, &ing.base, "shop", None, Some(&format!("S{i}")), &msgs)
                .await
                .status(),
            200
        );
    }
    // About 300 KB of JSON with 64 KiB objects: several closed before shutdown.
    let objects = eventually(Duration::from_secs(10), "objects closed by size", || {
        let o = read_archive(&dirs.archive());
        (o.len() >= 3).then_some(o)
    })
    .await;
    assert!(objects.values().all(|r| !r.is_empty()));
    assert!(ing.terminate(Duration::from_secs(30)).success());
    assert_eq!(all_records(&dirs.archive()).len(), 1000);
}

#[tokio::test]
async fn log_pressure_closes_objects_early() {
    // Objects would stay open an hour and never reach their size limit; the
    // log (8 MiB) must still not fill up for good: past half of it, objects
    // holding its oldest segment are closed and stored.
    let dirs = Dirs::new();
    let mut ing = Ingester::start(
        &dirs.args(&[
            "--flush-interval",
            "1h",
            "--wal-max-bytes",
            "8MiB",
            "--wal-segment-bytes",
            "1MiB",
        ]),
        &[],
    );
    let c = client();
    let apps = ["shop", "blog", "api-1", "api-2"];
    let mut sent = 0;
    for i in 0..400 {
        let app = apps[i % apps.len()];
        let msgs: Vec<Vec<u8>> = (0..100)
            .map(|m| app_line(&format!("req {i} msg {m} {}", "w".repeat(300))))
            .collect();
        // About 32 MB in all: four times the log's bound.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = post(&c, &ing.base, app, None, Some(&format!("P{i}")), &msgs).await;
            match r.status().as_u16() {
                200 => break,
                503 => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the log stayed full:\n{}",
                        ing.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                s => panic!("unexpected status {s}"),
            }
        }
        sent += 100;
    }
    let archived: usize = read_archive(&dirs.archive()).values().map(Vec::len).sum();
    assert!(archived > 0, "nothing stored before shutdown");
    assert!(ing.terminate(Duration::from_secs(60)).success());
    assert_eq!(all_records(&dirs.archive()).len(), sent);
}
