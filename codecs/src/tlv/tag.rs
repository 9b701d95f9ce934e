//! BER-TLV tags (EMV Book 3 Annex B1; ISO/IEC 8825-1 §8.1.2).
//!
//! A tag is one or more bytes: the first carries the class (b8–b7), the primitive/constructed flag
//! (b6) and either the tag number (b5–b1) or `11111`, meaning "subsequent bytes follow"; each
//! subsequent byte has b8 = 1 when yet another follows. EMV uses tags of one or two bytes; we accept
//! up to four so that any tag fits the [`Tag`] newtype's `u32`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Location, Result};

/// The longest tag we accept, in bytes (EMV uses at most 2; ISO 7816-4 allows 3).
pub const MAX_TAG_LEN: usize = 4;

/// A BER-TLV tag, held as the big-endian integer of its bytes (`9F26` is `Tag::new(0x9F26)`).
///
/// Displays as uppercase hex of its bytes (`9F26`, `5A`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(u32);

/// The class of a tag (ISO/IEC 8825-1 §8.1.2.2, bits b8–b7 of the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagClass {
    Universal,
    Application,
    ContextSpecific,
    Private,
}

impl Tag {
    /// A tag from its integer value. Does not check that the bytes form exactly one well-formed
    /// tag; see [`Tag::is_well_formed`] and [`Tag::from_bytes`].
    pub const fn new(value: u32) -> Self {
        Tag(value)
    }

    /// The big-endian integer value (`0x9F26`).
    pub const fn value(self) -> u32 {
        self.0
    }

    /// Number of bytes of the tag (at least 1; `Tag(0)` is the one-byte tag `00`).
    pub const fn len(self) -> usize {
        let v = self.0;
        if v > 0x00FF_FFFF {
            4
        } else if v > 0xFFFF {
            3
        } else if v > 0xFF {
            2
        } else {
            1
        }
    }

    /// Always false: a tag has at least one byte. Present for API symmetry with `len`.
    pub const fn is_empty(self) -> bool {
        false
    }

    /// The first byte (class, constructed flag, tag number or `1F`).
    pub const fn first_byte(self) -> u8 {
        (self.0 >> (8 * (self.len() - 1))) as u8
    }

    /// Constructed (b6 of the first byte set): the value is itself a sequence of TLV objects.
    pub const fn is_constructed(self) -> bool {
        self.first_byte() & 0x20 != 0
    }

    pub const fn class(self) -> TagClass {
        match self.first_byte() >> 6 {
            0 => TagClass::Universal,
            1 => TagClass::Application,
            2 => TagClass::ContextSpecific,
            _ => TagClass::Private,
        }
    }

    /// The tag's bytes, most significant first.
    pub fn to_bytes(self) -> TagBytes {
        let n = self.len();
        let all = self.0.to_be_bytes();
        let mut b = [0u8; 4];
        b[..n].copy_from_slice(&all[4 - n..]);
        TagBytes { bytes: b, len: n as u8 }
    }

    /// True when the bytes form exactly one tag: the first byte announces subsequent bytes iff
    /// there are any, and only the last subsequent byte has b8 = 0 (ISO/IEC 8825-1 §8.1.2.4).
    pub fn is_well_formed(self) -> bool {
        let tb = self.to_bytes();
        let b = tb.as_ref();
        split_tag(b).map(|(t, rest)| t == self && rest.is_empty()).unwrap_or(false)
    }

    /// Parses exactly one tag from `bytes` (nothing left over).
    pub fn from_bytes(bytes: &[u8]) -> Result<Tag> {
        match split_tag(bytes) {
            Some((t, [])) => Ok(t),
            Some((t, rest)) => Err(Error::expected(
                ErrorKind::Tlv,
                Location::Tag(t.value()),
                Some(t.len()),
                "one tag",
                format_args!("{} byte(s) after it", rest.len()),
            )),
            None => Err(Error::expected(
                ErrorKind::Tlv,
                Location::Message,
                Some(0),
                "a complete tag of 1 to 4 bytes",
                format_args!("{} byte(s) that do not end a tag", bytes.len()),
            )),
        }
    }

