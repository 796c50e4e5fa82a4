//! Every metric a worker exports, defined once; call sites use these handles. Names follow
//! `lockstep_<subsystem>_<name>_<unit>`, counters end in `_total`.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct WorkerMetrics {
    pub registry: Registry,
    pub tasks_running: IntGauge,
    pub task_failures: IntCounter,
    pub joins: IntCounter,
    pub heartbeats: IntCounterVec,
    pub lease_lost: IntCounter,
    pub mirror_records: IntCounterVec,
    pub mirror_bytes: IntCounterVec,
    pub mirror_lag: IntGaugeVec,
    pub mirror_latency: HistogramVec,
    pub mirror_gaps: IntCounterVec,
    pub mirror_gap_records: IntCounterVec,
    pub mirror_skipped: IntCounterVec,
    pub mirror_dead_letters: IntCounterVec,
    pub mirror_errors: IntCounterVec,
    pub objects_copied: IntCounterVec,
    pub objects_copied_bytes: IntCounterVec,
    pub objects_skipped: IntCounterVec,
    pub objects_deleted: IntCounterVec,
    pub objects_pending: IntGaugeVec,
    pub objects_pending_bytes: IntGaugeVec,
    pub objects_oldest_pending_age: IntGaugeVec,
    pub objects_failures: IntCounterVec,
    pub objects_verify_mismatches: IntCounterVec,
    pub objects_cycles: IntCounterVec,
    pub coordinator_redirects: IntCounter,
}

/// Names as exported, for the catalog test.
pub const NAMES: &[&str] = &[
    "lockstep_worker_tasks_running",
    "lockstep_worker_task_failures_total",
    "lockstep_worker_joins_total",
    "lockstep_worker_heartbeats_total",
    "lockstep_worker_lease_lost_total",
    "lockstep_mirror_records_total",
    "lockstep_mirror_bytes_total",
    "lockstep_mirror_lag_records",
    "lockstep_mirror_replication_latency_seconds",
    "lockstep_mirror_gaps_total",
    "lockstep_mirror_gap_records_total",
    "lockstep_mirror_skipped_records_total",
    "lockstep_mirror_dead_letter_records_total",
    "lockstep_mirror_errors_total",
    "lockstep_objects_copied_objects_total",
    "lockstep_objects_copied_bytes_total",
    "lockstep_objects_skipped_objects_total",
    "lockstep_objects_deleted_objects_total",
    "lockstep_objects_pending_objects",
    "lockstep_objects_pending_bytes",
    "lockstep_objects_oldest_pending_age_seconds",
    "lockstep_objects_failures_total",
    "lockstep_objects_verify_mismatches_total",
    "lockstep_objects_cycles_total",
    "lockstep_worker_coordinator_redirects_total",
];

const FS: &[&str] = &["flow", "site"];
const FSS: &[&str] = &["flow", "site", "shard"];

fn gv(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn cv(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

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
            mirror_records: cv(NAMES[5], "Records mirrored (delivered to the target).", FS),
            mirror_bytes: cv(NAMES[6], "Key and value bytes mirrored.", FS),
            mirror_lag: IntGaugeVec::new(
                Opts::new(NAMES[7], "Source records not yet mirrored, per partition."),
                &["flow", "site", "topic", "partition"],
            )
            .expect("valid metric"),
            mirror_latency: HistogramVec::new(
                HistogramOpts::new(NAMES[8], "Delivery time minus the record's timestamp.")
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        300.0,
                    ]),
                FS,
            )
            .expect("valid metric"),
            mirror_gaps: cv(
                NAMES[9],
                "Gaps: source retention removed records before they were mirrored.",
                FS,
            ),
            mirror_gap_records: cv(NAMES[10], "Records lost to gaps.", FS),
            mirror_skipped: cv(
                NAMES[11],
                "Records not mirrored, by reason: loop, oversize.",
                &["flow", "site", "reason"],
            ),
            mirror_dead_letters: cv(NAMES[12], "Records sent to the dead-letter topic.", FS),
            mirror_errors: cv(
                NAMES[13],
                "Mirror errors by kind: consume, produce, delivery, oversize.",
                &["flow", "site", "kind"],
            ),
            objects_copied: cv(
                NAMES[14],
                "Objects copied to the site, by reason: new, changed, target_missing, target_changed.",
                &["flow", "site", "reason"],
            ),
            objects_copied_bytes: cv(NAMES[15], "Bytes of objects copied to the site.", FS),
            objects_skipped: cv(
                NAMES[16],
                "Objects found up to date (in the manifest) and not copied.",
                FS,
            ),
            objects_deleted: cv(
                NAMES[17],
                "Objects deleted at the site because they left the source (delete = true).",
                FS,
            ),
            objects_pending: gv(
                NAMES[18],
                "Objects known to need a copy or delete and not done yet, per shard.",
                FSS,
            ),
            objects_pending_bytes: gv(NAMES[19], "Bytes of the pending objects, per shard.", FSS),
            objects_oldest_pending_age: gv(
                NAMES[20],
                "Age (since its source modification time) of the oldest pending object, per shard.",
                FSS,
            ),
            objects_failures: cv(
                NAMES[21],
                "Object operations that failed after retries, by op: copy, verify, delete, list, manifest.",
                &["flow", "site", "op"],
            ),
            objects_verify_mismatches: cv(
                NAMES[22],
                "Target objects whose bytes differed from what was copied (re-copied).",
                FS,
            ),
            objects_cycles: cv(NAMES[23], "Completed sync cycles.", FS),
            coordinator_redirects: IntCounter::new(
                NAMES[24],
                "Times a standby coordinator named the active one and the worker followed it.",
            )
            .expect("valid metric"),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.tasks_running.clone()),
            Box::new(m.task_failures.clone()),
            Box::new(m.joins.clone()),
            Box::new(m.heartbeats.clone()),
            Box::new(m.lease_lost.clone()),
            Box::new(m.mirror_records.clone()),
            Box::new(m.mirror_bytes.clone()),
            Box::new(m.mirror_lag.clone()),
            Box::new(m.mirror_latency.clone()),
            Box::new(m.mirror_gaps.clone()),
            Box::new(m.mirror_gap_records.clone()),
            Box::new(m.mirror_skipped.clone()),
            Box::new(m.mirror_dead_letters.clone()),
            Box::new(m.mirror_errors.clone()),
            Box::new(m.objects_copied.clone()),
            Box::new(m.objects_copied_bytes.clone()),
            Box::new(m.objects_skipped.clone()),
            Box::new(m.objects_deleted.clone()),
            Box::new(m.objects_pending.clone()),
            Box::new(m.objects_pending_bytes.clone()),
            Box::new(m.objects_oldest_pending_age.clone()),
            Box::new(m.objects_failures.clone()),
            Box::new(m.objects_verify_mismatches.clone()),
            Box::new(m.objects_cycles.clone()),
            Box::new(m.coordinator_redirects.clone()),
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
