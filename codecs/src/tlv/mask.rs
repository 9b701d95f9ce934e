//! Masking sensitive EMV data for logs (PCI DSS 3.4: PAN masked to at most first 6 / last 4 digits;
//! track data, cardholder name, PIN data and the other elements the [dictionary] marks sensitive
//! never shown).
//!
//! [`mask_sensitive`] returns the *same TLV bytes* (same length, same structure) with the value of
//! every sensitive object overwritten, so a masked DE 55 still decodes and can be pretty-printed:
//!
//! * PAN (`5A`, BCD `cn`): the first 6 and last 4 digits kept, every digit nibble between them set
//!   to `F`; a PAN of fewer than 13 digits, or one that is not clean BCD, has every nibble set to `F`.
//! * Track 2 equivalent (`57`) and Mastercard track 2 data (`9F6B`): the PAN part masked as above,
//!   the `D` separator kept, every nibble after it (expiry, service code, discretionary data with
//!   CVV/iCVV/dCVV) set to `F`; without a well-formed `PAN D` prefix, every nibble `F`.
//! * Track 1 data (`56`, `ans`): the format code kept, the PAN masked with `*` between its first 6
//!   and last 4 digits, the `^` separators kept, name and everything after set to `*`; if the value
//!   is not `B<digits>^…^…`, every byte `*`.
//! * Everything else marked sensitive: every byte set to `*` for text formats (`an`, `ans`) and to
//!   `FF` otherwise (expiry `5F24`, service code `5F30`, track discretionary data `9F1F`/`9F20`,
//!   transaction PIN data `99`, …).
//!
//! Malformed input never leaks: from the first byte that does not parse as a TLV object (a bad tag,
//! an impossible length, a value running past its template or the input), every byte to the end of
//! the enclosing level is set to `FF` — which a lenient decoder then reads as padding. Templates
//! nested deeper than [`MASK_MAX_DEPTH`] have their whole value set to `FF`.
//!
//! [dictionary]: super::dictionary

use super::dictionary::{self, Format, Sensitivity};
use super::parser::object;
use super::tag::Tag;

/// Templates nested deeper than this are masked whole rather than descended into.
pub const MASK_MAX_DEPTH: usize = 8;

/// The byte written over unparsable input and over sensitive binary/numeric values.
pub const MASK_BYTE: u8 = 0xFF;

/// The byte written over sensitive text values.
pub const MASK_TEXT: u8 = b'*';

/// The same TLV bytes with every sensitive value overwritten (see the module documentation).
/// Never returns clear sensitive data, whatever the input.
pub fn mask_sensitive(input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    mask_level(&mut out, 0);
    out
}

/// Masks, in place, one level of objects.
pub fn mask_in_place(buf: &mut [u8]) {
    mask_level(buf, 0);
}

fn mask_level(buf: &mut [u8], depth: usize) {
    let mut pos = 0;
    loop {
        // Padding between objects (EMV Book 3 Annex B1) is not data.
        while buf.get(pos).is_some_and(|&b| b == 0x00 || b == 0xFF) {
            pos += 1;
        }
        let Some(rest) = buf.get(pos..) else { return };
        if rest.is_empty() {
            return;
        }
        let (tag, header_len, value_len) = match object(rest) {
            Ok((_, raw)) => (raw.tag, raw.header_len, raw.value.len()),
            Err(_) => {
                fill(buf.get_mut(pos..), MASK_BYTE);
                return;
            }
        };
        let start = pos + header_len;
        let end = start + value_len;
        if let Some(value) = buf.get_mut(start..end) {
            if tag.is_constructed() {
                if depth + 1 >= MASK_MAX_DEPTH {
                    value.fill(MASK_BYTE);
                } else {
                    mask_level(value, depth + 1);
                }
            } else {
                mask_value(tag, value);
            }
        } else {
            // Cannot happen (the parser proved the value is inside), but never leak if it does.
            fill(buf.get_mut(pos..), MASK_BYTE);
            return;
        }
        pos = end;
    }
}

fn fill(slice: Option<&mut [u8]>, byte: u8) {
    if let Some(s) = slice {
        s.fill(byte);
    }
}

/// Overwrites one primitive value in place if its tag is sensitive.
pub fn mask_value(tag: Tag, value: &mut [u8]) {
    let Some(info) = dictionary::lookup(tag) else { return };
    match info.sensitivity {
        Sensitivity::None => {}
        Sensitivity::Pan => mask_bcd_pan(value),
        Sensitivity::Track2 => mask_track2(value),
        Sensitivity::Track1 => mask_track1(value),
        Sensitivity::Secret => {
            let b = if matches!(info.format, Format::An | Format::Ans) { MASK_TEXT } else { MASK_BYTE };
            value.fill(b);
        }
    }
}

fn nibble(value: &[u8], i: usize) -> u8 {
    let b = value.get(i / 2).copied().unwrap_or(0xFF);
    if i.is_multiple_of(2) { b >> 4 } else { b & 0x0F }
}

