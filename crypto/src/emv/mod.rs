//! EMV application cryptography: ICC master keys, session keys, application cryptograms (ARQC/TC/AAC)
//! and issuer authentication (ARPC), per EMV 4.3 Book 2 Annex A1 and the scheme cryptogram versions
//! (CVNs) as pyemv 1.5.0 implements them.
//!
//! The card simulators and the issuer side run the same code: [`Cvn`] knows, per cryptogram
//! version, the master-key option, the session key, the padding and the ARPC method. Inputs are
//! typed once at the edge ([`PanDigits`], [`Psn`], [`Atc`], [`UnpredictableNumber`]);
//! the derivations below them cannot see malformed input.

pub mod cvn;
pub mod icc_mk;
pub mod session;

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroize;

use crate::error::{Error, ErrorKind, Result};
use crate::keys::from_hex;

pub use cvn::{ArpcInput, CardInputs, CardMasterKey, Cvn, VerifiedArqc, ac_data_from_tags};
pub use icc_mk::{MasterKeyOption, derive_icc_mk, derive_icc_mk_aes};
pub use session::{common_session_key, common_session_key_aes, mastercard_session_key};

/// The digits of a primary account number (8 to 19 digits, ISO/IEC 7812-1), as the EMV key
/// derivations consume them. `Debug` and `Display` mask it (first 6, last 4).
///
/// A minimal type for the crypto crate; the codecs' `Pan` carries more (Luhn, BIN helpers).
#[derive(Clone, PartialEq, Eq)]
pub struct PanDigits(String);

impl PanDigits {
    /// Parses 8 to 19 ASCII digits. The error names the argument `pan`, its length or the
    /// position of the first non-digit, never the digits.
    pub fn new(s: &str) -> Result<Self> {
        if let Some(pos) = s.bytes().position(|b| !b.is_ascii_digit()) {
            return Err(Error::new(ErrorKind::Pan, "pan", format!("non-digit at position {pos}")));
        }
        if !(8..=19).contains(&s.len()) {
            return Err(Error::new(
                ErrorKind::Pan,
                "pan",
                format!("expected 8 to 19 digits, found {}", s.len()),
            ));
        }
        Ok(PanDigits(s.to_owned()))
    }

    /// The clear digits. Every caller is a place where a clear PAN is used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// First 6 and last 4 digits, the rest `*` (PCI DSS 3.4 display rule).
    pub fn masked(&self) -> String {
        let n = self.0.len();
        self.0.char_indices().map(|(i, c)| if (n > 10 && i < 6) || i + 4 >= n { c } else { '*' }).collect()
    }
}

impl Drop for PanDigits {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl FromStr for PanDigits {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PanDigits::new(s)
    }
}

impl fmt::Debug for PanDigits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PanDigits({})", self.masked())
    }
}

impl fmt::Display for PanDigits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// PAN sequence number (tag 5F34), two decimal digits 00..99.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Psn(u8);

impl Psn {
    pub fn new(n: u8) -> Result<Self> {
        if n > 99 {
            return Err(Error::new(ErrorKind::Input, "psn", format!("expected 00 to 99, found {n}")));
        }
        Ok(Psn(n))
    }

    pub fn value(self) -> u8 {
        self.0
    }

    /// The two ASCII digits used in the key derivations (EMV Book 2 §A1.4).
    pub fn digits(self) -> [u8; 2] {
        [b'0' + self.0 / 10, b'0' + self.0 % 10]
    }
}

impl FromStr for Psn {
    type Err = Error;
    /// Exactly two decimal digits, as tag 5F34 is written (`"00"`, `"01"`).
    fn from_str(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_digit) {
            return Err(Error::new(
                ErrorKind::Input,
                "psn",
                format!("expected 2 decimal digits, found {} characters", s.len()),
            ));
        }
        Psn::new((b[0] - b'0') * 10 + (b[1] - b'0'))
    }
}

/// Application transaction counter (tag 9F36), 2 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Atc(pub u16);

impl Atc {
    pub fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }

    /// From the 2 bytes of tag 9F36.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        match b {
            [h, l] => Ok(Atc(u16::from_be_bytes([*h, *l]))),
            _ => Err(Error::new(ErrorKind::Input, "atc", format!("expected 2 bytes, found {}", b.len()))),
        }
    }
}

impl FromStr for Atc {
    type Err = Error;
    /// 4 hex digits.
    fn from_str(s: &str) -> Result<Self> {
        Atc::from_slice(&from_hex("atc", s)?)
    }
}

/// Unpredictable number (tag 9F37), 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UnpredictableNumber(pub [u8; 4]);

impl UnpredictableNumber {
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        <[u8; 4]>::try_from(b)
            .map(UnpredictableNumber)
            .map_err(|_| Error::new(ErrorKind::Input, "un", format!("expected 4 bytes, found {}", b.len())))
    }
}

impl FromStr for UnpredictableNumber {
    type Err = Error;
    /// 8 hex digits.
    fn from_str(s: &str) -> Result<Self> {
        UnpredictableNumber::from_slice(&from_hex("un", s)?)
    }
}

/// A fixed-length byte argument, naming it on a length error.
pub(crate) fn fixed<const N: usize>(what: &'static str, b: &[u8]) -> Result<[u8; N]> {
    <[u8; N]>::try_from(b)
        .map_err(|_| Error::new(ErrorKind::Input, what, format!("expected {N} bytes, found {}", b.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pan_masks_and_refuses_non_digits() {
        let p = PanDigits::new("4761739001010010").unwrap();
        assert_eq!(format!("{p:?}"), "PanDigits(476173******0010)");
        assert_eq!(p.to_string(), "476173******0010");
        let e = PanDigits::new("47617390010100X0").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Pan);
        assert!(e.to_string().contains("position 14"), "{e}");
        assert!(!e.to_string().contains("4761"));
        assert!(PanDigits::new("1234567").is_err());
        assert!(PanDigits::new("12345678901234567890").is_err());
    }

    #[test]
    fn psn_atc_un_parse() {
        assert_eq!("07".parse::<Psn>().unwrap().digits(), *b"07");
        assert!("7".parse::<Psn>().unwrap_err().to_string().starts_with("psn:"));
        assert!("0A".parse::<Psn>().is_err());
        assert_eq!("001C".parse::<Atc>().unwrap(), Atc(0x1C));
        assert!("01C".parse::<Atc>().unwrap_err().to_string().starts_with("atc:"));
        assert!("000102".parse::<Atc>().unwrap_err().to_string().contains("expected 2 bytes"));
        assert!("0102".parse::<UnpredictableNumber>().unwrap_err().to_string().starts_with("un:"));
    }
}
