//! The drift engine on supervisor answers shaped as real Druid sends them, with real Kafka
//! (librdkafka's mock cluster) behind the offset map: a `topicPattern` supervisor keys its
//! partitions `"topic:partition"` (KafkaTopicPartition's multi-topic key), reports negative
//! lags (Integer.MIN_VALUE among them), a task offset past the site topic's end, and a
//! partition with no offset at all (docs/api-reference/supervisor-api.md, "Get supervisor
//! status"; SeekableStreamSupervisor computes lag from a snapshot, so it can be negative).
//!
//! Each odd partition must come out unknown with a note while the others keep their figures,
//! and the check must not read past a partition's end (which would wait out the Kafka timeout
//! for a record that does not exist): no partition's note may say "timed out".

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use lockstep_config::headers::{SRC_CLUSTER, SRC_OFFSET};
use lockstep_drift::{DriftEngine, DriftMetrics, Overrides};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use std::time::Duration;

const RECORDS: i64 = 10;

/// What a Kafka supervisor with `topicPattern` answers (supervisor-api.md's status example,
/// with multi-topic keys): clicks:0 caught up; clicks:1 no task offset and a lag of
/// Integer.MIN_VALUE; views:0 three behind; views:1 a task offset past the topic's end.
fn status() -> serde_json::Value {
    serde_json::json!({
        "id": "clicks",
        "generationTime": "2026-12-03T10:00:00.000Z",
        "payload": {
            "dataSource": "clicks",
            "stream": "clicks|views",
            "partitions": 4,
            "replicas": 1,
            "durationSeconds": 3600,
            "activeTasks": [{
                "id": "index_kafka_clicks_a1b2c3d4",
                "startingOffsets": {"clicks:0": 0, "views:0": 0, "views:1": 0},
                "startTime": "2026-12-03T09:00:00.000Z",
                "remainingSeconds": 1200,
                "type": "ACTIVE",
                "currentOffsets": {"clicks:0": RECORDS, "views:0": RECORDS - 3, "views:1": RECORDS + 15},
                "lag": {"clicks:0": 0, "views:0": 3, "views:1": -15}
            }],
            "publishingTasks": [],
            "latestOffsets": {"clicks:0": RECORDS, "clicks:1": RECORDS, "views:0": RECORDS, "views:1": RECORDS},
            "minimumLag": {"clicks:0": 0, "clicks:1": -2147483648i64, "views:0": 3, "views:1": -15},
            "aggregateLag": -2147483660i64,
            "offsetsLastUpdated": "2026-12-03T09:59:40.000Z",
            "suspended": false,
            "healthy": true,
            "state": "RUNNING",
            "detailedState": "RUNNING",
            "recentErrors": []
        }
    })
}

/// The spec as `GET /druid/indexer/v1/supervisor/{id}` returns it: `spec` and the top-level
/// copies, an object queryGranularity, topicPattern, no rollup.
fn spec() -> serde_json::Value {
    let data_schema = serde_json::json!({
        "dataSource": "clicks",
        "timestampSpec": {"column": "timestamp", "format": "iso", "missingValue": null},
        "dimensionsSpec": {"dimensions": [{"type": "string", "name": "user"}]},
        "metricsSpec": [],
        "granularitySpec": {
            "type": "uniform",
            "segmentGranularity": "HOUR",
            "queryGranularity": {"type": "none"},
            "rollup": false,
            "intervals": []
        }
    });
    let io = serde_json::json!({
        "topicPattern": "clicks|views",
        "inputFormat": {"type": "json"},
        "consumerProperties": {"bootstrap.servers": "kafka:9092"},
        "taskCount": 1,
        "replicas": 1,
        "taskDuration": "PT3600S"
    });
    serde_json::json!({
        "type": "kafka",
        "spec": {"dataSchema": data_schema, "ioConfig": io, "tuningConfig": {"type": "kafka"}},
        "dataSchema": data_schema,
        "ioConfig": io,
        "tuningConfig": {"type": "kafka"},
        "context": null,
        "suspended": false
    })
}

