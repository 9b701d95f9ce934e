//! A contactless POS terminal's side of an authorization: the 0100 a chip card (or a phone acting
//! as one) produces — DE 22 = 071, DE 55 with the terminal's data and the card's cryptogram
//! computed from its ICC master key over its CVN's data — and the card's check of the issuer's
//! answer (tag 91: the ARPC).

use codecs::iso8583::{Message, Mti, Spec};
use codecs::tlv::{Tag, TlvBuilder};
use crypto::emv::{
    ArpcInput, Atc, CardInputs, CardMasterKey, Cvn, PanDigits, Psn, UnpredictableNumber, ac_data_from_tags,
};
use crypto::keys::TdesKey;
use serde::Deserialize;

/// A test card as the ports file (INTERFACES.md §5) gives it. Its `Debug` masks the PAN and leaves
/// out the key and the PIN.
#[derive(Clone, Deserialize)]
pub struct TestCard {
    pub pan: String,
    pub expiry: String,
    pub psn: String,
    pub cvn: String,
    pub icc_mk: String,
    pub pin: String,
    pub balance: String,
}

impl TestCard {
    /// A `visa18` test card of `pan` (expiry 2812, PSN 01, no PIN) whose ICC master key is derived
    /// from the issuer master key `imk`, as the issuer simulator's cards are; `None` for a PAN that
    /// is not 12 to 19 digits.
    pub fn visa18(imk: &crypto::keys::TdesKey, pan: &str) -> Option<TestCard> {
        use crypto::emv::{Cvn, PanDigits, Psn};
        let icc = Cvn::Visa18.icc_master_key(imk, &PanDigits::new(pan).ok()?, Psn::new(1).ok()?);
        Some(TestCard {
            pan: pan.into(),
            expiry: "2812".into(),
            psn: "01".into(),
            cvn: "visa18".into(),
            icc_mk: crypto::keys::to_hex(icc.expose()),
            pin: String::new(),
            balance: String::new(),
        })
    }
}

impl std::fmt::Debug for TestCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCard")
            .field("pan", &emv::card::mask(&self.pan))
            .field("psn", &self.psn)
            .field("cvn", &self.cvn)
            .finish_non_exhaustive()
    }
}

/// What varies between transactions.
#[derive(Debug, Clone)]
pub struct Tx {
    pub stan: u32,
    pub amount: u64,
    pub atc: u16,
    pub processing_code: String,
    pub tid: String,
    /// Transaction date YYMMDD (tag 9A).
    pub date: [u8; 3],
    /// The currency the terminal sells in (ISO 4217 numeric; DE 49 and tag 5F2A).
    pub currency: String,
}

impl Tx {
    pub fn purchase(stan: u32, amount: u64, atc: u16) -> Tx {
        Tx {
            stan,
            amount,
            atc,
            processing_code: "000000".into(),
            tid: "TERM0001".into(),
            date: [0x26, 0x11, 0x25],
            currency: "978".into(),
        }
    }
}

