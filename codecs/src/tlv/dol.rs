//! Data Object Lists (EMV Book 3 §5.4): PDOL (`9F38`), CDOL1/CDOL2 (`8C`/`8D`), DDOL (`9F49`),
//! TDOL (`97`) — a list of (tag, length) entries with no values, telling the terminal which data to
//! send and how long each element must be.
//!
//! [`parse_dol`] reads the list (each length is a BER length field, in practice one byte);
//! [`build_dol_data`] concatenates the values the list asks for, applying §5.4's rules:
//!
//! * value longer than the entry: format `n` loses its *leftmost* bytes, any other format its
//!   *rightmost* bytes;
//! * value shorter: `n` is padded on the left with `00`, `cn` on the right with `FF`, any other
//!   format on the right with `00`;
//! * a tag the terminal does not know, a constructed tag, or a value the source lacks: the entry's
//!   length of `00` bytes.
//!
//! The format comes from the [dictionary](super::dictionary); a tag the source supplies but the
//! dictionary does not know is treated as `b` (the source "knows" it).

use bytes::{BufMut, BytesMut};

use crate::error::{Error, ErrorKind, Location, Result};

use super::dictionary::{self, Format};
use super::parser::{PErr, Problem, length, tag};
use super::tag::Tag;

/// One DOL entry: the tag and the length (bytes) the card wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DolEntry {
    pub tag: Tag,
    pub len: usize,
}

/// Parses a DOL (the value of `9F38`, `8C`, `8D`, `9F49`, `97`).
pub fn parse_dol(input: &[u8]) -> Result<Vec<DolEntry>> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let index = out.len();
        let start = input.len() - rest.len();
        let err = |e: nom::Err<PErr<'_>>, what: &str| {
            let (at, problem) = match e {
                nom::Err::Error(p) | nom::Err::Failure(p) => (input.len() - p.input.len(), p.problem),
                nom::Err::Incomplete(_) => (input.len(), Problem::Eof),
            };
            let found = match problem {
                Problem::Eof => "end of input".to_string(),
                Problem::TagTooLong => "a tag longer than 4 bytes".to_string(),
                Problem::Indefinite => "80 (indefinite length)".to_string(),
                Problem::LengthTooLong(n) => format!("{:02X} ({n} subsequent length bytes)", 0x80 | n),
                Problem::LengthTruncated(n, have) => format!("{have} of {n} subsequent length bytes"),
                other => format!("{other:?}"),
            };
            Error::expected(ErrorKind::Tlv, Location::Dol(index), Some(at.max(start)), what, found)
        };
        let (r, t) = tag(rest).map_err(|e| err(e, "a complete tag"))?;
        let (r, (len, _)) = length(r).map_err(|e| err(e, "a length of 00-7F, 81, 82 or 83"))?;
        out.push(DolEntry { tag: t, len });
        rest = r;
    }
    Ok(out)
}

/// The total length of the data a DOL asks for.
pub fn dol_data_len(dol: &[DolEntry]) -> usize {
    dol.iter().map(|e| e.len).sum()
}

/// Builds the data a DOL asks for, from `source` (tag → value, e.g. a terminal's data or a decoded
/// DE 55), by the rules of EMV Book 3 §5.4 (see the module documentation).
pub fn build_dol_data<F, V>(dol: &[DolEntry], mut source: F) -> BytesMut
where
    F: FnMut(Tag) -> Option<V>,
    V: AsRef<[u8]>,
{
    let mut out = BytesMut::with_capacity(dol_data_len(dol));
    for entry in dol {
        let value = if entry.tag.is_constructed() { None } else { source(entry.tag) };
        match value {
            None => out.put_bytes(0x00, entry.len),
            Some(v) => {
                let format = dictionary::lookup(entry.tag).map_or(Format::B, |i| i.format);
                fit(&mut out, v.as_ref(), entry.len, format);
            }
        }
    }
    out
}

/// Appends `value` fitted to `len` bytes for `format` (EMV Book 3 §5.4).
pub fn fit(out: &mut BytesMut, value: &[u8], len: usize, format: Format) {
    let have = value.len();
    if have >= len {
        let kept = match format {
            Format::N => value.get(have - len..),
            _ => value.get(..len),
        };
        out.put_slice(kept.unwrap_or(&[]));
        return;
    }
    let pad = len - have;
    match format {
        Format::N => {
            out.put_bytes(0x00, pad);
            out.put_slice(value);
        }
        Format::Cn => {
            out.put_slice(value);
            out.put_bytes(0xFF, pad);
        }
        _ => {
            out.put_slice(value);
            out.put_bytes(0x00, pad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hx(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn parse_typical_cdol1() {
        // A CDOL1 as personalised on many Visa/Mastercard test cards: amount, other amount,
        // country, TVR, currency, date, type, UN, terminal type, data auth code, ICC DN, CVM results.
        let dol =
            parse_dol(&hx("9F02069F03069F1A0295055F2A029A039C019F37049F35019F45029F4C089F3403")).unwrap();
        assert_eq!(dol.len(), 12);
        assert_eq!(dol[0], DolEntry { tag: Tag::new(0x9F02), len: 6 });
        assert_eq!(dol[3], DolEntry { tag: Tag::new(0x95), len: 5 });
        assert_eq!(dol_data_len(&dol), 6 + 6 + 2 + 5 + 2 + 3 + 1 + 4 + 1 + 2 + 8 + 3);
    }

    #[test]
    fn parse_errors_name_entry() {
        let e = parse_dol(&hx("9F0206 9F")).unwrap_err();
        assert_eq!(e.location, Location::Dol(1));
        assert_eq!(e.offset, Some(3));
        let e = parse_dol(&hx("9F02")).unwrap_err();
        assert_eq!(e.location, Location::Dol(0));
        assert!(e.detail.contains("length"), "{e}");
    }

    #[test]
    fn section_5_4_padding_and_truncation() {
        let mut src: HashMap<Tag, Vec<u8>> = HashMap::new();
        src.insert(Tag::new(0x9F02), hx("000000001000")); // n: longer → leftmost dropped
        src.insert(Tag::new(0x9A), hx("251231")); // n: shorter → left zero padded
        src.insert(Tag::new(0x5A), hx("4761739001010010")); // cn: shorter → right FF padded
        src.insert(Tag::new(0x9F37), hx("11223344")); // b: longer → rightmost dropped
        src.insert(Tag::new(0x9F1C), b"TERM01".to_vec()); // an: shorter → right 00 padded
        let dol = parse_dol(&hx("9F0204 9A04 5A0A 9F3702 9F1C08 9F3503 7002")).unwrap();
        let data = build_dol_data(&dol, |t| src.get(&t));
        assert_eq!(
            hex::encode_upper(&data),
            concat!(
                "00001000",
                "00251231",
                "4761739001010010FFFF",
                "1122",
                "5445524D30310000",
                "000000", // 9F35 missing → zeros
                "0000",   // constructed tag → zeros
            )
        );
    }
}
