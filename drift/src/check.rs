//! [`DriftEngine`]: runs one drift check per datasource against every site, in parallel:
//! coarse `sys.segments` pass, freshness and supervisor status, then the fine per-bucket SQL
//! only over the ranges the coarse pass could not settle, then the offset map. The decisions
//! are `engine`'s; this module only gathers and assembles.

use super::engine::{self, SiteFacts, Span};
use super::offsets::{source_topic_of, KafkaRoute, OffsetMap};
use super::*;
use crate::druid::{format_time, parse_time, DruidClient, SupervisorStatus};
use crate::metrics::DriftMetrics;
use futures::stream::{self, StreamExt};
use lockstep_config::Config;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Datasources checked at once.
const DATASOURCE_CONCURRENCY: usize = 8;

/// Reads every site's Druid (and, for Kafka flows, Kafka for the offset map).
pub struct DriftEngine {
    clients: BTreeMap<String, DruidClient>,
    site_kafka: BTreeMap<String, Option<KafkaCluster>>,
    offsets: Arc<OffsetMap>,
    kafka_timeout: Duration,
    metrics: DriftMetrics,
}

/// What one site answered for one datasource, before comparison.
struct Gathered {
    segments: Vec<(Span, i64)>,
    latest: Option<i64>,
    supervisor: Option<SupervisorStatus>,
    notes: Vec<String>,
}

impl DriftEngine {
    /// Clients for every site of the config.
    pub fn new(config: &Config, metrics: DriftMetrics) -> Result<Self, DruidError> {
        let mut clients = BTreeMap::new();
        let mut site_kafka = BTreeMap::new();
        for site in &config.sites {
            metrics.init_druid_site(&site.name, DruidError::KINDS);
            clients.insert(
                site.name.clone(),
                DruidClient::new(&site.name, &site.druid, metrics.clone())?,
            );
            site_kafka.insert(site.name.clone(), site.kafka.clone());
        }
        Ok(DriftEngine {
            clients,
            site_kafka,
            offsets: Arc::new(OffsetMap::new()),
            kafka_timeout: Duration::from_secs(10),
            metrics,
        })
    }

