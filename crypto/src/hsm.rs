//! The `Hsm` trait: what the switch and the simulators ask of a payment HSM, by key name — never
//! by clear key — and [`SoftHsm`], its software implementation over the [`Keystore`].
//!
//! The operations mirror a payment HSM's command set (generate/import a key, generate/verify a
//! MAC, verify an ARQC and make the ARPC, translate and verify PINs, verify a CVV); a hardware
//! backend implements the same trait and callers do not change. Every key is fetched for a purpose
//! (its key usage and mode of use must allow the operation), and `SoftHsm` keeps the unwrapped keys
//! in memory after the first use (the key schedule stays with the key) so that the hot path does
//! not unwrap a TR-31 block per transaction. Randomness comes from the source given at
//! construction, so tests are deterministic.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use crate::dukpt;
use crate::emv::{ArpcInput, CardInputs, CardMasterKey, Cvn, VerifiedArqc};
use crate::error::{Error, ErrorKind, Result};
use crate::keyblock::{Header, KeyUsage, ModeOfUse};
use crate::keys::{SymmetricKey, TdesKey};
use crate::keystore::{KeyName, Keystore};
use crate::mac::MacAlgorithm;
use crate::pin::{self, PinBlockFormat};

/// Where a PIN block comes from: a zone key, or a terminal's DUKPT key.
#[derive(Debug, Clone)]
pub enum PinSource<'a> {
    /// A PIN key in the keystore (ZPK, TPK).
    Zone { key: &'a str, format: PinBlockFormat },
    /// A DUKPT terminal: the BDK's name and the KSN the terminal sent (10 bytes TDES, 12 AES).
    Dukpt { bdk: &'a str, ksn: &'a [u8], format: PinBlockFormat },
}

/// A source of random bytes (key material, padding).
pub type RandomSource = Box<dyn Fn(&mut [u8]) + Send + Sync>;

