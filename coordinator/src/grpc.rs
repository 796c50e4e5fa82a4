//! gRPC services (tonic): WorkerService for workers, AdminService for operators and the CLI,
//! PeerService for the other regions' coordinators ([`crate::peers`]). Thin: each call
//! validates its input, runs one [`Shared::call`] (or reads a view), and maps errors to gRPC
//! status codes. No state lives here.
//!
//! Hardening: worker calls pass [`crate::admission`] before the control lock; admin and peer
//! calls need the bearer token ([`crate::auth`]) and, with mutual TLS, an operator's
//! certificate ([`crate::identity`]); messages above `limits.max_message_bytes` are
//! refused while decoding; each request has `limits.request_timeout`; with `[coordinator.tls]`
//! the port speaks only TLS ([`crate::tls`]); connections are capped and time out, and a
//! malformed request is refused with INVALID_ARGUMENT ([`crate::conn`], `lockstep_proto::codec`).
//!
//! On a standby every call is refused before it is decoded, with UNAVAILABLE and the
//! leader's address ([`crate::leadership::StandbyGuard`]).

use crate::auth::Access;
use crate::conn::{Limiter, Listener};
use crate::control::ControlError;
use crate::control::WorkerView;
use crate::shared::{CallError, Shared};
use crate::state::StateError;
use crate::tls::TlsFiles;
use lockstep_proto as pb;
use pb::admin_service_server::{AdminService, AdminServiceServer};
use pb::peer_service_server::{PeerService, PeerServiceServer};
use pb::worker_service_server::{WorkerService, WorkerServiceServer};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

/// HTTP/2 streams one connection may have open at once: a worker needs one or two.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;

pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<TlsFiles>>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let limits = shared.limits.clone();
    let guard = crate::leadership::StandbyGuard(shared.clone());
    let workers = InterceptedService::new(
        WorkerServiceServer::new(Workers(shared.clone()))
            .max_decoding_message_size(limits.max_message_bytes),
        guard.clone(),
    );
    let admin = InterceptedService::new(
        AdminServiceServer::new(Admin(shared.clone()))
            .max_decoding_message_size(limits.max_message_bytes),
        guard.clone(),
    );
    let peers = InterceptedService::new(
        PeerServiceServer::new(Peers(shared.clone()))
            .max_decoding_message_size(limits.max_message_bytes),
        guard,
    );
    // Quiet workers' rate buckets are dropped now and then.
    let housekeeping = {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => shared.admission.housekeeping(),
                }
            }
        })
    };
    // Connections are bounded like the HTTP port's (crate::conn): a cap, a first-byte deadline
    // and an idle deadline. The server pings a silent client well within the idle timeout, so
    // a live worker always reads in time; calls in flight mark their connection busy.
    let limiter = Limiter::new(Listener::Grpc, &limits, shared.metrics.clone());
    let router = tonic::transport::Server::builder()
        .timeout(limits.request_timeout)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(crate::conn::keepalive_interval(limits.idle_timeout)))
        .http2_keepalive_timeout(Some(limits.request_timeout))
        .layer(crate::conn::TrackRequests(limiter.clone()))
        .add_service(workers)
        .add_service(admin)
        .add_service(peers);
    let result = match tls {
        None => {
            router
                .serve_with_incoming_shutdown(
                    crate::conn::incoming(listener, limiter),
                    shutdown.clone().cancelled_owned(),
                )
                .await
        }
        Some(files) => {
            let incoming = crate::tls::incoming(
                listener,
                files,
                limits.request_timeout,
                limiter,
                shared.metrics.clone(),
                shutdown.clone(),
            );
            router
                .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
                .await
        }
    };
    housekeeping.abort();
    result.map_err(|e| e.to_string())
}

