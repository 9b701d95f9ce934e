//! TDES DUKPT (ANSI X9.24-1:2009 Annex A): the initial key, the non-reversible key generation
//! process, the host's derivation of any transaction key from BDK + KSN, the key variants, and the
//! device's future-key registers.

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{KeyUsage, TdesKsn};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::{SingleDes, TdesKey};

/// Mask XORed into the BDK for the right half of the IPEK and into the key for the left half of
/// each non-reversible step (X9.24-1:2009 §A.6).
const C0_MASK: [u8; 16] = [0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0, 0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0];

/// Key variant constants (X9.24-1:2009 §A.6 and Figure A-2: PIN, MAC request/response, data
/// request/response).
const PIN_VARIANT: [u8; 16] = variant(7);
const MAC_REQUEST_VARIANT: [u8; 16] = variant(6);
const MAC_RESPONSE_VARIANT: [u8; 16] = variant(4);
const DATA_REQUEST_VARIANT: [u8; 16] = variant(5);
const DATA_RESPONSE_VARIANT: [u8; 16] = variant(3);

/// FF at byte `i` of each half.
const fn variant(i: usize) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[i] = 0xFF;
    v[8 + i] = 0xFF;
    v
}

fn key16(bytes: [u8; 16]) -> TdesKey {
    let mut b = bytes;
    let k = TdesKey::from_slice(&b);
    b.zeroize();
    // 16 bytes is always a valid TDES length.
    k.unwrap_or_else(|_| unreachable!("16-byte key"))
}

fn double_length(bdk: &TdesKey, what: &'static str) -> Result<[u8; 16]> {
    <[u8; 16]>::try_from(bdk.expose()).map_err(|_| {
        Error::new(ErrorKind::KeyLength, what, format!("TDES DUKPT needs a 16-byte key, found {}", bdk.len()))
    })
}

/// The initial PIN encryption key (IPEK, "initial key") of a device (X9.24-1:2009 §A.6): the
/// leftmost 8 bytes of the KSN with the counter cleared, TDES-encrypted under the BDK (left half)
/// and under the BDK XOR C0C0C0C000000000C0C0C0C000000000 (right half).
pub fn derive_ipek(bdk: &TdesKey, ksn: &TdesKsn) -> Result<TdesKey> {
    let mut b = double_length(bdk, "BDK")?;
    let mut data = [0u8; 8];
    data.copy_from_slice(&ksn.initial().as_bytes()[..8]);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&bdk.encrypt(data));
    crate::keys::xor_in_place(&mut b, &C0_MASK);
    let masked = key16(b);
    b.zeroize();
    out[8..].copy_from_slice(&masked.encrypt(data));
    Ok(key16(out))
}

/// One step of the non-reversible key generation process (X9.24-1:2009 §A.2, "Non-reversible
/// Key Generation Process"): `register` is the rightmost 8 bytes of the KSN with the counter
/// built up to the current bit.
fn non_reversible(key: &[u8; 16], register: [u8; 8]) -> [u8; 16] {
    fn half(k: &[u8; 16], register: [u8; 8]) -> [u8; 8] {
        let mut left = [0u8; 8];
        let mut right = [0u8; 8];
        left.copy_from_slice(&k[..8]);
        right.copy_from_slice(&k[8..]);
        let mut r = register;
        crate::keys::xor_in_place(&mut r, &right);
        let mut out = SingleDes::from_array(left).encrypt(r);
        crate::keys::xor_in_place(&mut out, &right);
        left.zeroize();
        right.zeroize();
        out
    }
    let mut masked = *key;
    crate::keys::xor_in_place(&mut masked, &C0_MASK);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&half(&masked, register));
    out[8..].copy_from_slice(&half(key, register));
    masked.zeroize();
    out
}

fn register_base(ksn: &TdesKsn) -> u64 {
    let b = ksn.as_bytes();
    let mut r = [0u8; 8];
    r.copy_from_slice(&b[2..10]);
    u64::from_be_bytes(r) & !(TdesKsn::COUNTER_MASK as u64)
}

