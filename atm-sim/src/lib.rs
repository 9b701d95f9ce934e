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

/// A UTC instant broken down (civil calendar, proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: u32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Utc {
    pub fn from_ms(ms: u64) -> Utc {
        let secs = ms / 1000;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Howard Hinnant's days-from-civil inverse.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
        Utc {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// DE 7: MMDDhhmmss.
    pub fn transmission(&self) -> String {
        format!("{:02}{:02}{:02}{:02}{:02}", self.month, self.day, self.hour, self.minute, self.second)
    }

    /// DE 12: hhmmss.
    pub fn time(&self) -> String {
        format!("{:02}{:02}{:02}", self.hour, self.minute, self.second)
    }

    /// DE 13: MMDD.
    pub fn date(&self) -> String {
        format!("{:02}{:02}", self.month, self.day)
    }

    /// Tag 9A: YYMMDD in BCD.
    pub fn emv_date(&self) -> [u8; 3] {
        let bcd = |n: u32| (((n / 10) % 10) << 4 | (n % 10)) as u8;
        [bcd(self.year % 100), bcd(self.month), bcd(self.day)]
    }
}

/// Random bytes from the operating system.
pub fn random(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(|e| std::io::Error::other(format!("random source: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_breakdown() {
        // 2025-11-25 13:45:07 UTC.
        let t = Utc::from_ms(1_764_078_307_000);
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2025, 11, 25, 13, 45, 7));
        assert_eq!(t.transmission(), "1125134507");
        assert_eq!(t.emv_date(), [0x25, 0x11, 0x25]);
        let t = Utc::from_ms(951_782_400_000); // 2000-02-29
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
    }
}
