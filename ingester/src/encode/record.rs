//! The archive record: one JSON object per message, one line each.
//!
//! The keys are [`drainpipe_contract::schema::FIELDS`], which the operator
//! turns into Glue columns: the JSON writer must emit exactly these keys (a
//! test keeps the two in step).

use crate::parse::logfmt::{Piece, Unescape, Value};
use crate::parse::otlp::Attribute;
use crate::parse::router::RouterFields;
use crate::parse::timestamp::{FORMATTED_LEN, MAX_US, MIN_US, format_utc_us};
use base64::Engine as _;
#[cfg(test)]
use drainpipe_contract::schema::FIELDS;

/// One archive record, borrowing the request body it came from.
///
/// Fields map one to one onto [`FIELDS`]; `None` is written as JSON `null`.
/// Every line carries every key, in `FIELDS` order: `message_b64` is `null`
/// when the message was valid UTF-8 rather than left out, so all lines have
/// the same shape for `jq` and friends (the OpenX SerDe reads a missing key
/// and `null` alike, and after gzip the constant text costs next to nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct Record<'a> {
    pub app: &'a str,
    /// Microseconds since the Unix epoch, UTC.
    pub log_ts_us: i64,
    pub received_at_us: i64,
    pub facility: Option<u8>,
    pub severity: Option<u8>,
    pub hostname: Option<&'a str>,
    pub source: Option<&'a str>,
    pub proc_id: Option<&'a str>,
    pub msg_id: Option<&'a str>,
    /// Message text, invalid UTF-8 already replaced by U+FFFD.
    pub message: &'a str,
    /// The exact message bytes, set only when they are not valid UTF-8;
    /// written base64.
    pub message_b64: Option<&'a [u8]>,
    pub drain_token: Option<&'a str>,
    pub frame_id: Option<&'a str>,
    /// logfmt pairs not taken into typed columns. Keys are unique.
    pub kv: &'a [(&'a str, Value<'a>)],
    pub router: RouterFields<'a>,
    pub l10_dropped: Option<u64>,
    pub parse_error: Option<&'a str>,
    /// OTLP only: hex trace and span ids, severity text as sent.
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
    pub severity_text: Option<&'a str>,
    /// OTLP only: flattened log record and resource attributes. Keys are
    /// unique once lowercased (the OTLP encoder folds them).
    pub attributes: &'a [Attribute<'a>],
    pub resource: &'a [Attribute<'a>],
}

impl Record<'_> {
    /// Append the record as one JSON object and a newline (tests; the
    /// encoder always reuses a cache).
    #[cfg(test)]
    pub(crate) fn write_json_line(&self, out: &mut Vec<u8>) {
        self.write_json_line_cached(out, &mut WriterCache::default());
    }

    /// [`Record::write_json_line`], reusing formatting work from the previous
    /// records written with the same cache.
    pub fn write_json_line_cached(&self, out: &mut Vec<u8>, cache: &mut WriterCache) {
        out.reserve(640 + self.message.len() + self.message.len() / 8);
        out.extend_from_slice(b"{\"app\":");
        write_str(out, self.app);
        out.extend_from_slice(b",\"log_ts\":");
        cache.log_ts.write(out, self.log_ts_us);
        out.extend_from_slice(b",\"received_at\":");
        cache.received_at.write(out, self.received_at_us);
        out.extend_from_slice(b",\"facility\":");
        write_opt_u64(out, self.facility.map(u64::from));
        out.extend_from_slice(b",\"severity\":");
        write_opt_u64(out, self.severity.map(u64::from));
        out.extend_from_slice(b",\"hostname\":");
        write_opt_str(out, self.hostname);
        out.extend_from_slice(b",\"source\":");
        write_opt_str(out, self.source);
        out.extend_from_slice(b",\"proc_id\":");
        write_opt_str(out, self.proc_id);
        out.extend_from_slice(b",\"msg_id\":");
        write_opt_str(out, self.msg_id);
        out.extend_from_slice(b",\"message\":");
        write_str(out, self.message);
        out.extend_from_slice(b",\"message_b64\":");
        match self.message_b64 {
            Some(bytes) => write_base64(out, bytes),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"drain_token\":");
        write_opt_str(out, self.drain_token);
        out.extend_from_slice(b",\"frame_id\":");
        write_opt_str(out, self.frame_id);
        out.extend_from_slice(b",\"kv\":{");
        for (i, (k, v)) in self.kv.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(out, k);
            out.push(b':');
            write_value(out, *v);
        }
        out.push(b'}');
        let r = &self.router;
        out.extend_from_slice(b",\"at\":");
        write_opt_value(out, r.at);
        out.extend_from_slice(b",\"code\":");
        write_opt_value(out, r.code);
        out.extend_from_slice(b",\"desc\":");
        write_opt_value(out, r.desc);
        out.extend_from_slice(b",\"method\":");
        write_opt_value(out, r.method);
        out.extend_from_slice(b",\"path\":");
        write_opt_value(out, r.path);
        out.extend_from_slice(b",\"host\":");
        write_opt_value(out, r.host);
        out.extend_from_slice(b",\"request_id\":");
        write_opt_value(out, r.request_id);
        out.extend_from_slice(b",\"fwd\":");
        write_opt_value(out, r.fwd);
        out.extend_from_slice(b",\"dyno\":");
        write_opt_value(out, r.dyno);
        out.extend_from_slice(b",\"protocol\":");
        write_opt_value(out, r.protocol);
        out.extend_from_slice(b",\"connect_ms\":");
        write_opt_i64(out, r.connect_ms.map(i64::from));
        out.extend_from_slice(b",\"service_ms\":");
        write_opt_i64(out, r.service_ms.map(i64::from));
        out.extend_from_slice(b",\"status\":");
        write_opt_i64(out, r.status.map(i64::from));
        out.extend_from_slice(b",\"bytes\":");
        write_opt_i64(out, r.bytes);
        out.extend_from_slice(b",\"l10_dropped\":");
        write_opt_u64(out, self.l10_dropped);
        out.extend_from_slice(b",\"parse_error\":");
        write_opt_str(out, self.parse_error);
        out.extend_from_slice(b",\"trace_id\":");
        write_opt_str(out, self.trace_id);
        out.extend_from_slice(b",\"span_id\":");
        write_opt_str(out, self.span_id);
        out.extend_from_slice(b",\"severity_text\":");
        write_opt_str(out, self.severity_text);
        out.extend_from_slice(b",\"attributes\":");
        write_string_map(out, self.attributes);
        out.extend_from_slice(b",\"resource\":");
        write_string_map(out, self.resource);
        out.extend_from_slice(b"}\n");
    }
}

