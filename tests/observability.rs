//! Observability, checked against the real thing:
//! - the metrics catalog: the README's table, the `NAMES` lists in code and the `/metrics` of
//!   a running `lockstep demo` (coordinator and both workers) agree, and names follow the
//!   conventions;
//! - `dashboards/`: the Grafana dashboards are well formed and importable anywhere, the alert
//!   rules pass `promtool check rules`, and `promtool test rules` proves each alert fires;
//! - a real Prometheus (Debian's package) scrapes the running demo, loads the alert rules, and
//!   evaluates every PromQL expression of the dashboards and rules through its HTTP API. The
//!   expressions are read from the files here, so a new panel or rule is covered at once.
//!
//! What "evaluates" demands (the rule this test applies):
//! 1. every expression, with Grafana's variables substituted (below), is accepted by
//!    `/api/v1/query`: it parses and its functions and types check;
//! 2. a dashboard expression returns at least one sample;
//! 3. an alert expression may be empty while the system is healthy (`... > 0`), so its
//!    *metric part* must return data instead: the expression is split at its top-level `and`,
//!    `or` and `unless`, and each operand is taken up to its top-level comparison
//!    (`A > 0 and B > 1000` -> `A`, `B`);
//! 4. every metric selector in any expression (`lockstep_x{site=~"..."}`, as written with its
//!    matchers) has series: `count(selector)` returns data. This catches an unknown metric name
//!    or label value even where the expression would still answer (`... or vector(0)`);
//! 5. every metric name used is in the catalog;
//! 6. the rules Prometheus loaded have all been evaluated with health `ok`.
//!
//! Grafana's variables are substituted as Grafana does for "All": a dashboard's query
//! variables (`label_values(selector, label)`) are resolved in order through
//! `/api/v1/series` (each must find values) and become the regex `(v1|v2|..)`;
//! `$__rate_interval` becomes `1m`, `$__interval` `15s`, `$__range` `5m`.
//!
//! The demo and Prometheus bind free loopback ports; both are stopped when the tests end.

mod common;

use common::{free_port, http_get, Proc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------
// The catalog (README) and the names in code
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    kind: String,
    labels: BTreeSet<String>,
    from: String,
    line: usize,
}

/// The README's "## Metrics" table: `| `name` | type | labels | from | meaning |`.
fn catalog() -> Vec<Entry> {
    let text = read(&repo().join("README.md"));
    let mut out = Vec::new();
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("## ") {
            inside = line.trim() == "## Metrics";
            continue;
        }
        if !inside || !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert!(
            cells.len() >= 5,
            "README.md:{}: a catalog row needs 5 cells (name, type, labels, from, meaning): {line}",
            i + 1
        );
        out.push(Entry {
            name: cells[0].trim_matches('`').to_string(),
            kind: cells[1].to_string(),
            labels: cells[2]
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            from: cells[3].to_string(),
            line: i + 1,
        });
    }
    assert!(!out.is_empty(), "README.md has no \"## Metrics\" table");
    out
}

#[test]
fn catalog_agrees_with_code_and_follows_conventions() {
    let cat = catalog();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for e in &cat {
        if !seen.insert(e.name.clone()) {
            problems.push(format!("README.md:{}: {} listed twice", e.line, e.name));
        }
    }
    for (from, names) in [
        ("coordinator", lockstep_coordinator::metrics::NAMES),
        ("worker", lockstep_workers::metrics::NAMES),
    ] {
        let code: BTreeSet<&str> = names.iter().copied().collect();
        let readme: BTreeSet<&str> = cat
            .iter()
            .filter(|e| e.from == from)
            .map(|e| e.name.as_str())
            .collect();
        for n in code.difference(&readme) {
            problems.push(format!(
                "{n}: exported by the {from} (NAMES) but not in the README's catalog as from {from}"
            ));
        }
        for n in readme.difference(&code) {
            problems.push(format!(
                "{n}: in the README's catalog as from {from} but not in the {from}'s NAMES"
            ));
        }
    }
    for e in &cat {
        for p in convention_problems(e) {
            problems.push(format!("README.md:{}: {}: {p}", e.line, e.name));
        }
    }
    assert!(
        problems.is_empty(),
        "catalog problems:\n{}",
        problems.join("\n")
    );
}

