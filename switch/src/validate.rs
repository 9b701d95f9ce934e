//! The validate stage (docs/network-spec.md §2–3): the message class is one the network carries,
//! the elements its class and POS entry mode require are present, and chip data carries the tags
//! the issuer needs to verify the cryptogram. A failure names what is missing — for the log, not
//! for the acquirer, who gets DE 39 = 30.

use codecs::iso8583::Message;
use codecs::tlv;

/// Why a request was refused by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub rc: &'static str,
    pub reason: String,
}

fn invalid(reason: impl Into<String>) -> Invalid {
    Invalid { rc: "30", reason: reason.into() }
}

/// DE 55 tags a chip (05x, 07x) request must carry.
pub const REQUIRED_ICC_TAGS: [u16; 12] =
    [0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x5F2A, 0x82, 0x9F1A];

fn need(req: &Message, des: &[u16]) -> Result<(), Invalid> {
    let missing: Vec<String> = des.iter().filter(|d| !req.contains(**d)).map(|d| format!("DE {d}")).collect();
    if missing.is_empty() { Ok(()) } else { Err(invalid(format!("missing {}", missing.join(", ")))) }
}

/// Checks an authorization or financial request (0100, 0200).
pub fn authorization(req: &Message) -> Result<(), Invalid> {
    need(req, &[3, 4, 7, 11, 22, 41, 49])?;
    if !req.contains(2) && !req.contains(35) {
        return Err(invalid("missing DE 2 and DE 35 (no PAN)"));
    }
    let entry = req.pos_entry_mode().map_err(|e| invalid(e.to_string()))?.ok_or_else(|| invalid("DE 22"))?;
    let pan_entry = entry.pan_entry();
    if matches!(pan_entry, "05" | "07") {
        need(req, &[23, 55])?;
        let icc = req.icc_data().map_err(|e| invalid(e.to_string()))?.unwrap_or_default();
        let nodes = tlv::decode_lenient(&icc).map_err(|e| invalid(format!("DE 55: {e}")))?;
        let missing: Vec<String> = REQUIRED_ICC_TAGS
            .iter()
            .filter(|t| !nodes.iter().any(|n| u32::from(**t) == n.tag().value()))
            .map(|t| format!("{t:X}"))
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!("DE 55 lacks tags {}", missing.join(" "))));
        }
    }
    if matches!(pan_entry, "01" | "81") && !req.contains(14) {
        return Err(invalid("key-entered PAN without DE 14"));
    }
    req.amount().map_err(|e| invalid(e.to_string()))?;
    Ok(())
}

/// Checks a reversal or advice (0400, 0420, 0120).
pub fn reversal_or_advice(req: &Message) -> Result<(), Invalid> {
    need(req, &[3, 4, 11, 41])?;
    if !req.contains(2) && !req.contains(35) {
        return Err(invalid("missing DE 2 and DE 35 (no PAN)"));
    }
    Ok(())
}
