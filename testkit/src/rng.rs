//! The tests' one random source: a seeded generator (ChaCha12, rand's `StdRng`), so every run of a
//! test draws the same bytes and a failure replays exactly.
//!
//! A test names its seed; `PAYNET_TEST_SEED` (a decimal number), when set, is mixed into every
//! seed, so the whole suite can be run over other draws without editing a test. The seed in use is
//! printed to the test's output (shown when it fails).

use std::sync::{Arc, Mutex, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A boxed source of random bytes (the shape an HSM takes).
pub type SharedSource = Box<dyn Fn(&mut [u8]) + Send + Sync>;

/// A seeded random source, shared by its clones (one stream, whoever draws from it).
#[derive(Clone)]
pub struct TestRng {
    seed: u64,
    inner: Arc<Mutex<StdRng>>,
}

impl std::fmt::Debug for TestRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRng").field("seed", &self.seed).finish_non_exhaustive()
    }
}

impl TestRng {
    /// The generator for `seed`, with `PAYNET_TEST_SEED` mixed in when it is set.
    pub fn seeded(seed: u64) -> Self {
        let seed = match std::env::var("PAYNET_TEST_SEED").ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(extra) => seed ^ extra.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15,
            None => seed,
        };
        eprintln!("test random source: seed {seed} (set PAYNET_TEST_SEED to draw others)");
        Self { seed, inner: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))) }
    }

    /// The generator of one property-test case: `seed` is the case's own (the property-test
    /// runner draws it, reports it on failure and replays it), so nothing is mixed in or printed.
    pub fn from_case(seed: u64) -> Self {
        Self { seed, inner: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))) }
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&self, buf: &mut [u8]) {
        // A test that panicked while drawing leaves a generator that is still a generator.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).fill_bytes(buf);
    }

    /// The next 64 bits of the stream.
    pub fn u64(&self) -> u64 {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).next_u64()
    }

    /// A number in `0..n` (`n` > 0; a modulo draw, good enough for picking test cases).
    pub fn below(&self, n: u64) -> u64 {
        self.u64() % n.max(1)
    }

    /// The stream as a closure, for the APIs that take one (key generation, an HSM's source).
    pub fn filler(&self) -> impl FnMut(&mut [u8]) + Send + Sync + Clone + 'static {
        let me = self.clone();
        move |buf: &mut [u8]| me.fill(buf)
    }

    /// The stream as a shared function, for the APIs that take a boxed `Fn` (an HSM's source).
    pub fn source(&self) -> SharedSource {
        let me = self.clone();
        Box::new(move |buf: &mut [u8]| me.fill(buf))
    }
}

impl tsp::clock::Entropy for TestRng {
    fn fill(&self, buf: &mut [u8]) {
        TestRng::fill(self, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_one_stream_and_clones_share_it() {
        let a = TestRng::seeded(42);
        let b = TestRng::seeded(42);
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y, "the same seed draws the same bytes");
        let c = a.clone();
        c.fill(&mut x);
        a.fill(&mut y);
        assert_ne!(x, y, "a clone draws from the same stream, not a copy of it");
        let other = TestRng::seeded(43);
        let mut z = [0u8; 32];
        other.fill(&mut z);
        let mut w = [0u8; 32];
        TestRng::seeded(42).fill(&mut w);
        assert_ne!(z, w, "another seed, other bytes");
        assert!(TestRng::seeded(1).below(10) < 10);
    }
}
