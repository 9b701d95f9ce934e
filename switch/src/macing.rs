//! Message authentication on a link (docs/network-spec.md §1): the last element of a message,
//! DE 64 (or DE 128 when the secondary bitmap is in use), is a MAC over every byte before it,
//! computed by the HSM under the link's MAC key. Outbound messages are signed; an inbound message
//! whose MAC is absent or wrong is refused (an acquirer gets DE 39 = 63, an issuer answer is
//! dropped and counted, so its request times out and is reversed).

use std::sync::Arc;

use codecs::iso8583::{ContentType, Message};
use crypto::hsm::Hsm;
use crypto::mac::MacAlgorithm;

/// MAC length on the wire: DE 64 and DE 128 hold 8 bytes.
const MAC_LEN: usize = 8;

#[derive(Clone)]
pub struct LinkMac {
    pub hsm: Arc<dyn Hsm>,
    /// Keystore name of the MAC key.
    pub key: String,
    pub alg: MacAlgorithm,
}

fn mac_de(msg: &Message) -> u16 {
    if msg.fields().iter().any(|f| (65..=127).contains(&f.de)) { 128 } else { 64 }
}

/// Bytes the MAC element takes on the wire in `msg`'s spec (8 binary, or 16 hex characters).
fn wire_len(msg: &Message, de: u16) -> Option<usize> {
    let fs = msg.spec().field(de)?;
    if fs.length.digits() != 0 {
        return None;
    }
    match fs.content {
        ContentType::B if usize::from(fs.max_len) == MAC_LEN => Some(MAC_LEN),
        ContentType::Hex if usize::from(fs.max_len) == 2 * MAC_LEN => Some(2 * MAC_LEN),
        _ => None,
    }
}

fn set_mac(msg: &mut Message, de: u16, mac: &[u8]) -> Result<(), String> {
    let hex = msg.spec().field(de).is_some_and(|f| f.content == ContentType::Hex);
    let r = if hex { msg.set_text(de, &hex::encode_upper(mac)) } else { msg.set_bytes(de, mac.to_vec()) };
    r.map_err(|e| e.to_string())
}

impl LinkMac {
    /// Signs `msg` in place (replacing any MAC it carries).
    pub fn sign(&self, msg: &mut Message) -> Result<(), String> {
        msg.remove(64);
        msg.remove(128);
        let de = mac_de(msg);
        let n = wire_len(msg, de).ok_or_else(|| format!("the spec cannot carry a MAC in DE {de}"))?;
        set_mac(msg, de, &[0u8; MAC_LEN])?;
        let encoded = msg.encode().map_err(|e| e.to_string())?;
        let covered = &encoded[..encoded.len() - n];
        let mac = self.hsm.generate_mac(&self.key, self.alg, covered, MAC_LEN).map_err(|e| e.to_string())?;
        set_mac(msg, de, &mac)
    }

    /// Whether `raw` (the message as received, decoded into `msg`) carries a valid MAC as its
    /// last element.
    pub fn verify(&self, raw: &[u8], msg: &Message) -> bool {
        let Some(last) = msg.fields().last() else { return false };
        if last.de != 64 && last.de != 128 {
            return false;
        }
        let Some(n) = wire_len(msg, last.de) else { return false };
        if raw.len() < n {
            return false;
        }
        let received = if n == MAC_LEN {
            last.data.to_vec()
        } else {
            match hex::decode(&last.data) {
                Ok(b) => b,
                Err(_) => return false,
            }
        };
        self.hsm.verify_mac(&self.key, self.alg, &raw[..raw.len() - n], &received).is_ok()
    }
}
