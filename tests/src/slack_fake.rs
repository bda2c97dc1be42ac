//! An in-process fake of Slack's incoming webhooks, answering as Slack does.
//!
//! Slack has no test server, so the alert tests post here. What it does, and where each answer
//! comes from:
//!
//! - `POST /services/T…/B…/…` (any path under `/services/`; one webhook per path) with a JSON
//!   body: `200` with body `ok` as `text/html`, Slack's answer to an accepted message;
//! - Slack's refusals, each a status with a bare error string as the body (Slack changelog
//!   2016-05-17, "Improving error conditions for Incoming Webhooks", and the incoming-webhook
//!   guide's "Handling errors"): `400 invalid_payload` for a body that is not a JSON object,
//!   `400 no_text` for a message with neither `text` nor `blocks` (nor `attachments`),
//!   `400 invalid_blocks_format` for `blocks` that is not an array, and `400 invalid_blocks` for
//!   blocks that break Block Kit's limits (Block Kit reference): more than 50 blocks in a message,
//!   a section's `text.text` over 3,000 characters or empty, over 10 section `fields` or one over
//!   2,000, a header whose text is not `plain_text` or is over 150 characters, a context block
//!   without 1 to 10 elements, a `block_id` over 255 characters, a block of an unknown type.
//!   Lengths are counted in characters, not bytes. A path outside `/services/` is `404
//!   no_service` (Slack's answer for a removed or unknown webhook); a method other than `POST`
//!   is `405` (Slack's body for that is not published; the fake says `invalid_method`);
//! - a destination that is gone ([`SlackFake::gone`]): `403 action_prohibited`, `404
//!   channel_not_found` or `410 channel_is_archived`, the changelog's answers; other refusals
//!   Slack documents (`404 no_service`, `403 invalid_token`, ...) through [`SlackFake::refuse`];
//! - rate limiting ([`SlackFake::rate_limit`], off by default): Slack allows about one message a
//!   second per webhook with short bursts (API docs, "Rate limits") and answers more with `429`
//!   and a `Retry-After` header in seconds. The body is `{"ok":false,"error":"rate_limited",
//!   "retry_after":N}` as `application/json`, the form a user recorded from a webhook in 2023
//!   (yassineaboukir/sublert#46); Slack's rate-limit page only says "a JSON object". A client must
//!   go by the status and `Retry-After`, never by the body. While the `Retry-After` has not run
//!   out every post on that webhook gets 429 again; only accepted posts use up the allowance, so
//!   a refused one costs nothing;
//! - a broken destination: [`SlackFake::fail`] (`500 rollup_error`, Slack's "something strange
//!   and unusual happened", or any other status) and [`SlackFake::hang`] (the request is read and
//!   never answered; the connection stays open until the fake is dropped).
//!
//! Every request is recorded in arrival order ([`SlackFake::requests`]); accepted posts with
//! their parsed payload ([`SlackFake::posts`]), refusals ([`SlackFake::refusals`]) and 429s with
//! how long the client waited before its next post to the same webhook
//! ([`SlackFake::rate_limited`], [`SlackFake::retry_after_honoured`]).
//!
//! Top-level `text` over 40,000 characters is truncated by Slack, not refused, so the fake
//! accepts it (a test can check the length in [`SlackPost::payload`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Block Kit's limits that Slack enforces with `invalid_blocks` (Block Kit reference).
pub mod limits {
    /// Blocks in one message.
    pub const MAX_BLOCKS: usize = 50;
    /// Characters in a section block's `text.text`.
    pub const SECTION_TEXT: usize = 3000;
    /// Items in a section block's `fields`.
    pub const SECTION_FIELDS: usize = 10;
    /// Characters in each section field's text.
    pub const SECTION_FIELD_TEXT: usize = 2000;
    /// Characters in a header block's `plain_text`.
    pub const HEADER_TEXT: usize = 150;
    /// Elements in a context block.
    pub const CONTEXT_ELEMENTS: usize = 10;
    /// Characters in a `block_id`.
    pub const BLOCK_ID: usize = 255;
}