/// Why a request could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PosError {
    #[error("card: {0}")]
    Card(#[from] crypto::Error),
    #[error("message: {0}")]
    Message(#[from] codecs::Error),
}

/// The terminal and card data of tag 9F02 … 9F10 for `tx`, in the order of EMV Book 2 §8.1.1.
fn tags(card: &TestCard, cvn: Cvn, tx: &Tx) -> Vec<(u32, Vec<u8>)> {
    let un = UnpredictableNumber([(tx.stan >> 8) as u8, tx.stan as u8, 0x5A, 0xC3]);
    let amount: Vec<u8> = format!("{:012}", tx.amount)
        .as_bytes()
        .chunks(2)
        .map(|p| ((p[0] - b'0') << 4) | (p[1] - b'0'))
        .collect();
    let _ = card;
    vec![
        (0x9F02, amount),
        (0x9F03, vec![0; 6]),
        (0x9F1A, vec![0x02, 0x50]),
        (0x95, vec![0; 5]),
        (0x5F2A, hex::decode(format!("0{}", tx.currency)).unwrap_or_else(|_| vec![0x09, 0x78])),
        (0x9A, tx.date.to_vec()),
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
        (0x9F37, un.0.to_vec()),
        (0x82, vec![0x20, 0x00]),
        (0x9F36, tx.atc.to_be_bytes().to_vec()),
        (0x9F10, emv::card::applet::iad(cvn)),
    ]
}

/// Which key the card computes with.
#[derive(Clone, Copy)]
pub enum CardKey<'a> {
    /// Its ICC master key (`TestCard::icc_mk`): a card or a secure element.
    MasterKey,
    /// A limited-use key for the transaction's ATC (a cloud-based / HCE phone).
    SessionKey(&'a TdesKey),
    /// Its ICC master key, prepared once (`CardMasterKey::tdes`) for many transactions of the
    /// card (the load generator's).
    Prepared(&'a CardMasterKey),
}

/// The card's ICC master key, prepared: the one `key` holds, else `card`'s own (`TestCard::icc_mk`).
fn master_key<'k>(
    card: &TestCard,
    key: CardKey<'k>,
) -> Result<std::borrow::Cow<'k, CardMasterKey>, crypto::Error> {
    match key {
        CardKey::Prepared(mk) => Ok(std::borrow::Cow::Borrowed(mk)),
        _ => Ok(std::borrow::Cow::Owned(CardMasterKey::tdes(TdesKey::from_hex("icc_mk", &card.icc_mk)?))),
    }
}

/// A contactless chip 0100 for `card`, its ARQC computed as the card computes it.
pub fn chip_request(spec: &std::sync::Arc<Spec>, card: &TestCard, tx: &Tx) -> Result<Message, PosError> {
    chip_request_with(spec, card, tx, CardKey::MasterKey)
}

/// [`chip_request`] with the card computing under `key`.
pub fn chip_request_with(
    spec: &std::sync::Arc<Spec>,
    card: &TestCard,
    tx: &Tx,
    key: CardKey<'_>,
) -> Result<Message, PosError> {
    let cvn: Cvn = card.cvn.parse()?;
    let tags = tags(card, cvn, tx);
    let get = |t: u32| tags.iter().find(|(k, _)| *k == t).map(|(_, v)| v.as_slice());
    let data = ac_data_from_tags(cvn, get)?;
    let arqc = match key {
        CardKey::SessionKey(sk) => cvn.session_ac(sk, &data)?,
        CardKey::MasterKey | CardKey::Prepared(_) => {
            let pan = PanDigits::new(&card.pan)?;
            let un = get(0x9F37).map(UnpredictableNumber::from_slice).transpose()?;
            let inputs = CardInputs { pan: &pan, psn: card.psn.parse::<Psn>()?, atc: Atc(tx.atc), un };
            cvn.card_ac_from(&*master_key(card, key)?, &inputs, &data)?
        }
    };
    let mut icc = TlvBuilder::new();
    icc.primitive(Tag::new(0x9F26), &arqc)?;
    icc.primitive(Tag::new(0x9F27), &[0x80])?;
    // The card's own PAN and sequence number, as a real card's records give them: whoever swaps
    // DE 2 or DE 23 under this cryptogram is caught before the issuer.
    PanDigits::new(&card.pan)?;
    let bad = |what: &'static str, why: &str| crypto::Error::new(crypto::error::ErrorKind::Pan, what, why);
    let pan = codecs::pan::to_cn(&card.pan).ok_or_else(|| bad("pan", "not digits"))?;
    let psn = codecs::pan::psn_n2(&card.psn).ok_or_else(|| bad("psn", "not one or two digits"))?;
    icc.primitive(Tag::PAN, &pan)?;
    icc.primitive(Tag::PAN_SEQUENCE_NUMBER, &[psn])?;
    for (t, v) in &tags {
        icc.primitive(Tag::new(*t), v)?;
    }
    let mut m = tx_request(spec, tx, "1125", &card.pan, &card.expiry, &card.psn)?;
    m.set_icc_data(&icc.finish())?;
    Ok(m)
}

