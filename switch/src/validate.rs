//! The validate stage (docs/network-spec.md §2–3): the message class is one the network carries,
//! the elements its class and POS entry mode require are present, and chip data carries the tags
//! the issuer needs to verify the cryptogram. A failure names what is missing — for the log, not
//! for the acquirer, who gets DE 39 = 30.
//!
//! The rules are data ([`AUTHORIZATION_REQUIRED`], [`REVERSAL_REQUIRED`],
//! [`required_for_entry`], [`REQUIRED_ICC_TAGS`], [`ICC_TAG_LENGTHS`], [`POS_ENTRY_MODES`]) so
//! that the certification checks (`certify`) report against the very rules this stage enforces.

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

/// Elements every authorization or financial request (0100, 0200) carries; and DE 2 or DE 35.
pub const AUTHORIZATION_REQUIRED: [u16; 7] = [3, 4, 7, 11, 22, 41, 49];

/// Elements every reversal or advice (0400, 0420, 0120) carries; and DE 2 or DE 35.
pub const REVERSAL_REQUIRED: [u16; 4] = [3, 4, 11, 41];

/// DE 55 tags a chip (05x, 07x) request must carry.
pub const REQUIRED_ICC_TAGS: [u16; 12] =
    [0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x5F2A, 0x82, 0x9F1A];

/// DE 55 tags docs/network-spec.md §3 recommends with chip requests.
pub const RECOMMENDED_ICC_TAGS: [u16; 4] = [0x9F03, 0x9F33, 0x9F34, 0x84];

/// Value lengths (min, max bytes) of the chip tags above, from EMV 4.4 Book 3 Annex A (data
/// element dictionary).
pub const ICC_TAG_LENGTHS: [(u16, usize, usize); 16] = [
    (0x9F26, 8, 8),  // Application Cryptogram
    (0x9F27, 1, 1),  // Cryptogram Information Data
    (0x9F10, 1, 32), // Issuer Application Data
    (0x9F37, 4, 4),  // Unpredictable Number
    (0x9F36, 2, 2),  // Application Transaction Counter
    (0x95, 5, 5),    // Terminal Verification Results
    (0x9A, 3, 3),    // Transaction Date (YYMMDD)
    (0x9C, 1, 1),    // Transaction Type
    (0x9F02, 6, 6),  // Amount, Authorised (n 12)
    (0x5F2A, 2, 2),  // Transaction Currency Code (n 3)
    (0x82, 2, 2),    // Application Interchange Profile
    (0x9F1A, 2, 2),  // Terminal Country Code (n 3)
    (0x9F03, 6, 6),  // Amount, Other (n 12)
    (0x9F33, 3, 3),  // Terminal Capabilities
    (0x9F34, 3, 3),  // CVM Results
    (0x84, 5, 16),   // Dedicated File Name
];

/// DE 22 values the network knows (docs/network-spec.md §3).
pub const POS_ENTRY_MODES: [&str; 10] =
    ["051", "071", "072", "091", "010", "012", "810", "090", "900", "100"];

/// Whether a PAN entry mode (DE 22 positions 1–2) is chip: contact `05` or contactless `07`.
pub fn is_chip(pan_entry: &str) -> bool {
    matches!(pan_entry, "05" | "07")
}

/// Elements a PAN entry mode adds to [`AUTHORIZATION_REQUIRED`]: chip needs the PAN sequence
/// number (DE 23) and the chip data (DE 55); a key-entered PAN needs its expiry (DE 14).
pub fn required_for_entry(pan_entry: &str) -> &'static [u16] {
    match pan_entry {
        "05" | "07" => &[23, 55],
        "01" | "81" => &[14],
        _ => &[],
    }
}

fn need(req: &Message, des: &[u16]) -> Result<(), Invalid> {
    let missing: Vec<String> = des.iter().filter(|d| !req.contains(**d)).map(|d| format!("DE {d}")).collect();
    if missing.is_empty() { Ok(()) } else { Err(invalid(format!("missing {}", missing.join(", ")))) }
}

/// Checks an authorization or financial request (0100, 0200).
pub fn authorization(req: &Message) -> Result<(), Invalid> {
    check_authorization(req, None)
}

/// [`authorization`] for a request whose DE 55 was parsed already (at the edge): `has_tag` says
/// whether a tag is among its top-level objects.
pub fn authorization_parsed(req: &Message, has_tag: &dyn Fn(u32) -> bool) -> Result<(), Invalid> {
    check_authorization(req, Some(has_tag))
}

fn check_authorization(req: &Message, has_tag: Option<&dyn Fn(u32) -> bool>) -> Result<(), Invalid> {
    need(req, &AUTHORIZATION_REQUIRED)?;
    if !req.contains(2) && !req.contains(35) {
        return Err(invalid("missing DE 2 and DE 35 (no PAN)"));
    }
    let entry = req.pos_entry_mode().map_err(|e| invalid(e.to_string()))?.ok_or_else(|| invalid("DE 22"))?;
    let pan_entry = entry.pan_entry();
    if is_chip(pan_entry) {
        need(req, required_for_entry(pan_entry))?;
        let missing: Vec<String> = match has_tag {
            Some(has) => missing_tags(has),
            None => {
                let icc = req.icc_data().map_err(|e| invalid(e.to_string()))?.unwrap_or_default();
                let nodes = tlv::decode_lenient(&icc).map_err(|e| invalid(format!("DE 55: {e}")))?;
                missing_tags(|t| nodes.iter().any(|n| t == n.tag().value()))
            }
        };
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

/// The tags of [`REQUIRED_ICC_TAGS`] DE 55 lacks, by `has`.
fn missing_tags(has: impl Fn(u32) -> bool) -> Vec<String> {
    REQUIRED_ICC_TAGS.iter().filter(|t| !has(u32::from(**t))).map(|t| format!("{t:X}")).collect()
}

/// Checks a reversal or advice (0400, 0420, 0120).
pub fn reversal_or_advice(req: &Message) -> Result<(), Invalid> {
    need(req, &REVERSAL_REQUIRED)?;
    if !req.contains(2) && !req.contains(35) {
        return Err(invalid("missing DE 2 and DE 35 (no PAN)"));
    }
    Ok(())
}
