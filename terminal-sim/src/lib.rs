//! The merchant side of the network: terminals that speak to the switch's acquirer listeners.
//!
//! * [`load`] — the open-loop load generator: many connections, a target rate, latency measured
//!   from each request's intended send time (no coordinated omission), the report of
//!   INTERFACES.md §4.
//! * [`checkout`] — online checkout: in-app/e-commerce with a token and the phone's online
//!   cryptogram (DE 22 100), and the card-not-present fallback with CVV2 (DE 22 810, DE 48).
//! * [`mix`] — the mixed traffic a load run sends (POS and ATM, approvals and declines).
//! * [`report`] — the load report as a page with plots (SVG, inline in HTML).
//! * [`certify`] — certification suites run against a switch, case by case.
//! * [`ports`] — the ports file of a running network (INTERFACES.md §5).
//! * [`pos`] — a contactless POS terminal's authorization request with the card's cryptogram,
//!   and the card's check of the issuer's ARPC.
//! * [`terminal`] — a merchant terminal's configuration (TOML), its clock and its STAN counter.
//! * [`link`] — one request and its answer over an acquirer listener's framing.
//! * [`owed`] — the reversal advices a terminal owes, kept sealed in its state folder until the
//!   network acknowledges them, delivered before its next transaction.
//! * [`state`] — what device simulators share for their state folders: atomic writes, locks,
//!   the sealer of what carries a PAN.
//! * [`receipt`] — the receipt a terminal prints, amounts by the currency's ISO 4217 exponent.
#![forbid(unsafe_code)]

pub mod certify;
pub mod checkout;
pub mod cli;
pub mod error;
pub mod link;
pub mod load;
pub mod mix;
pub mod owed;
pub mod ports;
pub mod pos;
pub mod receipt;
pub mod report;
pub mod state;
pub mod terminal;

pub use error::{Error, Result};
