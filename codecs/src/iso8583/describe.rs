//! Logging forms of a message: `Debug`, `Display` (a human-readable dump) and masked JSON, all
//! with sensitive elements masked (PCI DSS 4.0 3.4.1: PAN shown at most first 6 / last 4; 3.3.1:
//! card verification codes, track data and PIN data not kept once the authorization is done — so
//! never in a journal, a report or a log line).
//!
//! Which elements are sensitive is spec data ([`Sensitivity`]): a spec file may say it per element,
//! and otherwise [`default_sensitivity`] says it by DE number — [`SENSITIVE_ELEMENTS`] and
//! [`is_sensitive`] are the same rule, for whoever must decide what to show of an element (the
//! switch's certification reports, its logs). DE 55 is masked tag by tag by
//! [`crate::tlv::mask_sensitive`] (PAN, track, cardholder name and PIN tags inside the ICC data).
//! [`error_excerpt`] bounds what a report may show of a message that does not decode.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::field::{self, FieldRef};
use super::message::Message;
use super::spec::{ContentType, DataEncoding, FieldSpec, MAX_FIELD, MtiEncoding, Sensitivity, Spec};
use crate::error::{Error, Location};

pub use super::spec::default_sensitivity;

/// Whether DE `de` is masked by default ([`default_sensitivity`]): an element that can carry a
/// PAN, CVV2/CVC2, track data, PIN data or key material. A message's own spec may mask more (or
/// less, for an element it defines as harmless): ask [`Spec::sensitivity`] when the spec is at
/// hand.
pub const fn is_sensitive(de: u16) -> bool {
    !matches!(default_sensitivity(de), Sensitivity::None)
}

const fn sensitive_count() -> usize {
    let (mut n, mut de) = (0, 0);
    while de <= MAX_FIELD {
        if is_sensitive(de) {
            n += 1;
        }
        de += 1;
    }
    n
}

const SENSITIVE_TABLE: [u16; sensitive_count()] = {
    let mut out = [0u16; sensitive_count()];
    let (mut i, mut de) = (0, 0);
    while de <= MAX_FIELD {
        if is_sensitive(de) {
            out[i] = de;
            i += 1;
        }
        de += 1;
    }
    out
};

/// The elements [`is_sensitive`] names, ascending (derived from it, so the two cannot drift).
pub const SENSITIVE_ELEMENTS: &[u16] = &SENSITIVE_TABLE;

/// Masks a PAN: first 6 and last 4 digits kept when it has more than 10, else all masked.
pub fn mask_pan(pan: &str) -> String {
    // Digits (every PAN that decoded): the kept ends copied as they are.
    if pan.is_ascii() {
        let n = pan.len();
        if n <= 10 {
            return "*".repeat(n);
        }
        let mut out = String::with_capacity(n);
        out.push_str(&pan[..6]);
        out.extend(std::iter::repeat_n('*', n - 10));
        out.push_str(&pan[n - 4..]);
        return out;
    }
    let n = pan.chars().count();
    if n > 10 {
        let mut out = String::with_capacity(pan.len());
        for (i, c) in pan.chars().enumerate() {
            out.push(if i < 6 || i >= n - 4 { c } else { '*' });
        }
        out
    } else {
        "*".repeat(n)
    }
}

fn stars(text: &str) -> String {
    "*".repeat(text.chars().count())
}

