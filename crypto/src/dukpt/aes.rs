//! AES DUKPT (ANSI X9.24-3-2017): the initial key from an AES BDK and the initial key ID, the
//! host's derivation of any transaction (derivation) key and working key from BDK + KSN, and the
//! device's intermediate derivation key registers.
//!
//! Every key comes from one primitive (§6.3.1): AES-ECB under the derivation key of 16-byte
//! derivation data blocks (§6.3.2), as many blocks as the derived key needs.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{AesKsn, KeyUsage};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::{AesKey, SymmetricKey, TdesKey};

/// The key types DUKPT AES derives (X9.24-3-2017 §6.3.2, algorithm indicator), weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AesDukptKeyType {
    Tdes2,
    Tdes3,
    Aes128,
    Aes192,
    Aes256,
}

impl AesDukptKeyType {
    /// paytool names: `tdes2`, `tdes3`, `aes128`, `aes192`, `aes256`.
    pub fn from_name(s: &str) -> Result<Self> {
        Ok(match s {
            "tdes2" => Self::Tdes2,
            "tdes3" => Self::Tdes3,
            "aes128" => Self::Aes128,
            "aes192" => Self::Aes192,
            "aes256" => Self::Aes256,
            _ => {
                return Err(Error::new(
                    ErrorKind::Input,
                    "key type",
                    "expected aes128, aes192, aes256, tdes2 or tdes3",
                ));
            }
        })
    }

    /// The type of an AES BDK or initial key, by its length.
    pub fn of(key: &AesKey) -> Self {
        match key.len() {
            16 => Self::Aes128,
            24 => Self::Aes192,
            _ => Self::Aes256,
        }
    }

    /// Algorithm indicator (derivation data bytes 4–5).
    fn algorithm(self) -> u16 {
        match self {
            Self::Tdes2 => 0x0000,
            Self::Tdes3 => 0x0001,
            Self::Aes128 => 0x0002,
            Self::Aes192 => 0x0003,
            Self::Aes256 => 0x0004,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::Tdes2 | Self::Aes128 => 16,
            Self::Tdes3 | Self::Aes192 => 24,
            Self::Aes256 => 32,
        }
    }
}

/// Key usage indicators (derivation data bytes 2–3, X9.24-3-2017 §6.3.2 Table 2).
const USAGE_KEY_DERIVATION: u16 = 0x8000;
const USAGE_INITIAL_KEY: u16 = 0x8001;

fn usage_indicator(usage: KeyUsage) -> u16 {
    match usage {
        KeyUsage::Pin => 0x1000,
        KeyUsage::MacRequest => 0x2000,
        KeyUsage::MacResponse => 0x2001,
        KeyUsage::DataRequest => 0x3000,
        KeyUsage::DataResponse => 0x3001,
    }
}

/// Derivation data (§6.3.2): version 01, block counter, usage, algorithm, length in bits, then
/// either the initial key ID (initial key) or its rightmost 4 bytes ‖ the counter.
fn derivation_data(usage: u16, key_type: AesDukptKeyType, tail: [u8; 8]) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0] = 0x01;
    d[1] = 0x01;
    d[2..4].copy_from_slice(&usage.to_be_bytes());
    d[4..6].copy_from_slice(&key_type.algorithm().to_be_bytes());
    d[6..8].copy_from_slice(&((key_type.key_len() * 8) as u16).to_be_bytes());
    d[8..].copy_from_slice(&tail);
    d
}

fn ksn_tail(ksn: &AesKsn, counter: u32) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&ksn.as_bytes()[4..8]);
    t[4..].copy_from_slice(&counter.to_be_bytes());
    t
}

/// The derivation primitive (§6.3.1): AES-ECB of the derivation data, block counter 1, 2, …,
/// concatenated and cut to the key length.
fn derive(key: &AesKey, data: [u8; 16], key_type: AesDukptKeyType) -> Zeroizing<Vec<u8>> {
    let len = key_type.key_len();
    let mut out = Zeroizing::new(Vec::with_capacity(32));
    let mut d = data;
    let mut i = 1u8;
    while out.len() < len {
        d[1] = i;
        out.extend_from_slice(&key.encrypt(d));
        i += 1;
    }
    out.truncate(len);
    out
}

fn aes_key(bytes: &[u8]) -> AesKey {
    // Lengths come from AesDukptKeyType of an AES type: always 16, 24 or 32.
    AesKey::from_slice(bytes).unwrap_or_else(|_| unreachable!("AES key length"))
}

/// The initial key (§6.3.3 "Derive Initial Key"): from the BDK and the 8-byte initial key ID,
/// of the BDK's own type.
pub fn derive_initial_key(bdk: &AesKey, initial_key_id: &[u8; 8]) -> AesKey {
    let t = AesDukptKeyType::of(bdk);
    aes_key(&derive(bdk, derivation_data(USAGE_INITIAL_KEY, t, *initial_key_id), t))
}

