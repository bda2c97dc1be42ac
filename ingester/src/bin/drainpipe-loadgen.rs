//! Replays Logplex HTTPS-drain traffic against an ingester and reports what
//! it acknowledged: messages/s, MB/s, ack latency and status codes.
//!
//! Like Logplex, each drain keeps exactly one request in flight on its own
//! keep-alive connection. Bodies come from `drainpipe_ingester::samples` (the
//! benchmark's mix: router, app and add-on lines), pre-generated into a pool
//! so the generator costs no CPU during the run; every request still gets
//! its own `Logplex-Frame-Id`, so the server's dedupe never drops one.
//!
//! ```text
//! drainpipe-loadgen --url http://127.0.0.1:8080 --drains 8 --duration 30s
//! ```
//!
//! With `--otlp` it posts what Fir telemetry drains send instead: OTLP/HTTP
//! protobuf logs requests of the same traffic mix to `{url}/otlp/{app}/v1/logs`
//! (`samples::OtlpGen`), with the password as `Authorization: Bearer`.
//!
//! With `--otlp-grpc http://ADDR` it sends the same OTLP requests as
//! `LogsService/Export` calls to an ingester's `--otlp-grpc-listen` (see
//! `grpc_load`): tonic's gRPC framing over HTTP/2, one call in flight per
//! drain, the app as `x-drainpipe-app`.
//!
//! With `--syslog tcp://ADDR` or `--syslog tls://ADDR` it streams Logplex
//! syslog-drain traffic instead (see `syslog_load`): N connections writing
//! octet-counted frames as fast as the ingester reads them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use drainpipe_contract::units;
use drainpipe_ingester::samples::{LogplexGen, OtlpGen};

#[derive(Parser, Debug)]
#[command(
    name = "drainpipe-loadgen",
    about = "Replay realistic Logplex HTTPS-drain traffic against a drainpipe ingester"
)]
struct Args {
    /// Base URL of the ingester; requests go to `{url}/logplex/{app}`.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "DRAINPIPE_LOADGEN_URL"
    )]
    url: String,

    /// Concurrent drains (one app each), each with one request in flight.
    #[arg(long, visible_alias = "apps", default_value_t = 8)]
    drains: usize,

    /// App names are `{prefix}-1` .. `{prefix}-N`.
    #[arg(long, default_value = "loadgen")]
    app_prefix: String,

    /// How long to send, e.g. `30s`, `2m`, `500ms` (default 10s unless
    /// --requests is given).
    #[arg(long, value_parser = parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,

    /// Total requests to send, spread over the drains.
    #[arg(long)]
    requests: Option<u64>,

    /// Body size in KiB; Logplex sends up to about 100 KiB.
    #[arg(long, default_value_t = 100)]
    body_kb: usize,

    /// Distinct bodies generated up front per drain.
    #[arg(long, default_value_t = 8)]
    pool: usize,

    /// Drain password (HTTP Basic). Never printed.
    #[arg(long, env = "DRAINPIPE_LOADGEN_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// The drains' tokens, one per drain in order, comma-separated: those
    /// Heroku gave the drains, for an ingester whose routes check them
    /// (default: `d.00000000-0000-4000-8000-000000000001` and so on).
    #[arg(long, value_delimiter = ',')]
    tokens: Vec<String>,

    /// Runtime worker threads (the ingester usually shares the machine).
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Per-request timeout; Logplex gives up after 5 s.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    timeout: Duration,

    /// OTLP mode (Fir telemetry drains): POST OTLP/HTTP protobuf logs
    /// requests to `{url}/otlp/{app}/v1/logs`; --body-kb is the protobuf size.
    #[arg(long, conflicts_with_all = ["syslog", "otlp_grpc"])]
    otlp: bool,

    /// OTLP/gRPC mode (telemetry drains with `--transport grpc`): the same
    /// requests as --otlp as `LogsService/Export` calls to this
    /// `http://HOST:PORT` (the ingester's --otlp-grpc-listen); --url is not
    /// used.
    #[arg(long, conflicts_with = "syslog")]
    otlp_grpc: Option<String>,

    /// Syslog mode: `tcp://HOST:PORT` or `tls://HOST:PORT`. Each of the
    /// --drains connections streams octet-counted frames; --url is then only
    /// read for the ingester's /metrics.
    #[arg(long)]
    syslog: Option<String>,

    /// Syslog over TLS: accept any server certificate (self-signed test
    /// setups).
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,

    /// Syslog over TLS: PEM file of the CA (or self-signed certificate) to trust.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,

    /// Syslog over TLS: the name the certificate is checked against.
    #[arg(long, default_value = "localhost")]
    server_name: String,

    /// Syslog mode: send the app name as HOSTNAME instead of the drain token
    /// (for an ingester without --routes, which takes HOSTNAME as the app).
    #[arg(long)]
    hostname_is_app: bool,
}

