//! The EMV contactless card application (EMV Book 3 §6, Book C-2/C-3 style online-only card).
//!
//! The dialogue it answers, in the order a kernel runs it:
//!
//! 1. `SELECT 2PAY.SYS.DDF01` (PPSE) → FCI with one directory entry (`61`: `4F` AID, `50` label,
//!    `87` priority).
//! 2. `SELECT <AID>` → FCI with the PDOL (`9F38`).
//! 3. `GET PROCESSING OPTIONS` with the PDOL data in `83` → `77`: AIP (`82`) and AFL (`94`, one
//!    record in SFI 1).
//! 4. `READ RECORD` SFI 1 record 1 → `70`: track 2 equivalent (`57`), PAN (`5A`), expiry (`5F24`),
//!    PSN (`5F34`), CDOL1 (`8C`).
//! 5. `GENERATE AC` (P1 = 80: ARQC) with the CDOL1 data → `77`: CID (`9F27`), ATC (`9F36`), the
//!    cryptogram (`9F26`) over the data its CVN defines, IAD (`9F10`). The card never approves
//!    offline: asked for a TC it still answers an ARQC (online-only); asked for an AAC it declines.
//! 6. `EXTERNAL AUTHENTICATE` with tag 91's value (ARPC ‖ ARC, or ARPC ‖ CSU) → 9000 when the
//!    issuer's ARPC verifies for the last ARQC, 6300 when it does not.
//!
//! The ATC rises by one per GENERATE AC from the master key; a card on limited-use keys takes the
//! next key it holds (its ATC) and forgets it after use — with none left it answers 6985 until the
//! phone replenishes.

use codecs::tlv::{Tag, TlvBuilder};
use crypto::emv::{ArpcInput, Atc, CardInputs, Cvn, PanDigits, Psn, UnpredictableNumber, ac_data_from_tags};
use crypto::keys::TdesKey;

use super::{CardKeys, CardProfile, Contactless};
use crate::apdu::{Command, Sw};

/// The PPSE name (EMV Book B §3.3).
pub const PPSE: &[u8] = b"2PAY.SYS.DDF01";

/// What the card asks the terminal for in GPO, (tag, length).
pub const PDOL: [(u32, usize); 9] = [
    (0x9F66, 4),
    (0x9F02, 6),
    (0x9F03, 6),
    (0x9F1A, 2),
    (0x95, 5),
    (0x5F2A, 2),
    (0x9A, 3),
    (0x9C, 1),
    (0x9F37, 4),
];

/// What the card asks for in the first GENERATE AC (tag, length).
pub const CDOL1: [(u32, usize); 8] =
    [(0x9F02, 6), (0x9F03, 6), (0x9F1A, 2), (0x95, 5), (0x5F2A, 2), (0x9A, 3), (0x9C, 1), (0x9F37, 4)];

/// AIP: online-only contactless card, no offline data authentication.
const AIP: [u8; 2] = [0x20, 0x00];

