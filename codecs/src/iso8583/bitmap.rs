//! Primary, secondary and tertiary bitmaps (ISO 8583:1987 §4.1.3): which data elements are present.
//!
//! Bit 1 announces the secondary bitmap; with a spec's `tertiary_bitmap`, bit 65 announces a third
//! bitmap (DE 129–192) right after the secondary, as pyiso8583 4 does. Bitmaps are derived from
//! the elements present; a bitmap with no element bit set is refused on decode, so that
//! decode → encode is byte-exact.

use super::spec::BitmapEncoding;
use crate::error::{Error, ErrorKind, Location, Result};

/// Presence bits for DE 1–192, most significant bit of word 0 = DE 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bitmap(pub [u64; 3]);

impl Bitmap {
    #[inline]
    pub fn set(&mut self, de: u16) {
        let i = usize::from(de.wrapping_sub(1));
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1u64 << (63 - i % 64);
        }
    }

    #[inline]
    pub fn contains(&self, de: u16) -> bool {
        let i = usize::from(de.wrapping_sub(1));
        self.0.get(i / 64).is_some_and(|w| w & (1u64 << (63 - i % 64)) != 0)
    }

    /// Set element numbers of word `w`, ascending.
    pub fn iter_word(&self, w: usize) -> impl Iterator<Item = u16> {
        let mut bits = self.0.get(w).copied().unwrap_or(0);
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let lz = bits.leading_zeros();
            bits &= !(1u64 << (63 - lz));
            Some((w as u32 * 64 + lz + 1) as u16)
        })
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Reads one 64-bit bitmap at `*pos`.
pub fn read(enc: BitmapEncoding, input: &[u8], pos: &mut usize, which: u8) -> Result<u64> {
    let n = enc.wire_len();
    let start = *pos;
    let Some(raw) = input.get(start..start + n) else {
        return Err(Error::expected(
            ErrorKind::Truncated,
            Location::Bitmap(which),
            Some(start),
            format!("{n} bytes"),
            format!("{} bytes", input.len().saturating_sub(start)),
        ));
    };
    let value = match enc {
        BitmapEncoding::Binary => raw.iter().fold(0u64, |a, &b| a << 8 | u64::from(b)),
        BitmapEncoding::HexAscii | BitmapEncoding::HexEbcdic => {
            let mut v = 0u64;
            for (i, &b) in raw.iter().enumerate() {
                let c = if enc == BitmapEncoding::HexEbcdic {
                    super::ebcdic::from_ebcdic(b).unwrap_or(0)
                } else {
                    b
                };
                let d = match c {
                    b'0'..=b'9' => c - b'0',
                    b'A'..=b'F' => c - b'A' + 10,
                    _ => {
                        return Err(Error::expected(
                            ErrorKind::Bitmap,
                            Location::Bitmap(which),
                            Some(start + i),
                            "an uppercase hex digit",
                            format!("byte {b:02X}"),
                        ));
                    }
                };
                v = v << 4 | u64::from(d);
            }
            v
        }
    };
    *pos = start + n;
    Ok(value)
}

/// Writes one 64-bit bitmap.
pub fn write(enc: BitmapEncoding, value: u64, out: &mut bytes::BytesMut) {
    match enc {
        BitmapEncoding::Binary => out.extend_from_slice(&value.to_be_bytes()),
        BitmapEncoding::HexAscii | BitmapEncoding::HexEbcdic => {
            let mut buf = [0u8; 16];
            for (i, b) in buf.iter_mut().enumerate() {
                let c = HEX[((value >> (60 - 4 * i)) & 0xF) as usize];
                *b = if enc == BitmapEncoding::HexEbcdic {
                    super::ebcdic::to_ebcdic(c).unwrap_or(c)
                } else {
                    c
                };
            }
            out.extend_from_slice(&buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_words() {
        let mut b = Bitmap::default();
        for de in [1u16, 2, 64, 65, 128, 129, 192] {
            b.set(de);
        }
        assert_eq!(b.0[0], 0xC000_0000_0000_0001);
        assert_eq!(b.iter_word(1).collect::<Vec<_>>(), vec![65, 128]);
        assert_eq!(b.iter_word(2).collect::<Vec<_>>(), vec![129, 192]);
        assert!(b.contains(64) && !b.contains(3) && !b.contains(0) && !b.contains(193));
    }

    #[test]
    fn hex_bitmap_round_trip() {
        let mut out = bytes::BytesMut::new();
        write(BitmapEncoding::HexAscii, 0x7230_0000_0000_0000, &mut out);
        assert_eq!(&out[..], b"7230000000000000");
        let mut pos = 0;
        assert_eq!(read(BitmapEncoding::HexAscii, &out, &mut pos, 1), Ok(0x7230_0000_0000_0000));
        let mut pos = 0;
        assert!(read(BitmapEncoding::HexAscii, b"7230000000000a00", &mut pos, 1).is_err());
    }
}