/// The operations of a payment HSM.
pub trait Hsm: Send + Sync + 'static {
    /// Generates a key under the LMK; returns its KCV.
    fn generate_key(&self, name: &str, header: &Header, key_len: usize) -> Result<[u8; 3]>;
    /// Imports a key block (already under the LMK) after checking its KCV.
    fn import_key(&self, name: &str, block: &str, kcv: &str) -> Result<()>;
    /// The KCV of a stored key.
    fn key_check_value(&self, name: &str) -> Result<[u8; 3]>;
    /// A MAC of `data` under the named MAC key, truncated to `len` bytes.
    fn generate_mac(&self, key: &str, alg: MacAlgorithm, data: &[u8], len: usize) -> Result<Vec<u8>>;
    /// Verifies a (possibly truncated) MAC in constant time.
    fn verify_mac(&self, key: &str, alg: MacAlgorithm, data: &[u8], mac: &[u8]) -> Result<()>;
    /// Verifies an ARQC under the issuer master key `imk` and, when asked, makes the ARPC
    /// (an ARQC that does not verify is an error of kind `Verification`, and no ARPC is made).
    fn verify_arqc(
        &self,
        imk: &str,
        cvn: Cvn,
        card: &CardInputs<'_>,
        data: &[u8],
        arqc: &[u8],
        arpc: Option<&ArpcInput>,
    ) -> Result<Option<Vec<u8>>>;
    /// Verifies an ARQC under `imk` and keeps the card's keys for the ARPC the issuer makes once it
    /// has decided ([`VerifiedArqc::arpc`]): one derivation per chip authorization.
    fn verify_arqc_keeping_keys(
        &self,
        imk: &str,
        cvn: Cvn,
        card: &CardInputs<'_>,
        data: &[u8],
        arqc: &[u8],
    ) -> Result<VerifiedArqc>;
    /// Makes the ARPC for an ARQC without verifying it (an issuer declining before verification).
    fn generate_arpc(
        &self,
        imk: &str,
        cvn: Cvn,
        card: &CardInputs<'_>,
        arqc: &[u8],
        arpc: &ArpcInput,
    ) -> Result<Vec<u8>>;
    /// Translates a PIN block to the PIN key `to_key` in `to_format`. The clear PIN never leaves.
    fn translate_pin(
        &self,
        from: &PinSource<'_>,
        block: &[u8],
        pan: &str,
        to_key: &str,
        to_format: PinBlockFormat,
    ) -> Result<Vec<u8>>;
    /// Translates a PIN block that binds `from_pan` into one that binds `to_pan` (ISO 9564-1 §9.3:
    /// formats 0, 3 and 4 XOR or encipher the PAN into the block). A phone pays with a token: its
    /// terminal formats the PIN block with the token it read, and the issuer checks it against the
    /// card's PAN, so the network's translation changes the PAN inside the HSM — the clear PIN
    /// never leaves. HSMs without the function refuse a PAN change (`Unsupported`).
    fn translate_pin_pan_change(
        &self,
        from: &PinSource<'_>,
        block: &[u8],
        from_pan: &str,
        to_key: &str,
        to_format: PinBlockFormat,
        to_pan: &str,
    ) -> Result<Vec<u8>> {
        if from_pan == to_pan {
            return self.translate_pin(from, block, from_pan, to_key, to_format);
        }
        Err(Error::new(ErrorKind::Unsupported, "PAN", "this HSM cannot change the PAN of a PIN block"))
    }
    /// Verifies the PIN in a block against a Visa PVV under the PVK `pvk`.
    fn verify_pin_pvv(
        &self,
        from: &PinSource<'_>,
        block: &[u8],
        pan: &str,
        pvk: &str,
        pvki: u8,
        pvv: &str,
    ) -> Result<()>;
    /// Verifies a CVV / iCVV / CVV2 under the CVK `cvk`.
    fn verify_cvv(&self, cvk: &str, pan: &str, expiry: &str, service_code: &str, cvv: &str) -> Result<()>;
    /// A card profile for one device: `profile` (a JSON object without keys) completed with the
    /// ICC master key the CVN derives from `imk` over `pan` (as `"icc_mk"`, hex), sealed for the
    /// device's public key (see [`crate::device`]). The clear key exists only inside this call.
    fn seal_card_profile(
        &self,
        card: &CardKey<'_>,
        profile: &str,
        device_public_key: &[u8],
        info: &[u8],
    ) -> Result<Vec<u8>>;
    /// Like [`Hsm::seal_card_profile`], but instead of the ICC master key the profile gets
    /// `"luks": [{"atc": "001E", "key": hex}, ...]`: the common session keys of the batch's ATCs
    /// (cloud-based payments: the device never holds the master key).
    fn seal_luk_profile(
        &self,
        card: &CardKey<'_>,
        batch: LukBatch,
        profile: &str,
        device_public_key: &[u8],
        info: &[u8],
    ) -> Result<Vec<u8>>;
}

/// Limited-use keys for cloud-based (HCE) payments: the session keys of `count` ATCs from
/// `first_atc`, derived from the ICC master key inside the HSM.
#[derive(Debug, Clone, Copy)]
pub struct LukBatch {
    pub first_atc: u16,
    pub count: u16,
}

/// Which card key: the ICC master key a CVN derives from the IMK `imk` over `pan` and `psn`.
#[derive(Debug, Clone)]
pub struct CardKey<'a> {
    pub imk: &'a str,
    pub cvn: Cvn,
    pub pan: &'a crate::emv::PanDigits,
    pub psn: crate::emv::Psn,
}

/// The key usage a MAC algorithm's key must carry (X9.143 Table 2).
pub fn mac_usage(alg: MacAlgorithm) -> KeyUsage {
    match alg {
        MacAlgorithm::Iso9797Alg1Pad1 | MacAlgorithm::Iso9797Alg1Pad2 => KeyUsage::MAC_ISO9797_1,
        MacAlgorithm::Retail => KeyUsage::MAC_ISO9797_3,
        MacAlgorithm::CmacAes | MacAlgorithm::CmacTdes => KeyUsage::MAC_CMAC,
        MacAlgorithm::HmacSha256 => KeyUsage::MAC_HMAC,
    }
}

