//! Injectable faults of the issuer simulator: a fault rule is data — conditions (all that are
//! given must hold; none given matches every request) and an action — checked and applied by the
//! server ([`crate::server`]) and loaded with the cards file ([`crate::cards`]).

use codecs::iso8583::Message;
use serde::{Deserialize, Serialize};

/// A fault applied to the requests it matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Matches requests with this DE 4 amount.
    #[serde(default)]
    pub when_amount: Option<u64>,
    /// ...and, when set, this MTI only (e.g. `0100`, so that the reversal of a dropped request
    /// gets through).
    #[serde(default)]
    pub when_mti: Option<String>,
    /// ...and, when set, PANs (DE 2, else the track 2 PAN) ending with these digits (1 to 4).
    #[serde(default)]
    pub when_pan_suffix: Option<String>,
    /// ...and, when set, STANs (DE 11) that are a multiple of this: every Nth request of a
    /// sender that counts its STANs up.
    #[serde(default)]
    pub when_stan_multiple_of: Option<u32>,
    /// `drop`, `delay:MS`, `garble` or `disconnect`.
    pub action: String,
}

impl FaultRule {
    /// A rule on DE 4 (and optionally the MTI): what most tests need.
    pub fn on_amount(amount: u64, mti: Option<&str>, action: &str) -> Self {
        FaultRule {
            when_amount: Some(amount),
            when_mti: mti.map(str::to_string),
            action: action.to_string(),
            ..FaultRule::default()
        }
    }

    /// Whether `req` meets every condition given.
    pub fn matches(&self, req: &Message) -> bool {
        if let Some(a) = self.when_amount
            && req.amount().ok().flatten().map(|x| x.0) != Some(a)
        {
            return false;
        }
        if let Some(m) = &self.when_mti
            && m != req.mti().as_str()
        {
            return false;
        }
        if let Some(suffix) = &self.when_pan_suffix
            && !req.card_number().is_some_and(|p| p.ends_with(suffix.as_str()))
        {
            return false;
        }
        if let Some(n) = self.when_stan_multiple_of
            && !req.stan().ok().flatten().is_some_and(|s| n > 0 && s.0 % n == 0)
        {
            return false;
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Drop,
    Delay(u64),
    Garble,
    Disconnect,
}

pub(crate) fn parse_action(a: &str) -> Option<Fault> {
    match a {
        "drop" => Some(Fault::Drop),
        "garble" => Some(Fault::Garble),
        "disconnect" => Some(Fault::Disconnect),
        _ => a.strip_prefix("delay:").and_then(|ms| ms.parse().ok()).map(Fault::Delay),
    }
}

/// Checks fault rules; every problem at once.
pub fn check_faults(rules: &[FaultRule]) -> Result<(), String> {
    let mut bad = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if parse_action(&r.action).is_none() {
            bad.push(format!(
                "fault[{i}].action: {:?} is not drop, delay:MS, garble or disconnect",
                r.action
            ));
        }
        if let Some(m) = &r.when_mti
            && m.parse::<codecs::iso8583::Mti>().is_err()
        {
            bad.push(format!("fault[{i}].when_mti: {m:?} is not 4 digits"));
        }
        if let Some(s) = &r.when_pan_suffix
            && !(1..=4).contains(&s.len())
        {
            bad.push(format!(
                "fault[{i}].when_pan_suffix: expected 1 to 4 digits, found {} characters",
                s.len()
            ));
        } else if let Some(s) = &r.when_pan_suffix
            && !s.bytes().all(|b| b.is_ascii_digit())
        {
            bad.push(format!("fault[{i}].when_pan_suffix: expected digits only"));
        }
        if r.when_stan_multiple_of == Some(0) {
            bad.push(format!("fault[{i}].when_stan_multiple_of: must be at least 1"));
        }
    }
    if bad.is_empty() { Ok(()) } else { Err(bad.join("; ")) }
}
