//! The key ceremony with the real `paynet` binary: `keys new-lmk --components 3` writes three
//! private component files whose check values (recomputed here from the files) are the ones
//! printed, and whose XOR is the LMK of the printed KCV; a keystore made under that LMK is
//! re-wrapped (`keys rewrap`) under a new two-component TDES LMK with every key's KCV unchanged,
//! after which the old LMK no longer opens it. A component readable by others or entered with
//! the wrong check value is refused by name, and no output ever holds a component.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crypto::keys::{AesKey, TdesKey, to_hex};

fn paynet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paynet"))
        .env_remove("PAYNET_LMK")
        .args(args)
        .output()
        .expect("run paynet")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs paynet, asserts success, and that neither output holds any of `secrets`.
fn ok(args: &[&str], secrets: &[String]) -> String {
    let out = paynet(args);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "paynet {args:?}: {e}");
    no_secret(&o, secrets);
    no_secret(&e, secrets);
    o
}

/// Runs paynet, asserts exit 2, and returns its stderr (which holds none of `secrets`).
fn fails(args: &[&str], secrets: &[String]) -> String {
    let out = paynet(args);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "paynet {args:?} should fail: {}", text(&out.stdout));
    no_secret(&e, secrets);
    no_secret(&text(&out.stdout), secrets);
    e
}

