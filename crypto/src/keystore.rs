//! The keystore: named keys, each held only as a TR-31 / X9.143 key block under one local master
//! key (LMK), with its key check value.
//!
//! - The LMK is an AES-256 key (blocks are version D) or a triple-length TDES key (version B). It
//!   comes from the environment variable [`LMK_ENV_VAR`] (`PAYNET_LMK`, hex) or a file, read by the
//!   caller: this crate is sans-IO and only offers [`Lmk::from_hex`]. In production it is the XOR
//!   of 2 or 3 custodians' [`LmkComponent`]s, each checked against its KCV, then the whole
//!   ([`Lmk::from_components`]); [`Keystore::rewrap`] moves every key to a new LMK.
//! - Keys are configured in TOML as `[[key]]` tables with `name`, `block` and `kcv`. Loading
//!   unwraps every block (so a tampered block or a wrong LMK is found at start-up, not at the first
//!   transaction) and checks its KCV; a mismatch names the key.
//! - A key is fetched for a purpose: the header's key usage must be the one asked for (a MAC key
//!   is never returned as a PIN key) and, with [`Keystore::get_for`], its mode of use must permit
//!   the operation (the X9.143 key usage and mode of use tables).
//! - Clear keys exist only for the duration of a fetch; `Debug` prints names and KCVs only.
//!
//! ```toml
//! [[key]]
//! name = "zpk.acquirer1"          # KeyName: 1-64 of A-Z a-z 0-9 . _ -
//! block = "D0112P0TE00E0000..."   # the key block under the LMK
//! kcv = "08D7B4"                  # 4 or 6 hex digits, checked at load
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, ErrorKind, Result};
use crate::keyblock::{
    self, Exportability, Header, KeyAlgorithm, KeyBlockVersion, KeyUsage, ModeOfUse, padding_len,
};
use crate::keys::{
    AesKey, Algorithm, SymmetricKey, TdesKey, adjust_odd_parity, from_hex, to_hex, xor_in_place,
};

/// The environment variable that holds the LMK in hex (read by the binaries, never by this crate).
pub const LMK_ENV_VAR: &str = "PAYNET_LMK";

/// The local master key: the key block protection key of every key in the store.
#[derive(Clone)]
pub struct Lmk(SymmetricKey);

impl Lmk {
    /// Parses the LMK from hex: 64 hex digits for AES-256 (version D blocks) or 48 for
    /// triple-length TDES (version B blocks).
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut b = from_hex("LMK", s).map_err(|e| Error::new(ErrorKind::Keystore, "LMK", e.detail))?;
        let key = match b.len() {
            32 => AesKey::from_slice(&b).map(SymmetricKey::Aes),
            24 => TdesKey::from_slice(&b).map(SymmetricKey::Tdes),
            n => Err(Error::new(
                ErrorKind::Keystore,
                "LMK",
                format!(
                    "expected 64 hex digits (AES-256) or 48 (TDES triple length) in {LMK_ENV_VAR}, found {}",
                    n * 2
                ),
            )),
        };
        zeroize::Zeroize::zeroize(&mut b);
        Ok(Lmk(key?))
    }

    pub fn from_key(key: SymmetricKey) -> Result<Self> {
        match &key {
            SymmetricKey::Aes(k) if k.len() == 32 => Ok(Lmk(key)),
            SymmetricKey::Tdes(k) if k.len() == 24 => Ok(Lmk(key)),
            _ => Err(Error::new(ErrorKind::Keystore, "LMK", "must be AES-256 or triple-length TDES")),
        }
    }

    /// The key block version this LMK protects keys with.
    pub fn version(&self) -> KeyBlockVersion {
        match self.0 {
            SymmetricKey::Aes(_) => KeyBlockVersion::D,
            SymmetricKey::Tdes(_) => KeyBlockVersion::B,
        }
    }

    pub fn kcv(&self) -> [u8; 3] {
        self.0.kcv()
    }
}

impl fmt::Debug for Lmk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lmk({:?}, KCV {})", self.version(), to_hex(&self.kcv()))
    }
}