/// `lockstep_<subsystem>_<name>_<unit>`, counters `_total`, time in `_seconds`.
fn convention_problems(e: &Entry) -> Vec<String> {
    let mut p = Vec::new();
    let subsystems: &[&str] = match e.from.as_str() {
        "coordinator" => &["coordinator", "drift", "druid"],
        "worker" => &["worker", "mirror", "objects"],
        other => {
            p.push(format!("from must be coordinator or worker, not {other:?}"));
            &[]
        }
    };
    let snake = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !s.starts_with('_')
            && !s.ends_with('_')
            && !s.contains("__")
    };
    if !snake(&e.name) {
        p.push("not lower snake_case".into());
    }
    let parts: Vec<&str> = e.name.split('_').collect();
    if parts.len() < 3 || parts[0] != "lockstep" || !subsystems.contains(&parts[1]) {
        p.push(format!(
            "must be lockstep_<subsystem>_<name> with a subsystem of the {}: {subsystems:?}",
            e.from
        ));
    }
    match e.kind.as_str() {
        "counter" if !e.name.ends_with("_total") => p.push("a counter must end in _total".into()),
        "gauge" | "histogram" if e.name.ends_with("_total") => {
            p.push("only counters end in _total".into())
        }
        "histogram" if !(e.name.ends_with("_seconds") || e.name.ends_with("_bytes")) => {
            p.push("a histogram must name its unit (_seconds, _bytes)".into())
        }
        "counter" | "gauge" | "histogram" => {}
        other => p.push(format!(
            "type must be counter, gauge or histogram, not {other:?}"
        )),
    }
    let timeish = ["duration", "latency", "age", "freshness", "remaining"];
    if parts.iter().any(|w| timeish.contains(w)) && !e.name.ends_with("_seconds") {
        p.push("a time must be in seconds (_seconds)".into());
    }
    for l in &e.labels {
        if !snake(l) {
            p.push(format!("label {l:?} is not lower snake_case"));
        }
        if ["le", "quantile", "job", "instance"].contains(&l.as_str()) {
            p.push(format!("label {l:?} is reserved (Prometheus sets it)"));
        }
    }
    p
}

// ------------------------------------------------------------------------------------------
// Expressions in the dashboards and the rules
// ------------------------------------------------------------------------------------------

/// (name, value) pairs: a dashboard's variables and their queries, or their values.
type Vars = Vec<(String, String)>;

#[derive(Debug, Clone)]
struct Expr {
    /// e.g. `lockstep-kafka.json: panel "Records/s" A`, `alerts.yml: LockstepMirrorGap`
    place: String,
    expr: String,
    /// Alert expressions may be empty when healthy (rule 3 above).
    alert: bool,
    /// The dashboard's variables, in order: (name, query).
    vars: Vars,
}

fn dashboard_files() -> Vec<PathBuf> {
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
}

fn load_json(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The query variables of a dashboard: (name, `label_values(...)` query).
fn variables(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .or(v["definition"].as_str())
                .unwrap_or_default();
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                q.to_string(),
            )
        })
        .collect()
}

fn dashboard_exprs() -> Vec<Expr> {
    let mut out = Vec::new();
    for path in dashboard_files() {
        let d = load_json(&path);
        let vars = variables(&d);
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(Expr {
                        place: format!(
                            "{}: panel {:?} {}",
                            file_name(&path),
                            p["title"].as_str().unwrap_or("?"),
                            t["refId"].as_str().unwrap_or("?")
                        ),
                        expr: e.to_string(),
                        alert: false,
                        vars: vars.clone(),
                    });
                }
            }
        }
    }
    out
}

/// One alerting or recording rule of `alerts.yml`, read line by line (the file keeps to
/// plain YAML: `expr:` on one line or as a `|`/`>` block). `promtool check rules` checks the
/// file is valid, and the test compares its rule count with this reader's, so a form this
/// reader does not know fails loudly.
#[derive(Debug, Default)]
struct Rule {
    name: String,
    expr: String,
    keys: BTreeSet<String>,
    severity: String,
}

fn rules_file() -> PathBuf {
    repo().join("dashboards/alerts.yml")
}

