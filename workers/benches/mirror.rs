//! Throughput of the Kafka mirror task against plain baselines, all on one in-process
//! rdkafka mock cluster (librdkafka's `MockCluster`, one broker).
//!
//! ```text
//! cargo bench -p lockstep-workers --bench mirror
//! MIRROR_BENCH_RECORDS=16000 cargo bench -p lockstep-workers --bench mirror
//! ```
//!
//! Without `--bench` (as `cargo test --all-targets` runs it, in debug mode) it is a smoke
//! run of 400 records through every phase; its figures mean nothing.
//!
//! `MIRROR_BENCH_RECORDS` sets N, the number of records (default 32,000). Each record has a
//! 16-byte key, a 1 KiB ASCII value and two headers; they are spread round-robin over the 8
//! partitions of `bench-src`. The mock cluster prunes old data at about 5 MiB per partition,
//! so keep N at most about 8 x 4,000: the bench checks that the source's low watermarks are
//! still 0 before each phase and says so when they are not.
//!
//! Phases, each limited to 120 s (a phase that runs out prints an error and the bench goes on):
//! 1. produce N records to `bench-src` (rate shown as context);
//! 2. consume-only: a plain `BaseConsumer` assigned to the 8 partitions from offset 0, reading
//!    until it has N records;
//! 3. lockstep mirror: the real mirror task (one slot owning all 8 partitions) from `bench-src`
//!    to `bench-dst` on the same broker, until N records are delivered. Timing comes from the
//!    task's delivery counter (`lockstep_mirror_records_total`, updated in delivery reports),
//!    so it is not limited by the task's 500 ms progress reports. Shown: the rate from task
//!    start, the time to the first delivered record (start-up: metadata, tail reads,
//!    DescribeConfigs, which the mock does not answer), and a steady-state rate from the first
//!    delivered record to the N-th;
//! 4. naive loop: `BaseConsumer` poll -> `ThreadedProducer` send to the same partition of
//!    `bench-naive` (key, value, timestamp and the source headers copied, nothing added, no
//!    idempotence, librdkafka defaults), flushed at the end;
//! 5. kcat pipe: `kcat -C ... | kcat -P ...` into `bench-kcat` (keys and values only, kcat
//!    picks partitions), skipped when `kcat` is not on PATH.
//!
//! MB/s counts key + value bytes, with MB = 2^20 bytes.

use lockstep_workers::metrics::WorkerMetrics;
use lockstep_workers::testkit::{FlowToml, RunningTask};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 8;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 1024;
const RECORD_BYTES: f64 = (KEY_LEN + VALUE_LEN) as f64;
const DEFAULT_RECORDS: usize = 32_000;
/// Records in the smoke run (without `--bench`).
const SMOKE_RECORDS: usize = 400;
const PHASE_LIMIT: Duration = Duration::from_secs(120);
const SRC: &str = "bench-src";
const DST: &str = "bench-dst";
const NAIVE: &str = "bench-naive";
const KCAT: &str = "bench-kcat";
const FLOW: &str = "f";
const SITE: &str = "dst";
const SOURCE: &str = "src";

/// What one measured phase found.
struct Measured {
    records: usize,
    elapsed: Duration,
    /// Time from the phase's start to its first record.
    first: Option<Duration>,
    /// Rate from the first record to the last, when the phase tracks it.
    steady: Option<f64>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn mb(rate: f64) -> f64 {
    rate * RECORD_BYTES / (1024.0 * 1024.0)
}

fn line(m: &Measured) -> String {
    format!("{:>9.0} rec/s {:>7.1} MB/s", m.rate(), mb(m.rate()))
}

fn records_from_env() -> usize {
    match std::env::var("MIRROR_BENCH_RECORDS") {
        Ok(v) => {
            match v.trim().replace('_', "").parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!("MIRROR_BENCH_RECORDS={v:?} is not a positive number; using {DEFAULT_RECORDS}");
                    DEFAULT_RECORDS
                }
            }
        }
        Err(_) => DEFAULT_RECORDS,
    }
}

fn key_of(i: usize) -> String {
    format!("key-{i:012}") // 16 bytes
}

