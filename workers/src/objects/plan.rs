//! The diff: what one source object, its manifest record and (when listed) its target copy
//! mean for this cycle. Pure functions and plain data, no IO, so every rule is unit-tested.
//!
//! Rules, by verify mode (`size` < `etag` < `checksum`):
//! - no record, target not listed or absent: copy (new);
//! - no record, target listed and present with the same size and a modification time not older
//!   than the source's: adopt (record it without copying; this is how a lost or stale manifest
//!   is rebuilt without re-copying a whole prefix);
//! - record, source changed since (size; plus etag/content-md5 unless `size`; mtime when the
//!   service gives neither): copy (changed);
//! - record, target listed and absent: copy (target missing);
//! - record, target listed with another size than recorded: copy (target changed, a verify
//!   mismatch);
//! - `checksum` only: record, target listed with another etag/mtime than recorded at copy time:
//!   re-read the target and compare checksums (the executor then re-copies on a mismatch);
//! - otherwise skip.

use lockstep_config::VerifyMode;
use serde::{Deserialize, Serialize};

/// What a listing says about one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjMeta {
    pub size: u64,
    pub etag: Option<String>,
    pub md5: Option<String>,
    /// Milliseconds since the epoch.
    pub mtime_ms: Option<i64>,
}

/// One manifest record: the source version that was copied, the checksum computed while
/// streaming it, and what the target looked like right after the write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Key relative to the flow's prefix.
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "s")]
    pub size: u64,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub mtime_ms: Option<i64>,
    /// CRC-32 of the bytes, `None` for adopted objects that lockstep did not stream.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<u32>,
    #[serde(rename = "te", default, skip_serializing_if = "Option::is_none")]
    pub target_etag: Option<String>,
    #[serde(rename = "tt", default, skip_serializing_if = "Option::is_none")]
    pub target_mtime_ms: Option<i64>,
}

impl Record {
    pub fn source_meta(&self) -> ObjMeta {
        ObjMeta {
            size: self.size,
            etag: self.etag.clone(),
            md5: self.md5.clone(),
            mtime_ms: self.mtime_ms,
        }
    }
}

/// The target as this cycle knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetView<'a> {
    /// The target was not listed this cycle: trust the manifest.
    NotListed,
    Absent,
    Present(&'a ObjMeta),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    New,
    Changed,
    TargetMissing,
    /// The target's bytes differ from what was copied (a verify mismatch).
    TargetChanged,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::Changed => "changed",
            Reason::TargetMissing => "target_missing",
            Reason::TargetChanged => "target_changed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Skip,
    Copy(Reason),
    Adopt,
    /// Re-read the target and compare its checksum with the record's.
    VerifyTarget,
}

/// Did the source object change since `rec` was copied?
pub fn source_changed(src: &ObjMeta, rec: &Record, verify: VerifyMode) -> bool {
    if src.size != rec.size {
        return true;
    }
    if verify == VerifyMode::Size {
        return false;
    }
    let mut compared = false;
    if let (Some(a), Some(b)) = (&src.etag, &rec.etag) {
        if a != b {
            return true;
        }
        compared = true;
    }
    if let (Some(a), Some(b)) = (&src.md5, &rec.md5) {
        if a != b {
            return true;
        }
        compared = true;
    }
    // Services without etag or md5 (fs, webhdfs): the modification time stands in.
    !compared && src.mtime_ms != rec.mtime_ms
}

/// Did the target change since lockstep wrote it (as far as its listing tells)?
pub fn target_changed(t: &ObjMeta, rec: &Record) -> bool {
    match (&rec.target_etag, &t.etag) {
        (Some(a), Some(b)) => a != b,
        _ => match (rec.target_mtime_ms, t.mtime_ms) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        },
    }
}

/// The decision for one source object.
pub fn decide(
    src: &ObjMeta,
    rec: Option<&Record>,
    target: TargetView<'_>,
    verify: VerifyMode,
) -> Action {
    let Some(rec) = rec else {
        return match target {
            TargetView::Present(t)
                if t.size == src.size
                    && matches!((t.mtime_ms, src.mtime_ms), (Some(a), Some(b)) if a >= b) =>
            {
                Action::Adopt
            }
            _ => Action::Copy(Reason::New),
        };
    };
    if source_changed(src, rec, verify) {
        return Action::Copy(Reason::Changed);
    }
    match target {
        TargetView::NotListed => Action::Skip,
        TargetView::Absent => Action::Copy(Reason::TargetMissing),
        TargetView::Present(t) if t.size != rec.size => Action::Copy(Reason::TargetChanged),
        TargetView::Present(t)
            if verify == VerifyMode::Checksum && rec.crc32.is_some() && target_changed(t, rec) =>
        {
            Action::VerifyTarget
        }
        TargetView::Present(_) => Action::Skip,
    }
}

/// Is `key` (relative to the prefix) in shard `index` of `count`? A stable hash (CRC-32 of
/// the key's bytes), so every worker and every version agrees.
pub fn in_shard(key: &str, index: u32, count: u32) -> bool {
    count <= 1 || crc32fast::hash(key.as_bytes()) % count == index
}

/// What a dry run (or a finished cycle) did, in counts, bytes and the first keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanSummary {
    pub copy_objects: u64,
    pub copy_bytes: u64,
    pub adopt_objects: u64,
    pub verify_objects: u64,
    pub delete_objects: u64,
    pub skip_objects: u64,
    pub skip_bytes: u64,
    /// First keys planned, with what is planned for them (at most [`PlanSummary::SAMPLE`]).
    pub sample: Vec<(String, String)>,
}