struct Drain {
    app: String,
    token: String,
    uri: Uri,
    bodies: Vec<(Bytes, u64)>,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    /// HTTP status codes, or gRPC code names.
    statuses: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    acked_messages: u64,
    acked_bytes: u64,
}

impl Tally {
    /// One answered request: its latency and status, and the messages and
    /// body bytes it acknowledged when `acked`.
    fn answered(
        &mut self,
        live: &Live,
        elapsed: Duration,
        status: String,
        acked: bool,
        n: u64,
        bytes: u64,
    ) {
        self.latencies_us.push(elapsed.as_micros() as u64);
        *self.statuses.entry(status).or_default() += 1;
        if acked {
            self.acked_messages += n;
            self.acked_bytes += bytes;
            live.acked_messages.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Shared counters for the progress line.
#[derive(Default)]
struct Live {
    acked_messages: AtomicU64,
    requests: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.drains == 0 || args.pool == 0 || args.body_kb == 0 || args.threads == 0 {
        bail!("--drains, --pool, --body-kb and --threads must be at least 1");
    }
    if !args.tokens.is_empty() && args.tokens.len() != args.drains {
        bail!(
            "--tokens gives {} tokens for {} drains: give one per drain",
            args.tokens.len(),
            args.drains
        );
    }
    let base = args.url.trim_end_matches('/').to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(target) = args.syslog.clone() {
        return runtime.block_on(syslog_load::run(args, target, base));
    }
    if let Some(origin) = args.otlp_grpc.clone() {
        let origin = origin.trim_end_matches('/').to_string();
        if !origin.starts_with("http://") {
            bail!("--otlp-grpc must be an http://HOST:PORT address (HTTP/2 in clear text)");
        }
        return runtime.block_on(run(args, origin));
    }
    if !base.starts_with("http://") {
        bail!(
            "--url must be an http:// URL (put TLS in front of the ingester, not in the load generator)"
        );
    }
    runtime.block_on(run(args, base))
}

async fn run(args: Args, base: String) -> anyhow::Result<()> {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_micros() as i64;
    // Frame ids must not repeat across runs either: the ingester would
    // answer a repeated (token, frame id) with 200 and store nothing.
    let run_id = now_us as u64;
    // OTLP bodies, over HTTP or gRPC.
    let otlp_bodies = args.otlp || args.otlp_grpc.is_some();

    let mut drains = Vec::with_capacity(args.drains);
    for i in 1..=args.drains {
        let app = format!("{}-{i}", args.app_prefix);
        let url = if args.otlp_grpc.is_some() {
            base.clone()
        } else if args.otlp {
            format!("{base}/otlp/{app}/v1/logs")
        } else {
            format!("{base}/logplex/{app}")
        };
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{url} is not a valid URL"))?;
        let mut generate: Box<dyn FnMut(usize) -> (Vec<u8>, u64)> = if otlp_bodies {
            let mut generator = OtlpGen::new(i as u64, &app, now_us);
            Box::new(move |size| generator.body(size))
        } else {
            let mut generator = LogplexGen::new(i as u64, &app, now_us);
            Box::new(move |size| generator.body(size))
        };
        let bodies = (0..args.pool)
            .map(|_| {
                let (body, n) = generate(args.body_kb * 1024);
                (Bytes::from(body), n)
            })
            .collect();
        drains.push(Drain {
            app,
            token: drain_token(&args, i),
            uri,
            bodies,
        });
    }
    let msgs_per_body = drains[0].bodies.iter().map(|b| b.1).sum::<u64>() / args.pool as u64;
    let stop_after = match (args.duration, args.requests) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    eprintln!(
        "drainpipe-loadgen: {} drains ({}-1..{}), {} KiB bodies of about {} messages, {} against {}",
        args.drains,
        args.app_prefix,
        args.drains,
        args.body_kb,
        msgs_per_body,
        match (stop_after, args.requests) {
            (Some(d), _) => format!("for {:.1}s", d.as_secs_f64()),
            (None, Some(n)) => format!("{n} requests"),
            (None, None) => String::new(),
        },
        base
    );
    if !otlp_bodies && args.tokens.is_empty() {
        eprintln!(
            "drain tokens: d.00000000-0000-4000-8000-000000000001 .. -{:012}",
            args.drains
        );
    }

    let auth = match &args.password {
        Some(p) => {
            let value = if otlp_bodies {
                format!("Bearer {p}")
            } else {
                let enc = base64::engine::general_purpose::STANDARD.encode(format!("logplex:{p}"));
                format!("Basic {enc}")
            };
            let mut v =
                HeaderValue::from_str(&value).context("password makes an invalid header")?;
            v.set_sensitive(true);
            Some(v)
        }
        None => None,
    };

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.drains)
        .build(connector);

    let stop = Arc::new(AtomicBool::new(false));
    let remaining = Arc::new(AtomicU64::new(args.requests.unwrap_or(u64::MAX)));
    let live = Arc::new(Live::default());
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    let mut tasks = Vec::with_capacity(drains.len());
    for drain in drains {
        let client = client.clone();
        let auth = auth.clone();
        let (stop, remaining, live, seq) =
            (stop.clone(), remaining.clone(), live.clone(), seq.clone());
        let timeout = args.timeout;
        let otlp = args.otlp;
        let mut grpc = args
            .otlp_grpc
            .is_some()
            .then(|| grpc_load::channel(&drain.uri));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut next = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Claim one request from the budget.
                if remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                let (body, n) = drain.bodies[next % drain.bodies.len()].clone();
                next += 1;
                if let Some(grpc) = &mut grpc {
                    let t0 = Instant::now();
                    let result = tokio::time::timeout(
                        timeout,
                        grpc_load::export(grpc, &drain.app, auth.as_ref(), body.clone()),
                    )
                    .await;
                    let elapsed = t0.elapsed();
                    live.requests.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(code) => {
                            let acked = code == tonic::Code::Ok;
                            tally.answered(
                                &live,
                                elapsed,
                                format!("{code:?}"),
                                acked,
                                n,
                                body.len() as u64,
                            );
                            // What an OTLP exporter retries: pause briefly, as for a 503.
                            if matches!(
                                code,
                                tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                            ) {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        Err(_) => *tally.errors.entry("timeout".into()).or_default() += 1,
                    }
                    continue;
                }
                let frame_id = format!("{run_id:016x}{:016x}", seq.fetch_add(1, Ordering::Relaxed));
                let req = if otlp {
                    Request::post(drain.uri.clone())
                        .header(header::CONTENT_TYPE, "application/x-protobuf")
                        .header(header::USER_AGENT, "drainpipe-loadgen-otlp")
                        .body(Full::new(body.clone()))
                } else {
                    Request::post(drain.uri.clone())
                        .header(header::CONTENT_TYPE, "application/logplex-1")
                        .header("Logplex-Msg-Count", n)
                        .header("Logplex-Frame-Id", frame_id)
                        .header("Logplex-Drain-Token", &drain.token)
                        .header(header::USER_AGENT, "Logplex/v72")
                        .body(Full::new(body.clone()))
                };
                let mut req = match req {
                    Ok(r) => r,
                    Err(_) => {
                        *tally.errors.entry("request".into()).or_default() += 1;
                        break;
                    }
                };
                if let Some(a) = &auth {
                    req.headers_mut().insert(header::AUTHORIZATION, a.clone());
                }
                let t0 = Instant::now();
                let result = tokio::time::timeout(timeout, async {
                    let resp = client.request(req).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    Ok::<_, anyhow::Error>(status)
                })
                .await;
                let elapsed = t0.elapsed();
                live.requests.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(Ok(status)) => {
                        let acked = status.is_success();
                        tally.answered(
                            &live,
                            elapsed,
                            status.as_u16().to_string(),
                            acked,
                            n,
                            body.len() as u64,
                        );
                        if status.as_u16() == 503 || status.as_u16() == 429 {
                            // Logplex would retry after a pause; so do we, briefly.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    Ok(Err(e)) => {
                        *tally.errors.entry(error_kind(&e)).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(_) => *tally.errors.entry("timeout".into()).or_default() += 1,
                }
            }
            tally
        }));
    }

