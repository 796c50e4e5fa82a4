//! Time helpers shared by ingestion and SQL: parsing input timestamps (Druid `timestampSpec`
//! formats and SQL `TIMESTAMP` literals), ISO-8601 output exactly as Druid (Joda-Time) writes
//! it (`2026-11-24T13:00:00.000Z`, including the eternity bounds), ISO periods as Joda reads
//! them, and Druid's granularities (`PeriodGranularity`, `DurationGranularity`, `ALL`, `NONE`).
//!
//! All times are UTC epoch milliseconds (`i64`), like Druid's `__time`.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

/// `JodaUtils.MIN_INSTANT` (`Long.MIN_VALUE / 2`): the start of `Intervals.ETERNITY`, what
/// `AllGranularity.bucketStart` returns (processing/.../granularity/AllGranularity.java,
/// `DateTimes.MIN`).
pub const MIN_INSTANT: i64 = i64::MIN / 2;
/// `JodaUtils.MAX_INSTANT` (`Long.MAX_VALUE / 2`): the end of `Intervals.ETERNITY`.
pub const MAX_INSTANT: i64 = i64::MAX / 2;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;

/// Whether `ms` lies in `Intervals.ETERNITY` (`[MIN_INSTANT, MAX_INSTANT)`). Druid rejects a
/// row outside it as unparseable ("Encountered row with timestamp that cannot be represented
/// as a long", SeekableStreamIndexTaskRunner.withinMinMaxRecordTime).
pub fn in_eternity(ms: i64) -> bool {
    (MIN_INSTANT..MAX_INSTANT).contains(&ms)
}

