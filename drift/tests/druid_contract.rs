//! Contract tests: the Druid client's parsing pinned to the documented answer shapes
//! (fixtures in `fixtures/druid/`, derived from the project's druid-api notes), served by a
//! small local HTTP server: success bodies, both error shapes, an HTML 502 page, 401/403,
//! malformed JSON, a timeout and an unreachable site. Each error must name the site and never
//! contain the password.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use lockstep_config::{CountExpr, Druid, Granularity, Secret};
use lockstep_drift::druid::{parse_time, DruidClient, DruidError, StreamPartition};
use lockstep_drift::DriftMetrics;
use std::time::Duration;

const PASSWORD: &str = "s3cr3t-pa55";

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/druid")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Answers per scenario (the first path segment), like a Router would.
async fn scenario(scenario: &str, headers: &HeaderMap, sql: Option<&str>, what: &str) -> Response {
    let expected = format!(
        "Basic {}",
        base64_encode(format!("lockstep:{PASSWORD}").as_bytes())
    );
    let authorized = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    match scenario {
        "ok" if !authorized => json(StatusCode::UNAUTHORIZED, fixture("unauthorized_401.json")),
        "ok" => {
            let name = match (what, sql) {
                ("sql", Some(q)) if q.contains("sys.segments") => "sql_segments.json",
                ("sql", Some(q)) if q.contains("TIME_FLOOR") => "sql_buckets.json",
                ("sql", Some(q)) if q.contains("MAX(__time)") => "sql_latest.json",
                ("list", _) => "supervisor_list_state.json",
                ("status", _) => "supervisor_status.json",
                _ => return json(StatusCode::BAD_REQUEST, fixture("error_legacy.json")),
            };
            json(StatusCode::OK, fixture(name))
        }
        "legacy" => json(StatusCode::BAD_REQUEST, fixture("error_legacy.json")),
        "newer" => json(
            StatusCode::BAD_REQUEST,
            fixture("error_druid_exception.json"),
        ),
        "html" => (
            StatusCode::BAD_GATEWAY,
            [(axum::http::header::CONTENT_TYPE, "text/html")],
            fixture("html_502.html"),
        )
            .into_response(),
        "unauth" => json(StatusCode::UNAUTHORIZED, fixture("unauthorized_401.json")),
        "forbidden" => (StatusCode::FORBIDDEN, "<html>Forbidden</html>").into_response(),
        "truncated" => json(StatusCode::OK, "[{\"start\": \"2026-11-23T00:0".to_string()),
        "shape" => json(StatusCode::OK, "{\"unexpected\": true}".to_string()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(StatusCode::OK, "[]".to_string())
        }
        _ => (StatusCode::NOT_FOUND, "no such scenario").into_response(),
    }
}

