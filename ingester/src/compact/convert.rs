//! JSON archive lines back into records, to convert a closed JSON day into
//! Parquet. The line is what `Record::write_json_line_cached` wrote; a key
//! this version does not know is refused, not dropped, so a conversion can
//! never lose a column.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;

use crate::encode::columns::Columns;
use crate::encode::record::Record;
use crate::parse::logfmt::Value;
use crate::parse::router::RouterFields;
use crate::parse::timestamp::parse_rfc3339_us;

type Text<'a> = Option<Cow<'a, str>>;
/// A JSON object of strings, as key-value pairs in its order.
type StringPairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    app: Cow<'a, str>,
    #[serde(borrow)]
    log_ts: Cow<'a, str>,
    #[serde(borrow)]
    received_at: Cow<'a, str>,
    facility: Option<u8>,
    severity: Option<u8>,
    #[serde(borrow)]
    hostname: Text<'a>,
    #[serde(borrow)]
    source: Text<'a>,
    #[serde(borrow)]
    proc_id: Text<'a>,
    #[serde(borrow)]
    msg_id: Text<'a>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(borrow)]
    message_b64: Text<'a>,
    #[serde(borrow)]
    drain_token: Text<'a>,
    #[serde(borrow)]
    frame_id: Text<'a>,
    #[serde(borrow, default, deserialize_with = "pairs")]
    kv: StringPairs<'a>,
    #[serde(borrow)]
    at: Text<'a>,
    #[serde(borrow)]
    code: Text<'a>,
    #[serde(borrow)]
    desc: Text<'a>,
    #[serde(borrow)]
    method: Text<'a>,
    #[serde(borrow)]
    path: Text<'a>,
    #[serde(borrow)]
    host: Text<'a>,
    #[serde(borrow)]
    request_id: Text<'a>,
    #[serde(borrow)]
    fwd: Text<'a>,
    #[serde(borrow)]
    dyno: Text<'a>,
    #[serde(borrow)]
    protocol: Text<'a>,
    connect_ms: Option<i32>,
    service_ms: Option<i32>,
    status: Option<i32>,
    bytes: Option<i64>,
    l10_dropped: Option<u64>,
    #[serde(borrow)]
    parse_error: Text<'a>,
    #[serde(borrow)]
    trace_id: Text<'a>,
    #[serde(borrow)]
    span_id: Text<'a>,
    #[serde(borrow)]
    severity_text: Text<'a>,
    #[serde(borrow, default, deserialize_with = "pairs")]
    attributes: StringPairs<'a>,
    #[serde(borrow, default, deserialize_with = "pairs")]
    resource: StringPairs<'a>,
}

/// A JSON object of strings, in its order.
fn pairs<'de, D>(d: D) -> Result<StringPairs<'de>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = StringPairs<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<Borrowed<'de>, Borrowed<'de>>()? {
                out.push((k.0, v.0));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Pairs)
}

/// A string borrowed from the line when it has no escapes.
struct Borrowed<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Borrowed<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Inner<'a>(#[serde(borrow)] Cow<'a, str>);
        Inner::deserialize(d).map(|i| Borrowed(i.0))
    }
}

fn plain<'a>(t: &'a Text<'_>) -> Option<Value<'a>> {
    t.as_deref().map(Value::plain)
}

/// Why a line could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("line {line}: not an archive record: {reason}")]
    Line { line: usize, reason: String },
}

/// Push every line of `json` (decompressed JSON lines) onto `rows`;
/// returns the number of records.
pub fn push_lines(json: &[u8], rows: &mut Columns) -> Result<u64, ConvertError> {
    let mut n = 0u64;
    for (i, line) in json.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| ConvertError::Line {
            line: i + 1,
            reason,
        };
        let l: Line<'_> = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        let log_ts_us = parse_rfc3339_us(l.log_ts.as_bytes())
            .ok_or_else(|| bad(format!("log_ts {:?} is no RFC 3339 time", l.log_ts)))?;
        let received_at_us = parse_rfc3339_us(l.received_at.as_bytes()).ok_or_else(|| {
            bad(format!(
                "received_at {:?} is no RFC 3339 time",
                l.received_at
            ))
        })?;
        let message_b64 = match &l.message_b64 {
            Some(text) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| bad(format!("message_b64: {e}")))?,
            ),
            None => None,
        };
        let kv: Vec<(&str, Value<'_>)> =
            l.kv.iter().map(|(k, v)| (&**k, Value::plain(v))).collect();
        let record = Record {
            app: &l.app,
            log_ts_us,
            received_at_us,
            facility: l.facility,
            severity: l.severity,
            hostname: l.hostname.as_deref(),
            source: l.source.as_deref(),
            proc_id: l.proc_id.as_deref(),
            msg_id: l.msg_id.as_deref(),
            message: &l.message,
            message_b64: message_b64.as_deref(),
            drain_token: l.drain_token.as_deref(),
            frame_id: l.frame_id.as_deref(),
            kv: &kv,
            router: RouterFields {
                at: plain(&l.at),
                code: plain(&l.code),
                desc: plain(&l.desc),
                method: plain(&l.method),
                path: plain(&l.path),
                host: plain(&l.host),
                request_id: plain(&l.request_id),
                fwd: plain(&l.fwd),
                dyno: plain(&l.dyno),
                protocol: plain(&l.protocol),
                connect_ms: l.connect_ms,
                service_ms: l.service_ms,
                status: l.status,
                bytes: l.bytes,
            },
            l10_dropped: l.l10_dropped,
            parse_error: l.parse_error.as_deref(),
            trace_id: l.trace_id.as_deref(),
            span_id: l.span_id.as_deref(),
            severity_text: l.severity_text.as_deref(),
            attributes: &l.attributes,
            resource: &l.resource,
        };
        rows.push(&record);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_or_a_broken_line_is_refused_with_its_line_number() {
        let mut rows = Columns::default();
        let e = push_lines(b"\n{\"app\":\"shop\",\"new_column\":1}\n", &mut rows).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("line 2:"), "{text}");
        assert!(text.contains("new_column"), "{text}");
        assert!(push_lines(b"{\"app\":", &mut rows).is_err());
        assert!(rows.is_empty());
    }
}
