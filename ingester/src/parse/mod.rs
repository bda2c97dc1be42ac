pub mod logfmt;
pub mod logplex;
pub mod rfc5424;
pub mod router;
pub mod syslog_stream;
pub mod timestamp;
