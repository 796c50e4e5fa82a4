//! Every metric the coordinator exports, defined once. Call sites use these handles and never
//! register their own. The control plane's are defined here; drift's (`lockstep_drift_*`,
//! `lockstep_druid_*`) are `lockstep-drift`'s [`DriftMetrics`], registered into the same
//! registry. Names follow `lockstep_<subsystem>_<name>_<unit>`, counters end in `_total`; the
//! README's catalog lists them and `tests/observability.rs` checks that the README, [`NAMES`]
//! and a running coordinator's `/metrics` agree.
//!
//! Label sets that can be known up front are created at zero ([`Metrics::new`] for the
//! fixed ones, the drift poller per site and datasource), so a healthy coordinator exports
//! every series and `rate()`/`increase()` see the first increment.

use lockstep_drift::DriftMetrics;
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
    /// Drift tracking's and the Druid client's, in [`Metrics::registry`] too.
    pub drift: DriftMetrics,
    pub auth_failures: IntCounterVec,
    pub worker_calls_rejected: IntCounterVec,
    pub tls_handshake_failures: IntCounter,
    pub tls_reloads: IntCounterVec,
    pub grpc_request_seconds: HistogramVec,
    pub flow_tasks: IntGaugeVec,
    pub leader: IntGauge,
    pub election_epoch: IntGauge,
    pub election_transitions: IntCounterVec,
    pub lease_writes: IntCounterVec,
    pub redirects: IntCounterVec,
    pub connections: IntGaugeVec,
    pub connections_limit: IntGaugeVec,
    pub connections_closed: IntCounterVec,
    /// The other regions, as this coordinator's peer poller sees them ([`crate::peers`]).
    pub peer_up: IntGaugeVec,
    pub peer_unreachable_seconds: GaugeVec,
    pub peer_request_seconds: HistogramVec,
}

/// Every gRPC method the coordinator serves, as it names them in metric labels.
pub const GRPC_METHODS: &[&str] = &[
    "Join",
    "Heartbeat",
    "Release",
    "Leave",
    "Status",
    "PauseFlow",
    "ResumeFlow",
    "DrainWorker",
    "Regions",
    "RegionStatus",
];

/// Task phases, as `lockstep_coordinator_tasks{phase}` names them.
pub const TASK_PHASES: &[&str] = &["assigned", "revoking", "unassigned", "paused"];

/// The control plane's names, as exported.
pub const CONTROL_NAMES: &[&str] = &[
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
    "lockstep_coordinator_auth_failures_total",
    "lockstep_coordinator_worker_calls_rejected_total",
    "lockstep_coordinator_tls_handshake_failures_total",
    "lockstep_coordinator_tls_reloads_total",
    "lockstep_coordinator_grpc_request_duration_seconds",
    "lockstep_coordinator_flow_tasks",
    "lockstep_coordinator_leader",
    "lockstep_coordinator_election_epoch",
    "lockstep_coordinator_election_transitions_total",
    "lockstep_coordinator_election_lease_writes_total",
    "lockstep_coordinator_redirects_total",
    "lockstep_coordinator_connections",
    "lockstep_coordinator_connections_limit",
    "lockstep_coordinator_connections_closed_total",
    "lockstep_coordinator_peer_up",
    "lockstep_coordinator_peer_unreachable_seconds",
    "lockstep_coordinator_peer_request_duration_seconds",
];

/// Every name the coordinator exports: the control plane's and drift's, for the catalog test.
pub const NAMES: &[&str] = &ALL_NAMES;

const ALL_NAMES: [&str; CONTROL_NAMES.len() + lockstep_drift::metrics::NAMES.len()] =
    concat(CONTROL_NAMES, lockstep_drift::metrics::NAMES);

/// `a` then `b`, as one array (a `const` slice cannot be joined otherwise).
const fn concat<const N: usize>(a: &[&'static str], b: &[&'static str]) -> [&'static str; N] {
    assert!(a.len() + b.len() == N, "N must be the sum of the lengths");
    let mut out = [""; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - a.len()];
        i += 1;
    }
    out
}

