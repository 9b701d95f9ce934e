//! The token service's store in PostgreSQL, for several switch nodes over one database: the vault
//! (each PAN sealed with its token as associated data, a keyed fingerprint, the status) and the
//! cloud tokens' current batches of limited-use keys, in the same schema as the switch's own
//! tables ([`super::postgres`]: same URL, `search_path`, migrations applied at open under the same
//! advisory lock, recorded in `token_migrations`).
//!
//! The `tsp` store traits are synchronous and are called from the pipeline's and the API's tasks on
//! a multi-thread runtime. Like [`super::postgres::PgStore`], this store runs its own small
//! runtime for its connections and waits for each call on the caller's thread
//! ([`super::postgres::call_on`]): that works from any thread — a runtime's worker, a blocking
//! task, a plain thread — with no deadlock (the awaited future never needs the caller's runtime)
//! and no `tokio::task::block_in_place` (which panics on a current-thread runtime). The calls that
//! wait are the rare ones: the caches in front of the store answer the hot path.
//!
//! Freshness across nodes: a trigger on both tables sends `NOTIFY paynet_tokens '<schema> <token>'`
//! in the writing transaction, so every change — a token issued, its status changed, its PAN
//! re-sealed, its batch replaced, by any node or by hand — is announced once committed.
//! [`PgTokenStore::listen`] holds one dedicated connection listening on that channel and passes
//! each of its schema's tokens on ([`Change::Token`]); when that connection is lost (or stops
//! answering its health check) it says so ([`Change::Lost`]: the caches must not be trusted, a
//! change may be missed), reconnects with a growing pause, and says [`Change::Listening`] once it
//! listens again. Payloads carry the token, never a PAN.
//!
//! Provisionings waiting for the cardholder's OTP are kept here too (`token_pending`, their card
//! sealed: see [`tsp::pending`]), so that any node's provisioning API completes them, and so are
//! the answers given to request ids (`token_answered`, sealed: see [`tsp::answered`]), so that a
//! requestor retrying on another node gets the same answer.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use tsp::answered::{AnsweredStore, StoredAnswer};
use tsp::luk::{LukStore, StoredBatch};
use tsp::pending::{PendingStore, StoredPending};
use tsp::vault::{TokenRecord, TokenStatus, VaultStore, domain_to_text};

use super::postgres::{PgOptions, call_on, connect_config, migrate, pool, runtime};
use crate::error::{Error, ErrorKind, Result};

/// The channel every node listens on (one per database; payloads name their schema).
pub const CHANNEL: &str = "paynet_tokens";

/// The token service's tables, one step per migration, recorded in `token_migrations`.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
CREATE TABLE token_vault (
    token TEXT PRIMARY KEY,
    pan_sealed BYTEA NOT NULL,
    pan_fingerprint TEXT NOT NULL,
    par TEXT NOT NULL,
    expiry TEXT NOT NULL,
    status TEXT NOT NULL,
    domain TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX token_vault_fp ON token_vault (pan_fingerprint);
CREATE TABLE token_luk (
    token TEXT PRIMARY KEY,
    first_atc INTEGER NOT NULL,
    count INTEGER NOT NULL,
    expires_ms BIGINT NOT NULL,
    device_key BYTEA NOT NULL
);
CREATE FUNCTION token_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('paynet_tokens', TG_TABLE_SCHEMA || ' ' || OLD.token);
    ELSE
        PERFORM pg_notify('paynet_tokens', TG_TABLE_SCHEMA || ' ' || NEW.token);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER token_vault_changed AFTER INSERT OR UPDATE OR DELETE ON token_vault
    FOR EACH ROW EXECUTE FUNCTION token_changed();
CREATE TRIGGER token_luk_changed AFTER INSERT OR UPDATE OR DELETE ON token_luk
    FOR EACH ROW EXECUTE FUNCTION token_changed();
",
    ),
    (
        2,
        "
CREATE TABLE token_pending (
    id TEXT PRIMARY KEY,
    requestor TEXT NOT NULL,
    request_id TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    device_key BYTEA NOT NULL,
    entry_modes TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX token_pending_age ON token_pending (created_ms);
",
    ),
    (
        3,
        "
CREATE TABLE token_answered (
    requestor TEXT NOT NULL,
    request_id TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (requestor, request_id)
);
CREATE INDEX token_answered_age ON token_answered (created_ms);
",
    ),
];

/// What the listener reports (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The listening connection is up: notices arrive from now on.
    Listening,
    /// A token's vault row or batch changed.
    Token(String),
    /// The listening connection is lost: changes may be missed until [`Change::Listening`].
    Lost,
}

