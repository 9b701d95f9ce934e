//! Token numbers: drawn from the token BIN ranges the network owns (never from a card BIN, so a
//! token can never collide with a real PAN), Luhn-valid (ISO/IEC 7812-1 Annex B) so terminals
//! accept them like card numbers, and unique in the vault.

pub use codecs::pan::{luhn_check_digit, luhn_valid};

/// A token BIN range: token numbers are `prefix` ‖ random digits ‖ check digit, `length` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRange {
    pub prefix: String,
    pub length: usize,
}

/// Why a range cannot issue tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("token range prefix {0:?}: expected 6 to 11 digits")]
    Prefix(String),
    #[error("token range length {0}: expected 13 to 19")]
    Length(usize),
    #[error("token range {0:?} overlaps card range {1:?}: tokens could collide with real PANs")]
    OverlapsCards(String, String),
}

impl TokenRange {
    /// Checks the range, and that no card route prefix overlaps it.
    pub fn new<'a>(
        prefix: &str,
        length: usize,
        card_prefixes: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, RangeError> {
        if !(6..=11).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RangeError::Prefix(prefix.to_string()));
        }
        if !(13..=19).contains(&length) || length <= prefix.len() + 1 {
            return Err(RangeError::Length(length));
        }
        for card in card_prefixes {
            if card.starts_with(prefix) || prefix.starts_with(card) {
                return Err(RangeError::OverlapsCards(prefix.to_string(), card.to_string()));
            }
        }
        Ok(TokenRange { prefix: prefix.to_string(), length })
    }

    /// Whether `pan` belongs to this range.
    pub fn contains(&self, pan: &str) -> bool {
        pan.len() == self.length && pan.starts_with(&self.prefix)
    }

    /// A candidate token from `random` bytes (one per digit to draw); the caller retries on a
    /// collision with an existing token.
    pub fn candidate(&self, random: &[u8]) -> String {
        let n = self.length - self.prefix.len() - 1;
        let mut digits = self.prefix.clone().into_bytes();
        // 250 = 25 × 10: bytes at or above it would bias the digit; fold them instead of dropping
        // (the caller supplies twice the bytes needed).
        let mut it = random.iter().filter(|b| **b < 250);
        for _ in 0..n {
            let d = it.next().map(|b| b % 10).unwrap_or(0);
            digits.push(b'0' + d);
        }
        if let Some(c) = luhn_check_digit(&digits) {
            digits.push(c);
        }
        String::from_utf8(digits).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_never_overlap_cards_and_issue_luhn_valid_tokens() {
        assert!(matches!(TokenRange::new("476173", 16, ["4761"]), Err(RangeError::OverlapsCards(..))));
        assert!(matches!(TokenRange::new("4895", 16, []), Err(RangeError::Prefix(_))));
        let r = TokenRange::new("489537", 16, ["476173", "541333"]).expect("range");
        let t = r.candidate(&(0u8..=255).collect::<Vec<_>>());
        assert_eq!(t.len(), 16);
        assert!(r.contains(&t) && luhn_valid(t.as_bytes()), "{t}");
    }
}
