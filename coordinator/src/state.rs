//! The coordinator's durable state: generation, known workers, assignment and pauses, kept as
//! one JSON document (`coordinator-state.json`) in a folder or bucket ([`crate::cas`]).
//!
//! The leader writes it before any worker learns of a change, so a restarted or newly elected
//! coordinator never hands out a task that a worker it forgot about may still be running.
//!
//! Writes are fenced: each one is a compare-and-swap over the version this coordinator last
//! read or wrote, and carries a [`Stamp`] (election epoch, leader id, write number) that makes
//! every version unique. A leader that was deposed while it could not see it (paused, cut
//! off) finds the document changed by its successor and fails with [`StateError::Fenced`]
//! instead of overwriting it. A successor starts serving only after its first write, so from
//! then on every write of an older leader is refused.

use crate::cas::{CasError, CasStore, Expect, Tag};
use lockstep_config::ObjectStore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub const STATE_FILE: &str = "coordinator-state.json";

/// How long one state read or write may take before it counts as failed.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Store(#[from] CasError),
    #[error("state store: {path} is not valid coordinator state: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("state store: {STATE_FILE} was written by another leader ({}) since this coordinator read it: it is no longer the leader", by.as_ref().map(|s| format!("{} at epoch {}", s.leader, s.epoch)).unwrap_or_else(|| "document removed".to_string()))]
    Fenced { by: Option<Stamp> },
    #[error("state store: this coordinator is not the leader and holds no state to write")]
    NotLeading,
}

/// Who wrote a state document: the election epoch and leader id, and the write's number
/// within that leadership.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stamp {
    pub epoch: u64,
    pub leader: String,
    pub seq: u64,
}

