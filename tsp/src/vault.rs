//! The token vault: each token with its PAN sealed (AES-256-GCM, the token as associated data, so a
//! row copied onto another token fails to open rather than yield the wrong card), a keyed
//! HMAC-SHA256 fingerprint of the PAN for look-ups (never an unkeyed hash, which a PAN's small
//! space would let anyone reverse), its PAR, expiry, status, requestor and domain controls. The
//! fingerprint's key is the vault's own (`tsp.vault-index`), not the journal's, so the two
//! fingerprints of one PAN cannot be matched.
//!
//! Reads come from an in-memory cache, so the detokenize stage costs no query. Over a store of one
//! process (SQLite) the cache is filled at start-up and kept in step with every write. Over a store
//! several processes write ([`VaultStore::shared`], PostgreSQL) it is read-through: a token this
//! process has not seen is looked up in the store (and an unknown one remembered as absent), and
//! the store's change notices evict tokens ([`TokenVault::evict`]); while the notices may be
//! missed ([`TokenVault::set_live`] false) every read goes to the store. Writes go to the store
//! first, then the cache. Data keys are versioned: [`TokenVault::rewrap`] re-seals every PAN under
//! the current version for rotation.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

use crypto::seal::Sealer;

use crate::error::{Error, Result};

/// Token lifecycle (EMV Payment Tokenisation Framework §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenStatus {
    /// Issued, not yet installed on the device.
    Inactive,
    Active,
    Suspended,
    /// Final: never active again.
    Deleted,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Inactive => "inactive",
            TokenStatus::Active => "active",
            TokenStatus::Suspended => "suspended",
            TokenStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "inactive" => TokenStatus::Inactive,
            "active" => TokenStatus::Active,
            "suspended" => TokenStatus::Suspended,
            "deleted" => TokenStatus::Deleted,
            _ => return None,
        })
    }

    /// Whether the lifecycle allows going from `self` to `to`.
    pub fn can_become(self, to: TokenStatus) -> bool {
        use TokenStatus::*;
        matches!(
            (self, to),
            (Inactive, Active)
                | (Active, Suspended)
                | (Suspended, Active)
                | (Inactive | Active | Suspended, Deleted)
        )
    }
}

/// Where a token may be used (domain restriction controls).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainControls {
    /// Allowed POS entry modes (DE 22 first two digits, e.g. `07` contactless, `81` e-commerce).
    pub entry_modes: Vec<String>,
    /// Allowed message classes by first DE 3 digits pair (`00` purchase, `01` cash).
    pub transaction_types: Vec<String>,
    /// The token requestor the token is bound to.
    pub requestor_id: String,
}

impl DomainControls {
    fn encode(&self) -> String {
        format!("{}|{}|{}", self.entry_modes.join(","), self.transaction_types.join(","), self.requestor_id)
    }

    fn decode(s: &str) -> Option<Self> {
        let mut it = s.split('|');
        let list = |x: &str| x.split(',').filter(|v| !v.is_empty()).map(str::to_string).collect();
        Some(DomainControls {
            entry_modes: list(it.next()?),
            transaction_types: list(it.next()?),
            requestor_id: it.next()?.to_string(),
        })
    }

    /// Whether a request with this entry mode and processing code is inside the domain.
    pub fn allows(&self, entry_mode: &str, processing_code: &str) -> bool {
        let em = entry_mode.get(..2).unwrap_or("");
        let tt = processing_code.get(..2).unwrap_or("");
        self.entry_modes.iter().any(|m| m == em) && self.transaction_types.iter().any(|t| t == tt)
    }
}

/// One token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token: String,
    /// The PAN, sealed with the token as associated data.
    pub pan_sealed: Vec<u8>,
    /// HMAC-SHA256 of the PAN under the vault's fingerprint key, hex.
    pub pan_fingerprint: String,
    /// Payment account reference, shared by every token of one PAN.
    pub par: String,
    /// Token expiry YYMM.
    pub expiry: String,
    pub status: TokenStatus,
    pub domain: DomainControls,
    pub created_ms: u64,
}

