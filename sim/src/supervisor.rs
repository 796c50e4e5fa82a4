//! Kafka supervisors: the part of the emulator that really ingests.
//!
//! Like Druid, a supervisor keeps its own offsets (no consumer-group commits): its consumer
//! assigns the stream's partitions explicitly from the stored offsets (or from the earliest /
//! latest offset for a partition it has not read yet). Offsets are Druid-style:
//! `currentOffsets[p]` is the next offset to read. Every refresh it reads the partitions of
//! the topic (or of every topic matching `topicPattern`) and their high watermarks
//! (`latestOffsets`), so lag = high watermark - current offset.
//!
//! Tasks are emulated the way SeekableStreamSupervisor runs them: partitions form task groups
//! (`taskCount`), each group runs `replicas` tasks that start from the group's starting
//! offsets, read for `taskDuration`, then publish while a new group starts at their end
//! offsets. What a task ingests is one rollup scope of the store, so rollup is best-effort
//! as in Druid: equal rows merge only within one task. The rejection periods are computed
//! at each task group's creation.
//!
//! Each record goes through the `inputFormat` (input.rs), the `timestampSpec`, the
//! `transformSpec` (transform.rs), the task's message-time bounds and the drop faults; the
//! counters are Druid's row stats (`processed`, `unparseable`, `thrownAway`).
//!
//! The consumer runs on a blocking thread per supervisor (`BaseConsumer::poll`); it stops on
//! its cancellation token (suspend keeps it alive but idle, update and terminate replace it).

use crate::error::SimError;
use crate::faults::Faults;
use crate::input::{InputFormat, JsonFormat, Record, Row};
use crate::store::{DimType, Dimension, Metric, MultiValueHandling, Schema, Store};
use crate::time::{in_eternity, iso, parse_iso, Granularity, IsoPeriod, TimestampFormat};
use crate::transform::TransformSpec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A partition as Druid keys it: `KafkaTopicPartition`. In multi-topic mode (`topicPattern`)
/// its JSON key is `"topic:partition"`, else the bare partition number
/// (KafkaTopicPartition.KafkaTopicPartitionKeySerializer,
/// extensions-core/kafka-indexing-service/.../data/input/kafka/KafkaTopicPartition.java).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    fn key(&self, multi_topic: bool) -> String {
        if multi_topic {
            format!("{}:{}", self.topic, self.partition)
        } else {
            self.partition.to_string()
        }
    }
}

/// `ioConfig.lateMessageRejection*`: the lower bound of a task's message times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateRejection {
    None,
    /// `lateMessageRejectionPeriod` (ms before the task group's creation).
    Period(i64),
    /// `lateMessageRejectionStartDateTime` (a fixed instant).
    StartDateTime(i64),
}

/// The incremental-handoff limits of the `tuningConfig` (docs/ingestion/supervisor.md
/// "tuningConfig": `maxRowsPerSegment`, `maxTotalRows`, `intermediateHandoffPeriod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    pub max_rows_per_segment: u64,
    pub max_total_rows: u64,
    pub intermediate_handoff_ms: i64,
}

/// The parts of a Kafka supervisor spec the emulator uses.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSpec {
    /// Supervisor id: top-level `id` if given, else the datasource.
    pub id: String,
    pub datasource: String,
    /// The stream: `ioConfig.topic`, or the `topicPattern` regex when `multi_topic`. The
    /// status payload's `stream` (KafkaSupervisorIOConfig.getStream).
    pub topic: String,
    /// Whether `topicPattern` was given (every matching topic is read).
    pub multi_topic: bool,
    pub bootstrap: String,
    /// Extra librdkafka properties copied from `consumerProperties` (security.protocol,
    /// sasl.*, isolation.level).
    pub consumer_properties: BTreeMap<String, String>,
    pub timestamp_column: String,
    pub timestamp_format: TimestampFormat,
    /// `timestampSpec.missingValue`.
    pub missing_timestamp: Option<i64>,
    pub use_earliest_offset: bool,
    /// Timestamp column, granularities, rollup, dimensions and metrics.
    pub schema: Schema,
    pub input_format: InputFormat,
    pub transform: TransformSpec,
    /// `ioConfig.taskDuration` in seconds (Druid's default PT1H).
    pub task_duration_secs: u64,
    /// `ioConfig.taskDuration` in milliseconds.
    pub task_duration_ms: i64,
    pub task_count: u32,
    pub replicas: u32,
    /// `ioConfig.completionTimeout` in milliseconds (publishing tasks' `remainingSeconds`).
    pub completion_timeout_ms: i64,
    pub late_rejection: LateRejection,
    /// `earlyMessageRejectionPeriod` in milliseconds.
    pub early_rejection_ms: Option<i64>,
    pub handoff: Handoff,
    /// The spec as posted.
    pub raw: Value,
}

fn spec_err(m: impl Into<String>) -> SimError {
    SimError::Spec(m.into())
}

/// A JSON object with its path, for precise errors. Null fields count as absent (Druid
/// writes every unset field as `null` when it returns a spec).
struct Obj<'a> {
    o: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: &str) -> Result<Obj<'a>, SimError> {
        match v {
            Value::Object(o) => Ok(Obj {
                o,
                path: path.to_string(),
            }),
            other => Err(spec_err(format!("{path} {other} is not an object"))),
        }
    }

    fn at(&self, k: &str) -> String {
        format!("{}.{k}", self.path)
    }

    /// Refuses fields outside `known` (unknown to the emulator: never silently ignored).
    fn check(&self, known: &[&str]) -> Result<(), SimError> {
        match self
            .o
            .iter()
            .find(|(k, v)| !v.is_null() && !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(spec_err(format!(
                "{} is not supported by the emulator",
                self.at(k)
            ))),
            None => Ok(()),
        }
    }

    fn get(&self, k: &str) -> Option<&'a Value> {
        self.o.get(k).filter(|v| !v.is_null())
    }

    fn obj(&self, k: &str) -> Result<Option<Obj<'a>>, SimError> {
        self.get(k).map(|v| Obj::new(v, &self.at(k))).transpose()
    }

    fn str(&self, k: &str) -> Result<Option<&'a str>, SimError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(spec_err(format!("{} {other} is not a string", self.at(k)))),
        }
    }

    fn bool(&self, k: &str) -> Result<Option<bool>, SimError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Jackson coerces "true"/"false".
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(other) => Err(spec_err(format!("{} {other} is not a boolean", self.at(k)))),
        }
    }

    fn int(&self, k: &str) -> Result<Option<i64>, SimError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            // Jackson coerces numeric strings.
            Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
                Ok(s.trim().parse::<i64>().ok())
            }
            Some(other) => Err(spec_err(format!(
                "{} {other} is not an integer",
                self.at(k)
            ))),
        }
    }

    /// An ISO period used as a duration (`Period.toStandardDuration()`: years and months
    /// have no standard length, Joda refuses them).
    fn duration_ms(&self, k: &str) -> Result<Option<i64>, SimError> {
        let Some(s) = self.str(k)? else {
            return Ok(None);
        };
        let p = IsoPeriod::parse(s)
            .ok_or_else(|| spec_err(format!("{} '{s}' is not an ISO-8601 period", self.at(k))))?;
        p.standard_millis().map(Some).ok_or_else(|| {
            spec_err(format!(
                "{} '{s}': a period with years or months has no standard duration",
                self.at(k)
            ))
        })
    }
}

/// Druid's defaults for the handoff limits (supervisor.md "tuningConfig").
const DEFAULT_MAX_ROWS_PER_SEGMENT: u64 = 5_000_000;
const DEFAULT_MAX_TOTAL_ROWS: u64 = 20_000_000;

