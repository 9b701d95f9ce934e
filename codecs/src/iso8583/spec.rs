//! ISO 8583 specs as data: per data element its length kind, length encoding, content type,
//! data encoding and maximum length; per message the MTI and bitmap encodings.
//!
//! A spec is plain data (built-in tables in [`super::builtin`], or a TOML/JSON file parsed by
//! [`Spec::from_toml`] / [`Spec::from_json`]); the codec in [`super::message`] only interprets it.
//! Units follow ISO 8583:1987 §4.2: a length counts characters for text, digits for packed BCD
//! and bytes for binary elements.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Location, Result};

/// Highest data element number (DE 129–192 live in the tertiary bitmap).
pub const MAX_FIELD: u16 = 192;

/// Default cap on a whole message, in bytes. The largest iso87 message with every element at
/// its maximum is about 40 KiB; 64 KiB also bounds any 2-byte-binary framed message.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 * 1024;

/// Length kind of a data element: fixed, or variable with a prefix of 1–4 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LengthKind {
    #[serde(alias = "fixed", rename = "FIXED")]
    Fixed,
    L,
    LL,
    LLL,
    LLLL,
}

impl LengthKind {
    /// Number of decimal digits of the prefix (0 for fixed).
    pub fn digits(self) -> usize {
        match self {
            LengthKind::Fixed => 0,
            LengthKind::L => 1,
            LengthKind::LL => 2,
            LengthKind::LLL => 3,
            LengthKind::LLLL => 4,
        }
    }
}

/// How a variable-length prefix is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthEncoding {
    /// ASCII digits, one per prefix digit.
    Ascii,
    /// EBCDIC digits (F0–F9).
    Ebcdic,
    /// Packed BCD, right-aligned, left zero-padded (LL: 1 byte, LLL/LLLL: 2 bytes).
    Bcd,
    /// Unsigned big-endian binary: 1 byte for L/LL, 2 bytes for LLL/LLLL.
    Binary,
}

/// Content type of an element (ISO 8583:1987 §4.1 attribute notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    /// Digits 0–9.
    N,
    /// Letters.
    A,
    /// Letters, digits and space (space padding is universal in practice).
    An,
    /// Printable ASCII 0x20–0x7E.
    Ans,
    /// Digits and special characters.
    Ns,
    /// Letters, digits and pad (space).
    Anp,
    /// Track 2/3 code set (ISO 7813 / ISO 4909): digits, separator `=` or `D`.
    Z,
    /// Binary data; appears in JSON as uppercase hex.
    B,
    /// `C` (credit) or `D` (debit) followed by digits (amounts such as DE 28).
    #[serde(rename = "x+n")]
    XN,
    /// Hex digits: the text form of a binary-by-nature element (iso87ascii DE 52/55/64/96/128).
    #[serde(rename = "hex")]
    Hex,
}

impl ContentType {
    /// Whether `c` (an ASCII byte) may appear at `pos` of an element of this type.
    pub fn allows(self, c: u8, pos: usize) -> bool {
        match self {
            ContentType::N => c.is_ascii_digit(),
            ContentType::A => c.is_ascii_alphabetic(),
            ContentType::An | ContentType::Anp => c.is_ascii_alphanumeric() || c == b' ',
            ContentType::Ans => (0x20..=0x7E).contains(&c),
            ContentType::Ns => (0x20..=0x7E).contains(&c) && !c.is_ascii_alphabetic(),
            ContentType::Z => c.is_ascii_digit() || c == b'=' || c == b'D',
            ContentType::B => true,
            ContentType::XN => {
                if pos == 0 {
                    c == b'C' || c == b'D'
                } else {
                    c.is_ascii_digit()
                }
            }
            ContentType::Hex => c.is_ascii_hexdigit(),
        }
    }

    /// Whether every byte of `data` is one this type allows anywhere (for `x+n`: after the sign).
    /// Branch-free over the whole slice (valid data is the common case), so the compiler checks
    /// many bytes per instruction; the decoder falls back to [`ContentType::allows`], byte by
    /// byte, only to name the byte that failed. The short cases are inlined where it is called
    /// (the decoder's per-element check), the long ones are a call.
    #[inline(always)]
    pub fn all_allowed(self, data: &[u8]) -> bool {
        // Numeric elements (most of a message): a word at a time. Other short elements: one table
        // load per byte. Long ones (DE 55 as hex, DE 43): a predicate the compiler vectorizes.
        if self == ContentType::N {
            return all_digits(data);
        }
        if data.len() < 32 {
            let table = &CLASS[self.class() as usize];
            return data.iter().fold(0u8, |bad, &c| bad | table[usize::from(c)]) == 0;
        }
        self.all_allowed_long(data)
    }

