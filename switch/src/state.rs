//! The switch's durable decision state: what it must remember across a restart to stay safe.
//!
//! - **ATC windows** per card and per token (keyed by the keyed PAN fingerprint, never the PAN):
//!   the highest ATC accepted plus a bitmap of the [`WINDOW`] ATCs below it, so a cryptogram is
//!   accepted once whatever order the card's ATCs arrive in, and one older than the window is
//!   refused. In memory they are a bounded cache of the store's table ([`StateBounds`]): only a
//!   window the store already has is evicted (the least recently used first), and it is read back
//!   when its card comes again.
//! - **Stand-in totals** per issuer and card, until the issuer has the advices or the stand-in
//!   period is over ([`StateBounds`]): at most `max_cards` at once (stand-in for another card is
//!   then declined, never a live total evicted), each gone once its period ends (the writer prunes
//!   the expired ones from memory and from the store).
//! - **Originals**: every authorization the switch answered or forwarded (and every reversal or
//!   advice it accepted), by acquirer, terminal, MTI, STAN and DE 7, so that a reversal or advice
//!   is accepted only against an original of the same acquirer and terminal, for no more than its
//!   amount, and once.
//!
//! The pipeline changes this state in memory (under short per-shard locks, so two requests with
//! the same ATC cannot both pass) and marks what changed; [`StateBook::sync`] returns once every
//! change made so far is committed to the store, by a writer thread that commits whatever has
//! accumulated in one transaction (group commit). The shell syncs before a request is forwarded
//! and before an answer leaves, so nothing a terminal was told, and nothing an issuer saw, is
//! forgotten by a crash.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::journal::{Fingerprint, JournalRow, MessageEntry};
use crate::metrics::Metrics;
pub use crate::records::{
    AtcWindow, MAX_WINDOW, OriginalRecord, Replay, StandInTotal, StateWrites, WINDOW, original_key,
};
use crate::store::Store;

const SHARDS: usize = 64;

/// An ATC claimed in a shared store; read it after [`StateBook::sync`] returned.
#[derive(Debug, Clone)]
pub struct Claim {
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl Claim {
    /// Whether another node had the ATC first (valid once the commit is durable).
    pub fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Cheap to clone; one per connection task.
#[derive(Clone)]
pub struct JournalHandle {
    book: Arc<StateBook>,
}

impl JournalHandle {
    pub(crate) fn new(book: Arc<StateBook>) -> Self {
        JournalHandle { book }
    }

    /// Queues a row for the next commit; false when the store has refused so many rows that
    /// no more are taken (see [`MAX_PENDING_JOURNAL`]).
    pub fn record(&self, row: JournalRow) -> bool {
        self.book.record_journal(row)
    }

    /// Queues a message's row, built here (masked, fingerprinted, packed) rather than by the
    /// writer: a commit's length is what every request waits for, twice, and the threads that
    /// answer build their rows side by side. At 25,000/s (`paynet serve`, six pairs) p50 4.36
    /// → 4.10 ms for the same CPU.
    pub fn record_message(&self, entry: MessageEntry<'_>) -> bool {
        let fingerprint = self.book.journal.get().map(|h| &h.fingerprint);
        self.book.record_journal(crate::journal::message_row(entry, fingerprint))
    }

    /// Resolves once every row queued before the call is durable.
    pub async fn durable(&self) -> crate::Result<()> {
        self.book.sync().await
    }
}

struct Dirty {
    writes: StateWrites,
    /// The originals of the commit in progress, until it is durable (or put back): a reversal read
    /// meanwhile finds them here rather than an older version in the store.
    committing: crate::records::Originals,
    /// Incremented by every change.
    generation: u64,
}

/// What journal rows are built with (the PAN fingerprint) and counted in.
struct JournalHooks {
    fingerprint: Fingerprint,
    metrics: Arc<Metrics>,
}

/// The shortest time between the starts of two commits unless `[store] group_commit_us` says
/// otherwise: everything that changes within it is committed together, with one sync of the
/// disk. 1 ms: at 10,000/s the load bench's p99 is 22 ms with it against 79 ms with 400 µs
/// (fewer, larger commits write fewer log pages).
pub const DEFAULT_GROUP_COMMIT: Duration = Duration::from_micros(1000);

/// Journal rows waiting beyond this many (the store refusing them) hold their senders back:
/// a request is then not answered rather than answered without its row.
pub const MAX_PENDING_JOURNAL: usize = 200_000;

/// How much decision state the book holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBounds {
    /// Cards (per issuer) with a running stand-in total at once (`[stand_in] max_cards`).
    pub max_cards: usize,
    /// How long a stand-in total counts from its first approval (`[stand_in] period_s`).
    pub period_ms: u64,
    /// ATC windows kept in memory: a cache of the store's `atc_window` table, from which a card's
    /// window is read again when it is needed after it was evicted (`[store] atc_windows`,
    /// [`DEFAULT_ATC_WINDOWS`] by default).
    pub atc_windows: usize,
    /// The shortest time between the starts of two commits (`[store] group_commit_us`,
    /// [`DEFAULT_GROUP_COMMIT`] by default).
    pub group_commit: Duration,
}

/// ATC windows kept in memory unless `[store] atc_windows` says otherwise: at about 200 bytes each (fingerprint, window of 256
/// ATCs, map entry), about 50 MiB.
pub const DEFAULT_ATC_WINDOWS: usize = 262_144;

impl Default for StateBounds {
    fn default() -> Self {
        let c = crate::config::StandInStateConfig::default();
        StateBounds {
            max_cards: c.max_cards,
            period_ms: c.period_s.saturating_mul(1000),
            atc_windows: DEFAULT_ATC_WINDOWS,
            group_commit: DEFAULT_GROUP_COMMIT,
        }
    }
}

/// A card's window in memory.
struct Cached {
    window: AtcWindow,
    /// The change ([`Dirty::generation`]) that last wrote it: once the writer has committed it,
    /// the store has this window, and it may be evicted.
    changed: u64,
    /// The shard's tick of its last use (the least recently used go first).
    used: u64,
}

/// One shard of the ATC window cache.
struct Shard {
    map: HashMap<String, Cached>,
    /// Every window of the store whose card hashes to this shard is in `map` (nothing was evicted
    /// or left out at load): a card missing from `map` has no window, without asking the store.
    complete: bool,
    tick: u64,
}

impl Shard {
    /// Evicts the least recently used windows the store already has, down to 7/8 of `max`.
    fn evict(&mut self, max: usize, committed: u64) {
        if self.map.len() <= max {
            return;
        }
        let target = max - max / 8;
        let mut durable: Vec<(u64, String)> = self
            .map
            .iter()
            .filter(|(_, c)| c.changed <= committed)
            .map(|(k, c)| (c.used, k.clone()))
            .collect();
        let n = (self.map.len() - target).min(durable.len());
        if n == 0 {
            return;
        }
        if n < durable.len() {
            durable.select_nth_unstable(n - 1);
        }
        for (_, k) in durable.into_iter().take(n) {
            self.map.remove(&k);
        }
        self.complete = false;
    }
}

/// How often the writer forgets the expired stand-in totals, in memory and in the store.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);

/// When stand-in finds the totals full, it sweeps the expired ones first, at most this often
/// (a flood of new cards then costs one sweep per interval, not one per request).
const FULL_SWEEP_EVERY_MS: u64 = 1_000;

/// The running stand-in totals, bounded in number and age.
struct Totals {
    map: HashMap<(String, String), StandInTotal>,
    bounds: StateBounds,
    last_sweep_ms: u64,
}

impl Totals {
    fn live(&self, t: &StandInTotal, now_ms: u64) -> bool {
        now_ms < t.since_ms.saturating_add(self.bounds.period_ms)
    }

