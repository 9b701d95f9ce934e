//! A whole network on one machine, on the embedded defaults: the switch node with its acquirer
//! listeners (`network` spec over 2-byte binary framing, and `iso87ascii` over 4-digit ASCII
//! framing for pyiso8583-based tools), the issuer simulator with generated test cards behind it,
//! and the ports file of INTERFACES.md §5 that outside clients read.
//!
//! The switch is started the production way: this module writes its configuration
//! (`switch.toml`, with the token service's `[token_service]` section: token range, LUK batch and
//! lifetime, requestors and issuers) and its keystore into the run's folder, and the node builds
//! everything — the token service and its provisioning API included — from them.
//!
//! [`start`] runs the switch node (and any further ones of [`Options::nodes`]) in this process;
//! [`start_in_processes`] (`serve --nodes N`) runs each node in an OS process of its own
//! (`paynet node`), this process keeping the issuer simulator, its admin port and the phone's
//! providers, so that any node can be killed alone.
//!
//! Keys: a fresh LMK per run, held in memory only; the switch's and the issuer's keystores (key
//! blocks under it) live in the run's folder. A kept network ([`Options::keep`], `serve --state
//! DIR`) keeps its LMK as two components in its folder instead, and comes back whole ([`kept`]). The test cards' clear material (ICC master keys,
//! PINs) and the test ATMs' initial DUKPT keys appear only in the ports file, as INTERFACES.md §5
//! says; nothing else the network writes holds a clear PAN, PIN or key. The ports file and both
//! keystores are written readable by their owner only (mode 0600).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use crypto::dukpt::TdesKsn;
use crypto::keyblock::Header;
use crypto::keys::{SymmetricKey, TdesKey, to_hex};
use crypto::keystore::{KeyName, Keystore, Lmk};
use issuer_sim::cards::{ClearTestCard, generate_test_issuer_billed};
use issuer_sim::host::Issuer;
use issuer_sim::server::{FaultRule, ServerState};
use serde::Serialize;
use switch::config::{
    IssuerConfig, ListenerConfig, RouteConfig, StandInConfig, SwitchConfig, TokenRangeConfig,
    TokenServiceConfig,
};
use switch::node::{NodeParts, RunningNode};
use tokio_util::sync::CancellationToken;

pub mod kept;

/// How to start the network.
#[derive(Clone)]
pub struct Options {
    /// Where the stores and keystores go (a fresh temporary folder for `serve`).
    pub dir: PathBuf,
    pub cards: usize,
    pub atms: usize,
    /// Faults the issuer simulator injects (tests).
    pub issuer_faults: Vec<FaultRule>,
    /// The switch's timeout towards the issuer.
    pub issuer_timeout_ms: u64,
    /// Stand-in rules for the test issuer.
    pub stand_in: StandInConfig,
    /// The switch holds the issuer's IMK-AC and verifies cryptograms on its behalf. Stand-in
    /// approves only what the switch verified itself, so without it the switch declines 91 when
    /// the issuer is down.
    pub on_behalf: bool,
    /// Both acquirer listeners in certification mode: every message checked, a report per
    /// terminal on the admin endpoint (`/certification/{tid}`).
    pub certification: bool,
    /// The switch↔issuer link is MAC-authenticated (on by default: the issuer believes the token
    /// service's DF8106 only over it). Off only for a benchmark whose plain relay talks to the
    /// issuer directly and cannot sign; the issuer then verifies every cryptogram itself.
    pub issuer_link_mac: bool,
    /// The phone's providers (SP TSM with the issuer's perso bureau, SE operator + SE TSM, cloud
    /// platform, wallet server) beside the network, listed in the ports file.
    pub wallet_providers: bool,
    /// Cloud (HCE) tokens: limited-use keys per batch (`[token_service] luk_batch`).
    pub luk_batch: u16,
    /// Cloud (HCE) tokens: seconds a batch of limited-use keys stays valid
    /// (`[token_service] luk_ttl_s`).
    pub luk_ttl_s: u64,
    /// The switch's store (`[store]`): SQLite in `dir` by default, or a PostgreSQL database.
    pub store: switch::config::StoreConfig,
    /// Switch nodes over that store (more than one needs PostgreSQL), each with the token
    /// service over the shared vault: with [`start`], all in this process, the first being the
    /// network's switch and the others taking acquirer traffic ([`Network::acquirer_nodes`]);
    /// with [`start_in_processes`], each in its own OS process.
    pub nodes: usize,
    /// Keep the network in `dir` ([`kept`]): a start on a folder that holds one brings it back.
    pub keep: bool,
    /// Test cards (by index) billed in New Taiwan dollars, in their own range
    /// (`issuer_sim::cards::TWD_CARD_PREFIX`); the others are billed in EUR.
    pub twd_cards: Vec<usize>,
    /// Kinds of test requestors (`wallet`, `cloud`, `se-tsm`, `merchant`) configured
    /// `cvv2 = "required"`: their provisioning requests must carry the card's CVV2. None by
    /// default.
    pub cvv2_required: Vec<String>,
    /// The issuer simulator's ID&V limits (`[idv]`: failures before a PAN or a requestor is
    /// locked, OTP tries and lifetime).
    pub idv: issuer_sim::idv::IdvLimits,
    /// TLS of the provisioning API (`[token_service.door] tls`): then `provisioning_api` is
    /// `https://`, and its clients (the providers among them) need the CA
    /// (`wallet_sim::providers::http::trust`).
    pub provisioning_tls: Option<door::DoorTls>,
    /// The phone's providers' doors (TLS: `https://` addresses).
    pub provider_doors: wallet_sim::providers::ProviderDoors,
}

impl Options {
    pub fn new(dir: &Path) -> Self {
        Options {
            dir: dir.to_path_buf(),
            cards: 6,
            atms: 4,
            issuer_faults: Vec::new(),
            issuer_timeout_ms: 5_000,
            stand_in: StandInConfig {
                enabled: true,
                max_amount_minor: 10_000,
                currency: "978".into(),
                max_total_per_card_minor: 30_000,
                transaction_types: vec!["00".into()],
            },
            on_behalf: false,
            issuer_link_mac: true,
            certification: false,
            wallet_providers: true,
            luk_batch: TokenServiceConfig::default().luk_batch,
            luk_ttl_s: TokenServiceConfig::default().luk_ttl_s,
            store: switch::config::StoreConfig::default(),
            nodes: 1,
            keep: false,
            twd_cards: Vec::new(),
            cvv2_required: Vec::new(),
            idv: issuer_sim::idv::IdvLimits::default(),
            provisioning_tls: None,
            provider_doors: wallet_sim::providers::ProviderDoors::default(),
        }
    }
}