/// Largest request body read; Slack's own limit is not published, this only guards the fake.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The block types Slack's messages take; any other `type` is `invalid_blocks`.
const BLOCK_TYPES: [&str; 11] = [
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "video",
];

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct SlackRequest {
    pub method: Method,
    /// The path, e.g. `/services/T0DRAINPIPE/B0ALERTS/xyz`: which webhook was posted to.
    pub path: String,
    pub content_type: Option<String>,
    /// The request body as sent (lossy UTF-8).
    pub body: String,
    /// When the request arrived.
    pub at: Instant,
    /// The same moment on the wall clock.
    pub received_at: SystemTime,
    /// The status answered; `None` while [`SlackFake::hang`] holds the request unanswered.
    pub status: Option<u16>,
    /// The body answered (`ok`, an error string, or the 429's JSON).
    pub answer: String,
    /// The `Retry-After` seconds sent with a 429.
    pub retry_after: Option<u64>,
}

/// An accepted post: Slack would show this message.
#[derive(Debug, Clone)]
pub struct SlackPost {
    pub path: String,
    pub at: Instant,
    pub received_at: SystemTime,
    /// The JSON body as sent.
    pub payload: Value,
}

impl SlackPost {
    /// The top-level `text` (the notification fallback when there are blocks).
    pub fn text(&self) -> Option<&str> {
        self.payload.get("text").and_then(Value::as_str)
    }

