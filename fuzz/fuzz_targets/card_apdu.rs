//! Fuzzes the card application as a terminal (or anything in the field) meets it: a sequence of
//! arbitrary command APDUs (length-prefixed chunks of the input) sent to an `EmvApplet` holding
//! its ICC master key, to one on limited-use keys, and to a `Phone` whose default card is an HCE
//! token on limited-use keys (built once into a state file in the temporary folder, copied fresh
//! for each input). Properties: never panics; every answer ends with a status word; a GENERATE AC never answers an ATC it answered before; after any
//! sequence, a genuine kernel dialogue (`emv::kernel::tap`) still succeeds unless the
//! card legitimately ran out of ATCs or keys, and the card then accepts the issuer's ARPC for it
//! (EXTERNAL AUTHENTICATE) and refuses a wrong one.
#![no_main]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use codecs::tlv::{self, Tag};
use crypto::emv::{ArpcInput, Atc, Cvn, common_session_key};
use crypto::keys::{TdesKey, to_hex};
use libfuzzer_sys::fuzz_target;
use emv::kernel::{TerminalConfig, TxData, issuer_authenticate, tap};
use emv::apdu::split_response;
use emv::card::{CardKeys, CardProfile, Contactless, EmvApplet, Luk};
use phone::Phone;

const ICC_MK: &str = "0123456789ABCDEFFEDCBA9876543210";

/// Length-prefixed chunks of the input (at most 32 commands).
fn chunks(mut d: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&n, rest)) = d.split_first() {
        let n = usize::from(n).min(rest.len());
        out.push(&rest[..n]);
        d = &rest[n..];
        if out.len() >= 32 {
            break;
        }
    }
    out
}

/// Limited-use keys for ATCs 1 to 7 under the test master key (derived once).
fn luks(atcs: std::ops::Range<usize>) -> Vec<Luk> {
    static ALL: OnceLock<Vec<Luk>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let mk = TdesKey::from_hex("icc_mk", ICC_MK).expect("test key");
        (0u16..8)
            .map(|a| Luk { atc: format!("{a:04X}"), key: to_hex(common_session_key(&mk, Atc(a)).expose()) })
            .collect()
    });
    all[atcs].to_vec()
}

fn profile(keys: CardKeys, atc: u16) -> CardProfile {
    CardProfile {
        pan: "4761739001010010".into(),
        expiry: "2912".into(),
        psn: "01".into(),
        cvn: "visa18".into(),
        aid: "A0000000031010".into(),
        label: "PAYNET CREDIT".into(),
        keys,
        atc,
    }
}

