//! Stand-in processing: when an issuer cannot be reached, the switch decides on its behalf within
//! limits the issuer agreed to, records each approval, and sends it to the issuer as an 0120
//! advice through store-and-forward when the issuer returns.
//!
//! The decision is a pure function of the rules, the request and the card's running stand-in
//! total; the caller has already verified the cryptogram (a request that fails verification never
//! reaches stand-in). Cards are tracked by their keyed PAN fingerprint, never the PAN.

use std::collections::HashMap;
use std::sync::Mutex;

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
    /// Keyed fingerprint of the PAN.
    pub card_fingerprint: &'a str,
}

/// The stand-in decision and its DE 39.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandInDecision {
    Approve,
    Decline(&'static str),
}

impl StandInDecision {
    pub fn response_code(self) -> &'static str {
        match self {
            StandInDecision::Approve => "00",
            StandInDecision::Decline(rc) => rc,
        }
    }
}

pub struct StandIn {
    rules: StandInConfig,
    totals: Mutex<HashMap<String, u64>>,
}

impl StandIn {
    pub fn new(rules: StandInConfig) -> Self {
        StandIn { rules, totals: Mutex::new(HashMap::new()) }
    }

    /// Decides, and on approval adds the amount to the card's running total.
    pub fn decide(&self, req: &StandInRequest<'_>) -> StandInDecision {
        let r = &self.rules;
        if !r.enabled {
            return StandInDecision::Decline("91");
        }
        let tx_type = req.processing_code.get(..2).unwrap_or("");
        if !r.transaction_types.iter().any(|t| t == tx_type) {
            return StandInDecision::Decline("91");
        }
        if req.has_pin {
            return StandInDecision::Decline("91");
        }
        if req.currency != r.currency {
            return StandInDecision::Decline("91");
        }
        if req.amount_minor == 0 || req.amount_minor > r.max_amount_minor {
            return StandInDecision::Decline(if req.amount_minor == 0 { "13" } else { "91" });
        }
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        let total = totals.entry(req.card_fingerprint.to_string()).or_insert(0);
        let new_total = total.saturating_add(req.amount_minor);
        if new_total > r.max_total_per_card_minor {
            return StandInDecision::Decline("91");
        }
        *total = new_total;
        StandInDecision::Approve
    }

    /// The issuer is back and has the advices: running totals start again.
    pub fn reset(&self) {
        self.totals.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
            card_fingerprint: "fp1",
        }
    }

    #[test]
    fn approves_under_limits_and_tracks_the_card_total() {
        let s = StandIn::new(rules());
        assert_eq!(s.decide(&req(10_000)), StandInDecision::Approve);
        assert_eq!(s.decide(&req(6_000)), StandInDecision::Decline("91"), "over the per-card total");
        assert_eq!(s.decide(&req(5_000)), StandInDecision::Approve);
        assert_eq!(
            s.decide(&StandInRequest { card_fingerprint: "fp2", ..req(10_000) }),
            StandInDecision::Approve
        );
        s.reset();
        assert_eq!(s.decide(&req(10_000)), StandInDecision::Approve);
    }

    #[test]
    fn declines_outside_the_rules() {
        let s = StandIn::new(rules());
        assert_eq!(s.decide(&req(10_001)), StandInDecision::Decline("91"));
        assert_eq!(s.decide(&req(0)), StandInDecision::Decline("13"));
        assert_eq!(s.decide(&StandInRequest { currency: "840", ..req(100) }), StandInDecision::Decline("91"));
        assert_eq!(
            s.decide(&StandInRequest { processing_code: "013000", ..req(100) }),
            StandInDecision::Decline("91")
        );
        assert_eq!(s.decide(&StandInRequest { has_pin: true, ..req(100) }), StandInDecision::Decline("91"));
        let off = StandIn::new(StandInConfig { enabled: false, ..rules() });
        assert_eq!(off.decide(&req(100)), StandInDecision::Decline("91"));
    }
}
