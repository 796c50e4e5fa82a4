//! Druid's error responses, in the three body shapes a client meets (druid-api.md, "three
//! error generations"): the legacy `{error, errorMessage, errorClass, host}` shape (before 27),
//! the `druidException` shape, and Druid 27+'s hybrid for old query exceptions
//! (`errorCode: "legacyQueryException"`); plus the emulator's own library error.
//!
//! Bodies are written with their keys in Druid's order (Jackson writes the `LinkedHashMap` of
//! `ErrorResponse.getAsMap()` in insertion order), not in serde_json's sorted order.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Which error body shape the emulator writes (a fault switch lets tests pick).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorShape {
    /// Every error as a `DruidException`:
    /// `{"error":"druidException","errorCode":...,"persona":...,"category":...,"errorMessage":...,"context":{}}`.
    #[default]
    Modern,
    /// Before Druid 27: `{"error":"Plan validation failed","errorMessage":...,"errorClass":...,"host":null}`.
    Legacy,
    /// Druid 27+ as it really answers: planning errors as `DruidException`s, and query
    /// exceptions (timeouts, capacity, failures on data servers) in the `legacyQueryException`
    /// wrapper with the legacy `error`, `errorClass` and `host` at top level and in `context`
    /// (ErrorResponse.getAsMap / QueryExceptionCompat in processing/.../druid/error/).
    Hybrid,
}

/// The kind of a Druid error, which fixes HTTP status, codes and legacy class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad SQL, unknown table or column, unsupported query: HTTP 400.
    InvalidInput,
    /// Server-side failure: HTTP 500.
    Runtime,
    /// Query timed out: HTTP 504.
    Timeout,
    /// Too many queries: HTTP 429.
    Capacity,
}

/// Where in the SQL text an error points: 1-based, end column inclusive, as Calcite counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlPos {
    pub line: u64,
    pub column: u64,
    pub end_line: u64,
    pub end_column: u64,
}

/// One Druid error response.
#[derive(Debug, Clone)]
pub struct DruidError {
    pub kind: Kind,
    /// `errorMessage` of the `druidException` shape.
    pub message: String,
    pub shape: ErrorShape,
    /// `context` entries of the `druidException` shape, in order.
    pub context: Vec<(String, String)>,
    /// `errorMessage` of the legacy shapes when it differs from `message`.
    pub legacy_message: Option<String>,
    /// The server the legacy shapes name in `host` (a data server for query exceptions).
    pub host: Option<String>,
}

/// SQL planning errors carry `sourceType: sql` (InvalidSqlInput.makeException).
fn sql_context() -> Vec<(String, String)> {
    vec![("sourceType".into(), "sql".into())]
}

impl DruidError {
    /// A 400 `invalidInput` from SQL planning (InvalidSqlInput: context `sourceType: sql`).
    pub fn invalid(message: impl Into<String>) -> DruidError {
        DruidError {
            kind: Kind::InvalidInput,
            message: message.into(),
            shape: ErrorShape::Modern,
            context: sql_context(),
            legacy_message: None,
            host: None,
        }
    }

    pub fn runtime(message: impl Into<String>) -> DruidError {
        DruidError {
            kind: Kind::Runtime,
            message: message.into(),
            shape: ErrorShape::Modern,
            context: Vec::new(),
            legacy_message: None,
            host: None,
        }
    }

    /// Calcite's unknown-table error as Druid relays it. Calcite's validator says
    /// "Object 'x' not found" for an unqualified name and "Object 'x' not found within 's'"
    /// when the schema resolved (CalciteResource.objectNotFound / objectNotFoundWithin);
    /// DruidPlanner.parseValidationMessage (sql/.../calcite/planner/DruidPlanner.java)
    /// appends " (line [l], column [c])" and adds `line`, `column`, `endLine`, `endColumn`
    /// (strings) to the context after InvalidSqlInput's `sourceType: sql`. Before Druid 27 the
    /// body was SqlPlanningException's "Plan validation failed" whose `errorMessage` is the
    /// ValidationException's message, the CalciteContextException's `toString()`:
    /// "org.apache.calcite.runtime.CalciteContextException: From line 1, column 15 to line 1,
    /// column 18: Object 'nope' not found" (sql/.../druid/sql/SqlPlanningException.java).
    pub fn object_not_found(name: &str, within: Option<&str>, pos: SqlPos) -> DruidError {
        let what = match within {
            Some(schema) => format!("Object '{name}' not found within '{schema}'"),
            None => format!("Object '{name}' not found"),
        };
        let mut context = sql_context();
        context.extend([
            ("line".to_string(), pos.line.to_string()),
            ("column".to_string(), pos.column.to_string()),
            ("endLine".to_string(), pos.end_line.to_string()),
            ("endColumn".to_string(), pos.end_column.to_string()),
        ]);
        DruidError {
            kind: Kind::InvalidInput,
            message: format!("{what} (line [{}], column [{}])", pos.line, pos.column),
            shape: ErrorShape::Modern,
            context,
            legacy_message: Some(format!(
                "org.apache.calcite.runtime.CalciteContextException: From line {}, column {} to line {}, column {}: {what}",
                pos.line, pos.column, pos.end_line, pos.end_column
            )),
            host: None,
        }
    }

