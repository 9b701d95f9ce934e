//! What the terminal simulators share — the merchant terminal (`terminal-sim`), the ATM (`atm-sim`)
//! and the tests and benches that play a terminal — so that none of them depends on another:
//!
//! * [`pos`] — a contactless POS terminal's authorization request with the card's cryptogram
//!   ([`pos::chip_request`], [`pos::tap_request`]), the reversal advice it owes, the card's check
//!   of the issuer's ARPC, and the ports file's [`pos::TestCard`].
//! * [`billing`] — the network's currency conversion as the answer shows it (receipts, ATM screen).
//! * [`link`] — one request and its answer over an acquirer listener's framing ([`link::Target`]).
//! * [`owed`] — the reversal advices a terminal owes, kept sealed in its state folder until the
//!   network acknowledges them, delivered before its next transaction.
//! * [`state`] — what device simulators share for their state folders: atomic writes, locks, the
//!   sealer of what carries a PAN.
//! * [`ports`] — the ports file of a running network (INTERFACES.md §5), as terminals read it.
//!
//! The EMV dialogue itself (the kernel and the card) is the `emv` crate's.
#![forbid(unsafe_code)]

pub mod billing;
pub mod error;
pub mod link;
pub mod owed;
pub mod ports;
pub mod pos;
pub mod state;

pub use error::{Error, Result};
