//! The switch's configuration: one TOML file parsed into typed structs with `Default` and
//! `validate()`. `switch --check-config` prints every problem at once and exits non-zero.
//!
//! Keys never appear here in clear: the file names keys held in the keystore (TR-31 key blocks
//! under the LMK, with their check values).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchConfig {
    pub node: NodeConfig,
    pub admin: AdminConfig,
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    pub keys: KeysConfig,
    pub journal: JournalConfig,
    pub saf: SafConfig,
    /// The network's token service (vault, provisioning API, detokenization); off by default.
    pub token_service: TokenServiceConfig,
}

/// The token service of this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenServiceConfig {
    pub enabled: bool,
    /// The provisioning API (HTTP). Port 0 takes one from the OS.
    pub listen: String,
    /// Keystore name of the vault's current data key (AES-256, usage D0): new rows are sealed
    /// under it.
    pub vault_key: String,
    /// The current key's version (written in every sealed row).
    pub vault_key_version: u32,
    /// Earlier data keys still readable during a rotation (`switch --rewrap-vault` re-seals every
    /// row under the current key; then they can go).
    #[serde(rename = "vault_old_key")]
    pub vault_old_keys: Vec<VaultKeyVersion>,
    #[serde(rename = "range")]
    pub ranges: Vec<TokenRangeConfig>,
    #[serde(rename = "requestor")]
    pub requestors: Vec<crate::token::service::Requestor>,
    /// Issuers allowed to suspend, resume and delete their cardholders' tokens.
    #[serde(rename = "issuer")]
    pub issuers: Vec<crate::token::service::IssuerCredential>,
    /// Cloud (HCE) tokens: limited-use keys per batch (each key serves one ATC, once).
    pub luk_batch: u16,
    /// Cloud (HCE) tokens: seconds a batch of limited-use keys stays valid.
    pub luk_ttl_s: u64,
}

impl Default for TokenServiceConfig {
    fn default() -> Self {
        TokenServiceConfig {
            enabled: false,
            listen: "127.0.0.1:0".into(),
            vault_key: "switch.vault".into(),
            vault_key_version: 1,
            vault_old_keys: Vec::new(),
            ranges: Vec::new(),
            requestors: Vec::new(),
            issuers: Vec::new(),
            luk_batch: 10,
            luk_ttl_s: 86_400,
        }
    }
}

/// A retired vault data key still needed to read rows sealed under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultKeyVersion {
    pub version: u32,
    /// Keystore name (AES-256, usage D0).
    pub key: String,
}

/// A token BIN range and the keystore name of its token IMK-AC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRangeConfig {
    pub prefix: String,
    pub length: usize,
    pub imk_ac: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's name, in logs and metrics.
    pub name: String,
    /// Where the SQLite store lives (the embedded default). Relative paths are relative to the
    /// config file's folder.
    pub data_dir: PathBuf,
    /// Drain time for in-flight requests on shutdown.
    pub shutdown_grace_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { name: "switch-1".into(), data_dir: PathBuf::from("data"), shutdown_grace_ms: 10_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `/metrics`, `/health`, `/ready`. Port 0 takes one from the OS.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: "127.0.0.1:0".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, peers must present a certificate chaining to this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { cert: PathBuf::new(), key: PathBuf::new(), client_ca: None }
    }
}

/// TLS towards an issuer (the switch is the client).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkTlsConfig {
    /// PEM file of the CA certificate(s) the issuer's certificate must chain to.
    pub ca: PathBuf,
    /// The name the issuer's certificate must carry (DNS name or IP address).
    pub server_name: String,
    /// The switch's client certificate chain and key (PEM), for issuers that require mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Message authentication on a link (DE 64/128).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacConfig {
    /// Keystore name of the MAC key.
    pub key: String,
    /// `retail`, `iso9797-1-m1`, `iso9797-1-m2`, `cmac`, `cmac-tdes`.
    pub alg: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: String,
    /// A built-in spec name (`network`, `iso87ascii`, `iso87binary`) or a spec file path.
    pub spec: String,
    /// `2-byte-binary` or `4-ascii`, optionally with `+tpdu`.
    pub framing: String,
    pub max_connections: u32,
    pub max_in_flight_per_connection: u32,
    /// A partial frame older than this drops its connection.
    pub read_timeout_ms: u64,
    /// A connection idle (no partial frame) for this long is closed.
    pub idle_timeout_ms: u64,
    /// Acquiring institution ID (DE 32) filled in when a terminal does not send one.
    pub acquirer_id: String,
    /// Certification mode: every message is checked and a per-terminal report kept.
    pub certification: bool,
    pub tls: Option<TlsConfig>,
    pub mac: Option<MacConfig>,
    /// Keystore name of the acquirer BDK for DUKPT PIN blocks from this listener's terminals.
    pub bdk: Option<String>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            name: "acquirer".into(),
            listen: "127.0.0.1:0".into(),
            spec: "network".into(),
            framing: "2-byte-binary".into(),
            max_connections: 1024,
            max_in_flight_per_connection: 4096,
            read_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            acquirer_id: "000001".into(),
            certification: false,
            tls: None,
            mac: None,
            bdk: None,
        }
    }
}

