//! Ingestion behaviour of the Druid emulator against a real Kafka (librdkafka's mock cluster,
//! loopback only): specs as Druid returns them, topicPattern, the csv and kafka input
//! formats, transformSpec filters, rejection periods relative to task start, and best-effort
//! rollup across task boundaries. Every wait is bounded; no assertion depends on timing.

mod common;

use common::{cluster, Api};
use lockstep_sim::time::{iso, parse_iso};
use lockstep_sim::{Emulator, EmulatorConfig};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One record to produce.
#[derive(Debug, Clone, Default)]
struct Rec {
    topic: String,
    partition: Option<i32>,
    key: Option<String>,
    value: String,
    headers: Vec<(String, String)>,
    timestamp: Option<i64>,
}

fn rec(topic: &str, value: impl Into<String>) -> Rec {
    Rec {
        topic: topic.into(),
        value: value.into(),
        ..Rec::default()
    }
}

/// Produces and waits for every acknowledgement (blocking: run on a blocking thread).
async fn produce(bootstrap: &str, recs: Vec<Rec>) {
    let bootstrap = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("producer");
        for r in &recs {
            let mut br = BaseRecord::<String, String>::to(&r.topic).payload(&r.value);
            if let Some(k) = &r.key {
                br = br.key(k);
            }
            if let Some(part) = r.partition {
                br = br.partition(part);
            }
            if let Some(ts) = r.timestamp {
                br = br.timestamp(ts);
            }
            if !r.headers.is_empty() {
                let mut hs = OwnedHeaders::new();
                for (k, v) in &r.headers {
                    hs = hs.insert(Header {
                        key: k,
                        value: Some(v),
                    });
                }
                br = br.headers(hs);
            }
            p.send(br).map_err(|(e, _)| e).expect("send");
        }
        p.flush(Duration::from_secs(30)).expect("flush");
    })
    .await
    .expect("producer thread");
}

/// Waits until the supervisor has read `records` records in all and is caught up; its
/// status payload.
async fn wait_caught_up(api: &Api, id: &str, records: i64) -> Value {
    api.wait_status(id, &format!("{records} records read"), |p| {
        caught_up(p) == Some(records)
    })
    .await
}

/// The sum of the latest offsets when every partition's current offset equals its latest
/// offset; `None` while behind.
fn caught_up(p: &Value) -> Option<i64> {
    let latest: BTreeMap<String, i64> = serde_json::from_value(p["latestOffsets"].clone()).ok()?;
    let mut current: BTreeMap<String, i64> = BTreeMap::new();
    for t in p["activeTasks"].as_array()? {
        let offs: BTreeMap<String, i64> =
            serde_json::from_value(t["currentOffsets"].clone()).ok()?;
        current.extend(offs);
    }
    (latest == current && p["aggregateLag"] == json!(0)).then(|| latest.values().sum())
}

fn kafka_spec(ds: &str, io: Value, data_schema: Value) -> Value {
    let mut schema = data_schema;
    schema["dataSource"] = json!(ds);
    json!({
        "type": "kafka",
        "spec": {
            "dataSchema": schema,
            "ioConfig": io,
            "tuningConfig": {"type": "kafka"}
        }
    })
}

