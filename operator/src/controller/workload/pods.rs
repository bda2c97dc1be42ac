//! What the ready ingester pods of a LogDrain report on `/metrics`: one
//! small GET per pod per reconcile, read for the archive's freshness and
//! writability and the alert destinations the pods disabled (status/), and
//! the load the autoscaler decides on.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::autoscale::{PodRead, parse_load};
use crate::controller::Context;
use crate::controller::status::alerts::parse_disabled;
use crate::controller::status::freshness::parse_last_objects;
use crate::controller::status::writable::{Probe, parse_probe};
use crate::resources;

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
    /// Alert rules whose destination some pod disabled, with Slack's
    /// reason (status/alerts.rs).
    pub(crate) disabled: BTreeMap<String, String>,
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
    let mut disabled = BTreeMap::new();
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
        disabled.extend(parse_disabled(&text));
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
        disabled,
    }
}