/// Stand-in processing rules for when an issuer is unavailable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StandInConfig {
    pub enabled: bool,
    /// Largest single approval, in minor units of `currency`.
    pub max_amount_minor: u64,
    /// ISO 4217 numeric currency code the limit is in; other currencies are declined.
    pub currency: String,
    /// Cumulative stand-in approvals per card until the issuer is back.
    pub max_total_per_card_minor: u64,
    /// Processing codes (DE 3, first two digits) allowed in stand-in.
    pub transaction_types: Vec<String>,
}

impl Default for StandInConfig {
    fn default() -> Self {
        StandInConfig {
            enabled: false,
            max_amount_minor: 10_000,
            currency: "901".into(),
            max_total_per_card_minor: 30_000,
            transaction_types: vec!["00".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuerConfig {
    pub name: String,
    /// One or more host:port; `connections` links are spread over them.
    pub connect: Vec<String>,
    pub connections: u32,
    pub spec: String,
    pub framing: String,
    pub timeout_ms: u64,
    pub echo_interval_ms: u64,
    pub sign_on: bool,
    pub tls: Option<LinkTlsConfig>,
    pub mac: Option<MacConfig>,
    /// Keystore name of the issuer's IMK-AC when the switch verifies ARQCs on its behalf.
    pub imk_ac: Option<String>,
    /// Keystore name of the issuer's zone PIN key (PIN translation target).
    pub zpk: Option<String>,
    pub stand_in: StandInConfig,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        IssuerConfig {
            name: "issuer".into(),
            connect: Vec::new(),
            connections: 2,
            spec: "network".into(),
            framing: "2-byte-binary".into(),
            timeout_ms: 5_000,
            echo_interval_ms: 30_000,
            sign_on: true,
            tls: None,
            mac: None,
            imk_ac: None,
            zpk: None,
            stand_in: StandInConfig::default(),
        }
    }
}

/// A BIN route: PANs starting with `prefix` go to `issuer` (longest prefix wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    pub issuer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// The keystore file: key blocks under the LMK with their check values.
    pub keystore: PathBuf,
    /// The environment variable holding the LMK (hex), or...
    pub lmk_env: String,
    /// ...a file holding it.
    pub lmk_file: Option<PathBuf>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig { keystore: PathBuf::from("keys.toml"), lmk_env: "PAYNET_LMK".into(), lmk_file: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    pub batch_size: u32,
    pub flush_interval_ms: u64,
    /// Bounded queue between the hot path and the writer: when full, the hot path waits.
    pub queue_capacity: u32,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig { batch_size: 512, flush_interval_ms: 20, queue_capacity: 65_536 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafConfig {
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for SafConfig {
    fn default() -> Self {
        SafConfig { retry_base_ms: 1_000, retry_max_ms: 60_000 }
    }
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            node: NodeConfig::default(),
            admin: AdminConfig::default(),
            listeners: vec![ListenerConfig::default()],
            issuers: Vec::new(),
            routes: Vec::new(),
            keys: KeysConfig::default(),
            journal: JournalConfig::default(),
            saf: SafConfig::default(),
            token_service: TokenServiceConfig::default(),
        }
    }
}

/// The framings a link may use.
pub const FRAMINGS: [&str; 4] = ["2-byte-binary", "4-ascii", "2-byte-binary+tpdu", "4-ascii+tpdu"];
const MAC_ALGS: [&str; 5] = ["retail", "iso9797-1-m1", "iso9797-1-m2", "cmac", "cmac-tdes"];

impl SwitchConfig {
    /// Parses a TOML document; unknown keys are errors (a typo must not silently take a default).
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text)
            .map_err(|e| Error::new(ErrorKind::Config, "config", e.to_string().replace('\n', " ")))
    }

    /// Every problem at once, one line each, naming the setting.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.node.name.trim().is_empty() {
            p.push("node.name: must not be empty".to_string());
        }
        check_addr(&mut p, "admin.listen", &self.admin.listen);
        if self.listeners.is_empty() {
            p.push("listener: at least one acquirer listener is needed".into());
        }
        let mut names = BTreeSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let at = format!("listener[{i}] ({})", l.name);
            if !names.insert(l.name.clone()) {
                p.push(format!("{at}.name: duplicate listener name"));
            }
            check_addr(&mut p, &format!("{at}.listen"), &l.listen);
            check_framing(&mut p, &at, &l.framing);
            check_spec(&mut p, &at, &l.spec);
            if l.max_connections == 0 {
                p.push(format!("{at}.max_connections: must be at least 1"));
            }
            if l.max_in_flight_per_connection == 0 {
                p.push(format!("{at}.max_in_flight_per_connection: must be at least 1"));
            }
            if l.read_timeout_ms == 0 || l.idle_timeout_ms == 0 {
                p.push(format!("{at}: read_timeout_ms and idle_timeout_ms must be above 0"));
            }
            if l.acquirer_id.is_empty()
                || l.acquirer_id.len() > 11
                || !l.acquirer_id.bytes().all(|b| b.is_ascii_digit())
            {
                p.push(format!("{at}.acquirer_id: expected 1 to 11 digits, found {:?}", l.acquirer_id));
            }
            check_tls(&mut p, &at, l.tls.as_ref());
            check_mac(&mut p, &at, l.mac.as_ref());
        }
        let mut issuers = BTreeSet::new();
        for (i, s) in self.issuers.iter().enumerate() {
            let at = format!("issuer[{i}] ({})", s.name);
            if !issuers.insert(s.name.clone()) {
                p.push(format!("{at}.name: duplicate issuer name"));
            }
            if s.connect.is_empty() {
                p.push(format!("{at}.connect: at least one host:port is needed"));
            }
            for c in &s.connect {
                if !c.contains(':') {
                    p.push(format!("{at}.connect: {c:?} is not host:port"));
                }
            }
            if s.connections == 0 {
                p.push(format!("{at}.connections: must be at least 1"));
            }
            if s.timeout_ms == 0 {
                p.push(format!("{at}.timeout_ms: must be above 0"));
            }
            check_framing(&mut p, &at, &s.framing);
            check_spec(&mut p, &at, &s.spec);
            if let Some(t) = &s.tls {
                if t.ca.as_os_str().is_empty() || t.server_name.trim().is_empty() {
                    p.push(format!("{at}.tls: ca and server_name are both required"));
                }
                if t.cert.is_some() != t.key.is_some() {
                    p.push(format!("{at}.tls: a client cert needs its key and the other way round"));
                }
            }
            check_mac(&mut p, &at, s.mac.as_ref());
            let si = &s.stand_in;
            if si.enabled {
                if si.currency.len() != 3 || !si.currency.bytes().all(|b| b.is_ascii_digit()) {
                    p.push(format!(
                        "{at}.stand_in.currency: expected an ISO 4217 numeric code, found {:?}",
                        si.currency
                    ));
                }
                if si.max_total_per_card_minor < si.max_amount_minor {
                    p.push(format!("{at}.stand_in: max_total_per_card_minor is below max_amount_minor"));
                }
            }
        }
        let mut prefixes = BTreeSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("route[{i}]");
            if r.prefix.is_empty() || r.prefix.len() > 19 || !r.prefix.bytes().all(|b| b.is_ascii_digit()) {
                p.push(format!("{at}.prefix: expected 1 to 19 digits, found {:?}", r.prefix));
            }
            if !prefixes.insert(r.prefix.clone()) {
                p.push(format!("{at}.prefix: {} is routed twice", r.prefix));
            }
            if !issuers.contains(&r.issuer) {
                p.push(format!("{at}.issuer: no issuer named {:?}", r.issuer));
            }
        }
        let ts = &self.token_service;
        if ts.enabled {
            check_addr(&mut p, "token_service.listen", &ts.listen);
            if ts.ranges.is_empty() {
                p.push("token_service.range: at least one token range is needed".into());
            }
            for (i, r) in ts.ranges.iter().enumerate() {
                let cards = self.routes.iter().map(|r| r.prefix.as_str());
                if let Err(e) = crate::token::TokenRange::new(&r.prefix, r.length, cards) {
                    p.push(format!("token_service.range[{i}]: {e}"));
                }
            }
            let mut versions = BTreeSet::from([ts.vault_key_version]);
            if ts.vault_key_version == 0 {
                p.push("token_service.vault_key_version: versions start at 1".into());
            }
            for (i, k) in ts.vault_old_keys.iter().enumerate() {
                if k.version == 0 || !versions.insert(k.version) {
                    p.push(format!(
                        "token_service.vault_old_key[{i}].version: {} is 0 or used twice",
                        k.version
                    ));
                }
            }
            for (i, c) in ts.issuers.iter().enumerate() {
                let at = format!("token_service.issuer[{i}]");
                if !issuers.contains(&c.name) {
                    p.push(format!("{at}.name: no issuer named {:?}", c.name));
                }
                if c.secret_sha256.len() != 64 || !c.secret_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    p.push(format!("{at}.secret_sha256: expected 64 hex digits (SHA-256 of the secret)"));
                }
            }
            if !(1..=100).contains(&ts.luk_batch) {
                p.push(format!("token_service.luk_batch: expected 1 to 100 keys, found {}", ts.luk_batch));
            }
            if ts.luk_ttl_s == 0 || ts.luk_ttl_s > 30 * 86_400 {
                p.push(format!("token_service.luk_ttl_s: expected 1 s to 30 days, found {}", ts.luk_ttl_s));
            }
            if ts.requestors.is_empty() {
                p.push("token_service.requestor: at least one token requestor is needed".into());
            }
            for (i, r) in ts.requestors.iter().enumerate() {
                let at = format!("token_service.requestor[{i}]");
                if r.id.len() != 11 || !r.id.bytes().all(|b| b.is_ascii_digit()) {
                    p.push(format!("{at}.id: expected 11 digits, found {:?}", r.id));
                }
                if !matches!(r.kind.as_str(), "wallet" | "se-tsm" | "cloud" | "merchant") {
                    p.push(format!(
                        "{at}.kind: expected wallet, se-tsm, cloud or merchant, found {:?}",
                        r.kind
                    ));
                }
                if r.secret_sha256.len() != 64 || !r.secret_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    p.push(format!("{at}.secret_sha256: expected 64 hex digits (SHA-256 of the secret)"));
                }
            }
        }
        if self.journal.batch_size == 0 || self.journal.queue_capacity < self.journal.batch_size {
            p.push("journal: batch_size must be at least 1 and at most queue_capacity".into());
        }
        if self.saf.retry_base_ms == 0 || self.saf.retry_max_ms < self.saf.retry_base_ms {
            p.push("saf: retry_base_ms must be above 0 and at most retry_max_ms".into());
        }
        p
    }
}