    /// The `blocks`, empty when the message has none.
    pub fn blocks(&self) -> &[Value] {
        self.payload
            .get("blocks")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The text of every block that shows text (header, section text and fields, context
    /// elements), in order: what a reader of the channel sees.
    pub fn block_texts(&self) -> Vec<&str> {
        fn text(v: &Value) -> Option<&str> {
            v.get("text").and_then(Value::as_str)
        }
        let mut out = Vec::new();
        for block in self.blocks() {
            if let Some(t) = block.get("text").and_then(text) {
                out.push(t);
            }
            for key in ["fields", "elements"] {
                if let Some(items) = block.get(key).and_then(Value::as_array) {
                    out.extend(items.iter().filter_map(text));
                }
            }
        }
        out
    }
}

/// A request Slack would have refused (anything but 200), hung requests excepted.
#[derive(Debug, Clone)]
pub struct SlackRefusal {
    pub path: String,
    pub at: Instant,
    pub status: u16,
    /// The error string answered (`invalid_blocks`, `channel_not_found`, ...; for a 429 the JSON).
    pub error: String,
    /// The request body as sent.
    pub body: String,
}

/// A 429 and what the client did next on the same webhook.
#[derive(Debug, Clone)]
pub struct RateLimitedPost {
    pub path: String,
    /// When the 429 was answered.
    pub at: Instant,
    /// The `Retry-After` sent.
    pub retry_after: Duration,
    /// How long after the 429 the next request to the same webhook arrived; `None` if none did.
    pub next_request_after: Option<Duration>,
}

impl RateLimitedPost {
    /// Whether the client's next request to this webhook came no sooner than `Retry-After`
    /// (`None` when there was no next request).
    pub fn honoured(&self) -> Option<bool> {
        self.next_request_after.map(|d| d >= self.retry_after)
    }
}

#[derive(Debug, Clone)]
enum Mode {
    Normal,
    Refuse { status: u16, body: String },
    Hang,
}

#[derive(Debug, Clone, Copy)]
struct RateLimit {
    per: Duration,
    burst: u32,
    retry_after_secs: u64,
}

/// One webhook's allowance: a token bucket of `burst` posts refilled one per `per`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    rate_limit: Option<RateLimit>,
    buckets: HashMap<String, Bucket>,
    requests: Vec<SlackRequest>,
}

/// A running fake Slack. Stops when dropped.
pub struct SlackFake {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl Drop for SlackFake {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

impl SlackFake {
    /// Binds a loopback port and serves until dropped: every post accepted, no rate limit.
    pub async fn start() -> SlackFake {
        SlackFake::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// [`SlackFake::start`] on a port of `ip`: the node's address, for ingester pods to post to.
    pub async fn start_on(ip: std::net::IpAddr) -> SlackFake {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("bind a port for the fake Slack");
        let addr = listener
            .local_addr()
            .expect("local address of the fake Slack");
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Normal,
            rate_limit: None,
            buckets: HashMap::new(),
            requests: Vec::new(),
        }));
        let stop = CancellationToken::new();
        let (shared, stopped) = (state.clone(), stop.clone());
        let app = Router::new().fallback(move |req: Request<Body>| {
            let (state, stop) = (shared.clone(), stopped.clone());
            async move { handle(state, stop, req).await }
        });
        let task = tokio::spawn(async move {
            // Serving ends only when the task is aborted on drop.
            let _ = axum::serve(listener, app).await;
        });
        SlackFake {
            addr,
            state,
            task,
            stop,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// `http://IP:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new webhook URL shaped like Slack's (`/services/T…/B…/<24 characters>`); each call
    /// gives another webhook, with its own rate-limit allowance.
    pub fn webhook_url(&self) -> String {
        let mut secret = uuid::Uuid::new_v4().simple().to_string();
        secret.truncate(24);
        format!(
            "{}/services/T0DRAINPIPE/B0ALERTS00/{secret}",
            self.base_url()
        )
    }

    /// Slack's pacing: a post to a webhook sooner than `per` after its previous accepted post
    /// is answered `429` with `Retry-After: retry_after_secs`, and so is every post to it until
    /// that has run out.
    pub fn rate_limit(&self, per: Duration, retry_after_secs: u64) {
        self.rate_limit_with_burst(per, 1, retry_after_secs);
    }

    /// [`SlackFake::rate_limit`] tolerating bursts: up to `burst` posts at once, then one per
    /// `per` (a token bucket per webhook, full at the start).
    pub fn rate_limit_with_burst(&self, per: Duration, burst: u32, retry_after_secs: u64) {
        let mut s = self.lock();
        s.rate_limit = Some(RateLimit {
            per,
            burst: burst.max(1),
            retry_after_secs,
        });
        s.buckets.clear();
    }

    /// No rate limit (the default).
    pub fn no_rate_limit(&self) {
        let mut s = self.lock();
        s.rate_limit = None;
        s.buckets.clear();
    }

    /// The channel is gone, as Slack answers it: `403` `action_prohibited`, `404`
    /// `channel_not_found` or `410` `channel_is_archived`. Panics for another status (use
    /// [`SlackFake::refuse`]).
    pub fn gone(&self, status: u16) {
        let body = match status {
            403 => "action_prohibited",
            404 => "channel_not_found",
            410 => "channel_is_archived",
            other => panic!(
                "SlackFake::gone({other}): Slack's gone answers are 403, 404 and 410; use refuse()"
            ),
        };
        self.refuse(status, body);
    }

    /// Every post is answered `status` with `body` (e.g. `404` `no_service`, `403`
    /// `invalid_token`), before the payload is looked at.
    pub fn refuse(&self, status: u16, body: &str) {
        self.lock().mode = Mode::Refuse {
            status,
            body: body.to_owned(),
        };
    }

    /// Every post fails with `status`: `500` answers `rollup_error` as Slack does, another
    /// status its reason phrase.
    pub fn fail(&self, status: u16) {
        let body = match status {
            500 => "rollup_error".to_owned(),
            other => StatusCode::from_u16(other)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_owned(),
        };
        self.refuse(status, &body);
    }

    /// Every request is read and never answered: the connection stays open until the fake is
    /// dropped (or the client gives up). [`SlackFake::heal`] answers new requests again; those
    /// already held stay unanswered.
    pub fn hang(&self) {
        self.lock().mode = Mode::Hang;
    }

    /// Back to accepting posts (the rate limit, if set, stays).
    pub fn heal(&self) {
        self.lock().mode = Mode::Normal;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<SlackRequest> {
        self.lock().requests.clone()
    }

    /// The accepted posts, in arrival order.
    pub fn posts(&self) -> Vec<SlackPost> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.status == Some(200))
            .filter_map(|r| {
                Some(SlackPost {
                    path: r.path.clone(),
                    at: r.at,
                    received_at: r.received_at,
                    payload: serde_json::from_str(&r.body).ok()?,
                })
            })
            .collect()
    }

