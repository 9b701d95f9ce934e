//! What every device simulator (the merchant terminal, the ATM) needs to keep things in its state
//! folder safely: files replaced atomically (write, sync, rename — a crash leaves the old file or
//! the new one, never half of one), exclusive file locks (one process at a time per device), and
//! the sealer of messages kept there that carry a PAN (reversal advices owed), so that the folder
//! never holds a clear PAN.
//!
//! The sealer is AES-256-GCM under a key derived by HMAC-SHA256 (RFC 2104) from a device secret and
//! a label naming what is sealed; the sealed form is hex of nonce (12) ‖ ciphertext ‖ tag (16)
//! (NIST SP 800-38D). Nonces are an argument: callers draw them from the operating system.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

/// Writes `bytes` to `path` atomically (a `.tmp` sibling, synced, then renamed over it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Opens (creating it) and exclusively locks `path`, waiting for another holder to let go; the
/// lock is released when the file is dropped.
pub fn lock_file(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    f.lock()?;
    Ok(f)
}

/// A device identifier (TID) made safe as part of a file name: ASCII letters, digits and `-`
/// kept, anything else `_`.
pub fn safe_name(id: &str) -> String {
    id.trim_end().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// Seals and opens what a device keeps that carries a PAN.
pub struct Sealer {
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// The sealing key: HMAC-SHA256 of `label` under the device's `secret`.
    pub fn derived(secret: &[u8], label: &[u8]) -> Self {
        Sealer { key: Zeroizing::new(crypto::mac::hmac_sha256(secret, label).to_vec()) }
    }

    /// `plain` sealed with `nonce` (12 random bytes, never reused under one key), as hex.
    pub fn seal(&self, plain: &[u8], nonce: [u8; 12]) -> std::io::Result<String> {
        use aes_gcm::aead::{Aead, KeyInit};
        let c = aes_gcm::Aes256Gcm::new_from_slice(&self.key).map_err(std::io::Error::other)?;
        let ct = c
            .encrypt(&aes_gcm::Nonce::from(nonce), plain)
            .map_err(|_| std::io::Error::other("sealing a reversal advice failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(hex::encode_upper(out))
    }

    /// What [`Sealer::seal`] sealed; an error when it was sealed under another key or altered.
    pub fn open(&self, sealed: &str) -> std::io::Result<Zeroizing<Vec<u8>>> {
        use aes_gcm::aead::{Aead, KeyInit};
        let b = hex::decode(sealed).map_err(std::io::Error::other)?;
        let (nonce, ct) =
            b.split_at_checked(12).ok_or_else(|| std::io::Error::other("sealed advice too short"))?;
        let nonce: [u8; 12] = nonce.try_into().map_err(std::io::Error::other)?;
        let c = aes_gcm::Aes256Gcm::new_from_slice(&self.key).map_err(std::io::Error::other)?;
        c.decrypt(&aes_gcm::Nonce::from(nonce), ct).map(Zeroizing::new).map_err(|_| {
            std::io::Error::other("a sealed reversal advice does not open (another device's key?)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_under_the_same_secret_and_label() {
        let s = Sealer::derived(&[1; 16], b"label");
        let sealed = s.seal(b"0420 with a PAN 4761739001010010", [9; 12]).expect("seal");
        assert!(!sealed.contains("4761739001010010"));
        assert_eq!(&s.open(&sealed).expect("open")[..], b"0420 with a PAN 4761739001010010");
        assert!(Sealer::derived(&[2; 16], b"label").open(&sealed).is_err());
        assert!(Sealer::derived(&[1; 16], b"other").open(&sealed).is_err());
        assert!(s.open("00").is_err(), "too short");
        assert!(s.open("zz").is_err(), "not hex");
        assert_eq!(format!("{s:?}"), "Sealer(..)");
    }

    #[test]
    fn atomic_writes_replace_the_file_and_names_are_safe() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("x.json");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert!(!d.path().join("x.tmp").exists());
        assert_eq!(safe_name("TERM 01/../"), "TERM_01____");
    }
}
