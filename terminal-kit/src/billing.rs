//! The network's currency conversion as a terminal's answer shows it: when the card is billed in
//! another currency than the terminal sells in, the switch copies into the answer what it sent the
//! issuer — the cardholder billing amount (DE 6), the rate (DE 10) and the billing currency
//! (DE 51) — so that the receipt and the ATM screen show both amounts.

use codecs::currency::{Currency, Rate};
use codecs::iso8583::Message;

/// What the card is charged, in its billing currency, and at what rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Billing {
    pub amount_minor: u64,
    pub currency: &'static Currency,
    pub rate: Rate,
}

impl Billing {
    /// DE 6, 10 and 51 of an answer; `None` unless all three are there and readable.
    pub fn of(answer: &Message) -> Option<Billing> {
        let amount_minor = answer.text(6)?.parse().ok()?;
        let currency = codecs::currency::by_numeric(&answer.text(51)?)?;
        let rate = Rate::parse_de10(&answer.text(10)?).ok()?;
        Some(Billing { amount_minor, currency, rate })
    }

    /// `minor` units of the terminal's currency `from` at the same rate, in the billing currency
    /// (rounded half up, as the network converts).
    pub fn at_same_rate(&self, minor: u64, from: &Currency) -> Option<u64> {
        self.rate.convert(minor, from, self.currency).ok()
    }

    /// `EUR 28.57 at 0.0285714`.
    pub fn show(&self) -> String {
        format!("{} at {}", self.currency.show(self.amount_minor), self.rate)
    }
}

/// `minor` units of the currency with ISO 4217 numeric code `numeric`, as it writes them
/// (`TWD 1000.00`); a code the table does not know shows as the code and the minor units.
pub fn show_amount(numeric: &str, minor: u64) -> String {
    match codecs::currency::by_numeric(numeric) {
        Some(c) => c.show(minor),
        None => format!("{numeric} {minor}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codecs::iso8583::{Mti, Spec};

    #[test]
    fn an_answer_with_the_conversion_shows_both_amounts() {
        let spec = Spec::builtin("network").expect("spec");
        let mut m = Message::new(spec.clone(), Mti::AUTHORIZATION_RESPONSE);
        assert_eq!(Billing::of(&m), None, "no conversion");
        m.set_text(6, "000000002857").expect("DE 6");
        m.set_text(10, "70285714").expect("DE 10");
        m.set_text(51, "978").expect("DE 51");
        let b = Billing::of(&m).expect("billing");
        assert_eq!(b.show(), "EUR 28.57 at 0.0285714");
        let twd = codecs::currency::by_numeric("901").expect("TWD");
        // TWD 400.00 at the same rate: 11.428... → EUR 11.43.
        assert_eq!(b.at_same_rate(40_000, twd), Some(1_143));
        assert_eq!(show_amount("901", 100_000), "TWD 1000.00");
        assert_eq!(show_amount("999", 7), "999 7");
    }
}
