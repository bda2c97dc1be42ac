//! The archive record as Arrow columns, for Parquet objects.
//!
//! The same fields, names and values as the JSON line ([`Record::write_json_line_cached`]):
//! a query reads the same answer from either format. Strings stay strings
//! (`log_ts` is the same RFC 3339 text, so every documented query runs
//! unchanged and its fixed width keeps page statistics in time order); the
//! three maps are Parquet `MAP`s with the standard `key_value`/`key`/`value`
//! names Hive's Parquet SerDe and Trino read.

use std::sync::Arc;

use arrow_array::builder::{Int32Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use base64::Engine as _;
use drainpipe_contract::schema::{FIELDS, FieldType};

use crate::encode::record::{Record, SecondCache};
use crate::parse::logfmt::{Piece, Unescape, Value};
use crate::parse::otlp::Attribute;

/// The Arrow schema of an archive object: [`FIELDS`] in order, every column
/// nullable (a map column is never null: no pairs is an empty map, as `{}`
/// in JSON).
pub fn schema() -> SchemaRef {
    let fields: Vec<Field> = FIELDS
        .iter()
        .map(|f| match f.kind {
            FieldType::String => Field::new(f.name, DataType::Utf8, true),
            FieldType::Int => Field::new(f.name, DataType::Int32, true),
            FieldType::BigInt => Field::new(f.name, DataType::Int64, true),
            FieldType::StringMap => Field::new_map(
                f.name,
                "key_value",
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
                false,
                true,
            ),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// Rows being gathered: a builder per column.
pub struct Columns {
    rows: usize,
    /// Bytes appended so far, close to what the arrays hold in memory.
    bytes: usize,
    scratch: String,
    time: (SecondCache, SecondCache),
    app: StringBuilder,
    log_ts: StringBuilder,
    received_at: StringBuilder,
    facility: Int32Builder,
    severity: Int32Builder,
    hostname: StringBuilder,
    source: StringBuilder,
    proc_id: StringBuilder,
    msg_id: StringBuilder,
    message: StringBuilder,
    message_b64: StringBuilder,
    drain_token: StringBuilder,
    frame_id: StringBuilder,
    kv: MapBuilder<StringBuilder, StringBuilder>,
    at: StringBuilder,
    code: StringBuilder,
    desc: StringBuilder,
    method: StringBuilder,
    path: StringBuilder,
    host: StringBuilder,
    request_id: StringBuilder,
    fwd: StringBuilder,
    dyno: StringBuilder,
    protocol: StringBuilder,
    connect_ms: Int32Builder,
    service_ms: Int32Builder,
    status: Int32Builder,
    bytes_col: Int64Builder,
    l10_dropped: Int64Builder,
    parse_error: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    severity_text: StringBuilder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    resource: MapBuilder<StringBuilder, StringBuilder>,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            rows: 0,
            bytes: 0,
            scratch: String::new(),
            time: Default::default(),
            app: StringBuilder::new(),
            log_ts: StringBuilder::new(),
            received_at: StringBuilder::new(),
            facility: Int32Builder::new(),
            severity: Int32Builder::new(),
            hostname: StringBuilder::new(),
            source: StringBuilder::new(),
            proc_id: StringBuilder::new(),
            msg_id: StringBuilder::new(),
            message: StringBuilder::new(),
            message_b64: StringBuilder::new(),
            drain_token: StringBuilder::new(),
            frame_id: StringBuilder::new(),
            kv: map_builder(),
            at: StringBuilder::new(),
            code: StringBuilder::new(),
            desc: StringBuilder::new(),
            method: StringBuilder::new(),
            path: StringBuilder::new(),
            host: StringBuilder::new(),
            request_id: StringBuilder::new(),
            fwd: StringBuilder::new(),
            dyno: StringBuilder::new(),
            protocol: StringBuilder::new(),
            connect_ms: Int32Builder::new(),
            service_ms: Int32Builder::new(),
            status: Int32Builder::new(),
            bytes_col: Int64Builder::new(),
            l10_dropped: Int64Builder::new(),
            parse_error: StringBuilder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            severity_text: StringBuilder::new(),
            attributes: map_builder(),
            resource: map_builder(),
        }
    }
}

impl std::fmt::Debug for Columns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Columns")
            .field("rows", &self.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Fixed cost of a row beyond its text: offsets, validity, numbers.
const ROW_OVERHEAD: usize = 40 * 5;

impl Columns {
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// About the memory the gathered rows take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Append one record.
    pub fn push(&mut self, r: &Record<'_>) {
        self.rows += 1;
        self.bytes += ROW_OVERHEAD + r.message.len();
        self.app.append_value(r.app);
        let ts = self.time.0.format(r.log_ts_us);
        self.log_ts.append_value(ascii(&ts));
        let ts = self.time.1.format(r.received_at_us);
        self.received_at.append_value(ascii(&ts));
        self.facility.append_option(r.facility.map(i32::from));
        self.severity.append_option(r.severity.map(i32::from));
        opt(&mut self.hostname, r.hostname, &mut self.bytes);
        opt(&mut self.source, r.source, &mut self.bytes);
        opt(&mut self.proc_id, r.proc_id, &mut self.bytes);
        opt(&mut self.msg_id, r.msg_id, &mut self.bytes);
        self.message.append_value(r.message);
        match r.message_b64 {
            Some(raw) => {
                self.scratch.clear();
                base64::engine::general_purpose::STANDARD.encode_string(raw, &mut self.scratch);
                self.bytes += self.scratch.len();
                self.message_b64.append_value(&self.scratch);
            }
            None => self.message_b64.append_null(),
        }
        opt(&mut self.drain_token, r.drain_token, &mut self.bytes);
        opt(&mut self.frame_id, r.frame_id, &mut self.bytes);
        for (k, v) in r.kv {
            self.bytes += k.len() + v.raw().len() + 8;
            push_key(&mut self.kv, k, &mut self.scratch);
            push_value(self.kv.values(), *v, &mut self.scratch);
        }
        // Appending to a map builder fails only when its two halves differ in
        // length, and every key above got its value.
        let _ = self.kv.append(true);
        let rf = &r.router;
        let scratch = &mut self.scratch;
        for (builder, value) in [
            (&mut self.at, rf.at),
            (&mut self.code, rf.code),
            (&mut self.desc, rf.desc),
            (&mut self.method, rf.method),
            (&mut self.path, rf.path),
            (&mut self.host, rf.host),
            (&mut self.request_id, rf.request_id),
            (&mut self.fwd, rf.fwd),
            (&mut self.dyno, rf.dyno),
            (&mut self.protocol, rf.protocol),
        ] {
            match value {
                Some(v) => {
                    self.bytes += v.raw().len();
                    push_value(builder, v, scratch);
                }
                None => builder.append_null(),
            }
        }
        self.connect_ms.append_option(rf.connect_ms);
        self.service_ms.append_option(rf.service_ms);
        self.status.append_option(rf.status);
        self.bytes_col.append_option(rf.bytes);
        self.l10_dropped
            .append_option(r.l10_dropped.map(|n| i64::try_from(n).unwrap_or(i64::MAX)));
        opt(&mut self.parse_error, r.parse_error, &mut self.bytes);
        opt(&mut self.trace_id, r.trace_id, &mut self.bytes);
        opt(&mut self.span_id, r.span_id, &mut self.bytes);
        opt(&mut self.severity_text, r.severity_text, &mut self.bytes);
        for (map, pairs) in [
            (&mut self.attributes, r.attributes),
            (&mut self.resource, r.resource),
        ] {
            push_pairs(map, pairs, &mut self.scratch, &mut self.bytes);
        }
    }

    /// The gathered rows as one batch, in the order they came (see
    /// [`time_ordered`]), and the builders empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.app.finish()),
            Arc::new(self.log_ts.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.facility.finish()),
            Arc::new(self.severity.finish()),
            Arc::new(self.hostname.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.proc_id.finish()),
            Arc::new(self.msg_id.finish()),
            Arc::new(self.message.finish()),
            Arc::new(self.message_b64.finish()),
            Arc::new(self.drain_token.finish()),
            Arc::new(self.frame_id.finish()),
            Arc::new(self.kv.finish()),
            Arc::new(self.at.finish()),
            Arc::new(self.code.finish()),
            Arc::new(self.desc.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.fwd.finish()),
            Arc::new(self.dyno.finish()),
            Arc::new(self.protocol.finish()),
            Arc::new(self.connect_ms.finish()),
            Arc::new(self.service_ms.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.bytes_col.finish()),
            Arc::new(self.l10_dropped.finish()),
            Arc::new(self.parse_error.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.severity_text.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.resource.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(schema(), columns)
    }
}

fn log_ts(batch: &RecordBatch) -> Option<&StringArray> {
    batch
        .column_by_name("log_ts")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
}

/// The rows of `batches` (of the archive [`schema`]) in `log_ts` order,
/// stable (rows of one microsecond keep their order), as batches to write in
/// turn. `log_ts` is fixed-width RFC 3339 UTC, so its text orders as time
/// does. Batches already in order come back as they are; otherwise the rows
/// are gathered into one batch in order, a single copy (Logplex interleaves
/// dynos, so a minute of an app is rarely in order).
pub fn time_ordered(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, ArrowError> {
    let mut keys: Vec<(&str, usize, usize)> = Vec::new();
    let mut sorted = true;
    for (b, batch) in batches.iter().enumerate() {
        let Some(ts) = log_ts(batch) else {
            return Err(ArrowError::SchemaError("no log_ts string column".into()));
        };
        for r in 0..ts.len() {
            let key = if ts.is_valid(r) { ts.value(r) } else { "" };
            if let Some((last, _, _)) = keys.last() {
                sorted &= *last <= key;
            }
            keys.push((key, b, r));
        }
    }
    if sorted {
        return Ok(batches);
    }
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let picks: Vec<(usize, usize)> = keys.iter().map(|&(_, b, r)| (b, r)).collect();
    drop(keys);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let gathered = arrow_select::interleave::interleave_record_batch(&refs, &picks)?;
    Ok(vec![gathered])
}

fn ascii(bytes: &[u8]) -> &str {
    // The timestamp formatter writes ASCII digits and punctuation only.
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn opt(builder: &mut StringBuilder, value: Option<&str>, bytes: &mut usize) {
    match value {
        Some(v) => {
            *bytes += v.len();
            builder.append_value(v);
        }
        None => builder.append_null(),
    }
}

/// A map key folded to lowercase, as the JSON writer folds `kv` keys.
fn push_key(map: &mut MapBuilder<StringBuilder, StringBuilder>, key: &str, scratch: &mut String) {
    let keys = map.keys();
    if key.bytes().any(|b| b.is_ascii_uppercase()) || !key.is_ascii() {
        scratch.clear();
        if key.is_ascii() {
            scratch.push_str(key);
            scratch.make_ascii_lowercase();
        } else {
            scratch.push_str(&key.to_lowercase());
        }
        keys.append_value(&*scratch);
    } else {
        keys.append_value(key);
    }
}

/// A logfmt value with its escapes resolved, as the JSON writer resolves them.
fn push_value(builder: &mut StringBuilder, v: Value<'_>, scratch: &mut String) {
    if !v.has_escapes() {
        builder.append_value(v.raw());
        return;
    }
    scratch.clear();
    for piece in Unescape::new(v.raw()) {
        match piece {
            Piece::Text(t) => scratch.push_str(t),
            Piece::Char(c) => scratch.push(c),
        }
    }
    builder.append_value(&*scratch);
}

fn push_pairs(
    map: &mut MapBuilder<StringBuilder, StringBuilder>,
    pairs: &[Attribute<'_>],
    scratch: &mut String,
    bytes: &mut usize,
) {
    for (k, v) in pairs {
        *bytes += k.len() + v.len() + 8;
        push_key(map, k, scratch);
        map.values().append_value(v);
    }
    let _ = map.append(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    #[test]
    fn the_schema_is_the_record_fields_in_order() {
        let schema = schema();
        assert_eq!(schema.fields().len(), FIELDS.len());
        for (field, f) in schema.fields().iter().zip(FIELDS) {
            assert_eq!(field.name(), f.name);
        }
        let batch = Columns::default().finish().unwrap();
        assert_eq!(batch.num_rows(), 0);
    }

    fn batch(times: &[(i64, &str)]) -> RecordBatch {
        let mut c = Columns::default();
        for (t, m) in times {
            c.push(&Record {
                app: "shop",
                log_ts_us: *t,
                message: m,
                ..Record::default()
            });
        }
        c.finish().unwrap()
    }

    fn messages(batches: &[RecordBatch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let m = b
                    .column_by_name("message")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                (0..m.len()).map(move |i| m.value(i).to_owned())
            })
            .collect()
    }

    #[test]
    fn batches_in_order_are_kept_and_others_gathered_in_order() {
        let ordered = vec![
            batch(&[(1, "a"), (2, "b")]),
            batch(&[]),
            batch(&[(2, "c"), (7, "d")]),
        ];
        let kept = time_ordered(ordered.clone()).unwrap();
        assert_eq!(kept, ordered);
        let mixed = vec![batch(&[(1, "a"), (4, "d")]), batch(&[(3, "c"), (1, "a2")])];
        let gathered = time_ordered(mixed).unwrap();
        assert_eq!(gathered.len(), 1);
        assert_eq!(messages(&gathered), ["a", "a2", "c", "d"]);
        assert!(time_ordered(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn rows_are_sorted_by_time_and_stable() {
        let mut rows = Columns::default();
        for (ts, msg) in [(30, "c"), (10, "a1"), (20, "b"), (10, "a2")] {
            rows.push(&Record {
                app: "shop",
                log_ts_us: ts,
                message: msg,
                ..Record::default()
            });
        }
        assert!(rows.bytes() > 0);
        let ordered = time_ordered(vec![rows.finish().unwrap()]).unwrap();
        assert_eq!(messages(&ordered), ["a1", "a2", "b", "c"]);
        assert_eq!(rows.bytes(), 0);
        assert!(rows.is_empty());
    }
}
