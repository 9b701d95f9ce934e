//! Card numbers: the Luhn check digit (ISO/IEC 7812-1 Annex B) and the mask every log, journal
//! row and report shows instead of a PAN. One implementation for every crate.

pub use crate::iso8583::describe::mask_pan as mask;

/// The Luhn check digit for `digits` (ASCII digits, without the check digit).
pub fn luhn_check_digit(digits: &[u8]) -> Option<u8> {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        if !d.is_ascii_digit() {
            return None;
        }
        let mut v = u32::from(d - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    Some(b'0' + ((10 - (sum % 10)) % 10) as u8)
}

/// `body` (ASCII digits) followed by its Luhn check digit; `None` when `body` is not all digits.
pub fn with_check_digit(body: &str) -> Option<String> {
    let check = luhn_check_digit(body.as_bytes())?;
    let mut pan = String::with_capacity(body.len() + 1);
    pan.push_str(body);
    pan.push(char::from(check));
    Some(pan)
}

/// Whether `pan` (ASCII digits) ends with its Luhn check digit.
pub fn luhn_valid(pan: &[u8]) -> bool {
    match pan.split_last() {
        Some((&check, body)) if !body.is_empty() => luhn_check_digit(body) == Some(check),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_numbers() {
        // ISO/IEC 7812-1 Annex B worked example and well-known test card numbers.
        assert_eq!(luhn_check_digit(b"7992739871"), Some(b'3'));
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"5413330089010608"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"4"));
        assert_eq!(luhn_check_digit(b"12a"), None);
    }

    #[test]
    fn masks_keep_six_and_four_of_a_pan_and_nothing_of_a_short_number() {
        assert_eq!(mask("4761739001010010"), "476173******0010");
        assert_eq!(mask("47617390010"), "476173*0010");
        assert_eq!(mask("4761739001"), "**********");
        assert_eq!(mask(""), "");
    }
}
