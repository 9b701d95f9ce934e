//! Message authentication codes used on payment interfaces.
//!
//! - ISO/IEC 9797-1:2011 MAC algorithm 1 (CBC-MAC) with TDES, padding methods 1, 2 and 3;
//! - ISO/IEC 9797-1 MAC algorithm 3, the ANSI X9.19 "retail MAC": single-DES CBC under K, the
//!   last block then decrypted under K' and encrypted under K (output transformation 3);
//! - CMAC (NIST SP 800-38B; ISO/IEC 9797-1:2011 MAC algorithm 5) with TDES (64-bit block) and AES;
//! - HMAC-SHA256 (RFC 2104, FIPS 198-1).
//!
//! MACs may be truncated to their leftmost bytes ([`truncate`]); verification always compares in
//! constant time ([`verify_mac`], [`MacAlgorithm::verify`]).

use cipher::KeyInit;
use cipher::{BlockCipherDecrypt, BlockCipherEncrypt};
use cmac::{Cmac, Mac};
use des::{Des, TdesEde2, TdesEde3};
use hmac::Hmac;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{Error, ErrorKind, Result};
use crate::keys::{AesKey, TdesKey, block8, xor_in_place};

/// ISO/IEC 9797-1:2011 padding methods (the "Padding" step of the MAC algorithms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Method 1: zero bytes up to a whole block (none when already whole; an empty string becomes
    /// one zero block).
    Method1,
    /// Method 2: one `80` byte, then zero bytes up to a whole block (ISO/IEC 7816-4 padding).
    Method2,
    /// Method 3: a block holding the data length in bits (big-endian), then the data padded
    /// with zero bytes as in method 1.
    Method3,
}

/// Pads `data` to whole blocks of `block` bytes by the given method.
pub fn pad(data: &[u8], block: usize, padding: Padding) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 2 * block);
    if padding == Padding::Method3 {
        let bits = (data.len() as u128) * 8;
        let be = bits.to_be_bytes();
        out.extend_from_slice(&be[be.len() - block..]);
    }
    out.extend_from_slice(data);
    if padding == Padding::Method2 {
        out.push(0x80);
    }
    let body = out.len() - if padding == Padding::Method3 { block } else { 0 };
    let rem = body % block;
    if rem != 0 {
        out.resize(out.len() + block - rem, 0);
    } else if body == 0 {
        out.resize(out.len() + block, 0);
    }
    out
}

/// ISO/IEC 9797-1 MAC algorithm 1 (CBC-MAC) with a TDES key: the last CBC block, 8 bytes.
/// A single-DES key is expressed as the double-length key K‖K.
pub fn cbc_mac_tdes(key: &TdesKey, data: &[u8], padding: Padding) -> [u8; 8] {
    let padded = pad(data, 8, padding);
    let mut chain = [0u8; 8];
    for c in padded.chunks(8) {
        xor_in_place(&mut chain, c);
        key.encrypt_block(&mut chain);
    }
    chain
}

/// ISO/IEC 9797-1 MAC algorithm 1 with an AES key (16-byte blocks).
pub fn cbc_mac_aes(key: &AesKey, data: &[u8], padding: Padding) -> [u8; 16] {
    let padded = pad(data, 16, padding);
    let mut chain = [0u8; 16];
    for c in padded.chunks(16) {
        xor_in_place(&mut chain, c);
        key.encrypt_block(&mut chain);
    }
    chain
}

/// ISO/IEC 9797-1 MAC algorithm 3 (ANSI X9.19 retail MAC) under a double-length key K‖K':
/// single-DES CBC under K over every block, then the final output transformation
/// `e_K(d_K'(H_q))` (ISO/IEC 9797-1:2011 MAC algorithm 3, output transformation 3).
pub fn retail_mac(key: &TdesKey, data: &[u8], padding: Padding) -> Result<[u8; 8]> {
    Ok(RetailMacKey::new(key)?.mac(data, padding))
}

/// A retail-MAC key with its two single-DES key schedules prepared, for computing several MACs
/// under one key (an issuer's cryptogram and its ARPC).
pub struct RetailMacKey {
    k1: Des,
    k2: Des,
}

impl RetailMacKey {
    pub fn new(key: &TdesKey) -> Result<Self> {
        if key.len() != 16 {
            return Err(Error::new(
                ErrorKind::KeyLength,
                "MAC key",
                format!(
                    "the retail MAC (ISO 9797-1 algorithm 3) takes a 16-byte key K||K', found {}",
                    key.len()
                ),
            ));
        }
        match (Des::new_from_slice(&key.expose()[..8]), Des::new_from_slice(&key.expose()[8..16])) {
            (Ok(k1), Ok(k2)) => Ok(RetailMacKey { k1, k2 }),
            _ => unreachable!("8-byte halves of a 16-byte key"),
        }
    }

