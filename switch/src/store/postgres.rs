//! The shared store: PostgreSQL (tokio-postgres over a deadpool pool), for several switch nodes
//! over one database.
//!
//! The [`Store`] trait is synchronous (its callers are the state writer thread and blocking
//! tasks), so the store runs its own small runtime for the database connections and waits for
//! each call on the caller's thread; it may be called from anywhere, a runtime's thread included.
//!
//! What the nodes share, and how the database keeps it right under concurrency:
//! - the journal: one multi-row insert (`UNNEST` of arrays) per group commit, in the same
//!   transaction as the decision state it rests on;
//! - the store-and-forward queue: due entries are leased by one node at a time (`FOR UPDATE SKIP
//!   LOCKED`, lease expiry [`DEFAULT_LEASE_MS`] by default), so a dead node's entries are taken
//!   over by the others once its lease runs out, and never by two nodes at once;
//! - ATC claims: a card's ATC is accepted once across every node by one statement whose returned
//!   rows say which claims won (see [`crate::records::AtcClaim`]). It first raises the card's
//!   highest ATC in its own row (`atc_high`), which orders the claims of a card across nodes (the
//!   "too old" check reads the highest as the last commit left it, not as a snapshot had it), and
//!   deletes the claims that fell below the window (bounded per commit), which can never win;
//! - transmissions: the first node to claim one (acquirer, terminal, MTI, STAN, DE 7) forwards it,
//!   and its answer is recorded before it leaves, so a retransmission reaching another node gets
//!   the same answer;
//! - originals, upserted by key without ever losing an answer or a settled amount another node
//!   recorded;
//! - stand-in totals, added to by one conditional upsert that refuses to pass the limit, so
//!   every node's stand-in approvals of a card count against it.
//!
//! Migrations are embedded ([`MIGRATIONS`]) and applied at open, under an advisory lock so that
//! nodes starting together apply them once. Every table lives in the configured schema.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{Direction, JournalRow, NewSafEntry, SafEntry, SafKind, Store};
use crate::error::{Error, ErrorKind, Result};
use crate::records::{CommitOutcome, OriginalRecord, StandInTotal, StateWrites};

/// A SAF entry leased by a node stays its own this long (then another node may take it).
pub const DEFAULT_LEASE_MS: u64 = 30_000;

/// The schema, one step per migration, applied in order and recorded in `schema_migrations`.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
CREATE TABLE journal (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    direction TEXT NOT NULL,
    mti TEXT NOT NULL,
    stan TEXT, rrn TEXT, terminal_id TEXT,
    pan_masked TEXT, pan_fingerprint TEXT,
    amount_minor BIGINT, currency TEXT,
    response_code TEXT, route TEXT, latency_us BIGINT,
    message_masked TEXT NOT NULL
);
CREATE INDEX journal_card ON journal (pan_fingerprint, seq) WHERE pan_fingerprint IS NOT NULL;
CREATE INDEX journal_terminal ON journal (terminal_id, stan) WHERE terminal_id IS NOT NULL;
CREATE TABLE saf (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    link TEXT NOT NULL,
    original_key TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    leased_by TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    UNIQUE (kind, original_key)
);
CREATE INDEX saf_due ON saf (link, next_attempt_ms);
CREATE TABLE saf_quarantine (
    id BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    link TEXT NOT NULL,
    original_key TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    attempts INTEGER NOT NULL,
    created_ms BIGINT NOT NULL,
    quarantined_ms BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE atc_window (
    card TEXT PRIMARY KEY,
    win BYTEA NOT NULL
);
CREATE TABLE atc_claim (
    card TEXT NOT NULL,
    atc INTEGER NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (card, atc)
);
CREATE TABLE standin_total (
    issuer TEXT NOT NULL,
    card TEXT NOT NULL,
    total_minor BIGINT NOT NULL,
    PRIMARY KEY (issuer, card)
);
CREATE TABLE original (
    key TEXT PRIMARY KEY,
    card TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    response_code TEXT,
    issuer TEXT NOT NULL,
    settled_minor BIGINT NOT NULL,
    at_ms BIGINT NOT NULL
);
",
    ),
    (
        2,
        "
CREATE TABLE transmission (
    key TEXT PRIMARY KEY,
    content TEXT NOT NULL,
    answer BYTEA,
    at_ms BIGINT NOT NULL
);
CREATE INDEX transmission_age ON transmission (at_ms);
",
    ),
    (
        3,
        // Stand-in totals are deleted on a reset and when their period is over: the zeros earlier
        // resets left go, and the totals kept start their period now.
        "
DELETE FROM standin_total WHERE total_minor = 0;
ALTER TABLE standin_total ADD COLUMN since_ms BIGINT;
UPDATE standin_total SET since_ms = (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT;
ALTER TABLE standin_total ALTER COLUMN since_ms SET NOT NULL;
CREATE INDEX standin_total_age ON standin_total (since_ms);
",
    ),
    (
        4,
        // Each card's highest claimed ATC, one row that every claim of the card updates (and so
        // waits for): the claims of a card are decided one transaction after another.
        "
CREATE TABLE atc_high (
    card TEXT PRIMARY KEY,
    highest INTEGER NOT NULL
);
INSERT INTO atc_high (card, highest) SELECT card, max(atc) FROM atc_claim GROUP BY card;
",
    ),
    (
        5,
        // A transmission gets its answer moments after it was claimed, and a card's highest ATC
        // (several nodes) is raised by each of its claims. With full pages the new version of
        // such a row went to another page and into every index, and the dead one stayed until
        // autovacuum came: pages half filled keep the new version beside the old one (a
        // heap-only update, no index entry) and the next visit of the page reclaims the old. At
        // 3,000/s for 10 s (`cargo bench --bench switch_load -- --only switch --rate 3000
        // --database-url …`): 90 % of the transmissions' updates heap-only against 30 %, and
        // 4,035 dead rows left in the table against 20,078. The originals' updates were
        // heap-only already (90 %): their pages stay full. Autovacuum is asked to come after 2 %
        // of these tables is dead, not 20 %.
        "
ALTER TABLE transmission SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE atc_high SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE original SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE atc_claim SET (autovacuum_vacuum_scale_factor = 0.02);
",
    ),
];

