//! The running coordinator: takes part in the leader election, serves gRPC (WorkerService,
//! AdminService) and HTTP, and ticks the lease clock, until the shutdown token fires.
//!
//! All control-plane state sits behind one async mutex ([`Shared::control`]). A call checks
//! that this coordinator leads ([`crate::election::Leadership::is_leading`]), mutates the
//! state and stages it if it changed, releases the lock, waits until the state it saw is
//! written, and only then answers, so no worker ever acts on an assignment that a coordinator
//! restart or a change of leader could forget. Writes run outside the lock, one at a time:
//! a slow or flooded store delays the calls that changed something, not every heartbeat. A standby holds
//! an empty control plane and refuses every call with the leader's address
//! ([`crate::leadership`]).

use crate::admission::Admission;
use crate::auth::AdminAuth;
use crate::control::{Control, ControlError, Timing, WorkerView};
use crate::election::{Elector, Identity, LeaderInfo, Leadership};
use crate::events::{Level, RecentEvents};
use crate::metrics::Metrics;
use crate::state::{StateError, StateStore};
use crate::tls::{TlsError, TlsFiles};
use crate::{grpc, http, tasks};
use lockstep_config::{Config, CoordinatorConfig, Limits};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} server failed: {message}")]
    Serve { what: &'static str, message: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("coordinator.grpc_listen {addr} is not a loopback address, and gRPC has no TLS: worker ids would be unauthenticated and task specs (with Kafka and object-store credentials) would cross the network in plaintext. Set [coordinator.tls] with client_ca_file (recommended), listen on 127.0.0.1, or set coordinator.trusted_network = true if the network is private")]
    Plaintext { addr: SocketAddr },
}

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

/// The address a standby names for this coordinator: `advertise_*` from the config, else the
/// listen address as bound (the host name when listening on every interface).
fn advertised(configured: &Option<String>, bound: SocketAddr, tls: bool, host: &str) -> String {
    if let Some(a) = configured {
        return a.clone();
    }
    let scheme = if tls { "https" } else { "http" };
    if bound.ip().is_unspecified() {
        format!("{scheme}://{host}:{}", bound.port())
    } else {
        format!("{scheme}://{bound}")
    }
}

/// Where a started coordinator listens (the ports may have been 0 in the config).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// Starts the coordinator and returns once it is listening; the returned future finishes
/// when `shutdown` fires and everything has stopped.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<
    (
        Bound,
        impl std::future::Future<Output = Result<(), CoordinatorError>>,
    ),
    CoordinatorError,
