//! Behaviour tests of the Druid emulator against a real Kafka (librdkafka's mock cluster):
//! rows produced by the load generator are ingested through a supervisor created over HTTP,
//! and every answer is checked against what was produced.

mod common;

use common::{cluster, dead_bootstrap, high_watermarks, spec, start_with, t0, Api, HOUR};
use lockstep_sim::loadgen::{self, LoadSpec};
use lockstep_sim::time::iso;
use lockstep_sim::{Emulator, EmulatorConfig};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Caught up: latest offsets equal the topic's high watermarks and every partition is read.
fn caught_up(p: &Value, hw: &BTreeMap<String, i64>) -> bool {
    let latest: Option<BTreeMap<String, i64>> =
        serde_json::from_value(p["latestOffsets"].clone()).ok();
    let current: Option<BTreeMap<String, i64>> =
        serde_json::from_value(p["activeTasks"][0]["currentOffsets"].clone()).ok();
    latest.as_ref() == Some(hw) && current.as_ref() == Some(hw) && p["aggregateLag"] == json!(0)
}

fn per_bucket(rows: &[loadgen::Row], bucket: i64, lo: i64, hi: i64) -> BTreeMap<i64, (u64, u64)> {
    let mut m = BTreeMap::new();
    for r in rows.iter().filter(|r| r.ts_ms >= lo && r.ts_ms < hi) {
        let e = m
            .entry(r.ts_ms - r.ts_ms.rem_euclid(bucket))
            .or_insert((0, 0));
        e.0 += 1;
        e.1 += r.count;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_and_answers_the_drift_queries() {
    let kafka = cluster(&[("clicks", 3)]);
    let bootstrap = kafka.bootstrap_servers();
    let load = LoadSpec {
        partitions: 3,
        count_max: 3,
        time_field: "__time".into(),
        seed: 7,
        ..LoadSpec::new("clicks", 3000, t0(), t0() + 6 * HOUR)
    };
    let produced: Vec<loadgen::Row> = loadgen::rows(&load).collect();
    assert_eq!(
        loadgen::produce(&bootstrap, &load).await.unwrap().rows,
        3000
    );

    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let api = Api::new(&emu);
    assert_eq!(api.get("/status/health").await, (200, json!(true)));
    let (s, v) = api
        .post(
            "/druid/indexer/v1/supervisor",
            &spec("clicks", "clicks", &bootstrap, "__time"),
        )
        .await;
    assert_eq!((s, v), (200, json!({"id": "clicks"})));
    let hw = high_watermarks(&bootstrap, "clicks", 3);
    assert_eq!(hw.values().sum::<i64>(), 3000);
    let p = api
        .wait_status("clicks", "catch-up", |p| caught_up(p, &hw))
        .await;
    assert_eq!(p["dataSource"], "clicks");
    assert_eq!(p["stream"], "clicks");
    assert_eq!(p["partitions"], 3);
    assert_eq!(p["state"], "RUNNING");
    assert_eq!(p["detailedState"], "RUNNING");
    assert_eq!(p["healthy"], true);
    assert_eq!(p["suspended"], false);
    assert_eq!(p["minimumLag"], json!({"0": 0, "1": 0, "2": 0}));
    assert!(p["offsetsLastUpdated"].is_string());
    assert!(p["activeTasks"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("index_kafka_clicks_"));
    assert_eq!(p["recentErrors"], json!([]));

    // Hourly COUNT and SUM over everything.
    let expected = per_bucket(&produced, HOUR, i64::MIN, i64::MAX);
    let got = api
        .sql_ok(r#"SELECT TIME_FLOOR(__time, 'PT1H') AS "bucket", COUNT(*) AS "rows", SUM("count") AS "n" FROM "clicks" GROUP BY 1 ORDER BY 1"#)
        .await;
    let want: Vec<Value> = expected
        .iter()
        .map(|(b, (c, n))| json!({"bucket": iso(*b), "rows": c, "n": n}))
        .collect();
    assert_eq!(got, want);

    // 15-minute buckets over a range, written as druid-api.md writes it.
    let (lo, hi) = (t0() + 2 * HOUR, t0() + 4 * HOUR);
    let expected = per_bucket(&produced, 15 * 60_000, lo, hi);
    let got = api
        .sql_ok(&format!(
            r#"SELECT TIME_FLOOR(__time, 'PT15M') AS "bucket", COUNT(*) AS "rows"
               FROM "clicks" WHERE __time >= TIMESTAMP '{}' AND __time < TIMESTAMP '{}'
               GROUP BY 1 ORDER BY 1"#,
            iso(lo).replace('T', " ").trim_end_matches(".000Z"),
            iso(hi).replace('T', " ").trim_end_matches(".000Z"),
        ))
        .await;
    assert_eq!(got.len(), 8);
    let want: Vec<Value> = expected
        .iter()
        .map(|(b, (c, _))| json!({"bucket": iso(*b), "rows": c}))
        .collect();
    assert_eq!(got, want);

    // The same with parameters and the array format with headers.
    let (s, v) = api
        .post(
            "/druid/v2/sql",
            &json!({
                "query": r#"SELECT COUNT(*) AS "rows", SUM("count") AS "n" FROM "clicks" WHERE __time >= ? AND __time < ?"#,
                "parameters": [{"type": "TIMESTAMP", "value": iso(lo)}, {"type": "TIMESTAMP", "value": iso(hi)}],
                "resultFormat": "array", "header": true, "typesHeader": true, "sqlTypesHeader": true
            }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (c, n) = expected
        .values()
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(
        v,
        json!([
            ["rows", "n"],
            ["LONG", "LONG"],
            ["BIGINT", "BIGINT"],
            [c, n]
        ])
    );

    // Line formats, CSV and the object header row.
    let q = format!(
        r#"SELECT COUNT(*) AS "rows", MIN(__time) AS "first" FROM "clicks" WHERE __time >= '{}' AND __time < '{}'"#,
        iso(lo),
        iso(hi)
    );
    let first = produced
        .iter()
        .filter(|r| r.ts_ms >= lo && r.ts_ms < hi)
        .map(|r| r.ts_ms)
        .min()
        .unwrap();
    for (format, want) in [
        ("csv", format!("rows,first\n{c},{}\n\n", iso(first))),
        (
            "objectLines",
            format!(
                "{{\"rows\":null,\"first\":null}}\n{{\"rows\":{c},\"first\":\"{}\"}}\n\n",
                iso(first)
            ),
        ),
        (
            "arrayLines",
            format!("[\"rows\",\"first\"]\n[{c},\"{}\"]\n\n", iso(first)),
        ),
    ] {
        let r = api
            .http
            .0
            .post(format!("{}/druid/v2/sql", api.base))
            .json(&json!({"query": q, "resultFormat": format, "header": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()
                .get("X-Druid-SQL-Header-Included")
                .map(|v| v.to_str().unwrap()),
            Some("yes")
        );
        assert_eq!(r.text().await.unwrap(), want, "{format}");
    }

    // Freshness.
    let max = produced.iter().map(|r| r.ts_ms).max().unwrap();
    let got = api
        .sql_ok(r#"SELECT MAX(__time) AS "latest" FROM "clicks""#)
        .await;
    assert_eq!(got, vec![json!({"latest": iso(max)})]);

    // Coarse pass: sys.segments per hour.
    let expected = per_bucket(&produced, HOUR, i64::MIN, i64::MAX);
    let got = api
        .sql_ok(r#"SELECT "start", "end", SUM("num_rows") AS "rows", COUNT(*) AS "segments"
            FROM sys.segments WHERE "datasource" = 'clicks' AND is_published = 1 AND is_overshadowed = 0
            GROUP BY 1, 2 ORDER BY 1"#)
        .await;
    let want: Vec<Value> = expected
        .iter()
        .map(
            |(b, (c, _))| json!({"start": iso(*b), "end": iso(b + HOUR), "rows": c, "segments": 1}),
        )
        .collect();
    assert_eq!(got, want);

    // Coordinator and supervisor listings.
    assert_eq!(
        api.get("/druid/coordinator/v1/datasources").await,
        (200, json!(["clicks"]))
    );
    let (s, v) = api
        .get("/druid/coordinator/v1/datasources/clicks/intervals?simple")
        .await;
    assert_eq!(s, 200);
    let first = format!("{}/{}", iso(t0()), iso(t0() + HOUR));
    assert_eq!(v[&first]["count"], 1);
    assert_eq!(v.as_object().unwrap().len(), 6);
    assert_eq!(
        api.get("/druid/indexer/v1/supervisor").await,
        (200, json!(["clicks"]))
    );
    let (_, v) = api.get("/druid/indexer/v1/supervisor?state=true").await;
    assert_eq!(
        v,
        json!([{"id": "clicks", "state": "RUNNING", "detailedState": "RUNNING", "healthy": true, "suspended": false, "type": "kafka", "source": "clicks"}])
    );
    let (_, v) = api.get("/druid/indexer/v1/supervisor?full").await;
    assert_eq!(v[0]["spec"]["spec"]["ioConfig"]["topic"], "clicks");
    assert_eq!(
        api.get("/druid/indexer/v1/supervisor/clicks/health")
            .await
            .0,
        200
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_grows_lag_and_drop_removes_one_hour() {
    let kafka = cluster(&[("events", 2)]);
    let bootstrap = kafka.bootstrap_servers();
    let first = LoadSpec {
        partitions: 2,
        ..LoadSpec::new("events", 1000, t0(), t0() + 4 * HOUR)
    };
    let mut produced: Vec<loadgen::Row> = loadgen::rows(&first).collect();
    loadgen::produce(&bootstrap, &first).await.unwrap();
    let emu = start_with(vec![spec("events", "events", &bootstrap, "timestamp")]).await;
    let api = Api::new(&emu);
    let hw = high_watermarks(&bootstrap, "events", 2);
    api.wait_status("events", "catch-up", |p| caught_up(p, &hw))
        .await;

    // Pause through the admin endpoint, produce more: lag grows, state stays RUNNING.
    let (s, _) = api
        .post("/sim/faults/pause", &json!({"supervisor": "events"}))
        .await;
    assert_eq!(s, 200);
    let second = LoadSpec {
        partitions: 2,
        seed: 2,
        ..LoadSpec::new("events", 400, t0(), t0() + 4 * HOUR)
    };
    produced.extend(loadgen::rows(&second));
    loadgen::produce(&bootstrap, &second).await.unwrap();
    let st = api
        .wait_status("events", "lag after pause", |p| {
            p["aggregateLag"] == json!(400)
        })
        .await;
    assert_eq!(st["state"], "RUNNING");
    let hw2 = high_watermarks(&bootstrap, "events", 2);
    assert_eq!(
        serde_json::from_value::<BTreeMap<String, i64>>(st["latestOffsets"].clone()).unwrap(),
        hw2
    );
    let got = api
        .sql_ok(r#"SELECT COUNT(*) AS "rows" FROM "events""#)
        .await;
    assert_eq!(
        got,
        vec![json!({"rows": 1000})],
        "nothing ingested while paused"
    );

    // Resume: catches up.
    emu.faults().resume_ingestion("events");
    api.wait_status("events", "catch-up after resume", |p| caught_up(p, &hw2))
        .await;
    let got = api
        .sql_ok(r#"SELECT COUNT(*) AS "rows" FROM "events""#)
        .await;
    assert_eq!(got, vec![json!({"rows": 1400})]);

    // Drop hour 1 over HTTP: exactly that hour disappears, and stays gone for new rows.
    let (s, v) = api
        .post(
            "/sim/faults/drop",
            &json!({"dataSource": "events", "start": iso(t0() + HOUR), "end": iso(t0() + 2 * HOUR)}),
        )
        .await;
    assert_eq!(s, 200);
    let expected = per_bucket(&produced, HOUR, i64::MIN, i64::MAX);
    assert_eq!(v["removedRows"], json!(expected[&(t0() + HOUR)].0));
    let third = LoadSpec {
        partitions: 2,
        seed: 3,
        ..LoadSpec::new("events", 100, t0() + HOUR, t0() + 2 * HOUR)
    };
    loadgen::produce(&bootstrap, &third).await.unwrap();
    let hw3 = high_watermarks(&bootstrap, "events", 2);
    api.wait_status("events", "catch-up after drop", |p| caught_up(p, &hw3))
        .await;
    let got = api
        .sql_ok(r#"SELECT TIME_FLOOR(__time, 'PT1H') AS "bucket", COUNT(*) AS "rows" FROM "events" GROUP BY 1 ORDER BY 1"#)
        .await;
    let want: Vec<Value> = expected
        .iter()
        .filter(|(b, _)| **b != t0() + HOUR)
        .map(|(b, (c, _))| json!({"bucket": iso(*b), "rows": c}))
        .collect();
    assert_eq!(got, want);
    let got = api
        .sql_ok(r#"SELECT COUNT(*) AS "segments" FROM sys.segments WHERE "datasource" = 'events'"#)
        .await;
    assert_eq!(got, vec![json!({"segments": 3})]);

    // Suspend: state SUSPENDED, no active task; resume; terminate removes it.
    let (s, v) = api
        .post("/druid/indexer/v1/supervisor/events/suspend", &json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["suspended"], true, "suspend answers the updated spec");
    assert_eq!(v["spec"]["ioConfig"]["topic"], "events");
    let (_, v) = api.get("/druid/indexer/v1/supervisor/events/status").await;
    assert_eq!(v["payload"]["state"], "SUSPENDED");
    assert_eq!(v["payload"]["activeTasks"], json!([]));
    let (_, v) = api.get("/druid/indexer/v1/supervisor?state=true").await;
    assert_eq!(v[0]["suspended"], true);
    let (s, v) = api
        .post("/druid/indexer/v1/supervisor/events/resume", &json!({}))
        .await;
    assert_eq!((s, &v["suspended"]), (200, &json!(false)));
    let (_, v) = api.get("/druid/indexer/v1/supervisor/events/status").await;
    assert_eq!(v["payload"]["state"], "RUNNING");
    let (s, _) = api
        .post("/druid/indexer/v1/supervisor/events/terminate", &json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        api.get("/druid/indexer/v1/supervisor").await,
        (200, json!([]))
    );
    // Gone: SupervisorResourceFilter answers 400 for an id with no spec.
    let (s, v) = api.get("/druid/indexer/v1/supervisor/events/status").await;
    assert_eq!(s, 400, "{v}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_shapes_auth_and_request_faults() {
    let kafka = cluster(&[("t", 1)]);
    let bootstrap = kafka.bootstrap_servers();
    let load = LoadSpec::new("t", 50, t0(), t0() + HOUR);
    loadgen::produce(&bootstrap, &load).await.unwrap();
    let emu = start_with(vec![spec("t", "t", &bootstrap, "timestamp")]).await;
    let api = Api::new(&emu);
    let hw = high_watermarks(&bootstrap, "t", 1);
    api.wait_status("t", "catch-up", |p| caught_up(p, &hw))
        .await;

    // Newer error shape by default.
    let (s, v) = api.sql(r#"SELECT COUNT(*) FROM "nope""#).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "druidException");
    assert_eq!(v["errorCode"], "invalidInput");
    assert_eq!(v["persona"], "USER");
    assert_eq!(v["category"], "INVALID_INPUT");
    // Calcite's unqualified "Object 'x' not found", with the position Druid appends
    // (DruidPlanner.parseValidationMessage); sim/tests/router.rs checks the whole body.
    assert_eq!(
        v["errorMessage"],
        "Object 'nope' not found (line [1], column [22])"
    );
    assert!(v["context"].is_object());
    let (s, v) = api.sql("SELECT user FROM t").await;
    assert_eq!((s, &v["error"]), (400, &json!("druidException")), "{v}");
    let (s, v) = api.post("/druid/v2/sql", &json!({"nope": 1})).await;
    assert_eq!((s, &v["errorCode"]), (400, &json!("invalidInput")), "{v}");

    // Legacy shape via the admin switch.
    let (s, _) = api
        .post("/sim/faults/error-shape", &json!({"shape": "legacy"}))
        .await;
    assert_eq!(s, 200);
    let (s, v) = api.sql("SELEC nothing").await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "Plan validation failed");
    assert!(v["errorMessage"]
        .as_str()
        .unwrap()
        .contains("Incorrect syntax"));
    assert!(v["errorClass"].is_string());
    assert_eq!(v["host"], Value::Null);
    emu.faults()
        .set_error_shape(lockstep_sim::ErrorShape::Modern);

    // Basic auth: 401 with Access-Check-Result, health stays open, right credentials pass.
    let (s, _) = api
        .post(
            "/sim/faults/auth",
            &json!({"user": "admin", "password": "pw"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = api.sql("SELECT COUNT(*) FROM t").await;
    assert_eq!(s, 401);
    assert!(v["Access-Check-Result"].is_string());
    assert_eq!(api.get("/status/health").await.0, 200);
    let count_as_admin = |password: &str| {
        api.http
            .0
            .post(format!("{}/druid/v2/sql", api.base))
            .basic_auth("admin", Some(password))
            .json(&json!({"query": "SELECT COUNT(*) AS n FROM t"}))
    };
    let r = api.http.send(count_as_admin("wrong")).await;
    assert_eq!(r.status, 401);
    let r = api.http.send(count_as_admin("pw")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([{"n": 50}]));
    emu.faults().set_auth(None);

    // An HTML 502 for exactly one request, then normal service.
    let (s, _) = api
        .post(
            "/sim/faults/errors",
            &json!({"mode": "html502", "count": 1}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = api.sql("SELECT COUNT(*) AS n FROM t").await;
    assert_eq!(s, 502);
    assert!(v.as_str().unwrap().contains("<html>"));
    assert_eq!(
        api.sql_ok("SELECT COUNT(*) AS n FROM t").await,
        vec![json!({"n": 50})]
    );

    // HTTP 500 with the error shape on every API call until cleared.
    emu.faults()
        .fail_requests(lockstep_sim::ErrorMode::Http500, None);
    let (s, v) = api.get("/druid/indexer/v1/supervisor/t/status").await;
    assert_eq!((s, &v["category"]), (500, &json!("RUNTIME_FAILURE")), "{v}");
    let (s, _) = api.sql("SELECT COUNT(*) FROM t").await;
    assert_eq!(s, 500);
    let (s, v) = api.get("/sim/faults").await;
    assert_eq!(
        (s, &v["errors"]),
        (200, &json!("http500")),
        "admin bypasses faults"
    );
    api.post("/sim/faults/clear", &json!({})).await;
    assert_eq!(api.sql("SELECT COUNT(*) FROM t").await.0, 200);

    // Stall: a client with a short timeout gives up; after clearing it is answered.
    api.post("/sim/faults/stall", &json!({"millis": 5000}))
        .await;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = quick.get(format!("{}/status", api.base)).send().await;
    assert!(r.unwrap_err().is_timeout());
    api.post("/sim/faults/stall", &json!({"millis": 0})).await;
    let (s, v) = api.get("/status").await;
    assert_eq!(s, 200);
    assert!(v["version"].is_string());

    // Unknown supervisor: SupervisorResourceFilter's 400 with a plain-text body (not the
    // method's own 404, which the filter never lets through).
    let (s, v) = api.get("/druid/indexer/v1/supervisor/zzz/status").await;
    assert_eq!(s, 400);
    assert_eq!(v, "Cannot find any supervisor with id: [zzz]");
    // A spec the emulator cannot run is refused, not half-accepted.
    let mut bad = spec("x", "x", &bootstrap, "timestamp");
    bad["spec"]["ioConfig"]["inputFormat"]["type"] = json!("avro");
    let (s, v) = api.post("/druid/indexer/v1/supervisor", &bad).await;
    assert_eq!(s, 400, "{v}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_stream_makes_the_supervisor_unhealthy() {
    let emu = start_with(vec![spec("gone", "gone", &dead_bootstrap(), "timestamp")]).await;
    let api = Api::new(&emu);
    let p = api
        .wait_status("gone", "unhealthy", |p| p["healthy"] == json!(false))
        .await;
    assert_eq!(p["state"], "UNHEALTHY_SUPERVISOR");
    assert_eq!(p["detailedState"], "UNABLE_TO_CONNECT_TO_STREAM");
    assert!(!p["recentErrors"].as_array().unwrap().is_empty());
    assert_eq!(
        p["latestOffsets"],
        Value::Null,
        "never read: unknown, not zero"
    );
    let (s, v) = api.get("/druid/indexer/v1/supervisor/gone/health").await;
    assert_eq!((s, v), (503, json!({"healthy": false})));
    // No rows: the datasource does not exist, as in Druid.
    let (s, v) = api
        .sql(r#"SELECT MAX(__time) AS "latest" FROM "gone""#)
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["errorMessage"],
        "Object 'gone' not found (line [1], column [37])"
    );
    emu.shutdown().await;
}
