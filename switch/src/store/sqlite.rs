//! The embedded store: SQLite (rusqlite, bundled), one file, WAL journal mode.
//!
//! One connection behind a mutex: callers are the journal writer thread and the SAF workers,
//! both off the hot path, so contention is low and SQLite's single-writer model is respected.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Direction, JournalRow, NewSafEntry, SafEntry, SafKind, Store};
use crate::error::{Error, ErrorKind, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    direction TEXT NOT NULL,
    mti TEXT NOT NULL,
    stan TEXT, rrn TEXT, terminal_id TEXT,
    pan_masked TEXT, pan_fingerprint TEXT,
    amount_minor INTEGER, currency TEXT,
    response_code TEXT, route TEXT, latency_us INTEGER,
    message_masked TEXT NOT NULL
);
DROP INDEX IF EXISTS journal_fp;
DROP INDEX IF EXISTS journal_tid_stan;
DROP TABLE IF EXISTS main.journal_card;
DROP TABLE IF EXISTS main.journal_terminal;
DROP TABLE IF EXISTS main.journal_indexed;
CREATE TABLE IF NOT EXISTS saf (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    link TEXT NOT NULL,
    original_key TEXT NOT NULL,
    sealed BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE(kind, original_key)
);
CREATE INDEX IF NOT EXISTS saf_due ON saf(link, next_attempt_ms);
CREATE TABLE IF NOT EXISTS saf_quarantine (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    link TEXT NOT NULL,
    original_key TEXT NOT NULL,
    sealed BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    quarantined_ms INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS atc_window (
    card TEXT PRIMARY KEY,
    window BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS standin_total (
    issuer TEXT NOT NULL,
    card TEXT NOT NULL,
    total_minor INTEGER NOT NULL,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (issuer, card)
);
CREATE TABLE IF NOT EXISTS original (
    key TEXT PRIMARY KEY,
    card TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    response_code TEXT,
    issuer TEXT NOT NULL,
    settled_minor INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_log (
    seq INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    key TEXT NOT NULL,
    window BLOB,
    card TEXT, amount_minor INTEGER, currency TEXT, response_code TEXT, issuer TEXT,
    settled_minor INTEGER, at_ms INTEGER
);
";

/// The journal's look-up tables, in a database of their own (attached as `lookup`; a file
/// beside the store's, see [`lookup_path`]): filing them takes only that database's write lock,
/// so the background thread files them in large batches while the writer commits on, and their
/// pages (a random leaf per row: a card's fingerprint, a terminal's STAN) never go through the
/// commits that answers wait for. What they hold is derived from the journal: `last_seq` is the
/// last journal row filed, with its time (`last_at_ms`) to recognise a journal that is no longer
/// the one they were filed from.
const LOOKUP_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lookup.journal_card (
    pan_fingerprint TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (pan_fingerprint, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lookup.journal_terminal (
    terminal_id TEXT NOT NULL,
    stan TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, stan, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lookup.journal_indexed (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    last_seq INTEGER NOT NULL,
    last_at_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO lookup.journal_indexed (one, last_seq, last_at_ms) VALUES (1, 0, 0);
";

/// The file of a store's journal look-up tables: the store's path with `-lookup` appended (beside
/// its `-wal` and `-shm`). Losing it loses nothing: it is filed again from the journal.
pub fn lookup_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-lookup");
    p.into()
}

/// Attaches the look-up tables' database as `lookup` (`None`: in memory, for an in-memory store)
/// and creates its tables.
fn attach_lookup(conn: &Connection, file: Option<&Path>) -> Result<()> {
    let target = match file {
        None => ":memory:",
        Some(p) => p.to_str().ok_or_else(|| {
            Error::new(
                ErrorKind::Store,
                "store.sqlite",
                "the database path is not UTF-8: cannot attach its look-up file",
            )
        })?,
    };
    conn.execute("ATTACH DATABASE ?1 AS lookup", params![target])
        .map_err(db_err("attach the look-up database"))?;
    let lookup = "lookup";
    conn.pragma_update(Some(lookup), "page_size", 4096).map_err(db_err("set look-up page size"))?;
    if file.is_some() {
        conn.pragma_update(Some(lookup), "journal_mode", "WAL").map_err(db_err("set look-up WAL mode"))?;
        // Derived data: a power loss may take the last batches, which are filed again (the
        // watermark is in the same transactions as the rows).
        conn.pragma_update(Some(lookup), "synchronous", "NORMAL")
            .map_err(db_err("set look-up synchronous"))?;
    }
    conn.execute_batch(LOOKUP_SCHEMA).map_err(db_err("create look-up schema"))
}

/// Whether the look-up tables were filed from this journal: the row they were last filed up to
/// is there with the time they recorded. When not (the database restored from a copy older than
/// the look-up file, or replaced), they are emptied, to be filed again from the journal's first
/// row; `true` then.
fn reset_foreign_lookup(conn: &Connection) -> rusqlite::Result<bool> {
    let (last, at): (i64, i64) =
        conn.query_row("SELECT last_seq, last_at_ms FROM lookup.journal_indexed WHERE one = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if last == 0 {
        return Ok(false);
    }
    let found: Option<i64> = conn
        .query_row("SELECT at_ms FROM main.journal WHERE seq = ?1", params![last], |r| r.get(0))
        .optional()?;
    if found == Some(at) {
        return Ok(false);
    }
    conn.execute_batch(
        "BEGIN; DELETE FROM lookup.journal_card; DELETE FROM lookup.journal_terminal; \
         UPDATE lookup.journal_indexed SET last_seq = 0, last_at_ms = 0 WHERE one = 1; COMMIT;",
    )?;
    Ok(true)
}

/// `state_log.kind` of a card's ATC window (`key` the card, `window` its stored form; written as
/// a literal by `state_commit`).
const LOG_WINDOW: i64 = 0;
/// `state_log.kind` of an original (`key` its key, the record in the other columns; written as a
/// literal by `state_commit`).
const LOG_ORIGINAL: i64 = 1;
const _: () = assert!(LOG_WINDOW == 0 && LOG_ORIGINAL == 1, "the literals of `state_commit`'s inserts");

fn db_err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::new(ErrorKind::Store, "store.sqlite", what).with_source(e).retryable()
}

pub struct SqliteStore {
    /// The writer's connection (shared with the checkpointer, which holds it while it restarts the
    /// write-ahead log: see [`restart_log`]).
    conn: std::sync::Arc<Mutex<Connection>>,
    /// A file database's read connection (ATC windows read back after eviction).
    reader: Option<Mutex<Connection>>,
    /// Stops the checkpointer thread of a file database when the store goes.
    checkpointer: Option<Checkpointer>,
    /// No background pass (an in-memory database): each commit files the whole backlog.
    file_all: bool,
    /// Where each key's newest row of the state log is while it waits to be filed (shared with
    /// the checkpointer, which files a long backlog).
    unfiled: std::sync::Arc<Mutex<Unfiled>>,
}

/// The state log's rows not filed yet, by key: the `seq` of each card's newest window and of
/// each original's newest record, so that a point read (an evicted card's window, a reversal's
/// original) takes that one row by its `seq` beside the keyed table's, instead of scanning the
/// log for the key — a scan that every authorization of a card whose window is not held in
/// memory paid, and that grows with the chunk the writer files at once. The writer notes the
/// rows of a commit once it is committed (until then they are the state book's commit in
/// progress, which readers see first); a filing forgets the rows it filed, once it is committed.
/// The log is never emptied (its newest row stays), so `seq`s only grow and a filed row's `seq`
/// never comes back for another key. The reads check the key too: a row noted but filed since
/// is simply not found there, and the keyed table has it.
#[derive(Default)]
struct Unfiled {
    windows: std::collections::HashMap<String, i64>,
    originals: std::collections::HashMap<String, i64>,
}

impl Unfiled {
    fn of(&self, kind: i64) -> &std::collections::HashMap<String, i64> {
        if kind == LOG_WINDOW { &self.windows } else { &self.originals }
    }

    fn of_mut(&mut self, kind: i64) -> &mut std::collections::HashMap<String, i64> {
        if kind == LOG_WINDOW { &mut self.windows } else { &mut self.originals }
    }

    /// The `seq` of `key`'s newest unfiled row of `kind`; `NO_ROW` when none is.
    fn seq(&self, kind: i64, key: &str) -> i64 {
        self.of(kind).get(key).copied().unwrap_or(NO_ROW)
    }

    /// `keys` were appended in this order, the last at `last`.
    fn note<'k>(&mut self, kind: i64, keys: impl ExactSizeIterator<Item = &'k str>, last: i64) {
        let map = self.of_mut(kind);
        let first = last - keys.len() as i64 + 1;
        for (i, key) in keys.enumerate() {
            let seq = first + i as i64;
            match map.get_mut(key) {
                Some(s) => *s = seq,
                None => {
                    map.insert(key.to_owned(), seq);
                }
            }
        }
    }

    /// Forgets the rows filed: those before the log's first (`None`: an empty log, which only a
    /// database of an earlier version leaves: every row noted was filed).
    fn filed_before(&mut self, first: Option<i64>) {
        let keep = |seq: &mut i64| first.is_some_and(|f| *seq >= f);
        self.windows.retain(|_, s| keep(s));
        self.originals.retain(|_, s| keep(s));
    }

    /// The log's newest row of each key, as a database opens.
    fn load(conn: &Connection) -> rusqlite::Result<Unfiled> {
        let mut unfiled = Unfiled::default();
        let mut st = conn.prepare("SELECT kind, key, MAX(seq) FROM state_log GROUP BY kind, key")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (kind, key, seq): (i64, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            unfiled.of_mut(kind).insert(key, seq);
        }
        Ok(unfiled)
    }

    /// After a filing committed on `conn`: forgets what it filed.
    fn after_filing(unfiled: &Mutex<Unfiled>, conn: &Connection) -> rusqlite::Result<()> {
        let first = state_log_ends(conn)?.map(|(first, _)| first);
        unfiled.lock().unwrap_or_else(|p| p.into_inner()).filed_before(first);
        Ok(())
    }
}

/// The `seq` no row has: a key with no unfiled row reads only the keyed table.
const NO_ROW: i64 = -2;

/// A card's window: its newest unfiled row in the log (`?3`, its `seq`), else the table's.
const READ_WINDOW: &str = "SELECT window FROM (SELECT seq, window FROM state_log WHERE seq = ?3 AND kind = ?2 \
     AND key = ?1 UNION ALL SELECT -1, window FROM atc_window WHERE card = ?1) ORDER BY seq DESC LIMIT 1";

/// An original: its newest unfiled record in the log (`?3`, its `seq`), else the table's.
const READ_ORIGINAL: &str = "SELECT key, card, amount_minor, currency, response_code, issuer, settled_minor, at_ms \
     FROM (SELECT seq, key, card, amount_minor, currency, response_code, issuer, settled_minor, at_ms \
     FROM state_log WHERE seq = ?3 AND kind = ?2 AND key = ?1 \
     UNION ALL SELECT -1, key, card, amount_minor, currency, response_code, issuer, settled_minor, \
     at_ms FROM original WHERE key = ?1) ORDER BY seq DESC LIMIT 1";

/// Copies the write-ahead log back into the database file from a connection of its own, every
/// [`CHECKPOINT_EVERY`], so that the commits on the hot path never pay for it (SQLite's automatic
/// checkpoint would run inside whichever commit crosses the threshold). Passive, so the writer
/// goes on meanwhile, then a short stop of the writer to copy the last frames and restart the log
/// from its beginning ([`checkpoint`]). It also files the journal's look-up tables (their own
/// database: every [`LOOKUP_EVERY`]) and a backlog of the state log the writer has not filed (see
/// [`BACKGROUND_FILING_FROM`]).
struct Checkpointer {
    stop: std::sync::Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// 20 ms: each pass writes what the commits of the last 20 ms changed into the database files
/// and syncs them, on one of the cores the requests need. The writer's own syncs share the disk
/// with those: under load, a commit whose sync met a pass's writes took several times longer (at
/// 10,000/s, three in four of the commits over 2 ms met a pass, while passes filled 7 % of the
/// time), and a pass every 250 ms wrote five times as much at once as one every 50 ms (the load
/// bench's p99 at 10,000/s 8.2 ms against 7.2, its longest answer 15 against 11 ms; about 3.5 %
/// more CPU per authorization). Shorter again, the passes' bursts of work take a core for less
/// time at once: at 25,000/s (`paynet serve`, the load from another process, 15 runs each,
/// alternately) p99's median 8.9 ms against 10.9 ms with 50 ms, and within 10 ms in 10 runs
/// against 5, for the same CPU (medians 43.9 and 43.5 µs per authorization).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// The journal's look-up tables are filed every 200 ms, not at every pass: a filing writes about
/// a page per card and per terminal however many rows it files (each one's rows go to one place
/// of its table), and its own commit and sync, so ten passes' rows at once cost the background
/// thread 4.2–4.3 µs per authorization instead of 6.7–7.1 (`paynet serve`, 16,000/s, per thread,
/// three pairs), the whole process 59.2–59.4 µs instead of 64.9–65.8, with p99 the same within
/// its noise at 22,000/s (three runs each, medians 12.3 and 12.2 ms). Nobody waits for them, and
/// a look-up reads the rows not filed yet from the journal itself (at 20,000/s, 4,000 of them).
const LOOKUP_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

impl Checkpointer {
    fn start(
        path: &Path,
        writer: std::sync::Arc<Mutex<Connection>>,
        unfiled: std::sync::Arc<Mutex<Unfiled>>,
    ) -> Result<Checkpointer> {
        let conn = background_connection(path)?;
        let stop = std::sync::Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let (lock, cv) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                let mut restarts = RestartPace::default();
                let mut last_lookup = std::time::Instant::now();
                while !*stopped {
                    stopped = cv.wait_timeout(stopped, CHECKPOINT_EVERY).unwrap_or_else(|p| p.into_inner()).0;
                    if let Err(e) = file_long_state_backlog(&conn, &unfiled) {
                        tracing::warn!(error = %e, "logged decision state not filed into its tables; retried");
                    }
                    // Its own database, nobody waits for it: every `LOOKUP_EVERY`.
                    if last_lookup.elapsed() >= LOOKUP_EVERY {
                        last_lookup = std::time::Instant::now();
                        if let Err(e) = index_journal(&conn) {
                            tracing::warn!(error = %e, "journal look-up tables not brought up to date; retried");
                        }
                    }
                    if let Err(e) = checkpoint(&conn, &writer, &mut restarts, std::time::Instant::now()) {
                        tracing::warn!(error = %e, "WAL checkpoint failed; retried");
                    }
                }
            })
            .map_err(|e| {
                Error::new(ErrorKind::Internal, "store.sqlite", format!("cannot start the checkpointer: {e}"))
            })?;
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

/// Passive checkpoints leave behind the frames committed while they copy: under steady load they
/// never catch up, and the log restarts from its beginning only once every frame in it was copied
/// when a commit starts — so it never did. It grew by every commit (300 MB in 10 s at 8,000
/// authorizations/s), each of its syncs allocated blocks and wrote the file's inode, and every
/// read searched a longer index. Up to this many passive passes in a row each copy what came in
/// during the one before, shrinking the rest to what a few commits write.
const PASSIVE_PASSES: usize = 8;

/// Frames the passive passes may leave for [`restart_log`] (1 MiB of 4 KiB pages): the writer
/// waits while those are copied.
const RESTART_FRAMES: i64 = 256;

/// The shortest time between two restarts of the log: each holds the writer for the copy of the
/// last frames and a sync of the database file (about 2 ms on the development machine's disk,
/// however few the frames), so the log restarts at most four times a second, not at every pass.
const RESTART_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// When the checkpointer last restarted the log ([`RESTART_EVERY`]).
#[derive(Debug, Default)]
struct RestartPace {
    last: Option<std::time::Instant>,
}

impl RestartPace {
    /// Whether a restart may start at `now`; if so, it counts as the last one.
    fn due(&mut self, now: std::time::Instant) -> bool {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < RESTART_EVERY) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// The checkpointer's wait for readers still reading frames of the log before it restarts: a
/// longer read (a large journal export) leaves the restart to a later pass, and the writer is
/// held no longer than this.
const RESTART_READERS_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// One pass of the checkpointer at `now`: the look-up database's log copied (passive: only the
/// background thread writes there), the store's copied in passive passes until what remains is
/// short, then — unless the log restarted within [`RESTART_EVERY`] — that remainder copied and the
/// log restarted ([`restart_log`]).
fn checkpoint(
    conn: &Connection,
    writer: &Mutex<Connection>,
    restarts: &mut RestartPace,
    now: std::time::Instant,
) -> rusqlite::Result<()> {
    let passive = |schema: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("PRAGMA {schema}.wal_checkpoint(PASSIVE)"), [], |r| {
            // (busy, frames in the log, frames copied); -1s when not in WAL mode.
            Ok(r.get::<_, i64>(1)? - r.get::<_, i64>(2)?)
        })
    };
    passive("lookup")?;
    let mut left = passive("main")?;
    for _ in 1..PASSIVE_PASSES {
        if left <= RESTART_FRAMES / 4 {
            break;
        }
        left = passive("main")?;
    }
    if left > RESTART_FRAMES {
        // The writer outruns the copy (an overload): the log grows until a quieter pass.
        return Ok(());
    }
    if !restarts.due(now) {
        return Ok(());
    }
    restart_log(conn, writer)
}

/// Copies the last frames of the store's log and restarts it, holding the writer's connection
/// so that no commit starts meanwhile (the writer waits between two commits, never inside one),
/// and waiting at most [`RESTART_READERS_WAIT`] for readers. The next commit then writes from the
/// log's beginning, over blocks the file already has. Readers still busy leave the restart to a
/// later pass (the checkpoint reports them; nothing waits on that).
fn restart_log(conn: &Connection, writer: &Mutex<Connection>) -> rusqlite::Result<()> {
    let _writer = writer.lock().unwrap_or_else(|p| p.into_inner());
    conn.busy_timeout(RESTART_READERS_WAIT)?;
    let done = conn.query_row("PRAGMA main.wal_checkpoint(RESTART)", [], |_| Ok(()));
    conn.busy_timeout(BACKGROUND_BUSY_WAIT)?;
    done
}

/// How long the background thread's statements wait for the writer's lock.
const BACKGROUND_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The background thread's connection to the store at `path`, with the look-up database
/// attached.
fn background_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(db_err("open checkpoint connection"))?;
    conn.busy_timeout(BACKGROUND_BUSY_WAIT).map_err(db_err("set busy timeout"))?;
    attach_lookup(&conn, Some(&lookup_path(path)))?;
    // The background filing's commits in the store's database are not synced each (they hold
    // the write lock, and the writer's commits wait for them meanwhile): they only re-file what
    // is already durable (the state log into its tables, atomically with deleting what they
    // filed). The log is sequential, so the writer's next synced commit makes every earlier
    // frame durable with it; a power loss can only take the passes done since the last synced
    // commit, which leaves the rows where they were, read the same, and filed again by the next
    // pass. Checkpoints still sync the log before copying it and the database file after. (The
    // look-up database is `NORMAL` too: see `attach_lookup`.)
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(db_err("set synchronous"))?;
    in_memory_temp(&conn)?;
    Ok(conn)
}

/// Statement journals (a multi-row INSERT that can fail part-way keeps the undo of its own rows
/// until it ends) in memory, not in a temporary file: on disk, every commit created such a file
/// and deleted it again — an inode allocated and freed per commit. They serve only to undo a
/// statement within its transaction, never to recover a commit, so durability is unchanged.
fn in_memory_temp(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(db_err("keep temporary data in memory"))
}

/// Rows filed from the state log per transaction of a background pass: the writer waits for the
/// write lock while one runs, so each stays short. The writer files as it commits (see
/// [`file_in_commit`]); a pass has work only after a restart or while the writer is idle. (The
/// journal's look-up tables have a database and a batch of their own: [`LOOKUP_BATCH`].)
const PASS_BATCH: i64 = 1_000;

/// Files the journal rows written since the last pass into the look-up tables, a batch per
/// transaction, until caught up (or after a bounded number of batches: the next pass goes on).
fn index_journal(conn: &Connection) -> rusqlite::Result<()> {
    in_batches(conn, index_journal_batch)
}

/// Runs `batch` (one transaction; whether there may be more) until caught up, or for at most 64
/// batches: the next pass goes on from there.
fn in_batches(conn: &Connection, batch: fn(&Connection) -> rusqlite::Result<bool>) -> rusqlite::Result<()> {
    for _ in 0..64 {
        if !batch(conn)? {
            break;
        }
    }
    Ok(())
}

/// Runs `file` in a transaction of its own that takes the write lock from its start (IMMEDIATE):
/// a deferred one that read first and then wrote would fail at once with a busy snapshot
/// whenever the writer committed meanwhile — under load, nearly every time.
fn immediate(
    conn: &Connection,
    limit: i64,
    file: fn(&Connection, i64) -> rusqlite::Result<bool>,
) -> rusqlite::Result<bool> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let more = file(&tx, limit)?;
    tx.commit()?;
    Ok(more)
}

/// One batch of the journal's look-up tables in a transaction of its own; whether there may be
/// more. Deferred, not IMMEDIATE: an immediate transaction takes the write lock of every attached
/// database, the store's own included, and this one only reads the journal. Nothing else writes
/// the look-up database while the store is open, so its read never goes stale before its write.
fn index_journal_batch(conn: &Connection) -> rusqlite::Result<bool> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Deferred)?;
    let more = index_journal_upto(&tx, LOOKUP_BATCH)?;
    tx.commit()?;
    Ok(more)
}