/// The current transaction key for `ksn`, from the device's initial key (X9.24-1:2009 §A.3,
/// host side): for each one-bit of the counter, most significant first, set it in the register and
/// apply the non-reversible step. Refuses counters a device never uses (0, more than 10 one-bits).
pub fn transaction_key_from_ipek(ipek: &TdesKey, ksn: &TdesKsn) -> Result<TdesKey> {
    ksn.check_usable()?;
    let mut key = double_length(ipek, "IPEK")?;
    let counter = ksn.counter() as u64;
    let mut register = register_base(ksn);
    let mut bit = 1u64 << 20;
    while bit != 0 {
        if counter & bit != 0 {
            register |= bit;
            let next = non_reversible(&key, register.to_be_bytes());
            key.zeroize();
            key = next;
        }
        bit >>= 1;
    }
    let k = key16(key);
    key.zeroize();
    Ok(k)
}

/// The current transaction key for `ksn` from the BDK (host side).
pub fn transaction_key(bdk: &TdesKey, ksn: &TdesKsn) -> Result<TdesKey> {
    let ipek = derive_ipek(bdk, ksn)?;
    transaction_key_from_ipek(&ipek, ksn)
}

/// The working key of `usage` from a transaction key (X9.24-1:2009 §A.4.1, §A.6): the key XOR
/// its variant constant; for data keys, each half of the variant then TDES-encrypted under the
/// variant itself (the one-way step).
pub fn working_key(transaction_key: &TdesKey, usage: KeyUsage) -> Result<TdesKey> {
    let mut k = double_length(transaction_key, "transaction key")?;
    let (variant, one_way) = match usage {
        KeyUsage::Pin => (PIN_VARIANT, false),
        KeyUsage::MacRequest => (MAC_REQUEST_VARIANT, false),
        KeyUsage::MacResponse => (MAC_RESPONSE_VARIANT, false),
        KeyUsage::DataRequest => (DATA_REQUEST_VARIANT, true),
        KeyUsage::DataResponse => (DATA_RESPONSE_VARIANT, true),
    };
    crate::keys::xor_in_place(&mut k, &variant);
    let v = key16(k);
    k.zeroize();
    if !one_way {
        return Ok(v);
    }
    let mut out = [0u8; 16];
    let e = v.expose();
    let mut half = [0u8; 8];
    half.copy_from_slice(&e[..8]);
    out[..8].copy_from_slice(&v.encrypt(half));
    half.copy_from_slice(&e[8..16]);
    out[8..].copy_from_slice(&v.encrypt(half));
    half.zeroize();
    let w = key16(out);
    out.zeroize();
    Ok(w)
}

/// The host's one call: the working key of `usage` for the transaction `ksn`, from the BDK.
pub fn derive_working_key(bdk: &TdesKey, ksn: &TdesKsn, usage: KeyUsage) -> Result<TdesKey> {
    working_key(&transaction_key(bdk, ksn)?, usage)
}

/// The host's derivation for one device, kept from one of its transactions to the next: its
/// initial key, and the key after each one-bit of the last counter derived (§A.3 walks the
/// counter's one-bits from the most significant, each step's key depending only on the bits
/// above and at it). A later counter whose leading bits are the same resumes from the deepest
/// step they share instead of from the initial key: a device's counter rises by one, so most of
/// the steps are shared. The same key as [`transaction_key`] for every KSN of the device, in any
/// order. Wiped when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HostDevice {
    #[zeroize(skip)]
    initial: TdesKsn,
    ipek: [u8; 16],
    /// The one-bits of `counter`, most significant first, and the key after each.
    bits: [u8; TdesKsn::MAX_ONE_BITS as usize],
    keys: [[u8; 16]; TdesKsn::MAX_ONE_BITS as usize],
    steps: usize,
    counter: u64,
}

impl std::fmt::Debug for HostDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostDevice({})", self.initial)
    }
}