/// Unwrapped keys by (name, key usage, mode of use).
type KeyCache = HashMap<(String, [u8; 2], u8), Arc<SymmetricKey>>;

/// The software HSM.
pub struct SoftHsm {
    store: RwLock<Keystore>,
    cache: RwLock<KeyCache>,
    cards: Mutex<Kept<Arc<CardMasterKey>>>,
    /// In shards by the device's digest: a derivation runs under its shard's lock.
    devices: Box<[Mutex<Kept<dukpt::tdes::HostDevice>>]>,
    random: RandomSource,
}

/// Card master keys kept at most: the most recent cards' (about 500 bytes each, with their key
/// schedules).
pub const CARD_KEYS_KEPT: usize = 65_536;

/// DUKPT devices whose derivation is kept at most: the most recently seen (about 250 bytes each).
pub const DUKPT_DEVICES_KEPT: usize = 16_384;

/// The kept DUKPT devices' shards (each keeps its share of [`DUKPT_DEVICES_KEPT`]), so that PIN
/// translations for different terminals do not wait for one another's derivation.
const DUKPT_DEVICE_SHARDS: usize = 16;

/// Keys derived from a master key the keystore holds, kept so that its next use derives less:
/// the card master keys derived for ARQC verification (a card's next transactions derive only
/// their session key; the master key's derivation was a third of the DES an issuer runs per chip
/// authorization), and each DUKPT device's derivation (its next PIN block resumes from the steps
/// its counter shares with the last one, [`dukpt::tdes::HostDevice`]). Found by a digest of the
/// master key's name and what was derived for (no PAN is kept); bounded (the oldest go first);
/// dropped with the keystore or the master key they came from; wiped when dropped.
struct Kept<V> {
    map: HashMap<[u8; 32], (String, V)>,
    order: VecDeque<[u8; 32]>,
    max: usize,
}

impl<V> Kept<V> {
    fn new(max: usize) -> Self {
        Kept { map: HashMap::new(), order: VecDeque::new(), max }
    }

    /// The digest naming what was derived under `master` for `parts` (each length-prefixed, so
    /// that no two lists of parts give the same input).
    fn id(master: &str, parts: &[&[u8]]) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for p in std::iter::once(master.as_bytes()).chain(parts.iter().copied()) {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
        }
        h.finalize().into()
    }

    fn get_mut(&mut self, id: &[u8; 32]) -> Option<&mut V> {
        self.map.get_mut(id).map(|(_, v)| v)
    }

    fn insert(&mut self, id: [u8; 32], master: &str, v: V) {
        if self.map.insert(id, (master.to_string(), v)).is_none() {
            self.order.push_back(id);
        }
        while self.map.len() > self.max {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.map.remove(&oldest);
                }
                None => break,
            }
        }
    }

    /// Drops what was derived under `master`, or everything.
    fn forget(&mut self, master: Option<&str>) {
        match master {
            None => self.map.clear(),
            Some(name) => self.map.retain(|_, (n, _)| n != name),
        }
        let map = &self.map;
        self.order.retain(|id| map.contains_key(id));
    }
}

fn name(s: &str) -> Result<KeyName> {
    KeyName::new(s)
}

impl SoftHsm {
    pub fn new(store: Keystore, random: RandomSource) -> Self {
        SoftHsm {
            store: RwLock::new(store),
            cache: RwLock::new(HashMap::new()),
            cards: Mutex::new(Kept::new(CARD_KEYS_KEPT)),
            devices: (0..DUKPT_DEVICE_SHARDS)
                .map(|_| Mutex::new(Kept::new(DUKPT_DEVICES_KEPT / DUKPT_DEVICE_SHARDS)))
                .collect(),
            random,
        }
    }

