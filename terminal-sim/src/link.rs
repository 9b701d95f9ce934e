//! A terminal's acquirer link for one transaction: connect, write the request in the listener's
//! framing (with the terminal's TPDU when the framing carries one), and wait for its answer —
//! matched by the response MTI, DE 11 and DE 41 (docs/network-spec.md §2); anything else that
//! arrives on the connection is skipped.

use std::time::Duration;

use bytes::BytesMut;
use codecs::framing::{Frame, FrameCodec, Tpdu};
use codecs::iso8583::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};
use crate::load::Target;

/// The TPDU a terminal sends when its framing needs one and its configuration names none:
/// protocol ID 60, destination NII 001, originator 000.
pub const DEFAULT_TPDU: Tpdu = Tpdu { id: 0x60, destination: 0x0001, originator: 0x0000 };

/// Sends `req` to `target` and returns its answer, or why there is none within `timeout`.
pub async fn exchange(
    target: &Target,
    tpdu: Option<Tpdu>,
    req: &Message,
    timeout: Duration,
) -> Result<Message> {
    let net = |what: &str, e: &dyn std::fmt::Display| Error::Net(format!("{what} {}: {e}", target.addr));
    let payload = req.encode().map_err(|e| Error::invalid("request", e.to_string()))?;
    let frame = if target.framing.has_tpdu() {
        Frame::with_tpdu(tpdu.unwrap_or(DEFAULT_TPDU), payload)
    } else {
        Frame::new(payload)
    };
    let mut codec = FrameCodec::new(target.framing);
    let mut out = BytesMut::new();
    codec.encode(frame, &mut out).map_err(|e| Error::invalid("framing", e.to_string()))?;
    let want_mti = req.mti().response();
    let key = |m: &Message, de: u16| m.text(de).map(|t| t.into_owned());
    let (stan, tid) = (key(req, 11), key(req, 41));

    let run = async {
        let mut stream = TcpStream::connect(&target.addr).await.map_err(|e| net("connecting to", &e))?;
        stream.set_nodelay(true).map_err(|e| net("connecting to", &e))?;
        stream.write_all(&out).await.map_err(|e| net("writing to", &e))?;
        let mut buf = BytesMut::new();
        loop {
            while let Some(f) = codec.decode(&mut buf).map_err(|e| net("framing from", &e))? {
                let m = Message::decode(&target.spec, f.payload).map_err(|e| net("an answer from", &e))?;
                if Some(m.mti()) == want_mti && key(&m, 11) == stan && key(&m, 41) == tid {
                    return Ok(m);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.map_err(|e| net("reading from", &e))?;
            if n == 0 {
                return Err(Error::Net(format!("{} closed the connection without an answer", target.addr)));
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => {
            Err(Error::Net(format!("no answer from {} within {} ms", target.addr, timeout.as_millis())))
        }
    }
}
