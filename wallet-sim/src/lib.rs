//! The cardholder side of the network: contactless chip cards and phones, and the providers that
//! put cards into phones in the four operating models (docs/operating-models.md).
//!
//! The card application is the `emv` crate's, the phone (secure elements, the HCE area, the OTA
//! secure channel, its state file) the `phone` crate's: terminals and the ATM tap them too.
//!
//! * [`providers`] — SP TSM, SE operator and SE TSM, cloud (HCE) platform, DPSP wallet server:
//!   HTTP servers speaking JSON to each other, to the phone and to the token service.
//! * [`flows`] — the cardholder's and phone's steps of each model.
//! * [`cli`] — the `wallet-sim` command line.
//! * [`error`] — what can go wrong, for a caller to tell apart.

pub mod cli;
pub mod error;
pub mod flows;
pub mod providers;

pub use error::{Error, Result};
