//! Sans-IO payment cryptography, used by the switch and by every simulator.
//!
//! Built on RustCrypto's block ciphers and MACs; the payment logic on top of them (key derivations,
//! cryptograms, PIN blocks, DUKPT, key blocks) is ours and follows the cited standards to the bit.
//! No I/O, no clocks, no randomness of its own: callers pass random bytes in.
#![forbid(unsafe_code)]

pub mod custody;
pub mod cvv;
pub mod device;
pub mod dukpt;
pub mod emv;
pub mod error;
pub mod hsm;
pub mod keyblock;
pub mod keys;
pub mod keystore;
pub mod mac;
pub mod pin;
pub mod seal;

pub use error::{Error, ErrorKind, Result};
pub use keys::{AesKey, Algorithm, SymmetricKey, TdesKey};