    /// Forgets the expired totals; their keys.
    fn sweep(&mut self, now_ms: u64) -> Vec<(String, String)> {
        self.last_sweep_ms = now_ms;
        let period = self.bounds.period_ms;
        let gone: Vec<_> = self
            .map
            .iter()
            .filter(|(_, t)| now_ms >= t.since_ms.saturating_add(period))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.map.remove(k);
        }
        gone
    }

    /// Whether a total for a card not held yet may be started (after sweeping the expired
    /// ones when full, at most every [`FULL_SWEEP_EVERY_MS`]); the keys swept, when a sweep ran.
    fn room(&mut self, now_ms: u64) -> (bool, Option<Vec<(String, String)>>) {
        let mut swept = None;
        if self.map.len() >= self.bounds.max_cards
            && now_ms >= self.last_sweep_ms.saturating_add(FULL_SWEEP_EVERY_MS)
        {
            swept = Some(self.sweep(now_ms));
        }
        (self.map.len() < self.bounds.max_cards, swept)
    }
}

pub struct StateBook {
    windows: Vec<Mutex<Shard>>,
    /// Windows per shard before the least recently used durable ones are evicted.
    shard_windows: usize,
    hasher: RandomState,
    totals: Mutex<Totals>,
    clock: Arc<dyn Clock>,
    dirty: Mutex<Dirty>,
    doorbell: std::sync::mpsc::SyncSender<()>,
    committed: watch::Receiver<u64>,
    store: Arc<dyn Store>,
    /// How long [`StateBook::sync`] waits, in ms.
    sync_timeout_ms: std::sync::atomic::AtomicU64,
    journal: std::sync::OnceLock<JournalHooks>,
    /// False from a failed commit until the next one succeeds.
    healthy: std::sync::atomic::AtomicBool,
    /// The store is shared with other nodes: ATCs are claimed in it.
    shared: bool,
}

