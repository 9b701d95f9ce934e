//! What `terminal-sim pos` and `terminal-sim checkout` share: the merchant's arguments (ports
//! file, amount, terminal settings over the configuration file over the embedded defaults, STAN),
//! the one transaction's context (acquirer target, STAN, moment), the reversal advices owed from
//! earlier transactions delivered first, sending and answering, the reversal advice kept and sent
//! when the terminal cannot stand by the outcome, and the receipt with the exit status — 0 approved, 1 declined or failed (one line naming what went
//! wrong), 2 bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use codecs::iso8583::Message;
use phone::Device;

use crate::checkout::Order;
use crate::receipt::{Receipt, response_meaning};
use crate::terminal::{self, Moment, Terminal, TerminalFile};
use emv::kernel;
use terminal_kit::link::{CONNECT_TIMEOUT, Target};
use terminal_kit::owed::{self, Connection, Delivery, OwedAdvices};
use terminal_kit::ports::PortsFile;
use terminal_kit::pos::reversal_advice;

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
    /// Where the terminal keeps its STAN counter and the reversal advices it owes (default:
    /// terminal-sim under the system temporary folder).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// How long to wait for the answer; after it the terminal sends a reversal advice (0: do not
    /// wait at all, to exercise that path).
    #[arg(long, default_value_t = 15_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// How long to wait for each reversal advice's acknowledgement (0430).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub advice_timeout_ms: u64,
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
    /// Every node's listener, `target` first: where the terminal fails over to.
    pub targets: Vec<Target>,
    pub stan: u32,
    /// Where the STAN counter lives (None with `--stan`).
    pub state_dir: Option<PathBuf>,
    /// Where the reversal advices the terminal owes are kept (the state folder, with `--stan` too).
    pub owed_dir: PathBuf,
    /// How long to wait for each reversal advice's acknowledgement.
    pub advice_wait: Duration,
    pub moment: Moment,
}

impl MerchantArgs {
    /// The terminal settings: `defaults`, then the config file, then the command line.
    pub fn terminal(&self, defaults: TerminalFile) -> Result<Terminal> {
        let mut f = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--config {}: cannot read it", path.display()))?;
                TerminalFile::parse_over(&defaults, &text)
                    .map_err(|e| usage(format!("--config {}: {e}", path.display())))?
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
                        _ if given(key) => {
                            format!("--{}{}", key.replace('_', "-"), p.get(key.len()..).unwrap_or_default())
                        }
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
        let (ports, ports_json, target) = acquirer(&self.ports_file, &self.endpoint)?;
        let mut targets = vec![target.clone()];
        for ep in ports.endpoints(&self.endpoint).into_iter().skip(1) {
            targets.push(
                ep.target().with_context(|| format!("--ports-file {}: nodes", self.ports_file.display()))?,
            );
        }
        let owed_dir = self.state.clone().unwrap_or_else(terminal::default_state_dir);
        let state_dir = match self.stan {
            Some(_) => None,
            None => Some(owed_dir.clone()),
        };
        let stan = match (&state_dir, self.stan) {
            (Some(dir), _) => terminal::next_stan(dir, &terminal.tid)
                .with_context(|| format!("the STAN counter in {}", dir.display()))?,
            (None, s) => s.unwrap_or(1),
        };
        Ok(Txn {
            terminal,
            ports,
            ports_json,
            target,
            targets,
            stan,
            state_dir,
            owed_dir,
            advice_wait: Duration::from_millis(self.advice_timeout_ms),
            moment: Moment::now(),
        })
    }
}

