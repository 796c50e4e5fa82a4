//! Fast tests of the Kafka mirror task on librdkafka's in-process mock clusters: content
//! equality per partition, resume without duplicates, gaps, the oversize policies, fencing
//! mode, checkpoints past foreign tails, the duplicate audit and the no-resume-point rule.

use lockstep_workers::kafka::checkpoint::PROGRESS_TOPIC;
use lockstep_workers::kafka::headers;
use lockstep_workers::kafka::MirrorError;
use lockstep_workers::metrics::WorkerMetrics;
use lockstep_workers::testkit::{FlowToml, RunningTask};
use lockstep_workers::{Progress, TaskError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// One record as compared between source and target.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Option<i64>,
}

fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Produces `n` records round-robin over `partitions`; returns nothing, read back later.
fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    value_len: usize,
    start: usize,
) {
    let p = producer(bootstrap);
    let base_ts = 1_764_000_000_000i64;
    for i in start..start + n {
        let key = format!("key-{i}");
        let mut value = format!("value-{i}-").into_bytes();
        value.resize(value_len.max(value.len()), b'x');
        let hdrs = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some(format!("t{i}").as_bytes()),
            })
            .insert(Header {
                key: "empty",
                value: None::<&[u8]>,
            });
        let mut rec = BaseRecord::to(topic)
            .partition((i % partitions as usize) as i32)
            .payload(&value)
            .headers(hdrs)
            .timestamp(base_ts + i as i64);
        if i % 10 != 0 {
            rec = rec.key(&key); // every tenth record has no key
        }
        let mut rec = rec;
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Every record of a partition from `from` to the high watermark.
fn read_partition(bootstrap: &str, topic: &str, partition: i32) -> Vec<(i64, Rec)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "verify")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (low, high) = c
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks");
    let mut out = Vec::new();
    if high <= low {
        return out;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.offset(),
                    Rec {
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                        timestamp: m.timestamp().to_millis(),
                    },
                ));
                if m.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => panic!("read {topic}/{partition}: {e}"),
            None => {}
        }
    }
    out
}

/// Flow "f" of topic "events" from `source` into `site`, re-scanned every second, plus the
/// `[[flows]]` lines in `extra`.
fn flow(
    source: &str,
    site: &str,
    site_bootstrap: &str,
    source_bootstrap: &str,
    extra: &str,
) -> FlowToml {
    FlowToml::new(
        "f",
        &["events"],
        (source, source_bootstrap),
        (site, site_bootstrap),
    )
    .flow_lines("discovery_interval = \"1s\"")
    .flow_lines(extra)
}

/// Slot `index` of `count` of the flow, started.
fn start_task(flow: &FlowToml, index: u32, count: u32, metrics: &WorkerMetrics) -> RunningTask {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let spec = flow.task_spec(index, count).expect("config");
    RunningTask::start(spec, metrics).expect("create")
}

