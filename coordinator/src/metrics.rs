//! Every metric the coordinator exports, defined once. Call sites use these handles and never
//! register their own. Names follow `lockstep_<subsystem>_<name>_<unit>`, counters end in
//! `_total`; the README's catalog lists them and a test checks that each one is exported.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub workers: IntGauge,
    pub tasks: IntGaugeVec,
    pub generation: IntGauge,
    pub joins: IntCounter,
    pub leaves: IntCounter,
    pub lease_expirations: IntCounter,
    pub heartbeats: IntCounterVec,
    pub rebalances: IntCounter,
    pub tasks_moved: IntCounter,
    pub assignment_seconds: Histogram,
    pub state_writes: IntCounterVec,
    pub state_write_seconds: Histogram,
    pub grpc_requests: IntCounterVec,
    pub drift_verdict: IntGaugeVec,
    pub drift_rows_difference: IntGaugeVec,
    pub drift_records_behind: IntGaugeVec,
    pub drift_freshness_seconds: GaugeVec,
    pub drift_poll_seconds: Histogram,
    pub druid_request_seconds: HistogramVec,
    pub druid_errors: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub worker_calls_rejected: IntCounterVec,
    pub tls_handshake_failures: IntCounter,
    pub tls_reloads: IntCounterVec,
    pub leader: IntGauge,
    pub election_epoch: IntGauge,
    pub election_transitions: IntCounterVec,
    pub lease_writes: IntCounterVec,
    pub redirects: IntCounterVec,
}

/// Names as exported, for the catalog test.
pub const NAMES: &[&str] = &[
    "lockstep_coordinator_workers",
    "lockstep_coordinator_tasks",
    "lockstep_coordinator_generation",
    "lockstep_coordinator_joins_total",
    "lockstep_coordinator_leaves_total",
    "lockstep_coordinator_lease_expirations_total",
    "lockstep_coordinator_heartbeats_total",
    "lockstep_coordinator_rebalances_total",
    "lockstep_coordinator_tasks_moved_total",
    "lockstep_coordinator_assignment_duration_seconds",
    "lockstep_coordinator_state_writes_total",
    "lockstep_coordinator_state_write_duration_seconds",
    "lockstep_coordinator_grpc_requests_total",
    "lockstep_drift_verdict",
    "lockstep_drift_rows_difference",
    "lockstep_drift_records_behind",
    "lockstep_drift_freshness_seconds",
    "lockstep_drift_poll_duration_seconds",
    "lockstep_druid_request_duration_seconds",
    "lockstep_druid_errors_total",
    "lockstep_coordinator_auth_failures_total",
    "lockstep_coordinator_worker_calls_rejected_total",
    "lockstep_coordinator_tls_handshake_failures_total",
    "lockstep_coordinator_tls_reloads_total",
    "lockstep_coordinator_leader",
    "lockstep_coordinator_election_epoch",
    "lockstep_coordinator_election_transitions_total",
    "lockstep_coordinator_election_lease_writes_total",
    "lockstep_coordinator_redirects_total",
];

