//! Sans-IO codecs of the payment network.
//!
//! * [`iso8583`] — spec-driven ISO 8583 messages: specs as data (built-in `iso87ascii`,
//!   `iso87binary`, and custom specs loaded from TOML/JSON), zero-copy decoding into
//!   [`bytes::Bytes`] slices, encoding into a `BytesMut`, the JSON form of INTERFACES.md §1, and a
//!   masked description for logs.
//! * [`tlv`] — EMV BER-TLV (EMV Book 3 Annex B): multi-byte tags, constructed templates, long-form
//!   lengths, strict and lenient parsing, DOLs, and the tag dictionary.
//! * [`framing`] — stream framing as `tokio_util::codec` decoders/encoders (no runtime needed):
//!   2-byte binary or 4-digit ASCII length headers, optional 5-byte TPDU.
//!
//! Nothing here does I/O (apart from [`iso8583::Spec::load`] reading a spec file while a program
//! configures itself), reads a clock or spawns a task.
#![forbid(unsafe_code)]

pub mod currency;
pub mod error;
pub mod framing;
pub mod iso8583;
pub mod pan;
pub mod tlv;

pub use error::{Error, ErrorKind, Location, Result};

/// Upper-case hex of `data`, written a byte at a time from a table into a string of the right
/// size (the `hex` crate's `encode_upper` collects characters one by one: a third of the cost of
/// writing out a message's chip data). Same text as `hex::encode_upper`.
pub fn hex_upper(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(data.len() * 2);
    for &b in data {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        #[test]
        fn hex_upper_is_the_hex_crates_upper_case_text(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            proptest::prop_assert_eq!(super::hex_upper(&data), hex::encode_upper(&data));
        }
    }
}
