//! The worker runtime: joins a coordinator, heartbeats, and starts and stops tasks as its
//! assignment changes. It knows tasks only through [`TaskFactory`] and [`Task`].
//!
//! Safety rules it enforces, whatever the tasks do:
//! - A task may write only while the lease holds: the lease deadline is the send time of the
//!   last acknowledged heartbeat plus TTL minus the safety margin. When it passes, every task
//!   is stopped, before the coordinator could hand them to anyone else.
//! - A revoked task is stopped first and released after: the coordinator hands it on only
//!   once it is released (or the lease has expired).
//! - Refused as unknown or stale (fenced), the worker stops everything and joins again.
//! - On shutdown every task stops cleanly, then the worker leaves, so its tasks move at once.
//!
//! Finding the coordinator ([`lockstep_proto::leader`]): the worker calls the configured address (or
//! each of a comma-separated list in turn). A standby coordinator refuses with UNAVAILABLE and
//! names the active one in the `lockstep-leader` metadata; every call follows it at once, with
//! the session unchanged (every coordinator of a region shares the state, so the new leader
//! knows the session). When the followed address stops answering, the worker goes back to the
//! configured ones.

use crate::metrics::WorkerMetrics;
use crate::task::{LeaseGuard, Progress, TaskContext, TaskError, TaskFactory};
use backon::BackoffBuilder;
use lockstep_proto as pb;
use lockstep_proto::leader::{call_following_leader, Route};
use pb::worker_service_client::WorkerServiceClient;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Client(#[from] lockstep_proto::tls::ClientError),
    /// The coordinator runs another region: no retry can succeed.
    #[error("coordinator {coordinator} refused the join: {message}")]
    WrongRegion {
        coordinator: String,
        message: String,
    },
}

/// How a worker identifies itself and where it connects.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// e.g. `http://127.0.0.1:7400`, or several separated by commas (the coordinators of a
    /// region, tried in turn).
    pub coordinator: String,
    pub worker_id: String,
    /// The worker's region (None: the region of the coordinator it joins).
    pub region: Option<String>,
    /// Most tasks at once, 0 = no limit.
    pub capacity: u32,
    pub hostname: String,
    /// How long a stopping task may take before it is aborted.
    pub stop_timeout: Duration,
    /// Task kinds to advertise; empty = every kind this build can run. A kind advertised
    /// without a factory runs as a task that fails with a clear "not available" status.
    pub capabilities: Vec<String>,
    /// TLS to the coordinator (an `https://` address); files are read again at each reconnect.
    pub tls: lockstep_proto::tls::ClientTls,
}

struct Running {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
    progress: Progress,
}

pub struct Worker {
    opts: WorkerOptions,
    factories: HashMap<&'static str, Arc<dyn TaskFactory>>,
    metrics: WorkerMetrics,
}

/// The client for the coordinator address in use (it connects lazily).
struct Client {
    /// The address it was last built for (or tried to be: a failed rebuild keeps the old
    /// client, and is tried again only when the route moves again).
    addr: String,
    inner: WorkerServiceClient<Channel>,
}

/// Lease timing as the coordinator announced it at join.
#[derive(Clone, Copy)]
struct Lease {
    ttl: Duration,
    heartbeat: Duration,
    safety: Duration,
    handover: Duration,
}

impl Worker {
    pub fn new(
        opts: WorkerOptions,
        factories: Vec<Arc<dyn TaskFactory>>,
        metrics: WorkerMetrics,
    ) -> Self {
        metrics.set_worker(&opts.worker_id);
        Worker {
            opts,
            factories: factories.into_iter().map(|f| (f.kind(), f)).collect(),
            metrics,
        }
    }

    /// Moves the lease deadline: for the tasks' lease guards and for the lease gauge.
    fn renew(&self, lease_tx: &watch::Sender<Instant>, deadline: Instant) {
        let _ = lease_tx.send(deadline);
        self.metrics.set_lease_deadline(Some(deadline));
    }

    /// Kinds advertised to the coordinator: the options' list, or every kind this build has.
    fn capabilities(&self) -> Vec<String> {
        let mut c: Vec<String> = if self.opts.capabilities.is_empty() {
            self.factories.keys().map(|k| k.to_string()).collect()
        } else {
            self.opts.capabilities.clone()
        };
        c.sort();
        c.dedup();
        c
    }

