//! `ArchiveWritable`: can the ingesters write to the archive prefix? Each
//! ingester pod proves it itself (a small object written under
//! `{prefix}_drainpipe-probe/` and deleted, at start-up and every 5
//! minutes) and exports the outcome on `/metrics`; the operator reads it
//! with the same GET that feeds `ArchiveFresh` (freshness.rs), so it needs
//! no S3 permission and sees exactly what the pods' own identity may do.

use std::collections::BTreeMap;

use drainpipe_contract::schema::PROBE_FOLDER;

use super::conditions::Cond;

/// The latest write probe one ingester pod reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) writable: bool,
    /// `written`, `denied` or `failed`.
    pub(crate) result: String,
    /// The refused action (`s3:PutObject`), empty when written.
    pub(crate) action: String,
    /// The store's error code (`AccessDenied`...).
    pub(crate) code: String,
    /// `deleted`, `denied`, `failed` or empty.
    pub(crate) delete: String,
    pub(crate) delete_action: String,
}

const WRITABLE: &str = "drainpipe_archive_writable";
const PROBE_TIME: &str = "drainpipe_archive_probe_timestamp_seconds";
const PROBE_INFO: &str = "drainpipe_archive_probe_info";

/// The probe in a pod's Prometheus text exposition; `None` before the
/// pod's first probe (timestamp 0) or from an ingester that does not probe.
pub(crate) fn parse_probe(text: &str) -> Option<Probe> {
    let mut writable = None;
    let mut at = 0.0_f64;
    let mut labels = BTreeMap::new();
    for line in text.lines() {
        if let Some(v) = sample(line, WRITABLE) {
            writable = Some(v.trim() == "1");
        } else if let Some(v) = sample(line, PROBE_TIME) {
            at = v.trim().parse().unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix(PROBE_INFO)
            && let Some((set, _)) = rest.strip_prefix('{').and_then(|r| r.split_once("} "))
        {
            labels = parse_labels(set);
        }
    }
    if at <= 0.0 {
        return None;
    }
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    Some(Probe {
        writable: writable?,
        result: label("result"),
        action: label("action"),
        code: label("code"),
        delete: label("delete"),
        delete_action: label("delete_action"),
    })
}

/// The value of an unlabelled sample `name VALUE`.
fn sample<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.strip_prefix(name)?.strip_prefix(' ')
}

