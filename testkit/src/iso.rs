//! The tests' ISO 8583 client: one framed connection to a listener, messages or raw payloads out,
//! frames back (a bounded wait: a test never hangs on a silent server).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

/// How long [`Client::recv_raw`] waits for a frame.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A framed client connection.
pub struct Client {
    pub stream: TcpStream,
    pub codec: FrameCodec,
    pub buf: BytesMut,
    pub spec: Arc<Spec>,
}

impl Client {
    /// Connects to `addr` (`host:port`), framing and built-in spec by name.
    pub async fn connect(addr: &str, framing: FramingKind, spec: &str) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            codec: FrameCodec::new(framing),
            buf: BytesMut::new(),
            spec: Spec::builtin(spec).expect("spec").clone(),
        }
    }

    /// [`Client::connect`] by host and port.
    pub async fn connect_to(host: &str, port: u16, framing: FramingKind, spec: &str) -> Client {
        Client::connect(&format!("{host}:{port}"), framing, spec).await
    }

    pub async fn send_raw(&mut self, payload: &[u8]) {
        let mut out = BytesMut::new();
        self.codec.encode(Frame::new(Bytes::copy_from_slice(payload)), &mut out).expect("frame");
        self.stream.write_all(&out).await.expect("write");
    }

    pub async fn send(&mut self, m: &Message) {
        let b = m.encode().expect("encode");
        self.send_raw(&b).await;
    }

    /// Several messages in one write.
    pub async fn send_many(&mut self, ms: &[Message]) {
        let mut out = BytesMut::new();
        for m in ms {
            self.codec.encode(Frame::new(m.encode().expect("encode")), &mut out).expect("frame");
        }
        self.stream.write_all(&out).await.expect("write");
    }

    /// The next frame, or `None` when the connection closed.
    pub async fn recv_raw(&mut self) -> Option<Bytes> {
        loop {
            if let Some(f) = self.codec.decode(&mut self.buf).expect("frame") {
                return Some(f.payload);
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(ANSWER_WITHIN, self.stream.read(&mut chunk))
                .await
                .expect("answer in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn recv(&mut self) -> Message {
        let b = self.recv_raw().await.expect("an answer (the connection closed)");
        Message::decode(&self.spec, b).expect("answer decodes")
    }

    pub async fn call(&mut self, m: &Message) -> Message {
        self.send(m).await;
        self.recv().await
    }
}
