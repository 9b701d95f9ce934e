//! `paytool emv arqc|arpc|icc-mk` and `paytool cvv` as a real process, on the published examples of
//! pyemv 1.5.0 and psec 1.3.0 (INTERFACES.md §2 forms), and their one-line errors.

use std::process::{Command, Output};

fn paytool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paytool")).args(args).output().expect("run paytool")
}

fn ok(args: &[&str]) -> String {
    let out = paytool(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim_end().to_string()
}

fn bad(args: &[&str], arg: &str) {
    let out = paytool(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let e = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(arg), "expected {arg} in {e}");
    assert!(!e.contains("AAAAAAAA"), "a key leaked into the error: {e}");
}

const CARD: [&str; 10] = [
    "--cvn",
    "visa18",
    "--imk",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "--pan",
    "1234567890123456",
    "--psn",
    "00",
    "--atc",
    "0FFF",
];
const DATA: &str = "0000000099990000000000000840800004800008409912310152BF458518000FFF06011203A0B800";

#[test]
fn pyemv_cvn18_example() {
    // pyemv 1.5.0 cvn module docstring (VisaCVN18): ARQC 769577B5ABE9FE62, ARPC 76503F48.
    let mut a = vec!["emv", "arqc"];
    a.extend(CARD);
    a.extend(["--data", DATA]);
    assert_eq!(ok(&a), "769577B5ABE9FE62");
    let mut a = vec!["emv", "arpc"];
    a.extend(CARD);
    a.extend(["--arqc", "769577b5abe9fe62", "--csu", "00000000"]);
    assert_eq!(ok(&a), "76503F48");
    a.insert(0, "--json");
    assert_eq!(ok(&a), "{\"arpc\":\"76503F48\"}");
}

#[test]
fn icc_master_key_options_and_cvv() {
    // pyemv 1.5.0 kd docstrings.
    let base = [
        "emv",
        "icc-mk",
        "--imk",
        "0123456789ABCDEFFEDCBA9876543210",
        "--pan",
        "12345678901234567",
        "--psn",
        "01",
    ];
    assert_eq!(ok(&base), "73AD54688CEF2934B0979857E3C719F1");
    let mut b = base.to_vec();
    b.extend(["--option", "b"]);
    assert_eq!(ok(&b), "AD406D7F6D7570916D75E5DCAB8CF737");
    // psec 1.3.0 cvv.generate_cvv docstring.
    assert_eq!(
        ok(&[
            "cvv",
            "--cvk",
            "0123456789ABCDEFFEDCBA9876543210",
            "--pan",
            "1234567890123456",
            "--exp",
            "9912",
            "--service",
            "220"
        ]),
        "170"
    );
}

#[test]
fn errors_name_the_argument() {
    let with = |extra: &[&'static str], over: &[(&str, &'static str)]| {
        let mut a: Vec<&str> = vec!["emv", "arqc"];
        let mut card = CARD.to_vec();
        for (k, v) in over {
            let i = card.iter().position(|x| x == k).expect("arg");
            card[i + 1] = v;
        }
        a.extend(card);
        a.extend(extra);
        a
    };
    bad(&with(&["--data", DATA], &[("--cvn", "visa11")]), "--cvn");
    bad(&with(&["--data", DATA], &[("--imk", "AAAA")]), "--imk");
    bad(&with(&["--data", DATA], &[("--pan", "12345X7890123456")]), "--pan");
    bad(&with(&["--data", DATA], &[("--psn", "1")]), "--psn");
    bad(&with(&["--data", DATA], &[("--atc", "0FF")]), "--atc");
    bad(&with(&["--data", "ABC"], &[]), "--data");
    bad(&with(&["--data", DATA], &[("--cvn", "mc16")]), "--un");
    bad(
        &[
            "cvv",
            "--cvk",
            "0123456789ABCDEFFEDCBA9876543210",
            "--pan",
            "1234567890123456",
            "--exp",
            "991",
            "--service",
            "220",
        ],
        "--exp",
    );
    let mut a = vec!["emv", "arpc"];
    a.extend(CARD);
    a.extend(["--arqc", "769577B5ABE9FE62", "--arc", "3030"]);
    bad(&a, "--arc");
}