impl TokenRecord {
    /// A record from a store's row (status and domain controls in their text forms).
    #[allow(clippy::too_many_arguments)]
    pub fn from_row(
        token: String,
        pan_sealed: Vec<u8>,
        pan_fingerprint: String,
        par: String,
        expiry: String,
        status: &str,
        domain: &str,
        created_ms: i64,
    ) -> Result<Self> {
        let bad = |field| Error::BadRow { table: "vault", field };
        Ok(TokenRecord {
            status: TokenStatus::parse(status).ok_or_else(|| bad("status"))?,
            domain: domain_from_text(domain).ok_or_else(|| bad("domain"))?,
            token,
            pan_sealed,
            pan_fingerprint,
            par,
            expiry,
            created_ms: created_ms.max(0) as u64,
        })
    }
}

/// What a new token is issued with.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub token: &'a str,
    pub pan: &'a str,
    /// The card's own expiry (YYMM), sealed with the PAN: the issuer sees it in place of the
    /// token's.
    pub pan_expiry: &'a str,
    pub par: &'a str,
    /// YYMM.
    pub expiry: &'a str,
    pub domain: DomainControls,
}

/// Where tokens persist.
pub trait VaultStore: Send + Sync + 'static {
    /// Inserts a new token ([`Error::Exists`] or a store error when it exists).
    fn vault_put(&self, rec: &TokenRecord) -> Result<()>;
    /// Moves `token` from `from` to `to`; `false` when its stored status is not `from` (another
    /// process changed it first) or the token is unknown.
    fn vault_set_status(&self, token: &str, from: TokenStatus, to: TokenStatus) -> Result<bool>;
    fn vault_set_sealed(&self, token: &str, sealed: &[u8]) -> Result<()>;
    fn vault_all(&self) -> Result<Vec<TokenRecord>>;
    /// One token.
    fn vault_get(&self, token: &str) -> Result<Option<TokenRecord>>;
    /// The tokens of one PAN, by its keyed fingerprint.
    fn vault_of_fingerprint(&self, fingerprint: &str) -> Result<Vec<TokenRecord>>;
    /// Whether other processes write to this store too: the vault's cache then reads through
    /// and is kept fresh by the store's change notices.
    fn shared(&self) -> bool {
        false
    }
}

/// Row helpers for store implementations.
pub fn domain_to_text(d: &DomainControls) -> String {
    d.encode()
}

pub fn domain_from_text(s: &str) -> Option<DomainControls> {
    DomainControls::decode(s)
}

/// Tokens remembered as absent from a shared store (unknown tokens presented), at most.
const MAX_ABSENT: usize = 100_000;

#[derive(Default)]
struct Cache {
    by_token: HashMap<String, Arc<TokenRecord>>,
    /// Complete over a store of one process only.
    by_fingerprint: HashMap<String, Vec<String>>,
    /// Tokens a shared store did not hold when last asked.
    absent: HashSet<String>,
    /// Bumped by every eviction: a read of the store that began before it does not fill the
    /// cache (it may have read the row the eviction is about).
    epoch: u64,
}

pub struct TokenVault {
    store: Arc<dyn VaultStore>,
    sealer: RwLock<Sealer>,
    fingerprint_key: Zeroizing<Vec<u8>>,
    cache: RwLock<Cache>,
    /// Over a shared store: read-through, evicted by change notices.
    shared: bool,
    /// Over a shared store: whether change notices are being received (else the cache is not
    /// used).
    live: AtomicBool,
}

impl TokenVault {
    /// Opens the vault and loads every token into the cache.
    pub fn open(
        store: Arc<dyn VaultStore>,
        sealer: Sealer,
        fingerprint_key: Zeroizing<Vec<u8>>,
    ) -> Result<Self> {
        let shared = store.shared();
        let v = TokenVault {
            store,
            sealer: RwLock::new(sealer),
            fingerprint_key,
            cache: RwLock::new(Cache::default()),
            shared,
            live: AtomicBool::new(false),
        };
        // A shared store's tokens are read as they are asked for.
        if !shared {
            for rec in v.store.vault_all()? {
                v.cache(Arc::new(rec));
            }
        }
        Ok(v)
    }