fn rules() -> Vec<Rule> {
    let text = read(&rules_file());
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Rule> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if let Some(name) = t
            .strip_prefix("- alert:")
            .or_else(|| t.strip_prefix("- record:"))
        {
            out.push(Rule {
                name: name.trim().trim_matches('"').to_string(),
                ..Rule::default()
            });
        } else if let Some(rule) = out.last_mut() {
            if let Some((key, value)) = t.split_once(':') {
                let key = key.trim().to_string();
                let value = value.trim();
                if key == "expr" {
                    if ["|", "|-", ">", ">-"].contains(&value) {
                        let mut block = Vec::new();
                        while i + 1 < lines.len() {
                            let next = lines[i + 1];
                            let nt = next.trim_start();
                            if !nt.is_empty() && next.len() - nt.len() <= indent {
                                break;
                            }
                            block.push(nt);
                            i += 1;
                        }
                        rule.expr = block.join(if value.starts_with('|') { "\n" } else { " " });
                    } else if let Some(q) = value.strip_prefix('\'') {
                        rule.expr = q.trim_end_matches('\'').replace("''", "'");
                    } else if let Some(q) = value.strip_prefix('"') {
                        rule.expr = q.trim_end_matches('"').replace("\\\"", "\"");
                    } else {
                        rule.expr = value.to_string();
                    }
                }
                if key == "severity" {
                    rule.severity = value.trim_matches('"').to_string();
                }
                rule.keys.insert(key);
            }
        }
        i += 1;
    }
    out
}

fn rule_exprs() -> Vec<Expr> {
    rules()
        .into_iter()
        .map(|r| Expr {
            place: format!("alerts.yml: {}", r.name),
            expr: r.expr,
            alert: true,
            vars: Vec::new(),
        })
        .collect()
}

/// Metric names used by an expression (anything `lockstep_...` outside strings), with the
/// selector as written (`name{matchers}`).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == b'"' || c == b'\'' || c == b'`' {
            quote = Some(c);
            i += 1;
            continue;
        }
        if expr[i..].starts_with("lockstep_") && (i == 0 || !ident(b[i - 1])) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let name = expr[start..i].to_string();
            let mut sel = name.clone();
            if i < b.len() && b[i] == b'{' {
                let open = i;
                let mut q: Option<u8> = None;
                while i < b.len() {
                    let c = b[i];
                    match q {
                        Some(_) if c == b'\\' => i += 1,
                        Some(qq) if c == qq => q = None,
                        Some(_) => {}
                        None if c == b'"' || c == b'\'' || c == b'`' => q = Some(c),
                        None if c == b'}' => break,
                        None => {}
                    }
                    i += 1;
                }
                sel = format!("{name}{}", &expr[open..=i.min(b.len() - 1)]);
            }
            out.push((name, sel));
            continue;
        }
        i += 1;
    }
    out
}

/// The catalog name a series name belongs to (histograms: `_bucket`, `_sum`, `_count`).
fn family<'a>(name: &'a str, catalog: &BTreeSet<String>) -> Option<&'a str> {
    if catalog.contains(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if catalog.contains(base) {
                return Some(base);
            }
        }
    }
    None
}

/// Splits at top-level `and`/`or`/`unless` and cuts each operand at its top-level
/// comparison: what must return data although the alert itself may be quiet.
fn metric_parts(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut start = 0;
    let mut cut: Option<usize> = None;
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    let push = |from: usize, to: usize, cut: Option<usize>, parts: &mut Vec<String>| {
        let end = cut.unwrap_or(to);
        parts.push(expr[from..end].trim().to_string());
    };
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => quote = Some(c),
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            _ if depth == 0 => {
                let before_ok = i == 0 || !word(b[i - 1]);
                let setop = ["and", "or", "unless"].into_iter().find(|w| {
                    expr[i..].starts_with(w)
                        && before_ok
                        && b.get(i + w.len()).is_none_or(|&n| !word(n))
                });
                if let Some(w) = setop {
                    push(start, i, cut, &mut parts);
                    i += w.len();
                    // Skip a set operator's matching modifier: `and on (x)`.
                    start = i;
                    cut = None;
                    continue;
                }
                let cmp = ["==", "!=", ">=", "<=", ">", "<"]
                    .into_iter()
                    .find(|op| expr[i..].starts_with(op));
                if let Some(op) = cmp {
                    if cut.is_none() {
                        cut = Some(i);
                    }
                    i += op.len();
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    push(start, b.len(), cut, &mut parts);
    parts
        .into_iter()
        .map(|p| {
            // `on (a, b) expr` after a set operator: drop the modifier.
            let t = p.trim_start();
            for m in ["on", "ignoring"] {
                if let Some(rest) = t.strip_prefix(m) {
                    if rest.trim_start().starts_with('(') {
                        if let Some(close) = rest.find(')') {
                            return rest[close + 1..].trim().to_string();
                        }
                    }
                }
            }
            p
        })
        .filter(|p| !p.is_empty())
        .collect()
}

#[test]
fn expression_helpers() {
    assert_eq!(
        metric_parts("sum by (a) (deriv(x[10m])) > 0 and sum by (a) (x) > 1000"),
        vec!["sum by (a) (deriv(x[10m]))", "sum by (a) (x)"]
    );
    assert_eq!(
        metric_parts("max by (d) (v{verdict=\"a>b\"}) == 1"),
        vec!["max by (d) (v{verdict=\"a>b\"})"]
    );
    assert_eq!(
        metric_parts("count(up == 0) or vector(0)"),
        vec!["count(up == 0)", "vector(0)"]
    );
    assert_eq!(
        selectors("rate(lockstep_a_total{x=~\"$s\"}[1m]) / lockstep_b_seconds_count"),
        vec![
            (
                "lockstep_a_total".to_string(),
                "lockstep_a_total{x=~\"$s\"}".to_string()
            ),
            (
                "lockstep_b_seconds_count".to_string(),
                "lockstep_b_seconds_count".to_string()
            )
        ]
    );
}

/// `${name}`, `$name` and `[[name]]` -> value, longest names first.
fn substitute(expr: &str, values: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = values.iter().collect();
    sorted.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let mut s = expr.to_string();
    for (name, value) in sorted {
        s = s
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("[[{name}]]"), value)
            .replace(&format!("${name}"), value);
    }
    s
}

const BUILTINS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__range", "5m"),
];