    /// [`ContentType::all_allowed`] of 32 bytes or more.
    fn all_allowed_long(self, data: &[u8]) -> bool {
        match self {
            ContentType::N | ContentType::XN => every(data, digit),
            ContentType::A => every(data, letter),
            ContentType::An | ContentType::Anp => every(data, |c| digit(c) | letter(c) | (c == b' ')),
            ContentType::Ans => every(data, printable),
            ContentType::Ns => every(data, |c| printable(c) & !letter(c)),
            ContentType::Z => every(data, |c| digit(c) | (c == b'=') | (c == b'D')),
            ContentType::B => true,
            ContentType::Hex => every(data, |c| digit(c) | ((c | 0x20).wrapping_sub(b'a') < 6)),
        }
    }

    /// The row of [`CLASS`] for this type.
    fn class(self) -> u8 {
        match self {
            ContentType::N | ContentType::XN => 0,
            ContentType::A => 1,
            ContentType::An | ContentType::Anp => 2,
            ContentType::Ans => 3,
            ContentType::Ns => 4,
            ContentType::Z => 5,
            ContentType::Hex => 6,
            ContentType::B => 7,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ContentType::N => "n",
            ContentType::A => "a",
            ContentType::An => "an",
            ContentType::Ans => "ans",
            ContentType::Ns => "ns",
            ContentType::Anp => "anp",
            ContentType::Z => "z",
            ContentType::B => "b",
            ContentType::XN => "x+n",
            ContentType::Hex => "hex",
        }
    }
}

/// Per class of [`ContentType::class`], per byte: 0 when the byte is allowed, 1 when not.
static CLASS: [[u8; 256]; 8] = {
    let mut t = [[1u8; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let ok = [
            c.is_ascii_digit(),
            c.is_ascii_alphabetic(),
            c.is_ascii_alphanumeric() || c == b' ',
            c >= 0x20 && c <= 0x7E,
            c >= 0x20 && c <= 0x7E && !c.is_ascii_alphabetic(),
            c.is_ascii_digit() || c == b'=' || c == b'D',
            c.is_ascii_hexdigit(),
            true,
        ];
        let mut k = 0;
        while k < 8 {
            t[k][i] = if ok[k] { 0 } else { 1 };
            k += 1;
        }
        i += 1;
    }
    t
};

/// Whether no byte of `data` fails `ok` (no early exit: see [`ContentType::all_allowed`]).
#[inline(always)]
fn every(data: &[u8], ok: impl Fn(u8) -> bool) -> bool {
    data.iter().fold(0u8, |bad, &c| bad | u8::from(!ok(c))) == 0
}

#[inline(always)]
fn digit(c: u8) -> bool {
    c.wrapping_sub(b'0') < 10
}

/// Whether every byte of `data` is an ASCII digit, eight (or four) bytes per step, the last step
/// overlapping the one before: a byte is a digit when its high nibble is 3 and adding 6 to it does
/// not carry out of its low nibble (no carry crosses bytes: 0x3F + 6 < 0x100).
#[inline]
fn all_digits(data: &[u8]) -> bool {
    const HI: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    let word = |x: u64| (x & HI == THREES) & (x.wrapping_add(SIXES) & HI == THREES);
    let half = |x: u32| {
        (x & HI as u32 == THREES as u32) & (x.wrapping_add(SIXES as u32) & HI as u32 == THREES as u32)
    };
    if let Some(last) = data.last_chunk::<8>() {
        let mut good = word(u64::from_le_bytes(*last));
        let mut rest = data;
        while let Some((w, r)) = rest.split_first_chunk::<8>() {
            good &= word(u64::from_le_bytes(*w));
            rest = r;
        }
        good
    } else if let (Some(first), Some(last)) = (data.first_chunk::<4>(), data.last_chunk::<4>()) {
        half(u32::from_le_bytes(*first)) & half(u32::from_le_bytes(*last))
    } else {
        every(data, digit)
    }
}

#[inline(always)]
fn letter(c: u8) -> bool {
    (c | 0x20).wrapping_sub(b'a') < 26
}

#[inline(always)]
fn printable(c: u8) -> bool {
    c.wrapping_sub(0x20) < 0x5F
}

/// How an element's data is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataEncoding {
    Ascii,
    /// EBCDIC code page 500 (the printable range).
    Ebcdic,
    /// Packed BCD, an odd digit count padded with a `0` nibble on the left.
    BcdLeft,
    /// Packed BCD, an odd digit count padded with an `F` nibble on the right.
    BcdRight,
    /// Raw bytes.
    Binary,
}