    fn cache_read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether reads may be answered from the cache.
    fn cache_trusted(&self) -> bool {
        !self.shared || self.live.load(Ordering::Acquire)
    }

    fn cache(&self, rec: Arc<TokenRecord>) {
        if !self.cache_trusted() {
            return;
        }
        let mut c = self.cache_write();
        if !self.shared {
            let list = c.by_fingerprint.entry(rec.pan_fingerprint.clone()).or_default();
            if !list.contains(&rec.token) {
                list.push(rec.token.clone());
            }
        }
        c.absent.remove(&rec.token);
        c.by_token.insert(rec.token.clone(), rec);
    }

    /// Another process changed `token` in the shared store: the next read goes to the store.
    pub fn evict(&self, token: &str) {
        let mut c = self.cache_write();
        c.epoch = c.epoch.wrapping_add(1);
        c.by_token.remove(token);
        c.absent.remove(token);
    }

    /// Over a shared store: whether the store's change notices are being received. Either way
    /// the cache starts empty again; while they are not, every read goes to the store (a change
    /// may have been missed).
    pub fn set_live(&self, live: bool) {
        let mut c = self.cache_write();
        c.epoch = c.epoch.wrapping_add(1);
        c.by_token.clear();
        c.absent.clear();
        self.live.store(live, Ordering::Release);
    }

    /// The keyed fingerprint of a PAN.
    pub fn fingerprint(&self, pan: &str) -> String {
        hex::encode_upper(crypto::mac::hmac_sha256(&self.fingerprint_key, pan.as_bytes()))
    }

    /// Every token in the vault (start-up indexes; not on the hot path).
    pub fn tokens(&self) -> Vec<String> {
        if self.shared {
            match self.store.vault_all() {
                Ok(all) => return all.into_iter().map(|r| r.token).collect(),
                Err(e) => tracing::error!(error = %e, "vault: listing the shared store's tokens failed"),
            }
        }
        self.cache_read().by_token.keys().cloned().collect()
    }

    /// The token: from the cache, or (over a shared store, when not cached) from the store.
    pub fn lookup(&self, token: &str) -> Result<Option<Arc<TokenRecord>>> {
        let trusted = self.cache_trusted();
        let epoch = {
            let c = self.cache_read();
            if trusted {
                if let Some(r) = c.by_token.get(token) {
                    return Ok(Some(r.clone()));
                }
                if !self.shared || c.absent.contains(token) {
                    return Ok(None);
                }
            }
            c.epoch
        };
        let found = self.store.vault_get(token)?.map(Arc::new);
        if trusted {
            let mut c = self.cache_write();
            // Filled only when no eviction (nor a lost listener) came in between.
            if c.epoch == epoch && self.live.load(Ordering::Acquire) {
                match &found {
                    Some(r) => {
                        c.by_token.insert(token.to_string(), r.clone());
                    }
                    None => {
                        if c.absent.len() >= MAX_ABSENT {
                            c.absent.clear();
                        }
                        c.absent.insert(token.to_string());
                    }
                }
            }
        }
        Ok(found)
    }

    /// The token (see [`TokenVault::lookup`]); a store that fails to answer is logged and the
    /// token taken as unknown.
    pub fn get(&self, token: &str) -> Option<Arc<TokenRecord>> {
        self.lookup(token).unwrap_or_else(|e| {
            tracing::error!(error = %e, "vault: token look-up failed");
            None
        })
    }

    /// The token as the store holds it now (writes decide on this, not on a cached copy).
    fn current(&self, token: &str) -> Result<Option<Arc<TokenRecord>>> {
        if self.shared { Ok(self.store.vault_get(token)?.map(Arc::new)) } else { self.lookup(token) }
    }

