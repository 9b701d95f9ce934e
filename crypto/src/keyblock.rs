//! TR-31 / ANSI X9.143 key blocks: the only form in which a key leaves or enters the keystore.
//!
//! A key block is printable ASCII: a 16-character header (X9.143 / TR-31:2018 key block header: version ID, key block
//! length, key usage, algorithm, mode of use, key version number, exportability, number of
//! optional blocks, reserved), the optional blocks (each ID + hex length + data, extended
//! lengths allowed, a `PB` padding block last), then the encrypted key data and the MAC in hex.
//!
//! Versions:
//! - **B** (TDES key derivation binding method, X9.143 / TR-31:2018): KBEK and KBAK are
//!   derived from the KBPK by TDES-CMAC over an 8-byte derivation input (counter, key usage
//!   indicator, separator, algorithm indicator, length in bits); the MAC is the 8-byte TDES-CMAC
//!   under the KBAK of header ‖ clear key data; the key data is TDES-CBC encrypted under the KBEK
//!   with the MAC as IV.
//! - **D** (AES key derivation binding method): the same with AES-CMAC and AES-CBC, a
//!   16-byte MAC.
//! - **A / C** (key variant binding method, TR-31:2018, deprecated): KBEK = KBPK ⊕ 45…,
//!   KBAK = KBPK ⊕ 4D…, CBC encryption with the first 8 header bytes as IV, a 4-byte CBC-MAC of
//!   header ‖ ciphertext. Supported for unwrapping legacy blocks (and wrapping, for tests).
//!
//! The clear key data is `key length (2 bytes, bits) ‖ key ‖ padding`; the padding is
//! random and comes from the caller (this crate is sans-IO). On unwrap the MAC is verified in
//! constant time **before** the key is looked at; a bad MAC releases nothing and says only that the
//! block is tampered with or the KBPK is wrong.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, ErrorKind, Result};
use crate::keys::{AesKey, Algorithm, SymmetricKey, TdesKey, block8, block16, from_hex, to_hex};
use crate::mac::{self, Padding};

const WHAT: &str = "key block";
const HEADER: &str = "key block header";

fn format_err(what: &'static str, detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::KeyBlockFormat, what, detail)
}

/// The key block version ID (header position 0), which fixes the protection method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyBlockVersion {
    /// Key variant binding (deprecated).
    A,
    /// TDES key derivation binding.
    B,
    /// TDES key variant binding (A with clarified header values).
    C,
    /// AES key derivation binding.
    D,
}

impl KeyBlockVersion {
    pub fn as_char(self) -> char {
        match self {
            KeyBlockVersion::A => 'A',
            KeyBlockVersion::B => 'B',
            KeyBlockVersion::C => 'C',
            KeyBlockVersion::D => 'D',
        }
    }

    fn from_byte(b: u8) -> Result<Self> {
        match b {
            b'A' => Ok(KeyBlockVersion::A),
            b'B' => Ok(KeyBlockVersion::B),
            b'C' => Ok(KeyBlockVersion::C),
            b'D' => Ok(KeyBlockVersion::D),
            b'0'..=b'9' => Err(Error::new(
                ErrorKind::Unsupported,
                HEADER,
                format!("version ID at position 0: proprietary version {:?} is not supported", b as char),
            )),
            _ => Err(format_err(
                HEADER,
                format!("version ID at position 0: expected A, B, C or D, found {}", show_byte(b)),
            )),
        }
    }

    /// The cipher block size in bytes: 8 for the TDES versions, 16 for D.
    pub fn block_size(self) -> usize {
        if self == KeyBlockVersion::D { 16 } else { 8 }
    }

    /// The MAC length in bytes: 4 (A, C), 8 (B), 16 (D).
    pub fn mac_len(self) -> usize {
        match self {
            KeyBlockVersion::A | KeyBlockVersion::C => 4,
            KeyBlockVersion::B => 8,
            KeyBlockVersion::D => 16,
        }
    }

    /// The algorithm a KBPK must have for this version.
    pub fn kbpk_algorithm(self) -> Algorithm {
        if self == KeyBlockVersion::D { Algorithm::Aes } else { Algorithm::Tdes }
    }
}

fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() { format!("{:?}", b as char) } else { format!("byte 0x{b:02X}") }
}

