//! Fuzzes TR-31 / X9.143 key block unwrapping: header parsing (fields, optional blocks, extended
//! lengths), length checks and the MAC check, under a TDES and an AES KBPK. Also flips fuzz-chosen
//! bytes of a valid block: unwrap must then fail unless only the case of a hex digit changed.
#![no_main]

use crypto::keyblock::{self, Header};
use crypto::keys::{AesKey, SymmetricKey, TdesKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tdes = SymmetricKey::Tdes(TdesKey::from_slice(&[0x1D; 16]).expect("16 bytes"));
    let aes = SymmetricKey::Aes(AesKey::from_slice(&[0x41; 32]).expect("32 bytes"));
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = keyblock::unwrap(&tdes, s);
        let _ = keyblock::unwrap(&aes, s);
        let _ = Header::parse_template(s);
    }
    // Tamper with a valid block at fuzz-chosen positions.
    if data.len() >= 3 {
        let (kbpk, header) = if data[0] & 1 == 0 {
            (&tdes, "B0000P0TE00N0100KS1800604B120F9292800000")
        } else {
            (&aes, "D0000D0AB00E0100KS1800604B120F9292800000")
        };
        let header = Header::parse_template(header).expect("valid template");
        let key = [0x3Fu8; 16];
        let block = keyblock::wrap(kbpk, &header, &key, &[0x5A; 32]).expect("wrap");
        let mut b = block.clone().into_bytes();
        for pair in data[1..].chunks(2) {
            if let [pos, x] = pair {
                let i = usize::from(*pos) % b.len();
                b[i] ^= x;
            }
        }
        if let Ok(s) = std::str::from_utf8(&b) {
            if let Ok(k) = keyblock::unwrap(kbpk, s) {
                assert_eq!(s.to_ascii_uppercase(), block, "a tampered block unwrapped");
                assert_eq!(k.expose(), key);
            }
        }
    }
});
