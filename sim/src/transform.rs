//! `dataSchema.transformSpec`: expression transforms and the ingestion filter
//! (docs/ingestion/ingestion-spec.md "transformSpec", docs/querying/filters.md).
//!
//! Order, as Druid applies it (ingestion-spec.md: "after input data records are read, Druid
//! applies ... first flattenSpec, then timestampSpec, then transformSpec"; "transforms are
//! applied before the filter"): the timestamp is read first, transforms add or shadow fields
//! (they see only the input row and `__time`, never each other; a transform named `__time`
//! replaces the timestamp), then the filter decides. A row the filter rejects is counted as
//! `thrownAway` by the caller.
//!
//! Transforms: only expressions the emulator evaluates exactly are accepted: a column
//! reference (`page`, `"my col"`, `__time`), a string literal (`'abc'`), a number literal
//! or `null`. Anything else (functions, operators) is refused with the transform's name.
//!
//! Filters: `selector`, `equals`, `in`, `bound` (lexicographic, numeric, strlen orderings),
//! `range`, `null`, `like`, `interval`, `not`, `and`, `or`, `true`, `false`, evaluated with
//! Druid's three-valued logic (the default since Druid 28: a filter on a null value is
//! "unknown", and `not` of unknown does not match; NotDimFilter's matcher is
//! `!base.matches(!includeUnknown)`). Extraction functions and other filter types are
//! refused.

use crate::error::SimError;
use crate::store::java_string;
use crate::time::parse_iso;
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// One expression transform: `{"type":"expression","name":...,"expression":...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    pub name: String,
    pub expr: Expr,
}

/// The expressions the emulator evaluates (a subset of docs/querying/math-expr.md).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(String),
    Str(String),
    Long(i64),
    Double(f64),
    Null,
}

/// How `bound` compares values (docs/querying/sorting-orders.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundOrdering {
    /// UTF-8 byte order (StringComparators.LEXICOGRAPHIC).
    Lexicographic,
    /// As numbers; unparseable values sort first (StringComparators.NUMERIC).
    Numeric,
    /// By length, then lexicographically (StringComparators.STRLEN).
    Strlen,
}

/// `matchValueType` of `equals` and `range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    String,
    Long,
    Double,
}

/// A typed match value of `equals` / `range`.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    Str(String),
    Num(f64),
}

/// An ingestion filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    True,
    False,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Selector {
        column: String,
        value: Option<String>,
    },
    Equals {
        column: String,
        value: Typed,
    },
    In {
        column: String,
        values: Vec<Option<String>>,
    },
    Bound {
        column: String,
        lower: Option<String>,
        upper: Option<String>,
        lower_strict: bool,
        upper_strict: bool,
        ordering: BoundOrdering,
    },
    Range {
        column: String,
        lower: Option<Typed>,
        upper: Option<Typed>,
        lower_open: bool,
        upper_open: bool,
    },
    Null {
        column: String,
    },
    Like {
        column: String,
        pattern: Vec<LikeToken>,
    },
    Interval {
        column: String,
        intervals: Vec<(i64, i64)>,
    },
}

/// One element of a LIKE pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LikeToken {
    /// `%`: any sequence.
    Any,
    /// `_`: one character.
    One,
    Char(char),
}

/// The parsed `transformSpec`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TransformSpec {
    pub transforms: Vec<Transform>,
    pub filter: Option<Filter>,
}

fn spec_err(m: String) -> SimError {
    SimError::Spec(m)
}

/// Rejects keys of `o` other than `known` (null values count as absent).
fn check_keys(o: &Map<String, Value>, known: &[&str], path: &str) -> Result<(), SimError> {
    match o
        .iter()
        .find(|(k, v)| !v.is_null() && !known.contains(&k.as_str()))
    {
        Some((k, _)) => Err(spec_err(format!(
            "{path}.{k} is not supported by the emulator"
        ))),
        None => Ok(()),
    }
}

