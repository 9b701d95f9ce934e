//! `paynet node --config FILE --ready-file FILE`: one switch node from its configuration, as its own
//! process — how `serve --nodes N` runs each of its nodes, so that each can be killed alone. The
//! LMK comes from the environment variable the config names (`PAYNET_LMK`). The ready file (JSON:
//! the listeners', the admin endpoint's and the provisioning API's addresses, and the process ID)
//! is written once every listener accepts and the issuer links are signed on; the node runs until
//! SIGINT or SIGTERM — or, with `--stop-with-stdin`, until its standard input closes — then drains.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct NodeArgs {
    /// The node's configuration (switch.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where to write the node's addresses once it is ready.
    #[arg(long, value_name = "FILE")]
    ready_file: PathBuf,
    /// Also stop (draining) when standard input reaches its end: `serve` holds the other end of
    /// the pipe, so the node never outlives it, even when serve is killed with SIGKILL.
    #[arg(long)]
    stop_with_stdin: bool,
}

pub fn run(a: NodeArgs) -> Result<()> {
    door::process::init_logging("info");
    let text =
        std::fs::read_to_string(&a.config).with_context(|| format!("reading {}", a.config.display()))?;
    let cfg = switch::config::SwitchConfig::from_toml(&text)?;
    let base = a.config.parent().map(PathBuf::from).unwrap_or_default();
    let scheme = if cfg.token_service.door.tls.is_some() { "https" } else { "http" };
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let ks = switch::keys::load_keystore(&cfg.keys, &base)?;
        let (parts, _hsm) = switch::node::NodeParts::production(&cfg, ks, base)?;
        let node = switch::node::start(cfg, parts).await?;
        paynet::network::until_signed_on(&node).await?;
        let listeners: serde_json::Map<String, serde_json::Value> =
            node.listeners.iter().map(|(n, addr)| (n.clone(), addr.to_string().into())).collect();
        let mut doc = serde_json::json!({
            "pid": std::process::id(),
            "listeners": listeners,
            "admin": node.admin.to_string(),
        });
        if let Some(api) = node.provisioning_api {
            doc["provisioning_api"] = format!("{scheme}://{api}").into();
        }
        paynet::private_file::write_atomic(&a.ready_file, doc.to_string().as_bytes())?;
        tokio::select! {
            _ = door::process::shutdown_signal() => {}
            _ = stdin_closed(a.stop_with_stdin) => tracing::info!("standard input closed: stopping"),
        }
        node.shutdown().await;
        Ok(())
    })
}

/// Resolves when standard input reaches its end (read on a thread of its own: a pipe read
/// blocks); never when `watch` is off.
async fn stdin_closed(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new().name("stdin-watch".into()).spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    if spawned.is_err() {
        tracing::warn!("cannot watch standard input: the node stops on SIGTERM or SIGINT only");
        return std::future::pending().await;
    }
    let _ = rx.await;
}