// The LMK's only field is a `SymmetricKey`, whose `TdesKey` / `AesKey` zeroize their bytes on drop.
impl ZeroizeOnDrop for Lmk {}

/// One custodian's share of the LMK: as long as the LMK (32 bytes for AES-256, 24 for TDES), the
/// LMK being the XOR of 2 or 3 components, so no one custodian knows it (split knowledge, dual
/// control: PCI PIN Security requirement 5, X9.24-1 §7.2). Each component has its own check value,
/// computed as if it were a key of the LMK's algorithm, so a custodian can confirm theirs was
/// entered correctly without revealing it.
#[derive(Clone)]
pub struct LmkComponent(SymmetricKey);

// As for `Lmk`: the inner key zeroizes on drop.
impl ZeroizeOnDrop for LmkComponent {}

impl LmkComponent {
    /// Parses a component from hex: 64 digits (AES-256 LMK) or 48 (TDES triple length).
    /// `index` (from 1) names the component in errors.
    pub fn from_hex(index: usize, s: &str) -> Result<Self> {
        let b = Zeroizing::new(from_hex("LMK component", s).map_err(|e| {
            Error::new(ErrorKind::Keystore, "LMK component", format!("component {index}: {}", e.detail))
        })?);
        LmkComponent::from_slice(index, &b)
    }

    /// A component from its bytes (32 for AES-256, 24 for TDES).
    pub fn from_slice(index: usize, b: &[u8]) -> Result<Self> {
        let key = match b.len() {
            32 => AesKey::from_slice(b).map(SymmetricKey::Aes),
            24 => TdesKey::from_slice(b).map(SymmetricKey::Tdes),
            n => Err(Error::new(
                ErrorKind::Keystore,
                "LMK component",
                format!(
                    "component {index}: expected 64 hex digits (AES-256) or 48 (TDES triple length), found {}",
                    n * 2
                ),
            )),
        };
        Ok(LmkComponent(key?))
    }

    /// A fresh component of the given algorithm from `random` (at least 32 bytes for AES, 24 for
    /// TDES; call with fresh OS randomness). TDES components get odd parity, as custodians'
    /// components conventionally have.
    pub fn generate(algorithm: Algorithm, random: &[u8]) -> Result<Self> {
        let len = match algorithm {
            Algorithm::Aes => 32,
            Algorithm::Tdes => 24,
        };
        let b = random.get(..len).ok_or_else(|| {
            Error::new(ErrorKind::Input, "random", format!("need {len} bytes, found {}", random.len()))
        })?;
        let mut b = Zeroizing::new(b.to_vec());
        if algorithm == Algorithm::Tdes {
            adjust_odd_parity(&mut b);
        }
        LmkComponent::from_slice(0, &b)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }

    /// The component's check value (AES: CMAC of 16 zero bytes; TDES: 8 zero bytes encrypted).
    pub fn kcv(&self) -> [u8; 3] {
        self.0.kcv()
    }

    /// The component in uppercase hex, for the custodian's file. Every caller is a place where a
    /// clear component leaves memory.
    pub fn expose_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(to_hex(self.0.expose()))
    }
}

impl fmt::Debug for LmkComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LmkComponent({:?}, KCV {})", self.0.algorithm(), to_hex(&self.kcv()))
    }
}

/// Checks `actual` against an expected check value in hex (4 or 6 digits compared, constant time);
/// `what` names the key in the error (e.g. "LMK component 2").
fn check_kcv(what: &str, actual: &[u8; 3], expected_hex: &str) -> Result<()> {
    let expected = Zeroizing::new(from_hex("KCV", expected_hex).map_err(|e| {
        Error::new(ErrorKind::Keystore, "KCV", format!("the configured KCV of the {what}: {}", e.detail))
    })?);
    if !matches!(expected.len(), 2 | 3) {
        return Err(Error::new(
            ErrorKind::Keystore,
            "KCV",
            format!(
                "the configured KCV of the {what} must be 4 or 6 hex digits, found {}",
                expected_hex.trim().len()
            ),
        ));
    }
    if bool::from(actual[..expected.len()].ct_eq(&expected)) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::KeyCheckValue,
            "KCV",
            format!(
                "the {what} has KCV {}, not the configured {}",
                to_hex(&actual[..expected.len()]),
                to_hex(&expected)
            ),
        ))
    }
}