impl TransformSpec {
    /// Reads `dataSchema.transformSpec` (`{"transforms":[...],"filter":{...}}`).
    pub fn from_json(v: Option<&Value>, path: &str) -> Result<TransformSpec, SimError> {
        let o = match v {
            None | Some(Value::Null) => return Ok(TransformSpec::default()),
            Some(Value::Object(o)) => o,
            Some(other) => return Err(spec_err(format!("{path} {other} is not an object"))),
        };
        check_keys(o, &["transforms", "filter"], path)?;
        let mut transforms = Vec::new();
        match o.get("transforms") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ts)) => {
                for (i, t) in ts.iter().enumerate() {
                    transforms.push(Transform::from_json(t, &format!("{path}.transforms[{i}]"))?);
                }
            }
            Some(other) => {
                return Err(spec_err(format!(
                    "{path}.transforms {other} is not an array"
                )))
            }
        }
        let filter = match o.get("filter") {
            None | Some(Value::Null) => None,
            Some(f) => Some(Filter::from_json(f, &format!("{path}.filter"))?),
        };
        Ok(TransformSpec { transforms, filter })
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty() && self.filter.is_none()
    }

    /// Applies the transforms to `row` (timestamp `ts`): returns the transformed row and
    /// timestamp, or an error message when a `__time` transform yields no number (Druid:
    /// ParseException, an unparseable row).
    pub fn apply(
        &self,
        row: Map<String, Value>,
        ts: i64,
    ) -> Result<(Map<String, Value>, i64), String> {
        if self.transforms.is_empty() {
            return Ok((row, ts));
        }
        let mut outputs = Vec::with_capacity(self.transforms.len());
        for t in &self.transforms {
            outputs.push((t.name.clone(), t.expr.eval(&row, ts)));
        }
        let mut row = row;
        let mut ts = ts;
        for (name, v) in outputs {
            if name == "__time" {
                // TransformedInputRow: Rows.objectToNumber(__time, value).longValue().
                ts = match &v {
                    Value::Number(n) => n
                        .as_i64()
                        .or_else(|| n.as_f64().map(|f| f as i64))
                        .ok_or_else(|| format!("__time transform gave {n}"))?,
                    Value::String(s) => s
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .or_else(|| s.trim().parse::<f64>().ok().map(|f| f as i64))
                        .ok_or_else(|| format!("Unable to parse value[{s}] for field[__time]"))?,
                    other => return Err(format!("__time transform gave {other}")),
                };
            } else {
                row.insert(name, v);
            }
        }
        Ok((row, ts))
    }

    /// Whether the (transformed) row passes the filter.
    pub fn accepts(&self, row: &Map<String, Value>, ts: i64) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| f.matches(row, ts, false))
    }
}

impl Transform {
    fn from_json(v: &Value, path: &str) -> Result<Transform, SimError> {
        let o = v
            .as_object()
            .ok_or_else(|| spec_err(format!("{path} {v} is not an object")))?;
        check_keys(o, &["type", "name", "expression"], path)?;
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
        if ty != "expression" {
            return Err(spec_err(format!(
                "{path}.type '{ty}' is not a transform type (Druid has 'expression')"
            )));
        }
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| spec_err(format!("{path}.name is required")))?
            .to_string();
        let text = o.get("expression").and_then(Value::as_str).unwrap_or("");
        let expr = Expr::parse(text).ok_or_else(|| {
            spec_err(format!(
                "{path} (transform '{name}'): expression '{text}' is not supported by the \
                 emulator (only a column reference, a string or number literal, or null)"
            ))
        })?;
        Ok(Transform { name, expr })
    }
}

