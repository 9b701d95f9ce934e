//! Identification and verification (ID&V) of a cardholder when a token requestor (a wallet, an SE
//! TSM, a cloud platform) asks for a token on one of the issuer's cards.
//!
//! Each account carries the issuer's policy for it: approve at once, decline, or step up with a
//! one-time passcode sent to the cardholder. An OTP is six digits, valid for a limited time and a
//! limited number of tries, compared in constant time, and usable once. Clock and randomness are
//! arguments so that decisions are reproducible in tests.
//!
//! A guesser learns nothing from a refusal: an unknown PAN, a wrong expiry and a wrong CVV2 are
//! one generic decline (05). Failures are counted per PAN and per requestor ([`AttemptGuard`]);
//! after `max_failures` within the window the PAN (or the requestor) is locked for `lock_ms`,
//! and every request on it is declined 05 without being checked. Every table here is bounded:
//! expired entries go first, then the oldest.

use std::collections::HashMap;

use subtle::ConstantTimeEq;

/// The issuer's ID&V policy for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdvPolicy {
    Approve,
    Decline,
    /// Require a one-time passcode.
    StepUp,
}

impl IdvPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(IdvPolicy::Approve),
            "decline" => Some(IdvPolicy::Decline),
            "otp" | "step-up" => Some(IdvPolicy::StepUp),
            _ => None,
        }
    }
}

/// The answer to a token authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdvDecision {
    Approved,
    Declined,
    /// An OTP was issued for this provisioning session; the cardholder receives it out of band.
    StepUp {
        session: String,
    },
}

/// Why an OTP was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OtpError {
    #[error("no OTP was issued for this provisioning session")]
    NoSession,
    #[error("the OTP has expired")]
    Expired,
    #[error("the OTP is wrong")]
    Wrong,
    #[error("too many wrong OTPs; the session is closed")]
    TriesExceeded,
}

struct Otp {
    code: [u8; 6],
    expires_ms: u64,
    tries_left: u8,
}

/// Issued OTPs by provisioning session.
pub struct OtpBook {
    ttl_ms: u64,
    max_tries: u8,
    capacity: usize,
    issued: HashMap<String, Otp>,
    /// No OTP issued expires before this (a lower bound): [`OtpBook::expire`] has nothing to do
    /// until then.
    first_expiry_ms: u64,
}

/// The most OTPs outstanding at once (an unanswered step-up must not grow the book forever).
pub const OTP_BOOK_CAPACITY: usize = 10_000;

impl OtpBook {
    pub fn new(ttl_ms: u64, max_tries: u8) -> Self {
        OtpBook {
            ttl_ms,
            max_tries: max_tries.max(1),
            capacity: OTP_BOOK_CAPACITY,
            issued: HashMap::new(),
            first_expiry_ms: u64::MAX,
        }
    }

    /// The same with room for `capacity` outstanding OTPs.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Whether an OTP is outstanding for `session`.
    pub fn contains(&self, session: &str) -> bool {
        self.issued.contains_key(session)
    }

    /// OTPs outstanding.
    pub fn len(&self) -> usize {
        self.issued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.issued.is_empty()
    }

    /// Drops every OTP past its lifetime (they could only be refused as expired).
    pub fn expire(&mut self, now_ms: u64) {
        if now_ms <= self.first_expiry_ms {
            return;
        }
        self.issued.retain(|_, o| o.expires_ms >= now_ms);
        self.first_expiry_ms = self.issued.values().map(|o| o.expires_ms).min().unwrap_or(u64::MAX);
    }

    /// Makes room for one more: expired OTPs go, then the one that expires first.
    fn make_room(&mut self, now_ms: u64) {
        if self.issued.len() < self.capacity {
            return;
        }
        self.issued.retain(|_, o| o.expires_ms >= now_ms);
        while self.issued.len() >= self.capacity {
            let Some(oldest) = self.issued.iter().min_by_key(|(_, o)| o.expires_ms).map(|(k, _)| k.clone())
            else {
                break;
            };
            self.issued.remove(&oldest);
        }
    }