impl Metrics {
    /// Metrics registered in a fresh registry (one per coordinator, so tests can run several).
    pub fn new() -> Self {
        let m = Self::new_unregistered();
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.workers.clone()),
            Box::new(m.tasks.clone()),
            Box::new(m.generation.clone()),
            Box::new(m.joins.clone()),
            Box::new(m.leaves.clone()),
            Box::new(m.lease_expirations.clone()),
            Box::new(m.heartbeats.clone()),
            Box::new(m.rebalances.clone()),
            Box::new(m.tasks_moved.clone()),
            Box::new(m.assignment_seconds.clone()),
            Box::new(m.state_writes.clone()),
            Box::new(m.state_write_seconds.clone()),
            Box::new(m.grpc_requests.clone()),
            Box::new(m.drift_verdict.clone()),
            Box::new(m.drift_rows_difference.clone()),
            Box::new(m.drift_records_behind.clone()),
            Box::new(m.drift_freshness_seconds.clone()),
            Box::new(m.drift_poll_seconds.clone()),
            Box::new(m.druid_request_seconds.clone()),
            Box::new(m.druid_errors.clone()),
            Box::new(m.auth_failures.clone()),
            Box::new(m.worker_calls_rejected.clone()),
            Box::new(m.tls_handshake_failures.clone()),
            Box::new(m.tls_reloads.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.election_epoch.clone()),
            Box::new(m.election_transitions.clone()),
            Box::new(m.lease_writes.clone()),
            Box::new(m.redirects.clone()),
        ];
        for c in collectors {
            // Names are constants and distinct, so registration cannot collide.
            if let Err(e) = m.registry.register(c) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        m.init_labels();
        m
    }

    /// The same handles with an empty registry, for unit tests of the state machine.
    pub fn new_unregistered() -> Self {
        // The options below are constants; `expect` documents that they are valid.
        let gauge = |n: &str, h: &str| IntGauge::new(n, h).expect("valid metric");
        let counter = |n: &str, h: &str| IntCounter::new(n, h).expect("valid metric");
        let counter_vec = |n: &str, h: &str, l: &[&str]| {
            IntCounterVec::new(Opts::new(n, h), l).expect("valid metric")
        };
        let hist = |n: &str, h: &str, b: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(n, h).buckets(b)).expect("valid metric")
        };
        let fast = prometheus::exponential_buckets(0.0001, 4.0, 10).expect("valid buckets");
        let slow = prometheus::exponential_buckets(0.005, 3.0, 10).expect("valid buckets");
        let gauge_vec = |n: &str, h: &str, l: &[&str]| {
            IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric")
        };
        Metrics {
            registry: Registry::new(),
            workers: gauge(NAMES[0], "Workers holding a live lease."),
            tasks: IntGaugeVec::new(
                Opts::new(
                    NAMES[1],
                    "Tasks by phase: assigned, revoking, unassigned, paused.",
                ),
                &["phase"],
            )
            .expect("valid metric"),
            generation: gauge(NAMES[2], "Current assignment generation."),
            joins: counter(NAMES[3], "Worker joins (including re-joins)."),
            leaves: counter(NAMES[4], "Clean worker leaves."),
            lease_expirations: counter(NAMES[5], "Worker leases that expired."),
            heartbeats: counter_vec(
                NAMES[6],
                "Heartbeats by result: ok or refused.",
                &["result"],
            ),
            rebalances: counter(NAMES[7], "Assignment computations."),
            tasks_moved: counter(NAMES[8], "Tasks whose desired worker changed."),
            assignment_seconds: hist(NAMES[9], "Time to compute one assignment.", fast.clone()),
            state_writes: counter_vec(
                NAMES[10],
                "State store writes by result: ok or error.",
                &["result"],
            ),
            state_write_seconds: hist(NAMES[11], "Time to persist coordinator state.", fast),
            grpc_requests: counter_vec(
                NAMES[12],
                "gRPC requests by method and status code.",
                &["method", "code"],
            ),
            drift_verdict: gauge_vec(
                NAMES[13],
                "1 for the datasource's current drift verdict (in_sync, lagging, diverged, unknown), 0 for the others.",
                &["datasource", "verdict"],
            ),
            drift_rows_difference: gauge_vec(
                NAMES[14],
                "Rows a site has minus the most any site has, over the settled window (0 or negative; absent when the site could not be read).",
                &["datasource", "site"],
            ),
            drift_records_behind: gauge_vec(
                NAMES[15],
                "Source records not yet ingested by the site's Druid, in source offsets (absent when unknown).",
                &["datasource", "site"],
            ),
            drift_freshness_seconds: GaugeVec::new(
                Opts::new(
                    NAMES[16],
                    "Age of the site's newest row (now - MAX(__time)) at the last poll.",
                ),
                &["datasource", "site"],
            )
            .expect("valid metric"),
            drift_poll_seconds: hist(
                NAMES[17],
                "Time to check drift of every datasource once.",
                slow.clone(),
            ),
            druid_request_seconds: HistogramVec::new(
                HistogramOpts::new(NAMES[18], "Druid API call latency by site and endpoint.")
                    .buckets(slow),
                &["site", "endpoint"],
            )
            .expect("valid metric"),
            druid_errors: counter_vec(
                NAMES[19],
                "Failed Druid API calls by site and kind (unreachable, timeout, unauthorized, druid, not_json, decode, setup).",
                &["site", "kind"],
            ),
            auth_failures: counter_vec(
                NAMES[20],
                "Admin calls refused by api (grpc, http) and reason (missing, wrong token).",
                &["api", "reason"],
            ),
            worker_calls_rejected: counter_vec(
                NAMES[21],
                "Worker calls refused with RESOURCE_EXHAUSTED by reason: rate (one worker calls too often) or queue (too many calls at once).",
                &["reason"],
            ),
            tls_handshake_failures: counter(
                NAMES[22],
                "gRPC connections dropped in the TLS handshake (bad or missing client certificate, garbage, timeout).",
            ),
            tls_reloads: counter_vec(
                NAMES[23],
                "Reloads of the TLS certificate, key and client CA files by result: ok or error.",
                &["result"],
            ),
            leader: gauge(
                NAMES[24],
                "1 while this coordinator is the active one of its region (leader), 0 as a standby.",
            ),
            election_epoch: gauge(
                NAMES[25],
                "Epoch of the leader lease as this coordinator last saw it (+1 at every change of leader).",
            ),
            election_transitions: counter_vec(
                NAMES[26],
                "Times this coordinator became leader or standby, by role.",
                &["role"],
            ),
            lease_writes: counter_vec(
                NAMES[27],
                "Writes of the leader lease by op (acquire, renew, release) and result (ok, conflict, error).",
                &["op", "result"],
            ),
            redirects: counter_vec(
                NAMES[28],
                "Calls a standby answered by naming the leader, by api: grpc (UNAVAILABLE + lockstep-leader) or http (307).",
                &["api"],
            ),
        }
    }

    /// Zero label combinations that are known up front, so that every series exists from
    /// the first scrape (rate() and alerts need no special case for "never happened").
    fn init_labels(&self) {
        for role in ["leader", "standby"] {
            self.election_transitions.with_label_values(&[role]);
        }
        for op in ["acquire", "renew", "release"] {
            for result in ["ok", "conflict", "error"] {
                self.lease_writes.with_label_values(&[op, result]);
            }
        }
        for api in ["grpc", "http"] {
            self.redirects.with_label_values(&[api]);
        }
        for result in ["ok", "error", "fenced"] {
            self.state_writes.with_label_values(&[result]);
        }
    }

    /// On stepping down: the control-plane and drift gauges describe what the leader sees,
    /// and a standby sees nothing; they go to zero (or away) rather than freeze.
    pub fn clear_leader_gauges(&self) {
        self.leader.set(0);
        self.workers.set(0);
        self.generation.set(0);
        for phase in ["assigned", "revoking", "unassigned", "paused"] {
            self.tasks.with_label_values(&[phase]).set(0);
        }
        self.drift_verdict.reset();
        self.drift_rows_difference.reset();
        self.drift_records_behind.reset();
        self.drift_freshness_seconds.reset();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encode error: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
