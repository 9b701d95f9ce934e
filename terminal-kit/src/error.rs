//! The one error type of the terminal kit (and of the terminal simulator built on it): what failed
//! (reading the ports file, building a request, the network, writing a file) and why, never with a
//! clear PAN, PIN or key in it.

use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("building a request: {0}")]
    Build(#[from] crate::pos::PosError),
    #[error("network: {0}")]
    Net(String),
}

impl Error {
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid { what, detail: detail.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