#[test]
fn dashboards_are_well_formed_and_cover_the_catalog() {
    let cat = catalog();
    let names: BTreeSet<String> = cat.iter().map(|e| e.name.clone()).collect();
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    let ds = "${DS_PROMETHEUS}";
    for path in dashboard_files() {
        let f = file_name(&path);
        let d = load_json(&path);
        let inputs = d["__inputs"].as_array().cloned().unwrap_or_default();
        if !inputs.iter().any(|i| {
            i["name"] == "DS_PROMETHEUS"
                && i["type"] == "datasource"
                && i["pluginId"] == "prometheus"
        }) {
            problems.push(format!(
                "{f}: no __inputs entry DS_PROMETHEUS (datasource, prometheus)"
            ));
        }
        let templating = d["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !templating.iter().any(|v| {
            v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource" && v["query"] == "prometheus"
        }) {
            problems.push(format!(
                "{f}: no datasource variable DS_PROMETHEUS (for file provisioning)"
            ));
        }
        match d["uid"].as_str() {
            Some(u) if !u.is_empty() && u.len() <= 40 => {
                if !uids.insert(u.to_string()) {
                    problems.push(format!("{f}: uid {u} used twice"));
                }
            }
            _ => problems.push(format!("{f}: needs a uid of 1 to 40 characters")),
        }
        if d["title"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{f}: no title"));
        }
        let defined: BTreeSet<String> = templating
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .chain(BUILTINS.iter().map(|(n, _)| n.to_string()))
            .collect();
        for v in &templating {
            if v["type"] == "query" {
                if v["datasource"]["uid"] != ds {
                    problems.push(format!(
                        "{f}: variable {} must use datasource {ds}",
                        v["name"]
                    ));
                }
                let q = v["query"]["query"].as_str().unwrap_or_default();
                if !q.starts_with("label_values(") {
                    problems.push(format!(
                        "{f}: variable {}: query must be label_values(selector, label), not {q:?}",
                        v["name"]
                    ));
                }
            }
        }
        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("?");
            if let Some(id) = p["id"].as_i64() {
                if !ids.insert(id) {
                    problems.push(format!("{f}: panel id {id} used twice"));
                }
            } else {
                problems.push(format!("{f}: panel {title:?} has no id"));
            }
            let g = &p["gridPos"];
            if g["w"].as_i64().is_none_or(|w| !(1..=24).contains(&w)) || g["h"].as_i64().is_none() {
                problems.push(format!("{f}: panel {title:?} needs gridPos w 1..=24 and h"));
            }
            if p["type"] == "row" {
                continue;
            }
            if p["datasource"]["uid"] != ds {
                problems.push(format!("{f}: panel {title:?} must use datasource {ds}"));
            }
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{f}: panel {title:?} has no query"));
            }
            let mut refs = BTreeSet::new();
            for t in &targets {
                let r = t["refId"].as_str().unwrap_or_default();
                if r.is_empty() || !refs.insert(r.to_string()) {
                    problems.push(format!(
                        "{f}: panel {title:?}: refId {r:?} missing or repeated"
                    ));
                }
                if t["datasource"]["uid"] != ds {
                    problems.push(format!(
                        "{f}: panel {title:?} {r}: must use datasource {ds}"
                    ));
                }
                let e = t["expr"].as_str().unwrap_or_default();
                if e.trim().is_empty() {
                    problems.push(format!("{f}: panel {title:?} {r}: empty expr"));
                }
                for var in grafana_vars(e) {
                    if !defined.contains(&var) {
                        problems.push(format!(
                            "{f}: panel {title:?} {r}: ${var} is not a variable of the dashboard"
                        ));
                    }
                }
            }
        }
    }
    // Every metric on some dashboard; only catalogued metrics anywhere.
    let mut used = BTreeSet::new();
    for e in dashboard_exprs().iter().chain(rule_exprs().iter()) {
        for (n, _) in selectors(&e.expr) {
            match family(&n, &names) {
                Some(base) => {
                    if !e.alert {
                        used.insert(base.to_string());
                    }
                }
                None => problems.push(format!("{}: {n} is not in the README's catalog", e.place)),
            }
        }
    }
    for n in names.difference(&used) {
        problems.push(format!("{n}: on no dashboard"));
    }
    assert!(
        problems.is_empty(),
        "dashboard problems:\n{}",
        problems.join("\n")
    );
}

