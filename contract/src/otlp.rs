//! OTLP/gRPC, the one front whose request names no app: the operator puts
//! [`APP_HEADER`] on every Fir app's gRPC telemetry drain, and the ingester
//! routes each [`EXPORT_PATH`] call by it.

/// The exporter header (gRPC metadata) naming the app. Header names are
/// case-insensitive; HTTP/2 sends them lower-case (`x-drainpipe-app`).
pub const APP_HEADER: &str = "X-Drainpipe-App";

/// The one gRPC method the ingester serves: OTLP's logs export.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
