//! Contract tests: lockstep-druid's decoders against answers shaped exactly as Apache Druid
//! writes them (fixtures in `fixtures/`, each with its Druid source in `fixtures/README.md`
//! and in a comment next to its use). Pure decoding: no server, no transport.

use lockstep_druid::{
    parse_time, DruidError, ErrorBody, SegmentInterval, SpecError, SpecSummary, StreamPartition,
    SupervisorStatus,
};
use serde_json::{json, Value};

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn status(name: &str) -> SupervisorStatus {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn spec(name: &str) -> Result<SpecSummary, SpecError> {
    let v: Value = serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    SpecSummary::from_json(&v)
}

fn answer(status: u16, name: &str) -> DruidError {
    DruidError::from_response("eu-west", "sql", status, &fixture(name))
}

fn body(e: &DruidError) -> &ErrorBody {
    e.body()
        .unwrap_or_else(|| panic!("expected a Druid error body, got {e:?}"))
}

fn p(n: i32) -> StreamPartition {
    StreamPartition::single(n)
}

fn tp(topic: &str, n: i32) -> StreamPartition {
    StreamPartition::of_topic(topic, n)
}

// ---------------------------------------------------------------------------------------
// Supervisor status
// ---------------------------------------------------------------------------------------

/// docs/api-reference/supervisor-api.md, "Get supervisor status" (verbatim sample).
#[test]
fn status_single_topic_from_the_docs() {
    let st = status("supervisor_status_single_topic.json");
    assert_eq!(st.id, "social_media");
    let pl = &st.payload;
    assert_eq!(pl.stream.as_deref(), Some("social_media"));
    assert_eq!(pl.partitions, Some(1));
    assert_eq!(pl.latest_offsets.get(&p(0)), Some(&3_296_635));
    assert_eq!(pl.minimum_lag.get(&p(0)), Some(&3));
    assert_eq!(pl.aggregate_lag, Some(3));
    assert_eq!(pl.aggregate_lag_millis, None);
    assert!(pl.minimum_lag_millis.is_empty());
    assert_eq!(
        pl.offsets_last_updated_ms(),
        parse_time("2023-07-05T23:24:30.212Z")
    );
    assert!(pl.offsets_last_updated_ms().is_some());
    let task = &pl.active_tasks[0];
    assert_eq!(task.starting_offsets.get(&p(0)), Some(&3_176_381));
    assert_eq!(task.current_offsets.get(&p(0)), Some(&3_296_632));
    assert_eq!(task.lag.get(&p(0)), Some(&3));
    assert_eq!(task.task_type.as_deref(), Some("ACTIVE"));
    assert_eq!(task.remaining_seconds, Some(3415));

    let end = pl.ingested_end();
    // The active task's currentOffsets, not the snapshot (which agrees: 3296635 - 3).
    assert_eq!(end.offsets.get(&p(0)), Some(&3_296_632));
    assert!(end.from_snapshot.is_empty());
    assert!(end.unknown.is_empty(), "{:?}", end.unknown);
    assert!(pl.recent_error_texts().is_empty());
}

/// Keys `"topic:partition"` (KafkaTopicPartition.KafkaTopicPartitionKeySerializer, multi-topic
/// mode); `stream` is the topicPattern.
#[test]
fn status_with_topic_pattern_keys() {
    let pl = status("supervisor_status_topic_pattern.json").payload;
    assert_eq!(pl.stream.as_deref(), Some("clicks|views"));
    assert_eq!(pl.latest_offsets.len(), 4);
    assert_eq!(pl.latest_offsets.get(&tp("views", 1)), Some(&7));
    assert_eq!(
        pl.publishing_tasks[0].task_type.as_deref(),
        Some("PUBLISHING")
    );

    let end = pl.ingested_end();
    // clicks:0: the furthest of the active (150) and publishing (100) tasks.
    assert_eq!(end.offsets.get(&tp("clicks", 0)), Some(&150));
    assert_eq!(end.offsets.get(&tp("clicks", 1)), Some(&260));
    assert_eq!(end.offsets.get(&tp("views", 0)), Some(&45));
    // views:1 has no task: latestOffsets - minimumLag = 7 - 2.
    assert_eq!(end.offsets.get(&tp("views", 1)), Some(&5));
    assert_eq!(
        end.from_snapshot.iter().collect::<Vec<_>>(),
        vec![&tp("views", 1)]
    );
    assert!(end.unknown.is_empty(), "{:?}", end.unknown);
    // Multi-topic: the partition count covers all topics and is not enumerated.
    assert!(end.offsets.keys().all(|k| k.topic.is_some()));
    let key = tp("views", 1);
    assert_eq!(key.to_string(), "views:1");
    assert_eq!(key.topic_or("clicks|views"), "views");
    // Serialized back the way Druid keys it.
    let out = serde_json::to_value(&end).unwrap_or_default();
    assert_eq!(out["offsets"]["views:1"], json!(5));
    assert_eq!(out["from_snapshot"], json!(["views:1"]));
}

/// Negative lags, including Integer.MIN_VALUE (KafkaSupervisor.getRecordLagPerPartition's
/// marker), lagMillis fields, partitions missing from the maps.
#[test]
fn status_with_negative_lag_and_missing_partitions() {
    let pl = status("supervisor_status_negative_lag.json").payload;
    // Raw values kept.
    assert_eq!(pl.minimum_lag.get(&p(1)), Some(&-2_147_483_648));
    assert_eq!(pl.minimum_lag.get(&p(2)), Some(&i64::from(i32::MIN)));
    assert_eq!(pl.minimum_lag.get(&p(3)), Some(&-3));
    assert_eq!(pl.active_tasks[0].lag.get(&p(0)), Some(&-5));
    // aggregateLag = sum of max(lag, 0): it hides the negative ones.
    assert_eq!(pl.aggregate_lag, Some(40));
    assert_eq!(pl.minimum_lag_millis.get(&p(4)), Some(&12_000));
    assert_eq!(pl.aggregate_lag_millis, Some(12_000));

    let end = pl.ingested_end();
    // 0 and 1: the task's currentOffsets win over the snapshot's -5 and MIN_VALUE lags.
    assert_eq!(end.offsets.get(&p(0)), Some(&1000));
    assert_eq!(end.offsets.get(&p(1)), Some(&2000));
    // 4: from the snapshot, 300 - 40.
    assert_eq!(end.offsets.get(&p(4)), Some(&260));
    assert_eq!(end.from_snapshot.iter().collect::<Vec<_>>(), vec![&p(4)]);
    // Never guessed, never zero.
    for n in [2, 3, 5, 6] {
        assert!(!end.offsets.contains_key(&p(n)), "partition {n}");
    }
    let why = |n: i32| end.unknown.get(&p(n)).cloned().unwrap_or_default();
    assert!(why(2).contains("-2147483648"), "{}", why(2));
    assert!(why(3).contains("negative (-3)"), "{}", why(3));
    assert!(why(3).contains("2026-11-24T13:59:30.000Z"), "{}", why(3));
    assert!(why(5).contains("not in minimumLag"), "{}", why(5));
    // `partitions` is 7, but no map mentions partition 6.
    assert!(why(6).contains("7 partitions"), "{}", why(6));
    assert_eq!(end.unknown.len(), 4, "{:?}", end.unknown);
}

/// Before the first offset snapshot Druid omits latestOffsets, minimumLag and aggregateLag
/// (`@JsonInclude(NON_NULL)`); recentErrors are SupervisorStateManager.ExceptionEvents.
#[test]
fn status_before_any_offsets() {
    let pl = status("supervisor_status_no_offsets.json").payload;
    assert!(pl.latest_offsets.is_empty() && pl.minimum_lag.is_empty());
    assert_eq!(pl.aggregate_lag, None);
    assert_eq!(pl.offsets_last_updated_ms(), None);
    assert_eq!(
        pl.detailed_state.as_deref(),
        Some("UNABLE_TO_CONNECT_TO_STREAM")
    );
    let end = pl.ingested_end();
    assert!(end.offsets.is_empty());
    assert_eq!(
        end.unknown.keys().cloned().collect::<Vec<_>>(),
        vec![p(0), p(1), p(2)]
    );
    assert!(end.unknown[&p(0)].contains("no latestOffsets"));
    assert_eq!(
        pl.recent_error_texts(),
        vec![
            "org.apache.druid.indexing.seekablestream.common.StreamException: \
             org.apache.kafka.common.errors.TimeoutException: Timeout expired while fetching \
             topic metadata"
        ]
    );
}

/// Task offsets that are KafkaSupervisor's markers (NOT_SET = -1, END_OF_PARTITION =
/// Long.MAX_VALUE) are not offsets; keys Druid would not write fail the decode.
#[test]
fn status_markers_and_bad_keys() {
    let pl: SupervisorStatus = serde_json::from_value(json!({
        "id": "clicks",
        "payload": {
            "stream": "clicks",
            "activeTasks": [{"id": "t1", "currentOffsets": {"0": -1, "1": 9223372036854775807u64, "2": null}}],
            "latestOffsets": {"0": 50},
            "minimumLag": {"0": 10}
        }
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let end = pl.payload.ingested_end();
    // 0: the task's -1 is ignored, the snapshot gives 40.
    assert_eq!(end.offsets.get(&p(0)), Some(&40));
    assert!(
        end.unknown[&p(1)].contains("not a stream offset"),
        "{:?}",
        end.unknown
    );
    assert!(!end.offsets.contains_key(&p(2)));

    for bad in [
        json!({"id": "x", "payload": {"latestOffsets": {"shardId-000000000000": "4959"}}}),
        json!({"id": "x", "payload": {"latestOffsets": {"c1|clicks:0": 5}}}),
        json!({"id": "x", "payload": {"latestOffsets": {"0": 1.5}}}),
        json!({"id": "x", "payload": {"minimumLag": {"0": "3"}}}),
    ] {
        let e = serde_json::from_value::<SupervisorStatus>(bad.clone())
            .err()
            .unwrap_or_else(|| panic!("{bad} decoded"));
        assert!(
            e.to_string().contains("partition") || e.to_string().contains("offset"),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Supervisor spec (GET /druid/indexer/v1/supervisor/{id})
// ---------------------------------------------------------------------------------------

/// docs/api-reference/supervisor-api.md, "Get supervisor specification" (verbatim sample):
/// `spec.*` plus top-level copies, queryGranularity `{"type":"none"}`, rollup false.
#[test]
fn spec_as_get_returns_it() {
    let s = spec("supervisor_spec_get.json").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.datasource.as_deref(), Some("social_media"));
    assert!(!s.rollup);
    assert!(s.count_metrics.is_empty());
    assert_eq!(s.topic.as_deref(), Some("social_media"));
    assert_eq!(s.topic_pattern, None);
    assert_eq!(s.query_granularity.as_deref(), Some("NONE"));
    assert_eq!(s.segment_granularity.as_deref(), Some("HOUR"));
    assert_eq!(s.input_format.as_deref(), Some("json"));
    assert_eq!(s.supervisor_type.as_deref(), Some("kafka"));
}

/// topicPattern with `topic: null`, csv inputFormat, a count aggregator, MONTH segments.
#[test]
fn spec_with_topic_pattern_and_csv() {
    let s = spec("supervisor_spec_topic_pattern_csv.json").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.datasource.as_deref(), Some("clicks_and_views"));
    assert!(s.rollup);
    assert_eq!(s.count_metrics, vec!["count".to_string()]);
    assert_eq!(s.topic, None);
    assert_eq!(s.topic_pattern.as_deref(), Some("clicks|views"));
    assert_eq!(s.query_granularity.as_deref(), Some("HOUR"));
    assert_eq!(s.segment_granularity.as_deref(), Some("MONTH"));
    assert_eq!(s.input_format.as_deref(), Some("csv"));
}

/// Older Druid: only top-level dataSchema/ioConfig; `{"type":"all"}` segments.
#[test]
fn spec_with_top_level_fields_only() {
    let s = spec("supervisor_spec_top_level_only.json").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.datasource.as_deref(), Some("views"));
    assert!(!s.rollup);
    assert_eq!(
        s.count_metrics,
        vec!["events".to_string(), "rows".to_string()]
    );
    assert_eq!(s.topic.as_deref(), Some("views"));
    assert_eq!(s.segment_granularity.as_deref(), Some("ALL"));
    assert_eq!(s.query_granularity.as_deref(), Some("NONE"));
    assert_eq!(s.input_format.as_deref(), Some("kafka"));
}

/// The spec as submitted (docs/ingestion/kafka-ingestion.md sample shape): only `spec`,
/// granularities as strings, Druid's defaults for what is left out.
#[test]
fn spec_as_submitted_and_defaults() {
    let s = SpecSummary::from_json(&json!({
        "type": "kafka",
        "spec": {
            "dataSchema": {
                "dataSource": "metrics-kafka",
                "metricsSpec": [{"name": "count", "type": "count"}],
                "granularitySpec": {"segmentGranularity": "ALL", "queryGranularity": "fifteen_minute"}
            },
            "ioConfig": {"topic": "metrics", "consumerProperties": {"bootstrap.servers": "k:9092"}}
        }
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(s.rollup, "Druid's default rollup is true");
    assert_eq!(s.segment_granularity.as_deref(), Some("ALL"));
    assert_eq!(s.query_granularity.as_deref(), Some("FIFTEEN_MINUTE"));
    assert_eq!(s.input_format, None);

    let bare = SpecSummary::from_json(&json!({
        "spec": {"dataSchema": {"dataSource": "d"}, "ioConfig": {"topic": "t"}}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(bare.rollup);
    assert_eq!(bare.query_granularity.as_deref(), Some("NONE"));
    assert_eq!(bare.segment_granularity.as_deref(), Some("DAY"));

    // Period granularities (docs/querying/granularities.md): a UTC standard period is its
    // name, anything else keeps its zone.
    let g = |q: Value| {
        SpecSummary::from_json(&json!({
            "spec": {"dataSchema": {"granularitySpec": {"queryGranularity": q}}, "ioConfig": {"topic": "t"}}
        }))
        .map(|s| s.query_granularity.unwrap_or_default())
    };
    assert_eq!(
        g(json!({"type": "period", "period": "PT1H", "timeZone": "UTC", "origin": null}))
            .ok()
            .as_deref(),
        Some("HOUR")
    );
    assert_eq!(
        g(json!({"type": "period", "period": "P1D", "timeZone": "America/Los_Angeles"}))
            .ok()
            .as_deref(),
        Some("P1D tz=America/Los_Angeles")
    );
    assert_eq!(
        g(json!({"type": "duration", "duration": 7200000}))
            .ok()
            .as_deref(),
        Some("DURATION 7200000ms")
    );
    assert!(matches!(
        g(json!({"type": "weird"})),
        Err(SpecError::Invalid { .. })
    ));
    assert!(matches!(g(json!(17)), Err(SpecError::Invalid { .. })));
}

/// Errors name the missing or bad field.
#[test]
fn spec_errors_name_the_field() {
    let e = SpecSummary::from_json(&json!({"type": "kafka", "spec": {"ioConfig": {"topic": "t"}}}));
    assert_eq!(
        e.err().map(|e| e.to_string()).as_deref(),
        Some("supervisor spec has no spec.dataSchema (or dataSchema)")
    );
    let e =
        SpecSummary::from_json(&json!({"spec": {"dataSchema": {}, "ioConfig": {"topic": null}}}));
    assert!(e.err().is_some_and(|e| e
        .to_string()
        .contains("ioConfig.topic (or ioConfig.topicPattern)")));
    let e = SpecSummary::from_json(
        &json!({"spec": {"dataSchema": {"granularitySpec": {"rollup": 3}}, "ioConfig": {"topic": "t"}}}),
    );
    assert!(e
        .err()
        .is_some_and(|e| e.to_string().contains("dataSchema.granularitySpec.rollup")));
    let e = SpecSummary::from_json(
        &json!({"spec": {"dataSchema": {"metricsSpec": [{"type": "count"}]}, "ioConfig": {"topic": "t"}}}),
    );
    assert!(e
        .err()
        .is_some_and(|e| e.to_string().contains("dataSchema.metricsSpec[0]")));
    let e = SpecSummary::from_json(
        &json!({"spec": {"dataSchema": {}, "ioConfig": {"topic": "a", "topicPattern": "b"}}}),
    );
    assert!(e
        .err()
        .is_some_and(|e| e.to_string().contains("topicPattern")));
    assert!(SpecSummary::from_json(&json!([1, 2])).is_err());
}

// ---------------------------------------------------------------------------------------
// Errors: unknown table, in all three generations
// ---------------------------------------------------------------------------------------

/// docs/querying/querying.md "Query errors": legacy `Plan validation failed`, HTTP 400.
#[test]
fn unknown_table_legacy() {
    let e = answer(400, "error_legacy_table_not_found.json");
    assert!(e.is_missing_table(), "{e}");
    let b = body(&e);
    assert_eq!(b.code.as_deref(), Some("Plan validation failed"));
    assert_eq!(
        b.class.as_deref(),
        Some("org.apache.calcite.tools.ValidationException")
    );
    assert_eq!(b.effective_category(), Some("INVALID_INPUT"));
    assert!(
        e.to_string()
            .contains("HTTP 400: Plan validation failed: org.apache.calcite"),
        "{e}"
    );
    assert_eq!(e.status(), Some(400));
    assert_eq!(e.kind(), "druid");
    assert!(e.druid_answered());
}

/// DruidPlanner.parseValidationMessage through ErrorResponse.getAsMap: `invalidInput`.
#[test]
fn unknown_table_druid_exception() {
    let e = answer(400, "error_druid_exception_table_not_found.json");
    assert!(e.is_missing_table(), "{e}");
    let b = body(&e);
    assert_eq!(b.code.as_deref(), Some("invalidInput"));
    assert_eq!(b.category.as_deref(), Some("INVALID_INPUT"));
    assert_eq!(b.message, "Object 'nope' not found (line [1], column [15])");
    assert_eq!(
        e.to_string(),
        "site eu-west: Druid error (sql): HTTP 400: invalidInput: Object 'nope' not found \
         (line [1], column [15])"
    );
    assert!(!e.to_string().contains("druidException"));
}

/// The 27+ wrapper (ErrorResponse.getAsMap with QueryExceptionCompat): the legacy code is
/// shown, never `legacyQueryException`.
#[test]
fn unknown_table_wrapped() {
    let e = answer(400, "error_wrapped_table_not_found.json");
    assert!(e.is_missing_table(), "{e}");
    assert_eq!(body(&e).code.as_deref(), Some("Plan validation failed"));
    assert!(!e.to_string().contains("legacyQueryException"), "{e}");
}

/// "Column 'x' not found in any table" is a real error, not an empty datasource.
#[test]
fn unknown_column_is_not_a_missing_table() {
    let e = answer(400, "error_druid_exception_column_not_found.json");
    assert!(!e.is_missing_table(), "{e}");
    // Nor is the same text under another status.
    assert!(!answer(500, "error_druid_exception_table_not_found.json").is_missing_table());
}

// ---------------------------------------------------------------------------------------
// Errors: query timeout (504) and capacity (429)
// ---------------------------------------------------------------------------------------

#[test]
fn query_timeout_in_every_shape() {
    for (name, code) in [
        // docs/querying/querying.md, the "Query execution failures" sample.
        ("error_legacy_timeout.json", Some("Query timeout")),
        // QueryTimeoutException through the 27+ wrapper.
        ("error_wrapped_timeout.json", Some("Query timeout")),
        // ServerManager's DruidException, category TIMEOUT.
        ("error_druid_exception_timeout.json", Some("general")),
    ] {
        let e = answer(504, name);
        assert!(e.is_query_timeout(), "{name}: {e}");
        assert!(!e.is_capacity_exceeded(), "{name}");
        assert_eq!(e.kind(), "query_timeout", "{name}");
        assert_eq!(body(&e).code.as_deref(), code, "{name}");
        assert_eq!(body(&e).effective_category(), Some("TIMEOUT"), "{name}");
        assert!(
            !e.to_string().contains("legacyQueryException"),
            "{name}: {e}"
        );
        assert!(!e.is_missing_table());
    }
    assert_eq!(
        answer(504, "error_legacy_timeout.json").to_string(),
        "site eu-west: Druid error (sql): HTTP 504: Query timeout: Timeout waiting for task."
    );
    assert_eq!(
        answer(504, "error_wrapped_timeout.json").to_string(),
        "site eu-west: Druid error (sql): HTTP 504: Query timeout: \
         url[http://172.18.0.5:8083/druid/v2/] timed out"
    );
    // The category decides even when a proxy rewrote the status.
    assert!(answer(500, "error_wrapped_timeout.json").is_query_timeout());
    // lockstep's own deadline is a different thing.
    let own = DruidError::timeout("eu-west", "sql");
    assert!(!own.is_query_timeout());
    assert_eq!(own.kind(), "timeout");
    assert_eq!(own.status(), None);
    // A proxy's 504 page: the query outlived the proxy.
    let proxy = DruidError::from_response(
        "eu-west",
        "sql",
        504,
        b"<html><head><title>504 Gateway Time-out</title></head></html>",
    );
    assert!(proxy.is_query_timeout());
    assert!(
        matches!(&proxy, DruidError::NotJson { snippet, .. } if snippet == "504 Gateway Time-out")
    );
}

#[test]
fn capacity_in_every_shape() {
    for name in [
        // QueryCapacityExceededException (legacy, HTTP 429).
        "error_legacy_capacity.json",
        // The same through the 27+ wrapper.
        "error_wrapped_capacity.json",
        // TaskQueue's DruidException, category CAPACITY_EXCEEDED.
        "error_druid_exception_capacity.json",
    ] {
        let e = answer(429, name);
        assert!(e.is_capacity_exceeded(), "{name}: {e}");
        assert!(!e.is_query_timeout(), "{name}");
        assert_eq!(e.kind(), "capacity_exceeded", "{name}");
        assert_eq!(
            body(&e).effective_category(),
            Some("CAPACITY_EXCEEDED"),
            "{name}"
        );
        assert!(
            !e.to_string().contains("legacyQueryException"),
            "{name}: {e}"
        );
    }
    assert!(answer(429, "error_wrapped_capacity.json")
        .to_string()
        .contains("HTTP 429: Query capacity exceeded: Too many concurrent queries"));
    for k in ["query_timeout", "capacity_exceeded"] {
        assert!(DruidError::KINDS.contains(&k));
    }
}

// ---------------------------------------------------------------------------------------
// Errors: "no such supervisor" vs other 404s and empty answers
// ---------------------------------------------------------------------------------------

/// SupervisorResource: HTTP 404 `{"error": "[clicks] does not exist"}`.
#[test]
fn no_such_supervisor_404() {
    let e = answer(404, "supervisor_does_not_exist_404.json");
    assert!(e.is_no_such_supervisor(), "{e}");
    assert_eq!(body(&e).code, None);
    assert_eq!(
        e.to_string(),
        "site eu-west: Druid error (sql): HTTP 404: [clicks] does not exist"
    );
    // The same resource's other answers are not "no such supervisor".
    assert!(!answer(400, "supervisor_already_suspended_400.json").is_no_such_supervisor());
}

/// SupervisorResourceFilter: HTTP 400, plain text, before the resource runs.
#[test]
fn no_such_supervisor_from_the_filter() {
    let e = answer(400, "supervisor_filter_unknown_400.txt");
    assert!(e.is_no_such_supervisor(), "{e}");
    assert!(e.druid_answered());
    assert!(e
        .to_string()
        .ends_with("HTTP 400: Cannot find any supervisor with id: [clicks]"));
}

/// A 404 from Jetty (e.g. a Router without the management proxy) is not the Overlord's
/// answer, in either of Jetty's forms.
#[test]
fn jetty_404_is_not_no_such_supervisor() {
    let html = answer(404, "jetty_404.html");
    assert!(!html.is_no_such_supervisor());
    match &html {
        DruidError::NotJson {
            status, snippet, ..
        } => {
            assert_eq!(*status, 404);
            assert_eq!(snippet, "Error 404 Not Found");
        }
        other => panic!("expected NotJson, got {other:?}"),
    }
    assert_eq!(html.kind(), "not_json");
    assert_eq!(html.status(), Some(404));

    let js = answer(404, "jetty_404.json");
    assert!(!js.is_no_such_supervisor());
    assert_eq!(
        body(&js).message,
        "Not Found (/druid/indexer/v1/supervisor/clicks/status)"
    );
}

/// An empty 503: a proxy, or an Overlord that is not the leader
/// (SupervisorResource.asLeaderWithSupervisorManager).
#[test]
fn empty_503() {
    let e = DruidError::from_response("eu-west", "supervisor.status", 503, b"");
    assert!(!e.is_no_such_supervisor());
    assert_eq!(e.status(), Some(503));
    let text = e.to_string();
    assert!(text.contains("HTTP 503: (empty body)"), "{text}");
    assert!(text.contains("proxy or load balancer"), "{text}");
    assert!(text.contains("not (yet) the leader"), "{text}");
    assert!(!e.druid_answered());
    // Other statuses get no proxy hint.
    let plain = DruidError::from_response("eu-west", "sql", 500, b"  \n");
    assert!(
        plain.to_string().ends_with("HTTP 500: (empty body)"),
        "{plain}"
    );
}

/// A proxy's HTML page: the title, on one line.
#[test]
fn proxy_html_page() {
    let e = answer(502, "proxy_502.html");
    match &e {
        DruidError::NotJson { snippet, .. } => assert_eq!(snippet, "502 Bad Gateway"),
        other => panic!("expected NotJson, got {other:?}"),
    }
    assert!(!e.to_string().contains('\n'));
}

/// 401/403: the readable part of the body.
#[test]
fn refusals() {
    let e = DruidError::from_response(
        "eu-west",
        "sql",
        401,
        br#"{"Access-Check-Result": "Authentication failed"}"#,
    );
    assert!(
        matches!(&e, DruidError::Unauthorized { status: 401, body, .. } if body == "Access-Check-Result: Authentication failed")
    );
    let e = DruidError::from_response(
        "eu-west",
        "sql",
        403,
        br#"{"error":"druidException","errorCode":"forbidden","persona":"USER","category":"FORBIDDEN","errorMessage":"Unauthorized","context":{}}"#,
    );
    assert!(
        matches!(&e, DruidError::Unauthorized { status: 403, body, .. } if body == "forbidden: Unauthorized")
    );
    let e = DruidError::from_response(
        "eu-west",
        "sql",
        401,
        b"<html><head><title>Error 401 Unauthorized</title></head></html>",
    );
    assert!(
        e.to_string().ends_with("HTTP 401: Error 401 Unauthorized"),
        "{e}"
    );
    assert_eq!(e.kind(), "unauthorized");
}

// ---------------------------------------------------------------------------------------
// Success answers that do not decode
// ---------------------------------------------------------------------------------------

/// docs/api-reference/sql-api.md, "Client-side error handling and truncated responses": an
/// error after the header stops the body midstream, leaving invalid JSON.
#[test]
fn truncated_and_foreign_success_bodies() {
    let cut = br#"[{"start":"2026-11-23T00:00:00.000Z","end":"2026-11-23T01:00:00.000Z","rows":3600},{"sta"#;
    let err = serde_json::from_slice::<Vec<SegmentInterval>>(cut)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let e = DruidError::from_decode("eu-west", "sql", 200, cut, &err);
    assert!(
        matches!(&e, DruidError::Decode { status: 200, message, .. } if message.contains("cut short")),
        "{e}"
    );
    assert!(e.druid_answered());

    let e = DruidError::from_decode(
        "eu-west",
        "sql",
        200,
        b"<html><title>Login</title></html>",
        "x",
    );
    assert!(matches!(&e, DruidError::NotJson { snippet, .. } if snippet == "Login"));

    let e = DruidError::from_decode(
        "eu-west",
        "sql",
        200,
        br#"{"unexpected": true}"#,
        "invalid type: map",
    );
    assert!(matches!(&e, DruidError::Decode { message, .. } if message == "invalid type: map"));
}

// ---------------------------------------------------------------------------------------
// SQL rows
// ---------------------------------------------------------------------------------------

/// `SUM("is_available")` next to the interval rows; null sums (no segment loaded yet).
#[test]
fn segment_rows_with_availability() {
    let rows: Vec<SegmentInterval> = serde_json::from_value(json!([
        {"start": "2026-11-23T00:00:00.000Z", "end": "2026-11-23T01:00:00.000Z", "rows": 3600, "segments": 2, "available": 2},
        {"start": "2026-11-23T01:00:00.000Z", "end": "2026-11-23T02:00:00.000Z", "rows": null, "segments": 1, "available": 0},
        {"start": "2026-11-23T02:00:00.000Z", "end": "2026-11-23T03:00:00.000Z", "rows": 12.0, "segments": 1, "available": null},
        {"start": "-146136543-09-08T08:23:32.096Z", "end": "146140482-04-24T15:36:27.903Z", "rows": 5}
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows[0].available, Some(2));
    assert_eq!((rows[1].rows, rows[1].available), (0, Some(0)));
    assert_eq!((rows[2].rows, rows[2].available), (12, None));
    assert_eq!((rows[3].segments, rows[3].available), (0, None));
    // The eternity interval is not RFC 3339: callers skip it.
    assert_eq!(parse_time(&rows[3].start), None);
}
