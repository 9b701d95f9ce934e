//! PIN blocks (ISO 9564-1:2017 formats 0, 1, 3 and 4) and PIN verification values (Visa PVV,
//! IBM 3624 offset).
//!
//! A clear PIN exists only inside a [`Pin`], which zeroizes on drop and never prints. Encrypting,
//! decrypting and translating take the random fill as an argument (sans-IO); translation decodes
//! under one key and format and re-encodes under another without the clear PIN leaving the
//! function. Decoding checks the control field, the PIN length (4–12), every PIN digit and the
//! fill, and says which nibble is wrong, never what the PIN is.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, ErrorKind, Result};
use crate::keys::{AesKey, SymmetricKey, TdesKey};

/// Shortest and longest PIN ISO 9564-1 §8.3 allows.
pub const PIN_MIN_LEN: usize = 4;
pub const PIN_MAX_LEN: usize = 12;

/// A clear PIN of 4 to 12 decimal digits. Zeroized on drop; `Debug` shows only its length.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Pin {
    /// Digit values 0–9 (not ASCII).
    digits: [u8; PIN_MAX_LEN],
    len: u8,
}

impl Pin {
    /// Parses a PIN given as ASCII digits.
    pub fn new(s: &str) -> Result<Pin> {
        let b = s.as_bytes();
        if !(PIN_MIN_LEN..=PIN_MAX_LEN).contains(&b.len()) {
            return Err(Error::new(
                ErrorKind::Pin,
                "PIN",
                format!("length {} outside {PIN_MIN_LEN}-{PIN_MAX_LEN} digits", b.len()),
            ));
        }
        let mut digits = [0u8; PIN_MAX_LEN];
        for (i, c) in b.iter().enumerate() {
            if !c.is_ascii_digit() {
                digits.zeroize();
                return Err(Error::new(ErrorKind::Pin, "PIN", format!("character {} is not a digit", i + 1)));
            }
            digits[i] = c - b'0';
        }
        Ok(Pin { digits, len: b.len() as u8 })
    }

    fn from_values(values: &[u8]) -> Pin {
        let mut digits = [0u8; PIN_MAX_LEN];
        digits[..values.len()].copy_from_slice(values);
        Pin { digits, len: values.len() as u8 }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The digit values (0–9). Every caller is a place where a clear PIN is handled.
    pub fn expose_digits(&self) -> &[u8] {
        &self.digits[..self.len()]
    }

    /// The PIN as ASCII digits, in a string that zeroizes on drop.
    pub fn expose_string(&self) -> Zeroizing<String> {
        Zeroizing::new(self.expose_digits().iter().map(|d| char::from(b'0' + d)).collect())
    }
}

impl PartialEq for Pin {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && bool::from(self.expose_digits().ct_eq(other.expose_digits()))
    }
}
impl Eq for Pin {}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({} digits)", self.len)
    }
}

/// The ISO 9564-1 PIN block formats we support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinBlockFormat {
    /// Format 0 (ISO 9564-1 §9.3.1, ANSI X9.8): PIN field XOR PAN field, fill F, TDES.
    Iso0,
    /// Format 1 (§9.3.2): no PAN, random fill, TDES.
    Iso1,
    /// Format 3 (§9.3.4): as format 0 with random fill A–F, TDES.
    Iso3,
    /// Format 4 (§9.4): 16-byte AES block, PIN field and PAN field enciphered twice.
    Iso4,
}

impl PinBlockFormat {
    /// The format for its ISO number (0, 1, 3 or 4).
    pub fn from_number(n: u8) -> Result<Self> {
        match n {
            0 => Ok(PinBlockFormat::Iso0),
            1 => Ok(PinBlockFormat::Iso1),
            3 => Ok(PinBlockFormat::Iso3),
            4 => Ok(PinBlockFormat::Iso4),
            other => Err(Error::new(
                ErrorKind::Unsupported,
                "PIN block format",
                format!("format {other} is not supported (0, 1, 3 or 4)"),
            )),
        }
    }