impl DataEncoding {
    pub fn is_bcd(self) -> bool {
        matches!(self, DataEncoding::BcdLeft | DataEncoding::BcdRight)
    }

    /// Bytes on the wire for `units` characters/digits/bytes.
    pub fn wire_len(self, units: usize) -> usize {
        if self.is_bcd() { units.div_ceil(2) } else { units }
    }
}

/// What a logging form must hide of an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Shown as is.
    #[default]
    None,
    /// A PAN: first 6 and last 4 digits shown.
    Pan,
    /// Track data: the PAN part as a PAN, everything else masked.
    Track,
    /// Masked entirely (PIN block, expiry, CVV-bearing data).
    Full,
    /// EMV TLV (DE 55): sensitive tags masked by `tlv::mask_sensitive`.
    Icc,
    /// Subelements of a two-digit tag, a two-digit length and the value (the network's DE 48):
    /// tags and lengths shown, every value masked.
    Subelements,
}

/// One data element's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    #[serde(default)]
    pub name: String,
    pub length: LengthKind,
    #[serde(default = "default_length_encoding")]
    pub length_encoding: LengthEncoding,
    pub content: ContentType,
    pub encoding: DataEncoding,
    /// Fixed length, or maximum for variable elements (characters, digits or bytes).
    pub max_len: u16,
    /// Masking in logging forms; when absent, derived from the DE number
    /// ([`default_sensitivity`]).
    #[serde(default)]
    pub mask: Option<Sensitivity>,
}

fn default_length_encoding() -> LengthEncoding {
    LengthEncoding::Ascii
}

impl FieldSpec {
    /// The masking that applies to DE `de`.
    pub fn sensitivity(&self, de: u16) -> Sensitivity {
        self.mask.unwrap_or_else(|| default_sensitivity(de))
    }

    /// Bytes of the length prefix on the wire (0 for fixed).
    pub fn prefix_len(&self) -> usize {
        let digits = self.length.digits();
        match self.length_encoding {
            _ if digits == 0 => 0,
            LengthEncoding::Ascii | LengthEncoding::Ebcdic => digits,
            LengthEncoding::Bcd => digits.div_ceil(2),
            LengthEncoding::Binary if digits <= 2 => 1,
            LengthEncoding::Binary => 2,
        }
    }

    /// Whether JSON carries this element as hex (binary data) rather than text.
    pub fn is_binary(&self) -> bool {
        self.content == ContentType::B
    }
}

/// How the MTI is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtiEncoding {
    /// Four ASCII digits.
    Ascii,
    /// Four EBCDIC digits.
    Ebcdic,
    /// Two bytes packed BCD.
    Bcd,
}

/// How bitmaps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BitmapEncoding {
    /// 8 raw bytes per bitmap.
    Binary,
    /// 16 uppercase hex characters in ASCII per bitmap.
    HexAscii,
    /// 16 uppercase hex characters in EBCDIC per bitmap.
    HexEbcdic,
}

impl BitmapEncoding {
    pub fn wire_len(self) -> usize {
        match self {
            BitmapEncoding::Binary => 8,
            BitmapEncoding::HexAscii | BitmapEncoding::HexEbcdic => 16,
        }
    }
}

/// How the decoder may read an element without going through the whole of its definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fast {
    /// The definition decides (or there is none).
    General,
    /// ASCII text of a content type checked a word or a table load at a time (not `x+n`), after
    /// `prefix` ASCII length digits (0: fixed at `max` characters).
    Ascii { prefix: u8, max: u16, content: ContentType },
}

impl Fast {
    fn of(f: Option<&FieldSpec>) -> Fast {
        match f {
            Some(f) if f.encoding == DataEncoding::Ascii && f.content != ContentType::XN => {
                let digits = f.length.digits();
                if digits == 0 {
                    Fast::Ascii { prefix: 0, max: f.max_len, content: f.content }
                } else if f.length_encoding == LengthEncoding::Ascii {
                    Fast::Ascii { prefix: digits as u8, max: f.max_len, content: f.content }
                } else {
                    Fast::General
                }
            }
            _ => Fast::General,
        }
    }

