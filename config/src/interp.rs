//! `${...}` interpolation of secrets and environment-specific values.
//!
//! Forms, inside any TOML string value:
//! - `${NAME}` or `${env:NAME}`: the environment variable NAME (an error when unset);
//! - `${NAME:-default}`: the same, with a default for when it is unset;
//! - `${file:PATH}`: the content of a regular file, trailing newline removed; a relative PATH
//!   is taken from the config file's folder (Kubernetes secret mounts, Docker secrets);
//! - `$${`: a literal `${`.
//!
//! Interpolation runs on the parsed TOML tree, never on the text, so a value can never change
//! the structure of the file, and errors name the field path of the string.
//!
//! It also records what it produced ([`Produced`]): which fields got (part of) their value from
//! a reference, of which kind, and the values themselves, so that later errors about those
//! fields can be shown without the value (see `redact`).
//!
//! This module never puts a resolved value or the text of a reference into an error: a stray
//! `${` inside a password makes whatever follows it look like a reference, so the "reference"
//! may be part of the secret. Errors name the kind of reference, its position in the value and
//! what is wrong.

use crate::FieldError;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// The kind of a `${...}` reference. Shown in errors instead of the reference's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RefKind {
    /// `${NAME}`, `${env:NAME}`, `${NAME:-default}`.
    Env,
    /// `${file:PATH}`.
    File,
}

impl fmt::Display for RefKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefKind::Env => "`${NAME}`",
            RefKind::File => "`${file:PATH}`",
        })
    }
}

/// Why one reference could not be resolved. `n` is the reference's position in its value
/// (1-based), so that a value with several references says which one failed.
///
/// No variant carries text from the reference. In particular an unset variable's name is not
/// shown, even in fields that are not secrets: which fields hold secrets is a guess by name
/// (`is_secret_path`), and a URL or a server list can carry credentials too; the operator finds
/// the name at the field path the error gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RefError {
    #[error(
        "a `${{` is not closed by `}}` (write `$${{` for a literal `${{`; the text is not shown)"
    )]
    Unclosed,
    #[error("reference #{n} is malformed (use ${{NAME}}, ${{NAME:-default}}, ${{env:NAME}} or ${{file:PATH}}; the text is not shown)")]
    Malformed { n: usize },
    #[error("{} reference #{n}: the environment variable is not set (its name is not shown: see this field in the file)", RefKind::Env)]
    Unset { n: usize },
    #[error("{} reference #{n}: the path is empty", RefKind::File)]
    EmptyPath { n: usize },
    #[error("{} reference #{n}: {source}", RefKind::File)]
    File {
        n: usize,
        #[source]
        source: crate::secret_file::FileRefError,
    },
}

/// What interpolation produced: per field path, the kinds of references that gave it (part
/// of) its value, and every value a reference yielded.
#[derive(Debug, Default)]
pub(crate) struct Produced {
    /// Keyed by normalized path (see [`normalize_path`]).
    fields: BTreeMap<String, BTreeSet<RefKind>>,
    values: Vec<String>,
}

impl Produced {
    /// The kinds of references that produced the value at `path`, if any did.
    pub(crate) fn kinds(&self, path: &str) -> Option<&BTreeSet<RefKind>> {
        self.fields.get(&normalize_path(path))
    }

    /// Every value a reference produced (env values, defaults used, file contents).
    pub(crate) fn values(&self) -> &[String] {
        &self.values
    }

    fn record(&mut self, path: &str, expanded: Expanded) {
        if expanded.kinds.is_empty() {
            return;
        }
        self.fields
            .entry(normalize_path(path))
            .or_default()
            .extend(expanded.kinds);
        self.values.extend(expanded.values);
    }
}

/// Paths are written `a.b[0]."c.d"` here and in validation, but `a.b[0].c.d` by
/// `serde_path_to_error`: compared without the quotes.
pub(crate) fn normalize_path(path: &str) -> String {
    path.replace('"', "")
}

/// `path.key`, with the key quoted when it is not a bare TOML key (`properties."sasl.password"`).
pub(crate) fn child_path(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), bare) {
        (true, true) => key.to_string(),
        (true, false) => format!("\"{key}\""),
        (false, true) => format!("{path}.{key}"),
        (false, false) => format!("{path}.\"{key}\""),
    }
}

/// Replaces every `${...}` in the string values of `table`, in place, and returns what it
/// produced. Errors are collected, not returned at the first one, so `config check` can show
/// them all.
pub(crate) fn interpolate_table(
    table: &mut toml::Table,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<FieldError>,
) -> Produced {
    let mut produced = Produced::default();
    let mut walk = Walk {
        base_dir,
        env,
        errors,
        produced: &mut produced,
    };
    for (key, value) in table.iter_mut() {
        walk.value(value, &child_path("", key));
    }
    produced
}

struct Walk<'a> {
    base_dir: Option<&'a Path>,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: &'a mut Vec<FieldError>,
    produced: &'a mut Produced,
}

impl Walk<'_> {
    fn value(&mut self, value: &mut toml::Value, path: &str) {
        match value {
            toml::Value::String(s) if s.contains('$') => match expand(s, self.base_dir, self.env) {
                Ok(expanded) => {
                    *s = expanded.text.clone();
                    self.produced.record(path, expanded);
                }
                Err(e) => self.errors.push(FieldError::new(path, e.to_string())),
            },
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.value(item, &format!("{path}[{i}]"));
                }
            }
            toml::Value::Table(t) => {
                for (key, v) in t.iter_mut() {
                    self.value(v, &child_path(path, key));
                }
            }
            _ => {}
        }
    }
}

