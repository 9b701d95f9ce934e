//! The answers a token service gives again for a repeated request id (a requestor retrying a
//! provisioning whose answer it lost), bounded in number and in age. By default they live in the
//! token service's memory; over a store several nodes share ([`AnsweredStore`], PostgreSQL) they
//! live in it, so that a requestor retrying on another node gets the same answer rather than a
//! second provisioning. A stored answer is sealed with the vault's data key, the requestor and
//! request id as associated data (a row moved onto another request does not open): it names a
//! token and carries its profile sealed for the device, which the database is not to read or
//! swap.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::service::ProvisionOutcome;
use crate::vault::TokenVault;

/// An answer as a shared store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub requestor: String,
    pub request_id: String,
    /// The answer (JSON), sealed with the requestor and request id as associated data.
    pub sealed: Vec<u8>,
    pub created_ms: u64,
}

/// Where answers persist when several nodes share them.
pub trait AnsweredStore: Send + Sync + 'static {
    /// Records an answer, first forgetting those created before `oldest_ms` and, when `capacity`
    /// are kept, the oldest ones beyond it. A later answer to the same request replaces the
    /// earlier one.
    fn answered_put(&self, a: &StoredAnswer, oldest_ms: u64, capacity: usize) -> Result<()>;
    /// The answer to `requestor`'s `request_id`, unless created before `oldest_ms`.
    fn answered_get(&self, requestor: &str, request_id: &str, oldest_ms: u64)
    -> Result<Option<StoredAnswer>>;
    /// Answers created at or after `oldest_ms`.
    fn answered_count(&self, oldest_ms: u64) -> Result<usize>;
    /// Forgets the answers created before `oldest_ms` and the oldest beyond `capacity`.
    fn answered_trim(&self, oldest_ms: u64, capacity: usize) -> Result<()>;
}

/// The associated data of a stored answer (a requestor id is digits only: unambiguous).
fn aad(requestor: &str, request_id: &str) -> Vec<u8> {
    format!("answered:{requestor}:{request_id}").into_bytes()
}

enum Keeping {
    Memory(door::bounded::BoundedMap<(String, String), ProvisionOutcome>),
    Shared { store: Arc<dyn AnsweredStore>, vault: Arc<TokenVault>, capacity: usize, ttl_ms: u64 },
}

/// A shared store's parts: the store, the vault that seals, the bound, the age.
type Shared = (Arc<dyn AnsweredStore>, Arc<TokenVault>, usize, u64);

/// The answers of a token service, by (requestor, request id).
pub struct AnsweredBook {
    keeping: Mutex<Keeping>,
}

impl AnsweredBook {
    /// In memory: at most `capacity`, each for `ttl_ms`.
    pub fn in_memory(capacity: usize, ttl_ms: u64) -> Self {
        AnsweredBook {
            keeping: Mutex::new(Keeping::Memory(door::bounded::BoundedMap::new(capacity, ttl_ms))),
        }
    }

    /// In a shared store, sealed with `vault`'s data key.
    pub fn shared(
        store: Arc<dyn AnsweredStore>,
        vault: Arc<TokenVault>,
        capacity: usize,
        ttl_ms: u64,
    ) -> Self {
        AnsweredBook {
            keeping: Mutex::new(Keeping::Shared { store, vault, capacity: capacity.max(1), ttl_ms }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keeping> {
        self.keeping.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared store's parts, taken out so that no call to the database holds the lock.
    fn shared_parts(&self) -> Option<Shared> {
        match &*self.lock() {
            Keeping::Memory(_) => None,
            Keeping::Shared { store, vault, capacity, ttl_ms } => {
                Some((store.clone(), vault.clone(), *capacity, *ttl_ms))
            }
        }
    }

    /// The answer given to `requestor`'s `request_id`, when it is still kept.
    pub fn get(&self, requestor: &str, request_id: &str, now_ms: u64) -> Result<Option<ProvisionOutcome>> {
        let Some((store, vault, _, ttl_ms)) = self.shared_parts() else {
            let key = (requestor.to_string(), request_id.to_string());
            return Ok(match &*self.lock() {
                Keeping::Memory(m) => m.get(&key, now_ms).cloned(),
                Keeping::Shared { .. } => None,
            });
        };
        let Some(s) = store.answered_get(requestor, request_id, now_ms.saturating_sub(ttl_ms))? else {
            return Ok(None);
        };
        let clear = vault.open_data(&aad(requestor, request_id), &s.sealed)?;
        serde_json::from_slice(&clear).map(Some).map_err(|_| Error::Integrity("sealed answer is malformed"))
    }

    /// Records the answer given to `requestor`'s `request_id`; `nonce` seals it in a shared store.
    pub fn insert(
        &self,
        requestor: &str,
        request_id: &str,
        o: &ProvisionOutcome,
        now_ms: u64,
        nonce: [u8; 12],
    ) -> Result<()> {
        let Some((store, vault, capacity, ttl_ms)) = self.shared_parts() else {
            if let Keeping::Memory(m) = &mut *self.lock() {
                m.insert((requestor.to_string(), request_id.to_string()), o.clone(), now_ms);
            }
            return Ok(());
        };
        let plain = serde_json::to_vec(o).map_err(|_| Error::Integrity("answer does not serialize"))?;
        let stored = StoredAnswer {
            requestor: requestor.to_string(),
            request_id: request_id.to_string(),
            sealed: vault.seal_data(nonce, &aad(requestor, request_id), &plain)?,
            created_ms: now_ms,
        };
        store.answered_put(&stored, now_ms.saturating_sub(ttl_ms), capacity)
    }

    /// Changes the bounds (entries over them go, oldest first).
    pub fn set_limits(&self, capacity: usize, ttl_ms: u64, now_ms: u64) -> Result<()> {
        let store = match &mut *self.lock() {
            Keeping::Memory(m) => {
                m.set_limits(capacity, ttl_ms, now_ms);
                return Ok(());
            }
            Keeping::Shared { store, capacity: c, ttl_ms: t, .. } => {
                (*c, *t) = (capacity.max(1), ttl_ms);
                store.clone()
            }
        };
        store.answered_trim(now_ms.saturating_sub(ttl_ms), capacity.max(1))
    }

    /// Answers kept now.
    pub fn len(&self, now_ms: u64) -> Result<usize> {
        match self.shared_parts() {
            None => Ok(match &*self.lock() {
                Keeping::Memory(m) => m.len(),
                Keeping::Shared { .. } => 0,
            }),
            Some((store, _, _, ttl_ms)) => store.answered_count(now_ms.saturating_sub(ttl_ms)),
        }
    }

    /// Whether none is kept.
    pub fn is_empty(&self, now_ms: u64) -> Result<bool> {
        Ok(self.len(now_ms)? == 0)
    }
}