macro_rules! char_code {
    ($(#[$doc:meta])* $name:ident($ty:ty) { $($(#[$cdoc:meta])* $c:ident = $v:expr;)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $ty);
        impl $name {
            $($(#[$cdoc])* pub const $c: $name = $name($v);)*
        }
    };
}

char_code! {
    /// Key usage (header positions 5–6, X9.143 Table 2).
    KeyUsage([u8; 2]) {
        /// B0: base derivation key (BDK).
        BDK = *b"B0";
        /// B1: initial DUKPT key.
        DUKPT_INITIAL_KEY = *b"B1";
        /// B2: base key variant key.
        BASE_KEY_VARIANT = *b"B2";
        /// C0: card verification key (CVV/CVC).
        CVK = *b"C0";
        /// D0: symmetric data encryption key.
        DATA_ENCRYPTION = *b"D0";
        /// D1: asymmetric data encryption key.
        DATA_ENCRYPTION_ASYMMETRIC = *b"D1";
        /// D2: data encryption key for a decimalization table.
        DECIMALIZATION_TABLE = *b"D2";
        /// E0: EMV issuer master key for application cryptograms.
        EMV_IMK_AC = *b"E0";
        /// E1: EMV issuer master key for secure messaging (confidentiality).
        EMV_IMK_SMC = *b"E1";
        /// E2: EMV issuer master key for secure messaging (integrity).
        EMV_IMK_SMI = *b"E2";
        /// E3: EMV issuer master key for data authentication codes.
        EMV_IMK_DAC = *b"E3";
        /// E4: EMV issuer master key for dynamic numbers.
        EMV_IMK_DN = *b"E4";
        /// E5: EMV issuer master key for card personalization.
        EMV_IMK_PERSO = *b"E5";
        /// E6: EMV issuer master key, other.
        EMV_IMK_OTHER = *b"E6";
        /// I0: initialization vector.
        IV = *b"I0";
        /// K0: key encryption / wrapping key.
        KEK = *b"K0";
        /// K1: TR-31 key block protection key.
        KBPK = *b"K1";
        /// M0: ISO 16609 MAC algorithm 1 (TDES).
        MAC_ISO16609 = *b"M0";
        /// M1: ISO 9797-1 MAC algorithm 1.
        MAC_ISO9797_1 = *b"M1";
        /// M2: ISO 9797-1 MAC algorithm 2.
        MAC_ISO9797_2 = *b"M2";
        /// M3: ISO 9797-1 MAC algorithm 3 (retail MAC).
        MAC_ISO9797_3 = *b"M3";
        /// M4: ISO 9797-1 MAC algorithm 4.
        MAC_ISO9797_4 = *b"M4";
        /// M5: ISO 9797-1:1999 MAC algorithm 5.
        MAC_ISO9797_5 = *b"M5";
        /// M6: ISO 9797-1:2011 MAC algorithm 5 (CMAC).
        MAC_CMAC = *b"M6";
        /// M7: HMAC.
        MAC_HMAC = *b"M7";
        /// M8: ISO 9797-1:2011 MAC algorithm 6.
        MAC_ISO9797_6 = *b"M8";
        /// P0: PIN encryption key.
        PIN_ENCRYPTION = *b"P0";
        /// V0: PIN verification key, other algorithm.
        PVK_OTHER = *b"V0";
        /// V1: PIN verification key, IBM 3624.
        PVK_IBM3624 = *b"V1";
        /// V2: PIN verification key, Visa PVV.
        PVK_VISA_PVV = *b"V2";
    }
}

char_code! {
    /// The algorithm of the wrapped key (header position 7).
    KeyAlgorithm(u8) {
        AES = b'A';
        DES = b'D';
        ELLIPTIC_CURVE = b'E';
        HMAC = b'H';
        RSA = b'R';
        DSA = b'S';
        TDES = b'T';
    }
}

char_code! {
    /// Mode of use (header position 8).
    ModeOfUse(u8) {
        /// B: encrypt and decrypt / wrap and unwrap.
        ENCRYPT_DECRYPT = b'B';
        /// C: generate and verify (MACs, CVVs, PVVs).
        GENERATE_VERIFY = b'C';
        /// D: decrypt / unwrap only.
        DECRYPT = b'D';
        /// E: encrypt / wrap only.
        ENCRYPT = b'E';
        /// G: generate only.
        GENERATE = b'G';
        /// N: no special restrictions beyond the key usage.
        ANY = b'N';
        /// S: signature only.
        SIGN = b'S';
        /// T: sign and decrypt.
        SIGN_DECRYPT = b'T';
        /// V: verify only.
        VERIFY = b'V';
        /// X: derive other keys.
        DERIVE = b'X';
        /// Y: create key variants.
        VARIANT = b'Y';
    }
}

char_code! {
    /// Exportability (header position 11).
    Exportability(u8) {
        /// E: exportable under a trusted key.
        EXPORTABLE = b'E';
        /// N: not exportable.
        NON_EXPORTABLE = b'N';
        /// S: sensitive; exportable under an untrusted key.
        SENSITIVE = b'S';
    }
}

impl ModeOfUse {
    /// Whether a key with this mode of use may be used for `wanted` (one of E, D, G, V, X, Y, S).
    /// `N` allows whatever the key usage implies; `B` covers E and D; `C` covers G and V;
    /// `T` covers S and D.
    pub fn permits(self, wanted: ModeOfUse) -> bool {
        self == wanted
            || self == ModeOfUse::ANY
            || (self == ModeOfUse::ENCRYPT_DECRYPT
                && matches!(wanted, ModeOfUse::ENCRYPT | ModeOfUse::DECRYPT))
            || (self == ModeOfUse::GENERATE_VERIFY
                && matches!(wanted, ModeOfUse::GENERATE | ModeOfUse::VERIFY))
            || (self == ModeOfUse::SIGN_DECRYPT && matches!(wanted, ModeOfUse::SIGN | ModeOfUse::DECRYPT))
    }
}

macro_rules! show_code {
    ($name:ident, one) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0 as char)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0 as char)
            }
        }
    };
    ($name:ident, two) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", self.0[0] as char, self.0[1] as char)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({}{})", stringify!($name), self.0[0] as char, self.0[1] as char)
            }
        }
    };
}
show_code!(KeyUsage, two);
show_code!(KeyAlgorithm, one);
show_code!(ModeOfUse, one);
show_code!(Exportability, one);

