//! The card and terminal side of a test, for the simulator's own tests and for anyone who drives
//! it (switch system tests, the `serve` tooling): contactless chip requests whose ARQC is computed
//! from a test card's ICC master key as the card would compute it, ISO format-0 PIN blocks under a
//! zone PIN key, reversals that point at their original, and the ARPC check the card makes on the
//! answer. Test material only: every key here is a generated test key.

use std::sync::Arc;

use codecs::iso8583::{Message, Mti, Spec};
use codecs::tlv::{self, Tag, TlvBuilder};
use crypto::emv::{ArpcInput, Atc, CardInputs, Cvn, PanDigits, Psn, UnpredictableNumber, ac_data_from_tags};
use crypto::keys::{SymmetricKey, TdesKey};
use crypto::pin::{Pin, PinBlockFormat, encrypt_pin_block};

use crate::cards::ClearTestCard;

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

/// Visa-style issuer application data for CVN 18: length 06, DKI 01, CVN 12, CVR 03A00000.
const IAD: [u8; 7] = [0x06, 0x01, 0x12, 0x03, 0xA0, 0x00, 0x00];

/// The chip data a contactless card answers GENERATE AC with, for `tx`, without 9F26.
fn card_tags(tx: &Tx) -> Vec<(u32, Vec<u8>)> {
    let amount = format!("{:012}", tx.amount % 1_000_000_000_000);
    let bcd: Vec<u8> = amount.as_bytes().chunks(2).map(|p| ((p[0] - b'0') << 4) | (p[1] - b'0')).collect();
    vec![
        (0x9F02, bcd),
        (0x9F03, vec![0; 6]),
        (0x9F1A, vec![0x02, 0x50]),
        (0x95, vec![0; 5]),
        (0x5F2A, vec![0x09, 0x78]),
        (0x9A, vec![0x26, 0x11, 0x25]),
        (
            0x9C,
            vec![if tx.processing_code.starts_with("31") {
                0x31
            } else if tx.processing_code.starts_with("01") {
                0x01
            } else {
                0x00
            }],
        ),
        (0x9F37, vec![(tx.stan >> 8) as u8, tx.stan as u8, 0x5A, 0xC3]),
        (0x82, vec![0x20, 0x00]),
        (0x9F36, tx.atc.to_be_bytes().to_vec()),
        (0x9F10, IAD.to_vec()),
    ]
}

fn card_inputs<'a>(
    card: &ClearTestCard,
    pan: &'a PanDigits,
    atc: u16,
    un: [u8; 4],
) -> Option<CardInputs<'a>> {
    Some(CardInputs {
        pan,
        psn: card.psn.parse::<Psn>().ok()?,
        atc: Atc(atc),
        un: Some(UnpredictableNumber(un)),
    })
}

/// The DE 55 a card would send for `tx`: the ARQC (9F26) over the data of the card's CVN, then
/// the tags it covers. `None` if the card's material does not parse.
pub fn chip_data(card: &ClearTestCard, tx: &Tx) -> Option<Vec<u8>> {
    let cvn: Cvn = card.cvn.parse().ok()?;
    let tags = card_tags(tx);
    let get = |t: u32| tags.iter().find(|(k, _)| *k == t).map(|(_, v)| v.as_slice());
    let data = ac_data_from_tags(cvn, get).ok()?;
    let icc_mk = TdesKey::from_hex("icc_mk", &card.icc_mk).ok()?;
    let pan = PanDigits::new(&card.pan).ok()?;
    let un: [u8; 4] = get(0x9F37)?.try_into().ok()?;
    let arqc = cvn.card_ac(&icc_mk, &card_inputs(card, &pan, tx.atc, un)?, &data).ok()?;
    let mut icc = TlvBuilder::new();
    icc.primitive(Tag::new(0x9F26), &arqc).ok()?;
    icc.primitive(Tag::new(0x9F27), &[0x80]).ok()?;
    for (t, v) in &tags {
        icc.primitive(Tag::new(*t), v).ok()?;
    }
    Some(icc.finish().to_vec())
}

/// A contactless chip request (DE 22 = 071) for `card` with the elements the network spec asks
/// for. Panics only on test material that does not fit the spec (a bug in the test).
pub fn chip_request(spec: &Arc<Spec>, card: &ClearTestCard, tx: &Tx) -> Message {
    let mut m = Message::new(spec.clone(), tx.mti);
    let stan = tx.stan % 1_000_000;
    for (de, v) in [
        (2u16, card.pan.clone()),
        (3, tx.processing_code.to_string()),
        (4, format!("{:012}", tx.amount)),
        (7, format!("1125{stan:06}")),
        (11, format!("{stan:06}")),
        (12, "101010".into()),
        (13, "1125".into()),
        (14, card.expiry.clone()),
        (18, "5411".into()),
        (22, "071".into()),
        (23, format!("0{}", card.psn)),
        (25, "00".into()),
        (37, format!("533014{stan:06}")),
        (41, tx.tid.clone()),
        (42, "MERCHANT0000001".into()),
        (49, "978".into()),
    ] {
        if let Err(e) = m.set_text(de, &v) {
            panic!("test request DE {de}: {e}");
        }
    }
    match chip_data(card, tx) {
        Some(icc) => {
            if let Err(e) = m.set_icc_data(&icc) {
                panic!("test request DE 55: {e}");
            }
        }
        None => panic!("test card material does not parse"),
    }
    m
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

/// Checks tag 91 of an answer as the card would: method 1 → ARPC (8) ‖ ARC (2), where the ARC
/// must equal DE 39; method 2 → ARPC (4) ‖ CSU (4).
pub fn card_accepts_arpc(card: &ClearTestCard, req: &Message, rsp: &Message) -> bool {
    let check = || -> Option<bool> {
        let t91 = tag91(rsp)?;
        let icc = req.icc_data().ok()??;
        let nodes = tlv::decode_lenient(&icc).ok()?;
        let get = |t: u32| tlv::find(&nodes, Tag::new(t)).map(|n| n.value().to_vec());
        let cvn: Cvn = card.cvn.parse().ok()?;
        let icc_mk = TdesKey::from_hex("icc_mk", &card.icc_mk).ok()?;
        let pan = PanDigits::new(&card.pan).ok()?;
        let atc = Atc::from_slice(&get(0x9F36)?).ok()?;
        let un: [u8; 4] = get(0x9F37)?.try_into().ok()?;
        let inputs = card_inputs(card, &pan, atc.0, un)?;
        // (input, ARPC length, tag 91 length)
        let (input, n, total) = match cvn.arpc_method() {
            Some(2) => (ArpcInput::Csu { csu: t91.get(4..8)?.try_into().ok()?, proprietary: vec![] }, 4, 8),
            _ => {
                let arc: [u8; 2] = t91.get(8..10)?.try_into().ok()?;
                if rsp.text(39).as_deref() != std::str::from_utf8(&arc).ok() {
                    return Some(false);
                }
                (ArpcInput::Arc(arc), 8, 10)
            }
        };
        let expected = cvn.card_arpc(&icc_mk, &inputs, &get(0x9F26)?, &input).ok()?;
        Some(t91.len() == total && expected == t91[..n])
    };
    check().unwrap_or(false)
}