/// The ports file (typed, and as JSON) and the acquirer listener `endpoint` of it (`acquirer`, or
/// `acquirer_ascii` / `acquirer-ascii`).
pub fn acquirer(
    ports_file: &std::path::Path,
    endpoint: &str,
) -> Result<(PortsFile, serde_json::Value, Target)> {
    let text = std::fs::read_to_string(ports_file)
        .with_context(|| format!("--ports-file {}: cannot read it", ports_file.display()))?;
    let ports = PortsFile::parse(&text).with_context(|| format!("--ports-file {}", ports_file.display()))?;
    let ports_json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--ports-file {}: not JSON", ports_file.display()))?;
    let Some(ep) = ports.endpoint(endpoint) else {
        return Err(usage(format!("--endpoint {endpoint:?}: expected acquirer or acquirer_ascii")));
    };
    let target = ep.target().with_context(|| format!("--ports-file {}: {endpoint}", ports_file.display()))?;
    Ok((ports, ports_json, target))
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

    /// One online transaction, holding the terminal's owed-advice file locked throughout (one
    /// transaction at a time per TID, and no `terminal-sim reversals` sending the reversal of a
    /// transaction still waiting for its answer):
    /// 1. the reversal advices owed from earlier transactions are delivered (owed.rs);
    /// 2. the reversal advice this transaction would owe (0420, DE 39 `68`) is kept, sealed,
    ///    before the 0100 leaves — a crash while waiting for the answer cannot lose it;
    /// 3. `req` is sent and the receipt filled from its answer — the card, when one took part,
    ///    checks the issuer's ARPC (tag 91, EXTERNAL AUTHENTICATE);
    /// 4. no answer in time: the kept advice is sent; an approval whose ARPC the card refused: it
    ///    is sent with DE 39 `82`; otherwise it is forgotten. Unacknowledged, it stays owed.
    ///
    /// An error means the new request was not sent.
    pub async fn authorize(
        &self,
        r: &mut Receipt,
        req: &Message,
        timeout_ms: u64,
        card: Option<&mut Device>,
    ) -> Result<()> {
        let timeout = Duration::from_millis(timeout_ms);
        let dir = &self.owed_dir;
        let kept_in = || format!("the reversal advices owed in {}", dir.display());
        let mut store = OwedAdvices::open(dir, &self.terminal.tid).with_context(kept_in)?;
        let mut conn = Connection::over(&self.targets, self.terminal.tpdu);
        self.settle_owed(r, &mut store, &mut conn).await.with_context(kept_in)?;
        r.owed_advices_left = store.list().len();

        let rev_stan = match &self.state_dir {
            Some(dir) => terminal::next_stan(dir, &self.terminal.tid)
                .with_context(|| format!("the STAN counter in {}", dir.display()))?,
            None => self.stan % 999_999 + 1,
        };
        let transmitted = Moment::now().transmitted();
        let rev = reversal_advice(req, rev_stan, &transmitted, "68")
            .map_err(|e| anyhow!("building the reversal advice: {e}"))?;
        store.add(&rev).with_context(kept_in)?;
        let rev_de11 = rev.text(11).map(|c| c.into_owned()).unwrap_or_default();

        let first = match conn.link(CONNECT_TIMEOUT).await {
            Ok(link) => link.send(req).await.is_ok(),
            Err(_) => false,
        };
        if !first {
            // The connection the owed advices used may have gone: one fresh try.
            conn.drop_link();
            let sent = match conn.link(CONNECT_TIMEOUT).await {
                Ok(link) => link.send(req).await.map_err(|e| anyhow!("{e}")),
                Err(e) => Err(anyhow!("{e}")),
            };
            if let Err(e) = sent {
                // Nothing left: nothing to reverse.
                store.remove(&rev_de11).with_context(kept_in)?;
                return Err(e);
            }
        }
        r.sent = true;
        r.rrn = req.text(37).map(|t| t.into_owned()).unwrap_or_default();
        r.request = Some(req.to_masked_json());
        let answer = match conn.link(CONNECT_TIMEOUT).await {
            Ok(link) => link.answer(req, timeout).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(Some(rsp)) => {
                r.arpc_verified = card.map(|d| arpc_to_card(d, &rsp));
                answered(r, &rsp);
                if r.response_code.as_deref() == Some("00") && !r.approved {
                    match reversal_advice(req, rev_stan, &transmitted, "82") {
                        Ok(rev82) => {
                            // The same advice (same DE 11), now saying why.
                            let kept = store.add(&rev82);
                            let rev = if kept.is_ok() { rev82 } else { rev };
                            r.reversal = Some(self.send_kept(&mut store, &rev, &mut conn).await);
                        }
                        Err(_) => r.reversal = Some(self.send_kept(&mut store, &rev, &mut conn).await),
                    }
                } else if let Err(e) = store.remove(&rev_de11) {
                    r.note = Some(format!(
                        "the reversal advice kept for this transaction could not be forgotten ({e}): \
                         remove STAN {rev_de11} from {} before the next transaction",
                        dir.display()
                    ));
                }
            }
            Ok(None) | Err(_) => {
                r.response_meaning = "no answer";
                r.note = Some(format!("no answer from the network within {timeout_ms} ms"));
                // The node may be gone: the advice goes to the next one.
                conn.drop_link();
                r.reversal = Some(self.send_kept(&mut store, &rev, &mut conn).await);
            }
        }
        r.owed_advices_left = store.list().len();
        Ok(())
    }

    /// Sends every reversal advice this terminal owes, before its new request.
    async fn settle_owed(
        &self,
        r: &mut Receipt,
        store: &mut OwedAdvices,
        conn: &mut Connection<'_>,
    ) -> std::io::Result<()> {
        if store.list().is_empty() {
            return Ok(());
        }
        let s = owed::settle(store, conn, &self.target.spec, self.advice_wait).await?;
        r.owed_advices_delivered = s.delivered;
        if !s.refused.is_empty() {
            let codes: Vec<String> = s
                .refused
                .iter()
                .map(|f| format!("STAN {} DE 39 {}", f.advice.stan, f.response_code))
                .collect();
            r.note = Some(format!("earlier reversal advices refused by the switch: {}", codes.join(", ")));
        }
        Ok(())
    }

    /// Sends the kept reversal advice `rev` over `conn` (after a lost link, to the next node) and
    /// waits for its acknowledgement: `acknowledged`, `refused`, or `owed` (still kept).
    async fn send_kept(
        &self,
        store: &mut OwedAdvices,
        rev: &Message,
        conn: &mut Connection<'_>,
    ) -> &'static str {
        let stan = rev.text(11).map(|c| c.into_owned()).unwrap_or_default();
        let Some(entry) = store.list().iter().find(|a| a.stan == stan).cloned() else { return "not sent" };
        match owed::send_owed(store, &entry, rev, conn, self.advice_wait).await {
            Ok(Delivery::Acknowledged) => "acknowledged",
            Ok(Delivery::Refused(_)) => "refused",
            Ok(Delivery::Pending | Delivery::Unreachable) | Err(_) => "owed",
        }
    }

    /// Marks the receipt as the terminal's offline decline: the card answered GENERATE AC with an
    /// AAC (EMV Book 3 §9.3), authorisation response code Z1; nothing is sent.
    pub fn offline_decline(r: &mut Receipt) {
        r.cryptogram = Some("AAC");
        r.response_code = Some("Z1".into());
        r.response_meaning = response_meaning("Z1");
        r.note = Some("the terminal's risk management declined offline (TVR bit in the denial TAC)".into());
    }

    /// The receipt of a chip transaction after the card's GENERATE AC: its ATC and cryptogram
    /// type, and — when the card answered anything but an ARQC — the offline decline. True when
    /// the transaction goes online.
    pub fn chip_receipt(
        &self,
        amount: u64,
        tapped: &emv::kernel::Tapped,
        entry_mode: &'static str,
        de22: &str,
    ) -> (Receipt, bool) {
        let mut r = self.receipt(amount, emv::card::mask(&tapped.pan), entry_mode, de22);
        r.atc = icc_tag(&tapped.icc, 0x9F36).map(hex::encode_upper);
        if tapped.cid & 0xC0 != 0x80 {
            Txn::offline_decline(&mut r);
            return (r, false);
        }
        r.cryptogram = Some("ARQC");
        (r, true)
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
            billing: None,
            stan: format!("{:06}", self.stan),
            rrn: String::new(),
            atc: None,
            cryptogram: None,
            sent: false,
            response_code: None,
            response_meaning: "",
            auth_code: None,
            arpc_verified: None,
            reversal: None,
            owed_advices_delivered: 0,
            owed_advices_left: 0,
            note: None,
            request: None,
            response: None,
        }
    }
}

