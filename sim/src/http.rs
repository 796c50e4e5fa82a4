//! The HTTP surface on two ports, as a Druid cluster exposes it (druid-api.md):
//! - the Router port: `/status`, SQL (forwarded to a Broker), and the Overlord and
//!   Coordinator APIs only while the management proxy is on, as in a real Router;
//! - the Overlord+Coordinator port: the supervisor, task-free indexer and coordinator APIs
//!   whatever the proxy switch says, and no SQL.
//!
//! Basic auth and the request faults apply on both ports in one middleware; the
//! `/sim/faults/...` admin endpoints (Router port only) bypass auth and faults. Paths no
//! resource serves answer Jetty's own error page, as Druid's servers do.

use crate::error::{DruidError, ErrorShape};
use crate::faults::{BasicAuth, ErrorMode, Faults};
use crate::sql::{self, ResultSet, SqlRequest};
use crate::store::{Segment, Store};
use crate::supervisor::{KafkaSpec, Supervisors};
use crate::time::{iso, parse_iso};
use crate::SimError;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
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
    /// `host:port` of the Router port, named as the data server in query-exception bodies.
    pub host: String,
}

/// The Router port.
///
/// A Router serves `/druid/v2/*` through its query servlet (to a Broker) and, only with
/// `druid.router.managementProxy.enabled=true`, `/druid/coordinator/*`, `/druid/indexer/*`
/// and `/proxy/*` through AsyncManagementForwardingServlet; every other path falls to the
/// Jetty DefaultServlet mapped at `/*`, which answers 404 (RouterJettyServerInitializer in
/// services/.../druid/cli/; docs/design/router.md, "Router as Management Proxy"). The
/// explicit routes `/proxy/overlord/*` and `/proxy/coordinator/*` strip that prefix.
pub(crate) fn router_port(app: App) -> Router {
    let gate = || middleware::from_fn_with_state(app.clone(), management_proxy_gate);
    let explicit = || {
        status_routes()
            .merge(management_routes())
            .route_layer(gate())
    };
    let druid = status_routes()
        .route("/druid/v2/sql", post(sql_query))
        .route("/druid/v2/sql/", post(sql_query))
        .merge(management_routes().route_layer(gate()))
        .route("/proxy/enabled", get(proxy_enabled).route_layer(gate()))
        .nest("/proxy/overlord", explicit())
        .nest("/proxy/coordinator", explicit())
        .fallback(router_fallback)
        .layer(middleware::from_fn_with_state(app.clone(), guard));
    druid.merge(admin_routes()).with_state(app)
}