/// The ports file's parts as terminals read them (one definition, `terminal_kit::ports`): an
/// acquirer endpoint, a test ATM (terminal ID and DUKPT initial key: test material), a node.
pub use terminal_kit::ports::{AtmTerminal as TestAtm, Endpoint, Node as NodeEntry};

/// A registered test terminal: outside tools may use it on both acquirer listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestTerminal {
    pub tid: String,
    pub mid: String,
}

/// The acquirer ID of the test network's terminals (DE 32 of everything they send).
pub const TEST_ACQUIRER_ID: &str = "400001";

/// The terminals the test network registers for its loopback listeners: eight general ones
/// (`T0000001`…), and the ones the simulators use by default — terminal-sim's POS (`TERM0001`…),
/// online checkout (`WEB00001`), certification, and load generator (`LG000000`…, one per
/// connection), and atm-sim's ATMs — each with the merchant ID it sends.
pub fn test_terminals(atms: &[TestAtm]) -> Vec<TestTerminal> {
    let t = |tid: String, mid: &str| TestTerminal { tid, mid: mid.to_string() };
    let mut v: Vec<TestTerminal> = (1..=8).map(|i| t(format!("T{i:07}"), &format!("M{i:014}"))).collect();
    v.extend((1..=9).map(|i| t(format!("TERM{i:04}"), "MERCHANT0000001")));
    v.push(t("SHOP0042".into(), "MERCHANT0000042"));
    v.push(t("WEB00001".into(), "SHOP00000000001"));
    v.push(t("ECOM0001".into(), "MERCHANT0000001"));
    for tid in ["CERT0001", "GOODDEV1", "BROKEN01"] {
        v.push(t(tid.into(), "MERCHANT0000001"));
    }
    v.extend((0..64).map(|i| t(terminal_sim::load::terminal_id(i), "MERCHANT0000001")));
    v.extend(atms.iter().map(|a| t(a.tid.clone(), terminal_sim::mix::ATM_ACCEPTOR_ID)));
    v
}

/// The ports file (INTERFACES.md §5).
#[derive(Debug, Clone, Serialize)]
pub struct PortsFile {
    pub acquirer: Endpoint,
    pub acquirer_ascii: Endpoint,
    pub provisioning_api: String,
    pub admin: String,
    /// The registered test terminals (TID + MID) for both acquirer listeners.
    pub terminals: Vec<TestTerminal>,
    pub test_cards: Vec<ClearTestCard>,
    pub atm_terminals: Vec<TestAtm>,
    /// Added: the issuer simulator's address (the switch's link target).
    pub issuer: String,
    /// Added: the issuer simulator's admin port, `http://127.0.0.1:PORT` (fault rules, and the
    /// cardholders' OTPs: `serve` runs it in test mode), for certification cases that need a
    /// silent or slow issuer.
    pub issuer_admin: String,
    /// Added: the admin port's bearer credential (`Authorization: Bearer <issuer_admin_token>`),
    /// drawn at random for each run.
    pub issuer_admin_token: String,
    /// Added: token requestors registered with the token service (test credentials).
    pub token_requestors: Vec<TestRequestor>,
    /// Added: issuers' credentials for the token service's issuer calls (test credentials).
    pub token_issuers: Vec<TestIssuerCredential>,
    /// Added: the phone's providers (`wallet-sim provision --ports-file`), when they run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wallet_providers: Option<wallet_sim::providers::ProviderAddrs>,
    /// Added with `serve --nodes N`: every switch node, the first (`acquirer`, `acquirer_ascii`,
    /// `admin`, `provisioning_api` above) first, with its process ID (each node is a process of
    /// its own), so that a tool can spread load over them and kill one, and its own provisioning
    /// API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeListing>>,
}

/// A switch node of `serve --nodes N` in the ports file's `nodes`: the keys of
/// [`NodeEntry`], and the node's own provisioning API (every node serves it over the shared
/// vault; a step-up started on one is completed on any).
#[derive(Debug, Clone, Serialize)]
pub struct NodeListing {
    #[serde(flatten)]
    pub node: NodeEntry,
    pub provisioning_api: String,
}

/// A switch node in its own process (`paynet node --stop-with-stdin`): stopped with the network,
/// killed if dropped. The node's standard input is a pipe that only this process holds open, so
/// the node also stops (draining) when this process dies, however it dies — SIGKILL included.
pub struct NodeProcess {
    child: std::process::Child,
    ready_file: PathBuf,
}