    /// Where the element at `pos` of `input` starts and how many characters it has, when it is
    /// one this path reads and everything about it is right; `None` otherwise (the general path
    /// then reads it again and says what is wrong). It accepts nothing the general path refuses.
    #[inline(always)]
    pub(crate) fn read(self, input: &[u8], pos: usize) -> Option<(usize, usize)> {
        let Fast::Ascii { prefix, max, content } = self else { return None };
        let (start, units) = if prefix == 0 {
            (pos, usize::from(max))
        } else {
            let digits = input.get(pos..pos + usize::from(prefix))?;
            let mut n = 0usize;
            for &b in digits {
                let d = b.wrapping_sub(b'0');
                if d > 9 {
                    return None;
                }
                n = n * 10 + usize::from(d);
            }
            if n > usize::from(max) {
                return None;
            }
            (pos + usize::from(prefix), n)
        };
        let data = input.get(start..start + units)?;
        content.all_allowed(data).then_some((start, units))
    }
}

/// A message spec: MTI and bitmap encodings plus the data elements 2–192.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub mti: MtiEncoding,
    pub bitmap: BitmapEncoding,
    /// DE 65 is the tertiary-bitmap indicator (as in pyiso8583 4): when its bit is set a third
    /// bitmap, encoded like the secondary, follows the secondary and announces DE 129–192.
    pub tertiary_bitmap: bool,
    /// Largest message accepted by the decoder, in bytes.
    pub max_message_len: usize,
    /// Indexed by DE number; entries 0, 1 (and 65 with a tertiary bitmap) are always `None`.
    pub(crate) fields: Vec<Option<FieldSpec>>,
    /// Indexed by DE number: what [`Fast::of`] gives for `fields` (kept with it by every change).
    pub(crate) fast: Vec<Fast>,
}

/// The file form of a spec (TOML or JSON), see `docs/iso8583-spec-format.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: String,
    mti: MtiEncoding,
    bitmap: BitmapEncoding,
    #[serde(default = "yes")]
    tertiary_bitmap: bool,
    #[serde(default)]
    max_message_len: Option<usize>,
    fields: std::collections::BTreeMap<String, FieldSpec>,
}

fn yes() -> bool {
    true
}

pub(super) fn spec_err(name: &str, detail: String) -> Error {
    Error::new(ErrorKind::Spec, Location::Spec(name.to_string()), None, detail)
}

impl Spec {
    /// An empty spec to which elements are added with [`Spec::with_field`].
    pub fn new(name: &str, mti: MtiEncoding, bitmap: BitmapEncoding) -> Self {
        Spec {
            name: name.to_string(),
            mti,
            bitmap,
            tertiary_bitmap: true,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            fields: vec![None; MAX_FIELD as usize + 1],
            fast: vec![Fast::General; MAX_FIELD as usize + 1],
        }
    }

    /// Adds or replaces DE `de` (not validated: call [`Spec::validate`]).
    pub fn with_field(mut self, de: u16, field: FieldSpec) -> Self {
        if let Some(slot) = self.fields.get_mut(de as usize) {
            self.fast[de as usize] = Fast::of(Some(&field));
            *slot = Some(field);
        }
        self
    }

    /// The definition of DE `de`, if the spec has one.
    #[inline]
    pub fn field(&self, de: u16) -> Option<&FieldSpec> {
        self.fields.get(de as usize).and_then(Option::as_ref)
    }

    /// The masking of DE `de` under this spec: its definition's, and [`Sensitivity::Full`] for an
    /// element the spec does not define (its content is unknown, so it may be anything).
    pub fn sensitivity(&self, de: u16) -> Sensitivity {
        self.field(de).map_or(Sensitivity::Full, |f| f.sensitivity(de))
    }