    /// A lazily connecting client for `addr`, TLS files read now.
    fn connect(&self, addr: &str) -> Result<Client, WorkerError> {
        let endpoint = self.opts.tls.endpoint(addr, Duration::from_secs(10))?;
        Ok(Client {
            addr: addr.to_string(),
            inner: WorkerServiceClient::new(endpoint.connect_lazy()),
        })
    }

    /// Rebuilds the client for `addr` (the route moved, or to reread the TLS files); a failure
    /// keeps the old client.
    fn reconnect(&self, addr: &str, client: &mut Client) {
        match self.connect(addr) {
            Ok(c) => *client = c,
            Err(e) => {
                client.addr = addr.to_string();
                tracing::error!(worker = %self.opts.worker_id, coordinator = %addr, error = %e, "cannot rebuild the coordinator connection")
            }
        }
    }

    /// The client to call `addr` with: the one in use, rebuilt first when the route moved.
    fn client_for(&self, addr: &str, client: &mut Client) -> WorkerServiceClient<Channel> {
        if client.addr != addr {
            self.reconnect(addr, client);
        }
        client.inner.clone()
    }

    /// A standby named the active coordinator: the route follows it.
    fn followed(&self, leader: &str) {
        tracing::info!(worker = %self.opts.worker_id, coordinator = %leader, "a standby named the active coordinator: following it");
        self.metrics.coordinator_redirects.inc();
    }

    /// After a call that got no answer: the next configured address (or the same one again).
    fn fail_over(&self, route: &mut Route, client: &mut Client) {
        if route.advance() {
            tracing::info!(worker = %self.opts.worker_id, coordinator = %route.current(), "trying the next coordinator address");
            self.reconnect(route.current(), client);
        }
    }

    fn join_request(&self) -> pb::JoinRequest {
        pb::JoinRequest {
            worker_id: self.opts.worker_id.clone(),
            capabilities: self.capabilities(),
            capacity: self.opts.capacity,
            version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: self.opts.hostname.clone(),
            region: self.opts.region.clone().unwrap_or_default(),
        }
    }

    /// Runs until `shutdown` fires, then stops every task and leaves.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let mut route = Route::new(&self.opts.coordinator)?;
        let mut client = self.connect(route.current())?;
        let (lease_tx, lease_rx) = watch::channel(Instant::now());
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut stopping: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut session: Option<(u64, Lease)> = None;
        let mut fatal: Option<WorkerError> = None;

