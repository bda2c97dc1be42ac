//! The archive's retention as an S3 lifecycle rule.
//!
//! `PutBucketLifecycleConfiguration` replaces the bucket's whole
//! configuration, so the rule is merged: read the configuration, keep every
//! rule that is not this prefix's drainpipe rule (other LogDrains', a
//! person's, Athena's query results'), put ours in by its stable id, write
//! the result back. Updates of one bucket by this process are serialised by
//! a lock per bucket; a person editing the rules at the same moment can
//! still lose the race (S3 has no conditional write for them), which the
//! next resync repairs for our rule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, Transition, TransitionStorageClass,
};

use crate::crd::{S3Archive, S3Lifecycle, StorageClass};

/// Ids of the rules drainpipe makes start with this.
pub const RULE_ID_PREFIX: &str = "drainpipe:";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LifecycleError {
    #[error(
        "S3 denied {operation} on bucket {bucket}: {message} (the operator needs s3:GetLifecycleConfiguration and s3:PutLifecycleConfiguration on it)"
    )]
    AccessDenied {
        operation: &'static str,
        bucket: String,
        message: String,
    },
    #[error("S3 bucket {bucket} does not exist")]
    NoSuchBucket { bucket: String },
    #[error("S3 rejected the lifecycle rules of bucket {bucket}: {code}: {message}")]
    Rejected {
        bucket: String,
        code: String,
        message: String,
    },
    #[error("S3 {operation} on bucket {bucket} failed: {code}: {message}")]
    Service {
        operation: &'static str,
        bucket: String,
        code: String,
        message: String,
    },
    #[error("cannot reach S3 for {operation} on bucket {bucket}: {message}")]
    Transport {
        operation: &'static str,
        bucket: String,
        message: String,
    },
    #[error("cannot build an S3 lifecycle request: {0}")]
    Build(String),
}

impl LifecycleError {
    /// A fixed, low-cardinality name for metrics labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LifecycleError::AccessDenied { .. } => "access_denied",
            LifecycleError::NoSuchBucket { .. } => "no_such_bucket",
            LifecycleError::Rejected { .. } => "rejected",
            LifecycleError::Service { .. } => "service",
            LifecycleError::Transport { .. } => "transport",
            LifecycleError::Build(_) => "build",
        }
    }

    /// The `RetentionApplied` condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            LifecycleError::AccessDenied { .. } => "S3AccessDenied",
            LifecycleError::NoSuchBucket { .. } => "S3BucketNotFound",
            LifecycleError::Rejected { .. } => "LifecycleRejected",
            _ => "S3Error",
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            LifecycleError::Transport { .. } => true,
            LifecycleError::Service { code, .. } => matches!(
                code.as_str(),
                "InternalError" | "ServiceUnavailable" | "SlowDown" | "RequestTimeout"
            ),
            _ => false,
        }
    }
}

/// The id of the rule drainpipe keeps for `prefix`.
pub fn rule_id(prefix: &str) -> String {
    format!("{RULE_ID_PREFIX}{prefix}")
}

fn storage_class(c: StorageClass) -> TransitionStorageClass {
    match c {
        StorageClass::Glacier => TransitionStorageClass::Glacier,
        StorageClass::DeepArchive => TransitionStorageClass::DeepArchive,
        StorageClass::GlacierIr => TransitionStorageClass::GlacierIr,
        StorageClass::StandardIa => TransitionStorageClass::StandardIa,
        StorageClass::OnezoneIa => TransitionStorageClass::OnezoneIa,
        StorageClass::IntelligentTiering => TransitionStorageClass::IntelligentTiering,
    }
}

/// The rule `lifecycle` asks for over `prefix`.
pub fn desired_rule(
    prefix: &str,
    lifecycle: &S3Lifecycle,
) -> Result<LifecycleRule, LifecycleError> {
    let mut rule = LifecycleRule::builder()
        .id(rule_id(prefix))
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(prefix).build());
    if let Some(days) = lifecycle.transition_days {
        rule = rule.transitions(
            Transition::builder()
                .days(days)
                .storage_class(storage_class(lifecycle.storage_class))
                .build(),
        );
    }
    if let Some(days) = lifecycle.expire_days {
        rule = rule.expiration(LifecycleExpiration::builder().days(days).build());
    }
    rule.build()
        .map_err(|e| LifecycleError::Build(e.to_string()))
}

/// What a merge changes about our rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Added,
    Updated,
    Removed,
}

/// The bucket's rules with ours (`id`) replaced by `wanted` (removed when
/// `None`), every other rule kept in its place.
pub fn merge(
    existing: &[LifecycleRule],
    id: &str,
    wanted: Option<&LifecycleRule>,
) -> (Vec<LifecycleRule>, Change) {
    let current = existing.iter().find(|r| r.id() == Some(id));
    let change = match (current, wanted) {
        (None, None) => Change::Unchanged,
        (None, Some(_)) => Change::Added,
        (Some(_), None) => Change::Removed,
        (Some(c), Some(w)) if same_rule(c, w) => Change::Unchanged,
        (Some(_), Some(_)) => Change::Updated,
    };
    let mut rules: Vec<LifecycleRule> = existing
        .iter()
        .filter(|r| r.id() != Some(id))
        .cloned()
        .collect();
    if let Some(w) = wanted {
        let at = existing
            .iter()
            .position(|r| r.id() == Some(id))
            .unwrap_or(rules.len());
        rules.insert(at.min(rules.len()), w.clone());
    }
    (rules, change)
}

