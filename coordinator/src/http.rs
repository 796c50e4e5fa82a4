//! The coordinator's HTTP side (axum): `/healthz` (the process runs), `/readyz` (state is
//! loaded and gRPC is serving), `/metrics` (Prometheus text), `/api/v1/status` (JSON),
//! `/api/v1/drift` (the drift poller's latest report; 503 until the first check ends),
//! `/api/v1/errors` (recent errors, newest first) and the status page `/` ([`crate::page`]).
//! Everything but the probes and `/metrics` is guarded by the admin token
//! ([`crate::auth::http_guard`]). On a standby, everything but the probes and `/metrics`
//! answers 307 to the leader ([`crate::leadership::standby_redirect`]).
//!
//! [`serve`] runs hyper's HTTP/1 server by hand rather than `axum::serve`, which has neither a
//! header-read timeout nor a connection cap: idle and half-sent (slowloris) connections stayed
//! open until the process ran out of descriptors (issue 22). Connections are bounded by
//! [`crate::conn`].

use crate::conn::{Limiter, Listener, Reason};
use crate::server::Shared;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lockstep_proto as pb;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub fn router(shared: Arc<Shared>) -> Router {
    let auth = shared.auth.clone();
    let standby = shared.clone();
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/drift", get(drift))
        .route("/api/v1/errors", get(errors))
        .with_state(shared)
        // Every route but the probes and /metrics, present and future, needs the admin token
        // (crate::auth).
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::http_guard,
        ))
        // Outermost: a standby redirects before anything else runs (crate::leadership).
        .layer(axum::middleware::from_fn_with_state(
            standby,
            crate::leadership::standby_redirect,
        ))
}

