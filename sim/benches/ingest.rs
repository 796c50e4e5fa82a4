//! Emulator figures: ingestion rate from a mock Kafka cluster through a supervisor, and
//! latency of the drift queries over the ingested data.
//!
//! `cargo bench -p lockstep-sim --bench ingest` (`SIM_BENCH_ROWS=N`, default 100000; the mock
//! cluster prunes at about 5 MiB per partition, so keep N under about 200000).

use lockstep_sim::loadgen::{self, LoadSpec};
use lockstep_sim::{Emulator, EmulatorConfig};
use rdkafka::mocking::MockCluster;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this as a smoke test.
    let bench = std::env::args().any(|a| a == "--bench");
    let rows: u64 = std::env::var("SIM_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 100_000 } else { 5_000 });
    let kafka = MockCluster::new(1).expect("mock cluster");
    kafka.create_topic("bench", 4, 1).expect("topic");
    let bootstrap = kafka.bootstrap_servers();
    let day = 86_400_000;
    let start = lockstep_sim::time::parse_iso("2026-11-23T00:00:00Z").expect("start");
    let load = LoadSpec {
        partitions: 4,
        count_max: 3,
        ..LoadSpec::new("bench", rows, start, start + day)
    };
    let produced = loadgen::produce(&bootstrap, &load).await.expect("produce");
    println!(
        "load generator: {} rows in {:.2}s ({:.0} rows/s)",
        produced.rows,
        produced.elapsed.as_secs_f64(),
        produced.rows as f64 / produced.elapsed.as_secs_f64()
    );
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let t = Instant::now();
    let spec = json!({"type": "kafka", "spec": {
        "dataSchema": {"dataSource": "bench", "timestampSpec": {"column": "timestamp", "format": "iso"},
                       "granularitySpec": {"rollup": false}},
        "ioConfig": {"topic": "bench", "consumerProperties": {"bootstrap.servers": bootstrap},
                     "useEarliestOffset": true}}});
    emu.submit_supervisor(&spec).expect("supervisor");
    let deadline = Instant::now() + Duration::from_secs(600);
    while emu.row_count("bench") < rows && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t.elapsed();
    println!(
        "ingest: {} rows in {:.2}s ({:.0} rows/s)",
        emu.row_count("bench"),
        took.as_secs_f64(),
        emu.row_count("bench") as f64 / took.as_secs_f64()
    );
    // Latency as a client sees it: HTTP round trip plus the query.
    let client = reqwest::Client::new();
    for (name, q) in [
        (
            "PT1M buckets, 1 day",
            r#"SELECT TIME_FLOOR(__time, 'PT1M') AS "bucket", COUNT(*) AS "rows" FROM "bench" WHERE __time >= TIMESTAMP '2026-11-23 00:00:00' AND __time < TIMESTAMP '2026-11-24 00:00:00' GROUP BY 1 ORDER BY 1"#,
        ),
        (
            "PT1H SUM, 1 day",
            r#"SELECT TIME_FLOOR(__time, 'PT1H') AS "bucket", SUM("count") AS "rows" FROM "bench" GROUP BY 1 ORDER BY 1"#,
        ),
        (
            "MAX(__time)",
            r#"SELECT MAX(__time) AS "latest" FROM "bench""#,
        ),
        (
            "sys.segments",
            r#"SELECT "start", "end", SUM("num_rows") AS "rows", COUNT(*) AS "segments" FROM sys.segments WHERE "datasource" = 'bench' AND is_published = 1 AND is_overshadowed = 0 GROUP BY 1, 2 ORDER BY 1"#,
        ),
    ] {
        let n = 20;
        let t = Instant::now();
        for _ in 0..n {
            let r = client
                .post(format!("{}/druid/v2/sql", emu.url()))
                .json(&json!({ "query": q }))
                .send()
                .await
                .expect("sql");
            assert!(r.status().is_success());
            let _ = r.bytes().await;
        }
        println!(
            "{name}: {:.2} ms per query",
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    }
    emu.shutdown().await;
}