    pub fn number(self) -> u8 {
        match self {
            PinBlockFormat::Iso0 => 0,
            PinBlockFormat::Iso1 => 1,
            PinBlockFormat::Iso3 => 3,
            PinBlockFormat::Iso4 => 4,
        }
    }

    /// Block length in bytes: 8 for the TDES formats, 16 for format 4.
    pub fn block_len(self) -> usize {
        if self == PinBlockFormat::Iso4 { 16 } else { 8 }
    }

    fn uses_pan(self) -> bool {
        self != PinBlockFormat::Iso1
    }
}

/// Random bytes for the fill of formats 1 and 3 and the random field of format 4 (ignored by
/// format 0). The caller draws them from a CSPRNG.
pub type PinFill = [u8; 8];

/// Checks a PAN (8–19 decimal digits, ISO/IEC 7812-1) without ever quoting it.
fn check_pan(pan: &str) -> Result<&[u8]> {
    let b = pan.as_bytes();
    if !(8..=19).contains(&b.len()) {
        return Err(Error::new(ErrorKind::Pan, "PAN", format!("length {} outside 8-19 digits", b.len())));
    }
    if let Some(i) = b.iter().position(|c| !c.is_ascii_digit()) {
        return Err(Error::new(ErrorKind::Pan, "PAN", format!("character {} is not a digit", i + 1)));
    }
    Ok(b)
}

fn pack(nibbles: &[u8], out: &mut [u8]) {
    for (o, pair) in out.iter_mut().zip(nibbles.chunks(2)) {
        *o = (pair[0] << 4) | pair.get(1).copied().unwrap_or(0);
    }
}

fn nibble(block: &[u8], i: usize) -> u8 {
    let b = block[i / 2];
    if i.is_multiple_of(2) { b >> 4 } else { b & 0x0F }
}

/// The format 0/3 PAN field (ISO 9564-1 §9.3.1.3): four zero nibbles, then the 12 rightmost PAN
/// digits excluding the check digit, left-padded with zeros when the PAN is shorter.
pub fn pan_field_iso0(pan: &str) -> Result<[u8; 8]> {
    let b = check_pan(pan)?;
    let body = &b[..b.len() - 1];
    let take = body.len().min(12);
    let mut nib = [0u8; 16];
    for (i, c) in body[body.len() - take..].iter().enumerate() {
        nib[16 - take + i] = c - b'0';
    }
    let mut out = [0u8; 8];
    pack(&nib, &mut out);
    Ok(out)
}

/// The format 4 PAN field (ISO 9564-1 §9.4.2.3): length indicator M = PAN length − 12 (0 for
/// shorter PANs, which are left-padded with zeros to 12 digits), the PAN, zero pad to 32 nibbles.
pub fn pan_field_iso4(pan: &str) -> Result<[u8; 16]> {
    let b = check_pan(pan)?;
    let mut nib = [0u8; 32];
    let pad = 12usize.saturating_sub(b.len());
    nib[0] = (b.len().saturating_sub(12)) as u8;
    for (i, c) in b.iter().enumerate() {
        nib[1 + pad + i] = c - b'0';
    }
    let mut out = [0u8; 16];
    pack(&nib, &mut out);
    Ok(out)
}

/// The clear 8-byte PIN block of format 0, 1 or 3 (ISO 9564-1 §9.3): control nibble, length
/// nibble, PIN digits, fill; XORed with the PAN field for formats 0 and 3.
pub fn encode_pin_block(format: PinBlockFormat, pin: &Pin, pan: &str, fill: &PinFill) -> Result<[u8; 8]> {
    let mut nib = Zeroizing::new([0u8; 16]);
    nib[0] = format.number();
    nib[1] = pin.len;
    nib[2..2 + pin.len()].copy_from_slice(pin.expose_digits());
    for i in 2 + pin.len()..16 {
        let r = nibble(fill, i - 2);
        nib[i] = match format {
            PinBlockFormat::Iso0 => 0xF,
            PinBlockFormat::Iso1 => r,
            PinBlockFormat::Iso3 => 0xA + r % 6,
            PinBlockFormat::Iso4 => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "PIN block format",
                    "format 4 is a 16-byte AES block",
                ));
            }
        };
    }
    let mut block = [0u8; 8];
    pack(&nib[..], &mut block);
    if format.uses_pan() {
        let pf = pan_field_iso0(pan)?;
        crate::keys::xor_in_place(&mut block, &pf);
    }
    Ok(block)
}

