//! Store-and-forward: messages owed to an issuer (reversal advices after a timeout or a dispense
//! fault, advices of stand-in approvals) are persisted before the acquirer is answered, and retried
//! with exponential back-off until the issuer acknowledges them — across switch restarts.
//!
//! [`RetryPolicy`] says when to retry, as a pure function of the attempt count, the clock and a
//! random draw. [`SafQueue`] is one issuer link's queue over the store: messages are sealed
//! (AES-256-GCM, bound to kind, link and original) before they are written, because a reversal
//! carries the card's PAN. The issuer link's SAF worker drains it.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::error::Result;
use crate::store::{NewSafEntry, SafEntry, SafKind, Store};
use crypto::seal::Sealer;

/// Retry policy for one issuer link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub base_ms: u64,
    /// The delay never exceeds this.
    pub max_ms: u64,
    /// Up to this fraction (per mille) of the delay is added at random, so that many entries due
    /// together do not hit a recovering issuer in one burst.
    pub jitter_permille: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { base_ms: 1_000, max_ms: 60_000, jitter_permille: 200 }
    }
}

impl RetryPolicy {
    /// When to try again after `attempts` failed attempts (1 after the first failure), given the
    /// current time and a random draw. Delays double from `base_ms` up to `max_ms`.
    pub fn next_attempt_ms(&self, attempts: u32, now_ms: u64, random: u32) -> u64 {
        let exp = attempts.saturating_sub(1).min(32);
        let delay = self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        let jitter_span = delay.saturating_mul(u64::from(self.jitter_permille)) / 1000;
        let jitter = if jitter_span == 0 { 0 } else { u64::from(random) % (jitter_span + 1) };
        now_ms.saturating_add(delay).saturating_add(jitter)
    }
}

/// One issuer link's store-and-forward queue.
pub struct SafQueue {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    policy: RetryPolicy,
    link: String,
}

/// A due entry with its message opened.
pub struct DueMessage {
    pub entry: SafEntry,
    pub message: Zeroizing<Vec<u8>>,
}

/// What [`SafQueue::due`] found.
#[derive(Default)]
pub struct Due {
    pub messages: Vec<DueMessage>,
    /// Entries moved to quarantine on the way.
    pub quarantined: u32,
}

/// What an issuer's answer does to a message owed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Taken in charge: the entry leaves the queue.
    Taken,
    /// Refused for good (the issuer says the message itself is wrong): repeating it cannot
    /// help, so it goes to quarantine for the operator, never silently away.
    Refused,
    /// Not taken (no answer, another message, a temporary refusal): tried again later.
    Retry,
}

/// Reads an issuer's answer to a message owed to it. Taken in charge: a response of the same
/// class (0430 to 0420, 0130 to 0120, 0630 to 0620) whose DE 39 says the issuer has it — 00, or
/// 94 (it had it already: an earlier attempt got through); for a reversal also 25 (the issuer
/// never had the original: nothing to put back). Refused for good: 12, 13, 14 or 30 (invalid
/// transaction, amount or card, format error). Anything else (96, 91, no DE 39, another
/// message) keeps it queued.
pub fn delivery(
    kind: SafKind,
    sent: &codecs::iso8583::Message,
    answer: &codecs::iso8583::Message,
) -> Delivery {
    if !answer.mti().is_response() || answer.mti().class() != sent.mti().class() {
        return Delivery::Retry;
    }
    match answer.text(39).as_deref() {
        Some("00") | Some("94") => Delivery::Taken,
        Some("25") if kind == SafKind::Reversal => Delivery::Taken,
        Some("12") | Some("13") | Some("14") | Some("30") => Delivery::Refused,
        _ => Delivery::Retry,
    }
}

impl SafQueue {
    pub fn new(
        store: Arc<dyn Store>,
        sealer: Arc<Sealer>,
        policy: RetryPolicy,
        link: impl Into<String>,
    ) -> Self {
        SafQueue { store, sealer, policy, link: link.into() }
    }

    fn aad(kind: SafKind, link: &str, original_key: &str) -> Vec<u8> {
        format!("saf|{}|{link}|{original_key}", kind.as_str()).into_bytes()
    }

    /// Persists a message owed to the issuer; returns once it is durable. Enqueueing the same
    /// original and kind again keeps the first entry.
    pub fn enqueue(
        &self,
        kind: SafKind,
        original_key: &str,
        message: &[u8],
        now_ms: u64,
        nonce: [u8; 12],
    ) -> Result<i64> {
        let sealed = self.sealer.seal(nonce, &Self::aad(kind, &self.link, original_key), message)?;
        self.store.saf_put(NewSafEntry { kind, link: &self.link, original_key, sealed: &sealed, now_ms })
    }

