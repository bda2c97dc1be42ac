//! The Parquet row of a record holds what its JSON line holds, column by
//! column, for the realistic Logplex and OTLP mix plus the odd frames; and a
//! JSON line converted back (compaction's JSON to Parquet) gives the same
//! row. Through the library's public API, with the load generator's samples.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use drainpipe_contract::schema::FIELDS;
use drainpipe_ingester::compact::convert::push_lines;
use drainpipe_ingester::encode::batch::{LineSink, RequestMeta, encode_body};
use drainpipe_ingester::encode::columns::{Columns, time_ordered};
use drainpipe_ingester::encode::record::{Record, WriterCache};
use drainpipe_ingester::parse::BodyFormat;
use drainpipe_ingester::parse::timestamp::Day;
use drainpipe_ingester::samples::{LogplexGen, OtlpGen};

/// Both a JSON line and a row, for every record the encoder produces.
#[derive(Default)]
struct Both {
    json: Vec<u8>,
    rows: Columns,
    cache: WriterCache,
}

impl LineSink for Both {
    fn push(&mut self, _day: Day, r: &Record<'_>) {
        r.write_json_line_cached(&mut self.json, &mut self.cache);
        self.rows.push(r);
    }
}

#[test]
fn rows_hold_what_the_json_lines_hold() {
    let mut sink = Both::default();
    let meta = RequestMeta {
        app: "shop",
        drain_token: Some("d.01234567-89ab-cdef-0123-456789abcdef"),
        frame_id: Some("f1"),
        msg_count: None,
        received_at_us: 1_780_000_000_000_000,
    };
    let (mut body, _) = LogplexGen::new(7, "shop", meta.received_at_us).body(16 << 10);
    for msg in [
        // Escapes in values, a key in capitals, no timestamp.
        &b"<190>1 - host app web.1 - user=\"a \\\"b\\\"\" Path=/x at=info"[..],
        // Not UTF-8: the row keeps message_b64.
        b"<190>1 2026-06-17T12:00:01Z host app web.1 - caf\xe9 au lait",
        // Earlier than the rest: sorted first.
        b"<190>1 2001-01-01T00:00:00Z host app web.1 - early",
    ] {
        body.extend_from_slice(format!("{} ", msg.len()).as_bytes());
        body.extend_from_slice(msg);
    }
    body.extend_from_slice(b"12 truncated");
    encode_body(&meta, BodyFormat::LogplexHttps, &body, &mut sink);
    let (otlp, _) = OtlpGen::new(9, "shop", meta.received_at_us).body(8 << 10);
    encode_body(&meta, BodyFormat::OtlpProtobuf, &otlp, &mut sink);
    let batches = time_ordered(vec![sink.rows.finish().unwrap()]).unwrap();
    let batch = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let lines: Vec<serde_json::Value> = sink
        .json
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert!(lines.len() > 10);
    assert_eq!(batch.num_rows(), lines.len());
    // Rows come back in time order (stable); the JSON lines are in
    // arrival order.
    let mut lines = lines;
    lines.sort_by(|a, b| a["log_ts"].as_str().cmp(&b["log_ts"].as_str()));
    assert!(lines.iter().any(|l| !l["message_b64"].is_null()));
    assert!(lines.iter().any(|l| !l["parse_error"].is_null()));
    assert!(
        lines
            .iter()
            .any(|l| l["kv"].as_object().is_some_and(|m| m.contains_key("path")))
    );
    assert!(
        lines
            .iter()
            .any(|l| l["resource"].as_object().is_some_and(|m| !m.is_empty()))
    );
    for (i, line) in lines.iter().enumerate() {
        for (c, f) in FIELDS.iter().enumerate() {
            let col = batch.column(c);
            let want = &line[f.name];
            let got = cell(col.as_ref(), i);
            assert_eq!(&got, want, "row {i} column {}", f.name);
        }
    }
}

/// One cell as the JSON writer would have written it.
fn cell(col: &dyn Array, i: usize) -> serde_json::Value {
    use serde_json::Value as J;
    if col.is_null(i) {
        return J::Null;
    }
    match col.data_type() {
        DataType::Utf8 => J::from(col.as_string::<i32>().value(i)),
        DataType::Int32 => J::from(col.as_primitive::<arrow_array::types::Int32Type>().value(i)),
        DataType::Int64 => J::from(col.as_primitive::<arrow_array::types::Int64Type>().value(i)),
        DataType::Map(..) => {
            let entries = col.as_map().value(i);
            let keys = entries.column(0).as_string::<i32>();
            let values = entries.column(1).as_string::<i32>();
            let mut map = serde_json::Map::new();
            for j in 0..entries.len() {
                map.insert(keys.value(j).to_owned(), J::from(values.value(j)));
            }
            J::Object(map)
        }
        other => panic!("unexpected column type {other}"),
    }
}

#[test]
fn converted_lines_equal_rows_encoded_directly() {
    let mut sink = Both::default();
    let meta = RequestMeta {
        app: "shop",
        drain_token: Some("d.01234567-89ab-cdef-0123-456789abcdef"),
        frame_id: None,
        msg_count: None,
        received_at_us: 1_780_000_000_000_000,
    };
    let (mut body, _) = LogplexGen::new(3, "shop", meta.received_at_us).body(32 << 10);
    for msg in [
        &b"<190>1 2026-06-17T12:00:01Z host app web.1 - user=\"a \\\"b\\\"\" Path=/x caf\xe9"[..],
        b"<190>1 2026-06-17T12:00:01Z host app web.1 - \"quoted\\u0001\" \\ tab\there",
    ] {
        body.extend_from_slice(format!("{} ", msg.len()).as_bytes());
        body.extend_from_slice(msg);
    }
    body.extend_from_slice(b"99 cut");
    encode_body(&meta, BodyFormat::LogplexHttps, &body, &mut sink);
    let (otlp, _) = OtlpGen::new(4, "shop", meta.received_at_us).body(8 << 10);
    encode_body(&meta, BodyFormat::OtlpProtobuf, &otlp, &mut sink);

    let direct = sink.rows.finish().unwrap();
    let mut converted = Columns::default();
    let n = push_lines(&sink.json, &mut converted).unwrap();
    assert_eq!(n as usize, direct.num_rows());
    assert_eq!(converted.finish().unwrap(), direct);
}