/// Journal rows filed into the look-up tables per transaction: as many as a few passes of the
/// background thread see at a high rate, so that a leaf page of a table takes several rows at
/// once (each row lands on a random leaf: the fewer transactions, the fewer times each page is
/// written). Nothing waits for these transactions.
const LOOKUP_BATCH: i64 = 8_192;

/// Files up to `limit` of the oldest journal rows not yet in the look-up tables, in the caller's
/// transaction; whether there may be more.
fn index_journal_upto(conn: &Connection, limit: i64) -> rusqlite::Result<bool> {
    let last: i64 =
        conn.query_row("SELECT last_seq FROM lookup.journal_indexed WHERE one = 1", [], |r| r.get(0))?;
    let newest: i64 = conn.query_row("SELECT IFNULL(MAX(seq), 0) FROM main.journal", [], |r| r.get(0))?;
    if newest <= last {
        return Ok(false);
    }
    // The last row of the batch that is there (so that its time can be recorded with it).
    let top: i64 = conn
        .prepare_cached(
            "SELECT MAX(seq) FROM (SELECT seq FROM main.journal WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
        )?
        .query_row(params![last, limit], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO lookup.journal_card (pan_fingerprint, seq) SELECT pan_fingerprint, seq FROM main.journal \
         WHERE seq > ?1 AND seq <= ?2 AND pan_fingerprint IS NOT NULL AND pan_fingerprint != '' \
         ORDER BY pan_fingerprint, seq",
    )?
    .execute(params![last, top])?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO lookup.journal_terminal (terminal_id, stan, seq) SELECT terminal_id, stan, seq \
         FROM main.journal WHERE seq > ?1 AND seq <= ?2 AND terminal_id IS NOT NULL AND stan IS NOT NULL \
         ORDER BY terminal_id, stan, seq",
    )?
    .execute(params![last, top])?;
    conn.prepare_cached(
        "UPDATE lookup.journal_indexed SET last_seq = ?1, \
         last_at_ms = (SELECT at_ms FROM main.journal WHERE seq = ?1) WHERE one = 1",
    )?
    .execute(params![top])?;
    Ok(top < newest)
}

