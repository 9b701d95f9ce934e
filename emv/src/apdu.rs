//! Command and response APDUs (ISO/IEC 7816-4 §5.1): short form only, as contactless EMV uses.
//!
//! A command is `CLA INS P1 P2 [Lc data] [Le]`; a response is `data ‖ SW1 SW2`. Parsing takes
//! untrusted bytes and says which byte is wrong.

use std::fmt;

/// Status words the card application answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sw(pub u16);

impl Sw {
    pub const OK: Sw = Sw(0x9000);
    pub const WRONG_LENGTH: Sw = Sw(0x6700);
    pub const SECURITY_NOT_SATISFIED: Sw = Sw(0x6982);
    pub const CONDITIONS_NOT_SATISFIED: Sw = Sw(0x6985);
    pub const WRONG_DATA: Sw = Sw(0x6A80);
    pub const FILE_NOT_FOUND: Sw = Sw(0x6A82);
    pub const RECORD_NOT_FOUND: Sw = Sw(0x6A83);
    pub const WRONG_P1P2: Sw = Sw(0x6A86);
    pub const INS_NOT_SUPPORTED: Sw = Sw(0x6D00);
    pub const CLA_NOT_SUPPORTED: Sw = Sw(0x6E00);
    pub const VERIFICATION_FAILED: Sw = Sw(0x6300);

    pub fn bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for Sw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

/// A parsed command APDU borrowing its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: &'a [u8],
    pub le: Option<u8>,
}

/// Why a command APDU could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command APDU byte {offset}: {what}")]
pub struct ApduError {
    pub offset: usize,
    pub what: &'static str,
}

impl<'a> Command<'a> {
    /// Parses a short-form command APDU (cases 1 to 4).
    pub fn parse(b: &'a [u8]) -> Result<Command<'a>, ApduError> {
        let [cla, ins, p1, p2, rest @ ..] = b else {
            return Err(ApduError { offset: b.len(), what: "a header of 4 bytes (CLA INS P1 P2) is needed" });
        };
        let (data, le) = match rest {
            [] => (&rest[..0], None),
            [le] => (&rest[..0], Some(*le)),
            [lc, body @ ..] => {
                let lc = usize::from(*lc);
                if lc == 0 {
                    return Err(ApduError { offset: 4, what: "Lc of 00 (extended length is not supported)" });
                }
                match body.len().checked_sub(lc) {
                    Some(0) => (&body[..lc], None),
                    Some(1) => (&body[..lc], body.last().copied()),
                    _ => {
                        return Err(ApduError { offset: 4, what: "Lc does not match the data that follows" });
                    }
                }
            }
        };
        Ok(Command { cla: *cla, ins: *ins, p1: *p1, p2: *p2, data, le })
    }

    /// Encodes a command (case 3/4 with data, case 2 with `Le` = 00 when `data` is empty).
    pub fn build(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![cla, ins, p1, p2];
        if !data.is_empty() {
            out.push(data.len().min(255) as u8);
            out.extend_from_slice(&data[..data.len().min(255)]);
        }
        out.push(0x00);
        out
    }
}

/// Splits a response APDU into its data and status word.
pub fn split_response(r: &[u8]) -> Option<(&[u8], Sw)> {
    let n = r.len().checked_sub(2)?;
    Some((&r[..n], Sw(u16::from_be_bytes([r[n], r[n + 1]]))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_one_to_four() {
        assert_eq!(Command::parse(&[0, 0xB2, 1, 0x0C]).expect("case 1").data, &[] as &[u8]);
        assert_eq!(Command::parse(&[0, 0xB2, 1, 0x0C, 0]).expect("case 2").le, Some(0));
        let c = Command::parse(&[0x80, 0xA8, 0, 0, 2, 0x83, 0]).expect("case 3");
        assert_eq!((c.data, c.le), (&[0x83, 0][..], None));
        let c = Command::parse(&[0x80, 0xA8, 0, 0, 2, 0x83, 0, 0]).expect("case 4");
        assert_eq!((c.data, c.le), (&[0x83, 0][..], Some(0)));
        assert_eq!(Command::parse(&[0x80, 0xA8, 0]).expect_err("short").offset, 3);
        assert_eq!(Command::parse(&[0x80, 0xA8, 0, 0, 5, 1]).expect_err("Lc").offset, 4);
    }
}
