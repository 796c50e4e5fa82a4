//! The task contract: what the worker runtime knows of a task, and nothing more.
//!
//! A [`TaskFactory`] builds a [`Task`] for one kind ("kafka", "objects") from the spec the
//! coordinator sent. The runtime runs it with a [`TaskContext`]: a cancellation token (stop
//! now, cleanly), a [`LeaseGuard`] (may I still write?) and a [`Progress`] handle (what the
//! next heartbeat reports). The runtime never looks inside a task.

use crate::kafka::error::MirrorError;
use crate::objects::error::SyncError;
use lockstep_proto as pb;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why a task stopped with an error. The runtime restarts it with backoff and shows the
/// message in status. Each task kind fails with its own typed error, which says where (flow,
/// site, topic, partition, store) and whether running the task again can help
/// ([`TaskError::is_retryable`]); a lost lease is one variant for every kind.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("invalid task config: {0}")]
    Config(String),
    #[error("task kind \"{0}\" is not available in this worker")]
    Unsupported(String),
    #[error("lease lost: stopped writing")]
    LeaseLost,
    /// A Kafka mirror task's failure.
    #[error(transparent)]
    Mirror(MirrorError),
    /// An object sync task's failure.
    #[error(transparent)]
    Objects(SyncError),
}

impl TaskError {
    /// Whether running the task again can help, or only a change of config or data can.
    pub fn is_retryable(&self) -> bool {
        match self {
            TaskError::Config(_) | TaskError::Unsupported(_) => false,
            TaskError::LeaseLost => true,
            TaskError::Mirror(e) => e.is_retryable(),
            TaskError::Objects(e) => e.is_retryable(),
        }
    }
}

impl From<MirrorError> for TaskError {
    fn from(e: MirrorError) -> Self {
        match e {
            MirrorError::LeaseLost => TaskError::LeaseLost,
            e => TaskError::Mirror(e),
        }
    }
}

impl From<SyncError> for TaskError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::LeaseLost => TaskError::LeaseLost,
            e => TaskError::Objects(e),
        }
    }
}

/// One running unit of work.
#[async_trait::async_trait]
pub trait Task: Send + 'static {
    /// Runs until `ctx.shutdown` fires (return `Ok`) or a failure (return `Err`). Must stop
    /// writing as soon as `ctx.lease.valid()` turns false, and must leave its output
    /// consistent when cancelled: a half-written batch is committed or aborted, never left.
    async fn run(self: Box<Self>, ctx: TaskContext) -> Result<(), TaskError>;
}

/// Builds tasks of one kind.
pub trait TaskFactory: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    fn create(&self, spec: &pb::TaskSpec) -> Result<Box<dyn Task>, TaskError>;
}

/// What a task gets from the runtime.
#[derive(Clone)]
pub struct TaskContext {
    pub spec: Arc<pb::TaskSpec>,
    pub shutdown: CancellationToken,
    pub lease: LeaseGuard,
    pub progress: Progress,
}

/// The worker's lease as the task sees it: writing is allowed until `deadline`, which every
/// acknowledged heartbeat moves forward (sent-time + TTL - safety margin).
#[derive(Clone)]
pub struct LeaseGuard {
    rx: watch::Receiver<Instant>,
    safety_margin: Option<std::time::Duration>,
}

impl LeaseGuard {
    /// A guard on the deadlines `rx` carries; `safety_margin` is the least time between the
    /// deadline and the moment the coordinator may hand the task to another worker (the
    /// lease's safety margin plus the hand-over margin, as the coordinator announced them).
    pub fn new(rx: watch::Receiver<Instant>, safety_margin: std::time::Duration) -> Self {
        LeaseGuard {
            rx,
            safety_margin: Some(safety_margin),
        }
    }

    /// Within how long a write queued while the lease holds must land or be dropped, so that
    /// it can never land after a successor started (None: a lease that never ends).
    pub fn landing_window(&self) -> Option<std::time::Duration> {
        self.safety_margin
    }

    /// A guard whose lease never ends, for tools that run a task alone (one-shot CLI runs).
    pub fn unbounded() -> Self {
        let far = Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600);
        // A receiver keeps the last value after its sender is gone.
        let (_tx, rx) = watch::channel(far);
        LeaseGuard {
            rx,
            safety_margin: None,
        }
    }

    pub fn deadline(&self) -> Instant {
        *self.rx.borrow()
    }

    /// May the task write now?
    pub fn valid(&self) -> bool {
        Instant::now() < self.deadline()
    }
}

/// Shared progress of one task, read by the heartbeat.
#[derive(Clone, Default)]
pub struct Progress {
    inner: Arc<Mutex<pb::TaskProgress>>,
}

impl Progress {
    pub fn new(task_id: &str) -> Self {
        let p = Progress::default();
        p.update(|t| {
            t.task_id = task_id.to_string();
            t.state = pb::TaskState::Starting as i32;
        });
        p
    }

    /// Changes the progress under its lock.
    pub fn update(&self, f: impl FnOnce(&mut pb::TaskProgress)) {
        // A poisoned lock only means a task panicked while updating: the data is still usable.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }

    pub fn set_state(&self, state: pb::TaskState, message: impl Into<String>) {
        let message = message.into();
        self.update(|t| {
            t.state = state as i32;
            t.message = message;
        });
    }

    pub fn snapshot(&self) -> pb::TaskProgress {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
