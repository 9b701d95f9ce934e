//! The whole mission in one run (`paynet demo`, MISSION.md "What done means"): the network on
//! 127.0.0.1 — switch, issuer simulator, token service, the phone's providers — and, for each of
//! the five provisioning flows (`issuer-se`, `tsm-se-pan`, `tsm-se-token`, `hce`, `wallet`), a
//! phone provisioned by real code that then pays by tap at a contactless POS, pays online (in-app)
//! and takes a cash advance at an ATM. Then one declined case per reason the network knows.
//!
//! Every step is reported as it happens, "party → party: what", with PANs and tokens masked
//! (first six, last four) and never a PIN or a key, to an output function the caller gives (the
//! binary prints it, the tests capture it). What is reported is what was observed: the answer's
//! DE 39, the phone's own check of the ARPC (tag 91, EMV Book 2 §8.2), the issuer's booking on the
//! card's account, the ATM's dispense and the PAN the terminal read (a token in the token BIN
//! range 489537 for the tokenized models).
//!
//! The runs are functions of a [`World`] so that the end-to-end tests (`tests/e2e.rs`) run the
//! same flows one model × channel at a time. ATM transactions are blocking I/O (`atm-sim`): the
//! runtime must be a multi-thread one (they run under `block_in_place`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use atm_sim::atm::{Atm, AtmConfig, Fault, Outcome};
use atm_sim::state::StateDir;
use atm_sim::{Endpoint, SwitchLink};
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use crypto::pin::Pin;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use terminal_sim::kernel::{Tapped, TerminalConfig, TxData, issuer_authenticate, tag91, tap};
use terminal_sim::pos::{TestCard, Tx, chip_request, tap_request};
use tokio_util::codec::Framed;
use wallet_sim::card::mask;
use wallet_sim::flows::{self, CardholderCard, Io, Model, Step};
use wallet_sim::phone::{OnlineTx, Phone};
use wallet_sim::providers::ProviderAddrs;

use crate::network::{self, Network, Options};

/// Where the demo's steps go: one line at a time, as they happen.
pub type Out<'a> = &'a mut (dyn FnMut(&str) + Send);

/// The network's token BIN range (never a card BIN; `network::token_ranges`).
pub const TOKEN_BIN: &str = "489537";

/// Test cards the demo's network is started with: one per model, and the declines' own.
pub const CARDS: usize = 9;

/// The test card (index in the ports file) each model's phone carries. Card 1 is the one whose
/// issuer asks for an OTP at ID&V (`issuer_sim::cards`), so the wallet flow shows the step-up.
pub fn card_of(model: Model) -> usize {
    match model {
        Model::IssuerSe => 0,
        Model::Wallet => 1,
        Model::TsmSePan => 2,
        Model::TsmSeToken => 3,
        Model::Hce => 4,
    }
}

/// Whether the model puts a token (not the PAN) on the phone.
pub fn tokenized(model: Model) -> bool {
    matches!(model, Model::TsmSeToken | Model::Hce | Model::Wallet)
}

/// Where a provisioned phone pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// A contactless POS: the phone tapped (DE 22 `071`).
    Pos,
    /// In-app / e-commerce: the phone's online cryptogram (DE 22 `100`).
    Online,
    /// An ATM cash advance with online PIN (DE 3 `013000`).
    Atm,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Pos, Channel::Online, Channel::Atm];

    pub fn name(self) -> &'static str {
        match self {
            Channel::Pos => "pos",
            Channel::Online => "online",
            Channel::Atm => "atm",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One model × channel run: the report line of INTERFACES.md §3 (the first seven fields, in that
/// order; the rest are added).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub model: String,
    pub channel: Channel,
    pub provisioned: bool,
    pub token_used: bool,
    /// The ARQC was verified (by the issuer, or the token service for a token: an approval) and
    /// the phone accepted the ARPC of the answer.
    pub cryptogram_verified: bool,
    /// DE 39 of the answer ("" when none came).
    pub response_code: String,
    pub detail: String,
    /// Added: the amount asked, minor units (EUR).
    pub amount_minor: u64,
    /// Added: what the issuer booked on the card's account for it, minor units.
    pub booked_minor: u64,
    /// Added: the PAN the terminal read, masked (the token for a tokenized model).
    pub device_pan: String,
}

impl Run {
    fn failed(model: Model, channel: Channel, provisioned: bool, why: String) -> Run {
        Run {
            model: model.name().into(),
            channel,
            provisioned,
            token_used: false,
            cryptogram_verified: false,
            response_code: String::new(),
            detail: why,
            amount_minor: 0,
            booked_minor: 0,
            device_pan: String::new(),
        }
    }

    /// Did what it should: provisioned, approved, cryptogram verified both ways, a token used
    /// exactly when the model tokenizes, and the issuer booked what was paid (or dispensed).
    pub fn ok(&self) -> bool {
        let token_expected = self.model.parse::<Model>().map(tokenized).unwrap_or(!self.token_used);
        self.provisioned
            && self.cryptogram_verified
            && self.response_code == "00"
            && self.token_used == token_expected
            && self.booked_minor == self.amount_minor
            && self.amount_minor > 0
    }
}

/// One declined case: what the network should answer, and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct Decline {
    pub reason: String,
    /// Where it was tried: `pos`, `atm` or `provisioning`.
    pub channel: String,
    /// DE 39 docs/network-spec.md §6 gives for this reason.
    pub expected: String,
    /// DE 39 the network answered ("" when none came).
    pub got: String,
    pub ok: bool,
    pub detail: String,
}

/// The demo report (INTERFACES.md §3, with `declines` added beside `runs`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub runs: Vec<Run>,
    pub declines: Vec<Decline>,
}

impl Report {
    pub fn new(runs: Vec<Run>, declines: Vec<Decline>) -> Report {
        let ok = runs.len() == Model::ALL.len() * Channel::ALL.len()
            && runs.iter().all(Run::ok)
            && !declines.is_empty()
            && declines.iter().all(|d| d.ok);
        Report { ok, runs, declines }
    }

