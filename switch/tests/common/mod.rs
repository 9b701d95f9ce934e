//! Starting the real `switch` binary for system tests: a fresh keystore under a generated LMK, a
//! config written to a temporary folder, ports from the OS (read back from `--ready-file`), and a
//! framed client. The process is killed when the handle drops.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codecs::iso8583::{Message, Spec};
use crypto::keystore::{Keystore, Lmk};

pub const LMK_HEX: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";

pub struct SwitchProcess {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub listeners: serde_json::Value,
    pub admin: String,
    /// Environment variables the process is started with (beyond the LMK), again on a restart.
    pub env: Vec<(String, String)>,
}

impl Drop for SwitchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SwitchProcess {
    pub fn addr(&self, listener: &str) -> String {
        self.listeners[listener].as_str().expect("listener address").to_string()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(Instant::now() < deadline, "switch did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes a keystore with the node's keys into `dir` (idempotent).
pub fn keystore(dir: &Path) {
    let path = dir.join("keys.toml");
    if path.exists() {
        return;
    }
    let mut ks = Keystore::new(Lmk::from_hex(LMK_HEX).expect("LMK"));
    let mut counter = 7u8;
    switch::keys::ensure_node_keys(&mut ks, &mut |b: &mut [u8]| {
        for x in b.iter_mut() {
            counter = counter.wrapping_mul(31).wrapping_add(17);
            *x = counter;
        }
    })
    .expect("node keys");
    std::fs::write(path, ks.to_toml()).expect("write keystore");
}

/// Adds a clear test key to the keystore in `dir` (after [`keystore`]).
pub fn add_key(dir: &Path, name: &str, header: &str, hex_key: &str) {
    use crypto::keyblock::Header;
    use crypto::keys::SymmetricKey;
    keystore(dir);
    let path = dir.join("keys.toml");
    let lmk = Lmk::from_hex(LMK_HEX).expect("LMK");
    let mut ks = Keystore::from_toml(lmk, &std::fs::read_to_string(&path).expect("read")).expect("keystore");
    let header = Header::parse_template(header).expect("header");
    let raw = hex::decode(hex_key).expect("hex");
    let key = if header.algorithm == crypto::keyblock::KeyAlgorithm::TDES {
        SymmetricKey::Tdes(crypto::TdesKey::from_slice(&raw).expect("tdes"))
    } else {
        SymmetricKey::Aes(crypto::AesKey::from_slice(&raw).expect("aes"))
    };
    let pad = vec![0x5Au8; 64];
    ks.import(crypto::keystore::KeyName::new(name).expect("name"), &header, &key, &pad).expect("import");
    std::fs::write(path, ks.to_toml()).expect("write");
}

/// A node's configuration as the system tests run it: `[node] name`, an admin port, the `network`
/// acquirer listener, `issuer-a` at `127.0.0.1:port` answering within `timeout_ms` (with
/// `issuer_keys`, more keys of its table, e.g. `imk_ac`), the test BIN routed to it, then `more`
/// (tables of its own: `[saf]`, `[store]`).
pub fn node_config(node: &str, port: u16, timeout_ms: u64, issuer_keys: &str, more: &str) -> String {
    format!(
        r#"
[node]
name = "{node}"

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "acquirer"
listen = "127.0.0.1:0"
spec = "network"
framing = "2-byte-binary"

[[issuer]]
name = "issuer-a"
connect = ["127.0.0.1:{port}"]
connections = 1
timeout_ms = {timeout_ms}
{issuer_keys}

[[route]]
prefix = "476173"
issuer = "issuer-a"
{more}"#
    )
}

/// The test acquirer: this machine's loopback, on every listener of `config`, for the terminals
/// the switch's tests send as (TID `TERM0001`…`TERM0009`, merchant `MERCHANT0000001`) — appended when the config registers no acquirer itself.
pub fn with_test_acquirer(config: &str) -> String {
    if config.contains("[[acquirer]]") {
        return config.to_string();
    }
    let v: toml::Value = toml::from_str(config).expect("config TOML");
    let listeners: Vec<String> = v
        .get("listener")
        .and_then(|l| l.as_array())
        .map(|a| a.iter().filter_map(|l| l.get("name")?.as_str().map(|n| format!("{n:?}"))).collect())
        .unwrap_or_default();
    let mut out = format!(
        "{config}\n[[acquirer]]\nid = \"400001\"\nlisteners = [{}]\nsource = [\"127.0.0.0/8\", \"::1/128\"]\n",
        listeners.join(", ")
    );
    for tid in (1..=9).map(|i| format!("TERM{i:04}")) {
        out.push_str(&format!("[[acquirer.terminal]]\ntid = \"{tid}\"\nmid = \"MERCHANT0000001\"\n"));
    }
    out
}

/// Starts the switch with `config` (TOML without [keys]/[node] data_dir, added here) in `dir`.
pub fn start_in(dir: tempfile::TempDir, config: &str) -> SwitchProcess {
    start_in_with_env(dir, config, &[])
}

/// [`start_in`] with more environment variables (an admin credential named by `token_env`).
pub fn start_in_with_env(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> SwitchProcess {
    keystore(dir.path());
    let cfg_path = dir.path().join("switch.toml");
    std::fs::write(&cfg_path, with_test_acquirer(config)).expect("write config");
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let child = launch(dir.path(), &env, Stdio::inherit());
    let mut p = SwitchProcess { child, dir, listeners: serde_json::Value::Null, admin: String::new(), env };
    wait_ready(&mut p);
    p
}

/// Starts the switch with `config` expecting it to refuse to start: its exit status and what it
/// wrote on stderr (it is killed, and the test fails, if it is still running after 30 s).
pub fn start_refused(config: &str) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    keystore(dir.path());
    std::fs::write(dir.path().join("switch.toml"), with_test_acquirer(config)).expect("write config");
    let mut child = launch(dir.path(), &[], Stdio::piped());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the switch started with a configuration it must refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read stderr");
    (status, err)
}

/// Starts the switch again on the same folder (config, keystore and data), after the running
/// one was stopped or killed.
pub fn restart(p: &mut SwitchProcess) {
    let _ = p.child.kill();
    let _ = p.child.wait();
    p.child = launch(p.dir.path(), &p.env, Stdio::inherit());
    wait_ready(p);
}

fn launch(dir: &Path, env: &[(String, String)], stderr: Stdio) -> Child {
    let _ = std::fs::remove_file(dir.join("ready.json"));
    Command::new(env!("CARGO_BIN_EXE_switch"))
        .arg("--config")
        .arg(dir.join("switch.toml"))
        .arg("--ready-file")
        .arg(dir.join("ready.json"))
        .env("PAYNET_LMK", LMK_HEX)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start switch")
}

fn wait_ready(p: &mut SwitchProcess) {
    let ready = p.dir.path().join("ready.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("ready JSON");
            p.listeners = v["listeners"].clone();
            p.admin = v["admin"].as_str().expect("admin").to_string();
            return;
        }
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("switch exited early: {st}");
        }
        assert!(Instant::now() < deadline, "switch not ready in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn start(config: &str) -> SwitchProcess {
    start_in(tempfile::tempdir().expect("tempdir"), config)
}

/// [`start`] with the test IMK in the keystore (for configs whose issuer names [`TEST_IMK_NAME`]).
pub fn start_with_imk(config: &str) -> SwitchProcess {
    let dir = tempfile::tempdir().expect("tempdir");
    add_test_imk(dir.path());
    start_in(dir, config)
}

pub fn data_dir(p: &SwitchProcess) -> PathBuf {
    p.dir.path().join("data")
}

#[allow(unused_imports)]
pub use testkit::iso::Client;

/// The test issuer's IMK-AC (test material), and its keystore name: a switch holding it verifies
/// the test card's cryptograms itself, which stand-in needs.
pub const TEST_IMK: &str = "0123456789ABCDEFFEDCBA9876543210";
pub const TEST_IMK_NAME: &str = "issuer-a.imk-ac";

/// Puts the test IMK in the keystore in `dir`.
pub fn add_test_imk(dir: &Path) {
    add_key(dir, TEST_IMK_NAME, "D0000E0TX00N0000", TEST_IMK);
}

/// The test card (PAN 4761739001010010), its ICC master key derived from [`TEST_IMK`].
pub fn test_card() -> terminal_kit::pos::TestCard {
    let imk = crypto::keys::TdesKey::from_hex("imk", TEST_IMK).expect("imk");
    terminal_kit::pos::TestCard::visa18(&imk, "4761739001010010").expect("test card")
}

/// A contactless 0100 of the test card in the given spec, with STAN and amount set and the
/// card's own ARQC over them (ATC = STAN).
pub fn purchase(spec: &str, stan: u32, amount: u64) -> Message {
    let spec = Spec::builtin(spec).expect("spec");
    let tx = terminal_kit::pos::Tx::purchase(stan, amount, stan as u16);
    terminal_kit::pos::chip_request(spec, &test_card(), &tx).expect("request")
}

/// An acquirer reversal (0400) of `orig`, with DE 90 naming it.
pub fn reversal(orig: &Message) -> Message {
    let mut m = Message::new(orig.spec().clone(), codecs::iso8583::Mti::REVERSAL_REQUEST);
    for de in [2u16, 3, 4, 7, 11, 12, 13, 22, 32, 37, 41, 42, 49] {
        m.copy_from(orig, de).expect("copy");
    }
    let t = |de| orig.text(de).map(|c| c.into_owned()).unwrap_or_default();
    let de90 = format!("{}{}{}{:0>11}{}", orig.mti(), t(11), t(7), t(32), "0".repeat(11));
    m.set_text(90, &de90).expect("DE 90");
    m
}

pub fn echo(spec: &str, stan: u32) -> Message {
    let spec = Spec::builtin(spec).expect("spec");
    let mut m = Message::new(spec.clone(), codecs::iso8583::Mti::NETWORK_MANAGEMENT_REQUEST);
    m.set_text(7, "1125101010").expect("DE 7");
    m.set_text(11, &format!("{stan:06}")).expect("DE 11");
    m.set_text(70, "301").expect("DE 70");
    m
}

/// GET on the admin endpoint: the whole answer.
pub async fn http_get(addr: &str, path: &str) -> String {
    testkit::http::get(addr, path, None).await.raw()
}

/// A PostgreSQL schema of the test's own (dropped when the test ends, pass or fail) and the store
/// options over it; `None` when there is no database and none is required.
pub struct Db {
    pub opts: switch::store::postgres::PgOptions,
    _schema: testkit::pg::PgTest,
}

impl Db {
    pub fn new(name: &str) -> Option<Db> {
        let t = testkit::pg::database(name)?;
        Some(Db {
            opts: switch::store::postgres::PgOptions::new(t.url.clone(), t.schema.clone()),
            _schema: t,
        })
    }

    /// The options of node `node` over the schema.
    pub fn node_opts(&self, node: &str) -> switch::store::postgres::PgOptions {
        let mut o = self.opts.clone();
        o.node = node.into();
        o
    }
}
