//! Sealing of data at rest: AES-256-GCM with versioned data keys.
//!
//! Anything persisted that would otherwise hold a clear PAN or track data — a reversal waiting in
//! the switch's store-and-forward queue, a row of the token vault — is sealed here. The associated data binds a sealed
//! value to what it belongs to (a SAF entry's identity, a token), so a row moved to another record
//! fails to open instead of yielding the wrong card. Layout: key version (4 bytes, big-endian) ‖
//! nonce (12) ‖ ciphertext ‖ tag (16). Nonces are an argument: the caller draws them from the OS
//! RNG in production and from a seeded source in tests.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, ErrorKind, Result};
use crate::keys::AesKey;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

const HEADER: usize = 4 + 12;
const TAG: usize = 16;

/// Versioned AES-256 data keys: seals under the current version, opens under any known one.
pub struct Sealer {
    current: u32,
    keys: BTreeMap<u32, Aes256Gcm>,
    kcvs: BTreeMap<u32, [u8; 3]>,
}

impl Sealer {
    /// A sealer whose current key is `key` at `version`.
    pub fn new(version: u32, key: &AesKey) -> Result<Self> {
        let mut s = Sealer { current: version, keys: BTreeMap::new(), kcvs: BTreeMap::new() };
        s.add_key(version, key)?;
        Ok(s)
    }

    /// Adds an older (or newer) key version that can still open data; `current` is unchanged.
    pub fn add_key(&mut self, version: u32, key: &AesKey) -> Result<()> {
        if key.len() != 32 {
            return Err(Error::new(
                ErrorKind::KeyLength,
                "seal",
                format!("data key version {version} must be AES-256, found {} bytes", key.len()),
            ));
        }
        let cipher = Aes256Gcm::new_from_slice(key.expose())
            .map_err(|_| Error::new(ErrorKind::KeyLength, "seal", "AES-256-GCM rejected a 32-byte key"))?;
        self.keys.insert(version, cipher);
        self.kcvs.insert(version, key.kcv());
        Ok(())
    }

    /// Makes `version` (already added) the one new data is sealed under.
    pub fn set_current(&mut self, version: u32) -> Result<()> {
        if !self.keys.contains_key(&version) {
            return Err(Error::new(ErrorKind::Seal, "seal", format!("no data key version {version}")));
        }
        self.current = version;
        Ok(())
    }

    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// Seals `plaintext` bound to `aad` under the current key.
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let cipher = self
            .keys
            .get(&self.current)
            .ok_or_else(|| Error::new(ErrorKind::Seal, "seal", "current key missing"))?;
        let ct = cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad })
            .map_err(|_| Error::new(ErrorKind::Seal, "seal", "encryption failed"))?;
        let mut out = Vec::with_capacity(HEADER + ct.len());
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a sealed value; fails (never returns wrong data) when it was tampered with, bound to
    /// other associated data, or sealed under an unknown key version.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < HEADER + TAG {
            return Err(Error::new(
                ErrorKind::Seal,
                "seal",
                format!(
                    "sealed value of {} bytes is shorter than the {} of header and tag",
                    sealed.len(),
                    HEADER + TAG
                ),
            ));
        }
        let (version, rest) = sealed.split_at(4);
        let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
        let (nonce, ct) = rest.split_at(12);
        let cipher = self.keys.get(&version).ok_or_else(|| {
            Error::new(ErrorKind::Seal, "seal", format!("sealed under unknown key version {version}"))
        })?;
        let mut n = [0u8; 12];
        n.copy_from_slice(nonce);
        cipher.decrypt(&Nonce::from(n), Payload { msg: ct, aad }).map_err(|_| {
            Error::new(
                ErrorKind::Seal,
                "seal",
                format!("authentication failed (key version {version}): tampered or misplaced"),
            )
        })
    }

    /// The key version a sealed value was sealed under (for re-wrap on rotation).
    pub fn version_of(sealed: &[u8]) -> Option<u32> {
        sealed.get(..4).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kcvs: Vec<String> =
            self.kcvs.iter().map(|(v, k)| format!("v{v}:{}", hex::encode_upper(k))).collect();
        write!(f, "Sealer(current v{}, keys [{}])", self.current, kcvs.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(b: u8) -> AesKey {
        AesKey::from_slice(&[b; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_binding() {
        let s = Sealer::new(1, &key(7)).unwrap();
        let sealed = s.seal([3; 12], b"saf:42", b"0420 message").unwrap();
        assert_eq!(s.open(b"saf:42", &sealed).unwrap(), b"0420 message");
        assert_eq!(s.open(b"saf:43", &sealed).unwrap_err().kind, ErrorKind::Seal);
    }

    #[test]
    fn every_flipped_byte_fails() {
        let s = Sealer::new(1, &key(7)).unwrap();
        let sealed = s.seal([3; 12], b"a", b"data").unwrap();
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(s.open(b"a", &t).is_err(), "flip at {i} opened");
        }
        assert!(s.open(b"a", &sealed[..10]).is_err());
    }

    #[test]
    fn rotation_opens_old_versions() {
        let mut s = Sealer::new(1, &key(1)).unwrap();
        let old = s.seal([0; 12], b"x", b"old").unwrap();
        s.add_key(2, &key(2)).unwrap();
        s.set_current(2).unwrap();
        let new = s.seal([0; 12], b"x", b"new").unwrap();
        assert_eq!(Sealer::version_of(&old), Some(1));
        assert_eq!(Sealer::version_of(&new), Some(2));
        assert_eq!(s.open(b"x", &old).unwrap(), b"old");
        assert_eq!(s.open(b"x", &new).unwrap(), b"new");
        let fresh = Sealer::new(2, &key(2)).unwrap();
        assert!(fresh.open(b"x", &old).unwrap_err().to_string().contains("unknown key version 1"));
    }

    #[test]
    fn debug_shows_kcv_only() {
        let s = Sealer::new(1, &key(7)).unwrap();
        assert!(!format!("{s:?}").contains("0707"));
    }
}