impl KafkaSpec {
    /// Reads a spec as `POST /druid/indexer/v1/supervisor` receives it, and as Druid returns
    /// it from `GET .../supervisor/{id}`. KafkaSupervisorSpec's creator takes `spec` (the
    /// ingestion spec) and, when it is absent, builds one from top-level `dataSchema`,
    /// `ioConfig` and `tuningConfig`; Druid serializes both, so both shapes are accepted and
    /// `spec` wins. Everything the emulator cannot honour is refused with the field's path.
    pub fn from_json(raw: &Value) -> Result<KafkaSpec, SimError> {
        let top = Obj::new(raw, "supervisor spec")?;
        // `context` is the task context (priorities, lock types): no effect on rows.
        top.check(&[
            "type",
            "spec",
            "dataSchema",
            "ioConfig",
            "tuningConfig",
            "id",
            "suspended",
            "context",
        ])?;
        // SupervisorSpec is polymorphic on `type` (no default).
        match top.str("type")? {
            Some("kafka") => {}
            Some(ty) => {
                return Err(spec_err(format!(
                    "type '{ty}' is not supported (lockstep-sim emulates Kafka supervisors only)"
                )))
            }
            None => return Err(spec_err("type is required (\"kafka\")")),
        }
        let (ing, prefix) = match top.obj("spec")? {
            Some(s) => {
                s.check(&["dataSchema", "ioConfig", "tuningConfig"])?;
                (s, "spec.")
            }
            None => (Obj::new(raw, "supervisor spec")?, ""),
        };
        let ds = ing
            .obj("dataSchema")?
            .ok_or_else(|| spec_err(format!("{prefix}dataSchema is required")))?;
        let io = ing
            .obj("ioConfig")?
            .ok_or_else(|| spec_err(format!("{prefix}ioConfig is required")))?;
        let tuning = ing.obj("tuningConfig")?;

        let (datasource, ts, schema, transform) = read_data_schema(&ds)?;
        let io = read_io_config(&io)?;
        let handoff = read_tuning(tuning.as_ref())?;

        let id = match top.str("id")? {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => datasource.clone(),
        };
        Ok(KafkaSpec {
            id,
            datasource,
            topic: io.stream,
            multi_topic: io.multi_topic,
            bootstrap: io.bootstrap,
            consumer_properties: io.consumer_properties,
            timestamp_column: ts.0,
            timestamp_format: ts.1,
            missing_timestamp: ts.2,
            use_earliest_offset: io.use_earliest_offset,
            schema,
            input_format: io.input_format,
            transform,
            task_duration_secs: (io.task_duration_ms / 1000).max(0) as u64,
            task_duration_ms: io.task_duration_ms,
            task_count: io.task_count,
            replicas: io.replicas,
            completion_timeout_ms: io.completion_timeout_ms,
            late_rejection: io.late_rejection,
            early_rejection_ms: io.early_rejection_ms,
            handoff,
            raw: raw.clone(),
        })
    }

    /// The compiled `topicPattern`, matched against whole topic names (KafkaRecordSupplier
    /// .getPartitionIds: `pattern.matcher(topic).matches()`).
    fn pattern(&self) -> Option<regex::Regex> {
        self.multi_topic
            .then(|| regex::Regex::new(&format!("^(?:{})$", self.topic)).ok())
            .flatten()
    }

    /// Whether this spec reads `topic`.
    fn reads(&self, topic: &str, pattern: Option<&regex::Regex>) -> bool {
        match pattern {
            Some(p) => p.is_match(topic),
            None => !self.multi_topic && topic == self.topic,
        }
    }

    /// The task group of a partition (KafkaSupervisor.getTaskGroupIdForPartition):
    /// `partition % taskCount`, or in multi-topic mode
    /// `Math.abs(31 * topic.hashCode() + partition) % taskCount` in Java int arithmetic.
    fn group_of(&self, tp: &TopicPartition) -> i32 {
        let n = self.task_count.max(1) as i32;
        if self.multi_topic {
            let h = tp
                .topic
                .encode_utf16()
                .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
            31i32
                .wrapping_mul(h)
                .wrapping_add(tp.partition)
                .wrapping_abs()
                % n
        } else {
            tp.partition % n
        }
    }

    /// `TimestampSpec.extractTimestamp`: the column's value in the format, or `missingValue`
    /// when the column is null or absent; `None` when unparseable.
    fn timestamp(&self, row: &Row) -> Option<i64> {
        match row.get(&self.timestamp_column) {
            None | Some(Value::Null) => self.missing_timestamp,
            Some(v) => self.timestamp_format.parse(v),
        }
    }
}

type TimestampParts = (String, TimestampFormat, Option<i64>);

fn read_data_schema(ds: &Obj) -> Result<(String, TimestampParts, Schema, TransformSpec), SimError> {
    ds.check(&[
        "dataSource",
        "timestampSpec",
        "dimensionsSpec",
        "metricsSpec",
        "granularitySpec",
        "transformSpec",
        "parser",
        "projections",
    ])?;
    if ds.get("parser").is_some() {
        return Err(spec_err(format!(
            "{} (the legacy parser) is not supported by the emulator; use ioConfig.inputFormat",
            ds.at("parser")
        )));
    }
    if ds
        .get("projections")
        .is_some_and(|p| p.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(spec_err(format!(
            "{} is not supported by the emulator",
            ds.at("projections")
        )));
    }
    let datasource = ds
        .str("dataSource")?
        .filter(|d| !d.is_empty())
        .ok_or_else(|| spec_err(format!("{} is required", ds.at("dataSource"))))?
        .to_string();

    // timestampSpec (docs/ingestion/ingestion-spec.md "timestampSpec"): column "timestamp",
    // format "auto" by default.
    let (column, format, missing) = match ds.obj("timestampSpec")? {
        None => ("timestamp".to_string(), TimestampFormat::Auto, None),
        Some(t) => {
            t.check(&["column", "format", "missingValue"])?;
            let column = t.str("column")?.unwrap_or("timestamp").to_string();
            let f = t.str("format")?.unwrap_or("auto");
            let format = TimestampFormat::from_spec(f).ok_or_else(|| {
                spec_err(format!(
                    "{} '{f}' is not supported by the emulator (iso, millis, posix, micro, nano, \
                     auto)",
                    t.at("format")
                ))
            })?;
            let missing = match t.get("missingValue") {
                None => None,
                Some(v) => Some(TimestampFormat::Auto.parse(v).ok_or_else(|| {
                    spec_err(format!("{} {v} is not a date-time", t.at("missingValue")))
                })?),
            };
            (column, format, missing)
        }
    };

    // dimensionsSpec (ingestion-spec.md "dimensionsSpec").
    let mut dimensions = Vec::new();
    let mut exclusions = Vec::new();
    let mut discover = true;
    if let Some(d) = ds.obj("dimensionsSpec")? {
        // forceSegmentSortByTime only changes the segments' sort order.
        d.check(&[
            "dimensions",
            "dimensionExclusions",
            "spatialDimensions",
            "includeAllDimensions",
            "useSchemaDiscovery",
            "forceSegmentSortByTime",
        ])?;
        if d.get("spatialDimensions")
            .is_some_and(|s| s.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(spec_err(format!(
                "{} is not supported by the emulator",
                d.at("spatialDimensions")
            )));
        }
        if let Some(list) = d.get("dimensions") {
            let list = list
                .as_array()
                .ok_or_else(|| spec_err(format!("{} is not an array", d.at("dimensions"))))?;
            for (i, item) in list.iter().enumerate() {
                dimensions.push(read_dimension(
                    item,
                    &format!("{}[{i}]", d.at("dimensions")),
                )?);
            }
        }
        if let Some(ex) = d.get("dimensionExclusions") {
            for e in ex.as_array().into_iter().flatten() {
                exclusions.push(
                    e.as_str()
                        .ok_or_else(|| {
                            spec_err(format!("{} {e} is not a name", d.at("dimensionExclusions")))
                        })?
                        .to_string(),
                );
            }
        }
        // Without listed dimensions every field is one (schemaless); includeAllDimensions
        // and useSchemaDiscovery add the fields that are not listed.
        discover = dimensions.is_empty()
            || d.bool("includeAllDimensions")?.unwrap_or(false)
            || d.bool("useSchemaDiscovery")?.unwrap_or(false);
    }

    // metricsSpec: the aggregators the emulator computes. Others (min/max, sketches...)
    // would be columns the emulator cannot answer for, so they are refused.
    let mut metrics = Vec::new();
    if let Some(ms) = ds.get("metricsSpec") {
        let ms = ms
            .as_array()
            .ok_or_else(|| spec_err(format!("{} is not an array", ds.at("metricsSpec"))))?;
        for (i, m) in ms.iter().enumerate() {
            let m = Obj::new(m, &format!("{}[{i}]", ds.at("metricsSpec")))?;
            m.check(&["type", "name", "fieldName", "expression"])?;
            let ty = m.str("type")?.unwrap_or("");
            let name = m
                .str("name")?
                .filter(|n| !n.is_empty())
                .ok_or_else(|| spec_err(format!("{} is required", m.at("name"))))?
                .to_string();
            if m.get("expression").is_some() {
                return Err(spec_err(format!(
                    "{} is not supported by the emulator",
                    m.at("expression")
                )));
            }
            match ty {
                "count" => metrics.push(Metric::Count { name }),
                "longSum" | "doubleSum" | "floatSum" => {
                    let field = m
                        .str("fieldName")?
                        .ok_or_else(|| spec_err(format!("{} is required", m.at("fieldName"))))?
                        .to_string();
                    metrics.push(Metric::Sum {
                        name,
                        field,
                        double: ty != "longSum",
                    })
                }
                other => {
                    return Err(spec_err(format!(
                        "{} '{other}' (metric '{name}') is not supported by the emulator (count, \
                         longSum, doubleSum, floatSum)",
                        m.at("type")
                    )))
                }
            }
        }
    }

    // granularitySpec (ingestion-spec.md "granularitySpec"; UniformGranularitySpec).
    let mut segment_granularity = None;
    let mut query_granularity = Granularity::None;
    let mut rollup = true;
    if let Some(g) = ds.obj("granularitySpec")? {
        g.check(&[
            "type",
            "segmentGranularity",
            "queryGranularity",
            "rollup",
            "intervals",
        ])?;
        match g.str("type")? {
            None | Some("uniform") => {}
            Some(other) => {
                return Err(spec_err(format!(
                    "{} '{other}' is not supported by the emulator (uniform)",
                    g.at("type")
                )))
            }
        }
        if g.get("intervals")
            .is_some_and(|i| i.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(spec_err(format!(
                "{} is not supported by the emulator",
                g.at("intervals")
            )));
        }
        let gran = |k: &str| -> Result<Option<Granularity>, SimError> {
            g.get(k)
                .map(|v| {
                    Granularity::from_json(v).map_err(|e| spec_err(format!("{}: {e}", g.at(k))))
                })
                .transpose()
        };
        segment_granularity = gran("segmentGranularity")?;
        query_granularity = gran("queryGranularity")?.unwrap_or(Granularity::None);
        rollup = g.bool("rollup")?.unwrap_or(true);
    }

    let transform = TransformSpec::from_json(ds.get("transformSpec"), &ds.at("transformSpec"))?;
    let schema = Schema {
        timestamp_column: column.clone(),
        segment_granularity,
        query_granularity,
        rollup,
        dimensions,
        discover,
        exclusions,
        metrics,
    };
    Ok((datasource, (column, format, missing), schema, transform))
}

