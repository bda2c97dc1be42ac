//! What to merge: pure decisions over a listing, no I/O.
//!
//! - A UTC day is *closed* once its midnight plus the grace period has
//!   passed; only closed days are touched. A record that arrives later for a
//!   closed day (a late Logplex frame, a write-ahead log drained after an
//!   outage) lands in a new small object there, and the next run merges it.
//! - In a day of the written format, objects of at least the target size
//!   are left as they are; the smaller ones are packed, in key (creation)
//!   order, into groups of up to the target size. A group of one is left
//!   alone: there is nothing to merge.
//! - A day of the other format (JSON, when writing Parquet) is converted:
//!   every object in it goes into groups, whatever its size.

use std::collections::BTreeMap;

use drainpipe_contract::app::valid_app_name;
use drainpipe_contract::schema::{ArchiveFormat, COMPACTION_FOLDER, PROBE_FOLDER};

use crate::archive::store::Listed;
use crate::parse::timestamp::Day;

/// One app's objects of one day, in one format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partition {
    pub(crate) format: ArchiveFormat,
    pub(crate) app: String,
    pub(crate) day: Day,
    pub(crate) objects: Vec<Listed>,
}

impl Partition {
    /// `{prefix}{root}{app}/{YYYY}/{MM}/{DD}/`.
    pub(crate) fn folder(&self, prefix: &str) -> String {
        let d = self.day;
        format!(
            "{prefix}{}{}",
            self.format.root(),
            drainpipe_contract::schema::day_folder(&self.app, d.year, d.month, d.day)
        )
    }

    /// Where its intent manifest lives while a merge is under way (hidden
    /// from queries by the leading `_`).
    pub(crate) fn manifest_key(&self, prefix: &str) -> String {
        let d = self.day;
        format!(
            "{prefix}{COMPACTION_FOLDER}{}/{}/{:04}/{:02}/{:02}.json",
            self.format, self.app, d.year, d.month, d.day
        )
    }
}

/// Group a listing of the archive (every key below `prefix`) into
/// partitions of `format` objects. Keys that are not archive objects of
/// that format (hidden folders, temp files, other formats, stray files)
/// are left out.
pub(crate) fn partitions(
    prefix: &str,
    format: ArchiveFormat,
    listing: &[Listed],
) -> Vec<Partition> {
    let mut by_day: BTreeMap<(String, Day), Vec<Listed>> = BTreeMap::new();
    for o in listing {
        let Some((app, day)) = parse_key(prefix, format, &o.key) else {
            continue;
        };
        by_day
            .entry((app.to_owned(), day))
            .or_default()
            .push(o.clone());
    }
    by_day
        .into_iter()
        .map(|((app, day), objects)| Partition {
            format,
            app,
            day,
            objects,
        })
        .collect()
}

/// `(app, day)` of an archive object key of `format`, or None.
fn parse_key<'k>(prefix: &str, format: ArchiveFormat, key: &'k str) -> Option<(&'k str, Day)> {
    let rest = key.strip_prefix(prefix)?;
    if rest.starts_with(PROBE_FOLDER) || rest.starts_with(COMPACTION_FOLDER) {
        return None;
    }
    let rest = rest.strip_prefix(format.root())?;
    let mut parts = rest.split('/');
    let (app, year, month, day, name) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some()
        || !valid_app_name(app)
        || !name.ends_with(format.extension())
        || name.starts_with(['.', '_'])
        || year.len() != 4
        || month.len() != 2
        || day.len() != 2
    {
        return None;
    }
    let day = Day {
        year: year.parse().ok()?,
        month: month.parse().ok().filter(|m| (1..=12).contains(m))?,
        day: day.parse().ok().filter(|d| (1..=31).contains(d))?,
    };
    Some((app, day))
}

const US_PER_DAY: i64 = 86_400_000_000;

/// Whether `day` is closed at `now_us`: its midnight plus `grace_us` passed.
pub(crate) fn closed(day: Day, now_us: i64, grace_us: i64) -> bool {
    let Some(start) = crate::parse::timestamp::parse_rfc3339_us(
        format!("{:04}-{:02}-{:02}T00:00:00Z", day.year, day.month, day.day).as_bytes(),
    ) else {
        return false;
    };
    now_us >= start + US_PER_DAY + grace_us
}

