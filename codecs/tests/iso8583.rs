//! ISO 8583 codec: the sample message, every kind of refusal (with the element and offset it
//! names), masking in every logging form, custom specs from TOML and JSON (BCD, EBCDIC, binary
//! lengths, tertiary bitmap), and properties over random messages and random bytes.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use codecs::iso8583::{Amount, Message, Mti, Spec, Stan};
use codecs::{ErrorKind, Location};
use proptest::prelude::*;
use serde_json::{Value, json};

fn sample_json() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/0100-contactless.json"))
            .expect("sample");
    serde_json::from_str(&text).expect("JSON")
}

fn ascii() -> &'static Arc<Spec> {
    Spec::builtin("iso87ascii").expect("built-in")
}

fn binary() -> &'static Arc<Spec> {
    Spec::builtin("iso87binary").expect("built-in")
}

fn sample(spec: &Arc<Spec>) -> (Message, Bytes) {
    let m = Message::from_json(spec, &sample_json()).expect("valid");
    let b = m.encode().expect("encode");
    (m, b)
}

#[test]
fn sample_hex_file_is_the_encoding_of_the_sample_json() {
    let hex =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/0100-contactless.hex"))
            .expect("sample hex");
    let (_, bytes) = sample(ascii());
    assert_eq!(hex.trim(), hex::encode_upper(&bytes));
}

/// The journal's masked text is byte for byte the masked JSON value written out (keys in element
/// order), chip data masked the same whether it is carried as bytes (the network spec) or as hex
/// text (iso87ascii).
#[test]
fn masked_json_text_is_the_masked_value_written_out() {
    for spec in [ascii(), binary(), Spec::builtin("network").expect("built-in")] {
        let (m, bytes) = sample(spec);
        let back = Message::decode(spec, bytes).expect("decode");
        let text = back.to_masked_json_string();
        assert_eq!(text, serde_json::to_string(&back.to_masked_json()).expect("JSON"), "{}", spec.name);
        assert_eq!(text, m.to_masked_json_string(), "decoded and built messages give the same text");
    }
}

#[test]
fn decode_is_zero_copy_and_byte_exact() {
    for spec in [ascii(), binary()] {
        let (m, bytes) = sample(spec);
        let back = Message::decode(spec, bytes.clone()).expect("decode");
        assert_eq!(back, m);
        assert_eq!(back.encode().expect("encode"), bytes);
        // Every element's data points into the input buffer.
        let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        for f in back.fields() {
            assert!(range.contains(&(f.data.as_ptr() as usize)) || f.data.is_empty(), "DE {} copied", f.de);
        }
    }
}

#[test]
fn typed_accessors() {
    let (m, _) = sample(binary());
    assert_eq!(m.mti(), Mti::AUTHORIZATION_REQUEST);
    assert_eq!(m.amount().expect("ok"), Some(Amount(10000)));
    assert_eq!(m.stan().expect("ok"), Some(Stan(123)));
    assert_eq!(m.pan_clear().expect("ok").expect("present").expose(), "4761739001010010");
    assert_eq!(m.pos_entry_mode().expect("ok").expect("present").pan_entry(), "07");
    assert_eq!(m.terminal_id().expect("ok").expect("present").0, "TERM0001");
    let icc_bin = m.icc_data().expect("ok").expect("present");
    let (ma, _) = sample(ascii());
    assert_eq!(ma.icc_data().expect("ok").expect("present"), icc_bin, "DE 55 bytes, whatever the carriage");
    assert_eq!(m.response_code().expect("ok"), None);
}

#[test]
fn building_a_response() {
    let (req, _) = sample(ascii());
    let mut rsp = req.clone();
    rsp.set_mti(req.mti().response().expect("request"));
    rsp.remove(35);
    rsp.remove(55);
    rsp.set_response_code(codecs::iso8583::ResponseCode::APPROVED).expect("DE 39");
    let bytes = rsp.encode().expect("encode");
    assert!(bytes.starts_with(b"0110"));
    let back = Message::decode(ascii(), bytes).expect("decode");
    assert_eq!(back.response_code().expect("ok").map(|r| r.as_str().to_string()), Some("00".into()));
    assert!(!back.contains(35) && !back.contains(55));
}

