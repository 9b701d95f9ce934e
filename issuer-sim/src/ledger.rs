//! The ledger: credit lines and the bookings against them.
//!
//! Every approved authorization or cash advance books its amount against the account's open-to-buy
//! under the identity of the original transmission. Reversals (full or partial, as an ATM that
//! dispensed part of the cash sends) release what was not used; advices of stand-in approvals book
//! what the network already approved. Every operation is idempotent on the original's identity, so
//! a repeated reversal or advice — store-and-forward retries one until it is acknowledged — never
//! moves money twice. Amounts are integer minor units; an account has one currency.

use std::collections::{HashMap, VecDeque};

/// Identity of an original transaction: terminal ID, STAN and transmission date-time, as the text
/// `TID|STAN|DE 7`.
///
/// Held inline (26 bytes for the elements' fixed lengths): the ledger keeps a key twice per
/// booking (its map and its expiry order) for up to [`MAX_BOOKINGS`] bookings, and a key on the
/// heap would be two allocations per authorization and memory that grows while the ledger fills.
/// A longer text (another element specification) is kept on the heap; a text is always kept the
/// same way, so two keys are equal exactly when their texts are.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OriginalKey(KeyText);

#[derive(Clone, PartialEq, Eq, Hash)]
enum KeyText {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Long(Box<str>),
}

/// The longest key text held inline.
const INLINE_KEY: usize = 30;

impl OriginalKey {
    /// The key `terminal|stan|transmitted_at`.
    pub fn new(terminal: &str, stan: &str, transmitted_at: &str) -> Self {
        Self::joined(&[terminal, stan, transmitted_at])
    }

    /// A key from its text (as [`OriginalKey::as_str`] gave it).
    pub fn from_text(text: &str) -> Self {
        Self::joined(&[text])
    }

    /// The key whose text is `parts` joined by `|`: inline when it fits.
    fn joined(parts: &[&str]) -> Self {
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + parts.len().saturating_sub(1);
        if len > INLINE_KEY {
            return OriginalKey(KeyText::Long(parts.join("|").into()));
        }
        let mut bytes = [0u8; INLINE_KEY];
        let mut at = 0;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                bytes[at] = b'|';
                at += 1;
            }
            bytes[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
        }
        OriginalKey(KeyText::Inline { len: len as u8, bytes })
    }

    /// The key's text, `TID|STAN|DE 7`.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only whole `&str`s and ASCII '|' are ever copied in, so the bytes are UTF-8.
            KeyText::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            KeyText::Long(s) => s,
        }
    }
}

/// Keys order as their texts do.
impl Ord for OriginalKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for OriginalKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for OriginalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OriginalKey").field(&self.as_str()).finish()
    }
}

/// An account's index in the ledger (the simulator maps card → account elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Blocked,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub status: AccountStatus,
    /// ISO 4217 numeric.
    pub currency: u16,
    pub credit_limit_minor: u64,
    /// Booked and not released.
    pub outstanding_minor: u64,
}

impl Account {
    pub fn open_to_buy(&self) -> u64 {
        self.credit_limit_minor.saturating_sub(self.outstanding_minor)
    }
}

/// Why the ledger refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("no such account")]
    NoAccount,
    #[error("account is not active")]
    NotActive,
    #[error("currency differs from the account's")]
    Currency,
    #[error("amount exceeds the open-to-buy")]
    InsufficientFunds,
    #[error("amount must be above zero")]
    ZeroAmount,
    #[error("the same original was booked with a different account or amount")]
    Conflict,
    #[error("no booking for this original")]
    NoBooking,
    #[error("a reversal cannot raise the booked amount")]
    ReversalAboveOriginal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub account: AccountId,
    /// The amount approved (in the account's currency).
    pub approved_minor: u64,
    /// What stands after reversals (equal to `approved_minor` until a reversal arrives).
    pub standing_minor: u64,
    /// The network's conversion when the sale was in another currency (DE 10): a partial
    /// reversal's amount, in the sale's currency, is converted at this same rate.
    pub conversion: Option<Conversion>,
}

