//! Parser and encoder throughput on one core, over realistic 100 KB Logplex
//! bodies (the mix of `drainpipe_ingester::samples`), and over OTLP protobuf
//! bodies of the same traffic (`samples::OtlpGen`, what Fir apps send).
//!
//! `cargo bench -p drainpipe-ingester --bench parse` prints, per stage:
//! input MB/s (request-body bytes) and messages/s per second of CPU time of
//! the benchmark thread (one core), and for gzip the compression ratio.
//! Set `PARSE_BENCH_SECS` to change the time per stage (default 3), and
//! `PARSE_BENCH_ONLY` to stage labels (`a0`, `a`, `b`, `c`, `p`, `otlp`,
//! comma-separated) to run only those stages (for profiling).

use drainpipe_ingester::encode::batch::{
    LineSink, RequestMeta, encode_logplex_body, encode_otlp_body,
};
use drainpipe_ingester::encode::columns::Columns;
use drainpipe_ingester::encode::parquet_file;
use drainpipe_ingester::encode::record::{Record, WriterCache};
use drainpipe_ingester::parse::logplex::{self, Frame};
use drainpipe_ingester::parse::otlp::Encoding;
use drainpipe_ingester::parse::rfc5424::{self, Mode};
use drainpipe_ingester::parse::timestamp::Day;
use drainpipe_ingester::samples::{LogplexGen, OtlpGen};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

const BODY_BYTES: usize = 100 * 1024;
const BODIES: usize = 16;
// 2026-06-17T12:00:00Z
const START_US: i64 = 1_781_697_600_000_000;

struct Body {
    bytes: Vec<u8>,
    messages: u64,
}

/// One growing buffer, as the uploader's per-day buffer would be.
#[derive(Default)]
struct Sink(Vec<u8>, WriterCache);

impl LineSink for Sink {
    fn push(&mut self, _day: Day, r: &Record<'_>) {
        r.write_json_line_cached(&mut self.0, &mut self.1);
    }
}

/// Counts compressed bytes and throws them away.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn meta(b: &Body) -> RequestMeta<'static> {
    RequestMeta {
        app: "myapp",
        drain_token: Some("d.73ea7440-270a-435a-a0ea-adf50b4e5f5a"),
        frame_id: Some("09C557EAFCFB6CF2740EE62F62971098"),
        msg_count: Some(b.messages),
        received_at_us: START_US + 5_000_000,
    }
}