    /// A query that timed out (HTTP 504, QueryTimeoutException.STATUS_CODE).
    /// - Legacy and hybrid shapes: the Broker's QueryTimeoutException for a data server that
    ///   did not answer in time, "url[http://HOST/druid/v2/] timed out" with that server as
    ///   `host` (JsonParserIterator.timeoutQuery in server/.../druid/client/).
    /// - `druidException` shape: a timeout Druid raises as a DruidException itself,
    ///   `forPersona(USER).ofCategory(TIMEOUT)` with the in-line builder's errorCode "general"
    ///   (DruidException.forPersona) and "Failed to acquire segment references to process
    ///   query" (ServerManager.getSegmentReferences in server/.../coordination/).
    pub fn timeout(host: &str) -> DruidError {
        DruidError {
            kind: Kind::Timeout,
            message: "Failed to acquire segment references to process query".into(),
            shape: ErrorShape::Modern,
            context: Vec::new(),
            legacy_message: Some(format!("url[http://{host}/druid/v2/] timed out")),
            host: Some(host.to_string()),
        }
    }

    /// The same error written in `shape`.
    pub fn with_shape(mut self, shape: ErrorShape) -> DruidError {
        self.shape = shape;
        self
    }

    /// The HTTP status: DruidException.Category's expected status (INVALID_INPUT 400,
    /// RUNTIME_FAILURE 500, CAPACITY_EXCEEDED 429, TIMEOUT 504), which QueryException.FailType
    /// gives the legacy shapes too.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::InvalidInput => StatusCode::BAD_REQUEST,
            Kind::Runtime => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::Capacity => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The legacy `error` code and `errorClass` (QueryException's error codes).
    fn legacy_code(&self) -> (&'static str, &'static str) {
        match self.kind {
            Kind::InvalidInput => (
                "Plan validation failed",
                "org.apache.calcite.tools.ValidationException",
            ),
            Kind::Runtime => ("Unknown exception", "java.lang.RuntimeException"),
            Kind::Timeout => (
                "Query timeout",
                "org.apache.druid.query.QueryTimeoutException",
            ),
            Kind::Capacity => (
                "Query capacity exceeded",
                "org.apache.druid.query.QueryCapacityExceededException",
            ),
        }
    }

    fn legacy_message(&self) -> &str {
        self.legacy_message.as_deref().unwrap_or(&self.message)
    }

    /// The body's fields, in Druid's order.
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let host = self.host.clone().map_or(Value::Null, Value::String);
        match (self.shape, self.kind) {
            (ErrorShape::Legacy, _) => {
                // QueryException's @JsonProperty getters: error, errorMessage, errorClass, host.
                let (error, class) = self.legacy_code();
                vec![
                    ("error", json!(error)),
                    ("errorMessage", json!(self.legacy_message())),
                    ("errorClass", json!(class)),
                    ("host", host),
                ]
            }
            (ErrorShape::Hybrid, Kind::Runtime | Kind::Timeout | Kind::Capacity) => {
                // ErrorResponse.getAsMap for a QueryExceptionCompat: error (legacyErrorCode),
                // errorClass, host, then the DruidException fields; QueryExceptionCompat
                // targets OPERATOR, maps the FailType to the category (Unknown exception ->
                // QUERY_RUNTIME_FAILURE -> RUNTIME_FAILURE, Query timeout -> TIMEOUT, Query
                // capacity exceeded -> CAPACITY_EXCEEDED) and puts host, errorClass and
                // legacyErrorCode in the context, in that order.
                let (error, class) = self.legacy_code();
                let category = match self.kind {
                    Kind::Timeout => "TIMEOUT",
                    Kind::Capacity => "CAPACITY_EXCEEDED",
                    _ => "RUNTIME_FAILURE",
                };
                vec![
                    ("error", json!(error)),
                    ("errorClass", json!(class)),
                    ("host", host.clone()),
                    ("errorCode", json!("legacyQueryException")),
                    ("persona", json!("OPERATOR")),
                    ("category", json!(category)),
                    ("errorMessage", json!(self.legacy_message())),
                    (
                        "context",
                        Value::String(ordered(&[
                            ("host", host),
                            ("errorClass", json!(class)),
                            ("legacyErrorCode", json!(error)),
                        ])),
                    ),
                ]
            }
            _ => {
                // ErrorResponse.getAsMap for a DruidException: error "druidException",
                // errorCode, persona, category, errorMessage, context.
                let (code, persona, category) = match self.kind {
                    Kind::InvalidInput => ("invalidInput", "USER", "INVALID_INPUT"),
                    Kind::Runtime => ("general", "OPERATOR", "RUNTIME_FAILURE"),
                    Kind::Timeout => ("general", "USER", "TIMEOUT"),
                    Kind::Capacity => ("capacityExceeded", "USER", "CAPACITY_EXCEEDED"),
                };
                let context: Vec<(&str, Value)> = self
                    .context
                    .iter()
                    .map(|(k, v)| (k.as_str(), json!(v)))
                    .collect();
                vec![
                    ("error", json!("druidException")),
                    ("errorCode", json!(code)),
                    ("persona", json!(persona)),
                    ("category", json!(category)),
                    ("errorMessage", json!(self.message)),
                    ("context", Value::String(ordered(&context))),
                ]
            }
        }
    }

