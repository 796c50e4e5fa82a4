//! Every metric a worker exports, defined once; call sites use these handles. Names follow
//! `lockstep_<subsystem>_<name>_<unit>`, counters end in `_total`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct WorkerMetrics {
    pub registry: Registry,
    pub tasks_running: IntGauge,
    pub task_failures: IntCounter,
    pub joins: IntCounter,
    pub heartbeats: IntCounterVec,
    pub lease_lost: IntCounter,
}

/// Names as exported, for the catalog test.
pub const NAMES: &[&str] = &[
    "lockstep_worker_tasks_running",
    "lockstep_worker_task_failures_total",
    "lockstep_worker_joins_total",
    "lockstep_worker_heartbeats_total",
    "lockstep_worker_lease_lost_total",
];

impl WorkerMetrics {
    pub fn new() -> Self {
        // Names and help texts are constants: creation cannot fail.
        let m = WorkerMetrics {
            registry: Registry::new(),
            tasks_running: IntGauge::new(NAMES[0], "Tasks this worker runs now.")
                .expect("valid metric"),
            task_failures: IntCounter::new(
                NAMES[1],
                "Task runs that ended in an error (each is retried with backoff).",
            )
            .expect("valid metric"),
            joins: IntCounter::new(NAMES[2], "Successful joins (including re-joins).")
                .expect("valid metric"),
            heartbeats: IntCounterVec::new(
                Opts::new(NAMES[3], "Heartbeats by result: ok, refused, error."),
                &["result"],
            )
            .expect("valid metric"),
            lease_lost: IntCounter::new(
                NAMES[4],
                "Times the lease ran out and every task was stopped.",
            )
            .expect("valid metric"),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.tasks_running.clone()),
            Box::new(m.task_failures.clone()),
            Box::new(m.joins.clone()),
            Box::new(m.heartbeats.clone()),
            Box::new(m.lease_lost.clone()),
        ];
        for c in collectors {
            if let Err(e) = m.registry.register(c) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        // Export the labelled series from the start, so dashboards see zeros, not gaps.
        for r in ["ok", "refused", "error"] {
            m.heartbeats.with_label_values(&[r]);
        }
        m
    }

    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encode error: {e}\n"))
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `/metrics` and `/healthz` for a worker until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: WorkerMetrics,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
