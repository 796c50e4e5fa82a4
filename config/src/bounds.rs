//! Length caps on what a config may contain, checked on the tree after interpolation (so a
//! value from the environment or a file is held to them too).
//!
//! - Names lockstep defines and shows everywhere (sites, sources, flows, `coordinator.region`,
//!   `coordinator.id`, and a flow's references to them): [`MAX_NAME_BYTES`]. Kafka topic names
//!   keep Kafka's own limit (249), checked with the topic.
//! - Any string value: [`MAX_VALUE_BYTES`]; a secret (a field `is_secret_path` calls one: a GCS
//!   credential JSON, a key bundle passed through `options`) may be as large as a `${file:}`
//!   secret, [`crate::secret_file::MAX_SECRET_FILE_BYTES`].
//! - Table keys (property and option names): [`MAX_KEY_BYTES`].
//!
//! The errors name the field, the limit and the length, never the value.

use crate::interp::child_path;
use crate::secret_file::MAX_SECRET_FILE_BYTES;
use crate::FieldError;

/// Longest name of a site, source or flow, region or coordinator id, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest string value, in bytes (secrets: up to `MAX_SECRET_FILE_BYTES`).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest table key (a Kafka property or opendal option name), in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The error for a name longer than [`MAX_NAME_BYTES`], if it is.
pub(crate) fn name_too_long(name: &str) -> Option<String> {
    (name.len() > MAX_NAME_BYTES).then(|| too_long(name.len(), MAX_NAME_BYTES))
}

fn too_long(len: usize, max: usize) -> String {
    format!("too long ({len} bytes; at most {max}; the value is not shown)")
}

/// Checks every string value and key of `table` against the caps.
pub(crate) fn check_table(table: &toml::Table, errors: &mut Vec<FieldError>) {
    check_keys(table, "", errors);
    for (key, value) in table {
        check_value(value, &child_path("", key), errors);
    }
}

fn check_keys(table: &toml::Table, path: &str, errors: &mut Vec<FieldError>) {
    for key in table.keys().filter(|k| k.len() > MAX_KEY_BYTES) {
        let at = if path.is_empty() { "(top level)" } else { path };
        errors.push(FieldError::new(
            at,
            format!(
                "a key is too long ({} bytes; at most {MAX_KEY_BYTES}; the key is not shown)",
                key.len()
            ),
        ));
    }
}

fn check_value(value: &toml::Value, path: &str, errors: &mut Vec<FieldError>) {
    match value {
        toml::Value::String(s) => {
            let max = if crate::is_secret_path(path) {
                MAX_SECRET_FILE_BYTES as usize
            } else {
                MAX_VALUE_BYTES
            };
            if s.len() > max {
                errors.push(FieldError::new(path, too_long(s.len(), max)));
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_value(item, &format!("{path}[{i}]"), errors);
            }
        }
        toml::Value::Table(t) => {
            check_keys(t, path, errors);
            for (key, v) in t {
                // An over-long key is reported above; its path would carry the whole key.
                if key.len() <= MAX_KEY_BYTES {
                    check_value(v, &child_path(path, key), errors);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<FieldError> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        check_table(&table, &mut errors);
        errors
    }

    #[test]
    fn long_values_and_keys_are_named_with_the_limit_never_shown() {
        let long = "v".repeat(MAX_VALUE_BYTES + 1);
        let key = "k".repeat(MAX_KEY_BYTES + 1);
        let e = errors(&format!(
            "[a]\nurl = \"{long}\"\nlist = [\"ok\", \"{long}\"]\n[a.props]\n\"{key}\" = \"x\"\n"
        ));
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                format!("a.list[1]: too long (65537 bytes; at most 65536; the value is not shown)"),
                format!(
                    "a.props: a key is too long (257 bytes; at most 256; the key is not shown)"
                ),
                format!("a.url: too long (65537 bytes; at most 65536; the value is not shown)"),
            ]
        );
    }

    #[test]
    fn secrets_may_be_as_large_as_a_secret_file() {
        let long = "v".repeat(MAX_VALUE_BYTES + 1);
        assert!(errors(&format!("[s.druid]\npassword = \"{long}\"\n")).is_empty());
        let longer = "v".repeat(MAX_SECRET_FILE_BYTES as usize + 1);
        assert_eq!(
            errors(&format!("[s.druid]\npassword = \"{longer}\"\n")).len(),
            1
        );
    }

    #[test]
    fn names_have_their_own_cap() {
        assert_eq!(name_too_long(&"n".repeat(MAX_NAME_BYTES)), None);
        let e = name_too_long(&"n".repeat(MAX_NAME_BYTES + 1)).unwrap();
        assert_eq!(
            e,
            "too long (129 bytes; at most 128; the value is not shown)"
        );
    }
}