    /// Replaces the keystore (a reload after the operator changed keys); cached keys are dropped.
    pub fn replace_keystore(&self, store: Keystore) {
        *self.store.write().unwrap_or_else(|p| p.into_inner()) = store;
        self.cache.write().unwrap_or_else(|p| p.into_inner()).clear();
        self.cards.lock().unwrap_or_else(|p| p.into_inner()).forget(None);
        for shard in &self.devices {
            shard.lock().unwrap_or_else(|p| p.into_inner()).forget(None);
        }
    }

    /// The keystore as it now stands (to save after generating or importing).
    pub fn keystore_toml(&self) -> String {
        self.store.read().unwrap_or_else(|p| p.into_inner()).to_toml()
    }

    /// The named key for `usage` and `mode`, unwrapped once and then served from memory.
    pub fn key(&self, key: &str, usage: KeyUsage, mode: ModeOfUse) -> Result<Arc<SymmetricKey>> {
        let cache_key = (key.to_string(), usage.0, mode.0);
        if let Some(k) = self.cache.read().unwrap_or_else(|p| p.into_inner()).get(&cache_key) {
            return Ok(k.clone());
        }
        let n = name(key)?;
        let k = Arc::new(self.store.read().unwrap_or_else(|p| p.into_inner()).get_for(&n, usage, mode)?);
        self.cache.write().unwrap_or_else(|p| p.into_inner()).insert(cache_key, k.clone());
        Ok(k)
    }

    fn forget(&self, key: &str) {
        self.cache.write().unwrap_or_else(|p| p.into_inner()).retain(|(n, _, _), _| n != key);
        self.cards.lock().unwrap_or_else(|p| p.into_inner()).forget(Some(key));
        for shard in &self.devices {
            shard.lock().unwrap_or_else(|p| p.into_inner()).forget(Some(key));
        }
    }

    fn mac_key(&self, key: &str, alg: MacAlgorithm, mode: ModeOfUse) -> Result<Arc<SymmetricKey>> {
        self.key(key, mac_usage(alg), mode)
    }

    /// The key that decrypts a PIN block from `from` (a DUKPT PIN working key is derived per KSN).
    fn pin_source_key(&self, from: &PinSource<'_>) -> Result<(SymmetricKey, PinBlockFormat)> {
        match from {
            PinSource::Zone { key, format } => {
                Ok(((*self.key(key, KeyUsage::PIN_ENCRYPTION, ModeOfUse::DECRYPT)?).clone(), *format))
            }
            PinSource::Dukpt { bdk: name, ksn, format } => {
                let bdk = self.key(name, KeyUsage::BDK, ModeOfUse::DERIVE)?;
                let key = match &*bdk {
                    SymmetricKey::Tdes(b) => {
                        let ksn = dukpt::TdesKsn::from_slice(ksn)?;
                        let tk = self.dukpt_transaction_key(name, b, &ksn)?;
                        SymmetricKey::Tdes(dukpt::tdes::working_key(&tk, dukpt::KeyUsage::Pin)?)
                    }
                    SymmetricKey::Aes(b) => {
                        let ksn = dukpt::AesKsn::from_slice(ksn)?;
                        dukpt::aes::derive_working_key(b, &ksn, dukpt::KeyUsage::Pin, None)?
                    }
                };
                Ok((key, *format))
            }
        }
    }

    /// The transaction key of a TDES DUKPT device's `ksn` under the BDK `name`, resuming the
    /// device's kept derivation (the BDK's usage and mode were checked by the caller, every
    /// time). A device first seen is kept once its KSN is one a device uses.
    fn dukpt_transaction_key(&self, name: &str, bdk: &TdesKey, ksn: &dukpt::TdesKsn) -> Result<TdesKey> {
        let id = Kept::<dukpt::tdes::HostDevice>::id(name, &[ksn.initial().as_bytes()]);
        let shard = &self.devices[usize::from(id[0]) % DUKPT_DEVICE_SHARDS];
        let mut devices = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(device) = devices.get_mut(&id) {
            return device.transaction_key(ksn);
        }
        let mut device = dukpt::tdes::HostDevice::new(bdk, ksn)?;
        let key = device.transaction_key(ksn)?;
        devices.insert(id, name, device);
        Ok(key)
    }