/// The Overlord+Coordinator port (a Coordinator running as Overlord): the management APIs
/// always, `/status`, and Jetty's 404 for anything else, SQL included: the Overlord maps
/// `/druid/*` to Jersey, which has no SQL resource and answers 404 without a body, which
/// Jetty turns into its error page (CliOverlord's Jetty initializer; Jersey's
/// WebComponent.Writer.finish calls `sendError` for a status >= 400 with no entity).
pub(crate) fn overlord_port(app: App) -> Router {
    status_routes()
        .merge(management_routes())
        .fallback(overlord_fallback)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

fn status_routes() -> Router<App> {
    Router::new()
        .route("/status", get(status))
        .route("/status/health", get(|| async { Json(true) }))
}

/// `/druid/indexer/v1/supervisor...` (SupervisorResource) and `/druid/coordinator/v1/...`
/// (DataSourcesResource, CoordinatorResource, MetadataResource).
fn management_routes() -> Router<App> {
    Router::new()
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
        .route(
            "/druid/indexer/v1/supervisor/history",
            get(supervisor_all_history),
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
        .route(
            "/druid/indexer/v1/supervisor/{id}/shutdown",
            post(supervisor_terminate),
        )
        .route(
            "/druid/indexer/v1/supervisor/{id}/{action}",
            get(supervisor_other).post(supervisor_other),
        )
        .route("/druid/coordinator/v1/datasources", get(datasources))
        .route("/druid/coordinator/v1/datasources/{ds}", get(datasource))
        .route(
            "/druid/coordinator/v1/datasources/{ds}/intervals",
            get(datasource_intervals),
        )
        .route("/druid/coordinator/v1/loadstatus", get(loadstatus))
        .route(
            "/druid/coordinator/v1/metadata/datasources",
            get(metadata_datasources),
        )
        .route(
            "/druid/coordinator/v1/metadata/datasources/{ds}/segments",
            get(metadata_segments),
        )
}

fn admin_routes() -> Router<App> {
    Router::new()
        .route("/sim/faults", get(faults_get))
        .route("/sim/faults/clear", post(faults_clear))
        .route("/sim/faults/drop", post(faults_drop))
        .route("/sim/faults/pause", post(faults_pause))
        .route("/sim/faults/unpause", post(faults_unpause))
        .route("/sim/faults/unload", post(faults_unload))
        .route("/sim/faults/errors", post(faults_errors))
        .route("/sim/faults/stall", post(faults_stall))
        .route("/sim/faults/auth", post(faults_auth))
        .route("/sim/faults/error-shape", post(faults_shape))
        .route(
            "/sim/faults/management-proxy",
            post(faults_management_proxy),
        )
}

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// Stall, injected errors and basic auth, in that order, for every Druid endpoint.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let (stall, fail) = app.faults.on_request();
    if !stall.is_zero() {
        tokio::time::sleep(stall).await;
    }
    if let Some(mode) = fail {
        return injected(&app, mode);
    }
    // Druid leaves its health check unauthenticated (UNSECURED_PATHS in
    // RouterJettyServerInitializer and CliOverlord).
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

/// The answer of an injected failure.
fn injected(app: &App, mode: ErrorMode) -> Response {
    let shape = app.faults.error_shape();
    match mode {
        ErrorMode::Http500 => DruidError::runtime("lockstep-sim fault: injected server error")
            .with_shape(shape)
            .into_response(),
        ErrorMode::Html502 => (StatusCode::BAD_GATEWAY, Html(HTML_502)).into_response(),
        ErrorMode::Timeout => DruidError::timeout(&app.host)
            .with_shape(shape)
            .into_response(),
        // What a load balancer in front of the Router sends with no healthy backend.
        ErrorMode::Empty503 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
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

// ---- Router: management proxy and Jetty's error page ----

/// The name Jetty gives the Router's DefaultServlet, registered without a name
/// (`new ServletHolder(new DefaultServlet())` in RouterJettyServerInitializer): class name,
/// '-', the holder's hash code in hex (fixed here).
const ROUTER_SERVLET: &str = "org.eclipse.jetty.servlet.DefaultServlet-5f9b2141";
/// The Overlord's and Coordinator's DefaultServlet holder is named "default"
/// (`new ServletHolder("default", DefaultServlet.class)` in their Jetty initializers).
const OVERLORD_SERVLET: &str = "default";

/// Management routes on the Router port exist only with the management proxy on.
async fn management_proxy_gate(State(app): State<App>, req: Request, next: Next) -> Response {
    if app.faults.management_proxy() {
        return next.run(req).await;
    }
    let path = original_path(&req);
    jetty_error(
        StatusCode::NOT_FOUND,
        req.method(),
        req.headers(),
        &path,
        ROUTER_SERVLET,
    )
}

/// `GET /proxy/enabled`: AsyncManagementForwardingServlet.handleEnabledRequest writes
/// `{"enabled":true}` (server/.../druid/server/AsyncManagementForwardingServlet.java).
async fn proxy_enabled() -> Json<Value> {
    Json(json!({ "enabled": true }))
}

/// The path as the client sent it, also under the nested `/proxy/...` routes.
fn original_path(req: &Request) -> String {
    req.extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path().to_string(), |u| u.path().to_string())
}

/// Paths the Router port has no route for.
async fn router_fallback(State(app): State<App>, req: Request) -> Response {
    let path = original_path(&req);
    let path = path.as_str();
    if app.faults.management_proxy() {
        // Forwarded to the Overlord/Coordinator, which answers its own 404 (see
        // `overlord_port`); explicit routes arrive there without their prefix.
        for prefix in ["/proxy/overlord", "/proxy/coordinator"] {
            if let Some(rest) = path.strip_prefix(prefix) {
                if rest.is_empty() || rest.starts_with('/') {
                    let rest = if rest.is_empty() { "/" } else { rest };
                    return jetty_error(
                        StatusCode::NOT_FOUND,
                        req.method(),
                        req.headers(),
                        rest,
                        OVERLORD_SERVLET,
                    );
                }
            }
        }
        if path.starts_with("/druid/indexer/") || path.starts_with("/druid/coordinator/") {
            return overlord_fallback(req).await;
        }
        if path.starts_with("/proxy/") {
            // AsyncManagementForwardingServlet.service: any other /proxy/ destination.
            return (
                StatusCode::BAD_GATEWAY,
                Json(json!({ "error": format!("Unsupported proxy destination[{path}]") })),
            )
                .into_response();
        }
    }
    jetty_error(
        StatusCode::NOT_FOUND,
        req.method(),
        req.headers(),
        path,
        ROUTER_SERVLET,
    )
}

/// Paths the Overlord+Coordinator port has no route for.
async fn overlord_fallback(req: Request) -> Response {
    jetty_error(
        StatusCode::NOT_FOUND,
        req.method(),
        req.headers(),
        req.uri().path(),
        OVERLORD_SERVLET,
    )
}

/// Jetty 9.4's error page (org.eclipse.jetty.server.handler.ErrorHandler), as Druid's
/// servers send it: `druid.server.http.showDetailedJettyErrors` defaults to true, so the
/// default handler runs and shows the servlet, and Druid sets
/// `httpConfiguration.setSendServerVersion(false)`, so no "Powered by Jetty" line
/// (JettyServerModule.makeAndInitializeServer). Only GET, POST and HEAD get a body
/// (`errorPageForMethod`); the body follows the Accept header: HTML when there is none or
/// it accepts text/html, text/* or */*, JSON for application/json or text/json, plain
/// text for text/plain, nothing otherwise. Cache-Control as Jetty sets it.
fn jetty_error(
    status: StatusCode,
    method: &Method,
    headers: &HeaderMap,
    uri: &str,
    servlet: &str,
) -> Response {
    let code = status.as_u16();
    let message = status.canonical_reason().unwrap_or("");
    let body = if matches!(*method, Method::GET | Method::POST | Method::HEAD) {
        jetty_body(headers, code, message, uri, servlet)
    } else {
        None
    };
    let mut resp = match body {
        Some((ctype, text)) => {
            let mut r = (status, text).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            r
        }
        None => status.into_response(),
    };
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate,no-cache,no-store"),
    );
    resp
}

/// Content type and text of Jetty's error body for this request's Accept header.
fn jetty_body(
    headers: &HeaderMap,
    code: u16,
    message: &str,
    uri: &str,
    servlet: &str,
) -> Option<(&'static str, String)> {
    let accept: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let kinds = if accept.is_empty() {
        vec!["text/html".to_string()]
    } else {
        accepted_types(&accept.join(","))
    };
    let (uri, message, servlet) = (xml(uri), xml(message), xml(servlet));
    for kind in kinds {
        match kind.as_str() {
            "text/html" | "text/*" | "*/*" => {
                // ErrorHandler.writeErrorPage / writeErrorPageHead / writeErrorPageMessage.
                return Some((
                    "text/html;charset=iso-8859-1",
                    format!(
                        "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=utf-8\"/>\n\
                         <title>Error {code} {message}</title>\n</head>\n<body><h2>HTTP ERROR {code} {message}</h2>\n\
                         <table>\n<tr><th>URI:</th><td>{uri}</td></tr>\n<tr><th>STATUS:</th><td>{code}</td></tr>\n\
                         <tr><th>MESSAGE:</th><td>{message}</td></tr>\n<tr><th>SERVLET:</th><td>{servlet}</td></tr>\n\
                         </table>\n\n</body>\n</html>\n"
                    ),
                ));
            }
            "text/json" | "application/json" => {
                // ErrorHandler.writeErrorJson: a java.util.HashMap of url, status, message
                // and servlet, iterated in its bucket order (servlet, message, url, status).
                let q = |s: &str| Value::String(s.to_string()).to_string();
                return Some((
                    if kind == "text/json" {
                        "text/json"
                    } else {
                        "application/json"
                    },
                    format!(
                        "{{\n\"servlet\":{},\n\"message\":{},\n\"url\":{},\n\"status\":{}\n}}",
                        q(&servlet),
                        q(&message),
                        q(&uri),
                        q(&code.to_string())
                    ),
                ));
            }
            "text/plain" => {
                // ErrorHandler.writeErrorPlain.
                return Some((
                    "text/plain;charset=iso-8859-1",
                    format!(
                        "HTTP ERROR {code} {message}\nURI: {uri}\nSTATUS: {code}\nMESSAGE: {message}\nSERVLET: {servlet}\n"
                    ),
                ));
            }
            _ => {}
        }
    }
    None
}

/// The media types of an Accept header, best first: by quality, then most specific first
/// (Jetty's QuotedQualityCSV with MOST_SPECIFIC_MIME_ORDERING); q=0 is dropped.
fn accepted_types(accept: &str) -> Vec<String> {
    let mut types: Vec<(String, f32, u8)> = accept
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let ty = it.next()?.trim().to_ascii_lowercase();
            if ty.is_empty() {
                return None;
            }
            let q = it
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let specific = match ty.as_str() {
                "*/*" => 0,
                t if t.ends_with("/*") => 1,
                _ => 2,
            };
            (q > 0.0).then_some((ty, q, specific))
        })
        .collect();
    types.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)));
    types.into_iter().map(|(t, _, _)| t).collect()
}

