//! The switch's error type: what kind, where, whether a retry may help, and the source chain
//! (after pingora's error). Messages never carry a clear PAN, PIN or key.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The persistent store failed (SQLite or PostgreSQL).
    Store,
    /// Sealed data did not open: tampered, or sealed under another key.
    Seal,
    /// Configuration is invalid.
    Config,
    /// A codec error on a message.
    Codec,
    /// A cryptographic operation failed.
    Crypto,
    /// An issuer link is down or timed out.
    IssuerUnavailable,
    /// An internal invariant failed.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    /// Where: the component or stage, e.g. `"saf"`, `"journal"`, `"store.sqlite"`.
    pub context: &'static str,
    pub detail: String,
    /// Whether the same operation may succeed if tried again later.
    pub retryable: bool,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub fn new(kind: ErrorKind, context: &'static str, detail: impl Into<String>) -> Self {
        Error { kind, context, detail: detail.into(), retryable: false, source: None }
    }

    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.detail)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

/// A sealing error (`crypto::seal`): sealed data that does not open is [`ErrorKind::Seal`].
impl From<crypto::Error> for Error {
    fn from(e: crypto::Error) -> Self {
        let kind = if e.kind == crypto::ErrorKind::Seal { ErrorKind::Seal } else { ErrorKind::Crypto };
        Error::new(kind, e.what, e.detail)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
