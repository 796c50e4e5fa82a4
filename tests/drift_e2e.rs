//! Drift end to end: a source topic on one Kafka (mock) cluster, mirrored by real `lockstep
//! coordinator` + `lockstep worker` processes into two site clusters, each site with a Druid
//! emulator (sim/) ingesting its site topic. The real `lockstep drift-check` binary must say:
//! in_sync (exit 0); lagging with the records-behind figure in source offsets when one site's
//! ingestion is paused (exit 1); diverged naming the hour and the site after that site's
//! emulator drops an hour of rows (exit 1); unknown when a site is down (exit 2). The
//! coordinator's own poller must agree on `/api/v1/drift` and in its metrics.

mod common;

use common::drift::{drift_check, site, two_sites};
use common::{http_get, wait_until, Cluster};
use lockstep_sim::loadgen::{self, LoadSpec};
use lockstep_sim::{Emulator, EmulatorConfig};
use rdkafka::mocking::MockCluster;
use std::time::{Duration, Instant};

const HOUR: i64 = 3_600_000;
const PARTITIONS: i32 = 2;
const ROWS: u64 = 3_000;
const LATE_ROWS: u64 = 400;

fn supervisor_spec(bootstrap: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "kafka",
        "spec": {
            "dataSchema": {
                "dataSource": "clicks",
                "timestampSpec": { "column": "timestamp", "format": "iso" },
                "granularitySpec": { "segmentGranularity": "HOUR", "rollup": false }
            },
            "ioConfig": {
                "topic": "clicks",
                "inputFormat": { "type": "json" },
                "consumerProperties": { "bootstrap.servers": bootstrap },
                "useEarliestOffset": true,
                "taskDuration": "PT1H"
            },
            "tuningConfig": { "type": "kafka" }
        }
    })
}