/// Jetty's StringUtil.sanitizeXmlString: XML entities for `& < > ' "`, '?' for other
/// control characters.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

// ---- /status and SQL ----

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
    let unloaded = app.faults.unloaded();
    let req2 = req.clone();
    let res =
        tokio::task::spawn_blocking(move || sql::execute_with(&store, &unloaded, &req2)).await;
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
    // Objects are written by hand so keys keep the SELECT order, as Druid's do (serde_json's
    // map sorts keys unless its workspace-wide `preserve_order` feature is on).
    let object = |vals: &mut dyn Iterator<Item = (&String, Value)>| -> String {
        let fields: Vec<String> = vals
            .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v))
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    let objects = || -> Vec<String> {
        let mut out = Vec::new();
        if req.header {
            out.push(object(&mut rs.columns.iter().map(|c| (&c.name, typed(c)))));
        }
        for row in &rs.rows {
            out.push(object(
                &mut rs
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| (&c.name, v.clone())),
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
    let lines = |vals: Vec<String>| -> String {
        let mut s = String::new();
        for v in vals {
            s.push_str(&v);
            s.push('\n');
        }
        s.push('\n'); // Druid ends line formats with an empty line.
        s
    };
    let texts = |vals: Vec<Value>| -> Vec<String> { vals.iter().map(Value::to_string).collect() };
    let (body, ctype) = match format.to_ascii_lowercase().as_str() {
        "object" => (format!("[{}]", objects().join(",")), "application/json"),
        "array" => (Value::Array(arrays()).to_string(), "application/json"),
        "objectlines" => (lines(objects()), "text/plain"),
        "arraylines" => (lines(texts(arrays())), "text/plain"),
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

// ---- Supervisors (SupervisorResource, indexing-service/.../overlord/supervisor/) ----

/// Every `/{id}/...` endpoint but `/{id}/history` carries
/// `@ResourceFilters(SupervisorResourceFilter.class)`, which runs before the method and, for an
/// id with no spec, throws HTTP 400 with the plain string entity "Cannot find any supervisor
/// with id: [id]" (indexing-service/.../overlord/http/security/SupervisorResourceFilter.java).
/// The entity is a String with no type, so Jersey writes it as text/plain (its String writer).
fn no_such_supervisor(id: &str) -> Response {
    let mut r = (
        StatusCode::BAD_REQUEST,
        format!("Cannot find any supervisor with id: [{id}]"),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
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
        Err(e) => invalid_spec(&e, &body),
    }
}

/// A spec Druid cannot build: `specPost` takes a `SupervisorSpec` that Jersey's Jackson
/// provider deserializes, and a spec whose constructor rejects it fails there as a Jackson
/// ValueInstantiationException (a JsonMappingException). Druid maps every
/// JsonMappingException to HTTP 400 `{"error": exception.getMessage()}`
/// (server/.../initialization/jetty/CustomExceptionMapper.java); Jackson's message (2.12,
/// as in Druid 28 to 31) is "Cannot construct instance of `class`, problem: reason" and the
/// location of the parser, which stands at the end of the spec.
fn invalid_spec(e: &SimError, body: &[u8]) -> Response {
    let problem = match e {
        SimError::Spec(m) => m.clone(),
        other => other.to_string(),
    };
    let text = String::from_utf8_lossy(body);
    let text = text.trim_end();
    let line = text.matches('\n').count() + 1;
    let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": format!(
                "Cannot construct instance of `org.apache.druid.indexing.kafka.supervisor.KafkaSupervisorSpec`, problem: {problem}\n at [Source: (org.eclipse.jetty.server.HttpInputOverHTTP); line: {line}, column: {column}]"
            )
        })),
    )
        .into_response()
}

