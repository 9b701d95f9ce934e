//! Duplicate transmissions: a terminal that did not hear its answer sends the same request again
//! (same terminal ID, STAN and transmission date-time). It must get the original answer — never a
//! second authorization. A duplicate that arrives while the original is still in flight waits for
//! the original's answer.
//!
//! The cache is sharded (no global lock on the hot path; the shard comes from a hash keyed at
//! random per process, so no sender can aim every request at one shard), bounded in time
//! (entries expire after `ttl`) and in size (per shard, the oldest entries go first).
//!
//! A repeat is answered from the cache only when it is the same transaction: the same acquirer
//! (proven by its connection), terminal, STAN, DE 7, and the same card, amount and currency as
//! the original. Anything else with the same identifiers is a different transaction reusing them
//! and gets [`Seen::Mismatch`] (94); the cached answer never leaves for it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::watch;

const SHARDS: usize = 64;

/// Identity of a transmission — the acquirer its connection proved to be, terminal ID (DE 41),
/// STAN (DE 11), transmission date-time (DE 7) and the request MTI (a 0100 and a 0400 with the
/// same STAN are different transmissions) — as a 128-bit digest under the cache's random keys:
/// 16 bytes per entry, no allocation, and no sender can aim two transmissions at one digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransmissionKey(u128);

/// What the cache knows about a transmission.
pub enum Seen {
    /// First time: the caller processes it and must call [`DuplicateCache::complete`] (or
    /// [`DuplicateCache::abandon`]) with the key.
    New,
    /// Already answered: send this answer again.
    Answered(Bytes),
    /// The original is still being processed: await its answer.
    InFlight(watch::Receiver<Option<Bytes>>),
    /// The identifiers of a known transmission with another card, amount or currency.
    Mismatch,
}

/// What a repeat must have in common with its original besides the key: DE 2, DE 4 and DE 49
/// as carried, hashed under the cache's random key (no PAN is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content(u64);

enum State {
    InFlight(watch::Sender<Option<Bytes>>),
    Answered(Bytes),
}

/// The map's hasher: the key is already a keyed digest, uniformly spread, so its low bits are
/// the hash (a second SipHash per lookup would buy nothing).
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }
}

struct Shard {
    map: HashMap<TransmissionKey, (u64, Content, State), BuildHasherDefault<DigestHasher>>,
    order: VecDeque<(u64, TransmissionKey)>,
}

pub struct DuplicateCache {
    shards: Vec<Mutex<Shard>>,
    /// Two independent keys: the digest's two halves, and the content digest.
    hasher: RandomState,
    hasher2: RandomState,
    ttl_ms: u64,
    max_per_shard: usize,
}

