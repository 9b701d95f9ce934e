//! Test support shared by the workspace's tests.
//!
//! [`PythonOracle`] gives a test an independent implementation to compare against: it creates a
//! private virtual environment (once per package set, under the test's target temp dir), installs
//! the pinned PyPI packages, and runs a script that reads a JSON document on stdin and writes one
//! on stdout — so hundreds of cases cost one interpreter start. When Python or the package registry
//! is unavailable, [`PythonOracle::new`] returns `Err(reason)` and the test prints the reason and
//! skips, instead of failing for a reason that is not ours.

#![forbid(unsafe_code)]

pub mod http;
pub mod iso;
pub mod pg;
pub mod rng;

pub use rng::TestRng;

use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A Python virtual environment with pinned packages installed.
pub struct PythonOracle {
    python: PathBuf,
}

impl PythonOracle {
    /// Creates (or reuses) a venv under `base` holding exactly `packages` (pinned specs such as
    /// `pyiso8583==4.0.1`). Concurrent callers are serialized by a lock file.
    pub fn new(base: impl AsRef<Path>, packages: &[&str]) -> Result<Self, String> {
        let mut h = DefaultHasher::new();
        packages.hash(&mut h);
        let dir = base.as_ref().join(format!("pyvenv-{:016x}", h.finish()));
        fs::create_dir_all(base.as_ref())
            .map_err(|e| format!("cannot create {}: {e}", base.as_ref().display()))?;
        let lock_path = base.as_ref().join(format!("pyvenv-{:016x}.lock", h.finish()));
        let lock = File::create(&lock_path).map_err(|e| format!("cannot create lock: {e}"))?;
        lock.lock().map_err(|e| format!("cannot lock venv: {e}"))?;
        let python = dir.join("bin").join("python");
        let stamp = dir.join(".installed");
        if !stamp.exists() {
            let status = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&dir)
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("python3 not available: {e}"))?;
            if !status.success() {
                return Err(format!("python3 -m venv failed ({status})"));
            }
            let out = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(packages)
                .output()
                .map_err(|e| format!("pip not runnable: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "pip install {} failed (package registry unreachable?): {}",
                    packages.join(" "),
                    String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
                ));
            }
            fs::write(&stamp, packages.join("\n")).map_err(|e| format!("cannot write stamp: {e}"))?;
        }
        drop(lock);
        Ok(PythonOracle { python })
    }

    /// Runs `script` with `input` as JSON on stdin; returns its stdout parsed as JSON.
    /// A script failure is a test failure (it means our cases or the oracle disagree on inputs).
    pub fn run(&self, script: &str, input: &serde_json::Value) -> serde_json::Value {
        let mut child = Command::new(&self.python)
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python");
        let body = serde_json::to_vec(input).expect("serialize input");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&body));
        let out = child.wait_with_output().expect("python output");
        writer.join().expect("writer thread").expect("write stdin");
        assert!(out.status.success(), "oracle script failed:\n{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("oracle printed JSON")
    }
}

/// Returns the oracle or prints why the calling test is skipped.
#[macro_export]
macro_rules! oracle_or_skip {
    ($packages:expr) => {
        match $crate::PythonOracle::new(env!("CARGO_TARGET_TMPDIR"), $packages) {
            Ok(o) => o,
            Err(reason) => {
                eprintln!("SKIPPED {}: {}", module_path!(), reason);
                return;
            }
        }
    };
}

/// Asserts that `json` has every key of INTERFACES.md §4's load report (`sent`, `approved`, …,
/// `latency_us.{p50,p90,p99,p999,max}`): the contract both load generators write.
pub fn assert_load_report_keys(json: &serde_json::Value) {
    for key in [
        "sent",
        "approved",
        "declined",
        "errors",
        "timeouts",
        "unmatched",
        "duration_s",
        "offered_tps",
        "achieved_tps",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from the load report");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(json["latency_us"].get(key).is_some(), "latency_us.{key} missing from the load report");
    }
}
