//! OTLP logs (Heroku Fir telemetry drains): an `ExportLogsServiceRequest` in
//! either encoding of OTLP/HTTP, decoded with the OpenTelemetry project's
//! generated types, and the pieces of a log record the archive keeps as text.
//!
//! Decoding happens when a logged body is archived, never when it is received:
//! a body that does not decode is archived raw with `parse_error`, like a bad
//! Logplex frame, so a client bug loses nothing.

use std::borrow::Cow;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message as _;
use serde_json::Value as Json;

/// The two encodings of OTLP/HTTP (`Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`; also what OTLP/gRPC carries.
    Protobuf,
    /// `application/json`: OTLP's JSON mapping (hex ids, lowerCamelCase keys).
    Json,
}

/// Why a body is not an `ExportLogsServiceRequest`; becomes `parse_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Protobuf,
    Json,
}

impl DecodeError {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::Protobuf => {
                "OTLP protobuf body does not decode as ExportLogsServiceRequest"
            }
            DecodeError::Json => "OTLP JSON body does not decode as ExportLogsServiceRequest",
        }
    }
}

/// Decode a whole request body (already gunzipped).
pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportLogsServiceRequest, DecodeError> {
    match encoding {
        Encoding::Protobuf => {
            ExportLogsServiceRequest::decode(body).map_err(|_| DecodeError::Protobuf)
        }
        Encoding::Json => {
            let mut json: Json = serde_json::from_slice(body).map_err(|_| DecodeError::Json)?;
            severity_names_to_numbers(&mut json);
            serde_json::from_value(json).map_err(|_| DecodeError::Json)
        }
    }
}

/// The protobuf JSON mapping lets a sender write an enum by name
/// (`"SEVERITY_NUMBER_INFO"`); the generated serde types only take numbers.
/// `severityNumber` is the only enum in a logs request.
fn severity_names_to_numbers(json: &mut Json) {
    let records = json
        .get_mut("resourceLogs")
        .and_then(Json::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get_mut("scopeLogs").and_then(Json::as_array_mut))
        .flatten()
        .filter_map(|s| s.get_mut("logRecords").and_then(Json::as_array_mut))
        .flatten();
    for record in records {
        if let Some(n) = record.get_mut("severityNumber")
            && let Some(number) = n.as_str().and_then(severity_number_of_name)
        {
            *n = Json::from(number);
        }
    }
}

fn severity_number_of_name(name: &str) -> Option<i32> {
    const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
    if rest == "UNSPECIFIED" {
        return Some(0);
    }
    let split = rest
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (level, step) = rest.split_at(split);
    let base = LEVELS.iter().position(|l| *l == level)?;
    let step: i32 = match step {
        "" => 1,
        "2" => 2,
        "3" => 3,
        "4" => 4,
        _ => return None,
    };
    Some(i32::try_from(base).ok()? * 4 + step)
}

/// OTLP `SeverityNumber` (1-24) as a syslog severity (0-7), so one
/// `severity <= 3` query finds errors from both generations. Follows the OTel
/// spec's syslog mapping the other way round: TRACE and DEBUG are debug (7),
/// INFO is informational (6) and INFO2-4 notice (5), WARN warning (4), ERROR
/// err (3), FATAL crit (2), FATAL2 alert (1), FATAL3-4 emerg (0).
/// `None` for unspecified (0) and numbers outside the range.
pub fn syslog_severity(number: i32) -> Option<u8> {
    Some(match number {
        1..=8 => 7,
        9 => 6,
        10..=12 => 5,
        13..=16 => 4,
        17..=20 => 3,
        21 => 2,
        22 => 1,
        23 | 24 => 0,
        _ => return None,
    })
}

/// Lowercase hex of a trace or span id; `None` when empty (no trace context).
pub fn hex_id(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    Some(s)
}

/// A log body as message text: a string as it is, anything structured as
/// its JSON text (`{"user":"ann","n":3}`), nothing as the empty string.
pub fn body_text(body: Option<&AnyValue>) -> Cow<'_, str> {
    match body.and_then(|b| b.value.as_ref()) {
        Some(Any::StringValue(s)) => Cow::Borrowed(s),
        Some(other) => Cow::Owned(to_json(other).to_string()),
        None => Cow::Borrowed(""),
    }
}

/// One flattened attribute (key, value), borrowed from the decoded request
/// where it can be: most keys are already lowercase and most values are
/// strings, so the hot path copies nothing.
pub type Attribute<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Attributes as a flat `map<string,string>`: nested maps become dotted keys
/// (`http.request.header.accept`), arrays their JSON text, bytes base64.
/// Keys are folded to lowercase like `kv` keys (Athena's SerDe lowercases
/// them and fails a row whose keys then collide); the last value of keys
/// that collide wins. Returns how many keys collided that way.
pub fn flatten<'a>(attributes: &'a [KeyValue], out: &mut Vec<Attribute<'a>>) -> u64 {
    let mut collisions = 0;
    for kv in attributes {
        flatten_one(
            Cow::Borrowed(&kv.key),
            kv.value.as_ref(),
            out,
            &mut collisions,
        );
    }
    collisions
}

