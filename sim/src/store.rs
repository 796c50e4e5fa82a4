//! Ingested data, per datasource, and the segments derived from it.
//!
//! Storage choice: a datasource is a `BTreeMap` from row timestamp (epoch millis) to an
//! [`Entry`] holding the number of rows with exactly that timestamp, their input bytes, and
//! the sums of every numeric column (numeric dimensions and `metricsSpec` metrics). Rows
//! with equal timestamps collapse into one entry, and no string dimension values are kept;
//! with rollup, an entry also keeps a 64-bit hash per distinct dimension tuple, so rows
//! with equal (truncated) timestamp and dimensions merge into one stored row as in Druid. This answers every supported query exactly:
//! `COUNT(*)` and `SUM(col)` for any `__time` range and any `TIME_FLOOR` period (the key is
//! the row's own timestamp, so no resolution is lost), `MIN`/`MAX(__time)`, and per-segment
//! row counts and sizes. Memory is one small entry per distinct timestamp, not per row.
//!
//! Segments are not stored: `sys.segments` rows are derived on demand by grouping entries by
//! the datasource's segment granularity, so a dropped interval (fault) changes them at once.
//! A datasource with no rows does not exist, as in Druid (it has no segments).

use crate::time::Period;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// A running sum of one numeric column over the rows of an entry or a query group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sum {
    pub long: i64,
    pub double: f64,
    /// Whether any value was fractional (then the column sums as DOUBLE, as Druid would
    /// type a `doubleSum`).
    pub is_double: bool,
}

impl Sum {
    pub fn add_number(&mut self, n: &serde_json::Number) {
        if let Some(i) = n.as_i64() {
            self.long = self.long.wrapping_add(i);
            self.double += i as f64;
        } else if let Some(f) = n.as_f64() {
            self.is_double = true;
            self.double += f;
            self.long = self.long.wrapping_add(f as i64);
        }
    }

    pub fn add(&mut self, o: &Sum) {
        self.long = self.long.wrapping_add(o.long);
        self.double += o.double;
        self.is_double |= o.is_double;
    }
}

/// All rows of one datasource that share one timestamp.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub rows: u64,
    pub bytes: u64,
    pub sums: Vec<(Arc<str>, Sum)>,
    /// With rollup: hashes of the dimension tuples already in this time bucket.
    pub tuples: Option<std::collections::HashSet<u64>>,
}

impl Entry {
    pub fn sum(&self, col: &str) -> Option<&Sum> {
        self.sums.iter().find(|(c, _)| &**c == col).map(|(_, s)| s)
    }
}

/// A metric of a `metricsSpec` the emulator computes at ingestion.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// `{"type":"count","name":N}`: 1 per input row.
    Count { name: String },
    /// `longSum` / `doubleSum` of an input field.
    Sum {
        name: String,
        field: String,
        double: bool,
    },
}

impl Metric {
    /// Whether `column` is this metric's name or input (excluded from schemaless dimensions).
    fn uses(&self, column: &str) -> bool {
        match self {
            Metric::Count { name } => name == column,
            Metric::Sum { name, field, .. } => name == column || field == column,
        }
    }
}

/// How a supervisor turns input rows into stored rows (Druid's `dataSchema`).
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub timestamp_column: String,
    /// `granularitySpec.segmentGranularity` (None: the emulator's default).
    pub segment_granularity: Option<Period>,
    /// `granularitySpec.queryGranularity` (None: NONE, timestamps kept to the millisecond).
    pub query_granularity: Option<Period>,
    /// `granularitySpec.rollup` (Druid's default: true).
    pub rollup: bool,
    /// `dimensionsSpec.dimensions` (None: schemaless, every other field).
    pub dimensions: Option<Vec<String>>,
    pub metrics: Vec<Metric>,
}

impl Schema {
    /// No rollup, no metrics: every input row is one stored row; numeric fields sum.
    pub fn raw(timestamp_column: &str) -> Schema {
        Schema {
            timestamp_column: timestamp_column.to_string(),
            segment_granularity: None,
            query_granularity: None,
            rollup: false,
            dimensions: None,
            metrics: Vec::new(),
        }
    }
}

