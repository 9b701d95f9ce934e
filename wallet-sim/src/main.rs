//! `wallet-sim`: drive a phone through the operating models and show where it stands.
//!
//! ```text
//! wallet-sim provision --model issuer-se|tsm-se-pan|tsm-se-token|hce|wallet --ports-file F --card N --phone PHONE
//! wallet-sim status --phone PHONE [--json]
//! wallet-sim replenish --ports-file F --phone PHONE [--card ID]
//! wallet-sim default --phone PHONE --card ID
//! wallet-sim export-card --phone PHONE [--card ID] --out CARD.json
//! ```
//!
//! The providers are those the ports file lists under `wallet_providers` (a running `paynet
//! serve`); without that entry the token flows (tsm-se-token, hce, wallet) run against providers
//! started inside this process for the one command, and the real-PAN flows are refused (they need
//! the issuer's perso system). Each step prints as `party → party: what`, PANs masked.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;
use wallet_sim::flows::{self, CardholderCard, Io, Model, Step};
use wallet_sim::phone::{Phone, export_card};
use wallet_sim::providers::{self, ProviderAddrs, ProvidersConfig, RequestorCredential};

#[derive(Parser)]
#[command(name = "wallet-sim", about = "A phone and its providers in the four mobile-card operating models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Puts test card N of the ports file into the phone by one operating model.
    Provision {
        #[arg(long)]
        model: Model,
        #[arg(long)]
        ports_file: PathBuf,
        #[arg(long)]
        card: usize,
        #[arg(long)]
        phone: PathBuf,
        /// The one-time password, when the issuer asks for one (otherwise read from stdin).
        #[arg(long)]
        otp: Option<String>,
    },
    /// Shows the phone's secure elements, cards and keys left.
    Status {
        #[arg(long)]
        phone: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Gets the next batch of limited-use keys for an HCE card (the default card if none given).
    Replenish {
        #[arg(long)]
        ports_file: PathBuf,
        #[arg(long)]
        phone: PathBuf,
        #[arg(long)]
        card: Option<String>,
    },
    /// Makes an enabled card the one a tap uses.
    Default {
        #[arg(long)]
        phone: PathBuf,
        #[arg(long)]
        card: String,
    },
    /// Writes a card (the default card if none given) as a plain card profile JSON.
    ExportCard {
        #[arg(long)]
        phone: PathBuf,
        #[arg(long)]
        card: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wallet-sim: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("wallet-sim: {e:#}");
        std::process::exit(1);
    }
}

fn read_ports(path: &PathBuf) -> Result<Value> {
    let t = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&t).with_context(|| format!("{} is not a ports file", path.display()))
}

/// The providers the ports file names, or ones started here for this command.
async fn providers_for(ports: &Value) -> Result<(ProviderAddrs, Option<providers::Running>)> {
    if let Some(p) = ports.get("wallet_providers") {
        return Ok((serde_json::from_value(p.clone()).context("wallet_providers")?, None));
    }
    let api = ports
        .get("provisioning_api")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("ports file without provisioning_api"))?;
    let requestors: Vec<RequestorCredential> =
        serde_json::from_value(ports.get("token_requestors").cloned().unwrap_or(Value::Array(vec![])))
            .context("token_requestors")?;
    let running =
        providers::start(ProvidersConfig { token_api: api.to_string(), requestors, issuer_perso: None })
            .await?;
    Ok((running.addrs.clone(), Some(running)))
}

