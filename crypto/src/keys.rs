//! Key types: TDES (2- and 3-key) and AES (128/192/256).
//!
//! Keys zeroize on drop, compare in constant time, and never print: `Debug` shows the algorithm
//! and the key check value only. The clear bytes are reachable only through [`TdesKey::expose`] /
//! [`AesKey::expose`], whose names make every use easy to find in review.
//!
//! The block primitives (ECB of one block, CBC over whole blocks) are here because every other
//! module — MACs, PIN blocks, EMV session keys, DUKPT, key blocks — is built on them.

use std::fmt;

use aes::{Aes128, Aes192, Aes256};
use cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use des::{Des, TdesEde2, TdesEde3};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, ErrorKind, Result};

/// Decodes hex (either case) into bytes, naming the argument on error.
pub fn from_hex(what: &'static str, s: &str) -> Result<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return Err(Error::new(ErrorKind::Input, what, format!("odd number of hex digits ({})", s.len())));
    }
    hex::decode(s).map_err(|e| match e {
        hex::FromHexError::InvalidHexCharacter { index, .. } => {
            Error::new(ErrorKind::Input, what, format!("non-hex character at position {index}"))
        }
        other => Error::new(ErrorKind::Input, what, other.to_string()),
    })
}

/// Uppercase hex, the form every paytool answer and every config file uses.
pub fn to_hex(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// Sets odd parity on every byte (the low bit of each DES key byte is its parity bit).
pub fn adjust_odd_parity(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        let ones = (*b & 0xFE).count_ones();
        *b = (*b & 0xFE) | u8::from(ones % 2 == 0);
    }
}

/// True when every byte has odd parity.
pub fn has_odd_parity(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| b.count_ones() % 2 == 1)
}

/// XOR of two equal-length slices into a new vector.
pub fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// XOR `b` into `a` in place.
pub fn xor_in_place(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// The block cipher family a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Tdes,
    Aes,
}

/// A TDES key, double (16 bytes, K1 K2 K1) or triple length (24 bytes).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TdesKey {
    bytes: [u8; 24],
    len: u8,
}

