//! The coordinator's security and hardening settings: `[coordinator.tls]` (TLS and mutual TLS
//! on the gRPC port), `[coordinator.auth]` (the admin bearer token) and `[coordinator.limits]`
//! (message size, request timeout, how many worker calls are admitted at once, connection caps
//! and timeouts). Raw shapes,
//! typed shapes and their validation live together here.

use crate::secret::Secret;
use crate::FieldError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// With mutual TLS, certificate name (subject CN or a DNS SAN) -> the worker id that
    /// certificate may use, for certificates that cannot carry the `lockstep://worker/<id>`
    /// URI SAN. A certificate with neither is an operator's: it cannot act as a worker.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub worker_names: BTreeMap<String, String>,
}

/// `[coordinator.peer_tls]`: how a coordinator connects to other regions' coordinators
/// (PeerService) at `https://` addresses, when `[coordinator.tls]` does not say it: the CA
/// their certificates chain to and, for peers with mutual TLS, the client certificate to
/// present (an operator's: one without a `lockstep://worker/` URI SAN).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerTlsConfig {
    /// PEM CA bundle the peers' certificates must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate chain, for peers that require client certificates.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
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
    /// Most connections open at once on each listener (HTTP and gRPC alike); lowered at start
    /// when the process's file limit cannot hold both listeners' caps plus a reserve.
    pub max_connections: u32,
    /// Longest an HTTP client may take to send a request's headers, counted from the
    /// connection's start or its previous answer (so also the keep-alive idle limit); on the
    /// gRPC port, longest before the first bytes (the HTTP/2 preface or TLS hello).
    #[serde(with = "crate::model::humantime_serde_compat")]
    pub header_read_timeout: Duration,
    /// A connection (HTTP or gRPC) that moves no byte for this long, with no request in
    /// flight, is closed.
    #[serde(with = "crate::model::humantime_serde_compat")]
    pub idle_timeout: Duration,
}

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default per-listener connection cap: far above a region's workers, operators and scrapers,
/// far below the usual file limits.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Most `max_connections` accepted (a typo's guard; the file limit lowers it further).
pub const MAX_MAX_CONNECTIONS: u32 = 1_000_000;
/// Shortest `header_read_timeout` and `idle_timeout` accepted: below it, slow but honest
/// networks would lose their connections.
pub const MIN_CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            request_timeout: Duration::from_secs(30),
            heartbeat_queue: 256,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_ca_file: Option<String>,
    pub worker_names: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeerTls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
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
    pub max_connections: Option<u32>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
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
    let worker_names = raw.worker_names.unwrap_or_default();
    if !worker_names.is_empty() && client_ca_file.is_none() {
        errors.push(FieldError::new(
            "coordinator.tls.worker_names",
            "needs client_ca_file: without client certificates there is no name to map",
        ));
    }
    for (name, id) in &worker_names {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "coordinator.tls.worker_names",
                "a certificate name must be 1 to 255 bytes without control characters",
            ));
        }
        if let Err(e) = crate::names::worker_id(id) {
            errors.push(FieldError::new(
                format!(
                    "coordinator.tls.worker_names.{}",
                    crate::names::printable(name)
                ),
                e.to_string(),
            ));
        }
    }
    Some(TlsConfig {
        cert_file: cert_file?,
        key_file: key_file?,
        client_ca_file,
        worker_names,
    })
}

pub(crate) fn peer_tls(
    raw: Option<RawPeerTls>,
    errors: &mut Vec<FieldError>,
) -> Option<PeerTlsConfig> {
    let raw = raw?;
    let path = |v: Option<String>| v.filter(|s| !s.trim().is_empty()).map(PathBuf::from);
    let ca_file = path(raw.ca_file);
    if ca_file.is_none() {
        errors.push(FieldError::new(
            "coordinator.peer_tls.ca_file",
            "required when [coordinator.peer_tls] is present: the CA the peers' certificates chain to",
        ));
    }
    let (cert_file, key_file) = (path(raw.cert_file), path(raw.key_file));
    if cert_file.is_some() != key_file.is_some() {
        errors.push(FieldError::new(
            if cert_file.is_some() {
                "coordinator.peer_tls.key_file"
            } else {
                "coordinator.peer_tls.cert_file"
            },
            "cert_file and key_file go together (the client certificate and its key)",
        ));
    }
    Some(PeerTlsConfig {
        ca_file: ca_file?,
        cert_file,
        key_file,
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
    if let Some(n) = raw.max_connections {
        if (1..=MAX_MAX_CONNECTIONS).contains(&n) {
            limits.max_connections = n;
        } else {
            errors.push(FieldError::new(
                "coordinator.limits.max_connections",
                format!("{n} is out of range 1..={MAX_MAX_CONNECTIONS}"),
            ));
        }
    }
    for (field, raw, slot) in [
        (
            "header_read_timeout",
            raw.header_read_timeout,
            &mut limits.header_read_timeout,
        ),
        ("idle_timeout", raw.idle_timeout, &mut limits.idle_timeout),
    ] {
        if let Some(text) = raw {
            match connection_timeout(&text) {
                Ok(d) => *slot = d,
                Err(message) => errors.push(FieldError::new(
                    format!("coordinator.limits.{field}"),
                    message,
                )),
            }
        }
    }
    limits
}

/// A connection timeout: a duration of at least [`MIN_CONNECTION_TIMEOUT`].
fn connection_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= MIN_CONNECTION_TIMEOUT => Ok(d),
        Ok(_) => Err(format!(
            "\"{text}\" is too short (at least {})",
            humantime::format_duration(MIN_CONNECTION_TIMEOUT)
        )),
        Err(e) => Err(format!(
            "invalid duration \"{text}\": {e} (examples: \"10s\", \"2m\")"
        )),
    }
}

