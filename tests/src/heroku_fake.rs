//! An in-process fake of the Heroku Platform API's log-drain endpoints.
//!
//! Heroku has no public test server, so the operator's tests talk to this one.
//! It follows `shared/heroku/platform-api-log-drains.schema.json` and the
//! behaviours the operator must cope with:
//!
//! - `Accept: application/vnd.heroku+json; version=3` required (400 without),
//!   or its `sdk` variant `version=3.sdk`, what the Heroku CLI sends for App
//!   Info and every telemetry-drain call (heroku/cli
//!   `src/commands/telemetry/*.ts`); each request's `Accept` is recorded;
//! - bearer auth: 401 `{"id":"unauthorized",...}` for a wrong token;
//! - unknown app: 404 `{"resource":"app","id":"not_found","message":"Couldn't
//!   find that app."}` (the message as in salesforcecli/plugin-functions
//!   test/commands/env/logdrain/add.test.ts, the `resource` key as in other
//!   clients' recorded Heroku answers); unknown drain of a known app: 404
//!   `not_found` with `"resource":"log_drain"` and "Couldn't find that log
//!   drain." (Heroku's error format; this exact body is not published, so
//!   the client tells the two apart by the app's markers only, and takes
//!   any other 404 on a drain as "no such drain");
//! - duplicate drain URL: 422 `invalid_params` "Url has already been taken"
//!   (the message Heroku sends, as in the same plugin-functions test);
//! - App Info, `GET /apps/{app_id_or_name}` (heroku/heroku-go schema.json,
//!   `definitions.app.links` "Info"): the app with its `id` and `name`;
//! - renames (`rename_app`): the app keeps its id and its drains, the old name
//!   answers 404 like any unknown app, as on Heroku (`heroku apps:rename`);
//! - the first create for a new app: 422 "App hasn't yet been assigned a log
//!   channel. Please try again momentarily." (once per app);
//! - a request budget with `RateLimit-Remaining` on every response and 429
//!   when spent, refilled continuously (4,500/hour by default) or by hand;
//! - `Range: id ..; max=N` pagination: 206 with `Next-Range` while more remain;
//!   200 per page without `max`, 1000 at most (Dev Center, Platform API
//!   Reference, "Ranges": "The default page size is 200 and maximum page
//!   size is 1000");
//! - no `Retry-After` on 429 unless a test sets one (Heroku documents only
//!   `RateLimit-Remaining`, Dev Center "Rate Limits");
//! - injected failures (`fail_next`, `fail_app`), a create that loses a race
//!   (`race_next_create`) and latency for backoff tests.
//!
//! Apps are addressed by name or id, drains by id, URL or token, as in the
//! schema's `identity` and `query_identity`.
//!
//! Fir apps (heroku-go `v6/schema.json`, `definitions.app.generation` and
//! `definitions.telemetry-drain`):
//!
//! - App Info names the generation only when asked with `version=3.sdk`,
//!   as the bare name (`"cedar"`, or `"fir"` for an app added with
//!   [`FakeHeroku::add_fir_app`]), the form the Heroku CLI's types give it
//!   (`src/lib/types/fir.d.ts`); a plain `version=3` answer leaves it out,
//!   as a Heroku SDK documents ("issues `app.info` with the `version=3.sdk`
//!   Accept variant so the response includes the `generation` field");
//! - `POST /telemetry-drains` (201), `GET /apps/{app}/telemetry-drains`
//!   (paged like log drains), `GET|PATCH|DELETE /telemetry-drains/{id}`;
//!   drains are owned by app id, so they follow renames;
//! - the schema's limits answered 422 `invalid_params`: unknown properties,
//!   `signals` empty, repeated or not traces/metrics/logs, `exporter.type`
//!   not `otlphttp`/`otlp`, `exporter.endpoint` missing or over 1,000
//!   characters, over 20 headers, a header name not
//!   `^[A-Za-z0-9\-_]{1,100}$`, a value over 1,000 characters, an update
//!   whose exporter lacks `type` or `endpoint`;
//! - headers are returned as set (the schema's `exporter_headers` is a
//!   plain object, and `heroku telemetry:info` prints it);
//! - a telemetry drain for a Cedar app, or a log drain for a Fir app, is
//!   refused with 422 (Heroku documents both as unsupported: Dev Center "Log
//!   Drains": HTTPS and syslog drains "only on Cedar", telemetry drains
//!   "only on Fir"; the exact message is not published);
//! - an unknown telemetry drain id: 404 `not_found` with
//!   `"resource":"telemetry_drain"` (Heroku's error format; this exact body
//!   is not published, the client relies on the status only).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

/// The 422 message Heroku sends while a new app has no log channel yet.
pub const LOG_CHANNEL_MESSAGE: &str =
    "App hasn't yet been assigned a log channel. Please try again momentarily.";

/// How the fake behaves. `Default` is Heroku-like; tests shrink it.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The bearer token accepted (replaceable with `set_token`).
    pub token: String,
    /// Largest page served, whatever `max` the client asks for.
    pub page_size: usize,
    /// Request budget: tokens in a full bucket (and at start).
    pub budget: u32,
    /// Tokens added back per hour (Heroku: 4,500). 0 = only by hand.
    pub refill_per_hour: u32,
    /// Answer the first create of each app with the "log channel" 422.
    pub log_channel_pending: bool,
    /// `Retry-After` seconds sent with a 429 (Heroku sends none).
    pub retry_after: Option<u64>,
    /// Delay before every answer.
    pub latency: Duration,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            token: "fake-heroku-api-token".into(),
            page_size: 1000,
            budget: 4500,
            refill_per_hour: 4500,
            log_channel_pending: true,
            retry_after: None,
            latency: Duration::ZERO,
        }
    }
}