impl TdesKey {
    /// Builds a key from 16 or 24 bytes. Parity is not checked here (see
    /// [`TdesKey::check_parity`]): many published vectors use keys without parity.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 16 && bytes.len() != 24 {
            return Err(Error::new(
                ErrorKind::KeyLength,
                "TDES key",
                format!("expected 16 or 24 bytes, found {}", bytes.len()),
            ));
        }
        let mut k = [0u8; 24];
        k[..bytes.len()].copy_from_slice(bytes);
        Ok(TdesKey { bytes: k, len: bytes.len() as u8 })
    }

    /// Builds a key from hex (32 or 48 hex digits).
    pub fn from_hex(what: &'static str, s: &str) -> Result<Self> {
        let mut b = from_hex(what, s)?;
        let k = TdesKey::from_slice(&b).map_err(|e| Error { what, ..e });
        b.zeroize();
        k
    }

    /// The clear key bytes. Every caller is a place where a clear key exists in memory.
    pub fn expose(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Fails with [`ErrorKind::KeyParity`] unless every byte has odd parity.
    pub fn check_parity(&self) -> Result<()> {
        if has_odd_parity(self.expose()) {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::KeyParity, "TDES key", "not odd parity"))
        }
    }

    /// The same key with odd parity set on every byte.
    pub fn with_odd_parity(&self) -> Self {
        let mut k = self.clone();
        let len = k.len();
        adjust_odd_parity(&mut k.bytes[..len]);
        k
    }

    /// The key schedule, prepared once: use it when a key encrypts more than one block.
    pub fn cipher(&self) -> TdesCipher {
        match self.len {
            16 => TdesCipher::Two(
                TdesEde2::new_from_slice(self.expose()).expect("length checked at construction"),
            ),
            _ => TdesCipher::Three(
                TdesEde3::new_from_slice(self.expose()).expect("length checked at construction"),
            ),
        }
    }

    pub fn encrypt_block(&self, block: &mut [u8; 8]) {
        self.cipher().encrypt_block(block);
    }

    pub fn decrypt_block(&self, block: &mut [u8; 8]) {
        self.cipher().decrypt_block(block);
    }

    /// ECB encryption of one 8-byte block, returned by value.
    pub fn encrypt(&self, block: [u8; 8]) -> [u8; 8] {
        let mut b = block;
        self.encrypt_block(&mut b);
        b
    }

    /// ECB decryption of one 8-byte block, returned by value.
    pub fn decrypt(&self, block: [u8; 8]) -> [u8; 8] {
        let mut b = block;
        self.decrypt_block(&mut b);
        b
    }

    /// ECB over whole blocks (`data.len()` a multiple of 8).
    pub fn ecb_encrypt(&self, data: &[u8]) -> Result<Vec<u8>> {
        check_blocks("data", data, 8)?;
        let c = self.cipher();
        Ok(data.chunks(8).flat_map(|b| c.encrypt(block8(b))).collect())
    }

    pub fn ecb_decrypt(&self, data: &[u8]) -> Result<Vec<u8>> {
        check_blocks("data", data, 8)?;
        let c = self.cipher();
        Ok(data.chunks(8).flat_map(|b| c.decrypt(block8(b))).collect())
    }

    /// CBC encryption over whole blocks with the given IV.
    pub fn cbc_encrypt(&self, iv: [u8; 8], data: &[u8]) -> Result<Vec<u8>> {
        check_blocks("data", data, 8)?;
        let cipher = self.cipher();
        let mut prev = iv;
        let mut out = Vec::with_capacity(data.len());
        for c in data.chunks(8) {
            let mut b = block8(c);
            xor_in_place(&mut b, &prev);
            cipher.encrypt_block(&mut b);
            out.extend_from_slice(&b);
            prev = b;
        }
        Ok(out)
    }

    /// CBC decryption over whole blocks with the given IV.
    pub fn cbc_decrypt(&self, iv: [u8; 8], data: &[u8]) -> Result<Vec<u8>> {
        check_blocks("data", data, 8)?;
        let cipher = self.cipher();
        let mut prev = iv;
        let mut out = Vec::with_capacity(data.len());
        for c in data.chunks(8) {
            let cb = block8(c);
            let mut b = cb;
            cipher.decrypt_block(&mut b);
            xor_in_place(&mut b, &prev);
            out.extend_from_slice(&b);
            prev = cb;
        }
        Ok(out)
    }

    /// Key check value: the first 3 bytes of the encryption of 8 zero bytes.
    pub fn kcv(&self) -> [u8; 3] {
        let b = self.encrypt([0u8; 8]);
        [b[0], b[1], b[2]]
    }

    /// The left half (K1) as a single-DES key, for ISO 9797-1 algorithm 3.
    pub fn single_des_left(&self) -> SingleDes {
        SingleDes::from_array(block8(&self.bytes[..8]))
    }

    /// The right half (K2) as a single-DES key.
    pub fn single_des_right(&self) -> SingleDes {
        SingleDes::from_array(block8(&self.bytes[8..16]))
    }
}

impl PartialEq for TdesKey {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && bool::from(self.expose().ct_eq(other.expose()))
    }
}
impl Eq for TdesKey {}

impl fmt::Debug for TdesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TdesKey({}-key, KCV {})", self.len / 8, to_hex(&self.kcv()))
    }
}

/// A single-DES key: only ever a building block of ISO 9797-1 algorithm 3 (retail MAC) and of
/// legacy derivations, never a key in the keystore.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SingleDes([u8; 8]);

impl SingleDes {
    pub fn from_array(k: [u8; 8]) -> Self {
        SingleDes(k)
    }

    pub fn encrypt(&self, block: [u8; 8]) -> [u8; 8] {
        let c = Des::new_from_slice(&self.0).expect("8-byte key");
        let mut b = block;
        c.encrypt_block((&mut b).into());
        b
    }

    pub fn decrypt(&self, block: [u8; 8]) -> [u8; 8] {
        let c = Des::new_from_slice(&self.0).expect("8-byte key");
        let mut b = block;
        c.decrypt_block((&mut b).into());
        b
    }
}

impl fmt::Debug for SingleDes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SingleDes(..)")
    }
}

/// An AES key of 16, 24 or 32 bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AesKey {
    bytes: [u8; 32],
    len: u8,
}

/// A prepared AES key schedule (see [`AesKey::cipher`]).
pub enum AesCipher {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

impl AesCipher {
    pub fn encrypt_block(&self, block: &mut [u8; 16]) {
        match self {
            AesCipher::A128(c) => c.encrypt_block(block.into()),
            AesCipher::A192(c) => c.encrypt_block(block.into()),
            AesCipher::A256(c) => c.encrypt_block(block.into()),
        }
    }

