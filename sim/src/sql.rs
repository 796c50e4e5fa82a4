//! Druid SQL, for the query family lockstep's drift engine issues, and nothing else.
//!
//! The Broker plans SQL against the datasources it sees served: a datasource whose segments no
//! server serves (the unload fault) is unknown to it, exactly like one that never existed,
//! while `sys.segments` still lists its published segments as unavailable.
//!
//! Parsing uses the `sqlparser` crate (it reads Druid's forms: double-quoted identifiers,
//! `TIMESTAMP '...'` literals, `TIME_FLOOR(...)` calls, `sys.segments`, `?` placeholders);
//! this module only interprets the AST. The interpreter is a small generic
//! filter -> group -> aggregate -> order -> limit pipeline over two kinds of records:
//! datasource entries (see `store.rs`) and derived `sys.segments` rows. Every construct it does
//! not understand is rejected with a 400 `invalidInput` error: the emulator never answers a
//! query it cannot answer exactly.
//!
//! Supported (see README `sim/`):
//! - datasource tables (`"ds"` or `druid."ds"`): `TIME_FLOOR(__time, 'period')`, `__time` as a
//!   group key, `COUNT(*)`, `SUM("col")`, `MIN/MAX(__time)`; `WHERE` made of `AND`ed
//!   comparisons of `__time` with `TIMESTAMP '...'`, `'...'`, `MILLIS_TO_TIMESTAMP(n)`,
//!   `TIME_PARSE('...')` or parameters, `BETWEEN`, `TIME_IN_INTERVAL(__time, 'a/b')`;
//! - `sys.segments`: any of its columns, `COUNT(*)`, `SUM/MIN/MAX(col)`, `WHERE` made of
//!   `AND`ed comparisons of a column with a literal;
//! - `GROUP BY` ordinals, aliases or expressions; `ORDER BY` likewise with `ASC`/`DESC`;
//!   `LIMIT`/`OFFSET`; `parameters` of type VARCHAR, TIMESTAMP, DATE, BIGINT, INTEGER, DOUBLE...

use crate::error::{DruidError, SqlPos};
use crate::store::{ColumnKind, Entry, Segment, Store, Sum};
use crate::time::{druid_floor, iso, parse_iso, Period};
use serde::Deserialize;
use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    LimitClause, ObjectNamePart, OrderByKind, Query, SelectItem, SetExpr, Statement, TableFactor,
    Value as SqlValue,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// A `POST /druid/v2/sql` request body.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SqlRequest {
    pub query: String,
    #[serde(default)]
    pub result_format: Option<String>,
    #[serde(default)]
    pub header: bool,
    #[serde(default)]
    pub types_header: bool,
    #[serde(default)]
    pub sql_types_header: bool,
    #[serde(default)]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
}

/// One `?` parameter.
#[derive(Debug, Clone, Deserialize)]
pub struct Parameter {
    #[serde(rename = "type")]
    pub ty: String,
    pub value: serde_json::Value,
}

/// A result column: name, Druid native type, SQL type.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub druid_type: &'static str,
    pub sql_type: &'static str,
}

/// A query result: columns and rows of JSON values (timestamps already ISO strings).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Runs one SQL request against the store, every datasource served.
pub fn execute(store: &Store, req: &SqlRequest) -> Result<ResultSet, DruidError> {
    execute_with(store, &BTreeSet::new(), req)
}

/// Runs one SQL request against the store as the Broker sees it when the datasources in
/// `unloaded` have published segments that no server serves.
pub fn execute_with(
    store: &Store,
    unloaded: &BTreeSet<String>,
    req: &SqlRequest,
) -> Result<ResultSet, DruidError> {
    if let Some(ctx) = &req.context {
        if let Some(tz) = ctx.get("sqlTimeZone").and_then(|v| v.as_str()) {
            if !matches!(tz, "UTC" | "Etc/UTC" | "Z" | "+00:00") {
                return Err(DruidError::invalid(format!(
                    "lockstep-sim supports only sqlTimeZone UTC, not '{tz}'"
                )));
            }
        }
    }
    let tokens = bind_parameters(&req.query, &req.parameters)?;
    let dialect = GenericDialect {};
    let statements = Parser::new(&dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| DruidError::invalid(format!("Incorrect syntax: {e}")))?;
    let query = match statements.as_slice() {
        [Statement::Query(q)] => q,
        [_] => {
            return Err(DruidError::invalid(
                "Only SELECT queries are supported by lockstep-sim",
            ))
        }
        _ => return Err(DruidError::invalid("Exactly one SQL statement is expected")),
    };
    let plan = plan(store, unloaded, query)?;
    run(store, unloaded, &plan)
}

/// Replaces each `?` placeholder with the literal tokens of its parameter, so the parser
/// sees plain SQL (parameters then work wherever a literal does). Tokens keep their place in
/// the text, so errors can point at it as Druid's do.
fn bind_parameters(sql: &str, params: &[Parameter]) -> Result<Vec<TokenWithSpan>, DruidError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| DruidError::invalid(format!("Incorrect syntax: {e}")))?;
    let mut out = Vec::with_capacity(tokens.len());
    let mut next = 0usize;
    for TokenWithSpan { token: t, span } in tokens {
        let mut out = Spanned {
            out: &mut out,
            span,
        };
        if t == Token::Placeholder("?".into()) {
            let p = params.get(next).ok_or_else(|| {
                DruidError::invalid(format!(
                    "Parameter at position [{next}] is not bound (got {} parameters)",
                    params.len()
                ))
            })?;
            next += 1;
            let text = match &p.value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(DruidError::invalid(format!(
                        "Parameter at position [{}] has an unsupported value {other}",
                        next - 1
                    )))
                }
            };
            match p.ty.to_ascii_uppercase().as_str() {
                "VARCHAR" | "CHAR" => out.push(Token::SingleQuotedString(text)),
                "TIMESTAMP" | "DATE" => {
                    // Druid accepts a TIMESTAMP parameter as a string or as epoch millis.
                    let ms = match &p.value {
                        serde_json::Value::Number(n) => n.as_i64(),
                        _ => parse_iso(&text),
                    }
                    .ok_or_else(|| {
                        DruidError::invalid(format!(
                            "Parameter at position [{}]: cannot read '{text}' as a TIMESTAMP",
                            next - 1
                        ))
                    })?;
                    out.push(Token::make_keyword("TIMESTAMP"));
                    out.push(Token::Whitespace(sqlparser::tokenizer::Whitespace::Space));
                    out.push(Token::SingleQuotedString(iso(ms)));
                }
                "BIGINT" | "INTEGER" | "SMALLINT" | "TINYINT" | "DOUBLE" | "FLOAT" | "REAL"
                | "DECIMAL" => {
                    if text.parse::<f64>().is_err() {
                        return Err(DruidError::invalid(format!(
                            "Parameter at position [{}]: '{text}' is not a number",
                            next - 1
                        )));
                    }
                    out.push(Token::Number(text, false));
                }
                other => {
                    return Err(DruidError::invalid(format!(
                        "Parameter at position [{}] has unsupported type {other}",
                        next - 1
                    )))
                }
            }
        } else {
            out.push(t);
        }
    }
    if next != params.len() {
        return Err(DruidError::invalid(format!(
            "{} parameters given for {next} placeholders",
            params.len()
        )));
    }
    Ok(out)
}