/// `k="v",k2="v2"` (the ingester's values hold no quotes or commas).
pub(crate) fn parse_labels(set: &str) -> BTreeMap<String, String> {
    set.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

/// The condition from what each pod read reported (`None`: no probe yet).
/// Any pod refused makes it False (the pods share one identity, so one
/// refusal is every upload's fate); Unknown until a pod has probed.
/// `location` is `s3://bucket/prefix`. The message never changes while the
/// outcome holds, so a steady state writes no status.
pub(crate) fn writable_condition(
    probes: &[(String, Option<Probe>)],
    pods_read: usize,
    location: &str,
) -> Cond {
    if pods_read == 0 {
        return Cond::unknown(
            "Probing",
            "no ready ingester pod answered on /metrics yet: see IngesterAvailable",
        );
    }
    let reported: Vec<(&str, &Probe)> = probes
        .iter()
        .filter_map(|(pod, p)| Some((pod.as_str(), p.as_ref()?)))
        .collect();
    if reported.is_empty() {
        return Cond::unknown(
            "Probing",
            format!(
                "{pods_read} ingester pods answered but none has reported a write probe to {location} yet"
            ),
        );
    }
    // Pods with the same refusal are named together.
    let mut refusals: BTreeMap<(&str, &str, &str), Vec<&str>> = BTreeMap::new();
    for (pod, p) in &reported {
        if !p.writable {
            refusals
                .entry((p.result.as_str(), p.action.as_str(), p.code.as_str()))
                .or_default()
                .push(*pod);
        }
    }
    if !refusals.is_empty() {
        let denied = refusals.keys().any(|(result, _, _)| *result == "denied");
        let text = refusals
            .iter()
            .map(|((result, action, code), pods)| {
                let action = if action.is_empty() {
                    "the write"
                } else {
                    action
                };
                let how = if *result == "denied" {
                    "denied"
                } else {
                    "failed"
                };
                let code = if code.is_empty() {
                    String::new()
                } else {
                    format!(" ({code})")
                };
                format!(
                    "{action} to {location} {how}{code} for ingester pod{} {}",
                    if pods.len() == 1 { "" } else { "s" },
                    pods.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return if denied {
            Cond::failed(
                "WriteDenied",
                format!(
                    "{text}: grant the ingesters' identity s3:PutObject on {}*; uploads wait in the write-ahead log meanwhile",
                    resource_arn(location)
                ),
            )
        } else {
            Cond::failed(
                "WriteFailed",
                format!("{text}; uploads wait in the write-ahead log meanwhile"),
            )
        };
    }
    let mut message = format!(
        "{} of {pods_read} ingester pods wrote a probe object under {location}{PROBE_FOLDER}",
        reported.len()
    );
    if let Some((_, p)) = reported.iter().find(|(_, p)| p.delete == "denied") {
        let action = if p.delete_action.is_empty() {
            "the delete"
        } else {
            p.delete_action.as_str()
        };
        message.push_str(&format!(
            "; deleting it was denied ({action}): one probe object per pod start stays until a lifecycle rule or a person removes it"
        ));
    }
    Cond::ok("Writable", message)
}

/// `arn:aws:s3:::bucket/prefix` for `s3://bucket/prefix`.
fn resource_arn(location: &str) -> String {
    match location.strip_prefix("s3://") {
        Some(rest) => format!("arn:aws:s3:::{rest}"),
        None => location.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITTEN: &str = "# HELP drainpipe_archive_writable 1 when ...\n\
        # TYPE drainpipe_archive_writable gauge\n\
        drainpipe_archive_writable 1\n\
        drainpipe_archive_probe_timestamp_seconds 1764633600\n\
        drainpipe_archive_probe_info{result=\"written\",action=\"\",code=\"\",delete=\"deleted\",delete_action=\"\"} 1\n";

    const DENIED: &str = "drainpipe_archive_writable 0\n\
        drainpipe_archive_probe_timestamp_seconds 1764633600\n\
        drainpipe_archive_probe_info{result=\"denied\",action=\"s3:PutObject\",code=\"AccessDenied\",delete=\"\",delete_action=\"\"} 1\n";

    #[test]
    fn the_probe_is_read_from_the_exposition() {
        let p = parse_probe(WRITTEN).expect("probed");
        assert!(p.writable);
        assert_eq!(p.delete, "deleted");
        let p = parse_probe(DENIED).expect("probed");
        assert!(!p.writable);
        assert_eq!(
            (p.result.as_str(), p.action.as_str(), p.code.as_str()),
            ("denied", "s3:PutObject", "AccessDenied")
        );
        // Before the first probe, or an ingester that does not probe.
        assert_eq!(
            parse_probe(
                "drainpipe_archive_writable 0\ndrainpipe_archive_probe_timestamp_seconds 0\n"
            ),
            None
        );
        assert_eq!(parse_probe("drainpipe_archive_objects_total 3\n"), None);
    }

    fn pods(texts: &[(&str, &str)]) -> Vec<(String, Option<Probe>)> {
        texts
            .iter()
            .map(|(pod, text)| (pod.to_string(), parse_probe(text)))
            .collect()
    }

    const AT: &str = "s3://logs-bucket/logs/";

    #[test]
    fn one_refused_pod_makes_the_archive_unwritable_naming_the_action() {
        let c = writable_condition(
            &pods(&[("shop-ingester-a", WRITTEN), ("shop-ingester-b", DENIED)]),
            2,
            AT,
        );
        assert!(!c.status && !c.unknown);
        assert_eq!(c.reason, "WriteDenied");
        assert_eq!(
            c.message,
            "s3:PutObject to s3://logs-bucket/logs/ denied (AccessDenied) for ingester pod shop-ingester-b: \
             grant the ingesters' identity s3:PutObject on arn:aws:s3:::logs-bucket/logs/*; \
             uploads wait in the write-ahead log meanwhile"
        );
        let missing = DENIED
            .replace("denied", "failed")
            .replace("AccessDenied", "NoSuchBucket");
        let c = writable_condition(&pods(&[("a", &missing), ("b", &missing)]), 2, AT);
        assert_eq!(c.reason, "WriteFailed");
        assert!(
            c.message.contains("(NoSuchBucket) for ingester pods a, b"),
            "{}",
            c.message
        );
    }

    #[test]
    fn writable_when_every_reporting_pod_wrote_and_unknown_before_any_did() {
        let c = writable_condition(&pods(&[("a", WRITTEN), ("b", "")]), 2, AT);
        assert!(c.status, "{c:?}");
        assert_eq!(c.reason, "Writable");
        assert_eq!(
            c.message,
            "1 of 2 ingester pods wrote a probe object under s3://logs-bucket/logs/_drainpipe-probe/"
        );
        let kept = WRITTEN.replace(
            "delete=\"deleted\",delete_action=\"\"",
            "delete=\"denied\",delete_action=\"s3:DeleteObject\"",
        );
        let c = writable_condition(&pods(&[("a", &kept)]), 1, AT);
        assert!(c.status, "a denied delete is no unwritable archive");
        assert!(
            c.message
                .contains("deleting it was denied (s3:DeleteObject)"),
            "{}",
            c.message
        );
        let c = writable_condition(&pods(&[("a", "")]), 1, AT);
        assert!(c.unknown && !c.status);
        assert_eq!(c.reason, "Probing");
        let c = writable_condition(&[], 0, AT);
        assert!(c.unknown);
        assert!(c.message.contains("IngesterAvailable"), "{}", c.message);
    }
}
