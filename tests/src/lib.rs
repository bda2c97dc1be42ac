//! Shared helpers for drainpipe end-to-end tests.

/// The test environment loader, shared with the ingester's tests.
pub use drainpipe_testenv as env;
pub mod athena_docs;
pub mod heroku_fake;
pub mod ingester;
pub mod node;
pub mod operator;
pub mod slack_fake;
pub mod trino;
