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

/// The keystore name of the store-and-forward queue's data key unless `[saf] key` names another
/// (one of the node's own keys, `paynet keys generate --node-keys`).
pub const SAF_KEY: &str = "switch.saf";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchConfig {
    pub node: NodeConfig,
    pub admin: AdminConfig,
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// The acquirer registry: who may speak on which listener, how each proves itself, and the
    /// terminals each may speak for. A request from anyone else is refused (58).
    #[serde(rename = "acquirer")]
    pub acquirers: Vec<AcquirerConfig>,
    #[serde(rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Currency conversion rates (`[[rate]]`), reloaded on SIGHUP with the routes.
    #[serde(rename = "rate")]
    pub rates: Vec<RateConfig>,
    pub keys: KeysConfig,
    pub journal: JournalConfig,
    pub saf: SafConfig,
    /// Where the node's state lives: the SQLite file in `node.data_dir` (the default), or a
    /// PostgreSQL database shared by several nodes.
    pub store: StoreConfig,
    /// The duplicate-transmission cache.
    pub dedupe: DedupeConfig,
    /// The network's token service (vault, provisioning API, detokenization); off by default.
    pub token_service: TokenServiceConfig,
    /// How much stand-in state the node holds (`[stand_in]`; each issuer's limits are in its
    /// `[issuer.stand_in]`).
    pub stand_in: StandInStateConfig,
}

/// The bounds of the running stand-in totals the node keeps (in memory and in the store's
/// `standin_total` table), whatever the issuers' limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StandInStateConfig {
    /// Cards (per issuer) with a running total at once. When as many are held, stand-in for
    /// another card is declined 91 (`paynet_stand_in_refused_full_total`): a live total is never
    /// evicted, since forgetting it would reopen that card's limit.
    pub max_cards: usize,
    /// The stand-in period: a card's total counts from its first stand-in approval for this long
    /// (unless the issuer has the advices first, which resets it); then it is gone.
    pub period_s: u64,
}

impl Default for StandInStateConfig {
    fn default() -> Self {
        StandInStateConfig { max_cards: 100_000, period_s: 86_400 }
    }
}

/// The token service of this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenServiceConfig {
    pub enabled: bool,
    /// Whether this node serves the provisioning API on `listen` (the default). `false`: the
    /// node detokenizes and verifies tokens (and its token service is there for an embedding
    /// process) but listens for no requestor — several nodes over one database, requestors sent
    /// to some of them.
    pub api: bool,
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
    pub requestors: Vec<tsp::Requestor>,
    /// Issuers allowed to suspend, resume and delete their cardholders' tokens.
    #[serde(rename = "issuer")]
    pub issuers: Vec<tsp::IssuerCredential>,
    /// Cloud (HCE) tokens: limited-use keys per batch (each key serves one ATC, once).
    pub luk_batch: u16,
    /// Cloud (HCE) tokens: seconds a batch of limited-use keys stays valid.
    pub luk_ttl_s: u64,
    /// Limits and TLS of the provisioning API's door (`[token_service.door]`).
    pub door: door::DoorConfig,
}

impl Default for TokenServiceConfig {
    fn default() -> Self {
        TokenServiceConfig {
            enabled: false,
            api: true,
            listen: "127.0.0.1:0".into(),
            vault_key: "switch.vault".into(),
            vault_key_version: 1,
            vault_old_keys: Vec::new(),
            ranges: Vec::new(),
            requestors: Vec::new(),
            issuers: Vec::new(),
            luk_batch: 10,
            luk_ttl_s: 86_400,
            door: door::DoorConfig::default(),
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
    /// Limits and TLS of the admin door (`[admin.door]`); off loopback it needs TLS.
    pub door: door::DoorConfig,
    /// The environment variable holding the admin credential: when set, `/metrics` and
    /// `/certification` answer only an `Authorization: Bearer` with it (401 without, 403 with
    /// another); `/health` and `/ready` stay open to probes.
    pub token_env: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: "127.0.0.1:0".into(), door: door::DoorConfig::default(), token_env: None }
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
    /// A listener on a non-loopback address without TLS must say so explicitly (logged as a
    /// warning at start): card data would cross a network in clear.
    pub insecure_plaintext: bool,
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
            insecure_plaintext: false,
            certification: false,
            tls: None,
            mac: None,
            bdk: None,
        }
    }
}