    /// Entries due now, opened. An entry that fails to open (tampered, or sealed under a key
    /// version the node no longer has) is quarantined — moved aside with the reason, reported
    /// in the result — and never stops the entries behind it.
    pub fn due(&self, now_ms: u64, limit: u32) -> Result<Due> {
        let mut due = Due::default();
        for entry in self.store.saf_due(&self.link, now_ms, limit)? {
            match self.sealer.open(&Self::aad(entry.kind, &entry.link, &entry.original_key), &entry.sealed) {
                Ok(message) => due.messages.push(DueMessage { entry, message: Zeroizing::new(message) }),
                Err(e) => {
                    self.quarantine(&entry, &e.to_string(), now_ms)?;
                    due.quarantined += 1;
                }
            }
        }
        Ok(due)
    }

    /// Moves an entry that cannot be delivered out of the queue (kept for the operator).
    pub fn quarantine(&self, entry: &SafEntry, reason: &str, now_ms: u64) -> Result<()> {
        tracing::error!(
            link = %self.link,
            id = entry.id,
            kind = entry.kind.as_str(),
            reason,
            "store-and-forward entry quarantined: it cannot be delivered"
        );
        self.store.saf_quarantine(entry.id, reason, now_ms)
    }

    /// Entries in quarantine.
    pub fn quarantined(&self) -> Result<u64> {
        self.store.saf_quarantined(&self.link)
    }

    /// The issuer acknowledged the entry (0430 / 0130).
    pub fn acknowledged(&self, id: i64) -> Result<()> {
        self.store.saf_done(id)
    }

    /// The attempt failed: schedule the next one.
    pub fn failed(&self, entry: &SafEntry, now_ms: u64, random: u32) -> Result<u64> {
        let attempts = entry.attempts.saturating_add(1);
        let next = self.policy.next_attempt_ms(attempts, now_ms, random);
        self.store.saf_reschedule(entry.id, attempts, next)?;
        Ok(next)
    }

    pub fn pending(&self) -> Result<u64> {
        self.store.saf_pending(Some(&self.link))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn queue(store: Arc<dyn Store>) -> SafQueue {
        queue_with(store, 1, [9; 32])
    }

    fn queue_with(store: Arc<dyn Store>, version: u32, key: [u8; 32]) -> SafQueue {
        let key = crypto::AesKey::from_slice(&key).unwrap();
        SafQueue::new(
            store,
            Arc::new(Sealer::new(version, &key).unwrap()),
            RetryPolicy { base_ms: 100, max_ms: 1000, jitter_permille: 0 },
            "issuer-a",
        )
    }

    #[test]
    fn queue_seals_retries_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let msg = b"0420 with PAN 4761739001010010";
        {
            let q = queue(Arc::new(SqliteStore::open(&path).unwrap()));
            let id = q.enqueue(SafKind::Reversal, "T1:000001:1125101010", msg, 1_000, [1; 12]).unwrap();
            let due = q.due(1_000, 10).unwrap().messages;
            assert_eq!(due.len(), 1);
            assert_eq!(&due[0].message[..], msg);
            assert_eq!(q.failed(&due[0].entry, 1_000, 0).unwrap(), 1_100);
            assert!(q.due(1_050, 10).unwrap().messages.is_empty());
            assert_eq!(due[0].entry.id, id);
        }
        // The database file never holds the PAN in clear.
        let raw = std::fs::read(&path).unwrap();
        let wal = std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default();
        for bytes in [&raw, &wal] {
            assert!(!bytes.windows(16).any(|w| w == b"4761739001010010"), "clear PAN on disk");
        }
        let q = queue(Arc::new(SqliteStore::open(&path).unwrap()));
        let due = q.due(1_100, 10).unwrap().messages;
        assert_eq!(due.len(), 1, "the reversal survives a restart");
        assert_eq!(due[0].entry.attempts, 1);
        q.acknowledged(due[0].entry.id).unwrap();
        assert_eq!(q.pending().unwrap(), 0);
    }

    #[test]
    fn tampered_entry_is_an_error_not_a_wrong_message() {
        let store: Arc<SqliteStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let q = queue(store.clone());
        q.enqueue(SafKind::Advice, "k1", b"msg", 0, [2; 12]).unwrap();
        // Move the sealed value of k1 to another original: it must not open there.
        let sealed = store.saf_due("issuer-a", 0, 1).unwrap()[0].sealed.clone();
        store
            .saf_put(NewSafEntry {
                kind: SafKind::Advice,
                link: "issuer-a",
                original_key: "k2",
                sealed: &sealed,
                now_ms: 0,
            })
            .unwrap();
        q.enqueue(SafKind::Advice, "k3", b"next", 0, [3; 12]).unwrap();
        let due = q.due(0, 10).unwrap();
        assert_eq!(due.quarantined, 1, "the moved entry does not open: quarantined");
        assert_eq!(due.messages.len(), 2, "the entries around it are delivered");
        assert_eq!(q.quarantined().unwrap(), 1);
        assert_eq!(q.pending().unwrap(), 2);
        assert_eq!(q.due(0, 10).unwrap().quarantined, 0, "out of the queue for good");
    }

