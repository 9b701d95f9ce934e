//! Online checkout: the merchant's payment gateway side of a card-not-present purchase.
//!
//! * In-app / e-commerce with a token: the phone's wallet app asks its card application for an
//!   online cryptogram over the order (the same GENERATE AC a tap runs, the merchant's data in
//!   place of a terminal's), and the gateway sends a 0100 with DE 22 `100` (credential on file /
//!   in-app tokenized), the token in DE 2 and the cryptogram in DE 55 — no track data.
//! * Card-not-present fallback with a real PAN: the cardholder types PAN, expiry and CVV2; the 0100
//!   has DE 22 `810` and the CVV2 in DE 48 subelement 92 (docs/network-spec.md §3).
//! * The POS's own 0100 for a tap ([`contactless_request`]): the card's data as the kernel read it,
//!   the merchant's data from the same [`Order`].

use codecs::iso8583::{Message, Mti, Spec};

use emv::kernel::Tapped;
use terminal_kit::pos::PosError;

/// What is being bought, from whom.
#[derive(Debug, Clone)]
pub struct Order {
    pub stan: u32,
    /// Minor units of `currency`.
    pub amount: u64,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// The gateway's terminal ID for this merchant (DE 41).
    pub tid: String,
    /// The merchant's ID (DE 42) and category code (DE 18).
    pub mid: String,
    pub mcc: String,
    /// MMDDhhmmss of the transmission (DE 7).
    pub transmitted: String,
}

/// The 0100 of an order: the merchant's and the transaction's elements, with the entry mode
/// (DE 22), the POS condition code (DE 25) and the retrieval reference number (DE 37) of the
/// channel; the caller adds the card's.
pub(crate) fn order_request(
    spec: &std::sync::Arc<Spec>,
    o: &Order,
    entry_mode: &str,
    condition: &str,
    rrn: &str,
) -> Result<Message, PosError> {
    let mut m = Message::new(spec.clone(), Mti::AUTHORIZATION_REQUEST);
    for (de, v) in [
        (3u16, "000000"),
        (4, &format!("{:012}", o.amount)),
        (7, &o.transmitted),
        (11, &o.stan_text()),
        (12, o.transmitted.get(4..10).unwrap_or("000000")),
        (13, o.transmitted.get(..4).unwrap_or("0101")),
        (18, &o.mcc),
        (22, entry_mode),
        (25, condition),
        (37, rrn),
        (41, &o.tid),
        (42, &o.mid),
        (49, &format!("{:03}", o.currency)),
    ] {
        m.set_text(de, v)?;
    }
    Ok(m)
}

/// The card's elements from what the kernel or the phone gave: DE 2, 14, 23 and 55.
pub(crate) fn set_card(m: &mut Message, tapped: &Tapped) -> Result<(), PosError> {
    m.set_text(2, &tapped.pan)?;
    m.set_text(14, &tapped.expiry)?;
    m.set_text(23, &format!("0{}", tapped.psn))?;
    m.set_icc_data(&tapped.icc)?;
    Ok(())
}

impl Order {
    /// DE 11.
    fn stan_text(&self) -> String {
        format!("{:06}", self.stan % 1_000_000)
    }

    /// DE 37 of an e-commerce order: `EC`, the transmission's MMDD, the STAN.
    fn ecommerce_rrn(&self) -> String {
        format!("EC{}{}", self.transmitted.get(..4).unwrap_or("0101"), self.stan_text())
    }
}

/// An in-app / e-commerce 0100 with the token and the online cryptogram the phone produced.
pub fn in_app_request(spec: &std::sync::Arc<Spec>, tapped: &Tapped, o: &Order) -> Result<Message, PosError> {
    let mut m = order_request(spec, o, "100", "59", &o.ecommerce_rrn())?;
    set_card(&mut m, tapped)?;
    Ok(m)
}

/// A card-not-present 0100 with a key-entered PAN and its CVV2.
pub fn key_entered_request(
    spec: &std::sync::Arc<Spec>,
    pan: &str,
    expiry: &str,
    cvv2: &str,
    o: &Order,
) -> Result<Message, PosError> {
    let mut m = order_request(spec, o, "810", "59", &o.ecommerce_rrn())?;
    m.set_text(2, pan)?;
    m.set_text(14, expiry)?;
    m.set_text(48, &format!("92{:02}{cvv2}", cvv2.len()))?;
    Ok(m)
}

/// A contactless chip 0100 (DE 22 `071`) from what the kernel read off the card, with the
/// merchant's own data from `order` — DE 7 and the local date and time (DE 12, 13; the terminal
/// keeps UTC), DE 18, 41, 42, 49 — and the retrieval reference number `rrn` (DE 37).
pub fn contactless_request(
    spec: &std::sync::Arc<Spec>,
    tapped: &Tapped,
    order: &Order,
    rrn: &str,
) -> Result<Message, PosError> {
    let mut m = order_request(spec, order, "071", "00", rrn)?;
    set_card(&mut m, tapped)?;
    if !tapped.track2.is_empty() {
        m.set_text(35, &tapped.track2)?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use emv::card::{CardKeys, CardProfile, EmvApplet};
    use emv::kernel::{TerminalConfig, TxData, tap};
    use terminal_kit::pos::reversal_advice;

    #[test]
    fn a_contactless_request_carries_the_merchant_and_its_reversal_names_it() {
        let spec = Spec::builtin("network").expect("spec");
        let mut card = EmvApplet::new(CardProfile {
            pan: "4761739001010010".into(),
            expiry: "2912".into(),
            psn: "01".into(),
            cvn: "visa18".into(),
            aid: "A0000000031010".into(),
            label: "TEST".into(),
            keys: CardKeys::Master { icc_mk: "0123456789ABCDEFFEDCBA9876543210".into() },
            atc: 0,
        });
        let tx = TxData { amount: 1250, tx_type: 0, date: [0x26, 0x11, 0x25], un: [1, 2, 3, 4] };
        let tapped = tap(&mut card, &TerminalConfig::default(), &tx).expect("tap");
        let order = Order {
            stan: 42,
            amount: 1250,
            currency: 826,
            tid: "SHOP0042".into(),
            mid: "MERCHANT0000042".into(),
            mcc: "5812".into(),
            transmitted: "1125093049".into(),
        };
        let m = contactless_request(spec, &tapped, &order, "633009000042").expect("request");
        let t = |m: &Message, de| m.text(de).map(|c| c.into_owned()).unwrap_or_default();
        for (de, want) in [
            (4, "000000001250"),
            (7, "1125093049"),
            (11, "000042"),
            (12, "093049"),
            (13, "1125"),
            (18, "5812"),
            (22, "071"),
            (23, "001"),
            (37, "633009000042"),
            (41, "SHOP0042"),
            (42, "MERCHANT0000042"),
            (49, "826"),
        ] {
            assert_eq!(t(&m, de), want, "DE {de}");
        }
        assert!(m.icc_data().expect("DE 55").is_some());
        let r = reversal_advice(&m, 43, "1125093115", "68").expect("reversal");
        assert_eq!(r.mti(), Mti::REVERSAL_ADVICE);
        assert_eq!(
            (t(&r, 11), t(&r, 7), t(&r, 39), t(&r, 4)),
            ("000043".into(), "1125093115".into(), "68".into(), "000000001250".into())
        );
        assert_eq!(t(&r, 90), format!("0100000042{}{}", "1125093049", "0".repeat(22)));
        assert!(!r.contains(55), "no ICC data in the advice");
    }
}