/// 1 KiB of printable ASCII without tab or newline (kcat's separators).
fn value_of(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    let mut c = b'a' + (i % 26) as u8;
    while v.len() < VALUE_LEN {
        v.push(c);
        c = if c == b'z' { b'a' } else { c + 1 };
    }
    v.truncate(VALUE_LEN);
    v
}

fn consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("consumer: {e}"))
}

fn assign_all_from_zero(c: &BaseConsumer, topic: &str) -> Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .map_err(|e| format!("partition list: {e}"))?;
    }
    c.assign(&tpl).map_err(|e| format!("assign {topic}: {e}"))
}

/// (low, high) watermarks of each partition of `topic`.
fn watermarks(bootstrap: &str, topic: &str) -> Result<Vec<(i64, i64)>, String> {
    let c = consumer(bootstrap, "bench-watermarks")?;
    (0..PARTITIONS)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))
        })
        .collect()
}

/// Records held by `topic` (high - low summed) and whether any low watermark moved off 0.
fn count(bootstrap: &str, topic: &str) -> Result<(i64, bool), String> {
    let w = watermarks(bootstrap, topic)?;
    Ok((
        w.iter().map(|(l, h)| h - l).sum(),
        w.iter().any(|(l, _)| *l > 0),
    ))
}

/// Says whether the source still holds every record from offset 0.
fn check_source(bootstrap: &str, before: &str) {
    match watermarks(bootstrap, SRC) {
        Ok(w) if w.iter().all(|(l, _)| *l == 0) => {}
        Ok(w) => println!(
            "  WARNING before {before}: {SRC} low watermarks are not all 0 (the mock pruned data; lower MIRROR_BENCH_RECORDS): {w:?}"
        ),
        Err(e) => println!("  WARNING before {before}: {e}"),
    }
}

fn send_retrying<'a>(
    p: &ThreadedProducer<DefaultProducerContext>,
    mut rec: BaseRecord<'a, str, [u8]>,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                if Instant::now() > deadline {
                    return Err("producer queue stayed full past the phase limit".into());
                }
                rec = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(format!("produce: {e}")),
        }
    }
}

/// Phase 1: N records round-robin over the partitions of `bench-src`.
fn produce(bootstrap: &str, n: usize) -> Result<Measured, String> {
    let started = Instant::now();
    let deadline = started + PHASE_LIMIT;
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    for i in 0..n {
        let key = key_of(i);
        let value = value_of(i);
        let trace = format!("t{i}");
        let hdrs = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some(trace.as_bytes()),
            })
            .insert(Header {
                key: "producer",
                value: Some(b"bench".as_slice()),
            });
        let rec = BaseRecord::to(SRC)
            .partition((i % PARTITIONS as usize) as i32)
            .key(key.as_str())
            .payload(value.as_slice())
            .headers(hdrs);
        send_retrying(&p, rec, deadline)?;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    p.flush(left).map_err(|e| format!("flush: {e}"))?;
    Ok(Measured {
        records: n,
        elapsed: started.elapsed(),
        first: None,
        steady: None,
    })
}

/// Phase 2: read N records with a plain consumer.
fn consume_only(bootstrap: &str, n: usize) -> Result<Measured, String> {
    let started = Instant::now();
    let deadline = started + PHASE_LIMIT;
    let c = consumer(bootstrap, "bench-consume-only")?;
    assign_all_from_zero(&c, SRC)?;
    let mut got = 0usize;
    let mut first = None;
    let mut last_error = None;
    while got < n {
        if Instant::now() > deadline {
            return Err(format!(
                "read {got} of {n} records in {PHASE_LIMIT:?} (last error: {last_error:?})"
            ));
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                // Touch the data, as any real consumer would.
                std::hint::black_box((m.key().map(<[u8]>::len), m.payload_len()));
                first.get_or_insert_with(|| started.elapsed());
                got += 1;
            }
            Some(Err(e)) => last_error = Some(e.to_string()),
            None => {}
        }
    }
    Ok(Measured {
        records: got,
        elapsed: started.elapsed(),
        first,
        steady: None,
    })
}