/// Elements read from the input and elements set afterwards mix freely: replacing, removing and
/// re-setting either kind leaves the same values as building the message afresh, and equality
/// compares values, not where they are kept.
#[test]
fn decoded_and_set_elements_mix() {
    for spec in [ascii(), binary()] {
        let (built, bytes) = sample(spec);
        let mut m = Message::decode(spec, bytes.clone()).expect("decode");
        assert_eq!(m, built, "decoded equals built");
        assert_eq!(m.bytes(41).as_deref(), built.field(41).map(|f| f.data), "bytes() is the element's data");
        assert_eq!(m.bytes(39), None);
        // Set over decoded elements, add new ones, remove some of each kind, set again.
        let mut want = built.clone();
        for (de, text) in [(11, "000777"), (39, "00"), (38, "ABC123"), (41, "TERM0002"), (44, "5")] {
            m.set_text(de, text).expect("set");
            want.set_text(de, text).expect("set");
        }
        assert_eq!(m, want);
        for de in [39, 2, 11, 55] {
            assert!(m.remove(de), "DE {de} present");
            assert!(want.remove(de));
            assert!(!m.remove(de), "DE {de} removed once");
            assert_eq!(m, want);
        }
        for (de, text) in [(11, "000888"), (39, "05"), (41, "TERM0003")] {
            m.set_text(de, text).expect("set");
            want.set_text(de, text).expect("set");
        }
        assert_eq!(m, want);
        assert_ne!(m, built);
        let fresh = Message::from_json(spec, &m.to_json()).expect("valid");
        assert_eq!(m, fresh);
        assert_eq!(m.encode().expect("encode"), fresh.encode().expect("encode"));
        assert_eq!(m.text(11).as_deref(), Some("000888"));
        assert_eq!(m.text(38).as_deref(), Some("ABC123"));
        assert_eq!(m.bytes(41).as_deref(), fresh.field(41).map(|f| f.data));
        let des: Vec<u16> = m.fields().iter().map(|f| f.de).collect();
        assert!(des.windows(2).all(|w| w[0] < w[1]), "ascending: {des:?}");
        assert_eq!(m.fields().len(), des.len());
        assert_eq!(m.fields().last().map(|f| f.de), des.last().copied());
        // An answer echoing elements of a decoded request: copied without a copy of the data.
        let req = Message::decode(spec, bytes.clone()).expect("decode");
        let mut rsp = Message::new(spec.clone(), Mti::AUTHORIZATION_RESPONSE);
        for de in [2, 3, 4, 11, 41, 55] {
            rsp.copy_from(&req, de).expect("copy");
            assert_eq!(rsp.field(de), req.field(de));
        }
        let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        assert!(rsp.fields().iter().all(|f| range.contains(&(f.data.as_ptr() as usize))), "copied data");
    }
}

/// A message is moved through every stage of the switch (and returned inside errors): its elements
/// live behind its vectors, not in it.
#[test]
fn a_message_is_small_to_move() {
    assert!(std::mem::size_of::<Message>() <= 80, "{} bytes", std::mem::size_of::<Message>());
}

// ------------------------------------------------------------------------------------------------
// Refusals: which element, which byte, what was expected

fn err_of(spec: &Arc<Spec>, bytes: &[u8]) -> codecs::Error {
    Message::decode_slice(spec, bytes).expect_err("must be refused")
}

#[test]
fn truncated_anywhere_is_refused_with_an_offset() {
    for spec in [ascii(), binary()] {
        let (_, bytes) = sample(spec);
        for cut in 0..bytes.len() {
            let e = err_of(spec, &bytes[..cut]);
            assert!(e.offset.is_some_and(|o| o <= cut), "cut {cut}: {e}");
            assert!(
                matches!(e.kind, ErrorKind::Truncated | ErrorKind::Mti | ErrorKind::Length),
                "cut {cut}: {e}"
            );
        }
    }
}

#[test]
fn non_digit_in_a_numeric_element_names_the_element_and_byte() {
    let (_, bytes) = sample(ascii());
    // MTI 4 + bitmap 16 + DE 2 prefix 2 + PAN 16 = DE 3 at offset 38.
    let mut bad = bytes.to_vec();
    bad[39] = b'X';
    let e = err_of(ascii(), &bad);
    assert_eq!(e.kind, ErrorKind::Content);
    assert_eq!(e.location, Location::Field(3));
    assert_eq!(e.offset, Some(39));
    let text = e.to_string();
    assert!(text.contains("DE 3") && text.contains("39") && text.contains("content n"), "{text}");
}