impl KeyUsage {
    /// Parses a two-character usage code such as `P0`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => Ok(KeyUsage([*a, *b])),
            _ => Err(format_err("key usage", format!("expected 2 alphanumeric characters, found {s:?}"))),
        }
    }
}

/// One optional block (X9.143 optional header blocks): a two-character ID and printable ASCII data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionalBlock {
    pub id: [u8; 2],
    pub data: String,
}

impl OptionalBlock {
    pub fn new(id: &str, data: &str) -> Result<Self> {
        let id: [u8; 2] = match id.as_bytes() {
            [a, b] if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => [*a, *b],
            _ => {
                return Err(format_err(
                    "optional block",
                    format!("ID must be 2 alphanumerics, found {id:?}"),
                ));
            }
        };
        if let Some(p) = data.bytes().position(|b| !(0x20..=0x7E).contains(&b)) {
            return Err(format_err("optional block", format!("data is not printable ASCII at offset {p}")));
        }
        if &id == b"PB" {
            return Err(format_err("optional block", "PB is the padding block; it is added when wrapping"));
        }
        Ok(OptionalBlock { id, data: data.to_string() })
    }

    pub fn id_str(&self) -> String {
        format!("{}{}", self.id[0] as char, self.id[1] as char)
    }

    fn encode(&self, out: &mut String) -> Result<()> {
        out.push(self.id[0] as char);
        out.push(self.id[1] as char);
        let short = self.data.len() + 4;
        if short <= 0xFF {
            out.push_str(&format!("{short:02X}"));
        } else {
            // Extended length (X9.143, for blocks over 255 characters): "00", the length-of-length in bytes, the length.
            let long = self.data.len() + 10;
            if long > 0xFFFF {
                return Err(format_err("optional block", format!("{} data too long", self.id_str())));
            }
            out.push_str(&format!("0002{long:04X}"));
        }
        out.push_str(&self.data);
        Ok(())
    }
}

/// A parsed key block header. The length field is not kept: it is computed when wrapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: KeyBlockVersion,
    pub usage: KeyUsage,
    pub algorithm: KeyAlgorithm,
    pub mode_of_use: ModeOfUse,
    /// Key version number (positions 9–10): `00` when unused, `c?` for a component.
    pub key_version: [u8; 2],
    pub exportability: Exportability,
    /// Positions 14–15, `00` unless a later edition gives them a meaning.
    pub reserved: [u8; 2],
    /// Optional blocks in order, without the padding block.
    pub optional_blocks: Vec<OptionalBlock>,
}

impl Header {
    pub fn new(
        version: KeyBlockVersion,
        usage: KeyUsage,
        algorithm: KeyAlgorithm,
        mode_of_use: ModeOfUse,
        exportability: Exportability,
    ) -> Self {
        Header {
            version,
            usage,
            algorithm,
            mode_of_use,
            key_version: *b"00",
            exportability,
            reserved: *b"00",
            optional_blocks: Vec::new(),
        }
    }

    /// Adds an optional block (e.g. `KS` with a DUKPT initial key serial number).
    pub fn with_optional_block(mut self, id: &str, data: &str) -> Result<Self> {
        self.optional_blocks.push(OptionalBlock::new(id, data)?);
        Ok(self)
    }

    /// The optional block with this ID, if present.
    pub fn optional_block(&self, id: &str) -> Option<&str> {
        self.optional_blocks.iter().find(|b| b.id == id.as_bytes()).map(|b| b.data.as_str())
    }

    /// Parses a header given as a template for wrapping (paytool `--header`): the 16 fixed
    /// characters with any 4 digits as length, then optional blocks. A PB block is dropped (it is
    /// recomputed).
    pub fn parse_template(s: &str) -> Result<Self> {
        let (header, len) = parse_header(s.as_bytes())?;
        if len != s.len() {
            return Err(format_err(
                HEADER,
                format!("{} characters after the last optional block at position {len}", s.len() - len),
            ));
        }
        Ok(header)
    }