async fn router() -> String {
    let sql = |body: Bytes| async move {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let q = v["query"].as_str().unwrap_or_default();
        let rows = if q.contains("MAX(__time)") {
            serde_json::json!([{"latest": "2026-12-03T09:59:00.000Z"}])
        } else {
            // No published segment, no rows in the window: only the offsets matter here.
            serde_json::json!([])
        };
        axum::Json(rows)
    };
    let app = Router::new()
        .route("/druid/v2/sql", post(sql))
        .route(
            "/druid/indexer/v1/supervisor/clicks/status",
            get(|| async { axum::Json(status()) }),
        )
        .route(
            "/druid/indexer/v1/supervisor/clicks",
            get(|| async { axum::Json(spec()) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// `RECORDS` records into each partition of `topic`; with `mirrored`, each carries the
/// mirror's headers naming its source offset (source "up").
fn fill(bootstrap: &str, topic: &str, mirrored: bool) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for partition in 0..2 {
        for i in 0..RECORDS {
            let offset = i.to_string();
            let mut r = BaseRecord::<(), str>::to(topic)
                .payload("{}")
                .partition(partition);
            if mirrored {
                r = r.headers(
                    OwnedHeaders::new()
                        .insert(Header {
                            key: SRC_OFFSET,
                            value: Some(offset.as_str()),
                        })
                        .insert(Header {
                            key: SRC_CLUSTER,
                            value: Some("up"),
                        }),
                );
            }
            p.send(r).map_err(|(e, _)| e).expect("send");
        }
    }
    p.flush(Duration::from_secs(10)).expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_pattern_and_negative_lags_decode_and_stay_per_partition() {
    let source: MockCluster<'static, _> = MockCluster::new(1).expect("source");
    let site: MockCluster<'static, _> = MockCluster::new(1).expect("site");
    for topic in ["clicks", "views"] {
        source.create_topic(topic, 2, 1).expect("topic");
        site.create_topic(topic, 2, 1).expect("topic");
        fill(&source.bootstrap_servers(), topic, false);
        fill(&site.bootstrap_servers(), topic, true);
    }
    let text = format!(
        r#"
[[sites]]
name = "eu"
druid.router_url = "{router}"
druid.timeout = "5s"
kafka.bootstrap_servers = "{site}"

[[sources]]
name = "up"
kind = "kafka"
kafka.bootstrap_servers = "{source}"

[[flows]]
name = "clicks"
kind = "kafka"
source = "up"
topic_regex = "clicks|views"
datasources = ["clicks"]
"#,
        router = router().await,
        site = site.bootstrap_servers(),
        source = source.bootstrap_servers(),
    );
    let config = lockstep_config::parse(&text, "test.toml", None, &|_| None).expect("config");
    let engine = DriftEngine::new(&config, DriftMetrics::new()).expect("engine");
    let targets = lockstep_drift::targets(&config, None, &Overrides::default());
    let report = engine
        .check(&targets[0], lockstep_drift::poller::now_ms())
        .await;
    let eu = &report.sites[0];
    let shown = serde_json::to_string_pretty(&report).expect("json");
    assert_eq!(eu.error, None, "{shown}");
    assert_eq!(report.count, "COUNT(*)", "rollup false: {shown}");
    assert_eq!(report.count_source, "spec", "{shown}");
    let part = |topic: &str, p: i32| {
        eu.partitions
            .iter()
            .find(|x| x.topic == topic && x.partition == p)
            .unwrap_or_else(|| panic!("no {topic}/{p} in {shown}"))
    };
    // Known partitions keep their figures.
    assert_eq!(part("clicks", 0).records_behind, Some(0), "{shown}");
    assert_eq!(part("views", 0).records_behind, Some(3), "{shown}");
    assert!(part("views", 0).waiting_seconds.is_some(), "{shown}");
    // The odd ones are unknown, each with its reason.
    let clicks_1 = part("clicks", 1);
    assert_eq!(clicks_1.records_behind, None, "{shown}");
    assert!(
        clicks_1
            .note
            .as_deref()
            .is_some_and(|n| n.contains("-2147483648")),
        "{shown}"
    );
    let views_1 = part("views", 1);
    assert_eq!(views_1.records_behind, None, "{shown}");
    assert!(
        views_1
            .note
            .as_deref()
            .is_some_and(|n| n.contains("past the site topic's end")),
        "{shown}"
    );
    // The site's total is unknown, and says how much is known.
    assert_eq!(eu.records_behind, None, "{shown}");
    assert!(
        eu.notes
            .iter()
            .any(|n| n.contains("records behind known for 2 of 4 partition(s) (3 there)")),
        "{shown}"
    );
    assert!(
        !shown.contains("timed out"),
        "no read may wait for a record past a partition's end: {shown}"
    );
}