/// Files the decision state logged by the commits (ATC windows, originals: appended in commit
/// order, so that a commit's own writes go to the log's last pages instead of a random page of a
/// keyed table per card) into the keyed tables, the newest row of each key winning, and deletes
/// what it filed; a batch per transaction, until caught up or after a bounded number of
/// batches. Readers see the log's newest row of a key over the table's (same snapshot), so
/// nothing reads differently before, during or after filing.
fn fold_state(conn: &Connection) -> rusqlite::Result<()> {
    in_batches(conn, fold_state_batch)
}

/// One batch of the state log in a transaction of its own; whether there may be more.
fn fold_state_batch(conn: &Connection) -> rusqlite::Result<bool> {
    immediate(conn, PASS_BATCH, fold_state_upto)
}

/// Files up to `limit` of the state log's oldest rows, in the caller's transaction; whether there
/// may be more. Windows and originals alike are filed in log order, a later row of a key
/// replacing an earlier one, with nothing to sort: a chunk holds a card's window about once
/// (grouping each card's newest first, through SQLite's sorter, cost more than the few rows it
/// spared — the writer's commits 72.3k against 68.0k instructions per authorization, callgrind
/// over `STATE_COMMIT_FIXED=3072` of the state_commit bench).
fn fold_state_upto(conn: &Connection, limit: i64) -> rusqlite::Result<bool> {
    let Some((first, newest)) = state_log_ends(conn)? else {
        return Ok(false);
    };
    let top = newest.min(first.saturating_add(limit - 1));
    conn.prepare_cached(
        "INSERT OR REPLACE INTO atc_window (card, window) SELECT key, window FROM state_log \
         WHERE seq <= ?2 AND kind = ?1 ORDER BY seq",
    )?
    .execute(params![LOG_WINDOW, top])?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO original (key, card, amount_minor, currency, response_code, issuer, \
         settled_minor, at_ms) SELECT key, card, amount_minor, currency, response_code, issuer, settled_minor, \
         at_ms FROM state_log WHERE seq <= ?2 AND kind = ?1 ORDER BY seq",
    )?
    .execute(params![LOG_ORIGINAL, top])?;
    // The newest row stays (filed, and filed again with the next chunk: the same values), so
    // that the log is never empty and its `seq`s never start again (see `Unfiled`).
    conn.prepare_cached("DELETE FROM state_log WHERE seq <= ?1")?.execute(params![top.min(newest - 1)])?;
    Ok(top < newest)
}

/// Rows the writer files at once (see [`file_in_commit`]): the state log's oldest, once that many
/// wait. Each terminal's originals go to one place of the keyed table (its STANs in order), so a
/// chunk writes about a page per terminal whatever its length: 2,048 rows write a page for several
/// originals where 256 wrote one for about each (the commits' WAL bytes per authorization over
/// 64 terminals 4,235 against 6,729, `wal_bytes`), and the writer's CPU per authorization fell
/// 8–11 % (`paynet serve`, 16,000/s, per thread, three pairs). Point reads do not scan the log for a key
/// ([`Unfiled`]), so its length costs them nothing.
const FILE_CHUNK: i64 = 2048;

/// A background pass files only a backlog this long (the writer is behind, or one was left by an
/// earlier run): under load the writer keeps the backlog under a chunk and a commit's rows, and a
/// pass on its own connection would hold the write lock for milliseconds while every commit
/// waited behind it (measured at 8,000/s: 2–23 ms per 1,000-row batch, commits waiting as long).
const BACKGROUND_FILING_FROM: i64 = 4 * FILE_CHUNK;

/// Files the state log when at least [`BACKGROUND_FILING_FROM`] rows wait in it.
fn file_long_state_backlog(conn: &Connection, unfiled: &Mutex<Unfiled>) -> rusqlite::Result<()> {
    if state_backlog(conn)? >= BACKGROUND_FILING_FROM {
        fold_state(conn)?;
        Unfiled::after_filing(unfiled, conn)?;
    }
    Ok(())
}

/// Rows in the state log (filed ones are deleted from it), asked at every commit.
fn state_backlog(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(state_log_ends(conn)?.map_or(0, |(first, last)| last - first + 1))
}

/// The state log's first and last `seq`, when it holds any row.
fn state_log_ends(conn: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
    let (first, last): (Option<i64>, Option<i64>) =
        conn.prepare_cached(STATE_LOG_ENDS)?.query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(first.zip(last))
}

/// The state log's first and last rows. Each end in a subquery of its own: SQLite reads a lone
/// `MIN` or `MAX` of the key at one end of its b-tree, but both in one `SELECT` scan the whole
/// log (hundreds of rows at every commit).
const STATE_LOG_ENDS: &str = "SELECT (SELECT MIN(seq) FROM state_log), (SELECT MAX(seq) FROM state_log)";

/// Journal rows not in the look-up tables yet.
#[cfg(test)]
fn journal_backlog(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT IFNULL((SELECT MAX(seq) FROM main.journal), 0) - \
         (SELECT last_seq FROM lookup.journal_indexed WHERE one = 1)",
    )?
    .query_row([], |r| r.get(0))
}

/// The writer's filing, inside its commit and on its connection: once [`FILE_CHUNK`] rows wait in
/// the state log, the oldest chunk is filed with the commit, under its one sync. A chunk's rows
/// share pages (a card's window written once per chunk), so a commit carries about a millisecond
/// of filing now and then instead of a few pages per row every time; and the writer's page cache
/// stays warm (a write from another connection makes every connection drop its cache). The
/// journal's look-up tables are not the writer's: they are in a database of their own, filed by
/// the background thread ([`LOOKUP_SCHEMA`]). `all`: the whole backlog, look-up tables included
/// (an in-memory database, which has no background thread).
/// Whether it filed state log rows.
fn file_in_commit(conn: &Connection, all: bool) -> rusqlite::Result<bool> {
    if all {
        fold_state_upto(conn, i64::MAX / 2)?;
        index_journal_upto(conn, i64::MAX / 2)?;
        return Ok(true);
    }
    if state_backlog(conn)? >= FILE_CHUNK {
        fold_state_upto(conn, FILE_CHUNK)?;
        return Ok(true);
    }
    Ok(false)
}

