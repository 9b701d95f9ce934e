//! `atm-sim cash-advance` (INTERFACES.md §6) as an outside tool runs it: the real binary against
//! `paynet serve --ports-file` in its own process. An approval, a wrong PIN, a jam, a partial
//! dispense and a lost answer, each one JSON object alone on stdout; three invocations side by
//! side on one ATM (distinct STANs, no KSN or ATC reused); a card profile file and a wallet-sim
//! phone file whose ATC advances; the
//! issuer's open-to-buy (asked by a balance inquiry, §5) down by exactly the cash dispensed; the
//! journal and state folder without a clear PAN.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{serve, workspace_bin};

use atm_sim::atm::{Atm, AtmConfig};
use atm_sim::ports::card_profile;
use atm_sim::{Cassettes, PinPad, SwitchLink};
use emv::card::EmvApplet;
use terminal_kit::ports::PortsFile;

fn atm_sim_bin() -> PathBuf {
    workspace_bin("atm-sim")
}

fn cash_advance(ports: &Path, state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(atm_sim_bin())
        .arg("cash-advance")
        .arg("--ports-file")
        .arg(ports)
        .arg("--state")
        .arg(state)
        .arg("--json")
        .args(args)
        .output()
        .expect("atm-sim")
}

/// Exit 0 and the one JSON object of stdout.
fn ok_json(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    let keys: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["response_code", "requested", "dispensed", "reversal", "reversal_acknowledged", "stan"]
    );
    v
}

/// The card's open-to-buy, by a balance inquiry from the last test ATM (in-process, its own KSNs).
fn open_to_buy(ports: &PortsFile, card: usize, atc: u16) -> u64 {
    let t = ports.atm_terminals.last().expect("ATM");
    let ipek = crypto::keys::TdesKey::from_hex("ipek", &t.ipek).expect("ipek");
    let ksn = crypto::dukpt::TdesKsn::from_hex(&t.ksn).expect("ksn");
    let pad = PinPad::tdes(&ipek, &ksn, u32::from(atc)).expect("pad");
    let mut atm = Atm::in_memory(AtmConfig::new(&t.tid), pad, Cassettes::test_atm());
    let mut link = SwitchLink::connect(&ports.acquirer, Duration::from_secs(5)).expect("switch");
    let mut c = EmvApplet::new(card_profile(&ports.test_cards[card], atc));
    let b = atm.balance_inquiry(&mut link, &mut c, None).expect("balance");
    assert_eq!(b.response_code.as_deref(), Some("00"));
    b.available.expect("DE 54")
}

