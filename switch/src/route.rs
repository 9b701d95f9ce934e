//! The route stage: a longest-prefix BIN table from PAN to issuer link.
//!
//! Prefixes are 1 to 19 digits. The table keeps one hash map per prefix length and probes the
//! lengths present from longest to shortest, so a look-up costs a handful of hash probes whatever
//! the table's size, with no allocation.

use std::collections::HashMap;
use std::sync::Arc;

/// An issuer link's name, shared cheaply between routes and the pipeline.
pub type IssuerName = Arc<str>;

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// (prefix length, prefix → issuer), longest first.
    by_len: Vec<(usize, HashMap<u64, IssuerName>)>,
    /// The cardholder billing currency of a BIN range (longest prefix), where the route says.
    billing: Vec<(String, &'static codecs::currency::Currency)>,
    /// Conversion rates: (transaction currency, billing currency) → rate.
    rates: HashMap<(&'static str, &'static str), codecs::currency::Rate>,
}

/// A conversion the route table asks for: the card's billing currency and the rate from the
/// transaction's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversion {
    pub from: &'static codecs::currency::Currency,
    pub to: &'static codecs::currency::Currency,
    pub rate: codecs::currency::Rate,
}

/// A prefix of up to 19 digits packed into an integer; the length disambiguates leading zeros.
fn pack(digits: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(d - b'0');
    }
    Some(v)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route prefix {index}: expected 1 to 19 digits")]
    BadPrefix { index: usize },
    #[error("route prefix {index}: prefix already routed")]
    Duplicate { index: usize },
}

impl RouteTable {
    /// Builds the table from (prefix, issuer) pairs.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, RouteError> {
        let mut maps: HashMap<usize, HashMap<u64, IssuerName>> = HashMap::new();
        let mut names: HashMap<&str, IssuerName> = HashMap::new();
        for (index, (prefix, issuer)) in routes.into_iter().enumerate() {
            let p = prefix.as_bytes();
            if p.is_empty() || p.len() > 19 {
                return Err(RouteError::BadPrefix { index });
            }
            let key = pack(p).ok_or(RouteError::BadPrefix { index })?;
            let name = names.entry(issuer).or_insert_with(|| Arc::from(issuer)).clone();
            if maps.entry(p.len()).or_default().insert(key, name).is_some() {
                return Err(RouteError::Duplicate { index });
            }
        }
        let mut by_len: Vec<_> = maps.into_iter().collect();
        by_len.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(RouteTable { by_len, billing: Vec::new(), rates: HashMap::new() })
    }

    /// The table of routes (prefix, issuer, billing currency if any) and conversion rates
    /// (from, to, rate), every problem named by its position.
    pub fn with_conversion<'a>(
        routes: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)> + Clone,
        rates: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<Self, String> {
        use codecs::currency::{Rate, by_numeric};
        let mut t =
            RouteTable::new(routes.clone().into_iter().map(|(p, i, _)| (p, i))).map_err(|e| e.to_string())?;
        for (i, (prefix, _, billing)) in routes.into_iter().enumerate() {
            if let Some(code) = billing {
                let c = by_numeric(code).ok_or_else(|| {
                    format!("route[{i}].billing_currency: {code:?} is not an ISO 4217 numeric code")
                })?;
                t.billing.push((prefix.to_string(), c));
            }
        }
        t.billing.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        for (i, (from, to, rate)) in rates.into_iter().enumerate() {
            let from = by_numeric(from)
                .ok_or_else(|| format!("rate[{i}].from: {from:?} is not an ISO 4217 numeric code"))?;
            let to = by_numeric(to)
                .ok_or_else(|| format!("rate[{i}].to: {to:?} is not an ISO 4217 numeric code"))?;
            if from == to {
                return Err(format!("rate[{i}]: from and to are both {}", from.alpha));
            }
            let rate = Rate::parse_decimal(rate).map_err(|e| format!("rate[{i}].rate: {e}"))?;
            if t.rates.insert((from.numeric, to.numeric), rate).is_some() {
                return Err(format!("rate[{i}]: {} to {} given twice", from.alpha, to.alpha));
            }
        }
        Ok(t)
    }

    /// What converting a transaction in `currency` (numeric) on `pan` takes: `Ok(None)` when the
    /// card is billed in that currency (or its route names none); `Err` with the pair when no
    /// rate is configured.
    pub fn conversion(&self, pan: &[u8], currency: &str) -> Result<Option<Conversion>, String> {
        let Some((_, to)) = self.billing.iter().find(|(p, _)| pan.starts_with(p.as_bytes())) else {
            return Ok(None);
        };
        if to.numeric == currency {
            return Ok(None);
        }
        let from = codecs::currency::by_numeric(currency)
            .ok_or_else(|| format!("{currency:?} is not an ISO 4217 currency"))?;
        match self.rates.get(&(from.numeric, to.numeric)) {
            Some(rate) => Ok(Some(Conversion { from, to, rate: *rate })),
            None => Err(format!("no conversion rate from {} to {}", from.alpha, to.alpha)),
        }
    }

    /// The issuer for a PAN (ASCII digits), by the longest matching prefix.
    pub fn lookup(&self, pan: &[u8]) -> Option<&IssuerName> {
        for (len, map) in &self.by_len {
            if let Some(prefix) = pan.get(..*len)
                && let Some(key) = pack(prefix)
                && let Some(issuer) = map.get(&key)
            {
                return Some(issuer);
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn longest_prefix_wins() {
        let t = RouteTable::new([
            ("4", "visa-default"),
            ("476173", "issuer-a"),
            ("4761739", "issuer-b"),
            ("0", "zero"),
        ])
        .unwrap();
        assert_eq!(t.lookup(b"4761739001010010").map(|s| &**s), Some("issuer-b"));
        assert_eq!(t.lookup(b"4761730000000011").map(|s| &**s), Some("issuer-a"));
        assert_eq!(t.lookup(b"4111111111111111").map(|s| &**s), Some("visa-default"));
        assert_eq!(t.lookup(b"0000").map(|s| &**s), Some("zero"));
        assert_eq!(t.lookup(b"5413330000000000"), None);
        assert_eq!(t.lookup(b""), None);
        assert_eq!(t.lookup(b"47x"), Some(&Arc::from("visa-default")));
    }

    #[test]
    fn bad_tables_are_refused() {
        assert_eq!(RouteTable::new([("47a", "x")]).unwrap_err(), RouteError::BadPrefix { index: 0 });
        assert_eq!(RouteTable::new([("", "x")]).unwrap_err(), RouteError::BadPrefix { index: 0 });
        assert_eq!(
            RouteTable::new([("47", "x"), ("47", "y")]).unwrap_err(),
            RouteError::Duplicate { index: 1 }
        );
        // "047" and "47" differ.
        assert!(RouteTable::new([("047", "x"), ("47", "y")]).is_ok());
    }

    proptest! {
        #[test]
        fn agrees_with_a_linear_scan(
            prefixes in proptest::collection::btree_set("[0-9]{1,8}", 1..40),
            pan in "[0-9]{12,19}",
        ) {
            let routes: Vec<(String, String)> = prefixes.iter().map(|p| (p.clone(), format!("i{p}"))).collect();
            let t = RouteTable::new(routes.iter().map(|(p, i)| (p.as_str(), i.as_str()))).unwrap();
            let expect = routes.iter().filter(|(p, _)| pan.starts_with(p.as_str())).max_by_key(|(p, _)| p.len()).map(|(_, i)| i.clone());
            prop_assert_eq!(t.lookup(pan.as_bytes()).map(|s| s.to_string()), expect);
        }
    }
}
