//! The Druid answers lockstep reads, shaped as Apache Druid writes them: SQL object rows for
//! `sys.segments` and per-bucket counts, and the supervisor list and status payloads. Fields
//! lockstep does not use are ignored; numbers are read leniently where SQL may widen them (a
//! `SUM` may come back as `12.0`, a `num_rows` as null).
//!
//! Sources (apache/druid): docs/api-reference/sql-api.md (result format `object`),
//! docs/querying/sql-metadata-tables.md (`sys.segments`), docs/api-reference/supervisor-api.md
//! (supervisor list and status samples), indexing-service/.../seekablestream/supervisor/
//! SeekableStreamSupervisorReportPayload.java and TaskReportData.java (payload fields),
//! extensions-core/kafka-indexing-service/.../KafkaSupervisor.java (how lags are computed).

use crate::partition::{offsets, Offsets, StreamPartition};
use crate::time::parse_time;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A number that may arrive as an integer, a float, a numeric string or null.
fn lenient_number(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(Some(i)),
            None => n
                .as_f64()
                .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                .map(|f| Some(f.round() as i64))
                .ok_or_else(|| format!("number out of range: {n}")),
        },
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && f.abs() < 9.2e18)
            .map(|f| Some(f.round() as i64))
            .ok_or_else(|| format!("not a number: {s:?}")),
        other => Err(format!("expected a number, got {other}")),
    }
}

/// A lenient number; null reads as 0 (a `SUM` over nothing, a `num_rows` not yet known).
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    lenient_number(&v)
        .map(|n| n.unwrap_or(0))
        .map_err(serde::de::Error::custom)
}

/// A lenient number; null stays null.
fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    lenient_number(&v).map_err(serde::de::Error::custom)
}

/// One row of the `sys.segments` query grouped by interval.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SegmentInterval {
    /// Plain strings in `sys.segments`; they include the eternity interval
    /// `-146136543-09-08T08:23:32.096Z/146140482-04-24T15:36:27.903Z`, which does not parse
    /// as RFC 3339 (callers skip what [`crate::parse_time`] refuses).
    pub start: String,
    pub end: String,
    /// `SUM("num_rows")`: null (read as 0) when no segment is loaded yet
    /// (docs/querying/sql-metadata-tables.md: `num_rows` is 0/unknown until loaded).
    #[serde(deserialize_with = "lenient_i64")]
    pub rows: i64,
    #[serde(deserialize_with = "lenient_i64", default)]
    pub segments: i64,
    /// `SUM("is_available")`: how many of the interval's segments some server serves
    /// (`is_available` is a 0/1 long in `sys.segments`). `None` when the query does not
    /// select it or SQL returns null.
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub available: Option<i64>,
}

/// One row of the per-bucket count query.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct BucketRow {
    pub bucket: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub rows: i64,
}

/// `SELECT MAX(__time) AS "latest"`: null for an empty datasource (SQL-compatible null
/// handling, docs/querying/sql-data-types.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LatestRow {
    pub latest: Option<String>,
}

/// One entry of `GET /druid/indexer/v1/supervisor?state=true` (supervisor-api.md, "Get an
/// array of supervisor states").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorState {
    pub id: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub detailed_state: Option<String>,
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub suspended: Option<bool>,
}

/// `GET /druid/indexer/v1/supervisor/{id}/status` (supervisor-api.md, "Get supervisor status").
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorStatus {
    pub id: String,
    #[serde(default)]
    pub generation_time: Option<String>,
    pub payload: SupervisorPayload,
}

