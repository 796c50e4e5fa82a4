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
//!
//! **State loss.** Beside the document lies a marker, `coordinator-state.marker`, written
//! after the first successful write of every leadership that did not find it (so a store of an
//! earlier version gets one at its next takeover). A missing document with the marker present
//! is lost state, not a first start: [`StateStore::load_as`] fails with [`StateError::Lost`]
//! and the coordinator refuses to lead until an operator restores the document or confirms the
//! loss ([`accept_state_loss`], which removes the marker). The marker is written *after* the
//! document, never before: a leader that dies between taking the lease and its first write
//! leaves no marker, and its successor starts afresh instead of refusing for state that never
//! existed. (A lease epoch above 1 alone proves nothing for the same reason, so it is only
//! logged.) A fresh start, accepted loss or genuine first start, holds every task for a full
//! worker lease plus the hand-over margin (`crate::control`), so no earlier holder can still
//! be writing when a task is handed out.
//!
//! **Sanity.** A document whose generation is so high that counting on from it could wrap is
//! refused ([`StateError::Implausible`]); entries naming unknown workers are dealt with where
//! the state is rebuilt (`crate::control::Control::new`).

use crate::cas::{CasError, CasStore, Expect, Tag};
use lockstep_config::ObjectStore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub const STATE_FILE: &str = "coordinator-state.json";
/// Present once state has been written to this store (module doc).
pub const MARKER_FILE: &str = "coordinator-state.marker";

/// The highest generation a restored document may carry: counting on from it one generation
/// per change can never wrap a `u64` (2^63 changes are out of reach).
pub const MAX_RESTORED_GENERATION: u64 = 1 << 63;

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
    /// The document is gone but the marker says state was written here before: refuse to
    /// lead (a fresh start would forget who runs what, and pauses and drains).
    #[error("state store {store}: {STATE_FILE} is missing, but {MARKER_FILE} shows that state was written there before (first by {first_by}): the state was lost, so this coordinator refuses to lead. An operator must restore {STATE_FILE} from a backup, or confirm the loss with `lockstep coordinator --config <file> --accept-state-loss` (README: Lost or corrupted state)")]
    Lost { store: String, first_by: String },
    /// The document parses but cannot be right.
    #[error("state store {store}: {STATE_FILE} is not plausible coordinator state: {problem}; an operator must repair or restore it (README: Lost or corrupted state)")]
    Implausible { store: String, problem: String },
    #[error("state store {store}: {STATE_FILE} exists, so no state was lost: nothing to accept (remove or move the document aside first to start afresh)")]
    NotLost { store: String },
}

impl StateError {
    /// A short name of the failure, for `/readyz` and logs: `fenced`, `conflict`, `timeout`,
    /// `io`, `store`, `unsupported`, `corrupt`, `lost`, `implausible`, `not-leading`.
    pub fn kind(&self) -> &'static str {
        match self {
            StateError::Store(CasError::Conflict { .. }) => "conflict",
            StateError::Store(CasError::Timeout { .. }) => "timeout",
            StateError::Store(CasError::Io { .. }) => "io",
            StateError::Store(CasError::Store { .. }) => "store",
            StateError::Store(CasError::Unsupported { .. }) => "unsupported",
            StateError::Corrupt { .. } => "corrupt",
            StateError::Fenced { .. } => "fenced",
            StateError::NotLeading => "not-leading",
            StateError::Lost { .. } => "lost",
            StateError::Implausible { .. } => "implausible",
            StateError::NotLost { .. } => "not-lost",
        }
    }

    /// True when retrying cannot help and an operator must act on the document: the
    /// coordinator stays up, refuses to lead and says why (`/readyz` 503) instead of taking
    /// the lease over and over.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            StateError::Lost { .. } | StateError::Corrupt { .. } | StateError::Implausible { .. }
        )
    }
}

/// What the marker document says (for people reading it, and for the refusal message).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Marker {
    /// The leader and epoch of the write that laid the marker.
    pub leader: String,
    pub epoch: u64,
    /// Wall-clock time, for people; never compared.
    pub written_at: String,
    pub note: String,
}

/// Whether the state store works, as `/readyz` reports it: the last state write's failure,
/// and why this coordinator refuses to lead. Shared by the write path and the election loop.
#[derive(Debug, Default)]
pub struct StateHealth {
    inner: std::sync::Mutex<HealthInner>,
}

#[derive(Debug, Default, Clone)]
struct HealthInner {
    /// Kind of the last state write's failure; `None` after a success.
    write_failure: Option<&'static str>,
    /// Why this coordinator refuses to lead (an operator must act).
    refusal: Option<String>,
}

impl StateHealth {
    fn inner(&self) -> std::sync::MutexGuard<'_, HealthInner> {
        // Two plain fields: valid whatever a panicking holder did.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in one state write's result. True when this changed the health (the first
    /// failure, or the first success after failures).
    pub fn record_write(&self, result: &Result<(), StateError>) -> bool {
        let next = match result {
            Ok(()) => None,
            // Stepping down at this moment: says nothing about the store.
            Err(StateError::NotLeading) => return false,
            Err(e) => Some(e.kind()),
        };
        let mut inner = self.inner();
        let changed = inner.write_failure != next;
        inner.write_failure = next;
        changed
    }

