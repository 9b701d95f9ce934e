//! `atm-sim cash-advance` refuses bad arguments with exit status 2 and a one-line reason, and
//! exits 1 when it cannot reach the switch (INTERFACES.md §6) — no network needed here.

use std::process::Command;

fn ports_file(dir: &std::path::Path) -> std::path::PathBuf {
    // A switch address nobody listens on; test material only.
    let p = dir.join("ports.json");
    let json = serde_json::json!({
        "acquirer": {"host": "127.0.0.1", "port": 1, "spec": "network", "framing": "2-byte-binary"},
        "test_cards": [{"pan": "4761730000000011", "expiry": "2911", "psn": "00", "cvn": "visa18",
                        "icc_mk": "0123456789ABCDEFFEDCBA9876543210", "pin": "1234", "balance": "000005000000"}],
        "atm_terminals": [{"tid": "ATM00001", "ipek": "6AC292FAA1315B4D858AB3A3D7D5933A", "ksn": "FFFF9876543210E00000"}]
    });
    std::fs::write(&p, json.to_string()).expect("write");
    p
}

fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atm-sim"))
        .arg("cash-advance")
        .arg("--state")
        .arg(dir.join("state"))
        .args(args)
        .output()
        .expect("run atm-sim");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_exit_2_and_no_switch_exits_1() {
    let d = tempfile::tempdir().expect("tempdir");
    let pf = ports_file(d.path());
    let pf = pf.to_str().expect("path");
    let base = ["--ports-file", pf, "--json", "--pin", "1234"];
    let cases: &[(&[&str], &str)] = &[
        (&["--amount", "100000"], "--card"),
        (&["--card", "0", "--amount", "100000", "--fault", "explode"], "--fault"),
        (&["--card", "7", "--amount", "100000"], "--card"),
        (&["--card", "0", "--amount", "150500"], "--amount"),
        (&["--card", "0", "--amount", "100000", "--fault", "partial:100000"], "--fault"),
        (&["--card", "0", "--amount", "100000", "--atm", "ATM09999"], "--atm"),
        (&["--device", "/nonexistent/phone.json", "--amount", "100000"], "--device"),
    ];
    for (args, names) in cases {
        let mut all: Vec<&str> = base.to_vec();
        all.extend_from_slice(args);
        let (code, stdout, stderr) = run(d.path(), &all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: nothing on stdout");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
    let (code, _, stderr) =
        run(d.path(), &["--ports-file", pf, "--pin", "12", "--card", "0", "--amount", "100000"]);
    assert_eq!(code, 2, "{stderr}");
    // Good arguments, no switch: the outcome cannot be established.
    let (code, stdout, stderr) =
        run(d.path(), &["--ports-file", pf, "--json", "--pin", "1234", "--card", "0", "--amount", "100000"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty());
    assert!(!stderr.contains("4761730000000011"), "no clear PAN: {stderr}");
}