impl HostDevice {
    /// The device whose transaction `ksn` is, its initial key derived from the BDK.
    pub fn new(bdk: &TdesKey, ksn: &TdesKsn) -> Result<Self> {
        let ipek = derive_ipek(bdk, ksn)?;
        let mut d = HostDevice {
            initial: ksn.initial(),
            ipek: [0u8; 16],
            bits: [0; TdesKsn::MAX_ONE_BITS as usize],
            keys: [[0u8; 16]; TdesKsn::MAX_ONE_BITS as usize],
            steps: 0,
            counter: 0,
        };
        d.ipek.copy_from_slice(ipek.expose());
        Ok(d)
    }

    /// The device's KSN with its counter cleared (what names the device).
    pub fn initial_ksn(&self) -> TdesKsn {
        self.initial
    }

    /// The transaction key for `ksn`, a KSN of this device (refused otherwise, and for counters a
    /// device never uses, as [`transaction_key_from_ipek`] refuses them).
    pub fn transaction_key(&mut self, ksn: &TdesKsn) -> Result<TdesKey> {
        ksn.check_usable()?;
        if ksn.initial() != self.initial {
            return Err(Error::new(ErrorKind::Ksn, "KSN", "not a transaction of this device"));
        }
        let counter = u64::from(ksn.counter());
        let mask = u64::from(TdesKsn::COUNTER_MASK);
        // Steps kept: while the new counter's bits at and above the step's bit are the last's.
        let above = |bit: u8| mask & !((1u64 << bit) - 1);
        let kept = self.bits[..self.steps]
            .iter()
            .take_while(|&&b| counter & above(b) == self.counter & above(b))
            .count();
        let (mut key, from) = match kept {
            0 => (self.ipek, 21u8),
            k => (self.keys[k - 1], self.bits[k - 1]),
        };
        let mut register = register_base(ksn) | (counter & above(from));
        self.steps = kept;
        for b in (0..from).rev() {
            let bit = 1u64 << b;
            if counter & bit != 0 {
                register |= bit;
                let next = non_reversible(&key, register.to_be_bytes());
                key.zeroize();
                key = next;
                self.bits[self.steps] = b;
                self.keys[self.steps] = key;
                self.steps += 1;
            }
        }
        self.counter = counter;
        let k = key16(key);
        key.zeroize();
        Ok(k)
    }
}

/// The originating device (X9.24-1:2009 §A.2): 21 future-key registers and the KSN register.
/// Register `i` holds the key for counters whose lowest one-bit is bit `i`; using a key erases it
/// and fills the registers below it from it, so no past key can be recomputed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TdesDukptDevice {
    #[zeroize(skip)]
    ksn: TdesKsn,
    future_keys: [[u8; 16]; 21],
    valid: [bool; 21],
    exhausted: bool,
}

impl std::fmt::Debug for TdesDukptDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TdesDukptDevice(next KSN {})", self.ksn)
    }
}

impl TdesDukptDevice {
    /// "Load initial key": the IPEK and the initial KSN (its counter is ignored and restarts at 0).
    /// Fills all 21 future-key registers from the IPEK and sets the counter to 1.
    pub fn load_initial_key(ipek: &TdesKey, ksn: &TdesKsn) -> Result<Self> {
        let ipek = double_length(ipek, "IPEK")?;
        let mut d = TdesDukptDevice {
            ksn: ksn.initial(),
            future_keys: [[0u8; 16]; 21],
            valid: [false; 21],
            exhausted: false,
        };
        d.fill_below(&ipek, 0, 21);
        d.ksn = d.ksn.with_counter(1)?;
        Ok(d)
    }

    /// The KSN the next transaction will carry.
    pub fn ksn(&self) -> TdesKsn {
        self.ksn
    }

    /// Fills registers for bits `0..top` from `key` with register = counter | bit.
    fn fill_below(&mut self, key: &[u8; 16], counter: u32, top: u32) {
        let base = register_base(&self.ksn) | counter as u64;
        for b in 0..top {
            let bit = 1u64 << b;
            self.future_keys[b as usize] = non_reversible(key, (base | bit).to_be_bytes());
            self.valid[b as usize] = true;
        }
    }

