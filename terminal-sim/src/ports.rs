//! The ports file of a running network (INTERFACES.md §5), as a terminal reads it: the acquirer
//! endpoints, the admin URL, the test cards and the test ATMs. Fields this side does not use
//! are ignored, so the file can grow without breaking older terminals.

use std::path::Path;
use std::sync::Arc;

use codecs::framing::FramingKind;
use codecs::iso8583::Spec;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::load::Target;
use crate::pos::TestCard;

/// An acquirer listener.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub spec: String,
    pub framing: String,
}

impl Endpoint {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The load target this endpoint is.
    pub fn target(&self) -> Result<Target> {
        target(&self.addr(), &self.spec, &self.framing)
    }
}

/// A load or certification target from its parts (`--target`, `--spec`, `--framing`).
pub fn target(addr: &str, spec: &str, framing: &str) -> Result<Target> {
    let spec = spec_named(spec)?;
    let framing: FramingKind = framing
        .parse()
        .map_err(|_| Error::invalid("framing", format!("{framing:?} is not 2-byte-binary or 4-ascii")))?;
    Ok(Target { addr: addr.to_string(), spec, framing })
}

/// A built-in spec by name.
pub fn spec_named(name: &str) -> Result<Arc<Spec>> {
    Spec::builtin(name).cloned().ok_or_else(|| {
        Error::invalid(
            "spec",
            format!("{name:?} is not one of {}", codecs::iso8583::builtin::NAMES.join(", ")),
        )
    })
}

/// A test ATM: terminal ID and DUKPT initial key and KSN (test material).
#[derive(Debug, Clone, Deserialize)]
pub struct AtmTerminal {
    pub tid: String,
    pub ipek: String,
    pub ksn: String,
}

/// The ports file.
#[derive(Debug, Clone, Deserialize)]
pub struct PortsFile {
    pub acquirer: Endpoint,
    pub acquirer_ascii: Endpoint,
    #[serde(default)]
    pub admin: String,
    #[serde(default)]
    pub test_cards: Vec<TestCard>,
    #[serde(default)]
    pub atm_terminals: Vec<AtmTerminal>,
    /// The issuer simulator's admin port (fault injection), when the network offers one.
    #[serde(default)]
    pub issuer_admin: Option<String>,
    /// Its bearer credential.
    #[serde(default)]
    pub issuer_admin_token: Option<String>,
}

impl PortsFile {
    pub fn load(path: &Path) -> Result<PortsFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        PortsFile::parse(&text)
    }

    pub fn parse(text: &str) -> Result<PortsFile> {
        serde_json::from_str(text).map_err(|e| Error::invalid("ports file", e.to_string()))
    }

    /// The acquirer listener an `--endpoint` names: `acquirer` or `acquirer_ascii` (also spelt
    /// `acquirer-ascii`); `None` for any other name.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        match name {
            "acquirer" => Some(&self.acquirer),
            "acquirer_ascii" | "acquirer-ascii" => Some(&self.acquirer_ascii),
            _ => None,
        }
    }
}
