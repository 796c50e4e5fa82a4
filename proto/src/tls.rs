//! The client side of gRPC to a coordinator, shared by workers, the CLI and the coordinators of
//! other regions (PeerService): TLS with an optional client certificate (mutual TLS), from PEM
//! files, and the admin bearer token.
//!
//! The files are read each time an endpoint is built. The worker builds a new one whenever a
//! join fails, and a coordinator one for every status request to a peer, so a rotated
//! certificate or CA is picked up at the next connection.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// TLS settings of a client (`--tls-ca`, `--tls-cert`, `--tls-key`, `--tls-domain`).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA bundle the coordinator's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for a coordinator with mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Name to verify the coordinator's certificate against (default: the URL's host).
    pub domain: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid coordinator address \"{url}\": {message}")]
    BadAddress { url: String, message: String },
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

impl ClientTls {
    /// True when any TLS option is given.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.domain.is_some()
    }

    /// An endpoint for `url` (`http://` plaintext, `https://` TLS), with a connect timeout and
    /// a per-request timeout.
    pub fn endpoint(&self, url: &str, request_timeout: Duration) -> Result<Endpoint, ClientError> {
        let bad = |message: String| ClientError::BadAddress {
            url: url.to_string(),
            message,
        };
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(request_timeout);
        let https = url.starts_with("https://");
        if !https {
            if self.is_set() {
                return Err(bad(
                    "TLS options are set but the address is not https://".to_string()
                ));
            }
            return Ok(endpoint);
        }
        let Some(ca) = &self.ca_file else {
            return Err(ClientError::Config(format!(
                "{url}: an https:// coordinator needs --tls-ca (the CA that signed its certificate)"
            )));
        };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("TLS CA file", ca)?));
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(
                    read("TLS certificate", cert)?,
                    read("TLS key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::Config(
                    "--tls-cert and --tls-key go together".to_string(),
                ))
            }
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        endpoint
            .tls_config(config)
            .map_err(|e| ClientError::Config(format!("TLS settings for {url}: {e}")))
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Adds `authorization: Bearer <token>` to every request (the CLI's admin calls).
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    /// None: no header. A token that is not valid header text is an error.
    pub fn new(token: Option<&str>) -> Result<Self, ClientError> {
        match token {
            None => Ok(BearerToken(None)),
            Some(t) => {
                let mut value = format!("Bearer {}", t.trim())
                    .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                    .map_err(|_| {
                        ClientError::Config("the admin token must be printable ASCII".to_string())
                    })?;
                value.set_sensitive(true);
                Ok(BearerToken(Some(value)))
            }
        }
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_need_https_and_https_needs_a_ca() {
        let t = ClientTls {
            ca_file: Some("ca.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            t.endpoint("http://127.0.0.1:1", Duration::from_secs(1)),
            Err(ClientError::BadAddress { .. })
        ));
        let none = ClientTls::default();
        assert!(none
            .endpoint("http://127.0.0.1:1", Duration::from_secs(1))
            .is_ok());
        assert!(matches!(
            none.endpoint("https://127.0.0.1:1", Duration::from_secs(1)),
            Err(ClientError::Config(_))
        ));
        let missing = ClientTls {
            ca_file: Some("/no/such/ca.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            missing.endpoint("https://127.0.0.1:1", Duration::from_secs(1)),
            Err(ClientError::Read { .. })
        ));
    }

    #[test]
    fn bearer_token_is_sensitive_and_never_printed() {
        let b = BearerToken::new(Some("0123456789abcdef")).unwrap();
        let v = b.0.as_ref().unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("0123456789abcdef"));
        assert!(BearerToken::new(Some("bad\ntoken")).is_err());
    }
}
