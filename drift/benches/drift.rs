//! Drift check at scale: 10 sites × 20 datasources × 720 hourly buckets, each site a Druid
//! emulator (sim/) ingesting from Kafka, checked by the real drift engine.
//!
//! ```text
//! cargo bench -p lockstep-drift --bench drift
//! DRIFT_BENCH_ROWS_PER_BUCKET=4 cargo bench -p lockstep-drift --bench drift
//! ```
//!
//! Without `--bench` in its arguments (as `cargo test --all-targets` runs it) it returns at
//! once. Set-up, not timed: one in-process mock Kafka cluster with 20 one-partition topics;
//! each gets `DRIFT_BENCH_ROWS_PER_BUCKET` (default 2) JSON rows in each of 720 hours, every
//! record carrying the mirror's `lockstep.src.offset` header (the site topics *are* the source
//! topics here, so the offset map is the identity and records behind is 0); 10 emulators each
//! run 20 supervisors and ingest everything.
//!
//! Timed: the drift engine runs in a child process of this bench (so that its peak RSS is the
//! engine's alone, read from `VmHWM` in /proc/self/status): a cold check with `COUNT(*)` (the
//! coarse `sys.segments` pass settles every interval), a warm repeat, and a check with
//! `SUM("count")`, where the coarse pass proves nothing and every site answers the fine
//! per-bucket SQL over the whole window (the worst case).

use lockstep_config::headers::{SRC_CLUSTER, SRC_OFFSET};
use lockstep_drift::{self as drift, DriftEngine, DriftMetrics, Overrides};
use lockstep_sim::{Emulator, EmulatorConfig};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use std::time::{Duration, Instant};

const SITES: usize = 10;
const DATASOURCES: usize = 20;
const HOURS: i64 = 720;
const HOUR: i64 = 3_600_000;

fn rows_per_bucket() -> i64 {
    std::env::var("DRIFT_BENCH_ROWS_PER_BUCKET")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    drift::poller::now_ms()
}

/// Child: load the config, run the engine, print figures.
fn child(config: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cfg = lockstep_config::load(config).expect("config");
        let engine = DriftEngine::new(&cfg, DriftMetrics::new()).expect("engine");
        let runs = [
            ("COUNT(*), cold", None),
            ("COUNT(*), warm", None),
            ("SUM(\"count\"), fine pass everywhere", Some("SUM(\"count\")")),
        ];
        for (name, count) in runs {
            let mut targets = drift::targets(&cfg, None, &Overrides::default());
            if let Some(c) = count {
                for t in &mut targets {
                    t.settings.count = lockstep_config::CountExpr::parse(c);
                }
            }
            let started = Instant::now();
            let report = engine.check_all(&targets, now_ms(), &|_| {}).await;
            let wall = started.elapsed();
            let rows: i64 = report
                .datasources
                .iter()
                .flat_map(|d| d.sites.iter().filter_map(|s| s.rows))
                .sum();
            let fine: usize = report.datasources.iter().map(|d| d.fine_ranges).sum();
            let agreed: usize = report.datasources.iter().map(|d| d.agreed_intervals).sum();
            println!(
                "  {name:<36} {:>8.2} s  verdict {:<8} rows {rows}, agreed intervals {agreed}, fine ranges {fine}, peak RSS so far {:.1} MiB",
                wall.as_secs_f64(),
                report.verdict.as_str(),
                vm_hwm_kib() as f64 / 1024.0
            );
            if report.verdict != drift::Verdict::InSync {
                let first = report
                    .datasources
                    .iter()
                    .find(|d| d.verdict != drift::Verdict::InSync);
                if let Some(d) = first {
                    println!("    {}: {}", d.datasource, d.reason);
                }
            }
        }
    });
}

