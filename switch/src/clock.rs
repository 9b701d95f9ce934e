//! Time and randomness as inputs: the stages take them from here, so tests can fix both. The
//! traits are the token service's (crate `tsp`, which the switch builds on); the sources are here.

use std::sync::atomic::{AtomicU64, Ordering};

pub use tsp::clock::{Clock, Entropy};

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told (tests).
pub struct ManualClock(pub AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// The operating system's generator.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        // getrandom fails only when the OS has no entropy source at all; a switch cannot run
        // safely then, and a nonce of zeros must never be used.
        if let Err(e) = getrandom::fill(buf) {
            panic!("operating system random source unavailable: {e}");
        }
    }
}
