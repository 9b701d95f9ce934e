//! Fuzzes ISO 8583 decoding with the two built-in specs and a custom BCD/EBCDIC/tertiary-bitmap
//! spec: never panics; whatever decodes re-encodes to exactly the input, and its JSON form builds
//! the same message again; the masked forms render.
#![no_main]

use std::sync::{Arc, LazyLock};

use codecs::iso8583::{Message, Spec};
use libfuzzer_sys::fuzz_target;

static CUSTOM: LazyLock<Arc<Spec>> = LazyLock::new(|| {
    Arc::new(
        Spec::from_toml(
            r#"
name = "fuzz-bcd"
mti = "bcd"
bitmap = "binary"
[fields.2]
length = "LL"
length_encoding = "bcd"
content = "n"
encoding = "bcd-right"
max_len = 19
[fields.3]
length = "FIXED"
content = "n"
encoding = "bcd-left"
max_len = 6
[fields.35]
length = "LL"
length_encoding = "binary"
content = "z"
encoding = "bcd-left"
max_len = 37
[fields.48]
length = "LLL"
length_encoding = "ebcdic"
content = "ans"
encoding = "ebcdic"
max_len = 999
[fields.55]
length = "LLLL"
length_encoding = "binary"
content = "b"
encoding = "binary"
max_len = 1024
[fields.130]
length = "LL"
content = "an"
encoding = "ascii"
max_len = 20
"#,
        )
        .expect("valid spec"),
    )
});

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let spec = match sel % 3 {
        0 => Spec::builtin("iso87ascii").expect("built-in").clone(),
        1 => Spec::builtin("iso87binary").expect("built-in").clone(),
        _ => CUSTOM.clone(),
    };
    if let Ok(m) = Message::decode_slice(&spec, rest) {
        let bytes = m.encode().expect("re-encode a decoded message");
        assert_eq!(&bytes[..], rest, "decode -> encode is byte-exact");
        let again = Message::from_json(&spec, &m.to_json()).expect("JSON form builds the message");
        assert_eq!(again, m);
        let _ = format!("{m:?} {m}");
        let _ = m.to_masked_json();
    }
});