    /// The header text for a key block of `total_len` characters, with a PB block when the
    /// optional blocks do not end on a cipher block boundary.
    fn encode(&self, total_len: usize) -> Result<String> {
        let mut blocks = String::new();
        for b in &self.optional_blocks {
            b.encode(&mut blocks)?;
        }
        let bs = self.version.block_size();
        let mut count = self.optional_blocks.len();
        let rem = (16 + blocks.len()) % bs;
        if rem != 0 {
            // A PB block is at least its ID and length; like psec and other implementations we
            // never emit an empty one.
            let mut pad = bs - rem;
            if pad <= 4 {
                pad += bs;
            }
            blocks.push_str("PB");
            blocks.push_str(&format!("{pad:02X}"));
            blocks.extend(std::iter::repeat_n('0', pad - 4));
            count += 1;
        }
        if count > 99 {
            return Err(format_err(HEADER, format!("{count} optional blocks; at most 99")));
        }
        if total_len > 9999 {
            return Err(format_err(WHAT, format!("length {total_len} exceeds 9999 characters")));
        }
        let mut out = String::with_capacity(16 + blocks.len());
        out.push(self.version.as_char());
        out.push_str(&format!("{total_len:04}"));
        out.push_str(&self.usage.to_string());
        out.push(self.algorithm.0 as char);
        out.push(self.mode_of_use.0 as char);
        out.push(self.key_version[0] as char);
        out.push(self.key_version[1] as char);
        out.push(self.exportability.0 as char);
        out.push_str(&format!("{count:02}"));
        out.push(self.reserved[0] as char);
        out.push(self.reserved[1] as char);
        out.push_str(&blocks);
        Ok(out)
    }

    /// Length of the header text once encoded (with its padding block).
    fn encoded_len(&self) -> Result<usize> {
        Ok(self.encode(0)?.len())
    }
}

fn alnum_field(s: &[u8], at: usize, len: usize, name: &str) -> Result<()> {
    for (i, &b) in s[at..at + len].iter().enumerate() {
        if !b.is_ascii_alphanumeric() {
            return Err(format_err(
                HEADER,
                format!(
                    "{name} at position {}: expected an alphanumeric character, found {}",
                    at + i,
                    show_byte(b)
                ),
            ));
        }
    }
    Ok(())
}

fn digits(s: &[u8], at: usize, len: usize, name: &str) -> Result<usize> {
    let mut v = 0usize;
    for (i, &b) in s[at..at + len].iter().enumerate() {
        if !b.is_ascii_digit() {
            return Err(format_err(
                HEADER,
                format!("{name} at position {}: expected a decimal digit, found {}", at + i, show_byte(b)),
            ));
        }
        v = v * 10 + usize::from(b - b'0');
    }
    Ok(v)
}

fn hex_num(s: &[u8], at: usize, len: usize, name: &str) -> Result<usize> {
    let field = s.get(at..at + len).ok_or_else(|| {
        format_err(HEADER, format!("{name} at position {at}: header ends before its {len} hex digits"))
    })?;
    let mut v = 0usize;
    for (i, &b) in field.iter().enumerate() {
        let d = (b as char).to_digit(16).ok_or_else(|| {
            format_err(
                HEADER,
                format!("{name} at position {}: expected a hex digit, found {}", at + i, show_byte(b)),
            )
        })?;
        v = v * 16 + d as usize;
    }
    Ok(v)
}

