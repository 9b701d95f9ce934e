//! A terminal's acquirer link: one TCP connection in the listener's framing (with the terminal's
//! TPDU when the framing carries one), a request written whole and its answer waited for until a
//! deadline — matched by the response MTI, DE 11 and DE 41 (docs/network-spec.md §2); anything
//! else that arrives, such as a late answer to a request the terminal gave up on, is skipped.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use codecs::framing::{Frame, FrameCodec, FramingKind, Tpdu};
use codecs::iso8583::{Message, Mti, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};

/// Where a terminal (or the load generator) connects: an acquirer listener's address, the spec
/// its messages are in, and its framing.
#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub spec: Arc<Spec>,
    pub framing: FramingKind,
}

/// How long a terminal tries to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The TPDU a terminal sends when its framing needs one and its configuration names none:
/// protocol ID 60, destination NII 001, originator 000.
pub const DEFAULT_TPDU: Tpdu = Tpdu { id: 0x60, destination: 0x0001, originator: 0x0000 };

/// An open connection to an acquirer listener.
pub struct Link {
    target: Target,
    tpdu: Option<Tpdu>,
    stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
}

impl Link {
    /// Connects to `target` within `timeout`.
    pub async fn connect(target: &Target, tpdu: Option<Tpdu>, timeout: Duration) -> Result<Link> {
        let addr = &target.addr;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Error::Net(format!("connecting to {addr}: {e}"))),
            Err(_) => {
                return Err(Error::Net(format!("connecting to {addr}: no connection within {timeout:?}")));
            }
        };
        stream.set_nodelay(true).map_err(|e| Error::Net(format!("connecting to {addr}: {e}")))?;
        Ok(Link {
            target: target.clone(),
            tpdu,
            stream,
            codec: FrameCodec::new(target.framing),
            buf: BytesMut::new(),
        })
    }

    /// Writes `req` in the listener's framing.
    pub async fn send(&mut self, req: &Message) -> Result<()> {
        let payload = req.encode().map_err(|e| Error::invalid("request", e.to_string()))?;
        let frame = if self.target.framing.has_tpdu() {
            Frame::with_tpdu(self.tpdu.unwrap_or(DEFAULT_TPDU), payload)
        } else {
            Frame::new(payload)
        };
        let mut out = BytesMut::new();
        self.codec.encode(frame, &mut out).map_err(|e| Error::invalid("framing", e.to_string()))?;
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| Error::Net(format!("writing to {}: {e}", self.target.addr)))
    }

    /// The answer to `req` (already sent), or None when none came within `timeout` (a zero
    /// timeout does not wait at all).
    pub async fn answer(&mut self, req: &Message, timeout: Duration) -> Result<Option<Message>> {
        if timeout.is_zero() {
            return Ok(None);
        }
        let key = AnswerKey::of(req);
        let addr = self.target.addr.clone();
        let wait = async {
            loop {
                match next_answer(&mut self.codec, &mut self.buf, &self.target.spec, &key) {
                    Ok(Some(m)) => return Ok(m),
                    Ok(None) => {}
                    Err(AnswerError::Framing(e)) => {
                        return Err(Error::Net(format!("framing from {addr}: {e}")));
                    }
                    Err(AnswerError::Message(e)) => {
                        return Err(Error::Net(format!("an answer from {addr}: {e}")));
                    }
                }
                let mut chunk = [0u8; 8192];
                let n = self
                    .stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| Error::Net(format!("reading from {addr}: {e}")))?;
                if n == 0 {
                    return Err(Error::Net(format!("{addr} closed the connection without an answer")));
                }
                self.buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// [`Link::send`] then [`Link::answer`].
    pub async fn call(&mut self, req: &Message, timeout: Duration) -> Result<Option<Message>> {
        self.send(req).await?;
        self.answer(req, timeout).await
    }
}

/// What identifies the answer to a request: the response MTI, DE 11 and DE 41.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerKey {
    pub mti: Option<Mti>,
    pub stan: Option<String>,
    pub tid: Option<String>,
}

