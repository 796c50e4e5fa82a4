//! Kafka supervisors: the part of the emulator that really ingests.
//!
//! Like Druid, a supervisor keeps its own offsets (no consumer-group commits): its consumer
//! assigns the topic's partitions explicitly from the stored offsets (or from the earliest /
//! latest offset for a partition it has not read yet, per `useEarliestOffset`), parses each
//! record as a JSON object, reads the `timestampSpec` column and stores the row. Offsets are
//! Druid-style: `currentOffsets[p]` is the next offset to read. Every refresh it reads the
//! topic's high watermarks (`latestOffsets`) so lag = high watermark - current offset.
//!
//! The consumer runs on a blocking thread per supervisor (`BaseConsumer::poll`); it stops on
//! its cancellation token (suspend keeps it alive but idle, update and terminate replace it).

use crate::error::SimError;
use crate::faults::Faults;
use crate::store::{Metric, Schema, Store};
use crate::time::{iso, Period, TimestampFormat};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The parts of a Kafka supervisor spec the emulator uses.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSpec {
    /// Supervisor id: `spec.id` / top-level `id` if given, else the datasource.
    pub id: String,
    pub datasource: String,
    pub topic: String,
    pub bootstrap: String,
    /// Extra librdkafka properties copied from `consumerProperties` (security.protocol, sasl.*).
    pub consumer_properties: BTreeMap<String, String>,
    pub timestamp_column: String,
    pub timestamp_format: TimestampFormat,
    pub use_earliest_offset: bool,
    /// Timestamp column, granularities, rollup, dimensions and metrics.
    pub schema: Schema,
    /// `ioConfig.taskDuration` in seconds (Druid's default PT1H).
    pub task_duration_secs: u64,
    /// The spec as posted, returned by `?full`.
    pub raw: Value,
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

impl KafkaSpec {
    /// Reads a spec as `POST /druid/indexer/v1/supervisor` receives it. Accepts the
    /// `{"type":"kafka","spec":{...}}` form and the older flat form (`dataSchema` at the top).
    pub fn from_json(raw: &Value) -> Result<KafkaSpec, SimError> {
        let bad = |m: &str| SimError::Spec(m.to_string());
        let ty = raw.get("type").and_then(Value::as_str).unwrap_or("kafka");
        if ty != "kafka" {
            return Err(SimError::Spec(format!(
                "type '{ty}' is not supported (lockstep-sim emulates Kafka supervisors only)"
            )));
        }
        let spec = raw.get("spec").unwrap_or(raw);
        let datasource = get(spec, &["dataSchema", "dataSource"])
            .and_then(Value::as_str)
            .ok_or_else(|| bad("spec.dataSchema.dataSource is required"))?
            .to_string();
        let io = spec
            .get("ioConfig")
            .ok_or_else(|| bad("spec.ioConfig is required"))?;
        let topic = io
            .get("topic")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("spec.ioConfig.topic is required (topicPattern is not supported)"))?
            .to_string();
        let props = io
            .get("consumerProperties")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("spec.ioConfig.consumerProperties is required"))?;
        let bootstrap = props
            .get("bootstrap.servers")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                bad("spec.ioConfig.consumerProperties[\"bootstrap.servers\"] is required")
            })?
            .to_string();
        let mut consumer_properties = BTreeMap::new();
        for (k, v) in props {
            if k == "security.protocol" || k.starts_with("sasl.") && k != "sasl.jaas.config" {
                if let Some(s) = v.as_str() {
                    consumer_properties.insert(k.clone(), s.to_string());
                }
            }
        }
        if let Some(fmt) = get(io, &["inputFormat", "type"]).and_then(Value::as_str) {
            if fmt != "json" {
                return Err(SimError::Spec(format!(
                    "spec.ioConfig.inputFormat.type '{fmt}' is not supported (json only)"
                )));
            }
        }
        let ts = get(spec, &["dataSchema", "timestampSpec"]);
        let timestamp_column = ts
            .and_then(|t| t.get("column"))
            .and_then(Value::as_str)
            .unwrap_or("timestamp")
            .to_string();
        let fmt = ts
            .and_then(|t| t.get("format"))
            .and_then(Value::as_str)
            .unwrap_or("auto");
        let timestamp_format = TimestampFormat::from_spec(fmt).ok_or_else(|| {
            SimError::Spec(format!(
                "spec.dataSchema.timestampSpec.format '{fmt}' is not supported (iso, millis, posix, auto)"
            ))
        })?;
        let gran = |field: &str| -> Result<Option<Period>, SimError> {
            match get(spec, &["dataSchema", "granularitySpec", field]) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(g)) if g.eq_ignore_ascii_case("NONE") => Ok(None),
                Some(Value::String(g)) => Period::parse_granularity(g).map(Some).ok_or_else(|| {
                    SimError::Spec(format!(
                        "granularitySpec.{field} '{g}' is not supported (fixed-length only)"
                    ))
                }),
                Some(Value::Object(o)) => {
                    let p = o.get("period").and_then(Value::as_str).unwrap_or("");
                    Period::parse_iso(p).map(Some).ok_or_else(|| {
                        SimError::Spec(format!(
                            "granularitySpec.{field} period '{p}' is not supported"
                        ))
                    })
                }
                Some(other) => Err(SimError::Spec(format!(
                    "granularitySpec.{field} {other} is not supported"
                ))),
            }
        };
        let segment_granularity = gran("segmentGranularity")?;
        let query_granularity = gran("queryGranularity")?;
        let rollup = get(spec, &["dataSchema", "granularitySpec", "rollup"])
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let dimensions = get(spec, &["dataSchema", "dimensionsSpec", "dimensions"])
            .and_then(Value::as_array)
            .filter(|d| !d.is_empty())
            .map(|d| {
                d.iter()
                    .filter_map(|x| match x {
                        Value::String(n) => Some(n.clone()),
                        other => other
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    })
                    .collect()
            });
        let mut metrics = Vec::new();
        if let Some(ms) = get(spec, &["dataSchema", "metricsSpec"]).and_then(Value::as_array) {
            for m in ms {
                let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
                let name = m
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let field = m
                    .get("fieldName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                match ty {
                    "count" if !name.is_empty() => metrics.push(Metric::Count { name }),
                    "longSum" | "doubleSum" | "floatSum"
                        if !name.is_empty() && !field.is_empty() =>
                    {
                        metrics.push(Metric::Sum {
                            name,
                            field,
                            double: ty != "longSum",
                        })
                    }
                    // Sketches, min/max...: not queryable here, so not stored.
                    _ => tracing::warn!(metric = %m, "metric type not emulated; ignored"),
                }
            }
        }
        let task_duration_secs = io
            .get("taskDuration")
            .and_then(Value::as_str)
            .and_then(Period::parse_iso)
            .map(|p| (p.millis / 1000) as u64)
            .unwrap_or(3600);
        let id = spec
            .get("id")
            .or_else(|| raw.get("id"))
            .and_then(Value::as_str)
            .unwrap_or(&datasource)
            .to_string();
        Ok(KafkaSpec {
            id,
            datasource,
            topic,
            bootstrap,
            consumer_properties,
            timestamp_column: timestamp_column.clone(),
            timestamp_format,
            use_earliest_offset: io
                .get("useEarliestOffset")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            schema: Schema {
                timestamp_column: timestamp_column.clone(),
                segment_granularity,
                query_granularity,
                rollup,
                dimensions,
                metrics,
            },
            task_duration_secs,
            raw: raw.clone(),
        })
    }
}

