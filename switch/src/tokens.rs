//! The node's token service, assembled from `[token_service]`: the vault in its own SQLite file
//! beside the switch's store (`vault.db` in `node.data_dir`) — or, when `[store] url` is set, in
//! the PostgreSQL schema every node shares ([`crate::store::postgres_tokens`]), its caches kept
//! fresh by the store's change notices —, the cloud tokens' limited-use key batches beside it
//! (`luk_batch` keys a batch, each batch valid `luk_ttl_s`), the token ranges
//! with their token IMKs, the detokenize stage the pipeline calls, and — once the engine exists —
//! the provisioning service with its registered requestors and issuers. The node starts it;
//! `switch --rewrap-vault` opens only the vault.

use std::path::Path;
use std::sync::Arc;

use tsp::luk::{LukRegistry, LukStore};
use tsp::service::Environment;
use tsp::store::SqliteVaultStore;
use tsp::{Detokenizer, TokenKeys, TokenRange, TokenService, TokenVault, VaultDetokenizer, VaultStore};

use crate::config::SwitchConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::keys::TokenServiceKeys;
use crate::store::postgres_tokens::{Change, PgTokenStore};

/// The vault's file in the node's data folder.
pub const VAULT_FILE: &str = "vault.db";

fn tsp_err(e: tsp::Error) -> Error {
    let kind = match &e {
        tsp::Error::Store { .. } | tsp::Error::BadRow { .. } => ErrorKind::Store,
        tsp::Error::Seal(_) | tsp::Error::Integrity(_) => ErrorKind::Seal,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, "token_service", e.to_string()).with_source(e)
}

fn config_err(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, "config", detail)
}

/// The token service's store in `data_dir` (created when missing).
pub fn open_store(data_dir: &Path) -> Result<Arc<SqliteVaultStore>> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Error::new(ErrorKind::Store, "token_service", format!("cannot create {}: {e}", data_dir.display()))
    })?;
    Ok(Arc::new(SqliteVaultStore::open(&data_dir.join(VAULT_FILE)).map_err(tsp_err)?))
}

/// Where the token service keeps its vault and batches.
#[derive(Clone)]
pub enum TokenStore {
    /// This node's own file (one node).
    Sqlite(Arc<SqliteVaultStore>),
    /// The database every node shares (`[store] url`).
    Postgres(Arc<PgTokenStore>),
}

impl TokenStore {
    /// PostgreSQL when `[store] url` is set (connected and migrated now: blocking), else the SQLite
    /// file in `data_dir`.
    pub fn open(cfg: &SwitchConfig, data_dir: &Path) -> Result<TokenStore> {
        match cfg.store.postgres(&cfg.node.name) {
            Some(opts) => Ok(TokenStore::Postgres(Arc::new(PgTokenStore::open(&opts)?))),
            None => Ok(TokenStore::Sqlite(open_store(data_dir)?)),
        }
    }

    fn vault(&self) -> Arc<dyn VaultStore> {
        match self {
            TokenStore::Sqlite(s) => s.clone(),
            TokenStore::Postgres(s) => s.clone(),
        }
    }

    fn luk(&self) -> Arc<dyn LukStore> {
        match self {
            TokenStore::Sqlite(s) => s.clone(),
            TokenStore::Postgres(s) => s.clone(),
        }
    }
}

/// Opens the vault: every token into its cache (over a shared store, tokens as they are asked for).
pub fn open_vault(store: &TokenStore, keys: TokenServiceKeys) -> Result<TokenVault> {
    TokenVault::open(store.vault(), keys.vault_seal, keys.vault_index).map_err(tsp_err)
}

/// The token ranges of `cfg` with their token IMKs; a range overlapping a card route is refused.
pub fn ranges(cfg: &SwitchConfig) -> Result<Vec<TokenKeys>> {
    cfg.token_service
        .ranges
        .iter()
        .map(|r| {
            let cards = cfg.routes.iter().map(|c| c.prefix.as_str());
            let range = TokenRange::new(&r.prefix, r.length, cards)
                .map_err(|e| config_err(format!("token_service.range {}: {e}", r.prefix)))?;
            Ok(TokenKeys { range, imk_ac: r.imk_ac.clone() })
        })
        .collect()
}

