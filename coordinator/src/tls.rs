//! TLS on the coordinator's gRPC port: rustls (ring) through tokio-rustls, with optional mutual
//! TLS, and certificate files read again when they change.
//!
//! tonic's own `ServerTlsConfig` is fixed at start, so rotating a certificate would need a
//! restart. Instead the coordinator accepts TCP itself, and each new connection takes the
//! current rustls `ServerConfig` from [`TlsFiles`], which re-reads the certificate, key and
//! client-CA files when their modification time or size changed (checked at most once per
//! [`RECHECK`]). A broken new file set is logged and counted, and the last good one stays in
//! use, so a half-written rotation never takes the port down.
//!
//! Handshakes run in their own tasks, bounded in number and time, so a client that connects
//! and sends nothing (or garbage) holds up no one else. Connections are admitted by the gRPC
//! listener's [`Limiter`] before their handshake, so handshakes count against its cap.

use crate::conn::{Conn, Limiter};
use crate::metrics::Metrics;
use lockstep_config::TlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How often, at most, the files are checked for changes.
pub const RECHECK: Duration = Duration::from_secs(1);
/// Most TLS handshakes in progress at once; further connections wait in the kernel backlog.
pub const MAX_HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("coordinator.tls.{field}: cannot read {}: {message}", path.display())]
    Read {
        field: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("coordinator.tls.{field}: {} holds no {what}", path.display())]
    Empty {
        field: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("coordinator.tls: {0}")]
    Rustls(String),
}

/// The TLS file set and the server config last built from it.
pub struct TlsFiles {
    files: TlsConfig,
    metrics: Metrics,
    state: Mutex<Loaded>,
}

struct Loaded {
    stamps: Vec<Option<(SystemTime, u64)>>,
    config: Arc<rustls::ServerConfig>,
    checked: Instant,
}

impl TlsFiles {
    /// Reads the files once; an error here stops the coordinator from starting.
    pub fn load(files: &TlsConfig, metrics: Metrics) -> Result<Self, TlsError> {
        let config = Arc::new(build(files)?);
        Ok(TlsFiles {
            state: Mutex::new(Loaded {
                stamps: stamps(files),
                config,
                checked: Instant::now(),
            }),
            files: files.clone(),
            metrics,
        })
    }

    /// True when clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca_file.is_some()
    }

    /// The config for a new connection, rebuilt first if a file changed.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        // A poisoned lock only means a thread panicked while holding it; the config inside
        // is still a complete one.
        let mut loaded = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.checked.elapsed() < RECHECK {
            return loaded.config.clone();
        }
        loaded.checked = Instant::now();
        let now = stamps(&self.files);
        if now == loaded.stamps {
            return loaded.config.clone();
        }
        match build(&self.files) {
            Ok(config) => {
                loaded.config = Arc::new(config);
                loaded.stamps = now;
                self.metrics.tls_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(cert = %self.files.cert_file.display(), "TLS files changed: reloaded");
            }
            Err(e) => {
                // Stamps stay old, so the next check tries again (the rotation may be halfway).
                self.metrics.tls_reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "TLS files changed but do not load; keeping the previous ones");
            }
        }
        loaded.config.clone()
    }
}

fn stamps(files: &TlsConfig) -> Vec<Option<(SystemTime, u64)>> {
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let mut v = vec![stamp(&files.cert_file), stamp(&files.key_file)];
    if let Some(ca) = &files.client_ca_file {
        v.push(stamp(ca));
    }
    v
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |message: String| TlsError::Read {
        field,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            field,
            path: path.to_path_buf(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

/// Builds a rustls server config from the files: HTTP/2 only (gRPC), ring as the provider
/// (set explicitly, so another crate enabling a second provider cannot make it ambiguous).
pub fn build(files: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certs("cert_file", &files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsError::Read {
        field: "key_file",
        path: files.key_file.clone(),
        // The error names the PEM problem; it never includes key material.
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs("client_ca_file", ca)? {
                roots.add(cert).map_err(|e| TlsError::Read {
                    field: "client_ca_file",
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Rustls(format!("client_ca_file: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("cert_file/key_file: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts TCP connections under `limiter`, runs each TLS handshake in its own task (bounded
/// in number and by `handshake_timeout`), and yields the finished streams for tonic to serve.
/// Their connect info is `TlsConnectInfo<TcpConnectInfo>`, as tonic's `peer_certs()` needs.
pub fn incoming(
    listener: TcpListener,
    files: Arc<TlsFiles>,
    handshake_timeout: Duration,
    limiter: Limiter,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<Conn<TcpStream>>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = handshakes.clone().acquire_owned() => p,
            };
            // The semaphore is never closed; an error would only mean shutting down.
            let Ok(permit) = permit else { return };
            // Accept errors (out of descriptors and the like) are waited out in there.
            let tcp = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = limiter.accept(&listener) => c,
            };
            let peer = tcp.peer();
            let files = files.clone();
            let tx = tx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(files.current());
                let result = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
                drop(permit);
                match result {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        metrics.tls_handshake_failures.inc();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics.tls_handshake_failures.inc();
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