/// Resolves relative TLS file paths (`[coordinator.tls]`, `[coordinator.peer_tls]`) against
/// the config file's folder (like `${file:...}`) and checks that each file can be read, so
/// `config check` catches a wrong path.
pub(crate) fn resolve_files(
    tls: &mut Option<TlsConfig>,
    peer_tls: &mut Option<PeerTlsConfig>,
    base_dir: Option<&Path>,
    errors: &mut Vec<FieldError>,
) {
    let mut fix = |field: &str, p: &mut PathBuf| {
        if let (true, Some(base)) = (p.is_relative(), base_dir) {
            *p = base.join(&*p);
        }
        if let Err(e) = std::fs::metadata(&*p) {
            errors.push(FieldError::new(
                format!("coordinator.{field}"),
                format!("cannot read {}: {e}", p.display()),
            ));
        }
    };
    if let Some(tls) = tls {
        fix("tls.cert_file", &mut tls.cert_file);
        fix("tls.key_file", &mut tls.key_file);
        if let Some(ca) = &mut tls.client_ca_file {
            fix("tls.client_ca_file", ca);
        }
    }
    if let Some(peer) = peer_tls {
        fix("peer_tls.ca_file", &mut peer.ca_file);
        if let Some(cert) = &mut peer.cert_file {
            fix("peer_tls.cert_file", cert);
        }
        if let Some(key) = &mut peer.key_file {
            fix("peer_tls.key_file", key);
        }
    }
}

#[cfg(test)]
mod limits_tests {
    use super::*;

    fn raw() -> RawLimits {
        RawLimits {
            max_message_bytes: None,
            request_timeout: None,
            heartbeat_queue: None,
            max_connections: None,
            header_read_timeout: None,
            idle_timeout: None,
        }
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn connection_limits_default_and_parse() {
        let mut errors = Vec::new();
        let d = limits(Some(raw()), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(d.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(d.header_read_timeout, Duration::from_secs(10));
        assert_eq!(d.idle_timeout, Duration::from_secs(120));
        assert_eq!(d, Limits::default());

        let l = limits(
            Some(RawLimits {
                max_connections: Some(64),
                header_read_timeout: Some("2s".into()),
                idle_timeout: Some("1m 30s".into()),
                ..raw()
            }),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(l.max_connections, 64);
        assert_eq!(l.header_read_timeout, Duration::from_secs(2));
        assert_eq!(l.idle_timeout, Duration::from_secs(90));
    }

    #[test]
    fn connection_limit_errors_name_the_field() {
        let mut errors = Vec::new();
        let l = limits(
            Some(RawLimits {
                max_connections: Some(0),
                header_read_timeout: Some("500ms".into()),
                idle_timeout: Some("soon".into()),
                ..raw()
            }),
            &mut errors,
        );
        assert_eq!(
            paths(&errors),
            vec![
                "coordinator.limits.max_connections",
                "coordinator.limits.header_read_timeout",
                "coordinator.limits.idle_timeout",
            ],
            "{errors:?}"
        );
        assert!(errors[1].message.contains("at least 1s"), "{errors:?}");
        assert!(errors[2].message.contains("invalid duration"), "{errors:?}");
        // Refused values leave the defaults in place.
        assert_eq!(l, Limits::default());

        let mut errors = Vec::new();
        limits(
            Some(RawLimits {
                max_connections: Some(MAX_MAX_CONNECTIONS + 1),
                ..raw()
            }),
            &mut errors,
        );
        assert_eq!(paths(&errors), vec!["coordinator.limits.max_connections"]);
    }
}
