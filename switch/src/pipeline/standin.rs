//! Stand-in: the issuer cannot be reached. The switch decides within the limits the issuer
//! agreed to, only for what it verified itself (see `crate::standin`), keeps the card's running
//! total durably, and owes the issuer an 0120 advice of each approval.

use codecs::iso8583::{Message, Mti, ResponseCode};

use super::{Pipeline, Txn};
use crate::standin::{StandInDecision, StandInRequest};

/// The answer, and the advice owed when approved.
pub fn decide(
    p: &Pipeline,
    txn: &Txn,
    issuer: &str,
    sent: &Message,
    verified: bool,
    random: u32,
) -> (Message, Option<Message>) {
    let Some(rules) = p.issuers.get(issuer) else {
        return (super::respond::answer(&txn.msg, ResponseCode::ISSUER_UNAVAILABLE), None);
    };
    let card = txn.card.clone().unwrap_or_default();
    let decision = rules.stand_in.decide(
        &StandInRequest {
            processing_code: &txn.processing_code,
            amount_minor: txn.amount,
            currency: &txn.currency,
            has_pin: txn.msg.contains(52),
            verified,
        },
        |amount, max| p.state.add_stand_in(issuer, &card, amount, max),
    );
    let rc = decision.response_code();
    let mut rsp = super::respond::answer(&txn.msg, rc);
    if let Some(imk) = &rules.imk_ac {
        super::respond::attach_arpc(p, imk, txn, &mut rsp);
    }
    if decision != StandInDecision::Approve {
        return (rsp, None);
    }
    let _ = rsp.set_text(38, &format!("S{:05}", random % 100_000));
    let mut advice = crate::wire::derived(sent, Mti::AUTHORIZATION_ADVICE, ResponseCode::APPROVED.as_str());
    let _ = advice.copy_from(sent, 55);
    (rsp, Some(advice))
}