fn produce(bootstrap: &str, per_bucket: i64, base: i64) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for d in 0..DATASOURCES {
        let topic = format!("ds{d}");
        let mut offset = 0i64;
        for h in 0..HOURS {
            for r in 0..per_bucket {
                let ts = base + h * HOUR + r * (HOUR / per_bucket);
                let value = serde_json::json!({
                    "timestamp": drift::druid::format_time(ts),
                    "user": format!("user-{}", r % 7),
                    "count": 1,
                })
                .to_string();
                let off = offset.to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: SRC_OFFSET,
                        value: Some(off.as_bytes()),
                    })
                    .insert(Header {
                        key: SRC_CLUSTER,
                        value: Some("up".as_bytes()),
                    });
                let mut rec = BaseRecord::<(), _>::to(&topic)
                    .partition(0)
                    .payload(&value)
                    .headers(headers);
                loop {
                    match p.send(rec) {
                        Ok(()) => break,
                        Err((_, back)) => {
                            rec = back;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                offset += 1;
            }
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
}

fn spec(ds: &str, bootstrap: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "kafka",
        "spec": {
            "dataSchema": {
                "dataSource": ds,
                "timestampSpec": { "column": "timestamp", "format": "iso" },
                "granularitySpec": { "segmentGranularity": "HOUR", "rollup": false }
            },
            "ioConfig": {
                "topic": ds,
                "inputFormat": { "type": "json" },
                "consumerProperties": { "bootstrap.servers": bootstrap },
                "useEarliestOffset": true
            }
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--drift-child") {
        child(args.get(i + 1).expect("config path"));
        return;
    }
    let per_bucket = rows_per_bucket();
    let per_ds = per_bucket * HOURS;
    println!(
        "drift bench: {SITES} sites x {DATASOURCES} datasources x {HOURS} hourly buckets, {per_bucket} rows per bucket ({} rows per site)",
        per_ds * DATASOURCES as i64
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let kafka: MockCluster<'static, _> = MockCluster::new(1).expect("mock cluster");
        let bootstrap = kafka.bootstrap_servers();
        for d in 0..DATASOURCES {
            kafka.create_topic(&format!("ds{d}"), 1, 1).expect("topic");
        }
        let base = now_ms().div_euclid(HOUR) * HOUR - (HOURS + 1) * HOUR;
        let started = Instant::now();
        {
            let b = bootstrap.clone();
            tokio::task::spawn_blocking(move || produce(&b, per_bucket, base))
                .await
                .expect("produce");
        }
        println!(
            "  set-up: produced {} records in {:.1} s",
            per_ds * DATASOURCES as i64,
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let mut emulators = Vec::new();
        for _ in 0..SITES {
            let supervisors = (0..DATASOURCES)
                .map(|d| spec(&format!("ds{d}"), &bootstrap))
                .collect();
            emulators.push(
                Emulator::start(EmulatorConfig {
                    supervisors,
                    ..EmulatorConfig::default()
                })
                .await
                .expect("emulator"),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let done = emulators.iter().all(|e| {
                (0..DATASOURCES).all(|d| e.row_count(&format!("ds{d}")) == per_ds as u64)
            });
            if done {
                break;
            }
            if Instant::now() > deadline {
                println!("  error: emulators did not ingest everything within 600 s");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "  set-up: {SITES} emulators ingested everything in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = String::new();
        for (i, e) in emulators.iter().enumerate() {
            text.push_str(&format!(
                "[[sites]]\nname = \"s{i}\"\ndruid.router_url = \"{}\"\ndruid.timeout = \"60s\"\nkafka.bootstrap_servers = \"{bootstrap}\"\n\n",
                e.url()
            ));
        }
        let names: Vec<String> = (0..DATASOURCES).map(|d| format!("\"ds{d}\"")).collect();
        text.push_str(&format!(
            "[[sources]]\nname = \"up\"\nkind = \"kafka\"\nkafka.bootstrap_servers = \"{bootstrap}\"\n\n\
             [[flows]]\nname = \"bench\"\nkind = \"kafka\"\nsource = \"up\"\ntopics = [{list}]\ndatasources = [{list}]\n\
             [flows.drift]\nwindow = \"{window}h\"\nsettle = \"5m\"\n",
            list = names.join(", "),
            window = HOURS + 2
        ));
        let config = dir.path().join("bench.toml");
        std::fs::write(&config, text).expect("config");
        let exe = std::env::current_exe().expect("current exe");
        let config_arg = config.display().to_string();
        let out = tokio::process::Command::new(exe)
            .args(["--bench", "--drift-child", &config_arg])
            .output()
            .await
            .expect("child");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            println!(
                "  error: the engine process failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        drop(emulators);
    });
}
