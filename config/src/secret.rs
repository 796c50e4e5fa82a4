//! `Secret`: a string that never shows itself in `Debug` or `Display`.
//!
//! Every password, key or token in the config is a `Secret`, so a log line, a panic message or
//! `config check` output can only ever print `***`. The value is reachable through
//! [`Secret::expose`] (for the client that needs it) and through `Serialize` (the coordinator
//! hands a task's config to its worker as JSON); nothing else reveals it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret string. Compare with [`Secret::expose`]; print it and you get `***`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value. Call only where a client needs it, never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