/// Appends tokens that all carry one span (a parameter's tokens point at its placeholder).
struct Spanned<'a> {
    out: &'a mut Vec<TokenWithSpan>,
    span: sqlparser::tokenizer::Span,
}

impl Spanned<'_> {
    fn push(&mut self, t: Token) {
        self.out.push(TokenWithSpan::new(t, self.span));
    }
}

/// A value during evaluation.
#[derive(Debug, Clone)]
enum Val {
    Null,
    Long(i64),
    Double(f64),
    Str(String),
    Time(i64),
}

impl Val {
    fn rank(&self) -> u8 {
        match self {
            Val::Null => 0,
            Val::Long(_) | Val::Double(_) => 1,
            Val::Time(_) => 2,
            Val::Str(_) => 3,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Val::Null => serde_json::Value::Null,
            Val::Long(i) => (*i).into(),
            Val::Double(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Val::Str(s) => s.clone().into(),
            Val::Time(t) => iso(*t).into(),
        }
    }
}

impl PartialEq for Val {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Val {}
impl PartialOrd for Val {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Val {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Val::Long(a), Val::Long(b)) => a.cmp(b),
            (Val::Long(a), Val::Double(b)) => (*a as f64).total_cmp(b),
            (Val::Double(a), Val::Long(b)) => a.total_cmp(&(*b as f64)),
            (Val::Double(a), Val::Double(b)) => a.total_cmp(b),
            (Val::Time(a), Val::Time(b)) => a.cmp(b),
            (Val::Str(a), Val::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Which table a query reads.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Datasource(String),
    Segments,
}

/// A per-record expression.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    /// `__time`.
    Time,
    /// `TIME_FLOOR(__time, period)` (or `FLOOR(__time TO unit)`).
    TimeFloor(Period),
    /// A `sys.segments` column.
    Column(String),
}

/// An aggregate.
#[derive(Debug, Clone, PartialEq)]
enum Agg {
    Count,
    Sum(String),
    Min(Scalar),
    Max(Scalar),
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Scalar(Scalar),
    Agg(Agg),
}

/// A comparison in a `WHERE` conjunction.
#[derive(Debug, Clone)]
struct Cond {
    column: Scalar,
    op: BinaryOperator,
    value: Val,
}

#[derive(Debug)]
struct Plan {
    source: Source,
    items: Vec<(String, Item)>,
    /// The first `visible` items are output; the rest are hidden ORDER BY keys.
    visible: usize,
    /// Group keys (empty with `aggregate` = one group; `aggregate` false = raw rows).
    group: Vec<Scalar>,
    aggregate: bool,
    filter: Vec<Cond>,
    /// Output column index and ascending.
    order: Vec<(usize, bool)>,
    limit: Option<usize>,
    offset: usize,
}

fn unsupported(what: impl std::fmt::Display) -> DruidError {
    DruidError::invalid(format!("Query not supported by lockstep-sim: {what}"))
}

const SEGMENT_COLUMNS: &[(&str, bool)] = &[
    // (name, numeric)
    ("segment_id", false),
    ("datasource", false),
    ("start", false),
    ("end", false),
    ("size", true),
    ("version", false),
    ("partition_num", true),
    ("num_replicas", true),
    ("num_rows", true),
    ("is_active", true),
    ("is_published", true),
    ("is_available", true),
    ("is_realtime", true),
    ("is_overshadowed", true),
    ("shard_spec", false),
    ("dimensions", false),
    ("metrics", false),
    ("last_compaction_state", false),
    ("replication_factor", true),
];

/// Calcite's position of an identifier: 1-based, end column inclusive (sqlparser's span end
/// is the column after the last character).
fn position(id: &Ident) -> SqlPos {
    let (s, e) = (id.span.start, id.span.end);
    SqlPos {
        line: s.line.max(1),
        column: s.column.max(1),
        end_line: e.line.max(s.line).max(1),
        end_column: e.column.saturating_sub(1).max(s.column).max(1),
    }
}

/// Druid's root schemas (docs/querying/sql-metadata-tables.md, SCHEMATA table): a name
/// qualified by one of them is "not found within" it; by anything else, the qualifier
/// itself is not found.
const SCHEMAS: &[&str] = &["druid", "sys", "INFORMATION_SCHEMA", "lookup", "view"];

/// Resolves the FROM table as Druid's Calcite catalog does: `sys.segments`, or a datasource
/// (bare or `druid.`-qualified) that some server serves. Anything else is Calcite's
/// unknown-object error (see `DruidError::object_not_found`), also for a datasource whose
/// published segments nobody serves: the Broker builds the `druid` schema from served
/// segments only (docs/querying/sql-metadata-tables.md: "Druid Brokers infer table and column
/// metadata for each datasource from segments loaded in the cluster").
fn resolve_table(
    store: &Store,
    unloaded: &BTreeSet<String>,
    parts: &[&Ident],
) -> Result<Source, DruidError> {
    let served = |ds: &str| !unloaded.contains(ds) && store.with_datasource(ds, |_| ()).is_some();
    match parts {
        [schema, table] if schema.value == "sys" && table.value == "segments" => {
            Ok(Source::Segments)
        }
        [ds] if served(&ds.value) => Ok(Source::Datasource(ds.value.clone())),
        [schema, ds] if schema.value == "druid" && served(&ds.value) => {
            Ok(Source::Datasource(ds.value.clone()))
        }
        [only] => Err(DruidError::object_not_found(
            &only.value,
            None,
            position(only),
        )),
        [schema, table] if SCHEMAS.contains(&schema.value.as_str()) => Err(
            DruidError::object_not_found(&table.value, Some(&schema.value), position(table)),
        ),
        [schema, _] => Err(DruidError::object_not_found(
            &schema.value,
            None,
            position(schema),
        )),
        _ => Err(unsupported(format!(
            "table name {}",
            parts
                .iter()
                .map(|p| p.value.as_str())
                .collect::<Vec<_>>()
                .join(".")
        ))),
    }
}

fn plan(store: &Store, unloaded: &BTreeSet<String>, q: &Query) -> Result<Plan, DruidError> {
    if q.with.is_some()
        || q.fetch.is_some()
        || !q.locks.is_empty()
        || q.for_clause.is_some()
        || q.settings.is_some()
        || q.format_clause.is_some()
        || !q.pipe_operators.is_empty()
    {
        return Err(unsupported("WITH, FETCH, FOR or pipe clauses"));
    }
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return Err(unsupported(
            "only a single SELECT (no UNION, VALUES or subquery)",
        ));
    };
    if sel.distinct.is_some()
        || sel.top.is_some()
        || sel.into.is_some()
        || !sel.lateral_views.is_empty()
        || sel.prewhere.is_some()
        || sel.having.is_some()
        || !sel.cluster_by.is_empty()
        || !sel.distribute_by.is_empty()
        || !sel.sort_by.is_empty()
        || !sel.named_window.is_empty()
        || sel.qualify.is_some()
        || sel.connect_by.is_some()
        || sel.exclude.is_some()
    {
        return Err(unsupported(
            "DISTINCT, HAVING, windows or dialect extensions",
        ));
    }
    let [from] = sel.from.as_slice() else {
        return Err(unsupported("exactly one table in FROM"));
    };
    if !from.joins.is_empty() {
        return Err(unsupported("JOIN"));
    }
    let TableFactor::Table {
        name, args: None, ..
    } = &from.relation
    else {
        return Err(unsupported("FROM must name a table"));
    };
    let parts: Vec<&Ident> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Ok(i),
            _ => Err(unsupported("table name")),
        })
        .collect::<Result<_, _>>()?;
    let source = resolve_table(store, unloaded, &parts)?;

    // Projection.
    let mut items: Vec<(String, Item)> = Vec::new();
    for (i, si) in sel.projection.iter().enumerate() {
        let (expr, alias) = match si {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            _ => return Err(unsupported("SELECT * (name the columns)")),
        };
        let item = item_of(store, &source, expr)?;
        let name = alias.unwrap_or_else(|| match &item {
            Item::Scalar(Scalar::Time) => "__time".to_string(),
            Item::Scalar(Scalar::Column(c)) => c.clone(),
            _ => format!("EXPR${i}"),
        });
        items.push((name, item));
    }

    let resolve = |items: &[(String, Item)], e: &Expr| resolve_ref(store, &source, items, e);

    // GROUP BY.
    let mut group = Vec::new();
    match &sel.group_by {
        GroupByExpr::Expressions(exprs, mods) if mods.is_empty() => {
            for e in exprs {
                // A group key need not be selected; then it is read as an expression.
                let key = match resolve(&items, e) {
                    Ok(k) => match &items[k].1 {
                        Item::Scalar(s) => s.clone(),
                        Item::Agg(_) => {
                            return Err(DruidError::invalid(format!(
                                "Aggregate functions are not allowed in GROUP BY: {e}"
                            )))
                        }
                    },
                    Err(err) => match item_of(store, &source, e) {
                        Ok(Item::Scalar(s)) => s,
                        _ => return Err(err),
                    },
                };
                group.push(key);
            }
        }
        _ => return Err(unsupported("GROUP BY ALL or modifiers")),
    }
    let has_agg = items.iter().any(|(_, i)| matches!(i, Item::Agg(_)));
    let aggregate = has_agg || !group.is_empty();
    if aggregate {
        for (name, it) in &items {
            if let Item::Scalar(s) = it {
                if !group.contains(s) {
                    return Err(DruidError::invalid(format!(
                        "Expression '{name}' is not being grouped"
                    )));
                }
            }
        }
    } else if matches!(source, Source::Datasource(_)) {
        return Err(unsupported(
            "reading raw rows of a datasource (lockstep-sim keeps counts and sums only); aggregate or GROUP BY",
        ));
    }

    // WHERE.
    let mut filter = Vec::new();
    if let Some(w) = &sel.selection {
        conds(store, &source, w, &mut filter)?;
    }

    // ORDER BY, LIMIT, OFFSET.
    let visible = items.len();
    let mut order = Vec::new();
    if let Some(ob) = &q.order_by {
        let OrderByKind::Expressions(exprs) = &ob.kind else {
            return Err(unsupported("ORDER BY ALL"));
        };
        if ob.interpolate.is_some() {
            return Err(unsupported("ORDER BY ... INTERPOLATE"));
        }
        for e in exprs {
            if e.with_fill.is_some() {
                return Err(unsupported("ORDER BY ... WITH FILL"));
            }
            let k = match resolve(&items, &e.expr) {
                Ok(k) => k,
                Err(err) => {
                    // Ordering by something not selected: carry it as a hidden column.
                    let it = item_of(store, &source, &e.expr).map_err(|_| err.clone())?;
                    if let (true, Item::Scalar(sc)) = (aggregate, &it) {
                        if !group.contains(sc) {
                            return Err(err);
                        }
                    }
                    items.push((String::new(), it));
                    items.len() - 1
                }
            };
            order.push((k, e.options.asc.unwrap_or(true)));
        }
    }
    let (mut limit, mut offset) = (None, 0);
    match &q.limit_clause {
        None => {}
        Some(LimitClause::LimitOffset {
            limit: l,
            offset: o,
            limit_by,
        }) if limit_by.is_empty() => {
            if let Some(l) = l {
                limit = Some(usize_literal(l)?);
            }
            if let Some(o) = o {
                offset = usize_literal(&o.value)?;
            }
        }
        Some(_) => return Err(unsupported("this LIMIT form")),
    }
    Ok(Plan {
        source,
        items,
        visible,
        group,
        aggregate,
        filter,
        order,
        limit,
        offset,
    })
}

