//! What can go wrong in a provider or a cardholder flow, as one error type: the caller tells a
//! refusal of the network (a declined provisioning) from a party that could not be reached or
//! answered something unusable, from the phone refusing a step, from local state or randomness.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token service (or the issuer behind it) did not approve a provisioning.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A party could not be reached, or its HTTP answer could not be read.
    #[error("{what}: {detail}")]
    Http { what: String, detail: String },
    /// A party answered with an HTTP error.
    #[error("{party} answered {status}: {body}")]
    Status { party: String, status: u16, body: String },
    /// An answer the flow cannot use: a field missing or malformed.
    #[error("{0}")]
    Answer(String),
    /// The flow cannot go on with what this phone holds (no credential for a party, a card of
    /// another model).
    #[error("{0}")]
    Phone(String),
    /// The phone refused a step (its secure element, its HCE area).
    #[error("phone: {0}")]
    Device(#[from] phone::PhoneError),
    /// The cardholder gave no one-time password.
    #[error("one-time password: {0}")]
    Otp(String),
    /// Kept state that does not load or save.
    #[error("{what}: {detail}")]
    State { what: String, detail: String },
    /// A provider could not start (a port, a key, a registration).
    #[error("{what}: {detail}")]
    Start { what: String, detail: String },
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn answer(detail: impl std::fmt::Display) -> Error {
        Error::Answer(detail.to_string())
    }

    pub(crate) fn state(what: impl Into<String>, detail: impl std::fmt::Display) -> Error {
        Error::State { what: what.into(), detail: detail.to_string() }
    }

    pub(crate) fn start(what: impl Into<String>, detail: impl std::fmt::Display) -> Error {
        Error::Start { what: what.into(), detail: detail.to_string() }
    }

    pub(crate) fn http(what: impl Into<String>, detail: impl std::fmt::Display) -> Error {
        Error::Http { what: what.into(), detail: detail.to_string() }
    }
}

/// A provisioning the token service (or the issuer behind it) did not approve: its status
/// (`declined`, `not_eligible`, `issuer_unavailable`, ...) and the response code it gave, if any.
/// Callers find it as [`Error::Refused`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What was refused: `provisioning` or `tokenization`.
    pub what: &'static str,
    pub status: String,
    pub response_code: Option<String>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.what, self.status)?;
        if let Some(rc) = &self.response_code {
            write!(f, " (response code {rc})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}