/// A drain as the fake stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDrain {
    pub id: String,
    pub token: String,
    pub url: String,
    /// Name of the add-on that made it, if one did.
    pub addon: Option<String>,
    /// Id of that add-on.
    pub addon_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A telemetry drain as the fake stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeTelemetryDrain {
    pub id: String,
    /// The owning app's id.
    pub owner_id: String,
    pub signals: Vec<String>,
    /// `otlphttp` or `otlp`.
    pub exporter_type: String,
    pub endpoint: String,
    pub headers: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

/// The generations App Info names.
const CEDAR: &str = "cedar";
const FIR: &str = "fir";

/// Version 3 of the Platform API, and its `sdk` variant.
pub const V3_ACCEPT: &str = "application/vnd.heroku+json; version=3";
pub const SDK_ACCEPT: &str = "application/vnd.heroku+json; version=3.sdk";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub user_agent: Option<String>,
    pub range: Option<String>,
    /// The `Accept` header as sent.
    pub accept: Option<String>,
    /// When the fake answered.
    pub at: Instant,
}

impl RecordedRequest {
    /// Whether the request addressed app `ident` (its name or id), e.g.
    /// `/apps/{ident}/log-drains`.
    pub fn for_app(&self, ident: &str) -> bool {
        let mut segs = self.path.trim_matches('/').split('/');
        segs.next() == Some("apps") && segs.next().map(percent_decode).as_deref() == Some(ident)
    }
}

/// The `Accept` Heroku's own clients send for the call `method path`, or
/// `None` for a call the operator has no business making. From their
/// sources (docs/architecture.md, "Heroku Platform API calls"): the CLI's
/// `telemetry:*` commands and App Info lookups send `version=3.sdk`; its
/// `drains:*` commands, heroku-go and the Terraform provider's
/// `heroku_drain` send `version=3`.
pub fn herokus_clients_accept(method: &Method, path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["apps", _]) => Some(SDK_ACCEPT),
        ("GET", ["apps", _, "log-drains"])
        | ("POST", ["apps", _, "log-drains"])
        | ("GET" | "DELETE", ["apps", _, "log-drains", _]) => Some(V3_ACCEPT),
        ("GET", ["apps", _, "telemetry-drains"])
        | ("POST", ["telemetry-drains"])
        | ("GET" | "PATCH" | "DELETE", ["telemetry-drains", _]) => Some(SDK_ACCEPT),
        _ => None,
    }
}

impl RecordedRequest {
    /// Whether this request's `Accept` is the one Heroku's own clients send
    /// for the same call.
    pub fn as_herokus_clients_send(&self) -> bool {
        herokus_clients_accept(&self.method, &self.path).is_some()
            && self.accept.as_deref() == herokus_clients_accept(&self.method, &self.path)
    }
}

/// Requests by kind, for "how many calls did that cost" assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub list: u64,
    pub info: u64,
    pub create: u64,
    pub delete: u64,
    /// App Info (`GET /apps/{app}`).
    pub app_info: u64,
    /// `GET /apps/{app}/telemetry-drains`.
    pub telemetry_list: u64,
    /// `GET /telemetry-drains/{id}`.
    pub telemetry_info: u64,
    /// `POST /telemetry-drains`.
    pub telemetry_create: u64,
    /// `PATCH /telemetry-drains/{id}`.
    pub telemetry_update: u64,
    /// `DELETE /telemetry-drains/{id}`.
    pub telemetry_delete: u64,
    /// Answered 429 because the budget was spent (injected ones excluded).
    pub throttled: u64,
    /// Answered with a `fail_next` status.
    pub injected: u64,
    /// Every request, whatever the answer.
    pub total: u64,
}

impl RequestCounts {
    /// Requests that change something on "Heroku", of either drain kind.
    pub fn writes(&self) -> u64 {
        self.create
            + self.delete
            + self.telemetry_create
            + self.telemetry_update
            + self.telemetry_delete
    }
}

#[derive(Debug)]
struct FakeApp {
    id: String,
    /// `cedar` or `fir`.
    generation: &'static str,
    created_at: String,
    log_channel_ready: bool,
    drains: Vec<FakeDrain>,
}

#[derive(Debug)]
struct State {
    opts: FakeOptions,
    apps: BTreeMap<String, FakeApp>,
    telemetry: Vec<FakeTelemetryDrain>,
    tokens: f64,
    last_refill: Instant,
    fail_next: VecDeque<u16>,
    /// App id → the status every request for that app is answered with.
    failing_apps: BTreeMap<String, u16>,
    /// App ids whose next create finds its URL taken by a concurrent one.
    racing_creates: BTreeSet<String>,
    /// App ids whose App Info leaves `generation` out whatever the variant
    /// (a Heroku that stops naming it): what the operator must not read as
    /// Cedar.
    hidden_generations: BTreeSet<String>,
    counts: RequestCounts,
    requests: Vec<RecordedRequest>,
}

impl State {
    fn refill(&mut self) {
        let now = Instant::now();
        let secs = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.last_refill = now;
        self.tokens = (self.tokens + secs * f64::from(self.opts.refill_per_hour) / 3600.0)
            .min(f64::from(self.opts.budget));
    }

    fn remaining(&self) -> u32 {
        self.tokens.max(0.0).floor() as u32
    }

