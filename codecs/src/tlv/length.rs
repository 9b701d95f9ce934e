//! BER-TLV length fields (EMV Book 3 Annex B2; ISO/IEC 8825-1 §8.1.3).
//!
//! Definite form only. Short form: one byte `00`–`7F`. Long form: `81`, `82` or `83` followed by
//! one, two or three bytes of length, big-endian. EMV Book 3 B2 limits the long form to at most
//! three subsequent bytes ("lengths up to 65535" in practice; `83` kept for ISO 7816-4 data), and
//! forbids the indefinite form (`80`). The encoder always writes the shortest form, which is what
//! makes decode → encode byte-exact for canonical input.

use bytes::BufMut;

use crate::error::{Error, ErrorKind, Location, Result};

use super::tag::Tag;

/// The longest value we can encode or accept: three subsequent length bytes.
pub const MAX_VALUE_LEN: usize = 0x00FF_FFFF;

/// The most subsequent length bytes EMV accepts (`83 xx xx xx`).
pub const MAX_LENGTH_SUBSEQUENT_BYTES: usize = 3;

/// How many bytes the shortest length field for `len` takes.
pub const fn length_field_size(len: usize) -> usize {
    if len < 0x80 {
        1
    } else if len <= 0xFF {
        2
    } else if len <= 0xFFFF {
        3
    } else {
        4
    }
}

/// Writes the shortest definite length field for `len`.
///
/// `tag` only names the object in the error when `len` exceeds [`MAX_VALUE_LEN`].
pub fn put_length(buf: &mut impl BufMut, tag: Tag, len: usize) -> Result<()> {
    if len > MAX_VALUE_LEN {
        return Err(Error::expected(
            ErrorKind::Tlv,
            Location::Tag(tag.value()),
            None,
            format_args!("a value of at most {MAX_VALUE_LEN} bytes (length form 83)"),
            format_args!("{len} bytes"),
        ));
    }
    // The casts below keep only the bytes the branch has proven significant.
    match length_field_size(len) {
        1 => buf.put_u8(len as u8),
        2 => {
            buf.put_u8(0x81);
            buf.put_u8(len as u8);
        }
        3 => {
            buf.put_u8(0x82);
            buf.put_u16(len as u16);
        }
        _ => {
            buf.put_u8(0x83);
            buf.put_uint(len as u64, 3);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        put_length(&mut v, Tag::new(0x5A), len).unwrap();
        v
    }

    #[test]
    fn shortest_forms() {
        // EMV Book 3 Annex B2: 1 byte up to 127, 81 up to 255, 82 up to 65535.
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7F]);
        assert_eq!(enc(128), [0x81, 0x80]);
        assert_eq!(enc(255), [0x81, 0xFF]);
        assert_eq!(enc(256), [0x82, 0x01, 0x00]);
        assert_eq!(enc(65535), [0x82, 0xFF, 0xFF]);
        assert_eq!(enc(65536), [0x83, 0x01, 0x00, 0x00]);
        assert!(put_length(&mut Vec::new(), Tag::new(0x5A), MAX_VALUE_LEN + 1).is_err());
    }
}