impl NodeProcess {
    /// Starts `program node` on the node folder `dir` (its config and keystore written there),
    /// the LMK in its environment only.
    fn spawn(program: &Path, dir: &Path, lmk_hex: &str) -> Result<NodeProcess> {
        let ready_file = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready_file);
        let child = std::process::Command::new(program)
            .arg("node")
            .arg("--config")
            .arg(dir.join(SWITCH_CONFIG))
            .arg("--ready-file")
            .arg(&ready_file)
            .arg("--stop-with-stdin")
            .env("PAYNET_LMK", lmk_hex)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(NodeProcess { child, ready_file })
    }

    /// The node's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to 30 s) for the node's ready file: its addresses.
    async fn ready(&mut self) -> Result<NodeListing> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let doc: serde_json::Value = loop {
            if let Ok(text) = std::fs::read_to_string(&self.ready_file) {
                break serde_json::from_str(&text)?;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(anyhow!("a switch node exited before it was ready: {st}"));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(anyhow!("a switch node was not ready in 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let addr = |name: &str| -> Result<SocketAddr> {
            doc["listeners"][name]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| anyhow!("the node's ready file lacks listener {name}"))
        };
        let (a, b) = (addr("acquirer")?, addr("acquirer_ascii")?);
        let provisioning_api = doc["provisioning_api"]
            .as_str()
            .ok_or_else(|| anyhow!("the node's ready file lacks its provisioning API"))?
            .to_string();
        Ok(NodeListing {
            node: NodeEntry {
                pid: self.pid(),
                acquirer: Endpoint {
                    host: a.ip().to_string(),
                    port: a.port(),
                    spec: "network".into(),
                    framing: "2-byte-binary".into(),
                },
                acquirer_ascii: Some(Endpoint {
                    host: b.ip().to_string(),
                    port: b.port(),
                    spec: "iso87ascii".into(),
                    framing: "4-ascii".into(),
                }),
                admin: format!("http://{}", doc["admin"].as_str().unwrap_or_default()),
            },
            provisioning_api,
        })
    }

    /// SIGTERM to every node, then up to 10 s for them all to drain; one still running then is
    /// killed when dropped.
    fn stop_all(mut nodes: Vec<NodeProcess>) {
        for n in &nodes {
            let _ = std::process::Command::new("kill").args(["-TERM", &n.pid().to_string()]).status();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            nodes.retain_mut(|n| !matches!(n.child.try_wait(), Ok(Some(_))));
            if nodes.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A network whose switch nodes each run in their own process ([`start_in_processes`]): this
/// process keeps the issuer simulator, its admin port and the phone's providers.
pub struct NodesNetwork {
    pub ports: PortsFile,
    pub issuer_state: Arc<ServerState>,
    issuer_stop: CancellationToken,
    issuer_task: tokio::task::JoinHandle<()>,
    issuer_admin_stop: CancellationToken,
    providers: Option<wallet_sim::providers::Running>,
    /// The nodes, node 0 first; a watcher reaps (and logs) one that exits.
    nodes: Arc<Mutex<Vec<NodeProcess>>>,
    watch_stop: CancellationToken,
    keeper: Option<kept::Keeper>,
}

/// Watches the nodes every 250 ms until `stop`: one that exited (killed by an operator's tool,
/// crashed) is reaped at once — its process ID is gone, not left a zombie — and logged.
fn watch_nodes(nodes: Arc<Mutex<Vec<NodeProcess>>>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut logged = std::collections::BTreeSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            let mut nodes = nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (i, n) in nodes.iter_mut().enumerate() {
                if let Ok(Some(status)) = n.child.try_wait()
                    && logged.insert(i)
                {
                    tracing::warn!(node = i, pid = n.pid(), %status, "a switch node exited; the others go on");
                }
            }
        }
    });
}

impl NodesNetwork {
    /// Writes the ports file as [`Network::write_ports_file`] does.
    pub fn write_ports_file(&self, path: &Path) -> Result<()> {
        write_ports_file(&self.ports, path)
    }

    /// The nodes' process IDs, node 0's first.
    pub fn node_pids(&self) -> Vec<u32> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(NodeProcess::pid)
            .collect()
    }

    /// Stops the providers, drains and stops every node, then stops the issuer simulator.
    pub async fn shutdown(self) {
        if let Some(p) = self.providers {
            p.shutdown().await;
        }
        self.watch_stop.cancel();
        let nodes =
            std::mem::take(&mut *self.nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let _ = tokio::task::spawn_blocking(move || NodeProcess::stop_all(nodes)).await;
        self.issuer_admin_stop.cancel();
        self.issuer_stop.cancel();
        let _ = self.issuer_task.await;
        if let Some(k) = self.keeper {
            k.stop().await;
        }
    }
}

/// Writes the ports file atomically (a temporary file, then a rename), readable by its owner
/// only: it holds the test cards' keys and PINs and the test ATMs' initial keys.
fn write_ports_file(ports: &PortsFile, path: &Path) -> Result<()> {
    let json = zeroize::Zeroizing::new(serde_json::to_string_pretty(ports)?);
    crate::private_file::write_atomic(path, json.as_bytes())?;
    Ok(())
}

/// An issuer's test credentials for `/v1/issuer/...` (`Authorization: Bearer <name>:<secret>`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TestIssuerCredential {
    pub name: String,
    pub secret: String,
}

/// A token requestor's test credentials (`Authorization: Bearer <id>:<secret>`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TestRequestor {
    pub id: String,
    pub kind: String,
    pub secret: String,
}

/// A running network.
pub struct Network {
    pub switch: RunningNode,
    pub issuer_addr: SocketAddr,
    pub ports: PortsFile,
    pub issuer_state: Arc<ServerState>,
    issuer_stop: CancellationToken,
    issuer_task: Option<tokio::task::JoinHandle<()>>,
    /// Stops the issuer's admin port (it outlives issuer restarts).
    issuer_admin_stop: CancellationToken,
    /// The switch's token service (its state limits, for tests).
    pub token_service: Arc<tsp::TokenService>,
    /// What the switch was started with, to start it again on the same store (restart tests).
    switch_cfg: SwitchConfig,
    lmk_hex: zeroize::Zeroizing<String>,
    dir: PathBuf,
    /// The phone's providers, when started ([`Options::wallet_providers`]).
    providers: Option<wallet_sim::providers::Running>,
    /// The further switch nodes of [`Options::nodes`], over the same store.
    others: Vec<RunningNode>,
    /// Saves the issuer's state of a kept network ([`Options::keep`]).
    keeper: Option<kept::Keeper>,
}

fn random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("operating system random source unavailable: {e}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn import(ks: &mut Keystore, name: &str, header: &str, key: SymmetricKey) -> Result<()> {
    let mut pad = zeroize::Zeroizing::new(vec![0u8; 64]);
    random(&mut pad);
    ks.import(KeyName::new(name)?, &Header::parse_template(header)?, &key, &pad)
        .with_context(|| format!("importing {name}"))?;
    Ok(())
}

/// The test cards' expiry: three years from now (YYMM).
fn expiry_in_three_years() -> String {
    let yymm = issuer_sim::server::yymm(now_ms());
    let yy: u32 = yymm[..2].parse().unwrap_or(26);
    format!("{:02}{}", (yy + 3) % 100, &yymm[2..])
}

/// The routes and rates of the cards billed in TWD, when there are any: their range billed in
/// 901, and EUR converted to TWD.
fn with_twd_billing(mut cfg: SwitchConfig, twd_cards: &[usize]) -> SwitchConfig {
    if !twd_cards.is_empty() {
        cfg.routes.push(RouteConfig {
            prefix: issuer_sim::cards::TWD_CARD_PREFIX.into(),
            issuer: "issuer-a".into(),
            billing_currency: Some("901".into()),
        });
        cfg.rates.push(switch::config::RateConfig {
            from: "978".into(),
            to: "901".into(),
            rate: "35".into(),
        });
    }
    cfg
}

