//! Limited-use keys (cloud-based payments, HCE): a phone without a secure element never holds its
//! token's ICC master key; the token service hands it batches of session keys, each for one ATC and
//! valid until the batch's time to live. The detokenize stage accepts a cloud token's cryptogram
//! only for an ATC of an unexpired batch (each ATC once, by the replay window); when the phone has
//! used or outlived its keys it must replenish.
//!
//! Over a store several processes write ([`LukStore::shared`]) the registry reads through like the
//! vault: a token's batch is read from the store when not cached (its absence cached too), evicted
//! on the store's change notices ([`LukRegistry::evict`]), and read from the store every time while
//! the notices may be missed ([`LukRegistry::set_live`] false). A new batch replaces the stored one
//! only if that is still the one it follows, so two processes never hand out the same ATCs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crypto::hsm::LukBatch;

use crate::error::{Error, Result};

/// Where issued batches are kept, so that a restarted switch still accepts the keys its phones
/// hold. The store holds tokens and ATC ranges only (no key, no PAN).
pub trait LukStore: Send + Sync + 'static {
    /// Records `token`'s current batch and the device key its keys are sealed for, replacing the
    /// previous batch — only if the stored batch starts at `follows` (`None`: the token has none
    /// yet). `false` when another batch was recorded in between (nothing is written then).
    fn luk_put(&self, token: &str, follows: Option<u16>, batch: &StoredBatch) -> Result<bool>;
    /// `token`'s current batch.
    fn luk_get(&self, token: &str) -> Result<Option<StoredBatch>>;
    /// Every token's current batch.
    fn luk_all(&self) -> Result<Vec<(String, StoredBatch)>>;
    /// Whether other processes write to this store too (see the module's documentation).
    fn shared(&self) -> bool {
        false
    }
}

/// A token's current batch as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub first_atc: u16,
    pub count: u16,
    pub expires_ms: u64,
    /// The device's public key (SEC1), which replenished batches are sealed for.
    pub device_key: Vec<u8>,
}

impl StoredBatch {
    fn allows(&self, atc: u16, now_ms: u64) -> bool {
        now_ms <= self.expires_ms
            && atc >= self.first_atc
            && u32::from(atc) < u32::from(self.first_atc) + u32::from(self.count)
    }
}

#[derive(Default)]
struct Cache {
    /// `None`: the token has no batch (not a cloud token), as the store said.
    batches: HashMap<String, Option<StoredBatch>>,
    /// Bumped by every eviction (see the vault's cache).
    epoch: u64,
}

pub struct LukRegistry {
    cache: Mutex<Cache>,
    store: Option<std::sync::Arc<dyn LukStore>>,
    shared: bool,
    live: AtomicBool,
    pub batch_size: u16,
    pub ttl_ms: u64,
}

impl LukRegistry {
    pub fn new(batch_size: u16, ttl_ms: u64) -> Self {
        LukRegistry {
            cache: Mutex::new(Cache::default()),
            store: None,
            shared: false,
            live: AtomicBool::new(false),
            batch_size: batch_size.clamp(1, 100),
            ttl_ms,
        }
    }

