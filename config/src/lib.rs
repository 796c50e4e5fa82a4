//! lockstep's configuration: one TOML file, parsed into typed structs, with `${ENV}` and
//! `${file:PATH}` interpolation for secrets, and validated once, at load.
//!
//! Errors are precise: a syntax or type error names the file, line and column (and the field
//! path); a semantic error (an unknown site in a flow, a duplicate name, a regex that does not
//! compile, a missing secret) names the field path. Validation collects every error before it
//! returns, so `lockstep config check` shows them all at once.
//!
//! This crate never logs and never prints a secret: every secret field is a [`Secret`]. An
//! error never shows a value a `${...}` reference produced, nor the text of a reference: it
//! names the field and the kind of reference (see `interp` and `redact`).

mod bounds;
pub mod headers;
mod interp;
mod model;
pub mod names;
mod redact;
mod secret;
mod secret_file;
mod security;
mod task;
mod validate;

pub use bounds::{MAX_NAME_BYTES, MAX_VALUE_BYTES};
pub use model::*;
pub use secret::Secret;
pub use security::{
    AuthConfig, Limits, PeerTlsConfig, TlsConfig, DEFAULT_MAX_MESSAGE_BYTES, MIN_TOKEN_CHARS,
};
pub use task::{TaskConfig, TaskSite};
pub use validate::parse_ratio;

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// One semantic problem, at a field path such as `flows[1].sites[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type or an unknown key.
    #[error("{file}:{line}:{column}: {}{message}", path.as_deref().map(|p| format!("{p}: ")).unwrap_or_default())]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        /// Field path, where the parser knows it.
        path: Option<String>,
        message: String,
    },
    /// The file parsed, but its content is inconsistent.
    #[error("{file}: {} error(s):\n{}", errors.len(), errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        file: String,
        errors: Vec<FieldError>,
    },
}

impl ConfigError {
    /// One line per problem, each prefixed with the file (and position, where known).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { file, errors } => {
                errors.iter().map(|e| format!("{file}: {e}")).collect()
            }
            other => vec![other.to_string()],
        }
    }
}

/// Loads and validates a config file, reading `${NAME}` from the process environment.
pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: file.clone(),
        source,
    })?;
    let base = path.parent().map(Path::to_path_buf);
    parse(&text, &file, base.as_deref(), &|name| {
        std::env::var(name).ok()
    })
}

/// Parses and validates config text. `file` names it in errors; `base_dir` resolves relative
/// `${file:...}` paths; `env` looks up `${NAME}`.
pub fn parse(
    text: &str,
    file: &str,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    // Pass 1: syntax, types and unknown keys, against the text as written, so that every
    // error carries a line and column.
    let de = toml::de::Deserializer::parse(text).map_err(|e| syntax_error(file, text, None, &e))?;
    serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
        let path = e.path().to_string();
        syntax_error(file, text, Some(path), e.inner())
    })?;

    // Pass 2: interpolation on the parsed tree, length caps, then the typed shape again.
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| syntax_error(file, text, None, &e))?;
    let mut errors = Vec::new();
    let produced = interp::interpolate_table(&mut table, base_dir, env, &mut errors);
    bounds::check_table(&table, &mut errors);
    if !errors.is_empty() {
        // Value-free by construction (kinds of references, lengths), so shown as they are:
        // `redact` would only replace them with less precise messages.
        return Err(ConfigError::Invalid {
            file: file.to_string(),
            errors,
        });
    }
    // From here on an error may quote a value; every one goes through `redact`.
    let invalid = |errors: Vec<FieldError>| ConfigError::Invalid {
        file: file.to_string(),
        errors: redact::redact(errors, &produced),
    };
    let raw: RawConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            invalid(vec![FieldError::new(
                e.path().to_string(),
                e.inner().to_string(),
            )])
        })?;

    // Pass 3: meaning.
    let mut config = validate::validate(raw, &produced).map_err(invalid)?;
    // Pass 4: files the config names (relative to the config's folder).
    let c = &mut config.coordinator;
    security::resolve_files(&mut c.tls, &mut c.peer_tls, base_dir, &mut errors);
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    Ok(config)
}

fn syntax_error(file: &str, text: &str, path: Option<String>, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e
        .span()
        .map(|span| line_col(text, span.start))
        .unwrap_or((1, 1));
    let path = path.filter(|p| !p.is_empty() && p != ".");
    let message = e.message().trim();
    let message = match &path {
        // serde quotes a mistyped value ("invalid type: integer `1234`"): not for a secret.
        // Other messages (an unknown key) name only keys and stay as they are.
        Some(p) if is_secret_path(p) && message.starts_with("invalid") => {
            "invalid value (a secret: must be a string; the value is not shown)".to_string()
        }
        _ => message.to_string(),
    };
    ConfigError::Syntax {
        file: file.to_string(),
        line,
        column,
        path,
        message,
    }
}

/// Field paths whose values are secrets: passwords, keys, tokens, credentials, and every
/// pass-through property or option (`sasl.password`, `ssl.key.password`, ...).
fn is_secret_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "account_key",
        ".properties",
        ".options",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The largest char boundary of `s` at or below byte `i`.
pub(crate) fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Where example and test configs live, for tools that want to list them.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Deserialize helper for callers that hold a typed config as JSON (workers get their task's
/// flow, source and site as JSON from the coordinator).
pub fn from_json<'a, T: Deserialize<'a>>(json: &'a str) -> Result<T, serde_json::Error> {
    serde_json::from_str(json)
}

#[cfg(test)]
mod tests;