impl Lmk {
    /// The LMK as the XOR of 2 or 3 components, each checked against its expected KCV
    /// (`expected[i]` for `components[i]`), then the combined LMK against `lmk_kcv`. A mismatch
    /// names the component (from 1), so the custodian who must enter theirs again is known.
    pub fn from_components(components: &[LmkComponent], expected: &[&str], lmk_kcv: &str) -> Result<Self> {
        if expected.len() != components.len() {
            return Err(Error::new(
                ErrorKind::Keystore,
                "LMK components",
                format!("{} components but {} expected KCVs", components.len(), expected.len()),
            ));
        }
        let lmk = Lmk::combine(components)?;
        for (i, (c, kcv)) in components.iter().zip(expected).enumerate() {
            check_kcv(&format!("LMK component {}", i + 1), &c.kcv(), kcv)?;
        }
        lmk.check_kcv(lmk_kcv)?;
        Ok(lmk)
    }

    /// The XOR of 2 or 3 components of one algorithm and length, unchecked: for a ceremony that
    /// has just generated them and computes the KCVs to hand out. Loading uses
    /// [`Lmk::from_components`].
    pub fn combine(components: &[LmkComponent]) -> Result<Self> {
        if !matches!(components.len(), 2 | 3) {
            return Err(Error::new(
                ErrorKind::Keystore,
                "LMK components",
                format!("expected 2 or 3 components, found {}", components.len()),
            ));
        }
        let first = &components[0].0;
        let mut lmk = Zeroizing::new(first.expose().to_vec());
        for (i, c) in components.iter().enumerate().skip(1) {
            if c.0.algorithm() != first.algorithm() || c.0.expose().len() != first.expose().len() {
                return Err(Error::new(
                    ErrorKind::Keystore,
                    "LMK components",
                    format!(
                        "LMK component {} is {:?} of {} bytes, component 1 is {:?} of {} bytes",
                        i + 1,
                        c.0.algorithm(),
                        c.0.expose().len(),
                        first.algorithm(),
                        first.expose().len()
                    ),
                ));
            }
            xor_in_place(&mut lmk, c.0.expose());
        }
        let key = match first {
            SymmetricKey::Aes(_) => SymmetricKey::Aes(AesKey::from_slice(&lmk)?),
            SymmetricKey::Tdes(_) => SymmetricKey::Tdes(TdesKey::from_slice(&lmk)?),
        };
        Ok(Lmk(key))
    }

