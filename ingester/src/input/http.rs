//! HTTP front: `POST /logplex/{app}`; OTLP/HTTP requests on the same port
//! go to `otlp_http`, the operations endpoints to `ops`.
//!
//! Status codes follow Logplex's rules (see `docs/architecture.md`, Data path): 200 only when the
//! request is durable, 401/403/404 for auth and routing, 413 over the body
//! limit, 503 + Retry-After when the data cannot be made durable right now.
//! The content of a body never causes a 4xx: parsing happens later and keeps
//! every byte.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use drainpipe_contract::app::valid_app_name;

use crate::durable::Entry;
use crate::input::dedupe::Claim;
use crate::input::intake::{
    Refused, Server, accept, discard_body, finish, header_str, now_us, password,
};
use crate::input::ops;
use crate::input::otlp_http;
use crate::input::response::{Body, plain, with_header};
use crate::input::routes::Denied;
use crate::parse::BodyFormat;

/// Seconds Logplex is asked to wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "5";

impl Server {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        let method = req.method();
        if let Some(app) = path.strip_prefix("/logplex/") {
            if method != Method::POST {
                return with_header(
                    plain(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
                    ALLOW,
                    "POST",
                );
            }
            let app = app.to_owned();
            return self.counted(self.drain(&app, req)).await;
        }
        if let Some(rest) = path.strip_prefix(otlp_http::PREFIX) {
            let rest = rest.to_owned();
            return self.counted(otlp_http::handle(&self, &rest, req)).await;
        }
        ops::answer(path, method, || self.is_ready(), &self.metrics)
            .unwrap_or_else(|| plain(StatusCode::NOT_FOUND, "not found\n"))
    }

    /// A drain request's answer, counted by status, with the latency of
    /// every acknowledgement.
    async fn counted(&self, answer: impl Future<Output = Response<Body>>) -> Response<Body> {
        let started = Instant::now();
        let response = answer.await;
        let status = response.status();
        self.metrics.request(status.as_u16());
        if status == StatusCode::OK {
            self.metrics
                .ack_latency
                .observe(started.elapsed().as_secs_f64());
        }
        response
    }

    async fn drain(&self, app: &str, req: Request<Incoming>) -> Response<Body> {
        let received_at_us = now_us();
        if !valid_app_name(app) {
            return plain(StatusCode::NOT_FOUND, "unknown app\n");
        }
        let headers = req.headers();
        let drain_token = header_str(headers, "logplex-drain-token");
        let frame_id = header_str(headers, "logplex-frame-id");
        let msg_count =
            header_str(headers, "logplex-msg-count").and_then(|c| c.trim().parse().ok());
        let password = password(headers, req.uri().query());
        match self
            .routes
            .check(app, password.as_deref(), drain_token.as_deref())
        {
            Ok(()) => {}
            Err(Denied::UnknownApp) => return plain(StatusCode::NOT_FOUND, "unknown app\n"),
            Err(Denied::BadPassword) => {
                return with_header(
                    plain(StatusCode::UNAUTHORIZED, "wrong or missing password\n"),
                    WWW_AUTHENTICATE,
                    "Basic realm=\"drainpipe\"",
                );
            }
            Err(Denied::TokenMismatch) => {
                return plain(
                    StatusCode::FORBIDDEN,
                    "drain token does not match this app\n",
                );
            }
        }
        let content_length =
            header_str(headers, CONTENT_LENGTH.as_str()).and_then(|l| l.parse::<u64>().ok());
        if content_length.is_some_and(|l| l > self.max_body) {
            return too_large();
        }

        let key = drain_token.clone().zip(frame_id.clone());
        let guard = match self.dedupe.claim_waiting(key).await {
            Claim::New(guard) => guard,
            Claim::Duplicate | Claim::Wait(_) => {
                self.metrics.duplicate_frames.inc();
                discard_body(req.into_body(), self.max_body).await;
                return ok();
            }
        };
        let (body, permit) = match self.receive(req.into_body(), content_length).await {
            Ok(received) => received,
            Err(refused) => return logplex(refused),
        };
        let entry = Entry {
            app: app.to_owned(),
            drain_token,
            frame_id,
            msg_count,
            received_at_us,
            format: BodyFormat::LogplexHttps,
            body,
        };
        let stored = self.sink.store(entry).await;
        drop(permit);
        match stored {
            Ok(()) => {
                guard.ack();
                ok()
            }
            Err(why) => unavailable(why),
        }
    }
}

/// A refused body in Logplex's words.
fn logplex(refused: Refused) -> Response<Body> {
    match refused {
        Refused::Unavailable(why) => unavailable(why),
        Refused::TooLarge => too_large(),
        Refused::Broken => plain(StatusCode::BAD_REQUEST, "request body could not be read\n"),
    }
}

/// Whether a connection open for `age` has reached `max_age` (zero: never).
fn aged(age: Duration, max_age: Duration) -> bool {
    !max_age.is_zero() && age >= max_age
}

fn ok() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

fn too_large() -> Response<Body> {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body over the limit\n",
    )
}

pub(crate) fn unavailable(why: &'static str) -> Response<Body> {
    tracing::debug!(reason = why, "answering 503");
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "cannot make data durable now; retry\n",
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    r
}

/// Accept connections until `shutdown`, then let in-flight requests finish
/// (at most `grace`) and return. A connection older than `max_age` (unless
/// zero) is closed after its next response.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    shutdown: CancellationToken,
    grace: Duration,
    max_age: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(30));
    while let Some((stream, _)) = accept(&listener, &shutdown).await {
        let server = Arc::clone(&server);
        let opened = Instant::now();
        let service = service_fn(move |req| {
            let server = Arc::clone(&server);
            async move {
                let mut response = server.handle(req).await;
                if aged(opened.elapsed(), max_age) {
                    // hyper ends the connection after a response saying so;
                    // the sender reconnects, through the load balancer again.
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    finish(graceful.shutdown(), grace, "HTTP").await;
}
