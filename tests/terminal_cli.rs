//! `terminal-sim pos` and `terminal-sim checkout` as a terminal vendor or an acquirer runs them:
//! the real binaries against `paynet serve --ports-file` in its own process, with phones
//! provisioned by the real `wallet-sim` binary. Taps approved with the ARPC verified by the phone,
//! twice (the phone's ATC saved between invocations), a card profile file tapped, an offline
//! decline by the terminal's risk management, an amount over the credit line declined 51, an
//! in-app payment with the phone's token and cryptogram, card-not-present with the right and a
//! wrong CVV2 (N7), bad arguments (exit 2) and a missing device file (exit 1) — and no clear PAN
//! or token on any output.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::process::{serve, workspace_bin};
use emv::card::{CardKeys, CardProfile};
use phone::Device;
use serde_json::Value;

struct World {
    dir: tempfile::TempDir,
    ports: PathBuf,
    ports_json: Value,
    terminal_sim: PathBuf,
    wallet_sim: PathBuf,
    /// Every clear PAN and token that must never be printed.
    secrets: Vec<String>,
}

impl World {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn card(&self, n: usize, field: &str) -> String {
        self.ports_json["test_cards"][n][field].as_str().expect("test card field").to_string()
    }

    /// Runs terminal-sim with the ports file and the test's state folder.
    fn terminal(&mut self, cmd: &str, args: &[&str]) -> Output {
        let out = Command::new(&self.terminal_sim)
            .arg(cmd)
            .arg("--ports-file")
            .arg(&self.ports)
            .arg("--state")
            .arg(self.path("terminal-state"))
            .args(args)
            .output()
            .expect("terminal-sim");
        self.no_secrets(&out);
        out
    }

    fn no_secrets(&self, out: &Output) {
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        for s in &self.secrets {
            assert!(!all.contains(s.as_str()), "a clear PAN or token on the output: {all}");
        }
    }

    /// Provisions test card `card` into `phone` by `model` with the real wallet-sim.
    fn provision(&mut self, model: &str, card: usize, phone: &Path) {
        let out = Command::new(&self.wallet_sim)
            .args(["provision", "--model", model, "--ports-file"])
            .arg(&self.ports)
            .args(["--card", &card.to_string(), "--phone"])
            .arg(phone)
            .output()
            .expect("wallet-sim");
        assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
        self.no_secrets(&out);
        let token = device_profile(phone).pan;
        self.secrets.push(token);
    }
}

fn device_profile(path: &Path) -> CardProfile {
    Device::open(path).expect("device").profile().expect("default card").clone()
}

