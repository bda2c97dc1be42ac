//! OTLP/HTTP front for Heroku Fir telemetry drains: `POST /otlp/{app}/v1/logs`
//! on the same port as the Logplex front, and `POST /otlp/{app}` with the
//! same answers: Heroku does not document whether its exporter appends
//! `/v1/logs` to the drain's endpoint (the OpenTelemetry Collector's
//! otlphttp exporter does for `endpoint`, not for `logs_endpoint`), so both
//! spellings of the registered endpoint reach the app.
//!
//! Answers follow the OTLP/HTTP spec: 200 with an (empty)
//! `ExportLogsServiceResponse` in the request's encoding once the request is
//! durable; 503 with `Retry-After` when it cannot be made durable (OTLP
//! clients retry 429, 502, 503 and 504 only); 4xx bodies and 5xx bodies are a
//! `google.rpc.Status` in the request's encoding. The content of a body never
//! gets a 4xx: the body is logged as received (gunzipped) and decoded when
//! archived, where a body that does not decode is kept raw with `parse_error`.

use std::io::Read as _;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prost::Message as _;

use drainpipe_contract::app::valid_app_name;

use crate::input::intake::{Refused, Server, header_str, now_us};
use crate::input::otlp::{self, RETRY_AFTER_SECS, Refusal, Status};
use crate::input::response::Body;
use crate::parse::BodyFormat;
use crate::parse::otlp::Encoding;

/// Where telemetry drains point: `{endpoint.url}/otlp/{app}`; the OTLP/HTTP
/// exporter appends `/v1/logs`.
pub(crate) const PREFIX: &str = "/otlp/";

/// gRPC status codes used in `Status.code`.
const UNAVAILABLE: i32 = 14;
const NOT_FOUND: i32 = 5;
const UNAUTHENTICATED: i32 = 16;
const INVALID_ARGUMENT: i32 = 3;
const UNIMPLEMENTED: i32 = 12;

/// The app and signal of `rest`: `{app}/v1/{signal}`, or a bare `{app}`
/// (the endpoint as registered, taken as logs). `None` for any other shape.
fn app_and_signal(rest: &str) -> Option<(&str, &str)> {
    match rest.split_once("/v1/") {
        Some(pair) => Some(pair),
        None if !rest.contains('/') => Some((rest, "logs")),
        None => None,
    }
}

/// `rest` is the path after [`PREFIX`]: `{app}/v1/{signal}` or `{app}`.
pub(crate) async fn handle(server: &Server, rest: &str, req: Request<Incoming>) -> Response<Body> {
    let received_at_us = now_us();
    let encoding = match header_str(req.headers(), CONTENT_TYPE.as_str()) {
        Some(t) if media_type(&t) == "application/json" => Encoding::Json,
        _ => Encoding::Protobuf,
    };
    let Some((app, signal)) = app_and_signal(rest) else {
        return status(
            encoding,
            StatusCode::NOT_FOUND,
            NOT_FOUND,
            "use POST /otlp/{app}/v1/logs or POST /otlp/{app}",
        );
    };
    if !valid_app_name(app) {
        return status(encoding, StatusCode::NOT_FOUND, NOT_FOUND, "unknown app");
    }
    match signal {
        "logs" => {}
        "traces" | "metrics" => {
            return status(
                encoding,
                StatusCode::NOT_FOUND,
                UNIMPLEMENTED,
                "drainpipe archives logs only: register the telemetry drain with signals [\"logs\"]",
            );
        }
        _ => return status(encoding, StatusCode::NOT_FOUND, NOT_FOUND, "unknown signal"),
    }
    if req.method() != Method::POST {
        let mut r = status(
            encoding,
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID_ARGUMENT,
            "use POST",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let headers = req.headers();
    match header_str(headers, CONTENT_TYPE.as_str())
        .as_deref()
        .map(media_type)
    {
        Some("application/x-protobuf" | "application/json") => {}
        _ => {
            return status(
                encoding,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_ARGUMENT,
                "Content-Type must be application/x-protobuf or application/json",
            );
        }
    }
    let gzip = match header_str(headers, CONTENT_ENCODING.as_str()).as_deref() {
        None | Some("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(_) => {
            return status(
                encoding,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_ARGUMENT,
                "Content-Encoding must be gzip or absent",
            );
        }
    };
    match otlp::authorize(server, app, headers) {
        Ok(()) => {}
        Err(Refusal::UnknownApp) => {
            return status(encoding, StatusCode::NOT_FOUND, NOT_FOUND, "unknown app");
        }
        Err(Refusal::BadCredentials) => {
            return status(
                encoding,
                StatusCode::UNAUTHORIZED,
                UNAUTHENTICATED,
                "wrong or missing Authorization: Bearer header",
            );
        }
    }
    let content_length =
        header_str(headers, CONTENT_LENGTH.as_str()).and_then(|l| l.parse::<u64>().ok());
    if content_length.is_some_and(|l| l > server.max_body) {
        return too_large(encoding);
    }
    let (body, permit) = match server.receive(req.into_body(), content_length).await {
        Ok(received) => received,
        Err(Refused::Unavailable(why)) => return unavailable(encoding, why),
        Err(Refused::TooLarge) => return too_large(encoding),
        Err(Refused::Broken) => {
            return status(
                encoding,
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                "request body could not be read",
            );
        }
    };
    let body = if gzip {
        match gunzip(&body, server.max_body) {
            Gunzipped::Body(b) => b,
            Gunzipped::TooLarge => return too_large(encoding),
            // Not gzip after all: logged as sent, archived raw with parse_error.
            Gunzipped::Broken => body,
        }
    } else {
        body
    };
    let format = match encoding {
        Encoding::Protobuf => BodyFormat::OtlpProtobuf,
        Encoding::Json => BodyFormat::OtlpJson,
    };
    match otlp::store(server, app, received_at_us, format, body, permit).await {
        Ok(()) => success(encoding),
        Err(why) => unavailable(encoding, why),
    }
}

/// `application/json; charset=utf-8` -> `application/json`.
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

enum Gunzipped {
    Body(Bytes),
    TooLarge,
    Broken,
}

/// Inflate at most `max` bytes: a small request must not become an unbounded
/// one in memory.
fn gunzip(compressed: &[u8], max: u64) -> Gunzipped {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4));
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(max.saturating_add(1));
    match decoder.read_to_end(&mut out) {
        Ok(_) if out.len() as u64 > max => Gunzipped::TooLarge,
        Ok(_) => Gunzipped::Body(Bytes::from(out)),
        Err(_) => Gunzipped::Broken,
    }
}

