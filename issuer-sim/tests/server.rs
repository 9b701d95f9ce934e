//! The `issuer-sim` binary as a switch sees it: started on 127.0.0.1 port 0 from a configuration
//! of generated test cards and keys, found through its ready file, then driven over TCP with
//! framed `network` messages — echo, approvals, a decline for each reason, a reversal, answers out
//! of order, and each injectable fault (from the config and toggled through the admin port).
//! Finally its log is checked for clear PANs and PINs.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::framing::Frame;
use codecs::iso8583::{Message, Spec};
use common::{Link, rc};
use crypto::keys::to_hex;
use crypto::keystore::Lmk;
use futures_util::{SinkExt, StreamExt};
use issuer_sim::cards::{ClearTestCard, TestIssuer, generate_test_issuer};
use issuer_sim::testing::{Tx, card_accepts_arpc, chip_request, pin_block, reversal};
use testkit::TestRng;
use tokio::net::TcpStream;

/// Kills the simulator when the test ends, however it ends.
struct Sim {
    child: Child,
    listen: String,
    admin: String,
    log: PathBuf,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Five test cards: 0 and 1 approve (5,000,000), 2 blocked, 3 expired in the file, 4 has 800,000.
fn write_config(dir: &Path, lmk_hex: &str) -> TestIssuer {
    let yymm = issuer_sim::server::yymm(now_ms());
    let yy: u32 = yymm[..2].parse().expect("year");
    let expiry = format!("{:02}{}", (yy + 3) % 100, &yymm[2..]);
    let lmk = Lmk::from_hex(lmk_hex).expect("LMK");
    let mut test =
        generate_test_issuer(5, lmk, &expiry, &mut TestRng::seeded(11).filler()).expect("test issuer");
    test.cards.cards[2].status = "blocked".into();
    test.cards.cards[3].expiry = format!("{:02}01", (yy + 99) % 100); // last year's January
    test.clear[3].expiry = test.cards.cards[3].expiry.clone();
    std::fs::write(dir.join("keys.toml"), test.keystore.to_toml()).expect("keys");
    std::fs::write(dir.join("accounts.toml"), test.cards.to_toml()).expect("accounts");
    let cfg = format!(
        r#"listen = "127.0.0.1:6999"
spec = "network"
framing = "2-byte-binary"
cards = "accounts.toml"
zpk = "{}"
admin = "127.0.0.1:0"
admin_token = "{ADMIN_TOKEN}"
read_timeout_ms = 400
[keys]
keystore = "keys.toml"
lmk_env = "ISSUER_SIM_TEST_LMK"
[[fault]]
when_amount = 777
when_mti = "0100"
action = "drop"
"#,
        issuer_sim::cards::ZPK_NAME
    )
    .replace("{ADMIN_TOKEN}", ADMIN_TOKEN);
    std::fs::write(dir.join("issuer-sim.toml"), cfg).expect("config");
    test
}

fn start(dir: &Path, lmk_hex: &str) -> Sim {
    let ready = dir.join("ready.json");
    let log = dir.join("issuer-sim.log");
    let child = Command::new(env!("CARGO_BIN_EXE_issuer-sim"))
        .arg("--config")
        .arg(dir.join("issuer-sim.toml"))
        .args(["--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .env("ISSUER_SIM_TEST_LMK", lmk_hex)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("issuer-sim starts");
    let mut sim = Sim { child, listen: String::new(), admin: String::new(), log };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("the ready file is whole JSON");
            sim.listen = v["listen"].as_str().expect("listen").to_string();
            sim.admin = v["admin"].as_str().expect("admin").to_string();
            return sim;
        }
        if let Ok(Some(status)) = sim.child.try_wait() {
            panic!("issuer-sim exited {status}: {}", std::fs::read_to_string(&sim.log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no ready file after 30 s");
}

fn network_management(spec: &Arc<Spec>, stan: &str, code: &str) -> Message {
    let mut m = Message::new(spec.clone(), "0800".parse().expect("mti"));
    m.set_text(7, "1125101010").expect("DE 7");
    m.set_text(11, stan).expect("DE 11");
    m.set_text(70, code).expect("DE 70");
    m
}

fn balance(rsp: &Message) -> u64 {
    let de54 = rsp.text(54).expect("DE 54").into_owned();
    de54[8..].parse().expect("12 digits")
}

const ADMIN_TOKEN: &str = "issuer-admin-test-credential";

/// One HTTP call to the admin port: status and body.
async fn admin_http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let r = testkit::http::request(addr, method, path, token, body).await;
    (r.status, r.body)
}

/// `faults`, `faults set JSON`: the rules as JSON, `ok N`, or `error: ...`.
async fn admin(addr: &str, line: &str) -> String {
    let (status, body) = match line.strip_prefix("faults set ") {
        Some(rules) => admin_http(addr, "PUT", "/v1/faults", Some(ADMIN_TOKEN), rules).await,
        None if line == "faults clear" => {
            admin_http(addr, "DELETE", "/v1/faults", Some(ADMIN_TOKEN), "").await
        }
        None => admin_http(addr, "GET", "/v1/faults", Some(ADMIN_TOKEN), "").await,
    };
    match (status, line != "faults") {
        (200, true) => {
            let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            format!("ok {}", v["rules"])
        }
        (200, false) => body,
        (s, _) => format!("error: {s} {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_sim_binary_answers_declines_reverses_and_injects_faults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lmk = [0u8; 32];
    TestRng::seeded(5).fill(&mut lmk);
    let lmk_hex = to_hex(&lmk);
    let t = write_config(dir.path(), &lmk_hex);
    let sim = start(dir.path(), &lmk_hex);
    let mut link = Link::connect(&sim.listen).await;
    let spec = link.spec.clone();
    let card: &ClearTestCard = &t.clear[0];

    // Network management.
    for code in ["001", "301", "002"] {
        let r = link.call(&network_management(&spec, "000001", code)).await;
        assert_eq!((r.mti().as_str(), rc(&r).as_str()), ("0810", "00"), "DE 70 {code}");
    }

    // The open-to-buy before, by balance inquiry.
    let r = link.call(&chip_request(&spec, card, &Tx::balance_inquiry(1, 1))).await;
    assert_eq!(rc(&r), "00");
    let start_otb = balance(&r);
    assert_eq!(start_otb, 5_000_000);

    // An approval with a PIN, answered with an ARPC the card accepts.
    let mut buy = chip_request(&spec, card, &Tx::purchase(2, 25_000, 2));
    buy.set_bytes(52, pin_block(&t.zpk_clear, &card.pan, &card.pin).expect("PIN block")).expect("DE 52");
    let r = link.call(&buy).await;
    assert_eq!((r.mti().as_str(), rc(&r).as_str()), ("0110", "00"));
    assert!(card_accepts_arpc(card, &buy, &r));
    let r = link.call(&chip_request(&spec, card, &Tx::balance_inquiry(3, 3))).await;
    assert_eq!(balance(&r), start_otb - 25_000);

    // A decline for each reason.
    let mut unknown = card.clone();
    unknown.pan = "4761739999999990".into();
    let mut tampered = chip_request(&spec, card, &Tx::purchase(10, 100, 10));
    let mut icc = tampered.icc_data().expect("ok").expect("DE 55").to_vec();
    icc[3] ^= 0x80;
    tampered.set_icc_data(&icc).expect("DE 55");
    let mut no_amount = chip_request(&spec, card, &Tx::purchase(11, 100, 11));
    no_amount.remove(4);
    let mut refund = Tx::purchase(12, 100, 12);
    refund.processing_code = "200000";
    let wrong_pin = |stan: u32| {
        let c = &t.clear[1];
        let mut m = chip_request(&spec, c, &Tx::purchase(stan, 100, stan as u16));
        m.set_bytes(52, pin_block(&t.zpk_clear, &c.pan, "0000").expect("PIN block")).expect("DE 52");
        m
    };
    let cases: Vec<(&str, Message)> = vec![
        ("14", chip_request(&spec, &unknown, &Tx::purchase(20, 100, 1))),
        ("62", chip_request(&spec, &t.clear[2], &Tx::purchase(21, 100, 1))),
        ("54", chip_request(&spec, &t.clear[3], &Tx::purchase(22, 100, 1))),
        ("51", chip_request(&spec, &t.clear[4], &Tx::purchase(23, 800_001, 1))),
        ("82", tampered),
        ("82", chip_request(&spec, card, &Tx::purchase(24, 100, 2))), // ATC 2 again: a replay
        ("30", no_amount),
        ("12", chip_request(&spec, card, &refund)),
        ("55", wrong_pin(30)),
        ("55", wrong_pin(31)),
        ("75", wrong_pin(32)),
    ];
    for (want, req) in &cases {
        let r = link.call(req).await;
        assert_eq!(rc(&r), *want, "STAN {}", req.text(11).unwrap_or_default());
        assert_eq!(r.text(11), req.text(11));
        if *want != "14" {
            assert!(issuer_sim::testing::tag91(&r).is_some(), "tag 91 on the {want} decline");
        }
    }
    let r = link.call(&chip_request(&spec, card, &Tx::balance_inquiry(40, 40))).await;
    assert_eq!(balance(&r), start_otb - 25_000, "no decline booked anything");

    // The reversal of the purchase releases it; a repeat changes nothing.
    let rev = reversal(&buy, "0400", 41, None);
    for _ in 0..2 {
        let r = link.call(&rev).await;
        assert_eq!((r.mti().as_str(), rc(&r).as_str()), ("0410", "00"));
    }
    let r = link.call(&chip_request(&spec, card, &Tx::balance_inquiry(42, 42))).await;
    assert_eq!(balance(&r), start_otb);

    // Fault from the config: 0100 of 7.77 gets no answer, the connection carries on.
    link.send(&chip_request(&spec, card, &Tx::purchase(50, 777, 50))).await;
    assert!(link.recv_frame(Duration::from_millis(700)).await.is_none(), "dropped");
    let r = link.call(&network_management(&spec, "000051", "301")).await;
    assert_eq!((rc(&r), r.text(11).map(|s| s.into_owned())), ("00".into(), Some("000051".into())));

    // The admin port is locked: no credential 401, a wrong one 403, and no cardholder OTPs
    // outside test mode.
    assert_eq!(admin_http(&sim.admin, "GET", "/v1/faults", None, "").await.0, 401);
    assert_eq!(admin_http(&sim.admin, "PUT", "/v1/faults", Some("guess-guess-guess"), "[]").await.0, 403);
    assert_eq!(admin_http(&sim.admin, "GET", "/v1/sms", None, "").await.0, 401);
    assert_eq!(admin_http(&sim.admin, "GET", "/v1/sms", Some(ADMIN_TOKEN), "").await.0, 404);
    assert!(admin(&sim.admin, "faults").await.contains("777"), "the config's rule, unchanged");

    // Admin: delay one card's requests; a later request of another card is answered first.
    let suffix = &card.pan[card.pan.len() - 4..];
    let set = format!(r#"faults set [{{"when_pan_suffix":"{suffix}","action":"delay:800"}}]"#);
    assert_eq!(admin(&sim.admin, &set).await, "ok 1");
    assert!(admin(&sim.admin, "faults").await.contains("delay:800"));
    link.send(&chip_request(&spec, card, &Tx::purchase(60, 100, 60))).await;
    link.send(&chip_request(&spec, &t.clear[1], &Tx::purchase(61, 100, 61))).await;
    let first = link.recv().await;
    let second = link.recv().await;
    assert_eq!(first.text(11).as_deref(), Some("000061"), "answered as they complete");
    assert_eq!(second.text(11).as_deref(), Some("000060"));
    assert_eq!((rc(&first), rc(&second)), ("00".into(), "00".into()));

    // Every 2nd STAN is dropped.
    assert_eq!(
        admin(&sim.admin, r#"faults set [{"when_stan_multiple_of":2,"action":"drop"}]"#).await,
        "ok 1"
    );
    link.send(&network_management(&spec, "000070", "301")).await;
    link.send(&network_management(&spec, "000071", "301")).await;
    let r = link.recv().await;
    assert_eq!(r.text(11).as_deref(), Some("000071"));
    assert!(link.recv_frame(Duration::from_millis(500)).await.is_none(), "STAN 70 dropped");

    // Garbled: a frame arrives that is not a well-formed answer.
    assert_eq!(admin(&sim.admin, r#"faults set [{"when_amount":780,"action":"garble"}]"#).await, "ok 1");
    let req = chip_request(&spec, card, &Tx::purchase(80, 780, 80));
    link.send(&req).await;
    let f = link.recv_frame(Duration::from_secs(5)).await.expect("a garbled frame");
    let garbled_ok = Message::decode(&spec, f.payload)
        .map(|m| m.mti().as_str() == "0110" && m.text(11) == req.text(11) && rc(&m) == "00")
        .unwrap_or(false);
    assert!(!garbled_ok, "the garbled answer must not pass as the answer");

    // Bad rules are refused and change nothing.
    assert!(admin(&sim.admin, r#"faults set [{"action":"explode"}]"#).await.starts_with("error:"));
    assert!(admin(&sim.admin, "faults").await.contains("garble"));

    // Disconnect: the connection is closed instead of answered.
    assert_eq!(admin(&sim.admin, r#"faults set [{"when_amount":790,"action":"disconnect"}]"#).await, "ok 1");
    let mut link2 = Link::connect(&sim.listen).await;
    link2.send(&chip_request(&spec, card, &Tx::purchase(90, 790, 90))).await;
    let end =
        tokio::time::timeout(Duration::from_secs(5), link2.framed.next()).await.expect("closed in time");
    assert!(end.is_none(), "closed without an answer");

    // A request that breaks the spec (a letter in DE 4): answered 30 with its STAN and terminal.
    let mut raw = chip_request(&spec, card, &Tx::purchase(95, 100, 95)).encode().expect("encode").to_vec();
    let de4 = raw.windows(12).position(|w| w == b"000000000100").expect("DE 4");
    raw[de4 + 5] = b'X';
    link.framed.send(Frame::new(raw)).await.expect("send");
    let r = link.recv().await;
    assert_eq!((r.mti().as_str(), rc(&r).as_str(), r.text(11).as_deref()), ("0110", "30", Some("000095")));
    assert_eq!(r.text(41).as_deref(), Some("TERM0001"));
    // Garbage that cannot be read at all closes that connection only.
    let mut junk = Link::connect(&sim.listen).await;
    junk.framed.send(Frame::new(&b"0100\xFF"[..])).await.expect("send");
    let end = tokio::time::timeout(Duration::from_secs(5), junk.framed.next()).await.expect("closed in time");
    assert!(end.is_none(), "closed without an answer");

    // A partial frame: dropped with its connection after the read timeout; others carry on.
    let mut partial = TcpStream::connect(&sim.listen).await.expect("connect");
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        partial.write_all(&[0x00, 0x64, b'0', b'1']).await.expect("write"); // 100 announced, 2 sent
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), partial.read(&mut buf))
            .await
            .expect("closed within the read timeout")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed, not answered");
    }
    let r = link.call(&network_management(&spec, "000099", "301")).await;
    assert_eq!(rc(&r), "00");

    assert_eq!(admin(&sim.admin, "faults clear").await, "ok 0");
    let r = link.call(&chip_request(&spec, card, &Tx::purchase(91, 790, 91))).await;
    assert_eq!(rc(&r), "00");

    // SIGTERM: a graceful exit.
    let mut sim = sim;
    let _ = Command::new("kill").args(["-TERM", &sim.child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = sim.child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "issuer-sim did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    drop(sim);

    // The log: masked PANs only, never a clear one, a PIN block or a key.
    let log = std::fs::read_to_string(dir.path().join("issuer-sim.log")).expect("log");
    assert!(log.contains("476173******"), "transactions are logged with masked PANs");
    for c in &t.clear {
        assert!(!log.contains(&c.pan), "clear PAN in the log");
        assert!(!log.contains(&c.icc_mk), "key in the log");
    }
    assert!(!log.contains(&lmk_hex), "LMK in the log");
}

#[test]
fn check_config_reports_every_problem_and_accepts_a_good_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lmk = [0u8; 32];
    TestRng::seeded(6).fill(&mut lmk);
    let lmk_hex = to_hex(&lmk);
    write_config(dir.path(), &lmk_hex);
    let run = |lmk: &str| {
        Command::new(env!("CARGO_BIN_EXE_issuer-sim"))
            .arg("--config")
            .arg(dir.path().join("issuer-sim.toml"))
            .arg("--check-config")
            .env("ISSUER_SIM_TEST_LMK", lmk)
            .output()
            .expect("runs")
    };
    let ok = run(&lmk_hex);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("5 cards"));
    // Another LMK: the key blocks do not unwrap; named, exit 2.
    let bad = run(&"11".repeat(32));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("keystore"));
    // A cards file with several problems: all reported at once, no PAN in clear.
    let accounts = dir.path().join("accounts.toml");
    let text = std::fs::read_to_string(&accounts).expect("accounts");
    let broken =
        text.replacen("cvn = \"visa18\"", "cvn = \"visa99\"", 1).replacen("psn = \"00\"", "psn = \"0x\"", 2);
    std::fs::write(&accounts, broken).expect("write");
    let cfg_path = dir.path().join("issuer-sim.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    std::fs::write(&cfg_path, cfg.replace("action = \"drop\"", "action = \"explode\"")).expect("write");
    let bad = run(&lmk_hex);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(
        err.contains("cvn") && err.contains("psn") && err.contains("fault[0].action"),
        "all at once: {err}"
    );
    let first_pan = text.lines().find_map(|l| l.strip_prefix("pan = \"")).map(|p| p.trim_end_matches('"'));
    assert!(!err.contains(first_pan.expect("a pan")), "no clear PAN in errors");
}

/// `[idv]` and `[kept]` are checked with the rest: values in range pass, every value out of range
/// is named at once, and a setting that belongs elsewhere is refused by name.
#[test]
fn check_config_checks_the_idv_and_kept_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lmk = [0u8; 32];
    TestRng::seeded(31).fill(&mut lmk);
    let lmk_hex = to_hex(&lmk);
    write_config(dir.path(), &lmk_hex);
    let cfg_path = dir.path().join("issuer-sim.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    let check = |tables: &str| {
        std::fs::write(&cfg_path, cfg.replace("[keys]", &format!("{tables}\n[keys]"))).expect("config");
        let out = Command::new(env!("CARGO_BIN_EXE_issuer-sim"))
            .arg("--config")
            .arg(&cfg_path)
            .arg("--check-config")
            .env("ISSUER_SIM_TEST_LMK", &lmk_hex)
            .output()
            .expect("runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check(
        "[idv]\nmax_failures = 3\notp_tries = 2\notp_ttl_ms = 60000\n\
         [kept]\nnotices = 10\nnotices_ttl_ms = 60000\nsms = 5\notps = 5",
    );
    assert_eq!(code, Some(0), "{err}");
    // Out of range, in both tables: every problem at once, exit 2.
    let (code, err) = check("[idv]\notp_tries = 0\n[kept]\nnotices = 0\nsms = 100001\nnotices_ttl_ms = 0");
    assert_eq!(code, Some(2), "{err}");
    for what in [
        "idv.otp_tries must be at least 1",
        "kept.notices must be from 1 to 100000 (it is 0)",
        "kept.sms must be from 1 to 100000 (it is 100001)",
        "kept.notices_ttl_ms must be at least 1",
    ] {
        assert!(err.contains(what), "{what}: {err}");
    }
    assert!(!err.contains("kept.otps"), "{err}");
    // An OTP is kept for its lifetime: that is [idv] otp_ttl_ms, not a [kept] setting.
    let (code, err) = check("[kept]\notp_ttl_ms = 1000");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown field `otp_ttl_ms`"), "{err}");
    // Not a size: the line named, no panic.
    let (code, err) = check("[kept]\nnotices = -1");
    assert_eq!(code, Some(2), "{err}");
    let line = cfg.lines().position(|l| l == "[keys]").expect("[keys]") + 2;
    assert!(err.contains(&format!("issuer-sim.toml line {line}: invalid value: integer `-1`")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The samples in config/ parse and validate as the binary would read them (with a generated
/// keystore holding the key names they use).
#[test]
fn sample_configuration_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["issuer-sim.toml", "issuer-accounts.toml"] {
        std::fs::copy(root.join(f), dir.path().join(f)).expect("copy sample");
    }
    let mut lmk = [0u8; 32];
    TestRng::seeded(8).fill(&mut lmk);
    let lmk_hex = to_hex(&lmk);
    // Without the LMK (a machine that does not hold it): everything but the keystore is checked.
    let out = Command::new(env!("CARGO_BIN_EXE_issuer-sim"))
        .arg("--config")
        .arg(dir.path().join("issuer-sim.toml"))
        .arg("--check-config")
        .env_remove("PAYNET_LMK")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keystore is not checked"));
    // With the LMK and a keystore holding the names the samples use.
    let test = generate_test_issuer(
        1,
        Lmk::from_hex(&lmk_hex).expect("LMK"),
        "2912",
        &mut TestRng::seeded(3).filler(),
    )
    .expect("keys");
    std::fs::write(dir.path().join("issuer-keys.toml"), test.keystore.to_toml()).expect("keys");
    let out = Command::new(env!("CARGO_BIN_EXE_issuer-sim"))
        .arg("--config")
        .arg(dir.path().join("issuer-sim.toml"))
        .arg("--check-config")
        .env("PAYNET_LMK", &lmk_hex)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 cards"));
    // Every line of the samples that sets something says what it is for.
    let sample = std::fs::read_to_string(root.join("issuer-sim.toml")).expect("sample");
    let reader = BufReader::new(sample.as_bytes());
    let mut uncommented = Vec::new();
    for line in reader.lines() {
        let line = line.expect("line");
        if line.contains(" = ") && !line.contains('#') {
            uncommented.push(line);
        }
    }
    assert!(uncommented.is_empty(), "settings without a comment: {uncommented:?}");
    let _ = std::io::stdout().flush();
}

/// `link_mac` in the configuration: checked with the rest (a key the keystore does not hold, an
/// algorithm links do not use), and once served, the listener is the switch's authenticated link —
/// unsigned requests are answered 63, signed ones answered and signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_mac_is_checked_and_served() {
    use crypto::keys::{AesKey, SymmetricKey};
    use issuer_sim::testing::{LINK_MAC_KEY, link_mac};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lmk = [0u8; 32];
    TestRng::seeded(12).fill(&mut lmk);
    let lmk_hex = to_hex(&lmk);
    let mut t = write_config(dir.path(), &lmk_hex);
    let cfg_path = dir.path().join("issuer-sim.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    let with_link = |alg: &str| {
        let line = format!("link_mac = {{ key = \"{LINK_MAC_KEY}\", alg = \"{alg}\" }}\n[keys]");
        std::fs::write(&cfg_path, cfg.replace("[keys]", &line)).expect("config");
    };
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_issuer-sim"))
            .arg("--config")
            .arg(&cfg_path)
            .arg("--check-config")
            .env("ISSUER_SIM_TEST_LMK", &lmk_hex)
            .output()
            .expect("runs")
    };
    // The key is not in the keystore yet; then an algorithm links do not use.
    with_link("cmac");
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(LINK_MAC_KEY), "the missing key is named");
    with_link("hmac-sha256");
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("link_mac.alg"));

    // With the key (AES, usage M6) and `cmac`: valid, and served.
    let clear = *b"0123456789abcdef";
    let header = crypto::keyblock::Header::parse_template("D0000M6AC00N0000").expect("header");
    let key = SymmetricKey::Aes(AesKey::from_slice(&clear).expect("AES"));
    let name = crypto::keystore::KeyName::new(LINK_MAC_KEY).expect("name");
    t.keystore.import(name, &header, &key, &[0x5A; 64]).expect("import");
    std::fs::write(dir.path().join("keys.toml"), t.keystore.to_toml()).expect("keys");
    with_link("cmac");
    let out = check();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sim = start(dir.path(), &lmk_hex);
    let switch = link_mac(&clear);
    let mut link = Link::connect(&sim.listen).await;
    let spec = link.spec.clone();
    let r = link.call(&network_management(&spec, "000001", "001")).await;
    assert_eq!(rc(&r), "63", "an unsigned sign-on");
    let mut sign_on = network_management(&spec, "000002", "001");
    switch.sign(&mut sign_on).expect("sign");
    link.send(&sign_on).await;
    let f = link.recv_frame(Duration::from_secs(10)).await.expect("an answer");
    let r = Message::decode(&spec, f.payload.clone()).expect("decode");
    assert_eq!((r.mti().as_str(), rc(&r).as_str()), ("0810", "00"));
    switch.verify(&f.payload, &r).expect("the answer is signed under the shared key");
}

/// The LMK from two custodians' component files (each 0600 with its KCV, the LMK their XOR): the
/// configuration checks and the keystore unwraps; a component readable by others, or a KCV that is
/// not its component's, is refused with the file named and no key material in the message.
#[test]
fn the_lmk_from_custodians_components() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lmk = [0u8; 32];
    TestRng::seeded(21).fill(&mut lmk);
    write_config(dir.path(), &to_hex(&lmk));
    let mut c1 = [0u8; 32];
    TestRng::seeded(22).fill(&mut c1);
    let c2: Vec<u8> = c1.iter().zip(&lmk).map(|(a, b)| a ^ b).collect();
    let (h1, h2) = (to_hex(&c1), to_hex(&c2));
    let kcv = |h: &str| to_hex(&crypto::AesKey::from_hex("c", h).expect("key").kcv());
    let lmk_kcv = to_hex(&Lmk::from_hex(&to_hex(&lmk)).expect("LMK").kcv());
    let write = |name: &str, text: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("component");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    write("c1.hex", &format!("{h1}\n"), 0o600);
    write("c2.hex", &h2, 0o400);
    let cfg_path = dir.path().join("issuer-sim.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    let with_components = |k2: &str| {
        let keys = format!(
            "lmk_components = [{{ file = \"c1.hex\", kcv = \"{}\" }}, {{ file = \"c2.hex\", kcv = \"{k2}\" }}]\nlmk_kcv = \"{lmk_kcv}\"",
            kcv(&h1)
        );
        std::fs::write(&cfg_path, cfg.replace("lmk_env = \"ISSUER_SIM_TEST_LMK\"", &keys)).expect("config");
    };
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_issuer-sim"))
            .arg("--config")
            .arg(&cfg_path)
            .arg("--check-config")
            .env_remove("ISSUER_SIM_TEST_LMK")
            .env_remove("PAYNET_LMK")
            .output()
            .expect("runs")
    };
    with_components(&kcv(&h2));
    let out = check();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 cards"), "the keystore was checked");

    // Component 2's KCV is not its own: refused, the component named, no component shown.
    with_components(&kcv(&h1));
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("component 2"), "{err}");
    assert!(!err.contains(&h1) && !err.contains(&h2), "no component in the message: {err}");

    // Component 1 readable by others: refused, its file and mode named.
    with_components(&kcv(&h2));
    write("c1.hex", &h1, 0o644);
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("c1.hex") && err.contains("0644"), "{err}");
}
