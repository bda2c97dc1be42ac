//! Every query in docs/athena.md, run in Trino (Athena engine v3 is Trino) over the table the
//! operator's own `Catalog::ensure_table` creates in Glue (moto) and objects the ingester wrote
//! for a realistic corpus (MinIO). Each answer is compared with what the corpus says it must be,
//! computed here from the events themselves, not from the archive.
//!
//! The queries are taken from the markdown, so docs and test cannot drift: a new query under
//! "Ready-to-run queries" without an expectation here fails the test by its name.

use std::collections::BTreeMap;
use std::time::Duration;

use drainpipe_contract::schema::ArchiveFormat;
use drainpipe_operator::glue::{Catalog, TableRef, TableSpec};
use drainpipe_tests::athena_docs::{documented_queries, on_database};
use drainpipe_tests::env::TestEnv;
use drainpipe_tests::ingester::{InProcessIngester, compact, object_keys};
use drainpipe_tests::trino::Trino;

const APPS: [&str; 3] = ["billing-api", "shop-web", "shop-worker"];

// ---------------------------------------------------------------------------------------------
// The corpus: what Heroku would send for three apps over two UTC days.

#[derive(Debug, Clone)]
struct Router {
    method: &'static str,
    path: String,
    status: u16,
    connect_ms: u32,
    service_ms: u32,
    bytes: u64,
    fwd: &'static str,
    dyno: &'static str,
    request_id: String,
    /// `at=error` lines: Heroku error code and description.
    error: Option<(&'static str, &'static str)>,
}

#[derive(Debug, Clone)]
enum Kind {
    Router(Router),
    /// An app's own output (`source = 'app'`), e.g. `web.1`.
    App {
        proc_id: &'static str,
        text: Vec<u8>,
    },
    /// Platform API lines: deploys, releases, config changes (`app api`).
    Api(String),
    /// Dyno manager lines (`heroku web.1`).
    Platform(String),
    /// Logplex's own drop notice.
    L10(u64),
}

#[derive(Debug, Clone)]
struct Event {
    app: &'static str,
    day: u8,
    /// Microseconds into the day.
    us: u64,
    kind: Kind,
}

impl Event {
    fn log_ts(&self) -> String {
        let s = self.us / 1_000_000;
        format!(
            "2026-11-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            self.day,
            s / 3600,
            s / 60 % 60,
            s % 60,
            self.us % 1_000_000
        )
    }

    /// `date_trunc('hour', from_iso8601_timestamp(log_ts))` as Trino prints it.
    fn hour(&self) -> String {
        format!(
            "2026-11-{:02} {:02}:00:00.000 UTC",
            self.day,
            self.us / 3_600_000_000
        )
    }

    /// The RFC 5424 frame Logplex would send.
    fn frame(&self) -> Vec<u8> {
        let ts = format!("{}+00:00", self.log_ts().trim_end_matches('Z'));
        let (pri, source, proc_id, text): (u8, &str, &str, Vec<u8>) = match &self.kind {
            Kind::Router(r) => (
                158,
                "heroku",
                "router",
                router_line(self.app, r).into_bytes(),
            ),
            Kind::App { proc_id, text } => (190, "app", proc_id, text.clone()),
            Kind::Api(t) => (190, "app", "api", t.clone().into_bytes()),
            Kind::Platform(t) => (45, "heroku", "web.1", t.clone().into_bytes()),
            Kind::L10(n) => (
                172,
                "heroku",
                "logplex",
                format!("Error L10 (output buffer overflow): {n} messages dropped since {ts}.")
                    .into_bytes(),
            ),
        };
        let mut f = format!("<{pri}>1 {ts} host {source} {proc_id} - ").into_bytes();
        f.extend_from_slice(&text);
        f
    }

    fn router(&self) -> Option<&Router> {
        match &self.kind {
            Kind::Router(r) => Some(r),
            _ => None,
        }
    }
}

fn router_line(app: &str, r: &Router) -> String {
    let head = match r.error {
        Some((code, desc)) => format!("at=error code={code} desc=\"{desc}\""),
        None => "at=info".to_owned(),
    };
    format!(
        "{head} method={} path=\"{}\" host={app}.herokuapp.com request_id={} fwd=\"{}\" dyno={} connect={}ms service={}ms status={} bytes={} protocol=https",
        r.method,
        r.path,
        r.request_id,
        r.fwd,
        r.dyno,
        r.connect_ms,
        r.service_ms,
        r.status,
        r.bytes
    )
}