    #[test]
    fn an_entry_written_under_a_retired_key_version_is_quarantined() {
        let store: Arc<SqliteStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let old = SafQueue::new(
            store.clone(),
            Arc::new(Sealer::new(1, &crypto::AesKey::from_slice(&[1; 32]).unwrap()).unwrap()),
            RetryPolicy::default(),
            "issuer-a",
        );
        old.enqueue(SafKind::Reversal, "k1", b"old", 0, [1; 12]).unwrap();
        // Version 2 current, version 1 still known: opens.
        let mut both = Sealer::new(1, &crypto::AesKey::from_slice(&[1; 32]).unwrap()).unwrap();
        both.add_key(2, &crypto::AesKey::from_slice(&[2; 32]).unwrap()).unwrap();
        both.set_current(2).unwrap();
        let q = SafQueue::new(store.clone(), Arc::new(both), RetryPolicy::default(), "issuer-a");
        q.enqueue(SafKind::Reversal, "k2", b"new", 0, [2; 12]).unwrap();
        assert_eq!(q.due(0, 10).unwrap().messages.len(), 2);
        // Version 1 retired: its entry is quarantined, version 2's is delivered.
        let q = queue_with(store.clone(), 2, [2; 32]);
        let due = q.due(0, 10).unwrap();
        assert_eq!((due.messages.len(), due.quarantined), (1, 1));
        assert_eq!(&due.messages[0].message[..], b"new");
    }

    #[test]
    fn only_an_answer_that_takes_it_in_charge_acknowledges() {
        use codecs::iso8583::{Message, Mti, Spec};
        let spec = Spec::builtin("network").unwrap();
        let mut sent = Message::new(spec.clone(), Mti::REVERSAL_ADVICE);
        sent.set_text(11, "000001").unwrap();
        let answer = |mti: &str, rc: Option<&str>| {
            let mut a = Message::new(spec.clone(), Mti::from_digits(mti.as_bytes()).unwrap());
            if let Some(rc) = rc {
                a.set_text(39, rc).unwrap();
            }
            a
        };
        let reversal = |mti, rc| delivery(SafKind::Reversal, &sent, &answer(mti, rc));
        assert_eq!(reversal("0430", Some("00")), Delivery::Taken);
        assert_eq!(reversal("0430", Some("94")), Delivery::Taken);
        assert_eq!(reversal("0430", Some("25")), Delivery::Taken);
        assert_eq!(reversal("0430", Some("96")), Delivery::Retry);
        assert_eq!(reversal("0430", Some("91")), Delivery::Retry);
        assert_eq!(reversal("0430", None), Delivery::Retry);
        assert_eq!(reversal("0430", Some("30")), Delivery::Refused);
        assert_eq!(reversal("0130", Some("00")), Delivery::Retry, "another class");
        assert_eq!(reversal("0420", Some("00")), Delivery::Retry, "not a response");
        let mut advice = sent.clone();
        advice.set_mti(Mti::AUTHORIZATION_ADVICE);
        assert_eq!(delivery(SafKind::Advice, &advice, &answer("0130", Some("25"))), Delivery::Retry);
        assert_eq!(delivery(SafKind::Advice, &advice, &answer("0130", Some("00"))), Delivery::Taken);
        assert_eq!(delivery(SafKind::Advice, &advice, &answer("0130", Some("14"))), Delivery::Refused);
    }

    #[test]
    fn doubles_then_caps() {
        let p = RetryPolicy { base_ms: 1000, max_ms: 8000, jitter_permille: 0 };
        let delays: Vec<u64> = (1..=6).map(|a| p.next_attempt_ms(a, 0, 0)).collect();
        assert_eq!(delays, vec![1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(p.next_attempt_ms(u32::MAX, u64::MAX - 5, 0), u64::MAX);
    }

    #[test]
    fn jitter_is_bounded() {
        let p = RetryPolicy { base_ms: 1000, max_ms: 60_000, jitter_permille: 200 };
        for r in [0u32, 1, 199, 200, 201, u32::MAX] {
            let t = p.next_attempt_ms(1, 10_000, r);
            assert!((11_000..=11_200).contains(&t), "{t}");
        }
    }
}