> {
    let config = Arc::new(config);
    let c = &config.coordinator;
    let store = StateStore::new(&c.state)?;
    let metrics = Metrics::new();
    let timing = timing(c);
    tracing::info!(
        tasks = tasks::derive(&config).len(),
        flows = config.flows.len(),
        store = %store.cas().describe(),
        "derived tasks"
    );
    let hostname = hostname();
    plaintext_check(c)?;
    let tls = match &c.tls {
        Some(files) => {
            let files = TlsFiles::load(files, metrics.clone())?;
            tracing::info!(mutual = files.mutual(), "gRPC over TLS");
            Some(Arc::new(files))
        }
        None => None,
    };

    let grpc_listener = tokio::net::TcpListener::bind(c.grpc_listen)
        .await
        .map_err(|source| CoordinatorError::Bind {
            what: "gRPC",
            addr: c.grpc_listen,
            source,
        })?;
    let http_listener = tokio::net::TcpListener::bind(c.http_listen)
        .await
        .map_err(|source| CoordinatorError::Bind {
            what: "HTTP",
            addr: c.http_listen,
            source,
        })?;
    let bound = Bound {
        grpc: grpc_listener.local_addr().unwrap_or(c.grpc_listen),
        http: http_listener.local_addr().unwrap_or(c.http_listen),
    };
    let coordinator_id =
        c.id.clone()
            .unwrap_or_else(|| format!("{}-{hostname}", c.region));
    let identity = Identity::new(
        coordinator_id.clone(),
        advertised(&c.advertise_grpc, bound.grpc, tls.is_some(), &hostname),
        advertised(&c.advertise_http, bound.http, false, &hostname),
    );
    let mut elector = Elector::new(store.cas().clone(), identity.clone(), c.election)
        .map_err(StateError::from)?;
    let shared = Arc::new(Shared {
        control: Mutex::new(crate::leadership::placeholder(&config)),
        store,
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
        coordinator_id,
        region: c.region.clone(),
        drift: Default::default(),
        auth: AdminAuth::new(&c.auth, metrics.clone()),
        identities: crate::identity::Identities::new(c.tls.as_ref()),
        admission: Admission::new(
            c.limits.heartbeat_queue,
            c.heartbeat_interval,
            metrics.clone(),
        ),
        limits: c.limits.clone(),
        leadership: Leadership::new(identity),
        config: config.clone(),
        events: RecentEvents::new(),
        started: std::time::SystemTime::now(),
        state_health: Default::default(),
        writes: Writes::default(),
    });
    if shared.auth.is_open() {
        tracing::warn!("no admin token ([coordinator.auth].token): admin calls and /api/* are open to anyone who reaches the ports");
    }
    tracing::info!(grpc = %bound.grpc, http = %bound.http, id = %shared.coordinator_id, advertise_grpc = %shared.leadership.identity().grpc, advertise_http = %shared.leadership.identity().http, "coordinator listening");
    // Leader or standby before anyone is told we are ready.
    let active = crate::leadership::first_round(&shared, &mut elector, &shutdown).await?;

    let grpc_task = tokio::spawn(grpc::serve(
        grpc_listener,
        shared.clone(),
        tls,
        shutdown.clone(),
    ));
    let http_task = tokio::spawn(http::serve(http_listener, shared.clone(), shutdown.clone()));
    let tick_task = tokio::spawn(tick_loop(shared.clone(), timing, shutdown.clone()));
    let election_stop = CancellationToken::new();
    let election_task = tokio::spawn(crate::leadership::run(
        shared.clone(),
        elector,
        active,
        election_stop.clone(),
        shutdown.clone(),
    ));
    shared.ready.store(true, Ordering::SeqCst);

    let done = async move {
        let (g, h, t) = tokio::join!(grpc_task, http_task, tick_task);
        // The servers have drained; only now stop renewing the lease.
        election_stop.cancel();
        let e = election_task.await;
        let joined =
            |what: &'static str, r: Result<Result<(), String>, tokio::task::JoinError>| match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(CoordinatorError::Serve { what, message }),
                Err(e) => Err(CoordinatorError::Serve {
                    what,
                    message: e.to_string(),
                }),
            };
        // Hand over first, whatever else failed: the last state, then the released lease
        // (standbys see it at their next read).
        let written = match e {
            Ok(mut elector) if shared.leadership.is_leading(Instant::now()) => {
                let point = {
                    let mut control = shared.control.lock().await;
                    control.mark_dirty();
                    shared.stage(&mut control)
                };
                let written = shared.persist_through(point).await;
                elector.release().await;
                written
            }
            Ok(mut elector) => {
                elector.abandon();
                Ok(())
            }
            Err(e) => {
                return Err(CoordinatorError::Serve {
                    what: "election",
                    message: e.to_string(),
                })
            }
        };
        joined("gRPC", g)?;
        joined("HTTP", h)?;
        joined("tick", t.map(|()| Ok(())))?;
        written?;
        tracing::info!("coordinator stopped");
        Ok(())
    };
    Ok((bound, done))
}

async fn tick_loop(shared: Arc<Shared>, timing: Timing, shutdown: CancellationToken) {
    let period = (timing.heartbeat_interval / 4)
        .clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {
                let point = {
                    let mut control = shared.control.lock().await;
                    let now = Instant::now();
                    if !shared.leadership.is_leading(now) {
                        continue;
                    }
                    control.tick(now);
                    shared.stage(&mut control)
                };
                // A failed write is logged and retried on the next tick.
                let _ = shared.persist_through(point).await;
            }
        }
    }
}

/// Refuses plaintext gRPC on a non-loopback address unless the network is declared trusted,
/// and says loudly what is not authenticated whenever client certificates are not required.
fn plaintext_check(c: &CoordinatorConfig) -> Result<(), CoordinatorError> {
    match &c.tls {
        None if !c.grpc_listen.ip().is_loopback() && !c.trusted_network => {
            Err(CoordinatorError::Plaintext {
                addr: c.grpc_listen,
            })
        }
        None => {
            tracing::warn!(
                grpc = %c.grpc_listen,
                trusted_network = c.trusted_network,
                "gRPC WITHOUT TLS: anyone who reaches this port can join, heartbeat or leave as any worker id and receives task specs with Kafka and object-store credentials in plaintext; set [coordinator.tls] with client_ca_file"
            );
            Ok(())
        }
        Some(t) if t.client_ca_file.is_none() => {
            tracing::warn!(
                "gRPC over TLS WITHOUT client certificates: worker ids are not authenticated (any client can act as any worker); set coordinator.tls.client_ca_file"
            );
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// The machine's host name, for ids and status; "unknown" when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Converts a worker view into the gRPC heartbeat response.
pub fn heartbeat_response(view: WorkerView) -> lockstep_proto::HeartbeatResponse {
    lockstep_proto::HeartbeatResponse {
        generation: view.generation,
        assigned: view.assigned,
        revoked: view.revoked,
        draining: view.draining,
    }
}
