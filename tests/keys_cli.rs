//! `paynet keys`: an operator creates an LMK, generates keys into a keystore file, lists and checks
//! them; the file holds no clear key, and a wrong LMK or a tampered block is refused by name.

use std::process::{Command, Output};

fn paynet(lmk: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paynet")).env("PAYNET_LMK", lmk).args(args).output().expect("run paynet")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn keystore_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("keys.toml");
    let ks = ks.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_paynet")).args(["keys", "new-lmk"]).output().unwrap();
    assert!(out.status.success());
    let lmk = text(&out.stdout).trim().to_string();
    assert_eq!(lmk.len(), 64);
    assert!(lmk.bytes().all(|b| b.is_ascii_hexdigit()));

    let out = paynet(
        &lmk,
        &[
            "keys",
            "generate",
            "--keystore",
            ks,
            "--name",
            "issuer-a.imk-ac",
            "--header",
            "D0000E0TE00N0000",
            "--len",
            "16",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kcv = text(&out.stdout).trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(kcv.len(), 6);
    let out = paynet(
        &lmk,
        &[
            "keys",
            "generate",
            "--keystore",
            ks,
            "--name",
            "vault.data",
            "--header",
            "D0000D0AB00N0000",
            "--len",
            "32",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = paynet(&lmk, &["keys", "list", "--keystore", ks]);
    let listing = text(&out.stdout);
    assert!(listing.contains("issuer-a.imk-ac\tusage E0\talgorithm T"), "{listing}");
    assert!(listing.contains(&format!("KCV {kcv}")));
    assert!(listing.contains("vault.data\tusage D0\talgorithm A"));
    let out = paynet(&lmk, &["keys", "check", "--keystore", ks]);
    assert_eq!(text(&out.stdout).trim(), "2 keys OK");

    // A second key of the same name is refused; the file is unchanged.
    let before = std::fs::read_to_string(ks).unwrap();
    let out = paynet(
        &lmk,
        &[
            "keys",
            "generate",
            "--keystore",
            ks,
            "--name",
            "vault.data",
            "--header",
            "D0000D0AB00N0000",
            "--len",
            "32",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(ks).unwrap(), before);

    // Another LMK cannot open the store; the error names the key and never prints key material.
    let other = "00".repeat(32);
    let out = paynet(&other, &["keys", "check", "--keystore", ks]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("MAC does not verify"), "{err}");
    assert!(!err.contains(&lmk));

    // A flipped character in a block is found at load.
    let tampered = before.replacen("block = \"D0112E0TE00N0000", "block = \"D0112E0TE00N0001", 1);
    std::fs::write(ks, tampered).unwrap();
    let out = paynet(&lmk, &["keys", "check", "--keystore", ks]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
}
