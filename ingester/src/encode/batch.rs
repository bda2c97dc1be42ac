//! From one received batch to JSON lines grouped by UTC day.
//!
//! This is the single entry point the runtime uses: the write-ahead log keeps
//! raw request bodies, and the uploader (or `--ack archive`) calls
//! `encode_logplex_body` to turn a body into archive lines.

use crate::encode::record::{Record, same_key};
use crate::parse::BodyFormat;
use crate::parse::logfmt::{self, Value};
use crate::parse::logplex::{self, Frame};
use crate::parse::otlp;
use crate::parse::rfc5424::{self, Mode, Timestamp};
use crate::parse::router::{self, RouterFields};
use crate::parse::syslog_stream::{self, FrameKind};
use crate::parse::timestamp::{Day, utc_day};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use std::borrow::Cow;

/// What the transport knows about a batch, besides its body.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeta<'a> {
    /// Heroku app name (from the URL path on HTTPS drains).
    pub app: &'a str,
    /// `Logplex-Drain-Token` header.
    pub drain_token: Option<&'a str>,
    /// `Logplex-Frame-Id` header.
    pub frame_id: Option<&'a str>,
    /// `Logplex-Msg-Count` header.
    pub msg_count: Option<u64>,
    /// Receipt time, microseconds since the Unix epoch.
    pub received_at_us: i64,
}

/// Counters for one batch, fed into metrics by the caller.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Records written (one per frame, parseable or not).
    pub messages: u64,
    /// Frames kept raw with `parse_error` set (including broken framing).
    pub parse_errors: u64,
    /// Records whose message was not valid UTF-8 (`message_b64` set).
    pub invalid_utf8: u64,
    /// Sum of N over Logplex `Error L10` messages in the batch.
    pub l10_dropped: u64,
    /// logfmt keys that differed only in case from an earlier key of the same
    /// message (`userId=1 userid=2`): folded into one `kv` key, the last value kept.
    pub kv_case_collisions: u64,
    /// `msg_count` was given and differs from `messages`.
    pub count_mismatch: bool,
}

