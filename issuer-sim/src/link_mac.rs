//! The issuer's end of a MAC-authenticated link with the switch (docs/network-spec.md §1): every
//! request must carry, as its last element (DE 64, or DE 128 with the secondary bitmap), a MAC
//! over the bytes before it under the key the issuer shares with the switch, and every answer is
//! signed the same way. The switch's `[issuer.mac]` does the same at its end.
//!
//! A verified MAC is the only way the issuer knows a request came from the switch, so it is what
//! lets the issuer believe what the switch's token service says of a token cryptogram (DE 123
//! DF8106, [`crate::host::Origin`]). The layout (which element, which bytes) is
//! `codecs::iso8583::mac`, shared with the switch; the MAC itself is the HSM's, under a key name.

use std::sync::Arc;

use bytes::Bytes;

use codecs::iso8583::Message;
use codecs::iso8583::mac::{self, MAC_LEN};
use crypto::hsm::Hsm;
use crypto::mac::MacAlgorithm;

use crate::{Error, Result};

/// The algorithms a link MAC may use (the switch's `[issuer.mac]` offers the same): ISO 9797-1
/// block-cipher MACs and CMAC. HMAC is for other purposes here.
pub const LINK_MAC_ALGS: [MacAlgorithm; 5] = [
    MacAlgorithm::Retail,
    MacAlgorithm::Iso9797Alg1Pad1,
    MacAlgorithm::Iso9797Alg1Pad2,
    MacAlgorithm::CmacAes,
    MacAlgorithm::CmacTdes,
];

/// A link algorithm by its configuration name (`retail`, `iso9797-1-m1`, `iso9797-1-m2`, `cmac`,
/// `cmac-tdes`).
pub fn link_mac_algorithm(name: &str) -> Result<MacAlgorithm> {
    LINK_MAC_ALGS.into_iter().find(|a| a.name() == name).ok_or_else(|| {
        Error::Config(format!(
            "link_mac.alg: expected one of {}, found {name:?}",
            LINK_MAC_ALGS.map(|a| a.name()).join(", ")
        ))
    })
}

/// The HSM, the MAC key's keystore name and the algorithm of the switch's link.
#[derive(Clone)]
pub struct LinkMac {
    hsm: Arc<dyn Hsm>,
    key: String,
    alg: MacAlgorithm,
}

impl std::fmt::Debug for LinkMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkMac").field("key", &self.key).field("alg", &self.alg.name()).finish()
    }
}

impl LinkMac {
    /// The link MAC under the HSM's key `key`, checked now rather than at the first request: the
    /// key must exist and make and verify MACs of `alg` (its usage, mode of use and algorithm).
    pub fn new(hsm: Arc<dyn Hsm>, key: &str, alg: MacAlgorithm) -> Result<LinkMac> {
        // HMAC, or anything else the switch's end does not offer, is refused here too.
        link_mac_algorithm(alg.name())?;
        let bad = |e: crypto::Error| Error::Config(format!("link_mac.key {key}: {e}"));
        hsm.key_check_value(key).map_err(bad)?;
        let probe = hsm.generate_mac(key, alg, b"link MAC key check", MAC_LEN).map_err(bad)?;
        hsm.verify_mac(key, alg, b"link MAC key check", &probe).map_err(bad)?;
        Ok(LinkMac { hsm, key: key.to_string(), alg })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn alg(&self) -> MacAlgorithm {
        self.alg
    }

    /// Signs `msg` in place (any MAC it carries is replaced) and returns it encoded, as it goes on
    /// the link (encoded once: the MAC's bytes written over the placeholder it was encoded with).
    pub fn sign(&self, msg: &mut Message) -> Result<Bytes> {
        let unsigned = mac::prepare(msg).map_err(|e| Error::Mac(format!("signing: {e}")))?;
        let tag = self
            .hsm
            .generate_mac(&self.key, self.alg, unsigned.covered(), MAC_LEN)
            .map_err(|e| Error::Mac(format!("signing under {}: {e}", self.key)))?;
        unsigned.signed(msg, &tag).map_err(|e| Error::Mac(format!("signing: {e}")))
    }

    /// `Ok` when `raw` (the request as received, decoded into `msg`) carries a valid MAC as its
    /// last element; otherwise what is wrong with it (missing, malformed or not verifying).
    pub fn verify(&self, raw: &[u8], msg: &Message) -> Result<()> {
        let r = mac::received(raw, msg).map_err(|e| Error::Mac(format!("no MAC: {e}")))?;
        self.hsm
            .verify_mac(&self.key, self.alg, r.covered, &r.mac)
            .map_err(|_| Error::Mac(format!("DE {} does not verify under {}", r.slot.de, self.key)))
    }
}

#[cfg(test)]
mod tests {
    use codecs::iso8583::Spec;
    use crypto::keys::{AesKey, SymmetricKey};