    /// Numbers of the defined data elements, ascending.
    pub fn defined(&self) -> impl Iterator<Item = u16> + '_ {
        self.fields.iter().enumerate().filter(|(_, f)| f.is_some()).map(|(i, _)| i as u16)
    }

    /// Parses and validates a spec file in TOML.
    pub fn from_toml(text: &str) -> Result<Spec> {
        let file: SpecFile =
            toml::from_str(text).map_err(|e| spec_err("file", format!("invalid TOML: {}", e.message())))?;
        Spec::from_file(file)
    }

    /// Parses and validates a spec file in JSON.
    pub fn from_json(text: &str) -> Result<Spec> {
        let file: SpecFile =
            serde_json::from_str(text).map_err(|e| spec_err("file", format!("invalid JSON: {e}")))?;
        Spec::from_file(file)
    }

    fn from_file(file: SpecFile) -> Result<Spec> {
        let mut spec = Spec::new(&file.name, file.mti, file.bitmap);
        spec.tertiary_bitmap = file.tertiary_bitmap;
        if let Some(m) = file.max_message_len {
            spec.max_message_len = m;
        }
        let mut problems = Vec::new();
        for (key, field) in file.fields {
            match key.parse::<u16>() {
                Ok(de) if (2..=MAX_FIELD).contains(&de) => spec = spec.with_field(de, field),
                _ => problems.push(format!("field key {key:?} is not a data element 2-192")),
            }
        }
        if let Err(e) = spec.validate() {
            problems.push(e.detail);
        }
        if problems.is_empty() { Ok(spec) } else { Err(spec_err(&spec.name, problems.join("; "))) }
    }

    /// Checks every element definition; reports all problems at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.name.is_empty() {
            problems.push("name is empty".to_string());
        }
        if self.fields.len() != MAX_FIELD as usize + 1 {
            problems.push("field table has the wrong size".to_string());
        }
        if self.max_message_len < 12 || self.max_message_len > 16 * 1024 * 1024 {
            problems.push(format!("max_message_len {} is outside 12..=16777216", self.max_message_len));
        }
        for (de, f) in self.fields.iter().enumerate() {
            let Some(f) = f else { continue };
            let p = |m: String| format!("DE {de}: {m}");
            if de < 2 {
                problems.push(p("DE 0 and 1 cannot be defined (bitmaps are derived)".into()));
            }
            if de == 65 && self.tertiary_bitmap {
                problems.push(p(
                    "is the tertiary-bitmap indicator; set tertiary_bitmap = false to define it".into(),
                ));
            }
            if f.max_len == 0 {
                problems.push(p("max_len is 0".into()));
            }
            let digits = f.length.digits();
            if digits > 0 {
                let cap: u32 = match f.length_encoding {
                    LengthEncoding::Binary if digits <= 2 => 255,
                    LengthEncoding::Binary => 65535,
                    _ => 10u32.pow(digits as u32) - 1,
                };
                if u32::from(f.max_len) > cap {
                    problems.push(p(format!(
                        "max_len {} does not fit a {:?} prefix in {:?}",
                        f.max_len, f.length, f.length_encoding
                    )));
                }
            }
            match (f.content, f.encoding) {
                (ContentType::B, DataEncoding::Binary) => {}
                (ContentType::B, e) => {
                    problems.push(p(format!("content b needs encoding binary, not {e:?}")))
                }
                (c, DataEncoding::Binary) => {
                    problems.push(p(format!("content {} cannot use encoding binary", c.name())))
                }
                (ContentType::N | ContentType::Z, _) => {}
                (c, e) if e.is_bcd() => {
                    problems.push(p(format!("content {} cannot be packed BCD", c.name())))
                }
                _ => {}
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(spec_err(&self.name, problems.join("; "))) }
    }
}

/// How DE `de` is masked when its spec does not say (ISO 8583:1987 meanings, which the built-in
/// specs keep):
///
/// * PAN (DE 2, 34 extended PAN): first 6 / last 4 shown.
/// * Track data (DE 35, 36, 45): the PAN part as a PAN, the rest (expiry, service code,
///   discretionary data with the CVV/iCVV) masked.
/// * Masked whole: the expiry (DE 14); the PIN block (DE 52); the additional-data elements
///   (DE 46–48 — this network carries the CVV2 in DE 48 subelement 92, others carry CVV2/CVC2,
///   3-D Secure or wallet data there); DE 96, the message security code, which networks use for
///   key-exchange material (ISO 8583:1993 names it key management data); and every element whose
///   content ISO 8583:1987 leaves to national or private definition (DE 56–63, 105–127) or does
///   not define at all (DE 129–192): free-format elements into which real networks put CVV2,
///   track or token data. A spec that gives one of them a harmless meaning says so with
///   `mask = "none"`.
/// * DE 55: EMV TLV, masked tag by tag.
///
/// Kept visible: DE 53, security-related control information (PIN block format and key index in
/// ISO 8583:1987, the DUKPT key serial number in this network). A KSN is not secret — ANSI X9.24
/// sends it in clear beside the PIN block it serves — and operators need it to tell which device
/// and which key a PIN failure comes from; its counter says how many PINs a device has encrypted,
/// not what they were. And DE 64/128: a MAC proves integrity to whoever holds the key and reveals
/// nothing without it; a MAC failure is debugged by comparing it.
pub const fn default_sensitivity(de: u16) -> Sensitivity {
    match de {
        2 | 34 => Sensitivity::Pan,
        35 | 36 | 45 => Sensitivity::Track,
        55 => Sensitivity::Icc,
        14 | 46..=48 | 52 | 56..=63 | 96 | 105..=127 | 129..=MAX_FIELD => Sensitivity::Full,
        _ => Sensitivity::None,
    }
}