/// Where encoded records go: JSON lines or Parquet rows, by UTC day.
pub trait LineSink {
    /// Take the next record, whose `log_ts` falls on `day`. JSON sinks write
    /// it with [`Record::write_json_line_cached`], Parquet sinks push it onto
    /// their `Columns` (`encode::columns`).
    fn push(&mut self, day: Day, record: &Record<'_>);

    /// Sees each record once its line is written; the alert rules' tap
    /// (`alert::tap`) uses it, archive sinks keep the no-op.
    fn inspect(&mut self, _record: &Record<'_>) {}
}

/// Parse a Logplex HTTPS-drain body (octet-counted RFC 5424 frames) and append
/// one JSON line per frame to `sink`. Never fails: bad framing, bad headers
/// and invalid UTF-8 become records with `parse_error`/`message_b64` so no
/// byte is lost.
pub fn encode_logplex_body(
    meta: &RequestMeta<'_>,
    body: &[u8],
    sink: &mut impl LineSink,
) -> BatchStats {
    let mut enc = Encoder::new(meta);
    for frame in logplex::frames(body) {
        match frame {
            Frame::Counted { content, .. } => {
                enc.message(logplex::strip_newline(content), Mode::HerokuHttps, sink)
            }
            Frame::Broken { raw, error, .. } => enc.raw(raw, error.as_str(), sink),
        }
    }
    enc.finish()
}

/// Encode a logged body of either format.
pub fn encode_body(
    meta: &RequestMeta<'_>,
    format: BodyFormat,
    body: &[u8],
    sink: &mut impl LineSink,
) -> BatchStats {
    match format {
        BodyFormat::LogplexHttps => encode_logplex_body(meta, body, sink),
        BodyFormat::SyslogFrames => encode_syslog_body(meta, body, sink),
        BodyFormat::OtlpProtobuf => encode_otlp_body(meta, otlp::Encoding::Protobuf, body, sink),
        BodyFormat::OtlpJson => encode_otlp_body(meta, otlp::Encoding::Json, body, sink),
    }
}

/// Encode an OTLP logs request: one record per log record, in the same
/// columns as Logplex messages (string bodies get the same logfmt and router
/// treatment), plus `trace_id`, `span_id`, `severity_text`, `attributes` and
/// `resource`. A body that does not decode is one raw record with
/// `parse_error`, its bytes kept exactly.
pub fn encode_otlp_body(
    meta: &RequestMeta<'_>,
    encoding: otlp::Encoding,
    body: &[u8],
    sink: &mut impl LineSink,
) -> BatchStats {
    let request = match otlp::decode(body, encoding) {
        Ok(request) => request,
        Err(e) => {
            let mut enc = Encoder::new(meta);
            enc.raw(body, e.as_str(), sink);
            return enc.finish();
        }
    };
    let mut enc = Encoder::new(meta);
    let mut resource = Vec::new();
    let mut attributes = Vec::new();
    for resource_logs in &request.resource_logs {
        resource.clear();
        if let Some(r) = &resource_logs.resource {
            enc.stats.kv_case_collisions += otlp::flatten(&r.attributes, &mut resource);
        }
        for scope_logs in &resource_logs.scope_logs {
            for record in &scope_logs.log_records {
                attributes.clear();
                enc.stats.kv_case_collisions += otlp::flatten(&record.attributes, &mut attributes);
                enc.otlp_record(record, &attributes, &resource, sink);
            }
        }
    }
    enc.finish()
}

/// Attributes (log record first, then resource) that name the process, as
/// `proc_id` does on Cedar (`web.1`, `router`): Heroku's dyno name, then the
/// OTel semantic convention's instance id.
const PROC_ID_KEYS: &[&str] = &["heroku.dyno.name", "dyno", "service.instance.id"];
/// Attributes that say who wrote the line, as `source` (APP-NAME) does on
/// Cedar (`app`, `heroku`).
const SOURCE_KEYS: &[&str] = &["heroku.source", "source"];
/// Router columns from HTTP semantic-convention attributes, for router and
/// app logs that carry them as attributes rather than logfmt text.
const ROUTER_ATTRIBUTES: &[(&str, &str)] = &[
    ("http.request.method", "method"),
    ("url.path", "path"),
    ("server.address", "host"),
    ("client.address", "fwd"),
    ("http.response.status_code", "status"),
    ("http.response.body.size", "bytes"),
    ("network.protocol.name", "protocol"),
    ("http.request.id", "request_id"),
];

/// Encode the frames a syslog-drain connection delivered (one record per
/// frame): messages in strict RFC 5424 mode, oversized parts and truncated
/// frames kept raw with `parse_error`.
pub fn encode_syslog_body(
    meta: &RequestMeta<'_>,
    body: &[u8],
    sink: &mut impl LineSink,
) -> BatchStats {
    let mut enc = Encoder::new(meta);
    for frame in syslog_stream::stored_frames(body) {
        match frame {
            Ok((FrameKind::Message, bytes)) => {
                enc.message(logplex::strip_newline(bytes), Mode::Strict, sink)
            }
            Ok((kind, bytes)) => enc.raw(bytes, kind.parse_error().unwrap_or_default(), sink),
            Err(raw) => enc.raw(raw, "unreadable write-ahead log entry", sink),
        }
    }
    enc.finish()
}

/// At most this many `kv` pairs per record: keys are de-duplicated with a
/// linear scan, and a hostile line of thousands of pairs must not make that
/// quadratic. The message keeps every pair regardless.
pub const MAX_KV_PAIRS: usize = 128;

type Pair<'a> = (&'a str, Value<'a>);

const US_PER_DAY: i64 = 86_400_000_000;

struct Encoder<'m, 'b> {
    meta: &'m RequestMeta<'m>,
    stats: BatchStats,
    /// Reused for every message of the body: no allocation per message.
    kv: Vec<Pair<'b>>,
    /// The last partition day computed, by day number since the epoch.
    day: (i64, Day),
}

impl<'m, 'b> Encoder<'m, 'b> {
    fn new(meta: &'m RequestMeta<'m>) -> Self {
        Encoder {
            meta,
            stats: BatchStats::default(),
            kv: Vec::with_capacity(32),
            day: (0, utc_day(0)),
        }
    }

    fn finish(mut self) -> BatchStats {
        self.stats.count_mismatch = self
            .meta
            .msg_count
            .is_some_and(|n| n != self.stats.messages);
        self.stats
    }

    fn base(&self) -> Record<'m> {
        Record {
            app: self.meta.app,
            log_ts_us: self.meta.received_at_us,
            received_at_us: self.meta.received_at_us,
            drain_token: self.meta.drain_token,
            frame_id: self.meta.frame_id,
            ..Record::default()
        }
    }

    fn emit(&mut self, r: &Record<'_>, sink: &mut impl LineSink) {
        self.stats.messages += 1;
        if r.parse_error.is_some() {
            self.stats.parse_errors += 1;
        }
        if r.message_b64.is_some() {
            self.stats.invalid_utf8 += 1;
        }
        if let Some(n) = r.l10_dropped {
            self.stats.l10_dropped += n;
        }
        let day_number = r.log_ts_us.div_euclid(US_PER_DAY);
        if day_number != self.day.0 {
            self.day = (day_number, utc_day(r.log_ts_us));
        }
        sink.push(self.day.1, r);
        sink.inspect(r);
    }

    /// Bytes that are not a message: kept whole with the reason.
    fn raw(&mut self, raw: &[u8], reason: &'static str, sink: &mut impl LineSink) {
        let (text, exact) = lossy(raw);
        let r = Record {
            message: &text,
            message_b64: exact,
            parse_error: Some(reason),
            ..self.base()
        };
        self.emit(&r, sink);
    }

    fn message(&mut self, content: &'b [u8], mode: Mode, sink: &mut impl LineSink) {
        let m = match rfc5424::parse(content, mode) {
            Ok(m) => m,
            Err(e) => return self.raw(content, e.as_str(), sink),
        };
        let header = Record {
            log_ts_us: match m.timestamp {
                Timestamp::At(us) => us,
                Timestamp::Nil | Timestamp::Invalid => self.meta.received_at_us,
            },
            facility: Some(m.facility),
            severity: Some(m.severity),
            hostname: m.hostname,
            source: m.app_name,
            proc_id: m.proc_id,
            msg_id: m.msg_id,
            ..self.base()
        };
        if m.timestamp == Timestamp::Invalid {
            // The header is kept, but the timestamp text would be lost: the
            // message holds the whole frame, as for any parse error.
            let (text, exact) = lossy(content);
            let r = Record {
                message: &text,
                message_b64: exact,
                parse_error: Some("invalid TIMESTAMP"),
                ..header
            };
            return self.emit(&r, sink);
        }
        match std::str::from_utf8(m.msg) {
            Ok(text) => {
                let mut kv = std::mem::take(&mut self.kv);
                self.body(header, text, None, &mut kv, sink);
                self.kv = kv;
            }
            Err(_) => {
                let text = String::from_utf8_lossy(m.msg);
                let mut kv = Vec::new();
                self.body(header, &text, Some(m.msg), &mut kv, sink);
            }
        }
    }

    fn otlp_record(
        &mut self,
        record: &LogRecord,
        attributes: &[otlp::Attribute<'_>],
        resource: &[otlp::Attribute<'_>],
        sink: &mut impl LineSink,
    ) {
        let ns = if record.time_unix_nano != 0 {
            record.time_unix_nano
        } else {
            record.observed_time_unix_nano
        };
        let log_ts_us = if ns == 0 {
            self.meta.received_at_us
        } else {
            i64::try_from(ns / 1_000).unwrap_or(i64::MAX)
        };
        let either =
            |keys: &[&str]| otlp::lookup(attributes, keys).or_else(|| otlp::lookup(resource, keys));
        let trace_id = otlp::hex_id(&record.trace_id);
        let span_id = otlp::hex_id(&record.span_id);
        let text = otlp::body_text(record.body.as_ref());
        let header = Record {
            log_ts_us,
            severity: otlp::syslog_severity(record.severity_number),
            severity_text: (!record.severity_text.is_empty()).then_some(&*record.severity_text),
            hostname: either(&["host.name"]),
            source: either(SOURCE_KEYS),
            proc_id: either(PROC_ID_KEYS),
            msg_id: (!record.event_name.is_empty()).then_some(&*record.event_name),
            trace_id: trace_id.as_deref(),
            span_id: span_id.as_deref(),
            attributes,
            resource,
            ..self.base()
        };
        let mut kv = Vec::new();
        self.body_with(header, &text, None, &mut kv, attributes, sink);
    }

    /// The message text: logfmt pairs, router columns, L10 count.
    fn body<'t>(
        &mut self,
        header: Record<'_>,
        text: &'t str,
        exact: Option<&[u8]>,
        kv: &mut Vec<Pair<'t>>,
        sink: &mut impl LineSink,
    ) {
        self.body_with(header, text, exact, kv, &[], sink);
    }

    /// [`Self::body`], with router columns also taken from OTLP attributes
    /// that name them (a logfmt pair in the text wins over an attribute).
    fn body_with<'t>(
        &mut self,
        header: Record<'_>,
        text: &'t str,
        exact: Option<&[u8]>,
        kv: &mut Vec<Pair<'t>>,
        attributes: &'t [otlp::Attribute<'_>],
        sink: &mut impl LineSink,
    ) {
        kv.clear();
        let is_router = router::is_router_line(header.source, header.proc_id);
        let mut router = RouterFields::default();
        for (name, column) in ROUTER_ATTRIBUTES {
            if let Some((_, v)) = attributes.iter().find(|(k, _)| k == name) {
                router.take(column, Value::plain(v));
            }
        }
        for (k, v) in logfmt::pairs(text) {
            if is_router && router.take(k, v) {
                continue;
            }
            if let Some(slot) = kv.iter_mut().find(|(key, _)| same_key(key, k)) {
                // Last one wins, as logfmt decoders into maps do; keys are
                // folded to lowercase, so `userId` and `userid` are one key.
                if slot.0 != k {
                    self.stats.kv_case_collisions += 1;
                }
                slot.1 = v;
            } else if kv.len() < MAX_KV_PAIRS {
                kv.push((k, v));
            }
        }
        let r = Record {
            message: text,
            message_b64: exact,
            kv,
            router,
            l10_dropped: logplex::l10_dropped(header.source, header.proc_id, text),
            ..header
        };
        self.emit(&r, sink);
    }
}

