//! The issuer host simulator: the card issuer at the far end of the switch.
//!
//! It holds accounts (credit line, open-to-buy, status, expiry, PIN verification data, card keys),
//! answers authorizations, financial requests, reversals and advices with real decisions, verifies
//! ARQCs and PINs itself, and decides ID&V for token provisioning. Decisions are functions of the
//! account state and the request; the network shell around them speaks ISO 8583 over TCP.
#![forbid(unsafe_code)]

pub mod idv;
pub mod ledger;