/// Column kinds seen in a datasource's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Numeric (summable).
    Long,
    Double,
    /// Strings, booleans, nested values: present, but not summable.
    Other,
}

/// One datasource's rows.
#[derive(Debug)]
pub struct Datasource {
    pub entries: BTreeMap<i64, Entry>,
    pub columns: HashMap<Arc<str>, ColumnKind>,
    /// Segment start -> version (creation time, ISO) of the segment.
    pub versions: HashMap<i64, String>,
    pub granularity: Period,
    pub total_rows: u64,
}

/// One derived segment, as `sys.segments` and the coordinator API show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub datasource: String,
    pub start: i64,
    pub end: i64,
    pub num_rows: u64,
    pub size: u64,
    pub version: String,
}

impl Segment {
    /// Druid's segment id: `{datasource}_{start}_{end}_{version}` (partition 0 has no suffix).
    pub fn id(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.datasource,
            crate::time::iso(self.start),
            crate::time::iso(self.end),
            self.version
        )
    }
}

/// All datasources of one emulator, plus the drop-interval fault state.
#[derive(Debug)]
pub struct Store {
    inner: RwLock<Inner>,
    default_granularity: Period,
}

#[derive(Debug, Default)]
struct Inner {
    datasources: HashMap<String, Datasource>,
    /// Datasource -> intervals `[start, end)` whose rows are dropped, now and when ingested.
    drops: HashMap<String, Vec<(i64, i64)>>,
}