/// The contactless 0100 of a test transaction `tx` at the test merchant, for the card `pan`,
/// `expiry`, `psn`, sent on `mmdd` (DE 7 is MMDD + the STAN, unique per test run); the caller adds
/// DE 35 and DE 55.
fn tx_request(
    spec: &std::sync::Arc<Spec>,
    tx: &Tx,
    mmdd: &str,
    pan: &str,
    expiry: &str,
    psn: &str,
) -> Result<Message, PosError> {
    let mut m = Message::new(spec.clone(), Mti::AUTHORIZATION_REQUEST);
    let stan = format!("{:06}", tx.stan % 1_000_000);
    for (de, v) in [
        (2u16, pan),
        (3, &tx.processing_code),
        (4, &format!("{:012}", tx.amount)),
        (7, &format!("{mmdd}{stan}")),
        (11, &stan),
        (12, "101010"),
        (13, mmdd),
        (14, expiry),
        (18, "5411"),
        (22, "071"),
        (23, &format!("0{psn}")),
        (25, "00"),
        (37, &format!("533014{stan}")),
        (41, &tx.tid),
        (42, "MERCHANT0000001"),
        (49, &tx.currency),
    ] {
        m.set_text(de, v)?;
    }
    Ok(m)
}

/// A contactless chip 0100 from what the kernel read off the card ([`emv::kernel::tap`]): DE 22
/// `071`, DE 2/14/23/35 from the card's records, DE 55 from the dialogue.
pub fn tap_request(
    spec: &std::sync::Arc<Spec>,
    tapped: &emv::kernel::Tapped,
    tx: &Tx,
) -> Result<Message, PosError> {
    let mmdd = format!("{:02X}{:02X}", tx.date[1], tx.date[2]);
    let mut m = tx_request(spec, tx, &mmdd, &tapped.pan, &tapped.expiry, &tapped.psn)?;
    if !tapped.track2.is_empty() {
        m.set_text(35, &tapped.track2)?;
    }
    m.set_icc_data(&tapped.icc)?;
    Ok(m)
}

/// The reversal advice (0420) a terminal owes for `orig` when it cannot stand by the outcome: no
/// answer in time (DE 39 `68`) or an approval whose ARPC the card refused (`82`). Its identifying
/// elements, a new STAN and transmission time (DE 11, DE 7), and DE 90 naming the original (MTI,
/// STAN, DE 7, acquirer and forwarding IDs — zeros: the switch fills DE 32 for the listener).
pub fn reversal_advice(
    orig: &Message,
    stan: u32,
    transmitted: &str,
    reason: &str,
) -> Result<Message, PosError> {
    let mut m = Message::new(orig.spec().clone(), Mti::REVERSAL_ADVICE);
    for de in [2u16, 3, 4, 12, 13, 14, 18, 22, 23, 25, 37, 41, 42, 49] {
        m.copy_from(orig, de)?;
    }
    m.set_text(7, transmitted)?;
    m.set_text(11, &format!("{:06}", stan % 1_000_000))?;
    m.set_text(39, reason)?;
    let t = |de| orig.text(de).map(|c| c.into_owned()).unwrap_or_default();
    m.set_text(90, &format!("{}{:0>6}{:0>10}{}", orig.mti(), t(11), t(7), "0".repeat(22)))?;
    Ok(m)
}

/// The card's check of tag 91 in the answer: the ARPC it expects for the ARQC it sent.
pub fn card_accepts_arpc(card: &TestCard, req: &Message, rsp: &Message) -> bool {
    card_accepts_arpc_with(card, req, rsp, CardKey::MasterKey)
}

