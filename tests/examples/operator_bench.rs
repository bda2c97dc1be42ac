//! Operator load benchmark (prints figures; asserts nothing): `--logdrains`
//! LogDrains (default 200) of `--apps` apps each (default 5) against the fake
//! Heroku API, the real kube-apiserver and kube-controller-manager, and moto's
//! Glue (all LogDrains on one shared table), with the controller running in
//! this process as `drainpipe-operator run` runs it.
//!
//! ```sh
//! scripts/testenv up && eval "$(scripts/testenv env)"
//! cargo run --release -p drainpipe-tests --example operator_bench -- \
//!     --logdrains 200 --apps 5 --resync-secs 60 --resyncs 2
//! # the fleet figures of docs/benchmarks.md: Heroku's budget, 150 ms answers,
//! # every fourth app on Fir, 3 minutes of steady state
//! cargo run --release -p drainpipe-tests --example operator_bench -- \
//!     --logdrains 100 --apps 10 --resync-secs 600 --window-secs 180 \
//!     --latency-ms 150 --fir-every 4 --refill-per-hour 4500
//! ```
//!
//! With `--refill-per-hour` the fake Heroku and the operator's client have
//! Heroku's bucket (that many tokens, refilled at that rate) and the
//! operator its default `--heroku-budget-share` (50%); without it the budget
//! is not the limit. `--window-secs` overrides `--resyncs` for the steady
//! window.
//!
//! Reports: time until every LogDrain is Ready (drains registered, catalog
//! in step, its ingester pod available: the benchmark plays the kubelet
//! and marks pods Ready as they appear); Heroku requests per app on the
//! first apply (goal: one list and one create); Heroku requests per app per
//! resync afterwards (goal: at most one list, no writes); the process's
//! resident memory before the controller starts and at its peak.

use std::time::{Duration, Instant};

use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::operator::{Harness, condition_is, ready_pod_status, status_drains};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

struct Args {
    logdrains: usize,
    apps: usize,
    resync: Duration,
    resyncs: u32,
    window: Option<Duration>,
    latency: Duration,
    fir_every: usize,
    refill_per_hour: Option<u32>,
}

fn args() -> Args {
    let mut a = Args {
        logdrains: 200,
        apps: 5,
        resync: Duration::from_secs(60),
        resyncs: 2,
        window: None,
        latency: Duration::ZERO,
        fir_every: 0,
        refill_per_hour: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<u64>().ok());
        let Some(v) = value else {
            panic!(
                "usage: operator_bench [--logdrains N] [--apps N] [--resync-secs S] [--resyncs N] [--window-secs S] [--latency-ms MS] [--fir-every N] [--refill-per-hour N]"
            );
        };
        match pair[0].as_str() {
            "--logdrains" => a.logdrains = v as usize,
            "--apps" => a.apps = v as usize,
            "--resync-secs" => a.resync = Duration::from_secs(v),
            "--resyncs" => a.resyncs = v as u32,
            "--window-secs" => a.window = Some(Duration::from_secs(v)),
            "--latency-ms" => a.latency = Duration::from_millis(v),
            "--fir-every" => a.fir_every = v as usize,
            "--refill-per-hour" => a.refill_per_hour = Some(v as u32),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// (VmRSS, VmHWM) of this process in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// This process's CPU time (user + system) in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here; 100
    // ticks a second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Mutating requests the apiserver has served (its
/// `apiserver_request_total`), by resource, pods left out (the benchmark's
/// own kubelet writes).
async fn apiserver_writes(client: &kube::Client) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let Ok(text) = client.request_text(request).await else {
        return out;
    };
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\"")[..])
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let verb = label("verb");
        let resource = label("resource");
        let subresource = label("subresource");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE")
            || resource == "pods"
        {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let key = if subresource.is_empty() {
            resource
        } else {
            format!("{resource}/{subresource}")
        };
        *out.entry(key).or_insert(0.0) += value;
    }
    out
}

fn difference(
    after: &std::collections::BTreeMap<String, f64>,
    before: &std::collections::BTreeMap<String, f64>,
) -> (f64, String) {
    let mut total = 0.0;
    let mut parts = Vec::new();
    for (k, v) in after {
        let d = v - before.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            total += d;
            parts.push(format!("{k} {d:.0}"));
        }
    }
    (total, parts.join(", "))
}

