//! `DruidError`: every way a call to a site's Druid can fail, each naming the site and the
//! endpoint. Built from HTTP outcomes in one place ([`DruidError::from_response`]), so that
//! every Druid error body, a proxy's HTML page, an empty body, 401/403, a timeout and
//! malformed JSON all come out typed, with a Display that is the useful message. Bodies are cut
//! to a short one-line snippet; credentials never appear.
//!
//! Druid's error bodies (apache/druid):
//! - legacy QueryException `{error, errorMessage, errorClass, host}`: `error` is a code such
//!   as "Plan validation failed" or "Query timeout" (docs/querying/querying.md, "Query errors";
//!   processing/src/main/java/org/apache/druid/query/QueryException.java);
//! - DruidException `{error: "druidException", errorCode, persona, category, errorMessage,
//!   context}` (processing/src/main/java/org/apache/druid/error/ErrorResponse.java,
//!   DruidException.java), Druid 27+;
//! - the 27+ wrapper of a legacy QueryException: `errorCode: "legacyQueryException"` with the
//!   legacy `error`, `errorClass` and `host` at top level and in `context` (as
//!   `legacyErrorCode`, `errorClass`, `host`) (ErrorResponse.getAsMap, QueryExceptionCompat.java);
//! - the Overlord's resources answer `{"error": "<message>"}`
//!   (indexing-service/.../overlord/supervisor/SupervisorResource.java), and its
//!   SupervisorResourceFilter a plain-text 400 `Cannot find any supervisor with id: [<id>]`.

use serde_json::{Map, Value};

/// Longest body excerpt an error carries.
const SNIPPET: usize = 200;
/// Longest Druid error message kept (some list every acceptable SQL token).
const MESSAGE: usize = 1000;

/// ErrorResponse's discriminator for the DruidException shape.
const DRUID_EXCEPTION: &str = "druidException";
/// QueryExceptionCompat.ERROR_CODE.
const LEGACY_QUERY_EXCEPTION: &str = "legacyQueryException";
/// QueryException.QUERY_TIMEOUT_ERROR_CODE / QueryTimeoutException.ERROR_CODE.
const QUERY_TIMEOUT: &str = "Query timeout";
/// QueryException.QUERY_CAPACITY_EXCEEDED_ERROR_CODE.
const QUERY_CAPACITY_EXCEEDED: &str = "Query capacity exceeded";
/// SupervisorResourceFilter's answer for an unknown supervisor id (HTTP 400, plain text).
const NO_SUPERVISOR_FILTER: &str = "Cannot find any supervisor with id: [";
/// SupervisorResource's answer for an unknown supervisor id (HTTP 404): `[<id>] does not exist`.
const NO_SUPERVISOR_SUFFIX: &str = "] does not exist";

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
    /// No answer within lockstep's own deadline (the site's `druid.timeout`): a transport
    /// timeout. Druid's own query timeout is an answer ([`DruidError::is_query_timeout`]).
    #[error("site {site}: no answer from Druid within lockstep's timeout ({endpoint})")]
    Timeout { site: String, endpoint: String },
    /// 401 or 403: missing or wrong credentials, or no permission.
    #[error("site {site}: Druid refused access ({endpoint}): HTTP {status}: {body}")]
    Unauthorized {
        site: String,
        endpoint: String,
        status: u16,
        /// The readable part of the answer (its message, or an HTML page's title).
        body: String,
    },
    /// Druid answered with an error body (any of its shapes).
    #[error("site {site}: Druid error ({endpoint}): HTTP {status}: {}", body.headline())]
    Druid {
        site: String,
        endpoint: String,
        status: u16,
        body: Box<ErrorBody>,
    },
    /// The body is not JSON (a proxy's HTML error page, an empty body, a truncated answer).
    #[error("site {site}: Druid answered non-JSON ({endpoint}): HTTP {status}: {snippet}")]
    NotJson {
        site: String,
        endpoint: String,
        status: u16,
        snippet: String,
    },
    /// A success status, but the body is not the documented shape (or JSON cut short).
    #[error("site {site}: unexpected Druid answer ({endpoint}): HTTP {status}: {message}")]
    Decode {
        site: String,
        endpoint: String,
        status: u16,
        message: String,
    },
}

