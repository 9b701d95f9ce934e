//! The contactless card interface and the EMV card application behind it.
//!
//! A terminal (POS kernel, ATM reader) talks to a card or a phone only through
//! [`Contactless::transceive`]: a command APDU in, a response APDU (data ‖ SW1 SW2) out, as over
//! ISO/IEC 14443-4. [`applet::EmvApplet`] is the card application: the same code runs a plastic
//! chip card, a secure-element applet and an HCE application — they differ only in where the
//! [`CardProfile`] lives and in which keys it holds ([`CardKeys`]).

pub mod applet;

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

pub use applet::EmvApplet;

/// Anything a terminal can tap: answers command APDUs with response APDUs.
pub trait Contactless {
    fn transceive(&mut self, command: &[u8]) -> Vec<u8>;
}

/// What a card application is personalised with.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CardProfile {
    /// The PAN, or the token for a tokenized card (digits).
    pub pan: String,
    /// YYMM.
    pub expiry: String,
    /// PAN sequence number, two digits.
    pub psn: String,
    /// Cryptogram version name (INTERFACES.md §2: visa18, mc20, ...).
    pub cvn: String,
    /// Application identifier, hex (e.g. A0000000031010).
    pub aid: String,
    pub label: String,
    pub keys: CardKeys,
    /// The last application transaction counter used (0 before the first transaction).
    pub atc: u16,
}

impl fmt::Debug for CardProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardProfile")
            .field("pan", &mask(&self.pan))
            .field("cvn", &self.cvn)
            .field("aid", &self.aid)
            .field("keys", &self.keys)
            .field("atc", &self.atc)
            .finish()
    }
}

/// The PAN with all but the first six and last four digits hidden (the network's one mask).
pub use codecs::pan::mask;

/// The card's keys: its ICC master key (a chip card, a secure element), or limited-use keys, one
/// per ATC (a cloud-based / HCE phone, which never holds the master key).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CardKeys {
    Master { icc_mk: String },
    Limited { luks: Vec<Luk> },
}

impl fmt::Debug for CardKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CardKeys::Master { .. } => f.write_str("Master(..)"),
            CardKeys::Limited { luks } => write!(f, "Limited({} keys)", luks.len()),
        }
    }
}

impl Drop for CardKeys {
    fn drop(&mut self) {
        match self {
            CardKeys::Master { icc_mk } => icc_mk.zeroize(),
            CardKeys::Limited { luks } => luks.iter_mut().for_each(|l| l.key.zeroize()),
        }
    }
}

/// A limited-use key: the session key for one ATC.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Luk {
    /// The ATC, 4 hex digits.
    pub atc: String,
    /// The TDES session key, hex.
    pub key: String,
}

impl CardProfile {
    /// Limited-use keys left (None for a card holding its master key).
    pub fn luks_left(&self) -> Option<usize> {
        match &self.keys {
            CardKeys::Master { .. } => None,
            CardKeys::Limited { luks } => Some(luks.len()),
        }
    }
}