/// Masks track data: a leading start sentinel (`%`, `;`) or track 1 format code kept, the PAN
/// masked as a PAN, everything after it masked. Only a PAN that ends at a field separator (`=`,
/// `D`, `^`) within 19 digits is one: without a separator the digits run on into the expiry and
/// discretionary data (CVV included), whose last 4 must not be shown as if they were the PAN's.
fn mask_track(text: &str) -> String {
    let start = text.find(|c: char| c.is_ascii_digit()).unwrap_or(text.len());
    let (head, rest) = text.split_at(start);
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (pan, tail) = rest.split_at(end);
    let head_ok = head.len() <= 2 && head.chars().all(|c| matches!(c, '%' | ';') || c.is_ascii_uppercase());
    let separated = matches!(tail.chars().next(), Some('=' | 'D' | '^'));
    if !(head_ok && separated && pan.len() <= 19) {
        return stars(text);
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(head);
    out.push_str(&mask_pan(pan));
    out.extend(tail.chars().map(|_| '*'));
    out
}

/// Masks subelements of a two-digit tag, a two-digit length and the value (the network's DE 48):
/// tags and lengths kept — a report can still say that a CVV2 (`92`) came, and how long — every
/// value masked, known tag or not. From the first subelement that does not parse (a non-digit
/// tag or length, a value running past the end) every character is masked: a malformed element
/// has no structure to show.
fn mask_subelements(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let digit = |i: usize| chars.get(i).and_then(|c| c.to_digit(10)).map(|d| d as usize);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let head = (digit(i), digit(i + 1), digit(i + 2), digit(i + 3));
        let (Some(_), Some(_), Some(hi), Some(lo)) = head else { break };
        let len = hi * 10 + lo;
        if i + 4 + len > chars.len() {
            break;
        }
        out.extend(&chars[i..i + 4]);
        out.extend(std::iter::repeat_n('*', len));
        i += 4 + len;
    }
    out.extend(std::iter::repeat_n('*', chars.len() - i));
    out
}

/// The masked text form of DE `de` whose clear text form is `text` (the same number of
/// characters: a masked element still shows its length).
/// [`mask_text`] of an element as carried, without a copy where nothing is masked (its text
/// borrowed) and without a round trip through hex for binary chip data (masked as bytes).
pub fn masked_element_text<'a>(msg: &Message, fs: &FieldSpec, fl: FieldRef<'a>) -> Cow<'a, str> {
    if let Some(bytes) = masked_element_bytes(fs, fl) {
        return Cow::Owned(crate::hex_upper(&bytes));
    }
    match fs.sensitivity(fl.de) {
        Sensitivity::None => field::to_text(fs, fl),
        _ => Cow::Owned(mask_text(msg, fl.de, field::to_text(fs, fl).into_owned())),
    }
}

/// The bytes whose upper-case hex is [`masked_element_text`] of a binary element that keeps its
/// form when masked — one not sensitive (borrowed), or chip data with its sensitive tags masked —
/// for a caller that stores bytes; `None` for every other element (its masked text is not hex of
/// its bytes: a text element, or a sensitive binary one shown as stars).
pub fn masked_element_bytes<'a>(fs: &FieldSpec, fl: FieldRef<'a>) -> Option<Cow<'a, [u8]>> {
    if fs.encoding != DataEncoding::Binary {
        return None;
    }
    match fs.sensitivity(fl.de) {
        Sensitivity::None => Some(Cow::Borrowed(fl.data)),
        Sensitivity::Icc => Some(Cow::Owned(crate::tlv::mask_sensitive(fl.data))),
        _ => None,
    }
}

pub fn mask_text(msg: &Message, de: u16, text: String) -> String {
    let Some(fs) = msg.spec().field(de) else { return stars(&text) };
    let text_content = fs.content != ContentType::B;
    match fs.sensitivity(de) {
        Sensitivity::None => text,
        Sensitivity::Full => stars(&text),
        Sensitivity::Pan if text_content => mask_pan(&text),
        Sensitivity::Track if text_content => mask_track(&text),
        Sensitivity::Subelements if text_content => mask_subelements(&text),
        Sensitivity::Pan | Sensitivity::Track | Sensitivity::Subelements => stars(&text),
        Sensitivity::Icc => match hex::decode(&text) {
            Ok(raw) => crate::hex_upper(&crate::tlv::mask_sensitive(&raw)),
            Err(_) => stars(&text),
        },
    }
}

