//! `paynet node --config FILE --ready-file FILE`: one switch node from its configuration, as its own
//! process — how `serve --nodes N` runs the nodes after the first, so that each can be killed
//! alone. The LMK comes from the environment variable the config names (`PAYNET_LMK`). The ready
//! file (JSON: the listeners' and the admin endpoint's addresses, and the process ID) is written
//! once every listener accepts and the issuer links are signed on; the node runs until SIGINT or
//! SIGTERM, then drains.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;

#[derive(Args)]
pub struct NodeArgs {
    /// The node's configuration (switch.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where to write the node's addresses once it is ready.
    #[arg(long, value_name = "FILE")]
    ready_file: PathBuf,
}

pub fn run(a: NodeArgs) -> Result<()> {
    door::process::init_logging("info");
    let text =
        std::fs::read_to_string(&a.config).with_context(|| format!("reading {}", a.config.display()))?;
    let cfg = switch::config::SwitchConfig::from_toml(&text)?;
    let base = a.config.parent().map(PathBuf::from).unwrap_or_default();
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let ks = switch::keys::load_keystore(&cfg.keys, &base)?;
        let (parts, _hsm) = switch::node::NodeParts::production(&cfg, ks, base)?;
        let node = switch::node::start(cfg, parts).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !node.engine.issuers.values().all(|h| h.link.is_up()) {
            if tokio::time::Instant::now() > deadline {
                return Err(anyhow!("the node did not sign on to its issuers in 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let listeners: serde_json::Map<String, serde_json::Value> =
            node.listeners.iter().map(|(n, addr)| (n.clone(), addr.to_string().into())).collect();
        let doc = serde_json::json!({
            "pid": std::process::id(),
            "listeners": listeners,
            "admin": node.admin.to_string(),
        });
        paynet::private_file::write_atomic(&a.ready_file, doc.to_string().as_bytes())?;
        door::process::shutdown_signal().await;
        node.shutdown().await;
        Ok(())
    })
}
