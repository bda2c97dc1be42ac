//! What this process last verified outside the cluster, per LogDrain uid,
//! so a reconcile that finds nothing to change makes no Heroku or Glue call.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::workload::autoscale::PodMemory;
use super::{Context, lock};
use crate::crd::{CompactionStatus, DrainKind, DrainStatus};
use crate::heroku::Generation;

/// What was last verified outside the cluster, so a no-change reconcile can
/// skip the call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Verified {
    pub(crate) fingerprint: u64,
    pub(crate) at: Instant,
}

/// A drain this process made, found or removed, and when it was last
/// verified.
#[derive(Clone, Debug)]
pub(crate) struct KnownDrain {
    pub(crate) drain: DrainStatus,
    /// `None` after a failed check: the drain is still ours, but must be
    /// verified again.
    pub(crate) verified: Option<Verified>,
    /// Removed from Heroku by this process: a status that still lists it
    /// predates the removal.
    pub(crate) removed: bool,
}

/// An app as App Info described it: what decides its drain kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppIdentity {
    /// `None` only for a log-drain record written before ids were recorded.
    pub(crate) id: Option<String>,
    pub(crate) generation: Generation,
}

impl AppIdentity {
    /// The identity a drain record implies: its generation, or Cedar for a
    /// log drain recorded before generations were (only Cedar apps have log
    /// drains).
    pub(crate) fn recorded(d: &DrainStatus) -> Option<AppIdentity> {
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
pub(crate) struct ScalerMemory {
    /// Each ready pod's previous read, by pod name.
    pub(crate) pods: HashMap<String, PodMemory>,
    /// Recent recommendations, for the scale-down window.
    pub(crate) history: Vec<(Instant, i32)>,
    /// The autoscaler's field manager owns the Deployment's replicas, so
    /// the operator's own apply may leave them out (scaling.rs).
    pub(crate) claimed: bool,
}

impl Context {
    /// Runs `f` on LogDrain `uid`'s autoscaler memory.
    pub(crate) fn with_scaler<T>(&self, uid: &str, f: impl FnOnce(&mut ScalerMemory) -> T) -> T {
        f(lock(&self.scalers).entry(uid.to_string()).or_default())
    }

    /// The LogDrain is not autoscaled by the operator (any more).
    pub(crate) fn forget_scaler(&self, uid: &str) {
        lock(&self.scalers).remove(uid);
    }

    /// `app`'s identity as last learnt, if it need not be asked again:
    /// `Some(None)` when it must be (Heroku refused the drain kind).
    pub(crate) fn app_identity(&self, uid: &str, app: &str) -> Option<Option<AppIdentity>> {
        lock(&self.app_identities)
            .get(&(uid.to_string(), app.to_string()))
            .cloned()
    }

    pub(crate) fn set_app_identity(&self, uid: &str, app: &str, identity: Option<AppIdentity>) {
        lock(&self.app_identities).insert((uid.to_string(), app.to_string()), identity);
    }

    pub(crate) fn fresh(&self, v: Option<Verified>, fingerprint: u64) -> bool {
        v.is_some_and(|v| v.fingerprint == fingerprint && v.at.elapsed() < self.settings.resync / 2)
    }

    /// The drains this process knows for LogDrain `uid`: those in place,
    /// and those it removed.
    pub(crate) fn known_drains(&self, uid: &str) -> (Vec<DrainStatus>, Vec<DrainStatus>) {
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

    /// How long ago `app`'s drain was verified for the desired drain
    /// `fingerprint`; `None` when it never was (a new app, a changed spec,
    /// a failed check): then it is checked at once, whatever the pacing.
    pub(crate) fn drain_verified_age(
        &self,
        uid: &str,
        app: &str,
        fingerprint: u64,
    ) -> Option<Duration> {
        let known = lock(&self.drains_known);
        known
            .get(&(uid.to_string(), app.to_string()))
            .and_then(|k| k.verified)
            .filter(|v| v.fingerprint == fingerprint)
            .map(|v| v.at.elapsed())
    }

    pub(crate) fn set_drain_verified(
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
    pub(crate) fn unverify_drain(&self, uid: &str, app: &str) {
        if let Some(k) = lock(&self.drains_known).get_mut(&(uid.to_string(), app.to_string())) {
            k.verified = None;
        }
    }

    pub(crate) fn drain_removed(&self, uid: &str, drain: &DrainStatus) {
        lock(&self.drains_known).insert(
            (uid.to_string(), drain.app.clone()),
            KnownDrain {
                drain: drain.clone(),
                verified: None,
                removed: true,
            },
        );
    }

    /// How long ago LogDrain `uid`'s suspension was verified (no drain of
    /// ours left) for the apps and endpoint `fingerprint`ed.
    pub(crate) fn suspension_verified_age(&self, uid: &str, fingerprint: u64) -> Option<Duration> {
        lock(&self.suspension_verified)
            .get(uid)
            .filter(|v| v.fingerprint == fingerprint)
            .map(|v| v.at.elapsed())
    }

    pub(crate) fn set_suspension_verified(&self, uid: &str, fingerprint: u64) {
        lock(&self.suspension_verified).insert(
            uid.to_string(),
            Verified {
                fingerprint,
                at: Instant::now(),
            },
        );
    }

    pub(crate) fn unverify_suspension(&self, uid: &str) {
        lock(&self.suspension_verified).remove(uid);
    }

    pub(crate) fn retention_fresh(&self, uid: &str, fingerprint: u64) -> bool {
        let verified = lock(&self.retention_verified).get(uid).copied();
        self.fresh(verified, fingerprint)
    }

    pub(crate) fn set_retention_verified(&self, uid: &str, fingerprint: Option<u64>) {
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

    /// `status.compaction` of LogDrain `uid` as this process last computed
    /// it, every run in it counted in the metrics and events. The status
    /// records the runs too, but the object a reconcile gets may predate
    /// that write, and a run must be counted once.
    pub(crate) fn compaction_counted(&self, uid: &str) -> Option<CompactionStatus> {
        lock(&self.compaction_counted).get(uid).cloned()
    }

    pub(crate) fn set_compaction_counted(&self, uid: &str, status: Option<CompactionStatus>) {
        let mut counted = lock(&self.compaction_counted);
        match status {
            Some(s) => {
                counted.insert(uid.to_string(), s);
            }
            None => {
                counted.remove(uid);
            }
        }
    }

    pub(crate) fn forget(&self, uid: &str) {
        lock(&self.compaction_counted).remove(uid);
        lock(&self.retention_verified).remove(uid);
        lock(&self.suspension_verified).remove(uid);
        lock(&self.drains_known).retain(|(u, _), _| u != uid);
        lock(&self.app_identities).retain(|(u, _), _| u != uid);
        lock(&self.status_written).remove(uid);
        lock(&self.applied).retain(|key, _| !key.starts_with(&format!("{uid}/")));
        lock(&self.catalog_verified).remove(uid);
        lock(&self.failures).remove(uid);
        self.forget_scaler(uid);
        self.forget_app_failures(uid);
    }
}
