//! Data sealed for one device: how the token service hands token data (the token, its expiry, the
//! card's keys for HCE) to a phone so that only that phone — or its secure element — can read it.
//!
//! ECIES over P-256: an ephemeral key pair (its secret scalar drawn by the caller), ECDH with the
//! device's enrolled public key, HKDF-SHA256 (SP 800-56C two-step: salt = ephemeral public key ‖
//! device public key, both SEC1 uncompressed; info = the caller's context label) to a 32-byte key,
//! then AES-256-GCM with the context label as associated data. Layout of the sealed bytes:
//! ephemeral public key (65) ‖ nonce (12) ‖ ciphertext ‖ tag (16).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};

const EPK_LEN: usize = 65;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

fn err(kind: ErrorKind, what: &'static str, detail: &str) -> Error {
    Error::new(kind, what, detail)
}

/// The SEC1 uncompressed public key of a 32-byte P-256 secret scalar.
pub fn public_key(secret: &[u8]) -> Result<[u8; EPK_LEN]> {
    let sk = SecretKey::from_slice(secret)
        .map_err(|_| err(ErrorKind::Input, "device secret key", "not a valid P-256 scalar (0 < d < n)"))?;
    uncompressed(&sk.public_key())
}

fn uncompressed(pk: &PublicKey) -> Result<[u8; EPK_LEN]> {
    let ep = pk.to_sec1_point(false);
    ep.as_bytes()
        .try_into()
        .map_err(|_| err(ErrorKind::Input, "public key", "unexpected SEC1 encoding length"))
}

fn derive(shared_x: &[u8], epk: &[u8], device_pub: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let mut salt = Vec::with_capacity(2 * EPK_LEN);
    salt.extend_from_slice(epk);
    salt.extend_from_slice(device_pub);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared_x);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(info, key.as_mut()).map_err(|_| err(ErrorKind::Input, "HKDF", "output length refused"))?;
    Ok(key)
}

/// Seals `plaintext` for the device whose public key is `device_pub` (SEC1, compressed or not).
/// `ephemeral_secret` (32 random bytes) and `nonce` come from the caller's random source.
pub fn seal(
    device_pub: &[u8],
    ephemeral_secret: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    info: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let dpk = PublicKey::from_sec1_bytes(device_pub)
        .map_err(|_| err(ErrorKind::Input, "device public key", "not a P-256 point in SEC1 encoding"))?;
    let esk = SecretKey::from_slice(ephemeral_secret)
        .map_err(|_| err(ErrorKind::Input, "ephemeral secret", "not a valid P-256 scalar"))?;
    let epk = uncompressed(&esk.public_key())?;
    let dpk_bytes = uncompressed(&dpk)?;
    let shared = p256::ecdh::diffie_hellman(esk.to_nonzero_scalar(), dpk.as_affine());
    let key = derive(shared.raw_secret_bytes().as_slice(), &epk, &dpk_bytes, info)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref())
        .map_err(|_| err(ErrorKind::KeyLength, "AES-256-GCM key", "32 bytes expected"))?;
    let ct = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: info })
        .map_err(|_| err(ErrorKind::Input, "plaintext", "AES-GCM refused to encrypt"))?;
    let mut out = Vec::with_capacity(EPK_LEN + NONCE_LEN + ct.len());
    out.extend_from_slice(&epk);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens data sealed for the device whose secret scalar is `device_secret`. Any change to the
/// sealed bytes or the context label, or another device's key, is an error.
pub fn open(device_secret: &[u8], info: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < EPK_LEN + NONCE_LEN + TAG_LEN {
        return Err(err(ErrorKind::Input, "sealed data", "shorter than key, nonce and tag"));
    }
    let (epk, rest) = sealed.split_at(EPK_LEN);
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let sk = SecretKey::from_slice(device_secret)
        .map_err(|_| err(ErrorKind::Input, "device secret key", "not a valid P-256 scalar"))?;
    let epk_point = PublicKey::from_sec1_bytes(epk)
        .map_err(|_| err(ErrorKind::Input, "sealed data", "ephemeral key is not a P-256 point"))?;
    let dpk = uncompressed(&sk.public_key())?;
    let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), epk_point.as_affine());
    let key = derive(shared.raw_secret_bytes().as_slice(), epk, &dpk, info)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref())
        .map_err(|_| err(ErrorKind::KeyLength, "AES-256-GCM key", "32 bytes expected"))?;
    let nonce =
        Nonce::try_from(nonce).map_err(|_| err(ErrorKind::Input, "sealed data", "bad nonce length"))?;
    cipher.decrypt(&nonce, Payload { msg: ct, aad: info }).map(Zeroizing::new).map_err(|_| {
        err(ErrorKind::Verification, "sealed data", "does not open (tampered, wrong device or label)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_for_one_device_only() {
        let device = [0x11u8; 32];
        let other = [0x22u8; 32];
        let pubkey = public_key(&device).expect("pub");
        let sealed = seal(&pubkey, &[0x33; 32], [7; 12], b"paynet token v1", b"token data").expect("seal");
        assert_eq!(sealed.len(), 65 + 12 + 10 + 16);
        assert_eq!(open(&device, b"paynet token v1", &sealed).expect("open").as_slice(), b"token data");
        assert!(open(&other, b"paynet token v1", &sealed).is_err(), "another device");
        assert!(open(&device, b"paynet token v2", &sealed).is_err(), "another label");
        let mut t = sealed.clone();
        t[80] ^= 1;
        assert!(open(&device, b"paynet token v1", &t).is_err(), "tampered");
        assert!(open(&device, b"x", &sealed[..40]).is_err(), "short");
        assert!(seal(&[4u8; 65], &[0x33; 32], [7; 12], b"", b"").is_err(), "not a point");
        assert!(public_key(&[0u8; 32]).is_err(), "zero scalar");
    }
}