/// A new network's switch keystore.
fn fresh_switch_keystore(
    opts: &Options,
    lmk_hex: &str,
    test: &issuer_sim::cards::TestIssuer,
    link_mac_key: crypto::keys::AesKey,
) -> Result<Keystore> {
    // The switch's keystore: its own keys, the zone PIN key it shares with the issuer, the
    // acquirer BDK of the test ATMs.
    let mut ks = Keystore::new(Lmk::from_hex(lmk_hex)?);
    switch::keys::ensure_node_keys(&mut ks, &mut random)?;
    import(&mut ks, "issuer-a.zpk", "D0000P0TB00N0000", SymmetricKey::Tdes(test.zpk_clear.clone()))?;
    import(&mut ks, "issuer-a.mac", "D0000M6AC00N0000", SymmetricKey::Aes(link_mac_key))?;
    if opts.on_behalf {
        import(&mut ks, "issuer-a.imk-ac", "D0000E0TX00N0000", SymmetricKey::Tdes(test.imk_clear.clone()))?;
    }
    let mut bdk_raw = zeroize::Zeroizing::new([0u8; 16]);
    random(bdk_raw.as_mut());
    crypto::keys::adjust_odd_parity(bdk_raw.as_mut());
    let bdk = TdesKey::from_slice(bdk_raw.as_ref())?;
    import(&mut ks, "acquirer.bdk", "D0000B0TX00N0000", SymmetricKey::Tdes(bdk.clone()))?;
    let mut vault_raw = zeroize::Zeroizing::new([0u8; 32]);
    random(vault_raw.as_mut());
    import(
        &mut ks,
        "switch.vault",
        "D0000D0AB00N0000",
        SymmetricKey::Aes(crypto::keys::AesKey::from_slice(vault_raw.as_ref())?),
    )?;
    let mut timk_raw = zeroize::Zeroizing::new([0u8; 16]);
    random(timk_raw.as_mut());
    crypto::keys::adjust_odd_parity(timk_raw.as_mut());
    import(
        &mut ks,
        "token.imk-ac",
        "D0000E0TX00N0000",
        SymmetricKey::Tdes(TdesKey::from_slice(timk_raw.as_ref())?),
    )?;
    if opts.keep {
        let mut raw = zeroize::Zeroizing::new([0u8; 32]);
        random(raw.as_mut());
        let key = SymmetricKey::Aes(crypto::keys::AesKey::from_slice(raw.as_ref())?);
        import(&mut ks, kept::PROVIDERS_KEY, "D0000D0AB00N0000", key)?;
    }
    Ok(ks)
}

/// What a network has before its switch nodes start: the issuer simulator (and its admin port)
/// running, the keys and test material, the switch's configuration.
struct Backbone {
    kept: Option<kept::Kept>,
    expiry: String,
    twd_cards: Vec<usize>,
    lmk_hex: zeroize::Zeroizing<String>,
    test_cards: Vec<ClearTestCard>,
    issuer_addr: SocketAddr,
    issuer_state: Arc<ServerState>,
    issuer_stop: CancellationToken,
    issuer_task: tokio::task::JoinHandle<()>,
    issuer_admin: SocketAddr,
    issuer_admin_stop: CancellationToken,
    issuer_admin_token: String,
    ks: Keystore,
    atms: Vec<TestAtm>,
    requestors: Vec<TestRequestor>,
    token_issuers: Vec<TestIssuerCredential>,
    cfg: SwitchConfig,
}

