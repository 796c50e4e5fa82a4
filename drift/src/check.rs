//! [`DriftEngine`]: runs one drift check per datasource against every site, in parallel:
//! coarse `sys.segments` pass, freshness and supervisor status, then the fine per-bucket SQL
//! only over the ranges the coarse pass could not settle, then the offset map. The decisions
//! are `engine`'s; this module only gathers and assembles.

use super::engine::{self, SiteFacts, Span};
use super::offsets::{source_topic_of, KafkaRoute, OffsetMap, SiteOffsets};
use super::*;
use crate::druid::{
    format_time, parse_time, DruidClient, SpecSummary, StreamPartition, SupervisorStatus,
};
use crate::metrics::DriftMetrics;
use futures::stream::{self, StreamExt};
use lockstep_config::{Config, CountExpr};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
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
    /// (datasource, site) -> whether the site was lagging at the last check: the hysteresis
    /// of [`engine::is_lagging`], kept across the poller's checks.
    lagging: Mutex<HashMap<(String, String), bool>>,
    /// Sites whose supervisor API answered a 404 that is not the Overlord's own: warned
    /// once in the log (every report still carries the note).
    warned_routing: Mutex<HashSet<String>>,
}

/// What one site answered for one datasource, before comparison.
struct Gathered {
    segments: Vec<(Span, i64)>,
    latest: Option<i64>,
    supervisor: Option<SupervisorStatus>,
    spec: Option<SpecSummary>,
    notes: Vec<String>,
}

/// How one site's rows are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Counting {
    /// This aggregate per bucket.
    Expr(CountExpr),
    /// Rolled up without a count metric: rows cannot be counted as events, so only which
    /// buckets hold data is compared (time coverage), with freshness.
    Presence,
}

/// A site's progress in source offsets and in time.
#[derive(Default)]
struct Progress {
    partitions: Vec<offsets::PartitionProgress>,
    records_behind: Option<i64>,
    /// How long the oldest record not yet ingested has waited, ms.
    waiting_ms: Option<i64>,
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
            lagging: Mutex::new(HashMap::new()),
            warned_routing: Mutex::new(HashSet::new()),
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

        // 1. Coarse pass, freshness, supervisor status and spec: every site at once.
        let gathered: Vec<Result<Gathered, SiteError>> =
            futures::future::join_all(names.iter().map(|site| self.gather(site, target, win)))
                .await;

        // 2. How each site counts rows: the configured expression, else what its
        // supervisor spec says (rollup with a count metric: its SUM).
        let (counting, count_source) = choose_counting(&s.count, &gathered);
        let presence = counting.contains(&Counting::Presence);
        let all_rows = counting
            .iter()
            .all(|c| *c == Counting::Expr(CountExpr::Rows));
        let ok: Vec<usize> = (0..names.len()).filter(|&i| gathered[i].is_ok()).collect();
        let coarse_input: Vec<Vec<(Span, i64)>> = ok
            .iter()
            .filter_map(|&i| gathered[i].as_ref().ok().map(|g| g.segments.clone()))
            .collect();
        let coarse = engine::coarse(win, &coarse_input, all_rows && !presence);

