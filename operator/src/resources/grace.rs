//! How big an ingester's buffer may grow and how long its pod gets to
//! stop: `--wal-max-bytes` from the buffer volume's size, the `preStop`
//! sleep, and a `terminationGracePeriodSeconds` long enough to upload a
//! full buffer.

use k8s_openapi::api::core::v1::{Lifecycle, LifecycleHandler, SleepAction};

use crate::crd::LogDrain;

/// Parses the Kubernetes quantity forms people write for volume sizes
/// (`512Mi`, `2Gi`, `1G`, `1073741824`); `None` for anything fancier.
pub(crate) fn quantity_bytes(q: &str) -> Option<u64> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (digits, suffix) = q.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}
/// The ingester's `--wal-max-bytes`: 80% of the buffer volume (the claim's
/// size, else the emptyDir's limit); `None` for a size written in a form
/// `quantity_bytes` does not read (the ingester's default applies).
pub(crate) fn wal_max_bytes(ld: &LogDrain) -> Option<u64> {
    let buffer = &ld.spec.ingester.buffer_storage;
    let size = match &buffer.persistent_volume_claim {
        Some(claim) => &claim.size,
        None => &buffer.size_limit,
    };
    quantity_bytes(&size.0).map(|bytes| bytes / 10 * 8)
}
/// The `preStop` sleep: on deletion the pod leaves the Service's endpoints
/// at once, but kube-proxy, Ingress controllers and cloud load balancers
/// learn it over a few seconds; until then they still send to the pod,
/// which keeps accepting. Only then does the kubelet send SIGTERM.
pub(crate) const PRE_STOP_SECONDS: i64 = 10;

/// Upload rate a stopping ingester is assumed to reach, in bytes of log per
/// second (parse, gzip level 1 and store; docs/benchmarks.md measures far
/// more per core, this leaves room for a slow link or a busy node).
pub(crate) const ASSUMED_UPLOAD_BYTES_PER_SECOND: u64 = 16 << 20;

/// After SIGTERM, before the flush: requests in flight may take up to the
/// ingester's 10 s shutdown grace, and the last objects need their uploads.
const SHUTDOWN_MARGIN_SECONDS: i64 = 30;

/// `terminationGracePeriodSeconds`: the `preStop` sleep, plus the margin,
/// plus the time to upload a full buffer at the assumed rate:
/// `10 + 30 + ceil(wal_max_bytes / 16 MiB/s)` (143 s for the default 2Gi
/// emptyDir). A buffer of unknown size keeps the earlier fixed 120 s.
pub(crate) fn grace_period_seconds(wal_max_bytes: Option<u64>) -> i64 {
    let Some(bytes) = wal_max_bytes else {
        return 120;
    };
    let upload = bytes.div_ceil(ASSUMED_UPLOAD_BYTES_PER_SECOND);
    PRE_STOP_SECONDS
        .saturating_add(SHUTDOWN_MARGIN_SECONDS)
        .saturating_add(i64::try_from(upload).unwrap_or(i64::MAX))
}

/// The container's `preStop` hook: the kubelet's own sleep (Kubernetes
/// 1.30+), as the image has no shell and no `sleep` binary.
pub(super) fn pre_stop_sleep() -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            sleep: Some(SleepAction {
                seconds: PRE_STOP_SECONDS,
            }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::Owner;
    use crate::resources::deployment;
    use crate::resources::fixtures::{defaults, logdrain, pod_of, with_claim};

    #[test]
    fn pods_sleep_before_sigterm_and_get_time_to_upload_a_full_buffer() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let pod = pod_of(deployment(&owner, &ld, &defaults()));
        let sleep = pod.containers[0]
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .map(|s| s.seconds);
        assert_eq!(sleep, Some(PRE_STOP_SECONDS));
        // 1Gi emptyDir: 80% is 858993459 bytes, 52 s at 16 MiB/s.
        assert_eq!(pod.termination_grace_period_seconds, Some(10 + 30 + 52));

        assert_eq!(grace_period_seconds(Some(0)), 40);
        assert_eq!(grace_period_seconds(Some(1)), 41);
        assert_eq!(grace_period_seconds(Some(16 << 20)), 41);
        // The default 2Gi emptyDir.
        assert_eq!(grace_period_seconds(Some((2u64 << 30) / 10 * 8)), 143);
        assert_eq!(grace_period_seconds(None), 120);
        // A 100Gi claim: the grace period follows the buffer.
        let big = (100u64 << 30) / 10 * 8;
        assert_eq!(grace_period_seconds(Some(big)), 40 + 5120);
        let mut ld = with_claim(None);
        ld.spec.ingester.buffer_storage.persistent_volume_claim =
            Some(serde_json::from_value(json!({"size": "100Gi"})).expect("claim"));
        let pod = pod_of(deployment(&owner, &ld, &defaults()));
        assert_eq!(pod.termination_grace_period_seconds, Some(40 + 5120));
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("2Gi"), Some(2 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1024"), Some(1024));
        assert_eq!(quantity_bytes("1.5Gi"), None);
        assert_eq!(quantity_bytes("1e9"), None);
    }
}