    // Named constants for the tags other modules use by name (EMV Book 3 Annex A).
    pub const PAN: Tag = Tag(0x5A);
    pub const TRACK2_EQUIVALENT: Tag = Tag(0x57);
    pub const TRACK1_DATA: Tag = Tag(0x56);
    pub const TRACK2_DATA: Tag = Tag(0x9F6B);
    pub const TRACK1_DISCRETIONARY: Tag = Tag(0x9F1F);
    pub const TRACK2_DISCRETIONARY: Tag = Tag(0x9F20);
    pub const CARDHOLDER_NAME: Tag = Tag(0x5F20);
    pub const CARDHOLDER_NAME_EXTENDED: Tag = Tag(0x9F0B);
    pub const EXPIRATION_DATE: Tag = Tag(0x5F24);
    pub const PAN_SEQUENCE_NUMBER: Tag = Tag(0x5F34);
    pub const SERVICE_CODE: Tag = Tag(0x5F30);
    pub const TRANSACTION_PIN_DATA: Tag = Tag(0x99);
    pub const APPLICATION_CRYPTOGRAM: Tag = Tag(0x9F26);
    pub const CRYPTOGRAM_INFORMATION_DATA: Tag = Tag(0x9F27);
    pub const ISSUER_APPLICATION_DATA: Tag = Tag(0x9F10);
    pub const ATC: Tag = Tag(0x9F36);
    pub const UNPREDICTABLE_NUMBER: Tag = Tag(0x9F37);
    pub const AMOUNT_AUTHORISED: Tag = Tag(0x9F02);
    pub const AMOUNT_OTHER: Tag = Tag(0x9F03);
    pub const TERMINAL_COUNTRY_CODE: Tag = Tag(0x9F1A);
    pub const TVR: Tag = Tag(0x95);
    pub const TRANSACTION_CURRENCY_CODE: Tag = Tag(0x5F2A);
    pub const TRANSACTION_DATE: Tag = Tag(0x9A);
    pub const TRANSACTION_TYPE: Tag = Tag(0x9C);
    pub const AIP: Tag = Tag(0x82);
    pub const ISSUER_AUTHENTICATION_DATA: Tag = Tag(0x91);
    pub const RESPONSE_TEMPLATE_FORMAT_1: Tag = Tag(0x80);
    pub const RESPONSE_TEMPLATE_FORMAT_2: Tag = Tag(0x77);
    pub const FCI_TEMPLATE: Tag = Tag(0x6F);
    pub const RECORD_TEMPLATE: Tag = Tag(0x70);
}

/// The bytes of a tag, without allocation.
#[derive(Clone, Copy)]
pub struct TagBytes {
    bytes: [u8; 4],
    len: u8,
}

impl AsRef<[u8]> for TagBytes {
    fn as_ref(&self) -> &[u8] {
        self.bytes.get(..self.len as usize).unwrap_or(&[])
    }
}

/// Splits one tag off the front of `input` (the structural rule only; the nom parser in
/// `parser.rs` builds on the same rule and adds error positions). `None` when the input ends
/// inside the tag or the tag is longer than [`MAX_TAG_LEN`].
pub(crate) fn split_tag(input: &[u8]) -> Option<(Tag, &[u8])> {
    let (&first, mut rest) = input.split_first()?;
    let mut value = u32::from(first);
    if first & 0x1F != 0x1F {
        return Some((Tag(value), rest));
    }
    for _ in 1..MAX_TAG_LEN {
        let (&b, r) = rest.split_first()?;
        rest = r;
        value = (value << 8) | u32::from(b);
        if b & 0x80 == 0 {
            return Some((Tag(value), rest));
        }
    }
    None
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$X}", self.0, width = self.len() * 2)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

impl FromStr for Tag {
    type Err = Error;

    /// Parses hex (either case), e.g. `9f26`; the bytes must form exactly one tag.
    fn from_str(s: &str) -> Result<Tag> {
        let bytes = hex::decode(s).map_err(|e| {
            Error::expected(ErrorKind::Tlv, Location::Message, None, "a tag in hex", format_args!("{e}"))
        })?;
        Tag::from_bytes(&bytes)
    }
}

impl From<Tag> for u32 {
    fn from(t: Tag) -> u32 {
        t.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_len() {
        assert_eq!(Tag::new(0x9F26).to_string(), "9F26");
        assert_eq!(Tag::new(0x5A).to_string(), "5A");
        assert_eq!(Tag::new(0x00).to_string(), "00");
        assert_eq!(Tag::new(0xBF0C).len(), 2);
        assert_eq!(format!("{:?}", Tag::new(0x9F26)), "Tag(9F26)");
    }

    #[test]
    fn constructed_and_class() {
        assert!(Tag::new(0x70).is_constructed());
        assert!(Tag::new(0xBF0C).is_constructed());
        assert!(!Tag::new(0x9F26).is_constructed());
        assert_eq!(Tag::new(0x9F26).class(), TagClass::ContextSpecific);
        assert_eq!(Tag::new(0x5F20).class(), TagClass::Application);
        assert_eq!(Tag::new(0xDF01).class(), TagClass::Private);
    }

    #[test]
    fn well_formed() {
        assert!(Tag::new(0x9F26).is_well_formed());
        assert!(Tag::new(0x5A).is_well_formed());
        assert!(!Tag::new(0x9F).is_well_formed());
        assert!(!Tag::new(0x5A01).is_well_formed());
        assert!(Tag::new(0x9F8101).is_well_formed());
        assert_eq!("9f26".parse::<Tag>().unwrap(), Tag::new(0x9F26));
        assert!("9F".parse::<Tag>().is_err());
        assert!("9F2601".parse::<Tag>().is_err());
    }
}
