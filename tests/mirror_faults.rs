//! The fault suite on an external Kafka-compatible broker (tansu), with real `lockstep`
//! processes: while a 500,000-record mirror runs (the source still growing), workers are
//! SIGKILLed three times, the coordinator is restarted once and the target broker is
//! restarted once. Afterwards the target must hold exactly the source's records: none
//! missing, none twice, per partition in order, with the same key, value, timestamp and
//! headers. The workers' logs must name flow, site, task, topic and partition on every
//! partition event.
//!
//! Both brokers keep their data in SQLite files, so the target survives its restart (see
//! `Tansu::sqlite` for the index the harness adds to tansu's schema).
//! `LOCKSTEP_FAULT_RECORDS` changes the record count (default 500,000).

mod common;

use common::kafka::*;
use common::*;
use lockstep_workers::testkit::FlowToml;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_worker_kills_coordinator_and_broker_restarts() {
    let n: usize = std::env::var("LOCKSTEP_FAULT_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    // 40% of the records are in the source before the mirror starts; the rest arrive while it
    // runs, at most a quarter of all records ahead of it: the mirror follows a live source,
    // and the source broker's fetch cost, which grows with the distance to its end (tansu
    // reads every record up to the end for each fetch), stays bounded.
    let (preload, ahead) = (n * 2 / 5, n / 4);
    let logs = KeepOnPanic::new();
    let source = Tansu::sqlite("tansu-source", logs.path());
    let mut target = Tansu::sqlite("tansu-target", logs.path());
    let (src, dst) = (source.bootstrap(), target.bootstrap());

    create_topic(&src, "events", PARTITIONS).await;

    // tansu's SQLite engine serves one storage request at a time, so a request waits for
    // everything queued before it. With the mirror's default batches (10,000 records) and
    // librdkafka's 50 MB fetches, metadata requests waited seconds, past the mirror's 10 s
    // timeouts on a busy machine; 1,000-record batches and 1 MiB fetches keep them under
    // 0.2 s at the same throughput (measured with tansu alone).
    let body = FlowToml::new("events", &["events"], ("up", &src), ("a", &dst))
        .flow_lines("tasks = 4\ndiscovery_interval = \"2s\"")
        .site_property("batch.num.messages", "1000")
        .source_property("fetch.max.bytes", "1048576")
        .toml();
    // Part of the source is there before the mirror starts, the rest arrives while it runs.
    let delivery = Arc::new(Delivery {
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let loading = Instant::now();
    let (d2, s2) = (delivery.clone(), src.clone());
    tokio::task::spawn_blocking(move || produce(&s2, PARTITIONS, 0, preload, None, &d2))
        .await
        .expect("preload");
    println!(
        "[{:>6.1}s] source preloaded with {preload} records",
        loading.elapsed().as_secs_f64()
    );

    let mut cluster = Cluster::start(&body, 3000, 500, 300);
    let _worker_logs = logs.also_keep(cluster.dir.path());
    // JSON logs, so that the check of the log fields below reads them field by field.
    cluster
        .env
        .push(("LOCKSTEP_LOG_FORMAT".into(), "json".into()));
    for w in ["w1", "w2", "w3"] {
        cluster.start_worker(w);
    }
    let (d2, s2) = (delivery.clone(), src.clone());
    let pace = Arc::new(Pace {
        mirrored: AtomicUsize::new(0),
        stopped: false.into(),
    });
    let _stop_loader = StopOnDrop(pace.clone());
    let pace2 = pace.clone();
    let producer = tokio::task::spawn_blocking(move || {
        produce(&s2, PARTITIONS, preload, n, Some((&pace2, ahead)), &d2)
    });

    // Faults at fractions of the mirrored count, so they all hit a running mirror.
    let started = Instant::now();
    let faults = [
        "kill w1",
        "restart coordinator",
        "kill w2",
        "restart target broker",
        "kill w3",
    ];
    let mut next_fault = 0;
    let deadline = started + Duration::from_secs(1200);
    let mut last = 0;
    let mut last_line = Instant::now();
    loop {
        let mirrored = match mirrored(&cluster).await {
            Some(m) => {
                last = m;
                pace.mirrored.fetch_max(m as usize, Ordering::Relaxed);
                m
            }
            None => last,
        };
        if next_fault < faults.len()
            && mirrored as usize >= (next_fault + 1) * n / (faults.len() + 2)
        {
            let fault = faults[next_fault];
            println!(
                "[{:>6.1}s] {fault} at {mirrored} mirrored, {} produced",
                started.elapsed().as_secs_f64(),
                delivery.ok.load(Ordering::Relaxed)
            );
            match fault {
                "restart coordinator" => {
                    cluster.coordinator.as_mut().expect("coordinator").kill();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    cluster.start_coordinator();
                }
                "restart target broker" => target.restart(),
                kill => {
                    let id = kill.trim_start_matches("kill ");
                    cluster.workers.get_mut(id).expect("worker").kill();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    cluster.start_worker(id);
                }
            }
            next_fault += 1;
        }
        if last_line.elapsed() >= Duration::from_secs(15) {
            last_line = Instant::now();
            println!(
                "[{:>6.1}s] {mirrored} mirrored, {} in the source",
                started.elapsed().as_secs_f64(),
                delivery.ok.load(Ordering::Relaxed)
            );
        }
        if next_fault == faults.len() && producer.is_finished() && mirrored as usize >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mirror incomplete: {mirrored} of {n} after {:?}, faults done {next_fault}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    producer.await.expect("producer");
    println!(
        "mirrored {n} records through {} faults in {:?}",
        faults.len(),
        started.elapsed()
    );
    // A little longer: nothing more may arrive (a duplicate would show up as extra records).
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (s3, d3) = (src.clone(), dst.clone());
    let verifying = Instant::now();
    tokio::task::spawn_blocking(move || {
        let mut total = 0;
        let (sr, tr) = (reader(&s3), reader(&d3));
        for p in 0..PARTITIONS {
            // Both brokers at once: each serves its reads one at a time.
            let (source, target) = std::thread::scope(|s| {
                let source = s.spawn(|| read_all(&sr, p));
                let target = read_all(&tr, p);
                (source.join().expect("read the source"), target)
            });
            // Exactly once, in order: the target's source offsets are the source's offsets.
            let mirrored: Vec<Option<i64>> = target.iter().map(|r| r.source_offset).collect();
            let expected: Vec<Option<i64>> = source.iter().map(|r| Some(r.offset)).collect();
            if mirrored != expected {
                let mut seen = std::collections::BTreeSet::new();
                let duplicates = mirrored.iter().filter(|o| !seen.insert(**o)).count();
                let missing = expected.iter().filter(|o| !seen.contains(*o)).count();
                panic!(
                    "partition {p}: {} target records for {} source records: {missing} missing, {duplicates} duplicates, or out of order",
                    target.len(),
                    source.len()
                );
            }
            for (s, t) in source.iter().zip(&target) {
                assert_eq!(
                    (&s.key, &s.value, s.timestamp, &s.headers),
                    (&t.key, &t.value, t.timestamp, &t.headers),
                    "partition {p} source offset {}: key, value, timestamp and headers",
                    s.offset
                );
            }
            total += target.len();
        }
        assert_eq!(total, n, "zero missing, zero duplicates");
        // Closing a consumer can wait on the broker's group coordinator; the process ends
        // with the test, so let the OS reclaim them.
        std::mem::forget(sr);
        std::mem::forget(tr);
    })
    .await
    .expect("verify");
    println!(
        "verified {n} records (source = target per partition) in {:.1}s",
        verifying.elapsed().as_secs_f64()
    );
    check_worker_logs(cluster.dir.path());
}

/// Every event the mirror logged names its task (flow, site, task: the task span), and every
/// event about a partition names its topic and partition. Prints how often tasks failed.
fn check_worker_logs(dir: &std::path::Path) {
    let mut partition_events = 0;
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for w in ["w1", "w2", "w3"] {
        let text = std::fs::read_to_string(dir.join(format!("{w}.log"))).expect("worker log");
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let event: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{w}: {e}: {line}"));
            let target = event["target"].as_str().unwrap_or_default();
            if event["message"] == "task failed" {
                let error = event["error"].as_str().unwrap_or_default();
                let cause: String = error.chars().take(60).collect();
                *failures.entry(cause).or_default() += 1;
            }
            if !target.starts_with("lockstep_workers::kafka") {
                continue;
            }
            let span = &event["span"];
            for field in ["flow", "site", "task"] {
                assert!(span[field].is_string(), "{w}: no {field} in: {line}");
            }
            if !event["partition"].is_null() {
                assert!(event["topic"].is_string(), "{w}: no topic in: {line}");
                partition_events += 1;
            }
        }
    }
    assert!(
        partition_events > 0,
        "no mirror event about a partition in the worker logs"
    );
    println!("{partition_events} partition events carry flow, site, task, topic, partition; task failures by cause: {failures:?}");
}
