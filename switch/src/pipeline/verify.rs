//! Verify: for an issuer whose IMK-AC the switch holds, the card's ARQC is verified here (82 and
//! nothing forwarded when it fails) and its ATC accepted once in the card's durable window, which
//! is what lets stand-in approve it later; a PIN block from a DUKPT terminal is translated to the
//! issuer's zone PIN key inside the HSM. A token's cryptogram was verified by the token service.

use codecs::iso8583::{Message, ResponseCode};

use super::{Decline, IssuerRules, Pipeline, Stage, Txn};
use crate::detokenize::TokenContext;
use crate::state::Claim;

fn fail(code: ResponseCode, reason: impl Into<String>) -> Decline {
    Decline::new(code, Stage::Verify, reason)
}

/// Returns whether the switch verified the cryptogram (itself, or the token service did), and
/// the ATC claimed in a shared store when it accepted one.
pub fn verify(
    p: &Pipeline,
    txn: &Txn,
    rules: &IssuerRules,
    token: Option<&TokenContext>,
    sent: &mut Message,
    now_ms: u64,
) -> Result<(bool, Option<Claim>), Decline> {
    let verified = match token {
        Some(t) => (t.arpc_imk.is_some(), None),
        None => on_behalf(p, txn, rules, now_ms)?,
    };
    translate_pin(p, txn, rules, token, sent)?;
    Ok(verified)
}

/// The card inputs of the cryptogram of `txn`'s chip data, with `pan` as the card's PAN.
pub fn card_inputs<'a>(txn: &Txn, pan: &'a crypto::emv::PanDigits) -> Option<crypto::emv::CardInputs<'a>> {
    let chip = txn.chip.as_ref()?;
    let psn = txn.msg.text(23).and_then(|p| p.get(1..).and_then(|x| x.parse().ok())).unwrap_or_default();
    Some(crypto::emv::CardInputs {
        pan,
        psn,
        atc: crypto::emv::Atc::from_slice(chip.tag(0x9F36)?).ok()?,
        un: chip.tag(0x9F37).and_then(|u| crypto::emv::UnpredictableNumber::from_slice(u).ok()),
    })
}

fn on_behalf(
    p: &Pipeline,
    txn: &Txn,
    rules: &IssuerRules,
    now_ms: u64,
) -> Result<(bool, Option<Claim>), Decline> {
    let (Some(imk), Some(chip), Some(pan)) = (&rules.imk_ac, &txn.chip, &txn.pan) else {
        return Ok((false, None));
    };
    let Some(cvn) = chip.tag(0x9F10).and_then(|iad| crypto::emv::Cvn::from_iad(pan.expose(), iad)) else {
        tracing::debug!("CVN not recognised from the IAD: left to the issuer");
        return Ok((false, None));
    };
    let data = crypto::emv::ac_data_from_tags(cvn, |t| chip.tag(t))
        .map_err(|e| fail(ResponseCode::FORMAT_ERROR, format!("DE 55: {e}")))?;
    let arqc = chip.cryptogram().ok_or_else(|| fail(ResponseCode::FORMAT_ERROR, "DE 55 lacks 9F26"))?;
    let digits =
        crypto::emv::PanDigits::new(pan.expose()).map_err(|_| fail(ResponseCode::INVALID_CARD, "PAN"))?;
    let inputs =
        card_inputs(txn, &digits).ok_or_else(|| fail(ResponseCode::FORMAT_ERROR, "DE 55 lacks 9F36"))?;
    let atc = inputs.atc.0;
    match p.hsm.verify_arqc(imk, cvn, &inputs, &data, arqc, None) {
        Ok(_) => {}
        Err(e) if e.kind == crypto::ErrorKind::Verification => {
            return Err(fail(ResponseCode::CRYPTOGRAM_FAILURE, "the ARQC does not verify"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "on-behalf verification could not run");
            return Err(fail(ResponseCode::SYSTEM_ERROR, "on-behalf verification could not run"));
        }
    }
    let card = txn.card.as_deref().unwrap_or_default();
    let claim = p
        .state
        .accept_atc(card, u32::from(atc), rules.atc_window, now_ms)
        .map_err(|why| fail(ResponseCode::CRYPTOGRAM_FAILURE, format!("ATC {atc}: {why:?}")))?;
    Ok((true, claim))
}

/// The PIN block of a DUKPT terminal (DE 52, its KSN in DE 53) translated to the issuer's zone PIN
/// key, ISO format 0; the KSN stays on the acquirer side. The clear PIN exists only inside the
/// HSM call. For a token, the terminal bound the block to the token: the HSM re-binds it to the
/// card's PAN, which the issuer verifies with.
fn translate_pin(
    p: &Pipeline,
    txn: &Txn,
    rules: &IssuerRules,
    token: Option<&TokenContext>,
    sent: &mut Message,
) -> Result<(), Decline> {
    let Some(block) = sent.bytes(52) else { return Ok(()) };
    let bdk = txn.bdk.as_deref();
    let (Some(bdk), Some(zpk)) = (bdk, &rules.zpk) else {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            "PIN block received but the listener has no BDK or the issuer no ZPK",
        ));
    };
    let Some(ksn) = txn.msg.bytes(53) else {
        return Err(fail(ResponseCode::FORMAT_ERROR, "PIN block without its KSN (DE 53)"));
    };
    let card_pan = sent.card_number().unwrap_or_default();
    let from_pan = match (token, &txn.pan) {
        (Some(_), Some(t)) => t.expose().to_string(),
        _ => card_pan.clone(),
    };
    let fmt = crypto::pin::PinBlockFormat::Iso0;
    let src = crypto::hsm::PinSource::Dukpt { bdk, ksn: &ksn, format: fmt };
    match p.hsm.translate_pin_pan_change(&src, &block, &from_pan, zpk, fmt, &card_pan) {
        Ok(out) => {
            sent.set_bytes(52, out).map_err(|_| fail(ResponseCode::SYSTEM_ERROR, "DE 52"))?;
            sent.remove(53);
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "PIN translation failed");
            let code = match e.kind {
                crypto::ErrorKind::Pin | crypto::ErrorKind::Verification => ResponseCode::WRONG_PIN,
                crypto::ErrorKind::Ksn => ResponseCode::FORMAT_ERROR,
                _ => ResponseCode::SYSTEM_ERROR,
            };
            Err(fail(code, "PIN translation failed"))
        }
    }
}
