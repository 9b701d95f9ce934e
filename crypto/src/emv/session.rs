//! Session keys for application cryptograms (EMV 4.3 Book 2 §A1.3).
//!
//! - EMV common session key (§A1.3.1): with the 8-byte diversification value R,
//!   SK_L = DES3(MK)[R with byte 3 = F0], SK_R = DES3(MK)[R with byte 3 = 0F], odd parity.
//!   R = ATC ‖ 00 × 6 for the common session key;
//! - Mastercard session key derivation (M/Chip "SKD", CVN 16/17): the same construction with
//!   R = ATC ‖ 00 00 ‖ UN — byte 3 is overwritten by F0/0F as above, byte for byte as pyemv 1.5.0's
//!   `kd.derive_common_sk`;
//! - AES (§A1.3.1 with a 16-byte block cipher): SK = AES(MK)[ATC ‖ F0 ‖ 00 × 13], and for 24- and
//!   32-byte master keys a second block AES(MK)[ATC ‖ 0F ‖ 00 × 13], the key being the leftmost
//!   bytes of the two, as long as MK.

use crate::keys::{AesKey, TdesCipher, TdesKey, adjust_odd_parity};

use super::{Atc, UnpredictableNumber};

/// The §A1.3.1 derivation from an 8-byte diversification value.
pub fn derive_from_r(icc_mk: &TdesKey, r: [u8; 8]) -> TdesKey {
    derive_from_r_with(&icc_mk.cipher(), r)
}

/// [`derive_from_r`] under the ICC master key's prepared schedule (a kept card key).
pub fn derive_from_r_with(cipher: &TdesCipher, r: [u8; 8]) -> TdesKey {
    let mut ra = r;
    ra[2] = 0xF0;
    let mut rb = r;
    rb[2] = 0x0F;
    let mut sk = zeroize::Zeroizing::new([0u8; 16]);
    sk[..8].copy_from_slice(&cipher.encrypt(ra));
    sk[8..].copy_from_slice(&cipher.encrypt(rb));
    adjust_odd_parity(sk.as_mut());
    match TdesKey::from_slice(sk.as_ref()) {
        Ok(k) => k,
        Err(_) => unreachable!("16 bytes is a TDES key length"),
    }
}

/// The EMV common session key for `atc` (R = ATC ‖ 00 × 6).
pub fn common_session_key(icc_mk: &TdesKey, atc: Atc) -> TdesKey {
    common_session_key_with(&icc_mk.cipher(), atc)
}

/// [`common_session_key`] under the ICC master key's prepared schedule.
pub fn common_session_key_with(icc_mk: &TdesCipher, atc: Atc) -> TdesKey {
    let a = atc.to_bytes();
    derive_from_r_with(icc_mk, [a[0], a[1], 0, 0, 0, 0, 0, 0])
}

/// The Mastercard session key for `atc` and the terminal's unpredictable number
/// (R = ATC ‖ 00 00 ‖ UN).
pub fn mastercard_session_key(icc_mk: &TdesKey, atc: Atc, un: UnpredictableNumber) -> TdesKey {
    mastercard_session_key_with(&icc_mk.cipher(), atc, un)
}

/// [`mastercard_session_key`] under the ICC master key's prepared schedule.
pub fn mastercard_session_key_with(icc_mk: &TdesCipher, atc: Atc, un: UnpredictableNumber) -> TdesKey {
    let a = atc.to_bytes();
    let u = un.0;
    derive_from_r_with(icc_mk, [a[0], a[1], 0, 0, u[0], u[1], u[2], u[3]])
}

/// The EMV common session key for an AES ICC master key.
pub fn common_session_key_aes(icc_mk: &AesKey, atc: Atc) -> AesKey {
    let cipher = icc_mk.cipher();
    let a = atc.to_bytes();
    let mut left = [0u8; 16];
    left[..2].copy_from_slice(&a);
    left[2] = 0xF0;
    let mut right = [0u8; 16];
    right[..2].copy_from_slice(&a);
    right[2] = 0x0F;
    let mut sk = zeroize::Zeroizing::new([0u8; 32]);
    sk[..16].copy_from_slice(&cipher.encrypt(left));
    sk[16..].copy_from_slice(&cipher.encrypt(right));
    match AesKey::from_slice(&sk[..icc_mk.len()]) {
        Ok(k) => k,
        Err(_) => unreachable!("the master key's length is an AES key length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::to_hex;

    #[test]
    fn common_session_key_pyemv_doc_example() {
        // pyemv 1.5.0 kd.derive_common_sk docstring: MK 0123456789ABCDEFFEDCBA9876543210,
        // R = 001C ‖ 00 × 6 (ATC 001C).
        let mk = TdesKey::from_hex("mk", "0123456789ABCDEFFEDCBA9876543210").expect("key");
        let sk = common_session_key(&mk, Atc(0x1C));
        assert_eq!(to_hex(sk.expose()), "E9FB384AF807B940FEDCEA613461B0C4");
        assert!(sk.check_parity().is_ok());
    }
}
