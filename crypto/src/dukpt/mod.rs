//! DUKPT — Derived Unique Key Per Transaction: TDES (ANSI X9.24-1:2009 Annex A) and AES
//! (ANSI X9.24-3-2017).
//!
//! Both sides of the scheme are here: the host (receiving) side derives any transaction key from
//! the BDK and the KSN a device sent; the device (originating) side keeps its future-key registers
//! and advances its counter by the standard's rules. The KSN newtypes carry the counter arithmetic.
//! Sans-IO: nothing here reads a clock or a random source.

pub mod aes;
pub mod tdes;

use std::fmt;

use crate::error::{Error, ErrorKind, Result};
use crate::keys::{from_hex, to_hex};

/// What a working key is for. TDES derives these as variants (X9.24-1:2009 A.4.1 / A.6, data keys
/// with the one-way step); AES maps them to the X9.24-3-2017 key usage indicators (§6.3.3, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUsage {
    /// PIN encryption.
    Pin,
    /// MAC request (AES: MAC generation).
    MacRequest,
    /// MAC response (AES: MAC verification).
    MacResponse,
    /// Data encryption, request (AES: data encryption, encrypt).
    DataRequest,
    /// Data encryption, response (AES: data encryption, decrypt).
    DataResponse,
}

impl KeyUsage {
    /// The paytool name (`pin`, `mac-req`, `mac-resp`, `data-req`, `data-resp`).
    pub fn from_name(s: &str) -> Result<Self> {
        Ok(match s {
            "pin" => KeyUsage::Pin,
            "mac-req" => KeyUsage::MacRequest,
            "mac-resp" => KeyUsage::MacResponse,
            "data-req" => KeyUsage::DataRequest,
            "data-resp" => KeyUsage::DataResponse,
            _ => {
                return Err(Error::new(
                    ErrorKind::Input,
                    "usage",
                    "expected pin, mac-req, mac-resp, data-req or data-resp",
                ));
            }
        })
    }
}

fn ksn_bytes<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| {
        Error::new(
            ErrorKind::Ksn,
            what,
            format!("expected {N} bytes ({} hex digits), found {}", 2 * N, bytes.len()),
        )
    })
}

/// A TDES DUKPT key serial number (10 bytes): key set ID and device ID in the leftmost 59 bits,
/// the 21-bit transaction counter in the rightmost (X9.24-1:2009 §A.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TdesKsn([u8; 10]);

impl TdesKsn {
    /// The counter mask over the rightmost 21 bits.
    pub const COUNTER_MASK: u32 = 0x1F_FFFF;
    /// The most one-bits a counter the device uses may have (X9.24-1:2009 §A.2).
    pub const MAX_ONE_BITS: u32 = 10;

    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        Ok(TdesKsn(ksn_bytes("KSN", bytes)?))
    }

    pub fn from_hex(s: &str) -> Result<Self> {
        let b = from_hex("KSN", s).map_err(|e| Error { kind: ErrorKind::Ksn, ..e })?;
        Self::from_slice(&b)
    }

    pub fn as_bytes(&self) -> &[u8; 10] {
        &self.0
    }

    /// The 21-bit transaction counter.
    pub fn counter(&self) -> u32 {
        u32::from_be_bytes([0, self.0[7], self.0[8], self.0[9]]) & Self::COUNTER_MASK
    }

    /// The same KSN with another counter (at most 21 bits).
    pub fn with_counter(&self, counter: u32) -> Result<Self> {
        if counter > Self::COUNTER_MASK {
            return Err(Error::new(ErrorKind::Ksn, "KSN", format!("counter {counter:#X} exceeds 21 bits")));
        }
        let mut b = self.0;
        let tail = (u32::from_be_bytes([0, b[7], b[8], b[9]]) & !Self::COUNTER_MASK) | counter;
        let t = tail.to_be_bytes();
        b[7..10].copy_from_slice(&t[1..4]);
        Ok(TdesKsn(b))
    }

    /// The initial KSN (counter zero): what the initial key is derived from.
    pub fn initial(&self) -> Self {
        let mut b = self.0;
        b[7] &= 0xE0;
        b[8] = 0;
        b[9] = 0;
        TdesKsn(b)
    }

    /// The next counter a device uses: counters with more than 10 one-bits are skipped
    /// (X9.24-1:2009 §A.2). [`ErrorKind::Ksn`] when the 21-bit counter is exhausted.
    pub fn next(&self) -> Result<Self> {
        let c =
            next_counter(self.counter(), Self::MAX_ONE_BITS, Self::COUNTER_MASK as u64).ok_or_else(|| {
                Error::new(ErrorKind::Ksn, "KSN", "transaction counter exhausted (past 0x1FF800)")
            })?;
        self.with_counter(c)
    }

    /// Checks that the counter is one a device can use: not zero, at most 10 one-bits.
    pub fn check_usable(&self) -> Result<()> {
        check_counter("KSN", self.counter(), Self::MAX_ONE_BITS)
    }
}

