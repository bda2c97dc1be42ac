//! The bytes Trino reads for every documented query (docs/athena.md), gzip JSON against Parquet,
//! before and after compaction, for one corpus archived both ways in the same run (issue 24).
//!
//! ```sh
//! scripts/bench-archive [MESSAGES_PER_APP_DAY] [POST_SECONDS]
//! cargo run --release -p drainpipe-tests --example archive_bytes -- [MESSAGES_PER_APP_DAY] [POST_SECONDS]
//! ```
//!
//! Needs the test environment (`scripts/testenv up`: MinIO, moto for Glue, Trino).
//!
//! 1. A corpus for the apps and days the documented queries filter on (`billing-api`,
//!    `shop-web`, `shop-worker`; 2026-11-21 and 22): `MESSAGES_PER_APP_DAY` (default 200,000)
//!    Logplex messages per app and day from `LogplexGen` (router, app and platform mix), in
//!    requests of 400 messages spread over the day, plus the lines some queries look for and
//!    the generator has no reason to make: 401/403/429 responses, slow requests, billing
//!    `event=charge_*` lines, deploys and releases, Logplex L10 notices.
//! 2. The same requests posted to two in-process ingesters, `--format json` and `--format
//!    parquet`, `--flush-interval 1s`, paced over `POST_SECONDS` (default 120): each app-day
//!    becomes many small objects, as on a real ingester.
//! 3. A JSON and a Parquet table from the operator's `Catalog::ensure_table`.
//! 4. Every documented query in Trino on both tables: the bytes it read
//!    (`physicalInputBytes` of the protocol's final stats).
//! 5. Both archives compacted (json to json, parquet to parquet; one object per closed day),
//!    timed, and every query again.
//! 6. Bytes stored per message and objects per app-day, before and after; and what each
//!    Parquet column costs a query once compacted.
//!
//! Prints tables ready for docs/benchmarks.md on standard output, progress on standard error.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use drainpipe_contract::compaction::CompactionReport;
use drainpipe_contract::schema::ArchiveFormat;
use drainpipe_ingester::samples::LogplexGen;
use drainpipe_operator::glue::{Catalog, TableRef, TableSpec};
use drainpipe_tests::athena_docs::{documented_queries, on_database};
use drainpipe_tests::env::TestEnv;
use drainpipe_tests::ingester::{InProcessIngester, compact};
use drainpipe_tests::trino::{QueryStats, Trino};

const APPS: [&str; 3] = ["billing-api", "shop-web", "shop-worker"];
/// The November 2026 days the documented queries name (`day = '21'`) and one more, which only
/// the month-wide queries read.
const DAYS: [u8; 2] = [21, 22];
const MESSAGES_PER_REQUEST: usize = 400;
const DAY_US: i64 = 86_400_000_000;
const FORMATS: [ArchiveFormat; 2] = [ArchiveFormat::Json, ArchiveFormat::Parquet];

// ---------------------------------------------------------------------------------------------
// The corpus.

/// xorshift64*, for the lines added to the generator's (the generator's own is private).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn seed(app: &str, day: u8, request: u64) -> u64 {
    // FNV-1a of the app, mixed with the day and the request number.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in app.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (u64::from(day) << 40) ^ request.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

fn day_start_us(day: u8) -> anyhow::Result<i64> {
    let date = time::Date::from_calendar_date(2026, time::Month::November, day)?;
    Ok(date.midnight().assume_utc().unix_timestamp() * 1_000_000)
}

/// Requests per app-day for `messages` messages.
fn requests_per_day(messages: u64) -> u64 {
    messages.div_ceil(MESSAGES_PER_REQUEST as u64)
}

/// Clients that fail to authenticate or get rate limited: a few addresses, many times each.
const AUTH_CLIENTS: [&str; 6] = [
    "203.0.113.7",
    "203.0.113.99",
    "198.51.100.23",
    "198.51.100.80",
    "192.0.2.44",
    "192.0.2.44, 10.1.2.3",
];