/// Serves [`router`] until `shutdown`: at most `limits.max_connections` connections (the least
/// recently used idle one makes room for a new one), request headers within
/// `limits.header_read_timeout` (of the connection's start or its previous answer, so also the
/// keep-alive idle limit), no silent connection past `limits.idle_timeout`. On shutdown, idle
/// connections close and requests in flight finish, for at most `limits.request_timeout`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let limits = shared.limits.clone();
    let limiter = Limiter::new(Listener::Http, &limits, shared.metrics.clone());
    let router = router(shared);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => break,
            conn = limiter.accept(&listener) => conn,
        };
        let peer = conn.peer();
        let requests = conn.requests();
        let router = router.clone();
        let service = hyper::service::service_fn(move |req| {
            let busy = requests.begin();
            let mut router = router.clone();
            async move {
                // A Router is always ready (its poll_ready returns Ready at once), so it is
                // called without polling readiness first, as axum::serve does.
                let response = match tower::Service::call(&mut router, req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| crate::conn::TrackedBody::new(body, Some(busy))),
                )
            }
        });
        let served =
            graceful.watch(http1.serve_connection(hyper_util::rt::TokioIo::new(conn), service));
        let limiter = limiter.clone();
        tokio::spawn(async move {
            if let Err(e) = served.await {
                if e.is_timeout() {
                    limiter.closed(Reason::HeaderTimeout, peer);
                } else {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.request_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = limiter.open(),
            "HTTP connections still busy request_timeout after shutdown began; dropping them"
        );
    }
    Ok(())
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::SeqCst) {
        crate::leadership::readiness(&shared).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

/// `/api/v1/status`: the same content as AdminService.Status, as JSON.
#[derive(Serialize)]
pub struct StatusView {
    pub coordinator_id: String,
    pub region: String,
    pub generation: u64,
    pub workers: Vec<WorkerView>,
    pub tasks: Vec<TaskView>,
    pub paused_flows: Vec<String>,
}

#[derive(Serialize)]
pub struct WorkerView {
    pub worker_id: String,
    pub hostname: String,
    pub capabilities: Vec<String>,
    pub capacity: u32,
    pub session_generation: u64,
    pub lease_remaining_ms: u64,
    pub draining: bool,
    pub tasks: Vec<String>,
}

#[derive(Serialize)]
pub struct TaskView {
    pub task_id: String,
    pub kind: String,
    pub flow: String,
    pub site: String,
    pub worker_id: Option<String>,
    pub phase: String,
    pub state: Option<String>,
    pub message: Option<String>,
    pub records: u64,
    pub bytes: u64,
    pub restarts: u32,
    /// Object sync figures (objects tasks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectsView>,
    /// How a former owner is fenced (Kafka tasks, as reported): "transactions" (by the broker)
    /// or "leases" (lease timing only: late writes are detected, not prevented).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fencing: Option<String>,
    /// Partitions whose target repeats source offsets already mirrored (a paused former
    /// owner's late writes), over every owner since the coordinator started.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<DuplicatesView>,
}

/// Duplicates at the target of one task partition.
#[derive(Serialize)]
pub struct DuplicatesView {
    pub topic: String,
    pub partition: i32,
    /// Duplicate records counted so far.
    pub records: u64,
    /// The latest ranges, oldest first (at most [`crate::control::MAX_DUPLICATE_RANGES`]).
    pub ranges: Vec<DuplicateRangeView>,
}

/// Target offsets `target_from..=target_to` repeat source offsets `source_from..=source_to`.
#[derive(Serialize)]
pub struct DuplicateRangeView {
    pub target_from: i64,
    pub target_to: i64,
    pub source_from: i64,
    pub source_to: i64,
    pub records: u64,
}

impl TaskView {
    /// The task's fencing mode(s) as its partitions report them, and its duplicates.
    fn kafka_figures(p: &pb::TaskProgress) -> (Option<String>, Vec<DuplicatesView>) {
        let fencing = p.fencing_modes();
        let duplicates = p
            .partitions
            .iter()
            .filter(|q| q.duplicates > 0 || !q.duplicate_ranges.is_empty())
            .map(|q| DuplicatesView {
                topic: q.topic.clone(),
                partition: q.partition,
                records: q.duplicates,
                ranges: q
                    .duplicate_ranges
                    .iter()
                    .map(|r| DuplicateRangeView {
                        target_from: r.target_from,
                        target_to: r.target_to,
                        source_from: r.source_from,
                        source_to: r.source_to,
                        records: r.records,
                    })
                    .collect(),
            })
            .collect();
        (fencing, duplicates)
    }
}

/// An objects task's progress, as its heartbeats report it.
#[derive(Serialize)]
pub struct ObjectsView {
    pub objects_copied: u64,
    pub bytes_copied: u64,
    pub objects_pending: u64,
    pub bytes_pending: u64,
    pub oldest_pending_age_ms: u64,
    pub objects_skipped: u64,
    pub objects_adopted: u64,
    pub objects_deleted: u64,
    pub failures: u64,
    pub verify_mismatches: u64,
    pub cycles: u64,
}

impl From<&pb::ObjectProgress> for ObjectsView {
    fn from(o: &pb::ObjectProgress) -> Self {
        ObjectsView {
            objects_copied: o.objects_copied,
            bytes_copied: o.bytes_copied,
            objects_pending: o.objects_pending,
            bytes_pending: o.bytes_pending,
            oldest_pending_age_ms: o.oldest_pending_age_ms,
            objects_skipped: o.objects_skipped,
            objects_adopted: o.objects_adopted,
            objects_deleted: o.objects_deleted,
            failures: o.failures,
            verify_mismatches: o.verify_mismatches,
            cycles: o.cycles,
        }
    }
}

impl From<pb::StatusResponse> for StatusView {
    fn from(s: pb::StatusResponse) -> Self {
        StatusView {
            coordinator_id: s.coordinator_id,
            region: s.region,
            generation: s.generation,
            workers: s
                .workers
                .into_iter()
                .map(|w| WorkerView {
                    worker_id: w.worker_id,
                    hostname: w.hostname,
                    capabilities: w.capabilities,
                    capacity: w.capacity,
                    session_generation: w.session_generation,
                    lease_remaining_ms: w.lease_remaining_ms,
                    draining: w.draining,
                    tasks: w.tasks,
                })
                .collect(),
            tasks: s
                .tasks
                .into_iter()
                .map(|t| {
                    let p = t.progress.as_ref();
                    let (fencing, duplicates) = p.map(TaskView::kafka_figures).unwrap_or_default();
                    TaskView {
                        // UNSPECIFIED: no report from the current owner yet (the coordinator
                        // shows a former owner's duplicates only).
                        state: p
                            .filter(|p| p.state != pb::TaskState::Unspecified as i32)
                            .map(|p| {
                                pb::TaskState::try_from(p.state)
                                    .map(|s| {
                                        s.as_str_name()
                                            .trim_start_matches("TASK_STATE_")
                                            .to_lowercase()
                                    })
                                    .unwrap_or_else(|_| format!("unknown({})", p.state))
                            }),
                        message: p.map(|p| p.message.clone()).filter(|m| !m.is_empty()),
                        records: p.map(|p| p.records).unwrap_or(0),
                        bytes: p.map(|p| p.bytes).unwrap_or(0),
                        restarts: p.map(|p| p.restarts).unwrap_or(0),
                        objects: p.and_then(|p| p.objects.as_ref()).map(ObjectsView::from),
                        fencing,
                        duplicates,
                        worker_id: Some(t.worker_id).filter(|w| !w.is_empty()),
                        task_id: t.task_id,
                        kind: t.kind,
                        flow: t.flow,
                        site: t.site,
                        phase: t.phase,
                    }
                })
                .collect(),
            paused_flows: s.paused_flows,
        }
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<StatusView> {
    Json(shared.view_status().await.into())
}

async fn drift(State(shared): State<Arc<Shared>>) -> Response {
    match shared.drift.read().await.as_ref() {
        Some(report) => Json(report.clone()).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "no drift check has finished yet" })),
        )
            .into_response(),
    }
}

/// `/api/v1/errors`: recent errors and warnings, newest first.
async fn errors(State(shared): State<Arc<Shared>>) -> Json<Vec<crate::events::Event>> {
    Json(shared.events.snapshot())
}

#[derive(serde::Deserialize)]
struct PageQuery {
    /// `main`: only the `<main>` element's content (the page's own refresh).
    fragment: Option<String>,
}

/// `/`: the status page; `/?fragment=main` only its refreshed part.
async fn page(State(shared): State<Arc<Shared>>, Query(q): Query<PageQuery>) -> Response {
    let status: StatusView = shared.view_status().await.into();
    let drift = shared.drift.read().await.clone();
    let events = shared.events.snapshot();
    let data = crate::page::PageData {
        status: &status,
        drift: drift.as_ref(),
        events: &events,
        config: &shared.config,
        uptime: shared.started.elapsed().unwrap_or_default(),
    };
    let markup = match q.fragment.as_deref() {
        Some("main") => crate::page::main(&data),
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown fragment \"{other}\" (the page has one: main)\n"),
            )
                .into_response()
        }
        None => crate::page::render(&data),
    };
    ([(header::CACHE_CONTROL, "no-store")], markup).into_response()
}
