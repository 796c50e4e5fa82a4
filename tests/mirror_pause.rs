//! Exactly-once against a paused worker, on tansu broker processes with real `lockstep`
//! processes. A killed worker cannot write again; a paused one (SIGSTOP, a VM freeze) can, once
//! it wakes. tansu 0.6 has no transactions (its ApiVersions lack EndTxn), so `fencing = "auto"`
//! runs on leases here: the mirror must keep a paused owner's late writes small, report every
//! one of them exactly, and never resume behind the highest source offset it can find.
//!
//! - `pausing_the_busy_worker_five_times`: the worker holding the task is SIGSTOPped for three
//!   lease TTLs while the source is far ahead (full batches queued), then SIGCONTed; five times.
//!   Afterwards: no source record is missing at the target; the duplicates at the target (by
//!   the audit's rule: a record whose source offset is not above every one before it) are
//!   exactly the ones the coordinator's status reports; every resume point logged is one past
//!   the highest source offset the target held when the resume read it.
//! - `a_second_process_with_the_same_worker_id`: while w1 mirrors, another process joins as
//!   w1; neither gets the tasks until the first session's lease cannot be valid any more.
//!   Afterwards the target holds every source record exactly once.

mod common;

use common::kafka::*;
use common::*;
use lockstep_workers::testkit::FlowToml;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 2;
const LEASE_MS: u64 = 3_000;

struct Setup {
    logs: KeepOnPanic,
    source: Tansu,
    target: Tansu,
    cluster: Cluster,
    delivery: Arc<Delivery>,
}