/// Days since 1970-01-01 -> proleptic Gregorian (year, month, day), for any `i64` day count
/// (H. Hinnant's `civil_from_days`). Joda's ISOChronology is proleptic Gregorian with a year 0.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) -> days since 1970-01-01 (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Formats epoch millis the way Druid does in SQL results and segment intervals: Joda's
/// `ISODateTimeFormat.dateTime()` in UTC. Years print with at least four digits and a `-`
/// sign when negative, so the eternity bounds print as `sys.segments` shows them:
/// `-146136543-09-08T08:23:32.096Z` and `146140482-04-24T15:36:27.903Z`.
pub fn iso(ms: i64) -> String {
    let days = ms.div_euclid(DAY);
    let rem = ms.rem_euclid(DAY);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / HOUR,
        rem % HOUR / MINUTE,
        rem % MINUTE / SECOND,
        rem % SECOND,
    );
    let year = if y < 0 {
        format!("-{:04}", y.unsigned_abs())
    } else {
        format!("{y:04}")
    };
    format!("{year}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
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

/// Input timestamp formats of a Druid `timestampSpec` that the emulator understands
/// (docs/ingestion/ingestion-spec.md "timestampSpec": `iso`, `posix`, `millis`, `micro`,
/// `nano`, `auto`; `ruby` and Joda patterns are refused by the spec reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFormat {
    /// ISO-8601 strings.
    Iso,
    /// Epoch milliseconds (number or numeric string).
    Millis,
    /// Epoch seconds (number or numeric string).
    Posix,
    /// Epoch microseconds.
    Micro,
    /// Epoch nanoseconds.
    Nano,
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
            "micro" => Some(TimestampFormat::Micro),
            "nano" => Some(TimestampFormat::Nano),
            "auto" => Some(TimestampFormat::Auto),
            _ => None,
        }
    }

    /// Reads a timestamp out of a JSON value; `None` if it does not parse in this format.
    pub fn parse(self, v: &serde_json::Value) -> Option<i64> {
        let number = |v: &Value| -> Option<f64> {
            match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
        };
        let integer = |v: &Value| -> Option<i64> {
            match v {
                Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
        };
        match self {
            TimestampFormat::Iso => v.as_str().and_then(parse_iso),
            TimestampFormat::Millis => number(v).map(|n| n as i64),
            TimestampFormat::Posix => number(v).map(|n| (n * 1000.0) as i64),
            TimestampFormat::Micro => integer(v).map(|n| n.div_euclid(1000)),
            TimestampFormat::Nano => integer(v).map(|n| n.div_euclid(1_000_000)),
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
/// Months and years have variable length and are not supported here (see [`Granularity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Length in milliseconds, > 0.
    pub millis: i64,
}

impl Period {
    /// Parses an ISO-8601 period such as `PT1H`, `PT15M`, `P1D`, `PT30S`, `P1W`, `P1DT12H`,
    /// `PT0.5S`. Periods with years or months are not fixed-length: `None`.
    pub fn parse_iso(s: &str) -> Option<Period> {
        let p = IsoPeriod::parse(s)?;
        let millis = p.standard_millis()?;
        (millis > 0).then_some(Period { millis })
    }

    /// Parses a Druid segment granularity name (`HOUR`, `DAY`, `FIFTEEN_MINUTE`, ...) or an
    /// ISO period.
    pub fn parse_granularity(s: &str) -> Option<Period> {
        let m = match s.to_ascii_uppercase().as_str() {
            "SECOND" => SECOND,
            "MINUTE" => MINUTE,
            "FIVE_MINUTE" => 5 * MINUTE,
            "TEN_MINUTE" => 10 * MINUTE,
            "FIFTEEN_MINUTE" => 15 * MINUTE,
            "THIRTY_MINUTE" => 30 * MINUTE,
            "HOUR" => HOUR,
            "SIX_HOUR" => 6 * HOUR,
            "EIGHT_HOUR" => 8 * HOUR,
            "DAY" => DAY,
            "WEEK" => WEEK,
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
    if p.millis % WEEK == 0 {
        // Shift so that Monday 1969-12-29 is the origin.
        let origin = -3 * DAY;
        ms - (ms - origin).rem_euclid(p.millis)
    } else {
        p.floor(ms)
    }
}

/// An ISO-8601 period with Joda's fields (`org.joda.time.Period`, standard period type):
/// `PnYnMnWnDTnHnMn.nS`. Only non-negative fields; seconds may have up to three decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IsoPeriod {
    pub years: i64,
    pub months: i64,
    pub weeks: i64,
    pub days: i64,
    pub hours: i64,
    pub minutes: i64,
    pub seconds: i64,
    pub millis: i64,
}

impl IsoPeriod {
    /// Parses `PnYnMnWnDTnHnMnS` (Joda's `ISOPeriodFormat.standard()`); `None` if malformed.
    pub fn parse(s: &str) -> Option<IsoPeriod> {
        let s = s.trim().to_ascii_uppercase();
        let rest = s.strip_prefix('P')?;
        let (date, time) = match rest.split_once('T') {
            Some((d, t)) => (d, Some(t)),
            None => (rest, None),
        };
        let mut p = IsoPeriod::default();
        let mut any = false;
        let mut num = String::new();
        for c in date.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i64 = num.parse().ok()?;
            num.clear();
            any = true;
            match c {
                'Y' => p.years = n,
                'M' => p.months = n,
                'W' => p.weeks = n,
                'D' => p.days = n,
                _ => return None,
            }
        }
        if !num.is_empty() {
            return None;
        }
        if let Some(t) = time {
            if t.is_empty() {
                return None;
            }
            for c in t.chars() {
                if c.is_ascii_digit() || c == '.' || c == ',' {
                    num.push(if c == ',' { '.' } else { c });
                    continue;
                }
                any = true;
                match c {
                    'H' => p.hours = num.parse().ok()?,
                    'M' => p.minutes = num.parse().ok()?,
                    'S' => {
                        let (whole, frac) = match num.split_once('.') {
                            Some((w, f)) => (w, f),
                            None => (num.as_str(), ""),
                        };
                        if frac.len() > 3 || !frac.chars().all(|c| c.is_ascii_digit()) {
                            return None;
                        }
                        p.seconds = whole.parse().ok()?;
                        p.millis = if frac.is_empty() {
                            0
                        } else {
                            format!("{frac:0<3}").parse().ok()?
                        };
                    }
                    _ => return None,
                }
                num.clear();
            }
            if !num.is_empty() {
                return None;
            }
        }
        any.then_some(p)
    }

    fn values(&self) -> [i64; 8] {
        [
            self.years,
            self.months,
            self.weeks,
            self.days,
            self.hours,
            self.minutes,
            self.seconds,
            self.millis,
        ]
    }

    /// Whether every field is zero.
    pub fn is_zero(&self) -> bool {
        self.values().iter().all(|v| *v == 0)
    }

    /// More than one non-zero field (PeriodGranularity.isCompoundPeriod).
    pub fn is_compound(&self) -> bool {
        self.values().iter().filter(|v| **v != 0).count() > 1
    }

    /// `Period.toStandardDuration()`: weeks, days, hours... as fixed lengths; `None` when the
    /// period has years or months (Joda throws `UnsupportedOperationException`).
    pub fn standard_millis(&self) -> Option<i64> {
        if self.years != 0 || self.months != 0 {
            return None;
        }
        let parts = [
            (self.weeks, WEEK),
            (self.days, DAY),
            (self.hours, HOUR),
            (self.minutes, MINUTE),
            (self.seconds, SECOND),
            (self.millis, 1),
        ];
        parts.iter().try_fold(0i64, |acc, (n, unit)| {
            acc.checked_add(n.checked_mul(*unit)?)
        })
    }

    /// `chronology.add(period, t, scalar)` in UTC: years and months by the calendar (the day of
    /// month clamped to the target month), the other fields as fixed lengths.
    pub fn add_to(&self, t: i64, scalar: i64) -> i64 {
        let mut t = t;
        let months = (self.years * 12 + self.months).saturating_mul(scalar);
        if months != 0 {
            t = add_months(t, months);
        }
        let fixed = [
            (self.weeks, WEEK),
            (self.days, DAY),
            (self.hours, HOUR),
            (self.minutes, MINUTE),
            (self.seconds, SECOND),
            (self.millis, 1),
        ];
        for (n, unit) in fixed {
            t = t.saturating_add(n.saturating_mul(unit).saturating_mul(scalar));
        }
        t
    }
}

/// Adds calendar months in UTC, clamping the day of month (Joda's `months().add`).
fn add_months(t: i64, n: i64) -> i64 {
    let days = t.div_euclid(DAY);
    let tod = t.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + i64::from(m) - 1 + n;
    let (ny, nm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * DAY + tod
}

/// Whole calendar months from `from` to `to`, truncated toward zero (Joda's
/// `months().getDifference(to, from)`).
fn months_between(from: i64, to: i64) -> i64 {
    if to < from {
        return -months_between(to, from);
    }
    let (fy, fm, _) = civil_from_days(from.div_euclid(DAY));
    let (ty, tm, _) = civil_from_days(to.div_euclid(DAY));
    let mut n = (ty * 12 + i64::from(tm)) - (fy * 12 + i64::from(fm));
    while n > 0 && add_months(from, n) > to {
        n -= 1;
    }
    n
}

/// A Druid granularity (`segmentGranularity`, `queryGranularity`), in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// `NONE`: millisecond buckets (NoneGranularity).
    None,
    /// `ALL`: one bucket, eternity (AllGranularity: bucketStart = `DateTimes.MIN`).
    All,
    /// `{"type":"period"}` and every standard name but ALL/NONE (PeriodGranularity).
    Period {
        period: IsoPeriod,
        origin: Option<i64>,
    },
    /// `{"type":"duration","duration":ms,"origin":...}` (DurationGranularity).
    Duration { millis: i64, origin: i64 },
}

impl From<Period> for Granularity {
    /// A fixed-length [`Period`] as Druid's PeriodGranularity of the same standard period:
    /// one field when the length is a whole number of weeks, days, hours, minutes or seconds.
    fn from(p: Period) -> Granularity {
        let m = p.millis;
        let mut period = IsoPeriod::default();
        if m % WEEK == 0 {
            period.weeks = m / WEEK;
        } else if m % DAY == 0 {
            period.days = m / DAY;
        } else if m % HOUR == 0 {
            period.hours = m / HOUR;
        } else if m % MINUTE == 0 {
            period.minutes = m / MINUTE;
        } else if m % SECOND == 0 {
            period.seconds = m / SECOND;
        } else {
            period.millis = m;
        }
        Granularity::Period {
            period,
            origin: None,
        }
    }
}

fn standard(p: &str) -> Granularity {
    Granularity::Period {
        period: IsoPeriod::parse(p).unwrap_or_default(),
        origin: None,
    }
}

impl Granularity {
    /// A standard granularity name, case-insensitive (`Granularity.fromString` =
    /// `GranularityType.valueOf(upper)`; GranularityType.java lists the names and periods).
    /// ISO periods are not names: Druid refuses `"PT1H"` as a string granularity.
    pub fn from_name(s: &str) -> Option<Granularity> {
        Some(match s.to_ascii_uppercase().as_str() {
            "ALL" => Granularity::All,
            "NONE" => Granularity::None,
            "SECOND" => standard("PT1S"),
            "MINUTE" => standard("PT1M"),
            "FIVE_MINUTE" => standard("PT5M"),
            "TEN_MINUTE" => standard("PT10M"),
            "FIFTEEN_MINUTE" => standard("PT15M"),
            "THIRTY_MINUTE" => standard("PT30M"),
            "HOUR" => standard("PT1H"),
            "SIX_HOUR" => standard("PT6H"),
            "EIGHT_HOUR" => standard("PT8H"),
            "DAY" => standard("P1D"),
            "WEEK" => standard("P1W"),
            "MONTH" => standard("P1M"),
            "QUARTER" => standard("P3M"),
            "YEAR" => standard("P1Y"),
            _ => return None,
        })
    }

    /// Reads a granularity as Druid's Jackson does (GranularityModule.java: a string is a
    /// standard name; an object has `type` `period`, `duration`, `all` or `none`; no other
    /// type id exists, so `{"type":"hour"}` is refused as Druid refuses it). Only UTC: a
    /// `timeZone` other than UTC is refused (the emulator has no time-zone database).
    pub fn from_json(v: &Value) -> Result<Granularity, String> {
        match v {
            Value::String(s) => Granularity::from_name(s).ok_or_else(|| {
                format!(
                    "'{s}' is not a granularity (Druid accepts ALL, NONE, SECOND, MINUTE, \
                     FIVE_MINUTE, TEN_MINUTE, FIFTEEN_MINUTE, THIRTY_MINUTE, HOUR, SIX_HOUR, \
                     EIGHT_HOUR, DAY, WEEK, MONTH, QUARTER, YEAR, or an object)"
                )
            }),
            Value::Object(o) => {
                let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
                let known: &[&str] = match ty {
                    "all" | "none" => &["type"],
                    "period" => &["type", "period", "timeZone", "origin"],
                    "duration" => &["type", "duration", "origin"],
                    other => {
                        return Err(format!(
                            "granularity type '{other}' does not exist (Druid's types are \
                             period, duration, all, none)"
                        ))
                    }
                };
                if let Some((k, _)) = o
                    .iter()
                    .find(|(k, v)| !v.is_null() && !known.contains(&k.as_str()))
                {
                    return Err(format!(
                        "field '{k}' is not supported in a {ty} granularity"
                    ));
                }
                let origin = match o.get("origin") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(
                        parse_iso(s).ok_or_else(|| format!("origin '{s}' is not a date-time"))?,
                    ),
                    Some(Value::Number(n)) => Some(
                        n.as_i64()
                            .ok_or_else(|| format!("origin {n} is not a date-time"))?,
                    ),
                    Some(other) => return Err(format!("origin {other} is not a date-time")),
                };
                match ty {
                    "all" => Ok(Granularity::All),
                    "none" => Ok(Granularity::None),
                    "period" => {
                        match o.get("timeZone") {
                            None | Some(Value::Null) => {}
                            Some(Value::String(tz)) if is_utc(tz) => {}
                            Some(tz) => {
                                return Err(format!(
                                    "timeZone {tz} is not supported by the emulator (UTC only)"
                                ))
                            }
                        }
                        let p = o.get("period").and_then(Value::as_str).ok_or_else(|| {
                            "a period granularity needs a 'period' string".to_string()
                        })?;
                        let period = IsoPeriod::parse(p)
                            .ok_or_else(|| format!("period '{p}' is not an ISO-8601 period"))?;
                        // PeriodGranularity: "zero period is not acceptable".
                        if period.is_zero() {
                            return Err(format!("period '{p}': zero period is not acceptable"));
                        }
                        // Compound periods with years or months use Joda's iterative
                        // truncation (truncateCompoundPeriod); not emulated.
                        if period.is_compound() && period.standard_millis().is_none() {
                            return Err(format!(
                                "period '{p}' mixes months or years with other fields; not \
                                 supported by the emulator"
                            ));
                        }
                        Ok(Granularity::Period { period, origin })
                    }
                    _ => {
                        let millis = match o.get("duration") {
                            Some(Value::Number(n)) => n.as_i64(),
                            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
                            _ => None,
                        }
                        .filter(|d| *d > 0)
                        .ok_or_else(|| {
                            "a duration granularity needs a positive 'duration' in ms".to_string()
                        })?;
                        // DurationGranularity keeps `origin % duration`.
                        Ok(Granularity::Duration {
                            millis,
                            origin: origin.unwrap_or(0) % millis,
                        })
                    }
                }
            }
            other => Err(format!("{other} is not a granularity")),
        }
    }

    /// Start of the bucket containing `t` (`Granularity.bucketStart(long)`).
    pub fn bucket_start(&self, t: i64) -> i64 {
        match *self {
            Granularity::None => t,
            Granularity::All => MIN_INSTANT,
            // DurationGranularity.truncate: offset = t % duration - origin, wrapped.
            Granularity::Duration { millis, origin } => {
                let mut offset = t % millis - origin;
                if offset < 0 {
                    offset += millis;
                }
                t - offset
            }
            Granularity::Period { period, origin } => truncate_period(&period, origin, t),
        }
    }

    /// End of the bucket starting at `start` (`Granularity.increment`).
    pub fn bucket_end(&self, start: i64) -> i64 {
        match *self {
            Granularity::None => start.saturating_add(1),
            Granularity::All => MAX_INSTANT,
            Granularity::Duration { millis, .. } => start.saturating_add(millis),
            Granularity::Period { period, .. } => period.add_to(start, 1),
        }
    }
}

/// Time-zone ids Joda resolves to UTC.
fn is_utc(tz: &str) -> bool {
    matches!(
        tz.to_ascii_uppercase().as_str(),
        "UTC" | "ETC/UTC" | "Z" | "GMT" | "ETC/GMT" | "+00:00" | "00:00" | "UCT" | "ETC/UCT"
    )
}

/// PeriodGranularity.truncate in UTC (processing/.../granularity/PeriodGranularity.java),
/// branch by branch: compound periods by fixed length from the origin; a single field of 1
/// without origin by the calendar field (`roundFloor`, weeks to Monday); otherwise multiples
/// of the field counted from the origin (default 1970-01-01T00:00Z). Joda's differences
/// truncate toward zero, so Druid's quirks before 1970 are kept as they are.
fn truncate_period(p: &IsoPeriod, origin_opt: Option<i64>, t: i64) -> i64 {
    let has_origin = origin_opt.is_some();
    let origin = origin_opt.unwrap_or(0);
    if p.is_compound() {
        // truncateMillisPeriod (UTC days and hours are precise).
        let millis = p.standard_millis().unwrap_or(1).max(1);
        let mut offset = t % millis - origin % millis;
        if offset < 0 {
            offset += millis;
        }
        return t - offset;
    }
    // Multiples of a fixed unit counted from the origin, rounding down before it.
    let fixed = |n: i64, unit: i64| -> i64 {
        let mut k = (t - origin) / unit;
        k -= k % n;
        let tt = origin + k * unit;
        if t < tt {
            tt - n * unit
        } else {
            tt
        }
    };
    let day_floor = t - t.rem_euclid(DAY);
    let (y, mo, _) = civil_from_days(t.div_euclid(DAY));
    if p.years > 0 {
        if p.years > 1 || has_origin {
            // years().getDifference: whole years from the origin.
            let mut n = months_between(origin, t) / 12;
            n -= n % p.years;
            let tt = add_months(origin, n * 12);
            return if t < tt {
                add_months(origin, (n - p.years) * 12)
            } else {
                tt
            };
        }
        return days_from_civil(y, 1, 1) * DAY;
    }
    if p.months > 0 {
        if p.months > 1 || has_origin {
            let mut n = months_between(origin, t);
            n -= n % p.months;
            let tt = add_months(origin, n);
            return if t < tt {
                add_months(origin, n - p.months)
            } else {
                tt
            };
        }
        return days_from_civil(y, mo, 1) * DAY;
    }
    if p.weeks > 0 {
        if p.weeks > 1 || has_origin {
            return fixed(p.weeks, WEEK);
        }
        // dayOfWeek().roundFloor, then set Monday (ISO day 1); 1970-01-01 was a Thursday.
        let dow = (t.div_euclid(DAY) + 3).rem_euclid(7);
        return day_floor - dow * DAY;
    }
    if p.days > 0 {
        return if p.days > 1 || has_origin {
            fixed(p.days, DAY)
        } else {
            day_floor
        };
    }
    if p.hours > 0 {
        if p.hours > 1 || has_origin {
            let mut h = (t - origin) / HOUR;
            h -= h % p.hours;
            let tt = origin + h * HOUR;
            return if t < tt && origin > 0 {
                tt - p.hours * HOUR
            } else if t > tt && origin < 0 {
                tt - tt.rem_euclid(HOUR)
            } else {
                tt
            };
        }
        return t - t.rem_euclid(HOUR);
    }
    if p.minutes > 0 {
        return if p.minutes > 1 || has_origin {
            fixed(p.minutes, MINUTE)
        } else {
            t - t.rem_euclid(MINUTE)
        };
    }
    if p.seconds > 0 {
        return if p.seconds > 1 || has_origin {
            fixed(p.seconds, SECOND)
        } else {
            t - t.rem_euclid(SECOND)
        };
    }
    if p.millis > 1 {
        return fixed(p.millis, 1);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(iso(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        for ms in [-62_167_219_200_000i64, 951_782_400_000, 4_102_444_800_123] {
            let want = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(iso(ms), want);
        }
    }

    #[test]
    fn eternity_prints_as_sys_segments_shows_it() {
        assert_eq!(iso(MIN_INSTANT), "-146136543-09-08T08:23:32.096Z");
        assert_eq!(iso(MAX_INSTANT), "146140482-04-24T15:36:27.903Z");
        assert!(in_eternity(0) && in_eternity(MIN_INSTANT) && !in_eternity(MAX_INSTANT));
    }

    #[test]
    fn periods() {
        assert_eq!(Period::parse_iso("PT1H").unwrap().millis, 3_600_000);
        assert_eq!(Period::parse_iso("PT15M").unwrap().millis, 900_000);
        assert_eq!(Period::parse_iso("P1D").unwrap().millis, 86_400_000);
        assert_eq!(Period::parse_iso("P1DT12H").unwrap().millis, 129_600_000);
        assert_eq!(Period::parse_iso("PT3600S").unwrap().millis, 3_600_000);
        assert_eq!(Period::parse_iso("PT0.5S").unwrap().millis, 500);
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
        let y = IsoPeriod::parse("P1Y2M3W4DT5H6M7.25S").unwrap();
        assert_eq!(
            (y.years, y.months, y.weeks, y.days, y.hours, y.minutes, y.seconds, y.millis),
            (1, 2, 3, 4, 5, 6, 7, 250)
        );
    }

    fn floor(g: &Granularity, s: &str) -> String {
        iso(g.bucket_start(parse_iso(s).unwrap()))
    }

    #[test]
    fn granularities_like_druid() {
        let t = "2026-11-25T10:41:07.123Z";
        let name = |n: &str| Granularity::from_name(n).unwrap();
        assert_eq!(floor(&name("hour"), t), "2026-11-25T10:00:00.000Z");
        assert_eq!(floor(&name("SIX_HOUR"), t), "2026-11-25T06:00:00.000Z");
        assert_eq!(floor(&name("DAY"), t), "2026-11-25T00:00:00.000Z");
        assert_eq!(floor(&name("WEEK"), t), "2026-11-23T00:00:00.000Z");
        assert_eq!(floor(&name("MONTH"), t), "2026-11-01T00:00:00.000Z");
        assert_eq!(floor(&name("QUARTER"), t), "2026-10-01T00:00:00.000Z");
        assert_eq!(floor(&name("YEAR"), t), "2026-01-01T00:00:00.000Z");
        assert_eq!(
            floor(&name("fifteen_minute"), t),
            "2026-11-25T10:30:00.000Z"
        );
        assert_eq!(floor(&Granularity::None, t), t);
        let all = Granularity::All;
        assert_eq!(floor(&all, t), "-146136543-09-08T08:23:32.096Z");
        assert_eq!(
            iso(all.bucket_end(MIN_INSTANT)),
            "146140482-04-24T15:36:27.903Z"
        );
        let month = name("MONTH");
        let jan31 = parse_iso("2026-01-31T00:00:00Z").unwrap();
        assert_eq!(
            iso(month.bucket_end(month.bucket_start(jan31))),
            "2026-02-01T00:00:00.000Z"
        );
        let q = name("QUARTER");
        let start = q.bucket_start(parse_iso("2026-11-25T00:00:00Z").unwrap());
        assert_eq!(iso(q.bucket_end(start)), "2027-01-01T00:00:00.000Z");
        assert!(
            Granularity::from_name("PT1H").is_none(),
            "Druid refuses periods as names"
        );

        let g = |v: Value| Granularity::from_json(&v);
        assert_eq!(g(json!({"type": "none"})).unwrap(), Granularity::None);
        assert_eq!(g(json!({"type": "all"})).unwrap(), Granularity::All);
        assert_eq!(g(json!("hour")).unwrap(), name("HOUR"));
        let p = g(json!({"type": "period", "period": "PT1H", "timeZone": "UTC", "origin": null}))
            .unwrap();
        assert_eq!(p, name("HOUR"));
        let p2 = g(json!({"type": "period", "period": "PT2H", "origin": "1970-01-01T01:00:00Z"}))
            .unwrap();
        assert_eq!(floor(&p2, t), "2026-11-25T09:00:00.000Z");
        let d = g(json!({"type": "duration", "duration": 7_200_000})).unwrap();
        assert_eq!(floor(&d, t), "2026-11-25T10:00:00.000Z");
        let d =
            g(json!({"type": "duration", "duration": 3_600_000, "origin": "2012-01-01T00:30:00Z"}))
                .unwrap();
        assert_eq!(floor(&d, t), "2026-11-25T10:30:00.000Z");
        assert!(g(json!({"type": "hour"})).unwrap_err().contains("hour"));
        assert!(
            g(json!({"type": "period", "period": "P1D", "timeZone": "America/Los_Angeles"}))
                .unwrap_err()
                .contains("timeZone")
        );
        assert!(g(json!("PT1H")).is_err());
    }

    #[test]
    fn timestamp_formats() {
        assert_eq!(TimestampFormat::Millis.parse(&json!(1000)), Some(1000));
        assert_eq!(TimestampFormat::Posix.parse(&json!("2")), Some(2000));
        assert_eq!(
            TimestampFormat::Auto.parse(&json!("1970-01-01T00:00:01Z")),
            Some(1000)
        );
        assert_eq!(TimestampFormat::Auto.parse(&json!(5)), Some(5));
        assert_eq!(TimestampFormat::Iso.parse(&json!(5)), None);
        assert_eq!(TimestampFormat::Micro.parse(&json!(5_000_000)), Some(5000));
        assert_eq!(
            TimestampFormat::Nano.parse(&json!("5000000000")),
            Some(5000)
        );
    }
}