/// An acquirer of the registry: its institution ID (DE 32 of every request it sends is
/// overwritten with it), the listeners it may use, how its connections prove who they are, and
/// its terminals.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcquirerConfig {
    /// Acquiring institution identification code (DE 32), 1 to 11 digits.
    pub id: String,
    /// Names of the listeners this acquirer may connect to.
    pub listeners: Vec<String>,
    /// Plain TCP: source address ranges (CIDR, e.g. `10.1.0.0/16`, `::1/128`) its connections
    /// come from.
    pub source: Vec<String>,
    /// Mutual TLS: SHA-256 fingerprints (hex) of the client certificates it presents.
    pub client_cert_sha256: Vec<String>,
    /// Mutual TLS: subjects (RFC 4514 form, e.g. `CN=acquirer-a,O=Bank A`) of its client
    /// certificates.
    pub client_cert_subject: Vec<String>,
    /// Every request must carry a MAC (DE 64/128) under its terminal's key.
    pub require_mac: bool,
    #[serde(rename = "terminal")]
    pub terminals: Vec<TerminalConfig>,
}

/// A terminal an acquirer may speak for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    /// DE 41, up to 8 characters.
    pub tid: String,
    /// DE 42, up to 15 characters: a request carrying another merchant ID is refused.
    pub mid: String,
    /// The terminal's own MAC key: its requests must carry a MAC under it, its answers get one.
    #[serde(default)]
    pub mac: Option<MacConfig>,
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
    /// With `imk_ac`: how many ATCs below a card's highest the switch still accepts (once each).
    /// 64 to 65536 (the whole ATC space: cards whose ATCs need not rise, as test cards).
    pub atc_window: u32,
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
            atc_window: crate::state::WINDOW,
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
    /// The cardholder billing currency of the range (ISO 4217 numeric): a transaction in another
    /// currency is converted (DE 6, DE 10, DE 51) at a `[[rate]]`; without it, no conversion.
    #[serde(default)]
    pub billing_currency: Option<String>,
}

/// A conversion rate: one unit of `from` is worth `rate` units of `to` (ISO 4217 numeric codes;
/// a decimal with at most seven significant digits and seven decimals, as DE 10 carries it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub from: String,
    pub to: String,
    pub rate: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// The keystore file: key blocks under the LMK with their check values.
    pub keystore: PathBuf,
    /// The environment variable holding the LMK (hex), or...
    pub lmk_env: String,
    /// ...a file holding it (mode 0600, owned by the node's user), or...
    pub lmk_file: Option<PathBuf>,
    /// ...2 or 3 custodians' components, each a file of hex (mode 0600, owned by the node's
    /// user) with its expected KCV; the LMK is their XOR (docs/operations.md, "Key ceremony").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lmk_components: Vec<LmkComponentConfig>,
    /// The LMK's expected KCV (4 or 6 hex digits): required with components, checked whenever set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lmk_kcv: Option<String>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            keystore: PathBuf::from("keys.toml"),
            lmk_env: "PAYNET_LMK".into(),
            lmk_file: None,
            lmk_components: Vec::new(),
            lmk_kcv: None,
        }
    }
}

pub use crypto::custody::LmkComponentConfig;

impl KeysConfig {
    /// Where the LMK comes from.
    pub fn lmk_source(&self) -> crypto::custody::LmkSource<'_> {
        crypto::custody::LmkSource {
            env: &self.lmk_env,
            file: self.lmk_file.as_deref(),
            components: &self.lmk_components,
            kcv: self.lmk_kcv.as_deref(),
        }
    }

    /// Every problem of the `[keys]` table.
    pub fn problems(&self) -> Vec<String> {
        self.lmk_source().problems("keys")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// How long an answer waits for its journal row (and the state it depends on) to be durable
    /// before it is answered 96 instead.
    pub commit_timeout_ms: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig { commit_timeout_ms: 5_000 }
    }
}