fn print_step(s: &Step) {
    println!("  {s}");
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Provision { model, ports_file, card, phone, otp } => {
            let ports = read_ports(&ports_file)?;
            let tc = ports
                .get("test_cards")
                .and_then(|c| c.get(card))
                .ok_or_else(|| anyhow!("the ports file has no test card {card}"))?;
            let holder = CardholderCard {
                pan: tc.get("pan").and_then(Value::as_str).unwrap_or("").to_string(),
                expiry: tc.get("expiry").and_then(Value::as_str).unwrap_or("").to_string(),
            };
            let (addrs, running) = providers_for(&ports).await?;
            if running.is_some() && matches!(model, Model::IssuerSe | Model::TsmSePan) {
                bail!(
                    "model {model} needs the issuer's perso system: run against a `paynet serve` ports file that lists wallet_providers"
                );
            }
            let mut p = Phone::open_or_create(&phone)?;
            println!("provision --model {model}: phone {}", p.device_id());
            let mut log = |s: &Step| print_step(s);
            let mut given = otp;
            let mut ask = move || -> Result<String> {
                if let Some(o) = given.take() {
                    return Ok(o);
                }
                eprint!("one-time password sent to the cardholder: ");
                std::io::stderr().flush().ok();
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                Ok(line.trim().to_string())
            };
            let r =
                flows::provision(model, &mut p, &addrs, &holder, &mut Io { log: &mut log, otp: &mut ask })
                    .await;
            if let Some(r) = running {
                r.shutdown().await;
            }
            let id = r?;
            println!(
                "card {id} provisioned and enabled{}",
                if p.default_card().as_deref() == Some(id.as_str()) { " (default card)" } else { "" }
            );
            Ok(())
        }
        Command::Status { phone, json } => {
            let p = Phone::open(&phone)?;
            let cards = p.cards();
            if json {
                let ses: Vec<Value> = p
                    .state()
                    .secure_elements
                    .iter()
                    .map(|s| {
                        serde_json::json!({"se_id": s.se_id, "owner": s.owner,
                        "domains": s.domains.iter().map(|d| d.aid.clone()).collect::<Vec<_>>()})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"device_id": p.device_id(), "secure_elements": ses, "cards": cards})
                );
                return Ok(());
            }
            println!("phone {}", p.device_id());
            for s in &p.state().secure_elements {
                let d: Vec<String> = s.domains.iter().map(|d| d.aid.clone()).collect();
                println!("  secure element {} ({}): domains {}", s.se_id, s.owner, d.join(", "));
            }
            println!("  OS secure area: {} token card(s)", p.state().hce.cards.len());
            if cards.is_empty() {
                println!("  no cards");
            }
            for c in cards {
                let luks = c.luks_left.map(|n| format!(", {n} limited-use keys left")).unwrap_or_default();
                println!(
                    "  {}{} [{}] {} {} — {}, ATC {}{luks}",
                    if c.default { "* " } else { "  " },
                    c.id,
                    c.model,
                    c.pan,
                    c.state,
                    c.location,
                    c.atc
                );
            }
            Ok(())
        }
        Command::Replenish { ports_file, phone, card } => {
            let ports = read_ports(&ports_file)?;
            let (addrs, running) = providers_for(&ports).await?;
            if running.is_some() {
                bail!(
                    "replenishing needs the cloud platform that provisioned the card: the ports file lists no wallet_providers"
                );
            }
            let mut p = Phone::open(&phone)?;
            let id = match card {
                Some(c) => c,
                None => p.default_card().ok_or_else(|| anyhow!("no default card"))?,
            };
            let mut log = |s: &Step| print_step(s);
            let mut no_otp = || -> Result<String> { bail!("no OTP in a replenishment") };
            let n =
                flows::replenish(&mut p, &addrs, &id, &mut Io { log: &mut log, otp: &mut no_otp }).await?;
            println!("{id}: {n} limited-use keys");
            Ok(())
        }
        Command::Default { phone, card } => {
            let mut p = Phone::open(&phone)?;
            p.set_default(&card)?;
            println!("default card: {card}");
            Ok(())
        }
        Command::ExportCard { phone, card, out } => {
            let p = Phone::open(&phone)?;
            let json = export_card(&p, card.as_deref())?;
            let tmp = out.with_extension("tmp");
            std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
            println!("card written to {}", out.display());
            Ok(())
        }
    }
}
