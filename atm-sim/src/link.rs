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
use terminal_kit::link::{AnswerError, AnswerKey};
use tokio_util::codec::Encoder;

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
    loop {
        match terminal_kit::link::next_answer(codec, buf, spec, &key) {
            Ok(m) => return Ok(m),
            // A frame that is no message was consumed: the ATM waits on for its own answer.
            Err(AnswerError::Message(_)) => continue,
            Err(AnswerError::Framing(e)) => return Err(LinkError::Framing(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codecs::iso8583::Mti;

    fn msg(spec: &Arc<Spec>, mti: Mti, stan: &str) -> Message {
        let mut m = Message::new(spec.clone(), mti);
        m.set_text(11, stan).expect("DE 11");
        m.set_text(41, "ATM00001").expect("DE 41");
        m
    }

    /// The same matcher as the merchant terminal's, but a frame that is no message is dropped and
    /// the ATM reads on; a stray answer is skipped.
    #[test]
    fn the_atm_drops_what_does_not_decode_and_takes_its_own_answer() {
        let spec = Spec::builtin("network").expect("spec").clone();
        let mut codec = FrameCodec::new(FramingKind::Binary2);
        let mut buf = BytesMut::new();
        codec.encode(Frame::new(bytes::Bytes::from_static(b"\x01\x02garbage")), &mut buf).expect("frame");
        let stray = msg(&spec, Mti::FINANCIAL_RESPONSE, "000999");
        codec.encode(Frame::new(stray.encode().expect("encode")), &mut buf).expect("frame");
        let mine = msg(&spec, Mti::FINANCIAL_RESPONSE, "000007");
        codec.encode(Frame::new(mine.encode().expect("encode")), &mut buf).expect("frame");
        let req = msg(&spec, Mti::FINANCIAL_REQUEST, "000007");
        let got =
            next_answer(&mut codec, &mut buf, &spec, &req).expect("no framing error").expect("an answer");
        assert_eq!(got.text(11).as_deref(), Some("000007"));
        assert!(buf.is_empty());
        // The merchant terminal's use of the same matcher stops at the undecodable frame.
        let mut buf2 = BytesMut::new();
        codec.encode(Frame::new(bytes::Bytes::from_static(b"\x01\x02garbage")), &mut buf2).expect("frame");
        let key = AnswerKey::of(&req);
        assert!(matches!(
            terminal_kit::link::next_answer(&mut codec, &mut buf2, &spec, &key),
            Err(AnswerError::Message(_))
        ));
    }
}
