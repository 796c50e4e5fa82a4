//! The HTTP surface: Druid's Router endpoints that lockstep uses (druid-api.md), with basic
//! auth and the request faults applied in one middleware, plus the `/sim/faults/...` admin
//! endpoints that flip faults from another process (those bypass auth and faults).

use crate::error::{DruidError, ErrorShape};
use crate::faults::{BasicAuth, ErrorMode, Faults};
use crate::sql::{self, ResultSet, SqlRequest};
use crate::store::Store;
use crate::supervisor::{KafkaSpec, Supervisors};
use crate::time::{iso, parse_iso};
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct App {
    pub store: Arc<Store>,
    pub supervisors: Arc<Supervisors>,
    pub faults: Faults,
    pub version: String,
}

pub(crate) fn router(app: App) -> Router {
    let druid = Router::new()
        .route("/status", get(status))
        .route("/status/health", get(|| async { Json(true) }))
        .route("/druid/v2/sql", post(sql_query))
        .route("/druid/v2/sql/", post(sql_query))
        .route(
            "/druid/indexer/v1/supervisor",
            get(supervisor_list).post(supervisor_post),
        )
        .route(
            "/druid/indexer/v1/supervisor/suspendAll",
            post(supervisor_suspend_all),
        )
        .route(
            "/druid/indexer/v1/supervisor/resumeAll",
            post(supervisor_resume_all),
        )
        .route(
            "/druid/indexer/v1/supervisor/terminateAll",
            post(supervisor_terminate_all),
        )
        .route("/druid/indexer/v1/supervisor/{id}", get(supervisor_spec))
        .route(
            "/druid/indexer/v1/supervisor/{id}/status",
            get(supervisor_status),
        )
        .route(
            "/druid/indexer/v1/supervisor/{id}/health",
            get(supervisor_health),
        )
        .route(
            "/druid/indexer/v1/supervisor/{id}/suspend",
            post(supervisor_suspend),
        )
        .route(
            "/druid/indexer/v1/supervisor/{id}/resume",
            post(supervisor_resume),
        )
        .route(
            "/druid/indexer/v1/supervisor/{id}/reset",
            post(supervisor_reset),
        )
        .route(
            "/druid/indexer/v1/supervisor/{id}/terminate",
            post(supervisor_terminate),
        )
        .route("/druid/coordinator/v1/datasources", get(datasources))
        .route("/druid/coordinator/v1/datasources/{ds}", get(datasource))
        .route(
            "/druid/coordinator/v1/datasources/{ds}/intervals",
            get(datasource_intervals),
        )
        .route("/druid/coordinator/v1/loadstatus", get(loadstatus))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard));
    let admin = Router::new()
        .route("/sim/faults", get(faults_get))
        .route("/sim/faults/clear", post(faults_clear))
        .route("/sim/faults/drop", post(faults_drop))
        .route("/sim/faults/pause", post(faults_pause))
        .route("/sim/faults/unpause", post(faults_unpause))
        .route("/sim/faults/errors", post(faults_errors))
        .route("/sim/faults/stall", post(faults_stall))
        .route("/sim/faults/auth", post(faults_auth))
        .route("/sim/faults/error-shape", post(faults_shape));
    druid.merge(admin).with_state(app)
}

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// Stall, injected errors and basic auth, in that order, for every Druid endpoint.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let (stall, fail) = app.faults.on_request();
    if !stall.is_zero() {
        tokio::time::sleep(stall).await;
    }
    match fail {
        Some(ErrorMode::Http500) => {
            return DruidError::runtime("lockstep-sim fault: injected server error")
                .with_shape(app.faults.error_shape())
                .into_response()
        }
        Some(ErrorMode::Html502) => {
            return (StatusCode::BAD_GATEWAY, Html(HTML_502)).into_response();
        }
        None => {}
    }
    // Druid leaves its health check unauthenticated.
    if req.uri().path() != "/status/health" {
        if let Some(auth) = app.faults.auth() {
            if !authorized(req.headers(), &auth) {
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({ "Access-Check-Result": "Unauthorized" })),
                )
                    .into_response();
            }
        }
    }
    next.run(req).await
}

