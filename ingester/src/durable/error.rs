//! What can go wrong opening the log (`WalError`) and appending to it
//! (`AppendError`).

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("write-ahead log segment {path}: {source}")]
    Segment { path: PathBuf, source: io::Error },
    #[error("cannot start the write-ahead log writer thread: {0}")]
    Thread(io::Error),
}

/// Why an append was not made durable; the request gets 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("write-ahead log is over its size bound")]
    Full,
    #[error("write-ahead log write or fsync failed")]
    Io,
    #[error("write-ahead log is closed")]
    Closed,
}
