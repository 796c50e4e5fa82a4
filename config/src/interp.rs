//! `${...}` interpolation of secrets and environment-specific values.
//!
//! Forms, inside any TOML string value:
//! - `${NAME}` or `${env:NAME}`: the environment variable NAME (an error when unset);
//! - `${NAME:-default}`: the same, with a default for when it is unset;
//! - `${file:PATH}`: the content of a file, trailing newline removed; a relative PATH is taken
//!   from the config file's folder (Kubernetes secret mounts, Docker secrets);
//! - `$${`: a literal `${`.
//!
//! Interpolation runs on the parsed TOML tree, never on the text, so a value can never change
//! the structure of the file, and errors name the field path of the string.

use crate::FieldError;
use std::path::Path;

/// Replaces every `${...}` in the string values of `table`, in place. Errors are collected, not
/// returned at the first one, so `config check` can show them all.
pub(crate) fn interpolate_table(
    table: &mut toml::Table,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<FieldError>,
) {
    for (key, value) in table.iter_mut() {
        interpolate_value(value, key.clone(), base_dir, env, errors);
    }
}

fn interpolate_value(
    value: &mut toml::Value,
    path: String,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<FieldError>,
) {
    match value {
        toml::Value::String(s) if s.contains('$') => match expand(s, base_dir, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => errors.push(FieldError::new(path, message)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, format!("{path}[{i}]"), base_dir, env, errors);
            }
        }
        toml::Value::Table(t) => {
            for (key, v) in t.iter_mut() {
                interpolate_value(v, format!("{path}.{key}"), base_dir, env, errors);
            }
        }
        _ => {}
    }
}

/// Expands one string. The error text never contains a resolved value, only names and paths.
pub(crate) fn expand(
    input: &str,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            // The text is not quoted: the string may be a secret with a stray `${` in it.
            return Err("unclosed `${` (write `$${` for a literal)".to_string());
        };
        let reference = &body_start[..end];
        out.push_str(&resolve(reference, base_dir, env)?);
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(
    reference: &str,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if let Some(path) = reference.strip_prefix("file:") {
        if path.is_empty() {
            return Err("`${file:}` needs a path".to_string());
        }
        let p = Path::new(path);
        let full = match (p.is_relative(), base_dir) {
            (true, Some(base)) => base.join(p),
            _ => p.to_path_buf(),
        };
        return read_secret_file(&full)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("cannot read secret file {}: {e}", full.display()));
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
        return Err(format!(
            "`${{{reference}}}` is not a valid reference: use ${{NAME}}, ${{NAME:-default}}, ${{env:NAME}} or ${{file:PATH}}"
        ));
    }
    match (env(name), default) {
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(format!("environment variable {name} is not set")),
    }
}

/// Largest `${file:...}` accepted: a secret is small, and a cap keeps a mistaken path (a
/// device, a log file) from eating the coordinator's memory.
pub(crate) const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

fn read_secret_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_SECRET_FILE_BYTES} bytes"
        )));
    }
    Ok(text)
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

    #[test]
    fn expands_env_and_literals() {
        assert_eq!(expand("${PW}", None, &env).unwrap(), "s3cret");
        assert_eq!(
            expand("${env:HOST}:9092", None, &env).unwrap(),
            "kafka-1:9092"
        );
        assert_eq!(expand("a$b", None, &env).unwrap(), "a$b");
        assert_eq!(expand("$${PW}", None, &env).unwrap(), "${PW}");
        assert_eq!(expand("${NOPE:-dflt}", None, &env).unwrap(), "dflt");
        assert_eq!(expand("${PW:-dflt}", None, &env).unwrap(), "s3cret");
    }

    #[test]
    fn missing_and_malformed_references_are_errors() {
        assert!(expand("${NOPE}", None, &env)
            .unwrap_err()
            .contains("NOPE is not set"));
        let unclosed = expand("hunter2${PW", None, &env).unwrap_err();
        assert!(unclosed.contains("unclosed"), "{unclosed}");
        assert!(
            !unclosed.contains("hunter2"),
            "never quotes the value: {unclosed}"
        );
        assert!(expand("${a-b}", None, &env)
            .unwrap_err()
            .contains("not a valid reference"));
    }

    #[test]
    fn reads_files_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw.txt"), "filepw\n").unwrap();
        assert_eq!(
            expand("${file:pw.txt}", Some(dir.path()), &env).unwrap(),
            "filepw"
        );
        let err = expand("${file:missing.txt}", Some(dir.path()), &env).unwrap_err();
        assert!(err.contains("cannot read secret file"), "{err}");
        let big = vec![b'x'; MAX_SECRET_FILE_BYTES as usize + 1];
        std::fs::write(dir.path().join("big.txt"), big).unwrap();
        let err = expand("${file:big.txt}", Some(dir.path()), &env).unwrap_err();
        assert!(err.contains("larger than"), "{err}");
    }
}