/// Request `i` of `n` for one app-day: `count` messages (frames without their trailing newline),
/// starting at the `i`th `n`th of the day.
fn request(app: &str, day: u8, i: u64, n: u64, count: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let start = day_start_us(day)? + (i as i64) * (DAY_US / n as i64);
    let mut generator = LogplexGen::new(seed(app, day, i), app, start);
    let mut rng = Rng(seed(app, day, i).rotate_left(17) | 1);
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(count);
    let mut line = Vec::with_capacity(1024);
    while frames.len() < count {
        line.clear();
        generator.message(&mut line);
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        // `<PRI>1 TIMESTAMP HOST ...`: the added lines take the generator's time.
        let ts = line
            .split(|&b| b == b' ')
            .nth(1)
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .context("a generated line without a timestamp")?;
        let first = frames.is_empty();
        frames.push(line.clone());
        for extra in extras(app, day, i, n, first, &ts, &mut rng) {
            if frames.len() < count {
                frames.push(extra.into_bytes());
            }
        }
    }
    Ok(frames)
}

/// Lines added after a generated one at `ts`.
fn extras(app: &str, day: u8, i: u64, n: u64, first: bool, ts: &str, rng: &mut Rng) -> Vec<String> {
    let mut out = Vec::new();
    let router = |rng: &mut Rng, status: u16, path: &str, service: u64, fwd: &str| {
        let rid = format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            rng.below(1 << 32),
            rng.below(1 << 16),
            rng.below(1 << 12),
            rng.below(1 << 12),
            rng.below(1 << 48)
        );
        format!(
            "<158>1 {ts} host heroku router - at=info method={} path=\"{path}\" host={app}.herokuapp.com request_id={rid} fwd=\"{fwd}\" dyno=web.{} connect={}ms service={service}ms status={status} bytes={} protocol=https",
            if rng.below(3) == 0 { "POST" } else { "GET" },
            1 + rng.below(4),
            rng.below(3),
            100 + rng.below(2_000)
        )
    };
    let roll = rng.below(1_000);
    // About 1 % of lines: authentication failures and rate limiting, from a few clients.
    if roll < 10 {
        let status = [401, 401, 403, 429][rng.below(4) as usize];
        let fwd = AUTH_CLIENTS[rng.below(AUTH_CLIENTS.len() as u64) as usize];
        let path = if status == 429 {
            "/api/v1/orders"
        } else {
            "/users/sign_in"
        };
        let service = 2 + rng.below(30);
        out.push(router(rng, status, path, service, fwd));
    }
    // shop-web: slow checkouts (2-9 s), 0.3 % of lines.
    if app == "shop-web" && (10..13).contains(&roll) {
        let service = 2_000 + rng.below(7_000);
        let fwd = format!("198.18.{}.{}", rng.below(256), 1 + rng.below(254));
        out.push(router(rng, 200, "/checkout/confirm", service, &fwd));
    }
    // billing-api: charges in logfmt, 2 % of lines, one in five failed.
    if app == "billing-api" && (20..40).contains(&roll) {
        let event = if rng.below(5) == 0 {
            "charge_failed"
        } else {
            "charge_ok"
        };
        out.push(format!(
            "<190>1 {ts} host app web.{} - level=info event={event} user_id=u{} amount_cents={} currency=EUR",
            1 + rng.below(2),
            rng.below(300),
            100 + rng.below(20_000)
        ));
    }
    if !first {
        return out;
    }
    // shop-web: four deploys a day, each a release and a dyno restart; a config change after
    // the second and a rollback after the last.
    let every = (n / 4).max(1);
    if app == "shop-web" && i % every == every / 2 {
        let k = i / every;
        let release = u64::from(day) * 10 + k;
        let api = |text: String| format!("<190>1 {ts} host app api - {text}");
        let dyno = |text: &str| format!("<45>1 {ts} host heroku web.1 - {text}");
        out.push(api(format!(
            "Deploy {:07x} by dev@example.com",
            rng.below(1 << 28)
        )));
        out.push(api(format!(
            "Release v{release} created by dev@example.com"
        )));
        out.push(dyno("Restarting"));
        out.push(dyno("State changed from up to starting"));
        out.push(dyno("Process exited with status 143"));
        out.push(dyno("State changed from starting to up"));
        if k == 1 {
            out.push(api(
                "Set FEATURE_CHECKOUT_V2 config vars by dev@example.com".to_owned(),
            ));
        }
        if k == 3 {
            out.push(api(format!(
                "Rollback to v{} by dev@example.com",
                release - 1
            )));
        }
    }
    // Every app: Logplex drop notices now and then.
    if i % 97 == 13 {
        out.push(format!(
            "<172>1 {ts} host heroku logplex - Error L10 (output buffer overflow): {} messages dropped since {ts}.",
            1 + rng.below(500)
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Archive, tables, objects.

struct Archived {
    prefix: String,
    objects: usize,
}

/// Posts the corpus to one ingester per format, paced over `post`, and stops them (their
/// objects go to MinIO).
async fn archive(
    env: &TestEnv,
    run: &str,
    messages: u64,
    post: Duration,
) -> anyhow::Result<(Vec<Archived>, u64, u64)> {
    let mut ingesters = Vec::new();
    for format in FORMATS {
        let prefix = format!("bench-archive-{run}/{format}/");
        let flags = ["--format", format.as_str(), "--flush-interval", "1s"].map(String::from);
        ingesters.push((
            prefix.clone(),
            InProcessIngester::start_with(env, &prefix, &flags).await,
        ));
    }
    let n = requests_per_day(messages);
    let total = n * (APPS.len() * DAYS.len()) as u64;
    let (mut sent, mut body_bytes, mut k) = (0u64, 0u64, 0u64);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        let count = if i + 1 == n {
            (messages - (n - 1) * MESSAGES_PER_REQUEST as u64) as usize
        } else {
            MESSAGES_PER_REQUEST
        };
        for day in DAYS {
            for app in APPS {
                tokio::time::sleep_until(start + post.mul_f64(k as f64 / total as f64)).await;
                let frames = request(app, day, i, n, count)?;
                sent += frames.len() as u64;
                body_bytes += frames
                    .iter()
                    .map(|f| (f.len() + 1 + (f.len() + 1).to_string().len() + 1) as u64)
                    .sum::<u64>();
                let [(_, a), (_, b)] = &ingesters[..] else {
                    bail!("two ingesters");
                };
                tokio::join!(a.post_logplex(app, &frames), b.post_logplex(app, &frames));
                k += 1;
                if k.is_multiple_of((total / 10).max(1)) {
                    eprintln!(
                        "archive_bytes: posted {k}/{total} requests in {:.0} s",
                        start.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    let mut out = Vec::new();
    for (prefix, ingester) in ingesters {
        let objects = ingester.stop().await;
        out.push(Archived { prefix, objects });
    }
    Ok((out, sent, body_bytes))
}

/// Archive objects under `prefix`: (folder, size) per object.
async fn objects(env: &TestEnv, prefix: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let s3 = env.s3_client();
    let mut out = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(&env.bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.context("list the archive")?.contents() {
            let key = o.key().unwrap_or_default();
            if key.ends_with(".json.gz") || key.ends_with(".parquet") {
                let folder = key.rsplit_once('/').map_or(key, |(f, _)| f);
                let size = o.size().unwrap_or(0).max(0) as u64;
                out.push((folder.to_owned(), size));
            }
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Stored {
    objects: usize,
    bytes: u64,
    /// Objects per app-day folder, sorted.
    per_day: Vec<usize>,
    /// The smallest and the largest object.
    sizes: (u64, u64),
}

async fn stored(env: &TestEnv, prefix: &str) -> anyhow::Result<Stored> {
    let list = objects(env, prefix).await?;
    let mut per_day: BTreeMap<&str, usize> = BTreeMap::new();
    for (folder, _) in &list {
        *per_day.entry(folder.as_str()).or_default() += 1;
    }
    let mut per_day: Vec<usize> = per_day.into_values().collect();
    per_day.sort_unstable();
    let sizes = (
        list.iter().map(|(_, s)| *s).min().unwrap_or(0),
        list.iter().map(|(_, s)| *s).max().unwrap_or(0),
    );
    Ok(Stored {
        objects: list.len(),
        bytes: list.iter().map(|(_, s)| s).sum(),
        per_day,
        sizes,
    })
}

// ---------------------------------------------------------------------------------------------
// Queries.

struct Run {
    stats: QueryStats,
    rows: usize,
}

/// Every documented query on each format's database, in docs order: (name, is a router query,
/// one run per format).
async fn run_queries(
    trino: &Trino,
    queries: &[(String, String)],
    databases: &[String],
) -> anyhow::Result<Vec<(String, bool, Vec<Run>)>> {
    let mut out = Vec::new();
    for (name, sql) in queries {
        let mut runs = Vec::new();
        for database in databases {
            let started = Instant::now();
            let (answer, stats) = trino
                .query_with_stats(&on_database(sql, database))
                .await
                .map_err(|e| anyhow::anyhow!("{name} on {database}: {e}"))?;
            if stats.state != "FINISHED" {
                bail!("{name} on {database}: final state {:?}", stats.state);
            }
            eprintln!(
                "archive_bytes: {name} on {database}: {} bytes read, {} rows, {:.1} s",
                stats.physical_input_bytes,
                answer.rows.len(),
                started.elapsed().as_secs_f64()
            );
            runs.push(Run {
                rows: answer.rows.len(),
                stats,
            });
        }
        out.push((name.clone(), sql.contains("proc_id = 'router'"), runs));
    }
    Ok(out)
}

/// What each column costs a query after compaction: for day 21 of the Parquet table, the bytes
/// Trino reads for `count(*)` (footers only), and for `count_if(COLUMN IS NOT NULL)` per data
/// column, less those footer bytes. Largest first.
async fn column_bytes(trino: &Trino, database: &str) -> anyhow::Result<(u64, Vec<(String, u64)>)> {
    let table =
        format!("\"{database}\".heroku_logs WHERE year = '2026' AND month = '11' AND day = '21'");
    let read = |sql: String| async move {
        trino
            .query_with_stats(&sql)
            .await
            .map(|(_, stats)| stats.physical_input_bytes)
            .map_err(|e| anyhow::anyhow!("{sql}: {e}"))
    };
    let footers = read(format!("SELECT count(*) FROM {table}")).await?;
    let mut columns = Vec::new();
    for field in drainpipe_contract::schema::data_columns() {
        let bytes = read(format!(
            "SELECT count_if(\"{}\" IS NOT NULL) FROM {table}",
            field.name
        ))
        .await?;
        columns.push((field.name.to_owned(), bytes.saturating_sub(footers)));
    }
    columns.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok((footers, columns))
}

// ---------------------------------------------------------------------------------------------
// Output.

fn mb(bytes: u64) -> String {
    let mb = bytes as f64 / 1e6;
    if mb >= 100.0 {
        format!("{mb:.0} MB")
    } else if mb >= 10.0 {
        format!("{mb:.1} MB")
    } else if mb >= 1.0 {
        format!("{mb:.2} MB")
    } else {
        format!("{:.0} kB", bytes as f64 / 1e3)
    }
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}x", a as f64 / b as f64)
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A markdown table with its columns padded: aligned as text, and ready for the docs.
/// `right[i]`: column `i` is right-aligned.
fn table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&width)
            .zip(right)
            .map(|((c, &w), &r)| {
                if r {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    // Each cell is padded by one space on either side: the rule spans the same width.
    let rule: Vec<String> = width
        .iter()
        .zip(right)
        .map(|(&w, &r)| {
            if r {
                format!("{}:", "-".repeat(w + 1))
            } else {
                "-".repeat(w + 2)
            }
        })
        .collect();
    out.push_str(&format!("|{}|\n", rule.join("|")));
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn query_table(results: &[(String, bool, Vec<Run>)]) -> String {
    let mut rows = Vec::new();
    let mut totals = [[0u64; 2]; 2]; // [all, router][json, parquet]
    let mut routers = 0;
    for (name, router, runs) in results {
        let (json, parquet) = (&runs[0], &runs[1]);
        let (j, p) = (
            json.stats.physical_input_bytes,
            parquet.stats.physical_input_bytes,
        );
        totals[0][0] += j;
        totals[0][1] += p;
        if *router {
            totals[1][0] += j;
            totals[1][1] += p;
            routers += 1;
        }
        let answer = if json.rows == parquet.rows {
            json.rows.to_string()
        } else {
            format!("{} / {}", json.rows, parquet.rows)
        };
        rows.push(vec![
            format!("{name}{}", if *router { " (R)" } else { "" }),
            mb(j),
            mb(p),
            ratio(j, p),
            format!("{:.1}", json.stats.elapsed_ms as f64 / 1e3),
            format!("{:.1}", parquet.stats.elapsed_ms as f64 / 1e3),
            answer,
        ]);
    }
    for (label, [j, p]) in [
        (format!("all {} queries", results.len()), totals[0]),
        (format!("the {routers} router queries (R)"), totals[1]),
    ] {
        rows.push(vec![
            format!("**{label}**"),
            mb(j),
            mb(p),
            format!("**{}**", ratio(j, p)),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    table(
        &[
            "query",
            "JSON read",
            "Parquet read",
            "JSON / Parquet",
            "JSON s",
            "Parquet s",
            "rows",
        ],
        &[false, true, true, true, true, true, true],
        &rows,
    )
}

fn spread(per_day: &[usize]) -> String {
    match per_day {
        [] => "-".to_owned(),
        v => format!("{} / {} / {}", v[0], v[v.len() / 2], v[v.len() - 1]),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn memory_gib() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or_else(
            || "?".to_owned(),
            |kb| format!("{:.0}", kb / 1024.0 / 1024.0),
        )
}

// ---------------------------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let messages: u64 = match args.next() {
        Some(a) => a
            .replace(['_', ','], "")
            .parse()
            .with_context(|| format!("MESSAGES_PER_APP_DAY must be a number, not {a:?}"))?,
        None => 200_000,
    };
    let post = Duration::from_secs(match args.next() {
        Some(a) => a
            .parse()
            .with_context(|| format!("POST_SECONDS must be a number, not {a:?}"))?,
        None => 120,
    });
    if messages < MESSAGES_PER_REQUEST as u64 * 8 {
        bail!("MESSAGES_PER_APP_DAY below {}", MESSAGES_PER_REQUEST * 8);
    }
    let env = TestEnv::require();
    let trino = Trino::new(env.trino());
    let queries = documented_queries().map_err(anyhow::Error::msg)?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let run = &run[..12];
    let wall = Instant::now();

    eprintln!(
        "archive_bytes: {messages} messages per app-day, {} app-days, posted over {} s",
        APPS.len() * DAYS.len(),
        post.as_secs()
    );
    let (archived, sent, body_bytes) = archive(&env, run, messages, post).await?;
    let post_secs = wall.elapsed().as_secs_f64();

    let mut databases = Vec::new();
    for (format, a) in FORMATS.iter().zip(&archived) {
        let database = format!("dp_bench_{run}_{format}");
        let spec = TableSpec::new(&env.bucket, &a.prefix)
            .with_apps(APPS)
            .with_years(2026, 2027)
            .with_format(*format);
        Catalog::new(env.glue_client())
            .ensure_table(&TableRef::new(&database, "heroku_logs"), &spec)
            .await
            .with_context(|| format!("create the {format} table"))?;
        databases.push(database);
    }
    let trino_version = trino
        .query("SELECT node_version FROM system.runtime.nodes LIMIT 1")
        .await
        .ok()
        .and_then(|a| a.rows.first().and_then(|r| r.first()).cloned())
        .unwrap_or_else(|| "?".to_owned());

    let mut before = Vec::new();
    for a in &archived {
        before.push(stored(&env, &a.prefix).await?);
    }
    let before_queries = run_queries(&trino, &queries, &databases).await?;

    let mut reports: Vec<(CompactionReport, f64)> = Vec::new();
    for (format, a) in FORMATS.iter().zip(&archived) {
        eprintln!("archive_bytes: compacting {format}");
        let t = Instant::now();
        let report = compact(&env, &a.prefix, *format).await;
        let secs = t.elapsed().as_secs_f64();
        if !report.succeeded() {
            bail!("{format} compaction failed: {report:?}");
        }
        reports.push((report, secs));
    }
    let mut after = Vec::new();
    for a in &archived {
        after.push(stored(&env, &a.prefix).await?);
    }
    let after_queries = run_queries(&trino, &queries, &databases).await?;
    eprintln!("archive_bytes: bytes per column");
    let (footers, columns) = column_bytes(&trino, &databases[1]).await?;

    // -- Report -------------------------------------------------------------------------------
    let mut out = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    out.push_str(&format!(
        "command: scripts/bench-archive {messages} {} (cargo run --release -p drainpipe-tests \
         --example archive_bytes -- {messages} {})\n",
        post.as_secs(),
        post.as_secs()
    ));
    out.push_str(&format!(
        "machine: {cpus} vCPUs \"{}\", {} GiB; Trino {trino_version} (test environment: MinIO, moto)\n",
        cpu_model(),
        memory_gib()
    ));
    out.push_str(&format!(
        "corpus: {} apps x {} days x {} messages = {} messages, {} of Logplex bodies \
         ({:.0} bytes a message), {} requests of {MESSAGES_PER_REQUEST} posted to both ingesters \
         over {:.0} s (--flush-interval 1s, {} workers each)\n",
        APPS.len(),
        DAYS.len(),
        thousands(messages),
        thousands(sent),
        mb(body_bytes),
        body_bytes as f64 / sent as f64,
        thousands(requests_per_day(messages) * (APPS.len() * DAYS.len()) as u64),
        post_secs,
        cpus.min(8),
    ));
    out.push_str(&format!(
        "archived: {} JSON objects, {} Parquet objects; whole run {:.0} s\n\n",
        archived[0].objects,
        archived[1].objects,
        wall.elapsed().as_secs_f64()
    ));

    out.push_str("Stored, before and after compaction:\n\n");
    let mut rows = Vec::new();
    for (when, set) in [("before", &before), ("after", &after)] {
        for (format, s) in FORMATS.iter().zip(set.iter()) {
            rows.push(vec![
                format!("{format}, {when}"),
                thousands(s.objects as u64),
                mb(s.bytes),
                format!("{:.1}", s.bytes as f64 / sent as f64),
                spread(&s.per_day),
                format!("{} - {}", mb(s.sizes.0), mb(s.sizes.1)),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "archive",
            "objects",
            "bytes",
            "bytes / message",
            "objects per app-day (min / median / max)",
            "object sizes",
        ],
        &[false, true, true, true, false, false],
        &rows,
    ));

    out.push_str("\nCompaction (one run per archive, every closed day into one object):\n\n");
    let rows: Vec<Vec<String>> = FORMATS
        .iter()
        .zip(&reports)
        .map(|(format, (r, secs))| {
            vec![
                format!("{format} to {format}"),
                format!(
                    "{} -> {}",
                    thousands(r.objects_merged),
                    thousands(r.objects_written)
                ),
                format!("{} -> {}", mb(r.bytes_before), mb(r.bytes_after)),
                thousands(r.records_verified),
                format!("{secs:.1}"),
                thousands((r.records_verified as f64 / secs) as u64),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "compaction",
            "objects",
            "bytes",
            "records verified",
            "seconds",
            "records/s",
        ],
        &[false, true, true, true, true, true],
        &rows,
    ));

    for (title, results) in [
        (
            "Bytes Trino read per documented query, before compaction",
            &before_queries,
        ),
        (
            "Bytes Trino read per documented query, after compaction",
            &after_queries,
        ),
    ] {
        out.push_str(&format!(
            "\n{title} (physicalInputBytes; (R): a router query; seconds: Trino's elapsed time; \
             rows: the answer's, JSON / Parquet where they differ):\n\n"
        ));
        out.push_str(&query_table(results));
    }

    // The day the documented queries filter on, one object per app.
    let day_messages = sent / DAYS.len() as u64;
    let column_total: u64 = columns.iter().map(|(_, b)| b).sum::<u64>() + footers;
    out.push_str(&format!(
        "\nWhat each Parquet column costs a query after compaction (day 21: {} objects, {} \
         messages; bytes read by `count_if(COLUMN IS NOT NULL)` less the {} that `count(*)` \
         reads, footers and page indexes):\n\n",
        APPS.len(),
        thousands(day_messages),
        mb(footers)
    ));
    let share = |b: u64| format!("{:.1} %", 100.0 * b as f64 / column_total as f64);
    let per_message = |b: u64| format!("{:.2}", b as f64 / day_messages as f64);
    let mut rows: Vec<Vec<String>> = columns
        .iter()
        .take(10)
        .map(|(c, b)| vec![format!("`{c}`"), mb(*b), per_message(*b), share(*b)])
        .collect();
    let rest: u64 = columns.iter().skip(10).map(|(_, b)| b).sum();
    rows.push(vec![
        format!("the other {} columns", columns.len().saturating_sub(10)),
        mb(rest),
        per_message(rest),
        share(rest),
    ]);
    rows.push(vec![
        "footers and page indexes".to_owned(),
        mb(footers),
        per_message(footers),
        share(footers),
    ]);
    if rest == 0 && columns.iter().all(|(_, b)| *b == 0) {
        out.push_str(&format!(
            "None: `count(*)` already read {}, the whole objects. Trino reads a Parquet file under \
             3 MB whole (`parquet.small-file-threshold`); use more MESSAGES_PER_APP_DAY.\n",
            mb(footers)
        ));
    } else {
        out.push_str(&table(
            &["column", "bytes", "bytes / message", "share"],
            &[false, true, true, true],
            &rows,
        ));
    }

    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