    /// Tokens of a PAN (by its fingerprint).
    pub fn tokens_of(&self, pan: &str) -> Vec<Arc<TokenRecord>> {
        let fp = self.fingerprint(pan);
        if self.shared {
            return match self.store.vault_of_fingerprint(&fp) {
                Ok(list) => list.into_iter().map(Arc::new).collect(),
                Err(e) => {
                    tracing::error!(error = %e, "vault: look-up by card failed");
                    Vec::new()
                }
            };
        }
        let tokens = self.cache_read().by_fingerprint.get(&fp).cloned();
        tokens.unwrap_or_default().iter().filter_map(|t| self.get(t)).collect()
    }

    /// The PAR of a PAN: the one its existing tokens carry, else a new one from `random`.
    pub fn par_for(&self, pan: &str, bin_controller: &str, random: &[u8]) -> String {
        if let Some(t) = self.tokens_of(pan).first() {
            return t.par.clone();
        }
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut par = bin_controller.chars().take(4).collect::<String>();
        // 252 = 36 × 7: unbiased draws.
        let mut it = random.iter().filter(|b| **b < 252);
        while par.len() < 29 {
            let Some(b) = it.next() else { break };
            par.push(char::from(ALPHABET[usize::from(*b % 36)]));
        }
        par
    }

