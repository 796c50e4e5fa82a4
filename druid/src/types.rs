//! The Druid answers lockstep reads, as documented (see the project's druid-api notes):
//! SQL object rows for `sys.segments` and per-bucket counts, and the supervisor list and
//! status payloads. Fields lockstep does not use are ignored; numbers are read leniently
//! (a `SUM` may come back as `12.0`, a `num_rows` as null).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A number that may arrive as an integer, a float, a numeric string or null (-> 0).
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.round() as i64))
            .ok_or_else(|| serde::de::Error::custom(format!("number out of range: {n}"))),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map(|f| f.round() as i64)
            .map_err(|_| serde::de::Error::custom(format!("not a number: {s:?}"))),
        other => Err(serde::de::Error::custom(format!(
            "expected a number, got {other}"
        ))),
    }
}

/// Partition -> offset maps; Druid keys partitions by their number as a string.
fn offsets_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<i32, i64>, D::Error> {
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (k, v) in raw.unwrap_or_default() {
        let p: i32 = k.parse().map_err(|_| {
            serde::de::Error::custom(format!("partition key {k:?} is not a number"))
        })?;
        // Null lag (not yet computed) is skipped rather than read as zero.
        if let Some(n) = v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)) {
            out.insert(p, n);
        }
    }
    Ok(out)
}

/// One row of the `sys.segments` query grouped by interval.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SegmentInterval {
    pub start: String,
    pub end: String,
    /// `SUM("num_rows")`: null when no segment is loaded yet.
    #[serde(deserialize_with = "lenient_i64")]
    pub rows: i64,
    #[serde(deserialize_with = "lenient_i64", default)]
    pub segments: i64,
}

/// One row of the per-bucket count query.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct BucketRow {
    pub bucket: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub rows: i64,
}

/// `SELECT MAX(__time) AS "latest"`: null for an empty datasource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LatestRow {
    pub latest: Option<String>,
}

/// One entry of `GET /druid/indexer/v1/supervisor?state=true`.
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

/// `GET /druid/indexer/v1/supervisor/{id}/status`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorStatus {
    pub id: String,
    #[serde(default)]
    pub generation_time: Option<String>,
    pub payload: SupervisorPayload,
}

/// The status payload of a Kafka supervisor.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorPayload {
    #[serde(default)]
    pub data_source: Option<String>,
    /// The topic the supervisor reads.
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub partitions: Option<i64>,
    #[serde(default)]
    pub active_tasks: Vec<TaskReport>,
    #[serde(default)]
    pub publishing_tasks: Vec<TaskReport>,
    /// Partition -> end offset of the stream (site offsets).
    #[serde(default, deserialize_with = "offsets_map")]
    pub latest_offsets: BTreeMap<i32, i64>,
    /// Partition -> lag behind `latest_offsets`.
    #[serde(default, deserialize_with = "offsets_map")]
    pub minimum_lag: BTreeMap<i32, i64>,
    #[serde(default)]
    pub aggregate_lag: Option<i64>,
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
    #[serde(default)]
    pub recent_errors: Vec<Value>,
}

/// An ingestion task in a supervisor status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub id: String,
    #[serde(default, deserialize_with = "offsets_map")]
    pub starting_offsets: BTreeMap<i32, i64>,
    /// Partition -> next offset the task will read (site offsets).
    #[serde(default, deserialize_with = "offsets_map")]
    pub current_offsets: BTreeMap<i32, i64>,
    #[serde(default, deserialize_with = "offsets_map")]
    pub lag: BTreeMap<i32, i64>,
}

impl SupervisorPayload {
    /// Per partition, the next site offset Druid will ingest: the furthest `currentOffsets`
    /// of its reading and publishing tasks, else `latestOffsets - minimumLag`. Partitions with
    /// neither are absent (unknown, not zero).
    pub fn ingested_end(&self) -> BTreeMap<i32, i64> {
        let mut out: BTreeMap<i32, i64> = BTreeMap::new();
        for task in self.active_tasks.iter().chain(&self.publishing_tasks) {
            for (&p, &o) in &task.current_offsets {
                let e = out.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
        }
        for (&p, &latest) in &self.latest_offsets {
            if let (std::collections::btree_map::Entry::Vacant(v), Some(lag)) =
                (out.entry(p), self.minimum_lag.get(&p))
            {
                v.insert(latest - lag);
            }
        }
        out
    }

    /// Recent errors as one-line texts.
    pub fn recent_error_texts(&self) -> Vec<String> {
        self.recent_errors
            .iter()
            .map(|e| match e {
                Value::String(s) => s.clone(),
                Value::Object(m) => m
                    .get("exceptionMessage")
                    .or_else(|| m.get("message"))
                    .or_else(|| m.get("errorMessage"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string()),
                other => other.to_string(),
            })
            .collect()
    }
}