#[test]
fn bad_pan_characters_are_not_echoed() {
    let (_, bytes) = sample(ascii());
    let mut bad = bytes.to_vec();
    bad[22 + 5] = b'Z'; // inside the PAN
    let e = err_of(ascii(), &bad).to_string();
    assert!(e.contains("DE 2") && !e.contains("5A") && !e.contains("476173"), "{e}");
}

#[test]
fn length_prefix_errors() {
    let (_, bytes) = sample(ascii());
    let mut bad = bytes.to_vec();
    bad[20] = b'A'; // DE 2 LL prefix
    let e = err_of(ascii(), &bad);
    assert_eq!((e.kind, e.location.clone(), e.offset), (ErrorKind::Length, Location::Field(2), Some(20)));
    let mut bad = bytes.to_vec();
    bad[20..22].copy_from_slice(b"20"); // PAN longer than 19
    let e = err_of(ascii(), &bad);
    assert_eq!((e.kind, e.location.clone()), (ErrorKind::Length, Location::Field(2)));
    assert!(e.to_string().contains("at most 19"), "{e}");
}

#[test]
fn bitmap_and_structure_errors() {
    // Lowercase hex in an ASCII bitmap.
    let e = err_of(ascii(), b"0800a220000000000000");
    assert_eq!((e.kind, e.offset), (ErrorKind::Bitmap, Some(4)));
    // Bit 1 set but an empty secondary bitmap.
    let e = err_of(ascii(), b"08008000000000000000000000000000000000");
    assert_eq!(e.location, Location::Bitmap(2));
    // Bytes after the last element.
    let e = err_of(ascii(), b"08000000000000000000XYZ");
    assert_eq!((e.kind, e.offset), (ErrorKind::TrailingData, Some(20)));
    // A bad MTI.
    let e = err_of(ascii(), b"08X00000000000000000");
    assert_eq!(e.location, Location::Mti);
    // Larger than the cap: refused before any parsing.
    let big = vec![b'0'; ascii().max_message_len + 1];
    assert_eq!(err_of(ascii(), &big).kind, ErrorKind::TooLarge);
}

#[test]
fn json_form_errors_name_the_path() {
    let e = Message::from_json(ascii(), &json!({"mti": "0100", "fields": {"4": "12"}})).expect_err("short");
    assert_eq!(e.location, Location::Field(4));
    assert!(e.to_string().contains("exactly 12"), "{e}");
    let e = Message::from_json(ascii(), &json!({"mti": "0100", "fields": {"1": "00"}})).expect_err("bitmap");
    assert!(e.to_string().contains("$.fields.1"), "{e}");
    let e = Message::from_json(ascii(), &json!({"mti": 100})).expect_err("mti");
    assert!(e.to_string().contains("$.mti"), "{e}");
    let e = Message::from_json(binary(), &json!({"mti": "0100", "fields": {"52": "XYZ"}})).expect_err("hex");
    assert_eq!(e.location, Location::Field(52));
    let e = Message::from_json(ascii(), &json!({"mti": "0100", "fields": {"3": 0}})).expect_err("type");
    assert!(e.to_string().contains("$.fields.3"), "{e}");
    let e = Message::from_json(ascii(), &json!({"mti": "0100", "extra": 1})).expect_err("key");
    assert!(e.to_string().contains("$.extra"), "{e}");
}

// ------------------------------------------------------------------------------------------------
// Masking

const CLEAR: &[&str] = &["4761739001010010", "7390010100", "2812", "28122011143804400000"];

fn assert_masked(what: &str, text: &str) {
    for c in CLEAR {
        assert!(!text.contains(c), "{what} leaks {c}: {text}");
    }
}

