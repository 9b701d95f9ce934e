//! The contactless kernel's dialogue with a card or phone (EMV Book A/B, Book C-style online-only
//! flow): PPSE → SELECT AID → GET PROCESSING OPTIONS with the PDOL data → READ RECORD by the AFL →
//! GENERATE AC (ARQC requested) with the CDOL1 data; then, with the issuer's answer, EXTERNAL
//! AUTHENTICATE with tag 91 so the card checks the ARPC.
//!
//! The kernel knows nothing of the card's keys: it sees only APDUs, and it builds DE 55 from the
//! card's answers, the card's PAN (5A) and PAN sequence number (5F34) as its records gave them,
//! and the terminal's own data (9F02, 9F03, 9F1A, 95, 5F2A, 9A, 9C, 9F37).

use crate::apdu::{Command, Sw, split_response};
use crate::card::{Contactless, applet::PPSE};
use codecs::tlv::{self, Tag, TlvBuilder};

/// The most data a PDOL may ask for: a short APDU's Lc of 255 less tag 83 and its length (81 xx).
pub const MAX_PDOL_DATA: usize = 252;

/// The most data CDOL1 may ask for: a short APDU's Lc.
pub const MAX_CDOL_DATA: usize = 255;

/// The longest AFL (EMV Book 3 Annex A, tag 94: var. up to 252), 63 entries.
pub const MAX_AFL_LEN: usize = 252;

/// The terminal's configuration: what reaches the card, and its risk management.
#[derive(Debug, Clone)]
pub struct TerminalConfig {
    /// Terminal country code, ISO 3166 numeric (9F1A).
    pub country: u16,
    /// Transaction currency, ISO 4217 numeric (5F2A).
    pub currency: u16,
    /// Terminal transaction qualifiers (9F66).
    pub ttq: [u8; 4],
    /// Amounts above this (minor units) set "transaction exceeds floor limit" in the TVR.
    pub floor_limit: u64,
    /// Terminal action codes (EMV Book 3 §10.7): a TVR bit also set in `tac_denial` makes the
    /// terminal decline offline (it asks the card for an AAC); otherwise it goes online.
    pub tac_denial: [u8; 5],
    pub tac_online: [u8; 5],
    pub tac_default: [u8; 5],
}

impl Default for TerminalConfig {
    fn default() -> Self {
        TerminalConfig {
            country: 250,
            currency: 978,
            ttq: [0x36, 0x00, 0x40, 0x00],
            floor_limit: 0,
            // Decline offline on an expired application or a card not yet effective.
            tac_denial: [0x00, 0x60, 0x00, 0x00, 0x00],
            tac_online: [0xFC, 0x50, 0xBC, 0xF8, 0x00],
            tac_default: [0xFC, 0x50, 0xBC, 0xA0, 0x00],
        }
    }
}

/// Terminal verification results (tag 95) for this transaction (EMV Book 3 Annex C5): offline
/// data authentication not performed (the card offers none), expired application, amount over the
/// floor limit.
pub fn tvr(term: &TerminalConfig, tx: &TxData, card_expiry_yymm: &str) -> [u8; 5] {
    let mut t = [0u8; 5];
    t[0] |= 0x80; // B1b8: offline data authentication was not performed
    let today = format!("{:02X}{:02X}", tx.date[0], tx.date[1]);
    if card_expiry_yymm < today.as_str() {
        t[1] |= 0x40; // B2b7: expired application
    }
    if tx.amount > term.floor_limit {
        t[3] |= 0x80; // B4b8: transaction exceeds floor limit
    }
    t
}

/// One transaction's terminal data.
#[derive(Debug, Clone)]
pub struct TxData {
    /// Amount in minor units of `TerminalConfig::currency`.
    pub amount: u64,
    /// Transaction type (9C): 00 purchase, 01 cash advance, 31 balance inquiry.
    pub tx_type: u8,
    /// YYMMDD (9A).
    pub date: [u8; 3],
    /// Unpredictable number (9F37), from the terminal's random source.
    pub un: [u8; 4],
}