#[test]
fn atm_sim_cli_against_paynet_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports_path = dir.path().join("ports.json");
    let state = dir.path().join("atm-state");
    let _serve = serve(&ports_path, dir.path());
    let ports = PortsFile::load(&ports_path).expect("ports file");
    let pin = |i: usize| ports.test_cards[i].pin.clone();
    let before = open_to_buy(&ports, 0, 0x7E00);

    let v =
        ok_json(&cash_advance(&ports_path, &state, &["--card", "0", "--amount", "200000", "--pin", &pin(0)]));
    assert_eq!(v["response_code"], "00");
    assert_eq!((v["requested"].as_u64(), v["dispensed"].as_u64()), (Some(200_000), Some(200_000)));
    assert_eq!((v["reversal"].as_str(), v["reversal_acknowledged"].as_bool()), (Some("none"), Some(false)));
    assert_eq!(v["stan"].as_str().map(str::len), Some(6));

    // A Taiwanese ATM (TWD 1,000.00 asked) and a card billed in EUR: the screen shows both.
    let taipei = ports.atm_terminals[1].tid.clone();
    let out = cash_advance(
        &ports_path,
        &state,
        &[
            "--atm",
            &taipei,
            "--card",
            "0",
            "--amount",
            "100000",
            "--pin",
            &pin(0),
            "--currency",
            "901",
            "--country",
            "158",
        ],
    );
    let v = ok_json(&out);
    assert_eq!((v["response_code"].as_str(), v["dispensed"].as_u64()), (Some("00"), Some(100_000)), "{v}");
    let screen = String::from_utf8_lossy(&out.stderr);
    assert!(screen.contains("please take your cash: TWD 1000.00"), "{screen}");
    assert!(screen.contains("your card is charged EUR 28.57 (at 0.0285714 EUR per TWD)"), "{screen}");
    let bad = cash_advance(
        &ports_path,
        &state,
        &["--card", "0", "--amount", "100", "--pin", "1", "--currency", "999"],
    );
    assert_eq!(bad.status.code(), Some(2));

    let wrong = if pin(0) == "0000" { "1111" } else { "0000" };
    let v =
        ok_json(&cash_advance(&ports_path, &state, &["--card", "0", "--amount", "100000", "--pin", wrong]));
    assert_eq!((v["response_code"].as_str(), v["dispensed"].as_u64()), (Some("55"), Some(0)));

    let v = ok_json(&cash_advance(
        &ports_path,
        &state,
        &["--card", "0", "--amount", "100000", "--pin", &pin(0), "--fault", "jam"],
    ));
    assert_eq!((v["response_code"].as_str(), v["dispensed"].as_u64()), (Some("00"), Some(0)));
    assert_eq!((v["reversal"].as_str(), v["reversal_acknowledged"].as_bool()), (Some("full"), Some(true)));

    let v = ok_json(&cash_advance(
        &ports_path,
        &state,
        &["--card", "0", "--amount", "100000", "--pin", &pin(0), "--fault", "partial:30000"],
    ));
    assert_eq!((v["dispensed"].as_u64(), v["reversal"].as_str()), (Some(30_000), Some("partial")));
    assert_eq!(v["reversal_acknowledged"], true);

    let v = ok_json(&cash_advance(
        &ports_path,
        &state,
        &["--card", "0", "--amount", "100000", "--pin", &pin(0), "--fault", "no-response"],
    ));
    assert!(v["response_code"].is_null());
    assert_eq!((v["dispensed"].as_u64(), v["reversal"].as_str()), (Some(0), Some("full")));

    // The issuer ends with exactly the cash that left (reversals arrive by the switch's SAF).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut atc = 0x7E01;
    loop {
        let now = open_to_buy(&ports, 0, atc);
        atc += 1;
        // EUR 2,300.00 at the euro ATM, EUR 28.57 for TWD 1,000.00 at the Taiwanese one.
        if before - now == 230_000 + 2_857 {
            break;
        }
        assert!(Instant::now() < deadline, "issuer booked {}, the ATM gave 230000", before - now);
        std::thread::sleep(Duration::from_millis(200));
    }

    // Side by side on one ATM: each waits its turn; no STAN reused.
    let children: Vec<_> = [2usize, 3, 2]
        .iter()
        .map(|c| {
            Command::new(atm_sim_bin())
                .arg("cash-advance")
                .arg("--ports-file")
                .arg(&ports_path)
                .arg("--state")
                .arg(&state)
                .args(["--json", "--card", &c.to_string(), "--amount", "50000", "--pin", &pin(*c)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("atm-sim")
        })
        .collect();
    let mut stans = Vec::new();
    for ch in children {
        let v = ok_json(&ch.wait_with_output().expect("wait"));
        assert_eq!(v["response_code"], "00", "{v}");
        stans.push(v["stan"].as_str().expect("stan").to_string());
    }
    stans.sort();
    stans.dedup();
    assert_eq!(stans.len(), 3, "distinct STANs");

    // A phone file (docs/atm.md): its ATC advances from one invocation to the next.
    let phone = dir.path().join("phone.json");
    let profile = card_profile(&ports.test_cards[4], 0x7A00);
    std::fs::write(&phone, serde_json::to_string(&profile).expect("json")).expect("write");
    for n in 1..=2u16 {
        let v = ok_json(&cash_advance(
            &ports_path,
            &state,
            &["--device", phone.to_str().expect("path"), "--amount", "40000", "--pin", &pin(4)],
        ));
        assert_eq!(v["response_code"], "00", "{v}");
        let p: emv::card::CardProfile =
            serde_json::from_str(&std::fs::read_to_string(&phone).expect("read")).expect("profile");
        assert_eq!(p.atc, 0x7A00 + n);
    }

    // A phone as wallet-sim leaves it (INTERFACES.md §6 "a phone provisioned by wallet-sim"): an
    // HCE phone on test card 5, tapped twice; the phone keeps its own ATC in its file.
    let wallet_phone = dir.path().join("wallet-phone.json");
    let out = Command::new(workspace_bin("wallet-sim"))
        .args(["provision", "--model", "hce", "--card", "5", "--ports-file"])
        .arg(&ports_path)
        .arg("--phone")
        .arg(&wallet_phone)
        .output()
        .expect("wallet-sim");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let atc_of = |path: &Path| {
        let phone = phone::Phone::open(path).expect("phone file");
        let id = phone.default_card().expect("default card");
        phone.profile(&id).expect("card").atc
    };
    for n in 1..=2u16 {
        let v = ok_json(&cash_advance(
            &ports_path,
            &state,
            &["--device", wallet_phone.to_str().expect("path"), "--amount", "20000", "--pin", &pin(5)],
        ));
        assert_eq!((v["response_code"].as_str(), v["dispensed"].as_u64()), (Some("00"), Some(20000)), "{v}");
        assert_eq!(atc_of(&wallet_phone), n);
    }

    // The ATM's books: 200000 + 30000 + 3 × 50000 + 2 × 40000 + 2 × 20000 left the cassettes;
    // nothing in the state folder or journal shows a clear PAN.
    let tid = &ports.atm_terminals[0].tid;
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join(format!("atm-{tid}.json"))).expect("state"))
            .expect("json");
    assert_eq!(rec["cassettes"][0]["count"], 1000 - 50, "{rec}");
    assert_eq!(rec["owed"].as_array().map(Vec::len), Some(0));
    for entry in std::fs::read_dir(&state).expect("state dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        for c in &ports.test_cards {
            assert!(!text.contains(&c.pan), "clear PAN in the state folder");
        }
    }
    let journal = std::fs::read_to_string(state.join(format!("atm-{tid}.journal"))).expect("journal");
    assert!(journal.contains("\"event\":\"dispensed\""));
    assert!(journal.contains(&emv::card::mask(&ports.test_cards[0].pan)));
}