    /// Checks the LMK against an expected check value (4 or 6 hex digits).
    pub fn check_kcv(&self, expected: &str) -> Result<()> {
        check_kcv("combined LMK", &self.kcv(), expected)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// A key's name in the store and in configuration: 1–64 of `A–Z a–z 0–9 . _ -`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct KeyName(String);

impl KeyName {
    pub fn new(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(KeyName(s.to_string()))
        } else {
            Err(Error::new(
                ErrorKind::Keystore,
                "key name",
                format!("{s:?}: expected 1 to 64 of A-Z a-z 0-9 . _ -"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct Entry {
    block: String,
    kcv: [u8; 3],
    header: Header,
}

/// Named keys under one LMK.
pub struct Keystore {
    lmk: Lmk,
    keys: BTreeMap<KeyName, Entry>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    key: Vec<ConfigKey>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ConfigKey {
    name: String,
    block: String,
    kcv: String,
}

fn ks_err(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Keystore, "keystore", detail)
}

/// Re-labels an error with the key it concerns, keeping its kind.
fn about(name: &KeyName, e: Error) -> Error {
    Error::new(e.kind, "keystore", format!("key {name}: {}: {}", e.what, e.detail))
}

impl Keystore {
    pub fn new(lmk: Lmk) -> Self {
        Keystore { lmk, keys: BTreeMap::new() }
    }

    /// Loads `[[key]]` entries (`name`, `block`, `kcv`) from TOML, unwrapping each block under
    /// the LMK and checking its KCV.
    pub fn from_toml(lmk: Lmk, text: &str) -> Result<Self> {
        let cfg: ConfigFile =
            toml::from_str(text).map_err(|e| ks_err(format!("TOML: {}", e.message().replace('\n', " "))))?;
        let mut store = Keystore::new(lmk);
        for (i, k) in cfg.key.iter().enumerate() {
            let name = KeyName::new(&k.name)
                .map_err(|e| ks_err(format!("[[key]] number {}: {}", i + 1, e.detail)))?;
            store.insert_block(name, &k.block, &k.kcv)?;
        }
        Ok(store)
    }

    /// The configuration text for every key, in name order.
    pub fn to_toml(&self) -> String {
        let cfg = ConfigFile {
            key: self
                .keys
                .iter()
                .map(|(n, e)| ConfigKey { name: n.0.clone(), block: e.block.clone(), kcv: to_hex(&e.kcv) })
                .collect(),
        };
        toml::to_string(&cfg).unwrap_or_default()
    }

    /// Adds a key block already under the LMK, after checking its MAC and its KCV (hex, 4 or 6
    /// digits).
    pub fn insert_block(&mut self, name: KeyName, block: &str, kcv: &str) -> Result<()> {
        if self.keys.contains_key(&name) {
            return Err(ks_err(format!("key {name} is defined twice")));
        }
        let expected = from_hex("KCV", kcv).map_err(|e| about(&name, e))?;
        if !matches!(expected.len(), 2 | 3) {
            return Err(ks_err(format!("key {name}: KCV must be 4 or 6 hex digits, found {}", kcv.len())));
        }
        let k = keyblock::unwrap(&self.lmk.0, block).map_err(|e| about(&name, e))?;
        let key = k.to_symmetric().map_err(|e| about(&name, e))?;
        let kcv = key.kcv();
        if !bool::from(kcv[..expected.len()].ct_eq(&expected)) {
            return Err(Error::new(
                ErrorKind::KeyCheckValue,
                "keystore",
                format!(
                    "key {name}: KCV {} does not match the configured {}",
                    to_hex(&kcv[..expected.len()]),
                    to_hex(&expected)
                ),
            ));
        }
        self.keys.insert(name, Entry { block: block.to_string(), kcv, header: k.header });
        Ok(())
    }

    /// Generates a key of `key_len` bytes with the given header (its version is set to the LMK's).
    /// `random` holds the key bytes first, then the block padding: at least
    /// [`Keystore::random_len`] bytes. TDES keys get odd parity. Returns the KCV.
    pub fn generate(
        &mut self,
        name: KeyName,
        header: &Header,
        key_len: usize,
        random: &[u8],
    ) -> Result<[u8; 3]> {
        let bytes = random.get(..key_len).ok_or_else(|| {
            Error::new(
                ErrorKind::Input,
                "random",
                format!("need {key_len} key bytes, found {}", random.len()),
            )
        })?;
        let mut bytes = zeroize::Zeroizing::new(bytes.to_vec());
        let key = match header.algorithm {
            KeyAlgorithm::TDES => {
                adjust_odd_parity(&mut bytes);
                SymmetricKey::Tdes(TdesKey::from_slice(&bytes).map_err(|e| about(&name, e))?)
            }
            KeyAlgorithm::AES => SymmetricKey::Aes(AesKey::from_slice(&bytes).map_err(|e| about(&name, e))?),
            other => return Err(ks_err(format!("key {name}: algorithm {other} is not TDES (T) or AES (A)"))),
        };
        self.import(name, header, &key, &random[key_len..])
    }

    /// How many random bytes [`Keystore::generate`] needs for a key of `key_len` bytes.
    pub fn random_len(&self, key_len: usize) -> usize {
        key_len + padding_len(self.lmk.version(), key_len, 0)
    }

    /// Stores a clear key under the LMK with the given header. `random` is the block padding.
    pub fn import(
        &mut self,
        name: KeyName,
        header: &Header,
        key: &SymmetricKey,
        random: &[u8],
    ) -> Result<[u8; 3]> {
        if self.keys.contains_key(&name) {
            return Err(ks_err(format!("key {name} already exists")));
        }
        let expected_alg = match key {
            SymmetricKey::Tdes(_) => KeyAlgorithm::TDES,
            SymmetricKey::Aes(_) => KeyAlgorithm::AES,
        };
        if header.algorithm != expected_alg {
            return Err(ks_err(format!(
                "key {name}: header algorithm {} does not match the key ({expected_alg})",
                header.algorithm
            )));
        }
        let header = Header { version: self.lmk.version(), ..header.clone() };
        let block =
            keyblock::wrap(&self.lmk.0, &header, key.expose(), random).map_err(|e| about(&name, e))?;
        let kcv = key.kcv();
        self.keys.insert(name, Entry { block, kcv, header });
        Ok(kcv)
    }

    /// Imports a key block received under the key-encryption key `kek` of this store (key usage
    /// K0 or K1, allowed to decrypt/unwrap) and stores it under the LMK with the same header.
    pub fn import_block(
        &mut self,
        name: KeyName,
        kek: &KeyName,
        block: &str,
        random: &[u8],
    ) -> Result<[u8; 3]> {
        let kbpk = self.kek(kek, ModeOfUse::DECRYPT)?;
        let k = keyblock::unwrap(&kbpk, block).map_err(|e| about(&name, e))?;
        let key = k.to_symmetric().map_err(|e| about(&name, e))?;
        self.import(name, &k.header, &key, random)
    }

    /// Exports a key as a key block under the key-encryption key `kek` (usage K0/K1 allowed to
    /// encrypt/wrap). The key must be exportable (`E`, or `S`). `random` is the block padding.
    pub fn export(&self, name: &KeyName, kek: &KeyName, random: &[u8]) -> Result<String> {
        let e = self.entry(name)?;
        if !matches!(e.header.exportability, Exportability::EXPORTABLE | Exportability::SENSITIVE) {
            return Err(Error::new(
                ErrorKind::KeyUsage,
                "keystore",
                format!("key {name} is not exportable (exportability {})", e.header.exportability),
            ));
        }
        let kbpk = self.kek(kek, ModeOfUse::ENCRYPT)?;
        let k = keyblock::unwrap(&self.lmk.0, &e.block).map_err(|err| about(name, err))?;
        let version = match kbpk {
            SymmetricKey::Aes(_) => KeyBlockVersion::D,
            SymmetricKey::Tdes(_) => KeyBlockVersion::B,
        };
        let header = Header { version, ..k.header.clone() };
        keyblock::wrap(&kbpk, &header, k.expose(), random).map_err(|err| about(name, err))
    }

    fn kek(&self, kek: &KeyName, mode: ModeOfUse) -> Result<SymmetricKey> {
        let e = self.entry(kek)?;
        if !matches!(e.header.usage, KeyUsage::KEK | KeyUsage::KBPK) {
            return Err(Error::new(
                ErrorKind::KeyUsage,
                "keystore",
                format!("key {kek} has usage {}, not a key-encryption key (K0/K1)", e.header.usage),
            ));
        }
        self.get_for(kek, e.header.usage, mode)
    }

    fn entry(&self, name: &KeyName) -> Result<&Entry> {
        self.keys.get(name).ok_or_else(|| ks_err(format!("no key named {name}")))
    }

    /// The key, if its header's key usage is `usage`.
    pub fn get(&self, name: &KeyName, usage: KeyUsage) -> Result<SymmetricKey> {
        let e = self.entry(name)?;
        if e.header.usage != usage {
            return Err(Error::new(
                ErrorKind::KeyUsage,
                "keystore",
                format!("key {name} has usage {}, not {usage}", e.header.usage),
            ));
        }
        let k = keyblock::unwrap(&self.lmk.0, &e.block).map_err(|err| about(name, err))?;
        k.to_symmetric().map_err(|err| about(name, err))
    }

    /// The key, if its usage is `usage` and its mode of use permits `mode` (e.g. a PIN key with
    /// mode `E` cannot be used to decrypt).
    pub fn get_for(&self, name: &KeyName, usage: KeyUsage, mode: ModeOfUse) -> Result<SymmetricKey> {
        let e = self.entry(name)?;
        if e.header.usage == usage && !e.header.mode_of_use.permits(mode) {
            return Err(Error::new(
                ErrorKind::KeyUsage,
                "keystore",
                format!("key {name} has mode of use {}, which does not permit {mode}", e.header.mode_of_use),
            ));
        }
        self.get(name, usage)
    }

    /// A TDES key of the given usage.
    pub fn get_tdes(&self, name: &KeyName, usage: KeyUsage) -> Result<TdesKey> {
        match self.get(name, usage)? {
            SymmetricKey::Tdes(k) => Ok(k),
            SymmetricKey::Aes(_) => {
                Err(Error::new(ErrorKind::KeyUsage, "keystore", format!("key {name} is AES, not TDES")))
            }
        }
    }

    /// An AES key of the given usage.
    pub fn get_aes(&self, name: &KeyName, usage: KeyUsage) -> Result<AesKey> {
        match self.get(name, usage)? {
            SymmetricKey::Aes(k) => Ok(k),
            SymmetricKey::Tdes(_) => {
                Err(Error::new(ErrorKind::KeyUsage, "keystore", format!("key {name} is TDES, not AES")))
            }
        }
    }

    /// The header of a stored key.
    pub fn header(&self, name: &KeyName) -> Result<&Header> {
        Ok(&self.entry(name)?.header)
    }

    /// The key check value of a stored key.
    pub fn kcv(&self, name: &KeyName) -> Result<[u8; 3]> {
        Ok(self.entry(name)?.kcv)
    }

    /// The key block of a stored key (under the LMK).
    pub fn block(&self, name: &KeyName) -> Result<&str> {
        Ok(&self.entry(name)?.block)
    }

    pub fn names(&self) -> impl Iterator<Item = &KeyName> {
        self.keys.keys()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The same keys under `new_lmk` (LMK rotation): every block is unwrapped under this store's
    /// LMK and wrapped again under the new one with the same header (its version set to the new
    /// LMK's), and the new block is unwrapped once more to check that its key has the KCV the old
    /// one had. `random` fills block padding (call with fresh OS randomness). Any failure names
    /// the key; this store is left as it was.
    pub fn rewrap(&self, new_lmk: Lmk, random: &mut dyn FnMut(&mut [u8])) -> Result<Keystore> {
        let mut out = Keystore::new(new_lmk);
        for (name, e) in &self.keys {
            let k = keyblock::unwrap(&self.lmk.0, &e.block).map_err(|err| about(name, err))?;
            let header = Header { version: out.lmk.version(), ..k.header.clone() };
            let mut pad = Zeroizing::new(vec![0u8; padding_len(header.version, k.expose().len(), 0)]);
            random(&mut pad);
            let block =
                keyblock::wrap(&out.lmk.0, &header, k.expose(), &pad).map_err(|err| about(name, err))?;
            // Inserting unwraps the new block under the new LMK and checks the key's KCV against
            // the one recorded under the old LMK.
            out.insert_block(name.clone(), &block, &to_hex(&e.kcv))?;
        }
        Ok(out)
    }

    /// The LMK's check value.
    pub fn lmk_kcv(&self) -> [u8; 3] {
        self.lmk.kcv()
    }

    pub fn remove(&mut self, name: &KeyName) -> Result<()> {
        self.keys.remove(name).map(|_| ()).ok_or_else(|| ks_err(format!("no key named {name}")))
    }
}

impl fmt::Debug for Keystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (n, e) in &self.keys {
            m.entry(&n.0, &format_args!("{} {} KCV {}", e.header.usage, e.header.algorithm, to_hex(&e.kcv)));
        }
        m.finish()
    }
}