fn authorized(headers: &HeaderMap, auth: &BasicAuth) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = v.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    let expected = format!("{}:{}", auth.user, auth.password);
    raw == expected.as_bytes()
}

async fn status(State(app): State<App>) -> Json<Value> {
    Json(json!({
        "version": app.version,
        "modules": [
            {"name": "org.apache.druid.indexing.kafka.KafkaIndexTaskModule", "artifact": "druid-kafka-indexing-service", "version": app.version}
        ],
        "memory": {"maxMemory": 0, "totalMemory": 0, "freeMemory": 0, "usedMemory": 0, "directMemory": 0},
    }))
}

async fn sql_query(State(app): State<App>, body: Bytes) -> Response {
    let shape = app.faults.error_shape();
    let req: SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return DruidError::invalid(format!("Malformed SQL request: {e}"))
                .with_shape(shape)
                .into_response()
        }
    };
    let store = app.store.clone();
    let req2 = req.clone();
    let res = tokio::task::spawn_blocking(move || sql::execute(&store, &req2)).await;
    match res {
        Ok(Ok(rs)) => {
            format_result(&req, rs).unwrap_or_else(|e| e.with_shape(shape).into_response())
        }
        Ok(Err(e)) => e.with_shape(shape).into_response(),
        Err(e) => DruidError::runtime(format!("query task failed: {e}"))
            .with_shape(shape)
            .into_response(),
    }
}

/// Writes a result in the requested `resultFormat`, with the optional header rows.
fn format_result(req: &SqlRequest, rs: ResultSet) -> Result<Response, DruidError> {
    let format = req.result_format.as_deref().unwrap_or("object");
    let typed = |c: &sql::Column| -> Value {
        match (req.types_header, req.sql_types_header) {
            (false, false) => Value::Null,
            (t, s) => {
                let mut m = serde_json::Map::new();
                if t {
                    m.insert("type".into(), c.druid_type.into());
                }
                if s {
                    m.insert("sqlType".into(), c.sql_type.into());
                }
                Value::Object(m)
            }
        }
    };
    let objects = || -> Vec<Value> {
        let mut out = Vec::new();
        if req.header {
            out.push(Value::Object(
                rs.columns
                    .iter()
                    .map(|c| (c.name.clone(), typed(c)))
                    .collect(),
            ));
        }
        for row in &rs.rows {
            out.push(Value::Object(
                rs.columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| (c.name.clone(), v.clone()))
                    .collect(),
            ));
        }
        out
    };
    let arrays = || -> Vec<Value> {
        let mut out = Vec::new();
        if req.header {
            out.push(json!(rs
                .columns
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()));
            if req.types_header {
                out.push(json!(rs
                    .columns
                    .iter()
                    .map(|c| c.druid_type)
                    .collect::<Vec<_>>()));
            }
            if req.sql_types_header {
                out.push(json!(rs
                    .columns
                    .iter()
                    .map(|c| c.sql_type)
                    .collect::<Vec<_>>()));
            }
        }
        out.extend(rs.rows.iter().map(|r| Value::Array(r.clone())));
        out
    };
    let lines = |vals: Vec<Value>| -> String {
        let mut s = String::new();
        for v in vals {
            s.push_str(&v.to_string());
            s.push('\n');
        }
        s.push('\n'); // Druid ends line formats with an empty line.
        s
    };
    let (body, ctype) = match format.to_ascii_lowercase().as_str() {
        "object" => (Value::Array(objects()).to_string(), "application/json"),
        "array" => (Value::Array(arrays()).to_string(), "application/json"),
        "objectlines" => (lines(objects()), "text/plain"),
        "arraylines" => (lines(arrays()), "text/plain"),
        "csv" => {
            let cell = |v: &Value| -> String {
                let s = match v {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if s.contains([',', '"', '\n']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s
                }
            };
            let mut s = String::new();
            for row in arrays() {
                let cells: Vec<String> = row
                    .as_array()
                    .map(|r| r.iter().map(cell).collect())
                    .unwrap_or_default();
                s.push_str(&cells.join(","));
                s.push('\n');
            }
            s.push('\n');
            (s, "text/csv")
        }
        other => {
            return Err(DruidError::invalid(format!(
                "Unknown resultFormat '{other}' (object, array, objectLines, arrayLines, csv)"
            )))
        }
    };
    let query_id = req
        .context
        .as_ref()
        .and_then(|c| c.get("sqlQueryId"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "sim-{}",
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
            )
        });
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&query_id) {
        h.insert("X-Druid-SQL-Query-Id", v);
    }
    if req.header {
        h.insert(
            "X-Druid-SQL-Header-Included",
            HeaderValue::from_static("yes"),
        );
    }
    Ok(resp)
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("Cannot find any supervisor with id: [{id}]") })),
    )
        .into_response()
}