    // Progress every 5 s on stderr; stop when the duration is up.
    let progress = {
        let live = live.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = Instant::now();
                let acked = live.acked_messages.load(Ordering::Relaxed);
                eprintln!(
                    "  {:>6.1}s  {:>10.0} messages/s  {} requests",
                    now.duration_since(started).as_secs_f64(),
                    (acked - last.1) as f64 / now.duration_since(last.0).as_secs_f64(),
                    live.requests.load(Ordering::Relaxed)
                );
                last = (now, acked);
            }
        })
    };
    if let Some(d) = stop_after {
        tokio::time::sleep(d).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await.context("a drain task panicked")?;
        total.latencies_us.extend(t.latencies_us);
        for (k, v) in t.statuses {
            *total.statuses.entry(k).or_default() += v;
        }
        for (k, v) in t.errors {
            *total.errors.entry(k).or_default() += v;
        }
        total.acked_messages += t.acked_messages;
        total.acked_bytes += t.acked_bytes;
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.abort();
    report(&total, elapsed);
    Ok(())
}

fn error_kind(e: &anyhow::Error) -> String {
    if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
        if e.is_connect() {
            return "connect".into();
        }
        return "http".into();
    }
    "other".into()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

fn report(t: &Tally, elapsed: f64) {
    let mut lat = t.latencies_us.clone();
    lat.sort_unstable();
    let requests: u64 = t.statuses.values().sum::<u64>() + t.errors.values().sum::<u64>();
    println!("elapsed:      {elapsed:.2} s, {requests} requests");
    println!(
        "acknowledged: {} messages, {:.1} MB of bodies",
        t.acked_messages,
        t.acked_bytes as f64 / 1e6
    );
    println!(
        "throughput:   {:.0} messages/s, {:.1} MB/s",
        t.acked_messages as f64 / elapsed,
        t.acked_bytes as f64 / 1e6 / elapsed
    );
    println!(
        "ack latency:  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().map_or(0.0, |&m| m as f64 / 1000.0)
    );
    let statuses: Vec<String> = t.statuses.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("status:       {}", statuses.join(" "));
    if !t.errors.is_empty() {
        let errors: Vec<String> = t.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("errors:       {}", errors.join(" "));
    }
}

