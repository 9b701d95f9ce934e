//! Stand-in processing: when an issuer cannot be reached, the switch decides on its behalf within
//! limits the issuer agreed to, records each approval, and sends it to the issuer as an 0120
//! advice through store-and-forward when the issuer returns.
//!
//! Stand-in approves only what the switch itself could verify: a chip card whose issuer key it
//! holds (or a token whose cryptogram the token service verified), with the cryptogram verified
//! and its ATC accepted once in the durable window. Anything else is declined 91, as if the issuer
//! were asked. The decision is a function of the rules, the request and the card's running
//! stand-in total, which the caller keeps durably (`state::StateBook`), by the card's keyed PAN
//! fingerprint, never the PAN.

use codecs::iso8583::ResponseCode;

use crate::config::StandInConfig;

/// What stand-in needs to know about a request.
#[derive(Debug, Clone)]
pub struct StandInRequest<'a> {
    /// DE 3, six digits.
    pub processing_code: &'a str,
    pub amount_minor: u64,
    /// DE 49, ISO 4217 numeric.
    pub currency: &'a str,
    /// The request carried a PIN (stand-in cannot verify PINs without the issuer's PVK).
    pub has_pin: bool,
    /// The switch verified the cryptogram (and accepted its ATC) of this request.
    pub verified: bool,
}

/// The stand-in decision and its DE 39.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandInDecision {
    Approve,
    Decline(ResponseCode),
}

impl StandInDecision {
    pub fn response_code(self) -> ResponseCode {
        match self {
            StandInDecision::Approve => ResponseCode::APPROVED,
            StandInDecision::Decline(rc) => rc,
        }
    }
}

pub struct StandIn {
    rules: std::sync::RwLock<StandInConfig>,
}

impl StandIn {
    pub fn new(rules: StandInConfig) -> Self {
        StandIn { rules: std::sync::RwLock::new(rules) }
    }

    /// Decides; `reserve(amount, max_total)` adds the amount to the card's running total when the
    /// total stays within `max_total` and says whether it did (called last, only for an approval).
    pub fn decide(
        &self,
        req: &StandInRequest<'_>,
        reserve: impl FnOnce(u64, u64) -> bool,
    ) -> StandInDecision {
        let r = self.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
        let r = &r;
        if !r.enabled || !req.verified {
            return StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE);
        }
        let tx_type = req.processing_code.get(..2).unwrap_or("");
        if !r.transaction_types.iter().any(|t| t == tx_type) {
            return StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE);
        }
        if req.has_pin {
            return StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE);
        }
        if req.currency != r.currency {
            return StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE);
        }
        if req.amount_minor == 0 || req.amount_minor > r.max_amount_minor {
            return StandInDecision::Decline(if req.amount_minor == 0 {
                ResponseCode::INVALID_AMOUNT
            } else {
                ResponseCode::ISSUER_UNAVAILABLE
            });
        }
        if !reserve(req.amount_minor, r.max_total_per_card_minor) {
            return StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE);
        }
        StandInDecision::Approve
    }

    /// New rules (a configuration reload); running totals are kept.
    pub fn set_rules(&self, rules: StandInConfig) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> StandInConfig {
        StandInConfig {
            enabled: true,
            max_amount_minor: 10_000,
            currency: "901".into(),
            max_total_per_card_minor: 15_000,
            transaction_types: vec!["00".into()],
        }
    }

    fn req(amount: u64) -> StandInRequest<'static> {
        StandInRequest {
            processing_code: "000000",
            amount_minor: amount,
            currency: "901",
            has_pin: false,
            verified: true,
        }
    }

    /// A running total in a cell, as the state book keeps it.
    fn totals(total: &std::cell::Cell<u64>) -> impl FnOnce(u64, u64) -> bool + '_ {
        move |amount, max| {
            let new = total.get() + amount;
            (new <= max).then(|| total.set(new)).is_some()
        }
    }

    #[test]
    fn approves_under_limits_and_tracks_the_card_total() {
        let s = StandIn::new(rules());
        let fp1 = std::cell::Cell::new(0);
        assert_eq!(s.decide(&req(10_000), totals(&fp1)), StandInDecision::Approve);
        assert_eq!(
            s.decide(&req(6_000), totals(&fp1)),
            StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE),
            "over the per-card total"
        );
        assert_eq!(s.decide(&req(5_000), totals(&fp1)), StandInDecision::Approve);
        assert_eq!(fp1.get(), 15_000);
    }

    #[test]
    fn declines_outside_the_rules_and_what_it_could_not_verify() {
        let s = StandIn::new(rules());
        let t = std::cell::Cell::new(0);
        assert_eq!(
            s.decide(&req(10_001), totals(&t)),
            StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE)
        );
        assert_eq!(s.decide(&req(0), totals(&t)), StandInDecision::Decline(ResponseCode::INVALID_AMOUNT));
        assert_eq!(
            s.decide(&StandInRequest { currency: "840", ..req(100) }, totals(&t)),
            StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE)
        );
        assert_eq!(
            s.decide(&StandInRequest { processing_code: "013000", ..req(100) }, totals(&t)),
            StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE)
        );
        assert_eq!(
            s.decide(&StandInRequest { has_pin: true, ..req(100) }, totals(&t)),
            StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE)
        );
        assert_eq!(
            s.decide(&StandInRequest { verified: false, ..req(100) }, totals(&t)),
            StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE)
        );
        let off = StandIn::new(StandInConfig { enabled: false, ..rules() });
        assert_eq!(
            off.decide(&req(100), totals(&t)),
            StandInDecision::Decline(ResponseCode::ISSUER_UNAVAILABLE)
        );
        assert_eq!(t.get(), 0, "no refusal adds to the total");
    }
}
