//! End-to-end test support: framed clients, and the terminal-sim POS functions (chip requests with
//! the card's real cryptogram, the card's ARPC check) applied to the ports file's test cards.
#![allow(dead_code)]

pub mod process;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use issuer_sim::cards::ClearTestCard;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

pub struct Client {
    pub stream: TcpStream,
    pub codec: FrameCodec,
    pub buf: BytesMut,
    pub spec: std::sync::Arc<Spec>,
}

impl Client {
    pub async fn connect(host: &str, port: u16, framing: FramingKind, spec: &str) -> Client {
        let stream = TcpStream::connect((host, port)).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            codec: FrameCodec::new(framing),
            buf: BytesMut::new(),
            spec: Spec::builtin(spec).expect("spec").clone(),
        }
    }

    pub async fn send(&mut self, m: &Message) {
        let mut out = BytesMut::new();
        self.codec.encode(Frame::new(m.encode().expect("encode")), &mut out).expect("frame");
        self.stream.write_all(&out).await.expect("write");
    }

    pub async fn send_many(&mut self, ms: &[Message]) {
        let mut out = BytesMut::new();
        for m in ms {
            self.codec.encode(Frame::new(m.encode().expect("encode")), &mut out).expect("frame");
        }
        self.stream.write_all(&out).await.expect("write");
    }

    pub async fn recv(&mut self) -> Message {
        loop {
            if let Some(f) = self.codec.decode(&mut self.buf).expect("frame") {
                return Message::decode(&self.spec, f.payload).expect("answer decodes");
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk))
                .await
                .expect("answer in time")
                .expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn call(&mut self, m: &Message) -> Message {
        self.send(m).await;
        self.recv().await
    }
}

pub use terminal_kit::pos::Tx;

/// A client on the in-process network's binary acquirer listener.
pub async fn acquirer_client(net: &paynet::network::Network) -> Client {
    Client::connect(&net.ports.acquirer.host, net.ports.acquirer.port, FramingKind::Binary2, "network").await
}

/// The issuer simulator's open-to-buy of `pan`.
pub fn otb(net: &paynet::network::Network, pan: &str) -> u64 {
    net.issuer_state.issuer.lock().expect("issuer").open_to_buy(pan).expect("card")
}

/// Waits (up to 10 s) until `f` holds.
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The ports file's card as a terminal sees it.
pub fn card(c: &ClearTestCard) -> terminal_kit::pos::TestCard {
    serde_json::from_value(serde_json::to_value(c).expect("json")).expect("card")
}

/// A contactless chip 0100 for `card`, its ARQC computed from the card's ICC master key.
pub fn chip_request(spec: &str, c: &ClearTestCard, tx: &Tx) -> Message {
    terminal_kit::pos::chip_request(Spec::builtin(spec).expect("spec"), &card(c), tx).expect("request")
}

/// Checks tag 91 of an answer as the card would.
pub fn card_accepts_arpc(c: &ClearTestCard, req: &Message, rsp: &Message) -> bool {
    terminal_kit::pos::card_accepts_arpc(&card(c), req, rsp)
}

pub fn rc(m: &Message) -> String {
    m.text(39).map(|c| c.into_owned()).unwrap_or_default()
}

pub fn bytes_of(m: &Message) -> Bytes {
    m.encode().expect("encode")
}

/// `POST base+path` with a JSON body and `Authorization: Bearer auth`: the answer's JSON body
/// (`null` when it has none).
pub async fn post(base: &str, path: &str, auth: &str, body: &str) -> serde_json::Value {
    let body: serde_json::Value = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).expect("a JSON body")
    };
    wallet_sim::providers::http::post(base, path, Some(auth), &body).await.expect("POST").body
}

/// A Visa-style contactless card profile (PSN 00, ATC 0) for a test card with these keys.
pub fn profile(pan: &str, expiry: &str, cvn: &str, keys: emv::card::CardKeys) -> emv::card::CardProfile {
    emv::card::CardProfile {
        pan: pan.into(),
        expiry: expiry.into(),
        psn: "00".into(),
        cvn: cvn.into(),
        aid: "A0000000031010".into(),
        label: "PAYNET CREDIT".into(),
        keys,
        atc: 0,
    }
}
