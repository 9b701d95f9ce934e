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

impl Currency {
    /// The currency with ISO 4217 numeric code `numeric`, when the table knows it
    /// (`codecs::currency`, the one table of the workspace).
    pub fn from_numeric(numeric: u16) -> Option<Currency> {
        codecs::currency::by_numeric(&format!("{numeric:03}")).map(|c| Currency {
            numeric,
            alpha: c.alpha,
            exponent: c.exponent,
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

/// The amount in the card's billing currency, as the network converted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BilledAmount {
    pub amount_minor: u64,
    /// ISO 4217 numeric code, three digits.
    pub currency: String,
    pub currency_alpha: &'static str,
    /// The amount as the currency writes it.
    pub amount: String,
    /// The rate applied (billing units per unit of the terminal's currency), as a decimal.
    pub rate: String,
}

impl BilledAmount {
    /// The conversion an answer carries (DE 6, 10, 51), if any.
    pub fn of(answer: &codecs::iso8583::Message) -> Option<BilledAmount> {
        let b = terminal_kit::billing::Billing::of(answer)?;
        let shown = b.currency.show(b.amount_minor);
        Some(BilledAmount {
            amount_minor: b.amount_minor,
            currency: b.currency.numeric.to_string(),
            currency_alpha: b.currency.alpha,
            amount: shown.split_once(' ').map(|(_, a)| a.to_string()).unwrap_or(shown),
            rate: b.rate.to_string(),
        })
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
    /// What the card is charged in its billing currency, when the network converted the amount
    /// (the answer's DE 6, 10 and 51).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing: Option<BilledAmount>,
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
        if let Some(b) = &self.billing {
            let _ = writeln!(s, "Billed     {} {} (rate {})", b.currency_alpha, b.amount, b.rate);
        }
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
    fn response_codes_have_their_meaning() {
        assert_eq!(response_meaning("00"), "approved");
        assert_eq!(response_meaning("N7"), "CVV2 missing or wrong");
        assert_eq!(response_meaning("51"), "insufficient funds");
        assert_eq!(response_meaning("??"), "unknown response code");
    }
}
