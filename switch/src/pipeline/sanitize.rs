//! Sanitize: what only the network may set is removed from an acquirer's request, and DE 32 is
//! the identity's acquirer ID whatever the request said. An acquirer cannot send the token
//! service's data (DE 123: "cryptogram verified", the token's PAN), an issuer's decision (DE 38,
//! 39, 44), the conversion the network makes (DE 6, 10, 51), nor a processing code the network
//! reserves for itself (token provisioning, ID&V, lifecycle: 90–92), which is refused with 12.

use codecs::iso8583::{Message, ResponseCode};

use super::{Class, Decline, Stage};
use crate::registry::Identity;

/// Elements an acquirer may not send: removed from its request before anything reads it. (DE 39
/// of a reversal is its reason, the acquirer's to give: kept there.)
pub const NETWORK_RESERVED: [u16; 8] = [6, 10, 38, 44, 51, 121, 122, 123];

/// Transaction types (DE 3 positions 1–2) only the network's own services originate.
pub const RESERVED_PROCESSING: [&str; 3] = ["90", "91", "92"];

/// The sanitized request, or the request (as received) with the refusal.
pub fn sanitize(mut msg: Message, id: &Identity, class: Class) -> Result<Message, (Message, Decline)> {
    for de in NETWORK_RESERVED {
        msg.remove(de);
    }
    if class != Class::Reversal {
        msg.remove(39);
    }
    if let Some(pc) = msg.text(3)
        && RESERVED_PROCESSING.iter().any(|r| pc.starts_with(r))
    {
        let reason = format!("processing code {pc} is reserved to the network");
        return Err((msg, Decline::new(ResponseCode::INVALID_TRANSACTION, Stage::Sanitize, reason)));
    }
    if let Err(e) = msg.set_text(32, &id.acquirer.id) {
        let reason = format!("DE 32 cannot carry the acquirer ID: {e}");
        return Err((msg, Decline::new(ResponseCode::SYSTEM_ERROR, Stage::Sanitize, reason)));
    }
    Ok(msg)
}
