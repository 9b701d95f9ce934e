//! Real processes for the command-line tests: `paynet serve --ports-file` in its own process
//! (stopped by SIGTERM when dropped, as an operator stops it), and the workspace's other binaries
//! (`atm-sim`, `terminal-sim`, `wallet-sim`) beside paynet's, built when missing or stale.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary `name` of workspace package `name`, in the same target folder and profile as
/// paynet's. `cargo build` runs first (a no-op when it is up to date), so a test never runs a
/// binary older than its sources.
pub fn workspace_bin(name: &str) -> PathBuf {
    let paynet = Path::new(env!("CARGO_BIN_EXE_paynet"));
    let bin = paynet.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let release = paynet.parent().and_then(Path::file_name).is_some_and(|d| d == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--quiet", "-p", name, "--bin", name]);
    if release {
        c.arg("--release");
    }
    let st = c.status().expect("cargo build");
    assert!(st.success() && bin.exists(), "building {name}");
    bin
}

/// `paynet serve`, stopped when dropped.
pub struct Serve(pub Child);

impl Drop for Serve {
    fn drop(&mut self) {
        // SIGTERM: serve drains and stops; SIGKILL only if it does not.
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `paynet serve --ports-file ports` with its files under `tmp`; returns once the ports
/// file exists (it is written when every listener accepts).
pub fn serve(ports: &Path, tmp: &Path) -> Serve {
    serve_with(ports, tmp, &[])
}

/// [`serve`] with more of serve's options (`--luk-batch 4`, ...).
pub fn serve_with(ports: &Path, tmp: &Path, args: &[&str]) -> Serve {
    let s = spawn_serve(ports, tmp, args);
    // The run's keystores, in its folder under TMPDIR, are the owner's only too.
    let keystores: Vec<PathBuf> = std::fs::read_dir(tmp)
        .expect("TMPDIR")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("paynet-serve-"))
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(keystores.len() >= 2, "the switch's and the issuer's keystores: {keystores:?}");
    keystores.iter().for_each(|k| assert_private(k));
    s
}

/// `paynet serve --state state --ports-file ports`: a kept network; its LMK components,
/// keystores and saved credentials are the owner's only.
pub fn serve_kept(ports: &Path, state: &Path, tmp: &Path) -> Serve {
    let state_arg = state.to_str().expect("a UTF-8 path");
    let s = spawn_serve(ports, tmp, &["--state", state_arg]);
    for f in ["lmk/component-1", "lmk/component-2", "issuer-keys.toml", "switch-keys.toml", "network.toml"] {
        assert_private(&state.join(f));
    }
    s
}

/// `serve` once its ports file is written (private to its user, as it must be).
fn ready(s: Serve, ports: &Path) -> Serve {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ports.exists() {
        assert!(Instant::now() < deadline, "no ports file within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_private(ports);
    assert_no_huge_pages(&s);
    s
}

/// Asserts that the running network takes no transparent huge pages (every long-running binary
/// asks so first thing: `door::process::no_huge_pages`), where Linux says (`THP_enabled` in
/// `/proc/PID/status`, since Linux 6.0).
fn assert_no_huge_pages(s: &Serve) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", s.0.id())) else { return };
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "paynet serve: {line}");
    }
}

fn spawn_serve(ports: &Path, tmp: &Path, args: &[&str]) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_paynet"))
        .args(["serve", "--ports-file"])
        .arg(ports)
        .args(args)
        .env("TMPDIR", tmp)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("paynet serve");
    ready(Serve(child), ports)
}

/// Asserts that `path` (the ports file, a keystore: files holding keys) is readable and writable
/// by its owner only.
pub fn assert_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:04o}, not 0600", path.display());
    }
}

/// [`serve_kept`] with everything the process writes captured: its standard output in `out`, its
/// standard error in `err`, logging at `log_level` (`RUST_LOG`), so that a test can read what an
/// operator's log collector would keep.
pub fn serve_kept_logged(
    ports: &Path,
    state: &Path,
    tmp: &Path,
    out: &Path,
    err: &Path,
    log_level: &str,
) -> Serve {
    let file = |p: &Path| Stdio::from(std::fs::File::create(p).expect("log file"));
    let child = Command::new(env!("CARGO_BIN_EXE_paynet"))
        .args(["serve", "--ports-file"])
        .arg(ports)
        .arg("--state")
        .arg(state)
        .env("TMPDIR", tmp)
        .env("RUST_LOG", log_level)
        .stdout(file(out))
        .stderr(file(err))
        .spawn()
        .expect("paynet serve");
    ready(Serve(child), ports)
}