impl Expr {
    /// Parses the supported subset of Druid expressions.
    pub fn parse(text: &str) -> Option<Expr> {
        let t = text.trim();
        if t.is_empty() {
            return None;
        }
        if t == "null" {
            return Some(Expr::Null);
        }
        if let Some(body) = t.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            return unescape(body, '\'').map(Expr::Str);
        }
        if let Some(body) = t.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            return unescape(body, '"').map(Expr::Column);
        }
        if let Ok(n) = t.parse::<i64>() {
            return Some(Expr::Long(n));
        }
        let numeric = t
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
        if numeric {
            return t
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Expr::Double);
        }
        // Druid identifiers: [_$a-zA-Z][_$a-zA-Z0-9]* (Expr.g4 IDENTIFIER); `true`/`false`
        // are refused rather than guessed.
        let mut chars = t.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        (first_ok && rest_ok && t != "true" && t != "false").then(|| Expr::Column(t.to_string()))
    }

    /// The value of the expression for `row`.
    pub fn eval(&self, row: &Map<String, Value>, ts: i64) -> Value {
        match self {
            Expr::Column(c) if c == "__time" => Value::from(ts),
            Expr::Column(c) => row.get(c).cloned().unwrap_or(Value::Null),
            Expr::Str(s) => Value::String(s.clone()),
            Expr::Long(n) => Value::from(*n),
            Expr::Double(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Expr::Null => Value::Null,
        }
    }
}

/// Undoes backslash escapes of a quoted literal; `None` on an unknown escape.
fn unescape(body: &str, quote: char) -> Option<String> {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                c if c == quote => out.push(c),
                _ => return None,
            },
            c if c == quote => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn as_str_opt(v: Option<&Value>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(other) => java_string(other),
    }
}