fn to_status(shared: &Shared, e: CallError) -> Status {
    match e {
        CallError::NotLeader(leader) => {
            crate::leadership::not_leader(&shared.coordinator_id, leader.as_ref())
        }
        CallError::State(e @ (StateError::Fenced { .. } | StateError::NotLeading)) => {
            crate::leadership::not_leader(
                &shared.coordinator_id,
                shared.leadership.serving().err().flatten().as_ref(),
            )
            .tap_message(&e)
        }
        CallError::State(e) => {
            Status::unavailable(format!("coordinator could not persist state: {e}"))
        }
        CallError::Control(e) => {
            let msg = e.to_string();
            match e {
                ControlError::UnknownWorker(_) | ControlError::UnknownFlow(_) => {
                    Status::not_found(msg)
                }
                ControlError::StaleGeneration { .. } | ControlError::FutureGeneration { .. } => {
                    Status::failed_precondition(msg)
                }
                ControlError::EmptyWorkerId => Status::invalid_argument(msg),
                ControlError::TooManyWorkers { .. } => Status::resource_exhausted(msg),
            }
        }
    }
}

/// Times a call from its arrival to its answer (observed when dropped, on every path out,
/// refusals included).
fn timer(shared: &Shared, method: &str) -> prometheus::HistogramTimer {
    shared
        .metrics
        .grpc_request_seconds
        .with_label_values(&[method])
        .start_timer()
}

/// Counts the call by method and code, and converts the error.
fn finish<T>(
    shared: &Shared,
    method: &str,
    r: Result<T, CallError>,
) -> Result<Response<T>, Status> {
    let r = r.map(Response::new).map_err(|e| to_status(shared, e));
    let code = match &r {
        Ok(_) => "OK".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    shared
        .metrics
        .grpc_requests
        .with_label_values(&[method, &code])
        .inc();
    r
}

/// Admits a worker call (see [`crate::admission`]), counting a refusal like any other reply.
fn admit(
    shared: &Shared,
    method: &str,
    worker_id: &str,
) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
    shared
        .admission
        .admit(worker_id)
        .inspect_err(|s| count_refusal(shared, method, s))
}

/// Checks the admin token (see [`crate::auth`]) and that the client certificate is not a
/// worker's ([`crate::identity`]), counting a refusal like any other reply.
fn authorize<T>(
    shared: &Shared,
    method: &str,
    req: &Request<T>,
    access: Access,
) -> Result<(), Status> {
    let certs = req.peer_certs();
    let identity = shared
        .identities
        .check_operator(certs.as_deref().map(Vec::as_slice))
        .map_err(|e| {
            tracing::warn!(method, peer = ?req.remote_addr(), error = %e, "admin call refused: the client certificate is a worker's");
            shared
                .metrics
                .auth_failures
                .with_label_values(&["grpc", "worker_certificate"])
                .inc();
            Status::permission_denied(e.to_string())
        });
    identity
        .and_then(|()| shared.auth.grpc(req.metadata(), access, method))
        .inspect_err(|s| count_refusal(shared, method, s))
}

fn count_refusal(shared: &Shared, method: &str, s: &Status) {
    shared
        .metrics
        .grpc_requests
        .with_label_values(&[method, &format!("{:?}", s.code())])
        .inc();
}

/// What a worker call is checked for before it is admitted: the id's shape (INVALID_ARGUMENT:
/// a hostile id never reaches the rate limiter's map, the state or a log line) and that the
/// client certificate may act as that worker (PERMISSION_DENIED, logged). Counted in
/// `lockstep_coordinator_worker_calls_rejected_total` (reason invalid / identity).
fn check_worker_call<T>(
    shared: &Shared,
    method: &str,
    req: &Request<T>,
    worker_id: &str,
) -> Result<(), Status> {
    let reject = |reason: &str, status: Status| {
        shared
            .metrics
            .worker_calls_rejected
            .with_label_values(&[reason])
            .inc();
        count_refusal(shared, method, &status);
        status
    };
    lockstep_config::names::worker_id(worker_id)
        .map_err(|e| reject("invalid", Status::invalid_argument(e.to_string())))?;
    let certs = req.peer_certs();
    shared
        .identities
        .check_worker(certs.as_deref().map(Vec::as_slice), worker_id)
        .map_err(|e| {
            tracing::warn!(method, worker = %worker_id, peer = ?req.remote_addr(), error = %e, "worker call refused: the id does not match the client certificate");
            reject("identity", Status::permission_denied(e.to_string()))
        })
}

