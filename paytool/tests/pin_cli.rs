//! `paytool pin encrypt|decrypt|translate`, `paytool pvv`, `paytool dukpt ipek|key` as a real
//! process: X9.24-1 Annex A and X9.24-3 known answers, psec's documented PVV, PIN blocks that round
//! trip through translation, and one-line errors naming the argument without echoing a PIN.

use std::process::{Command, Output};

fn paytool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paytool")).args(args).output().expect("run paytool")
}

fn ok(args: &[&str]) -> String {
    let out = paytool(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim_end().to_string()
}

fn bad(args: &[&str], arg: &str) -> String {
    let out = paytool(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let e = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(arg), "expected {arg} in {e}");
    e
}

const BDK: &str = "0123456789ABCDEFFEDCBA9876543210";

#[test]
fn dukpt_known_answers() {
    // ANSI X9.24-1:2009 Annex A: IPEK, and the PIN key of the first transaction.
    assert_eq!(
        ok(&["dukpt", "ipek", "--bdk", BDK, "--ksn", "FFFF9876543210E00000"]),
        "6AC292FAA1315B4D858AB3A3D7D5933A"
    );
    assert_eq!(
        ok(&["dukpt", "key", "--bdk", BDK, "--ksn", "FFFF9876543210E00001", "--usage", "pin"]),
        "042666B49184CF5C68DE9628D0397B36"
    );
    // ANSI X9.24-3-2017 Annex B: AES-128 BDK, initial key ID 1234567890123456 → initial key.
    assert_eq!(
        ok(&[
            "dukpt",
            "ipek",
            "--aes",
            "--bdk",
            "FEDCBA9876543210F1F1F1F1F1F1F1F1",
            "--ksn",
            "123456789012345600000001"
        ]),
        "1273671EA26AC29AFA4D1084127652A1"
    );
    bad(&["dukpt", "key", "--bdk", BDK, "--ksn", "FFFF9876543210E00001", "--usage", "pins"], "--usage");
    bad(&["dukpt", "ipek", "--bdk", BDK, "--ksn", "FFFF98"], "--ksn");
    bad(
        &[
            "dukpt",
            "key",
            "--aes",
            "--bdk",
            "FEDCBA9876543210F1F1F1F1F1F1F1F1",
            "--ksn",
            "123456789012345600000001",
            "--usage",
            "pin",
            "--key-type",
            "aes256",
        ],
        "--key-type",
    );
}

#[test]
fn pin_blocks_round_trip_and_translate() {
    let zpk = "0123456789ABCDEFFEDCBA9876543210";
    let aes = "000102030405060708090A0B0C0D0E0F";
    let pan = "5544332211009966";
    for (format, key) in [("0", zpk), ("1", zpk), ("3", zpk), ("4", aes)] {
        let block =
            ok(&["pin", "encrypt", "--format", format, "--key", key, "--pin", "482716", "--pan", pan]);
        assert_eq!(block.len(), if format == "4" { 32 } else { 16 });
        assert_eq!(
            ok(&["pin", "decrypt", "--format", format, "--key", key, "--block", &block, "--pan", pan]),
            "482716"
        );
        let other = ok(&[
            "pin",
            "translate",
            "--from-format",
            format,
            "--from-key",
            key,
            "--to-format",
            "4",
            "--to-key",
            aes,
            "--block",
            &block,
            "--pan",
            pan,
        ]);
        assert_eq!(
            ok(&["pin", "decrypt", "--format", "4", "--key", aes, "--block", &other, "--pan", pan]),
            "482716"
        );
    }
    // psec 1.3.0 pin.generate_visa_pvv docstring.
    assert_eq!(
        ok(&["pvv", "--pvk", zpk, "--pan", "1122334455667788", "--pvki", "3", "--pin", "4524"]),
        "4021"
    );
}

#[test]
fn pin_errors_never_echo_the_pin() {
    let e = bad(
        &["pin", "encrypt", "--format", "0", "--key", BDK, "--pin", "12x4", "--pan", "5544332211009966"],
        "--pin",
    );
    assert!(!e.contains("12x4"), "{e}");
    bad(
        &["pin", "encrypt", "--format", "2", "--key", BDK, "--pin", "1234", "--pan", "5544332211009966"],
        "--format",
    );
    bad(
        &[
            "pin",
            "encrypt",
            "--format",
            "4",
            "--key",
            "0123456789ABCDEF0123",
            "--pin",
            "1234",
            "--pan",
            "5544332211009966",
        ],
        "--key",
    );
    bad(
        &["pin", "decrypt", "--format", "0", "--key", BDK, "--block", "0011", "--pan", "5544332211009966"],
        "--block",
    );
    bad(&["pvv", "--pvk", BDK, "--pan", "1122334455667788", "--pvki", "12", "--pin", "4524"], "--pvki");
}