    /// The kind of the failing state writes, if the last one failed.
    pub fn write_failure(&self) -> Option<&'static str> {
        self.inner().write_failure
    }

    pub fn set_refusal(&self, reason: Option<String>) {
        let mut inner = self.inner();
        inner.refusal = reason;
        if inner.refusal.is_some() {
            // Not leading, so no write of this process is failing any more.
            inner.write_failure = None;
        }
    }

    pub fn refusal(&self) -> Option<String> {
        self.inner().refusal.clone()
    }
}

/// Confirms a state loss for the store in `config`: removes the marker, so that the next
/// coordinator to lead starts afresh (holding every task for a full worker lease plus the
/// hand-over margin). Refused while the state document exists. Returns the marker it removed.
pub async fn accept_state_loss(config: &ObjectStore) -> Result<Option<Marker>, StateError> {
    let store = StateStore::new(config)?;
    let what = store.cas.describe().to_string();
    if store.cas.read(STATE_FILE).await?.is_some() {
        return Err(StateError::NotLost { store: what });
    }
    let marker = store.marker().await?;
    store.cas.remove(MARKER_FILE).await?;
    tracing::warn!(store = %what, file = MARKER_FILE, "state loss accepted: marker removed; the next leader starts afresh and holds every task for lease_ttl + handover_margin");
    Ok(marker)
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
    /// The marker is known to exist (read, or written after a write of this leadership).
    marked: bool,
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
        // A failed load leaves this coordinator unable to write.
        *self.cursor_mut() = None;
        let (state, tag) = match self.read().await? {
            Some((s, t)) => (Some(s), Some(t)),
            None => (None, None),
        };
        let marker = self.marker().await?;
        if let Some(s) = &state {
            self.check(s)?;
        } else if let Some(m) = &marker {
            return Err(StateError::Lost {
                store: self.cas.describe().to_string(),
                first_by: format!("{} at epoch {}, {}", m.leader, m.epoch, m.written_at),
            });
        }
        *self.cursor_mut() = Some(Cursor {
            tag,
            epoch,
            leader: leader.to_string(),
            seq: 0,
            marked: marker.is_some(),
        });
        Ok(state)
    }

    /// Read-only: `Ok` when a takeover could use the stored state (present and plausible, or
    /// a genuine first start), else the error that makes a coordinator refuse to lead.
    pub async fn usable(&self) -> Result<(), StateError> {
        match self.read().await? {
            Some((s, _)) => self.check(&s),
            None => match self.marker().await? {
                Some(m) => Err(StateError::Lost {
                    store: self.cas.describe().to_string(),
                    first_by: format!("{} at epoch {}, {}", m.leader, m.epoch, m.written_at),
                }),
                None => Ok(()),
            },
        }
    }

    /// The sanity rules a restored document must meet before anything is built on it.
    fn check(&self, state: &PersistedState) -> Result<(), StateError> {
        let highest = state
            .workers
            .values()
            .map(|w| w.session_generation)
            .chain([state.generation])
            .max()
            .unwrap_or(state.generation);
        if highest > MAX_RESTORED_GENERATION {
            return Err(StateError::Implausible {
                store: self.cas.describe().to_string(),
                problem: format!(
                    "generation {highest} is above {MAX_RESTORED_GENERATION}: counting on from it could wrap"
                ),
            });
        }
        Ok(())
    }

    /// The marker, if present. An unreadable marker still counts as present.
    async fn marker(&self) -> Result<Option<Marker>, StateError> {
        Ok(self.cas.read(MARKER_FILE).await?.map(|(bytes, _)| {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Marker {
                leader: "unknown".to_string(),
                epoch: 0,
                written_at: "unknown time".to_string(),
                note: "unreadable marker".to_string(),
            })
        }))
    }

    /// Lays the marker after a write of `stamp` landed (module doc). Another leader laying
    /// it first is fine.
    async fn lay_marker(&self, stamp: &Stamp) -> Result<(), StateError> {
        let marker = Marker {
            leader: stamp.leader.clone(),
            epoch: stamp.epoch,
            written_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
            note: format!(
                "{STATE_FILE} has been written in this store: if it goes missing, coordinators refuse to lead until it is restored or the loss is accepted (lockstep coordinator --accept-state-loss)"
            ),
        };
        let bytes = serde_json::to_vec_pretty(&marker).map_err(|source| StateError::Corrupt {
            path: MARKER_FILE.to_string(),
            source,
        })?;
        match self.cas.write(MARKER_FILE, bytes, Expect::Absent).await {
            Ok(_) => {
                tracing::info!(store = %self.cas.describe(), file = MARKER_FILE, epoch = stamp.epoch, "state marker written: a later loss of the state document is detected");
                Ok(())
            }
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
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
        let marked = match self.cursor_mut().as_mut() {
            Some(c) => {
                c.tag = Some(tag);
                c.seq = stamp.seq;
                c.marked
            }
            None => true,
        };
        if !marked {
            // The document landed; a failure here fails the write (retried with the next),
            // so the marker is in place before long.
            self.lay_marker(&stamp).await?;
            if let Some(c) = self.cursor_mut().as_mut() {
                c.marked = true;
            }
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
    async fn a_deleted_document_is_a_loss_not_a_first_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        assert_eq!(store.load_as(1, "c1").await.expect("first start"), None);
        assert!(
            !dir.path().join(MARKER_FILE).exists(),
            "no marker before a write"
        );
        store.save(&PersistedState::default()).await.expect("save");
        assert!(
            dir.path().join(MARKER_FILE).exists(),
            "marker after the first write"
        );
        std::fs::remove_file(dir.path().join(STATE_FILE)).expect("delete");
        let err = store.load_as(2, "c2").await.expect_err("lost");
        assert!(matches!(err, StateError::Lost { .. }) && err.needs_operator());
        let text = err.to_string();
        assert!(
            text.contains(STATE_FILE)
                && text.contains("--accept-state-loss")
                && text.contains("c1 at epoch 1"),
            "{text}"
        );
        assert!(matches!(store.usable().await, Err(StateError::Lost { .. })));
        assert!(matches!(
            store.save(&PersistedState::default()).await,
            Err(StateError::NotLeading)
        ));
        // The operator confirms the loss: a fresh start, which lays a new marker.
        let removed = accept_state_loss(&ObjectStore::fs(dir.path().to_string_lossy()))
            .await
            .expect("accept");
        assert_eq!(
            removed.map(|m| (m.leader, m.epoch)),
            Some(("c1".to_string(), 1))
        );
        store.usable().await.expect("usable");
        assert_eq!(store.load_as(3, "c2").await.expect("fresh"), None);
        store.save(&PersistedState::default()).await.expect("save");
        assert!(dir.path().join(MARKER_FILE).exists());
        // Accepting is refused while the document exists.
        let err = accept_state_loss(&ObjectStore::fs(dir.path().to_string_lossy()))
            .await
            .expect_err("not lost");
        assert!(matches!(err, StateError::NotLost { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_leader_that_never_wrote_leaves_no_marker_and_an_old_document_gets_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Epoch 1 took the lease and died before its first write: epoch 2 starts afresh.
        let first = store(dir.path());
        assert_eq!(first.load_as(1, "c1").await.expect("load"), None);
        drop(first);
        let second = store(dir.path());
        assert_eq!(second.load_as(2, "c2").await.expect("not a loss"), None);
        // A document of a version before the marker: the next write lays it.
        std::fs::write(
            dir.path().join(STATE_FILE),
            br#"{"generation":5,"workers":{},"desired":{},"actual":{},"paused_flows":[]}"#,
        )
        .expect("write");
        let third = store(dir.path());
        let s = third.load_as(3, "c3").await.expect("load").expect("state");
        assert!(!dir.path().join(MARKER_FILE).exists());
        third.save(&s).await.expect("save");
        let marker: Marker =
            serde_json::from_slice(&std::fs::read(dir.path().join(MARKER_FILE)).expect("marker"))
                .expect("marker json");
        assert_eq!((marker.leader.as_str(), marker.epoch), ("c3", 3));
    }

    #[tokio::test]
    async fn a_generation_that_could_wrap_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(STATE_FILE),
            format!(
                r#"{{"generation":{},"workers":{{}},"desired":{{}},"actual":{{}},"paused_flows":[]}}"#,
                u64::MAX
            ),
        )
        .expect("write");
        let store = store(dir.path());
        let err = store.load_as(1, "c").await.expect_err("implausible");
        assert!(matches!(err, StateError::Implausible { .. }) && err.needs_operator());
        assert!(
            err.to_string().contains(STATE_FILE) && err.to_string().contains("wrap"),
            "{err}"
        );
    }

    #[test]
    fn health_follows_the_last_write() {
        let h = StateHealth::default();
        assert_eq!(h.write_failure(), None);
        assert!(!h.record_write(&Ok(())));
        let failed: Result<(), StateError> = Err(StateError::Corrupt {
            path: STATE_FILE.into(),
            source: serde_json::from_slice::<u8>(b"x").expect_err("bad json"),
        });
        assert!(h.record_write(&failed));
        assert!(!h.record_write(&failed), "no change");
        assert_eq!(h.write_failure(), Some("corrupt"));
        assert!(!h.record_write(&Err(StateError::NotLeading)));
        assert!(h.record_write(&Ok(())));
        assert_eq!(h.write_failure(), None);
        h.set_refusal(Some("lost".into()));
        assert_eq!(h.refusal().as_deref(), Some("lost"));
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