/// The listeners whose connections are bounded ([`crate::conn`]), as metric labels name them.
pub const LISTENERS: &[&str] = &["http", "grpc"];

/// The constant label every coordinator and worker series carries: the region it runs in.
pub const REGION_LABEL: &str = "region";

/// Why the coordinator closed a connection on its own ([`crate::conn::Reason`]).
pub const CLOSE_REASONS: &[&str] = &["evicted", "refused", "header_timeout", "idle"];

impl Metrics {
    /// Metrics registered in a fresh registry (one per coordinator, so tests can run several).
    pub fn new() -> Self {
        Self::registered(Registry::new())
    }

    /// Metrics of region `region`'s coordinator: every series it exports carries
    /// `region="<region>"` (a constant label of its registry), so dashboards and alerts can
    /// tell the regions apart and aggregate across them.
    pub fn for_region(region: &str) -> Self {
        let labels =
            std::collections::HashMap::from([(REGION_LABEL.to_string(), region.to_string())]);
        match Registry::new_custom(None, Some(labels)) {
            Ok(registry) => Self::registered(registry),
            // Only an invalid label name fails, and REGION_LABEL is a valid constant.
            Err(e) => {
                tracing::error!(error = %e, "metrics without the region label");
                Self::new()
            }
        }
    }

    fn registered(registry: Registry) -> Self {
        let mut m = Self::new_unregistered();
        m.registry = registry;
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
            Box::new(m.auth_failures.clone()),
            Box::new(m.worker_calls_rejected.clone()),
            Box::new(m.tls_handshake_failures.clone()),
            Box::new(m.tls_reloads.clone()),
            Box::new(m.grpc_request_seconds.clone()),
            Box::new(m.flow_tasks.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.election_epoch.clone()),
            Box::new(m.election_transitions.clone()),
            Box::new(m.lease_writes.clone()),
            Box::new(m.redirects.clone()),
            Box::new(m.connections.clone()),
            Box::new(m.connections_limit.clone()),
            Box::new(m.connections_closed.clone()),
            Box::new(m.peer_up.clone()),
            Box::new(m.peer_unreachable_seconds.clone()),
            Box::new(m.peer_request_seconds.clone()),
        ];
        for c in collectors {
            // Names are constants and distinct, so registration cannot collide.
            if let Err(e) = m.registry.register(c) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        if let Err(e) = m.drift.register(&m.registry) {
            tracing::error!(error = %e, "metric registration failed");
        }
        m.init_label_sets();
        m
    }

