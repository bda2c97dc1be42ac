//! `--ack archive`: no local log; a request is answered 200 once the object
//! holding its records is stored.
//!
//! Requests that arrive while earlier groups are being stored queue up and
//! are encoded together into shared objects (one per app and day), so a busy
//! ingester makes few, larger objects instead of one per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::alert::Alerts;
use crate::alert::tap::{Delta, Tap, Tapped};
use crate::archive::backend::Archive;
use crate::archive::objects::{DaySink, Finished, ObjectFormat, OpenObject, encode_entry};
use crate::durable::Entry;
use crate::parse::timestamp::Day;
use crate::telemetry::health::{RecentFailure, UNREADY_AFTER_FAILURE};
use crate::telemetry::metrics::Metrics;

/// Logplex gives up on a request after 5 s; answer 503 before that.
const DEADLINE: Duration = Duration::from_millis(4500);
/// Request bytes encoded into one group at most.
const MAX_GROUP_BYTES: usize = 32 << 20;

struct Pending {
    entry: Entry,
    arrived: Instant,
    done: oneshot::Sender<bool>,
}

pub struct Direct {
    /// None once closed.
    tx: Mutex<Option<mpsc::Sender<Pending>>>,
    failures: Arc<RecentFailure>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug, Clone)]
pub struct DirectOptions {
    pub object: ObjectFormat,
    /// Groups being stored at once.
    pub concurrency: usize,
}

impl Direct {
    pub(crate) fn start(
        archive: Arc<Archive>,
        metrics: Arc<Metrics>,
        alerts: Arc<Alerts>,
        options: DirectOptions,
    ) -> Arc<Direct> {
        let (tx, rx) = mpsc::channel(1024);
        let failures = Arc::new(RecentFailure::default());
        let task = tokio::spawn(group_loop(
            rx,
            archive,
            metrics,
            alerts,
            Arc::clone(&failures),
            options,
        ));
        Arc::new(Direct {
            tx: Mutex::new(Some(tx)),
            failures,
            task: Mutex::new(Some(task)),
        })
    }

    /// Store `entry`; Ok once it is in the archive.
    pub async fn submit(&self, entry: Entry) -> Result<(), ()> {
        let (done, wait) = oneshot::channel();
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tx.ok_or(())?
            .send(Pending {
                entry,
                arrived: Instant::now(),
                done,
            })
            .await
            .map_err(|_| ())?;
        match wait.await {
            Ok(true) => Ok(()),
            _ => Err(()),
        }
    }

    /// Readiness: no group failed just now.
    pub fn is_healthy(&self) -> bool {
        !self.failures.within(UNREADY_AFTER_FAILURE)
    }

    /// Stop taking requests; returns once every queued group is answered.
    pub async fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn group_loop(
    mut rx: mpsc::Receiver<Pending>,
    archive: Arc<Archive>,
    metrics: Arc<Metrics>,
    alerts: Arc<Alerts>,
    failures: Arc<RecentFailure>,
    options: DirectOptions,
) {
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            // Closed and drained: wait for the groups still being stored.
            drop(slot);
            let all = u32::try_from(options.concurrency.max(1)).unwrap_or(u32::MAX);
            let _ = slots.acquire_many(all).await;
            return;
        };
        let mut bytes = first.entry.body.len();
        let mut group = vec![first];
        while bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.entry.body.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let archive = Arc::clone(&archive);
        let metrics = Arc::clone(&metrics);
        let failures = Arc::clone(&failures);
        let alerts = Arc::clone(&alerts);
        let format = options.object;
        tokio::spawn(async move {
            store_group(group, &archive, &metrics, &alerts, &failures, format).await;
            drop(slot);
        });
    }
}