/// CPU time this thread has run, from the scheduler (nanosecond
/// resolution): on a shared 2-core machine wall time also counts the time
/// other processes held the core, CPU time does not.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `f` over the bodies round-robin for `secs` of wall time; returns
/// (CPU time, or wall time where CPU time is unavailable; bodies done).
fn run(bodies: &[Body], secs: f64, mut f: impl FnMut(&Body)) -> (Duration, u64) {
    // Warm-up.
    for b in bodies {
        f(b);
    }
    let start = Instant::now();
    let cpu_start = thread_cpu();
    let mut n = 0u64;
    loop {
        for b in bodies {
            f(b);
        }
        n += bodies.len() as u64;
        if start.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    match (cpu_start, thread_cpu()) {
        (Some(a), Some(b)) => (b - a, n),
        _ => (start.elapsed(), n),
    }
}

fn report(name: &str, bodies: &[Body], elapsed: Duration, n: u64, extra: &str) {
    let per_round_bytes: usize = bodies.iter().map(|b| b.bytes.len()).sum();
    let per_round_msgs: u64 = bodies.iter().map(|b| b.messages).sum();
    let rounds = n as f64 / bodies.len() as f64;
    let s = elapsed.as_secs_f64();
    println!(
        "{name:<34} {:>9.1} MB/s {:>12.0} msg/s{extra}",
        per_round_bytes as f64 * rounds / s / 1e6,
        per_round_msgs as f64 * rounds / s,
    );
}

/// `BODIES` bodies from a generator's `body(BODY_BYTES)`.
fn make_bodies(mut body: impl FnMut() -> (Vec<u8>, u64)) -> Vec<Body> {
    (0..BODIES)
        .map(|_| {
            let (bytes, messages) = body();
            Body { bytes, messages }
        })
        .collect()
}

/// Bytes and messages (records) of all the bodies.
fn totals(bodies: &[Body]) -> (usize, u64) {
    (
        bodies.iter().map(|b| b.bytes.len()).sum(),
        bodies.iter().map(|b| b.messages).sum(),
    )
}

fn enabled(stage: &str) -> bool {
    std::env::var("PARSE_BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s == stage))
}

fn main() {
    let secs: f64 = std::env::var("PARSE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let mut generator = LogplexGen::new(42, "myapp", START_US);
    let bodies = make_bodies(|| generator.body(BODY_BYTES));
    let (total, msgs) = totals(&bodies);
    println!(
        "{} bodies, {} bytes, {} messages ({:.0} per body, {:.0} bytes per message incl. framing)",
        bodies.len(),
        total,
        msgs,
        msgs as f64 / bodies.len() as f64,
        total as f64 / msgs as f64
    );

    if enabled("a0") {
        let (t, n) = run(&bodies, secs, |b| {
            let mut frames = 0u64;
            for f in logplex::frames(&b.bytes) {
                if let Frame::Counted { content, .. } = f {
                    frames += content.len() as u64;
                }
            }
            black_box(frames);
        });
        report("(a0) framing only", &bodies, t, n, "");
    }

    if enabled("a") {
        let (t, n) = run(&bodies, secs, |b| {
            let mut acc = 0u64;
            for f in logplex::frames(&b.bytes) {
                if let Frame::Counted { content, .. } = f
                    && let Ok(m) =
                        rfc5424::parse(logplex::strip_newline(content), Mode::HerokuHttps)
                {
                    acc += m.msg.len() as u64 + u64::from(m.severity);
                }
            }
            black_box(acc);
        });
        report("(a) framing + header parse", &bodies, t, n, "");
    }

    let mut sink = Sink(Vec::with_capacity(4 * BODY_BYTES), WriterCache::default());
    if enabled("b") {
        let mut json_bytes = 0u64;
        let (t, n) = run(&bodies, secs, |b| {
            sink.0.clear();
            let stats = encode_logplex_body(&meta(b), &b.bytes, &mut sink);
            assert_eq!(stats.parse_errors, 0);
            json_bytes += sink.0.len() as u64;
            black_box(&sink.0);
        });
        let json_per_body = sink.0.len() as f64 / bodies[BODIES - 1].bytes.len() as f64;
        report(
            "(b) full encode to JSON lines",
            &bodies,
            t,
            n,
            &format!("   (JSON is {json_per_body:.2}x the body)"),
        );
        black_box(json_bytes);
    }

    if enabled("otlp") {
        otlp(secs, &mut sink);
    }

    if enabled("p") {
        parquet(&bodies, secs);
    }

    if !enabled("c") {
        return;
    }
    for level in [1u32, 3, 6] {
        let mut gz = GzEncoder::new(Count(0), Compression::new(level));
        let mut json = 0u64;
        let (t, n) = run(&bodies, secs, |b| {
            sink.0.clear();
            encode_logplex_body(&meta(b), &b.bytes, &mut sink);
            json += sink.0.len() as u64;
            gz.write_all(&sink.0).expect("counting writer");
        });
        let out = gz.finish().expect("counting writer").0;
        report(
            &format!("(c) encode + gzip level {level}"),
            &bodies,
            t,
            n,
            &format!("   (gzip ratio {:.1}:1 of JSON)", json as f64 / out as f64),
        );
    }
}

/// Rows for Parquet objects, as the uploader's Parquet sink gathers them.
#[derive(Default)]
struct Rows(Columns);

impl LineSink for Rows {
    fn push(&mut self, _day: Day, r: &Record<'_>) {
        self.0.push(r);
    }
}

/// Bodies per object in stage (p): about 6.4 MB of bodies, what an open
/// object gathers at the benchmark's load before `--flush-bytes` closes it.
const BODIES_PER_OBJECT: u64 = 64;

/// (p) encode to Arrow columns, then every `BODIES_PER_OBJECT` bodies sort
/// and write one Parquet file (ZSTD level 1), as the uploader does.
fn parquet(bodies: &[Body], secs: f64) {
    let mut rows = Rows::default();
    let (t, n) = run(bodies, secs, |b| {
        encode_logplex_body(&meta(b), &b.bytes, &mut rows);
        if rows.0.len() > 200_000 {
            black_box(rows.0.finish().expect("arrays"));
        }
    });
    report("(p0) encode to Arrow columns", bodies, t, n, "");
    let mut rows = Rows::default();
    let (mut count, mut out, mut records) = (0u64, 0u64, 0u64);
    let (t, n) = run(bodies, secs, |b| {
        encode_logplex_body(&meta(b), &b.bytes, &mut rows);
        count += 1;
        if count % BODIES_PER_OBJECT == 0 {
            let batch = rows.0.finish().expect("arrays");
            records += batch.num_rows() as u64;
            out += parquet_file::write(&batch, 1).expect("parquet").len() as u64;
        }
    });
    report(
        "(p) encode + Parquet ZSTD 1",
        bodies,
        t,
        n,
        &format!(
            "   ({:.1} bytes per record)",
            out as f64 / records.max(1) as f64
        ),
    );
}

/// The same stages for OTLP protobuf bodies: decode with the generated
/// types, encode to JSON lines, then gzip level 1 as the uploader does.
fn otlp(secs: f64, sink: &mut Sink) {
    let mut generator = OtlpGen::new(42, "myapp", START_US);
    let bodies = make_bodies(|| generator.body(BODY_BYTES));
    let (total, records) = totals(&bodies);
    println!(
        "OTLP: {} bodies, {} bytes, {} records ({:.0} per body, {:.0} bytes per record)",
        bodies.len(),
        total,
        records,
        records as f64 / bodies.len() as f64,
        total as f64 / records as f64
    );
    let otlp_meta = |b: &Body| RequestMeta {
        drain_token: None,
        frame_id: None,
        msg_count: None,
        ..meta(b)
    };
    let (t, n) = run(&bodies, secs, |b| {
        sink.0.clear();
        let stats = encode_otlp_body(&otlp_meta(b), Encoding::Protobuf, &b.bytes, sink);
        assert_eq!(stats.parse_errors, 0);
        black_box(&sink.0);
    });
    report("(otlp b) decode + encode to JSON", &bodies, t, n, "");
    let mut gz = GzEncoder::new(Count(0), Compression::new(1));
    let (t, n) = run(&bodies, secs, |b| {
        sink.0.clear();
        encode_otlp_body(&otlp_meta(b), Encoding::Protobuf, &b.bytes, sink);
        gz.write_all(&sink.0).expect("counting writer");
    });
    report("(otlp c) + gzip level 1", &bodies, t, n, "");
}