/// Mutable state of one supervisor.
#[derive(Debug, Default)]
struct State {
    spec: Option<KafkaSpec>,
    /// Partition -> next offset to read.
    current: BTreeMap<i32, i64>,
    /// Partition -> high watermark at the last refresh.
    latest: BTreeMap<i32, i64>,
    offsets_updated: Option<i64>,
    suspended: bool,
    connected_once: bool,
    consecutive_failures: u32,
    recent_errors: VecDeque<Value>,
    task_id: String,
    task_start: i64,
    starting_offsets: BTreeMap<i32, i64>,
    /// Bumped on reset/update: a consumer of an older generation stops storing.
    generation: u64,
    ingested: u64,
    unparseable: u64,
    thrown_away: u64,
}

/// One Kafka supervisor.
#[derive(Debug)]
pub struct Supervisor {
    id: String,
    state: Mutex<State>,
    cancel: Mutex<CancellationToken>,
}

/// Druid marks a supervisor unhealthy after this many consecutive failures
/// (`unhealthinessThreshold`, default 3).
const UNHEALTHY_AFTER: u32 = 3;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn new_task_id(ds: &str) -> String {
    use rand::Rng;
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(8)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("index_kafka_{ds}_{suffix}")
}

fn offsets_json(m: &BTreeMap<i32, i64>) -> Value {
    Value::Object(m.iter().map(|(p, o)| (p.to_string(), json!(o))).collect())
}

