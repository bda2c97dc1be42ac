//! What the drainpipe operator and ingester must agree on, kept once.
//!
//! - [`routes`]: the routes file the operator writes into a Secret and the
//!   ingester reads (apps, passwords, drain tokens, alert rules).
//! - [`alerts`]: the alert rules in that file, and the checks both programs
//!   run on them.
//! - [`schema`]: the archive record's fields (the Glue columns derive from
//!   them) and the object layout (the Glue location template derives from it).
//! - [`app`]: Heroku's app-name rule, used for URLs, object keys and the CRD.
//! - [`units`]: the one grammar for durations and sizes in flags and specs.
//! - [`otlp`]: the OTLP/gRPC method and the header naming the app.
//! - [`compaction`]: what a compaction run reports to the operator.
//!
//! This crate depends on nothing of either program, so the operator does not
//! pull in the ingester and the ingester does not pull in kube.

pub mod alerts;
pub mod app;
pub mod compaction;
pub mod otlp;
pub mod routes;
pub mod schema;
pub mod units;