/// Phase 3: the real mirror task, one slot owning all partitions.
async fn mirror(bootstrap: &str, n: usize) -> Result<Measured, String> {
    let spec = FlowToml::new(FLOW, &[SRC], (SOURCE, bootstrap), (SITE, bootstrap))
        .flow_lines(&format!("target_topic = {DST:?}"))
        .task_spec(0, 1)?;
    let metrics = WorkerMetrics::new();
    let delivered = metrics.mirror_records.with_label_values(&[FLOW, SITE]);
    let started = Instant::now();
    let deadline = started + PHASE_LIMIT;
    let RunningTask {
        cancel,
        progress,
        mut handle,
    } = RunningTask::start(spec, &metrics).map_err(|e| format!("create task: {e}"))?;
    let n64 = n as u64;
    // (time, delivered count) when the first delivery was seen, and when N were.
    let mut first: Option<(Duration, u64)> = None;
    let mut all: Option<Duration> = None;
    // When the delivered count first reached 10%, 25%, 50%, 75% of N (a coarse timeline).
    let marks = [10u64, 25, 50, 75];
    let mut reached: Vec<Option<Duration>> = vec![None; marks.len()];
    let mut outcome = Ok(());
    loop {
        let now = delivered.get();
        if now > 0 && first.is_none() {
            first = Some((started.elapsed(), now));
        }
        for (m, r) in marks.iter().zip(reached.iter_mut()) {
            if r.is_none() && now * 100 >= m * n64 {
                *r = Some(started.elapsed());
            }
        }
        if now >= n64 && all.is_none() {
            all = Some(started.elapsed());
        }
        // The task's own progress report (every 500 ms) is the stop condition.
        if progress.snapshot().records >= n64 {
            break;
        }
        if handle.is_finished() {
            let r = (&mut handle).await;
            return Err(format!(
                "task ended early: {r:?}; progress {:?}",
                progress.snapshot()
            ));
        }
        if Instant::now() > deadline {
            outcome = Err(format!(
                "mirrored {} of {n} in {PHASE_LIMIT:?}; progress {:?}",
                delivered.get(),
                progress.snapshot()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let progress_done = started.elapsed();
    cancel.cancel();
    match tokio::time::timeout(Duration::from_secs(30), &mut handle).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => println!("  mirror task stopped with an error: {e}"),
        Ok(Err(e)) => println!("  mirror task panicked: {e}"),
        Err(_) => {
            handle.abort();
            println!("  mirror task did not stop within 30 s of cancellation");
        }
    }
    outcome?;
    let all = all.unwrap_or(progress_done);
    println!(
        "  (progress.records reached {n} after {:.2} s; the delivery counter after {:.2} s)",
        progress_done.as_secs_f64(),
        all.as_secs_f64()
    );
    if let Some((t, c)) = first {
        let timeline: Vec<String> = marks
            .iter()
            .zip(&reached)
            .filter_map(|(m, r)| r.map(|r| format!("{m}% {:.2} s", r.as_secs_f64())))
            .collect();
        println!(
            "  (first delivery seen after {:.3} s with {c} records delivered; {}; 100% {:.2} s)",
            t.as_secs_f64(),
            timeline.join(", "),
            all.as_secs_f64()
        );
    }
    let steady = first.and_then(|(t, c)| {
        let span = all.saturating_sub(t).as_secs_f64();
        (span > 0.0 && n64 > c).then(|| (n64 - c) as f64 / span)
    });
    Ok(Measured {
        records: n,
        elapsed: all,
        first: first.map(|(t, _)| t),
        steady,
    })
}

/// Phase 4: poll, send to the same partition of `bench-naive`, flush at the end.
fn naive(bootstrap: &str, n: usize) -> Result<Measured, String> {
    let started = Instant::now();
    let deadline = started + PHASE_LIMIT;
    let c = consumer(bootstrap, "bench-naive")?;
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "false")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    assign_all_from_zero(&c, SRC)?;
    let mut got = 0usize;
    let mut first = None;
    let mut last_error = None;
    while got < n {
        if Instant::now() > deadline {
            return Err(format!(
                "copied {got} of {n} records in {PHASE_LIMIT:?} (last error: {last_error:?})"
            ));
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(|| started.elapsed());
                let mut rec: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(NAIVE).partition(m.partition());
                if let Some(k) = m.key() {
                    rec = rec.key(k);
                }
                if let Some(v) = m.payload() {
                    rec = rec.payload(v);
                }
                if let Some(ts) = m.timestamp().to_millis() {
                    rec = rec.timestamp(ts);
                }
                if let Some(h) = m.headers() {
                    rec = rec.headers(h.detach());
                }
                loop {
                    match p.send(rec) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            if Instant::now() > deadline {
                                return Err("producer queue stayed full past the limit".into());
                            }
                            rec = back;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err((e, _)) => return Err(format!("produce: {e}")),
                    }
                }
                got += 1;
            }
            Some(Err(e)) => last_error = Some(e.to_string()),
            None => {}
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    p.flush(left).map_err(|e| format!("flush: {e}"))?;
    Ok(Measured {
        records: got,
        elapsed: started.elapsed(),
        first,
        steady: None,
    })
}

fn kcat_installed() -> bool {
    Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Phase 5: `kcat -C | kcat -P`, timed as a whole; the count is checked afterwards.
fn kcat_pipe(bootstrap: &str, n: usize) -> Result<Measured, String> {
    use std::os::unix::process::CommandExt;
    // -C: all partitions from the beginning, exit at the end (-e), key TAB value per line.
    // -P: one record per line, key before the first TAB (-K). Values hold neither.
    let script = format!(
        "kcat -C -b {bootstrap} -t {SRC} -o beginning -e -q -f '%k\\t%s\\n' \
         | kcat -P -b {bootstrap} -t {KCAT} -K '\\t'"
    );
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("spawn sh: {e}"))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for the kcat pipe: {e}")),
        }
        if started.elapsed() > PHASE_LIMIT {
            // The pipe's own process group: sh and both kcats.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg("--")
                .arg(format!("-{}", child.id()))
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the kcat pipe ran past {PHASE_LIMIT:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    if !status.success() {
        return Err(format!("`{script}` failed ({status}): {}", stderr.trim()));
    }
    let (landed, pruned) = count(bootstrap, KCAT)?;
    if pruned {
        println!("  note: {KCAT} low watermarks moved off 0 (mock pruning); counting high - low");
    }
    if landed != n as i64 {
        return Err(format!(
            "{KCAT} holds {landed} records, expected {n}; stderr: {}",
            stderr.trim()
        ));
    }
    Ok(Measured {
        records: n,
        elapsed,
        first: None,
        steady: None,
    })
}

fn report(name: &str, r: &Result<Measured, String>) {
    match r {
        Ok(m) => {
            let mut s = format!(
                "{name}: {} records in {:.2} s: {}",
                m.records,
                m.elapsed.as_secs_f64(),
                line(m)
            );
            if let Some(f) = m.first {
                s += &format!("; first record after {:.3} s", f.as_secs_f64());
            }
            if let Some(st) = m.steady {
                s += &format!("; steady state {st:.0} rec/s {:.1} MB/s", mb(st));
            }
            println!("{s}");
        }
        Err(e) => println!("{name}: ERROR: {e}"),
    }
}

fn verify_target(bootstrap: &str, topic: &str, n: usize) {
    match count(bootstrap, topic) {
        Ok((landed, pruned)) => {
            if landed != n as i64 || pruned {
                println!(
                    "  note: {topic} holds {landed} records (expected {n}){}",
                    if pruned {
                        "; low watermarks moved off 0 (mock pruning)"
                    } else {
                        ""
                    }
                );
            }
        }
        Err(e) => println!("  note: could not count {topic}: {e}"),
    }
}

fn ratio(a: &Result<Measured, String>, b: &Result<Measured, String>) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) => format!("{:.2}", a.rate() / b.rate()),
        _ => "n/a".into(),
    }
}

