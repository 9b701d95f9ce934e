//! Persistent state behind one small trait: the journal, the store-and-forward queue and the
//! decision state (the token vault has its own store, in the `tsp` crate).
//!
//! The embedded default is SQLite ([`sqlite::SqliteStore`]); a PostgreSQL backend implements the
//! same trait for several switch nodes sharing one database. Calls are synchronous: the switch runs
//! them on a blocking thread (the journal writer, SAF workers), never on the hot path.
//! Nothing stored here holds a clear PAN: journal rows carry a masked PAN and a keyed fingerprint,
//! SAF entries carry their message sealed (see `seal`).

pub mod postgres;
pub mod postgres_tokens;
pub mod sqlite;

use crate::error::Result;
pub use crate::journal::{Direction, JournalRow};

/// What a store-and-forward entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafKind {
    /// A reversal advice (0420) owed to an issuer.
    Reversal,
    /// An advice (0120) of a stand-in approval owed to an issuer.
    Advice,
    /// A token service notification (0620) owed to an issuer.
    Notification,
}

impl SafKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SafKind::Reversal => "reversal",
            SafKind::Advice => "advice",
            SafKind::Notification => "notification",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reversal" => Some(SafKind::Reversal),
            "notification" => Some(SafKind::Notification),
            "advice" => Some(SafKind::Advice),
            _ => None,
        }
    }
}

/// A message owed to an issuer, persisted until the issuer acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafEntry {
    pub id: i64,
    pub kind: SafKind,
    /// The issuer link it goes to.
    pub link: String,
    /// What it refers to (terminal ID + STAN + transmission time of the original), for matching
    /// and for de-duplication: one entry per original and kind.
    pub original_key: String,
    /// The message, sealed.
    pub sealed: Vec<u8>,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    pub created_ms: u64,
}

/// A new SAF entry, before it has an id.
#[derive(Debug, Clone)]
pub struct NewSafEntry<'a> {
    pub kind: SafKind,
    pub link: &'a str,
    pub original_key: &'a str,
    pub sealed: &'a [u8],
    pub now_ms: u64,
}

/// The persistent store.
pub trait Store: Send + Sync + 'static {
    /// Appends journal rows in one transaction.
    fn journal_append(&self, rows: &[JournalRow]) -> Result<()>;

    /// Number of journal rows (for operations and tests).
    fn journal_count(&self) -> Result<u64>;

    /// One card's journal rows (by keyed PAN fingerprint), oldest first (operations).
    fn journal_by_card(&self, fingerprint: &str, limit: u32) -> Result<Vec<JournalRow>>;

    /// Reads journal rows in insertion order (operations and tests; not on the hot path).
    fn journal_read(&self, offset: u64, limit: u32) -> Result<Vec<JournalRow>>;

    /// Enqueues an entry, due at once. Returns the id; an entry for the same original and kind
    /// that is still pending is kept and its id returned (idempotent).
    fn saf_put(&self, entry: NewSafEntry<'_>) -> Result<i64>;

    /// Entries for `link` due at or before `now_ms`, oldest first.
    fn saf_due(&self, link: &str, now_ms: u64, limit: u32) -> Result<Vec<SafEntry>>;

    /// Records a failed attempt and when to try again.
    fn saf_reschedule(&self, id: i64, attempts: u32, next_attempt_ms: u64) -> Result<()>;

    /// Removes an acknowledged entry. Removing an absent entry is not an error.
    fn saf_done(&self, id: i64) -> Result<()>;

    /// Moves an entry that cannot be delivered (it does not open or decode) out of the queue,
    /// kept with `reason` for the operator; the rest of the queue goes on.
    fn saf_quarantine(&self, id: i64, reason: &str, now_ms: u64) -> Result<()>;

    /// Entries of `link` in quarantine.
    fn saf_quarantined(&self, link: &str) -> Result<u64>;

    /// Pending entries, for `link` or for all links.
    fn saf_pending(&self, link: Option<&str>) -> Result<u64>;

    /// Commits the decision state changed since the last commit (ATC windows, stand-in totals,
    /// originals; see `state`) in one transaction, with its ATC claims decided (a store of one
    /// node has none).
    fn state_commit(&self, writes: &crate::records::StateWrites) -> Result<crate::records::CommitOutcome>;

    /// Cards' ATC windows, at most `limit`: (card fingerprint, stored window).
    fn atc_windows_load(&self, limit: u64) -> Result<Vec<(String, Vec<u8>)>>;

    /// One card's stored ATC window (the state book reads it back after evicting it from memory).
    fn atc_window_get(&self, card: &str) -> Result<Option<Vec<u8>>>;

    /// Every stand-in total: (issuer, card fingerprint, total and the start of its period).
    fn standin_totals_load(&self) -> Result<Vec<(String, String, crate::records::StandInTotal)>>;

    /// Deletes the stand-in totals whose period began at or before `before_ms` (now less the
    /// period: they are over); returns how many.
    fn standin_expire(&self, before_ms: u64) -> Result<u64>;

    /// One original transaction by its key.
    fn original_get(&self, key: &str) -> Result<Option<crate::records::OriginalRecord>>;

    /// A claimed transmission: its content digest and, once its node answered, the answer.
    /// A store of one node keeps none (its duplicate cache is in memory).
    fn transmission_get(&self, key: &str) -> Result<Option<(String, Option<Vec<u8>>)>> {
        let _ = key;
        Ok(None)
    }

    /// Over a shared store: adds `amount` to the card's stand-in total with `issuer` when the
    /// result stays within `max`, in one conditional statement (every node's approvals count);
    /// a total whose period (`period_ms` from its start) is over by `now_ms` starts again at
    /// `now_ms`. The new total, or `None` when it would exceed `max`. A store of one node leaves
    /// the totals to its state book's commits.
    fn standin_add(
        &self,
        issuer: &str,
        card: &str,
        amount: u64,
        max: u64,
        now_ms: u64,
        period_ms: u64,
    ) -> Result<Option<crate::records::StandInTotal>> {
        let _ = (issuer, card, amount, max, now_ms, period_ms);
        Ok(None)
    }

    /// Over a shared store: the issuer has the advices, its cards' totals are deleted.
    fn standin_reset(&self, issuer: &str) -> Result<()> {
        let _ = issuer;
        Ok(())
    }

    /// Whether several nodes share this store: the decision state is then decided in it
    /// (ATC claims), not in one node's memory alone.
    fn shared(&self) -> bool {
        false
    }
}
