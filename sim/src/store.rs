//! Ingested data, per datasource, and the segments derived from it.
//!
//! Storage choice: a datasource is a `BTreeMap` from row timestamp (epoch millis) to an
//! [`Entry`] holding the number of rows with exactly that timestamp, their input bytes, and
//! the sums of every numeric column (numeric dimensions and `metricsSpec` metrics). Rows
//! with equal timestamps collapse into one entry, and no string dimension values are kept.
//! This answers every supported query exactly: `COUNT(*)` and `SUM(col)` for any `__time`
//! range and any `TIME_FLOOR` period (the key is the row's own timestamp, so no resolution is
//! lost), `MIN`/`MAX(__time)`, and per-segment row counts and sizes. Memory is one small
//! entry per distinct timestamp, not per row.
//!
//! Rollup is best-effort, as in Kafka ingestion (docs/ingestion/rollup.md "Perfect rollup vs
//! best-effort rollup": streaming tasks roll up only the rows they hold themselves). With
//! rollup an entry keeps, per *rollup scope*, a 64-bit hash per distinct dimension tuple; a
//! row merges into a stored row only if the same scope already holds its tuple. A scope is
//! what one Kafka task writes into its open segments ([`Store::open_scope`]): a new task, or an
//! incremental handoff, starts a new scope and so new rows. The tuple sets of scopes that have
//! been closed are dropped when another scope next writes the entry, so memory stays bounded
//! by the live scopes plus one set per entry. [`Store::ingest`] (scope 0, never closed) is
//! the old global behaviour for callers that have no task.
//!
//! Segments are not stored: `sys.segments` rows are derived on demand by grouping entries by
//! the datasource's segment granularity, so a dropped interval (fault) changes them at once.
//! A datasource with no rows does not exist, as in Druid (it has no segments).

use crate::time::{Granularity, Period};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// With rollup: per rollup scope, hashes of the dimension tuples it holds here.
    scopes: Vec<(u64, HashSet<u64>)>,
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
    /// `longSum` / `doubleSum` / `floatSum` of an input field.
    Sum {
        name: String,
        field: String,
        double: bool,
    },
}

impl Metric {
    /// Whether `column` is this metric's name or input (excluded from schemaless dimensions,
    /// as DataSchema adds aggregator names and inputs to the dimension exclusions).
    fn uses(&self, column: &str) -> bool {
        match self {
            Metric::Count { name } => name == column,
            Metric::Sum { name, field, .. } => name == column || field == column,
        }
    }

    /// The metric's output column.
    pub fn name(&self) -> &str {
        match self {
            Metric::Count { name } | Metric::Sum { name, .. } => name,
        }
    }
}

/// A dimension's declared type (docs/ingestion/ingestion-spec.md "Dimension objects").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimType {
    String,
    Long,
    Float,
    Double,
    /// `json` / `auto` (and discovered dimensions): values kept as they come.
    Raw,
}

/// `multiValueHandling` of a string dimension (docs/ingestion/ingestion-spec.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiValueHandling {
    /// `SORTED_ARRAY` (the default): values sorted, duplicates kept.
    SortedArray,
    /// `SORTED_SET`: sorted, duplicates removed.
    SortedSet,
    /// `ARRAY`: as they come.
    Array,
}

/// One declared dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Dimension {
    pub name: String,
    pub ty: DimType,
    pub multi_value: MultiValueHandling,
}

impl Dimension {
    /// A `string` dimension with the default `SORTED_ARRAY` handling.
    pub fn string(name: &str) -> Dimension {
        Dimension {
            name: name.to_string(),
            ty: DimType::String,
            multi_value: MultiValueHandling::SortedArray,
        }
    }
}

/// How a supervisor turns input rows into stored rows (Druid's `dataSchema`).
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub timestamp_column: String,
    /// `granularitySpec.segmentGranularity` (None: the emulator's default).
    pub segment_granularity: Option<Granularity>,
    /// `granularitySpec.queryGranularity` (Druid's default NONE: kept to the millisecond).
    pub query_granularity: Granularity,
    /// `granularitySpec.rollup` (Druid's default: true).
    pub rollup: bool,
    /// `dimensionsSpec.dimensions`, converted to their declared types.
    pub dimensions: Vec<Dimension>,
    /// Whether other input fields become dimensions too: schemaless (no dimensions listed),
    /// `includeAllDimensions` or `useSchemaDiscovery`.
    pub discover: bool,
    /// `dimensionsSpec.dimensionExclusions` (with `discover`).
    pub exclusions: Vec<String>,
    pub metrics: Vec<Metric>,
}

