//! `atm-sim` — the ATM from the command line (INTERFACES.md §6):
//!
//! ```text
//! atm-sim cash-advance --ports-file FILE (--card N | --device PHONE_FILE) --amount MINOR --pin PIN
//!         [--atm TID] [--fault none|jam|partial:MINOR|no-response] [--state DIR]
//!         [--currency NNN --country NNN] --json
//! ```
//!
//! One JSON object alone on stdout; the ATM's screen (cash to take, what the card is charged in
//! its own currency when the network converted, credit left) on stderr. `--currency` and
//! `--country` (added to INTERFACES.md §6) place the ATM: `--currency 901 --country 158` is a
//! Taiwanese ATM dispensing TWD (default 978 and 250). Exit
//! status 0 when the transaction ended as the ATM intended (a decline included), 2 on bad
//! arguments, 1 when the outcome could not be established (no switch, a card that cannot be
//! read, a reversal advice still unacknowledged).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use atm_sim::atm::{Atm, AtmConfig, AtmError, Fault};
use atm_sim::ports::{PhoneFile, card_profile};
use atm_sim::state::StateDir;
use atm_sim::{SwitchLink, random};
use clap::{Args, Parser, Subcommand};
use emv::card::EmvApplet;
use terminal_kit::ports::PortsFile;

#[derive(Parser)]
#[command(name = "atm-sim", version, about = "An ATM: contactless cash advance through the switch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One cash advance from a credit account with a tapped card or phone.
    CashAdvance(CashAdvanceArgs),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["card", "device"])))]
struct CashAdvanceArgs {
    /// The ports file of `paynet serve`.
    #[arg(long)]
    ports_file: PathBuf,
    /// Test card N of the ports file (from 0).
    #[arg(long)]
    card: Option<usize>,
    /// A phone file (docs/atm.md): a card profile as JSON.
    #[arg(long)]
    device: Option<PathBuf>,
    /// Amount in minor units.
    #[arg(long)]
    amount: u64,
    /// The cardholder's PIN.
    #[arg(long)]
    pin: String,
    /// The ATM (terminal ID; default: the first of the ports file's atm_terminals).
    #[arg(long)]
    atm: Option<String>,
    /// none, jam, partial:MINOR or no-response.
    #[arg(long, default_value = "none")]
    fault: String,
    /// The state folder (default: atm-sim under the system temporary directory).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Print the result as JSON (the only output form).
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the 0210.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// The currency the ATM dispenses, ISO 4217 numeric (DE 49, tag 5F2A); `--amount` is in it.
    #[arg(long, value_name = "NNN")]
    currency: Option<u16>,
    /// The ATM's country, ISO 3166 numeric (tag 9F1A).
    #[arg(long, value_name = "NNN")]
    country: Option<u16>,
}

/// A failure and its exit status.
struct Failure {
    status: u8,
    message: String,
}

fn bad_input(message: String) -> Failure {
    Failure { status: 2, message }
}

