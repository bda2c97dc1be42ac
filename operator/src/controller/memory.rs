//! What this process last verified outside the cluster, per LogDrain uid,
//! so a reconcile that finds nothing to change makes no Heroku or Glue call.

use std::collections::HashMap;
use std::time::Instant;

use super::workload::autoscale::PodMemory;
use super::{Context, lock};
use crate::crd::{DrainKind, DrainStatus};
use crate::heroku::Generation;

/// What was last verified outside the cluster, so a no-change reconcile can
/// skip the call.
#[derive(Clone, Copy, Debug)]
pub(super) struct Verified {
    pub(super) fingerprint: u64,
    pub(super) at: Instant,
}

/// A drain this process made, found or removed, and when it was last
/// verified.
#[derive(Clone, Debug)]
pub(super) struct KnownDrain {
    pub(super) drain: DrainStatus,
    /// `None` after a failed check: the drain is still ours, but must be
    /// verified again.
    pub(super) verified: Option<Verified>,
    /// Removed from Heroku by this process: a status that still lists it
    /// predates the removal.
    pub(super) removed: bool,
}

/// An app as App Info described it: what decides its drain kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AppIdentity {
    /// `None` only for a log-drain record written before ids were recorded.
    pub(super) id: Option<String>,
    pub(super) generation: Generation,
}

impl AppIdentity {
    /// The identity a drain record implies: its generation, or Cedar for a
    /// log drain recorded before generations were (only Cedar apps have log
    /// drains).
    pub(super) fn recorded(d: &DrainStatus) -> Option<AppIdentity> {
        let generation = match d.generation.as_deref() {
            Some(g) => Generation::parse(g)?,
            None if d.kind == DrainKind::Log => Generation::Cedar,
            None => Generation::Fir,
        };
        Some(AppIdentity {
            id: d.app_id.clone(),
            generation,
        })
    }
}

/// The autoscaler's memory of one LogDrain (autoscale.rs, scaling.rs).
#[derive(Debug, Default)]
pub(super) struct ScalerMemory {
    /// Each ready pod's previous read, by pod name.
    pub(super) pods: HashMap<String, PodMemory>,
    /// Recent recommendations, for the scale-down window.
    pub(super) history: Vec<(Instant, i32)>,
    /// The autoscaler's field manager owns the Deployment's replicas, so
    /// the operator's own apply may leave them out (scaling.rs).
    pub(super) claimed: bool,
}

impl Context {
    /// Runs `f` on LogDrain `uid`'s autoscaler memory.
    pub(super) fn with_scaler<T>(&self, uid: &str, f: impl FnOnce(&mut ScalerMemory) -> T) -> T {
        f(lock(&self.scalers).entry(uid.to_string()).or_default())
    }

    /// The LogDrain is not autoscaled by the operator (any more).
    pub(super) fn forget_scaler(&self, uid: &str) {
        lock(&self.scalers).remove(uid);
    }

    /// `app`'s identity as last learnt, if it need not be asked again:
    /// `Some(None)` when it must be (Heroku refused the drain kind).
    pub(super) fn app_identity(&self, uid: &str, app: &str) -> Option<Option<AppIdentity>> {
        lock(&self.app_identities)
            .get(&(uid.to_string(), app.to_string()))
            .cloned()
    }

    pub(super) fn set_app_identity(&self, uid: &str, app: &str, identity: Option<AppIdentity>) {
        lock(&self.app_identities).insert((uid.to_string(), app.to_string()), identity);
    }

    pub(super) fn fresh(&self, v: Option<Verified>, fingerprint: u64) -> bool {
        v.is_some_and(|v| v.fingerprint == fingerprint && v.at.elapsed() < self.settings.resync / 2)
    }

    /// The drains this process knows for LogDrain `uid`: those in place,
    /// and those it removed.
    pub(super) fn known_drains(&self, uid: &str) -> (Vec<DrainStatus>, Vec<DrainStatus>) {
        let (mut known, mut removed) = (Vec::new(), Vec::new());
        for ((u, _), k) in lock(&self.drains_known).iter() {
            if u == uid {
                if k.removed {
                    removed.push(k.drain.clone());
                } else {
                    known.push(k.drain.clone());
                }
            }
        }
        (known, removed)
    }

    /// Whether `app`'s drain was verified recently for the desired URL
    /// `fingerprint`.
    pub(super) fn drain_fresh(&self, uid: &str, app: &str, fingerprint: u64) -> bool {
        let known = lock(&self.drains_known);
        let verified = known
            .get(&(uid.to_string(), app.to_string()))
            .and_then(|k| k.verified);
        self.fresh(verified, fingerprint)
    }

    pub(super) fn set_drain_verified(
        &self,
        uid: &str,
        app: &str,
        fingerprint: u64,
        drain: DrainStatus,
    ) {
        lock(&self.drains_known).insert(
            (uid.to_string(), app.to_string()),
            KnownDrain {
                drain,
                verified: Some(Verified {
                    fingerprint,
                    at: Instant::now(),
                }),
                removed: false,
            },
        );
    }

    /// The next reconcile checks `app` with Heroku again.
    pub(super) fn unverify_drain(&self, uid: &str, app: &str) {
        if let Some(k) = lock(&self.drains_known).get_mut(&(uid.to_string(), app.to_string())) {
            k.verified = None;
        }
    }

    pub(super) fn drain_removed(&self, uid: &str, drain: &DrainStatus) {
        lock(&self.drains_known).insert(
            (uid.to_string(), drain.app.clone()),
            KnownDrain {
                drain: drain.clone(),
                verified: None,
                removed: true,
            },
        );
    }

    /// Whether LogDrain `uid`'s suspension was verified recently (no drain
    /// of ours left) for the apps and endpoint `fingerprint`ed.
    pub(super) fn suspension_fresh(&self, uid: &str, fingerprint: u64) -> bool {
        let verified = lock(&self.suspension_verified).get(uid).copied();
        self.fresh(verified, fingerprint)
    }

    pub(super) fn set_suspension_verified(&self, uid: &str, fingerprint: u64) {
        lock(&self.suspension_verified).insert(
            uid.to_string(),
            Verified {
                fingerprint,
                at: Instant::now(),
            },
        );
    }

    pub(super) fn unverify_suspension(&self, uid: &str) {
        lock(&self.suspension_verified).remove(uid);
    }

    pub(super) fn retention_fresh(&self, uid: &str, fingerprint: u64) -> bool {
        let verified = lock(&self.retention_verified).get(uid).copied();
        self.fresh(verified, fingerprint)
    }

    pub(super) fn set_retention_verified(&self, uid: &str, fingerprint: Option<u64>) {
        let mut verified = lock(&self.retention_verified);
        match fingerprint {
            Some(fingerprint) => {
                verified.insert(
                    uid.to_string(),
                    Verified {
                        fingerprint,
                        at: Instant::now(),
                    },
                );
            }
            None => {
                verified.remove(uid);
            }
        }
    }

    pub(super) fn forget(&self, uid: &str) {
        lock(&self.retention_verified).remove(uid);
        lock(&self.suspension_verified).remove(uid);
        lock(&self.drains_known).retain(|(u, _), _| u != uid);
        lock(&self.app_identities).retain(|(u, _), _| u != uid);
        lock(&self.status_written).remove(uid);
        lock(&self.catalog_verified).remove(uid);
        lock(&self.failures).remove(uid);
        self.forget_scaler(uid);
        self.forget_app_failures(uid);
    }
}
