//! `terminal-sim checkout --ports-file F (--device PHONE | --pan-from-card N | --pan P --expiry
//! YYMM) [--cvv2 NNN | --cvv2-from-card N] --amount MINOR [...]`: a merchant's online checkout.
//!
//! * In-app with a phone: the phone's card application makes an online cryptogram over the order
//!   ([`phone::Phone::online_cryptogram`]); the gateway sends the token and DE 55 with
//!   DE 22 `100` and hands the answer's ARPC back to the phone.
//! * Card not present: a key-entered PAN, expiry and CVV2 (DE 22 `810`, CVV2 in DE 48
//!   subelement 92); the issuer declines a wrong or missing CVV2 with `N7`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use emv::card::mask;
use phone::{Device, OnlineTx};

use super::merchant::{self, MerchantArgs, Txn, usage};
use super::pos::{open_device, save_card};
use crate::checkout::{in_app_request, key_entered_request};
use crate::receipt::Receipt;
use crate::terminal::TerminalFile;
use emv::kernel::{self, Tapped, TxData};

/// No `Debug`: a key-entered PAN and CVV2 are never printed.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// In-app: the wallet-sim phone file whose default card pays (a card profile JSON works too).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pan", "pan_from_card", "expiry", "cvv2", "cvv2_from_card"])]
    pub device: Option<PathBuf>,
    /// Card not present: the key-entered PAN (test cards only).
    #[arg(long, value_name = "DIGITS", conflicts_with = "pan_from_card", requires = "expiry")]
    pub pan: Option<String>,
    /// Card not present: the PAN and expiry of test card N of the ports file (from 0).
    #[arg(long, value_name = "N")]
    pub pan_from_card: Option<usize>,
    /// The expiry typed with --pan, YYMM.
    #[arg(long, value_name = "YYMM")]
    pub expiry: Option<String>,
    /// The CVV2 typed, 3 or 4 digits.
    #[arg(long, value_name = "NNN", conflicts_with = "cvv2_from_card")]
    pub cvv2: Option<String>,
    /// The CVV2 printed on test card N of the ports file.
    #[arg(long, value_name = "N")]
    pub cvv2_from_card: Option<usize>,
    #[command(flatten)]
    pub merchant: MerchantArgs,
}

/// The embedded defaults of an online shop's gateway terminal.
pub fn shop_defaults() -> TerminalFile {
    TerminalFile {
        name: "PAYNET TEST SHOP (online)".into(),
        tid: "WEB00001".into(),
        mid: "SHOP00000000001".into(),
        mcc: "5999".into(),
        ..TerminalFile::default()
    }
}

pub async fn run(a: Args) -> Result<ExitCode> {
    let outcome = execute(&a).await;
    merchant::finish("checkout", a.merchant.json, outcome)
}

fn digits(arg: &str, v: &str, lens: std::ops::RangeInclusive<usize>) -> Result<()> {
    if !lens.contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage(format!(
            "{arg}: expected {} to {} digits, found {} characters",
            lens.start(),
            lens.end(),
            v.len()
        )));
    }
    Ok(())
}

/// A test card's field from the ports file.
fn card_field(txn: &Txn, n: usize, field: &str, arg: &str) -> Result<String> {
    let cards = txn.ports_json.get("test_cards").and_then(|c| c.as_array()).map(Vec::len).unwrap_or(0);
    let card = txn
        .ports_json
        .get("test_cards")
        .and_then(|c| c.get(n))
        .ok_or_else(|| anyhow!("{arg} {n}: the ports file has {cards} test cards"))?;
    card.get(field)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{arg} {n}: the ports file's test card has no {field}"))
}

pub async fn execute(a: &Args) -> Result<Receipt> {
    let m = &a.merchant;
    let terminal = m.terminal(shop_defaults())?;
    if let Some(path) = &a.device {
        let mut open = open_device(path)?;
        let txn = m.context(terminal)?;
        return in_app(a, &txn, &mut open.device, path).await;
    }
    // Card not present: check what was typed before anything is sent.
    if a.pan.is_none() && a.pan_from_card.is_none() {
        return Err(usage("give --device (in-app), or --pan/--pan-from-card (card not present)"));
    }
    if a.cvv2.is_none() && a.cvv2_from_card.is_none() {
        return Err(usage("card not present needs --cvv2 or --cvv2-from-card"));
    }
    if let Some(p) = &a.pan {
        digits("--pan", p, 12..=19)?;
    }
    if let Some(e) = &a.expiry {
        digits("--expiry", e, 4..=4)?;
        if !matches!(e.get(2..4).and_then(|mm| mm.parse::<u8>().ok()), Some(1..=12)) {
            return Err(usage("--expiry: expected YYMM with a month 01 to 12"));
        }
    }
    if let Some(c) = &a.cvv2 {
        digits("--cvv2", c, 3..=4)?;
    }
    let txn = m.context(terminal)?;
    let (pan, expiry) = match (&a.pan, a.pan_from_card) {
        (Some(p), _) => (p.clone(), a.expiry.clone().unwrap_or_default()),
        (None, Some(n)) => (
            card_field(&txn, n, "pan", "--pan-from-card")?,
            match &a.expiry {
                Some(e) => e.clone(),
                None => card_field(&txn, n, "expiry", "--pan-from-card")?,
            },
        ),
        (None, None) => bail!("no PAN"),
    };
    let cvv2 = match (&a.cvv2, a.cvv2_from_card) {
        (Some(c), _) => c.clone(),
        (None, Some(n)) => card_field(&txn, n, "cvv2", "--cvv2-from-card")?,
        (None, None) => bail!("no CVV2"),
    };
    let order = txn.order(m.amount);
    let req = key_entered_request(&txn.target.spec, &pan, &expiry, &cvv2, &order)
        .map_err(|e| anyhow!("building the 0100: {e}"))?;
    let mut r = txn.receipt(m.amount, mask(&pan), "key-entered", "810");
    txn.authorize(&mut r, &req, m.timeout_ms, None).await?;
    Ok(r)
}

/// In-app: the phone's online cryptogram over the order, the token's 0100, the ARPC back.
async fn in_app(a: &Args, txn: &Txn, device: &mut Device, path: &std::path::Path) -> Result<Receipt> {
    let m = &a.merchant;
    let k = &txn.terminal.kernel;
    let un = merchant::unpredictable_number()?;
    let tapped = match device {
        Device::Phone(phone) => {
            let c = phone
                .online_cryptogram(&OnlineTx {
                    amount: m.amount,
                    country: merchant::bcd2(k.country),
                    currency: merchant::bcd2(k.currency),
                    date: txn.moment.emv_date(),
                    tx_type: 0x00,
                    un,
                })
                .map_err(|e| anyhow!("the phone's online cryptogram ({}): {e}", path.display()))?;
            Tapped::from(c)
        }
        // A card profile: its application answers the same dialogue a terminal runs.
        Device::Card(_) => {
            let tx = TxData { amount: m.amount, tx_type: 0x00, date: txn.moment.emv_date(), un };
            let t = kernel::tap(device, k, &tx);
            save_card(device, path)?;
            t.map_err(|e| anyhow!("the card's online cryptogram ({}): {e}", path.display()))?
        }
    };
    let (mut r, online) = txn.chip_receipt(m.amount, &tapped, "in-app", "100");
    if !online {
        return Ok(r);
    }
    let order = txn.order(m.amount);
    let req =
        in_app_request(&txn.target.spec, &tapped, &order).map_err(|e| anyhow!("building the 0100: {e}"))?;
    txn.authorize(&mut r, &req, m.timeout_ms, Some(device)).await?;
    Ok(r)
}