async fn supervisor_spec(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.get(&id) {
        Some(s) => Json(s.spec_json()).into_response(),
        None => no_such_supervisor(&id),
    }
}

async fn supervisor_status(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.get(&id) {
        Some(s) => Json(s.status()).into_response(),
        None => no_such_supervisor(&id),
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
        None => no_such_supervisor(&id),
    }
}

/// `specSuspendOrResume`: a supervisor already in the asked state answers 400
/// `{"error":"[id] is already suspended|running"}`.
fn already(id: &str, suspended: bool) -> Response {
    let state = if suspended { "suspended" } else { "running" };
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": format!("[{id}] is already {state}") })),
    )
        .into_response()
}

fn is_suspended(app: &App, id: &str) -> Option<bool> {
    app.supervisors
        .get(id)
        .map(|s| s.brief()["suspended"] == json!(true))
}

async fn supervisor_suspend(State(app): State<App>, Path(id): Path<String>) -> Response {
    match is_suspended(&app, &id) {
        None => no_such_supervisor(&id),
        Some(true) => already(&id, true),
        Some(false) => match app.supervisors.suspend(&id) {
            Some(v) => Json(v).into_response(),
            None => no_such_supervisor(&id),
        },
    }
}

async fn supervisor_resume(State(app): State<App>, Path(id): Path<String>) -> Response {
    match is_suspended(&app, &id) {
        None => no_such_supervisor(&id),
        Some(false) => already(&id, false),
        Some(true) => match app.supervisors.resume(&id) {
            Some(v) => Json(v).into_response(),
            None => no_such_supervisor(&id),
        },
    }
}

