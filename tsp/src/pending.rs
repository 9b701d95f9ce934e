//! Provisionings waiting for the cardholder's OTP (the issuer stepped ID&V up), bounded in number
//! and in age. By default they live in the token service's memory; over a store several nodes
//! share ([`PendingStore`], PostgreSQL) they live in it, so that the step-up may be completed on
//! any node. A stored step-up holds its PAN and card expiry sealed with the vault's data key and
//! the provisioning id as associated data (a row moved onto another id does not open), never in
//! clear.

use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::vault::TokenVault;

/// A step-up waiting for its OTP.
pub struct Pending {
    pub requestor: String,
    pub pan: Zeroizing<String>,
    /// The card's expiry (YYMM) as the cardholder typed it.
    pub expiry: String,
    pub device_key: Vec<u8>,
    pub entry_modes: Vec<String>,
    pub request_id: String,
}

/// A step-up as a shared store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPending {
    pub id: String,
    pub requestor: String,
    pub request_id: String,
    /// `PAN=YYMM`, sealed with the id as associated data.
    pub sealed: Vec<u8>,
    pub device_key: Vec<u8>,
    /// Comma-separated.
    pub entry_modes: String,
    pub created_ms: u64,
}

/// Where step-ups persist when several nodes share them.
pub trait PendingStore: Send + Sync + 'static {
    /// Records a step-up, first forgetting those created before `oldest_ms` and, when `capacity`
    /// are kept, the oldest ones beyond it.
    fn pending_put(&self, p: &StoredPending, oldest_ms: u64, capacity: usize) -> Result<()>;
    /// The step-up `id`, unless created before `oldest_ms`.
    fn pending_get(&self, id: &str, oldest_ms: u64) -> Result<Option<StoredPending>>;
    fn pending_remove(&self, id: &str) -> Result<()>;
    /// Step-ups created at or after `oldest_ms`.
    fn pending_count(&self, oldest_ms: u64) -> Result<usize>;
    /// Forgets the step-ups created before `oldest_ms` and the oldest beyond `capacity`.
    fn pending_trim(&self, oldest_ms: u64, capacity: usize) -> Result<()>;
}

/// The associated data of a stored step-up's sealed card.
fn aad(id: &str) -> Vec<u8> {
    format!("pending:{id}").into_bytes()
}

enum Keeping {
    Memory(door::bounded::BoundedMap<String, Pending>),
    Shared { store: Arc<dyn PendingStore>, vault: Arc<TokenVault>, capacity: usize, ttl_ms: u64 },
}

/// The step-ups of a token service.
pub struct PendingBook {
    keeping: Mutex<Keeping>,
}

impl PendingBook {
    /// In memory: at most `capacity`, each for `ttl_ms`.
    pub fn in_memory(capacity: usize, ttl_ms: u64) -> Self {
        PendingBook { keeping: Mutex::new(Keeping::Memory(door::bounded::BoundedMap::new(capacity, ttl_ms))) }
    }

    /// In a shared store, sealed with `vault`'s data key.
    pub fn shared(
        store: Arc<dyn PendingStore>,
        vault: Arc<TokenVault>,
        capacity: usize,
        ttl_ms: u64,
    ) -> Self {
        PendingBook {
            keeping: Mutex::new(Keeping::Shared { store, vault, capacity: capacity.max(1), ttl_ms }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keeping> {
        self.keeping.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the step-up `id`; `nonce` seals its card in a shared store.
    pub fn insert(&self, id: String, p: Pending, now_ms: u64, nonce: [u8; 12]) -> Result<()> {
        match &mut *self.lock() {
            Keeping::Memory(m) => {
                m.insert(id, p, now_ms);
                Ok(())
            }
            Keeping::Shared { store, vault, capacity, ttl_ms } => {
                let plain = Zeroizing::new(format!("{}={}", p.pan.as_str(), p.expiry));
                let stored = StoredPending {
                    sealed: vault.seal_data(nonce, &aad(&id), plain.as_bytes())?,
                    id,
                    requestor: p.requestor,
                    request_id: p.request_id,
                    device_key: p.device_key,
                    entry_modes: p.entry_modes.join(","),
                    created_ms: now_ms,
                };
                store.pending_put(&stored, now_ms.saturating_sub(*ttl_ms), *capacity)
            }
        }
    }

    /// The step-up `id`, when it is still pending.
    pub fn get(&self, id: &str, now_ms: u64) -> Result<Option<Pending>> {
        match &*self.lock() {
            Keeping::Memory(m) => Ok(m.get(id, now_ms).map(|p| Pending {
                requestor: p.requestor.clone(),
                pan: p.pan.clone(),
                expiry: p.expiry.clone(),
                device_key: p.device_key.clone(),
                entry_modes: p.entry_modes.clone(),
                request_id: p.request_id.clone(),
            })),
            Keeping::Shared { store, vault, ttl_ms, .. } => {
                let Some(s) = store.pending_get(id, now_ms.saturating_sub(*ttl_ms))? else { return Ok(None) };
                let clear = Zeroizing::new(vault.open_data(&aad(id), &s.sealed)?);
                let text = std::str::from_utf8(&clear)
                    .map_err(|_| Error::Integrity("sealed step-up is not text"))?;
                let (pan, expiry) =
                    text.split_once('=').ok_or(Error::Integrity("sealed step-up is malformed"))?;
                Ok(Some(Pending {
                    requestor: s.requestor,
                    pan: Zeroizing::new(pan.to_string()),
                    expiry: expiry.to_string(),
                    device_key: s.device_key,
                    entry_modes: s
                        .entry_modes
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect(),
                    request_id: s.request_id,
                }))
            }
        }
    }

    /// The step-up is over.
    pub fn remove(&self, id: &str) -> Result<()> {
        match &mut *self.lock() {
            Keeping::Memory(m) => {
                m.remove(id);
                Ok(())
            }
            Keeping::Shared { store, .. } => store.pending_remove(id),
        }
    }

    /// Changes the bounds (entries over them go, oldest first).
    pub fn set_limits(&self, capacity: usize, ttl_ms: u64, now_ms: u64) -> Result<()> {
        match &mut *self.lock() {
            Keeping::Memory(m) => {
                m.set_limits(capacity, ttl_ms, now_ms);
                Ok(())
            }
            Keeping::Shared { store, capacity: c, ttl_ms: t, .. } => {
                (*c, *t) = (capacity.max(1), ttl_ms);
                store.pending_trim(now_ms.saturating_sub(ttl_ms), *c)
            }
        }
    }

    /// Step-ups pending now.
    pub fn len(&self, now_ms: u64) -> Result<usize> {
        match &*self.lock() {
            Keeping::Memory(m) => Ok(m.len()),
            Keeping::Shared { store, ttl_ms, .. } => store.pending_count(now_ms.saturating_sub(*ttl_ms)),
        }
    }

    /// Whether none is pending.
    pub fn is_empty(&self, now_ms: u64) -> Result<bool> {
        Ok(self.len(now_ms)? == 0)
    }
}
