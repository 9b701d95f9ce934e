//! The paynet authorization switch.
//!
//! The switch decodes ISO 8583 from acquirer connections, validates, detokenizes, verifies
//! cryptograms and PINs through the `Hsm`, routes to issuer links, and answers — with
//! store-and-forward for reversals and advices, stand-in processing when an issuer is down, and a
//! journal of every message with no clear PAN in it. The token service (crate `tsp`) runs inside
//! the node when configured: the switch builds it ([`tokens`]) and is its issuer gateway
//! ([`gateway`]). Stages are plain functions of (state, message);
//! I/O lives at the edges (listeners, issuer links, the store).
#![forbid(unsafe_code)]

pub mod acquirer;
pub mod admin;
pub mod certify;
pub mod cidr;
pub mod clock;
pub mod config;
pub mod dedupe;
pub mod engine;
pub mod error;
pub mod gateway;
pub mod issuer;
pub mod journal;
pub mod keys;
pub mod macing;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod pending;
pub mod pipeline;
pub mod records;
pub mod registry;
pub mod route;
pub mod saf;
pub mod standin;
pub mod state;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod validate;
pub mod wire;

pub use error::{Error, ErrorKind, Result};

/// The detokenize stage's contract lives with the token service that implements it.
pub use tsp::detokenize;
