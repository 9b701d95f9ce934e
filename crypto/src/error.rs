//! The one error type of the crypto crate.
//!
//! Errors name the argument or structure at fault and the reason. They never carry key material,
//! a PIN or a clear PAN: a key is named by its role (and at most its check value), a PIN by its
//! length, a PAN by its length or the position of an offending character.

use std::fmt;

/// What kind of failure this is; callers match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A key has the wrong length for its algorithm.
    KeyLength,
    /// A DES-family key does not have odd parity where parity is required.
    KeyParity,
    /// A key check value does not match the key.
    KeyCheckValue,
    /// A key is used for something its attributes do not allow.
    KeyUsage,
    /// A key block is malformed (header, length, encoding).
    KeyBlockFormat,
    /// A key block's MAC does not verify (tampered or wrong KBPK).
    KeyBlockMac,
    /// A keystore problem (missing key, bad LMK source, duplicate name).
    Keystore,
    /// A PIN is malformed (length, non-digit) or a PIN block does not decode to a valid PIN.
    Pin,
    /// A PAN is malformed (length, non-digit).
    Pan,
    /// A DUKPT KSN is malformed or its counter is exhausted.
    Ksn,
    /// Input data has the wrong length or content (hex, block alignment, out of range).
    Input,
    /// A cryptogram, MAC or value did not verify.
    Verification,
    /// The operation is not supported for this algorithm or option.
    Unsupported,
    /// Sealed data did not open (tampered, bound to other data, or under an unknown key
    /// version), or could not be sealed.
    Seal,
}

/// A crypto error: kind plus a specific, non-sensitive explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    /// Which argument or structure is at fault, e.g. `"imk"`, `"pin block"`, `"KSN"`.
    pub what: &'static str,
    pub detail: String,
}

impl Error {
    pub fn new(kind: ErrorKind, what: &'static str, detail: impl Into<String>) -> Self {
        Error { kind, what, detail: detail.into() }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