    /// The JSON body as Druid writes it (keys in Druid's order).
    pub fn body_text(&self) -> String {
        ordered(&self.fields())
    }

    /// The JSON body, in this error's shape.
    pub fn body(&self) -> Value {
        serde_json::from_str(&self.body_text()).unwrap_or(Value::Null)
    }
}

/// Writes an object with its keys in the given order. A `Value::String` under "context" is
/// an already written object (so nested order survives); every other value is serialized.
fn ordered(fields: &[(&str, Value)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| {
            let v = match (*k, v) {
                ("context", Value::String(raw)) => raw.clone(),
                _ => v.to_string(),
            };
            format!("{}:{v}", Value::String((*k).to_string()))
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

impl IntoResponse for DruidError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), self.body_text()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// Errors of the emulator's Rust API (start-up, supervisor specs, load generation).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("supervisor spec: {0}")]
    Spec(String),
    #[error("kafka ({context}): {source}")]
    Kafka {
        context: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("load generator: {0}")]
    Load(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos() -> SqlPos {
        SqlPos {
            line: 1,
            column: 15,
            end_line: 1,
            end_column: 18,
        }
    }

    #[test]
    fn unknown_table_in_every_shape() {
        let e = DruidError::object_not_found("nope", None, pos());
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body_text(),
            r#"{"error":"druidException","errorCode":"invalidInput","persona":"USER","category":"INVALID_INPUT","errorMessage":"Object 'nope' not found (line [1], column [15])","context":{"sourceType":"sql","line":"1","column":"15","endLine":"1","endColumn":"18"}}"#
        );
        // Planning errors are DruidExceptions in Druid 27+, so the hybrid writes them alike.
        let h = e.clone().with_shape(ErrorShape::Hybrid);
        assert_eq!(h.body_text(), e.body_text());
        let l = e.with_shape(ErrorShape::Legacy);
        assert_eq!(
            l.body_text(),
            r#"{"error":"Plan validation failed","errorMessage":"org.apache.calcite.runtime.CalciteContextException: From line 1, column 15 to line 1, column 18: Object 'nope' not found","errorClass":"org.apache.calcite.tools.ValidationException","host":null}"#
        );
    }

    #[test]
    fn timeout_in_every_shape() {
        let e = DruidError::timeout("127.0.0.1:8083");
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            e.body_text(),
            r#"{"error":"druidException","errorCode":"general","persona":"USER","category":"TIMEOUT","errorMessage":"Failed to acquire segment references to process query","context":{}}"#
        );
        assert_eq!(
            e.clone().with_shape(ErrorShape::Legacy).body_text(),
            r#"{"error":"Query timeout","errorMessage":"url[http://127.0.0.1:8083/druid/v2/] timed out","errorClass":"org.apache.druid.query.QueryTimeoutException","host":"127.0.0.1:8083"}"#
        );
        assert_eq!(
            e.with_shape(ErrorShape::Hybrid).body_text(),
            r#"{"error":"Query timeout","errorClass":"org.apache.druid.query.QueryTimeoutException","host":"127.0.0.1:8083","errorCode":"legacyQueryException","persona":"OPERATOR","category":"TIMEOUT","errorMessage":"url[http://127.0.0.1:8083/druid/v2/] timed out","context":{"host":"127.0.0.1:8083","errorClass":"org.apache.druid.query.QueryTimeoutException","legacyErrorCode":"Query timeout"}}"#
        );
    }

    #[test]
    fn hybrid_runtime_failure_has_null_host() {
        let b = DruidError::runtime("boom")
            .with_shape(ErrorShape::Hybrid)
            .body();
        assert_eq!(b["error"], "Unknown exception");
        assert_eq!(b["category"], "RUNTIME_FAILURE");
        assert_eq!(b["host"], Value::Null);
        assert_eq!(b["context"]["host"], Value::Null);
        assert_eq!(b["context"]["legacyErrorCode"], "Unknown exception");
    }
}