/// An AES DUKPT key serial number (12 bytes): initial key ID (8: BDK ID 4 ‖ derivation ID 4)
/// ‖ 32-bit transaction counter (X9.24-3-2017 §6.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AesKsn([u8; 12]);

impl AesKsn {
    /// The most one-bits a counter may have (X9.24-3-2017 §6.1).
    pub const MAX_ONE_BITS: u32 = 16;

    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        Ok(AesKsn(ksn_bytes("KSN", bytes)?))
    }

    pub fn from_hex(s: &str) -> Result<Self> {
        let b = from_hex("KSN", s).map_err(|e| Error { kind: ErrorKind::Ksn, ..e })?;
        Self::from_slice(&b)
    }

    /// A KSN from an initial key ID and a counter.
    pub fn new(initial_key_id: [u8; 8], counter: u32) -> Self {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&initial_key_id);
        b[8..].copy_from_slice(&counter.to_be_bytes());
        AesKsn(b)
    }

    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }

    pub fn initial_key_id(&self) -> [u8; 8] {
        let mut id = [0u8; 8];
        id.copy_from_slice(&self.0[..8]);
        id
    }

    pub fn counter(&self) -> u32 {
        u32::from_be_bytes([self.0[8], self.0[9], self.0[10], self.0[11]])
    }

    pub fn with_counter(&self, counter: u32) -> Self {
        AesKsn::new(self.initial_key_id(), counter)
    }

    /// The next counter a device uses: counters with more than 16 one-bits are skipped;
    /// [`ErrorKind::Ksn`] when the 32-bit counter is exhausted.
    pub fn next(&self) -> Result<Self> {
        let c = next_counter(self.counter(), Self::MAX_ONE_BITS, u32::MAX as u64).ok_or_else(|| {
            Error::new(ErrorKind::Ksn, "KSN", "transaction counter exhausted (past 0xFFFF0000)")
        })?;
        Ok(self.with_counter(c))
    }

    /// Checks that the counter is one a device can use: not zero, at most 16 one-bits.
    pub fn check_usable(&self) -> Result<()> {
        check_counter("KSN", self.counter(), Self::MAX_ONE_BITS)
    }
}

/// The smallest counter above `c` with at most `max_ones` one-bits, if it fits under `limit`.
fn next_counter(c: u32, max_ones: u32, limit: u64) -> Option<u32> {
    let mut n = c as u64 + 1;
    while n.count_ones() > max_ones {
        n += n & n.wrapping_neg();
    }
    if n > limit { None } else { u32::try_from(n).ok() }
}

fn check_counter(what: &'static str, c: u32, max_ones: u32) -> Result<()> {
    if c == 0 {
        return Err(Error::new(ErrorKind::Ksn, what, "counter 0 is the initial KSN, not a transaction"));
    }
    if c.count_ones() > max_ones {
        return Err(Error::new(
            ErrorKind::Ksn,
            what,
            format!("counter {c:#X} has {} one-bits, more than the {max_ones} a device uses", c.count_ones()),
        ));
    }
    Ok(())
}

impl fmt::Debug for TdesKsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TdesKsn({})", to_hex(&self.0))
    }
}
impl fmt::Display for TdesKsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}
impl fmt::Debug for AesKsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AesKsn({})", to_hex(&self.0))
    }
}
impl fmt::Display for AesKsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tdes_counter_skips_and_exhausts() {
        let k = TdesKsn::from_hex("FFFF9876543210E00000").unwrap();
        assert_eq!(k.counter(), 0);
        assert_eq!(k.next().unwrap().counter(), 1);
        // 0x3FF has 10 one-bits; 0x400 follows; 0x7FE (10 bits) -> 0x7FF (11) skipped -> 0x800.
        assert_eq!(k.with_counter(0x3FF).unwrap().next().unwrap().counter(), 0x400);
        assert_eq!(k.with_counter(0x7FE).unwrap().next().unwrap().counter(), 0x800);
        let last = k.with_counter(0x1FF800).unwrap();
        assert_eq!(last.next().unwrap_err().kind, ErrorKind::Ksn);
        assert_eq!(&last.to_string()[..14], "FFFF9876543210");
    }

    #[test]
    fn aes_counter_skips_and_exhausts() {
        let k = AesKsn::new([0x12; 8], 0x1FFFE);
        assert_eq!(k.next().unwrap().counter(), 0x20000);
        assert!(AesKsn::new([0; 8], 0xFFFF0000).next().is_err());
        assert_eq!(AesKsn::new([0; 8], 0xFFFE8000).next().unwrap().counter(), 0xFFFF0000);
    }

    #[test]
    fn bad_ksns() {
        assert_eq!(TdesKsn::from_hex("FFFF").unwrap_err().kind, ErrorKind::Ksn);
        assert!(AesKsn::from_hex("zz").is_err());
        assert!(TdesKsn::from_hex("FFFF9876543210E00000").unwrap().check_usable().is_err());
    }
}
