//! The offset map for drift: a site's Druid progress (supervisor offsets, in SITE offsets)
//! expressed in SOURCE offsets, by reading the `lockstep.src.offset` header of the last
//! record Druid ingested from each site partition, and comparing with the source topic's high
//! watermark: records behind = source_hw - (source offset of the last ingested record + 1).
//!
//! It reads (one record per partition and poll, cached by site offset) and never writes or
//! commits. rdkafka calls block, so they run on the blocking pool.
//!
//! The map never goes backwards ([`Floors`]): a record that repeats an earlier source offset (a
//! paused former owner's late write, a duplicate at the site) would map a later site offset
//! to a LOWER source offset and make "records behind" jump up. Per site partition the points
//! (site offset, source offset) read so far are kept; a lookup whose source offset is below
//! one read at a lower site offset takes that higher one instead, and is counted and noted
//! ("site offset X maps back to source offset Y: duplicates at the site"). Site offsets are
//! taken as stable, as the read cache already does (a recreated site topic needs a restart).

use lockstep_config::headers::{SRC_CLUSTER, SRC_OFFSET};
use lockstep_config::KafkaCluster;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most cached (site offset -> source offset) entries before the cache starts afresh.
const CACHE_LIMIT: usize = 100_000;

/// Most (site offset, source offset) points kept per site partition to keep the map monotonic.
const FLOOR_POINTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("{cluster}: {what}: {message}")]
    Kafka {
        cluster: String,
        what: String,
        message: String,
    },
    #[error("{cluster}: {topic}/{partition}@{offset}: the record carries no {SRC_OFFSET} header from source \"{source_name}\"")]
    NoHeader {
        cluster: String,
        topic: String,
        partition: i32,
        offset: i64,
        source_name: String,
    },
}

/// Where a datasource's data comes from in Kafka: a source topic mirrored into a site topic.
#[derive(Debug, Clone)]
pub struct KafkaRoute {
    /// The source's name (what the mirror writes in `lockstep.src.cluster`).
    pub source_name: String,
    pub source: KafkaCluster,
    pub source_topic: String,
    pub site_name: String,
    pub site: KafkaCluster,
    pub site_topic: String,
}

/// One partition's progress in both coordinates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionProgress {
    /// The site topic (several with a `topicPattern` supervisor).
    pub topic: String,
    pub partition: i32,
    /// Next site offset Druid will ingest (from the supervisor), if it reported one.
    pub site_offset: Option<i64>,
    /// Next source offset Druid will ingest (through the offset map).
    pub source_offset: Option<i64>,
    /// The source partition's high watermark (None when it could not be read).
    pub source_high_watermark: Option<i64>,
    /// `source_high_watermark - source_offset`; None when unknown (see `note`).
    pub records_behind: Option<i64>,
    /// How long the oldest source record not yet in the site's Druid has waited (now minus
    /// its Kafka timestamp); 0 when caught up, None when unknown.
    pub waiting_seconds: Option<f64>,
    /// Next source offset the mirror will copy into the site topic (from the source-offset
    /// header of the site topic's last record).
    pub mirrored_source_offset: Option<i64>,
    /// Source records not yet mirrored into the site topic: the part of `records_behind`
    /// that is mirror lag rather than Druid ingestion lag.
    pub mirror_behind: Option<i64>,
    /// Lookups of this partition, since the coordinator started, whose site record mapped
    /// back to a lower source offset than an earlier site offset did (duplicates at the site):
    /// the higher source offset was used instead.
    pub maps_back: u64,
    /// Why a figure is unknown, or this check's lookups that mapped back ("site offset X maps
    /// back to source offset Y: duplicates at the site").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the supervisor says of one site topic's partitions: the next site offset Druid will
/// ingest where known, and why it is not known elsewhere.
#[derive(Debug, Clone, Default)]
pub struct SiteOffsets {
    pub ingested_end: BTreeMap<i32, i64>,
    pub unknown: BTreeMap<i32, String>,
}