    /// What went wrong, one line each (empty when `ok`).
    pub fn failures(&self) -> Vec<String> {
        let mut f: Vec<String> = self
            .runs
            .iter()
            .filter(|r| !r.ok())
            .map(|r| format!("{} × {}: RC {:?}, {}", r.model, r.channel.name(), r.response_code, r.detail))
            .collect();
        f.extend(self.declines.iter().filter(|d| !d.ok).map(|d| {
            format!("decline {}: expected {}, got {:?} ({})", d.reason, d.expected, d.got, d.detail)
        }));
        if self.runs.len() != Model::ALL.len() * Channel::ALL.len() {
            f.push(format!("{} runs instead of 15", self.runs.len()));
        }
        f
    }

    /// The closing table: model × channel, then the declines.
    pub fn table(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        let mut t = format!(
            "{:<13} {:<7} {:<11} {:<5} {:<10} {:<3} {}\n",
            "model", "channel", "provisioned", "token", "cryptogram", "RC", "detail"
        );
        for r in &self.runs {
            t += &format!(
                "{:<13} {:<7} {:<11} {:<5} {:<10} {:<3} {}{}\n",
                r.model,
                r.channel.name(),
                yn(r.provisioned),
                yn(r.token_used),
                if r.cryptogram_verified { "verified" } else { "NOT" },
                if r.response_code.is_empty() { "--" } else { &r.response_code },
                r.detail,
                if r.ok() { "" } else { "  <-- FAILED" }
            );
        }
        t += &format!(
            "\n{:<48} {:<12} {:<8} {:<3} {}\n",
            "declined case", "where", "expected", "got", "result"
        );
        for d in &self.declines {
            t += &format!(
                "{:<48} {:<12} {:<8} {:<3} {}\n",
                d.reason,
                d.channel,
                d.expected,
                if d.got.is_empty() { "--" } else { &d.got },
                if d.ok { "as expected" } else { "UNEXPECTED" }
            );
        }
        let approved = self.runs.iter().filter(|r| r.ok()).count();
        let declined = self.declines.iter().filter(|d| d.ok).count();
        t += &format!(
            "\n{approved} of {} runs approved with a verified cryptogram; {declined} of {} declines as expected: {}\n",
            self.runs.len(),
            self.declines.len(),
            if self.ok { "OK" } else { "FAILED" }
        );
        t
    }
}

/// A phone with its card, after a provisioning flow.
pub struct ProvisionedPhone {
    pub model: Model,
    /// Index of the test card in the ports file.
    pub card: usize,
    pub card_id: String,
    pub phone: Phone,
    pub path: PathBuf,
    /// The PAN the phone's card carries (the token for a tokenized model), masked.
    pub device_pan: String,
}

/// The POS and e-commerce acquirer's connection to the switch (`network` spec, 2-byte framing).
struct PosLink {
    conn: Framed<tokio::net::TcpStream, FrameCodec>,
    spec: Arc<Spec>,
}

/// The running network and what the demo keeps between steps: its terminals' connections, the
/// ATM, the STAN counter, the folder of the phones' state files.
pub struct World {
    pub net: Network,
    pub providers: ProviderAddrs,
    pub dir: PathBuf,
    spec: Arc<Spec>,
    pos: Option<PosLink>,
    atm: Option<Atm>,
    atm_link: Option<SwitchLink>,
    stan: u32,
}

fn random4() -> [u8; 4] {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    b
}

fn now() -> atm_sim::Utc {
    atm_sim::Utc::from_ms(atm_sim::now_ms())
}

/// Minor units as euros: `EUR 1,234.50`.
pub fn eur(minor: u64) -> String {
    let units = (minor / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("EUR {grouped}.{:02}", minor % 100)
}

fn say(out: Out<'_>, from: &str, to: &str, what: &str) {
    out(&format!("  {from} → {to}: {what}"));
}

/// A tag's value in chip data (DE 55).
fn tag_of(icc: &[u8], t: u32) -> Option<Vec<u8>> {
    let nodes = codecs::tlv::decode_lenient(icc).ok()?;
    codecs::tlv::find(&nodes, codecs::tlv::Tag::new(t)).map(|n| n.value().to_vec())
}

fn atc_of(icc: &[u8]) -> String {
    match tag_of(icc, 0x9F36) {
        Some(a) if a.len() == 2 => u16::from_be_bytes([a[0], a[1]]).to_string(),
        _ => "?".into(),
    }
}

fn rc_of(m: &Message) -> String {
    m.text(39).map(|c| c.into_owned()).unwrap_or_default()
}

/// The phone's check of the answer's ARPC (tag 91 in DE 55), EXTERNAL AUTHENTICATE.
fn arpc_check(phone: &mut dyn wallet_sim::card::Contactless, rsp: &Message) -> Option<bool> {
    let icc = rsp.icc_data().ok().flatten()?;
    let t91 = tag91(&icc)?;
    Some(issuer_authenticate(phone, &t91))
}

fn arpc_words(a: Option<bool>) -> &'static str {
    match a {
        Some(true) => "ARPC (tag 91) checked by the phone: accepted",
        Some(false) => "ARPC (tag 91) checked by the phone: REFUSED",
        None => "no ARPC in the answer",
    }
}

impl World {
    /// Starts the network (with [`CARDS`] test cards and the phone's providers) in `dir`.
    pub async fn start(dir: &Path) -> Result<World> {
        let mut opts = Options::new(dir);
        opts.cards = CARDS;
        opts.wallet_providers = true;
        let net = network::start(opts).await?;
        let providers =
            net.providers().ok_or_else(|| anyhow!("the phone's providers did not start"))?.addrs.clone();
        let phones = dir.join("phones");
        std::fs::create_dir_all(&phones)?;
        Ok(World {
            net,
            providers,
            dir: dir.to_path_buf(),
            spec: Spec::builtin("network").ok_or_else(|| anyhow!("network spec"))?.clone(),
            pos: None,
            atm: None,
            atm_link: None,
            stan: 0,
        })
    }

    /// Stops the switch and starts it again on the same store and keys (`Network::restart_switch`);
    /// the terminals reconnect to its new ports on their next transaction. The ATM keeps its state.
    pub async fn restart_switch(mut self) -> Result<World> {
        self.pos = None;
        self.atm_link = None;
        let World { net, providers, dir, spec, atm, stan, .. } = self;
        let net = net.restart_switch().await?;
        Ok(World { net, providers, dir, spec, pos: None, atm, atm_link: None, stan })
    }

