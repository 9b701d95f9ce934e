//! The `wallet-sim` command line: drive a phone through the operating models and show where it
//! stands. `src/main.rs` runs [`run`]; tests run it in process.
//!
//! ```text
//! wallet-sim provision --model issuer-se|tsm-se-pan|tsm-se-token|hce|hce-pan|wallet --ports-file F --card N --phone PHONE [--ca-file PEM]
//! wallet-sim status --phone PHONE [--json]
//! wallet-sim replenish --ports-file F --phone PHONE [--card ID] [--ca-file PEM]
//! wallet-sim default --phone PHONE --card ID
//! wallet-sim export-card --phone PHONE [--card ID] --out CARD.json
//! ```
//!
//! The providers are those the ports file lists under `wallet_providers` (a running `paynet
//! serve`); without that entry the token flows (tsm-se-token, hce, wallet) run against providers
//! started inside this process for the one command, and the real-PAN flows (issuer-se, tsm-se-pan,
//! hce-pan) are refused (they need the issuer's perso system). Each step prints as
//! `party → party: what`, PANs masked.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::Error;
use crate::flows::{self, CardholderCard, Io, Model, Step};
use crate::providers::{self, ProviderAddrs, ProvidersConfig, RequestorCredential};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use phone::{Phone, export_card};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "wallet-sim", about = "A phone and its providers in the four mobile-card operating models")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Puts test card N of the ports file into the phone by one operating model: issuer-se,
    /// tsm-se-pan, tsm-se-token, hce (token), hce-pan (real PAN on limited-use keys), wallet.
    Provision {
        #[arg(long)]
        model: Model,
        #[arg(long)]
        ports_file: PathBuf,
        #[arg(long)]
        card: usize,
        #[arg(long)]
        phone: PathBuf,
        /// The one-time password, when the issuer asks for one (otherwise the text message the issuer
        /// sent, read from the ports file's `issuer_admin`, or else read from stdin).
        #[arg(long)]
        otp: Option<String>,
        /// A PEM file of the CA(s) that sign the providers' and the token service's certificates,
        /// when they are served over TLS (`https://` in the ports file).
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
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
        /// As for `provision`: the CA(s) of providers served over TLS.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
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

fn read_ports(path: &PathBuf) -> Result<Value> {
    let t = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&t).with_context(|| format!("{} is not a ports file", path.display()))
}

