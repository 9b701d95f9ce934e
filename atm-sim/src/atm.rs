//! One ATM and its transactions.
//!
//! A cash advance, in order (each step journaled):
//! 1. the amount is planned from the cassettes (refused here if the notes cannot make it);
//! 2. the card or phone is tapped (EMV kernel, transaction type 01: tag 9C) — an ARQC;
//! 3. the PIN is encrypted by the DUKPT PIN pad, format 0 over the PAN the card gave (a token
//!    for a phone: the switch re-binds the block to the card's PAN when it translates it);
//! 4. the 0200 goes to the switch: DE 3 `013000` (cash advance, credit account), DE 22 `071`,
//!    DE 2/14/23/35 from the card, DE 52 the PIN block, DE 53 the KSN, DE 55 the chip data;
//! 5. the answer's tag 91 goes back to the card (EXTERNAL AUTHENTICATE): an approval whose ARPC
//!    the card refuses is not trusted — no cash, a full reversal;
//! 6. cash is dispensed only after an approval; a fault (jam: nothing, partial: part) is what it
//!    is, and the cassettes lose exactly the notes that left;
//! 7. whenever the cash that left differs from what the issuer approved — a fault, a partial
//!    dispense, an answer that never came — the ATM owes a reversal advice (0420, DE 90 the
//!    original's data, DE 95 the amount actually dispensed for a partial one), kept (sealed in
//!    the state folder) until the switch acknowledges it with an 0430, retried a few times now
//!    and again before the next transaction;
//! 8. the screen shows what is left on the credit line (DE 54 of the answer, plus what the
//!    reversal gives back).
//!
//! Everything the ATM must not reuse (STAN, KSN counter) is saved before the message that uses it
//! leaves.

use std::time::{Duration, Instant};

use codecs::iso8583::{Message, Mti};
use crypto::pin::Pin;
use emv::card::{Contactless, mask};
use emv::kernel::{TapError, Tapped, TerminalConfig, TxData, issuer_authenticate, tag91, tap};
use serde::Serialize;

use crate::cassette::{Cassettes, DispenseError, Plan};
use crate::journal::{Entry, Journal};
use crate::link::{LinkError, SwitchLink};
use crate::pinpad::PinPad;
use crate::state::{AtmRecord, Lock, StateDir};
use crate::{Utc, now_ms, random};
use terminal_kit::billing::{Billing, show_amount};
use terminal_kit::state::Sealer;

/// What an ATM is configured with.
#[derive(Debug, Clone)]
pub struct AtmConfig {
    /// Terminal ID (DE 41), 8 characters.
    pub tid: String,
    /// Card acceptor ID (DE 42), 15 characters.
    pub acceptor_id: String,
    pub terminal: TerminalConfig,
    /// How long the ATM waits for the 0210.
    pub response_timeout: Duration,
    /// How long it waits for each 0430.
    pub reversal_timeout: Duration,
    /// Sends of a reversal advice before it is left owed for the next start.
    pub reversal_attempts: u32,
}

impl AtmConfig {
    pub fn new(tid: &str) -> Self {
        AtmConfig {
            tid: tid.into(),
            acceptor_id: "PAYNETATM000001".into(),
            terminal: TerminalConfig::default(),
            response_timeout: Duration::from_secs(10),
            reversal_timeout: Duration::from_secs(5),
            reversal_attempts: 3,
        }
    }
}

/// An injected dispense fault (INTERFACES.md §6 `--fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Nothing leaves after the approval.
    Jam,
    /// Only this much leaves.
    Partial(u64),
    /// The answer is lost on its way: the ATM acts as if it timed out.
    NoResponse,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Fault::None),
            "jam" => Ok(Fault::Jam),
            "no-response" => Ok(Fault::NoResponse),
            _ => match s.strip_prefix("partial:") {
                Some(m) => m
                    .parse()
                    .map(Fault::Partial)
                    .map_err(|_| format!("partial:{m}: the amount must be minor units (digits)")),
                None => Err(format!("{s:?} is not none, jam, partial:MINOR or no-response")),
            },
        }
    }
}

