//! `paytool mac`, `kcv` and `keyblock` run as a real process (INTERFACES.md §2): answers in
//! uppercase hex on one line, `--json` one object, exit 2 with a one-line error naming the argument.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn paytool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paytool")).args(args).output().expect("run paytool")
}

fn ok(args: &[&str]) -> String {
    let out = paytool(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.ends_with('\n') && s.lines().count() == 1, "{s:?}");
    s.trim_end().to_string()
}

fn bad(args: &[&str], arg: &str) -> String {
    let out = paytool(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(out.stdout.is_empty());
    let e = String::from_utf8(out.stderr).unwrap();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(arg), "expected {arg} in {e}");
    e
}

const NOW_IS_THE_TIME: &str = "4E6F77206973207468652074696D6520666F7220616C6C20";

#[test]
fn mac_algorithms() {
    // ISO/IEC 9797-1:2011 Annex B.4 (retail MAC), Annex B algorithm 1 (DES as K||K).
    let k = "0123456789abcdeffedcba9876543210";
    assert_eq!(ok(&["mac", "--alg", "retail", "--key", k, "--data", NOW_IS_THE_TIME]), "A1C72E74EA3FA9B6");
    assert_eq!(
        ok(&["mac", "--alg", "retail", "--key", k, "--data", NOW_IS_THE_TIME, "--len", "4"]),
        "A1C72E74"
    );
    let single = "0123456789ABCDEF0123456789ABCDEF";
    assert_eq!(
        ok(&["mac", "--alg", "iso9797-1-m1", "--key", single, "--data", NOW_IS_THE_TIME]),
        "70A30640CC76DD8B"
    );
    // psec 1.3.0's documented generate_cbc_mac example (padding method 2).
    assert_eq!(
        ok(&["mac", "--alg", "iso9797-1-m2", "--key", k, "--data", "1234567890ABCDEF"]),
        "925B1737EF681AD3"
    );
    // NIST SP 800-38B D.1 example 2 (AES-128) and the two-key TDEA example 2.
    let aes = "2b7e151628aed2a6abf7158809cf4f3c";
    assert_eq!(
        ok(&["mac", "--alg", "cmac", "--key", aes, "--data", "6bc1bee22e409f96e93d7e117393172a"]),
        "070A16B46B4D4144F79BDD9DD04A287C"
    );
    let tdes2 = "4cf15134a2850dd58a3d10ba80570d38";
    assert_eq!(
        ok(&["mac", "--alg", "cmac-tdes", "--key", tdes2, "--data", "6bc1bee22e409f96"]),
        "4FF2AB813C53CE83"
    );
    // RFC 4231 test case 2.
    let data = "7768617420646f2079612077616e7420666f72206e6f7468696e673f";
    assert_eq!(
        ok(&["mac", "--alg", "hmac-sha256", "--key", "4a656665", "--data", data]),
        "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843"
    );
    let j = ok(&["--json", "mac", "--alg", "retail", "--key", k, "--data", NOW_IS_THE_TIME]);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["mac"], "A1C72E74EA3FA9B6");
}

#[test]
fn mac_errors() {
    bad(&["mac", "--alg", "cbc", "--key", "00", "--data", "00"], "--alg");
    let e = bad(&["mac", "--alg", "retail", "--key", "0123456789ABCDEF", "--data", "00"], "--key");
    assert!(!e.contains("0123456789ABCDEF"), "{e}");
    let aes = "0123456789ABCDEF0123456789ABCDEF";
    bad(&["mac", "--alg", "cmac", "--key", aes, "--data", "0G"], "--data");
    bad(&["mac", "--alg", "cmac", "--key", aes, "--data", "00", "--len", "17"], "--len");
}