/// A Druid error body, read from any of its shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// What identifies the error: DruidException `errorCode` (e.g. `invalidInput`); for the
    /// legacy shape and the `legacyQueryException` wrapper, the legacy `error` code (e.g.
    /// `Query timeout`, never `legacyQueryException`). None for the Overlord's
    /// `{"error": "<message>"}` answers and anything else.
    pub code: Option<String>,
    /// `category` as Druid sent it (DruidException and the wrapper only, e.g.
    /// `INVALID_INPUT`, `TIMEOUT`); see [`ErrorBody::effective_category`] for the legacy shape.
    pub category: Option<String>,
    /// `errorMessage`, else the most readable text the body has; one line.
    pub message: String,
    /// `errorClass` (legacy shape and wrapper).
    pub class: Option<String>,
}

/// The DruidException category of a legacy error code: QueryException.fromErrorCode mapped
/// through QueryExceptionCompat.convertFailType, as ErrorResponse.fromMap does.
fn legacy_category(code: &str) -> Option<&'static str> {
    Some(match code {
        "Query cancelled" => "CANCELED",
        "Query interrupted"
        | "Unsupported operation"
        | "Unknown exception"
        | "Truncated response context" => "RUNTIME_FAILURE",
        "Unauthorized request" => "UNAUTHORIZED",
        QUERY_CAPACITY_EXCEEDED => "CAPACITY_EXCEEDED",
        QUERY_TIMEOUT => "TIMEOUT",
        "Json parse failed"
        | "Query context parse failed"
        | "Resource limit exceeded"
        | "SQL parse failed"
        | "Plan validation failed"
        | "SQL query is unsupported" => "INVALID_INPUT",
        "Unsupported query" => "UNSUPPORTED",
        _ => return None,
    })
}

impl ErrorBody {
    /// Reads any JSON error answer. `raw` is the body text, for a snippet when nothing
    /// readable is found.
    pub fn from_json(v: &Value, raw: &str) -> ErrorBody {
        match v {
            Value::Object(m) => Self::from_map(m, raw),
            _ => ErrorBody {
                code: None,
                category: None,
                message: snippet(raw),
                class: None,
            },
        }
    }

