//! Fuzzes the terminal kernel against a card (or a malicious phone) that answers with arbitrary
//! bytes. The first byte picks the card:
//!
//! * even: every answer is the next chunk of the input (2-byte big-endian length, then the bytes);
//!   once the input runs out the card answers `90 00` with no data to everything, as a hostile
//!   phone would;
//! * odd: a genuine `EmvApplet` answers, and the input edits each answer on its way (pass, flip a
//!   byte, truncate, replace with a chunk) — the kernel gets past the first steps and meets
//!   malformed records and cryptogram answers.
//!
//! Then `issuer_authenticate` with a chunk as tag 91 and `tag91` over a chunk. Properties: never
//! panics, never loops without bound (the fake card counts the APDUs it is sent), errors are
//! values; a successful tap's DE 55 decodes as BER-TLV.
#![no_main]

use codecs::tlv;
use libfuzzer_sys::fuzz_target;
use emv::kernel::{TerminalConfig, TxData, issuer_authenticate, tag91, tap};
use emv::card::{CardKeys, CardProfile, Contactless, EmvApplet};

/// The most APDUs one tap may send: PPSE, SELECT, GPO, every record an AFL can name, GENERATE AC.
const MAX_APDUS: usize = 4 + 30 * 254;

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn chunk(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let n = usize::from(u16::from_be_bytes([self.byte(), self.byte()])).min(self.0.len());
        let (c, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(c)
    }
}

struct Hostile<'a> {
    input: Input<'a>,
    genuine: Option<EmvApplet>,
    sent: usize,
}

impl Contactless for Hostile<'_> {
    fn transceive(&mut self, command: &[u8]) -> Vec<u8> {
        self.sent += 1;
        assert!(self.sent <= MAX_APDUS, "the kernel sent {} APDUs in one tap", self.sent);
        match &mut self.genuine {
            None => self.input.chunk().map_or_else(|| vec![0x90, 0x00], <[u8]>::to_vec),
            Some(card) => {
                let mut r = card.transceive(command);
                match self.input.byte() % 4 {
                    0 => {}
                    1 => {
                        let (at, x) = (usize::from(self.input.byte()), self.input.byte());
                        if let Some(b) = r.get_mut(at) {
                            *b ^= x.max(1);
                        }
                    }
                    2 => r.truncate(usize::from(self.input.byte())),
                    _ => r = self.input.chunk().unwrap_or_default().to_vec(),
                }
                r
            }
        }
    }
}

fn card() -> EmvApplet {
    EmvApplet::new(CardProfile {
        pan: "4761739001010010".into(),
        expiry: "2912".into(),
        psn: "00".into(),
        cvn: "visa18".into(),
        aid: "A0000000031010".into(),
        label: "PAYNET CREDIT".into(),
        keys: CardKeys::Master { icc_mk: "0123456789ABCDEFFEDCBA9876543210".into() },
        atc: 0,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mode = input.byte();
    let genuine = (mode & 1 == 1).then(card);
    let mut c = Hostile { input, genuine, sent: 0 };
    let tx = TxData { amount: 1_000, tx_type: 0, date: [0x26, 0x11, 0x25], un: [1, 2, 3, 4] };
    if let Ok(t) = tap(&mut c, &TerminalConfig::default(), &tx) {
        let nodes = tlv::decode_strict(&t.icc).expect("the DE 55 a tap builds is BER-TLV");
        assert!(tlv::find(&nodes, tlv::Tag::new(0x9F26)).is_some(), "DE 55 carries the cryptogram");
    }
    c.sent = 0;
    let t91 = c.input.chunk().unwrap_or_default();
    let _ = issuer_authenticate(&mut c, t91);
    let icc = c.input.chunk().unwrap_or_default();
    let _ = tag91(icc);
});
