//! ICC master key derivation from the issuer master key (EMV 4.3 Book 2 §A1.4).
//!
//! Option A (§A1.4.1) enciphers the rightmost 16 digits of PAN ‖ PSN and their complement; option B
//! (§A1.4.2) first hashes PAN ‖ PSN with SHA-1 and decimalizes the digest, for PANs longer than 16
//! digits. Both give a double-length TDES key with odd parity, byte for byte as pyemv 1.5.0's
//! `kd.derive_icc_mk_a` / `kd.derive_icc_mk_b`. The AES form of option A (§A1.4.1 for AES master
//! keys) is provided for the `emv-csk` AES path.

use sha1::{Digest, Sha1};

use super::{PanDigits, Psn};
use crate::keys::{AesKey, TdesKey, adjust_odd_parity};

/// Which §A1.4 method derives the ICC master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MasterKeyOption {
    /// §A1.4.1: rightmost 16 digits of PAN ‖ PSN.
    #[default]
    A,
    /// §A1.4.2: SHA-1 of PAN ‖ PSN, decimalized; identical to A for PANs of 16 digits or fewer.
    B,
}

impl MasterKeyOption {
    /// What the CVNs use (INTERFACES.md §2): option B for PANs over 16 digits, else option A.
    pub fn for_pan(pan: &PanDigits) -> Self {
        if pan.len() > 16 { MasterKeyOption::B } else { MasterKeyOption::A }
    }
}

/// Packs 16 decimal digits (ASCII) into 8 BCD bytes.
fn pack16(digits: &[u8; 16]) -> [u8; 8] {
    let mut y = [0u8; 8];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        y[i] = ((pair[0] & 0x0F) << 4) | (pair[1] & 0x0F);
    }
    y
}

/// Y of option A: the rightmost 16 digits of PAN ‖ PSN, left-padded with zeros when shorter.
fn y_option_a(pan: &PanDigits, psn: Psn) -> [u8; 8] {
    let mut digits = [b'0'; 16];
    let all = pan.expose().bytes().chain(psn.digits());
    let n = pan.len() + 2;
    for (i, d) in all.enumerate() {
        if i + 16 >= n {
            digits[i + 16 - n] = d;
        }
    }
    pack16(&digits)
}

/// Y of option B (§A1.4.2): SHA-1 over PAN ‖ PSN as BCD (a leading 0 when the digit count is
/// odd), then the digest's hex digits 0-9 in order, completed if fewer than 16 by its digits A-F
/// mapped to 0-5. PANs of 16 digits or fewer use option A.
fn y_option_b(pan: &PanDigits, psn: Psn) -> [u8; 8] {
    if pan.len() <= 16 {
        return y_option_a(pan, psn);
    }
    let mut nibbles: Vec<u8> = Vec::with_capacity(22);
    if pan.len() % 2 == 1 {
        nibbles.push(0);
    }
    nibbles.extend(pan.expose().bytes().chain(psn.digits()).map(|d| d - b'0'));
    let packed: Vec<u8> = nibbles.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect();
    let digest = Sha1::digest(&packed);
    let hex: Vec<u8> = digest.iter().flat_map(|b| [b >> 4, b & 0x0F]).collect();
    let mut digits = [b'0'; 16];
    let ordered = hex.iter().filter(|h| **h < 10).chain(hex.iter().filter(|h| **h >= 10));
    for (slot, &h) in digits.iter_mut().zip(ordered) {
        *slot = b'0' + if h < 10 { h } else { h - 10 };
    }
    pack16(&digits)
}

