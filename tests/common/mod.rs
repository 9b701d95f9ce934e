//! End-to-end test support: a terminal's side of the wire — contactless chip requests with real
//! cryptograms computed from a test card's ICC master key (as the card would), framed clients, and
//! the ARPC check a card makes on the answer.
#![allow(dead_code)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use codecs::tlv::{Tag, TlvBuilder};
use crypto::emv::{ArpcInput, Atc, CardInputs, Cvn, PanDigits, Psn, UnpredictableNumber, ac_data_from_tags};
use crypto::keys::TdesKey;
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

/// What varies between test transactions.
#[derive(Debug, Clone)]
pub struct Tx {
    pub stan: u32,
    pub amount: u64,
    pub atc: u16,
    pub processing_code: &'static str,
    pub tid: String,
}

impl Tx {
    pub fn purchase(stan: u32, amount: u64, atc: u16) -> Tx {
        Tx { stan, amount, atc, processing_code: "000000", tid: "TERM0001".into() }
    }
}

/// Visa-style IAD for CVN 18: length 06, DKI 01, CVN 12, CVR 03A00000.
const IAD: &str = "06011203A00000";

/// A contactless chip 0100 (DE 22 = 071) for `card`, its ARQC computed from the card's ICC master
/// key over the data of the card's CVN.
pub fn chip_request(spec: &str, card: &ClearTestCard, tx: &Tx) -> Message {
    let spec = Spec::builtin(spec).expect("spec");
    let cvn: Cvn = card.cvn.parse().expect("cvn");
    let un = UnpredictableNumber([(tx.stan >> 8) as u8, tx.stan as u8, 0x5A, 0xC3]);
    let tags: Vec<(u32, Vec<u8>)> = vec![
        (0x9F02, hex::decode(format!("{:012}", tx.amount)).expect("hex")),
        (0x9F03, vec![0; 6]),
        (0x9F1A, vec![0x02, 0x50]),
        (0x95, vec![0; 5]),
        (0x5F2A, vec![0x09, 0x78]),
        (0x9A, vec![0x26, 0x11, 0x25]),
        (0x9C, vec![if tx.processing_code.starts_with("31") { 0x31 } else { 0x00 }]),
        (0x9F37, un.0.to_vec()),
        (0x82, vec![0x20, 0x00]),
        (0x9F36, tx.atc.to_be_bytes().to_vec()),
        (0x9F10, hex::decode(IAD).expect("hex")),
    ];
    let data = ac_data_from_tags(cvn, |t| tags.iter().find(|(k, _)| *k == t).map(|(_, v)| v.as_slice()))
        .expect("data");
    let icc_mk = TdesKey::from_hex("icc_mk", &card.icc_mk).expect("icc mk");
    let pan = PanDigits::new(&card.pan).expect("pan");
    let inputs =
        CardInputs { pan: &pan, psn: card.psn.parse::<Psn>().expect("psn"), atc: Atc(tx.atc), un: Some(un) };
    let arqc = cvn.card_ac(&icc_mk, &inputs, &data).expect("arqc");
    let mut icc = TlvBuilder::new();
    icc.primitive(Tag::new(0x9F26), &arqc).expect("tlv");
    icc.primitive(Tag::new(0x9F27), &[0x80]).expect("tlv");
    for (t, v) in &tags {
        icc.primitive(Tag::new(*t), v).expect("tlv");
    }
    let mut m = Message::new(spec.clone(), codecs::iso8583::Mti::AUTHORIZATION_REQUEST);
    let set =
        |m: &mut Message, de: u16, v: &str| m.set_text(de, v).unwrap_or_else(|e| panic!("DE {de}: {e}"));
    set(&mut m, 2, &card.pan);
    set(&mut m, 3, tx.processing_code);
    set(&mut m, 4, &format!("{:012}", tx.amount));
    set(&mut m, 7, &format!("1125{:06}", tx.stan % 1_000_000));
    set(&mut m, 11, &format!("{:06}", tx.stan % 1_000_000));
    set(&mut m, 12, "101010");
    set(&mut m, 13, "1125");
    set(&mut m, 14, &card.expiry);
    set(&mut m, 18, "5411");
    set(&mut m, 22, "071");
    set(&mut m, 23, &format!("0{}", card.psn));
    set(&mut m, 25, "00");
    set(&mut m, 37, &format!("533014{:06}", tx.stan % 1_000_000));
    set(&mut m, 41, &tx.tid);
    set(&mut m, 42, "MERCHANT0000001");
    set(&mut m, 49, "978");
    m.set_icc_data(&icc.finish()).expect("DE 55");
    m
}

/// Checks tag 91 of an answer as the card would: ARPC method 2 (visa18) ‖ CSU.
pub fn card_accepts_arpc(card: &ClearTestCard, req: &Message, rsp: &Message) -> bool {
    let Ok(Some(icc)) = rsp.icc_data() else { return false };
    let Ok(nodes) = codecs::tlv::decode_lenient(&icc) else { return false };
    let Some(t91) = nodes.iter().find(|n| n.tag().value() == 0x91).map(|n| n.value().to_vec()) else {
        return false;
    };
    let req_icc = req.icc_data().expect("ok").expect("DE 55");
    let req_nodes = codecs::tlv::decode_lenient(&req_icc).expect("tlv");
    let get =
        |t: u32| req_nodes.iter().find(|n| n.tag().value() == t).map(|n| n.value().to_vec()).expect("tag");
    let cvn: Cvn = card.cvn.parse().expect("cvn");
    let icc_mk = TdesKey::from_hex("icc_mk", &card.icc_mk).expect("icc mk");
    let pan = PanDigits::new(&card.pan).expect("pan");
    let atc = Atc::from_slice(&get(0x9F36)).expect("atc");
    let un = UnpredictableNumber::from_slice(&get(0x9F37)).expect("un");
    let inputs = CardInputs { pan: &pan, psn: card.psn.parse().expect("psn"), atc, un: Some(un) };
    let (input, n) = match cvn.arpc_method() {
        Some(2) => (ArpcInput::Csu { csu: t91[4..8].try_into().expect("csu"), proprietary: vec![] }, 4),
        _ => (ArpcInput::Arc(t91[8..10].try_into().expect("arc")), 8),
    };
    let expected = cvn.card_arpc(&icc_mk, &inputs, &get(0x9F26), &input).expect("arpc");
    expected == t91[..n]
}

pub fn rc(m: &Message) -> String {
    m.text(39).map(|c| c.into_owned()).unwrap_or_default()
}

pub fn bytes_of(m: &Message) -> Bytes {
    m.encode().expect("encode")
}
