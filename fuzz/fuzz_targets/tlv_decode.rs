//! Fuzzes EMV BER-TLV decoding (lenient and strict), DOL parsing and masking: never panics;
//! strict-valid input re-encodes byte for byte; a masked buffer always decodes leniently with the
//! same length.
#![no_main]

use bytes::BytesMut;
use codecs::tlv::{decode_lenient, decode_strict, encode_nodes, mask_sensitive, parse_dol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_lenient(data);
    if let Ok(nodes) = decode_strict(data) {
        let mut out = BytesMut::new();
        encode_nodes(&nodes, &mut out).expect("re-encode strict input");
        assert_eq!(&out[..], data, "strict input is canonical");
    }
    let _ = parse_dol(data);
    let masked = mask_sensitive(data);
    assert_eq!(masked.len(), data.len());
    if decode_lenient(data).is_ok() {
        assert!(decode_lenient(&masked).is_ok(), "masked output decodes");
    }
});
