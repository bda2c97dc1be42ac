//! drainpipe ingester: receives Heroku Logplex drains, parses RFC 5424 and
//! archives gzip JSON lines partitioned by app and UTC day.
//!
//! One folder per concern, listed from the bottom up; each may import only
//! the ones above it (and `drainpipe-contract`), never the ones below, so
//! the modules form no cycle (`tests/module_layout.rs` checks this):
//!
//! - `parse/`: framing and syntax, no I/O. `logplex` (octet-counted HTTPS
//!   bodies), `syslog_stream` (framing of a syslog byte stream), `rfc5424`,
//!   `timestamp` (and `Day`, the UTC day a record belongs to), `logfmt`,
//!   `router` (Heroku router fields); `BodyFormat` says which framing a
//!   logged body has.
//! - `encode/`: from parsed messages to JSON lines. `record` (the JSON writer
//!   of one record, columns as in `drainpipe_contract::schema`), `batch`
//!   (one body to lines per UTC day, and its `BatchStats`).
//! - `telemetry/`: `metrics` (Prometheus) and `health` (readiness after
//!   failures). May import `encode` (batch counters).
//! - `alert/`: alert rules (`spec.alerts`) run on the records the uploader
//!   encodes: `rules`, `tap` (the workers' side), `group`, `slack`,
//!   `alertmanager`, `deliver` (dispatcher and senders, off the
//!   acknowledgement path). May import `telemetry`.
//! - `durable/`: the write-ahead log that makes a 200 durable in
//!   `--ack wal` mode (`Entry` is one received request). `entry` (the
//!   record format and its CRC), `segment` (segment files, start-up checks,
//!   the checkpoint), `state` (shared by writer and readers), `writer`
//!   (group commit), `reader` (reading back for the uploader), `error`.
//! - `archive/`: `backend` (folder or S3, object keys), `objects` (gzip
//!   objects per app and day), `uploader` (log to archive), `direct`
//!   (`--ack archive`: store before answering). Reads `durable` entries.
//! - `input/`: the fronts. `intake` (`Server`, the intake every front hands
//!   requests to: sink, body limits, password, accept loop), `http` (the
//!   HTTP port: Logplex POSTs, dispatch to the others), `otlp_http` and `otlp_grpc` (OTLP logs
//!   of Fir telemetry drains over HTTP and gRPC) with `otlp` (what those two
//!   share), `ops` (`/healthz`, `/readyz` and `/metrics` on the same port),
//!   `response` (the text answers), `routes` (the routes file: auth and drain
//!   tokens), `dedupe` (Logplex retries), `syslog/server` (syslog drains over
//!   TCP or TLS), `tls` (the syslog and gRPC listeners' certificates).
//! - `config` (flags) and [`run`] (wires everything, returns the bound
//!   addresses) on top; `samples` generates test traffic (benches, loadgen).

pub(crate) mod alert;
pub mod archive;
pub mod compact;
pub mod config;
pub(crate) mod durable;
pub mod encode;
pub(crate) mod input;
pub mod parse;
mod run;
#[doc(hidden)]
pub mod samples;
pub(crate) mod telemetry;

pub use run::{FlushError, Flushed, RunError, Running, StartError, flush, run, run_with_aws};
