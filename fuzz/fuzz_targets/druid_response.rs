//! Fuzz target: how lockstep reads a Druid Router's answers (any HTTP status, any body): the
//! error classifier and the decoders of every response type the drift engine reads must
//! return a value or an error, never panic.
//!
//! Input: two bytes of HTTP status (big-endian, taken modulo 600), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_druid::{
    parse_time, BucketRow, DruidError, LatestRow, SegmentInterval, SupervisorState,
    SupervisorStatus,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]) % 600;
    let body = &data[2..];
    let _ = DruidError::from_response("fuzz", "sql", status, body).to_string();
    let _ = DruidError::from_decode("fuzz", "sql", status, body, "fuzz").to_string();
    let _ = serde_json::from_slice::<Vec<SegmentInterval>>(body);
    let _ = serde_json::from_slice::<Vec<BucketRow>>(body);
    let _ = serde_json::from_slice::<Vec<LatestRow>>(body);
    let _ = serde_json::from_slice::<Vec<SupervisorState>>(body);
    let _ = serde_json::from_slice::<SupervisorStatus>(body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = parse_time(text);
    }
});