/// Deterministic: the same corpus on every run, so a failure can be reproduced.
fn corpus() -> Vec<Event> {
    const STATUSES: [u16; 16] = [
        200, 200, 200, 200, 200, 201, 301, 304, 401, 403, 404, 429, 500, 502, 503, 200,
    ];
    // The last one came through a proxy: X-Forwarded-For lists the client first.
    const FWD: [&str; 4] = [
        "203.0.113.7",
        "198.51.100.23",
        "192.0.2.44",
        "192.0.2.44, 10.1.2.3",
    ];
    let mut out = Vec::new();
    let mut seq = 0u64;
    let mut at = |day: u8, i: u64| {
        seq += 1;
        // Spread over the day's 24 hours, distinct microseconds.
        (
            day,
            (i % 24) * 3_600_000_000 + (i / 24) * 1_000_000 + seq % 1_000_000,
        )
    };
    for day in [21u8, 22] {
        // shop-web: 160 API requests (latency plateaus 20/80/300 ms, so p50 and p95 are exact
        // even for approx_percentile), 40 checkout requests, some slow, some H12 timeouts.
        for i in 0..200u64 {
            let (d, us) = at(day, i);
            let api = i < 160;
            let service_ms = if api {
                match i % 10 {
                    0..=5 => 20,
                    6..=8 => 80,
                    _ => 300,
                }
            } else if i % 5 == 0 {
                2_000 + i as u32 * 13
            } else {
                150
            };
            let timeout = !api && i % 13 == 0;
            out.push(Event {
                app: "shop-web",
                day: d,
                us,
                kind: Kind::Router(Router {
                    method: if i % 4 == 0 { "POST" } else { "GET" },
                    path: if api {
                        format!("/api/items/{}?page={}", i % 7, i % 3)
                    } else {
                        format!("/checkout/step{}", i % 3)
                    },
                    status: if timeout {
                        503
                    } else {
                        STATUSES[i as usize % 16]
                    },
                    connect_ms: (i % 3) as u32,
                    service_ms: if timeout { 30_000 } else { service_ms },
                    bytes: 500 + i * 11,
                    fwd: FWD[i as usize % 4],
                    dyno: if i % 2 == 0 { "web.1" } else { "web.2" },
                    request_id: format!("req-{day}-{i:04}"),
                    error: timeout.then_some(("H12", "Request timeout")),
                }),
            });
        }
        // billing-api: 120 charge requests (35 ms, a quarter 90 ms), H10 crashes.
        for i in 0..120u64 {
            let (d, us) = at(day, i);
            let crashed = i % 40 == 7;
            out.push(Event {
                app: "billing-api",
                day: d,
                us,
                kind: Kind::Router(Router {
                    method: "POST",
                    path: "/v1/charges".to_owned(),
                    status: if crashed {
                        503
                    } else {
                        STATUSES[(i as usize + 3) % 16]
                    },
                    connect_ms: 1,
                    service_ms: if i % 4 == 0 { 90 } else { 35 },
                    bytes: 120,
                    fwd: FWD[(i as usize + 1) % 3],
                    dyno: "web.1",
                    request_id: format!("bill-{day}-{i:04}"),
                    error: crashed.then_some(("H10", "App crashed")),
                }),
            });
        }
        // billing-api logfmt lines; half of the app lines have no `event` key at all.
        for i in 0..60u64 {
            let (d, us) = at(day, i);
            let text = match i % 4 {
                0 => format!("event=charge_failed user_id=u{} amount={}", i % 5, 100 + i),
                1 => format!("event=charge_ok user_id=u{} amount={}", i % 5, 100 + i),
                2 => format!("Completed 200 OK in {}ms", 10 + i),
                _ => "at=info msg=\"health check\"".to_owned(),
            };
            out.push(Event {
                app: "billing-api",
                day: d,
                us,
                kind: Kind::App {
                    proc_id: "web.1",
                    text: text.into_bytes(),
                },
            });
        }
        // shop-web's deploys, releases and dyno life cycle, plus lines that only look alike.
        let lifecycle: [(u64, Kind); 10] = [
            (
                3,
                Kind::Api(format!("Deploy 3f2a1b{day} by dev@example.com")),
            ),
            (
                3,
                Kind::Api(format!("Release v{day} created by dev@example.com")),
            ),
            (
                4,
                Kind::Api("Set FEATURE_X config vars by dev@example.com".to_owned()),
            ),
            (5, Kind::Platform("Restarting".to_owned())),
            (
                5,
                Kind::Platform("State changed from up to starting".to_owned()),
            ),
            (
                5,
                Kind::Platform("Process exited with status 143".to_owned()),
            ),
            (
                6,
                Kind::Platform("Starting process with command `bundle exec puma`".to_owned()),
            ),
            (
                6,
                Kind::Platform("State changed from starting to up".to_owned()),
            ),
            (
                9,
                Kind::Api(format!("Rollback to v{} by dev@example.com", day - 1)),
            ),
            (
                9,
                Kind::App {
                    proc_id: "web.1",
                    text: b"Deploying assets to the CDN".to_vec(),
                },
            ),
        ];
        for (n, (hour, kind)) in lifecycle.into_iter().enumerate() {
            out.push(Event {
                app: "shop-web",
                day,
                us: hour * 3_600_000_000 + 1_000 + n as u64,
                kind,
            });
        }
        // shop-worker: a traceback, invalid UTF-8, and Logplex drop notices in two hours.
        let worker: [(u64, Kind); 5] = [
            (
                2,
                Kind::App {
                    proc_id: "worker.1",
                    text: b"Traceback (most recent call last):\n  File \"job.py\", line 3, in <module>\nKeyError: 'sku'".to_vec(),
                },
            ),
            (
                2,
                Kind::App {
                    proc_id: "worker.1",
                    text: b"invalid \xff\xfe bytes".to_vec(),
                },
            ),
            (7, Kind::L10(37)),
            (7, Kind::L10(5)),
            (8, Kind::L10(u64::from(day))),
        ];
        for (n, (hour, kind)) in worker.into_iter().enumerate() {
            out.push(Event {
                app: "shop-worker",
                day,
                us: hour * 3_600_000_000 + 2_000 + n as u64,
                kind,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What each documented query must answer, from the corpus.

type Rows = Vec<Vec<String>>;

fn on_day(e: &Event, day: u8) -> bool {
    e.day == day
}

fn count_by<K: Ord>(keys: impl Iterator<Item = K>) -> BTreeMap<K, u64> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// Nearest-rank percentile: on plateaus it is what approx_percentile answers.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn expected(name: &str, events: &[Event]) -> Option<Rows> {
    let routers = || events.iter().filter_map(|e| e.router().map(|r| (e, r)));
    let rows = match name {
        "5xx responses per app per hour" => count_by(
            routers()
                .filter(|(e, r)| on_day(e, 21) && r.status >= 500)
                .map(|(e, _)| (e.app.to_owned(), e.hour())),
        )
        .into_iter()
        .map(|((app, hour), n)| vec![app, hour, n.to_string()])
        .collect(),
        "Requests slower than 2 seconds" => routers()
            .filter(|(e, r)| e.app == "shop-web" && on_day(e, 21) && r.service_ms > 2000)
            .map(|(e, r)| {
                vec![
                    e.log_ts(),
                    e.app.to_owned(),
                    r.method.to_owned(),
                    r.path.clone(),
                    r.status.to_string(),
                    r.connect_ms.to_string(),
                    r.service_ms.to_string(),
                    r.dyno.to_owned(),
                    r.request_id.clone(),
                ]
            })
            .collect(),
        "Requests slower than 2 seconds (2)" => count_by(routers().filter_map(|(e, r)| {
            r.error
                .map(|(code, desc)| (e.app.to_owned(), code.to_owned(), desc.to_owned()))
        }))
        .into_iter()
        .map(|((app, code, desc), n)| vec![app, code, desc, n.to_string()])
        .collect(),
        "Authentication failures and rate limiting" => count_by(
            routers()
                .filter(|(e, r)| on_day(e, 21) && [401, 403, 429].contains(&r.status))
                .map(|(e, r)| (e.app.to_owned(), r.status, r.fwd.to_owned())),
        )
        .into_iter()
        .map(|((app, status, fwd), n)| vec![app, status.to_string(), fwd, n.to_string()])
        .collect(),
        "Deploy timeline" => events
            .iter()
            .filter(|e| e.app == "shop-web")
            .filter_map(|e| {
                let (source, proc_id, text) = match &e.kind {
                    Kind::Api(t) => ("app", "api", t),
                    Kind::Platform(t) => ("heroku", "web.1", t),
                    _ => return None,
                };
                let deploy = ["Deploy ", "Release v", "Rollback ", "Set "];
                let dyno = [
                    "State changed from ",
                    "Restarting",
                    "Process exited with status ",
                ];
                let wanted = if proc_id == "api" {
                    &deploy[..]
                } else {
                    &dyno[..]
                };
                wanted.iter().any(|p| text.starts_with(p)).then(|| {
                    vec![
                        e.log_ts(),
                        e.app.to_owned(),
                        source.to_owned(),
                        proc_id.to_owned(),
                        text.clone(),
                    ]
                })
            })
            .collect(),
        "Latency by path prefix, with p95" => {
            let mut groups: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
            for (e, r) in routers().filter(|(e, _)| on_day(e, 21)) {
                let end = r.path[1..].find(['/', '?']).map_or(r.path.len(), |i| i + 1);
                groups
                    .entry((e.app.to_owned(), r.path[..end].to_owned()))
                    .or_default()
                    .push(r.service_ms);
            }
            groups
                .into_iter()
                .filter(|(_, v)| v.len() > 100)
                .map(|((app, prefix), mut v)| {
                    v.sort_unstable();
                    vec![
                        app,
                        prefix,
                        v.len().to_string(),
                        percentile(&v, 0.50).to_string(),
                        percentile(&v, 0.95).to_string(),
                        v[v.len() - 1].to_string(),
                    ]
                })
                .collect()
        }
        "Logs Heroku dropped before they reached drainpipe" => {
            let mut sums: BTreeMap<(String, String), u64> = BTreeMap::new();
            for e in events {
                if let Kind::L10(n) = e.kind {
                    *sums.entry((e.app.to_owned(), e.hour())).or_insert(0) += n;
                }
            }
            sums.into_iter()
                .map(|((app, hour), n)| vec![app, hour, n.to_string()])
                .collect()
        }
        "App log fields" => count_by(events.iter().filter_map(|e| match &e.kind {
            Kind::App { text, .. } if e.app == "billing-api" && on_day(e, 21) => {
                let text = std::str::from_utf8(text).ok()?;
                text.starts_with("event=charge_failed ")
                    .then(|| text.split(' ').find_map(|p| p.strip_prefix("user_id=")))
                    .flatten()
                    .map(str::to_owned)
            }
            _ => None,
        }))
        .into_iter()
        .map(|(user, n)| vec![user, n.to_string()])
        .collect(),
        "Server errors without grepping the message" => count_by(
            routers()
                .filter(|(e, r)| on_day(e, 21) && (500..600).contains(&r.status))
                .map(|(e, _)| e.app.to_owned()),
        )
        .into_iter()
        .map(|(app, n)| vec![app, n.to_string()])
        .collect(),
        "Service time as a number (and the grep it replaces)" => {
            let mut by_app: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for (e, r) in routers().filter(|(e, _)| on_day(e, 21)) {
                by_app.entry(e.app).or_default().push(r.service_ms);
            }
            by_app
                .into_iter()
                .map(|(app, v)| {
                    let n = v.len().to_string();
                    let max = v.iter().max().copied().unwrap_or(0).to_string();
                    vec![app.to_owned(), n.clone(), n, max]
                })
                .collect()
        }
        "Routes without their query string" => count_by(
            routers()
                .filter(|(e, _)| e.app == "shop-web" && on_day(e, 21))
                .map(|(_, r)| r.path.split('?').next().unwrap_or("").to_owned()),
        )
        .into_iter()
        .map(|(route, n)| vec![route, n.to_string()])
        .collect(),
        "Client addresses from `fwd`" => count_by(
            routers()
                .filter(|(e, _)| e.app == "shop-web" && on_day(e, 21))
                .map(|(_, r)| r.fwd.split(',').next().unwrap_or("").trim().to_owned()),
        )
        .into_iter()
        .map(|(client, n)| vec![client, n.to_string()])
        .collect(),
        "Platform API lines (deploys, releases, config)" => events
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Api(t) if e.app == "shop-web" => Some(vec![e.log_ts(), t.clone()]),
                _ => None,
            })
            .collect(),
        _ => return None,
    };
    Some(rows)
}

/// The corpus archived by an in-process ingester writing `format`, under a prefix of its own.
/// Objects close every 50 ms, so each app-day is many small objects, as a day of a real
/// ingester is (one per replica and worker every `--flush-interval`).
async fn archive_corpus(env: &TestEnv, events: &[Event], format: ArchiveFormat) -> String {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("athena-{run}/");
    let flags = ["--format", format.as_str(), "--flush-interval", "50ms"].map(String::from);
    let ingester = InProcessIngester::start_with(env, &prefix, &flags).await;
    for app in APPS {
        let frames: Vec<Vec<u8>> = events
            .iter()
            .filter(|e| e.app == app)
            .map(Event::frame)
            .collect();
        for chunk in frames.chunks(50) {
            ingester.post_logplex(app, chunk).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(ingester.stop().await > 0, "the ingester archived nothing");
    prefix
}

/// Runs every documented query over a `format` table the operator's own `Catalog` creates for
/// `prefix`, and returns how each answer differs from what the corpus says.
async fn documented_query_failures(
    env: &TestEnv,
    events: &[Event],
    prefix: &str,
    format: ArchiveFormat,
) -> Vec<String> {
    let trino = Trino::new(env.trino());
    let queries = documented_queries().expect("the documented queries");
    assert!(
        queries.len() >= 13,
        "docs/athena.md lost its queries: {queries:?}"
    );
    let database = format!("dp_athena_{}", uuid::Uuid::new_v4().simple());
    let table = TableRef::new(&database, "heroku_logs");
    let spec = TableSpec::new(&env.bucket, prefix)
        .with_apps(APPS)
        .with_years(2026, 2027)
        .with_format(format);
    Catalog::new(env.glue_client())
        .ensure_table(&table, &spec)
        .await
        .expect("create the table with the operator's Catalog");

    let mut failures = Vec::new();
    for (name, sql) in &queries {
        let sql = on_database(sql, &database);
        let Some(mut want) = expected(name, events) else {
            failures.push(format!(
                "{name}: no expectation in this test for this documented query"
            ));
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(180), trino.query(&sql)).await {
            Err(_) => failures.push(format!("{format} {name}: no answer within 180 s")),
            Ok(Err(e)) => failures.push(format!("{format} {name}: {e}")),
            Ok(Ok(answer)) => {
                let mut got = answer.rows;
                // Queries order by counts with ties; what they return is what is compared.
                got.sort();
                want.sort();
                if got != want {
                    let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).collect();
                    let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).collect();
                    failures.push(format!(
                        "{format} {name}: answer differs ({} rows wanted, {} got)\n  missing {missing:?}\n  unexpected {extra:?}",
                        want.len(),
                        got.len()
                    ));
                } else if want.is_empty() {
                    failures.push(format!("{name}: the corpus has no rows for it"));
                }
            }
        }
    }
    failures
}

/// Objects per (app, day folder), from the keys under `prefix`.
async fn objects_per_day(env: &TestEnv, prefix: &str) -> BTreeMap<String, usize> {
    let mut per_day = BTreeMap::new();
    for key in object_keys(env, prefix).await {
        let folder = key
            .rsplit_once('/')
            .map_or(key.clone(), |(f, _)| f.to_owned());
        *per_day.entry(folder).or_default() += 1;
    }
    per_day
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_query_answers_what_the_corpus_says() {
    let env = TestEnv::require();
    let events = corpus();
    let prefix = archive_corpus(&env, &events, ArchiveFormat::Json).await;
    let failures = documented_query_failures(&env, &events, &prefix, ArchiveFormat::Json).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same queries over a Parquet archive give the same answers, before compaction (many small
/// objects per app-day) and after it (one object per app-day, every record verified).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_answers_every_documented_query_the_same_before_and_after_compaction() {
    let env = TestEnv::require();
    let events = corpus();
    let prefix = archive_corpus(&env, &events, ArchiveFormat::Parquet).await;
    let before = objects_per_day(&env, &prefix).await;
    assert!(
        before
            .keys()
            .all(|f| f.starts_with(&format!("{prefix}format=parquet/"))),
        "{before:?}"
    );
    assert!(
        before.values().any(|&n| n > 1),
        "one object per day already: {before:?}"
    );
    let failures = documented_query_failures(&env, &events, &prefix, ArchiveFormat::Parquet).await;
    assert!(
        failures.is_empty(),
        "before compaction:\n{}",
        failures.join("\n")
    );

    let report = compact(&env, &prefix, ArchiveFormat::Parquet).await;
    assert!(report.succeeded(), "{report:?}");
    // Days that were one object already are left as they are; every record is counted by the
    // queries below.
    assert!(
        report.records_verified > 0 && report.records_verified <= events.len() as u64,
        "{report:?}"
    );
    let after = objects_per_day(&env, &prefix).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert!(after.values().all(|&n| n == 1), "{after:?}");
    assert_eq!(
        report.objects_merged as usize,
        before.values().filter(|&&n| n > 1).sum::<usize>()
    );
    let failures = documented_query_failures(&env, &events, &prefix, ArchiveFormat::Parquet).await;
    assert!(
        failures.is_empty(),
        "after compaction:\n{}",
        failures.join("\n")
    );
}

/// A LogDrain switched from JSON to Parquet: compaction converts its closed JSON days, and the
/// Parquet table then answers every query over them as the JSON table did. No JSON object is
/// left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_archive_converted_by_compaction_answers_in_the_parquet_table() {
    let env = TestEnv::require();
    let events = corpus();
    let prefix = archive_corpus(&env, &events, ArchiveFormat::Json).await;
    let json_days = objects_per_day(&env, &prefix).await;
    let report = compact(&env, &prefix, ArchiveFormat::Parquet).await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.records_verified, events.len() as u64, "{report:?}");
    assert_eq!(
        report.objects_merged as usize,
        json_days.values().sum::<usize>()
    );
    let after = objects_per_day(&env, &prefix).await;
    let converted: Vec<String> = json_days
        .keys()
        .map(|f| f.replacen(&prefix, &format!("{prefix}format=parquet/"), 1))
        .collect();
    assert_eq!(after.keys().cloned().collect::<Vec<_>>(), converted);
    assert!(after.values().all(|&n| n == 1), "{after:?}");
    let failures = documented_query_failures(&env, &events, &prefix, ArchiveFormat::Parquet).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Athena's OpenX SerDe lowercases JSON keys (`case.insensitive` is on by default) and fails a
/// row whose keys collide once lowercased; with `ignore.malformed.json` such a row would vanish
/// from every query. logfmt keys are case-sensitive (`userId=1 userid=2`), so the ingester folds
/// `kv` keys to lowercase itself: every row reads, and a lookup by the lowercase key finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logfmt_keys_that_differ_only_in_case_read_in_trino() {
    let env = TestEnv::require();
    let trino = Trino::new(env.trino());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("athena-case-{run}/");
    let lines: [&[u8]; 3] = [
        b"userId=1 userid=2 Event=signup",
        b"USER_ID=7 event=login",
        b"plain=yes",
    ];
    let frames: Vec<Vec<u8>> = lines
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut f =
                format!("<190>1 2026-11-21T10:00:0{i}.000000+00:00 host app web.1 - ").into_bytes();
            f.extend_from_slice(text);
            f
        })
        .collect();
    let ingester = InProcessIngester::start_s3(&env, &prefix).await;
    ingester.post_logplex("shop-web", &frames).await;
    assert!(ingester.stop().await > 0, "the ingester archived nothing");
    let database = format!("dp_case_{run}");
    Catalog::new(env.glue_client())
        .ensure_table(
            &TableRef::new(&database, "heroku_logs"),
            &TableSpec::new(&env.bucket, &prefix)
                .with_apps(["shop-web"])
                .with_years(2026, 2027),
        )
        .await
        .expect("create the table with the operator's Catalog");

    let answer = trino
        .query(&format!(
            "SELECT message, element_at(kv, 'userid'), element_at(kv, 'user_id'), \
             element_at(kv, 'event'), cardinality(kv) \
             FROM \"{database}\".heroku_logs \
             WHERE app = 'shop-web' AND year = '2026' AND month = '11' AND day = '21' \
             ORDER BY log_ts"
        ))
        .await
        .expect("query the case-folded keys");
    let s = |v: &[&str]| v.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        answer.rows,
        vec![
            s(&["userId=1 userid=2 Event=signup", "2", "NULL", "signup", "2"]),
            s(&["USER_ID=7 event=login", "NULL", "7", "login", "2"]),
            s(&["plain=yes", "NULL", "NULL", "NULL", "1"]),
        ],
        "every line is a row, keys folded to lowercase, the last of colliding keys kept"
    );
}