    fn app_key(&self, ident: &str) -> Option<String> {
        if self.apps.contains_key(ident) {
            return Some(ident.to_owned());
        }
        self.apps
            .iter()
            .find(|(_, a)| a.id == ident)
            .map(|(name, _)| name.clone())
    }
}

/// A running fake. Stops when dropped.
pub struct FakeHeroku {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeHeroku {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeHeroku {
    /// Binds a loopback port and serves until dropped.
    pub async fn start(opts: FakeOptions) -> FakeHeroku {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), opts).await
    }

    /// As [`FakeHeroku::start`], on a port of `ip`: the test node's address, for an operator
    /// running in a pod.
    pub async fn start_on(ip: std::net::IpAddr, opts: FakeOptions) -> FakeHeroku {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("bind a port on {ip} for the fake Heroku API: {e}"));
        let addr = listener
            .local_addr()
            .expect("local address of the fake Heroku API");
        let state = Arc::new(Mutex::new(State {
            tokens: f64::from(opts.budget),
            opts,
            apps: BTreeMap::new(),
            telemetry: Vec::new(),
            last_refill: Instant::now(),
            fail_next: VecDeque::new(),
            failing_apps: BTreeMap::new(),
            racing_creates: BTreeSet::new(),
            hidden_generations: BTreeSet::new(),
            counts: RequestCounts::default(),
            requests: Vec::new(),
        }));
        let shared = state.clone();
        let app = Router::new().fallback(move |req: Request<Body>| {
            let state = shared.clone();
            async move { handle(state, req).await }
        });
        let task = tokio::spawn(async move {
            // Serving ends only when the task is aborted on drop.
            let _ = axum::serve(listener, app).await;
        });
        FakeHeroku { addr, state, task }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `http://127.0.0.1:PORT` (no trailing slash), the client's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token currently accepted.
    pub fn token(&self) -> String {
        self.lock().opts.token.clone()
    }

    /// Creates an app (no drains, log channel not yet assigned when the
    /// options say so). Returns its id. Adding an existing app is a no-op.
    pub fn add_app(&self, name: &str) -> String {
        self.add_app_on(name, CEDAR)
    }

    /// Creates a Fir app (telemetry drains only). Returns its id.
    pub fn add_fir_app(&self, name: &str) -> String {
        self.add_app_on(name, FIR)
    }

    fn add_app_on(&self, name: &str, generation: &'static str) -> String {
        let mut s = self.lock();
        let ready = !s.opts.log_channel_pending;
        s.apps
            .entry(name.to_owned())
            .or_insert_with(|| FakeApp {
                id: uuid::Uuid::new_v4().to_string(),
                generation,
                created_at: now_rfc3339(),
                log_channel_ready: ready,
                drains: Vec::new(),
            })
            .id
            .clone()
    }

    /// Deletes an app and its drains (telemetry drains included).
    pub fn remove_app(&self, name: &str) {
        let mut s = self.lock();
        if let Some(a) = s.apps.remove(name) {
            s.telemetry.retain(|d| d.owner_id != a.id);
        }
    }

    /// Telemetry drains of app `name` in id order (empty for an unknown app).
    pub fn telemetry_drains(&self, name: &str) -> Vec<FakeTelemetryDrain> {
        let s = self.lock();
        let Some(id) = s.apps.get(name).map(|a| a.id.clone()) else {
            return Vec::new();
        };
        let mut d: Vec<FakeTelemetryDrain> = s
            .telemetry
            .iter()
            .filter(|d| d.owner_id == id)
            .cloned()
            .collect();
        d.sort_by(|a, b| a.id.cmp(&b.id));
        d
    }

    /// Every telemetry drain, for "nothing left behind" assertions.
    pub fn all_telemetry_drains(&self) -> Vec<FakeTelemetryDrain> {
        self.lock().telemetry.clone()
    }

    /// Adds a logs telemetry drain directly (not a request), e.g. one a
    /// person made with `heroku telemetry:add`.
    pub fn insert_telemetry_drain(
        &self,
        app: &str,
        exporter_type: &str,
        endpoint: &str,
        headers: &[(&str, &str)],
    ) -> FakeTelemetryDrain {
        let mut s = self.lock();
        let owner_id = s
            .apps
            .get(app)
            .expect("insert_telemetry_drain: add_fir_app first")
            .id
            .clone();
        let now = now_rfc3339();
        let d = FakeTelemetryDrain {
            id: uuid::Uuid::new_v4().to_string(),
            owner_id,
            signals: vec!["logs".into()],
            exporter_type: exporter_type.into(),
            endpoint: endpoint.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_at: now.clone(),
            updated_at: now,
        };
        s.telemetry.push(d.clone());
        d
    }

    /// Replaces a telemetry drain's headers directly (someone's
    /// `heroku telemetry:update --headers`).
    pub fn set_telemetry_headers(&self, id: &str, headers: &[(&str, &str)]) {
        let mut s = self.lock();
        let d = s
            .telemetry
            .iter_mut()
            .find(|d| d.id == id)
            .expect("set_telemetry_headers: no such drain");
        d.headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.updated_at = now_rfc3339();
    }

    /// `heroku apps:rename`: the app keeps its id and drains (drain URLs
    /// included); `old` becomes an unknown name.
    pub fn rename_app(&self, old: &str, new: &str) {
        let mut s = self.lock();
        let app = s.apps.remove(old).expect("rename_app: add_app first");
        assert!(!s.apps.contains_key(new), "rename_app: {new} is taken");
        s.apps.insert(new.to_owned(), app);
    }