/// One `dimensionsSpec.dimensions` entry: a name (a string dimension) or an object.
fn read_dimension(v: &Value, path: &str) -> Result<Dimension, SimError> {
    if let Value::String(name) = v {
        return Ok(Dimension::string(name));
    }
    let d = Obj::new(v, path)?;
    // createBitmapIndex only tunes indexing.
    d.check(&["type", "name", "multiValueHandling", "createBitmapIndex"])?;
    let name = d
        .str("name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| spec_err(format!("{} is required", d.at("name"))))?;
    let ty = match d.str("type")?.unwrap_or("string") {
        "string" => DimType::String,
        "long" => DimType::Long,
        "float" => DimType::Float,
        "double" => DimType::Double,
        "json" | "auto" => DimType::Raw,
        other => {
            return Err(spec_err(format!(
                "{} '{other}' is not supported by the emulator (string, long, float, double, \
                 json, auto)",
                d.at("type")
            )))
        }
    };
    let multi_value = match d.str("multiValueHandling")?.map(str::to_ascii_uppercase) {
        None => MultiValueHandling::SortedArray,
        Some(m) => match m.as_str() {
            "SORTED_ARRAY" => MultiValueHandling::SortedArray,
            "SORTED_SET" => MultiValueHandling::SortedSet,
            "ARRAY" => MultiValueHandling::Array,
            other => {
                return Err(spec_err(format!(
                    "{} '{other}' is not a multiValueHandling",
                    d.at("multiValueHandling")
                )))
            }
        },
    };
    Ok(Dimension {
        name: name.to_string(),
        ty,
        multi_value,
    })
}

struct IoConfig {
    stream: String,
    multi_topic: bool,
    bootstrap: String,
    consumer_properties: BTreeMap<String, String>,
    use_earliest_offset: bool,
    input_format: InputFormat,
    task_duration_ms: i64,
    task_count: u32,
    replicas: u32,
    completion_timeout_ms: i64,
    late_rejection: LateRejection,
    early_rejection_ms: Option<i64>,
}

/// `ioConfig` (docs/ingestion/supervisor.md "ioConfig", kafka-ingestion.md "ioConfig").
/// Ignored as irrelevant to what is ingested: `pollTimeout`, `startDelay`, `period` (timing
/// of polls and of the supervisor's run loop), `lagAggregator` (autoscaler input) and
/// `serverPriorityToReplicas` (task placement). `stream` and `useEarliestSequenceNumber`
/// are echoes Druid writes when it returns a spec and ignores when it reads one.
fn read_io_config(io: &Obj) -> Result<IoConfig, SimError> {
    io.check(&[
        "type",
        "topic",
        "topicPattern",
        "stream",
        "inputFormat",
        "consumerProperties",
        "useEarliestOffset",
        "useEarliestSequenceNumber",
        "taskCount",
        "replicas",
        "taskDuration",
        "completionTimeout",
        "lateMessageRejectionPeriod",
        "earlyMessageRejectionPeriod",
        "lateMessageRejectionStartDateTime",
        "emitTimeLagMetrics",
        "pollTimeout",
        "startDelay",
        "period",
        "lagAggregator",
        "serverPriorityToReplicas",
        "autoScalerConfig",
        "idleConfig",
        "stopTaskCount",
    ])?;
    if let Some(t) = io.str("type")? {
        if t != "kafka" {
            return Err(spec_err(format!("{} '{t}' is not kafka", io.at("type"))));
        }
    }
    // KafkaSupervisorIOConfig: exactly one of topic and topicPattern.
    let (stream, multi_topic) = match (io.str("topic")?, io.str("topicPattern")?) {
        (Some(t), None) => (t.to_string(), false),
        (None, Some(p)) => {
            regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                spec_err(format!(
                    "{} '{p}' is not a pattern the emulator can match: {e}",
                    io.at("topicPattern")
                ))
            })?;
            (p.to_string(), true)
        }
        (Some(_), Some(_)) => {
            return Err(spec_err(format!(
                "{}: only one of topic or topicPattern should be specified",
                io.path
            )))
        }
        (None, None) => {
            return Err(spec_err(format!(
                "{}: either topic or topicPattern must be specified",
                io.path
            )))
        }
    };
    if let Some(s) = io.str("stream")? {
        if s != stream {
            return Err(spec_err(format!(
                "{} '{s}' differs from the topic '{stream}'",
                io.at("stream")
            )));
        }
    }
    let props = io
        .obj("consumerProperties")?
        .ok_or_else(|| spec_err(format!("{} is required", io.at("consumerProperties"))))?;
    let bootstrap = props
        .str("bootstrap.servers")?
        .ok_or_else(|| {
            spec_err(format!(
                "{}[\"bootstrap.servers\"] is required",
                io.at("consumerProperties")
            ))
        })?
        .to_string();
    // Only properties librdkafka understands the same way are passed on; the rest are
    // Java client settings (sasl.jaas.config, ssl.*.location) the emulator cannot use.
    let mut consumer_properties = BTreeMap::new();
    for (k, v) in props.o {
        let passed = k == "security.protocol"
            || k == "isolation.level"
            || k.starts_with("sasl.") && k != "sasl.jaas.config";
        if passed {
            if let Some(s) = v.as_str() {
                consumer_properties.insert(k.clone(), s.to_string());
            }
        }
    }
    let input_format = match io.get("inputFormat") {
        Some(f) => InputFormat::from_json(f, &io.at("inputFormat"))?,
        None => InputFormat::Json(JsonFormat::default()),
    };
    let positive = |k: &str| -> Result<Option<u32>, SimError> {
        match io.int(k)? {
            None => Ok(None),
            Some(n) if n >= 1 && n <= i64::from(i32::MAX) => Ok(Some(n as u32)),
            Some(n) => Err(spec_err(format!("{} {n} must be positive", io.at(k)))),
        }
    };
    let task_count = positive("taskCount")?.unwrap_or(1);
    let replicas = positive("replicas")?.unwrap_or(1);
    let task_duration_ms = io.duration_ms("taskDuration")?.unwrap_or(3_600_000);
    if task_duration_ms <= 0 {
        return Err(spec_err(format!(
            "{} must be positive",
            io.at("taskDuration")
        )));
    }
    let completion_timeout_ms = io.duration_ms("completionTimeout")?.unwrap_or(1_800_000);
    // SeekableStreamSupervisorIOConfig refuses both late-rejection settings at once.
    let late_rejection = match (
        io.duration_ms("lateMessageRejectionPeriod")?,
        io.get("lateMessageRejectionStartDateTime"),
    ) {
        (Some(_), Some(_)) => {
            return Err(spec_err(format!(
                "{}: SeekableStreamSupervisorIOConfig does not support both properties \
                 lateMessageRejectionStartDateTime and lateMessageRejectionPeriod.",
                io.path
            )))
        }
        (Some(p), None) => LateRejection::Period(p),
        (None, Some(v)) => {
            LateRejection::StartDateTime(v.as_str().and_then(parse_iso).ok_or_else(|| {
                spec_err(format!(
                    "{} {v} is not a date-time",
                    io.at("lateMessageRejectionStartDateTime")
                ))
            })?)
        }
        (None, None) => LateRejection::None,
    };
    let early_rejection_ms = io.duration_ms("earlyMessageRejectionPeriod")?;
    // Kafka time lag (minimumLagMillis, Druid 33+) is only computed with
    // emitTimeLagMetrics; the emulator does not read the stream's last record timestamps.
    if io.bool("emitTimeLagMetrics")? == Some(true) {
        return Err(spec_err(format!(
            "{}=true is not supported by the emulator",
            io.at("emitTimeLagMetrics")
        )));
    }
    // The autoscaler changes taskCount at run time, the idle state stops tasks, and
    // stopTaskCount staggers task groups' rollover: none is emulated.
    if let Some(a) = io.obj("autoScalerConfig")? {
        if a.bool("enableTaskAutoScaler")? == Some(true) {
            return Err(spec_err(format!(
                "{} with enableTaskAutoScaler is not supported by the emulator",
                io.at("autoScalerConfig")
            )));
        }
    }
    if let Some(i) = io.obj("idleConfig")? {
        if i.bool("enabled")? == Some(true) {
            return Err(spec_err(format!(
                "{} with enabled=true is not supported by the emulator",
                io.at("idleConfig")
            )));
        }
    }
    if let Some(n) = io.int("stopTaskCount")? {
        if n < i64::from(task_count) {
            return Err(spec_err(format!(
                "{} {n} below taskCount is not supported by the emulator",
                io.at("stopTaskCount")
            )));
        }
    }
    Ok(IoConfig {
        stream,
        multi_topic,
        bootstrap,
        consumer_properties,
        use_earliest_offset: io.bool("useEarliestOffset")?.unwrap_or(false),
        input_format,
        task_duration_ms,
        task_count,
        replicas,
        completion_timeout_ms,
        late_rejection,
        early_rejection_ms,
    })
}