/// 200 with an empty `ExportLogsServiceResponse` (no partial success: every
/// record is kept).
fn success(encoding: Encoding) -> Response<Body> {
    let body: &'static [u8] = match encoding {
        // An empty message encodes to no bytes.
        Encoding::Protobuf => b"",
        Encoding::Json => b"{}",
    };
    respond(encoding, StatusCode::OK, Bytes::from_static(body))
}

fn unavailable(encoding: Encoding, why: &'static str) -> Response<Body> {
    tracing::debug!(reason = why, "answering OTLP 503");
    let mut r = status(
        encoding,
        StatusCode::SERVICE_UNAVAILABLE,
        UNAVAILABLE,
        "cannot make data durable now; retry",
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

fn too_large(encoding: Encoding) -> Response<Body> {
    status(
        encoding,
        StatusCode::PAYLOAD_TOO_LARGE,
        INVALID_ARGUMENT,
        "request body over the limit (uncompressed)",
    )
}

fn status(encoding: Encoding, http: StatusCode, code: i32, message: &str) -> Response<Body> {
    let s = Status {
        code,
        message: message.to_owned(),
        details: Vec::new(),
    };
    let body = match encoding {
        Encoding::Protobuf => s.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&s).unwrap_or_default(),
    };
    respond(encoding, http, Bytes::from(body))
}

fn respond(encoding: Encoding, http: StatusCode, body: Bytes) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = http;
    let content_type = match encoding {
        Encoding::Protobuf => "application/x-protobuf",
        Encoding::Json => "application/json",
    };
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn the_bare_endpoint_is_logs_and_other_shapes_are_not_found() {
        assert_eq!(app_and_signal("my-app/v1/logs"), Some(("my-app", "logs")));
        assert_eq!(app_and_signal("my-app"), Some(("my-app", "logs")));
        assert_eq!(
            app_and_signal("my-app/v1/traces"),
            Some(("my-app", "traces"))
        );
        assert_eq!(app_and_signal("my-app/v2/logs"), None);
        assert_eq!(app_and_signal("my-app/"), None);
    }

    #[test]
    fn gunzip_is_bounded() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[b'a'; 10_000]).expect("write");
        let gz = enc.finish().expect("finish");
        assert!(matches!(gunzip(&gz, 10_000), Gunzipped::Body(b) if b.len() == 10_000));
        assert!(matches!(gunzip(&gz, 9_999), Gunzipped::TooLarge));
        assert!(matches!(gunzip(b"not gzip", 100), Gunzipped::Broken));
    }

    #[test]
    fn error_bodies_are_status_messages_in_the_request_encoding() {
        let r = status(
            Encoding::Json,
            StatusCode::NOT_FOUND,
            NOT_FOUND,
            "unknown app",
        );
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let s = Status {
            code: NOT_FOUND,
            message: "unknown app".into(),
            details: Vec::new(),
        };
        let proto = status(
            Encoding::Protobuf,
            StatusCode::NOT_FOUND,
            NOT_FOUND,
            "unknown app",
        );
        assert_eq!(
            proto.headers()[CONTENT_LENGTH],
            s.encode_to_vec().len().to_string()
        );
    }
}