/// Derives the 16-byte TDES ICC master key from a TDES IMK (double or triple length), odd parity
/// adjusted (EMV Book 2 §A1.4: ZL = DES3(IMK)[Y], ZR = DES3(IMK)[Y ⊕ FF..FF]).
pub fn derive_icc_mk(imk: &TdesKey, pan: &PanDigits, psn: Psn, option: MasterKeyOption) -> TdesKey {
    let y = match option {
        MasterKeyOption::A => y_option_a(pan, psn),
        MasterKeyOption::B => y_option_b(pan, psn),
    };
    let cipher = imk.cipher();
    let zl = cipher.encrypt(y);
    let zr = cipher.encrypt(y.map(|b| !b));
    let mut z = [0u8; 16];
    z[..8].copy_from_slice(&zl);
    z[8..].copy_from_slice(&zr);
    adjust_odd_parity(&mut z);
    let k = TdesKey::from_slice(&z);
    zeroize::Zeroize::zeroize(&mut z);
    match k {
        Ok(k) => k,
        // 16 bytes is always a valid TDES length.
        Err(_) => unreachable!("16-byte key"),
    }
}

/// Option A for an AES IMK (EMV Book 2 §A1.4.1, AES case): the ICC master key has the IMK's
/// length and is the leftmost bytes of AES(IMK)[Y ‖ (Y ⊕ FF..FF)] ‖ AES(IMK)[(Y ⊕ FF..FF) ‖ Y].
/// No public oracle implements it (pyemv 1.5.0 is TDES only); see the report.
pub fn derive_icc_mk_aes(imk: &AesKey, pan: &PanDigits, psn: Psn) -> AesKey {
    let y = y_option_a(pan, psn);
    let ny = y.map(|b| !b);
    let mut b1 = [0u8; 16];
    b1[..8].copy_from_slice(&y);
    b1[8..].copy_from_slice(&ny);
    let mut b2 = [0u8; 16];
    b2[..8].copy_from_slice(&ny);
    b2[8..].copy_from_slice(&y);
    let mut z = [0u8; 32];
    z[..16].copy_from_slice(&imk.encrypt(b1));
    z[16..].copy_from_slice(&imk.encrypt(b2));
    let k = AesKey::from_slice(&z[..imk.len()]);
    zeroize::Zeroize::zeroize(&mut z);
    match k {
        Ok(k) => k,
        Err(_) => unreachable!("an AES key length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::to_hex;

    fn imk() -> TdesKey {
        TdesKey::from_hex("imk", "0123456789ABCDEFFEDCBA9876543210").unwrap()
    }

    #[test]
    fn option_a_pyemv_doc_example() {
        // pyemv 1.5.0 kd.py module docstring: PAN 99012345678901234, PSN 45 (option A).
        let pan = PanDigits::new("99012345678901234").unwrap();
        let k = derive_icc_mk(&imk(), &pan, "45".parse().unwrap(), MasterKeyOption::A);
        assert_eq!(to_hex(k.expose()), "67F8292358083E5EA7AB7FDA58D53B6B");
    }

    #[test]
    fn option_b_pyemv_doc_example() {
        // pyemv 1.5.0 kd.derive_icc_mk_b docstring: PAN 12345678901234567, PSN 01.
        let pan = PanDigits::new("12345678901234567").unwrap();
        let k = derive_icc_mk(&imk(), &pan, "01".parse().unwrap(), MasterKeyOption::B);
        assert_eq!(to_hex(k.expose()), "AD406D7F6D7570916D75E5DCAB8CF737");
    }

    #[test]
    fn option_a_pyemv_doc_example_16_digits() {
        // pyemv 1.5.0 kd.derive_icc_mk_a docstring: PAN 12345678901234567, PSN 01.
        let pan = PanDigits::new("12345678901234567").unwrap();
        let k = derive_icc_mk(&imk(), &pan, "01".parse().unwrap(), MasterKeyOption::A);
        assert_eq!(to_hex(k.expose()), "73AD54688CEF2934B0979857E3C719F1");
    }

    #[test]
    fn option_b_equals_a_up_to_16_digits() {
        let pan = PanDigits::new("4761739001010010").unwrap();
        let psn = Psn::new(1).unwrap();
        assert_eq!(
            derive_icc_mk(&imk(), &pan, psn, MasterKeyOption::A),
            derive_icc_mk(&imk(), &pan, psn, MasterKeyOption::B)
        );
        assert!(derive_icc_mk(&imk(), &pan, psn, MasterKeyOption::A).check_parity().is_ok());
    }
}
