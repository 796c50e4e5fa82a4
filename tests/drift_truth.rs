//! Drift truth on Druid's own behaviour (issue 17), end to end: a source topic on one Kafka
//! (mock) cluster, mirrored by real `lockstep coordinator` + `lockstep worker` processes into
//! two site clusters, each site with a Druid emulator that rolls up best-effort, as Kafka
//! ingestion always does: each ingestion task rolls up only its own rows. The two sites run
//! different task durations, so the same records end up split over different task boundaries
//! and the sites hold different `COUNT(*)` but the same `SUM("count")`.
//!
//! With no count configured, the real `lockstep drift-check` must read the supervisor spec,
//! compare `SUM("count")`, and say: in_sync (exit 0); unknown while a site's segments are
//! published but not loaded (exit 2, never "no data"); rows still compared with a clear note
//! when a site's Router does not proxy the supervisor API, and supervisor data back with the
//! site's `overlord_url`; diverged naming the hour and site after one site loses an hour
//! (exit 1). A site that never ingested the datasource gives a drift verdict, not unknown.

mod common;

use common::drift::{drift_check, site, two_sites};
use common::Cluster;
use lockstep_sim::loadgen::{self, LoadSpec};
use lockstep_sim::{Emulator, EmulatorConfig};
use rdkafka::mocking::MockCluster;
use std::time::Duration;

const HOUR: i64 = 3_600_000;
const PARTITIONS: i32 = 2;
const ROWS: u64 = 3_000;

/// A rolled-up datasource as an operator would write it: one dimension, an hourly query
/// granularity and a `count` aggregator (docs/ingestion/rollup.md).
fn rollup_spec(bootstrap: &str, task_duration: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "kafka",
        "spec": {
            "dataSchema": {
                "dataSource": "clicks",
                "timestampSpec": { "column": "timestamp", "format": "iso" },
                "dimensionsSpec": { "dimensions": ["user"] },
                "metricsSpec": [ { "type": "count", "name": "count" } ],
                "granularitySpec": {
                    "segmentGranularity": "HOUR",
                    "queryGranularity": "HOUR",
                    "rollup": true
                }
            },
            "ioConfig": {
                "topic": "clicks",
                "inputFormat": { "type": "json" },
                "consumerProperties": { "bootstrap.servers": bootstrap },
                "useEarliestOffset": true,
                "taskDuration": task_duration
            },
            "tuningConfig": { "type": "kafka" }
        }
    })
}

