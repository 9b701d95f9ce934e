//! `switch` — one authorization switch node.
//!
//! ```text
//! switch --config switch.toml                 run until SIGINT/SIGTERM; SIGHUP reloads the routes
//! switch --config switch.toml --check-config  print every problem in the file, exit 2 if any
//! switch --config switch.toml --rewrap-vault  re-seal the token vault under the current data key
//! ```
//! The LMK comes from the environment variable the config names (`PAYNET_LMK` by default) or the
//! file it names, or from 2–3 custodians' component files (`lmk_components`); the keystore holds
//! the node's keys (`switch.saf`, `switch.fingerprint`, and with the token service
//! `tsp.vault-index` and `tsp.token-ref`).

/// mimalloc: measurably faster than the system allocator under many small allocations.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use switch::clock::{Entropy, OsEntropy};
use switch::config::SwitchConfig;
use switch::node::{self, NodeParts};

#[derive(Parser)]
#[command(name = "switch", version, about = "The paynet authorization switch")]
struct Cli {
    /// The node's TOML configuration (see config/switch.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration and exit: 0 when valid, 2 with every problem listed otherwise.
    #[arg(long)]
    check_config: bool,
    /// Write the bound listener and admin addresses as JSON to this file once ready.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Key rotation: re-seal every vault row under the current data key
    /// (`token_service.vault_key` / `vault_key_version`), reading older rows with the
    /// `vault_old_key` entries; print how many rows changed and exit. Run it with the node stopped.
    #[arg(long)]
    rewrap_vault: bool,
}

fn load(path: &Path) -> Result<SwitchConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    SwitchConfig::from_toml(&text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    door::process::no_huge_pages();
    let cli = Cli::parse();
    let cfg = match load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switch: {e}");
            return ExitCode::from(2);
        }
    };
    let base = cli.config.parent().map(Path::to_path_buf).unwrap_or_default();
    if cli.check_config {
        let mut problems = cfg.validate();
        for l in &cfg.listeners {
            if let Err(e) = codecs::iso8583::Spec::load(&l.spec, &base) {
                problems.push(format!("listener {}: {e}", l.name));
            }
        }
        for i in &cfg.issuers {
            if let Err(e) = codecs::iso8583::Spec::load(&i.spec, &base) {
                problems.push(format!("issuer {}: {e}", i.name));
            }
        }
        // The database is reached (and migrated) now, not at the first transaction.
        if problems.is_empty()
            && let Some(opts) = cfg.store.postgres(&cfg.node.name)
            && let Err(e) = switch::store::postgres::PgStore::open(&opts)
        {
            problems.push(format!("store.url: {e}"));
        }
        if problems.is_empty() {
            println!("{}: configuration valid", cli.config.display());
            return ExitCode::SUCCESS;
        }
        for p in &problems {
            eprintln!("{}: {p}", cli.config.display());
        }
        return ExitCode::from(2);
    }
    door::process::init_logging("info");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switch: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli, cfg, base)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switch: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli, cfg: SwitchConfig, base: PathBuf) -> Result<(), String> {
    let ks = switch::keys::load_keystore(&cfg.keys, &base).map_err(|e| e.to_string())?;
    if cli.rewrap_vault {
        return rewrap_vault(&cfg, &ks, &base);
    }
    let (parts, hsm) = NodeParts::production(&cfg, ks, base).map_err(|e| e.to_string())?;
    let running = node::start(cfg, parts).await.map_err(|e| e.to_string())?;
    if let Some(path) = &cli.ready_file {
        let listeners: serde_json::Map<String, serde_json::Value> = running
            .listeners
            .iter()
            .map(|(n, a)| (n.clone(), serde_json::Value::String(a.to_string())))
            .collect();
        let mut doc = serde_json::json!({"listeners": listeners, "admin": running.admin.to_string()});
        if let Some(addr) = running.provisioning_api {
            doc["provisioning_api"] = serde_json::Value::String(format!("http://{addr}"));
        }
        write_atomically(path, doc.to_string().as_bytes()).map_err(|e| format!("ready file: {e}"))?;
    }
    wait_for_signals(&running, &hsm, &cli.config).await;
    running.shutdown().await;
    Ok(())
}

/// `--rewrap-vault`: re-seals every vault row under the current data key.
fn rewrap_vault(cfg: &SwitchConfig, ks: &crypto::keystore::Keystore, base: &Path) -> Result<(), String> {
    if !cfg.token_service.enabled {
        return Err("--rewrap-vault: the token service is not enabled in this configuration".into());
    }
    let keys = switch::keys::token_service_keys(ks, &cfg.token_service).map_err(|e| e.to_string())?;
    let store =
        switch::tokens::TokenStore::open(cfg, &base.join(&cfg.node.data_dir)).map_err(|e| e.to_string())?;
    let vault = switch::tokens::open_vault(&store, keys).map_err(|e| e.to_string())?;
    let n = vault
        .rewrap(cfg.token_service.vault_key_version, || {
            let mut nonce = [0u8; 12];
            OsEntropy.fill(&mut nonce);
            nonce
        })
        .map_err(|e| e.to_string())?;
    println!("vault: {n} rows re-sealed under data key version {}", cfg.token_service.vault_key_version);
    Ok(())
}

/// Writes `path` via a temporary file and a rename, so readers never see half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(unix)]
async fn wait_for_signals(running: &node::RunningNode, hsm: &Arc<crypto::hsm::SoftHsm>, config: &Path) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => reload(running, hsm, config),
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_running: &node::RunningNode, _hsm: &Arc<crypto::hsm::SoftHsm>, _config: &Path) {
    let _ = tokio::signal::ctrl_c().await;
}

/// SIGHUP: routes, stand-in limits, the acquirer registry and the keystore are read again and
/// swapped in; connections and requests in flight carry on. A file that does not load leaves
/// everything as it was.
fn reload(running: &node::RunningNode, hsm: &Arc<crypto::hsm::SoftHsm>, config: &Path) {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: configuration unreadable; the running one stays");
            return;
        }
    };
    let base = config.parent().map(Path::to_path_buf).unwrap_or_default();
    let table = match cfg.route_table() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: bad routes or rates; the running ones stay");
            return;
        }
    };
    let unknown: Vec<&str> = cfg
        .routes
        .iter()
        .filter(|r| !running.engine.issuers.contains_key(r.issuer.as_str()))
        .map(|r| r.issuer.as_str())
        .collect();
    if !unknown.is_empty() {
        tracing::error!(issuers = ?unknown, "reload refused: routes name issuers this node has no link to");
        return;
    }
    let keystore = match switch::keys::load_keystore(&cfg.keys, &base) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: keystore does not load; the running keys stay");
            return;
        }
    };
    let problems = cfg.validate();
    if !problems.is_empty() {
        tracing::error!(problems = %problems.join("; "), "reload refused: configuration invalid; the running one stays");
        return;
    }
    hsm.replace_keystore(keystore);
    let as_hsm: Arc<dyn crypto::hsm::Hsm> = hsm.clone();
    let registry = match node::registry(&cfg, &as_hsm) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reload: acquirer registry refused; the running one stays");
            return;
        }
    };
    let pipeline = &running.engine.pipeline;
    for ic in &cfg.issuers {
        if let Some(r) = pipeline.issuers.get(ic.name.as_str()) {
            r.stand_in.set_rules(ic.stand_in.clone());
        }
    }
    *pipeline.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    *pipeline.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry);
    tracing::info!(
        routes = cfg.routes.len(),
        acquirers = cfg.acquirers.len(),
        "configuration reloaded: routes, stand-in limits, acquirer registry, keystore"
    );
}