    /// The id of app `name`.
    pub fn app_id(&self, name: &str) -> Option<String> {
        self.lock().apps.get(name).map(|a| a.id.clone())
    }

    /// Every request for app `name` (by name or id, whatever its name
    /// later becomes) is answered `status` until `None` is set.
    pub fn fail_app(&self, name: &str, status: Option<u16>) {
        let id = self.app_id(name).expect("fail_app: add_app first");
        let mut s = self.lock();
        match status {
            Some(code) => s.failing_apps.insert(id, code),
            None => s.failing_apps.remove(&id),
        };
    }

    /// The next create for app `name` loses a race: a drain to the same URL
    /// appears just before it (another writer's create landing first, or an
    /// earlier attempt whose answer was lost), so Heroku answers it 422
    /// "Url has already been taken".
    pub fn race_next_create(&self, name: &str) {
        let id = self.app_id(name).expect("race_next_create: add_app first");
        self.lock().racing_creates.insert(id);
    }

    /// Every drain of every app, for "nothing left behind" assertions.
    pub fn all_drains(&self) -> Vec<(String, FakeDrain)> {
        let s = self.lock();
        s.apps
            .iter()
            .flat_map(|(name, a)| a.drains.iter().map(move |d| (name.clone(), d.clone())))
            .collect()
    }

    /// Replaces the accepted token (a rotation: the old one now gets 401).
    pub fn set_token(&self, token: &str) {
        self.lock().opts.token = token.to_owned();
    }

    /// Drains of `app` in id order (empty for an unknown app).
    pub fn drains(&self, app: &str) -> Vec<FakeDrain> {
        let s = self.lock();
        let mut d = s
            .apps
            .get(app)
            .map(|a| a.drains.clone())
            .unwrap_or_default();
        d.sort_by(|a, b| a.id.cmp(&b.id));
        d
    }

    /// Adds a drain directly (not a request: no budget spent, no counts),
    /// e.g. one a person made with the CLI, or an add-on's drain.
    pub fn insert_drain(&self, app: &str, url: &str, addon: Option<&str>) -> FakeDrain {
        let mut s = self.lock();
        let app = s.apps.get_mut(app).expect("insert_drain: add_app first");
        let d = new_drain(url, addon);
        app.drains.push(d.clone());
        d
    }

    /// Changes drain `id` of `app` to send to `url`, as something outside
    /// drainpipe would leave it (the Platform API has no update for app
    /// drains; this stands for drift however it came about). False when
    /// there is no such drain.
    /// Removes log drain `id` of app `app` by hand (`heroku drains:remove`);
    /// false when there is no such drain.
    pub fn remove_drain(&self, app: &str, id: &str) -> bool {
        let mut s = self.lock();
        let Some(a) = s.apps.get_mut(app) else {
            return false;
        };
        let before = a.drains.len();
        a.drains.retain(|d| d.id != id);
        a.drains.len() < before
    }

    /// Whether App Info of app `name` names no generation even for
    /// `version=3.sdk`.
    pub fn hide_generation(&self, name: &str, hide: bool) {
        let id = self
            .app_id(name)
            .expect("hide_generation: add the app first");
        let mut s = self.lock();
        if hide {
            s.hidden_generations.insert(id);
        } else {
            s.hidden_generations.remove(&id);
        }
    }

    pub fn set_drain_url(&self, app: &str, id: &str, url: &str) -> bool {
        let mut s = self.lock();
        let Some(d) = s
            .apps
            .get_mut(app)
            .and_then(|a| a.drains.iter_mut().find(|d| d.id == id))
        else {
            return false;
        };
        d.url = url.to_owned();
        d.updated_at = now_rfc3339();
        true
    }

    /// Counters by request kind.
    pub fn counts(&self) -> RequestCounts {
        self.lock().counts
    }

    /// Every request served so far.
    pub fn request_count(&self) -> u64 {
        self.lock().counts.total
    }

    /// The request log.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Clears counters and the request log (e.g. between the first apply and
    /// a resync in a benchmark).
    pub fn reset_counts(&self) {
        let mut s = self.lock();
        s.counts = RequestCounts::default();
        s.requests.clear();
    }

