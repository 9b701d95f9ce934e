//! `issuer-sim` — the issuer host simulator as its own process.
//!
//! ```text
//! issuer-sim --config issuer-sim.toml [--listen ADDR] [--admin ADDR] [--ready-file FILE]
//! issuer-sim --config issuer-sim.toml --check-config
//! ```
//! The LMK comes from the environment variable the config names (`PAYNET_LMK` by default), a
//! private file (`lmk_file`), or 2–3 custodians' component files (`lmk_components` with `lmk_kcv`).

/// mimalloc: measurably faster than the system allocator under many small allocations.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use issuer_sim::admin::AdminAccess;
use issuer_sim::cards::{CardsFile, IssuerConfig};
use issuer_sim::host::Issuer;
use issuer_sim::link_mac::{LinkMac, link_mac_algorithm};
use issuer_sim::server::{self, ServerState};

#[derive(Parser)]
#[command(name = "issuer-sim", version, about = "The paynet issuer host simulator")]
struct Cli {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration, the cards file and the keystore, then exit (0 valid, 2 not).
    #[arg(long)]
    check_config: bool,
    /// Listen here instead of the config's address (port 0: one from the OS).
    #[arg(long)]
    listen: Option<String>,
    /// Serve the admin port (fault toggles) here instead of the config's `admin` (port 0: any).
    #[arg(long)]
    admin: Option<String>,
    /// Once listening, write `{"listen": "IP:PORT", "admin": "IP:PORT" or null}` to this file
    /// (atomically: a temporary file, then a rename).
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
}

struct Loaded {
    cfg: IssuerConfig,
    cards: CardsFile,
    keystore: Option<crypto::keystore::Keystore>,
}

/// Reads and checks the configuration, the accounts file and the keystore, collecting every
/// problem before giving up (STYLE.md habit 6: `--check-config` says everything that is wrong).
/// With `check_only` and no LMK in the environment, the keystore is skipped with a note (an
/// operator checking a config on a machine that does not hold the LMK).
fn load(path: &Path, check_only: bool) -> Result<Loaded, String> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // The line of the setting at fault, when the parser knows it (a value of the wrong type).
    let cfg: IssuerConfig = toml::from_str(&text).map_err(|e| match e.span() {
        Some(span) => {
            let line = text.get(..span.start).map_or(0, |t| t.matches('\n').count()) + 1;
            format!("{} line {line}: {}", path.display(), e.message())
        }
        None => format!("{}: {}", path.display(), e.message()),
    })?;
    let mut problems = Vec::new();
    if let Err(e) = server::check_faults(&cfg.faults) {
        problems.push(e);
    }
    if let Err(e) = cfg.idv.validate() {
        problems.push(e);
    }
    if let Err(e) = cfg.kept.validate() {
        problems.push(e);
    }
    if let Some(admin) = &cfg.admin {
        match cfg.admin_token() {
            Ok(None) => {
                problems.push("admin_token or admin_token_env: required when the admin port is on".into())
            }
            Ok(Some(t)) => {
                if let Err(e) = AdminAccess::new(&t, cfg.test_mode) {
                    problems.push(e);
                }
            }
            Err(e) if check_only => eprintln!("issuer-sim: {e}: the admin port would not start"),
            Err(e) => problems.push(e),
        }
        if let Err(e) = cfg.admin_door.validate() {
            problems.push(format!("admin_door: {e}"));
        }
        if let Ok(a) = admin.parse::<std::net::SocketAddr>()
            && !a.ip().is_loopback()
            && cfg.admin_door.tls.is_none()
            && !cfg.admin_door.insecure_plaintext
        {
            problems.push(format!(
                "admin: {a} is not loopback: set admin_door.tls (or admin_door.insecure_plaintext)"
            ));
        }
    }
    if let Err(e) = codecs::iso8583::Spec::load(&cfg.spec, &base) {
        problems.push(format!("spec: {e}"));
    }
    if let Err(e) = cfg.framing.parse::<codecs::framing::FramingKind>() {
        problems.push(format!("framing: {e}"));
    }
    if let Some(m) = &cfg.link_mac
        && let Err(e) = issuer_sim::link_mac::link_mac_algorithm(&m.alg)
    {
        problems.push(e.to_string());
    }
    let cards_path = base.join(&cfg.cards);
    let cards = match std::fs::read_to_string(&cards_path) {
        Ok(t) => match CardsFile::from_toml(&t) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(format!("{}: {e}", cards_path.display()));
                None
            }
        },
        Err(e) => {
            problems.push(format!("cannot read {}: {e}", cards_path.display()));
            None
        }
    };
    problems.extend(cfg.keys.lmk_source().problems("keys"));
    let keystore = if check_only && !cfg.keys.lmk_source().available() {
        eprintln!("issuer-sim: {} is not set: the keystore is not checked", cfg.keys.lmk_env);
        None
    } else {
        load_keystore(&cfg, &base).map_err(|e| problems.push(e)).ok()
    };
    if let (Some(cards), Some(keystore)) = (&cards, &keystore) {
        // Every key a card names, the ZPK and the link MAC key must exist.
        let mut missing = Vec::new();
        let named = cards.cards.iter().flat_map(|c| [Some(&c.imk_ac), c.pvk.as_ref(), c.cvk.as_ref()]);
        let link_key = cfg.link_mac.as_ref().map(|m| &m.key);
        for k in named.flatten().chain(std::iter::once(&cfg.zpk)).chain(link_key) {
            let ok =
                crypto::keystore::KeyName::new(k).ok().is_some_and(|n| keystore.names().any(|m| *m == n));
            if !ok && !missing.contains(k) {
                missing.push(k.clone());
            }
        }
        if !missing.is_empty() {
            problems.push(format!("keys named but not in the keystore: {}", missing.join(", ")));
        }
    }
    match cards {
        Some(cards) if problems.is_empty() => Ok(Loaded { cfg, cards, keystore }),
        _ => Err(problems.join("\n")),
    }
}

