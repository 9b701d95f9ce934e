//! The `issuer-sim` binary on 127.0.0.1 (port from the OS): configuration from files (a generated
//! test issuer's cards and keystore), `--check-config`, echo, an approval whose ARQC it verifies
//! and whose ARPC the card accepts, declines, a reversal restoring the open-to-buy, and the drop
//! fault — then SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Mti, Spec};
use codecs::tlv::{Tag, TlvBuilder};
use crypto::emv::{ArpcInput, Atc, CardInputs, Cvn, PanDigits, UnpredictableNumber, ac_data_from_tags};
use crypto::keys::TdesKey;
use crypto::keystore::Lmk;
use issuer_sim::cards::{ClearTestCard, generate_test_issuer};
use tokio_util::codec::{Decoder, Encoder};

const LMK: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";

struct Sim(Child);
impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn setup(dir: &std::path::Path) -> Vec<ClearTestCard> {
    let mut n = 1u8;
    let t = generate_test_issuer(4, Lmk::from_hex(LMK).expect("lmk"), "3012", &mut |b: &mut [u8]| {
        for x in b.iter_mut() {
            n = n.wrapping_mul(73).wrapping_add(41);
            *x = n;
        }
    })
    .expect("test issuer");
    std::fs::write(dir.join("keys.toml"), t.keystore.to_toml()).expect("write");
    std::fs::write(dir.join("cards.toml"), t.cards.to_toml()).expect("write");
    std::fs::write(
        dir.join("issuer-sim.toml"),
        "listen = \"127.0.0.1:0\"\ncards = \"cards.toml\"\nzpk = \"issuer.zpk\"\n[keys]\nkeystore = \"keys.toml\"\n[[fault]]\nwhen_amount = 777\naction = \"drop\"\n",
    )
    .expect("write");
    t.clear
}