/// The status payload of a Kafka supervisor (KafkaSupervisorReportPayload, which extends
/// SeekableStreamSupervisorReportPayload). The class is `@JsonInclude(NON_NULL)`:
/// `latestOffsets`, `minimumLag`, `aggregateLag` and `offsetsLastUpdated` are absent until
/// the supervisor has fetched the stream's end offsets (KafkaSupervisor.createReportPayload
/// passes null when `includeOffsets` is false); absent maps read as empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorPayload {
    #[serde(default)]
    pub data_source: Option<String>,
    /// The topic the supervisor reads; in multi-topic mode its `topicPattern`.
    #[serde(default)]
    pub stream: Option<String>,
    /// Number of stream partitions (across all topics in multi-topic mode).
    #[serde(default)]
    pub partitions: Option<i64>,
    #[serde(default)]
    pub replicas: Option<i64>,
    #[serde(default)]
    pub duration_seconds: Option<i64>,
    #[serde(default)]
    pub active_tasks: Vec<TaskReport>,
    #[serde(default)]
    pub publishing_tasks: Vec<TaskReport>,
    /// Partition -> end offset of the stream (the next offset to be written), a snapshot
    /// refreshed every `offsetFetchPeriod` (docs/ingestion/supervisor.md).
    #[serde(default, deserialize_with = "offsets")]
    pub latest_offsets: Offsets,
    /// Partition -> `latestOffsets` minus the highest current offset of the tasks
    /// (KafkaSupervisor.getRecordLagPerPartition). Raw: it can be negative when the snapshot
    /// is older than the tasks' offsets (docs/ingestion/supervisor.md: "the consumer lag per
    /// partition may be reported as negative values"), and is `Integer.MIN_VALUE`
    /// (-2147483648) when Druid had no end offset or no current offset for the partition.
    #[serde(default, deserialize_with = "offsets")]
    pub minimum_lag: Offsets,
    /// Partition -> lag in milliseconds (newer Druid; Kinesis always, Kafka since it gained
    /// time lag). Raw values.
    #[serde(default, deserialize_with = "offsets")]
    pub minimum_lag_millis: Offsets,
    /// Sum of the positive `minimumLag` values (`Math.max(x, 0)` in
    /// KafkaSupervisor.createReportPayload): always >= 0, so it hides negative lags.
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub aggregate_lag: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub aggregate_lag_millis: Option<i64>,
    /// When `latestOffsets`/`minimumLag` were taken (ISO-8601, Joda `DateTime`).
    #[serde(default)]
    pub offsets_last_updated: Option<String>,
    #[serde(default)]
    pub suspended: Option<bool>,
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub detailed_state: Option<String>,
    /// SupervisorStateManager.ExceptionEvent objects:
    /// `{timestamp, exceptionClass, message, streamException}`.
    #[serde(default)]
    pub recent_errors: Vec<Value>,
}

/// An ingestion task in a supervisor status (TaskReportData: `id`, `startingOffsets`,
/// `startTime`, `remainingSeconds`, `type`, `currentOffsets`, `lag`; the maps are omitted
/// when null, e.g. while the supervisor cannot reach the task).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub id: String,
    #[serde(default, deserialize_with = "offsets")]
    pub starting_offsets: Offsets,
    /// Partition -> next offset the task will read (site offsets).
    #[serde(default, deserialize_with = "offsets")]
    pub current_offsets: Offsets,
    /// Partition -> lag behind the latest offsets (raw; `Integer.MIN_VALUE` when unknown).
    #[serde(default, deserialize_with = "offsets")]
    pub lag: Offsets,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub remaining_seconds: Option<i64>,
    /// `ACTIVE`, `PUBLISHING` or `UNKNOWN` (TaskReportData.TaskType).
    #[serde(default, rename = "type")]
    pub task_type: Option<String>,
}

/// Per partition, the next site offset Druid will ingest, and where each came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestedEnd {
    /// Partition -> next site offset to ingest.
    pub offsets: Offsets,
    /// The partitions whose offset is derived from the `latestOffsets - minimumLag`
    /// snapshot (no task reported one), as old as `offsetsLastUpdated`.
    pub from_snapshot: BTreeSet<StreamPartition>,
    /// Partitions Druid knows of but gives no usable offset for, with the reason. Never
    /// guessed, never zero.
    pub unknown: BTreeMap<StreamPartition, String>,
}

/// `Integer.MIN_VALUE`, KafkaSupervisor's "lag unknown" marker.
const LAG_UNKNOWN_INT: i64 = i32::MIN as i64;

/// Largest `partitions` count trusted to enumerate missing partitions (a hostile or broken
/// answer must not make lockstep loop for long).
const MAX_ENUMERATED_PARTITIONS: i64 = 100_000;

/// Whether `s` is a legal Kafka topic name (`[a-zA-Z0-9._-]+`, Kafka's Topic.validate).
fn is_topic_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 249
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether a task's offset is a stream offset, not one of KafkaSupervisor's markers
/// (`NOT_SET` = -1, `END_OF_PARTITION` = `Long.MAX_VALUE`).
fn is_stream_offset(o: i64) -> bool {
    (0..i64::MAX).contains(&o)
}

impl SupervisorPayload {
    /// Epoch milliseconds of `offsetsLastUpdated`, if present and parseable.
    pub fn offsets_last_updated_ms(&self) -> Option<i64> {
        self.offsets_last_updated.as_deref().and_then(parse_time)
    }

