//! Typed views of the common data elements (ISO 8583:1987 §4.4 data element definitions).
//!
//! Each accessor returns `Ok(None)` when the element is absent and an error naming the element
//! when it does not parse. The PAN is reachable only through [`Message::pan_clear`], whose
//! [`Pan`] masks itself in `Debug` and `Display`.

use std::fmt;

use bytes::Bytes;

use super::describe::mask_pan;
use super::message::Message;
use super::spec::ContentType;
use crate::error::{Error, ErrorKind, Location, Result};

/// A primary account number (DE 2). `Debug`/`Display` show first 6 and last 4 digits only.
#[derive(Clone, PartialEq, Eq)]
pub struct Pan(String);

impl Pan {
    /// A PAN from 12 to 19 digits (e.g. read from track 2 or from chip tag 5A); `None` otherwise.
    pub fn from_digits(digits: &str) -> Option<Pan> {
        ((12..=19).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Pan(digits.to_string()))
    }

    /// The clear digits: for the few stages (tokenization, PIN block, key derivation) that need them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", mask_pan(&self.0))
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_pan(&self.0))
    }
}

/// DE 3 processing code: transaction type (2 digits), from-account and to-account types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingCode(pub [u8; 6]);

impl ProcessingCode {
    pub fn transaction_type(&self) -> &str {
        std::str::from_utf8(&self.0[..2]).unwrap_or("??")
    }
    pub fn from_account(&self) -> &str {
        std::str::from_utf8(&self.0[2..4]).unwrap_or("??")
    }
    pub fn to_account(&self) -> &str {
        std::str::from_utf8(&self.0[4..]).unwrap_or("??")
    }
}

/// An amount in minor units of its currency (DE 4, 5, 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(pub u64);

/// An ISO 4217 currency code as carried (DE 49, 50, 51), e.g. `978`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrencyCode(pub [u8; 3]);

/// DE 11 system trace audit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stan(pub u32);

/// DE 37 retrieval reference number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rrn(pub String);

/// DE 41 card acceptor terminal identification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TerminalId(pub String);

/// DE 42 card acceptor identification code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MerchantId(pub String);

/// DE 22 POS entry mode: PAN entry mode (2 digits) and PIN entry capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PosEntryMode(pub [u8; 3]);

impl PosEntryMode {
    /// `05` chip, `07` contactless chip, `90` magnetic stripe, `01` manual...
    pub fn pan_entry(&self) -> &str {
        std::str::from_utf8(&self.0[..2]).unwrap_or("??")
    }
}

/// DE 7 transmission date and time, MMDDhhmmss (GMT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransmissionDateTime {
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// DE 14 expiration date, YYMM. Its `Debug` masks it (sensitive alongside the PAN).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub year: u8,
    pub month: u8,
}

impl fmt::Debug for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Expiry(****)")
    }
}

/// DE 39 response code, two characters (e.g. `00` approved, `05` do not honour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseCode(pub [u8; 2]);

impl ResponseCode {
    pub const APPROVED: ResponseCode = ResponseCode(*b"00");
    pub const DO_NOT_HONOUR: ResponseCode = ResponseCode(*b"05");
    pub const INVALID_TRANSACTION: ResponseCode = ResponseCode(*b"12");
    pub const INVALID_AMOUNT: ResponseCode = ResponseCode(*b"13");
    pub const INVALID_CARD: ResponseCode = ResponseCode(*b"14");
    pub const NO_SUCH_ISSUER: ResponseCode = ResponseCode(*b"15");
    /// Unable to locate the original (a reversal or advice without one).
    pub const NO_ORIGINAL: ResponseCode = ResponseCode(*b"25");
    pub const FORMAT_ERROR: ResponseCode = ResponseCode(*b"30");
    pub const EXPIRED: ResponseCode = ResponseCode(*b"54");
    pub const WRONG_PIN: ResponseCode = ResponseCode(*b"55");
    pub const NOT_PERMITTED_CARDHOLDER: ResponseCode = ResponseCode(*b"57");
    /// Transaction not permitted to the terminal (not registered for its connection).
    pub const NOT_PERMITTED_TERMINAL: ResponseCode = ResponseCode(*b"58");
    pub const RESTRICTED: ResponseCode = ResponseCode(*b"62");
    pub const SECURITY_VIOLATION: ResponseCode = ResponseCode(*b"63");
    pub const TOO_LATE: ResponseCode = ResponseCode(*b"68");
    pub const CRYPTOGRAM_FAILURE: ResponseCode = ResponseCode(*b"82");
    pub const ISSUER_UNAVAILABLE: ResponseCode = ResponseCode(*b"91");
    pub const DUPLICATE: ResponseCode = ResponseCode(*b"94");
    pub const SYSTEM_ERROR: ResponseCode = ResponseCode(*b"96");