/// Names of `$var`, `${var}`, `[[var]]` in an expression.
fn grafana_vars(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let name = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, &c) in b.iter().enumerate() {
        if c == b'$' {
            let rest = &expr[i + 1..];
            let n = name(rest.strip_prefix('{').unwrap_or(rest));
            if !n.is_empty() {
                out.insert(n);
            }
        } else if c == b'[' && expr[i..].starts_with("[[") {
            let n = name(&expr[i + 2..]);
            if !n.is_empty() && expr[i + 2 + n.len()..].starts_with("]]") {
                out.insert(n);
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// promtool
// ------------------------------------------------------------------------------------------

fn promtool(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool: {e} (tests/run.sh installs Debian's prometheus package)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_checks_the_rules_and_proves_each_alert_fires() {
    let dir = repo().join("dashboards");
    let (ok, text) = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(ok, "promtool check rules alerts.yml failed:\n{text}");
    let found: usize = text
        .split("SUCCESS: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule count in promtool's answer:\n{text}"));
    let rules = rules();
    assert_eq!(
        found,
        rules.len(),
        "promtool counts {found} rules, this test reads {} from alerts.yml: keep `expr:` on one line or in a | block",
        rules.len()
    );

    let mut problems = Vec::new();
    let tests = read(&dir.join("alerts.test.yml"));
    for r in &rules {
        if r.expr.trim().is_empty() {
            problems.push(format!("{}: no expr read", r.name));
        }
        for key in ["for", "severity", "summary", "description", "runbook"] {
            if !r.keys.contains(key) {
                problems.push(format!("{}: needs `{key}:`", r.name));
            }
        }
        if !["critical", "warning"].contains(&r.severity.as_str()) {
            problems.push(format!(
                "{}: severity must be critical or warning, not {:?}",
                r.name, r.severity
            ));
        }
        // Each alert has a case that fires it and a healthy case (exp_alerts: []).
        let cases = tests.matches(&format!("alertname: {}\n", r.name)).count();
        if cases < 2 {
            problems.push(format!(
                "{}: alerts.test.yml needs a case that fires it and a healthy one ({cases} found)",
                r.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "rule problems:\n{}",
        problems.join("\n")
    );

    let (ok, text) = promtool(&["test", "rules", "alerts.test.yml"], &dir);
    assert!(ok, "promtool test rules alerts.test.yml failed:\n{text}");
}

// ------------------------------------------------------------------------------------------
// The running demo, shared by the two tests that need it
// ------------------------------------------------------------------------------------------

struct Demo {
    demo: common::demo::Demo,
    coordinator: String,
    workers: Vec<String>,
}

/// The demo, started by whichever test comes first and stopped when the last one using it
/// ends (tests run in parallel threads; run alone, each starts its own).
fn demo() -> Arc<Demo> {
    static SHARED: Mutex<Weak<Demo>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = shared.upgrade() {
        return d;
    }
    let d = Arc::new(start_demo());
    *shared = Arc::downgrade(&d);
    d
}

fn start_demo() -> Demo {
    // Long enough for both tests; stopped as soon as they are done.
    let demo = common::demo::Demo::start(&[], &["--duration", "600s"], "info");
    let value = demo.endpoints(Duration::from_secs(120));
    let coordinator = value["coordinator_http"]
        .as_str()
        .unwrap_or_else(|| panic!("endpoints file without coordinator_http: {value}"))
        .to_string();
    let workers: Vec<String> = value["worker_metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect();
    assert!(
        !workers.is_empty(),
        "endpoints file without worker_metrics: {value}"
    );
    Demo {
        demo,
        coordinator,
        workers,
    }
}

impl Demo {
    fn log(&self) -> String {
        self.demo.output()
    }
}

/// Samples of one family: (series name, labels).
type Samples = Vec<(String, BTreeMap<String, String>)>;
/// One scrape: family name -> (type, samples).
type Scrape = BTreeMap<String, (String, Samples)>;

fn parse_exposition(text: &str) -> Scrape {
    let mut out: Scrape = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some(t)) = (it.next(), it.next()) {
                types.insert(n.to_string(), t.to_string());
                out.entry(n.to_string())
                    .or_insert_with(|| (t.to_string(), Vec::new()));
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let series = &line[..name_end];
        let mut labels = BTreeMap::new();
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..];
            let mut chars = body.chars().peekable();
            loop {
                let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                let key = key.trim_start_matches(',').trim().to_string();
                if key.is_empty() || key.starts_with('}') {
                    break;
                }
                if chars.next() != Some('"') {
                    break;
                }
                let mut value = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                if chars.peek() == Some(&'}') {
                    break;
                }
            }
        }
        let fam = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                series
                    .strip_suffix(s)
                    .filter(|b| types.get(*b).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(series)
            .to_string();
        out.entry(fam)
            .or_insert_with(|| ("untyped".into(), Vec::new()))
            .1
            .push((series.to_string(), labels));
    }
    out
}

fn scrape(addr: &str) -> Scrape {
    match http_get(addr, "/metrics") {
        Ok((200, body)) => parse_exposition(&body),
        _ => Scrape::new(),
    }
}

/// What a scrape of each process lacks against the catalog: missing names, wrong types,
/// wrong labels, uncatalogued `lockstep_` names.
fn catalog_gaps(cat: &[Entry], coordinator: &Scrape, workers: &[Scrape]) -> Vec<String> {
    let mut gaps = Vec::new();
    for e in cat {
        let scrapes: Vec<&Scrape> = if e.from == "coordinator" {
            vec![coordinator]
        } else {
            workers.iter().collect()
        };
        let fams: Vec<&(String, Samples)> = scrapes.iter().filter_map(|s| s.get(&e.name)).collect();
        let samples: Vec<&(String, BTreeMap<String, String>)> =
            fams.iter().flat_map(|f| f.1.iter()).collect();
        if samples.is_empty() {
            gaps.push(format!("{} ({}): no series exported", e.name, e.from));
            continue;
        }
        for f in &fams {
            if f.0 != e.kind {
                gaps.push(format!(
                    "{}: exported as {}, catalogued as {}",
                    e.name, f.0, e.kind
                ));
            }
        }
        for (series, labels) in samples {
            // `region` is every series' constant label (README, Metrics), not a catalog
            // column: required on each series here, the rest compared with the catalog.
            if !labels.contains_key("region") {
                gaps.push(format!("{series}: no region label"));
                break;
            }
            let got: BTreeSet<String> = labels
                .keys()
                .filter(|k| *k != "le" && *k != "region")
                .cloned()
                .collect();
            if got != e.labels {
                gaps.push(format!(
                    "{series}: labels {got:?}, catalogued {:?}",
                    e.labels
                ));
                break;
            }
        }
    }
    let names: BTreeSet<&str> = cat.iter().map(|e| e.name.as_str()).collect();
    for s in std::iter::once(coordinator).chain(workers.iter()) {
        for n in s.keys() {
            if n.starts_with("lockstep_") && !names.contains(n.as_str()) {
                gaps.push(format!("{n}: exported but not in the README's catalog"));
            }
        }
    }
    gaps.sort();
    gaps.dedup();
    gaps
}

#[test]
fn demo_exports_every_catalogued_metric() {
    let cat = catalog();
    let demo = demo();
    // Series appear as the demo gets going (drift after its first check, backlog after the
    // first sync cycle): poll until nothing is missing, bounded.
    let deadline = Instant::now() + Duration::from_secs(150);
    let gaps = loop {
        let c = scrape(&demo.coordinator);
        let w: Vec<Scrape> = demo.workers.iter().map(|a| scrape(a)).collect();
        let gaps = catalog_gaps(&cat, &c, &w);
        if gaps.is_empty() || Instant::now() > deadline {
            break gaps;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        gaps.is_empty(),
        "the demo's /metrics (coordinator {}, workers {:?}) disagree with the catalog:\n{}\n\ndemo log (tail):\n{}",
        demo.coordinator,
        demo.workers,
        gaps.join("\n"),
        tail(&demo.log(), 40)
    );
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ------------------------------------------------------------------------------------------
// A real Prometheus
// ------------------------------------------------------------------------------------------

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Prometheus {
    proc: Proc,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(coordinator: &str, workers: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        let quoted = |v: &[String]| {
            v.iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - '{rules}'\n\
                 scrape_configs:\n\
                 \x20 - job_name: lockstep-coordinator\n    static_configs:\n      - targets: [{c}]\n\
                 \x20 - job_name: lockstep-worker\n    static_configs:\n      - targets: [{w}]\n",
                rules = rules_file().display(),
                c = quoted(&[coordinator.to_string()]),
                w = quoted(workers),
            ),
        )
        .expect("write prometheus.yml");
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn_cmd("prometheus", "prometheus", &args, &[], dir.path());
        let base = format!("127.0.0.1:{port}");
        let p = Prometheus {
            proc,
            base,
            _dir: dir,
        };
        p.wait("ready", 60, || {
            matches!(http_get(&p.base, "/-/ready"), Ok((200, _))).then_some(())
        });
        p
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        let (code, body) = http_get(&self.base, path).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {code}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!(
                "HTTP {code}: {} {}",
                v["errorType"].as_str().unwrap_or(""),
                v["error"].as_str().unwrap_or(&body)
            ));
        }
        Ok(v["data"].clone())
    }

    /// An instant query: the result, or Prometheus' error.
    fn query(&self, q: &str) -> Result<Value, String> {
        self.get(&format!("/api/v1/query?query={}", urlencode(q)))
    }

    /// Values of `label` on the series `selector` matches.
    fn label_values(&self, selector: &str, label: &str) -> Result<BTreeSet<String>, String> {
        let data = self.get(&format!("/api/v1/series?match[]={}", urlencode(selector)))?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s[label].as_str().map(str::to_string))
            .collect())
    }

    fn wait<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus: {what} not reached within {secs} s; its log:\n{}",
                tail(&self.proc.log_text(), 30)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Has data: a non-empty vector or matrix, or a scalar/string.
fn has_data(data: &Value) -> bool {
    match data["resultType"].as_str() {
        Some("vector") | Some("matrix") => data["result"].as_array().is_some_and(|r| !r.is_empty()),
        Some("scalar") | Some("string") => true,
        _ => false,
    }
}

/// Regex-escapes a label value as Grafana does before joining values with `|`.
fn regex_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[test]
fn prometheus_evaluates_every_dashboard_and_rule_expression() {
    let started = Instant::now();
    let cat = catalog();
    let names: BTreeSet<String> = cat.iter().map(|e| e.name.clone()).collect();
    let demo = demo();
    let prom = Prometheus::start(&demo.coordinator, &demo.workers);

    // Every target scraped, then every catalogued metric stored (series appear as the demo
    // gets going), then a few more scrapes so that rate() windows hold several samples.
    prom.wait("every target up", 60, || {
        let t = prom.get("/api/v1/targets").ok()?;
        let active = t["activeTargets"].as_array()?;
        (active.len() == 1 + demo.workers.len() && active.iter().all(|a| a["health"] == "up"))
            .then_some(())
    });
    let deadline = Instant::now() + Duration::from_secs(150);
    let missing = loop {
        let stored: BTreeSet<String> = prom
            .query("count by (__name__) ({__name__=~\"lockstep_.+\"})")
            .ok()
            .and_then(|d| d["result"].as_array().cloned())
            .into_iter()
            .flatten()
            .filter_map(|r| r["metric"]["__name__"].as_str().map(str::to_string))
            .filter_map(|n| family(&n, &names).map(str::to_string))
            .collect();
        let missing: BTreeSet<String> = names.difference(&stored).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        missing.is_empty(),
        "Prometheus stored no series for {missing:?} within 150 s of scraping the demo\n\ndemo log (tail):\n{}",
        tail(&demo.log(), 40)
    );
    std::thread::sleep(Duration::from_secs(5));
    let ready = started.elapsed();

    let mut problems = Vec::new();
    let mut counts = BTreeMap::<&str, usize>::new();
    let builtins: Vec<(String, String)> = BUILTINS
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();

    // Variables, per dashboard, in order (a later one may use an earlier one).
    let mut resolved: BTreeMap<&Vars, Vars> = BTreeMap::new();
    let exprs: Vec<Expr> = dashboard_exprs().into_iter().chain(rule_exprs()).collect();
    for e in &exprs {
        if resolved.contains_key(&e.vars) {
            continue;
        }
        let mut values = builtins.clone();
        for (name, query) in &e.vars {
            *counts.entry("variable queries").or_default() += 1;
            let q = substitute(query, &values);
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.rsplit_once(','));
            let Some((selector, label)) = inner else {
                problems.push(format!(
                    "{}: variable {name}: cannot read {query:?}",
                    e.place
                ));
                values.push((name.clone(), ".*".into()));
                continue;
            };
            match prom.label_values(selector.trim(), label.trim()) {
                Ok(v) if !v.is_empty() => {
                    let joined: Vec<String> = v.iter().map(|x| regex_escape(x)).collect();
                    values.push((name.clone(), format!("({})", joined.join("|"))));
                }
                Ok(_) => {
                    problems.push(format!("{}: variable {name} ({q}) has no values", e.place));
                    values.push((name.clone(), ".*".into()));
                }
                Err(err) => {
                    problems.push(format!("{}: variable {name} ({q}): {err}", e.place));
                    values.push((name.clone(), ".*".into()));
                }
            }
        }
        resolved.insert(&e.vars, values);
    }

    let mut selectors_checked = BTreeSet::new();
    for e in &exprs {
        let values = &resolved[&e.vars];
        let q = substitute(&e.expr, values);
        let left = grafana_vars(&q);
        if !left.is_empty() {
            problems.push(format!(
                "{}: variables left after substitution: {left:?}",
                e.place
            ));
            continue;
        }
        *counts
            .entry(if e.alert {
                "rule expressions"
            } else {
                "dashboard expressions"
            })
            .or_default() += 1;
        match prom.query(&q) {
            Err(err) => problems.push(format!("{}: {q}\n    rejected: {err}", e.place)),
            Ok(d) if !e.alert && !has_data(&d) => {
                problems.push(format!("{}: {q}\n    returned no data", e.place))
            }
            Ok(_) => {}
        }
        if e.alert {
            for part in metric_parts(&q) {
                *counts.entry("rule metric parts").or_default() += 1;
                match prom.query(&part) {
                    Ok(d) if has_data(&d) => {}
                    Ok(_) => problems.push(format!(
                        "{}: metric part {part}\n    returned no data",
                        e.place
                    )),
                    Err(err) => problems.push(format!(
                        "{}: metric part {part}\n    rejected: {err}",
                        e.place
                    )),
                }
            }
        }
        for (name, sel) in selectors(&q) {
            if family(&name, &names).is_none() {
                problems.push(format!("{}: {name} is not in the catalog", e.place));
            }
            if !selectors_checked.insert(sel.clone()) {
                continue;
            }
            match prom.query(&format!("count({sel})")) {
                Ok(d) if has_data(&d) => {}
                Ok(_) => problems.push(format!("{}: selector {sel} matches no series", e.place)),
                Err(err) => problems.push(format!("{}: selector {sel}: {err}", e.place)),
            }
        }
    }
    counts.insert("distinct selectors", selectors_checked.len());

    // The rules as Prometheus loaded them: each evaluated, health ok.
    let rules = rules();
    let loaded = prom.wait("every rule evaluated", 30, || {
        let d = prom.get("/api/v1/rules").ok()?;
        let all: Vec<Value> = d["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = all.len() == rules.len()
            && all.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
        evaluated.then_some(all)
    });
    for r in &loaded {
        if r["health"] != "ok" {
            problems.push(format!(
                "Prometheus rule {}: health {} {}",
                r["name"], r["health"], r["lastError"]
            ));
        }
    }

    let elapsed = started.elapsed();
    println!(
        "observability: {} evaluated through /api/v1/query ({}); {} rules loaded, health ok; \
         data ready after {:.1} s, wall time {:.1} s",
        counts
            .iter()
            .filter(|(k, _)| **k != "distinct selectors")
            .map(|(_, v)| v)
            .sum::<usize>()
            + selectors_checked.len(),
        counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        loaded.len(),
        ready.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problems evaluating the dashboards and rules against the demo:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
