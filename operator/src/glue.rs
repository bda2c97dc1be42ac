//! The Glue Data Catalog table Athena queries the archive through.
//!
//! The table uses partition projection, so no partitions are ever added:
//! `projection.app.values` (an enum) must list every app that has data, and
//! the operator only ever *adds* to it. Several LogDrains may share a table,
//! and data outlives a LogDrain, so removing a value would hide old logs.
//!
//! UpdateTable replaces the whole table definition, so an update copies every
//! field GetTable returned, changes one parameter, and sends the VersionId it
//! read; a ConcurrentModificationException means someone else won the race,
//! and the read-modify-write starts over. After a successful update the table
//! is read again to confirm the values are there, which also catches lost
//! updates on catalogs that do not check VersionId.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use aws_sdk_glue::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{Column, DatabaseInput, SerDeInfo, StorageDescriptor, Table, TableInput};
use drainpipe_contract::schema::{ArchiveFormat, LOCATION_TEMPLATE, PARTITION_KEYS, data_columns};

use crate::backoff;

/// Parameter holding the comma-separated app enum.
pub const APP_VALUES: &str = "projection.app.values";

/// Parameter holding the projected years, `first,last`.
pub const YEAR_RANGE: &str = "projection.year.range";

/// Parameter holding where projected partitions are, relative to nothing
/// (a whole `s3://` URL with the projection placeholders).
pub const LOCATION_TEMPLATE_PARAM: &str = "storage.location.template";

/// Parameter naming the whole-object codec of a JSON table.
pub(crate) const COMPRESSION_TYPE: &str = "compressionType";

/// Glue's limit on one table parameter value, in bytes.
pub const PARAMETER_VALUE_LIMIT: usize = 512_000;

/// `projection.app.values` longer than this counts as near the limit.
pub const NEAR_LIMIT_BYTES: usize = PARAMETER_VALUE_LIMIT * 8 / 10;

/// How Glue (and Athena, Trino's Hive connector) reads one archive format:
/// the SerDe and the Hadoop input and output formats of the table's storage
/// descriptor, and the `classification` table parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storage {
    pub serde_library: &'static str,
    pub input_format: &'static str,
    pub output_format: &'static str,
    pub classification: &'static str,
}

/// gzip JSON lines through the OpenX JSON SerDe (Athena's `json-serde`).
pub(crate) const JSON_STORAGE: Storage = Storage {
    serde_library: "org.openx.data.jsonserde.JsonSerDe",
    input_format: "org.apache.hadoop.mapred.TextInputFormat",
    output_format: "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
    classification: "json",
};

/// Parquet through Hive's Parquet SerDe: the names Athena's "Parquet SerDe"
/// page and Trino's Hive connector (`HiveStorageFormat.PARQUET`) use.
pub(crate) const PARQUET_STORAGE: Storage = Storage {
    serde_library: "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
    input_format: "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    output_format: "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    classification: "parquet",
};

/// The Glue storage of an archive format.
pub fn storage(format: ArchiveFormat) -> Storage {
    match format {
        ArchiveFormat::Json => JSON_STORAGE,
        ArchiveFormat::Parquet => PARQUET_STORAGE,
    }
}

/// A Glue table by database and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub database: String,
    pub table: String,
}

impl TableRef {
    pub fn new(database: impl Into<String>, table: impl Into<String>) -> Self {
        TableRef {
            database: database.into(),
            table: table.into(),
        }
    }
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.database, self.table)
    }
}

/// Where the archive is, for a table the operator creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// S3 bucket name (no `s3://`).
    pub bucket: String,
    /// Key prefix of the archive, `logs/` by default; a trailing `/` is added
    /// when missing, an empty prefix means the bucket root.
    pub prefix: String,
    /// Apps to put in `projection.app.values` at creation.
    pub apps: BTreeSet<String>,
    /// Inclusive range of `projection.year.range`.
    pub years: (u16, u16),
    /// How the objects the table reads are encoded; each format has its own
    /// root below the prefix ([`ArchiveFormat::root`]).
    pub format: ArchiveFormat,
}