/// A worker as remembered across coordinator restarts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PersistedWorker {
    pub capabilities: Vec<String>,
    pub capacity: u32,
    pub session_generation: u64,
    pub draining: bool,
    #[serde(default)]
    pub hostname: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PersistedState {
    pub generation: u64,
    pub workers: BTreeMap<String, PersistedWorker>,
    /// task -> worker it should run on.
    pub desired: BTreeMap<String, String>,
    /// task -> worker that may be running it now (single writer).
    pub actual: BTreeMap<String, String>,
    pub paused_flows: BTreeSet<String>,
    /// task -> worker id: tasks held from every session until a former session of that id
    /// can no longer hold a valid lease (`crate::control`). A restored hold lasts a full
    /// `lease_ttl + handover_margin` from the restore. Absent when empty (and in documents of
    /// earlier versions).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<String, String>,
    /// Who wrote this version (absent in documents of versions before leader election).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// Where the leader stands with the document: the version it last read or wrote.
#[derive(Debug, Clone)]
struct Cursor {
    tag: Option<Tag>,
    epoch: u64,
    leader: String,
    seq: u64,
}

/// Reads and writes [`PersistedState`], fenced (see the module doc).
pub struct StateStore {
    cas: CasStore,
    cursor: std::sync::Mutex<Option<Cursor>>,
}

impl StateStore {
    pub fn new(config: &ObjectStore) -> Result<Self, StateError> {
        Ok(StateStore {
            cas: CasStore::new(config, STATE_TIMEOUT)?,
            cursor: std::sync::Mutex::new(None),
        })
    }

    /// The store the state lives in (the election keeps its lease beside it).
    pub fn cas(&self) -> &CasStore {
        &self.cas
    }

    /// Reads the state as the leader of `epoch`: later [`save`](Self::save)s land only over
    /// this version. `None` on first start.
    pub async fn load_as(
        &self,
        epoch: u64,
        leader: &str,
    ) -> Result<Option<PersistedState>, StateError> {
        let (state, tag) = match self.read().await? {
            Some((s, t)) => (Some(s), Some(t)),
            None => (None, None),
        };
        *self.cursor_mut() = Some(Cursor {
            tag,
            epoch,
            leader: leader.to_string(),
            seq: 0,
        });
        Ok(state)
    }

    /// The stored state, without taking part in writing it (tools and tests).
    pub async fn peek(&self) -> Result<Option<PersistedState>, StateError> {
        Ok(self.read().await?.map(|(s, _)| s))
    }

    /// Writes the state over the version last read or written. [`StateError::Fenced`] when
    /// another leader wrote since: this coordinator must stop leading (and forgets its place).
    pub async fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        let Some(cursor) = self.cursor_mut().clone() else {
            return Err(StateError::NotLeading);
        };
        let stamp = Stamp {
            epoch: cursor.epoch,
            leader: cursor.leader.clone(),
            seq: cursor.seq + 1,
        };
        let mut doc = state.clone();
        doc.stamp = Some(stamp.clone());
        let bytes = serde_json::to_vec(&doc).map_err(|source| StateError::Corrupt {
            path: STATE_FILE.to_string(),
            source,
        })?;
        let expect = match &cursor.tag {
            Some(t) => Expect::Tag(t),
            None => Expect::Absent,
        };
        let tag = match self.cas.write(STATE_FILE, bytes, expect).await {
            Ok(tag) => tag,
            Err(e) if e.is_conflict() => {
                // Our own write may have landed after all (a timed-out request that went
                // through): the stamp tells.
                match self.read().await? {
                    Some((found, tag)) if found.stamp.as_ref() == Some(&stamp) => tag,
                    other => {
                        *self.cursor_mut() = None;
                        return Err(StateError::Fenced {
                            by: other.and_then(|(s, _)| s.stamp),
                        });
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(c) = self.cursor_mut().as_mut() {
            c.tag = Some(tag);
            c.seq = stamp.seq;
        }
        Ok(())
    }

    /// Stops writing: later saves fail with [`StateError::NotLeading`] (on stepping down).
    pub fn forget(&self) {
        *self.cursor_mut() = None;
    }

    async fn read(&self) -> Result<Option<(PersistedState, Tag)>, StateError> {
        match self.cas.read(STATE_FILE).await? {
            None => Ok(None),
            Some((bytes, tag)) => serde_json::from_slice(&bytes)
                .map(|s| Some((s, tag)))
                .map_err(|source| StateError::Corrupt {
                    path: STATE_FILE.to_string(),
                    source,
                }),
        }
    }

    fn cursor_mut(&self) -> std::sync::MutexGuard<'_, Option<Cursor>> {
        // A panic while holding this lock leaves a valid Option behind: keep going.
        self.cursor.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> StateStore {
        StateStore::new(&ObjectStore::fs(dir.to_string_lossy())).expect("fs store")
    }

    #[tokio::test]
    async fn roundtrip_and_first_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        assert_eq!(store.load_as(1, "c1").await.expect("load"), None);
        let mut state = PersistedState {
            generation: 7,
            ..Default::default()
        };
        state.desired.insert("f/s/0".into(), "w1".into());
        state.paused_flows.insert("f".into());
        store.save(&state).await.expect("save");
        store
            .save(&state)
            .await
            .expect("save again over our own version");
        let loaded = store.peek().await.expect("load").expect("present");
        assert_eq!(
            loaded.stamp,
            Some(Stamp {
                epoch: 1,
                leader: "c1".into(),
                seq: 2
            })
        );
        state.stamp = loaded.stamp.clone();
        assert_eq!(loaded, state);
    }

    #[tokio::test]
    async fn a_deposed_leader_cannot_overwrite_its_successor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = store(dir.path());
        let new = store(dir.path());
        old.load_as(1, "old").await.expect("load");
        let mut state = PersistedState {
            generation: 3,
            ..Default::default()
        };
        old.save(&state).await.expect("old leads");
        // The successor takes over: it reads, then writes before it serves anyone.
        let mut taken = new.load_as(2, "new").await.expect("load").expect("state");
        taken.generation = 4;
        new.save(&taken).await.expect("new leads");
        // The old leader wakes up and writes what it had in memory.
        state.generation = 99;
        let err = old.save(&state).await.expect_err("fenced");
        match &err {
            StateError::Fenced { by: Some(by) } => {
                assert_eq!((by.epoch, by.leader.as_str()), (2, "new"))
            }
            other => panic!("expected Fenced, got {other}"),
        }
        assert!(err.to_string().contains("new at epoch 2"), "{err}");
        assert!(matches!(
            old.save(&state).await,
            Err(StateError::NotLeading)
        ));
        let stored = new.peek().await.expect("read").expect("state");
        assert_eq!(stored.generation, 4, "the successor's state stands");
        // The successor keeps writing.
        new.save(&taken).await.expect("new still leads");
    }

    #[tokio::test]
    async fn documents_without_a_stamp_still_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(STATE_FILE),
            br#"{"generation":5,"workers":{},"desired":{},"actual":{"f/s/0":"w1"},"paused_flows":[]}"#,
        )
        .expect("write");
        let store = store(dir.path());
        let s = store.load_as(1, "c").await.expect("load").expect("state");
        assert_eq!((s.generation, s.stamp.clone()), (5, None));
        store
            .save(&s)
            .await
            .expect("first fenced write over an old document");
    }

    #[tokio::test]
    async fn corrupt_state_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").expect("write");
        let store = store(dir.path());
        let err = store.load_as(1, "c").await.expect_err("corrupt");
        assert!(
            err.to_string().contains("not valid coordinator state"),
            "{err}"
        );
    }
}