    pub async fn shutdown(mut self) {
        self.pos = None;
        self.atm_link = None;
        self.atm = None;
        self.net.shutdown().await;
    }

    fn next_stan(&mut self) -> u32 {
        self.stan = self.stan % 999_999 + 1;
        self.stan
    }

    /// Test card `i` of the ports file.
    pub fn card(&self, i: usize) -> Result<TestCard> {
        let c = self.net.ports.test_cards.get(i).ok_or_else(|| anyhow!("no test card {i}"))?;
        Ok(serde_json::from_value(serde_json::to_value(c)?)?)
    }

    /// The issuer's open-to-buy on test card `i`'s account.
    pub fn open_to_buy(&self, i: usize) -> Result<u64> {
        let pan = &self.net.ports.test_cards.get(i).ok_or_else(|| anyhow!("no test card {i}"))?.pan;
        self.net
            .issuer_state
            .issuer
            .lock()
            .map_err(|_| anyhow!("issuer state poisoned"))?
            .open_to_buy(pan)
            .ok_or_else(|| anyhow!("the issuer does not know test card {i}"))
    }

    /// The switch's acquirer listener as an ATM reads it from the ports file.
    pub fn atm_endpoint(&self) -> Endpoint {
        let a = &self.net.ports.acquirer;
        Endpoint { host: a.host.clone(), port: a.port, spec: a.spec.clone(), framing: a.framing.clone() }
    }

    /// Test ATM `n` of the ports file with its state folder (`atm-state` in the demo's folder):
    /// STAN, DUKPT counter, cassettes and owed reversal advices survive a restart of the ATM.
    pub fn open_atm(&self, n: usize, cfg: impl FnOnce(&mut AtmConfig)) -> Result<Atm> {
        let t = self.net.ports.atm_terminals.get(n).ok_or_else(|| anyhow!("no test ATM {n}"))?;
        let ipek = crypto::keys::TdesKey::from_hex("ipek", &t.ipek)?;
        let ksn = crypto::dukpt::TdesKsn::from_hex(&t.ksn)?;
        let mut c = AtmConfig::new(&t.tid);
        cfg(&mut c);
        let dir = StateDir::open(&self.dir.join("atm-state"))?;
        Ok(Atm::open_tdes(&dir, c, &ipek, &ksn)?)
    }

    /// One request to the switch on the POS acquirer connection and its answer.
    pub async fn pos_call(&mut self, req: &Message) -> Result<Message> {
        if self.pos.is_none() {
            let a = &self.net.ports.acquirer;
            let stream = tokio::net::TcpStream::connect((a.host.as_str(), a.port))
                .await
                .with_context(|| format!("connecting to the switch at {}:{}", a.host, a.port))?;
            stream.set_nodelay(true)?;
            self.pos = Some(PosLink {
                conn: Framed::new(stream, FrameCodec::new(FramingKind::Binary2)),
                spec: self.spec.clone(),
            });
        }
        let link = self.pos.as_mut().ok_or_else(|| anyhow!("no switch connection"))?;
        let r = async {
            link.conn.send(Frame::new(req.encode()?)).await?;
            let frame = tokio::time::timeout(Duration::from_secs(15), link.conn.next())
                .await
                .map_err(|_| anyhow!("no answer from the switch in 15 s"))?
                .ok_or_else(|| anyhow!("the switch closed the connection"))??;
            Ok::<_, anyhow::Error>(Message::decode(&link.spec, frame.payload)?)
        }
        .await;
        if r.is_err() {
            self.pos = None;
        }
        r
    }

    /// The demo's ATM (test ATM 0) and its link to the switch, opened on first use.
    fn atm_and_link(&mut self) -> Result<(&mut Atm, &mut SwitchLink)> {
        if self.atm.is_none() {
            self.atm = Some(self.open_atm(0, |_| {})?);
        }
        if self.atm_link.is_none() {
            let ep = self.atm_endpoint();
            self.atm_link =
                Some(tokio::task::block_in_place(|| SwitchLink::connect(&ep, Duration::from_secs(5)))?);
        }
        match (self.atm.as_mut(), self.atm_link.as_mut()) {
            (Some(a), Some(l)) => Ok((a, l)),
            _ => bail!("the ATM is not open"),
        }
    }

    /// One cash advance at the demo's ATM, blocking I/O off the async workers.
    pub fn cash_advance(
        &mut self,
        card: &mut dyn wallet_sim::card::Contactless,
        amount: u64,
        pin: &Pin,
        fault: Fault,
    ) -> Result<(Outcome, Option<String>)> {
        let (atm, link) = self.atm_and_link()?;
        let from = atm.journal.entries.len();
        let o = tokio::task::block_in_place(|| atm.cash_advance(link, card, amount, pin, fault))?;
        // The PAN the ATM read, masked, from its journal's request line.
        let read =
            atm.journal.entries[from..].iter().find(|e| e.event == "request").and_then(|e| e.pan.clone());
        Ok((o, read))
    }
}

/// The phone's state file for `model` (and a label, for the declines' phones).
fn phone_path(w: &World, label: &str) -> PathBuf {
    w.dir.join("phones").join(format!("{label}.json"))
}

/// Provisions a phone for `model` with its own test card ([`card_of`]) and state file.
pub async fn provision(w: &mut World, model: Model, out: Out<'_>) -> Result<ProvisionedPhone> {
    let path = phone_path(w, model.name());
    provision_with(w, model, card_of(model), &path, None, Otp::FromIssuer, out).await
}

/// How the cardholder answers an OTP step-up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Otp {
    /// With the code the issuer sent (read from its outbox).
    FromIssuer,
    /// With a code that is not it.
    Wrong,
}

