//! The commented sample configuration in `config/` parses and validates.

use switch::config::SwitchConfig;

#[test]
fn sample_switch_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/switch.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let cfg = SwitchConfig::from_toml(&text).unwrap();
    assert_eq!(cfg.validate(), Vec::<String>::new());
    assert_eq!(cfg.listeners.len(), 2);
    assert_eq!(cfg.issuers[0].stand_in.max_amount_minor, 10_000);
}

#[test]
fn check_config_accepts_the_sample_and_lists_every_problem_of_a_bad_one() {
    let bin = env!("CARGO_BIN_EXE_switch");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/switch.toml");
    let out = std::process::Command::new(bin).args(["--config", path, "--check-config"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[listener]]\nname = \"a\"\nlisten = \"nowhere\"\nspec = \"nope\"\nframing = \"3-bytes\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["listen", "framing", "no [[acquirer]]", "nope"] {
        assert!(err.contains(needle), "{needle} not reported: {err}");
    }
}