/// Basic-auth encoding for the fixture server's check (the client uses reqwest's).
fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn serve() -> String {
    let app = Router::new()
        .route(
            "/{scn}/druid/v2/sql",
            post(
                |Path(scn): Path<String>, headers: HeaderMap, body: Bytes| async move {
                    let v: serde_json::Value = serde_json::from_slice(&body).expect("sql body");
                    assert_eq!(v["resultFormat"], "object", "object results requested");
                    let q = v["query"].as_str().unwrap_or_default().to_string();
                    scenario(&scn, &headers, Some(&q), "sql").await
                },
            ),
        )
        .route(
            "/{scn}/druid/indexer/v1/supervisor",
            get(|Path(scn): Path<String>, headers: HeaderMap| async move {
                scenario(&scn, &headers, None, "list").await
            }),
        )
        .route(
            "/{scn}/druid/indexer/v1/supervisor/{id}/status",
            get(
                |Path((scn, _id)): Path<(String, String)>, headers: HeaderMap| async move {
                    scenario(&scn, &headers, None, "status").await
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn client(base: &str, scenario: &str) -> DruidClient {
    let cfg = Druid {
        router_url: format!("{base}/{scenario}"),
        overlord_url: None,
        coordinator_url: None,
        username: Some("lockstep".to_string()),
        password: Some(Secret::new(PASSWORD)),
        timeout: Duration::from_millis(800),
        ca_file: None,
    };
    DruidClient::new("eu-west", &cfg, DriftMetrics::new()).expect("client")
}

fn check_error(e: &DruidError) {
    let shown = format!("{e} {e:?}");
    assert_eq!(e.site(), "eu-west");
    assert!(shown.contains("site eu-west"), "{shown}");
    assert!(!shown.contains(PASSWORD), "password leaked: {shown}");
}

#[tokio::test]
async fn success_shapes_parse() {
    let base = serve().await;
    let c = client(&base, "ok");

    let segs = c.segment_intervals("clicks").await.expect("segments");
    assert_eq!(segs.len(), 3);
    assert_eq!(segs[0].start, "2026-11-23T00:00:00.000Z");
    assert_eq!(segs[0].rows, 3600);
    assert_eq!(segs[0].segments, 2);
    assert_eq!(segs[2].rows, 0, "null num_rows reads as 0 (not loaded)");

    let t0 = parse_time("2026-11-23T00:00:00Z").expect("time");
    let buckets = c
        .bucket_counts(
            "clicks",
            &CountExpr::Rows,
            Granularity::Hour,
            t0,
            t0 + 7_200_000,
        )
        .await
        .expect("buckets");
    assert_eq!(buckets, vec![(t0, 3600), (t0 + 3_600_000, 3598)]);

    let latest = c.latest("clicks").await.expect("latest");
    assert_eq!(latest, parse_time("2026-11-24T13:59:58.123Z"));

    let sups = c.supervisors().await.expect("supervisors");
    assert_eq!(sups.len(), 2);
    assert_eq!(sups[1].id, "views");
    assert_eq!(sups[1].suspended, Some(true));
    assert_eq!(sups[0].detailed_state.as_deref(), Some("RUNNING"));

    let st = c.supervisor_status("clicks").await.expect("status");
    assert_eq!(st.id, "clicks");
    let p = &st.payload;
    assert_eq!(p.stream.as_deref(), Some("clicks"));
    assert_eq!(p.state.as_deref(), Some("RUNNING"));
    assert_eq!(p.latest_offsets.get(&StreamPartition::single(2)), Some(&90));
    assert_eq!(p.aggregate_lag, Some(60));
    let end = p.ingested_end();
    // Partition 0: the furthest of the active (150) and publishing (100) tasks; 1 from the
    // active task; 2 has no task: latestOffsets - minimumLag.
    assert_eq!(end.offsets.get(&StreamPartition::single(0)), Some(&150));
    assert_eq!(end.offsets.get(&StreamPartition::single(1)), Some(&260));
    assert_eq!(end.offsets.get(&StreamPartition::single(2)), Some(&80));
    assert_eq!(
        p.recent_error_texts(),
        vec!["org.apache.kafka.common.errors.TimeoutException: boom"]
    );
}

#[tokio::test]
async fn legacy_error_shape() {
    let base = serve().await;
    let e = client(&base, "legacy")
        .segment_intervals("nope")
        .await
        .unwrap_err();
    check_error(&e);
    match &e {
        DruidError::Druid { status, body, .. } => {
            assert_eq!(*status, 400);
            let lockstep_drift::druid::ErrorBody {
                code,
                category,
                message,
                class,
            } = &**body;
            assert_eq!(code.as_deref(), Some("Plan validation failed"));
            assert_eq!(category, &None);
            assert!(message.contains("Object 'nope' not found"), "{message}");
            assert!(e.is_missing_table());
            assert_eq!(
                class.as_deref(),
                Some("org.apache.calcite.tools.ValidationException")
            );
        }
        other => panic!("expected a Druid error, got {other:?}"),
    }
}

#[tokio::test]
async fn newer_error_shape() {
    let base = serve().await;
    let e = client(&base, "newer").latest("nope").await.unwrap_err();
    check_error(&e);
    match &e {
        DruidError::Druid { status, body, .. } => {
            assert_eq!(*status, 400);
            let lockstep_drift::druid::ErrorBody {
                code,
                category,
                message,
                ..
            } = &**body;
            assert_eq!(code.as_deref(), Some("invalidInput"));
            assert_eq!(category.as_deref(), Some("INVALID_INPUT"));
            assert!(message.starts_with("Table 'nope' not found"), "{message}");
        }
        other => panic!("expected a Druid error, got {other:?}"),
    }
    assert!(e.to_string().contains("invalidInput: Table 'nope'"), "{e}");
    assert!(
        e.is_missing_table(),
        "an unknown table reads as an empty datasource"
    );
}

#[tokio::test]
async fn html_error_page_is_not_json() {
    let base = serve().await;
    let e = client(&base, "html").supervisors().await.unwrap_err();
    check_error(&e);
    match &e {
        DruidError::NotJson {
            status, snippet, ..
        } => {
            assert_eq!(*status, 502);
            assert!(snippet.contains("502 Bad Gateway"), "{snippet}");
            assert!(!snippet.contains('\n'));
        }
        other => panic!("expected NotJson, got {other:?}"),
    }
}

#[tokio::test]
async fn unauthorized_and_forbidden() {
    let base = serve().await;
    for (scn, want) in [("unauth", 401), ("forbidden", 403)] {
        let e = client(&base, scn)
            .supervisor_status("clicks")
            .await
            .unwrap_err();
        check_error(&e);
        match &e {
            DruidError::Unauthorized { status, .. } => assert_eq!(*status, want),
            other => panic!("{scn}: expected Unauthorized, got {other:?}"),
        }
    }
    // Wrong password against the "ok" scenario: the 401 body is kept, the password is not.
    let cfg = Druid {
        router_url: format!("{base}/ok"),
        overlord_url: None,
        coordinator_url: None,
        username: Some("lockstep".to_string()),
        password: Some(Secret::new("wrong-one")),
        timeout: Duration::from_secs(2),
        ca_file: None,
    };
    let c = DruidClient::new("eu-west", &cfg, DriftMetrics::new()).expect("client");
    let e = c.latest("clicks").await.unwrap_err();
    assert!(e.to_string().contains("Authentication failed"), "{e}");
    assert!(!format!("{e:?}").contains("wrong-one"));
}

#[tokio::test]
async fn malformed_json_and_wrong_shape() {
    let base = serve().await;
    let e = client(&base, "truncated")
        .segment_intervals("clicks")
        .await
        .unwrap_err();
    check_error(&e);
    // A 200 whose JSON is cut short: Druid fails midstream after sending the status
    // (docs/api-reference/sql-api.md, "truncated responses"), so it is Druid's answer.
    assert!(
        matches!(e, DruidError::Decode { status: 200, ref message, .. } if message.contains("cut short")),
        "{e:?}"
    );
    let e = client(&base, "shape")
        .segment_intervals("clicks")
        .await
        .unwrap_err();
    check_error(&e);
    assert!(matches!(e, DruidError::Decode { .. }), "{e:?}");
}

#[tokio::test]
async fn timeout_is_typed() {
    let base = serve().await;
    let e = client(&base, "slow").latest("clicks").await.unwrap_err();
    check_error(&e);
    assert!(matches!(e, DruidError::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn unreachable_is_typed() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let e = client(&format!("http://127.0.0.1:{port}"), "ok")
        .segment_intervals("clicks")
        .await
        .unwrap_err();
    check_error(&e);
    assert!(matches!(e, DruidError::Unreachable { .. }), "{e:?}");
    assert_eq!(e.kind(), "unreachable");
}

#[tokio::test]
async fn failed_calls_are_counted() {
    let base = serve().await;
    let registry = prometheus::Registry::new();
    let metrics = DriftMetrics::new();
    metrics.register(&registry).expect("register");
    let cfg = Druid {
        router_url: format!("{base}/html"),
        overlord_url: None,
        coordinator_url: None,
        username: None,
        password: None,
        timeout: Duration::from_secs(2),
        ca_file: None,
    };
    let c = DruidClient::new("eu-west", &cfg, metrics.clone()).expect("client");
    let _ = c.supervisors().await;
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encode");
    assert!(
        text.contains("lockstep_druid_errors_total{kind=\"not_json\",site=\"eu-west\"} 1"),
        "{text}"
    );
    assert!(text.contains("lockstep_druid_request_duration_seconds_count{endpoint=\"supervisor.list\",site=\"eu-west\"} 1"), "{text}");
}