    /// The next `n` requests are answered with `status` (429 or 5xx are the
    /// useful ones) before anything else is looked at.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut s = self.lock();
        s.fail_next.extend(std::iter::repeat_n(status, n));
    }

    /// Sets what is left of the budget now.
    pub fn set_budget(&self, remaining: u32) {
        let mut s = self.lock();
        s.refill();
        s.tokens = f64::from(remaining);
        if remaining > s.opts.budget {
            s.opts.budget = remaining;
        }
    }

    /// What is left of the budget now.
    pub fn remaining(&self) -> u32 {
        let mut s = self.lock();
        s.refill();
        s.remaining()
    }

    /// Changes the refill rate (0 stops refilling).
    pub fn set_refill_per_hour(&self, per_hour: u32) {
        let mut s = self.lock();
        s.refill();
        s.opts.refill_per_hour = per_hour;
    }

    pub fn set_latency(&self, latency: Duration) {
        self.lock().opts.latency = latency;
    }

    pub fn set_retry_after(&self, secs: Option<u64>) {
        self.lock().opts.retry_after = secs;
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

fn new_drain(url: &str, addon: Option<&str>) -> FakeDrain {
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_rfc3339();
    FakeDrain {
        token: format!("d.{}", uuid::Uuid::new_v4()),
        id,
        url: url.to_owned(),
        addon: addon.map(str::to_owned),
        addon_id: addon.map(|_| uuid::Uuid::new_v4().to_string()),
        created_at: now.clone(),
        updated_at: now,
    }
}

fn drain_json(d: &FakeDrain, app_name: &str, app_id: &str) -> Value {
    json!({
        "addon": d.addon.as_ref().map(|name| json!({
            "id": d.addon_id,
            "name": name,
            "app": {"id": app_id, "name": app_name},
        })),
        "app": {"id": app_id, "name": app_name},
        "created_at": d.created_at,
        "id": d.id,
        "token": d.token,
        "updated_at": d.updated_at,
        "url": d.url,
    })
}

fn error_body(id: &str, message: &str) -> Value {
    json!({ "id": id, "message": message })
}

/// Heroku's 404 for an app name or id it does not know.
fn app_not_found() -> Answer {
    Answer::json(
        StatusCode::NOT_FOUND,
        json!({"resource": "app", "id": "not_found", "message": "Couldn't find that app."}),
    )
}

/// Heroku's 404 for a drain a known app does not have.
fn drain_not_found() -> Answer {
    Answer::json(
        StatusCode::NOT_FOUND,
        json!({"resource": "log_drain", "id": "not_found", "message": "Couldn't find that log drain."}),
    )
}

/// App Info's answer: the schema's app properties the fake knows, with the
/// generation only for the `sdk` variant.
fn app_json(name: &str, a: &FakeApp, sdk: bool) -> Value {
    let mut app = json!({
        "id": a.id,
        "name": name,
        "created_at": a.created_at,
        "updated_at": a.created_at,
    });
    if sdk {
        app["generation"] = json!(a.generation);
    }
    app
}

fn telemetry_json(d: &FakeTelemetryDrain) -> Value {
    json!({
        "created_at": d.created_at,
        "id": d.id,
        "owner": {"id": d.owner_id, "type": "app"},
        "signals": d.signals,
        "exporter": {"type": d.exporter_type, "endpoint": d.endpoint, "headers": d.headers},
        "updated_at": d.updated_at,
    })
}

fn telemetry_not_found() -> Answer {
    Answer::json(
        StatusCode::NOT_FOUND,
        json!({"resource": "telemetry_drain", "id": "not_found", "message": "Couldn't find that telemetry drain."}),
    )
}

/// An answer before the common headers are added.
struct Answer {
    status: StatusCode,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Answer {
        Answer {
            status,
            body,
            headers: Vec::new(),
        }
    }

    fn error(status: StatusCode, id: &str, message: &str) -> Answer {
        Answer::json(status, error_body(id, message))
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let latency = lock(&state).opts.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let path = parts.uri.path().to_owned();
    let mut s = lock(&state);
    let answer = answer(&mut s, &parts.method, &path, &parts.headers, &body);
    s.refill();
    let remaining = s.remaining();
    s.counts.total += 1;
    s.requests.push(RecordedRequest {
        method: parts.method.clone(),
        path,
        status: answer.status.as_u16(),
        user_agent: header_str(&parts.headers, header::USER_AGENT.as_str()),
        range: header_str(&parts.headers, "range"),
        accept: header_str(&parts.headers, header::ACCEPT.as_str()),
        at: Instant::now(),
    });
    drop(s);

    let mut resp = Response::new(Body::from(answer.body.to_string()));
    *resp.status_mut() = answer.status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("ratelimit-remaining", HeaderValue::from(remaining));
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("request-id", v);
    }
    for (name, value) in answer.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn answer(s: &mut State, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
    // Injected failures come first, like an outage in front of the API.
    if let Some(status) = s.fail_next.pop_front() {
        s.counts.injected += 1;
        return injected(status, s.opts.retry_after);
    }

    // The account-rate-limit endpoint is free, as on Heroku.
    if method == Method::GET && path == "/account/rate-limits" {
        s.refill();
        return Answer::json(StatusCode::OK, json!({ "remaining": s.remaining() }));
    }

    s.refill();
    if s.tokens < 1.0 {
        s.counts.throttled += 1;
        let mut a = Answer::error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit",
            "Your account reached the API rate limit\nPlease wait a few minutes before making new requests",
        );
        if let Some(secs) = s.opts.retry_after {
            a.headers.push(("retry-after", secs.to_string()));
        }
        return a;
    }
    s.tokens -= 1.0;

    let accept = header_str(headers, "accept").unwrap_or_default();
    let sdk = accept.trim() == SDK_ACCEPT;
    if !(sdk || accept.trim() == V3_ACCEPT) {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Please specify a version along with Heroku's API MIME type. For example, `Accept: application/vnd.heroku+json; version=3`.",
        );
    }
    let authorized = header_str(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
        .is_some_and(|t| !t.is_empty() && t == s.opts.token);
    if !authorized {
        return Answer::error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid credentials provided.",
        );
    }

    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if let ["apps", app, ..] = segs.as_slice()
        && let Some(code) = s
            .app_key(app)
            .and_then(|name| s.failing_apps.get(&s.apps[&name].id).copied())
    {
        s.counts.injected += 1;
        return injected(code, s.opts.retry_after);
    }
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["apps", app]) => {
            s.counts.app_info += 1;
            match s.app_key(app) {
                Some(name) => {
                    let a = &s.apps[&name];
                    let named = sdk && !s.hidden_generations.contains(&a.id);
                    Answer::json(StatusCode::OK, app_json(&name, a, named))
                }
                None => app_not_found(),
            }
        }
        (Method::GET, ["apps", app, "log-drains"]) => {
            s.counts.list += 1;
            list(s, app, headers)
        }
        (Method::GET, ["apps", app, "telemetry-drains"]) => {
            s.counts.telemetry_list += 1;
            let Some(name) = s.app_key(app) else {
                return app_not_found();
            };
            let id = s.apps[&name].id.clone();
            let items = s
                .telemetry
                .iter()
                .filter(|d| d.owner_id == id)
                .map(|d| (d.id.clone(), telemetry_json(d)))
                .collect();
            page(s, items, headers)
        }
        (Method::POST, ["telemetry-drains"]) => {
            s.counts.telemetry_create += 1;
            telemetry_create(s, body)
        }
        (Method::GET, ["telemetry-drains", id]) => {
            s.counts.telemetry_info += 1;
            match s.telemetry.iter().find(|d| d.id == *id) {
                Some(d) => Answer::json(StatusCode::OK, telemetry_json(d)),
                None => telemetry_not_found(),
            }
        }
        (Method::PATCH, ["telemetry-drains", id]) => {
            s.counts.telemetry_update += 1;
            telemetry_update(s, id, body)
        }
        (Method::DELETE, ["telemetry-drains", id]) => {
            s.counts.telemetry_delete += 1;
            match s.telemetry.iter().position(|d| d.id == *id) {
                Some(i) => Answer::json(StatusCode::OK, telemetry_json(&s.telemetry.remove(i))),
                None => telemetry_not_found(),
            }
        }
        (Method::POST, ["apps", app, "log-drains"]) => {
            s.counts.create += 1;
            create(s, app, body)
        }
        (Method::GET, ["apps", app, "log-drains", drain]) => {
            s.counts.info += 1;
            with_drain(s, app, drain, |s, app_name, idx| {
                let a = &s.apps[app_name];
                Answer::json(StatusCode::OK, drain_json(&a.drains[idx], app_name, &a.id))
            })
        }
        (Method::DELETE, ["apps", app, "log-drains", drain]) => {
            s.counts.delete += 1;
            with_drain(s, app, drain, |s, app_name, idx| {
                let Some(a) = s.apps.get_mut(app_name) else {
                    return app_not_found();
                };
                if a.drains[idx].addon.is_some() {
                    return Answer::error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_params",
                        "Log drains added by add-ons can only be removed by removing the add-on.",
                    );
                }
                let d = a.drains.remove(idx);
                let id = a.id.clone();
                Answer::json(StatusCode::OK, drain_json(&d, app_name, &id))
            })
        }
        _ => Answer::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The requested API endpoint was not found. Are you using the right HTTP verb (i.e. `GET` vs. `POST`), and did you specify your intended version with the `Accept` header?",
        ),
    }
}

