//! The demo's load: JSON rows from `lockstep_sim::loadgen` produced to the source topic, and
//! files dropped into the landing folder for the objects flow.
//!
//! Rows come as a backfill over past hours, then as short bursts of late rows (timestamps in
//! the last [`Plan::burst_span`]) separated by quiet periods. Continuous production would keep
//! every site a few records behind (drift `lagging`) forever; the quiet periods let the sites
//! catch up, so drift shows `in_sync` between bursts. Bursts wait while the demo holds them
//! (while a fault is being detected). Never blocks the runtime; stops on its token.

use anyhow::{Context, Result};
use lockstep_sim::loadgen::{self, LoadSpec, Row};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What to produce and when.
#[derive(Debug, Clone)]
pub struct Plan {
    pub topic: String,
    pub partitions: i32,
    /// Rows with timestamps uniform in `[backfill_start_ms, backfill_end_ms)`, produced at once.
    pub backfill_rows: u64,
    pub backfill_start_ms: i64,
    pub backfill_end_ms: i64,
    /// The first burst starts `first_burst` after [`run`] starts, then one every
    /// `burst_every`, each spreading `burst_rows` over `burst_length`.
    pub first_burst: Duration,
    pub burst_rows: u64,
    pub burst_every: Duration,
    pub burst_length: Duration,
    /// Burst rows carry timestamps in `[now - burst_span, now)`: late and fresh events.
    pub burst_span: Duration,
    /// A file of `dump_rows` JSON lines lands in `landing/dumps/` every `dump_every`.
    pub dump_every: Duration,
    pub dump_rows: u64,
}

/// What the load has done so far, read by the progress lines.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records acknowledged by the source cluster.
    pub produced: AtomicU64,
    /// Files dropped into the landing folder.
    pub dumps: AtomicU64,
    /// Bursts completed, and when the last one ended (epoch ms).
    pub bursts: AtomicU64,
    pub last_burst_end_ms: AtomicI64,
}

/// Rows per paced chunk of a burst are sent every this long.
const TICK: Duration = Duration::from_millis(100);

/// A producer for the source cluster.
pub fn producer(bootstrap: &str) -> Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .with_context(|| format!("cannot create a producer for the source cluster {bootstrap}"))
}

/// Produces the backfill and waits until the source cluster has acknowledged all of it.
pub async fn backfill(producer: &FutureProducer, plan: &Plan, counters: &Counters) -> Result<()> {
    let spec = LoadSpec {
        partitions: plan.partitions,
        ..LoadSpec::new(
            &plan.topic,
            plan.backfill_rows,
            plan.backfill_start_ms,
            plan.backfill_end_ms,
        )
    };
    let rows: Vec<Row> = loadgen::rows(&spec).collect();
    for chunk in rows.chunks(2_000) {
        let sent = send(producer, &plan.topic, chunk).await?;
        counters.produced.fetch_add(sent, Ordering::Relaxed);
    }
    Ok(())
}

/// Bursts and dumps until `stop`. `hold` true skips bursts (dumps go on).
pub async fn run(
    producer: FutureProducer,
    landing: PathBuf,
    plan: Plan,
    counters: Arc<Counters>,
    hold: watch::Receiver<bool>,
    stop: CancellationToken,
) -> Result<()> {
    let mut seed = 100u64;
    let mut next_burst = tokio::time::Instant::now() + plan.first_burst;
    let mut next_dump = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(next_dump) => {
                next_dump += plan.dump_every;
                let n = counters.dumps.load(Ordering::Relaxed) + 1;
                drop_file(&landing, &plan, n).await?;
                counters.dumps.store(n, Ordering::Relaxed);
            }
            _ = tokio::time::sleep_until(next_burst) => {
                next_burst += plan.burst_every;
                if *hold.borrow() {
                    continue;
                }
                seed += 1;
                burst(&producer, &plan, seed, &counters, &stop).await?;
                counters.bursts.fetch_add(1, Ordering::Relaxed);
                counters
                    .last_burst_end_ms
                    .store(lockstep_drift::poller::now_ms(), Ordering::Relaxed);
            }
        }
    }
}

/// One burst: `burst_rows` rows paced over `burst_length`, in chunks every [`TICK`].
async fn burst(
    producer: &FutureProducer,
    plan: &Plan,
    seed: u64,
    counters: &Counters,
    stop: &CancellationToken,
) -> Result<()> {
    let now = lockstep_drift::poller::now_ms();
    let spec = LoadSpec {
        partitions: plan.partitions,
        seed,
        ..LoadSpec::new(
            &plan.topic,
            plan.burst_rows,
            now - plan.burst_span.as_millis() as i64,
            now,
        )
    };
    let rows: Vec<Row> = loadgen::rows(&spec).collect();
    let ticks = (plan.burst_length.as_millis() / TICK.as_millis()).max(1) as usize;
    let per_tick = rows.len().div_ceil(ticks).max(1);
    let mut interval = tokio::time::interval(TICK);
    for chunk in rows.chunks(per_tick) {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = interval.tick() => {}
        }
        let sent = send(producer, &plan.topic, chunk).await?;
        counters.produced.fetch_add(sent, Ordering::Relaxed);
    }
    Ok(())
}

/// Sends rows and waits for their acknowledgements; returns how many were acknowledged.
async fn send(producer: &FutureProducer, topic: &str, rows: &[Row]) -> Result<u64> {
    let sends = rows.iter().map(|r| {
        producer.send(
            FutureRecord::<(), String>::to(topic)
                .partition(r.partition)
                .payload(&r.json)
                .timestamp(r.ts_ms),
            Duration::from_secs(10),
        )
    });
    let mut ok = 0u64;
    for result in futures::future::join_all(sends).await {
        match result {
            Ok(_) => ok += 1,
            Err((e, _)) => anyhow::bail!("producing to the source topic {topic} failed: {e}"),
        }
    }
    Ok(ok)
}

/// Writes `dumps/clicks-NNNN.json` (JSON lines) into the landing folder, all at once: the
/// file is written beside the prefix and renamed in, so a listing never sees half a file.
async fn drop_file(landing: &std::path::Path, plan: &Plan, n: u64) -> Result<()> {
    let now = lockstep_drift::poller::now_ms();
    let spec = LoadSpec {
        seed: 10_000 + n,
        ..LoadSpec::new(&plan.topic, plan.dump_rows, now - 3_600_000, now)
    };
    let mut body = String::new();
    for row in loadgen::rows(&spec) {
        body.push_str(&row.json);
        body.push('\n');
    }
    let tmp = landing.join(format!(".clicks-{n:04}.json.tmp"));
    let dest = landing.join("dumps").join(format!("clicks-{n:04}.json"));
    tokio::fs::write(&tmp, body)
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    tokio::fs::rename(&tmp, &dest)
        .await
        .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
    Ok(())
}
