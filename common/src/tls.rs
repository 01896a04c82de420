//! TLS settings from PEM files: a node's certificate and key, and the cluster
//! CA that peers' certificates must chain to (`sluice certs` makes all three).
//!
//! Coordinators and agents build their rustls configurations here, so every
//! listener and dialer checks the same things the same way, and a wrong file is
//! reported with the flag that named it and what to do about it. The crypto is
//! rustls with the ring provider, chosen explicitly whatever features other
//! crates enable.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A TLS setting that cannot be used; the message names the flag, the file and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The three files of a node's mutual TLS, and the flag prefix they came from
/// (`--tls`, `--gateway-tls`) for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub flag: &'static str,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Whether a server asks its clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Every client shows a certificate from the CA (Raft links).
    Required,
    /// A client may show one, and if it does it must be from the CA (the API:
    /// agents show theirs, the CLI and browsers come with tokens instead).
    Optional,
}

impl TlsFiles {
    /// All three of `{flag}-cert`, `{flag}-key` and `{flag}-ca`, or none (plain TCP).
    pub fn from_flags(flag: &'static str, cert: Option<&Path>, key: Option<&Path>, ca: Option<&Path>) -> Result<Option<Self>, TlsError> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(Self { flag, cert: cert.into(), key: key.into(), ca: ca.into() })),
            _ => {
                let missing: Vec<String> =
                    [("cert", cert.is_none()), ("key", key.is_none()), ("ca", ca.is_none())].iter().filter(|(_, m)| *m).map(|(n, _)| format!("{flag}-{n}")).collect();
                Err(TlsError(format!(
                    "{} missing: give all three of {flag}-cert, {flag}-key and {flag}-ca (made by `sluice certs init` and `sluice certs issue`), or none for plain TCP",
                    missing.join(" and ")
                )))
            }
        }
    }

    /// A server presenting this node's certificate, checking clients' against the CA.
    pub fn server_config(&self, clients: ClientCerts) -> Result<Arc<ServerConfig>, TlsError> {
        let roots = Arc::new(self.roots()?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
        let verifier = match clients {
            ClientCerts::Required => verifier.build(),
            ClientCerts::Optional => verifier.allow_unauthenticated().build(),
        }
        .map_err(|e| TlsError(format!("{}-ca {}: {e}: give the cluster CA's certificate (ca.pem)", self.flag, self.ca.display())))?;
        let (chain, key) = identity(self.flag, &self.cert, &self.key)?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(unusable_provider)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| mismatch(self.flag, &self.cert, &self.key, e))?;
        Ok(Arc::new(config))
    }

    /// A client presenting this node's certificate and checking servers' against the CA.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let (chain, key) = identity(self.flag, &self.cert, &self.key)?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(unusable_provider)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| mismatch(self.flag, &self.cert, &self.key, e))?;
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        roots(&format!("{}-ca", self.flag), &self.ca)
    }
}

/// A server presenting the certificate in `cert` that asks clients for none:
/// the gateway, whose callers are anyone's HTTP clients.
pub fn server_config_without_client_certs(flag: &str, cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key_der) = identity(flag, cert, key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(unusable_provider)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| mismatch(flag, cert, key, e))?;
    Ok(Arc::new(config))
}

fn identity(flag: &str, cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certificates(&format!("{flag}-cert"), cert, "the node's certificate (made by `sluice certs issue`)")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("{flag}-key {}: {e}: give the certificate's private key (the .key file `sluice certs issue` wrote next to its .pem)", key.display())))?;
    Ok((chain, key))
}

fn mismatch(flag: &str, cert: &Path, key: &Path, e: rustls::Error) -> TlsError {
    TlsError(format!("{flag}-cert {} with {flag}-key {}: {e}: give a certificate and its own key, as `sluice certs issue` wrote them", cert.display(), key.display()))
}

/// A client that checks servers against the CA in `ca` and shows no certificate
/// of its own: the CLI, which authenticates with a token.
pub fn ca_client_config(flag: &str, ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(unusable_provider)?
        .with_root_certificates(roots(flag, ca)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a verified peer certificate stands for: its first DNS name
/// (`sluice certs issue --name` puts the node's name first).
pub fn peer_name(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let name = cert.valid_dns_names().next().map(str::to_string);
    name
}

/// ring, whatever provider other crates' features would install process-wide.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn unusable_provider(e: rustls::Error) -> TlsError {
    TlsError(format!("{e}: this build's TLS provider is unusable"))
}

fn roots(flag: &str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(flag, path, "the cluster CA's certificate (ca.pem from `sluice certs init`)")? {
        roots.add(cert).map_err(|e| TlsError(format!("{flag} {}: {e}: give the cluster CA's certificate (ca.pem from `sluice certs init`)", path.display())))?;
    }
    Ok(roots)
}

/// Every certificate in a PEM file; an error when there is none.
fn certificates(flag: &str, path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |e: &dyn std::fmt::Display| TlsError(format!("{flag} {}: {e}: give {what} as a readable PEM file", path.display()));
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| problem(&e))?.collect::<Result<Vec<_>, _>>().map_err(|e| problem(&e))?;
    if certs.is_empty() {
        return Err(problem(&"no certificate in it"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { flag: "--tls", cert: dir.join("n.pem"), key: dir.join("n.key"), ca: dir.join("ca.pem") }
    }

    #[test]
    fn all_three_flags_or_none() {
        assert_eq!(TlsFiles::from_flags("--tls", None, None, None), Ok(None));
        let p = Path::new("/x");
        assert!(TlsFiles::from_flags("--tls", Some(p), Some(p), Some(p)).unwrap().is_some());
        let e = TlsFiles::from_flags("--tls", Some(p), None, None).unwrap_err().to_string();
        assert!(e.starts_with("--tls-key and --tls-ca missing: give all three"), "{e}");
        let e = TlsFiles::from_flags("--gateway-tls", None, Some(p), Some(p)).unwrap_err().to_string();
        assert!(e.starts_with("--gateway-tls-cert missing"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named_with_its_flag() {
        let dir = tempdir("missing");
        let e = files(&dir).client_config().unwrap_err().to_string();
        assert!(e.contains(&format!("--tls-cert {}", dir.join("n.pem").display())) && e.contains("sluice certs issue"), "{e}");
        let e = ca_client_config("--tls-ca", &dir.join("ca.pem")).unwrap_err().to_string();
        assert!(e.contains("--tls-ca") && e.contains("ca.pem from `sluice certs init`"), "{e}");
    }

    #[test]
    fn files_without_certificates_or_keys_are_refused() {
        let dir = tempdir("garbage");
        for name in ["n.pem", "n.key", "ca.pem"] {
            std::fs::write(dir.join(name), "not PEM\n").unwrap();
        }
        let e = files(&dir).server_config(ClientCerts::Required).unwrap_err().to_string();
        assert!(e.contains("--tls-ca") && e.contains("no certificate in it"), "{e}");
        let e = ca_client_config("--tls-ca", &dir.join("ca.pem")).unwrap_err().to_string();
        assert!(e.contains("no certificate in it"), "{e}");
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-common-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