/// Plays the kubelet: marks every ingester pod not yet Ready as Running and
/// Ready. Returns how many pods exist.
async fn mark_pods_ready(pods: &Api<Pod>) -> usize {
    let Ok(list) = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=drainpipe-ingester"))
        .await
    else {
        return 0;
    };
    let status = ready_pod_status();
    let pending: Vec<String> = list
        .items
        .iter()
        .filter(|p| {
            !p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|p| p.name_any())
        .collect();
    futures::stream::iter(pending.into_iter().map(|name| {
        let status = &status;
        async move {
            // A pod replaced meanwhile is marked on the next round.
            let _ = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await;
        }
    }))
    .buffer_unordered(8)
    .collect::<Vec<()>>()
    .await;
    list.items.len()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let budget = a.refill_per_hour.unwrap_or(1_000_000);
    let fake = FakeOptions {
        // Established apps: no "log channel" 422 on the first create.
        log_channel_pending: false,
        budget,
        refill_per_hour: budget,
        latency: a.latency,
        ..FakeOptions::default()
    };
    let mut h = Harness::new("bench", fake).await;
    h.settings.resync = a.resync;
    // The defaults of `drainpipe-operator run`, not the tests' short waits.
    h.settings.retry_base = Duration::from_secs(5);
    h.heroku_options = drainpipe_operator::heroku::HerokuOptions::default();
    h.heroku_options.rate_limit.capacity = budget;
    h.heroku_options.rate_limit.refill_per_hour = budget;
    let total_apps = a.logdrains * a.apps;
    let mut fir = 0;
    for i in 0..total_apps {
        let name = format!("bench-app-{i:05}");
        if a.fir_every > 0 && i % a.fir_every == a.fir_every - 1 {
            h.heroku.add_fir_app(&name);
            fir += 1;
        } else {
            h.heroku.add_app(&name);
        }
    }
    let writes_at_start = apiserver_writes(&h.client).await;
    let cpu_at_start = cpu_seconds();
    let (rss_before, _) = memory_kib();
    h.start();
    let ctx = h.ctx.clone().expect("controller context");

    let started = Instant::now();
    let specs: Vec<(String, serde_json::Value)> = (0..a.logdrains)
        .map(|l| {
            let apps: Vec<String> = (0..a.apps)
                .map(|i| format!("bench-app-{:05}", l * a.apps + i))
                .collect();
            let refs: Vec<&str> = apps.iter().map(String::as_str).collect();
            let mut spec = h.spec(&refs, Some("logs"));
            spec["ingester"]["replicas"] = json!(1);
            // Teardown should not spend another thousand Heroku calls.
            spec["deletionPolicy"] = json!("Retain");
            (format!("bench-{l:04}"), spec)
        })
        .collect();
    futures::stream::iter(specs.into_iter().map(|(name, spec)| {
        let h = &h;
        async move {
            h.apply(&name, spec).await;
        }
    }))
    .buffer_unordered(8)
    .collect::<Vec<()>>()
    .await;
    let applied = started.elapsed();

    let api = h.logdrains();
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &h.ns);
    let mut registered_at = None;
    loop {
        mark_pods_ready(&pods).await;
        let list = api.list(&ListParams::default()).await.expect("list");
        let registered = list
            .items
            .iter()
            .filter(|ld| {
                condition_is(ld, "DrainsRegistered", "True")
                    && condition_is(ld, "CatalogSynced", "True")
                    && status_drains(ld).len() == a.apps
            })
            .count();
        if registered == a.logdrains && registered_at.is_none() {
            registered_at = Some(started.elapsed());
        }
        let ready = list
            .items
            .iter()
            .filter(|ld| condition_is(ld, "Ready", "True"))
            .count();
        if ready == a.logdrains && registered == a.logdrains {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            panic!(
                "after 30 minutes: {registered} of {} LogDrains registered, {ready} Ready",
                a.logdrains
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converged = started.elapsed();
    // Reconciles still queued by the last status changes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let first = h.heroku.counts();
    let first_reconciles = ctx.metrics.reconciles.get();
    let first_glue_updates = ctx.metrics.glue_updates.get();
    let projected = h.projected_apps("logs").await.map(|s| s.len()).unwrap_or(0);
    let writes_settled = apiserver_writes(&h.client).await;
    let (first_writes, first_writes_by) = difference(&writes_settled, &writes_at_start);
    let cpu_settled = cpu_seconds();

    h.heroku.reset_counts();
    let reconciles_before = ctx.metrics.reconciles.get();
    let window = a.window.unwrap_or(a.resync * a.resyncs);
    tokio::time::sleep(window).await;
    let later = h.heroku.counts();
    let reconciles = ctx.metrics.reconciles.get() - reconciles_before;
    let (steady_writes, steady_writes_by) =
        difference(&apiserver_writes(&h.client).await, &writes_settled);
    let cpu_steady = cpu_seconds() - cpu_settled;
    let (_, peak) = memory_kib();

    let per_app = |n: u64| n as f64 / total_apps as f64;
    // Each reconcile of a LogDrain checks its apps at most once, so the
    // requests of one resync are the window's divided by how many times
    // each LogDrain was reconciled in it.
    let rounds = reconciles as f64 / a.logdrains as f64;
    let per_resync = |n: u64| per_app(n) / rounds.max(f64::MIN_POSITIVE);
    println!(
        "operator benchmark: {} LogDrains x {} apps = {total_apps} apps ({fir} on Fir), resync {:?}, Heroku answering in {:?}, budget {}",
        a.logdrains,
        a.apps,
        a.resync,
        a.latency,
        a.refill_per_hour
            .map_or("not the limit".to_string(), |b| format!(
                "{b} an hour, 50% for checks"
            ))
    );
    println!(
        "  applied all LogDrains in           {:.1} s",
        applied.as_secs_f64()
    );
    println!(
        "  all drains registered + catalog    {:.1} s",
        registered_at.unwrap_or(converged).as_secs_f64()
    );
    println!(
        "  all Ready (ingester pods ready)    {:.1} s",
        converged.as_secs_f64()
    );
    println!(
        "  first apply, per app: {:.2} requests ({:.2} lists, {:.2} creates, {:.2} deletes; {} requests in all, {} throttled)",
        per_app(first.total),
        per_app(first.list),
        per_app(first.create),
        per_app(first.delete),
        first.total,
        first.throttled
    );
    println!(
        "  first apply: {first_reconciles} reconciles ({:.1} per LogDrain), {first_glue_updates} Glue table updates",
        first_reconciles as f64 / a.logdrains as f64
    );
    println!("  Glue projection: {projected} apps");
    println!(
        "  first apply: {first_writes:.0} apiserver writes ({:.1} per LogDrain: {first_writes_by}), {:.1} s CPU in this process",
        first_writes / a.logdrains as f64,
        cpu_settled - cpu_at_start
    );
    println!(
        "  steady window: {steady_writes:.0} apiserver writes ({steady_writes_by}), {:.0} Heroku requests an hour, {:.1} s CPU ({:.1}% of a core), check interval {} s",
        later.total as f64 * 3600.0 / window.as_secs_f64(),
        cpu_steady,
        cpu_steady * 100.0 / window.as_secs_f64(),
        ctx.metrics.check_interval.get()
    );
    println!(
        "  {:.0} s after settling ({} resync periods): {} reconciles ({rounds:.2} per LogDrain), {} Heroku requests ({} lists, {} creates, {} deletes)",
        window.as_secs_f64(),
        a.resyncs,
        reconciles,
        later.total,
        later.list,
        later.create,
        later.delete
    );
    println!(
        "  per resync, per app: {:.2} requests ({:.2} lists, {:.2} creates, {:.2} deletes)",
        per_resync(later.total),
        per_resync(later.list),
        per_resync(later.create),
        per_resync(later.delete)
    );
    println!(
        "  resident memory: {} MiB before the controller started, {} MiB peak (controller, fake Heroku, this client)",
        rss_before / 1024,
        peak / 1024
    );
    h.teardown().await;
}