    fn fill(&self) -> pin::PinFill {
        let mut f = [0u8; 8];
        (self.random)(&mut f);
        f
    }
}

impl Hsm for SoftHsm {
    fn generate_key(&self, key: &str, header: &Header, key_len: usize) -> Result<[u8; 3]> {
        let n = name(key)?;
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        let mut rnd = zeroize::Zeroizing::new(vec![0u8; store.random_len(key_len)]);
        (self.random)(&mut rnd);
        if rnd.iter().all(|b| *b == 0) {
            return Err(Error::new(ErrorKind::Input, "random", "the random source returned only zeros"));
        }
        let kcv = store.generate(n, header, key_len, &rnd)?;
        drop(store);
        self.forget(key);
        Ok(kcv)
    }

    fn import_key(&self, key: &str, block: &str, kcv: &str) -> Result<()> {
        let n = name(key)?;
        self.store.write().unwrap_or_else(|p| p.into_inner()).insert_block(n, block, kcv)?;
        self.forget(key);
        Ok(())
    }

    fn key_check_value(&self, key: &str) -> Result<[u8; 3]> {
        self.store.read().unwrap_or_else(|p| p.into_inner()).kcv(&name(key)?)
    }

    fn generate_mac(&self, key: &str, alg: MacAlgorithm, data: &[u8], len: usize) -> Result<Vec<u8>> {
        let k = self.mac_key(key, alg, ModeOfUse::GENERATE)?;
        alg.compute_len(k.expose(), data, Some(len))
    }

    fn verify_mac(&self, key: &str, alg: MacAlgorithm, data: &[u8], mac: &[u8]) -> Result<()> {
        let k = self.mac_key(key, alg, ModeOfUse::VERIFY)?;
        alg.verify(k.expose(), data, mac)
    }

    fn verify_arqc(
        &self,
        imk: &str,
        cvn: Cvn,
        card: &CardInputs<'_>,
        data: &[u8],
        arqc: &[u8],
        arpc: Option<&ArpcInput>,
    ) -> Result<Option<Vec<u8>>> {
        let k = self.key(imk, KeyUsage::EMV_IMK_AC, ModeOfUse::DERIVE)?;
        match arpc {
            Some(input) => cvn.verify_ac_and_arpc(&k, card, data, arqc, input).map(Some),
            None => cvn.verify_ac(&k, card, data, arqc).map(|_| None),
        }
    }

