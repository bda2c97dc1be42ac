//! The Glue half of a reconcile: the table (when managed) and its
//! `projection.app.values`, shared by every LogDrain naming the table.

use std::collections::BTreeSet;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use crate::controller::memory::Verified;
use crate::controller::status::conditions::Cond;
use crate::controller::{CATALOG_SYNCED, Context, fingerprint, lock};
use crate::crd::{GlueCatalog, LogDrain, LogDrainStatus};
use crate::error::Error;
use crate::glue::{
    AppsUpdate, GlueError, StorageUpdate, TableRef, TableSpec, YearPolicy, utc_year_now, year_range,
};

pub(crate) struct CatalogOutcome {
    pub(crate) condition: Cond,
    pub(crate) error: Option<Error>,
}

fn same_table(a: &GlueCatalog, b: &GlueCatalog) -> bool {
    a.database == b.database && a.table == b.table && a.region == b.region
}

/// Apps of `ld` and of every other LogDrain (`all`, as watched) that targets
/// the same table as `glue`.
fn table_union<'a>(
    ld: &LogDrain,
    glue: &GlueCatalog,
    all: impl IntoIterator<Item = &'a LogDrain>,
) -> BTreeSet<String> {
    let mut apps = ld.app_set();
    for other in all {
        if let Some(c) = &other.spec.catalog
            && same_table(&c.glue, glue)
        {
            apps.extend(other.spec.apps.iter().cloned());
        }
    }
    apps
}

