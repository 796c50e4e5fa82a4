//! Runs the election ([`crate::election`]) for this process and switches it between leader
//! and standby.
//!
//! - **Promotion**: read the state as the new epoch's leader, rebuild the control plane from
//!   it exactly as a restarted coordinator does (workers count as seen now: their sessions
//!   stay valid and no task moves), write it once (the fence: from then on every write of a
//!   former leader is refused), renew the lease, and only then answer. The drift poller and
//!   the peer poller ([`crate::peers`]) run while leading.
//! - **Demotion** (lease lost, not renewed in time, or a state write fenced): stop answering
//!   at once, drop the control plane, stop the drift and peer pollers, zero the leader's
//!   gauges.
//! - **Refusal**: a takeover that finds the state unusable in a way only an operator can fix
//!   (lost, corrupt, implausible: [`StateError::needs_operator`]) releases the lease and
//!   refuses to lead: `/readyz` answers 503 with the reason, and the coordinator only re-reads
//!   the state (never the lease, so the epoch does not climb) until it is usable again.
//! - **Standby**: gRPC calls are refused with UNAVAILABLE and the leader's advertised address
//!   in the `lockstep-leader` metadata ([`not_leader`]); HTTP `/` and `/api/...` answer 307 to
//!   the leader's advertised HTTP address ([`standby_redirect`]); `/healthz`, `/readyz` and
//!   `/metrics` are served.

use crate::control::Control;
use crate::election::{Elector, LeaderInfo, Poll, Renewal, Role};
use crate::metrics::Metrics;
use crate::shared::{timing, Shared};
use crate::state::StateError;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What runs only while leading: the drift poller and the peer poller, each on its own task
/// (neither ever holds up a call of the coordinator's own).
pub struct Active {
    stop: CancellationToken,
    drift: JoinHandle<()>,
    peers: JoinHandle<()>,
}

impl Active {
    fn start(shared: &Arc<Shared>, shutdown: &CancellationToken) -> Active {
        let stop = shutdown.child_token();
        let events = shared.events.clone();
        let drift = tokio::spawn(lockstep_drift::poller::run(
            (*shared.config).clone(),
            shared.metrics.drift.clone(),
            shared.drift.clone(),
            move |report| events.record_drift(report),
            stop.clone(),
        ));
        let peers = tokio::spawn(crate::peers::run(
            shared.config.clone(),
            shared.peers.clone(),
            shared.metrics.clone(),
            shared.events.clone(),
            stop.clone(),
        ));
        Active { stop, drift, peers }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.drift.await;
        let _ = self.peers.await;
    }
}

/// The control plane a standby holds: no tasks, no workers, metrics nowhere. Never used to
/// answer (calls are refused before they reach it).
pub fn placeholder(shared_config: &lockstep_config::Config) -> Control {
    let c = &shared_config.coordinator;
    Control::new(
        Vec::new(),
        timing(c),
        c.max_workers,
        None,
        Instant::now(),
        Metrics::new_unregistered(),
    )
}

/// The first look at the lease, before the coordinator reports ready: a coordinator that
/// finds no leader leads before `start` returns. Errors (the store cannot be read) stop the
/// start, as an unreadable state store always did.
pub async fn first_round(
    shared: &Arc<Shared>,
    elector: &mut Elector,
    shutdown: &CancellationToken,
) -> Result<Option<Active>, StateError> {
    let poll = elector.poll().await;
    record(shared, elector);
    match poll.map_err(StateError::from)? {
        Poll::Acquired {
            epoch,
            valid_until,
            reason,
        } => match promote(shared, elector, epoch, valid_until, reason, shutdown).await {
            Ok(active) => Ok(active),
            Err(e) => {
                // Let a standby have it at once rather than after the TTL.
                elector.release().await;
                record(shared, elector);
                match e {
                    s if s.needs_operator() => {
                        refuse(shared, &s);
                        Ok(None)
                    }
                    e => Err(e),
                }
            }
        },
        Poll::Standby { leader } => {
            become_standby(shared, leader);
            Ok(None)
        }
    }
}

