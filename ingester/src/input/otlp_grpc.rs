//! OTLP/gRPC front for Heroku Fir telemetry drains registered with
//! `--transport grpc`: `opentelemetry.proto.collector.logs.v1.LogsService/Export`
//! on its own listener (`--otlp-grpc-listen`), HTTP/2 in clear text or over
//! TLS (ALPN `h2`).
//!
//! gRPC has no URL path per app, so the app is the `x-drainpipe-app`
//! metadata and the password `authorization: Bearer ...`, both checked before
//! the body is read. `service.name` is deliberately not a fallback: it is
//! content, one request may carry resources of several services, and the
//! password must be checked against an app before the body is taken in.
//!
//! tonic does the gRPC framing, `grpc-encoding: gzip` and the status
//! trailers; its codec here hands over the request message as raw bytes, so
//! a message that is not an `ExportLogsServiceRequest` is logged as sent and
//! archived raw with `parse_error` (decoded when archived, as for
//! OTLP/HTTP), never refused for its content. The answer is OK with an empty
//! `ExportLogsServiceResponse` only once the body is durable; otherwise
//! UNAVAILABLE, or RESOURCE_EXHAUSTED when the log or the in-flight memory is
//! at its bound, each with a `google.rpc.RetryInfo` (OTLP clients retry
//! RESOURCE_EXHAUSTED only with one).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::body::Body as GrpcBody;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, UnaryService};

use drainpipe_contract::otlp::{APP_HEADER, EXPORT_PATH};

