//! ISO 4217 currencies (numeric code, alphabetic code, minor-unit exponent) and the conversion of an
//! amount between two of them at a rate in the form ISO 8583 carries it (DE 10, "conversion rate,
//! cardholder billing": eight digits, the first the number of decimal places of the other seven).
//!
//! Integer arithmetic only. Rounding: half away from zero at the billing currency's minor unit
//! (amounts are never negative here, so half up): 0.5 of a minor unit or more rounds up.

use std::fmt;

/// One ISO 4217 currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    /// Three digits, e.g. `"978"`.
    pub numeric: &'static str,
    /// Three letters, e.g. `"EUR"`.
    pub alpha: &'static str,
    /// Digits after the decimal point of its minor unit (EUR 2, JPY 0, KWD 3, CLF 4).
    pub exponent: u8,
}

macro_rules! currencies {
    ($(($a:literal, $n:literal, $e:literal)),* $(,)?) => {
        /// The active ISO 4217 currencies (and the funds codes card schemes meet), by numeric code.
        pub const ISO_4217: &[Currency] = &[$(Currency { alpha: $a, numeric: $n, exponent: $e }),*];
    };
}

currencies![
    ("AED", "784", 2),
    ("AFN", "971", 2),
    ("ALL", "008", 2),
    ("AMD", "051", 2),
    ("ANG", "532", 2),
    ("AOA", "973", 2),
    ("ARS", "032", 2),
    ("AUD", "036", 2),
    ("AWG", "533", 2),
    ("AZN", "944", 2),
    ("BAM", "977", 2),
    ("BBD", "052", 2),
    ("BDT", "050", 2),
    ("BGN", "975", 2),
    ("BHD", "048", 3),
    ("BIF", "108", 0),
    ("BMD", "060", 2),
    ("BND", "096", 2),
    ("BOB", "068", 2),
    ("BRL", "986", 2),
    ("BSD", "044", 2),
    ("BTN", "064", 2),
    ("BWP", "072", 2),
    ("BYN", "933", 2),
    ("BZD", "084", 2),
    ("CAD", "124", 2),
    ("CDF", "976", 2),
    ("CHF", "756", 2),
    ("CLF", "990", 4),
    ("CLP", "152", 0),
    ("CNY", "156", 2),
    ("COP", "170", 2),
    ("CRC", "188", 2),
    ("CUP", "192", 2),
    ("CVE", "132", 2),
    ("CZK", "203", 2),
    ("DJF", "262", 0),
    ("DKK", "208", 2),
    ("DOP", "214", 2),
    ("DZD", "012", 2),
    ("EGP", "818", 2),
    ("ERN", "232", 2),
    ("ETB", "230", 2),
    ("EUR", "978", 2),
    ("FJD", "242", 2),
    ("FKP", "238", 2),
    ("GBP", "826", 2),
    ("GEL", "981", 2),
    ("GHS", "936", 2),
    ("GIP", "292", 2),
    ("GMD", "270", 2),
    ("GNF", "324", 0),
    ("GTQ", "320", 2),
    ("GYD", "328", 2),
    ("HKD", "344", 2),
    ("HNL", "340", 2),
    ("HTG", "332", 2),
    ("HUF", "348", 2),
    ("IDR", "360", 2),
    ("ILS", "376", 2),
    ("INR", "356", 2),
    ("IQD", "368", 3),
    ("IRR", "364", 2),
    ("ISK", "352", 0),
    ("JMD", "388", 2),
    ("JOD", "400", 3),
    ("JPY", "392", 0),
    ("KES", "404", 2),
    ("KGS", "417", 2),
    ("KHR", "116", 2),
    ("KMF", "174", 0),
    ("KPW", "408", 2),
    ("KRW", "410", 0),
    ("KWD", "414", 3),
    ("KYD", "136", 2),
    ("KZT", "398", 2),
    ("LAK", "418", 2),
    ("LBP", "422", 2),
    ("LKR", "144", 2),
    ("LRD", "430", 2),
    ("LSL", "426", 2),
    ("LYD", "434", 3),
    ("MAD", "504", 2),
    ("MDL", "498", 2),
    ("MGA", "969", 2),
    ("MKD", "807", 2),
    ("MMK", "104", 2),
    ("MNT", "496", 2),
    ("MOP", "446", 2),
    ("MRU", "929", 2),
    ("MUR", "480", 2),
    ("MVR", "462", 2),
    ("MWK", "454", 2),
    ("MXN", "484", 2),
    ("MYR", "458", 2),
    ("MZN", "943", 2),
    ("NAD", "516", 2),
    ("NGN", "566", 2),
    ("NIO", "558", 2),
    ("NOK", "578", 2),
    ("NPR", "524", 2),
    ("NZD", "554", 2),
    ("OMR", "512", 3),
    ("PAB", "590", 2),
    ("PEN", "604", 2),
    ("PGK", "598", 2),
    ("PHP", "608", 2),
    ("PKR", "586", 2),
    ("PLN", "985", 2),
    ("PYG", "600", 0),
    ("QAR", "634", 2),
    ("RON", "946", 2),
    ("RSD", "941", 2),
    ("RUB", "643", 2),
    ("RWF", "646", 0),
    ("SAR", "682", 2),
    ("SBD", "090", 2),
    ("SCR", "690", 2),
    ("SDG", "938", 2),
    ("SEK", "752", 2),
    ("SGD", "702", 2),
    ("SHP", "654", 2),
    ("SLE", "925", 2),
    ("SOS", "706", 2),
    ("SRD", "968", 2),
    ("SSP", "728", 2),
    ("STN", "930", 2),
    ("SVC", "222", 2),
    ("SYP", "760", 2),
    ("SZL", "748", 2),
    ("THB", "764", 2),
    ("TJS", "972", 2),
    ("TMT", "934", 2),
    ("TND", "788", 3),
    ("TOP", "776", 2),
    ("TRY", "949", 2),
    ("TTD", "780", 2),
    ("TWD", "901", 2),
    ("TZS", "834", 2),
    ("UAH", "980", 2),
    ("UGX", "800", 0),
    ("USD", "840", 2),
    ("UYI", "940", 0),
    ("UYU", "858", 2),
    ("UYW", "927", 4),
    ("UZS", "860", 2),
    ("VED", "926", 2),
    ("VES", "928", 2),
    ("VND", "704", 0),
    ("VUV", "548", 0),
    ("WST", "882", 2),
    ("XAF", "950", 0),
    ("XCD", "951", 2),
    ("XOF", "952", 0),
    ("XPF", "953", 0),
    ("YER", "886", 2),
    ("ZAR", "710", 2),
    ("ZMW", "967", 2),
    ("ZWG", "924", 2),
];

