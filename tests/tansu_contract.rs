//! The external test broker must behave like Kafka where our exactly-once proof depends on
//! it: ListOffsets reports the true high watermark, a fetch may start inside a produced
//! batch, and the data survives a broker restart. tansu 0.6's object-store engine fails the
//! first two (see `Tansu` in the harness); this test keeps the SQLite engine honest.

mod common;

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const N: i64 = 1000;

fn keys_from(c: &BaseConsumer, from: i64, want: usize) -> Vec<(i64, String)> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, Offset::Offset(from))
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            out.push((m.offset(), key));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_broker_watermarks_mid_batch_fetch_and_restart() {
    let logs = tempfile::tempdir().expect("tempdir");
    let mut broker = Tansu::sqlite("tansu", logs.path());
    let b = broker.bootstrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            [&NewTopic::new("t", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // One linger window: the records go in a few large batches.
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("enable.idempotence", "true")
        .set("linger.ms", "100")
        .create()
        .expect("producer");
    for i in 0..N {
        let k = format!("k{i}");
        p.send(BaseRecord::to("t").partition(0).key(&k).payload(&k))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "contract")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let marks = c
        .fetch_watermarks("t", 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!(marks, (0, N), "ListOffsets earliest/latest");

    let mid = keys_from(&c, 500, 3);
    assert_eq!(
        mid,
        vec![
            (500, "k500".into()),
            (501, "k501".into()),
            (502, "k502".into())
        ],
        "a fetch from inside a batch starts at the requested offset"
    );

    broker.restart();
    let marks = c
        .fetch_watermarks("t", 0, Duration::from_secs(10))
        .expect("watermarks after restart");
    assert_eq!(marks, (0, N), "data survives a restart");
    let tail = keys_from(&c, N - 1, 1);
    assert_eq!(tail, vec![(N - 1, format!("k{}", N - 1))]);
    // Closing a group consumer can wait on the broker's group coordinator: let the OS reclaim it.
    std::mem::forget(c);
}