/// Parses the header at the start of `s`; returns it and the header length in characters.
fn parse_header(s: &[u8]) -> Result<(Header, usize)> {
    if s.len() < 16 {
        return Err(format_err(HEADER, format!("expected at least 16 characters, found {}", s.len())));
    }
    let version = KeyBlockVersion::from_byte(s[0])?;
    digits(s, 1, 4, "key block length")?;
    alnum_field(s, 5, 2, "key usage")?;
    alnum_field(s, 7, 1, "algorithm")?;
    alnum_field(s, 8, 1, "mode of use")?;
    alnum_field(s, 9, 2, "key version number")?;
    alnum_field(s, 11, 1, "exportability")?;
    let count = digits(s, 12, 2, "number of optional blocks")?;
    alnum_field(s, 14, 2, "reserved field")?;
    let mut at = 16;
    let mut blocks = Vec::with_capacity(count.min(99));
    let mut seen_pb = false;
    for n in 0..count {
        let id = s.get(at..at + 2).ok_or_else(|| {
            format_err(HEADER, format!("optional block {} of {count} at position {at}: header ends", n + 1))
        })?;
        let id = [id[0], id[1]];
        if !id.iter().all(u8::is_ascii_alphanumeric) {
            return Err(format_err(
                HEADER,
                format!(
                    "optional block ID at position {at}: expected 2 alphanumerics, found {}",
                    show_byte(id[0])
                ),
            ));
        }
        if seen_pb {
            return Err(format_err(
                HEADER,
                format!("optional block at position {at} follows the PB padding block"),
            ));
        }
        let name = format!("optional block {}{} length", id[0] as char, id[1] as char);
        let short = hex_num(s, at + 2, 2, &name)?;
        let (data_at, total) = if short == 0 {
            let ll = hex_num(s, at + 4, 2, &name)?;
            if ll == 0 || ll > 4 {
                return Err(format_err(
                    HEADER,
                    format!(
                        "{name} at position {}: length of length must be 1 to 4 bytes, found {ll}",
                        at + 4
                    ),
                ));
            }
            let total = hex_num(s, at + 6, ll * 2, &name)?;
            (at + 6 + ll * 2, total)
        } else {
            (at + 4, short)
        };
        let data_len = total.checked_sub(data_at - at).ok_or_else(|| {
            format_err(
                HEADER,
                format!(
                    "{name} at position {}: {total} is shorter than the block's own ID and length",
                    at + 2
                ),
            )
        })?;
        let data = s.get(data_at..data_at + data_len).ok_or_else(|| {
            format_err(
                HEADER,
                format!("{name} at position {}: {total} runs past the end of the key block", at + 2),
            )
        })?;
        if let Some(p) = data.iter().position(|b| !(0x20..=0x7E).contains(b)) {
            return Err(format_err(
                HEADER,
                format!("optional block data at position {}: not printable ASCII", data_at + p),
            ));
        }
        if &id == b"PB" {
            seen_pb = true;
        } else {
            blocks.push(OptionalBlock { id, data: String::from_utf8_lossy(data).into_owned() });
        }
        at = data_at + data_len;
    }
    let header = Header {
        version,
        usage: KeyUsage([s[5], s[6]]),
        algorithm: KeyAlgorithm(s[7]),
        mode_of_use: ModeOfUse(s[8]),
        key_version: [s[9], s[10]],
        exportability: Exportability(s[11]),
        reserved: [s[14], s[15]],
        optional_blocks: blocks,
    };
    Ok((header, at))
}

/// The number of random padding bytes [`wrap`] needs for a key of `key_len` bytes hidden as a key
/// of `masked_len` bytes (`masked_len` ≤ `key_len` means no masking).
pub fn padding_len(version: KeyBlockVersion, key_len: usize, masked_len: usize) -> usize {
    let bs = version.block_size();
    let body = 2 + key_len.max(masked_len);
    let extra = masked_len.saturating_sub(key_len);
    extra + (bs - body % bs) % bs
}

/// Wraps `key` under `kbpk` with the given header (no key length masking). `random` supplies the
/// padding: at least [`padding_len`] bytes (extra bytes are ignored).
pub fn wrap(kbpk: &SymmetricKey, header: &Header, key: &[u8], random: &[u8]) -> Result<String> {
    wrap_masked(kbpk, header, key, 0, random)
}

/// Wraps `key` padded as if it were `masked_len` bytes long, so the block does not reveal the
/// key's true length (X9.143 "key length obfuscation").
pub fn wrap_masked(
    kbpk: &SymmetricKey,
    header: &Header,
    key: &[u8],
    masked_len: usize,
    random: &[u8],
) -> Result<String> {
    check_kbpk(kbpk, header.version)?;
    check_key_for_algorithm(header.algorithm, key.len())?;
    let version = header.version;
    let pad = padding_len(version, key.len(), masked_len);
    let pad_bytes = random.get(..pad).ok_or_else(|| {
        Error::new(
            ErrorKind::Input,
            "random",
            format!("need {pad} random padding bytes, found {}", random.len()),
        )
    })?;
    let bits = u16::try_from(key.len() * 8)
        .map_err(|_| Error::new(ErrorKind::KeyLength, "key", format!("{} bytes is too long", key.len())))?;
    let mut clear = Zeroizing::new(Vec::with_capacity(2 + key.len() + pad));
    clear.extend_from_slice(&bits.to_be_bytes());
    clear.extend_from_slice(key);
    clear.extend_from_slice(pad_bytes);
    let total = header.encoded_len()? + 2 * clear.len() + 2 * version.mac_len();
    let head = header.encode(total)?;
    let (enc, mac) = match (version, kbpk) {
        (KeyBlockVersion::B, SymmetricKey::Tdes(k)) => {
            let (kbek, kbak) = derive_b(k);
            let mac = cmac_tdes_two(&kbak, head.as_bytes(), &clear);
            (kbek.cbc_encrypt(mac, &clear)?, mac.to_vec())
        }
        (KeyBlockVersion::D, SymmetricKey::Aes(k)) => {
            let (kbek, kbak) = derive_d(k)?;
            let mac = cmac_aes_two(&kbak, head.as_bytes(), &clear);
            (kbek.cbc_encrypt(mac, &clear)?, mac.to_vec())
        }
        (KeyBlockVersion::A | KeyBlockVersion::C, SymmetricKey::Tdes(k)) => {
            let (kbek, kbak) = derive_variant(k)?;
            let enc = kbek.cbc_encrypt(block8(head.as_bytes()), &clear)?;
            let mac = variant_mac(&kbak, head.as_bytes(), &enc);
            (enc, mac.to_vec())
        }
        _ => return Err(kbpk_mismatch(kbpk, version)),
    };
    Ok(format!("{head}{}{}", to_hex(&enc), to_hex(&mac)))
}

