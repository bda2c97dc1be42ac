pub mod dedupe;
pub mod http;
pub mod routes;
pub mod syslog;