impl Filter {
    /// Reads a filter of docs/querying/filters.md.
    pub fn from_json(v: &Value, path: &str) -> Result<Filter, SimError> {
        let o = v
            .as_object()
            .ok_or_else(|| spec_err(format!("{path} {v} is not a filter object")))?;
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
        // filterTuning only tunes index use; it never changes which rows match.
        let with = |keys: &[&str]| -> Result<(), SimError> {
            let mut all = vec!["type", "filterTuning"];
            all.extend_from_slice(keys);
            if o.get("extractionFn").is_some_and(|e| !e.is_null()) {
                return Err(spec_err(format!(
                    "{path}.extractionFn is not supported by the emulator"
                )));
            }
            check_keys(o, &all, path)
        };
        let column = |key: &str| -> Result<String, SimError> {
            o.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| spec_err(format!("{path}.{key} is required")))
        };
        let boolean = |key: &str| o.get(key).and_then(Value::as_bool).unwrap_or(false);
        let children = |key: &str| -> Result<Vec<Filter>, SimError> {
            let arr = o
                .get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| spec_err(format!("{path}.{key} must be an array of filters")))?;
            arr.iter()
                .enumerate()
                .map(|(i, f)| Filter::from_json(f, &format!("{path}.{key}[{i}]")))
                .collect()
        };
        match ty {
            "true" => with(&[]).map(|_| Filter::True),
            "false" => with(&[]).map(|_| Filter::False),
            "and" => {
                with(&["fields"])?;
                Ok(Filter::And(children("fields")?))
            }
            "or" => {
                with(&["fields"])?;
                Ok(Filter::Or(children("fields")?))
            }
            "not" => {
                with(&["field"])?;
                let f = o
                    .get("field")
                    .ok_or_else(|| spec_err(format!("{path}.field is required")))?;
                Ok(Filter::Not(Box::new(Filter::from_json(
                    f,
                    &format!("{path}.field"),
                )?)))
            }
            "selector" => {
                with(&["dimension", "value"])?;
                Ok(Filter::Selector {
                    column: column("dimension")?,
                    value: as_str_opt(o.get("value")),
                })
            }
            "equals" => {
                with(&["column", "matchValueType", "matchValue"])?;
                let mt = match_type(o.get("matchValueType"), path)?;
                let value = typed(o.get("matchValue"), mt)
                    .ok_or_else(|| spec_err(format!("{path}.matchValue is required")))?;
                Ok(Filter::Equals {
                    column: column("column")?,
                    value,
                })
            }
            "in" => {
                with(&["dimension", "values"])?;
                let values = o
                    .get("values")
                    .and_then(Value::as_array)
                    .ok_or_else(|| spec_err(format!("{path}.values must be an array")))?
                    .iter()
                    .map(|v| as_str_opt(Some(v)))
                    .collect();
                Ok(Filter::In {
                    column: column("dimension")?,
                    values,
                })
            }
            "bound" => {
                with(&[
                    "dimension",
                    "lower",
                    "upper",
                    "lowerStrict",
                    "upperStrict",
                    "ordering",
                ])?;
                let ordering = match o.get("ordering") {
                    None | Some(Value::Null) => "lexicographic".to_string(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Object(m)) => m
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    Some(other) => other.to_string(),
                };
                let ordering = match ordering.as_str() {
                    "lexicographic" => BoundOrdering::Lexicographic,
                    "numeric" => BoundOrdering::Numeric,
                    "strlen" => BoundOrdering::Strlen,
                    other => {
                        return Err(spec_err(format!(
                            "{path}.ordering '{other}' is not supported by the emulator \
                             (lexicographic, numeric, strlen)"
                        )))
                    }
                };
                Ok(Filter::Bound {
                    column: column("dimension")?,
                    lower: as_str_opt(o.get("lower")),
                    upper: as_str_opt(o.get("upper")),
                    lower_strict: boolean("lowerStrict"),
                    upper_strict: boolean("upperStrict"),
                    ordering,
                })
            }
            "range" => {
                with(&[
                    "column",
                    "matchValueType",
                    "lower",
                    "upper",
                    "lowerOpen",
                    "upperOpen",
                ])?;
                let mt = match_type(o.get("matchValueType"), path)?;
                Ok(Filter::Range {
                    column: column("column")?,
                    lower: typed(o.get("lower"), mt),
                    upper: typed(o.get("upper"), mt),
                    lower_open: boolean("lowerOpen"),
                    upper_open: boolean("upperOpen"),
                })
            }
            "null" => {
                with(&["column"])?;
                Ok(Filter::Null {
                    column: column("column")?,
                })
            }
            "like" => {
                with(&["dimension", "pattern", "escape"])?;
                let pattern = column("pattern")?;
                let escape = match o.get("escape") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.chars().count() == 1 => s.chars().next(),
                    Some(other) => {
                        return Err(spec_err(format!(
                            "{path}.escape {other} must be a single character"
                        )))
                    }
                };
                Ok(Filter::Like {
                    column: column("dimension")?,
                    pattern: like_tokens(&pattern, escape),
                })
            }
            "interval" => {
                with(&["dimension", "intervals"])?;
                let intervals = o
                    .get("intervals")
                    .and_then(Value::as_array)
                    .ok_or_else(|| spec_err(format!("{path}.intervals must be an array")))?
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .and_then(|s| s.split_once('/'))
                            .and_then(|(a, b)| Some((parse_iso(a)?, parse_iso(b)?)))
                            .ok_or_else(|| {
                                spec_err(format!(
                                    "{path}.intervals {i} is not a start/end ISO interval"
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Filter::Interval {
                    column: column("dimension")?,
                    intervals,
                })
            }
            other => Err(spec_err(format!(
                "{path}.type '{other}' is not a filter the emulator supports (selector, equals, \
                 in, bound, range, null, like, interval, not, and, or, true, false)"
            ))),
        }
    }

    /// Whether the row matches; `include_unknown` makes a comparison with a null value match
    /// (Druid's `ValueMatcher.matches(includeUnknown)`).
    pub fn matches(&self, row: &Map<String, Value>, ts: i64, include_unknown: bool) -> bool {
        match self {
            Filter::True => true,
            Filter::False => false,
            Filter::And(fs) => fs.iter().all(|f| f.matches(row, ts, include_unknown)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(row, ts, include_unknown)),
            Filter::Not(f) => !f.matches(row, ts, !include_unknown),
            Filter::Null { column } => values(row, ts, column).is_empty(),
            Filter::Selector { column, value } => {
                let vals = values(row, ts, column);
                match value {
                    None => vals.is_empty() || vals.iter().any(Option::is_none),
                    Some(want) => {
                        (vals.is_empty() && include_unknown)
                            || vals.iter().any(|v| v.as_deref() == Some(want.as_str()))
                    }
                }
            }
            Filter::In {
                column,
                values: set,
            } => {
                let vals = values(row, ts, column);
                if vals.is_empty() {
                    return set.contains(&None) || include_unknown;
                }
                vals.iter().any(|v| set.contains(v))
            }
            Filter::Equals { column, value } => {
                any_value(row, ts, column, include_unknown, |s| match value {
                    Typed::Str(w) => s == w,
                    Typed::Num(w) => s.trim().parse::<f64>().is_ok_and(|n| n == *w),
                })
            }
            Filter::Bound {
                column,
                lower,
                upper,
                lower_strict,
                upper_strict,
                ordering,
            } => any_value(row, ts, column, include_unknown, |s| {
                let lo = lower.as_ref().is_none_or(|l| {
                    let c = compare(*ordering, s, l);
                    c == Ordering::Greater || (c == Ordering::Equal && !lower_strict)
                });
                let hi = upper.as_ref().is_none_or(|u| {
                    let c = compare(*ordering, s, u);
                    c == Ordering::Less || (c == Ordering::Equal && !upper_strict)
                });
                lo && hi
            }),
            Filter::Range {
                column,
                lower,
                upper,
                lower_open,
                upper_open,
            } => any_value(row, ts, column, include_unknown, |s| {
                let cmp = |t: &Typed| -> Option<Ordering> {
                    match t {
                        Typed::Str(w) => Some(s.cmp(w.as_str())),
                        Typed::Num(w) => s.trim().parse::<f64>().ok()?.partial_cmp(w),
                    }
                };
                let lo = lower.as_ref().is_none_or(|l| {
                    cmp(l).is_some_and(|c| {
                        c == Ordering::Greater || (c == Ordering::Equal && !lower_open)
                    })
                });
                let hi = upper.as_ref().is_none_or(|u| {
                    cmp(u).is_some_and(|c| {
                        c == Ordering::Less || (c == Ordering::Equal && !upper_open)
                    })
                });
                lo && hi
            }),
            Filter::Like { column, pattern } => any_value(row, ts, column, include_unknown, |s| {
                let chars: Vec<char> = s.chars().collect();
                like(pattern, &chars)
            }),
            Filter::Interval { column, intervals } => {
                any_value(row, ts, column, include_unknown, |s| {
                    s.trim()
                        .parse::<i64>()
                        .is_ok_and(|t| intervals.iter().any(|(a, b)| *a <= t && t < *b))
                })
            }
        }
    }
}