    fn from_map(m: &Map<String, Value>, raw: &str) -> ErrorBody {
        let s = |k: &str| {
            m.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        let ctx = |k: &str| {
            m.get("context")
                .and_then(|c| c.get(k))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        let error = s("error");
        let error_code = s("errorCode");
        let error_message = s("errorMessage").map(|t| one_line(&t, MESSAGE));

        // The 27+ wrapper: the legacy code is the useful one (ErrorResponse.getAsMap writes
        // it as `error` and QueryExceptionCompat keeps it in `context.legacyErrorCode`).
        if error_code.as_deref() == Some(LEGACY_QUERY_EXCEPTION) {
            let code = error
                .filter(|e| e != DRUID_EXCEPTION)
                .or_else(|| ctx("legacyErrorCode"));
            return ErrorBody {
                message: error_message
                    .or_else(|| code.clone())
                    .unwrap_or_else(|| snippet(raw)),
                code,
                category: s("category"),
                class: s("errorClass").or_else(|| ctx("errorClass")),
            };
        }
        // DruidException (ErrorResponse.getAsMap: error = "druidException").
        if error.as_deref() == Some(DRUID_EXCEPTION) || error_code.is_some() {
            return ErrorBody {
                message: error_message
                    .or_else(|| error_code.clone())
                    .unwrap_or_else(|| snippet(raw)),
                code: error_code,
                category: s("category"),
                class: None,
            };
        }
        if let Some(error) = error {
            // Legacy QueryException: always writes errorMessage, errorClass and host (maybe null).
            let legacy = ["errorMessage", "errorClass", "host"]
                .iter()
                .any(|k| m.contains_key(*k));
            if legacy {
                return ErrorBody {
                    message: error_message.unwrap_or_else(|| one_line(&error, MESSAGE)),
                    code: Some(error),
                    category: None,
                    class: s("errorClass"),
                };
            }
            // The Overlord's `{"error": "<message>"}` (SupervisorResource).
            return ErrorBody {
                message: one_line(&error, MESSAGE),
                code: None,
                category: None,
                class: None,
            };
        }
        // Anything else: the security filter's `{"Access-Check-Result": ...}`, Jetty's JSON
        // error page `{url, status, message}` (ErrorHandler.writeErrorJson, for clients that
        // accept application/json), ...
        let message = error_message
            .or_else(|| s("Access-Check-Result").map(|r| format!("Access-Check-Result: {r}")))
            .or_else(|| {
                s("message").map(|msg| match s("url") {
                    Some(url) => format!("{msg} ({url})"),
                    None => msg,
                })
            })
            .map(|t| one_line(&t, MESSAGE))
            .unwrap_or_else(|| snippet(raw));
        ErrorBody {
            code: None,
            category: s("category"),
            message,
            class: None,
        }
    }

    /// The message with its code in front (`invalidInput: Object 'x' not found`,
    /// `Query timeout: ...`), unless the message already starts with it.
    pub fn headline(&self) -> String {
        match &self.code {
            Some(c) if !self.message.starts_with(c.as_str()) => format!("{c}: {}", self.message),
            _ => self.message.clone(),
        }
    }

    /// `category`, or for the legacy shape the category Druid 27+ gives its code
    /// (QueryExceptionCompat.convertFailType).
    pub fn effective_category(&self) -> Option<&str> {
        self.category
            .as_deref()
            .or_else(|| self.code.as_deref().and_then(legacy_category))
    }
}

/// Whether a message is Calcite's "unknown table": `Object 'x' not found` (optionally
/// `within 'druid'`) or `Table 'x' not found`, not `Column 'x' not found in any table`.
fn names_missing_table(message: &str) -> bool {
    ["Object '", "Table '"].iter().any(|prefix| {
        message.match_indices(prefix).any(|(i, _)| {
            let rest = &message[i + prefix.len()..];
            rest.find("' not found").is_some_and(|end| end > 0)
        })
    })
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

    /// Every value [`DruidError::kind`] returns, for metric labels.
    pub const KINDS: &'static [&'static str] = &[
        "setup",
        "unreachable",
        "timeout",
        "unauthorized",
        "query_timeout",
        "capacity_exceeded",
        "druid",
        "not_json",
        "decode",
    ];

    /// A short label for metrics: `setup`, `unreachable`, `timeout` (lockstep's own
    /// deadline), `unauthorized`, `query_timeout` (Druid or a proxy gave up on the query),
    /// `capacity_exceeded` (HTTP 429), `druid`, `not_json`, `decode`.
    pub fn kind(&self) -> &'static str {
        match self {
            DruidError::Setup { .. } => "setup",
            DruidError::Unreachable { .. } => "unreachable",
            DruidError::Timeout { .. } => "timeout",
            DruidError::Unauthorized { .. } => "unauthorized",
            _ if self.is_query_timeout() => "query_timeout",
            _ if self.is_capacity_exceeded() => "capacity_exceeded",
            DruidError::Druid { .. } => "druid",
            DruidError::NotJson { .. } => "not_json",
            DruidError::Decode { .. } => "decode",
        }
    }

    /// Whether Druid itself answered (an error of its own, a refusal, an unexpected shape),
    /// as opposed to no answer or something else answering (a proxy's page).
    pub fn druid_answered(&self) -> bool {
        matches!(
            self,
            DruidError::Unauthorized { .. } | DruidError::Druid { .. } | DruidError::Decode { .. }
        )
    }