/// What a report may show of `raw`, a message that does not decode under `spec`, at `err` (the
/// error [`Message::decode`] gave): at most `max` bytes from the offending byte to the end of the
/// part the error is about — the MTI, a bitmap, the failing element's length prefix (a count,
/// never content), or the data of a failing element that is not sensitive under `spec`.
///
/// `None` for an error in a sensitive element's data, in an element the spec does not define, in
/// bytes after the last element, or in a message over the size cap: their content is either
/// sensitive or unknown. Never more than that part: the next element may be a PAN. (A corrupted
/// bitmap moves the boundaries of the elements after it, and no decoder can tell what the sender
/// meant: the bounds are those the bitmap announces.)
pub fn error_excerpt<'a>(spec: &Arc<Spec>, raw: &'a Bytes, err: &Error, max: usize) -> Option<&'a [u8]> {
    let at = err.offset?;
    let mti_len = if spec.mti == MtiEncoding::Bcd { 2 } else { 4 };
    let (start, end) = match err.location {
        Location::Mti => (0, mti_len),
        Location::Bitmap(n @ 1..=3) => {
            let len = spec.bitmap.wire_len();
            let start = mti_len + usize::from(n - 1) * len;
            (start, start + len)
        }
        Location::Field(de) => {
            let fs = spec.field(de)?;
            let start = Message::failure_start(spec, raw)?;
            let prefix_end = start + fs.prefix_len();
            if at < prefix_end {
                (start, prefix_end)
            } else if spec.sensitivity(de) == Sensitivity::None {
                let mut data = start;
                let units = field::read_len(de, fs, raw, &mut data).ok()?;
                (start, data + fs.encoding.wire_len(units))
            } else {
                return None;
            }
        }
        _ => return None,
    };
    let end = end.min(raw.len()).min(at.saturating_add(max));
    if start <= at && at < end { raw.get(at..end) } else { None }
}

impl Message {
    /// A multi-line, masked, human-readable dump.
    pub fn describe(&self) -> String {
        use fmt::Write;
        let spec = self.spec();
        let mti = self.mti();
        let mut s = String::new();
        let _ = writeln!(s, "spec {}", spec.name);
        let _ = writeln!(s, "MTI    {mti}  {} {}", mti.class_name(), mti.function_name());
        for f in self.fields() {
            let Some(fs) = spec.field(f.de) else { continue };
            let text = mask_text(self, f.de, field::to_text(fs, f).into_owned());
            let kind = match fs.length.digits() {
                0 => format!("{}{}", fs.content.name(), fs.max_len),
                d => format!("{}..{} {}", fs.content.name(), fs.max_len, "L".repeat(d)),
            };
            let _ = writeln!(s, "DE {:<3} {:<14} {:<36} {}", f.de, kind, fs.name, text);
        }
        s
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({}, {})", self.spec().name, self.to_masked_json())
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl fmt::Debug for field::Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The spec is not at hand: never print the data.
        write!(f, "Field(DE {}, {} units, {} bytes)", self.de, self.units, self.data.len())
    }
}

