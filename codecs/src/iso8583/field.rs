//! One data element on the wire: its length prefix and its data, checked against its
//! [`FieldSpec`] (ISO 8583:1987 §4.2 length attributes, §4.3 content types).
//!
//! [`decode`] checks one element of the input and returns a [`FieldRef`], a borrowed view of its
//! data and its length in units; a [`Message`](super::Message) keeps where that data sits in its
//! input, so re-encoding writes exactly the bytes that were read. [`Field`] is an element that owns
//! its data, as built from its text form ([`from_text`]) or its bytes ([`from_bytes`]).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use super::ebcdic;
use super::spec::{ContentType, DataEncoding, FieldSpec, LengthEncoding, Sensitivity};
use crate::error::{Error, ErrorKind, Location, Result};

/// A data element's value as carried: its length in units and its wire data.
#[derive(Clone, PartialEq, Eq)]
pub struct Field {
    pub de: u16,
    /// Characters, digits or bytes, as the length prefix counts them.
    pub units: u16,
    /// The data bytes without the length prefix.
    pub data: Bytes,
}

impl Field {
    /// The element as a borrowed view.
    #[inline]
    pub fn view(&self) -> FieldRef<'_> {
        FieldRef { de: self.de, units: self.units, data: &self.data }
    }
}

/// A data element as a message carries it, borrowed from the message: its number, its length in
/// units and its wire data (without the length prefix). Two views are equal when their number,
/// units and data are, wherever the data is kept.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FieldRef<'a> {
    pub de: u16,
    /// Characters, digits or bytes, as the length prefix counts them.
    pub units: u16,
    /// The data bytes without the length prefix.
    pub data: &'a [u8],
}

fn err(
    kind: ErrorKind,
    de: u16,
    offset: usize,
    expected: impl std::fmt::Display,
    found: impl std::fmt::Display,
) -> Error {
    Error::expected(kind, Location::Field(de), Some(offset), expected, found)
}

/// Reads the length prefix (or takes the fixed length) at `*pos`.
#[inline]
pub(crate) fn read_len(de: u16, f: &FieldSpec, input: &[u8], pos: &mut usize) -> Result<usize> {
    let digits = f.length.digits();
    if digits == 0 {
        return Ok(usize::from(f.max_len));
    }
    let start = *pos;
    let nbytes = f.prefix_len();
    let Some(raw) = input.get(start..start + nbytes) else {
        return Err(err(
            ErrorKind::Truncated,
            de,
            start,
            format!("a {nbytes}-byte length prefix"),
            format!("{} bytes", input.len().saturating_sub(start)),
        ));
    };
    let bad = |i: usize, b: u8| {
        err(ErrorKind::Length, de, start + i, "a decimal length digit", format!("byte {b:02X}"))
    };
    let mut len = 0usize;
    match f.length_encoding {
        LengthEncoding::Ascii => {
            for (i, &b) in raw.iter().enumerate() {
                if !b.is_ascii_digit() {
                    return Err(bad(i, b));
                }
                len = len * 10 + usize::from(b - b'0');
            }
        }
        LengthEncoding::Ebcdic => {
            for (i, &b) in raw.iter().enumerate() {
                if !(0xF0..=0xF9).contains(&b) {
                    return Err(bad(i, b));
                }
                len = len * 10 + usize::from(b - 0xF0);
            }
        }
        LengthEncoding::Bcd => {
            for (i, &b) in raw.iter().enumerate() {
                let (hi, lo) = (b >> 4, b & 0xF);
                if hi > 9 || lo > 9 || (i == 0 && digits % 2 == 1 && hi != 0) {
                    return Err(bad(i, b));
                }
                len = len * 100 + usize::from(hi * 10 + lo);
            }
        }
        LengthEncoding::Binary => {
            len = raw.iter().fold(0usize, |a, &b| a << 8 | usize::from(b));
        }
    }
    if len > usize::from(f.max_len) {
        return Err(err(ErrorKind::Length, de, start, format!("a length of at most {}", f.max_len), len));
    }
    *pos = start + nbytes;
    Ok(len)
}