    pub fn decrypt_block(&self, block: &mut [u8; 16]) {
        match self {
            AesCipher::A128(c) => c.decrypt_block(block.into()),
            AesCipher::A192(c) => c.decrypt_block(block.into()),
            AesCipher::A256(c) => c.decrypt_block(block.into()),
        }
    }

    pub fn encrypt(&self, block: [u8; 16]) -> [u8; 16] {
        let mut b = block;
        self.encrypt_block(&mut b);
        b
    }

    pub fn decrypt(&self, block: [u8; 16]) -> [u8; 16] {
        let mut b = block;
        self.decrypt_block(&mut b);
        b
    }
}

impl fmt::Debug for AesCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesCipher(..)")
    }
}

/// A prepared TDES key schedule (see [`TdesKey::cipher`]); wiped when dropped.
#[derive(Clone)]
pub enum TdesCipher {
    Two(TdesEde2),
    Three(TdesEde3),
}

impl TdesCipher {
    pub fn encrypt_block(&self, block: &mut [u8; 8]) {
        match self {
            TdesCipher::Two(c) => c.encrypt_block(block.into()),
            TdesCipher::Three(c) => c.encrypt_block(block.into()),
        }
    }

    pub fn decrypt_block(&self, block: &mut [u8; 8]) {
        match self {
            TdesCipher::Two(c) => c.decrypt_block(block.into()),
            TdesCipher::Three(c) => c.decrypt_block(block.into()),
        }
    }

    pub fn encrypt(&self, block: [u8; 8]) -> [u8; 8] {
        let mut b = block;
        self.encrypt_block(&mut b);
        b
    }

    pub fn decrypt(&self, block: [u8; 8]) -> [u8; 8] {
        let mut b = block;
        self.decrypt_block(&mut b);
        b
    }
}

impl fmt::Debug for TdesCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TdesCipher(..)")
    }
}

impl AesKey {
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        if !matches!(bytes.len(), 16 | 24 | 32) {
            return Err(Error::new(
                ErrorKind::KeyLength,
                "AES key",
                format!("expected 16, 24 or 32 bytes, found {}", bytes.len()),
            ));
        }
        let mut k = [0u8; 32];
        k[..bytes.len()].copy_from_slice(bytes);
        Ok(AesKey { bytes: k, len: bytes.len() as u8 })
    }

    pub fn from_hex(what: &'static str, s: &str) -> Result<Self> {
        let mut b = from_hex(what, s)?;
        let k = AesKey::from_slice(&b).map_err(|e| Error { what, ..e });
        b.zeroize();
        k
    }

    /// The clear key bytes. Every caller is a place where a clear key exists in memory.
    pub fn expose(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The key schedule, prepared once: use it when a key encrypts more than one block.
    pub fn cipher(&self) -> AesCipher {
        let k = self.expose();
        match self.len {
            16 => AesCipher::A128(Aes128::new_from_slice(k).expect("length checked")),
            24 => AesCipher::A192(Aes192::new_from_slice(k).expect("length checked")),
            _ => AesCipher::A256(Aes256::new_from_slice(k).expect("length checked")),
        }
    }

    pub fn encrypt_block(&self, block: &mut [u8; 16]) {
        self.cipher().encrypt_block(block);
    }

    pub fn decrypt_block(&self, block: &mut [u8; 16]) {
        self.cipher().decrypt_block(block);
    }

    pub fn encrypt(&self, block: [u8; 16]) -> [u8; 16] {
        let mut b = block;
        self.encrypt_block(&mut b);
        b
    }

    pub fn decrypt(&self, block: [u8; 16]) -> [u8; 16] {
        let mut b = block;
        self.decrypt_block(&mut b);
        b
    }

    pub fn ecb_encrypt(&self, data: &[u8]) -> Result<Vec<u8>> {
        check_blocks("data", data, 16)?;
        let c = self.cipher();
        Ok(data.chunks(16).flat_map(|b| c.encrypt(block16(b))).collect())
    }

    pub fn ecb_decrypt(&self, data: &[u8]) -> Result<Vec<u8>> {
        check_blocks("data", data, 16)?;
        let c = self.cipher();
        Ok(data.chunks(16).flat_map(|b| c.decrypt(block16(b))).collect())
    }

    pub fn cbc_encrypt(&self, iv: [u8; 16], data: &[u8]) -> Result<Vec<u8>> {
        check_blocks("data", data, 16)?;
        let cipher = self.cipher();
        let mut prev = iv;
        let mut out = Vec::with_capacity(data.len());
        for c in data.chunks(16) {
            let mut b = block16(c);
            xor_in_place(&mut b, &prev);
            cipher.encrypt_block(&mut b);
            out.extend_from_slice(&b);
            prev = b;
        }
        Ok(out)
    }

    pub fn cbc_decrypt(&self, iv: [u8; 16], data: &[u8]) -> Result<Vec<u8>> {
        check_blocks("data", data, 16)?;
        let cipher = self.cipher();
        let mut prev = iv;
        let mut out = Vec::with_capacity(data.len());
        for c in data.chunks(16) {
            let cb = block16(c);
            let mut b = cb;
            cipher.decrypt_block(&mut b);
            xor_in_place(&mut b, &prev);
            out.extend_from_slice(&b);
            prev = cb;
        }
        Ok(out)
    }

    /// Full 16-byte AES-CMAC (NIST SP 800-38B) of `data`.
    pub fn cmac(&self, data: &[u8]) -> [u8; 16] {
        fn run<C: Mac>(mut m: C, data: &[u8]) -> [u8; 16] {
            m.update(data);
            let t = m.finalize().into_bytes();
            let mut out = [0u8; 16];
            out.copy_from_slice(&t[..16]);
            out
        }
        let k = self.expose();
        match self.len {
            16 => run(<Cmac<Aes128> as KeyInit>::new_from_slice(k).expect("length checked"), data),
            24 => run(<Cmac<Aes192> as KeyInit>::new_from_slice(k).expect("length checked"), data),
            _ => run(<Cmac<Aes256> as KeyInit>::new_from_slice(k).expect("length checked"), data),
        }
    }

    /// Key check value: the first 3 bytes of AES-CMAC over 16 zero bytes (X9.24-3, TR-31 D).
    pub fn kcv(&self) -> [u8; 3] {
        let t = self.cmac(&[0u8; 16]);
        [t[0], t[1], t[2]]
    }
}