use crate::input::intake::{
    INFLIGHT_FULL, Refused, Server, WAL_FULL, accept, finish, header_str, now_us,
};
use crate::input::otlp::{self, Refusal, RetryInfo};
use crate::input::tls::ReloadingTls;
use crate::parse::BodyFormat;

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on an idle connection, so a vanished peer is noticed.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Accept connections until `shutdown`, then let calls in flight finish (at
/// most `grace`): connections get a GOAWAY and close once their calls end.
/// A connection older than `max_age` (unless zero) gets a GOAWAY too, so the
/// exporter opens a new one, through the load balancer again.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    server: Arc<Server>,
    shutdown: CancellationToken,
    grace: Duration,
    max_age: Duration,
) {
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(KEEPALIVE))
        .keep_alive_timeout(Duration::from_secs(20));
    // Each connection's task holds a sender; all dropped means all closed.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    while let Some((stream, peer)) = accept(&listener, &shutdown).await {
        let server = Arc::clone(&server);
        let service = service_fn(move |req| {
            let server = Arc::clone(&server);
            async move { Ok::<_, Infallible>(counted(&server, req).await) }
        });
        let (open, h2, tls, shutdown) = (open.clone(), h2.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _open = open;
            let io = match tls {
                None => Either::Left(stream),
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => Either::Right(stream),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "OTLP/gRPC TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "OTLP/gRPC TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let conn = h2.serve_connection(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            let aged = async {
                if max_age.is_zero() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(max_age).await;
            };
            let served = tokio::select! {
                served = conn.as_mut() => served,
                () = aged => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "OTLP/gRPC connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(open);
    let all_closed = async move {
        all_closed.recv().await;
    };
    finish(all_closed, grace, "OTLP/gRPC").await;
}

/// One call's answer, counted by gRPC code, with the latency of every
/// acknowledgement.
async fn counted(server: &Arc<Server>, req: Request<Incoming>) -> Response<GrpcBody> {
    let started = Instant::now();
    let response = answer(server, req).await;
    let code = response_code(&response);
    server.metrics.grpc_request(code_name(code));
    if code == Code::Ok {
        server
            .metrics
            .ack_latency
            .observe(started.elapsed().as_secs_f64());
    }
    response
}

/// Errors are answered trailers-only (`grpc-status` in the headers); a
/// success carries its status in the trailers, after the message.
fn response_code(response: &Response<GrpcBody>) -> Code {
    if response.status() != StatusCode::OK {
        return Code::Unknown;
    }
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

async fn answer(server: &Arc<Server>, req: Request<Incoming>) -> Response<GrpcBody> {
    let received_at_us = now_us();
    let path = req.uri().path();
    if path != EXPORT_PATH {
        let message = if path.starts_with("/opentelemetry.proto.collector.") {
            "drainpipe archives logs only: register the telemetry drain with signals [\"logs\"]"
        } else {
            "unknown method: drainpipe serves opentelemetry.proto.collector.logs.v1.LogsService/Export"
        };
        return tonic::Status::unimplemented(message).into_http();
    }
    let headers = req.headers();
    if !header_str(headers, CONTENT_TYPE.as_str())
        .is_some_and(|t| t.starts_with("application/grpc"))
    {
        // gRPC over HTTP/2: a non-gRPC content type is answered in HTTP.
        let mut r = Response::new(GrpcBody::default());
        *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return r;
    }
    let Some(app) = header_str(headers, APP_HEADER) else {
        return tonic::Status::invalid_argument(
            "x-drainpipe-app metadata (the app's name) is required",
        )
        .into_http();
    };
    match otlp::authorize(server, &app, headers) {
        Ok(()) => {}
        Err(Refusal::UnknownApp) => return tonic::Status::not_found("unknown app").into_http(),
        Err(Refusal::BadCredentials) => {
            return tonic::Status::unauthenticated(
                "wrong or missing authorization: Bearer metadata",
            )
            .into_http();
        }
    }
    let content_length =
        header_str(headers, CONTENT_LENGTH.as_str()).and_then(|l| l.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let (body, permit) = match server.receive(body, content_length).await {
        Ok(received) => received,
        Err(Refused::Unavailable(why)) => return not_durable(why).into_http(),
        // No RetryInfo: the same request would be refused again.
        Err(Refused::TooLarge) => {
            return tonic::Status::resource_exhausted("request over --max-body").into_http();
        }
        Err(Refused::Broken) => {
            return tonic::Status::cancelled("request body could not be read").into_http();
        }
    };
    let max = usize::try_from(server.max_body).unwrap_or(usize::MAX);
    // The body is read whole above, within the memory budget; tonic then
    // unframes (and gunzips, bounded by --max-body) the message.
    let mut grpc = Grpc::new(RawCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let export = Export {
        server: Arc::clone(server),
        app,
        received_at_us,
        permit: Some(permit),
    };
    grpc.unary(export, Request::from_parts(parts, Full::new(body)))
        .await
}

/// Not durable: RESOURCE_EXHAUSTED when a bound is reached (the log is over
/// `--wal-max-bytes`, or too many bodies are in memory), UNAVAILABLE
/// otherwise; both with a `RetryInfo`.
fn not_durable(why: &'static str) -> tonic::Status {
    tracing::debug!(reason = why, "answering OTLP/gRPC not durable");
    let code = if why == WAL_FULL || why == INFLIGHT_FULL {
        Code::ResourceExhausted
    } else {
        Code::Unavailable
    };
    let message = "cannot make data durable now; retry";
    let details = otlp::Status {
        code: code as i32,
        message: message.to_owned(),
        details: vec![RetryInfo::detail()],
    }
    .encode_to_vec();
    tonic::Status::with_details(code, message, Bytes::from(details))
}

/// The Export call once the body is in memory: store it, then answer.
struct Export {
    server: Arc<Server>,
    app: String,
    received_at_us: i64,
    /// The body's share of the in-flight memory, held until it is stored.
    permit: Option<OwnedSemaphorePermit>,
}

type ExportFuture = Pin<
    Box<
        dyn Future<Output = Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status>>
            + Send,
    >,
>;

impl UnaryService<Bytes> for Export {
    type Response = ExportLogsServiceResponse;
    type Future = ExportFuture;

    fn call(&mut self, request: tonic::Request<Bytes>) -> ExportFuture {
        let server = Arc::clone(&self.server);
        let app = std::mem::take(&mut self.app);
        let received_at_us = self.received_at_us;
        let permit = self.permit.take();
        Box::pin(async move {
            let Some(permit) = permit else {
                return Err(tonic::Status::internal("one message per call"));
            };
            let body = request.into_inner();
            match otlp::store(
                &server,
                &app,
                received_at_us,
                BodyFormat::OtlpProtobuf,
                body,
                permit,
            )
            .await
            {
                // No partial success: every record is kept.
                Ok(()) => Ok(tonic::Response::new(ExportLogsServiceResponse::default())),
                Err(why) => Err(not_durable(why)),
            }
        })
    }
}

/// Request messages as their bytes; responses as protobuf.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

#[derive(Debug, Clone, Copy, Default)]
struct ResponseEncoder;

impl Codec for RawCodec {
    type Encode = ExportLogsServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportLogsServiceResponse;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: ExportLogsServiceResponse,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// The canonical name of a code, as gRPC's own metrics label it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::otlp::RETRY_AFTER_SECS;
    use base64::Engine as _;

    /// What a client reads from `grpc-status-details-bin`.
    fn details(status: &tonic::Status) -> otlp::Status {
        let r: Response<GrpcBody> = status.clone().into_http();
        let bin = r.headers()["grpc-status-details-bin"]
            .to_str()
            .expect("ascii");
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(bin.trim_end_matches('='))
            .expect("base64");
        otlp::Status::decode(bytes.as_slice()).expect("google.rpc.Status")
    }

    #[test]
    fn not_durable_answers_carry_retry_info() {
        for (why, code) in [
            (WAL_FULL, Code::ResourceExhausted),
            (INFLIGHT_FULL, Code::ResourceExhausted),
            ("write-ahead log write failed", Code::Unavailable),
        ] {
            let status = not_durable(why);
            assert_eq!(status.code(), code, "{why}");
            let rpc = details(&status);
            assert_eq!(rpc.code, code as i32);
            assert_eq!(rpc.details.len(), 1);
            assert_eq!(rpc.details[0].type_url, RetryInfo::TYPE_URL);
            let info = RetryInfo::decode(rpc.details[0].value.as_slice()).expect("RetryInfo");
            assert_eq!(info.retry_delay.map(|d| d.seconds), Some(RETRY_AFTER_SECS));
        }
    }

    #[test]
    fn error_answers_are_trailers_only_and_counted_by_code() {
        let r: Response<GrpcBody> = tonic::Status::not_found("unknown app").into_http();
        assert_eq!(response_code(&r), Code::NotFound);
        assert_eq!(code_name(response_code(&r)), "NOT_FOUND");
        assert_eq!(response_code(&Response::new(GrpcBody::default())), Code::Ok);
    }
}
