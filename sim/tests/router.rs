//! The emulator as a Druid cluster is reached: a Router port (SQL, and the management APIs
//! only while its management proxy is on) and an Overlord+Coordinator port; published but
//! unserved segments; Druid's answers for unknown supervisors and invalid specs; the three
//! error body shapes for timeouts; bodies that are not Druid's (empty 503).
//!
//! Real HTTP against `Emulator::start` on 127.0.0.1; librdkafka's mock cluster where rows must
//! be ingested. Every wait is bounded; nothing asserts on timing.

mod common;

use common::{
    cluster, dead_bootstrap, high_watermarks, spec, start_with, t0, Api, Http, Resp, HOUR,
};
use lockstep_sim::loadgen::{self, LoadSpec};
use lockstep_sim::time::iso;
use lockstep_sim::{Emulator, EmulatorConfig, ErrorMode, ErrorShape};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The drift client's coarse query (druid-api.md), with `available` per interval.
const DRIFT_SEGMENTS: &str = r#"SELECT "start", "end", SUM("num_rows") AS "rows", COUNT(*) AS "segments", SUM("is_available") AS "available" FROM sys.segments WHERE "datasource" = 'clicks' AND is_published = 1 AND is_overshadowed = 0 GROUP BY 1, 2 ORDER BY 1"#;

/// Jetty 9.4's error page as Druid's servers send it (no "Powered by" line).
fn jetty_404(uri: &str, servlet: &str) -> String {
    format!(
        "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=utf-8\"/>\n\
         <title>Error 404 Not Found</title>\n</head>\n<body><h2>HTTP ERROR 404 Not Found</h2>\n\
         <table>\n<tr><th>URI:</th><td>{uri}</td></tr>\n<tr><th>STATUS:</th><td>404</td></tr>\n\
         <tr><th>MESSAGE:</th><td>Not Found</td></tr>\n<tr><th>SERVLET:</th><td>{servlet}</td></tr>\n\
         </table>\n\n</body>\n</html>\n"
    )
}

const ROUTER_SERVLET: &str = "org.eclipse.jetty.servlet.DefaultServlet-5f9b2141";

fn assert_router_404(r: &Resp, uri: &str) {
    assert_eq!(r.status, 404, "{uri}: {}", r.text);
    assert_eq!(
        r.ctype.as_deref(),
        Some("text/html;charset=iso-8859-1"),
        "{uri}"
    );
    assert_eq!(r.text, jetty_404(uri, ROUTER_SERVLET), "{uri}");
}

