//! drainpipe ingester: receives Heroku Logplex drains, parses RFC 5424 and
//! archives gzip JSON lines partitioned by app and UTC day.
//!
//! The parsing modules (`logplex`, `rfc5424`, `timestamp`, `router`, `logfmt`,
//! `record`, `batch`) know nothing of transport; the runtime modules
//! (`server`, `wal`, `uploader`, `archive`, `routes`, `metrics`, `config`)
//! know nothing of syslog syntax. Syslog drains: `syslog_stream` (framing of
//! a byte stream, transport-independent), `syslog_server` (TCP/TLS
//! connections), `syslog_tls` (certificates).

pub mod archive;
pub mod config;
pub(crate) mod durable;
pub mod encode;
pub(crate) mod input;
pub mod parse;
mod run;
#[doc(hidden)]
pub mod samples;
pub(crate) mod telemetry;

pub use run::{RunError, Running, StartError, run};