/// Decodes a clear 8-byte PIN block of format 0, 1 or 3, checking control field, length, digits
/// and fill (ISO 9564-1 §9.3).
pub fn decode_pin_block(format: PinBlockFormat, block: &[u8; 8], pan: &str) -> Result<Pin> {
    if format == PinBlockFormat::Iso4 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "PIN block format",
            "format 4 is a 16-byte AES block",
        ));
    }
    let mut clear = Zeroizing::new(*block);
    if format.uses_pan() {
        let pf = pan_field_iso0(pan)?;
        crate::keys::xor_in_place(&mut clear[..], &pf);
    }
    decode_pin_field(format, &clear[..], 16)
}

/// Common decoding of the PIN field: `nibbles` is the extent of control + PIN + fill.
fn decode_pin_field(format: PinBlockFormat, field: &[u8], nibbles: usize) -> Result<Pin> {
    let control = nibble(field, 0);
    if control != format.number() {
        return Err(Error::new(
            ErrorKind::Pin,
            "PIN block",
            format!("control field is {control:X}, expected {} (wrong key, PAN or format?)", format.number()),
        ));
    }
    let len = nibble(field, 1) as usize;
    if !(PIN_MIN_LEN..=PIN_MAX_LEN).contains(&len) {
        return Err(Error::new(
            ErrorKind::Pin,
            "PIN block",
            format!("PIN length {len} outside {PIN_MIN_LEN}-{PIN_MAX_LEN}"),
        ));
    }
    let mut values = Zeroizing::new([0u8; PIN_MAX_LEN]);
    for i in 0..len {
        let d = nibble(field, 2 + i);
        if d > 9 {
            return Err(Error::new(
                ErrorKind::Pin,
                "PIN block",
                format!("PIN digit {} is not decimal", i + 1),
            ));
        }
        values[i] = d;
    }
    for i in 2 + len..nibbles {
        let f = nibble(field, i);
        let ok = match format {
            PinBlockFormat::Iso0 => f == 0xF,
            PinBlockFormat::Iso1 => true,
            PinBlockFormat::Iso3 => f >= 0xA,
            PinBlockFormat::Iso4 => f == 0xA,
        };
        if !ok {
            let expected = match format {
                PinBlockFormat::Iso0 => "F",
                PinBlockFormat::Iso3 => "A-F",
                _ => "A",
            };
            return Err(Error::new(
                ErrorKind::Pin,
                "PIN block",
                format!("fill nibble {} is not {expected} (format {})", i + 1, format.number()),
            ));
        }
    }
    Ok(Pin::from_values(&values[..len]))
}

/// The clear format 4 PIN field (ISO 9564-1 §9.4.2.2): control 4, length, PIN, fill A to nibble
/// 16, then 8 random bytes.
pub fn encode_pin_field_iso4(pin: &Pin, random: &PinFill) -> [u8; 16] {
    let mut nib = Zeroizing::new([0xAu8; 16]);
    nib[0] = 4;
    nib[1] = pin.len;
    nib[2..2 + pin.len()].copy_from_slice(pin.expose_digits());
    let mut field = [0u8; 16];
    pack(&nib[..], &mut field[..8]);
    field[8..].copy_from_slice(random);
    field
}

/// Decodes a clear format 4 PIN field, checking control, length, digits and the A fill.
pub fn decode_pin_field_iso4(field: &[u8; 16]) -> Result<Pin> {
    decode_pin_field(PinBlockFormat::Iso4, field, 16)
}

