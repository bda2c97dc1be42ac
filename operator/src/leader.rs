//! Leader election through a `coordination.k8s.io/v1` Lease, so two operator
//! replicas can run and only one reconciles.
//!
//! kube-runtime 5 has no elector, so this is the client-go algorithm in
//! small: the holder renews `renewTime` every `renew_every`; a candidate
//! takes the Lease when it is free or its `renewTime + leaseDurationSeconds`
//! has passed. Every write is a replace carrying the `resourceVersion` that
//! was read, so two candidates cannot both win. A leader that fails to renew
//! before its own lease runs out stops leading (the caller exits), because by
//! then another replica may already hold it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

/// Where the Lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
    /// Pause between attempts while another replica leads.
    pub retry_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: String, name: String, identity: String) -> LeaseConfig {
        LeaseConfig {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }

    /// The same Lease with other timings (the chart's `leaderElection`).
    /// The leader must renew well within the duration, or it would lose
    /// the Lease between two renewals.
    pub fn with_timing(
        self,
        lease_duration: Duration,
        renew_every: Duration,
        retry_every: Duration,
    ) -> Result<LeaseConfig, LeaseError> {
        if renew_every.is_zero() || retry_every.is_zero() || renew_every >= lease_duration {
            return Err(LeaseError::Timing {
                lease_duration,
                renew_every,
                retry_every,
            });
        }
        Ok(LeaseConfig {
            lease_duration,
            renew_every,
            retry_every,
            ..self
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lost the leader lease {namespace}/{name}: {reason}")]
    Lost {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error(
        "leader election timing: the renew period ({renew_every:?}) must be shorter than the lease duration ({lease_duration:?}), and the renew and retry periods ({retry_every:?}) above zero"
    )]
    Timing {
        lease_duration: Duration,
        renew_every: Duration,
        retry_every: Duration,
    },
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Held,
    HeldByOther(String),
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: &Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut last_holder = String::new();
    loop {
        match try_acquire(&api, cfg).await {
            Ok(Attempt::Held) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
                return;
            }
            Ok(Attempt::HeldByOther(holder)) => {
                if holder != last_holder {
                    tracing::info!(lease = %cfg.name, %holder, "another replica leads; standing by");
                    last_holder = holder;
                }
            }
            Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "cannot take the leader lease"),
        }
        tokio::time::sleep(cfg.retry_every).await;
    }
}

/// Renews the Lease until it cannot; returns why leadership ended.
pub async fn hold(client: &Client, cfg: &LeaseConfig) -> LeaseError {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        let reason = match try_acquire(&api, cfg).await {
            Ok(Attempt::Held) => {
                last_renewed = tokio::time::Instant::now();
                continue;
            }
            Ok(Attempt::HeldByOther(holder)) => format!("{holder} holds it"),
            Err(e) => {
                // Transient API errors are fine while the lease still runs.
                if last_renewed.elapsed() + cfg.renew_every < cfg.lease_duration {
                    tracing::warn!(lease = %cfg.name, error = %e, "cannot renew the leader lease; retrying");
                    continue;
                }
                format!("renewal failed for the whole lease duration: {e}")
            }
        };
        return LeaseError::Lost {
            namespace: cfg.namespace.clone(),
            name: cfg.name.clone(),
            reason,
        };
    }
}

/// Releases the Lease on shutdown so a standby takes over at once.
pub async fn release(client: &Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.acquire_time = None;
    spec.renew_time = None;
    if let Err(e) = api.replace(&cfg.name, &PostParams::default(), &lease).await {
        tracing::debug!(error = %e, "cannot release the leader lease");
    }
}

async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<Attempt, kube::Error> {
    let now = Timestamp::now();
    let duration_secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldByOther("?".into())),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let ours = holder == cfg.identity;
    if !ours && !holder.is_empty() && !expired(spec, now) {
        return Ok(Attempt::HeldByOther(holder));
    }
    if !ours {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.holder_identity = Some(cfg.identity.clone());
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration_secs);
    // replace() sends the resourceVersion we read: a 409 means someone else
    // wrote in between, and the next attempt reads again.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(Attempt::Held),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldByOther(holder)),
        Err(e) => Err(e),
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed + SignedDuration::from_secs(secs) < now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_must_let_the_leader_renew_in_time() {
        let base = || LeaseConfig::new("ns".into(), "lease".into(), "me".into());
        let s = Duration::from_secs;
        let cfg = base().with_timing(s(30), s(10), s(3)).expect("valid");
        assert_eq!(
            (cfg.lease_duration, cfg.renew_every, cfg.retry_every),
            (s(30), s(10), s(3))
        );
        assert_eq!(cfg.name, "lease");
        for (d, r, t) in [
            (s(10), s(10), s(2)),
            (s(10), s(20), s(2)),
            (s(10), s(0), s(2)),
            (s(10), s(5), s(0)),
        ] {
            let err = base().with_timing(d, r, t).expect_err("invalid timing");
            assert!(err.to_string().contains("must be shorter"), "{err}");
        }
    }

    #[test]
    fn a_lease_expires_after_its_duration() {
        let now = Timestamp::now();
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(10))),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec, now));
        assert!(expired(&spec, now + SignedDuration::from_secs(6)));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
