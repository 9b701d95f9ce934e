//! A running switch node assembled from its configuration: the store, the journal (written with
//! the decision state), the issuer links with their SAF workers and stand-in rules, the acquirer
//! listeners, the admin endpoint, and — when `[token_service]` is enabled — the token service
//! (vault, detokenize stage, provisioning API) — and a graceful shutdown, in one place, that stops
//! the provisioning API, stops accepting, drains requests in flight, and flushes the journal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use codecs::framing::FramingKind;
use codecs::iso8583::Spec;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::acquirer::{self, ListenerSettings};
use crate::admin::{self, AdminState, Readiness};
use crate::clock::{Clock, Entropy};
use crate::config::SwitchConfig;
use crate::dedupe::DuplicateCache;
use crate::detokenize::{Detokenizer, NoTokens};
use crate::engine::{self, Engine, IssuerHandle, ListenerCtx};
use crate::error::{Error, ErrorKind, Result};
use crate::issuer::{IssuerPool, LinkSettings};
pub use crate::keys::NodeKeys;
use crate::macing::LinkMac;
use crate::metrics::Metrics;
use crate::pipeline::{IssuerRules, Pipeline};
use crate::registry::Registry;
use crate::saf::{RetryPolicy, SafQueue};
use crate::standin::StandIn;
use crate::state::{StateBook, StateWriter};
use crate::store::Store;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;

/// What the node is built from besides its config.
pub struct NodeParts {
    pub keys: NodeKeys,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    /// The HSM holding every other key (link MAC keys, issuer keys for on-behalf verification,
    /// token IMKs).
    pub hsm: Arc<dyn crypto::hsm::Hsm>,
    /// Folder that relative paths in the config are resolved against.
    pub base_dir: PathBuf,
}

impl NodeParts {
    /// The production parts over a loaded keystore: the node's keys by the names `cfg` gives, a
    /// software HSM over the keystore (returned too, for SIGHUP's key reload), the system clock
    /// and the operating system's generator.
    pub fn production(
        cfg: &SwitchConfig,
        ks: crypto::keystore::Keystore,
        base_dir: PathBuf,
    ) -> Result<(NodeParts, Arc<crypto::hsm::SoftHsm>)> {
        let keys = crate::keys::load_node_keys(&ks, cfg)?;
        let hsm =
            Arc::new(crypto::hsm::SoftHsm::new(ks, Box::new(|b: &mut [u8]| crate::clock::OsEntropy.fill(b))));
        let parts = NodeParts {
            keys,
            hsm: hsm.clone(),
            clock: Arc::new(crate::clock::SystemClock),
            entropy: Arc::new(crate::clock::OsEntropy),
            base_dir,
        };
        Ok((parts, hsm))
    }
}

/// The running provisioning API.
struct ProvisioningApi {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A started node.
pub struct RunningNode {
    /// (listener name, bound address), in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
    pub engine: Arc<Engine>,
    pub store: Arc<dyn Store>,
    pub readiness: Arc<Readiness>,
    /// The token service, when `[token_service]` is enabled. It reaches issuers through the
    /// engine held weakly ([`crate::gateway`]), so a clone kept elsewhere never delays shutdown.
    pub token_service: Option<Arc<tsp::TokenService>>,
    /// The provisioning API's bound address, with the token service unless `[token_service] api`
    /// is `false`.
    pub provisioning_api: Option<SocketAddr>,
    api: Option<ProvisioningApi>,
    stop_accepting: CancellationToken,
    stop_all: CancellationToken,
    tasks: TaskTracker,
    background: TaskTracker,
    state_writer: Option<StateWriter>,
    grace: Duration,
}

fn config_err(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, "config", detail)
}

fn framing(name: &str) -> Result<FramingKind> {
    name.parse().map_err(|_| config_err(format!("unknown framing {name:?}")))
}

fn spec(name: &str, base: &Path) -> Result<Arc<Spec>> {
    Spec::load(name, base).map_err(|e| config_err(e.to_string()))
}

fn link_mac(
    cfg: Option<&crate::config::MacConfig>,
    hsm: &Arc<dyn crypto::hsm::Hsm>,
) -> Result<Option<LinkMac>> {
    let Some(c) = cfg else { return Ok(None) };
    let alg = crypto::mac::MacAlgorithm::from_name(&c.alg).map_err(|e| config_err(e.to_string()))?;
    // The key must exist now, not at the first message.
    hsm.key_check_value(&c.key).map_err(|e| config_err(format!("mac.key {}: {e}", c.key)))?;
    Ok(Some(LinkMac { hsm: hsm.clone(), key: c.key.clone(), alg }))
}