fn flatten_one<'a>(
    key: Cow<'a, str>,
    value: Option<&'a AnyValue>,
    out: &mut Vec<Attribute<'a>>,
    collisions: &mut u64,
) {
    let text = match value.and_then(|v| v.value.as_ref()) {
        Some(Any::KvlistValue(list)) => {
            for kv in &list.values {
                let nested = Cow::Owned(format!("{key}.{}", kv.key));
                flatten_one(nested, kv.value.as_ref(), out, collisions);
            }
            return;
        }
        Some(Any::StringValue(s)) => Cow::Borrowed(s.as_str()),
        Some(v) => Cow::Owned(scalar_text(v)),
        None => Cow::Borrowed(""),
    };
    let key = if key.chars().any(char::is_uppercase) {
        Cow::Owned(key.to_lowercase())
    } else {
        key
    };
    if let Some(slot) = out.iter_mut().find(|(k, _)| *k == key) {
        *collisions += 1;
        slot.1 = text;
    } else {
        out.push((key, text));
    }
}

/// One attribute value as text; arrays as JSON.
fn scalar_text(v: &Any) -> String {
    match v {
        Any::StringValue(s) => s.clone(),
        Any::BoolValue(b) => b.to_string(),
        Any::IntValue(i) => i.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        Any::BytesValue(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Any::ArrayValue(_) | Any::KvlistValue(_) => to_json(v).to_string(),
        // Newer protocol versions may add kinds; keep what the JSON text says.
        #[allow(unreachable_patterns)]
        _ => to_json(v).to_string(),
    }
}

fn to_json(v: &Any) -> Json {
    match v {
        Any::StringValue(s) => Json::from(s.as_str()),
        Any::BoolValue(b) => Json::from(*b),
        Any::IntValue(i) => Json::from(*i),
        Any::DoubleValue(d) => Json::from(*d),
        Any::BytesValue(b) => Json::from(base64::engine::general_purpose::STANDARD.encode(b)),
        Any::ArrayValue(a) => Json::Array(
            a.values
                .iter()
                .map(|x| x.value.as_ref().map_or(Json::Null, to_json))
                .collect(),
        ),
        Any::KvlistValue(l) => Json::Object(
            l.values
                .iter()
                .map(|kv| {
                    let value = kv
                        .value
                        .as_ref()
                        .and_then(|x| x.value.as_ref())
                        .map_or(Json::Null, to_json);
                    (kv.key.clone(), value)
                })
                .collect(),
        ),
        #[allow(unreachable_patterns)]
        _ => Json::Null,
    }
}

/// The first of `keys` present in `pairs` (flattened, lowercase keys).
pub fn lookup<'p>(pairs: &'p [Attribute<'_>], keys: &[&str]) -> Option<&'p str> {
    keys.iter()
        .find_map(|k| pairs.iter().find(|(key, _)| key == k))
        .map(|(_, v)| v.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_names_follow_the_proto_enum() {
        assert_eq!(severity_number_of_name("SEVERITY_NUMBER_TRACE"), Some(1));
        assert_eq!(severity_number_of_name("SEVERITY_NUMBER_INFO"), Some(9));
        assert_eq!(severity_number_of_name("SEVERITY_NUMBER_INFO4"), Some(12));
        assert_eq!(severity_number_of_name("SEVERITY_NUMBER_ERROR"), Some(17));
        assert_eq!(severity_number_of_name("SEVERITY_NUMBER_FATAL4"), Some(24));
        assert_eq!(
            severity_number_of_name("SEVERITY_NUMBER_UNSPECIFIED"),
            Some(0)
        );
        assert_eq!(severity_number_of_name("SEVERITY_NUMBER_LOUD"), None);
        assert_eq!(severity_number_of_name("INFO"), None);
    }

    #[test]
    fn syslog_severity_keeps_the_order_of_levels() {
        assert_eq!(syslog_severity(0), None);
        assert_eq!(syslog_severity(5), Some(7));
        assert_eq!(syslog_severity(9), Some(6));
        assert_eq!(syslog_severity(13), Some(4));
        assert_eq!(syslog_severity(17), Some(3));
        assert_eq!(syslog_severity(21), Some(2));
        assert_eq!(syslog_severity(25), None);
        let mut last = 8;
        for n in 1..=24 {
            let s = syslog_severity(n).expect("in range");
            assert!(s <= last, "severity must not rise as the level falls");
            last = s;
        }
    }

    #[test]
    fn hex_ids_are_lowercase_and_empty_is_none() {
        assert_eq!(hex_id(&[]), None);
        assert_eq!(
            hex_id(&[0x5b, 0x8e, 0xff, 0x00]).as_deref(),
            Some("5b8eff00")
        );
    }
}