    /// Stores a new token. The token must not exist yet.
    pub fn insert(&self, new: NewToken<'_>, now_ms: u64, nonce: [u8; 12]) -> Result<Arc<TokenRecord>> {
        if self.current(new.token)?.is_some() {
            return Err(Error::Exists);
        }
        if new.pan_expiry.len() != 4 || !new.pan_expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Expiry);
        }
        let plain = Zeroizing::new(format!("{}={}", new.pan, new.pan_expiry));
        let sealed = self.sealer.read().unwrap_or_else(|p| p.into_inner()).seal(
            nonce,
            new.token.as_bytes(),
            plain.as_bytes(),
        )?;
        let rec = TokenRecord {
            token: new.token.to_string(),
            pan_sealed: sealed,
            pan_fingerprint: self.fingerprint(new.pan),
            par: new.par.to_string(),
            expiry: new.expiry.to_string(),
            status: TokenStatus::Inactive,
            domain: new.domain,
            created_ms: now_ms,
        };
        self.store.vault_put(&rec)?;
        let rec = Arc::new(rec);
        self.cache(rec.clone());
        Ok(rec)
    }

    fn open_raw(&self, rec: &TokenRecord) -> Result<Zeroizing<Vec<u8>>> {
        Ok(Zeroizing::new(
            self.sealer
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .open(rec.token.as_bytes(), &rec.pan_sealed)?,
        ))
    }

    /// The card behind a token: its PAN and expiry (YYMM). A row whose seal does not open
    /// (tampered, moved to another token, or sealed under an unknown key version) is an error —
    /// never a wrong PAN.
    pub fn card(&self, rec: &TokenRecord) -> Result<(Zeroizing<String>, String)> {
        let clear = self.open_raw(rec)?;
        let s = std::str::from_utf8(&clear).map_err(|_| Error::Integrity("sealed card data is not text"))?;
        let (pan, exp) = s.split_once('=').ok_or(Error::Integrity("sealed card data is malformed"))?;
        if !pan.bytes().all(|b| b.is_ascii_digit()) || self.fingerprint(pan) != rec.pan_fingerprint {
            return Err(Error::Integrity("sealed PAN does not match its fingerprint"));
        }
        Ok((Zeroizing::new(pan.to_string()), exp.to_string()))
    }

    /// The PAN behind a token (see [`TokenVault::card`]).
    pub fn pan(&self, rec: &TokenRecord) -> Result<Zeroizing<String>> {
        Ok(self.card(rec)?.0)
    }

    /// Moves a token through its lifecycle. The change is decided on the stored status (over a
    /// shared store another process may have changed it): a status changed in between is read
    /// again and the lifecycle checked against it.
    pub fn set_status(&self, token: &str, to: TokenStatus) -> Result<Arc<TokenRecord>> {
        // Each round sees another process's change; the lifecycle has four states, so a few
        // rounds settle it.
        for _ in 0..8 {
            let cur = self.current(token)?.ok_or(Error::NoSuchToken)?;
            if cur.status == to {
                return Ok(cur);
            }
            if !cur.status.can_become(to) {
                return Err(Error::Lifecycle { from: cur.status.as_str(), to: to.as_str() });
            }
            if self.store.vault_set_status(token, cur.status, to)? {
                let rec = Arc::new(TokenRecord { status: to, ..(*cur).clone() });
                self.cache(rec.clone());
                return Ok(rec);
            }
            self.evict(token);
        }
        Err(Error::Store { what: "the token's status keeps changing", source: None })
    }

    /// Makes `version` current (it must have been added) and re-seals every PAN under it.
    /// Returns how many rows were re-sealed.
    pub fn rewrap(&self, version: u32, mut nonce: impl FnMut() -> [u8; 12]) -> Result<usize> {
        self.sealer.write().unwrap_or_else(|p| p.into_inner()).set_current(version)?;
        let all: Vec<Arc<TokenRecord>> = if self.shared {
            self.store.vault_all()?.into_iter().map(Arc::new).collect()
        } else {
            self.cache_read().by_token.values().cloned().collect()
        };
        let mut n = 0;
        for rec in all {
            if Sealer::version_of(&rec.pan_sealed) == Some(version) {
                continue;
            }
            self.card(&rec)?;
            let plain = self.open_raw(&rec)?;
            let sealed = self.sealer.read().unwrap_or_else(|p| p.into_inner()).seal(
                nonce(),
                rec.token.as_bytes(),
                &plain,
            )?;
            self.store.vault_set_sealed(&rec.token, &sealed)?;
            self.cache(Arc::new(TokenRecord { pan_sealed: sealed, ..(*rec).clone() }));
            n += 1;
        }
        Ok(n)
    }

    /// Seals other card data under the vault's current data key, bound to `aad` (the pending
    /// step-ups' cards: see [`crate::pending`]).
    pub fn seal_data(&self, nonce: [u8; 12], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        Ok(self.sealer.read().unwrap_or_else(|p| p.into_inner()).seal(nonce, aad, plain)?)
    }

    /// Opens what [`TokenVault::seal_data`] sealed with the same `aad`.
    pub fn open_data(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        Ok(self.sealer.read().unwrap_or_else(|p| p.into_inner()).open(aad, sealed)?)
    }

    /// Adds a data key version (before [`TokenVault::rewrap`] to it).
    pub fn add_key(&self, version: u32, key: &crypto::AesKey) -> Result<()> {
        Ok(self.sealer.write().unwrap_or_else(|p| p.into_inner()).add_key(version, key)?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::store::SqliteVaultStore;

    /// A store other processes write too: SQLite in memory, counting its one-token reads.
    struct Shared {
        inner: SqliteVaultStore,
        reads: AtomicUsize,
        /// A vault whose token gets evicted during the next read (a change notice arriving while
        /// the read is in flight).
        evict_during_read: std::sync::Mutex<Option<std::sync::Weak<TokenVault>>>,
    }

    impl VaultStore for Shared {
        fn vault_put(&self, rec: &TokenRecord) -> Result<()> {
            self.inner.vault_put(rec)
        }
        fn vault_set_status(&self, token: &str, from: TokenStatus, to: TokenStatus) -> Result<bool> {
            self.inner.vault_set_status(token, from, to)
        }
        fn vault_set_sealed(&self, token: &str, sealed: &[u8]) -> Result<()> {
            self.inner.vault_set_sealed(token, sealed)
        }
        fn vault_all(&self) -> Result<Vec<TokenRecord>> {
            self.inner.vault_all()
        }
        fn vault_get(&self, token: &str) -> Result<Option<TokenRecord>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let row = self.inner.vault_get(token);
            let hook = self.evict_during_read.lock().expect("lock").take();
            if let Some(v) = hook.and_then(|w| w.upgrade()) {
                v.evict(token);
            }
            row
        }
        fn vault_of_fingerprint(&self, fingerprint: &str) -> Result<Vec<TokenRecord>> {
            self.inner.vault_of_fingerprint(fingerprint)
        }
        fn shared(&self) -> bool {
            true
        }
    }

    const T: &str = "4895370000000013";

    fn setup() -> (Arc<Shared>, TokenVault) {
        let store = Arc::new(Shared {
            inner: SqliteVaultStore::in_memory().expect("store"),
            reads: AtomicUsize::new(0),
            evict_during_read: std::sync::Mutex::new(None),
        });
        let key = crypto::AesKey::from_slice(&[3; 32]).expect("aes");
        let v = TokenVault::open(
            store.clone(),
            Sealer::new(1, &key).expect("sealer"),
            Zeroizing::new(vec![9; 32]),
        )
        .expect("vault");
        let domain = DomainControls {
            entry_modes: vec!["07".into()],
            transaction_types: vec!["00".into()],
            requestor_id: "40010030273".into(),
        };
        let new = NewToken {
            token: T,
            pan: "4761739001010010",
            pan_expiry: "2812",
            par: "P",
            expiry: "2912",
            domain,
        };
        v.insert(new, 1, [1; 12]).expect("insert");
        (store, v)
    }

    fn reads(s: &Shared) -> usize {
        s.reads.load(Ordering::Relaxed)
    }

    #[test]
    fn over_a_shared_store_reads_go_through_until_changes_are_heard_then_the_cache_answers() {
        let (store, v) = setup();
        // Not listening yet: every look-up reads the store, nothing is kept.
        let before = reads(&store);
        assert!(v.get(T).is_some() && v.get(T).is_some());
        assert_eq!(reads(&store), before + 2);
        // Listening: read once, then answered from the cache — an unknown token too.
        v.set_live(true);
        let before = reads(&store);
        assert!(v.get(T).is_some() && v.get(T).is_some());
        assert!(v.get("4895370000000021").is_none() && v.get("4895370000000021").is_none());
        assert_eq!(reads(&store), before + 2, "one read per token");
        // Another process suspends it: the cached copy holds until the notice evicts it.
        assert!(
            store.inner.vault_set_status(T, TokenStatus::Inactive, TokenStatus::Suspended).expect("write")
        );
        assert_eq!(v.get(T).map(|r| r.status), Some(TokenStatus::Inactive), "not heard of yet");
        v.evict(T);
        assert_eq!(v.get(T).map(|r| r.status), Some(TokenStatus::Suspended));
        // Lifecycle changes are decided on the stored status, whatever the cache says.
        assert!(
            store.inner.vault_set_status(T, TokenStatus::Suspended, TokenStatus::Deleted).expect("write")
        );
        assert!(matches!(
            v.set_status(T, TokenStatus::Active),
            Err(Error::Lifecycle { from: "deleted", .. })
        ));
        // The listener lost: the cache is dropped and the store read every time again.
        v.set_live(false);
        let before = reads(&store);
        assert_eq!(v.get(T).map(|r| r.status), Some(TokenStatus::Deleted));
        v.get(T);
        assert_eq!(reads(&store), before + 2);
    }

    #[test]
    fn a_read_that_began_before_an_eviction_does_not_fill_the_cache() {
        let (store, v) = setup();
        let v = Arc::new(v);
        v.set_live(true);
        // The notice of a change arrives while a look-up is reading: what it read is not kept.
        *store.evict_during_read.lock().expect("lock") = Some(Arc::downgrade(&v));
        assert!(v.get(T).is_some());
        let before = reads(&store);
        assert!(v.get(T).is_some());
        assert_eq!(reads(&store), before + 1, "read again, not answered from a stale fill");
        // Without an eviction in between, the read fills the cache.
        let before = reads(&store);
        assert!(v.get(T).is_some());
        assert_eq!(reads(&store), before, "cached");
    }
}