/// A lookup through [`Floors::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// The source offset to use: the one read, or a higher one read at a lower site offset.
    pub source: i64,
    /// Set when the read one was lower: (site offset, the source offset read there).
    pub maps_back: Option<(i64, i64)>,
}

/// Per site partition, the points (site offset, source offset) read so far, to keep the map
/// from going backwards (module doc). Pure; [`OffsetMap`] keeps one per (cluster, topic,
/// partition) with a count of lookups that went back.
#[derive(Debug, Default, Clone)]
pub struct Floors {
    points: BTreeMap<i64, i64>,
    /// Lookups that mapped back.
    pub maps_back: u64,
}

impl Floors {
    /// Records that site offset `site` maps to source offset `source` and returns the source
    /// offset to use: never below one read at a lower site offset.
    pub fn settle(&mut self, site: i64, source: i64) -> Settled {
        let floor = self.points.range(..site).map(|(_, &s)| s).max();
        self.points.insert(site, source);
        if self.points.len() > FLOOR_POINTS {
            self.points.pop_first();
        }
        match floor {
            Some(f) if f > source => {
                self.maps_back += 1;
                Settled {
                    source: f,
                    maps_back: Some((site, source)),
                }
            }
            _ => Settled {
                source,
                maps_back: None,
            },
        }
    }
}

/// Kafka clients per cluster plus the (site, topic, partition, offset) -> source offset cache.
#[derive(Default)]
pub struct OffsetMap {
    consumers: Mutex<HashMap<String, Arc<Mutex<BaseConsumer>>>>,
    /// Also Kafka timestamps of source records (key prefixed `ts|`; -1: none).
    cache: Mutex<HashMap<(String, String, i32, i64), i64>>,
    /// (site cluster, site topic, partition) -> points read, to keep the map monotonic.
    floors: Mutex<HashMap<(String, String, i32), Floors>>,
}

impl OffsetMap {
    pub fn new() -> Self {
        Self::default()
    }