/// Runs until `stop`; hands back the elector so that the caller can write the last state and
/// release the lease. `stop` fires after the servers have drained, so the lease is renewed
/// while they finish their last calls; the drift poller stops with `shutdown`.
pub async fn run(
    shared: Arc<Shared>,
    mut elector: Elector,
    mut active: Option<Active>,
    stop: CancellationToken,
    shutdown: CancellationToken,
) -> Elector {
    let cfg = elector.config();
    let poll_every = (cfg.renew_interval / 2).max(Duration::from_millis(20));
    let mut last_error: Option<String> = None;
    loop {
        let leading = elector.holds();
        let refusing = !leading && shared.state_health.refusal().is_some();
        let wait = if leading || refusing {
            cfg.renew_interval
        } else {
            poll_every
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shared.leadership.lost.notified(), if leading => {
                // A handler's state write was fenced. (A stale wake-up while still validly
                // leading is ignored.)
                if !shared.leadership.is_leading(Instant::now()) {
                    demote(&shared, &mut elector, &mut active, None, "its state write was refused: a newer leader wrote the state").await;
                }
                continue;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        if elector.holds() {
            if !shared.leadership.is_leading(Instant::now()) {
                demote(
                    &shared,
                    &mut elector,
                    &mut active,
                    None,
                    "its lease ran out before it could renew it (paused, or the store did not answer)",
                )
                .await;
                continue;
            }
            let renewal = elector.renew().await;
            record(&shared, &mut elector);
            match renewal {
                Ok(Renewal::Held { valid_until }) => {
                    last_error = None;
                    if let Some(v) = valid_until {
                        shared.leadership.extend(v);
                    }
                }
                Ok(Renewal::Lost { leader }) => {
                    demote(
                        &shared,
                        &mut elector,
                        &mut active,
                        leader,
                        "another coordinator took the lease",
                    )
                    .await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader lease failed; leading on until the lease runs out");
                }
            }
        } else if refusing && refusal_stands(&shared).await {
            continue;
        } else {
            let poll = elector.poll().await;
            record(&shared, &mut elector);
            match poll {
                Ok(Poll::Acquired {
                    epoch,
                    valid_until,
                    reason,
                }) => {
                    last_error = None;
                    match promote(&shared, &mut elector, epoch, valid_until, reason, &shutdown)
                        .await
                    {
                        Ok(a) => active = a,
                        Err(e) if e.needs_operator() => {
                            elector.release().await;
                            record(&shared, &mut elector);
                            refuse(&shared, &e);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, epoch, "could not take over; releasing the lease");
                            elector.release().await;
                            record(&shared, &mut elector);
                            become_standby(&shared, None);
                        }
                    }
                }
                Ok(Poll::Standby { leader }) => {
                    last_error = None;
                    become_standby(&shared, leader);
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %text, "cannot read the leader lease; retrying");
                        last_error = Some(text);
                    }
                }
            }
        }
    }
    if let Some(a) = active.take() {
        a.stop().await;
    }
    elector
}

