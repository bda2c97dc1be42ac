//! One merged object from a group of inputs, with its records counted on
//! both sides.
//!
//! - JSON into JSON: the gzip members are concatenated as they are (one
//!   valid gzip stream, which Trino and Athena read); each input must
//!   decompress and end in a newline.
//! - Parquet (or JSON converted to it) into Parquet: every input is sorted
//!   by time already (the ingester writes them so; a converted JSON input is
//!   sorted on the way), so a k-way merge writes the output in time order
//!   while holding one batch per input, not the whole day.
//!
//! The output is then read back and its records counted; a count that
//! differs from the inputs' is an error and no input is deleted.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Read;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use drainpipe_contract::schema::ArchiveFormat;
use flate2::read::MultiGzDecoder;

use crate::compact::convert::{ConvertError, push_lines};
use crate::encode::columns::{Columns, time_ordered};
use crate::encode::parquet_file::{self, FileWriter};

/// ZSTD level of merged Parquet objects: a closed day is written once and
/// read for months, so it is worth more CPU than the ingester spends.
pub(crate) const COMPACT_ZSTD_LEVEL: i32 = 9;

/// Rows per output batch of the k-way merge.
const OUT_ROWS: usize = 8192;

/// A merged object and the records it holds.
#[derive(Debug)]
pub(crate) struct Merged {
    pub(crate) body: Bytes,
    pub(crate) records: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MergeError {
    #[error("{key}: not gzip JSON lines: {reason}")]
    Gzip { key: String, reason: String },
    #[error("{key}: does not end in a newline (a truncated object?)")]
    NoNewline { key: String },
    #[error("{key}: {source}")]
    Convert { key: String, source: ConvertError },
    #[error("{key}: {source}")]
    Parquet {
        key: String,
        source: parquet_file::Error,
    },
    #[error("the merged object holds {written} records, its inputs {read}: nothing deleted")]
    Count { read: u64, written: u64 },
    #[error("cannot merge {from} objects into {to}")]
    Formats {
        from: ArchiveFormat,
        to: ArchiveFormat,
    },
}

/// Merge `inputs` (key, body), all of format `from`, into one `to` object.
pub(crate) fn merge(
    inputs: &[(String, Bytes)],
    from: ArchiveFormat,
    to: ArchiveFormat,
) -> Result<Merged, MergeError> {
    match (from, to) {
        (ArchiveFormat::Json, ArchiveFormat::Json) => merge_json(inputs),
        (ArchiveFormat::Parquet, ArchiveFormat::Parquet) => merge_parquet(inputs.to_vec()),
        (ArchiveFormat::Json, ArchiveFormat::Parquet) => {
            let sorted = inputs
                .iter()
                .map(|(key, body)| Ok((key.clone(), json_to_parquet(key, body)?)))
                .collect::<Result<Vec<_>, MergeError>>()?;
            merge_parquet(sorted)
        }
        (from, to) => Err(MergeError::Formats { from, to }),
    }
}

fn gunzip(key: &str, body: &[u8]) -> Result<Vec<u8>, MergeError> {
    let mut json = Vec::with_capacity(body.len() * 8);
    MultiGzDecoder::new(body)
        .read_to_end(&mut json)
        .map_err(|e| MergeError::Gzip {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(json)
}

fn count_lines(json: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', json).count() as u64
}

fn merge_json(inputs: &[(String, Bytes)]) -> Result<Merged, MergeError> {
    let mut read = 0u64;
    let mut out = Vec::with_capacity(inputs.iter().map(|(_, b)| b.len()).sum());
    for (key, body) in inputs {
        let json = gunzip(key, body)?;
        if json.last().is_some_and(|&b| b != b'\n') {
            return Err(MergeError::NoNewline { key: key.clone() });
        }
        read += count_lines(&json);
        out.extend_from_slice(body);
    }
    let written = count_lines(&gunzip("the merged object", &out)?);
    if written != read {
        return Err(MergeError::Count { read, written });
    }
    Ok(Merged {
        body: Bytes::from(out),
        records: written,
    })
}

/// One JSON input as a Parquet file sorted by time (ZSTD level 1: it only
/// lives in memory until the merge reads it back).
fn json_to_parquet(key: &str, body: &[u8]) -> Result<Bytes, MergeError> {
    let json = gunzip(key, body)?;
    if json.last().is_some_and(|&b| b != b'\n') {
        return Err(MergeError::NoNewline {
            key: key.to_owned(),
        });
    }
    let mut rows = Columns::default();
    push_lines(&json, &mut rows).map_err(|source| MergeError::Convert {
        key: key.to_owned(),
        source,
    })?;
    drop(json);
    let parquet = |source: parquet_file::Error| MergeError::Parquet {
        key: key.to_owned(),
        source,
    };
    let batches = rows
        .finish()
        .and_then(|batch| time_ordered(vec![batch]))
        .map_err(|e| parquet(e.into()))?;
    let mut writer = FileWriter::new(1).map_err(parquet)?;
    for batch in &batches {
        writer.write(batch).map_err(parquet)?;
    }
    writer.finish().map(Bytes::from).map_err(parquet)
}

/// Where one input stands in the merge.
struct Cursor<I> {
    rows: I,
    batch: RecordBatch,
    /// Index of `batch` in the batches the pending output refers to.
    slot: usize,
    row: usize,
}

/// The sort key of a row: its `log_ts` text (fixed width, so bytes order
/// as time does).
fn key(batch: &RecordBatch, row: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    if let Some(col) = batch.column_by_name("log_ts")
        && let Some(ts) = col.as_string_opt::<i32>()
        && ts.is_valid(row)
    {
        let v = ts.value(row).as_bytes();
        let n = v.len().min(32);
        k[..n].copy_from_slice(&v[..n]);
    }
    k
}

fn merge_parquet(inputs: Vec<(String, Bytes)>) -> Result<Merged, MergeError> {
    let out_err = |source: parquet_file::Error| MergeError::Parquet {
        key: "the merged object".to_owned(),
        source,
    };
    let mut read = 0u64;
    let mut cursors = Vec::with_capacity(inputs.len());
    let mut held: Vec<RecordBatch> = Vec::new();
    let mut heap = BinaryHeap::new();
    for (i, (key, body)) in inputs.into_iter().enumerate() {
        let in_err = |source: parquet_file::Error| MergeError::Parquet {
            key: key.clone(),
            source,
        };
        read += parquet_file::row_count(body.clone()).map_err(in_err)?;
        let mut rows = parquet_file::read(body).map_err(in_err)?;
        match next_batch(&mut rows).map_err(in_err)? {
            Some(batch) => {
                heap.push(Reverse((self::key(&batch, 0), i)));
                held.push(batch.clone());
                cursors.push(Some(Cursor {
                    rows,
                    batch,
                    slot: held.len() - 1,
                    row: 0,
                }));
            }
            None => cursors.push(None),
        }
    }
    let mut writer = FileWriter::new(COMPACT_ZSTD_LEVEL).map_err(out_err)?;
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(OUT_ROWS);
    while let Some(Reverse((_, i))) = heap.pop() {
        let Some(cursor) = cursors[i].as_mut() else {
            continue;
        };
        picks.push((cursor.slot, cursor.row));
        cursor.row += 1;
        if cursor.row < cursor.batch.num_rows() {
            heap.push(Reverse((key(&cursor.batch, cursor.row), i)));
        } else {
            match next_batch(&mut cursor.rows).map_err(out_err)? {
                Some(batch) => {
                    heap.push(Reverse((key(&batch, 0), i)));
                    held.push(batch.clone());
                    cursor.batch = batch;
                    cursor.slot = held.len() - 1;
                    cursor.row = 0;
                }
                None => cursors[i] = None,
            }
        }
        if picks.len() == OUT_ROWS {
            emit(&held, &mut picks, &mut writer).map_err(out_err)?;
            // Only the batches cursors still stand in are needed now.
            held.clear();
            for cursor in cursors.iter_mut().flatten() {
                held.push(cursor.batch.clone());
                cursor.slot = held.len() - 1;
            }
        }
    }
    emit(&held, &mut picks, &mut writer).map_err(out_err)?;
    drop(held);
    let body = Bytes::from(writer.finish().map_err(out_err)?);
    let written = count_rows(body.clone()).map_err(out_err)?;
    if written != read {
        return Err(MergeError::Count { read, written });
    }
    Ok(Merged {
        body,
        records: written,
    })
}

fn next_batch<I>(rows: &mut I) -> Result<Option<RecordBatch>, parquet_file::Error>
where
    I: Iterator<Item = Result<RecordBatch, parquet_file::Error>>,
{
    for batch in rows {
        let batch = batch?;
        if batch.num_rows() > 0 {
            return Ok(Some(batch));
        }
    }
    Ok(None)
}

fn emit(
    held: &[RecordBatch],
    picks: &mut Vec<(usize, usize)>,
    writer: &mut FileWriter,
) -> Result<(), parquet_file::Error> {
    if picks.is_empty() {
        return Ok(());
    }
    let refs: Vec<&RecordBatch> = held.iter().collect();
    let batch = arrow_select::interleave::interleave_record_batch(&refs, picks)?;
    picks.clear();
    writer.write(&batch)?;
    Ok(())
}

/// Rows found by reading every row of a Parquet file (not its footer).
fn count_rows(file: Bytes) -> Result<u64, parquet_file::Error> {
    let mut n = 0u64;
    for batch in parquet_file::read(file)? {
        n += batch?.num_rows() as u64;
    }
    Ok(n)
}

/// Records in one stored object of `format`.
#[cfg(test)]
fn records(format: ArchiveFormat, key: &str, body: Bytes) -> Result<u64, MergeError> {
    match format {
        ArchiveFormat::Json => Ok(count_lines(&gunzip(key, &body)?)),
        ArchiveFormat::Parquet => count_rows(body).map_err(|source| MergeError::Parquet {
            key: key.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::record::Record;
    use std::io::Write;

    fn parquet_of(times: &[(i64, &str)]) -> Bytes {
        let mut c = Columns::default();
        for (us, m) in times {
            c.push(&Record {
                app: "shop",
                log_ts_us: *us,
                received_at_us: *us,
                message: m,
                ..Record::default()
            });
        }
        Bytes::from(parquet_file::write(&c.finish().unwrap(), 1).unwrap())
    }

    fn messages(file: Bytes) -> Vec<String> {
        parquet_file::read(file)
            .unwrap()
            .flat_map(|b| {
                let b = b.unwrap();
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
    fn parquet_inputs_merge_in_time_order() {
        let a = parquet_of(&[(1, "a1"), (4, "a4"), (9, "a9")]);
        let b = parquet_of(&[(2, "b2"), (3, "b3"), (10, "b10")]);
        let empty = parquet_of(&[]);
        let c = parquet_of(&[(5, "c5")]);
        let inputs = vec![
            ("a".to_owned(), a),
            ("b".to_owned(), b),
            ("e".to_owned(), empty),
            ("c".to_owned(), c),
        ];
        let merged = merge(&inputs, ArchiveFormat::Parquet, ArchiveFormat::Parquet).unwrap();
        assert_eq!(merged.records, 7);
        assert_eq!(
            messages(merged.body),
            ["a1", "b2", "b3", "a4", "c5", "a9", "b10"]
        );
    }

    #[test]
    fn many_inputs_larger_than_one_output_batch_stay_in_order() {
        let inputs: Vec<(String, Bytes)> = (0..7)
            .map(|i| {
                let rows: Vec<(i64, String)> = (0..3000)
                    .map(|j| (j * 7 + i, format!("{:06}", j * 7 + i)))
                    .collect();
                let refs: Vec<(i64, &str)> = rows.iter().map(|(t, m)| (*t, m.as_str())).collect();
                (format!("in{i}"), parquet_of(&refs))
            })
            .collect();
        let merged = merge(&inputs, ArchiveFormat::Parquet, ArchiveFormat::Parquet).unwrap();
        assert_eq!(merged.records, 21_000);
        let got = messages(merged.body);
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(got, sorted);
    }

    fn gz(text: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn json_inputs_concatenate_and_a_truncated_one_is_refused() {
        let mut one = Vec::new();
        Record {
            app: "shop",
            message: "one",
            ..Record::default()
        }
        .write_json_line(&mut one);
        let inputs = vec![
            ("a".to_owned(), gz(&one)),
            ("b".to_owned(), gz(&[one.clone(), one.clone()].concat())),
        ];
        let merged = merge(&inputs, ArchiveFormat::Json, ArchiveFormat::Json).unwrap();
        assert_eq!(merged.records, 3);
        assert_eq!(
            records(ArchiveFormat::Json, "m", merged.body.clone()).unwrap(),
            3
        );

        let cut = vec![("a".to_owned(), gz(&one[..one.len() - 1]))];
        let e = merge(&cut, ArchiveFormat::Json, ArchiveFormat::Json).unwrap_err();
        assert!(matches!(e, MergeError::NoNewline { .. }), "{e}");
        let garbage = vec![("g".to_owned(), Bytes::from_static(b"not gzip"))];
        assert!(matches!(
            merge(&garbage, ArchiveFormat::Json, ArchiveFormat::Json),
            Err(MergeError::Gzip { .. })
        ));
    }

    #[test]
    fn json_converts_into_sorted_parquet() {
        let mut late = Vec::new();
        let mut early = Vec::new();
        Record {
            app: "shop",
            log_ts_us: 20,
            message: "late",
            ..Record::default()
        }
        .write_json_line(&mut late);
        Record {
            app: "shop",
            log_ts_us: 10,
            message: "early",
            ..Record::default()
        }
        .write_json_line(&mut early);
        let inputs = vec![
            ("a".to_owned(), gz(&[late, early.clone()].concat())),
            ("b".to_owned(), gz(&early)),
        ];
        let merged = merge(&inputs, ArchiveFormat::Json, ArchiveFormat::Parquet).unwrap();
        assert_eq!(merged.records, 3);
        assert_eq!(messages(merged.body), ["early", "early", "late"]);
        assert!(merge(&inputs, ArchiveFormat::Parquet, ArchiveFormat::Json).is_err());
    }
}