/// A conversion booked with a sale: its currency, the account's, and the rate (DE 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversion {
    pub from: &'static codecs::currency::Currency,
    pub to: &'static codecs::currency::Currency,
    pub rate: codecs::currency::Rate,
}

/// Bookings kept by default: an issuer's authorization holds expire; this one's expire, oldest
/// first, once it holds this many (about 60 MiB), so that its memory stays bounded under load.
pub const MAX_BOOKINGS: usize = 262_144;

#[derive(Debug)]
pub struct Ledger {
    accounts: HashMap<AccountId, Account>,
    bookings: HashMap<OriginalKey, Booking>,
    /// Booking keys, oldest first (for expiry).
    order: VecDeque<OriginalKey>,
    max_bookings: usize,
}

impl Default for Ledger {
    /// A ledger keeping [`MAX_BOOKINGS`] holds.
    fn default() -> Self {
        Ledger::with_max_bookings(MAX_BOOKINGS)
    }
}

impl Ledger {
    /// A ledger keeping at most `max` holds (at least one), the room for them taken at once and
    /// written (`door::process::touched_map`): a table that doubled as it filled would move every
    /// booking at each doubling (at 131,072 bookings, a stall of about 100 ms in the load bench,
    /// every answer waiting behind it), and one only reserved would fault its pages in on the hot
    /// path; either way its memory would grow for as long as it fills.
    pub fn with_max_bookings(max: usize) -> Self {
        let max = max.max(1);
        let filler =
            || Booking { account: AccountId(0), approved_minor: 0, standing_minor: 0, conversion: None };
        Ledger {
            accounts: HashMap::new(),
            bookings: door::process::touched_map(door::process::map_room(max), Default::default(), |i| {
                (OriginalKey::new(&i.to_string(), "", ""), filler())
            }),
            order: door::process::touched_deque(max + 1, OriginalKey::new("", "", "")),
            max_bookings: max,
        }
    }

    /// Keeps at most `max` bookings (at least one): past it, the oldest hold expires. The room for
    /// them is taken now (not written: see [`Ledger::with_max_bookings`]).
    pub fn set_max_bookings(&mut self, max: usize) {
        self.max_bookings = max.max(1);
        self.expire_holds();
        let room = self.max_bookings + 1;
        let map_room = door::process::map_room(self.max_bookings);
        if map_room < self.bookings.capacity() / 2 {
            self.bookings.shrink_to(map_room);
            self.order.shrink_to(room);
        } else {
            self.bookings.reserve(map_room.saturating_sub(self.bookings.len()));
            self.order.reserve(room.saturating_sub(self.order.len()));
        }
    }

    /// Bookings held.
    pub fn booking_count(&self) -> usize {
        self.bookings.len()
    }

    fn insert_booking(&mut self, key: OriginalKey, booking: Booking) {
        if self.bookings.insert(key.clone(), booking).is_none() {
            self.order.push_back(key);
        }
        self.expire_holds();
    }

    /// The oldest holds past the bound expire, as an issuer's authorization holds do: what still
    /// stands of each is released from its account, and a reversal arriving later finds nothing.
    fn expire_holds(&mut self) {
        while self.bookings.len() > self.max_bookings {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(b) = self.bookings.remove(&old)
                && let Some(acct) = self.accounts.get_mut(&b.account)
            {
                acct.outstanding_minor = acct.outstanding_minor.saturating_sub(b.standing_minor);
            }
        }
    }

    pub fn add_account(&mut self, id: AccountId, account: Account) {
        self.accounts.insert(id, account);
    }

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    pub fn account_mut(&mut self, id: AccountId) -> Option<&mut Account> {
        self.accounts.get_mut(&id)
    }

    pub fn booking(&self, key: &OriginalKey) -> Option<&Booking> {
        self.bookings.get(key)
    }