fn write_len(f: &FieldSpec, units: usize, out: &mut BytesMut) {
    let digits = f.length.digits();
    if digits == 0 {
        return;
    }
    match f.length_encoding {
        LengthEncoding::Ascii | LengthEncoding::Ebcdic => {
            let zero = if f.length_encoding == LengthEncoding::Ascii { b'0' } else { 0xF0 };
            let mut buf = [0u8; 4];
            let mut v = units;
            for b in buf[..digits].iter_mut().rev() {
                *b = zero + (v % 10) as u8;
                v /= 10;
            }
            out.extend_from_slice(&buf[..digits]);
        }
        LengthEncoding::Bcd => {
            let n = digits.div_ceil(2);
            let mut buf = [0u8; 2];
            let mut v = units;
            for b in buf[..n].iter_mut().rev() {
                *b = (((v / 10 % 10) << 4) | (v % 10)) as u8;
                v /= 100;
            }
            out.extend_from_slice(&buf[..n]);
        }
        LengthEncoding::Binary => {
            if digits <= 2 {
                out.put_u8(units as u8);
            } else {
                out.put_u16(units as u16);
            }
        }
    }
}

/// Describes a refused character without revealing a sensitive element's content.
fn found_char(f: &FieldSpec, de: u16, c: u8) -> String {
    if f.sensitivity(de) == Sensitivity::None {
        format!("byte {c:02X}")
    } else {
        "another character (value withheld: sensitive element)".to_string()
    }
}

fn content_name(c: ContentType) -> String {
    format!("content {}", c.name())
}

/// Checks `data` (wire bytes at `offset`) against the element's content type and encoding.
/// The decoder's fast check of a BCD element: every digit nibble a digit (or `D` in track data)
/// and the pad nibble of an odd length what the encoding puts there (0 on the left, F on the
/// right). False sends the caller to the nibble-by-nibble check that names the byte.
fn bcd_all_digits(f: &FieldSpec, units: usize, data: &[u8]) -> bool {
    let z = f.content == ContentType::Z;
    let nib_ok = |n: u8| n <= 9 || (z && n == 0xD);
    let mut body = data;
    if units % 2 == 1 {
        match f.encoding {
            DataEncoding::BcdLeft => {
                let Some((&first, rest)) = data.split_first() else { return false };
                if first >> 4 != 0 || !nib_ok(first & 0xF) {
                    return false;
                }
                body = rest;
            }
            _ => {
                let Some((&last, rest)) = data.split_last() else { return false };
                if last & 0xF != 0xF || !nib_ok(last >> 4) {
                    return false;
                }
                body = rest;
            }
        }
    }
    // No early exit (valid data is the common case): the compiler checks many bytes at once.
    let bad = if z {
        body.iter().fold(0u8, |bad, &b| bad | u8::from(!(nib_ok(b >> 4) & nib_ok(b & 0xF))))
    } else {
        body.iter().fold(0u8, |bad, &b| bad | u8::from(((b >> 4) > 9) | ((b & 0xF) > 9)))
    };
    bad == 0
}

#[inline]
fn check_content(de: u16, f: &FieldSpec, units: usize, data: &[u8], offset: usize) -> Result<()> {
    match f.encoding {
        DataEncoding::Binary => Ok(()),
        DataEncoding::Ascii => {
            if f.content != ContentType::XN && f.content.all_allowed(data) {
                return Ok(());
            }
            for (i, &c) in data.iter().enumerate() {
                if !f.content.allows(c, i) {
                    return Err(err(
                        ErrorKind::Content,
                        de,
                        offset + i,
                        content_name(f.content),
                        found_char(f, de, c),
                    ));
                }
            }
            Ok(())
        }
        DataEncoding::Ebcdic => {
            for (i, &b) in data.iter().enumerate() {
                match ebcdic::from_ebcdic(b) {
                    Some(c) if f.content.allows(c, i) => {}
                    _ => {
                        return Err(err(
                            ErrorKind::Content,
                            de,
                            offset + i,
                            content_name(f.content),
                            found_char(f, de, b),
                        ));
                    }
                }
            }
            Ok(())
        }
        DataEncoding::BcdLeft | DataEncoding::BcdRight => {
            if bcd_all_digits(f, units, data) {
                return Ok(());
            }
            // Something is wrong: find the first bad nibble, for the error.
            match bcd_first_bad(f, units, data) {
                Some((i, pad)) => {
                    let what = if pad { "a pad nibble" } else { "a BCD digit" };
                    Err(err(ErrorKind::Content, de, offset + i, what, found_char(f, de, data[i])))
                }
                None => Ok(()),
            }
        }
    }
}

