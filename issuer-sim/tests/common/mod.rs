//! The switch's end of a link to the issuer simulator, for the tests that drive it over TCP.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// A framed `network` connection: messages or raw payloads out, answers in.
pub struct Link {
    pub framed: Framed<TcpStream, FrameCodec>,
    pub spec: Arc<Spec>,
}

impl Link {
    pub async fn connect(addr: &str) -> Link {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Link {
            framed: Framed::new(stream, FrameCodec::new(FramingKind::Binary2)),
            spec: Spec::builtin("network").expect("spec").clone(),
        }
    }

    pub async fn send(&mut self, m: &Message) {
        self.send_raw(m.encode().expect("encode")).await;
    }

    pub async fn send_raw(&mut self, payload: Bytes) {
        self.framed.send(Frame::new(payload)).await.expect("send");
    }

    /// The next answer's raw frame, or `None` on timeout; panics if the connection closed.
    pub async fn recv_frame(&mut self, wait: Duration) -> Option<Frame> {
        match tokio::time::timeout(wait, self.framed.next()).await {
            Err(_) => None,
            Ok(Some(Ok(f))) => Some(f),
            Ok(other) => panic!("connection ended: {other:?}"),
        }
    }

    /// The next answer as it arrived, and decoded.
    pub async fn recv_raw(&mut self) -> (Bytes, Message) {
        let f = self.recv_frame(Duration::from_secs(10)).await.expect("an answer in time");
        let m = Message::decode(&self.spec, f.payload.clone()).expect("the answer decodes");
        (f.payload, m)
    }

    pub async fn recv(&mut self) -> Message {
        self.recv_raw().await.1
    }

    pub async fn call(&mut self, m: &Message) -> Message {
        self.send(m).await;
        self.recv().await
    }

    /// Sends `m`; the answer as it arrived, and decoded.
    pub async fn call_raw(&mut self, m: &Message) -> (Bytes, Message) {
        self.send(m).await;
        self.recv_raw().await
    }

    /// Sends `payload`; the answer as it arrived, and decoded.
    pub async fn exchange(&mut self, payload: Bytes) -> (Bytes, Message) {
        self.send_raw(payload).await;
        self.recv_raw().await
    }
}

pub fn rc(m: &Message) -> String {
    m.text(39).map(|c| c.into_owned()).unwrap_or_default()
}