/// The card's issuer application data for its CVN (Visa: length, DKI, CVN, CVR; Mastercard: DKI,
/// CVN, CVR, counters; EMV CSK: the common core definition's format).
pub fn iad(cvn: Cvn) -> Vec<u8> {
    match cvn {
        Cvn::Visa10 => vec![0x06, 0x01, 0x0A, 0x03, 0xA0, 0x00, 0x00],
        Cvn::Visa18 => vec![0x06, 0x01, 0x12, 0x03, 0xA0, 0x00, 0x00],
        Cvn::Visa22 => vec![0x06, 0x01, 0x16, 0x03, 0xA0, 0x00, 0x00],
        Cvn::Mc16 => vec![0x01, 0x10, 0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0],
        Cvn::Mc17 => vec![0x01, 0x11, 0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0],
        Cvn::Mc20 => vec![0x01, 0x14, 0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0],
        Cvn::Mc21 => vec![0x01, 0x15, 0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0],
        Cvn::EmvCsk => vec![0x0F, 0xA5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selected {
    Nothing,
    Ppse,
    Application,
}

/// The last cryptogram, kept for EXTERNAL AUTHENTICATE.
struct LastAc {
    arqc: [u8; 8],
    atc: Atc,
    un: Option<UnpredictableNumber>,
    /// The session key the cryptogram was made with (limited-use cards).
    luk: Option<TdesKey>,
}

/// The card application over its profile.
pub struct EmvApplet {
    profile: CardProfile,
    selected: Selected,
    gpo_done: bool,
    last: Option<LastAc>,
    /// Whether the issuer's ARPC verified for the last ARQC.
    pub issuer_authenticated: Option<bool>,
}

impl EmvApplet {
    pub fn new(profile: CardProfile) -> Self {
        EmvApplet {
            profile,
            selected: Selected::Nothing,
            gpo_done: false,
            last: None,
            issuer_authenticated: None,
        }
    }

    pub fn profile(&self) -> &CardProfile {
        &self.profile
    }

    /// The profile after the transactions run (ATC moved on, limited-use keys used up), to store.
    pub fn into_profile(self) -> CardProfile {
        self.profile
    }

    fn aid(&self) -> Vec<u8> {
        hex::decode(&self.profile.aid).unwrap_or_default()
    }

    fn cvn(&self) -> Result<Cvn, Sw> {
        self.profile.cvn.parse().map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)
    }

    /// Handles one command APDU; the response data and status word.
    pub fn handle(&mut self, command: &[u8]) -> (Vec<u8>, Sw) {
        let Ok(c) = Command::parse(command) else { return (Vec::new(), Sw::WRONG_LENGTH) };
        let r = match (c.cla, c.ins) {
            (0x00, 0xA4) => self.select(&c),
            (0x80, 0xA8) => self.gpo(&c),
            (0x00, 0xB2) => self.read_record(&c),
            (0x80, 0xAE) => self.generate_ac(&c),
            (0x00, 0x82) => self.external_authenticate(&c),
            (0x00 | 0x80, _) => Err(Sw::INS_NOT_SUPPORTED),
            _ => Err(Sw::CLA_NOT_SUPPORTED),
        };
        match r {
            Ok(data) => (data, Sw::OK),
            Err(sw) => (Vec::new(), sw),
        }
    }

    fn select(&mut self, c: &Command<'_>) -> Result<Vec<u8>, Sw> {
        if c.p1 != 0x04 {
            return Err(Sw::WRONG_P1P2);
        }
        self.gpo_done = false;
        self.last = None;
        let mut fci = TlvBuilder::new();
        let aid = self.aid();
        let label = self.profile.label.as_bytes();
        let built = if c.data == PPSE {
            self.selected = Selected::Ppse;
            fci.constructed(Tag::new(0x6F), |t| {
                t.primitive(Tag::new(0x84), PPSE)?;
                t.constructed(Tag::new(0xA5), |t| {
                    t.constructed(Tag::new(0xBF0C), |t| {
                        t.constructed(Tag::new(0x61), |t| {
                            t.primitive(Tag::new(0x4F), &aid)?;
                            t.primitive(Tag::new(0x50), label)?;
                            t.primitive(Tag::new(0x87), &[0x01])?;
                            Ok(())
                        })?;
                        Ok(())
                    })?;
                    Ok(())
                })?;
                Ok(())
            })
        } else if !aid.is_empty() && c.data == aid.as_slice() {
            self.selected = Selected::Application;
            let pdol = dol_bytes(&PDOL);
            fci.constructed(Tag::new(0x6F), |t| {
                t.primitive(Tag::new(0x84), &aid)?;
                t.constructed(Tag::new(0xA5), |t| {
                    t.primitive(Tag::new(0x50), label)?;
                    t.primitive(Tag::new(0x9F38), &pdol)?;
                    Ok(())
                })?;
                Ok(())
            })
        } else {
            self.selected = Selected::Nothing;
            return Err(Sw::FILE_NOT_FOUND);
        };
        built.map_err(|_| Sw::WRONG_DATA)?;
        Ok(fci.finish().to_vec())
    }

    fn gpo(&mut self, c: &Command<'_>) -> Result<Vec<u8>, Sw> {
        if self.selected != Selected::Application {
            return Err(Sw::CONDITIONS_NOT_SATISFIED);
        }
        let want: usize = PDOL.iter().map(|(_, l)| l).sum();
        match c.data {
            [0x83, len, rest @ ..] if usize::from(*len) == rest.len() && rest.len() == want => {}
            _ => return Err(Sw::WRONG_DATA),
        }
        self.gpo_done = true;
        let mut b = TlvBuilder::new();
        b.constructed(Tag::new(0x77), |t| {
            t.primitive(Tag::new(0x82), &AIP)?;
            t.primitive(Tag::new(0x94), &[0x08, 0x01, 0x01, 0x00])?;
            Ok(())
        })
        .map_err(|_| Sw::WRONG_DATA)?;
        Ok(b.finish().to_vec())
    }

    fn read_record(&mut self, c: &Command<'_>) -> Result<Vec<u8>, Sw> {
        if !self.gpo_done {
            return Err(Sw::CONDITIONS_NOT_SATISFIED);
        }
        // SFI 1 (P2 = SFI << 3 | 4), record 1.
        if c.p2 != 0x0C || c.p1 != 0x01 {
            return Err(Sw::RECORD_NOT_FOUND);
        }
        let p = &self.profile;
        let pan = bcd_digits(&p.pan, 0xF);
        let mut track2 = format!("{}D{}201", p.pan, p.expiry);
        track2.push_str("00000000000");
        let track2 = bcd_digits(&track2, 0xF);
        let expiry = bcd_digits(&format!("{}31", p.expiry), 0xF);
        let psn = bcd_digits(&p.psn, 0xF);
        let cdol1 = dol_bytes(&CDOL1);
        let mut b = TlvBuilder::new();
        b.constructed(Tag::new(0x70), |t| {
            t.primitive(Tag::new(0x57), &track2)?;
            t.primitive(Tag::new(0x5A), &pan)?;
            t.primitive(Tag::new(0x5F24), &expiry)?;
            t.primitive(Tag::new(0x5F34), &psn)?;
            t.primitive(Tag::new(0x8C), &cdol1)?;
            Ok(())
        })
        .map_err(|_| Sw::WRONG_DATA)?;
        Ok(b.finish().to_vec())
    }

    fn generate_ac(&mut self, c: &Command<'_>) -> Result<Vec<u8>, Sw> {
        if !self.gpo_done {
            return Err(Sw::CONDITIONS_NOT_SATISFIED);
        }
        let want: usize = CDOL1.iter().map(|(_, l)| l).sum();
        if c.data.len() != want {
            return Err(Sw::WRONG_LENGTH);
        }
        let cvn = self.cvn()?;
        // Split the CDOL1 data into its tags.
        let mut tags: Vec<(u32, Vec<u8>)> = Vec::with_capacity(12);
        let mut at = 0;
        for (t, l) in CDOL1 {
            tags.push((t, c.data[at..at + l].to_vec()));
            at += l;
        }
        // The next ATC and its key.
        let (atc, luk) = match &mut self.profile.keys {
            CardKeys::Master { .. } => {
                let next = self.profile.atc.checked_add(1).ok_or(Sw::CONDITIONS_NOT_SATISFIED)?;
                (next, None)
            }
            CardKeys::Limited { luks } => {
                if luks.is_empty() {
                    return Err(Sw::CONDITIONS_NOT_SATISFIED);
                }
                let l = luks.remove(0);
                let atc = u16::from_str_radix(&l.atc, 16).map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)?;
                let key = TdesKey::from_hex("luk", &l.key).map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)?;
                (atc, Some(key))
            }
        };
        self.profile.atc = atc;
        tags.push((0x82, AIP.to_vec()));
        tags.push((0x9F36, atc.to_be_bytes().to_vec()));
        tags.push((0x9F10, iad(cvn)));
        let get = |t: u32| tags.iter().find(|(k, _)| *k == t).map(|(_, v)| v.as_slice());
        let data = ac_data_from_tags(cvn, get).map_err(|_| Sw::WRONG_DATA)?;
        let un = get(0x9F37).and_then(|u| UnpredictableNumber::from_slice(u).ok());
        let ac = match (&luk, &self.profile.keys) {
            (Some(sk), _) => cvn.session_ac(sk, &data),
            (None, CardKeys::Master { icc_mk }) => {
                let icc_mk = TdesKey::from_hex("icc_mk", icc_mk).map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)?;
                let pan = PanDigits::new(&self.profile.pan).map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)?;
                let psn: Psn = self.profile.psn.parse().map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)?;
                cvn.card_ac(&icc_mk, &CardInputs { pan: &pan, psn, atc: Atc(atc), un }, &data)
            }
            (None, CardKeys::Limited { .. }) => return Err(Sw::CONDITIONS_NOT_SATISFIED),
        }
        .map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)?;
        // Online-only: an ARQC for "ARQC" or "TC" requests, an AAC when the terminal declines.
        let cid = if c.p1 & 0xC0 == 0x00 { 0x00 } else { 0x80 };
        self.last = (cid == 0x80).then(|| LastAc { arqc: ac, atc: Atc(atc), un, luk });
        self.issuer_authenticated = None;
        let mut b = TlvBuilder::new();
        b.constructed(Tag::new(0x77), |t| {
            t.primitive(Tag::new(0x9F27), &[cid])?;
            t.primitive(Tag::new(0x9F36), &atc.to_be_bytes())?;
            t.primitive(Tag::new(0x9F26), &ac)?;
            t.primitive(Tag::new(0x9F10), &iad(cvn))?;
            Ok(())
        })
        .map_err(|_| Sw::WRONG_DATA)?;
        Ok(b.finish().to_vec())
    }

    fn external_authenticate(&mut self, c: &Command<'_>) -> Result<Vec<u8>, Sw> {
        let cvn = self.cvn()?;
        let last = self.last.as_ref().ok_or(Sw::CONDITIONS_NOT_SATISFIED)?;
        let (input, n) = match cvn.arpc_method() {
            Some(2) => match c.data.get(4..8).and_then(|x| <[u8; 4]>::try_from(x).ok()) {
                Some(csu) => {
                    (ArpcInput::Csu { csu, proprietary: c.data.get(8..).unwrap_or(&[]).to_vec() }, 4)
                }
                None => return Err(Sw::WRONG_LENGTH),
            },
            _ => match c.data.get(8..10).and_then(|x| <[u8; 2]>::try_from(x).ok()) {
                Some(arc) if c.data.len() == 10 => (ArpcInput::Arc(arc), 8),
                _ => return Err(Sw::WRONG_LENGTH),
            },
        };
        let expected = match (&last.luk, &self.profile.keys) {
            (Some(sk), _) => cvn.session_arpc(sk, &last.arqc, &input),
            (None, CardKeys::Master { icc_mk }) => {
                let icc_mk = TdesKey::from_hex("icc_mk", icc_mk).map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)?;
                let pan = PanDigits::new(&self.profile.pan).map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)?;
                let psn: Psn = self.profile.psn.parse().map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)?;
                let inputs = CardInputs { pan: &pan, psn, atc: last.atc, un: last.un };
                cvn.card_arpc(&icc_mk, &inputs, &last.arqc, &input)
            }
            (None, CardKeys::Limited { .. }) => return Err(Sw::CONDITIONS_NOT_SATISFIED),
        }
        .map_err(|_| Sw::CONDITIONS_NOT_SATISFIED)?;
        let ok = c.data.get(..n).is_some_and(|got| {
            use subtle::ConstantTimeEq;
            bool::from(got.ct_eq(expected.as_slice()))
        });
        self.issuer_authenticated = Some(ok);
        if ok { Ok(Vec::new()) } else { Err(Sw::VERIFICATION_FAILED) }
    }
}