/// The currency with this numeric code (three digits, as DE 49 / DE 51 carry it).
pub fn by_numeric(code: &str) -> Option<&'static Currency> {
    ISO_4217.iter().find(|c| c.numeric == code)
}

/// The currency with this alphabetic code (`"TWD"`), case-insensitive.
pub fn by_alpha(code: &str) -> Option<&'static Currency> {
    ISO_4217.iter().find(|c| c.alpha.eq_ignore_ascii_case(code))
}

/// Why a rate or a conversion was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CurrencyError {
    /// Not an ISO 4217 numeric code this table knows.
    UnknownCurrency(String),
    /// A rate that DE 10 cannot carry, with why.
    Rate(String),
    /// The converted amount does not fit twelve digits.
    Overflow,
}

impl Currency {
    /// `minor` units as the currency writes them, with its code: `1250` EUR → `EUR 12.50`, JPY →
    /// `JPY 1250`, KWD → `KWD 1.250`. Integer arithmetic only.
    pub fn show(&self, minor: u64) -> String {
        if self.exponent == 0 {
            return format!("{} {minor}", self.alpha);
        }
        let scale = 10u64.pow(u32::from(self.exponent));
        let width = usize::from(self.exponent);
        format!("{} {}.{:0width$}", self.alpha, minor / scale, minor % scale)
    }
}

impl fmt::Display for CurrencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurrencyError::UnknownCurrency(c) => write!(f, "{c:?} is not an ISO 4217 numeric currency code"),
            CurrencyError::Rate(why) => write!(f, "conversion rate: {why}"),
            CurrencyError::Overflow => write!(f, "the converted amount does not fit 12 digits"),
        }
    }
}

impl std::error::Error for CurrencyError {}

/// A conversion rate as DE 10 carries it: `digits` (at most 7 significant digits) divided by
/// 10^`decimals` (0 to 7): one unit of the transaction currency is worth `digits / 10^decimals`
/// units of the billing currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub digits: u32,
    pub decimals: u8,
}