/// Waits (up to 10 s) until every issuer link of `node` is signed on: a node is ready then.
pub async fn until_signed_on(node: &RunningNode) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !node.engine.issuers.values().all(|h| h.link.is_up()) {
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow!("the switch did not sign on to its issuers in 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Starts issuer simulator and switch, and waits until the switch's issuer link is up. The nodes
/// after the first ([`Options::nodes`]) run in this process too; [`start_in_processes`] runs each
/// in its own.
pub async fn start(opts: Options) -> Result<Network> {
    if opts.nodes > 1 && opts.store.url.is_none() {
        return Err(anyhow!("several switch nodes need a shared store: a PostgreSQL database"));
    }
    let b = backbone(&opts).await?;
    let node = start_switch(&b.cfg, &b.lmk_hex, &opts.dir).await?;
    let token_service =
        node.token_service.clone().ok_or_else(|| anyhow!("the switch runs no token service"))?;
    let api_addr = node.provisioning_api.ok_or_else(|| anyhow!("the switch serves no provisioning API"))?;
    // Ready when the issuer link is signed on.
    until_signed_on(&node).await?;
    let endpoint = |name: &str, spec: &str, framing: &str| -> Result<Endpoint> {
        let a = node.listener(name).ok_or_else(|| anyhow!("listener {name}"))?;
        Ok(Endpoint { host: a.ip().to_string(), port: a.port(), spec: spec.into(), framing: framing.into() })
    };
    let mut ports = b.ports(
        endpoint("acquirer", "network", "2-byte-binary")?,
        endpoint("acquirer_ascii", "iso87ascii", "4-ascii")?,
        format!("{}://{api_addr}", scheme(&b.cfg.token_service.door)),
        format!("http://{}", node.admin),
    );
    let providers = b.providers(&opts, &mut ports).await?;
    let mut others = Vec::new();
    for i in 1..opts.nodes {
        let (dir, node_cfg) = b.node_config(&opts.dir, i)?;
        others.push(start_switch(&node_cfg, &b.lmk_hex, &dir).await?);
    }
    let Backbone {
        kept,
        expiry,
        twd_cards,
        lmk_hex,
        issuer_addr,
        issuer_state,
        issuer_stop,
        issuer_task,
        issuer_admin_stop,
        cfg,
        ..
    } = b;
    let keeper = keeper(kept, &ports, expiry, twd_cards, &issuer_state)?;
    Ok(Network {
        switch: node,
        issuer_addr,
        ports,
        issuer_state,
        issuer_stop,
        issuer_task: Some(issuer_task),
        issuer_admin_stop,
        token_service,
        switch_cfg: cfg,
        lmk_hex,
        dir: opts.dir.clone(),
        providers,
        others,
        keeper,
    })
}

/// `serve --nodes N`: every switch node in its own OS process (`program node`, node 0 too), so
/// that an outside tool can kill any one of them and leave the rest of the network — the issuer
/// simulator, the phone's providers, the other nodes — running. Needs a PostgreSQL store
/// ([`Options::store`]). Returns once every node is ready (its listeners accept, its issuer link
/// is signed on); the ports file's `nodes` lists them, node 0 (the file's `acquirer`,
/// `acquirer_ascii`, `admin` and `provisioning_api`) first.
pub async fn start_in_processes(opts: Options, program: &Path) -> Result<NodesNetwork> {
    if opts.store.url.is_none() {
        return Err(anyhow!(
            "switch nodes in processes of their own need a shared store: a PostgreSQL database"
        ));
    }
    let b = backbone(&opts).await?;
    // Node 0 first, alone: it makes the database's tables; the others then start side by side.
    crate::private_file::write_atomic(&opts.dir.join(SWITCH_CONFIG), b.cfg.to_toml()?.as_bytes())?;
    let mut nodes = vec![NodeProcess::spawn(program, &opts.dir, &b.lmk_hex)?];
    let mut listings = vec![nodes[0].ready().await?];
    for i in 1..opts.nodes.max(1) {
        let (dir, node_cfg) = b.node_config(&opts.dir, i)?;
        crate::private_file::write_atomic(&dir.join(SWITCH_CONFIG), node_cfg.to_toml()?.as_bytes())?;
        nodes.push(NodeProcess::spawn(program, &dir, &b.lmk_hex)?);
    }
    for n in &mut nodes[1..] {
        listings.push(n.ready().await?);
    }
    let first = listings[0].clone();
    let ascii = first.node.acquirer_ascii.clone().ok_or_else(|| anyhow!("node 0 has no ASCII listener"))?;
    let mut ports = b.ports(first.node.acquirer, ascii, first.provisioning_api, first.node.admin);
    ports.nodes = Some(listings);
    let providers = b.providers(&opts, &mut ports).await?;
    let Backbone {
        kept, expiry, twd_cards, issuer_state, issuer_stop, issuer_task, issuer_admin_stop, ..
    } = b;
    let keeper = keeper(kept, &ports, expiry, twd_cards, &issuer_state)?;
    let nodes = Arc::new(Mutex::new(nodes));
    let watch_stop = CancellationToken::new();
    watch_nodes(nodes.clone(), watch_stop.clone());
    Ok(NodesNetwork {
        ports,
        issuer_state,
        issuer_stop,
        issuer_task,
        issuer_admin_stop,
        providers,
        nodes,
        watch_stop,
        keeper,
    })
}

/// Starts the issuer simulator and its admin port, and makes (or, kept, brings back) the keys,
/// the test material and the switch's configuration.
async fn backbone(opts: &Options) -> Result<Backbone> {
    std::fs::create_dir_all(&opts.dir).with_context(|| format!("creating {}", opts.dir.display()))?;
    // A kept network's LMK is in its folder; any other network's is fresh and in memory only.
    let kept = if opts.keep { Some(kept::Kept::open(&opts.dir)?) } else { None };
    let restored = kept.as_ref().and_then(|k| k.restored.as_ref().map(|s| (k, s)));
    let lmk_hex = match &kept {
        Some(k) => k.lmk_hex.clone(),
        None => {
            let mut lmk_bytes = zeroize::Zeroizing::new([0u8; 32]);
            random(lmk_bytes.as_mut());
            zeroize::Zeroizing::new(to_hex(lmk_bytes.as_ref()))
        }
    };
    let expiry = restored.map_or_else(expiry_in_three_years, |(_, s)| s.expiry.clone());

    // The issuer: test cards and its keys.
    let mut test = match restored {
        Some((k, s)) => k.test_issuer(s)?,
        None => generate_test_issuer_billed(
            opts.cards.max(4),
            &opts.twd_cards,
            Lmk::from_hex(&lmk_hex)?,
            &expiry,
            &mut random,
        )?,
    };
    // The switch's link to the issuer is MAC-authenticated (AES-CMAC, TR-31 usage M6, under a key
    // both hold): it is how the issuer knows that a request, and the token service's word in it
    // (DE 123 DF8106), comes from the switch.
    let link_mac_key = match restored {
        Some(_) => kept::link_mac_key(&test.keystore)?,
        None => {
            let mut link_mac_raw = zeroize::Zeroizing::new([0u8; 16]);
            random(link_mac_raw.as_mut());
            let key = crypto::keys::AesKey::from_slice(link_mac_raw.as_ref())?;
            import(&mut test.keystore, "issuer.mac", "D0000M6AC00N0000", SymmetricKey::Aes(key.clone()))?;
            key
        }
    };
    let issuer_keys = test.keystore.to_toml();
    crate::private_file::write_atomic(&opts.dir.join("issuer-keys.toml"), issuer_keys.as_bytes())?;
    // The cards stay in memory: an issuer's card file holds PANs, and `serve` writes none.
    let issuer_hsm = Arc::new(crypto::hsm::SoftHsm::new(
        Keystore::from_toml(Lmk::from_hex(&lmk_hex)?, &issuer_keys)?,
        Box::new(random),
    ));
    let issuer_link_mac = opts
        .issuer_link_mac
        .then(|| {
            issuer_sim::link_mac::LinkMac::new(
                issuer_hsm.clone(),
                "issuer.mac",
                crypto::mac::MacAlgorithm::CmacAes,
            )
        })
        .transpose()?;
    let mut issuer =
        Issuer::new(issuer_hsm, issuer_sim::cards::ZPK_NAME, &test.cards).with_idv_limits(opts.idv);
    if let Some(k) = &kept {
        k.restore_issuer(&mut issuer)?;
        // The ports file shows the open-to-buy as it stands.
        for c in &mut test.clear {
            c.balance = format!("{:012}", issuer.open_to_buy(&c.pan).unwrap_or(0));
        }
    }
    let issuer_state = Arc::new(ServerState {
        issuer: Mutex::new(issuer),
        spec: codecs::iso8583::Spec::builtin("network").ok_or_else(|| anyhow!("network spec"))?.clone(),
        framing: codecs::framing::FramingKind::Binary2,
        faults: std::sync::RwLock::new(opts.issuer_faults.clone()),
        clock: Box::new(now_ms),
        random: Box::new(issuer_sim::server::thread_random),
        link_mac: issuer_link_mac,
    });
    let issuer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer_addr = issuer_listener.local_addr()?;
    let issuer_stop = CancellationToken::new();
    let issuer_task = spawn_issuer(issuer_listener, issuer_state.clone(), issuer_stop.clone())?;
    let issuer_admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer_admin = issuer_admin_listener.local_addr()?;
    let issuer_admin_stop = CancellationToken::new();
    let mut admin_token_raw = zeroize::Zeroizing::new([0u8; 24]);
    random(admin_token_raw.as_mut());
    let issuer_admin_token = match restored.and_then(|(_, s)| s.issuer_admin_token.clone()) {
        Some(t) => t,
        None => hex::encode(admin_token_raw.as_ref()),
    };
    // Test mode: the network's own test cards, whose OTPs tools read from the admin port.
    let admin_access = issuer_sim::admin::AdminAccess::new(&issuer_admin_token, true)
        .map_err(|e| anyhow!("issuer admin: {e}"))?;
    tokio::spawn(issuer_sim::admin::run_admin(
        issuer_admin_listener,
        issuer_state.clone(),
        admin_access,
        door::DoorConfig::default(),
        issuer_admin_stop.clone(),
    ));

    let ks = match restored {
        Some((k, _)) => k.switch_keystore()?,
        None => fresh_switch_keystore(opts, &lmk_hex, &test, link_mac_key)?,
    };
    let bdk = ks.get_tdes(&KeyName::new("acquirer.bdk")?, crypto::keyblock::KeyUsage::BDK)?;
    let mut atms = Vec::new();
    for i in 0..opts.atms.max(4) {
        let ksn = TdesKsn::from_hex(&format!("FFFF4761{:06X}E00000", i + 1))?;
        let ipek = crypto::dukpt::tdes::derive_ipek(&bdk, &ksn)?;
        atms.push(TestAtm {
            tid: format!("ATM{:05}", i + 1),
            ipek: to_hex(ipek.expose()),
            ksn: to_hex(ksn.as_bytes()),
        });
    }
    crate::private_file::write_atomic(&opts.dir.join("switch-keys.toml"), ks.to_toml().as_bytes())?;
    // One test requestor of each type, and the test issuer's credential for the token service's
    // issuer calls (test credentials, generated per run).
    let requestors: Vec<TestRequestor> = if let Some((_, s)) = restored {
        s.requestors.clone()
    } else {
        [
            ("40010030273", "wallet"),
            ("40010075001", "cloud"),
            ("40010043210", "se-tsm"),
            ("40010099001", "merchant"),
        ]
        .into_iter()
        .map(|(id, kind)| {
            let mut secret = [0u8; 16];
            random(&mut secret);
            TestRequestor { id: id.into(), kind: kind.into(), secret: to_hex(&secret) }
        })
        .collect()
    };
    let token_issuers = if let Some((_, s)) = restored {
        s.token_issuers.clone()
    } else {
        let mut secret = [0u8; 16];
        random(&mut secret);
        vec![TestIssuerCredential { name: "issuer-a".into(), secret: to_hex(&secret) }]
    };
    let cfg = SwitchConfig {
        node: switch::config::NodeConfig {
            name: "serve".into(),
            data_dir: PathBuf::from("data"),
            shutdown_grace_ms: 5_000,
        },
        admin: switch::config::AdminConfig { listen: "127.0.0.1:0".into(), ..Default::default() },
        listeners: vec![
            ListenerConfig {
                name: "acquirer".into(),
                listen: "127.0.0.1:0".into(),
                spec: "network".into(),
                framing: "2-byte-binary".into(),
                bdk: Some("acquirer.bdk".into()),
                certification: opts.certification,
                ..ListenerConfig::default()
            },
            ListenerConfig {
                name: "acquirer_ascii".into(),
                listen: "127.0.0.1:0".into(),
                spec: "iso87ascii".into(),
                framing: "4-ascii".into(),
                certification: opts.certification,
                ..ListenerConfig::default()
            },
        ],
        // The test acquirer: whatever connects from this machine, for the registered test terminals.
        acquirers: vec![switch::config::AcquirerConfig {
            id: TEST_ACQUIRER_ID.into(),
            listeners: vec!["acquirer".into(), "acquirer_ascii".into()],
            source: vec!["127.0.0.0/8".into(), "::1/128".into()],
            terminals: test_terminals(&atms)
                .into_iter()
                .map(|t| switch::config::TerminalConfig { tid: t.tid, mid: t.mid, mac: None })
                .collect(),
            ..switch::config::AcquirerConfig::default()
        }],
        issuers: vec![IssuerConfig {
            name: "issuer-a".into(),
            connect: vec![issuer_addr.to_string()],
            connections: 2,
            timeout_ms: opts.issuer_timeout_ms,
            echo_interval_ms: 30_000,
            zpk: Some("issuer-a.zpk".into()),
            mac: opts
                .issuer_link_mac
                .then(|| switch::config::MacConfig { key: "issuer-a.mac".into(), alg: "cmac".into() }),
            imk_ac: opts.on_behalf.then(|| "issuer-a.imk-ac".to_string()),
            // Test cards' ATCs need not rise (INTERFACES.md §5): the whole ATC space is remembered.
            atc_window: switch::state::MAX_WINDOW,
            stand_in: opts.stand_in.clone(),
            ..IssuerConfig::default()
        }],
        // The test cards are billed in EUR; a terminal selling in TWD is converted.
        routes: vec![RouteConfig {
            prefix: "476173".into(),
            issuer: "issuer-a".into(),
            billing_currency: Some("978".into()),
        }],
        rates: vec![switch::config::RateConfig {
            from: "901".into(),
            to: "978".into(),
            rate: "0.0285714".into(),
        }],
        // The keystore beside it; its LMK stays in this process's memory.
        keys: switch::config::KeysConfig {
            keystore: PathBuf::from("switch-keys.toml"),
            ..switch::config::KeysConfig::default()
        },
        journal: switch::config::JournalConfig::default(),
        dedupe: switch::config::DedupeConfig::default(),
        saf: switch::config::SafConfig { retry_base_ms: 200, retry_max_ms: 5_000, ..Default::default() },
        store: opts.store.clone(),
        // The token service runs in the node (its requestors' and issuers' secrets are generated).
        token_service: token_service_config(opts, &requestors, &token_issuers),
        stand_in: switch::config::StandInStateConfig::default(),
    };
    // A kept network's cards are billed as they were when it was made.
    let twd_cards = restored.map_or_else(|| opts.twd_cards.clone(), |(_, s)| s.twd_cards.clone());
    let mut cfg = with_twd_billing(cfg, &twd_cards);
    if let Some(k) = &kept {
        k.same_ports(&mut cfg);
    }
    let test_cards = test.clear.clone();
    Ok(Backbone {
        kept,
        expiry,
        twd_cards,
        lmk_hex,
        test_cards,
        issuer_addr,
        issuer_state,
        issuer_stop,
        issuer_task,
        issuer_admin,
        issuer_admin_stop,
        issuer_admin_token,
        ks,
        atms,
        requestors,
        token_issuers,
        cfg,
    })
}

impl Backbone {
    /// The ports file of a network whose node 0 has these addresses.
    fn ports(
        &self,
        acquirer: Endpoint,
        acquirer_ascii: Endpoint,
        provisioning_api: String,
        admin: String,
    ) -> PortsFile {
        PortsFile {
            acquirer,
            acquirer_ascii,
            provisioning_api,
            admin,
            terminals: test_terminals(&self.atms),
            test_cards: self.test_cards.clone(),
            atm_terminals: self.atms.clone(),
            issuer: self.issuer_addr.to_string(),
            issuer_admin: format!("http://{}", self.issuer_admin),
            issuer_admin_token: self.issuer_admin_token.clone(),
            token_requestors: self.requestors.clone(),
            token_issuers: self.token_issuers.clone(),
            wallet_providers: None,
            nodes: None,
        }
    }

    /// The phone's providers ([`Options::wallet_providers`]) against the ports file's
    /// provisioning API; their addresses go in the ports file.
    async fn providers(
        &self,
        opts: &Options,
        ports: &mut PortsFile,
    ) -> Result<Option<wallet_sim::providers::Running>> {
        if !opts.wallet_providers {
            return Ok(None);
        }
        let store = match &self.kept {
            Some(_) => Some(kept::ProvidersStore::open(&opts.dir, &self.ks)?
                as Arc<dyn wallet_sim::providers::kept::KeptStore>),
            None => None,
        };
        let running =
            start_providers(ports, self.issuer_state.clone(), store, opts.provider_doors.clone()).await?;
        ports.wallet_providers = Some(running.addrs.clone());
        Ok(Some(running))
    }

    /// Node `i`'s folder (`node-i` in `dir`, with a copy of the switch's keystore) and
    /// configuration: node 0's, under its own name, every listener on a port from the OS. Every
    /// node runs the token service (a token pays on any of them) over the vault in the shared
    /// database, its provisioning API included.
    fn node_config(&self, dir: &Path, i: usize) -> Result<(PathBuf, SwitchConfig)> {
        let node_dir = dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&node_dir)?;
        std::fs::copy(dir.join(&self.cfg.keys.keystore), node_dir.join(&self.cfg.keys.keystore))?;
        let mut cfg = self.cfg.clone();
        cfg.node.name = format!("serve-{i}");
        for l in &mut cfg.listeners {
            l.listen = "127.0.0.1:0".into();
        }
        cfg.admin.listen = "127.0.0.1:0".into();
        cfg.token_service.listen = "127.0.0.1:0".into();
        Ok((node_dir, cfg))
    }
}

/// Saves the issuer's state of a kept network ([`Options::keep`]) while it runs.
fn keeper(
    kept: Option<kept::Kept>,
    ports: &PortsFile,
    expiry: String,
    twd_cards: Vec<usize>,
    issuer: &Arc<ServerState>,
) -> Result<Option<kept::Keeper>> {
    let Some(k) = kept else { return Ok(None) };
    let saved = kept::Saved {
        cards: ports.test_cards.len(),
        expiry,
        lmk_kcv: k.lmk_kcv()?,
        component_kcvs: Vec::new(),
        requestors: ports.token_requestors.clone(),
        token_issuers: ports.token_issuers.clone(),
        twd_cards,
        issuer_admin_token: Some(ports.issuer_admin_token.clone()),
    };
    Ok(Some(k.keep(saved, issuer.clone())?))
}

/// The phone's providers against the network's token service, with the issuer's perso bureau
/// answering from the issuer simulator's own HSM (the issuer and its SP TSM are one organisation).
async fn start_providers(
    ports: &PortsFile,
    issuer: Arc<ServerState>,
    kept: Option<Arc<dyn wallet_sim::providers::kept::KeptStore>>,
    doors: wallet_sim::providers::ProviderDoors,
) -> Result<wallet_sim::providers::Running> {
    use wallet_sim::providers::{
        IssuerPerso, PersoKind, PersoOutcome, PersoRequest, ProvidersConfig, RequestorCredential,
    };
    let perso: IssuerPerso = Arc::new(move |r: PersoRequest<'_>| {
        let now = now_ms();
        let yymm = issuer_sim::server::yymm(now);
        let mut i = issuer.issuer.lock().map_err(|_| "issuer unavailable".to_string())?;
        // The issuer's ID&V of cardholder and device first, when the requester asks for it
        // (the cloud platform on the real PAN): the card's policy, as for a token request.
        if let Some(idv) = r.idv {
            use issuer_sim::host::CardholderCheck;
            let ask = issuer_sim::host::IdvAsk {
                pan: r.pan,
                expiry: idv.expiry,
                cvv2: idv.cvv2,
                requestor: idv.requestor,
                session: idv.session,
                otp: idv.otp,
            };
            match i.verify_cardholder(&ask, now, &yymm, (issuer.random)()) {
                CardholderCheck::Approved => {}
                CardholderCheck::OtpSent => return Ok(PersoOutcome::OtpRequired),
                CardholderCheck::Declined { response_code } => {
                    return Ok(PersoOutcome::Declined { response_code: response_code.to_string() });
                }
            }
        }
        let sealed = match r.kind {
            PersoKind::CardProfile => i.perso_data(r.pan, &yymm, r.recipient_public_key, r.info)?,
            PersoKind::LimitedUseKeys { first_atc, count } => i.perso_luks(
                r.pan,
                &yymm,
                crypto::hsm::LukBatch { first_atc, count },
                r.recipient_public_key,
                r.info,
            )?,
        };
        Ok(PersoOutcome::Sealed(sealed))
    });
    let requestors = ports
        .token_requestors
        .iter()
        .map(|r| RequestorCredential { id: r.id.clone(), kind: r.kind.clone(), secret: r.secret.clone() })
        .collect();
    wallet_sim::providers::start(ProvidersConfig {
        token_api: ports.provisioning_api.clone(),
        requestors,
        issuer_perso: Some(perso),
        kept,
        doors,
    })
    .await
    .map_err(Into::into)
}