fn exchange(s: &mut TcpStream, m: &Message) -> Option<Message> {
    let mut codec = FrameCodec::new(FramingKind::Binary2);
    let mut out = BytesMut::new();
    codec.encode(Frame::new(m.encode().expect("encode")), &mut out).expect("frame");
    s.write_all(&out).expect("write");
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = codec.decode(&mut buf).expect("frame") {
            return Some(
                Message::decode(Spec::builtin("network").expect("spec"), f.payload).expect("decode"),
            );
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
}

fn purchase(card: &ClearTestCard, stan: u32, amount: u64, atc: u16) -> (Message, [u8; 8]) {
    let un = UnpredictableNumber([1, 2, 3, stan as u8]);
    let tags: Vec<(u32, Vec<u8>)> = vec![
        (0x9F02, hex::decode(format!("{amount:012}")).expect("hex")),
        (0x9F03, vec![0; 6]),
        (0x9F1A, vec![0x02, 0x50]),
        (0x95, vec![0; 5]),
        (0x5F2A, vec![0x09, 0x78]),
        (0x9A, vec![0x26, 0x11, 0x25]),
        (0x9C, vec![0]),
        (0x9F37, un.0.to_vec()),
        (0x82, vec![0x20, 0]),
        (0x9F36, atc.to_be_bytes().to_vec()),
        (0x9F10, vec![6, 1, 0x12, 3, 0xA0, 0, 0]),
    ];
    let data =
        ac_data_from_tags(Cvn::Visa18, |t| tags.iter().find(|(k, _)| *k == t).map(|(_, v)| v.as_slice()))
            .expect("data");
    let pan = PanDigits::new(&card.pan).expect("pan");
    let icc = TdesKey::from_hex("icc", &card.icc_mk).expect("icc");
    let inputs = CardInputs { pan: &pan, psn: card.psn.parse().expect("psn"), atc: Atc(atc), un: Some(un) };
    let arqc = Cvn::Visa18.card_ac(&icc, &inputs, &data).expect("arqc");
    let mut b = TlvBuilder::new();
    b.primitive(Tag::new(0x9F26), &arqc).expect("tlv");
    for (t, v) in &tags {
        b.primitive(Tag::new(*t), v).expect("tlv");
    }
    let mut m = Message::new(Spec::builtin("network").expect("spec").clone(), Mti::AUTHORIZATION_REQUEST);
    for (de, v) in [
        (2u16, card.pan.clone()),
        (3, "000000".into()),
        (4, format!("{amount:012}")),
        (7, format!("1125{stan:06}")),
        (11, format!("{stan:06}")),
        (14, card.expiry.clone()),
        (22, "071".into()),
        (41, "TERM0001".into()),
        (49, "978".into()),
    ] {
        m.set_text(de, &v).expect("set");
    }
    m.set_icc_data(&b.finish()).expect("DE 55");
    (m, arqc)
}

#[test]
fn issuer_sim_binary_serves_decisions_and_faults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cards = setup(dir.path());
    let cfg = dir.path().join("issuer-sim.toml");
    let bin = env!("CARGO_BIN_EXE_issuer-sim");
    let check = Command::new(bin)
        .args(["--config", cfg.to_str().expect("utf-8"), "--check-config"])
        .env("PAYNET_LMK", LMK)
        .output()
        .expect("run");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let ready = dir.path().join("ready.json");
    let sim = Sim(Command::new(bin)
        .args(["--config", cfg.to_str().expect("utf-8"), "--ready-file", ready.to_str().expect("utf-8")])
        .env("PAYNET_LMK", LMK)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        if let Ok(t) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&t).expect("json");
            break v["listen"].as_str().expect("addr").to_string();
        }
        assert!(Instant::now() < deadline, "issuer-sim not ready");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");

    let mut echo =
        Message::new(Spec::builtin("network").expect("spec").clone(), Mti::NETWORK_MANAGEMENT_REQUEST);
    echo.set_text(11, "000001").expect("DE 11");
    echo.set_text(70, "301").expect("DE 70");
    let a = exchange(&mut s, &echo).expect("echo answer");
    assert_eq!((a.mti().as_str(), a.text(39).as_deref()), ("0810", Some("00")));

    let card = &cards[0];
    let (req, arqc) = purchase(card, 2, 5_000, 1);
    let a = exchange(&mut s, &req).expect("answer");
    assert_eq!(a.text(39).as_deref(), Some("00"));
    let icc = a.icc_data().expect("ok").expect("DE 55");
    let nodes = codecs::tlv::decode_lenient(&icc).expect("tlv");
    let t91 = nodes.iter().find(|n| n.tag().value() == 0x91).expect("tag 91").value().to_vec();
    let pan = PanDigits::new(&card.pan).expect("pan");
    let inputs = CardInputs {
        pan: &pan,
        psn: card.psn.parse().expect("psn"),
        atc: Atc(1),
        un: Some(UnpredictableNumber([1, 2, 3, 2])),
    };
    let expected = Cvn::Visa18
        .card_arpc(
            &TdesKey::from_hex("icc", &card.icc_mk).expect("icc"),
            &inputs,
            &arqc,
            &ArpcInput::Csu { csu: [0, 0, 0, 0x80], proprietary: vec![] },
        )
        .expect("arpc");
    assert_eq!(&t91[..4], expected.as_slice(), "the card accepts the ARPC");

    // Unknown card, replayed ATC.
    let mut stranger = card.clone();
    stranger.pan = "4761739999999995".into();
    assert_eq!(
        exchange(&mut s, &purchase(&stranger, 3, 100, 1).0).expect("answer").text(39).as_deref(),
        Some("14")
    );
    assert_eq!(
        exchange(&mut s, &purchase(card, 4, 100, 1).0).expect("answer").text(39).as_deref(),
        Some("82")
    );

    // Reversal of the approval (0420 with DE 90).
    let mut rev = Message::new(Spec::builtin("network").expect("spec").clone(), Mti::REVERSAL_ADVICE);
    for de in [2u16, 3, 4, 7, 11, 41, 49] {
        rev.copy_from(&req, de).expect("copy");
    }
    rev.set_text(90, &format!("0100000002{}{}", req.text(7).expect("DE 7"), "0".repeat(22))).expect("DE 90");
    let a = exchange(&mut s, &rev).expect("answer");
    assert_eq!((a.mti().as_str(), a.text(39).as_deref()), ("0430", Some("00")));

    // The drop fault: no answer for 777.
    let (drop_req, _) = purchase(card, 5, 777, 5);
    assert!(exchange(&mut s, &drop_req).is_none(), "a dropped request gets no answer");

    let _ = Command::new("kill").args(["-TERM", &sim.0.id().to_string()]).status();
}

#[test]
fn sample_config_passes_check_config() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/issuer-sim.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_issuer-sim"))
        .args(["--config", cfg, "--check-config"])
        .env_remove("PAYNET_LMK")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A broken cards file is refused with every problem named, never a PAN in clear.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("c.toml"), "[[card]]\npan = \"47617300000001X0\"\nexpiry = \"29\"\ncurrency = \"EUR\"\ncredit_limit = 1\ncvn = \"visa99\"\nimk_ac = \"k\"\n").expect("write");
    std::fs::write(
        dir.path().join("i.toml"),
        "listen = \"127.0.0.1:0\"\ncards = \"c.toml\"\nzpk = \"z\"\n[keys]\nkeystore = \"k.toml\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_issuer-sim"))
        .args(["--config", dir.path().join("i.toml").to_str().expect("utf-8"), "--check-config"])
        .env_remove("PAYNET_LMK")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [".pan", ".expiry", ".currency", ".cvn"] {
        assert!(err.contains(needle), "{needle} missing: {err}");
    }
    assert!(!err.contains("47617300000001X0"));
}