/// Claims below their card's window deleted by one commit at most (the rest by later commits of
/// the card): a commit's own cost stays bounded, even for a card with a long history.
pub const PRUNE_CLAIMS_PER_COMMIT: i64 = 1024;

/// Where and how to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/database` (libpq URL or key=value form).
    pub url: String,
    /// The schema every table lives in (created when missing).
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a leased SAF entry stays this node's.
    pub lease_ms: u64,
    /// This node's name, recorded on the SAF entries it leases.
    pub node: String,
}

impl PgOptions {
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            schema: schema.into(),
            pool_size: 8,
            lease_ms: DEFAULT_LEASE_MS,
            node: "switch-1".into(),
        }
    }
}

/// Whether `s` may name a schema: a plain lower-case SQL identifier (it is spliced into
/// `search_path` and `CREATE SCHEMA`, so nothing else is taken).
pub fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

fn db_err(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| Error::new(ErrorKind::Store, "store.postgres", what).with_source(e).retryable()
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    Error::new(ErrorKind::Store, "store.postgres", "no database connection").with_source(e).retryable()
}

pub struct PgStore {
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
    lease_ms: u64,
    /// Who leases SAF entries: this store instance. Its entries are read by one SAF worker per
    /// link, which may take its own leased entries again at once (after a failed delivery cut a
    /// batch short); other stores wait for the lease to end.
    node: String,
    /// Commits so far: every [`PRUNE_EVERY`]th also forgets transmissions older than
    /// [`TRANSMISSION_TTL_MS`].
    commits: std::sync::atomic::AtomicU64,
}

/// How long a claimed transmission (and its answer) is kept for retransmissions: as long as a
/// node's own duplicate cache keeps one by default.
pub const TRANSMISSION_TTL_MS: u64 = 10 * 60 * 1000;

/// Commits between two prunes of the transmissions.
const PRUNE_EVERY: u64 = 1024;

