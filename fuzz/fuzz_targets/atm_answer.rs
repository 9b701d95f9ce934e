//! Fuzzes what the terminal and the ATM do with the bytes a switch sends back: the links' sans-IO
//! answer matching (`terminal_kit::link::next_answer`, `atm_sim::link::next_answer`: framing, the
//! message codec, the match on MTI, DE 11 and DE 41) over arbitrary bytes in each framing, then the
//! ATM's interpretation of an 0210 as `Atm::cash_advance` runs it — DE 39 and DE 38 as text, DE 55's
//! tag 91 handed to a card that has just made its ARQC (EXTERNAL AUTHENTICATE), DE 54 through
//! `atm_sim::atm::available_of` and the open-to-buy after a partial dispense. The first byte picks
//! the framing (bits 0-1), the spec of the terminal's link (bit 2: `network` or `iso87ascii`),
//! whether the rest is framed bytes or a bare 0210 (bit 3), and whether the ATM's link is first
//! handed a well-formed 0210 whose DE 39, DE 54 and tag 91 come from the input (bit 4). Never panics; errors are values.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use codecs::framing::{FrameCodec, FramingKind};
use codecs::iso8583::{Message, Mti, Spec};
use libfuzzer_sys::fuzz_target;
use emv::kernel::{TerminalConfig, TxData, issuer_authenticate, tag91, tap};
use emv::card::{CardKeys, CardProfile, EmvApplet};

fn request(spec: &Arc<Spec>) -> Message {
    let mut m = Message::new(spec.clone(), Mti::FINANCIAL_REQUEST);
    m.set_text(11, "000042").expect("DE 11");
    m.set_text(41, "ATM00001").expect("DE 41");
    m
}

/// The card of the transaction, after its ARQC (so EXTERNAL AUTHENTICATE has one to check).
fn tapped_card() -> EmvApplet {
    let mut card = EmvApplet::new(CardProfile {
        pan: "4761739001010010".into(),
        expiry: "2912".into(),
        psn: "00".into(),
        cvn: "visa18".into(),
        aid: "A0000000031010".into(),
        label: "PAYNET CREDIT".into(),
        keys: CardKeys::Master { icc_mk: "0123456789ABCDEFFEDCBA9876543210".into() },
        atc: 0,
    });
    let tx = TxData { amount: 200_000, tx_type: 0x01, date: [0x26, 0x11, 0x25], un: [1, 2, 3, 4] };
    tap(&mut card, &TerminalConfig::default(), &tx).expect("a genuine tap");
    card
}

/// What `Atm::cash_advance` reads from its answer (steps 5 and 8).
fn interpret(rsp: &Message) {
    let rc = rsp.text(39).map(|c| c.into_owned()).unwrap_or_default();
    let _ = rsp.text(38).map(|c| format!("authorization code {c}"));
    if let Some(t91) = rsp.icc_data().ok().flatten().and_then(|icc| tag91(&icc)) {
        let _ = issuer_authenticate(&mut tapped_card(), &t91);
    }
    let de54 = rsp.text(54).and_then(|t| atm_sim::atm::available_of(&t));
    if rc == "00" {
        let (amount, dispensed) = (200_000u64, 120_000u64);
        let _ = de54.map(|a| a + (amount - dispensed));
    }
}

/// Length-prefixed chunks (one byte each) off the front of `d`.
fn chunk<'a>(d: &mut &'a [u8]) -> &'a [u8] {
    let Some((&n, rest)) = d.split_first() else { return &[] };
    let n = usize::from(n).min(rest.len());
    let (c, r) = rest.split_at(n);
    *d = r;
    c
}

fn framed_answer(spec: &Arc<Spec>, framing: FramingKind, mut d: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::new(spec.clone(), Mti::FINANCIAL_RESPONSE);
    m.set_text(11, "000042").ok()?;
    m.set_text(41, "ATM00001").ok()?;
    m.set_text(39, std::str::from_utf8(chunk(&mut d)).ok()?).ok()?;
    m.set_text(54, std::str::from_utf8(chunk(&mut d)).ok()?).ok()?;
    let mut icc = vec![0x91];
    let t91 = chunk(&mut d);
    icc.push(t91.len().min(127) as u8);
    icc.extend_from_slice(&t91[..t91.len().min(127)]);
    icc.extend_from_slice(chunk(&mut d));
    m.set_icc_data(&icc).ok()?;
    let mut out = BytesMut::new();
    let frame = if framing.has_tpdu() {
        codecs::framing::Frame::with_tpdu(
            codecs::framing::Tpdu::from_bytes([0x60, 0, 0, 0, 1]),
            m.encode().ok()?,
        )
    } else {
        codecs::framing::Frame::new(m.encode().ok()?)
    };
    tokio_util::codec::Encoder::encode(&mut FrameCodec::new(framing), frame, &mut out).ok()?;
    out.extend_from_slice(d);
    Some(out.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let network = Spec::builtin("network").expect("network spec");
    if mode & 8 == 8 {
        if let Ok(m) = Message::decode_slice(network, rest) {
            interpret(&m);
        }
        if let Ok(s) = std::str::from_utf8(rest) {
            let _ = atm_sim::atm::available_of(s);
        }
        return;
    }
    let framing = FramingKind::ALL[usize::from(mode & 3)];
    let genuine;
    let rest = if mode & 0x10 == 0x10 {
        // A well-formed 0210 answering the request, its DE 39, DE 54 and DE 55 (tag 91 inside
        // a 0x91 object) from the input, framed, then the rest of the input as further bytes.
        let Some(g) = framed_answer(network, framing, rest) else { return };
        genuine = g;
        &genuine[..]
    } else {
        rest
    };

    // The ATM's link: undecodable frames are dropped, a broken framing is an error.
    let req = request(network);
    let (mut codec, mut buf) = (FrameCodec::new(framing), BytesMut::from(rest));
    while let Ok(Some(m)) = atm_sim::link::next_answer(&mut codec, &mut buf, network, &req) {
        assert_eq!(m.mti(), Mti::FINANCIAL_RESPONSE);
        interpret(&m);
    }

    // The terminal's link: any undecodable frame is an error.
    let spec = if mode & 4 == 4 { Spec::builtin("iso87ascii").expect("spec") } else { network };
    let key = terminal_kit::link::AnswerKey::of(&request(spec));
    let (mut codec, mut buf) = (FrameCodec::new(framing), BytesMut::from(rest));
    while let Ok(Some(m)) = terminal_kit::link::next_answer(&mut codec, &mut buf, spec, &key) {
        assert!(key.matches(&m));
    }
});
