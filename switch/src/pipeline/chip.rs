//! DE 55 parsed once, at the edge, into the chip data the stages read.

use bytes::Bytes;
use codecs::tlv;

/// A request's chip data: its top-level tags as sent (each once), with typed views of those the
/// switch checks against the message. DE 55 is kept once, each tag as where its value lies in it.
#[derive(Debug, Clone, Default)]
pub struct Chip {
    tags: tlv::TopLevel,
}

/// Packed BCD digits as a string (`F` nibbles, padding, end it).
fn bcd_digits(b: &[u8]) -> Option<String> {
    let mut s = String::with_capacity(b.len() * 2);
    for nib in b.iter().flat_map(|x| [x >> 4, x & 0x0F]) {
        match nib {
            0..=9 => s.push(char::from(b'0' + nib)),
            0x0F => break,
            _ => return None,
        }
    }
    Some(s)
}

impl Chip {
    /// Parses DE 55 (see [`tlv::TopLevel::parse`]: a tag named twice is refused — the switch's
    /// checks would read one value and the issuer's cryptogram might cover the other).
    pub fn parse(icc: Bytes) -> Result<Chip, String> {
        tlv::TopLevel::parse(icc).map(|tags| Chip { tags }).map_err(|e| format!("DE 55: {e}"))
    }

    /// The value of `tag`.
    pub fn tag(&self, tag: u32) -> Option<&[u8]> {
        self.tags.get(tag)
    }

    pub fn has(&self, tag: u32) -> bool {
        self.tags.has(tag)
    }

    /// 9F26, the application cryptogram.
    pub fn cryptogram(&self) -> Option<&[u8]> {
        self.tag(0x9F26)
    }

    /// 9F27, the cryptogram information data: its two top bits say which cryptogram it is.
    pub fn cryptogram_type(&self) -> Option<CryptogramType> {
        let cid = *self.tag(0x9F27)?.first()?;
        Some(match cid & 0xC0 {
            0x00 => CryptogramType::Aac,
            0x40 => CryptogramType::Tc,
            0x80 => CryptogramType::Arqc,
            _ => CryptogramType::Reserved,
        })
    }

    /// 9F36, the application transaction counter.
    pub fn atc(&self) -> Option<u16> {
        let b: [u8; 2] = self.tag(0x9F36)?.try_into().ok()?;
        Some(u16::from_be_bytes(b))
    }

    /// 9F02, amount authorised (n 12, BCD), in minor units.
    pub fn amount_authorised(&self) -> Option<u64> {
        let v = self.tag(0x9F02)?;
        if v.len() != 6 {
            return None;
        }
        bcd_digits(v).filter(|d| d.len() == 12).and_then(|d| d.parse().ok())
    }

    /// 5F2A, transaction currency code (n 3 in two BCD bytes), as three digits.
    pub fn currency(&self) -> Option<String> {
        let v = self.tag(0x5F2A)?;
        if v.len() != 2 {
            return None;
        }
        let d = bcd_digits(v).filter(|d| d.len() == 4)?;
        d.strip_prefix('0').map(str::to_string)
    }

    /// 5A, the application PAN (BCD, `F`-padded), when the card gave it.
    pub fn pan_digits(&self) -> Option<String> {
        bcd_digits(self.tag(0x5A)?)
    }

    /// 5F34, the PAN sequence number (n 2), when the card gave it.
    pub fn psn(&self) -> Option<u8> {
        let v = self.tag(0x5F34)?;
        let d = bcd_digits(v)?;
        d.parse().ok()
    }
}

/// What kind of cryptogram 9F27 announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptogramType {
    /// Application authentication cryptogram: the card declined.
    Aac,
    /// Transaction certificate: the card approved offline.
    Tc,
    /// Authorization request cryptogram: the card asks to go online.
    Arqc,
    Reserved,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chip(tags: &[(u32, &[u8])]) -> Chip {
        let mut b = tlv::TlvBuilder::new();
        for (t, v) in tags {
            b.primitive(tlv::Tag::new(*t), v).expect("tag");
        }
        Chip::parse(b.finish().into()).expect("parse")
    }

    #[test]
    fn typed_views() {
        let c = chip(&[
            (0x9F02, &[0, 0, 0, 0, 0x12, 0x34]),
            (0x5F2A, &[0x09, 0x78]),
            (0x9F27, &[0x80]),
            (0x9F36, &[0x00, 0x2A]),
            (0x5A, &[0x47, 0x61, 0x73, 0x00, 0x00, 0x00, 0x00, 0x11]),
            (0x5F34, &[0x01]),
        ]);
        assert_eq!(c.amount_authorised(), Some(1234));
        assert_eq!(c.currency().as_deref(), Some("978"));
        assert_eq!(c.cryptogram_type(), Some(CryptogramType::Arqc));
        assert_eq!(c.atc(), Some(42));
        assert_eq!(c.pan_digits().as_deref(), Some("4761730000000011"));
        assert_eq!(c.psn(), Some(1));
        let odd = chip(&[(0x5A, &[0x47, 0x61, 0x73, 0x00, 0x00, 0x00, 0x01, 0x1F]), (0x9F27, &[0x00])]);
        assert_eq!(odd.pan_digits().as_deref(), Some("476173000000011"));
        assert_eq!(odd.cryptogram_type(), Some(CryptogramType::Aac));
        let bad = chip(&[(0x9F02, &[0xAA, 0, 0, 0, 0, 0]), (0x5F2A, &[0x09])]);
        assert_eq!(bad.amount_authorised(), None);
        assert_eq!(bad.currency(), None);
    }
}