/// The writer's busy handler: another try in 100 µs, for at most 50,000 tries (5 s and more).
fn retry_soon(tries: i32) -> bool {
    if tries >= 50_000 {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_micros(100));
    true
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its schema.
    pub fn open(path: &Path) -> Result<Self> {
        // The checkpointer takes over from SQLite's automatic checkpoint (off in this one).
        let mut store = Self::open_without_background(path)?;
        store.checkpointer = Some(Checkpointer::start(path, store.conn.clone(), store.unfiled.clone())?);
        let reader = Connection::open(path).map_err(db_err("open read connection"))?;
        reader.busy_timeout(std::time::Duration::from_secs(5)).map_err(db_err("set busy timeout"))?;
        store.reader = Some(Mutex::new(reader));
        Ok(store)
    }

    /// A file database without the background thread: the caller runs its pass
    /// ([`SqliteStore::background_pass`]) when it chooses (benchmarks: the same work, measured).
    #[doc(hidden)]
    pub fn open_without_background(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(db_err("open database"))?;
        let store = Self::init(conn)?;
        store.attach_lookup(Some(&lookup_path(path)))?;
        store.conn()?.pragma_update(None, "wal_autocheckpoint", 0).map_err(db_err("set WAL checkpoint"))?;
        Ok(store)
    }

    /// Filing the whole backlog of the state log and the journal's look-up tables, then a passive
    /// checkpoint (what the background thread does every [`CHECKPOINT_EVERY`], filing only a long
    /// backlog), here on the writer's connection.
    #[doc(hidden)]
    pub fn background_pass(&self) -> Result<()> {
        let conn = self.conn()?;
        fold_state(&conn).map_err(db_err("file the state log"))?;
        Unfiled::after_filing(&self.unfiled, &conn).map_err(db_err("file the state log"))?;
        index_journal(&conn).map_err(db_err("index the journal"))?;
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(db_err("checkpoint"))
    }

    /// An in-memory database (tests, benchmarks).
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(db_err("open in-memory database"))?;
        let mut store = Self::init(conn)?;
        store.attach_lookup(None)?;
        store.file_all = true;
        Ok(store)
    }

    fn init(conn: Connection) -> Result<Self> {
        // 4 KiB pages and a 64 MiB page cache. Every commit syncs the pages it touched to the
        // write-ahead log, and the journal's two indexes (PAN fingerprint, terminal and STAN) and
        // the originals touch pages at random: with small pages a commit writes a quarter of what
        // 16 KiB pages made it write (the load bench's p50 at 10,000/s: 3.7 ms against 6.6 ms).
        // page_size only applies to a new database, before WAL is on.
        conn.pragma_update(None, "page_size", 4096).map_err(db_err("set page size"))?;
        conn.pragma_update(None, "cache_size", -65536).map_err(db_err("set cache size"))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err("set WAL mode"))?;
        // FULL: a commit is on disk when it returns (the WAL is synced on every commit). What
        // commits here acknowledges money or keys — journal rows of answers, decision state,
        // store-and-forward entries — so NORMAL (which may lose the last commits on
        // power loss) is not enough. Group commit keeps the cost to one sync per batch.
        conn.pragma_update(None, "synchronous", "FULL").map_err(db_err("set synchronous"))?;
        // While a background pass holds the write lock, the writer retries every 100 µs (for
        // about 5 s): SQLite's own busy timeout sleeps 1, 2, 5, 10 … ms between tries, which
        // would hold every answer waiting for this commit that much longer than the pass.
        conn.busy_handler(Some(retry_soon)).map_err(db_err("set busy handler"))?;
        in_memory_temp(&conn)?;
        // The commits' multi-row INSERTs (six sizes per table, see `insert_rows`) beside the rest.
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(SCHEMA).map_err(db_err("create schema"))?;
        upgrade_standin_totals(&conn)?;
        upgrade_keyed_tables(&conn)?;
        let unfiled = Unfiled::load(&conn).map_err(db_err("read the state log"))?;
        Ok(SqliteStore {
            conn: std::sync::Arc::new(Mutex::new(conn)),
            reader: None,
            checkpointer: None,
            file_all: false,
            unfiled: std::sync::Arc::new(Mutex::new(unfiled)),
        })
    }

    /// Attaches the journal's look-up database to the writer's connection (which reads it for
    /// look-ups by card, and files it itself only in memory: its commits never touch it
    /// otherwise, and a deferred transaction locks only what it writes), and empties it when it
    /// was not filed from this journal.
    fn attach_lookup(&self, file: Option<&Path>) -> Result<()> {
        let conn = self.conn()?;
        attach_lookup(&conn, file)?;
        if reset_foreign_lookup(&conn).map_err(db_err("check the look-up database"))? {
            tracing::warn!(
                "the journal look-up file was not filed from this journal (the database restored or \
                 replaced?): emptied, filed again from the journal's first row"
            );
        }
        Ok(())
    }

    fn journal_query(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<JournalRow>> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(sql).map_err(db_err("prepare journal read"))?;
        let rows = st
            .query_map(args, |r| {
                Ok(JournalRow {
                    at_ms: r.get::<_, i64>(0)? as u64,
                    direction: direction_from(&r.get::<_, String>(1)?),
                    mti: r.get(2)?,
                    stan: r.get(3)?,
                    rrn: r.get(4)?,
                    terminal_id: r.get(5)?,
                    pan_masked: r.get(6)?,
                    pan_fingerprint: r.get(7)?,
                    amount_minor: r.get::<_, Option<i64>>(8)?.map(|a| a as u64),
                    currency: r.get(9)?,
                    response_code: r.get(10)?,
                    route: r.get(11)?,
                    latency_us: r.get::<_, Option<i64>>(12)?.map(|a| a as u64),
                    message_masked: match r.get_ref(13)? {
                        rusqlite::types::ValueRef::Blob(b) => {
                            crate::journal::stored::render(b).ok_or_else(|| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    13,
                                    rusqlite::types::Type::Blob,
                                    "a masked message's stored form that does not read".into(),
                                )
                            })?
                        }
                        _ => r.get(13)?,
                    },
                    message_packed: None,
                })
            })
            .map_err(db_err("read journal"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("read journal row"))
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| Error::new(ErrorKind::Internal, "store.sqlite", "connection mutex poisoned"))
    }
}