    /// Every booking (a kept network saves them).
    pub fn bookings(&self) -> impl Iterator<Item = (&OriginalKey, &Booking)> {
        self.bookings.iter()
    }

    /// Puts back a booking saved before a restart, as it was (the account's outstanding amount
    /// is restored separately).
    pub fn restore_booking(&mut self, key: OriginalKey, booking: Booking) {
        if self.bookings.insert(key.clone(), booking).is_none() {
            self.order.push_back(key);
        }
    }

    /// Books an authorization. Repeating the same original returns the same result without
    /// booking twice.
    pub fn authorize(
        &mut self,
        key: &OriginalKey,
        id: AccountId,
        amount: u64,
        currency: u16,
    ) -> Result<(), LedgerError> {
        if let Some(b) = self.bookings.get(key) {
            return if b.account == id && b.approved_minor == amount {
                Ok(())
            } else {
                Err(LedgerError::Conflict)
            };
        }
        let acct = self.accounts.get_mut(&id).ok_or(LedgerError::NoAccount)?;
        if acct.status != AccountStatus::Active {
            return Err(LedgerError::NotActive);
        }
        if acct.currency != currency {
            return Err(LedgerError::Currency);
        }
        if amount == 0 {
            return Err(LedgerError::ZeroAmount);
        }
        if amount > acct.open_to_buy() {
            return Err(LedgerError::InsufficientFunds);
        }
        acct.outstanding_minor += amount;
        self.insert_booking(
            key.clone(),
            Booking { account: id, approved_minor: amount, standing_minor: amount, conversion: None },
        );
        Ok(())
    }

    /// Books an advice of an approval the network already gave (stand-in): no limit check, since
    /// the money has left; idempotent on the original.
    pub fn advise(&mut self, key: &OriginalKey, id: AccountId, amount: u64) -> Result<(), LedgerError> {
        if let Some(b) = self.bookings.get(key) {
            return if b.account == id && b.approved_minor == amount {
                Ok(())
            } else {
                Err(LedgerError::Conflict)
            };
        }
        let acct = self.accounts.get_mut(&id).ok_or(LedgerError::NoAccount)?;
        acct.outstanding_minor = acct.outstanding_minor.saturating_add(amount);
        self.insert_booking(
            key.clone(),
            Booking { account: id, approved_minor: amount, standing_minor: amount, conversion: None },
        );
        Ok(())
    }

    /// Reverses an original down to `remaining` (0 for a full reversal; the dispensed amount for a
    /// partial one). Idempotent: the standing amount is set, not decremented, so a repeated
    /// reversal changes nothing. A reversal of an original never booked (declined, or never
    /// received) is acknowledged with nothing to release.
    /// Records the conversion of an approved sale (after [`Ledger::authorize`]).
    pub fn set_conversion(&mut self, key: &OriginalKey, conversion: Conversion) {
        if let Some(b) = self.bookings.get_mut(key) {
            b.conversion = Some(conversion);
        }
    }