fn match_type(v: Option<&Value>, path: &str) -> Result<MatchType, SimError> {
    match v
        .and_then(Value::as_str)
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("STRING") => Ok(MatchType::String),
        Some("LONG") => Ok(MatchType::Long),
        Some("DOUBLE" | "FLOAT") => Ok(MatchType::Double),
        Some(other) => Err(spec_err(format!(
            "{path}.matchValueType '{other}' is not supported by the emulator (STRING, LONG, \
             DOUBLE, FLOAT)"
        ))),
        None => Err(spec_err(format!("{path}.matchValueType is required"))),
    }
}

fn typed(v: Option<&Value>, mt: MatchType) -> Option<Typed> {
    let v = v.filter(|v| !v.is_null())?;
    Some(match mt {
        MatchType::String => Typed::Str(java_string(v)?),
        MatchType::Long | MatchType::Double => Typed::Num(match v {
            Value::Number(n) => n.as_f64()?,
            Value::String(s) => s.trim().parse().ok()?,
            _ => return None,
        }),
    })
}

/// The string values of `column` in `row` (`Rows.objectToStrings`): empty for null, missing
/// or an empty list; a list gives one entry per element (a null element as `None`).
fn values(row: &Map<String, Value>, ts: i64, column: &str) -> Vec<Option<String>> {
    if column == "__time" {
        return vec![Some(ts.to_string())];
    }
    match row.get(column) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(java_string).collect(),
        Some(v) => vec![java_string(v)],
    }
}

