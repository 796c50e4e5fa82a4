//! Every metric a worker exports, defined once; call sites use these handles. Names follow
//! `lockstep_<subsystem>_<name>_<unit>`, counters end in `_total`; the README's catalog lists
//! them and `tests/observability.rs` checks that the README, [`NAMES`] and a running worker's
//! `/metrics` agree.
//!
//! A task creates its label sets at zero when it starts ([`WorkerMetrics::init_mirror`],
//! [`WorkerMetrics::init_objects`]), so a healthy worker exports every counter (an alert on
//! `increase(lockstep_mirror_gaps_total[..])` sees the first gap), and removes its per-task
//! gauges when it stops, so a task that moved to another worker leaves no stale lag or
//! backlog behind.

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Mirror error kinds, as `lockstep_mirror_errors_total{kind}` names them.
pub const MIRROR_ERROR_KINDS: &[&str] = &["consume", "produce", "delivery", "oversize"];
/// Why a record was not mirrored, as `lockstep_mirror_skipped_records_total{reason}` says.
pub const MIRROR_SKIP_REASONS: &[&str] = &["loop", "oversize"];
/// Why an object was copied, as `lockstep_objects_copied_objects_total{reason}` says.
pub const OBJECTS_COPY_REASONS: &[&str] = &["new", "changed", "target_missing", "target_changed"];
/// Object operations, as `lockstep_objects_failures_total{op}` names them.
pub const OBJECTS_OPS: &[&str] = &["copy", "verify", "delete", "list", "manifest"];

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
    pub mirror_duplicates: IntCounterVec,
    pub mirror_fencing: IntGaugeVec,
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
    pub lease_remaining: Gauge,
    pub info: IntGaugeVec,
    /// When the lease runs out (None: no lease); `lease_remaining` is computed from it at
    /// each scrape.
    lease_deadline: Arc<Mutex<Option<Instant>>>,
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
    "lockstep_worker_lease_remaining_seconds",
    "lockstep_worker_info",
    "lockstep_worker_coordinator_redirects_total",
    "lockstep_mirror_duplicate_records_total",
    "lockstep_mirror_fencing_info",
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
        Self::with_registry(Registry::new())
    }

    /// The metrics of a worker of `region`: every series carries `region="<region>"` (a
    /// constant label of its registry), as the coordinator's do. None (no `--region`): no
    /// region label.
    pub fn for_region(region: Option<&str>) -> Self {
        let Some(region) = region else {
            return Self::new();
        };
        let labels = std::collections::HashMap::from([("region".to_string(), region.to_string())]);
        match Registry::new_custom(None, Some(labels)) {
            Ok(registry) => Self::with_registry(registry),
            // Only an invalid label name fails, and "region" is valid.
            Err(e) => {
                tracing::error!(error = %e, "metrics without the region label");
                Self::new()
            }
        }
    }

    fn with_registry(registry: Registry) -> Self {
        // Names and help texts are constants: creation cannot fail.
        let m = WorkerMetrics {
            registry,
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
            mirror_duplicates: cv(
                NAMES[27],
                "Records found at the target that repeat a source offset already mirrored (a paused former owner's late writes), per partition.",
                &["flow", "site", "topic", "partition"],
            ),
            mirror_fencing: gv(
                NAMES[28],
                "1 for the fencing the (flow, site) tasks on this worker use: mode = transactions (the broker fences a former owner) or leases (late writes detected, not prevented).",
                &["flow", "site", "mode"],
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
            lease_remaining: Gauge::new(
                "lockstep_worker_lease_remaining_seconds",
                "Seconds until the worker's lease runs out (the worker stops writing then); 0 without a lease.",
            )
            .expect("valid metric"),
            info: gv(
                "lockstep_worker_info",
                "Always 1: the worker's id and version, to join with other series on `instance`.",
                &["worker_id", "version"],
            ),
            lease_deadline: Arc::new(Mutex::new(None)),
            coordinator_redirects: IntCounter::new(
                "lockstep_worker_coordinator_redirects_total",
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
            Box::new(m.mirror_duplicates.clone()),
            Box::new(m.mirror_fencing.clone()),
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
            Box::new(m.lease_remaining.clone()),
            Box::new(m.info.clone()),
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

    /// Names the worker in `lockstep_worker_info`.
    pub fn set_worker(&self, worker_id: &str) {
        self.info.reset();
        self.info
            .with_label_values(&[worker_id, env!("CARGO_PKG_VERSION")])
            .set(1);
    }

    /// Records when the lease runs out (None: the worker holds no lease).
    pub fn set_lease_deadline(&self, deadline: Option<Instant>) {
        *self
            .lease_deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = deadline;
    }

    /// Creates a Kafka mirror task's counters at zero: its (flow, site) records, bytes, gaps,
    /// dead letters, latency, and every error kind and skip reason.
    pub fn init_mirror(&self, flow: &str, site: &str) {
        let fs = [flow, site];
        for c in [
            &self.mirror_records,
            &self.mirror_bytes,
            &self.mirror_gaps,
            &self.mirror_gap_records,
            &self.mirror_dead_letters,
        ] {
            c.with_label_values(&fs);
        }
        self.mirror_latency.with_label_values(&fs);
        for kind in MIRROR_ERROR_KINDS {
            self.mirror_errors.with_label_values(&[flow, site, kind]);
        }
        for reason in MIRROR_SKIP_REASONS {
            self.mirror_skipped.with_label_values(&[flow, site, reason]);
        }
    }

    /// Creates a mirrored partition's duplicate counter at zero.
    pub fn init_partition(&self, flow: &str, site: &str, topic: &str, partition: i32) {
        self.mirror_duplicates
            .with_label_values(&[flow, site, topic, &partition.to_string()]);
    }

    /// Says which fencing the (flow, site) mirror uses: 1 for `mode`, 0 for the other.
    pub fn set_fencing(&self, flow: &str, site: &str, mode: &str) {
        for m in ["transactions", "leases"] {
            self.mirror_fencing
                .with_label_values(&[flow, site, m])
                .set(i64::from(m == mode));
        }
    }

    /// Removes a mirrored partition's lag gauge (its task stopped here; the next owner
    /// exports it).
    pub fn forget_partition(&self, flow: &str, site: &str, topic: &str, partition: i32) {
        let _ = self
            .mirror_lag
            .remove_label_values(&[flow, site, topic, &partition.to_string()]);
    }

    /// Creates an objects task's counters at zero: every copy reason and failed op of its
    /// (flow, site), bytes, skipped, deleted, verify mismatches and cycles. Its backlog gauges
    /// appear after its first cycle has listed the source: before that the backlog is unknown.
    pub fn init_objects(&self, flow: &str, site: &str) {
        let fs = [flow, site];
        for c in [
            &self.objects_copied_bytes,
            &self.objects_skipped,
            &self.objects_deleted,
            &self.objects_verify_mismatches,
            &self.objects_cycles,
        ] {
            c.with_label_values(&fs);
        }
        for reason in OBJECTS_COPY_REASONS {
            self.objects_copied.with_label_values(&[flow, site, reason]);
        }
        for op in OBJECTS_OPS {
            self.objects_failures.with_label_values(&[flow, site, op]);
        }
    }

    /// Removes a shard's backlog gauges (its task stopped here; the next owner exports them).
    pub fn forget_objects_shard(&self, flow: &str, site: &str, shard: u32) {
        let shard = shard.to_string();
        let l = [flow, site, shard.as_str()];
        for g in [
            &self.objects_pending,
            &self.objects_pending_bytes,
            &self.objects_oldest_pending_age,
        ] {
            let _ = g.remove_label_values(&l);
        }
    }

    pub fn render(&self) -> String {
        let deadline = *self
            .lease_deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.lease_remaining.set(
            deadline
                .map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64())
                .unwrap_or(0.0),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_name_is_registered_once() {
        let m = WorkerMetrics::new();
        let distinct: std::collections::BTreeSet<&str> = NAMES.iter().copied().collect();
        assert_eq!(distinct.len(), NAMES.len(), "a name is listed twice");
        for name in NAMES {
            // Registering a name again fails only if it is registered already.
            let probe = IntGauge::new(*name, "probe").expect("valid metric");
            assert!(
                m.registry.register(Box::new(probe)).is_err(),
                "{name} is in NAMES but not registered"
            );
        }
    }

    #[test]
    fn a_task_exports_its_counters_at_zero_and_forgets_its_gauges() {
        let m = WorkerMetrics::new();
        m.init_mirror("clicks", "site-b");
        m.init_objects("dumps", "site-b");
        let text = m.render();
        for line in [
            "lockstep_mirror_gaps_total{flow=\"clicks\",site=\"site-b\"} 0",
            "lockstep_mirror_errors_total{flow=\"clicks\",kind=\"delivery\",site=\"site-b\"} 0",
            "lockstep_mirror_skipped_records_total{flow=\"clicks\",reason=\"loop\",site=\"site-b\"} 0",
            "lockstep_mirror_replication_latency_seconds_count{flow=\"clicks\",site=\"site-b\"} 0",
            "lockstep_objects_failures_total{flow=\"dumps\",op=\"list\",site=\"site-b\"} 0",
            "lockstep_objects_copied_objects_total{flow=\"dumps\",reason=\"target_missing\",site=\"site-b\"} 0",
            "lockstep_objects_cycles_total{flow=\"dumps\",site=\"site-b\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // The backlog is unknown until a cycle has listed: no gauge yet.
        assert!(!text.contains("lockstep_objects_pending_objects{"));

        m.mirror_lag
            .with_label_values(&["clicks", "site-b", "clicks", "3"])
            .set(7);
        m.objects_pending
            .with_label_values(&["dumps", "site-b", "1"])
            .set(2);
        m.objects_oldest_pending_age
            .with_label_values(&["dumps", "site-b", "1"])
            .set(60);
        m.forget_partition("clicks", "site-b", "clicks", 3);
        m.forget_objects_shard("dumps", "site-b", 1);
        let text = m.render();
        assert!(!text.contains("lockstep_mirror_lag_records{"), "{text}");
        assert!(
            !text.contains("lockstep_objects_pending_objects{"),
            "{text}"
        );
        assert!(
            !text.contains("lockstep_objects_oldest_pending_age_seconds{"),
            "{text}"
        );
    }

    #[test]
    fn lease_remaining_counts_down_at_scrape_time() {
        let m = WorkerMetrics::new();
        m.set_worker("w1");
        assert!(m
            .render()
            .contains("lockstep_worker_lease_remaining_seconds 0\n"));
        m.set_lease_deadline(Some(Instant::now() + Duration::from_secs(30)));
        m.render();
        let left = m.lease_remaining.get();
        assert!(left > 0.0 && left <= 30.0, "{left}");
        m.set_lease_deadline(Some(Instant::now() - Duration::from_secs(1)));
        m.render();
        assert_eq!(m.lease_remaining.get(), 0.0);
        let text = m.render();
        assert!(text.contains("lockstep_worker_info{version=\""), "{text}");
        assert!(text.contains("worker_id=\"w1\"} 1"), "{text}");
    }
}