/// How often the listening connection is checked, and how long the check may take.
const HEALTH_EVERY: Duration = Duration::from_secs(5);
/// The longest pause between two attempts to listen again.
const MAX_PAUSE: Duration = Duration::from_secs(5);

fn db_err(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| Error::new(ErrorKind::Store, "store.postgres", what).with_source(e).retryable()
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    Error::new(ErrorKind::Store, "store.postgres", "no database connection").with_source(e).retryable()
}

fn tsp_err(what: &'static str) -> impl FnOnce(Error) -> tsp::Error {
    move |e| tsp::Error::store(what, e)
}

/// A vault row as read: token, sealed PAN, fingerprint, PAR, expiry, status, domain, created.
type VaultRow = (String, Vec<u8>, String, String, String, String, String, i64);

const VAULT_COLUMNS: &str = "token, pan_sealed, pan_fingerprint, par, expiry, status, domain, created_ms";

pub struct PgTokenStore {
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
    config: tokio_postgres::Config,
    schema: String,
}

impl PgTokenStore {
    /// Connects, creates the schema when missing and applies the token migrations not yet
    /// applied. Blocking: call it off a runtime's threads at start-up.
    pub fn open(opts: &PgOptions) -> Result<PgTokenStore> {
        let config = connect_config(opts)?;
        let runtime = runtime("tokens-postgres", 1)?;
        // The hot path reads the caches; the pool serves their misses and the API's writes.
        let pool = pool(&runtime, config.clone(), opts.pool_size.clamp(1, 4))?;
        let store = PgTokenStore { pool, runtime: Some(runtime), config, schema: opts.schema.clone() };
        let schema = opts.schema.clone();
        store
            .call(move |pool| async move { migrate(&pool, &schema, "token_migrations", MIGRATIONS).await })?;
        Ok(store)
    }

    fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Pool) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        call_on(self.runtime.as_ref(), &self.pool, f)
    }

    /// Listens for changes on a dedicated connection, for as long as the store is open, and
    /// passes them to `on` (on the store's runtime: `on` must not block).
    pub fn listen(&self, on: impl Fn(Change) + Send + Sync + 'static) -> Result<()> {
        let Some(rt) = &self.runtime else {
            return Err(Error::new(ErrorKind::Internal, "store.postgres", "the store is closed"));
        };
        // Named apart from the pool's connections (`paynet-<node>/listener`) for the operator.
        let mut config = self.config.clone();
        let name = format!("{}/listener", config.get_application_name().unwrap_or("paynet"));
        config.application_name(&name);
        rt.spawn(listen_loop(config, self.schema.clone(), Arc::new(on)));
        Ok(())
    }

    fn vault_rows(&self, filter: &'static str, arg: Option<String>) -> tsp::Result<Vec<TokenRecord>> {
        let rows: Vec<VaultRow> = self
            .call(move |pool| async move {
                let c = pool.get().await.map_err(pool_err)?;
                let sql = format!("SELECT {VAULT_COLUMNS} FROM token_vault{filter}");
                let rows = match &arg {
                    Some(a) => c.query(&sql, &[a]).await,
                    None => c.query(&sql, &[]).await,
                }
                .map_err(db_err("read vault"))?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get(0)?,
                            r.try_get(1)?,
                            r.try_get(2)?,
                            r.try_get(3)?,
                            r.try_get(4)?,
                            r.try_get(5)?,
                            r.try_get(6)?,
                            r.try_get(7)?,
                        ))
                    })
                    .collect::<std::result::Result<Vec<VaultRow>, tokio_postgres::Error>>()
                    .map_err(db_err("read vault row"))
            })
            .map_err(tsp_err("read vault"))?;
        rows.into_iter()
            .map(|(token, sealed, fp, par, expiry, status, domain, created)| {
                TokenRecord::from_row(token, sealed, fp, par, expiry, &status, &domain, created)
            })
            .collect()
    }

    fn luk_rows(&self, filter: &'static str, arg: Option<String>) -> tsp::Result<Vec<(String, StoredBatch)>> {
        let rows: Vec<(String, i32, i32, i64, Vec<u8>)> = self
            .call(move |pool| async move {
                let c = pool.get().await.map_err(pool_err)?;
                let sql =
                    format!("SELECT token, first_atc, count, expires_ms, device_key FROM token_luk{filter}");
                let rows = match &arg {
                    Some(a) => c.query(&sql, &[a]).await,
                    None => c.query(&sql, &[]).await,
                }
                .map_err(db_err("read limited-use keys"))?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)))
                    .collect::<std::result::Result<Vec<_>, tokio_postgres::Error>>()
                    .map_err(db_err("read limited-use keys row"))
            })
            .map_err(tsp_err("read limited-use keys"))?;
        rows.into_iter()
            .map(|(token, first, count, expires, device_key)| {
                let bad = |field| tsp::Error::BadRow { table: "token_luk", field };
                Ok((
                    token,
                    StoredBatch {
                        first_atc: u16::try_from(first).map_err(|_| bad("first_atc"))?,
                        count: u16::try_from(count).map_err(|_| bad("count"))?,
                        expires_ms: expires.max(0) as u64,
                        device_key,
                    },
                ))
            })
            .collect()
    }
}