fn count(rows: &[Value], col: &str) -> i64 {
    rows[0][col]
        .as_i64()
        .unwrap_or_else(|| panic!("{col} in {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn druid_shaped_specs_with_object_granularities() {
    let kafka = cluster(&[("m", 1)]);
    let bootstrap = kafka.bootstrap_servers();
    let times = [
        "2026-01-15T10:00:00Z",
        "2026-01-20T11:00:00Z",
        "2026-01-31T23:59:59Z",
        "2026-02-01T00:00:00Z",
        "2026-02-03T08:00:00Z",
        "2026-03-10T00:00:00Z",
    ];
    produce(
        &bootstrap,
        times
            .iter()
            .enumerate()
            .map(|(i, t)| rec("m", json!({"ts": t, "user": format!("u{i}")}).to_string()))
            .collect(),
    )
    .await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let api = Api::new(&emu);

    // A spec in the shape GET /druid/indexer/v1/supervisor/{id} returns: `spec` and the same
    // parts again at the top level, unset fields as null, granularities as objects.
    let druid_shaped = |ds: &str, segment: Value| {
        let data_schema = json!({
            "dataSource": ds,
            "timestampSpec": {"column": "ts", "format": "iso", "missingValue": null},
            "dimensionsSpec": {
                "dimensions": [{"type": "string", "name": "user", "multiValueHandling": "SORTED_ARRAY", "createBitmapIndex": true}],
                "dimensionExclusions": ["__time", "ts"],
                "includeAllDimensions": false,
                "useSchemaDiscovery": false
            },
            "metricsSpec": [],
            "granularitySpec": {
                "type": "uniform",
                "segmentGranularity": segment,
                "queryGranularity": {"type": "none"},
                "rollup": false,
                "intervals": []
            },
            "transformSpec": {"filter": null, "transforms": []}
        });
        let io = json!({
            "type": "kafka",
            "topic": "m",
            "topicPattern": null,
            "inputFormat": {"type": "json", "keepNullColumns": false, "assumeNewlineDelimited": false, "useJsonNodeReader": false},
            "replicas": 1,
            "taskCount": 1,
            "taskDuration": "PT3600S",
            "consumerProperties": {"bootstrap.servers": bootstrap},
            "autoScalerConfig": null,
            "pollTimeout": 100,
            "startDelay": "PT5S",
            "period": "PT30S",
            "useEarliestOffset": true,
            "completionTimeout": "PT1800S",
            "lateMessageRejectionPeriod": null,
            "earlyMessageRejectionPeriod": null,
            "lateMessageRejectionStartDateTime": null,
            "idleConfig": null,
            "stopTaskCount": null,
            "stream": "m",
            "useEarliestSequenceNumber": true
        });
        let tuning = json!({"type": "kafka", "maxRowsInMemory": 150000, "maxBytesInMemory": 0, "maxRowsPerSegment": 5000000, "maxTotalRows": 20000000, "intermediatePersistPeriod": "PT600S", "intermediateHandoffPeriod": "P2147483647D", "maxParseExceptions": 2147483647, "reportParseExceptions": false, "offsetFetchPeriod": "PT30S"});
        json!({
            "type": "kafka",
            "spec": {"dataSchema": data_schema, "ioConfig": io, "tuningConfig": tuning},
            "dataSchema": data_schema,
            "ioConfig": io,
            "tuningConfig": tuning,
            "id": ds,
            "suspended": false,
            "context": null
        })
    };
    api.submit(&druid_shaped(
        "monthly",
        json!({"type": "period", "period": "P1M", "timeZone": "UTC", "origin": null}),
    ))
    .await;
    api.submit(&druid_shaped("everything", json!({"type": "all"})))
        .await;
    wait_caught_up(&api, "monthly", 6).await;
    wait_caught_up(&api, "everything", 6).await;

    // Calendar months in UTC.
    let got = api
        .sql_ok(r#"SELECT "start", "end", SUM("num_rows") AS "rows" FROM sys.segments WHERE "datasource" = 'monthly' GROUP BY 1, 2 ORDER BY 1"#)
        .await;
    assert_eq!(
        got,
        vec![
            json!({"start": "2026-01-01T00:00:00.000Z", "end": "2026-02-01T00:00:00.000Z", "rows": 3}),
            json!({"start": "2026-02-01T00:00:00.000Z", "end": "2026-03-01T00:00:00.000Z", "rows": 2}),
            json!({"start": "2026-03-01T00:00:00.000Z", "end": "2026-04-01T00:00:00.000Z", "rows": 1}),
        ]
    );
    // ALL: one segment over Druid's eternity interval, printed as sys.segments prints it.
    let got = api
        .sql_ok(r#"SELECT "start", "end", SUM("num_rows") AS "rows" FROM sys.segments WHERE "datasource" = 'everything' GROUP BY 1, 2"#)
        .await;
    assert_eq!(
        got,
        vec![
            json!({"start": "-146136543-09-08T08:23:32.096Z", "end": "146140482-04-24T15:36:27.903Z", "rows": 6})
        ]
    );
    let got = api
        .sql_ok(r#"SELECT MIN(__time) AS "first", MAX(__time) AS "last" FROM "everything""#)
        .await;
    assert_eq!(
        got,
        vec![json!({"first": "2026-01-15T10:00:00.000Z", "last": "2026-03-10T00:00:00.000Z"})]
    );

    // The spec comes back in Druid's shape too, so it can be posted again as it is.
    let (s, spec) = api.get("/druid/indexer/v1/supervisor/monthly").await;
    assert_eq!(s, 200);
    assert_eq!(spec["type"], "kafka");
    assert_eq!(spec["dataSchema"]["dataSource"], "monthly");
    assert_eq!(spec["spec"]["ioConfig"]["topic"], "m");
    assert_eq!(spec["ioConfig"], spec["spec"]["ioConfig"]);
    assert_eq!(spec["suspended"], false);
    api.submit(&spec).await;

    // What the emulator cannot honour is refused, naming the field.
    let mut bad = druid_shaped("bad", json!("HOUR"));
    bad["spec"]["dataSchema"]["granularitySpec"]["queryGranularity"] = json!({"type": "hour"});
    let (s, v) = api.post("/druid/indexer/v1/supervisor", &bad).await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("queryGranularity"), "{v}");
    let mut bad = druid_shaped("bad", json!("HOUR"));
    bad["spec"]["ioConfig"]["inputFormat"] = json!({"type": "protobuf", "protoBytesDecoder": {}});
    let (s, v) = api.post("/druid/indexer/v1/supervisor", &bad).await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("protobuf"), "{v}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_pattern_reads_every_matching_topic() {
    let kafka = cluster(&[("metrics-a", 2), ("metrics-b", 1), ("other", 1)]);
    let bootstrap = kafka.bootstrap_servers();
    let row = |i: usize| {
        json!({"timestamp": iso(parse_iso("2026-05-01T00:00:00Z").unwrap() + i as i64 * 1000), "n": i}).to_string()
    };
    let mut recs = Vec::new();
    for i in 0..4 {
        recs.push(Rec {
            partition: Some(i as i32 % 2),
            ..rec("metrics-a", row(i))
        });
    }
    for i in 0..3 {
        recs.push(rec("metrics-b", row(10 + i)));
    }
    for i in 0..5 {
        recs.push(rec("other", row(20 + i)));
    }
    produce(&bootstrap, recs).await;

    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let api = Api::new(&emu);
    api.submit(&kafka_spec(
        "metrics",
        json!({
            "topicPattern": "metrics-.*",
            "inputFormat": {"type": "json"},
            "consumerProperties": {"bootstrap.servers": bootstrap},
            "useEarliestOffset": true
        }),
        json!({"timestampSpec": {"column": "timestamp", "format": "iso"}, "granularitySpec": {"rollup": false}}),
    ))
    .await;
    let p = wait_caught_up(&api, "metrics", 7).await;
    assert_eq!(p["stream"], "metrics-.*");
    assert_eq!(p["partitions"], 3);
    // Every offset map is keyed "topic:partition" (KafkaTopicPartition in multi-topic mode).
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    let want: BTreeSet<String> = ["metrics-a:0", "metrics-a:1", "metrics-b:0"]
        .map(String::from)
        .into();
    assert_eq!(keys(&p["latestOffsets"]), want);
    assert_eq!(keys(&p["minimumLag"]), want);
    let task = &p["activeTasks"][0];
    for m in ["startingOffsets", "currentOffsets", "lag"] {
        assert_eq!(keys(&task[m]), want, "{m}");
    }
    assert_eq!(p["latestOffsets"]["metrics-a:1"], 2);
    assert_eq!(
        api.sql_ok(r#"SELECT COUNT(*) AS "rows" FROM "metrics""#)
            .await,
        vec![json!({"rows": 7})]
    );

    // A topic created later that matches is picked up, from its earliest offset.
    kafka.create_topic("metrics-c", 1, 1).expect("topic");
    produce(
        &bootstrap,
        vec![rec("metrics-c", row(30)), rec("metrics-c", row(31))],
    )
    .await;
    let p = wait_caught_up(&api, "metrics", 9).await;
    assert_eq!(p["latestOffsets"]["metrics-c:0"], 2);
    assert_eq!(
        api.sql_ok(r#"SELECT COUNT(*) AS "rows" FROM "metrics""#)
            .await,
        vec![json!({"rows": 9})]
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_kafka_input_formats_and_a_filter() {
    let kafka = cluster(&[("csv", 1), ("kf", 1)]);
    let bootstrap = kafka.bootstrap_servers();
    let t0 = parse_iso("2026-06-01T00:00:00Z").unwrap();
    produce(
        &bootstrap,
        vec![
            // Two rows in one record, a quoted comma, and a row whose time does not parse.
            rec(
                "csv",
                "2026-06-01T00:00:00Z,alice,2\n2026-06-01T00:01:00Z,bob,3",
            ),
            rec("csv", "not-a-time,carol,5"),
            rec("csv", "2026-06-01T00:02:00Z,\"dave, jr\",4"),
        ],
    )
    .await;
    let mut kf = Vec::new();
    for (i, (env, weight)) in [
        ("prod", 5),
        ("dev", 100),
        ("prod", 7),
        ("dev", 200),
        ("prod", 11),
    ]
    .into_iter()
    .enumerate()
    {
        kf.push(Rec {
            key: Some(format!("key-{i}")),
            headers: vec![
                ("env".into(), env.into()),
                ("weight".into(), weight.to_string()),
            ],
            timestamp: Some(t0 + i as i64 * 60_000),
            ..rec("kf", json!({"user": format!("u{i}")}).to_string())
        });
    }
    produce(&bootstrap, kf).await;

    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let api = Api::new(&emu);
    api.submit(&kafka_spec(
        "csv",
        json!({
            "topic": "csv",
            "inputFormat": {"type": "csv", "columns": ["ts", "user", "count"]},
            "consumerProperties": {"bootstrap.servers": bootstrap},
            "useEarliestOffset": true
        }),
        json!({
            "timestampSpec": {"column": "ts", "format": "iso"},
            "dimensionsSpec": {"dimensions": ["user", {"type": "long", "name": "count"}]},
            "granularitySpec": {"segmentGranularity": "DAY", "rollup": false}
        }),
    ))
    .await;
    // The kafka format: the record timestamp as __time, a header as a (long) column, the
    // key as a column, and a transformSpec filter on another header.
    api.submit(&kafka_spec(
        "kf",
        json!({
            "topic": "kf",
            "inputFormat": {
                "type": "kafka",
                "valueFormat": {"type": "json"},
                "headerFormat": {"type": "string"},
                "keyFormat": {"type": "tsv", "findColumnsFromHeader": false, "columns": ["k"]}
            },
            "consumerProperties": {"bootstrap.servers": bootstrap},
            "useEarliestOffset": true
        }),
        json!({
            "timestampSpec": {"column": "kafka.timestamp", "format": "millis"},
            "dimensionsSpec": {"dimensions": ["user", "kafka.key", {"type": "long", "name": "kafka.header.weight"}]},
            "granularitySpec": {"segmentGranularity": "DAY", "rollup": false},
            "transformSpec": {"filter": {"type": "selector", "dimension": "kafka.header.env", "value": "prod"}}
        }),
    ))
    .await;
    wait_caught_up(&api, "csv", 3).await;
    wait_caught_up(&api, "kf", 5).await;

    assert_eq!(
        api.sql_ok(
            r#"SELECT COUNT(*) AS "rows", SUM("count") AS "n", MAX(__time) AS "last" FROM "csv""#
        )
        .await,
        vec![json!({"rows": 3, "n": 9, "last": "2026-06-01T00:02:00.000Z"})],
        "the unparseable row is not stored"
    );
    // The two `dev` records are thrown away by the filter; the header is a column.
    let got = api
        .sql_ok(r#"SELECT COUNT(*) AS "rows", SUM("kafka.header.weight") AS "w", MIN(__time) AS "first", MAX(__time) AS "last" FROM "kf""#)
        .await;
    assert_eq!(
        got,
        vec![json!({"rows": 3, "w": 23, "first": iso(t0), "last": iso(t0 + 4 * 60_000)})]
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_rejection_is_relative_to_task_start() {
    let kafka = cluster(&[("late", 1)]);
    let bootstrap = kafka.bootstrap_servers();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let api = Api::new(&emu);
    // Tasks of one second; a row may be 5 s older than its task's start and up to one hour
    // past the end of its task.
    api.submit(&kafka_spec(
        "late",
        json!({
            "topic": "late",
            "inputFormat": {"type": "json"},
            "consumerProperties": {"bootstrap.servers": bootstrap},
            "useEarliestOffset": true,
            "taskDuration": "PT1S",
            "lateMessageRejectionPeriod": "PT5S",
            "earlyMessageRejectionPeriod": "PT1H"
        }),
        json!({"timestampSpec": {"column": "t", "format": "millis"}, "granularitySpec": {"rollup": false}}),
    ))
    .await;
    api.wait_status("late", "a task", |p| p["activeTasks"][0]["id"].is_string())
        .await;
    let row = |t: i64, n: &str| rec("late", json!({"t": t, "n": n}).to_string());
    let t0 = chrono::Utc::now().timestamp_millis();
    produce(
        &bootstrap,
        vec![
            row(t0, "now"),
            row(t0 - 3_600_000, "an hour old"),
            row(t0 + 3 * 3_600_000, "three hours ahead"),
        ],
    )
    .await;
    wait_caught_up(&api, "late", 3).await;
    assert_eq!(
        api.sql_ok(r#"SELECT COUNT(*) AS "rows" FROM "late""#).await,
        vec![json!({"rows": 1})],
        "only the current row is inside the task's message times"
    );

    // Once a task has started more than 5 s after t0, a row stamped t0 is late for it,
    // while the same timestamp was accepted by an earlier task.
    api.wait_status("late", "a task started 6 s after t0", |p| {
        p["activeTasks"][0]["startTime"]
            .as_str()
            .and_then(parse_iso)
            .is_some_and(|s| s > t0 + 6_000)
    })
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    produce(&bootstrap, vec![row(t0, "again"), row(now, "fresh")]).await;
    wait_caught_up(&api, "late", 5).await;
    assert_eq!(
        api.sql_ok(r#"SELECT COUNT(*) AS "rows", MAX(__time) AS "last" FROM "late""#)
            .await,
        vec![json!({"rows": 2, "last": iso(now)})]
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_rollup_depends_on_task_boundaries() {
    let kafka = cluster(&[("roll", 1)]);
    let bootstrap = kafka.bootstrap_servers();
    let spec = |duration: &str| {
        kafka_spec(
            "roll",
            json!({
                "topic": "roll",
                "inputFormat": {"type": "json"},
                "consumerProperties": {"bootstrap.servers": bootstrap},
                "useEarliestOffset": true,
                "taskDuration": duration
            }),
            json!({
                "timestampSpec": {"column": "ts", "format": "iso"},
                "dimensionsSpec": {"dimensions": ["user"]},
                "metricsSpec": [{"type": "count", "name": "count"}],
                "granularitySpec": {"segmentGranularity": "DAY", "queryGranularity": "HOUR", "rollup": true}
            }),
        )
    };
    // Two sites read the same topic; one rolls its tasks over every second, the other
    // keeps one task for an hour.
    let short = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let long = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let (a, b) = (Api::new(&short), Api::new(&long));
    a.submit(&spec("PT1S")).await;
    b.submit(&spec("PT1H")).await;
    for api in [&a, &b] {
        api.wait_status("roll", "a task", |p| p["activeTasks"][0]["id"].is_string())
            .await;
    }
    // Three identical batches: 5 users twice each, all in one hour, 1.5 s apart so that a
    // one-second task never sees two batches.
    let batch: Vec<Rec> = (0..10)
        .map(|i| {
            rec(
                "roll",
                json!({"ts": format!("2026-07-01T10:{:02}:00Z", i), "user": format!("u{}", i % 5)})
                    .to_string(),
            )
        })
        .collect();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        }
        produce(&bootstrap, batch.clone()).await;
    }
    wait_caught_up(&a, "roll", 30).await;
    wait_caught_up(&b, "roll", 30).await;

    let q = r#"SELECT COUNT(*) AS "rows", SUM("count") AS "n" FROM "roll""#;
    let (ra, rb) = (a.sql_ok(q).await, b.sql_ok(q).await);
    assert_eq!(count(&rb, "rows"), 5, "one task: every user once per hour");
    assert!(
        count(&ra, "rows") >= 10,
        "rows of different tasks do not merge: {ra:?}"
    );
    assert_eq!(count(&ra, "n"), 30);
    assert_eq!(count(&rb, "n"), 30, "the count metric agrees: {rb:?}");
    let seg = r#"SELECT SUM("num_rows") AS "rows" FROM sys.segments WHERE "datasource" = 'roll'"#;
    assert_eq!(count(&b.sql_ok(seg).await, "rows"), 5);
    assert_eq!(count(&a.sql_ok(seg).await, "rows"), count(&ra, "rows"));
    // The short tasks really rolled over: new ids, publishing ones listed.
    let p = a
        .wait_status("roll", "a rolled-over task", |p| {
            p["activeTasks"][0]["startingOffsets"]["0"] == json!(30)
        })
        .await;
    assert!(p["activeTasks"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("index_kafka_roll_"));
    assert_eq!(p["durationSeconds"], 1);
    short.shutdown().await;
    long.shutdown().await;
}
