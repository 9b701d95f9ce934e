//! Duplicate transmissions: a terminal that did not hear its answer sends the same request again
//! (same terminal ID, STAN and transmission date-time). It must get the original answer — never a
//! second authorization. A duplicate that arrives while the original is still in flight waits for
//! the original's answer.
//!
//! The cache is sharded (no global lock on the hot path; the shard comes from a hash keyed at
//! random per process, so no sender can aim every request at one shard), bounded in time
//! (entries expire after `ttl`) and in size (per shard, the oldest entries go first): in
//! transmissions, and in the bytes of their answers, which each shard keeps in a ring of bytes
//! taken and touched at start ([`ANSWER_ROOM`] per transmission). The cache's memory is the same
//! from its first request to its millionth, and caching an answer allocates nothing.
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
use door::process::{map_room, spread, touched_deque, touched_map};
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
    /// Being processed; the channel its repeats wait on, made when the first of them comes (most
    /// transmissions have none: no channel is allocated for them).
    InFlight(Option<watch::Sender<Option<Bytes>>>),
    /// The answer's bytes in the shard's ring, written by the `seq`-th answer stored there.
    Answered { at: u32, len: u32, seq: u64 },
    /// An answer larger than a shard's whole ring (kept on the heap; no answer of ISO 8583's
    /// sizes is, with the default bounds).
    AnsweredLarge(Bytes),
}

/// Room for answers per transmission the cache holds: an authorization's answer with its chip
/// data is 150 to 200 bytes. Answers larger on average make the byte bound the one reached.
pub const ANSWER_ROOM: usize = 256;

/// A shard's answers: a ring of bytes, oldest overwritten first.
struct Answers {
    bytes: Box<[u8]>,
    /// Where the next answer goes.
    head: usize,
    /// The answers in the ring, oldest first: where, how long, the key, and the answer's number.
    spans: VecDeque<(u32, u32, TransmissionKey, u64)>,
    /// Answers stored so far (numbers each, so that a span evicted late cannot remove a newer
    /// answer of the same key).
    stored: u64,
    /// Answers kept at most (the shard's transmissions: short answers do not make the ring hold
    /// more of them than the map may, nor grow `spans` past the room taken at start).
    max_spans: usize,
}

impl Answers {
    /// A ring of `room` bytes, every page touched now rather than on the first answers.
    fn new(room: usize, max_spans: usize) -> Self {
        // Written with a non-zero byte: zeroed room would come as pages the kernel maps on
        // first write.
        let bytes = vec![0xFFu8; room];
        let spans = touched_deque(max_spans + 1, (0, 0, TransmissionKey(0), 0));
        Answers { bytes: bytes.into_boxed_slice(), head: 0, spans, stored: 0, max_spans: max_spans.max(1) }
    }

    /// Copies `answer` into the ring and returns where; the answers it overwrote are pushed to
    /// `evicted` (their keys and numbers). `None` when it is larger than the ring.
    fn store(
        &mut self,
        key: TransmissionKey,
        answer: &[u8],
        evicted: &mut Vec<(TransmissionKey, u64)>,
    ) -> Option<(u32, u32, u64)> {
        let (len, cap) = (answer.len(), self.bytes.len());
        if len > cap {
            return None;
        }
        if len == 0 {
            // Nothing to keep, nothing to overwrite.
            return Some((0, 0, 0));
        }
        // Live answers lie in write order from the oldest (the front) round to the head: those
        // at or past the head are the last lap's, those before it this lap's.
        let start = if self.head + len <= cap {
            self.head
        } else {
            // Wrapping: the last lap's answers (between the head and the end) are the oldest and
            // go; the new one starts at 0, over the oldest of this lap.
            while let Some(&(at, _, k, n)) = self.spans.front()
                && at as usize >= self.head
            {
                evicted.push((k, n));
                self.spans.pop_front();
            }
            0
        };
        let end = start + len;
        // The answers the new one overwrites are the oldest: from the front, while they start
        // inside it (none starts before `start` and reaches into it: an answer before the head
        // ends at the head at most).
        while let Some(&(at, _, k, n)) = self.spans.front()
            && (start..end).contains(&(at as usize))
        {
            evicted.push((k, n));
            self.spans.pop_front();
        }
        self.bytes[start..end].copy_from_slice(answer);
        self.head = end;
        self.stored += 1;
        let seq = self.stored;
        if self.spans.len() >= self.max_spans
            && let Some((_, _, k, n)) = self.spans.pop_front()
        {
            evicted.push((k, n));
        }
        self.spans.push_back((start as u32, len as u32, key, seq));
        Some((start as u32, len as u32, seq))
    }

