//! The dates and times ISO 8583 messages and EMV data carry — DE 7 (MMDDhhmmss), DE 12 (hhmmss),
//! DE 13 (MMDD), expiry-style YYMM, tag 9A (YYMMDD in BCD) — from milliseconds since the Unix
//! epoch, in UTC on the proleptic Gregorian calendar. Pure arithmetic: the caller brings the
//! clock, so stages and tests stay deterministic.

/// A UTC instant broken down.
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
    /// The instant `ms` milliseconds after 1970-01-01 00:00:00 UTC.
    pub fn from_ms(ms: u64) -> Utc {
        let secs = ms / 1000;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        Utc {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// DE 7, transmission date and time: MMDDhhmmss.
    pub fn transmission(&self) -> String {
        format!("{:02}{:02}{:02}{:02}{:02}", self.month, self.day, self.hour, self.minute, self.second)
    }

    /// DE 12, local transaction time: hhmmss.
    pub fn time(&self) -> String {
        format!("{:02}{:02}{:02}", self.hour, self.minute, self.second)
    }

    /// DE 13, local transaction date: MMDD.
    pub fn date(&self) -> String {
        format!("{:02}{:02}", self.month, self.day)
    }

    /// YYMM, the form of a card's expiry (DE 14): this month.
    pub fn yymm(&self) -> String {
        format!("{:02}{:02}", self.year % 100, self.month)
    }

    /// Tag 9A, transaction date: YYMMDD in BCD.
    pub fn emv_date(&self) -> [u8; 3] {
        let bcd = |n: u32| (((n / 10) % 10) << 4 | (n % 10)) as u8;
        [bcd(self.year % 100), bcd(self.month), bcd(self.day)]
    }

    /// Day of the year, 1 to 366.
    pub fn day_of_year(&self) -> u32 {
        const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let leap =
            self.year.is_multiple_of(4) && (!self.year.is_multiple_of(100) || self.year.is_multiple_of(400));
        let m = (self.month.clamp(1, 12) - 1) as usize;
        BEFORE[m] + self.day + u32::from(leap && self.month > 2)
    }

    /// For people: `2026-11-25 09:30:49 UTC`.
    pub fn text(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// (year, month, day) of a count of days since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakdown_and_formats() {
        assert_eq!(Utc::from_ms(0).text(), "1970-01-01 00:00:00 UTC");
        // 2025-11-25 13:45:07 UTC.
        let t = Utc::from_ms(1_764_078_307_000);
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2025, 11, 25, 13, 45, 7));
        assert_eq!(t.transmission(), "1125134507");
        assert_eq!((t.time().as_str(), t.date().as_str(), t.yymm().as_str()), ("134507", "1125", "2511"));
        assert_eq!(t.emv_date(), [0x25, 0x11, 0x25]);
        // Leap day, century rules, the last second of a year.
        let t = Utc::from_ms(951_782_400_000 + 3_661_000);
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2000, 2, 29, 1, 1, 1));
        assert_eq!(Utc::from_ms(4_107_542_399_000).text(), "2100-02-28 23:59:59 UTC");
        assert_eq!(Utc::from_ms(4_107_542_400_000).text(), "2100-03-01 00:00:00 UTC");
        assert_eq!(Utc::from_ms(1_798_761_599_000).text(), "2026-12-31 23:59:59 UTC");
        assert_eq!(Utc::from_ms(1_798_761_599_000).day_of_year(), 365);
        assert_eq!(Utc::from_ms(1_735_603_200_000).day_of_year(), 366, "2024-12-31");
        assert_eq!(Utc::from_ms(951_782_400_000).day_of_year(), 60, "2000-02-29");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // Walk 1970..2200 day by day: dates strictly increase and months have their lengths.
        let mut prev = civil_from_days(0);
        for d in 1..84_000 {
            let c = civil_from_days(d);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = if prev.1 == 12 { (prev.0 + 1, 1, 1) } else { (prev.0, prev.1 + 1, 1) };
            assert!(c == next_day || c == next_month, "{prev:?} → {c:?}");
            if c == next_month {
                let leap =
                    prev.0.is_multiple_of(4) && (!prev.0.is_multiple_of(100) || prev.0.is_multiple_of(400));
                let len = match prev.1 {
                    2 if leap => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                assert_eq!(prev.2, len, "{prev:?}");
            }
            prev = c;
        }
    }
}