    /// The HTTP status, if Druid or a proxy answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            DruidError::Unauthorized { status, .. }
            | DruidError::Druid { status, .. }
            | DruidError::NotJson { status, .. }
            | DruidError::Decode { status, .. } => Some(*status),
            DruidError::Setup { .. }
            | DruidError::Unreachable { .. }
            | DruidError::Timeout { .. } => None,
        }
    }

    /// Druid's error body, if it sent one.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            DruidError::Druid { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Druid's answer to SQL over a datasource it cannot see: HTTP 400 with Calcite's
    /// `Object 'x' not found` (or `Table 'x' not found`) in any error shape: legacy
    /// "Plan validation failed", DruidException `invalidInput` (DruidPlanner
    /// `"%s (line [%s], column [%s])"`), or the legacyQueryException wrapper. Druid says this
    /// also when the datasource's segments are published but none is loaded yet.
    pub fn is_missing_table(&self) -> bool {
        match self {
            DruidError::Druid { status, body, .. } => {
                *status == 400
                    && matches!(body.effective_category(), None | Some("INVALID_INPUT"))
                    && names_missing_table(&body.message)
            }
            _ => false,
        }
    }

    /// The Overlord's own "no such supervisor" answer, not any 404: SupervisorResource's
    /// HTTP 404 `{"error": "[<id>] does not exist"}`, or SupervisorResourceFilter's HTTP 400
    /// `Cannot find any supervisor with id: [<id>]`, which it sends before the resource runs.
    pub fn is_no_such_supervisor(&self) -> bool {
        match self {
            DruidError::Druid { status, body, .. } if body.code.is_none() => {
                let m = body.message.as_str();
                (*status == 404 && m.starts_with('[') && m.ends_with(NO_SUPERVISOR_SUFFIX))
                    || (*status == 400 && m.starts_with(NO_SUPERVISOR_FILTER) && m.ends_with(']'))
            }
            _ => false,
        }
    }

    /// Whether the query timed out on the server side: HTTP 504, a `Query timeout` code or the
    /// `TIMEOUT` category (QueryTimeoutException.STATUS_CODE; DruidException.Category.TIMEOUT).
    /// A 504 page from a proxy counts too (the query outlived the proxy's deadline). Not
    /// lockstep's own deadline, which is [`DruidError::Timeout`].
    pub fn is_query_timeout(&self) -> bool {
        match self {
            DruidError::Druid { status, body, .. } => {
                *status == 504
                    || body.effective_category() == Some("TIMEOUT")
                    || body.code.as_deref() == Some(QUERY_TIMEOUT)
            }
            DruidError::NotJson { status, .. } => *status == 504,
            _ => false,
        }
    }

    /// Whether Druid (or a proxy) refused for lack of capacity: HTTP 429, the
    /// `CAPACITY_EXCEEDED` category or `Query capacity exceeded`
    /// (QueryCapacityExceededException.STATUS_CODE).
    pub fn is_capacity_exceeded(&self) -> bool {
        match self {
            DruidError::Druid { status, body, .. } => {
                *status == 429
                    || body.effective_category() == Some("CAPACITY_EXCEEDED")
                    || body.code.as_deref() == Some(QUERY_CAPACITY_EXCEEDED)
            }
            DruidError::NotJson { status, .. } => *status == 429,
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
        let text = text.trim();
        if status == 401 || status == 403 {
            let body = if text.is_empty() {
                "(empty body)".to_string()
            } else {
                match serde_json::from_str::<Value>(text) {
                    Ok(v) => ErrorBody::from_json(&v, text).headline(),
                    Err(_) => page_snippet(text),
                }
            };
            return DruidError::Unauthorized {
                site,
                endpoint,
                status,
                body,
            };
        }
        if text.is_empty() {
            return DruidError::NotJson {
                site,
                endpoint,
                status,
                snippet: empty_body(status),
            };
        }
        match serde_json::from_str::<Value>(text) {
            Ok(v) => DruidError::Druid {
                site,
                endpoint,
                status,
                body: Box::new(ErrorBody::from_json(&v, text)),
            },
            // SupervisorResourceFilter writes its refusal as plain text.
            Err(_) if text.starts_with(NO_SUPERVISOR_FILTER) => DruidError::Druid {
                site,
                endpoint,
                status,
                body: Box::new(ErrorBody {
                    code: None,
                    category: None,
                    message: one_line(text, MESSAGE),
                    class: None,
                }),
            },
            Err(_) => DruidError::NotJson {
                site,
                endpoint,
                status,
                snippet: page_snippet(text),
            },
        }
    }

    /// A success answer whose body does not decode (`e` is the decoder's error).
    pub fn from_decode(site: &str, endpoint: &str, status: u16, body: &[u8], e: &str) -> Self {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let site = site.to_string();
        let endpoint = endpoint.to_string();
        if text.is_empty() {
            return DruidError::NotJson {
                site,
                endpoint,
                status,
                snippet: empty_body(status),
            };
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
            return DruidError::Decode {
                site,
                endpoint,
                status,
                message: one_line(e, MESSAGE),
            };
        }
        if text.starts_with('[') || text.starts_with('{') {
            // docs/api-reference/sql-api.md, "Client-side error handling and truncated
            // responses": an error after the header was sent stops the body midstream.
            return DruidError::Decode {
                site,
                endpoint,
                status,
                message: format!(
                    "JSON cut short or malformed ({}); Druid stops a response midstream when \
                     it fails after sending the status",
                    one_line(e, SNIPPET)
                ),
            };
        }
        DruidError::NotJson {
            site,
            endpoint,
            status,
            snippet: page_snippet(text),
        }
    }
}