/// `[store]`: without `url`, the embedded SQLite store of one node; with `url = "postgres://…"`,
/// PostgreSQL, shared by every node given the same database and schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://user[:password]@host:port/database`; a password in it is never logged.
    pub url: Option<String>,
    /// The schema the tables live in (created, with the tables, at start).
    pub schema: String,
    /// Database connections of this node.
    pub pool_size: usize,
    /// How long a store-and-forward entry a node took stays its own before another node may
    /// deliver it (the node may have died).
    pub saf_lease_ms: u64,
    /// Cards whose ATC window the node keeps in memory (about 200 bytes each), a cache of the
    /// store's: the least recently used windows already committed go, and a card's window is read
    /// back from the store when the card comes again. Whatever the store (SQLite or PostgreSQL).
    pub atc_windows: usize,
    /// The shortest time between the starts of two group commits, in µs: everything changed
    /// within it shares one commit and one sync of the disk. Longer: fewer, larger commits (less
    /// CPU and fewer log pages per authorization) for a little more latency.
    pub group_commit_us: u64,
}

/// The bounds `[store] group_commit_us` may take (0.1 ms to 20 ms).
pub const GROUP_COMMIT_US_RANGE: std::ops::RangeInclusive<u64> = 100..=20_000;

/// The bounds `[store] atc_windows` may take: at least a few windows per shard of the cache, at
/// most about 3 GiB of windows.
pub const ATC_WINDOWS_RANGE: std::ops::RangeInclusive<usize> = 1_024..=16 << 20;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            schema: "paynet".into(),
            pool_size: 8,
            saf_lease_ms: crate::store::postgres::DEFAULT_LEASE_MS,
            atc_windows: crate::state::DEFAULT_ATC_WINDOWS,
            group_commit_us: crate::state::DEFAULT_GROUP_COMMIT.as_micros() as u64,
        }
    }
}

impl StoreConfig {
    /// The PostgreSQL options of this node, when the store is PostgreSQL.
    pub fn postgres(&self, node: &str) -> Option<crate::store::postgres::PgOptions> {
        let url = self.url.as_ref()?;
        Some(crate::store::postgres::PgOptions {
            url: url.clone(),
            schema: self.schema.clone(),
            pool_size: self.pool_size,
            lease_ms: self.saf_lease_ms,
            node: node.to_string(),
        })
    }

    fn problems(&self, p: &mut Vec<String>) {
        if let Some(url) = &self.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            p.push("store.url: must be a postgres:// URL".into());
        }
        if !crate::store::postgres::valid_schema(&self.schema) {
            p.push(
                "store.schema: a lower-case identifier (letters, digits, _) of at most 63 characters".into(),
            );
        }
        if !(1..=256).contains(&self.pool_size) {
            p.push("store.pool_size: must be between 1 and 256".into());
        }
        if !(1_000..=30_000).contains(&self.saf_lease_ms) {
            p.push("store.saf_lease_ms: must be between 1000 and 30000".into());
        }
        if !ATC_WINDOWS_RANGE.contains(&self.atc_windows) {
            p.push(format!(
                "store.atc_windows: must be between {} and {}, found {}",
                ATC_WINDOWS_RANGE.start(),
                ATC_WINDOWS_RANGE.end(),
                self.atc_windows
            ));
        }
        if !GROUP_COMMIT_US_RANGE.contains(&self.group_commit_us) {
            p.push(format!(
                "store.group_commit_us: must be between {} and {}, found {}",
                GROUP_COMMIT_US_RANGE.start(),
                GROUP_COMMIT_US_RANGE.end(),
                self.group_commit_us
            ));
        }
    }
}

