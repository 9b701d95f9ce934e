//! The declined cases, one per reason the network knows, each with the response code
//! docs/network-spec.md §6 gives it: over the credit line (51), wrong PIN (55), PIN tries
//! exceeded (75), a tampered ARQC and a replayed ATC (82), an expired card (54), a card number the
//! issuer never issued (14), a BIN no issuer is routed for (15), a token keyed in outside its
//! domain controls (12), a token the issuer suspended (57) or deleted (62), and provisionings whose
//! ID&V the issuer declines — a wrong OTP (05), a wrong expiry (54) — leaving nothing on the phone.
//! They run on test cards of their own (5 to 8), except the wrong OTP: card 1 is the one whose
//! issuer asks for an OTP, and a declined provisioning changes nothing on it.

use anyhow::{Result, anyhow, bail};
use atm_sim::atm::Fault;
use crypto::pin::Pin;
use emv::card::mask;
use emv::kernel::{Tapped, TerminalConfig, TxData, tap};
use phone::Phone;
use serde_json::json;
use terminal_kit::pos::{TestCard, Tx, chip_request, tap_request};
use wallet_sim::flows::Model;

use super::runs::{Otp, atm_steps, phone_path, provision_with};
use super::{
    Decline, Out, ProvisionedPhone, World, arpc_check, arpc_words, atc_of, eur, now, random4, rc_of, say, twd,
};

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
            out("[decline] the wallet token keyed in at a terminal (outside its domain controls)");
            let r = token_domain_decline(w, &mut p, out).await;
            d.push(decline("token outside its domain: keyed in (POS)", "pos", "12", r, out));
            let r = token_lifecycle_decline(w, &mut p, "suspend", out).await;
            d.push(decline("token suspended by the issuer (POS)", "pos", "57", r, out));
            let r = token_lifecycle_decline(w, &mut p, "delete", out).await;
            d.push(decline("token deleted by the issuer (POS)", "pos", "62", r, out));
        }
        Err(e) => {
            for (reason, rc) in [
                ("token outside its domain: keyed in (POS)", "12"),
                ("token suspended by the issuer (POS)", "57"),
                ("token deleted by the issuer (POS)", "62"),
            ] {
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
    // One generic decline for any ID&V mismatch: a guesser must not learn which half was wrong.
    d.push(decline("ID&V declined: wrong expiry (provisioning)", "provisioning", "05", r, out));
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
    say(out, "cardholder", "ATM", &format!("taps the phone, enters a PIN, asks {} cash", twd(amount)));
    let (o, read) = w.cash_advance(&mut p.phone, amount, &pin, Fault::None)?;
    atm_steps(out, &o, &read.unwrap_or_default(), false);
    if o.dispensed != 0 {
        bail!("{} dispensed on a decline", twd(o.dispensed));
    }
    Ok((o.response_code.unwrap_or_default(), format!("{} asked, nothing dispensed", twd(amount))))
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

/// The phone tapped at the POS for EUR 10.00, today, the steps said (`what` names the number the
/// terminal reads: `PAN` or `token`).
fn tap_for_ten_euros(p: &mut ProvisionedPhone, what: &str, out: Out<'_>) -> Result<Tapped> {
    let tx = TxData { amount: 1_000, tx_type: 0x00, date: now().emv_date(), un: random4() };
    say(out, "cardholder", "POS terminal", "taps the phone");
    let tapped = tap(&mut p.phone, &TerminalConfig::default(), &tx).map_err(|e| anyhow!("tap: {e}"))?;
    say(
        out,
        "phone",
        "POS terminal",
        &format!("{what} {}, ARQC with ATC {}", mask(&tapped.pan), atc_of(&tapped.icc)),
    );
    Ok(tapped)
}

async fn pos_decline(
    w: &mut World,
    p: &mut ProvisionedPhone,
    how: Tamper,
    out: Out<'_>,
) -> Result<(String, String)> {
    let tapped = tap_for_ten_euros(p, "PAN", out)?;
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
    codecs::pan::with_check_digit(body).unwrap_or_else(|| body.to_string())
}

/// The token read off the phone, then sent as a key-entered transaction (DE 22 `010`): a wallet
/// token is only good for the entry modes its requestor was given (docs/token-service.md).
async fn token_domain_decline(
    w: &mut World,
    p: &mut ProvisionedPhone,
    out: Out<'_>,
) -> Result<(String, String)> {
    let tx = TxData { amount: 1_000, tx_type: 0x00, date: now().emv_date(), un: random4() };
    say(out, "cardholder", "POS terminal", "taps the phone");
    let tapped = tap(&mut p.phone, &TerminalConfig::default(), &tx).map_err(|e| anyhow!("tap: {e}"))?;
    let stan = w.next_stan();
    let mut t = Tx::purchase(stan, 1_000, 0);
    t.date = now().emv_date();
    let mut req = tap_request(&w.spec, &tapped, &t)?;
    req.set_text(22, "010")?;
    say(
        out,
        "POS terminal",
        "switch",
        &format!("0100 {} with token {} keyed in (DE 22 010), STAN {stan:06}", eur(1_000), mask(&tapped.pan)),
    );
    let rsp = w.pos_call(&req).await?;
    let rc = rc_of(&rsp);
    say(out, "switch", "POS terminal", &format!("0110 DE 39 {rc}"));
    Ok((rc, "entry mode 01 is not in the token's domain".into()))
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
    let tapped = tap_for_ten_euros(p, "token", out)?;
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
            let refused = e
                .downcast_ref::<wallet_sim::flows::Refused>()
                .ok_or_else(|| anyhow!("provisioning failed for another reason than ID&V: {e:#}"))?;
            let rc = refused.response_code.clone().unwrap_or_default();
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

    #[test]
    fn luhn_pans_are_valid() {
        let p = luhn_pan("476173999999999");
        assert_eq!(p.len(), 16);
        assert!(codecs::pan::luhn_valid(p.as_bytes()));
    }
}