/// The switch's `[token_service]`: the network's token range (489537, never a card BIN) on the
/// token IMK `token.imk-ac`, the LUK settings of `opts`, the test requestors and issuers (their
/// secrets' SHA-256 only), the provisioning API on a port from the OS — 127.0.0.1, plain HTTP
/// (INTERFACES.md §5): loopback needs no TLS; the door's limits hold.
fn token_service_config(
    opts: &Options,
    requestors: &[TestRequestor],
    issuers: &[TestIssuerCredential],
) -> TokenServiceConfig {
    TokenServiceConfig {
        enabled: true,
        listen: "127.0.0.1:0".into(),
        vault_key: "switch.vault".into(),
        ranges: vec![TokenRangeConfig { prefix: "489537".into(), length: 16, imk_ac: "token.imk-ac".into() }],
        requestors: requestors
            .iter()
            .map(|r| tsp::Requestor {
                id: r.id.clone(),
                kind: r.kind.clone(),
                secret_sha256: sha256_hex(r.secret.as_bytes()),
                cvv2: if opts.cvv2_required.contains(&r.kind) {
                    tsp::Cvv2Policy::Required
                } else {
                    tsp::Cvv2Policy::Optional
                },
            })
            .collect(),
        issuers: issuers
            .iter()
            .map(|i| tsp::IssuerCredential {
                name: i.name.clone(),
                secret_sha256: sha256_hex(i.secret.as_bytes()),
            })
            .collect(),
        luk_batch: opts.luk_batch,
        luk_ttl_s: opts.luk_ttl_s,
        door: door::DoorConfig { tls: opts.provisioning_tls.clone(), ..door::DoorConfig::default() },
        ..TokenServiceConfig::default()
    }
}

