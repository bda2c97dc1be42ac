//! The small text responses of the HTTP port, shared by the Logplex front
//! and the operations endpoints.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

pub(crate) type Body = Full<Bytes>;

pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) fn with_header(
    mut r: Response<Body>,
    name: http::header::HeaderName,
    value: &'static str,
) -> Response<Body> {
    r.headers_mut()
        .insert(name, HeaderValue::from_static(value));
    r
}
