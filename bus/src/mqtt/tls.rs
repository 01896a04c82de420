//! TLS for `mqtts://`: rustls with the ring provider, the CA and optional
//! client certificate read from the PEM files `--bus` names.

use crate::{BusError, TlsFiles};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;

pub(super) fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, BusError> {
    let roots = match &files.ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("ca", path)? {
                roots.add(cert).map_err(|e| BusError::Tls(format!("ca={}: {e}: give the PEM certificate of the CA that signed the broker's", path.display())))?;
            }
            roots
        }
        None => system_roots()?,
    };
    // Explicit provider: whichever other crates enable rustls features, this one uses ring.
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| BusError::Tls(format!("{e}: this build's TLS provider is unusable")))?
        .with_root_certificates(roots);
    let config = match &files.client {
        Some((cert, key)) => {
            let chain = certificates("cert", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| BusError::Tls(format!("key={}: {e}: give the client's private key as a PEM file", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| BusError::Tls(format!("cert={} with key={}: {e}: give a certificate and its own key", cert.display(), key.display())))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; an error when there is none.
fn certificates(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, BusError> {
    let problem = |e: &dyn std::fmt::Display| BusError::Tls(format!("{setting}={}: {e}: give a readable PEM file with certificates", path.display()));
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| problem(&e))?.collect::<Result<Vec<_>, _>>().map_err(|e| problem(&e))?;
    if certs.is_empty() {
        return Err(problem(&"no certificate in it"));
    }
    Ok(certs)
}

fn system_roots() -> Result<RootCertStore, BusError> {
    let mut roots = RootCertStore::empty();
    // Certificates the system has but rustls cannot parse are skipped, as other TLS clients do.
    let (added, _skipped) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        return Err(BusError::Tls("no system CA certificates found: install ca-certificates or give ca=/path/to/ca.pem in --bus".into()));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let files = TlsFiles { ca: Some("/nonexistent/ca.pem".into()), client: None };
        let e = client_config(&files).unwrap_err().to_string();
        assert!(e.contains("ca=/nonexistent/ca.pem") && e.contains("readable PEM"), "{e}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("sluice-bus-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = client_config(&TlsFiles { ca: Some(path), client: None }).unwrap_err().to_string();
        assert!(e.contains("no certificate in it"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