/// The newest one-time password the issuer texted for `masked_pan` (its admin port's
/// `GET /v1/sms`, a test network only, with the admin port's bearer credential).
fn texted_otp(admin: &str, token: &str, masked_pan: &str) -> Result<Option<String>> {
    use std::io::Read;
    let host = admin.strip_prefix("http://").unwrap_or(admin).trim_end_matches('/');
    let mut s =
        std::net::TcpStream::connect(host).with_context(|| format!("the issuer's admin port {host}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET /v1/sms HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("the issuer's admin port: no HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("the issuer's admin port answered {status} to GET /v1/sms");
    }
    let texts: Vec<Value> = serde_json::from_str(body.trim()).context("the issuer's sms answer")?;
    Ok(texts
        .iter()
        .rev()
        .find(|t| t.get("card").and_then(Value::as_str) == Some(masked_pan))
        .and_then(|t| t.get("otp").and_then(Value::as_str))
        .map(str::to_string))
}

/// Trusts the CAs of `--ca-file` for the `https://` calls of this command.
fn trust(ca_file: Option<&std::path::Path>) -> Result<()> {
    if let Some(f) = ca_file {
        providers::http::trust(f).with_context(|| format!("--ca-file {}", f.display()))?;
    }
    Ok(())
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
    let running = providers::start(ProvidersConfig {
        token_api: api.to_string(),
        requestors,
        issuer_perso: None,
        kept: None,
        doors: providers::ProviderDoors::default(),
    })
    .await?;
    Ok((running.addrs.clone(), Some(running)))
}

/// Runs one command, writing what it shows to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<()> {
    match cli.command {
        Command::Provision { model, ports_file, card, phone, otp, ca_file } => {
            trust(ca_file.as_deref())?;
            let ports = read_ports(&ports_file)?;
            let tc = ports
                .get("test_cards")
                .and_then(|c| c.get(card))
                .ok_or_else(|| anyhow!("the ports file has no test card {card}"))?;
            let holder = CardholderCard {
                pan: tc.get("pan").and_then(Value::as_str).unwrap_or("").to_string(),
                expiry: tc.get("expiry").and_then(Value::as_str).unwrap_or("").to_string(),
                cvv2: tc.get("cvv2").and_then(Value::as_str).map(str::to_string),
            };
            let (addrs, running) = providers_for(&ports).await?;
            if running.is_some() && matches!(model, Model::IssuerSe | Model::TsmSePan | Model::HcePan) {
                bail!(
                    "model {model} needs the issuer's perso system: run against a `paynet serve` ports file that lists wallet_providers"
                );
            }
            let mut p = Phone::open_or_create(&phone)?;
            writeln!(out, "provision --model {model}: phone {}", p.device_id())?;
            let mut log = |s: &Step| {
                let _ = writeln!(out, "  {s}");
            };
            let mut given = otp;
            let issuer_admin = ports.get("issuer_admin").and_then(Value::as_str).map(str::to_string);
            let admin_token =
                ports.get("issuer_admin_token").and_then(Value::as_str).unwrap_or_default().to_string();
            let masked = emv::mask(&holder.pan);
            let mut ask = move || -> crate::Result<String> {
                if let Some(o) = given.take() {
                    return Ok(o);
                }
                // The simulated cardholder's phone receives the issuer's text message.
                if let Some(admin) = &issuer_admin
                    && let Some(code) =
                        texted_otp(admin, &admin_token, &masked).map_err(|e| Error::Otp(format!("{e:#}")))?
                {
                    return Ok(code);
                }
                eprint!("one-time password sent to the cardholder: ");
                std::io::stderr().flush().ok();
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).map_err(|e| Error::Otp(e.to_string()))?;
                Ok(line.trim().to_string())
            };
            let r =
                flows::provision(model, &mut p, &addrs, &holder, &mut Io { log: &mut log, otp: &mut ask })
                    .await;
            if let Some(r) = running {
                r.shutdown().await;
            }
            let id = r?;
            writeln!(
                out,
                "card {id} provisioned and enabled{}",
                if p.default_card().as_deref() == Some(id.as_str()) { " (default card)" } else { "" }
            )?;
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
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"device_id": p.device_id(), "secure_elements": ses, "cards": cards})
                )?;
                return Ok(());
            }
            writeln!(out, "phone {}", p.device_id())?;
            for s in &p.state().secure_elements {
                let d: Vec<String> = s.domains.iter().map(|d| d.aid.clone()).collect();
                writeln!(out, "  secure element {} ({}): domains {}", s.se_id, s.owner, d.join(", "))?;
            }
            writeln!(out, "  OS secure area: {} card(s)", p.state().hce.cards.len())?;
            if cards.is_empty() {
                writeln!(out, "  no cards")?;
            }
            for c in cards {
                let luks = c.luks_left.map(|n| format!(", {n} limited-use keys left")).unwrap_or_default();
                writeln!(
                    out,
                    "  {}{} [{}] {} {} — {}, ATC {}{luks}",
                    if c.default { "* " } else { "  " },
                    c.id,
                    c.model,
                    c.pan,
                    c.state,
                    c.location,
                    c.atc
                )?;
            }
            Ok(())
        }
        Command::Replenish { ports_file, phone, card, ca_file } => {
            trust(ca_file.as_deref())?;
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
            let mut log = |s: &Step| {
                let _ = writeln!(out, "  {s}");
            };
            let mut no_otp =
                || -> crate::Result<String> { Err(Error::Otp("none in a replenishment".into())) };
            let n =
                flows::replenish(&mut p, &addrs, &id, &mut Io { log: &mut log, otp: &mut no_otp }).await?;
            writeln!(out, "{id}: {n} limited-use keys")?;
            Ok(())
        }
        Command::Default { phone, card } => {
            let mut p = Phone::open(&phone)?;
            p.set_default(&card)?;
            writeln!(out, "default card: {card}")?;
            Ok(())
        }
        Command::ExportCard { phone, card, out: path } => {
            let p = Phone::open(&phone)?;
            let json = export_card(&p, card.as_deref())?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            writeln!(out, "card written to {}", path.display())?;
            Ok(())
        }
    }
}