/// A key taken out of a key block, with its header. Zeroized on drop; `Debug` shows the header
/// and the key check value only.
pub struct UnwrappedKey {
    pub header: Header,
    key: Zeroizing<Vec<u8>>,
}

impl UnwrappedKey {
    /// The clear key bytes. Every caller is a place where a clear key exists in memory.
    pub fn expose(&self) -> &[u8] {
        &self.key
    }

    /// The key as a TDES or AES key, by the header's algorithm.
    pub fn to_symmetric(&self) -> Result<SymmetricKey> {
        match self.header.algorithm {
            KeyAlgorithm::TDES => Ok(SymmetricKey::Tdes(TdesKey::from_slice(&self.key)?)),
            KeyAlgorithm::AES => Ok(SymmetricKey::Aes(AesKey::from_slice(&self.key)?)),
            other => Err(Error::new(
                ErrorKind::Unsupported,
                "key block algorithm",
                format!("algorithm {other} is not a TDES or AES key"),
            )),
        }
    }

    /// The key check value (TDES: encrypted zeros; AES: CMAC of zeros), when the algorithm has one.
    pub fn kcv(&self) -> Option<[u8; 3]> {
        self.to_symmetric().ok().map(|k| k.kcv())
    }
}

impl fmt::Debug for UnwrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kcv = self.kcv().map(|k| to_hex(&k)).unwrap_or_else(|| "-".into());
        write!(f, "UnwrappedKey({:?}, {} bytes, KCV {kcv})", self.header, self.key.len())
    }
}

/// Unwraps a key block: header parse, length checks, MAC verification in constant time, then
/// the key. Nothing about the key is released unless the MAC verifies.
pub fn unwrap(kbpk: &SymmetricKey, block: &str) -> Result<UnwrappedKey> {
    let s = block.as_bytes();
    if let Some(p) = s.iter().position(|b| !(0x20..=0x7E).contains(b)) {
        return Err(format_err(WHAT, format!("non-printable or non-ASCII character at position {p}")));
    }
    let (header, head_len) = parse_header(s)?;
    let version = header.version;
    let declared = digits(s, 1, 4, "key block length")?;
    if declared != s.len() {
        return Err(format_err(
            WHAT,
            format!("length field at position 1 says {declared} characters, the block has {}", s.len()),
        ));
    }
    let bs = version.block_size();
    if !head_len.is_multiple_of(bs) {
        return Err(format_err(
            HEADER,
            format!("header length {head_len} is not a multiple of the {bs}-byte block (missing PB block?)"),
        ));
    }
    check_kbpk(kbpk, version)?;
    let mac_chars = 2 * version.mac_len();
    let body = s.len() - head_len;
    if body < mac_chars + 2 * bs || !(body - mac_chars).is_multiple_of(2 * bs) {
        return Err(format_err(
            WHAT,
            format!(
                "encrypted key data from position {head_len}: {} hex characters, expected a positive multiple of {} (plus a {mac_chars}-character MAC)",
                body.saturating_sub(mac_chars),
                2 * bs
            ),
        ));
    }
    let enc_end = s.len() - mac_chars;
    // Hex digits only (no whitespace, which a lenient hex decoder might trim).
    if let Some(p) = s[head_len..].iter().position(|b| !b.is_ascii_hexdigit()) {
        let p = head_len + p;
        let part = if p < enc_end { "encrypted key data" } else { "MAC" };
        return Err(format_err(
            WHAT,
            format!("{part} at position {p}: expected a hex digit, found {}", show_byte(s[p])),
        ));
    }
    let enc = from_hex(WHAT, &block[head_len..enc_end]).map_err(|e| {
        format_err(WHAT, format!("encrypted key data from position {head_len}: {}", e.detail))
    })?;
    let received = from_hex(WHAT, &block[enc_end..])
        .map_err(|e| format_err(WHAT, format!("MAC from position {enc_end}: {}", e.detail)))?;
    let head = &s[..head_len];
    let clear: Zeroizing<Vec<u8>> = match (version, kbpk) {
        (KeyBlockVersion::B, SymmetricKey::Tdes(k)) => {
            let (kbek, kbak) = derive_b(k);
            let clear = Zeroizing::new(kbek.cbc_decrypt(block8(&received), &enc)?);
            let mac = cmac_tdes_two(&kbak, head, &clear);
            check_mac(&mac, &received)?;
            clear
        }
        (KeyBlockVersion::D, SymmetricKey::Aes(k)) => {
            let (kbek, kbak) = derive_d(k)?;
            let clear = Zeroizing::new(kbek.cbc_decrypt(block16(&received), &enc)?);
            let mac = cmac_aes_two(&kbak, head, &clear);
            check_mac(&mac, &received)?;
            clear
        }
        (KeyBlockVersion::A | KeyBlockVersion::C, SymmetricKey::Tdes(k)) => {
            let (kbek, kbak) = derive_variant(k)?;
            check_mac(&variant_mac(&kbak, head, &enc), &received)?;
            Zeroizing::new(kbek.cbc_decrypt(block8(head), &enc)?)
        }
        _ => return Err(kbpk_mismatch(kbpk, version)),
    };
    // The MAC verified: the block is what the sender built. Now read the key length field.
    let bits = usize::from(u16::from_be_bytes([clear[0], clear[1]]));
    if !bits.is_multiple_of(8) || bits / 8 > clear.len() - 2 {
        return Err(format_err(
            WHAT,
            format!(
                "key length field says {bits} bits; the key data holds at most {} bytes",
                clear.len() - 2
            ),
        ));
    }
    let key = Zeroizing::new(clear[2..2 + bits / 8].to_vec());
    check_key_for_algorithm(header.algorithm, key.len())?;
    Ok(UnwrappedKey { header, key })
}