fn no_secret(s: &str, secrets: &[String]) {
    for k in secrets {
        assert!(!s.contains(k.as_str()), "a component appears in the output");
        assert!(!s.contains(&k[..16]), "part of a component appears in the output");
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// A ceremony's output: the component files with their printed KCVs, and the LMK's KCV.
struct Ceremony {
    files: Vec<(PathBuf, String)>,
    lmk_kcv: String,
    stdout: String,
}

impl Ceremony {
    /// `--lmk-components F:K ... --lmk-kcv K` (or the `--new-lmk-...` flags).
    fn flags(&self, prefix: &str) -> Vec<String> {
        let mut a = vec![format!("--{prefix}lmk-components")];
        a.extend(self.files.iter().map(|(f, k)| format!("{}:{k}", f.display())));
        a.extend([format!("--{prefix}lmk-kcv"), self.lmk_kcv.clone()]);
        a
    }

    fn secrets(&self) -> Vec<String> {
        self.files
            .iter()
            .map(|(f, _)| std::fs::read_to_string(f).expect("component").trim().to_string())
            .collect()
    }
}

fn new_lmk(dir: &Path, n: usize, alg: &str) -> Ceremony {
    let out = paynet(&[
        "keys",
        "new-lmk",
        "--components",
        &n.to_string(),
        "--out",
        dir.to_str().expect("utf-8"),
        alg,
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut files = Vec::new();
    for i in 1..=n {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("LMK component {i}: ")))
            .unwrap_or_else(|| panic!("component {i} in {stdout}"));
        let kcv = line.rsplit("KCV ").next().expect("KCV").trim().to_string();
        files.push((dir.join(format!("lmk-component-{i}.hex")), kcv));
    }
    let lmk_line = stdout.lines().find(|l| l.starts_with("LMK (")).expect("LMK line");
    let lmk_kcv = lmk_line.rsplit("KCV ").next().expect("KCV").trim().to_string();
    Ceremony { files, lmk_kcv, stdout }
}

/// KCVs computed here, from the files, with the crypto crate's key types.
fn independent_kcvs(c: &Ceremony) -> (Vec<String>, String) {
    let parts: Vec<Vec<u8>> = c.secrets().iter().map(|h| hex::decode(h).expect("hex")).collect();
    let kcv = |b: &[u8]| match b.len() {
        32 => to_hex(&AesKey::from_slice(b).expect("aes").kcv()),
        24 => to_hex(&TdesKey::from_slice(b).expect("tdes").kcv()),
        n => panic!("component of {n} bytes"),
    };
    let mut lmk = vec![0u8; parts[0].len()];
    for p in &parts {
        lmk.iter_mut().zip(p).for_each(|(x, y)| *x ^= y);
    }
    (parts.iter().map(|p| kcv(p)).collect(), kcv(&lmk))
}

/// name → KCV, from `keys list`.
fn listing(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| {
            let name = l.split('\t').next().expect("name").to_string();
            (name, l.rsplit("KCV ").next().expect("KCV").to_string())
        })
        .collect()
}

#[test]
fn lmk_ceremony_and_rewrap() {
    let dir = tempfile::tempdir().expect("tmp");
    let old = new_lmk(&dir.path().join("old"), 3, "--aes");
    let secrets = old.secrets();
    no_secret(&old.stdout, &secrets);
    for s in &secrets {
        assert_eq!(s.len(), 64, "AES-256 components");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.path().join("old")), 0o700);
        for (f, _) in &old.files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }
    let (kcvs, lmk_kcv) = independent_kcvs(&old);
    assert_eq!(kcvs, old.files.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>());
    assert_eq!(lmk_kcv, old.lmk_kcv);
    // Components are never overwritten.
    let e = fails(
        &["keys", "new-lmk", "--components", "3", "--out", dir.path().join("old").to_str().expect("utf-8")],
        &secrets,
    );
    assert!(e.contains("exists already"), "{e}");
    assert_eq!(old.secrets(), secrets);

    // The printed [keys] snippet is a configuration the loader takes.
    let snippet = &old.stdout[old.stdout.find("lmk_components").expect("snippet")..];
    let cfg = dir.path().join("switch.toml");
    std::fs::write(&cfg, format!("[keys]\nkeystore = \"keys.toml\"\n{snippet}")).expect("config");
    let cfg = cfg.to_str().expect("utf-8").to_string();

    // A keystore under the old LMK: the node's keys and an issuer key.
    let ks = dir.path().join("keys.toml");
    let ks_arg = ks.to_str().expect("utf-8").to_string();
    let out = ok(&["keys", "generate", "--config", &cfg, "--node-keys"], &secrets);
    for k in ["switch.saf", "switch.fingerprint", "tsp.vault-index", "tsp.token-ref"] {
        assert!(out.contains(&format!("{k} KCV ")), "{out}");
    }
    assert!(
        ok(&["keys", "generate", "--config", &cfg, "--node-keys"], &secrets)
            .contains("every node key already")
    );
    let mut gen_args = vec!["keys", "generate", "--keystore", &ks_arg];
    let old_flags = old.flags("");
    gen_args.extend(old_flags.iter().map(String::as_str));
    gen_args.extend(["--name", "issuer-a.zpk", "--header", "D0000P0TB00N0000", "--len", "16"]);
    ok(&gen_args, &secrets);
    #[cfg(unix)]
    assert_eq!(mode(&ks), 0o600);
    let before = listing(&ok(&["keys", "list", "--config", &cfg], &secrets));
    assert_eq!(before.len(), 5, "{before:?}");

    // A component readable by others is refused, naming the file and its mode.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let f = &old.files[1].0;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = fails(&["keys", "check", "--config", &cfg], &secrets);
        assert!(e.contains(&format!("LMK component 2 file {} has mode 0644", f.display())), "{e}");
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    // A component entered with another check value: that component is named.
    let mut wrong = old.flags("");
    wrong[3] = format!("{}:000000", old.files[2].0.display());
    let mut args = vec!["keys", "check", "--keystore", &ks_arg];
    args.extend(wrong.iter().map(String::as_str));
    let e = fails(&args, &secrets);
    assert!(e.contains("LMK component 3 has KCV") && e.contains("not the configured 000000"), "{e}");

    // Rewrap under a new two-component TDES LMK.
    let new = new_lmk(&dir.path().join("new"), 2, "--tdes");
    let new_secrets = new.secrets();
    assert!(new_secrets.iter().all(|s| s.len() == 48), "TDES triple-length components");
    let (kcvs, lmk_kcv) = independent_kcvs(&new);
    assert_eq!(kcvs, new.files.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>());
    assert_eq!(lmk_kcv, new.lmk_kcv);
    let all_secrets: Vec<String> = secrets.iter().chain(&new_secrets).cloned().collect();
    let new_flags = new.flags("new-");
    let mut args = vec!["keys", "rewrap", "--config", &cfg];
    args.extend(new_flags.iter().map(String::as_str));
    let out = ok(&args, &all_secrets);
    assert!(
        out.starts_with(&format!(
            "5 keys re-wrapped from the LMK with KCV {} to the LMK with KCV {}",
            old.lmk_kcv, new.lmk_kcv
        )),
        "{out}"
    );
    let printed: Vec<(String, String)> = out
        .lines()
        .skip(1)
        .map(|l| {
            let (n, k) = l.split_once("\tKCV ").expect("name and KCV");
            (n.to_string(), k.to_string())
        })
        .collect();
    assert_eq!(printed, before, "every key, its KCV unchanged");
    #[cfg(unix)]
    assert_eq!(mode(&ks), 0o600);
    assert!(
        std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
    );
    let text = std::fs::read_to_string(&ks).expect("keystore");
    assert!(
        text.lines().filter(|l| l.starts_with("block = ")).all(|l| l.starts_with("block = \"B")),
        "{text}"
    );

    // The new LMK opens it with every KCV as before; the old one no longer does.
    let mut args = vec!["keys", "list", "--keystore", &ks_arg];
    let new_open = new.flags("");
    args.extend(new_open.iter().map(String::as_str));
    assert_eq!(listing(&ok(&args, &all_secrets)), before);
    // (An AES LMK cannot even be a version B block's KBPK; under another AES LMK the blocks' MACs
    // would not verify: either way the key at fault is named.)
    let e = fails(&["keys", "check", "--config", &cfg], &all_secrets);
    assert!(e.contains("keystore: key ") && e.contains("version B key blocks need a TDES KBPK"), "{e}");

    // Rewrapping to the LMK it is already under is refused; the file is unchanged.
    let mut args = vec!["keys", "rewrap", "--keystore", &ks_arg];
    args.extend(new_open.iter().map(String::as_str));
    args.extend(new_flags.iter().map(String::as_str));
    let e = fails(&args, &all_secrets);
    assert!(e.contains("same key"), "{e}");
    assert_eq!(std::fs::read_to_string(&ks).expect("keystore"), text);
}

