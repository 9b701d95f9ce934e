//! EMV contactless, both ends of the dialogue (EMV Book A/B, Book C-2/C-3 style online-only
//! flow), sans-IO: what crosses the air interface is a command APDU in and a response APDU out,
//! so both sides are plain functions over bytes, testable against each other with no device.
//!
//! * [`apdu`] — command and response APDUs (ISO/IEC 7816-4), the status words.
//! * [`card`] — the [`Contactless`] interface a terminal taps, and the card application behind it
//!   ([`card::EmvApplet`]): PPSE, SELECT, GET PROCESSING OPTIONS, READ RECORD, GENERATE AC,
//!   EXTERNAL AUTHENTICATE. The same code runs a chip card, a secure-element applet and an HCE
//!   application.
//! * [`kernel`] — the terminal's side: the same commands sent in order, DE 55 built from the
//!   card's answers and the terminal's data, tag 91 handed back to the card.
//!
//! Used by the phone, the merchant terminals and the ATM; it imports no simulator and no switch.
#![forbid(unsafe_code)]

pub mod apdu;
pub mod card;
pub mod kernel;

pub use apdu::{Command, Sw};
pub use card::{CardKeys, CardProfile, Contactless, EmvApplet, Luk, mask};
pub use kernel::{TapError, Tapped, TerminalConfig, TxData, tap};