/// The scheme of a door's URL.
fn scheme(d: &door::DoorConfig) -> &'static str {
    if d.tls.is_some() { "https" } else { "http" }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The switch's configuration file in the run's folder.
const SWITCH_CONFIG: &str = "switch.toml";

/// Writes the switch's configuration into `dir` and starts the node from that file and the
/// keystore it names, as `switch --config` does (the LMK comes from memory, not from the
/// environment).
async fn start_switch(cfg: &SwitchConfig, lmk_hex: &str, dir: &Path) -> Result<RunningNode> {
    let path = dir.join(SWITCH_CONFIG);
    crate::private_file::write_atomic(&path, cfg.to_toml()?.as_bytes())?;
    let cfg = SwitchConfig::from_toml(&std::fs::read_to_string(&path)?)?;
    let keystore = dir.join(&cfg.keys.keystore);
    let keys_toml =
        std::fs::read_to_string(&keystore).with_context(|| format!("reading {}", keystore.display()))?;
    let ks = Keystore::from_toml(Lmk::from_hex(lmk_hex)?, &keys_toml)?;
    let (parts, _hsm) = NodeParts::production(&cfg, ks, dir.to_path_buf())?;
    Ok(switch::node::start(cfg, parts).await?)
}

impl Network {
    /// Writes the ports file atomically (a temporary file, then a rename), readable by its owner
    /// only: it holds the test cards' keys and PINs and the test ATMs' initial keys.
    pub fn write_ports_file(&self, path: &Path) -> Result<()> {
        write_ports_file(&self.ports, path)
    }