/// What the tap produced: what the authorization request needs from the card.
#[derive(Clone)]
pub struct Tapped {
    /// The PAN (or token) as the card gave it in tag 5A.
    pub pan: String,
    /// YYMM from 5F24.
    pub expiry: String,
    /// Two digits from 5F34.
    pub psn: String,
    /// Track 2 equivalent (tag 57) as text with `D` as separator.
    pub track2: String,
    /// The ICC data for DE 55 (terminal data and card answers, TLV).
    pub icc: Vec<u8>,
    /// The cryptogram information data (9F27): 80 ARQC, 00 AAC.
    pub cid: u8,
}

impl std::fmt::Debug for Tapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tapped")
            .field("pan", &crate::card::mask(&self.pan))
            .field("cid", &self.cid)
            .finish_non_exhaustive()
    }
}

/// Why a tap failed (the step and the card's status word or the faulty tag).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    #[error("{step}: the card answered {sw}")]
    Status { step: &'static str, sw: Sw },
    #[error("{step}: {what}")]
    Data { step: &'static str, what: String },
}

fn exchange(card: &mut dyn Contactless, step: &'static str, cmd: Vec<u8>) -> Result<Vec<u8>, TapError> {
    let r = card.transceive(&cmd);
    let (data, sw) =
        split_response(&r).ok_or(TapError::Data { step, what: "a response shorter than SW1 SW2".into() })?;
    if sw != Sw::OK {
        return Err(TapError::Status { step, sw });
    }
    Ok(data.to_vec())
}

fn bcd(n: u64, bytes: usize) -> Vec<u8> {
    let s = format!("{n:0width$}", width = bytes * 2);
    let s = &s[s.len() - bytes * 2..];
    s.as_bytes().chunks(2).map(|p| ((p[0] - b'0') << 4) | (p[1] - b'0')).collect()
}

fn digits(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        for n in [x >> 4, x & 0xF] {
            match n {
                0..=9 => s.push(char::from(b'0' + n)),
                0xD => s.push('D'),
                _ => {}
            }
        }
    }
    s
}

/// The digits of a `cn` value (EMV Book 3 §4.3): digits, then F padding to the end; `None` for
/// anything else (a nibble A to E, a digit after the padding, no digit at all).
fn cn_digits(b: &[u8]) -> Option<String> {
    let nibbles = b.iter().flat_map(|x| [x >> 4, x & 0x0F]);
    let mut s = String::with_capacity(b.len() * 2);
    let mut padded = false;
    for n in nibbles {
        match n {
            0..=9 if !padded => s.push(char::from(b'0' + n)),
            0x0F => padded = true,
            _ => return None,
        }
    }
    (!s.is_empty()).then_some(s)
}