/// `tuningConfig`. Used: `type`, the handoff limits, and the parse-exception settings (a
/// task that fails on parse errors is not emulated, so they are refused unless unlimited).
/// Ignored as pure tuning (memory, persists, threads, timeouts, retries, index format):
/// maxRowsInMemory, maxBytesInMemory, skipBytesInMemoryOverheadCheck,
/// intermediatePersistPeriod, maxPendingPersists, indexSpec, indexSpecForIntermediatePersists,
/// handoffConditionTimeout, resetOffsetAutomatically, workerThreads, chatThreads,
/// chatRetries, httpTimeout, shutdownTimeout, offsetFetchPeriod, segmentWriteOutMediumFactory,
/// logParseExceptions, maxSavedParseExceptions, numPersistThreads, appendableIndexSpec,
/// skipSequenceNumberAvailabilityCheck, repartitionTransitionDuration, and the like.
fn read_tuning(t: Option<&Obj>) -> Result<Handoff, SimError> {
    let mut h = Handoff {
        max_rows_per_segment: DEFAULT_MAX_ROWS_PER_SEGMENT,
        max_total_rows: DEFAULT_MAX_TOTAL_ROWS,
        intermediate_handoff_ms: i64::MAX,
    };
    let Some(t) = t else {
        return Ok(h);
    };
    match t.str("type")? {
        None | Some("kafka") => {}
        Some(other) => return Err(spec_err(format!("{} '{other}' is not kafka", t.at("type")))),
    }
    if t.bool("reportParseExceptions")? == Some(true) {
        return Err(spec_err(format!(
            "{}=true (tasks fail on a parse error) is not supported by the emulator",
            t.at("reportParseExceptions")
        )));
    }
    if let Some(n) = t.int("maxParseExceptions")? {
        if n < i64::from(i32::MAX) {
            return Err(spec_err(format!(
                "{} {n} (tasks fail after that many parse errors) is not supported by the \
                 emulator",
                t.at("maxParseExceptions")
            )));
        }
    }
    let count = |k: &str| -> Result<Option<u64>, SimError> {
        match t.int(k)? {
            None => Ok(None),
            Some(n) if n > 0 => Ok(Some(n as u64)),
            Some(n) => Err(spec_err(format!("{} {n} must be positive", t.at(k)))),
        }
    };
    if let Some(n) = count("maxRowsPerSegment")? {
        h.max_rows_per_segment = n;
    }
    if let Some(n) = count("maxTotalRows")? {
        h.max_total_rows = n;
    }
    if let Some(ms) = t.duration_ms("intermediateHandoffPeriod")? {
        h.intermediate_handoff_ms = ms.max(1);
    }
    Ok(h)
}

/// One task group: `replicas` tasks reading the same partitions from the same offsets.
#[derive(Debug, Clone)]
struct TaskGroup {
    ids: Vec<String>,
    start: i64,
    starting: BTreeMap<TopicPartition, i64>,
    /// The store's rollup scope of what the group writes.
    scope: u64,
    /// Message-time bounds fixed at the group's creation.
    min_time: Option<i64>,
    max_time: Option<i64>,
    /// Rows (after rollup) per segment interval and in total since the scope opened, and
    /// when it opened: the incremental-handoff triggers.
    scope_rows: HashMap<i64, u64>,
    scope_total: u64,
    scope_start: i64,
}

/// A task group that has stopped reading and is publishing.
#[derive(Debug, Clone)]
struct Publishing {
    ids: Vec<String>,
    start: i64,
    starting: BTreeMap<TopicPartition, i64>,
    ending: BTreeMap<TopicPartition, i64>,
    /// Until when the status shows it (publishing itself is instant here).
    visible_until: i64,
    completion_deadline: i64,
}

/// How long a finished task stays under `publishingTasks`. Druid lists a task group there
/// from the moment it stops reading until a run of the supervisor sees its task succeed
/// (SeekableStreamSupervisor.checkTaskDuration moves it to pendingCompletionTaskGroups,
/// checkPendingCompletionTasks removes it); the emulator publishes at once and keeps it
/// visible for this long.
const PUBLISH_VISIBLE_MS: i64 = 2_000;

