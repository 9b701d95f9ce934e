//! What a merchant terminal prints after a transaction: the receipt (merchant, terminal, time,
//! masked PAN, entry mode, amount in the currency's own minor units, counters, the response code
//! and its meaning, the authorization code, whether the card verified the issuer's ARPC, the
//! reversal advices sent and still owed, and the verdict), as text for people and as JSON for tools.
//!
//! Amounts stay integers of minor units end to end: the currency's exponent (ISO 4217's "minor
//! unit" column) only places the decimal separator when printing.

use serde::Serialize;

/// An ISO 4217 currency: numeric code, alphabetic code, exponent (digits after the separator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    pub numeric: u16,
    pub alpha: &'static str,
    pub exponent: u8,
}

/// The active ISO 4217 currencies (list one, "Current currency & funds code list"), by numeric
/// code, with their minor unit. Funds codes and precious metals without a minor unit are left out.
const CURRENCIES: &[(u16, &str, u8)] = &[
    (8, "ALL", 2),
    (12, "DZD", 2),
    (32, "ARS", 2),
    (36, "AUD", 2),
    (44, "BSD", 2),
    (48, "BHD", 3),
    (50, "BDT", 2),
    (51, "AMD", 2),
    (52, "BBD", 2),
    (60, "BMD", 2),
    (64, "BTN", 2),
    (68, "BOB", 2),
    (72, "BWP", 2),
    (84, "BZD", 2),
    (90, "SBD", 2),
    (96, "BND", 2),
    (104, "MMK", 2),
    (108, "BIF", 0),
    (116, "KHR", 2),
    (124, "CAD", 2),
    (132, "CVE", 2),
    (136, "KYD", 2),
    (144, "LKR", 2),
    (152, "CLP", 0),
    (156, "CNY", 2),
    (170, "COP", 2),
    (174, "KMF", 0),
    (188, "CRC", 2),
    (192, "CUP", 2),
    (203, "CZK", 2),
    (208, "DKK", 2),
    (214, "DOP", 2),
    (222, "SVC", 2),
    (230, "ETB", 2),
    (232, "ERN", 2),
    (238, "FKP", 2),
    (242, "FJD", 2),
    (262, "DJF", 0),
    (270, "GMD", 2),
    (292, "GIP", 2),
    (320, "GTQ", 2),
    (324, "GNF", 0),
    (328, "GYD", 2),
    (332, "HTG", 2),
    (340, "HNL", 2),
    (344, "HKD", 2),
    (348, "HUF", 2),
    (352, "ISK", 0),
    (356, "INR", 2),
    (360, "IDR", 2),
    (364, "IRR", 2),
    (368, "IQD", 3),
    (376, "ILS", 2),
    (388, "JMD", 2),
    (392, "JPY", 0),
    (398, "KZT", 2),
    (400, "JOD", 3),
    (404, "KES", 2),
    (408, "KPW", 2),
    (410, "KRW", 0),
    (414, "KWD", 3),
    (417, "KGS", 2),
    (418, "LAK", 2),
    (422, "LBP", 2),
    (426, "LSL", 2),
    (430, "LRD", 2),
    (434, "LYD", 3),
    (446, "MOP", 2),
    (454, "MWK", 2),
    (458, "MYR", 2),
    (462, "MVR", 2),
    (480, "MUR", 2),
    (484, "MXN", 2),
    (496, "MNT", 2),
    (498, "MDL", 2),
    (504, "MAD", 2),
    (512, "OMR", 3),
    (516, "NAD", 2),
    (524, "NPR", 2),
    (533, "AWG", 2),
    (548, "VUV", 0),
    (554, "NZD", 2),
    (558, "NIO", 2),
    (566, "NGN", 2),
    (578, "NOK", 2),
    (586, "PKR", 2),
    (590, "PAB", 2),
    (598, "PGK", 2),
    (600, "PYG", 0),
    (604, "PEN", 2),
    (608, "PHP", 2),
    (634, "QAR", 2),
    (643, "RUB", 2),
    (646, "RWF", 0),
    (654, "SHP", 2),
    (682, "SAR", 2),
    (690, "SCR", 2),
    (702, "SGD", 2),
    (704, "VND", 0),
    (706, "SOS", 2),
    (710, "ZAR", 2),
    (728, "SSP", 2),
    (748, "SZL", 2),
    (752, "SEK", 2),
    (756, "CHF", 2),
    (760, "SYP", 2),
    (764, "THB", 2),
    (776, "TOP", 2),
    (780, "TTD", 2),
    (784, "AED", 2),
    (788, "TND", 3),
    (800, "UGX", 0),
    (807, "MKD", 2),
    (818, "EGP", 2),
    (826, "GBP", 2),
    (834, "TZS", 2),
    (840, "USD", 2),
    (858, "UYU", 2),
    (860, "UZS", 2),
    (882, "WST", 2),
    (886, "YER", 2),
    (901, "TWD", 2),
    (925, "SLE", 2),
    (928, "VES", 2),
    (929, "MRU", 2),
    (930, "STN", 2),
    (933, "BYN", 2),
    (934, "TMT", 2),
    (936, "GHS", 2),
    (938, "SDG", 2),
    (941, "RSD", 2),
    (943, "MZN", 2),
    (944, "AZN", 2),
    (946, "RON", 2),
    (949, "TRY", 2),
    (950, "XAF", 0),
    (951, "XCD", 2),
    (952, "XOF", 0),
    (953, "XPF", 0),
    (967, "ZMW", 2),
    (968, "SRD", 2),
    (969, "MGA", 2),
    (971, "AFN", 2),
    (972, "TJS", 2),
    (973, "AOA", 2),
    (975, "BGN", 2),
    (976, "CDF", 2),
    (977, "BAM", 2),
    (978, "EUR", 2),
    (980, "UAH", 2),
    (981, "GEL", 2),
    (985, "PLN", 2),
    (986, "BRL", 2),
];

