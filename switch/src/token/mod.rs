//! The network's token service provider (EMV Payment Tokenisation): token numbers, the token
//! vault, token lifecycle and domain restriction controls. The provisioning API, ID&V with issuers
//! and the detokenize stage build on these.

pub mod api;
pub mod detokenize;
pub mod luk;
pub mod number;
pub mod service;
pub mod vault;

pub use detokenize::{TokenKeys, VaultDetokenizer};
pub use number::{TokenRange, luhn_check_digit, luhn_valid};
pub use vault::{DomainControls, NewToken, TokenRecord, TokenStatus, TokenVault};
