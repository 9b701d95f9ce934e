//! The ATM's connection to the switch's acquirer listener: one TCP connection, the listener's
//! framing (`2-byte-binary` for the `network` spec), a request written whole and its answer
//! waited for until a deadline. The answer is matched by its response MTI and DE 11 (and DE 41);
//! anything else that arrives — a late answer to a request the ATM already gave up on — is
//! dropped. Blocking I/O: an ATM does one thing at a time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use terminal_kit::link::AnswerKey;
use tokio_util::codec::{Decoder, Encoder};

/// Where the switch listens: a ports-file endpoint.
pub use terminal_kit::ports::Endpoint;

/// Why the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("switch connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("endpoint: {0}")]
    Endpoint(String),
    #[error("message: {0}")]
    Codec(#[from] codecs::Error),
    #[error("framing: {0}")]
    Framing(String),
}

pub struct SwitchLink {
    endpoint: Endpoint,
    /// The network's other switch nodes, in order: a reconnection after a broken link goes to
    /// the next one (the node may have died), as an ATM configured with several hosts does.
    others: Vec<Endpoint>,
    connect_timeout: Duration,
    stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
    spec: Arc<Spec>,
}

impl SwitchLink {
    /// Connects to `ep` (within `timeout`).
    pub fn connect(ep: &Endpoint, timeout: Duration) -> Result<Self, LinkError> {
        let spec = Spec::builtin(&ep.spec)
            .ok_or_else(|| LinkError::Endpoint(format!("spec {:?} is not a built-in spec", ep.spec)))?
            .clone();
        let framing: FramingKind = ep
            .framing
            .parse()
            .map_err(|_| LinkError::Endpoint(format!("framing {:?} unknown", ep.framing)))?;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(ep.host.as_str(), ep.port))?
            .next()
            .ok_or_else(|| LinkError::Endpoint(format!("{}:{} does not resolve", ep.host, ep.port)))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        Ok(SwitchLink {
            endpoint: ep.clone(),
            others: Vec::new(),
            connect_timeout: timeout,
            stream,
            codec: FrameCodec::new(framing),
            buf: BytesMut::new(),
            spec,
        })
    }

    /// Connects to the first of `nodes` that answers (within `timeout` each); the others are
    /// where [`SwitchLink::reconnect`] fails over to.
    pub fn connect_any(nodes: &[Endpoint], timeout: Duration) -> Result<Self, LinkError> {
        let mut last = LinkError::Endpoint("no switch endpoint".into());
        for (i, ep) in nodes.iter().enumerate() {
            match SwitchLink::connect(ep, timeout) {
                Ok(mut l) => {
                    l.others = nodes.iter().skip(i + 1).chain(nodes.iter().take(i)).cloned().collect();
                    return Ok(l);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A new connection after the old one broke, to the next switch node when there are several
    /// (else the same endpoint); buffered bytes are dropped.
    pub fn reconnect(&mut self) -> Result<(), LinkError> {
        let mut order: Vec<Endpoint> = self.others.clone();
        order.push(self.endpoint.clone());
        *self = SwitchLink::connect_any(&order, self.connect_timeout)?;
        Ok(())
    }

    /// The spec messages are built in.
    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    /// Writes one message.
    pub fn send(&mut self, m: &Message) -> Result<(), LinkError> {
        let mut out = BytesMut::new();
        self.codec
            .encode(Frame::new(m.encode()?), &mut out)
            .map_err(|e| LinkError::Framing(e.to_string()))?;
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// The answer to `req` (response MTI, same DE 11 and DE 41), or `None` at `deadline`.
    pub fn answer_to(&mut self, req: &Message, deadline: Instant) -> Result<Option<Message>, LinkError> {
        loop {
            if let Some(m) = next_answer(&mut self.codec, &mut self.buf, &self.spec, req)? {
                return Ok(Some(m));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `req` and waits for its answer until `timeout`.
    pub fn call(&mut self, req: &Message, timeout: Duration) -> Result<Option<Message>, LinkError> {
        self.send(req)?;
        self.answer_to(req, Instant::now() + timeout)
    }
}

/// The answer to `req` (response MTI, same DE 11 and DE 41: the terminals' [`AnswerKey`]) among the
/// whole frames buffered in `buf` (sans-IO: the bytes come from the switch and are untrusted).
/// Frames that do not decode as a message of `spec`, or answer something else, are consumed and
/// dropped; `Ok(None)` when more bytes are needed; an error only when the framing itself is broken.
pub fn next_answer(
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    spec: &Arc<Spec>,
    req: &Message,
) -> Result<Option<Message>, LinkError> {
    let key = AnswerKey::of(req);
    while let Some(f) = codec.decode(buf).map_err(|e| LinkError::Framing(e.to_string()))? {
        let Ok(m) = Message::decode(spec, f.payload) else { continue };
        if key.matches(&m) {
            return Ok(Some(m));
        }
    }
    Ok(None)
}