async fn supervisor_reset(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.reset(&id) {
        Some(()) => Json(json!({ "id": id })).into_response(),
        None => no_such_supervisor(&id),
    }
}

/// `terminate`, and its deprecated alias `shutdown`.
async fn supervisor_terminate(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.supervisors.terminate(&id) {
        Some(()) => Json(json!({ "id": id })).into_response(),
        None => no_such_supervisor(&id),
    }
}

/// The other `/{id}/...` endpoints of SupervisorResource. For an unknown id they answer what
/// Druid does (the resource filter's 400; `/{id}/history` has no filter and answers 404
/// `{"error":"No history for [id]."}`); for a known id the emulator has no answer to give
/// and says so (501), rather than a wrong one. Paths SupervisorResource does not have get
/// the Overlord's 404 page.
async fn supervisor_other(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let known = matches!(
        (&method, action.as_str()),
        (&Method::GET, "stats" | "parseErrors" | "history") | (&Method::POST, "resetOffsets")
    );
    if !known {
        return jetty_error(
            StatusCode::NOT_FOUND,
            &method,
            &headers,
            &format!("/druid/indexer/v1/supervisor/{id}/{action}"),
            OVERLORD_SERVLET,
        );
    }
    match (app.supervisors.get(&id), action.as_str()) {
        (None, "history") => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("No history for [{id}].") })),
        )
            .into_response(),
        (None, _) => no_such_supervisor(&id),
        (Some(_), _) => not_emulated(&format!("supervisor {action}")),
    }
}

