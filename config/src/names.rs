//! What a worker may call itself and tell the coordinator about itself, checked on both ends
//! (the worker refuses to start with a bad `--worker-id`; the coordinator refuses a Join
//! carrying one), and [`printable`], which every text log line and CLI table uses for text
//! that came from outside.
//!
//! The bounds keep a hostile client from bloating the coordinator's state (every worker id is
//! persisted), and from forging log lines or reaching an operator's terminal with control
//! characters.

use std::borrow::Cow;
use std::fmt::Write;

/// Longest worker id, in bytes.
pub const MAX_WORKER_ID_BYTES: usize = 128;
/// Longest host name a worker reports (DNS allows 253).
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// Longest version string a worker reports.
pub const MAX_VERSION_BYTES: usize = 64;
/// Longest capability name, and most capabilities one worker reports.
pub const MAX_CAPABILITY_BYTES: usize = 32;
pub const MAX_CAPABILITIES: usize = 16;

/// Why a name a worker gave is refused. The messages describe the value (its length, the
/// position of a bad character) and never repeat it: it may be hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long; at most {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} has a character outside {allowed} at byte {at}")]
    BadChar {
        what: &'static str,
        at: usize,
        allowed: &'static str,
    },
    #[error("{what}: {count} given; at most {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

fn check(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(u8) -> bool,
) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > max {
        return Err(NameError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    match value.bytes().position(|b| !ok(b)) {
        Some(at) => Err(NameError::BadChar { what, at, allowed }),
        None => Ok(()),
    }
}

/// A worker id: 1 to [`MAX_WORKER_ID_BYTES`] bytes of `[A-Za-z0-9._-]`.
pub fn worker_id(id: &str) -> Result<(), NameError> {
    check(
        "worker id",
        id,
        MAX_WORKER_ID_BYTES,
        "[A-Za-z0-9._-]",
        |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'),
    )
}

/// A reported host name: empty (unknown) or up to [`MAX_HOSTNAME_BYTES`] of
/// `[A-Za-z0-9._-]`.
pub fn hostname(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Ok(());
    }
    check(
        "hostname",
        name,
        MAX_HOSTNAME_BYTES,
        "[A-Za-z0-9._-]",
        |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'),
    )
}

/// A reported version: empty or up to [`MAX_VERSION_BYTES`] of printable ASCII without
/// spaces (`0.1.0`, `0.2.0-rc.1+abc`).
pub fn version(v: &str) -> Result<(), NameError> {
    if v.is_empty() {
        return Ok(());
    }
    check("version", v, MAX_VERSION_BYTES, "printable ASCII", |b| {
        b.is_ascii_graphic()
    })
}

/// Reported capabilities: at most [`MAX_CAPABILITIES`], each 1 to [`MAX_CAPABILITY_BYTES`] of
/// `[a-z0-9_-]` (`kafka`, `objects`).
pub fn capabilities(caps: &[String]) -> Result<(), NameError> {
    if caps.len() > MAX_CAPABILITIES {
        return Err(NameError::TooMany {
            what: "capabilities",
            count: caps.len(),
            max: MAX_CAPABILITIES,
        });
    }
    for c in caps {
        check("capability", c, MAX_CAPABILITY_BYTES, "[a-z0-9_-]", |b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-')
        })?;
    }
    Ok(())
}

/// `s` with every control character (C0, DEL, C1: newlines, escapes, bells) written as a
/// visible escape (`\n`, `\u{1b}`), for text logs and terminal tables. Borrowed when there is
/// nothing to escape.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            // `escape_default` writes \n, \r, \t and \u{..}; writing to a String cannot fail.
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids() {
        assert!(worker_id("w1").is_ok());
        assert!(worker_id("eu-west.worker_07").is_ok());
        assert_eq!(worker_id(""), Err(NameError::Empty { what: "worker id" }));
        let long = "w".repeat(256 * 1024);
        let err = worker_id(&long).unwrap_err();
        assert_eq!(
            err.to_string(),
            "worker id is 262144 bytes long; at most 128"
        );
        assert!(worker_id(&"w".repeat(128)).is_ok());
        let err = worker_id("w1\n2026-01-01 INFO forged").unwrap_err();
        assert_eq!(
            err.to_string(),
            "worker id has a character outside [A-Za-z0-9._-] at byte 2"
        );
        assert!(worker_id("w1\u{1b}[2J").is_err());
        assert!(worker_id("wörker").is_err());
        assert!(worker_id("w 1").is_err());
    }

    #[test]
    fn what_a_worker_reports() {
        assert!(hostname("").is_ok());
        assert!(hostname("ip-10-0-0-5.ec2.internal").is_ok());
        assert!(hostname("host\r\nx").is_err());
        assert!(hostname(&"h".repeat(254)).is_err());
        assert!(version("0.1.0-rc.1+abc").is_ok());
        assert!(version("0.1 beta").is_err());
        assert!(capabilities(&["kafka".into(), "objects".into()]).is_ok());
        assert!(capabilities(&["Kafka".into()]).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("c{i}")).collect();
        assert!(matches!(
            capabilities(&many),
            Err(NameError::TooMany { count: 17, .. })
        ));
    }

    #[test]
    fn printable_escapes_control_characters_only() {
        assert!(matches!(printable("plain ünïcode"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\nb\r\u{1b}[31mc\u{7}\u{9b}"),
            "a\\nb\\r\\u{1b}[31mc\\u{7}\\u{9b}"
        );
    }
}