/// A Join's self-description: host name, version and capabilities, bounded and printable;
/// and its region, which must be this coordinator's (empty: this one's).
fn check_join(shared: &Shared, r: &pb::JoinRequest) -> Result<(), Status> {
    use lockstep_config::names;
    if !r.region.is_empty() && r.region != shared.region {
        shared
            .metrics
            .worker_calls_rejected
            .with_label_values(&["region"])
            .inc();
        let theirs = shared
            .config
            .region(&r.region)
            .filter(|g| !g.coordinators.is_empty())
            .map(|g| format!(" ({})", g.coordinators.join(", ")))
            .unwrap_or_default();
        let status = Status::failed_precondition(format!(
            "{}: worker {} is in region {}, this coordinator runs region {}: point the worker at region {}'s coordinators{theirs}",
            lockstep_proto::WRONG_REGION,
            names::printable(&r.worker_id),
            names::printable(&r.region),
            shared.region,
            names::printable(&r.region),
        ));
        tracing::warn!(worker = %names::printable(&r.worker_id), worker_region = %names::printable(&r.region), region = %shared.region, "join refused: the worker belongs to another region");
        count_refusal(shared, "Join", &status);
        return Err(status);
    }
    names::hostname(&r.hostname)
        .and_then(|()| names::version(&r.version))
        .and_then(|()| names::capabilities(&r.capabilities))
        .map_err(|e| {
            shared
                .metrics
                .worker_calls_rejected
                .with_label_values(&["invalid"])
                .inc();
            let status = Status::invalid_argument(e.to_string());
            count_refusal(shared, "Join", &status);
            status
        })
}

struct Workers(Arc<Shared>);

#[tonic::async_trait]
impl WorkerService for Workers {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let _timer = timer(&self.0, "Join");
        let s = &self.0;
        s.admission
            .admit_join(req.remote_addr().map(|a| a.ip()))
            .inspect_err(|st| count_refusal(s, "Join", st))?;
        check_worker_call(s, "Join", &req, &req.get_ref().worker_id)?;
        check_join(s, req.get_ref())?;
        let r = req.into_inner();
        let _admitted = admit(s, "Join", &r.worker_id)?;
        let result = s
            .call(|c, now| {
                let timing = c.timing();
                let view = c.join(&r.worker_id, r.capabilities, r.capacity, r.hostname, now)?;
                tracing::info!(worker = %r.worker_id, generation = view.generation, tasks = view.assigned.len(), "worker joined");
                Ok(pb::JoinResponse {
                    generation: view.generation,
                    lease_ttl_ms: timing.lease_ttl.as_millis() as u64,
                    heartbeat_interval_ms: timing.heartbeat_interval.as_millis() as u64,
                    lease_safety_margin_ms: timing.lease_safety_margin.as_millis() as u64,
                    handover_margin_ms: timing.handover_margin.as_millis() as u64,
                    assigned: view.assigned,
                    coordinator_id: s.coordinator_id.clone(),
                })
            })
            .await;
        finish(s, "Join", result)
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let _timer = timer(&self.0, "Heartbeat");
        check_worker_call(&self.0, "Heartbeat", &req, &req.get_ref().worker_id)?;
        let r = req.into_inner();
        let _admitted = admit(&self.0, "Heartbeat", &r.worker_id)?;
        let result = self
            .0
            .call(|c, now| {
                c.heartbeat(&r.worker_id, r.generation, r.tasks, now)
                    .map(heartbeat_response)
            })
            .await;
        if let Err(e) = &result {
            tracing::debug!(worker = %r.worker_id, error = %e, "heartbeat refused");
        }
        finish(&self.0, "Heartbeat", result)
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let _timer = timer(&self.0, "Release");
        check_worker_call(&self.0, "Release", &req, &req.get_ref().worker_id)?;
        let r = req.into_inner();
        let _admitted = admit(&self.0, "Release", &r.worker_id)?;
        let result = self
            .0
            .call(|c, now| {
                let generation = c.release(&r.worker_id, r.generation, &r.task_ids, now)?;
                tracing::info!(worker = %r.worker_id, tasks = ?r.task_ids, "tasks released");
                Ok(pb::ReleaseResponse { generation })
            })
            .await;
        finish(&self.0, "Release", result)
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        let _timer = timer(&self.0, "Leave");
        check_worker_call(&self.0, "Leave", &req, &req.get_ref().worker_id)?;
        let r = req.into_inner();
        let _admitted = admit(&self.0, "Leave", &r.worker_id)?;
        let result = self
            .0
            .call(|c, now| {
                c.leave(&r.worker_id, r.generation, now)?;
                tracing::info!(worker = %r.worker_id, "worker left");
                Ok(pb::LeaveResponse {})
            })
            .await;
        finish(&self.0, "Leave", result)
    }
}

