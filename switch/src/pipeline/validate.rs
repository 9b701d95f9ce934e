//! Validate: the request parsed once into a [`Txn`], its format checked by the network's rules
//! (`crate::validate`, which certification reports against too), and its chip data held against
//! the message: the amount and currency the card signed are the ones asked for (DE 4 = 9F02,
//! DE 49 = 5F2A), the card is the one named (DE 2 = 5A, DE 23 = 5F34 when the card gave them),
//! an online request carries an ARQC (not the card's own decline, AAC, nor an offline TC), and
//! DE 22 says what is actually present. Otherwise 12 (13 for the amount), and nothing is
//! forwarded or booked.

use codecs::iso8583::{Message, Pan, ResponseCode};

use super::chip::{Chip, CryptogramType};
use super::{Class, Decline, Pipeline, Stage, Txn};
use crate::registry::Identity;

fn format_error(reason: impl Into<String>) -> Decline {
    Decline::new(ResponseCode::FORMAT_ERROR, Stage::Validate, reason)
}

fn invalid(reason: impl Into<String>) -> Decline {
    Decline::new(ResponseCode::INVALID_TRANSACTION, Stage::Validate, reason)
}

/// The PAN as the acquirer sent it: DE 2, else the digits of DE 35 before the separator.
fn pan_of(msg: &Message) -> Result<Option<Pan>, Decline> {
    if msg.contains(2) {
        let p = msg.pan_clear().map_err(|_| format_error("DE 2 is not digits"))?;
        return p
            .and_then(|p| Pan::from_digits(p.expose()))
            .map(Some)
            .ok_or_else(|| format_error("DE 2 is not a PAN of 12 to 19 digits"));
    }
    let Some(t2) = msg.text(35) else { return Ok(None) };
    let digits: String = t2.chars().take_while(char::is_ascii_digit).collect();
    Pan::from_digits(&digits).map(Some).ok_or_else(|| format_error("DE 35 does not start with a PAN"))
}

/// Parses the request once into the context the stages read.
pub fn parse(
    p: &Pipeline,
    listener: &super::ListenerCtx,
    msg: Message,
    identity: Identity,
    class: Class,
) -> Result<Txn, (Message, Decline)> {
    let text = |de| msg.text(de).map(|c| c.into_owned()).unwrap_or_default();
    let pan = match pan_of(&msg) {
        Ok(p) => p,
        Err(d) => return Err((msg, d)),
    };
    let amount = match msg.amount() {
        Ok(a) => a.map(|a| a.0).unwrap_or(0),
        Err(_) => return Err((msg, format_error("DE 4 is not digits"))),
    };
    let chip = match msg.icc_data() {
        Ok(Some(icc)) => match Chip::parse(icc) {
            Ok(c) => Some(c),
            Err(e) => return Err((msg, format_error(e))),
        },
        Ok(None) => None,
        Err(e) => return Err((msg, format_error(format!("DE 55: {e}")))),
    };
    let card = pan.as_ref().map(|pan| p.fingerprint(pan.expose()));
    Ok(Txn {
        class,
        mti: msg.mti(),
        tid: text(41),
        stan: text(11),
        transmitted: text(7),
        currency: text(49),
        processing_code: text(3),
        bdk: listener.bdk.clone(),
        entry: msg.text(22).map(|c| c.into_owned()),
        amount,
        pan,
        card,
        chip,
        identity,
        msg,
    })
}

/// An authorization or financial request (0100, 0200).
pub fn authorization(txn: &Txn) -> Result<(), Decline> {
    // DE 55 was parsed by `parse` (a request whose DE 55 does not parse goes no further).
    let checked = match &txn.chip {
        Some(chip) => crate::validate::authorization_parsed(&txn.msg, &|t| chip.has(t)),
        None => crate::validate::authorization(&txn.msg),
    };
    checked.map_err(|e| format_error(e.reason))?;
    entry_mode_matches(txn)?;
    if let Some(chip) = &txn.chip {
        chip_matches(txn, chip)?;
    }
    Ok(())
}

/// DE 22 says what is present: chip and in-app modes carry chip data; magnetic-stripe modes carry
/// track 2 and no chip data; a key-entered PAN carries neither track nor chip data.
fn entry_mode_matches(txn: &Txn) -> Result<(), Decline> {
    let has_track = txn.msg.contains(35);
    let has_chip = txn.chip.is_some();
    let entry = txn.pan_entry();
    let ok = match entry {
        "05" | "07" => has_chip,
        "10" => has_chip && !has_track,
        "90" | "91" | "02" => has_track && !has_chip,
        "01" | "81" => !has_track && !has_chip,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "DE 22 {} does not match what the request carries (track 2: {has_track}, chip data: {has_chip})",
            txn.entry.as_deref().unwrap_or("")
        )))
    }
}

fn chip_matches(txn: &Txn, chip: &Chip) -> Result<(), Decline> {
    match chip.amount_authorised() {
        Some(a) if a == txn.amount => {}
        Some(_) => {
            return Err(Decline::new(
                ResponseCode::INVALID_AMOUNT,
                Stage::Validate,
                "DE 4 differs from the amount the card signed (9F02)",
            ));
        }
        None => return Err(invalid("9F02 is missing or not n 12")),
    }
    match chip.currency() {
        Some(c) if c == txn.currency => {}
        Some(_) => {
            return Err(Decline::new(
                ResponseCode::INVALID_AMOUNT,
                Stage::Validate,
                "DE 49 differs from the currency the card signed (5F2A)",
            ));
        }
        None => return Err(invalid("5F2A is missing or not n 3")),
    }
    if let Some(card_pan) = chip.pan_digits()
        && txn.pan.as_ref().is_none_or(|p| p.expose() != card_pan)
    {
        return Err(invalid("DE 2 is not the PAN the card gave (5A)"));
    }
    if let Some(psn) = chip.psn() {
        let sent = txn.msg.text(23).and_then(|p| p.parse::<u8>().ok());
        if sent != Some(psn) {
            return Err(invalid("DE 23 is not the PAN sequence number the card gave (5F34)"));
        }
    }
    match chip.cryptogram_type() {
        Some(CryptogramType::Arqc) => Ok(()),
        Some(CryptogramType::Aac) => Err(invalid("the card declined (AAC) and the request went online")),
        Some(CryptogramType::Tc) => Err(invalid("an offline approval (TC) sent as an online request")),
        _ => Err(invalid("9F27 does not announce an ARQC")),
    }
}

/// A reversal or advice (0400, 0420, 0120).
pub fn reference(txn: &Txn) -> Result<(), Decline> {
    crate::validate::reversal_or_advice(&txn.msg).map_err(|e| format_error(e.reason))?;
    if txn.transmitted.is_empty() {
        return Err(format_error("missing DE 7"));
    }
    Ok(())
}
