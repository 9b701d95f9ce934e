//! The issuer host simulator: the card issuer at the far end of the switch.
//!
//! It holds accounts (credit line, open-to-buy, status, expiry, PIN verification data, card keys),
//! answers authorizations, financial requests, reversals and advices with real decisions, verifies
//! ARQCs and PINs itself through the HSM, and decides ID&V for token provisioning. Decisions
//! ([`host`]) are functions of the account state and the request; the network shell around them
//! ([`server`]) speaks ISO 8583 over TCP with injectable faults.
//!
//! * [`cards`] — the configuration and accounts files, and [`cards::generate_test_issuer`] (test
//!   cards and their keystore for `serve` and tests).
//! * [`kept`] — the state a kept test network brings back after a restart.
//! * [`ledger`] — idempotent bookings, reversals and advices; [`idv`] — ID&V policy and OTPs.
//! * [`link_mac`] — the issuer's end of the switch's MAC-authenticated link: what lets it believe
//!   the token service's word on a token cryptogram.
//! * [`admin`] — the authenticated admin port (fault rules; cardholders' OTPs in test mode).
//! * [`testing`] — the card/terminal side of tests (chip requests, PIN blocks, reversals, the
//!   card's ARPC check).
#![forbid(unsafe_code)]

pub mod admin;
pub mod cards;
pub mod faults;
pub mod host;
pub mod idv;
pub mod kept;
pub mod ledger;
pub mod link_mac;
pub mod server;
pub mod testing;

/// The simulator's error: a configuration or key problem, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    /// A message MAC on the switch's link could not be made, or a received one is missing or
    /// wrong ([`link_mac`]).
    #[error("link MAC: {0}")]
    Mac(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