#[test]
fn kcv() {
    // The widely published test key 0123456789ABCDEFFEDCBA9876543210 has KCV 08D7B4.
    assert_eq!(ok(&["kcv", "--key", "0123456789ABCDEFFEDCBA9876543210"]), "08D7B4");
    // TR-31:2018 A.7.4: the AES-128 key 3F419E1C… has KCV 08793E (CMAC of zeros).
    assert_eq!(ok(&["kcv", "--key", "3F419E1CB7079442AA37474C2EFBF8B8", "--alg", "aes"]), "08793E");
    assert_eq!(ok(&["--json", "kcv", "--key", "0123456789ABCDEFFEDCBA9876543210"]), r#"{"kcv":"08D7B4"}"#);
    bad(&["kcv", "--key", "0123"], "--key");
    bad(&["kcv", "--key", "0123456789ABCDEFFEDCBA9876543210", "--alg", "rsa"], "--alg");
}

#[test]
fn keyblock_unwrap_published_examples() {
    // TR-31:2018 A.7.2.2 (version B) and A.7.4 (version D), via openemv/tr31's tests.
    let b = "B0080P0TE00E000094B420079CC80BA3461F86FE26EFC4A3B8E4FA4C5F5341176EED7B727B8A248E";
    assert_eq!(
        ok(&["keyblock", "unwrap", "--kbpk", "DD7515F2BFC17F85CE48F3CA25CB21F6", "--block", b]),
        "3F419E1CB7079442AA37474C2EFBF8B8"
    );
    let d = "D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A27E8E31DA05F7425509593D03A457DC34";
    let kbpk = "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6";
    let j = ok(&["--json", "keyblock", "unwrap", "--kbpk", kbpk, "--block", d]);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["key"], "3F419E1CB7079442AA37474C2EFBF8B8");
    assert_eq!(v["kcv"], "08793E");
    assert_eq!(v["usage"], "P0");
}

#[test]
fn keyblock_wrap_then_unwrap() {
    let aes256 = "41".repeat(32);
    let aes128 = "33".repeat(16);
    let key32 = "AB".repeat(32);
    let cases = [
        ("B0000P0TE00N0000", "DD7515F2BFC17F85CE48F3CA25CB21F6", "3f419e1cb7079442aa37474c2efbf8b8", 80),
        ("D9999M3TC00N0000", aes256.as_str(), "1FA1F7CEC798D91545DA8AE0C7796BD9", 112),
        (
            "B0000B0TX00S0100KS1800604B120F9292800000",
            "1D22BF32387C600AD97F9B97A51311AC",
            "E8BC63E5479455E26577F715D587FE68",
            104,
        ),
        ("D0000D0AB00E0100KS1800604B120F9292800000", aes128.as_str(), key32.as_str(), 0),
    ];
    for (header, kbpk, key, len) in cases {
        let block = ok(&["keyblock", "wrap", "--kbpk", kbpk, "--key", key, "--header", header]);
        if len != 0 {
            assert_eq!(block.len(), len, "{block}");
        }
        // Usage..exportability as given; the block count may grow by the PB block.
        assert_eq!(&block[5..12], &header[5..12]);
        assert_eq!(block[1..5].parse::<usize>().unwrap(), block.len());
        assert_eq!(ok(&["keyblock", "unwrap", "--kbpk", kbpk, "--block", &block]), key.to_uppercase());
        // Padding is random: two wraps differ.
        let again = ok(&["keyblock", "wrap", "--kbpk", kbpk, "--key", key, "--header", header]);
        assert_ne!(block, again);
    }
}

#[test]
fn keyblock_errors() {
    let kbpk = "DD7515F2BFC17F85CE48F3CA25CB21F6";
    let key = "3F419E1CB7079442AA37474C2EFBF8B8";
    let block = "B0080P0TE00E000094B420079CC80BA3461F86FE26EFC4A3B8E4FA4C5F5341176EED7B727B8A248E";
    let tampered = block.replace("94B4", "94B5");
    let e = bad(&["keyblock", "unwrap", "--kbpk", kbpk, "--block", &tampered], "--block");
    assert!(e.contains("MAC does not verify") && !e.contains(key), "{e}");
    bad(&["keyblock", "unwrap", "--kbpk", "00", "--block", block], "--kbpk");
    bad(&["keyblock", "unwrap", "--kbpk", kbpk, "--block", &block[..40]], "--block");
    let e =
        bad(&["keyblock", "unwrap", "--kbpk", kbpk, "--block", &block.replace("P0TE", "P0T*")], "--block");
    assert!(e.contains("mode of use at position 8"), "{e}");
    bad(&["keyblock", "wrap", "--kbpk", kbpk, "--key", "0011", "--header", "B0000P0TE00N0000"], "--key");
    bad(&["keyblock", "wrap", "--kbpk", kbpk, "--key", key, "--header", "B0000P0TE00N00"], "--header");
    let e =
        bad(&["keyblock", "wrap", "--kbpk", kbpk, "--key", key, "--header", "X0000P0TE00N0000"], "--header");
    assert!(e.contains("version ID at position 0"), "{e}");
    let not_aes = "11".repeat(20);
    bad(&["keyblock", "wrap", "--kbpk", &not_aes, "--key", key, "--header", "D0000P0AE00N0000"], "--kbpk");
}