async fn supervisor_list(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    if q.get("state").is_some_and(|v| v != "false") {
        return Json(Value::Array(
            app.supervisors.all().iter().map(|s| s.brief()).collect(),
        ));
    }
    if q.contains_key("full") {
        return Json(Value::Array(
            app.supervisors
                .all()
                .iter()
                .map(|s| {
                    let mut b = s.brief();
                    b["spec"] = s.spec_json();
                    b
                })
                .collect(),
        ));
    }
    Json(json!(app.supervisors.ids()))
}

async fn supervisor_post(State(app): State<App>, body: Bytes) -> Response {
    let raw: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("Malformed supervisor spec: {e}") })),
            )
                .into_response()
        }
    };
    match KafkaSpec::from_json(&raw) {
        Ok(spec) => Json(json!({ "id": app.supervisors.upsert(spec) })).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn supervisor_spec(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.get(&id) {
        Some(s) => Json(s.spec_json()).into_response(),
        None => not_found(&id),
    }
}

async fn supervisor_status(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.get(&id) {
        Some(s) => Json(s.status()).into_response(),
        None => not_found(&id),
    }
}

async fn supervisor_health(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.get(&id) {
        Some(s) if s.healthy() => Json(json!({ "healthy": true })).into_response(),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "healthy": false })),
        )
            .into_response(),
        None => not_found(&id),
    }
}

async fn supervisor_suspend(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.suspend(&id) {
        Some(v) => Json(v).into_response(),
        None => not_found(&id),
    }
}

async fn supervisor_resume(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.resume(&id) {
        Some(v) => Json(v).into_response(),
        None => not_found(&id),
    }
}

async fn supervisor_reset(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.reset(&id) {
        Some(()) => Json(json!({ "id": id })).into_response(),
        None => not_found(&id),
    }
}

async fn supervisor_terminate(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.terminate(&id) {
        Some(()) => Json(json!({ "id": id })).into_response(),
        None => not_found(&id),
    }
}

async fn supervisor_suspend_all(State(app): State<App>) -> Json<Value> {
    for id in app.supervisors.ids() {
        app.supervisors.suspend(&id);
    }
    Json(json!({ "status": "success" }))
}

async fn supervisor_resume_all(State(app): State<App>) -> Json<Value> {
    for id in app.supervisors.ids() {
        app.supervisors.resume(&id);
    }
    Json(json!({ "status": "success" }))
}

async fn supervisor_terminate_all(State(app): State<App>) -> Json<Value> {
    for id in app.supervisors.ids() {
        app.supervisors.terminate(&id);
    }
    Json(json!({ "status": "success" }))
}

async fn datasources(State(app): State<App>) -> Json<Value> {
    Json(json!(app.store.datasources()))
}

async fn datasource(State(app): State<App>, Path(ds): Path<String>) -> Response {
    let segs = app.store.segments(Some(&ds));
    let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let size: u64 = segs.iter().map(|s| s.size).sum();
    Json(json!({
        "tiers": { "_default_tier": { "size": size, "segmentCount": segs.len() } },
        "segments": {
            "maxTime": iso(last.end),
            "size": size,
            "minTime": iso(first.start),
            "count": segs.len(),
        }
    }))
    .into_response()
}