    /// Creates, at zero, the label sets known without any config: every gRPC method's
    /// latency and OK count, heartbeat, state write, auth, admission and TLS results.
    fn init_label_sets(&self) {
        for method in GRPC_METHODS {
            self.grpc_request_seconds.with_label_values(&[method]);
            self.grpc_requests.with_label_values(&[method, "OK"]);
        }
        for phase in TASK_PHASES {
            self.tasks.with_label_values(&[phase]);
        }
        for result in ["ok", "refused"] {
            self.heartbeats.with_label_values(&[result]);
        }
        for result in ["ok", "error", "fenced"] {
            self.state_writes.with_label_values(&[result]);
        }
        for result in ["ok", "error"] {
            self.tls_reloads.with_label_values(&[result]);
        }
        for role in ["leader", "standby", "refused"] {
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
        for api in ["grpc", "http"] {
            for reason in ["missing", "wrong"] {
                self.auth_failures.with_label_values(&[api, reason]);
            }
        }
        // A worker's certificate used for an admin call (crate::identity).
        self.auth_failures
            .with_label_values(&["grpc", "worker_certificate"]);
        // rate/queue: admission; identity: the id does not match the client certificate;
        // invalid: a malformed id, host name, version or capability; peer_rate: too many joins
        // from one address.
        for reason in [
            "rate",
            "queue",
            "identity",
            "invalid",
            "peer_rate",
            "region",
        ] {
            self.worker_calls_rejected.with_label_values(&[reason]);
        }
        for listener in LISTENERS {
            self.connections.with_label_values(&[listener]);
            for reason in CLOSE_REASONS {
                self.connections_closed
                    .with_label_values(&[listener, reason]);
            }
        }
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
        let gauge_vec = |n: &str, h: &str, l: &[&str]| {
            IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric")
        };
        Metrics {
            registry: Registry::new(),
            workers: gauge(CONTROL_NAMES[0], "Workers holding a live lease."),
            tasks: IntGaugeVec::new(
                Opts::new(
                    CONTROL_NAMES[1],
                    "Tasks by phase: assigned, revoking, unassigned, paused.",
                ),
                &["phase"],
            )
            .expect("valid metric"),
            generation: gauge(CONTROL_NAMES[2], "Current assignment generation."),
            joins: counter(CONTROL_NAMES[3], "Worker joins (including re-joins)."),
            leaves: counter(CONTROL_NAMES[4], "Clean worker leaves."),
            lease_expirations: counter(CONTROL_NAMES[5], "Worker leases that expired."),
            heartbeats: counter_vec(
                CONTROL_NAMES[6],
                "Heartbeats by result: ok or refused.",
                &["result"],
            ),
            rebalances: counter(CONTROL_NAMES[7], "Assignment computations."),
            tasks_moved: counter(CONTROL_NAMES[8], "Tasks whose desired worker changed."),
            assignment_seconds: hist(
                CONTROL_NAMES[9],
                "Time to compute one assignment.",
                fast.clone(),
            ),
            state_writes: counter_vec(
                CONTROL_NAMES[10],
                "State store writes by result: ok or error.",
                &["result"],
            ),
            state_write_seconds: hist(
                CONTROL_NAMES[11],
                "Time to persist coordinator state.",
                fast,
            ),
            grpc_requests: counter_vec(
                CONTROL_NAMES[12],
                "gRPC requests by method and status code.",
                &["method", "code"],
            ),
            drift: DriftMetrics::new(),
            auth_failures: counter_vec(
                CONTROL_NAMES[13],
                "Admin calls refused by api (grpc, http) and reason (missing, wrong token).",
                &["api", "reason"],
            ),
            worker_calls_rejected: counter_vec(
                CONTROL_NAMES[14],
                "Worker calls refused with RESOURCE_EXHAUSTED by reason: rate (one worker calls too often) or queue (too many calls at once).",
                &["reason"],
            ),
            tls_handshake_failures: counter(
                CONTROL_NAMES[15],
                "gRPC connections dropped in the TLS handshake (bad or missing client certificate, garbage, timeout).",
            ),
            tls_reloads: counter_vec(
                CONTROL_NAMES[16],
                "Reloads of the TLS certificate, key and client CA files by result: ok or error.",
                &["result"],
            ),
            grpc_request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "lockstep_coordinator_grpc_request_duration_seconds",
                    "gRPC request latency by method, from the call's arrival to its answer (refused calls included).",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 3.0, 12).expect("valid buckets")),
                &["method"],
            )
            .expect("valid metric"),
            flow_tasks: gauge_vec(
                "lockstep_coordinator_flow_tasks",
                "Tasks per flow, site and kind (kafka, objects) by phase: assigned, revoking, unassigned, paused.",
                &["flow", "site", "kind", "phase"],
            ),
            leader: gauge(
                "lockstep_coordinator_leader",
                "1 while this coordinator is the active one of its region (leader), 0 as a standby.",
            ),
            election_epoch: gauge(
                "lockstep_coordinator_election_epoch",
                "Epoch of the leader lease as this coordinator last saw it (+1 at every change of leader).",
            ),
            election_transitions: counter_vec(
                "lockstep_coordinator_election_transitions_total",
                "Times this coordinator became leader or standby, by role.",
                &["role"],
            ),
            lease_writes: counter_vec(
                "lockstep_coordinator_election_lease_writes_total",
                "Writes of the leader lease by op (acquire, renew, release) and result (ok, conflict, error).",
                &["op", "result"],
            ),
            redirects: counter_vec(
                "lockstep_coordinator_redirects_total",
                "Calls a standby answered by naming the leader, by api: grpc (UNAVAILABLE + lockstep-leader) or http (307).",
                &["api"],
            ),
            connections: gauge_vec(
                "lockstep_coordinator_connections",
                "Connections open on a listener (http, grpc), TLS handshakes included.",
                &["listener"],
            ),
            connections_limit: gauge_vec(
                "lockstep_coordinator_connections_limit",
                "Most connections a listener keeps open: limits.max_connections, lowered to fit the file limit.",
                &["listener"],
            ),
            connections_closed: counter_vec(
                "lockstep_coordinator_connections_closed_total",
                "Connections the coordinator closed on its own, by listener and reason: evicted (the least recently used idle one, to make room at the cap), refused (at the cap with every connection busy), header_timeout (no complete request headers, or on gRPC no first byte, within limits.header_read_timeout), idle (no byte moved for limits.idle_timeout).",
                &["listener", "reason"],
            ),
            peer_up: gauge_vec(
                "lockstep_coordinator_peer_up",
                "1 while another region's coordinators answer this coordinator's status requests (PeerService), 0 while they do not or have not been asked yet; by peer_region.",
                &["peer_region"],
            ),
            peer_unreachable_seconds: GaugeVec::new(
                Opts::new(
                    "lockstep_coordinator_peer_unreachable_seconds",
                    "How long another region has not answered: seconds since the first failed status request after its last answer; 0 while it answers. By peer_region.",
                ),
                &["peer_region"],
            )
            .expect("valid metric"),
            peer_request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "lockstep_coordinator_peer_request_duration_seconds",
                    "Time to get another region's status (every address tried, standbys followed), failures included; by peer_region.",
                )
                .buckets(prometheus::exponential_buckets(0.001, 3.0, 10).expect("valid buckets")),
                &["peer_region"],
            )
            .expect("valid metric"),
        }
    }

    /// On stepping down: the control-plane and drift gauges describe what the leader sees,
    /// and a standby sees nothing; they go to zero (or away) rather than freeze.
    pub fn clear_leader_gauges(&self) {
        self.leader.set(0);
        self.workers.set(0);
        self.generation.set(0);
        for phase in TASK_PHASES {
            self.tasks.with_label_values(&[phase]).set(0);
        }
        self.drift.clear_drift_gauges();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_registered_once() {
        let m = Metrics::new();
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
    fn known_label_sets_are_exported_at_zero() {
        let m = Metrics::new();
        m.drift
            .init_druid_site("site-a", &["unreachable", "timeout"]);
        m.drift
            .init_drift_datasource("clicks", &["in_sync", "unknown"]);
        let text = m.render();
        for line in [
            "lockstep_coordinator_grpc_request_duration_seconds_count{method=\"Heartbeat\"} 0",
            "lockstep_coordinator_grpc_requests_total{code=\"OK\",method=\"DrainWorker\"} 0",
            "lockstep_coordinator_heartbeats_total{result=\"refused\"} 0",
            "lockstep_coordinator_state_writes_total{result=\"error\"} 0",
            "lockstep_coordinator_auth_failures_total{api=\"http\",reason=\"wrong\"} 0",
            "lockstep_coordinator_worker_calls_rejected_total{reason=\"queue\"} 0",
            "lockstep_coordinator_tls_reloads_total{result=\"error\"} 0",
            "lockstep_coordinator_tasks{phase=\"paused\"} 0",
            "lockstep_druid_errors_total{kind=\"timeout\",site=\"site-a\"} 0",
            "lockstep_drift_verdict{datasource=\"clicks\",verdict=\"unknown\"} 1",
            "lockstep_drift_verdict{datasource=\"clicks\",verdict=\"in_sync\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