    /// The next transaction: returns its KSN and transaction key, then advances (erasing the
    /// key, filling the registers below it when the counter has fewer than 10 one-bits, skipping
    /// counters with more). [`ErrorKind::Ksn`] once the counter is exhausted (after about one
    /// million transactions).
    pub fn next_transaction(&mut self) -> Result<(TdesKsn, TdesKey)> {
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
        let idx = low as usize;
        if !self.valid.get(idx).copied().unwrap_or(false) {
            return Err(Error::new(ErrorKind::Ksn, "KSN", format!("no future key for counter {c:#X}")));
        }
        let mut key = self.future_keys[idx];
        self.future_keys[idx].zeroize();
        self.valid[idx] = false;
        if c.count_ones() < TdesKsn::MAX_ONE_BITS {
            self.fill_below(&key, c, low);
        }
        let out = key16(key);
        key.zeroize();
        match ksn.next() {
            Ok(n) => self.ksn = n,
            Err(_) => self.exhausted = true,
        }
        Ok((ksn, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::to_hex;
    use proptest::prelude::*;

    fn bdk() -> TdesKey {
        TdesKey::from_hex("bdk", "0123456789ABCDEFFEDCBA9876543210").expect("key")
    }

    fn ksn(device: u8, counter: u32) -> TdesKsn {
        let mut b = [0xFF, 0xFF, 0x98, 0x76, 0x54, 0x32, 0x10 ^ device, 0xE0, 0, 0];
        b[7] |= (counter >> 16) as u8 & 0x1F;
        b[8] = (counter >> 8) as u8;
        b[9] = counter as u8;
        TdesKsn::from_slice(&b).expect("ksn")
    }

    proptest! {
        /// Kept from one transaction to the next, the host's derivation gives the key derived
        /// from the BDK for every counter, whatever their order (rising, repeated, going back,
        /// far apart), and refuses what that refuses.
        #[test]
        fn a_kept_device_derives_what_the_bdk_derives(
            counters in proptest::collection::vec(
                prop_oneof![1u32..64, 0u32..=TdesKsn::COUNTER_MASK, Just(0u32), Just(0x1F_F800u32)],
                1..40,
            ),
            rising in 0u32..2_000,
        ) {
            let bdk = bdk();
            let mut host = HostDevice::new(&bdk, &ksn(1, 1)).expect("device");
            // A device's own rising counters, then the arbitrary ones.
            let all = (rising..rising + 24).chain(counters);
            for c in all {
                let k = ksn(1, c);
                match transaction_key(&bdk, &k) {
                    Ok(expected) => prop_assert_eq!(host.transaction_key(&k).expect("kept"), expected, "counter {:#X}", c),
                    Err(e) => prop_assert_eq!(host.transaction_key(&k).expect_err("refused").kind, e.kind),
                }
            }
            // Another device's KSN is not this device's.
            prop_assert!(host.transaction_key(&ksn(2, 1)).is_err());
        }
    }

    #[test]
    fn a_kept_device_names_itself_and_shows_no_key() {
        let host = HostDevice::new(&bdk(), &ksn(1, 5)).expect("device");
        assert_eq!(host.initial_ksn(), ksn(1, 0));
        let shown = format!("{host:?}");
        assert!(!shown.contains("6AC292FA") && shown.starts_with("HostDevice("), "{shown}");
    }

    #[test]
    fn variants_are_the_published_constants() {
        assert_eq!(to_hex(&PIN_VARIANT), "00000000000000FF00000000000000FF");
        assert_eq!(to_hex(&MAC_REQUEST_VARIANT), "000000000000FF00000000000000FF00");
        assert_eq!(to_hex(&MAC_RESPONSE_VARIANT), "00000000FF00000000000000FF000000");
        assert_eq!(to_hex(&DATA_REQUEST_VARIANT), "0000000000FF00000000000000FF0000");
        assert_eq!(to_hex(&DATA_RESPONSE_VARIANT), "000000FF00000000000000FF00000000");
    }
}