    fn verify_arqc_keeping_keys(
        &self,
        imk: &str,
        cvn: Cvn,
        card: &CardInputs<'_>,
        data: &[u8],
        arqc: &[u8],
    ) -> Result<VerifiedArqc> {
        // The master key is asked for every time: its usage and mode are checked whether or
        // not the card's key is kept.
        let k = self.key(imk, KeyUsage::EMV_IMK_AC, ModeOfUse::DERIVE)?;
        let id = Kept::<Arc<CardMasterKey>>::id(imk, &[card.pan.expose().as_bytes(), &[card.psn.value()]]);
        let kept = self.cards.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&id).map(|k| Arc::clone(k));
        let mk = match kept {
            Some(mk) => mk,
            None => {
                let mk = Arc::new(cvn.card_master_key(&k, card.pan, card.psn)?);
                self.cards.lock().unwrap_or_else(|p| p.into_inner()).insert(id, imk, Arc::clone(&mk));
                mk
            }
        };
        cvn.verify_arqc_keeping_keys_from(&mk, card, data, arqc)
    }

    fn generate_arpc(
        &self,
        imk: &str,
        cvn: Cvn,
        card: &CardInputs<'_>,
        arqc: &[u8],
        arpc: &ArpcInput,
    ) -> Result<Vec<u8>> {
        let k = self.key(imk, KeyUsage::EMV_IMK_AC, ModeOfUse::DERIVE)?;
        cvn.generate_arpc(&k, card, arqc, arpc)
    }

    fn translate_pin(
        &self,
        from: &PinSource<'_>,
        block: &[u8],
        pan: &str,
        to_key: &str,
        to_format: PinBlockFormat,
    ) -> Result<Vec<u8>> {
        let (from_key, from_format) = self.pin_source_key(from)?;
        let to = self.key(to_key, KeyUsage::PIN_ENCRYPTION, ModeOfUse::ENCRYPT)?;
        pin::translate_pin_block(&from_key, from_format, &to, to_format, block, pan, &self.fill())
    }

    fn translate_pin_pan_change(
        &self,
        from: &PinSource<'_>,
        block: &[u8],
        from_pan: &str,
        to_key: &str,
        to_format: PinBlockFormat,
        to_pan: &str,
    ) -> Result<Vec<u8>> {
        let (from_key, from_format) = self.pin_source_key(from)?;
        let to = self.key(to_key, KeyUsage::PIN_ENCRYPTION, ModeOfUse::ENCRYPT)?;
        let clear = pin::decrypt_pin_block(&from_key, from_format, block, from_pan)?;
        pin::encrypt_pin_block(&to, to_format, &clear, to_pan, &self.fill())
    }

    fn verify_pin_pvv(
        &self,
        from: &PinSource<'_>,
        block: &[u8],
        pan: &str,
        pvk: &str,
        pvki: u8,
        pvv: &str,
    ) -> Result<()> {
        let (key, format) = self.pin_source_key(from)?;
        let clear = pin::decrypt_pin_block(&key, format, block, pan)?;
        let pvk = self.key(pvk, KeyUsage::PVK_VISA_PVV, ModeOfUse::VERIFY)?;
        let pvk = pvk.as_tdes("pvk")?;
        pin::verify_visa_pvv(pvk, pan, pvki, &clear, pvv)
    }

    fn verify_cvv(&self, cvk: &str, pan: &str, expiry: &str, service_code: &str, cvv: &str) -> Result<()> {
        let k = self.key(cvk, KeyUsage::CVK, ModeOfUse::VERIFY)?;
        crate::cvv::verify_cvv(k.as_tdes("cvk")?, pan, expiry, service_code, cvv)
    }

    fn seal_card_profile(
        &self,
        card: &CardKey<'_>,
        profile: &str,
        device_public_key: &[u8],
        info: &[u8],
    ) -> Result<Vec<u8>> {
        let k = self.key(card.imk, KeyUsage::EMV_IMK_AC, ModeOfUse::DERIVE)?;
        let icc = card.cvn.icc_master_key(k.as_tdes("imk")?, card.pan, card.psn);
        let field = zeroize::Zeroizing::new(format!("\"icc_mk\":\"{}\"", crate::keys::to_hex(icc.expose())));
        self.seal_profile_with(profile, &field, device_public_key, info)
    }

    fn seal_luk_profile(
        &self,
        card: &CardKey<'_>,
        batch: LukBatch,
        profile: &str,
        device_public_key: &[u8],
        info: &[u8],
    ) -> Result<Vec<u8>> {
        if !card.cvn.uses_common_session_key() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "cvn",
                format!("{} cannot run on limited-use keys", card.cvn),
            ));
        }
        if batch.count == 0
            || batch.count > 100
            || u32::from(batch.first_atc) + u32::from(batch.count) > 0xFFFF
        {
            return Err(Error::new(ErrorKind::Input, "LUK batch", "1 to 100 ATCs within 0001-FFFF"));
        }
        let k = self.key(card.imk, KeyUsage::EMV_IMK_AC, ModeOfUse::DERIVE)?;
        let icc = card.cvn.icc_master_key(k.as_tdes("imk")?, card.pan, card.psn);
        let mut field = zeroize::Zeroizing::new(String::from("\"luks\":["));
        for i in 0..batch.count {
            let atc = batch.first_atc + i;
            let sk = crate::emv::common_session_key(&icc, crate::emv::Atc(atc));
            if i > 0 {
                field.push(',');
            }
            field.push_str(&format!(
                "{{\"atc\":\"{atc:04X}\",\"key\":\"{}\"}}",
                crate::keys::to_hex(sk.expose())
            ));
        }
        field.push(']');
        self.seal_profile_with(profile, &field, device_public_key, info)
    }
}