fn steady_ratio(a: &Result<Measured, String>, b: &Result<Measured, String>) -> String {
    match (a, b) {
        (
            Ok(Measured {
                steady: Some(s), ..
            }),
            Ok(b),
        ) => format!("{:.2}", s / b.rate()),
        _ => "n/a".into(),
    }
}

fn summary_line(name: &str, r: &Result<Measured, String>) -> String {
    match r {
        Ok(m) => format!("  {name:<16} {}", line(m)),
        Err(_) => format!("  {name:<16} failed (see above)"),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it, in
    // debug mode, as a smoke test: a few records through every phase, figures meaningless.
    let bench = std::env::args().any(|a| a == "--bench");
    let n = if bench {
        records_from_env()
    } else {
        SMOKE_RECORDS
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let cluster = MockCluster::new(1).expect("rdkafka mock cluster");
    for t in [SRC, DST, NAIVE, KCAT] {
        cluster
            .create_topic(t, PARTITIONS, 1)
            .unwrap_or_else(|e| panic!("mock cluster: create topic {t}: {e}"));
    }
    // The mock has no CreateTopics: the mirror's checkpoint topic exists up front.
    {
        let t = lockstep_workers::kafka::checkpoint::PROGRESS_TOPIC;
        cluster
            .create_topic(t, 1, 1)
            .unwrap_or_else(|e| panic!("mock cluster: create topic {t}: {e}"));
    }
    let bootstrap = cluster.bootstrap_servers();
    println!(
        "mirror bench: {n} records x 1 KiB ({} bytes key+value), {PARTITIONS} partitions, mock cluster at {bootstrap}",
        KEY_LEN + VALUE_LEN
    );
    if !bench {
        println!("  smoke run (no --bench): the figures below mean nothing");
    }
    if n > PARTITIONS as usize * 4_000 {
        println!("  WARNING: more than 4,000 records per partition; the mock may prune the source");
    }

    let produced = produce(&bootstrap, n);
    report("produce", &produced);
    if produced.is_err() {
        println!("nothing to measure without the source records");
        return;
    }

    check_source(&bootstrap, "consume-only");
    let consumed = consume_only(&bootstrap, n);
    report("consume-only", &consumed);

    check_source(&bootstrap, "lockstep mirror");
    let mirrored = rt.block_on(mirror(&bootstrap, n));
    report("lockstep mirror", &mirrored);
    verify_target(&bootstrap, DST, n);

    check_source(&bootstrap, "naive loop");
    let naived = naive(&bootstrap, n);
    report("naive loop", &naived);
    verify_target(&bootstrap, NAIVE, n);

    let kcat = if kcat_installed() {
        check_source(&bootstrap, "kcat pipe");
        let r = kcat_pipe(&bootstrap, n);
        report("kcat pipe", &r);
        Some(r)
    } else {
        println!("kcat: not installed, skipped");
        None
    };

    println!();
    println!(
        "mirror bench: {n} records x 1 KiB, {PARTITIONS} partitions, one rdkafka mock cluster"
    );
    println!("{}", summary_line("consume-only", &consumed));
    match &mirrored {
        Ok(m) => {
            let mut s = summary_line("lockstep mirror", &mirrored);
            if let Some(st) = m.steady {
                s += &format!("  (steady state {st:.0} rec/s {:.1} MB/s", mb(st));
                if let Some(f) = m.first {
                    s += &format!(", first record after {:.2} s", f.as_secs_f64());
                }
                s += ")";
            }
            println!("{s}");
        }
        Err(_) => println!("{}", summary_line("lockstep mirror", &mirrored)),
    }
    println!("{}", summary_line("naive loop", &naived));
    match &kcat {
        Some(r) => println!("{}", summary_line("kcat pipe", r)),
        None => println!("  {:<16} skipped (not installed)", "kcat pipe"),
    }
    let skipped: Result<Measured, String> = Err("skipped".into());
    let kcat = kcat.as_ref().unwrap_or(&skipped);
    println!(
        "  ratios: mirror/consume-only {}, mirror/naive {}, mirror/kcat {}",
        ratio(&mirrored, &consumed),
        ratio(&mirrored, &naived),
        ratio(&mirrored, kcat)
    );
    println!(
        "  steady-state ratios: mirror/consume-only {}, mirror/naive {}, mirror/kcat {}",
        steady_ratio(&mirrored, &consumed),
        steady_ratio(&mirrored, &naived),
        steady_ratio(&mirrored, kcat)
    );
    drop(rt);
    drop(cluster);
}