/// An injected failure as Heroku words it.
fn injected(status: u16, retry_after: Option<u64>) -> Answer {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut a = match status {
        429 => Answer::error(
            code,
            "rate_limit",
            "Your account reached the API rate limit\nPlease wait a few minutes before making new requests",
        ),
        503 => Answer::error(
            code,
            "unavailable",
            "The service is temporarily unavailable.",
        ),
        403 => Answer::error(code, "forbidden", "You do not have access to the app."),
        _ => Answer::error(code, "internal_server_error", "Internal server error."),
    };
    if let (429, Some(secs)) = (status, retry_after) {
        a.headers.push(("retry-after", secs.to_string()));
    }
    a
}

fn with_drain(
    s: &mut State,
    app: &str,
    drain: &str,
    f: impl FnOnce(&mut State, &str, usize) -> Answer,
) -> Answer {
    let Some(name) = s.app_key(app) else {
        return app_not_found();
    };
    let idx = s.apps[&name]
        .drains
        .iter()
        .position(|d| d.id == drain || d.token == drain || d.url == drain);
    match idx {
        Some(i) => f(s, &name, i),
        None => drain_not_found(),
    }
}

/// `id ..; max=N`, `id ]ID..; max=N` (after ID) or `id ID..; max=N` (from ID).
struct Range {
    start: Option<(String, bool)>,
    max: Option<usize>,
}

fn parse_range(text: &str) -> Option<Range> {
    let mut parts = text.split(';').map(str::trim);
    let head = parts.next()?;
    let spec = head.strip_prefix("id")?.trim();
    let spec = spec.strip_suffix("..")?.trim();
    let start = if spec.is_empty() {
        None
    } else if let Some(after) = spec.strip_prefix(']') {
        Some((after.to_owned(), true))
    } else {
        Some((spec.to_owned(), false))
    };
    let mut max = None;
    for p in parts {
        if let Some(v) = p.strip_prefix("max=") {
            max = Some(v.trim().parse().ok()?);
        } else if !p.starts_with("order=") && !p.is_empty() {
            return None;
        }
    }
    Some(Range { start, max })
}

fn list(s: &mut State, app: &str, headers: &HeaderMap) -> Answer {
    let Some(name) = s.app_key(app) else {
        return app_not_found();
    };
    let a = &s.apps[&name];
    let items = a
        .drains
        .iter()
        .map(|d| (d.id.clone(), drain_json(d, &name, &a.id)))
        .collect();
    page(s, items, headers)
}