/// The token service before the engine exists: what the pipeline needs now (the detokenizer),
/// and what the provisioning service is built from once the engine can be its gateway.
pub struct Assembled {
    vault: Arc<TokenVault>,
    luks: Arc<LukRegistry>,
    ranges: Vec<TokenKeys>,
    token_ref_key: zeroize::Zeroizing<Vec<u8>>,
    hsm: Arc<dyn crypto::hsm::Hsm>,
    cfg: crate::config::TokenServiceConfig,
    store: TokenStore,
}

/// Opens the vault and the limited-use key registry of `cfg` (in `data_dir`, or in the shared
/// database: then this node listens for the other nodes' changes). Blocking: the store connects.
pub fn assemble(
    cfg: &SwitchConfig,
    keys: TokenServiceKeys,
    hsm: Arc<dyn crypto::hsm::Hsm>,
    data_dir: &Path,
) -> Result<Assembled> {
    let ts = &cfg.token_service;
    let ranges = ranges(cfg)?;
    // Every token IMK must be in the keystore now, not at the first token transaction.
    for r in &ranges {
        hsm.key_check_value(&r.imk_ac).map_err(|e| {
            config_err(format!("token_service.range {}.imk_ac {}: {e}", r.range.prefix, r.imk_ac))
        })?;
    }
    let store = TokenStore::open(cfg, data_dir)?;
    let luks = Arc::new(
        LukRegistry::persistent(store.luk(), ts.luk_batch, ts.luk_ttl_s.saturating_mul(1000))
            .map_err(tsp_err)?,
    );
    let token_ref_key = keys.token_ref.clone();
    let vault = Arc::new(open_vault(&store, keys)?);
    if let TokenStore::Postgres(pg) = &store {
        // A token changed by another node is read again; while changes may be missed, every read
        // goes to the database (a suspended token is refused on every node at once).
        // Weak: the store's runtime runs the listener, and the vault holds the store — the node
        // dropping its vault stops the listener with the store.
        let (v, l) = (Arc::downgrade(&vault), Arc::downgrade(&luks));
        pg.listen(move |change| {
            let (Some(v), Some(l)) = (v.upgrade(), l.upgrade()) else { return };
            match change {
                Change::Token(token) => {
                    v.evict(&token);
                    l.evict(&token);
                }
                Change::Listening => {
                    v.set_live(true);
                    l.set_live(true);
                }
                Change::Lost => {
                    v.set_live(false);
                    l.set_live(false);
                }
            }
        })?;
    }
    Ok(Assembled { vault, luks, ranges, token_ref_key, hsm, cfg: ts.clone(), store })
}

impl Assembled {
    /// The detokenize stage over the vault, enforcing the cloud tokens' limited-use keys.
    pub fn detokenizer(&self) -> Arc<dyn Detokenizer> {
        Arc::new(
            VaultDetokenizer::new(self.vault.clone(), self.hsm.clone(), self.ranges.clone())
                .with_luks(self.luks.clone()),
        )
    }

    /// The provisioning service over `env` (the engine as its gateway, the node's clock and
    /// entropy), with the configured requestors and issuers; over the shared database, its OTP
    /// step-ups are kept there (any node's API completes them).
    pub fn service(self, env: Environment) -> TokenService {
        let svc = TokenService::new(
            env,
            self.vault,
            self.hsm,
            self.ranges,
            self.cfg.requestors,
            self.token_ref_key,
        )
        .with_luks(self.luks)
        .with_issuers(self.cfg.issuers);
        match self.store {
            TokenStore::Postgres(pg) => svc.with_shared_pending(pg.clone()).with_shared_answered(pg),
            TokenStore::Sqlite(_) => svc,
        }
    }
}