/// Format 4 encipherment (ISO 9564-1 §9.4.2.4): A = E(K, PIN field); B = A XOR PAN field;
/// block = E(K, B).
pub fn encipher_iso4(key: &AesKey, pin: &Pin, pan: &str, random: &PinFill) -> Result<[u8; 16]> {
    let pan_field = pan_field_iso4(pan)?;
    let mut block = Zeroizing::new(encode_pin_field_iso4(pin, random));
    key.encrypt_block(&mut block);
    crate::keys::xor_in_place(&mut block[..], &pan_field);
    key.encrypt_block(&mut block);
    Ok(*block)
}

/// Format 4 decipherment (ISO 9564-1 §9.4.2.5): B = D(K, block); A = B XOR PAN field;
/// PIN field = D(K, A).
pub fn decipher_iso4(key: &AesKey, block: &[u8; 16], pan: &str) -> Result<Pin> {
    let pan_field = pan_field_iso4(pan)?;
    let mut b = Zeroizing::new(*block);
    key.decrypt_block(&mut b);
    crate::keys::xor_in_place(&mut b[..], &pan_field);
    key.decrypt_block(&mut b);
    decode_pin_field_iso4(&b)
}

fn tdes_for<'a>(key: &'a SymmetricKey, format: PinBlockFormat, what: &'static str) -> Result<&'a TdesKey> {
    key.as_tdes(what).map_err(|_| {
        Error::new(
            ErrorKind::KeyUsage,
            what,
            format!("format {} needs a TDES key, found AES", format.number()),
        )
    })
}

fn aes_for<'a>(key: &'a SymmetricKey, what: &'static str) -> Result<&'a AesKey> {
    key.as_aes(what)
        .map_err(|_| Error::new(ErrorKind::KeyUsage, what, "format 4 needs an AES key, found TDES"))
}

/// Encrypts `pin` into a PIN block of `format` under `key` (TDES for 0/1/3, AES for 4).
/// Returns 8 bytes (formats 0, 1, 3) or 16 (format 4).
pub fn encrypt_pin_block(
    key: &SymmetricKey,
    format: PinBlockFormat,
    pin: &Pin,
    pan: &str,
    fill: &PinFill,
) -> Result<Vec<u8>> {
    match format {
        PinBlockFormat::Iso4 => Ok(encipher_iso4(aes_for(key, "key")?, pin, pan, fill)?.to_vec()),
        _ => {
            let k = tdes_for(key, format, "key")?;
            let mut block = Zeroizing::new(encode_pin_block(format, pin, pan, fill)?);
            k.encrypt_block(&mut block);
            Ok(block.to_vec())
        }
    }
}

fn check_block_len(format: PinBlockFormat, block: &[u8]) -> Result<()> {
    if block.len() != format.block_len() {
        return Err(Error::new(
            ErrorKind::Input,
            "PIN block",
            format!(
                "format {} block is {} bytes, found {}",
                format.number(),
                format.block_len(),
                block.len()
            ),
        ));
    }
    Ok(())
}

/// Decrypts a PIN block of `format` under `key` and decodes it into the PIN.
pub fn decrypt_pin_block(key: &SymmetricKey, format: PinBlockFormat, block: &[u8], pan: &str) -> Result<Pin> {
    check_block_len(format, block)?;
    match format {
        PinBlockFormat::Iso4 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(block);
            decipher_iso4(aes_for(key, "key")?, &b, pan)
        }
        _ => {
            let k = tdes_for(key, format, "key")?;
            let mut b = Zeroizing::new([0u8; 8]);
            b.copy_from_slice(block);
            k.decrypt_block(&mut b);
            decode_pin_block(format, &b, pan)
        }
    }
}