/// The last second formatted for one timestamp column: messages of a batch
/// are close in time, so most timestamps only need their fraction written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SecondCache {
    sec: i64,
    /// `YYYY-MM-DDTHH:MM:SS.`
    text: [u8; 20],
}

impl Default for SecondCache {
    fn default() -> Self {
        SecondCache {
            sec: i64::MIN,
            text: [0; 20],
        }
    }
}

impl SecondCache {
    /// `us` as `2026-06-17T12:00:00.123456Z`, what
    /// [`format_utc_us`] gives, reusing the date and time of the last call.
    #[inline]
    pub(crate) fn format(&mut self, us: i64) -> [u8; FORMATTED_LEN] {
        let us = us.clamp(MIN_US, MAX_US);
        let sec = us.div_euclid(1_000_000);
        if sec != self.sec {
            self.text.copy_from_slice(&format_utc_us(us)[..20]);
            self.sec = sec;
        }
        let frac = us.rem_euclid(1_000_000) as usize;
        let mut b = [0u8; FORMATTED_LEN];
        b[..20].copy_from_slice(&self.text);
        let (hi, mid, lo) = (frac / 10_000 * 2, frac / 100 % 100 * 2, frac % 100 * 2);
        b[20..22].copy_from_slice(&DIGIT_PAIRS[hi..hi + 2]);
        b[22..24].copy_from_slice(&DIGIT_PAIRS[mid..mid + 2]);
        b[24..26].copy_from_slice(&DIGIT_PAIRS[lo..lo + 2]);
        b[26] = b'Z';
        b
    }

    /// [`Self::format`] as a JSON string.
    #[inline]
    fn write(&mut self, out: &mut Vec<u8>, us: i64) {
        let mut b = [b'"'; FORMATTED_LEN + 2];
        b[1..=FORMATTED_LEN].copy_from_slice(&self.format(us));
        out.extend_from_slice(&b);
    }
}

/// Formatting state kept across the records of a batch (see
/// [`Record::write_json_line_cached`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterCache {
    log_ts: SecondCache,
    received_at: SecondCache,
}

