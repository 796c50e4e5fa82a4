//! Helpers shared by the emulator's integration tests (`mod common;` in each test file):
//! a mock Kafka cluster, the supervisor spec most tests post, a dead bootstrap address,
//! independent high watermarks, and the HTTP client every request goes through.
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use lockstep_sim::time::parse_iso;
use lockstep_sim::{Emulator, EmulatorConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const HOUR: i64 = 3_600_000;

pub fn t0() -> i64 {
    parse_iso("2026-11-23T00:00:00Z").unwrap()
}

/// A one-broker mock cluster with these topics and partition counts.
pub fn cluster(topics: &[(&str, i32)]) -> MockCluster<'static, DefaultProducerContext> {
    let c = MockCluster::new(1).expect("mock cluster");
    for (t, p) in topics {
        c.create_topic(t, *p, 1).expect("topic");
    }
    c
}

/// A Kafka supervisor spec: JSON rows timed by `time_field` (ISO), `user` and a long
/// `count`, hourly segments without rollup, one task of an hour from the earliest offset.
pub fn spec(ds: &str, topic: &str, bootstrap: &str, time_field: &str) -> Value {
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

/// An emulator with these supervisors and otherwise the default configuration.
pub async fn start_with(supervisors: Vec<Value>) -> Emulator {
    Emulator::start(EmulatorConfig {
        supervisors,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

/// A loopback address nobody listens on: a supervisor that exists but never reads.
pub fn dead_bootstrap() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// High watermarks of every partition, read independently of the emulator.
pub fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> BTreeMap<String, i64> {
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

/// One HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub ctype: Option<String>,
    pub text: String,
}

impl Resp {
    /// The body as JSON; panics when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    /// The status and the body: JSON where it parses, else the text as a JSON string.
    pub fn status_and_value(self) -> (u16, Value) {
        let v = serde_json::from_str(&self.text).unwrap_or(Value::String(self.text));
        (self.status, v)
    }
}

/// A client with a 30 s timeout; every request goes through [`Http::send`].
pub struct Http(pub reqwest::Client);

impl Http {
    pub fn new() -> Http {
        Http(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        )
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let text = r.text().await.unwrap();
        Resp {
            status,
            ctype,
            text,
        }
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.send(self.0.get(url)).await
    }

    pub async fn post(&self, url: &str, body: &Value) -> Resp {
        self.send(self.0.post(url).json(body)).await
    }

    pub async fn sql(&self, base: &str, query: &str) -> Resp {
        self.post(&format!("{base}/druid/v2/sql"), &json!({ "query": query }))
            .await
    }
}

/// One emulator's API by path, answering the status and the body (JSON, or the text as a
/// JSON string).
pub struct Api {
    pub base: String,
    pub http: Http,
}

impl Api {
    pub fn new(emu: &Emulator) -> Api {
        Api {
            base: emu.url(),
            http: Http::new(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        self.http.get(&url).await.status_and_value()
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        self.http.post(&url, body).await.status_and_value()
    }

    pub async fn sql(&self, query: &str) -> (u16, Value) {
        self.post("/druid/v2/sql", &json!({ "query": query })).await
    }

    /// The rows of a query that must succeed.
    pub async fn sql_ok(&self, query: &str) -> Vec<Value> {
        let (s, v) = self.sql(query).await;
        assert_eq!(s, 200, "{query}: {v}");
        v.as_array().unwrap().clone()
    }

    /// Posts a supervisor spec that must be accepted.
    pub async fn submit(&self, spec: &Value) {
        let (s, v) = self.post("/druid/indexer/v1/supervisor", spec).await;
        assert_eq!(s, 200, "{v}");
    }

    /// The payload of the supervisor's status once `f` holds for it (bounded wait).
    pub async fn wait_status(&self, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (s, v) = self
                .get(&format!("/druid/indexer/v1/supervisor/{id}/status"))
                .await;
            assert_eq!(s, 200, "{v}");
            if f(&v["payload"]) {
                return v["payload"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