async fn store_group(
    group: Vec<Pending>,
    archive: &Archive,
    metrics: &Arc<Metrics>,
    alerts: &Arc<Alerts>,
    failures: &RecentFailure,
    format: ObjectFormat,
) {
    let deadline = group
        .iter()
        .map(|p| p.arrived)
        .min()
        .unwrap_or_else(Instant::now)
        + DEADLINE;
    let prefix = archive.prefix().to_owned();
    let (entries, waiters): (Vec<Entry>, Vec<oneshot::Sender<bool>>) =
        group.into_iter().map(|p| (p.entry, p.done)).unzip();
    let enc_metrics = Arc::clone(metrics);
    let enc_alerts = Arc::clone(alerts);
    let built = tokio::task::spawn_blocking(move || {
        build(&entries, format, &prefix, &enc_metrics, &enc_alerts)
    })
    .await;
    let Ok(Built {
        objects,
        unwritten,
        matched,
    }) = built
    else {
        for w in waiters {
            let _ = w.send(false);
        }
        return;
    };
    let results = futures::future::join_all(
        objects
            .iter()
            .map(|(object, _)| store_until(archive, metrics, object, deadline)),
    )
    .await;
    let mut ok = vec![true; waiters.len()];
    for &i in &unwritten {
        ok[i] = false;
    }
    for ((_, requests), stored) in objects.iter().zip(&results) {
        if !stored {
            for &i in requests {
                ok[i] = false;
            }
        }
    }
    if unwritten.is_empty() && results.iter().all(|r| *r) {
        failures.succeeded();
        // Only once stored: a refused group comes again from the client.
        alerts.offer(matched);
    } else {
        failures.failed();
    }
    for (w, ok) in waiters.into_iter().zip(ok) {
        let _ = w.send(ok);
    }
}

/// A group encoded: each object with the requests it holds, the requests
/// whose object could not be written (answered 503), and the alert matches.
struct Built {
    objects: Vec<(Finished, Vec<usize>)>,
    unwritten: Vec<usize>,
    matched: Vec<Delta>,
}

/// Encode a group into objects; each object lists the requests it holds.
fn build(
    entries: &[Entry],
    format: ObjectFormat,
    prefix: &str,
    metrics: &Metrics,
    alerts: &Alerts,
) -> Built {
    let mut objects: HashMap<(Arc<str>, Day), (OpenObject, Vec<usize>)> = HashMap::new();
    let mut sink = DaySink::new(format.format);
    let rules = alerts.rules();
    let mut tap = (!rules.is_empty()).then(|| Tap::new(rules));
    for (i, entry) in entries.iter().enumerate() {
        sink.days.clear();
        let stats = match tap.as_mut() {
            Some(tap) => encode_entry(
                entry,
                &mut Tapped {
                    inner: &mut sink,
                    tap,
                },
            ),
            None => encode_entry(entry, &mut sink),
        };
        metrics.record_batch(&stats);
        let app: Arc<str> = Arc::from(entry.app.as_str());
        for (day, rows) in sink.days.drain(..) {
            if rows.is_empty() {
                continue;
            }
            let (object, requests) = objects
                .entry((Arc::clone(&app), day))
                .or_insert_with(|| (OpenObject::new(Arc::clone(&app), day, format), Vec::new()));
            object.write(rows);
            requests.push(i);
        }
    }
    let mut finished = Vec::with_capacity(objects.len());
    let mut unwritten = Vec::new();
    for (object, requests) in objects.into_values() {
        match object.finish(prefix) {
            Ok(object) => finished.push((object, requests)),
            Err(e) => {
                // Its requests get 503 and come again; nothing is lost.
                tracing::error!(error = %e, "cannot write an archive object");
                unwritten.extend(requests);
            }
        }
    }
    Built {
        objects: finished,
        unwritten,
        matched: tap.map(Tap::finish).unwrap_or_default(),
    }
}

/// Try to store until `deadline`; false when it could not be done in time.
async fn store_until(
    archive: &Archive,
    metrics: &Metrics,
    object: &Finished,
    deadline: Instant,
) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, archive.put(&object.key, object.body.clone())).await {
            Ok(Ok(())) => {
                metrics
                    .upload_latency
                    .observe(started.elapsed().as_secs_f64());
                metrics.archive_objects.inc();
                metrics.archive_bytes.inc_by(object.body.len() as u64);
                return true;
            }
            Ok(Err(e)) => {
                metrics.upload_errors.inc();
                tracing::warn!(error = %e, "storing an archive object failed (--ack archive: requests get 503 if it keeps failing)");
            }
            Err(_) => {
                metrics.upload_errors.inc();
                tracing::warn!(key = %object.key, "storing an archive object timed out; answering 503");
                return false;
            }
        }
        tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
