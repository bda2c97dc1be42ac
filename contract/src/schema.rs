//! The archive's shape: the fields of every record (Glue columns derive from
//! them) and where objects go (the Glue location template derives from it).

/// Column type as Athena/Hive sees it through the OpenX JSON SerDe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int,
    BigInt,
    /// `map<string,string>`
    StringMap,
}

impl FieldType {
    /// The Hive DDL spelling used in a Glue `Column.Type`.
    pub fn hive(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int => "int",
            FieldType::BigInt => "bigint",
            FieldType::StringMap => "map<string,string>",
        }
    }
}

/// One field of the record schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: FieldType,
    pub comment: &'static str,
}

const fn f(name: &'static str, kind: FieldType, comment: &'static str) -> Field {
    Field {
        name,
        kind,
        comment,
    }
}

/// Every field of an archive record, in the order the writer emits them.
pub const FIELDS: &[Field] = &[
    f(
        "app",
        FieldType::String,
        "Heroku app name (from the drain URL or token)",
    ),
    f(
        "log_ts",
        FieldType::String,
        "message timestamp, RFC 3339 UTC with microseconds; receipt time when missing or unparseable",
    ),
    f(
        "received_at",
        FieldType::String,
        "receipt time, RFC 3339 UTC with microseconds",
    ),
    f("facility", FieldType::Int, "syslog facility from PRI"),
    f("severity", FieldType::Int, "syslog severity from PRI"),
    f(
        "hostname",
        FieldType::String,
        "HOSTNAME: `host` on HTTPS drains, the drain token on syslog drains",
    ),
    f("source", FieldType::String, "APP-NAME: app, heroku, ..."),
    f(
        "proc_id",
        FieldType::String,
        "PROCID: web.1, router, api, ...",
    ),
    f("msg_id", FieldType::String, "MSGID, null for -"),
    f(
        "message",
        FieldType::String,
        "message text; invalid UTF-8 replaced by U+FFFD",
    ),
    f(
        "message_b64",
        FieldType::String,
        "exact message bytes, base64, only when they were not valid UTF-8",
    ),
    f(
        "drain_token",
        FieldType::String,
        "Logplex-Drain-Token header",
    ),
    f("frame_id", FieldType::String, "Logplex-Frame-Id header"),
    f(
        "kv",
        FieldType::StringMap,
        "logfmt pairs found in the message",
    ),
    f("at", FieldType::String, "router: info or error"),
    f(
        "code",
        FieldType::String,
        "router: Heroku error code (H12, ...)",
    ),
    f("desc", FieldType::String, "router: error description"),
    f("method", FieldType::String, "router: HTTP method"),
    f("path", FieldType::String, "router: request path"),
    f("host", FieldType::String, "router: request Host"),
    f("request_id", FieldType::String, "router: X-Request-ID"),
    f("fwd", FieldType::String, "router: X-Forwarded-For"),
    f(
        "dyno",
        FieldType::String,
        "router: dyno that served the request",
    ),
    f("protocol", FieldType::String, "router: http or https"),
    f("connect_ms", FieldType::Int, "router: connect time in ms"),
    f("service_ms", FieldType::Int, "router: service time in ms"),
    f("status", FieldType::Int, "router: HTTP status"),
    f("bytes", FieldType::BigInt, "router: response bytes"),
    f(
        "l10_dropped",
        FieldType::BigInt,
        "N from Logplex `Error L10 (output buffer overflow): N messages dropped`",
    ),
    f(
        "parse_error",
        FieldType::String,
        "why the frame is not RFC 5424 or the OTLP request does not decode; message then holds the raw bytes",
    ),
    // OTLP log records (Fir telemetry drains); null/empty on Logplex records.
    // New fields go last: Glue gains them as new trailing columns.
    f(
        "trace_id",
        FieldType::String,
        "OTLP: trace id, 32 lowercase hex digits",
    ),
    f(
        "span_id",
        FieldType::String,
        "OTLP: span id, 16 lowercase hex digits",
    ),
    f(
        "severity_text",
        FieldType::String,
        "OTLP: severity text as sent (INFO, error, ...)",
    ),
    f(
        "attributes",
        FieldType::StringMap,
        "OTLP: log record attributes; nested maps flattened with dotted keys, arrays as JSON",
    ),
    f(
        "resource",
        FieldType::StringMap,
        "OTLP: resource attributes (service.name, ...), flattened like attributes",
    ),
];

/// Partition keys, in the order of the archive layout.
pub const PARTITION_KEYS: [&str; 4] = ["app", "year", "month", "day"];

/// The record fields that become data columns: every field except those
/// that are also partition keys (`app`). Athena rejects a table whose data
/// column and partition key share a name (`HIVE_INVALID_METADATA ... duplicate
/// columns`); the partition key gives the same value.
pub fn data_columns() -> impl Iterator<Item = &'static Field> {
    FIELDS.iter().filter(|f| !PARTITION_KEYS.contains(&f.name))
}

