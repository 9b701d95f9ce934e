//! Route: the card's BIN (longest prefix) names the issuer; the request is carried over into the
//! issuer link's spec.

use std::sync::Arc;

use codecs::iso8583::{Message, ResponseCode, Spec};

use super::{Decline, IssuerRules, Pipeline, Stage};

/// The issuer of the request going to the issuer (a token already replaced by its card).
pub fn route<'p>(p: &'p Pipeline, sent: &Message) -> Result<&'p IssuerRules, Decline> {
    let pan = sent
        .card_number()
        .ok_or_else(|| Decline::new(ResponseCode::INVALID_CARD, Stage::Route, "no PAN to route on"))?;
    p.issuer_for(&pan).ok_or_else(|| {
        Decline::new(ResponseCode::NO_SUCH_ISSUER, Stage::Route, "no issuer routed for the BIN")
    })
}

/// `msg` in the issuer link's spec (itself, when the listener speaks that spec); an element the
/// spec cannot carry is named.
pub fn translate(msg: Message, spec: &Arc<Spec>) -> Result<Message, Decline> {
    if Arc::ptr_eq(msg.spec(), spec) {
        return Ok(msg);
    }
    crate::wire::translate(&msg, spec).map_err(|e| {
        Decline::new(
            ResponseCode::FORMAT_ERROR,
            Stage::Route,
            format!("the issuer's spec cannot carry the request: {e}"),
        )
    })
}
