//! What an error may show once interpolation has run: never a value a `${...}` reference
//! produced.
//!
//! Two belts, applied to every error after interpolation (typed deserialization, validation,
//! file checks):
//! 1. an error at a field whose value came (in part) from a reference gets a message that names
//!    the reference kind and says the value is not shown. The original message is dropped
//!    whole, because serde and humantime quote the value or pieces of it
//!    (`invalid value: string "..."`, `unknown time unit "..."`);
//! 2. any produced value (and each of its lines) that still appears in any message, say as a
//!    site name listed under another field, is replaced by `***`. Values shorter than
//!    [`MIN_REDACTED_CHARS`] are left alone: redacting `a` or `10` would shred every message,
//!    and validation names another field's produced value by its field path instead (see
//!    `validate`).

use crate::interp::{Produced, RefKind};
use crate::FieldError;
use std::collections::BTreeSet;

/// Shortest produced value redacted wherever it appears in a message.
pub(crate) const MIN_REDACTED_CHARS: usize = 4;

/// The errors as they may be shown.
pub(crate) fn redact(errors: Vec<FieldError>, produced: &Produced) -> Vec<FieldError> {
    let needles = needles(produced);
    errors
        .into_iter()
        .map(|e| {
            let message = match produced.kinds(&e.path) {
                Some(kinds) => format!(
                    "the value from {} is not valid here (the value and the error are not shown, since an error may quote the value)",
                    describe(kinds)
                ),
                None => scrub(&e.message, &needles),
            };
            FieldError::new(e.path, message)
        })
        .collect()
}

/// `` `${NAME}` `` or `` `${NAME}` and `${file:PATH}` `` references.
pub(crate) fn describe(kinds: &BTreeSet<RefKind>) -> String {
    let names: Vec<String> = kinds.iter().map(ToString::to_string).collect();
    let noun = if names.len() == 1 {
        "a reference"
    } else {
        "references"
    };
    format!("{noun} {}", names.join(" and "))
}

/// Every string to redact, longest first (so a value is replaced before a line of it).
fn needles(produced: &Produced) -> Vec<String> {
    let mut set = BTreeSet::new();
    for value in produced.values() {
        set.insert(value.clone());
        // serde and humantime quote strings with Rust's escapes (`"a\"b"`, `"\0"`).
        let escaped = format!("{value:?}");
        set.insert(escaped[1..escaped.len() - 1].to_string());
        for line in value.split(['\n', '\r', '\0']) {
            set.insert(line.trim().to_string());
        }
    }
    let mut needles: Vec<String> = set
        .into_iter()
        .filter(|s| s.chars().count() >= MIN_REDACTED_CHARS)
        .collect();
    needles.sort_by_key(|s| std::cmp::Reverse(s.len()));
    needles
}

fn scrub(message: &str, needles: &[String]) -> String {
    let mut out = message.to_string();
    for needle in needles {
        if out.contains(needle.as_str()) {
            out = out.replace(needle.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produced(pairs: &[(&str, &str)]) -> Produced {
        let mut table = toml::Table::new();
        let mut env = std::collections::HashMap::new();
        for (i, (path, value)) in pairs.iter().enumerate() {
            table.insert(path.to_string(), toml::Value::String(format!("${{V{i}}}")));
            env.insert(format!("V{i}"), value.to_string());
        }
        let mut errors = Vec::new();
        let p = crate::interp::interpolate_table(
            &mut table,
            None,
            &|name| env.get(name).cloned(),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        p
    }

    #[test]
    fn an_error_at_an_interpolated_field_shows_the_kind_not_the_value() {
        let p = produced(&[("lease_ttl", "hunter2")]);
        let e = redact(
            vec![FieldError::new("lease_ttl", "invalid duration \"hunter2\"")],
            &p,
        );
        assert_eq!(e[0].path, "lease_ttl");
        assert!(e[0].message.contains("`${NAME}`"), "{}", e[0]);
        assert!(!e[0].message.contains("hunter2"), "{}", e[0]);
    }

    #[test]
    fn produced_values_are_scrubbed_from_other_fields_messages() {
        let p = produced(&[("name", "line-one\nsecret-two\0x"), ("short", "ab")]);
        let e = redact(
            vec![FieldError::new(
                "other",
                "known: line-one, \"line-one\\nsecret-two\\0x\", secret-two, ab",
            )],
            &p,
        );
        assert_eq!(e[0].message, "known: ***, \"***\", ***, ab");
    }
}
