//! Ingested data, per datasource, and the segments derived from it.
//!
//! Storage choice: a datasource is a `BTreeMap` from row timestamp (epoch millis) to an
//! [`Entry`] holding the number of rows with exactly that timestamp, their input bytes, and
//! the sums of every numeric top-level column. Rows with equal timestamps collapse into one
//! entry, and no dimension values are kept. This answers every supported query exactly:
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
}

impl Entry {
    pub fn sum(&self, col: &str) -> Option<&Sum> {
        self.sums.iter().find(|(c, _)| &**c == col).map(|(_, s)| s)
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

    /// Stores one parsed row; returns false if a drop fault swallowed it.
    /// `granularity` is the supervisor's segment granularity (None: the emulator default).
    pub fn ingest(
        &self,
        ds: &str,
        granularity: Option<Period>,
        ts: i64,
        row: &serde_json::Map<String, serde_json::Value>,
        skip_column: &str,
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
                granularity: granularity.unwrap_or(default),
                total_rows: 0,
            });
        if let Some(g) = granularity {
            d.granularity = g;
        }
        let seg = d.granularity.floor(ts);
        d.versions
            .entry(seg)
            .or_insert_with(|| crate::time::iso(chrono::Utc::now().timestamp_millis()));
        d.total_rows += 1;
        // Intern column names so entries share them.
        let mut numeric: Vec<(Arc<str>, &serde_json::Number)> = Vec::new();
        for (k, v) in row {
            if k == skip_column {
                continue;
            }
            let kind = match v {
                serde_json::Value::Number(n) if n.is_f64() => ColumnKind::Double,
                serde_json::Value::Number(_) => ColumnKind::Long,
                _ => ColumnKind::Other,
            };
            let name = match d.columns.get_key_value(k.as_str()) {
                Some((name, old)) => {
                    let name = name.clone();
                    let merged = match (*old, kind) {
                        (ColumnKind::Other, _) | (_, ColumnKind::Other) => ColumnKind::Other,
                        (ColumnKind::Double, _) | (_, ColumnKind::Double) => ColumnKind::Double,
                        _ => ColumnKind::Long,
                    };
                    d.columns.insert(name.clone(), merged);
                    name
                }
                None => {
                    let name: Arc<str> = Arc::from(k.as_str());
                    d.columns.insert(name.clone(), kind);
                    name
                }
            };
            if let serde_json::Value::Number(n) = v {
                numeric.push((name, n));
            }
        }
        let e = d.entries.entry(ts).or_default();
        e.rows += 1;
        e.bytes += bytes;
        for (name, n) in numeric {
            match e.sums.iter_mut().find(|(c, _)| *c == name) {
                Some((_, s)) => s.add_number(n),
                None => {
                    let mut s = Sum::default();
                    s.add_number(n);
                    e.sums.push((name, s));
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
            assert!(s.ingest("ds", None, i * h / 4, &r, "ts", 10));
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
            !s.ingest("ds", None, h + 5, &r, "ts", 1),
            "dropped later too"
        );
        assert!(s.ingest("ds", None, 2 * h, &r, "ts", 1), "end is exclusive");
        assert_eq!(s.drop_interval("ds", 0, 10 * h), 7);
        assert!(s.datasources().is_empty(), "no rows, no datasource");
    }
}
