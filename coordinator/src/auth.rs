//! Admin authentication: the bearer token that AdminService calls, PeerService calls (other
//! regions' coordinators send their own, the same token) and HTTP `/api/v1/*` need.
//!
//! Workers are not checked here: they use WorkerService, which mutual TLS protects. The token
//! comes from `[coordinator.auth].token` (a [`Secret`], usually `${ENV}` or `${file:...}`) and is
//! compared in constant time. No token: missing → 401 / UNAUTHENTICATED. Wrong token: 403 /
//! PERMISSION_DENIED. With `open_read_only`, reads (AdminService.Status, `GET /api/v1/*`, the
//! status page `/`) need no token. `/metrics`, `/healthz` and `/readyz` are always open.

use crate::metrics::Metrics;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lockstep_config::{AuthConfig, Secret};
use subtle::ConstantTimeEq;

/// What a call does: reads may be opened with `open_read_only`; writes always need the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("admin call without a bearer token (send `authorization: Bearer <token>`)")]
    Missing,
    #[error("admin call with a wrong bearer token")]
    Wrong,
}

impl AuthError {
    fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Wrong => "wrong",
        }
    }
}

/// The admin token check, shared by the gRPC and HTTP sides.
#[derive(Clone)]
pub struct AdminAuth {
    token: Option<Secret>,
    open_read_only: bool,
    metrics: Metrics,
}

impl AdminAuth {
    pub fn new(config: &AuthConfig, metrics: Metrics) -> Self {
        AdminAuth {
            token: config.token.clone(),
            open_read_only: config.open_read_only,
            metrics,
        }
    }

    /// True when no token is configured: every admin call is let through.
    pub fn is_open(&self) -> bool {
        self.token.is_none()
    }

    /// Checks an `authorization` header value (`Bearer <token>`) for a call of `access`.
    pub fn check(&self, authorization: Option<&[u8]>, access: Access) -> Result<(), AuthError> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        if access == Access::Read && self.open_read_only {
            return Ok(());
        }
        let presented = authorization.and_then(bearer).ok_or(AuthError::Missing)?;
        // Constant time over the token's bytes: the comparison does not reveal how much of a
        // guess was right. (A length mismatch returns at once; the length is no secret.)
        if bool::from(presented.ct_eq(expected.expose().as_bytes())) {
            Ok(())
        } else {
            Err(AuthError::Wrong)
        }
    }

    /// The gRPC side: UNAUTHENTICATED without a token, PERMISSION_DENIED with a wrong one.
    pub fn grpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        access: Access,
        method: &str,
    ) -> Result<(), tonic::Status> {
        let header = metadata.get("authorization").map(|v| v.as_bytes());
        self.check(header, access).map_err(|e| {
            self.metrics
                .auth_failures
                .with_label_values(&["grpc", e.reason()])
                .inc();
            tracing::warn!(method, reason = e.reason(), "admin call refused");
            match e {
                AuthError::Missing => tonic::Status::unauthenticated(e.to_string()),
                AuthError::Wrong => tonic::Status::permission_denied(e.to_string()),
            }
        })
    }
}

/// The token from `Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if header.len() <= SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = header[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Paths that are always open: probes and the Prometheus scrape.
pub const OPEN_PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// axum middleware for the whole router: every path but [`OPEN_PATHS`] needs the token
/// (`/api/...` and the status page `/`; reads may be opened with `open_read_only`). Applied
/// router-wide and deny-by-default, so a route added later is covered without further wiring.
pub async fn http_guard(State(auth): State<AdminAuth>, req: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let access = if matches!(*req.method(), Method::GET | Method::HEAD) {
        Access::Read
    } else {
        Access::Write
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match auth.check(header, access) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            auth.metrics
                .auth_failures
                .with_label_values(&["http", e.reason()])
                .inc();
            tracing::warn!(path = %req.uri().path(), reason = e.reason(), "admin request refused");
            let code = match e {
                AuthError::Missing => StatusCode::UNAUTHORIZED,
                AuthError::Wrong => StatusCode::FORBIDDEN,
            };
            let hint = if req.uri().path().starts_with("/api/") {
                ""
            } else {
                "\nThe status page is a read: open it to browsers with [coordinator.auth].open_read_only = true, or through a proxy that adds the header.\n"
            };
            (
                code,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!("{e}\n{hint}"),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: Option<&str>, open_read_only: bool) -> AdminAuth {
        AdminAuth::new(
            &AuthConfig {
                token: token.map(Secret::new),
                open_read_only,
            },
            Metrics::new_unregistered(),
        )
    }

    #[test]
    fn no_token_configured_lets_everything_through() {
        let a = auth(None, false);
        assert!(a.is_open());
        assert_eq!(a.check(None, Access::Write), Ok(()));
    }

    #[test]
    fn missing_wrong_and_right_tokens() {
        let a = auth(Some("0123456789abcdef"), false);
        assert_eq!(a.check(None, Access::Read), Err(AuthError::Missing));
        assert_eq!(
            a.check(Some(b"Basic abc"), Access::Write),
            Err(AuthError::Missing)
        );
        assert_eq!(
            a.check(Some(b"Bearer "), Access::Write),
            Err(AuthError::Missing)
        );
        assert_eq!(
            a.check(Some(b"Bearer 0123456789abcdeX"), Access::Write),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            a.check(Some(b"Bearer 0123456789abcdef0"), Access::Write),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            a.check(Some(b"bearer 0123456789abcdef"), Access::Write),
            Ok(())
        );
    }

    #[test]
    fn open_read_only_opens_reads_only() {
        let a = auth(Some("0123456789abcdef"), true);
        assert_eq!(a.check(None, Access::Read), Ok(()));
        assert_eq!(a.check(None, Access::Write), Err(AuthError::Missing));
    }
}
