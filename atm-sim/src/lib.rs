//! The ATM of the network: cash advances from a credit account with a tapped card or phone.
//!
//! * [`cassette`] — the notes, and the plan that makes an amount (or refuses it).
//! * [`pinpad`] — the DUKPT PIN pad (TDES format 0, AES format 4), KSN advancing per entry.
//! * [`link`] — the connection to the switch's acquirer listener.
//! * [`atm`] — one cash advance: tap, PIN, the 0200 (DE 3 013000, DE 22 071, DE 52/53/55), the
//!   card's check of the ARPC, the dispense and its faults, the reversal advice (0420, partial
//!   with DE 95) owed when the cash that left differs from what was approved; balance inquiry.
//! * [`journal`] — the electronic journal (append-only, masked).
//! * [`state`] — the state folder: STAN, KSN counter, cassettes, owed advices, per-card ATCs.
//! * [`unattended`] — many cash advances in a row, for the load generator.
//! * [`ports`] — the ports file of `paynet serve` (INTERFACES.md §5) as the ATM reads it, and the
//!   phone file format.
#![forbid(unsafe_code)]

pub mod atm;
pub mod cassette;
pub mod journal;
pub mod link;
pub mod pinpad;
pub mod ports;
pub mod state;
pub mod unattended;

pub use atm::{Atm, AtmConfig, AtmError, Fault, Outcome, ReversalKind};
pub use cassette::{Cassette, Cassettes};
pub use link::{Endpoint, SwitchLink};
pub use pinpad::PinPad;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A UTC instant broken down, with the message formats of its parts.
pub use codecs::iso8583::datetime::Utc;

/// Random bytes from the operating system.
pub fn random(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(|e| std::io::Error::other(format!("random source: {e}")))
}
