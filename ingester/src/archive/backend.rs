//! Archive backends: where finished objects are stored.
//!
//! `file://` writes each object as a temp file, fsyncs it, renames it into
//! place and fsyncs the directory, so a reader never sees half an object and
//! a stored object survives a crash. `s3://` uses aws-sdk-s3 with the
//! standard credential chain; `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL` point
//! it at an S3-compatible store (path-style addressing then, as MinIO needs).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use drainpipe_contract::schema::{ArchiveFormat, day_folder};

use crate::parse::timestamp::Day;

/// Prefix of object keys when the archive URL gives none.
pub const DEFAULT_PREFIX: &str = "logs/";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "archive URL {0:?} is not supported: use file:///absolute/path, file://./relative/path or s3://bucket/prefix/"
    )]
    Url(String),
    #[error("archive URL {0:?}: the bucket name is missing")]
    NoBucket(String),
    #[error("archive folder {path}: {source}")]
    Folder { path: PathBuf, source: io::Error },
}

/// A failed `put`; the caller retries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PutError(String);

/// Where archive objects go.
pub enum Archive {
    File(FileArchive),
    S3(S3Archive),
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Archive {
    /// Open the archive an `--archive` URL names.
    #[cfg(test)]
    pub async fn from_url(url: &str) -> Result<Archive, ArchiveError> {
        Self::from_url_with(url, None).await
    }

    /// Like [`Archive::from_url`]; an `s3://` archive uses `aws` (region,
    /// credentials, endpoint) instead of the process environment's chain.
    pub async fn from_url_with(
        url: &str,
        aws: Option<&aws_config::SdkConfig>,
    ) -> Result<Archive, ArchiveError> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(ArchiveError::Url(url.to_owned()));
            }
            let root = PathBuf::from(path);
            fs::create_dir_all(&root).map_err(|source| ArchiveError::Folder {
                path: root.clone(),
                source,
            })?;
            return Ok(Archive::File(FileArchive {
                root,
                prefix: DEFAULT_PREFIX.to_owned(),
            }));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ArchiveError::NoBucket(url.to_owned()));
            }
            let prefix = match prefix.trim_matches('/') {
                "" => DEFAULT_PREFIX.to_owned(),
                p => format!("{p}/"),
            };
            return Ok(Archive::S3(
                S3Archive::new(bucket.to_owned(), prefix, aws).await,
            ));
        }
        Err(ArchiveError::Url(url.to_owned()))
    }

    /// Key prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        match self {
            Archive::File(a) => &a.prefix,
            Archive::S3(a) => &a.prefix,
        }
    }

    /// For logs: where objects go (no credentials in it).
    pub fn describe(&self) -> String {
        match self {
            Archive::File(a) => format!("folder {}/{}", a.root.display(), a.prefix),
            Archive::S3(a) => match &a.endpoint {
                Some(e) => format!("s3://{}/{} at {e}", a.bucket, a.prefix),
                None => format!("s3://{}/{}", a.bucket, a.prefix),
            },
        }
    }

    /// Store one object under `key` (a full key, prefix included).
    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), PutError> {
        match self {
            Archive::File(a) => a.put(key, body).await,
            Archive::S3(a) => a.put(key, body).await,
        }
    }
}

/// Why a probe request failed, in terms safe for metrics labels and status
/// messages: the store's error code (`AccessDenied`, `NoSuchBucket`, or the
/// I/O error kind of a folder), never its message, request or credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreError {
    /// The store refused the identity (S3 403, or a folder's EACCES/EPERM),
    /// as opposed to being missing, unreachable or broken.
    pub(crate) denied: bool,
    pub(crate) code: String,
    /// The whole error, for the ingester's own log.
    pub(crate) detail: String,
}

const PROBE_BODY: &[u8] = b"drainpipe-ingester write probe: safe to delete\n";

impl Archive {
    /// The S3 action (or folder operation) a probe's write and delete need.
    pub(crate) fn probe_actions(&self) -> (&'static str, &'static str) {
        match self {
            Archive::File(_) => ("write", "delete"),
            Archive::S3(_) => ("s3:PutObject", "s3:DeleteObject"),
        }
    }

    /// Writes the small probe object `key`, as an archive object is written.
    pub(crate) async fn write_probe(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Archive::File(a) => {
                let root = a.root.clone();
                let key = key.to_owned();
                blocking(move || write_durably(&root, &key, PROBE_BODY)).await
            }
            Archive::S3(a) => a
                .client
                .put_object()
                .bucket(&a.bucket)
                .key(key)
                .content_type("text/plain")
                .body(aws_sdk_s3::primitives::ByteStream::from_static(PROBE_BODY))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_error(&e)),
        }
    }

    /// Deletes the probe object `key` (gone already counts as deleted).
    pub(crate) async fn delete_probe(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Archive::File(a) => {
                let path = a.root.join(key);
                blocking(move || match fs::remove_file(&path) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                })
                .await
            }
            Archive::S3(a) => a
                .client
                .delete_object()
                .bucket(&a.bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_error(&e)),
        }
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError {
            denied: e.kind() == io::ErrorKind::PermissionDenied,
            code: format!("{:?}", e.kind()),
            detail: e.to_string(),
        }),
        Err(e) => Err(StoreError {
            denied: false,
            code: "Panicked".to_owned(),
            detail: e.to_string(),
        }),
    }
}

pub(super) fn s3_error<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = match e {
        SdkError::TimeoutError(_) => "Timeout".to_owned(),
        SdkError::DispatchFailure(_) => "Unreachable".to_owned(),
        _ => e.code().map_or_else(|| "Unknown".to_owned(), safe_code),
    };
    let denied = status == Some(403)
        || matches!(
            code.as_str(),
            "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken"
        );
    StoreError {
        denied,
        code,
        detail: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    }
}