async fn wait_mirrored(tasks: &mut [&mut RunningTask], expected: u64, within: Duration) {
    let deadline = Instant::now() + within;
    let progress: Vec<Progress> = tasks.iter().map(|t| t.progress.clone()).collect();
    loop {
        for t in tasks.iter_mut() {
            if t.handle.is_finished() {
                let r = (&mut t.handle).await;
                panic!(
                    "task ended early: {r:?}; progress {:?}",
                    t.progress.snapshot()
                );
            }
        }
        let done: u64 = progress.iter().map(|p| p.snapshot().records).sum();
        if done >= expected {
            return;
        }
        let snaps: Vec<_> = progress.iter().map(|p| p.snapshot()).collect();
        assert!(
            Instant::now() < deadline,
            "mirrored {done} of {expected} in {within:?}: {snaps:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The target record must be the source record plus lockstep's headers.
fn assert_same(
    topic: &str,
    p: i32,
    source: &[(i64, Rec)],
    target: &[(i64, Rec)],
    source_name: &str,
) {
    assert_eq!(source.len(), target.len(), "{topic}/{p}: record count");
    for ((so, s), (_to, t)) in source.iter().zip(target) {
        assert_eq!(s.key, t.key, "{topic}/{p}@{so}: key");
        assert_eq!(s.value, t.value, "{topic}/{p}@{so}: value");
        assert_eq!(s.timestamp, t.timestamp, "{topic}/{p}@{so}: timestamp");
        let user: Vec<_> = t
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("lockstep."))
            .cloned()
            .collect();
        assert_eq!(s.headers, user, "{topic}/{p}@{so}: headers");
        let offset = t
            .headers
            .iter()
            .find(|(k, _)| k == headers::SRC_OFFSET)
            .and_then(|(_, v)| v.clone());
        assert_eq!(
            offset,
            Some(so.to_string().into_bytes()),
            "{topic}/{p}@{so}: source offset header"
        );
        let origin = t
            .headers
            .iter()
            .find(|(k, _)| k == headers::ORIGIN)
            .and_then(|(_, v)| v.clone());
        assert_eq!(
            origin,
            Some(source_name.as_bytes().to_vec()),
            "{topic}/{p}@{so}: origin header"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirrors_200k_records_over_8_partitions_to_two_sites() {
    let source = MockCluster::new(1).expect("mock");
    let site_a = MockCluster::new(1).expect("mock");
    let site_b = MockCluster::new(1).expect("mock");
    source.create_topic("events", 8, 1).expect("topic");
    // The mock cluster does not implement CreateTopics: targets exist up front here (topic
    // creation is covered on the external broker).
    for site in [&site_a, &site_b] {
        site.create_topic("events", 8, 1).expect("topic");
        site.create_topic(PROGRESS_TOPIC, 1, 1).expect("topic");
    }
    let src = source.bootstrap_servers();
    let (a, b) = (site_a.bootstrap_servers(), site_b.bootstrap_servers());
    let src2 = src.clone();
    tokio::task::spawn_blocking(move || produce(&src2, "events", 8, 200_000, 48, 0))
        .await
        .expect("produce");

    let metrics = WorkerMetrics::new();
    // Site a: one task owns all partitions. Site b: two slots share them.
    let mut ta = start_task(&flow("up", "a", &a, &src, ""), 0, 1, &metrics);
    let mut tb0 = start_task(&flow("up", "b", &b, &src, "tasks = 2"), 0, 2, &metrics);
    let mut tb1 = start_task(&flow("up", "b", &b, &src, "tasks = 2"), 1, 2, &metrics);
    let started = Instant::now();
    wait_mirrored(&mut [&mut ta], 200_000, Duration::from_secs(60)).await;
    wait_mirrored(&mut [&mut tb0, &mut tb1], 200_000, Duration::from_secs(60)).await;
    println!("mirrored 2 x 200k records in {:?}", started.elapsed());
    let pa = ta.progress.snapshot();
    assert_eq!(pa.partitions.len(), 8);
    assert!(pa
        .partitions
        .iter()
        .all(|p| p.last_mirrored_source_offset + 1 == p.source_high_watermark));
    assert_eq!(
        tb0.progress.snapshot().partitions.len() + tb1.progress.snapshot().partitions.len(),
        8
    );
    for r in [ta, tb0, tb1] {
        r.stop().await.expect("clean stop");
    }

    let (src3, a3, b3) = (src.clone(), a.clone(), b.clone());
    tokio::task::spawn_blocking(move || {
        for p in 0..8 {
            let s = read_partition(&src3, "events", p);
            assert_eq!(s.len(), 25_000);
            assert_same("a:events", p, &s, &read_partition(&a3, "events", p), "up");
            assert_same("b:events", p, &s, &read_partition(&b3, "events", p), "up");
        }
    })
    .await
    .expect("verify");
    let text = metrics.render();
    assert!(
        text.contains("lockstep_mirror_records_total{flow=\"f\",site=\"a\"} 200000"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resumes_after_the_last_mirrored_record_without_duplicates() {
    let source = MockCluster::new(1).expect("mock");
    let site = MockCluster::new(1).expect("mock");
    source.create_topic("events", 2, 1).expect("topic");
    site.create_topic("events", 2, 1).expect("topic");
    site.create_topic(PROGRESS_TOPIC, 1, 1).expect("topic");
    let (src, dst) = (source.bootstrap_servers(), site.bootstrap_servers());
    let s2 = src.clone();
    tokio::task::spawn_blocking(move || produce(&s2, "events", 2, 5_000, 32, 0))
        .await
        .expect("produce");
    let metrics = WorkerMetrics::new();
    let cfg = flow("up", "a", &dst, &src, "");
    let mut t = start_task(&cfg, 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], 5_000, Duration::from_secs(60)).await;
    t.stop().await.expect("stop");

    // More records arrive while no task runs; a new task resumes exactly where the last stopped.
    let s2 = src.clone();
    tokio::task::spawn_blocking(move || produce(&s2, "events", 2, 3_000, 32, 5_000))
        .await
        .expect("produce");
    let mut t = start_task(&cfg, 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], 3_000, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        t.progress.snapshot().records,
        3_000,
        "only the new records are mirrored"
    );
    t.stop().await.expect("stop");
    let (s3, d3) = (src.clone(), dst.clone());
    tokio::task::spawn_blocking(move || {
        for p in 0..2 {
            let s = read_partition(&s3, "events", p);
            assert_eq!(s.len(), 4_000);
            assert_same("events", p, &s, &read_partition(&d3, "events", p), "up");
        }
    })
    .await
    .expect("verify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_truncated_past_the_resume_point_is_a_gap() {
    let source = MockCluster::new(1).expect("mock");
    let site = MockCluster::new(1).expect("mock");
    source.create_topic("events", 1, 1).expect("topic");
    for t in ["events", "events.dlq", "__lockstep_progress"] {
        site.create_topic(t, 1, 1).expect("topic");
    }
    let (src, dst) = (source.bootstrap_servers(), site.bootstrap_servers());
    let s2 = src.clone();
    tokio::task::spawn_blocking(move || produce(&s2, "events", 1, 100, 32, 0))
        .await
        .expect("produce");
    let metrics = WorkerMetrics::new();
    let cfg = flow("up", "a", &dst, &src, "");
    let mut t = start_task(&cfg, 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], 100, Duration::from_secs(60)).await;
    t.stop().await.expect("stop");

    // 24 MiB more: the mock cluster prunes old segments (about 5 MiB kept per partition), so
    // the source's low watermark passes offset 100, where the mirror would resume.
    let s2 = src.clone();
    tokio::task::spawn_blocking(move || produce(&s2, "events", 1, 24_000, 1024, 100))
        .await
        .expect("produce");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &src)
        .create()
        .expect("consumer");
    let (low, high) = c
        .fetch_watermarks("events", 0, Duration::from_secs(10))
        .expect("watermarks");
    assert!(low > 100, "the mock cluster pruned the source (low {low})");

    let mut t = start_task(&cfg, 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], (high - low) as u64, Duration::from_secs(60)).await;
    let snap = t.progress.snapshot();
    assert_eq!(snap.partitions[0].gaps, (low - 100) as u64, "{snap:?}");
    assert!(
        snap.message.contains("gap: events/0 source offsets 100.."),
        "{}",
        snap.message
    );
    t.stop().await.expect("stop");
    let text = metrics.render();
    assert!(
        text.contains("lockstep_mirror_gaps_total{flow=\"f\",site=\"a\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "lockstep_mirror_gap_records_total{{flow=\"f\",site=\"a\"}} {}",
            low - 100
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_records_fail_the_task_or_go_to_the_dead_letter_topic() {
    let source = MockCluster::new(1).expect("mock");
    let site = MockCluster::new(1).expect("mock");
    source.create_topic("events", 1, 1).expect("topic");
    for t in ["events", "events.dlq", "__lockstep_progress"] {
        site.create_topic(t, 1, 1).expect("topic");
    }
    let (src, dst) = (source.bootstrap_servers(), site.bootstrap_servers());
    let s2 = src.clone();
    // 10 small records, then one of 64 KiB, then 10 small.
    tokio::task::spawn_blocking(move || {
        produce(&s2, "events", 1, 10, 32, 0);
        produce(&s2, "events", 1, 1, 64 * 1024, 10);
        produce(&s2, "events", 1, 10, 32, 11);
    })
    .await
    .expect("produce");
    let metrics = WorkerMetrics::new();

    let fail = start_task(
        &flow("up", "a", &dst, &src, "max_record_bytes = \"16KiB\""),
        0,
        1,
        &metrics,
    );
    let err = tokio::time::timeout(Duration::from_secs(30), fail.handle)
        .await
        .expect("the task stops by itself")
        .expect("no panic")
        .expect_err("on_oversize = fail stops the task");
    let msg = err.to_string();
    assert!(
        msg.contains("events/0@10") && msg.contains("on_oversize = \"fail\""),
        "{msg}"
    );
    assert_eq!(
        fail.progress.snapshot().records,
        10,
        "everything before the oversized record landed"
    );

    let mut dl = start_task(&flow("up", "a", &dst, &src, "max_record_bytes = \"16KiB\"\non_oversize = \"dead_letter\"\ndead_letter_topic = \"events.dlq\""), 0, 1, &metrics);
    wait_mirrored(&mut [&mut dl], 10, Duration::from_secs(30)).await;
    dl.stop().await.expect("stop");
    let d2 = dst.clone();
    let (dlq, target) = tokio::task::spawn_blocking(move || {
        (
            read_partition(&d2, "events.dlq", 0),
            read_partition(&d2, "events", 0),
        )
    })
    .await
    .expect("read");
    assert_eq!(dlq.len(), 1, "the oversized record is in the DLQ");
    assert_eq!(dlq[0].1.value.as_ref().map(Vec::len), Some(64 * 1024));
    assert!(dlq[0]
        .1
        .headers
        .iter()
        .any(|(k, _)| k == "lockstep.dlq.reason"));
    assert_eq!(target.len(), 20, "every other record is mirrored once");
    let text = metrics.render();
    assert!(
        text.contains("lockstep_mirror_dead_letter_records_total{flow=\"f\",site=\"a\"} 1"),
        "{text}"
    );
}

/// Produces `n` records on partition 0 whose `lockstep.origin` header is `origin`.
fn produce_with_origin(bootstrap: &str, topic: &str, n: usize, origin: &str, start: usize) {
    let p = producer(bootstrap);
    for i in start..start + n {
        let value = format!("looped-{i}");
        let hdrs = OwnedHeaders::new().insert(Header {
            key: headers::ORIGIN,
            value: Some(origin.as_bytes()),
        });
        p.send(
            BaseRecord::<(), _>::to(topic)
                .partition(0)
                .payload(&value)
                .headers(hdrs),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn skipped_loop(metrics: &WorkerMetrics) -> u64 {
    metrics
        .mirror_skipped
        .with_label_values(&["f", "a", "loop"])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_from_the_target_site_are_skipped_once_even_across_restarts() {
    let source = MockCluster::new(1).expect("mock");
    let site = MockCluster::new(1).expect("mock");
    source.create_topic("events", 1, 1).expect("topic");
    for t in ["events", "__lockstep_progress"] {
        site.create_topic(t, 1, 1).expect("topic");
    }
    let (src, dst) = (source.bootstrap_servers(), site.bootstrap_servers());
    // 20 ordinary records, then 30 that came from site "a" (active-active): mirroring those
    // back into "a" would loop. They sit at the tail, so the target's last mirrored offset
    // (19) alone would make a restart read them again.
    let s2 = src.clone();
    tokio::task::spawn_blocking(move || {
        produce(&s2, "events", 1, 20, 16, 0);
        produce_with_origin(&s2, "events", 30, "a", 20);
    })
    .await
    .expect("produce");
    let metrics = WorkerMetrics::new();
    let cfg = flow("up", "a", &dst, &src, "");

    let mut first = start_task(&cfg, 0, 1, &metrics);
    wait_mirrored(&mut [&mut first], 20, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while skipped_loop(&metrics) < 30 {
        assert!(Instant::now() < deadline, "loop records not skipped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.stop().await.expect("clean stop writes progress");
    assert_eq!(skipped_loop(&metrics), 30);

    // Restart: resumes after the skipped records (from __lockstep_progress), so they are not
    // processed again, and a new record goes through.
    let mut second = start_task(&cfg, 0, 1, &metrics);
    let s3 = src.clone();
    tokio::task::spawn_blocking(move || produce(&s3, "events", 1, 1, 16, 50))
        .await
        .expect("produce");
    wait_mirrored(&mut [&mut second], 1, Duration::from_secs(30)).await;
    second.stop().await.expect("stop");
    assert_eq!(
        skipped_loop(&metrics),
        30,
        "no skipped record is processed twice"
    );

    let (d2, s4) = (dst.clone(), src.clone());
    let (target, src_recs) = tokio::task::spawn_blocking(move || {
        (
            read_partition(&d2, "events", 0),
            read_partition(&s4, "events", 0),
        )
    })
    .await
    .expect("read");
    let expected: Vec<(i64, Rec)> = src_recs
        .into_iter()
        .filter(|(o, _)| *o < 20 || *o == 50)
        .collect();
    assert_same("events", 0, &expected, &target, "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactional_fencing_mirrors_every_record_once() {
    // The mock cluster commits transactions (it cannot prove fencing; see the brief): this
    // checks the transactional path's batching, commits and clean stop.
    let source = MockCluster::new(1).expect("mock");
    let site = MockCluster::new(1).expect("mock");
    source.create_topic("events", 4, 1).expect("topic");
    for (t, p) in [("events", 4), ("__lockstep_progress", 1)] {
        site.create_topic(t, p, 1).expect("topic");
    }
    let (src, dst) = (source.bootstrap_servers(), site.bootstrap_servers());
    let s2 = src.clone();
    tokio::task::spawn_blocking(move || produce(&s2, "events", 4, 20_000, 64, 0))
        .await
        .expect("produce");
    let metrics = WorkerMetrics::new();
    let cfg = flow("up", "a", &dst, &src, "fencing = \"transactions\"");
    let mut t = start_task(&cfg, 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], 20_000, Duration::from_secs(60)).await;
    // Asked for explicitly, transactions are used even where the broker does not fence.
    let snap = t.progress.snapshot();
    assert_eq!(snap.partitions.len(), 4);
    assert!(
        snap.partitions.iter().all(|p| p.fencing == "transactions"),
        "{snap:?}"
    );
    assert_eq!(fencing_info(&metrics, "transactions"), Some(1.0));
    assert_eq!(fencing_info(&metrics, "leases"), Some(0.0));
    t.stop().await.expect("clean stop commits");
    let (d2, s3) = (dst.clone(), src.clone());
    tokio::task::spawn_blocking(move || {
        for p in 0..4 {
            let s = read_partition(&s3, "events", p);
            let t = read_partition(&d2, "events", p);
            assert_same("events", p, &s, &t, "up");
        }
    })
    .await
    .expect("compare");
}

/// The value of the series `name{labels}` (exactly these labels) in the worker's metrics.
fn metric_value(metrics: &WorkerMetrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want = labels.to_vec();
    want.sort();
    metrics.render().lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let mut got: Vec<(&str, &str)> = rest
            .split(',')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        got.sort();
        (got == want).then(|| value.parse().ok()).flatten()
    })
}

/// `lockstep_mirror_fencing_info{flow="f",site="a",mode}`.
fn fencing_info(metrics: &WorkerMetrics, mode: &str) -> Option<f64> {
    metric_value(
        metrics,
        "lockstep_mirror_fencing_info",
        &[("flow", "f"), ("site", "a"), ("mode", mode)],
    )
}

/// Appends `n` tiny records of another origin (`lockstep.origin` = `origin`, no
/// `lockstep.src.*` headers) to partition 0, lz4-compressed in large batches: the mock keeps
/// about 5 MiB per partition, so many records must stay small on its log.
fn produce_foreign(bootstrap: &str, topic: &str, n: usize, origin: &str) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    for _ in 0..n {
        let mut rec = BaseRecord::<(), [u8]>::to(topic)
            .partition(0)
            .payload(b"f".as_slice())
            .headers(OwnedHeaders::new().insert(Header {
                key: headers::ORIGIN,
                value: Some(origin.as_bytes()),
            }));
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
}

/// Imitates a paused former owner waking up: writes to partition 0 of the target copies of the
/// given source records, with the headers the mirror gives them (source "up", their original
/// source offsets), in one flush.
fn write_late(bootstrap: &str, topic: &str, source: &[(i64, Rec)]) {
    let p = producer(bootstrap);
    for (offset, rec) in source {
        let mut own = OwnedHeaders::new();
        for (k, v) in &rec.headers {
            own = own.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let (hdrs, _) = headers::mirrored(Some(&own), "up", *offset);
        let mut r = BaseRecord::<'_, [u8], [u8]>::to(topic)
            .partition(0)
            .headers(hdrs);
        if let Some(k) = &rec.key {
            r = r.key(k.as_slice());
        }
        if let Some(v) = &rec.value {
            r = r.payload(v.as_slice());
        }
        if let Some(ts) = rec.timestamp {
            r = r.timestamp(ts);
        }
        p.send(r).map_err(|(e, _)| e).expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Partition `partition` of `topic` from `from` to its end: each record's offset and, when it
/// was mirrored from source "up", its source offset.
fn read_sources(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
) -> Vec<(i64, Option<i64>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "verify")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (low, high) = c
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks");
    let from = from.max(low);
    let mut out = Vec::new();
    if high <= from {
        return out;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "reading {topic}/{partition} {from}..{high}: stuck after {} records",
            out.len()
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.push((m.offset(), headers::source_offset(m.headers(), "up")));
                if m.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => panic!("read {topic}/{partition}: {e}"),
            None => {}
        }
    }
    out
}

/// The duplicates of a target partition by the audit's rule, computed here independently:
/// reading in offset order, a record from source "up" whose source offset is not above every
/// source offset read before it.
fn duplicates_by_rule(target: &[(i64, Option<i64>)]) -> BTreeSet<i64> {
    let mut max = -1;
    let mut dups = BTreeSet::new();
    for &(t, s) in target {
        if let Some(s) = s {
            if s > max {
                max = s;
            } else {
                dups.insert(t);
            }
        }
    }
    dups
}

/// Polls the task's progress until `done` holds (bounded by `within`); fails when the task
/// ends first.
async fn wait_progress(
    t: &mut RunningTask,
    what: &str,
    within: Duration,
    mut done: impl FnMut(&lockstep_proto::TaskProgress) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        if t.handle.is_finished() {
            let r = (&mut t.handle).await;
            panic!(
                "task ended early: {r:?}; progress {:?}",
                t.progress.snapshot()
            );
        }
        let snap = t.progress.snapshot();
        if done(&snap) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}: {snap:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_fencing_falls_back_to_leases_where_the_broker_does_not_fence() {
    let source = MockCluster::new(1).expect("mock");
    let site = MockCluster::new(1).expect("mock");
    source.create_topic("events", 2, 1).expect("topic");
    for (t, p) in [("events", 2), (PROGRESS_TOPIC, 1)] {
        site.create_topic(t, p, 1).expect("topic");
    }
    let (src, dst) = (source.bootstrap_servers(), site.bootstrap_servers());
    let s2 = src.clone();
    blocking(move || produce(&s2, "events", 2, 200, 16, 0))
        .await
        .expect("produce");
    let metrics = WorkerMetrics::new();
    // Default flow: fencing = "auto". The mock commits a fenced epoch's transaction, so the
    // probe finds no fencing and the task runs on leases.
    let mut t = start_task(&flow("up", "a", &dst, &src, ""), 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], 200, Duration::from_secs(60)).await;
    let snap = t.progress.snapshot();
    assert_eq!(snap.partitions.len(), 2, "{snap:?}");
    assert!(
        snap.partitions.iter().all(|p| p.fencing == "leases"),
        "{snap:?}"
    );
    assert_eq!(
        fencing_info(&metrics, "leases"),
        Some(1.0),
        "{}",
        metrics.render()
    );
    assert_eq!(fencing_info(&metrics, "transactions"), Some(0.0));
    t.stop().await.expect("stop");
    let (s3, d3) = (src.clone(), dst.clone());
    blocking(move || {
        for p in 0..2 {
            let s = read_partition(&s3, "events", p);
            assert_same("events", p, &s, &read_partition(&d3, "events", p), "up");
        }
    })
    .await
    .expect("verify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tail_of_100k_foreign_records_does_not_move_the_resume_point() {
    let source = MockCluster::new(1).expect("mock");
    let site = MockCluster::new(1).expect("mock");
    source.create_topic("events", 1, 1).expect("topic");
    for t in ["events", PROGRESS_TOPIC] {
        site.create_topic(t, 1, 1).expect("topic");
    }
    let (src, dst) = (source.bootstrap_servers(), site.bootstrap_servers());
    let s2 = src.clone();
    blocking(move || produce(&s2, "events", 1, 1_000, 16, 0))
        .await
        .expect("produce");
    let metrics = WorkerMetrics::new();
    let cfg = flow("up", "a", &dst, &src, "");
    let mut t = start_task(&cfg, 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], 1_000, Duration::from_secs(60)).await;
    // The periodic checkpoint (every 2 s while running) lands in the progress topic.
    let key = "f|a|up|events|0";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d2 = dst.clone();
        let values: Vec<String> = blocking(move || read_partition(&d2, PROGRESS_TOPIC, 0))
            .await
            .expect("read")
            .into_iter()
            .filter(|(_, r)| r.key.as_deref() == Some(key.as_bytes()))
            .filter_map(|(_, r)| String::from_utf8(r.value?).ok())
            .collect();
        if values.last().map(String::as_str) == Some("1000 1000") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint \"1000 1000\" for {key}: {values:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    t.stop().await.expect("stop");

    // Another site's flow appends 100k records to the same target partition; then 10 more
    // source records.
    let d2 = dst.clone();
    blocking(move || produce_foreign(&d2, "events", 100_000, "elsewhere"))
        .await
        .expect("foreign");
    let s2 = src.clone();
    blocking(move || produce(&s2, "events", 1, 10, 16, 1_000))
        .await
        .expect("produce");
    let mut t = start_task(&cfg, 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], 10, Duration::from_secs(120)).await;
    let progress = t.progress.clone();
    t.stop().await.expect("stop");
    // After the stop every delivery is counted: this run mirrored exactly the 10 new records.
    let snap = progress.snapshot();
    assert_eq!(snap.records, 10, "{snap:?}");
    assert_eq!(snap.partitions[0].duplicates, 0, "{snap:?}");

    let (s3, d3) = (src.clone(), dst.clone());
    let (target, source_recs, ours) = blocking(move || {
        let target = read_sources(&d3, "events", 0, 0);
        let ours: Vec<(i64, Rec)> = read_partition(&d3, "events", 0)
            .into_iter()
            .filter(|(_, r)| {
                r.headers.iter().any(|(k, v)| {
                    k == headers::SRC_CLUSTER && v.as_deref() == Some(b"up".as_slice())
                })
            })
            .collect();
        (target, read_partition(&s3, "events", 0), ours)
    })
    .await
    .expect("read");
    assert_eq!(target.len(), 1_000 + 100_000 + 10, "target records");
    let sources: Vec<i64> = target.iter().filter_map(|(_, s)| *s).collect();
    assert_eq!(
        sources,
        (0..1_010).collect::<Vec<i64>>(),
        "our records, in source order"
    );
    assert!(
        target[1_000..101_000].iter().all(|(_, s)| s.is_none()),
        "the foreign tail sits between the two runs"
    );
    assert_same("events", 0, &source_recs, &ours, "up");
}

/// Waits (bounded) until the task and the metric both report `expected` duplicates on
/// events/0; then checks the reported ranges against the target read independently.
async fn assert_duplicates_reported(
    t: &mut RunningTask,
    metrics: &WorkerMetrics,
    dst: &str,
    what: &str,
) -> BTreeSet<i64> {
    let d2 = dst.to_string();
    let target = blocking(move || read_sources(&d2, "events", 0, 0))
        .await
        .expect("read");
    let expected = duplicates_by_rule(&target);
    let n = expected.len() as u64;
    let metric = || {
        metric_value(
            metrics,
            "lockstep_mirror_duplicate_records_total",
            &[
                ("flow", "f"),
                ("site", "a"),
                ("topic", "events"),
                ("partition", "0"),
            ],
        )
    };
    wait_progress(t, what, Duration::from_secs(60), |s| {
        s.partitions[0].duplicates >= n && metric() >= Some(n as f64)
    })
    .await;
    let part = t.progress.snapshot().partitions[0].clone();
    assert_eq!(part.duplicates, n, "{what}: {part:?}");
    assert_eq!(metric(), Some(n as f64), "{what}: metric");
    let mut covered = BTreeSet::new();
    for r in &part.duplicate_ranges {
        assert_eq!(
            r.records as i64,
            r.target_to - r.target_from + 1,
            "{what}: {r:?}"
        );
        assert_eq!(
            r.source_to - r.source_from,
            r.target_to - r.target_from,
            "{what}: {r:?}"
        );
        covered.extend(r.target_from..=r.target_to);
    }
    assert_eq!(
        covered, expected,
        "{what}: ranges {:?}",
        part.duplicate_ranges
    );
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_writes_of_a_former_owner_are_reported_exactly() {
    let source = MockCluster::new(1).expect("mock");
    let site = MockCluster::new(1).expect("mock");
    source.create_topic("events", 1, 1).expect("topic");
    for t in ["events", PROGRESS_TOPIC] {
        site.create_topic(t, 1, 1).expect("topic");
    }
    let (src, dst) = (source.bootstrap_servers(), site.bootstrap_servers());
    let s2 = src.clone();
    blocking(move || produce(&s2, "events", 1, 1_000, 16, 0))
        .await
        .expect("produce");
    let metrics = WorkerMetrics::new();
    // Default fencing on the mock: leases, so the audit reads what others write.
    let mut t = start_task(&flow("up", "a", &dst, &src, ""), 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], 1_000, Duration::from_secs(60)).await;
    let s2 = src.clone();
    let src_recs = blocking(move || read_partition(&s2, "events", 0))
        .await
        .expect("read");
    let copies = |from: usize, to: usize| src_recs[from..=to].to_vec();

    // 1. Idle: a late batch (source 100..=199) while the task has nothing new to write.
    let (d2, late) = (dst.clone(), copies(100, 199));
    blocking(move || write_late(&d2, "events", &late))
        .await
        .expect("late");
    let dups = assert_duplicates_reported(&mut t, &metrics, &dst, "idle").await;
    assert_eq!(dups.len(), 100);

    // 2. A late batch (300..=349), then the task goes on writing new records after it.
    let (d2, late) = (dst.clone(), copies(300, 349));
    blocking(move || write_late(&d2, "events", &late))
        .await
        .expect("late");
    let s2 = src.clone();
    blocking(move || produce(&s2, "events", 1, 200, 16, 1_000))
        .await
        .expect("produce");
    wait_mirrored(&mut [&mut t], 1_200, Duration::from_secs(60)).await;
    let dups = assert_duplicates_reported(&mut t, &metrics, &dst, "followed by ours").await;
    assert_eq!(dups.len(), 150);

    // 3. Late batches (500..=549, 550..=599) while the task writes a steady stream, and
    // more of ours after the last one.
    let s2 = src.clone();
    let stream = blocking(move || {
        for k in 0..20 {
            produce(&s2, "events", 1, 25, 16, 1_200 + 25 * k);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let d2 = dst.clone();
    let (a, b) = (copies(500, 549), copies(550, 599));
    blocking(move || {
        std::thread::sleep(Duration::from_millis(100));
        write_late(&d2, "events", &a);
        std::thread::sleep(Duration::from_millis(50));
        write_late(&d2, "events", &b);
    })
    .await
    .expect("late");
    stream.await.expect("produce");
    let s2 = src.clone();
    blocking(move || produce(&s2, "events", 1, 10, 16, 1_700))
        .await
        .expect("produce");
    wait_mirrored(&mut [&mut t], 1_710, Duration::from_secs(60)).await;
    let dups = assert_duplicates_reported(&mut t, &metrics, &dst, "amid ours").await;
    assert_eq!(dups.len(), 250);

    // 4. Idle again, after all that.
    let (d2, late) = (dst.clone(), copies(0, 9));
    blocking(move || write_late(&d2, "events", &late))
        .await
        .expect("late");
    let dups = assert_duplicates_reported(&mut t, &metrics, &dst, "idle again").await;
    assert_eq!(dups.len(), 260);

    t.stop().await.expect("stop");
    // No source record is missing at the target.
    let d2 = dst.clone();
    let target = blocking(move || read_sources(&d2, "events", 0, 0))
        .await
        .expect("read");
    let mirrored: BTreeSet<i64> = target.iter().filter_map(|(_, s)| *s).collect();
    assert_eq!(mirrored, (0..1_710).collect::<BTreeSet<i64>>());
    assert_eq!(target.len(), 1_710 + 260);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_resume_point_stops_the_task_unless_told_to_start() {
    let source = MockCluster::new(1).expect("mock");
    let site = MockCluster::new(1).expect("mock");
    source.create_topic("events", 1, 1).expect("topic");
    for t in ["events", PROGRESS_TOPIC] {
        site.create_topic(t, 1, 1).expect("topic");
    }
    let (src, dst) = (source.bootstrap_servers(), site.bootstrap_servers());
    // More foreign records than the backward scan's budget (262,144), and no checkpoint.
    const FOREIGN: i64 = 300_000;
    let (s2, d2) = (src.clone(), dst.clone());
    blocking(move || {
        produce_foreign(&d2, "events", FOREIGN as usize, "elsewhere");
        produce(&s2, "events", 1, 50, 16, 0);
    })
    .await
    .expect("produce");
    let watermarks = |bootstrap: String| {
        blocking(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .expect("consumer");
            c.fetch_watermarks("events", 0, Duration::from_secs(10))
                .expect("watermarks")
        })
    };
    assert_eq!(
        watermarks(dst.clone()).await.expect("watermarks"),
        (0, FOREIGN),
        "the mock kept the whole partition (the scan cannot reach its start)"
    );
    let metrics = WorkerMetrics::new();

    let t = start_task(&flow("up", "a", &dst, &src, ""), 0, 1, &metrics);
    let err = tokio::time::timeout(Duration::from_secs(180), t.handle)
        .await
        .expect("the task stops by itself")
        .expect("no panic")
        .expect_err("no resume point stops the task");
    let text = err.to_string();
    assert!(
        matches!(&err, TaskError::Mirror(MirrorError::NoResumePoint { target_topic, partition: 0, .. }) if target_topic == "events"),
        "{err:?}"
    );
    assert!(
        text.contains("events/0") && text.contains("on_no_resume_point"),
        "{text}"
    );
    assert_eq!(
        watermarks(dst.clone()).await.expect("watermarks").1,
        FOREIGN,
        "nothing written"
    );

    // Told to start: the start policy (earliest) applies.
    let cfg = flow("up", "a", &dst, &src, "on_no_resume_point = \"start\"");
    let mut t = start_task(&cfg, 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], 50, Duration::from_secs(180)).await;
    let progress = t.progress.clone();
    t.stop().await.expect("stop");
    assert_eq!(progress.snapshot().records, 50);

    // Now a checkpoint exists: the default flow resumes from it.
    let s2 = src.clone();
    blocking(move || produce(&s2, "events", 1, 5, 16, 50))
        .await
        .expect("produce");
    let mut t = start_task(&flow("up", "a", &dst, &src, ""), 0, 1, &metrics);
    wait_mirrored(&mut [&mut t], 5, Duration::from_secs(60)).await;
    let progress = t.progress.clone();
    t.stop().await.expect("stop");
    assert_eq!(progress.snapshot().records, 5);

    let d2 = dst.clone();
    let tail = blocking(move || read_sources(&d2, "events", 0, FOREIGN))
        .await
        .expect("read");
    let ours: Vec<i64> = tail.iter().filter_map(|(_, s)| *s).collect();
    assert_eq!(tail.len(), 55);
    assert_eq!(ours, (0..55).collect::<Vec<i64>>());
}
