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
//! * [`terminal`] — a merchant terminal's configuration (TOML), its clock and its STAN counter.
//! * [`receipt`] — the receipt a terminal prints, amounts by the currency's ISO 4217 exponent.
//!
//! What it shares with the ATM and the tests — the acquirer link, the POS request, owed reversal
//! advices, the state folder, the ports file — is the `terminal-kit` crate's; the EMV kernel is the
//! `emv` crate's.
#![forbid(unsafe_code)]

pub mod certify;
pub mod checkout;
pub mod cli;
pub mod load;
pub mod mix;
pub mod receipt;
pub mod report;
pub mod terminal;

pub use terminal_kit::{Error, Result};
