//! Respond: the answer to the acquirer is always built from the acquirer's own request (after
//! sanitize), with the issuer's decision copied in — so a token request's answer carries the
//! token on every path (approval, decline, route failure, timeout, stand-in) and the card's PAN,
//! which only the request towards the issuer held, never goes back.

use codecs::iso8583::{Message, ResponseCode};
use codecs::tlv::{Tag, TlvBuilder};

use super::{Pipeline, Txn};
use crate::detokenize::TokenContext;

/// The issuer's decision elements copied into the acquirer's answer.
const DECISION: [u16; 5] = [38, 39, 44, 54, 55];

/// An answer to `req` with DE 39 = `rc`: the response MTI and the echoed elements.
pub fn answer(req: &Message, rc: ResponseCode) -> Message {
    codecs::iso8583::reply::response(req, rc.as_str())
}

/// The acquirer's answer from the issuer's: the acquirer's request echoed, the decision taken.
pub fn from_issuer(txn: &Txn, issuer: &Message) -> Message {
    let mut rsp = answer(&txn.msg, ResponseCode::SYSTEM_ERROR);
    take_decision(&mut rsp, issuer);
    rsp
}

/// Copies the issuer's decision elements into an answer for the acquirer.
pub fn take_decision(rsp: &mut Message, issuer: &Message) {
    for de in DECISION {
        rsp.remove(de);
        let _ = rsp.copy_from(issuer, de);
    }
    if !rsp.contains(39) {
        let _ = rsp.set_text(39, ResponseCode::SYSTEM_ERROR.as_str());
    }
}

/// The tag 91 of `txn`'s chip data under the IMK `imk` for `rsp`'s DE 39, put in DE 55:
/// ARPC ‖ ARC (method 1) or ARPC ‖ CSU (method 2), as the issuer would. `pan` is the PAN the
/// card's keys are derived from (the token's for a token).
pub fn attach_arpc(p: &Pipeline, imk: &str, txn: &Txn, rsp: &mut Message) {
    let rc = rsp.text(39).map(|c| c.into_owned()).unwrap_or_default();
    match arpc(p, imk, txn, &rc) {
        Some(t91) => {
            let mut b = TlvBuilder::new();
            if b.primitive(Tag::new(0x91), &t91).is_ok() {
                let _ = rsp.set_icc_data(&b.finish());
            }
        }
        None => {
            rsp.remove(55);
        }
    }
}

fn arpc(p: &Pipeline, imk: &str, txn: &Txn, rc: &str) -> Option<Vec<u8>> {
    let chip = txn.chip.as_ref()?;
    let pan = txn.pan.as_ref()?;
    let cvn = crypto::emv::Cvn::from_iad(pan.expose(), chip.tag(0x9F10)?)?;
    let digits = crypto::emv::PanDigits::new(pan.expose()).ok()?;
    let inputs = super::verify::card_inputs(txn, &digits)?;
    let arc: [u8; 2] = rc.as_bytes().try_into().ok()?;
    let (input, tail) = match cvn.arpc_method() {
        Some(2) => {
            let csu = [0, 0, 0, if rc == ResponseCode::APPROVED.as_str() { 0x80 } else { 0 }];
            (crypto::emv::ArpcInput::Csu { csu, proprietary: vec![] }, csu.to_vec())
        }
        _ => (crypto::emv::ArpcInput::Arc(arc), arc.to_vec()),
    };
    let mut out = p.hsm.generate_arpc(imk, cvn, &inputs, chip.cryptogram()?, &input).ok()?;
    out.extend_from_slice(&tail);
    Some(out)
}

/// A token request's answer: the device verifies the ARPC with its token keys, so tag 91 is the
/// token service's; and whatever the issuer's answer held, DE 2, 14 and 35 are the acquirer's own.
pub fn for_token(p: &Pipeline, txn: &Txn, token: Option<&TokenContext>, rsp: &mut Message) {
    let Some(ctx) = token else { return };
    for de in [2u16, 14] {
        rsp.remove(de);
        let _ = rsp.copy_from(&txn.msg, de);
    }
    rsp.remove(35);
    if let Some(imk) = &ctx.arpc_imk {
        attach_arpc(p, imk, txn, rsp);
    }
}
