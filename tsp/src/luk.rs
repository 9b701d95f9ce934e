//! Limited-use keys (cloud-based payments, HCE): a phone without a secure element never holds its
//! token's ICC master key; the token service hands it batches of session keys, each for one ATC and
//! valid until the batch's time to live. The detokenize stage accepts a cloud token's cryptogram
//! only for an ATC of an unexpired batch (each ATC once, by the replay window); when the phone has
//! used or outlived its keys it must replenish.

use std::collections::HashMap;
use std::sync::Mutex;

use crypto::hsm::LukBatch;

use crate::error::Result;

/// Where issued batches are kept, so that a restarted switch still accepts the keys its phones
/// hold. The store holds tokens and ATC ranges only (no key, no PAN).
pub trait LukStore: Send + Sync + 'static {
    /// Records `token`'s current batch and the device key its keys are sealed for, replacing the
    /// previous batch.
    fn luk_put(&self, token: &str, batch: &StoredBatch) -> Result<()>;
    /// Every token's current batch.
    fn luk_all(&self) -> Result<Vec<(String, StoredBatch)>>;
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

#[derive(Debug, Clone, Copy)]
struct Batch {
    first: u16,
    count: u16,
    expires_ms: u64,
}

pub struct LukRegistry {
    batches: Mutex<HashMap<String, Vec<Batch>>>,
    devices: Mutex<HashMap<String, Vec<u8>>>,
    store: Option<std::sync::Arc<dyn LukStore>>,
    pub batch_size: u16,
    pub ttl_ms: u64,
}

impl LukRegistry {
    pub fn new(batch_size: u16, ttl_ms: u64) -> Self {
        LukRegistry {
            batches: Mutex::new(HashMap::new()),
            devices: Mutex::new(HashMap::new()),
            store: None,
            batch_size: batch_size.clamp(1, 100),
            ttl_ms,
        }
    }

    /// A registry whose batches are written through to `store` and read back from it.
    pub fn persistent(store: std::sync::Arc<dyn LukStore>, batch_size: u16, ttl_ms: u64) -> Result<Self> {
        let mut batches = HashMap::new();
        let mut devices = HashMap::new();
        for (token, b) in store.luk_all()? {
            batches.insert(
                token.clone(),
                vec![Batch { first: b.first_atc, count: b.count, expires_ms: b.expires_ms }],
            );
            devices.insert(token, b.device_key);
        }
        Ok(LukRegistry {
            batches: Mutex::new(batches),
            devices: Mutex::new(devices),
            store: Some(store),
            batch_size: batch_size.clamp(1, 100),
            ttl_ms,
        })
    }

    /// A new batch for `token`, following the previous one. `Ok(None)` when the token's ATC
    /// space is used up (the token must be replaced); an error when the batch could not be
    /// recorded (nothing is issued then).
    pub fn issue(&self, token: &str, device_key: &[u8], now_ms: u64) -> Result<Option<LukBatch>> {
        let mut all = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let list = all.entry(token.to_string()).or_default();
        let first = list.last().map(|b| u32::from(b.first) + u32::from(b.count)).unwrap_or(1);
        if first + u32::from(self.batch_size) > 0xFFFF {
            return Ok(None);
        }
        let first = first as u16;
        let batch = Batch { first, count: self.batch_size, expires_ms: now_ms.saturating_add(self.ttl_ms) };
        if let Some(store) = &self.store {
            let stored = StoredBatch {
                first_atc: batch.first,
                count: batch.count,
                expires_ms: batch.expires_ms,
                device_key: device_key.to_vec(),
            };
            store.luk_put(token, &stored)?;
        }
        self.devices.lock().unwrap_or_else(|p| p.into_inner()).insert(token.to_string(), device_key.to_vec());
        // Older batches stop counting once a new one is issued.
        list.clear();
        list.push(batch);
        Ok(Some(LukBatch { first_atc: first, count: self.batch_size }))
    }

    /// The device key `token`'s keys are sealed for.
    pub fn device_key(&self, token: &str) -> Option<Vec<u8>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }

    /// Whether `token` is a cloud token (it has limited-use keys).
    pub fn is_cloud(&self, token: &str) -> bool {
        self.batches.lock().unwrap_or_else(|p| p.into_inner()).contains_key(token)
    }

    /// Whether `atc` belongs to an unexpired batch of `token`.
    pub fn allows(&self, token: &str, atc: u16, now_ms: u64) -> bool {
        let all = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        all.get(token).is_some_and(|list| {
            list.iter().any(|b| {
                now_ms <= b.expires_ms
                    && atc >= b.first
                    && u32::from(atc) < u32::from(b.first) + u32::from(b.count)
            })
        })
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
