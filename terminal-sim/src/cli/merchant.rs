//! What `terminal-sim pos` and `terminal-sim checkout` share: the merchant's arguments (ports
//! file, amount, terminal settings over the configuration file over the embedded defaults, STAN),
//! the one transaction's context (acquirer target, STAN, moment), sending and answering, and the
//! receipt with the exit status — 0 approved, 1 declined or failed (one line naming what went
//! wrong), 2 bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use codecs::iso8583::Message;

use crate::checkout::Order;
use crate::link;
use crate::load::Target;
use crate::ports::PortsFile;
use crate::receipt::{Receipt, response_meaning};
use crate::terminal::{self, Moment, Terminal, TerminalFile};

/// A bad argument (exit status 2): which argument and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Returns a [`Usage`] error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

#[derive(clap::Args, Debug, Clone)]
pub struct MerchantArgs {
    /// The ports file of a running network (`paynet serve --ports-file`, INTERFACES.md §5).
    #[arg(long, value_name = "FILE")]
    pub ports_file: PathBuf,
    /// Which listener of the ports file: `acquirer` (network spec, binary framing) or
    /// `acquirer_ascii`.
    #[arg(long, default_value = "acquirer")]
    pub endpoint: String,
    /// The amount in minor units of the currency (1250 EUR = 12.50).
    #[arg(long, value_name = "MINOR")]
    pub amount: u64,
    /// Transaction currency, ISO 4217 numeric (default 978, or the config file's).
    #[arg(long, value_name = "NNN")]
    pub currency: Option<u16>,
    /// Terminal ID (DE 41), up to 8 characters.
    #[arg(long)]
    pub tid: Option<String>,
    /// Merchant ID (DE 42), up to 15 characters.
    #[arg(long)]
    pub mid: Option<String>,
    /// Merchant category code (DE 18), 4 digits.
    #[arg(long)]
    pub mcc: Option<String>,
    /// Terminal country, ISO 3166 numeric (tag 9F1A).
    #[arg(long, value_name = "NNN")]
    pub country: Option<u16>,
    /// Floor limit in minor units: above it the TVR says so, and a denial TAC on that bit
    /// declines offline.
    #[arg(long, value_name = "MINOR")]
    pub floor_limit: Option<u64>,
    /// Terminal configuration (TOML: name, tid, mid, mcc, country, currency, floor_limit, ttq,
    /// tac_denial, tac_online, tac_default, tpdu); the command line overrides it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The STAN to use (1-999999) instead of the terminal's counter in the state folder.
    #[arg(long, value_name = "N")]
    pub stan: Option<u32>,
    /// Where the terminal keeps its STAN counter (default: terminal-sim under the system
    /// temporary folder).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// How long to wait for the answer.
    #[arg(long, default_value_t = 15_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Print the receipt as one JSON object (with the request and answer, masked).
    #[arg(long)]
    pub json: bool,
}

/// One transaction's context.
pub struct Txn {
    pub terminal: Terminal,
    pub ports: PortsFile,
    /// The ports file as JSON (for what [`PortsFile`] does not type, e.g. the cards' CVV2).
    pub ports_json: serde_json::Value,
    pub target: Target,
    pub stan: u32,
    pub moment: Moment,
}