/// `/intervals` lists intervals newest first; `?simple` (and `?full`, reduced to the same)
/// maps each to `{size, count}`.
async fn datasource_intervals(
    State(app): State<App>,
    Path(ds): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let mut segs = app.store.segments(Some(&ds));
    segs.reverse();
    let name = |s: &crate::store::Segment| format!("{}/{}", iso(s.start), iso(s.end));
    if q.contains_key("simple") || q.contains_key("full") {
        let m: serde_json::Map<String, Value> = segs
            .iter()
            .map(|s| (name(s), json!({ "size": s.size, "count": 1 })))
            .collect();
        Json(Value::Object(m))
    } else {
        Json(json!(segs.iter().map(name).collect::<Vec<_>>()))
    }
}

async fn loadstatus(State(app): State<App>) -> Json<Value> {
    // Everything the emulator holds is "loaded".
    let m: serde_json::Map<String, Value> = app
        .store
        .datasources()
        .into_iter()
        .map(|d| (d, json!(0)))
        .collect();
    Json(Value::Object(m))
}

// ---- /sim admin ----

async fn faults_get(State(app): State<App>) -> Json<Value> {
    Json(json!(app.faults.snapshot()))
}

async fn faults_clear(State(app): State<App>) -> Json<Value> {
    app.faults.clear();
    Json(json!(app.faults.snapshot()))
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DropBody {
    data_source: String,
    start: String,
    end: String,
}

async fn faults_drop(State(app): State<App>, Json(b): Json<DropBody>) -> Response {
    let (Some(start), Some(end)) = (parse_iso(&b.start), parse_iso(&b.end)) else {
        return bad_request(format!("cannot read interval {}/{}", b.start, b.end));
    };
    let removed = app.faults.drop_rows(&b.data_source, start, end);
    Json(json!({ "removedRows": removed })).into_response()
}

#[derive(Deserialize)]
struct SupervisorBody {
    supervisor: String,
}

async fn faults_pause(State(app): State<App>, Json(b): Json<SupervisorBody>) -> Json<Value> {
    app.faults.pause_ingestion(&b.supervisor);
    Json(json!(app.faults.snapshot()))
}

async fn faults_unpause(State(app): State<App>, Json(b): Json<SupervisorBody>) -> Json<Value> {
    app.faults.resume_ingestion(&b.supervisor);
    Json(json!(app.faults.snapshot()))
}

#[derive(Deserialize)]
struct ErrorsBody {
    /// `http500`, `html502` or `none`.
    mode: String,
    #[serde(default)]
    count: Option<u64>,
}

async fn faults_errors(State(app): State<App>, Json(b): Json<ErrorsBody>) -> Response {
    match b.mode.as_str() {
        "none" => app.faults.clear_errors(),
        "http500" => app.faults.fail_requests(ErrorMode::Http500, b.count),
        "html502" => app.faults.fail_requests(ErrorMode::Html502, b.count),
        other => return bad_request(format!("mode '{other}': use http500, html502 or none")),
    }
    Json(json!(app.faults.snapshot())).into_response()
}

#[derive(Deserialize)]
struct StallBody {
    millis: u64,
}

async fn faults_stall(State(app): State<App>, Json(b): Json<StallBody>) -> Json<Value> {
    app.faults.stall(std::time::Duration::from_millis(b.millis));
    Json(json!(app.faults.snapshot()))
}

async fn faults_auth(State(app): State<App>, Json(b): Json<Option<BasicAuth>>) -> Json<Value> {
    app.faults.set_auth(b);
    Json(json!(app.faults.snapshot()))
}

#[derive(Deserialize)]
struct ShapeBody {
    shape: ErrorShape,
}

async fn faults_shape(State(app): State<App>, Json(b): Json<ShapeBody>) -> Json<Value> {
    app.faults.set_error_shape(b.shape);
    Json(json!(app.faults.snapshot()))
}