    /// Issues a six-digit OTP for `session` from `random` (any 4 bytes; reduced modulo 10^6 —
    /// the bias of at most 1 in 4,294 is immaterial for a passcode with three tries).
    pub fn issue(&mut self, session: &str, now_ms: u64, random: u32) -> String {
        let n = random % 1_000_000;
        let text = format!("{n:06}");
        let mut code = [0u8; 6];
        code.copy_from_slice(text.as_bytes());
        if !self.issued.contains_key(session) {
            self.make_room(now_ms);
        }
        let expires_ms = now_ms.saturating_add(self.ttl_ms);
        self.first_expiry_ms = self.first_expiry_ms.min(expires_ms);
        self.issued.insert(session.to_string(), Otp { code, expires_ms, tries_left: self.max_tries });
        text
    }

    /// Checks an OTP; a correct one is consumed.
    pub fn verify(&mut self, session: &str, otp: &str, now_ms: u64) -> Result<(), OtpError> {
        let entry = self.issued.get_mut(session).ok_or(OtpError::NoSession)?;
        if now_ms > entry.expires_ms {
            self.issued.remove(session);
            return Err(OtpError::Expired);
        }
        let ok = otp.len() == 6 && bool::from(otp.as_bytes().ct_eq(&entry.code));
        if ok {
            self.issued.remove(session);
            return Ok(());
        }
        entry.tries_left -= 1;
        if entry.tries_left == 0 {
            self.issued.remove(session);
            return Err(OtpError::TriesExceeded);
        }
        Err(OtpError::Wrong)
    }
}

/// The limits of ID&V attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdvLimits {
    /// Failed ID&V attempts on one PAN (wrong expiry, CVV2, OTP) before it is locked.
    pub max_failures: u32,
    /// Failed attempts through one token requestor (any PANs, unknown ones included) before the
    /// requestor is locked: higher than a PAN's, since a wallet speaks for many cardholders, low
    /// enough to stop a guesser working through PANs.
    pub max_requestor_failures: u32,
    /// Failures older than this are forgotten.
    pub window_ms: u64,
    /// How long a PAN or a requestor stays locked.
    pub lock_ms: u64,
    /// OTP tries per step-up.
    pub otp_tries: u8,
    /// How long an OTP is valid.
    pub otp_ttl_ms: u64,
    /// The most PANs and requestors tracked at once.
    pub capacity: usize,
}

impl Default for IdvLimits {
    fn default() -> Self {
        IdvLimits {
            max_failures: 5,
            max_requestor_failures: 100,
            window_ms: 60 * 60 * 1000,
            lock_ms: 24 * 60 * 60 * 1000,
            otp_tries: 3,
            otp_ttl_ms: 5 * 60 * 1000,
            capacity: 10_000,
        }
    }
}

