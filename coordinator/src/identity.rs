//! Who is calling, from the client certificate (mutual TLS).
//!
//! A worker's certificate names the one worker id it may use, in either of two ways:
//! - a URI SAN `lockstep://worker/<id>` ([`WORKER_URI_PREFIX`]), the recommended way: it is
//!   unambiguous and cannot be confused with a host name;
//! - `[coordinator.tls.worker_names]`: the certificate's subject CN or one of its DNS SANs
//!   mapped to a worker id, for a PKI that cannot issue URI SANs.
//!
//! Every other certificate the client CA signed is an operator's (the CLI, scripts). The two
//! roles never mix, though one CA signs both: a worker certificate cannot make an admin call,
//! an operator certificate cannot make a worker call, and a worker certificate makes worker
//! calls only under its own id. So a client cannot leave, release or join as another worker
//! (which would hand that worker's running tasks to someone else: two writers).
//!
//! Without client certificates (plaintext gRPC, or TLS without `client_ca_file`) nothing can
//! be checked: [`Caller::Unverified`]; the coordinator warns about it at start.

use lockstep_config::TlsConfig;
use rustls_pki_types::CertificateDer;
use std::collections::BTreeMap;
use x509_parser::extensions::GeneralName;

/// The URI SAN prefix that names a worker certificate's worker id.
pub const WORKER_URI_PREFIX: &str = "lockstep://worker/";

/// Who a call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Client certificates are not required: whatever the call says goes.
    Unverified,
    /// A worker certificate, for this worker id.
    Worker(String),
    /// Any other certificate the client CA signed; the name is its CN (or first DNS SAN) for
    /// logs.
    Operator(String),
}

/// Why a call's identity is refused. Messages repeat no value the caller sent (those are
/// checked for shape elsewhere, but are still the caller's words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no client certificate (mutual TLS requires one)")]
    NoCertificate,
    #[error("the client certificate cannot be read: {0}")]
    Unreadable(String),
    #[error("the client certificate names more than one worker id ({0:?}); a worker certificate names exactly one")]
    Ambiguous(Vec<String>),
    #[error("the client certificate belongs to worker {cert}; it cannot act as another worker")]
    OtherWorker { cert: String },
    #[error("an operator's certificate ({name}) cannot make worker calls; a worker certificate names its id as a URI SAN {WORKER_URI_PREFIX}<id>")]
    NotAWorker { name: String },
    #[error("a worker's certificate (worker {worker}) cannot make admin calls")]
    NotAnOperator { worker: String },
}

impl IdentityError {
    /// The label of `lockstep_coordinator_worker_calls_rejected_total` /
    /// `..._auth_failures_total` this refusal counts under.
    pub fn is_worker_certificate(&self) -> bool {
        matches!(self, IdentityError::NotAnOperator { .. })
    }
}

/// The identity rules of one coordinator.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    /// Client certificates are required and verified by the TLS layer.
    mutual: bool,
    /// CN or DNS SAN -> worker id (`[coordinator.tls.worker_names]`).
    names: BTreeMap<String, String>,
}

impl Identities {
    pub fn new(tls: Option<&TlsConfig>) -> Self {
        match tls {
            Some(t) if t.client_ca_file.is_some() => Identities {
                mutual: true,
                names: t.worker_names.clone(),
            },
            _ => Identities::default(),
        }
    }

    /// True when calls can be tied to certificates.
    pub fn verified(&self) -> bool {
        self.mutual
    }