impl Currency {
    /// The currency with ISO 4217 numeric code `numeric`, when it is an active one.
    pub fn from_numeric(numeric: u16) -> Option<Currency> {
        CURRENCIES.iter().find(|(n, _, _)| *n == numeric).map(|&(numeric, alpha, exponent)| Currency {
            numeric,
            alpha,
            exponent,
        })
    }

    /// `minor` units as the currency writes them: `1250` EUR → `12.50`, `1250` JPY → `1250`,
    /// `1250` KWD → `1.250`. Integer arithmetic only.
    pub fn format(&self, minor: u64) -> String {
        if self.exponent == 0 {
            return minor.to_string();
        }
        let scale = 10u64.pow(u32::from(self.exponent));
        format!("{}.{:0width$}", minor / scale, minor % scale, width = usize::from(self.exponent))
    }
}

/// What a response code (DE 39) means, as docs/network-spec.md §6 lists them; `Z1` is the
/// terminal's own offline decline (EMV Book 4 §A6, authorisation response code).
pub fn response_meaning(rc: &str) -> &'static str {
    match rc {
        "00" => "approved",
        "05" => "do not honour",
        "12" => "invalid transaction",
        "13" => "invalid amount",
        "14" => "invalid card number",
        "15" => "no such issuer",
        "1A" => "additional cardholder authentication required",
        "30" => "format error",
        "41" => "lost card, pick up",
        "51" => "insufficient funds",
        "54" => "expired card or token",
        "55" => "incorrect PIN",
        "57" => "transaction not permitted to cardholder",
        "62" => "restricted card",
        "63" => "security violation",
        "68" => "response received too late",
        "75" => "PIN tries exceeded",
        "82" => "cryptogram failure",
        "N7" => "CVV2 missing or wrong",
        "91" => "issuer unavailable",
        "94" => "duplicate transmission",
        "96" => "system malfunction",
        "Z1" => "declined offline by the terminal",
        _ => "unknown response code",
    }
}

/// One transaction's receipt. `pan` is always masked (first 6, last 4).
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    /// `APPROVED` or `DECLINED`.
    pub result: &'static str,
    pub approved: bool,
    pub merchant_name: String,
    pub mid: String,
    pub tid: String,
    pub mcc: String,
    /// When the terminal sent the request (UTC).
    pub date_time: String,
    pub pan: String,
    /// `contactless`, `in-app` or `key-entered`.
    pub entry_mode: &'static str,
    /// DE 22 as sent.
    pub pos_entry_mode: String,
    pub amount_minor: u64,
    /// ISO 4217 numeric code, three digits.
    pub currency: String,
    pub currency_alpha: &'static str,
    /// The amount as the currency writes it.
    pub amount: String,
    pub stan: String,
    pub rrn: String,
    /// The card's application transaction counter (hex), for chip and in-app payments.
    pub atc: Option<String>,
    /// `ARQC` (went online) or `AAC` (declined offline), for chip and in-app payments.
    pub cryptogram: Option<&'static str>,
    /// Whether the request went to the network (false: declined offline).
    pub sent: bool,
    /// DE 39 of the answer (`Z1`: the terminal's offline decline; None: no answer).
    pub response_code: Option<String>,
    pub response_meaning: &'static str,
    /// DE 38.
    pub auth_code: Option<String>,
    /// Whether the card accepted the issuer's ARPC (None when there is no card to ask).
    pub arpc_verified: Option<bool>,
    /// The reversal advice (0420) the terminal sent, when it could not stand by the outcome:
    /// `acknowledged`; `owed` (no acknowledgement: kept in the state folder, delivered before the
    /// terminal's next transaction or by `terminal-sim reversals`); `refused` (the switch refused
    /// it for good); `not sent`.
    pub reversal: Option<&'static str>,
    /// Reversal advices owed from earlier transactions that were delivered before this one.
    pub owed_advices_delivered: usize,
    /// Reversal advices this terminal still owes after this transaction (this one's included).
    pub owed_advices_left: usize,
    /// Why an approval by the network still ends declined at the terminal.
    pub note: Option<String>,
    /// The request and the answer in the JSON form of INTERFACES.md §1, sensitive elements masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

