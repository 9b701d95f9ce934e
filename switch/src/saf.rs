//! Store-and-forward: messages owed to an issuer (reversal advices after a timeout or a dispense
//! fault, advices of stand-in approvals) are persisted before the acquirer is answered, and retried
//! with exponential back-off until the issuer acknowledges them — across switch restarts.
//!
//! This module holds the policy (when to retry) as pure functions of the attempt count, the clock
//! and a random draw; the issuer link's SAF worker applies it.

/// Retry policy for one issuer link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub base_ms: u64,
    /// The delay never exceeds this.
    pub max_ms: u64,
    /// Up to this fraction (per mille) of the delay is added at random, so that many entries due
    /// together do not hit a recovering issuer in one burst.
    pub jitter_permille: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { base_ms: 1_000, max_ms: 60_000, jitter_permille: 200 }
    }
}

impl RetryPolicy {
    /// When to try again after `attempts` failed attempts (1 after the first failure), given the
    /// current time and a random draw. Delays double from `base_ms` up to `max_ms`.
    pub fn next_attempt_ms(&self, attempts: u32, now_ms: u64, random: u32) -> u64 {
        let exp = attempts.saturating_sub(1).min(32);
        let delay = self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        let jitter_span = delay.saturating_mul(u64::from(self.jitter_permille)) / 1000;
        let jitter = if jitter_span == 0 { 0 } else { u64::from(random) % (jitter_span + 1) };
        now_ms.saturating_add(delay).saturating_add(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let p = RetryPolicy { base_ms: 1000, max_ms: 8000, jitter_permille: 0 };
        let delays: Vec<u64> = (1..=6).map(|a| p.next_attempt_ms(a, 0, 0)).collect();
        assert_eq!(delays, vec![1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(p.next_attempt_ms(u32::MAX, u64::MAX - 5, 0), u64::MAX);
    }

    #[test]
    fn jitter_is_bounded() {
        let p = RetryPolicy { base_ms: 1000, max_ms: 60_000, jitter_permille: 200 };
        for r in [0u32, 1, 199, 200, 201, u32::MAX] {
            let t = p.next_attempt_ms(1, 10_000, r);
            assert!((11_000..=11_200).contains(&t), "{t}");
        }
    }
}
