//! EBCDIC (code page 500) for the printable ASCII range, the only characters ISO 8583 text
//! elements carry. Bytes outside that range are refused rather than guessed.

/// ASCII 0x20..=0x7E → EBCDIC cp500.
const TO_EBCDIC: [u8; 95] = [
    64, 79, 127, 123, 91, 108, 80, 125, 77, 93, 92, 78, 107, 96, 75, 97, 240, 241, 242, 243, 244, 245, 246,
    247, 248, 249, 122, 94, 76, 126, 110, 111, 124, 193, 194, 195, 196, 197, 198, 199, 200, 201, 209, 210,
    211, 212, 213, 214, 215, 216, 217, 226, 227, 228, 229, 230, 231, 232, 233, 74, 224, 90, 95, 109, 121,
    129, 130, 131, 132, 133, 134, 135, 136, 137, 145, 146, 147, 148, 149, 150, 151, 152, 153, 162, 163, 164,
    165, 166, 167, 168, 169, 192, 187, 208, 161,
];

const fn invert() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < TO_EBCDIC.len() {
        t[TO_EBCDIC[i] as usize] = 0x20 + i as u8;
        i += 1;
    }
    t
}

/// EBCDIC → ASCII, 0 for bytes outside the printable range.
const FROM_EBCDIC: [u8; 256] = invert();

/// The EBCDIC byte for a printable ASCII byte.
pub fn to_ebcdic(c: u8) -> Option<u8> {
    TO_EBCDIC.get(usize::from(c).checked_sub(0x20)?).copied()
}

/// The printable ASCII byte for an EBCDIC byte.
pub fn from_ebcdic(b: u8) -> Option<u8> {
    match FROM_EBCDIC[usize::from(b)] {
        0 => None,
        c => Some(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_printable_ascii() {
        // cp500: digits F0–F9, 'A' C1, space 40 (IBM CDRA code page 500 table).
        assert_eq!(to_ebcdic(b'0'), Some(0xF0));
        assert_eq!(to_ebcdic(b'A'), Some(0xC1));
        assert_eq!(to_ebcdic(b' '), Some(0x40));
        for c in 0x20..=0x7E {
            assert_eq!(to_ebcdic(c).and_then(from_ebcdic), Some(c));
        }
        assert_eq!(from_ebcdic(0x00), None);
        assert_eq!(to_ebcdic(0x7F), None);
    }
}