    pub fn mac(&self, data: &[u8], padding: Padding) -> [u8; 8] {
        let padded = pad(data, 8, padding);
        let mut chain = [0u8; 8];
        for c in padded.chunks(8) {
            xor_in_place(&mut chain, c);
            self.k1.encrypt_block((&mut chain).into());
        }
        self.k2.decrypt_block((&mut chain).into());
        self.k1.encrypt_block((&mut chain).into());
        chain
    }
}

/// TDES-CMAC (NIST SP 800-38B with the 64-bit block, R64 = 0x1B): 8 bytes.
pub fn cmac_tdes(key: &TdesKey, data: &[u8]) -> [u8; 8] {
    fn run<M: Mac>(mut m: M, data: &[u8]) -> [u8; 8] {
        m.update(data);
        block8(&m.finalize().into_bytes())
    }
    // TdesKey guarantees 16 or 24 bytes, which are exactly the lengths these ciphers accept.
    match key.len() {
        16 => match <Cmac<TdesEde2> as KeyInit>::new_from_slice(key.expose()) {
            Ok(m) => run(m, data),
            Err(_) => unreachable!("TdesKey is 16 bytes"),
        },
        _ => match <Cmac<TdesEde3> as KeyInit>::new_from_slice(key.expose()) {
            Ok(m) => run(m, data),
            Err(_) => unreachable!("TdesKey is 24 bytes"),
        },
    }
}

/// AES-CMAC (NIST SP 800-38B): 16 bytes.
pub fn cmac_aes(key: &AesKey, data: &[u8]) -> [u8; 16] {
    key.cmac(data)
}

/// An HMAC-SHA256 key with its inner and outer pads hashed once: a MAC under it then costs the
/// message's compressions only, not the key's two more (a PAN fingerprint per authorization).
/// Its inner and outer SHA-256 states wipe themselves when dropped (sha2's `zeroize`); `Debug`
/// shows nothing of it.
#[derive(Clone)]
pub struct HmacSha256Key(Hmac<Sha256>);

impl HmacSha256Key {
    pub fn new(key: &[u8]) -> Self {
        match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
            Ok(m) => HmacSha256Key(m),
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }

    /// HMAC-SHA256 of `data`: the same 32 bytes as [`hmac_sha256`] under the same key.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut m = self.0.clone();
        m.update(data);
        let mut out = [0u8; 32];
        out.copy_from_slice(&m.finalize().into_bytes());
        out
    }
}

impl std::fmt::Debug for HmacSha256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacSha256Key(..)")
    }
}

/// HMAC-SHA256 (RFC 2104 / FIPS 198-1) with a key of any length: 32 bytes.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    HmacSha256Key::new(key).mac(data)
}

/// The leftmost `len` bytes of a MAC (ISO/IEC 9797-1 truncation: the MAC is the leftmost m bits).
/// `len` must be 1 ..= the MAC's full length.
pub fn truncate(mac: &[u8], len: usize) -> Result<Vec<u8>> {
    if len == 0 || len > mac.len() {
        return Err(Error::new(
            ErrorKind::Input,
            "MAC length",
            format!("expected 1 to {} bytes, found {len}", mac.len()),
        ));
    }
    Ok(mac[..len].to_vec())
}

/// Compares a received MAC with the computed one in constant time. The received MAC may be a
/// truncation (at least 4 bytes) of the computed one.
pub fn verify_mac(computed: &[u8], received: &[u8]) -> Result<()> {
    if received.len() < 4 || received.len() > computed.len() {
        return Err(Error::new(
            ErrorKind::Input,
            "MAC",
            format!("expected 4 to {} bytes, found {}", computed.len(), received.len()),
        ));
    }
    if bool::from(computed[..received.len()].ct_eq(received)) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Verification, "MAC", "does not verify"))
    }
}

/// The MAC algorithms paytool and the switch name (INTERFACES.md §2 `paytool mac --alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacAlgorithm {
    /// `iso9797-1-m1`: algorithm 1 (TDES CBC-MAC), padding method 1.
    Iso9797Alg1Pad1,
    /// `iso9797-1-m2`: algorithm 1 (TDES CBC-MAC), padding method 2.
    Iso9797Alg1Pad2,
    /// `retail`: algorithm 3 (ANSI X9.19), padding method 1.
    Retail,
    /// `cmac`: AES-CMAC.
    CmacAes,
    /// `cmac-tdes`: TDES-CMAC.
    CmacTdes,
    /// `hmac-sha256`.
    HmacSha256,
}