async fn provision_with(
    w: &mut World,
    model: Model,
    card: usize,
    path: &Path,
    typed_expiry: Option<&str>,
    otp_answer: Otp,
    out: Out<'_>,
) -> Result<ProvisionedPhone> {
    let c = w.card(card)?;
    let mut phone = Phone::open_or_create(path)?;
    out(&format!(
        "[{model}] provisioning card {} into a new phone ({})",
        mask(&c.pan),
        match model {
            Model::IssuerSe => "model 1: issuer-owned SE, personalised by the issuer",
            Model::TsmSePan => "model 2: TSM, real PAN over the air into the SE",
            Model::TsmSeToken => "model 2: TSM, token over the air into the SE",
            Model::Hce => "model 3: cloud platform, HCE",
            Model::Wallet => "model 4: wallet (DPSP), tokenized",
        }
    ));
    let issuer = w.net.issuer_state.clone();
    let sent_before: HashSet<String> = issuer
        .issuer
        .lock()
        .map_err(|_| anyhow!("issuer state poisoned"))?
        .otp_outbox
        .keys()
        .cloned()
        .collect();
    let mut log = |s: &Step| out(&format!("  {s}"));
    // The cardholder reads the one-time password the issuer sent (its outbox): the new one.
    let mut otp = move || -> Result<String> {
        let i = issuer.issuer.lock().map_err(|_| anyhow!("issuer state poisoned"))?;
        let code = i
            .otp_outbox
            .iter()
            .find(|(k, _)| !sent_before.contains(*k))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| anyhow!("the issuer sent no one-time password"))?;
        Ok(match otp_answer {
            Otp::FromIssuer => code,
            Otp::Wrong => code.bytes().map(|b| char::from(b'0' + (b.wrapping_sub(b'0') + 1) % 10)).collect(),
        })
    };
    let holder = CardholderCard { pan: c.pan.clone(), expiry: typed_expiry.unwrap_or(&c.expiry).to_string() };
    let card_id =
        flows::provision(model, &mut phone, &w.providers, &holder, &mut Io { log: &mut log, otp: &mut otp })
            .await?;
    let profile = phone.profile(&card_id).ok_or_else(|| anyhow!("the phone has no card {card_id}"))?;
    let device_pan = mask(&profile.pan);
    out(&format!(
        "  phone → cardholder: card {card_id} enabled, carrying {} {device_pan}{}",
        if profile.pan.starts_with(TOKEN_BIN) { "token" } else { "PAN" },
        match profile.luks_left() {
            Some(n) => format!(" ({n} limited-use keys)"),
            None => String::new(),
        }
    ));
    Ok(ProvisionedPhone { model, card, card_id, phone, path: path.to_path_buf(), device_pan })
}

/// The amount each run asks (minor units): distinct per model, whole notes at the ATM.
fn amount_for(model: Model, channel: Channel) -> u64 {
    let i = Model::ALL.iter().position(|m| *m == model).unwrap_or(0) as u64;
    match channel {
        Channel::Pos => 2_350 + 100 * i,
        Channel::Online => 4_990 + 1_000 * i,
        Channel::Atm => 20_000 + 10_000 * i,
    }
}

/// Pays with the provisioned phone on `channel`: the run's report line.
pub async fn pay(w: &mut World, p: &mut ProvisionedPhone, channel: Channel, out: Out<'_>) -> Run {
    let amount = amount_for(p.model, channel);
    out(&format!(
        "[{} × {channel}] {}",
        p.model,
        match channel {
            Channel::Pos => format!("pay {} by tap at a contactless POS", eur(amount)),
            Channel::Online => format!("pay {} online, in the merchant's app", eur(amount)),
            Channel::Atm => format!("take a cash advance of {} at an ATM", eur(amount)),
        }
    ));
    let r = match channel {
        Channel::Pos => pay_pos(w, p, amount, out).await,
        Channel::Online => pay_online(w, p, amount, out).await,
        Channel::Atm => pay_atm(w, p, amount, out).await,
    };
    r.unwrap_or_else(|e| {
        let why = format!("{e:#}");
        out(&format!("  (failed: {why})"));
        Run::failed(p.model, channel, true, why)
    })
}

/// What the issuer booked on test card `card` since `before`, reported as a step.
fn booked(w: &World, card: usize, before: u64, out: Out<'_>) -> Result<u64> {
    let after = w.open_to_buy(card)?;
    let b = before.saturating_sub(after);
    let pan = mask(&w.net.ports.test_cards[card].pan);
    say(
        out,
        "issuer",
        &format!("account of card {pan}"),
        &format!("{} booked, open-to-buy {}", eur(b), eur(after)),
    );
    Ok(b)
}

/// Sends a tapped (or in-app) authorization and reports it; (answer, phone accepted the ARPC).
async fn authorize(
    w: &mut World,
    p: &mut ProvisionedPhone,
    tapped: &Tapped,
    amount: u64,
    online: bool,
    out: Out<'_>,
) -> Result<(Message, Option<bool>, String)> {
    let stan = w.next_stan();
    let mut tx = Tx::purchase(stan, amount, 0);
    tx.date = now().emv_date();
    tx.tid = if online { "ECOM0001".into() } else { "TERM0001".into() };
    let mut req = tap_request(&w.spec, tapped, &tx)?;
    let (terminal, what) = if online {
        // E-commerce with the phone's cryptogram (docs/network-spec.md §3: DE 22 100).
        req.set_text(22, "100")?;
        ("merchant", format!("0100 e-commerce purchase {}, DE 22 100, STAN {stan:06}", eur(amount)))
    } else {
        ("POS terminal", format!("0100 contactless purchase {}, DE 22 071, STAN {stan:06}", eur(amount)))
    };
    say(out, terminal, "switch", &what);
    let rsp = w.pos_call(&req).await?;
    let rc = rc_of(&rsp);
    say(
        out,
        "switch",
        terminal,
        &format!(
            "0110 DE 39 {rc}{}",
            rsp.text(38).map(|a| format!(", authorization code {a}")).unwrap_or_default()
        ),
    );
    let arpc = arpc_check(&mut p.phone, &rsp);
    say(out, terminal, "phone", arpc_words(arpc));
    Ok((rsp, arpc, rc))
}

fn token_used(w: &World, p: &ProvisionedPhone, read_pan: &str) -> bool {
    let card_pan = &w.net.ports.test_cards[p.card].pan;
    read_pan.starts_with(TOKEN_BIN) && read_pan != card_pan.as_str()
}

