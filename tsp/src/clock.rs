//! Time and randomness as inputs: the token service (and the switch, whose clocks implement these)
//! takes them from here, so tests can fix both. Nothing in this crate reads the system clock or the
//! OS generator itself.

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// A source of random bytes (nonces, authorization codes, token numbers, jitter).
pub trait Entropy: Send + Sync + 'static {
    fn fill(&self, buf: &mut [u8]);

    fn u32(&self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_le_bytes(b)
    }
}