impl MacAlgorithm {
    pub const ALL: [MacAlgorithm; 6] = [
        MacAlgorithm::Iso9797Alg1Pad1,
        MacAlgorithm::Iso9797Alg1Pad2,
        MacAlgorithm::Retail,
        MacAlgorithm::CmacAes,
        MacAlgorithm::CmacTdes,
        MacAlgorithm::HmacSha256,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            MacAlgorithm::Iso9797Alg1Pad1 => "iso9797-1-m1",
            MacAlgorithm::Iso9797Alg1Pad2 => "iso9797-1-m2",
            MacAlgorithm::Retail => "retail",
            MacAlgorithm::CmacAes => "cmac",
            MacAlgorithm::CmacTdes => "cmac-tdes",
            MacAlgorithm::HmacSha256 => "hmac-sha256",
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        MacAlgorithm::ALL.into_iter().find(|a| a.name() == name).ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "MAC algorithm",
                format!(
                    "unknown algorithm {name:?}; expected one of {}",
                    MacAlgorithm::ALL.map(|a| a.name()).join(", ")
                ),
            )
        })
    }

    /// The full MAC of `data` under the clear key bytes `key` (TDES 16/24 bytes, AES 16/24/32,
    /// HMAC any non-empty length).
    pub fn compute(self, key: &[u8], data: &[u8]) -> Result<Vec<u8>> {
        let tdes = || TdesKey::from_slice(key).map_err(|e| Error { what: "MAC key", ..e });
        Ok(match self {
            MacAlgorithm::Iso9797Alg1Pad1 => cbc_mac_tdes(&tdes()?, data, Padding::Method1).to_vec(),
            MacAlgorithm::Iso9797Alg1Pad2 => cbc_mac_tdes(&tdes()?, data, Padding::Method2).to_vec(),
            MacAlgorithm::Retail => retail_mac(&tdes()?, data, Padding::Method1)?.to_vec(),
            MacAlgorithm::CmacTdes => cmac_tdes(&tdes()?, data).to_vec(),
            MacAlgorithm::CmacAes => {
                let k = AesKey::from_slice(key).map_err(|e| Error { what: "MAC key", ..e })?;
                cmac_aes(&k, data).to_vec()
            }
            MacAlgorithm::HmacSha256 => {
                if key.is_empty() {
                    return Err(Error::new(ErrorKind::KeyLength, "MAC key", "HMAC key is empty"));
                }
                hmac_sha256(key, data).to_vec()
            }
        })
    }

    /// The MAC truncated to `len` bytes (the full MAC when `None`).
    pub fn compute_len(self, key: &[u8], data: &[u8], len: Option<usize>) -> Result<Vec<u8>> {
        let full = self.compute(key, data)?;
        match len {
            None => Ok(full),
            Some(n) => truncate(&full, n),
        }
    }

    /// Verifies a received (possibly truncated) MAC in constant time.
    pub fn verify(self, key: &[u8], data: &[u8], received: &[u8]) -> Result<()> {
        verify_mac(&self.compute(key, data)?, received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_methods() {
        assert_eq!(pad(&[0x12, 0x34], 8, Padding::Method1), [0x12, 0x34, 0, 0, 0, 0, 0, 0]);
        assert_eq!(pad(&[], 8, Padding::Method1), [0u8; 8]);
        assert_eq!(pad(&[1; 8], 8, Padding::Method1), [1u8; 8]);
        assert_eq!(pad(&[1; 8], 8, Padding::Method2).len(), 16);
        assert_eq!(pad(&[0x12, 0x34], 8, Padding::Method2), [0x12, 0x34, 0x80, 0, 0, 0, 0, 0]);
        assert_eq!(
            pad(&[0x12, 0x34], 8, Padding::Method3),
            [0, 0, 0, 0, 0, 0, 0, 0x10, 0x12, 0x34, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn truncation_bounds() {
        assert!(truncate(&[1; 8], 0).is_err());
        assert!(truncate(&[1; 8], 9).is_err());
        assert_eq!(truncate(&[1, 2, 3, 4, 5, 6, 7, 8], 4).unwrap(), [1, 2, 3, 4]);
    }
}