/// What an empty body says, with a hint for the statuses proxies produce.
fn empty_body(status: u16) -> String {
    match status {
        // SupervisorResource.asLeaderWithSupervisorManager answers a bare 503 while the
        // Overlord is not (yet) the leader.
        503 => "(empty body): a proxy or load balancer in front of Druid answered, or an \
                Overlord that is not (yet) the leader"
            .to_string(),
        502 | 504 => {
            "(empty body): a proxy or load balancer in front of Druid answered".to_string()
        }
        _ => "(empty body)".to_string(),
    }
}

/// Whitespace collapsed to single spaces, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > max {
        let mut cut: String = joined.chars().take(max).collect();
        cut.push('…');
        cut
    } else {
        joined
    }
}

/// The first [`SNIPPET`] characters of a body, on one line.
fn snippet(text: &str) -> String {
    let s = one_line(text, SNIPPET);
    if s.is_empty() {
        "(empty body)".to_string()
    } else {
        s
    }
}

/// A readable snippet of a non-JSON body: an HTML page's `<title>` (Jetty's error page
/// `Error 404 Not Found`, nginx's `502 Bad Gateway`), else its text without tags, else the
/// text itself; one line, short.
fn page_snippet(text: &str) -> String {
    if !text.contains('<') {
        return snippet(text);
    }
    if let Some(title) = html_title(text) {
        let title = one_line(&decode_entities(title), SNIPPET);
        if !title.is_empty() {
            return title;
        }
    }
    let stripped = one_line(&decode_entities(&strip_tags(text)), SNIPPET);
    if stripped.is_empty() {
        snippet(text)
    } else {
        stripped
    }
}

/// The content of the first `<title ...>...</title>` (ASCII case-insensitive).
fn html_title(text: &str) -> Option<&str> {
    // ASCII lower-casing keeps byte offsets, so indices into `lower` are valid in `text`.
    let lower = text.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    text.get(start..end)
}

/// The text outside `<...>` tags; a tag boundary becomes a space.
fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The few entities error pages use.
fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_table_messages() {
        assert!(names_missing_table(
            "Object 'nope' not found (line [1], column [15])"
        ));
        assert!(names_missing_table(
            "org.apache.calcite.runtime.CalciteContextException: From line 1, column 15 to line \
             1, column 18: Object 'nope' not found within 'druid'"
        ));
        assert!(names_missing_table("Table 'nope' not found"));
        assert!(!names_missing_table("Column 'x' not found in any table"));
        assert!(!names_missing_table("Object '' not found"));
        assert!(!names_missing_table("Object 'x' is ambiguous"));
    }

    #[test]
    fn snippets() {
        assert_eq!(
            page_snippet("<html><head><title>502 Bad Gateway</title></head><body>x</body></html>"),
            "502 Bad Gateway"
        );
        assert_eq!(
            page_snippet("<h1>Bad Message 400</h1><pre>reason: Bad &amp; worse</pre>"),
            "Bad Message 400 reason: Bad & worse"
        );
        assert_eq!(page_snippet("plain\ntext"), "plain text");
        let long = "x".repeat(500);
        assert_eq!(page_snippet(&long).chars().count(), SNIPPET + 1);
        assert_eq!(html_title("<TITLE>é</TITLE>"), Some("é"));
        assert_eq!(html_title("<title>never closed"), None);
    }

    #[test]
    fn legacy_categories_follow_query_exception_compat() {
        assert_eq!(legacy_category("Query timeout"), Some("TIMEOUT"));
        assert_eq!(
            legacy_category("Query capacity exceeded"),
            Some("CAPACITY_EXCEEDED")
        );
        assert_eq!(
            legacy_category("Plan validation failed"),
            Some("INVALID_INPUT")
        );
        assert_eq!(legacy_category("whatever"), None);
    }
}
