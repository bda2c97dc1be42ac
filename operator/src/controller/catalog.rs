//! The Glue half of a reconcile: the table (when managed) and its
//! `projection.app.values`, shared by every LogDrain naming the table.

use std::collections::BTreeSet;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use super::conditions::Cond;
use super::memory::Verified;
use super::{CATALOG_SYNCED, Context, fingerprint, lock};
use crate::crd::{GlueCatalog, LogDrain, LogDrainStatus};
use crate::error::Error;
use crate::glue::{GlueError, TableRef, TableSpec};

pub(super) struct CatalogOutcome {
    pub(super) condition: Cond,
    pub(super) error: Option<Error>,
}

fn same_table(a: &GlueCatalog, b: &GlueCatalog) -> bool {
    a.database == b.database && a.table == b.table && a.region == b.region
}

/// Apps of every watched LogDrain that targets the same table as `glue`.
fn table_union(ctx: &Context, ld: &LogDrain, glue: &GlueCatalog) -> BTreeSet<String> {
    let mut apps = ld.app_set();
    for other in ctx.all_logdrains() {
        if let Some(c) = &other.spec.catalog
            && same_table(&c.glue, glue)
        {
            apps.extend(other.spec.apps.iter().cloned());
        }
    }
    apps
}

pub(super) async fn sync_catalog(
    ctx: &Context,
    ld: &LogDrain,
    uid: &str,
    reference: &ObjectReference,
    old_status: &LogDrainStatus,
) -> CatalogOutcome {
    let Some(catalog) = &ld.spec.catalog else {
        return CatalogOutcome {
            condition: Cond::ok(
                "NotConfigured",
                "spec.catalog is not set: no catalog to keep in step",
            ),
            error: None,
        };
    };
    let glue = &catalog.glue;
    let s3 = &ld.spec.archive.s3;
    let union = table_union(ctx, ld, glue);
    let fp = fingerprint(&(
        glue.database.as_str(),
        glue.table.as_str(),
        glue.region.as_str(),
        glue.manage_table,
        s3.bucket.as_str(),
        s3.prefix.as_str(),
        &union,
    ));
    let previous = lock(&ctx.catalog_verified).get(uid).copied();
    let old_cond = old_status
        .conditions
        .iter()
        .find(|c| c.type_ == CATALOG_SYNCED);
    if ctx.fresh(previous, fp)
        && let Some(old) = old_cond.filter(|c| c.status == "True")
    {
        return CatalogOutcome {
            condition: Cond::ok(&old.reason, old.message.clone()),
            error: None,
        };
    }
    let table = TableRef::new(glue.database.clone(), glue.table.clone());
    let client = ctx.catalogs.for_region(&glue.region);
    let result = async {
        let mut created = false;
        if glue.manage_table {
            let spec = TableSpec::new(s3.bucket.clone(), s3.prefix.clone()).with_apps(union.iter());
            created = client.ensure_table(&table, &spec).await?;
        }
        let update = client.ensure_apps(&table, &union).await?;
        Ok::<_, GlueError>((created, update))
    }
    .await;
    match result {
        Ok((created, update)) => {
            lock(&ctx.catalog_verified).insert(
                uid.to_string(),
                Verified {
                    fingerprint: fp,
                    at: Instant::now(),
                },
            );
            if created {
                ctx.metrics.glue_updates.inc();
                ctx.publish(
                    reference,
                    EventType::Normal,
                    "TableCreated",
                    format!(
                        "created Glue table {table} over s3://{}/{} with partition projection",
                        s3.bucket, s3.prefix
                    ),
                )
                .await;
            }
            if !update.added.is_empty() {
                ctx.metrics.glue_updates.inc();
                ctx.publish(
                    reference,
                    EventType::Normal,
                    "AppsAdded",
                    format!(
                        "added {} to projection.app.values of Glue table {table}",
                        update.added.join(", ")
                    ),
                )
                .await;
            }
            if update.near_limit {
                let message = format!(
                    "projection.app.values of {table} lists {} apps in {} bytes, near Glue's 512,000-byte limit: split apps across tables",
                    update.app_count, update.values_len
                );
                ctx.publish(
                    reference,
                    EventType::Warning,
                    "ProjectionNearLimit",
                    message.clone(),
                )
                .await;
                return CatalogOutcome {
                    condition: Cond::ok("ProjectionNearLimit", message),
                    error: None,
                };
            }
            CatalogOutcome {
                condition: Cond::ok(
                    "Synced",
                    format!(
                        "Glue table {table} projects {} apps, {} of them from this LogDrain",
                        update.app_count,
                        ld.app_set().len()
                    ),
                ),
                error: None,
            }
        }
        Err(e) => {
            lock(&ctx.catalog_verified).remove(uid);
            CatalogOutcome {
                condition: Cond::failed(e.reason(), e.to_string()),
                error: Some(Error::Glue(e)),
            }
        }
    }
}