/// Translates a PIN block: decrypt under `from_key`/`from_format`, re-encrypt under
/// `to_key`/`to_format` (the HSM "translate PIN" function). The clear PIN stays inside and is
/// zeroized when the function returns.
pub fn translate_pin_block(
    from_key: &SymmetricKey,
    from_format: PinBlockFormat,
    to_key: &SymmetricKey,
    to_format: PinBlockFormat,
    block: &[u8],
    pan: &str,
    fill: &PinFill,
) -> Result<Vec<u8>> {
    let pin = decrypt_pin_block(from_key, from_format, block, pan).map_err(|e| match e.what {
        "key" => Error { what: "from key", ..e },
        _ => e,
    })?;
    encrypt_pin_block(to_key, to_format, &pin, pan, fill).map_err(|e| match e.what {
        "key" => Error { what: "to key", ..e },
        _ => e,
    })
}

/// Decimalizes the 16 hex digits of `block` the Visa PVV way: decimal digits left to right,
/// then, if fewer than `n`, the letters A–F (as 0–5) left to right.
fn visa_decimalize(block: &[u8; 8], n: usize) -> Vec<u8> {
    let nibbles: Vec<u8> = (0..16).map(|i| nibble(block, i)).collect();
    let mut out: Vec<u8> = nibbles.iter().copied().filter(|&d| d < 10).take(n).collect();
    if out.len() < n {
        let more = n - out.len();
        out.extend(nibbles.iter().filter(|&&d| d >= 10).map(|d| d - 10).take(more));
    }
    out
}

/// A PIN verification key index: one decimal digit (Visa PVKI).
fn check_pvki(pvki: u8) -> Result<()> {
    if pvki > 9 {
        return Err(Error::new(ErrorKind::Input, "PVKI", format!("{pvki} is not one decimal digit")));
    }
    Ok(())
}

/// Visa PIN Verification Value (Visa PIN Security Program; ISO 9564 PVV method): the transformed
/// security parameter TSP = the 11 rightmost PAN digits excluding the check digit ‖ PVKI ‖ the 4
/// leftmost PIN digits, enciphered with the PVK pair (PVKA ‖ PVKB as double-length TDES), then
/// decimalized (decimal digits first, then A–F as 0–5) to 4 digits.
pub fn visa_pvv(pvk: &TdesKey, pan: &str, pvki: u8, pin: &Pin) -> Result<String> {
    check_pvki(pvki)?;
    let b = check_pan(pan)?;
    if b.len() < 12 {
        return Err(Error::new(
            ErrorKind::Pan,
            "PAN",
            format!("length {} below the 12 digits PVV needs", b.len()),
        ));
    }
    let mut nib = Zeroizing::new([0u8; 16]);
    for (i, c) in b[b.len() - 12..b.len() - 1].iter().enumerate() {
        nib[i] = c - b'0';
    }
    nib[11] = pvki;
    nib[12..16].copy_from_slice(&pin.expose_digits()[..4]);
    let mut tsp = Zeroizing::new([0u8; 8]);
    pack(&nib[..], &mut tsp[..]);
    pvk.encrypt_block(&mut tsp);
    Ok(visa_decimalize(&tsp, 4).iter().map(|d| char::from(b'0' + d)).collect())
}

/// Verifies a Visa PVV in constant time; [`ErrorKind::Verification`] when it does not match.
pub fn verify_visa_pvv(pvk: &TdesKey, pan: &str, pvki: u8, pin: &Pin, pvv: &str) -> Result<()> {
    let computed = visa_pvv(pvk, pan, pvki, pin)?;
    if pvv.len() == 4 && bool::from(computed.as_bytes().ct_eq(pvv.as_bytes())) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Verification, "PVV", "does not match the PIN"))
    }
}

/// The IBM 3624 parameters besides the PVK and the PIN.
#[derive(Debug, Clone)]
pub struct Ibm3624Params<'a> {
    /// 16 decimal digits mapping hex 0–F to decimal.
    pub decimalization_table: &'a str,
    /// Validation data: up to 16 hex digits (usually PAN digits), padded right with `pad`.
    pub validation_data: &'a str,
    /// The hex pad character.
    pub pad: char,
    /// How many PIN digits the offset covers (4 to the PIN length), leftmost first.
    pub check_length: usize,
}

fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|v| v as u8)
}

/// The IBM 3624 intermediate ("natural") PIN digits: E(PVK, validation data padded to 16 hex),
/// each hex digit mapped through the decimalization table.
fn ibm3624_natural(pvk: &TdesKey, p: &Ibm3624Params<'_>) -> Result<[u8; 16]> {
    let table = p.decimalization_table.as_bytes();
    if table.len() != 16 || !table.iter().all(u8::is_ascii_digit) {
        return Err(Error::new(ErrorKind::Input, "decimalization table", "must be 16 decimal digits"));
    }
    let vd = p.validation_data.as_bytes();
    if vd.is_empty() || vd.len() > 16 {
        return Err(Error::new(
            ErrorKind::Input,
            "validation data",
            format!("length {} outside 1-16 hex digits", vd.len()),
        ));
    }
    let pad = u8::try_from(p.pad)
        .ok()
        .and_then(hex_value)
        .ok_or_else(|| Error::new(ErrorKind::Input, "pad", "must be one hex digit"))?;
    let mut nib = [pad; 16];
    for (i, c) in vd.iter().enumerate() {
        nib[i] = hex_value(*c).ok_or_else(|| {
            Error::new(ErrorKind::Input, "validation data", format!("character {} is not hex", i + 1))
        })?;
    }
    let mut block = [0u8; 8];
    pack(&nib, &mut block);
    pvk.encrypt_block(&mut block);
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = table[nibble(&block, i) as usize] - b'0';
    }
    Ok(out)
}

fn check_length(p: &Ibm3624Params<'_>, pin: &Pin) -> Result<()> {
    if !(PIN_MIN_LEN..=pin.len()).contains(&p.check_length) {
        return Err(Error::new(
            ErrorKind::Input,
            "check length",
            format!("{} outside {PIN_MIN_LEN} to the PIN length {}", p.check_length, pin.len()),
        ));
    }
    Ok(())
}

/// IBM 3624 PIN offset: for each of the leftmost `check_length` PIN digits,
/// (customer digit − natural digit) mod 10.
pub fn ibm3624_offset(pvk: &TdesKey, params: &Ibm3624Params<'_>, pin: &Pin) -> Result<String> {
    check_length(params, pin)?;
    let natural = Zeroizing::new(ibm3624_natural(pvk, params)?);
    Ok(pin.expose_digits()[..params.check_length]
        .iter()
        .zip(natural.iter())
        .map(|(c, n)| char::from(b'0' + (10 + c - n) % 10))
        .collect())
}

/// Verifies an IBM 3624 offset: natural PIN + offset (digit-wise mod 10) must equal the leftmost
/// `check_length` digits of the PIN. Compared in constant time.
pub fn verify_ibm3624_offset(
    pvk: &TdesKey,
    params: &Ibm3624Params<'_>,
    pin: &Pin,
    offset: &str,
) -> Result<()> {
    let computed = Zeroizing::new(ibm3624_offset(pvk, params, pin)?);
    if offset.len() == computed.len() && bool::from(computed.as_bytes().ct_eq(offset.as_bytes())) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Verification, "PIN offset", "does not match the PIN"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_never_prints() {
        let p = Pin::new("123456").unwrap();
        assert_eq!(format!("{p:?}"), "Pin(6 digits)");
    }

    #[test]
    fn bad_pins_are_clear_errors() {
        assert!(Pin::new("123").unwrap_err().to_string().contains("length 3"));
        assert!(Pin::new("1234567890123").is_err());
        let e = Pin::new("12a4").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Pin);
        assert!(e.to_string().contains("character 3"));
    }

    #[test]
    fn nibble_helpers() {
        assert_eq!(visa_decimalize(&[0xAB, 0xCD, 0xEF, 0xAB, 0xCD, 0xEF, 0xAB, 0xC1], 4), vec![1, 0, 1, 2]);
    }
}