    fn consumer(
        &self,
        name: &str,
        cluster: &KafkaCluster,
    ) -> Result<Arc<Mutex<BaseConsumer>>, OffsetError> {
        let key = format!("{name}|{}", cluster.bootstrap_servers);
        let mut map = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &cluster.bootstrap_servers);
        for (k, v) in &cluster.properties {
            cfg.set(k, v.expose());
        }
        cfg.set("group.id", "lockstep-drift")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // Each read re-assigns one partition at a record that exists. With the default
            // 500 ms, the fetch still parked at the previous partition's end delays every
            // read by half a second (16 reads for 4 partitions at 2 sites: 8 s per check).
            .set("fetch.wait.max.ms", "10");
        let consumer: BaseConsumer = cfg.create().map_err(|e| OffsetError::Kafka {
            cluster: name.to_string(),
            what: "creating a consumer".to_string(),
            message: e.to_string(),
        })?;
        let c = Arc::new(Mutex::new(consumer));
        map.insert(key, c.clone());
        Ok(c)
    }

    /// Progress per partition of the route's source topic, given what the supervisor says
    /// of the site topic. A partition the supervisor reports nothing for, a site offset past
    /// the site topic's end, or a read that fails is unknown for that partition only, with a
    /// note; the others keep their figures. Only a failure to list the source topic's
    /// partitions fails the whole route.
    pub async fn progress(
        self: &Arc<Self>,
        route: &KafkaRoute,
        site: &SiteOffsets,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<Vec<PartitionProgress>, OffsetError> {
        let this = self.clone();
        let route = route.clone();
        let site = site.clone();
        tokio::task::spawn_blocking(move || this.progress_blocking(&route, &site, now_ms, timeout))
            .await
            .map_err(|e| OffsetError::Kafka {
                cluster: "offset map".to_string(),
                what: "blocking task".to_string(),
                message: e.to_string(),
            })?
    }

    fn progress_blocking(
        &self,
        route: &KafkaRoute,
        site_offsets: &SiteOffsets,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<Vec<PartitionProgress>, OffsetError> {
        let source_label = format!("source {}", route.source_name);
        let site_label = format!("site {}", route.site_name);
        let source = self.consumer(&source_label, &route.source)?;
        let site = self.consumer(&site_label, &route.site)?;
        let partitions: Vec<i32> = {
            let c = source.lock().unwrap_or_else(|p| p.into_inner());
            let md = c
                .fetch_metadata(Some(&route.source_topic), timeout)
                .map_err(kerr(
                    &source_label,
                    format!("metadata of {}", route.source_topic),
                ))?;
            md.topics()
                .iter()
                .filter(|t| t.name() == route.source_topic)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect()
        };
        let mut out = Vec::new();
        for p in partitions {
            let part = self
                .partition(
                    route,
                    (&source, &source_label),
                    (&site, &site_label),
                    site_offsets,
                    p,
                    now_ms,
                    timeout,
                )
                .unwrap_or_else(|e| PartitionProgress {
                    topic: route.site_topic.clone(),
                    partition: p,
                    site_offset: site_offsets.ingested_end.get(&p).copied(),
                    source_offset: None,
                    source_high_watermark: None,
                    records_behind: None,
                    waiting_seconds: None,
                    mirrored_source_offset: None,
                    mirror_behind: None,
                    maps_back: 0,
                    note: Some(format!("unknown: {e}")),
                });
            out.push(part);
        }
        Ok(out)
    }

    /// One partition's progress; an error here leaves only this partition unknown.
    #[allow(clippy::too_many_arguments)]
    fn partition(
        &self,
        route: &KafkaRoute,
        (source, source_label): (&Mutex<BaseConsumer>, &str),
        (site, site_label): (&Mutex<BaseConsumer>, &str),
        site_offsets: &SiteOffsets,
        p: i32,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<PartitionProgress, OffsetError> {
        let watermarks = |consumer: &Mutex<BaseConsumer>, label: &str, topic: &str| {
            consumer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fetch_watermarks(topic, p, timeout)
                .map_err(kerr(label, format!("watermarks of {topic}/{p}")))
        };
        let (source_low, source_hw) = watermarks(source, source_label, &route.source_topic)?;
        let (site_low, site_hw) = watermarks(site, site_label, &route.site_topic)?;
        let mut notes = Vec::new();
        let mut maps_back = 0;
        let mut settle = |site_offset: i64, source: i64, notes: &mut Vec<String>| {
            let key = (
                route.site.bootstrap_servers.clone(),
                route.site_topic.clone(),
                p,
            );
            let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
            let floor = floors.entry(key).or_default();
            let settled = floor.settle(site_offset, source);
            if let Some((at, read)) = settled.maps_back {
                notes.push(format!(
                    "site offset {at} maps back to source offset {read}: duplicates at the site (source offset {} used)",
                    settled.source
                ));
            }
            maps_back = floor.maps_back;
            settled.source
        };
        let mirrored_source_offset = if site_hw <= site_low {
            None
        } else {
            let read = self.source_offset_of(site, site_label, route, p, site_hw - 1, timeout)?;
            Some(settle(site_hw - 1, read, &mut notes) + 1)
        };
        let site_offset = site_offsets.ingested_end.get(&p).copied();
        let source_offset = match site_offset {
            // The supervisor reports no usable offset: unknown, never "nothing ingested".
            None => {
                notes.push(
                    site_offsets
                        .unknown
                        .get(&p)
                        .cloned()
                        .unwrap_or_else(|| "the supervisor reports no offset".to_string()),
                );
                None
            }
            // Checked before any read: a read past the end would wait out the timeout for
            // a record that does not exist.
            Some(end) if end > site_hw => {
                notes.push(format!(
                    "the supervisor's offset {end} is past the site topic's end {site_hw} (topic recreated, or offsets from another Kafka cluster)"
                ));
                None
            }
            Some(end) if end < 0 => {
                notes.push(format!("the supervisor's offset {end} is negative"));
                None
            }
            Some(0) => Some(source_low),
            Some(end) => {
                let read = self.source_offset_of(site, site_label, route, p, end - 1, timeout)?;
                Some(settle(end - 1, read, &mut notes) + 1)
            }
        };
        let records_behind = source_offset.map(|s| (source_hw - s).max(0));
        // The oldest record not yet ingested is the one at `source_offset`.
        let waiting_seconds = match (records_behind, source_offset) {
            (Some(0), _) => Some(0.0),
            (Some(_), Some(first)) => {
                match self.timestamp_of(
                    source,
                    source_label,
                    &route.source_topic,
                    p,
                    first.max(source_low),
                    timeout,
                ) {
                    Ok(Some(ts)) => Some(((now_ms - ts).max(0)) as f64 / 1000.0),
                    Ok(None) => None,
                    Err(e) => {
                        notes.push(format!("waiting time unknown: {e}"));
                        None
                    }
                }
            }
            _ => None,
        };
        if notes.iter().any(|n| n.contains("maps back")) {
            tracing::warn!(
                site = %route.site_name,
                topic = %route.site_topic,
                partition = p,
                notes = %notes.join("; "),
                "offset map: a later site record repeats an earlier source offset (duplicates at the site)"
            );
        }
        Ok(PartitionProgress {
            topic: route.site_topic.clone(),
            partition: p,
            site_offset,
            source_offset,
            source_high_watermark: Some(source_hw),
            records_behind,
            waiting_seconds,
            mirrored_source_offset,
            mirror_behind: Some((source_hw - mirrored_source_offset.unwrap_or(source_low)).max(0)),
            maps_back,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    }

    /// The Kafka timestamp (ms) of the record at `offset` of a source partition, or None when
    /// it carries none. Cached by position: a record's timestamp never changes.
    fn timestamp_of(
        &self,
        consumer: &Mutex<BaseConsumer>,
        label: &str,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> Result<Option<i64>, OffsetError> {
        let key = (format!("ts|{label}"), topic.to_string(), partition, offset);
        if let Some(v) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok((*v >= 0).then_some(*v));
        }
        let record = read_at(consumer, label, topic, partition, offset, timeout)?;
        let ts = record.timestamp.unwrap_or(-1);
        self.remember(key, ts);
        Ok(record.timestamp)
    }

    fn remember(&self, key: (String, String, i32, i64), value: i64) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, value);
    }

    /// The source offset recorded in the site record at `offset`.
    fn source_offset_of(
        &self,
        site: &Mutex<BaseConsumer>,
        site_label: &str,
        route: &KafkaRoute,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> Result<i64, OffsetError> {
        let key = (
            route.site.bootstrap_servers.clone(),
            route.site_topic.clone(),
            partition,
            offset,
        );
        if let Some(v) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(*v);
        }
        let record = read_at(
            site,
            site_label,
            &route.site_topic,
            partition,
            offset,
            timeout,
        )?;
        // A record after `offset` (a gap from compaction or a control record) stands in for
        // the one before it.
        let shift = record.offset - offset;
        let value = record
            .source_offset
            .filter(|(_, cluster)| cluster.as_deref() == Some(route.source_name.as_str()))
            .map(|(v, _)| v - shift)
            .ok_or_else(|| OffsetError::NoHeader {
                cluster: site_label.to_string(),
                topic: route.site_topic.clone(),
                partition,
                offset,
                source_name: route.source_name.clone(),
            })?;
        self.remember(key, value);
        Ok(value)
    }
}

/// `kerr(cluster, what)` maps a Kafka error to an [`OffsetError`] naming both.
fn kerr(cluster: &str, what: String) -> impl FnOnce(rdkafka::error::KafkaError) -> OffsetError {
    let cluster = cluster.to_string();
    move |e| OffsetError::Kafka {
        cluster,
        what,
        message: e.to_string(),
    }
}

/// What [`read_at`] found.
struct ReadRecord {
    /// The record's own offset (at or after the one asked for).
    offset: i64,
    /// Kafka timestamp, ms.
    timestamp: Option<i64>,
    /// The `lockstep.src.offset` header and the `lockstep.src.cluster` beside it.
    source_offset: Option<(i64, Option<String>)>,
}

/// Reads the first record at or after `offset` of one partition, within `timeout`.
fn read_at(
    consumer: &Mutex<BaseConsumer>,
    label: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> Result<ReadRecord, OffsetError> {
    let err = |what: String, message: String| OffsetError::Kafka {
        cluster: label.to_string(),
        what,
        message,
    };
    let what = format!("reading {topic}/{partition}@{offset}");
    let consumer = consumer.lock().unwrap_or_else(|p| p.into_inner());
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|e| err(what.clone(), e.to_string()))?;
    consumer
        .assign(&tpl)
        .map_err(|e| err(what.clone(), e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = consumer.unassign();
            return Err(err(what, "timed out".to_string()));
        }
        match consumer.poll(left.min(Duration::from_millis(200))) {
            Some(Ok(m))
                if m.topic() == topic && m.partition() == partition && m.offset() >= offset =>
            {
                let mut value = None;
                let mut cluster = None;
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        match header.key {
                            SRC_OFFSET => {
                                value = header
                                    .value
                                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                            }
                            SRC_CLUSTER => {
                                cluster = header
                                    .value
                                    .and_then(|v| std::str::from_utf8(v).ok())
                                    .map(str::to_string)
                            }
                            _ => {}
                        }
                    }
                }
                break ReadRecord {
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                    source_offset: value.map(|v| (v, cluster)),
                };
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => {
                let _ = consumer.unassign();
                return Err(err(what, e.to_string()));
            }
        }
    };
    let _ = consumer.unassign();
    Ok(found)
}

/// The source topic a site topic mirrors, from the flow's `target_topic` template
/// (`{topic}` stands for the source topic).
pub fn source_topic_of(template: &str, site_topic: &str, listed: &[String]) -> Option<String> {
    match template.split_once("{topic}") {
        Some((prefix, suffix)) => site_topic
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        // No placeholder: a one-topic flow.
        None => (template == site_topic && listed.len() == 1).then(|| listed[0].clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_never_goes_backwards() {
        let mut f = Floors::default();
        assert_eq!(f.settle(100, 1000).source, 1000);
        assert_eq!(f.settle(120, 1020).source, 1020);
        // A zombie's duplicate at site offset 130 repeats source offset 950.
        let s = f.settle(130, 950);
        assert_eq!(
            s,
            Settled {
                source: 1020,
                maps_back: Some((130, 950))
            }
        );
        assert_eq!(f.maps_back, 1);
        // A lookup below every higher point is taken as read (Druid behind the mirror).
        assert_eq!(f.settle(110, 1010).maps_back, None);
        // Past the duplicates the map goes on.
        assert_eq!(f.settle(200, 1090).source, 1090);
        assert_eq!(f.maps_back, 1);
        for i in 0..(FLOOR_POINTS as i64 * 2) {
            f.settle(300 + i, 2000 + i);
        }
        assert_eq!(f.points.len(), FLOOR_POINTS);
    }

    #[test]
    fn source_topic_from_template() {
        assert_eq!(
            source_topic_of("{topic}", "clicks", &[]),
            Some("clicks".into())
        );
        assert_eq!(
            source_topic_of("mirror.{topic}.v1", "mirror.clicks.v1", &[]),
            Some("clicks".into())
        );
        assert_eq!(source_topic_of("mirror.{topic}", "other", &[]), None);
        assert_eq!(
            source_topic_of("local", "local", &["up".into()]),
            Some("up".into())
        );
    }
}