impl MerchantArgs {
    /// The terminal settings: `defaults`, then the config file, then the command line.
    pub fn terminal(&self, defaults: TerminalFile) -> Result<Terminal> {
        let mut f = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--config {}: cannot read it", path.display()))?;
                let parsed = TerminalFile::parse(&text)
                    .map_err(|e| usage(format!("--config {}: {e}", path.display())))?;
                TerminalFile {
                    name: if parsed.name.is_empty() { defaults.name } else { parsed.name.clone() },
                    ..parsed
                }
            }
            None => defaults,
        };
        if let Some(v) = &self.tid {
            f.tid = v.clone();
        }
        if let Some(v) = &self.mid {
            f.mid = v.clone();
        }
        if let Some(v) = &self.mcc {
            f.mcc = v.clone();
        }
        if let Some(v) = self.country {
            f.country = v;
        }
        if let Some(v) = self.currency {
            f.currency = v;
        }
        if let Some(v) = self.floor_limit {
            f.floor_limit = v;
        }
        if self.amount == 0 || self.amount > 999_999_999_999 {
            return Err(usage(format!("--amount {}: expected 1 to 999999999999 minor units", self.amount)));
        }
        if let Some(s) = self.stan
            && !(1..=999_999).contains(&s)
        {
            return Err(usage(format!("--stan {s}: expected 1 to 999999")));
        }
        if !matches!(self.endpoint.as_str(), "acquirer" | "acquirer_ascii" | "acquirer-ascii") {
            return Err(usage(format!(
                "--endpoint {:?}: expected acquirer or acquirer_ascii",
                self.endpoint
            )));
        }
        let given = |key: &str| match key {
            "tid" => self.tid.is_some(),
            "mid" => self.mid.is_some(),
            "mcc" => self.mcc.is_some(),
            "country" => self.country.is_some(),
            "currency" => self.currency.is_some(),
            "floor_limit" => self.floor_limit.is_some(),
            _ => false,
        };
        f.validate().map_err(|problems| {
            // Name the command-line argument when the setting came from it, else the file.
            let named: Vec<String> = problems
                .iter()
                .map(|p| {
                    let key = p.split(':').next().unwrap_or_default();
                    match &self.config {
                        _ if given(key) => format!("--{}{}", key.replace('_', "-"), &p[key.len()..]),
                        Some(c) => format!("--config {}: {p}", c.display()),
                        None => p.clone(),
                    }
                })
                .collect();
            usage(named.join("; "))
        })
    }

    /// Reads the ports file, picks the listener, takes the STAN and the moment.
    pub fn context(&self, terminal: Terminal) -> Result<Txn> {
        let text = std::fs::read_to_string(&self.ports_file)
            .with_context(|| format!("--ports-file {}: cannot read it", self.ports_file.display()))?;
        let ports =
            PortsFile::parse(&text).with_context(|| format!("--ports-file {}", self.ports_file.display()))?;
        let ports_json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("--ports-file {}: not JSON", self.ports_file.display()))?;
        let ep = match self.endpoint.as_str() {
            "acquirer" => &ports.acquirer,
            _ => &ports.acquirer_ascii,
        };
        let target = ep
            .target()
            .with_context(|| format!("--ports-file {}: {}", self.ports_file.display(), self.endpoint))?;
        let stan = match self.stan {
            Some(s) => s,
            None => {
                let dir = self.state.clone().unwrap_or_else(terminal::default_state_dir);
                terminal::next_stan(&dir, &terminal.tid)
                    .with_context(|| format!("the STAN counter in {}", dir.display()))?
            }
        };
        Ok(Txn { terminal, ports, ports_json, target, stan, moment: Moment::now() })
    }
}

impl Txn {
    /// The order the messages describe.
    pub fn order(&self, amount: u64) -> Order {
        Order {
            stan: self.stan,
            amount,
            currency: self.terminal.currency.numeric,
            tid: self.terminal.tid.clone(),
            mid: self.terminal.mid.clone(),
            mcc: self.terminal.mcc.clone(),
            transmitted: self.moment.transmitted(),
        }
    }

    /// Sends `req` over the acquirer link and waits for its answer.
    pub async fn send(&self, req: &Message, timeout_ms: u64) -> Result<Message> {
        link::exchange(&self.target, self.terminal.tpdu, req, Duration::from_millis(timeout_ms))
            .await
            .map_err(|e| anyhow!("{e}"))
    }

