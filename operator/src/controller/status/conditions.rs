//! Status conditions: what each part of a reconcile found, and `Ready`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::controller::truncate;
use crate::crd::LogDrain;

/// A condition's content before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cond {
    pub(crate) status: bool,
    /// Status `Unknown`: the operator could not find out (`status` is then
    /// false, and `Ready` does not count it as a failure).
    pub(crate) unknown: bool,
    pub(crate) reason: String,
    pub(crate) message: String,
}

impl Cond {
    pub(crate) fn ok(reason: &str, message: impl Into<String>) -> Cond {
        Cond {
            status: true,
            unknown: false,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn unknown(reason: &str, message: impl Into<String>) -> Cond {
        Cond {
            status: false,
            unknown: true,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn failed(reason: &str, message: impl Into<String>) -> Cond {
        Cond {
            status: false,
            unknown: false,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// A status condition; the transition time moves only when the status does.
pub(crate) fn condition(
    old: &[Condition],
    type_: &str,
    c: &Cond,
    generation: Option<i64>,
) -> Condition {
    let status = match (c.status, c.unknown) {
        (true, _) => "True",
        (false, true) => "Unknown",
        (false, false) => "False",
    };
    let last_transition_time = old
        .iter()
        .find(|o| o.type_ == type_ && o.status == status)
        .map(|o| o.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: c.reason.clone(),
        message: truncate(c.message.clone(), 32_000),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Ready means logs flow end to end: drains registered, the catalog (if
/// any) in step, an ingester pod available to receive them and the archive
/// writable. A part that is Unknown (not found out yet) does not fail it.
pub(crate) fn ready_condition(ld: &LogDrain, parts: &[&Cond]) -> Cond {
    if let Some(failed) = parts.iter().find(|c| !c.status && !c.unknown) {
        return Cond::failed(&failed.reason, failed.message.clone());
    }
    let s3 = &ld.spec.archive.s3;
    Cond::ok(
        "Ready",
        format!(
            "{} apps drain into s3://{}/{}",
            ld.spec.apps.len(),
            s3.bucket,
            s3.prefix
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::READY;
    use crate::controller::fixtures::ld;

    #[test]
    fn condition_keeps_transition_time_while_status_holds() {
        let first = condition(&[], READY, &Cond::failed("X", "x"), Some(1));
        let old = vec![Condition {
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            ..first.clone()
        }];
        let same = condition(&old, READY, &Cond::failed("Y", "y"), Some(2));
        assert_eq!(same.last_transition_time, Time(Timestamp::UNIX_EPOCH));
        assert_eq!(same.reason, "Y");
        let flipped = condition(&old, READY, &Cond::ok("Ready", "ok"), Some(2));
        assert_ne!(flipped.last_transition_time, Time(Timestamp::UNIX_EPOCH));
        assert_eq!(flipped.status, "True");
    }

    #[test]
    fn ready_takes_the_first_failing_reason() {
        let ld = ld(&["a-app"]);
        let ok = Cond::ok("Fine", "");
        let bad = Cond::failed("AppNotFound", "a-app: not found");
        let ing = Cond::failed("DeploymentUnavailable", "0 of 2");
        let r = ready_condition(&ld, &[&ok, &bad, &ing]);
        assert!(!r.status);
        assert_eq!(r.reason, "AppNotFound");
        let r = ready_condition(&ld, &[&ok, &ok]);
        assert!(r.status);
        // Not known yet is no failure; a reported one is.
        let probing = Cond::unknown("Probing", "no probe yet");
        assert!(ready_condition(&ld, &[&ok, &probing]).status);
        let denied = Cond::failed("WriteDenied", "s3:PutObject denied");
        let unwritable = ready_condition(&ld, &[&ok, &probing, &denied]);
        assert_eq!(unwritable.reason, "WriteDenied");
        assert_eq!(
            condition(&[], "ArchiveWritable", &probing, Some(1)).status,
            "Unknown"
        );
        assert_eq!(r.message, "1 apps drain into s3://logs-bucket/logs/");
    }
}
