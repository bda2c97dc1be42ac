//! What the two OTLP fronts (`otlp_http`, `otlp_grpc`) share: who may send
//! (the app and its `Authorization: Bearer` password), how an accepted body
//! becomes a write-ahead log entry, and the `google.rpc.Status` both put in
//! their error answers.
//!
//! Both store the request body as received (gunzipped), so decoding happens
//! once, when the log is archived, for either transport.

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::OwnedSemaphorePermit;

use drainpipe_contract::app::valid_app_name;

use crate::durable::Entry;
use crate::input::intake::{Server, password};
use crate::input::routes::Denied;
use crate::parse::BodyFormat;

/// Seconds an OTLP client is asked to wait before retrying what could not
/// be made durable (`Retry-After` over HTTP, `RetryInfo` over gRPC).
pub(crate) const RETRY_AFTER_SECS: i64 = 5;

/// Why a sender is refused before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a valid app name, or not in the routes file.
    UnknownApp,
    /// Wrong or missing `Authorization: Bearer` password.
    BadCredentials,
}

/// May this request send `app`'s logs? The password is compared in
/// constant time by the routes.
pub(crate) fn authorize(server: &Server, app: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    if !valid_app_name(app) {
        return Err(Refusal::UnknownApp);
    }
    match server
        .routes
        .check(app, password(headers, None).as_deref(), None)
    {
        Ok(()) => Ok(()),
        Err(Denied::UnknownApp) => Err(Refusal::UnknownApp),
        Err(Denied::BadPassword | Denied::TokenMismatch) => Err(Refusal::BadCredentials),
    }
}

/// Make one request body durable; `permit` (its share of the in-flight
/// memory) is given back once it is stored or refused.
pub(crate) async fn store(
    server: &Server,
    app: &str,
    received_at_us: i64,
    format: BodyFormat,
    body: Bytes,
    permit: OwnedSemaphorePermit,
) -> Result<(), &'static str> {
    let entry = Entry {
        app: app.to_owned(),
        drain_token: None,
        frame_id: None,
        msg_count: None,
        received_at_us,
        format,
        body,
    };
    let stored = server.sink.store(entry).await;
    drop(permit);
    stored
}

/// `google.rpc.Status`: the body of OTLP/HTTP error answers and the
/// `grpc-status-details-bin` of OTLP/gRPC ones (the OTLP spec names it).
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub(crate) struct Status {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    /// Only gRPC answers carry details (a `RetryInfo`); HTTP says
    /// `Retry-After`.
    #[prost(message, repeated, tag = "3")]
    #[serde(skip)]
    pub(crate) details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Any {
    #[prost(string, tag = "1")]
    pub(crate) type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) value: Vec<u8>,
}

/// `google.rpc.RetryInfo`: OTLP/gRPC clients retry `UNAVAILABLE` after its
/// delay, and `RESOURCE_EXHAUSTED` only when it is present.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub(crate) retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub(crate) seconds: i64,
    #[prost(int32, tag = "2")]
    pub(crate) nanos: i32,
}

impl RetryInfo {
    pub(crate) const TYPE_URL: &'static str = "type.googleapis.com/google.rpc.RetryInfo";

    /// The `Any` that asks for a retry after [`RETRY_AFTER_SECS`].
    pub(crate) fn detail() -> Any {
        use prost::Message as _;
        Any {
            type_url: Self::TYPE_URL.to_owned(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: RETRY_AFTER_SECS,
                    nanos: 0,
                }),
            }
            .encode_to_vec(),
        }
    }
}
