//! Where a message's MAC sits on a MAC-authenticated link (docs/network-spec.md §1): the last
//! element — DE 64, or DE 128 when the message uses the secondary bitmap — holds an 8-byte MAC
//! over every wire byte before it (MTI, bitmaps and elements as sent).
//!
//! This module knows the layout only: which element carries the MAC, how many wire bytes it takes
//! in a spec (8 raw bytes, or 16 hex characters in a text spec such as `iso87ascii`), which bytes
//! it covers, and the zero placeholder a message is encoded with before its MAC is known.
//! Computing and checking the MAC is the HSM's job: the switch's links and the issuer simulator's
//! listener both put their HSM between [`prepare`] and [`MacSlot::set`] (signing) or behind
//! [`received`] (verifying), so that the two ends of a link cannot disagree on the bytes covered.

use bytes::Bytes;

use super::field::to_text;
use super::message::Message;
use super::spec::{ContentType, DataEncoding, Spec};
use crate::error::{Error, ErrorKind, Location, Result};

/// The MAC's length: DE 64 and DE 128 hold 8 bytes (ISO 8583:1987 §4.1, attribute `b 64`).
pub const MAC_LEN: usize = 8;

/// How a spec writes the MAC element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacForm {
    /// 8 raw bytes (content `b`): `network`, `iso87binary`.
    Binary,
    /// 16 hex characters (content `hex`, ASCII or EBCDIC): `iso87ascii`.
    Hex,
}

/// The element that carries a message's MAC, and how its spec writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacSlot {
    /// 64 or 128.
    pub de: u16,
    pub form: MacForm,
}

fn slot_err(
    kind: ErrorKind,
    de: u16,
    expected: impl std::fmt::Display,
    found: impl std::fmt::Display,
) -> Error {
    Error::expected(kind, Location::Field(de), None, expected, found)
}

impl MacSlot {
    /// Where `msg`'s MAC goes: DE 128 when any element 65–127 is present (the secondary bitmap is
    /// in use, and DE 128 is then the last element), else DE 64. A MAC already in the message
    /// does not count. An element above 128 would follow the MAC, which must be last: an error.
    pub fn of(msg: &Message) -> Result<MacSlot> {
        let fields = msg.fields().iter().map(|f| f.de).filter(|&de| de != 64 && de != 128);
        let mut de = 64;
        for n in fields {
            if n > 128 {
                return Err(slot_err(
                    ErrorKind::Field,
                    n,
                    "no element after DE 128 in a MACed message (the MAC is the last element)",
                    format!("DE {n}"),
                ));
            }
            if n > 64 {
                de = 128;
            }
        }
        MacSlot::in_spec(msg.spec(), de)
    }

    /// DE `de` of `spec` as the MAC element: fixed length, 8 binary bytes or 16 hex characters.
    pub fn in_spec(spec: &Spec, de: u16) -> Result<MacSlot> {
        let expected = "a fixed 8-byte binary or 16-character hex element (the MAC)";
        if de != 64 && de != 128 {
            return Err(slot_err(ErrorKind::Field, de, "DE 64 or DE 128 (the MAC)", format!("DE {de}")));
        }
        let Some(f) = spec.field(de) else {
            return Err(slot_err(
                ErrorKind::Field,
                de,
                expected,
                format!("nothing: spec {} does not define DE {de}", spec.name),
            ));
        };
        let fixed = f.length.digits() == 0;
        let form = match (f.content, f.encoding) {
            (ContentType::B, DataEncoding::Binary) if fixed && usize::from(f.max_len) == MAC_LEN => {
                MacForm::Binary
            }
            (ContentType::Hex, DataEncoding::Ascii | DataEncoding::Ebcdic)
                if fixed && usize::from(f.max_len) == 2 * MAC_LEN =>
            {
                MacForm::Hex
            }
            _ => {
                let len = if fixed { "fixed" } else { "variable" };
                return Err(slot_err(
                    ErrorKind::Field,
                    de,
                    expected,
                    format!(
                        "a {len} element of content {} and {} units in spec {}",
                        f.content.name(),
                        f.max_len,
                        spec.name
                    ),
                ));
            }
        };
        Ok(MacSlot { de, form })
    }

    /// Bytes the MAC element takes on the wire: 8, or 16 for hex (no length prefix: it is fixed).
    pub fn wire_len(self) -> usize {
        match self.form {
            MacForm::Binary => MAC_LEN,
            MacForm::Hex => 2 * MAC_LEN,
        }
    }

