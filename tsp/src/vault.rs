//! The token vault: each token with its PAN sealed (AES-256-GCM, the token as associated data, so a
//! row copied onto another token fails to open rather than yield the wrong card), a keyed
//! HMAC-SHA256 fingerprint of the PAN for look-ups (never an unkeyed hash, which a PAN's small
//! space would let anyone reverse), its PAR, expiry, status, requestor and domain controls. The
//! fingerprint's key is the vault's own (`tsp.vault-index`), not the journal's, so the two
//! fingerprints of one PAN cannot be matched.
//!
//! Reads come from an in-memory cache filled at start-up and kept in step with every write, so the
//! detokenize stage costs no query. Writes go to the store first, then the cache. Data keys are
//! versioned: [`TokenVault::rewrap`] re-seals every PAN under the current version for rotation.

use std::collections::HashMap;
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
    fn vault_put(&self, rec: &TokenRecord) -> Result<()>;
    fn vault_set_status(&self, token: &str, status: TokenStatus) -> Result<()>;
    fn vault_set_sealed(&self, token: &str, sealed: &[u8]) -> Result<()>;
    fn vault_all(&self) -> Result<Vec<TokenRecord>>;
}

/// Row helpers for store implementations.
pub fn domain_to_text(d: &DomainControls) -> String {
    d.encode()
}

pub fn domain_from_text(s: &str) -> Option<DomainControls> {
    DomainControls::decode(s)
}

pub struct TokenVault {
    store: Arc<dyn VaultStore>,
    sealer: RwLock<Sealer>,
    fingerprint_key: Zeroizing<Vec<u8>>,
    by_token: RwLock<HashMap<String, Arc<TokenRecord>>>,
    by_fingerprint: RwLock<HashMap<String, Vec<String>>>,
}

impl TokenVault {
    /// Opens the vault and loads every token into the cache.
    pub fn open(
        store: Arc<dyn VaultStore>,
        sealer: Sealer,
        fingerprint_key: Zeroizing<Vec<u8>>,
    ) -> Result<Self> {
        let v = TokenVault {
            store,
            sealer: RwLock::new(sealer),
            fingerprint_key,
            by_token: RwLock::new(HashMap::new()),
            by_fingerprint: RwLock::new(HashMap::new()),
        };
        for rec in v.store.vault_all()? {
            v.cache(Arc::new(rec));
        }
        Ok(v)
    }

    fn cache(&self, rec: Arc<TokenRecord>) {
        let mut fp = self.by_fingerprint.write().unwrap_or_else(|p| p.into_inner());
        let list = fp.entry(rec.pan_fingerprint.clone()).or_default();
        if !list.contains(&rec.token) {
            list.push(rec.token.clone());
        }
        self.by_token.write().unwrap_or_else(|p| p.into_inner()).insert(rec.token.clone(), rec);
    }

    /// The keyed fingerprint of a PAN.
    pub fn fingerprint(&self, pan: &str) -> String {
        hex::encode_upper(crypto::mac::hmac_sha256(&self.fingerprint_key, pan.as_bytes()))
    }

    /// Every token in the vault (start-up indexes; not on the hot path).
    pub fn tokens(&self) -> Vec<String> {
        self.by_token.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// The token, from the cache.
    pub fn get(&self, token: &str) -> Option<Arc<TokenRecord>> {
        self.by_token.read().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }

    /// Tokens of a PAN (by its fingerprint).
    pub fn tokens_of(&self, pan: &str) -> Vec<Arc<TokenRecord>> {
        let fp = self.fingerprint(pan);
        let tokens = self.by_fingerprint.read().unwrap_or_else(|p| p.into_inner()).get(&fp).cloned();
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
        if self.get(new.token).is_some() {
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

    /// Moves a token through its lifecycle.
    pub fn set_status(&self, token: &str, to: TokenStatus) -> Result<Arc<TokenRecord>> {
        let cur = self.get(token).ok_or(Error::NoSuchToken)?;
        if cur.status == to {
            return Ok(cur);
        }
        if !cur.status.can_become(to) {
            return Err(Error::Lifecycle { from: cur.status.as_str(), to: to.as_str() });
        }
        self.store.vault_set_status(token, to)?;
        let rec = Arc::new(TokenRecord { status: to, ..(*cur).clone() });
        self.cache(rec.clone());
        Ok(rec)
    }

    /// Makes `version` current (it must have been added) and re-seals every PAN under it.
    /// Returns how many rows were re-sealed.
    pub fn rewrap(&self, version: u32, mut nonce: impl FnMut() -> [u8; 12]) -> Result<usize> {
        self.sealer.write().unwrap_or_else(|p| p.into_inner()).set_current(version)?;
        let all: Vec<Arc<TokenRecord>> =
            self.by_token.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
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

    /// Adds a data key version (before [`TokenVault::rewrap`] to it).
    pub fn add_key(&self, version: u32, key: &crypto::AesKey) -> Result<()> {
        Ok(self.sealer.write().unwrap_or_else(|p| p.into_inner()).add_key(version, key)?)
    }
}