/// OTLP/gRPC mode: the pre-encoded `ExportLogsServiceRequest` bodies sent as
/// they are (a codec that frames bytes), so the client spends no CPU on
/// protobuf during the run, as in the HTTP modes.
mod grpc_load {
    use super::*;
    use bytes::{Buf as _, BufMut as _};
    use drainpipe_contract::otlp::{APP_HEADER, EXPORT_PATH};
    use http::uri::PathAndQuery;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::metadata::{MetadataKey, MetadataValue};

    pub(super) type Channel = tonic::client::Grpc<Client<HttpConnector, tonic::body::Body>>;

    /// One HTTP/2 connection to `origin`, with its own pool so every drain
    /// has its own connection, as every Heroku exporter does.
    pub(super) fn channel(origin: &Uri) -> Channel {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        tonic::client::Grpc::with_origin(client, origin.clone())
    }

    /// One `Export` call; the gRPC code it ended with (for a connection
    /// that fails, the code tonic derives from the transport error).
    pub(super) async fn export(
        grpc: &mut Channel,
        app: &str,
        auth: Option<&HeaderValue>,
        body: Bytes,
    ) -> tonic::Code {
        if let Err(e) = grpc.ready().await {
            return tonic::Status::from_error(Box::new(e)).code();
        }
        let mut request = tonic::Request::new(body);
        let meta = request.metadata_mut();
        match (
            MetadataKey::from_bytes(APP_HEADER.as_bytes()),
            MetadataValue::try_from(app),
        ) {
            (Ok(k), Ok(v)) => {
                meta.insert(k, v);
            }
            _ => return tonic::Code::InvalidArgument,
        }
        if let Some(a) = auth
            && let Ok(v) = MetadataValue::try_from(a.as_bytes())
        {
            meta.insert("authorization", v);
        }
        match grpc
            .unary(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
            .await
        {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        }
    }

    /// Sends a message's bytes as they are; ignores the answer's message
    /// (an `ExportLogsServiceResponse`; only the status matters here).
    #[derive(Default)]
    struct RawCodec;

    impl Codec for RawCodec {
        type Encode = Bytes;
        type Decode = ();
        type Encoder = RawCodec;
        type Decoder = RawCodec;
        fn encoder(&mut self) -> RawCodec {
            RawCodec
        }
        fn decoder(&mut self) -> RawCodec {
            RawCodec
        }
    }

    impl Encoder for RawCodec {
        type Item = Bytes;
        type Error = tonic::Status;
        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put(item);
            Ok(())
        }
    }