impl Drop for PgTokenStore {
    fn drop(&mut self) {
        // May be dropped on a runtime's thread, where waiting for the store's own is not allowed.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl VaultStore for PgTokenStore {
    fn vault_put(&self, r: &TokenRecord) -> tsp::Result<()> {
        let (token, sealed, fp, par, expiry) = (
            r.token.clone(),
            r.pan_sealed.clone(),
            r.pan_fingerprint.clone(),
            r.par.clone(),
            r.expiry.clone(),
        );
        let (status, domain, created) = (r.status.as_str(), domain_to_text(&r.domain), r.created_ms as i64);
        let inserted = self
            .call(move |pool| async move {
                let c = pool.get().await.map_err(pool_err)?;
                c.execute(
                    &format!(
                        "INSERT INTO token_vault ({VAULT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (token) DO NOTHING"
                    ),
                    &[&token, &sealed, &fp, &par, &expiry, &status, &domain, &created],
                )
                .await
                .map_err(db_err("insert token"))
            })
            .map_err(tsp_err("insert token"))?;
        if inserted == 1 { Ok(()) } else { Err(tsp::Error::Exists) }
    }

    fn vault_set_status(&self, token: &str, from: TokenStatus, to: TokenStatus) -> tsp::Result<bool> {
        let token = token.to_string();
        let n = self
            .call(move |pool| async move {
                let c = pool.get().await.map_err(pool_err)?;
                c.execute(
                    "UPDATE token_vault SET status = $1 WHERE token = $2 AND status = $3",
                    &[&to.as_str(), &token, &from.as_str()],
                )
                .await
                .map_err(db_err("update token status"))
            })
            .map_err(tsp_err("update token status"))?;
        Ok(n == 1)
    }

    fn vault_set_sealed(&self, token: &str, sealed: &[u8]) -> tsp::Result<()> {
        let (token, sealed) = (token.to_string(), sealed.to_vec());
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute("UPDATE token_vault SET pan_sealed = $1 WHERE token = $2", &[&sealed, &token])
                .await
                .map_err(db_err("re-seal token"))
        })
        .map_err(tsp_err("re-seal token"))?;
        Ok(())
    }

    fn vault_all(&self) -> tsp::Result<Vec<TokenRecord>> {
        self.vault_rows("", None)
    }

    fn vault_get(&self, token: &str) -> tsp::Result<Option<TokenRecord>> {
        Ok(self.vault_rows(" WHERE token = $1", Some(token.to_string()))?.pop())
    }

    fn vault_of_fingerprint(&self, fingerprint: &str) -> tsp::Result<Vec<TokenRecord>> {
        self.vault_rows(" WHERE pan_fingerprint = $1", Some(fingerprint.to_string()))
    }

    fn shared(&self) -> bool {
        true
    }
}

impl LukStore for PgTokenStore {
    fn luk_put(&self, token: &str, follows: Option<u16>, b: &StoredBatch) -> tsp::Result<bool> {
        let token = token.to_string();
        let (first, count, expires, device) =
            (i32::from(b.first_atc), i32::from(b.count), b.expires_ms as i64, b.device_key.clone());
        let n = self
            .call(move |pool| async move {
                let c = pool.get().await.map_err(pool_err)?;
                match follows {
                    None => {
                        c.execute(
                            "INSERT INTO token_luk (token, first_atc, count, expires_ms, device_key) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token) DO NOTHING",
                            &[&token, &first, &count, &expires, &device],
                        )
                        .await
                    }
                    Some(prev) => {
                        c.execute(
                            "UPDATE token_luk SET first_atc = $2, count = $3, expires_ms = $4, device_key = $5 \
                             WHERE token = $1 AND first_atc = $6",
                            &[&token, &first, &count, &expires, &device, &i32::from(prev)],
                        )
                        .await
                    }
                }
                .map_err(db_err("record limited-use keys"))
            })
            .map_err(tsp_err("record limited-use keys"))?;
        Ok(n == 1)
    }

