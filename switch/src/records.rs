//! What the decision state records and commits (see `state`): each card's ATC window, the
//! originals that reversals and advices are matched against, and the writes of one commit — kept
//! apart from the state book so that the store can take them without knowing the book.

use std::collections::HashMap;

use crate::journal::JournalRow;

/// ATCs remembered below the highest one accepted, by default (an issuer may set its own, up to
/// the whole 16-bit ATC space: `atc_window` in its config).
pub const WINDOW: u32 = 256;
/// The largest window: every ATC a card can have.
pub const MAX_WINDOW: u32 = 65_536;

/// One card's ATC window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AtcWindow {
    /// The highest ATC accepted, when any was.
    pub highest: Option<u32>,
    /// Bit `i % 64` of word `i / 64` set: ATC `highest - 1 - i` was accepted. Grows as needed.
    pub below: Vec<u64>,
}

/// Why an ATC was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// This ATC was accepted before.
    Repeated,
    /// The ATC is further below the highest accepted than the window reaches.
    TooOld,
    /// The card's window could not be read from the store: refused rather than accepted against
    /// a blank window.
    Unavailable,
}

impl AtcWindow {
    fn bit(&self, d: u32) -> bool {
        let i = (d - 1) as usize;
        self.below.get(i / 64).is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    fn set(&mut self, d: u32) {
        let i = (d - 1) as usize;
        if self.below.len() <= i / 64 {
            self.below.resize(i / 64 + 1, 0);
        }
        self.below[i / 64] |= 1u64 << (i % 64);
    }

    /// Every distance grows by `by`; what falls beyond `width` is forgotten.
    fn shift(&mut self, by: u32, width: u32) {
        let words = (width as usize).div_ceil(64);
        if by >= width || self.below.is_empty() {
            self.below.clear();
            return;
        }
        let (ws, bs) = ((by / 64) as usize, by % 64);
        let old = std::mem::take(&mut self.below);
        let mut out = vec![0u64; (old.len() + ws + 1).min(words)];
        for (i, w) in old.iter().enumerate() {
            let j = i + ws;
            if j < out.len() {
                out[j] |= w << bs;
            }
            if bs != 0 && j + 1 < out.len() {
                out[j + 1] |= w >> (64 - bs);
            }
        }
        while out.last() == Some(&0) {
            out.pop();
        }
        self.below = out;
    }

    /// Accepts `atc` once within a window of `width` ATCs below the highest: marks it, or says
    /// why not.
    pub fn accept(&mut self, atc: u32, width: u32) -> std::result::Result<(), Replay> {
        let width = width.clamp(64, MAX_WINDOW);
        let Some(h) = self.highest else {
            self.highest = Some(atc);
            return Ok(());
        };
        if atc > h {
            self.shift(atc - h, width);
            if atc - h <= width {
                self.set(atc - h);
            }
            self.highest = Some(atc);
            return Ok(());
        }
        let d = h - atc;
        if d == 0 {
            return Err(Replay::Repeated);
        }
        if d > width {
            return Err(Replay::TooOld);
        }
        if self.bit(d) {
            return Err(Replay::Repeated);
        }
        self.set(d);
        Ok(())
    }

    /// The stored form: highest (4 bytes, big-endian; nothing when empty) ‖ the bitmap's words.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + 8 * self.below.len());
        if let Some(h) = self.highest {
            v.extend_from_slice(&h.to_be_bytes());
            for w in &self.below {
                v.extend_from_slice(&w.to_be_bytes());
            }
        }
        v
    }

    pub fn from_bytes(b: &[u8]) -> Option<AtcWindow> {
        if b.is_empty() {
            return Some(AtcWindow::default());
        }
        if b.len() < 4 || !(b.len() - 4).is_multiple_of(8) || b.len() > 4 + (MAX_WINDOW as usize) / 8 {
            return None;
        }
        let highest = Some(u32::from_be_bytes(b[..4].try_into().ok()?));
        let below = b[4..]
            .chunks_exact(8)
            .map(|c| c.try_into().map(u64::from_be_bytes))
            .collect::<Result<_, _>>()
            .ok()?;
        Some(AtcWindow { highest, below })
    }
}

/// What the switch remembers of a transaction it answered or forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRecord {
    /// [`original_key`] of the transaction.
    pub key: String,
    /// Keyed fingerprint of the card (the PAN as the acquirer sent it: a token stays a token).
    pub card: String,
    pub amount_minor: u64,
    pub currency: String,
    /// DE 39 answered; `None` while forwarded and not yet answered (a crash leaves it so, and a
    /// reversal of it is then passed to the issuer, who knows).
    pub response_code: Option<String>,
    /// The issuer it went to.
    pub issuer: String,
    /// Amount reversed so far (reversals) or advised (advices) against it.
    pub settled_minor: u64,
    pub at_ms: u64,
}

