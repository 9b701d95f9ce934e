//! The fifteen runs: a phone provisioned by each model's flow (`wallet_sim::flows`, every party
//! real code), then paying by tap at a contactless POS (the terminal kernel's dialogue, a 0100 with
//! DE 22 `071`), online (the phone's in-app cryptogram, DE 22 `100`) and at an ATM (a 0200 cash
//! advance with a DUKPT PIN block, `atm-sim`). Each run reports what was observed: DE 39, the
//! phone's check of the ARPC, the PAN the terminal read, the issuer's booking on the card.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use atm_sim::atm::{Fault, Outcome};
use codecs::iso8583::Message;
use crypto::pin::Pin;
use emv::card::mask;
use emv::kernel::{Tapped, TerminalConfig, TxData, tap};
use phone::{OnlineTx, Phone};
use terminal_kit::pos::{Tx, tap_request};
use wallet_sim::flows::{self, CardholderCard, Io, Model, Step};

use super::{
    Channel, MERCHANT_COUNTRY, MERCHANT_CURRENCY, Out, Run, TOKEN_BIN, World, arpc_check, arpc_words, atc_of,
    money, now, random4, rc_of, say, twd,
};
use terminal_kit::billing::Billing;

/// The test card (index in the ports file) each model's phone carries. Card 1 is the one whose
/// issuer asks for an OTP at ID&V (`issuer_sim::cards`), so the wallet flow shows the step-up.
pub fn card_of(model: Model) -> usize {
    match model {
        Model::IssuerSe => 0,
        Model::Wallet => 1,
        Model::TsmSePan => 2,
        Model::TsmSeToken => 3,
        Model::Hce | Model::HcePan => 4,
    }
}

/// Whether the model puts a token (not the PAN) on the phone.
pub fn tokenized(model: Model) -> bool {
    matches!(model, Model::TsmSeToken | Model::Hce | Model::Wallet)
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

/// The phone's state file for `model` (and a label, for the declines' phones).
pub(super) fn phone_path(w: &World, label: &str) -> PathBuf {
    w.dir.join("phones").join(format!("{label}.json"))
}

/// Provisions a phone for `model` with its own test card ([`card_of`]) and state file.
pub async fn provision(w: &mut World, model: Model, out: Out<'_>) -> Result<ProvisionedPhone> {
    let path = phone_path(w, model.name());
    provision_with(w, model, card_of(model), &path, None, Otp::FromIssuer, out).await
}

/// How the cardholder answers an OTP step-up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Otp {
    /// With the code the issuer sent (read from its outbox).
    FromIssuer,
    /// With a code that is not it.
    Wrong,
}

pub(super) async fn provision_with(
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
            Model::HcePan => "model 3: cloud platform, HCE, real PAN",
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
    let mut otp = move || -> wallet_sim::Result<String> {
        let i = issuer.issuer.lock().map_err(|_| wallet_sim::Error::Otp("issuer state poisoned".into()))?;
        let code = i
            .otp_outbox
            .iter()
            .find(|(k, _)| !sent_before.contains(*k))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| wallet_sim::Error::Otp("the issuer sent none".into()))?;
        Ok(match otp_answer {
            Otp::FromIssuer => code,
            Otp::Wrong => code.bytes().map(|b| char::from(b'0' + (b.wrapping_sub(b'0') + 1) % 10)).collect(),
        })
    };
    let holder = CardholderCard {
        pan: c.pan.clone(),
        expiry: typed_expiry.unwrap_or(&c.expiry).to_string(),
        cvv2: w.net.ports.test_cards.get(card).map(|t| t.cvv2.clone()),
    };
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
            Channel::Pos => format!("pay {} by tap at a contactless POS", twd(amount)),
            Channel::Online => format!("pay {} online, in the merchant's app", twd(amount)),
            Channel::Atm => format!("take a cash advance of {} at an ATM", twd(amount)),
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
    let c = &w.net.ports.test_cards[card];
    say(
        out,
        "issuer",
        &format!(
            "account of card {} (billed in {})",
            mask(&c.pan),
            codecs::currency::by_numeric(&c.currency).map_or(c.currency.as_str(), |x| x.alpha)
        ),
        &format!("{} booked, open-to-buy {}", money(&c.currency, b), money(&c.currency, after)),
    );
    Ok(b)
}

/// The merchant's currency (TWD) as the ISO 4217 table has it.
fn merchant_currency() -> Result<&'static codecs::currency::Currency> {
    codecs::currency::by_numeric(&format!("{MERCHANT_CURRENCY:03}"))
        .ok_or_else(|| anyhow!("no TWD in the table"))
}