/// The duplicate-transmission cache: a repeat of a transmission it holds gets the original
/// answer. Bounded by age and by size (about 470 bytes per transmission with the room for its
/// answer, taken at start; see [`crate::dedupe::ANSWER_ROOM`]): at R requests a second it holds
/// the last `max_entries / R` seconds, at most `window_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupeConfig {
    pub window_s: u64,
    pub max_entries: usize,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        DedupeConfig { window_s: 600, max_entries: 262_144 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafConfig {
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Keystore name of the key new entries are sealed under (AES-256, usage D0).
    pub key: String,
    /// Its version, written into every entry it seals.
    pub key_version: u32,
    /// Retired keys still needed to open entries sealed under them (kept until those entries
    /// are delivered; an entry whose version is not here is quarantined).
    #[serde(rename = "old_key")]
    pub old_keys: Vec<VaultKeyVersion>,
}

impl Default for SafConfig {
    fn default() -> Self {
        SafConfig {
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            key: SAF_KEY.into(),
            key_version: 1,
            old_keys: Vec::new(),
        }
    }
}

impl SwitchConfig {
    /// The routing table of this config: routes, billing currencies and conversion rates.
    pub fn route_table(&self) -> std::result::Result<crate::route::RouteTable, String> {
        crate::route::RouteTable::with_conversion(
            self.routes.iter().map(|r| (r.prefix.as_str(), r.issuer.as_str(), r.billing_currency.as_deref())),
            self.rates.iter().map(|r| (r.from.as_str(), r.to.as_str(), r.rate.as_str())),
        )
    }
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            node: NodeConfig::default(),
            admin: AdminConfig::default(),
            listeners: vec![ListenerConfig::default()],
            acquirers: Vec::new(),
            issuers: Vec::new(),
            routes: Vec::new(),
            rates: Vec::new(),
            keys: KeysConfig::default(),
            journal: JournalConfig::default(),
            saf: SafConfig::default(),
            store: StoreConfig::default(),
            dedupe: DedupeConfig::default(),
            token_service: TokenServiceConfig::default(),
            stand_in: StandInStateConfig::default(),
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

    /// The TOML document of this configuration (what [`SwitchConfig::from_toml`] reads back).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::new(ErrorKind::Config, "config", e.to_string()))
    }

    /// Every problem at once, one line each, naming the setting.
    pub fn validate(&self) -> Vec<String> {
        let mut p = self.keys.problems();
        if self.node.name.trim().is_empty() {
            p.push("node.name: must not be empty".to_string());
        }
        check_addr(&mut p, "admin.listen", &self.admin.listen);
        if self.stand_in.max_cards == 0 {
            p.push("stand_in.max_cards: must be at least 1".into());
        }
        if self.stand_in.period_s == 0 {
            p.push("stand_in.period_s: must be at least 1".into());
        }
        check_door(&mut p, "admin", &self.admin.listen, &self.admin.door);
        // Off loopback the admin endpoint needs a credential: a bearer token, or client
        // certificates (mutual TLS). Anyone reaching the port otherwise reads the metrics and the
        // certification reports.
        let mutual_tls = self.admin.door.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if let Ok(a) = self.admin.listen.parse::<SocketAddr>()
            && !a.ip().is_loopback()
            && self.admin.token_env.as_deref().is_none_or(|v| v.trim().is_empty())
            && !mutual_tls
        {
            p.push(format!(
                "admin.listen: {a} is not loopback and the admin endpoint has no credential: set \
                 admin.token_env (or admin.door.tls.client_ca)"
            ));
        }
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
            if l.tls.is_none()
                && !l.insecure_plaintext
                && l.listen.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_loopback())
            {
                p.push(format!(
                    "{at}: {} is not a loopback address and the listener has no TLS; add [listener.tls] \
                     or set insecure_plaintext = true",
                    l.listen
                ));
            }
            if !self.acquirers.iter().any(|a| a.listeners.contains(&l.name)) {
                p.push(format!("{at}: no [[acquirer]] may use this listener, so it would refuse everything"));
            }
            check_tls(&mut p, &at, l.tls.as_ref());
            check_mac(&mut p, &at, l.mac.as_ref());
        }
        check_acquirers(&mut p, &self.acquirers, &names, &self.listeners);
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
            if !(64..=crate::state::MAX_WINDOW).contains(&s.atc_window) {
                p.push(format!("{at}.atc_window: expected 64 to 65536, found {}", s.atc_window));
            }
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
        // Billing currencies and rates: the route table's own checks, with their positions.
        if p.is_empty()
            && let Err(e) = self.route_table()
        {
            p.push(e);
        }
        let ts = &self.token_service;
        if ts.enabled {
            check_addr(&mut p, "token_service.listen", &ts.listen);
            check_door(&mut p, "token_service", &ts.listen, &ts.door);
            if ts.ranges.is_empty() {
                p.push("token_service.range: at least one token range is needed".into());
            }
            for (i, r) in ts.ranges.iter().enumerate() {
                let cards = self.routes.iter().map(|r| r.prefix.as_str());
                if let Err(e) = tsp::TokenRange::new(&r.prefix, r.length, cards) {
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
        self.store.problems(&mut p);
        if !(10..=60_000).contains(&self.journal.commit_timeout_ms) {
            p.push("journal.commit_timeout_ms: must be between 10 and 60000".into());
        }
        if !(1..=86_400).contains(&self.dedupe.window_s) {
            p.push("dedupe.window_s: must be between 1 and 86400".into());
        }
        if !(1_024..=64 << 20).contains(&self.dedupe.max_entries) {
            p.push("dedupe.max_entries: must be between 1024 and 67108864".into());
        }
        if self.saf.retry_base_ms == 0 || self.saf.retry_max_ms < self.saf.retry_base_ms {
            p.push("saf: retry_base_ms must be above 0 and at most retry_max_ms".into());
        }
        let mut versions = BTreeSet::from([self.saf.key_version]);
        if self.saf.key_version == 0 {
            p.push("saf.key_version: versions start at 1".into());
        }
        for (i, k) in self.saf.old_keys.iter().enumerate() {
            if k.version == 0 || !versions.insert(k.version) {
                p.push(format!("saf.old_key[{i}].version: {} is 0 or used twice", k.version));
            }
        }
        p
    }
}

fn check_acquirers(
    p: &mut Vec<String>,
    acquirers: &[AcquirerConfig],
    listener_names: &BTreeSet<String>,
    listeners: &[ListenerConfig],
) {
    let mut ids = BTreeSet::new();
    let mut tids: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, a) in acquirers.iter().enumerate() {
        let at = format!("acquirer[{i}] ({})", a.id);
        if a.id.is_empty() || a.id.len() > 11 || !a.id.bytes().all(|b| b.is_ascii_digit()) {
            p.push(format!("{at}.id: expected 1 to 11 digits, found {:?}", a.id));
        }
        if !ids.insert(a.id.clone()) {
            p.push(format!("{at}.id: registered twice"));
        }
        if a.listeners.is_empty() {
            p.push(format!("{at}.listeners: name at least one listener"));
        }
        for l in &a.listeners {
            if !listener_names.contains(l) {
                p.push(format!("{at}.listeners: no listener named {l:?}"));
            }
        }
        for s in &a.source {
            if let Err(e) = crate::cidr::Cidr::parse(s) {
                p.push(format!("{at}.source: {e}"));
            }
        }
        for f in &a.client_cert_sha256 {
            if f.len() != 64 || !f.bytes().all(|b| b.is_ascii_hexdigit()) {
                p.push(format!("{at}.client_cert_sha256: expected 64 hex digits, found {f:?}"));
            }
        }
        if a.source.is_empty() && a.client_cert_sha256.is_empty() && a.client_cert_subject.is_empty() {
            p.push(format!(
                "{at}: no way to prove itself (source, client_cert_sha256 or client_cert_subject)"
            ));
        }
        let by_cert = !a.client_cert_sha256.is_empty() || !a.client_cert_subject.is_empty();
        for l in listeners.iter().filter(|l| a.listeners.contains(&l.name)) {
            if by_cert && l.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) && a.source.is_empty() {
                p.push(format!(
                    "{at}: proves itself by client certificate but listener {} has no mutual TLS (tls.client_ca)",
                    l.name
                ));
            }
        }
        if a.terminals.is_empty() {
            p.push(format!("{at}.terminal: register at least one terminal"));
        }
        for (j, t) in a.terminals.iter().enumerate() {
            let tat = format!("{at}.terminal[{j}]");
            if t.tid.is_empty() || t.tid.len() > 8 {
                p.push(format!("{tat}.tid: expected 1 to 8 characters, found {:?}", t.tid));
            }
            if t.mid.is_empty() || t.mid.len() > 15 {
                p.push(format!("{tat}.mid: expected 1 to 15 characters, found {:?}", t.mid));
            }
            for l in &a.listeners {
                if !tids.insert((l.clone(), t.tid.clone())) {
                    p.push(format!("{tat}.tid: {} is registered twice on listener {l}", t.tid));
                }
            }
            check_mac(p, &tat, t.mac.as_ref());
            if a.require_mac && t.mac.is_none() {
                p.push(format!("{tat}.mac: the acquirer requires MACs, so each terminal needs its key"));
            }
        }
    }
}