/// `GET /druid/indexer/v1/supervisor/history` (all supervisors' spec history).
async fn supervisor_all_history() -> Response {
    not_emulated("supervisor history")
}

fn not_emulated(what: &str) -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        Json(json!({ "error": format!("lockstep-sim does not emulate {what}") })),
    )
        .into_response()
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

// ---- Coordinator ----

/// Segments some server serves: DataSourcesResource answers from the server inventory, so a
/// datasource whose segments nobody serves is absent there.
fn served_segments(app: &App, ds: &str) -> Vec<Segment> {
    if app.faults.is_unloaded(ds) {
        Vec::new()
    } else {
        app.store.segments(Some(ds))
    }
}

/// `GET /druid/coordinator/v1/datasources`: the queryable datasources (DataSourcesResource.
/// getQueryableDataSources, from the server inventory).
async fn datasources(State(app): State<App>) -> Json<Value> {
    let unloaded = app.faults.unloaded();
    Json(json!(app
        .store
        .datasources()
        .into_iter()
        .filter(|d| !unloaded.contains(d))
        .collect::<Vec<_>>()))
}

/// `GET .../datasources/{ds}`: DataSourcesResource.getSimpleDatasource; 204 without a body
/// when no server serves the datasource (logAndCreateDataSourceNotFoundResponse).
async fn datasource(State(app): State<App>, Path(ds): Path<String>) -> Response {
    let segs = served_segments(&app, &ds);
    let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let size: u64 = segs.iter().map(|s| s.size).sum();
    Json(json!({
        "tiers": { "_default_tier": { "size": size, "segmentCount": segs.len(), "replicatedSize": size } },
        "segments": {
            "maxTime": iso(last.end),
            "size": size,
            "minTime": iso(first.start),
            "count": segs.len(),
            "replicatedSize": size,
        }
    }))
    .into_response()
}

/// `/intervals` lists served intervals newest first; `?simple` (and `?full`, reduced to the
/// same) maps each to `{size, count}`; 204 when no server serves the datasource
/// (DataSourcesResource.getIntervalsWithServedSegmentsOrAllServedSegmentsPerIntervals).
async fn datasource_intervals(
    State(app): State<App>,
    Path(ds): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut segs = served_segments(&app, &ds);
    if segs.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    segs.reverse();
    let name = |s: &Segment| format!("{}/{}", iso(s.start), iso(s.end));
    if q.contains_key("simple") || q.contains_key("full") {
        let m: serde_json::Map<String, Value> = segs
            .iter()
            .map(|s| (name(s), json!({ "size": s.size, "count": 1 })))
            .collect();
        Json(Value::Object(m)).into_response()
    } else {
        Json(json!(segs.iter().map(name).collect::<Vec<_>>())).into_response()
    }
}