    fn luk_get(&self, token: &str) -> tsp::Result<Option<StoredBatch>> {
        Ok(self.luk_rows(" WHERE token = $1", Some(token.to_string()))?.pop().map(|(_, b)| b))
    }

    fn luk_all(&self) -> tsp::Result<Vec<(String, StoredBatch)>> {
        self.luk_rows("", None)
    }

    fn shared(&self) -> bool {
        true
    }
}

/// Listens, and listens again after every loss, until the store's runtime stops.
async fn listen_loop(config: tokio_postgres::Config, schema: String, on: Arc<dyn Fn(Change) + Send + Sync>) {
    let mut pause = Duration::from_millis(100);
    loop {
        match listen_once(&config, &schema, on.as_ref()).await {
            Ok(()) => {
                // It listened before it was lost: the next attempt comes soon.
                pause = Duration::from_millis(100);
                tracing::warn!("token change listener lost its connection; listening again");
            }
            Err(e) => tracing::warn!(error = %e, "token change listener cannot listen"),
        }
        on(Change::Lost);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// One listening connection, until it is lost: `Ok` once it had listened, `Err` when it never
/// could.
async fn listen_once(
    config: &tokio_postgres::Config,
    schema: &str,
    on: &(dyn Fn(Change) + Send + Sync),
) -> Result<()> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(db_err("connect the listener"))?;
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel::<String>();
    // The connection delivers notices only while it is polled.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m
                && tx.send(n.payload().to_string()).is_err()
            {
                return;
            }
        }
    });
    let listened = client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(db_err("listen"));
    if let Err(e) = listened {
        driver.abort();
        return Err(e);
    }
    on(Change::Listening);
    let mut health = tokio::time::interval(HEALTH_EVERY);
    health.tick().await;
    loop {
        tokio::select! {
            notice = notices.recv() => match notice {
                Some(payload) => {
                    if let Some((s, token)) = payload.split_once(' ')
                        && s == schema
                    {
                        on(Change::Token(token.to_string()));
                    }
                }
                None => break,
            },
            _ = health.tick() => {
                let alive = tokio::time::timeout(HEALTH_EVERY, client.simple_query("SELECT 1")).await;
                if !matches!(alive, Ok(Ok(_))) {
                    break;
                }
            }
        }
    }
    driver.abort();
    Ok(())
}

/// Forgets the step-ups created before `oldest` and the oldest beyond `capacity`.
async fn trim_pending(c: &deadpool_postgres::Object, oldest: i64, capacity: i64) -> Result<()> {
    c.execute("DELETE FROM token_pending WHERE created_ms < $1", &[&oldest])
        .await
        .map_err(db_err("forget old step-ups"))?;
    c.execute(
        "DELETE FROM token_pending WHERE id IN \
         (SELECT id FROM token_pending ORDER BY created_ms DESC, id OFFSET $1)",
        &[&capacity],
    )
    .await
    .map_err(db_err("forget step-ups over the bound"))?;
    Ok(())
}

impl PendingStore for PgTokenStore {
    fn pending_put(&self, p: &StoredPending, oldest_ms: u64, capacity: usize) -> tsp::Result<()> {
        let p = p.clone();
        let (oldest, room) = (oldest_ms as i64, capacity.saturating_sub(1) as i64);
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            // Room for this one within the bound.
            trim_pending(&c, oldest, room).await?;
            c.execute(
                "INSERT INTO token_pending (id, requestor, request_id, sealed, device_key, entry_modes, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET requestor = $2, \
                 request_id = $3, sealed = $4, device_key = $5, entry_modes = $6, created_ms = $7",
                &[&p.id, &p.requestor, &p.request_id, &p.sealed, &p.device_key, &p.entry_modes, &(p.created_ms as i64)],
            )
            .await
            .map_err(db_err("record step-up"))?;
            Ok(())
        })
        .map_err(tsp_err("record step-up"))
    }

    fn pending_get(&self, id: &str, oldest_ms: u64) -> tsp::Result<Option<StoredPending>> {
        let (id, oldest) = (id.to_string(), oldest_ms as i64);
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt(
                    "SELECT id, requestor, request_id, sealed, device_key, entry_modes, created_ms \
                     FROM token_pending WHERE id = $1 AND created_ms >= $2",
                    &[&id, &oldest],
                )
                .await
                .map_err(db_err("read step-up"))?;
            row.map(|r| {
                Ok(StoredPending {
                    id: r.try_get(0)?,
                    requestor: r.try_get(1)?,
                    request_id: r.try_get(2)?,
                    sealed: r.try_get(3)?,
                    device_key: r.try_get(4)?,
                    entry_modes: r.try_get(5)?,
                    created_ms: r.try_get::<_, i64>(6)?.max(0) as u64,
                })
            })
            .transpose()
            .map_err(db_err("read step-up row"))
        })
        .map_err(tsp_err("read step-up"))
    }

    fn pending_remove(&self, id: &str) -> tsp::Result<()> {
        let id = id.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute("DELETE FROM token_pending WHERE id = $1", &[&id])
                .await
                .map_err(db_err("forget step-up"))?;
            Ok(())
        })
        .map_err(tsp_err("forget step-up"))
    }

    fn pending_count(&self, oldest_ms: u64) -> tsp::Result<usize> {
        let oldest = oldest_ms as i64;
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let n: i64 = c
                .query_one("SELECT count(*) FROM token_pending WHERE created_ms >= $1", &[&oldest])
                .await
                .map_err(db_err("count step-ups"))?
                .get(0);
            Ok(n.max(0) as usize)
        })
        .map_err(tsp_err("count step-ups"))
    }

    fn pending_trim(&self, oldest_ms: u64, capacity: usize) -> tsp::Result<()> {
        let (oldest, capacity) = (oldest_ms as i64, capacity as i64);
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            trim_pending(&c, oldest, capacity).await
        })
        .map_err(tsp_err("trim step-ups"))
    }
}