/// The groups of objects to merge into one object each, for a partition
/// whose objects go to `target` format.
pub(crate) fn groups(
    partition: &Partition,
    target: ArchiveFormat,
    target_bytes: u64,
) -> Vec<Vec<Listed>> {
    let converting = partition.format != target;
    let mut candidates: Vec<&Listed> = partition
        .objects
        .iter()
        .filter(|o| converting || o.size < target_bytes)
        .collect();
    candidates.sort_by(|a, b| a.key.cmp(&b.key));
    let mut groups: Vec<Vec<Listed>> = Vec::new();
    let mut current: Vec<Listed> = Vec::new();
    let mut bytes = 0u64;
    for o in candidates {
        if !current.is_empty() && bytes + o.size > target_bytes {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += o.size;
        current.push(o.clone());
    }
    if !current.is_empty() {
        groups.push(current);
    }
    if !converting {
        groups.retain(|g| g.len() > 1);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(key: &str, size: u64) -> Listed {
        Listed {
            key: key.to_owned(),
            size,
        }
    }

    #[test]
    fn keys_group_by_app_and_day_and_strays_are_left_out() {
        let listing = [
            listed("logs/shop/2026/11/05/1-a.json.gz", 10),
            listed("logs/shop/2026/11/05/2-b.json.gz", 10),
            listed("logs/shop/2026/11/06/3-c.json.gz", 10),
            listed("logs/api/2026/11/05/4-d.json.gz", 10),
            listed("logs/shop/2026/11/05/.5-e.json.gz.tmp", 10),
            listed("logs/shop/2026/11/05/notes.txt", 10),
            listed("logs/_drainpipe-probe/x.json.gz", 10),
            listed("logs/_drainpipe-compaction/json/shop/2026/11/05.json", 10),
            listed("logs/format=parquet/shop/2026/11/05/6-f.parquet", 10),
            listed("logs/Shop/2026/11/05/7-g.json.gz", 10),
            listed("logs/shop/2026/13/05/8-h.json.gz", 10),
        ];
        let json = partitions("logs/", ArchiveFormat::Json, &listing);
        let summary: Vec<(String, u8, usize)> = json
            .iter()
            .map(|p| (p.app.clone(), p.day.day, p.objects.len()))
            .collect();
        assert_eq!(
            summary,
            [
                ("api".into(), 5, 1),
                ("shop".into(), 5, 2),
                ("shop".into(), 6, 1)
            ]
        );
        let parquet = partitions("logs/", ArchiveFormat::Parquet, &listing);
        assert_eq!(parquet.len(), 1);
        assert_eq!(
            parquet[0].folder("logs/"),
            "logs/format=parquet/shop/2026/11/05/"
        );
        assert_eq!(
            parquet[0].manifest_key("logs/"),
            "logs/_drainpipe-compaction/parquet/shop/2026/11/05.json"
        );
    }

    #[test]
    fn a_day_closes_at_midnight_plus_grace() {
        let day = Day {
            year: 2026,
            month: 11,
            day: 5,
        };
        let midnight = crate::parse::timestamp::parse_rfc3339_us(b"2026-11-06T00:00:00Z").unwrap();
        let hour = 3_600_000_000;
        assert!(!closed(day, midnight - 1, 0));
        assert!(closed(day, midnight, 0));
        assert!(!closed(day, midnight + hour, 2 * hour));
        assert!(closed(day, midnight + 2 * hour, 2 * hour));
    }

    fn partition(format: ArchiveFormat, sizes: &[u64]) -> Partition {
        Partition {
            format,
            app: "shop".into(),
            day: Day {
                year: 2026,
                month: 11,
                day: 5,
            },
            objects: sizes
                .iter()
                .enumerate()
                .map(|(i, s)| listed(&format!("logs/shop/2026/11/05/{i:03}.json.gz"), *s))
                .collect(),
        }
    }

    fn sizes(groups: &[Vec<Listed>]) -> Vec<Vec<u64>> {
        groups
            .iter()
            .map(|g| g.iter().map(|o| o.size).collect())
            .collect()
    }

    #[test]
    fn small_objects_pack_up_to_the_target_and_large_ones_stay() {
        let p = partition(ArchiveFormat::Json, &[40, 30, 200, 50, 10, 60, 5]);
        // 200 is past the target: left alone.
        assert_eq!(
            sizes(&groups(&p, ArchiveFormat::Json, 100)),
            [vec![40, 30], vec![50, 10], vec![60, 5]]
        );
        // A day smaller than the target becomes one object.
        assert_eq!(
            sizes(&groups(&p, ArchiveFormat::Json, 1000)),
            [vec![40, 30, 200, 50, 10, 60, 5]]
        );
        // One small object alone: nothing to merge, so no work (a second run
        // after a complete one does nothing).
        let done = partition(ArchiveFormat::Json, &[900, 150]);
        assert!(groups(&done, ArchiveFormat::Json, 100).is_empty());
        let one = partition(ArchiveFormat::Json, &[90]);
        assert!(groups(&one, ArchiveFormat::Json, 100).is_empty());
    }

    #[test]
    fn a_day_of_the_other_format_is_converted_whole() {
        let p = partition(ArchiveFormat::Json, &[90, 500]);
        assert_eq!(
            sizes(&groups(&p, ArchiveFormat::Parquet, 100)),
            [vec![90], vec![500]]
        );
    }
}
