//! Dedupe: a terminal that did not hear its answer sends the same request again; it gets the
//! original answer, never a second authorization. A repeat is the same acquirer (proven by its
//! connection), terminal, MTI, STAN and DE 7, with the same DE 2, 4 and 49 — a repeat MTI (0401,
//! 0421, 0101) counting as its first transmission's (0400, 0420, 0100); identifiers reused
//! with another card or amount get 94 and never see the cached answer. Runs after identify and
//! validate, so nothing unidentified or malformed is cached.

use bytes::Bytes;
use codecs::iso8583::{Message, ResponseCode};

use super::{Decline, Stage, Txn};
use crate::dedupe::{DuplicateCache, Seen, TransmissionKey};

pub enum Outcome {
    New(TransmissionKey),
    Answered(Bytes),
    InFlight(tokio::sync::watch::Receiver<Option<Bytes>>),
    Refused(Decline),
}

pub fn check(cache: &DuplicateCache, txn: &Txn, now_ms: u64) -> Outcome {
    let raw = |de| txn.msg.field(de).map(|f| f.data);
    let key =
        cache.key(&txn.identity.acquirer.id, txn.first_mti().digits(), &txn.tid, &txn.stan, &txn.transmitted);
    let content = cache.content(raw(2).or(raw(35)), raw(4), raw(49));
    match cache.check(&key, content, now_ms) {
        Seen::New => Outcome::New(key),
        Seen::Answered(b) => Outcome::Answered(b),
        Seen::InFlight(rx) => Outcome::InFlight(rx),
        Seen::Mismatch => Outcome::Refused(Decline::new(
            ResponseCode::DUPLICATE,
            Stage::Dedupe,
            "terminal, STAN and DE 7 of an earlier transaction with another card, amount or currency",
        )),
    }
}

/// A cached answer as a message of the request's spec (it was encoded in it).
pub fn decode_cached(req: &Message, bytes: Bytes) -> Message {
    Message::decode(req.spec(), bytes)
        .unwrap_or_else(|_| super::respond::answer(req, ResponseCode::SYSTEM_ERROR))
}

/// The answer a repeat of `txn` gets: the cached answer of its first transmission, under the
/// repeat's own response MTI (a 0401 is answered 0411 with its 0400's answer).
pub fn cached_answer(txn: &Txn, bytes: Bytes) -> Message {
    let mut answer = decode_cached(&txn.msg, bytes);
    if let Some(r) = txn.mti.response() {
        answer.set_mti(r);
    }
    answer
}