    /// The acquirer listener (`network` spec) of every switch node, the first node's first.
    pub fn acquirer_nodes(&self) -> Vec<SocketAddr> {
        std::iter::once(&self.switch).chain(&self.others).filter_map(|n| n.listener("acquirer")).collect()
    }

    /// Drains the switch, then stops the issuer simulator.
    pub async fn shutdown(self) {
        if let Some(p) = self.providers {
            p.shutdown().await;
        }
        for n in self.others {
            n.shutdown().await;
        }
        self.switch.shutdown().await;
        self.issuer_admin_stop.cancel();
        self.issuer_stop.cancel();
        if let Some(t) = self.issuer_task {
            let _ = t.await;
        }
        if let Some(k) = self.keeper {
            k.stop().await;
        }
    }

    /// Takes the issuer simulator off the network (its state is kept).
    pub async fn stop_issuer(&mut self) {
        self.issuer_stop.cancel();
        if let Some(t) = self.issuer_task.take() {
            let _ = t.await;
        }
    }

    /// Brings the issuer simulator back on its address, with the state it had.
    pub async fn start_issuer(&mut self) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(self.issuer_addr).await?;
        self.issuer_stop = CancellationToken::new();
        self.issuer_task = Some(spawn_issuer(listener, self.issuer_state.clone(), self.issuer_stop.clone())?);
        Ok(())
    }

    /// Stops the switch (draining it) and starts it again on the same store, keys and
    /// configuration — new listener ports: read them from the returned network.
    pub async fn restart_switch(self) -> Result<Network> {
        let Network {
            switch,
            issuer_addr,
            mut ports,
            issuer_state,
            issuer_stop,
            issuer_task,
            issuer_admin_stop,
            token_service: _,
            mut switch_cfg,
            lmk_hex,
            dir,
            providers,
            others,
            keeper,
        } = self;
        switch.shutdown().await;
        // The provisioning API comes back on its address: the providers keep talking to it.
        switch_cfg.token_service.listen =
            ports.provisioning_api.split_once("://").map_or("", |(_, a)| a).to_string();
        let node = start_switch(&switch_cfg, &lmk_hex, &dir).await?;
        let token_service =
            node.token_service.clone().ok_or_else(|| anyhow!("the switch runs no token service"))?;
        if let Some(a) = node.provisioning_api {
            ports.provisioning_api = format!("{}://{a}", scheme(&switch_cfg.token_service.door));
        }
        if let (Some(a), Some(b)) = (node.listener("acquirer"), node.listener("acquirer_ascii")) {
            ports.acquirer.port = a.port();
            ports.acquirer_ascii.port = b.port();
        }
        ports.admin = format!("http://{}", node.admin);
        Ok(Network {
            switch: node,
            issuer_addr,
            ports,
            issuer_state,
            issuer_stop,
            issuer_task,
            issuer_admin_stop,
            token_service,
            switch_cfg,
            lmk_hex,
            dir,
            providers,
            others,
            keeper,
        })
    }

    /// The phone's providers, when they run.
    pub fn providers(&self) -> Option<&wallet_sim::providers::Running> {
        self.providers.as_ref()
    }
}

/// Runs the issuer simulator's listener on a thread of its own, named `issuer-sim`, with a
/// single-threaded runtime: its work never competes with the switch's for the switch's workers,
/// its mutex is never contended, and its CPU time can be read apart from the switch's (per
/// thread, `/proc/self/task`). The handle completes when the listener has stopped.
fn spawn_issuer(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = listener.into_std()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new().name("issuer-sim".into()).spawn(move || {
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => issuer_sim::server::run(listener, state, stop).await,
                Err(e) => tracing::error!(error = %e, "issuer simulator listener"),
            }
        });
        let _ = done_tx.send(());
    })?;
    Ok(tokio::spawn(async move {
        let _ = done_rx.await;
    }))
}
