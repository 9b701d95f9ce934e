//! The token service's error type for its vault, its limited-use key registry and their stores.
//! Refusals of an API call are [`crate::TspError`]; a detokenize refusal is a response code
//! ([`crate::Refusal`]). No message carries a clear PAN or a key.

/// What went wrong; callers match on the variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (SQLite, or another backend of [`crate::VaultStore`]).
    #[error("token store: {what}")]
    Store {
        what: &'static str,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A stored row does not read back (a bad status, domain or encoding).
    #[error("token store: row of table {table}: bad {field}")]
    BadRow { table: &'static str, field: &'static str },
    /// Sealed card data did not open or could not be sealed: tampered, moved to another token, or
    /// under an unknown key version.
    #[error("vault: {0}")]
    Seal(#[from] crypto::Error),
    /// A vault row opened but does not hold the card it claims (malformed, or not the PAN its
    /// fingerprint names).
    #[error("vault: {0}")]
    Integrity(&'static str),
    /// The token to issue exists already.
    #[error("vault: token already exists")]
    Exists,
    /// No such token.
    #[error("vault: no such token")]
    NoSuchToken,
    /// A card expiry that is not YYMM.
    #[error("vault: card expiry must be YYMM")]
    Expiry,
    /// The lifecycle does not allow the change (EMV Payment Tokenisation Framework §4).
    #[error("vault: a {from} token cannot become {to}")]
    Lifecycle { from: &'static str, to: &'static str },
}

impl Error {
    /// A store failure with its cause.
    pub fn store(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Store { what, source: Some(Box::new(source)) }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