async fn pay_pos(w: &mut World, p: &mut ProvisionedPhone, amount: u64, out: Out<'_>) -> Result<Run> {
    let before = w.open_to_buy(p.card)?;
    let tx = TxData { amount, tx_type: 0x00, date: now().emv_date(), un: random4() };
    say(out, "cardholder", "POS terminal", "taps the phone");
    let tapped = tap(&mut p.phone, &TerminalConfig::default(), &tx).map_err(|e| anyhow!("tap: {e}"))?;
    if tapped.cid & 0xC0 != 0x80 {
        bail!("the phone did not ask to go online (CID {:02X})", tapped.cid);
    }
    let token = token_used(w, p, &tapped.pan);
    say(
        out,
        "phone",
        "POS terminal",
        &format!(
            "{} {}, ARQC with ATC {}",
            if token { "token" } else { "PAN" },
            mask(&tapped.pan),
            atc_of(&tapped.icc)
        ),
    );
    let (rsp, arpc, rc) = authorize(w, p, &tapped, amount, false, out).await?;
    let b = booked(w, p.card, before, out)?;
    Ok(Run {
        model: p.model.name().into(),
        channel: Channel::Pos,
        provisioned: true,
        token_used: token,
        cryptogram_verified: rc == "00" && arpc == Some(true),
        response_code: rc,
        detail: format!(
            "{} tapped, ATC {}, auth {}, ARPC {}",
            eur(amount),
            atc_of(&tapped.icc),
            rsp.text(38).unwrap_or_default(),
            if arpc == Some(true) { "ok" } else { "refused" }
        ),
        amount_minor: amount,
        booked_minor: b,
        device_pan: mask(&tapped.pan),
    })
}

async fn pay_online(w: &mut World, p: &mut ProvisionedPhone, amount: u64, out: Out<'_>) -> Result<Run> {
    let before = w.open_to_buy(p.card)?;
    say(
        out,
        "merchant app",
        "phone",
        &format!("checkout {}: asks the card for an online cryptogram", eur(amount)),
    );
    let d = now().emv_date();
    let oc = p.phone.online_cryptogram(&OnlineTx {
        amount,
        country: [0x02, 0x50],
        currency: [0x09, 0x78],
        date: d,
        tx_type: 0x00,
        un: random4(),
    })?;
    let token = token_used(w, p, &oc.pan);
    say(
        out,
        "phone",
        "merchant",
        &format!(
            "{} {}, in-app ARQC with ATC {}",
            if token { "token" } else { "PAN" },
            mask(&oc.pan),
            atc_of(&oc.icc)
        ),
    );
    let tapped = Tapped {
        pan: oc.pan.clone(),
        expiry: oc.expiry.clone(),
        psn: oc.psn.clone(),
        track2: String::new(),
        icc: oc.icc.clone(),
        cid: oc.cid,
    };
    let (rsp, arpc, rc) = authorize(w, p, &tapped, amount, true, out).await?;
    let b = booked(w, p.card, before, out)?;
    Ok(Run {
        model: p.model.name().into(),
        channel: Channel::Online,
        provisioned: true,
        token_used: token,
        cryptogram_verified: rc == "00" && arpc == Some(true),
        response_code: rc,
        detail: format!(
            "{} in-app, ATC {}, auth {}, ARPC {}",
            eur(amount),
            atc_of(&oc.icc),
            rsp.text(38).unwrap_or_default(),
            if arpc == Some(true) { "ok" } else { "refused" }
        ),
        amount_minor: amount,
        booked_minor: b,
        device_pan: mask(&oc.pan),
    })
}

async fn pay_atm(w: &mut World, p: &mut ProvisionedPhone, amount: u64, out: Out<'_>) -> Result<Run> {
    let before = w.open_to_buy(p.card)?;
    let pin = Pin::new(&w.net.ports.test_cards[p.card].pin)?;
    say(out, "cardholder", "ATM", &format!("taps the phone, enters the PIN, asks {} cash", eur(amount)));
    let (o, read) = w.cash_advance(&mut p.phone, amount, &pin, Fault::None)?;
    let read = read.unwrap_or_default();
    let card_pan = mask(&w.net.ports.test_cards[p.card].pan);
    // The journal keeps the PAN masked: the token BIN (first six) and a PAN other than the card's.
    let token = read.starts_with(TOKEN_BIN) && read != card_pan;
    atm_steps(out, &o, &read, token);
    let b = booked(w, p.card, before, out)?;
    let rc = o.response_code.clone().unwrap_or_default();
    Ok(Run {
        model: p.model.name().into(),
        channel: Channel::Atm,
        provisioned: true,
        token_used: token,
        cryptogram_verified: rc == "00" && o.arpc_accepted == Some(true),
        response_code: rc,
        detail: format!(
            "{} asked, {} dispensed ({} notes), screen: {} left, ARPC {}",
            eur(amount),
            eur(o.dispensed),
            o.dispensed / 10_000,
            o.available_after.map(eur).unwrap_or_else(|| "?".into()),
            if o.arpc_accepted == Some(true) { "ok" } else { "refused" }
        ),
        amount_minor: amount,
        booked_minor: b,
        device_pan: read,
    })
}

/// The ATM's side of a cash advance, as steps.
fn atm_steps(out: Out<'_>, o: &Outcome, read: &str, token: bool) {
    say(out, "phone", "ATM", &format!("{} {read}, ARQC", if token { "token" } else { "PAN" }));
    say(
        out,
        "ATM",
        "switch",
        &format!(
            "0200 cash advance {} (DE 3 013000), PIN block under the PIN pad's DUKPT key, STAN {}",
            eur(o.requested),
            o.stan
        ),
    );
    match &o.response_code {
        Some(rc) => say(out, "switch", "ATM", &format!("0210 DE 39 {rc}")),
        None => say(out, "switch", "ATM", "no answer"),
    }
    say(out, "ATM", "phone", arpc_words(o.arpc_accepted));
    say(
        out,
        "ATM",
        "cardholder",
        &format!(
            "{} dispensed{}{}",
            eur(o.dispensed),
            o.available_after
                .map(|a| format!("; screen: {} left on the credit line", eur(a)))
                .unwrap_or_default(),
            match o.reversal {
                atm_sim::ReversalKind::None => String::new(),
                k => format!(
                    "; reversal advice ({k:?}) {}",
                    if o.reversal_acknowledged { "acknowledged" } else { "owed" }
                ),
            }
        ),
    );
}