impl fmt::Debug for field::FieldRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The spec is not at hand: never print the data.
        write!(f, "Field(DE {}, {} units, {} bytes)", self.de, self.units, self.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::Mti;
    use crate::iso8583::builtin::NAMES;
    use crate::tlv::{Tag, TlvBuilder};
    use proptest::prelude::*;

    fn specs() -> Vec<&'static Arc<Spec>> {
        NAMES.iter().map(|n| Spec::builtin(n).expect("built-in")).collect()
    }

    fn network() -> &'static Arc<Spec> {
        Spec::builtin("network").expect("built-in")
    }

    /// A 0100 with `fields` set from their text forms (binary elements from hex).
    fn message(spec: &Arc<Spec>, fields: &[(u16, &str)]) -> Message {
        let mut m = Message::new(spec.clone(), Mti::AUTHORIZATION_REQUEST);
        for (de, text) in fields {
            m.set_text(*de, text).unwrap_or_else(|e| panic!("{} DE {de}: {e}", spec.name));
        }
        m
    }

    /// Every logging form: masked JSON (value and journal text), `Debug`, `Display`.
    fn forms(m: &Message) -> [String; 4] {
        [m.to_masked_json().to_string(), m.to_masked_json_string(), format!("{m:?}"), format!("{m}")]
    }

    fn assert_hidden(m: &Message, secrets: &[&str]) {
        for form in forms(m) {
            for s in secrets {
                assert!(!form.contains(s), "{}: {s:?} shows in {form}", m.spec().name);
            }
        }
    }

    fn masked(m: &Message, de: u16) -> String {
        m.to_masked_json()["fields"][de.to_string()].as_str().unwrap_or_default().to_string()
    }

    #[test]
    fn pan_and_track_masks() {
        assert_eq!(mask_pan("4761739001010010"), "476173******0010");
        assert_eq!(mask_pan("123456"), "******");
        assert_eq!(mask_pan("4761739001"), "**********", "ten digits: nothing shown");
        assert_eq!(mask_pan("47617390010"), "476173*0010");
        assert_eq!(mask_pan("4761739001010010123"), "476173*********0123");
        // Not ASCII (never a decoded PAN): masked by characters all the same.
        assert_eq!(mask_pan("47617é9001010010"), "47617é******0010");
        assert_eq!(mask_pan("é12345678"), "*********");
        assert_eq!(
            mask_track("4761739001010010=22122011143804400000"),
            "476173******0010*********************"
        );
        assert_eq!(mask_track("%B4761739001010010^DOE/J^2212"), "%B476173******0010***********");
        assert_eq!(mask_track(";4761739001010010D2212"), ";476173******0010*****");
    }

    #[test]
    fn track_data_without_a_pan_and_separator_is_masked_whole() {
        // No separator: the digit run is PAN, expiry and discretionary data (CVV) together.
        assert_eq!(mask_track("47617390010100102212201114380"), "*".repeat(29));
        // No digits at all: a name is no prefix to keep.
        assert_eq!(mask_track("%BDOE/JOHN^2212"), "*".repeat(15));
        // A longer lead than a sentinel and a format code, or a "PAN" over 19 digits.
        assert_eq!(mask_track("ABC4761739001010010=2212"), "*".repeat(24));
        assert_eq!(mask_track("47617390010100101234567=2212"), "*".repeat(28));
    }

    #[test]
    fn sensitive_elements_are_the_documented_set() {
        let expected: Vec<u16> = [2, 14, 34, 35, 36, 45, 46, 47, 48, 52, 55]
            .into_iter()
            .chain(56..=63)
            .chain([96])
            .chain(105..=127)
            .chain(129..=MAX_FIELD)
            .collect();
        assert_eq!(SENSITIVE_ELEMENTS, &expected[..]);
        for de in [3, 4, 11, 22, 37, 39, 41, 42, 43, 44, 49, 53, 54, 64, 90, 95, 102, 128] {
            assert!(!is_sensitive(de), "DE {de}");
        }
        // The built-in specs mask exactly these, the network's DE 48 by subelement; an element a
        // spec does not define is masked whole.
        for spec in specs() {
            for de in spec.defined() {
                assert_eq!(
                    spec.sensitivity(de) != Sensitivity::None,
                    is_sensitive(de),
                    "{} DE {de}",
                    spec.name
                );
            }
            assert_eq!(spec.sensitivity(150), Sensitivity::Full);
        }
        assert_eq!(network().sensitivity(48), Sensitivity::Subelements);
        assert_eq!(Spec::builtin("iso87ascii").map(|s| s.sensitivity(48)), Some(Sensitivity::Full));
    }

    #[test]
    fn additional_private_and_key_elements_are_masked_whole_in_every_builtin_spec() {
        for spec in specs() {
            let mut des: Vec<u16> = [46, 47, 96].into_iter().chain(56..=63).chain(105..=127).collect();
            if spec.name != "network" {
                des.push(48);
            }
            let values: Vec<(u16, String)> = des
                .iter()
                .map(|&de| {
                    let fs = spec.field(de).expect("defined");
                    let v = match fs.content {
                        ContentType::B | ContentType::Hex => "A1B2C3D4E5F60718".to_string(),
                        _ => format!("CVV2=987;TRACK={de}"),
                    };
                    (de, v)
                })
                .collect();
            let fields: Vec<(u16, &str)> = values.iter().map(|(de, v)| (*de, v.as_str())).collect();
            let m = message(spec, &fields);
            for (de, v) in &values {
                assert_eq!(
                    masked(&m, *de),
                    "*".repeat(v.len()),
                    "{} DE {de}: masked whole, length kept",
                    spec.name
                );
                assert_hidden(&m, &[v.as_str()]);
            }
        }
    }

    #[test]
    fn network_de48_shows_subelement_tags_and_lengths_never_values() {
        let cases = [
            ("9203123", "9203***"),
            // An unknown subelement after the CVV2: its value masked as well.
            ("92031235504ABCD", "9203***5504****"),
            // A value running past the end, a non-digit length, a stray tail: masked from there on.
            ("9205123", "*******"),
            ("92X3123", "*******"),
            ("9203123X", "9203****"),
            ("", ""),
        ];
        for (clear, want) in cases {
            let m = message(network(), &[(48, clear)]);
            assert_eq!(masked(&m, 48), want, "{clear:?}");
            assert_eq!(m.to_json()["fields"]["48"], clear, "the clear form is unchanged");
        }
        let m = message(network(), &[(48, "92031235504ABCD")]);
        assert_hidden(&m, &["123", "ABCD"]);
        // Where the spec gives DE 48 no structure, it is masked whole.
        for name in ["iso87ascii", "iso87binary"] {
            let m = message(Spec::builtin(name).expect("built-in"), &[(48, "9203123")]);
            assert_eq!(masked(&m, 48), "*******", "{name}");
        }
    }

    #[test]
    fn ksn_and_mac_stay_visible() {
        let m = message(network(), &[(53, "FFFF9876543210E00001"), (64, "0102030405060708")]);
        assert_eq!(
            (masked(&m, 53), masked(&m, 64)),
            ("FFFF9876543210E00001".into(), "0102030405060708".into())
        );
        for name in ["iso87ascii", "iso87binary"] {
            let m = message(Spec::builtin(name).expect("built-in"), &[(53, "2001010100000000")]);
            assert_eq!(masked(&m, 53), "2001010100000000", "{name}");
        }
    }

    /// DE 55 with every sensitive tag the brief names plus one harmless tag, and the clear
    /// values (uppercase hex) that must not show.
    fn icc_with_sensitive_tags() -> (Vec<u8>, Vec<&'static str>) {
        let tags: [(u32, &[u8]); 9] = [
            (
                0x57,
                &[0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x10, 0xD2, 0x81, 0x22, 0x01, 0x11, 0x43, 0x80],
            ),
            (0x5A, &[0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x10]),
            (0x5F20, b"DOE/JOHN"),
            (0x9F6B, &[0x54, 0x13, 0x33, 0x00, 0x89, 0x01, 0x00, 0x20, 0xD2, 0x91, 0x22, 0x01, 0x99, 0x88]),
            (0x56, b"B4761739001010010^DOE/JOHN^2812201"),
            (0x9F1F, b"1143804400000"),
            (0x9F20, &[0x12, 0x34, 0x56, 0x78, 0x9F]),
            (0x99, &[0x04, 0x12, 0x34, 0xFE, 0xDC, 0xBA, 0x98, 0x76]),
            (0x9F26, &[0xC8, 0xB5, 0x07, 0x13, 0x6D, 0x92, 0x1F, 0xD0]),
        ];
        let mut b = TlvBuilder::new();
        for (t, v) in tags {
            b.primitive(Tag::new(t), v).expect("tag");
        }
        let secrets = vec![
            "4761739001010010",
            "D28122011143",
            "444F452F4A4F484E",
            "34373631373339303031303130303130",
            "5413330089010020",
            "D2912201",
            "31313433383034343030303030",
            "123456789F",
            "041234FEDCBA9876",
        ];
        (b.finish().to_vec(), secrets)
    }

    #[test]
    fn icc_track_pan_name_and_pin_tags_are_masked_in_every_builtin_spec() {
        let (icc, secrets) = icc_with_sensitive_tags();
        for spec in specs() {
            let mut m = Message::new(spec.clone(), Mti::AUTHORIZATION_REQUEST);
            m.set_icc_data(&icc).expect("DE 55");
            assert_hidden(&m, &secrets);
            // Not every tag is hidden: the cryptogram is what an operator looks for.
            assert!(masked(&m, 55).contains("9F2608C8B507136D921FD0"), "{}", spec.name);
            assert_eq!(masked(&m, 55).len(), 2 * icc.len(), "same TLV length");
        }
    }

    #[test]
    fn debug_and_display_hide_pan_track_cvv2_pin_and_icc_data() {
        let mut b = TlvBuilder::new();
        b.primitive(Tag::new(0x5A), &[0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x10]).expect("5A");
        let t2 =
            [0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x10, 0xD2, 0x81, 0x22, 0x01, 0x14, 0x38, 0x04, 0x4F];
        b.primitive(Tag::new(0x57), &t2).expect("57");
        let icc = b.finish();
        for spec in specs() {
            let mut m = message(
                spec,
                &[
                    (2, "4761739001010010"),
                    (35, "4761739001010010=28122011438044"),
                    (45, "B4761739001010010^DOE/JOHN^28122011438044"),
                    (48, "9203123"),
                    (52, "C0FFEE15DEADBEEF"),
                ],
            );
            m.set_icc_data(&icc).expect("DE 55");
            for (form, text) in [("Debug", format!("{m:?}")), ("Display", format!("{m}"))] {
                for secret in ["4761739001010010", "28122011438044", "DOE/JOHN", "123", "C0FFEE15DEADBEEF"] {
                    assert!(!text.contains(secret), "{} {form} shows {secret:?}: {text}", spec.name);
                }
                assert!(
                    text.contains("476173******0010"),
                    "{} {form}: the PAN masked, not dropped",
                    spec.name
                );
            }
        }
    }

    // --------------------------------------------------------------------------------------------
    // What a report may show of a message that does not decode

    /// A network 0100 whose DE 32 (not sensitive) sits just before DE 35 (track data).
    fn frame() -> Message {
        message(
            network(),
            &[
                (2, "4761739001010010"),
                (3, "000000"),
                (4, "000000001000"),
                (32, "47617300"),
                (35, "4761739001010010=28122011438044"),
                (41, "TERM0001"),
                (48, "9203987"),
            ],
        )
    }

    /// Where DE `de` (its length prefix) starts in the encoding of `m` (primary bitmap only).
    fn start_of(m: &Message, de: u16) -> usize {
        let mut head = m.clone();
        for d in m.fields().iter().map(|f| f.de).filter(|d| *d >= de).collect::<Vec<_>>() {
            head.remove(d);
        }
        head.encode().expect("encode").len()
    }

    fn excerpt_of(raw: Vec<u8>) -> (Error, Option<Vec<u8>>) {
        let raw = Bytes::from(raw);
        let err = Message::decode(network(), raw.clone()).expect_err("corrupt");
        let shown = error_excerpt(network(), &raw, &err, 16).map(<[u8]>::to_vec);
        (err, shown)
    }

    #[test]
    fn error_excerpt_stops_at_the_end_of_a_harmless_element() {
        let m = frame();
        let mut raw = m.encode().expect("encode").to_vec();
        let de32 = start_of(&m, 32);
        raw[de32 + 4] = b'X'; // "08" "47" then X: a letter in an n element.
        let (err, shown) = excerpt_of(raw);
        assert_eq!((err.location.clone(), err.offset), (Location::Field(32), Some(de32 + 4)));
        assert_eq!(shown.as_deref(), Some(&b"X17300"[..]), "DE 32 from the bad byte, and no byte of DE 35");
    }

    #[test]
    fn error_excerpt_never_shows_sensitive_data_or_unknown_bytes() {
        let m = frame();
        let raw = m.encode().expect("encode").to_vec();
        // A letter in DE 35's track data, a control byte in DE 48's CVV2, DE 35 cut short.
        for (de, at, byte) in [(35, 2 + 20, b'X'), (48, 3 + 5, 0x01)] {
            let mut bad = raw.clone();
            bad[start_of(&m, de) + at] = byte;
            let (err, shown) = excerpt_of(bad);
            assert_eq!((err.location, shown), (Location::Field(de), None));
            assert!(!err.detail.contains("58") && !err.detail.contains("01"), "{}", err.detail);
        }
        let (err, shown) = excerpt_of(raw[..start_of(&m, 35) + 10].to_vec());
        assert_eq!((err.kind, shown), (crate::ErrorKind::Truncated, None));
        // Bytes after the last element, and a message over the cap: content unknown.
        let mut tail = raw.clone();
        tail.extend_from_slice(b"4761739001010010");
        assert_eq!(excerpt_of(tail).1, None);
        let mut big = raw.clone();
        big.resize(network().max_message_len + 1, b'0');
        assert_eq!(excerpt_of(big).1, None);
    }

    #[test]
    fn error_excerpt_shows_a_length_prefix_mti_and_bitmap_but_nothing_after_them() {
        let m = frame();
        let raw = m.encode().expect("encode").to_vec();
        let mut bad = raw.clone();
        bad[4 + 8] = b'X'; // DE 2's first length digit.
        let (err, shown) = excerpt_of(bad);
        assert_eq!((err.location, shown.as_deref()), (Location::Field(2), Some(&b"X6"[..])));
        let mut bad = raw.clone();
        bad[2] = b'X';
        let (err, shown) = excerpt_of(bad);
        assert_eq!((err.location, shown.as_deref()), (Location::Mti, Some(&b"01X0"[..])));
        // An ASCII bitmap with a lowercase digit: the rest of that bitmap, not DE 2 after it.
        let ascii = Spec::builtin("iso87ascii").expect("built-in");
        let m = message(ascii, &[(2, "4761739001010010"), (3, "000000")]);
        let mut raw = m.encode().expect("encode").to_vec();
        raw[4 + 14] = b'a';
        let raw = Bytes::from(raw);
        let err = Message::decode(ascii, raw.clone()).expect_err("bad bitmap");
        assert_eq!(error_excerpt(ascii, &raw, &err, 16), Some(&raw[18..20]));
    }

    // --------------------------------------------------------------------------------------------
    // Random values in the sensitive elements never appear in any logging form

    /// The tests' seeded source (testkit) with the draws these cases use.
    struct Rng(testkit::TestRng);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0.u64()
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn between(&mut self, lo: usize, hi: usize) -> usize {
            lo + self.below(hi + 1 - lo)
        }
        /// `lo..=hi` characters of `set`.
        fn text(&mut self, set: &[u8], lo: usize, hi: usize) -> String {
            let n = self.between(lo, hi);
            (0..n).map(|_| char::from(set[self.below(set.len())])).collect()
        }
        /// `lo..=hi` random bytes in uppercase hex.
        fn hex(&mut self, lo: usize, hi: usize) -> String {
            let n = self.between(lo, hi);
            (0..n).map(|_| format!("{:02X}", self.next() as u8)).collect()
        }
    }

    const DIGITS: &[u8] = b"0123456789";
    const NS: &[u8] = b"0123456789 !#$%&()+,-./:;<=>?@[]^_{|}~";
    /// Printable ASCII without `*`, which is what masking writes.
    const ANS: &[u8] =
        b" !\"#$%&'()+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

    /// A value for DE `de` and the parts of it that must never show (11 characters or more, so
    /// that no other element shows them by chance).
    fn sensitive_value(rng: &mut Rng, spec: &Spec, de: u16) -> Option<(String, Vec<String>)> {
        let fs = spec.field(de)?;
        let max = usize::from(fs.max_len);
        let fixed = fs.length.digits() == 0;
        let z = fs.content == ContentType::Z;
        let value = match spec.sensitivity(de) {
            Sensitivity::None | Sensitivity::Icc => return None,
            Sensitivity::Track => {
                let pan = rng.text(DIGITS, 12, 19);
                let tail = rng.text(if z { DIGITS } else { ANS }, 11, 17);
                let value = if z { format!("{pan}={tail}") } else { format!("B{pan}^{tail}") };
                return Some((value, vec![pan, tail]));
            }
            Sensitivity::Subelements => {
                let (mut value, mut secrets) = (String::new(), Vec::new());
                while value.len() < 60 {
                    let v = rng.text(ANS, 11, 20);
                    value.push_str(&format!("{:02}{:02}{v}", rng.below(100), v.len()));
                    secrets.push(v);
                }
                return Some((value, secrets));
            }
            Sensitivity::Pan | Sensitivity::Full => match fs.content {
                ContentType::B if fixed => rng.hex(max, max),
                ContentType::B => rng.hex(6, max.min(20)),
                ContentType::Hex if fixed => rng.hex(max / 2, max / 2),
                ContentType::Hex => rng.hex(6, (max / 2).min(20)),
                c => {
                    let set = match c {
                        ContentType::N | ContentType::Z => DIGITS,
                        ContentType::Ns => NS,
                        _ => ANS,
                    };
                    if fixed { rng.text(set, max, max) } else { rng.text(set, 11.min(max), max.min(40)) }
                }
            },
        };
        let secrets = if value.len() >= 11 { vec![value.clone()] } else { vec![] };
        Some((value, secrets))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn random_sensitive_values_never_show(seed in any::<u64>(), which in 0usize..3) {
            let spec = specs()[which];
            let mut rng = Rng(testkit::TestRng::from_case(seed));
            let mut m = Message::new(spec.clone(), Mti::AUTHORIZATION_REQUEST);
            let mut secrets = Vec::new();
            let chosen: Vec<u16> = SENSITIVE_ELEMENTS.iter().copied().filter(|_| rng.below(3) != 0).collect();
            for de in chosen {
                let Some((value, hidden)) = sensitive_value(&mut rng, spec, de) else { continue };
                m.set_text(de, &value).map_err(|e| TestCaseError::fail(format!("DE {de} {value:?}: {e}")))?;
                prop_assert_eq!(masked(&m, de).chars().count(), value.chars().count(), "DE {} keeps its length", de);
                if spec.sensitivity(de) == Sensitivity::Full {
                    prop_assert!(masked(&m, de).chars().all(|c| c == '*'), "DE {} masked whole", de);
                }
                secrets.extend(hidden);
            }
            // DE 55: a random PAN and cardholder name inside the ICC data.
            let pan = rng.text(DIGITS, 16, 16);
            let name = rng.text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ /", 11, 26);
            let mut b = TlvBuilder::new();
            b.primitive(Tag::new(0x5A), &hex::decode(&pan).unwrap_or_default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            b.primitive(Tag::new(0x5F20), name.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            m.set_icc_data(&b.finish()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            secrets.push(pan);
            secrets.push(hex::encode_upper(name.as_bytes()));
            for form in forms(&m) {
                for s in &secrets {
                    prop_assert!(!form.contains(s.as_str()), "{} shows {:?} in {}", spec.name, s, form);
                }
            }
        }
    }
}