    /// Puts `mac` (8 bytes) in this element of `msg`, in the form its spec writes.
    pub fn set(self, msg: &mut Message, mac: &[u8]) -> Result<()> {
        if mac.len() != MAC_LEN {
            return Err(slot_err(
                ErrorKind::Length,
                self.de,
                format!("a {MAC_LEN}-byte MAC"),
                format!("{} bytes", mac.len()),
            ));
        }
        match self.form {
            MacForm::Binary => msg.set_bytes(self.de, Bytes::copy_from_slice(mac)),
            MacForm::Hex => msg.set_text(self.de, &hex::encode_upper(mac)),
        }
    }

    /// Puts the zero placeholder in this element of `msg`: the MAC's room, before it is known.
    pub fn set_placeholder(self, msg: &mut Message) -> Result<()> {
        self.set(msg, &[0u8; MAC_LEN])
    }
}

/// A message readied for its MAC by [`prepare`]: what the MAC covers, and where it goes.
#[derive(Debug, Clone)]
pub struct Unsigned {
    slot: MacSlot,
    encoded: Bytes,
}

impl Unsigned {
    pub fn slot(&self) -> MacSlot {
        self.slot
    }

    /// The bytes the MAC is computed over: the encoded message up to its MAC element.
    pub fn covered(&self) -> &[u8] {
        // `prepare` encoded the placeholder last: the encoding is at least its length.
        &self.encoded[..self.encoded.len() - self.slot.wire_len()]
    }

    /// Puts `mac` in `msg` (as [`MacSlot::set`]) and returns the signed message as it goes on the
    /// wire: the encoding [`prepare`] made, its placeholder overwritten by the MAC element — the
    /// bytes `msg.encode()` would now give, without encoding the message a second time.
    pub fn signed(self, msg: &mut Message, mac: &[u8]) -> Result<Bytes> {
        let Unsigned { slot, encoded } = self;
        slot.set(msg, mac)?;
        let Some(element) = msg.field(slot.de) else {
            return Err(slot_err(ErrorKind::Field, slot.de, "the MAC just set", "no element"));
        };
        // A fixed-length element: its wire form is its data, and it is the encoding's last.
        if element.data.len() != slot.wire_len() {
            return Err(slot_err(
                ErrorKind::Length,
                slot.de,
                format!("{} wire bytes", slot.wire_len()),
                format!("{} bytes", element.data.len()),
            ));
        }
        let mut wire = bytes::BytesMut::from(encoded);
        let tail = wire.len() - slot.wire_len();
        wire[tail..].copy_from_slice(element.data);
        Ok(wire.freeze())
    }
}

/// Readies `msg` for signing: any MAC it carries (DE 64, DE 128) is removed, a zero placeholder
/// goes in its [`MacSlot`] and the message is encoded, so that the bytes covered are exactly those
/// that will be sent before the MAC. Then the MAC of [`Unsigned::covered`] goes in with
/// [`MacSlot::set`]; the bytes before it do not change.
pub fn prepare(msg: &mut Message) -> Result<Unsigned> {
    msg.remove(64);
    msg.remove(128);
    let slot = MacSlot::of(msg)?;
    slot.set_placeholder(msg)?;
    let encoded = msg.encode()?;
    Ok(Unsigned { slot, encoded })
}

/// The MAC a received message carries, and the bytes it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<'a> {
    pub slot: MacSlot,
    /// The message as received up to its MAC element.
    pub covered: &'a [u8],
    pub mac: [u8; MAC_LEN],
}

