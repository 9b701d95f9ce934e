//! `paytool tlv decode` run as a real process: the JSON shape of INTERFACES.md §2, exit codes and
//! one-line errors naming the argument.

use std::process::{Command, Output};

fn paytool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paytool")).args(args).output().expect("run paytool")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

#[test]
fn primitive_objects() {
    let o = paytool(&["tlv", "decode", "9F2608C8B507136D921FD09f360200 1e".replace(' ', "").as_str()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "[{\"tag\":\"9F26\",\"len\":8,\"value\":\"C8B507136D921FD0\"},{\"tag\":\"9F36\",\"len\":2,\"value\":\"001E\"}]\n"
    );
}

#[test]
fn constructed_carries_value_and_children() {
    // A GENERATE AC response in format 2 (EMV Book 3 §6.5.5.4): 77 › 9F27, 9F36, 9F26, 9F10.
    let hex = "771E9F2701809F3602001E9F2608C8B507136D921FD09F100706010A03A00000";
    let o = paytool(&["tlv", "decode", hex]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v[0]["tag"], "77");
    assert_eq!(v[0]["len"], 30);
    assert_eq!(v[0]["value"], &hex[4..]);
    let kids = v[0]["children"].as_array().expect("children");
    assert_eq!(kids.len(), 4);
    assert_eq!(kids[0], serde_json::json!({"tag": "9F27", "len": 1, "value": "80"}));
    assert_eq!(kids[3]["tag"], "9F10");
    assert!(kids[3].get("children").is_none());
    assert_eq!(stdout(&o).lines().count(), 1);
}

#[test]
fn json_flag_prints_the_same_array() {
    let plain = paytool(&["tlv", "decode", "5F2A020978"]);
    let json = paytool(&["--json", "tlv", "decode", "5F2A020978"]);
    assert_eq!(stdout(&plain), stdout(&json));
    assert_eq!(stdout(&plain), "[{\"tag\":\"5F2A\",\"len\":2,\"value\":\"0978\"}]\n");
}

#[test]
fn padding_is_skipped_unless_strict() {
    let o = paytool(&["tlv", "decode", "005F2A020978FF"]);
    assert_eq!(o.status.code(), Some(0));
    let o = paytool(&["tlv", "decode", "--strict", "005F2A020978"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("paytool: HEX: "), "{}", stderr(&o));
}

#[test]
fn bad_input_exits_2_with_one_line() {
    for (hex, needle) in [
        ("9F2608C8B5", "tag 9F26 at byte 3: expected 8 value byte(s), found 2"),
        ("9F2", "odd number of hex digits"),
        ("ZZ", "non-hex character"),
        ("5A80", "indefinite"),
        ("5A8401000000", "84"),
        ("9F", "complete tag"),
    ] {
        let o = paytool(&["tlv", "decode", hex]);
        assert_eq!(o.status.code(), Some(2), "{hex}");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.starts_with("paytool: HEX: "), "{e}");
        assert!(e.contains(needle), "{hex}: {e}");
        assert!(stdout(&o).is_empty());
    }
}

#[test]
fn missing_argument_exits_2() {
    let o = paytool(&["tlv", "decode"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn empty_input_is_an_empty_array() {
    let o = paytool(&["tlv", "decode", ""]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "[]\n");
}
