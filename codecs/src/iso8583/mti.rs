//! The message type indicator (ISO 8583:1987 §4.1.2): version, class, function, origin.

use std::fmt;

use crate::error::{Error, ErrorKind, Location, Result};

/// A message type indicator: four decimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mti([u8; 4]);

impl Mti {
    pub const AUTHORIZATION_REQUEST: Mti = Mti(*b"0100");
    pub const AUTHORIZATION_RESPONSE: Mti = Mti(*b"0110");
    pub const AUTHORIZATION_ADVICE: Mti = Mti(*b"0120");
    pub const AUTHORIZATION_ADVICE_RESPONSE: Mti = Mti(*b"0130");
    pub const REVERSAL_REQUEST: Mti = Mti(*b"0400");
    pub const REVERSAL_RESPONSE: Mti = Mti(*b"0410");
    pub const FINANCIAL_REQUEST: Mti = Mti(*b"0200");
    pub const FINANCIAL_RESPONSE: Mti = Mti(*b"0210");
    pub const REVERSAL_ADVICE: Mti = Mti(*b"0420");
    pub const REVERSAL_ADVICE_RESPONSE: Mti = Mti(*b"0430");
    pub const NETWORK_MANAGEMENT_REQUEST: Mti = Mti(*b"0800");
    pub const NETWORK_MANAGEMENT_RESPONSE: Mti = Mti(*b"0810");

    /// Parses four ASCII digits.
    pub fn from_digits(digits: &[u8]) -> Result<Mti> {
        match <[u8; 4]>::try_from(digits) {
            Ok(d) if d.iter().all(u8::is_ascii_digit) => Ok(Mti(d)),
            _ => Err(Error::expected(
                ErrorKind::Mti,
                Location::Mti,
                None,
                "4 decimal digits",
                format!("{:?}", String::from_utf8_lossy(digits)),
            )),
        }
    }

    /// The four ASCII digits.
    pub fn digits(&self) -> &[u8; 4] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Invariant: only ASCII digits are stored.
        std::str::from_utf8(&self.0).unwrap_or("????")
    }

    fn digit(&self, i: usize) -> u8 {
        self.0[i] - b'0'
    }

    /// Version digit (0 = ISO 8583:1987, 1 = 1993, 2 = 2003).
    pub fn version(&self) -> u8 {
        self.digit(0)
    }

    /// Message class (1 authorization, 2 financial, 4 reversal, 8 network management...).
    pub fn class(&self) -> u8 {
        self.digit(1)
    }

    /// Message function (0 request, 1 request response, 2 advice, 3 advice response...).
    pub fn function(&self) -> u8 {
        self.digit(2)
    }

    /// Transaction originator (0 acquirer, 1 acquirer repeat, 2 issuer...).
    pub fn origin(&self) -> u8 {
        self.digit(3)
    }

    /// Whether this is a response (function 1, 3 or 5).
    pub fn is_response(&self) -> bool {
        matches!(self.function(), 1 | 3 | 5)
    }

    /// The response MTI for a request or advice (0100 → 0110, 0420 → 0430).
    pub fn response(&self) -> Option<Mti> {
        match self.function() {
            0 | 2 | 4 => {
                let mut d = self.0;
                d[2] += 1;
                Some(Mti(d))
            }
            _ => None,
        }
    }

    /// The class name from ISO 8583:1987 §4.1.2.2.
    pub fn class_name(&self) -> &'static str {
        match self.class() {
            1 => "authorization",
            2 => "financial",
            3 => "file action",
            4 => "reversal",
            5 => "reconciliation",
            6 => "administrative",
            7 => "fee collection",
            8 => "network management",
            _ => "reserved",
        }
    }

    pub fn function_name(&self) -> &'static str {
        match self.function() {
            0 => "request",
            1 => "request response",
            2 => "advice",
            3 => "advice response",
            4 => "notification",
            5 => "notification acknowledgement",
            _ => "reserved",
        }
    }
}

impl std::str::FromStr for Mti {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mti> {
        Mti::from_digits(s.as_bytes())
    }
}

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_0100() {
        let m: Mti = "0100".parse().expect("valid");
        assert_eq!((m.version(), m.class(), m.function(), m.origin()), (0, 1, 0, 0));
        assert_eq!(m.response(), Some(Mti::AUTHORIZATION_RESPONSE));
        assert_eq!(Mti::REVERSAL_ADVICE.response(), Some(Mti::REVERSAL_ADVICE_RESPONSE));
        assert!(Mti::AUTHORIZATION_RESPONSE.is_response());
        assert!("01A0".parse::<Mti>().is_err());
        assert!("010".parse::<Mti>().is_err());
    }
}