/// Whether some non-null value satisfies `pred`; a null value is unknown.
fn any_value(
    row: &Map<String, Value>,
    ts: i64,
    column: &str,
    include_unknown: bool,
    pred: impl Fn(&str) -> bool,
) -> bool {
    let vals = values(row, ts, column);
    if vals.is_empty() {
        return include_unknown;
    }
    vals.iter().any(|v| match v {
        Some(s) => pred(s),
        None => include_unknown,
    })
}

fn compare(ordering: BoundOrdering, a: &str, b: &str) -> Ordering {
    match ordering {
        BoundOrdering::Lexicographic => a.cmp(b),
        BoundOrdering::Strlen => {
            let (la, lb) = (a.encode_utf16().count(), b.encode_utf16().count());
            la.cmp(&lb).then_with(|| a.cmp(b))
        }
        // StringComparators.NUMERIC: unparseable values are treated as nulls, which sort
        // before numbers.
        BoundOrdering::Numeric => {
            match (a.trim().parse::<f64>().ok(), b.trim().parse::<f64>().ok()) {
                (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (None, None) => a.cmp(b),
            }
        }
    }
}

fn like_tokens(pattern: &str, escape: Option<char>) -> Vec<LikeToken> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            if let Some(n) = chars.next() {
                out.push(LikeToken::Char(n));
            }
            continue;
        }
        out.push(match c {
            '%' => LikeToken::Any,
            '_' => LikeToken::One,
            c => LikeToken::Char(c),
        });
    }
    out
}

