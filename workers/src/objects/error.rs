//! Why an object sync cycle stopped: [`SyncError`], and whether running the task again can
//! help ([`SyncError::is_retryable`]).
//!
//! Imports nothing of the task's own but the store's error, so that the task contract can
//! name it.

use super::store::StoreError;

/// Why a cycle stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("flow {flow}: {msg}")]
    Config { flow: String, msg: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("list {what}: {source}")]
    List {
        what: String,
        #[source]
        source: opendal::Error,
    },
    #[error("manifest {path}: {msg}")]
    Manifest { path: String, msg: String },
    #[error("lease lost: stopped writing")]
    LeaseLost,
    #[error("cancelled")]
    Cancelled,
}

impl SyncError {
    /// Whether running the task again can help: false for a flow or store whose config is
    /// wrong; true for what a store or the lease may answer differently next time.
    pub fn is_retryable(&self) -> bool {
        match self {
            SyncError::Config { .. } => false,
            SyncError::Store(e) => e.source.is_temporary(),
            SyncError::List { .. }
            | SyncError::Manifest { .. }
            | SyncError::LeaseLost
            | SyncError::Cancelled => true,
        }
    }
}
