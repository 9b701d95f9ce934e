//! The merchant side of the network: terminals that speak to the switch's acquirer listeners.
//!
//! * [`load`] — the open-loop load generator: many connections, a target rate, latency measured
//!   from each request's intended send time (no coordinated omission), the report of
//!   INTERFACES.md §4.
//! * [`checkout`] — online checkout: in-app/e-commerce with a token and the phone's online
//!   cryptogram (DE 22 100), and the card-not-present fallback with CVV2 (DE 22 810, DE 48).
//! * [`kernel`] — the contactless kernel's APDU dialogue with a card or phone (PPSE, SELECT,
//!   GPO, READ RECORD, GENERATE AC, EXTERNAL AUTHENTICATE), building DE 55.
//! * [`pos`] — a contactless POS terminal's authorization request with the card's cryptogram,
//!   and the card's check of the issuer's ARPC.
#![forbid(unsafe_code)]

pub mod checkout;
pub mod kernel;
pub mod load;
pub mod pos;
