//! proptest round trips: any header (usage, mode, key version, exportability, optional blocks of
//! any length incl. extended lengths) and any key wrap and unwrap to the same header and key, for
//! versions B and D; and arbitrary text never panics the parser.
#![allow(clippy::unwrap_used)]

use crypto::keyblock::{self, Exportability, Header, KeyAlgorithm, KeyBlockVersion, KeyUsage, ModeOfUse};
use crypto::keys::{AesKey, SymmetricKey, TdesKey};
use proptest::prelude::*;

fn alnum() -> impl Strategy<Value = u8> {
    prop::sample::select(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".to_vec())
}

fn block_strategy() -> impl Strategy<Value = (String, String)> {
    (
        (alnum(), alnum()).prop_filter("PB is reserved", |(a, b)| !(*a == b'P' && *b == b'B')),
        prop::collection::vec(0x20u8..=0x7E, 0..400),
    )
        .prop_map(|((a, b), d)| (format!("{}{}", a as char, b as char), String::from_utf8(d).unwrap()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn wrap_unwrap_roundtrip(
        d in any::<bool>(),
        kbpk_len_sel in 0usize..3,
        usage in (alnum(), alnum()),
        mode in alnum(),
        kvn in (alnum(), alnum()),
        exp in alnum(),
        blocks in prop::collection::vec(block_strategy(), 0..4),
        key in prop::collection::vec(any::<u8>(), 1..40),
        kbpk_bytes in prop::collection::vec(any::<u8>(), 32),
        random in prop::collection::vec(any::<u8>(), 64),
    ) {
        let (version, kbpk) = if d {
            let n = [16, 24, 32][kbpk_len_sel];
            (KeyBlockVersion::D, SymmetricKey::Aes(AesKey::from_slice(&kbpk_bytes[..n]).unwrap()))
        } else {
            let n = [16, 24, 16][kbpk_len_sel];
            (KeyBlockVersion::B, SymmetricKey::Tdes(TdesKey::from_slice(&kbpk_bytes[..n]).unwrap()))
        };
        let mut h = Header::new(
            version,
            KeyUsage([usage.0, usage.1]),
            KeyAlgorithm::HMAC,
            ModeOfUse(mode),
            Exportability(exp),
        );
        h.key_version = [kvn.0, kvn.1];
        for (id, data) in &blocks {
            h = h.with_optional_block(id, data).unwrap();
        }
        let block = keyblock::wrap(&kbpk, &h, &key, &random).unwrap();
        prop_assert_eq!(block[1..5].parse::<usize>().unwrap(), block.len());
        let k = keyblock::unwrap(&kbpk, &block).unwrap();
        prop_assert_eq!(k.expose(), key.as_slice());
        prop_assert_eq!(&k.header, &h);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "[A-D][0-9]{4}[ -~]{0,200}") {
        let kbpk = SymmetricKey::Tdes(TdesKey::from_slice(&[7; 16]).unwrap());
        let aes = SymmetricKey::Aes(AesKey::from_slice(&[7; 16]).unwrap());
        let _ = keyblock::unwrap(&kbpk, &s);
        let _ = keyblock::unwrap(&aes, &s);
        let _ = Header::parse_template(&s);
    }
}