/// The MAC of a received message: `raw` as it came off the wire and `msg` decoded from it. An
/// error when the last element is not DE 64 or DE 128, when the spec cannot carry a MAC there,
/// when `raw` does not end with that element (they are not the same message), or when a hex MAC
/// is not hex. Whether the MAC is right is for the HSM to say.
pub fn received<'a>(raw: &'a [u8], msg: &Message) -> Result<Received<'a>> {
    let Some(last) = msg.fields().last() else {
        return Err(Error::expected(
            ErrorKind::Field,
            Location::Message,
            None,
            "a MAC (DE 64 or DE 128) as the last element",
            "a message without elements",
        ));
    };
    if last.de != 64 && last.de != 128 {
        return Err(Error::expected(
            ErrorKind::Field,
            Location::Message,
            None,
            "a MAC (DE 64 or DE 128) as the last element",
            format!("DE {} last", last.de),
        ));
    }
    let slot = MacSlot::in_spec(msg.spec(), last.de)?;
    let n = slot.wire_len();
    if last.data.len() != n || !raw.ends_with(last.data) {
        return Err(Error::expected(
            ErrorKind::Field,
            Location::Field(last.de),
            None,
            format!("the message as received, ending with its {n}-byte MAC element"),
            "bytes that are not the message decoded",
        ));
    }
    let mut mac = [0u8; MAC_LEN];
    match slot.form {
        MacForm::Binary => mac.copy_from_slice(last.data),
        MacForm::Hex => {
            let text = msg.spec().field(last.de).map(|f| to_text(f, last)).unwrap_or_default();
            hex::decode_to_slice(text.as_bytes(), &mut mac)
                .map_err(|_| slot_err(ErrorKind::Content, last.de, "16 hex digits", "a non-hex MAC"))?;
        }
    }
    Ok(Received { slot, covered: &raw[..raw.len() - n], mac })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::iso8583::{FieldSpec, LengthKind, Mti};

    fn spec(name: &str) -> Arc<Spec> {
        Spec::builtin(name).expect("built-in spec").clone()
    }

    fn request(spec: &Arc<Spec>) -> Message {
        let mut m = Message::new(spec.clone(), Mti::AUTHORIZATION_REQUEST);
        for (de, v) in [(3u16, "000000"), (4, "000000001000"), (11, "000123"), (41, "TERM0001")] {
            m.set_text(de, v).expect("set");
        }
        m
    }

    /// A stand-in MAC function: anything the covered bytes determine.
    fn fake_mac(covered: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = [0u8; MAC_LEN];
        for (i, b) in covered.iter().enumerate() {
            mac[i % MAC_LEN] = mac[i % MAC_LEN].wrapping_mul(31).wrapping_add(*b);
        }
        mac
    }

    fn sign(m: &mut Message) -> Unsigned {
        let u = prepare(m).expect("prepare");
        u.slot().set(m, &fake_mac(u.covered())).expect("set");
        u
    }

    /// The signed bytes [`Unsigned::signed`] gives are the message with its MAC encoded anew,
    /// byte for byte, in a binary and a text spec, with DE 64 and with DE 128; and the message
    /// holds the MAC too.
    #[test]
    fn signed_bytes_are_the_signed_message_encoded() {
        for name in ["network", "iso87binary", "iso87ascii"] {
            let s = spec(name);
            for secondary in [false, true] {
                let mut m = request(&s);
                if secondary {
                    m.set_text(70, "301").expect("DE 70");
                }
                m.set_bytes(64, Bytes::from_static(&[0xEE; MAC_LEN])).ok();
                let u = prepare(&mut m).expect("prepare");
                let mac = fake_mac(u.covered());
                let covered = u.covered().to_vec();
                let wire = u.signed(&mut m, &mac).expect("signed");
                assert_eq!(wire, m.encode().expect("encode"), "{name}, secondary bitmap {secondary}");
                assert!(wire.starts_with(&covered), "{name}: the bytes before the MAC unchanged");
                let r = received(&wire, &m).expect("a MAC last");
                assert_eq!((r.mac, r.covered), (mac, &covered[..]), "{name}");
            }
        }
    }

    #[test]
    fn de_64_without_the_secondary_bitmap_de_128_with_it() {
        let s = spec("network");
        let m = request(&s);
        assert_eq!(MacSlot::of(&m).expect("slot"), MacSlot { de: 64, form: MacForm::Binary });
        let mut m = request(&s);
        m.set_text(70, "301").expect("DE 70");
        assert_eq!(MacSlot::of(&m).expect("slot").de, 128);
        // A MAC already there does not move the slot.
        let mut m = request(&s);
        m.set_bytes(128, vec![1u8; 8]).expect("DE 128");
        assert_eq!(MacSlot::of(&m).expect("slot").de, 64);
    }

    #[test]
    fn signing_covers_every_byte_before_the_mac_and_replaces_an_old_one() {
        let s = spec("network");
        let mut m = request(&s);
        m.set_bytes(64, vec![0xEE; 8]).expect("an old DE 64");
        m.set_text(70, "301").expect("DE 70");
        let u = sign(&mut m);
        assert_eq!(u.slot().de, 128);
        assert!(!m.contains(64), "the old MAC is gone");
        let wire = m.encode().expect("encode");
        assert_eq!(wire.len(), u.covered().len() + MAC_LEN);
        assert_eq!(&wire[..u.covered().len()], u.covered(), "setting the MAC changes nothing before it");
        assert_eq!(&wire[u.covered().len()..], &fake_mac(u.covered()));
        // And the receiving end reads the same back.
        let back = Message::decode(&s, wire.clone()).expect("decode");
        let r = received(&wire, &back).expect("a MAC");
        assert_eq!((r.slot.de, r.covered, r.mac), (128, u.covered(), fake_mac(u.covered())));
    }

    #[test]
    fn a_text_spec_carries_the_mac_as_16_hex_characters() {
        let s = spec("iso87ascii");
        let mut m = request(&s);
        let u = sign(&mut m);
        assert_eq!(u.slot(), MacSlot { de: 64, form: MacForm::Hex });
        assert_eq!(u.slot().wire_len(), 16);
        let mac = fake_mac(u.covered());
        assert_eq!(m.text(64).as_deref(), Some(hex::encode_upper(mac).as_str()));
        let wire = m.encode().expect("encode");
        let back = Message::decode(&s, wire.clone()).expect("decode");
        let r = received(&wire, &back).expect("a MAC");
        assert_eq!((r.covered, r.mac), (&wire[..wire.len() - 16], mac));
    }

    #[test]
    fn a_received_message_without_a_mac_last_is_refused() {
        let s = spec("network");
        let m = request(&s);
        let wire = m.encode().expect("encode");
        let e = received(&wire, &m).expect_err("no MAC");
        assert_eq!(e.kind, ErrorKind::Field);
        assert!(e.to_string().contains("DE 41 last"), "{e}");
        let empty = Message::new(s.clone(), Mti::AUTHORIZATION_REQUEST);
        assert!(received(b"0100", &empty).is_err());
    }

    #[test]
    fn raw_bytes_that_are_not_the_message_are_refused() {
        let s = spec("network");
        let mut m = request(&s);
        sign(&mut m);
        let wire = m.encode().expect("encode");
        assert!(received(&wire[..wire.len() - 1], &m).is_err(), "cut short");
        assert!(received(&wire[..4], &m).is_err(), "shorter than the MAC");
        let mut other = wire.to_vec();
        other[wire.len() - 1] ^= 1;
        assert!(received(&other, &m).is_err(), "another MAC than the message's");
    }

    #[test]
    fn a_mac_element_that_is_not_hex_gives_no_mac() {
        let s = spec("iso87ascii");
        let mut m = request(&s);
        m.set_text(64, "0123456789ABCDEZ").expect_err("the spec refuses it on set");
        // The decoder refuses it too; a spec that allows any text in DE 64 gets no MAC out of it.
        let lenient =
            Arc::new((*s).clone().with_field(
                64,
                FieldSpec { content: ContentType::Ans, ..s.field(64).expect("DE 64").clone() },
            ));
        let mut m = request(&lenient);
        m.set_text(64, "0123456789ABCDEZ").expect("any text");
        let wire = m.encode().expect("encode");
        let back = Message::decode(&lenient, wire.clone()).expect("decode");
        let e = received(&wire, &back).expect_err("not a MAC element");
        assert!(e.to_string().contains("DE 64"), "{e}");
    }

    #[test]
    fn a_spec_that_cannot_carry_a_mac_is_named() {
        let s = spec("network");
        let bad = Arc::new(
            (*s).clone()
                .with_field(64, FieldSpec { length: LengthKind::LL, ..s.field(64).expect("DE 64").clone() }),
        );
        let mut m = request(&bad);
        let e = prepare(&mut m).expect_err("variable DE 64");
        assert_eq!(e.location, Location::Field(64));
        assert!(e.to_string().contains("variable element"), "{e}");
        assert!(MacSlot::in_spec(&s, 63).is_err(), "only DE 64 and DE 128 carry MACs");
    }

    #[test]
    fn an_element_after_de_128_cannot_follow_the_mac() {
        let s = spec("network");
        let wide = Arc::new((*s).clone().with_field(
            130,
            FieldSpec {
                name: "beyond".into(),
                length: LengthKind::Fixed,
                length_encoding: crate::iso8583::LengthEncoding::Ascii,
                content: ContentType::N,
                encoding: DataEncoding::Ascii,
                max_len: 2,
                mask: None,
            },
        ));
        let mut m = request(&wide);
        m.set_text(130, "01").expect("DE 130");
        let e = prepare(&mut m).expect_err("DE 130 after the MAC");
        assert_eq!(e.location, Location::Field(130));
    }

    #[test]
    fn a_mac_of_the_wrong_length_is_refused() {
        let s = spec("network");
        let mut m = request(&s);
        let slot = MacSlot::of(&m).expect("slot");
        let e = slot.set(&mut m, &[0u8; 4]).expect_err("4 bytes");
        assert_eq!(e.kind, ErrorKind::Length);
        assert!(!m.contains(64));
    }
}