/// Mutable state of one supervisor.
#[derive(Debug, Default)]
struct State {
    spec: Option<KafkaSpec>,
    /// Partition -> next offset to read.
    current: BTreeMap<TopicPartition, i64>,
    /// Partition -> high watermark at the last refresh.
    latest: BTreeMap<TopicPartition, i64>,
    offsets_updated: Option<i64>,
    /// Partitions seen since the supervisor started (a partition discovered after the first
    /// discovery starts at the earliest offset).
    known: BTreeSet<TopicPartition>,
    discovered_once: bool,
    suspended: bool,
    connected_once: bool,
    consecutive_failures: u32,
    recent_errors: VecDeque<Value>,
    groups: BTreeMap<i32, TaskGroup>,
    publishing: Vec<Publishing>,
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

fn random_letters(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// Task ids as Druid makes them: the group's base sequence name
/// `index_kafka_{dataSource}_{15 hex digits}` (SeekableStreamSupervisor.generateSequenceName
/// hashes the starting offsets and the spec) plus `_` and eight random lowercase letters per
/// replica (IdUtils.getRandomIdWithPrefix).
fn task_ids(spec: &KafkaSpec, starting: &BTreeMap<TopicPartition, i64>, start: i64) -> Vec<String> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    starting.hash(&mut h);
    start.hash(&mut h);
    spec.datasource.hash(&mut h);
    random_letters(4).hash(&mut h);
    let hex = format!("{:016x}", h.finish());
    let base = format!("index_kafka_{}_{}", spec.datasource, &hex[..15]);
    (0..spec.replicas.max(1))
        .map(|_| format!("{base}_{}", random_letters(8)))
        .collect()
}

impl State {
    fn offsets_json(&self, m: &BTreeMap<TopicPartition, i64>) -> Value {
        let multi = self.spec.as_ref().is_some_and(|s| s.multi_topic);
        Value::Object(m.iter().map(|(p, o)| (p.key(multi), json!(o))).collect())
    }

    /// Lag per partition as KafkaSupervisor.getRecordLagPerPartition computes it: latest
    /// minus current, not clamped (it can be negative), `Integer.MIN_VALUE` when the latest
    /// offset is unknown.
    fn lag(&self, current: &BTreeMap<TopicPartition, i64>) -> BTreeMap<TopicPartition, i64> {
        let known = self.offsets_updated.is_some();
        current
            .iter()
            .map(|(p, c)| {
                let lag = match self.latest.get(p) {
                    Some(hw) if known => hw - c,
                    _ => i64::from(i32::MIN),
                };
                (p.clone(), lag)
            })
            .collect()
    }

    /// Current offsets of the partitions of one group.
    fn group_current(&self, spec: &KafkaSpec, gid: i32) -> BTreeMap<TopicPartition, i64> {
        self.current
            .iter()
            .filter(|(p, _)| spec.group_of(p) == gid)
            .map(|(p, o)| (p.clone(), *o))
            .collect()
    }

    /// A new task group for `gid`, created now (SeekableStreamSupervisor.createNewTasks:
    /// `minimumMessageTime` = lateMessageRejectionStartDateTime, or now minus
    /// lateMessageRejectionPeriod; `maximumMessageTime` = now + taskDuration +
    /// earlyMessageRejectionPeriod).
    fn new_group(&self, spec: &KafkaSpec, store: &Store, gid: i32, now: i64) -> TaskGroup {
        let starting = self.group_current(spec, gid);
        let min_time = match spec.late_rejection {
            LateRejection::None => None,
            LateRejection::Period(p) => Some(now.saturating_sub(p)),
            LateRejection::StartDateTime(t) => Some(t),
        };
        let max_time = spec
            .early_rejection_ms
            .map(|e| now.saturating_add(spec.task_duration_ms).saturating_add(e));
        TaskGroup {
            ids: task_ids(spec, &starting, now),
            start: now,
            starting,
            scope: store.open_scope(),
            min_time,
            max_time,
            scope_rows: HashMap::new(),
            scope_total: 0,
            scope_start: now,
        }
    }

    /// Creates the task groups of partitions that have none (not while suspended). A
    /// partition discovered for an existing group joins it at its current offset.
    fn ensure_groups(&mut self, store: &Store, now: i64) {
        let Some(spec) = self.spec.clone() else {
            return;
        };
        if self.suspended {
            return;
        }
        let parts: Vec<(TopicPartition, i64)> =
            self.current.iter().map(|(p, o)| (p.clone(), *o)).collect();
        for (tp, off) in parts {
            let gid = spec.group_of(&tp);
            match self.groups.get_mut(&gid) {
                Some(g) => {
                    g.starting.entry(tp).or_insert(off);
                }
                None => {
                    let g = self.new_group(&spec, store, gid, now);
                    self.groups.insert(gid, g);
                }
            }
        }
    }

    /// Ends every task group: their tasks publish (suspend, spec update, terminate).
    fn stop_groups(&mut self, store: &Store, now: i64) {
        let Some(spec) = self.spec.clone() else {
            return;
        };
        let groups = std::mem::take(&mut self.groups);
        for (gid, g) in groups {
            self.publish(&spec, store, gid, g, now);
        }
    }

    /// A group stops reading: its scope closes and it is listed as publishing, its current
    /// offsets being its end offsets.
    fn publish(&mut self, spec: &KafkaSpec, store: &Store, gid: i32, g: TaskGroup, now: i64) {
        store.close_scope(g.scope);
        let ending = self.group_current(spec, gid);
        self.publishing.push(Publishing {
            ids: g.ids,
            start: g.start,
            starting: g.starting,
            ending,
            visible_until: now + PUBLISH_VISIBLE_MS,
            completion_deadline: now + spec.completion_timeout_ms,
        });
    }

