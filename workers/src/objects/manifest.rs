//! The site manifest of one (flow, shard): what lockstep copied into the site's object store,
//! kept in that same store so that any worker can resume a shard.
//!
//! Layout, under `<site root>/.lockstep/manifests/<flow>/shard-<i>-of-<n>/`:
//! - `base.jsonl`: one [`Record`] per line, sorted by key (the state after the last complete
//!   cycle);
//! - `seg-<run ms>-<seq>.jsonl`: append-only segments written while a cycle runs, every
//!   [`FLUSH_EVERY`] records or [`FLUSH_INTERVAL`], whichever comes first. A line is a record
//!   or a tombstone `{"d": key}`.
//!
//! Loading applies the base, then the segments in name order (last writer wins), so a task
//! killed mid-cycle resumes with everything its flushed segments say. A complete cycle
//! compacts: it rewrites the base from memory, then deletes the segments it has folded in; a
//! crash between the two only re-applies segments already contained in the base, which changes
//! nothing. Every file is written in one atomic write (multipart complete, or temp + rename
//! for fs), so no reader ever sees a torn file.
//!
//! A change of the shard count gives a new folder: the old manifests no longer describe the
//! new shards, and the task rebuilds its manifest from the target listing instead.

use super::plan::Record;
use super::SyncError;
use futures::TryStreamExt;
use opendal::Operator;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Records per segment, at most.
pub const FLUSH_EVERY: usize = 256;
/// Longest time a finished object waits before its record is flushed.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Bytes per write when rewriting the base.
const BASE_CHUNK: usize = 4 << 20;

/// One manifest line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Put(Record),
    Del {
        #[serde(rename = "d")]
        key: String,
    },
}

/// The manifest's files and its unflushed lines. The records themselves live in the caller's
/// map while a cycle runs.
pub struct Manifest {
    op: Operator,
    dir: String,
    /// Segments loaded or written since the last compaction.
    segments: Vec<String>,
    pending: Vec<Line>,
    run_ms: i64,
    seq: u64,
    last_flush: Instant,
    /// Did any manifest file exist when loaded?
    pub existed: bool,
}

/// The manifest folder of one shard.
pub fn dir(flow: &str, shard: u32, shards: u32) -> String {
    format!(
        "{}manifests/{flow}/shard-{shard}-of-{shards}/",
        super::store::LOCKSTEP_DIR
    )
}

fn err(path: &str, e: impl std::fmt::Display) -> SyncError {
    SyncError::Manifest {
        path: path.to_string(),
        msg: e.to_string(),
    }
}

impl Manifest {
    /// Reads the manifest in `dir` of `op`: the records by key, and the handle that appends.
    pub async fn load(
        op: &Operator,
        dir: &str,
    ) -> Result<(Manifest, BTreeMap<String, Record>), SyncError> {
        let mut base = false;
        let mut segments = Vec::new();
        match op.list(dir).await {
            Ok(entries) => {
                for e in entries {
                    let name = e.name();
                    if name == "base.jsonl" {
                        base = true;
                    } else if name.starts_with("seg-") && name.ends_with(".jsonl") {
                        segments.push(format!("{dir}{name}"));
                    }
                }
            }
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
            Err(e) => return Err(err(dir, e)),
        }
        segments.sort();
        let mut records = BTreeMap::new();
        if base {
            read_lines(op, &format!("{dir}base.jsonl"), &mut records).await?;
        }
        for s in &segments {
            read_lines(op, s, &mut records).await?;
        }
        let run_ms = now_ms();
        Ok((
            Manifest {
                op: op.clone(),
                dir: dir.to_string(),
                existed: base || !segments.is_empty(),
                segments,
                pending: Vec::new(),
                run_ms,
                seq: 0,
                last_flush: Instant::now(),
            },
            records,
        ))
    }

    pub fn append(&mut self, line: Line) {
        self.pending.push(line);
    }

    /// Lines not yet flushed.
    pub fn unflushed(&self) -> usize {
        self.pending.len()
    }

