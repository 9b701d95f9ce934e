//! A merchant terminal never loses a reversal: `terminal-sim pos` against the real `paynet serve`
//! process through a relay that passes the 0100 to the switch (the issuer books it) but swallows
//! everything after — the answer never comes back and the reversal advice is never acknowledged.
//! One terminal is killed while it waits (its reversal was kept before the 0100 left), another
//! gives up waiting and its advice goes unacknowledged. Both stay owed in the state folder
//! (sealed, the PAN masked in the listing, no clear PAN in any file); `terminal-sim reversals`
//! against the still-silent relay leaves them owed; each terminal's next `pos` straight to the
//! switch delivers its advice before its own 0100, and the issuer's open-to-buy shows both
//! amounts released: an amount that only fits once they are released is approved.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::process::{serve, workspace_bin};
use emv::card::{CardKeys, CardProfile};
use serde_json::Value;

/// A relay on 127.0.0.1: its first `forwarded` connections are passed to `upstream` one way (the
/// request gets there, its answer goes nowhere); later connections are read and never answered.
fn one_way_relay(upstream: String, forwarded: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut client) = conn else { return };
            if n < forwarded {
                let Ok(mut up) = TcpStream::connect(&upstream) else { return };
                let Ok(mut drain) = up.try_clone() else { return };
                std::thread::spawn(move || std::io::copy(&mut drain, &mut std::io::sink()));
                std::thread::spawn(move || std::io::copy(&mut client, &mut up));
            } else {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
                    let _ = client.flush();
                });
            }
        }
    });
    port
}

struct World {
    dir: tempfile::TempDir,
    terminal_sim: PathBuf,
    secrets: Vec<String>,
}

impl World {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs terminal-sim with the test's state folder; no clear PAN on any output.
    fn run(&self, cmd: &str, ports: &Path, args: &[&str]) -> Output {
        let out = Command::new(&self.terminal_sim)
            .arg(cmd)
            .arg("--ports-file")
            .arg(ports)
            .arg("--state")
            .arg(self.path("terminal-state"))
            .args(args)
            .output()
            .expect("terminal-sim");
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        for s in &self.secrets {
            assert!(!all.contains(s.as_str()), "a clear PAN on the output: {all}");
        }
        out
    }

    /// No file of the state folder holds a clear PAN.
    fn state_has_no_clear_pan(&self) {
        for f in std::fs::read_dir(self.path("terminal-state")).expect("state folder") {
            let path = f.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read");
            for s in &self.secrets {
                assert!(
                    !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                    "a clear PAN in {}",
                    path.display()
                );
            }
        }
    }
}

