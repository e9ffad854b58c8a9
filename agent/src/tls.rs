//! TLS for `wss://`: which certificate authorities the agent trusts, with rustls and its
//! `ring` provider.
//!
//! The agent trusts the public web roots (from `webpki-roots`, built in, so the host's own CA
//! store plays no part) and, when given `ca`, the certificates of that PEM file too, for a
//! server behind a proxy with a private CA. The provider is named explicitly rather than
//! left to rustls's process default, so no second crypto library can change it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the CA file {path} holds no PEM certificate; it should contain one or more \
         `-----BEGIN CERTIFICATE-----` blocks"
    )]
    NoCertificate { path: PathBuf },
    #[error("the CA file {path} has an unreadable certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// Makes the ring provider the process default, for any code that asks rustls for it. Done
/// once at start, before the first connection.
pub fn install_provider() {
    // An error only means a default is installed already, which is then ring as well: the
    // workspace builds rustls with no other provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client configuration for `wss://`: public roots, plus the certificates in `ca`.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|e| TlsError::BadCertificate {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_roots_suffice_without_a_ca_file() {
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn a_ca_file_without_certificates_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");

        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = client_config(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("unreadable certificate"), "{err}");

        let err = client_config(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read the CA file"), "{err}");
    }
}