/// The five phones, provisioned, and their fifteen runs.
pub async fn runs(w: &mut World, out: Out<'_>) -> Vec<Run> {
    let mut runs = Vec::new();
    for model in Model::ALL {
        match provision(w, model, out).await {
            Ok(mut p) => {
                for channel in Channel::ALL {
                    runs.push(pay(w, &mut p, channel, out).await);
                }
            }
            Err(e) => {
                let why = format!("provisioning failed: {e:#}");
                out(&format!("  ({why})"));
                for channel in Channel::ALL {
                    runs.push(Run::failed(model, channel, false, why.clone()));
                }
            }
        }
    }
    runs
}

/// Everything: the fifteen runs, then the declines.
pub async fn run_all(w: &mut World, out: Out<'_>) -> Report {
    let runs = runs(w, out).await;
    let declines = declines(w, out).await;
    Report::new(runs, declines)
}

/// A decline's record from what came back.
fn decline(
    reason: &str,
    channel: &str,
    expected: &str,
    got: Result<(String, String)>,
    out: Out<'_>,
) -> Decline {
    let (got, detail) = match got {
        Ok(g) => g,
        Err(e) => (String::new(), format!("error: {e:#}")),
    };
    let ok = got == expected;
    out(&format!(
        "  => {reason}: expected {expected}, got {} — {}",
        if got.is_empty() { "no answer" } else { &got },
        if ok { "as expected" } else { "UNEXPECTED" }
    ));
    Decline { reason: reason.into(), channel: channel.into(), expected: expected.into(), got, ok, detail }
}

/// Declines the network knows, one case each (docs/network-spec.md §6), on test cards of their own.
pub async fn declines(w: &mut World, out: Out<'_>) -> Vec<Decline> {
    let mut d = Vec::new();
    out("[declines] one case per reason the network knows");

    // A real-PAN SE phone on test card 5 for the ATM and the cryptogram cases.
    let path = phone_path(w, "declines-se");
    let phone = provision_with(w, Model::IssuerSe, 5, &path, None, Otp::FromIssuer, out).await;
    match phone {
        Ok(mut p) => {
            let pin = w.net.ports.test_cards[5].pin.clone();
            let wrong = if pin == "0000" { "1111" } else { "0000" };
            out("[decline] a cash advance over the credit line");
            let r = async {
                let line = w.open_to_buy(5)?;
                let amount = (line / 10_000 + 1) * 10_000;
                atm_decline(w, &mut p, amount, &pin, out)
            }
            .await;
            d.push(decline("over the credit line (ATM)", "atm", "51", r, out));
            out("[decline] a wrong PIN at the ATM");
            let r = atm_decline(w, &mut p, 10_000, wrong, out);
            d.push(decline("wrong PIN (ATM)", "atm", "55", r, out));
            out("[decline] the third wrong PIN in a row");
            let r = atm_decline(w, &mut p, 10_000, wrong, out)
                .and_then(|_| atm_decline(w, &mut p, 10_000, wrong, out));
            d.push(decline("PIN tries exceeded (ATM)", "atm", "75", r, out));
            out("[decline] a cryptogram changed on its way (one bit of 9F26)");
            let r = pos_decline(w, &mut p, Tamper::Arqc, out).await;
            d.push(decline("tampered cryptogram (POS)", "pos", "82", r, out));
            out("[decline] a cryptogram replayed (the same ATC again, new STAN)");
            let r = pos_decline(w, &mut p, Tamper::Replay, out).await;
            d.push(decline("replayed ATC (POS)", "pos", "82", r, out));
        }
        Err(e) => {
            let why = format!("provisioning the declines' phone failed: {e:#}");
            out(&format!("  ({why})"));
            for (reason, ch, rc) in [
                ("over the credit line (ATM)", "atm", "51"),
                ("wrong PIN (ATM)", "atm", "55"),
                ("PIN tries exceeded (ATM)", "atm", "75"),
                ("tampered cryptogram (POS)", "pos", "82"),
                ("replayed ATC (POS)", "pos", "82"),
            ] {
                d.push(decline(reason, ch, rc, Err(anyhow!("{why}")), out));
            }
        }
    }

    out("[decline] an expired card (plastic, expiry 01/20) sent online");
    let r = plastic_decline(w, PlasticCase::Expired, out).await;
    d.push(decline("expired card (POS)", "pos", "54", r, out));
    out("[decline] a card number the issuer never issued (its BIN, Luhn-valid)");
    let r = plastic_decline(w, PlasticCase::Unknown, out).await;
    d.push(decline("unknown card number (POS)", "pos", "14", r, out));
    out("[decline] a card of a BIN no issuer is routed for");
    let r = plastic_decline(w, PlasticCase::NoRoute, out).await;
    d.push(decline("no issuer for the BIN (POS)", "pos", "15", r, out));

    // A wallet token on test card 6, then suspended and deleted by the issuer.
    out("[decline] a token the issuer suspended, then deleted");
    let path = phone_path(w, "declines-wallet");
    match provision_with(w, Model::Wallet, 6, &path, None, Otp::FromIssuer, out).await {
        Ok(mut p) => {
            let r = token_lifecycle_decline(w, &mut p, "suspend", out).await;
            d.push(decline("token suspended by the issuer (POS)", "pos", "57", r, out));
            let r = token_lifecycle_decline(w, &mut p, "delete", out).await;
            d.push(decline("token deleted by the issuer (POS)", "pos", "62", r, out));
        }
        Err(e) => {
            for (reason, rc) in
                [("token suspended by the issuer (POS)", "57"), ("token deleted by the issuer (POS)", "62")]
            {
                d.push(decline(reason, "pos", rc, Err(anyhow!("provisioning the wallet phone: {e:#}")), out));
            }
        }
    }

    out("[decline] ID&V: the cardholder types a wrong one-time password (wallet, card with OTP step-up)");
    let r = idv_decline(w, Model::Wallet, 1, None, Otp::Wrong, "declines-otp", out).await;
    d.push(decline("ID&V declined: wrong OTP (provisioning)", "provisioning", "05", r, out));
    out("[decline] ID&V: the expiry typed is not the card's (HCE)");
    let r = async {
        let c = w.card(8)?;
        let wrong = if c.expiry.ends_with("12") {
            format!("{}11", &c.expiry[..2])
        } else {
            format!("{}12", &c.expiry[..2])
        };
        idv_decline(w, Model::Hce, 8, Some(&wrong), Otp::FromIssuer, "declines-expiry", out).await
    }
    .await;
    d.push(decline("ID&V declined: wrong expiry (provisioning)", "provisioning", "54", r, out));
    d
}