/// A phone with one enabled HCE token card on limited-use keys (mc20, ATCs 5-7). Building one
/// costs P-256 operations that run slowly under the fuzzer's instrumentation, so the phone is built
/// once into a state file (the phone's own storage) and each input starts from a fresh copy of it.
fn phone() -> Phone {
    static STATE: OnceLock<(PathBuf, String)> = OnceLock::new();
    let (path, pristine) = STATE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("fuzz-card_apdu-phone-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut p = Phone::open_or_create(&path).expect("phone");
        let pk = hex::decode(p.device_public_key().expect("device key")).expect("hex");
        let keys: Vec<String> =
            luks(5..8).iter().map(|l| format!(r#"{{"atc":"{}","key":"{}"}}"#, l.atc, l.key)).collect();
        let plain = format!(
            r#"{{"token":"4895370012345678","expiry":"2912","psn":"00","cvn":"mc20","luks":[{}]}}"#,
            keys.join(",")
        );
        let info = phone::hce::PROFILE_INFO;
        let sealed =
            crypto::device::seal(&pk, &[0x11; 32], [0x22; 12], info, plain.as_bytes()).expect("seal");
        let id = p.install_token("TR1", "cloud", &hex::encode_upper(sealed)).expect("install");
        p.enable(&id).expect("enable");
        (path.clone(), std::fs::read_to_string(&path).expect("phone state"))
    });
    std::fs::write(path, pristine).expect("phone state");
    Phone::open(path).expect("phone")
}

/// Sends every command, checking the answers; the ATCs that GENERATE AC answered.
fn drive(card: &mut dyn Contactless, cmds: &[&[u8]], seen: &mut HashSet<Vec<u8>>) {
    for c in cmds {
        let r = card.transceive(c);
        let (data, sw) = split_response(&r).expect("every answer ends with SW1 SW2");
        if c.get(1) == Some(&0xAE) && sw.0 == 0x9000 {
            atc_is_new(data, seen);
        }
    }
}

fn atc_is_new(rsp: &[u8], seen: &mut HashSet<Vec<u8>>) {
    let nodes = tlv::decode_lenient(rsp).expect("the card's GENERATE AC answer is TLV");
    let atc = tlv::find(&nodes, Tag::new(0x9F36)).expect("9F36 in the answer").value().to_vec();
    assert!(seen.insert(atc.clone()), "ATC {atc:02X?} answered twice");
}

/// A genuine dialogue still works, unless the card is out of ATCs/keys — and the card accepts
/// the issuer's ARPC for the cryptogram it made (and refuses a wrong one).
fn genuine_tap(card: &mut dyn Contactless, cvn: Cvn, exhausted: bool, seen: &mut HashSet<Vec<u8>>) {
    let tx = TxData { amount: 1_000, tx_type: 0, date: [0x26, 0x11, 0x25], un: [1, 2, 3, 4] };
    match tap(card, &TerminalConfig::default(), &tx) {
        Ok(t) => {
            assert!(!exhausted, "an exhausted card answered a cryptogram");
            assert_eq!(t.cid, 0x80, "an ARQC");
            let nodes = tlv::decode_strict(&t.icc).expect("DE 55 is BER-TLV");
            atc_is_new(&t.icc, seen);
            let value = |tag: u32| tlv::find(&nodes, Tag::new(tag)).expect("in DE 55").value();
            let arqc = value(0x9F26);
            let atc = u16::from_be_bytes(value(0x9F36).try_into().expect("2-byte ATC"));
            // The issuer's side: every test card's keys come from ICC_MK (common session key).
            let mk = TdesKey::from_hex("icc_mk", ICC_MK).expect("test key");
            let sk = common_session_key(&mk, Atc(atc));
            let (input, tail) = match cvn.arpc_method() {
                Some(2) => (ArpcInput::Csu { csu: [0; 4], proprietary: Vec::new() }, vec![0; 4]),
                _ => (ArpcInput::Arc(*b"00"), b"00".to_vec()),
            };
            let mut t91 = cvn.session_arpc(&sk, arqc, &input).expect("ARPC");
            t91.extend_from_slice(&tail);
            let mut wrong = t91.clone();
            wrong[0] ^= 1;
            assert!(!issuer_authenticate(card, &wrong), "a wrong ARPC accepted");
            assert!(issuer_authenticate(card, &t91), "the issuer's ARPC refused after the fuzzed sequence");
        }
        Err(e) => assert!(exhausted, "a genuine tap failed after the fuzzed sequence: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let cmds = chunks(rest);

    // A card on its master key; near the end of its ATC range when the mode says so.
    let start = if mode & 1 == 1 { 0xFFFD } else { 0 };
    let mut card = EmvApplet::new(profile(CardKeys::Master { icc_mk: ICC_MK.into() }, start));
    let mut seen = HashSet::new();
    drive(&mut card, &cmds, &mut seen);
    let exhausted = card.profile().atc == u16::MAX;
    genuine_tap(&mut card, Cvn::Visa18, exhausted, &mut seen);

    // A card on limited-use keys.
    let mut card = EmvApplet::new(profile(CardKeys::Limited { luks: luks(1..4) }, 0));
    let mut seen = HashSet::new();
    drive(&mut card, &cmds, &mut seen);
    let exhausted = card.profile().luks_left() == Some(0);
    genuine_tap(&mut card, Cvn::Visa18, exhausted, &mut seen);

    // A phone (HCE).
    let mut p = phone();
    let mut seen = HashSet::new();
    drive(&mut p, &cmds, &mut seen);
    let exhausted = p.cards().first().and_then(|c| c.luks_left) == Some(0);
    genuine_tap(&mut p, Cvn::Mc20, exhausted, &mut seen);
});