/// The acquirer registry of `cfg`, every terminal MAC key checked in the HSM.
pub fn registry(cfg: &SwitchConfig, hsm: &Arc<dyn crypto::hsm::Hsm>) -> Result<Registry> {
    Registry::new(&cfg.acquirers, |m| link_mac(Some(m), hsm)?.ok_or_else(|| config_err("terminal MAC")))
}

/// The node's store: PostgreSQL when `[store] url` is set (connected and migrated now, off the
/// runtime's threads), else the SQLite file in the data folder.
pub async fn open_store(cfg: &SwitchConfig, data_dir: &Path) -> Result<Arc<dyn Store>> {
    match cfg.store.postgres(&cfg.node.name) {
        Some(opts) => {
            let store = tokio::task::spawn_blocking(move || PgStore::open(&opts)).await.map_err(|e| {
                Error::new(ErrorKind::Internal, "store", format!("opening the store stopped: {e}"))
            })??;
            Ok(Arc::new(store))
        }
        None => Ok(Arc::new(SqliteStore::open(&data_dir.join("switch.db"))?)),
    }
}

/// Starts a node. Listeners bind before this returns (port 0 takes one from the OS).
pub async fn start(cfg: SwitchConfig, mut parts: NodeParts) -> Result<RunningNode> {
    let problems = cfg.validate();
    if !problems.is_empty() {
        return Err(config_err(problems.join("; ")));
    }
    // Every key the config names must be in the keystore now, not at the first transaction.
    let named = cfg
        .listeners
        .iter()
        .filter_map(|l| l.bdk.as_ref().map(|k| (format!("listener {}.bdk", l.name), k)))
        .chain(
            cfg.issuers.iter().filter_map(|i| i.zpk.as_ref().map(|k| (format!("issuer {}.zpk", i.name), k))),
        );
    for (what, key) in named {
        parts.hsm.key_check_value(key).map_err(|e| config_err(format!("{what} {key}: {e}")))?;
    }
    let base = parts.base_dir.clone();
    let data_dir = base.join(&cfg.node.data_dir);
    std::fs::create_dir_all(&data_dir).map_err(|e| {
        Error::new(ErrorKind::Store, "store", format!("cannot create {}: {e}", data_dir.display()))
    })?;
    // The token service: its vault and detokenize stage now, its provisioning service once the
    // engine exists to be its gateway.
    let tokens = match (cfg.token_service.enabled, parts.keys.token_service.take()) {
        (true, Some(keys)) => {
            // Off the runtime's threads: a shared store connects and migrates now.
            let (c, hsm, dir) = (cfg.clone(), parts.hsm.clone(), data_dir.clone());
            Some(
                tokio::task::spawn_blocking(move || crate::tokens::assemble(&c, keys, hsm, &dir))
                    .await
                    .map_err(|e| {
                        Error::new(ErrorKind::Internal, "token_service", format!("opening it stopped: {e}"))
                    })??,
            )
        }
        (true, None) => {
            return Err(config_err("token_service: enabled, but the node has no token service keys"));
        }
        (false, _) => None,
    };
    let detokenizer: Arc<dyn Detokenizer> = match &tokens {
        Some(t) => t.detokenizer(),
        None => Arc::new(NoTokens),
    };
    let store = open_store(&cfg, &data_dir).await?;
    let book_store = store.clone();
    let bounds = crate::state::StateBounds {
        max_cards: cfg.stand_in.max_cards,
        period_ms: cfg.stand_in.period_s.saturating_mul(1000),
        atc_windows: cfg.store.atc_windows,
        group_commit: Duration::from_micros(cfg.store.group_commit_us),
    };
    let book_clock = parts.clock.clone();
    let (state, state_writer) =
        tokio::task::spawn_blocking(move || StateBook::open_with(book_store, bounds, book_clock))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Internal, "state", format!("loading the state stopped: {e}"))
            })??;
    let registry = registry(&cfg, &parts.hsm)?;
    let metrics = Arc::new(Metrics::new(&cfg.node.name));
    // One keyed HMAC for the pipeline's fingerprints and the journal's.
    let fingerprint_key = crypto::mac::HmacSha256Key::new(&parts.keys.fingerprint);
    let fp_key = fingerprint_key.clone();
    state.set_commit_timeout(Duration::from_millis(cfg.journal.commit_timeout_ms));
    let journal = state
        .journal(Arc::new(move |pan: &str| crate::pipeline::pan_fingerprint(&fp_key, pan)), metrics.clone());
    let sealer = parts.keys.saf_seal.clone();
    let stop_all = CancellationToken::new();
    let stop_accepting = stop_all.child_token();
    // Listeners, connections and requests: drained on shutdown.
    let tasks = TaskTracker::new();
    // SAF workers: stopped once requests are drained.
    let background = TaskTracker::new();
    let policy = RetryPolicy {
        base_ms: cfg.saf.retry_base_ms,
        max_ms: cfg.saf.retry_max_ms,
        ..RetryPolicy::default()
    };

    let mut issuers = HashMap::new();
    let mut rules = HashMap::new();
    let mut saf_starts = Vec::new();
    for ic in &cfg.issuers {
        let name: Arc<str> = Arc::from(ic.name.as_str());
        let pool = IssuerPool::start(
            LinkSettings {
                name: name.clone(),
                addrs: ic.connect.clone(),
                connections: ic.connections,
                spec: spec(&ic.spec, &base)?,
                framing: framing(&ic.framing)?,
                timeout: Duration::from_millis(ic.timeout_ms),
                echo_interval: Duration::from_millis(ic.echo_interval_ms),
                sign_on: ic.sign_on,
                tls: ic.tls.as_ref().map(|t| crate::tls::connector(t, &base)).transpose()?,
                mac: link_mac(ic.mac.as_ref(), &parts.hsm)?,
            },
            metrics.clone(),
            stop_all.clone(),
        );
        let saf = Arc::new(SafQueue::new(store.clone(), sealer.clone(), policy, ic.name.clone()));
        let wake = Arc::new(tokio::sync::Notify::new());
        saf_starts.push((pool.clone(), saf.clone(), wake.clone(), name.clone()));
        rules.insert(
            name.clone(),
            IssuerRules {
                name: name.clone(),
                spec: pool.spec().clone(),
                zpk: ic.zpk.clone(),
                imk_ac: ic.imk_ac.clone(),
                atc_window: ic.atc_window,
                stand_in: StandIn::new(ic.stand_in.clone()),
            },
        );
        issuers.insert(name, IssuerHandle { link: pool, saf, saf_wake: wake });
    }
    let routes = cfg.route_table().map_err(config_err)?;
    let engine = Arc::new(Engine {
        pipeline: Pipeline {
            registry: RwLock::new(Arc::new(registry)),
            routes: RwLock::new(Arc::new(routes)),
            issuers: rules,
            dedupe: DuplicateCache::new(cfg.dedupe.window_s.saturating_mul(1000), cfg.dedupe.max_entries),
            state: state.clone(),
            detokenizer,
            hsm: parts.hsm.clone(),
            entropy: parts.entropy.clone(),
            fingerprint_key,
        },
        issuers,
        journal,
        metrics: metrics.clone(),
        clock: parts.clock.clone(),
        entropy: parts.entropy.clone(),
    });
    drop(state);
    for (pool, saf, wake, name) in saf_starts {
        let book = engine.pipeline.state.clone();
        let reset_name = name.clone();
        let worker = engine::SafWorker {
            issuer: pool,
            saf,
            wake,
            clock: parts.clock.clone(),
            entropy: parts.entropy.clone(),
            metrics: metrics.clone(),
        };
        // The issuer has the advices: its cards' stand-in totals start again.
        let reset = move || book.reset_stand_in(&reset_name);
        background.spawn(engine::saf_worker(worker, reset, stop_all.clone()));
    }

    // One report per terminal across the node's certification listeners.
    let certification = cfg
        .listeners
        .iter()
        .any(|l| l.certification)
        .then(|| Arc::new(crate::certify::CertificationLog::new(200)));
    let mut bound = Vec::new();
    for lc in &cfg.listeners {
        if lc.tls.is_none() && lc.insecure_plaintext {
            tracing::warn!(listener = %lc.name, listen = %lc.listen, "listener without TLS (insecure_plaintext): card data crosses the network in clear");
        }
        let listener = TcpListener::bind(&lc.listen)
            .await
            .map_err(|e| config_err(format!("listener {}: cannot bind {}: {e}", lc.name, lc.listen)))?;
        let addr = listener.local_addr().map_err(|e| config_err(e.to_string()))?;
        let settings = Arc::new(ListenerSettings {
            ctx: Arc::new(ListenerCtx {
                name: Arc::from(lc.name.as_str()),
                spec: spec(&lc.spec, &base)?,
                bdk: lc.bdk.clone(),
            }),
            framing: framing(&lc.framing)?,
            max_frame_len: codecs::framing::DEFAULT_MAX_FRAME_LEN,
            max_connections: lc.max_connections as usize,
            max_in_flight: lc.max_in_flight_per_connection as usize,
            read_timeout: Duration::from_millis(lc.read_timeout_ms),
            idle_timeout: Duration::from_millis(lc.idle_timeout_ms),
            tls: lc.tls.as_ref().map(|t| crate::tls::acceptor(t, &base)).transpose()?,
            mac: link_mac(lc.mac.as_ref(), &parts.hsm)?,
            certification: if lc.certification { certification.clone() } else { None },
        });
        tasks.spawn(acquirer::serve(
            listener,
            settings,
            engine.clone(),
            stop_accepting.clone(),
            tasks.clone(),
        ));
        info!(listener = %lc.name, %addr, "acquirer listener accepting");
        bound.push((lc.name.clone(), addr));
    }
    let readiness = Arc::new(Readiness::default());
    let admin_listener = TcpListener::bind(&cfg.admin.listen)
        .await
        .map_err(|e| config_err(format!("admin: cannot bind {}: {e}", cfg.admin.listen)))?;
    let admin_addr = admin_listener.local_addr().map_err(|e| config_err(e.to_string()))?;
    let token = match &cfg.admin.token_env {
        None => None,
        Some(var) => {
            let t = std::env::var(var)
                .map_err(|_| config_err(format!("admin.token_env: the variable {var} is not set")))?;
            if t.len() < 16 {
                return Err(config_err(format!(
                    "admin.token_env: the credential in {var} is under 16 characters"
                )));
            }
            Some(Arc::new(zeroize::Zeroizing::new(t)))
        }
    };
    let st = AdminState { metrics: metrics.clone(), readiness: readiness.clone(), certification, token };
    let admin_stop = stop_all.clone();
    let admin_door = cfg.admin.door.resolved(&base);
    // Refused here (plaintext off loopback, TLS files that do not load), not in the spawned task.
    door::open(admin_addr, &admin_door).map_err(|e| config_err(format!("admin: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = admin::serve(admin_listener, st, admin_door, admin_stop).await {
            tracing::error!(error = %e, "admin door closed");
        }
    });
    let (token_service, provisioning_api, api) = match tokens {
        Some(t) => {
            let env = tsp::service::Environment {
                gateway: Arc::new(crate::gateway::EngineGateway::new(&engine)),
                clock: parts.clock.clone(),
                entropy: parts.entropy.clone(),
            };
            let svc = Arc::new(t.service(env));
            if cfg.token_service.api {
                let (addr, api) = serve_provisioning(&cfg, &base, svc.clone(), &stop_all).await?;
                (Some(svc), Some(addr), Some(api))
            } else {
                info!("token service without its provisioning API ([token_service] api = false)");
                (Some(svc), None, None)
            }
        }
        None => (None, None, None),
    };
    readiness.set_listeners_up(true);
    Ok(RunningNode {
        listeners: bound,
        admin: admin_addr,
        engine,
        store,
        readiness,
        token_service,
        provisioning_api,
        api,
        stop_accepting,
        stop_all,
        tasks,
        background,
        state_writer: Some(state_writer),
        grace: Duration::from_millis(cfg.node.shutdown_grace_ms),
    })
}