/// The keystore the configuration names, unwrapped under the LMK its `[keys]` table names (the
/// environment variable, a private file, or 2–3 custodians' component files).
fn load_keystore(cfg: &IssuerConfig, base: &Path) -> Result<crypto::keystore::Keystore, String> {
    let lmk = cfg.keys.lmk_source().load(base).map_err(|e| e.to_string())?;
    let ks_path = base.join(&cfg.keys.keystore);
    let ks_text =
        std::fs::read_to_string(&ks_path).map_err(|e| format!("cannot read {}: {e}", ks_path.display()))?;
    crypto::keystore::Keystore::from_toml(lmk, &ks_text).map_err(|e| format!("keystore: {e}"))
}

fn main() -> ExitCode {
    door::process::no_huge_pages();
    let cli = Cli::parse();
    let loaded = match load(&cli.config, cli.check_config) {
        Ok(l) => l,
        Err(e) => {
            for line in e.lines() {
                eprintln!("issuer-sim: {line}");
            }
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("{}: configuration valid ({} cards)", cli.config.display(), loaded.cards.cards.len());
        return ExitCode::SUCCESS;
    }
    door::process::init_logging("info");
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("issuer-sim: cannot start the runtime");
        return ExitCode::from(1);
    };
    match rt.block_on(run(cli, loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("issuer-sim: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli, l: Loaded) -> Result<(), String> {
    let base = cli.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let spec = codecs::iso8583::Spec::load(&l.cfg.spec, &base).map_err(|e| e.to_string())?;
    let framing = l.cfg.framing.parse().map_err(|e| format!("framing: {e}"))?;
    let keystore = l.keystore.ok_or("no keystore")?;
    let hsm = Arc::new(crypto::hsm::SoftHsm::new(
        keystore,
        Box::new(|b: &mut [u8]| {
            if let Err(e) = getrandom::fill(b) {
                panic!("operating system random source unavailable: {e}");
            }
        }),
    ));
    // The link MAC key must make and verify MACs of its algorithm now, not at the first request.
    let link_mac = match &l.cfg.link_mac {
        Some(m) => {
            let alg = link_mac_algorithm(&m.alg).map_err(|e| e.to_string())?;
            Some(LinkMac::new(hsm.clone(), &m.key, alg).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let issuer =
        Issuer::new(hsm, &l.cfg.zpk, &l.cards).with_idv_limits(l.cfg.idv).with_kept_limits(l.cfg.kept);
    let state = Arc::new(ServerState {
        issuer: Mutex::new(issuer),
        spec,
        framing,
        faults: std::sync::RwLock::new(l.cfg.faults.clone()),
        clock: Box::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        }),
        random: Box::new(issuer_sim::server::thread_random),
        link_mac,
    });
    let addr = cli.listen.clone().unwrap_or_else(|| l.cfg.listen.clone());
    let listener =
        tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        %bound,
        cards = l.cards.cards.len(),
        link_mac = ?state.link_mac.as_ref().map(|m| m.key()),
        "issuer simulator listening"
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let mut admin_bound = None;
    if let Some(admin) = cli.admin.clone().or_else(|| l.cfg.admin.clone()) {
        let token =
            l.cfg.admin_token()?.ok_or("admin_token or admin_token_env: required with an admin port")?;
        let access = AdminAccess::new(&token, l.cfg.test_mode)?;
        let al = tokio::net::TcpListener::bind(&admin)
            .await
            .map_err(|e| format!("cannot bind the admin port {admin}: {e}"))?;
        let at = al.local_addr().map_err(|e| e.to_string())?;
        let door_cfg = l.cfg.admin_door.resolved(&base);
        door::open(at, &door_cfg).map_err(|e| format!("admin port: {e}"))?;
        admin_bound = Some(at.to_string());
        tracing::info!(admin = ?admin_bound, test_mode = l.cfg.test_mode, "admin port listening");
        let (st, s) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = issuer_sim::admin::run_admin(al, st, access, door_cfg, s).await {
                tracing::error!(error = %e, "admin port closed");
            }
        });
    }
    if let Some(path) = &cli.ready_file {
        let tmp = path.with_extension("tmp");
        let ready = serde_json::json!({"listen": bound.to_string(), "admin": admin_bound});
        std::fs::write(&tmp, ready.to_string()).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
    }
    let s = stop.clone();
    tokio::spawn(async move {
        door::process::shutdown_signal().await;
        s.cancel();
    });
    let defaults = server::ConnectionLimits::default();
    let limits = server::ConnectionLimits {
        read_timeout: l.cfg.read_timeout_ms.map(Duration::from_millis).unwrap_or(defaults.read_timeout),
        idle_timeout: l.cfg.idle_timeout_ms.map(Duration::from_millis).unwrap_or(defaults.idle_timeout),
    };
    server::run_with(listener, state, stop, limits).await;
    Ok(())
}