/// `GET /druid/coordinator/v1/loadstatus` over the used segments (CoordinatorResource.
/// getLoadStatus): by default the percentage of segments loaded per datasource, with
/// `?simple` the number of unavailable segments, with `?full` the under-replicated counts per
/// tier (DruidCoordinator.getDatasourceToLoadStatus / getDatasourceToUnavailableSegmentCount /
/// getTierToDatasourceToUnderReplicatedCount). The emulator's segments are all loaded
/// unless the datasource is unloaded.
async fn loadstatus(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let unloaded = app.faults.unloaded();
    let per_ds = |f: &dyn Fn(bool, usize) -> Value| -> serde_json::Map<String, Value> {
        app.store
            .datasources()
            .into_iter()
            .map(|d| {
                let n = app.store.segments(Some(&d)).len();
                let v = f(unloaded.contains(&d), n);
                (d, v)
            })
            .collect()
    };
    if q.contains_key("simple") {
        return Json(Value::Object(per_ds(&|down, n| {
            json!(if down { n } else { 0 })
        })));
    }
    if q.contains_key("full") {
        let m = per_ds(&|down, n| json!(if down { n } else { 0 }));
        return Json(json!({ "_default_tier": m }));
    }
    Json(Value::Object(per_ds(&|down, _| {
        json!(if down { 0.0 } else { 100.0 })
    })))
}

/// `GET /druid/coordinator/v1/metadata/datasources`: datasources with used segments, served
/// or not (MetadataResource.getDataSources).
async fn metadata_datasources(State(app): State<App>) -> Json<Value> {
    Json(json!(app.store.datasources()))
}