impl IdvLimits {
    /// Every problem, at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut bad = Vec::new();
        if self.max_failures == 0 || self.max_requestor_failures == 0 {
            bad.push("idv.max_failures and idv.max_requestor_failures must be at least 1");
        }
        if self.otp_tries == 0 {
            bad.push("idv.otp_tries must be at least 1");
        }
        if self.otp_ttl_ms == 0 || self.lock_ms == 0 || self.window_ms == 0 {
            bad.push("idv.otp_ttl_ms, lock_ms and window_ms must be at least 1");
        }
        if self.capacity == 0 {
            bad.push("idv.capacity must be at least 1");
        }
        if bad.is_empty() { Ok(()) } else { Err(bad.join("; ")) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Attempts {
    failures: u32,
    first_ms: u64,
    locked_until: Option<u64>,
}

impl Attempts {
    fn stale(&self, now_ms: u64, window_ms: u64) -> bool {
        match self.locked_until {
            Some(until) => now_ms >= until,
            None => now_ms.saturating_sub(self.first_ms) > window_ms,
        }
    }
}

/// A bounded table of failure counts.
struct Counts {
    map: HashMap<String, Attempts>,
}

impl Counts {
    fn locked(&mut self, key: &str, now_ms: u64, l: &IdvLimits) -> bool {
        match self.map.get(key) {
            Some(a) if a.stale(now_ms, l.window_ms) => {
                self.map.remove(key);
                false
            }
            Some(a) => a.locked_until.is_some(),
            None => false,
        }
    }

    fn fail(&mut self, key: &str, now_ms: u64, l: &IdvLimits, max_failures: u32) {
        if self.map.get(key).is_some_and(|a| a.stale(now_ms, l.window_ms)) {
            self.map.remove(key);
        }
        if !self.map.contains_key(key) && self.map.len() >= l.capacity {
            self.map.retain(|_, a| !a.stale(now_ms, l.window_ms));
            while self.map.len() >= l.capacity {
                // Unlocked entries go before locked ones; then the oldest.
                let victim = self
                    .map
                    .iter()
                    .min_by_key(|(_, a)| (a.locked_until.is_some(), a.first_ms))
                    .map(|(k, _)| k.clone());
                match victim {
                    Some(k) => self.map.remove(&k),
                    None => break,
                };
            }
        }
        let a = self.map.entry(key.to_string()).or_insert(Attempts {
            failures: 0,
            first_ms: now_ms,
            locked_until: None,
        });
        a.failures += 1;
        if a.failures >= max_failures {
            a.locked_until = Some(now_ms.saturating_add(l.lock_ms));
        }
    }
}

/// Failed ID&V attempts per PAN and per token requestor, with locks.
pub struct AttemptGuard {
    limits: IdvLimits,
    by_pan: Counts,
    by_requestor: Counts,
}

impl AttemptGuard {
    pub fn new(limits: IdvLimits) -> Self {
        AttemptGuard {
            limits,
            by_pan: Counts { map: HashMap::new() },
            by_requestor: Counts { map: HashMap::new() },
        }
    }

    pub fn limits(&self) -> &IdvLimits {
        &self.limits
    }

    /// Whether the PAN (when known to the issuer) or the requestor is locked.
    pub fn locked(&mut self, pan: Option<&str>, requestor: &str, now_ms: u64) -> bool {
        let l = self.limits;
        pan.is_some_and(|p| self.by_pan.locked(p, now_ms, &l))
            || self.by_requestor.locked(requestor, now_ms, &l)
    }

    /// Counts a failure against the requestor and, when it names one of the issuer's cards, the PAN.
    pub fn fail(&mut self, pan: Option<&str>, requestor: &str, now_ms: u64) {
        let l = self.limits;
        if let Some(p) = pan {
            self.by_pan.fail(p, now_ms, &l, l.max_failures);
        }
        self.by_requestor.fail(requestor, now_ms, &l, l.max_requestor_failures);
    }

    /// A verified cardholder: the PAN's failures are forgotten (the requestor's are not).
    pub fn succeed(&mut self, pan: &str) {
        if self.by_pan.map.get(pan).is_some_and(|a| a.locked_until.is_none()) {
            self.by_pan.map.remove(pan);
        }
    }

    /// Entries tracked (PANs, requestors).
    pub fn tracked(&self) -> (usize, usize) {
        (self.by_pan.map.len(), self.by_requestor.map.len())
    }
}

/// Decides a token authorization request under the account's policy.
pub fn decide(policy: IdvPolicy, account_active: bool, session: &str) -> IdvDecision {
    if !account_active {
        return IdvDecision::Declined;
    }
    match policy {
        IdvPolicy::Approve => IdvDecision::Approved,
        IdvPolicy::Decline => IdvDecision::Declined,
        IdvPolicy::StepUp => IdvDecision::StepUp { session: session.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otp_is_single_use_and_expires() {
        let mut b = OtpBook::new(60_000, 3);
        let otp = b.issue("s1", 0, 1_234_567);
        assert_eq!(otp, "234567");
        assert_eq!(b.verify("s1", &otp, 60_001), Err(OtpError::Expired));
        let otp = b.issue("s1", 0, 42);
        assert_eq!(otp, "000042");
        b.verify("s1", "000042", 10).unwrap();
        assert_eq!(b.verify("s1", "000042", 11), Err(OtpError::NoSession), "used once only");
    }

    #[test]
    fn three_wrong_tries_close_the_session() {
        let mut b = OtpBook::new(60_000, 3);
        let otp = b.issue("s", 0, 999_999);
        assert_eq!(b.verify("s", "000000", 1), Err(OtpError::Wrong));
        assert_eq!(b.verify("s", "12345", 1), Err(OtpError::Wrong));
        assert_eq!(b.verify("s", "111111", 1), Err(OtpError::TriesExceeded));
        assert_eq!(b.verify("s", &otp, 1), Err(OtpError::NoSession));
    }

    #[test]
    fn five_failures_lock_the_pan_and_the_requestor_and_the_lock_ends() {
        let l = IdvLimits {
            max_failures: 5,
            max_requestor_failures: 5,
            window_ms: 1_000,
            lock_ms: 10_000,
            ..IdvLimits::default()
        };
        let mut g = AttemptGuard::new(l);
        for i in 0..4 {
            g.fail(Some("4761"), "wallet-1", i);
            assert!(!g.locked(Some("4761"), "wallet-2", i), "after {} failures", i + 1);
        }
        g.fail(Some("4761"), "wallet-1", 5);
        assert!(g.locked(Some("4761"), "wallet-2", 6), "the PAN, from any requestor");
        assert!(g.locked(Some("9999"), "wallet-1", 6), "the requestor, on any PAN");
        assert!(!g.locked(Some("9999"), "wallet-2", 6));
        assert!(!g.locked(Some("4761"), "wallet-2", 10_006), "the lock ends");
        // Failures outside the window are forgotten.
        let mut g = AttemptGuard::new(l);
        for t in [0, 2_000, 4_000, 6_000, 8_000] {
            g.fail(Some("4761"), "w", t);
        }
        assert!(!g.locked(Some("4761"), "w", 8_001));
    }

    #[test]
    fn a_requestor_is_locked_at_its_own_higher_limit() {
        let l = IdvLimits { max_failures: 5, max_requestor_failures: 20, ..IdvLimits::default() };
        let mut g = AttemptGuard::new(l);
        // Nineteen cardholders of one wallet each mistype once: the wallet goes on.
        for i in 0..19u64 {
            g.fail(Some(&format!("47617390010100{i:02}")), "wallet-1", i);
        }
        assert!(!g.locked(Some("4761739001019999"), "wallet-1", 20));
        // A guesser working through PANs: the twentieth failure locks the wallet.
        g.fail(None, "wallet-1", 21);
        assert!(g.locked(None, "wallet-1", 22));
        assert!(!g.locked(None, "wallet-2", 22), "other requestors go on");
    }

    #[test]
    fn the_tables_stay_within_their_bounds() {
        let l = IdvLimits { capacity: 100, ..IdvLimits::default() };
        let mut g = AttemptGuard::new(l);
        for i in 0..10_000u64 {
            g.fail(Some(&format!("{i:016}")), &format!("req-{i}"), i);
        }
        assert_eq!(g.tracked(), (100, 100));
        let mut b = OtpBook::new(60_000, 3).with_capacity(50);
        for i in 0..5_000u64 {
            b.issue(&format!("s{i}"), i, i as u32);
        }
        assert_eq!(b.len(), 50);
        assert!(b.verify("s4999", "004999", 5_000).is_ok(), "the newest OTPs are kept");
    }

    #[test]
    fn policy_decisions() {
        assert_eq!(decide(IdvPolicy::Approve, true, "x"), IdvDecision::Approved);
        assert_eq!(decide(IdvPolicy::Approve, false, "x"), IdvDecision::Declined);
        assert_eq!(decide(IdvPolicy::Decline, true, "x"), IdvDecision::Declined);
        assert_eq!(decide(IdvPolicy::StepUp, true, "x"), IdvDecision::StepUp { session: "x".into() });
        assert_eq!(IdvPolicy::parse("otp"), Some(IdvPolicy::StepUp));
        assert_eq!(IdvPolicy::parse("maybe"), None);
    }
}