/// Resolves a GROUP BY / ORDER BY reference: ordinal, output alias, or expression.
fn resolve_ref(
    store: &Store,
    source: &Source,
    items: &[(String, Item)],
    e: &Expr,
) -> Result<usize, DruidError> {
    if let Expr::Value(v) = e {
        if let SqlValue::Number(n, _) = &v.value {
            let k: usize = n
                .parse()
                .map_err(|_| DruidError::invalid(format!("Ordinal '{n}' is not valid")))?;
            if k == 0 || k > items.len() {
                return Err(DruidError::invalid(format!(
                    "Ordinal out of range: {k} (the select list has {} columns)",
                    items.len()
                )));
            }
            return Ok(k - 1);
        }
    }
    if let Expr::Identifier(id) = e {
        if let Some(k) = items.iter().position(|(n, _)| *n == id.value) {
            return Ok(k);
        }
    }
    let it = item_of(store, source, e)?;
    items
        .iter()
        .position(|(_, i)| *i == it)
        .ok_or_else(|| unsupported(format!("'{e}' must be in the select list")))
}

fn usize_literal(e: &Expr) -> Result<usize, DruidError> {
    if let Expr::Value(v) = e {
        if let SqlValue::Number(n, _) = &v.value {
            if let Ok(k) = n.parse() {
                return Ok(k);
            }
        }
    }
    Err(unsupported(format!(
        "LIMIT/OFFSET must be a whole number, not {e}"
    )))
}

