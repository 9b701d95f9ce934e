//! `paytool iso8583 decode|encode|describe` run as a real process: the JSON form of INTERFACES.md
//! §1, raw and hex carriage, custom spec files, masked describe, one-line errors, exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn paytool(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paytool"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run paytool");
    child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"))).expect("example")
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("utf-8")
}

#[test]
fn decode_hex_gives_the_json_form() {
    let o =
        paytool(&["iso8583", "decode", "--spec", "iso87ascii", "--hex"], &example("0100-contactless.hex"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let want: serde_json::Value = serde_json::from_slice(&example("0100-contactless.json")).expect("JSON");
    assert_eq!(got, want);
    assert_eq!(text(&o.stdout).lines().count(), 1);
}

#[test]
fn encode_raw_and_hex_round_trip_through_decode() {
    let json = example("0100-contactless.json");
    let raw = paytool(&["iso8583", "encode", "--spec", "iso87binary"], &json);
    assert_eq!(raw.status.code(), Some(0), "{}", text(&raw.stderr));
    assert!(raw.stdout.starts_with(b"0100") && raw.stdout.last() != Some(&b'\n'));
    let hex = paytool(&["iso8583", "encode", "--spec", "iso87binary", "--hex"], &json);
    assert_eq!(text(&hex.stdout).trim_end(), hex::encode_upper(&raw.stdout));
    // Lowercase hex with trailing whitespace is accepted on input.
    let lower = format!("{}\n\n", hex::encode(&raw.stdout));
    let back = paytool(&["iso8583", "decode", "--spec", "iso87binary", "--hex"], lower.as_bytes());
    assert_eq!(back.status.code(), Some(0), "{}", text(&back.stderr));
    let back_raw = paytool(&["iso8583", "decode", "--spec", "iso87binary"], &raw.stdout);
    assert_eq!(back.stdout, back_raw.stdout);
    let a: serde_json::Value = serde_json::from_slice(&back.stdout).expect("JSON");
    let b: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(a, b);
}

#[test]
fn describe_masks() {
    let o =
        paytool(&["iso8583", "describe", "--spec", "iso87ascii", "--hex"], &example("0100-contactless.hex"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("476173******0010"), "{out}");
    assert!(!out.contains("4761739001010010") && !out.contains("=2812"), "{out}");
    assert!(out.contains("Card Acceptor Terminal ID") && out.contains("TERM0001"), "{out}");
}

#[test]
fn custom_spec_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.toml");
    std::fs::write(
        &path,
        "name = \"tiny\"\nmti = \"bcd\"\nbitmap = \"binary\"\n\n[fields.3]\nlength = \"FIXED\"\ncontent = \"n\"\nencoding = \"bcd-left\"\nmax_len = 6\n\n[fields.41]\nlength = \"FIXED\"\ncontent = \"ans\"\nencoding = \"ebcdic\"\nmax_len = 8\n",
    )
    .expect("write spec");
    let spec = path.to_str().expect("utf-8 path");
    let o = paytool(
        &["iso8583", "encode", "--spec", spec, "--hex"],
        br#"{"mti":"0800","fields":{"3":"990000","41":"TERM0001"}}"#,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // BCD MTI, binary bitmap (DE 3, 41), BCD DE 3, EBCDIC DE 41.
    assert_eq!(text(&o.stdout).trim_end(), "08002000000000800000990000E3C5D9D4F0F0F0F1");
}

#[test]
fn errors_are_one_line_name_the_input_and_exit_2() {
    let cases: &[(&[&str], &[u8], &str)] = &[
        (&["iso8583", "decode", "--spec", "nope"], b"", "--spec"),
        (&["iso8583", "decode", "--spec", "/no/such/spec.toml"], b"", "--spec"),
        (&["iso8583", "decode", "--spec", "iso87ascii", "--hex"], b"30313030ZZ", "stdin"),
        (&["iso8583", "decode", "--spec", "iso87ascii"], b"0100723C", "stdin"),
        (&["iso8583", "encode", "--spec", "iso87ascii"], b"{not json", "stdin"),
        (
            &["iso8583", "encode", "--spec", "iso87ascii"],
            br#"{"mti":"0100","fields":{"3":"12AB56"}}"#,
            "DE 3",
        ),
        (&["iso8583", "decode"], b"", "--spec"),
    ];
    for (args, input, needle) in cases {
        let o = paytool(args, input);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = text(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}