/// Forgets the answers created before `oldest` and the oldest beyond `capacity`.
async fn trim_answered(c: &deadpool_postgres::Object, oldest: i64, capacity: i64) -> Result<()> {
    c.execute("DELETE FROM token_answered WHERE created_ms < $1", &[&oldest])
        .await
        .map_err(db_err("forget old answers"))?;
    c.execute(
        "DELETE FROM token_answered WHERE (requestor, request_id) IN \
         (SELECT requestor, request_id FROM token_answered ORDER BY created_ms DESC, requestor, request_id \
         OFFSET $1)",
        &[&capacity],
    )
    .await
    .map_err(db_err("forget answers over the bound"))?;
    Ok(())
}

impl AnsweredStore for PgTokenStore {
    fn answered_put(&self, a: &StoredAnswer, oldest_ms: u64, capacity: usize) -> tsp::Result<()> {
        let a = a.clone();
        let (oldest, room) = (oldest_ms as i64, capacity.saturating_sub(1) as i64);
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            // Room for this one within the bound.
            trim_answered(&c, oldest, room).await?;
            // The latest answer to a request replaces the earlier one (a step-up's answer, once
            // the OTP completed it), as in a node's memory.
            c.execute(
                "INSERT INTO token_answered (requestor, request_id, sealed, created_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (requestor, request_id) DO UPDATE SET \
                 sealed = EXCLUDED.sealed, created_ms = EXCLUDED.created_ms",
                &[&a.requestor, &a.request_id, &a.sealed, &(a.created_ms as i64)],
            )
            .await
            .map_err(db_err("record answer"))?;
            Ok(())
        })
        .map_err(tsp_err("record answer"))
    }

    fn answered_get(
        &self,
        requestor: &str,
        request_id: &str,
        oldest_ms: u64,
    ) -> tsp::Result<Option<StoredAnswer>> {
        let (requestor, request_id, oldest) =
            (requestor.to_string(), request_id.to_string(), oldest_ms as i64);
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt(
                    "SELECT requestor, request_id, sealed, created_ms FROM token_answered \
                     WHERE requestor = $1 AND request_id = $2 AND created_ms >= $3",
                    &[&requestor, &request_id, &oldest],
                )
                .await
                .map_err(db_err("read answer"))?;
            row.map(|r| {
                Ok(StoredAnswer {
                    requestor: r.try_get(0)?,
                    request_id: r.try_get(1)?,
                    sealed: r.try_get(2)?,
                    created_ms: r.try_get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .transpose()
            .map_err(db_err("read answer row"))
        })
        .map_err(tsp_err("read answer"))
    }

    fn answered_count(&self, oldest_ms: u64) -> tsp::Result<usize> {
        let oldest = oldest_ms as i64;
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let n: i64 = c
                .query_one("SELECT count(*) FROM token_answered WHERE created_ms >= $1", &[&oldest])
                .await
                .map_err(db_err("count answers"))?
                .get(0);
            Ok(n.max(0) as usize)
        })
        .map_err(tsp_err("count answers"))
    }

    fn answered_trim(&self, oldest_ms: u64, capacity: usize) -> tsp::Result<()> {
        let (oldest, capacity) = (oldest_ms as i64, capacity as i64);
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            trim_answered(&c, oldest, capacity).await
        })
        .map_err(tsp_err("trim answers"))
    }
}