/// The text of `raw`, and `raw` itself when the text had to replace some of
/// its bytes.
fn lossy(raw: &[u8]) -> (Cow<'_, str>, Option<&[u8]>) {
    let text = String::from_utf8_lossy(raw);
    let exact = matches!(text, Cow::Owned(_)).then_some(raw);
    (text, exact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use drainpipe_contract::schema::FIELDS;
    use proptest::prelude::*;
    use serde_json::{Value as Json, json};
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Sink(BTreeMap<Day, Vec<u8>>);

    impl LineSink for Sink {
        fn push(&mut self, day: Day, r: &Record<'_>) {
            r.write_json_line(self.0.entry(day).or_default());
        }
    }

    impl Sink {
        fn records(&self) -> Vec<(Day, Json)> {
            self.0
                .iter()
                .flat_map(|(day, buf)| {
                    buf.split(|&b| b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(|l| (*day, serde_json::from_slice(l).expect("valid JSON line")))
                })
                .collect()
        }
    }

    // 2026-06-17T12:00:00Z
    const RECEIVED: i64 = 1_781_697_600_000_000;

    fn meta(msg_count: Option<u64>) -> RequestMeta<'static> {
        RequestMeta {
            app: "myapp",
            drain_token: Some("d.73ea7440-270a-435a-a0ea-adf50b4e5f5a"),
            frame_id: Some("09C557EAFCFB6CF2740EE62F62971098"),
            msg_count,
            received_at_us: RECEIVED,
        }
    }

    fn frame(msg: &[u8]) -> Vec<u8> {
        let mut v = format!("{} ", msg.len()).into_bytes();
        v.extend_from_slice(msg);
        v
    }

    fn body(msgs: &[&str]) -> Vec<u8> {
        msgs.iter()
            .flat_map(|m| frame(format!("{m}\n").as_bytes()))
            .collect()
    }

    fn encode(body: &[u8], msg_count: Option<u64>) -> (BatchStats, Vec<Json>) {
        let mut sink = Sink::default();
        let stats = encode_logplex_body(&meta(msg_count), body, &mut sink);
        let recs: Vec<Json> = sink.records().into_iter().map(|(_, r)| r).collect();
        assert_eq!(recs.len() as u64, stats.messages);
        (stats, recs)
    }

    fn day(year: i32, month: u8, day: u8) -> Day {
        Day { year, month, day }
    }

    #[test]
    fn heroku_documentation_body() {
        let body = b"83 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n119 <40>1 2012-11-30T06:45:26+00:00 host app web.3 - Starting process with command `bundle exec rackup config.ru -p 24405`\n";
        let mut sink = Sink::default();
        let stats = encode_logplex_body(&meta(Some(2)), body, &mut sink);
        assert_eq!(
            stats,
            BatchStats {
                messages: 2,
                ..BatchStats::default()
            }
        );
        let recs = sink.records();
        assert_eq!(recs[0].0, day(2012, 11, 30));
        let r = &recs[0].1;
        assert_eq!(r["app"], "myapp");
        assert_eq!(r["log_ts"], "2012-11-30T06:45:29.000000Z");
        assert_eq!(r["received_at"], "2026-06-17T12:00:00.000000Z");
        assert_eq!(
            (r["facility"].clone(), r["severity"].clone()),
            (json!(5), json!(0))
        );
        assert_eq!(r["hostname"], "host");
        assert_eq!(r["source"], "app");
        assert_eq!(r["proc_id"], "web.3");
        assert_eq!(r["msg_id"], Json::Null);
        assert_eq!(r["message"], "State changed from starting to up");
        assert_eq!(r["message_b64"], Json::Null);
        assert_eq!(r["drain_token"], "d.73ea7440-270a-435a-a0ea-adf50b4e5f5a");
        assert_eq!(r["frame_id"], "09C557EAFCFB6CF2740EE62F62971098");
        assert_eq!(r["kv"], json!({}));
        assert_eq!(r["status"], Json::Null);
        assert_eq!(r["parse_error"], Json::Null);
        assert_eq!(
            recs[1].1["message"],
            "Starting process with command `bundle exec rackup config.ru -p 24405`"
        );
    }

    #[test]
    fn every_line_has_exactly_the_schema_keys() {
        let b = body(&[
            r#"<158>1 2020-02-21T16:07:34.515030+00:00 host heroku router - at=info method=GET path="/" host=quiet-lake-27894.herokuapp.com request_id=d7c85cc2-b289-4443-8c1d-2327066d6a3e fwd="37.73.223.49" dyno=web.1 connect=641ms service=3629ms status=200 bytes=153 protocol=https"#,
            "<190>1 2020-02-21T16:07:34.511485+00:00 host app web.1 - 10.11.241.172 - - [21/Feb/2020 16:07:34] \"GET / HTTP/1.1\" 200 -",
        ]);
        let mut with_garbage = b.clone();
        with_garbage.extend_from_slice(b"garbage \xff\n");
        let mut sink = Sink::default();
        encode_logplex_body(&meta(None), &with_garbage, &mut sink);
        let want: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        let mut lines = 0;
        for buf in sink.0.values() {
            for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let obj: serde_json::Map<String, Json> =
                    serde_json::from_slice(line).expect("JSON object");
                let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
                let mut want_sorted = want.clone();
                got.sort_unstable();
                want_sorted.sort_unstable();
                assert_eq!(got, want_sorted);
                lines += 1;
            }
        }
        assert_eq!(lines, 3);
    }

    #[test]
    fn router_info_line() {
        let (_, recs) = encode(
            &body(&[
                r#"<158>1 2020-02-21T16:07:34.515030+00:00 host heroku router - at=info method=GET path="/" host=quiet-lake-27894.herokuapp.com request_id=d7c85cc2-b289-4443-8c1d-2327066d6a3e fwd="37.73.223.49" dyno=web.1 connect=641ms service=3629ms status=200 bytes=153 protocol=https"#,
            ]),
            Some(1),
        );
        let r = &recs[0];
        assert_eq!(r["source"], "heroku");
        assert_eq!(r["proc_id"], "router");
        assert_eq!(r["log_ts"], "2020-02-21T16:07:34.515030Z");
        assert_eq!(r["at"], "info");
        assert_eq!(r["code"], Json::Null);
        assert_eq!(r["method"], "GET");
        assert_eq!(r["path"], "/");
        assert_eq!(r["host"], "quiet-lake-27894.herokuapp.com");
        assert_eq!(r["request_id"], "d7c85cc2-b289-4443-8c1d-2327066d6a3e");
        assert_eq!(r["fwd"], "37.73.223.49");
        assert_eq!(r["dyno"], "web.1");
        assert_eq!(r["protocol"], "https");
        assert_eq!(r["connect_ms"], 641);
        assert_eq!(r["service_ms"], 3629);
        assert_eq!(r["status"], 200);
        assert_eq!(r["bytes"], 153);
        assert_eq!(r["kv"], json!({}), "router pairs live in their columns");
    }

    #[test]
    fn router_error_line() {
        let (_, recs) = encode(
            &body(&[
                r#"<158>1 2026-06-17T11:59:30.000001+00:00 host heroku router - sock=client at=error code=H12 desc="Request timeout" method=POST path="/api/v1/orders?page=2" host=myapp.herokuapp.com request_id=8601b555-6a83-4c12-8269-97c8e32cdb22 fwd="204.204.204.204,10.1.2.3" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=https"#,
            ]),
            None,
        );
        let r = &recs[0];
        assert_eq!(r["at"], "error");
        assert_eq!(r["code"], "H12");
        assert_eq!(r["desc"], "Request timeout");
        assert_eq!(r["path"], "/api/v1/orders?page=2");
        assert_eq!(r["fwd"], "204.204.204.204,10.1.2.3");
        assert_eq!(r["service_ms"], 30000);
        assert_eq!(r["status"], 503);
        assert_eq!(r["kv"], json!({"sock": "client"}));
    }

    #[test]
    fn kv_keys_are_folded_to_lowercase_and_case_collisions_counted() {
        let (stats, recs) = encode(
            &body(&[
                "<190>1 2026-06-17T12:00:00.100000+00:00 host app web.1 - userId=1 userid=2 Event=signup",
                "<190>1 2026-06-17T12:00:00.200000+00:00 host app web.1 - \u{c9}tat=ok user=x user=y",
            ]),
            Some(2),
        );
        assert_eq!(recs[0]["kv"], json!({"userid": "2", "event": "signup"}));
        assert_eq!(recs[1]["kv"], json!({"\u{e9}tat": "ok", "user": "y"}));
        assert_eq!(
            recs[0]["message"], "userId=1 userid=2 Event=signup",
            "the message keeps the keys as sent"
        );
        assert_eq!(
            stats.kv_case_collisions, 1,
            "user=x user=y is no case collision"
        );
    }

    #[test]
    fn app_lines_keep_request_id_and_dash_prefixes() {
        let (_, recs) = encode(
            &body(&[
                "<190>1 2026-06-17T12:00:00.100000+00:00 host app web.1 - [8601b555-6a83-4c12-8269-97c8e32cdb22] Completed 200 OK in 12ms (Views: 3.1ms | ActiveRecord: 2.0ms)",
                "<190>1 2026-06-17T12:00:00.200000+00:00 host app worker.1 - - job=SendEmail status=done",
                "<190>1 2026-06-17T12:00:00.300000+00:00 host app scheduler.3161 - [heroku-exec] Starting",
            ]),
            Some(3),
        );
        assert_eq!(
            recs[0]["message"],
            "[8601b555-6a83-4c12-8269-97c8e32cdb22] Completed 200 OK in 12ms (Views: 3.1ms | ActiveRecord: 2.0ms)"
        );
        assert_eq!(recs[0]["kv"], json!({}));
        assert_eq!(recs[1]["message"], "- job=SendEmail status=done");
        assert_eq!(recs[1]["proc_id"], "worker.1");
        assert_eq!(recs[1]["kv"], json!({"job": "SendEmail", "status": "done"}));
        assert_eq!(
            recs[1]["status"],
            Json::Null,
            "only router lines fill router columns"
        );
        assert_eq!(recs[2]["message"], "[heroku-exec] Starting");
    }

    #[test]
    fn heroku_postgres_metrics_go_to_kv() {
        let (_, recs) = encode(
            &body(&[
                "<134>1 2016-02-13T21:20:25+00:00 host app heroku-postgres - source=DATABASE sample#current_transaction=15365 sample#db_size=4347350804bytes sample#tables=43 sample#active-connections=6 sample#waiting-connections=0 sample#index-cache-hit-rate=0.97116 sample#table-cache-hit-rate=0.73958 sample#load-avg-1m=0.05 sample#load-avg-5m=0.03 sample#load-avg-15m=0.035 sample#read-iops=0 sample#write-iops=112.73 sample#memory-total=15405636.0kB sample#memory-free=214004kB sample#memory-cached=14392920.0kB sample#memory-postgres=181644kB",
            ]),
            None,
        );
        let r = &recs[0];
        assert_eq!(r["source"], "app");
        assert_eq!(r["proc_id"], "heroku-postgres");
        assert_eq!(r["kv"]["source"], "DATABASE");
        assert_eq!(r["kv"]["sample#db_size"], "4347350804bytes");
        assert_eq!(r["kv"]["sample#memory-postgres"], "181644kB");
        assert_eq!(r["kv"].as_object().expect("map").len(), 17);
    }

    #[test]
    fn l10_drops_are_counted() {
        let (stats, recs) = encode(
            &body(&[
                "<172>1 2016-10-11T09:44:49+00:00 host heroku logplex - Error L10 (output buffer overflow): 13 messages dropped since 2016-10-11T09:43:26+00:00.",
                "<172>1 2025-10-22T14:25:27.747804+00:00 host heroku logplex - Error L10 (output buffer overflow): drain 'd.efe51fd5-8fdb-4153-b094-f5e9f7df3058' dropped 12 messages since 2025-10-22T14:24:27.798935+00:00.",
            ]),
            Some(2),
        );
        assert_eq!(stats.l10_dropped, 25);
        assert_eq!(recs[0]["l10_dropped"], 13);
        assert_eq!(recs[1]["l10_dropped"], 12);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_kept_exactly() {
        let mut b =
            frame(b"<190>1 2026-06-17T12:00:00+00:00 host app web.1 - caf\xe9 user=\xffx ok=1\n");
        b.extend(frame(
            b"<190>1 2026-06-17T12:00:01+00:00 host app web.1 - fine\n",
        ));
        let (stats, recs) = encode(&b, Some(2));
        assert_eq!(stats.invalid_utf8, 1);
        assert_eq!(stats.parse_errors, 0);
        let r = &recs[0];
        assert_eq!(r["message"], "caf\u{fffd} user=\u{fffd}x ok=1");
        let exact = base64::engine::general_purpose::STANDARD
            .decode(r["message_b64"].as_str().expect("b64 string"))
            .expect("base64");
        assert_eq!(exact, b"caf\xe9 user=\xffx ok=1");
        assert_eq!(r["kv"], json!({"user": "\u{fffd}x", "ok": "1"}));
        assert_eq!(recs[1]["message_b64"], Json::Null);
    }

    #[test]
    fn broken_framing_keeps_the_whole_frame() {
        let good =
            "<40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n";
        let mut b = frame(good.as_bytes());
        b.extend_from_slice(
            b"119 <40>1 2012-11-30T06:45:26+00:00 host app web.3 - Starting process \xff",
        );
        let (stats, recs) = encode(&b, Some(2));
        assert_eq!(stats.messages, 2);
        assert_eq!(stats.parse_errors, 1);
        assert_eq!(stats.invalid_utf8, 1);
        assert!(!stats.count_mismatch);
        let r = &recs[1];
        assert_eq!(
            r["parse_error"],
            "truncated frame: count exceeds the bytes left"
        );
        assert_eq!(
            r["message"],
            "119 <40>1 2012-11-30T06:45:26+00:00 host app web.3 - Starting process \u{fffd}"
        );
        assert!(r["message_b64"].is_string());
        assert_eq!(r["log_ts"], "2026-06-17T12:00:00.000000Z", "receipt time");
        assert_eq!(r["source"], Json::Null);
        assert_eq!(r["facility"], Json::Null);
        assert_eq!(r["app"], "myapp");
        assert_eq!(r["frame_id"], "09C557EAFCFB6CF2740EE62F62971098");
    }

    #[test]
    fn not_octet_counted_body() {
        let b = b"<40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n<40>1 2012-11-30T06:45:26+00:00 host app web.3 - Starting process\n";
        let (stats, recs) = encode(b, Some(2));
        assert_eq!(stats.parse_errors, 2);
        assert_eq!(recs[0]["parse_error"], "not octet-counted");
        assert_eq!(
            recs[0]["message"],
            "<40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n"
        );
    }

    #[test]
    fn bad_header_keeps_the_frame_content() {
        let (stats, recs) = encode(
            &body(&["Oct 11 22:14:15 mymachine su: 'su root' failed"]),
            None,
        );
        assert_eq!(stats.parse_errors, 1);
        assert_eq!(recs[0]["parse_error"], "invalid PRI");
        assert_eq!(
            recs[0]["message"],
            "Oct 11 22:14:15 mymachine su: 'su root' failed"
        );
    }

    #[test]
    fn missing_and_invalid_timestamps_use_receipt_time() {
        let (stats, recs) = encode(
            &body(&[
                "<190>1 - host app web.1 - no timestamp",
                "<190>1 2026-06-17 host app web.1 - bad timestamp",
            ]),
            None,
        );
        assert_eq!(recs[0]["log_ts"], "2026-06-17T12:00:00.000000Z");
        assert_eq!(recs[0]["parse_error"], Json::Null);
        assert_eq!(recs[0]["message"], "no timestamp");
        assert_eq!(stats.parse_errors, 1);
        let r = &recs[1];
        assert_eq!(r["log_ts"], "2026-06-17T12:00:00.000000Z");
        assert_eq!(r["parse_error"], "invalid TIMESTAMP");
        assert_eq!(
            r["message"],
            "<190>1 2026-06-17 host app web.1 - bad timestamp"
        );
        assert_eq!(r["proc_id"], "web.1", "the rest of the header is kept");
    }

    #[test]
    fn records_are_partitioned_by_utc_day_of_their_timestamp() {
        let b = body(&[
            "<190>1 2026-06-16T23:59:59.999999+00:00 host app web.1 - late",
            "<190>1 2026-06-17T01:30:00+02:00 host app web.1 - early local, late UTC",
            "<190>1 2026-06-17T00:00:00Z host app web.1 - midnight",
            "<190>1 - host app web.1 - no timestamp",
        ]);
        let mut sink = Sink::default();
        encode_logplex_body(&meta(None), &b, &mut sink);
        let recs = sink.records();
        let by_day: Vec<(Day, &str)> = recs
            .iter()
            .map(|(d, r)| (*d, r["message"].as_str().expect("string")))
            .collect();
        assert_eq!(
            by_day,
            vec![
                (day(2026, 6, 16), "late"),
                (day(2026, 6, 16), "early local, late UTC"),
                (day(2026, 6, 17), "midnight"),
                (day(2026, 6, 17), "no timestamp"),
            ]
        );
        assert_eq!(recs[1].1["log_ts"], "2026-06-16T23:30:00.000000Z");
    }

    #[test]
    fn count_mismatch() {
        let b = body(&[
            "<190>1 - host app web.1 - one",
            "<190>1 - host app web.1 - two",
        ]);
        assert!(encode(&b, Some(3)).0.count_mismatch);
        assert!(!encode(&b, Some(2)).0.count_mismatch);
        assert!(!encode(&b, None).0.count_mismatch);
        assert!(encode(b"", Some(1)).0.count_mismatch);
        assert_eq!(encode(b"", Some(0)).0, BatchStats::default());
    }

    #[test]
    fn duplicate_keys_last_wins_and_pairs_are_capped() {
        let (_, recs) = encode(&body(&["<190>1 - host app web.1 - a=1 b=2 a=3"]), None);
        assert_eq!(recs[0]["kv"], json!({"a": "3", "b": "2"}));
        let many: String = (0..MAX_KV_PAIRS + 10).map(|i| format!("k{i}=v ")).collect();
        let (_, recs) = encode(&body(&[&format!("<190>1 - host app web.1 - {many}")]), None);
        assert_eq!(recs[0]["kv"].as_object().expect("map").len(), MAX_KV_PAIRS);
        assert_eq!(recs[0]["message"].as_str().expect("s").len(), many.len());
    }

    #[test]
    fn quoted_values_with_escapes_reach_kv_resolved() {
        let (_, recs) = encode(
            &body(&[
                r#"<190>1 - host app web.1 - level=error err="open \"/tmp/x\": no such file\n" path=C:\\tmp"#,
            ]),
            None,
        );
        assert_eq!(
            recs[0]["kv"],
            json!({"level": "error", "err": "open \"/tmp/x\": no such file\n", "path": "C:\\\\tmp"})
        );
    }

    #[test]
    fn syslog_body_keeps_structured_data_out_of_the_message_and_raw_frames_whole() {
        let mut body = Vec::new();
        syslog_stream::push_stored(
            &mut body,
            FrameKind::Message,
            br#"<165>1 2026-06-17T12:00:00.003Z d.73ea7440-270a-435a-a0ea-adf50b4e5f5a app web.1 ID47 [exampleSDID@32473 iut="3" eventSource="Application"] An application event"#,
        );
        syslog_stream::push_stored(
            &mut body,
            FrameKind::Message,
            b"<40>1 2012-11-30T06:45:29+00:00 d.73ea7440-270a-435a-a0ea-adf50b4e5f5a app web.3 - - State changed from starting to up\n",
        );
        syslog_stream::push_stored(
            &mut body,
            FrameKind::Oversized,
            b"<13>1 - d.x app web.1 - - xxxx",
        );
        syslog_stream::push_stored(&mut body, FrameKind::Truncated, b"<13>1 - d.x app we\xff");
        let mut sink = Sink::default();
        let stats = encode_body(&meta(None), BodyFormat::SyslogFrames, &body, &mut sink);
        assert_eq!(stats.messages, 4);
        assert_eq!(stats.parse_errors, 2);
        let recs = sink.records();
        let r = &recs
            .iter()
            .find(|(_, r)| r["msg_id"] == "ID47")
            .expect("SD record")
            .1;
        assert_eq!(r["message"], "An application event");
        assert_eq!(r["log_ts"], "2026-06-17T12:00:00.003000Z");
        assert_eq!(r["hostname"], "d.73ea7440-270a-435a-a0ea-adf50b4e5f5a");
        let r = &recs
            .iter()
            .find(|(_, r)| r["proc_id"] == "web.3")
            .expect("Logplex record")
            .1;
        assert_eq!(r["message"], "State changed from starting to up");
        assert_eq!(r["hostname"], "d.73ea7440-270a-435a-a0ea-adf50b4e5f5a");
        assert_eq!(r["parse_error"], Json::Null);
        let raw: Vec<&Json> = recs
            .iter()
            .map(|(_, r)| r)
            .filter(|r| !r["parse_error"].is_null())
            .collect();
        assert_eq!(raw[0]["message"], "<13>1 - d.x app web.1 - - xxxx");
        assert_eq!(
            raw[0]["parse_error"],
            FrameKind::Oversized.parse_error().expect("text")
        );
        assert_eq!(
            raw[1]["parse_error"],
            FrameKind::Truncated.parse_error().expect("text")
        );
        assert!(raw[1]["message_b64"].is_string());
    }

    fn exact_message(r: &Json) -> Vec<u8> {
        match r["message_b64"].as_str() {
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .expect("base64"),
            None => r["message"].as_str().expect("message").as_bytes().to_vec(),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_give_valid_json_and_keep_every_byte(
            body in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\n'), Just(b' '), Just(b'<'), Just(b'"'), Just(b'='), (b'0'..=b'9')],
                0..600)
        ) {
            let mut sink = Sink::default();
            let stats = encode_logplex_body(&meta(None), &body, &mut sink);
            let recs = sink.records();
            prop_assert_eq!(recs.len() as u64, stats.messages);
            prop_assert_eq!(stats.messages as usize, logplex::frames(&body).count());
            // Each record holds its frame's bytes: the message for parsed
            // frames, the whole frame for the rest.
            for (f, (_, r)) in logplex::frames(&body).zip(&recs) {
                let exact = exact_message(r);
                match f {
                    Frame::Broken { raw, .. } => prop_assert_eq!(&exact[..], raw),
                    Frame::Counted { content, .. } => {
                        let content = logplex::strip_newline(content);
                        if r["parse_error"].is_null() {
                            prop_assert!(content.ends_with(&exact));
                        } else {
                            prop_assert_eq!(&exact[..], content);
                        }
                    }
                }
            }
        }

        #[test]
        fn message_bytes_survive_exactly(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..10)
        ) {
            let mut b = Vec::new();
            for m in &msgs {
                let mut content = b"<190>1 2026-06-17T12:00:00.5+00:00 host app web.1 - ".to_vec();
                content.extend_from_slice(m);
                content.push(b'\n');
                b.extend(frame(&content));
            }
            let (stats, recs) = encode(&b, Some(msgs.len() as u64));
            prop_assert!(!stats.count_mismatch);
            prop_assert_eq!(stats.parse_errors, 0);
            for (m, r) in msgs.iter().zip(&recs) {
                prop_assert_eq!(&exact_message(r), m);
            }
        }
    }

    // ---- OTLP (Fir telemetry drains) ----

    const FIR_JSON: &[u8] = include_bytes!("../../testdata/otlp/fir-logs.json");

    fn encode_otlp(format: BodyFormat, body: &[u8]) -> (BatchStats, Vec<Json>) {
        let mut sink = Sink::default();
        let meta = RequestMeta {
            drain_token: None,
            frame_id: None,
            ..meta(None)
        };
        let stats = encode_body(&meta, format, body, &mut sink);
        let recs: Vec<Json> = sink.records().into_iter().map(|(_, r)| r).collect();
        assert_eq!(recs.len() as u64, stats.messages);
        (stats, recs)
    }

    fn check_fir_records(recs: &[Json]) {
        assert_eq!(recs.len(), 3);
        let want: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        for r in recs {
            let keys: Vec<&str> = r
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            let mut sorted_want = want.clone();
            sorted_want.sort_unstable();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, sorted_want, "every schema field, nothing else");
        }
        let first = &recs[0];
        assert_eq!(first["app"], "myapp");
        assert_eq!(first["log_ts"], "2026-06-17T12:00:00.123456Z");
        assert_eq!(first["severity"], 3, "ERROR is syslog err");
        assert_eq!(first["severity_text"], "ERROR");
        assert_eq!(first["facility"], Json::Null);
        assert_eq!(first["trace_id"], "5b8efff798038103d269b633813fc60c");
        assert_eq!(first["span_id"], "eee19b7ec3c1b174");
        assert_eq!(first["message"], "payment failed user=ann amount=12.50");
        assert_eq!(first["kv"], json!({"user": "ann", "amount": "12.50"}));
        assert_eq!(first["proc_id"], "web.1");
        assert_eq!(
            first["method"], "POST",
            "router column from a semconv attribute"
        );
        assert_eq!(first["status"], 502);
        assert_eq!(
            first["attributes"],
            json!({
                "http.request.method": "POST",
                "http.response.status_code": "502",
                "retry": "true",
                "ratio": "0.25",
                "tags": "[\"a\",2]",
                "http.request.header.accept": "text/html",
            })
        );
        assert_eq!(first["resource"]["service.name"], "myapp");
        assert_eq!(
            first["resource"]["heroku.app.id"],
            "2daa2797-e42b-4624-9322-ec3f968df4da"
        );
        assert_eq!(first["drain_token"], Json::Null);
        assert_eq!(first["parse_error"], Json::Null);

        let structured = &recs[1];
        assert_eq!(
            structured["log_ts"], "2026-06-17T12:00:01.000000Z",
            "observed time when time is 0"
        );
        assert_eq!(structured["severity"], 6, "enum name accepted");
        let body: Json =
            serde_json::from_str(structured["message"].as_str().expect("text")).expect("JSON text");
        assert_eq!(body, json!({"event": "signup", "n": 3}));
        assert_eq!(structured["trace_id"], Json::Null);

        let bare = &recs[2];
        assert_eq!(
            bare["log_ts"], bare["received_at"],
            "receipt time when both are 0"
        );
        assert_eq!(bare["severity"], Json::Null);
        assert_eq!(bare["message"], "no timestamps at all");
    }

    #[test]
    fn otlp_json_records_arrive_field_by_field() {
        let (stats, recs) = encode_otlp(BodyFormat::OtlpJson, FIR_JSON);
        assert_eq!(stats.parse_errors, 0);
        check_fir_records(&recs);
    }

    #[test]
    fn otlp_protobuf_gives_the_same_records_as_json() {
        let request = otlp::decode(FIR_JSON, otlp::Encoding::Json).expect("sample decodes");
        let body = prost::Message::encode_to_vec(&request);
        let (stats, recs) = encode_otlp(BodyFormat::OtlpProtobuf, &body);
        assert_eq!(stats.parse_errors, 0);
        check_fir_records(&recs);
    }

    #[test]
    fn otlp_body_that_does_not_decode_is_kept_exactly() {
        // A protobuf string field holding invalid UTF-8 (field 1 of
        // AnyValue is string_value): prost refuses the whole request.
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("MARK".into())),
                        }),
                        ..LogRecord::default()
                    }],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        };
        let mut body = prost::Message::encode_to_vec(&request);
        let at = body.windows(4).position(|w| w == b"MARK").expect("marker");
        body[at] = 0xff;
        for (format, bytes) in [
            (BodyFormat::OtlpProtobuf, body.clone()),
            (BodyFormat::OtlpJson, b"{\"resourceLogs\": [".to_vec()),
            (
                BodyFormat::OtlpProtobuf,
                b"\xff\xff\xff not protobuf".to_vec(),
            ),
        ] {
            let (stats, recs) = encode_otlp(format, &bytes);
            assert_eq!((stats.messages, stats.parse_errors), (1, 1));
            let r = &recs[0];
            assert!(
                r["parse_error"]
                    .as_str()
                    .expect("reason")
                    .contains("does not decode")
            );
            let kept = match r["message_b64"].as_str() {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64"),
                None => r["message"].as_str().expect("text").as_bytes().to_vec(),
            };
            assert_eq!(kept, bytes, "every byte kept");
        }
    }

    #[test]
    fn otlp_attribute_keys_differing_in_case_fold_into_one() {
        let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"},
            "attributes":[{"key":"userId","value":{"stringValue":"1"}},{"key":"userid","value":{"stringValue":"2"}}]}]}]}]}"#;
        let (stats, recs) = encode_otlp(BodyFormat::OtlpJson, body);
        assert_eq!(recs[0]["attributes"], json!({"userid": "2"}));
        assert_eq!(stats.kv_case_collisions, 1);
    }
}
