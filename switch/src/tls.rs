//! Transport security (rustls, TLS 1.3 only, the ring provider): a listener may require TLS and,
//! with a client CA, mutual TLS; an issuer link may speak TLS to its issuer, presenting a client
//! certificate when the issuer asks for one. Certificates and keys are PEM files named in the
//! config; they are read when the node starts (and on reload).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{LinkTlsConfig, TlsConfig};
use crate::error::{Error, ErrorKind, Result};

fn tls_err(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, "tls", detail)
}

// PEM loading and the server config are shared with the HTTP doors (`door::tls`).
fn door_err(e: door::Error) -> Error {
    match e {
        door::Error::Tls(d) => tls_err(d),
        other => tls_err(other.to_string()),
    }
}

fn certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    door::tls::certs(path).map_err(door_err)
}

fn key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    door::tls::key(path).map_err(door_err)
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>> {
    door::tls::roots(path).map_err(door_err)
}

/// The server side of a listener.
pub fn acceptor(cfg: &TlsConfig, base: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    let ca = cfg.client_ca.as_ref().map(|c| base.join(c));
    let config = door::tls::server_config(&base.join(&cfg.cert), &base.join(&cfg.key), ca.as_deref())
        .map_err(door_err)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The client side of an issuer link: the connector and the name the issuer must prove.
pub fn connector(
    cfg: &LinkTlsConfig,
    base: &Path,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>)> {
    let builder = ClientConfig::builder_with_provider(door::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots(&base.join(&cfg.ca))?);
    let config = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(certs(&base.join(c))?, key(&base.join(k))?)
            .map_err(|e| tls_err(format!("client certificate and key: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(cfg.server_name.clone())
        .map_err(|_| tls_err(format!("server_name {:?} is not a DNS name or IP address", cfg.server_name)))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// A connection, in clear or in TLS.
pub enum Stream {
    Plain(TcpStream),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