/// Exit 0 and the JSON receipt.
fn receipt(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("JSON receipt")
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn pos_and_checkout_against_paynet_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = dir.path().join("ports.json");
    let _serve = serve(&ports, dir.path());
    let ports_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&ports).expect("ports")).expect("json");
    let secrets = ports_json["test_cards"]
        .as_array()
        .expect("cards")
        .iter()
        .map(|c| c["pan"].as_str().expect("pan").to_string())
        .collect();
    let mut w = World {
        dir,
        ports,
        ports_json,
        terminal_sim: workspace_bin("terminal-sim"),
        wallet_sim: workspace_bin("wallet-sim"),
        secrets,
    };

    // An HCE phone (the cloud platform's limited-use keys) taps: approved, the phone verifies the
    // ARPC, the receipt shows the masked token, the amount in EUR by its exponent.
    let hce = w.path("phone-hce.json");
    w.provision("hce", 3, &hce);
    let hce_s = hce.display().to_string();
    let out = w.terminal("pos", &["--device", &hce_s, "--amount", "1250"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), Some(0), "{stdout}{stderr}");
    for want in [
        "APPROVED",
        "ARPC verified by the card: yes",
        "EUR 12.50",
        "contactless (DE 22 071)",
        "Response   00 approved",
        "Terminal   TERM0001",
    ] {
        assert!(stdout.contains(want), "{want:?} in {stdout}");
    }
    let token = device_profile(&hce).pan;
    assert!(stdout.contains(&emv::card::mask(&token)), "masked token: {stdout}");
    let atc_after_first = device_profile(&hce).atc;

    // Tapped again (JSON): the ATC moved on and was saved in the phone file; no replay.
    let v = receipt(&w.terminal("pos", &["--device", &hce_s, "--amount", "990", "--json"]));
    assert_eq!((v["result"].as_str(), v["arpc_verified"].as_bool()), (Some("APPROVED"), Some(true)), "{v}");
    let saved = device_profile(&hce).atc;
    assert_eq!(saved, atc_after_first + 1);
    assert_eq!(v["atc"].as_str(), Some(format!("{saved:04X}").as_str()));
    assert_eq!((v["amount"].as_str(), v["currency_alpha"].as_str()), (Some("9.90"), Some("EUR")));
    assert_eq!(v["request"]["fields"]["22"], "071");
    assert_eq!(v["response"]["fields"]["39"], "00");
    assert!(v["auth_code"].as_str().is_some_and(|a| !a.is_empty()), "DE 38: {v}");
    let mut stans = vec![format!("{}/{}", v["tid"], v["stan"])];

    // A Taiwanese terminal sells in TWD (exponent 2, from the ISO 4217 table); the card is billed in
    // EUR: the receipt shows both amounts, TWD 1,000.00 charged EUR 28.57 at 0.0285714.
    let twd = ["--device", &hce_s, "--amount", "100000", "--currency", "901", "--country", "158"];
    let out = w.terminal("pos", &twd);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("Amount     TWD 1000.00"), "{stdout}");
    assert!(stdout.contains("Billed     EUR 28.57 (rate 0.0285714)"), "{stdout}");
    let v = receipt(&w.terminal("pos", &[&twd[..], &["--json"]].concat()));
    assert_eq!((v["result"].as_str(), v["amount"].as_str()), (Some("APPROVED"), Some("1000.00")), "{v}");
    assert_eq!(
        (v["billing"]["amount"].as_str(), v["billing"]["currency"].as_str(), v["billing"]["rate"].as_str()),
        (Some("28.57"), Some("978"), Some("0.0285714"))
    );

    // Two terminals tap the same phone file side by side: each waits for the other's tap to
    // finish, both are approved, no ATC given twice.
    let before = device_profile(&hce).atc;
    let children: Vec<_> = ["TERM0002", "TERM0003"]
        .iter()
        .map(|tid| {
            Command::new(&w.terminal_sim)
                .args(["pos", "--json", "--amount", "150", "--tid", tid, "--device", &hce_s, "--ports-file"])
                .arg(&w.ports)
                .arg("--state")
                .arg(w.path("terminal-state"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("terminal-sim")
        })
        .collect();
    for ch in children {
        let out = ch.wait_with_output().expect("wait");
        w.no_secrets(&out);
        let v = receipt(&out);
        assert_eq!(v["result"], "APPROVED", "{v}");
    }
    assert_eq!(device_profile(&hce).atc, before + 2);

    // The same phone on the pyiso8583-compatible listener (iso87ascii, 4-ascii framing).
    let v =
        receipt(&w.terminal(
            "pos",
            &["--device", &hce_s, "--amount", "120", "--endpoint", "acquirer_ascii", "--json"],
        ));
    assert_eq!((v["result"].as_str(), v["arpc_verified"].as_bool()), (Some("APPROVED"), Some(true)), "{v}");
    stans.push(format!("{}/{}", v["tid"], v["stan"]));

    // A card profile exported from a secure-element phone (wallet-sim export-card), tapped as a
    // plain card file: approved, and its ATC written back into the file.
    let se = w.path("phone-se.json");
    w.provision("tsm-se-token", 0, &se);
    let card_file = w.path("card.json");
    let out = Command::new(&w.wallet_sim)
        .args(["export-card", "--phone"])
        .arg(&se)
        .arg("--out")
        .arg(&card_file)
        .output()
        .expect("export");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = device_profile(&card_file).atc;
    let v = receipt(
        &w.terminal("pos", &["--device", &card_file.display().to_string(), "--amount", "500", "--json"]),
    );
    assert_eq!((v["response_code"].as_str(), v["arpc_verified"].as_bool()), (Some("00"), Some(true)), "{v}");
    assert_eq!(device_profile(&card_file).atc, before + 1);
    stans.push(format!("{}/{}", v["tid"], v["stan"]));

    // The terminal stops waiting before any answer can come: it sends the reversal advice it owes
    // (0420, DE 39 68), which the switch acknowledges.
    let out = w.terminal("pos", &["--device", &hce_s, "--amount", "700", "--timeout-ms", "0", "--json"]);
    assert_eq!(code(&out), Some(1));
    let v = receipt(&out);
    assert_eq!(
        (v["result"].as_str(), v["sent"].as_bool(), v["response_code"].as_str(), v["reversal"].as_str()),
        (Some("DECLINED"), Some(true), None, Some("acknowledged")),
        "{v}"
    );

    // Risk management: over the floor limit with that TVR bit in the denial TAC → the card gives
    // an AAC, the terminal declines offline (Z1) and sends nothing.
    let config = w.path("strict.toml");
    std::fs::write(&config, "name = \"STRICT SHOP\"\nfloor_limit = 1000\ntac_denial = \"0060008000\"\n")
        .expect("config");
    let out = w.terminal(
        "pos",
        &["--device", &hce_s, "--amount", "5000", "--config", &config.display().to_string()],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), Some(1), "{stdout}{stderr}");
    for want in ["DECLINED", "Z1 declined offline by the terminal", "nothing sent", "STRICT SHOP"] {
        assert!(stdout.contains(want), "{want:?} in {stdout}");
    }

    // Over the credit line (the last test card: 800,000): the issuer declines 51, and the card
    // still verifies the ARPC of the decline.
    let n = w.ports_json["test_cards"].as_array().expect("cards").len() - 1;
    let plastic = w.path("plastic.json");
    let profile = CardProfile {
        pan: w.card(n, "pan"),
        expiry: w.card(n, "expiry"),
        psn: w.card(n, "psn"),
        cvn: w.card(n, "cvn"),
        aid: "A0000000031010".into(),
        label: "PAYNET CREDIT".into(),
        keys: CardKeys::Master { icc_mk: w.card(n, "icc_mk") },
        atc: 0x0100,
    };
    std::fs::write(&plastic, serde_json::to_string(&profile).expect("json")).expect("write");
    let out = w.terminal("pos", &["--device", &plastic.display().to_string(), "--amount", "900000"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), Some(1), "{stdout}{stderr}");
    for want in ["DECLINED", "Response   51 insufficient funds", "ARPC verified by the card: yes"] {
        assert!(stdout.contains(want), "{want:?} in {stdout}");
    }

    // In-app: a wallet phone's token and its online cryptogram (DE 22 100), ARPC back to the phone.
    let wallet = w.path("phone-wallet.json");
    w.provision("wallet", 0, &wallet);
    let atc = device_profile(&wallet).atc;
    let v = receipt(
        &w.terminal("checkout", &["--device", &wallet.display().to_string(), "--amount", "4990", "--json"]),
    );
    assert_eq!((v["result"].as_str(), v["arpc_verified"].as_bool()), (Some("APPROVED"), Some(true)), "{v}");
    assert_eq!(
        (v["entry_mode"].as_str(), v["request"]["fields"]["22"].as_str()),
        (Some("in-app"), Some("100"))
    );
    assert!(v["request"]["fields"].get("35").is_none(), "no track data in-app");
    assert_eq!(v["tid"], "WEB00001");
    assert_eq!(device_profile(&wallet).atc, atc + 1, "the phone saved its ATC");
    stans.push(format!("{}/{}", v["tid"], v["stan"]));

    // Card not present, key-entered: the right CVV2 approved, a wrong one N7.
    let v = receipt(&w.terminal(
        "checkout",
        &["--pan-from-card", "1", "--cvv2-from-card", "1", "--amount", "1500", "--json"],
    ));
    assert_eq!((v["response_code"].as_str(), v["pos_entry_mode"].as_str()), (Some("00"), Some("810")), "{v}");
    let de48 = v["request"]["fields"]["48"].as_str().expect("DE 48");
    assert!(de48.starts_with("92") && de48.ends_with("***"), "CVV2 masked: {de48}");
    stans.push(format!("{}/{}", v["tid"], v["stan"]));
    let cvv2 = w.card(1, "cvv2");
    let wrong = format!("{:03}", (cvv2.parse::<u32>().expect("digits") + 1) % 1000);
    let pan1 = w.card(1, "pan");
    let exp1 = w.card(1, "expiry");
    let out =
        w.terminal("checkout", &["--pan", &pan1, "--expiry", &exp1, "--cvv2", &wrong, "--amount", "1500"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("Response   N7 CVV2 missing or wrong") && stdout.contains("DECLINED"),
        "{stdout}"
    );
    assert!(stdout.contains("key-entered (DE 22 810)"), "{stdout}");

    // Every invocation of one terminal its own STAN (duplicate = DE 41 + DE 11 + DE 7 again).
    let n = stans.len();
    stans.sort();
    stans.dedup();
    assert_eq!(stans.len(), n, "distinct STANs");

    // Bad arguments: exit 2, the argument named.
    for (cmd, args, named) in [
        ("pos", vec!["--device", hce_s.as_str(), "--amount", "twelve"], "--amount"),
        ("pos", vec!["--device", hce_s.as_str(), "--amount", "0"], "--amount"),
        ("pos", vec!["--device", hce_s.as_str(), "--amount", "100", "--currency", "999"], "--currency"),
        ("pos", vec!["--device", hce_s.as_str(), "--amount", "100", "--mcc", "54"], "--mcc"),
        ("pos", vec!["--amount", "100"], "--device"),
        ("checkout", vec!["--pan-from-card", "1", "--cvv2", "12", "--amount", "100"], "--cvv2"),
        ("checkout", vec!["--amount", "100"], "--device"),
    ] {
        let out = w.terminal(cmd, &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), Some(2), "{cmd} {args:?}: {stdout}{stderr}");
        assert!(stderr.contains(named), "{cmd} {args:?} should name {named}: {stderr}");
    }
    // A missing device file: exit 1, one line naming the file.
    let missing = w.path("no-such-phone.json").display().to_string();
    let out = w.terminal("pos", &["--device", &missing, "--amount", "100"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains(&missing) && stderr.lines().count() == 1, "{stderr}");
}