fn check_addr(p: &mut Vec<String>, at: &str, addr: &str) {
    if addr.parse::<SocketAddr>().is_err() {
        p.push(format!("{at}: {addr:?} is not an IP:port address"));
    }
}

fn check_framing(p: &mut Vec<String>, at: &str, framing: &str) {
    if !FRAMINGS.contains(&framing) {
        p.push(format!("{at}.framing: expected one of {}, found {framing:?}", FRAMINGS.join(", ")));
    }
}

fn check_spec(p: &mut Vec<String>, at: &str, spec: &str) {
    if spec.trim().is_empty() {
        p.push(format!("{at}.spec: must name a built-in spec or a spec file"));
    }
}

fn check_tls(p: &mut Vec<String>, at: &str, tls: Option<&TlsConfig>) {
    if let Some(t) = tls
        && (t.cert.as_os_str().is_empty() || t.key.as_os_str().is_empty())
    {
        p.push(format!("{at}.tls: cert and key are both required"));
    }
}

fn check_mac(p: &mut Vec<String>, at: &str, mac: Option<&MacConfig>) {
    if let Some(m) = mac {
        if !MAC_ALGS.contains(&m.alg.as_str()) {
            p.push(format!("{at}.mac.alg: expected one of {}, found {:?}", MAC_ALGS.join(", "), m.alg));
        }
        if m.key.is_empty() {
            p.push(format!("{at}.mac.key: must name a keystore key"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(SwitchConfig::default().validate(), Vec::<String>::new());
    }

    #[test]
    fn every_problem_reported_at_once() {
        let text = r#"
            [[listener]]
            name = "pos"
            listen = "nowhere"
            framing = "3-bytes"
            acquirer_id = "12ab"
            [[issuer]]
            name = "a"
            [[route]]
            prefix = "4761"
            issuer = "b"
        "#;
        let c = SwitchConfig::from_toml(text).unwrap();
        let p = c.validate();
        let joined = p.join("\n");
        for needle in [
            "listen: \"nowhere\"",
            "framing: expected",
            "acquirer_id",
            "connect: at least one",
            "no issuer named \"b\"",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
        assert_eq!(p.len(), 5, "{joined}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = SwitchConfig::from_toml("[node]\nnmae = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("nmae"), "{e}");
    }
}