/// One string after interpolation.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub(crate) text: String,
    /// The kinds of the references it contained (empty: none, the text is as written).
    pub(crate) kinds: BTreeSet<RefKind>,
    /// What each reference yielded.
    pub(crate) values: Vec<String>,
}

/// Expands one string. An error never contains a resolved value or a reference's text.
pub(crate) fn expand(
    input: &str,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, RefError> {
    let mut out = Expanded {
        text: String::with_capacity(input.len()),
        ..Expanded::default()
    };
    let mut rest = input;
    let mut n = 0;
    while let Some(pos) = rest.find('$') {
        out.text.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.text.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.text.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err(RefError::Unclosed);
        };
        n += 1;
        let (kind, value) = resolve(&body_start[..end], n, base_dir, env)?;
        out.text.push_str(&value);
        out.kinds.insert(kind);
        out.values.push(value);
        rest = &body_start[end + 1..];
    }
    out.text.push_str(rest);
    Ok(out)
}

fn resolve(
    reference: &str,
    n: usize,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(RefKind, String), RefError> {
    if let Some(path) = reference.strip_prefix("file:") {
        if path.is_empty() {
            return Err(RefError::EmptyPath { n });
        }
        let p = Path::new(path);
        let full = match (p.is_relative(), base_dir) {
            (true, Some(base)) => base.join(p),
            _ => p.to_path_buf(),
        };
        let text =
            crate::secret_file::read(&full).map_err(|source| RefError::File { n, source })?;
        return Ok((
            RefKind::File,
            text.trim_end_matches(['\n', '\r']).to_string(),
        ));
    }
    let reference_body = reference.strip_prefix("env:").unwrap_or(reference);
    let (name, default) = match reference_body.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (reference_body, None),
    };
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err(RefError::Malformed { n });
    }
    match (env(name), default) {
        (Some(v), _) => Ok((RefKind::Env, v)),
        (None, Some(d)) => Ok((RefKind::Env, d.to_string())),
        (None, None) => Err(RefError::Unset { n }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PW" => Some("s3cret".into()),
            "HOST" => Some("kafka-1".into()),
            _ => None,
        }
    }

    fn text(input: &str) -> String {
        match expand(input, None, &env) {
            Ok(e) => e.text,
            Err(e) => panic!("{input}: {e}"),
        }
    }

    fn error(input: &str) -> String {
        match expand(input, None, &env) {
            Ok(e) => panic!("{input}: expected an error, got {:?}", e.text),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn expands_env_and_literals() {
        assert_eq!(text("${PW}"), "s3cret");
        assert_eq!(text("${env:HOST}:9092"), "kafka-1:9092");
        assert_eq!(text("a$b"), "a$b");
        assert_eq!(text("$${PW}"), "${PW}");
        assert_eq!(text("${NOPE:-dflt}"), "dflt");
        assert_eq!(text("${PW:-dflt}"), "s3cret");
    }

    #[test]
    fn records_kinds_and_values_but_not_literals() {
        let e = expand("u:${PW}@${HOST}", None, &env).unwrap();
        assert_eq!(e.kinds, BTreeSet::from([RefKind::Env]));
        assert_eq!(e.values, vec!["s3cret".to_string(), "kafka-1".to_string()]);
        let literal = expand("$${PW} and $5", None, &env).unwrap();
        assert!(literal.kinds.is_empty() && literal.values.is_empty());
    }

    #[test]
    fn missing_and_malformed_references_never_quote_their_text() {
        let unset = error("${NOPE_hunter2}");
        assert!(unset.contains("not set"), "{unset}");
        assert!(!unset.contains("NOPE"), "the name is not shown: {unset}");
        let unclosed = error("hunter2${PW");
        assert!(unclosed.contains("not closed"), "{unclosed}");
        assert!(
            !unclosed.contains("hunter2") && !unclosed.contains("PW"),
            "{unclosed}"
        );
        let malformed = error("${PW}x${hunter-2}");
        assert!(
            malformed.contains("reference #2 is malformed"),
            "{malformed}"
        );
        assert!(!malformed.contains("hunter"), "{malformed}");
        let empty = error("${file:}");
        assert!(
            empty.contains("`${file:PATH}` reference #1: the path is empty"),
            "{empty}"
        );
    }

    #[test]
    fn reads_files_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw.txt"), "filepw\n").unwrap();
        let e = expand("${file:pw.txt}", Some(dir.path()), &env).unwrap();
        assert_eq!(e.text, "filepw");
        assert_eq!(e.kinds, BTreeSet::from([RefKind::File]));
        let err = expand("${file:missing-hunter2.txt}", Some(dir.path()), &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read the file: entity not found"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the path is not shown: {err}");
    }

    #[test]
    fn paths_quote_keys_that_are_not_bare() {
        assert_eq!(child_path("", "sites"), "sites");
        assert_eq!(
            child_path("a.properties", "sasl.password"),
            "a.properties.\"sasl.password\""
        );
        assert_eq!(
            normalize_path("a.properties.\"sasl.password\""),
            "a.properties.sasl.password"
        );
    }
}
