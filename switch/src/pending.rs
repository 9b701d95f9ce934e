//! Outstanding requests on an issuer link, matched to their answers.
//!
//! Many requests are multiplexed on one issuer connection; answers come back in any order. An
//! answer is matched by MTI class (0110 answers 0100), DE 11 (STAN) and DE 41 (terminal ID), and
//! DE 37 (RRN) must agree when both carry one. An answer that matches nothing — late, after the
//! request timed out, or simply wrong — is handed back to the caller to be logged and counted;
//! it is never delivered to another terminal.

use std::collections::HashMap;
use std::collections::hash_map::{DefaultHasher, Entry};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::oneshot;

const SHARDS: usize = 32;

/// The matching identity of a request or answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MatchKey {
    /// The first two MTI digits (version and class): `01` for 0100/0110, `04` for 0400/0410.
    pub class: [u8; 2],
    pub stan: Bytes,
    pub terminal_id: Bytes,
}

struct Waiter<T> {
    rrn: Option<Bytes>,
    tx: oneshot::Sender<T>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    #[error("a request with the same MTI class, STAN and terminal ID is already outstanding")]
    AlreadyPending,
}

/// Why an answer was not delivered.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmatched {
    /// No outstanding request has this key (late, or never sent).
    NoRequest,
    /// The outstanding request carries a different RRN.
    RrnMismatch,
}

pub struct PendingRequests<T> {
    shards: Vec<Mutex<HashMap<MatchKey, Waiter<T>>>>,
}

impl<T> Default for PendingRequests<T> {
    fn default() -> Self {
        PendingRequests { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

impl<T> PendingRequests<T> {
    fn shard(&self, key: &MatchKey) -> std::sync::MutexGuard<'_, HashMap<MatchKey, Waiter<T>>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        self.shards[(h.finish() as usize) % SHARDS].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an outstanding request; its answer arrives on the returned receiver.
    pub fn register(&self, key: MatchKey, rrn: Option<Bytes>) -> Result<oneshot::Receiver<T>, PendingError> {
        let mut shard = self.shard(&key);
        match shard.entry(key) {
            Entry::Occupied(_) => Err(PendingError::AlreadyPending),
            Entry::Vacant(v) => {
                let (tx, rx) = oneshot::channel();
                v.insert(Waiter { rrn, tx });
                Ok(rx)
            }
        }
    }

    /// Delivers an answer to its request. On failure the answer is returned with the reason.
    pub fn resolve(&self, key: &MatchKey, rrn: Option<&[u8]>, answer: T) -> Result<(), (Unmatched, T)> {
        let mut shard = self.shard(key);
        let Some(w) = shard.get(key) else { return Err((Unmatched::NoRequest, answer)) };
        if let (Some(want), Some(got)) = (w.rrn.as_deref(), rrn)
            && want != got
        {
            return Err((Unmatched::RrnMismatch, answer));
        }
        let Some(w) = shard.remove(key) else { return Err((Unmatched::NoRequest, answer)) };
        // The requester may have given up (timeout) between our look-up and now; then the answer
        // is as late as one that found no request.
        w.tx.send(answer).map_err(|a| (Unmatched::NoRequest, a))
    }

    /// Forgets a request (it timed out or its connection failed).
    pub fn cancel(&self, key: &MatchKey) {
        self.shard(key).remove(key);
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every outstanding request (the link went down): their receivers see the sender gone.
    pub fn fail_all(&self) {
        for s in &self.shards {
            s.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stan: &str, tid: &str) -> MatchKey {
        MatchKey {
            class: *b"01",
            stan: Bytes::copy_from_slice(stan.as_bytes()),
            terminal_id: Bytes::copy_from_slice(tid.as_bytes()),
        }
    }

    #[tokio::test]
    async fn answers_reach_their_own_request_in_any_order() {
        let p = PendingRequests::default();
        let rxs: Vec<_> =
            (0..1000).map(|i| p.register(key(&format!("{i:06}"), "T1"), None).unwrap()).collect();
        for i in (0..1000).rev() {
            p.resolve(&key(&format!("{i:06}"), "T1"), None, i).unwrap();
        }
        for (i, rx) in rxs.into_iter().enumerate() {
            assert_eq!(rx.await.unwrap(), i);
        }
        assert!(p.is_empty());
    }

    #[test]
    fn unmatched_answers_are_returned_not_delivered() {
        let p = PendingRequests::default();
        let _rx = p.register(key("000001", "T1"), Some(Bytes::from_static(b"RRN1"))).unwrap();
        assert_eq!(p.register(key("000001", "T1"), None).unwrap_err(), PendingError::AlreadyPending);
        assert_eq!(p.resolve(&key("000001", "T2"), None, 7).unwrap_err(), (Unmatched::NoRequest, 7));
        assert_eq!(
            p.resolve(&key("000001", "T1"), Some(b"RRN2"), 8).unwrap_err(),
            (Unmatched::RrnMismatch, 8)
        );
        assert_eq!(p.len(), 1, "a mismatched answer leaves the request waiting");
        p.resolve(&key("000001", "T1"), Some(b"RRN1"), 9).unwrap();
    }

    #[test]
    fn late_answer_after_timeout_is_unmatched() {
        let p = PendingRequests::default();
        let rx = p.register(key("000001", "T1"), None).unwrap();
        drop(rx);
        assert_eq!(p.resolve(&key("000001", "T1"), None, 1).unwrap_err(), (Unmatched::NoRequest, 1));
        let rx = p.register(key("000002", "T1"), None).unwrap();
        p.cancel(&key("000002", "T1"));
        assert_eq!(p.resolve(&key("000002", "T1"), None, 2).unwrap_err(), (Unmatched::NoRequest, 2));
        drop(rx);
    }
}
