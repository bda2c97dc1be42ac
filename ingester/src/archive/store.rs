//! Reading, listing and deleting archive objects, for compaction: what the
//! ingester itself never does to the archive (it only writes).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::archive::backend::{Archive, StoreError, blocking, s3_error, write_durably};

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// The full key, prefix included.
    pub(crate) key: String,
    pub(crate) size: u64,
}

/// At most this many keys per S3 DeleteObjects request (S3's limit).
const DELETE_BATCH: usize = 1000;

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl Archive {
    /// Every object whose key starts with `under` (a full key prefix), in
    /// key order.
    pub(crate) async fn list(&self, under: &str) -> Result<Vec<Listed>, StoreError> {
        match self {
            Archive::File(a) => {
                let root = a.root.clone();
                let under = under.to_owned();
                blocking(move || list_folder(&root, &under)).await
            }
            Archive::S3(a) => {
                let mut out = Vec::new();
                let mut pages = a
                    .client
                    .list_objects_v2()
                    .bucket(&a.bucket)
                    .prefix(under)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| s3_error(&e))?;
                    for o in page.contents() {
                        if let Some(key) = o.key() {
                            out.push(Listed {
                                key: key.to_owned(),
                                size: o.size().map_or(0, |s| u64::try_from(s).unwrap_or(0)),
                            });
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// The object `key`, or None when there is none.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self {
            Archive::File(a) => {
                let path = a.root.join(key);
                blocking(move || match fs::read(&path) {
                    Ok(body) => Ok(Some(Bytes::from(body))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                })
                .await
            }
            Archive::S3(a) => {
                let got = a
                    .client
                    .get_object()
                    .bucket(&a.bucket)
                    .key(key)
                    .send()
                    .await;
                let out = match got {
                    Ok(out) => out,
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                        return Ok(None);
                    }
                    Err(e) => return Err(s3_error(&e)),
                };
                let body = out.body.collect().await.map_err(|e| StoreError {
                    denied: false,
                    code: "ReadFailed".to_owned(),
                    detail: format!("s3://{}/{key}: {e}", a.bucket),
                })?;
                Ok(Some(body.into_bytes()))
            }
        }
    }

    /// The size of object `key`, or None when there is none.
    pub(crate) async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Archive::File(a) => {
                let path = a.root.join(key);
                blocking(move || match fs::metadata(&path) {
                    Ok(m) => Ok(Some(m.len())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                })
                .await
            }
            Archive::S3(a) => {
                match a
                    .client
                    .head_object()
                    .bucket(&a.bucket)
                    .key(key)
                    .send()
                    .await
                {
                    Ok(out) => Ok(Some(
                        out.content_length()
                            .map_or(0, |n| u64::try_from(n).unwrap_or(0)),
                    )),
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
                    Err(e) => Err(s3_error(&e)),
                }
            }
        }
    }

    /// Store `body` under `key`, durably; an error is returned, not retried.
    pub(crate) async fn store(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        match self {
            Archive::File(a) => {
                let root = a.root.clone();
                let key = key.to_owned();
                blocking(move || write_durably(&root, &key, &body)).await
            }
            Archive::S3(_) => self.put(key, body).await.map_err(|e| StoreError {
                denied: false,
                code: "PutFailed".to_owned(),
                detail: e.to_string(),
            }),
        }
    }

    /// Delete `keys` (a key already gone counts as deleted).
    pub(crate) async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        match self {
            Archive::File(a) => {
                let root = a.root.clone();
                let keys = keys.to_vec();
                blocking(move || {
                    for key in &keys {
                        match fs::remove_file(root.join(key)) {
                            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                            _ => {}
                        }
                    }
                    Ok(())
                })
                .await
            }
            Archive::S3(a) => {
                use aws_sdk_s3::types::{Delete, ObjectIdentifier};
                for batch in keys.chunks(DELETE_BATCH) {
                    let objects = batch
                        .iter()
                        .map(|k| ObjectIdentifier::builder().key(k).build())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| StoreError {
                            denied: false,
                            code: "BadRequest".to_owned(),
                            detail: e.to_string(),
                        })?;
                    let delete = Delete::builder()
                        .set_objects(Some(objects))
                        .quiet(true)
                        .build()
                        .map_err(|e| StoreError {
                            denied: false,
                            code: "BadRequest".to_owned(),
                            detail: e.to_string(),
                        })?;
                    let out = a
                        .client
                        .delete_objects()
                        .bucket(&a.bucket)
                        .delete(delete)
                        .send()
                        .await
                        .map_err(|e| s3_error(&e))?;
                    // DeleteObjects answers 200 with per-key errors.
                    if let Some(e) = out.errors().first() {
                        return Err(StoreError {
                            denied: e.code() == Some("AccessDenied"),
                            code: e.code().unwrap_or("Unknown").to_owned(),
                            detail: format!(
                                "deleting s3://{}/{}: {}",
                                a.bucket,
                                e.key().unwrap_or_default(),
                                e.message().unwrap_or_default()
                            ),
                        });
                    }
                }
                Ok(())
            }
        }
    }
}

/// Files below `root` whose key (path relative to `root`) starts with
/// `under`, skipping the archive's own temp files.
fn list_folder(root: &Path, under: &str) -> io::Result<Vec<Listed>> {
    // Start at the deepest folder `under` names whole.
    let start = match under.rfind('/') {
        Some(i) => &under[..=i],
        None => "",
    };
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.join(start)];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let key = rel
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            let hidden_temp = entry.file_name().to_string_lossy().ends_with(".tmp");
            if key.starts_with(under) && !hidden_temp {
                out.push(Listed {
                    key,
                    size: meta.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}
