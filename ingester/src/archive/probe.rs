//! The write probe behind the operator's `ArchiveWritable`: at start-up and
//! every `--archive-probe-interval` the ingester writes one small object
//! under `{prefix}_drainpipe-probe/` (a folder no Glue partition names, see
//! `contract::schema::PROBE_FOLDER`) and deletes it again. This is the
//! runbook's "simulate the writer's `s3:PutObject`", done by the writer
//! itself with its real credentials, so a bucket policy, an IAM policy, a
//! KMS key or an SCP that denies it all show the same way.
//!
//! A denied delete does not make the archive unwritable (uploads never
//! delete): it is reported separately, and the probe key is the same for the
//! whole life of the process, so at most one object per process is left.

use std::sync::Arc;
use std::time::Duration;

use drainpipe_contract::schema::PROBE_FOLDER;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::archive::backend::{Archive, StoreError};
use crate::telemetry::metrics::{Metrics, ProbeLabels};

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeOutcome {
    pub(crate) write: Result<(), StoreError>,
    /// `None` when the write failed (nothing to delete).
    pub(crate) delete: Option<Result<(), StoreError>>,
}

impl ProbeOutcome {
    pub(crate) fn writable(&self) -> bool {
        self.write.is_ok()
    }

    /// The metric labels: what failed and how, never the error's text.
    pub(crate) fn labels(&self, archive: &Archive) -> ProbeLabels {
        let (put, del) = archive.probe_actions();
        let (result, action, code) = match &self.write {
            Ok(()) => ("written", "", String::new()),
            Err(e) if e.denied => ("denied", put, e.code.clone()),
            Err(e) => ("failed", put, e.code.clone()),
        };
        let (delete, delete_action) = match &self.delete {
            None => ("", ""),
            Some(Ok(())) => ("deleted", ""),
            Some(Err(e)) if e.denied => ("denied", del),
            Some(Err(_)) => ("failed", del),
        };
        ProbeLabels {
            result,
            action,
            code,
            delete,
            delete_action,
        }
    }
}

/// The probe object's key: one per process, below the probe folder.
pub(crate) fn probe_key(prefix: &str, id: uuid::Uuid) -> String {
    format!("{prefix}{PROBE_FOLDER}{id}")
}

/// Writes the probe object and deletes it.
pub(crate) async fn probe_once(archive: &Archive, key: &str) -> ProbeOutcome {
    let write = archive.write_probe(key).await;
    let delete = match write {
        Ok(()) => Some(archive.delete_probe(key).await),
        Err(_) => None,
    };
    ProbeOutcome { write, delete }
}

/// Records `outcome` in the metrics (the one info series replaced).
pub(crate) fn record(metrics: &Metrics, archive: &Archive, outcome: &ProbeOutcome, now: i64) {
    metrics.archive_writable.set(i64::from(outcome.writable()));
    metrics.archive_probe_time.set(now);
    metrics.archive_probe.clear();
    metrics
        .archive_probe
        .get_or_create(&outcome.labels(archive))
        .set(1);
}

fn log(archive: &Archive, key: &str, outcome: &ProbeOutcome, previous: Option<&ProbeOutcome>) {
    let (put, del) = archive.probe_actions();
    let changed = previous.is_none_or(|p| p.labels(archive) != outcome.labels(archive));
    match &outcome.write {
        Err(e) if changed => tracing::warn!(
            code = %e.code,
            error = %e.detail,
            "archive not writable: the write probe {key} was refused ({put}); uploads will fail the same way and wait in the write-ahead log"
        ),
        Err(_) => {}
        Ok(()) if changed => tracing::info!(
            "archive writable: wrote the write probe {key} in {}",
            archive.describe()
        ),
        Ok(()) => {}
    }
    if let Some(Err(e)) = &outcome.delete
        && changed
    {
        tracing::warn!(
            code = %e.code,
            error = %e.detail,
            "cannot delete the write probe {key} ({del}): it stays until a lifecycle rule expires it; the archive is still writable"
        );
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Probes now and then every `interval` until `stop`.
pub(crate) fn start(
    archive: Arc<Archive>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let key = probe_key(archive.prefix(), uuid::Uuid::new_v4());
    tokio::spawn(async move {
        let mut previous: Option<ProbeOutcome> = None;
        loop {
            let outcome = tokio::select! {
                o = probe_once(&archive, &key) => o,
                () = stop.cancelled() => return,
            };
            record(&metrics, &archive, &outcome, unix_now());
            log(&archive, &key, &outcome, previous.as_ref());
            previous = Some(outcome);
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = stop.cancelled() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn folder() -> (tempfile::TempDir, Archive) {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Archive::from_url(&format!("file://{}", dir.path().display()))
            .await
            .expect("file url");
        (dir, a)
    }

    #[tokio::test]
    async fn a_writable_folder_is_probed_and_left_clean() {
        let (dir, a) = folder().await;
        let key = probe_key(a.prefix(), uuid::Uuid::nil());
        assert_eq!(
            key,
            "logs/_drainpipe-probe/00000000-0000-0000-0000-000000000000"
        );
        let o = probe_once(&a, &key).await;
        assert!(o.writable(), "{o:?}");
        assert_eq!(o.delete, Some(Ok(())));
        assert!(!dir.path().join(&key).exists(), "the probe is deleted");
        let m = Metrics::new();
        record(&m, &a, &o, 1_764_633_600);
        let text = m.render();
        for line in [
            "drainpipe_archive_writable 1",
            "drainpipe_archive_probe_timestamp_seconds 1764633600",
            "drainpipe_archive_probe_info{result=\"written\",action=\"\",code=\"\",delete=\"deleted\",delete_action=\"\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_folder_that_cannot_take_the_probe_is_not_writable() {
        let (dir, a) = folder().await;
        // A file where the probe folder should be: the write fails, as for
        // any user (root included, whom permissions would not stop).
        std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
        std::fs::write(dir.path().join("logs/_drainpipe-probe"), b"x").expect("file");
        let key = probe_key(a.prefix(), uuid::Uuid::nil());
        let o = probe_once(&a, &key).await;
        assert!(!o.writable());
        assert_eq!(o.delete, None, "nothing written, nothing to delete");
        let labels = o.labels(&a);
        assert_eq!((labels.result, labels.action), ("failed", "write"));
        let m = Metrics::new();
        record(&m, &a, &o, 1);
        record(&m, &a, &o, 2);
        let text = m.render();
        assert!(text.contains("drainpipe_archive_writable 0"), "{text}");
        assert_eq!(
            text.matches("drainpipe_archive_probe_info{").count(),
            1,
            "one info series: {text}"
        );
    }

    #[tokio::test]
    async fn denied_writes_and_deletes_name_the_s3_action() {
        let a = Archive::from_url("s3://bucket/logs/").await.expect("s3");
        let denied = StoreError {
            denied: true,
            code: "AccessDenied".into(),
            detail: "Access Denied".into(),
        };
        let o = ProbeOutcome {
            write: Err(denied.clone()),
            delete: None,
        };
        let l = o.labels(&a);
        assert_eq!(
            (l.result, l.action, l.code.as_str()),
            ("denied", "s3:PutObject", "AccessDenied")
        );
        // A denied delete leaves the archive writable.
        let o = ProbeOutcome {
            write: Ok(()),
            delete: Some(Err(denied)),
        };
        assert!(o.writable());
        let l = o.labels(&a);
        assert_eq!(
            (l.result, l.delete, l.delete_action),
            ("written", "denied", "s3:DeleteObject")
        );
    }
}
