//! Identification and verification (ID&V) of a cardholder when a token requestor (a wallet, an SE
//! TSM, a cloud platform) asks for a token on one of the issuer's cards.
//!
//! Each account carries the issuer's policy for it: approve at once, decline, or step up with a
//! one-time passcode sent to the cardholder. An OTP is six digits, valid for a limited time and a
//! limited number of tries, compared in constant time, and usable once. Clock and randomness are
//! arguments so that decisions are reproducible in tests.

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
    issued: HashMap<String, Otp>,
}

impl OtpBook {
    pub fn new(ttl_ms: u64, max_tries: u8) -> Self {
        OtpBook { ttl_ms, max_tries: max_tries.max(1), issued: HashMap::new() }
    }

    /// Issues a six-digit OTP for `session` from `random` (any 4 bytes; reduced modulo 10^6 —
    /// the bias of at most 1 in 4,294 is immaterial for a passcode with three tries).
    pub fn issue(&mut self, session: &str, now_ms: u64, random: u32) -> String {
        let n = random % 1_000_000;
        let text = format!("{n:06}");
        let mut code = [0u8; 6];
        code.copy_from_slice(text.as_bytes());
        self.issued.insert(
            session.to_string(),
            Otp { code, expires_ms: now_ms.saturating_add(self.ttl_ms), tries_left: self.max_tries },
        );
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
    fn policy_decisions() {
        assert_eq!(decide(IdvPolicy::Approve, true, "x"), IdvDecision::Approved);
        assert_eq!(decide(IdvPolicy::Approve, false, "x"), IdvDecision::Declined);
        assert_eq!(decide(IdvPolicy::Decline, true, "x"), IdvDecision::Declined);
        assert_eq!(decide(IdvPolicy::StepUp, true, "x"), IdvDecision::StepUp { session: "x".into() });
        assert_eq!(IdvPolicy::parse("otp"), Some(IdvPolicy::StepUp));
        assert_eq!(IdvPolicy::parse("maybe"), None);
    }
}