/// The writer thread; [`StateWriter::finish`] (or dropping the book's last handle) ends it after
/// a final commit.
pub struct StateWriter {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl StateWriter {
    /// Commits what is left and stops the writer.
    pub fn finish(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl StateBook {
    /// Loads the windows and totals from `store` and starts the writer, with the default stand-in
    /// bounds and the system clock.
    pub fn open(store: Arc<dyn Store>) -> Result<(Arc<StateBook>, StateWriter)> {
        Self::open_with(store, StateBounds::default(), Arc::new(SystemClock))
    }

    /// Loads the windows and the live stand-in totals (those whose period is not over by `clock`)
    /// from `store` and starts the writer. Every live total is loaded, even beyond
    /// `bounds.max_cards` (a lowered bound): forgetting one would reopen its card's limit; new
    /// cards are then refused until the totals drain.
    pub fn open_with(
        store: Arc<dyn Store>,
        bounds: StateBounds,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<StateBook>, StateWriter)> {
        let hasher = RandomState::new();
        // The windows, up to the cache's size: when the table holds more, the rest are read from
        // the store when their cards come.
        let limit = bounds.atc_windows.max(1);
        let rows = store.atc_windows_load(limit as u64 + 1)?;
        let complete = rows.len() <= limit;
        let mut windows: Vec<Shard> =
            (0..SHARDS).map(|_| Shard { map: HashMap::new(), complete, tick: 0 }).collect();
        for (card, bytes) in rows.into_iter().take(limit) {
            let w = AtcWindow::from_bytes(&bytes).ok_or_else(|| {
                Error::new(
                    ErrorKind::Store,
                    "state",
                    "an ATC window row is malformed (4 bytes and 8-byte words)",
                )
            })?;
            let i = (hasher.hash_one(&card) as usize) % SHARDS;
            windows[i].map.insert(card, Cached { window: w, changed: 0, used: 0 });
        }
        let now = clock.now_ms();
        let mut totals = Totals { map: HashMap::new(), bounds, last_sweep_ms: now };
        for (issuer, card, t) in store.standin_totals_load()? {
            if totals.live(&t, now) {
                totals.map.insert((issuer, card), t);
            }
        }
        let (tx, committed) = watch::channel(0u64);
        let (doorbell, ring) = std::sync::mpsc::sync_channel::<()>(1);
        let book = Arc::new(StateBook {
            windows: windows.into_iter().map(Mutex::new).collect(),
            shard_windows: (bounds.atc_windows / SHARDS).max(1),
            hasher,
            totals: Mutex::new(totals),
            clock,
            dirty: Mutex::new(Dirty {
                writes: StateWrites::default(),
                committing: Default::default(),
                generation: 0,
            }),
            doorbell,
            committed,
            store: store.clone(),
            sync_timeout_ms: std::sync::atomic::AtomicU64::new(5_000),
            journal: std::sync::OnceLock::new(),
            healthy: std::sync::atomic::AtomicBool::new(true),
            shared: store.shared(),
        });
        let weak = Arc::downgrade(&book);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer(weak, ring, tx, store, stopping, bounds.group_commit))
            .map_err(|e| Error::new(ErrorKind::Internal, "state", format!("cannot start the writer: {e}")))?;
        Ok((book, StateWriter { thread: Some(thread), stop }))
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A poisoned lock only means another thread panicked mid-update; the maps stay sound.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a change for the next commit; its generation.
    fn changed(&self, f: impl FnOnce(&mut StateWrites)) -> u64 {
        let mut d = Self::lock(&self.dirty);
        f(&mut d.writes);
        d.generation += 1;
        let generation = d.generation;
        drop(d);
        let _ = self.doorbell.try_send(());
        generation
    }

    /// Makes this book the journal's writer too: rows get their PAN fingerprint from
    /// `fingerprint` and are counted in `metrics`. Call once, before traffic.
    pub fn journal(self: &Arc<Self>, fingerprint: Fingerprint, metrics: Arc<Metrics>) -> JournalHandle {
        let _ = self.journal.set(JournalHooks { fingerprint, metrics });
        JournalHandle::new(self.clone())
    }

    /// Queues a journal entry, committed with the next group; `false` (nothing queued) while the
    /// store has refused so many that more would only pile up in memory.
    pub fn record_journal(&self, row: JournalRow) -> bool {
        let mut d = Self::lock(&self.dirty);
        if d.writes.journal.len() >= MAX_PENDING_JOURNAL {
            return false;
        }
        d.writes.journal.push(row);
        d.generation += 1;
        drop(d);
        let _ = self.doorbell.try_send(());
        true
    }

    /// How long [`StateBook::sync`] waits for a commit before it reports failure.
    pub fn set_commit_timeout(&self, t: Duration) {
        self.sync_timeout_ms.store(t.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the last commit succeeded: while the store refuses commits, new authorizations
    /// are answered 96 and nothing is forwarded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Accepts `atc` for `card` (a keyed fingerprint) once, within `width` ATCs below its highest.
    /// Over a shared store the node's window is only its own view: the ATC is also claimed in the
    /// store with the next commit, and the returned claim (`None` with a store of one node's own)
    /// says after [`StateBook::sync`] whether another node had it first.
    pub fn accept_atc(
        &self,
        card: &str,
        atc: u32,
        width: u32,
        now_ms: u64,
    ) -> std::result::Result<Option<Claim>, Replay> {
        let i = (self.hasher.hash_one(card) as usize) % SHARDS;
        let mut shard = Self::lock(&self.windows[i]);
        shard.tick += 1;
        let tick = shard.tick;
        let fresh = !shard.map.contains_key(card);
        if fresh {
            // Evicted (or never loaded): the store has the card's window. Over a shared store the
            // node's window is only its own view (the claims decide): a blank one will do.
            let window =
                if shard.complete || self.shared { AtcWindow::default() } else { self.stored_window(card)? };
            shard.map.insert(card.to_string(), Cached { window, changed: 0, used: tick });
        }
        let Some(c) = shard.map.get_mut(card) else { return Err(Replay::Unavailable) };
        c.used = tick;
        if let Err(why) = c.window.accept(atc, width) {
            // Refused: the window is unchanged (still what the store has), and a new one in memory
            // counts against the bound like any other.
            if fresh {
                shard.evict(self.shard_windows, *self.committed.borrow());
            }
            return Err(why);
        }
        let snapshot = c.window.clone();
        let claim = self.shared.then(|| Claim { lost: Arc::new(std::sync::atomic::AtomicBool::new(false)) });
        // Under the shard's lock: the window's generation is the one that commits this snapshot.
        let generation = self.changed(|d| {
            d.windows.insert(card.to_string(), snapshot);
            if let Some(c) = &claim {
                d.claims.push(crate::records::AtcClaim {
                    card: card.to_string(),
                    atc,
                    width: width.clamp(64, MAX_WINDOW),
                    at_ms: now_ms,
                    lost: c.lost.clone(),
                });
            }
        });
        if let Some(c) = shard.map.get_mut(card) {
            c.changed = generation;
        }
        if fresh {
            shard.evict(self.shard_windows, *self.committed.borrow());
        }
        Ok(claim)
    }

    /// A card's window read back from the store (a blocking point read, only for a card whose
    /// window was evicted); a store that cannot say refuses the ATC rather than accept it against
    /// a blank window.
    fn stored_window(&self, card: &str) -> std::result::Result<AtcWindow, Replay> {
        match self.store.atc_window_get(card) {
            Ok(None) => Ok(AtcWindow::default()),
            Ok(Some(bytes)) => AtcWindow::from_bytes(&bytes).ok_or_else(|| {
                tracing::error!("an ATC window row is malformed: the ATC is refused");
                Replay::Unavailable
            }),
            Err(e) => {
                tracing::error!(error = %e, "ATC window not read from the store: the ATC is refused");
                Err(Replay::Unavailable)
            }
        }
    }

    /// ATC windows held in memory.
    pub fn atc_windows_held(&self) -> usize {
        self.windows.iter().map(|s| Self::lock(s).map.len()).sum()
    }

    /// Claims a transmission in a shared store with the next commit (`None` with a store of one
    /// node's own, whose duplicate cache is enough): after [`StateBook::sync`], a lost claim means
    /// another node has the same transmission.
    pub fn claim_transmission(&self, key: impl FnOnce() -> (String, String), now_ms: u64) -> Option<Claim> {
        if !self.shared {
            return None;
        }
        let (key, content) = key();
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.changed(|d| {
            d.transmissions.push(crate::records::TransmissionClaim {
                key,
                content,
                at_ms: now_ms,
                lost: lost.clone(),
            })
        });
        Some(Claim { lost })
    }

    /// Records the answer of a transmission claimed here, committed with the next group, so that
    /// a retransmission reaching another node gets it.
    pub fn record_answer(&self, key: String, answer: &[u8]) {
        if self.shared {
            let answer = answer.to_vec();
            self.changed(|d| d.answers.push((key, answer)));
        }
    }

    /// A transmission claimed in the shared store (blocking: call it off the runtime).
    pub fn transmission(&self, key: &str) -> Result<Option<(String, Option<Vec<u8>>)>> {
        self.store.transmission_get(key)
    }

    /// Whether the store is shared with other nodes.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Adds `amount` to the card's stand-in total with `issuer` when the result stays within
    /// `max`; returns whether it did. A total whose period is over starts again; a card without a
    /// total gets one only while fewer than `max_cards` are held (else refused, and counted).
    /// Over a shared store the database decides, with every node's approvals counted (a blocking
    /// call, on the stand-in path only: the issuer is unreachable); a store error refuses.
    pub fn add_stand_in(&self, issuer: &str, card: &str, amount: u64, max: u64) -> bool {
        let now = self.clock.now_ms();
        let key = (issuer.to_string(), card.to_string());
        let mut totals = Self::lock(&self.totals);
        let held = totals.map.get(&key).copied();
        if held.is_none() {
            let (room, swept) = totals.room(now);
            if let Some(gone) = &swept
                && !gone.is_empty()
                && !self.shared
            {
                self.changed(|d| d.totals.extend(gone.iter().map(|k| (k.clone(), None))));
            }
            if !room {
                drop(totals);
                // Logged at most once per sweep interval; every refusal is counted.
                if swept.is_some() {
                    tracing::warn!(issuer, "stand-in totals full: stand-in for new cards refused");
                }
                if let Some(h) = self.journal.get() {
                    h.metrics.stand_in_full.with_label_values(&[issuer]).inc();
                }
                return false;
            }
        }
        if self.shared {
            // The database decides, without holding the totals during the round trip (stand-in
            // for other cards goes on meanwhile; concurrent new cards may pass the bound by as
            // many as are in that round trip at once).
            let period = totals.bounds.period_ms;
            drop(totals);
            return match self.store.standin_add(issuer, card, amount, max, now, period) {
                Ok(Some(t)) => {
                    Self::lock(&self.totals).map.insert(key, t);
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::error!(error = %e, "stand-in total not updated: stand-in refused");
                    false
                }
            };
        }
        let current =
            held.filter(|t| totals.live(t, now)).unwrap_or(StandInTotal { total_minor: 0, since_ms: now });
        let Some(sum) = current.total_minor.checked_add(amount).filter(|n| *n <= max) else { return false };
        let new = StandInTotal { total_minor: sum, ..current };
        totals.map.insert(key.clone(), new);
        drop(totals);
        self.changed(|d| {
            d.totals.insert(key, Some(new));
        });
        true
    }

    /// The issuer has the advices: its cards' stand-in totals are gone (from memory and from
    /// the store), and start again from nothing.
    pub fn reset_stand_in(&self, issuer: &str) {
        if self.shared {
            if let Err(e) = self.store.standin_reset(issuer) {
                tracing::error!(error = %e, "stand-in totals not reset; kept until the next advices");
            }
            Self::lock(&self.totals).map.retain(|(i, _), _| i != issuer);
            return;
        }
        let mut totals = Self::lock(&self.totals);
        let keys: Vec<_> = totals.map.keys().filter(|(i, _)| i == issuer).cloned().collect();
        for k in &keys {
            totals.map.remove(k);
        }
        drop(totals);
        if !keys.is_empty() {
            self.changed(|d| d.totals.extend(keys.into_iter().map(|k| (k, None))));
        }
    }

    /// Forgets the stand-in totals whose period is over, in memory and in the store; how many
    /// were in memory. The writer calls it every 30 s (blocking: the store is asked).
    pub fn expire_stand_in(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        let mut totals = Self::lock(&self.totals);
        let before = now.saturating_sub(totals.bounds.period_ms);
        let gone = totals.sweep(now).len();
        drop(totals);
        self.store.standin_expire(before)?;
        Ok(gone)
    }

    /// A card's running stand-in total with `issuer` (0 once its period is over).
    pub fn stand_in_total(&self, issuer: &str, card: &str) -> u64 {
        let now = self.clock.now_ms();
        let totals = Self::lock(&self.totals);
        totals
            .map
            .get(&(issuer.to_string(), card.to_string()))
            .filter(|t| totals.live(t, now))
            .map_or(0, |t| t.total_minor)
    }

    /// Cards' stand-in totals held in memory (every issuer), expired ones not yet swept included.
    pub fn stand_in_cards(&self) -> usize {
        Self::lock(&self.totals).map.len()
    }

    /// Records (or updates) a transaction: committed with the next group, read back from the
    /// writes not yet committed or from the store (a reversal or advice is rare; an in-memory copy
    /// of every authorization's record cost each one more than all the reads it saved).
    pub fn record_original(&self, rec: OriginalRecord) {
        self.changed(|d| {
            d.originals.insert(rec.key.clone(), rec);
        });
    }

    /// A transaction, from the writes not yet committed or else from the store (blocking: call it
    /// off the runtime). Over a shared store another node may have settled it since: after this
    /// node's own uncommitted changes, the store has the last word.
    pub fn original(&self, key: &str) -> Result<Option<OriginalRecord>> {
        {
            let d = Self::lock(&self.dirty);
            if let Some(r) = d.writes.originals.get(key).or_else(|| d.committing.get(key)) {
                return Ok(Some(r.clone()));
            }
        }
        self.store.original_get(key)
    }

    /// Resolves once every change made before the call is committed to the store.
    pub async fn sync(&self) -> Result<()> {
        let target = Self::lock(&self.dirty).generation;
        let mut rx = self.committed.clone();
        if *rx.borrow() >= target {
            return Ok(());
        }
        let _ = self.doorbell.try_send(());
        let timeout = Duration::from_millis(self.sync_timeout_ms.load(std::sync::atomic::Ordering::Relaxed));
        match tokio::time::timeout(timeout, rx.wait_for(|c| *c >= target)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::new(ErrorKind::Store, "state", "the state writer has stopped")),
            Err(_) => Err(Error::new(ErrorKind::Store, "state", "the state was not made durable in time")),
        }
    }

    /// What changed since the last commit, journal rows included.
    fn take(&self) -> (StateWrites, u64) {
        let mut d = Self::lock(&self.dirty);
        let writes = std::mem::take(&mut d.writes);
        d.committing = writes.originals.clone();
        (writes, d.generation)
    }

    /// `writes` committed in `took` (from the commit's start to durable).
    fn committed_ok(&self, writes: &StateWrites, outcome: &crate::records::CommitOutcome, took: Duration) {
        for &i in &outcome.lost {
            if let Some(c) = writes.claims.get(i) {
                c.lost.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        for &i in &outcome.lost_transmissions {
            if let Some(c) = writes.transmissions.get(i) {
                c.lost.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        if let Some(h) = self.journal.get() {
            h.metrics.journal_rows.inc_by(writes.journal.len() as u64);
            h.metrics.store_commit.observe(took.as_secs_f64());
        }
        Self::lock(&self.dirty).committing = Default::default();
        self.healthy.store(true, std::sync::atomic::Ordering::Release);
    }

    fn commit_failed(&self) {
        if let Some(h) = self.journal.get() {
            h.metrics.journal_errors.inc();
        }
        self.healthy.store(false, std::sync::atomic::Ordering::Release);
    }

    fn put_back(&self, writes: StateWrites) {
        let mut d = Self::lock(&self.dirty);
        // Let go of the commit's originals first: merging then takes them without a copy.
        d.committing = Default::default();
        d.writes.merge_under(writes);
    }
}

fn writer(
    book: std::sync::Weak<StateBook>,
    ring: std::sync::mpsc::Receiver<()>,
    committed: watch::Sender<u64>,
    store: Arc<dyn Store>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    group_window: Duration,
) {
    let mut backoff = Duration::from_millis(10);
    let mut last_commit = std::time::Instant::now() - group_window;
    let mut last_expire = std::time::Instant::now();
    loop {
        // Woken by a change, or every 100 ms to notice a stop or that the book is gone.
        let rung = ring.recv_timeout(Duration::from_millis(100));
        // Under load, commits start at most every `group_window`: what arrives meanwhile shares
        // the next one's sync. An idle book commits at once.
        if let Some(wait) = group_window.checked_sub(last_commit.elapsed()) {
            std::thread::sleep(wait);
        }
        last_commit = std::time::Instant::now();
        let stopping = stop.load(std::sync::atomic::Ordering::Acquire);
        let Some(book) = book.upgrade() else { return };
        if matches!(rung, Err(std::sync::mpsc::RecvTimeoutError::Disconnected)) {
            return;
        }
        if !stopping && last_expire.elapsed() >= EXPIRE_EVERY {
            last_expire = std::time::Instant::now();
            if let Err(e) = book.expire_stand_in() {
                tracing::warn!(error = %e, "expired stand-in totals not pruned from the store; retried");
            }
        }
        let (writes, generation) = book.take();
        if stopping {
            let started = std::time::Instant::now();
            match (!writes.is_empty()).then(|| store.state_commit(&writes)) {
                Some(Err(e)) => {
                    tracing::error!(error = %e, "final state commit failed");
                    book.put_back(writes);
                }
                Some(Ok(outcome)) => {
                    book.committed_ok(&writes, &outcome, started.elapsed());
                    committed.send_replace(generation);
                }
                None => {
                    committed.send_replace(generation);
                }
            }
            return;
        }
        if writes.is_empty() {
            committed.send_if_modified(|c| {
                let up = *c < generation;
                *c = (*c).max(generation);
                up
            });
            continue;
        }
        let started = std::time::Instant::now();
        match store.state_commit(&writes) {
            Ok(outcome) => {
                backoff = Duration::from_millis(10);
                book.committed_ok(&writes, &outcome, started.elapsed());
                committed.send_replace(generation);
            }
            Err(e) => {
                tracing::error!(error = %e, rows = writes.journal.len(), "commit failed; kept and retried");
                book.commit_failed();
                book.put_back(writes);
                drop(book);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

impl Drop for StateBook {
    fn drop(&mut self) {
        // The last handle: commit what is left (the writer cannot upgrade any more).
        let (writes, _) = self.take();
        if !writes.is_empty()
            && let Err(e) = self.store.state_commit(&writes)
        {
            tracing::error!(error = %e, "final state commit failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_each_atc_once_in_any_order() {
        let mut w = AtcWindow::default();
        let w_accept = |w: &mut AtcWindow, a| w.accept(a, WINDOW);
        assert_eq!(w_accept(&mut w, 10), Ok(()));
        assert_eq!(w_accept(&mut w, 10), Err(Replay::Repeated));
        assert_eq!(w_accept(&mut w, 7), Ok(()));
        assert_eq!(w_accept(&mut w, 7), Err(Replay::Repeated));
        assert_eq!(w_accept(&mut w, 12), Ok(()));
        assert_eq!(w_accept(&mut w, 10), Err(Replay::Repeated), "kept across the shift");
        assert_eq!(w_accept(&mut w, 7), Err(Replay::Repeated));
        assert_eq!(w_accept(&mut w, 11), Ok(()));
        assert_eq!(w_accept(&mut w, 8), Ok(()));
        assert_eq!(w_accept(&mut w, 12 + WINDOW + 1), Ok(()));
        assert_eq!(w_accept(&mut w, 12), Err(Replay::TooOld));
        assert_eq!(w_accept(&mut w, 13), Ok(()), "exactly WINDOW below is still inside");
        assert_eq!(w_accept(&mut w, 13), Err(Replay::Repeated));
        assert_eq!(w_accept(&mut w, 0), Err(Replay::TooOld));
        let back = AtcWindow::from_bytes(&w.to_bytes()).expect("round trip");
        assert_eq!(back, w);
        assert_eq!(AtcWindow::from_bytes(&[]), Some(AtcWindow::default()));
        assert_eq!(AtcWindow::from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn window_matches_a_set_model() {
        for width in [64, WINDOW, 1_000, MAX_WINDOW] {
            set_model(width);
        }
    }

    /// Against a plain set with the same "too old" rule, over a pseudo-random ATC sequence.
    fn set_model(width: u32) {
        const WINDOW: u32 = 0;
        let _ = WINDOW;
        let mut w = AtcWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut x = 12345u32;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let atc = (x >> 8) % 3_000;
            let highest = seen.iter().next_back().copied();
            let expect = match highest {
                Some(h) if atc + width < h => Err(Replay::TooOld),
                _ if seen.contains(&atc) => Err(Replay::Repeated),
                _ => Ok(()),
            };
            let got = w.accept(atc, width);
            assert_eq!(got, expect, "width {width}, atc {atc}, highest {highest:?}");
            if got.is_ok() {
                seen.insert(atc);
            }
        }
    }
}

#[cfg(test)]
mod journal_tests {
    //! The journal's rows through the state book's writer.
    use super::*;
    use crate::journal::{Direction, JournalRow};
    use crate::metrics::Metrics;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;

    fn row(i: u64) -> JournalRow {
        JournalRow {
            at_ms: i,
            direction: Direction::AcquirerOut,
            mti: "0110".into(),
            stan: Some(format!("{i:06}")),
            rrn: None,
            terminal_id: None,
            pan_masked: None,
            pan_fingerprint: None,
            amount_minor: None,
            currency: None,
            response_code: Some("00".into()),
            route: None,
            latency_us: None,
            message_masked: "{}".into(),
            message_packed: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_row_is_durable_in_order_when_durable_returns() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let (book, writer) = StateBook::open(store.clone()).unwrap();
        let metrics = Arc::new(Metrics::new("t"));
        let handle = book.journal(Arc::new(|p: &str| p.len().to_string()), metrics.clone());
        let senders: Vec<_> = (0..4u64)
            .map(|t| {
                let h = handle.clone();
                tokio::spawn(async move {
                    for i in 0..500 {
                        assert!(h.record(row(t * 1000 + i)));
                        if i % 50 == 0 {
                            h.durable().await.unwrap();
                        }
                    }
                    h.durable().await.unwrap();
                })
            })
            .collect();
        for s in senders {
            s.await.unwrap();
        }
        // Durable means in the store now, not after the writer stops.
        assert_eq!(store.journal_count().unwrap(), 2000);
        assert_eq!(metrics.journal_rows.get(), 2000);
        let rows = store.journal_read(0, 2000).unwrap();
        let mine: Vec<u64> = rows.iter().map(|r| r.at_ms).filter(|a| *a < 1000).collect();
        assert_eq!(mine, (0..500).collect::<Vec<_>>(), "per sender, rows keep their order");
        drop(handle);
        drop(book);
        writer.finish();
    }
}

#[cfg(test)]
mod stand_in_tests {
    //! The stand-in totals: bounded in number and in age, in memory and in the store.
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::sqlite::SqliteStore;

    const T0: u64 = 1_795_000_000_000;
    const PERIOD: u64 = 3_600_000;

    fn book(
        store: &Arc<SqliteStore>,
        clock: &Arc<ManualClock>,
        max_cards: usize,
    ) -> (Arc<StateBook>, StateWriter, Arc<Metrics>) {
        let bounds = StateBounds { max_cards, period_ms: PERIOD, ..StateBounds::default() };
        let (book, writer) = StateBook::open_with(store.clone(), bounds, clock.clone()).expect("book");
        let metrics = Arc::new(Metrics::new("t"));
        let _ = book.journal(Arc::new(|p: &str| p.len().to_string()), metrics.clone());
        (book, writer, metrics)
    }

    fn stored(store: &SqliteStore) -> Vec<(String, String, StandInTotal)> {
        let mut rows = store.standin_totals_load().expect("load");
        rows.sort_by(|a, b| a.1.cmp(&b.1));
        rows
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_distinct_cards_stays_at_the_cap_and_is_refused_not_evicted() {
        let store = Arc::new(SqliteStore::in_memory().expect("store"));
        let clock = Arc::new(ManualClock(AtomicU64::new(T0)));
        let (book, writer, metrics) = book(&store, &clock, 100);
        for i in 0..100 {
            assert!(book.add_stand_in("issuer-a", &format!("CARD{i}"), 1_000, 5_000), "card {i}");
        }
        let refused =
            (100..10_000).filter(|i| !book.add_stand_in("issuer-a", &format!("CARD{i}"), 1_000, 5_000));
        assert_eq!(refused.count(), 9_900, "every new card beyond the cap is refused");
        assert_eq!(book.stand_in_cards(), 100);
        assert_eq!(metrics.stand_in_full.with_label_values(&["issuer-a"]).get(), 9_900);
        // The cards held keep their totals (none was evicted to make room) and their limits.
        assert_eq!(book.stand_in_total("issuer-a", "CARD0"), 1_000);
        assert!(book.add_stand_in("issuer-a", "CARD0", 4_000, 5_000), "a held card goes on to its limit");
        assert!(!book.add_stand_in("issuer-a", "CARD0", 1, 5_000), "and not beyond");
        assert_eq!(
            metrics.stand_in_full.with_label_values(&["issuer-a"]).get(),
            9_900,
            "over the limit is not 'full'"
        );
        book.sync().await.expect("durable");
        assert_eq!(stored(&store).len(), 100, "the table holds the cards held, no more");

        // The issuer has the advices: its totals are deleted (not kept as zeros), and there is room.
        book.reset_stand_in("issuer-a");
        book.sync().await.expect("durable");
        assert_eq!(book.stand_in_cards(), 0);
        assert!(stored(&store).is_empty(), "a reset deletes the rows");
        assert!(book.add_stand_in("issuer-a", "CARD5000", 1_000, 5_000));
        drop(book);
        writer.finish();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_total_is_gone_once_its_period_is_over() {
        let store = Arc::new(SqliteStore::in_memory().expect("store"));
        let clock = Arc::new(ManualClock(AtomicU64::new(T0)));
        let (book, writer, metrics) = book(&store, &clock, 2);
        assert!(book.add_stand_in("issuer-a", "OLD", 5_000, 5_000));
        clock.0.store(T0 + PERIOD / 2, Ordering::Release);
        assert!(book.add_stand_in("issuer-a", "NEW", 1_000, 5_000));
        assert!(!book.add_stand_in("issuer-a", "OLD", 1, 5_000), "within its period the limit holds");
        book.sync().await.expect("durable");

        // OLD's period is over: its total is gone, in memory and, once expired, in the table.
        clock.0.store(T0 + PERIOD, Ordering::Release);
        assert_eq!(book.stand_in_total("issuer-a", "OLD"), 0);
        assert_eq!(book.stand_in_total("issuer-a", "NEW"), 1_000);
        assert_eq!(book.expire_stand_in().expect("expire"), 1);
        assert_eq!(book.stand_in_cards(), 1);
        let rows = stored(&store);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].1, "NEW");

        // Full with live totals only; an expired one makes room when a new card comes.
        assert!(book.add_stand_in("issuer-a", "THIRD", 1_000, 5_000));
        assert!(!book.add_stand_in("issuer-a", "FOURTH", 1_000, 5_000), "two live totals: full");
        assert_eq!(metrics.stand_in_full.with_label_values(&["issuer-a"]).get(), 1);
        clock.0.store(T0 + PERIOD / 2 + PERIOD, Ordering::Release);
        assert!(book.add_stand_in("issuer-a", "FOURTH", 1_000, 5_000), "NEW expired: room again");
        // A held total whose period is over starts again from the amount.
        clock.0.store(T0 + 3 * PERIOD, Ordering::Release);
        assert!(book.add_stand_in("issuer-a", "FOURTH", 5_000, 5_000));
        assert_eq!(book.stand_in_total("issuer-a", "FOURTH"), 5_000);
        book.sync().await.expect("durable");
        let rows = stored(&store);
        let fourth = rows.iter().find(|r| r.1 == "FOURTH").expect("FOURTH stored");
        assert_eq!(fourth.2, StandInTotal { total_minor: 5_000, since_ms: T0 + 3 * PERIOD });
        drop(book);
        writer.finish();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_reloads_only_the_live_totals() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("switch.db");
        let clock = Arc::new(ManualClock(AtomicU64::new(T0)));
        {
            let store = Arc::new(SqliteStore::open(&path).expect("store"));
            let (book, writer, _) = book(&store, &clock, 10);
            assert!(book.add_stand_in("issuer-a", "EXPIRING", 3_000, 5_000));
            clock.0.store(T0 + PERIOD / 2, Ordering::Release);
            assert!(book.add_stand_in("issuer-a", "LIVE", 2_000, 5_000));
            assert!(book.add_stand_in("issuer-b", "RESET", 2_000, 5_000));
            book.reset_stand_in("issuer-b");
            book.sync().await.expect("durable");
            drop(book);
            writer.finish();
        }
        clock.0.store(T0 + PERIOD, Ordering::Release);
        let store = Arc::new(SqliteStore::open(&path).expect("store"));
        let (book, writer, _) = book(&store, &clock, 10);
        assert_eq!(book.stand_in_cards(), 1, "the expired total and the reset one are not loaded");
        assert_eq!(book.stand_in_total("issuer-a", "LIVE"), 2_000);
        assert!(!book.add_stand_in("issuer-a", "LIVE", 3_001, 5_000), "the reloaded total still counts");
        assert!(book.add_stand_in("issuer-a", "EXPIRING", 5_000, 5_000), "a new period");
        drop(book);
        writer.finish();
    }
}

#[cfg(test)]
mod window_cache_tests {
    //! The ATC windows in memory: a bounded cache of the store's table.
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::sqlite::SqliteStore;

    fn bounds(atc_windows: usize) -> StateBounds {
        StateBounds { atc_windows, ..StateBounds::default() }
    }

    fn open(store: &Arc<SqliteStore>, atc_windows: usize) -> (Arc<StateBook>, StateWriter) {
        let clock = Arc::new(ManualClock(std::sync::atomic::AtomicU64::new(1_795_000_000_000)));
        StateBook::open_with(store.clone(), bounds(atc_windows), clock).expect("book")
    }

    fn cached(book: &StateBook, card: &str) -> bool {
        let i = (book.hasher.hash_one(card) as usize) % SHARDS;
        StateBook::lock(&book.windows[i]).map.contains_key(card)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_cards_stays_bounded_and_an_evicted_window_still_refuses_its_replays() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Arc::new(SqliteStore::open(&dir.path().join("s.db")).expect("store"));
        let (book, writer) = open(&store, 640);
        assert!(book.accept_atc("CARD0", 100, WINDOW, 0).expect("first").is_none(), "one node's store");
        assert_eq!(book.accept_atc("CARD0", 98, WINDOW, 0).map(|_| ()), Ok(()));
        for i in 1..10_000 {
            book.accept_atc(&format!("CARD{i}"), 1, WINDOW, 0).expect("a new card's first ATC");
            if i % 50 == 0 {
                book.sync().await.expect("durable");
                // At most the windows not yet durable (50) beyond the bound.
                assert!(book.atc_windows_held() <= 640 + 50, "{} held", book.atc_windows_held());
            }
        }
        assert!(!cached(&book, "CARD0"), "the least recently used window was evicted");
        // Read back from the store: its ATCs are still spent, and the window still reaches back.
        assert_eq!(book.accept_atc("CARD0", 100, WINDOW, 0).map(|_| ()), Err(Replay::Repeated));
        assert!(cached(&book, "CARD0"));
        assert_eq!(book.accept_atc("CARD0", 98, WINDOW, 0).map(|_| ()), Err(Replay::Repeated));
        assert_eq!(book.accept_atc("CARD0", 99, WINDOW, 0).map(|_| ()), Ok(()));
        assert_eq!(book.accept_atc("CARD0", 1_000, WINDOW, 0).map(|_| ()), Ok(()));
        assert_eq!(book.accept_atc("CARD0", 101, WINDOW, 0).map(|_| ()), Err(Replay::TooOld));
        drop(book);
        writer.finish();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_loads_up_to_the_bound_and_reads_the_rest_when_their_cards_come() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.db");
        {
            let store = Arc::new(SqliteStore::open(&path).expect("store"));
            let (book, writer) = open(&store, DEFAULT_ATC_WINDOWS);
            for i in 0..500 {
                book.accept_atc(&format!("CARD{i}"), 5, WINDOW, 0).expect("first ATC");
            }
            book.sync().await.expect("durable");
            drop(book);
            writer.finish();
        }
        let store = Arc::new(SqliteStore::open(&path).expect("store"));
        let (book, writer) = open(&store, 128);
        assert_eq!(book.atc_windows_held(), 128, "loaded up to the bound");
        for i in 0..500 {
            let card = format!("CARD{i}");
            assert_eq!(book.accept_atc(&card, 5, WINDOW, 0).map(|_| ()), Err(Replay::Repeated), "{card}");
        }
        assert!(book.atc_windows_held() <= 128 + 64, "replays read back count against the bound too");
        assert!(book.accept_atc("NEWCARD", 5, WINDOW, 0).is_ok(), "a card the store has no window of");
        drop(book);
        writer.finish();
    }

    #[test]
    fn only_windows_the_store_has_are_evicted() {
        let mut shard = Shard { map: HashMap::new(), complete: true, tick: 0 };
        for i in 0..16u64 {
            let w = AtcWindow { highest: Some(i as u32), below: Vec::new() };
            // Cards 0..8 committed by generation 8; 8..16 changed after it, not yet durable.
            shard.map.insert(format!("C{i}"), Cached { window: w, changed: i + 1, used: 100 - i });
        }
        shard.evict(4, 8);
        assert!(!shard.complete);
        assert_eq!(shard.map.len(), 8, "the durable ones went, the others stay whatever the bound");
        assert!((8..16).all(|i| shard.map.contains_key(&format!("C{i}"))));
        // Once durable, the least recently used go first, down to 7/8 of the bound.
        let mut shard = Shard { map: shard.map, complete: false, tick: 0 };
        shard.evict(4, u64::MAX);
        let mut left: Vec<_> = shard.map.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["C10", "C11", "C8", "C9"], "the four least recently used went");
    }
}
