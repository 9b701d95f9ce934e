//! The merchant side of the network: terminals that speak to the switch's acquirer listeners.
//!
//! * [`load`] — the open-loop load generator: many connections, a target rate, latency measured
//!   from each request's intended send time (no coordinated omission), the report of
//!   INTERFACES.md §4.
//! * [`mix`] — the mixed traffic a load run sends (POS and ATM, approvals and declines).
//! * [`report`] — the load report as a page with plots (SVG, inline in HTML).
//! * [`certify`] — certification suites run against a switch, case by case.
//! * [`ports`] — the ports file of a running network (INTERFACES.md §5).
//! * [`pos`] — a contactless POS terminal's authorization request with the card's cryptogram,
//!   and the card's check of the issuer's ARPC.
#![forbid(unsafe_code)]

pub mod certify;
pub mod cli;
pub mod error;
pub mod load;
pub mod mix;
pub mod ports;
pub mod pos;
pub mod report;

pub use error::{Error, Result};