/// Other LogDrains sharing `glue`'s table (`namespace/name`) that archive
/// in another format than `ld`: one table reads one format, so the
/// operator would switch it back and forth.
fn format_conflicts<'a>(
    ld: &LogDrain,
    glue: &GlueCatalog,
    all: impl IntoIterator<Item = &'a LogDrain>,
) -> Vec<String> {
    all.into_iter()
        .filter(|other| other.metadata.uid != ld.metadata.uid)
        .filter(|other| {
            other
                .spec
                .catalog
                .as_ref()
                .is_some_and(|c| same_table(&c.glue, glue))
        })
        .filter(|other| other.spec.archive.format != ld.spec.archive.format)
        .map(|other| {
            format!(
                "{}/{}",
                other.metadata.namespace.as_deref().unwrap_or_default(),
                other.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

pub(crate) async fn sync_catalog(
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
    let all = ctx.all_logdrains();
    let union = table_union(ld, glue, all.iter().map(AsRef::as_ref));
    let format = ld.archive_format();
    let conflicts = format_conflicts(ld, glue, all.iter().map(AsRef::as_ref));
    let years = YearPolicy {
        created: created_year(ld),
        now: utc_year_now(),
    };
    let fp = fingerprint(&(
        // A new year is a change to check: the projection's range follows it.
        years.now,
        glue.database.as_str(),
        glue.table.as_str(),
        glue.region.as_str(),
        glue.manage_table,
        s3.bucket.as_str(),
        s3.prefix.as_str(),
        format.as_str(),
        &conflicts,
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
        let mut storage = None;
        if glue.manage_table {
            let (first, last) = year_range(None, years.created, years.now);
            let spec = TableSpec::new(s3.bucket.clone(), s3.prefix.clone())
                .with_apps(union.iter())
                .with_years(first, last)
                .with_format(format);
            created = client.ensure_table(&table, &spec).await?;
            // A table made for another format follows the LogDrain's,
            // unless LogDrains sharing it disagree (reported below).
            if conflicts.is_empty() {
                storage = client.ensure_storage(&table, &spec).await?;
            }
        }
        // Only a table drainpipe manages has its year range kept; a shared
        // table made by hand keeps the projection its owner chose.
        let policy = glue.manage_table.then_some(years);
        let update = client.ensure_projection(&table, &union, policy).await?;
        Ok::<_, GlueError>((created, storage, update))
    }
    .await;
    match result {
        Ok((created, storage, update)) => {
            if conflicts.is_empty() {
                lock(&ctx.catalog_verified).insert(
                    uid.to_string(),
                    Verified {
                        fingerprint: fp,
                        at: Instant::now(),
                    },
                );
            }
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
            if let Some(change) = &storage {
                ctx.metrics.glue_updates.inc();
                ctx.publish(
                    reference,
                    EventType::Normal,
                    "TableFormatChanged",
                    format_changed(&table, change, s3),
                )
                .await;
            }
            if let Some((first, last)) = update.years {
                ctx.metrics.glue_updates.inc();
                ctx.publish(
                    reference,
                    EventType::Normal,
                    "ProjectionYearsUpdated",
                    format!("projection.year.range of Glue table {table} is now {first},{last}"),
                )
                .await;
            }
            if !update.columns_added.is_empty() {
                ctx.metrics.glue_updates.inc();
                ctx.publish(
                    reference,
                    EventType::Normal,
                    "ColumnsAdded",
                    format!(
                        "added columns {} to Glue table {table} (the record schema gained them)",
                        update.columns_added.join(", ")
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
            let condition = if !conflicts.is_empty() && glue.manage_table {
                Cond::failed(
                    "GlueFormatConflict",
                    format!(
                        "Glue table {table} reads one format, but LogDrains sharing it archive {format} ({}) and another format ({}): give each format its own table",
                        ld.metadata.name.as_deref().unwrap_or_default(),
                        conflicts.join(", ")
                    ),
                )
            } else {
                synced_condition(&table, &update, ld.app_set().len())
            };
            if update.near_limit {
                // The same words as a Warning event, for alerting on events.
                ctx.publish(
                    reference,
                    EventType::Warning,
                    "ProjectionNearLimit",
                    condition.message.clone(),
                )
                .await;
            }
            CatalogOutcome {
                condition,
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

/// The `TableFormatChanged` event.
fn format_changed(table: &TableRef, change: &StorageUpdate, s3: &crate::crd::S3Archive) -> String {
    let before = match change.from {
        Some(from) => format!(
            "; the {from} objects written before stay under s3://{}/{}{} (docs/athena.md: query them through a table of their own, or let compaction convert closed days)",
            s3.bucket,
            s3.prefix,
            from.root()
        ),
        None => String::new(),
    };
    format!(
        "Glue table {table} now reads {} objects under {} (SerDe, input and output formats, location and storage.location.template changed; projection.app.values kept){before}",
        change.to, change.location
    )
}

/// `CatalogSynced` after a successful sync: `ProjectionNearLimit` (still
/// true, but a person should split apps across tables) or `Synced`.
fn synced_condition(table: &TableRef, update: &AppsUpdate, own_apps: usize) -> Cond {
    if update.near_limit {
        return Cond::ok(
            "ProjectionNearLimit",
            format!(
                "projection.app.values of {table} lists {} apps in {} bytes, near Glue's 512,000-byte limit: split apps across tables",
                update.app_count, update.values_len
            ),
        );
    }
    Cond::ok(
        "Synced",
        format!(
            "Glue table {table} projects {} apps, {own_apps} of them from this LogDrain",
            update.app_count
        ),
    )
}

/// The UTC year the LogDrain was created (this year for an object without a
/// creation time, which the API server always sets).
fn created_year(ld: &LogDrain) -> u16 {
    ld.metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok())
        .and_then(|t| u16::try_from(t.year()).ok())
        .unwrap_or_else(utc_year_now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::ld;

    fn with_catalog(apps: &[&str], table: &str) -> LogDrain {
        let mut ld = ld(apps);
        ld.spec.catalog = serde_json::from_value(serde_json::json!({
            "glue": {"database": "logs", "table": table, "region": "eu-west-1"}
        }))
        .expect("catalog");
        ld
    }

    #[test]
    fn the_union_takes_the_apps_of_every_logdrain_sharing_the_table() {
        let me = with_catalog(&["a-app"], "heroku");
        let same = with_catalog(&["b-app"], "heroku");
        let other = with_catalog(&["c-app"], "other");
        let none = ld(&["d-app"]);
        let glue = &me.spec.catalog.as_ref().expect("catalog").glue;
        let union = table_union(&me, glue, [&me, &same, &other, &none]);
        let apps: Vec<&str> = union.iter().map(String::as_str).collect();
        assert_eq!(apps, ["a-app", "b-app"]);
    }

    #[test]
    fn logdrains_sharing_a_table_in_another_format_conflict() {
        let named = |name: &str, uid: &str, table: &str, format: crate::crd::Format| {
            let mut ld = with_catalog(&["a-app"], table);
            ld.metadata.name = Some(name.into());
            ld.metadata.namespace = Some("logs".into());
            ld.metadata.uid = Some(uid.into());
            ld.spec.archive.format = format;
            ld
        };
        use crate::crd::Format::{Json, Parquet};
        let me = named("me", "1", "heroku", Parquet);
        let same_format = named("b", "2", "heroku", Parquet);
        let other_format = named("c", "3", "heroku", Json);
        let other_table = named("d", "4", "other", Json);
        let glue = &me.spec.catalog.as_ref().expect("catalog").glue;
        assert_eq!(
            format_conflicts(&me, glue, [&me, &same_format, &other_format, &other_table]),
            ["logs/c"]
        );
        assert!(format_conflicts(&me, glue, [&me, &same_format]).is_empty());
    }

    #[test]
    fn synced_condition_warns_near_the_limit() {
        let table = TableRef::new("logs", "heroku");
        let mut update = AppsUpdate {
            added: vec!["b-app".into()],
            values_len: 11,
            app_count: 2,
            near_limit: false,
            years: None,
            columns_added: Vec::new(),
        };
        let c = synced_condition(&table, &update, 1);
        assert!(c.status);
        assert_eq!(c.reason, "Synced");
        assert_eq!(
            c.message,
            "Glue table logs.heroku projects 2 apps, 1 of them from this LogDrain"
        );
        update.near_limit = true;
        let c = synced_condition(&table, &update, 1);
        assert!(c.status, "near the limit is still in step");
        assert_eq!(c.reason, "ProjectionNearLimit");
        assert!(
            c.message.contains("split apps across tables"),
            "{}",
            c.message
        );
    }
}