impl PartialEq for AesKey {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && bool::from(self.expose().ct_eq(other.expose()))
    }
}
impl Eq for AesKey {}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AesKey({}, KCV {})", self.len as usize * 8, to_hex(&self.kcv()))
    }
}

/// A key of either family, as the keystore and key blocks carry them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SymmetricKey {
    Tdes(TdesKey),
    Aes(AesKey),
}

impl SymmetricKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            SymmetricKey::Tdes(_) => Algorithm::Tdes,
            SymmetricKey::Aes(_) => Algorithm::Aes,
        }
    }

    pub fn expose(&self) -> &[u8] {
        match self {
            SymmetricKey::Tdes(k) => k.expose(),
            SymmetricKey::Aes(k) => k.expose(),
        }
    }

    pub fn kcv(&self) -> [u8; 3] {
        match self {
            SymmetricKey::Tdes(k) => k.kcv(),
            SymmetricKey::Aes(k) => k.kcv(),
        }
    }

    pub fn as_tdes(&self, what: &'static str) -> Result<&TdesKey> {
        match self {
            SymmetricKey::Tdes(k) => Ok(k),
            SymmetricKey::Aes(_) => {
                Err(Error::new(ErrorKind::KeyUsage, what, "expected a TDES key, found AES"))
            }
        }
    }

    pub fn as_aes(&self, what: &'static str) -> Result<&AesKey> {
        match self {
            SymmetricKey::Aes(k) => Ok(k),
            SymmetricKey::Tdes(_) => {
                Err(Error::new(ErrorKind::KeyUsage, what, "expected an AES key, found TDES"))
            }
        }
    }
}

/// Verifies a key against an expected check value (hex, 4 to 6 digits compared) in constant time.
pub fn verify_kcv(key: &SymmetricKey, expected_hex: &str) -> Result<()> {
    let expected = from_hex("KCV", expected_hex)?;
    if expected.is_empty() || expected.len() > 3 {
        return Err(Error::new(
            ErrorKind::Input,
            "KCV",
            format!("expected 2 or 3 bytes, found {}", expected.len()),
        ));
    }
    let kcv = key.kcv();
    if bool::from(kcv[..expected.len()].ct_eq(&expected)) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::KeyCheckValue,
            "KCV",
            format!(
                "key check value {} does not match the expected {}",
                to_hex(&kcv[..expected.len()]),
                to_hex(&expected)
            ),
        ))
    }
}