        'session: loop {
            // Join, retrying with backoff until the coordinator answers.
            let mut delays = backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .without_max_times()
                .build();
            let (mut generation, lease) = loop {
                if shutdown.is_cancelled() {
                    break 'session;
                }
                let mut sent = Instant::now();
                let joined = call_following_leader(
                    &mut route,
                    |addr| {
                        sent = Instant::now();
                        let mut c = self.client_for(addr, &mut client);
                        let req = self.join_request();
                        async move { c.join(req).await }
                    },
                    |_, leader| self.followed(leader),
                )
                .await;
                match joined {
                    Ok(resp) => {
                        let r = resp.into_inner();
                        let lease = Lease {
                            ttl: Duration::from_millis(r.lease_ttl_ms),
                            heartbeat: Duration::from_millis(r.heartbeat_interval_ms.max(10)),
                            safety: Duration::from_millis(r.lease_safety_margin_ms),
                            handover: Duration::from_millis(r.handover_margin_ms),
                        };
                        self.renew(&lease_tx, sent + lease.ttl.saturating_sub(lease.safety));
                        tracing::info!(worker = %self.opts.worker_id, generation = r.generation, coordinator = %r.coordinator_id, tasks = r.assigned.len(), "joined");
                        self.metrics.joins.inc();
                        let stopped = self
                            .reconcile(
                                &mut running,
                                &mut stopping,
                                &r.assigned,
                                &[],
                                &LeaseGuard::new(lease_rx.clone(), lease.safety + lease.handover),
                            )
                            .await;
                        session = Some((r.generation, lease));
                        if !stopped.is_empty() {
                            self.release(&mut route, &mut client, r.generation, stopped)
                                .await;
                        }
                        break (r.generation, lease);
                    }
                    Err(status) if lockstep_proto::is_wrong_region(&status) => {
                        tracing::error!(worker = %self.opts.worker_id, coordinator = %route.current(), error = %status.message(), "join refused: this coordinator runs another region");
                        // Stop (every task stopped and released as on shutdown): no retry
                        // can succeed, and no task of another region may run here.
                        fatal = Some(WorkerError::WrongRegion {
                            coordinator: route.current().to_string(),
                            message: status.message().to_string(),
                        });
                        break 'session;
                    }
                    Err(status) => {
                        let delay = delays.next().unwrap_or(Duration::from_secs(10));
                        tracing::warn!(worker = %self.opts.worker_id, coordinator = %route.current(), code = ?status.code(), error = %status.message(), retry_in = ?delay, "join failed");
                        // A new connection (the next address, if there are several), with
                        // the TLS files read again (they may have been rotated); a file that
                        // no longer loads keeps the old one.
                        route.advance();
                        self.reconnect(route.current(), &mut client);
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'session,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            };

            // Heartbeat until refused or shut down.
            loop {
                let deadline = *lease_rx.borrow();
                tokio::select! {
                    _ = shutdown.cancelled() => break 'session,
                    _ = tokio::time::sleep(lease.heartbeat) => {}
                    _ = tokio::time::sleep_until(deadline.into()), if !running.is_empty() => {}
                }
                if Instant::now() >= *lease_rx.borrow() && !running.is_empty() {
                    tracing::error!(worker = %self.opts.worker_id, tasks = running.len(), "lease ran out without a heartbeat answer: stopping every task");
                    self.metrics.lease_lost.inc();
                    self.stop_tasks(&mut running, None).await;
                }
                let mut sent = Instant::now();
                let within = lease.heartbeat.max(Duration::from_secs(1));
                let answer = call_following_leader(
                    &mut route,
                    |addr| {
                        sent = Instant::now();
                        let mut c = self.client_for(addr, &mut client);
                        let req = pb::HeartbeatRequest {
                            worker_id: self.opts.worker_id.clone(),
                            generation,
                            tasks: running.values().map(|r| r.progress.snapshot()).collect(),
                        };
                        // A timeout is no refusal (nothing to follow): `Ok(None)`.
                        async move {
                            match tokio::time::timeout(within, c.heartbeat(req)).await {
                                Ok(answer) => answer.map(Some),
                                Err(_) => Ok(None),
                            }
                        }
                    },
                    |_, leader| {
                        self.metrics.heartbeats.with_label_values(&["error"]).inc();
                        self.followed(leader);
                    },
                )
                .await;
                match answer {
                    Ok(Some(resp)) => {
                        let r = resp.into_inner();
                        self.metrics.heartbeats.with_label_values(&["ok"]).inc();
                        generation = r.generation;
                        self.renew(&lease_tx, sent + lease.ttl.saturating_sub(lease.safety));
                        let stopped = self
                            .reconcile(
                                &mut running,
                                &mut stopping,
                                &r.assigned,
                                &r.revoked,
                                &LeaseGuard::new(lease_rx.clone(), lease.safety + lease.handover),
                            )
                            .await;
                        if !stopped.is_empty() {
                            self.release(&mut route, &mut client, generation, stopped)
                                .await;
                        }
                    }
                    Err(status)
                        if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) =>
                    {
                        self.metrics
                            .heartbeats
                            .with_label_values(&["refused"])
                            .inc();
                        tracing::warn!(worker = %self.opts.worker_id, error = %status.message(), "heartbeat refused: stopping every task and joining again");
                        self.stop_tasks(&mut running, None).await;
                        self.renew(&lease_tx, Instant::now());
                        continue 'session;
                    }
                    Err(status) => {
                        self.metrics.heartbeats.with_label_values(&["error"]).inc();
                        tracing::warn!(worker = %self.opts.worker_id, coordinator = %route.current(), code = ?status.code(), error = %status.message(), "heartbeat failed");
                        if status.code() == Code::Unavailable {
                            self.fail_over(&mut route, &mut client);
                        }
                    }
                    Ok(None) => {
                        self.metrics.heartbeats.with_label_values(&["error"]).inc();
                        tracing::warn!(worker = %self.opts.worker_id, coordinator = %route.current(), "heartbeat timed out");
                        self.fail_over(&mut route, &mut client);
                    }
                }
            }
        }

        // Shutdown: stop everything cleanly, then leave so the tasks move without a lease wait.
        tracing::info!(worker = %self.opts.worker_id, tasks = running.len(), "shutting down: stopping tasks");
        self.stop_tasks(&mut running, None).await;
        for (id, handle) in stopping {
            if tokio::time::timeout(self.opts.stop_timeout, handle)
                .await
                .is_err()
            {
                tracing::error!(worker = %self.opts.worker_id, task = %id, "task did not stop in time");
            }
        }
        self.metrics.set_lease_deadline(None);
        if let Some((generation, _)) = session {
            let req = pb::LeaveRequest {
                worker_id: self.opts.worker_id.clone(),
                generation,
            };
            // A refused or failed leave only means the tasks move after lease expiry instead.
            let result = call_following_leader(
                &mut route,
                |addr| {
                    let mut c = self.client_for(addr, &mut client);
                    let req = req.clone();
                    // A timeout is no refusal (nothing to follow): `Ok(None)`.
                    async move {
                        match tokio::time::timeout(Duration::from_secs(3), c.leave(req)).await {
                            Ok(answer) => answer.map(Some),
                            Err(_) => Ok(None),
                        }
                    }
                },
                |_, leader| self.followed(leader),
            )
            .await;
            match result {
                Ok(Some(_)) => {
                    tracing::info!(worker = %self.opts.worker_id, "left the coordinator")
                }
                Err(s) => {
                    tracing::warn!(worker = %self.opts.worker_id, error = %s.message(), "leave refused")
                }
                Ok(None) => tracing::warn!(worker = %self.opts.worker_id, "leave timed out"),
            }
        }
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Starts what is assigned and not running; stops what is running and not assigned.
    /// Returns the task ids to release: the ones stopped, plus revoked ones not running.
    async fn reconcile(
        &self,
        running: &mut HashMap<String, Running>,
        stopping: &mut HashMap<String, JoinHandle<()>>,
        assigned: &[pb::TaskSpec],
        revoked: &[String],
        lease: &LeaseGuard,
    ) -> Vec<String> {
        let wanted: BTreeSet<&str> = assigned.iter().map(|t| t.task_id.as_str()).collect();
        let to_stop: BTreeSet<String> = running
            .keys()
            .filter(|id| !wanted.contains(id.as_str()))
            .cloned()
            .collect();
        let mut release: BTreeSet<String> = revoked
            .iter()
            .filter(|id| !running.contains_key(*id) && !stopping.contains_key(*id))
            .cloned()
            .collect();
        // Revoked tasks stop in the background, so heartbeats (and the lease) go on while a
        // task winds down; each is released only once it has really finished.
        if !to_stop.is_empty() {
            tracing::info!(worker = %self.opts.worker_id, tasks = ?to_stop, "stopping revoked tasks");
            for id in to_stop {
                if let Some(r) = running.remove(&id) {
                    r.progress.set_state(pb::TaskState::Stopping, "");
                    r.cancel.cancel();
                    stopping.insert(id, r.handle);
                }
            }
        }
        let finished: Vec<String> = stopping
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for id in finished {
            stopping.remove(&id);
            tracing::info!(worker = %self.opts.worker_id, task = %id, "task stopped");
            release.insert(id);
        }
        for spec in assigned {
            if running.contains_key(&spec.task_id) || stopping.contains_key(&spec.task_id) {
                continue;
            }
            let progress = Progress::new(&spec.task_id);
            let cancel = CancellationToken::new();
            let ctx = TaskContext {
                spec: Arc::new(spec.clone()),
                shutdown: cancel.clone(),
                lease: lease.clone(),
                progress: progress.clone(),
            };
            let factory = self.factories.get(spec.kind.as_str()).cloned();
            let span = tracing::info_span!("task", task = %spec.task_id, flow = %spec.flow, site = %spec.site, kind = %spec.kind);
            let metrics = self.metrics.clone();
            let handle = tokio::spawn(supervise(factory, ctx, metrics).instrument(span));
            tracing::info!(worker = %self.opts.worker_id, task = %spec.task_id, "task started");
            running.insert(
                spec.task_id.clone(),
                Running {
                    cancel,
                    handle,
                    progress,
                },
            );
        }
        self.metrics.tasks_running.set(running.len() as i64);
        release.into_iter().collect()
    }

    /// Stops the given tasks (all when `only` is None) and waits for each to finish.
    async fn stop_tasks(
        &self,
        running: &mut HashMap<String, Running>,
        only: Option<&BTreeSet<String>>,
    ) {
        let ids: Vec<String> = running
            .keys()
            .filter(|id| only.is_none_or(|o| o.contains(*id)))
            .cloned()
            .collect();
        let mut stopping = Vec::new();
        for id in ids {
            if let Some(r) = running.remove(&id) {
                r.progress.set_state(pb::TaskState::Stopping, "");
                r.cancel.cancel();
                stopping.push((id, r.handle));
            }
        }
        for (id, mut handle) in stopping {
            match tokio::time::timeout(self.opts.stop_timeout, &mut handle).await {
                Ok(_) => tracing::info!(worker = %self.opts.worker_id, task = %id, "task stopped"),
                Err(_) => {
                    tracing::error!(worker = %self.opts.worker_id, task = %id, timeout = ?self.opts.stop_timeout, "task did not stop in time: aborted");
                    handle.abort();
                }
            }
        }
        self.metrics.tasks_running.set(running.len() as i64);
    }

    async fn release(
        &self,
        route: &mut Route,
        client: &mut Client,
        generation: u64,
        task_ids: Vec<String>,
    ) {
        let req = pb::ReleaseRequest {
            worker_id: self.opts.worker_id.clone(),
            generation,
            task_ids: task_ids.clone(),
        };
        // If the release is lost, the coordinator hands the tasks on after lease expiry
        // instead; the next heartbeat lists them as revoked again and we release once more.
        let result = call_following_leader(
            route,
            |addr| {
                let mut c = self.client_for(addr, client);
                let req = req.clone();
                async move { c.release(req).await }
            },
            |_, leader| self.followed(leader),
        )
        .await;
        match result {
            Ok(_) => tracing::info!(worker = %self.opts.worker_id, tasks = ?task_ids, "released"),
            Err(s) => {
                tracing::warn!(worker = %self.opts.worker_id, error = %s.message(), "release failed")
            }
        }
    }
}

/// Runs one task, restarting it with backoff after failures, until cancelled.
/// The longest wait before a failed task is started again.
const RESTART_DELAY_MAX: Duration = Duration::from_secs(60);

async fn supervise(
    factory: Option<Arc<dyn TaskFactory>>,
    ctx: TaskContext,
    metrics: WorkerMetrics,
) {
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(RESTART_DELAY_MAX)
        .without_max_times();
    let mut delays = backoff.build();
    let progress = ctx.progress.clone();
    loop {
        progress.set_state(pb::TaskState::Starting, "");
        let started = tokio::time::Instant::now();
        let result = match &factory {
            None => Err(TaskError::Unsupported(ctx.spec.kind.clone())),
            Some(f) => match f.create(&ctx.spec) {
                Ok(task) => {
                    progress.set_state(pb::TaskState::Running, "");
                    task.run(ctx.clone()).await
                }
                Err(e) => Err(e),
            },
        };
        if ctx.shutdown.is_cancelled() {
            progress.set_state(pb::TaskState::Stopped, "");
            return;
        }
        match result {
            Ok(()) => {
                tracing::info!("task finished");
                progress.set_state(pb::TaskState::Stopped, "finished");
                return;
            }
            Err(e) => {
                // A run that lasted past the longest delay was healthy: a failure after it
                // starts the backoff over instead of waiting the longest delay again.
                if started.elapsed() >= RESTART_DELAY_MAX {
                    delays = backoff.build();
                }
                let delay = delays.next().unwrap_or(RESTART_DELAY_MAX);
                // `retryable = false`: the failure will not heal by itself (a config error, no
                // resume point, an oversized record under `on_oversize = "fail"`); it is still
                // retried, since an operator may fix its cause meanwhile.
                tracing::error!(error = %e, retryable = e.is_retryable(), retry_in = ?delay, "task failed");
                metrics.task_failures.inc();
                progress.update(|p| {
                    p.state = pb::TaskState::Failed as i32;
                    p.message = e.to_string();
                    p.restarts += 1;
                });
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => {
                        progress.set_state(pb::TaskState::Stopped, "");
                        return;
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
