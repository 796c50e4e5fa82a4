//! Druid's error responses, in both body shapes a client meets (druid-api.md):
//! the newer `druidException` shape (Druid 27+) and the legacy
//! `{error, errorMessage, errorClass, host}` shape; plus the emulator's own library error.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Which error body shape the emulator writes (a fault switch lets tests pick).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorShape {
    /// `{"error":"druidException","errorCode":...,"persona":...,"category":...,"errorMessage":...,"context":{}}`
    #[default]
    Modern,
    /// `{"error":"Plan validation failed","errorMessage":...,"errorClass":...,"host":null}`
    Legacy,
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

/// One Druid error response.
#[derive(Debug, Clone)]
pub struct DruidError {
    pub kind: Kind,
    pub message: String,
    pub shape: ErrorShape,
}

impl DruidError {
    pub fn invalid(message: impl Into<String>) -> DruidError {
        DruidError {
            kind: Kind::InvalidInput,
            message: message.into(),
            shape: ErrorShape::Modern,
        }
    }

    pub fn runtime(message: impl Into<String>) -> DruidError {
        DruidError {
            kind: Kind::Runtime,
            message: message.into(),
            shape: ErrorShape::Modern,
        }
    }

    /// The same error written in `shape`.
    pub fn with_shape(mut self, shape: ErrorShape) -> DruidError {
        self.shape = shape;
        self
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::InvalidInput => StatusCode::BAD_REQUEST,
            Kind::Runtime => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::Capacity => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The JSON body, in this error's shape.
    pub fn body(&self) -> serde_json::Value {
        match self.shape {
            ErrorShape::Modern => {
                let (code, persona, category) = match self.kind {
                    Kind::InvalidInput => ("invalidInput", "USER", "INVALID_INPUT"),
                    Kind::Runtime => ("general", "OPERATOR", "RUNTIME_FAILURE"),
                    Kind::Timeout => ("timeout", "USER", "TIMEOUT"),
                    Kind::Capacity => ("capacityExceeded", "USER", "CAPACITY_EXCEEDED"),
                };
                json!({
                    "error": "druidException",
                    "errorCode": code,
                    "persona": persona,
                    "category": category,
                    "errorMessage": self.message,
                    "context": { "sourceType": "sql" },
                })
            }
            ErrorShape::Legacy => {
                let (error, class) = match self.kind {
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
                };
                json!({
                    "error": error,
                    "errorMessage": self.message,
                    "errorClass": class,
                    "host": null,
                })
            }
        }
    }
}

impl IntoResponse for DruidError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
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