/// The cross-generation query of docs/athena.md ("Fir apps (OTLP) in the same table"), as
/// written there, over one Cedar app's Logplex lines and the same app's OTLP records: the errors
/// of both come back, in time order, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_cross_generation_query_reads_logplex_and_otlp_records() {
    let env = TestEnv::require();
    let trino = Trino::new(env.trino());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("athena-fir-{run}/");
    let ingester = InProcessIngester::start_s3(&env, &prefix).await;
    ingester
        .post_logplex(
            "shop-web",
            &[
                b"<187>1 2026-06-17T10:00:00.000000+00:00 host app web.1 - cedar error".to_vec(),
                b"<190>1 2026-06-17T10:00:01.000000+00:00 host app web.1 - cedar info".to_vec(),
            ],
        )
        .await;
    let record = |ts: &str, number: u8, text: &str, body: &str, trace: Option<&str>| {
        let mut r = serde_json::json!({
            "timeUnixNano": ts,
            "severityNumber": number,
            "severityText": text,
            "body": {"stringValue": body},
            "attributes": [{"key": "heroku.dyno.name", "value": {"stringValue": "web.2"}}],
        });
        if let Some(t) = trace {
            r["traceId"] = serde_json::Value::from(t);
        }
        r
    };
    ingester
        .post_otlp_json(
            "shop-web",
            &serde_json::json!({"resourceLogs": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-web"}}]},
                "scopeLogs": [{"logRecords": [
                    record("1781690402000000000", 17, "ERROR", "fir error", Some("5b8efff798038103d269b633813fc60c")),
                    record("1781690403000000000", 9, "INFO", "fir info", None),
                    record("1781690404000000000", 21, "FATAL", "fir fatal", None),
                ]}],
            }]}),
        )
        .await;
    assert!(ingester.stop().await > 0, "the ingester archived nothing");
    let database = format!("dp_fir_{run}");
    Catalog::new(env.glue_client())
        .ensure_table(
            &TableRef::new(&database, "heroku_logs"),
            &TableSpec::new(&env.bucket, &prefix)
                .with_apps(["shop-web"])
                .with_years(2026, 2027),
        )
        .await
        .expect("create the table with the operator's Catalog");

    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/athena.md"))
        .expect("docs/athena.md");
    let section = doc
        .split("### Fir apps (OTLP) in the same table")
        .nth(1)
        .expect("the Fir section of docs/athena.md");
    let sql = section
        .split("```sql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sql block in the Fir section")
        .trim()
        .trim_end_matches(';')
        .replace(
            "drainpipe.heroku_logs",
            &format!("\"{database}\".heroku_logs"),
        );
    let answer = trino.query(&sql).await.expect("the documented query runs");
    let s = |v: &[&str]| v.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        answer.rows,
        vec![
            s(&[
                "2026-06-17T10:00:00.000000Z",
                "web.1",
                "syslog 3",
                "NULL",
                "cedar error"
            ]),
            s(&[
                "2026-06-17T10:00:02.000000Z",
                "web.2",
                "ERROR",
                "5b8efff798038103d269b633813fc60c",
                "fir error"
            ]),
            s(&[
                "2026-06-17T10:00:04.000000Z",
                "web.2",
                "FATAL",
                "NULL",
                "fir fatal"
            ]),
        ],
    );
}