/// Runs the kernel dialogue with `card` for `tx`.
pub fn tap(card: &mut dyn Contactless, term: &TerminalConfig, tx: &TxData) -> Result<Tapped, TapError> {
    // The terminal's data, by tag.
    let mut terminal: Vec<(u32, Vec<u8>)> = vec![
        (0x9F66, term.ttq.to_vec()),
        (0x9F02, bcd(tx.amount, 6)),
        (0x9F03, vec![0; 6]),
        (0x9F1A, bcd(u64::from(term.country), 2)),
        (0x95, vec![0; 5]),
        (0x5F2A, bcd(u64::from(term.currency), 2)),
        (0x9A, tx.date.to_vec()),
        (0x9C, vec![tx.tx_type]),
        (0x9F37, tx.un.to_vec()),
    ];

    // 1. PPSE: the application to select.
    let fci = exchange(card, "SELECT PPSE", Command::build(0x00, 0xA4, 0x04, 0x00, PPSE))?;
    let nodes =
        tlv::decode_lenient(&fci).map_err(|e| TapError::Data { step: "SELECT PPSE", what: e.to_string() })?;
    let aid = tlv::find(&nodes, Tag::new(0x4F)).map(|n| n.value().to_vec()).ok_or(TapError::Data {
        step: "SELECT PPSE",
        what: "no application (tag 4F) in the directory".into(),
    })?;
    // 2. The application and its PDOL.
    let fci = exchange(card, "SELECT AID", Command::build(0x00, 0xA4, 0x04, 0x00, &aid))?;
    let nodes =
        tlv::decode_lenient(&fci).map_err(|e| TapError::Data { step: "SELECT AID", what: e.to_string() })?;
    let pdol = match tlv::find(&nodes, Tag::new(0x9F38)) {
        Some(n) => tlv::parse_dol(n.value())
            .map_err(|e| TapError::Data { step: "SELECT AID", what: e.to_string() })?,
        None => Vec::new(),
    };
    // 3. GPO with the PDOL data.
    // The command data (83 L data) must fit a short APDU's Lc; checked before the data is built,
    // since a DOL entry may ask for up to 16 MB (EMV Book 3 §5.4, §6.5.8).
    let pdol_len = tlv::dol::dol_data_len(&pdol);
    if pdol_len > MAX_PDOL_DATA {
        return Err(TapError::Data {
            step: "SELECT AID",
            what: format!(
                "the PDOL asks for {pdol_len} bytes, more than a GPO command carries ({MAX_PDOL_DATA})"
            ),
        });
    }
    let pdol_data = tlv::build_dol_data(&pdol, |t: Tag| {
        terminal.iter().find(|(k, _)| *k == t.value()).map(|(_, v)| v.clone())
    });
    let mut gpo = TlvBuilder::new();
    gpo.primitive(Tag::new(0x83), &pdol_data)
        .map_err(|e| TapError::Data { step: "GET PROCESSING OPTIONS", what: e.to_string() })?;
    let gpo = gpo.finish();
    let rsp = exchange(card, "GET PROCESSING OPTIONS", Command::build(0x80, 0xA8, 0x00, 0x00, &gpo))?;
    let nodes = tlv::decode_lenient(&rsp)
        .map_err(|e| TapError::Data { step: "GET PROCESSING OPTIONS", what: e.to_string() })?;
    let aip = tlv::find(&nodes, Tag::new(0x82))
        .map(|n| n.value().to_vec())
        .ok_or(TapError::Data { step: "GET PROCESSING OPTIONS", what: "no AIP (tag 82)".into() })?;
    let afl = tlv::find(&nodes, Tag::new(0x94)).map(|n| n.value().to_vec()).unwrap_or_default();
    // 4. The records the AFL names. EMV Book 3 §10.2: an AFL entry with SFI 0 or 31, a first
    // record 0, a last record below the first, or more records for offline data authentication
    // than it names ends the transaction; Annex A: the AFL is at most 252 bytes. A record named
    // twice is refused too: at most 30 × 254 records, so a card cannot keep the terminal reading.
    if afl.len() > MAX_AFL_LEN {
        return Err(TapError::Data {
            step: "GET PROCESSING OPTIONS",
            what: format!("an AFL of {} bytes (at most {MAX_AFL_LEN})", afl.len()),
        });
    }
    let mut records: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut named = std::collections::HashSet::new();
    for (i, entry) in afl.chunks(4).enumerate() {
        let [sfi, first, last, oda] = entry else {
            return Err(TapError::Data {
                step: "READ RECORD",
                what: "an AFL entry shorter than 4 bytes".into(),
            });
        };
        let bad = |what: &str| TapError::Data {
            step: "GET PROCESSING OPTIONS",
            what: format!("AFL entry {i} ({}): {what}", hex::encode_upper(entry)),
        };
        if !(1..=30).contains(&(sfi >> 3)) {
            return Err(bad("SFI outside 1 to 30"));
        }
        if *first == 0 || last < first {
            return Err(bad("records must run from 1 up"));
        }
        if u16::from(*oda) > u16::from(*last - *first) + 1 {
            return Err(bad("more records for offline data authentication than it names"));
        }
        if !(*first..=*last).all(|r| named.insert((sfi >> 3, r))) {
            return Err(bad("a record another entry names already"));
        }
        for rec in *first..=*last {
            let data =
                exchange(card, "READ RECORD", Command::build(0x00, 0xB2, rec, (sfi & 0xF8) | 0x04, &[]))?;
            let nodes = tlv::decode_lenient(&data)
                .map_err(|e| TapError::Data { step: "READ RECORD", what: e.to_string() })?;
            for t in tlv::primitives(&nodes) {
                records.push((t.tag.value(), t.value.to_vec()));
            }
        }
    }
    let rec = |t: u32| records.iter().find(|(k, _)| *k == t).map(|(_, v)| v.as_slice());
    let missing = |what: &str| TapError::Data { step: "READ RECORD", what: format!("no {what}") };
    let pan_cn = rec(0x5A).ok_or_else(|| missing("PAN (5A)"))?;
    let pan = cn_digits(pan_cn).ok_or(TapError::Data {
        step: "READ RECORD",
        what: "a PAN (5A) that is not digits padded with F".into(),
    })?;
    let expiry_full = digits(rec(0x5F24).ok_or_else(|| missing("expiry (5F24)"))?);
    let expiry = expiry_full.get(..4).ok_or_else(|| missing("4-digit expiry"))?.to_string();
    let psn = rec(0x5F34).map(digits).unwrap_or_else(|| "00".into());
    let track2 = rec(0x57).map(digits).unwrap_or_default();
    let cdol1 = tlv::parse_dol(rec(0x8C).ok_or_else(|| missing("CDOL1 (8C)"))?)
        .map_err(|e| TapError::Data { step: "READ RECORD", what: e.to_string() })?;
    // Terminal risk management: the TVR, then terminal action analysis — decline offline (ask
    // for an AAC) when a denial bit is set, else go online (ask for an ARQC).
    let tvr = tvr(term, tx, &expiry);
    if let Some(t95) = terminal.iter_mut().find(|(k, _)| *k == 0x95) {
        t95.1 = tvr.to_vec();
    }
    let deny = tvr.iter().zip(term.tac_denial).any(|(a, b)| a & b != 0);
    // 5. GENERATE AC.
    let cdol_len = tlv::dol::dol_data_len(&cdol1);
    if cdol_len > MAX_CDOL_DATA {
        return Err(TapError::Data {
            step: "READ RECORD",
            what: format!(
                "CDOL1 asks for {cdol_len} bytes, more than a GENERATE AC command carries ({MAX_CDOL_DATA})"
            ),
        });
    }
    let cdol_data = tlv::build_dol_data(&cdol1, |t: Tag| {
        terminal.iter().find(|(k, _)| *k == t.value()).map(|(_, v)| v.clone())
    });
    let p1 = if deny { 0x00 } else { 0x80 };
    let rsp = exchange(card, "GENERATE AC", Command::build(0x80, 0xAE, p1, 0x00, &cdol_data))?;
    let nodes =
        tlv::decode_lenient(&rsp).map_err(|e| TapError::Data { step: "GENERATE AC", what: e.to_string() })?;
    let card_tag = |t: u32| tlv::find(&nodes, Tag::new(t)).map(|n| n.value().to_vec());
    let need = |t: u32, name: &str| {
        card_tag(t).ok_or(TapError::Data { step: "GENERATE AC", what: format!("no {name} ({t:X})") })
    };
    let (cid, atc, ac, iad) =
        (need(0x9F27, "CID")?, need(0x9F36, "ATC")?, need(0x9F26, "cryptogram")?, need(0x9F10, "IAD")?);

    // DE 55: the card's answers and the terminal's data.
    let mut icc = TlvBuilder::new();
    let put = |b: &mut TlvBuilder, t: u32, v: &[u8]| {
        b.primitive(Tag::new(t), v)
            .map(|_| ())
            .map_err(|e| TapError::Data { step: "DE 55", what: e.to_string() })
    };
    put(&mut icc, 0x9F26, &ac)?;
    put(&mut icc, 0x9F27, &cid)?;
    // The card's PAN (a phone's: its token) and PAN sequence number as its records gave them, so
    // the switch can check DE 2 and DE 23 against the card under this cryptogram.
    put(&mut icc, 0x5A, pan_cn)?;
    if let Some(psn) = rec(0x5F34) {
        put(&mut icc, 0x5F34, psn)?;
    }
    for (t, v) in &terminal {
        if *t != 0x9F66 {
            put(&mut icc, *t, v)?;
        }
    }
    put(&mut icc, 0x82, &aip)?;
    put(&mut icc, 0x9F36, &atc)?;
    put(&mut icc, 0x9F10, &iad)?;
    put(&mut icc, 0x84, &aid)?;
    let icc = icc.finish().to_vec();
    // The card's values go into DE 55 as they came: one outside its format (an empty 5F34, a
    // 9F27 of two bytes, ...) would make a request the acquirer refuses as a format error (EMV
    // Book 3 §7.5: card data that is not well formed ends the transaction here).
    tlv::decode_strict(&icc).map_err(|e| TapError::Data { step: "DE 55", what: e.to_string() })?;
    Ok(Tapped { pan, expiry, psn, track2, icc, cid: cid.first().copied().unwrap_or(0) })
}