impl TableSpec {
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        TableSpec {
            bucket: bucket.into(),
            prefix: prefix.into(),
            apps: BTreeSet::new(),
            years: year_range(None, utc_year_now(), utc_year_now()),
            format: ArchiveFormat::Json,
        }
    }

    /// The archive format the table reads (JSON unless set): its SerDe, and
    /// its location below the prefix.
    pub fn with_format(mut self, format: ArchiveFormat) -> Self {
        self.format = format;
        self
    }

    /// The years to project at creation (tests over a fixed corpus; the
    /// controller keeps the default, which starts this year).
    pub fn with_years(mut self, first: u16, last: u16) -> Self {
        self.years = (first, last);
        self
    }

    pub fn with_apps<I: IntoIterator<Item = S>, S: Into<String>>(mut self, apps: I) -> Self {
        self.apps = apps.into_iter().map(Into::into).collect();
        self
    }

    fn normalized_prefix(&self) -> String {
        let p = self.prefix.trim_start_matches('/');
        if p.is_empty() || p.ends_with('/') {
            p.to_owned()
        } else {
            format!("{p}/")
        }
    }

    /// `s3://bucket/prefix` and the format's root (the table's location):
    /// `s3://bucket/logs/` for JSON, `s3://bucket/logs/format=parquet/` for
    /// Parquet.
    pub fn location(&self) -> String {
        format!(
            "s3://{}/{}{}",
            self.bucket,
            self.normalized_prefix(),
            self.format.root()
        )
    }

    /// The location and `${app}/${year}/${month}/${day}/`, the archive layout.
    pub(crate) fn location_template(&self) -> String {
        format!("{}{LOCATION_TEMPLATE}", self.location())
    }

    /// The storage descriptor of the format, with `columns`.
    fn storage_descriptor(&self, columns: Vec<Column>) -> StorageDescriptor {
        let storage = storage(self.format);
        let mut serde = SerDeInfo::builder().serialization_library(storage.serde_library);
        if self.format == ArchiveFormat::Json {
            // One damaged line must not make every query over its day fail.
            serde = serde.parameters("ignore.malformed.json", "true");
        }
        StorageDescriptor::builder()
            .set_columns(Some(columns))
            .location(self.location())
            .input_format(storage.input_format)
            .output_format(storage.output_format)
            // Parquet compresses inside the file (its pages); the flag is
            // about whole-file codecs such as gzip.
            .compressed(self.format == ArchiveFormat::Json)
            .serde_info(serde.build())
            .build()
    }

    /// The TableInput of a new table.
    pub fn table_input(&self, name: &str) -> Result<TableInput, GlueError> {
        let columns = schema_columns()?;
        let partition_keys = PARTITION_KEYS
            .iter()
            .map(|k| {
                Column::builder()
                    .name(*k)
                    .r#type("string")
                    .comment(match *k {
                        "app" => "Heroku app name",
                        "year" => "UTC year of log_ts (YYYY)",
                        "month" => "UTC month of log_ts (MM)",
                        _ => "UTC day of log_ts (DD)",
                    })
                    .build()
                    .map_err(build_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let storage = storage(self.format);
        let sd = self.storage_descriptor(columns);
        let (y0, y1) = self.years;
        let mut params: Vec<(&str, String)> = vec![
            ("EXTERNAL", "TRUE".into()),
            ("classification", storage.classification.into()),
            ("typeOfData", "file".into()),
            ("projection.enabled", "true".into()),
            ("projection.app.type", "enum".into()),
            (
                APP_VALUES,
                join_values(self.apps.iter().map(String::as_str)),
            ),
            ("projection.year.type", "integer".into()),
            (YEAR_RANGE, format!("{y0},{y1}")),
            ("projection.month.type", "integer".into()),
            ("projection.month.range", "1,12".into()),
            ("projection.month.digits", "2".into()),
            ("projection.day.type", "integer".into()),
            ("projection.day.range", "1,31".into()),
            ("projection.day.digits", "2".into()),
            (LOCATION_TEMPLATE_PARAM, self.location_template()),
            ("drainpipe.managed", "true".into()),
        ];
        if self.format == ArchiveFormat::Json {
            params.push((COMPRESSION_TYPE, "gzip".into()));
        }
        let description = description(self.format);
        TableInput::builder()
            .name(name)
            .description(description)
            .table_type("EXTERNAL_TABLE")
            .storage_descriptor(sd)
            .set_partition_keys(Some(partition_keys))
            .set_parameters(Some(
                params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .build()
            .map_err(build_error)
    }
}

/// The description drainpipe gives a table of `format`.
fn description(format: ArchiveFormat) -> &'static str {
    match format {
        ArchiveFormat::Json => {
            "Heroku application logs archived by drainpipe (gzip JSON lines, partition projection)"
        }
        ArchiveFormat::Parquet => {
            "Heroku application logs archived by drainpipe (Parquet, partition projection)"
        }
    }
}

/// What [`Catalog::ensure_apps`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppsUpdate {
    /// Apps this call added to `projection.app.values` (sorted).
    pub added: Vec<String>,
    /// Length in bytes of `projection.app.values` afterwards.
    pub values_len: usize,
    /// Number of apps in `projection.app.values` afterwards.
    pub app_count: usize,
    /// The values passed 80% of Glue's 512,000-byte parameter limit.
    pub near_limit: bool,
    /// The new `projection.year.range`, when this call changed it.
    pub years: Option<(u16, u16)>,
    /// Data columns this call added because the record schema gained fields
    /// (a table created by an older drainpipe).
    pub columns_added: Vec<String>,
}

/// What [`Catalog::ensure_storage`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageUpdate {
    /// The format the table read before, `None` when its SerDe was neither
    /// of drainpipe's.
    pub from: Option<ArchiveFormat>,
    pub to: ArchiveFormat,
    /// The table's location now.
    pub location: String,
}

/// What `projection.year.range` a drainpipe-managed table should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YearPolicy {
    /// The year the LogDrain was created: its first logs are from then.
    pub created: u16,
    /// This year (UTC).
    pub now: u16,
}