impl SoftHsm {
    /// `profile` (a JSON object) with the key material `field` added, sealed for the device under
    /// a fresh ephemeral key.
    fn seal_profile_with(
        &self,
        profile: &str,
        field: &str,
        device_public_key: &[u8],
        info: &[u8],
    ) -> Result<Vec<u8>> {
        let body = profile
            .trim()
            .strip_suffix('}')
            .ok_or_else(|| Error::new(ErrorKind::Input, "profile", "a JSON object is expected"))?;
        let sep = if body.trim_end().ends_with('{') { "" } else { "," };
        let plain = zeroize::Zeroizing::new(format!("{body}{sep}{field}}}"));
        let mut eph = zeroize::Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 12];
        (self.random)(eph.as_mut());
        (self.random)(&mut nonce);
        // A scalar of 0 or above the group order is refused by the curve: top bit cleared.
        eph[0] &= 0x7F;
        crate::device::seal(device_public_key, &eph, nonce, info, plain.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::Lmk;

    fn hsm() -> SoftHsm {
        let lmk =
            Lmk::from_hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F").expect("lmk");
        let counter = std::sync::atomic::AtomicU8::new(1);
        SoftHsm::new(
            Keystore::new(lmk),
            Box::new(move |b: &mut [u8]| {
                for x in b.iter_mut() {
                    *x = counter.fetch_add(7, std::sync::atomic::Ordering::Relaxed);
                }
            }),
        )
    }

    /// The kept card keys are bounded, the oldest going first, and a master key's forgotten
    /// alone.
    #[test]
    fn kept_card_keys_are_bounded_and_forgotten_by_master_key() {
        let key = Arc::new(CardMasterKey::tdes(
            crate::keys::TdesKey::from_hex("k", "0123456789ABCDEFFEDCBA9876543210").expect("key"),
        ));
        let mk = || Arc::clone(&key);
        let mut keys = Kept::new(CARD_KEYS_KEPT);
        let psn = crate::emv::Psn::new(0).expect("psn");
        let imk = |i: usize| if i.is_multiple_of(2) { "a.imk" } else { "b.imk" };
        let id = |i: usize| {
            Kept::<Arc<CardMasterKey>>::id(imk(i), &[format!("{i:016}").as_bytes(), &[psn.value()]])
        };
        for i in 0..CARD_KEYS_KEPT + 5 {
            keys.insert(id(i), imk(i), mk());
        }
        assert_eq!(keys.map.len(), CARD_KEYS_KEPT);
        assert_eq!(keys.order.len(), CARD_KEYS_KEPT);
        assert!((0..5).all(|i| keys.get_mut(&id(i)).is_none()), "the oldest went");
        assert!(keys.get_mut(&id(5)).is_some() && keys.get_mut(&id(CARD_KEYS_KEPT + 4)).is_some());
        keys.forget(Some("a.imk"));
        assert_eq!(keys.map.len(), CARD_KEYS_KEPT / 2);
        assert!(keys.map.values().all(|(n, _)| n == "b.imk"));
        assert_eq!(keys.order.len(), keys.map.len());
        keys.forget(None);
        assert!(keys.map.is_empty() && keys.order.is_empty());
    }

    /// A token's PIN block (format 0 binds the token) translated to the issuer's zone key bound to
    /// the card's PAN: the issuer decrypts the same PIN with the card's PAN; the plain translation
    /// would not give it.
    #[test]
    fn pin_translation_with_a_pan_change() {
        let h = hsm();
        let header = Header::parse_template("D0000P0TB00N0000").expect("header");
        h.generate_key("acq.zpk", &header, 16).expect("generate");
        h.generate_key("iss.zpk", &header, 16).expect("generate");
        let (token, card) = ("4895370000000017", "4761739001010010");
        let pin = pin::Pin::new("1234").expect("pin");
        let acq = h.key("acq.zpk", KeyUsage::PIN_ENCRYPTION, ModeOfUse::ENCRYPT).expect("key");
        let block =
            pin::encrypt_pin_block(&acq, PinBlockFormat::Iso0, &pin, token, &[0xFF; 8]).expect("block");
        let from = PinSource::Zone { key: "acq.zpk", format: PinBlockFormat::Iso0 };
        let out = h
            .translate_pin_pan_change(&from, &block, token, "iss.zpk", PinBlockFormat::Iso0, card)
            .expect("translated");
        let iss = h.key("iss.zpk", KeyUsage::PIN_ENCRYPTION, ModeOfUse::DECRYPT).expect("key");
        assert_eq!(pin::decrypt_pin_block(&iss, PinBlockFormat::Iso0, &out, card).expect("PIN"), pin);
        let plain =
            h.translate_pin(&from, &block, token, "iss.zpk", PinBlockFormat::Iso0).expect("translated");
        assert!(
            pin::decrypt_pin_block(&iss, PinBlockFormat::Iso0, &plain, card).ok() != Some(pin.clone()),
            "without the PAN change the issuer cannot read the PIN"
        );
        // The same PAN on both sides is a plain translation.
        let same = h
            .translate_pin_pan_change(&from, &block, token, "iss.zpk", PinBlockFormat::Iso0, token)
            .expect("translated");
        assert_eq!(pin::decrypt_pin_block(&iss, PinBlockFormat::Iso0, &same, token).expect("PIN"), pin);
    }

    #[test]
    fn mac_by_name_with_usage_and_mode_enforced() {
        let h = hsm();
        let header = Header::parse_template("D0000M3TC00N0000").expect("header");
        h.generate_key("link.mac", &header, 16).expect("generate");
        let mac = h.generate_mac("link.mac", MacAlgorithm::Retail, b"0100 message", 8).expect("mac");
        assert_eq!(mac.len(), 8);
        h.verify_mac("link.mac", MacAlgorithm::Retail, b"0100 message", &mac).expect("verifies");
        h.verify_mac("link.mac", MacAlgorithm::Retail, b"0100 massage", &mac).expect_err("tampered");
        // Same key asked for as a CMAC key: wrong usage.
        let e = h.generate_mac("link.mac", MacAlgorithm::CmacTdes, b"x", 8).expect_err("usage");
        assert_eq!(e.kind, ErrorKind::KeyUsage);
        // A verify-only key cannot generate.
        let header = Header::parse_template("D0000M3TV00N0000").expect("header");
        h.generate_key("verify.only", &header, 16).expect("generate");
        let e = h.generate_mac("verify.only", MacAlgorithm::Retail, b"x", 8).expect_err("mode");
        assert_eq!(e.kind, ErrorKind::KeyUsage);
        // The cached key is the stored key: the MAC matches one computed from the block directly.
        let ks = Keystore::from_toml(
            Lmk::from_hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F").expect("lmk"),
            &h.keystore_toml(),
        )
        .expect("reload");
        let clear = ks.get(&KeyName::new("link.mac").expect("name"), KeyUsage::MAC_ISO9797_3).expect("key");
        assert_eq!(
            MacAlgorithm::Retail.compute_len(clear.expose(), b"0100 message", Some(8)).expect("mac"),
            mac
        );
    }
}
