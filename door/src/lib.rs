//! The one HTTP server every paynet HTTP door runs on (the token service's provisioning API, the
//! switch admin, the wallet providers, the issuer simulator's admin port).
//!
//! axum's own `serve` sets no limit at all: a client may trickle a header forever, open
//! connections until the process runs out of descriptors, or send a body of any size. Here
//! every connection is bounded:
//!
//! * the request head must arrive within `header_read_timeout_ms` (hyper's HTTP/1
//!   `header_read_timeout`; also the TLS handshake's budget), else the connection is closed;
//! * a request is answered within `request_timeout_ms` (408 otherwise);
//! * a body over `body_limit` bytes is answered 413 (declared length checked up front, streamed
//!   bodies cut off as they cross the limit);
//! * at most `max_connections` connections are served at once; the next one waits in the
//!   kernel's backlog until a slot frees, so a flood cannot starve the process of descriptors;
//! * TLS (rustls, TLS 1.3) from PEM files, with mutual TLS when a client CA is given;
//! * a non-loopback address is refused without TLS unless `insecure_plaintext = true` (then a
//!   warning is logged): a door never opens to the network in clear by accident.
//!
//! Shutdown is graceful: `stop` ends the accept loop, open connections finish their request in
//! flight (up to `shutdown_grace_ms`), then the call returns.

pub mod auth;
pub mod bounded;
pub mod config;
mod limits;
pub mod process;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

pub use config::{DoorConfig, DoorTls};

/// What went wrong opening a door.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A non-loopback address without TLS, and `insecure_plaintext` not set.
    #[error(
        "{addr} is not a loopback address: serving it without TLS is refused (configure tls, or set \
         insecure_plaintext = true to accept the risk)"
    )]
    PlaintextOffLoopback { addr: SocketAddr },
    /// A configuration value out of range.
    #[error("door config: {0}")]
    Config(String),
    /// Certificates, keys, client CA.
    #[error("tls: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Decides, before anything is accepted, whether `addr` may be served with `cfg`: the TLS
/// acceptor to use (`None`: plaintext, allowed).
pub fn open(addr: SocketAddr, cfg: &DoorConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, Error> {
    cfg.validate().map_err(Error::Config)?;
    match &cfg.tls {
        Some(t) => Ok(Some(tls::acceptor(&t.cert, &t.key, t.client_ca.as_deref())?)),
        None if addr.ip().is_loopback() => Ok(None),
        None if cfg.insecure_plaintext => {
            warn!(%addr, "HTTP door open to the network WITHOUT TLS (insecure_plaintext = true)");
            Ok(None)
        }
        None => Err(Error::PlaintextOffLoopback { addr }),
    }
}

/// Serves `router` on `listener` under `cfg` until `stop` is cancelled, then drains the open
/// connections (up to the grace period). Refuses to start (and accepts nothing) when the
/// address and the config break the plaintext rule or the TLS files do not load.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    cfg: DoorConfig,
    stop: CancellationToken,
) -> Result<(), Error> {
    let addr = listener.local_addr()?;
    let tls = open(addr, &cfg)?;
    let app = limits::apply(router, &cfg);
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let header_timeout = Duration::from_millis(cfg.header_read_timeout_ms);
    let tracker = TaskTracker::new();
    loop {
        // A slot first: past the limit, connections wait in the backlog, not in our memory.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    debug!(%addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            match tls {
                None => connection(stream, app, header_timeout, stop).await,
                Some(acc) => match tokio::time::timeout(header_timeout, acc.accept(stream)).await {
                    Ok(Ok(s)) => connection(s, app, header_timeout, stop).await,
                    Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    tracker.close();
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        debug!(%addr, "connections still open after the grace period: dropped");
    }
    Ok(())
}

async fn connection<S>(io: S, app: axum::Router, header_timeout: Duration, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