    fn get(&self, at: u32, len: u32) -> Bytes {
        Bytes::copy_from_slice(&self.bytes[at as usize..at as usize + len as usize])
    }
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
    answers: Answers,
    /// The answers one store overwrote (kept to reuse its room).
    evicted: Vec<(TransmissionKey, u64)>,
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
    /// Each shard takes the room for its share at once ([`map_room`]), and writes it
    /// ([`touched_map`]): a map that doubled as it filled would move its entries at each
    /// doubling, with its lock held and every request of the shard waiting, and the process's
    /// memory would grow for as long as the cache fills.
    pub fn new(ttl_ms: u64, max_entries: usize) -> Self {
        let max_per_shard = (max_entries / SHARDS).max(1);
        DuplicateCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: touched_map(map_room(max_per_shard), Default::default(), |i| {
                            let key = (u128::from(spread(i)) << 64) | u128::from(spread(!i));
                            (TransmissionKey(key), (0, Content(0), State::Answered { at: 0, len: 0, seq: 0 }))
                        }),
                        order: touched_deque(max_per_shard + 1, (0, TransmissionKey(0))),
                        answers: Answers::new(max_per_shard * ANSWER_ROOM, max_per_shard),
                        evicted: Vec::with_capacity(64),
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

    /// The shard of a key: the digest's top bits (the map's hasher uses the low ones).
    fn shard_index(key: &TransmissionKey) -> usize {
        ((key.0 >> 120) as usize) % SHARDS
    }

    fn shard(&self, key: &TransmissionKey) -> std::sync::MutexGuard<'_, Shard> {
        let i = Self::shard_index(key);
        // A poisoned shard only means another thread panicked mid-update of a cache; the map is
        // still structurally sound, so keep serving.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks the transmission up, registering it as in flight when it is new.
    pub fn check(&self, key: &TransmissionKey, content: Content, now_ms: u64) -> Seen {
        let mut shard = self.shard(key);
        Self::expire(&mut shard, now_ms, self.ttl_ms, self.max_per_shard);
        let Shard { map, order, answers, .. } = &mut *shard;
        match map.entry(*key) {
            Entry::Occupied(e) if e.get().1 != content => Seen::Mismatch,
            Entry::Occupied(mut e) => match &mut e.get_mut().2 {
                State::Answered { at, len, .. } => Seen::Answered(answers.get(*at, *len)),
                State::AnsweredLarge(b) => Seen::Answered(b.clone()),
                State::InFlight(waiting) => {
                    Seen::InFlight(waiting.get_or_insert_with(|| watch::channel(None).0).subscribe())
                }
            },
            Entry::Vacant(v) => {
                v.insert((now_ms, content, State::InFlight(None)));
                order.push_back((now_ms, *key));
                Seen::New
            }
        }
    }

    /// Records the answer of a transmission and wakes any duplicate waiting for it.
    ///
    /// The cache keeps a copy in the shard's ring: an encoded answer is often a slice of a larger
    /// buffer (room reserved for the request it answers, its chip data included), which the cache
    /// would otherwise keep alive whole for as long as it holds the answer. The answers the copy
    /// overwrites (the shard's oldest) are forgotten with their transmissions.
    pub fn complete(&self, key: &TransmissionKey, answer: Bytes) {
        let mut shard = self.shard(key);
        let Shard { map, answers, evicted, .. } = &mut *shard;
        let Some((_, _, state)) = map.get_mut(key) else { return };
        if let State::InFlight(Some(tx)) = state {
            tx.send_replace(Some(answer.clone()));
        }
        *state = match answers.store(*key, &answer, evicted) {
            Some((at, len, seq)) => State::Answered { at, len, seq },
            None => State::AnsweredLarge(Bytes::copy_from_slice(&answer)),
        };
        for (k, n) in evicted.drain(..) {
            if map.get(&k).is_some_and(|(_, _, s)| matches!(s, State::Answered { seq, .. } if *seq == n)) {
                map.remove(&k);
            }
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

    /// The channel repeats wait on is made by the first of them: a second repeat waits on the
    /// same one, and both get the answer; the repeats of an abandoned transmission see it end.
    #[tokio::test]
    async fn every_waiting_repeat_gets_the_answer_and_an_abandoned_ones_see_it_end() {
        let c = DuplicateCache::new(60_000, 10_000);
        let (k, gone) = (key_in(&c, "400001", "000001"), key_in(&c, "400001", "000002"));
        assert!(matches!(c.check(&k, same(&c), 0), Seen::New));
        assert!(matches!(c.check(&gone, same(&c), 0), Seen::New));
        let waiting: Vec<_> = (1..=2)
            .map(|t| match c.check(&k, same(&c), t) {
                Seen::InFlight(rx) => rx,
                _ => panic!("expected in flight"),
            })
            .collect();
        let Seen::InFlight(mut orphan) = c.check(&gone, same(&c), 1) else { panic!("expected in flight") };
        c.complete(&k, Bytes::from_static(b"the answer"));
        c.abandon(&gone);
        for mut rx in waiting {
            let answer = rx.wait_for(|a| a.is_some()).await.unwrap().clone();
            assert_eq!(answer.as_deref(), Some(&b"the answer"[..]));
        }
        assert!(orphan.changed().await.is_err(), "the abandoned transmission's repeat sees it end");
        assert!(matches!(c.check(&k, same(&c), 3), Seen::Answered(b) if &b[..] == b"the answer"));
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

    /// Keys of `c` that fall in one shard.
    fn keys_in_one_shard(c: &DuplicateCache, n: usize) -> Vec<TransmissionKey> {
        let first = DuplicateCache::shard_index(&key_in(c, "400001", "000000"));
        (1..)
            .map(|i| key_in(c, "400001", &format!("{i:06}")))
            .filter(|k| DuplicateCache::shard_index(k) == first)
            .take(n)
            .collect()
    }

    #[test]
    fn answers_past_the_shards_bytes_are_forgotten_oldest_first() {
        // Four transmissions a shard, so 1,024 bytes of answers: three 400-byte answers do not fit.
        let c = DuplicateCache::new(u64::MAX, SHARDS * 4);
        let keys = keys_in_one_shard(&c, 4);
        for (i, k) in keys.iter().enumerate() {
            assert!(matches!(c.check(k, same(&c), i as u64), Seen::New));
        }
        for (i, k) in keys[..3].iter().enumerate() {
            c.complete(k, Bytes::from(vec![b'0' + i as u8; 400]));
        }
        // The third wrapped to the ring's start over the first: the first is forgotten (a repeat
        // is new again), the second and third answer with their own bytes.
        assert!(matches!(c.check(&keys[0], same(&c), 10), Seen::New));
        for (i, k) in keys.iter().enumerate().skip(1).take(2) {
            let Seen::Answered(b) = c.check(k, same(&c), 10) else { panic!("answer {i} kept") };
            assert_eq!(b, vec![b'0' + i as u8; 400]);
        }
        // Still in flight: untouched by the ring.
        assert!(matches!(c.check(&keys[3], same(&c), 10), Seen::InFlight(_)));
        // Larger than the whole ring: kept apart, still answered.
        c.complete(&keys[3], Bytes::from(vec![b'L'; 2_000]));
        let Seen::Answered(b) = c.check(&keys[3], same(&c), 11) else { panic!("large answer kept") };
        assert_eq!(b.len(), 2_000);
        let Seen::Answered(b) = c.check(&keys[2], same(&c), 11) else { panic!("third kept") };
        assert_eq!(b, vec![b'2'; 400]);
    }

    #[test]
    fn an_answer_overwritten_after_its_key_was_reused_does_not_forget_the_new_one() {
        let c = DuplicateCache::new(u64::MAX, SHARDS * 4);
        let keys = keys_in_one_shard(&c, 3);
        assert!(matches!(c.check(&keys[0], same(&c), 0), Seen::New));
        c.complete(&keys[0], Bytes::from(vec![b'a'; 400]));
        // Forgotten (as a transmission that produced no answer is), then processed afresh.
        c.abandon(&keys[0]);
        assert!(matches!(c.check(&keys[0], same(&c), 1), Seen::New));
        c.complete(&keys[0], Bytes::from(vec![b'b'; 100]));
        // Two more answers overwrite the ring's first 400 bytes, the old answer's.
        for k in &keys[1..] {
            assert!(matches!(c.check(k, same(&c), 2), Seen::New));
            c.complete(k, Bytes::from(vec![b'c'; 400]));
        }
        let Seen::Answered(b) = c.check(&keys[0], same(&c), 3) else { panic!("the new answer stays") };
        assert_eq!(b, vec![b'b'; 100]);
    }

    fn rss_kib() -> u64 {
        door::process::resident_kib().expect("VmRSS")
    }

    #[test]
    fn the_answers_room_is_in_memory_from_the_start() {
        let before = rss_kib();
        let c = DuplicateCache::new(u64::MAX, SHARDS * 4_096);
        let grown = rss_kib().saturating_sub(before);
        let room_kib = (SHARDS * 4_096 * ANSWER_ROOM / 1_024) as u64;
        // 64 MiB of rings: the process holds them now, not as answers arrive.
        assert!(grown >= room_kib * 9 / 10, "grew {grown} KiB for {room_kib} KiB of rings");
        drop(c);
    }

    proptest::proptest! {
        /// Whatever the lengths, the answers the ring keeps are intact, never overlap, and the
        /// ones it drops are the oldest.
        #[test]
        fn the_ring_keeps_the_newest_answers_intact(lens in proptest::collection::vec(proptest::prop_oneof![0usize..16, 0usize..700], 1..200)) {
            let mut ring = Answers::new(1_000, 8);
            let mut evicted = Vec::new();
            let mut written: Vec<(TransmissionKey, Vec<u8>)> = Vec::new();
            let mut dropped_upto = 0u64;
            for (i, len) in lens.into_iter().enumerate() {
                let key = TransmissionKey(i as u128);
                let answer: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
                let placed = ring.store(key, &answer, &mut evicted);
                written.push((key, answer.clone()));
                for (_, n) in evicted.drain(..) {
                    proptest::prop_assert!(n > dropped_upto, "oldest first");
                    dropped_upto = n;
                }
                if len > 0 {
                    let (at, l, seq) = placed.expect("fits");
                    proptest::prop_assert_eq!(ring.get(at, l), answer);
                    proptest::prop_assert_eq!(ring.spans.back().map(|s| s.3), Some(seq));
                }
                proptest::prop_assert!(ring.spans.len() <= 8, "at most as many as the shard keeps");
                let mut spans: Vec<_> = ring.spans.iter().copied().collect();
                for &(at, l, k, _) in &spans {
                    let expect = &written[k.0 as usize].1;
                    proptest::prop_assert_eq!(&ring.get(at, l)[..], &expect[..]);
                }
                spans.sort_by_key(|s| s.0);
                for w in spans.windows(2) {
                    proptest::prop_assert!(w[0].0 + w[0].1 <= w[1].0, "{:?}", w);
                }
            }
        }
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
