//! Fuzzes EMV BER-TLV decoding (lenient and strict), the top-level index, DOL parsing and
//! masking: never panics; strict-valid input re-encodes byte for byte; the index takes exactly
//! the input that decodes with no tag repeated, each tag's value the decoded one; a masked buffer
//! always decodes leniently with the same length.
#![no_main]

use bytes::BytesMut;
use codecs::tlv::{
    TopLevel, decode_lenient, decode_strict, encode_nodes, mask_sensitive, parse_dol, repeated,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = decode_lenient(data);
    let index = TopLevel::parse(bytes::Bytes::copy_from_slice(data));
    match &decoded {
        Ok(nodes) if repeated(nodes).next().is_none() => {
            let index = index.expect("decodes, no tag repeated");
            for n in nodes {
                assert_eq!(index.get(n.tag().value()), Some(n.value()));
            }
        }
        _ => assert!(index.is_err(), "not TLV, or a tag repeated"),
    }
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