/// Whole-string LIKE match (LikeDimFilter: `%` any run, `_` one character).
fn like(p: &[LikeToken], s: &[char]) -> bool {
    // dp[j]: pattern prefix matches s[..j].
    let mut dp = vec![false; s.len() + 1];
    dp[0] = true;
    for t in p {
        let mut next = vec![false; s.len() + 1];
        match t {
            LikeToken::Any => {
                let mut seen = false;
                for j in 0..=s.len() {
                    seen |= dp[j];
                    next[j] = seen;
                }
            }
            LikeToken::One => {
                next[1..].copy_from_slice(&dp[..s.len()]);
            }
            LikeToken::Char(c) => {
                for j in 1..=s.len() {
                    next[j] = dp[j - 1] && s[j - 1] == *c;
                }
            }
        }
        dp = next;
    }
    dp[s.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Filter {
        Filter::from_json(&v, "filter").unwrap()
    }

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn m(fl: &Filter, r: Value) -> bool {
        fl.matches(&row(r), 0, false)
    }

    #[test]
    fn filters_like_druid() {
        let sel = f(json!({"type": "selector", "dimension": "c", "value": "x"}));
        assert!(m(&sel, json!({"c": "x"})));
        assert!(m(&sel, json!({"c": ["y", "x"]})), "multi-value: any");
        assert!(!m(&sel, json!({"c": "y"})));
        let not = Filter::Not(Box::new(sel.clone()));
        assert!(m(&not, json!({"c": "y"})));
        assert!(
            !m(&not, json!({})),
            "three-valued: not(null = x) is unknown"
        );
        let isnull = f(json!({"type": "selector", "dimension": "c", "value": null}));
        assert!(m(&isnull, json!({})) && !m(&isnull, json!({"c": ""})));
        assert!(m(
            &f(json!({"type": "null", "column": "c"})),
            json!({"c": null})
        ));
        let num = f(json!({"type": "selector", "dimension": "n", "value": "5"}));
        assert!(m(&num, json!({"n": 5})));
        let inf = f(json!({"type": "in", "dimension": "c", "values": ["a", null]}));
        assert!(m(&inf, json!({"c": "a"})) && m(&inf, json!({})) && !m(&inf, json!({"c": "b"})));
        let lex = f(
            json!({"type": "bound", "dimension": "c", "lower": "b", "upper": "d", "upperStrict": true}),
        );
        assert!(
            m(&lex, json!({"c": "b"}))
                && m(&lex, json!({"c": "cz"}))
                && !m(&lex, json!({"c": "d"}))
        );
        let numb =
            f(json!({"type": "bound", "dimension": "n", "lower": "9", "ordering": "numeric"}));
        assert!(m(&numb, json!({"n": "10"})), "10 >= 9 numerically");
        assert!(!m(&numb, json!({"n": "8"})));
        let lexb = f(json!({"type": "bound", "dimension": "n", "lower": "9"}));
        assert!(
            !m(&lexb, json!({"n": "10"})),
            "\"10\" < \"9\" lexicographically"
        );
        let eq =
            f(json!({"type": "equals", "column": "n", "matchValueType": "LONG", "matchValue": 3}));
        assert!(m(&eq, json!({"n": "3"})) && !m(&eq, json!({"n": 4})));
        let range = f(
            json!({"type": "range", "column": "n", "matchValueType": "DOUBLE", "lower": 1, "lowerOpen": true, "upper": 2}),
        );
        assert!(m(&range, json!({"n": 2})) && !m(&range, json!({"n": 1})));
        let like = f(json!({"type": "like", "dimension": "c", "pattern": "a%b_"}));
        assert!(m(&like, json!({"c": "axxbz"})) && !m(&like, json!({"c": "axxb"})));
        let and = f(
            json!({"type": "and", "fields": [{"type": "true"}, {"type": "not", "field": {"type": "false"}}]}),
        );
        assert!(m(&and, json!({})));
        let or = f(json!({"type": "or", "fields": [{"type": "false"}, sel_json()]}));
        assert!(m(&or, json!({"c": "x"})) && !m(&or, json!({"c": "q"})));
        let iv = f(
            json!({"type": "interval", "dimension": "__time", "intervals": ["1970-01-01T00:00:00Z/1970-01-01T00:00:01Z"]}),
        );
        assert!(
            iv.matches(&row(json!({})), 999, false) && !iv.matches(&row(json!({})), 1000, false)
        );
        for bad in [
            json!({"type": "regex", "dimension": "c", "pattern": "x"}),
            json!({"type": "selector", "dimension": "c", "value": "x", "extractionFn": {"type": "upper"}}),
            json!({"type": "bound", "dimension": "c", "ordering": "version"}),
            json!({"type": "javascript", "dimension": "c", "function": "x"}),
        ] {
            assert!(Filter::from_json(&bad, "filter").is_err(), "{bad}");
        }
    }

    fn sel_json() -> Value {
        json!({"type": "selector", "dimension": "c", "value": "x"})
    }

    #[test]
    fn transforms_evaluate_exactly_or_are_refused() {
        let spec = TransformSpec::from_json(
            Some(&json!({"transforms": [
                {"type": "expression", "name": "copy", "expression": "page"},
                {"type": "expression", "name": "page", "expression": "'fixed'"},
                {"type": "expression", "name": "n", "expression": "42"},
                {"type": "expression", "name": "t", "expression": "__time"},
                {"type": "expression", "name": "q", "expression": "\"a b\""}
            ]})),
            "transformSpec",
        )
        .unwrap();
        let (r, ts) = spec
            .apply(row(json!({"page": "orig", "a b": 1})), 77)
            .unwrap();
        assert_eq!(
            r["copy"], "orig",
            "transforms see the input row, not each other"
        );
        assert_eq!(r["page"], "fixed", "a transform shadows its input");
        assert_eq!(
            (r["n"].clone(), r["t"].clone(), r["q"].clone()),
            (json!(42), json!(77), json!(1))
        );
        assert_eq!(ts, 77);
        let time = TransformSpec::from_json(
            Some(&json!({"transforms": [{"type": "expression", "name": "__time", "expression": "other"}]})),
            "t",
        )
        .unwrap();
        assert_eq!(
            time.apply(row(json!({"other": "5000"})), 1).unwrap().1,
            5000
        );
        assert!(time.apply(row(json!({"other": "nope"})), 1).is_err());
        let err = TransformSpec::from_json(
            Some(&json!({"transforms": [{"type": "expression", "name": "up", "expression": "upper(page)"}]})),
            "transformSpec",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("'up'") && err.contains("upper(page)"), "{err}");
    }
}
