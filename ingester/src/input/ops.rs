//! The operations endpoints on the Logplex port: `/healthz` (the process
//! answers), `/readyz` (worth sending traffic to) and `/metrics`
//! (Prometheus), each for GET or HEAD.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::input::response::{Body, plain, with_header};
use crate::telemetry::metrics::Metrics;

/// The answer when `path` is an operations endpoint, else None. `ready` is
/// asked only for `/readyz`.
pub(crate) fn answer(
    path: &str,
    method: &Method,
    ready: impl FnOnce() -> bool,
    metrics: &Metrics,
) -> Option<Response<Body>> {
    let get = method == Method::GET || method == Method::HEAD;
    let response = match path {
        "/healthz" | "/readyz" | "/metrics" if !get => with_header(
            plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
            ALLOW,
            "GET, HEAD",
        ),
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if ready() {
                plain(StatusCode::OK, "ready\n")
            } else {
                plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => with_header(
            Response::new(Full::new(Bytes::from(metrics.render()))),
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => return None,
    };
    Some(response)
}
