//! Segment files in `--data-dir` (`{seq:020}.wal`): naming, listing,
//! creating, checking at start-up, and the checkpoint file beside them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::durable::entry::{Entry, read_record};
use crate::durable::error::WalError;

const MAGIC: &[u8; 8] = b"DPWAL\x00\x00\x01";
pub(super) const HEADER: u64 = MAGIC.len() as u64;

const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const CHECKPOINT_TAG: &str = "drainpipe-wal-checkpoint-v1";

/// A place in the log: segment and byte offset (ordered as the log is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub seq: u64,
    pub offset: u64,
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

pub(super) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for item in fs::read_dir(dir)? {
        let name = item?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_suffix(".wal")
            .and_then(|s| s.parse::<u64>().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// The checkpoint, if one is there and well-formed (anything else: replay
/// everything, which is always safe).
pub(super) fn read_checkpoint(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join(CHECKPOINT)).ok()?;
    let mut parts = text.split_ascii_whitespace();
    if parts.next()? != CHECKPOINT_TAG {
        return None;
    }
    let seq = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(Position { seq, offset })
}

/// Write the checkpoint read by [`read_checkpoint`]: through a temporary
/// file and a rename, so a crash leaves the old one or the new one, never
/// half of one.
pub(super) fn write_checkpoint(dir: &Path, pos: Position) -> io::Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP);
    fs::write(
        &tmp,
        format!("{CHECKPOINT_TAG} {} {}\n", pos.seq, pos.offset),
    )?;
    fs::rename(&tmp, dir.join(CHECKPOINT))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Result of checking one segment: its valid length and entries.
pub(super) struct Scan {
    pub(super) valid_len: u64,
    pub(super) file_len: u64,
    pub(super) entries: u64,
    pub(super) frames: Vec<(String, String)>,
}

/// Read a segment from the start, checking every record's CRC, up to the
/// first record that is incomplete or corrupt.
pub(super) fn scan_segment(path: &Path) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut scan = Scan {
        valid_len: 0,
        file_len,
        entries: 0,
        frames: Vec::new(),
    };
    let mut magic = [0u8; HEADER as usize];
    if file_len < HEADER || file.read_exact_at(&mut magic, 0).is_err() || &magic != MAGIC {
        return Ok(scan);
    }
    let mut offset = HEADER;
    while let Some((payload, next)) = read_record(&file, offset, file_len)? {
        let Some(entry) = Entry::decode(payload) else {
            break;
        };
        if let (Some(t), Some(f)) = (entry.drain_token, entry.frame_id) {
            scan.frames.push((t, f));
        }
        scan.entries += 1;
        offset = next;
    }
    scan.valid_len = offset;
    Ok(scan)
}

pub(super) fn create_segment(dir: &Path, seq: u64) -> Result<File, WalError> {
    let path = segment_path(dir, seq);
    let seg_err = |source| WalError::Segment {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(seg_err)?;
    file.write_all(MAGIC).map_err(seg_err)?;
    file.sync_all().map_err(seg_err)?;
    // The new name must survive a crash too, or its records would vanish.
    sync_dir(dir).map_err(seg_err)?;
    Ok(file)
}