/// The first byte of a BCD element with a nibble that is not a digit (or `D` in track data), or a
/// pad nibble that is not what the encoding puts there; and whether it was the pad.
fn bcd_first_bad(f: &FieldSpec, units: usize, data: &[u8]) -> Option<(usize, bool)> {
    let odd = units % 2 == 1;
    let last = data.len().saturating_sub(1);
    for (i, &b) in data.iter().enumerate() {
        for (k, nib) in [(0, b >> 4), (1, b & 0xF)] {
            let pad = odd
                && ((f.encoding == DataEncoding::BcdLeft && i == 0 && k == 0)
                    || (f.encoding == DataEncoding::BcdRight && i == last && k == 1));
            let ok = if pad {
                nib == if f.encoding == DataEncoding::BcdLeft { 0 } else { 0xF }
            } else {
                nib <= 9 || (f.content == ContentType::Z && nib == 0xD)
            };
            if !ok {
                return Some((i, pad));
            }
        }
    }
    None
}

/// Decodes DE `de` at `*pos` of `input`, moving `*pos` past it (only on success): the element's
/// data is the last `data.len()` bytes before the new `*pos`.
#[inline]
pub fn decode<'a>(de: u16, f: &FieldSpec, input: &'a [u8], pos: &mut usize) -> Result<FieldRef<'a>> {
    let mut p = *pos;
    let units = read_len(de, f, input, &mut p)?;
    let n = f.encoding.wire_len(units);
    if input.len() < p + n {
        return Err(err(
            ErrorKind::Truncated,
            de,
            p,
            format!("{n} bytes of data"),
            format!("{} bytes", input.len() - p),
        ));
    }
    let data = &input[p..p + n];
    check_content(de, f, units, data, p)?;
    *pos = p + n;
    Ok(FieldRef { de, units: units as u16, data })
}

/// Appends an element (prefix and data) to `out`.
#[inline]
pub fn encode(f: &FieldSpec, field: FieldRef<'_>, out: &mut BytesMut) {
    write_len(f, usize::from(field.units), out);
    out.extend_from_slice(field.data);
}

/// Builds an element from its text form (binary elements: uppercase or lowercase hex).
pub fn from_text(de: u16, f: &FieldSpec, text: &str) -> Result<Field> {
    let loc = Location::Field(de);
    if f.content == ContentType::B {
        let raw = hex::decode(text).map_err(|_| {
            Error::expected(
                ErrorKind::Content,
                loc.clone(),
                None,
                "hex digits (binary element)",
                "a non-hex or odd-length value",
            )
        })?;
        return from_bytes(de, f, Bytes::from(raw));
    }
    let bytes = text.as_bytes();
    check_units(de, f, bytes.len())?;
    let units = bytes.len();
    let data: Bytes = match f.encoding {
        DataEncoding::Ascii => Bytes::copy_from_slice(bytes),
        DataEncoding::Ebcdic => {
            let mut v = Vec::with_capacity(units);
            for (i, &c) in bytes.iter().enumerate() {
                v.push(ebcdic::to_ebcdic(c).ok_or_else(|| {
                    Error::expected(
                        ErrorKind::Content,
                        loc.clone(),
                        Some(i),
                        "printable ASCII",
                        found_char(f, de, c),
                    )
                })?);
            }
            Bytes::from(v)
        }
        DataEncoding::BcdLeft | DataEncoding::BcdRight => {
            let mut nibbles = Vec::with_capacity(units + 1);
            if units % 2 == 1 && f.encoding == DataEncoding::BcdLeft {
                nibbles.push(0);
            }
            for (i, &c) in bytes.iter().enumerate() {
                nibbles.push(match c {
                    b'0'..=b'9' => c - b'0',
                    b'=' | b'D' if f.content == ContentType::Z => 0xD,
                    _ => {
                        return Err(Error::expected(
                            ErrorKind::Content,
                            loc,
                            Some(i),
                            content_name(f.content),
                            found_char(f, de, c),
                        ));
                    }
                });
            }
            if units % 2 == 1 && f.encoding == DataEncoding::BcdRight {
                nibbles.push(0xF);
            }
            Bytes::from(
                nibbles.chunks(2).map(|p| p[0] << 4 | p.get(1).copied().unwrap_or(0)).collect::<Vec<u8>>(),
            )
        }
        DataEncoding::Binary => Bytes::copy_from_slice(bytes),
    };
    check_content(de, f, units, &data, 0).map_err(|e| Error { offset: None, ..e })?;
    Ok(Field { de, units: units as u16, data })
}