    pub fn reverse(&mut self, key: &OriginalKey, remaining: u64) -> Result<u64, LedgerError> {
        let Some(b) = self.bookings.get_mut(key) else { return Ok(0) };
        if remaining > b.approved_minor {
            return Err(LedgerError::ReversalAboveOriginal);
        }
        if remaining >= b.standing_minor {
            // Already reversed to this or lower: nothing more to release.
            return Ok(0);
        }
        let release = b.standing_minor - remaining;
        b.standing_minor = remaining;
        let acct = self.accounts.get_mut(&b.account).ok_or(LedgerError::NoAccount)?;
        acct.outstanding_minor = acct.outstanding_minor.saturating_sub(release);
        Ok(release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ledger(limit: u64) -> Ledger {
        let mut l = Ledger::with_max_bookings(4_096);
        l.add_account(
            AccountId(1),
            Account {
                status: AccountStatus::Active,
                currency: 901,
                credit_limit_minor: limit,
                outstanding_minor: 0,
            },
        );
        l
    }

    fn k(s: &str) -> OriginalKey {
        OriginalKey::from_text(s)
    }

    #[test]
    fn a_key_is_its_text_inline_or_not() {
        let k = OriginalKey::new("TERM0001", "000123", "1204101500");
        assert_eq!(k.as_str(), "TERM0001|000123|1204101500");
        assert_eq!(k, OriginalKey::from_text("TERM0001|000123|1204101500"));
        assert!(matches!(k.0, KeyText::Inline { .. }), "the elements' fixed lengths fit inline");
        assert_eq!(format!("{k:?}"), "OriginalKey(\"TERM0001|000123|1204101500\")");
        // Missing elements leave their parts empty.
        assert_eq!(OriginalKey::new("", "000123", "").as_str(), "|000123|");
        // Longer than the inline room: kept on the heap, still equal to the same text.
        let long = OriginalKey::new("A-TERMINAL-ID-LONGER", "000123", "1204101500");
        assert!(matches!(long.0, KeyText::Long(_)));
        assert_eq!(long.as_str(), "A-TERMINAL-ID-LONGER|000123|1204101500");
        assert_eq!(long, OriginalKey::from_text(long.as_str()));
        assert_ne!(long, k);
        // The bound between the two: 30 bytes inline, 31 on the heap.
        let at = OriginalKey::new("TERMINAL0001", "000123", "1204101500");
        assert_eq!(at.as_str().len(), INLINE_KEY);
        assert!(matches!(at.0, KeyText::Inline { .. }));
        let past = OriginalKey::new("TERMINAL00012", "000123", "1204101500");
        assert!(matches!(past.0, KeyText::Long(_)));
        assert_ne!(OriginalKey::new("AB", "C", ""), OriginalKey::new("A", "BC", ""));
    }

    proptest! {
        #[test]
        fn keys_equal_exactly_when_texts_do(a in "[ -~]{0,40}", b in "[ -~]{0,40}") {
            let (ka, kb) = (OriginalKey::from_text(&a), OriginalKey::from_text(&b));
            prop_assert_eq!(ka.as_str(), a.as_str());
            prop_assert_eq!(ka == kb, a == b);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        }
    }

    #[test]
    fn holds_past_the_bound_expire_oldest_first_and_release_what_stands() {
        let mut l = ledger(1_000_000);
        l.set_max_bookings(3);
        for (i, key) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            l.authorize(&k(key), AccountId(1), 1_000 * (i as u64 + 1), 901).unwrap();
        }
        assert_eq!(l.booking_count(), 3, "bounded");
        assert!(l.booking(&k("a")).is_none() && l.booking(&k("b")).is_none(), "the oldest expired");
        // What stands is c + d + e: a and b were released when they expired.
        assert_eq!(l.account(AccountId(1)).unwrap().outstanding_minor, 3_000 + 4_000 + 5_000);
        // A partial reversal of one still held, then its expiry, releases only what stood.
        l.reverse(&k("c"), 1_000).unwrap();
        l.authorize(&k("f"), AccountId(1), 100, 901).unwrap();
        assert!(l.booking(&k("c")).is_none());
        assert_eq!(l.account(AccountId(1)).unwrap().outstanding_minor, 4_000 + 5_000 + 100);
        // A reversal of an expired hold finds nothing to release.
        assert_eq!(l.reverse(&k("a"), 0), Ok(0));
    }

    #[test]
    fn the_room_for_the_bound_is_taken_at_once_and_never_regrown() {
        let mut l = ledger(u64::MAX / 2);
        l.set_max_bookings(1_000);
        let (map, order) = (l.bookings.capacity(), l.order.capacity());
        assert!(map > 1_000 && order > 1_000, "room for the bound: {map}, {order}");
        for i in 0..5_000 {
            l.authorize(&k(&format!("t{i}")), AccountId(1), 1, 901).unwrap();
            // Never grown (a doubling would move every booking): the map's capacity only goes
            // down by the slots its removals leave marked, and stays above the bound.
            assert!((1_000..=map).contains(&l.bookings.capacity()), "{}", l.bookings.capacity());
        }
        assert_eq!(l.booking_count(), 1_000);
        assert_eq!(l.order.capacity(), order, "the expiry order never regrown");
        // A lower bound gives the room back.
        l.set_max_bookings(10);
        assert!(l.bookings.capacity() < map && l.booking_count() == 10);
    }

    #[test]
    fn authorize_books_and_declines_over_the_line() {
        let mut l = ledger(100_000);
        l.authorize(&k("a"), AccountId(1), 60_000, 901).unwrap();
        assert_eq!(l.authorize(&k("b"), AccountId(1), 50_000, 901), Err(LedgerError::InsufficientFunds));
        l.authorize(&k("a"), AccountId(1), 60_000, 901).unwrap();
        assert_eq!(l.account(AccountId(1)).unwrap().open_to_buy(), 40_000, "a repeat books nothing");
        assert_eq!(l.authorize(&k("a"), AccountId(1), 1, 901), Err(LedgerError::Conflict));
        assert_eq!(l.authorize(&k("c"), AccountId(1), 1, 840), Err(LedgerError::Currency));
        assert_eq!(l.authorize(&k("c"), AccountId(1), 0, 901), Err(LedgerError::ZeroAmount));
        assert_eq!(l.authorize(&k("c"), AccountId(9), 1, 901), Err(LedgerError::NoAccount));
    }

    #[test]
    fn partial_then_full_reversal_is_idempotent() {
        let mut l = ledger(100_000);
        l.authorize(&k("atm"), AccountId(1), 50_000, 901).unwrap();
        assert_eq!(l.reverse(&k("atm"), 20_000).unwrap(), 30_000, "dispensed 200.00 of 500.00");
        assert_eq!(l.reverse(&k("atm"), 20_000).unwrap(), 0, "SAF retry releases nothing more");
        assert_eq!(l.account(AccountId(1)).unwrap().outstanding_minor, 20_000);
        assert_eq!(l.reverse(&k("atm"), 0).unwrap(), 20_000);
        assert_eq!(l.account(AccountId(1)).unwrap().outstanding_minor, 0);
        assert_eq!(l.reverse(&k("atm"), 60_000), Err(LedgerError::ReversalAboveOriginal));
        assert_eq!(l.reverse(&k("never"), 0).unwrap(), 0);
    }

    #[test]
    fn blocked_account_declines() {
        let mut l = ledger(100);
        l.account_mut(AccountId(1)).unwrap().status = AccountStatus::Blocked;
        assert_eq!(l.authorize(&k("a"), AccountId(1), 1, 901), Err(LedgerError::NotActive));
    }

    proptest! {
        /// Whatever the sequence of authorizations, repeats and reversals, the outstanding amount
        /// equals the sum of what stands on the bookings, and never exceeds the line through
        /// authorizations.
        #[test]
        fn outstanding_equals_standing_bookings(ops in proptest::collection::vec((0u8..3, 0u8..8, 0u64..40_000), 1..200)) {
            let mut l = ledger(100_000);
            for (op, key, amount) in ops {
                let key = k(&key.to_string());
                match op {
                    0 => { let _ = l.authorize(&key, AccountId(1), amount, 901); }
                    1 => { let standing = l.booking(&key).map(|b| b.standing_minor).unwrap_or(0); let _ = l.reverse(&key, amount.min(standing)); }
                    _ => { let _ = l.reverse(&key, 0); }
                }
                let sum: u64 = l.bookings.values().map(|b| b.standing_minor).sum();
                let acct = l.account(AccountId(1)).unwrap();
                prop_assert_eq!(acct.outstanding_minor, sum);
                prop_assert!(acct.outstanding_minor <= 100_000);
            }
        }
    }
}
