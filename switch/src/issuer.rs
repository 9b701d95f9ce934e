//! Issuer links: persistent TCP connections to each issuer (several per issuer), signed on with an
//! 0800 (DE 70 = 001) and kept alive with echoes (301), carrying many requests at once.
//!
//! A request is registered in [`PendingRequests`] under its MTI class, DE 11 and DE 41 before it is
//! written; the reader task hands each answer to the request it matches (DE 37 must agree too). An
//! answer that matches nothing — late, after the request timed out, or wrong — is counted and
//! logged without card data, and never delivered to anyone. A request that is not answered within
//! the link's timeout is reported as [`LinkError::Timeout`]: the caller answers the acquirer and
//! owes the issuer a reversal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use codecs::framing::{FrameCodec, FramingKind};
use codecs::iso8583::{Message, Mti, Spec};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::macing::LinkMac;
use crate::metrics::Metrics;
use crate::pending::{PendingError, PendingRequests};
use crate::tls::Stream;
use crate::wire;

/// Why a request got no answer from the issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// No connection to the issuer is up (stand-in may decide).
    Down,
    /// Sent, not answered in time: the issuer may have acted on it.
    Timeout,
    /// The same MTI class, STAN and terminal ID is already outstanding on this issuer.
    Duplicate,
    /// The message could not be encoded for the link.
    Encode,
    /// Not sent: the switch could not make durable what the issuer would have seen.
    NotSent,
}

/// How one issuer is reached.
#[derive(Clone)]
pub struct LinkSettings {
    pub name: Arc<str>,
    pub addrs: Vec<String>,
    pub connections: u32,
    pub spec: Arc<Spec>,
    pub framing: FramingKind,
    pub timeout: Duration,
    pub echo_interval: Duration,
    pub sign_on: bool,
    /// TLS to the issuer: the connector and the name its certificate must carry.
    pub tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    /// Message MACs on the link: requests signed, answers verified.
    pub mac: Option<LinkMac>,
}

struct Connection {
    up: AtomicBool,
    tx: std::sync::Mutex<Option<mpsc::Sender<Bytes>>>,
}

/// The links to one issuer.
pub struct IssuerPool {
    settings: LinkSettings,
    conns: Vec<Arc<Connection>>,
    next: AtomicUsize,
    pending: Arc<PendingRequests<Message>>,
    metrics: Arc<Metrics>,
    stan: AtomicU32,
    /// Signalled when a connection comes up (the SAF worker wakes on it).
    pub came_up: Arc<Notify>,
}

impl IssuerPool {
    /// Starts the connection supervisors; they run until `shutdown`.
    pub fn start(settings: LinkSettings, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Arc<Self> {
        let n = settings.connections.max(1) as usize;
        let pool = Arc::new(IssuerPool {
            conns: (0..n)
                .map(|_| Arc::new(Connection { up: AtomicBool::new(false), tx: std::sync::Mutex::new(None) }))
                .collect(),
            next: AtomicUsize::new(0),
            pending: Arc::new(PendingRequests::default()),
            metrics,
            stan: AtomicU32::new(0),
            came_up: Arc::new(Notify::new()),
            settings,
        });
        for i in 0..n {
            let p = pool.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { p.supervise(i, stop).await });
        }
        pool
    }

    pub fn name(&self) -> &Arc<str> {
        &self.settings.name
    }

    pub fn spec(&self) -> &Arc<Spec> {
        &self.settings.spec
    }

    /// Whether at least one connection is up and signed on.
    pub fn is_up(&self) -> bool {
        self.conns.iter().any(|c| c.up.load(Ordering::Acquire))
    }

    fn up_count(&self) -> i64 {
        self.conns.iter().filter(|c| c.up.load(Ordering::Acquire)).count() as i64
    }

    /// Sends a request (already in the link's spec) and waits for its answer.
    pub async fn request(&self, msg: &Message) -> Result<Message, LinkError> {
        self.request_with_timeout(msg, self.settings.timeout).await
    }

    pub async fn request_with_timeout(&self, msg: &Message, timeout: Duration) -> Result<Message, LinkError> {
        let tx = self.pick().ok_or(LinkError::Down)?;
        self.send_on(&tx, msg, timeout).await
    }

