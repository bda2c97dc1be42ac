pub mod batch;
pub mod columns;
pub mod parquet_file;
pub mod record;
