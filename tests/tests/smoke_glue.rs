//! The test moto server keeps Glue tables the way the operator will manage them: a JSON table
//! with partition projection, updated by copying the whole definition.

use std::collections::HashMap;

use aws_sdk_glue::types::{Column, DatabaseInput, SerDeInfo, StorageDescriptor, Table, TableInput};
use drainpipe_tests::env::TestEnv;

fn column(name: &str, ty: &str) -> Column {
    Column::builder()
        .name(name)
        .r#type(ty)
        .build()
        .expect("column")
}

fn projection_parameters(bucket: &str, apps: &str) -> HashMap<String, String> {
    let location = format!("s3://{bucket}/logs/${{app}}/${{year}}/${{month}}/${{day}}/");
    [
        ("classification", "json"),
        ("projection.enabled", "true"),
        ("projection.app.type", "enum"),
        ("projection.app.values", apps),
        ("projection.year.type", "integer"),
        ("projection.year.range", "2020,2099"),
        ("projection.month.type", "integer"),
        ("projection.month.range", "1,12"),
        ("projection.month.digits", "2"),
        ("projection.day.type", "integer"),
        ("projection.day.range", "1,31"),
        ("projection.day.digits", "2"),
        ("storage.location.template", &location),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// UpdateTable replaces the whole definition, so everything read must be sent back.
fn input_from(table: &Table, parameters: HashMap<String, String>) -> TableInput {
    TableInput::builder()
        .name(table.name())
        .set_description(table.description().map(str::to_string))
        .set_owner(table.owner().map(str::to_string))
        .retention(table.retention())
        .set_storage_descriptor(table.storage_descriptor().cloned())
        .set_partition_keys(Some(table.partition_keys().to_vec()))
        .set_table_type(table.table_type().map(str::to_string))
        .set_parameters(Some(parameters))
        .build()
        .expect("table input")
}

#[tokio::test]
async fn partition_projected_table_is_created_updated_and_read_back() {
    let env = TestEnv::require();
    let glue = env.glue_client();
    let database = format!("smoke_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let location = format!("s3://{}/logs/", env.bucket);

    glue.create_database()
        .database_input(
            DatabaseInput::builder()
                .name(&database)
                .description("drainpipe smoke test")
                .build()
                .expect("database input"),
        )
        .send()
        .await
        .expect("create database");

    let storage = StorageDescriptor::builder()
        .columns(column("log_ts", "string"))
        .columns(column("proc_id", "string"))
        .columns(column("status", "int"))
        .columns(column("kv", "map<string,string>"))
        .location(&location)
        .input_format("org.apache.hadoop.mapred.TextInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat")
        .serde_info(
            SerDeInfo::builder()
                .serialization_library("org.openx.data.jsonserde.JsonSerDe")
                .parameters("ignore.malformed.json", "true")
                .build(),
        )
        .build();
    let create = TableInput::builder()
        .name("logs")
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(storage)
        .partition_keys(column("app", "string"))
        .partition_keys(column("year", "int"))
        .partition_keys(column("month", "int"))
        .partition_keys(column("day", "int"))
        .set_parameters(Some(projection_parameters(&env.bucket, "alpha-app")))
        .build()
        .expect("table input");
    glue.create_table()
        .database_name(&database)
        .table_input(create)
        .send()
        .await
        .expect("create table");

    let first = glue
        .get_table()
        .database_name(&database)
        .name("logs")
        .send()
        .await
        .expect("get table")
        .table
        .expect("table in response");
    let version = first.version_id().expect("version id").to_string();

    let mut parameters = first.parameters().cloned().expect("parameters");
    parameters.insert(
        "projection.app.values".to_string(),
        "alpha-app,beta-app".to_string(),
    );
    glue.update_table()
        .database_name(&database)
        .version_id(&version)
        .table_input(input_from(&first, parameters))
        .send()
        .await
        .expect("update table");

    let table = glue
        .get_table()
        .database_name(&database)
        .name("logs")
        .send()
        .await
        .expect("get table")
        .table
        .expect("table in response");
    let params = table.parameters().expect("parameters");
    assert_eq!(params["projection.app.values"], "alpha-app,beta-app");
    assert_eq!(params["projection.app.type"], "enum");
    assert_eq!(
        params["storage.location.template"],
        format!(
            "s3://{}/logs/${{app}}/${{year}}/${{month}}/${{day}}/",
            env.bucket
        )
    );
    let keys: Vec<(&str, Option<&str>)> = table
        .partition_keys()
        .iter()
        .map(|c| (c.name(), c.r#type()))
        .collect();
    assert_eq!(
        keys,
        [
            ("app", Some("string")),
            ("year", Some("int")),
            ("month", Some("int")),
            ("day", Some("int"))
        ]
    );
    let sd = table.storage_descriptor().expect("storage descriptor");
    assert_eq!(sd.location(), Some(location.as_str()));
    assert_eq!(
        sd.serde_info().and_then(|s| s.serialization_library()),
        Some("org.openx.data.jsonserde.JsonSerDe")
    );
    let columns: Vec<&str> = sd.columns().iter().map(|c| c.name()).collect();
    assert_eq!(columns, ["log_ts", "proc_id", "status", "kv"]);
    assert_ne!(
        table.version_id(),
        Some(version.as_str()),
        "an update makes a new version"
    );

    let versions = glue
        .get_table_versions()
        .database_name(&database)
        .table_name("logs")
        .send()
        .await
        .expect("get table versions");
    assert_eq!(versions.table_versions().len(), 2);

    glue.delete_database()
        .name(&database)
        .send()
        .await
        .expect("delete database");
}

#[tokio::test]
async fn missing_table_is_entity_not_found() {
    let env = TestEnv::require();
    let glue = env.glue_client();
    let err = glue
        .get_table()
        .database_name(format!(
            "smoke_absent_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
        .name("logs")
        .send()
        .await
        .expect_err("an absent table cannot be read");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_entity_not_found_exception()),
        "expected EntityNotFoundException, got {err:?}"
    );
}
