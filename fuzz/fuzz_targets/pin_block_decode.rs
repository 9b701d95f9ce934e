//! Fuzzes PIN block decoding (ISO 9564 formats 0, 1, 3 clear blocks, and format 4 enciphered
//! blocks under a fixed AES key) with arbitrary bytes and PANs: never panics, and a block that
//! decodes re-encodes to a block that decodes to the same PIN.
#![no_main]

use crypto::keys::{AesKey, SymmetricKey};
use crypto::pin::{self, PinBlockFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    if rest.len() < 24 {
        return;
    }
    let (block, pan_bytes) = rest.split_at(16);
    let pan: String = pan_bytes.iter().take(19).map(|b| char::from(b'0' + b % 10)).collect();
    let format = [PinBlockFormat::Iso0, PinBlockFormat::Iso1, PinBlockFormat::Iso3, PinBlockFormat::Iso4][usize::from(sel & 3)];
    match format {
        PinBlockFormat::Iso4 => {
            let key = SymmetricKey::Aes(AesKey::from_slice(&[0x2B; 16]).expect("aes key"));
            if let Ok(p) = pin::decrypt_pin_block(&key, format, block, &pan) {
                let again = pin::encrypt_pin_block(&key, format, &p, &pan, &[7; 8]).expect("re-encrypt");
                assert_eq!(pin::decrypt_pin_block(&key, format, &again, &pan).expect("decode"), p);
            }
        }
        _ => {
            let b8: [u8; 8] = block[..8].try_into().expect("8 bytes");
            if let Ok(p) = pin::decode_pin_block(format, &b8, &pan) {
                let again = pin::encode_pin_block(format, &p, &pan, &[7; 8]).expect("re-encode");
                assert_eq!(pin::decode_pin_block(format, &again, &pan).expect("decode"), p);
            }
        }
    }
});