/// Binds `[token_service] listen` and serves the provisioning API behind its door.
async fn serve_provisioning(
    cfg: &SwitchConfig,
    base: &Path,
    svc: Arc<tsp::TokenService>,
    stop_all: &CancellationToken,
) -> Result<(SocketAddr, ProvisioningApi)> {
    let ts = &cfg.token_service;
    let listener = TcpListener::bind(&ts.listen)
        .await
        .map_err(|e| config_err(format!("token_service.listen: cannot bind {}: {e}", ts.listen)))?;
    let addr = listener.local_addr().map_err(|e| config_err(e.to_string()))?;
    let api_door = ts.door.resolved(base);
    // Refused here (plaintext off loopback, TLS files that do not load), not in the spawned task.
    door::open(addr, &api_door).map_err(|e| config_err(format!("token_service: {e}")))?;
    let stop = stop_all.child_token();
    let api_stop = stop.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = tsp::api::serve(listener, svc, api_door, api_stop).await {
            tracing::error!(error = %e, "provisioning API door closed");
        }
    });
    info!(%addr, "token service provisioning API listening");
    Ok((addr, ProvisioningApi { stop, task }))
}

impl RunningNode {
    /// The bound address of listener `name`.
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Stops the provisioning API (its calls in flight finish, up to 5 s), stops accepting, lets
    /// requests in flight finish (up to the grace period), stops the issuer links and SAF
    /// workers, and flushes the journal.
    pub async fn shutdown(mut self) {
        self.readiness.set_draining();
        if let Some(api) = self.api.take() {
            api.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), api.task).await;
        }
        self.token_service = None;
        self.stop_accepting.cancel();
        self.tasks.close();
        let drained = tokio::time::timeout(self.grace, self.tasks.wait()).await.is_ok();
        if !drained {
            tracing::warn!("shutdown grace period over with requests still in flight");
        }
        self.stop_all.cancel();
        self.background.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.background.wait()).await;
        let engine = self.engine;
        drop(engine);
        if let Some(w) = self.state_writer.take() {
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::task::spawn_blocking(move || w.finish()),
            )
            .await;
        }
    }
}