impl Rate {
    /// Parses a decimal rate (`"0.0285714"`, `"35"`): at most seven significant digits, no more
    /// than seven after the point, above zero.
    pub fn parse_decimal(s: &str) -> Result<Rate, CurrencyError> {
        let s = s.trim();
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(CurrencyError::Rate(format!("{s:?} is not a decimal number")));
        }
        if frac.len() > 7 {
            return Err(CurrencyError::Rate(format!("{s:?} has more than 7 decimal places")));
        }
        let all = format!("{int}{frac}");
        let significant = all.trim_start_matches('0');
        if significant.len() > 7 {
            return Err(CurrencyError::Rate(format!("{s:?} has more than 7 significant digits")));
        }
        let digits: u32 = if significant.is_empty() { 0 } else { significant.parse().unwrap_or(0) };
        if digits == 0 {
            return Err(CurrencyError::Rate(format!("{s:?} is zero")));
        }
        Ok(Rate { digits, decimals: frac.len() as u8 })
    }

    /// Parses DE 10's eight digits.
    pub fn parse_de10(s: &str) -> Result<Rate, CurrencyError> {
        let b = s.as_bytes();
        if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
            return Err(CurrencyError::Rate(format!("DE 10 must be 8 digits, found {s:?}")));
        }
        let decimals = b[0] - b'0';
        if decimals > 7 {
            return Err(CurrencyError::Rate(format!("DE 10 {s:?}: the decimal-place digit is above 7")));
        }
        let digits: u32 = s[1..].parse().unwrap_or(0);
        if digits == 0 {
            return Err(CurrencyError::Rate(format!("DE 10 {s:?} is zero")));
        }
        Ok(Rate { digits, decimals })
    }

    /// DE 10's eight digits.
    pub fn de10(&self) -> String {
        format!("{}{:07}", self.decimals, self.digits)
    }

    /// `amount` (minor units of `from`) in minor units of `to`, rounded half up.
    pub fn convert(&self, amount: u64, from: &Currency, to: &Currency) -> Result<u64, CurrencyError> {
        // amount / 10^ef × digits / 10^d × 10^et
        let num = u128::from(amount) * u128::from(self.digits) * 10u128.pow(u32::from(to.exponent));
        let den = 10u128.pow(u32::from(self.decimals) + u32::from(from.exponent));
        let q = (num + den / 2) / den;
        if q > 999_999_999_999 {
            return Err(CurrencyError::Overflow);
        }
        Ok(q as u64)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{:0>width$}", self.digits, width = usize::from(self.decimals) + 1);
        let (i, d) = s.split_at(s.len() - usize::from(self.decimals));
        if d.is_empty() { write!(f, "{i}") } else { write!(f, "{i}.{d}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> &'static Currency {
        by_numeric(code).expect("currency")
    }

    #[test]
    fn the_table_knows_exponents_and_codes_once() {
        assert_eq!(c("901").alpha, "TWD");
        assert_eq!(c("978").exponent, 2);
        assert_eq!(c("392").exponent, 0);
        assert_eq!(c("414").exponent, 3);
        assert_eq!(by_alpha("clf").map(|c| c.exponent), Some(4));
        assert!(by_numeric("999").is_none());
        let mut seen = std::collections::HashSet::new();
        for cur in ISO_4217 {
            assert!(seen.insert(cur.numeric), "{} twice", cur.numeric);
            assert!(seen.insert(cur.alpha), "{} twice", cur.alpha);
            assert_eq!(cur.numeric.len(), 3);
        }
    }

    #[test]
    fn amounts_show_with_the_currency_exponent() {
        assert_eq!(c("901").show(100_000), "TWD 1000.00");
        assert_eq!(c("978").show(5), "EUR 0.05");
        assert_eq!(c("392").show(1250), "JPY 1250");
        assert_eq!(c("414").show(1250), "KWD 1.250");
    }

    #[test]
    fn rates_parse_both_ways_and_refuse_what_de10_cannot_carry() {
        let r = Rate::parse_decimal("0.0285714").unwrap();
        assert_eq!((r.digits, r.decimals), (285_714, 7));
        assert_eq!(r.de10(), "70285714");
        assert_eq!(Rate::parse_de10("70285714").unwrap(), r);
        assert_eq!(r.to_string(), "0.0285714");
        assert_eq!(Rate::parse_decimal("35").unwrap().de10(), "00000035");
        assert_eq!(Rate::parse_decimal("35.0").unwrap().to_string(), "35.0");
        assert!(Rate::parse_decimal("0.00000001").is_err(), "8 decimals");
        assert!(Rate::parse_decimal("12345678").is_err(), "8 significant digits");
        assert!(Rate::parse_decimal("0").is_err());
        assert!(Rate::parse_decimal("1,5").is_err());
        assert!(Rate::parse_de10("80000001").is_err());
        assert!(Rate::parse_de10("7028571").is_err());
    }

    #[test]
    fn conversion_rounds_half_up_at_the_billing_minor_unit() {
        let twd_eur = Rate::parse_decimal("0.0285714").unwrap();
        // TWD 1,000.00 → EUR 28.5714 → 28.57.
        assert_eq!(twd_eur.convert(100_000, c("901"), c("978")).unwrap(), 2_857);
        // TWD 17.50 → EUR 0.4999995 → 0.50 (half up at the cent).
        assert_eq!(twd_eur.convert(1_750, c("901"), c("978")).unwrap(), 50);
        // Exactly half a cent rounds up: 0.5 × 0.01 = 0.005 EUR → 0.01.
        let half = Rate::parse_decimal("0.5").unwrap();
        assert_eq!(half.convert(1, c("978"), c("978")).unwrap(), 1);
        assert_eq!(half.convert(3, c("978"), c("978")).unwrap(), 2);
        // Exponents differ: EUR 10.00 at 160.5 → JPY 1,605; JPY 1,000 at 0.0062 → EUR 6.20.
        assert_eq!(Rate::parse_decimal("160.5").unwrap().convert(1_000, c("978"), c("392")).unwrap(), 1_605);
        assert_eq!(Rate::parse_decimal("0.0062").unwrap().convert(1_000, c("392"), c("978")).unwrap(), 620);
        // EUR 1.00 at 0.3305 → KWD 0.331 (three decimals).
        assert_eq!(Rate::parse_decimal("0.3305").unwrap().convert(100, c("978"), c("414")).unwrap(), 331);
        // Twelve digits at most.
        assert_eq!(
            Rate::parse_decimal("9999999").unwrap().convert(999_999_999_999, c("978"), c("978")),
            Err(CurrencyError::Overflow)
        );
    }
}