/// One page of `items` (id, JSON) in id order, as `Range` asks.
fn page(s: &State, mut items: Vec<(String, Value)>, headers: &HeaderMap) -> Answer {
    let range = match header_str(headers, "range") {
        Some(text) => match parse_range(&text) {
            Some(r) => r,
            None => {
                return Answer::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Invalid Range header. Use `Range: id ..; max=N`.",
                );
            }
        },
        None => Range {
            start: None,
            max: None,
        },
    };
    // Heroku serves 200 per page unless asked, 1000 at most.
    let max = range
        .max
        .unwrap_or(200)
        .clamp(1, 1000)
        .min(s.opts.page_size.max(1));
    items.sort_by(|x, y| x.0.cmp(&y.0));
    let from: Vec<(String, Value)> = items
        .into_iter()
        .filter(|(id, _)| match &range.start {
            None => true,
            Some((start, true)) => id.as_str() > start.as_str(),
            Some((start, false)) => id.as_str() >= start.as_str(),
        })
        .collect();
    let page: Vec<Value> = from.iter().take(max).map(|(_, v)| v.clone()).collect();
    let mut ans = Answer::json(StatusCode::OK, Value::Array(page));
    if let (Some(first), Some(last)) = (
        from.first(),
        from.get(from.len().min(max).saturating_sub(1)),
    ) {
        ans.headers
            .push(("content-range", format!("id {}..{}", first.0, last.0)));
    }
    if from.len() > max {
        ans.status = StatusCode::PARTIAL_CONTENT;
        if let Some(last) = from.get(max - 1) {
            ans.headers
                .push(("next-range", format!("id ]{}..; max={max}", last.0)));
        }
    }
    ans
}

fn invalid(message: &str) -> Answer {
    Answer::error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_params", message)
}

/// Checks `signals` and `exporter` against the schema; `Ok` with the
/// parsed values (`None` when absent).
#[allow(clippy::type_complexity)]
fn telemetry_fields(
    body: &serde_json::Map<String, Value>,
) -> Result<
    (
        Option<Vec<String>>,
        Option<(String, String, BTreeMap<String, String>)>,
    ),
    Answer,
> {
    let signals = match body.get("signals") {
        None => None,
        Some(v) => {
            let list: Vec<String> = v
                .as_array()
                .ok_or_else(|| invalid("Signals must be an array"))?
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| invalid("Signals must be strings"))?;
            let unique: BTreeSet<&String> = list.iter().collect();
            if list.is_empty() || unique.len() != list.len() {
                return Err(invalid("Signals must list at least one signal, each once"));
            }
            if list
                .iter()
                .any(|s| !matches!(s.as_str(), "traces" | "metrics" | "logs"))
            {
                return Err(invalid("Signals must be traces, metrics or logs"));
            }
            Some(list)
        }
    };
    let exporter = match body.get("exporter") {
        None => None,
        Some(v) => {
            let e = v
                .as_object()
                .ok_or_else(|| invalid("Exporter must be an object"))?;
            if e.keys()
                .any(|k| !matches!(k.as_str(), "type" | "endpoint" | "headers"))
            {
                return Err(invalid("Exporter has an unknown property"));
            }
            let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
            if !matches!(kind, "otlphttp" | "otlp") {
                return Err(invalid("Exporter type must be otlphttp or otlp"));
            }
            let endpoint = e
                .get("endpoint")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if endpoint.is_empty() || endpoint.chars().count() > 1000 {
                return Err(invalid(
                    "Exporter endpoint must be present and at most 1000 characters",
                ));
            }
            let mut headers = BTreeMap::new();
            if let Some(h) = e.get("headers").filter(|h| !h.is_null()) {
                let h = h
                    .as_object()
                    .ok_or_else(|| invalid("Exporter headers must be an object"))?;
                if h.len() > 20 {
                    return Err(invalid("Exporter headers can have at most 20 entries"));
                }
                for (name, value) in h {
                    let name_ok = (1..=100).contains(&name.len())
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !name_ok {
                        return Err(invalid(&format!(
                            "Exporter header name {name:?} is invalid"
                        )));
                    }
                    let value = value
                        .as_str()
                        .filter(|v| v.chars().count() <= 1000)
                        .ok_or_else(|| {
                            invalid(
                                "Exporter header values must be strings of at most 1000 characters",
                            )
                        })?;
                    headers.insert(name.clone(), value.to_owned());
                }
            }
            Some((kind.to_owned(), endpoint.to_owned(), headers))
        }
    };
    Ok((signals, exporter))
}

/// A request body that is a JSON object with no property outside `allowed`
/// (the schema's `additionalProperties: false`).
fn json_object(body: &[u8], allowed: &[&str]) -> Result<serde_json::Map<String, Value>, Answer> {
    let Some(body) = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
    else {
        return Err(invalid("Request body must be a JSON object"));
    };
    if body.keys().any(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid("Request has an unknown property"));
    }
    Ok(body)
}

fn telemetry_create(s: &mut State, body: &[u8]) -> Answer {
    let body = match json_object(body, &["owner", "signals", "exporter"]) {
        Ok(b) => b,
        Err(a) => return a,
    };
    let (signals, exporter) = match telemetry_fields(&body) {
        Ok(f) => f,
        Err(a) => return a,
    };
    let (Some(signals), Some((exporter_type, endpoint, headers))) = (signals, exporter) else {
        return invalid("Owner, signals and exporter are required");
    };
    let owner = body.get("owner").and_then(Value::as_object);
    let owner_type = owner.and_then(|o| o.get("type")).and_then(Value::as_str);
    let owner_id = owner.and_then(|o| o.get("id")).and_then(Value::as_str);
    let (Some(owner_type), Some(owner_id)) = (owner_type, owner_id) else {
        return invalid("Owner needs an id and a type");
    };
    if owner_type != "app" {
        return invalid("The fake has no spaces: owner type must be app");
    }
    let Some(app) = s.apps.values().find(|a| a.id == owner_id) else {
        return app_not_found();
    };
    if app.generation != FIR {
        return invalid("Telemetry drains are only supported for Fir generation apps.");
    }
    let now = now_rfc3339();
    let d = FakeTelemetryDrain {
        id: uuid::Uuid::new_v4().to_string(),
        owner_id: owner_id.to_owned(),
        signals,
        exporter_type,
        endpoint,
        headers,
        created_at: now.clone(),
        updated_at: now,
    };
    s.telemetry.push(d.clone());
    Answer::json(StatusCode::CREATED, telemetry_json(&d))
}