impl PgStore {
    /// Connects, creates the schema when missing and applies the migrations not yet applied.
    pub fn open(opts: &PgOptions) -> Result<PgStore> {
        let cfg = connect_config(opts)?;
        let runtime = runtime("store-postgres", 2)?;
        let pool = pool(&runtime, cfg, opts.pool_size)?;
        // The lease owner is this store (this process), not the node's name alone: a node
        // restarted under the same name must not take the dead process's leases before they end.
        static OPENED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let owner = format!(
            "{}/{}/{}",
            opts.node,
            std::process::id(),
            OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let store = PgStore {
            pool,
            runtime: Some(runtime),
            lease_ms: opts.lease_ms,
            node: owner,
            commits: std::sync::atomic::AtomicU64::new(0),
        };
        let schema = opts.schema.clone();
        store.call(
            move |pool| async move { migrate(&pool, &schema, "schema_migrations", MIGRATIONS).await },
        )?;
        Ok(store)
    }

    /// Removes the schema of `opts` with every table in it (tests, and an operator retiring a
    /// network's state).
    pub fn drop_schema(opts: &PgOptions) -> Result<()> {
        let store = PgStore::open(opts)?;
        let schema = opts.schema.clone();
        store.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
                .map_err(db_err("drop schema"))
        })
    }

    /// Forgets the transmissions claimed before `before_ms` (their retransmissions are over);
    /// returns how many.
    pub fn prune_transmissions(&self, before_ms: u64) -> Result<u64> {
        let before = before_ms as i64;
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute("DELETE FROM transmission WHERE at_ms < $1", &[&before])
                .await
                .map_err(db_err("prune transmissions"))
        })
    }

    /// A setting (`current_setting`) as each connection of the pool has it, every connection
    /// held at once so that each is asked (operations: `synchronous_commit` must be `on`).
    pub fn connection_setting(&self, name: &str) -> Result<Vec<String>> {
        let name = name.to_string();
        let size = self.pool.status().max_size;
        self.call(move |pool| async move {
            let mut held = Vec::with_capacity(size);
            for _ in 0..size {
                held.push(pool.get().await.map_err(pool_err)?);
            }
            let mut out = Vec::with_capacity(size);
            for c in &held {
                let row = c
                    .query_one("SELECT current_setting($1)", &[&name])
                    .await
                    .map_err(db_err("read a setting"))?;
                out.push(row.get(0));
            }
            Ok(out)
        })
    }

    /// Runs `f` on the store's runtime and waits for it on this thread.
    fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        call_on(self.runtime.as_ref(), &self.pool, f)
    }

    fn journal_query(
        &self,
        sql: &'static str,
        fp: Option<String>,
        a: i64,
        b: i64,
    ) -> Result<Vec<JournalRow>> {
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let st = c.prepare_cached(sql).await.map_err(db_err("prepare journal read"))?;
            let rows = match &fp {
                Some(fp) => c.query(&st, &[fp, &a]).await,
                None => c.query(&st, &[&a, &b]).await,
            }
            .map_err(db_err("read journal"))?;
            rows.iter().map(journal_row).collect()
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // May be dropped on a runtime's thread, where waiting for the store's own is not allowed.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The connection settings of `opts`: its URL, every table in its schema (`search_path`), the
/// node's name as the application name.
pub(crate) fn connect_config(opts: &PgOptions) -> Result<tokio_postgres::Config> {
    if !valid_schema(&opts.schema) {
        return Err(Error::new(
            ErrorKind::Config,
            "store.postgres",
            "schema: a lower-case identifier (letters, digits, _) of at most 63 characters",
        ));
    }
    // The URL may hold a password: it is never part of an error.
    let mut cfg = tokio_postgres::Config::from_str(&opts.url).map_err(|_| {
        Error::new(ErrorKind::Config, "store.postgres", "url: not a PostgreSQL connection string")
    })?;
    // Every connection commits synchronously, whatever the server's, the role's or the URL's
    // default (the URL's own options are kept, these come after and win): a commit acknowledges
    // money (journal rows of answers, decision state, SAF entries, tokens) only once it is on the
    // database's disk.
    let given = cfg.get_options().map(|o| format!("{o} ")).unwrap_or_default();
    cfg.options(format!("{given}-c search_path={} -c synchronous_commit=on", opts.schema));
    cfg.application_name(format!("paynet-{}", opts.node));
    cfg.connect_timeout(Duration::from_secs(5));
    Ok(cfg)
}

/// A store's own runtime for its database connections (see the module's documentation).
pub(crate) fn runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| {
            Error::new(ErrorKind::Internal, "store.postgres", format!("cannot start its runtime: {e}"))
        })
}

/// A pool of `size` connections on `runtime`.
pub(crate) fn pool(
    runtime: &tokio::runtime::Runtime,
    cfg: tokio_postgres::Config,
    size: usize,
) -> Result<Pool> {
    let _guard = runtime.enter();
    let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(mgr)
        .max_size(size.max(1))
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, "store.postgres", format!("cannot build the pool: {e}")))
}

/// Runs `f` on `runtime` and waits for it on this thread. The caller may be anywhere, a thread
/// of another runtime included: the future never needs the caller's runtime, so the wait cannot
/// deadlock, and no `block_in_place` is needed (which a current-thread runtime refuses).
pub(crate) fn call_on<T, F, Fut>(runtime: Option<&tokio::runtime::Runtime>, pool: &Pool, f: F) -> Result<T>
where
    F: FnOnce(Pool) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let Some(rt) = runtime else {
        return Err(Error::new(ErrorKind::Internal, "store.postgres", "the store is closed"));
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let fut = f(pool.clone());
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| Error::new(ErrorKind::Internal, "store.postgres", "the call was dropped"))?
}

