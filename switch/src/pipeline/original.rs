//! Originals: the switch remembers every authorization it forwarded or answered (durably, in the
//! state book), and accepts a reversal or advice only against one of them — the same acquirer
//! (proven by the connection), the same terminal, the same card and currency, for no more than
//! its amount. Without an original: 25; against someone else's, or for more: 12. Nothing reaches
//! an issuer otherwise. A repeat of an accepted reversal (its first MTI's repeat too: 0401, 0421)
//! is answered again and sends nothing new, and so is a reversal under a new STAN that gives back
//! no more than the original's earlier reversals already did.

use std::sync::Arc;

use codecs::iso8583::{Message, Mti, ResponseCode};

use super::{Decline, Pipeline, Stage, Txn};
use crate::state::{OriginalRecord, original_key};
use crate::store::SafKind;

fn refuse(code: ResponseCode, reason: impl Into<String>) -> Decline {
    Decline::new(code, Stage::Original, reason)
}

/// The original's key (from DE 90: original MTI, STAN, DE 7) and the reversal's own key.
pub fn keys(txn: &Txn) -> (String, String) {
    let acquirer = &txn.identity.acquirer.id;
    let own = original_key(acquirer, &txn.tid, txn.first_mti().as_str(), &txn.stan, &txn.transmitted);
    let orig = txn
        .msg
        .text(90)
        .filter(|d| d.len() >= 20 && d.is_ascii())
        .map(|d| {
            // DE 90 may name the original by its repeat MTI: it is keyed under its first.
            let mti = Mti::from_digits(&d.as_bytes()[..4]).map(super::first_mti);
            let mti = mti.as_ref().map(Mti::as_str).unwrap_or(&d[..4]);
            original_key(acquirer, &txn.tid, mti, &d[4..10], &d[10..20])
        })
        .unwrap_or_default();
    (orig, own)
}

/// Records a request about to be forwarded (its outcome unknown until answered).
pub fn record_forwarded(p: &Pipeline, txn: &Txn, issuer: &str, now_ms: u64) {
    p.state.record_original(record(txn, issuer, None, now_ms));
}

/// Records the answer given.
pub fn record_answered(p: &Pipeline, txn: &Txn, issuer: &str, answer: &Message, now_ms: u64) {
    let rc = answer.text(39).map(|c| c.into_owned()).unwrap_or_default();
    p.state.record_original(record(txn, issuer, Some(rc), now_ms));
}

fn record(txn: &Txn, issuer: &str, rc: Option<String>, now_ms: u64) -> OriginalRecord {
    OriginalRecord {
        key: original_key(
            &txn.identity.acquirer.id,
            &txn.tid,
            txn.first_mti().as_str(),
            &txn.stan,
            &txn.transmitted,
        ),
        card: txn.card.clone().unwrap_or_default(),
        amount_minor: txn.amount,
        currency: txn.currency.clone(),
        response_code: rc,
        issuer: issuer.to_string(),
        settled_minor: 0,
        at_ms: now_ms,
    }
}

/// What accepting a reversal or advice comes to.
pub enum Settled {
    /// Nothing to pass on: the original was declined, or this very message was accepted before.
    Nothing,
    /// Owed to the issuer (made durable before the acquirer is answered).
    Owed { issuer: Arc<str>, kind: SafKind, msg: Message },
}

/// The amount a reversal gives back: DE 4 less the replacement amount (DE 95's first 12 digits,
/// what was actually dispensed), or all of DE 4.
fn reversed_amount(txn: &Txn) -> Result<u64, Decline> {
    let Some(d95) = txn.msg.text(95) else { return Ok(txn.amount) };
    let actual: u64 = d95
        .get(..12)
        .filter(|a| a.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| refuse(ResponseCode::FORMAT_ERROR, "DE 95 does not start with 12 digits"))?;
    txn.amount
        .checked_sub(actual)
        .ok_or_else(|| refuse(ResponseCode::INVALID_TRANSACTION, "DE 95 is more than DE 4"))
}

pub fn settle(
    p: &Pipeline,
    txn: &Txn,
    original: Option<OriginalRecord>,
    already: Option<OriginalRecord>,
    now_ms: u64,
) -> Result<Settled, Decline> {
    let Some(mut orig) = original else {
        return Err(refuse(
            ResponseCode::NO_ORIGINAL,
            "no original of this acquirer and terminal matches DE 90",
        ));
    };
    let card = txn.card.as_deref().unwrap_or_default();
    if orig.card != card || orig.currency != txn.currency {
        return Err(refuse(
            ResponseCode::INVALID_TRANSACTION,
            "card or currency differs from the original's",
        ));
    }
    if txn.amount > orig.amount_minor {
        return Err(refuse(ResponseCode::INVALID_TRANSACTION, "amount above the original's"));
    }
    let is_reversal = txn.class == super::Class::Reversal;
    let wanted = if is_reversal { reversed_amount(txn)? } else { txn.amount };
    if already.is_some() {
        return Ok(Settled::Nothing);
    }
    if matches!(orig.response_code.as_deref(), Some(rc) if rc != ResponseCode::APPROVED.as_str()) {
        // The original was declined: nothing was authorized, nothing to put right.
        own_record(p, txn, &orig.issuer, now_ms);
        return Ok(Settled::Nothing);
    }
    if is_reversal && orig.settled_minor > 0 && wanted <= orig.settled_minor {
        // An earlier reversal already gave back at least as much (a second reversal under a new
        // STAN, a terminal's and a host's both): the switch's own record answers it, and the
        // issuer, who already reversed it, is owed nothing more.
        own_record(p, txn, &orig.issuer, now_ms);
        return Ok(Settled::Nothing);
    }
    if is_reversal {
        // Reversals replace: what stays authorized is the smallest amount any of them left.
        orig.settled_minor = orig.settled_minor.max(wanted);
    } else {
        let total = orig.settled_minor.saturating_add(wanted);
        if total > orig.amount_minor {
            return Err(refuse(ResponseCode::INVALID_TRANSACTION, "advices above the original's amount"));
        }
        orig.settled_minor = total;
    }
    let issuer: Arc<str> = Arc::from(orig.issuer.as_str());
    let rules = p.issuers.get(&issuer).ok_or_else(|| {
        refuse(ResponseCode::NO_SUCH_ISSUER, "the original's issuer is no longer configured")
    })?;
    let mut fwd = txn.msg.clone();
    p.detokenizer.detokenize_reference(&mut fwd).map_err(|r| {
        refuse(
            ResponseCode::parse(r.0).unwrap_or(ResponseCode::SYSTEM_ERROR),
            "the token service refused the token",
        )
    })?;
    let mut msg = super::route::translate(fwd, &rules.spec)?;
    let kind = if is_reversal { SafKind::Reversal } else { SafKind::Advice };
    if is_reversal {
        msg.set_mti(Mti::REVERSAL_ADVICE);
    }
    let issuer_name = orig.issuer.clone();
    p.state.record_original(orig);
    own_record(p, txn, &issuer_name, now_ms);
    Ok(Settled::Owed { issuer, kind, msg })
}

fn own_record(p: &Pipeline, txn: &Txn, issuer: &str, now_ms: u64) {
    p.state.record_original(record(txn, issuer, Some(ResponseCode::APPROVED.as_str().into()), now_ms));
}
