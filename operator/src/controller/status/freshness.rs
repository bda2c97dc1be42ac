//! `ArchiveFresh`: has every app had an object stored recently? The
//! ingester pods export `drainpipe_archive_last_object_timestamp_seconds`
//! per app; the operator reads each ready pod's `/metrics` (one small GET
//! per pod per reconcile, no S3 request, no S3 permission) and keeps the
//! newest per app in `status.lastObjects`. The same GET brings each pod's
//! write probe for `ArchiveWritable` (writable.rs) and its load counters
//! for the autoscaler (autoscale.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::conditions::Cond;

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
