//! `DruidError`: every way a call to a site's Druid can fail, each naming the site and the
//! endpoint. Built from HTTP outcomes in one place ([`DruidError::from_response`]), so that
//! both Druid error shapes, a proxy's HTML page, 401/403, a timeout and malformed JSON all
//! come out typed. Bodies are cut to a short snippet; credentials never appear.

use serde_json::Value;

/// Longest body excerpt an error carries.
const SNIPPET: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum DruidError {
    /// The client could not be built (bad URL, unreadable CA file).
    #[error("site {site}: Druid client setup: {message}")]
    Setup { site: String, message: String },
    /// No HTTP answer: connection refused, DNS, TLS handshake, reset.
    #[error("site {site}: Druid unreachable ({endpoint}): {detail}")]
    Unreachable {
        site: String,
        endpoint: String,
        /// The transport error and its causes, on one line.
        detail: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer within the site's `druid.timeout`.
    #[error("site {site}: Druid timed out ({endpoint})")]
    Timeout { site: String, endpoint: String },
    /// 401 or 403: missing or wrong credentials, or no permission.
    #[error("site {site}: Druid refused access ({endpoint}): HTTP {status}: {body}")]
    Unauthorized {
        site: String,
        endpoint: String,
        status: u16,
        body: String,
    },
    /// Druid answered with an error in either of its JSON shapes.
    #[error("site {site}: Druid error ({endpoint}): HTTP {status}: {}{}", body.code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default(), body.message)]
    Druid {
        site: String,
        endpoint: String,
        status: u16,
        body: Box<ErrorBody>,
    },
    /// The body is not JSON (a proxy's HTML error page, a truncated answer).
    #[error("site {site}: Druid answered non-JSON ({endpoint}): HTTP {status}: {snippet}")]
    NotJson {
        site: String,
        endpoint: String,
        status: u16,
        snippet: String,
    },
    /// JSON, but not the documented shape.
    #[error("site {site}: unexpected Druid answer ({endpoint}): {message}")]
    Decode {
        site: String,
        endpoint: String,
        message: String,
    },
}

/// A Druid error body, read from either shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// Newer shape: `errorCode` (e.g. `invalidInput`); legacy shape: `error`
    /// (e.g. `Plan validation failed`).
    pub code: Option<String>,
    /// Newer shape only: `category` (e.g. `INVALID_INPUT`).
    pub category: Option<String>,
    /// `errorMessage`.
    pub message: String,
    /// Legacy shape only: `errorClass`.
    pub class: Option<String>,
}

impl DruidError {
    /// The site the error is about.
    pub fn site(&self) -> &str {
        match self {
            DruidError::Setup { site, .. }
            | DruidError::Unreachable { site, .. }
            | DruidError::Timeout { site, .. }
            | DruidError::Unauthorized { site, .. }
            | DruidError::Druid { site, .. }
            | DruidError::NotJson { site, .. }
            | DruidError::Decode { site, .. } => site,
        }
    }

    /// A short label for metrics: `setup`, `unreachable`, `timeout`, `unauthorized`, `druid`,
    /// `not_json`, `decode`.
    /// Every value [`DruidError::kind`] returns, for metric labels.
    pub const KINDS: &'static [&'static str] = &[
        "setup",
        "unreachable",
        "timeout",
        "unauthorized",
        "druid",
        "not_json",
        "decode",
    ];

    /// Whether Druid itself answered (an error of its own, a refusal, an unexpected shape),
    /// as opposed to no answer or something else answering (a proxy's page).
    pub fn druid_answered(&self) -> bool {
        matches!(
            self,
            DruidError::Unauthorized { .. } | DruidError::Druid { .. } | DruidError::Decode { .. }
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            DruidError::Setup { .. } => "setup",
            DruidError::Unreachable { .. } => "unreachable",
            DruidError::Timeout { .. } => "timeout",
            DruidError::Unauthorized { .. } => "unauthorized",
            DruidError::Druid { .. } => "druid",
            DruidError::NotJson { .. } => "not_json",
            DruidError::Decode { .. } => "decode",
        }
    }

    /// Druid's answer to SQL over a datasource it does not know (no data ingested yet):
    /// HTTP 400 with "... not found" in either error shape.
    pub fn is_missing_table(&self) -> bool {
        match self {
            DruidError::Druid { status, body, .. } => {
                *status == 400
                    && (body.message.contains("not found") || body.message.contains("Not found"))
                    && (body.message.contains("Table") || body.message.contains("Object"))
            }
            _ => false,
        }
    }

    /// No answer within the site's timeout.
    pub fn timeout(site: &str, endpoint: &str) -> Self {
        DruidError::Timeout {
            site: site.to_string(),
            endpoint: endpoint.to_string(),
        }
    }

    /// A transport failure (no HTTP answer); the detail is the error with its causes.
    pub fn unreachable(
        site: &str,
        endpoint: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let mut detail = source.to_string();
        let mut cause = source.source();
        while let Some(c) = cause {
            detail.push_str(": ");
            detail.push_str(&c.to_string());
            cause = c.source();
        }
        DruidError::Unreachable {
            site: site.to_string(),
            endpoint: endpoint.to_string(),
            detail,
            source: Box::new(source),
        }
    }

    /// A non-success HTTP answer.
    pub fn from_response(site: &str, endpoint: &str, status: u16, body: &[u8]) -> Self {
        let site = site.to_string();
        let endpoint = endpoint.to_string();
        let text = String::from_utf8_lossy(body);
        if status == 401 || status == 403 {
            return DruidError::Unauthorized {
                site,
                endpoint,
                status,
                body: snippet(&text),
            };
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => {
                let s = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
                let newer = map.contains_key("errorCode") || map.contains_key("category");
                let message = s("errorMessage")
                    .or_else(|| s("error"))
                    .unwrap_or_else(|| snippet(&text));
                DruidError::Druid {
                    site,
                    endpoint,
                    status,
                    body: Box::new(ErrorBody {
                        code: if newer { s("errorCode") } else { s("error") },
                        category: s("category"),
                        message,
                        class: s("errorClass"),
                    }),
                }
            }
            Ok(_) => DruidError::Druid {
                site,
                endpoint,
                status,
                body: Box::new(ErrorBody {
                    code: None,
                    category: None,
                    message: snippet(&text),
                    class: None,
                }),
            },
            Err(_) => DruidError::NotJson {
                site,
                endpoint,
                status,
                snippet: snippet(&text),
            },
        }
    }

    /// A success answer whose body does not decode.
    pub fn from_decode(site: &str, endpoint: &str, status: u16, body: &[u8], e: &str) -> Self {
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            DruidError::NotJson {
                site: site.to_string(),
                endpoint: endpoint.to_string(),
                status,
                snippet: snippet(&String::from_utf8_lossy(body)),
            }
        } else {
            DruidError::Decode {
                site: site.to_string(),
                endpoint: endpoint.to_string(),
                message: e.to_string(),
            }
        }
    }
}

/// The first [`SNIPPET`] characters of a body, on one line.
fn snippet(text: &str) -> String {
    let one_line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(SNIPPET)
        .collect();
    if one_line.is_empty() {
        "(empty body)".to_string()
    } else {
        one_line
    }
}
