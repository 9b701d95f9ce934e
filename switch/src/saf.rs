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
use crate::seal::Sealer;
use crate::store::{NewSafEntry, SafEntry, SafKind, Store};

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

    /// Entries due now, opened. An entry that fails to open (tampered, or sealed under a retired
    /// key) is an error: it is reported, never silently dropped.
    pub fn due(&self, now_ms: u64, limit: u32) -> Result<Vec<DueMessage>> {
        self.store
            .saf_due(&self.link, now_ms, limit)?
            .into_iter()
            .map(|entry| {
                let message = self
                    .sealer
                    .open(&Self::aad(entry.kind, &entry.link, &entry.original_key), &entry.sealed)?;
                Ok(DueMessage { entry, message: Zeroizing::new(message) })
            })
            .collect()
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
        let key = crypto::AesKey::from_slice(&[9; 32]).unwrap();
        SafQueue::new(
            store,
            Arc::new(Sealer::new(1, &key).unwrap()),
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
            let due = q.due(1_000, 10).unwrap();
            assert_eq!(due.len(), 1);
            assert_eq!(&due[0].message[..], msg);
            assert_eq!(q.failed(&due[0].entry, 1_000, 0).unwrap(), 1_100);
            assert!(q.due(1_050, 10).unwrap().is_empty());
            assert_eq!(due[0].entry.id, id);
        }
        // The database file never holds the PAN in clear.
        let raw = std::fs::read(&path).unwrap();
        let wal = std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default();
        for bytes in [&raw, &wal] {
            assert!(!bytes.windows(16).any(|w| w == b"4761739001010010"), "clear PAN on disk");
        }
        let q = queue(Arc::new(SqliteStore::open(&path).unwrap()));
        let due = q.due(1_100, 10).unwrap();
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
        assert!(q.due(0, 10).is_err());
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