    /// Writes the pending lines as a new segment when enough are pending, enough time has
    /// passed, or `force`.
    pub async fn flush(&mut self, force: bool) -> Result<(), SyncError> {
        if self.pending.is_empty() {
            self.last_flush = Instant::now();
            return Ok(());
        }
        if !force && self.pending.len() < FLUSH_EVERY && self.last_flush.elapsed() < FLUSH_INTERVAL
        {
            return Ok(());
        }
        let path = format!("{}seg-{:013}-{:08}.jsonl", self.dir, self.run_ms, self.seq);
        let mut body = Vec::with_capacity(self.pending.len() * 128);
        for line in &self.pending {
            serde_json::to_writer(&mut body, line).map_err(|e| err(&path, e))?;
            body.push(b'\n');
        }
        self.op
            .write(&path, body)
            .await
            .map_err(|e| err(&path, e))?;
        self.seq += 1;
        self.segments.push(path);
        self.pending.clear();
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Rewrites the base from `records` (sorted, as a `BTreeMap` iterates) and deletes the
    /// segments it folds in. Pending lines are already in `records`, so they are dropped.
    pub async fn compact<'a>(
        &mut self,
        records: impl Iterator<Item = &'a Record>,
    ) -> Result<(), SyncError> {
        if self.segments.is_empty() && self.pending.is_empty() && self.existed {
            return Ok(());
        }
        let path = format!("{}base.jsonl", self.dir);
        let mut w = self
            .op
            .writer_with(&path)
            .chunk(BASE_CHUNK)
            .await
            .map_err(|e| err(&path, e))?;
        let mut buf = Vec::with_capacity(BASE_CHUNK);
        let mut result = Ok(());
        for r in records {
            if let Err(e) = serde_json::to_writer(&mut buf, &Line::Put(r.clone())) {
                result = Err(err(&path, e));
                break;
            }
            buf.push(b'\n');
            if buf.len() >= BASE_CHUNK {
                if let Err(e) = w.write(std::mem::take(&mut buf)).await {
                    result = Err(err(&path, e));
                    break;
                }
                buf.reserve(BASE_CHUNK);
            }
        }
        if result.is_ok() && !buf.is_empty() {
            result = w.write(buf).await.map(|_| ()).map_err(|e| err(&path, e));
        }
        if let Err(e) = result {
            let _ = w.abort().await;
            return Err(e);
        }
        w.close().await.map_err(|e| err(&path, e))?;
        self.pending.clear();
        let segments = std::mem::take(&mut self.segments);
        for s in &segments {
            if let Err(e) = self.op.delete(s).await {
                // Harmless: a leftover segment only repeats what the base says.
                tracing::warn!(segment = %s, error = %e, "cannot delete a compacted manifest segment");
            }
        }
        self.existed = true;
        Ok(())
    }
}

/// Applies the lines of one manifest file to `records`, streaming it (a base can be large).
async fn read_lines(
    op: &Operator,
    path: &str,
    records: &mut BTreeMap<String, Record>,
) -> Result<(), SyncError> {
    let reader = op.reader(path).await.map_err(|e| err(path, e))?;
    let mut stream = reader
        .into_bytes_stream(..)
        .await
        .map_err(|e| err(path, e))?;
    let mut carry: Vec<u8> = Vec::new();
    let mut line_no = 0usize;
    let mut apply = |line: &[u8], line_no: usize| -> Result<(), SyncError> {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(());
        }
        match serde_json::from_slice::<Line>(line) {
            Ok(Line::Put(r)) => {
                records.insert(r.key.clone(), r);
            }
            Ok(Line::Del { key }) => {
                records.remove(&key);
            }
            Err(e) => return Err(err(path, format!("line {line_no}: {e}"))),
        }
        Ok(())
    };
    while let Some(chunk) = stream.try_next().await.map_err(|e| err(path, e))? {
        carry.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(pos) = carry[start..].iter().position(|b| *b == b'\n') {
            line_no += 1;
            apply(&carry[start..start + pos], line_no)?;
            start += pos + 1;
        }
        carry.drain(..start);
    }
    if !carry.is_empty() {
        apply(&carry, line_no + 1)?;
    }
    Ok(())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, size: u64) -> Record {
        Record {
            key: key.into(),
            size,
            etag: Some("\"e\"".into()),
            md5: None,
            mtime_ms: Some(1),
            crc32: Some(size as u32),
            target_etag: None,
            target_mtime_ms: None,
        }
    }

    fn fs_op(dir: &std::path::Path) -> Operator {
        super::super::store::operator(&lockstep_config::ObjectStore::fs(dir.display().to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn segments_survive_a_crash_and_compaction_folds_them() {
        let tmp = tempfile::tempdir().unwrap();
        let op = fs_op(tmp.path());
        let d = dir("f", 0, 1);
        let (mut m, recs) = Manifest::load(&op, &d).await.unwrap();
        assert!(!m.existed && recs.is_empty());
        m.append(Line::Put(rec("a", 1)));
        m.append(Line::Put(rec("b", 2)));
        m.flush(true).await.unwrap();
        m.append(Line::Put(rec("a", 3)));
        m.append(Line::Del { key: "b".into() });
        m.flush(true).await.unwrap();
        m.append(Line::Put(rec("lost", 9))); // never flushed: "killed" here
        drop(m);

        let (mut m, recs) = Manifest::load(&op, &d).await.unwrap();
        assert!(m.existed);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs["a"].size, 3);
        m.compact(recs.values()).await.unwrap();
        let names: Vec<String> = op
            .list(&d)
            .await
            .unwrap()
            .iter()
            .map(|e| e.name().to_string())
            .collect();
        assert_eq!(names.iter().filter(|n| n.starts_with("seg-")).count(), 0);
        assert!(names.contains(&"base.jsonl".to_string()));

        let (_, again) = Manifest::load(&op, &d).await.unwrap();
        assert_eq!(again, recs);
    }

    #[tokio::test]
    async fn a_corrupt_line_names_the_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let op = fs_op(tmp.path());
        let d = dir("f", 1, 2);
        op.write(
            &format!("{d}base.jsonl"),
            "{\"k\":\"a\",\"s\":1}\nnot json\n",
        )
        .await
        .unwrap();
        let e = Manifest::load(&op, &d).await.err().unwrap().to_string();
        assert!(e.contains("base.jsonl") && e.contains("line 2"), "{e}");
    }
}