/// Equal in what drainpipe sets; stores add their own defaults when they
/// echo a rule back (a legacy top-level prefix, an empty filter...).
// The legacy `Prefix` is deprecated for writing, but stores still echo it.
#[allow(deprecated)]
fn same_rule(a: &LifecycleRule, b: &LifecycleRule) -> bool {
    let prefix = |r: &LifecycleRule| {
        r.filter()
            .and_then(|f| f.prefix())
            .or(r.prefix())
            .unwrap_or_default()
            .to_string()
    };
    let transitions = |r: &LifecycleRule| {
        r.transitions()
            .iter()
            .map(|t| (t.days(), t.storage_class().cloned()))
            .collect::<Vec<_>>()
    };
    a.status() == b.status()
        && prefix(a) == prefix(b)
        && transitions(a) == transitions(b)
        && a.expiration().and_then(LifecycleExpiration::days)
            == b.expiration().and_then(LifecycleExpiration::days)
        && a.filter().and_then(|f| f.and()).is_none()
        && a.filter().and_then(|f| f.tag()).is_none()
}

type BucketLocks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// S3 clients by (region, endpoint).
type Clients = Arc<Mutex<HashMap<(String, Option<String>), aws_sdk_s3::Client>>>;

/// S3 clients for the archives' buckets, one per region and endpoint, built
/// from the operator's AWS configuration.
#[derive(Clone, Debug)]
pub struct Buckets {
    config: Option<aws_config::SdkConfig>,
    clients: Clients,
    locks: BucketLocks,
}

impl Buckets {
    pub fn new(config: aws_config::SdkConfig) -> Buckets {
        Buckets {
            config: Some(config),
            clients: Arc::default(),
            locks: BucketLocks::default(),
        }
    }

    /// No S3 access: every lifecycle operation fails saying so.
    pub fn none() -> Buckets {
        Buckets {
            config: None,
            clients: Arc::default(),
            locks: BucketLocks::default(),
        }
    }

    fn client(&self, s3: &S3Archive) -> Result<aws_sdk_s3::Client, LifecycleError> {
        let Some(config) = &self.config else {
            return Err(LifecycleError::Build(
                "the operator was started without S3 access".to_string(),
            ));
        };
        let key = (s3.region.clone(), s3.endpoint.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        Ok(clients
            .entry(key)
            .or_insert_with(|| {
                let mut conf = aws_sdk_s3::config::Builder::from(config)
                    .region(aws_sdk_s3::config::Region::new(s3.region.clone()));
                if let Some(endpoint) = &s3.endpoint {
                    // S3-compatible stores (MinIO...) want path-style addressing.
                    conf = conf.endpoint_url(endpoint).force_path_style(true);
                }
                aws_sdk_s3::Client::from_conf(conf.build())
            })
            .clone())
    }

    fn lock(&self, bucket: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(bucket.to_string()).or_default().clone()
    }

    /// Makes the bucket carry `wanted` as the rule for `s3.prefix` (none
    /// when `None`), keeping every other rule.
    pub async fn apply_rule(
        &self,
        s3: &S3Archive,
        wanted: Option<&LifecycleRule>,
    ) -> Result<Change, LifecycleError> {
        let client = self.client(s3)?;
        let bucket = s3.bucket.as_str();
        let lock = self.lock(bucket);
        let _held = lock.lock().await;
        let existing = match client
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => out.rules().to_vec(),
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Vec::new(),
            Err(e) => return Err(failure("GetBucketLifecycleConfiguration", bucket, e)),
        };
        let id = rule_id(&s3.prefix);
        let (rules, change) = merge(&existing, &id, wanted);
        if change == Change::Unchanged {
            return Ok(change);
        }
        if rules.is_empty() {
            // S3 refuses an empty configuration: delete it instead (same
            // permission, s3:PutLifecycleConfiguration).
            client
                .delete_bucket_lifecycle()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| failure("DeleteBucketLifecycle", bucket, e))?;
            return Ok(change);
        }
        let config = BucketLifecycleConfiguration::builder()
            .set_rules(Some(rules))
            .build()
            .map_err(|e| LifecycleError::Build(e.to_string()))?;
        client
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(config)
            .send()
            .await
            .map_err(|e| failure("PutBucketLifecycleConfiguration", bucket, e))?;
        Ok(change)
    }
}

