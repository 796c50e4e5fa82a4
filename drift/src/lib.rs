//! lockstep drift tracking: does every site's Druid hold the same rows as the others, and if
//! not, is it catching up (lagging) or has it lost or gained data (diverged)?
//!
//! - `engine`: the pure decisions (window, coarse/fine split, bucket comparison, verdict);
//! - `offsets`: site Druid progress in source offsets through the mirror's offset headers;
//! - `druid`: the Druid HTTP client every site is read with;
//! - `check`: gathers each site's answers with the Druid client and runs the engine;
//! - `poller`: the coordinator's background loop and its shared result;
//! - `metrics`: the drift and Druid client metrics, registered by whoever exports them.
//!
//! Used by the coordinator (the poller, `/api/v1/drift`, the status page) and by
//! `lockstep drift-check`, which needs no control plane: this crate never depends on the
//! coordinator, gRPC or the election, and it only reads (Druid and Kafka), never writes.
//!
//! An unreachable site makes its datasource `unknown`; it is never counted as zero rows. Nor
//! is a site whose segments are published but not queryable (Druid SQL then says the
//! datasource is "not found", exactly as for one that never existed).

mod check;
pub mod druid;
pub mod engine;
pub mod metrics;
pub mod offsets;
pub mod poller;

pub use check::DriftEngine;
pub use engine::Verdict;
pub use metrics::DriftMetrics;

use crate::druid::DruidError;
use lockstep_config::{Config, DriftSettings, FlowKind, KafkaCluster, SourceKind, TopicSelector};
use serde::Serialize;
use std::collections::BTreeMap;

/// Why one site could not be checked for one datasource.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Druid(#[from] DruidError),
    /// SQL does not know the datasource, yet the metadata lists used segments.
    #[error("site {site}: {published} published segment(s) of \"{datasource}\" are not queryable (per {evidence}): Historicals down or segments not loaded")]
    Unqueryable {
        site: String,
        datasource: String,
        published: i64,
        /// Which metadata said so: `sys.segments` or the Coordinator's metadata API.
        evidence: &'static str,
    },
    /// Some published segments in the compared window are not loaded: counts there would
    /// be short, which would read as lost data.
    #[error("site {site}: {unloaded} of {published} published segment(s) of \"{datasource}\" in the window are not loaded (Historicals down or segments not loaded): rows cannot be compared")]
    PartlyLoaded {
        site: String,
        datasource: String,
        unloaded: i64,
        published: i64,
    },
}

impl SiteError {
    /// A short label (`error_kind` in reports): the Druid error's kind, `unqueryable` or
    /// `partly_loaded`.
    pub fn kind(&self) -> &'static str {
        match self {
            SiteError::Druid(e) => e.kind(),
            SiteError::Unqueryable { .. } => "unqueryable",
            SiteError::PartlyLoaded { .. } => "partly_loaded",
        }
    }
}

/// How many divergent buckets a report lists (the count is always complete).
pub const MAX_LISTED_BUCKETS: usize = 20;

/// One datasource to check, with the flow's drift settings.
#[derive(Debug, Clone)]
pub struct Target {
    pub flow: String,
    pub datasource: String,
    pub sites: Vec<String>,
    pub settings: DriftSettings,
    /// Supervisor id (the datasource's name) for Kafka flows; objects flows have none.
    pub supervisor: Option<String>,
    pub kafka: Option<KafkaSource>,
}

/// A Kafka flow's source, to translate site progress into source offsets.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    pub source_name: String,
    pub cluster: KafkaCluster,
    /// The flow's `target_topic` template.
    pub target_template: String,
    /// Listed source topics (empty for a regex flow).
    pub topics: Vec<String>,
}

/// CLI overrides of every flow's drift settings.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub window: Option<std::time::Duration>,
    pub granularity: Option<lockstep_config::Granularity>,
    pub max_drift: Option<f64>,
    pub settle: Option<std::time::Duration>,
}

/// Every (flow, datasource) of the config, optionally only `datasource`.
pub fn targets(config: &Config, datasource: Option<&str>, overrides: &Overrides) -> Vec<Target> {
    let mut out = Vec::new();
    for flow in &config.flows {
        let kafka = match (&flow.kind, config.source(&flow.source).map(|s| &s.kind)) {
            (FlowKind::Kafka(k), Some(SourceKind::Kafka(cluster))) => Some(KafkaSource {
                source_name: flow.source.clone(),
                cluster: cluster.clone(),
                target_template: k.target_topic.clone(),
                topics: match &k.topics {
                    TopicSelector::List(l) => l.clone(),
                    TopicSelector::Regex(_) => Vec::new(),
                },
            }),
            _ => None,
        };
        for ds in &flow.datasources {
            if datasource.is_some_and(|d| d != ds) {
                continue;
            }
            let mut settings = flow.drift.clone();
            if let Some(w) = overrides.window {
                settings.window = w;
            }
            if let Some(g) = overrides.granularity {
                settings.granularity = g;
            }
            if let Some(m) = overrides.max_drift {
                settings.max_drift = m;
            }
            if let Some(s) = overrides.settle {
                settings.settle = s;
            }
            out.push(Target {
                flow: flow.name.clone(),
                datasource: ds.clone(),
                sites: flow.sites.clone(),
                settings,
                supervisor: kafka.as_ref().map(|_| ds.clone()),
                kafka: kafka.clone(),
            });
        }
    }
    out
}