/// Takes over: state, control plane, fence, renewal, then answers. `Ok(None)` when the lease
/// was lost on the way (a faster standby).
async fn promote(
    shared: &Arc<Shared>,
    elector: &mut Elector,
    epoch: u64,
    valid_until: Instant,
    reason: &'static str,
    shutdown: &CancellationToken,
) -> Result<Option<Active>, StateError> {
    let me = elector.identity().id.clone();
    let c = &shared.config.coordinator;
    let mut attempts = 0;
    let mut control = shared.control.lock().await;
    loop {
        attempts += 1;
        let restored = shared.store.load_as(epoch, &me).await?;
        if restored.is_none() && epoch > 1 && attempts == 1 {
            // Not proof of a loss (module doc of `crate::state`): a leader that died between
            // taking the lease and its first write leaves a higher epoch and no state.
            tracing::warn!(
                epoch,
                store = %shared.store.cas().describe(),
                "no stored state and no marker, although earlier leaders held the lease: either they never wrote state (stopped before their first write) or the store predates the marker; starting afresh, every task held for lease_ttl + handover_margin"
            );
        }
        let summary = restored
            .as_ref()
            .map(|s| (s.generation, s.workers.len(), s.actual.len()));
        let mut fresh = Control::new(
            crate::tasks::derive(&shared.config),
            timing(c),
            c.max_workers,
            restored,
            Instant::now(),
            shared.metrics.clone(),
        );
        let early = fresh.early_events();
        fresh.set_events(shared.events.clone());
        // The first write of this epoch: the fence against every earlier leader.
        let snapshot = fresh
            .take_dirty_snapshot()
            .unwrap_or_else(|| fresh.snapshot());
        let started = Instant::now();
        let saved = shared.store.save(&snapshot).await;
        shared.record_state_write(started, &saved);
        match saved {
            Ok(()) => {
                *control = fresh;
                for e in early {
                    shared.events.record(e.level, e.source, e.message);
                }
                if shared.state_health.refusal().is_some() {
                    tracing::info!(
                        epoch,
                        "the state store is usable again: no longer refusing to lead"
                    );
                }
                shared.state_health.set_refusal(None);
                match summary {
                    Some((generation, workers, tasks)) => tracing::info!(
                        epoch,
                        generation,
                        workers,
                        tasks,
                        "restored coordinator state"
                    ),
                    None => {
                        tracing::info!(epoch, "no stored state: first start");
                        if epoch > 1 {
                            // Not this store's first leader: say on the status page why
                            // nothing runs for a while (the very first start only logs it).
                            let hold = humantime::format_duration(c.lease_ttl + c.handover_margin);
                            shared.events.record(
                                crate::events::Level::Warning,
                                "state",
                                format!("started without stored state at election epoch {epoch} (a state loss was accepted, or earlier leaders never wrote state): every task is held from every worker for {hold} (lease_ttl + handover_margin), so that none runs twice if a worker still holds it from before"),
                            );
                        }
                    }
                }
                break;
            }
            // A former leader wrote between our read and our write: read again.
            Err(StateError::Fenced { .. }) if attempts < 3 => continue,
            Err(e) => return Err(e),
        }
    }
    drop(control);
    // Loading may have taken a while: renew, so that the validity we serve under is fresh.
    let renewal = elector.renew().await;
    record(shared, elector);
    let valid_until = match renewal.map_err(StateError::from)? {
        Renewal::Held { valid_until: v } => v.unwrap_or(valid_until),
        Renewal::Lost { leader } => {
            shared.store.forget();
            *shared.control.lock().await = placeholder(&shared.config);
            shared.metrics.clear_leader_gauges();
            become_standby(shared, leader);
            return Ok(None);
        }
    };
    shared.leadership.set_leader(epoch, valid_until);
    shared.metrics.leader.set(1);
    shared.metrics.election_epoch.set(epoch as i64);
    shared
        .metrics
        .election_transitions
        .with_label_values(&["leader"])
        .inc();
    tracing::info!(
        epoch,
        reason,
        grpc = %elector.identity().grpc,
        http = %elector.identity().http,
        "leading: this coordinator is the active one"
    );
    Ok(Some(Active::start(shared, shutdown)))
}

async fn demote(
    shared: &Arc<Shared>,
    elector: &mut Elector,
    active: &mut Option<Active>,
    leader: Option<LeaderInfo>,
    why: &str,
) {
    // Stop answering first; everything else follows.
    shared.leadership.set_standby(leader.clone());
    elector.abandon();
    shared.store.forget();
    *shared.control.lock().await = placeholder(&shared.config);
    if let Some(a) = active.take() {
        a.stop().await;
    }
    *shared.drift.write().await = None;
    shared.metrics.clear_leader_gauges();
    shared.metrics.election_epoch.set(elector.epoch() as i64);
    shared
        .metrics
        .election_transitions
        .with_label_values(&["standby"])
        .inc();
    match &leader {
        Some(l) => {
            tracing::warn!(reason = why, leader = %l.id, grpc = %l.grpc, epoch = l.epoch, "stepped down: now a standby")
        }
        None => tracing::warn!(reason = why, "stepped down: now a standby"),
    }
}

/// Refuses to lead over state only an operator can repair (the lease is already released):
/// says why once in the log, on the status ring, in `/readyz` and in the transition metric.
fn refuse(shared: &Arc<Shared>, e: &StateError) {
    let reason = e.to_string();
    let before = shared.state_health.refusal();
    shared.state_health.set_refusal(Some(reason.clone()));
    if before.as_deref() != Some(reason.as_str()) {
        tracing::error!(error = %reason, kind = e.kind(), store = %shared.store.cas().describe(), "refusing to lead: the coordinator state needs an operator");
        shared.events.record(
            crate::events::Level::Error,
            "state",
            format!("refusing to lead: {reason}"),
        );
        shared
            .metrics
            .election_transitions
            .with_label_values(&["refused"])
            .inc();
    }
    become_standby(shared, None);
}

/// While refusing: re-reads the state (read-only, no lease taken). True while the refusal
/// stands; false once the state is usable again (restored, or the loss accepted), when the
/// election resumes.
async fn refusal_stands(shared: &Arc<Shared>) -> bool {
    match shared.store.usable().await {
        Ok(()) => {
            tracing::info!(store = %shared.store.cas().describe(), "the state store is usable again (restored, or the loss accepted): taking part in the election again");
            shared.state_health.set_refusal(None);
            false
        }
        Err(e) if e.needs_operator() => {
            if shared.state_health.refusal().as_deref() != Some(e.to_string().as_str()) {
                refuse(shared, &e);
            }
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the state store while refusing to lead; retrying");
            true
        }
    }
}