fn failure<E, R>(operation: &'static str, bucket: &str, err: SdkError<E, R>) -> LifecycleError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let bucket = bucket.to_string();
    if let SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) =
        &err
    {
        return LifecycleError::Transport {
            operation,
            bucket,
            message: aws_sdk_s3::error::DisplayErrorContext(&err).to_string(),
        };
    }
    let code = err.code().unwrap_or("Unknown").to_string();
    let message = err
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| aws_sdk_s3::error::DisplayErrorContext(&err).to_string());
    match code.as_str() {
        "AccessDenied" => LifecycleError::AccessDenied {
            operation,
            bucket,
            message,
        },
        "NoSuchBucket" => LifecycleError::NoSuchBucket { bucket },
        "InvalidArgument" | "MalformedXML" | "InvalidRequest" | "InvalidStorageClass" => {
            LifecycleError::Rejected {
                bucket,
                code,
                message,
            }
        }
        _ => LifecycleError::Service {
            operation,
            bucket,
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifecycle(t: Option<i32>, e: Option<i32>) -> S3Lifecycle {
        S3Lifecycle {
            transition_days: t,
            storage_class: StorageClass::default(),
            expire_days: e,
        }
    }

    fn foreign(id: &str) -> LifecycleRule {
        LifecycleRule::builder()
            .id(id)
            .status(ExpirationStatus::Enabled)
            .filter(
                LifecycleRuleFilter::builder()
                    .prefix("athena-results/")
                    .build(),
            )
            .expiration(LifecycleExpiration::builder().days(30).build())
            .build()
            .expect("rule")
    }

    #[test]
    fn the_rule_is_the_runbooks_retention_over_the_prefix() {
        let r = desired_rule("logs/", &lifecycle(Some(90), Some(365))).expect("rule");
        assert_eq!(r.id(), Some("drainpipe:logs/"));
        assert_eq!(r.filter().and_then(|f| f.prefix()), Some("logs/"));
        assert_eq!(r.transitions()[0].days(), Some(90));
        assert_eq!(
            r.transitions()[0].storage_class(),
            Some(&TransitionStorageClass::Glacier)
        );
        assert_eq!(r.expiration().and_then(|e| e.days()), Some(365));
        let only_expiry = desired_rule("logs/", &lifecycle(None, Some(30))).expect("rule");
        assert!(only_expiry.transitions().is_empty());
    }

    #[test]
    fn merge_keeps_foreign_rules_and_replaces_ours_in_place() {
        let ours = desired_rule("a/", &lifecycle(Some(90), Some(365))).expect("rule");
        let other_ld = desired_rule("b/", &lifecycle(None, Some(7))).expect("rule");
        let existing = vec![foreign("athena"), other_ld.clone()];
        let (rules, change) = merge(&existing, "drainpipe:a/", Some(&ours));
        assert_eq!(change, Change::Added);
        let ids: Vec<_> = rules.iter().filter_map(|r| r.id()).collect();
        assert_eq!(ids, ["athena", "drainpipe:b/", "drainpipe:a/"]);

        let (again, change) = merge(&rules, "drainpipe:a/", Some(&ours));
        assert_eq!(change, Change::Unchanged);
        assert_eq!(again, rules);

        let longer = desired_rule("a/", &lifecycle(Some(90), Some(730))).expect("rule");
        let (updated, change) = merge(&rules, "drainpipe:a/", Some(&longer));
        assert_eq!(change, Change::Updated);
        assert_eq!(updated.len(), 3);
        assert_eq!(updated[2].expiration().and_then(|e| e.days()), Some(730));

        let (removed, change) = merge(&rules, "drainpipe:a/", None);
        assert_eq!(change, Change::Removed);
        assert_eq!(removed, existing);
        assert_eq!(merge(&existing, "drainpipe:a/", None).1, Change::Unchanged);
    }

    #[test]
    #[allow(deprecated)]
    fn a_rule_echoed_with_store_defaults_is_the_same_rule() {
        let ours = desired_rule("a/", &lifecycle(Some(90), None)).expect("rule");
        // Stored the legacy way, with the prefix on the rule itself.
        let legacy = LifecycleRule::builder()
            .id("drainpipe:a/")
            .prefix("a/")
            .status(ExpirationStatus::Enabled)
            .transitions(
                Transition::builder()
                    .days(90)
                    .storage_class(TransitionStorageClass::Glacier)
                    .build(),
            )
            .build()
            .expect("rule");
        assert!(same_rule(&legacy, &ours));
        let disabled = LifecycleRule::builder()
            .id("drainpipe:a/")
            .prefix("a/")
            .status(ExpirationStatus::Disabled)
            .build()
            .expect("rule");
        assert!(!same_rule(&disabled, &ours));
    }

    #[test]
    fn errors_say_which_permission_is_missing() {
        let e = LifecycleError::AccessDenied {
            operation: "PutBucketLifecycleConfiguration",
            bucket: "logs".into(),
            message: "Access Denied".into(),
        };
        assert_eq!(e.reason(), "S3AccessDenied");
        assert!(
            e.to_string().contains("s3:PutLifecycleConfiguration"),
            "{e}"
        );
        assert!(!e.is_transient());
    }
}
