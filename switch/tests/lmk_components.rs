//! The real `switch` binary with its LMK from two custodians' component files: it starts (every
//! key block unwrapped under their XOR); a component readable by others, or whose KCV is not the
//! configured one, stops it at start-up with the file or the component named and no component in
//! the message.

mod common;

use std::path::Path;
use std::process::Command;

use crypto::keys::to_hex;
use crypto::keystore::Lmk;

/// Component 1, and component 2 = component 1 XOR the test LMK ([`common::LMK_HEX`]).
fn components() -> (String, String) {
    let lmk = hex::decode(common::LMK_HEX).expect("hex");
    let c1: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(73).wrapping_add(5)).collect();
    let c2: Vec<u8> = c1.iter().zip(&lmk).map(|(a, b)| a ^ b).collect();
    (to_hex(&c1), to_hex(&c2))
}

fn aes_kcv(h: &str) -> String {
    to_hex(&crypto::AesKey::from_hex("c", h).expect("key").kcv())
}

fn write_private(p: &Path, text: &str, mode: u32) {
    std::fs::write(p, text).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    #[cfg(not(unix))]
    let _ = mode;
}

fn config(kcv1: &str, kcv2: &str, lmk_kcv: &str) -> String {
    format!(
        r#"
[node]
name = "components"
data_dir = "data"

[admin]
listen = "127.0.0.1:0"

[keys]
keystore = "keys.toml"
lmk_components = [{{ file = "c1.hex", kcv = "{kcv1}" }}, {{ file = "c2.hex", kcv = "{kcv2}" }}]
lmk_kcv = "{lmk_kcv}"

[[listener]]
name = "acquirer"
listen = "127.0.0.1:0"
spec = "network"
framing = "2-byte-binary"
"#
    )
}

#[test]
fn the_switch_starts_on_its_components_and_refuses_bad_ones() {
    let (c1, c2) = components();
    let (k1, k2) = (aes_kcv(&c1), aes_kcv(&c2));
    let lmk_kcv = to_hex(&Lmk::from_hex(common::LMK_HEX).expect("LMK").kcv());
    let dir = tempfile::tempdir().expect("tmp");
    write_private(&dir.path().join("c1.hex"), &format!("{c1}\n"), 0o600);
    write_private(&dir.path().join("c2.hex"), &c2, 0o400);
    let p = dir.path().to_path_buf();
    // The started node has unwrapped every node key under the components' XOR.
    let sw = common::start_in(dir, &config(&k1, &k2, &lmk_kcv));
    drop(sw);
    assert!(!p.exists(), "the switch's folder goes with it");

    // The same files, refused: a wrong KCV for component 2, then component 1 readable by others.
    let run = |dir: &Path, cfg: &str| {
        let path = dir.join("switch.toml");
        std::fs::write(&path, common::with_test_acquirer(cfg)).expect("config");
        let out = Command::new(env!("CARGO_BIN_EXE_switch"))
            .arg("--config")
            .arg(&path)
            .env_remove("PAYNET_LMK")
            .env("RUST_LOG", "off")
            .output()
            .expect("switch");
        assert_eq!(out.status.code(), Some(1));
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        for c in [&c1, &c2] {
            assert!(!e.contains(&c[..16]), "a component in the message: {e}");
        }
        e
    };
    let dir = tempfile::tempdir().expect("tmp");
    common::keystore(dir.path());
    write_private(&dir.path().join("c1.hex"), &c1, 0o600);
    write_private(&dir.path().join("c2.hex"), &c2, 0o600);
    let e = run(dir.path(), &config(&k1, "000000", &lmk_kcv));
    assert!(e.contains(&format!("LMK component 2 has KCV {k2}, not the configured 000000")), "{e}");
    assert!(e.contains("c2.hex"), "{e}");
    let e = run(dir.path(), &config(&k1, &k2, "ABCDEF"));
    assert!(e.contains(&format!("combined LMK has KCV {lmk_kcv}, not the configured ABCDEF")), "{e}");
    #[cfg(unix)]
    {
        write_private(&dir.path().join("c1.hex"), &c1, 0o644);
        let e = run(dir.path(), &config(&k1, &k2, &lmk_kcv));
        assert!(e.contains("LMK component 1 file") && e.contains("c1.hex has mode 0644"), "{e}");
    }
}
