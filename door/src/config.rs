//! A door's settings: limits and TLS, one TOML table (`[admin.door]`, `[token_service.door]`, ...),
//! every field with a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Limits and transport of one HTTP door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DoorConfig {
    /// The request line and headers must arrive within this (also the TLS handshake's budget).
    pub header_read_timeout_ms: u64,
    /// A request must be answered within this (408 otherwise).
    pub request_timeout_ms: u64,
    /// Largest request body, bytes (413 above).
    pub body_limit: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long open connections get to finish when the door closes.
    pub shutdown_grace_ms: u64,
    /// TLS; `None`: plaintext, loopback only unless `insecure_plaintext`.
    pub tls: Option<DoorTls>,
    /// Serve a non-loopback address without TLS anyway (a warning is logged).
    pub insecure_plaintext: bool,
}

impl Default for DoorConfig {
    fn default() -> Self {
        DoorConfig {
            header_read_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            body_limit: 64 * 1024,
            max_connections: 256,
            shutdown_grace_ms: 5_000,
            tls: None,
            insecure_plaintext: false,
        }
    }
}

/// PEM files of a door's TLS (relative paths are resolved against the config file's directory
/// by [`DoorConfig::resolved`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate chaining to this CA (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl DoorConfig {
    /// Every problem, at once (`--check-config`).
    pub fn validate(&self) -> Result<(), String> {
        let mut bad = Vec::new();
        if self.header_read_timeout_ms == 0 {
            bad.push("header_read_timeout_ms must be at least 1");
        }
        if self.request_timeout_ms == 0 {
            bad.push("request_timeout_ms must be at least 1");
        }
        if self.body_limit == 0 {
            bad.push("body_limit must be at least 1");
        }
        if self.max_connections == 0 {
            bad.push("max_connections must be at least 1");
        }
        if bad.is_empty() { Ok(()) } else { Err(bad.join("; ")) }
    }

    /// The same config with TLS paths resolved against `base`.
    pub fn resolved(&self, base: &Path) -> DoorConfig {
        let mut c = self.clone();
        if let Some(t) = &mut c.tls {
            t.cert = base.join(&t.cert);
            t.key = base.join(&t.key);
            t.client_ca = t.client_ca.as_ref().map(|p| base.join(p));
        }
        c
    }
}