/// [`card_accepts_arpc`] for a card computing under `key`.
pub fn card_accepts_arpc_with(card: &TestCard, req: &Message, rsp: &Message, key: CardKey<'_>) -> bool {
    let Ok(Some(icc)) = rsp.icc_data() else { return false };
    let Ok(nodes) = codecs::tlv::decode_lenient(&icc) else { return false };
    let Some(t91) = nodes.iter().find(|n| n.tag().value() == 0x91).map(|n| n.value().to_vec()) else {
        return false;
    };
    let Ok(Some(req_icc)) = req.icc_data() else { return false };
    let Ok(req_nodes) = codecs::tlv::decode_lenient(&req_icc) else { return false };
    let get = |t: u32| req_nodes.iter().find(|n| n.tag().value() == t).map(|n| n.value().to_vec());
    let Ok(cvn) = card.cvn.parse::<Cvn>() else { return false };
    let (Some(atc), Some(arqc)) = (get(0x9F36).and_then(|a| Atc::from_slice(&a).ok()), get(0x9F26)) else {
        return false;
    };
    let (input, n) = match cvn.arpc_method() {
        Some(2) => match t91.get(4..8).and_then(|c| <[u8; 4]>::try_from(c).ok()) {
            Some(csu) => (ArpcInput::Csu { csu, proprietary: vec![] }, 4),
            None => return false,
        },
        _ => match t91.get(8..10).and_then(|c| <[u8; 2]>::try_from(c).ok()) {
            Some(arc) => (ArpcInput::Arc(arc), 8),
            None => return false,
        },
    };
    let expected = match key {
        CardKey::SessionKey(sk) => cvn.session_arpc(sk, &arqc, &input),
        CardKey::MasterKey | CardKey::Prepared(_) => {
            let (Ok(pan), Ok(psn)) = (PanDigits::new(&card.pan), card.psn.parse::<Psn>()) else {
                return false;
            };
            let un = get(0x9F37).and_then(|u| UnpredictableNumber::from_slice(&u).ok());
            let inputs = CardInputs { pan: &pan, psn, atc, un };
            let Ok(mk) = master_key(card, key) else { return false };
            cvn.card_arpc_from(&mk, &inputs, &arqc, &input)
        }
    };
    match expected {
        Ok(expected) => t91.get(..n) == Some(expected.as_slice()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(pan: &str, psn: &str) -> TestCard {
        TestCard {
            pan: pan.into(),
            expiry: "2812".into(),
            psn: psn.into(),
            cvn: "visa18".into(),
            icc_mk: "0123456789ABCDEFFEDCBA9876543210".into(),
            pin: String::new(),
            balance: String::new(),
        }
    }

    fn tag(m: &Message, t: u32) -> Option<Vec<u8>> {
        let icc = m.icc_data().ok()??;
        let nodes = codecs::tlv::decode_lenient(&icc).ok()?;
        nodes.iter().find(|n| n.tag().value() == t).map(|n| n.value().to_vec())
    }

    #[test]
    fn the_chip_data_names_the_card_as_de_2_and_de_23_do() {
        let spec = Spec::builtin("network").expect("spec");
        let m =
            chip_request(spec, &card("4761739001010010", "01"), &Tx::purchase(1, 100, 1)).expect("request");
        assert_eq!(tag(&m, 0x5A), Some(vec![0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x10]));
        assert_eq!(tag(&m, 0x5F34), Some(vec![0x01]));
        assert_eq!(m.text(23).as_deref(), Some("001"));
        // An odd number of digits is padded with F; PSN 12 is the byte 0x12.
        let m = chip_request(spec, &card("4761739001010010123", "12"), &Tx::purchase(2, 100, 2))
            .expect("request");
        assert_eq!(tag(&m, 0x5A), Some(vec![0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x10, 0x12, 0x3F]));
        assert_eq!(tag(&m, 0x5F34), Some(vec![0x12]));
        // A PAN that is not digits is an error, not a tag of garbage.
        assert!(chip_request(spec, &card("47617390010100AB", "01"), &Tx::purchase(3, 100, 3)).is_err());
    }
}
