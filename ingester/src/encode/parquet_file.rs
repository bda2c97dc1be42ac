//! Parquet files from `Columns` batches (`encode::columns`),
//! with Apache Arrow's writer (no encoder of our own), and their row counts
//! read back.
//!
//! - ZSTD pages; Parquet format 1.0 encodings, which every Athena engine
//!   version and Hive's Parquet SerDe read.
//! - Dictionary encoding on every column except the timestamps, ids and
//!   message text, whose values rarely repeat: a dictionary there only costs
//!   a page before the writer falls back to plain.
//! - Page statistics (min/max per page, in the page index): `log_ts` is a
//!   fixed-width RFC 3339 string, so its statistics order by time and a time
//!   range skips pages.

use arrow_array::{RecordBatch, RecordBatchReader};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::encode::columns::schema;

/// Why a Parquet file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Columns written without a dictionary: mostly unique values.
const NO_DICTIONARY: &[&str] = &[
    "log_ts",
    "received_at",
    "message",
    "message_b64",
    "frame_id",
    "request_id",
    "trace_id",
    "span_id",
];

/// Rows per row group. Trino and Athena split work by row group; at about
/// 250 bytes a record this is a few tens of MiB of text per group.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// How a file is written.
pub fn properties(zstd_level: i32) -> Result<WriterProperties, ParquetError> {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_dictionary_enabled(true)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for column in NO_DICTIONARY {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(*column), false);
    }
    Ok(builder.build())
}

/// A Parquet file being written into memory, batch by batch.
pub struct FileWriter {
    inner: ArrowWriter<Vec<u8>>,
    rows: u64,
}

impl FileWriter {
    pub fn new(zstd_level: i32) -> Result<FileWriter, Error> {
        let inner = ArrowWriter::try_new(Vec::new(), schema(), Some(properties(zstd_level)?))?;
        Ok(FileWriter { inner, rows: 0 })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.rows += batch.num_rows() as u64;
        Ok(self.inner.write(batch)?)
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written so far plus what the open row group holds.
    pub fn bytes(&self) -> usize {
        self.inner.bytes_written() + self.inner.in_progress_size()
    }

    /// The finished file.
    pub fn finish(self) -> Result<Vec<u8>, Error> {
        Ok(self.inner.into_inner()?)
    }
}

/// One file holding `batch`.
pub fn write(batch: &RecordBatch, zstd_level: i32) -> Result<Vec<u8>, Error> {
    let mut writer = FileWriter::new(zstd_level)?;
    writer.write(batch)?;
    writer.finish()
}

/// The rows a file says it holds (its footer).
pub fn row_count(file: Bytes) -> Result<u64, Error> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    Ok(u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0))
}

/// Every row of a file, batch by batch, in the archive schema. A file with
/// other columns (not one of ours) is refused, not guessed at.
pub fn read(file: Bytes) -> Result<impl Iterator<Item = Result<RecordBatch, Error>>, Error> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(64 * 1024)
        .build()?;
    if reader.schema().fields() != schema().fields() {
        return Err(Error::Parquet(ParquetError::General(
            "not a drainpipe archive object: its columns differ from the archive schema".into(),
        )));
    }
    Ok(reader.map(|b| b.map_err(Error::from)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::columns::Columns;
    use crate::encode::record::Record;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn rows(n: usize) -> RecordBatch {
        let mut columns = Columns::default();
        for i in 0..n {
            let request_id = format!("{i:08x}-5c3e-4d3a-9a3c-6f0b1f4e9a21");
            columns.push(&Record {
                app: "shop",
                log_ts_us: 1_780_000_000_000_000 + i as i64,
                received_at_us: 1_780_000_000_000_000,
                source: Some("heroku"),
                proc_id: Some("router"),
                message: &request_id,
                router: crate::parse::router::RouterFields {
                    request_id: Some(crate::parse::logfmt::Value::plain(&request_id)),
                    status: Some(200),
                    ..Default::default()
                },
                ..Record::default()
            });
        }
        columns.finish().unwrap()
    }

    #[test]
    fn a_file_holds_its_rows_with_zstd_dictionaries_and_page_statistics() {
        let batch = rows(5_000);
        let file = Bytes::from(write(&batch, 1).unwrap());
        assert_eq!(row_count(file.clone()).unwrap(), 5_000);
        let back: Vec<RecordBatch> = read(file.clone()).unwrap().map(Result::unwrap).collect();
        assert_eq!(back.iter().map(RecordBatch::num_rows).sum::<usize>(), 5_000);
        assert_eq!(back[0].slice(0, 10), batch.slice(0, 10));

        let reader = SerializedFileReader::new(file).unwrap();
        let group = reader.metadata().row_group(0);
        for column in group.columns() {
            let name = column.column_path().string();
            assert_eq!(
                column.compression(),
                Compression::ZSTD(ZstdLevel::try_new(1).unwrap()),
                "{name}"
            );
            // Page statistics: each chunk has its column index.
            assert!(
                column.column_index_offset().is_some(),
                "page statistics on {name}"
            );
            let dictionary = column.dictionary_page_offset().is_some();
            let want = !NO_DICTIONARY.contains(&name.as_str());
            // A column of nulls only has no pages worth a dictionary either way.
            if column.num_values() > 0
                && column
                    .statistics()
                    .is_some_and(|s| s.null_count_opt() != Some(5_000))
            {
                assert_eq!(dictionary, want, "dictionary on {name}");
            }
        }
    }

    #[test]
    fn a_file_of_other_columns_is_refused() {
        let other = RecordBatch::try_from_iter([(
            "x",
            std::sync::Arc::new(arrow_array::Int32Array::from(vec![1])) as arrow_array::ArrayRef,
        )])
        .unwrap();
        let mut w = ArrowWriter::try_new(Vec::new(), other.schema(), None).unwrap();
        w.write(&other).unwrap();
        let file = Bytes::from(w.into_inner().unwrap());
        assert!(read(file).is_err());
    }
}