/// The projected years: from the earliest year the table already projects or
/// `created`, whichever is earlier (never shrinking below a year that may
/// have data), to the year after `now`, so the first queries of a new year,
/// and messages whose clock runs ahead, find their partitions before the
/// next resync extends the range. A projection of 2020-2099 made Athena list
/// 80 years of prefixes for a query without a date filter; this one lists the
/// years drainpipe has been writing, plus one.
pub fn year_range(current: Option<&str>, created: u16, now: u16) -> (u16, u16) {
    let first = current
        .and_then(|text| text.split_once(','))
        .and_then(|(first, _)| first.trim().parse::<u16>().ok())
        .map_or(created, |first| first.min(created));
    (first.min(now), now.saturating_add(1))
}

/// The current year in UTC.
pub fn utc_year_now() -> u16 {
    u16::try_from(time::OffsetDateTime::now_utc().year()).unwrap_or(u16::MAX)
}

/// A failed catalog call; messages are for a status condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlueError {
    #[error("Glue database {database} does not exist (set catalog.glue.manageTable to create it)")]
    DatabaseNotFound { database: String },
    #[error("Glue table {table} does not exist (set catalog.glue.manageTable to create it)")]
    TableNotFound { table: TableRef },
    #[error("Glue denied {operation}: {message} (check the operator's IAM permissions)")]
    AccessDenied {
        operation: &'static str,
        message: String,
    },
    #[error(
        "Glue table {table} kept changing under {operation}: gave up after {attempts} attempts"
    )]
    Conflict {
        table: TableRef,
        operation: &'static str,
        attempts: u32,
    },
    #[error("Glue table {table} cannot be managed: {reason}")]
    InvalidTable { table: TableRef, reason: String },
    #[error(
        "projection.app.values of {table} would be {len} bytes, over Glue's limit of {PARAMETER_VALUE_LIMIT}"
    )]
    TooManyApps { table: TableRef, len: usize },
    #[error("Glue {operation} failed: {code}: {message}")]
    Service {
        operation: &'static str,
        code: String,
        message: String,
    },
    #[error("cannot reach Glue for {operation}: {message}")]
    Transport {
        operation: &'static str,
        message: String,
    },
    #[error("cannot build a Glue request: {0}")]
    Build(String),
}

impl GlueError {
    /// A fixed, low-cardinality name for metrics labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            GlueError::DatabaseNotFound { .. } => "database_not_found",
            GlueError::TableNotFound { .. } => "table_not_found",
            GlueError::AccessDenied { .. } => "access_denied",
            GlueError::Conflict { .. } => "conflict",
            GlueError::InvalidTable { .. } => "invalid_table",
            GlueError::TooManyApps { .. } => "too_many_apps",
            GlueError::Service { .. } => "service",
            GlueError::Transport { .. } => "transport",
            GlueError::Build(_) => "build",
        }
    }

    /// The status condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            GlueError::DatabaseNotFound { .. } | GlueError::TableNotFound { .. } => {
                "GlueTableNotFound"
            }
            GlueError::AccessDenied { .. } => "GlueAccessDenied",
            GlueError::TooManyApps { .. } => "GlueTooManyApps",
            GlueError::InvalidTable { .. } => "GlueInvalidTable",
            _ => "GlueError",
        }
    }

    /// True when retrying later may succeed with nothing changed.
    pub fn is_transient(&self) -> bool {
        match self {
            GlueError::Conflict { .. } | GlueError::Transport { .. } => true,
            GlueError::Service { code, .. } => matches!(
                code.as_str(),
                "InternalServiceException"
                    | "OperationTimeoutException"
                    | "ThrottlingException"
                    | "ResourceNotReadyException"
            ),
            _ => false,
        }
    }
}

fn build_error(e: aws_smithy_types_build::BuildError) -> GlueError {
    GlueError::Build(e.to_string())
}

// The BuildError type lives in aws-smithy-types; reach it through the SDK's
// re-export so no extra dependency is needed.
mod aws_smithy_types_build {
    pub use aws_sdk_glue::error::BuildError;
}

/// The error code and message of an SDK error, or a transport failure.
enum Failure {
    Code { code: String, message: String },
    Transport(String),
}

fn failure<E, R>(err: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(_) => Failure::Code {
            code: err.code().unwrap_or("Unknown").to_owned(),
            message: err.message().unwrap_or("").to_owned(),
        },
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Failure::Transport(aws_sdk_glue::error::DisplayErrorContext(&err).to_string())
        }
        _ => Failure::Code {
            code: err.code().unwrap_or("Unknown").to_owned(),
            message: aws_sdk_glue::error::DisplayErrorContext(&err).to_string(),
        },
    }
}

fn general(operation: &'static str, f: Failure) -> GlueError {
    match f {
        Failure::Transport(message) => GlueError::Transport { operation, message },
        Failure::Code { code, message } if code == "AccessDeniedException" => {
            GlueError::AccessDenied { operation, message }
        }
        Failure::Code { code, message } => GlueError::Service {
            operation,
            code,
            message,
        },
    }
}

