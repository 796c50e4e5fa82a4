//! Instants as Druid writes them (ISO-8601 UTC, `2026-11-24T13:00:00.000Z`) and as its SQL
//! reads them (`TIMESTAMP '2026-11-24 13:00:00'`), kept as epoch milliseconds inside lockstep.
//! humantime does the calendar arithmetic; this module only adapts the shapes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses an ISO-8601 UTC instant (`...Z`, optional fraction) into epoch milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(text.trim()).ok()?;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok(),
        Err(e) => i64::try_from(e.duration().as_millis()).ok().map(|m| -m),
    }
}

fn system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Epoch milliseconds as Druid prints them: `2026-11-24T13:00:00.000Z`.
pub fn format_time(ms: i64) -> String {
    humantime::format_rfc3339_millis(system_time(ms)).to_string()
}

/// Epoch milliseconds as a Druid SQL literal: `TIMESTAMP '2026-11-24 13:00:00'` (second
/// precision: bucket bounds are always whole seconds).
pub fn sql_timestamp(ms: i64) -> String {
    let text = humantime::format_rfc3339_seconds(system_time(ms)).to_string();
    format!(
        "TIMESTAMP '{}'",
        text.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let ms = parse_time("2026-11-24T13:00:00.000Z").expect("parse");
        assert_eq!(ms % 3_600_000, 0);
        assert_eq!(format_time(ms), "2026-11-24T13:00:00.000Z");
        assert_eq!(sql_timestamp(ms), "TIMESTAMP '2026-11-24 13:00:00'");
        assert_eq!(parse_time("2026-11-24T13:00:00Z"), Some(ms));
        assert_eq!(parse_time("yesterday"), None);
    }
}