#[test]
fn bad_component_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let ks = dir.path().join("keys.toml");
    let ks = ks.to_str().expect("utf-8");
    let e = fails(&["keys", "check", "--keystore", ks, "--lmk-components", "a", "b:123456"], &[]);
    assert!(e.contains("--lmk-components argument 1: expected FILE:KCV"), "{e}");
    let e = fails(&["keys", "check", "--keystore", ks, "--lmk-components", "a:123456", "b:123456"], &[]);
    assert!(e.contains("needs the combined LMK's KCV"), "{e}");
    // `--new-lmk FILE` is `--new-lmk-file FILE`: the file is what is named, not the option.
    let e = fails(
        &[
            "keys",
            "rewrap",
            "--keystore",
            ks,
            "--lmk-file",
            "/nonexistent/lmk",
            "--new-lmk",
            "/nonexistent/new",
        ],
        &[],
    );
    assert!(!e.contains("unexpected argument") && e.contains("/nonexistent/"), "{e}");
    let e = fails(&["keys", "check", "--keystore", ks], &[]);
    assert!(e.contains("PAYNET_LMK"), "{e}");
    let e = fails(
        &[
            "keys",
            "check",
            "--keystore",
            ks,
            "--lmk-components",
            "/nonexistent/c1:123456",
            "/nonexistent/c2:123456",
            "--lmk-kcv",
            "123456",
        ],
        &[],
    );
    assert!(e.contains("cannot read the LMK component 1 file /nonexistent/c1"), "{e}");
    let e = fails(&["keys", "rewrap", "--keystore", ks, "--lmk-file", "/nonexistent/lmk"], &[]);
    assert!(e.contains("--new-lmk-components"), "{e}");
}