    /// Rolls over the task groups that have read for `taskDuration`
    /// (SeekableStreamSupervisor.checkTaskDuration: a group whose earliest task start plus
    /// taskDuration is before now stops reading, moves to pendingCompletionTaskGroups, and
    /// its end offsets become the next group's starting offsets); starts new rollup scopes
    /// for incremental handoffs due to `intermediateHandoffPeriod`; forgets publishing tasks
    /// past their visibility.
    fn maintain(&mut self, store: &Store, now: i64) {
        let Some(spec) = self.spec.clone() else {
            return;
        };
        self.publishing.retain(|p| p.visible_until > now);
        let due: Vec<i32> = self
            .groups
            .iter()
            .filter(|(_, g)| g.start.saturating_add(spec.task_duration_ms) < now)
            .map(|(gid, _)| *gid)
            .collect();
        for gid in due {
            if let Some(g) = self.groups.remove(&gid) {
                self.publish(&spec, store, gid, g, now);
                let next = self.new_group(&spec, store, gid, now);
                self.groups.insert(gid, next);
            }
        }
        for g in self.groups.values_mut() {
            if now.saturating_sub(g.scope_start) >= spec.handoff.intermediate_handoff_ms {
                handoff(g, store, now);
            }
        }
    }
}

/// An incremental handoff: the task publishes what it holds and goes on in new segments, so
/// later rows no longer roll up with earlier ones (IncrementalPublishingKafkaIndexTaskRunner:
/// a push is required when a segment reaches maxRowsPerSegment or the task maxTotalRows;
/// the task then checkpoints and starts a new sequence). Druid's checkpoint is
/// asynchronous, so its exact boundary varies; the emulator switches at the triggering row.
fn handoff(g: &mut TaskGroup, store: &Store, now: i64) {
    store.close_scope(g.scope);
    g.scope = store.open_scope();
    g.scope_rows.clear();
    g.scope_total = 0;
    g.scope_start = now;
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
    /// KafkaSupervisorSpec serializes `type`, `spec` and, again at the top level,
    /// `dataSchema`, `ioConfig` and `tuningConfig`, plus `id`, `suspended` and `context`.
    /// The fields are the posted ones (Druid would also fill in its defaults).
    pub fn spec_json(&self) -> Value {
        let s = self.lock();
        let Some(spec) = &s.spec else {
            return Value::Null;
        };
        let raw = &spec.raw;
        let ingestion = match raw.get("spec") {
            Some(Value::Object(o)) => Value::Object(o.clone()),
            _ => {
                let mut m = Map::new();
                for k in ["dataSchema", "ioConfig", "tuningConfig"] {
                    if let Some(v) = raw.get(k) {
                        m.insert(k.into(), v.clone());
                    }
                }
                Value::Object(m)
            }
        };
        let part = |k: &str| ingestion.get(k).cloned().unwrap_or(Value::Null);
        json!({
            "type": "kafka",
            "spec": ingestion,
            "dataSchema": part("dataSchema"),
            "ioConfig": part("ioConfig"),
            "tuningConfig": part("tuningConfig"),
            "id": spec.id,
            "suspended": s.suspended,
            "context": raw.get("context").cloned().unwrap_or(Value::Null),
        })
    }

    pub fn healthy(&self) -> bool {
        let s = self.lock();
        self.state_names(&s).2
    }

    /// The `GET .../{id}/status` document: SupervisorReport `{id, generationTime, payload}`
    /// with KafkaSupervisorReportPayload as SeekableStreamSupervisor.generateReport fills it.
    /// Null fields are left out (`@JsonInclude(NON_NULL)`): `latestOffsets` and
    /// `offsetsLastUpdated` until the stream's offsets were read once. `minimumLag` covers
    /// the partitions of actively reading tasks and `aggregateLag` sums its non-negative
    /// values (KafkaSupervisor.createReportPayload). `minimumLagMillis` is only reported
    /// with `emitTimeLagMetrics` (refused by the spec reader) and `aggregateLagMillis` never
    /// for Kafka (KafkaSupervisorReportPayload passes null), so neither appears.
    pub fn status(&self) -> Value {
        let s = self.lock();
        let (state, detailed, healthy) = self.state_names(&s);
        let Some(spec) = &s.spec else {
            return json!({ "id": self.id });
        };
        let now = now_ms();
        let mut active = Vec::new();
        let mut highest: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for (gid, g) in &s.groups {
            let current = s.group_current(spec, *gid);
            for (p, o) in &current {
                let e = highest.entry(p.clone()).or_insert(*o);
                *e = (*e).max(*o);
            }
            // remainingSeconds = max(0, taskDuration - elapsed) in whole seconds.
            let remaining = (spec.task_duration_ms - (now - g.start)).max(0) / 1000;
            for id in &g.ids {
                active.push(json!({
                    "id": id,
                    "startingOffsets": s.offsets_json(&g.starting),
                    "startTime": iso(g.start),
                    "remainingSeconds": remaining,
                    "type": "ACTIVE",
                    "currentOffsets": s.offsets_json(&current),
                    "lag": s.offsets_json(&s.lag(&current)),
                }));
            }
        }
        let mut publishing = Vec::new();
        for p in s.publishing.iter().filter(|p| p.visible_until > now) {
            // remainingSeconds of a publishing task counts down its completionTimeout.
            let remaining = (p.completion_deadline - now).max(0) / 1000;
            for id in &p.ids {
                publishing.push(json!({
                    "id": id,
                    "startingOffsets": s.offsets_json(&p.starting),
                    "startTime": iso(p.start),
                    "remainingSeconds": remaining,
                    "type": "PUBLISHING",
                    "currentOffsets": s.offsets_json(&p.ending),
                }));
            }
        }
        let lag = s.lag(&highest);
        let aggregate: i64 = lag.values().map(|l| (*l).max(0)).sum();
        let mut payload = json!({
            "dataSource": spec.datasource,
            "stream": spec.topic,
            "partitions": s.current.len(),
            "replicas": spec.replicas,
            "durationSeconds": spec.task_duration_ms / 1000,
            "activeTasks": active,
            "publishingTasks": publishing,
            "minimumLag": s.offsets_json(&lag),
            "aggregateLag": aggregate,
            "suspended": s.suspended,
            "healthy": healthy,
            "state": state,
            "detailedState": detailed,
            "recentErrors": s.recent_errors.iter().cloned().collect::<Vec<_>>(),
        });
        if let (Some(updated), Some(o)) = (s.offsets_updated, payload.as_object_mut()) {
            o.insert("latestOffsets".into(), s.offsets_json(&s.latest));
            o.insert("offsetsLastUpdated".into(), json!(iso(updated)));
        }
        json!({
            "id": self.id,
            "generationTime": iso(now),
            "payload": payload,
        })
    }

    /// Rows stored, rows that did not parse, rows thrown away (transformSpec filter,
    /// message-time bounds, drop faults).
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

    /// Creates or updates a supervisor from a spec and (re)starts its consumer. On an update
    /// the running tasks stop and publish, and new tasks start at their offsets
    /// (docs/ingestion/supervisor.md "Schema and configuration changes"); offsets of topics
    /// the new spec no longer reads are forgotten.
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
            let now = now_ms();
            s.stop_groups(&self.store, now);
            let pattern = spec.pattern();
            s.current
                .retain(|tp, _| spec.reads(&tp.topic, pattern.as_ref()));
            s.latest
                .retain(|tp, _| spec.reads(&tp.topic, pattern.as_ref()));
            s.known.retain(|tp| spec.reads(&tp.topic, pattern.as_ref()));
            if s.current.is_empty() {
                s.offsets_updated = None;
                s.discovered_once = false;
            }
            s.generation += 1;
            // A spec posted with `"suspended": true` (as Druid's own suspend writes it).
            s.suspended = spec
                .raw
                .get("suspended")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            s.spec = Some(spec);
            s.ensure_groups(&self.store, now);
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
        // A plain thread, not `spawn_blocking`: it must never hold up a runtime's shutdown.
        let name = format!("sim-consumer-{}", sup.id);
        if let Err(e) = std::thread::Builder::new()
            .name(name)
            .spawn(move || consume(sup, store, faults, refresh, token))
        {
            tracing::error!(error = %e, "cannot start a consumer thread");
        }
    }

    /// Suspends: the tasks stop reading and publish (SeekableStreamSupervisor
    /// gracefulShutdownInternal); no task runs until resume.
    pub fn suspend(&self, id: &str) -> Option<Value> {
        let sup = self.get(id)?;
        {
            let mut s = sup.lock();
            s.stop_groups(&self.store, now_ms());
            s.suspended = true;
        }
        Some(sup.spec_json())
    }

    /// Resumes: new task groups start at the stored offsets.
    pub fn resume(&self, id: &str) -> Option<Value> {
        let sup = self.get(id)?;
        {
            let mut s = sup.lock();
            if s.suspended {
                s.suspended = false;
                s.ensure_groups(&self.store, now_ms());
            }
        }
        Some(sup.spec_json())
    }

    /// Hard reset: forgets stored offsets; the tasks are killed (not published) and reading
    /// restarts at the earliest or latest offset (SeekableStreamSupervisor.resetInternal).
    pub fn reset(&self, id: &str) -> Option<()> {
        let sup = self.get(id)?;
        {
            let mut s = sup.lock();
            for g in std::mem::take(&mut s.groups).into_values() {
                self.store.close_scope(g.scope);
            }
            s.current.clear();
            s.generation += 1;
            s.recent_errors.clear();
            s.consecutive_failures = 0;
        }
        self.restart(&sup);
        Some(())
    }