impl Contactless for EmvApplet {
    fn transceive(&mut self, command: &[u8]) -> Vec<u8> {
        let (mut data, sw) = self.handle(command);
        data.extend_from_slice(&sw.bytes());
        data
    }
}

/// A DOL's encoding: each tag followed by its one-byte length.
fn dol_bytes(dol: &[(u32, usize)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, l) in dol {
        let tb = t.to_be_bytes();
        let skip = tb.iter().take_while(|b| **b == 0).count().min(3);
        out.extend_from_slice(&tb[skip..]);
        out.push(*l as u8);
    }
    out
}

/// Digits (and `D` separators) packed two per byte, padded with `pad` to a whole byte.
fn bcd_digits(s: &str, pad: u8) -> Vec<u8> {
    let nibbles: Vec<u8> = s
        .bytes()
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'D' | b'=' => 0xD,
            _ => 0xF,
        })
        .collect();
    nibbles.chunks(2).map(|p| (p[0] << 4) | p.get(1).copied().unwrap_or(pad)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apdu::split_response;
    use crate::card::Luk;

    fn card(keys: CardKeys) -> EmvApplet {
        EmvApplet::new(CardProfile {
            pan: "4761739001010010".into(),
            expiry: "2912".into(),
            psn: "00".into(),
            cvn: "visa18".into(),
            aid: "A0000000031010".into(),
            label: "PAYNET CREDIT".into(),
            keys,
            atc: 0,
        })
    }

    const ICC_MK: &str = "0123456789ABCDEFFEDCBA9876543210";

    fn run(c: &mut EmvApplet, cmd: Vec<u8>) -> (Vec<u8>, Sw) {
        let r = c.transceive(&cmd);
        let (d, sw) = split_response(&r).expect("response");
        (d.to_vec(), sw)
    }

    fn cdol1_data() -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&[0, 0, 0, 0, 0x10, 0]); // 9F02
        d.extend_from_slice(&[0; 6]); // 9F03
        d.extend_from_slice(&[0x02, 0x50]); // 9F1A
        d.extend_from_slice(&[0; 5]); // 95
        d.extend_from_slice(&[0x09, 0x78]); // 5F2A
        d.extend_from_slice(&[0x26, 0x11, 0x25]); // 9A
        d.push(0); // 9C
        d.extend_from_slice(&[1, 2, 3, 4]); // 9F37
        d
    }

    fn dialogue(c: &mut EmvApplet) -> (Vec<u8>, Sw) {
        assert_eq!(run(c, Command::build(0, 0xA4, 4, 0, PPSE)).1, Sw::OK);
        assert_eq!(
            run(c, Command::build(0, 0xA4, 4, 0, &hex::decode("A0000000031010").expect("aid"))).1,
            Sw::OK
        );
        let mut pdol = vec![0x83, 33, 0x36, 0, 0, 0];
        pdol.extend_from_slice(&cdol1_data());
        assert_eq!(run(c, Command::build(0x80, 0xA8, 0, 0, &pdol)).1, Sw::OK);
        assert_eq!(run(c, Command::build(0, 0xB2, 1, 0x0C, &[])).1, Sw::OK);
        run(c, Command::build(0x80, 0xAE, 0x80, 0, &cdol1_data()))
    }

    #[test]
    fn the_cryptogram_is_what_the_issuer_computes() {
        let mut c = card(CardKeys::Master { icc_mk: ICC_MK.into() });
        let (data, sw) = dialogue(&mut c);
        assert_eq!(sw, Sw::OK);
        let nodes = codecs::tlv::decode_lenient(&data).expect("tlv");
        let ac = codecs::tlv::find(&nodes, Tag::new(0x9F26)).expect("9F26").value().to_vec();
        assert_eq!(codecs::tlv::find(&nodes, Tag::new(0x9F36)).expect("ATC").value(), &[0, 1]);
        // The same data through the crypto crate directly.
        let mut tags: Vec<(u32, Vec<u8>)> = Vec::new();
        let d = cdol1_data();
        let mut at = 0;
        for (t, l) in CDOL1 {
            tags.push((t, d[at..at + l].to_vec()));
            at += l;
        }
        tags.push((0x82, AIP.to_vec()));
        tags.push((0x9F36, vec![0, 1]));
        tags.push((0x9F10, iad(Cvn::Visa18)));
        let get = |t: u32| tags.iter().find(|(k, _)| *k == t).map(|(_, v)| v.as_slice());
        let data = ac_data_from_tags(Cvn::Visa18, get).expect("data");
        let pan = PanDigits::new("4761739001010010").expect("pan");
        let inputs = CardInputs { pan: &pan, psn: Psn::new(0).expect("psn"), atc: Atc(1), un: None };
        let mk = TdesKey::from_hex("k", ICC_MK).expect("key");
        assert_eq!(Cvn::Visa18.card_ac(&mk, &inputs, &data).expect("ac").to_vec(), ac);
        // The issuer's ARPC (method 2 for visa18) is accepted; a wrong one is not.
        let arpc = Cvn::Visa18
            .card_arpc(&mk, &inputs, &ac, &ArpcInput::Csu { csu: [0, 0, 0, 0], proprietary: vec![] })
            .expect("arpc");
        let mut t91 = arpc.clone();
        t91.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(run(&mut c, Command::build(0, 0x82, 0, 0, &t91)).1, Sw::OK);
        t91[0] ^= 1;
        assert_eq!(run(&mut c, Command::build(0, 0x82, 0, 0, &t91)).1, Sw::VERIFICATION_FAILED);
        // The ATC moves on.
        let (data, _) = dialogue(&mut c);
        let nodes = codecs::tlv::decode_lenient(&data).expect("tlv");
        assert_eq!(codecs::tlv::find(&nodes, Tag::new(0x9F36)).expect("ATC").value(), &[0, 2]);
    }

    #[test]
    fn limited_use_keys_run_out() {
        let mk = TdesKey::from_hex("k", ICC_MK).expect("key");
        let luks = (7u16..9)
            .map(|a| Luk {
                atc: format!("{a:04X}"),
                key: crypto::keys::to_hex(crypto::emv::common_session_key(&mk, Atc(a)).expose()),
            })
            .collect();
        let mut c = card(CardKeys::Limited { luks });
        for atc in [7u8, 8] {
            let (data, sw) = dialogue(&mut c);
            assert_eq!(sw, Sw::OK);
            let nodes = codecs::tlv::decode_lenient(&data).expect("tlv");
            assert_eq!(codecs::tlv::find(&nodes, Tag::new(0x9F36)).expect("ATC").value(), &[0, atc]);
        }
        assert_eq!(c.profile().luks_left(), Some(0));
        assert_eq!(dialogue(&mut c).1, Sw::CONDITIONS_NOT_SATISFIED, "no key left: replenish");
    }

    #[test]
    fn commands_out_of_order_or_malformed_are_refused() {
        let mut c = card(CardKeys::Master { icc_mk: ICC_MK.into() });
        assert_eq!(
            run(&mut c, Command::build(0x80, 0xAE, 0x80, 0, &cdol1_data())).1,
            Sw::CONDITIONS_NOT_SATISFIED
        );
        assert_eq!(run(&mut c, Command::build(0, 0xA4, 4, 0, b"NOPE")).1, Sw::FILE_NOT_FOUND);
        assert_eq!(c.transceive(&[0x80]), Sw::WRONG_LENGTH.bytes().to_vec());
        assert_eq!(run(&mut c, Command::build(0x00, 0x20, 0, 0x80, &[1])).1, Sw::INS_NOT_SUPPORTED);
        let dbg = format!("{:?}", c.profile());
        assert!(!dbg.contains("4761739001010010") && !dbg.contains(ICC_MK), "{dbg}");
    }
}