/// The key of a transaction: acquirer ID | TID | MTI | STAN | DE 7.
pub fn original_key(acquirer: &str, tid: &str, mti: &str, stan: &str, transmitted: &str) -> String {
    let parts = [acquirer, tid.trim_end(), mti, stan, transmitted];
    let mut key = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            key.push('|');
        }
        key.push_str(part);
    }
    key
}

/// A card's ATC claimed in the shared store: over several nodes, the local window only knows what
/// its own node accepted, so the commit before forwarding also claims the ATC in the database,
/// where one conditional insert lets exactly one node have it. The claim's outcome is set before
/// the commit is reported durable.
#[derive(Debug, Clone)]
pub struct AtcClaim {
    pub card: String,
    pub atc: u32,
    /// The issuer's window: a claim more than this far below a claimed ATC is too old.
    pub width: u32,
    pub at_ms: u64,
    /// Set by the state writer: whether the claim was refused (another node has the ATC).
    pub lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A transmission (acquirer, terminal, MTI, STAN, DE 7) claimed in the shared store before it is
/// forwarded: the node whose claim wins forwards it; a node whose claim loses has a
/// retransmission of what another node took, and answers with that node's answer.
#[derive(Debug, Clone)]
pub struct TransmissionClaim {
    pub key: String,
    /// Keyed digest of the card, amount and currency: a retransmission must match it.
    pub content: String,
    pub at_ms: u64,
    pub lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A card's running stand-in total with one issuer, and when its stand-in period began (the first
/// approval since the last reset or expiry): once the period is over, the total is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandInTotal {
    pub total_minor: u64,
    pub since_ms: u64,
}

/// What a commit decided beyond being durable.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Indexes into [`StateWrites::claims`] of the claims refused.
    pub lost: Vec<usize>,
    /// Indexes into [`StateWrites::transmissions`] of the claims refused.
    pub lost_transmissions: Vec<usize>,
}

/// Everything changed since the last commit.
#[derive(Default)]
pub struct StateWrites {
    pub windows: HashMap<String, AtcWindow>,
    /// (issuer, card) → total; `None`: the total is gone (reset or expired), its row deleted.
    pub totals: HashMap<(String, String), Option<StandInTotal>>,
    pub originals: Originals,
    /// ATCs to claim in a shared store (empty with a store of one node's own).
    pub claims: Vec<AtcClaim>,
    /// Transmissions to claim in a shared store.
    pub transmissions: Vec<TransmissionClaim>,
    /// The answers (as encoded for the acquirer) of claimed transmissions, by key, for a
    /// retransmission that reaches another node.
    pub answers: Vec<(String, Vec<u8>)>,
    /// Journal rows, oldest first, committed in the same transaction.
    pub journal: Vec<JournalRow>,
}

impl StateWrites {
    pub(crate) fn is_empty(&self) -> bool {
        self.windows.is_empty()
            && self.totals.is_empty()
            && self.originals.is_empty()
            && self.claims.is_empty()
            && self.transmissions.is_empty()
            && self.answers.is_empty()
            && self.journal.is_empty()
    }

    pub(crate) fn merge_under(&mut self, mut older: StateWrites) {
        older.journal.append(&mut self.journal);
        self.journal = older.journal;
        older.claims.append(&mut self.claims);
        self.claims = older.claims;
        older.transmissions.append(&mut self.transmissions);
        self.transmissions = older.transmissions;
        older.answers.append(&mut self.answers);
        self.answers = older.answers;
        for (k, v) in older.windows {
            self.windows.entry(k).or_insert(v);
        }
        for (k, v) in older.totals {
            self.totals.entry(k).or_insert(v);
        }
        let mine = std::sync::Arc::make_mut(&mut self.originals.0);
        for (k, v) in older.originals.into_map() {
            mine.entry(k).or_insert(v);
        }
    }
}

/// The originals of one commit, by key: shared, not copied, with the readers that look for them
/// while that commit is in progress (a clone is a reference; a change to a shared set copies it
/// first).
#[derive(Default, Clone)]
pub struct Originals(std::sync::Arc<HashMap<String, OriginalRecord>>);

impl Originals {
    /// Records `record` under `key` (the newest version of a transaction wins).
    pub fn insert(&mut self, key: String, record: OriginalRecord) {
        std::sync::Arc::make_mut(&mut self.0).insert(key, record);
    }

    /// The records, by key (copied only if the set is still shared).
    pub fn into_map(self) -> HashMap<String, OriginalRecord> {
        std::sync::Arc::unwrap_or_clone(self.0)
    }
}

impl std::ops::Deref for Originals {
    type Target = HashMap<String, OriginalRecord>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_original_key_is_its_parts_between_bars_the_tid_trimmed() {
        // Keys are stored: this form is what every store already holds.
        assert_eq!(
            original_key("400001", "TERM0001", "0100", "000123", "1205101010"),
            "400001|TERM0001|0100|000123|1205101010"
        );
        assert_eq!(original_key("400001", "TERM1   ", "0200", "1", ""), "400001|TERM1|0200|1|");
        assert_eq!(original_key("", "", "", "", ""), "||||");
    }
}