/// An error code as a label value: S3's codes are short words; anything
/// else is cut to that shape.
fn safe_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect()
}

/// `{prefix}{root}{app}/{YYYY}/{MM}/{DD}/{epoch_ms}-{uuid}{extension}`: the
/// folders are the contract's [`day_folder`] below the format's root, which
/// the Glue location template names.
pub fn object_key(
    prefix: &str,
    format: ArchiveFormat,
    app: &str,
    day: Day,
    epoch_ms: i64,
    id: uuid::Uuid,
) -> String {
    let root = format.root();
    let folder = day_folder(app, day.year, day.month, day.day);
    let ext = format.extension();
    format!("{prefix}{root}{folder}{epoch_ms}-{id}{ext}")
}

/// The media type of an archive object, by its key.
fn content_type(key: &str) -> &'static str {
    if key.ends_with(ArchiveFormat::Parquet.extension()) {
        "application/vnd.apache.parquet"
    } else if key.ends_with(".gz") {
        "application/gzip"
    } else {
        "application/json"
    }
}

/// A local folder archive (`file://`).
pub struct FileArchive {
    pub(super) root: PathBuf,
    prefix: String,
}

impl FileArchive {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), PutError> {
        let root = self.root.clone();
        let shown = root_display(&root);
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || write_durably(&root, &key, &body))
            .await
            .map_err(|e| PutError(format!("file archive writer panicked: {e}")))?
            .map_err(|e| PutError(format!("file archive {shown}: {e}")))
    }
}

fn root_display(root: &Path) -> String {
    root.display().to_string()
}

/// Temp file in the target directory, fsync, rename, fsync the directory
/// (and every directory created for it, so the new path survives a crash).
pub(super) fn write_durably(root: &Path, key: &str, body: &[u8]) -> io::Result<()> {
    let path = root.join(key);
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("object key has no directory"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("object key has no file name"))?;
    let mut created = Vec::new();
    let mut missing = Some(dir);
    while let Some(d) = missing {
        if d.exists() || d == root {
            break;
        }
        created.push(d.to_owned());
        missing = d.parent();
    }
    fs::create_dir_all(dir)?;
    // A leading dot keeps half-written objects out of `*.json.gz` globs.
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(body)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()?;
        for d in &created {
            if let Some(parent) = d.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An S3 (or S3-compatible) archive (`s3://`).
pub struct S3Archive {
    pub(super) client: aws_sdk_s3::Client,
    pub(super) bucket: String,
    prefix: String,
    endpoint: Option<String>,
}

impl S3Archive {
    async fn new(bucket: String, prefix: String, aws: Option<&aws_config::SdkConfig>) -> S3Archive {
        let (sdk, endpoint) = match aws {
            Some(sdk) => (sdk.clone(), sdk.endpoint_url().map(str::to_owned)),
            None => {
                let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                // aws-config reads AWS_ENDPOINT_URL_S3 itself; we only need to
                // know whether one is set: S3-compatible stores want
                // path-style requests.
                let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
                    .ok()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                    .or_else(|| sdk.endpoint_url().map(str::to_owned));
                (sdk, endpoint)
            }
        };
        let endpoint = endpoint.filter(|e| !e.is_empty());
        // Without a bound a stalled connection would hold an upload slot forever.
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .operation_attempt_timeout(std::time::Duration::from_secs(120))
            .build();
        let config = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(endpoint.is_some())
            .timeout_config(timeouts)
            .build();
        S3Archive {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket,
            prefix,
            endpoint,
        }
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), PutError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                PutError(format!(
                    "s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        let id = uuid::Uuid::nil();
        let day = Day {
            year: 2026,
            month: 6,
            day: 7,
        };
        assert_eq!(
            object_key(
                "logs/",
                ArchiveFormat::Json,
                "shop",
                day,
                1_781_000_000_123,
                id
            ),
            "logs/shop/2026/06/07/1781000000123-00000000-0000-0000-0000-000000000000.json.gz"
        );
        assert_eq!(
            object_key(
                "logs/",
                ArchiveFormat::Parquet,
                "shop",
                day,
                1_781_000_000_123,
                id
            ),
            "logs/format=parquet/shop/2026/06/07/1781000000123-00000000-0000-0000-0000-000000000000.parquet"
        );
    }

    #[tokio::test]
    async fn urls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let a = Archive::from_url(&url).await.expect("file url");
        assert_eq!(a.prefix(), "logs/");
        assert!(Archive::from_url("http://x").await.is_err());
        assert!(Archive::from_url("file://").await.is_err());
        assert!(matches!(
            Archive::from_url("s3:///prefix").await,
            Err(ArchiveError::NoBucket(_))
        ));
        let a = Archive::from_url("s3://bucket/some/prefix")
            .await
            .expect("s3");
        assert_eq!(a.prefix(), "some/prefix/");
        let a = Archive::from_url("s3://bucket").await.expect("s3");
        assert_eq!(a.prefix(), "logs/");
    }

    #[tokio::test]
    async fn file_put_writes_the_object_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let a = Archive::from_url(&url).await.expect("file url");
        let key = "logs/shop/2026/06/07/1-x.json.gz";
        a.put(key, Bytes::from_static(b"data")).await.expect("put");
        assert_eq!(fs::read(dir.path().join(key)).expect("read"), b"data");
        let names: Vec<_> = fs::read_dir(dir.path().join("logs/shop/2026/06/07"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("1-x.json.gz")]);
    }
}