/// How hard to retry a read-modify-write that keeps losing races.
#[derive(Debug, Clone, Copy)]
pub struct ConflictRetry {
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for ConflictRetry {
    fn default() -> Self {
        ConflictRetry {
            max_attempts: 10,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

type TableLocks = Arc<Mutex<HashMap<TableRef, Arc<tokio::sync::Mutex<()>>>>>;

/// Per-table locks shared by every `Catalog` of the process, however the
/// caller builds them (one per reconcile, one per region...).
static PROCESS_LOCKS: LazyLock<TableLocks> = LazyLock::new(TableLocks::default);

/// Glue catalog operations.
///
/// Updates of one table by this process are serialised by a process-wide
/// lock per table, so two reconciles never race each other; races with other
/// processes are settled by VersionId and the retry on
/// ConcurrentModificationException.
#[derive(Debug, Clone)]
pub struct Catalog {
    client: aws_sdk_glue::Client,
    retry: ConflictRetry,
    locks: TableLocks,
}

impl Catalog {
    pub fn new(client: aws_sdk_glue::Client) -> Self {
        Catalog {
            client,
            retry: ConflictRetry::default(),
            locks: PROCESS_LOCKS.clone(),
        }
    }

    /// Gives this catalog (and its clones) locks of its own, as if it ran in
    /// another process: for tests of cross-process races.
    pub fn with_private_locks(mut self) -> Self {
        self.locks = TableLocks::default();
        self
    }

    pub fn with_retry(mut self, retry: ConflictRetry) -> Self {
        self.retry = retry;
        self
    }

    pub fn client(&self) -> &aws_sdk_glue::Client {
        &self.client
    }

    fn table_lock(&self, t: &TableRef) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(t.clone()).or_default().clone()
    }

    /// Creates the database and the table when missing (for `manageTable`).
    /// An existing table is never replaced or reshaped (a person may have
    /// tuned it); its apps are reconciled by [`Catalog::ensure_apps`].
    /// Returns true when the table was created by this call.
    pub async fn ensure_table(&self, t: &TableRef, spec: &TableSpec) -> Result<bool, GlueError> {
        self.ensure_database(&t.database).await?;
        if self.get_table_opt(t).await?.is_some() {
            return Ok(false);
        }
        let values_len = join_values(spec.apps.iter().map(String::as_str)).len();
        if values_len > PARAMETER_VALUE_LIMIT {
            return Err(GlueError::TooManyApps {
                table: t.clone(),
                len: values_len,
            });
        }
        let input = spec.table_input(&t.table)?;
        let res = self
            .client
            .create_table()
            .database_name(&t.database)
            .table_input(input)
            .send()
            .await;
        match res {
            Ok(_) => {
                tracing::info!(table = %t, "created Glue table");
                Ok(true)
            }
            Err(e) => match failure(e) {
                // Another reconcile created it between our read and our create.
                Failure::Code { code, .. } if code == "AlreadyExistsException" => Ok(false),
                Failure::Code { code, .. } if code == "EntityNotFoundException" => {
                    Err(GlueError::DatabaseNotFound {
                        database: t.database.clone(),
                    })
                }
                f => Err(general("CreateTable", f)),
            },
        }
    }

    /// Creates the database when missing; true when this call created it.
    pub async fn ensure_database(&self, database: &str) -> Result<bool, GlueError> {
        match self.client.get_database().name(database).send().await {
            Ok(_) => return Ok(false),
            Err(e) => match failure(e) {
                Failure::Code { code, .. } if code == "EntityNotFoundException" => {}
                f => return Err(general("GetDatabase", f)),
            },
        }
        let input = DatabaseInput::builder()
            .name(database)
            .description("Heroku log archives (drainpipe)")
            .build()
            .map_err(build_error)?;
        match self
            .client
            .create_database()
            .database_input(input)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(database, "created Glue database");
                Ok(true)
            }
            Err(e) => match failure(e) {
                Failure::Code { code, .. } if code == "AlreadyExistsException" => Ok(false),
                f => Err(general("CreateDatabase", f)),
            },
        }
    }

    /// Makes `projection.app.values` a superset of `apps`: adds what is
    /// missing, keeps everything already there (in its order), never removes.
    /// No write when nothing is missing.
    pub async fn ensure_apps(
        &self,
        t: &TableRef,
        apps: &BTreeSet<String>,
    ) -> Result<AppsUpdate, GlueError> {
        self.ensure_projection(t, apps, None).await
    }

    /// [`Catalog::ensure_apps`], and for a table drainpipe manages (`years`
    /// given) also the year range of [`year_range`] and the data columns the
    /// record schema gained since the table was made, in the same
    /// read-modify-write.
    pub async fn ensure_projection(
        &self,
        t: &TableRef,
        apps: &BTreeSet<String>,
        years: Option<YearPolicy>,
    ) -> Result<AppsUpdate, GlueError> {
        let lock = self.table_lock(t);
        let _held = lock.lock().await;
        let mut added: BTreeSet<String> = BTreeSet::new();
        let mut years_changed = None;
        let mut columns_added = Vec::new();
        let mut attempts = 0u32;
        loop {
            let table = self.get_table(t).await?;
            check_manageable(t, &table)?;
            let current_text = table
                .parameters()
                .and_then(|p| p.get(APP_VALUES))
                .map(String::as_str)
                .unwrap_or("");
            let current = parse_values(current_text);
            let present: BTreeSet<&str> = current.iter().map(String::as_str).collect();
            let missing: Vec<&String> = apps
                .iter()
                .filter(|a| !present.contains(a.as_str()))
                .collect();
            let year_text = years.and_then(|y| {
                let current = table.parameters().and_then(|p| p.get(YEAR_RANGE));
                let (first, last) = year_range(current.map(String::as_str), y.created, y.now);
                let want = format!("{first},{last}");
                (current != Some(&want)).then_some(want)
            });
            let new_columns = if years.is_some() {
                missing_columns(&table)?
            } else {
                Vec::new()
            };
            if missing.is_empty() && year_text.is_none() && new_columns.is_empty() {
                let values_len = current_text.len();
                return Ok(AppsUpdate {
                    added: added.into_iter().collect(),
                    values_len,
                    app_count: present.len(),
                    near_limit: values_len > NEAR_LIMIT_BYTES,
                    years: years_changed,
                    columns_added,
                });
            }
            attempts = self.next_attempt(t, attempts)?;
            let new_text = join_values(
                current
                    .iter()
                    .map(String::as_str)
                    .chain(missing.iter().map(|s| s.as_str())),
            );
            if new_text.len() > PARAMETER_VALUE_LIMIT {
                return Err(GlueError::TooManyApps {
                    table: t.clone(),
                    len: new_text.len(),
                });
            }
            let version = table.version_id().map(str::to_owned);
            let mut table = table;
            if let Some(sd) = table.storage_descriptor.as_mut() {
                sd.columns
                    .get_or_insert_with(Vec::new)
                    .extend(new_columns.iter().cloned());
            }
            let input = table_input_from(table, |params| {
                params.insert(APP_VALUES.to_owned(), new_text.clone());
                if let Some(y) = &year_text {
                    params.insert(YEAR_RANGE.to_owned(), y.clone());
                }
            })?;
            if self.send_update(t, input, version, attempts).await? {
                let column_names: Vec<String> =
                    new_columns.iter().map(|c| c.name().to_owned()).collect();
                tracing::info!(table = %t, added = ?missing, years = ?year_text, columns = ?column_names, "updated Glue table");
                added.extend(missing.into_iter().cloned());
                columns_added.extend(column_names);
                if let Some(y) = &year_text {
                    years_changed = y
                        .split_once(',')
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                }
            }
            // Loop: re-read to confirm (and to count) before returning, or
            // to start over after a concurrent change.
        }
    }

    /// Points a table drainpipe manages at `spec`'s format: its SerDe,
    /// input and output formats, location and `storage.location.template`
    /// (and `classification`, `compressionType`). Columns, partition keys
    /// and every other parameter stay, `projection.app.values` above all:
    /// the apps are the same whatever the encoding. No write when the table
    /// already reads the format at its location. Returns what changed.
    pub async fn ensure_storage(
        &self,
        t: &TableRef,
        spec: &TableSpec,
    ) -> Result<Option<StorageUpdate>, GlueError> {
        let lock = self.table_lock(t);
        let _held = lock.lock().await;
        let want = storage(spec.format);
        let location = spec.location();
        let template = spec.location_template();
        let mut attempts = 0u32;
        let mut changed = None;
        loop {
            let table = self.get_table(t).await?;
            check_manageable(t, &table)?;
            let sd = table.storage_descriptor();
            let serde_library = sd
                .and_then(|sd| sd.serde_info())
                .and_then(|s| s.serialization_library());
            let template_now = table
                .parameters()
                .and_then(|p| p.get(LOCATION_TEMPLATE_PARAM))
                .map(String::as_str);
            if serde_library == Some(want.serde_library)
                && sd.and_then(|sd| sd.input_format()) == Some(want.input_format)
                && sd.and_then(|sd| sd.output_format()) == Some(want.output_format)
                && sd.and_then(|sd| sd.location()) == Some(location.as_str())
                && template_now == Some(template.as_str())
            {
                return Ok(changed);
            }
            attempts = self.next_attempt(t, attempts)?;
            let from = [ArchiveFormat::Json, ArchiveFormat::Parquet]
                .into_iter()
                .find(|f| serde_library == Some(storage(*f).serde_library));
            let version = table.version_id().map(str::to_owned);
            let mut table = table;
            // drainpipe's own description follows; a person's stays.
            if let Some(from) = from
                && table.description.as_deref() == Some(description(from))
            {
                table.description = Some(description(spec.format).to_owned());
            }
            if let Some(sd) = table.storage_descriptor.as_mut() {
                let fresh = spec.storage_descriptor(Vec::new());
                sd.serde_info = fresh.serde_info;
                sd.input_format = fresh.input_format;
                sd.output_format = fresh.output_format;
                sd.compressed = fresh.compressed;
                sd.location = fresh.location;
            }
            let input = table_input_from(table, |params| {
                params.insert("classification".to_owned(), want.classification.to_owned());
                params.insert(LOCATION_TEMPLATE_PARAM.to_owned(), template.clone());
                match spec.format {
                    ArchiveFormat::Json => {
                        params.insert(COMPRESSION_TYPE.to_owned(), "gzip".to_owned());
                    }
                    ArchiveFormat::Parquet => {
                        params.remove(COMPRESSION_TYPE);
                    }
                }
            })?;
            if self.send_update(t, input, version, attempts).await? {
                tracing::info!(table = %t, format = %spec.format, %location, "switched Glue table format");
                changed = Some(StorageUpdate {
                    from,
                    to: spec.format,
                    location: location.clone(),
                });
            }
            // Loop: re-read to confirm.
        }
    }

    /// The number of the next UpdateTable attempt, or the conflict error
    /// once the retries are spent.
    fn next_attempt(&self, t: &TableRef, attempts: u32) -> Result<u32, GlueError> {
        if attempts >= self.retry.max_attempts {
            return Err(GlueError::Conflict {
                table: t.clone(),
                operation: "UpdateTable",
                attempts,
            });
        }
        Ok(attempts + 1)
    }

    /// One UpdateTable at the VersionId read (`version`): true when Glue
    /// took it, false when another writer changed the table first (after a
    /// backoff by `attempts`; read it again and redo the change).
    async fn send_update(
        &self,
        t: &TableRef,
        input: TableInput,
        version: Option<String>,
        attempts: u32,
    ) -> Result<bool, GlueError> {
        let mut req = self
            .client
            .update_table()
            .database_name(&t.database)
            .table_input(input);
        if let Some(v) = version {
            req = req.version_id(v);
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) => match failure(e) {
                Failure::Code { code, message } if code == "ConcurrentModificationException" => {
                    tracing::debug!(table = %t, %message, "Glue table changed concurrently; retrying");
                    tokio::time::sleep(backoff::exponential(
                        self.retry.backoff_base,
                        self.retry.backoff_max,
                        attempts.saturating_sub(1),
                    ))
                    .await;
                    Ok(false)
                }
                Failure::Code { code, .. } if code == "EntityNotFoundException" => {
                    Err(GlueError::TableNotFound { table: t.clone() })
                }
                f => Err(general("UpdateTable", f)),
            },
        }
    }

