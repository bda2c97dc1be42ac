//! The compaction CronJob: applied while `spec.archive.compaction` is set,
//! deleted when it goes (and, owned by the LogDrain, with it).

use k8s_openapi::api::batch::v1::CronJob;

use crate::controller::Context;
use crate::controller::owned::{apply_owned, delete_owned};
use crate::error::Result;
use crate::resources::{self, Owner};

/// The CronJob as stored, or why there is none.
pub(crate) enum Compaction {
    /// No `spec.archive.compaction`: no CronJob.
    Off,
    /// The CronJob as the API server stored it.
    Scheduled(Box<CronJob>),
    /// The API server refused the CronJob (a schedule its parser rejects);
    /// the message is the server's. The rest of the LogDrain goes on.
    Rejected(String),
}

pub(crate) async fn sync_compaction(
    ctx: &Context,
    owner: &Owner,
    ld: &crate::crd::LogDrain,
) -> Result<Compaction> {
    let Some(wanted) = resources::compaction_cronjob(owner, ld, &ctx.settings.ingester) else {
        delete_owned::<CronJob>(ctx, owner, &resources::compaction_name(&owner.name)).await?;
        return Ok(Compaction::Off);
    };
    match apply_owned(ctx, &owner.namespace, &wanted).await {
        Ok(stored) => Ok(Compaction::Scheduled(Box::new(stored))),
        // 422: the CronJob's own validation (the CRD's pattern lets
        // through schedules such as `99 * * * *`).
        Err(crate::error::Error::Kube(kube::Error::Api(e))) if e.code == 422 => {
            Ok(Compaction::Rejected(e.message))
        }
        Err(e) => Err(e),
    }
}