fn become_standby(shared: &Arc<Shared>, leader: Option<LeaderInfo>) {
    let before = (shared.leadership.role(), shared.leadership.leader());
    shared.leadership.set_standby(leader.clone());
    shared.metrics.leader.set(0);
    if let Some(l) = &leader {
        shared.metrics.election_epoch.set(l.epoch as i64);
    }
    if before.0 != Role::Standby {
        shared
            .metrics
            .election_transitions
            .with_label_values(&["standby"])
            .inc();
    }
    if before.0 != Role::Standby || before.1 != leader {
        match &leader {
            Some(l) => {
                tracing::info!(leader = %l.id, grpc = %l.grpc, http = %l.http, epoch = l.epoch, "standby: following the active coordinator")
            }
            None => tracing::info!("standby: no active coordinator known yet"),
        }
    }
}

/// Counts the elector's lease writes in the metrics.
fn record(shared: &Shared, elector: &mut Elector) {
    for (op, result) in elector.take_outcomes() {
        shared
            .metrics
            .lease_writes
            .with_label_values(&[op, result])
            .inc();
    }
}

/// The gRPC answer of a coordinator that does not lead: UNAVAILABLE, with the leader's
/// advertised address in the `lockstep-leader` metadata when it is known.
pub fn not_leader(me: &str, leader: Option<&LeaderInfo>) -> tonic::Status {
    match leader {
        Some(l) => {
            let mut status = tonic::Status::unavailable(format!(
                "coordinator {me} is a standby: the active coordinator is {} at {} (epoch {}); follow the {} metadata",
                l.id,
                l.grpc,
                l.epoch,
                lockstep_proto::LEADER_METADATA
            ));
            if let Ok(v) = l.grpc.parse() {
                status
                    .metadata_mut()
                    .insert(lockstep_proto::LEADER_METADATA, v);
            }
            status
        }
        None => tonic::Status::unavailable(format!(
            "coordinator {me} is not the active coordinator and none is known right now (an election is under way); retry shortly"
        )),
    }
}

/// Refuses every gRPC call on a coordinator that does not lead, before it is decoded.
#[derive(Clone)]
pub struct StandbyGuard(pub Arc<Shared>);

impl tonic::service::Interceptor for StandbyGuard {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match self.0.leadership.serving() {
            Ok(()) => Ok(req),
            Err(leader) => {
                self.0.metrics.redirects.with_label_values(&["grpc"]).inc();
                Err(not_leader(
                    &self.0.leadership.identity().id,
                    leader.as_ref(),
                ))
            }
        }
    }
}

/// axum middleware: on a coordinator that does not lead, everything but the probes and
/// `/metrics` answers 307 to the same path at the leader's advertised HTTP address (503 while
/// no leader is known).
pub async fn standby_redirect(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return next.run(req).await;
    }
    match shared.leadership.serving() {
        Ok(()) => next.run(req).await,
        Err(Some(leader)) => {
            shared.metrics.redirects.with_label_values(&["http"]).inc();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, format!("{}{path}", leader.http))],
                format!(
                    "standby: the active coordinator is {} at {}\n",
                    leader.id, leader.http
                ),
            )
                .into_response()
        }
        Err(None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "no active coordinator right now (an election is under way); retry shortly\n",
        )
            .into_response(),
    }
}

/// `/readyz`: 200 once the coordinator knows its role (leader, or standby that redirects:
/// a standby that never became ready would stall a Kubernetes rollout), 503 before; 503 too
/// while it refuses to lead over lost or unusable state, and while a leader's state writes
/// fail (every worker call fails then).
pub fn readiness(shared: &Shared) -> (StatusCode, String) {
    if let Some(reason) = shared.state_health.refusal() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("refusing to lead: {reason}\n"),
        );
    }
    match shared.leadership.role() {
        Role::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string()),
        Role::Leader => match shared.state_health.write_failure() {
            Some(kind) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("state writes failing: {kind}\n"),
            ),
            None => (StatusCode::OK, "ready: leader\n".to_string()),
        },
        Role::Standby => match shared.leadership.leader() {
            Some(l) => (
                StatusCode::OK,
                format!(
                    "ready: standby; the active coordinator is {} at {}\n",
                    l.id, l.grpc
                ),
            ),
            None => (
                StatusCode::OK,
                "ready: standby; no active coordinator known yet\n".to_string(),
            ),
        },
    }
}