/// The folder of one app's objects for one UTC day, below the archive prefix:
/// `{app}/{YYYY}/{MM}/{DD}/`. [`LOCATION_TEMPLATE`] names the same folders.
pub fn day_folder(app: &str, year: i32, month: u8, day: u8) -> String {
    format!("{app}/{year:04}/{month:02}/{day:02}/")
}

/// The Glue `storage.location.template` below the format's root (see
/// [`ArchiveFormat::root`]), with Athena's projection placeholders in
/// [`PARTITION_KEYS`] order.
pub const LOCATION_TEMPLATE: &str = "${app}/${year}/${month}/${day}/";

/// How archive objects are encoded (`--format`, `spec.archive.format`).
///
/// With partition projection Athena reads every object under a table with the
/// table's one SerDe, so the two formats never share folders: JSON objects
/// stay where they always were (`{prefix}{app}/...`), Parquet objects go
/// below [`ArchiveFormat::root`] (`{prefix}format=parquet/{app}/...`), and a
/// Parquet LogDrain's table points there.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveFormat {
    /// gzip JSON lines, read through the OpenX JSON SerDe.
    #[default]
    Json,
    /// Apache Parquet (ZSTD), read through Hive's Parquet SerDe.
    Parquet,
}

impl ArchiveFormat {
    /// The folder below the archive prefix that holds this format's app
    /// folders. `=` never appears in an app name, so the Parquet root can
    /// never be taken for (or hide) an app's JSON folder.
    pub fn root(self) -> &'static str {
        match self {
            ArchiveFormat::Json => "",
            ArchiveFormat::Parquet => "format=parquet/",
        }
    }

    /// How every object key of this format ends.
    pub fn extension(self) -> &'static str {
        match self {
            ArchiveFormat::Json => ".json.gz",
            ArchiveFormat::Parquet => ".parquet",
        }
    }

    /// The spelling in flags, specs and the report (`json`, `parquet`).
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveFormat::Json => "json",
            ArchiveFormat::Parquet => "parquet",
        }
    }
}

impl std::fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ArchiveFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(ArchiveFormat::Json),
            "parquet" => Ok(ArchiveFormat::Parquet),
            other => Err(format!(
                "unknown archive format {other:?} (json or parquet)"
            )),
        }
    }
}

/// The folder below the archive prefix where the ingester writes its write
/// probe (`ArchiveWritable`). It can never be an app's folder: an app name
/// starts with a lowercase letter, so no projected partition (and no Athena
/// query) ever reads it, and a lifecycle rule on the prefix still covers it.
pub const PROBE_FOLDER: &str = "_drainpipe-probe/";

/// The folder below the archive prefix where compaction keeps its intent
/// manifests (`{COMPACTION_FOLDER}{format}/{app}/{YYYY}/{MM}/{DD}.json`).
/// Hidden from Athena and Trino by its leading `_`, like [`PROBE_FOLDER`].
pub const COMPACTION_FOLDER: &str = "_drainpipe-compaction/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names_the_folders_the_ingester_writes() {
        let filled = LOCATION_TEMPLATE
            .replace("${app}", "shop")
            .replace("${year}", "2026")
            .replace("${month}", "06")
            .replace("${day}", "07");
        assert_eq!(filled, day_folder("shop", 2026, 6, 7));
        for key in PARTITION_KEYS {
            assert!(LOCATION_TEMPLATE.contains(&format!("${{{key}}}")), "{key}");
        }
    }

    #[test]
    fn the_probe_folder_is_no_app_folder() {
        let name = PROBE_FOLDER.trim_end_matches('/');
        assert!(!crate::app::valid_app_name(name));
        assert!(!name.starts_with(|c: char| c.is_ascii_lowercase()));
        assert!(!day_folder("shop", 2026, 6, 7).starts_with(PROBE_FOLDER));
    }

    #[test]
    fn the_parquet_root_is_no_app_folder_and_not_hidden() {
        let root = ArchiveFormat::Parquet.root().trim_end_matches('/');
        assert!(!crate::app::valid_app_name(root));
        assert!(!root.starts_with(['_', '.']));
        assert_eq!(ArchiveFormat::Json.root(), "");
        for f in [ArchiveFormat::Json, ArchiveFormat::Parquet] {
            assert_eq!(f.as_str().parse::<ArchiveFormat>(), Ok(f));
        }
        assert!("csv".parse::<ArchiveFormat>().is_err());
    }

    #[test]
    fn the_compaction_folder_is_hidden_and_no_app_folder() {
        let name = COMPACTION_FOLDER.trim_end_matches('/');
        assert!(name.starts_with('_'));
        assert!(!crate::app::valid_app_name(name));
    }

    #[test]
    fn app_is_a_partition_key_not_a_column() {
        assert!(FIELDS.iter().any(|f| f.name == "app"));
        assert!(data_columns().all(|f| f.name != "app"));
        assert_eq!(data_columns().count(), FIELDS.len() - 1);
    }
}