/// Fills the receipt from the answer: response code and meaning, auth code, the masked JSON form.
/// `approved` is the network's 00 and, where a card took part, the card's acceptance of the
/// issuer's ARPC.
pub fn answered(r: &mut Receipt, rsp: &Message) {
    let rc = rsp.text(39).map(|t| t.into_owned());
    r.response_meaning = rc.as_deref().map(response_meaning).unwrap_or("no response code");
    r.auth_code = rsp.text(38).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    r.billing = crate::receipt::BilledAmount::of(rsp);
    let network_ok = rc.as_deref() == Some("00");
    r.response_code = rc;
    r.approved = network_ok && r.arpc_verified != Some(false);
    if network_ok && !r.approved {
        r.note = Some("approved by the network, but the card did not verify the issuer's ARPC".into());
    }
    r.result = if r.approved { "APPROVED" } else { "DECLINED" };
    r.response = Some(rsp.to_masked_json());
}

/// Hands the answer's tag 91 to the card: whether it verified the issuer's ARPC (no tag 91: no).
pub fn arpc_to_card(device: &mut Device, rsp: &Message) -> bool {
    match rsp.icc_data().ok().flatten().and_then(|icc| kernel::tag91(&icc)) {
        Some(t91) => kernel::issuer_authenticate(device, &t91),
        None => false,
    }
}

/// One tag's value from TLV bytes.
pub fn icc_tag(icc: &[u8], tag: u32) -> Option<Vec<u8>> {
    let nodes = codecs::tlv::decode_lenient(icc).ok()?;
    codecs::tlv::find(&nodes, codecs::tlv::Tag::new(tag)).map(|n| n.value().to_vec())
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