impl Schema {
    /// No rollup, no metrics: every input row is one stored row; numeric fields sum.
    pub fn raw(timestamp_column: &str) -> Schema {
        Schema {
            timestamp_column: timestamp_column.to_string(),
            segment_granularity: None,
            query_granularity: Granularity::None,
            rollup: false,
            dimensions: Vec::new(),
            discover: true,
            exclusions: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// The dimensions of `row` with their values converted to the declared types, sorted by
    /// name; null values left out (a missing dimension and a null one are the same row).
    fn dimension_values(&self, row: &serde_json::Map<String, Value>) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = Vec::new();
        for d in &self.dimensions {
            let v = row
                .get(&d.name)
                .map_or(Value::Null, |v| convert(d.ty, d.multi_value, v));
            out.push((d.name.clone(), v));
        }
        if self.discover {
            for (k, v) in row {
                let excluded = k == &self.timestamp_column
                    || k == "__time"
                    || self.exclusions.iter().any(|e| e == k)
                    || self.metrics.iter().any(|m| m.uses(k))
                    || self.dimensions.iter().any(|d| &d.name == k);
                if !excluded {
                    out.push((k.clone(), v.clone()));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Java's `String.valueOf` of a JSON scalar, as Druid stringifies values for string
/// dimensions (`Rows.objectToStrings`).
pub(crate) fn java_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// Converts an input value to a dimension's declared type (DimensionHandlerUtils
/// convertObjectToLong/Float/Double and string handling): unparseable numbers become null;
/// string lists are multi-values, ordered by `multiValueHandling`; a one-element list is a
/// single value and an empty list is null.
fn convert(ty: DimType, mv: MultiValueHandling, v: &Value) -> Value {
    let number = |v: &Value| -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
    };
    match ty {
        DimType::Raw => v.clone(),
        DimType::Long => match v {
            Value::Number(n) if n.is_i64() => v.clone(),
            Value::String(s) if s.trim().parse::<i64>().is_ok() => {
                s.trim().parse::<i64>().map_or(Value::Null, Value::from)
            }
            _ => number(v).map_or(Value::Null, |f| Value::from(f as i64)),
        },
        DimType::Float | DimType::Double => number(v)
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        DimType::String => match v {
            Value::Array(items) => {
                let mut vals: Vec<Option<String>> = items.iter().map(java_string).collect();
                match mv {
                    MultiValueHandling::SortedArray => vals.sort(),
                    MultiValueHandling::SortedSet => {
                        vals.sort();
                        vals.dedup();
                    }
                    MultiValueHandling::Array => {}
                }
                match vals.len() {
                    0 => Value::Null,
                    1 => vals.pop().flatten().map_or(Value::Null, Value::String),
                    _ => Value::Array(
                        vals.into_iter()
                            .map(|s| s.map_or(Value::Null, Value::String))
                            .collect(),
                    ),
                }
            }
            other => java_string(other).map_or(Value::Null, Value::String),
        },
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
    pub granularity: Granularity,
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

/// What [`Store::ingest_scoped`] did with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// False when a drop fault swallowed the row.
    pub stored: bool,
    /// Whether the row became a new stored row (false: rolled up into one of its scope).
    pub new_row: bool,
    /// Start of the segment interval the row went to.
    pub segment: i64,
}

/// All datasources of one emulator, plus the drop-interval fault state.
#[derive(Debug)]
pub struct Store {
    inner: RwLock<Inner>,
    default_granularity: Granularity,
}

#[derive(Debug)]
struct Inner {
    datasources: HashMap<String, Datasource>,
    /// Datasource -> intervals `[start, end)` whose rows are dropped, now and when ingested.
    drops: HashMap<String, Vec<(i64, i64)>>,
    /// Rollup scopes still open (scope 0 is always open).
    live_scopes: HashSet<u64>,
    next_scope: u64,
}

impl Store {
    pub fn new(default_granularity: Period) -> Store {
        Store {
            inner: RwLock::new(Inner {
                datasources: HashMap::new(),
                drops: HashMap::new(),
                live_scopes: HashSet::new(),
                next_scope: 1,
            }),
            default_granularity: default_granularity.into(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a rollup scope: the segments one task (or one incremental-handoff sequence of
    /// it) writes. Rows roll up only with rows of the same scope.
    pub fn open_scope(&self) -> u64 {
        let mut inner = self.write();
        let id = inner.next_scope;
        inner.next_scope += 1;
        inner.live_scopes.insert(id);
        id
    }

    /// Closes a rollup scope (its task published): later rows never merge into its rows.
    pub fn close_scope(&self, scope: u64) {
        self.write().live_scopes.remove(&scope);
    }

    /// Stores one parsed row under `schema` in the global scope 0; returns false if a drop
    /// fault swallowed it.
    pub fn ingest(
        &self,
        ds: &str,
        schema: &Schema,
        ts: i64,
        row: &serde_json::Map<String, Value>,
        bytes: u64,
    ) -> bool {
        self.ingest_scoped(ds, schema, ts, row, bytes, 0).stored
    }

    /// Stores one parsed row under `schema`; with rollup it merges only with rows of the
    /// same rollup `scope`.
    pub fn ingest_scoped(
        &self,
        ds: &str,
        schema: &Schema,
        ts: i64,
        row: &serde_json::Map<String, Value>,
        bytes: u64,
        scope: u64,
    ) -> Ingested {
        let dims = schema.dimension_values(row);
        let mut guard = self.write();
        let inner = &mut *guard;
        // The stored timestamp (truncated by queryGranularity) decides, as for removal.
        let key = schema.query_granularity.bucket_start(ts);
        let default = self.default_granularity;
        let granularity = schema.segment_granularity.unwrap_or(default);
        if let Some(drops) = inner.drops.get(ds) {
            if drops.iter().any(|(s, e)| *s <= key && key < *e) {
                return Ingested {
                    stored: false,
                    new_row: false,
                    segment: granularity.bucket_start(key),
                };
            }
        }
        let d = inner
            .datasources
            .entry(ds.to_string())
            .or_insert_with(|| Datasource {
                entries: BTreeMap::new(),
                columns: HashMap::new(),
                versions: HashMap::new(),
                granularity,
                total_rows: 0,
            });
        if schema.segment_granularity.is_some() {
            d.granularity = granularity;
        }
        let seg = d.granularity.bucket_start(key);
        d.versions
            .entry(seg)
            .or_insert_with(|| crate::time::iso(chrono::Utc::now().timestamp_millis()));
        let e = d.entries.entry(key).or_default();
        // With rollup, a row whose dimensions this scope already holds in this time bucket
        // merges into it: the row count and dimension sums stay, the metrics add up.
        let new_row = if schema.rollup {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for (k, v) in dims.iter().filter(|(_, v)| !v.is_null()) {
                k.hash(&mut h);
                v.to_string().hash(&mut h);
            }
            let live = &inner.live_scopes;
            e.scopes
                .retain(|(s, _)| *s == scope || *s == 0 || live.contains(s));
            let pos = match e.scopes.iter().position(|(s, _)| *s == scope) {
                Some(p) => p,
                None => {
                    e.scopes.push((scope, HashSet::new()));
                    e.scopes.len() - 1
                }
            };
            e.scopes[pos].1.insert(h.finish())
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
            let declared = schema
                .dimensions
                .iter()
                .find(|d| &d.name == k)
                .map(|d| d.ty);
            let (kind, n) = match (declared, v) {
                // A declared column exists even when this row has no value for it.
                (Some(DimType::String), _) => (ColumnKind::Other, None),
                (Some(DimType::Long), Value::Number(n)) => (ColumnKind::Long, Some(n)),
                (Some(DimType::Long), _) => (ColumnKind::Long, None),
                (Some(DimType::Float | DimType::Double), Value::Number(n)) => {
                    (ColumnKind::Double, Some(n))
                }
                (Some(DimType::Float | DimType::Double), _) => (ColumnKind::Double, None),
                (_, Value::Null) => continue,
                (_, Value::Number(n)) if n.is_f64() => (ColumnKind::Double, Some(n)),
                (_, Value::Number(n)) => (ColumnKind::Long, Some(n)),
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
                        Some(Value::Number(n)) => n.clone(),
                        Some(Value::String(s)) => s
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
                        serde_json::Number::from(
                            v.as_i64()
                                .unwrap_or_else(|| v.as_f64().map_or(0, |f| f as i64)),
                        )
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
        Ingested {
            stored: true,
            new_row,
            segment: seg,
        }
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
    /// A segment spans its granularity bucket (`bucketStart`/`increment`): ALL gives one
    /// segment over `Intervals.ETERNITY`, MONTH/QUARTER/YEAR calendar intervals in UTC.
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
                let start = g.bucket_start(*ts);
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
                            end: g.bucket_end(start),
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

    fn rollup_schema() -> Schema {
        Schema {
            query_granularity: Granularity::from_name("MINUTE").unwrap(),
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
        }
    }

    #[test]
    fn rollup_merges_equal_dimensions_and_adds_metrics() {
        let s = Store::new(Period::parse_granularity("HOUR").unwrap());
        let schema = rollup_schema();
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

    #[test]
    fn rollup_is_per_task_scope() {
        let s = Store::new(Period::parse_granularity("HOUR").unwrap());
        let schema = rollup_schema();
        let r = row(json!({"ts": 1, "user": "a", "b": 1}));
        let first = s.open_scope();
        assert!(s.ingest_scoped("ds", &schema, 1_000, &r, 1, first).new_row);
        assert!(!s.ingest_scoped("ds", &schema, 2_000, &r, 1, first).new_row);
        // The next task writes the same tuple: a new row, as in best-effort rollup.
        let second = s.open_scope();
        s.close_scope(first);
        assert!(s.ingest_scoped("ds", &schema, 3_000, &r, 1, second).new_row);
        assert!(!s.ingest_scoped("ds", &schema, 4_000, &r, 1, second).new_row);
        s.with_datasource("ds", |d| {
            let e = &d.entries[&0];
            assert_eq!(e.rows, 2);
            assert_eq!(e.sum("count").unwrap().long, 4, "metrics still add up");
            assert_eq!(e.scopes.len(), 1, "the closed scope's tuples are dropped");
        })
        .unwrap();
        // Null and missing dimensions are the same row.
        let n = row(json!({"user": "a", "x": null}));
        assert!(!s.ingest_scoped("ds", &schema, 5_000, &n, 1, second).new_row);
    }

    #[test]
    fn typed_dimensions_and_eternity_segments() {
        let s = Store::new(Period::parse_granularity("HOUR").unwrap());
        let schema = Schema {
            segment_granularity: Some(Granularity::All),
            dimensions: vec![
                Dimension::string("user"),
                Dimension {
                    name: "n".into(),
                    ty: DimType::Long,
                    multi_value: MultiValueHandling::SortedArray,
                },
            ],
            discover: false,
            ..Schema::raw("ts")
        };
        let r = row(json!({"user": 5, "n": "7", "other": 3}));
        assert!(s.ingest("ds", &schema, 1_000, &r, 1));
        s.with_datasource("ds", |d| {
            assert_eq!(d.columns[&Arc::<str>::from("user")], ColumnKind::Other);
            assert_eq!(
                d.entries[&1_000].sum("n").unwrap().long,
                7,
                "\"7\" as a long"
            );
            assert!(!d.columns.contains_key("other"), "not a dimension");
        })
        .unwrap();
        let seg = &s.segments(Some("ds"))[0];
        assert_eq!(
            crate::time::iso(seg.start),
            "-146136543-09-08T08:23:32.096Z"
        );
        assert_eq!(crate::time::iso(seg.end), "146140482-04-24T15:36:27.903Z");
        assert_eq!(
            convert(
                DimType::String,
                MultiValueHandling::SortedSet,
                &json!(["b", "a", "b"])
            ),
            json!(["a", "b"])
        );
    }
}