/// Waits (bounded) until the supervisor's task has read every record of the topic.
async fn wait_caught_up(api: &Api, id: &str, bootstrap: &str, partitions: i32) {
    let hw = high_watermarks(bootstrap, id, partitions);
    api.wait_status(id, "catch-up", |p| {
        let current: Option<BTreeMap<String, i64>> =
            serde_json::from_value(p["activeTasks"][0]["currentOffsets"].clone()).ok();
        current.as_ref() == Some(&hw)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloaded_segments_stay_published_but_sql_cannot_see_them() {
    let kafka = cluster(&[("clicks", 2)]);
    let bootstrap = kafka.bootstrap_servers();
    let load = LoadSpec {
        partitions: 2,
        ..LoadSpec::new("clicks", 600, t0(), t0() + 3 * HOUR)
    };
    let produced: Vec<loadgen::Row> = loadgen::rows(&load).collect();
    loadgen::produce(&bootstrap, &load).await.unwrap();
    let emu = start_with(vec![spec("clicks", "clicks", &bootstrap, "timestamp")]).await;
    let api = Api::new(&emu);
    let (http, base) = (&api.http, api.base.clone());
    wait_caught_up(&api, "clicks", &bootstrap, 2).await;

    let mut per_hour: BTreeMap<i64, u64> = BTreeMap::new();
    for r in &produced {
        *per_hour
            .entry(r.ts_ms - r.ts_ms.rem_euclid(HOUR))
            .or_default() += 1;
    }
    let drift = |rows: &dyn Fn(u64) -> u64, available: u64| -> Value {
        Value::Array(
            per_hour
                .iter()
                .map(|(h, n)| {
                    json!({"start": iso(*h), "end": iso(h + HOUR), "rows": rows(*n), "segments": 1, "available": available})
                })
                .collect(),
        )
    };
    let r = http.sql(&base, DRIFT_SEGMENTS).await;
    assert_eq!((r.status, r.json()), (200, drift(&|n| n, 1)));

    // Historicals down: published, not served.
    let r = http
        .post(
            &format!("{base}/sim/faults/unload"),
            &json!({"datasource": "clicks", "unloaded": true}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["unloaded"], json!(["clicks"]));
    let unknown = |name: &str, column: usize| -> String {
        format!(
            r#"{{"error":"druidException","errorCode":"invalidInput","persona":"USER","category":"INVALID_INPUT","errorMessage":"Object '{name}' not found (line [1], column [{column}])","context":{{"sourceType":"sql","line":"1","column":"{column}","endLine":"1","endColumn":"{}"}}}}"#,
            column + name.len() + 1
        )
    };
    let r = http
        .sql(&base, r#"SELECT COUNT(*) AS "rows" FROM "clicks""#)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.ctype.as_deref(), Some("application/json"));
    assert_eq!(r.text, unknown("clicks", 32));
    // Exactly what a datasource that never existed answers.
    let r = http
        .sql(&base, r#"SELECT COUNT(*) AS "rows" FROM "nowhere""#)
        .await;
    assert_eq!((r.status, r.text), (400, unknown("nowhere", 32)));
    let r = http
        .sql(
            &base,
            r#"SELECT COUNT(*) AS "n" FROM sys.segments WHERE "datasource" = 'nowhere'"#,
        )
        .await;
    assert_eq!(r.json(), json!([{"n": 0}]));
    // The legacy shape of the same error.
    emu.faults().set_error_shape(ErrorShape::Legacy);
    let r = http
        .sql(&base, r#"SELECT COUNT(*) AS "rows" FROM "clicks""#)
        .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (
            400,
            r#"{"error":"Plan validation failed","errorMessage":"org.apache.calcite.runtime.CalciteContextException: From line 1, column 32 to line 1, column 39: Object 'clicks' not found","errorClass":"org.apache.calcite.tools.ValidationException","host":null}"#
        )
    );
    emu.faults().set_error_shape(ErrorShape::Modern);

    // sys.segments still lists them: published, unavailable, row counts unknown (0).
    let r = http.sql(&base, DRIFT_SEGMENTS).await;
    assert_eq!((r.status, r.json()), (200, drift(&|_| 0, 0)));
    let r = http
        .sql(
            &base,
            r#"SELECT COUNT(*) AS "n", SUM("is_active") AS "active", SUM("num_replicas") AS "replicas" FROM sys.segments
               WHERE "datasource" = 'clicks' AND is_published = 1 AND is_available = 0 AND is_realtime = 0 AND num_rows = 0"#,
        )
        .await;
    assert_eq!(r.json(), json!([{"n": 3, "active": 3, "replicas": 0}]));

    // The Coordinator's metadata API lists the used segments; its served views do not.
    let segs = http
        .get(&format!(
            "{base}/druid/coordinator/v1/metadata/datasources/clicks/segments"
        ))
        .await;
    assert_eq!(segs.status, 200);
    let ids: Vec<String> = serde_json::from_value(segs.json()).unwrap();
    assert_eq!(ids.len(), 3);
    let full = http
        .get(&format!(
            "{base}/druid/coordinator/v1/metadata/datasources/clicks/segments?full"
        ))
        .await;
    assert_eq!(full.status, 200);
    let full = full.json();
    for (seg, (h, _)) in full.as_array().unwrap().iter().zip(&per_hour) {
        assert_eq!(seg["dataSource"], "clicks");
        assert_eq!(seg["interval"], format!("{}/{}", iso(*h), iso(h + HOUR)));
        let version = seg["version"].as_str().unwrap();
        assert_eq!(seg["loadSpec"]["type"], "local");
        assert_eq!(
            seg["loadSpec"]["path"],
            format!(
                "var/druid/segments/clicks/{}_{}/{version}/0/index.zip",
                iso(*h),
                iso(h + HOUR)
            )
        );
        assert_eq!(
            seg["shardSpec"],
            json!({"type": "numbered", "partitionNum": 0, "partitions": 0})
        );
        assert!(seg["size"].as_u64().unwrap() > 0);
        assert!(ids.contains(&seg["identifier"].as_str().unwrap().to_string()));
    }
    let coord = format!("{base}/druid/coordinator/v1");
    assert_eq!(
        http.get(&format!("{coord}/metadata/datasources"))
            .await
            .json(),
        json!(["clicks"])
    );
    assert_eq!(
        http.get(&format!("{coord}/datasources")).await.json(),
        json!([])
    );
    let r = http
        .get(&format!("{coord}/datasources/clicks/intervals"))
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_eq!(
        http.get(&format!("{coord}/loadstatus?simple")).await.json(),
        json!({"clicks": 3})
    );
    assert_eq!(
        http.get(&format!("{coord}/loadstatus")).await.json(),
        json!({"clicks": 0.0})
    );
    // An unknown datasource: 404 without an entity, which Jetty writes as its page.
    let r = http
        .get(&format!("{coord}/metadata/datasources/nowhere/segments"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.text,
        jetty_404(
            "/druid/coordinator/v1/metadata/datasources/nowhere/segments",
            "default"
        )
    );

    // Reloaded: queryable again, with every row.
    emu.faults().reload("clicks");
    let r = http
        .sql(&base, r#"SELECT COUNT(*) AS "rows" FROM "clicks""#)
        .await;
    assert_eq!((r.status, r.json()), (200, json!([{"rows": 600}])));
    let r = http.sql(&base, DRIFT_SEGMENTS).await;
    assert_eq!(r.json(), drift(&|n| n, 1));
    assert_eq!(
        http.get(&format!("{coord}/loadstatus")).await.json(),
        json!({"clicks": 100.0})
    );
    // `/sim/faults/clear` ends an unload too.
    emu.faults().unload("clicks");
    assert_eq!(
        http.sql(&base, r#"SELECT COUNT(*) FROM "clicks""#)
            .await
            .status,
        400
    );
    http.post(&format!("{base}/sim/faults/clear"), &json!({}))
        .await;
    assert_eq!(
        http.sql(&base, r#"SELECT COUNT(*) FROM "clicks""#)
            .await
            .status,
        200
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_router_has_no_management_proxy_but_the_overlord_answers() {
    let emu = Emulator::start(EmulatorConfig {
        management_proxy: false,
        supervisors: vec![spec("gone", "gone", &dead_bootstrap(), "timestamp")],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let (http, router, overlord) = (Http::new(), emu.url(), emu.overlord_url());
    assert_ne!(emu.addr(), emu.overlord_addr());

    // The Router: Jetty's 404 for the Overlord's and Coordinator's paths, GET and POST.
    for path in [
        "/druid/indexer/v1/supervisor/gone/status",
        "/druid/indexer/v1/supervisor",
        "/druid/coordinator/v1/datasources",
        "/druid/coordinator/v1/metadata/datasources/gone/segments",
        "/proxy/enabled",
        "/proxy/overlord/druid/indexer/v1/supervisor",
    ] {
        assert_router_404(&http.get(&format!("{router}{path}")).await, path);
    }
    let r = http
        .post(
            &format!("{router}/druid/indexer/v1/supervisor/gone/suspend"),
            &json!({}),
        )
        .await;
    assert_router_404(&r, "/druid/indexer/v1/supervisor/gone/suspend");
    // Jetty's page follows the Accept header.
    let r = http
        .send(
            http.0
                .get(format!("{router}/druid/indexer/v1/supervisor"))
                .header("Accept", "application/json"),
        )
        .await;
    assert_eq!(
        (r.status, r.ctype.as_deref()),
        (404, Some("application/json"))
    );
    assert_eq!(
        r.json(),
        json!({"servlet": ROUTER_SERVLET, "message": "Not Found", "url": "/druid/indexer/v1/supervisor", "status": "404"})
    );
    // SQL and /status still work at the Router.
    let r = http
        .sql(&router, "SELECT COUNT(*) AS n FROM sys.segments")
        .await;
    assert_eq!((r.status, r.json()), (200, json!([{"n": 0}])));
    assert_eq!(http.get(&format!("{router}/status")).await.status, 200);

    // The Overlord+Coordinator answers whatever the proxy says, and has no SQL.
    let r = http
        .get(&format!(
            "{overlord}/druid/indexer/v1/supervisor/gone/status"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["payload"]["dataSource"], "gone");
    assert_eq!(
        http.get(&format!("{overlord}/druid/indexer/v1/supervisor"))
            .await
            .json(),
        json!(["gone"])
    );
    assert_eq!(
        http.get(&format!("{overlord}/druid/coordinator/v1/datasources"))
            .await
            .json(),
        json!([])
    );
    let r = http.sql(&overlord, "SELECT 1").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text, jetty_404("/druid/v2/sql", "default"));

    // The proxy switched on at runtime.
    let r = http
        .post(
            &format!("{router}/sim/faults/management-proxy"),
            &json!({"enabled": true}),
        )
        .await;
    assert_eq!(r.json()["managementProxy"], true);
    let r = http
        .get(&format!("{router}/druid/indexer/v1/supervisor/gone/status"))
        .await;
    assert_eq!(r.json()["payload"]["dataSource"], "gone");
    assert_eq!(
        http.get(&format!("{router}/proxy/enabled")).await.json(),
        json!({"enabled": true})
    );
    assert_eq!(
        http.get(&format!(
            "{router}/proxy/overlord/druid/indexer/v1/supervisor"
        ))
        .await
        .json(),
        json!(["gone"])
    );
    let r = http
        .get(&format!("{router}/proxy/coordinator/status"))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["version"].is_string());
    let r = http.get(&format!("{router}/proxy/elsewhere/x")).await;
    assert_eq!(
        (r.status, r.json()),
        (
            502,
            json!({"error": "Unsupported proxy destination[/proxy/elsewhere/x]"})
        )
    );
    // Paths the Overlord does not have: its 404, through the proxy (explicit routes arrive
    // without their prefix).
    for path in [
        "/druid/indexer/v1/nothing",
        "/proxy/overlord/druid/indexer/v1/nothing",
    ] {
        let r = http.get(&format!("{router}{path}")).await;
        assert_eq!(
            (r.status, r.text),
            (404, jetty_404("/druid/indexer/v1/nothing", "default")),
            "{path}"
        );
    }
    emu.faults().set_management_proxy(false);
    for path in [
        "/druid/indexer/v1/supervisor/gone/status",
        "/proxy/overlord/druid/indexer/v1/nothing",
        "/proxy/elsewhere/x",
    ] {
        assert_router_404(&http.get(&format!("{router}{path}")).await, path);
    }

    // Auth and faults apply on the Overlord port too.
    emu.faults().set_auth(Some(lockstep_sim::BasicAuth {
        user: "admin".into(),
        password: "pw".into(),
    }));
    let r = http
        .get(&format!("{overlord}/druid/indexer/v1/supervisor"))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        http.get(&format!("{overlord}/status/health")).await.status,
        200
    );
    let r = http
        .send(
            http.0
                .get(format!("{overlord}/druid/indexer/v1/supervisor"))
                .basic_auth("admin", Some("pw")),
        )
        .await;
    assert_eq!(r.status, 200);
    emu.faults().set_auth(None);
    emu.faults().fail_requests(ErrorMode::Empty503, Some(1));
    let r = http
        .get(&format!("{overlord}/druid/indexer/v1/supervisor"))
        .await;
    assert_eq!((r.status, r.text.as_str(), r.ctype), (503, "", None));
    assert_eq!(
        http.get(&format!("{overlord}/druid/indexer/v1/supervisor"))
            .await
            .status,
        200
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_supervisors_and_invalid_specs_answer_as_the_overlord_does() {
    let emu = start_with(vec![spec("gone", "gone", &dead_bootstrap(), "timestamp")]).await;
    let http = Http::new();
    for base in [emu.url(), emu.overlord_url()] {
        let sup = format!("{base}/druid/indexer/v1/supervisor");
        let missing = "Cannot find any supervisor with id: [zzz]";
        for path in [
            "zzz",
            "zzz/status",
            "zzz/health",
            "zzz/stats",
            "zzz/parseErrors",
        ] {
            let r = http.get(&format!("{sup}/{path}")).await;
            assert_eq!((r.status, r.text.as_str()), (400, missing), "GET {path}");
            assert_eq!(r.ctype.as_deref(), Some("text/plain"), "GET {path}");
        }
        for path in [
            "zzz/suspend",
            "zzz/resume",
            "zzz/reset",
            "zzz/resetOffsets",
            "zzz/terminate",
            "zzz/shutdown",
        ] {
            let r = http.post(&format!("{sup}/{path}"), &json!({})).await;
            assert_eq!((r.status, r.text.as_str()), (400, missing), "POST {path}");
        }
        // The history endpoint has no resource filter.
        let r = http.get(&format!("{sup}/zzz/history")).await;
        assert_eq!(
            (r.status, r.json()),
            (404, json!({"error": "No history for [zzz]."}))
        );
    }

    // Suspending twice, resuming twice: 400 with Druid's message.
    let sup = format!("{}/druid/indexer/v1/supervisor", emu.overlord_url());
    let r = http.post(&format!("{sup}/gone/suspend"), &json!({})).await;
    assert_eq!(r.status, 200);
    let r = http.post(&format!("{sup}/gone/suspend"), &json!({})).await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "[gone] is already suspended"}))
    );
    assert_eq!(
        http.post(&format!("{sup}/gone/resume"), &json!({}))
            .await
            .status,
        200
    );
    let r = http.post(&format!("{sup}/gone/resume"), &json!({})).await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "[gone] is already running"}))
    );
    // Terminated: the filter no longer finds it.
    assert_eq!(
        http.post(&format!("{sup}/gone/terminate"), &json!({}))
            .await
            .json(),
        json!({"id": "gone"})
    );
    let r = http.get(&format!("{sup}/gone/status")).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "Cannot find any supervisor with id: [gone]")
    );

    // A spec Druid cannot build: Jackson's mapping error as {"error": ...}, HTTP 400.
    let mut bad = spec("x", "x", "127.0.0.1:9", "timestamp");
    bad["spec"]["ioConfig"]["inputFormat"]["type"] = json!("avro");
    let text = serde_json::to_string(&bad).unwrap();
    let r = http
        .send(
            http.0
                .post(&sup)
                .header("Content-Type", "application/json")
                .body(text.clone()),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.ctype.as_deref(), Some("application/json"));
    let v = r.json();
    let msg = v["error"].as_str().unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1);
    assert!(
        msg.starts_with(
            "Cannot construct instance of `org.apache.druid.indexing.kafka.supervisor.KafkaSupervisorSpec`, problem: "
        ),
        "{msg}"
    );
    assert!(
        msg.ends_with(&format!(
            "\n at [Source: (org.eclipse.jetty.server.HttpInputOverHTTP); line: 1, column: {}]",
            text.len() + 1
        )),
        "{msg}"
    );
    assert_eq!(
        http.get(&sup).await.json(),
        json!([]),
        "nothing half-accepted"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_in_three_shapes_and_an_empty_503() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let (http, base) = (Http::new(), emu.url());
    let host = emu.addr().to_string();
    let q = "SELECT COUNT(*) FROM sys.segments";

    let timeout_once = |shape: ErrorShape| {
        emu.faults().set_error_shape(shape);
        emu.faults().fail_requests(ErrorMode::Timeout, Some(1));
    };
    timeout_once(ErrorShape::Modern);
    let r = http.sql(&base, q).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (
            504,
            r#"{"error":"druidException","errorCode":"general","persona":"USER","category":"TIMEOUT","errorMessage":"Failed to acquire segment references to process query","context":{}}"#
        )
    );
    timeout_once(ErrorShape::Legacy);
    let r = http.sql(&base, q).await;
    assert_eq!(r.status, 504);
    assert_eq!(
        r.text,
        format!(
            r#"{{"error":"Query timeout","errorMessage":"url[http://{host}/druid/v2/] timed out","errorClass":"org.apache.druid.query.QueryTimeoutException","host":"{host}"}}"#
        )
    );
    // The hybrid through the admin endpoint.
    let r = http
        .post(
            &format!("{base}/sim/faults/error-shape"),
            &json!({"shape": "hybrid"}),
        )
        .await;
    assert_eq!(r.json()["errorShape"], "hybrid");
    let r = http
        .post(
            &format!("{base}/sim/faults/errors"),
            &json!({"mode": "timeout", "count": 1}),
        )
        .await;
    assert_eq!(r.json()["errors"], "timeout");
    let r = http.sql(&base, q).await;
    assert_eq!(r.status, 504);
    assert_eq!(
        r.text,
        format!(
            r#"{{"error":"Query timeout","errorClass":"org.apache.druid.query.QueryTimeoutException","host":"{host}","errorCode":"legacyQueryException","persona":"OPERATOR","category":"TIMEOUT","errorMessage":"url[http://{host}/druid/v2/] timed out","context":{{"host":"{host}","errorClass":"org.apache.druid.query.QueryTimeoutException","legacyErrorCode":"Query timeout"}}}}"#
        )
    );
    // In the hybrid, planning errors stay DruidExceptions and failures are wrapped.
    let r = http.sql(&base, "SELECT COUNT(*) FROM nope").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "druidException");
    assert_eq!(r.json()["errorCode"], "invalidInput");
    emu.faults().fail_requests(ErrorMode::Http500, Some(1));
    let r = http.sql(&base, q).await;
    assert_eq!(r.status, 500);
    let v = r.json();
    assert_eq!(
        (&v["error"], &v["errorCode"], &v["category"], &v["host"]),
        (
            &json!("Unknown exception"),
            &json!("legacyQueryException"),
            &json!("RUNTIME_FAILURE"),
            &Value::Null
        )
    );
    assert_eq!(v["context"]["legacyErrorCode"], "Unknown exception");

    // A load balancer's empty 503, once; then normal service.
    let r = http
        .post(
            &format!("{base}/sim/faults/errors"),
            &json!({"mode": "empty503", "count": 1}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = http.sql(&base, q).await;
    assert_eq!((r.status, r.text.as_str()), (503, ""));
    let r = http.sql(&base, q).await;
    assert_eq!((r.status, r.json()), (200, json!([{"EXPR$0": 0}])));
    let r = http
        .post(
            &format!("{base}/sim/faults/errors"),
            &json!({"mode": "teapot"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("empty503"));
    emu.shutdown().await;
}
