//! Kafka helpers of the suites that run a mirror on tansu brokers: a source loader that can
//! pace itself (behind the mirror, or as its caller says), a reader of whole partitions with
//! the `lockstep.src.offset` header decoded, the high watermarks of every partition,
//! the check that a target partition is an exact copy of the source's, the mirrored count
//! from the coordinator's status, and a temp dir that is kept (with the processes' logs) when
//! a test fails.

use super::Cluster;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A temp dir for the brokers' data and logs that is kept, and named, when the test fails;
/// the logs of other dirs registered with `also_keep` are copied into it then.
pub struct KeepOnPanic(Option<tempfile::TempDir>);

impl KeepOnPanic {
    pub fn new() -> Self {
        KeepOnPanic(Some(tempfile::tempdir().expect("tempdir")))
    }

    pub fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("dir").path()
    }

    /// On a failure, copies `dir`'s `*.log` files here (the returned guard must be dropped
    /// before `dir` is removed).
    pub fn also_keep(&self, dir: &std::path::Path) -> CopyLogsOnPanic {
        CopyLogsOnPanic {
            from: dir.to_path_buf(),
            to: self.path().to_path_buf(),
        }
    }

    /// Like [`KeepOnPanic::also_keep`], into the subfolder `sub` (for several dirs whose logs
    /// have the same names).
    pub fn also_keep_in(&self, dir: &std::path::Path, sub: &str) -> CopyLogsOnPanic {
        CopyLogsOnPanic {
            from: dir.to_path_buf(),
            to: self.path().join(sub),
        }
    }
}

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!("logs and broker data kept in {}", dir.keep().display());
            }
        }
    }
}

pub struct CopyLogsOnPanic {
    from: std::path::PathBuf,
    to: std::path::PathBuf,
}

impl Drop for CopyLogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let _ = std::fs::create_dir_all(&self.to);
        for entry in std::fs::read_dir(&self.from)
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let _ = std::fs::copy(&path, self.to.join(entry.file_name()));
            }
        }
    }
}

/// Records mirrored so far, from the coordinator's view of every partition's progress
/// (last mirrored source offset + 1, summed), or None while the coordinator is restarting.
pub async fn mirrored(cluster: &Cluster) -> Option<i64> {
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

/// Creates `topic` with `partitions` on the broker at `bootstrap` (the mirror's source).
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let created = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

/// Counts delivered and failed records of the source loader.
pub struct Delivery {
    pub ok: AtomicUsize,
    pub failed: AtomicUsize,
}

impl rdkafka::ClientContext for DeliveryCount {}

pub struct DeliveryCount(pub Arc<Delivery>);

impl rdkafka::producer::ProducerContext for DeliveryCount {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                eprintln!("source loader: delivery failed: {e}");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// How far the mirror got, for the source loader; `stopped` when the test ends either way.
pub struct Pace {
    pub mirrored: AtomicUsize,
    pub stopped: std::sync::atomic::AtomicBool,
}

/// Sets `stopped` when dropped, so that the loader never outlives a failed test (the runtime
/// waits for blocking tasks when it shuts down).
pub struct StopOnDrop(pub Arc<Pace>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Relaxed);
    }
}

