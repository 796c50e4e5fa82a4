//! What drift needs from a Kafka supervisor spec, read from the shape Druid returns at
//! `GET /druid/indexer/v1/supervisor/{id}` (docs/api-reference/supervisor-api.md, "Get
//! supervisor specification"): Druid serializes the spec object, which carries the ingestion
//! spec both under `spec` and, for compatibility, as top-level `dataSchema`, `ioConfig` and
//! `tuningConfig` (older versions only the top-level ones: SeekableStreamSupervisorSpec's
//! `@JsonProperty` getters); the spec as submitted has only `spec`. Granularities come back
//! normalized: a standard period as its name (`"HOUR"`), `none`/`all` and other granularities
//! as objects (`{"type": "none"}`, `{"type": "period", ...}`).

use serde::Serialize;
use serde_json::{Map, Value};

/// What drift needs from a supervisor spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecSummary {
    /// `dataSchema.dataSource`.
    pub datasource: Option<String>,
    /// `dataSchema.granularitySpec.rollup`; Druid's default is true
    /// (docs/ingestion/ingestion-spec.md, granularitySpec).
    pub rollup: bool,
    /// Names of the `{"type": "count"}` aggregators in `dataSchema.metricsSpec`.
    pub count_metrics: Vec<String>,
    /// `ioConfig.topic` (single-topic supervisor).
    pub topic: Option<String>,
    /// `ioConfig.topicPattern` (multi-topic supervisor, Druid 28+).
    pub topic_pattern: Option<String>,
    /// `dataSchema.granularitySpec.queryGranularity`, normalized (see [`granularity_name`]);
    /// Druid's default `NONE` when the spec leaves it out.
    pub query_granularity: Option<String>,
    /// `dataSchema.granularitySpec.segmentGranularity`, normalized; default `DAY`.
    pub segment_granularity: Option<String>,
    /// `ioConfig.inputFormat.type` (`json`, `csv`, `kafka`, ...), if an inputFormat is set.
    pub input_format: Option<String>,
    /// The spec's `type` (`kafka`).
    pub supervisor_type: Option<String>,
}

/// A supervisor spec lockstep cannot read; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("supervisor spec has no {field}")]
    Missing { field: &'static str },
    #[error("supervisor spec field {field}: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A JSON value that is present and not null.
fn present<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn opt_string(m: &Map<String, Value>, key: &str, field: &str) -> Result<Option<String>, SpecError> {
    match present(m, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(field, format!("expected a string, got {other}"))),
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, SpecError> {
    v.as_object()
        .ok_or_else(|| invalid(field, format!("expected an object, got {v}")))
}

/// GranularityType's standard periods (processing/.../java/util/common/granularity/
/// GranularityType.java): a `{"type":"period"}` granularity in UTC without origin equals
/// the named one, and Druid itself writes those by name (PeriodGranularity.serialize).
const STANDARD_PERIODS: &[(&str, &str)] = &[
    ("PT1S", "SECOND"),
    ("PT1M", "MINUTE"),
    ("PT5M", "FIVE_MINUTE"),
    ("PT10M", "TEN_MINUTE"),
    ("PT15M", "FIFTEEN_MINUTE"),
    ("PT30M", "THIRTY_MINUTE"),
    ("PT1H", "HOUR"),
    ("PT6H", "SIX_HOUR"),
    ("PT8H", "EIGHT_HOUR"),
    ("P1D", "DAY"),
    ("P1W", "WEEK"),
    ("P1M", "MONTH"),
    ("P3M", "QUARTER"),
    ("P1Y", "YEAR"),
];

/// A granularity in any of the forms Druid accepts and writes (docs/querying/granularities.md),
/// normalized so that equal granularities compare equal:
/// - a string (`"hour"`, `"NONE"`, case-insensitive as Granularity.fromString reads it) ->
///   its upper-case name (`HOUR`, `NONE`);
/// - `{"type": "none"}` / `{"type": "all"}` -> `NONE` / `ALL`;
/// - `{"type": "period", "period": "PT1H"}` in UTC without origin -> the standard name
///   (`HOUR`), otherwise the period with its time zone and origin (`P1D tz=America/Los_Angeles`);
/// - `{"type": "duration", "duration": 3600000}` -> `DURATION 3600000ms` (plus origin).
pub fn granularity_name(v: &Value, field: &str) -> Result<String, SpecError> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_ascii_uppercase()),
        Value::Object(m) => {
            let kind = opt_string(m, "type", &format!("{field}.type"))?
                .ok_or_else(|| invalid(field, "granularity object without \"type\""))?;
            match kind.as_str() {
                "none" => Ok("NONE".to_string()),
                "all" => Ok("ALL".to_string()),
                "period" => {
                    let period = opt_string(m, "period", &format!("{field}.period"))?
                        .ok_or_else(|| invalid(field, "period granularity without \"period\""))?
                        .to_ascii_uppercase();
                    let tz = opt_string(m, "timeZone", &format!("{field}.timeZone"))?
                        .filter(|z| !z.eq_ignore_ascii_case("UTC") && z != "Etc/UTC");
                    let origin = opt_string(m, "origin", &format!("{field}.origin"))?;
                    if tz.is_none() && origin.is_none() {
                        if let Some((_, name)) = STANDARD_PERIODS.iter().find(|(p, _)| *p == period)
                        {
                            return Ok((*name).to_string());
                        }
                    }
                    let mut out = period;
                    if let Some(tz) = tz {
                        out.push_str(&format!(" tz={tz}"));
                    }
                    if let Some(o) = origin {
                        out.push_str(&format!(" origin={o}"));
                    }
                    Ok(out)
                }
                "duration" => {
                    let ms = match present(m, "duration") {
                        Some(Value::Number(n)) => n.as_i64(),
                        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
                        _ => None,
                    }
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        invalid(
                            field,
                            "duration granularity without a positive \"duration\"",
                        )
                    })?;
                    let mut out = format!("DURATION {ms}ms");
                    if let Some(o) = opt_string(m, "origin", &format!("{field}.origin"))? {
                        out.push_str(&format!(" origin={o}"));
                    }
                    Ok(out)
                }
                other => Err(invalid(
                    field,
                    format!("unknown granularity type {other:?}"),
                )),
            }
        }
        other => Err(invalid(
            field,
            format!("expected a granularity string or object, got {other}"),
        )),
    }
}