    /// Per partition, the next site offset Druid will ingest: the furthest `currentOffsets`
    /// of its active and publishing tasks; else `latestOffsets - minimumLag` when
    /// `0 <= minimumLag <= latestOffsets` (KafkaSupervisor computes `minimumLag` as
    /// `latest - highestCurrentOffset`, so this is the tasks' offset when the snapshot was
    /// taken). Partitions with a negative or absurd lag, or with no offset at all, go to
    /// `unknown` with a reason.
    pub fn ingested_end(&self) -> IngestedEnd {
        let mut out = IngestedEnd::default();
        // Partitions some task reads but reports no usable current offset for.
        let mut task_notes: BTreeMap<StreamPartition, String> = BTreeMap::new();
        for task in self.active_tasks.iter().chain(&self.publishing_tasks) {
            for (p, &o) in &task.current_offsets {
                if is_stream_offset(o) {
                    let e = out.offsets.entry(p.clone()).or_insert(o);
                    *e = (*e).max(o);
                } else {
                    task_notes.entry(p.clone()).or_insert_with(|| {
                        format!(
                            "task {} reports currentOffsets {o}, which is not a stream offset",
                            task.id
                        )
                    });
                }
            }
            for p in task.starting_offsets.keys().chain(task.lag.keys()) {
                if !task.current_offsets.contains_key(p) {
                    task_notes.entry(p.clone()).or_insert_with(|| {
                        format!("task {} reads it but reports no currentOffsets", task.id)
                    });
                }
            }
        }

        let known: BTreeSet<&StreamPartition> = self
            .latest_offsets
            .keys()
            .chain(self.minimum_lag.keys())
            .chain(task_notes.keys())
            .collect();
        let snapshot_age = self
            .offsets_last_updated
            .as_deref()
            .map(|t| format!(" (offsetsLastUpdated {t})"))
            .unwrap_or_default();
        for p in known {
            if out.offsets.contains_key(p) {
                continue;
            }
            let latest = self.latest_offsets.get(p).copied();
            let lag = self.minimum_lag.get(p).copied();
            let reason = match (latest, lag) {
                (Some(l), Some(g)) if l >= 0 && (0..=l).contains(&g) => {
                    out.offsets.insert(p.clone(), l - g);
                    out.from_snapshot.insert(p.clone());
                    continue;
                }
                (Some(_), Some(g)) if g == LAG_UNKNOWN_INT || g == i64::MIN => format!(
                    "minimumLag is {g} (Druid's marker for a partition with no end offset or \
                     no current offset)"
                ),
                (Some(_), Some(g)) if g < 0 => format!(
                    "minimumLag is negative ({g}): the latestOffsets snapshot{snapshot_age} is \
                     older than the tasks' offsets"
                ),
                (Some(l), Some(_)) if l < 0 => format!("latestOffsets is negative ({l})"),
                (Some(l), Some(g)) => {
                    format!("minimumLag {g} exceeds latestOffsets {l}")
                }
                (Some(_), None) => "in latestOffsets but not in minimumLag".to_string(),
                (None, Some(_)) => "in minimumLag but not in latestOffsets".to_string(),
                (None, None) => "no offset reported".to_string(),
            };
            let reason = match task_notes.get(p) {
                Some(note) if latest.is_none() && lag.is_none() => note.clone(),
                Some(note) => format!("{reason}; {note}"),
                None => reason,
            };
            out.unknown.insert(p.clone(), reason);
        }

        // Single-topic supervisors number their partitions 0..partitions: name the ones no
        // map mentions. In multi-topic mode `partitions` counts all topics' partitions and
        // cannot be enumerated; the mode shows in the keys, or, with no key at all, in
        // `stream`, which is then the topicPattern (a regex, not a legal topic name).
        if let Some(n) = self
            .partitions
            .filter(|n| (1..=MAX_ENUMERATED_PARTITIONS).contains(n))
        {
            let mut seen = out.offsets.keys().chain(out.unknown.keys()).peekable();
            let single_topic = match seen.peek() {
                Some(_) => seen.all(|p| p.topic.is_none()),
                None => self.stream.as_deref().is_some_and(is_topic_name),
            };
            if single_topic {
                for i in 0..n {
                    let Ok(i) = i32::try_from(i) else { break };
                    let p = StreamPartition::single(i);
                    if !out.offsets.contains_key(&p) && !out.unknown.contains_key(&p) {
                        out.unknown.insert(
                            p,
                            if self.latest_offsets.is_empty() {
                                format!(
                                    "Druid reports {n} partitions but no offsets yet (no \
                                     latestOffsets snapshot)"
                                )
                            } else {
                                format!("Druid reports {n} partitions but no offset for this one")
                            },
                        );
                    }
                }
            }
        }
        out
    }

    /// Recent errors as one-line texts: `exceptionClass: message` of each ExceptionEvent
    /// (the class is left out when the message already starts with it).
    pub fn recent_error_texts(&self) -> Vec<String> {
        self.recent_errors
            .iter()
            .map(|e| match e {
                Value::String(s) => s.clone(),
                Value::Object(m) => {
                    let message = ["message", "exceptionMessage", "errorMessage"]
                        .iter()
                        .find_map(|k| m.get(*k).and_then(Value::as_str));
                    let class = m.get("exceptionClass").and_then(Value::as_str);
                    match (class, message) {
                        (Some(c), Some(msg)) if !msg.starts_with(c) => format!("{c}: {msg}"),
                        (_, Some(msg)) => msg.to_string(),
                        (Some(c), None) => c.to_string(),
                        (None, None) => e.to_string(),
                    }
                }
                other => other.to_string(),
            })
            .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }
}
