//! Fuzz target: how lockstep reads a Druid Router's answers (any HTTP status, any body): the
//! error classifier and the decoders of every response type the drift engine reads must
//! return a value or an error, never panic.
//!
//! Input: two bytes of HTTP status (big-endian, taken modulo 600), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_druid::{
    parse_time, BucketRow, DruidError, LatestRow, SegmentInterval, SpecSummary, StreamPartition,
    SupervisorState, SupervisorStatus,
};

fn classify(e: &DruidError) {
    let _ = e.to_string();
    let _ = (e.kind(), e.status(), e.druid_answered());
    let _ = (e.is_missing_table(), e.is_no_such_supervisor());
    let _ = (e.is_query_timeout(), e.is_capacity_exceeded());
    if let Some(b) = e.body() {
        let _ = (b.headline(), b.effective_category());
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]) % 600;
    let body = &data[2..];
    classify(&DruidError::from_response("fuzz", "sql", status, body));
    classify(&DruidError::from_decode(
        "fuzz", "sql", status, body, "fuzz",
    ));
    let _ = serde_json::from_slice::<Vec<SegmentInterval>>(body);
    let _ = serde_json::from_slice::<Vec<BucketRow>>(body);
    let _ = serde_json::from_slice::<Vec<LatestRow>>(body);
    let _ = serde_json::from_slice::<Vec<SupervisorState>>(body);
    if let Ok(st) = serde_json::from_slice::<SupervisorStatus>(body) {
        let end = st.payload.ingested_end();
        let _ = serde_json::to_string(&end);
        let _ = st.payload.offsets_last_updated_ms();
        let _ = st.payload.recent_error_texts();
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Err(e) = SpecSummary::from_json(&v) {
            let _ = e.to_string();
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = parse_time(text);
        if let Some(p) = StreamPartition::parse(text) {
            assert_eq!(StreamPartition::parse(&p.to_string()), Some(p));
        }
    }
});