fn ident_of(e: &Expr) -> Option<&str> {
    match e {
        Expr::Identifier(i) => Some(&i.value),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.as_str()),
        Expr::Nested(inner) => ident_of(inner),
        _ => None,
    }
}

/// The plain arguments of a function call.
fn fn_args(f: &sqlparser::ast::Function) -> Result<Vec<&FunctionArgExpr>, DruidError> {
    if f.filter.is_some() || f.over.is_some() || f.null_treatment.is_some() {
        return Err(unsupported(format!("{f}")));
    }
    match &f.args {
        FunctionArguments::None => Ok(vec![]),
        FunctionArguments::List(l) if l.duplicate_treatment.is_none() && l.clauses.is_empty() => l
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(x) => Ok(x),
                _ => Err(unsupported(format!("named arguments in {f}"))),
            })
            .collect(),
        _ => Err(unsupported(format!("{f}"))),
    }
}

fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            SqlValue::SingleQuotedString(s) => Some(s),
            _ => None,
        },
        Expr::Nested(inner) => string_literal(inner),
        _ => None,
    }
}

fn scalar_of(source: &Source, e: &Expr) -> Result<Scalar, DruidError> {
    if let Some(name) = ident_of(e) {
        return match source {
            Source::Datasource(_) if name == "__time" => Ok(Scalar::Time),
            Source::Datasource(_) => Err(unsupported(format!(
                "column '{name}' outside SUM (lockstep-sim keeps no dimension values)"
            ))),
            Source::Segments => {
                if SEGMENT_COLUMNS.iter().any(|(c, _)| *c == name) {
                    Ok(Scalar::Column(name.to_string()))
                } else {
                    Err(DruidError::invalid(format!(
                        "Column '{name}' not found in any table"
                    )))
                }
            }
        };
    }
    match e {
        Expr::Nested(inner) => scalar_of(source, inner),
        Expr::Function(f) => {
            let fname = f.name.to_string().to_ascii_uppercase();
            if fname != "TIME_FLOOR" {
                return Err(unsupported(format!("function {fname}")));
            }
            let args = fn_args(f)?;
            let [FunctionArgExpr::Expr(t), FunctionArgExpr::Expr(p)] = args.as_slice() else {
                return Err(unsupported(
                    "TIME_FLOOR with origin or time zone arguments (use TIME_FLOOR(__time, 'PT1H'))",
                ));
            };
            if scalar_of(source, t)? != Scalar::Time {
                return Err(unsupported("TIME_FLOOR of anything but __time"));
            }
            let period = string_literal(p)
                .ok_or_else(|| unsupported("TIME_FLOOR period must be a string literal"))?;
            let period = Period::parse_iso(period).ok_or_else(|| {
                DruidError::invalid(format!(
                    "lockstep-sim cannot use period '{period}' (fixed-length ISO periods only: PTnS, PTnM, PTnH, PnD, PnW)"
                ))
            })?;
            Ok(Scalar::TimeFloor(period))
        }
        Expr::Floor { expr, field } => {
            if scalar_of(source, expr)? != Scalar::Time {
                return Err(unsupported("FLOOR of anything but __time"));
            }
            let sqlparser::ast::CeilFloorKind::DateTimeField(unit) = field else {
                return Err(unsupported("FLOOR(__time, scale)"));
            };
            let unit = unit.to_string().to_ascii_uppercase();
            let p = match unit.as_str() {
                "SECOND" => "PT1S",
                "MINUTE" => "PT1M",
                "HOUR" => "PT1H",
                "DAY" => "P1D",
                "WEEK" => "P1W",
                _ => return Err(unsupported(format!("FLOOR(__time TO {unit})"))),
            };
            Ok(Scalar::TimeFloor(Period::parse_iso(p).ok_or_else(
                || DruidError::runtime("internal period table"),
            )?))
        }
        _ => Err(unsupported(format!("expression {e}"))),
    }
}

fn item_of(store: &Store, source: &Source, e: &Expr) -> Result<Item, DruidError> {
    if let Expr::Nested(inner) = e {
        return item_of(store, source, inner);
    }
    if let Expr::Function(f) = e {
        let fname = f.name.to_string().to_ascii_uppercase();
        let agg = match fname.as_str() {
            "COUNT" | "SUM" | "MIN" | "MAX" => fname,
            _ => return Ok(Item::Scalar(scalar_of(source, e)?)),
        };
        let args = fn_args(f)?;
        let arg = match args.as_slice() {
            [FunctionArgExpr::Wildcard] if agg == "COUNT" => return Ok(Item::Agg(Agg::Count)),
            [FunctionArgExpr::Expr(x)] => x,
            _ => return Err(unsupported(format!("{f}"))),
        };
        return match agg.as_str() {
            "SUM" => {
                let col = ident_of(arg)
                    .ok_or_else(|| unsupported(format!("SUM of an expression: {f}")))?;
                check_sum_column(store, source, col)?;
                Ok(Item::Agg(Agg::Sum(col.to_string())))
            }
            "MIN" => Ok(Item::Agg(Agg::Min(scalar_of(source, arg)?))),
            "MAX" => Ok(Item::Agg(Agg::Max(scalar_of(source, arg)?))),
            _ => Err(unsupported(format!("{f} (use COUNT(*))"))),
        };
    }
    Ok(Item::Scalar(scalar_of(source, e)?))
}

fn check_sum_column(store: &Store, source: &Source, col: &str) -> Result<(), DruidError> {
    let kind = match source {
        Source::Segments => match SEGMENT_COLUMNS.iter().find(|(c, _)| *c == col) {
            Some((_, true)) => Some(ColumnKind::Long),
            Some((_, false)) => Some(ColumnKind::Other),
            None => None,
        },
        Source::Datasource(ds) => store
            .with_datasource(ds, |d| d.columns.get(col).copied())
            .flatten(),
    };
    match kind {
        None => Err(DruidError::invalid(format!(
            "Column '{col}' not found in any table"
        ))),
        Some(ColumnKind::Other) => Err(DruidError::invalid(format!(
            "Cannot apply 'SUM' to column '{col}': it is not numeric"
        ))),
        Some(_) => Ok(()),
    }
}

