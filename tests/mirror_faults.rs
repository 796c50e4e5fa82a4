//! The fault suite on an external Kafka-compatible broker (tansu), with real `lockstep`
//! processes: while a large mirror runs, workers are SIGKILLed three times, the coordinator is
//! restarted once and the target broker is restarted once. Afterwards the target must hold
//! exactly the source's records: none missing, none twice, in order, byte-identical.
//!
//! Both brokers keep their data in SQLite files, so the target survives its restart.
//! `LOCKSTEP_FAULT_RECORDS` changes the record count (default 500,000).

mod common;

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 8;

/// Records mirrored so far, from the coordinator's view of every partition's progress
/// (last mirrored source offset + 1, summed), or None while the coordinator is restarting.
async fn mirrored(cluster: &Cluster) -> Option<i64> {
    let mut client =
        lockstep_proto::admin_service_client::AdminServiceClient::connect(cluster.grpc.clone())
            .await
            .ok()?;
    let status = client
        .status(lockstep_proto::StatusRequest {})
        .await
        .ok()?
        .into_inner();
    let mut per_partition = std::collections::BTreeMap::new();
    for t in status.tasks {
        for p in t.progress.map(|p| p.partitions).unwrap_or_default() {
            per_partition.insert(p.partition, p.last_mirrored_source_offset + 1);
        }
    }
    Some(per_partition.values().sum())
}

fn produce(bootstrap: &str, n: usize, done: &AtomicUsize) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    for i in 0..n {
        let key = format!("k{i}");
        let value = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(60));
        let h = OwnedHeaders::new().insert(Header {
            key: "seq",
            value: Some(i.to_string().as_bytes()),
        });
        let mut rec = BaseRecord::to("events")
            .partition((i % PARTITIONS as usize) as i32)
            .key(&key)
            .payload(&value)
            .headers(h)
            .timestamp(1_764_000_000_000 + i as i64);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        done.store(i + 1, Ordering::Relaxed);
    }
    p.flush(Duration::from_secs(120)).expect("source flush");
}

/// (source offset header, key, value, seq header) of every record of a partition.
fn reader(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "verify")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer")
}

/// (source offset header, offset, key, value).
type Row = (Option<i64>, i64, Vec<u8>, Vec<u8>);

fn read_all(c: &BaseConsumer, p: i32) -> Vec<Row> {
    let (low, high) = c
        .fetch_watermarks("events", p, Duration::from_secs(10))
        .expect("watermarks");
    eprintln!("partition {p}: watermarks {low}..{high}");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("events", p, Offset::Offset(low))
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while (out.len() as i64) < high - low {
        assert!(
            Instant::now() < deadline,
            "reading partition {p} timed out at {} of {}",
            out.len(),
            high - low
        );
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let src = m
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "lockstep.src.offset")
                            .and_then(|h| h.value)
                    })
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
                out.push((
                    src,
                    m.offset(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_)))
                if (out.len() as i64) >= high - low =>
            {
                break
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => panic!("read {p}: {e}"),
            None => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "issue 3: passes at LOCKSTEP_FAULT_RECORDS=20000 (all five faults, zero missing, zero duplicates); at 100k the tansu 0.6 SQLite source broker stops answering metadata requests, so the 500k run is not yet proven; run with --ignored"]
async fn exactly_once_through_worker_kills_coordinator_and_broker_restarts() {
    let n: usize = std::env::var("LOCKSTEP_FAULT_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let logs = tempfile::tempdir().expect("tempdir");
    let source = Tansu::sqlite("tansu-source", logs.path());
    let mut target = Tansu::sqlite("tansu-target", logs.path());
    let (src, dst) = (source.bootstrap(), target.bootstrap());

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &src)
        .create()
        .expect("admin");
    let topic = NewTopic::new("events", PARTITIONS, TopicReplication::Fixed(1));
    let created = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let body = format!(
        r#"
[[sites]]
name = "a"
druid.router_url = "http://127.0.0.1:1"
kafka.bootstrap_servers = "{dst}"

[[sources]]
name = "up"
kind = "kafka"
kafka.bootstrap_servers = "{src}"

[[flows]]
name = "events"
kind = "kafka"
source = "up"
topics = ["events"]
tasks = 4
discovery_interval = "2s"
"#
    );
    let mut cluster = Cluster::start(&body, 3000, 500, 300);
    for w in ["w1", "w2", "w3"] {
        cluster.start_worker(w);
    }

    let produced = Arc::new(AtomicUsize::new(0));
    let (p2, s2) = (produced.clone(), src.clone());
    let producer = tokio::task::spawn_blocking(move || produce(&s2, n, &p2));

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
    loop {
        let mirrored = match mirrored(&cluster).await {
            Some(m) => {
                last = m;
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
                produced.load(Ordering::Relaxed)
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
    tokio::task::spawn_blocking(move || {
        let mut total = 0;
        let (sr, tr) = (reader(&s3), reader(&d3));
        for p in 0..PARTITIONS {
            let s = read_all(&sr, p);
            let t = read_all(&tr, p);
            let offsets: Vec<i64> = t.iter().map(|r| r.0.expect("every target record has a source offset")).collect();
            let expected: Vec<i64> = s.iter().map(|r| r.1).collect();
            if offsets != expected {
                let dups = offsets.len() as i64 - {
                    let mut u = offsets.clone();
                    u.dedup();
                    u.len() as i64
                };
                panic!("partition {p}: {} target records for {} source records ({dups} adjacent duplicates)", offsets.len(), expected.len());
            }
            for (a, b) in s.iter().zip(&t) {
                assert_eq!((&a.2, &a.3), (&b.2, &b.3), "partition {p} source offset {}: content", a.1);
            }
            total += t.len();
        }
        assert_eq!(total, n, "zero missing, zero duplicates");
        // Closing a consumer can wait on the broker's group coordinator; the process ends
        // with the test, so let the OS reclaim them.
        std::mem::forget(sr);
        std::mem::forget(tr);
    })
    .await
    .expect("verify");
}
