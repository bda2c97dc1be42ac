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
pub mod batch;
pub mod config;
pub mod dedupe;
pub mod direct;
pub mod health;
pub mod logfmt;
pub mod logplex;
pub mod metrics;
pub mod objects;
pub mod record;
pub mod rfc5424;
pub mod router;
pub mod routes;
#[doc(hidden)]
pub mod samples;
pub mod server;
pub mod syslog_server;
pub mod syslog_stream;
pub mod syslog_tls;
pub mod timestamp;
pub mod uploader;
pub mod wal;