/// The transaction's derivation key from the initial key (§6.3.4, host side): for each one-bit
/// of the counter, most significant first, derive with usage "key derivation" over the counter
/// built so far. Refuses counters a device never uses (0, more than 16 one-bits).
pub fn transaction_key_from_initial(initial_key: &AesKey, ksn: &AesKsn) -> Result<AesKey> {
    ksn.check_usable()?;
    let t = AesDukptKeyType::of(initial_key);
    let counter = ksn.counter();
    let mut key = initial_key.clone();
    let mut working = 0u32;
    let mut bit = 1u32 << 31;
    while bit != 0 {
        if counter & bit != 0 {
            working |= bit;
            key = aes_key(&derive(&key, derivation_data(USAGE_KEY_DERIVATION, t, ksn_tail(ksn, working)), t));
        }
        bit >>= 1;
    }
    Ok(key)
}

/// The transaction's derivation key from the BDK.
pub fn transaction_key(bdk: &AesKey, ksn: &AesKsn) -> Result<AesKey> {
    transaction_key_from_initial(&derive_initial_key(bdk, &ksn.initial_key_id()), ksn)
}

/// A working key of `usage` and `key_type` from the transaction's derivation key (§6.3.5). A key
/// type stronger than the derivation key's is refused ([`ErrorKind::KeyUsage`]).
pub fn working_key(
    transaction_key: &AesKey,
    ksn: &AesKsn,
    usage: KeyUsage,
    key_type: AesDukptKeyType,
) -> Result<SymmetricKey> {
    let base = AesDukptKeyType::of(transaction_key);
    if key_type > base {
        return Err(Error::new(
            ErrorKind::KeyUsage,
            "key type",
            format!("{key_type:?} is stronger than the {base:?} BDK"),
        ));
    }
    let bytes = derive(
        transaction_key,
        derivation_data(usage_indicator(usage), key_type, ksn_tail(ksn, ksn.counter())),
        key_type,
    );
    Ok(match key_type {
        AesDukptKeyType::Tdes2 | AesDukptKeyType::Tdes3 => SymmetricKey::Tdes(TdesKey::from_slice(&bytes)?),
        _ => SymmetricKey::Aes(aes_key(&bytes)),
    })
}

/// The host's one call: the working key for the transaction `ksn` from the BDK; `key_type`
/// defaults to the BDK's type.
pub fn derive_working_key(
    bdk: &AesKey,
    ksn: &AesKsn,
    usage: KeyUsage,
    key_type: Option<AesDukptKeyType>,
) -> Result<SymmetricKey> {
    let t = key_type.unwrap_or(AesDukptKeyType::of(bdk));
    if t > AesDukptKeyType::of(bdk) {
        return Err(Error::new(
            ErrorKind::KeyUsage,
            "key type",
            format!("{t:?} is stronger than the {:?} BDK", AesDukptKeyType::of(bdk)),
        ));
    }
    working_key(&transaction_key(bdk, ksn)?, ksn, usage, t)
}

/// The originating device (X9.24-3-2017 §6.4, §6.5): 32 intermediate derivation key registers and
/// the KSN. Register `i` holds the derivation key of counters whose lowest one-bit is bit `i`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AesDukptDevice {
    #[zeroize(skip)]
    ksn: AesKsn,
    registers: Vec<Option<AesKey>>,
    exhausted: bool,
}

impl std::fmt::Debug for AesDukptDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AesDukptDevice(next KSN {})", self.ksn)
    }
}

impl AesDukptDevice {
    /// "Load initial key" (§6.5.1): fills all 32 registers from the initial key; counter 1 next.
    pub fn load_initial_key(initial_key: &AesKey, initial_key_id: [u8; 8]) -> Self {
        let mut d = AesDukptDevice {
            ksn: AesKsn::new(initial_key_id, 0),
            registers: vec![None; 32],
            exhausted: false,
        };
        d.fill_below(initial_key, 0, 32);
        d.ksn = d.ksn.with_counter(1);
        d
    }

    /// The KSN the next transaction will carry.
    pub fn ksn(&self) -> AesKsn {
        self.ksn
    }

    fn fill_below(&mut self, key: &AesKey, counter: u32, top: u32) {
        let t = AesDukptKeyType::of(key);
        for b in 0..top {
            let data = derivation_data(USAGE_KEY_DERIVATION, t, ksn_tail(&self.ksn, counter | (1u32 << b)));
            if let Some(slot) = self.registers.get_mut(b as usize) {
                *slot = Some(aes_key(&derive(key, data, t)));
            }
        }
    }

    /// The next transaction: its KSN and derivation key (pass it to [`working_key`]); then the
    /// register is erased, the ones below refilled while the counter has fewer than 16 one-bits,
    /// and the counter advanced. [`ErrorKind::Ksn`] once the counter is exhausted.
    pub fn next_transaction(&mut self) -> Result<(AesKsn, AesKey)> {
        if self.exhausted {
            return Err(Error::new(
                ErrorKind::Ksn,
                "KSN",
                "transaction counter exhausted: the device must be reloaded",
            ));
        }
        let ksn = self.ksn;
        let c = ksn.counter();
        let low = c.trailing_zeros();
        let key = self.registers.get_mut(low as usize).and_then(Option::take).ok_or_else(|| {
            Error::new(ErrorKind::Ksn, "KSN", format!("no derivation key for counter {c:#X}"))
        })?;
        if c.count_ones() < AesKsn::MAX_ONE_BITS {
            self.fill_below(&key, c, low);
        }
        match ksn.next() {
            Ok(n) => self.ksn = n,
            Err(_) => self.exhausted = true,
        }
        Ok((ksn, key))
    }
}