impl Supervisor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn spec(&self) -> Option<KafkaSpec> {
        self.lock().spec.clone()
    }

    fn state_names(&self, s: &State) -> (&'static str, &'static str, bool) {
        if s.suspended {
            ("SUSPENDED", "SUSPENDED", true)
        } else if s.consecutive_failures >= UNHEALTHY_AFTER {
            let detailed = if s.connected_once {
                "LOST_CONTACT_WITH_STREAM"
            } else {
                "UNABLE_TO_CONNECT_TO_STREAM"
            };
            ("UNHEALTHY_SUPERVISOR", detailed, false)
        } else if !s.connected_once {
            ("PENDING", "CONNECTING_TO_STREAM", true)
        } else {
            ("RUNNING", "RUNNING", true)
        }
    }

    /// `{ "id", "state", "detailedState", "healthy", "suspended" }` for `?state=true`.
    pub fn brief(&self) -> Value {
        let s = self.lock();
        let (state, detailed, healthy) = self.state_names(&s);
        json!({
            "id": self.id,
            "state": state,
            "detailedState": detailed,
            "healthy": healthy,
            "suspended": s.suspended,
            "type": "kafka",
            "source": s.spec.as_ref().map(|p| p.topic.clone()),
        })
    }

    /// The spec as Druid returns it (`GET .../{id}`, suspend/resume answers, `?full`):
    /// the posted spec with the current `suspended` flag.
    pub fn spec_json(&self) -> Value {
        let s = self.lock();
        let mut raw = s
            .spec
            .as_ref()
            .map(|p| p.raw.clone())
            .unwrap_or(Value::Null);
        if let Some(o) = raw.as_object_mut() {
            o.insert("suspended".into(), json!(s.suspended));
        }
        raw
    }

    pub fn healthy(&self) -> bool {
        let s = self.lock();
        self.state_names(&s).2
    }

    /// The `GET .../{id}/status` document.
    pub fn status(&self) -> Value {
        let s = self.lock();
        let (state, detailed, healthy) = self.state_names(&s);
        let Some(spec) = &s.spec else {
            return json!({ "id": self.id });
        };
        let lag: BTreeMap<i32, i64> = s
            .latest
            .iter()
            .map(|(p, hw)| {
                let cur = s.current.get(p).copied().unwrap_or(*hw);
                (*p, (hw - cur).max(0))
            })
            .collect();
        let aggregate: i64 = lag.values().sum();
        let now = now_ms();
        let elapsed = ((now - s.task_start) / 1000).max(0) as u64;
        let remaining = spec
            .task_duration_secs
            .saturating_sub(elapsed % spec.task_duration_secs.max(1));
        let active = if s.suspended {
            json!([])
        } else {
            json!([{
                "id": s.task_id,
                "startingOffsets": offsets_json(&s.starting_offsets),
                "startTime": iso(s.task_start),
                "remainingSeconds": remaining,
                "type": "ACTIVE",
                "currentOffsets": offsets_json(&s.current),
                "lag": offsets_json(&lag),
            }])
        };
        let known = s.offsets_updated.is_some();
        json!({
            "id": self.id,
            "generationTime": iso(now),
            "payload": {
                "dataSource": spec.datasource,
                "stream": spec.topic,
                "partitions": s.latest.len().max(s.current.len()),
                "replicas": 1,
                "durationSeconds": spec.task_duration_secs,
                "activeTasks": active,
                "publishingTasks": [],
                "latestOffsets": if known { offsets_json(&s.latest) } else { Value::Null },
                "minimumLag": if known { offsets_json(&lag) } else { Value::Null },
                "aggregateLag": if known { json!(aggregate) } else { Value::Null },
                "offsetsLastUpdated": s.offsets_updated.map(iso),
                "suspended": s.suspended,
                "healthy": healthy,
                "state": state,
                "detailedState": detailed,
                "recentErrors": s.recent_errors.iter().cloned().collect::<Vec<_>>(),
            }
        })
    }

    /// Rows stored, rows that did not parse, rows a drop fault swallowed.
    pub fn counts(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (s.ingested, s.unparseable, s.thrown_away)
    }

    fn record_error(&self, s: &mut State, class: &str, message: String) {
        s.recent_errors.push_back(json!({
            "timestamp": iso(now_ms()),
            "exceptionClass": class,
            "message": message,
            "streamException": true,
        }));
        while s.recent_errors.len() > 10 {
            s.recent_errors.pop_front();
        }
    }
}

