//! Card verification values.
//!
//! - **CVV / CVC** (magnetic stripe), **iCVV** (the chip's track 2 equivalent, service code 999) and
//!   **CVV2 / CVC2** (printed, service code 000): the CVK algorithm — PAN ‖ expiry (YYMM) ‖ service
//!   code, right-padded with zeros to 32 digits; block 1 enciphered with the CVK's left half (single
//!   DES), XORed with block 2, enciphered with the whole CVK (TDES); the first three decimal digits
//!   of the result, then (if fewer) its hex digits A–F as 0–5. Matches psec 1.3.0's
//!   `cvv.generate_cvv`.
//! - **dCVV** (Visa contactless magnetic-stripe mode): the same algorithm under the card's dCVV key
//!   with the 2-byte ATC (4 hex digits) in place of the service code.
//! - **CVC3** (Mastercard contactless magnetic-stripe mode): IVCVC3 = the last 2 bytes of the ISO
//!   9797-1 algorithm 3 MAC (padding method 2) of the track template under the card's CVC3 key;
//!   CVC3 = the last 2 bytes of TDES(IVCVC3 ‖ UN ‖ ATC), as a decimal number — as pyemv 1.5.0's
//!   `cvv.generate_cvc3`; the card's track data carries the number of rightmost digits it uses.

use subtle::ConstantTimeEq;

use crate::error::{Error, ErrorKind, Result};
use crate::keys::TdesKey;
use crate::mac::{Padding, retail_mac};

fn digits_arg(what: &'static str, s: &str, min: usize, max: usize) -> Result<()> {
    if let Some(p) = s.bytes().position(|b| !b.is_ascii_digit()) {
        return Err(Error::new(ErrorKind::Input, what, format!("non-digit at position {p}")));
    }
    if !(min..=max).contains(&s.len()) {
        let want = if min == max { format!("{min}") } else { format!("{min} to {max}") };
        return Err(Error::new(ErrorKind::Input, what, format!("expected {want} digits, found {}", s.len())));
    }
    Ok(())
}

fn cvk_double(cvk: &TdesKey) -> Result<()> {
    if cvk.len() != 16 {
        return Err(Error::new(
            ErrorKind::KeyLength,
            "cvk",
            format!("a double-length TDES key, found {} bytes", cvk.len()),
        ));
    }
    Ok(())
}

/// The CVK algorithm over up to 32 hex digits of data.
fn cvk_algorithm(cvk: &TdesKey, data: &str, n: usize) -> Result<String> {
    cvk_double(cvk)?;
    let block: String = format!("{data:0<32}");
    let raw =
        hex::decode(&block[..32]).map_err(|_| Error::new(ErrorKind::Input, "cvv data", "not hex digits"))?;
    let mut b1 = [0u8; 8];
    b1.copy_from_slice(&raw[..8]);
    let mut x = cvk.single_des_left().encrypt(b1);
    for (a, b) in x.iter_mut().zip(&raw[8..16]) {
        *a ^= b;
    }
    let r = cvk.encrypt(x);
    let nibbles: Vec<u8> = r.iter().flat_map(|b| [b >> 4, b & 0x0F]).collect();
    let out: String = nibbles
        .iter()
        .filter(|d| **d < 10)
        .chain(nibbles.iter().filter(|d| **d >= 10))
        .take(n)
        .map(|d| char::from(b'0' + if *d < 10 { *d } else { *d - 10 }))
        .collect();
    Ok(out)
}

/// CVV / CVC for a PAN, expiry (YYMM) and service code: 3 digits. iCVV: service `999`; CVV2:
/// service `000`.
pub fn cvv(cvk: &TdesKey, pan: &str, expiry: &str, service_code: &str) -> Result<String> {
    digits_arg("pan", pan, 12, 19)?;
    digits_arg("exp", expiry, 4, 4)?;
    digits_arg("service", service_code, 3, 3)?;
    cvk_algorithm(cvk, &format!("{pan}{expiry}{service_code}"), 3)
}

/// Verifies a received CVV in constant time.
pub fn verify_cvv(cvk: &TdesKey, pan: &str, expiry: &str, service_code: &str, received: &str) -> Result<()> {
    let expected = cvv(cvk, pan, expiry, service_code)?;
    if received.len() == expected.len() && bool::from(expected.as_bytes().ct_eq(received.as_bytes())) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Verification, "cvv", "does not verify"))
    }
}

/// Visa dCVV: 3 digits from the card's dCVV key, PAN, expiry and ATC.
pub fn dcvv(icc_dcvv_key: &TdesKey, pan: &str, expiry: &str, atc: [u8; 2]) -> Result<String> {
    digits_arg("pan", pan, 12, 19)?;
    digits_arg("exp", expiry, 4, 4)?;
    cvk_algorithm(icc_dcvv_key, &format!("{pan}{expiry}{}", hex::encode_upper(atc)), 3)
}

/// Mastercard CVC3 as a decimal number (0–65535); the card's track data says how many rightmost
/// digits are used.
pub fn cvc3(icc_cvc3_key: &TdesKey, track_template: &[u8], atc: [u8; 2], un: [u8; 4]) -> Result<u16> {
    cvk_double(icc_cvc3_key)?;
    let iv = retail_mac(icc_cvc3_key, track_template, Padding::Method2)?;
    let block = [iv[6], iv[7], un[0], un[1], un[2], un[3], atc[0], atc[1]];
    let r = icc_cvc3_key.encrypt(block);
    Ok(u16::from_be_bytes([r[6], r[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psec_doc_example() {
        // psec 1.3.0 cvv.generate_cvv docstring.
        let cvk = TdesKey::from_hex("cvk", "0123456789ABCDEFFEDCBA9876543210").expect("key");
        assert_eq!(cvv(&cvk, "1234567890123456", "9912", "220").expect("cvv"), "170");
        verify_cvv(&cvk, "1234567890123456", "9912", "220", "170").expect("verifies");
        assert!(verify_cvv(&cvk, "1234567890123456", "9912", "220", "171").is_err());
        assert!(cvv(&cvk, "1234567890123456", "991", "220").is_err());
        assert!(
            cvv(&cvk, "12345678901234A6", "9912", "220")
                .expect_err("pan")
                .to_string()
                .contains("position 14")
        );
    }

    #[test]
    fn cvc3_pyemv_doc_example() {
        // pyemv 1.5.0 cvv.generate_cvc3 docstring.
        let iss = TdesKey::from_hex("k", "01234567899876543210012345678998").expect("key");
        let pan = crate::emv::PanDigits::new("5123456789012345").expect("pan");
        let icc = crate::emv::derive_icc_mk(
            &iss,
            &pan,
            crate::emv::Psn::new(0).expect("psn"),
            crate::emv::MasterKeyOption::A,
        );
        let track = hex::decode("5123456789012345D35121010000000000000F").expect("hex");
        assert_eq!(cvc3(&icc, &track, [0x00, 0x5E], [0x00, 0x00, 0x08, 0x99]).expect("cvc3"), 29488);
    }
}