    use super::*;
    use crate::testing::{LINK_MAC_KEY, hsm_with_key, link_mac};

    const CLEAR: [u8; 16] = *b"0123456789abcdef";

    fn echo() -> Message {
        let spec = Spec::builtin("network").expect("spec").clone();
        let mut m = Message::new(spec, "0800".parse().expect("MTI"));
        m.set_text(11, "000001").expect("DE 11");
        m.set_text(70, "301").expect("DE 70");
        m
    }

    #[test]
    fn a_signed_message_verifies_under_the_shared_key_and_only_as_sent() {
        let l = link_mac(&CLEAR);
        let mut m = echo();
        l.sign(&mut m).expect("sign");
        let raw = m.encode().expect("encode");
        l.verify(&raw, &m).expect("verifies");
        // The other end computes the same MAC from the clear key (as a test tool would).
        let mac = m.bytes(128).expect("DE 128");
        MacAlgorithm::CmacAes
            .verify(&CLEAR, &raw[..raw.len() - 8], &mac)
            .expect("CMAC over the bytes before");
        // Changed after signing: refused, and the error says where, not the key.
        m.set_text(70, "001").expect("DE 70");
        let raw = m.encode().expect("encode");
        let e = l.verify(&raw, &m).expect_err("tampered");
        assert!(e.to_string().contains("DE 128 does not verify"), "{e}");
        // No MAC at all.
        let m = echo();
        let e = l.verify(&m.encode().expect("encode"), &m).expect_err("unsigned");
        assert!(e.to_string().contains("no MAC"), "{e}");
        // Under another key: refused.
        let mut m = echo();
        link_mac(b"fedcba9876543210").sign(&mut m).expect("sign");
        assert!(l.verify(&m.encode().expect("encode"), &m).is_err());
    }

    #[test]
    fn the_key_is_checked_when_the_link_is_made() {
        let aes = || SymmetricKey::Aes(AesKey::from_slice(&CLEAR).expect("AES"));
        let hsm = hsm_with_key(LINK_MAC_KEY, "D0000M6AC00N0000", aes());
        let e = LinkMac::new(hsm.clone(), "issuer.other", MacAlgorithm::CmacAes).expect_err("missing key");
        assert!(e.to_string().contains("issuer.other"), "{e}");
        // The key exists but is a CMAC key, not a retail MAC key.
        assert!(LinkMac::new(hsm.clone(), LINK_MAC_KEY, MacAlgorithm::Retail).is_err());
        // HMAC is not a link algorithm.
        assert!(LinkMac::new(hsm, LINK_MAC_KEY, MacAlgorithm::HmacSha256).is_err());
        // A key that is not a MAC key at all.
        let hsm = hsm_with_key(LINK_MAC_KEY, "D0000D0AB00N0000", aes());
        assert!(LinkMac::new(hsm, LINK_MAC_KEY, MacAlgorithm::CmacAes).is_err());
    }

    #[test]
    fn algorithms_by_name() {
        assert_eq!(link_mac_algorithm("cmac").expect("cmac"), MacAlgorithm::CmacAes);
        assert_eq!(link_mac_algorithm("retail").expect("retail"), MacAlgorithm::Retail);
        let e = link_mac_algorithm("hmac-sha256").expect_err("not for links");
        assert!(e.to_string().contains("link_mac.alg") && e.to_string().contains("cmac-tdes"), "{e}");
    }
}
