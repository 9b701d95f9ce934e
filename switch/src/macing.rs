//! Message authentication on a link (docs/network-spec.md §1): the last element of a message,
//! DE 64 (or DE 128 when the secondary bitmap is in use), is a MAC over every byte before it,
//! computed by the HSM under the link's MAC key. Outbound messages are signed; an inbound message
//! whose MAC is absent or wrong is refused (an acquirer gets DE 39 = 63, an issuer answer is
//! dropped and counted, so its request times out and is reversed).
//!
//! Where the MAC sits and which bytes it covers is `codecs::iso8583::mac`, shared with the issuer
//! simulator's end of the link; this is the HSM's part.

use std::sync::Arc;

use bytes::Bytes;

use codecs::iso8583::Message;
use codecs::iso8583::mac::{self, MAC_LEN};
use crypto::hsm::Hsm;
use crypto::mac::MacAlgorithm;

#[derive(Clone)]
pub struct LinkMac {
    pub hsm: Arc<dyn Hsm>,
    /// Keystore name of the MAC key.
    pub key: String,
    pub alg: MacAlgorithm,
}

impl LinkMac {
    /// Signs `msg` in place (replacing any MAC it carries) and returns it encoded, as it goes on
    /// the link (encoded once: the MAC's bytes written over the placeholder it was encoded with).
    pub fn sign(&self, msg: &mut Message) -> Result<Bytes, String> {
        let unsigned = mac::prepare(msg).map_err(|e| e.to_string())?;
        let tag = self
            .hsm
            .generate_mac(&self.key, self.alg, unsigned.covered(), MAC_LEN)
            .map_err(|e| e.to_string())?;
        unsigned.signed(msg, &tag).map_err(|e| e.to_string())
    }

    /// Whether `raw` (the message as received, decoded into `msg`) carries a valid MAC as its
    /// last element.
    pub fn verify(&self, raw: &[u8], msg: &Message) -> bool {
        let Ok(r) = mac::received(raw, msg) else { return false };
        self.hsm.verify_mac(&self.key, self.alg, r.covered, &r.mac).is_ok()
    }
}