/// `GET /druid/coordinator/v1/metadata/datasources/{ds}/segments[?full]`: the used segments
/// from the metadata store, served or not (MetadataResource.getUsedSegmentsInDataSource):
/// their ids, or with `?full` the DataSegment objects. An unknown datasource is
/// `Response.status(NOT_FOUND).build()`, no entity, which Jersey turns into Jetty's 404 page.
async fn metadata_segments(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    Path(ds): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let segs = app.store.segments(Some(&ds));
    if segs.is_empty() {
        return jetty_error(
            StatusCode::NOT_FOUND,
            &method,
            &headers,
            &format!("/druid/coordinator/v1/metadata/datasources/{ds}/segments"),
            OVERLORD_SERVLET,
        );
    }
    let body = if q.contains_key("full") {
        let objs: Vec<String> = segs.iter().map(data_segment).collect();
        format!("[{}]", objs.join(","))
    } else {
        json!(segs.iter().map(Segment::id).collect::<Vec<_>>()).to_string()
    };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A DataSegment as Jackson writes it (processing/.../druid/timeline/DataSegment.java):
/// the creator properties in order (dataSource, interval, version, loadSpec, dimensions,
/// metrics, shardSpec, binaryVersion, size; projections and lastCompactionState only when
/// set), then the read-only "identifier". Dimensions and metrics are comma-joined
/// (CommaListJoinSerializer); the emulator keeps no per-segment column lists, so they are
/// empty. Stream ingestion makes numbered shard specs with `partitions: 0`. The loadSpec is
/// local deep storage at the default storage directory of the quickstart
/// (`var/druid/segments`) and DataSegmentPusher.getDefaultStorageDir's layout
/// `dataSource/start_end/version/partitionNum`, plus `index.zip`.
fn data_segment(s: &Segment) -> String {
    let interval = format!("{}/{}", iso(s.start), iso(s.end));
    let path = format!(
        "var/druid/segments/{}/{}_{}/{}/0/index.zip",
        s.datasource,
        iso(s.start),
        iso(s.end),
        s.version
    );
    let fields = [
        ("dataSource", json!(s.datasource)),
        ("interval", json!(interval)),
        ("version", json!(s.version)),
        (
            "loadSpec",
            Value::String(
                r#"{"type":"local","path":"#.to_string() + &json!(path).to_string() + "}",
            ),
        ),
        ("dimensions", json!("")),
        ("metrics", json!("")),
        (
            "shardSpec",
            Value::String(r#"{"type":"numbered","partitionNum":0,"partitions":0}"#.to_string()),
        ),
        ("binaryVersion", json!(9)),
        ("size", json!(s.size)),
        ("identifier", json!(s.id())),
    ];
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| {
            let v = match (*k, v) {
                ("loadSpec" | "shardSpec", Value::String(raw)) => raw.clone(),
                _ => v.to_string(),
            };
            format!("{}:{v}", json!(k))
        })
        .collect();
    format!("{{{}}}", parts.join(","))
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
struct UnloadBody {
    datasource: String,
    unloaded: bool,
}

async fn faults_unload(State(app): State<App>, Json(b): Json<UnloadBody>) -> Json<Value> {
    if b.unloaded {
        app.faults.unload(&b.datasource);
    } else {
        app.faults.reload(&b.datasource);
    }
    Json(json!(app.faults.snapshot()))
}

#[derive(Deserialize)]
struct ErrorsBody {
    /// `http500`, `html502`, `timeout`, `empty503` or `none`.
    mode: String,
    #[serde(default)]
    count: Option<u64>,
}

async fn faults_errors(State(app): State<App>, Json(b): Json<ErrorsBody>) -> Response {
    if b.mode == "none" {
        app.faults.clear_errors();
        return Json(json!(app.faults.snapshot())).into_response();
    }
    match serde_json::from_value::<ErrorMode>(Value::String(b.mode.clone())) {
        Ok(mode) => app.faults.fail_requests(mode, b.count),
        Err(_) => {
            return bad_request(format!(
                "mode '{}': use http500, html502, timeout, empty503 or none",
                b.mode
            ))
        }
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

#[derive(Deserialize)]
struct ProxyBody {
    enabled: bool,
}

async fn faults_management_proxy(State(app): State<App>, Json(b): Json<ProxyBody>) -> Json<Value> {
    app.faults.set_management_proxy(b.enabled);
    Json(json!(app.faults.snapshot()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetty_page_follows_accept() {
        let mut h = HeaderMap::new();
        let (ctype, html) = jetty_body(&h, 404, "Not Found", "/druid/x", "default").unwrap();
        assert_eq!(ctype, "text/html;charset=iso-8859-1");
        assert_eq!(
            html,
            "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=utf-8\"/>\n<title>Error 404 Not Found</title>\n</head>\n<body><h2>HTTP ERROR 404 Not Found</h2>\n<table>\n<tr><th>URI:</th><td>/druid/x</td></tr>\n<tr><th>STATUS:</th><td>404</td></tr>\n<tr><th>MESSAGE:</th><td>Not Found</td></tr>\n<tr><th>SERVLET:</th><td>default</td></tr>\n</table>\n\n</body>\n</html>\n"
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/html;q=0.5"),
        );
        let (ctype, j) = jetty_body(&h, 404, "Not Found", "/a", "default").unwrap();
        assert_eq!(ctype, "application/json");
        assert_eq!(
            j,
            "{\n\"servlet\":\"default\",\n\"message\":\"Not Found\",\n\"url\":\"/a\",\n\"status\":\"404\"\n}"
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("image/png"));
        assert!(jetty_body(&h, 404, "Not Found", "/a", "default").is_none());
        assert_eq!(xml("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
    }

    #[test]
    fn accept_order() {
        assert_eq!(
            accepted_types("*/*;q=0.8, text/plain, text/*;q=0.8, x/y;q=0"),
            vec!["text/plain", "text/*", "*/*"]
        );
    }
}
