//! Load generator: deterministic JSON rows (`{"<time field>": ISO, "user": ..., "count": n}`)
//! spread over a time range and partitions, produced to a Kafka topic at an optional rate.
//! Used by the emulator tests, the demo and the drift benchmark; the same [`LoadSpec`] and
//! seed always give the same rows, so a test can compute its expectations from [`rows`].

use crate::error::SimError;
use crate::time::iso;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use std::time::{Duration, Instant};

/// What to generate.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub topic: String,
    /// Rows go to partitions `0..partitions`, round-robin.
    pub partitions: i32,
    pub rows: u64,
    /// Timestamps are uniform in `[start_ms, end_ms)`.
    pub start_ms: i64,
    pub end_ms: i64,
    pub seed: u64,
    /// Rows per second (None: as fast as the producer goes).
    pub rate_per_sec: Option<u32>,
    /// Name of the timestamp field (`__time`, `timestamp`, ...).
    pub time_field: String,
    /// Each row's `count` is uniform in `1..=count_max` (1: plain counts).
    pub count_max: u32,
    /// Distinct `user` values.
    pub users: u32,
}

impl LoadSpec {
    /// `rows` rows over `[start_ms, end_ms)` into `topic`, one partition, seed 1, `timestamp`
    /// field, count 1, 100 users, unthrottled.
    pub fn new(topic: &str, rows: u64, start_ms: i64, end_ms: i64) -> LoadSpec {
        LoadSpec {
            topic: topic.to_string(),
            partitions: 1,
            rows,
            start_ms,
            end_ms,
            seed: 1,
            rate_per_sec: None,
            time_field: "timestamp".to_string(),
            count_max: 1,
            users: 100,
        }
    }
}

/// One generated row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub partition: i32,
    pub ts_ms: i64,
    pub count: u64,
    /// The JSON value produced.
    pub json: String,
}

/// The rows `spec` produces, in production order (deterministic for a seed).
pub fn rows(spec: &LoadSpec) -> impl Iterator<Item = Row> + '_ {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let span = (spec.end_ms - spec.start_ms).max(1);
    let parts = spec.partitions.max(1);
    (0..spec.rows).map(move |i| {
        let ts_ms = spec.start_ms + rng.random_range(0..span);
        let user = rng.random_range(0..spec.users.max(1));
        let count = u64::from(rng.random_range(1..=spec.count_max.max(1)));
        let json = serde_json::json!({
            spec.time_field.as_str(): iso(ts_ms),
            "user": format!("user-{user}"),
            "count": count,
        })
        .to_string();
        Row {
            partition: (i % parts as u64) as i32,
            ts_ms,
            count,
            json,
        }
    })
}

/// What was produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadSummary {
    pub rows: u64,
    pub elapsed: Duration,
}

/// Produces the rows of `spec` to `bootstrap` and waits until all are acknowledged. Blocking:
/// call it from `spawn_blocking` or a plain thread.
pub fn produce_blocking(bootstrap: &str, spec: &LoadSpec) -> Result<LoadSummary, SimError> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .map_err(|source| SimError::Kafka {
            context: format!("producer for {bootstrap}"),
            source,
        })?;
    let start = Instant::now();
    let mut n = 0u64;
    for row in rows(spec) {
        if let Some(rate) = spec.rate_per_sec.filter(|r| *r > 0) {
            let due = start + Duration::from_secs_f64(n as f64 / f64::from(rate));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut rec = BaseRecord::<(), String>::to(&spec.topic)
            .partition(row.partition)
            .payload(&row.json)
            .timestamp(row.ts_ms);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, back)) => {
                    if Instant::now() > deadline {
                        return Err(SimError::Kafka {
                            context: format!("produce to {}", spec.topic),
                            source: e,
                        });
                    }
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        n += 1;
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|source| SimError::Kafka {
            context: format!("flush to {}", spec.topic),
            source,
        })?;
    Ok(LoadSummary {
        rows: n,
        elapsed: start.elapsed(),
    })
}

/// Async wrapper of [`produce_blocking`].
pub async fn produce(bootstrap: &str, spec: &LoadSpec) -> Result<LoadSummary, SimError> {
    let b = bootstrap.to_string();
    let s = spec.clone();
    tokio::task::spawn_blocking(move || produce_blocking(&b, &s))
        .await
        .map_err(|e| SimError::Load(format!("producer thread: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut spec = LoadSpec::new("t", 1000, 1_000_000, 2_000_000);
        spec.partitions = 3;
        spec.count_max = 3;
        let a: Vec<Row> = rows(&spec).collect();
        let b: Vec<Row> = rows(&spec).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|r| (1_000_000..2_000_000).contains(&r.ts_ms)));
        assert!(a.iter().all(|r| (1..=3).contains(&r.count)));
        assert_eq!(a.iter().filter(|r| r.partition == 2).count(), 333);
        spec.seed = 2;
        assert_ne!(a, rows(&spec).collect::<Vec<_>>());
        let v: serde_json::Value = serde_json::from_str(&a[0].json).unwrap();
        assert_eq!(v["timestamp"], iso(a[0].ts_ms));
    }
}