impl Store {
    pub fn new(default_granularity: Period) -> Store {
        Store {
            inner: RwLock::new(Inner::default()),
            default_granularity,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores one parsed row under `schema`; returns false if a drop fault swallowed it.
    pub fn ingest(
        &self,
        ds: &str,
        schema: &Schema,
        ts: i64,
        row: &serde_json::Map<String, serde_json::Value>,
        bytes: u64,
    ) -> bool {
        let mut inner = self.write();
        if let Some(drops) = inner.drops.get(ds) {
            if drops.iter().any(|(s, e)| *s <= ts && ts < *e) {
                return false;
            }
        }
        let default = self.default_granularity;
        let d = inner
            .datasources
            .entry(ds.to_string())
            .or_insert_with(|| Datasource {
                entries: BTreeMap::new(),
                columns: HashMap::new(),
                versions: HashMap::new(),
                granularity: schema.segment_granularity.unwrap_or(default),
                total_rows: 0,
            });
        if let Some(g) = schema.segment_granularity {
            d.granularity = g;
        }
        let key = schema.query_granularity.map_or(ts, |g| g.floor(ts));
        let seg = d.granularity.floor(key);
        d.versions
            .entry(seg)
            .or_insert_with(|| crate::time::iso(chrono::Utc::now().timestamp_millis()));
        // Dimensions: the listed ones, or (schemaless) every field but the timestamp and the
        // metrics' names and inputs.
        let is_dim = |k: &str| match &schema.dimensions {
            Some(dims) => dims.iter().any(|d| d == k),
            None => k != schema.timestamp_column && !schema.metrics.iter().any(|m| m.uses(k)),
        };
        let mut dims: Vec<(&String, &serde_json::Value)> =
            row.iter().filter(|(k, _)| is_dim(k)).collect();
        dims.sort_by(|a, b| a.0.cmp(b.0));
        let e = d.entries.entry(key).or_default();
        // With rollup, a row whose dimensions are already in this time bucket merges into it:
        // the row count and dimension sums stay, the metrics add up.
        let new_row = if schema.rollup {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for (k, v) in &dims {
                k.hash(&mut h);
                v.to_string().hash(&mut h);
            }
            e.tuples
                .get_or_insert_with(Default::default)
                .insert(h.finish())
        } else {
            true
        };
        if new_row {
            e.rows += 1;
            d.total_rows += 1;
        }
        e.bytes += bytes;
        let mut add = |name: &str, kind: ColumnKind, n: Option<&serde_json::Number>| {
            let interned = match d.columns.get_key_value(name) {
                Some((k, old)) => {
                    let k = k.clone();
                    let merged = match (*old, kind) {
                        (ColumnKind::Other, _) | (_, ColumnKind::Other) => ColumnKind::Other,
                        (ColumnKind::Double, _) | (_, ColumnKind::Double) => ColumnKind::Double,
                        _ => ColumnKind::Long,
                    };
                    d.columns.insert(k.clone(), merged);
                    k
                }
                None => {
                    let k: Arc<str> = Arc::from(name);
                    d.columns.insert(k.clone(), kind);
                    k
                }
            };
            if let Some(n) = n {
                match e.sums.iter_mut().find(|(c, _)| *c == interned) {
                    Some((_, s)) => s.add_number(n),
                    None => {
                        let mut s = Sum::default();
                        s.add_number(n);
                        e.sums.push((interned, s));
                    }
                }
            }
        };
        for (k, v) in &dims {
            let (kind, n) = match v {
                serde_json::Value::Number(n) if n.is_f64() => (ColumnKind::Double, Some(n)),
                serde_json::Value::Number(n) => (ColumnKind::Long, Some(n)),
                _ => (ColumnKind::Other, None),
            };
            add(k, kind, if new_row { n } else { None });
        }
        let one = serde_json::Number::from(1);
        let zero = serde_json::Number::from(0);
        for m in &schema.metrics {
            match m {
                Metric::Count { name } => add(name, ColumnKind::Long, Some(&one)),
                Metric::Sum {
                    name,
                    field,
                    double,
                } => {
                    let v = match row.get(field) {
                        Some(serde_json::Value::Number(n)) => n.clone(),
                        Some(serde_json::Value::String(s)) => s
                            .trim()
                            .parse::<f64>()
                            .ok()
                            .and_then(serde_json::Number::from_f64)
                            .unwrap_or_else(|| zero.clone()),
                        _ => zero.clone(),
                    };
                    let v = if *double {
                        v.as_f64()
                            .and_then(serde_json::Number::from_f64)
                            .unwrap_or_else(|| zero.clone())
                    } else {
                        serde_json::Number::from(v.as_f64().map_or(0, |f| f as i64))
                    };
                    let kind = if *double {
                        ColumnKind::Double
                    } else {
                        ColumnKind::Long
                    };
                    add(name, kind, Some(&v));
                }
            }
        }
        true
    }

    /// Drop fault: removes the rows of `ds` in `[start, end)` and keeps dropping rows ingested
    /// there later. Returns how many stored rows were removed.
    pub fn drop_interval(&self, ds: &str, start: i64, end: i64) -> u64 {
        let mut inner = self.write();
        inner
            .drops
            .entry(ds.to_string())
            .or_default()
            .push((start, end));
        let Some(d) = inner.datasources.get_mut(ds) else {
            return 0;
        };
        let keys: Vec<i64> = d.entries.range(start..end).map(|(k, _)| *k).collect();
        let mut removed = 0;
        for k in keys {
            if let Some(e) = d.entries.remove(&k) {
                removed += e.rows;
            }
        }
        d.total_rows -= removed;
        if d.entries.is_empty() {
            inner.datasources.remove(ds);
        }
        removed
    }

    /// Ends every drop fault (rows already removed stay removed).
    pub fn clear_drops(&self) {
        self.write().drops.clear();
    }

    /// Active drop intervals per datasource.
    pub fn drops(&self) -> HashMap<String, Vec<(i64, i64)>> {
        self.read().drops.clone()
    }

    /// Names of the datasources that have rows, sorted.
    pub fn datasources(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read().datasources.keys().cloned().collect();
        v.sort();
        v
    }

    /// Runs `f` on a datasource, if it exists (has rows).
    pub fn with_datasource<R>(&self, ds: &str, f: impl FnOnce(&Datasource) -> R) -> Option<R> {
        self.read().datasources.get(ds).map(f)
    }

    /// Segments of one datasource (or all when `None`), ordered by datasource and start.
    pub fn segments(&self, ds: Option<&str>) -> Vec<Segment> {
        let inner = self.read();
        let mut names: Vec<&String> = inner
            .datasources
            .keys()
            .filter(|n| ds.is_none_or(|d| d == n.as_str()))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let d = &inner.datasources[name];
            let g = d.granularity;
            let mut cur: Option<Segment> = None;
            for (ts, e) in &d.entries {
                let start = g.floor(*ts);
                match &mut cur {
                    Some(s) if s.start == start => {
                        s.num_rows += e.rows;
                        s.size += e.bytes;
                    }
                    _ => {
                        if let Some(s) = cur.take() {
                            out.push(s);
                        }
                        cur = Some(Segment {
                            datasource: name.clone(),
                            start,
                            end: start + g.millis,
                            num_rows: e.rows,
                            size: e.bytes,
                            version: d.versions.get(&start).cloned().unwrap_or_default(),
                        });
                    }
                }
            }
            out.extend(cur);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn ingest_segments_and_drop() {
        let s = Store::new(Period::parse_granularity("HOUR").unwrap());
        let h = 3_600_000;
        for i in 0..10 {
            let r = row(json!({"ts": "x", "count": 2, "user": "u", "v": 0.5}));
            assert!(s.ingest("ds", &Schema::raw("ts"), i * h / 4, &r, 10));
        }
        let segs = s.segments(Some("ds"));
        assert_eq!(segs.len(), 3);
        assert_eq!(
            segs.iter().map(|s| s.num_rows).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        assert_eq!(segs[0].size, 40);
        s.with_datasource("ds", |d| {
            assert_eq!(d.columns[&Arc::<str>::from("count")], ColumnKind::Long);
            assert_eq!(d.columns[&Arc::<str>::from("v")], ColumnKind::Double);
            assert_eq!(d.columns[&Arc::<str>::from("user")], ColumnKind::Other);
            assert_eq!(d.entries[&0].sum("count").unwrap().long, 2);
        })
        .unwrap();
        assert_eq!(s.drop_interval("ds", h, 2 * h), 4);
        assert_eq!(s.segments(Some("ds")).len(), 2);
        let r = row(json!({"count": 1}));
        assert!(
            !s.ingest("ds", &Schema::raw("ts"), h + 5, &r, 1),
            "dropped later too"
        );
        assert!(
            s.ingest("ds", &Schema::raw("ts"), 2 * h, &r, 1),
            "end is exclusive"
        );
        assert_eq!(s.drop_interval("ds", 0, 10 * h), 7);
        assert!(s.datasources().is_empty(), "no rows, no datasource");
    }

    #[test]
    fn rollup_merges_equal_dimensions_and_adds_metrics() {
        let s = Store::new(Period::parse_granularity("HOUR").unwrap());
        let schema = Schema {
            query_granularity: Period::parse_granularity("MINUTE"),
            rollup: true,
            metrics: vec![
                Metric::Count {
                    name: "count".into(),
                },
                Metric::Sum {
                    name: "bytes".into(),
                    field: "b".into(),
                    double: false,
                },
            ],
            ..Schema::raw("ts")
        };
        for (t, user, b) in [
            (1_000, "a", 5),
            (2_000, "a", 7),
            (3_000, "b", 1),
            (61_000, "a", 2),
        ] {
            let r = row(json!({"ts": t, "user": user, "b": b}));
            assert!(s.ingest("ds", &schema, t, &r, 1));
        }
        s.with_datasource("ds", |d| {
            assert_eq!(d.total_rows, 3, "two rows of user a in minute 0 merge");
            let e = &d.entries[&0];
            assert_eq!(e.rows, 2);
            assert_eq!(e.sum("count").unwrap().long, 3);
            assert_eq!(e.sum("bytes").unwrap().long, 13);
            assert!(e.sum("b").is_none(), "a metric input is not a dimension");
            assert_eq!(d.entries[&60_000].rows, 1);
        })
        .unwrap();
        assert_eq!(s.segments(None)[0].num_rows, 3);
    }
}
