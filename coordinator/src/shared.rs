//! What the gRPC services, the HTTP handlers, the leadership loop and the tick loop share:
//! [`Shared`], and the one way a control-plane call runs ([`Shared::call`]).
//!
//! All control-plane state sits behind one async mutex ([`Shared::control`]). A call checks
//! that this coordinator leads ([`crate::election::Leadership::is_leading`]), mutates the
//! state and stages it if it changed, releases the lock, waits until the state it saw is
//! written, and only then answers, so no worker ever acts on an assignment that a coordinator
//! restart or a change of leader could forget. Writes run outside the lock, one at a time:
//! a slow or flooded store delays the calls that changed something, not every heartbeat.
//!
//! This module imports none of the modules that use it (server, grpc, http, leadership), so
//! data flows one way: server -> {grpc, http, leadership} -> shared.

use crate::admission::Admission;
use crate::auth::AdminAuth;
use crate::control::{Control, ControlError, Timing};
use crate::election::{LeaderInfo, Leadership};
use crate::events::{Level, RecentEvents};
use crate::metrics::Metrics;
use crate::state::{StateError, StateStore};
use lockstep_config::{Config, CoordinatorConfig, Limits};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;

/// State shared by the gRPC services, the HTTP handlers and the tick loop.
pub struct Shared {
    pub control: Mutex<Control>,
    pub store: StateStore,
    pub metrics: Metrics,
    pub ready: AtomicBool,
    pub coordinator_id: String,
    pub region: String,
    /// The drift poller's latest report.
    pub drift: lockstep_drift::poller::LatestReport,
    /// What the peer poller knows of the other regions ([`crate::peers`]).
    pub peers: crate::peers::PeerBook,
    /// The admin token check (AdminService and `/api/...`).
    pub auth: AdminAuth,
    /// Who a gRPC call comes from: worker certificates act only as their own worker id, and
    /// operator certificates only make admin calls ([`crate::identity`]).
    pub identities: crate::identity::Identities,
    /// Bounds on worker calls, checked before the control lock.
    pub admission: Admission,
    pub limits: Limits,
    /// Recent errors and warnings (status page, `/api/v1/errors`).
    pub events: RecentEvents,
    /// When this coordinator started (shown as uptime).
    pub started: std::time::SystemTime,
    /// Leader or standby, and until when this coordinator may answer as leader.
    pub leadership: Leadership,
    /// The config this coordinator runs (tasks are derived from it at each takeover).
    pub config: Arc<Config>,
    /// State writes failing, or a refusal to lead over lost state: `/readyz` answers 503.
    pub state_health: crate::state::StateHealth,
    /// The state staged for writing, and how far writing has come ([`Shared::stage`]).
    pub writes: Writes,
}

/// A point in the sequence of staged states: the leadership epoch and the staging number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WritePoint {
    pub epoch: u64,
    pub version: u64,
}

struct Staged {
    point: WritePoint,
    state: crate::state::PersistedState,
}

/// The state staged for writing ([`Shared::stage`], [`Shared::persist_through`]).
#[derive(Default)]
pub struct Writes {
    /// Staging numbers, counted under the control lock (so in order of the changes).
    staged: std::sync::atomic::AtomicU64,
    /// The newest staged state not yet written.
    latest: std::sync::Mutex<Option<Staged>>,
    /// The newest point written; held while writing, so writes go one at a time.
    written: Mutex<WritePoint>,
}