fn json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON object ({e}): {stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn an_unacknowledged_reversal_is_delivered_before_the_next_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = dir.path().join("ports.json");
    let _serve = serve(&ports, dir.path());
    let ports_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&ports).expect("ports")).expect("json");
    let cards = ports_json["test_cards"].as_array().expect("cards").clone();
    let secrets = cards.iter().map(|c| c["pan"].as_str().expect("pan").to_string()).collect();
    let w = World { dir, terminal_sim: workspace_bin("terminal-sim"), secrets };

    // The last test card, as a card profile file the terminal taps (its ATC written back).
    let card = cards.last().expect("a test card");
    let field = |f: &str| card[f].as_str().expect("card field").to_string();
    let credit_line: u64 = field("balance").parse().expect("balance");
    let plastic = w.path("plastic.json");
    let profile = CardProfile {
        pan: field("pan"),
        expiry: field("expiry"),
        psn: field("psn"),
        cvn: field("cvn"),
        aid: "A0000000031010".into(),
        label: "PAYNET CREDIT".into(),
        keys: CardKeys::Master { icc_mk: field("icc_mk") },
        atc: 0x0200,
    };
    std::fs::write(&plastic, serde_json::to_string(&profile).expect("json")).expect("write");
    let device = plastic.display().to_string();

    // The ports file of the relay: the first two connections (the two 0100s below) reach the
    // switch, nothing comes back, and nothing later gets through.
    let acq = &ports_json["acquirer"];
    let upstream = format!("{}:{}", acq["host"].as_str().expect("host"), acq["port"]);
    let mut relayed = ports_json.clone();
    relayed["acquirer"]["port"] = one_way_relay(upstream, 2).into();
    let relay_ports = w.path("relay-ports.json");
    std::fs::write(&relay_ports, relayed.to_string()).expect("write");

    // 0. Terminal TERM0002 is killed while waiting for the answer to its 0100 (an eighth of the
    // line, booked by the issuer): the reversal it would owe was kept before the 0100 left.
    let eighth = (credit_line / 8).to_string();
    let mut crashing = Command::new(&w.terminal_sim)
        .args(["pos", "--tid", "TERM0002", "--device", &device, "--amount", &eighth, "--timeout-ms", "60000"])
        .arg("--ports-file")
        .arg(&relay_ports)
        .arg("--state")
        .arg(w.path("terminal-state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("terminal-sim");
    let kept = w.path("terminal-state").join("owed-TERM0002.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&kept).is_ok_and(|t| t.contains("\"stan\"")) {
        assert!(std::time::Instant::now() < deadline, "the reversal was not kept before the 0100");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    crashing.kill().expect("kill");
    let _ = crashing.wait();

    // 1. Three quarters of the credit line; no answer in time, the advice never acknowledged.
    let first = credit_line / 4 * 3;
    let first_s = first.to_string();
    let out = w.run(
        "pos",
        &relay_ports,
        &[
            "--device",
            &device,
            "--amount",
            &first_s,
            "--timeout-ms",
            "0",
            "--advice-timeout-ms",
            "500",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(
        (
            v["sent"].as_bool(),
            v["response_code"].as_str(),
            v["reversal"].as_str(),
            v["owed_advices_left"].as_u64()
        ),
        (Some(true), None, Some("owed"), Some(1)),
        "{v}"
    );
    let first_stan = v["stan"].as_str().expect("STAN").to_string();
    w.state_has_no_clear_pan();

    // 2. `reversals` while the switch still does not answer: still owed, listed masked.
    let out = w.run("reversals", &relay_ports, &["--advice-timeout-ms", "300", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json(&out);
    assert_eq!((r["delivered"].as_u64(), r["remaining"].as_u64()), (Some(0), Some(2)), "{r}");
    let owed = &r["terminals"][0]["remaining"][0];
    assert_eq!(r["terminals"][0]["tid"], "TERM0001");
    assert_eq!(
        (owed["original_stan"].as_str(), owed["reason"].as_str(), owed["amount_minor"].as_u64()),
        (Some(first_stan.as_str()), Some("68"), Some(first)),
        "{owed}"
    );
    assert_eq!(owed["pan"].as_str(), Some(emv::card::mask(&profile.pan).as_str()));
    assert_eq!(owed["attempts"].as_u64(), Some(2), "sent with the transaction, and again now");
    let crashed = &r["terminals"][1]["remaining"][0];
    assert_eq!(r["terminals"][1]["tid"], "TERM0002");
    assert_eq!(
        (crashed["reason"].as_str(), crashed["attempts"].as_u64(), crashed["amount_minor"].as_u64()),
        (Some("68"), Some(1), Some(credit_line / 8)),
        "kept before the crash, first sent now: {crashed}"
    );
    assert!(owed.get("sealed").is_none(), "the listing carries no sealed message");
    let out = w.run("reversals", &relay_ports, &["--advice-timeout-ms", "300"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let masked = emv::card::mask(&profile.pan);
    assert!(
        table.contains("TERM0001: 0 delivered, 0 refused, 1 still owed") && table.contains(&masked),
        "{table}"
    );
    assert!(table.contains("TERM0002: 0 delivered, 0 refused, 1 still owed"), "{table}");
    w.state_has_no_clear_pan();

    // The issuer booked the first amount: the same again does not fit (asked by another terminal,
    // which owes nothing, so nothing is delivered first).
    let out =
        w.run("pos", &ports, &["--device", &device, "--amount", &first_s, "--tid", "TERM0009", "--json"]);
    let v = json(&out);
    assert_eq!(
        (v["response_code"].as_str(), v["owed_advices_delivered"].as_u64()),
        (Some("51"), Some(0)),
        "{v}"
    );

    // 3. The next transaction, straight to the switch: the owed advice goes first.
    let out = w.run("pos", &ports, &["--device", &device, "--amount", "100", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(
        (v["result"].as_str(), v["owed_advices_delivered"].as_u64(), v["owed_advices_left"].as_u64()),
        (Some("APPROVED"), Some(1), Some(0)),
        "{v}"
    );
    let out = w.run("pos", &ports, &["--device", &device, "--amount", "100", "--tid", "TERM0002", "--json"]);
    let v = json(&out);
    assert_eq!(
        (v["result"].as_str(), v["owed_advices_delivered"].as_u64(), v["owed_advices_left"].as_u64()),
        (Some("APPROVED"), Some(1), Some(0)),
        "the killed terminal's reversal delivered first: {v}"
    );
    let out = w.run("reversals", &ports, &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["remaining"].as_u64(), Some(0));
    let out = w.run("reversals", &ports, &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("TERM0001: 0 delivered, 0 refused, 0 still owed"), "{table}");

    // 4. Both amounts were released at the issuer: all the line but 1000 fits only if they were
    // (the switch hands the 0420 to the issuer through store-and-forward, a
    // moment after acknowledging it; a 51 books nothing, so asking again is harmless).
    let most = (credit_line - 1000).to_string();
    let mut last = Value::Null;
    for _ in 0..20 {
        let out = w.run("pos", &ports, &["--device", &device, "--amount", &most, "--json"]);
        last = json(&out);
        if last["response_code"] != "51" {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        (last["result"].as_str(), last["response_code"].as_str()),
        (Some("APPROVED"), Some("00")),
        "{last}"
    );
    w.state_has_no_clear_pan();
}