/// A cash advance expected to be declined: (DE 39, detail); nothing may leave the ATM.
fn atm_decline(
    w: &mut World,
    p: &mut ProvisionedPhone,
    amount: u64,
    pin: &str,
    out: Out<'_>,
) -> Result<(String, String)> {
    let pin = Pin::new(pin)?;
    say(out, "cardholder", "ATM", &format!("taps the phone, enters a PIN, asks {} cash", eur(amount)));
    let (o, read) = w.cash_advance(&mut p.phone, amount, &pin, Fault::None)?;
    atm_steps(out, &o, &read.unwrap_or_default(), false);
    if o.dispensed != 0 {
        bail!("{} dispensed on a decline", eur(o.dispensed));
    }
    Ok((o.response_code.unwrap_or_default(), format!("{} asked, nothing dispensed", eur(amount))))
}

/// The chip data (DE 55, primitive tags) again with the last bit of the ARQC (9F26) flipped.
fn flip_arqc_bit(icc: &[u8]) -> Result<Vec<u8>> {
    let nodes = codecs::tlv::decode_lenient(icc)?;
    let mut b = codecs::tlv::TlvBuilder::new();
    let mut flipped = false;
    for n in &nodes {
        let mut v = n.value().to_vec();
        if n.tag().value() == 0x9F26
            && let Some(last) = v.last_mut()
        {
            *last ^= 0x01;
            flipped = true;
        }
        b.primitive(n.tag(), &v)?;
    }
    if !flipped {
        bail!("no ARQC (9F26) in the chip data");
    }
    Ok(b.finish().to_vec())
}

#[derive(Clone, Copy)]
enum Tamper {
    Arqc,
    Replay,
}

async fn pos_decline(
    w: &mut World,
    p: &mut ProvisionedPhone,
    how: Tamper,
    out: Out<'_>,
) -> Result<(String, String)> {
    let tx = TxData { amount: 1_000, tx_type: 0x00, date: now().emv_date(), un: random4() };
    say(out, "cardholder", "POS terminal", "taps the phone");
    let tapped = tap(&mut p.phone, &TerminalConfig::default(), &tx).map_err(|e| anyhow!("tap: {e}"))?;
    say(
        out,
        "phone",
        "POS terminal",
        &format!("PAN {}, ARQC with ATC {}", mask(&tapped.pan), atc_of(&tapped.icc)),
    );
    let mut t = tapped.clone();
    match how {
        Tamper::Arqc => {
            t.icc = flip_arqc_bit(&t.icc)?;
            say(out, "attacker", "switch", "one bit of the ARQC (9F26) flipped on the way");
        }
        Tamper::Replay => {
            let stan = w.next_stan();
            let mut tx = Tx::purchase(stan, 1_000, 0);
            tx.date = now().emv_date();
            let first = w.pos_call(&tap_request(&w.spec, &t, &tx)?).await?;
            say(
                out,
                "POS terminal",
                "switch",
                &format!("0100 {} with that ARQC, STAN {stan:06}", eur(1_000)),
            );
            say(out, "switch", "POS terminal", &format!("0110 DE 39 {}", rc_of(&first)));
            if rc_of(&first) != "00" {
                bail!("the original was not approved: {}", rc_of(&first));
            }
            say(out, "attacker", "switch", "the same chip data again under a new STAN");
        }
    }
    let stan = w.next_stan();
    let mut tx = Tx::purchase(stan, 1_000, 0);
    tx.date = now().emv_date();
    let req = tap_request(&w.spec, &t, &tx)?;
    say(out, "POS terminal", "switch", &format!("0100 {}, STAN {stan:06}", eur(1_000)));
    let rsp = w.pos_call(&req).await?;
    let rc = rc_of(&rsp);
    say(out, "switch", "POS terminal", &format!("0110 DE 39 {rc}"));
    let arpc = arpc_check(&mut p.phone, &rsp);
    say(out, "POS terminal", "phone", arpc_words(arpc));
    Ok((
        rc,
        format!(
            "ARPC {}",
            match arpc {
                Some(true) => "accepted",
                Some(false) => "refused",
                None => "absent",
            }
        ),
    ))
}

#[derive(Clone, Copy)]
enum PlasticCase {
    Expired,
    Unknown,
    NoRoute,
}

/// A plastic contactless card's chip request (its ARQC from its master key), sent online.
async fn plastic_decline(w: &mut World, case: PlasticCase, out: Out<'_>) -> Result<(String, String)> {
    let c = w.card(7)?;
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|e| anyhow!("random: {e}"))?;
    let (pan, expiry, icc_mk) = match case {
        PlasticCase::Expired => (c.pan.clone(), "2001".to_string(), c.icc_mk.clone()),
        PlasticCase::Unknown => (luhn_pan("476173999999999"), c.expiry.clone(), hex::encode_upper(key)),
        PlasticCase::NoRoute => (luhn_pan("541333000000001"), c.expiry.clone(), hex::encode_upper(key)),
    };
    let card = TestCard {
        pan,
        expiry,
        psn: "00".into(),
        cvn: "visa18".into(),
        icc_mk,
        pin: String::new(),
        balance: String::new(),
    };
    let stan = w.next_stan();
    let mut tx = Tx::purchase(stan, 1_000, 1);
    tx.date = now().emv_date();
    let req = chip_request(&w.spec, &card, &tx)?;
    say(
        out,
        "card",
        "POS terminal",
        &format!("PAN {}, expiry {}/{}, ARQC", mask(&card.pan), &card.expiry[2..], &card.expiry[..2]),
    );
    say(out, "POS terminal", "switch", &format!("0100 {}, STAN {stan:06}", eur(1_000)));
    let rsp = w.pos_call(&req).await?;
    let rc = rc_of(&rsp);
    say(out, "switch", "POS terminal", &format!("0110 DE 39 {rc}"));
    Ok((rc, String::new()))
}

/// `body` with its Luhn check digit.
fn luhn_pan(body: &str) -> String {
    format!("{body}{}", issuer_sim::cards::luhn(body))
}