        // 3. Fine pass over the unsettled ranges only.
        let fine: Vec<Result<BTreeMap<i64, i64>, DruidError>> =
            futures::future::join_all(names.iter().enumerate().map(|(i, site)| {
                let ranges = coarse.fine.clone();
                let skip = gathered[i].is_err();
                let expr = match &counting[i] {
                    Counting::Expr(e) => e.clone(),
                    Counting::Presence => CountExpr::Rows,
                };
                async move {
                    let mut counts = BTreeMap::new();
                    if skip {
                        return Ok(counts);
                    }
                    let client = self.client(site)?;
                    for r in ranges {
                        let answer = client
                            .bucket_counts(&target.datasource, &expr, s.granularity, r.start, r.end)
                            .await;
                        let rows = match answer {
                            // Only reached for a datasource with no used segment at all
                            // (`gather` made any other "not found" unknown).
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

        // 4. Progress in source offsets and in time, every site at once, each within a
        // deadline: one slow site or Kafka cluster never adds its timeout to the others'.
        let deadline = self.kafka_timeout * 3;
        let gathered_ref = &gathered;
        let progress: Vec<Progress> =
            futures::future::join_all(names.iter().enumerate().map(|(i, site)| async move {
                let Ok(g) = &gathered_ref[i] else {
                    return Progress::default();
                };
                match tokio::time::timeout(deadline, self.progress(site, target, g, now_ms)).await {
                    Ok(p) => p,
                    Err(_) => Progress {
                        notes: vec![format!(
                            "records behind unknown: Kafka did not answer within {}s",
                            deadline.as_secs()
                        )],
                        ..Progress::default()
                    },
                }
            }))
            .await;

        // 5. Per-site facts.
        let agreed_rows: i64 = coarse.agreed.iter().map(|(_, r)| r).sum();
        let tolerance_ms = s.lag_tolerance.as_millis() as i64;
        let mut reports: Vec<SiteReport> = Vec::new();
        let mut facts: Vec<SiteFacts> = Vec::new();
        let mut counts: Vec<BTreeMap<i64, i64>> = Vec::new();
        let mut compared_names: Vec<String> = Vec::new();
        for (i, (site, progress)) in names.iter().zip(progress).enumerate() {
            let failure = match (&gathered[i], &fine[i]) {
                (Err(e), _) => Some((e.to_string(), e.kind())),
                (Ok(_), Err(e)) => Some((e.to_string(), e.kind())),
                _ => None,
            };
            let (Ok(g), Ok(c), None) = (&gathered[i], &fine[i], &failure) else {
                let (message, kind) = failure.unwrap_or_default();
                facts.push(SiteFacts {
                    error: Some(message.clone()),
                    ..Default::default()
                });
                reports.push(SiteReport::failed(site, message, kind));
                continue;
            };
            let fine_rows: i64 = c.values().sum();
            counts.push(if presence {
                c.iter().map(|(b, r)| (*b, i64::from(*r > 0))).collect()
            } else {
                c.clone()
            });
            compared_names.push(site.clone());
            let mut notes = g.notes.clone();
            notes.extend(progress.notes.iter().cloned());
            let mirror_behind = if progress.partitions.is_empty() {
                None
            } else {
                progress
                    .partitions
                    .iter()
                    .map(|p| p.mirror_behind)
                    .sum::<Option<i64>>()
            };
            let key = (target.datasource.clone(), site.clone());
            let was = self
                .lagging
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .copied()
                .unwrap_or(false);
            let lagging = engine::is_lagging(
                progress.records_behind,
                progress.waiting_ms,
                tolerance_ms,
                was,
            );
            self.lagging
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, lagging);
            facts.push(SiteFacts {
                error: None,
                records_behind: progress.records_behind,
                latest: g.latest,
                waiting_ms: progress.waiting_ms,
                in_flight: progress.records_behind.is_some_and(|r| r > 0) && !lagging,
            });
            reports.push(SiteReport {
                site: site.clone(),
                rows: Some(agreed_rows + fine_rows),
                count: Some(counting_text(&counting[i])),
                latest: g.latest.map(format_time),
                freshness_seconds: g.latest.map(|l| (now_ms - l).max(0) as f64 / 1000.0),
                records_behind: progress.records_behind,
                source_lag_seconds: progress.waiting_ms.map(|w| w as f64 / 1000.0),
                mirror_behind,
                partitions: progress.partitions,
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

        // 6. Decide.
        let slack_ms = (s.settle.as_millis() as i64).max(bucket_ms);
        let ok_facts: Vec<SiteFacts> = facts
            .iter()
            .filter(|f| f.error.is_none())
            .cloned()
            .collect();
        let rows_per_record = all_rows && !presence;
        let lags = engine::lags(&ok_facts, bucket_ms, slack_ms, rows_per_record);
        let max_drift = if presence { 0.0 } else { s.max_drift };
        let comparison = engine::compare(&compared_names, &counts, &lags, max_drift);
        let (verdict, mut reason) = engine::verdict(&names, &facts, &comparison, slack_ms);
        if presence && verdict != Verdict::Unknown {
            reason.push_str(
                " (time coverage only: the datasource rolls up without a count metric, so rows are not events; set [flows.drift] count to compare counts)",
            );
        }
        tracing::debug!(flow = %target.flow, datasource = %target.datasource, verdict = verdict.as_str(), %reason, "drift checked");
        DatasourceReport {
            flow: target.flow.clone(),
            datasource: target.datasource.clone(),
            verdict,
            reason,
            window_start: format_time(win.start),
            window_end: format_time(win.end),
            granularity: s.granularity.as_str().to_string(),
            count: datasource_count_text(&names, &counting),
            count_source: count_source.to_string(),
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

    async fn gather(&self, site: &str, target: &Target, win: Span) -> Result<Gathered, SiteError> {
        let client = self.client(site)?;
        let ds = &target.datasource;
        let supervisor = async {
            match &target.supervisor {
                None => None,
                Some(id) => Some(client.supervisor_status(id).await),
            }
        };
        // The spec is read only when the count is not configured: it decides the count.
        let spec = async {
            match (&target.supervisor, &target.settings.count) {
                (Some(id), None) => Some(client.supervisor_spec(id).await),
                _ => None,
            }
        };
        let (segments, latest, supervisor, spec) = tokio::join!(
            client.segment_intervals(ds),
            client.latest(ds),
            supervisor,
            spec
        );
        let mut notes = Vec::new();
        let supervisor =
            supervisor.and_then(|r| self.supervisor_answer(client, target, r, &mut notes));
        let spec = spec.and_then(|r| match r {
            Ok(s) => Some(s),
            Err(e) => {
                // The status call already explained a missing or unroutable supervisor.
                if e.status() != Some(404) {
                    notes.push(format!(
                        "supervisor spec unreadable ({e}): counting COUNT(*)"
                    ));
                }
                None
            }
        });
        let segments = segments?;
        let published: i64 = segments.iter().map(|s| s.segments.max(1)).sum();
        // Published segments in the window that no server has loaded: their rows would be
        // missing from the counts, which would read as lost data.
        let mut unloaded = 0;
        let mut in_window = 0;
        let spans: Vec<(Span, i64)> = segments
            .into_iter()
            .filter_map(|seg| {
                let span = Span {
                    start: parse_time(&seg.start)?,
                    end: parse_time(&seg.end)?,
                };
                if span.start < win.end && span.end > win.start {
                    in_window += seg.segments;
                    if let Some(available) = seg.available {
                        unloaded += (seg.segments - available).max(0);
                    }
                }
                Some((span, seg.rows))
            })
            .collect();
        let latest = match latest {
            Ok(l) => l,
            // Druid answers "not found" both for a datasource it never had and for one whose
            // segments are published but not loaded (Historicals down): ask the metadata.
            Err(e) if e.is_missing_table() => {
                if published > 0 {
                    return Err(SiteError::Unqueryable {
                        site: site.to_string(),
                        datasource: ds.clone(),
                        published,
                        evidence: "sys.segments",
                    });
                }
                match client.used_segments(ds).await {
                    Ok(n) if n > 0 => {
                        return Err(SiteError::Unqueryable {
                            site: site.to_string(),
                            datasource: ds.clone(),
                            published: n as i64,
                            evidence: "the Coordinator's metadata",
                        })
                    }
                    Ok(_) => {}
                    // A Router without the management proxy: sys.segments is the answer.
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => notes.push(format!(
                        "could not ask the Coordinator whether \"{ds}\" has used segments: {e}"
                    )),
                }
                notes.push(format!("datasource \"{ds}\" does not exist here (no data)"));
                None
            }
            Err(e) => return Err(e.into()),
        };
        if unloaded > 0 {
            return Err(SiteError::PartlyLoaded {
                site: site.to_string(),
                datasource: ds.clone(),
                unloaded,
                published: in_window,
            });
        }
        Ok(Gathered {
            segments: spans,
            latest,
            supervisor,
            spec,
            notes,
        })
    }

    /// The supervisor status, or a note saying why there is none. Only the Overlord's own
    /// "does not exist" means no supervisor; any other 404 is a Router that does not proxy
    /// the supervisor API. Neither stops the row comparison; nor does an Overlord that cannot
    /// be reached (only records behind are then unknown).
    fn supervisor_answer(
        &self,
        client: &DruidClient,
        target: &Target,
        r: Result<SupervisorStatus, DruidError>,
        notes: &mut Vec<String>,
    ) -> Option<SupervisorStatus> {
        let id = target.supervisor.as_deref().unwrap_or_default();
        match r {
            Ok(s) => Some(s),
            Err(e) if e.is_no_such_supervisor() => {
                notes.push(format!(
                    "no supervisor \"{id}\" here (the Overlord says it does not exist): records behind unknown"
                ));
                None
            }
            Err(e) if e.status() == Some(404) => {
                let how = if client.overlord_via_router() {
                    "the Router does not proxy the supervisor API (it needs druid.router.managementProxy.enabled=true), or set [sites.druid] overlord_url to the Overlord"
                } else {
                    "check [sites.druid] overlord_url: it should be the Overlord's own URL"
                };
                let note = format!(
                    "supervisor API answered HTTP 404: {how}; records behind unknown, rows still compared"
                );
                let first = self
                    .warned_routing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client.site().to_string());
                if first {
                    tracing::warn!(site = %client.site(), supervisor = id, error = %e, "{note}");
                }
                notes.push(note);
                None
            }
            Err(e) => {
                notes.push(format!(
                    "supervisor status unavailable ({e}): records behind unknown"
                ));
                None
            }
        }
    }

    /// Records behind in source offsets and how long the oldest of them has waited, through
    /// the offset map, per site topic (several for a `topicPattern` supervisor). Failures
    /// become notes: the rows comparison still stands.
    async fn progress(&self, site: &str, target: &Target, g: &Gathered, now_ms: i64) -> Progress {
        let mut out = Progress::default();
        let (Some(kafka), Some(status)) = (&target.kafka, &g.supervisor) else {
            return out;
        };
        let druid_lag = druid_lag_ms(&status.payload);
        let Some(Some(site_cluster)) = self.site_kafka.get(site) else {
            out.notes
                .push("site has no [sites.kafka]: records behind unknown".to_string());
            out.waiting_ms = druid_lag;
            return out;
        };
        let ends = status.payload.ingested_end();
        let stream = status.payload.stream.clone().or_else(|| {
            (kafka.topics.len() == 1)
                .then(|| kafka.target_template.replace("{topic}", &kafka.topics[0]))
        });
        let mut by_topic: BTreeMap<String, SiteOffsets> = BTreeMap::new();
        let topic_of = |sp: &StreamPartition| sp.topic.clone().or_else(|| stream.clone());
        for (sp, off) in &ends.offsets {
            if let Some(t) = topic_of(sp) {
                by_topic
                    .entry(t)
                    .or_default()
                    .ingested_end
                    .insert(sp.partition, *off);
            }
        }
        for (sp, why) in &ends.unknown {
            if let Some(t) = topic_of(sp) {
                by_topic
                    .entry(t)
                    .or_default()
                    .unknown
                    .insert(sp.partition, why.clone());
            }
        }
        if by_topic.is_empty() {
            match &stream {
                // No offsets reported yet: every partition unknown (noted per partition).
                Some(t) if !t.contains(['*', '^', '$', '(', '[', '|', '+', '?', '\\']) => {
                    by_topic.insert(t.clone(), SiteOffsets::default());
                }
                _ => {
                    out.notes.push(
                        "the supervisor reports no offsets yet: records behind unknown".to_string(),
                    );
                    return out;
                }
            }
        }
        if !ends.from_snapshot.is_empty() {
            let age = status
                .payload
                .offsets_last_updated_ms()
                .map(|t| format!("{}s old", ((now_ms - t).max(0)) / 1000))
                .unwrap_or_else(|| "of unknown age".to_string());
            out.notes.push(format!(
                "{} partition(s) judged from the supervisor's offset snapshot ({age}; Druid refreshes it every offsetFetchPeriod, 30s by default)",
                ends.from_snapshot.len()
            ));
        }
        for (site_topic, offsets) in by_topic {
            let Some(source_topic) =
                source_topic_of(&kafka.target_template, &site_topic, &kafka.topics)
            else {
                out.notes.push(format!(
                    "stream \"{site_topic}\" does not match target_topic \"{}\": records behind unknown",
                    kafka.target_template
                ));
                out.partitions.clear();
                out.records_behind = None;
                return out;
            };
            let route = KafkaRoute {
                source_name: kafka.source_name.clone(),
                source: kafka.cluster.clone(),
                source_topic,
                site_name: site.to_string(),
                site: site_cluster.clone(),
                site_topic: site_topic.clone(),
            };
            match self
                .offsets
                .progress(&route, &offsets, now_ms, self.kafka_timeout)
                .await
            {
                Ok(parts) => {
                    for part in &parts {
                        if let Some(note) = &part.note {
                            out.notes
                                .push(format!("{}/{}: {note}", part.topic, part.partition));
                        }
                    }
                    out.partitions.extend(parts);
                }
                Err(e) => {
                    out.notes
                        .push(format!("records behind unknown for {site_topic}: {e}"));
                    return Progress {
                        notes: out.notes,
                        waiting_ms: druid_lag,
                        ..Progress::default()
                    };
                }
            }
        }
        out.records_behind = out
            .partitions
            .iter()
            .map(|p| p.records_behind)
            .sum::<Option<i64>>();
        if out.records_behind.is_none() && !out.partitions.is_empty() {
            let known: Vec<i64> = out
                .partitions
                .iter()
                .filter_map(|p| p.records_behind)
                .collect();
            out.notes.push(format!(
                "records behind known for {} of {} partition(s) ({} there): the total is unknown",
                known.len(),
                out.partitions.len(),
                known.iter().sum::<i64>()
            ));
        }
        out.waiting_ms = match out.records_behind {
            Some(0) => Some(0),
            _ => out
                .partitions
                .iter()
                .filter(|p| p.records_behind != Some(0))
                .map(|p| p.waiting_seconds.map(|w| (w * 1000.0) as i64))
                .collect::<Option<Vec<i64>>>()
                .and_then(|w| w.into_iter().max())
                .or(druid_lag),
        };
        out
    }
}

/// Druid's own time lag, when its Kafka supervisor reports one (`aggregateLagMillis`, else
/// the largest `minimumLagMillis`; docs/api-reference/supervisor-api.md): the site's Druid
/// lag only (mirror lag not included). Negative values are not lag.
fn druid_lag_ms(p: &crate::druid::SupervisorPayload) -> Option<i64> {
    p.aggregate_lag_millis
        .or_else(|| p.minimum_lag_millis.values().copied().max())
        .filter(|l| *l >= 0)
}

/// Per site, how rows are counted, and where that came from (`configured`, `spec`,
/// `default`). A site whose spec cannot be read (a Router that does not proxy the supervisor
/// API, say) counts as the sites whose spec was read, when they agree: the sites are fed the
/// same records, and counting one site's rows one way and another's the other way would read
/// as divergence. With no spec read anywhere, `COUNT(*)`.
fn choose_counting(
    configured: &Option<CountExpr>,
    gathered: &[Result<Gathered, SiteError>],
) -> (Vec<Counting>, &'static str) {
    if let Some(c) = configured {
        return (
            vec![Counting::Expr(c.clone()); gathered.len()],
            "configured",
        );
    }
    let from_spec: Vec<Option<Counting>> = gathered
        .iter()
        .map(|g| {
            let spec = g.as_ref().ok()?.spec.as_ref()?;
            Some(match (spec.rollup, spec.count_metrics.first()) {
                (false, _) => Counting::Expr(CountExpr::Rows),
                (true, Some(metric)) => Counting::Expr(CountExpr::Sum(metric.clone())),
                (true, None) => Counting::Presence,
            })
        })
        .collect();
    let mut read = from_spec.iter().flatten();
    let Some(first) = read.next() else {
        return (
            vec![Counting::Expr(CountExpr::Rows); gathered.len()],
            "default",
        );
    };
    let agreed = read.all(|c| c == first).then(|| first.clone());
    let counting = from_spec
        .into_iter()
        .map(|c| {
            c.or_else(|| agreed.clone())
                .unwrap_or(Counting::Expr(CountExpr::Rows))
        })
        .collect();
    (counting, "spec")
}

fn counting_text(c: &Counting) -> String {
    match c {
        Counting::Expr(e) => e.sql(),
        Counting::Presence => "presence".to_string(),
    }
}

/// The count expression shown for a datasource: the one every site uses, else each site's.
fn datasource_count_text(names: &[String], counting: &[Counting]) -> String {
    if counting.contains(&Counting::Presence) {
        return "presence (time coverage)".to_string();
    }
    match counting.first() {
        Some(first) if counting.iter().all(|c| c == first) => counting_text(first),
        _ => names
            .iter()
            .zip(counting)
            .map(|(n, c)| format!("{n}: {}", counting_text(c)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}