/// The reversal advice a transaction ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReversalKind {
    None,
    Full,
    Partial,
}

/// How a cash advance ended: the JSON of INTERFACES.md §6 (the extra fields are not printed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// DE 39 of the answer; `None` when no answer came.
    pub response_code: Option<String>,
    pub requested: u64,
    pub dispensed: u64,
    pub reversal: ReversalKind,
    pub reversal_acknowledged: bool,
    pub stan: String,
    /// Open-to-buy left after the advance (and its reversal), when the answer said.
    #[serde(skip)]
    pub available_after: Option<u64>,
    /// Whether the card accepted the issuer's ARPC (tag 91); `None` without an answer or tag 91.
    #[serde(skip)]
    pub arpc_accepted: Option<bool>,
    /// The network's conversion when the card is billed in another currency (DE 6, 10, 51 of the
    /// answer): what the approval charged, in the card's currency, and at what rate.
    #[serde(skip)]
    pub billing: Option<Billing>,
}

impl Outcome {
    /// Whether the issuer's final booking is known: no reversal owed, or it was acknowledged.
    pub fn settled(&self) -> bool {
        self.reversal == ReversalKind::None || self.reversal_acknowledged
    }

    /// What the ATM's screen shows: the cash to take in the ATM's currency (ISO 4217 numeric
    /// `currency`), and — for a card billed in another — what the card is charged for it, at the
    /// approval's rate; the credit left, in the card's currency.
    pub fn screen(&self, tid: &str, currency: u16) -> Vec<String> {
        let mine = format!("{currency:03}");
        let mut lines = Vec::new();
        if self.dispensed > 0 {
            lines.push(format!("{tid}: please take your cash: {}", show_amount(&mine, self.dispensed)));
        }
        let from = codecs::currency::by_numeric(&mine);
        if let (Some(b), Some(from)) = (&self.billing, from)
            && let Some(charged) = b.at_same_rate(self.dispensed, from)
            && self.dispensed > 0
        {
            lines.push(format!(
                "{tid}: your card is charged {} (at {} {} per {})",
                b.currency.show(charged),
                b.rate,
                b.currency.alpha,
                from.alpha
            ));
        }
        if let Some(left) = self.available_after {
            let card_currency = self.billing.map_or(mine, |b| b.currency.numeric.to_string());
            lines.push(format!("{tid}: credit available: {}", show_amount(&card_currency, left)));
        }
        lines
    }
}

/// A balance inquiry's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub response_code: Option<String>,
    pub available: Option<u64>,
    pub stan: String,
}

