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

/// Tag 5A's form (cn, EMV Book 3 §4.3): the PAN's digits two to a byte, an odd count padded
/// with F. `None` when `pan` is empty or not all digits.
pub fn to_cn(pan: &str) -> Option<Vec<u8>> {
    if pan.is_empty() || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nibbles: Vec<u8> = pan.bytes().map(|b| b - b'0').collect();
    if nibbles.len() % 2 == 1 {
        nibbles.push(0x0F);
    }
    Some(nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect())
}

/// Tag 5F34's form (n 2): the PAN sequence number's two digits in one byte. `None` unless `psn`
/// is one or two digits.
pub fn psn_n2(psn: &str) -> Option<u8> {
    let n: u8 = psn
        .parse()
        .ok()
        .filter(|_| (1..=2).contains(&psn.len()) && psn.bytes().all(|b| b.is_ascii_digit()))?;
    Some(((n / 10) << 4) | (n % 10))
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
    fn a_pan_and_its_sequence_number_in_the_card_forms() {
        assert_eq!(to_cn("4761739001010010"), Some(vec![0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x10]));
        assert_eq!(to_cn("476173900101001"), Some(vec![0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x1F]));
        assert_eq!(to_cn("4761A"), None);
        assert_eq!(to_cn(""), None);
        assert_eq!(psn_n2("01"), Some(0x01));
        assert_eq!(psn_n2("12"), Some(0x12));
        assert_eq!(psn_n2("7"), Some(0x07));
        assert_eq!(psn_n2("123"), None);
        assert_eq!(psn_n2("+1"), None);
        assert_eq!(psn_n2(""), None);
    }

    #[test]
    fn masks_keep_six_and_four_of_a_pan_and_nothing_of_a_short_number() {
        assert_eq!(mask("4761739001010010"), "476173******0010");
        assert_eq!(mask("47617390010"), "476173*0010");
        assert_eq!(mask("4761739001"), "**********");
        assert_eq!(mask(""), "");
    }
}