/// Writes records `from..to` to the source, never more than `ahead` records beyond the count
/// the pace reports (None: no limit), and waits until every one is acknowledged. Record `i` goes
/// to partition `i % partitions` with key `k<i>`, a JSON value and a `seq` header.
pub fn produce(
    bootstrap: &str,
    partitions: i32,
    from: usize,
    to: usize,
    ahead: Option<(&Pace, usize)>,
    delivery: &Arc<Delivery>,
) {
    produce_with(bootstrap, partitions, from, delivery, |i| {
        if i >= to {
            return Next::Finish;
        }
        if let Some((pace, ahead)) = ahead {
            // The main loop bounds the wait: it fails the test when the mirror stops moving.
            while i >= pace.mirrored.load(Ordering::Relaxed) + ahead {
                if pace.stopped.load(Ordering::Relaxed) {
                    return Next::Abandon;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Next::Send
    });
}

/// What the source loader does before record `i` ([`produce_with`]).
pub enum Next {
    /// Write record `i`.
    Send,
    /// Stop here: wait until every record written is acknowledged.
    Finish,
    /// Stop at once, waiting for nothing (the test has failed).
    Abandon,
}

/// The source loader: writes records from `from` on, asking `next` before each one (it may
/// wait, to pace the loader), and returns how many it wrote. Record `i` goes to partition
/// `i % partitions` with key `k<i>`, a JSON value and a `seq` header. On [`Next::Finish`] it
/// waits until every record is acknowledged and fails if one was not.
pub fn produce_with(
    bootstrap: &str,
    partitions: i32,
    from: usize,
    delivery: &Arc<Delivery>,
    mut next: impl FnMut(usize) -> Next,
) -> usize {
    let p: ThreadedProducer<DeliveryCount> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "50")
        // Short requests keep tansu answering others in time (see the flow's properties).
        .set("batch.num.messages", "1000")
        // A slow broker delays records; it must never make the loader drop one.
        .set("message.timeout.ms", "0")
        .create_with_context(DeliveryCount(delivery.clone()))
        .expect("producer");
    let mut i = from;
    loop {
        match next(i) {
            Next::Send => {}
            Next::Finish => break,
            Next::Abandon => return i - from,
        }
        let key = format!("k{i}");
        let value = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(60));
        let h = OwnedHeaders::new().insert(Header {
            key: "seq",
            value: Some(i.to_string().as_bytes()),
        });
        let mut rec = BaseRecord::to("events")
            .partition((i % partitions as usize) as i32)
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
        i += 1;
    }
    p.flush(Duration::from_secs(600)).expect("source flush");
    assert_eq!(
        delivery.failed.load(Ordering::Relaxed),
        0,
        "the source loader lost records"
    );
    i - from
}

pub fn reader(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "verify")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // tansu answers every fetch after its full wait, data or not (librdkafka's default
        // is 500 ms per fetch).
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer")
}

/// One record as the verification sees it.
#[derive(Debug, PartialEq)]
pub struct Row {
    pub offset: i64,
    /// The `lockstep.src.offset` header (target records only).
    pub source_offset: Option<i64>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub timestamp: Option<i64>,
    /// Every header but lockstep's own.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Every record of partition `p`, in order.
pub fn read_all(c: &BaseConsumer, p: i32) -> Vec<Row> {
    let (low, high) = c
        .fetch_watermarks("events", p, Duration::from_secs(10))
        .expect("watermarks");
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
            Some(Ok(m)) => out.push(row(&m)),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => panic!("read {p}: {e}"),
            None => {}
        }
    }
    out
}

/// A record as the verification sees it, `lockstep.src.offset` decoded.
fn row(m: &impl Message) -> Row {
    let mut row = Row {
        offset: m.offset(),
        source_offset: None,
        key: m.key().unwrap_or_default().to_vec(),
        value: m.payload().unwrap_or_default().to_vec(),
        timestamp: m.timestamp().to_millis(),
        headers: Vec::new(),
    };
    for h in m.headers().iter().flat_map(|h| h.iter()) {
        let value = h.value.unwrap_or_default();
        if h.key == lockstep_config::headers::SRC_OFFSET {
            row.source_offset = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else if !h.key.starts_with("lockstep.") {
            row.headers.push((h.key.to_string(), value.to_vec()));
        }
    }
    row
}

/// The high watermark of every partition of `events` (None: the broker did not answer within
/// 2 s, or has no such topic yet).
pub fn high_watermarks(c: &BaseConsumer, partitions: i32) -> Option<Vec<i64>> {
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks("events", p, Duration::from_secs(2))
                .ok()
                .map(|(_, high)| high)
        })
        .collect()
}

/// Panics unless `target` (partition `p` of a mirror's target, named `what`) holds exactly the
/// records of `source` (the same partition of the source): its `lockstep.src.offset` sequence
/// is the source's offsets (zero missing, zero duplicates, same order; otherwise it says how
/// many are missing and twice), and every record has the same key, value, timestamp and
/// headers.
pub fn assert_exact_copy(what: &str, p: i32, source: &[Row], target: &[Row]) {
    let mirrored: Vec<Option<i64>> = target.iter().map(|r| r.source_offset).collect();
    let expected: Vec<Option<i64>> = source.iter().map(|r| Some(r.offset)).collect();
    if mirrored != expected {
        let mut seen = std::collections::BTreeSet::new();
        let duplicates = mirrored.iter().filter(|o| !seen.insert(**o)).count();
        let missing = expected.iter().filter(|o| !seen.contains(*o)).count();
        panic!(
            "{what} partition {p}: {} target records for {} source records: {missing} missing, {duplicates} duplicates, or out of order",
            target.len(),
            source.len()
        );
    }
    for (s, t) in source.iter().zip(target) {
        assert_eq!(
            (&s.key, &s.value, s.timestamp, &s.headers),
            (&t.key, &t.value, t.timestamp, &t.headers),
            "{what} partition {p} source offset {}: key, value, timestamp and headers",
            s.offset
        );
    }
}
