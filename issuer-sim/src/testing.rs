//! The card and terminal side of a test, for the simulator's own tests and for anyone who drives
//! it with its generated [`ClearTestCard`]s: chip requests (built by `terminal_kit::pos`, with the
//! MTI of a purchase, cash advance or balance inquiry), ISO format-0 PIN blocks under a zone PIN
//! key, reversals that point at their original, the ARPC check the card makes on the answer, and
//! the switch's end of a MAC-authenticated link (a link MAC under a clear test key, and the
//! token service's DF8106 flag as a forger would set it).
//! Test material only: every key here is a generated or given test key.

use std::sync::Arc;

use codecs::iso8583::{Message, Mti, Spec};
use codecs::tlv::{self, Tag};
use crypto::emv::Cvn;
use crypto::hsm::Hsm;
use crypto::keys::{AesKey, SymmetricKey, TdesKey};
use crypto::mac::MacAlgorithm;
use crypto::pin::{Pin, PinBlockFormat, encrypt_pin_block};
use terminal_kit::pos;

use crate::cards::ClearTestCard;
use crate::link_mac::LinkMac;

/// A server state over four generated test cards (expiring 2912; the clock says November 2026,
/// authorization codes are fixed), with or without a link MAC, and the cards' clear material; the
/// cards' keys are drawn from `random`.
pub fn server_state(
    link_mac: Option<LinkMac>,
    random: &mut dyn FnMut(&mut [u8]),
) -> (crate::server::ServerState, crate::cards::TestIssuer) {
    use crypto::keystore::{Keystore, Lmk};
    let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("LMK");
    let t = crate::cards::generate_test_issuer(4, lmk.clone(), "2912", random).expect("test issuer");
    let ks = Keystore::from_toml(lmk, &t.keystore.to_toml()).expect("keystore");
    let hsm = Arc::new(crypto::hsm::SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.fill(0x3C))));
    let state = crate::server::ServerState {
        issuer: std::sync::Mutex::new(crate::host::Issuer::new(hsm, crate::cards::ZPK_NAME, &t.cards)),
        spec: Spec::builtin("network").expect("spec").clone(),
        framing: codecs::framing::FramingKind::Binary2,
        faults: std::sync::RwLock::new(Vec::new()),
        clock: Box::new(|| 1_795_000_000_000),
        random: Box::new(|| 424_242),
        link_mac,
    };
    (state, t)
}

/// The keystore name of the link MAC key in [`link_mac`]'s HSM.
pub const LINK_MAC_KEY: &str = "issuer.link-mac";

/// What varies between test transactions.
#[derive(Debug, Clone)]
pub struct Tx {
    pub mti: Mti,
    pub stan: u32,
    pub amount: u64,
    pub atc: u16,
    pub processing_code: &'static str,
    pub tid: String,
}

impl Tx {
    /// A purchase (0100, DE 3 = 000000).
    pub fn purchase(stan: u32, amount: u64, atc: u16) -> Tx {
        Tx {
            mti: Mti::AUTHORIZATION_REQUEST,
            stan,
            amount,
            atc,
            processing_code: "000000",
            tid: "TERM0001".into(),
        }
    }

    /// An ATM cash advance (0200, DE 3 = 013000).
    pub fn cash_advance(stan: u32, amount: u64, atc: u16) -> Tx {
        Tx {
            mti: Mti::FINANCIAL_REQUEST,
            processing_code: "013000",
            tid: "ATM00001".into(),
            ..Tx::purchase(stan, amount, atc)
        }
    }

    /// A balance inquiry (0100, DE 3 = 313000, DE 4 zero, tag 9C = 31; INTERFACES.md §5).
    pub fn balance_inquiry(stan: u32, atc: u16) -> Tx {
        Tx { processing_code: "313000", ..Tx::purchase(stan, 0, atc) }
    }
}

impl Tx {
    fn pos(&self) -> pos::Tx {
        pos::Tx {
            processing_code: self.processing_code.to_string(),
            tid: self.tid.clone(),
            ..pos::Tx::purchase(self.stan, self.amount, self.atc)
        }
    }
}

/// The card as a terminal knows it (the ports-file form).
pub fn pos_card(card: &ClearTestCard) -> pos::TestCard {
    pos::TestCard {
        pan: card.pan.clone(),
        expiry: card.expiry.clone(),
        psn: card.psn.clone(),
        cvn: card.cvn.clone(),
        icc_mk: card.icc_mk.clone(),
        pin: card.pin.clone(),
        balance: card.balance.clone(),
    }
}

/// A contactless chip request (DE 22 = 071) for `card`, built as a POS builds it
/// (`terminal_kit::pos`: the ARQC computed from the card's ICC master key over its CVN's data),
/// with `tx`'s MTI. Panics only on test material that does not fit (a bug in the test).
pub fn chip_request(spec: &Arc<Spec>, card: &ClearTestCard, tx: &Tx) -> Message {
    match pos::chip_request(spec, &pos_card(card), &tx.pos()) {
        Ok(mut m) => {
            m.set_mti(tx.mti);
            m
        }
        Err(e) => panic!("test request: {e}"),
    }
}

/// An ISO 9564-1 format-0 PIN block of `pin` for `pan` under the zone PIN key (DE 52).
pub fn pin_block(zpk: &TdesKey, pan: &str, pin: &str) -> Option<Vec<u8>> {
    let pin = Pin::new(pin).ok()?;
    encrypt_pin_block(&SymmetricKey::Tdes(zpk.clone()), PinBlockFormat::Iso0, &pin, pan, &[0xFF; 8]).ok()
}

