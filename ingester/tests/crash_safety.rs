//! Crash safety: several drains send, the ingester is killed with SIGKILL
//! mid-stream and restarted on the same data dir; every message that got a
//! 200 must be in the archive. Duplicates are allowed (at-least-once) and
//! reported. Once for Logplex drains, once for OTLP/HTTP (protobuf) ones.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

const DRAINS: usize = 6;
const MSGS: usize = 50;

/// What the drains speak: each request's messages are told apart by drain
/// and request number, so the archive can be checked message by message.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Logplex HTTPS drains: frame ids, retried with the same id.
    Logplex,
    /// Fir telemetry drains over OTLP/HTTP protobuf: no frame id, a request
    /// without an answer is sent again.
    OtlpProtobuf,
}

impl Kind {
    /// The message texts of request `frame` of drain `drain`, as archived.
    fn messages(self, drain: usize, frame: usize) -> Vec<String> {
        let tag = match self {
            Kind::Logplex => "drain",
            Kind::OtlpProtobuf => "otlp drain",
        };
        (0..MSGS)
            .map(|m| format!("{tag} {drain} frame {frame} msg {m} {}", "q".repeat(300)))
            .collect()
    }

    fn request(
        self,
        c: &reqwest::Client,
        base: &str,
        drain: usize,
        frame: usize,
    ) -> reqwest::RequestBuilder {
        let msgs = self.messages(drain, frame);
        match self {
            Kind::Logplex => {
                let lines: Vec<Vec<u8>> = msgs.iter().map(|m| app_line(m)).collect();
                c.post(format!("{base}/logplex/{}", app(drain)))
                    .header("Logplex-Drain-Token", format!("d.drain-{drain}"))
                    .header("Logplex-Frame-Id", format!("D{drain}-F{frame}"))
                    .header("Logplex-Msg-Count", MSGS.to_string())
                    .body(body(&lines))
            }
            Kind::OtlpProtobuf => c
                .post(format!("{base}/otlp/{}/v1/logs", app(drain)))
                .header("Content-Type", "application/x-protobuf")
                .body(otlp_request(drain, &msgs)),
        }
    }
}

/// An `ExportLogsServiceRequest` as a Fir dyno's would be: one resource,
/// one scope, a record per message.
fn otlp_request(drain: usize, msgs: &[String]) -> Vec<u8> {
    let text = |s: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s.to_owned())),
        })
    };
    let attr = |k: &str, v: &str| KeyValue {
        key: k.to_owned(),
        value: text(v),
        ..KeyValue::default()
    };
    let records = msgs
        .iter()
        .map(|m| LogRecord {
            time_unix_nano: 1_781_697_600_123_456_000,
            severity_number: 9,
            body: text(m),
            ..LogRecord::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    attr("service.name", app(drain)),
                    attr("heroku.dyno.name", &format!("web.{drain}")),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec()
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
    /// Sent, no 200 seen (the sender retries it).
    pending: Option<usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_loses_nothing_acknowledged() {
    kill_9_mid_stream(Kind::Logplex).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_otlp_load_loses_nothing_acknowledged() {
    kill_9_mid_stream(Kind::OtlpProtobuf).await;
}

async fn kill_9_mid_stream(kind: Kind) {
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
            // One request in flight per drain, as Logplex and the OTLP
            // exporters' batch processors do.
            while !stop.load(Ordering::Relaxed) {
                state.lock().expect("lock").pending = Some(frame);
                match kind.request(&c, &base, d, frame).send().await {
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
    // The senders retry what got no answer (Logplex with the same frame id).
    let c = client();
    let mut retried = 0;
    for (d, state) in drains.iter().enumerate() {
        let pending = state.lock().expect("lock").pending;
        if let Some(frame) = pending {
            let r = kind
                .request(&c, &ing.base, d, frame)
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
        assert_eq!(r["parse_error"], serde_json::Value::Null, "{r}");
        let m = r["message"].as_str().expect("message").to_owned();
        *seen.entry(m).or_default() += 1;
    }
    let mut acked_msgs = 0;
    let mut missing = Vec::new();
    for (d, state) in drains.iter().enumerate() {
        for &frame in &state.lock().expect("lock").acked {
            for (m, text) in kind.messages(d, frame).iter().enumerate() {
                acked_msgs += 1;
                if !seen.contains_key(text) {
                    missing.push(format!("drain {d} frame {frame} msg {m}"));
                }
            }
        }
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let total: usize = seen.values().sum();
    println!(
        "crash safety ({kind:?}): {acked_msgs} acknowledged messages from {DRAINS} drains ({retried} requests retried after the restart); \
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