/// `true`/`false`, also as the strings Jackson coerces to a Boolean.
fn boolean(v: &Value, field: &str) -> Result<bool, SpecError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(invalid(
            field,
            format!("expected true or false, got {other}"),
        )),
    }
}

impl SpecSummary {
    /// Reads a supervisor spec as `GET /druid/indexer/v1/supervisor/{id}` returns it (or as
    /// submitted): `spec.dataSchema` / `spec.ioConfig`, else top-level `dataSchema` /
    /// `ioConfig`. Missing defaults are Druid's: rollup true, queryGranularity NONE,
    /// segmentGranularity DAY (docs/ingestion/ingestion-spec.md).
    pub fn from_json(v: &Value) -> Result<SpecSummary, SpecError> {
        let root = object(v, "(spec)")?;
        let inner = present(root, "spec").and_then(Value::as_object);
        let pick = |name: &str| {
            inner
                .and_then(|s| present(s, name))
                .or_else(|| present(root, name))
        };
        let data_schema = object(
            pick("dataSchema").ok_or(SpecError::Missing {
                field: "spec.dataSchema (or dataSchema)",
            })?,
            "dataSchema",
        )?;
        let io = object(
            pick("ioConfig").ok_or(SpecError::Missing {
                field: "spec.ioConfig (or ioConfig)",
            })?,
            "ioConfig",
        )?;

        let datasource = opt_string(data_schema, "dataSource", "dataSchema.dataSource")?;

        let granularity = match present(data_schema, "granularitySpec") {
            Some(g) => Some(object(g, "dataSchema.granularitySpec")?),
            None => None,
        };
        let rollup = match granularity.and_then(|g| present(g, "rollup")) {
            Some(r) => boolean(r, "dataSchema.granularitySpec.rollup")?,
            None => true,
        };
        let query_granularity = match granularity.and_then(|g| present(g, "queryGranularity")) {
            Some(q) => granularity_name(q, "dataSchema.granularitySpec.queryGranularity")?,
            None => "NONE".to_string(),
        };
        let segment_granularity = match granularity.and_then(|g| present(g, "segmentGranularity")) {
            Some(s) => granularity_name(s, "dataSchema.granularitySpec.segmentGranularity")?,
            None => "DAY".to_string(),
        };

        let mut count_metrics = Vec::new();
        match present(data_schema, "metricsSpec") {
            None => {}
            Some(Value::Array(aggs)) => {
                for (i, agg) in aggs.iter().enumerate() {
                    let field = format!("dataSchema.metricsSpec[{i}]");
                    let agg = object(agg, &field)?;
                    let kind = opt_string(agg, "type", &format!("{field}.type"))?;
                    if kind.as_deref() == Some("count") {
                        let name = opt_string(agg, "name", &format!("{field}.name"))?
                            .ok_or_else(|| invalid(&field, "count aggregator without \"name\""))?;
                        count_metrics.push(name);
                    }
                }
            }
            Some(other) => {
                return Err(invalid(
                    "dataSchema.metricsSpec",
                    format!("expected an array, got {other}"),
                ))
            }
        }

        let topic = opt_string(io, "topic", "ioConfig.topic")?.filter(|t| !t.is_empty());
        let topic_pattern =
            opt_string(io, "topicPattern", "ioConfig.topicPattern")?.filter(|t| !t.is_empty());
        // docs/ingestion/kafka-ingestion.md: `topic` is required unless `topicPattern` is set,
        // and a spec names one of them. An ioConfig that echoes the pattern as `topic` too (a
        // `getTopic()` that returns the stream) is read as the pattern.
        let topic = match (topic, &topic_pattern) {
            (None, None) => {
                return Err(SpecError::Missing {
                    field: "ioConfig.topic (or ioConfig.topicPattern)",
                })
            }
            (Some(t), Some(p)) if &t == p => None,
            (Some(t), Some(p)) => {
                return Err(invalid(
                    "ioConfig",
                    format!("sets both topic {t:?} and topicPattern {p:?}; Druid takes one"),
                ))
            }
            (t, _) => t,
        };
        let input_format = match present(io, "inputFormat") {
            Some(f) => opt_string(
                object(f, "ioConfig.inputFormat")?,
                "type",
                "ioConfig.inputFormat.type",
            )?,
            None => None,
        };

        Ok(SpecSummary {
            datasource,
            rollup,
            count_metrics,
            topic,
            topic_pattern,
            query_granularity: Some(query_granularity),
            segment_granularity: Some(segment_granularity),
            input_format,
            supervisor_type: opt_string(root, "type", "type")?,
        })
    }
}