    impl Decoder for RawCodec {
        type Item = ();
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
            src.advance(src.remaining());
            Ok(Some(()))
        }
    }
}

/// Syslog mode: Logplex syslog-drain streams over TCP or TLS.
mod syslog_load {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpStream;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    /// Rewrite an HTTPS-drain message (`... host APP PROC MSGID MSG\n`) as a
    /// syslog drain sends it: HOSTNAME is the drain token, a NILVALUE
    /// STRUCTURED-DATA follows MSGID, no trailing newline.
    pub(super) fn to_syslog_drain(msg: &[u8], hostname: &str, out: &mut Vec<u8>) {
        let msg = msg.strip_suffix(b"\n").unwrap_or(msg);
        let sp: Vec<usize> = msg
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b' ')
            .map(|(i, _)| i)
            .take(6)
            .collect();
        if sp.len() < 6 {
            out.extend_from_slice(msg);
            return;
        }
        out.extend_from_slice(&msg[..=sp[1]]);
        out.extend_from_slice(hostname.as_bytes());
        out.extend_from_slice(&msg[sp[2]..=sp[5]]);
        out.extend_from_slice(b"- ");
        out.extend_from_slice(&msg[sp[5] + 1..]);
    }

    /// Chunks of octet-counted frames for one connection, and their counts.
    fn chunks(args: &Args, i: usize, hostname: &str, now_us: i64) -> Vec<(Bytes, u64)> {
        let app = format!("{}-{i}", args.app_prefix);
        let mut generator = LogplexGen::new(i as u64, &app, now_us);
        let (mut msg, mut line) = (Vec::new(), Vec::new());
        (0..args.pool)
            .map(|_| {
                let mut out = Vec::with_capacity(args.body_kb * 1024 + 1024);
                let mut n = 0;
                while out.len() < args.body_kb * 1024 {
                    msg.clear();
                    line.clear();
                    generator.message(&mut msg);
                    to_syslog_drain(&msg, hostname, &mut line);
                    out.extend_from_slice(format!("{} ", line.len()).as_bytes());
                    out.extend_from_slice(&line);
                    n += 1;
                }
                (Bytes::from(out), n)
            })
            .collect()
    }

    /// Accepts any certificate: `--insecure` only.
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn tls_connector(args: &Args) -> anyhow::Result<tokio_rustls::TlsConnector> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .context("TLS versions")?;
        let config = if args.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth()
        } else {
            let Some(ca) = &args.ca else {
                bail!("tls:// needs --ca FILE (or --insecure)");
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read {}", ca.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("{}: not PEM", ca.display()))?)
                    .context("unusable CA certificate")?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// `drainpipe_syslog_messages_total` from the ingester, if it answers.
    async fn stored(base: &str) -> Option<u64> {
        let uri: Uri = format!("{base}/metrics").parse().ok()?;
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let resp = client.get(uri).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        let text = String::from_utf8_lossy(&body);
        text.lines().find_map(|l| {
            l.strip_prefix("drainpipe_syslog_messages_total ")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|v| v as u64)
        })
    }

    async fn stream<S: AsyncRead + AsyncWrite + Unpin>(
        mut conn: S,
        chunks: &[(Bytes, u64)],
        stop: &AtomicBool,
        live: &Live,
    ) -> Option<String> {
        let mut next = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let (chunk, n) = &chunks[next % chunks.len()];
            next += 1;
            if let Err(e) = conn.write_all(chunk).await {
                return Some(e.kind().to_string());
            }
            // `requests` counts bytes here: one "request" is one write.
            live.acked_messages.fetch_add(*n, Ordering::Relaxed);
            live.requests
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = conn.shutdown().await;
        // Wait for the ingester to close its side: closing a socket that
        // still has unread input (TLS session tickets) sends a reset, which
        // throws away whatever the kernel had not sent yet.
        let mut sink = [0u8; 4096];
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            while conn.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        drained
            .err()
            .map(|_| "the ingester did not close within 30 s".to_owned())
    }

    pub(super) async fn run(args: Args, target: String, base: String) -> anyhow::Result<()> {
        let (tls, addr) = if let Some(a) = target.strip_prefix("tcp://") {
            (None, a.to_owned())
        } else if let Some(a) = target.strip_prefix("tls://") {
            (Some(tls_connector(&args)?), a.to_owned())
        } else {
            bail!("--syslog must be tcp://HOST:PORT or tls://HOST:PORT");
        };
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("clock before 1970")?
            .as_micros() as i64;
        let mut pools = Vec::new();
        for i in 1..=args.drains {
            let hostname = if args.hostname_is_app {
                format!("{}-{i}", args.app_prefix)
            } else {
                drain_token(&args, i)
            };
            pools.push(chunks(&args, i, &hostname, now_us));
        }
        let duration = args.duration.unwrap_or(Duration::from_secs(10));
        eprintln!(
            "drainpipe-loadgen: {} syslog connections to {target}, {} KiB writes, for {:.1}s",
            args.drains,
            args.body_kb,
            duration.as_secs_f64()
        );
        let before = stored(&base).await;
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Live::default());
        let started = Instant::now();
        let mut tasks = Vec::new();
        for pool in pools {
            let (stop, live, tls, addr) = (stop.clone(), live.clone(), tls.clone(), addr.clone());
            let name = ServerName::try_from(args.server_name.clone())
                .context("--server-name is not a DNS name or IP address")?;
            tasks.push(tokio::spawn(async move {
                let tcp = match TcpStream::connect(addr.as_str()).await {
                    Ok(t) => t,
                    Err(e) => return Some(format!("connect: {}", e.kind())),
                };
                let _ = tcp.set_nodelay(true);
                match tls {
                    None => stream(tcp, &pool, &stop, &live).await,
                    Some(tls) => match tls.connect(name, tcp).await {
                        Ok(conn) => stream(conn, &pool, &stop, &live).await,
                        Err(e) => Some(format!("tls: {e}")),
                    },
                }
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for mut t in tasks {
            // A write the ingester never reads (its log full, say) must not
            // keep the report from being printed.
            match tokio::time::timeout(Duration::from_secs(40), &mut t).await {
                Ok(e) => {
                    if let Some(e) = e.context("a connection task panicked")? {
                        *errors.entry(e).or_default() += 1;
                    }
                }
                Err(_) => {
                    t.abort();
                    *errors
                        .entry("still blocked 40 s after the end".into())
                        .or_default() += 1;
                }
            }
        }
        let messages = live.acked_messages.load(Ordering::Relaxed);
        let bytes = live.requests.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        println!("elapsed:      {elapsed:.2} s, {} connections", args.drains);
        println!(
            "written:      {messages} messages, {:.1} MB of frames",
            bytes as f64 / 1e6
        );
        println!(
            "throughput:   {:.0} messages/s, {:.1} MB/s (written into the sockets; the ingester reads only what it has made durable)",
            messages as f64 / elapsed,
            bytes as f64 / 1e6 / elapsed
        );
        if let Some(before) = before {
            // Let the ingester store what is still in socket buffers.
            let mut last = None;
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = stored(&base).await;
                if now.is_some() && now == last {
                    break;
                }
                last = now;
            }
            if let Some(after) = last {
                println!(
                    "durable:      {} messages per the ingester's drainpipe_syslog_messages_total",
                    after.saturating_sub(before)
                );
            }
        }
        if !errors.is_empty() {
            let errors: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("errors:       {}", errors.join(" "));
        }
        Ok(())
    }
}

/// Drain `i`'s token (1-based): `--tokens`, else the generated one.
fn drain_token(args: &Args, i: usize) -> String {
    args.tokens
        .get(i - 1)
        .cloned()
        .unwrap_or_else(|| format!("d.00000000-0000-4000-8000-{i:012}"))
}

/// The shared duration grammar, without zero: a zero `--duration` or
/// `--timeout` would measure nothing or fail every request.
fn parse_duration(text: &str) -> Result<Duration, String> {
    match units::parse_duration(text)? {
        Duration::ZERO => Err(format!("{text:?}: must be more than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        // One grammar with the ingester and operator: a number needs a unit.
        assert!(parse_duration("1.5").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn syslog_drain_lines() {
        let mut out = Vec::new();
        syslog_load::to_syslog_drain(
            b"<190>1 2026-06-17T12:00:00.1+00:00 host app web.1 - - led by a dash\n",
            "d.tok",
            &mut out,
        );
        assert_eq!(
            out,
            b"<190>1 2026-06-17T12:00:00.1+00:00 d.tok app web.1 - - - led by a dash"
        );
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
