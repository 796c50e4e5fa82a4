//! The coordinator's durable state: generation, known workers, assignment and pauses, kept as
//! one JSON document in an object store through opendal (a local folder by default).
//!
//! The coordinator writes it before any worker learns of a change, so a restarted
//! coordinator never hands out a task that a worker it forgot about may still be running.
//! The fs service writes through a temp file and a rename: a crash leaves the old or the
//! new document, never half of one.

use lockstep_config::{ObjectStore, StoreService};
use opendal::Operator;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const STATE_FILE: &str = "coordinator-state.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store ({service}): {source}")]
    Store {
        service: &'static str,
        #[source]
        source: opendal::Error,
    },
    #[error("state store: service \"{0}\" is not supported for coordinator state yet; use \"fs\"")]
    Unsupported(&'static str),
    #[error("state store: {path} is not valid coordinator state: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
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
}

/// Reads and writes [`PersistedState`].
#[derive(Clone)]
pub struct StateStore {
    op: Operator,
    service: &'static str,
}

impl StateStore {
    pub fn new(config: &ObjectStore) -> Result<Self, StateError> {
        let service = config.service.as_str();
        let op = match config.service {
            StoreService::Fs => {
                let root = std::path::Path::new(&config.root);
                let tmp = root.join(".tmp");
                let builder = opendal::services::Fs::default()
                    .root(&config.root)
                    .atomic_write_dir(&tmp.to_string_lossy());
                Operator::new(builder).map_err(|source| StateError::Store { service, source })?
            }
            other => return Err(StateError::Unsupported(other.as_str())),
        };
        Ok(StateStore { op, service })
    }

    /// The stored state, or `None` on first start.
    pub async fn load(&self) -> Result<Option<PersistedState>, StateError> {
        match self.op.read(STATE_FILE).await {
            Ok(buf) => {
                let bytes = buf.to_vec();
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StateError::Corrupt {
                        path: STATE_FILE.to_string(),
                        source,
                    })
            }
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Store {
                service: self.service,
                source,
            }),
        }
    }

    pub async fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(state).map_err(|source| StateError::Corrupt {
            path: STATE_FILE.to_string(),
            source,
        })?;
        self.op
            .write(STATE_FILE, bytes)
            .await
            .map(|_| ())
            .map_err(|source| StateError::Store {
                service: self.service,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roundtrip_and_first_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            StateStore::new(&ObjectStore::fs(dir.path().to_string_lossy())).expect("fs store");
        assert_eq!(store.load().await.expect("load"), None);
        let mut state = PersistedState {
            generation: 7,
            ..Default::default()
        };
        state.desired.insert("f/s/0".into(), "w1".into());
        state.paused_flows.insert("f".into());
        store.save(&state).await.expect("save");
        assert_eq!(store.load().await.expect("load"), Some(state));
    }

    #[tokio::test]
    async fn corrupt_state_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").expect("write");
        let store =
            StateStore::new(&ObjectStore::fs(dir.path().to_string_lossy())).expect("fs store");
        let err = store.load().await.expect_err("corrupt");
        assert!(
            err.to_string().contains("not valid coordinator state"),
            "{err}"
        );
    }
}
