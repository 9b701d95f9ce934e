//! The embedded store of the token service: one SQLite file (beside the switch's own store) with
//! the vault's rows and the cloud tokens' current batches of limited-use keys. No row holds a
//! clear PAN or a key: the vault keeps PANs sealed and a keyed fingerprint, the batches keep ATC
//! ranges and the device's public key.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, params};

use crate::error::{Error, Result};
use crate::luk::{LukStore, StoredBatch};
use crate::vault::{TokenRecord, TokenStatus, VaultStore, domain_to_text};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vault (
    token TEXT PRIMARY KEY,
    pan_sealed BLOB NOT NULL,
    pan_fingerprint TEXT NOT NULL,
    par TEXT NOT NULL,
    expiry TEXT NOT NULL,
    status TEXT NOT NULL,
    domain TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS vault_fp ON vault(pan_fingerprint);
CREATE TABLE IF NOT EXISTS luk (
    token TEXT PRIMARY KEY,
    first_atc INTEGER NOT NULL,
    count INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    device_key BLOB NOT NULL
);
";

fn db_err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::store(what, e)
}

/// The vault and the limited-use key batches in SQLite.
pub struct SqliteVaultStore {
    conn: Mutex<Connection>,
}

impl SqliteVaultStore {
    /// Opens (creating if needed) the database file and its schema.
    pub fn open(path: &Path) -> Result<Self> {
        Self::init(Connection::open(path).map_err(db_err("open database"))?)
    }

    /// An in-memory database (tests, benchmarks).
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(db_err("open in-memory database"))?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err("set WAL mode"))?;
        // FULL: a token issued to a device, or a batch of keys handed to it, is on disk before
        // the device hears of it.
        conn.pragma_update(None, "synchronous", "FULL").map_err(db_err("set synchronous"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db_err("set busy timeout"))?;
        conn.execute_batch(SCHEMA).map_err(db_err("create schema"))?;
        Ok(SqliteVaultStore { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the connection leaves no half-done statement behind it.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl VaultStore for SqliteVaultStore {
    fn vault_put(&self, r: &TokenRecord) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO vault (token, pan_sealed, pan_fingerprint, par, expiry, status, domain, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    r.token,
                    r.pan_sealed,
                    r.pan_fingerprint,
                    r.par,
                    r.expiry,
                    r.status.as_str(),
                    domain_to_text(&r.domain),
                    r.created_ms as i64
                ],
            )
            .map_err(db_err("insert token"))?;
        Ok(())
    }

    fn vault_set_status(&self, token: &str, from: TokenStatus, to: TokenStatus) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "UPDATE vault SET status = ?1 WHERE token = ?2 AND status = ?3",
                params![to.as_str(), token, from.as_str()],
            )
            .map_err(db_err("update token status"))?;
        Ok(n == 1)
    }

    fn vault_set_sealed(&self, token: &str, sealed: &[u8]) -> Result<()> {
        self.conn()
            .execute("UPDATE vault SET pan_sealed = ?1 WHERE token = ?2", params![sealed, token])
            .map_err(db_err("re-seal token"))?;
        Ok(())
    }

    fn vault_all(&self) -> Result<Vec<TokenRecord>> {
        self.vault_query("", [])
    }

    fn vault_get(&self, token: &str) -> Result<Option<TokenRecord>> {
        Ok(self.vault_query(" WHERE token = ?1", [token])?.pop())
    }

    fn vault_of_fingerprint(&self, fingerprint: &str) -> Result<Vec<TokenRecord>> {
        self.vault_query(" WHERE pan_fingerprint = ?1", [fingerprint])
    }
}

impl SqliteVaultStore {
    /// Vault rows, selected by `filter` (a `WHERE` clause, or nothing).
    fn vault_query(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<TokenRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT token, pan_sealed, pan_fingerprint, par, expiry, status, domain, created_ms FROM vault{filter}"
            ))
            .map_err(db_err("read vault"))?;
        let rows = stmt
            .query_map(args, |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                    row.get::<_, i64>(7)?,
                ))
            })
            .map_err(db_err("read vault"))?;
        let mut out = Vec::new();
        for r in rows {
            let (token, pan_sealed, pan_fingerprint, par, expiry, status, domain, created) =
                r.map_err(db_err("read vault row"))?;
            out.push(TokenRecord::from_row(
                token,
                pan_sealed,
                pan_fingerprint,
                par,
                expiry,
                &status,
                &domain,
                created,
            )?);
        }
        Ok(out)
    }
}

impl LukStore for SqliteVaultStore {
    fn luk_put(&self, token: &str, follows: Option<u16>, b: &StoredBatch) -> Result<bool> {
        let n = match follows {
            None => self.conn().execute(
                "INSERT INTO luk (token, first_atc, count, expires_ms, device_key) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(token) DO NOTHING",
                params![token, b.first_atc, b.count, b.expires_ms as i64, b.device_key],
            ),
            Some(prev) => self.conn().execute(
                "UPDATE luk SET first_atc = ?2, count = ?3, expires_ms = ?4, device_key = ?5
                 WHERE token = ?1 AND first_atc = ?6",
                params![token, b.first_atc, b.count, b.expires_ms as i64, b.device_key, prev],
            ),
        }
        .map_err(db_err("record limited-use keys"))?;
        Ok(n == 1)
    }

    fn luk_get(&self, token: &str) -> Result<Option<StoredBatch>> {
        Ok(self.luk_query(" WHERE token = ?1", [token])?.pop().map(|(_, b)| b))
    }

    fn luk_all(&self) -> Result<Vec<(String, StoredBatch)>> {
        self.luk_query("", [])
    }
}

impl SqliteVaultStore {
    fn luk_query(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<(String, StoredBatch)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT token, first_atc, count, expires_ms, device_key FROM luk{filter}"))
            .map_err(db_err("read luk"))?;
        let rows = stmt
            .query_map(args, |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    StoredBatch {
                        first_atc: row.get(1)?,
                        count: row.get(2)?,
                        expires_ms: row.get::<_, i64>(3)?.max(0) as u64,
                        device_key: row.get(4)?,
                    },
                ))
            })
            .map_err(db_err("read luk"))?;
        rows.map(|r| r.map_err(db_err("read luk row"))).collect()
    }
}