/// The card's charge for a sale, in its billing currency: the network's conversion (DE 6 of the
/// answer, reported as a step) when the card is billed in another currency, else the amount.
fn billed(rsp: &Message, amount: u64, out: Out<'_>) -> u64 {
    match Billing::of(rsp) {
        Some(b) => {
            say(
                out,
                "switch",
                "issuer",
                &format!("{} converted: DE 6 {} (DE 10, DE 51)", twd(amount), b.show()),
            );
            b.amount_minor
        }
        None => amount,
    }
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
    tx.currency = format!("{MERCHANT_CURRENCY:03}");
    tx.tid = if online { "ECOM0001".into() } else { "TERM0001".into() };
    let mut req = tap_request(&w.spec, tapped, &tx)?;
    let (terminal, what) = if online {
        // E-commerce with the phone's cryptogram (docs/network-spec.md §3: DE 22 100, no track).
        req.set_text(22, "100")?;
        req.remove(35);
        ("merchant", format!("0100 e-commerce purchase {}, DE 22 100, STAN {stan:06}", twd(amount)))
    } else {
        ("POS terminal", format!("0100 contactless purchase {}, DE 22 071, STAN {stan:06}", twd(amount)))
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
    let taiwan = TerminalConfig {
        country: MERCHANT_COUNTRY,
        currency: MERCHANT_CURRENCY,
        ..TerminalConfig::default()
    };
    let tapped = tap(&mut p.phone, &taiwan, &tx).map_err(|e| anyhow!("tap: {e}"))?;
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
    let billed_minor = billed(&rsp, amount, out);
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
            twd(amount),
            atc_of(&tapped.icc),
            rsp.text(38).unwrap_or_default(),
            if arpc == Some(true) { "ok" } else { "refused" }
        ),
        amount_minor: amount,
        billed_minor,
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
        &format!("checkout {}: asks the card for an online cryptogram", twd(amount)),
    );
    let d = now().emv_date();
    let oc = p.phone.online_cryptogram(&OnlineTx {
        amount,
        country: MERCHANT_COUNTRY_BCD,
        currency: MERCHANT_CURRENCY_BCD,
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
    let tapped = Tapped::from(oc);
    let (rsp, arpc, rc) = authorize(w, p, &tapped, amount, true, out).await?;
    let billed_minor = billed(&rsp, amount, out);
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
            twd(amount),
            atc_of(&tapped.icc),
            rsp.text(38).unwrap_or_default(),
            if arpc == Some(true) { "ok" } else { "refused" }
        ),
        amount_minor: amount,
        billed_minor,
        booked_minor: b,
        device_pan: mask(&tapped.pan),
    })
}

async fn pay_atm(w: &mut World, p: &mut ProvisionedPhone, amount: u64, out: Out<'_>) -> Result<Run> {
    let before = w.open_to_buy(p.card)?;
    let pin = Pin::new(&w.net.ports.test_cards[p.card].pin)?;
    say(out, "cardholder", "ATM", &format!("taps the phone, enters the PIN, asks {} cash", twd(amount)));
    let (o, read) = w.cash_advance(&mut p.phone, amount, &pin, Fault::None)?;
    let read = read.unwrap_or_default();
    let card_pan = mask(&w.net.ports.test_cards[p.card].pan);
    // The journal keeps the PAN masked: the token BIN (first six) and a PAN other than the card's.
    let token = read.starts_with(TOKEN_BIN) && read != card_pan;
    atm_steps(out, &o, &read, token);
    let billed_minor = match o.billing {
        Some(b) => b.at_same_rate(o.dispensed, merchant_currency()?).ok_or_else(|| anyhow!("conversion"))?,
        None => o.dispensed,
    };
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
            twd(amount),
            twd(o.dispensed),
            o.dispensed / 10_000,
            o.available_after.map(|a| money(&card_currency_of(&o), a)).unwrap_or_else(|| "?".into()),
            if o.arpc_accepted == Some(true) { "ok" } else { "refused" }
        ),
        amount_minor: amount,
        billed_minor,
        booked_minor: b,
        device_pan: read,
    })
}

/// The card's currency as the ATM's answer shows it: its billing currency when the network
/// converted, else the ATM's own.
fn card_currency_of(o: &Outcome) -> String {
    o.billing.map_or_else(|| format!("{MERCHANT_CURRENCY:03}"), |b| b.currency.numeric.to_string())
}

/// The merchant's country and currency as EMV tags 9F1A and 5F2A carry them (BCD).
const MERCHANT_COUNTRY_BCD: [u8; 2] = [0x01, 0x58];
const MERCHANT_CURRENCY_BCD: [u8; 2] = [0x09, 0x01];

/// The ATM's side of a cash advance, as steps.
pub(super) fn atm_steps(out: Out<'_>, o: &Outcome, read: &str, token: bool) {
    say(out, "phone", "ATM", &format!("{} {read}, ARQC", if token { "token" } else { "PAN" }));
    say(
        out,
        "ATM",
        "switch",
        &format!(
            "0200 cash advance {} (DE 3 013000), PIN block under the PIN pad's DUKPT key, STAN {}",
            twd(o.requested),
            o.stan
        ),
    );
    match &o.response_code {
        Some(rc) => say(out, "switch", "ATM", &format!("0210 DE 39 {rc}")),
        None => say(out, "switch", "ATM", "no answer"),
    }
    say(out, "ATM", "phone", arpc_words(o.arpc_accepted));
    if let Some(b) = o.billing {
        say(out, "switch", "ATM", &format!("{} converted: DE 6 {}", twd(o.requested), b.show()));
    }
    say(
        out,
        "ATM",
        "cardholder",
        &format!(
            "{} dispensed{}{}",
            twd(o.dispensed),
            o.available_after
                .map(|a| format!("; screen: {} left on the credit line", money(&card_currency_of(o), a)))
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