    async fn send_on(
        &self,
        tx: &mpsc::Sender<Bytes>,
        msg: &Message,
        timeout: Duration,
    ) -> Result<Message, LinkError> {
        let key = wire::match_key(msg).ok_or(LinkError::Encode)?;
        let bytes = match &self.settings.mac {
            None => msg.encode().map_err(|_| LinkError::Encode)?,
            Some(mac) => mac.sign(&mut msg.clone()).map_err(|_| LinkError::Encode)?,
        };
        let rrn = msg.bytes(37);
        let rx = self.pending.register(key.clone(), rrn).map_err(|e| match e {
            PendingError::AlreadyPending => LinkError::Duplicate,
        })?;
        if tx.send(bytes).await.is_err() {
            self.pending.cancel(&key);
            return Err(LinkError::Down);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            // The connection died with the request on it: it may or may not have reached the issuer.
            Ok(Err(_)) => Err(LinkError::Timeout),
            Err(_) => {
                self.pending.cancel(&key);
                self.metrics.issuer_timeouts.with_label_values(&[&self.settings.name]).inc();
                Err(LinkError::Timeout)
            }
        }
    }

    fn pick(&self) -> Option<mpsc::Sender<Bytes>> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|k| {
            let c = &self.conns[(start + k) % n];
            if !c.up.load(Ordering::Acquire) {
                return None;
            }
            c.tx.lock().unwrap_or_else(|p| p.into_inner()).clone()
        })
    }

    /// A network-management request of the switch's own (sign-on, echo).
    fn network_request(&self, code: &str) -> Option<Message> {
        let mut m = Message::new(self.settings.spec.clone(), Mti::NETWORK_MANAGEMENT_REQUEST);
        let stan = self.stan.fetch_add(1, Ordering::Relaxed) % 999_999 + 1;
        m.set_text(11, &format!("{stan:06}")).ok()?;
        m.set_text(70, code).ok()?;
        Some(m)
    }

    async fn supervise(self: Arc<Self>, i: usize, stop: CancellationToken) {
        let conn = self.conns[i].clone();
        let mut backoff = Duration::from_millis(100);
        let name = self.settings.name.clone();
        while !stop.is_cancelled() {
            let addr = &self.settings.addrs[i % self.settings.addrs.len().max(1)];
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                s = TcpStream::connect(addr.as_str()) => s,
            };
            match stream {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let stream = match &self.settings.tls {
                        None => Stream::Plain(stream),
                        Some((connector, server_name)) => {
                            let hs = connector.connect(server_name.clone(), stream);
                            match tokio::time::timeout(self.settings.timeout, hs).await {
                                Ok(Ok(s)) => Stream::Client(Box::new(s)),
                                Ok(Err(e)) => {
                                    warn!(issuer = %name, conn = i, error = %e, "TLS handshake with the issuer failed");
                                    tokio::time::sleep(backoff).await;
                                    backoff = (backoff * 2).min(Duration::from_secs(5));
                                    continue;
                                }
                                Err(_) => {
                                    warn!(issuer = %name, conn = i, "TLS handshake with the issuer timed out");
                                    continue;
                                }
                            }
                        }
                    };
                    debug!(issuer = %name, conn = i, "connected");
                    backoff = Duration::from_millis(100);
                    self.run_connection(&conn, stream, &stop).await;
                    conn.up.store(false, Ordering::Release);
                    *conn.tx.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.metrics.issuer_up.with_label_values(&[&name]).set(self.up_count());
                    if !stop.is_cancelled() {
                        warn!(issuer = %name, conn = i, "issuer connection lost");
                    }
                }
                Err(e) => debug!(issuer = %name, conn = i, error = %e, "connect failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn run_connection(&self, conn: &Arc<Connection>, stream: Stream, stop: &CancellationToken) {
        let (rd, wr) = tokio::io::split(stream);
        let codec = FrameCodec::new(self.settings.framing);
        let mut reader = FramedRead::new(rd, codec);
        let mut writer = FramedWrite::new(wr, codec);
        let (tx, mut rx) = mpsc::channel::<Bytes>(4096);
        let link_stop = stop.child_token();
        // Writer: batches whatever is queued into one flush.
        let w_stop = link_stop.clone();
        let writer_task = tokio::spawn(async move {
            // The requests forwarded together leave in one write.
            tokio::select! {
                _ = w_stop.cancelled() => {}
                _ = crate::outbox::write_queued(&mut writer, &mut rx) => {}
            }
            w_stop.cancel();
        });
        *conn.tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
        // Reader runs beside the sign-on so that the 0810 can be matched.
        let r_stop = link_stop.clone();
        let pending = self.pending.clone();
        let metrics = self.metrics.clone();
        let spec = self.settings.spec.clone();
        let name = self.settings.name.clone();
        let reply_tx = tx.clone();
        let mac = self.settings.mac.clone();
        let reader_task = tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    _ = r_stop.cancelled() => break,
                    f = reader.next() => f,
                };
                let Some(Ok(frame)) = frame else { break };
                let raw = frame.payload.clone();
                let msg = match Message::decode(&spec, frame.payload) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(issuer = %name, error = %e, "undecodable message from issuer dropped");
                        metrics.unmatched.with_label_values(&[&name]).inc();
                        continue;
                    }
                };
                if let Some(m) = &mac
                    && !m.verify(&raw, &msg)
                {
                    warn!(issuer = %name, "message from the issuer with a missing or wrong MAC dropped");
                    metrics.unmatched.with_label_values(&[&name]).inc();
                    continue;
                }
                if !msg.mti().is_response() {
                    // The issuer's own network management (echo, sign-on): answered here.
                    if msg.mti().class() == 8 {
                        let mut rsp =
                            crate::pipeline::respond::answer(&msg, codecs::iso8583::ResponseCode::APPROVED);
                        let wire = match &mac {
                            Some(m) => m.sign(&mut rsp).ok(),
                            None => rsp.encode().ok(),
                        };
                        if let Some(b) = wire {
                            let _ = reply_tx.send(b).await;
                        }
                    }
                    continue;
                }
                let Some(key) = wire::match_key(&msg) else {
                    metrics.unmatched.with_label_values(&[&name]).inc();
                    continue;
                };
                let rrn = msg.bytes(37);
                if let Err((why, _)) = pending.resolve(&key, rrn.as_deref(), msg) {
                    metrics.unmatched.with_label_values(&[&name]).inc();
                    warn!(issuer = %name, reason = ?why, "issuer answer matched no outstanding request");
                }
            }
            r_stop.cancel();
        });
        // Sign on on this very connection, then take traffic.
        let signed_on = !self.settings.sign_on || self.network_exchange(&tx, "001").await;
        if signed_on {
            conn.up.store(true, Ordering::Release);
            self.metrics.issuer_up.with_label_values(&[&self.settings.name]).set(self.up_count());
            info!(issuer = %self.settings.name, "issuer link up");
            self.came_up.notify_waiters();
            // Echo keep-alive until the link drops.
            loop {
                tokio::select! {
                    _ = link_stop.cancelled() => break,
                    _ = tokio::time::sleep(self.settings.echo_interval) => {
                        if !self.network_exchange(&tx, "301").await {
                            warn!(issuer = %self.settings.name, "echo unanswered: dropping the connection");
                            break;
                        }
                    }
                }
            }
        } else {
            warn!(issuer = %self.settings.name, "sign-on refused or unanswered");
        }
        conn.up.store(false, Ordering::Release);
        link_stop.cancel();
        let _ = writer_task.await;
        let _ = reader_task.await;
    }

    /// Sends an 0800 with DE 70 = `code`; true when answered 0810 with DE 39 = 00.
    async fn network_exchange(&self, tx: &mpsc::Sender<Bytes>, code: &str) -> bool {
        let Some(m) = self.network_request(code) else { return false };
        match self.send_on(tx, &m, self.settings.timeout).await {
            Ok(a) => a.mti() == Mti::NETWORK_MANAGEMENT_RESPONSE && a.text(39).as_deref() == Some("00"),
            Err(_) => false,
        }
    }
}