/// Applies the `migrations` not yet recorded in the table `ledger` of `schema` (created when
/// missing), under an advisory lock: nodes starting together apply them once.
pub(crate) async fn migrate(
    pool: &Pool,
    schema: &str,
    ledger: &str,
    migrations: &[(i32, &str)],
) -> Result<()> {
    let mut c = pool.get().await.map_err(pool_err)?;
    let tx = c.transaction().await.map_err(db_err("begin migrations"))?;
    // One node migrates at a time; the others find the work done.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("paynet-migrate-{schema}")])
        .await
        .map_err(db_err("lock for migrations"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; \
         CREATE TABLE IF NOT EXISTS {schema}.{ledger} (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());"
    ))
    .await
    .map_err(db_err("create schema"))?;
    let done: Vec<i32> = tx
        .query(&format!("SELECT version FROM {ledger}"), &[])
        .await
        .map_err(db_err("read migrations"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in migrations {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(db_err("apply migration"))?;
        tx.execute(&format!("INSERT INTO {ledger} (version) VALUES ($1)"), &[version])
            .await
            .map_err(db_err("record migration"))?;
    }
    tx.commit().await.map_err(db_err("commit migrations"))
}

fn direction_from(s: &str) -> Direction {
    match s {
        "acq-in" => Direction::AcquirerIn,
        "acq-out" => Direction::AcquirerOut,
        "acq" => Direction::AcquirerExchange,
        "iss-out" => Direction::IssuerOut,
        _ => Direction::IssuerIn,
    }
}

fn journal_row(r: &tokio_postgres::Row) -> Result<JournalRow> {
    let get = |e: tokio_postgres::Error| db_err("read journal row")(e);
    Ok(JournalRow {
        at_ms: r.try_get::<_, i64>(0).map_err(get)? as u64,
        direction: direction_from(r.try_get::<_, &str>(1).map_err(get)?),
        mti: r.try_get(2).map_err(get)?,
        stan: r.try_get(3).map_err(get)?,
        rrn: r.try_get(4).map_err(get)?,
        terminal_id: r.try_get(5).map_err(get)?,
        pan_masked: r.try_get(6).map_err(get)?,
        pan_fingerprint: r.try_get(7).map_err(get)?,
        amount_minor: r.try_get::<_, Option<i64>>(8).map_err(get)?.map(|a| a as u64),
        currency: r.try_get(9).map_err(get)?,
        response_code: r.try_get(10).map_err(get)?,
        route: r.try_get(11).map_err(get)?,
        latency_us: r.try_get::<_, Option<i64>>(12).map_err(get)?.map(|a| a as u64),
        message_masked: r.try_get(13).map_err(get)?,
        message_packed: None,
    })
}

/// The journal rows as one multi-row insert: one array per column, unnested.
async fn insert_journal(tx: &deadpool_postgres::Transaction<'_>, rows: &[JournalRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let at: Vec<i64> = rows.iter().map(|r| r.at_ms as i64).collect();
    let dir: Vec<&str> = rows.iter().map(|r| r.direction.as_str()).collect();
    let mti: Vec<&str> = rows.iter().map(|r| r.mti.as_str()).collect();
    let stan: Vec<Option<&str>> = rows.iter().map(|r| r.stan.as_deref()).collect();
    let rrn: Vec<Option<&str>> = rows.iter().map(|r| r.rrn.as_deref()).collect();
    let tid: Vec<Option<&str>> = rows.iter().map(|r| r.terminal_id.as_deref()).collect();
    let masked: Vec<Option<&str>> = rows.iter().map(|r| r.pan_masked.as_deref()).collect();
    let fp: Vec<Option<&str>> = rows.iter().map(|r| r.pan_fingerprint.as_deref()).collect();
    let amount: Vec<Option<i64>> = rows.iter().map(|r| r.amount_minor.map(|a| a as i64)).collect();
    let currency: Vec<Option<&str>> = rows.iter().map(|r| r.currency.as_deref()).collect();
    let rc: Vec<Option<&str>> = rows.iter().map(|r| r.response_code.as_deref()).collect();
    let route: Vec<Option<&str>> = rows.iter().map(|r| r.route.as_deref()).collect();
    let latency: Vec<Option<i64>> = rows.iter().map(|r| r.latency_us.map(|l| l as i64)).collect();
    let json: Vec<std::borrow::Cow<'_, str>> = rows.iter().map(JournalRow::masked_json).collect();
    let message: Vec<&str> = json.iter().map(|m| m.as_ref()).collect();
    let st = tx
        .prepare_cached(
            "INSERT INTO journal (at_ms, direction, mti, stan, rrn, terminal_id, pan_masked, \
             pan_fingerprint, amount_minor, currency, response_code, route, latency_us, message_masked) \
             SELECT a, b, c, d, e, f, g, h, i, j, k, l, m, n FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], \
             $7::TEXT[], $8::TEXT[], $9::BIGINT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], $13::BIGINT[], $14::TEXT[]) \
             WITH ORDINALITY AS u(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o) ORDER BY o",
        )
        .await
        .map_err(db_err("prepare journal insert"))?;
    tx.execute(
        &st,
        &[
            &at, &dir, &mti, &stan, &rrn, &tid, &masked, &fp, &amount, &currency, &rc, &route, &latency,
            &message,
        ],
    )
    .await
    .map_err(db_err("insert journal rows"))?;
    Ok(())
}

impl Store for PgStore {
    fn journal_append(&self, rows: &[JournalRow]) -> Result<()> {
        let rows = rows.to_vec();
        self.call(move |pool| async move {
            let mut c = pool.get().await.map_err(pool_err)?;
            let tx = c.transaction().await.map_err(db_err("begin journal batch"))?;
            insert_journal(&tx, &rows).await?;
            tx.commit().await.map_err(db_err("commit journal batch"))
        })
    }

    fn journal_count(&self) -> Result<u64> {
        self.call(|pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM journal", &[])
                .await
                .map_err(db_err("count journal"))?
                .get(0);
            Ok(n as u64)
        })
    }

    fn journal_by_card(&self, fingerprint: &str, limit: u32) -> Result<Vec<JournalRow>> {
        const SQL: &str = "SELECT at_ms, direction, mti, stan, rrn, terminal_id, pan_masked, pan_fingerprint, \
             amount_minor, currency, response_code, route, latency_us, message_masked FROM journal \
             WHERE pan_fingerprint = $1 ORDER BY seq LIMIT $2";
        self.journal_query(SQL, Some(fingerprint.to_string()), i64::from(limit), 0)
    }

    fn journal_read(&self, offset: u64, limit: u32) -> Result<Vec<JournalRow>> {
        const SQL: &str = "SELECT at_ms, direction, mti, stan, rrn, terminal_id, pan_masked, pan_fingerprint, \
             amount_minor, currency, response_code, route, latency_us, message_masked FROM journal \
             ORDER BY seq LIMIT $1 OFFSET $2";
        self.journal_query(SQL, None, i64::from(limit), offset as i64)
    }

    fn saf_put(&self, e: NewSafEntry<'_>) -> Result<i64> {
        let (kind, link, key, sealed, now) = (
            e.kind.as_str(),
            e.link.to_string(),
            e.original_key.to_string(),
            e.sealed.to_vec(),
            e.now_ms as i64,
        );
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let inserted = c
                .query_opt(
                    "INSERT INTO saf (kind, link, original_key, sealed, attempts, next_attempt_ms, created_ms) \
                     VALUES ($1, $2, $3, $4, 0, $5, $5) ON CONFLICT (kind, original_key) DO NOTHING RETURNING id",
                    &[&kind, &link, &key, &sealed, &now],
                )
                .await
                .map_err(db_err("insert SAF entry"))?;
            if let Some(r) = inserted {
                return Ok(r.get(0));
            }
            // Already queued (by this node or another): the pending entry stands.
            let r = c
                .query_one("SELECT id FROM saf WHERE kind = $1 AND original_key = $2", &[&kind, &key])
                .await
                .map_err(db_err("read SAF id"))?;
            Ok(r.get(0))
        })
    }

    fn saf_due(&self, link: &str, now_ms: u64, limit: u32) -> Result<Vec<SafEntry>> {
        let (link, now, limit, lease_until, node) = (
            link.to_string(),
            now_ms as i64,
            i64::from(limit),
            (now_ms + self.lease_ms) as i64,
            self.node.clone(),
        );
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            // Leased in one statement: rows another node is reading are skipped, not waited for;
            // a lease that ran out (its node died) is taken over.
            let rows = c
                .query(
                    "UPDATE saf SET leased_by = $5, lease_until_ms = $4 WHERE id IN ( \
                       SELECT id FROM saf WHERE link = $1 AND next_attempt_ms <= $2 \
                       AND (lease_until_ms <= $2 OR leased_by = $5) \
                       ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     RETURNING id, kind, link, original_key, sealed, attempts, next_attempt_ms, created_ms",
                    &[&link, &now, &limit, &lease_until, &node],
                )
                .await
                .map_err(db_err("lease SAF entries"))?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id: i64 = r.get(0);
                let kind: &str = r.get(1);
                let kind = SafKind::parse(kind).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Store,
                        "store.postgres",
                        format!("SAF entry {id} has an unknown kind"),
                    )
                })?;
                out.push(SafEntry {
                    id,
                    kind,
                    link: r.get(2),
                    original_key: r.get(3),
                    sealed: r.get(4),
                    attempts: r.get::<_, i32>(5) as u32,
                    next_attempt_ms: r.get::<_, i64>(6) as u64,
                    created_ms: r.get::<_, i64>(7) as u64,
                });
            }
            out.sort_by_key(|e| e.id);
            Ok(out)
        })
    }

    fn saf_reschedule(&self, id: i64, attempts: u32, next_attempt_ms: u64) -> Result<()> {
        let (attempts, next) = (attempts as i32, next_attempt_ms as i64);
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute(
                "UPDATE saf SET attempts = $2, next_attempt_ms = $3, leased_by = NULL, lease_until_ms = 0 \
                 WHERE id = $1",
                &[&id, &attempts, &next],
            )
            .await
            .map_err(db_err("reschedule SAF entry"))?;
            Ok(())
        })
    }

    fn saf_done(&self, id: i64) -> Result<()> {
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute("DELETE FROM saf WHERE id = $1", &[&id]).await.map_err(db_err("delete SAF entry"))?;
            Ok(())
        })
    }

    fn saf_quarantine(&self, id: i64, reason: &str, now_ms: u64) -> Result<()> {
        let (reason, now) = (reason.to_string(), now_ms as i64);
        self.call(move |pool| async move {
            let mut c = pool.get().await.map_err(pool_err)?;
            let tx = c.transaction().await.map_err(db_err("begin SAF quarantine"))?;
            tx.execute(
                "WITH gone AS (DELETE FROM saf WHERE id = $1 RETURNING *) \
                 INSERT INTO saf_quarantine (id, kind, link, original_key, sealed, attempts, created_ms, \
                 quarantined_ms, reason) SELECT id, kind, link, original_key, sealed, attempts, created_ms, $2, $3 \
                 FROM gone ON CONFLICT (id) DO UPDATE SET quarantined_ms = EXCLUDED.quarantined_ms, \
                 reason = EXCLUDED.reason",
                &[&id, &now, &reason],
            )
            .await
            .map_err(db_err("quarantine SAF entry"))?;
            tx.commit().await.map_err(db_err("commit SAF quarantine"))
        })
    }

    fn saf_quarantined(&self, link: &str) -> Result<u64> {
        let link = link.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM saf_quarantine WHERE link = $1", &[&link])
                .await
                .map_err(db_err("count quarantined SAF entries"))?
                .get(0);
            Ok(n as u64)
        })
    }

    fn saf_pending(&self, link: Option<&str>) -> Result<u64> {
        let link = link.map(str::to_string);
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = match &link {
                Some(l) => c.query_one("SELECT COUNT(*) FROM saf WHERE link = $1", &[l]).await,
                None => c.query_one("SELECT COUNT(*) FROM saf", &[]).await,
            }
            .map_err(db_err("count SAF"))?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn state_commit(&self, w: &StateWrites) -> Result<CommitOutcome> {
        // The ATC windows are not written: over a shared store the claims decide, and a node's
        // window is only its own view, rebuilt from the traffic it sees.
        // Over a shared store the totals are added to in the database (`standin_add`) and deleted
        // there (`standin_reset`, `standin_expire`); a commit only carries what a node of an
        // earlier version may have queued.
        let totals: Vec<(String, String, i64, i64)> = w
            .totals
            .iter()
            .filter_map(|((i, c), t)| {
                t.map(|t| (i.clone(), c.clone(), t.total_minor as i64, t.since_ms as i64))
            })
            .collect();
        let originals: Vec<OriginalRecord> = w.originals.values().cloned().collect();
        let claims: Vec<(String, i32, i32, i64)> =
            w.claims.iter().map(|c| (c.card.clone(), c.atc as i32, c.width as i32, c.at_ms as i64)).collect();
        let journal = w.journal.clone();
        let transmissions: Vec<(String, String, i64)> =
            w.transmissions.iter().map(|t| (t.key.clone(), t.content.clone(), t.at_ms as i64)).collect();
        let answers = w.answers.clone();
        let outcome = self.call(move |pool| async move {
            let mut c = pool.get().await.map_err(pool_err)?;
            let txn = c.transaction().await.map_err(db_err("begin state commit"))?;
            let tx = &txn;
            // Every statement of the commit is sent at once (the connection pipelines them): one
            // round trip to the database, not one per table.
            let claimed = async {
                if transmissions.is_empty() {
                    return Ok(Vec::new());
                }
                // The first node to claim a transmission forwards it; the others have a
                // retransmission (the primary key decides, whichever commits first).
                let keys: Vec<&str> = transmissions.iter().map(|t| t.0.as_str()).collect();
                let contents: Vec<&str> = transmissions.iter().map(|t| t.1.as_str()).collect();
                let ats: Vec<i64> = transmissions.iter().map(|t| t.2).collect();
                let won = tx.query(
&tx.prepare_cached("INSERT INTO transmission (key, content, at_ms) \
                         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) \
                         ON CONFLICT (key) DO NOTHING RETURNING key").await.map_err(db_err("prepare state commit"))?,
                        &[&keys, &contents, &ats],
                    )
                    .await
                    .map_err(db_err("claim transmissions"))?;
                let won: std::collections::HashSet<String> = won.iter().map(|r| r.get(0)).collect();
                Ok::<_, Error>(
                    transmissions.iter().enumerate().filter(|(_, t)| !won.contains(&t.0)).map(|(i, _)| i).collect(),
                )
            };
            let answered = async {
                if answers.is_empty() {
                    return Ok(());
                }
                let keys: Vec<&str> = answers.iter().map(|a| a.0.as_str()).collect();
                let bytes: Vec<&[u8]> = answers.iter().map(|a| a.1.as_slice()).collect();
                tx.execute(
&tx.prepare_cached("UPDATE transmission t SET answer = u.a FROM UNNEST($1::TEXT[], $2::BYTEA[]) AS u(k, a) \
                     WHERE t.key = u.k AND t.answer IS NULL").await.map_err(db_err("prepare state commit"))?,
                    &[&keys, &bytes],
                )
                .await
                .map_err(db_err("record answers"))?;
                Ok::<_, Error>(())
            };
            let atcs = async {
                if claims.is_empty() {
                    return Ok(Vec::new());
                }
                // One statement decides every claim. First it raises each card's highest ATC
                // (`atc_high`, cards in order so that two commits never wait for each other's
                // rows): that row stays locked until this commit ends, so a concurrent claim of the
                // same card on another node waits, then reads the highest this one left. A claim
                // wins when no node has its ATC for the card yet (the primary key) and it is not
                // more than its window below the card's highest. The claims below the window are
                // deleted (at most [`PRUNE_CLAIMS_PER_COMMIT`]): none of them can win again.
                let cards: Vec<&str> = claims.iter().map(|c| c.0.as_str()).collect();
                let atcs: Vec<i32> = claims.iter().map(|c| c.1).collect();
                let widths: Vec<i32> = claims.iter().map(|c| c.2).collect();
                let ats: Vec<i64> = claims.iter().map(|c| c.3).collect();
                let won = tx.query(
&tx.prepare_cached("WITH u AS (SELECT * FROM UNNEST($1::TEXT[], $2::INTEGER[], $3::INTEGER[], $4::BIGINT[]) \
                           AS u(c, a, w, t)), \
                         high AS (INSERT INTO atc_high (card, highest) \
                           SELECT c, max(a) FROM u GROUP BY c ORDER BY c \
                           ON CONFLICT (card) DO UPDATE SET highest = GREATEST(atc_high.highest, EXCLUDED.highest) \
                           RETURNING card, highest), \
                         lim AS (SELECT h.card, h.highest::BIGINT - max(u.w) AS f \
                           FROM high h JOIN u ON u.c = h.card GROUP BY h.card, h.highest), \
                         pruned AS (DELETE FROM atc_claim x WHERE (x.card, x.atc) IN ( \
                           SELECT y.card, y.atc FROM atc_claim y JOIN lim ON y.card = lim.card \
                           WHERE y.atc < lim.f LIMIT $5)) \
                         INSERT INTO atc_claim (card, atc, at_ms) \
                         SELECT u.c, u.a, u.t FROM u JOIN high h ON h.card = u.c \
                         WHERE u.a::BIGINT + u.w >= h.highest \
                         ON CONFLICT (card, atc) DO NOTHING RETURNING card, atc").await.map_err(db_err("prepare state commit"))?,
                        &[&cards, &atcs, &widths, &ats, &PRUNE_CLAIMS_PER_COMMIT],
                    )
                    .await
                    .map_err(db_err("claim ATCs"))?;
                let won: std::collections::HashSet<(String, i32)> =
                    won.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1))).collect();
                Ok::<_, Error>(
                    claims
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| !won.contains(&(c.0.clone(), c.1)))
                        .map(|(i, _)| i)
                        .collect(),
                )
            };
            let summed = async {
                if totals.is_empty() {
                    return Ok(());
                }
                let issuers: Vec<&str> = totals.iter().map(|t| t.0.as_str()).collect();
                let cards: Vec<&str> = totals.iter().map(|t| t.1.as_str()).collect();
                let sums: Vec<i64> = totals.iter().map(|t| t.2).collect();
                let since: Vec<i64> = totals.iter().map(|t| t.3).collect();
                tx.execute(
&tx.prepare_cached("INSERT INTO standin_total (issuer, card, total_minor, since_ms) \
                     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[]) \
                     ON CONFLICT (issuer, card) DO UPDATE SET total_minor = EXCLUDED.total_minor, since_ms = EXCLUDED.since_ms").await.map_err(db_err("prepare state commit"))?,
                    &[&issuers, &cards, &sums, &since],
                )
                .await
                .map_err(db_err("write stand-in totals"))?;
                Ok::<_, Error>(())
            };
            let recorded = async {
                if originals.is_empty() {
                    return Ok(());
                }
                let keys: Vec<&str> = originals.iter().map(|o| o.key.as_str()).collect();
                let cards: Vec<&str> = originals.iter().map(|o| o.card.as_str()).collect();
                let amounts: Vec<i64> = originals.iter().map(|o| o.amount_minor as i64).collect();
                let currencies: Vec<&str> = originals.iter().map(|o| o.currency.as_str()).collect();
                let codes: Vec<Option<&str>> = originals.iter().map(|o| o.response_code.as_deref()).collect();
                let issuers: Vec<&str> = originals.iter().map(|o| o.issuer.as_str()).collect();
                let settled: Vec<i64> = originals.iter().map(|o| o.settled_minor as i64).collect();
                let ats: Vec<i64> = originals.iter().map(|o| o.at_ms as i64).collect();
                tx.execute(
&tx.prepare_cached("INSERT INTO original (key, card, amount_minor, currency, response_code, issuer, \
                     settled_minor, at_ms) SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], \
                     $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::BIGINT[], $8::BIGINT[]) \
                     ON CONFLICT (key) DO UPDATE SET card = EXCLUDED.card, amount_minor = EXCLUDED.amount_minor, \
                     currency = EXCLUDED.currency, \
                     response_code = COALESCE(EXCLUDED.response_code, original.response_code), \
                     issuer = EXCLUDED.issuer, \
                     settled_minor = GREATEST(original.settled_minor, EXCLUDED.settled_minor), \
                     at_ms = EXCLUDED.at_ms").await.map_err(db_err("prepare state commit"))?,
                    &[&keys, &cards, &amounts, &currencies, &codes, &issuers, &settled, &ats],
                )
                .await
                .map_err(db_err("write originals"))?;
                Ok::<_, Error>(())
            };
            let journaled = insert_journal(tx, &journal);
            let (lost_transmissions, (), lost, (), (), ()) =
                tokio::try_join!(claimed, answered, atcs, summed, recorded, journaled)?;
            txn.commit().await.map_err(db_err("commit state"))?;
            Ok(CommitOutcome { lost, lost_transmissions })
        })?;
        // Now and then, off the commit that just became durable: the table stays as small as
        // the retransmission window.
        let n = self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % PRUNE_EVERY == PRUNE_EVERY - 1
            && let Some(now) = w.journal.iter().map(|r| r.at_ms).max()
            && let Err(e) = self.prune_transmissions(now.saturating_sub(TRANSMISSION_TTL_MS))
        {
            tracing::warn!(error = %e, "old transmissions not pruned; tried again later");
        }
        Ok(outcome)
    }

    fn atc_windows_load(&self, limit: u64) -> Result<Vec<(String, Vec<u8>)>> {
        // What earlier versions wrote; new commits write claims instead (see `state_commit`).
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query("SELECT card, win FROM atc_window LIMIT $1", &[&limit])
                .await
                .map_err(db_err("read ATC windows"))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn atc_window_get(&self, card: &str) -> Result<Option<Vec<u8>>> {
        let card = card.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt("SELECT win FROM atc_window WHERE card = $1", &[&card])
                .await
                .map_err(db_err("read an ATC window"))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn standin_totals_load(&self) -> Result<Vec<(String, String, StandInTotal)>> {
        self.call(|pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT issuer, card, total_minor, since_ms FROM standin_total WHERE total_minor > 0",
                    &[],
                )
                .await
                .map_err(db_err("read stand-in totals"))?;
            Ok(rows
                .iter()
                .map(|r| {
                    let t = StandInTotal {
                        total_minor: r.get::<_, i64>(2) as u64,
                        since_ms: r.get::<_, i64>(3) as u64,
                    };
                    (r.get(0), r.get(1), t)
                })
                .collect())
        })
    }

    fn standin_expire(&self, before_ms: u64) -> Result<u64> {
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute("DELETE FROM standin_total WHERE since_ms <= $1", &[&before])
                .await
                .map_err(db_err("expire stand-in totals"))
        })
    }

    fn original_get(&self, key: &str) -> Result<Option<OriginalRecord>> {
        let key = key.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let st = c
                .prepare_cached(
                    "SELECT key, card, amount_minor, currency, response_code, issuer, settled_minor, at_ms \
                     FROM original WHERE key = $1",
                )
                .await
                .map_err(db_err("prepare original read"))?;
            let row = c.query_opt(&st, &[&key]).await.map_err(db_err("read original"))?;
            Ok(row.map(|r| OriginalRecord {
                key: r.get(0),
                card: r.get(1),
                amount_minor: r.get::<_, i64>(2) as u64,
                currency: r.get(3),
                response_code: r.get(4),
                issuer: r.get(5),
                settled_minor: r.get::<_, i64>(6) as u64,
                at_ms: r.get::<_, i64>(7) as u64,
            }))
        })
    }

    fn transmission_get(&self, key: &str) -> Result<Option<(String, Option<Vec<u8>>)>> {
        let key = key.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let st = c
                .prepare_cached("SELECT content, answer FROM transmission WHERE key = $1")
                .await
                .map_err(db_err("prepare transmission read"))?;
            let row = c.query_opt(&st, &[&key]).await.map_err(db_err("read transmission"))?;
            Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    fn standin_add(
        &self,
        issuer: &str,
        card: &str,
        amount: u64,
        max: u64,
        now_ms: u64,
        period_ms: u64,
    ) -> Result<Option<StandInTotal>> {
        let (issuer, card) = (issuer.to_string(), card.to_string());
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let (amount, max, now) = (big(amount), big(max), big(now_ms));
        // A total whose period began at or before this starts again.
        let over = now.saturating_sub(big(period_ms));
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt(
                    "INSERT INTO standin_total (issuer, card, total_minor, since_ms) \
                     SELECT $1::TEXT, $2::TEXT, $3::BIGINT, $5::BIGINT WHERE $3::BIGINT <= $4::BIGINT \
                     ON CONFLICT (issuer, card) DO UPDATE SET \
                       total_minor = CASE WHEN standin_total.since_ms <= $6::BIGINT THEN EXCLUDED.total_minor \
                                     ELSE standin_total.total_minor + EXCLUDED.total_minor END, \
                       since_ms = CASE WHEN standin_total.since_ms <= $6::BIGINT THEN EXCLUDED.since_ms \
                                  ELSE standin_total.since_ms END \
                     WHERE standin_total.since_ms <= $6::BIGINT \
                        OR standin_total.total_minor + EXCLUDED.total_minor <= $4::BIGINT \
                     RETURNING total_minor, since_ms",
                    &[&issuer, &card, &amount, &max, &now, &over],
                )
                .await
                .map_err(db_err("add to a stand-in total"))?;
            Ok(row.map(|r| StandInTotal { total_minor: r.get::<_, i64>(0) as u64, since_ms: r.get::<_, i64>(1) as u64 }))
        })
    }

    fn standin_reset(&self, issuer: &str) -> Result<()> {
        let issuer = issuer.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute("DELETE FROM standin_total WHERE issuer = $1", &[&issuer])
                .await
                .map_err(db_err("reset stand-in totals"))?;
            Ok(())
        })
    }

    fn shared(&self) -> bool {
        true
    }
}
