//! The coordinator's HTTP side (axum): `/healthz` (the process runs), `/readyz` (state is
//! loaded and gRPC is serving), `/metrics` (Prometheus text), `/api/v1/status` (JSON),
//! `/api/v1/drift` (the drift poller's latest report; 503 until the first check ends),
//! `/api/v1/errors` (recent errors, newest first), `/api/v1/regions` (every region: this one
//! and what its peers last said, [`crate::peers`]) and the status page `/` ([`crate::page`]).
//! Everything but the probes and `/metrics` is guarded by the admin token
//! ([`crate::auth::http_guard`]). On a standby, everything but the probes and `/metrics`
//! answers 307 to the leader ([`crate::leadership::standby_redirect`]).
//!
//! [`serve`] runs hyper's HTTP/1 server by hand rather than `axum::serve`, which has neither a
//! header-read timeout nor a connection cap: idle and half-sent (slowloris) connections stayed
//! open until the process ran out of descriptors (issue 22). Connections are bounded by
//! [`crate::conn`].

use crate::conn::{Limiter, Listener, Reason};
use crate::shared::Shared;
use crate::views::{RegionsView, StatusView};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
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
        .route("/api/v1/regions", get(regions))
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

/// `/api/v1/regions`: every region, this one first (from its own control state), then the
/// others by name as the peer poller last saw them. Never waits for a peer.
async fn regions(State(shared): State<Arc<Shared>>) -> Json<RegionsView> {
    Json(shared.view_regions().await.into())
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
    // One look at the control state for both: the regions table's own row agrees with the rest.
    let status = shared.view_status().await;
    let own = crate::peers::figures(&status, std::time::SystemTime::now());
    let regions: RegionsView = crate::peers::view(own, &shared.config, &shared.peers).into();
    let status: StatusView = status.into();
    let drift = shared.drift.read().await.clone();
    let events = shared.events.snapshot();
    let data = crate::page::PageData {
        status: &status,
        regions: &regions,
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