/// Hands the issuer's tag 91 to the card (EXTERNAL AUTHENTICATE): true when the card accepts the
/// ARPC. Issuer authentication data is 8 to 16 bytes (EMV Book 3 Annex A, tag 91): anything else
/// is not sent, and counts as refused.
pub fn issuer_authenticate(card: &mut dyn Contactless, tag91: &[u8]) -> bool {
    if !(8..=16).contains(&tag91.len()) {
        return false;
    }
    exchange(card, "EXTERNAL AUTHENTICATE", Command::build(0x00, 0x82, 0x00, 0x00, tag91)).is_ok()
}

/// Tag 91 from an answer's DE 55 bytes.
pub fn tag91(icc: &[u8]) -> Option<Vec<u8>> {
    let nodes = tlv::decode_lenient(icc).ok()?;
    tlv::find(&nodes, Tag::new(0x91)).map(|n| n.value().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_authentication_data_outside_8_to_16_bytes_is_never_sent() {
        struct Counting(usize);
        impl Contactless for Counting {
            fn transceive(&mut self, _: &[u8]) -> Vec<u8> {
                self.0 += 1;
                vec![0x90, 0x00]
            }
        }
        let mut c = Counting(0);
        for bad in [vec![0u8; 7], vec![0u8; 17], vec![0u8; 300]] {
            assert!(!issuer_authenticate(&mut c, &bad), "{} bytes", bad.len());
        }
        assert_eq!(c.0, 0);
        assert!(issuer_authenticate(&mut c, &[0u8; 10]));
        assert_eq!(c.0, 1);
    }
    use crate::card::{CardKeys, CardProfile, EmvApplet};

    fn card(expiry: &str) -> EmvApplet {
        EmvApplet::new(CardProfile {
            pan: "4761739001010010".into(),
            expiry: expiry.into(),
            psn: "00".into(),
            cvn: "visa18".into(),
            aid: "A0000000031010".into(),
            label: "TEST".into(),
            keys: CardKeys::Master { icc_mk: "0123456789ABCDEFFEDCBA9876543210".into() },
            atc: 0,
        })
    }

    fn tx(amount: u64) -> TxData {
        TxData { amount, tx_type: 0, date: [0x26, 0x11, 0x25], un: [1, 2, 3, 4] }
    }

    #[test]
    fn risk_management_sets_the_tvr_and_declines_an_expired_card_offline() {
        let term = TerminalConfig { floor_limit: 5_000, ..TerminalConfig::default() };
        let ok = tap(&mut card("2912"), &term, &tx(1_000)).expect("tap");
        assert_eq!(ok.cid, 0x80, "online: an ARQC");
        assert_eq!(tvr(&term, &tx(1_000), "2912"), [0x80, 0, 0, 0, 0]);
        assert_eq!(tvr(&term, &tx(9_000), "2912"), [0x80, 0, 0, 0x80, 0], "over the floor limit");
        let expired = tap(&mut card("2510"), &term, &tx(1_000)).expect("tap");
        assert_eq!(expired.cid, 0x00, "an expired application is declined offline (AAC)");
        let nodes = tlv::decode_lenient(&expired.icc).expect("DE 55");
        assert_eq!(tlv::find(&nodes, Tag::new(0x95)).expect("TVR").value(), &[0x80, 0x40, 0, 0, 0]);
    }

    fn card_of(pan: &str, psn: &str) -> EmvApplet {
        EmvApplet::new(CardProfile { pan: pan.into(), psn: psn.into(), ..card("2912").profile().clone() })
    }

    #[test]
    fn de55_names_the_card_as_its_records_do() {
        let tag = |icc: &[u8], t: u32| {
            let nodes = tlv::decode_strict(icc).expect("DE 55");
            tlv::find(&nodes, Tag::new(t)).map(|n| n.value().to_vec())
        };
        let t = tap(&mut card_of("4761739001010010", "01"), &TerminalConfig::default(), &tx(1)).expect("tap");
        assert_eq!((t.pan.as_str(), t.psn.as_str()), ("4761739001010010", "01"));
        assert_eq!(tag(&t.icc, 0x5A), Some(vec![0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x10]));
        assert_eq!(tag(&t.icc, 0x5F34), Some(vec![0x01]));
        // The cryptogram keeps its place at the start of DE 55, the card's PAN right after it.
        let nodes = tlv::decode_strict(&t.icc).expect("DE 55");
        let order: Vec<u32> = nodes.iter().take(4).map(|n| n.tag().value()).collect();
        assert_eq!(order, [0x9F26, 0x9F27, 0x5A, 0x5F34]);
        // An odd number of digits (a 19-digit token): the card's F padding, as it came.
        let t =
            tap(&mut card_of("4895370012345678901", "12"), &TerminalConfig::default(), &tx(1)).expect("tap");
        assert_eq!(t.pan, "4895370012345678901");
        assert_eq!(tag(&t.icc, 0x5A), Some(vec![0x48, 0x95, 0x37, 0x00, 0x12, 0x34, 0x56, 0x78, 0x90, 0x1F]));
        assert_eq!(tag(&t.icc, 0x5F34), Some(vec![0x12]));
    }

    #[test]
    fn a_pan_that_is_not_digits_ends_the_tap() {
        // 5A with a D nibble inside, and with a digit after the F padding.
        for pan in ["4761739001010D10", "47617390010100A1"] {
            let e = tap(&mut card_of(pan, "01"), &TerminalConfig::default(), &tx(1)).expect_err(pan);
            assert_eq!(e.to_string(), "READ RECORD: a PAN (5A) that is not digits padded with F");
            assert!(!e.to_string().contains("4761"), "no PAN digits in the error");
        }
        assert_eq!(cn_digits(&[0xFF]), None, "no digit at all");
        assert_eq!(cn_digits(&[0x12, 0x3F]).as_deref(), Some("123"));
    }

    /// A card that answers from a script (then `90 00` with no data to everything, as a hostile
    /// phone would), counting the commands it is sent.
    struct Scripted {
        answers: Vec<Vec<u8>>,
        sent: usize,
    }

    impl Contactless for Scripted {
        fn transceive(&mut self, _: &[u8]) -> Vec<u8> {
            self.sent += 1;
            self.answers.get(self.sent - 1).cloned().unwrap_or_else(|| vec![0x90, 0x00])
        }
    }

    /// The genuine card's answers up to GPO, with `gpo` (TLV, without SW) in place of its GPO answer.
    fn up_to_gpo(gpo: &[u8]) -> Vec<Vec<u8>> {
        let mut c = card("2912");
        let mut answers = vec![
            c.transceive(&Command::build(0, 0xA4, 4, 0, PPSE)),
            c.transceive(&Command::build(0, 0xA4, 4, 0, &[0xA0, 0, 0, 0, 0x03, 0x10, 0x10])),
        ];
        answers.push([gpo, &[0x90, 0x00]].concat());
        answers
    }

    /// A GPO answer (format 2) with the AIP of an online-only card and `afl`.
    fn gpo_answer(afl: &[u8]) -> Vec<u8> {
        let mut b = TlvBuilder::new();
        b.constructed(Tag::new(0x77), |t| {
            t.primitive(Tag::new(0x82), &[0x20, 0x00])?;
            t.primitive(Tag::new(0x94), afl)?;
            Ok(())
        })
        .expect("tlv");
        b.finish().to_vec()
    }

    #[test]
    fn fuzz_kernel_tap_crash_6dedcb5e_a_card_value_outside_its_format_never_reaches_de55() {
        // cargo fuzz kernel_tap, crash-6dedcb5ebfae8c653b7dce1e7549cd103a43be7b: mode 00, then the
        // answers (2-byte length each); the record's 5F34 is empty (`5F34 81 00`), which the
        // kernel used to copy into DE 55 — a DE 55 the acquirer refuses.
        let input = hex::decode(concat!(
        "0000366f32840e325041592e5359532e4444463031a520bf0c1d611b4f07a0000000031010500d5041594e4554204352",
        "45444954870101900000396f358407a0000000031010a52a500d5041594e4554204352454449549f38189f66049f0206",
        "9f03069f1a0295055f2a029a039c019f370490000012770e820220009408080102001001010090000044704057134761",
        "739001010010d29122010000000000000f5a0847617390010100105f24032912315f3481008c159f02069f03069f951a",
        "02055f2a3b9a039c019f37049000000970059f0802000290000004700090000022771e9f2701809f360200019f260811",
        "223344556677889f100706010a03a000009000",
        ))
        .expect("hex");
        let mut answers = Vec::new();
        let mut rest = &input[1..];
        while let [a, b, r @ ..] = rest {
            let n = usize::from(u16::from_be_bytes([*a, *b])).min(r.len());
            answers.push(r[..n].to_vec());
            rest = &r[n..];
        }
        let e = tap(&mut Scripted { answers, sent: 0 }, &TerminalConfig::default(), &tx(1_000))
            .expect_err("an empty PSN");
        assert!(
            matches!(&e, TapError::Data { step: "DE 55", what } if what.contains("Sequence Number")),
            "{e}"
        );
    }

    #[test]
    fn an_afl_cannot_keep_the_terminal_reading() {
        // 63 entries naming SFI 1 records 1-254 each: 16,002 READ RECORDs before; now the second
        // entry is refused (a record named twice), after the first entry's 254 reads.
        let mut c =
            Scripted { answers: up_to_gpo(&gpo_answer(&[0x08, 0x01, 0xFE, 0x00].repeat(63))), sent: 0 };
        let e = tap(&mut c, &TerminalConfig::default(), &tx(1)).expect_err("a record named twice");
        assert!(
            e.to_string().contains("AFL entry 1 (0801FE00): a record another entry names already"),
            "{e}"
        );
        assert_eq!(c.sent, 3 + 254);
        // Longer than 252 bytes, SFI 0 or 31, first record 0, last below first, too many for ODA.
        for (afl, what) in [
            ([0x08, 0x01, 0x01, 0x00].repeat(64), "an AFL of 256 bytes"),
            (vec![0x00, 0x01, 0x01, 0x00], "SFI outside 1 to 30"),
            (vec![0xF8, 0x01, 0x01, 0x00], "SFI outside 1 to 30"),
            (vec![0x08, 0x00, 0x01, 0x00], "records must run from 1 up"),
            (vec![0x08, 0x02, 0x01, 0x00], "records must run from 1 up"),
            (vec![0x08, 0x01, 0x02, 0x03], "more records for offline data authentication"),
        ] {
            let mut c = Scripted { answers: up_to_gpo(&gpo_answer(&afl)), sent: 0 };
            let e = tap(&mut c, &TerminalConfig::default(), &tx(1)).expect_err(what);
            assert!(e.to_string().contains(what), "{e}");
            assert_eq!(c.sent, 3, "no READ RECORD for {what}");
        }
    }

    #[test]
    fn a_dol_asking_for_more_than_an_apdu_carries_is_refused_before_it_is_built() {
        // A PDOL entry asking for 16 MB (length 83 FF FF FF) used to be built in memory, then sent
        // with its length truncated to one byte.
        let mut b = TlvBuilder::new();
        b.constructed(Tag::new(0x6F), |t| {
            t.constructed(Tag::new(0xA5), |t| {
                t.primitive(Tag::new(0x9F38), &[0x9F, 0x02, 0x83, 0xFF, 0xFF, 0xFF])?;
                Ok(())
            })?;
            Ok(())
        })
        .expect("tlv");
        let mut answers = up_to_gpo(&[]);
        answers[1] = [&b.finish()[..], &[0x90, 0x00]].concat();
        let mut c = Scripted { answers, sent: 0 };
        let e = tap(&mut c, &TerminalConfig::default(), &tx(1)).expect_err("PDOL too long");
        assert_eq!(
            e.to_string(),
            "SELECT AID: the PDOL asks for 16777215 bytes, more than a GPO command carries (252)"
        );
        assert_eq!(c.sent, 2);
    }

    #[test]
    fn a_card_that_answers_garbage_is_a_clear_error() {
        struct Mute;
        impl Contactless for Mute {
            fn transceive(&mut self, _: &[u8]) -> Vec<u8> {
                vec![0x6A]
            }
        }
        let e = tap(&mut Mute, &TerminalConfig::default(), &tx(1)).expect_err("no card");
        assert_eq!(e.to_string(), "SELECT PPSE: a response shorter than SW1 SW2");
    }
}
