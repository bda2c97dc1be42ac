pub mod dedupe;
pub mod http;
pub(crate) mod ops;
pub(crate) mod otlp_http;
pub(crate) mod response;
pub mod routes;
pub mod syslog;
