//! Behaviour tests of the Druid emulator against a real Kafka (librdkafka's mock cluster):
//! rows produced by the load generator are ingested through a supervisor created over HTTP,
//! and every answer is checked against what was produced.

use lockstep_sim::loadgen::{self, LoadSpec};
use lockstep_sim::time::{iso, parse_iso};
use lockstep_sim::{Emulator, EmulatorConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const HOUR: i64 = 3_600_000;

fn t0() -> i64 {
    parse_iso("2026-11-23T00:00:00Z").unwrap()
}

fn cluster(topic: &str, partitions: i32) -> MockCluster<'static, DefaultProducerContext> {
    let c = MockCluster::new(1).expect("mock cluster");
    c.create_topic(topic, partitions, 1).expect("topic");
    c
}

fn spec(ds: &str, topic: &str, bootstrap: &str, time_field: &str) -> Value {
    json!({
        "type": "kafka",
        "spec": {
            "dataSchema": {
                "dataSource": ds,
                "timestampSpec": {"column": time_field, "format": "iso"},
                "dimensionsSpec": {"dimensions": ["user", {"type": "long", "name": "count"}]},
                "granularitySpec": {"segmentGranularity": "HOUR", "queryGranularity": "NONE", "rollup": false}
            },
            "ioConfig": {
                "topic": topic,
                "inputFormat": {"type": "json"},
                "consumerProperties": {"bootstrap.servers": bootstrap},
                "useEarliestOffset": true,
                "taskCount": 1,
                "replicas": 1,
                "taskDuration": "PT1H"
            },
            "tuningConfig": {"type": "kafka"}
        }
    })
}

/// High watermarks of every partition, read independently of the emulator.
fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> BTreeMap<String, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            let (_, hi) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p.to_string(), hi)
        })
        .collect()
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(emu: &Emulator) -> Api {
        Api {
            base: emu.url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            s,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            s,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn sql(&self, query: &str) -> (u16, Value) {
        self.post("/druid/v2/sql", &json!({ "query": query })).await
    }

    async fn sql_ok(&self, query: &str) -> Vec<Value> {
        let (s, v) = self.sql(query).await;
        assert_eq!(s, 200, "{query}: {v}");
        v.as_array().unwrap().clone()
    }

    /// Waits (bounded) until `f` holds for the supervisor's status payload.
    async fn wait_status(&self, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (s, v) = self
                .get(&format!("/druid/indexer/v1/supervisor/{id}/status"))
                .await;
            assert_eq!(s, 200, "{v}");
            if f(&v["payload"]) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

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
    let kafka = cluster("clicks", 3);
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
    let st = api
        .wait_status("clicks", "catch-up", |p| caught_up(p, &hw))
        .await;
    let p = &st["payload"];
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
    let kafka = cluster("events", 2);
    let bootstrap = kafka.bootstrap_servers();
    let first = LoadSpec {
        partitions: 2,
        ..LoadSpec::new("events", 1000, t0(), t0() + 4 * HOUR)
    };
    let mut produced: Vec<loadgen::Row> = loadgen::rows(&first).collect();
    loadgen::produce(&bootstrap, &first).await.unwrap();
    let emu = Emulator::start(EmulatorConfig {
        supervisors: vec![spec("events", "events", &bootstrap, "timestamp")],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
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
    assert_eq!(st["payload"]["state"], "RUNNING");
    let hw2 = high_watermarks(&bootstrap, "events", 2);
    assert_eq!(
        serde_json::from_value::<BTreeMap<String, i64>>(st["payload"]["latestOffsets"].clone())
            .unwrap(),
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
    let (s, v) = api.get("/druid/indexer/v1/supervisor/events/status").await;
    assert_eq!(s, 404, "{v}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_shapes_auth_and_request_faults() {
    let kafka = cluster("t", 1);
    let bootstrap = kafka.bootstrap_servers();
    let load = LoadSpec::new("t", 50, t0(), t0() + HOUR);
    loadgen::produce(&bootstrap, &load).await.unwrap();
    let emu = Emulator::start(EmulatorConfig {
        supervisors: vec![spec("t", "t", &bootstrap, "timestamp")],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
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
    assert_eq!(v["errorMessage"], "Object 'nope' not found within 'druid'");
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
    let r = api
        .http
        .post(format!("{}/druid/v2/sql", api.base))
        .basic_auth("admin", Some("wrong"))
        .json(&json!({"query": "SELECT COUNT(*) AS n FROM t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = api
        .http
        .post(format!("{}/druid/v2/sql", api.base))
        .basic_auth("admin", Some("pw"))
        .json(&json!({"query": "SELECT COUNT(*) AS n FROM t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!([{"n": 50}]));
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

    // Unknown supervisor: Druid's 404.
    let (s, v) = api.get("/druid/indexer/v1/supervisor/zzz/status").await;
    assert_eq!(s, 404);
    assert!(v["error"].as_str().unwrap().contains("zzz"));
    // A spec the emulator cannot run is refused, not half-accepted.
    let mut bad = spec("x", "x", &bootstrap, "timestamp");
    bad["spec"]["ioConfig"]["inputFormat"]["type"] = json!("avro");
    let (s, v) = api.post("/druid/indexer/v1/supervisor", &bad).await;
    assert_eq!(s, 400, "{v}");
    emu.shutdown().await;
}
