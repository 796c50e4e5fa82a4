//! The coordinator's drift poller: checks every datasource each `coordinator.drift_interval`,
//! keeps the last report for `/api/v1/drift`, publishes it as metrics and hands it to the
//! caller's `on_report` (the coordinator's recent events). Stops when the shutdown token
//! fires; a check in progress is abandoned.

use super::{record_metrics, targets, DriftEngine, DriftReport, Overrides};
use crate::metrics::DriftMetrics;
use lockstep_config::Config;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

/// The latest drift report, shared with the HTTP API. None until the first check ends.
pub type LatestReport = Arc<RwLock<Option<DriftReport>>>;

/// Wall-clock now in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs until `shutdown`. Returns at once when the config has no datasource to check. Each
/// report goes to the metrics, then to `on_report`, then to `latest`.
pub async fn run(
    config: Config,
    metrics: DriftMetrics,
    latest: LatestReport,
    on_report: impl Fn(&DriftReport) + Send,
    shutdown: CancellationToken,
) {
    let targets = targets(&config, None, &Overrides::default());
    if targets.is_empty() {
        tracing::info!("no flow names a datasource: drift polling is off");
        return;
    }
    // Until the first check ends, every datasource's verdict is `unknown`.
    let verdicts: Vec<&str> = super::Verdict::ALL.iter().map(|v| v.as_str()).collect();
    for t in &targets {
        metrics.init_drift_datasource(&t.datasource, &verdicts);
    }
    let engine = match DriftEngine::new(&config, metrics.clone()) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "drift polling is off");
            return;
        }
    };
    let mut interval = tokio::time::interval(config.coordinator.drift_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let report = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = engine.check_all(&targets, now_ms(), &|_| {}) => r,
        };
        tracing::info!(
            verdict = report.verdict.as_str(),
            datasources = report.datasources.len(),
            "drift checked"
        );
        record_metrics(&metrics, &report);
        on_report(&report);
        *latest.write().await = Some(report);
    }
}
