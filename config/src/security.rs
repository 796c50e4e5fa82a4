//! The coordinator's security and hardening settings: `[coordinator.tls]` (TLS and mutual TLS
//! on the gRPC port), `[coordinator.auth]` (the admin bearer token) and `[coordinator.limits]`
//! (message size, request timeout, how many worker calls are admitted at once). Raw shapes,
//! typed shapes and their validation live together here.

use crate::secret::Secret;
use crate::FieldError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[coordinator.tls]`: the gRPC port speaks TLS. With `client_ca_file`, every client (worker
/// or CLI) must present a certificate signed by that CA (mutual TLS). The files are read
/// again when they change, so certificates can be rotated without a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TlsConfig {
    /// PEM certificate chain of the coordinator.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle clients' certificates must chain to; set = mutual TLS.
    pub client_ca_file: Option<PathBuf>,
}

/// `[coordinator.auth]`: who may use AdminService and `/api/v1/*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthConfig {
    /// Bearer token for admin calls (`Authorization: Bearer <token>`). None: the admin API is
    /// open (a warning is logged at start).
    pub token: Option<Secret>,
    /// Let read-only calls (AdminService.Status, `GET /api/v1/*`) through without a token.
    pub open_read_only: bool,
}

/// `[coordinator.limits]`: bounds that keep one client from hurting the others.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    /// Largest gRPC message the coordinator decodes.
    pub max_message_bytes: usize,
    /// Longest a gRPC request (or a TLS handshake) may take.
    #[serde(with = "crate::model::humantime_serde_compat")]
    pub request_timeout: Duration,
    /// Most worker calls (join, heartbeat, release, leave) admitted at once; further calls
    /// are refused with RESOURCE_EXHAUSTED instead of queueing without bound.
    pub heartbeat_queue: u32,
}

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            request_timeout: Duration::from_secs(30),
            heartbeat_queue: 256,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub token: Option<Secret>,
    pub open_read_only: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_message_bytes: Option<String>,
    pub request_timeout: Option<String>,
    pub heartbeat_queue: Option<u32>,
}

/// Shortest admin token accepted: a guessable token is no protection.
pub const MIN_TOKEN_CHARS: usize = 16;

pub(crate) fn tls(raw: Option<RawTls>, errors: &mut Vec<FieldError>) -> Option<TlsConfig> {
    let raw = raw?;
    let mut need = |field: &str, v: Option<String>| match v.filter(|s| !s.trim().is_empty()) {
        Some(s) => Some(PathBuf::from(s)),
        None => {
            errors.push(FieldError::new(
                format!("coordinator.tls.{field}"),
                "required when [coordinator.tls] is present",
            ));
            None
        }
    };
    let cert_file = need("cert_file", raw.cert_file);
    let key_file = need("key_file", raw.key_file);
    let client_ca_file = match raw.client_ca_file {
        Some(s) if s.trim().is_empty() => {
            errors.push(FieldError::new(
                "coordinator.tls.client_ca_file",
                "must not be empty (omit it for TLS without client certificates)",
            ));
            None
        }
        other => other.map(PathBuf::from),
    };
    Some(TlsConfig {
        cert_file: cert_file?,
        key_file: key_file?,
        client_ca_file,
    })
}

pub(crate) fn auth(raw: Option<RawAuth>, errors: &mut Vec<FieldError>) -> AuthConfig {
    let Some(raw) = raw else {
        return AuthConfig::default();
    };
    if let Some(token) = &raw.token {
        let chars = token.expose().chars().count();
        if token.expose().trim() != token.expose() || token.expose().contains(char::is_whitespace) {
            errors.push(FieldError::new(
                "coordinator.auth.token",
                "must not contain whitespace",
            ));
        } else if chars < MIN_TOKEN_CHARS {
            // The message states the length only, never the value.
            errors.push(FieldError::new(
                "coordinator.auth.token",
                format!("too short ({chars} characters; at least {MIN_TOKEN_CHARS})"),
            ));
        }
    }
    AuthConfig {
        token: raw.token,
        open_read_only: raw.open_read_only.unwrap_or(false),
    }
}

pub(crate) fn limits(raw: Option<RawLimits>, errors: &mut Vec<FieldError>) -> Limits {
    let mut limits = Limits::default();
    let Some(raw) = raw else {
        return limits;
    };
    if let Some(text) = raw.max_message_bytes {
        match text.trim().parse::<bytesize::ByteSize>() {
            Ok(b) if (1024..=1024 * 1024 * 1024).contains(&b.as_u64()) => {
                limits.max_message_bytes = b.as_u64() as usize
            }
            Ok(_) => errors.push(FieldError::new(
                "coordinator.limits.max_message_bytes",
                format!("\"{text}\" is out of range 1KiB..=1GiB"),
            )),
            Err(e) => errors.push(FieldError::new(
                "coordinator.limits.max_message_bytes",
                format!("invalid byte size \"{text}\": {e} (examples: \"4MiB\", \"16MiB\")"),
            )),
        }
    }
    if let Some(text) = raw.request_timeout {
        match humantime::parse_duration(&text) {
            Ok(d) if !d.is_zero() => limits.request_timeout = d,
            Ok(_) => errors.push(FieldError::new(
                "coordinator.limits.request_timeout",
                "must be greater than zero",
            )),
            Err(e) => errors.push(FieldError::new(
                "coordinator.limits.request_timeout",
                format!("invalid duration \"{text}\": {e} (examples: \"5s\", \"30s\")"),
            )),
        }
    }
    if let Some(n) = raw.heartbeat_queue {
        if n == 0 {
            errors.push(FieldError::new(
                "coordinator.limits.heartbeat_queue",
                "must be at least 1",
            ));
        } else {
            limits.heartbeat_queue = n;
        }
    }
    limits
}

/// Resolves relative TLS file paths against the config file's folder (like `${file:...}`)
/// and checks that each file can be read, so `config check` catches a wrong path.
pub(crate) fn resolve_files(
    tls: &mut Option<TlsConfig>,
    base_dir: Option<&Path>,
    errors: &mut Vec<FieldError>,
) {
    let Some(tls) = tls else { return };
    let mut fix = |field: &str, p: &mut PathBuf| {
        if let (true, Some(base)) = (p.is_relative(), base_dir) {
            *p = base.join(&*p);
        }
        if let Err(e) = std::fs::metadata(&*p) {
            errors.push(FieldError::new(
                format!("coordinator.tls.{field}"),
                format!("cannot read {}: {e}", p.display()),
            ));
        }
    };
    fix("cert_file", &mut tls.cert_file);
    fix("key_file", &mut tls.key_file);
    if let Some(ca) = &mut tls.client_ca_file {
        fix("client_ca_file", ca);
    }
}