/// Why a transaction could not run.
#[derive(Debug, thiserror::Error)]
pub enum AtmError {
    #[error("--amount: {0}")]
    Dispense(#[from] DispenseError),
    #[error("--fault: {0}")]
    BadFault(String),
    #[error("card: {0}")]
    Card(#[from] TapError),
    #[error("card: it declined offline (no ARQC)")]
    CardDeclined,
    #[error("PIN pad: {0}")]
    Crypto(#[from] crypto::Error),
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error("message: {0}")]
    Message(#[from] codecs::Error),
    #[error("state: {0}")]
    State(#[from] std::io::Error),
}

/// Where the ATM's state lives between runs.
struct Persist {
    dir: StateDir,
    sealer: Sealer,
    _lock: Lock,
}

/// An ATM.
pub struct Atm {
    pub cfg: AtmConfig,
    pub cassettes: Cassettes,
    pinpad: PinPad,
    next_stan: u32,
    /// Reversal advices not yet acknowledged.
    owed: Vec<Message>,
    pub journal: Journal,
    persist: Option<Persist>,
}

impl std::fmt::Debug for Atm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Atm")
            .field("tid", &self.cfg.tid)
            .field("next_stan", &self.next_stan)
            .field("pinpad", &self.pinpad)
            .field("cassettes", &self.cassettes)
            .field("owed", &self.owed.len())
            .finish()
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

impl Atm {
    /// An ATM held in memory only (tests, the load generator).
    pub fn in_memory(cfg: AtmConfig, pinpad: PinPad, cassettes: Cassettes) -> Self {
        Atm {
            cfg,
            cassettes,
            pinpad,
            next_stan: 1,
            owed: Vec::new(),
            journal: Journal::default(),
            persist: None,
        }
    }

    /// The ATM `tid` of a state folder: waits for its lock (one transaction at a time), then
    /// loads what it remembers — or starts it with the test ATM's cassettes — and brings its
    /// TDES PIN pad (`ipek`, `initial_ksn` from the ports file) to the saved KSN counter.
    pub fn open_tdes(
        dir: &StateDir,
        cfg: AtmConfig,
        ipek: &crypto::keys::TdesKey,
        initial_ksn: &crypto::dukpt::TdesKsn,
    ) -> Result<Self, AtmError> {
        let lock = dir.lock_atm(&cfg.tid)?;
        let rec = dir.load_atm(&cfg.tid)?;
        let sealer = crate::state::owed_sealer(ipek.expose());
        let (next_stan, counter, cassettes, sealed) = match rec {
            Some(r) => (r.next_stan, r.next_ksn_counter, r.cassettes, r.owed),
            None => (1, 1, Cassettes::test_atm(), Vec::new()),
        };
        let pinpad = PinPad::tdes(ipek, initial_ksn, counter)?;
        let spec = codecs::iso8583::Spec::builtin("network").ok_or_else(|| bad("network spec"))?;
        let mut owed = Vec::new();
        for s in &sealed {
            let plain = sealer.open(s)?;
            owed.push(Message::decode_slice(spec, &plain)?);
        }
        let journal = Journal::open(&dir.journal_path(&cfg.tid))?;
        let atm = Atm {
            cfg,
            cassettes,
            pinpad,
            next_stan,
            owed,
            journal,
            persist: Some(Persist { dir: dir.clone(), sealer, _lock: lock }),
        };
        atm.save()?;
        Ok(atm)
    }

    /// Saves what must survive (no-op in memory).
    fn save(&self) -> Result<(), AtmError> {
        let Some(p) = &self.persist else { return Ok(()) };
        let mut sealed = Vec::new();
        for m in &self.owed {
            let mut nonce = [0u8; 12];
            random(&mut nonce)?;
            sealed.push(p.sealer.seal(&m.encode()?, nonce)?);
        }
        p.dir.save_atm(&AtmRecord {
            tid: self.cfg.tid.clone(),
            next_stan: self.next_stan,
            next_ksn_counter: self.pinpad.next_counter(),
            cassettes: self.cassettes.clone(),
            owed: sealed,
        })?;
        Ok(())
    }

    /// Reversal advices still owed.
    pub fn owed(&self) -> usize {
        self.owed.len()
    }

    /// The next STAN, saved before it is used.
    fn take_stan(&mut self) -> Result<String, AtmError> {
        let stan = self.next_stan;
        self.next_stan = if stan >= 999_999 { 1 } else { stan + 1 };
        self.save()?;
        Ok(format!("{stan:06}"))
    }

    fn log(&mut self, e: Entry, durable: bool) -> Result<(), AtmError> {
        self.journal.append(e, durable)?;
        Ok(())
    }

    /// Sends the reversal advices owed from earlier transactions; returns how many are left.
    pub fn settle_owed(&mut self, link: &mut SwitchLink) -> usize {
        let owed = std::mem::take(&mut self.owed);
        for m in owed {
            if !self.deliver(link, &m) {
                self.owed.push(m);
            }
        }
        let _ = self.save();
        self.owed.len()
    }

    /// One send-and-wait of a reversal advice per attempt; true on an 0430 with DE 39 00.
    fn deliver(&mut self, link: &mut SwitchLink, m: &Message) -> bool {
        let stan = m.text(11).map(|c| c.into_owned()).unwrap_or_default();
        for attempt in 0..self.cfg.reversal_attempts.max(1) {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
            }
            let answer = match link.call(m, self.cfg.reversal_timeout) {
                Ok(a) => a,
                Err(_) => {
                    let _ = link.reconnect();
                    None
                }
            };
            if let Some(a) = answer {
                let rc = a.text(39).map(|c| c.into_owned());
                // 00 (reversed) or 94 (already received): taken in charge (network-spec §2).
                if terminal_kit::owed::verdict(Some(&a)) == terminal_kit::owed::Delivery::Acknowledged {
                    let mut e = Entry::new(&self.cfg.tid, &stan, "reversal-ack");
                    e.response_code = rc;
                    let _ = self.log(e, true);
                    return true;
                }
                // Answered but not taken in charge: journaled for the operator, still owed.
                let mut e = Entry::new(&self.cfg.tid, &stan, "reversal-not-taken");
                e.response_code = rc;
                let _ = self.log(e, true);
            }
        }
        let mut e = Entry::new(&self.cfg.tid, &stan, "owed");
        e.detail = Some("no 0430: kept for the next start".into());
        let _ = self.log(e, true);
        false
    }

    /// Makes, keeps and sends the reversal advice of `orig` with `dispensed` left standing.
    fn reverse(
        &mut self,
        link: &mut SwitchLink,
        orig: &Message,
        dispensed: u64,
        reason: &str,
    ) -> Result<bool, AtmError> {
        let stan = self.take_stan()?;
        let m = reversal_advice(orig, &stan, dispensed, reason)?;
        self.owed.push(m.clone());
        self.save()?;
        let mut e = Entry::new(&self.cfg.tid, &stan, "reversal");
        e.amount = orig.amount().ok().flatten().map(|a| a.0);
        e.detail = Some(format!(
            "of STAN {}, dispensed {dispensed}, reason {reason}",
            orig.text(11).unwrap_or_default()
        ));
        self.log(e, true)?;
        let acked = self.deliver(link, &m);
        if acked {
            self.owed.retain(|x| x.text(11) != m.text(11));
            self.save()?;
        }
        Ok(acked)
    }

    /// One cash advance of `amount` (minor units) with the card or phone `card` and its `pin`.
    pub fn cash_advance(
        &mut self,
        link: &mut SwitchLink,
        card: &mut dyn Contactless,
        amount: u64,
        pin: &Pin,
        fault: Fault,
    ) -> Result<Outcome, AtmError> {
        self.settle_owed(link);
        // 1. The notes must make the amount (and a partial fault a smaller one).
        let plan = self.cassettes.plan(amount)?;
        let partial_plan = match fault {
            Fault::Partial(m) if m >= amount || m == 0 => {
                return Err(AtmError::BadFault(format!(
                    "partial:{m} must be above 0 and below the amount {amount}"
                )));
            }
            Fault::Partial(m) => Some(self.cassettes.plan(m)?),
            _ => None,
        };
        // 2. The tap.
        let now = Utc::from_ms(now_ms());
        let mut un = [0u8; 4];
        random(&mut un)?;
        let tx = TxData { amount, tx_type: 0x01, date: now.emv_date(), un };
        let tapped = tap(card, &self.cfg.terminal, &tx)?;
        if tapped.cid & 0xC0 != 0x80 {
            return Err(AtmError::CardDeclined);
        }
        // 3. The PIN, under the next DUKPT key (the counter saved with the STAN).
        let mut fill = [0u8; 8];
        random(&mut fill)?;
        let epin = self.pinpad.encrypt(pin, &tapped.pan, &fill)?;
        let stan = self.take_stan()?;
        // 4. The 0200.
        let mut req = self.request(link, &tapped, &now, &stan, "013000", amount)?;
        req.set_bytes(52, epin.block.clone())?;
        req.set_bytes(53, epin.ksn.clone())?;
        let mut e = Entry::new(&self.cfg.tid, &stan, "request");
        e.pan = Some(mask(&tapped.pan));
        e.amount = Some(amount);
        e.detail = Some("0200 cash advance".into());
        self.log(e, true)?;
        let answer = match link.send(&req) {
            Ok(()) => link.answer_to(&req, Instant::now() + self.cfg.response_timeout).unwrap_or(None),
            Err(_) => {
                let _ = link.reconnect();
                None
            }
        };
        let answer = if fault == Fault::NoResponse {
            // Lost on its way: the ATM never sees it.
            None
        } else {
            answer
        };
        let mut out = Outcome {
            response_code: None,
            requested: amount,
            dispensed: 0,
            reversal: ReversalKind::None,
            reversal_acknowledged: false,
            stan: stan.clone(),
            available_after: None,
            arpc_accepted: None,
            billing: None,
        };
        let Some(rsp) = answer else {
            // No answer: the issuer may have approved; give it all back.
            let mut e = Entry::new(&self.cfg.tid, &stan, "no-answer");
            e.detail = Some(format!("no 0210 within {} ms", self.cfg.response_timeout.as_millis()));
            self.log(e, true)?;
            out.reversal = ReversalKind::Full;
            out.reversal_acknowledged = self.reverse(link, &req, 0, "68")?;
            return Ok(out);
        };
        let rc = rsp.text(39).map(|c| c.into_owned()).unwrap_or_default();
        out.response_code = Some(rc.clone());
        let mut e = Entry::new(&self.cfg.tid, &stan, "answer");
        e.response_code = Some(rc.clone());
        e.detail = rsp.text(38).map(|c| format!("authorization code {c}"));
        self.log(e, true)?;
        // 5. The card checks the issuer's answer.
        if let Some(t91) = rsp.icc_data().ok().flatten().and_then(|icc| tag91(&icc)) {
            let ok = issuer_authenticate(card, &t91);
            out.arpc_accepted = Some(ok);
            let mut e = Entry::new(&self.cfg.tid, &stan, "arpc");
            e.detail = Some(if ok { "accepted by the card" } else { "refused by the card" }.into());
            self.log(e, false)?;
        }
        let de54 = rsp.text(54).and_then(|t| available_of(&t));
        out.billing = Billing::of(&rsp);
        if rc != "00" {
            out.available_after = de54;
            return Ok(out);
        }
        if out.arpc_accepted == Some(false) {
            // An approval the card cannot authenticate is not the issuer's: no cash.
            out.reversal = ReversalKind::Full;
            out.reversal_acknowledged = self.reverse(link, &req, 0, "82")?;
            return Ok(out);
        }
        // 6. The dispense.
        let taken = match fault {
            Fault::Jam => Plan(vec![0; self.cassettes.0.len()]),
            _ => partial_plan.unwrap_or(plan),
        };
        out.dispensed = self.cassettes.take(&taken)?;
        self.save()?;
        let mut e = Entry::new(&self.cfg.tid, &stan, "dispensed");
        e.amount = Some(out.dispensed);
        e.cassettes = Some(self.cassettes.0.iter().map(|c| c.count).collect());
        e.detail = match fault {
            Fault::Jam => Some("jam: nothing dispensed".into()),
            Fault::Partial(_) => Some("partial dispense".into()),
            _ => None,
        };
        self.log(e, true)?;
        // 7. Cash that left differs from the approval: the reversal advice.
        if out.dispensed < amount {
            out.reversal = if out.dispensed == 0 { ReversalKind::Full } else { ReversalKind::Partial };
            out.reversal_acknowledged = self.reverse(link, &req, out.dispensed, "22")?;
        }
        // 8. What is left on the line.
        // DE 54 is in the card's currency: what comes back of a converted approval is its DE 6
        // less the cash that left at the approval's rate (as the issuer reverses it).
        let released =
            match (&out.billing, codecs::currency::by_numeric(&format!("{:03}", self.cfg.terminal.currency)))
            {
                (Some(b), Some(mine)) => {
                    b.at_same_rate(out.dispensed, mine).map(|d| b.amount_minor.saturating_sub(d))
                }
                _ => Some(amount - out.dispensed),
            };
        out.available_after = de54.zip(released).map(|(a, r)| a + r);
        if let Some(a) = out.available_after {
            let mut e = Entry::new(&self.cfg.tid, &stan, "balance");
            e.amount = Some(a);
            self.log(e, false)?;
        }
        Ok(out)
    }

    /// A balance inquiry (INTERFACES.md §5: 0100, DE 3 `313000`, DE 4 zero, tag 9C 31),
    /// answered with the open-to-buy in DE 54. The PIN is optional.
    pub fn balance_inquiry(
        &mut self,
        link: &mut SwitchLink,
        card: &mut dyn Contactless,
        pin: Option<&Pin>,
    ) -> Result<Balance, AtmError> {
        self.settle_owed(link);
        let now = Utc::from_ms(now_ms());
        let mut un = [0u8; 4];
        random(&mut un)?;
        let tx = TxData { amount: 0, tx_type: 0x31, date: now.emv_date(), un };
        let tapped = tap(card, &self.cfg.terminal, &tx)?;
        let epin = match pin {
            Some(p) => {
                let mut fill = [0u8; 8];
                random(&mut fill)?;
                Some(self.pinpad.encrypt(p, &tapped.pan, &fill)?)
            }
            None => None,
        };
        let stan = self.take_stan()?;
        let mut req = self.request(link, &tapped, &now, &stan, "313000", 0)?;
        req.set_mti(Mti::AUTHORIZATION_REQUEST);
        if let Some(e) = epin {
            req.set_bytes(52, e.block)?;
            req.set_bytes(53, e.ksn)?;
        }
        let rsp = link.call(&req, self.cfg.response_timeout)?;
        if let Some(t91) = rsp.as_ref().and_then(|r| r.icc_data().ok().flatten()).and_then(|i| tag91(&i)) {
            issuer_authenticate(card, &t91);
        }
        let rc = rsp.as_ref().and_then(|r| r.text(39).map(|c| c.into_owned()));
        let available = rsp.as_ref().and_then(|r| r.text(54).and_then(|t| available_of(&t)));
        let mut e = Entry::new(&self.cfg.tid, &stan, "balance");
        e.pan = Some(mask(&tapped.pan));
        e.response_code = rc.clone();
        e.amount = available;
        self.log(e, false)?;
        Ok(Balance { response_code: rc, available, stan })
    }

    /// The request common to a cash advance and a balance inquiry.
    fn request(
        &self,
        link: &SwitchLink,
        tapped: &Tapped,
        now: &Utc,
        stan: &str,
        processing_code: &str,
        amount: u64,
    ) -> Result<Message, AtmError> {
        let mut m = Message::new(link.spec().clone(), Mti::FINANCIAL_REQUEST);
        let yymmdd = format!("{:02}{}", now.year % 100, now.date());
        for (de, v) in [
            (2u16, tapped.pan.as_str()),
            (3, processing_code),
            (4, &format!("{amount:012}")),
            (7, &now.transmission()),
            (11, stan),
            (12, &now.time()),
            (13, &now.date()),
            (14, &tapped.expiry),
            (18, "6011"),
            (22, "071"),
            (23, &format!("0{}", tapped.psn)),
            (25, "02"),
            (37, &format!("{yymmdd}{stan}")),
            (41, &self.cfg.tid),
            (42, &self.cfg.acceptor_id),
            (49, &format!("{:03}", self.cfg.terminal.currency)),
        ] {
            m.set_text(de, v)?;
        }
        if !tapped.track2.is_empty() {
            m.set_text(35, &tapped.track2)?;
        }
        m.set_icc_data(&tapped.icc)?;
        Ok(m)
    }
}

/// The open-to-buy in DE 54 (ISO 8583:1987 additional amounts: account type 2, amount type 2,
/// currency 3, sign `C`/`D`, amount 12); the first credit amount.
/// Read by bytes: the switch's text may hold any character, and slicing a `str` inside one panics.
pub fn available_of(de54: &str) -> Option<u64> {
    de54.as_bytes().chunks(20).find_map(|a| {
        let [_, _, _, _, _, _, _, b'C', amount @ ..] = a else { return None };
        if amount.len() != 12 || !amount.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(amount).ok()?.parse().ok()
    })
}

/// The reversal advice (0420) of `orig`: its identifying elements, a new STAN and transmission
/// time, DE 39 the reason (`68` no answer, `22` dispense fault, `82` answer not authenticated),
/// DE 90 the original data elements, and — when part of the cash left — DE 95 with the amount
/// that stands (ISO 8583:1987 DE 95: actual transaction amount, actual settlement amount, fees).
pub fn reversal_advice(
    orig: &Message,
    stan: &str,
    dispensed: u64,
    reason: &str,
) -> Result<Message, codecs::Error> {
    let mut m = Message::new(orig.spec().clone(), Mti::REVERSAL_ADVICE);
    for de in [2u16, 3, 4, 12, 13, 14, 18, 22, 23, 25, 32, 37, 41, 42, 49] {
        m.copy_from(orig, de)?;
    }
    let now = Utc::from_ms(now_ms());
    m.set_text(7, &now.transmission())?;
    m.set_text(11, stan)?;
    m.set_text(39, reason)?;
    let t = |de| orig.text(de).map(|c| c.into_owned()).unwrap_or_default();
    m.set_text(90, &format!("{}{:0>6}{:0>10}{:0>11}{}", orig.mti(), t(11), t(7), t(32), "0".repeat(11)))?;
    if dispensed > 0 {
        m.set_text(95, &format!("{dispensed:012}{dispensed:012}C00000000C00000000"))?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!("none".parse::<Fault>(), Ok(Fault::None));
        assert_eq!("jam".parse::<Fault>(), Ok(Fault::Jam));
        assert_eq!("partial:120000".parse::<Fault>(), Ok(Fault::Partial(120_000)));
        assert_eq!("no-response".parse::<Fault>(), Ok(Fault::NoResponse));
        assert!("partial:x".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().is_err());
    }

    #[test]
    fn de54_available_amount() {
        assert_eq!(available_of("3002978C000004800000"), Some(4_800_000));
        assert_eq!(available_of("3001978C0000000000013002978C000000000250"), Some(1));
        assert_eq!(available_of("3002978D000000000100"), None);
        assert_eq!(available_of("short"), None);
        assert_eq!(available_of("3002978C+00004800000"), None, "n12: digits only");
    }

    #[test]
    fn fuzz_atm_answer_crash_aeb451da_de54_with_multibyte_text() {
        // cargo fuzz atm_answer, crash-aeb451da75fb4768f5095c8c6b4a6c6ced771668 (mode 08: the rest
        // as DE 54 text): 'ɾ' across bytes 7-8 made `&s[7..8]` panic.
        let de54 = "\u{8}300297ɾ00000480000300297ɾ00000480000é";
        assert_eq!(available_of(de54), None);
        assert_eq!(available_of("3002978ɾ0000048000"), None);
        assert_eq!(available_of("ɾɾɾɾ3002978C000004800000"), None, "misaligned: no amount");
        assert_eq!(available_of("3001978Cɾɾɾɾɾɾ3002978C000000000250"), Some(250), "the next amount");
        assert_eq!(available_of("3001978D0000000000003002978C000000000250"), Some(250));
    }

    #[test]
    fn partial_reversal_advice_carries_de90_and_de95() {
        let spec = codecs::iso8583::Spec::builtin("network").unwrap();
        let mut o = Message::new(spec.clone(), Mti::FINANCIAL_REQUEST);
        for (de, v) in [
            (2u16, "4761739001010010"),
            (3, "013000"),
            (4, "000000200000"),
            (7, "1125101010"),
            (11, "000042"),
            (41, "ATM00001"),
            (49, "978"),
        ] {
            o.set_text(de, v).unwrap();
        }
        let r = reversal_advice(&o, "000043", 120_000, "22").unwrap();
        assert_eq!(r.mti(), Mti::REVERSAL_ADVICE);
        assert_eq!(r.text(90).unwrap(), format!("0200000042112510101000000000000{}", "0".repeat(11)));
        assert_eq!(&r.text(95).unwrap()[..12], "000000120000");
        assert_eq!(r.text(4).unwrap(), "000000200000", "DE 4 stays the original amount");
        let full = reversal_advice(&o, "000044", 0, "68").unwrap();
        assert!(!full.contains(95));
        r.encode().unwrap();
    }
}