/// The issuer suspends (or deletes) every token of the card (`/v1/issuer/tokens/{action}`), then
/// the phone taps at the POS.
async fn token_lifecycle_decline(
    w: &mut World,
    p: &mut ProvisionedPhone,
    action: &str,
    out: Out<'_>,
) -> Result<(String, String)> {
    let iss = w.net.ports.token_issuers.first().ok_or_else(|| anyhow!("no issuer credentials"))?;
    let auth = format!("{}:{}", iss.name, iss.secret);
    let pan = w.net.ports.test_cards[p.card].pan.clone();
    say(out, "issuer", "token service", &format!("{action} the tokens of card {}", mask(&pan)));
    let a = wallet_sim::providers::http::post(
        &w.net.ports.provisioning_api,
        &format!("/v1/issuer/tokens/{action}"),
        Some(&auth),
        &json!({ "pan": pan }),
    )
    .await?;
    let a = wallet_sim::providers::http::ok("token service", a)?;
    let status = a["tokens"][0]["status"].as_str().unwrap_or("?").to_string();
    say(out, "token service", "issuer", &format!("token {}: {status}", p.device_pan));
    let tx = TxData { amount: 1_000, tx_type: 0x00, date: now().emv_date(), un: random4() };
    say(out, "cardholder", "POS terminal", "taps the phone");
    let tapped = tap(&mut p.phone, &TerminalConfig::default(), &tx).map_err(|e| anyhow!("tap: {e}"))?;
    say(
        out,
        "phone",
        "POS terminal",
        &format!("token {}, ARQC with ATC {}", mask(&tapped.pan), atc_of(&tapped.icc)),
    );
    let stan = w.next_stan();
    let mut t = Tx::purchase(stan, 1_000, 0);
    t.date = now().emv_date();
    say(out, "POS terminal", "switch", &format!("0100 {}, STAN {stan:06}", eur(1_000)));
    let rsp = w.pos_call(&tap_request(&w.spec, &tapped, &t)?).await?;
    let rc = rc_of(&rsp);
    say(out, "switch", "POS terminal", &format!("0110 DE 39 {rc}"));
    Ok((rc, format!("token {status}")))
}

/// A provisioning the issuer declines at ID&V: the token service's response code; the phone must
/// hold no card afterwards.
async fn idv_decline(
    w: &mut World,
    model: Model,
    card: usize,
    typed_expiry: Option<&str>,
    otp: Otp,
    label: &str,
    out: Out<'_>,
) -> Result<(String, String)> {
    let path = phone_path(w, label);
    match provision_with(w, model, card, &path, typed_expiry, otp, out).await {
        Ok(p) => bail!("provisioned {} although ID&V should fail", p.card_id),
        Err(e) => {
            let text = format!("{e:#}");
            // The flow quotes the token service's answer: {"status":"declined","response_code":..}.
            let rc = text
                .split("\"response_code\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string();
            let phone = Phone::open(&path)?;
            let n = phone.cards().len();
            say(out, "phone", "cardholder", &format!("no card added ({n} cards on the phone)"));
            if n != 0 {
                bail!("the phone holds {n} cards after a declined ID&V");
            }
            Ok((rc, "nothing on the phone".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approved(model: Model, channel: Channel) -> Run {
        let amount = amount_for(model, channel);
        Run {
            model: model.name().into(),
            channel,
            provisioned: true,
            token_used: tokenized(model),
            cryptogram_verified: true,
            response_code: "00".into(),
            detail: String::new(),
            amount_minor: amount,
            booked_minor: amount,
            device_pan: String::new(),
        }
    }

    fn all() -> Vec<Run> {
        Model::ALL.iter().flat_map(|m| Channel::ALL.map(|c| approved(*m, c))).collect()
    }

    fn declined(ok: bool) -> Decline {
        Decline {
            reason: "wrong PIN (ATM)".into(),
            channel: "atm".into(),
            expected: "55".into(),
            got: if ok { "55" } else { "00" }.into(),
            ok,
            detail: String::new(),
        }
    }

    #[test]
    fn the_report_is_ok_only_when_every_run_and_decline_did_what_it_should() {
        assert!(Report::new(all(), vec![declined(true)]).ok);
        assert!(!Report::new(all(), vec![]).ok, "the declines must be shown");
        assert!(!Report::new(all(), vec![declined(false)]).ok);
        assert!(!Report::new(all()[1..].to_vec(), vec![declined(true)]).ok, "14 runs");
        type Spoil = fn(&mut Run);
        let spoil: [Spoil; 6] = [
            |r| r.cryptogram_verified = false,
            |r| r.response_code = "51".into(),
            |r| r.provisioned = false,
            |r| r.token_used = !r.token_used,
            |r| r.booked_minor = 0,
            |r| r.amount_minor = 0,
        ];
        for (i, f) in spoil.iter().enumerate() {
            let mut runs = all();
            f(&mut runs[7]);
            let r = Report::new(runs, vec![declined(true)]);
            assert!(!r.ok, "spoiler {i}");
            assert_eq!(r.failures().len(), 1, "spoiler {i}: {:?}", r.failures());
        }
    }

    #[test]
    fn report_json_keeps_the_interfaces_fields_in_order() {
        let r = Report::new(all(), vec![declined(true)]);
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<&str> = v["runs"][0].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            &keys[..7],
            [
                "model",
                "channel",
                "provisioned",
                "token_used",
                "cryptogram_verified",
                "response_code",
                "detail"
            ]
        );
        assert_eq!(v["runs"][0]["channel"], "pos");
        assert_eq!(v["ok"], true);
        assert_eq!(v["declines"][0]["expected"], "55");
    }

    #[test]
    fn euros_are_grouped() {
        assert_eq!(eur(0), "EUR 0.00");
        assert_eq!(eur(2_350), "EUR 23.50");
        assert_eq!(eur(4_972_660), "EUR 49,726.60");
        assert_eq!(eur(123_456_789), "EUR 1,234,567.89");
    }

    #[test]
    fn luhn_pans_are_valid() {
        let p = luhn_pan("476173999999999");
        assert_eq!(p.len(), 16);
        assert_eq!(issuer_sim::cards::luhn(&p[..15]), p.chars().last().unwrap());
    }
}
