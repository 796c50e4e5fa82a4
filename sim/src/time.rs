//! Time helpers shared by ingestion and SQL: parsing input timestamps (Druid `timestampSpec`
//! formats and SQL `TIMESTAMP` literals), ISO-8601 output exactly as Druid writes it
//! (`2026-11-24T13:00:00.000Z`), and epoch-aligned period/granularity arithmetic in UTC.
//!
//! All times are UTC epoch milliseconds (`i64`), like Druid's `__time`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Formats epoch millis the way Druid does in SQL results and segment intervals.
pub fn iso(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// Parses an ISO-8601 timestamp: `2026-11-23T00:00:00Z`, `2026-11-23T00:00:00.123+01:00`,
/// `2026-11-23 00:00:00` (no zone = UTC, as Druid assumes), or a bare date `2026-11-23`.
pub fn parse_iso(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    // RFC 3339 with a space instead of the `T`, with a zone.
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(t.timestamp_millis());
    }
    let naive = s.strip_suffix('Z').unwrap_or(s);
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(naive, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// Input timestamp formats of a Druid `timestampSpec` that the emulator understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFormat {
    /// ISO-8601 strings.
    Iso,
    /// Epoch milliseconds (number or numeric string).
    Millis,
    /// Epoch seconds (number or numeric string).
    Posix,
    /// Numbers as millis, strings as ISO or numeric millis (Druid's `auto`).
    Auto,
}

impl TimestampFormat {
    /// Parses the `format` field of a `timestampSpec` (Druid's default is `auto`).
    pub fn from_spec(s: &str) -> Option<TimestampFormat> {
        match s.to_ascii_lowercase().as_str() {
            "iso" => Some(TimestampFormat::Iso),
            "millis" => Some(TimestampFormat::Millis),
            "posix" => Some(TimestampFormat::Posix),
            "auto" => Some(TimestampFormat::Auto),
            _ => None,
        }
    }

    /// Reads a timestamp out of a JSON value; `None` if it does not parse in this format.
    pub fn parse(self, v: &serde_json::Value) -> Option<i64> {
        use serde_json::Value;
        let number = |v: &Value| -> Option<f64> {
            match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
        };
        match self {
            TimestampFormat::Iso => v.as_str().and_then(parse_iso),
            TimestampFormat::Millis => number(v).map(|n| n as i64),
            TimestampFormat::Posix => number(v).map(|n| (n * 1000.0) as i64),
            TimestampFormat::Auto => match v {
                Value::Number(_) => number(v).map(|n| n as i64),
                Value::String(s) => parse_iso(s).or_else(|| number(v).map(|n| n as i64)),
                _ => None,
            },
        }
    }
}

/// A fixed-length period aligned to the Unix epoch in UTC: what `TIME_FLOOR` with a
/// `PTnS`/`PTnM`/`PTnH`/`PnD`/`PnW` period and Druid's segment granularities up to a week do.
/// Months and years have variable length and are not supported (callers report that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Length in milliseconds, > 0.
    pub millis: i64,
}

impl Period {
    /// Parses an ISO-8601 period such as `PT1H`, `PT15M`, `P1D`, `PT30S`, `P1W`, `P1DT12H`.
    pub fn parse_iso(s: &str) -> Option<Period> {
        let s = s.trim().to_ascii_uppercase();
        let rest = s.strip_prefix('P')?;
        let (date, time) = match rest.split_once('T') {
            Some((d, t)) => (d, Some(t)),
            None => (rest, None),
        };
        let mut millis: i64 = 0;
        let mut parse_part = |part: &str, units: &[(char, i64)]| -> Option<()> {
            let mut num = String::new();
            for c in part.chars() {
                if c.is_ascii_digit() {
                    num.push(c);
                } else {
                    let unit = units.iter().find(|(u, _)| *u == c)?.1;
                    let n: i64 = num.parse().ok()?;
                    millis = millis.checked_add(n.checked_mul(unit)?)?;
                    num.clear();
                }
            }
            num.is_empty().then_some(())
        };
        parse_part(date, &[('W', 7 * 86_400_000), ('D', 86_400_000)])?;
        if let Some(t) = time {
            if t.is_empty() {
                return None;
            }
            parse_part(t, &[('H', 3_600_000), ('M', 60_000), ('S', 1_000)])?;
        }
        (millis > 0).then_some(Period { millis })
    }

