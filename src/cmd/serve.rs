//! `paynet serve --ports-file FILE` (INTERFACES.md §5): the switch and the issuer simulator on
//! 127.0.0.1 with ports from the OS, on the embedded defaults; the ports file is written once every
//! listener accepts and the issuer link is up; runs until SIGINT or SIGTERM, then drains.
//! `--nodes N --database-url URL`: N switch nodes over one PostgreSQL database, each in its own
//! process (`paynet node`), listed in the ports file's `nodes`; this process keeps the issuer
//! simulator and the phone's providers, writes the ports file once every node is ready, and stops
//! the nodes when it stops (they also stop by themselves if it dies: see `paynet::network`).
//!
//! Without `--state` every start is a new network in a temporary folder. With `--state DIR` the
//! network lives in DIR (`paynet::network::kept`) and a start on the same DIR brings it back: the
//! same keys, cards and ATMs, balances, tokens; the ports file is also written to `DIR/ports.json`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// Where to write the ports file (JSON, INTERFACES.md §5); with --state, also DIR/ports.json.
    #[arg(long, value_name = "FILE", required_unless_present = "state")]
    ports_file: Option<PathBuf>,
    /// Keep the network in DIR (created when missing): LMK components, keystores, the issuer's
    /// ledger, the token vault, the switch's store; a start on the same DIR brings it back.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Number of generated test cards (at least 4).
    #[arg(long, default_value_t = 6)]
    cards: usize,
    /// Cloud (HCE) tokens: limited-use keys per batch, 1 to 100 (the switch's
    /// `[token_service] luk_batch`).
    #[arg(long, value_name = "N", default_value_t = switch::config::TokenServiceConfig::default().luk_batch)]
    luk_batch: u16,
    /// Cloud (HCE) tokens: seconds a batch of limited-use keys stays valid, 1 s to 30 days (the
    /// switch's `[token_service] luk_ttl_s`).
    #[arg(long, value_name = "SECONDS", default_value_t = switch::config::TokenServiceConfig::default().luk_ttl_s)]
    luk_ttl_s: u64,
    /// Run N switch nodes over one PostgreSQL database (`--database-url`), each in its own
    /// process with the token service and its provisioning API; the ports file lists them all
    /// under `nodes`, with their process IDs and provisioning APIs.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "database_url")]
    nodes: usize,
    /// The PostgreSQL database the switch nodes share (`postgres://user@host:port/database`).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The schema of that database the network's tables go in.
    #[arg(long, value_name = "NAME", default_value = "paynet")]
    schema: String,
}

pub fn run(a: ServeArgs) -> Result<()> {
    door::process::init_logging("info");
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        // Without --state, everything the run writes lives under the system temporary folder
        // (honouring TMPDIR) and goes with it.
        let (dir, tmp) = match &a.state {
            Some(d) => (d.clone(), None),
            None => {
                let t =
                    tempfile::Builder::new().prefix("paynet-serve-").tempdir().context("temporary folder")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut opts = paynet::network::Options::new(&dir);
        opts.cards = a.cards.max(4);
        opts.luk_batch = a.luk_batch;
        opts.luk_ttl_s = a.luk_ttl_s;
        if let Some(url) = a.database_url {
            opts.store.url = Some(url);
            opts.store.schema = a.schema;
        }
        opts.keep = a.state.is_some();
        let files: Vec<PathBuf> =
            a.ports_file.iter().cloned().chain(a.state.as_ref().map(|d| d.join("ports.json"))).collect();
        let announce = |write: &dyn Fn(&std::path::Path) -> Result<()>| -> Result<()> {
            for f in &files {
                write(f).with_context(|| format!("writing {}", f.display()))?;
                tracing::info!(ports_file = %f.display(), "network up");
            }
            Ok(())
        };
        if a.nodes > 1 {
            opts.nodes = a.nodes;
            let program = std::env::current_exe().context("finding this program")?;
            let net = paynet::network::start_in_processes(opts, &program).await?;
            announce(&|f| net.write_ports_file(f))?;
            door::process::shutdown_signal().await;
            tracing::info!("shutting down");
            net.shutdown().await;
        } else {
            let net = paynet::network::start(opts).await?;
            announce(&|f| net.write_ports_file(f))?;
            door::process::shutdown_signal().await;
            tracing::info!("shutting down");
            net.shutdown().await;
        }
        drop(tmp);
        Ok(())
    })
}