fn set_nibble(value: &mut [u8], i: usize, n: u8) {
    if let Some(b) = value.get_mut(i / 2) {
        *b = if i.is_multiple_of(2) { (*b & 0x0F) | (n << 4) } else { (*b & 0xF0) | (n & 0x0F) };
    }
}

/// Keeps the first 6 and last 4 of `digits` nibbles starting at nibble 0; masks the rest.
fn mask_pan_nibbles(value: &mut [u8], digits: usize) {
    let keep = digits >= 13;
    for i in 0..digits {
        if !keep || (i >= 6 && i + 4 < digits) {
            set_nibble(value, i, 0xF);
        }
    }
}

fn mask_bcd_pan(value: &mut [u8]) {
    let nibbles = value.len() * 2;
    let digits = (0..nibbles).take_while(|&i| nibble(value, i) <= 9).count();
    let clean = (digits..nibbles).all(|i| nibble(value, i) == 0xF);
    if clean {
        mask_pan_nibbles(value, digits);
    } else {
        value.fill(MASK_BYTE);
    }
}

fn mask_track2(value: &mut [u8]) {
    let nibbles = value.len() * 2;
    let digits = (0..nibbles).take_while(|&i| nibble(value, i) <= 9).count();
    if digits < nibbles && nibble(value, digits) == 0xD {
        mask_pan_nibbles(value, digits);
        for i in digits + 1..nibbles {
            set_nibble(value, i, 0xF);
        }
    } else {
        value.fill(MASK_BYTE);
    }
}

fn mask_track1(value: &mut [u8]) {
    // ISO/IEC 7813 track 1: format code, PAN, '^', name, '^', expiry, service code, discretionary.
    let well_formed = value.first().is_some_and(|b| b.is_ascii_uppercase()) && {
        let digits = value.iter().skip(1).take_while(|b| b.is_ascii_digit()).count();
        value.get(1 + digits) == Some(&b'^')
    };
    if !well_formed {
        value.fill(MASK_TEXT);
        return;
    }
    let digits = value.iter().skip(1).take_while(|b| b.is_ascii_digit()).count();
    let keep = digits >= 13;
    for (i, b) in value.iter_mut().enumerate().skip(1) {
        let d = i - 1;
        if d < digits {
            if !keep || (d >= 6 && d + 4 < digits) {
                *b = MASK_TEXT;
            }
        } else if *b != b'^' {
            *b = MASK_TEXT;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hx(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }
    fn up(b: &[u8]) -> String {
        hex::encode_upper(b)
    }

    #[test]
    fn pan_keeps_first6_last4() {
        let m = mask_sensitive(&hx("5A08 4761739001010010"));
        assert_eq!(up(&m), "5A08476173FFFFFF0010");
        // 19-digit PAN, F-padded to 10 bytes.
        let m = mask_sensitive(&hx("5A0A 4761739001010010123F"));
        assert_eq!(up(&m), "5A0A476173FFFFFFFFF0123F");
        // Odd-length 15-digit PAN padded with F.
        let m = mask_sensitive(&hx("5A08 371449635398431F"));
        assert_eq!(up(&m), "5A08371449FFFFF8431F");
    }

    #[test]
    fn track2_masks_after_separator() {
        let m = mask_sensitive(&hx("5713 4761739001010010D25122011234567890123F"));
        assert_eq!(up(&m), "5713476173FFFFFF0010DFFFFFFFFFFFFFFFFFFFFF");
    }

    #[test]
    fn track1_text() {
        let t1 = b"B4761739001010010^TEST/CARD^2512201123456";
        let mut v = vec![0x56, t1.len() as u8];
        v.extend_from_slice(t1);
        let m = mask_sensitive(&v);
        assert_eq!(&m[2..], b"B476173******0010^*********^*************");
    }

    #[test]
    fn name_expiry_inside_template() {
        let inner = hx("5F200A54455354204341524420 5F2403251231");
        let mut v = vec![0x70, inner.len() as u8];
        v.extend_from_slice(&inner);
        let m = mask_sensitive(&v);
        assert_eq!(up(&m), "70135F200A2A2A2A2A2A2A2A2A2A2A5F2403FFFFFF");
    }

    #[test]
    fn malformed_tail_fully_masked() {
        // 9F36 fine, then 5A claiming 8 bytes with 5 present: everything from 5A on is FF.
        let m = mask_sensitive(&hx("9F3602001E 5A08 4761739001"));
        assert_eq!(up(&m), "9F3602001EFFFFFFFFFFFFFF");
        // Broken inner template: mask from the bad byte to the end of the template.
        let m = mask_sensitive(&hx("7009 9F3601 01 5A08 476173"));
        assert_eq!(up(&m), "70099F360101FFFFFFFFFF");
    }

    #[test]
    fn not_sensitive_untouched() {
        let b = hx("9F2608C8B507136D921FD09F2701809F360200 1E");
        assert_eq!(mask_sensitive(&b), b);
    }
}
