//! `ArchiveFresh`: has every app had an object stored recently? The
//! ingester pods export `drainpipe_archive_last_object_timestamp_seconds`
//! per app; the operator reads each ready pod's `/metrics` (one small GET
//! per pod per reconcile, no S3 request, no S3 permission) and keeps the
//! newest per app in `status.lastObjects`. The same GET brings each pod's
//! write probe for `ArchiveWritable` (writable.rs) and its load counters
//! for the autoscaler (autoscale.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::conditions::Cond;
use super::writable::{Probe, parse_probe};
use crate::controller::Context;
use crate::controller::workload::autoscale::{PodRead, parse_load};
use crate::resources;

const METRIC: &str = "drainpipe_archive_last_object_timestamp_seconds";

/// The per-app timestamps in a Prometheus text exposition.
pub(crate) fn parse_last_objects(text: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(METRIC) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix("{app=\"") else {
            continue;
        };
        let Some((app, value)) = rest.split_once("\"} ") else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            let v = v as i64;
            let e = out.entry(app.to_string()).or_insert(v);
            *e = (*e).max(v);
        }
    }
    out
}

/// Fresh when every listed app had an object within `stale_after` of
/// `now`; an app no pod has archived for yet counts from `since` (when the
/// oldest pod read started), so a quiet new pod is not stale at once.
pub(crate) fn fresh_condition(
    apps: &BTreeSet<String>,
    last: &BTreeMap<String, i64>,
    now: i64,
    since: i64,
    stale_after: Duration,
    pods_read: usize,
) -> Cond {
    if pods_read == 0 {
        return Cond::failed(
            "NoIngesterMetrics",
            "no ready ingester pod answered on /metrics: see IngesterAvailable",
        );
    }
    let limit = i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX);
    let stale: Vec<String> = apps
        .iter()
        .filter(|app| now.saturating_sub(*last.get(*app).unwrap_or(&since)) > limit)
        .map(|app| match last.get(app) {
            // The time, not the age: an age changes on every reconcile, so
            // the status would be written (and the LogDrain reconciled
            // again) for as long as the app stays quiet.
            Some(t) => match k8s_openapi::jiff::Timestamp::from_second(*t) {
                Ok(at) => format!("{app} (last object at {at})"),
                Err(_) => format!("{app} (last object at {t} s since the epoch)"),
            },
            None => format!("{app} (no object since the ingesters started)"),
        })
        .collect();
    if stale.is_empty() {
        return Cond::ok(
            "ObjectsRecent",
            format!(
                "every app had an object stored within {}s",
                stale_after.as_secs()
            ),
        );
    }
    Cond::failed(
        "ArchiveStale",
        format!(
            "{} of {} apps have no object stored within {}s: {}",
            stale.len(),
            apps.len(),
            stale_after.as_secs(),
            stale.join(", ")
        ),
    )
}

/// What the ready ingester pods of a LogDrain report on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct PodReports {
    /// The newest object per app.
    pub(crate) last: BTreeMap<String, i64>,
    /// When the oldest pod read started.
    pub(crate) since: Option<i64>,
    /// How many pods answered.
    pub(crate) read: usize,
    /// Each answering pod's latest write probe (writable.rs).
    pub(crate) probes: Vec<(String, Option<Probe>)>,
    /// Each answering pod's load figures, terminating pods left out
    /// (autoscale.rs).
    pub(crate) loads: Vec<PodRead>,
    /// Pods being deleted: still flushing their log to the archive.
    pub(crate) flushing: usize,
}

/// What the ready ingester pods of LogDrain `name` report.
pub(crate) async fn read_pods(ctx: &Context, namespace: &str, name: &str) -> PodReports {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = match api
        .list(&ListParams::default().labels(&resources::selector_string(name)))
        .await
    {
        Ok(p) => p.items,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the ingester pods");
            return PodReports::default();
        }
    };
    let mut last = BTreeMap::new();
    let mut since: Option<i64> = None;
    let mut read = 0;
    let mut probes = Vec::new();
    let mut loads = Vec::new();
    let mut flushing = 0;
    for pod in pods {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if terminating {
            flushing += 1;
        }
        let Some(status) = pod.status else { continue };
        let Some(ip) = status.pod_ip.as_deref() else {
            continue;
        };
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            continue;
        }
        let url = format!("http://{ip}:{}/metrics", resources::INGESTER_PORT);
        let text = match ctx.pod_http.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            Ok(r) => {
                tracing::debug!(%url, status = %r.status(), "ingester metrics not readable");
                continue;
            }
            Err(e) => {
                tracing::debug!(%url, error = %e, "ingester metrics not reachable");
                continue;
            }
        };
        read += 1;
        // A terminating pod's load is leaving it: the scale decision
        // counts it as flushing instead.
        if let Some(load) = parse_load(&text).filter(|_| !terminating) {
            loads.push(PodRead {
                pod: pod_name.clone(),
                uid: pod_uid,
                at: Instant::now(),
                load,
            });
        }
        probes.push((pod_name, parse_probe(&text)));
        for (app, t) in parse_last_objects(&text) {
            let e = last.entry(app).or_insert(t);
            *e = (*e).max(t);
        }
        let started = status.start_time.map(|t| t.0.as_second());
        since = match (since, started) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    PodReports {
        last,
        since,
        read,
        probes,
        loads,
        flushing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_object_per_app_is_read_from_the_exposition() {
        let text = "# HELP drainpipe_archive_last_object_timestamp_seconds x\n\
                    drainpipe_archive_last_object_timestamp_seconds{app=\"shop-web\"} 1764633600\n\
                    drainpipe_archive_last_object_timestamp_seconds{app=\"shop-api\"} 1764630000\n\
                    drainpipe_archive_objects_total 3\n";
        let last = parse_last_objects(text);
        assert_eq!(last.len(), 2);
        assert_eq!(last["shop-web"], 1_764_633_600);
    }

    #[test]
    fn apps_without_a_recent_object_make_the_archive_stale() {
        let apps: BTreeSet<String> = ["a-app", "b-app"].iter().map(|s| s.to_string()).collect();
        let last = BTreeMap::from([("a-app".to_string(), 1000)]);
        let hour = Duration::from_secs(3600);
        // b-app never archived, but the pods started just now: not stale yet.
        let c = fresh_condition(&apps, &last, 1100, 1000, hour, 2);
        assert!(c.status, "{c:?}");
        let c = fresh_condition(&apps, &last, 1000 + 7200, 1000, hour, 2);
        assert!(!c.status);
        assert_eq!(c.reason, "ArchiveStale");
        assert!(
            c.message
                .contains("a-app (last object at 1970-01-01T00:16:40Z)"),
            "{}",
            c.message
        );
        assert!(
            c.message.contains("b-app (no object since"),
            "{}",
            c.message
        );
        assert_eq!(
            fresh_condition(&apps, &last, 0, 0, hour, 0).reason,
            "NoIngesterMetrics"
        );
    }
}