async fn setup(preload: usize) -> Setup {
    let logs = KeepOnPanic::new();
    let source = Tansu::sqlite("tansu-source", logs.path());
    let target = Tansu::sqlite("tansu-target", logs.path());
    let (src, dst) = (source.bootstrap(), target.bootstrap());
    create_topic(&src, "events", PARTITIONS).await;
    // Small batches and fetches keep tansu answering in time (see tests/mirror_faults.rs).
    let body = FlowToml::new("events", &["events"], ("up", &src), ("a", &dst))
        .flow_lines("tasks = 1\ndiscovery_interval = \"2s\"")
        .site_property("batch.num.messages", "1000")
        .source_property("fetch.max.bytes", "1048576")
        .toml();
    let delivery = Arc::new(Delivery {
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let (d2, s2) = (delivery.clone(), src.clone());
    tokio::task::spawn_blocking(move || produce(&s2, PARTITIONS, 0, preload, None, &d2))
        .await
        .expect("preload");
    let mut cluster = Cluster::start(&body, LEASE_MS, 500, 300);
    cluster
        .env
        .push(("LOCKSTEP_LOG_FORMAT".into(), "json".into()));
    Setup {
        logs,
        source,
        target,
        cluster,
        delivery,
    }
}

/// Adds records `from..to` to the source.
async fn grow(s: &Setup, from: usize, to: usize) {
    let (d2, s2) = (s.delivery.clone(), s.source.bootstrap());
    tokio::task::spawn_blocking(move || produce(&s2, PARTITIONS, from, to, None, &d2))
        .await
        .expect("produce");
}

/// Waits (bounded) until the coordinator's status shows `n` records mirrored.
async fn wait_mirrored(cluster: &Cluster, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let m = mirrored(cluster).await.unwrap_or(0);
        if m as usize >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mirror incomplete: {m} of {n} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Who runs the task now (None while it moves).
async fn holder(cluster: &Cluster) -> Option<String> {
    cluster.assignment().await.values().next().cloned()
}

/// The duplicates the coordinator reports, per partition: target offsets.
async fn reported_duplicates(cluster: &Cluster) -> BTreeMap<i32, BTreeSet<i64>> {
    let status = cluster.status().await;
    let mut out: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for t in status.tasks {
        for p in t.progress.map(|p| p.partitions).unwrap_or_default() {
            let set = out.entry(p.partition).or_default();
            for r in &p.duplicate_ranges {
                set.extend(r.target_from..=r.target_to);
            }
        }
    }
    out
}

/// What the target holds, checked: nothing missing, in order once duplicates are set aside.
/// Returns the duplicates per partition (target offsets) by the audit's rule, and the rows.
async fn verify(s: &Setup) -> (BTreeMap<i32, BTreeSet<i64>>, BTreeMap<i32, Vec<Row>>) {
    let (src, dst) = (s.source.bootstrap(), s.target.bootstrap());
    tokio::task::spawn_blocking(move || {
        let (sr, tr) = (reader(&src), reader(&dst));
        let mut dups = BTreeMap::new();
        let mut rows = BTreeMap::new();
        for p in 0..PARTITIONS {
            let source = read_all(&sr, p);
            let target = read_all(&tr, p);
            let mut max = -1;
            let mut d = BTreeSet::new();
            let mut kept = Vec::new();
            for r in &target {
                let so = r.source_offset.expect("every target record is mirrored");
                if so <= max {
                    d.insert(r.offset);
                } else {
                    max = so;
                    kept.push(so);
                }
            }
            let expected: Vec<i64> = source.iter().map(|r| r.offset).collect();
            let present: BTreeSet<i64> = kept.iter().copied().collect();
            let missing: Vec<i64> = expected
                .iter()
                .filter(|o| !present.contains(o))
                .copied()
                .collect();
            assert!(
                missing.is_empty(),
                "partition {p}: {} source records missing at the target, first {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
            assert_eq!(
                kept, expected,
                "partition {p}: without its duplicates the target is the source, in order"
            );
            dups.insert(p, d);
            rows.insert(p, target);
        }
        std::mem::forget(sr);
        std::mem::forget(tr);
        (dups, rows)
    })
    .await
    .expect("verify")
}

/// Every "resume point" a worker logged is one past the highest source offset the target
/// partition held below the end the resume read to. Returns how many were checked.
fn check_resume_points(dir: &std::path::Path, workers: &[&str], rows: &BTreeMap<i32, Vec<Row>>) {
    let mut checked = 0;
    for w in workers {
        let Ok(text) = std::fs::read_to_string(dir.join(format!("{w}.log"))) else {
            continue;
        };
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if event["fields"]["message"] != "resume point" && event["message"] != "resume point" {
                continue;
            }
            let field = |k: &str| {
                event[k]
                    .as_i64()
                    .or_else(|| event["fields"][k].as_i64())
                    .unwrap_or_else(|| panic!("{w}: no {k} in {line}"))
            };
            let (p, resume, end) = (
                field("partition") as i32,
                field("resume"),
                field("target_end"),
            );
            let highest = rows[&p]
                .iter()
                .filter(|r| r.offset < end)
                .filter_map(|r| r.source_offset)
                .max()
                .unwrap_or(-1);
            assert_eq!(
                resume,
                highest + 1,
                "{w}: partition {p} resumed at {resume}, but the target held source offsets up to {highest} below offset {end}: {line}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no resume point logged");
    println!("{checked} resume points checked: each one past the highest source offset then at the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_the_busy_worker_five_times() {
    let mut s = setup(10_000).await;
    let _keep = s.logs.also_keep(s.cluster.dir.path());
    s.cluster.start_worker("w1");
    s.cluster.start_worker("w2");
    let mut produced = 10_000;
    wait_mirrored(&s.cluster, 2_000, Duration::from_secs(120)).await;
    let started = Instant::now();
    for round in 1..=5 {
        // The source jumps far ahead: the worker has full batches queued when it stops.
        grow(&s, produced, produced + 8_000).await;
        produced += 8_000;
        let victim = loop {
            if let Some(w) = holder(&s.cluster).await {
                break w;
            }
            assert!(started.elapsed() < Duration::from_secs(600), "no holder");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let before = mirrored(&s.cluster).await.unwrap_or(0);
        s.cluster.workers[&victim].signal("STOP");
        tokio::time::sleep(Duration::from_millis(3 * LEASE_MS)).await;
        let taken = holder(&s.cluster).await;
        s.cluster.workers[&victim].signal("CONT");
        println!(
            "[{:>6.1}s] round {round}: paused {victim} at {before} mirrored for {} ms; the task went to {taken:?}",
            started.elapsed().as_secs_f64(),
            3 * LEASE_MS
        );
        // Let the woken worker do whatever it still would, and the mirror move on.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    grow(&s, produced, produced + 2_000).await;
    produced += 2_000;
    wait_mirrored(&s.cluster, produced, Duration::from_secs(600)).await;
    // Nothing more may arrive, and the audit reads what late writers left (every 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (actual, rows) = verify(&s).await;
    let reported = reported_duplicates(&s.cluster).await;
    let total: usize = actual.values().map(BTreeSet::len).sum();
    println!(
        "{produced} source records; duplicates at the target by partition: {:?}",
        actual.iter().map(|(p, d)| (p, d.len())).collect::<Vec<_>>()
    );
    for p in 0..PARTITIONS {
        let want = actual.get(&p).cloned().unwrap_or_default();
        let got = reported.get(&p).cloned().unwrap_or_default();
        assert_eq!(
            got, want,
            "partition {p}: the duplicates reported (target offsets) must be exactly those at the target ({total} in all)"
        );
    }
    check_resume_points(s.cluster.dir.path(), &["w1", "w2"], &rows);
    let status = s.cluster.status().await;
    for t in &status.tasks {
        for p in t.progress.iter().flat_map(|p| &p.partitions) {
            if !p.fencing.is_empty() {
                assert_eq!(p.fencing, "leases", "tansu 0.6 has no transactions");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_worker_id() {
    let mut s = setup(6_000).await;
    let _keep = s.logs.also_keep(s.cluster.dir.path());
    s.cluster.start_worker("w1");
    wait_mirrored(&s.cluster, 1_000, Duration::from_secs(120)).await;
    // The source keeps growing while two processes claim to be w1.
    let (d2, s2) = (s.delivery.clone(), s.source.bootstrap());
    let grower =
        tokio::task::spawn_blocking(move || produce(&s2, PARTITIONS, 6_000, 12_000, None, &d2));
    let grpc = s.cluster.grpc.clone();
    let twin = Proc::spawn_cmd(
        "w1-twin",
        BIN,
        &["worker", "--coordinator", &grpc, "--id", "w1"],
        &[("RUST_LOG", "info"), ("LOCKSTEP_LOG_FORMAT", "json")],
        s.cluster.dir.path(),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    drop(twin);
    grower.await.expect("grow");
    wait_mirrored(&s.cluster, 12_000, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (actual, rows) = verify(&s).await;
    for (p, d) in &actual {
        assert!(
            d.is_empty(),
            "partition {p}: {} duplicates, first target offsets {:?}",
            d.len(),
            d.iter().take(10).collect::<Vec<_>>()
        );
    }
    check_resume_points(s.cluster.dir.path(), &["w1", "w1-twin"], &rows);
}

/// Log lines of this test process (the mirror tasks run in-process here).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// tansu 0.6 never ends the fencing probe's transaction (no EndTxn), so every task start
/// leaves one open in the target. A restarted task must still find its checkpoint: a
/// read_committed reader would see the progress topic end at the oldest open probe, find no
/// checkpoint, and read its whole target partitions backwards (minutes per restart in the
/// fault suite). Two tasks; the second keeps its probe open while the first restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_task_resumes_from_its_checkpoint_while_another_probe_is_open() {
    use lockstep_workers::testkit::RunningTask;
    let captured = Captured::default();
    let writer = captured.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("lockstep_workers=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    let logs = KeepOnPanic::new();
    let source = Tansu::sqlite("tansu-source", logs.path());
    let target = Tansu::sqlite("tansu-target", logs.path());
    let (src, dst) = (source.bootstrap(), target.bootstrap());
    create_topic(&src, "events", 2).await;
    let delivery = Arc::new(Delivery {
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let (s2, d2) = (src.clone(), delivery.clone());
    tokio::task::spawn_blocking(move || produce(&s2, 2, 0, 3000, None, &d2))
        .await
        .expect("preload");
    let flow =
        FlowToml::new("events", &["events"], ("up", &src), ("a", &dst)).flow_lines("tasks = 2");
    let metrics = lockstep_workers::metrics::WorkerMetrics::new();
    let start = |i| RunningTask::start(flow.task_spec(i, 2).expect("spec"), &metrics);
    let t0 = start(0).expect("task 0");
    let t1 = start(1).expect("task 1");
    // Both mirror their partition (1,500 records each) and write checkpoints (every 2 s).
    let lines = || {
        String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|p| p.into_inner())).to_string()
    };
    wait_until(Duration::from_secs(60), "both tasks started", || {
        lines().matches("resume point").count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    t0.stop().await.expect("task 0 stops cleanly");
    let before = lines().len();
    let t0 = start(0).expect("task 0 again");
    wait_until(Duration::from_secs(60), "task 0 resumed", || {
        lines()[before..].contains("resume point")
    })
    .await;
    t0.stop().await.expect("task 0 stops");
    t1.stop().await.expect("task 1 stops");
    let restart = lines()[before..].to_string();
    assert!(
        restart.contains("read the target from the checkpoint"),
        "the restarted task did not use its checkpoint:\n{restart}"
    );
    assert!(
        restart.contains("scanned=0"),
        "the restarted task read its partition again:\n{restart}"
    );
}
