//! `spec.archive.s3.lifecycle`: the archive's retention as the bucket's
//! lifecycle rule for the LogDrain's prefix, reported as `RetentionApplied`.
//!
//! A LogDrain that never set a lifecycle makes no S3 call (and needs no S3
//! permission); one that had it set and drops it has its rule removed. The
//! rule stays when the LogDrain is deleted: the archived logs stay, and so
//! does their retention.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use crate::controller::status::conditions::Cond;
use crate::controller::{Context, RETENTION_APPLIED, fingerprint};
use crate::crd::{LogDrain, LogDrainStatus, S3Lifecycle};
use crate::error::Error;
use crate::lifecycle::{Change, desired_rule, rule_id};

pub(crate) struct RetentionOutcome {
    /// `None`: drainpipe manages no rule for this LogDrain.
    pub(crate) condition: Option<Cond>,
    pub(crate) error: Option<Error>,
}

/// What the rule does, for messages.
fn describe(l: &S3Lifecycle) -> String {
    let mut parts = Vec::new();
    if let Some(d) = l.transition_days {
        let class = serde_json::to_value(l.storage_class)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        parts.push(format!("to {class} after {d} days"));
    }
    if let Some(d) = l.expire_days {
        parts.push(format!("deleted after {d} days"));
    }
    parts.join(", ")
}

pub(crate) async fn sync_retention(
    ctx: &Context,
    ld: &LogDrain,
    uid: &str,
    reference: &ObjectReference,
    old_status: &LogDrainStatus,
) -> RetentionOutcome {
    let s3 = &ld.spec.archive.s3;
    let id = rule_id(&s3.prefix);
    let managed_before = old_status
        .conditions
        .iter()
        .any(|c| c.type_ == RETENTION_APPLIED);
    if s3.lifecycle.is_none() && !managed_before {
        return RetentionOutcome {
            condition: None,
            error: None,
        };
    }
    let applied = |l: &S3Lifecycle| {
        Cond::ok(
            "Applied",
            format!(
                "lifecycle rule {id} on s3://{}: objects under {} {}",
                s3.bucket,
                if s3.prefix.is_empty() {
                    "the bucket"
                } else {
                    &s3.prefix
                },
                describe(l)
            ),
        )
    };
    let fp = fingerprint(&(
        &s3.bucket,
        &s3.prefix,
        &s3.region,
        &s3.endpoint,
        &s3.lifecycle,
    ));
    if ctx.retention_fresh(uid, fp) {
        return RetentionOutcome {
            condition: s3.lifecycle.as_ref().map(applied),
            error: None,
        };
    }
    let wanted = match s3.lifecycle.as_ref().map(|l| desired_rule(&s3.prefix, l)) {
        None => None,
        Some(Ok(rule)) => Some(rule),
        Some(Err(e)) => return failed(e),
    };
    match ctx.buckets.apply_rule(s3, wanted.as_ref()).await {
        Ok(change) => {
            ctx.set_retention_verified(uid, Some(fp));
            let bucket = &s3.bucket;
            let note = match (change, &s3.lifecycle) {
                (Change::Added, Some(l)) => Some((
                    "LifecycleRuleAdded",
                    format!(
                        "added lifecycle rule {id} to s3://{bucket}: {}",
                        describe(l)
                    ),
                )),
                (Change::Updated, Some(l)) => Some((
                    "LifecycleRuleUpdated",
                    format!(
                        "updated lifecycle rule {id} of s3://{bucket}: {}",
                        describe(l)
                    ),
                )),
                (Change::Removed, _) => Some((
                    "LifecycleRuleRemoved",
                    format!(
                        "removed lifecycle rule {id} from s3://{bucket}: spec.archive.s3.lifecycle is no longer set"
                    ),
                )),
                _ => None,
            };
            if let Some((reason, note)) = note {
                ctx.publish(reference, EventType::Normal, reason, note)
                    .await;
            }
            RetentionOutcome {
                condition: s3.lifecycle.as_ref().map(applied),
                error: None,
            }
        }
        Err(e) => {
            ctx.set_retention_verified(uid, None);
            ctx.publish(
                reference,
                EventType::Warning,
                "LifecycleRuleFailed",
                format!("cannot keep lifecycle rule {id}: {e}"),
            )
            .await;
            failed(e)
        }
    }
}

fn failed(e: crate::lifecycle::LifecycleError) -> RetentionOutcome {
    RetentionOutcome {
        condition: Some(Cond::failed(e.reason(), e.to_string())),
        error: Some(Error::Lifecycle(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::StorageClass;

    #[test]
    fn the_rule_reads_like_the_runbook() {
        let l = S3Lifecycle {
            transition_days: Some(90),
            storage_class: StorageClass::Glacier,
            expire_days: Some(365),
        };
        assert_eq!(
            describe(&l),
            "to GLACIER after 90 days, deleted after 365 days"
        );
        let deep = S3Lifecycle {
            transition_days: Some(30),
            storage_class: StorageClass::DeepArchive,
            expire_days: None,
        };
        assert_eq!(describe(&deep), "to DEEP_ARCHIVE after 30 days");
    }
}