struct Admin(Arc<Shared>);

impl Admin {
    /// PauseFlow and ResumeFlow: one state change, persisted before the reply.
    async fn set_paused(
        &self,
        req: Request<pb::FlowRequest>,
        paused: bool,
    ) -> Result<Response<pb::FlowResponse>, Status> {
        let rpc = if paused { "PauseFlow" } else { "ResumeFlow" };
        let _timer = timer(&self.0, rpc);
        authorize(&self.0, rpc, &req, Access::Write)?;
        let flow = req.into_inner().flow;
        let result = self
            .0
            .call(|c, _| {
                c.pause_flow(&flow, paused)
                    .map(|generation| pb::FlowResponse { generation })
            })
            .await;
        tracing::info!(flow = %flow, ok = result.is_ok(), rpc, "flow pause state");
        finish(&self.0, rpc, result)
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let _timer = timer(&self.0, "Status");
        authorize(&self.0, "Status", &req, Access::Read)?;
        let status = self.0.view_status().await;
        finish(&self.0, "Status", Ok(status))
    }

    async fn pause_flow(
        &self,
        req: Request<pb::FlowRequest>,
    ) -> Result<Response<pb::FlowResponse>, Status> {
        self.set_paused(req, true).await
    }

    async fn resume_flow(
        &self,
        req: Request<pb::FlowRequest>,
    ) -> Result<Response<pb::FlowResponse>, Status> {
        self.set_paused(req, false).await
    }

    async fn drain_worker(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let _timer = timer(&self.0, "DrainWorker");
        authorize(&self.0, "DrainWorker", &req, Access::Write)?;
        let worker = req.into_inner().worker_id;
        let result = self
            .0
            .call(|c, _| {
                c.drain(&worker)
                    .map(|(generation, tasks_moving)| pb::DrainResponse {
                        generation,
                        tasks_moving,
                    })
            })
            .await;
        tracing::info!(worker = %worker, ok = result.is_ok(), "drain worker");
        finish(&self.0, "DrainWorker", result)
    }

    async fn regions(
        &self,
        req: Request<pb::RegionsRequest>,
    ) -> Result<Response<pb::RegionsResponse>, Status> {
        let _timer = timer(&self.0, "Regions");
        authorize(&self.0, "Regions", &req, Access::Read)?;
        let regions = self.0.view_regions().await;
        finish(&self.0, "Regions", Ok(regions))
    }
}

/// PeerService: another region's coordinator asks for this region's figures. The same rules
/// as an admin read (token, operator certificate); a standby refuses it naming the leader,
/// whom the asking coordinator then asks.
struct Peers(Arc<Shared>);

#[tonic::async_trait]
impl PeerService for Peers {
    async fn region_status(
        &self,
        req: Request<pb::RegionStatusRequest>,
    ) -> Result<Response<pb::RegionStatusResponse>, Status> {
        let _timer = timer(&self.0, "RegionStatus");
        authorize(&self.0, "RegionStatus", &req, Access::Read)?;
        tracing::debug!(
            from_region = %lockstep_config::names::printable(&req.get_ref().from_region),
            peer = ?req.remote_addr(),
            "region status asked"
        );
        let status = self.0.view_region_status().await;
        finish(&self.0, "RegionStatus", Ok(status))
    }
}

/// Appends the cause to a refusal's message, keeping its code and metadata.
trait TapMessage {
    fn tap_message(self, cause: &dyn std::fmt::Display) -> Status;
}

impl TapMessage for Status {
    fn tap_message(self, cause: &dyn std::fmt::Display) -> Status {
        let mut s = Status::new(self.code(), format!("{} ({cause})", self.message()));
        *s.metadata_mut() = self.metadata().clone();
        s
    }
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
