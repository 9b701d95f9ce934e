//! A map that cannot grow without bound: every entry carries the time it was put in; entries
//! older than the time-to-live are gone (on access and when room is needed), and at capacity the
//! oldest entry makes room for the new one. The state a door's handlers keep between requests
//! (answers to repeat, step-ups pending, registrations) lives in these, so that a flood of
//! requests costs the flooder, not the server's memory. Time is an argument (milliseconds), so
//! that the map is tested without a clock.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A map bounded in size and in age.
pub struct BoundedMap<K, V> {
    entries: HashMap<K, (u64, u64, V)>,
    /// (inserted at, sequence) → key: the oldest first.
    order: BTreeMap<(u64, u64), K>,
    seq: u64,
    capacity: usize,
    ttl_ms: u64,
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    /// At most `capacity` entries (at least 1), each for at most `ttl_ms`.
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        BoundedMap {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            capacity: capacity.max(1),
            ttl_ms,
        }
    }

    /// Changes the bounds; entries over the new capacity go, oldest first.
    pub fn set_limits(&mut self, capacity: usize, ttl_ms: u64, now_ms: u64) {
        self.capacity = capacity.max(1);
        self.ttl_ms = ttl_ms;
        self.expire(now_ms);
        while self.entries.len() > self.capacity {
            self.evict_oldest();
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn evict_oldest(&mut self) {
        if let Some((_, k)) = self.order.pop_first() {
            self.entries.remove(&k);
        }
    }

    /// Drops every entry past its time-to-live.
    pub fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.ttl_ms);
        while let Some((&(at, _), _)) = self.order.first_key_value() {
            if at >= horizon {
                break;
            }
            self.evict_oldest();
        }
    }

    /// Puts `key` in (replacing and renewing an entry of the same key), making room first.
    pub fn insert(&mut self, key: K, value: V, now_ms: u64) {
        if let Some((at, seq, _)) = self.entries.remove(&key) {
            self.order.remove(&(at, seq));
        }
        self.expire(now_ms);
        while self.entries.len() >= self.capacity {
            self.evict_oldest();
        }
        self.seq += 1;
        self.order.insert((now_ms, self.seq), key.clone());
        self.entries.insert(key, (now_ms, self.seq, value));
    }

    /// The entry of `key`, if it is there and not past its time-to-live.
    pub fn get<Q>(&self, key: &Q, now_ms: u64) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries
            .get(key)
            .filter(|(at, _, _)| now_ms.saturating_sub(*at) <= self.ttl_ms)
            .map(|(_, _, v)| v)
    }

    /// Takes the entry of `key` out.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (at, seq, v) = self.entries.remove(key)?;
        self.order.remove(&(at, seq));
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_stays_at_the_bound_and_keeps_the_newest() {
        let mut m = BoundedMap::new(100, 60_000);
        for i in 0..100_000u64 {
            m.insert(format!("k{i}"), i, i / 10);
        }
        assert_eq!(m.len(), 100);
        assert_eq!(m.order.len(), 100, "the age index is bounded too");
        assert_eq!(m.get("k99999", 10_000), Some(&99_999));
        assert_eq!(m.get("k0", 10_000), None);
    }

    #[test]
    fn entries_expire_and_a_renewed_key_is_young_again() {
        let mut m = BoundedMap::new(10, 1_000);
        m.insert("a", 1, 0);
        m.insert("b", 2, 500);
        assert_eq!(m.get("a", 1_000), Some(&1));
        assert_eq!(m.get("a", 1_001), None, "past its time-to-live");
        m.insert("a", 3, 1_200);
        m.expire(1_600);
        assert_eq!((m.get("a", 1_600), m.get("b", 1_600), m.len()), (Some(&3), None, 1));
        assert_eq!(m.remove("a"), Some(3));
        assert!(m.is_empty());
        m.insert("x", 1, 0);
        m.insert("y", 2, 0);
        m.set_limits(1, 1_000, 0);
        assert_eq!((m.len(), m.get("y", 0)), (1, Some(&2)), "the newest stays");
    }
}