fn check_mac(computed: &[u8], received: &[u8]) -> Result<()> {
    if computed.len() == received.len() && bool::from(computed.ct_eq(received)) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::KeyBlockMac,
            WHAT,
            "MAC does not verify: the block was altered or the KBPK is wrong",
        ))
    }
}

fn kbpk_mismatch(kbpk: &SymmetricKey, version: KeyBlockVersion) -> Error {
    let (want, found) = match (version.kbpk_algorithm(), kbpk.algorithm()) {
        (Algorithm::Aes, _) => ("an AES", "TDES"),
        (Algorithm::Tdes, _) => ("a TDES", "AES"),
    };
    Error::new(
        ErrorKind::KeyUsage,
        "KBPK",
        format!("version {} key blocks need {want} KBPK, found {found}", version.as_char()),
    )
}

fn check_kbpk(kbpk: &SymmetricKey, version: KeyBlockVersion) -> Result<()> {
    if kbpk.algorithm() != version.kbpk_algorithm() { Err(kbpk_mismatch(kbpk, version)) } else { Ok(()) }
}

fn check_key_for_algorithm(alg: KeyAlgorithm, len: usize) -> Result<()> {
    let ok = match alg {
        KeyAlgorithm::TDES => matches!(len, 16 | 24),
        KeyAlgorithm::AES => matches!(len, 16 | 24 | 32),
        KeyAlgorithm::DES => len == 8,
        _ => len > 0,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::KeyLength,
            "key",
            format!("{len} bytes is not a valid length for algorithm {alg}"),
        ))
    }
}

/// Version B derivation (X9.143 TDES key derivation, a CMAC-based KDF per NIST SP 800-108): KBEK and KBAK from TDES-CMAC over
/// counter ‖ usage (0000 enc, 0001 MAC) ‖ 00 ‖ algorithm (0000 2TDES, 0001 3TDES) ‖ length.
fn derive_b(kbpk: &TdesKey) -> (TdesKey, TdesKey) {
    let (alg, bits, calls): (u8, u16, u8) = if kbpk.len() == 16 { (0, 128, 2) } else { (1, 192, 3) };
    let mut kbek = Zeroizing::new(Vec::with_capacity(24));
    let mut kbak = Zeroizing::new(Vec::with_capacity(24));
    for counter in 1..=calls {
        for (usage, out) in [(0u8, &mut kbek), (1u8, &mut kbak)] {
            let b = bits.to_be_bytes();
            let input = [counter, 0, usage, 0, 0, alg, b[0], b[1]];
            out.extend_from_slice(&mac::cmac_tdes(kbpk, &input));
        }
    }
    match (TdesKey::from_slice(&kbek), TdesKey::from_slice(&kbak)) {
        (Ok(e), Ok(a)) => (e, a),
        _ => unreachable!("16 or 24 derived bytes"),
    }
}

