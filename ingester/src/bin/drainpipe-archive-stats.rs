//! What a folder archive holds, per format: objects, bytes, records, bytes per record, and
//! objects per (app, day). For the benchmarks (`scripts/bench-ingester`, `scripts/bench-archive`).
//!
//!     cargo run --release -p drainpipe-ingester --bin drainpipe-archive-stats -- DIR

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use drainpipe_ingester::encode::parquet_file::row_count;

#[derive(Default)]
struct Stats {
    objects: u64,
    bytes: u64,
    records: u64,
    per_day: BTreeMap<PathBuf, u64>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: drainpipe-archive-stats DIR")?;
    let mut files = Vec::new();
    walk(Path::new(&dir), &mut files);
    let mut by_format: BTreeMap<&str, Stats> = BTreeMap::new();
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.')
            || path
                .components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with('_'))
        {
            continue;
        }
        let body = std::fs::read(&path)?;
        let (format, records) = if name.ends_with(".json.gz") {
            let mut text = Vec::new();
            flate2::read::MultiGzDecoder::new(&body[..]).read_to_end(&mut text)?;
            ("json", memchr::memchr_iter(b'\n', &text).count() as u64)
        } else if name.ends_with(".parquet") {
            ("parquet", row_count(bytes::Bytes::from(body.clone()))?)
        } else {
            continue;
        };
        let s = by_format.entry(format).or_default();
        s.objects += 1;
        s.bytes += body.len() as u64;
        s.records += records;
        *s.per_day
            .entry(path.parent().unwrap_or(Path::new("")).to_owned())
            .or_default() += 1;
    }
    for (format, s) in by_format {
        let mut per_day: Vec<u64> = s.per_day.values().copied().collect();
        per_day.sort_unstable();
        println!(
            "{format}: {} objects, {} bytes, {} records, {:.1} bytes/record, objects per app-day min {} median {} max {} over {} app-days",
            s.objects,
            s.bytes,
            s.records,
            s.bytes as f64 / s.records.max(1) as f64,
            per_day.first().copied().unwrap_or(0),
            per_day.get(per_day.len() / 2).copied().unwrap_or(0),
            per_day.last().copied().unwrap_or(0),
            per_day.len()
        );
    }
    Ok(())
}