#[test]
fn every_logging_form_masks_pan_track_expiry_and_icc_pan() {
    // Put the PAN and track 2 equivalent inside DE 55 as well (tags 5A and 57).
    let mut j = sample_json();
    let icc = format!(
        "{}5A0847617390010100105F24032812319F2608C8B507136D921FD057134761739001010010D28122011143804400000F",
        ""
    );
    j["fields"]["55"] = Value::String(icc);
    j["fields"]["52"] = Value::String("0123456789ABCDEF".into());
    for spec in [ascii(), binary()] {
        let m = Message::from_json(spec, &j).expect("valid");
        assert_masked("Debug", &format!("{m:?}"));
        assert_masked("Display", &format!("{m}"));
        assert_masked("masked JSON", &m.to_masked_json().to_string());
        assert!(!format!("{m:?}").contains("0123456789ABCDEF"), "PIN block in Debug");
        assert!(m.to_masked_json()["fields"]["2"].as_str().is_some_and(|p| p == "476173******0010"));
        // The clear form is there for who asks explicitly.
        assert!(m.to_json().to_string().contains("4761739001010010"));
        for f in m.fields() {
            assert_masked("Field Debug", &format!("{f:?}"));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Custom specs

const CUSTOM_TOML: &str = r#"
name = "host-bcd"
mti = "bcd"
bitmap = "binary"
tertiary_bitmap = true
max_message_len = 4096

[fields.2]
name = "PAN"
length = "LL"
length_encoding = "bcd"
content = "n"
encoding = "bcd-right"
max_len = 19

[fields.3]
length = "FIXED"
content = "n"
encoding = "bcd-left"
max_len = 6

[fields.35]
length = "LL"
length_encoding = "binary"
content = "z"
encoding = "bcd-right"
max_len = 37

[fields.41]
length = "FIXED"
content = "ans"
encoding = "ebcdic"
max_len = 8

[fields.48]
length = "LLL"
length_encoding = "ebcdic"
content = "ans"
encoding = "ebcdic"
max_len = 999

[fields.55]
length = "LLLL"
length_encoding = "binary"
content = "b"
encoding = "binary"
max_len = 1024

[fields.70]
length = "FIXED"
content = "n"
encoding = "bcd-left"
max_len = 3

[fields.130]
name = "Wallet data"
length = "LLL"
length_encoding = "ascii"
content = "ans"
encoding = "ascii"
max_len = 200
"#;

#[test]
fn custom_toml_spec_with_bcd_ebcdic_binary_lengths_and_tertiary_bitmap() {
    let spec = Arc::new(Spec::from_toml(CUSTOM_TOML).expect("valid spec"));
    let j = json!({"mti": "0200", "fields": {
        "2": "4761739001010010123", "3": "001000", "35": "4761739001010010D2812201",
        "41": "TERM 01!", "48": "Hello, host", "55": "9F2701809F3602001E", "70": "301", "130": "wallet:1"}});
    let m = Message::from_json(&spec, &j).expect("valid message");
    let bytes = m.encode().expect("encode");
    // MTI 0200 in BCD, then a binary primary bitmap with bit 1 set.
    assert_eq!(&bytes[..2], &[0x02, 0x00]);
    assert_eq!(bytes[2] & 0x80, 0x80);
    // DE 2: BCD length 0x19, 19 digits right-padded with F.
    assert_eq!(&bytes[2 + 24..2 + 24 + 11], &hex::decode("194761739001010010123F").expect("hex")[..]);
    let back = Message::decode(&spec, bytes.clone()).expect("decode");
    assert_eq!(back.to_json(), j);
    assert_eq!(back.encode().expect("re-encode"), bytes);
    // Packed track 2 carries the separator as the nibble D, and so does its text form.
    // Same spec in JSON.
    let v: toml::Value = toml::from_str(CUSTOM_TOML).expect("toml");
    let spec_json = serde_json::to_string(&v).expect("to json");
    let spec2 = Arc::new(Spec::from_json(&spec_json).expect("json spec"));
    assert_eq!(*spec2, *spec);
}

#[test]
fn invalid_specs_list_every_problem() {
    let bad = r#"
name = "broken"
mti = "ascii"
bitmap = "hex-ascii"
[fields.1]
length = "FIXED"
content = "n"
encoding = "ascii"
max_len = 8
[fields.2]
length = "LL"
content = "n"
encoding = "ascii"
max_len = 150
[fields.52]
length = "FIXED"
content = "b"
encoding = "ascii"
max_len = 8
[fields.200]
length = "FIXED"
content = "n"
encoding = "ascii"
max_len = 1
"#;
    let e = Spec::from_toml(bad).expect_err("invalid").to_string();
    for needle in ["\"1\"", "\"200\"", "DE 2", "DE 52"] {
        assert!(e.contains(needle), "{needle} missing from: {e}");
    }
    assert!(Spec::from_toml("name = 1").is_err());
    assert!(Spec::from_json("{").is_err());
}

// ------------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_messages_round_trip_byte_exact(seed in any::<u64>(), which in 0usize..3) {
        let spec = [ascii(), binary(), Spec::builtin("network").expect("built-in")][which];
        let j = common::message(spec, seed, 40);
        let m = Message::from_json(spec, &j).expect("generated message is valid");
        let bytes = m.encode().expect("encode");
        let back = Message::decode(spec, bytes.clone()).expect("decode");
        prop_assert_eq!(back.to_json(), j);
        prop_assert_eq!(back.encode().expect("re-encode"), bytes);
        // The journal's direct masked JSON text is the same object as the masked JSON value.
        let text: Value = serde_json::from_str(&back.to_masked_json_string()).expect("valid JSON");
        prop_assert_eq!(text, back.to_masked_json());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), which in 0usize..2) {
        let spec = [ascii(), binary()][which];
        if let Ok(m) = Message::decode_slice(spec, &bytes) {
            prop_assert_eq!(&m.encode().expect("re-encode")[..], &bytes[..]);
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic_and_reencode_exactly(
        seed in any::<u64>(), which in 0usize..2, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)
    ) {
        let spec = [ascii(), binary()][which];
        let j = common::message(spec, seed, 25);
        let mut bytes = Message::from_json(spec, &j).expect("valid").encode().expect("encode").to_vec();
        for (at, v) in flips {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        match Message::decode_slice(spec, &bytes) {
            Ok(m) => prop_assert_eq!(&m.encode().expect("re-encode")[..], &bytes[..]),
            Err(e) => prop_assert!(e.offset.is_none_or(|o| o <= bytes.len())),
        }
    }
}

#[test]
fn content_lookup_tables_agree_with_the_content_rules() {
    use codecs::iso8583::ContentType::*;
    for c in [N, A, An, Ans, Ns, Anp, Z, B, XN, Hex] {
        for b in 0..=255u8 {
            assert_eq!(c.all_allowed(&[b]), c.allows(b, 1), "{} byte {b:02X}", c.name());
            // The long form (the vectorized predicate) agrees too, wherever the byte sits.
            for at in [0, 17, 39] {
                let mut long = vec![if c.allows(b'1', 1) { b'1' } else { b'A' }; 40];
                long[at] = b;
                assert_eq!(c.all_allowed(&long), c.allows(b, 1), "{} byte {b:02X} at {at} of 40", c.name());
            }
            // Every short length, the byte at every place (numeric elements go a word at a time).
            for len in 1..=24 {
                for at in 0..len {
                    let mut short = vec![if c.allows(b'1', 1) { b'1' } else { b'A' }; len];
                    short[at] = b;
                    let want = c.allows(b, 1);
                    assert_eq!(c.all_allowed(&short), want, "{} byte {b:02X} at {at} of {len}", c.name());
                }
            }
        }
    }
}

#[test]
fn salvage_keeps_what_was_read_before_the_error() {
    let (_, bytes) = sample(ascii());
    let text = std::str::from_utf8(&bytes).expect("ascii");
    // Break DE 49 (after DE 11 and DE 41): a letter in an an3 currency is fine, a control byte is not.
    let at = text.find("978").expect("DE 49");
    let mut bad = bytes.to_vec();
    bad[at] = 0x01;
    assert!(Message::decode_slice(ascii(), &bad).is_err());
    let m = Message::salvage(ascii(), Bytes::from(bad)).expect("MTI readable");
    assert_eq!(m.mti(), Mti::AUTHORIZATION_REQUEST);
    assert_eq!(m.stan().expect("ok"), Some(Stan(123)));
    assert_eq!(m.terminal_id().expect("ok").expect("DE 41").0, "TERM0001");
    assert!(!m.contains(49));
    assert!(Message::salvage(ascii(), Bytes::from_static(b"01")).is_none());
}