async fn emulator(bootstrap: &str, task_duration: &str) -> Emulator {
    Emulator::start(EmulatorConfig {
        supervisors: vec![rollup_spec(bootstrap, task_duration)],
        offsets_refresh: Duration::from_millis(200),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator")
}

/// `(COUNT(*), SUM("count"))` of `clicks` at an emulator, through its SQL endpoint; (0, 0)
/// while the datasource does not exist.
async fn counts(emu: &Emulator) -> (i64, i64) {
    let answer = reqwest::Client::new()
        .post(format!("{}/druid/v2/sql", emu.url()))
        .json(&serde_json::json!({
            "query": "SELECT COUNT(*) AS \"rows\", SUM(\"count\") AS \"events\" FROM \"clicks\"",
            "resultFormat": "object",
        }))
        .send()
        .await;
    let Ok(r) = answer else { return (0, 0) };
    if !r.status().is_success() {
        return (0, 0);
    }
    let rows: Vec<serde_json::Value> = r.json().await.unwrap_or_default();
    let n = |k: &str| {
        rows.first()
            .and_then(|v| v[k].as_f64())
            .map(|f| f as i64)
            .unwrap_or(0)
    };
    (n("rows"), n("events"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_aware_unqueryable_and_default_router() {
    let source: MockCluster<'static, _> = MockCluster::new(1).expect("source cluster");
    let site_a: MockCluster<'static, _> = MockCluster::new(1).expect("site a cluster");
    let site_b: MockCluster<'static, _> = MockCluster::new(1).expect("site b cluster");
    for c in [&source, &site_a, &site_b] {
        c.create_topic("clicks", PARTITIONS, 1).expect("topic");
        c.create_topic(lockstep_workers::kafka::checkpoint::PROGRESS_TOPIC, 1, 1)
            .expect("topic");
    }
    // Different task durations: a's tasks roll over every second, b's every hour.
    let emu_a = emulator(&site_a.bootstrap_servers(), "PT1S").await;
    let emu_b = emulator(&site_b.bootstrap_servers(), "PT1H").await;

    let now = lockstep_drift::poller::now_ms();
    let base = now.div_euclid(HOUR) * HOUR - 6 * HOUR;
    let body = two_sites(
        (&emu_a.url(), &site_a.bootstrap_servers()),
        (&emu_b.url(), &site_b.bootstrap_servers()),
        &source.bootstrap_servers(),
        "window = \"12h\"\nsettle = \"1m\"",
    );
    let mut cluster = Cluster::start_full(&body, "drift_interval = \"1s\"", 4000, 500, 300, true);
    cluster.start_worker("w1");
    let config = cluster.config.clone();

    // Rows over four whole hours that ended two hours ago, in three batches: each batch is
    // ingested at both sites before the next is produced, more than a second later, so a's
    // tasks (PT1S) roll over between batches while b's one task (PT1H) takes them all.
    let mut last = ((0, 0), (0, 0));
    for seed in 1..=3u64 {
        let batch = LoadSpec {
            partitions: PARTITIONS,
            seed,
            ..LoadSpec::new("clicks", ROWS / 3, base, base + 4 * HOUR)
        };
        loadgen::produce(&source.bootstrap_servers(), &batch)
            .await
            .expect("load");
        let want = (seed * ROWS / 3) as i64;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        last = loop {
            let (a, b) = (counts(&emu_a).await, counts(&emu_b).await);
            if a.1 == want && b.1 == want {
                break (a, b);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sites did not ingest batch {seed} within 120s: a {a:?}, b {b:?} (COUNT(*), SUM(count)), want {want} events\nworker log:\n{}",
                cluster.workers["w1"].log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    let ((rows_a, _), (rows_b, _)) = last;
    eprintln!("best-effort rollup: COUNT(*) a {rows_a}, b {rows_b}; SUM(\"count\") {ROWS} at both");
    assert_ne!(
        rows_a, rows_b,
        "best-effort rollup over different task boundaries must give different COUNT(*)"
    );
    assert!(
        rows_a < ROWS as i64 && rows_b < ROWS as i64,
        "rolled up: {last:?}"
    );

    // 1. No count configured: the spec says rollup with a count metric, so SUM("count").
    let r = drift_check(&config).await;
    assert_eq!(r.code, 0, "in sync expected:\n{}", r.out);
    let ds = &r.json["datasources"][0];
    assert_eq!(ds["verdict"], "in_sync", "{}", r.json);
    assert_eq!(ds["count"], "SUM(\"count\")", "{}", r.json);
    assert_eq!(ds["count_source"], "spec", "{}", r.json);
    assert_eq!(site(&r.json, "a")["rows"], ROWS, "{}", r.json);
    assert_eq!(site(&r.json, "b")["rows"], ROWS, "{}", r.json);
    assert_eq!(site(&r.json, "b")["source_lag_seconds"], 0.0, "{}", r.json);
    assert!(r.out.contains("count SUM(\"count\") (spec)"), "{}", r.out);

    // 2. b's segments published but not loaded (Historicals down): SQL says "not found",
    // exactly as for a datasource that never existed. Unknown, with the reason.
    emu_b.faults().unload("clicks");
    let r = drift_check(&config).await;
    assert_eq!(r.code, 2, "unknown expected:\n{}", r.out);
    assert_eq!(r.json["verdict"], "unknown", "{}", r.json);
    let b = site(&r.json, "b");
    assert_eq!(b["error_kind"], "unqueryable", "{}", r.json);
    assert_eq!(b["rows"], serde_json::Value::Null, "{}", r.json);
    assert!(
        r.out.contains(
            "are not queryable (per sys.segments): Historicals down or segments not loaded"
        ),
        "{}",
        r.out
    );
    emu_b.faults().reload("clicks");

    // 3. A default Router: the supervisor API answers 404. Rows are still compared, and a
    // note names the Router setting and the per-site option.
    emu_b.faults().set_management_proxy(false);
    let r = drift_check(&config).await;
    assert_eq!(r.code, 0, "in sync expected:\n{}", r.out);
    let b = site(&r.json, "b");
    assert_eq!(b["rows"], ROWS, "{}", r.json);
    assert_eq!(b["records_behind"], serde_json::Value::Null, "{}", r.json);
    let notes = b["notes"].to_string();
    assert!(
        notes.contains("druid.router.managementProxy.enabled") && notes.contains("overlord_url"),
        "{}",
        r.json
    );
    // With b's Overlord URL configured, the supervisor data is back.
    let text = std::fs::read_to_string(&config).expect("config");
    let with_overlord = cluster.dir.path().join("with-overlord.toml");
    std::fs::write(
        &with_overlord,
        text.replacen(
            &format!("druid.router_url = \"{}\"", emu_b.url()),
            &format!(
                "druid.router_url = \"{}\"\ndruid.overlord_url = \"{}\"",
                emu_b.url(),
                emu_b.overlord_url()
            ),
            1,
        ),
    )
    .expect("write config");
    let r = drift_check(&with_overlord).await;
    assert_eq!(r.code, 0, "in sync expected:\n{}", r.out);
    let b = site(&r.json, "b");
    assert_eq!(b["records_behind"], 0, "{}", r.json);
    assert_eq!(b["supervisor"]["id"], "clicks", "{}", r.json);
    emu_b.faults().set_management_proxy(true);

    // 4. b loses an hour: diverged, naming the hour and the site.
    let lost = base + HOUR;
    assert!(emu_b.faults().drop_rows("clicks", lost, lost + HOUR) > 0);
    let r = drift_check(&config).await;
    assert_eq!(r.code, 1, "diverged expected:\n{}", r.out);
    let ds = &r.json["datasources"][0];
    assert_eq!(ds["verdict"], "diverged", "{}", r.json);
    let hour = lockstep_drift::druid::format_time(lost);
    assert_eq!(
        ds["divergent_buckets"][0]["bucket"],
        hour.as_str(),
        "{}",
        r.json
    );
    assert_eq!(
        ds["divergent_buckets"][0]["sites"],
        serde_json::json!(["b"])
    );
    assert!(r.out.contains("differs at b"), "{}", r.out);

    // 5. A site that never ingested the datasource (no supervisor, no segments): that is
    // data missing there, a drift verdict, not "unknown".
    let site_c: MockCluster<'static, _> = MockCluster::new(1).expect("site c cluster");
    site_c.create_topic("clicks", PARTITIONS, 1).expect("topic");
    let emu_c = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator c");
    let with_c = cluster.dir.path().join("with-c.toml");
    std::fs::write(
        &with_c,
        text.replacen(&emu_b.url(), &emu_c.url(), 1).replacen(
            &site_b.bootstrap_servers(),
            &site_c.bootstrap_servers(),
            1,
        ),
    )
    .expect("write config");
    let r = drift_check(&with_c).await;
    assert_eq!(r.code, 1, "a drift verdict expected:\n{}", r.out);
    assert_ne!(r.json["verdict"], "unknown", "{}", r.json);
    let b = site(&r.json, "b");
    assert_eq!(b["rows"], 0, "{}", r.json);
    assert!(
        b["notes"]
            .to_string()
            .contains("does not exist here (no data)"),
        "{}",
        r.json
    );
    drop(cluster);
}