/// A comparison operand: a literal (string, number, timestamp).
fn literal(e: &Expr) -> Result<Val, DruidError> {
    match e {
        Expr::Nested(inner) => literal(inner),
        Expr::Value(v) => match &v.value {
            SqlValue::SingleQuotedString(s) => Ok(Val::Str(s.clone())),
            SqlValue::Number(n, _) => n
                .parse::<i64>()
                .map(Val::Long)
                .or_else(|_| n.parse::<f64>().map(Val::Double))
                .map_err(|_| DruidError::invalid(format!("bad number {n}"))),
            SqlValue::Boolean(b) => Ok(Val::Long(i64::from(*b))),
            _ => Err(unsupported(format!("literal {e}"))),
        },
        Expr::TypedString(ts) => {
            let ty = ts.data_type.to_string().to_ascii_uppercase();
            let SqlValue::SingleQuotedString(s) = &ts.value.value else {
                return Err(unsupported(format!("literal {e}")));
            };
            if ty.starts_with("TIMESTAMP") || ty == "DATE" {
                parse_iso(s)
                    .map(Val::Time)
                    .ok_or_else(|| DruidError::invalid(format!("Illegal TIMESTAMP literal '{s}'")))
            } else {
                Err(unsupported(format!("literal of type {ty}")))
            }
        }
        Expr::Function(f) => {
            let fname = f.name.to_string().to_ascii_uppercase();
            let args = fn_args(f)?;
            match (fname.as_str(), args.as_slice()) {
                ("MILLIS_TO_TIMESTAMP", [FunctionArgExpr::Expr(x)]) => match literal(x)? {
                    Val::Long(ms) => Ok(Val::Time(ms)),
                    _ => Err(unsupported(format!("{f}"))),
                },
                ("TIME_PARSE", [FunctionArgExpr::Expr(x)]) => {
                    let s = string_literal(x).ok_or_else(|| unsupported(format!("{f}")))?;
                    Ok(parse_iso(s).map(Val::Time).unwrap_or(Val::Null))
                }
                _ => Err(unsupported(format!("function {fname} in WHERE"))),
            }
        }
        _ => Err(unsupported(format!("comparison with {e}"))),
    }
}

fn flip(op: &BinaryOperator) -> BinaryOperator {
    match op {
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        other => other.clone(),
    }
}

/// Flattens an `AND` tree of comparisons into `out`.
fn conds(store: &Store, source: &Source, e: &Expr, out: &mut Vec<Cond>) -> Result<(), DruidError> {
    match e {
        Expr::Nested(inner) => conds(store, source, inner, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conds(store, source, left, out)?;
            conds(store, source, right, out)
        }
        Expr::BinaryOp { left, op, right } => {
            if !matches!(
                op,
                BinaryOperator::Eq
                    | BinaryOperator::NotEq
                    | BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Gt
                    | BinaryOperator::GtEq
            ) {
                return Err(unsupported(format!(
                    "operator {op} in WHERE (AND of comparisons only)"
                )));
            }
            let (column, op, value) = match scalar_of(source, left) {
                Ok(c) => (c, op.clone(), literal(right)?),
                Err(_) => (scalar_of(source, right)?, flip(op), literal(left)?),
            };
            let value = coerce(&column, value)?;
            out.push(Cond { column, op, value });
            Ok(())
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } => {
            let column = scalar_of(source, expr)?;
            let lo = coerce(&column, literal(low)?)?;
            let hi = coerce(&column, literal(high)?)?;
            out.push(Cond {
                column: column.clone(),
                op: BinaryOperator::GtEq,
                value: lo,
            });
            out.push(Cond {
                column,
                op: BinaryOperator::LtEq,
                value: hi,
            });
            Ok(())
        }
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("TIME_IN_INTERVAL") => {
            let args = fn_args(f)?;
            let [FunctionArgExpr::Expr(t), FunctionArgExpr::Expr(i)] = args.as_slice() else {
                return Err(unsupported(format!("{f}")));
            };
            let column = scalar_of(source, t)?;
            if column != Scalar::Time {
                return Err(unsupported("TIME_IN_INTERVAL of anything but __time"));
            }
            let interval = string_literal(i).ok_or_else(|| unsupported(format!("{f}")))?;
            let (a, b) = interval
                .split_once('/')
                .and_then(|(a, b)| Some((parse_iso(a)?, parse_iso(b)?)))
                .ok_or_else(|| {
                    DruidError::invalid(format!("Cannot read interval '{interval}' (start/end)"))
                })?;
            out.push(Cond {
                column: Scalar::Time,
                op: BinaryOperator::GtEq,
                value: Val::Time(a),
            });
            out.push(Cond {
                column: Scalar::Time,
                op: BinaryOperator::Lt,
                value: Val::Time(b),
            });
            Ok(())
        }
        _ => {
            let _ = store;
            Err(unsupported(format!(
                "WHERE condition {e} (AND of comparisons only)"
            )))
        }
    }
}

/// Makes a literal comparable with a column: a string compared with `__time` is read as
/// a timestamp (as Druid casts it); numbers compared with segment strings stay numbers.
fn coerce(column: &Scalar, v: Val) -> Result<Val, DruidError> {
    match (column, v) {
        (Scalar::Time | Scalar::TimeFloor(_), Val::Str(s)) => parse_iso(&s)
            .map(Val::Time)
            .ok_or_else(|| DruidError::invalid(format!("Cannot read '{s}' as a TIMESTAMP"))),
        (Scalar::Time | Scalar::TimeFloor(_), Val::Long(ms)) => Ok(Val::Time(ms)),
        (Scalar::Time | Scalar::TimeFloor(_), v @ Val::Time(_)) => Ok(v),
        (Scalar::Time | Scalar::TimeFloor(_), v) => Err(DruidError::invalid(format!(
            "Cannot compare __time with {}",
            v.to_json()
        ))),
        (Scalar::Column(_), Val::Time(ms)) => Ok(Val::Str(iso(ms))),
        (_, v) => Ok(v),
    }
}

fn holds(op: &BinaryOperator, ord: Ordering) -> bool {
    match op {
        BinaryOperator::Eq => ord == Ordering::Equal,
        BinaryOperator::NotEq => ord != Ordering::Equal,
        BinaryOperator::Lt => ord == Ordering::Less,
        BinaryOperator::LtEq => ord != Ordering::Greater,
        BinaryOperator::Gt => ord == Ordering::Greater,
        BinaryOperator::GtEq => ord != Ordering::Less,
        _ => false,
    }
}