    /// Parses a Druid segment granularity name (`HOUR`, `DAY`, `FIFTEEN_MINUTE`, ...) or an
    /// ISO period.
    pub fn parse_granularity(s: &str) -> Option<Period> {
        let m = match s.to_ascii_uppercase().as_str() {
            "SECOND" => 1_000,
            "MINUTE" => 60_000,
            "FIVE_MINUTE" => 300_000,
            "TEN_MINUTE" => 600_000,
            "FIFTEEN_MINUTE" => 900_000,
            "THIRTY_MINUTE" => 1_800_000,
            "HOUR" => 3_600_000,
            "SIX_HOUR" => 6 * 3_600_000,
            "EIGHT_HOUR" => 8 * 3_600_000,
            "DAY" => 86_400_000,
            "WEEK" => 7 * 86_400_000,
            other => return Period::parse_iso(other),
        };
        Some(Period { millis: m })
    }

    /// Start of the period containing `ms`.
    pub fn floor(self, ms: i64) -> i64 {
        ms - ms.rem_euclid(self.millis)
    }
}

/// Druid's `P1W` and `WEEK` align to Mondays (1970-01-01 was a Thursday); days and shorter
/// align to the epoch. This returns the floor Druid gives for a period.
pub fn druid_floor(p: Period, ms: i64) -> i64 {
    const WEEK: i64 = 7 * 86_400_000;
    if p.millis % WEEK == 0 {
        // Shift so that Monday 1969-12-29 is the origin.
        let origin = -3 * 86_400_000;
        ms - (ms - origin).rem_euclid(p.millis)
    } else {
        p.floor(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let ms = parse_iso("2026-11-24T13:00:00Z").unwrap();
        assert_eq!(iso(ms), "2026-11-24T13:00:00.000Z");
        assert_eq!(parse_iso("2026-11-24 13:00:00"), Some(ms));
        assert_eq!(parse_iso("2026-11-24T14:00:00+01:00"), Some(ms));
        assert_eq!(parse_iso("2026-11-24T13:00:00.000Z"), Some(ms));
        assert_eq!(
            parse_iso("2026-11-24"),
            Some(ms - 13 * 3_600_000),
            "bare date is midnight UTC"
        );
        assert_eq!(parse_iso("yesterday"), None);
    }

    #[test]
    fn periods() {
        assert_eq!(Period::parse_iso("PT1H").unwrap().millis, 3_600_000);
        assert_eq!(Period::parse_iso("PT15M").unwrap().millis, 900_000);
        assert_eq!(Period::parse_iso("P1D").unwrap().millis, 86_400_000);
        assert_eq!(Period::parse_iso("P1DT12H").unwrap().millis, 129_600_000);
        assert_eq!(Period::parse_iso("P1M"), None, "months are variable");
        assert_eq!(Period::parse_iso("PT"), None);
        assert_eq!(Period::parse_iso("1H"), None);
        let p = Period::parse_iso("PT1H").unwrap();
        let t = parse_iso("2026-11-24T13:59:59.999Z").unwrap();
        assert_eq!(iso(p.floor(t)), "2026-11-24T13:00:00.000Z");
        assert_eq!(
            Period::parse_granularity("fifteen_minute").unwrap().millis,
            900_000
        );
        let w = Period::parse_iso("P1W").unwrap();
        // 2026-11-25 is a Wednesday; its week starts Monday 2026-11-23.
        let t = parse_iso("2026-11-25T10:00:00Z").unwrap();
        assert_eq!(iso(druid_floor(w, t)), "2026-11-23T00:00:00.000Z");
    }

    #[test]
    fn timestamp_formats() {
        use serde_json::json;
        assert_eq!(TimestampFormat::Millis.parse(&json!(1000)), Some(1000));
        assert_eq!(TimestampFormat::Posix.parse(&json!("2")), Some(2000));
        assert_eq!(
            TimestampFormat::Auto.parse(&json!("1970-01-01T00:00:01Z")),
            Some(1000)
        );
        assert_eq!(TimestampFormat::Auto.parse(&json!(5)), Some(5));
        assert_eq!(TimestampFormat::Iso.parse(&json!(5)), None);
    }
}