impl PlanSummary {
    pub const SAMPLE: usize = 20;

    pub fn note(&mut self, key: &str, what: &str) {
        if self.sample.len() < Self::SAMPLE {
            self.sample.push((key.to_string(), what.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, etag: &str, mtime: i64) -> ObjMeta {
        ObjMeta {
            size,
            etag: (!etag.is_empty()).then(|| etag.to_string()),
            md5: None,
            mtime_ms: Some(mtime),
        }
    }

    fn rec(size: u64, etag: &str, mtime: i64) -> Record {
        Record {
            key: "k".into(),
            size,
            etag: (!etag.is_empty()).then(|| etag.to_string()),
            md5: None,
            mtime_ms: Some(mtime),
            crc32: Some(7),
            target_etag: Some("\"t1\"".into()),
            target_mtime_ms: Some(500),
        }
    }

    use TargetView::*;
    use VerifyMode::*;

    #[test]
    fn new_objects_are_copied() {
        assert_eq!(
            decide(&meta(1, "a", 1), None, NotListed, Etag),
            Action::Copy(Reason::New)
        );
        assert_eq!(
            decide(&meta(1, "a", 1), None, Absent, Etag),
            Action::Copy(Reason::New)
        );
    }

    #[test]
    fn a_matching_target_is_adopted_without_a_manifest() {
        let t = meta(1, "x", 10);
        assert_eq!(
            decide(&meta(1, "a", 5), None, Present(&t), Etag),
            Action::Adopt
        );
        // Older than the source, or another size: copy.
        assert_eq!(
            decide(&meta(1, "a", 11), None, Present(&t), Etag),
            Action::Copy(Reason::New)
        );
        assert_eq!(
            decide(&meta(2, "a", 5), None, Present(&t), Etag),
            Action::Copy(Reason::New)
        );
    }

    #[test]
    fn unchanged_objects_are_skipped() {
        let r = rec(3, "a", 1);
        assert_eq!(
            decide(&meta(3, "a", 1), Some(&r), NotListed, Etag),
            Action::Skip
        );
        // An mtime change with the same etag is not a change when etags are compared.
        assert_eq!(
            decide(&meta(3, "a", 9), Some(&r), NotListed, Etag),
            Action::Skip
        );
    }

    #[test]
    fn changes_by_mode() {
        let r = rec(3, "a", 1);
        assert_eq!(
            decide(&meta(4, "a", 1), Some(&r), NotListed, Size),
            Action::Copy(Reason::Changed)
        );
        // Same size, other etag: a change for etag and checksum, not for size.
        assert_eq!(
            decide(&meta(3, "b", 1), Some(&r), NotListed, Size),
            Action::Skip
        );
        assert_eq!(
            decide(&meta(3, "b", 1), Some(&r), NotListed, Etag),
            Action::Copy(Reason::Changed)
        );
        assert_eq!(
            decide(&meta(3, "b", 1), Some(&r), NotListed, Checksum),
            Action::Copy(Reason::Changed)
        );
        // No etag on either side (fs): mtime decides.
        let r = rec(3, "", 1);
        assert_eq!(
            decide(&meta(3, "", 1), Some(&r), NotListed, Etag),
            Action::Skip
        );
        assert_eq!(
            decide(&meta(3, "", 2), Some(&r), NotListed, Etag),
            Action::Copy(Reason::Changed)
        );
    }

    #[test]
    fn target_state_when_listed() {
        let r = rec(3, "a", 1);
        let src = meta(3, "a", 1);
        assert_eq!(
            decide(&src, Some(&r), Absent, Etag),
            Action::Copy(Reason::TargetMissing)
        );
        let smaller = meta(2, "\"t1\"", 500);
        assert_eq!(
            decide(&src, Some(&r), Present(&smaller), Etag),
            Action::Copy(Reason::TargetChanged)
        );
        let same = meta(3, "\"t1\"", 500);
        assert_eq!(
            decide(&src, Some(&r), Present(&same), Checksum),
            Action::Skip
        );
        let rewritten = meta(3, "\"t2\"", 600);
        assert_eq!(
            decide(&src, Some(&r), Present(&rewritten), Checksum),
            Action::VerifyTarget
        );
        // Only checksum mode re-reads.
        assert_eq!(
            decide(&src, Some(&r), Present(&rewritten), Etag),
            Action::Skip
        );
    }

    #[test]
    fn target_change_falls_back_to_mtime() {
        let mut r = rec(3, "a", 1);
        r.target_etag = None;
        assert!(!target_changed(&meta(3, "", 500), &r));
        assert!(target_changed(&meta(3, "", 501), &r));
    }

    #[test]
    fn shards_partition_the_keys() {
        let keys: Vec<String> = (0..1000).map(|i| format!("dir/{i}.json")).collect();
        let mut seen = 0;
        for k in &keys {
            let owners = (0..4).filter(|i| in_shard(k, *i, 4)).count();
            assert_eq!(owners, 1, "{k} must be in exactly one shard");
            seen += usize::from(in_shard(k, 0, 4));
        }
        assert!(seen > 150 && seen < 350, "shard 0 got {seen} of 1000");
        assert!(keys.iter().all(|k| in_shard(k, 0, 1)));
    }

    #[test]
    fn records_round_trip_compactly() {
        let r = rec(3, "a", 1);
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.starts_with("{\"k\":\"k\",\"s\":3"), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
    }
}
