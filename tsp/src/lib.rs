//! The network's token service provider (EMV Payment Tokenisation): token numbers from the
//! network's token BIN ranges, the token vault, limited-use keys for cloud (HCE) tokens, the
//! provisioning service and its HTTP API, and the detokenize stage over the vault.
//!
//! It talks to the switch through two narrow contracts and imports nothing of it: the switch calls
//! a [`Detokenizer`] on its hot path, and the token service reaches issuers through an
//! [`IssuerGateway`] the switch implements (ID&V requests, 0620 notifications with
//! store-and-forward, whether a PAN is routable). Time and randomness are inputs
//! ([`Clock`], [`Entropy`]); storage sits behind [`VaultStore`] and [`LukStore`], with SQLite as
//! the embedded default ([`store::SqliteVaultStore`]).
#![forbid(unsafe_code)]

pub mod answered;
pub mod api;
pub mod clock;
pub mod detokenize;
pub mod error;
pub mod gateway;
pub mod luk;
pub mod number;
pub mod pending;
pub mod service;
pub mod store;
pub mod vault;
pub mod vault_detokenizer;

pub use clock::{Clock, Entropy};
pub use detokenize::{Detokenizer, NoTokens, Refusal, TokenContext, retokenize};
pub use error::{Error, Result};
pub use gateway::{GatewayError, IssuerGateway};
pub use luk::{LukRegistry, LukStore, StoredBatch};
pub use number::{RangeError, TokenRange, luhn_check_digit, luhn_valid};
pub use service::{
    Cvv2Policy, IssuerCredential, ProvisionOutcome, ProvisionRequest, Requestor, TokenService, TspError,
};
pub use vault::{DomainControls, NewToken, TokenRecord, TokenStatus, TokenVault, VaultStore};
pub use vault_detokenizer::{TokenKeys, VaultDetokenizer};