/// A record the pipeline reads: a datasource entry or a segment row.
trait Record {
    fn weight(&self) -> u64;
    fn value(&self, s: &Scalar) -> Val;
    fn sum(&self, col: &str) -> Option<Sum>;
}

struct EntryRec<'a> {
    ts: i64,
    entry: &'a Entry,
}

impl Record for EntryRec<'_> {
    fn weight(&self) -> u64 {
        self.entry.rows
    }
    fn value(&self, s: &Scalar) -> Val {
        match s {
            Scalar::Time => Val::Time(self.ts),
            Scalar::TimeFloor(p) => Val::Time(druid_floor(*p, self.ts)),
            Scalar::Column(_) => Val::Null,
        }
    }
    fn sum(&self, col: &str) -> Option<Sum> {
        self.entry.sum(col).copied()
    }
}

/// A `sys.segments` row: a published segment and whether any server serves it.
struct SegmentRec {
    seg: Segment,
    available: bool,
}

impl Record for SegmentRec {
    fn weight(&self) -> u64 {
        1
    }
    fn value(&self, s: &Scalar) -> Val {
        let Scalar::Column(c) = s else {
            return Val::Null;
        };
        let seg = &self.seg;
        let available = i64::from(self.available);
        // Column meanings from docs/querying/sql-metadata-tables.md (SEGMENTS table). Every
        // segment here is published and none is overshadowed, so is_active
        // (`(is_published = 1 AND is_overshadowed = 0) OR is_realtime = 1`) is 1 even while
        // unavailable; is_available is 1 only while some server serves it, and num_replicas
        // counts those servers. num_rows is "zero if the number of rows is not known": the
        // Broker learns it from the servers serving the segment, so an unserved one has 0.
        // replication_factor is what the load rules ask for, served or not.
        match c.as_str() {
            "segment_id" => Val::Str(seg.id()),
            "datasource" => Val::Str(seg.datasource.clone()),
            "start" => Val::Str(iso(seg.start)),
            "end" => Val::Str(iso(seg.end)),
            "size" => Val::Long(seg.size as i64),
            "version" => Val::Str(seg.version.clone()),
            "partition_num" => Val::Long(0),
            "num_replicas" => Val::Long(available),
            "replication_factor" => Val::Long(1),
            "num_rows" if self.available => Val::Long(seg.num_rows as i64),
            "num_rows" => Val::Long(0),
            "is_available" => Val::Long(available),
            "is_active" | "is_published" => Val::Long(1),
            "is_realtime" | "is_overshadowed" => Val::Long(0),
            "shard_spec" => {
                Val::Str(r#"{"type":"numbered","partitionNum":0,"partitions":0}"#.into())
            }
            "dimensions" | "metrics" => Val::Str("[]".into()),
            _ => Val::Null,
        }
    }
    fn sum(&self, col: &str) -> Option<Sum> {
        match self.value(&Scalar::Column(col.to_string())) {
            Val::Long(i) => Some(Sum {
                long: i,
                double: i as f64,
                is_double: false,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum AggState {
    Count(u64),
    Sum(Option<Sum>),
    Min(Option<Val>),
    Max(Option<Val>),
}

impl AggState {
    fn new(a: &Agg) -> AggState {
        match a {
            Agg::Count => AggState::Count(0),
            Agg::Sum(_) => AggState::Sum(None),
            Agg::Min(_) => AggState::Min(None),
            Agg::Max(_) => AggState::Max(None),
        }
    }

    fn add(&mut self, a: &Agg, r: &dyn Record) {
        match (self, a) {
            (AggState::Count(n), _) => *n += r.weight(),
            (AggState::Sum(s), Agg::Sum(col)) => {
                if let Some(x) = r.sum(col) {
                    s.get_or_insert_with(Sum::default).add(&x);
                }
            }
            (AggState::Min(m), Agg::Min(e)) => {
                let v = r.value(e);
                if !matches!(v, Val::Null) && m.as_ref().is_none_or(|cur| v < *cur) {
                    *m = Some(v);
                }
            }
            (AggState::Max(m), Agg::Max(e)) => {
                let v = r.value(e);
                if !matches!(v, Val::Null) && m.as_ref().is_none_or(|cur| v > *cur) {
                    *m = Some(v);
                }
            }
            _ => {}
        }
    }

    fn finish(self) -> Val {
        match self {
            AggState::Count(n) => Val::Long(n as i64),
            AggState::Sum(None) | AggState::Min(None) | AggState::Max(None) => Val::Null,
            AggState::Sum(Some(s)) if s.is_double => Val::Double(s.double),
            AggState::Sum(Some(s)) => Val::Long(s.long),
            AggState::Min(Some(v)) | AggState::Max(Some(v)) => v,
        }
    }
}

fn column_type(store: &Store, source: &Source, item: &Item) -> (&'static str, &'static str) {
    const TS: (&str, &str) = ("LONG", "TIMESTAMP");
    const LONG: (&str, &str) = ("LONG", "BIGINT");
    const STR: (&str, &str) = ("STRING", "VARCHAR");
    match item {
        Item::Scalar(Scalar::Time | Scalar::TimeFloor(_)) => TS,
        Item::Scalar(Scalar::Column(c))
        | Item::Agg(Agg::Min(Scalar::Column(c)) | Agg::Max(Scalar::Column(c))) => {
            if SEGMENT_COLUMNS.iter().any(|(n, num)| n == c && *num) {
                LONG
            } else {
                STR
            }
        }
        Item::Agg(Agg::Min(_) | Agg::Max(_)) => TS,
        Item::Agg(Agg::Count) => LONG,
        Item::Agg(Agg::Sum(col)) => match source {
            Source::Datasource(ds)
                if store.with_datasource(ds, |d| d.columns.get(col.as_str()).copied())
                    == Some(Some(ColumnKind::Double)) =>
            {
                ("DOUBLE", "DOUBLE")
            }
            _ => LONG,
        },
    }
}

fn run(store: &Store, unloaded: &BTreeSet<String>, plan: &Plan) -> Result<ResultSet, DruidError> {
    let columns = plan.items[..plan.visible]
        .iter()
        .map(|(name, it)| {
            let (druid_type, sql_type) = column_type(store, &plan.source, it);
            Column {
                name: name.clone(),
                druid_type,
                sql_type,
            }
        })
        .collect();
    let aggs: Vec<&Agg> = plan
        .items
        .iter()
        .filter_map(|(_, i)| match i {
            Item::Agg(a) => Some(a),
            _ => None,
        })
        .collect();
    let mut groups: BTreeMap<Vec<Val>, Vec<AggState>> = BTreeMap::new();
    let mut raw: Vec<Vec<Val>> = Vec::new();
    let passes = |r: &dyn Record| {
        plan.filter
            .iter()
            .all(|c| holds(&c.op, r.value(&c.column).cmp(&c.value)))
    };
    let mut visit = |r: &dyn Record| {
        if !passes(r) {
            return;
        }
        if plan.aggregate {
            let key: Vec<Val> = plan.group.iter().map(|g| r.value(g)).collect();
            let states = groups
                .entry(key)
                .or_insert_with(|| aggs.iter().map(|a| AggState::new(a)).collect());
            for (s, a) in states.iter_mut().zip(&aggs) {
                s.add(a, r);
            }
        } else {
            raw.push(
                plan.items
                    .iter()
                    .map(|(_, i)| match i {
                        Item::Scalar(s) => r.value(s),
                        Item::Agg(_) => Val::Null,
                    })
                    .collect(),
            );
        }
    };
    match &plan.source {
        Source::Datasource(ds) => {
            // Push the __time bounds down into the BTreeMap range.
            let (mut lo, mut hi) = (i64::MIN, i64::MAX);
            for c in &plan.filter {
                if let (Scalar::Time, Val::Time(t)) = (&c.column, &c.value) {
                    match c.op {
                        BinaryOperator::GtEq => lo = lo.max(*t),
                        BinaryOperator::Gt => lo = lo.max(t.saturating_add(1)),
                        BinaryOperator::Lt => hi = hi.min(*t),
                        BinaryOperator::LtEq => hi = hi.min(t.saturating_add(1)),
                        BinaryOperator::Eq => {
                            lo = lo.max(*t);
                            hi = hi.min(t.saturating_add(1));
                        }
                        _ => {}
                    }
                }
            }
            store.with_datasource(ds, |d| {
                if lo < hi {
                    for (ts, entry) in d.entries.range(lo..hi) {
                        visit(&EntryRec { ts: *ts, entry });
                    }
                }
            });
        }
        Source::Segments => {
            for s in store.segments(None) {
                let available = !unloaded.contains(&s.datasource);
                visit(&SegmentRec { seg: s, available });
            }
        }
    }
    if plan.aggregate && plan.group.is_empty() && groups.is_empty() {
        groups.insert(vec![], aggs.iter().map(|a| AggState::new(a)).collect());
    }
    let mut rows: Vec<Vec<Val>> = if plan.aggregate {
        groups
            .into_iter()
            .map(|(key, states)| {
                let mut states = states.into_iter();
                plan.items
                    .iter()
                    .map(|(_, it)| match it {
                        Item::Scalar(s) => plan
                            .group
                            .iter()
                            .position(|g| g == s)
                            .map(|k| key[k].clone())
                            .unwrap_or(Val::Null),
                        Item::Agg(_) => states.next().map(AggState::finish).unwrap_or(Val::Null),
                    })
                    .collect()
            })
            .collect()
    } else {
        raw
    };
    if !plan.order.is_empty() {
        rows.sort_by(|a, b| {
            for (k, asc) in &plan.order {
                let o = a[*k].cmp(&b[*k]);
                let o = if *asc { o } else { o.reverse() };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
    }
    let rows = rows
        .into_iter()
        .skip(plan.offset)
        .take(plan.limit.unwrap_or(usize::MAX))
        .map(|r| r[..plan.visible].iter().map(Val::to_json).collect())
        .collect();
    Ok(ResultSet { columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> Store {
        let s = Store::new(Period::parse_granularity("HOUR").unwrap());
        let base = parse_iso("2026-11-23T00:00:00Z").unwrap();
        // 3 rows per 20 minutes over 3 hours, count 2 each.
        for i in 0..9 {
            for _ in 0..3 {
                let r = json!({"__time": "x", "count": 2, "user": "a"});
                s.ingest(
                    "clicks",
                    &crate::store::Schema::raw("__time"),
                    base + i * 1_200_000,
                    r.as_object().unwrap(),
                    7,
                );
            }
        }
        s
    }

    fn q(s: &Store, sql: &str) -> Result<ResultSet, DruidError> {
        execute(
            s,
            &SqlRequest {
                query: sql.into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn bucketed_counts_and_sums() {
        let s = store();
        let r = q(&s, r#"SELECT TIME_FLOOR(__time, 'PT1H') AS "bucket", COUNT(*) AS "rows", SUM("count") AS c
            FROM "clicks" WHERE __time >= TIMESTAMP '2026-11-23 01:00:00' AND __time < TIMESTAMP '2026-11-24 00:00:00'
            GROUP BY 1 ORDER BY 1"#).unwrap();
        assert_eq!(r.columns[0].name, "bucket");
        assert_eq!(r.columns[2].name, "c");
        assert_eq!(
            r.rows,
            vec![
                vec![json!("2026-11-23T01:00:00.000Z"), json!(9), json!(18)],
                vec![json!("2026-11-23T02:00:00.000Z"), json!(9), json!(18)],
            ]
        );
        let r = q(
            &s,
            r#"SELECT TIME_FLOOR(__time, 'P1D'), COUNT(*) FROM clicks GROUP BY 1 ORDER BY 1 DESC;"#,
        )
        .unwrap();
        assert_eq!(r.columns[1].name, "EXPR$1");
        assert_eq!(
            r.rows,
            vec![vec![json!("2026-11-23T00:00:00.000Z"), json!(27)]]
        );
        let r = q(
            &s,
            r#"SELECT MAX(__time) AS "latest", MIN(__time), COUNT(*) FROM "clicks""#,
        )
        .unwrap();
        assert_eq!(
            r.rows,
            vec![vec![
                json!("2026-11-23T02:40:00.000Z"),
                json!("2026-11-23T00:00:00.000Z"),
                json!(27)
            ]]
        );
        let r = q(
            &s,
            r#"SELECT COUNT(*), SUM("count") FROM "clicks" WHERE __time > '2030-01-01'"#,
        )
        .unwrap();
        assert_eq!(r.rows, vec![vec![json!(0), json!(null)]]);
    }

    #[test]
    fn parameters() {
        let s = store();
        let r = execute(
            &s,
            &SqlRequest {
                query: r#"SELECT COUNT(*) AS n FROM "clicks" WHERE __time >= ? AND __time < ?"#
                    .into(),
                parameters: vec![
                    Parameter {
                        ty: "TIMESTAMP".into(),
                        value: json!("2026-11-23 00:00:00"),
                    },
                    Parameter {
                        ty: "VARCHAR".into(),
                        value: json!("2026-11-23T00:20:00Z"),
                    },
                ],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.rows, vec![vec![json!(3)]]);
        let e = execute(
            &s,
            &SqlRequest {
                query: "SELECT COUNT(*) FROM clicks WHERE __time >= ?".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.message.contains("not bound"), "{}", e.message);
    }

    #[test]
    fn segments() {
        let s = store();
        let r = q(&s, r#"SELECT "start", "end", SUM("num_rows") AS "rows", COUNT(*) AS "segments"
            FROM sys.segments WHERE "datasource" = 'clicks' AND is_published = 1 AND is_overshadowed = 0
            GROUP BY 1, 2 ORDER BY 1"#).unwrap();
        assert_eq!(r.rows.len(), 3);
        assert_eq!(
            r.rows[0],
            vec![
                json!("2026-11-23T00:00:00.000Z"),
                json!("2026-11-23T01:00:00.000Z"),
                json!(9),
                json!(1)
            ]
        );
        let r = q(
            &s,
            r#"SELECT COUNT(*) FROM sys.segments WHERE datasource = 'other'"#,
        )
        .unwrap();
        assert_eq!(r.rows, vec![vec![json!(0)]]);
        let r = q(
            &s,
            r#"SELECT segment_id, num_rows FROM sys.segments ORDER BY "start" DESC LIMIT 1"#,
        )
        .unwrap();
        assert_eq!(r.rows[0][1], json!(9));
        assert!(r.rows[0][0]
            .as_str()
            .unwrap()
            .starts_with("clicks_2026-11-23T02:00:00.000Z_2026-11-23T03:00:00.000Z_"));
    }

    #[test]
    fn unknown_tables_point_where_calcite_does() {
        let s = store();
        let err = |sql: &str| q(&s, sql).unwrap_err();
        let e = err(r#"SELECT * FROM nope"#);
        assert_eq!(e.message, "Object 'nope' not found (line [1], column [15])");
        assert_eq!(
            e.context,
            [
                ("sourceType", "sql"),
                ("line", "1"),
                ("column", "15"),
                ("endLine", "1"),
                ("endColumn", "18")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // A quoted name spans its quotes; a qualified one points at the missing part.
        let e = err("SELECT COUNT(*)\n  FROM \"nope\"");
        assert_eq!(e.message, "Object 'nope' not found (line [2], column [8])");
        assert_eq!(e.context[4], ("endColumn".to_string(), "13".to_string()));
        let e = err(r#"SELECT COUNT(*) FROM druid."nope""#);
        assert_eq!(
            e.message,
            "Object 'nope' not found within 'druid' (line [1], column [28])"
        );
        let e = err(r#"SELECT COUNT(*) FROM foo.bar"#);
        assert_eq!(e.message, "Object 'foo' not found (line [1], column [22])");
        assert_eq!(
            e.legacy_message.as_deref(),
            Some("org.apache.calcite.runtime.CalciteContextException: From line 1, column 22 to line 1, column 24: Object 'foo' not found")
        );
    }

    #[test]
    fn unloaded_datasource_is_unknown_but_its_segments_are_listed() {
        let s = store();
        let unloaded: BTreeSet<String> = ["clicks".to_string()].into();
        let run = |sql: &str| {
            execute_with(
                &s,
                &unloaded,
                &SqlRequest {
                    query: sql.into(),
                    ..Default::default()
                },
            )
        };
        let e = run(r#"SELECT COUNT(*) FROM "clicks""#).unwrap_err();
        assert_eq!(
            e.message,
            "Object 'clicks' not found (line [1], column [22])"
        );
        let drift = r#"SELECT "start", "end", SUM("num_rows") AS "rows", COUNT(*) AS "segments", SUM("is_available") AS "available" FROM sys.segments WHERE "datasource" = 'clicks' AND is_published = 1 AND is_overshadowed = 0 GROUP BY 1, 2 ORDER BY 1"#;
        let r = run(drift).unwrap();
        assert_eq!(r.rows.len(), 3);
        assert_eq!(
            r.rows[0],
            vec![
                json!("2026-11-23T00:00:00.000Z"),
                json!("2026-11-23T01:00:00.000Z"),
                json!(0),
                json!(1),
                json!(0)
            ]
        );
        let r = run("SELECT SUM(is_active), SUM(is_realtime), SUM(num_replicas), MIN(is_published) FROM sys.segments").unwrap();
        assert_eq!(r.rows, vec![vec![json!(3), json!(0), json!(0), json!(1)]]);
        let r = q(&s, drift).unwrap();
        assert_eq!(r.rows[0][2..], [json!(9), json!(1), json!(1)]);
    }

    #[test]
    fn errors_never_wrong_answers() {
        let s = store();
        for (sql, needle) in [
            (
                "SELECT COUNT(*) FROM nope",
                // Calcite's message for an unqualified name, with Druid's position suffix.
                "Object 'nope' not found (line [1], column [22])",
            ),
            (
                "SELECT COUNT(*) FROM sys.tasks",
                "Object 'tasks' not found within 'sys'",
            ),
            (
                "SELECT SUM(missing) FROM clicks",
                "Column 'missing' not found",
            ),
            ("SELECT SUM(\"user\") FROM clicks", "not numeric"),
            ("SELECT * FROM clicks", "not supported"),
            (
                "SELECT user, COUNT(*) FROM clicks GROUP BY 1",
                "not supported",
            ),
            (
                "SELECT COUNT(*) FROM clicks WHERE __time > 0 OR __time < 5",
                "not supported",
            ),
            (
                "SELECT TIME_FLOOR(__time, 'P1M'), COUNT(*) FROM clicks GROUP BY 1",
                "period 'P1M'",
            ),
            (
                "SELECT TIME_FLOOR(__time, 'PT1H'), COUNT(*) FROM clicks",
                "not being grouped",
            ),
            ("SELEC 1", "Incorrect syntax"),
            ("DELETE FROM clicks", "Only SELECT"),
            (
                "SELECT COUNT(DISTINCT \"user\") FROM clicks",
                "not supported",
            ),
        ] {
            let e = q(&s, sql).unwrap_err();
            assert!(e.message.contains(needle), "{sql}: {}", e.message);
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        }
        let e = execute(
            &s,
            &SqlRequest {
                query: "SELECT COUNT(*) FROM clicks".into(),
                context: Some(
                    json!({"sqlTimeZone": "Europe/Paris"})
                        .as_object()
                        .cloned()
                        .unwrap(),
                ),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.message.contains("UTC"));
    }
}