/// A `map<string,string>` column: keys folded like `kv` keys.
fn write_string_map(out: &mut Vec<u8>, pairs: &[Attribute<'_>]) {
    out.push(b'{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(out, k);
        out.push(b':');
        write_str(out, v);
    }
    out.push(b'}');
}

fn write_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_opt_value(out: &mut Vec<u8>, v: Option<Value<'_>>) {
    match v {
        Some(v) => write_value(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_opt_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => write_u64(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_opt_i64(out: &mut Vec<u8>, n: Option<i64>) {
    match n {
        Some(n) if n < 0 => {
            out.push(b'-');
            write_u64(out, n.unsigned_abs());
        }
        Some(n) => write_u64(out, n.unsigned_abs()),
        None => out.extend_from_slice(b"null"),
    }
}

const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Decimal digits, two at a time (the itoa approach).
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    let n = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + n, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

/// A JSON string: quotes, escapes as needed.
/// A `kv` key, folded to lowercase. Athena's OpenX SerDe lowercases JSON keys
/// and fails a row whose keys then collide, so the archive never holds two
/// keys that differ only in case (docs/athena.md). Already-lowercase keys, the
/// usual case, are written as they are, without an allocation.
fn write_key(out: &mut Vec<u8>, k: &str) {
    if k.is_ascii() {
        out.push(b'"');
        let start = out.len();
        write_escaped(out, k.as_bytes());
        out[start..].make_ascii_lowercase();
        out.push(b'"');
    } else if k.chars().any(char::is_uppercase) {
        write_str(out, &k.to_lowercase());
    } else {
        write_str(out, k);
    }
}

/// Whether two logfmt keys are the same `kv` key once folded as [`write_key`] does.
pub(crate) fn same_key(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_escaped(out, s.as_bytes());
    out.push(b'"');
}

/// A logfmt value as a JSON string, resolving its own escapes on the way.
fn write_value(out: &mut Vec<u8>, v: Value<'_>) {
    out.push(b'"');
    if v.has_escapes() {
        let mut buf = [0u8; 4];
        for piece in Unescape::new(v.raw()) {
            match piece {
                Piece::Text(t) => write_escaped(out, t.as_bytes()),
                Piece::Char(c) => write_escaped(out, c.encode_utf8(&mut buf).as_bytes()),
            }
        }
    } else {
        write_escaped(out, v.raw().as_bytes());
    }
    out.push(b'"');
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` that JSON needs escaped (`"`, `\`,
/// below 0x20). Classic "has zero byte" / "has byte less than n": the lowest
/// set bit marks the first match exactly (false positives can only sit above
/// a true one, carried by the borrow).
#[inline]
fn escape_mask(x: u64) -> u64 {
    let quote = x ^ (LO * u64::from(b'"'));
    let backslash = x ^ (LO * u64::from(b'\\'));
    (quote.wrapping_sub(LO) & !quote
        | backslash.wrapping_sub(LO) & !backslash
        | x.wrapping_sub(LO * 0x20) & !x)
        & HI
}

/// Index of the first byte JSON needs escaped, eight bytes at a time.
#[inline]
fn find_escape(b: &[u8]) -> Option<usize> {
    let mut chunks = b.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let hit = escape_mask(u64::from_le_bytes(w));
        if hit != 0 {
            return Some(base + (hit.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    let rest = chunks.remainder().len();
    if rest == 0 {
        return None;
    }
    if b.len() >= 8 {
        // Re-read the last eight bytes (no partial copy: a padded copy costs
        // a store-forwarding stall) and ignore the ones already checked.
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[b.len() - 8..]);
        let hit = escape_mask(u64::from_le_bytes(w)) & (u64::MAX << (8 * (8 - rest)));
        return (hit != 0).then(|| b.len() - 8 + (hit.trailing_zeros() / 8) as usize);
    }
    b.iter().position(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// The body of a JSON string for `b` (valid UTF-8), escaped.
pub fn write_escaped(out: &mut Vec<u8>, b: &[u8]) {
    let mut rest = b;
    while let Some(i) = find_escape(rest) {
        out.extend_from_slice(&rest[..i]);
        let c = rest[i];
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

    /// The keys of a JSON object, in the order they appear.
    fn keys_in_order(line: &[u8]) -> Vec<String> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(keys)
            }
        }
        let mut de = serde_json::Deserializer::from_slice(line);
        de.deserialize_map(Keys).expect("a JSON object")
    }

    fn line(r: &Record<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        r.write_json_line(&mut out);
        out
    }

    fn full_router_record<'a>(kv: &'a [(&'a str, Value<'a>)]) -> Record<'a> {
        Record {
            app: "myapp",
            log_ts_us: 1_781_697_600_123_456,
            received_at_us: 1_781_697_601_000_000,
            facility: Some(19),
            severity: Some(6),
            hostname: Some("host"),
            source: Some("heroku"),
            proc_id: Some("router"),
            msg_id: None,
            message: r#"at=error code=H12 desc="Request timeout" method=GET path="/" host=myapp.herokuapp.com request_id=8601b555 fwd="1.2.3.4" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=https sock=client"#,
            message_b64: None,
            drain_token: Some("d.73ea7440-270a-435a-a0ea-adf50b4e5f5a"),
            frame_id: Some("8af0c3c9dd0e7c1f9f3b6c4d1b1e5a77"),
            kv,
            router: RouterFields {
                at: Some(Value::plain("error")),
                code: Some(Value::plain("H12")),
                desc: Some(Value::quoted("Request timeout")),
                method: Some(Value::plain("GET")),
                path: Some(Value::quoted("/")),
                host: Some(Value::plain("myapp.herokuapp.com")),
                request_id: Some(Value::plain("8601b555")),
                fwd: Some(Value::quoted("1.2.3.4")),
                dyno: Some(Value::plain("web.1")),
                protocol: Some(Value::plain("https")),
                connect_ms: Some(0),
                service_ms: Some(30000),
                status: Some(503),
                bytes: Some(0),
            },
            l10_dropped: None,
            parse_error: None,
            ..Record::default()
        }
    }

    #[test]
    fn keys_are_exactly_fields_in_order() {
        let kv = [("sock", Value::plain("client"))];
        let want: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        for r in [full_router_record(&kv), Record::default()] {
            let out = line(&r);
            assert_eq!(out.last(), Some(&b'\n'));
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
            assert_eq!(keys_in_order(&out), want);
        }
    }

    #[test]
    fn values_and_types() {
        let kv = [("sock", Value::plain("client"))];
        let out = line(&full_router_record(&kv));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["log_ts"], "2026-06-17T12:00:00.123456Z");
        assert_eq!(v["received_at"], "2026-06-17T12:00:01.000000Z");
        assert_eq!(v["facility"], 19);
        assert_eq!(v["severity"], 6);
        assert_eq!(v["msg_id"], serde_json::Value::Null);
        assert_eq!(v["message_b64"], serde_json::Value::Null);
        assert_eq!(v["desc"], "Request timeout");
        assert_eq!(v["service_ms"], 30000);
        assert_eq!(v["status"], 503);
        assert_eq!(v["bytes"], 0);
        assert_eq!(v["kv"], serde_json::json!({"sock": "client"}));
        assert_eq!(v["l10_dropped"], serde_json::Value::Null);
        assert!(
            v["message"]
                .as_str()
                .expect("string")
                .contains(r#"desc="Request timeout""#)
        );
    }

    #[test]
    fn base64_and_escaped_values() {
        let kv = [
            ("msg", Value::quoted(r#"say \"hi\"\n"#)),
            ("u", Value::quoted(r"caf\u00e9")),
        ];
        let r = Record {
            message: "caf\u{fffd} \"q\" \\ \u{1}\t",
            message_b64: Some(b"caf\xe9 \"q\" \\ \x01\t"),
            kv: &kv,
            l10_dropped: Some(13),
            ..Record::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&line(&r)).expect("valid JSON");
        assert_eq!(v["message"], "caf\u{fffd} \"q\" \\ \u{1}\t");
        assert_eq!(v["message_b64"], "Y2Fm6SAicSIgXCABCQ==");
        assert_eq!(v["kv"]["msg"], "say \"hi\"\n");
        assert_eq!(v["kv"]["u"], "café");
        assert_eq!(v["l10_dropped"], 13);
    }

    #[test]
    fn numbers() {
        for n in [
            0u64,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            12345,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        let mut out = Vec::new();
        write_opt_i64(&mut out, Some(i64::MIN));
        assert_eq!(out, i64::MIN.to_string().into_bytes());
    }

    proptest! {
        #[test]
        fn escaping_matches_serde_json(s in any::<String>()) {
            let mut out = Vec::new();
            write_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).expect("valid JSON string");
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(out, serde_json::to_vec(&s).expect("serialises"));
        }

        #[test]
        fn escaping_control_heavy_strings(
            s in proptest::collection::vec(prop_oneof![Just('"'), Just('\\'), Just('\n'), Just('\u{1f}'), Just('a'), Just('é')], 0..64)
        ) {
            let s: String = s.into_iter().collect();
            let mut out = Vec::new();
            write_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).expect("valid JSON string");
            prop_assert_eq!(back, s);
        }

        #[test]
        fn cached_timestamps_match_uncached(
            times in proptest::collection::vec(
                prop_oneof![MIN_US..=MAX_US, 1_781_697_600_000_000i64..1_781_697_603_000_000, Just(i64::MIN), Just(i64::MAX)],
                1..20)
        ) {
            let mut cache = WriterCache::default();
            for us in times {
                let r = Record { log_ts_us: us, received_at_us: us / 2, ..Record::default() };
                let mut cached = Vec::new();
                r.write_json_line_cached(&mut cached, &mut cache);
                let v: serde_json::Value = serde_json::from_slice(&cached).expect("valid JSON");
                let want = String::from_utf8(format_utc_us(us).to_vec()).expect("ascii");
                prop_assert_eq!(v["log_ts"].as_str(), Some(want.as_str()));
                prop_assert_eq!(cached, line(&r));
            }
        }

        #[test]
        fn numbers_match_display(n in any::<u64>()) {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            prop_assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
