//! EMV BER-TLV: published examples, property tests (random trees round-trip, random bytes never
//! panic, masking never leaks), and pyemv 1.5.0 as an independent oracle.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use codecs::ErrorKind;
use codecs::tlv::dictionary::Sensitivity;
use codecs::tlv::{
    self, DecodeOptions, Node, Tag, TlvBuilder, TlvIter, build_dol_data, decode, decode_lenient,
    decode_strict, encode_nodes, mask_sensitive, parse_dol,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn hx(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn reencode(nodes: &[Node<'_>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_nodes(nodes, &mut out).unwrap();
    out.to_vec()
}

// ------------------------------------------------------------------------------------------------
// Published and real-looking examples

#[test]
fn pyemv_docs_example() {
    // pyemv 1.5.0 `pyemv.tlv` module documentation: 9C, a constructed E0 holding 5F2A, empty 9F02.
    let b = hx("9C0101E0055F2A0202089F0200");
    let nodes = decode_lenient(&b).unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[1].tag(), Tag::new(0xE0));
    assert_eq!(nodes[1].children[0].tag(), Tag::new(0x5F2A));
    assert_eq!(nodes[1].children[0].value(), &[0x02, 0x08]);
    assert_eq!(nodes[2].value(), &[] as &[u8]);
    assert_eq!(reencode(&nodes), b);
}

#[test]
fn pse_fci() {
    // SELECT '1PAY.SYS.DDF01' response (EMV Book 1 §11.3.4, Table 43 layout): 6F › 84, A5 › 88, 5F2D.
    let b = hx("6F1A840E315041592E5359532E4444463031A5088801025F2D02656E");
    let nodes = decode_strict(&b).unwrap();
    let fci = &nodes[0];
    assert_eq!(fci.tag(), Tag::FCI_TEMPLATE);
    assert_eq!(fci.children[0].value(), b"1PAY.SYS.DDF01");
    assert_eq!(fci.children[1].children[0].tag(), Tag::new(0x88));
    assert_eq!(tlv::find(&nodes, Tag::new(0x5F2D)).unwrap().value(), b"en");
    assert_eq!(reencode(&nodes), b);
}

#[test]
fn gpo_response_format2() {
    // GET PROCESSING OPTIONS response, format 2 (EMV Book 3 §6.5.8.4): 77 › AIP 82, AFL 94 (4 entries).
    let b = hx("7716 8202 1980 9410 08010100 10010301 18010200 20010200");
    let nodes = decode_strict(&b).unwrap();
    assert_eq!(nodes[0].children.len(), 2);
    assert_eq!(tlv::find(&nodes, Tag::AIP).unwrap().value(), &[0x19, 0x80]);
    assert_eq!(tlv::find(&nodes, Tag::new(0x94)).unwrap().value().len(), 16);
}

#[test]
fn generate_ac_format1_and_format2() {
    // GENERATE AC response format 1 (EMV Book 3 §6.5.5.4): 80 ‖ CID ‖ ATC ‖ AC ‖ IAD, primitive.
    let f1 = hx("8012 80 001E C8B507136D921FD0 06010A03A00000");
    let nodes = decode_strict(&f1).unwrap();
    assert_eq!(nodes[0].tag(), Tag::RESPONSE_TEMPLATE_FORMAT_1);
    assert_eq!(nodes[0].value().len(), 18);
    assert!(nodes[0].children.is_empty());
    // Format 2 with a Visa CVN 10 style IAD.
    let f2 = hx("771E 9F2701 80 9F3602 001E 9F2608 C8B507136D921FD0 9F1007 06010A03A00000");
    let nodes = decode_strict(&f2).unwrap();
    let prims = tlv::primitives(&nodes);
    assert_eq!(prims.iter().map(|t| t.tag.to_string()).collect::<Vec<_>>(), ["9F27", "9F36", "9F26", "9F10"]);
    assert_eq!(prims[2].offset, 11);
    assert_eq!(prims[2].value_offset(), 14);
    assert_eq!(reencode(&nodes), f2);
}

#[test]
fn de55_arqc_request() {
    // A typical contactless DE 55 (test PAN 4761 7390 0101 0010 from the Visa test-card set).
    let b = hx(concat!(
        "9F2608C8B507136D921FD0",
        "9F2701809F100706010A03A000009F3704A1B2C3D4",
        "9F3602001E950500000000009A032511259C01005F2A0209789F02060000000100009F0306000000000000",
        "820219808407A00000000310109F1A0209785F34010157134761739001010010D25122011234567890123F"
    ));
    let nodes = decode_strict(&b).unwrap();
    assert_eq!(nodes.len(), 16);
    assert_eq!(reencode(&nodes), b);
    let masked = mask_sensitive(&b);
    let m = decode_lenient(&masked).unwrap();
    let t2 = tlv::find(&m, Tag::TRACK2_EQUIVALENT).unwrap();
    assert_eq!(hex::encode_upper(t2.value()), "476173FFFFFF0010DFFFFFFFFFFFFFFFFFFFFF");
    // Everything else unchanged.
    assert_eq!(masked[..masked.len() - 19], b[..b.len() - 19]);
}

#[test]
fn value_bytes_are_zero_copy() {
    let whole = Bytes::from(hx("9F2608C8B507136D921FD0"));
    let nodes = decode_lenient(&whole).unwrap();
    let v = nodes[0].tlv.value_bytes(&whole).unwrap();
    assert_eq!(v.as_ptr(), whole[3..].as_ptr());
    assert_eq!(nodes[0].tlv.raw(&whole).unwrap(), &whole[..]);
}

#[test]
fn long_form_lengths_decode() {
    for n in [0usize, 1, 127, 128, 255, 256, 1000, 70_000] {
        let mut b = TlvBuilder::new();
        b.primitive(Tag::new(0xDF01), &vec![0x5Au8; n]).unwrap();
        let enc = b.finish();
        let nodes = decode_lenient(&enc).unwrap();
        assert_eq!(nodes[0].value().len(), n);
        assert_eq!(reencode(&nodes), enc.to_vec());
    }
}

#[test]
fn strict_rules() {
    // Non-minimal length: 81 05 for 5 bytes.
    let e = decode_strict(&hx("9581050000000000")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Tlv);
    assert!(e.detail.contains("shortest length form"), "{e}");
    assert!(decode_lenient(&hx("9581050000000000")).is_ok());
    // Unknown tag.
    let e = decode_strict(&hx("9F990100")).unwrap_err();
    assert!(e.detail.contains("unknown tag 9F99"), "{e}");
    // Length out of dictionary range: 9F26 must be 8 bytes.
    let e = decode_strict(&hx("9F260401020304")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tag 9F26 at byte 0: expected Application Cryptogram of 8 to 8 bytes, found 4 bytes"
    );
    // Trailing padding.
    assert!(decode_strict(&hx("9F3602001E00")).is_err());
}

#[test]
fn errors_inside_templates_have_absolute_offsets() {
    // 70 07 claims 7 bytes but only 6 follow.
    let e = decode_lenient(&hx("7007 9F3602001E 5A")).unwrap_err();
    assert_eq!(e.location, codecs::Location::Tag(0x70));
    // Inside a complete template: 5A without a length, at byte 7.
    let e = decode_lenient(&hx("7006 9F3602001E 5A")).unwrap_err();
    assert_eq!(e.location, codecs::Location::Tag(0x5A));
    assert_eq!(e.offset, Some(8), "{e}");
}

#[test]
fn iterator_stops_after_error() {
    let b = hx("9F3602001E 5A80 9F370400000000");
    let items: Vec<_> = TlvIter::new(&b, tlv::Mode::Lenient).collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(items[1].is_err());
}

#[test]
fn dol_from_decoded_terminal_data() {
    // Build CDOL1 data for a Visa-style CDOL1 from a decoded terminal data set.
    let terminal = hx(concat!(
        "9F0206000000010000",
        "9F0306000000000000",
        "9F1A020978",
        "950500000000005F2A0209789A032511259C01009F3704A1B2C3D4"
    ));
    let nodes = decode_lenient(&terminal).unwrap();
    let values: HashMap<Tag, &[u8]> = tlv::primitives(&nodes).iter().map(|t| (t.tag, t.value)).collect();
    let cdol1 = parse_dol(&hx("9F02069F03069F1A0295055F2A029A039C019F3704")).unwrap();
    let data = build_dol_data(&cdol1, |t| values.get(&t).copied());
    assert_eq!(
        hex::encode_upper(&data),
        "0000000100000000000000000978000000000009782511250 0A1B2C3D4".replace(' ', "")
    );
}

// ------------------------------------------------------------------------------------------------
// Property tests

#[derive(Debug, Clone, PartialEq)]
enum Tree {
    Prim(Tag, Vec<u8>),
    Cons(Tag, Vec<Tree>),
}

/// Well-formed tags with the given constructed bit; first byte never 00 or FF (padding bytes).
fn tag_strategy(constructed: bool, max_mids: usize) -> impl Strategy<Value = Tag> {
    let cbit: u8 = if constructed { 0x20 } else { 0x00 };
    let one = (0u8..4, 0u8..0x1F).prop_filter_map("padding byte", move |(class, num)| {
        let b = (class << 6) | cbit | num;
        (b != 0x00 && b != 0xFF).then(|| Tag::new(u32::from(b)))
    });
    let multi = (0u8..4, prop::collection::vec(0x80u8..=0xFF, 0..=max_mids), 0u8..0x80).prop_filter_map(
        "padding byte",
        move |(class, mids, last)| {
            let first = (class << 6) | cbit | 0x1F;
            if first == 0xFF {
                return None;
            }
            let mut v = u32::from(first);
            for m in mids {
                v = (v << 8) | u32::from(m);
            }
            Some(Tag::new((v << 8) | u32::from(last)))
        },
    );
    prop_oneof![one, multi]
}

fn tree_strategy() -> impl Strategy<Value = Tree> {
    tree_strategy_with(2)
}

/// Trees whose tags have at most `max_mids` bytes between the first and the last tag byte.
fn tree_strategy_with(max_mids: usize) -> impl Strategy<Value = Tree> {
    let leaf = (tag_strategy(false, max_mids), prop::collection::vec(any::<u8>(), 0..300))
        .prop_map(|(t, v)| Tree::Prim(t, v));
    leaf.prop_recursive(4, 40, 6, move |inner| {
        (tag_strategy(true, max_mids), prop::collection::vec(inner, 0..6)).prop_map(|(t, c)| Tree::Cons(t, c))
    })
}

fn build(trees: &[Tree], b: &mut TlvBuilder) -> codecs::Result<()> {
    for t in trees {
        match t {
            Tree::Prim(tag, v) => {
                b.primitive(*tag, v)?;
            }
            Tree::Cons(tag, c) => {
                b.constructed(*tag, |inner| build(c, inner))?;
            }
        }
    }
    Ok(())
}

fn to_tree(nodes: &[Node<'_>]) -> Vec<Tree> {
    nodes
        .iter()
        .map(|n| {
            if n.is_constructed() {
                Tree::Cons(n.tag(), to_tree(&n.children))
            } else {
                Tree::Prim(n.tag(), n.value().to_vec())
            }
        })
        .collect()
}

/// True when a masked sensitive value shows nothing it must not.
fn shows_nothing(tag: Tag, value: &[u8]) -> bool {
    let digit_nibbles = value.iter().flat_map(|b| [b >> 4, b & 0x0F]).filter(|n| *n <= 9).count();
    match tlv::lookup(tag).map(|i| i.sensitivity) {
        None | Some(Sensitivity::None) => true,
        Some(Sensitivity::Pan) | Some(Sensitivity::Track2) => digit_nibbles <= 10,
        Some(Sensitivity::Track1) => {
            value.iter().skip(1).all(|b| b.is_ascii_digit() || *b == b'^' || *b == b'*')
                && value.iter().skip(1).filter(|b| b.is_ascii_digit()).count() <= 10
        }
        Some(Sensitivity::Secret) => value.iter().all(|b| *b == 0xFF) || value.iter().all(|b| *b == b'*'),
    }
}

fn assert_masked(nodes: &[Node<'_>]) {
    for t in tlv::primitives(nodes) {
        assert!(shows_nothing(t.tag, t.value), "tag {} shows {}", t.tag, hex::encode_upper(t.value));
    }
}

const SENSITIVE_TAGS: [u32; 9] = [0x5A, 0x57, 0x56, 0x9F6B, 0x9F1F, 0x9F20, 0x5F20, 0x5F24, 0x99];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_tree_round_trips(trees in prop::collection::vec(tree_strategy(), 0..6)) {
        let mut b = TlvBuilder::new();
        build(&trees, &mut b).unwrap();
        let enc = b.finish();
        let opts = DecodeOptions { max_depth: 8, ..DecodeOptions::lenient() };
        let nodes = decode(&enc, opts).unwrap();
        prop_assert_eq!(to_tree(&nodes), trees);
        prop_assert_eq!(reencode(&nodes), enc.to_vec());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_lenient(&bytes);
        let _ = decode_strict(&bytes);
        let _ = parse_dol(&bytes);
        for item in TlvIter::new(&bytes, tlv::Mode::Lenient) {
            let _ = item;
        }
        let m = mask_sensitive(&bytes);
        prop_assert_eq!(m.len(), bytes.len());
        // A masked buffer always decodes leniently (unparsable parts became FF padding) and
        // shows no clear sensitive value.
        let nodes = decode_lenient(&m).unwrap();
        assert_masked(&nodes);
    }

    #[test]
    fn mask_keeps_structure_and_hides_values(
        trees in prop::collection::vec(tree_strategy(), 0..4),
        sens in prop::collection::vec(
            (0usize..SENSITIVE_TAGS.len(), prop::collection::vec(any::<u8>(), 0..40)), 1..6),
        pan_digits in prop::collection::vec(0u8..10, 12..20),
    ) {
        let mut b = TlvBuilder::new();
        build(&trees, &mut b).unwrap();
        b.constructed(Tag::RECORD_TEMPLATE, |r| {
            for (i, v) in &sens {
                r.primitive(Tag::new(SENSITIVE_TAGS[*i]), v)?;
            }
            // A clean BCD PAN, F-padded.
            let mut nib = pan_digits.clone();
            if nib.len() % 2 == 1 {
                nib.push(0xF);
            }
            let pan: Vec<u8> = nib.chunks(2).map(|c| (c[0] << 4) | c[1]).collect();
            r.primitive(Tag::PAN, &pan)?;
            Ok(())
        }).unwrap();
        let enc = b.finish();
        let masked = mask_sensitive(&enc);
        let before = decode_lenient(&enc).unwrap();
        let after = decode_lenient(&masked).unwrap();
        let shape = |n: &[Node<'_>]| {
            tlv::primitives(n).iter().map(|t| (t.tag, t.offset, t.value.len())).collect::<Vec<_>>()
        };
        prop_assert_eq!(shape(&before), shape(&after));
        assert_masked(&after);
        let pan = tlv::primitives(&after).into_iter().rfind(|t| t.tag == Tag::PAN).unwrap().value;
        let n = pan_digits.len();
        let nibbles: Vec<u8> = pan.iter().flat_map(|b| [b >> 4, b & 0x0F]).collect();
        if n >= 13 {
            prop_assert_eq!(&nibbles[..6], &pan_digits[..6]);
            prop_assert_eq!(&nibbles[n - 4..n], &pan_digits[n - 4..]);
            prop_assert!(nibbles[6..n - 4].iter().all(|&x| x == 0xF));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Independent oracle: pyemv 1.5.0 (`pyemv.tlv.decode` / `encode`)

const PYEMV_SCRIPT: &str = r#"
import sys, json
from pyemv import tlv
cases = json.load(sys.stdin)
out = []
for h in cases:
    data = bytes.fromhex(h)
    try:
        tree = tlv.decode(data, convert=lambda t, v: v.hex().upper())
        raw = tlv.decode(data)
        out.append({"ok": True, "tree": tree, "reencoded": tlv.encode(raw).hex().upper()})
    except Exception as e:
        out.append({"ok": False, "error": type(e).__name__ + ": " + str(e)})
print(json.dumps(out))
"#;

/// Trees with distinct tags at each level (pyemv decodes into dicts).
fn dedup(trees: Vec<Tree>) -> Vec<Tree> {
    let mut seen = std::collections::HashSet::new();
    trees
        .into_iter()
        .filter(|t| {
            seen.insert(match t {
                Tree::Prim(tag, _) | Tree::Cons(tag, _) => *tag,
            })
        })
        .map(|t| match t {
            Tree::Cons(tag, c) => Tree::Cons(tag, dedup(c)),
            p => p,
        })
        .collect()
}

fn ours_as_json(nodes: &[Node<'_>]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for n in nodes {
        let v = if n.is_constructed() {
            ours_as_json(&n.children)
        } else {
            serde_json::Value::String(hex::encode_upper(n.value()))
        };
        m.insert(n.tag().to_string(), v);
    }
    serde_json::Value::Object(m)
}

fn short_tags(t: &[Tree]) -> bool {
    t.iter().all(|t| match t {
        Tree::Prim(tag, _) => tag.len() <= 2,
        Tree::Cons(tag, c) => tag.len() <= 2 && short_tags(c),
    })
}

#[test]
fn pyemv_oracle_agrees_on_random_trees() {
    let oracle = testkit::oracle_or_skip!(&["pyemv==1.5.0"]);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    // 1- and 2-byte tags: EMV's own range.
    let strat = prop::collection::vec(tree_strategy_with(0), 1..5);
    let mut cases = Vec::new();
    for _ in 0..400 {
        let trees = dedup(strat.new_tree(&mut runner).unwrap().current());
        assert!(short_tags(&trees));
        let mut b = TlvBuilder::new();
        build(&trees, &mut b).unwrap();
        cases.push(hex::encode_upper(b.finish()));
    }
    let answers = oracle.run(PYEMV_SCRIPT, &serde_json::json!(cases));
    let answers = answers.as_array().expect("array");
    assert_eq!(answers.len(), cases.len());
    for (h, a) in cases.iter().zip(answers) {
        let bytes = hex::decode(h).unwrap();
        let nodes = decode_lenient(&bytes).unwrap();
        assert_eq!(a["ok"], true, "pyemv refused {h}: {a}");
        assert_eq!(a["tree"], ours_as_json(&nodes), "tree differs for {h}");
        assert_eq!(a["reencoded"].as_str().unwrap(), h, "pyemv re-encoding differs");
    }
    eprintln!("pyemv oracle: {} random TLV trees agree", cases.len());
}