impl DuplicateCache {
    /// A cache keeping each transmission `ttl_ms` at most, and at most about `max_entries`
    /// transmissions (the oldest go first).
    ///
    /// Each shard takes the room for its share at once ([`crate::map_room`]): a map that doubled
    /// as it filled would move its entries at each doubling, with its lock held and every request
    /// of the shard waiting, and the process's memory would grow for as long as the cache fills.
    pub fn new(ttl_ms: u64, max_entries: usize) -> Self {
        let max_per_shard = (max_entries / SHARDS).max(1);
        DuplicateCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::with_capacity_and_hasher(
                            crate::map_room(max_per_shard),
                            Default::default(),
                        ),
                        order: VecDeque::with_capacity(max_per_shard + 1),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            hasher2: RandomState::new(),
            ttl_ms,
            max_per_shard,
        }
    }

    /// The key of a transmission.
    pub fn key(
        &self,
        acquirer: &str,
        mti: &[u8; 4],
        terminal_id: &str,
        stan: &str,
        transmitted_at: &str,
    ) -> TransmissionKey {
        let parts = (acquirer, mti, terminal_id, stan, transmitted_at);
        let hi = self.hasher.hash_one(parts);
        let lo = self.hasher2.hash_one(parts);
        TransmissionKey(u128::from(hi) << 64 | u128::from(lo))
    }

    /// The content digest of a request's DE 2, DE 4 and DE 49.
    pub fn content(&self, pan: Option<&[u8]>, amount: Option<&[u8]>, currency: Option<&[u8]>) -> Content {
        Content(self.hasher.hash_one((pan, amount, currency)))
    }

    fn shard(&self, key: &TransmissionKey) -> std::sync::MutexGuard<'_, Shard> {
        // The digest's top bits pick the shard (the map's hasher uses the low ones).
        let i = ((key.0 >> 120) as usize) % SHARDS;
        // A poisoned shard only means another thread panicked mid-update of a cache; the map is
        // still structurally sound, so keep serving.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks the transmission up, registering it as in flight when it is new.
    pub fn check(&self, key: &TransmissionKey, content: Content, now_ms: u64) -> Seen {
        let mut shard = self.shard(key);
        Self::expire(&mut shard, now_ms, self.ttl_ms, self.max_per_shard);
        match shard.map.entry(*key) {
            Entry::Occupied(e) if e.get().1 != content => Seen::Mismatch,
            Entry::Occupied(e) => match &e.get().2 {
                State::Answered(b) => Seen::Answered(b.clone()),
                State::InFlight(tx) => Seen::InFlight(tx.subscribe()),
            },
            Entry::Vacant(v) => {
                let (tx, _rx) = watch::channel(None);
                v.insert((now_ms, content, State::InFlight(tx)));
                shard.order.push_back((now_ms, *key));
                Seen::New
            }
        }
    }

    /// Records the answer of a transmission and wakes any duplicate waiting for it.
    ///
    /// The cache keeps a copy of its own size: an encoded answer is often a slice of a larger
    /// buffer (room reserved for the request it answers, its chip data included), which the
    /// cache would otherwise keep alive whole for as long as it holds the answer — about three
    /// times the memory, for every transmission of the window.
    pub fn complete(&self, key: &TransmissionKey, answer: Bytes) {
        let answer = Bytes::copy_from_slice(&answer);
        let mut shard = self.shard(key);
        if let Some((_, _, state)) = shard.map.get_mut(key) {
            if let State::InFlight(tx) = state {
                tx.send_replace(Some(answer.clone()));
            }
            *state = State::Answered(answer);
        }
    }

    /// Forgets a transmission that produced no answer (e.g. it was dropped as malformed), so a
    /// retry is processed afresh. Waiting duplicates see the channel close.
    pub fn abandon(&self, key: &TransmissionKey) {
        let mut shard = self.shard(key);
        shard.map.remove(key);
    }

    /// Transmissions held (operations and tests).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len()).sum()
    }

    /// Whether no transmission is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(shard: &mut Shard, now_ms: u64, ttl_ms: u64, max: usize) {
        while let Some((at, _)) = shard.order.front() {
            let too_old = now_ms.saturating_sub(*at) > ttl_ms;
            if !too_old && shard.order.len() <= max {
                break;
            }
            if let Some((at, key)) = shard.order.pop_front()
                && shard.map.get(&key).is_some_and(|(entry_at, _, _)| *entry_at == at)
            {
                // The map entry is the one this order record describes (not a newer re-use).
                shard.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_in(c: &DuplicateCache, acquirer: &str, stan: &str) -> TransmissionKey {
        c.key(acquirer, b"0100", "TERM0001", stan, "1125101010")
    }

    fn same(c: &DuplicateCache) -> Content {
        c.content(Some(b"4761730000000011"), Some(b"000000001000"), Some(b"978"))
    }

    #[test]
    fn second_transmission_gets_the_first_answer() {
        let c = DuplicateCache::new(60_000, 10_000);
        assert!(matches!(c.check(&key_in(&c, "400001", "000001"), same(&c), 0), Seen::New));
        c.complete(&key_in(&c, "400001", "000001"), Bytes::from_static(b"answer"));
        match c.check(&key_in(&c, "400001", "000001"), same(&c), 10) {
            Seen::Answered(b) => assert_eq!(&b[..], b"answer"),
            _ => panic!("expected the original answer"),
        }
        assert!(matches!(c.check(&key_in(&c, "400001", "000002"), same(&c), 10), Seen::New));
    }

    #[test]
    fn a_repeat_with_other_content_or_from_another_acquirer_is_not_the_original() {
        let c = DuplicateCache::new(60_000, 10_000);
        assert!(matches!(c.check(&key_in(&c, "400001", "000001"), same(&c), 0), Seen::New));
        c.complete(&key_in(&c, "400001", "000001"), Bytes::from_static(b"answer"));
        for other in [
            c.content(Some(b"4761730000000029"), Some(b"000000001000"), Some(b"978")),
            c.content(Some(b"4761730000000011"), Some(b"000000001001"), Some(b"978")),
            c.content(Some(b"4761730000000011"), Some(b"000000001000"), Some(b"840")),
            c.content(None, None, None),
        ] {
            assert!(matches!(c.check(&key_in(&c, "400001", "000001"), other, 1), Seen::Mismatch));
        }
        let elsewhere = key_in(&c, "400002", "000001");
        assert!(matches!(c.check(&elsewhere, same(&c), 1), Seen::New), "another acquirer's own transaction");
        // Two caches hash differently: the shard key is random per process.
        let d = DuplicateCache::new(60_000, 10_000);
        assert_ne!(same(&c), same(&d));
    }

    #[tokio::test]
    async fn duplicate_in_flight_waits_for_the_original() {
        let c = std::sync::Arc::new(DuplicateCache::new(60_000, 10_000));
        assert!(matches!(c.check(&key_in(&c, "400001", "000001"), same(&c), 0), Seen::New));
        let Seen::InFlight(mut rx) = c.check(&key_in(&c, "400001", "000001"), same(&c), 1) else {
            panic!("expected in flight")
        };
        let c2 = c.clone();
        tokio::spawn(async move {
            c2.complete(&key_in(&c2, "400001", "000001"), Bytes::from_static(b"late answer"))
        });
        let answer = rx.wait_for(|a| a.is_some()).await.unwrap().clone();
        assert_eq!(answer.as_deref(), Some(&b"late answer"[..]));
    }

    #[test]
    fn entries_expire_and_abandon_forgets() {
        let c = DuplicateCache::new(1_000, 10_000);
        assert!(matches!(c.check(&key_in(&c, "400001", "1"), same(&c), 0), Seen::New));
        c.complete(&key_in(&c, "400001", "1"), Bytes::from_static(b"a"));
        assert!(
            matches!(c.check(&key_in(&c, "400001", "1"), same(&c), 2_000), Seen::New),
            "expired entry is new again"
        );
        c.abandon(&key_in(&c, "400001", "1"));
        assert!(matches!(c.check(&key_in(&c, "400001", "1"), same(&c), 2_001), Seen::New));
    }

    #[test]
    fn size_is_bounded() {
        let c = DuplicateCache::new(u64::MAX, SHARDS * 2);
        for i in 0..10_000 {
            let k = key_in(&c, "400001", &format!("{i:06}"));
            assert!(matches!(c.check(&k, same(&c), i), Seen::New));
            c.complete(&k, Bytes::new());
        }
        assert!(c.len() <= SHARDS * 3, "{}", c.len());
    }

    #[test]
    fn a_cached_answer_keeps_no_larger_buffer_it_was_a_slice_of() {
        let c = DuplicateCache::new(u64::MAX, SHARDS * 4);
        let k = key_in(&c, "400001", "000001");
        assert!(matches!(c.check(&k, same(&c), 1), Seen::New));
        let buffer = Bytes::from(vec![0x30u8; 4096]);
        let answer = buffer.slice(..120);
        c.complete(&k, answer.clone());
        drop(buffer);
        let Seen::Answered(cached) = c.check(&k, same(&c), 2) else { panic!("answered") };
        assert_eq!(cached, answer, "the same bytes");
        assert!(!std::ptr::eq(cached.as_ptr(), answer.as_ptr()), "in an allocation of their own");
    }

    #[test]
    fn each_shard_has_the_room_for_its_share_from_the_start_and_never_grows() {
        let c = DuplicateCache::new(u64::MAX, SHARDS * 100);
        let rooms = |c: &DuplicateCache| {
            c.shards
                .iter()
                .map(|s| s.lock().map(|s| (s.map.capacity(), s.order.capacity())).unwrap())
                .collect::<Vec<_>>()
        };
        let start = rooms(&c);
        assert!(start.iter().all(|&(m, o)| m > 100 && o > 100), "{start:?}");
        for i in 0..40_000 {
            let k = key_in(&c, "400001", &format!("{i:06}"));
            assert!(matches!(c.check(&k, same(&c), i), Seen::New));
            c.complete(&k, Bytes::new());
        }
        // The maps' capacities only go down by the slots removals leave marked; none doubled.
        for ((m, o), (m0, o0)) in rooms(&c).into_iter().zip(start) {
            assert!(m <= m0 && m >= 100 && o == o0, "{m} {m0} {o} {o0}");
        }
    }
}