/// Builds a binary (content `b`) element from its bytes.
pub fn from_bytes(de: u16, f: &FieldSpec, data: Bytes) -> Result<Field> {
    if f.content != ContentType::B {
        return Err(Error::expected(
            ErrorKind::Content,
            Location::Field(de),
            None,
            format!("content {}", f.content.name()),
            "binary data",
        ));
    }
    check_units(de, f, data.len())?;
    Ok(Field { de, units: data.len() as u16, data })
}

fn check_units(de: u16, f: &FieldSpec, units: usize) -> Result<()> {
    let max = usize::from(f.max_len);
    let ok = if f.length.digits() == 0 { units == max } else { units <= max };
    if ok {
        Ok(())
    } else {
        let expected =
            if f.length.digits() == 0 { format!("exactly {max}") } else { format!("at most {max}") };
        Err(Error::expected(
            ErrorKind::Length,
            Location::Field(de),
            None,
            format!("{expected} {}", unit_name(f)),
            units,
        ))
    }
}

fn unit_name(f: &FieldSpec) -> &'static str {
    match f.encoding {
        DataEncoding::Binary => "bytes",
        DataEncoding::BcdLeft | DataEncoding::BcdRight => "digits",
        _ => "characters",
    }
}

/// The text form of an element: characters as carried, BCD digits without the pad, binary as
/// uppercase hex.
pub fn to_text<'a>(f: &FieldSpec, field: FieldRef<'a>) -> Cow<'a, str> {
    match f.encoding {
        // Checked on decode and on construction: printable ASCII, so valid UTF-8 (the strict
        // check is the fast one; the lossy form only for what was not checked).
        DataEncoding::Ascii => match std::str::from_utf8(field.data) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(field.data),
        },
        DataEncoding::Ebcdic => Cow::Owned(
            field.data.iter().map(|&b| char::from(ebcdic::from_ebcdic(b).unwrap_or(b'?'))).collect(),
        ),
        DataEncoding::Binary => Cow::Owned(crate::hex_upper(field.data)),
        DataEncoding::BcdLeft | DataEncoding::BcdRight => {
            let units = usize::from(field.units);
            let skip = usize::from(units % 2 == 1 && f.encoding == DataEncoding::BcdLeft);
            let mut s = String::with_capacity(units);
            for n in field.data.iter().flat_map(|&b| [b >> 4, b & 0xF]).skip(skip).take(units) {
                s.push(if n <= 9 { char::from(b'0' + n) } else { 'D' });
            }
            Cow::Owned(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::spec::LengthKind;

    fn spec(encoding: DataEncoding, content: ContentType) -> FieldSpec {
        FieldSpec {
            name: String::new(),
            length: LengthKind::LL,
            length_encoding: LengthEncoding::Bcd,
            content,
            encoding,
            max_len: 99,
            mask: None,
        }
    }

    /// The fast BCD check accepts exactly what the nibble-by-nibble check accepts: every
    /// two-byte element, odd and even lengths, both pad sides, digits and track data.
    #[test]
    fn fast_bcd_check_agrees_with_the_nibble_by_nibble_check() {
        for encoding in [DataEncoding::BcdLeft, DataEncoding::BcdRight] {
            for content in [ContentType::N, ContentType::Z] {
                let f = spec(encoding, content);
                for units in [3usize, 4] {
                    for v in 0..=u16::MAX {
                        let data = v.to_be_bytes();
                        assert_eq!(
                            bcd_all_digits(&f, units, &data),
                            bcd_first_bad(&f, units, &data).is_none(),
                            "{encoding:?} {content:?} {units} units {data:02X?}"
                        );
                    }
                }
            }
        }
    }
}