fn check_addr(p: &mut Vec<String>, at: &str, addr: &str) {
    if addr.parse::<SocketAddr>().is_err() {
        p.push(format!("{at}: {addr:?} is not an IP:port address"));
    }
}

/// An HTTP door: its limits, and no plaintext off loopback unless the operator says so.
fn check_door(p: &mut Vec<String>, at: &str, listen: &str, d: &door::DoorConfig) {
    if let Err(e) = d.validate() {
        p.push(format!("{at}.door: {e}"));
    }
    if let Some(t) = &d.tls
        && (t.cert.as_os_str().is_empty() || t.key.as_os_str().is_empty())
    {
        p.push(format!("{at}.door.tls: cert and key are both required"));
    }
    if let Ok(a) = listen.parse::<SocketAddr>()
        && !a.ip().is_loopback()
        && d.tls.is_none()
        && !d.insecure_plaintext
    {
        p.push(format!(
            "{at}.listen: {a} is not loopback: set {at}.door.tls (or {at}.door.insecure_plaintext = true)"
        ));
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
    fn default_needs_only_an_acquirer() {
        let p = SwitchConfig::default().validate();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("no [[acquirer]] may use this listener"), "{p:?}");
    }

    #[test]
    fn the_duplicate_cache_is_bounded_by_age_and_size() {
        let c = SwitchConfig::from_toml("[dedupe]\nwindow_s = 0\nmax_entries = 10\n").expect("dedupe table");
        let p = c.validate().join("\n");
        assert!(p.contains("dedupe.window_s: must be between 1 and 86400"), "{p}");
        assert!(p.contains("dedupe.max_entries: must be between 1024 and 67108864"), "{p}");
        assert_eq!(SwitchConfig::default().dedupe, DedupeConfig { window_s: 600, max_entries: 262_144 });
    }

    #[test]
    fn the_atc_window_cache_is_bounded_by_the_configuration() {
        assert_eq!(SwitchConfig::default().store.atc_windows, crate::state::DEFAULT_ATC_WINDOWS);
        let c = SwitchConfig::from_toml("[store]\natc_windows = 5000\n").expect("store table");
        assert_eq!(c.store.atc_windows, 5000);
        for bad in [0, 1_023, (16 << 20) + 1] {
            let c = SwitchConfig::from_toml(&format!("[store]\natc_windows = {bad}\n")).expect("store table");
            let p = c.validate().join("\n");
            assert!(
                p.contains(&format!("store.atc_windows: must be between 1024 and 16777216, found {bad}")),
                "{p}"
            );
        }
        let c = SwitchConfig::from_toml("[store]\natc_windows = -1\n");
        assert!(c.is_err(), "a negative bound is not a number of windows");
    }

    #[test]
    fn the_group_commit_window_is_configurable_within_bounds() {
        assert_eq!(SwitchConfig::default().store.group_commit_us, 1_000);
        let c = SwitchConfig::from_toml("[store]\ngroup_commit_us = 2500\n").expect("store table");
        assert_eq!(c.store.group_commit_us, 2_500);
        assert!(!c.validate().join("\n").contains("group_commit_us"), "{:?}", c.validate());
        for bad in [0, 99, 20_001] {
            let c =
                SwitchConfig::from_toml(&format!("[store]\ngroup_commit_us = {bad}\n")).expect("store table");
            let p = c.validate().join("\n");
            assert!(
                p.contains(&format!("store.group_commit_us: must be between 100 and 20000, found {bad}")),
                "{p}"
            );
        }
    }

    #[test]
    fn the_provisioning_api_is_served_unless_a_node_says_otherwise() {
        assert!(SwitchConfig::default().token_service.api);
        let c = SwitchConfig::from_toml("[token_service]\nenabled = true\n").expect("token service");
        assert!(c.token_service.api, "served by default");
        let c =
            SwitchConfig::from_toml("[token_service]\nenabled = true\napi = false\n").expect("token service");
        assert!(!c.token_service.api);
        assert!(SwitchConfig::from_toml("[token_service]\napi = \"no\"\n").is_err(), "a boolean only");
    }

    #[test]
    fn an_http_door_off_loopback_needs_tls_or_an_explicit_risk() {
        let mut c = SwitchConfig::default();
        c.admin.listen = "0.0.0.0:9000".into();
        let p = c.validate().join("\n");
        assert!(p.contains("admin.listen: 0.0.0.0:9000 is not loopback: set admin.door.tls"), "{p}");
        c.admin.door.insecure_plaintext = true;
        let p = c.validate().join("\n");
        assert!(!p.contains("set admin.door.tls"), "{p}");
        assert!(
            p.contains("admin.listen: 0.0.0.0:9000 is not loopback and the admin endpoint has no credential"),
            "{p}"
        );
        c.admin.token_env = Some("PAYNET_ADMIN_TOKEN".into());
        assert!(!c.validate().join("\n").contains("admin.listen"));
        c.admin.token_env = None;
        c.admin.door.insecure_plaintext = false;
        c.admin.door.max_connections = 0;
        c.admin.door.tls = Some(door::DoorTls { cert: "a.pem".into(), key: "".into(), client_ca: None });
        let p = c.validate().join("\n");
        assert!(p.contains("admin.door: max_connections must be at least 1"), "{p}");
        assert!(p.contains("admin.door.tls: cert and key are both required"), "{p}");
        assert!(
            p.contains("admin.listen: 0.0.0.0:9000 is not loopback and the admin endpoint has no credential")
        );
        // Client certificates are a credential too.
        c.admin.door.tls =
            Some(door::DoorTls { cert: "a.pem".into(), key: "".into(), client_ca: Some("ca.pem".into()) });
        let p = c.validate().join("\n");
        assert!(!p.contains("admin.listen"), "{p}");
        let t =
            SwitchConfig::from_toml("[admin]\nlisten = \"127.0.0.1:0\"\n[admin.door]\nbody_limit = 1024\n")
                .expect("door table");
        assert_eq!(t.admin.door.body_limit, 1024);
    }

    #[test]
    fn acquirer_registry_is_checked() {
        let text = r#"
            [[listener]]
            name = "pos"
            listen = "0.0.0.0:5000"
            [[listener]]
            name = "tls"
            listen = "127.0.0.1:5001"
            [[acquirer]]
            id = "40A001"
            listeners = ["pos", "nope"]
            source = ["10.0.0.0/40"]
            require_mac = true
            [[acquirer.terminal]]
            tid = "TERMINAL-TOO-LONG"
            mid = "M1"
            [[acquirer]]
            id = "400002"
            listeners = ["tls"]
            client_cert_sha256 = ["abcd"]
            [[acquirer.terminal]]
            tid = "T1"
            mid = "M1"
        "#;
        let p = SwitchConfig::from_toml(text).unwrap().validate().join("\n");
        for needle in [
            "is not a loopback address and the listener has no TLS",
            "acquirer[0] (40A001).id: expected 1 to 11 digits",
            "no listener named \"nope\"",
            "prefix length must be 0 to 32",
            "terminal[0].tid: expected 1 to 8 characters",
            "terminal[0].mac: the acquirer requires MACs",
            "client_cert_sha256: expected 64 hex digits",
            "listener tls has no mutual TLS",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
        let ok = r#"
            [[listener]]
            name = "pos"
            listen = "0.0.0.0:5000"
            insecure_plaintext = true
            [[acquirer]]
            id = "400001"
            listeners = ["pos"]
            source = ["10.0.0.0/8"]
            [[acquirer.terminal]]
            tid = "T1"
            mid = "M1"
        "#;
        assert_eq!(SwitchConfig::from_toml(ok).unwrap().validate(), Vec::<String>::new());
    }

    #[test]
    fn every_problem_reported_at_once() {
        let text = r#"
            [[listener]]
            name = "pos"
            listen = "nowhere"
            framing = "3-bytes"
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
            "no [[acquirer]] may use this listener",
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
