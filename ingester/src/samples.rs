//! Realistic Logplex traffic for the parser benchmark and the load generator
//! (one generator, so both measure the same mix).
//!
//! The mix follows what a busy Heroku web app drains: mostly router lines,
//! then app lines (Rails-style with a `[request-id]` prefix, logfmt, JSON,
//! `- `-led), dyno lifecycle lines, runtime metrics and heroku-postgres
//! samples. Deterministic for a given seed; no external randomness.

use crate::parse::timestamp::format_utc_us;
use std::io::Write as _;

/// Generates syslog messages and octet-counted Logplex bodies.
pub struct LogplexGen {
    rng: u64,
    ts_us: i64,
    app: String,
    scratch: Vec<u8>,
}

const PATHS: &[&str] = &[
    "/",
    "/api/v1/orders",
    "/api/v1/orders/8812/items",
    "/assets/application-6a4f1e7e0b.css",
    "/users/sign_in",
    "/health",
    "/search?q=heroku+logs&page=2",
    "/api/v2/accounts/551/invoices?status=open",
    "/favicon.ico",
    "/webhooks/stripe",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "GET", "PUT", "GET", "DELETE"];
const STATUSES: &[u16] = &[200, 200, 200, 200, 304, 302, 201, 404, 200, 500];

impl LogplexGen {
    /// `start_us`: timestamp of the first message (microseconds, UTC).
    pub fn new(seed: u64, app: &str, start_us: i64) -> Self {
        LogplexGen {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            ts_us: start_us,
            app: app.to_string(),
            scratch: Vec::with_capacity(1024),
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn uuid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    fn ts(&mut self) -> String {
        self.ts_us += 1 + self.below(3000) as i64;
        let t = format_utc_us(self.ts_us);
        // Heroku writes `+00:00`, not `Z`.
        format!("{}+00:00", String::from_utf8_lossy(&t[..26]))
    }

    /// Append one syslog message (no framing, trailing newline included).
    pub fn message(&mut self, out: &mut Vec<u8>) {
        let ts = self.ts();
        let roll = self.below(100);
        let dyno = format!("web.{}", 1 + self.below(4));
        // write! into a Vec cannot fail.
        let _ = match roll {
            0..=54 => {
                let (method, path) = (self.pick(METHODS), self.pick(PATHS));
                let status = STATUSES[self.below(STATUSES.len() as u64) as usize];
                let rid = self.uuid();
                let (connect, service, bytes) =
                    (self.below(3), 1 + self.below(400), 100 + self.below(40_000));
                let ip = format!(
                    "{}.{}.{}.{}",
                    1 + self.below(223),
                    self.below(256),
                    self.below(256),
                    1 + self.below(254)
                );
                writeln!(
                    out,
                    "<158>1 {ts} host heroku router - at=info method={method} path=\"{path}\" host={app}.herokuapp.com request_id={rid} fwd=\"{ip}\" dyno={dyno} connect={connect}ms service={service}ms status={status} bytes={bytes} protocol=https",
                    app = self.app
                )
            }
            55..=56 => {
                let rid = self.uuid();
                writeln!(
                    out,
                    "<158>1 {ts} host heroku router - at=error code=H12 desc=\"Request timeout\" method=POST path=\"/api/v1/reports\" host={app}.herokuapp.com request_id={rid} fwd=\"203.0.113.42\" dyno={dyno} connect=0ms service=30000ms status=503 bytes=0 protocol=https",
                    app = self.app
                )
            }
            57..=74 => {
                let rid = self.uuid();
                let ms = self.below(900);
                let path = self.pick(PATHS);
                writeln!(
                    out,
                    "<190>1 {ts} host app {dyno} - [{rid}] Completed 200 OK in {ms}ms (Views: 12.4ms | ActiveRecord: 3.1ms | Allocations: 10533) for {path}"
                )
            }
            75..=84 => {
                let rid = self.uuid();
                let user = self.below(100_000);
                writeln!(
                    out,
                    "<190>1 {ts} host app {dyno} - level=info msg=\"order created\" request_id={rid} user_id={user} order_total=49.90 currency=EUR duration=0.042"
                )
            }
            85..=90 => {
                let user = self.below(100_000);
                writeln!(
                    out,
                    "<190>1 {ts} host app worker.1 - {{\"level\":\"info\",\"time\":\"{ts}\",\"msg\":\"job finished\",\"job\":\"SendReceiptEmail\",\"user_id\":{user},\"queue\":\"mailers\"}}"
                )
            }
            91..=93 => writeln!(
                out,
                "<190>1 {ts} host app worker.1 - - Sidekiq::Worker::SendReceiptEmail JID-5c0f1f4f2fd0b3e8 INFO: done: 0.114 sec"
            ),
            94..=95 => writeln!(
                out,
                "<45>1 {ts} host heroku {dyno} - State changed from starting to up"
            ),
            96..=97 => {
                let mem = 200 + self.below(300);
                writeln!(
                    out,
                    "<45>1 {ts} host heroku {dyno} - source={dyno} dyno=heroku.145151706.0e5e2c14-5f8e-4f4e-9d0c-6d9e1a5d3c1b sample#memory_total={mem}.15MB sample#memory_rss={mem}.01MB sample#memory_cache=0.14MB sample#memory_swap=0.00MB sample#memory_pgpgin=128469pages sample#memory_pgpgout=61372pages sample#memory_quota=512.00MB"
                )
            }
            _ => {
                let tx = 1_000_000 + self.below(1_000_000);
                writeln!(
                    out,
                    "<134>1 {ts} host app heroku-postgres - source=DATABASE addon=postgresql-opaque-12345 sample#current_transaction={tx} sample#db_size=4347350804bytes sample#tables=43 sample#active-connections=6 sample#waiting-connections=0 sample#index-cache-hit-rate=0.97116 sample#table-cache-hit-rate=0.73958 sample#load-avg-1m=0.05 sample#load-avg-5m=0.03 sample#load-avg-15m=0.035 sample#read-iops=0 sample#write-iops=112.73 sample#memory-total=15405636.0kB sample#memory-free=214004kB"
                )
            }
        };
    }

    /// Append one octet-counted frame; returns the frame's length.
    pub fn frame(&mut self, out: &mut Vec<u8>) -> usize {
        let mut msg = std::mem::take(&mut self.scratch);
        msg.clear();
        self.message(&mut msg);
        let before = out.len();
        let _ = write!(out, "{} ", msg.len());
        out.extend_from_slice(&msg);
        self.scratch = msg;
        out.len() - before
    }

    /// A Logplex body of at least `target_bytes` (whole frames): the body and
    /// its message count (the `Logplex-Msg-Count` header).
    pub fn body(&mut self, target_bytes: usize) -> (Vec<u8>, u64) {
        let mut out = Vec::with_capacity(target_bytes + 1024);
        let mut n = 0;
        while out.len() < target_bytes {
            self.frame(&mut out);
            n += 1;
        }
        (out, n)
    }
}

/// The same traffic as Fir telemetry drains send it: OTLP/HTTP protobuf
/// `ExportLogsServiceRequest`s, one log record per [`LogplexGen`] message
/// (body = MSG, time from the TIMESTAMP, severity from the PRI).
///
/// Heroku adds its attributes "at the resource attribute level" (Dev
/// Center, "Heroku OpenTelemetry Signals and Attributes Reference": the app,
/// the dyno, the source), and an OTLP exporter sends the records of one
/// resource under one `ResourceLogs`; so does this generator: one resource
/// per process (`router`, `web.1`, `heroku-postgres` ...) naming the app
/// (`service.name`, `heroku.app.id`), the process (`heroku.dyno.name`) and
/// the source (`heroku.source`), its records in the order they were written.
pub struct OtlpGen {
    logplex: LogplexGen,
    app: String,
    app_id: String,
}

impl OtlpGen {
    pub fn new(seed: u64, app: &str, start_us: i64) -> Self {
        OtlpGen {
            logplex: LogplexGen::new(seed, app, start_us),
            app: app.to_owned(),
            app_id: format!("2daa2797-e42b-4624-9322-{seed:012x}"),
        }
    }

    /// A protobuf request of at least `target_bytes` (whole records) and its
    /// record count.
    pub fn body(&mut self, target_bytes: usize) -> (Vec<u8>, u64) {
        use crate::parse::rfc5424::{self, Mode, Timestamp};
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use prost::Message as _;

        let text = |s: &str| {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s.to_owned())),
            })
        };
        let kv = |k: &str, v: &str| KeyValue {
            key: k.to_owned(),
            value: text(v),
            ..KeyValue::default()
        };
        // (source, process) -> that resource's records.
        let mut groups: Vec<((String, String), Vec<LogRecord>)> = Vec::new();
        let mut n = 0u64;
        let mut size = 0;
        let mut msg = Vec::new();
        while size < target_bytes {
            msg.clear();
            self.logplex.message(&mut msg);
            let line = msg.strip_suffix(b"\n").unwrap_or(&msg);
            let Ok(m) = rfc5424::parse(line, Mode::HerokuHttps) else {
                continue;
            };
            let time_unix_nano = match m.timestamp {
                Timestamp::At(us) => u64::try_from(us).unwrap_or(0) * 1_000,
                Timestamp::Nil | Timestamp::Invalid => 0,
            };
            // syslog severity 0-7 back to OTLP's numbers (err 17, info 9, ...).
            let severity_number = [21, 21, 21, 17, 13, 10, 9, 5][usize::from(m.severity.min(7))];
            let record = LogRecord {
                time_unix_nano,
                observed_time_unix_nano: time_unix_nano,
                severity_number,
                body: text(&String::from_utf8_lossy(m.msg)),
                ..LogRecord::default()
            };
            size += record.encoded_len() + 3;
            n += 1;
            let key = (
                m.app_name.unwrap_or_default().to_owned(),
                m.proc_id.unwrap_or_default().to_owned(),
            );
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, records)) => records.push(record),
                None => {
                    // A new resource: its attributes and framing.
                    size += 64 + self.app.len() + self.app_id.len() + key.0.len() + key.1.len();
                    groups.push((key, vec![record]));
                }
            }
        }
        let resource_logs = groups
            .into_iter()
            .map(|((source, process), records)| {
                let mut attributes = vec![
                    kv("service.name", &self.app),
                    kv("heroku.app.id", &self.app_id),
                ];
                if !process.is_empty() {
                    attributes.push(kv("heroku.dyno.name", &process));
                }
                if !source.is_empty() {
                    attributes.push(kv("heroku.source", &source));
                }
                ResourceLogs {
                    resource: Some(Resource {
                        attributes,
                        ..Resource::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        log_records: records,
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                }
            })
            .collect();
        let request = ExportLogsServiceRequest { resource_logs };
        (request.encode_to_vec(), n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::batch::{LineSink, RequestMeta, encode_logplex_body};
    use crate::parse::timestamp::Day;

    struct Sink(Vec<u8>);
    impl LineSink for Sink {
        fn push(&mut self, _: Day, r: &crate::encode::record::Record<'_>) {
            r.write_json_line(&mut self.0);
        }
    }

    #[test]
    fn bodies_parse_cleanly_with_the_expected_count_and_size() {
        let mut g = LogplexGen::new(7, "myapp", 1_781_697_600_000_000);
        let (body, n) = g.body(100 * 1024);
        let avg = body.len() as u64 / n;
        assert!(
            (200..=300).contains(&avg),
            "about 244 bytes a message, got {avg}"
        );
        let meta = RequestMeta {
            app: "myapp",
            drain_token: None,
            frame_id: None,
            msg_count: Some(n),
            received_at_us: 1_781_697_600_000_000,
        };
        let mut sink = Sink(Vec::new());
        let stats = encode_logplex_body(&meta, &body, &mut sink);
        assert_eq!(stats.messages, n);
        assert_eq!(stats.parse_errors, 0);
        assert!(!stats.count_mismatch);
        // Same seed, same traffic.
        let mut again = LogplexGen::new(7, "myapp", 1_781_697_600_000_000);
        assert_eq!(again.body(100 * 1024).0, body);
    }

    #[test]
    fn otlp_bodies_decode_into_the_same_mix_of_records() {
        use crate::encode::batch::encode_body;
        use crate::parse::BodyFormat;
        let mut g = OtlpGen::new(7, "myapp", 1_781_697_600_000_000);
        let (body, n) = g.body(100 * 1024);
        assert!(
            body.len() >= 100 * 1024 && n > 300,
            "{} bytes, {n} records",
            body.len()
        );
        let meta = RequestMeta {
            app: "myapp",
            drain_token: None,
            frame_id: None,
            msg_count: Some(n),
            received_at_us: 1_781_697_600_000_000,
        };
        let mut sink = Sink(Vec::new());
        let stats = encode_body(&meta, BodyFormat::OtlpProtobuf, &body, &mut sink);
        assert_eq!((stats.messages, stats.parse_errors), (n, 0));
        let routers = sink
            .0
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<serde_json::Value>(l).expect("JSON"))
            .filter(|r| r["proc_id"] == "router" && r["status"].is_i64())
            .count();
        assert!(routers > 0, "router lines keep their typed columns");
        // Every record names its process and source, from its resource.
        for line in sink.0.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let r: serde_json::Value = serde_json::from_slice(line).expect("JSON");
            assert!(r["proc_id"].is_string() && r["source"].is_string(), "{r}");
            assert_eq!(r["resource"]["service.name"], "myapp");
        }
    }
}
