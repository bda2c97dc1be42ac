pub(crate) mod logfmt;
pub mod logplex;
pub mod otlp;
pub mod rfc5424;
pub(crate) mod router;
pub mod syslog_stream;
pub mod timestamp;

/// How a logged body is framed, which decides how it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormat {
    /// A Logplex HTTPS-drain request body (octet-counted, no
    /// STRUCTURED-DATA).
    #[default]
    LogplexHttps,
    /// Frames decoded from a syslog-drain connection, stored with
    /// `syslog_stream::push_stored` (strict RFC 5424).
    SyslogFrames,
    /// An OTLP/HTTP `ExportLogsServiceRequest` in protobuf, gunzipped (also
    /// what OTLP/gRPC requests are logged as).
    OtlpProtobuf,
    /// An OTLP/HTTP `ExportLogsServiceRequest` in OTLP's JSON mapping, gunzipped.
    OtlpJson,
}