fn check_blocks(what: &'static str, data: &[u8], n: usize) -> Result<()> {
    if !data.len().is_multiple_of(n) {
        return Err(Error::new(
            ErrorKind::Input,
            what,
            format!("length {} is not a multiple of the {n}-byte block", data.len()),
        ));
    }
    Ok(())
}

/// First 8 bytes of `c` as an array (callers pass whole blocks).
pub(crate) fn block8(c: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&c[..8]);
    b
}

/// First 16 bytes of `c` as an array (callers pass whole blocks).
pub(crate) fn block16(c: &[u8]) -> [u8; 16] {
    let mut b = [0u8; 16];
    b.copy_from_slice(&c[..16]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key schedule the crates build from our keys wipes itself when dropped (their
    /// `zeroize` features): a TDES or AES schedule, a CMAC's keyed state, a SHA-256 state (HMAC's
    /// inner and outer), an AES-GCM cipher. Without the features this does not compile.
    #[test]
    fn key_schedules_are_wiped_when_dropped() {
        fn wiped<T: zeroize::ZeroizeOnDrop>() {}
        wiped::<des::Des>();
        wiped::<des::TdesEde2>();
        wiped::<des::TdesEde3>();
        wiped::<aes::Aes128>();
        wiped::<aes::Aes192>();
        wiped::<aes::Aes256>();
        wiped::<cmac::block_api::CmacCore<aes::Aes128>>();
        wiped::<cmac::block_api::CmacCore<des::TdesEde2>>();
        wiped::<sha2::Sha256>();
        wiped::<aes_gcm::Aes256Gcm>();
    }

    #[test]
    fn tdes_kcv_known_answer() {
        // Test key 0123456789ABCDEFFEDCBA9876543210: KCV 08D7B4 (widely published, e.g. in
        // payment HSM manuals and pyemv's documentation).
        let k = TdesKey::from_hex("k", "0123456789ABCDEFFEDCBA9876543210").unwrap();
        assert_eq!(to_hex(&k.kcv()), "08D7B4");
    }

    #[test]
    fn aes_ecb_fips197_vector() {
        // FIPS-197 Appendix C.1 (AES-128).
        let k = AesKey::from_hex("k", "000102030405060708090a0b0c0d0e0f").unwrap();
        let p = block16(&from_hex("p", "00112233445566778899aabbccddeeff").unwrap());
        assert_eq!(to_hex(&k.encrypt(p)), "69C4E0D86A7B0430D8CDB78070B4C55A");
        assert_eq!(k.decrypt(k.encrypt(p)), p);
    }

    #[test]
    fn aes_cmac_sp800_38b_vector() {
        // NIST SP 800-38B D.1 example 2 (AES-128, 16-byte message).
        let k = AesKey::from_hex("k", "2b7e151628aed2a6abf7158809cf4f3c").unwrap();
        let m = from_hex("m", "6bc1bee22e409f96e93d7e117393172a").unwrap();
        assert_eq!(to_hex(&k.cmac(&m)), "070A16B46B4D4144F79BDD9DD04A287C");
    }

    #[test]
    fn debug_never_shows_key() {
        let k = TdesKey::from_hex("k", "0123456789ABCDEFFEDCBA9876543210").unwrap();
        let d = format!("{k:?}");
        assert!(!d.contains("0123456789"), "{d}");
        assert!(d.contains("08D7B4"));
    }

    #[test]
    fn parity() {
        let k = TdesKey::from_slice(&[0u8; 16]).unwrap();
        assert_eq!(k.check_parity().unwrap_err().kind, ErrorKind::KeyParity);
        assert!(k.with_odd_parity().check_parity().is_ok());
    }

    #[test]
    fn short_key_is_a_clear_error() {
        let e = TdesKey::from_slice(&[1u8; 15]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KeyLength);
        assert!(e.to_string().contains("found 15"));
    }

    #[test]
    fn cbc_roundtrip() {
        let k = TdesKey::from_hex("k", "0123456789ABCDEFFEDCBA9876543210").unwrap();
        let d = [7u8; 24];
        let c = k.cbc_encrypt([1; 8], &d).unwrap();
        assert_eq!(k.cbc_decrypt([1; 8], &c).unwrap(), d);
        assert!(k.cbc_encrypt([0; 8], &[1, 2, 3]).is_err());
    }
}