/// The reversal (`0400` request or `0420` advice) of `original`: DE 90 names it (original MTI,
/// STAN, transmission date-time; ISO 8583:1987 DE 90), DE 95 carries what was actually dispensed
/// when `dispensed` is given (a partial reversal), else the reversal is full.
pub fn reversal(original: &Message, mti: &str, stan: u32, dispensed: Option<u64>) -> Message {
    let mut m = original.clone();
    m.remove(55);
    m.remove(52);
    if let Ok(mti) = mti.parse() {
        m.set_mti(mti);
    }
    let orig_stan = original.text(11).map(|s| s.into_owned()).unwrap_or_default();
    let orig_time = original.text(7).map(|s| s.into_owned()).unwrap_or_default();
    let de90 = format!("{}{orig_stan:0>6}{orig_time:0>10}{:0>22}", original.mti(), 0);
    let stan = stan % 1_000_000;
    let sets = [(11u16, format!("{stan:06}")), (90, de90)];
    for (de, v) in sets {
        if let Err(e) = m.set_text(de, &v) {
            panic!("test reversal DE {de}: {e}");
        }
    }
    if let Some(d) = dispensed
        && let Err(e) = m.set_text(95, &format!("{d:012}{d:012}C00000000C00000000"))
    {
        panic!("test reversal DE 95: {e}");
    }
    m
}

/// The value of tag 91 in the answer's DE 55.
pub fn tag91(rsp: &Message) -> Option<Vec<u8>> {
    let icc = rsp.icc_data().ok()??;
    let nodes = tlv::decode_lenient(&icc).ok()?;
    tlv::find(&nodes, Tag::new(0x91)).map(|n| n.value().to_vec())
}

/// Checks tag 91 of an answer as the card would (`terminal_kit::pos::card_accepts_arpc`), and
/// that it has the length its method gives (method 1: ARPC 8 ‖ ARC 2, where the ARC must equal
/// DE 39; method 2: ARPC 4 ‖ CSU 4).
pub fn card_accepts_arpc(card: &ClearTestCard, req: &Message, rsp: &Message) -> bool {
    let Some(t91) = tag91(rsp) else { return false };
    let Ok(cvn) = card.cvn.parse::<Cvn>() else { return false };
    let shape_ok = match cvn.arpc_method() {
        Some(2) => t91.len() == 8,
        _ => t91.len() == 10 && rsp.text(39).as_deref().map(str::as_bytes) == t91.get(8..10),
    };
    shape_ok && pos::card_accepts_arpc(&pos_card(card), req, rsp)
}

/// A software HSM holding only `key` under the name `name` and the TR-31 header template `header`
/// (a fixed test LMK). Panics only on test material that does not fit (a bug in the test).
pub fn hsm_with_key(name: &str, header: &str, key: SymmetricKey) -> Arc<dyn Hsm> {
    use crypto::keyblock::Header;
    use crypto::keystore::{KeyName, Keystore, Lmk};
    let imported = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).and_then(|lmk| {
        let mut ks = Keystore::new(lmk);
        ks.import(KeyName::new(name)?, &Header::parse_template(header)?, &key, &[0x5A; 64])?;
        Ok(ks)
    });
    match imported {
        Ok(ks) => Arc::new(crypto::hsm::SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.fill(0x3C)))),
        Err(e) => panic!("test keystore: {e}"),
    }
}

/// One end of a MAC-authenticated link in a test: AES-CMAC under the clear test key `clear`
/// (usage M6), named [`LINK_MAC_KEY`]. Both ends of a test link are made from the same bytes.
pub fn link_mac(clear: &[u8; 16]) -> LinkMac {
    let key = match AesKey::from_slice(clear) {
        Ok(k) => SymmetricKey::Aes(k),
        Err(e) => panic!("test MAC key: {e}"),
    };
    let hsm = hsm_with_key(LINK_MAC_KEY, "D0000M6AC00N0000", key);
    match LinkMac::new(hsm, LINK_MAC_KEY, MacAlgorithm::CmacAes) {
        Ok(l) => l,
        Err(e) => panic!("test link MAC: {e}"),
    }
}

/// `req` with an all-zero cryptogram (tag 9F26 in DE 55): what a forger who holds no card key
/// sends. Panics only on a request without chip data (a bug in the test).
pub fn with_zero_cryptogram(mut req: Message) -> Message {
    let icc = match req.icc_data() {
        Ok(Some(icc)) => icc.to_vec(),
        _ => panic!("a chip request has DE 55"),
    };
    let nodes = match tlv::decode_lenient(&icc) {
        Ok(n) => n,
        Err(e) => panic!("DE 55: {e}"),
    };
    let mut b = tlv::TlvBuilder::new();
    for n in &nodes {
        let v = if n.tag().value() == 0x9F26 { vec![0u8; 8] } else { n.value().to_vec() };
        if let Err(e) = b.primitive(n.tag(), &v) {
            panic!("DE 55 tag {:X}: {e}", n.tag().value());
        }
    }
    if let Err(e) = req.set_icc_data(&b.finish()) {
        panic!("DE 55: {e}");
    }
    req
}

/// `req` with DE 123 tag DF8106 = "1": "the token service verified this cryptogram" — what the
/// switch's token service sets, and what anyone who can reach the issuer's port can set too.
pub fn with_tsp_verified(mut req: Message) -> Message {
    let mut b = tlv::TlvBuilder::new();
    if let Err(e) = b.primitive(Tag::new(0xDF8106), b"1") {
        panic!("DF8106: {e}");
    }
    if let Err(e) = req.set_bytes(123, b.finish()) {
        panic!("DE 123: {e}");
    }
    req
}