impl AnswerKey {
    /// The key of the answer to `req`.
    pub fn of(req: &Message) -> AnswerKey {
        let key = |de: u16| req.text(de).map(|t| t.into_owned());
        AnswerKey { mti: req.mti().response(), stan: key(11), tid: key(41) }
    }

    /// Whether `m` is that answer.
    pub fn matches(&self, m: &Message) -> bool {
        let key = |de: u16| m.text(de).map(|t| t.into_owned());
        self.mti == Some(m.mti()) && key(11) == self.stan && key(41) == self.tid
    }
}

/// Why no answer could be taken from the bytes received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The stream's framing is broken: nothing after it can be trusted.
    #[error("{0}")]
    Framing(String),
    /// A whole frame that is no message of the spec (consumed: the next call reads on).
    #[error("{0}")]
    Message(String),
}

/// The answer to `key` among the whole frames buffered in `buf` (sans-IO: the bytes come from the
/// switch and are untrusted); frames answering something else are consumed and skipped. `Ok(None)`
/// when more bytes are needed. The one matcher of every terminal: the merchant terminal stops at a
/// frame that does not decode ([`AnswerError::Message`]), the ATM drops it and reads on.
pub fn next_answer(
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    spec: &Arc<Spec>,
    key: &AnswerKey,
) -> std::result::Result<Option<Message>, AnswerError> {
    while let Some(f) = codec.decode(buf).map_err(|e| AnswerError::Framing(e.to_string()))? {
        let m = Message::decode(spec, f.payload).map_err(|e| AnswerError::Message(e.to_string()))?;
        if key.matches(&m) {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use codecs::framing::FramingKind;

    fn msg(spec: &std::sync::Arc<Spec>, mti: Mti, stan: &str) -> Message {
        let mut m = Message::new(spec.clone(), mti);
        m.set_text(11, stan).expect("DE 11");
        m.set_text(41, "TERM0001").expect("DE 41");
        m
    }

    #[tokio::test]
    async fn answers_are_matched_and_a_silent_host_is_no_answer() {
        let spec = Spec::builtin("network").expect("spec").clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let host_spec = spec.clone();
        // A host that answers STAN 000002 with a stray answer first, and never answers 000003.
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut codec = FrameCodec::new(FramingKind::Binary2Tpdu);
            let mut buf = BytesMut::new();
            loop {
                let mut chunk = [0u8; 4096];
                let Ok(n) = s.read(&mut chunk).await else { return };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Ok(Some(f)) = codec.decode(&mut buf) {
                    assert_eq!(f.tpdu, Some(DEFAULT_TPDU));
                    let m = Message::decode(&host_spec, f.payload.clone()).expect("request");
                    if m.text(11).as_deref() == Some("000003") {
                        continue;
                    }
                    let mut out = BytesMut::new();
                    for stan in ["000999", "000002"] {
                        let a = msg(&host_spec, Mti::AUTHORIZATION_RESPONSE, stan);
                        codec.encode(f.reply(a.encode().expect("encode")), &mut out).expect("frame");
                    }
                    s.write_all(&out).await.expect("write");
                }
            }
        });
        let target = Target { addr, spec: spec.clone(), framing: FramingKind::Binary2Tpdu };
        let mut link = Link::connect(&target, None, Duration::from_secs(5)).await.expect("connect");
        let req = msg(&spec, Mti::AUTHORIZATION_REQUEST, "000002");
        let a = link.call(&req, Duration::from_secs(5)).await.expect("call").expect("an answer");
        assert_eq!(a.text(11).as_deref(), Some("000002"), "the stray answer was skipped");
        let silent = msg(&spec, Mti::AUTHORIZATION_REQUEST, "000003");
        assert!(link.call(&silent, Duration::from_millis(200)).await.expect("call").is_none());
    }
}