/// The result of one drift check over every target. Its JSON is the `/api/v1/drift` body
/// and `drift-check --format json` output (documented in the README).
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub checked_at: String,
    /// The worst verdict of all datasources (`in_sync` when there are none).
    pub verdict: Verdict,
    pub datasources: Vec<DatasourceReport>,
}

impl DriftReport {
    pub fn new(checked_at_ms: i64, datasources: Vec<DatasourceReport>) -> Self {
        DriftReport {
            checked_at: crate::druid::format_time(checked_at_ms),
            verdict: datasources
                .iter()
                .map(|d| d.verdict)
                .max()
                .unwrap_or(Verdict::InSync),
            datasources,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasourceReport {
    pub flow: String,
    pub datasource: String,
    pub verdict: Verdict,
    pub reason: String,
    pub window_start: String,
    pub window_end: String,
    pub granularity: String,
    /// The count expression compared (`COUNT(*)`, `SUM("count")`, each site's when they
    /// differ, or `presence (time coverage)` for a rollup without a count metric).
    pub count: String,
    /// Where it came from: `configured` ([flows.drift] count), `spec` (the supervisor
    /// spec's rollup and count metric) or `default` (no spec to read: `COUNT(*)`).
    pub count_source: String,
    pub max_drift: f64,
    pub sites: Vec<SiteReport>,
    /// The first [`MAX_LISTED_BUCKETS`] divergent buckets.
    pub divergent_buckets: Vec<BucketView>,
    pub divergent_bucket_count: usize,
    pub lag_explained_buckets: usize,
    /// Segment intervals every site agreed on (coarse pass).
    pub agreed_intervals: usize,
    /// Time ranges the fine pass queried per site.
    pub fine_ranges: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    pub site: String,
    /// Rows over the compared window (counted with `count`); null when the site could not be
    /// read.
    pub rows: Option<i64>,
    /// This site's count expression.
    pub count: Option<String>,
    /// Newest row (`MAX(__time)`).
    pub latest: Option<String>,
    pub freshness_seconds: Option<f64>,
    /// Source records not yet in this site's Druid (sum over partitions); null if unknown.
    pub records_behind: Option<i64>,
    /// Freshness against the source: how long the oldest source record not yet in this
    /// site's Druid has waited (mirror lag plus Druid's own lag); 0 when caught up, null when
    /// unknown. From Druid's `aggregateLagMillis` (Druid's lag only) when Kafka cannot be read.
    pub source_lag_seconds: Option<f64>,
    /// The part of `records_behind` not yet mirrored into the site topic (mirror lag).
    pub mirror_behind: Option<i64>,
    pub partitions: Vec<offsets::PartitionProgress>,
    pub supervisor: Option<SupervisorView>,
    /// Why the site could not be checked.
    pub error: Option<String>,
    pub error_kind: Option<String>,
    /// Things worth knowing that do not change the verdict (offsets unavailable, ...).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SupervisorView {
    pub id: String,
    pub state: Option<String>,
    pub detailed_state: Option<String>,
    pub healthy: Option<bool>,
    pub suspended: Option<bool>,
    pub stream: Option<String>,
    pub recent_errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketView {
    pub bucket: String,
    pub rows: BTreeMap<String, i64>,
    /// The sites that differ from the others.
    pub sites: Vec<String>,
    pub difference: f64,
}

impl SiteReport {
    fn failed(site: &str, error: String, kind: &str) -> Self {
        SiteReport {
            site: site.to_string(),
            rows: None,
            count: None,
            latest: None,
            freshness_seconds: None,
            records_behind: None,
            source_lag_seconds: None,
            mirror_behind: None,
            partitions: Vec::new(),
            supervisor: None,
            error: Some(error),
            error_kind: Some(kind.to_string()),
            notes: Vec::new(),
        }
    }
}

/// Publishes a report as metrics: series of a site that could not be read are removed,
/// never set to zero.
pub fn record_metrics(metrics: &DriftMetrics, report: &DriftReport) {
    for ds in &report.datasources {
        for v in Verdict::ALL {
            metrics
                .drift_verdict
                .with_label_values(&[&ds.datasource, v.as_str()])
                .set(i64::from(v == ds.verdict));
        }
        let most = ds.sites.iter().filter_map(|s| s.rows).max();
        for s in &ds.sites {
            let labels = [ds.datasource.as_str(), s.site.as_str()];
            match (s.rows, most) {
                (Some(r), Some(m)) => metrics
                    .drift_rows_difference
                    .with_label_values(&labels)
                    .set(r - m),
                _ => {
                    let _ = metrics.drift_rows_difference.remove_label_values(&labels);
                }
            }
            match s.records_behind {
                Some(r) => metrics
                    .drift_records_behind
                    .with_label_values(&labels)
                    .set(r),
                None => {
                    let _ = metrics.drift_records_behind.remove_label_values(&labels);
                }
            }
            match s.source_lag_seconds {
                Some(f) => metrics
                    .drift_source_lag_seconds
                    .with_label_values(&labels)
                    .set(f),
                None => {
                    let _ = metrics
                        .drift_source_lag_seconds
                        .remove_label_values(&labels);
                }
            }
            match s.freshness_seconds {
                Some(f) => metrics
                    .drift_freshness_seconds
                    .with_label_values(&labels)
                    .set(f),
                None => {
                    let _ = metrics.drift_freshness_seconds.remove_label_values(&labels);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, rows: Option<i64>, behind: Option<i64>) -> SiteReport {
        SiteReport {
            site: name.to_string(),
            rows,
            count: None,
            latest: None,
            freshness_seconds: rows.map(|_| 5.0),
            records_behind: behind,
            source_lag_seconds: behind.map(|b| b as f64),
            mirror_behind: None,
            partitions: Vec::new(),
            supervisor: None,
            error: rows
                .is_none()
                .then(|| "site b: Druid unreachable".to_string()),
            error_kind: rows.is_none().then(|| "unreachable".to_string()),
            notes: Vec::new(),
        }
    }

    fn report(sites: Vec<SiteReport>, verdict: Verdict) -> DriftReport {
        DriftReport::new(
            0,
            vec![DatasourceReport {
                flow: "f".into(),
                datasource: "clicks".into(),
                verdict,
                reason: String::new(),
                window_start: String::new(),
                window_end: String::new(),
                granularity: "hour".into(),
                count: "COUNT(*)".into(),
                count_source: "default".into(),
                max_drift: 0.0,
                sites,
                divergent_buckets: Vec::new(),
                divergent_bucket_count: 0,
                lag_explained_buckets: 0,
                agreed_intervals: 0,
                fine_ranges: 0,
            }],
        )
    }

    /// Prometheus text exposition of `registry`.
    fn render(registry: &prometheus::Registry) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encode")
    }

    #[test]
    fn an_unreadable_site_loses_its_series_instead_of_reading_zero() {
        let registry = prometheus::Registry::new();
        let m = DriftMetrics::new();
        m.register(&registry).expect("register");
        record_metrics(
            &m,
            &report(
                vec![site("a", Some(100), Some(0)), site("b", Some(90), Some(10))],
                Verdict::Lagging,
            ),
        );
        let text = render(&registry);
        assert!(
            text.contains("lockstep_drift_rows_difference{datasource=\"clicks\",site=\"b\"} -10")
        );
        assert!(text.contains("lockstep_drift_records_behind{datasource=\"clicks\",site=\"b\"} 10"));
        assert!(
            text.contains("lockstep_drift_source_lag_seconds{datasource=\"clicks\",site=\"b\"} 10")
        );
        assert!(
            text.contains("lockstep_drift_verdict{datasource=\"clicks\",verdict=\"lagging\"} 1")
        );
        assert!(
            text.contains("lockstep_drift_verdict{datasource=\"clicks\",verdict=\"in_sync\"} 0")
        );
        record_metrics(
            &m,
            &report(
                vec![site("a", Some(100), Some(0)), site("b", None, None)],
                Verdict::Unknown,
            ),
        );
        let text = render(&registry);
        assert!(!text.contains("site=\"b\""), "{text}");
        assert!(
            text.contains("lockstep_drift_verdict{datasource=\"clicks\",verdict=\"unknown\"} 1")
        );
    }

    #[test]
    fn overall_verdict_is_the_worst() {
        let mut r = report(vec![], Verdict::Diverged);
        r.datasources.push(r.datasources[0].clone());
        r.datasources[1].verdict = Verdict::InSync;
        let r = DriftReport::new(0, r.datasources);
        assert_eq!(r.verdict, Verdict::Diverged);
        assert_eq!(DriftReport::new(0, vec![]).verdict, Verdict::InSync);
    }
}