    /// A receipt for this transaction; `approved` and the rest are filled in by the caller.
    pub fn receipt(&self, amount: u64, pan_masked: String, entry_mode: &'static str, de22: &str) -> Receipt {
        let c = self.terminal.currency;
        Receipt {
            result: "DECLINED",
            approved: false,
            merchant_name: self.terminal.name.clone(),
            mid: self.terminal.mid.clone(),
            tid: self.terminal.tid.clone(),
            mcc: self.terminal.mcc.clone(),
            date_time: self.moment.text(),
            pan: pan_masked,
            entry_mode,
            pos_entry_mode: de22.to_string(),
            amount_minor: amount,
            currency: format!("{:03}", c.numeric),
            currency_alpha: c.alpha,
            amount: c.format(amount),
            stan: format!("{:06}", self.stan),
            rrn: String::new(),
            atc: None,
            cryptogram: None,
            sent: false,
            response_code: String::new(),
            response_meaning: "",
            auth_code: None,
            arpc_verified: None,
            note: None,
            request: None,
            response: None,
        }
    }
}

/// Fills the receipt from the request and its answer: response code and meaning, auth code, RRN,
/// and the masked JSON forms. `approved` is the network's 00 and, where a card took part, the
/// card's acceptance of the issuer's ARPC.
pub fn answered(r: &mut Receipt, req: &Message, rsp: &Message) {
    let text = |m: &Message, de: u16| m.text(de).map(|t| t.into_owned());
    r.sent = true;
    r.rrn = text(req, 37).unwrap_or_default();
    r.response_code = text(rsp, 39).unwrap_or_else(|| "(none)".into());
    r.response_meaning = response_meaning(&r.response_code);
    r.auth_code = text(rsp, 38).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let network_ok = r.response_code == "00";
    r.approved = network_ok && r.arpc_verified != Some(false);
    if network_ok && !r.approved {
        r.note = Some("approved by the network, but the card did not verify the issuer's ARPC".into());
    }
    r.result = if r.approved { "APPROVED" } else { "DECLINED" };
    r.request = Some(masked_json(req));
    r.response = Some(masked_json(rsp));
}

/// The JSON form (INTERFACES.md §1) with sensitive elements masked, DE 48's CVV2 included.
pub fn masked_json(m: &Message) -> serde_json::Value {
    let mut v = m.to_masked_json();
    if let Some(de48) = v.pointer_mut("/fields/48")
        && let Some(s) = de48.as_str()
    {
        let masked = match s.get(..4) {
            Some(head) if head.starts_with("92") => format!("{head}{}", "*".repeat(s.len() - 4)),
            _ => "*".repeat(s.len()),
        };
        *de48 = serde_json::Value::String(masked);
    }
    v
}

/// Prints the receipt (text, or JSON with `--json`) and gives the exit status; a failure prints
/// one line on stderr and gives 1; a bad argument goes back to the caller (exit 2).
pub fn finish(command: &str, json: bool, outcome: Result<Receipt>) -> Result<ExitCode> {
    match outcome {
        Ok(mut r) => {
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                r.request = None;
                r.response = None;
                print!("{}", r.text());
            }
            Ok(if r.approved { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Err(e) if e.is::<Usage>() => Err(e),
        Err(e) => {
            eprintln!("terminal-sim {command}: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Two BCD bytes of a three-digit code (9F1A, 5F2A).
pub fn bcd2(n: u16) -> [u8; 2] {
    let n = n % 1000;
    [(n / 100) as u8, (((n / 10 % 10) << 4) | (n % 10)) as u8]
}

/// Four random bytes: the unpredictable number (tag 9F37).
pub fn unpredictable_number() -> Result<[u8; 4]> {
    let mut un = [0u8; 4];
    getrandom::fill(&mut un).map_err(|e| anyhow!("the random source: {e}"))?;
    Ok(un)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcd_codes() {
        assert_eq!(bcd2(978), [0x09, 0x78]);
        assert_eq!(bcd2(250), [0x02, 0x50]);
        assert_eq!(bcd2(36), [0x00, 0x36]);
    }
}