    /// A code from its two characters (any printable pair: networks define their own).
    pub fn parse(s: &str) -> Option<ResponseCode> {
        let b: [u8; 2] = s.as_bytes().try_into().ok()?;
        b.iter().all(|c| c.is_ascii_alphanumeric()).then_some(ResponseCode(b))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// Whether the code approves (ISO 8583:1987: 00 approved, 08 honour with identification,
    /// 10 approved for a partial amount, 11 approved (VIP), 16 approved, update track 3).
    pub fn approves(&self) -> bool {
        matches!(&self.0, b"00" | b"08" | b"10" | b"11" | b"16")
    }
}

fn bad(de: u16, expected: &str) -> Error {
    Error::expected(ErrorKind::Content, Location::Field(de), None, expected, "a value that does not parse")
}

fn digits<const N: usize>(de: u16, s: &str) -> Result<[u8; N]> {
    let b: [u8; N] = s.as_bytes().try_into().map_err(|_| bad(de, &format!("{N} characters")))?;
    Ok(b)
}

fn number(de: u16, s: &str) -> Result<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(de, "decimal digits"));
    }
    s.parse().map_err(|_| bad(de, "decimal digits"))
}

impl Message {
    fn parse<T>(&self, de: u16, f: impl FnOnce(&str) -> Result<T>) -> Result<Option<T>> {
        self.text(de).map(|t| f(&t)).transpose()
    }

    /// DE 2 in clear, as a self-masking [`Pan`].
    pub fn pan_clear(&self) -> Result<Option<Pan>> {
        self.parse(2, |s| {
            if s.bytes().all(|b| b.is_ascii_digit()) {
                Ok(Pan(s.to_string()))
            } else {
                Err(bad(2, "PAN digits"))
            }
        })
    }

    /// The card number a request carries, in clear: DE 2, else the leading digits of track 2
    /// (DE 35, 12 to 19 of them). For routing and token look-up; never to be logged.
    pub fn card_number(&self) -> Option<String> {
        if let Ok(Some(p)) = self.pan_clear() {
            return Some(p.expose().to_string());
        }
        let t2 = self.text(35)?;
        let digits: String = t2.chars().take_while(char::is_ascii_digit).collect();
        (12..=19).contains(&digits.len()).then_some(digits)
    }

    pub fn processing_code(&self) -> Result<Option<ProcessingCode>> {
        self.parse(3, |s| digits(3, s).map(ProcessingCode))
    }

    /// DE 4 amount, transaction (minor units).
    pub fn amount(&self) -> Result<Option<Amount>> {
        self.parse(4, |s| number(4, s).map(Amount))
    }

    /// DE 49 currency code, transaction.
    pub fn currency(&self) -> Result<Option<CurrencyCode>> {
        self.parse(49, |s| digits(49, s).map(CurrencyCode))
    }

    pub fn transmission_date_time(&self) -> Result<Option<TransmissionDateTime>> {
        self.parse(7, |s| {
            let d: [u8; 10] = digits(7, s)?;
            let two = |i: usize| (d[i] - b'0') * 10 + (d[i + 1] - b'0');
            Ok(TransmissionDateTime {
                month: two(0),
                day: two(2),
                hour: two(4),
                minute: two(6),
                second: two(8),
            })
        })
    }

    pub fn stan(&self) -> Result<Option<Stan>> {
        self.parse(11, |s| number(11, s).map(|n| Stan(n as u32)))
    }

    pub fn expiry(&self) -> Result<Option<Expiry>> {
        self.parse(14, |s| {
            let d: [u8; 4] = digits(14, s)?;
            Ok(Expiry { year: (d[0] - b'0') * 10 + d[1] - b'0', month: (d[2] - b'0') * 10 + d[3] - b'0' })
        })
    }

    pub fn pos_entry_mode(&self) -> Result<Option<PosEntryMode>> {
        self.parse(22, |s| digits(22, s).map(PosEntryMode))
    }

    pub fn rrn(&self) -> Result<Option<Rrn>> {
        self.parse(37, |s| Ok(Rrn(s.to_string())))
    }

    pub fn response_code(&self) -> Result<Option<ResponseCode>> {
        self.parse(39, |s| digits(39, s).map(ResponseCode))
    }

    pub fn terminal_id(&self) -> Result<Option<TerminalId>> {
        self.parse(41, |s| Ok(TerminalId(s.to_string())))
    }

    pub fn merchant_id(&self) -> Result<Option<MerchantId>> {
        self.parse(42, |s| Ok(MerchantId(s.to_string())))
    }

    /// DE 55 ICC data as bytes (hex-decoded when the spec carries it as hex text).
    pub fn icc_data(&self) -> Result<Option<Bytes>> {
        let (Some(f), Some(fs)) = (self.field(55), self.spec().field(55)) else { return Ok(None) };
        if fs.content == ContentType::Hex {
            hex::decode(f.data)
                .map(|v| Some(Bytes::from(v)))
                .map_err(|_| bad(55, "an even number of hex digits"))
        } else {
            Ok(self.bytes(55))
        }
    }

    /// Sets DE 55 from bytes (as hex text when the spec carries it so).
    pub fn set_icc_data(&mut self, data: &[u8]) -> Result<()> {
        match self.spec().field(55).map(|f| f.content) {
            Some(ContentType::B) => self.set_bytes(55, Bytes::copy_from_slice(data)),
            _ => self.set_text(55, &crate::hex_upper(data)),
        }
    }

    pub fn set_stan(&mut self, stan: Stan) -> Result<()> {
        self.set_text(11, &format!("{:06}", stan.0))
    }

    /// Sets DE 4 as 12 digits.
    pub fn set_amount(&mut self, amount: Amount) -> Result<()> {
        self.set_text(4, &format!("{:012}", amount.0))
    }

    pub fn set_response_code(&mut self, rc: ResponseCode) -> Result<()> {
        self.set_text(39, rc.as_str())
    }
}
