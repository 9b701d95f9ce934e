//! The ports file of a running network (INTERFACES.md §5), as a terminal reads it: the acquirer
//! endpoints, the admin URL, the test cards and the test ATMs. Fields this side does not use
//! are ignored, so the file can grow without breaking older terminals.

use std::path::Path;
use std::sync::Arc;

use codecs::framing::FramingKind;
use codecs::iso8583::Spec;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::link::Target;
use crate::pos::TestCard;

/// An acquirer listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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

/// A test ATM: terminal ID, TDES DUKPT initial key (32 hex) and initial KSN (20 hex); test
/// material, so its `Debug` leaves the key out.
#[derive(Clone, Deserialize, Serialize)]
pub struct AtmTerminal {
    pub tid: String,
    pub ipek: String,
    pub ksn: String,
}

impl std::fmt::Debug for AtmTerminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtmTerminal").field("tid", &self.tid).field("ksn", &self.ksn).finish_non_exhaustive()
    }
}

/// The ports file. Its `Debug` shows the endpoints and how many cards and ATMs it lists, not their
/// keys, PINs or the admin credential.
#[derive(Clone, Deserialize)]
pub struct PortsFile {
    pub acquirer: Endpoint,
    /// The `iso87ascii` listener; a file written for an ATM alone may leave it out.
    #[serde(default)]
    pub acquirer_ascii: Option<Endpoint>,
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
    /// The network's switch nodes, when it runs several (`serve --nodes N`): a terminal fails
    /// over from one to the next.
    #[serde(default)]
    pub nodes: Vec<Node>,
}

/// One switch node of the ports file's `nodes`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Node {
    #[serde(default)]
    pub pid: u32,
    pub acquirer: Endpoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquirer_ascii: Option<Endpoint>,
    #[serde(default)]
    pub admin: String,
}

impl std::fmt::Debug for PortsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortsFile")
            .field("acquirer", &self.acquirer)
            .field("acquirer_ascii", &self.acquirer_ascii)
            .field("admin", &self.admin)
            .field("test_cards", &self.test_cards.len())
            .field("atm_terminals", &self.atm_terminals)
            .field("issuer_admin", &self.issuer_admin)
            .finish_non_exhaustive()
    }
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
    /// `acquirer-ascii`); `None` for any other name, or for a listener the file does not list.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        match name {
            "acquirer" => Some(&self.acquirer),
            "acquirer_ascii" | "acquirer-ascii" => self.acquirer_ascii.as_ref(),
            _ => None,
        }
    }

    /// The listener `name` of every switch node, the file's own first then the others in the
    /// order of `nodes`: where a terminal fails over to. One endpoint without `nodes`.
    pub fn endpoints(&self, name: &str) -> Vec<&Endpoint> {
        let first = self.endpoint(name);
        let others = self.nodes.iter().filter_map(|n| match name {
            "acquirer" => Some(&n.acquirer),
            "acquirer_ascii" | "acquirer-ascii" => n.acquirer_ascii.as_ref(),
            _ => None,
        });
        let mut out: Vec<&Endpoint> = first.into_iter().collect();
        for e in others {
            if !out.contains(&e) {
                out.push(e);
            }
        }
        out
    }
}
