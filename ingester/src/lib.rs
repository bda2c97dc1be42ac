//! drainpipe ingester library.
