//! Acquirer listeners: terminals and acquirer hosts connect here. Each connection carries many
//! requests at once, answered as they complete (not in order); a per-connection cap on requests
//! in flight applies back-pressure by not reading further. A connection with a partial frame older
//! than the read timeout is dropped; one idle longer than the idle timeout is closed. A frame that
//! does not decode is answered with the response MTI and DE 39 = 30 when its MTI, DE 11 and DE 41
//! can be read, otherwise its connection is closed (docs/network-spec.md, INTERFACES.md §5). Other
//! connections never wait on any of this.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::Message;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::engine::{Engine, ListenerCtx, Outcome};
use crate::macing::LinkMac;
use crate::registry::Peer;
use crate::tls::Stream;

/// A listener's runtime settings.
pub struct ListenerSettings {
    pub ctx: Arc<ListenerCtx>,
    pub framing: FramingKind,
    pub max_frame_len: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    /// TLS (and with a client CA, mutual TLS) on this listener.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Message MACs (DE 64/128) on this listener: verified inbound, generated outbound.
    pub mac: Option<LinkMac>,
    /// Certification mode: every message checked, the findings kept per terminal.
    pub certification: Option<Arc<crate::certify::CertificationLog>>,
}

/// Accepts connections until `stop`; in-flight requests are tracked by `tasks` so that shutdown
/// can drain them.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<ListenerSettings>,
    engine: Arc<Engine>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let name = settings.ctx.name.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(listener = %name, "connection limit reached: refusing a connection");
            drop(stream);
            continue;
        };
        // A plain-TCP stranger is turned away before it sends anything; under mutual TLS the
        // certificate decides, after the handshake.
        if settings.tls.is_none() && !engine.admits(&name, &Peer::tcp(peer.ip())) {
            warn!(listener = %name, %peer, "connection from an address no acquirer is registered for: refused");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let settings = settings.clone();
        let engine = engine.clone();
        let stop = stop.clone();
        let t = tasks.clone();
        tasks.spawn(async move {
            let (stream, who) = match &settings.tls {
                None => (Stream::Plain(stream), Peer::tcp(peer.ip())),
                Some(acceptor) => {
                    match tokio::time::timeout(settings.read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let who = match s.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                                Some(cert) => Peer::with_certificate(peer.ip(), cert.as_ref()),
                                None => Peer::tcp(peer.ip()),
                            };
                            if !engine.admits(&settings.ctx.name, &who) {
                                warn!(listener = %settings.ctx.name, %peer, "TLS peer proves no registered acquirer: refused");
                                return;
                            }
                            (Stream::Server(Box::new(s)), who)
                        }
                        Ok(Err(e)) => {
                            warn!(listener = %settings.ctx.name, %peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            warn!(listener = %settings.ctx.name, %peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let gauge = engine.metrics.acquirer_connections.with_label_values(&[&settings.ctx.name]);
            gauge.inc();
            connection(stream, peer, Arc::new(who), &settings, engine.clone(), stop, t).await;
            gauge.dec();
            drop(permit);
        });
    }
}

async fn connection(
    stream: Stream,
    peer: SocketAddr,
    who: Arc<Peer>,
    s: &ListenerSettings,
    engine: Arc<Engine>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let (rd, wr) = tokio::io::split(stream);
    let codec = FrameCodec::with_max_frame_len(s.framing, s.max_frame_len);
    let mut reader = FramedRead::new(rd, codec);
    let mut writer = FramedWrite::new(wr, codec);
    let (tx, mut rx) = mpsc::channel::<Frame>(1024);
    let conn_stop = CancellationToken::new();
    // Writer: the answers ready together leave in one write.
    let w_stop = conn_stop.clone();
    let writer_task = tokio::spawn(async move {
        crate::outbox::write_queued(&mut writer, &mut rx).await;
        w_stop.cancel();
    });
    let in_flight = Arc::new(Semaphore::new(s.max_in_flight.max(1)));
    let name = s.ctx.name.clone();
    // Reading is cancel-safe (bytes stay in the read buffer), so the loop wakes every `tick` to
    // judge the two timeouts: a partial frame older than the read timeout, or no frame at all for
    // the idle timeout.
    let tick = (s.read_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut last_frame = tokio::time::Instant::now();
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            _ = conn_stop.cancelled() => break,
            r = tokio::time::timeout(tick, reader.next()) => r,
        };
        let frame = match next {
            Err(_) => {
                let now = tokio::time::Instant::now();
                if reader.read_buffer().is_empty() {
                    partial_since = None;
                    if now.duration_since(last_frame) >= s.idle_timeout {
                        debug!(listener = %name, %peer, "idle connection closed");
                        break;
                    }
                } else {
                    let since = *partial_since.get_or_insert(now);
                    if now.duration_since(since) >= s.read_timeout {
                        debug!(listener = %name, %peer, "partial frame timed out: connection dropped");
                        break;
                    }
                }
                continue;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                engine.metrics.format_errors.with_label_values(&[&name]).inc();
                warn!(listener = %name, %peer, error = %e, "framing error: closing the connection");
                break;
            }
            Ok(Some(Ok(frame))) => {
                last_frame = tokio::time::Instant::now();
                partial_since = None;
                frame
            }
        };
        let req = match Message::decode(&s.ctx.spec, frame.payload.clone()) {
            Ok(m) => m,
            Err(e) => {
                engine.metrics.format_errors.with_label_values(&[&name]).inc();
                if let Some(log) = &s.certification {
                    log.record_undecodable(&s.ctx.spec, &frame.payload, &e, engine.clock.now_ms());
                }
                match format_error_answer(&s.ctx, frame.payload.clone()) {
                    Some(answer) => {
                        warn!(listener = %name, %peer, error = %e, "undecodable request answered with 30");
                        if tx.send(frame.reply(answer)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    None => {
                        warn!(listener = %name, %peer, error = %e, "unreadable request: closing the connection");
                        break;
                    }
                }
            }
        };
        // Back-pressure: stop reading while the connection has its maximum in flight.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let engine = engine.clone();
        let ctx = s.ctx.clone();
        let tx = tx.clone();
        let mac = s.mac.clone();
        let certification = s.certification.clone();
        let who = who.clone();
        tasks.spawn(async move {
            let verified = mac.as_ref().is_none_or(|m| m.verify(&frame.payload, &req));
            if let Some(log) = &certification {
                log.record_message(
                    &req,
                    &frame.payload,
                    mac.as_ref().map(|_| verified),
                    engine.clock.now_ms(),
                );
            }
            let answer = if verified {
                match engine.handle(&ctx, &who, &frame.payload, req).await {
                    // Nothing to sign: the bytes the engine encoded (and cached) go as they are.
                    Outcome::Answer { bytes: Some(bytes), sign: None, .. } if mac.is_none() => {
                        let _ = tx.send(frame.reply(bytes)).await;
                        None
                    }
                    Outcome::Answer { msg, sign, .. } => Some((msg, sign.or(mac))),
                    Outcome::Nothing => None,
                }
            } else {
                engine.metrics.format_errors.with_label_values(&[&ctx.name]).inc();
                warn!(listener = %ctx.name, "request MAC missing or wrong: answered 63");
                (!req.mti().is_response()).then(|| {
                    (
                        crate::pipeline::respond::answer(
                            &req,
                            codecs::iso8583::ResponseCode::SECURITY_VIOLATION,
                        ),
                        mac,
                    )
                })
            };
            if let Some((mut m, sign)) = answer {
                let signed = sign.as_ref().and_then(|mac| {
                    mac.sign(&mut m)
                        .map_err(|e| warn!(listener = %ctx.name, error = %e, "cannot sign the answer"))
                        .ok()
                });
                match signed.map_or_else(|| m.encode(), Ok) {
                    Ok(bytes) => {
                        let _ = tx.send(frame.reply(bytes)).await;
                    }
                    Err(e) => warn!(listener = %ctx.name, error = %e, "answer does not encode"),
                }
            }
            drop(permit);
        });
    }
    drop(tx);
    // Answers still being computed keep their clone of the sender; the writer ends after the last.
    let _ = writer_task.await;
}

/// The format-error answer for an undecodable frame, when its MTI, DE 11 and DE 41 can be read.
fn format_error_answer(ctx: &ListenerCtx, payload: Bytes) -> Option<Bytes> {
    codecs::iso8583::reply::format_error(&ctx.spec, payload)?.encode().ok()
}
