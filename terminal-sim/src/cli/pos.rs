//! `terminal-sim pos --ports-file F --device FILE --amount MINOR [...]`: a contactless POS
//! terminal. Taps the device — a wallet-sim phone file (the phone writes its ATC and limited-use
//! keys back into the file before the cryptogram leaves) or a card profile JSON (whose ATC this
//! command writes back) — through the kernel (PPSE, SELECT, GPO, READ RECORD, GENERATE AC) with
//! the terminal's risk management: an AAC is declined offline and nothing is sent. Otherwise the
//! 0100 (DE 22 `071`, DE 55 from the card and the terminal) goes to the ports file's acquirer
//! listener in its framing, the answer's tag 91 goes back to the card (EXTERNAL AUTHENTICATE), and
//! the receipt is printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use phone::Device;

use super::merchant::{self, MerchantArgs};
use crate::receipt::Receipt;
use crate::terminal::TerminalFile;
use emv::kernel::{self, TxData};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The device tapped: a wallet-sim phone file, or a card profile JSON (`wallet-sim
    /// export-card`).
    #[arg(long, value_name = "FILE")]
    pub device: PathBuf,
    #[command(flatten)]
    pub merchant: MerchantArgs,
}

pub async fn run(a: Args) -> Result<ExitCode> {
    let outcome = execute(&a).await;
    merchant::finish("pos", a.merchant.json, outcome)
}

/// A device file opened for one transaction: held locked (`FILE.lock` beside it) from reading
/// its counters to writing them back, so that two terminals tapping one phone file side by side
/// never give the same ATC twice.
pub struct OpenDevice {
    pub device: Device,
    _lock: std::fs::File,
}

/// Opens a device file, naming it and its kind of problem.
pub fn open_device(path: &Path) -> Result<OpenDevice> {
    if !path.is_file() {
        bail!("--device {}: no such file", path.display());
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .with_context(|| format!("--device {}: cannot lock {}", path.display(), lock_path.display()))?;
    let device = Device::open(path).map_err(|e| anyhow!("--device: {e}"))?;
    if device.profile().is_none() {
        bail!("--device {}: the phone has no enabled default card", path.display());
    }
    Ok(OpenDevice { device, _lock: lock })
}

/// Writes a card profile's state (its ATC moved on) back into its file; a phone saves itself.
pub fn save_card(device: &Device, path: &Path) -> Result<()> {
    if let Device::Card(c) = device {
        let text = serde_json::to_string_pretty(c.profile())?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("--device {}: cannot save the card's ATC", path.display()))?;
    }
    Ok(())
}

/// The tap, the authorization and the receipt.
pub async fn execute(a: &Args) -> Result<Receipt> {
    let m = &a.merchant;
    let terminal = m.terminal(TerminalFile::default())?;
    let mut open = open_device(&a.device)?;
    let device = &mut open.device;
    let txn = m.context(terminal)?;
    let tx = TxData {
        amount: m.amount,
        tx_type: 0x00,
        date: txn.moment.emv_date(),
        un: merchant::unpredictable_number()?,
    };
    let tapped = kernel::tap(device, &txn.terminal.kernel, &tx);
    save_card(device, &a.device)?;
    let tapped = tapped.map_err(|e| anyhow!("tapping {}: {e}", a.device.display()))?;
    let (mut r, online) = txn.chip_receipt(m.amount, &tapped, "contactless", "071");
    if !online {
        return Ok(r);
    }
    let order = txn.order(m.amount);
    let req =
        crate::checkout::contactless_request(&txn.target.spec, &tapped, &order, &txn.moment.rrn(txn.stan))
            .map_err(|e| anyhow!("building the 0100: {e}"))?;
    txn.authorize(&mut r, &req, m.timeout_ms, Some(device)).await?;
    Ok(r)
}