async fn emulator(bootstrap: &str) -> Emulator {
    Emulator::start(EmulatorConfig {
        supervisors: vec![supervisor_spec(bootstrap)],
        offsets_refresh: Duration::from_millis(200),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator")
}

/// Sum of the supervisor's `latestOffsets` (the site topic's end): what the mirror delivered.
fn site_topic_end(emu: &Emulator) -> i64 {
    emu.supervisor_status("clicks")
        .and_then(|s| {
            s["payload"]["latestOffsets"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_i64()).sum())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_check_in_sync_lagging_diverged_unknown() {
    let source: MockCluster<'static, _> = MockCluster::new(1).expect("source cluster");
    let site_a: MockCluster<'static, _> = MockCluster::new(1).expect("site a cluster");
    let site_b: MockCluster<'static, _> = MockCluster::new(1).expect("site b cluster");
    for c in [&source, &site_a, &site_b] {
        c.create_topic("clicks", PARTITIONS, 1).expect("topic");
        c.create_topic(lockstep_workers::kafka::checkpoint::PROGRESS_TOPIC, 1, 1)
            .expect("topic");
    }
    let emu_a = emulator(&site_a.bootstrap_servers()).await;
    let mut emu_b = Some(emulator(&site_b.bootstrap_servers()).await);

    // Rows over four whole hours that ended at least two hours ago: all settled.
    let now = lockstep_drift::poller::now_ms();
    let base = now.div_euclid(HOUR) * HOUR - 6 * HOUR;
    let spec = LoadSpec {
        partitions: PARTITIONS,
        ..LoadSpec::new("clicks", ROWS, base, base + 4 * HOUR)
    };
    loadgen::produce(&source.bootstrap_servers(), &spec)
        .await
        .expect("load");

    let body = two_sites(
        (&emu_a.url(), &site_a.bootstrap_servers()),
        (
            &emu_b.as_ref().expect("b").url(),
            &site_b.bootstrap_servers(),
        ),
        &source.bootstrap_servers(),
        "window = \"12h\"\nsettle = \"1m\"\nlag_tolerance = \"0s\"",
    );
    let mut cluster =
        Cluster::start_full(&body, "drift_interval = \"500ms\"", 4000, 500, 300, true);
    cluster.start_worker("w1");
    let config = cluster.config.clone();

    // 1. Everything mirrored and ingested: in sync.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (a, b) = (
            emu_a.row_count("clicks"),
            emu_b.as_ref().map(|b| b.row_count("clicks")).unwrap_or(0),
        );
        if a == ROWS && b == ROWS {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "sites did not ingest every row within 90s: a {a}, b {b} of {ROWS}; a: {}; b: {}\nworker log:\n{}",
                emu_a.supervisor_status("clicks").unwrap_or_default(),
                emu_b.as_ref().and_then(|b| b.supervisor_status("clicks")).unwrap_or_default(),
                cluster.workers["w1"].log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = drift_check(&config).await;
    assert_eq!(r.code, 0, "in sync expected:\n{}", r.out);
    assert_eq!(r.json["verdict"], "in_sync", "{}", r.json);
    assert_eq!(site(&r.json, "a")["rows"], ROWS);
    assert_eq!(site(&r.json, "b")["rows"], ROWS);
    assert_eq!(site(&r.json, "b")["records_behind"], 0, "{}", r.json);
    assert!(r.out.contains("clicks (flow clicks): IN_SYNC"), "{}", r.out);
    // The coordinator's poller agrees, on its API and in its metrics.
    wait_until(Duration::from_secs(30), "/api/v1/drift in_sync", || {
        http_get(&cluster.http, "/api/v1/drift")
            .map(|(c, b)| c == 200 && b.contains("\"verdict\":\"in_sync\""))
            .unwrap_or(false)
    })
    .await;
    let (_, metrics) = common::metrics_get(&cluster.http).expect("metrics");
    assert!(
        metrics.contains("lockstep_drift_verdict{datasource=\"clicks\",verdict=\"in_sync\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockstep_drift_records_behind{datasource=\"clicks\",site=\"b\"} 0"),
        "{metrics}"
    );
    // Freshness against the source, in seconds: caught up is 0, on the API and as a metric.
    assert_eq!(site(&r.json, "b")["source_lag_seconds"], 0.0, "{}", r.json);
    let (_, api) = http_get(&cluster.http, "/api/v1/drift").expect("drift api");
    assert!(api.contains("\"source_lag_seconds\":0.0"), "{api}");
    assert!(
        metrics.contains("lockstep_drift_source_lag_seconds{datasource=\"clicks\",site=\"b\"} 0"),
        "{metrics}"
    );

    // 2. Site b's ingestion paused, late rows arrive: lagging by exactly those records, counted
    // in source offsets.
    let b = emu_b.as_ref().expect("b");
    b.faults().pause_ingestion("clicks");
    let late = LoadSpec {
        partitions: PARTITIONS,
        seed: 2,
        ..LoadSpec::new("clicks", LATE_ROWS, base, base + 4 * HOUR)
    };
    loadgen::produce(&source.bootstrap_servers(), &late)
        .await
        .expect("late load");
    wait_until(
        Duration::from_secs(60),
        "site a ingests the late rows and site b's topic holds them",
        || {
            emu_a.row_count("clicks") == ROWS + LATE_ROWS
                && site_topic_end(b) == (ROWS + LATE_ROWS) as i64
        },
    )
    .await;
    let r = drift_check(&config).await;
    assert_eq!(r.code, 1, "lagging expected:\n{}", r.out);
    let ds = &r.json["datasources"][0];
    assert_eq!(ds["verdict"], "lagging", "{}", r.json);
    assert_eq!(
        site(&r.json, "b")["records_behind"],
        LATE_ROWS,
        "{}",
        r.json
    );
    assert_eq!(site(&r.json, "a")["records_behind"], 0, "{}", r.json);
    assert!(
        site(&r.json, "b")["source_lag_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "a paused site's oldest record not ingested has waited: {}",
        r.json
    );
    // Everything is mirrored: the lag is Druid's ingestion, not the mirror.
    assert_eq!(site(&r.json, "b")["mirror_behind"], 0, "{}", r.json);
    assert!(
        r.out
            .contains(&format!("b is {LATE_ROWS} source records behind")),
        "{}",
        r.out
    );

    // Resumed: in sync again.
    b.faults().resume_ingestion("clicks");
    wait_until(Duration::from_secs(60), "site b catches up", || {
        b.row_count("clicks") == ROWS + LATE_ROWS
    })
    .await;
    let r = drift_check(&config).await;
    assert_eq!(r.code, 0, "in sync again expected:\n{}", r.out);

    // 3. Site b's emulator loses one hour: diverged, naming the hour and the site.
    let lost = base + HOUR;
    let dropped = b.faults().drop_rows("clicks", lost, lost + HOUR);
    assert!(dropped > 0);
    let r = drift_check(&config).await;
    assert_eq!(r.code, 1, "diverged expected:\n{}", r.out);
    let ds = &r.json["datasources"][0];
    assert_eq!(ds["verdict"], "diverged", "{}", r.json);
    assert_eq!(ds["divergent_bucket_count"], 1, "{}", r.json);
    let hour = lockstep_drift::druid::format_time(lost);
    assert_eq!(ds["divergent_buckets"][0]["bucket"], hour.as_str());
    assert_eq!(
        ds["divergent_buckets"][0]["sites"],
        serde_json::json!(["b"])
    );
    assert_eq!(ds["divergent_buckets"][0]["rows"]["b"], 0);
    assert!(r.out.contains(&hour), "{}", r.out);
    assert!(r.out.contains("differs at b"), "{}", r.out);
    assert_eq!(
        site(&r.json, "a")["rows"].as_i64().expect("rows")
            - site(&r.json, "b")["rows"].as_i64().expect("rows"),
        dropped as i64
    );

    // 4. Site b down: unknown, never zero.
    emu_b.take().expect("b").shutdown().await;
    let r = drift_check(&config).await;
    assert_eq!(r.code, 2, "unknown expected:\n{}", r.out);
    assert_eq!(r.json["verdict"], "unknown", "{}", r.json);
    assert_eq!(site(&r.json, "b")["rows"], serde_json::Value::Null);
    assert_eq!(site(&r.json, "b")["error_kind"], "unreachable");
    assert!(r.out.contains("site b: Druid unreachable"), "{}", r.out);
    drop(cluster);
}