/// All supervisors of one emulator.
#[derive(Debug)]
pub struct Supervisors {
    map: Mutex<BTreeMap<String, Arc<Supervisor>>>,
    store: Arc<Store>,
    faults: Faults,
    refresh: Duration,
}

impl Supervisors {
    pub(crate) fn new(store: Arc<Store>, faults: Faults, refresh: Duration) -> Supervisors {
        Supervisors {
            map: Mutex::new(BTreeMap::new()),
            store,
            faults,
            refresh,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Supervisor>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ids(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Supervisor>> {
        self.map().get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Supervisor>> {
        self.map().values().cloned().collect()
    }

    /// Creates or updates a supervisor from a spec and (re)starts its consumer. Stored
    /// offsets survive an update unless the topic changed (as in Druid).
    pub fn upsert(&self, spec: KafkaSpec) -> String {
        let id = spec.id.clone();
        let sup = {
            let mut map = self.map();
            map.entry(id.clone())
                .or_insert_with(|| {
                    Arc::new(Supervisor {
                        id: id.clone(),
                        state: Mutex::new(State::default()),
                        cancel: Mutex::new(CancellationToken::new()),
                    })
                })
                .clone()
        };
        {
            let mut s = sup.lock();
            if s.spec.as_ref().is_some_and(|old| old.topic != spec.topic) {
                s.current.clear();
                s.latest.clear();
                s.offsets_updated = None;
            }
            s.generation += 1;
            s.task_id = new_task_id(&spec.datasource);
            s.task_start = now_ms();
            s.starting_offsets = s.current.clone();
            // A spec posted with `"suspended": true` (as Druid's own suspend writes it).
            s.suspended = spec
                .raw
                .get("suspended")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            s.spec = Some(spec);
        }
        self.restart(&sup);
        id
    }

    fn restart(&self, sup: &Arc<Supervisor>) {
        let token = CancellationToken::new();
        {
            let mut c = sup.cancel.lock().unwrap_or_else(|p| p.into_inner());
            c.cancel();
            *c = token.clone();
        }
        let sup = sup.clone();
        let store = self.store.clone();
        let faults = self.faults.clone();
        let refresh = self.refresh;
        tokio::task::spawn_blocking(move || consume(sup, store, faults, refresh, token));
    }

    pub fn suspend(&self, id: &str) -> Option<Value> {
        let sup = self.get(id)?;
        sup.lock().suspended = true;
        Some(sup.spec_json())
    }

    pub fn resume(&self, id: &str) -> Option<Value> {
        let sup = self.get(id)?;
        {
            let mut s = sup.lock();
            if s.suspended {
                s.suspended = false;
                let ds = s
                    .spec
                    .as_ref()
                    .map(|p| p.datasource.clone())
                    .unwrap_or_default();
                s.task_id = new_task_id(&ds);
                s.task_start = now_ms();
                s.starting_offsets = s.current.clone();
            }
        }
        Some(sup.spec_json())
    }

    /// Hard reset: forgets stored offsets; reading restarts at the earliest or latest offset.
    pub fn reset(&self, id: &str) -> Option<()> {
        let sup = self.get(id)?;
        {
            let mut s = sup.lock();
            s.current.clear();
            s.starting_offsets.clear();
            s.generation += 1;
            s.recent_errors.clear();
            s.consecutive_failures = 0;
        }
        self.restart(&sup);
        Some(())
    }

    /// Stops and removes a supervisor (its data stays).
    pub fn terminate(&self, id: &str) -> Option<()> {
        let sup = self.map().remove(id)?;
        sup.cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancel();
        Some(())
    }

    /// Stops every consumer.
    pub fn shutdown(&self) {
        for sup in self.all() {
            sup.cancel
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .cancel();
        }
    }
}

/// The consumer loop of one supervisor generation.
fn consume(
    sup: Arc<Supervisor>,
    store: Arc<Store>,
    faults: Faults,
    refresh: Duration,
    cancel: CancellationToken,
) {
    let (spec, generation) = {
        let s = sup.lock();
        match &s.spec {
            Some(spec) => (spec.clone(), s.generation),
            None => return,
        }
    };
    let span = tracing::info_span!("supervisor", id = %sup.id, topic = %spec.topic);
    let _g = span.enter();
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &spec.bootstrap)
        .set("group.id", format!("lockstep-sim-{}", sup.id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("socket.timeout.ms", "10000");
    for (k, v) in &spec.consumer_properties {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer = match cfg.create() {
        Ok(c) => c,
        Err(e) => {
            let mut s = sup.lock();
            s.consecutive_failures = UNHEALTHY_AFTER;
            sup.record_error(
                &mut s,
                "org.apache.kafka.common.KafkaException",
                e.to_string(),
            );
            return;
        }
    };
    // Offsets are refreshed by their own thread and client: metadata and watermark requests
    // can take long, and must neither hold up consumption nor wait behind it.
    {
        let (sup, spec, cancel, cfg) = (sup.clone(), spec.clone(), cancel.clone(), cfg.clone());
        std::thread::spawn(move || refresh_offsets(sup, spec, generation, cfg, refresh, cancel));
    }
    let mut assigned: Vec<i32> = Vec::new();
    while !cancel.is_cancelled() {
        let (suspended, current) = {
            let s = sup.lock();
            if s.generation != generation {
                return;
            }
            (s.suspended, s.current.clone())
        };
        if suspended || faults.is_paused(&sup.id) || current.is_empty() {
            if !assigned.is_empty() {
                let _ = consumer.unassign();
                assigned.clear();
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let parts: Vec<i32> = current.keys().copied().collect();
        if parts != assigned {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &current {
                if let Err(e) = tpl.add_partition_offset(&spec.topic, *p, Offset::Offset(*o)) {
                    tracing::warn!(partition = p, error = %e, "cannot assign");
                }
            }
            if let Err(e) = consumer.assign(&tpl) {
                tracing::warn!(error = %e, "assign failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            assigned = parts;
        }
        // Up to a batch of records per pass, then look at the switches again.
        for i in 0..1000 {
            let wait = if i == 0 {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            match consumer.poll(wait) {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "poll error");
                    break;
                }
                Some(Ok(m)) => {
                    let p = m.partition();
                    let off = m.offset();
                    let payload = m.payload().unwrap_or_default();
                    let parsed = serde_json::from_slice::<serde_json::Map<String, Value>>(payload)
                        .ok()
                        .and_then(|row| {
                            let ts = spec
                                .timestamp_format
                                .parse(row.get(&spec.timestamp_column)?)?;
                            Some((ts, row))
                        });
                    let mut s = sup.lock();
                    if s.generation != generation {
                        return;
                    }
                    // Skip what was already read (a re-assign can replay).
                    if s.current.get(&p).is_some_and(|c| off < *c) {
                        continue;
                    }
                    match parsed {
                        Some((ts, row)) => {
                            if store.ingest(
                                &spec.datasource,
                                &spec.schema,
                                ts,
                                &row,
                                payload.len() as u64,
                            ) {
                                s.ingested += 1;
                            } else {
                                s.thrown_away += 1;
                            }
                        }
                        None => s.unparseable += 1,
                    }
                    s.current.insert(p, off + 1);
                }
            }
        }
    }
}

/// Reads partitions and high watermarks every `refresh` until cancelled or replaced;
/// sets start offsets for partitions never read (Druid: earliest or latest).
fn refresh_offsets(
    sup: Arc<Supervisor>,
    spec: KafkaSpec,
    generation: u64,
    cfg: ClientConfig,
    refresh: Duration,
    cancel: CancellationToken,
) {
    let client: BaseConsumer = match cfg.create() {
        Ok(c) => c,
        Err(e) => {
            let mut s = sup.lock();
            s.consecutive_failures = UNHEALTHY_AFTER;
            sup.record_error(
                &mut s,
                "org.apache.kafka.common.KafkaException",
                e.to_string(),
            );
            return;
        }
    };
    let timeout = Duration::from_secs(5);
    while !cancel.is_cancelled() {
        let started = std::time::Instant::now();
        match watermarks(&client, &spec.topic, timeout) {
            Ok(wm) => {
                let mut s = sup.lock();
                if s.generation != generation {
                    return;
                }
                s.connected_once = true;
                s.consecutive_failures = 0;
                s.latest = wm.iter().map(|(p, (_, hi))| (*p, *hi)).collect();
                s.offsets_updated = Some(now_ms());
                for (p, (lo, hi)) in &wm {
                    if !s.current.contains_key(p) {
                        let start = if spec.use_earliest_offset { *lo } else { *hi };
                        s.current.insert(*p, start);
                        s.starting_offsets.entry(*p).or_insert(start);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read topic offsets");
                let mut s = sup.lock();
                if s.generation != generation {
                    return;
                }
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                sup.record_error(
                    &mut s,
                    "org.apache.kafka.common.errors.TimeoutException",
                    format!(
                        "Timeout while fetching offsets of topic [{}]: {e}",
                        spec.topic
                    ),
                );
            }
        }
        // Sleep out the rest of the period in small steps so cancellation is prompt.
        while !cancel.is_cancelled() && started.elapsed() < refresh {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Partition -> (low, high) watermark of every partition of `topic`.
fn watermarks(
    c: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>, rdkafka::error::KafkaError> {
    let md = c.fetch_metadata(Some(topic), timeout)?;
    let mut out = BTreeMap::new();
    for t in md.topics() {
        if let Some(e) = t.error() {
            return Err(rdkafka::error::KafkaError::MetadataFetch(e.into()));
        }
        for p in t.partitions() {
            let wm = c.fetch_watermarks(topic, p.id(), timeout)?;
            out.insert(p.id(), wm);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        let raw = json!({
            "type": "kafka",
            "spec": {
                "dataSchema": {
                    "dataSource": "clicks",
                    "timestampSpec": {"column": "__time", "format": "iso"},
                    "granularitySpec": {"segmentGranularity": "DAY"}
                },
                "ioConfig": {
                    "topic": "clicks",
                    "inputFormat": {"type": "json"},
                    "consumerProperties": {"bootstrap.servers": "127.0.0.1:9092", "sasl.jaas.config": "x"},
                    "useEarliestOffset": true,
                    "taskDuration": "PT10M"
                }
            }
        });
        let s = KafkaSpec::from_json(&raw).unwrap();
        assert_eq!(s.id, "clicks");
        assert_eq!(s.timestamp_format, TimestampFormat::Iso);
        assert_eq!(s.schema.segment_granularity.unwrap().millis, 86_400_000);
        assert!(s.schema.rollup, "Druid's default");
        assert_eq!(s.schema.query_granularity, None);
        assert_eq!(s.task_duration_secs, 600);
        assert!(s.use_earliest_offset);
        assert!(
            s.consumer_properties.is_empty(),
            "Java-only properties are not passed on"
        );
        let mut bad = raw.clone();
        bad["spec"]["ioConfig"]["inputFormat"]["type"] = json!("csv");
        assert!(KafkaSpec::from_json(&bad)
            .unwrap_err()
            .to_string()
            .contains("csv"));
        let mut bad = raw;
        bad["spec"]["ioConfig"]
            .as_object_mut()
            .unwrap()
            .remove("topic");
        assert!(KafkaSpec::from_json(&bad)
            .unwrap_err()
            .to_string()
            .contains("topic"));
    }
}
