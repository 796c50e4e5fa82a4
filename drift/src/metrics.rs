//! Every metric drift tracking exports (`lockstep_drift_*`, `lockstep_druid_*`), defined once.
//! The drift engine, the Druid client and the poller use these handles and never register
//! their own.
//!
//! [`DriftMetrics::new`] makes the handles in no registry: the coordinator registers them into
//! its own ([`DriftMetrics::register`]) and exports them with the control plane's, and
//! `lockstep drift-check` uses them unregistered (it exports nothing). The README's catalog
//! lists them as from the coordinator; the coordinator's `NAMES` include [`NAMES`].

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Names as exported, for the catalog test (through the coordinator's `NAMES`).
pub const NAMES: &[&str] = &[
    "lockstep_drift_verdict",
    "lockstep_drift_rows_difference",
    "lockstep_drift_records_behind",
    "lockstep_drift_freshness_seconds",
    "lockstep_drift_poll_duration_seconds",
    "lockstep_druid_request_duration_seconds",
    "lockstep_druid_errors_total",
    "lockstep_druid_up",
    "lockstep_drift_source_lag_seconds",
];

/// The drift and Druid client metrics. Cheap to clone (handles).
#[derive(Clone)]
pub struct DriftMetrics {
    pub drift_verdict: IntGaugeVec,
    pub drift_rows_difference: IntGaugeVec,
    pub drift_records_behind: IntGaugeVec,
    pub drift_freshness_seconds: GaugeVec,
    pub drift_source_lag_seconds: GaugeVec,
    pub drift_poll_seconds: Histogram,
    pub druid_request_seconds: HistogramVec,
    pub druid_errors: IntCounterVec,
    pub druid_up: IntGaugeVec,
}

impl DriftMetrics {
    /// The handles, in no registry (see [`DriftMetrics::register`]).
    pub fn new() -> Self {
        // The options below are constants; `expect` documents that they are valid.
        let gauge_vec = |n: &str, h: &str, l: &[&str]| {
            IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric")
        };
        let slow = prometheus::exponential_buckets(0.005, 3.0, 10).expect("valid buckets");
        DriftMetrics {
            drift_verdict: gauge_vec(
                NAMES[0],
                "1 for the datasource's current drift verdict (in_sync, lagging, diverged, unknown), 0 for the others.",
                &["datasource", "verdict"],
            ),
            drift_rows_difference: gauge_vec(
                NAMES[1],
                "Rows a site has minus the most any site has, over the settled window (0 or negative; absent when the site could not be read).",
                &["datasource", "site"],
            ),
            drift_records_behind: gauge_vec(
                NAMES[2],
                "Source records not yet ingested by the site's Druid, in source offsets (absent when unknown).",
                &["datasource", "site"],
            ),
            drift_freshness_seconds: GaugeVec::new(
                Opts::new(
                    NAMES[3],
                    "Age of the site's newest row (now - MAX(__time)) at the last poll.",
                ),
                &["datasource", "site"],
            )
            .expect("valid metric"),
            drift_source_lag_seconds: GaugeVec::new(
                Opts::new(
                    NAMES[8],
                    "How long the oldest source record not yet in the site's Druid has waited (mirror lag plus Druid's lag; 0 when caught up; absent when unknown).",
                ),
                &["datasource", "site"],
            )
            .expect("valid metric"),
            drift_poll_seconds: Histogram::with_opts(
                HistogramOpts::new(NAMES[4], "Time to check drift of every datasource once.")
                    .buckets(slow.clone()),
            )
            .expect("valid metric"),
            druid_request_seconds: HistogramVec::new(
                HistogramOpts::new(NAMES[5], "Druid API call latency by site and endpoint.")
                    .buckets(slow),
                &["site", "endpoint"],
            )
            .expect("valid metric"),
            druid_errors: IntCounterVec::new(
                Opts::new(
                    NAMES[6],
                    "Failed Druid API calls by site and kind (unreachable, timeout, query_timeout, capacity_exceeded, unauthorized, druid, not_json, decode, setup).",
                ),
                &["site", "kind"],
            )
            .expect("valid metric"),
            druid_up: gauge_vec(
                NAMES[7],
                "1 if the last call to the site's Druid got an answer from Druid (success, a Druid error, or a 404 page of a Router that does not proxy an API), 0 if it was unreachable, timed out, or a proxy in front answered 502/503/504 with a page.",
                &["site"],
            ),
        }
    }

    /// Registers every handle into `registry` (the coordinator's).
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.drift_verdict.clone()),
            Box::new(self.drift_rows_difference.clone()),
            Box::new(self.drift_records_behind.clone()),
            Box::new(self.drift_freshness_seconds.clone()),
            Box::new(self.drift_source_lag_seconds.clone()),
            Box::new(self.drift_poll_seconds.clone()),
            Box::new(self.druid_request_seconds.clone()),
            Box::new(self.druid_errors.clone()),
            Box::new(self.druid_up.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        Ok(())
    }

    /// Creates, at zero, a Druid site's error counters (one per error kind), so an alert on
    /// their increase sees the first error. Called for every site when a drift engine starts.
    pub fn init_druid_site(&self, site: &str, kinds: &[&str]) {
        for kind in kinds {
            self.druid_errors.with_label_values(&[site, kind]);
        }
    }

    /// Creates a datasource's verdict series before its first check: `unknown` is 1 (nothing
    /// is known yet), the others 0. Called by the drift poller when it starts.
    pub fn init_drift_datasource(&self, datasource: &str, verdicts: &[&str]) {
        for v in verdicts {
            self.drift_verdict
                .with_label_values(&[datasource, v])
                .set(i64::from(*v == "unknown"));
        }
    }

    /// The per-datasource drift gauges go away (a coordinator stepping down sees nothing;
    /// they must not freeze at the last leader's values).
    pub fn clear_drift_gauges(&self) {
        self.drift_verdict.reset();
        self.drift_rows_difference.reset();
        self.drift_records_behind.reset();
        self.drift_freshness_seconds.reset();
        self.drift_source_lag_seconds.reset();
    }
}

impl Default for DriftMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_registered_once() {
        let registry = Registry::new();
        DriftMetrics::new().register(&registry).expect("register");
        let distinct: std::collections::BTreeSet<&str> = NAMES.iter().copied().collect();
        assert_eq!(distinct.len(), NAMES.len(), "a name is listed twice");
        for name in NAMES {
            // Registering a name again fails only if it is registered already.
            let probe = prometheus::IntGauge::new(*name, "probe").expect("valid metric");
            assert!(
                registry.register(Box::new(probe)).is_err(),
                "{name} is in NAMES but not registered"
            );
        }
    }
}