    /// Who presented `certs` (the peer's chain, leaf first, as the TLS layer verified it).
    pub fn caller(&self, certs: Option<&[CertificateDer<'_>]>) -> Result<Caller, IdentityError> {
        if !self.mutual {
            return Ok(Caller::Unverified);
        }
        let leaf = certs
            .and_then(|c| c.first())
            .ok_or(IdentityError::NoCertificate)?;
        let names = CertNames::read(leaf)?;
        let mut ids = names.worker_uris();
        if ids.is_empty() {
            ids = names
                .cn
                .iter()
                .chain(names.dns.iter())
                .filter_map(|n| self.names.get(n).cloned())
                .collect();
        }
        ids.sort();
        ids.dedup();
        match ids.len() {
            0 => Ok(Caller::Operator(
                names
                    .cn
                    .or_else(|| names.dns.first().cloned())
                    .unwrap_or_else(|| "unnamed".to_string()),
            )),
            1 => Ok(Caller::Worker(ids.remove(0))),
            _ => Err(IdentityError::Ambiguous(ids)),
        }
    }

    /// Checks that `certs` may make a worker call as `worker_id`.
    pub fn check_worker(
        &self,
        certs: Option<&[CertificateDer<'_>]>,
        worker_id: &str,
    ) -> Result<(), IdentityError> {
        match self.caller(certs)? {
            Caller::Unverified => Ok(()),
            Caller::Worker(id) if id == worker_id => Ok(()),
            Caller::Worker(id) => Err(IdentityError::OtherWorker { cert: id }),
            Caller::Operator(name) => Err(IdentityError::NotAWorker { name }),
        }
    }

    /// Checks that `certs` may make an admin call (the token is checked besides).
    pub fn check_operator(
        &self,
        certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<(), IdentityError> {
        match self.caller(certs)? {
            Caller::Worker(worker) => Err(IdentityError::NotAnOperator { worker }),
            Caller::Unverified | Caller::Operator(_) => Ok(()),
        }
    }
}

/// The worker id a PEM certificate file names with a `lockstep://worker/<id>` URI SAN (its
/// first certificate, the leaf), if any: a worker started with its certificate needs no
/// `--id` of its own.
pub fn worker_id_in_pem_file(path: &std::path::Path) -> Result<Option<String>, IdentityError> {
    use rustls_pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_file_iter(path)
        .map_err(|e| IdentityError::Unreadable(e.to_string()))?
        .next()
        .ok_or(IdentityError::NoCertificate)?
        .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
    let mut ids = CertNames::read(&leaf)?.worker_uris();
    ids.sort();
    ids.dedup();
    match ids.len() {
        0 => Ok(None),
        1 => Ok(ids.pop()),
        _ => Err(IdentityError::Ambiguous(ids)),
    }
}

/// The names a certificate carries.
struct CertNames {
    cn: Option<String>,
    dns: Vec<String>,
    uris: Vec<String>,
}

impl CertNames {
    /// The worker ids the certificate's `lockstep://worker/<id>` URI SANs name.
    fn worker_uris(&self) -> Vec<String> {
        self.uris
            .iter()
            .filter_map(|u| u.strip_prefix(WORKER_URI_PREFIX))
            .map(str::to_string)
            .collect()
    }

    fn read(der: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut dns = Vec::new();
        let mut uris = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    _ => {}
                }
            }
        }
        Ok(CertNames { cn, dns, uris })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: &str, sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().expect("ia5"))
    }

    fn mutual(names: &[(&str, &str)]) -> Identities {
        Identities {
            mutual: true,
            names: names
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_worker_certificate_acts_only_as_its_own_worker() {
        let ids = mutual(&[]);
        let w1 = cert("w1.example", vec![uri("lockstep://worker/w1")]);
        let chain = [w1];
        assert_eq!(ids.caller(Some(&chain)), Ok(Caller::Worker("w1".into())));
        assert_eq!(ids.check_worker(Some(&chain), "w1"), Ok(()));
        assert_eq!(
            ids.check_worker(Some(&chain), "w2"),
            Err(IdentityError::OtherWorker { cert: "w1".into() })
        );
        assert!(matches!(
            ids.check_operator(Some(&chain)),
            Err(IdentityError::NotAnOperator { .. })
        ));
    }

    #[test]
    fn an_operator_certificate_cannot_be_a_worker() {
        let ids = mutual(&[]);
        let op = [cert(
            "alice",
            vec![SanType::DnsName("alice.ops".try_into().expect("dns"))],
        )];
        assert_eq!(ids.caller(Some(&op)), Ok(Caller::Operator("alice".into())));
        assert!(matches!(
            ids.check_worker(Some(&op), "alice"),
            Err(IdentityError::NotAWorker { .. })
        ));
        assert_eq!(ids.check_operator(Some(&op)), Ok(()));
        assert_eq!(
            ids.check_worker(None, "w1"),
            Err(IdentityError::NoCertificate)
        );
    }

    #[test]
    fn mapped_names_and_ambiguity() {
        let ids = mutual(&[("node-7.dc1", "w7"), ("legacy-cn", "w8")]);
        let by_dns = [cert(
            "x",
            vec![SanType::DnsName("node-7.dc1".try_into().expect("dns"))],
        )];
        assert_eq!(ids.check_worker(Some(&by_dns), "w7"), Ok(()));
        let by_cn = [cert("legacy-cn", vec![])];
        assert_eq!(ids.caller(Some(&by_cn)), Ok(Caller::Worker("w8".into())));
        let two = [cert(
            "x",
            vec![uri("lockstep://worker/a"), uri("lockstep://worker/b")],
        )];
        assert!(matches!(
            ids.caller(Some(&two)),
            Err(IdentityError::Ambiguous(_))
        ));
    }

    #[test]
    fn a_worker_certificate_file_names_its_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, cn: &str, sans: Vec<SanType>| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.subject_alt_names = sans;
            let key = KeyPair::generate().expect("key");
            let path = dir.path().join(name);
            std::fs::write(&path, params.self_signed(&key).expect("cert").pem()).expect("write");
            path
        };
        let w = write("w.pem", "x", vec![uri("lockstep://worker/eu-w1")]);
        assert_eq!(worker_id_in_pem_file(&w), Ok(Some("eu-w1".into())));
        let op = write("op.pem", "alice", vec![]);
        assert_eq!(worker_id_in_pem_file(&op), Ok(None));
        assert!(worker_id_in_pem_file(&dir.path().join("missing.pem")).is_err());
    }

    #[test]
    fn without_client_certificates_nothing_is_checked() {
        let ids = Identities::new(None);
        assert!(!ids.verified());
        assert_eq!(ids.check_worker(None, "anyone"), Ok(()));
        assert_eq!(ids.check_operator(None), Ok(()));
    }
}