impl Receipt {
    /// The receipt as printed.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let line = "-".repeat(40);
        let _ = writeln!(s, "{line}");
        let _ = writeln!(s, "{}", self.merchant_name);
        let _ = writeln!(s, "Merchant   {}  MCC {}", self.mid.trim_end(), self.mcc);
        let _ = writeln!(s, "Terminal   {}", self.tid.trim_end());
        let _ = writeln!(s, "Date       {}", self.date_time);
        let _ = writeln!(s, "Card       {}", self.pan);
        let _ = writeln!(s, "Entry      {} (DE 22 {})", self.entry_mode, self.pos_entry_mode);
        let _ = writeln!(s, "Amount     {} {}", self.currency_alpha, self.amount);
        let _ = writeln!(s, "STAN       {}   RRN {}", self.stan, self.rrn);
        if let Some(atc) = &self.atc {
            let _ = writeln!(s, "ATC        {atc}   {}", self.cryptogram.unwrap_or(""));
        }
        let _ = writeln!(
            s,
            "Response   {} {}",
            self.response_code.as_deref().unwrap_or("(none)"),
            self.response_meaning
        );
        if !self.sent {
            let _ = writeln!(s, "           nothing sent to the network");
        }
        let _ = writeln!(s, "Auth code  {}", self.auth_code.as_deref().unwrap_or("-"));
        if let Some(v) = self.arpc_verified {
            let _ = writeln!(s, "ARPC verified by the card: {}", if v { "yes" } else { "no" });
        }
        if self.owed_advices_delivered > 0 {
            let _ = writeln!(
                s,
                "Owed       {} earlier reversal advice(s) delivered first",
                self.owed_advices_delivered
            );
        }
        if let Some(rev) = self.reversal {
            let _ = writeln!(s, "Reversal   advice sent, {rev}");
        }
        if self.owed_advices_left > 0 {
            let _ = writeln!(s, "Owed       {} reversal advice(s) still owed", self.owed_advices_left);
        }
        if let Some(n) = &self.note {
            let _ = writeln!(s, "Note       {n}");
        }
        let _ = writeln!(s, "{}", self.result);
        let _ = writeln!(s, "{line}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_follow_the_currency_exponent() {
        // ISO 4217 minor units: EUR 2, JPY 0, KWD 3.
        let eur = Currency::from_numeric(978).expect("EUR");
        assert_eq!(
            (eur.alpha, eur.format(1250), eur.format(5), eur.format(0)),
            ("EUR", "12.50".into(), "0.05".into(), "0.00".into())
        );
        assert_eq!(Currency::from_numeric(392).expect("JPY").format(1250), "1250");
        assert_eq!(Currency::from_numeric(414).expect("KWD").format(1250), "1.250");
        assert_eq!(Currency::from_numeric(840).expect("USD").format(999_999_999_999), "9999999999.99");
        assert!(Currency::from_numeric(999).is_none(), "not a currency");
    }

    #[test]
    fn the_currency_table_is_sorted_and_unique() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(CURRENCIES.iter().all(|(_, a, e)| a.len() == 3 && *e <= 3));
    }

    #[test]
    fn response_codes_have_their_meaning() {
        assert_eq!(response_meaning("00"), "approved");
        assert_eq!(response_meaning("N7"), "CVV2 missing or wrong");
        assert_eq!(response_meaning("51"), "insufficient funds");
        assert_eq!(response_meaning("??"), "unknown response code");
    }
}