    /// Every answered request that was not accepted (429s included), in arrival order.
    pub fn refusals(&self) -> Vec<SlackRefusal> {
        self.lock()
            .requests
            .iter()
            .filter_map(|r| match r.status {
                Some(status) if status != 200 => Some(SlackRefusal {
                    path: r.path.clone(),
                    at: r.at,
                    status,
                    error: r.answer.clone(),
                    body: r.body.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Requests held unanswered by [`SlackFake::hang`].
    pub fn hung(&self) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.status.is_none())
            .count()
    }

    /// Every 429, with how long the client then waited before posting to that webhook again.
    pub fn rate_limited(&self) -> Vec<RateLimitedPost> {
        let s = self.lock();
        s.requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == Some(429))
            .map(|(i, r)| {
                let next = s.requests[i + 1..].iter().find(|n| n.path == r.path);
                RateLimitedPost {
                    path: r.path.clone(),
                    at: r.at,
                    retry_after: Duration::from_secs(r.retry_after.unwrap_or(0)),
                    next_request_after: next.map(|n| n.at.saturating_duration_since(r.at)),
                }
            })
            .collect()
    }

    /// True when no request to a webhook came sooner than the `Retry-After` of a 429 before it.
    pub fn retry_after_honoured(&self) -> bool {
        self.rate_limited()
            .iter()
            .all(|r| r.honoured().unwrap_or(true))
    }

    /// Forgets the recorded requests and the rate-limit allowances used.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.requests.clear();
        s.buckets.clear();
    }

    /// Waits until at least `n` posts were accepted and returns them all; panics after `timeout`
    /// saying what arrived.
    pub async fn wait_for_posts(&self, n: usize, timeout: Duration) -> Vec<SlackPost> {
        let deadline = Instant::now() + timeout;
        loop {
            let posts = self.posts();
            if posts.len() >= n {
                return posts;
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = self
                    .requests()
                    .iter()
                    .map(|r| format!("{:?} {} {}", r.status, r.path, r.answer))
                    .collect();
                panic!(
                    "fake Slack: {} of {n} posts accepted within {timeout:?}; requests: {seen:#?}",
                    posts.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// What to answer, decided under the lock.
enum Decision {
    Answer {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    Hang,
}

async fn handle(state: Arc<Mutex<State>>, stop: CancellationToken, req: Request<Body>) -> Response {
    let at = Instant::now();
    let received_at = SystemTime::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = to_bytes(req.into_body(), MAX_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let (body, too_large) = match body {
        Ok(body) => (body, false),
        Err(_) => (String::new(), true),
    };

    let decision = {
        let mut s = lock(&state);
        let decision = decide(&mut s, &method, &path, &body, too_large, at);
        let (status, answer, retry_after) = match &decision {
            Decision::Answer {
                status,
                body,
                retry_after,
            } => (Some(*status), body.clone(), *retry_after),
            Decision::Hang => (None, String::new(), None),
        };
        s.requests.push(SlackRequest {
            method,
            path,
            content_type,
            body,
            at,
            received_at,
            status,
            answer,
            retry_after,
        });
        decision
    };

    match decision {
        Decision::Answer {
            status,
            body,
            retry_after,
        } => answer(status, body, retry_after),
        Decision::Hang => {
            // Held until the fake is dropped; by then nobody reads the answer.
            stop.cancelled().await;
            answer(503, "stopped".to_owned(), None)
        }
    }
}

fn decide(
    s: &mut State,
    method: &Method,
    path: &str,
    body: &str,
    too_large: bool,
    now: Instant,
) -> Decision {
    let reply = |status: u16, body: &str| Decision::Answer {
        status,
        body: body.to_owned(),
        retry_after: None,
    };
    let Some(hook) = path.strip_prefix("/services/") else {
        return reply(404, "no_service");
    };
    if hook.split('/').filter(|seg| !seg.is_empty()).count() < 3 {
        return reply(404, "no_service");
    }
    if method != Method::POST {
        return reply(405, "invalid_method");
    }
    match &s.mode {
        Mode::Normal => {}
        Mode::Refuse { status, body } => return reply(*status, body),
        Mode::Hang => return Decision::Hang,
    }
    if let Some(limit) = s.rate_limit {
        let bucket = s.buckets.entry(path.to_owned()).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            last: now,
            blocked_until: None,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        let per = limit.per.as_secs_f64().max(f64::EPSILON);
        bucket.tokens = (bucket.tokens + elapsed / per).min(f64::from(limit.burst));
        let blocked = bucket.blocked_until.is_some_and(|until| now < until);
        if blocked || bucket.tokens < 1.0 {
            let retry_after = match bucket.blocked_until {
                Some(until) if blocked => {
                    until.saturating_duration_since(now).as_secs_f64().ceil() as u64
                }
                _ => limit.retry_after_secs,
            };
            if !blocked {
                bucket.blocked_until = Some(now + Duration::from_secs(limit.retry_after_secs));
            }
            return Decision::Answer {
                status: 429,
                body: json!({"ok": false, "error": "rate_limited", "retry_after": retry_after})
                    .to_string(),
                retry_after: Some(retry_after),
            };
        }
    }
    if too_large {
        return reply(400, "invalid_payload");
    }
    if let Err(error) = validate(body) {
        return reply(400, error);
    }
    if let Some(bucket) = s.buckets.get_mut(path) {
        bucket.tokens -= 1.0;
    }
    reply(200, "ok")
}

fn answer(status: u16, body: String, retry_after: Option<u64>) -> Response {
    let json = status == 429;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if json {
        "application/json; charset=utf-8"
    } else {
        "text/html"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Slack's checks of a message body, in the order that decides which error is named.
fn validate(body: &str) -> Result<(), &'static str> {
    let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(body) else {
        return Err("invalid_payload");
    };
    let text = match msg.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => return Err("invalid_payload"),
    };
    let blocks = match msg.get("blocks") {
        None | Some(Value::Null) => None,
        Some(Value::Array(blocks)) => Some(blocks),
        Some(_) => return Err("invalid_blocks_format"),
    };
    let attachments = msg
        .get("attachments")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let has_text = text.is_some_and(|t| !t.trim().is_empty());
    let has_blocks = blocks.is_some_and(|b| !b.is_empty());
    if !has_text && !has_blocks && !attachments {
        return Err("no_text");
    }
    if let Some(blocks) = blocks {
        if blocks.len() > limits::MAX_BLOCKS {
            return Err("invalid_blocks");
        }
        if !blocks.iter().all(valid_block) {
            return Err("invalid_blocks");
        }
    }
    Ok(())
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// A text object: `{"type": "plain_text"|"mrkdwn", "text": "..."}` with 1 to `max` characters.
fn valid_text_object(v: &Value, max: usize, plain_only: bool) -> bool {
    let kind = v.get("type").and_then(Value::as_str);
    let kind_ok = match kind {
        Some("plain_text") => true,
        Some("mrkdwn") => !plain_only,
        _ => false,
    };
    let len = v.get("text").and_then(Value::as_str).map(chars);
    kind_ok && len.is_some_and(|n| (1..=max).contains(&n))
}

fn valid_block(block: &Value) -> bool {
    let Some(kind) = block.get("type").and_then(Value::as_str) else {
        return false;
    };
    if !BLOCK_TYPES.contains(&kind) {
        return false;
    }
    match block.get("block_id") {
        None => {}
        Some(Value::String(id)) if chars(id) <= limits::BLOCK_ID => {}
        Some(_) => return false,
    }
    match kind {
        "section" => {
            let text = block.get("text");
            let fields = block.get("fields");
            if text.is_none() && fields.is_none() {
                return false;
            }
            if let Some(text) = text
                && !valid_text_object(text, limits::SECTION_TEXT, false)
            {
                return false;
            }
            match fields {
                None => true,
                Some(Value::Array(items)) => {
                    !items.is_empty()
                        && items.len() <= limits::SECTION_FIELDS
                        && items
                            .iter()
                            .all(|f| valid_text_object(f, limits::SECTION_FIELD_TEXT, false))
                }
                Some(_) => false,
            }
        }
        "header" => block
            .get("text")
            .is_some_and(|t| valid_text_object(t, limits::HEADER_TEXT, true)),
        "context" => block
            .get("elements")
            .and_then(Value::as_array)
            .is_some_and(|e| (1..=limits::CONTEXT_ELEMENTS).contains(&e.len())),
        _ => true,
    }
}