    /// Stops and removes a supervisor (its data stays; its tasks publish).
    pub fn terminate(&self, id: &str) -> Option<()> {
        let sup = self.map().remove(id)?;
        sup.lock().stop_groups(&self.store, now_ms());
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

/// What one input row becomes before it meets its task.
enum Prepared {
    Row(i64, Row),
    Unparseable,
    ThrownAway,
}

/// Input format, timestampSpec, transformSpec: the per-row steps that depend only on the
/// record (MapInputRowParser, TransformSpec). A row outside `Intervals.ETERNITY` is a parse
/// error (SeekableStreamIndexTaskRunner.withinMinMaxRecordTime).
fn prepare(spec: &KafkaSpec, rec: &Record) -> Vec<Prepared> {
    spec.input_format
        .parse(rec)
        .into_iter()
        .map(|r| {
            let Ok(row) = r else {
                return Prepared::Unparseable;
            };
            let Some(ts) = spec.timestamp(&row) else {
                return Prepared::Unparseable;
            };
            let Ok((row, ts)) = spec.transform.apply(row, ts) else {
                return Prepared::Unparseable;
            };
            if !spec.transform.accepts(&row, ts) {
                return Prepared::ThrownAway;
            }
            if !in_eternity(ts) {
                return Prepared::Unparseable;
            }
            Prepared::Row(ts, row)
        })
        .collect()
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
    let span = tracing::info_span!("supervisor", id = %sup.id, stream = %spec.topic);
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
        let (sup, spec, store, cancel, cfg) = (
            sup.clone(),
            spec.clone(),
            store.clone(),
            cancel.clone(),
            cfg.clone(),
        );
        std::thread::spawn(move || {
            refresh_offsets(sup, spec, store, generation, cfg, refresh, cancel)
        });
    }
    let mut assigned: Vec<TopicPartition> = Vec::new();
    while !cancel.is_cancelled() {
        let (suspended, current) = {
            let mut s = sup.lock();
            if s.generation != generation {
                return;
            }
            s.maintain(&store, now_ms());
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
        let parts: Vec<TopicPartition> = current.keys().cloned().collect();
        if parts != assigned {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &current {
                if let Err(e) = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(*o))
                {
                    tracing::warn!(
                        topic = %p.topic,
                        partition = p.partition,
                        error = %e,
                        "cannot assign"
                    );
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
                    let tp = TopicPartition {
                        topic: m.topic().to_string(),
                        partition: m.partition(),
                    };
                    let off = m.offset();
                    let headers: Vec<(String, Option<Vec<u8>>)> = m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default();
                    let rec = Record {
                        topic: &tp.topic,
                        key: m.key(),
                        value: m.payload(),
                        headers: &headers,
                        timestamp: m.timestamp().to_millis().unwrap_or(-1),
                    };
                    let prepared = prepare(&spec, &rec);
                    let bytes = m.payload().map_or(0, <[u8]>::len) as u64;
                    let mut s = sup.lock();
                    if s.generation != generation {
                        return;
                    }
                    // Skip what was already read (a re-assign can replay).
                    if s.current.get(&tp).is_some_and(|c| off < *c) {
                        continue;
                    }
                    ingest_record(&mut s, &spec, &store, &tp, prepared, bytes);
                    s.current.insert(tp, off + 1);
                }
            }
        }
    }
}

/// Stores the rows of one record in its partition's task: rows outside the task's message
/// times are thrown away (withinMinMaxRecordTime: `minimumMessageTime.isAfter(t)` or
/// `maximumMessageTime.isBefore(t)`, so both bounds are inclusive), and a row a drop fault
/// swallows counts as thrown away too.
fn ingest_record(
    s: &mut State,
    spec: &KafkaSpec,
    store: &Store,
    tp: &TopicPartition,
    prepared: Vec<Prepared>,
    bytes: u64,
) {
    let rows = prepared.len().max(1) as u64;
    let gid = spec.group_of(tp);
    let now = now_ms();
    if !s.groups.contains_key(&gid) {
        s.ensure_groups(store, now);
    }
    for p in prepared {
        match p {
            Prepared::Unparseable => s.unparseable += 1,
            Prepared::ThrownAway => s.thrown_away += 1,
            Prepared::Row(ts, row) => {
                let Some(g) = s.groups.get_mut(&gid) else {
                    s.thrown_away += 1;
                    continue;
                };
                let late = g.min_time.is_some_and(|min| ts < min);
                let early = g.max_time.is_some_and(|max| ts > max);
                if late || early {
                    s.thrown_away += 1;
                    continue;
                }
                let r = store.ingest_scoped(
                    &spec.datasource,
                    &spec.schema,
                    ts,
                    &row,
                    bytes / rows,
                    g.scope,
                );
                if !r.stored {
                    s.thrown_away += 1;
                    continue;
                }
                s.ingested += 1;
                if r.new_row {
                    let in_segment = g.scope_rows.entry(r.segment).or_insert(0);
                    *in_segment += 1;
                    g.scope_total += 1;
                    if *in_segment >= spec.handoff.max_rows_per_segment
                        || g.scope_total >= spec.handoff.max_total_rows
                    {
                        handoff(g, store, now);
                    }
                }
            }
        }
    }
}

/// Reads partitions and high watermarks every `refresh` until cancelled or replaced; sets
/// start offsets for partitions never read: earliest or latest per `useEarliestOffset` at
/// the first discovery, earliest for partitions that appear later
/// (SeekableStreamSupervisor.getOffsetFromStorageForPartition: "Overriding
/// useEarliestSequenceNumber and starting from beginning of newly discovered partition").
fn refresh_offsets(
    sup: Arc<Supervisor>,
    spec: KafkaSpec,
    store: Arc<Store>,
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
    let pattern = spec.pattern();
    // Short enough that an unreachable stream turns the supervisor unhealthy within seconds.
    let timeout = Duration::from_secs(2);
    while !cancel.is_cancelled() {
        let started = std::time::Instant::now();
        match discover(&client, &spec, pattern.as_ref(), timeout) {
            Ok(wm) => {
                let mut s = sup.lock();
                if s.generation != generation {
                    return;
                }
                s.connected_once = true;
                s.consecutive_failures = 0;
                s.latest = wm.iter().map(|(p, (_, hi))| (p.clone(), *hi)).collect();
                let now = now_ms();
                s.offsets_updated = Some(now);
                let first = !s.discovered_once;
                for (p, (lo, hi)) in &wm {
                    if !s.current.contains_key(p) {
                        let later = !first && !s.known.contains(p);
                        let start = if spec.use_earliest_offset || later {
                            *lo
                        } else {
                            *hi
                        };
                        s.current.insert(p.clone(), start);
                    }
                    s.known.insert(p.clone());
                }
                s.discovered_once = true;
                s.ensure_groups(&store, now);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stream's offsets");
                let mut s = sup.lock();
                if s.generation != generation {
                    return;
                }
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                sup.record_error(
                    &mut s,
                    "org.apache.druid.indexing.seekablestream.common.StreamException",
                    e,
                );
            }
        }
        // Sleep out the rest of the period in small steps so cancellation is prompt.
        while !cancel.is_cancelled() && started.elapsed() < refresh {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Partition -> (low, high) watermark of every partition of the stream: the topic, or every
/// topic whose whole name matches `topicPattern` (internal topics excluded, as the Java
/// consumer's listTopics does). No matching topic is an error, as in
/// KafkaRecordSupplier.getPartitionIds ("No partitions found for topics that match given
/// pattern").
fn discover(
    c: &BaseConsumer,
    spec: &KafkaSpec,
    pattern: Option<&regex::Regex>,
    timeout: Duration,
) -> Result<BTreeMap<TopicPartition, (i64, i64)>, String> {
    let md = if spec.multi_topic {
        c.fetch_metadata(None, timeout)
    } else {
        c.fetch_metadata(Some(&spec.topic), timeout)
    }
    .map_err(|e| {
        format!(
            "Timeout while fetching offsets of stream [{}]: {e}",
            spec.topic
        )
    })?;
    let mut out = BTreeMap::new();
    for t in md.topics() {
        let internal = t.name().starts_with("__consumer_offsets")
            || t.name().starts_with("__transaction_state");
        if internal || !spec.reads(t.name(), pattern) {
            continue;
        }
        if let Some(e) = t.error() {
            if spec.multi_topic {
                continue;
            }
            return Err(format!(
                "Timeout while fetching offsets of topic [{}]: {:?}",
                t.name(),
                rdkafka::error::RDKafkaErrorCode::from(e)
            ));
        }
        for p in t.partitions() {
            let wm = c.fetch_watermarks(t.name(), p.id(), timeout).map_err(|e| {
                format!(
                    "Timeout while fetching offsets of topic [{}]: {e}",
                    t.name()
                )
            })?;
            out.insert(
                TopicPartition {
                    topic: t.name().to_string(),
                    partition: p.id(),
                },
                wm,
            );
        }
    }
    if out.is_empty() && spec.multi_topic {
        return Err(format!(
            "No partitions found for topics that match given pattern [{}].Check that the \
             pattern regex is correct and matching topics exists",
            spec.topic
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
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
        })
    }

    #[test]
    fn spec_parsing() {
        let raw = base();
        let s = KafkaSpec::from_json(&raw).unwrap();
        assert_eq!(s.id, "clicks");
        assert_eq!(s.timestamp_format, TimestampFormat::Iso);
        assert_eq!(s.schema.segment_granularity, Granularity::from_name("DAY"));
        assert!(s.schema.rollup, "Druid's default");
        assert_eq!(s.schema.query_granularity, Granularity::None);
        assert_eq!(s.task_duration_secs, 600);
        assert!(s.use_earliest_offset);
        assert_eq!((s.task_count, s.replicas), (1, 1));
        assert!(
            s.consumer_properties.is_empty(),
            "Java-only properties are not passed on"
        );
        let mut bad = raw.clone();
        bad["spec"]["ioConfig"]["inputFormat"]["type"] = json!("avro_stream");
        let e = KafkaSpec::from_json(&bad).unwrap_err().to_string();
        assert!(
            e.contains("inputFormat.type") && e.contains("avro_stream"),
            "{e}"
        );
        let mut bad = raw.clone();
        bad["spec"]["ioConfig"]
            .as_object_mut()
            .unwrap()
            .remove("topic");
        assert!(KafkaSpec::from_json(&bad)
            .unwrap_err()
            .to_string()
            .contains("topic"));
        for (path, value, word) in [
            (
                "/spec/dataSchema/metricsSpec",
                json!([{"type": "doubleMax", "name": "m", "fieldName": "x"}]),
                "doubleMax",
            ),
            (
                "/spec/dataSchema/granularitySpec/intervals",
                json!(["2026-01-01/2026-01-02"]),
                "intervals",
            ),
            (
                "/spec/ioConfig/idleConfig",
                json!({"enabled": true}),
                "idleConfig",
            ),
            (
                "/spec/ioConfig/emitTimeLagMetrics",
                json!(true),
                "emitTimeLagMetrics",
            ),
            ("/spec/ioConfig/somethingNew", json!(1), "somethingNew"),
            (
                "/spec/dataSchema/parser",
                json!({"type": "string"}),
                "parser",
            ),
            (
                "/spec/tuningConfig",
                json!({"type": "kafka", "maxParseExceptions": 5}),
                "maxParseExceptions",
            ),
            (
                "/spec/dataSchema/granularitySpec/queryGranularity",
                json!({"type": "hour"}),
                "hour",
            ),
            (
                "/spec/ioConfig/lateMessageRejectionStartDateTime",
                json!("2026-01-01T00:00:00Z"),
                "lateMessageRejectionPeriod",
            ),
        ] {
            let mut bad = raw.clone();
            if word == "lateMessageRejectionPeriod" {
                bad["spec"]["ioConfig"]["lateMessageRejectionPeriod"] = json!("PT1H");
            }
            let (parent, key) = path.rsplit_once('/').unwrap();
            bad.pointer_mut(parent).unwrap()[key] = value;
            let e = KafkaSpec::from_json(&bad).unwrap_err().to_string();
            assert!(e.contains(word), "{path}: {e}");
        }
    }

    #[test]
    fn spec_as_druid_returns_it() {
        // KafkaSupervisorSpec's serialization: `spec` plus the same parts at the top level,
        // unset fields as nulls, periods normalised, granularities as objects.
        let ds = json!({
            "dataSource": "m",
            "timestampSpec": {"column": "ts", "format": "millis", "missingValue": null},
            "dimensionsSpec": {
                "dimensions": [{"type": "string", "name": "user", "multiValueHandling": "SORTED_ARRAY", "createBitmapIndex": true}],
                "dimensionExclusions": ["__time", "ts"],
                "includeAllDimensions": false,
                "useSchemaDiscovery": false
            },
            "metricsSpec": [{"type": "count", "name": "count"}],
            "granularitySpec": {
                "type": "uniform",
                "segmentGranularity": {"type": "period", "period": "P1M", "timeZone": "UTC", "origin": null},
                "queryGranularity": {"type": "none"},
                "rollup": true,
                "intervals": []
            },
            "transformSpec": {"filter": null, "transforms": []}
        });
        let io = json!({
            "type": "kafka",
            "topic": null,
            "topicPattern": "m-.*",
            "inputFormat": {"type": "json", "keepNullColumns": false, "assumeNewlineDelimited": false, "useJsonNodeReader": false},
            "replicas": 1,
            "taskCount": 2,
            "taskDuration": "PT3600S",
            "consumerProperties": {"bootstrap.servers": "b:9092"},
            "autoScalerConfig": null,
            "pollTimeout": 100,
            "startDelay": "PT5S",
            "period": "PT30S",
            "useEarliestOffset": true,
            "completionTimeout": "PT1800S",
            "lateMessageRejectionPeriod": null,
            "earlyMessageRejectionPeriod": null,
            "lateMessageRejectionStartDateTime": null,
            "idleConfig": null,
            "stopTaskCount": null,
            "stream": "m-.*",
            "useEarliestSequenceNumber": true
        });
        let tuning = json!({"type": "kafka", "maxRowsInMemory": 150000, "maxRowsPerSegment": 5000000, "maxTotalRows": 20000000, "intermediateHandoffPeriod": "P2147483647D", "maxParseExceptions": 2147483647, "reportParseExceptions": false});
        let raw = json!({
            "type": "kafka",
            "spec": {"dataSchema": ds, "ioConfig": io, "tuningConfig": tuning},
            "dataSchema": ds, "ioConfig": io, "tuningConfig": tuning,
            "id": "m", "suspended": false, "context": null
        });
        let s = KafkaSpec::from_json(&raw).unwrap();
        assert!(s.multi_topic);
        assert_eq!(s.topic, "m-.*");
        assert_eq!(s.task_count, 2);
        assert_eq!(s.task_duration_ms, 3_600_000);
        assert_eq!(
            s.schema.segment_granularity,
            Granularity::from_name("MONTH")
        );
        assert_eq!(s.schema.query_granularity, Granularity::None);
        assert!(!s.schema.discover);
        // The flat shape alone is accepted too.
        let mut flat = raw.clone();
        flat.as_object_mut().unwrap().remove("spec");
        assert_eq!(KafkaSpec::from_json(&flat).unwrap().schema, s.schema);
    }

    #[test]
    fn message_time_bounds_are_inclusive_and_fixed_at_task_creation() {
        const HOUR: i64 = 3_600_000;
        let mut raw = base();
        raw["spec"]["ioConfig"]["lateMessageRejectionPeriod"] = json!("PT1H");
        raw["spec"]["ioConfig"]["earlyMessageRejectionPeriod"] = json!("PT1H");
        raw["spec"]["ioConfig"]["taskDuration"] = json!("PT1H");
        let spec = KafkaSpec::from_json(&raw).unwrap();
        let store = Store::new(crate::time::Period { millis: HOUR });
        let mut s = State {
            spec: Some(spec.clone()),
            ..State::default()
        };
        let tp = TopicPartition {
            topic: "clicks".into(),
            partition: 0,
        };
        s.current.insert(tp.clone(), 0);
        let created = 10 * HOUR;
        let g = s.new_group(&spec, &store, 0, created);
        assert_eq!((g.min_time, g.max_time), (Some(9 * HOUR), Some(12 * HOUR)));
        s.groups.insert(0, g);
        let row = |ts| Prepared::Row(ts, Map::new());
        let rows = vec![
            row(9 * HOUR),
            row(9 * HOUR - 1),
            row(12 * HOUR),
            row(12 * HOUR + 1),
        ];
        ingest_record(&mut s, &spec, &store, &tp, rows, 4);
        assert_eq!((s.ingested, s.thrown_away), (2, 2));
    }

    #[test]
    fn task_groups_like_kafka_supervisor() {
        let mut raw = base();
        raw["spec"]["ioConfig"]["taskCount"] = json!(3);
        let s = KafkaSpec::from_json(&raw).unwrap();
        let tp = |t: &str, p| TopicPartition {
            topic: t.into(),
            partition: p,
        };
        assert_eq!(s.group_of(&tp("clicks", 4)), 1);
        raw["spec"]["ioConfig"]
            .as_object_mut()
            .unwrap()
            .remove("topic");
        raw["spec"]["ioConfig"]["topicPattern"] = json!("c.*");
        let m = KafkaSpec::from_json(&raw).unwrap();
        // Java: "ab".hashCode() = 97 * 31 + 98 = 3105; abs(31 * 3105 + 1) % 3 = 96256 % 3.
        assert_eq!(m.group_of(&tp("ab", 1)), 96_256 % 3);
        assert_eq!(tp("ab", 1).key(true), "ab:1");
        assert_eq!(tp("ab", 1).key(false), "1");
        let p = m.pattern();
        assert!(m.reads("clicks", p.as_ref()));
        assert!(!m.reads("my-clicks", p.as_ref()), "whole-name match only");
    }
}