impl Writes {
    fn latest(&self) -> std::sync::MutexGuard<'_, Option<Staged>> {
        // A panic while holding it leaves a valid Option: keep going.
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Shared {
    /// Under the control lock: stages the state if it changed, and returns the point that must
    /// be written before any answer built on the state as it is now goes out.
    ///
    /// Writing happens outside the lock ([`Shared::persist_through`]), so a slow store delays
    /// only the calls whose answers depend on the write, never a heartbeat that changes nothing
    /// and sees only what is written already.
    pub fn stage(&self, control: &mut Control) -> WritePoint {
        let epoch = self.leadership.epoch();
        if let Some(state) = control.take_dirty_snapshot() {
            let version = self.writes.staged.fetch_add(1, Ordering::SeqCst) + 1;
            *self.writes.latest() = Some(Staged {
                point: WritePoint { epoch, version },
                state,
            });
            return WritePoint { epoch, version };
        }
        WritePoint {
            epoch,
            version: self.writes.staged.load(Ordering::SeqCst),
        }
    }

    /// Returns once the state staged up to `point` is written (by this call or another one),
    /// writing the newest staged state if it is not. Writes go one at a time and in staging
    /// order; each is the whole state, so a newer one includes everything an older one had.
    /// On failure the caller must not answer with the new assignment; the staged state stays
    /// for the next call or tick to retry.
    pub async fn persist_through(&self, point: WritePoint) -> Result<(), StateError> {
        let mut written = self.writes.written.lock().await;
        if written.epoch == point.epoch && written.version >= point.version {
            return Ok(());
        }
        // A call of an earlier leadership (stepped down, or down and up again in between), or
        // one made while not leading: what it saw may never be written; it must not answer.
        if self.leadership.epoch() != point.epoch || !self.leadership.is_leading(Instant::now()) {
            return Err(StateError::NotLeading);
        }
        let staged = {
            let mut latest = self.writes.latest();
            // Staged under an earlier leadership: never to be written (this leadership began
            // with a fence write of the state it restored).
            if latest
                .as_ref()
                .is_some_and(|s| s.point.epoch != point.epoch)
            {
                *latest = None;
            }
            latest.take()
        };
        let Some(staged) = staged else {
            // Nothing of this leadership waits to be written (a failed write is put back, and
            // writers take turns under `written`): the state the caller saw is on the store,
            // by the takeover's fence write or a write since. A steady heartbeat right after
            // a takeover ends here.
            *written = point;
            return Ok(());
        };
        let started = Instant::now();
        let result = self.store.save(&staged.state).await;
        self.record_state_write(started, &result);
        match &result {
            Ok(()) => *written = staged.point,
            Err(e @ StateError::Fenced { .. }) => {
                tracing::error!(error = %e, "state write fenced: stepping down");
                self.leadership.revoke();
            }
            // Stepping down at this very moment: nothing to retry.
            Err(StateError::NotLeading) => {}
            Err(e) => {
                tracing::error!(error = %e, "persisting coordinator state failed; will retry");
                self.events.record(
                    Level::Error,
                    "state",
                    format!("persisting coordinator state failed (retried; workers get no new assignment until it works): {e}"),
                );
                // Kept for the retry, unless a newer state (a superset) was staged meanwhile.
                let mut latest = self.writes.latest();
                if latest.is_none() {
                    *latest = Some(staged);
                }
            }
        }
        result
    }

    /// Counts one state write by result (ok, fenced, error) and its duration.
    pub fn record_state_write(&self, started: Instant, result: &Result<(), StateError>) {
        self.metrics
            .state_write_seconds
            .observe(started.elapsed().as_secs_f64());
        let label = match result {
            Ok(()) => "ok",
            Err(StateError::Fenced { .. }) => "fenced",
            Err(_) => "error",
        };
        self.metrics.state_writes.with_label_values(&[label]).inc();
        // `/readyz` answers 503 from the first failed write to the next one that lands.
        if self.state_health.record_write(result) {
            match result {
                Ok(()) => tracing::info!("state writes work again: ready"),
                Err(e) => {
                    tracing::warn!(error = %e, kind = e.kind(), "state writes failing: /readyz answers 503 until one lands")
                }
            }
        }
    }

    /// Runs one control-plane call: check leadership, mutate, persist, answer.
    pub async fn call<T>(
        &self,
        f: impl FnOnce(&mut Control, Instant) -> Result<T, ControlError>,
    ) -> Result<T, CallError> {
        let (result, point) = {
            let mut control = self.control.lock().await;
            let now = Instant::now();
            // Checked under the lock, right before acting: a leader whose lease ran out
            // (paused, cut off from the store) answers nobody, whatever its memory says.
            if !self.leadership.is_leading(now) {
                return Err(CallError::NotLeader(
                    self.leadership.serving().err().flatten(),
                ));
            }
            let result = f(&mut control, now);
            (result, self.stage(&mut control))
        };
        // Outside the lock. Also when the call was refused or changed nothing: the answer
        // must not show state that is staged but not yet written.
        self.persist_through(point).await?;
        Ok(result?)
    }

    pub async fn view_status(&self) -> lockstep_proto::StatusResponse {
        let control = self.control.lock().await;
        let mut status = control.status(Instant::now());
        status.coordinator_id = self.coordinator_id.clone();
        status.region = self.region.clone();
        status
    }

    /// This region in figures, now (PeerService.RegionStatus, and the first row of the
    /// regions view).
    pub async fn view_region_status(&self) -> lockstep_proto::RegionStatusResponse {
        crate::peers::figures(&self.view_status().await, std::time::SystemTime::now())
    }

    /// Every region as this coordinator sees it (AdminService.Regions, `/api/v1/regions`,
    /// the status page).
    pub async fn view_regions(&self) -> lockstep_proto::RegionsResponse {
        crate::peers::view(self.view_region_status().await, &self.config, &self.peers)
    }
}

/// A control-plane call's failure: refused by the rules, or not persisted.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("this coordinator is not the active one")]
    NotLeader(Option<LeaderInfo>),
}

/// Lease timing from `[coordinator]`.
pub fn timing(c: &CoordinatorConfig) -> Timing {
    Timing {
        lease_ttl: c.lease_ttl,
        heartbeat_interval: c.heartbeat_interval,
        handover_margin: c.handover_margin,
        lease_safety_margin: c.lease_safety_margin,
    }
}