fn telemetry_update(s: &mut State, id: &str, body: &[u8]) -> Answer {
    let Some(i) = s.telemetry.iter().position(|d| d.id == id) else {
        return telemetry_not_found();
    };
    let body = match json_object(body, &["signals", "exporter"]) {
        Ok(b) => b,
        Err(a) => return a,
    };
    let (signals, exporter) = match telemetry_fields(&body) {
        Ok(f) => f,
        Err(a) => return a,
    };
    let d = &mut s.telemetry[i];
    if let Some(signals) = signals {
        d.signals = signals;
    }
    if let Some((exporter_type, endpoint, headers)) = exporter {
        d.exporter_type = exporter_type;
        d.endpoint = endpoint;
        d.headers = headers;
    }
    d.updated_at = now_rfc3339();
    Answer::json(StatusCode::OK, telemetry_json(d))
}

fn create(s: &mut State, app: &str, body: &[u8]) -> Answer {
    let Some(name) = s.app_key(app) else {
        return app_not_found();
    };
    let url = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("url").and_then(Value::as_str).map(str::to_owned));
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return Answer::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_params",
            "Url can't be blank",
        );
    };
    let scheme_ok = ["https://", "http://", "syslog://", "syslog+tls://"]
        .iter()
        .any(|p| url.starts_with(p) && url.len() > p.len());
    if !scheme_ok {
        return Answer::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_params",
            "Url is invalid",
        );
    }
    if s.apps[&name].generation == FIR {
        return invalid(
            "Log drains are not supported for Fir generation apps: use telemetry drains.",
        );
    }
    let id = s.apps[&name].id.clone();
    let races = s.apps[&name].log_channel_ready && s.racing_creates.remove(&id);
    let a = s
        .apps
        .get_mut(&name)
        .expect("app_key returned an existing app");
    if races {
        a.drains.push(new_drain(&url, None));
    }
    if !a.log_channel_ready {
        a.log_channel_ready = true;
        return Answer::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_params",
            LOG_CHANNEL_MESSAGE,
        );
    }
    if a.drains.iter().any(|d| d.url == url) {
        return Answer::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_params",
            "Url has already been taken",
        );
    }
    let d = new_drain(&url, None);
    a.drains.push(d.clone());
    let id = a.id.clone();
    Answer::json(StatusCode::CREATED, drain_json(&d, &name, &id))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_herokus() {
        let r = parse_range("id ..; max=2").unwrap();
        assert!(r.start.is_none());
        assert_eq!(r.max, Some(2));
        let r = parse_range("id ]abc..; max=10").unwrap();
        assert_eq!(r.start, Some(("abc".into(), true)));
        let r = parse_range("id abc..").unwrap();
        assert_eq!(r.start, Some(("abc".into(), false)));
        assert!(parse_range("name ..; max=2").is_none());
        assert!(parse_range("id ..; max=x").is_none());
    }

    #[test]
    fn telemetry_drains_are_checked_against_the_schema_limits() {
        let fields = |v: Value| {
            telemetry_fields(v.as_object().unwrap())
                .map(|_| ())
                .map_err(|a| a.status)
        };
        let exporter = |headers: Value, endpoint: &str| json!({"signals": ["logs"], "exporter": {"type": "otlphttp", "endpoint": endpoint, "headers": headers}});
        assert!(
            fields(exporter(
                json!({"Authorization": "Bearer x"}),
                "https://h/otlp/a"
            ))
            .is_ok()
        );
        let many: serde_json::Map<String, Value> =
            (0..21).map(|i| (format!("h-{i}"), json!("v"))).collect();
        let unprocessable = Err(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            fields(exporter(Value::Object(many), "https://h")),
            unprocessable
        );
        assert_eq!(
            fields(exporter(json!({"bad name": "v"}), "https://h")),
            unprocessable
        );
        assert_eq!(
            fields(exporter(json!({"x": "v".repeat(1001)}), "https://h")),
            unprocessable
        );
        let long = format!("https://h/{}", "a".repeat(1000));
        assert_eq!(fields(exporter(json!({}), &long)), unprocessable);
        assert_eq!(fields(json!({"signals": []})), unprocessable);
        assert_eq!(fields(json!({"signals": ["logs", "logs"]})), unprocessable);
        assert_eq!(fields(json!({"exporter": {"type": "otlp"}})), unprocessable);
        assert_eq!(
            fields(json!({"exporter": {"type": "zipkin", "endpoint": "h:1"}})),
            unprocessable
        );
    }

    #[test]
    fn percent_decoding_handles_drain_urls_in_paths() {
        assert_eq!(percent_decode("https%3A%2F%2Fh%2Fx"), "https://h/x");
        assert_eq!(percent_decode("abc%"), "abc%");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