    /// The apps in `projection.app.values` now.
    pub async fn projected_apps(&self, t: &TableRef) -> Result<BTreeSet<String>, GlueError> {
        let table = self.get_table(t).await?;
        Ok(table
            .parameters()
            .and_then(|p| p.get(APP_VALUES))
            .map(|v| parse_values(v).into_iter().collect())
            .unwrap_or_default())
    }

    /// The table as Glue has it.
    pub async fn get_table(&self, t: &TableRef) -> Result<Table, GlueError> {
        self.get_table_opt(t)
            .await?
            .ok_or_else(|| GlueError::TableNotFound { table: t.clone() })
    }

    async fn get_table_opt(&self, t: &TableRef) -> Result<Option<Table>, GlueError> {
        let res = self
            .client
            .get_table()
            .database_name(&t.database)
            .name(&t.table)
            .send()
            .await;
        match res {
            Ok(out) => Ok(out.table),
            Err(e) => match failure(e) {
                Failure::Code { code, .. } if code == "EntityNotFoundException" => Ok(None),
                f => Err(general("GetTable", f)),
            },
        }
    }
}

/// Views and federated tables have fields a TableInput cannot carry back.
fn check_manageable(t: &TableRef, table: &Table) -> Result<(), GlueError> {
    let reason = if table.view_definition().is_some()
        || table.view_original_text().is_some()
        || table.table_type() == Some("VIRTUAL_VIEW")
    {
        Some("it is a view")
    } else if table.federated_table().is_some() {
        Some("it is a federated table")
    } else if table.storage_descriptor().is_none() {
        Some("it has no storage descriptor")
    } else {
        None
    };
    match reason {
        Some(r) => Err(GlueError::InvalidTable {
            table: t.clone(),
            reason: r.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Every TableInput field from a GetTable result, with `edit` applied to the
/// parameters. Fields of `Table` that are not in `TableInput` (create and
/// update times, version, catalog id, creator, Lake Formation flags, status)
/// are output-only and Glue keeps them itself.
pub fn table_input_from(
    table: Table,
    edit: impl FnOnce(&mut HashMap<String, String>),
) -> Result<TableInput, GlueError> {
    let mut params = table.parameters.unwrap_or_default();
    edit(&mut params);
    TableInput::builder()
        .name(table.name)
        .set_description(table.description)
        .set_owner(table.owner)
        .set_last_access_time(table.last_access_time)
        .set_last_analyzed_time(table.last_analyzed_time)
        .retention(table.retention)
        .set_storage_descriptor(table.storage_descriptor)
        .set_partition_keys(table.partition_keys)
        .set_view_original_text(table.view_original_text)
        .set_view_expanded_text(table.view_expanded_text)
        .set_table_type(table.table_type)
        .set_parameters(Some(params))
        .set_target_table(table.target_table)
        .build()
        .map_err(build_error)
}

/// Record-schema fields the table has no data column for, as Glue columns in
/// schema order. New fields are appended, never reordered: the OpenX JSON
/// SerDe maps JSON keys to columns by name, so old objects read the new
/// columns as null.
fn missing_columns(table: &Table) -> Result<Vec<Column>, GlueError> {
    let have: BTreeSet<&str> = table
        .storage_descriptor()
        .map(|sd| sd.columns().iter().map(Column::name).collect())
        .unwrap_or_default();
    Ok(schema_columns()?
        .into_iter()
        .filter(|c| !have.contains(c.name()))
        .collect())
}

/// The data columns of the record schema, as Glue columns.
fn schema_columns() -> Result<Vec<Column>, GlueError> {
    data_columns()
        .map(|f| {
            Column::builder()
                .name(f.name)
                .r#type(f.kind.hive())
                .comment(f.comment)
                .build()
                .map_err(build_error)
        })
        .collect()
}

/// The enum values as Athena reads them: comma-separated, blanks ignored,
/// duplicates dropped (first occurrence kept).
pub(crate) fn parse_values(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    text.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .filter(|v| seen.insert(*v))
        .map(str::to_owned)
        .collect()
}

fn join_values<'a>(values: impl Iterator<Item = &'a str>) -> String {
    values.collect::<Vec<_>>().join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use drainpipe_contract::schema::FIELDS;

    #[test]
    fn columns_follow_the_record_schema() {
        let input = TableSpec::new("bucket", "logs/")
            .table_input("logs")
            .unwrap();
        let sd = input.storage_descriptor().unwrap();
        assert_eq!(sd.columns().len(), FIELDS.len() - 1, "every field but app");
        assert!(sd.columns().iter().all(|c| c.name() != "app"));
        for (c, f) in sd.columns().iter().zip(data_columns()) {
            assert_eq!(c.name(), f.name);
            assert_eq!(c.r#type(), Some(f.kind.hive()));
            assert_eq!(c.comment(), Some(f.comment));
        }
        let kv = sd.columns().iter().find(|c| c.name() == "kv").unwrap();
        assert_eq!(kv.r#type(), Some("map<string,string>"));
        assert_eq!(
            sd.serde_info().unwrap().serialization_library(),
            Some(JSON_STORAGE.serde_library)
        );
        assert_eq!(sd.input_format(), Some(JSON_STORAGE.input_format));
        assert_eq!(sd.output_format(), Some(JSON_STORAGE.output_format));
        assert_eq!(input.table_type(), Some("EXTERNAL_TABLE"));
        let keys: Vec<_> = input
            .partition_keys()
            .iter()
            .map(|c| (c.name(), c.r#type()))
            .collect();
        assert_eq!(
            keys,
            [
                ("app", Some("string")),
                ("year", Some("string")),
                ("month", Some("string")),
                ("day", Some("string"))
            ]
        );
    }

    #[test]
    fn year_range_covers_the_data_and_follows_the_calendar() {
        // A new table: from the LogDrain's creation year to next year.
        assert_eq!(year_range(None, 2026, 2026), (2026, 2027));
        // A new year started: the end moves, the start stays.
        assert_eq!(year_range(Some("2026,2027"), 2026, 2027), (2026, 2028));
        // An older table (the 2020-2099 default before) keeps its first year,
        // which may have data, and stops listing eight decades of future.
        assert_eq!(year_range(Some("2020,2099"), 2026, 2026), (2020, 2027));
        // A LogDrain older than the table's range widens it backwards.
        assert_eq!(year_range(Some("2026,2027"), 2024, 2026), (2024, 2027));
        // Something unreadable is replaced by the LogDrain's own years.
        assert_eq!(year_range(Some("from 2020"), 2025, 2026), (2025, 2027));
    }

    #[test]
    fn projection_parameters_match_the_archive_layout() {
        let spec = TableSpec::new("archive-bucket", "logs").with_apps(["b-app", "a-app"]);
        let now = utc_year_now();
        assert_eq!(spec.years, (now, now + 1), "this year and the next, not 80");
        let input = spec.with_years(2026, 2027).table_input("logs").unwrap();
        let p = input.parameters().unwrap();
        assert_eq!(p["projection.enabled"], "true");
        assert_eq!(p["projection.app.type"], "enum");
        assert_eq!(p[APP_VALUES], "a-app,b-app");
        assert_eq!(p["projection.year.type"], "integer");
        assert_eq!(p[YEAR_RANGE], "2026,2027");
        assert_eq!(p["projection.month.digits"], "2");
        assert_eq!(p["projection.day.digits"], "2");
        assert_eq!(p["projection.day.range"], "1,31");
        assert_eq!(
            p["storage.location.template"],
            "s3://archive-bucket/logs/${app}/${year}/${month}/${day}/"
        );
        assert_eq!(p["classification"], "json");
        assert_eq!(p["compressionType"], "gzip");
        assert_eq!(
            input.storage_descriptor().unwrap().location(),
            Some("s3://archive-bucket/logs/")
        );
    }

    #[test]
    fn a_parquet_table_reads_the_parquet_root_with_the_same_columns_and_projection() {
        let json = TableSpec::new("archive-bucket", "logs")
            .with_apps(["a-app"])
            .with_years(2026, 2027);
        let parquet = json.clone().with_format(ArchiveFormat::Parquet);
        assert_eq!(json.format, ArchiveFormat::Json, "JSON unless set");
        let j = json.table_input("logs").unwrap();
        let p = parquet.table_input("logs").unwrap();
        let sd = p.storage_descriptor().unwrap();
        let serde = sd.serde_info().unwrap();
        assert_eq!(
            serde.serialization_library(),
            Some("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
        );
        assert!(
            serde
                .parameters()
                .is_none_or(|p| !p.contains_key("ignore.malformed.json")),
            "a JSON SerDe option"
        );
        assert_eq!(
            sd.input_format(),
            Some("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
        );
        assert_eq!(
            sd.output_format(),
            Some("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
        );
        assert_eq!(
            sd.location(),
            Some("s3://archive-bucket/logs/format=parquet/")
        );
        assert_eq!(
            sd.columns(),
            j.storage_descriptor().unwrap().columns(),
            "the same columns"
        );
        assert_eq!(p.partition_keys(), j.partition_keys());
        let (pp, jp) = (p.parameters().unwrap(), j.parameters().unwrap());
        assert_eq!(pp["classification"], "parquet");
        assert!(!pp.contains_key("compressionType"));
        assert_eq!(
            pp[LOCATION_TEMPLATE_PARAM],
            "s3://archive-bucket/logs/format=parquet/${app}/${year}/${month}/${day}/"
        );
        for (k, v) in jp {
            if k.starts_with("projection.") {
                assert_eq!(pp.get(k), Some(v), "{k}");
            }
        }
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(TableSpec::new("b", "").location(), "s3://b/");
        assert_eq!(TableSpec::new("b", "/x/y").location(), "s3://b/x/y/");
        assert_eq!(
            TableSpec::new("b", "").location_template(),
            "s3://b/${app}/${year}/${month}/${day}/"
        );
    }

    #[test]
    fn values_parse_like_athena_reads_them() {
        assert_eq!(parse_values(""), Vec::<String>::new());
        assert_eq!(parse_values("a, b,,a ,c"), ["a", "b", "c"]);
    }

    #[test]
    fn table_input_from_copies_every_field_and_edits_parameters() {
        let spec = TableSpec::new("b", "logs/").with_apps(["x"]);
        let input = spec.table_input("t").unwrap();
        let ts = aws_sdk_glue::primitives::DateTime::from_secs(1_700_000_000);
        let table = Table::builder()
            .name("t")
            .database_name("db")
            .description("d")
            .owner("o")
            .last_access_time(ts)
            .last_analyzed_time(ts)
            .retention(7)
            .storage_descriptor(input.storage_descriptor().unwrap().clone())
            .set_partition_keys(Some(input.partition_keys().to_vec()))
            .table_type("EXTERNAL_TABLE")
            .set_parameters(input.parameters().cloned())
            .version_id("3")
            .build()
            .unwrap();
        let out = table_input_from(table, |p| {
            p.insert(APP_VALUES.into(), "x,y".into());
        })
        .unwrap();
        assert_eq!(out.name(), "t");
        assert_eq!(out.description(), Some("d"));
        assert_eq!(out.owner(), Some("o"));
        assert_eq!(out.last_access_time(), Some(&ts));
        assert_eq!(out.last_analyzed_time(), Some(&ts));
        assert_eq!(out.retention(), 7);
        assert_eq!(out.storage_descriptor(), input.storage_descriptor());
        assert_eq!(out.partition_keys(), input.partition_keys());
        assert_eq!(out.table_type(), Some("EXTERNAL_TABLE"));
        let mut expected = input.parameters().unwrap().clone();
        expected.insert(APP_VALUES.into(), "x,y".into());
        assert_eq!(out.parameters(), Some(&expected));
    }

    #[test]
    fn near_limit_is_eighty_percent_of_glues_limit() {
        assert_eq!(NEAR_LIMIT_BYTES, 409_600);
    }

    #[test]
    fn errors_have_labels_and_actionable_messages() {
        let e = GlueError::TableNotFound {
            table: TableRef::new("db", "t"),
        };
        assert_eq!(e.metric_label(), "table_not_found");
        assert!(e.to_string().contains("db.t") && e.to_string().contains("manageTable"));
        assert!(
            GlueError::Conflict {
                table: TableRef::new("db", "t"),
                operation: "UpdateTable",
                attempts: 3
            }
            .is_transient()
        );
    }
}