    /// Checks every target, calling `on_done` as each finishes; reports in target order.
    pub async fn check_all(
        &self,
        targets: &[Target],
        now_ms: i64,
        on_done: &(dyn Fn(&DatasourceReport) + Sync),
    ) -> DriftReport {
        let started = std::time::Instant::now();
        // Futures collected first: a closure over borrowed targets inside the stream would
        // not be `Send` for every lifetime, which `tokio::spawn` of the poller requires.
        let checks: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| async move {
                let r = self.check(t, now_ms).await;
                on_done(&r);
                (i, r)
            })
            .collect();
        let mut reports: Vec<(usize, DatasourceReport)> = stream::iter(checks)
            .buffer_unordered(DATASOURCE_CONCURRENCY)
            .collect()
            .await;
        reports.sort_by_key(|(i, _)| *i);
        self.metrics
            .drift_poll_seconds
            .observe(started.elapsed().as_secs_f64());
        DriftReport::new(now_ms, reports.into_iter().map(|(_, r)| r).collect())
    }

    /// Checks one datasource across its flow's sites.
    pub async fn check(&self, target: &Target, now_ms: i64) -> DatasourceReport {
        let span =
            tracing::info_span!("drift", flow = %target.flow, datasource = %target.datasource);
        self.check_inner(target, now_ms).instrument(span).await
    }

    async fn check_inner(&self, target: &Target, now_ms: i64) -> DatasourceReport {
        let s = &target.settings;
        let bucket_ms = s.granularity.duration().as_millis() as i64;
        let win = engine::window(
            now_ms,
            s.window.as_millis() as i64,
            s.settle.as_millis() as i64,
            bucket_ms,
        );
        let names = target.sites.clone();

        // 1. Coarse pass, freshness and supervisor, every site at once.
        let gathered: Vec<Result<Gathered, DruidError>> =
            futures::future::join_all(names.iter().map(|site| self.gather(site, target))).await;

        let mut reports: Vec<SiteReport> = Vec::new();
        let mut facts: Vec<SiteFacts> = Vec::new();
        let ok: Vec<usize> = (0..names.len()).filter(|&i| gathered[i].is_ok()).collect();
        let coarse_input: Vec<Vec<(Span, i64)>> = ok
            .iter()
            .filter_map(|&i| gathered[i].as_ref().ok().map(|g| g.segments.clone()))
            .collect();
        let coarse = engine::coarse(win, &coarse_input, s.count.is_rows());

        // 2. Fine pass over the unsettled ranges only.
        let fine: Vec<Result<BTreeMap<i64, i64>, DruidError>> =
            futures::future::join_all(names.iter().enumerate().map(|(i, site)| {
                let ranges = coarse.fine.clone();
                let skip = gathered[i].is_err();
                async move {
                    let mut counts = BTreeMap::new();
                    if skip {
                        return Ok(counts);
                    }
                    let client = self.client(site)?;
                    for r in ranges {
                        let answer = client
                            .bucket_counts(
                                &target.datasource,
                                &s.count,
                                s.granularity,
                                r.start,
                                r.end,
                            )
                            .await;
                        let rows = match answer {
                            Err(e) if e.is_missing_table() => Vec::new(),
                            other => other?,
                        };
                        for (bucket, rows) in rows {
                            *counts.entry(bucket).or_insert(0) += rows;
                        }
                    }
                    Ok(counts)
                }
            }))
            .await;

        // 3. Per-site facts, progress in source offsets.
        let agreed_rows: i64 = coarse.agreed.iter().map(|(_, r)| r).sum();
        let mut counts: Vec<BTreeMap<i64, i64>> = Vec::new();
        let mut compared_names: Vec<String> = Vec::new();
        for (i, site) in names.iter().enumerate() {
            let g = match (&gathered[i], &fine[i]) {
                (Err(e), _) | (Ok(_), Err(e)) => {
                    facts.push(SiteFacts {
                        error: Some(e.to_string()),
                        ..Default::default()
                    });
                    reports.push(SiteReport::failed(site, e));
                    continue;
                }
                (Ok(g), Ok(c)) => {
                    counts.push(c.clone());
                    compared_names.push(site.clone());
                    g
                }
            };
            let fine_rows: i64 = fine[i].as_ref().map(|c| c.values().sum()).unwrap_or(0);
            let mut notes = g.notes.clone();
            let (partitions, records_behind) = self.progress(site, target, g, &mut notes).await;
            let mirror_behind = if partitions.is_empty() {
                None
            } else {
                partitions
                    .iter()
                    .map(|p| p.mirror_behind)
                    .sum::<Option<i64>>()
            };
            facts.push(SiteFacts {
                error: None,
                records_behind,
                latest: g.latest,
            });
            reports.push(SiteReport {
                site: site.clone(),
                rows: Some(agreed_rows + fine_rows),
                latest: g.latest.map(format_time),
                freshness_seconds: g.latest.map(|l| (now_ms - l).max(0) as f64 / 1000.0),
                records_behind,
                mirror_behind,
                partitions,
                supervisor: g.supervisor.as_ref().map(|st| SupervisorView {
                    id: st.id.clone(),
                    state: st.payload.state.clone(),
                    detailed_state: st.payload.detailed_state.clone(),
                    healthy: st.payload.healthy,
                    suspended: st.payload.suspended,
                    stream: st.payload.stream.clone(),
                    recent_errors: st.payload.recent_error_texts(),
                }),
                error: None,
                error_kind: None,
                notes,
            });
        }

        // 4. Decide.
        let slack_ms = (s.settle.as_millis() as i64).max(bucket_ms);
        let ok_facts: Vec<SiteFacts> = facts
            .iter()
            .filter(|f| f.error.is_none())
            .cloned()
            .collect();
        let lags = engine::lags(&ok_facts, bucket_ms, slack_ms, s.count.is_rows());
        let comparison = engine::compare(&compared_names, &counts, &lags, s.max_drift);
        let (verdict, reason) = engine::verdict(&names, &facts, &comparison, slack_ms);
        tracing::debug!(flow = %target.flow, datasource = %target.datasource, verdict = verdict.as_str(), %reason, "drift checked");
        DatasourceReport {
            flow: target.flow.clone(),
            datasource: target.datasource.clone(),
            verdict,
            reason,
            window_start: format_time(win.start),
            window_end: format_time(win.end),
            granularity: s.granularity.as_str().to_string(),
            count: s.count.sql(),
            max_drift: s.max_drift,
            sites: reports,
            divergent_bucket_count: comparison.divergent.len(),
            divergent_buckets: comparison
                .divergent
                .iter()
                .take(MAX_LISTED_BUCKETS)
                .map(|d| BucketView {
                    bucket: format_time(d.bucket),
                    rows: d.rows.clone(),
                    sites: d.sites.clone(),
                    difference: d.difference,
                })
                .collect(),
            lag_explained_buckets: comparison.lag_explained,
            agreed_intervals: coarse.agreed.len(),
            fine_ranges: coarse.fine.len(),
        }
    }

    fn client(&self, site: &str) -> Result<&DruidClient, DruidError> {
        self.clients.get(site).ok_or_else(|| DruidError::Setup {
            site: site.to_string(),
            message: "not in the config's [[sites]]".to_string(),
        })
    }

    async fn gather(&self, site: &str, target: &Target) -> Result<Gathered, DruidError> {
        let client = self.client(site)?;
        let ds = &target.datasource;
        let supervisor = async {
            match &target.supervisor {
                None => Ok(None),
                Some(id) => client.supervisor_status(id).await.map(Some),
            }
        };
        let (segments, latest, supervisor) =
            tokio::join!(client.segment_intervals(ds), client.latest(ds), supervisor);
        let mut notes = Vec::new();
        let supervisor = match supervisor {
            Ok(s) => s,
            // No such supervisor (404) is worth a note, not an unknown verdict; a site that
            // cannot be reached or refuses us is unknown.
            Err(DruidError::Druid { status, body, .. }) if status == 404 || status == 400 => {
                notes.push(format!(
                    "no supervisor \"{}\" (HTTP {status}: {})",
                    target.supervisor.as_deref().unwrap_or_default(),
                    body.message
                ));
                None
            }
            Err(e) => return Err(e),
        };
        let segments = segments?
            .into_iter()
            .filter_map(|seg| {
                let span = Span {
                    start: parse_time(&seg.start)?,
                    end: parse_time(&seg.end)?,
                };
                Some((span, seg.rows))
            })
            .collect();
        let latest = match latest {
            Ok(l) => l,
            // Druid does not know a datasource with no data yet: that is an empty
            // datasource at this site, not an unreadable site.
            Err(e) if e.is_missing_table() => {
                notes.push(format!("datasource \"{ds}\" does not exist here (no data)"));
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Gathered {
            segments,
            latest,
            supervisor,
            notes,
        })
    }

    /// Records behind in source offsets, through the offset map. Failures become notes: the
    /// rows comparison still stands.
    async fn progress(
        &self,
        site: &str,
        target: &Target,
        g: &Gathered,
        notes: &mut Vec<String>,
    ) -> (Vec<offsets::PartitionProgress>, Option<i64>) {
        let (Some(kafka), Some(status)) = (&target.kafka, &g.supervisor) else {
            return (Vec::new(), None);
        };
        let Some(Some(site_cluster)) = self.site_kafka.get(site) else {
            notes.push("site has no [sites.kafka]: records behind unknown".to_string());
            return (Vec::new(), None);
        };
        let site_topic = status.payload.stream.clone().or_else(|| {
            (kafka.topics.len() == 1)
                .then(|| kafka.target_template.replace("{topic}", &kafka.topics[0]))
        });
        let Some(site_topic) = site_topic else {
            notes.push("supervisor status names no stream: records behind unknown".to_string());
            return (Vec::new(), None);
        };
        let Some(source_topic) =
            source_topic_of(&kafka.target_template, &site_topic, &kafka.topics)
        else {
            notes.push(format!(
                "stream \"{site_topic}\" does not match target_topic \"{}\": records behind unknown",
                kafka.target_template
            ));
            return (Vec::new(), None);
        };
        let route = KafkaRoute {
            source_name: kafka.source_name.clone(),
            source: kafka.cluster.clone(),
            source_topic,
            site_name: site.to_string(),
            site: site_cluster.clone(),
            site_topic,
        };
        match self
            .offsets
            .progress(&route, &status.payload.ingested_end(), self.kafka_timeout)
            .await
        {
            Ok(parts) => {
                for part in &parts {
                    if let Some(note) = &part.note {
                        notes.push(format!("{}/{}: {note}", route.site_topic, part.partition));
                    }
                }
                let behind = parts.iter().map(|p| p.records_behind).sum::<Option<i64>>();
                (parts, behind)
            }
            Err(e) => {
                notes.push(format!("records behind unknown: {e}"));
                (Vec::new(), None)
            }
        }
    }
}