/// A database of an earlier version has stand-in totals without the start of their period, and
/// the zero totals its resets left: the zeros go, and the others' periods start now (not at the
/// epoch, which would expire every total, and reopen every card's limit, at once).
fn upgrade_standin_totals(conn: &Connection) -> Result<()> {
    let has_since: bool = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('standin_total') WHERE name = 'since_ms'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(db_err("read stand-in total columns"))?
        > 0;
    if has_since {
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    conn.execute_batch(&format!(
        "BEGIN; DELETE FROM standin_total WHERE total_minor = 0; \
         ALTER TABLE standin_total ADD COLUMN since_ms INTEGER NOT NULL DEFAULT {now}; COMMIT;"
    ))
    .map_err(db_err("upgrade stand-in totals"))
}

/// A database of an earlier version keeps its ATC windows and originals in rowid tables, each
/// beside an index of its key: every row the background pass files is written to two B-trees.
/// They move to tables keyed by the key alone (`WITHOUT ROWID`), once, in one transaction.
fn upgrade_keyed_tables(conn: &Connection) -> Result<()> {
    for (table, columns, definition) in [
        ("atc_window", "card, window", "card TEXT PRIMARY KEY, window BLOB NOT NULL"),
        (
            "original",
            "key, card, amount_minor, currency, response_code, issuer, settled_minor, at_ms",
            "key TEXT PRIMARY KEY, card TEXT NOT NULL, amount_minor INTEGER NOT NULL, currency TEXT NOT NULL, \
             response_code TEXT, issuer TEXT NOT NULL, settled_minor INTEGER NOT NULL, at_ms INTEGER NOT NULL",
        ),
    ] {
        let sql: String = conn
            .query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |r| {
                r.get(0)
            })
            .map_err(db_err("read a table's definition"))?;
        if sql.to_ascii_uppercase().contains("WITHOUT ROWID") {
            continue;
        }
        conn.execute_batch(&format!(
            "BEGIN; CREATE TABLE {table}_keyed ({definition}) WITHOUT ROWID; \
             INSERT INTO {table}_keyed ({columns}) SELECT {columns} FROM {table}; \
             DROP TABLE {table}; ALTER TABLE {table}_keyed RENAME TO {table}; COMMIT;"
        ))
        .map_err(db_err("upgrade a keyed table"))?;
    }
    Ok(())
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

/// Rows per INSERT statement at most: a commit inserts its rows of a table with one statement
/// per binary digit of their count (37 rows: 32, 4 and 1), each prepared once and cached, instead
/// of a statement per row.
const ROWS_PER_INSERT: usize = 32;

/// Inserts `rows` with `head` (`INSERT INTO t (a, b) VALUES `) and `row`, the values of one row
/// (`(0, ?, ?)`); `bind` binds a row's parameters from the index given.
fn insert_rows<T>(
    conn: &Connection,
    head: &str,
    row: &str,
    rows: &[T],
    mut bind: impl FnMut(&mut rusqlite::Statement<'_>, usize, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let per_row = row.bytes().filter(|&c| c == b'?').count();
    let mut rest = rows;
    let mut sql = String::new();
    while !rest.is_empty() {
        let n = 1usize << (usize::BITS - 1 - rest.len().min(ROWS_PER_INSERT).leading_zeros());
        sql.clear();
        sql.reserve(head.len() + n * (row.len() + 1));
        sql.push_str(head);
        for i in 0..n {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(row);
        }
        let mut st = conn.prepare_cached(&sql)?;
        for (i, r) in rest[..n].iter().enumerate() {
            bind(&mut st, i * per_row + 1, r)?;
        }
        st.raw_execute()?;
        rest = &rest[n..];
    }
    Ok(())
}

fn insert_journal(conn: &Connection, rows: &[JournalRow]) -> Result<()> {
    // The masked message in its compact form (see `journal::stored`), built into one buffer
    // (SQLite copies what is bound); JSON of another shape is kept as it is. Either way readers
    // get the same text back.
    let mut compact = Vec::new();
    insert_rows(
        conn,
        "INSERT INTO journal (at_ms, direction, mti, stan, rrn, terminal_id, pan_masked, pan_fingerprint, \
         amount_minor, currency, response_code, route, latency_us, message_masked) VALUES ",
        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
        |st, at, r| {
            st.raw_bind_parameter(at, r.at_ms as i64)?;
            st.raw_bind_parameter(at + 1, r.direction.as_str())?;
            st.raw_bind_parameter(at + 2, &r.mti)?;
            st.raw_bind_parameter(at + 3, &r.stan)?;
            st.raw_bind_parameter(at + 4, &r.rrn)?;
            st.raw_bind_parameter(at + 5, &r.terminal_id)?;
            st.raw_bind_parameter(at + 6, &r.pan_masked)?;
            st.raw_bind_parameter(at + 7, &r.pan_fingerprint)?;
            st.raw_bind_parameter(at + 8, r.amount_minor.map(|a| a as i64))?;
            st.raw_bind_parameter(at + 9, &r.currency)?;
            st.raw_bind_parameter(at + 10, &r.response_code)?;
            st.raw_bind_parameter(at + 11, &r.route)?;
            st.raw_bind_parameter(at + 12, r.latency_us.map(|l| l as i64))?;
            if let Some(packed) = r.message_packed.as_deref().filter(|_| r.message_masked.is_empty()) {
                st.raw_bind_parameter(at + 13, packed)
            } else if crate::journal::stored::compact_into(&r.message_masked, &mut compact) {
                st.raw_bind_parameter(at + 13, compact.as_slice())
            } else {
                st.raw_bind_parameter(at + 13, r.message_masked.as_str())
            }
        },
    )
    .map_err(db_err("insert journal rows"))
}

impl Store for SqliteStore {
    fn journal_append(&self, rows: &[JournalRow]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err("begin journal batch"))?;
        insert_journal(&tx, rows)?;
        tx.commit().map_err(db_err("commit journal batch"))
    }

    fn journal_count(&self) -> Result<u64> {
        let conn = self.conn()?;
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
            .map_err(db_err("count journal"))?;
        Ok(n as u64)
    }

    fn journal_by_card(&self, fingerprint: &str, limit: u32) -> Result<Vec<JournalRow>> {
        // The look-up table, and the rows committed since its last pass; each row's own
        // fingerprint checked as well (a look-up file is derived data, never trusted alone).
        self.journal_query(
            "SELECT at_ms, direction, mti, stan, rrn, terminal_id, pan_masked, pan_fingerprint, \
             amount_minor, currency, response_code, route, latency_us, message_masked FROM journal \
             WHERE (seq IN (SELECT seq FROM lookup.journal_card WHERE pan_fingerprint = ?1) \
             OR seq > (SELECT last_seq FROM lookup.journal_indexed WHERE one = 1)) AND pan_fingerprint = ?1 \
             ORDER BY seq LIMIT ?2",
            params![fingerprint, limit as i64],
        )
    }

    fn journal_read(&self, offset: u64, limit: u32) -> Result<Vec<JournalRow>> {
        self.journal_query(
            "SELECT at_ms, direction, mti, stan, rrn, terminal_id, pan_masked, pan_fingerprint, \
             amount_minor, currency, response_code, route, latency_us, message_masked \
             FROM journal ORDER BY seq LIMIT ?1 OFFSET ?2",
            params![limit as i64, offset as i64],
        )
    }

    fn saf_put(&self, e: NewSafEntry<'_>) -> Result<i64> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO saf (kind, link, original_key, sealed, attempts, next_attempt_ms, created_ms) \
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5) ON CONFLICT(kind, original_key) DO NOTHING",
            params![e.kind.as_str(), e.link, e.original_key, e.sealed, e.now_ms as i64],
        )
        .map_err(db_err("insert SAF entry"))?;
        conn.query_row(
            "SELECT id FROM saf WHERE kind = ?1 AND original_key = ?2",
            params![e.kind.as_str(), e.original_key],
            |r| r.get(0),
        )
        .map_err(db_err("read SAF id"))
    }

    fn saf_due(&self, link: &str, now_ms: u64, limit: u32) -> Result<Vec<SafEntry>> {
        let conn = self.conn()?;
        let mut st = conn
            .prepare_cached(
                "SELECT id, kind, link, original_key, sealed, attempts, next_attempt_ms, created_ms FROM saf \
                 WHERE link = ?1 AND next_attempt_ms <= ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(db_err("prepare SAF due"))?;
        let rows = st
            .query_map(params![link, now_ms as i64, limit as i64], |r| {
                let kind: String = r.get(1)?;
                Ok((
                    kind,
                    SafEntry {
                        id: r.get(0)?,
                        kind: SafKind::Reversal,
                        link: r.get(2)?,
                        original_key: r.get(3)?,
                        sealed: r.get(4)?,
                        attempts: r.get::<_, i64>(5)? as u32,
                        next_attempt_ms: r.get::<_, i64>(6)? as u64,
                        created_ms: r.get::<_, i64>(7)? as u64,
                    },
                ))
            })
            .map_err(db_err("read SAF due"))?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, mut entry) = row.map_err(db_err("read SAF row"))?;
            entry.kind = SafKind::parse(&kind).ok_or_else(|| {
                Error::new(
                    ErrorKind::Store,
                    "store.sqlite",
                    format!("SAF entry {} has unknown kind {kind:?}", entry.id),
                )
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    fn saf_reschedule(&self, id: i64, attempts: u32, next_attempt_ms: u64) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE saf SET attempts = ?2, next_attempt_ms = ?3 WHERE id = ?1",
            params![id, attempts as i64, next_attempt_ms as i64],
        )
        .map_err(db_err("reschedule SAF entry"))?;
        Ok(())
    }

    fn saf_done(&self, id: i64) -> Result<()> {
        let conn = self.conn()?;
        conn.execute("DELETE FROM saf WHERE id = ?1", params![id]).map_err(db_err("delete SAF entry"))?;
        Ok(())
    }

    fn saf_quarantine(&self, id: i64, reason: &str, now_ms: u64) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err("begin SAF quarantine"))?;
        tx.execute(
            "INSERT OR REPLACE INTO saf_quarantine (id, kind, link, original_key, sealed, attempts, created_ms, \
             quarantined_ms, reason) SELECT id, kind, link, original_key, sealed, attempts, created_ms, ?2, ?3 \
             FROM saf WHERE id = ?1",
            params![id, now_ms as i64, reason],
        )
        .map_err(db_err("quarantine SAF entry"))?;
        tx.execute("DELETE FROM saf WHERE id = ?1", params![id]).map_err(db_err("quarantine SAF entry"))?;
        tx.commit().map_err(db_err("commit SAF quarantine"))
    }

    fn saf_quarantined(&self, link: &str) -> Result<u64> {
        let conn = self.conn()?;
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM saf_quarantine WHERE link = ?1", params![link], |r| r.get(0))
            .map_err(db_err("count quarantined SAF entries"))?;
        Ok(n as u64)
    }

    fn saf_pending(&self, link: Option<&str>) -> Result<u64> {
        let conn = self.conn()?;
        let n: i64 = match link {
            Some(l) => conn.query_row("SELECT COUNT(*) FROM saf WHERE link = ?1", params![l], |r| r.get(0)),
            None => conn.query_row("SELECT COUNT(*) FROM saf", [], |r| r.get(0)),
        }
        .optional()
        .map_err(db_err("count SAF"))?
        .unwrap_or(0);
        Ok(n as u64)
    }

    fn state_commit(&self, w: &crate::records::StateWrites) -> Result<crate::records::CommitOutcome> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err("begin state commit"))?;
        // The `seq` of the last window and of the last original appended (see `Unfiled`).
        let (windows_last, originals_last);
        {
            // Windows and originals go to the end of the state log (see `fold_state`).
            let windows: Vec<_> = w.windows.iter().collect();
            insert_rows(
                &tx,
                "INSERT INTO state_log (kind, key, window) VALUES ",
                "(0,?,?)", // LOG_WINDOW
                &windows,
                |st, at, (card, win)| {
                    st.raw_bind_parameter(at, card.as_str())?;
                    st.raw_bind_parameter(at + 1, win.to_bytes())
                },
            )
            .map_err(db_err("write ATC windows"))?;
            windows_last = tx.last_insert_rowid();
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO standin_total (issuer, card, total_minor, since_ms) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db_err("prepare stand-in total"))?;
            let mut gone = tx
                .prepare_cached("DELETE FROM standin_total WHERE issuer = ?1 AND card = ?2")
                .map_err(db_err("prepare stand-in total"))?;
            for ((issuer, card), total) in &w.totals {
                match total {
                    Some(t) => put.execute(params![issuer, card, t.total_minor as i64, t.since_ms as i64]),
                    None => gone.execute(params![issuer, card]),
                }
                .map_err(db_err("write stand-in total"))?;
            }
            let originals: Vec<_> = w.originals.values().collect();
            insert_rows(
                &tx,
                "INSERT INTO state_log (kind, key, card, amount_minor, currency, response_code, issuer, \
                 settled_minor, at_ms) VALUES ",
                "(1,?,?,?,?,?,?,?,?)", // LOG_ORIGINAL
                &originals,
                |st, at, o| {
                    st.raw_bind_parameter(at, o.key.as_str())?;
                    st.raw_bind_parameter(at + 1, o.card.as_str())?;
                    st.raw_bind_parameter(at + 2, o.amount_minor as i64)?;
                    st.raw_bind_parameter(at + 3, o.currency.as_str())?;
                    st.raw_bind_parameter(at + 4, &o.response_code)?;
                    st.raw_bind_parameter(at + 5, o.issuer.as_str())?;
                    st.raw_bind_parameter(at + 6, o.settled_minor as i64)?;
                    st.raw_bind_parameter(at + 7, o.at_ms as i64)
                },
            )
            .map_err(db_err("write originals"))?;
            originals_last = tx.last_insert_rowid();
        }
        insert_journal(&tx, &w.journal)?;
        // Filing is idempotent (readers see the log's newest rows either way): a failure leaves
        // the backlog to the next commit, never a commit reported failed and retried.
        let filed = file_in_commit(&tx, self.file_all).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "logged decision state or journal rows not filed; retried");
            false
        });
        tx.commit().map_err(db_err("commit state"))?;
        // The rows just appended, in the order they were (the maps are the same, unchanged); then
        // what the commit filed forgotten. The commit is durable whatever follows: a failure to
        // read the log's end only leaves the filed rows noted until the next filing (a noted row
        // that is gone reads as absent).
        {
            let mut unfiled = self.unfiled.lock().unwrap_or_else(|p| p.into_inner());
            unfiled.note(LOG_WINDOW, w.windows.keys().map(String::as_str), windows_last);
            unfiled.note(LOG_ORIGINAL, w.originals.keys().map(String::as_str), originals_last);
        }
        if filed && let Err(e) = Unfiled::after_filing(&self.unfiled, &conn) {
            tracing::warn!(error = %e, "the state log's end not read after filing");
        }
        // One node: its in-memory window decided every ATC.
        Ok(crate::records::CommitOutcome::default())
    }

    fn atc_windows_load(&self, limit: u64) -> Result<Vec<(String, Vec<u8>)>> {
        let conn = self.conn()?;
        let mut st = conn
            .prepare(
                "SELECT key, window FROM state_log WHERE seq IN \
                 (SELECT MAX(seq) FROM state_log WHERE kind = ?2 GROUP BY key) \
                 UNION ALL SELECT card, window FROM atc_window \
                 WHERE card NOT IN (SELECT key FROM state_log WHERE kind = ?2) LIMIT ?1",
            )
            .map_err(db_err("read ATC windows"))?;
        let rows = st
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX), LOG_WINDOW], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(db_err("read ATC windows"))?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(db_err("read ATC windows"))
    }

    fn atc_window_get(&self, card: &str) -> Result<Option<Vec<u8>>> {
        let seq = self.unfiled.lock().unwrap_or_else(|p| p.into_inner()).seq(LOG_WINDOW, card);
        // A file database reads on a connection of its own: in WAL mode it does not wait for the
        // writer's commit in progress.
        let read = |conn: &Connection| {
            // The log's newest window of the card (found by its `seq`, see `Unfiled`), else the
            // table's.
            conn.prepare_cached(READ_WINDOW)
                .and_then(|mut st| {
                    st.query_row(params![card, LOG_WINDOW, seq], |r| r.get::<_, Vec<u8>>(0)).optional()
                })
                .map_err(db_err("read an ATC window"))
        };
        match &self.reader {
            Some(r) => {
                let conn = r
                    .lock()
                    .map_err(|_| Error::new(ErrorKind::Internal, "store.sqlite", "reader mutex poisoned"))?;
                read(&conn)
            }
            None => {
                let conn = self.conn()?;
                read(&conn)
            }
        }
    }

    fn standin_totals_load(&self) -> Result<Vec<(String, String, crate::records::StandInTotal)>> {
        let conn = self.conn()?;
        let mut st = conn
            .prepare("SELECT issuer, card, total_minor, since_ms FROM standin_total WHERE total_minor > 0")
            .map_err(db_err("read stand-in totals"))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    crate::records::StandInTotal {
                        total_minor: r.get::<_, i64>(2)? as u64,
                        since_ms: r.get::<_, i64>(3)? as u64,
                    },
                ))
            })
            .map_err(db_err("read stand-in totals"))?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(db_err("read stand-in totals"))
    }

    fn standin_expire(&self, before_ms: u64) -> Result<u64> {
        let conn = self.conn()?;
        let n = conn
            .execute("DELETE FROM standin_total WHERE since_ms <= ?1", params![before_ms as i64])
            .map_err(db_err("expire stand-in totals"))?;
        Ok(n as u64)
    }

    fn original_get(&self, key: &str) -> Result<Option<crate::records::OriginalRecord>> {
        let seq = self.unfiled.lock().unwrap_or_else(|p| p.into_inner()).seq(LOG_ORIGINAL, key);
        let conn = self.conn()?;
        // The log's newest record of the key (found by its `seq`, see `Unfiled`), else the table's.
        let mut st = conn.prepare_cached(READ_ORIGINAL).map_err(db_err("read original"))?;
        st.query_row(params![key, LOG_ORIGINAL, seq], |r| {
            Ok(crate::records::OriginalRecord {
                key: r.get(0)?,
                card: r.get(1)?,
                amount_minor: r.get::<_, i64>(2)? as u64,
                currency: r.get(3)?,
                response_code: r.get(4)?,
                issuer: r.get(5)?,
                settled_minor: r.get::<_, i64>(6)? as u64,
                at_ms: r.get::<_, i64>(7)? as u64,
            })
        })
        .optional()
        .map_err(db_err("read original"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u64) -> JournalRow {
        JournalRow {
            at_ms: 1000 + i,
            direction: Direction::AcquirerIn,
            mti: "0100".into(),
            stan: Some(format!("{i:06}")),
            rrn: None,
            terminal_id: Some("TERM0001".into()),
            pan_masked: Some("476173******0011".into()),
            pan_fingerprint: Some("AB".into()),
            amount_minor: Some(1000),
            currency: Some("901".into()),
            response_code: None,
            route: None,
            latency_us: Some(10),
            message_masked: "{}".into(),
            message_packed: None,
        }
    }

    #[test]
    fn journal_batches_round_trip() {
        let s = SqliteStore::in_memory().unwrap();
        let rows: Vec<_> = (0..50).map(row).collect();
        s.journal_append(&rows).unwrap();
        assert_eq!(s.journal_count().unwrap(), 50);
        assert_eq!(s.journal_read(10, 5).unwrap(), rows[10..15].to_vec());
    }

    #[test]
    fn the_background_pass_files_a_long_tail_in_batches_while_another_connection_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let s = SqliteStore::open_without_background(&path).unwrap();
        let n = LOOKUP_BATCH as u64 * 2 + 500;
        let rows: Vec<_> =
            (1..=n).map(|i| JournalRow { pan_fingerprint: Some(format!("F{}", i % 7)), ..row(i) }).collect();
        s.journal_append(&rows).unwrap();
        // A second connection (the checkpointer's) files them while the store's own writes go on:
        // neither side gives up with a busy snapshot.
        let other = background_connection(&path).unwrap();
        let writer = std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                for i in 0..20 {
                    s.journal_append(&[row(n + 1 + i)]).unwrap();
                }
            });
            index_journal(&other).unwrap();
            h.join()
        });
        assert!(writer.is_ok());
        index_journal(&other).unwrap();
        let filed: i64 = other
            .query_row("SELECT last_seq FROM lookup.journal_indexed WHERE one = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(filed as u64, n + 20, "caught up, over several batches");
        let by_card: i64 =
            other.query_row("SELECT COUNT(*) FROM lookup.journal_card", [], |r| r.get(0)).unwrap();
        assert_eq!(by_card as u64, n + 20, "every row with a card fingerprint, once");
    }

    #[test]
    fn the_writer_commits_and_cards_are_looked_up_while_the_look_up_database_is_being_filed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let s = SqliteStore::open(&path).unwrap();
        // Another connection holds the look-up database's write lock (as a long filing batch
        // does) and keeps it for the whole test.
        let filer = Connection::open(lookup_path(&path)).unwrap();
        filer.execute_batch("BEGIN IMMEDIATE; UPDATE journal_indexed SET last_seq = last_seq").unwrap();
        // Neither the commits nor the reads wait for it (the writer's busy handler would give
        // up after about 5 s with an error, failing the test, if they needed that lock).
        let card = |i: u64| JournalRow { pan_fingerprint: Some("FP".into()), ..row(i) };
        for i in 1..=3 {
            let w = crate::records::StateWrites { journal: vec![card(i)], ..Default::default() };
            s.state_commit(&w).unwrap();
        }
        assert_eq!(s.journal_by_card("FP", 10).unwrap().len(), 3, "from the journal's unfiled tail");
        filer.execute_batch("ROLLBACK").unwrap();
        index_journal(&background_connection(&path).unwrap()).unwrap();
        assert_eq!(s.journal_by_card("FP", 10).unwrap().len(), 3, "from the look-up table");
    }

    #[test]
    fn a_look_up_file_filed_from_another_journal_is_emptied_and_never_misleads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let card = |i: u64, fp: &str| JournalRow { pan_fingerprint: Some(fp.into()), ..row(i) };
        {
            let s = SqliteStore::open_without_background(&path).unwrap();
            s.journal_append(&(1..=10).map(|i| card(i, "OLD")).collect::<Vec<_>>()).unwrap();
            s.background_pass().unwrap();
        }
        // The database replaced (restored from an older copy, say) while its look-up file stays.
        for f in ["j.db", "j.db-wal", "j.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let s = SqliteStore::open_without_background(&path).unwrap();
        s.journal_append(&(1..=12).map(|i| card(i, "NEW")).collect::<Vec<_>>()).unwrap();
        let last = scalar(&s, "SELECT last_seq FROM lookup.journal_indexed WHERE one = 1");
        assert_eq!(last, 0, "emptied at open: filed from another journal");
        assert!(s.journal_by_card("OLD", 100).unwrap().is_empty());
        assert_eq!(s.journal_by_card("NEW", 100).unwrap().len(), 12);
        s.background_pass().unwrap();
        assert!(s.journal_by_card("OLD", 100).unwrap().is_empty());
        assert_eq!(s.journal_by_card("NEW", 100).unwrap().len(), 12);
        // Even a stale entry that escaped the check (same seq and time) finds no row of another
        // card: each row's own fingerprint is checked.
        s.conn().unwrap().execute("INSERT INTO lookup.journal_card VALUES ('OLD', 3)", []).unwrap();
        assert!(s.journal_by_card("OLD", 100).unwrap().is_empty());
    }

    #[test]
    fn an_earlier_databases_look_up_tables_leave_it_and_are_filed_again_in_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        {
            let s = SqliteStore::open_without_background(&path).unwrap();
            let rows: Vec<_> =
                (1..=5).map(|i| JournalRow { pan_fingerprint: Some("FP".into()), ..row(i) }).collect();
            s.journal_append(&rows).unwrap();
        }
        {
            // As the look-up tables were kept before: in the database itself, filed.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE journal_card (pan_fingerprint TEXT NOT NULL, seq INTEGER NOT NULL, \
                 PRIMARY KEY (pan_fingerprint, seq)) WITHOUT ROWID; \
                 INSERT INTO journal_card SELECT pan_fingerprint, seq FROM journal; \
                 CREATE TABLE journal_indexed (one INTEGER PRIMARY KEY CHECK (one = 1), last_seq INTEGER NOT NULL); \
                 INSERT INTO journal_indexed VALUES (1, 5);",
            )
            .unwrap();
        }
        let _ = std::fs::remove_file(lookup_path(&path));
        let s = SqliteStore::open_without_background(&path).unwrap();
        let main_tables = scalar(
            &s,
            "SELECT COUNT(*) FROM main.sqlite_master WHERE name IN ('journal_card', 'journal_indexed')",
        );
        assert_eq!(main_tables, 0, "gone from the database");
        assert_eq!(s.journal_by_card("FP", 10).unwrap().len(), 5, "found in the tail meanwhile");
        s.background_pass().unwrap();
        let filed = scalar(&s, "SELECT COUNT(*) FROM lookup.journal_card");
        assert_eq!(filed, 5, "filed again in the look-up database");
        assert_eq!(s.journal_by_card("FP", 10).unwrap().len(), 5);
    }

    #[test]
    fn a_cards_rows_are_found_before_and_after_the_background_pass() {
        let s = SqliteStore::in_memory().unwrap();
        let card = |i: u64, fp: &str| JournalRow { pan_fingerprint: Some(fp.into()), ..row(i) };
        s.journal_append(&[card(1, "AA"), card(2, "BB"), card(3, "AA")]).unwrap();
        let stans = |rows: Vec<JournalRow>| rows.into_iter().filter_map(|r| r.stan).collect::<Vec<_>>();
        // Not indexed yet: found in the tail.
        assert_eq!(stans(s.journal_by_card("AA", 10).unwrap()), ["000001", "000003"]);
        index_journal(&s.conn().unwrap()).unwrap();
        s.journal_append(&[card(4, "AA"), card(5, "CC")]).unwrap();
        // Indexed rows and the newer tail together, oldest first.
        assert_eq!(stans(s.journal_by_card("AA", 10).unwrap()), ["000001", "000003", "000004"]);
        assert_eq!(stans(s.journal_by_card("AA", 2).unwrap()), ["000001", "000003"]);
        index_journal(&s.conn().unwrap()).unwrap();
        assert_eq!(stans(s.journal_by_card("AA", 10).unwrap()), ["000001", "000003", "000004"]);
        assert_eq!(stans(s.journal_by_card("CC", 10).unwrap()), ["000005"]);
        assert!(s.journal_by_card("DD", 10).unwrap().is_empty());
        let n = scalar(&s, "SELECT COUNT(*) FROM lookup.journal_terminal");
        assert_eq!(n, 5, "every row by terminal and STAN too");
        // The hot table has no random-key index left to update on every commit.
        let idx =
            scalar(&s, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'journal'");
        assert_eq!(idx, 0);
    }

    /// A database of the version before stand-in periods: its zero totals (left by resets) go,
    /// the others are kept with their period starting at the upgrade (not at the epoch, which
    /// would expire them all and reopen every card's limit at once).
    #[test]
    fn an_earlier_databases_stand_in_totals_are_upgraded_without_reopening_any_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE standin_total (issuer TEXT NOT NULL, card TEXT NOT NULL, \
                 total_minor INTEGER NOT NULL, PRIMARY KEY (issuer, card)); \
                 INSERT INTO standin_total VALUES ('issuer-a', 'LIVE', 2500), ('issuer-a', 'RESET', 0);",
            )
            .unwrap();
        }
        let before =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let s = SqliteStore::open(&path).unwrap();
        let rows = s.standin_totals_load().unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].1.as_str(), rows[0].2.total_minor), ("LIVE", 2500));
        assert!(rows[0].2.since_ms >= before, "the period starts at the upgrade: {rows:?}");
        let zeros: i64 =
            s.conn().unwrap().query_row("SELECT COUNT(*) FROM standin_total", [], |r| r.get(0)).unwrap();
        assert_eq!(zeros, 1, "the zero total's row is gone");
        drop(s);
        // Opened again: already upgraded, nothing changes.
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.standin_totals_load().unwrap(), rows);
    }

    /// The journal row of an acquirer exchange as the switch builds it (in the form it reads back
    /// in): a chip purchase and its approval, masked, with the card's keyed fingerprint.
    fn exchange_row(i: u64) -> JournalRow {
        use crate::journal::{MessageEntry, message_row};
        let msg = crate::pipeline::tests::purchase((i % 999_999) as u32, 100 + i % 900, (i / 128 + 1) as u16);
        let answer = crate::pipeline::tests::approval(&msg);
        let fingerprint: crate::journal::Fingerprint =
            std::sync::Arc::new(|p: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(p.as_bytes())));
        let entry = MessageEntry {
            msg: &msg,
            response: Some(&answer),
            direction: Direction::AcquirerExchange,
            at_ms: 1_700_000_000_000 + i,
            route: Some("issuer-a"),
            latency_us: Some(900),
        };
        let row = message_row(entry, Some(&fingerprint));
        // As it reads back: the JSON (the packed form it was built with is the stored form).
        JournalRow { message_masked: row.masked_json().into_owned(), message_packed: None, ..row }
    }

    fn original(i: u64, card: &str, settled_minor: u64) -> crate::records::OriginalRecord {
        crate::records::OriginalRecord {
            key: crate::records::original_key(
                "ACQ001",
                "TERM0001",
                "0100",
                &format!("{i:06}"),
                &format!("{i:010}"),
            ),
            card: card.into(),
            amount_minor: 100 + i % 900,
            currency: "978".into(),
            response_code: Some("00".into()),
            issuer: "issuer-a".into(),
            settled_minor,
            at_ms: 1_700_000_000_000 + i,
        }
    }

    fn window(atcs: &[u32]) -> crate::records::AtcWindow {
        let mut w = crate::records::AtcWindow::default();
        for &a in atcs {
            w.accept(a, crate::records::WINDOW).unwrap();
        }
        w
    }

    fn commit(
        s: &SqliteStore,
        originals: &[crate::records::OriginalRecord],
        windows: &[(&str, &crate::records::AtcWindow)],
        journal: &[JournalRow],
    ) {
        let mut w = crate::records::StateWrites::default();
        for o in originals {
            w.originals.insert(o.key.clone(), o.clone());
        }
        for (card, win) in windows {
            w.windows.insert(card.to_string(), (*win).clone());
        }
        w.journal = journal.to_vec();
        s.state_commit(&w).unwrap();
    }

    /// The one integer `sql` gives on the store's connection.
    fn scalar(s: &SqliteStore, sql: &str) -> i64 {
        s.conn().unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn logged(s: &SqliteStore) -> i64 {
        scalar(s, "SELECT COUNT(*) FROM state_log")
    }

    /// Bytes a file database's write-ahead log takes per authorization, as the switch writes
    /// them: per authorization a journal row (the chip request and its approval, masked), its
    /// original (64 terminals) and its card's ATC window (128 cards), five authorizations per group commit,
    /// each commit filing the state log a chunk at a time. Returns the bytes per authorization
    /// the commits wrote, those the journal's look-up tables took in their own database (filed
    /// after the commits, as the background thread does), and the longest backlogs seen after a
    /// commit (state log, journal rows not in the look-up tables), from the logs' sizes (no
    /// checkpoint runs meanwhile: every frame written stays in them).
    fn wal_bytes_per_authorization(n: u64) -> WalFigures {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.db");
        let s = SqliteStore::open_without_background(&path).unwrap();
        let wal = |name: &str| std::fs::metadata(dir.path().join(name)).map(|m| m.len()).unwrap_or(0);
        let mut windows: std::collections::HashMap<String, crate::records::AtcWindow> = Default::default();
        let (mut state_backlog_max, mut journal_backlog_max) = (0, 0);
        let mut writes = crate::records::StateWrites::default();
        for i in 1..=n {
            let card = format!("{:064x}", i % 128);
            let win = windows.entry(card.clone()).or_default();
            win.accept((i / 128 + 1) as u32, crate::records::WINDOW).unwrap();
            writes.windows.insert(card.clone(), win.clone());
            // 64 terminals, as the load generator's: each one's STANs in order.
            let mut o = original(i, &card, 0);
            o.key = crate::records::original_key(
                "ACQ001",
                &format!("LG{:06}", i % 64),
                "0100",
                &format!("{:06}", i / 64),
                &format!("{i:010}"),
            );
            writes.originals.insert(o.key.clone(), o);
            writes.journal.push(exchange_row(i));
            if i % 5 == 0 {
                s.state_commit(&std::mem::take(&mut writes)).unwrap();
                let conn = s.conn().unwrap();
                state_backlog_max = state_backlog_max.max(state_backlog(&conn).unwrap());
                journal_backlog_max = journal_backlog_max.max(journal_backlog(&conn).unwrap());
            }
        }
        let commits = wal("switch.db-wal") as f64 / n as f64;
        index_journal(&s.conn().unwrap()).unwrap();
        let lookup = wal("switch.db-lookup-wal") as f64 / n as f64;
        let filed = journal_backlog(&s.conn().unwrap()).unwrap();
        assert_eq!(filed, 0, "the look-up tables caught up");
        WalFigures { commits, lookup, state_backlog_max, journal_backlog_max }
    }

    struct WalFigures {
        commits: f64,
        lookup: f64,
        state_backlog_max: i64,
        journal_backlog_max: i64,
    }

    /// The figure the store's layout is judged by (printed; `cargo test -p switch --lib
    /// wal_bytes -- --nocapture`): what the group commits sync before their answers leave,
    /// filing of the state log included. With the originals and ATC windows in random-key
    /// tables and the masked JSON as text, the commits wrote 9,886 bytes per authorization; with
    /// the journal's look-up tables filed in the commits, 4,443 (one terminal); over 64
    /// terminals, filing 256 rows at a time 6,729 and 2,048 at a time 4,235. The bound keeps the
    /// layout and the chunk from sliding back. The writer keeps the state log's backlog under a chunk and a commit, and
    /// leaves every journal row to the look-up tables' own database.
    #[test]
    fn wal_bytes_per_authorization_are_reported_and_the_writer_keeps_the_backlog_short() {
        let n = 5_000;
        let f = wal_bytes_per_authorization(n);
        println!(
            "WAL bytes per authorization over {n}: {:.0} in the commits (state log filing included), {:.0} \
             in the look-up tables' own database; longest backlog after a commit: {} rows of state log, {} \
             journal rows not in the look-up tables",
            f.commits, f.lookup, f.state_backlog_max, f.journal_backlog_max
        );
        assert!(f.commits < 5_000.0, "{:.0} bytes per authorization", f.commits);
        assert!(f.lookup > 0.0, "the look-up tables are filed in their own database");
        // Two rows of state log and one journal row per authorization, five per commit.
        assert!(
            f.state_backlog_max > 0 && f.state_backlog_max < FILE_CHUNK + 10,
            "state log backlog {}",
            f.state_backlog_max
        );
        assert_eq!(f.journal_backlog_max as u64, n, "the writer files no look-up row");
    }

    /// What every commit asks of the state log is read at the ends of its key, never by scanning
    /// it (as `MIN` and `MAX` in one `SELECT` did).
    #[test]
    fn the_state_logs_ends_are_searched_not_scanned() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_without_background(&dir.path().join("switch.db")).unwrap();
        for n in 1..=3 {
            commit(&s, &[original(n, "CARD", 0)], &[], &[]);
        }
        let conn = s.conn().unwrap();
        assert_eq!(state_backlog(&conn).unwrap(), 3);
        let (first, last) = state_log_ends(&conn).unwrap().expect("rows in the log");
        assert_eq!(last - first, 2);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {STATE_LOG_ENDS}"))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(plan.iter().any(|p| p.starts_with("SEARCH state_log")), "{plan:?}");
        assert!(!plan.iter().any(|p| p.starts_with("SCAN state_log")), "{plan:?}");
        drop(conn);
        let empty = SqliteStore::open_without_background(&dir.path().join("empty.db")).unwrap();
        assert_eq!(state_backlog(&empty.conn().unwrap()).unwrap(), 0, "an empty log");
    }

    /// A point read takes a key's newest unfiled row by its `seq` (`Unfiled`), never scanning the
    /// log: across the writer's filings, a reopen and the log's never-emptied end, the index
    /// holds exactly the keys the log holds, and reads give the newest version.
    #[test]
    fn the_unfiled_index_finds_a_keys_newest_row_without_scanning_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.db");
        let (a1, a2) = (original(1, "CARD", 0), original(1, "CARD", 40));
        let (w1, w2) = (window(&[5]), window(&[5, 7]));
        let indexed = |s: &SqliteStore| {
            let u = s.unfiled.lock().unwrap();
            (u.windows.len() as i64, u.originals.len() as i64)
        };
        let in_log = |s: &SqliteStore| {
            (
                scalar(s, "SELECT COUNT(DISTINCT key) FROM state_log WHERE kind = 0"),
                scalar(s, "SELECT COUNT(DISTINCT key) FROM state_log WHERE kind = 1"),
            )
        };
        let past_a_chunk = FILE_CHUNK as u64 + 44;
        let others =
            |from: u64| (from..from + past_a_chunk).map(|i| original(i, "OTHER", 0)).collect::<Vec<_>>();
        let s = SqliteStore::open_without_background(&path).unwrap();
        commit(&s, std::slice::from_ref(&a1), &[("CARD", &w1)], &[]);
        assert_eq!(indexed(&s), (1, 1));
        // A commit that takes the log past a chunk files the oldest chunk (a1 and w1 with it).
        commit(&s, &others(10), &[], &[]);
        assert!(logged(&s) < 2 + past_a_chunk as i64, "a chunk filed: {}", logged(&s));
        assert_eq!(indexed(&s), in_log(&s), "the filed keys forgotten, the others kept");
        assert_eq!(s.original_get(&a1.key).unwrap().as_ref(), Some(&a1), "from the table");
        assert_eq!(s.atc_window_get("CARD").unwrap(), Some(w1.to_bytes()));
        commit(&s, std::slice::from_ref(&a2), &[("CARD", &w2)], &[]);
        assert_eq!(s.original_get(&a2.key).unwrap().as_ref(), Some(&a2), "the log's, newer than the table's");
        assert_eq!(s.atc_window_get("CARD").unwrap(), Some(w2.to_bytes()));
        assert_eq!(s.atc_window_get("OTHER").unwrap(), None);
        let plan: Vec<String> = s
            .conn()
            .unwrap()
            .prepare(&format!("EXPLAIN QUERY PLAN {READ_WINDOW}"))
            .unwrap()
            .query_map(params!["CARD", LOG_WINDOW, 7], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!plan.iter().any(|p| p.starts_with("SCAN state_log")), "{plan:?}");
        // The whole log filed: its newest row stays, so `seq`s go on from there.
        s.background_pass().unwrap();
        assert_eq!(logged(&s), 1);
        let newest = scalar(&s, "SELECT MAX(seq) FROM state_log");
        assert_eq!(indexed(&s), in_log(&s));
        drop(s);
        let s = SqliteStore::open_without_background(&path).unwrap();
        assert_eq!(indexed(&s), in_log(&s), "rebuilt from the log on opening");
        assert_eq!(s.original_get(&a2.key).unwrap().as_ref(), Some(&a2));
        let a3 = original(1, "CARD", 90);
        commit(&s, std::slice::from_ref(&a3), &[], &[]);
        assert!(scalar(&s, "SELECT MAX(seq) FROM state_log") > newest, "no seq used twice");
        assert_eq!(s.original_get(&a3.key).unwrap().as_ref(), Some(&a3));
        assert_eq!(s.atc_window_get("CARD").unwrap(), Some(w2.to_bytes()));
    }

    /// The number of times a write-ahead log restarted from its beginning: its header's checkpoint
    /// sequence number (bytes 12..16, big-endian), which each restart increments.
    fn log_restarts(wal: &Path) -> u32 {
        use std::io::Read;
        let mut header = [0u8; 16];
        std::fs::File::open(wal).unwrap().read_exact(&mut header).unwrap();
        u32::from_be_bytes([header[12], header[13], header[14], header[15]])
    }

    /// However often the checkpointer passes (every 20 ms), the log restarts — holding the
    /// writer — at most once in [`RESTART_EVERY`], and the first pass may restart it.
    #[test]
    fn restarts_of_the_log_are_a_quarter_second_apart_at_least() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let mut pace = RestartPace::default();
        let due: Vec<bool> =
            [0, 50, 100, 249, 250, 300, 499, 500, 2_000].iter().map(|&ms| pace.due(at(ms))).collect();
        assert_eq!(due, [true, false, false, false, true, false, false, true, true]);
        let mut pace = RestartPace::default();
        assert!(pace.due(at(100)));
        assert!(!pace.due(at(0)), "a clock read earlier than the last restart is no later than it");
    }

    /// Commits one after the other, as the writer makes them under load: the checkpointer still
    /// restarts the log (a passive checkpoint alone never catches up with them, and the log grew
    /// by every commit), the writer's commits go on around it, and every row is there after.
    #[test]
    fn the_log_restarts_from_its_beginning_under_continuous_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.db");
        let s = SqliteStore::open(&path).unwrap();
        let wal = dir.path().join("switch.db-wal");
        let mut writes = crate::records::StateWrites::default();
        let mut i = 0u64;
        let mut commit_five = |s: &SqliteStore| {
            for _ in 0..5 {
                i += 1;
                let o = original(i, &format!("{:064x}", i % 128), 0);
                writes.originals.insert(o.key.clone(), o);
                writes.journal.push(exchange_row(i));
            }
            s.state_commit(&std::mem::take(&mut writes)).unwrap();
            i
        };
        commit_five(&s);
        let first = log_restarts(&wal);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut rows = 0;
        while log_restarts(&wal) < first + 2 && std::time::Instant::now() < deadline {
            rows = commit_five(&s);
        }
        let restarts = log_restarts(&wal) - first;
        assert!(restarts >= 2, "the log restarted {restarts} times in 30 s of commits ({rows} rows)");
        assert_eq!(s.journal_count().unwrap(), rows, "every committed row is there");
        assert!(
            s.original_get(&original(rows, "", 0).key).unwrap().is_some(),
            "the last original reads back"
        );
    }

    /// Originals and ATC windows read the same — the newest of each — while they are only in
    /// the state log, once the pass filed them into their tables, and after a restart.
    #[test]
    fn logged_state_reads_the_same_before_and_after_the_pass_and_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.db");
        let s = SqliteStore::init(Connection::open(&path).unwrap()).unwrap();
        let (a1, a2, b) = (original(1, "CARD", 0), original(1, "CARD", 40), original(2, "CARD", 0));
        let (w1, w2) = (window(&[5]), window(&[5, 7]));
        commit(&s, std::slice::from_ref(&a1), &[("CARD", &w1)], &[]);
        commit(&s, &[a2.clone(), b.clone()], &[("CARD", &w2)], &[]);
        let check = |s: &SqliteStore, a: &crate::records::OriginalRecord, w: &crate::records::AtcWindow| {
            assert_eq!(s.original_get(&a.key).unwrap().as_ref(), Some(a));
            assert_eq!(s.original_get(&b.key).unwrap().as_ref(), Some(&b));
            assert_eq!(s.original_get("ACQ001|TERM0001|0100|000009|0000000009").unwrap(), None);
            assert_eq!(s.atc_window_get("CARD").unwrap(), Some(w.to_bytes()));
            assert_eq!(s.atc_window_get("OTHER").unwrap(), None);
            assert_eq!(s.atc_windows_load(10).unwrap(), vec![("CARD".to_string(), w.to_bytes())]);
        };
        assert_eq!(logged(&s), 5, "appended, not yet filed");
        check(&s, &a2, &w2);
        fold_state(&s.conn().unwrap()).unwrap();
        assert_eq!(logged(&s), 1, "filed, the log down to its newest row");
        check(&s, &a2, &w2);
        // A newer version in the log wins over the table's.
        let (a3, w3) = (original(1, "CARD", 100), window(&[5, 7, 9]));
        commit(&s, std::slice::from_ref(&a3), &[("CARD", &w3)], &[]);
        check(&s, &a3, &w3);
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        check(&s, &a3, &w3);
        fold_state(&s.conn().unwrap()).unwrap();
        check(&s, &a3, &w3);
        // An in-memory store files each commit's state at once.
        let m = SqliteStore::in_memory().unwrap();
        commit(&m, &[a1, a3.clone(), b.clone()], &[("CARD", &w3)], &[]);
        assert_eq!(logged(&m), 1);
        check(&m, &a3, &w3);
    }

    /// A database of the layout before the state log and the compact masked messages (the
    /// originals and ATC windows written in place, the journal's messages as JSON text) opens
    /// and keeps working: its rows read as they were, new ones are written the new way beside
    /// them, and every reader gives the same text for both.
    #[test]
    fn an_earlier_layouts_database_opens_and_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.db");
        let old_row = exchange_row(1);
        let old_original = original(1, "CARD", 0);
        let old_window = window(&[3]);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, \
                 direction TEXT NOT NULL, mti TEXT NOT NULL, stan TEXT, rrn TEXT, terminal_id TEXT, \
                 pan_masked TEXT, pan_fingerprint TEXT, amount_minor INTEGER, currency TEXT, \
                 response_code TEXT, route TEXT, latency_us INTEGER, message_masked TEXT NOT NULL); \
                 CREATE TABLE atc_window (card TEXT PRIMARY KEY, window BLOB NOT NULL); \
                 CREATE TABLE original (key TEXT PRIMARY KEY, card TEXT NOT NULL, amount_minor INTEGER NOT NULL, \
                 currency TEXT NOT NULL, response_code TEXT, issuer TEXT NOT NULL, \
                 settled_minor INTEGER NOT NULL, at_ms INTEGER NOT NULL);",
            )
            .unwrap();
            let r = &old_row;
            conn.execute(
                "INSERT INTO journal (at_ms, direction, mti, stan, rrn, terminal_id, pan_masked, pan_fingerprint, \
                 amount_minor, currency, response_code, route, latency_us, message_masked) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    r.at_ms as i64,
                    r.direction.as_str(),
                    r.mti,
                    r.stan,
                    r.rrn,
                    r.terminal_id,
                    r.pan_masked,
                    r.pan_fingerprint,
                    r.amount_minor.map(|a| a as i64),
                    r.currency,
                    r.response_code,
                    r.route,
                    r.latency_us.map(|l| l as i64),
                    r.message_masked
                ],
            )
            .unwrap();
            let o = &old_original;
            conn.execute(
                "INSERT INTO original VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    o.key,
                    o.card,
                    o.amount_minor as i64,
                    o.currency,
                    o.response_code,
                    o.issuer,
                    0,
                    o.at_ms as i64
                ],
            )
            .unwrap();
            conn.execute("INSERT INTO atc_window VALUES ('CARD', ?1)", params![old_window.to_bytes()])
                .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        for table in ["atc_window", "original"] {
            let sql: String = s
                .conn()
                .unwrap()
                .query_row("SELECT sql FROM sqlite_master WHERE name = ?1", [table], |r| r.get(0))
                .unwrap();
            assert!(sql.ends_with("WITHOUT ROWID"), "{table} keyed by its key alone: {sql}");
        }
        assert_eq!(s.journal_read(0, 10).unwrap(), vec![old_row.clone()]);
        assert_eq!(s.original_get(&old_original.key).unwrap(), Some(old_original.clone()));
        assert_eq!(s.atc_window_get("CARD").unwrap(), Some(old_window.to_bytes()));
        assert_eq!(s.atc_windows_load(10).unwrap(), vec![("CARD".to_string(), old_window.to_bytes())]);
        // New state beside the old: the original settled, the window moved on, a new row.
        let settled = original(1, "CARD", 50);
        let newer = window(&[3, 4]);
        let new_row = exchange_row(2);
        commit(&s, std::slice::from_ref(&settled), &[("CARD", &newer)], std::slice::from_ref(&new_row));
        let stored: String = s
            .conn()
            .unwrap()
            .query_row("SELECT typeof(message_masked) FROM journal ORDER BY seq DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stored, "blob", "the new row's message is in the compact form");
        let both = vec![old_row.clone(), new_row.clone()];
        let reads = |s: &SqliteStore| {
            assert_eq!(s.journal_read(0, 10).unwrap(), both);
            assert_eq!(s.journal_count().unwrap(), 2);
            let card = old_row.pan_fingerprint.as_deref().unwrap();
            assert_eq!(s.journal_by_card(card, 10).unwrap(), both);
            assert_eq!(s.original_get(&settled.key).unwrap(), Some(settled.clone()));
            assert_eq!(s.atc_window_get("CARD").unwrap(), Some(newer.to_bytes()));
            assert_eq!(s.atc_windows_load(10).unwrap(), vec![("CARD".to_string(), newer.to_bytes())]);
        };
        reads(&s);
        fold_state(&s.conn().unwrap()).unwrap();
        index_journal(&s.conn().unwrap()).unwrap();
        reads(&s);
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        reads(&s);
    }

    #[test]
    fn saf_lifecycle_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.db");
        let id = {
            let s = SqliteStore::open(&path).unwrap();
            let e = NewSafEntry {
                kind: SafKind::Reversal,
                link: "issuer-a",
                original_key: "TERM0001:000001:1125101010",
                sealed: b"sealed",
                now_ms: 100,
            };
            let id = s.saf_put(e.clone()).unwrap();
            assert_eq!(s.saf_put(e).unwrap(), id, "same original enqueued twice is one entry");
            s.saf_reschedule(id, 1, 5000).unwrap();
            id
        };
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.saf_pending(None).unwrap(), 1);
        assert!(s.saf_due("issuer-a", 4999, 10).unwrap().is_empty());
        let due = s.saf_due("issuer-a", 5000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].id, due[0].attempts, due[0].kind), (id, 1, SafKind::Reversal));
        assert!(s.saf_due("issuer-b", 9999, 10).unwrap().is_empty());
        s.saf_done(id).unwrap();
        s.saf_done(id).unwrap();
        assert_eq!(s.saf_pending(Some("issuer-a")).unwrap(), 0);
    }
}