fn unknown(message: String) -> Failure {
    Failure { status: 1, message }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let status = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(status);
        }
    };
    let result = match cli.command {
        Command::CashAdvance(a) => cash_advance(a),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(f) => {
            eprintln!("atm-sim: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

fn cash_advance(a: CashAdvanceArgs) -> Result<u8, Failure> {
    let fault: Fault = a.fault.parse().map_err(|e| bad_input(format!("--fault: {e}")))?;
    let pin = crypto::pin::Pin::new(&a.pin).map_err(|e| bad_input(format!("--pin: {e}")))?;
    if a.amount == 0 {
        return Err(bad_input("--amount: must be above 0".into()));
    }
    let ports = PortsFile::load(&a.ports_file).map_err(|e| bad_input(format!("--ports-file: {e}")))?;
    let test_atm = match &a.atm {
        Some(tid) => ports.atm_terminals.iter().find(|t| &t.tid == tid),
        None => ports.atm_terminals.first(),
    }
    .ok_or_else(|| {
        bad_input(format!("--atm: {:?} is not in the ports file", a.atm.as_deref().unwrap_or("(first)")))
    })?
    .clone();
    let ipek = crypto::keys::TdesKey::from_hex("ipek", &test_atm.ipek)
        .map_err(|e| bad_input(format!("--ports-file: ATM {}: {e}", test_atm.tid)))?;
    let ksn = crypto::dukpt::TdesKsn::from_hex(&test_atm.ksn)
        .map_err(|e| bad_input(format!("--ports-file: ATM {}: {e}", test_atm.tid)))?;
    let root = a.state.clone().unwrap_or_else(StateDir::default_root);
    let dir = StateDir::open(&root).map_err(|e| unknown(format!("--state {}: {e}", root.display())))?;

    // The card: a test card of the ports file (its ATC from the state folder), a wallet-sim phone
    // file (the phone keeps its own ATCs and keys in it), or a plain card profile.
    let mut _device_lock: Option<atm_sim::state::Lock> = None;
    let mut device = match (a.card, &a.device) {
        (Some(n), None) => {
            let tc = ports
                .test_cards
                .get(n)
                .ok_or_else(|| {
                    bad_input(format!(
                        "--card: {n}: the ports file has {} test cards",
                        ports.test_cards.len()
                    ))
                })?
                .clone();
            // Reserve the next ATC: the card starts from the last one recorded (or, first time in
            // this folder, from a random point, away from other tools tapping the same card).
            let last = dir
                .with_card_atc(&tc.pan, |last| {
                    let last = last.unwrap_or_else(|| {
                        let mut r = [0u8; 2];
                        let _ = random(&mut r);
                        0x1000 + (u16::from_be_bytes(r) % 0x6000)
                    });
                    (last, Some(last.wrapping_add(1)))
                })
                .map_err(|e| unknown(format!("--state: {e}")))?;
            Tapped::Card(Box::new(EmvApplet::new(card_profile(&tc, last))))
        }
        (None, Some(path)) => {
            if !path.is_file() {
                return Err(bad_input(format!("--device: {}: no such phone file", path.display())));
            }
            // The same lock file `terminal-sim` takes: one tap at a time on one device.
            let lock_path = path.with_extension("lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .and_then(|f| f.lock().map(|_| f))
                .map_err(|e| unknown(format!("--device: lock {}: {e}", lock_path.display())))?;
            _device_lock = Some(atm_sim::state::Lock::from(lock));
            match phone::Device::open(path) {
                Ok(phone::Device::Phone(p)) => {
                    if p.default_card().is_none() {
                        return Err(bad_input(format!(
                            "--device: {}: the phone has no enabled card to tap",
                            path.display()
                        )));
                    }
                    Tapped::Phone(p)
                }
                _ => {
                    let pf = PhoneFile::read(path).map_err(|e| bad_input(format!("--device: {e}")))?;
                    let applet = EmvApplet::new(pf.profile.clone());
                    Tapped::ProfileFile(Box::new((applet, path.clone(), pf)))
                }
            }
        }
        _ => return Err(bad_input("give one of --card N or --device PHONE_FILE".into())),
    };

    let mut cfg = AtmConfig::new(&test_atm.tid);
    cfg.response_timeout = Duration::from_secs(a.timeout.max(1));
    if let Some(c) = a.currency {
        if codecs::currency::by_numeric(&format!("{c:03}")).is_none() {
            return Err(bad_input(format!("--currency: {c} is not an ISO 4217 numeric code")));
        }
        cfg.terminal.currency = c;
    }
    if let Some(c) = a.country {
        if c == 0 || c > 999 {
            return Err(bad_input(format!("--country: {c} is not an ISO 3166 numeric code")));
        }
        cfg.terminal.country = c;
    }
    // Waits here for the ATM's lock: one transaction at a time per ATM.
    let mut atm =
        Atm::open_tdes(&dir, cfg, &ipek, &ksn).map_err(|e| unknown(format!("ATM {}: {e}", test_atm.tid)))?;
    // An amount the notes cannot make is refused before anything is sent.
    let plan_check = match fault {
        Fault::Partial(m) if m == 0 || m >= a.amount => {
            Err(format!("--fault: partial:{m} must be above 0 and below the amount {}", a.amount))
        }
        Fault::Partial(m) => atm.cassettes.plan(m).map(|_| ()).map_err(|e| format!("--fault: {e}")),
        _ => Ok(()),
    };
    atm.cassettes.plan(a.amount).map_err(|e| bad_input(format!("--amount: {e}")))?;
    plan_check.map_err(bad_input)?;
    let nodes: Vec<_> = ports.endpoints("acquirer").into_iter().cloned().collect();
    let mut link = SwitchLink::connect_any(&nodes, Duration::from_secs(5))
        .map_err(|e| unknown(format!("switch {}:{}: {e}", ports.acquirer.host, ports.acquirer.port)))?;
    let card: &mut dyn emv::card::Contactless = match &mut device {
        Tapped::Card(c) => c.as_mut(),
        Tapped::ProfileFile(f) => &mut f.0,
        Tapped::Phone(p) => p.as_mut(),
    };
    let result = atm.cash_advance(&mut link, card, a.amount, &pin, fault);
    if let Tapped::ProfileFile(f) = device {
        let (applet, path, mut pf) = *f;
        // A card profile file keeps its ATC (and the limited-use keys it has left); a phone has
        // saved its own state before each answer left it.
        pf.write(&path, applet.profile()).map_err(|e| unknown(format!("--device: writing back: {e}")))?;
    }
    let out = match result {
        Ok(o) => o,
        Err(e @ (AtmError::Dispense(_) | AtmError::BadFault(_))) => return Err(bad_input(e.to_string())),
        Err(e) => return Err(unknown(e.to_string())),
    };
    // The screen.
    for line in out.screen(&atm.cfg.tid, atm.cfg.terminal.currency) {
        eprintln!("{line}");
    }
    let json = serde_json::to_string(&out).map_err(|e| unknown(e.to_string()))?;
    println!("{json}");
    Ok(if out.settled() { 0 } else { 1 })
}

/// What the ATM taps.
enum Tapped {
    /// A test card of the ports file.
    Card(Box<EmvApplet>),
    /// A plain card profile file (`wallet-sim export-card`), written back after the tap.
    ProfileFile(Box<(EmvApplet, PathBuf, PhoneFile)>),
    /// A wallet-sim phone: its default card.
    Phone(Box<phone::Phone>),
}
