//! rustls from PEM files (TLS 1.3 only, the ring provider), shared by the HTTP doors and the
//! switch's ISO 8583 listeners and issuer links. Errors name the file, never a key's bytes.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::Error;

fn tls_err(detail: impl Into<String>) -> Error {
    Error::Tls(detail.into())
}

/// The crypto provider every paynet TLS endpoint uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file (at least one).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!("{}: no certificate in the file", path.display())));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|_| tls_err(format!("{}: no usable private key", path.display())))
}

/// A root store of every certificate in a PEM file.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>, Error> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store.add(c).map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
    }
    Ok(Arc::new(store))
}

/// A server's TLS config: its certificate chain and key; clients must present a certificate
/// chaining to `client_ca` when it is given (mutual TLS).
pub fn server_config(cert: &Path, key_path: &Path, client_ca: Option<&Path>) -> Result<ServerConfig, Error> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(|e| tls_err(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs(cert)?, key(key_path)?)
        .map_err(|e| tls_err(format!("certificate and key: {e}")))
}

/// [`server_config`] as a tokio acceptor.
pub fn acceptor(
    cert: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor, Error> {
    let mut cfg = server_config(cert, key_path, client_ca)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