/// Version D derivation (X9.143 AES key derivation, CMAC-based KDF per NIST SP 800-108): AES-CMAC over counter ‖ usage ‖ 00 ‖ algorithm
/// (0002 AES-128, 0003 AES-192, 0004 AES-256) ‖ length, truncated to the KBPK's length.
fn derive_d(kbpk: &AesKey) -> Result<(AesKey, AesKey)> {
    let (alg, bits, calls): (u8, u16, u8) = match kbpk.len() {
        16 => (2, 128, 1),
        24 => (3, 192, 2),
        _ => (4, 256, 2),
    };
    let mut kbek = Zeroizing::new(Vec::with_capacity(32));
    let mut kbak = Zeroizing::new(Vec::with_capacity(32));
    for counter in 1..=calls {
        for (usage, out) in [(0u8, &mut kbek), (1u8, &mut kbak)] {
            let b = bits.to_be_bytes();
            let input = [counter, 0, usage, 0, 0, alg, b[0], b[1]];
            out.extend_from_slice(&mac::cmac_aes(kbpk, &input));
        }
    }
    kbek.truncate(kbpk.len());
    kbak.truncate(kbpk.len());
    Ok((AesKey::from_slice(&kbek)?, AesKey::from_slice(&kbak)?))
}

/// Versions A and C (TR-31:2018 key variant binding): the KBPK with each byte XORed with 45 (encryption) or
/// 4D (authentication).
fn derive_variant(kbpk: &TdesKey) -> Result<(TdesKey, TdesKey)> {
    let mut e: Vec<u8> = kbpk.expose().iter().map(|b| b ^ 0x45).collect();
    let mut a: Vec<u8> = kbpk.expose().iter().map(|b| b ^ 0x4D).collect();
    let keys = (TdesKey::from_slice(&e), TdesKey::from_slice(&a));
    e.zeroize();
    a.zeroize();
    Ok((keys.0?, keys.1?))
}

fn variant_mac(kbak: &TdesKey, head: &[u8], enc: &[u8]) -> [u8; 4] {
    let mut data = Vec::with_capacity(head.len() + enc.len());
    data.extend_from_slice(head);
    data.extend_from_slice(enc);
    let m = mac::cbc_mac_tdes(kbak, &data, Padding::Method1);
    [m[0], m[1], m[2], m[3]]
}

fn cmac_tdes_two(k: &TdesKey, head: &[u8], clear: &[u8]) -> [u8; 8] {
    let mut data = Zeroizing::new(Vec::with_capacity(head.len() + clear.len()));
    data.extend_from_slice(head);
    data.extend_from_slice(clear);
    mac::cmac_tdes(k, &data)
}

fn cmac_aes_two(k: &AesKey, head: &[u8], clear: &[u8]) -> [u8; 16] {
    let mut data = Zeroizing::new(Vec::with_capacity(head.len() + clear.len()));
    data.extend_from_slice(head);
    data.extend_from_slice(clear);
    k.cmac(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_with_blocks_and_padding() {
        let h = Header::new(
            KeyBlockVersion::B,
            KeyUsage::BDK,
            KeyAlgorithm::TDES,
            ModeOfUse::DERIVE,
            Exportability::SENSITIVE,
        )
        .with_optional_block("KS", "00604B120F9292800000")
        .unwrap();
        let text = h.encode(104).unwrap();
        assert_eq!(text, "B0104B0TX00S0100KS1800604B120F9292800000");
        let (back, len) = parse_header(text.as_bytes()).unwrap();
        assert_eq!(len, text.len());
        assert_eq!(back, h);
        let d = Header { version: KeyBlockVersion::D, ..h };
        let text = d.encode(0).unwrap();
        assert_eq!(text.len() % 16, 0);
        assert!(text.contains("PB08"), "{text}");
    }

    #[test]
    fn extended_length_block() {
        let long = "X".repeat(300);
        let h = Header::new(
            KeyBlockVersion::D,
            KeyUsage::DATA_ENCRYPTION,
            KeyAlgorithm::AES,
            ModeOfUse::ENCRYPT_DECRYPT,
            Exportability::NON_EXPORTABLE,
        )
        .with_optional_block("TT", &long)
        .unwrap();
        let text = h.encode(0).unwrap();
        assert!(text[16..].starts_with("TT00020136"), "{}", &text[16..30]);
        assert_eq!(parse_header(text.as_bytes()).unwrap().0, h);
    }

    #[test]
    fn modes_of_use() {
        assert!(ModeOfUse::ENCRYPT_DECRYPT.permits(ModeOfUse::ENCRYPT));
        assert!(ModeOfUse::GENERATE_VERIFY.permits(ModeOfUse::VERIFY));
        assert!(ModeOfUse::ANY.permits(ModeOfUse::DERIVE));
        assert!(!ModeOfUse::ENCRYPT.permits(ModeOfUse::DECRYPT));
        assert!(!ModeOfUse::VERIFY.permits(ModeOfUse::GENERATE));
    }

    #[test]
    fn padding_lengths() {
        assert_eq!(padding_len(KeyBlockVersion::B, 16, 0), 6);
        assert_eq!(padding_len(KeyBlockVersion::B, 16, 24), 14);
        assert_eq!(padding_len(KeyBlockVersion::D, 16, 0), 14);
        assert_eq!(padding_len(KeyBlockVersion::D, 32, 0), 14);
        assert_eq!(padding_len(KeyBlockVersion::D, 14, 0), 0);
    }
}