    /// A registry whose batches are written through to `store` and read back from it.
    pub fn persistent(store: std::sync::Arc<dyn LukStore>, batch_size: u16, ttl_ms: u64) -> Result<Self> {
        let shared = store.shared();
        let mut batches = HashMap::new();
        if !shared {
            for (token, b) in store.luk_all()? {
                batches.insert(token, Some(b));
            }
        }
        Ok(LukRegistry {
            cache: Mutex::new(Cache { batches, epoch: 0 }),
            store: Some(store),
            shared,
            live: AtomicBool::new(false),
            batch_size: batch_size.clamp(1, 100),
            ttl_ms,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Another process changed `token`'s batch in the shared store.
    pub fn evict(&self, token: &str) {
        let mut c = self.lock();
        c.epoch = c.epoch.wrapping_add(1);
        c.batches.remove(token);
    }

    /// Over a shared store: whether its change notices are being received (see
    /// [`crate::TokenVault::set_live`]).
    pub fn set_live(&self, live: bool) {
        let mut c = self.lock();
        c.epoch = c.epoch.wrapping_add(1);
        c.batches.clear();
        self.live.store(live, Ordering::Release);
    }

    /// `token`'s current batch: from the cache, or (over a shared store, when not cached) from
    /// the store.
    fn batch(&self, token: &str) -> Result<Option<StoredBatch>> {
        let (Some(store), true) = (&self.store, self.shared) else {
            return Ok(self.lock().batches.get(token).cloned().flatten());
        };
        let live = self.live.load(Ordering::Acquire);
        let epoch = {
            let c = self.lock();
            if live && let Some(b) = c.batches.get(token) {
                return Ok(b.clone());
            }
            c.epoch
        };
        let found = store.luk_get(token)?;
        if live {
            let mut c = self.lock();
            if c.epoch == epoch && self.live.load(Ordering::Acquire) {
                c.batches.insert(token.to_string(), found.clone());
            }
        }
        Ok(found)
    }

    /// A new batch for `token`, following the previous one. `Ok(None)` when the token's ATC
    /// space is used up (the token must be replaced); an error when the batch could not be
    /// recorded (nothing is issued then).
    pub fn issue(&self, token: &str, device_key: &[u8], now_ms: u64) -> Result<Option<LukBatch>> {
        // Over a store of one process, the lock keeps two issues of one token apart; over a
        // shared store, the conditional write does (a lost race reads the winner and follows it).
        for _ in 0..8 {
            let mut local = (!self.shared).then(|| self.lock());
            let prev = match &local {
                Some(c) => c.batches.get(token).cloned().flatten(),
                None => match &self.store {
                    Some(store) => store.luk_get(token)?,
                    None => None,
                },
            };
            let first = prev.as_ref().map(|b| u32::from(b.first_atc) + u32::from(b.count)).unwrap_or(1);
            if first + u32::from(self.batch_size) > 0xFFFF {
                return Ok(None);
            }
            let first = first as u16;
            let batch = StoredBatch {
                first_atc: first,
                count: self.batch_size,
                expires_ms: now_ms.saturating_add(self.ttl_ms),
                device_key: device_key.to_vec(),
            };
            if let Some(store) = &self.store
                && !store.luk_put(token, prev.as_ref().map(|b| b.first_atc), &batch)?
            {
                drop(local.take());
                self.evict(token);
                continue;
            }
            // Older batches stop counting once a new one is issued.
            match local.as_mut() {
                Some(c) => {
                    c.batches.insert(token.to_string(), Some(batch));
                }
                None => self.evict(token),
            }
            return Ok(Some(LukBatch { first_atc: first, count: self.batch_size }));
        }
        Err(Error::Store { what: "the token's limited-use keys keep changing", source: None })
    }

    /// The device key `token`'s keys are sealed for.
    pub fn device_key(&self, token: &str) -> Option<Vec<u8>> {
        self.batch(token).ok().flatten().map(|b| b.device_key)
    }

    /// Whether `token` is a cloud token (it has limited-use keys).
    pub fn is_cloud(&self, token: &str) -> bool {
        self.batch(token).ok().flatten().is_some()
    }

    /// Whether `atc` belongs to an unexpired batch of `token`.
    pub fn allows(&self, token: &str, atc: u16, now_ms: u64) -> bool {
        self.batch(token).ok().flatten().is_some_and(|b| b.allows(atc, now_ms))
    }

    /// Whether a cryptogram of `token` at `atc` may be accepted: always for a token without
    /// limited-use keys, for a cloud token only from a live key. An error when the store could
    /// not say (the cryptogram is refused then).
    pub fn permits(&self, token: &str, atc: u16, now_ms: u64) -> Result<bool> {
        Ok(self.batch(token)?.is_none_or(|b| b.allows(atc, now_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_each_other_and_expire() {
        let r = LukRegistry::new(5, 1_000);
        assert!(!r.is_cloud("t"));
        let b = r.issue("t", b"dev", 0).expect("store").expect("batch");
        assert_eq!((b.first_atc, b.count), (1, 5));
        assert!(r.allows("t", 1, 10) && r.allows("t", 5, 10));
        assert!(!r.allows("t", 6, 10), "outside the batch");
        assert!(!r.allows("t", 3, 1_001), "expired");
        let b2 = r.issue("t", b"dev", 2_000).expect("store").expect("batch");
        assert_eq!(b2.first_atc, 6);
        assert!(!r.allows("t", 1, 2_001), "the old batch no longer counts");
        assert!(r.allows("t", 7, 2_001));
    }

    #[test]
    fn batches_survive_a_reopen_of_the_store() {
        let store: std::sync::Arc<dyn LukStore> =
            std::sync::Arc::new(crate::store::SqliteVaultStore::in_memory().expect("store"));
        let r = LukRegistry::persistent(store.clone(), 4, 1_000).expect("registry");
        r.issue("t", b"dev", 0).expect("store").expect("batch");
        r.issue("t", b"dev", 10).expect("store").expect("batch");
        let again = LukRegistry::persistent(store, 4, 1_000).expect("registry");
        assert!(again.is_cloud("t"));
        assert_eq!(again.device_key("t").as_deref(), Some(&b"dev"[..]));
        assert!(again.allows("t", 5, 20) && !again.allows("t", 4, 20), "the second batch, 5..=8");
        let next = again.issue("t", b"dev", 30).expect("store").expect("batch");
        assert_eq!(next.first_atc, 9);
    }
}
