//! A test network a terminal vendor can keep (`paynet serve --state DIR`): a second start on the
//! same folder brings the same network back — the same LMK, keys, test cards and ATMs, the
//! switch's store (token vault, ATC windows, originals, SAF), the issuer's ledger and ATC windows.
//!
//! What the folder holds, and where:
//! - `lmk/component-1`, `lmk/component-2`: the LMK as two components (hex, mode 0600, created new,
//!   never overwritten); their check values and the LMK's in `network.toml`, checked at each start.
//! - `issuer-keys.toml`, `switch-keys.toml`: the keystores (key blocks under the LMK, mode 0600).
//!   The test cards are a function of the issuer's keys, their number and their expiry, so no file
//!   but the ports file holds a PAN: they are derived again at each start. The test ATMs' initial
//!   keys are derived from the acquirer BDK and their fixed KSNs.
//! - `network.toml` (mode 0600): the number of cards, their expiry, the test credentials of the
//!   token requestors and issuers (the token service keeps only their digests).
//! - `network.db` (SQLite): the issuer simulator's changing state ([`issuer_sim::kept`]: no PAN),
//!   saved whenever it changed, checked every [`SAVE_EVERY`], and when the network stops; and the
//!   phone's providers' state ([`wallet_sim::providers::kept`]), saved after each request they
//!   answer, sealed (AES-256-GCM) under `providers.kept` of the switch's keystore: it holds the
//!   cloud platform's real-PAN cards, the SE domains' keys and the registered credentials.
//! - `data/`: the switch's own store, as every node keeps it.
//! - `lock`: held while the network runs; a second `serve` on the same folder is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use crypto::keyblock::KeyUsage;
use crypto::keys::to_hex;
use crypto::keystore::{KeyName, Keystore, Lmk, LmkComponent};
use issuer_sim::cards::TestIssuer;
use issuer_sim::server::ServerState;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{TestIssuerCredential, TestRequestor};

/// How often the issuer's state is checked for changes to save.
pub const SAVE_EVERY: Duration = Duration::from_millis(200);

const SAVED: &str = "network.toml";
const DB: &str = "network.db";
const COMPONENTS: [&str; 2] = ["lmk/component-1", "lmk/component-2"];

/// What a kept network remembers beside its keystores (`network.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub cards: usize,
    pub expiry: String,
    pub lmk_kcv: String,
    pub component_kcvs: Vec<String>,
    pub requestors: Vec<TestRequestor>,
    pub token_issuers: Vec<TestIssuerCredential>,
    /// The test cards billed in TWD (`Options::twd_cards`).
    #[serde(default)]
    pub twd_cards: Vec<usize>,
    /// The issuer simulator's admin credential (test material, like the requestors').
    #[serde(default)]
    pub issuer_admin_token: Option<String>,
}

/// A state folder, opened: its LMK, and what it saved when it held a network already.
pub struct Kept {
    dir: PathBuf,
    pub lmk_hex: Zeroizing<String>,
    /// `None`: a new network (the folder was empty).
    pub restored: Option<Saved>,
    component_kcvs: Vec<String>,
    lock: std::fs::File,
}

/// Locks `dir` for this process (released when the file is dropped, or the process ends).
fn lock(dir: &Path) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock"))?;
    f.try_lock().map_err(|_| anyhow!("{} is in use by another running network", dir.display()))?;
    Ok(f)
}

fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| anyhow!("operating system random source: {e}"))
}

fn read_private(path: &Path) -> Result<Zeroizing<String>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(path).with_context(|| format!("{}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!("{} is readable by others (mode {:04o}); it must be 0600", path.display(), mode & 0o777);
        }
    }
    Ok(Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?))
}

impl Kept {
    /// Opens `dir`: the network it holds, or — when it is missing or empty — new LMK components
    /// for a new one. A folder with files but no `network.toml` is refused: it is not a network
    /// this command kept (or its first start never finished).
    pub fn open(dir: &Path) -> Result<Kept> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let saved_path = dir.join(SAVED);
        if saved_path.exists() {
            let lock = lock(dir)?;
            let saved: Saved = toml::from_str(&read_private(&saved_path)?)
                .with_context(|| format!("reading {}", saved_path.display()))?;
            let mut components = Vec::new();
            for (i, f) in COMPONENTS.iter().enumerate() {
                components.push(LmkComponent::from_hex(i + 1, read_private(&dir.join(f))?.trim())?);
            }
            let kcvs: Vec<&str> = saved.component_kcvs.iter().map(String::as_str).collect();
            Lmk::from_components(&components, &kcvs, &saved.lmk_kcv)
                .with_context(|| format!("the LMK of {}", dir.display()))?;
            let lmk_hex = xor_hex(&components);
            let component_kcvs = saved.component_kcvs.clone();
            return Ok(Kept { dir: dir.to_path_buf(), lmk_hex, restored: Some(saved), component_kcvs, lock });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        if std::fs::read_dir(dir)?.next().is_some() {
            bail!(
                "{} holds files but no {SAVED}: not a kept network (use an empty or new folder)",
                dir.display()
            );
        }
        let lock = lock(dir)?;
        std::fs::create_dir_all(dir.join("lmk"))?;
        let mut components = Vec::new();
        for f in COMPONENTS {
            let mut raw = Zeroizing::new([0u8; 32]);
            random(raw.as_mut())?;
            let c = LmkComponent::generate(crypto::keys::Algorithm::Aes, raw.as_ref())?;
            crate::private_file::create_new(&dir.join(f), c.expose_hex().as_bytes())
                .with_context(|| format!("writing {}", dir.join(f).display()))?;
            components.push(c);
        }
        let component_kcvs = components.iter().map(|c| to_hex(&c.kcv())).collect();
        Ok(Kept {
            dir: dir.to_path_buf(),
            lmk_hex: xor_hex(&components),
            restored: None,
            component_kcvs,
            lock,
        })
    }

    /// The test issuer of a restored network: its keystore, and the cards derived from it.
    pub fn test_issuer(&self, saved: &Saved) -> Result<TestIssuer> {
        let ks = Keystore::from_toml(
            Lmk::from_hex(&self.lmk_hex)?,
            &read_private(&self.dir.join("issuer-keys.toml"))?,
        )?;
        Ok(issuer_sim::cards::test_issuer_from_keystore(saved.cards, &saved.twd_cards, ks, &saved.expiry)?)
    }

    /// The switch's keystore of a restored network.
    pub fn switch_keystore(&self) -> Result<Keystore> {
        let toml = read_private(&self.dir.join("switch-keys.toml"))?;
        Ok(Keystore::from_toml(Lmk::from_hex(&self.lmk_hex)?, &toml)?)
    }

    /// Puts the issuer's saved state back (before it serves anything).
    pub fn restore_issuer(&self, issuer: &mut issuer_sim::host::Issuer) -> Result<()> {
        let db = open_db(&self.dir)?;
        let body: Option<String> = db
            .query_row("SELECT body FROM kept WHERE name = 'issuer'", [], |r| r.get(0))
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
        if let Some(body) = body {
            let state: issuer_sim::kept::KeptIssuer =
                serde_json::from_str(&body).context("the issuer's state")?;
            issuer.restore(&state).map_err(|e| anyhow!("the issuer's state: {e}"))?;
        }
        Ok(())
    }

    /// Once the network runs: writes `network.toml` (a new network's) and starts saving the
    /// issuer's state.
    pub fn keep(self, saved: Saved, issuer: Arc<ServerState>) -> Result<Keeper> {
        if self.restored.is_none() {
            let saved = Saved { component_kcvs: self.component_kcvs.clone(), ..saved };
            let text = toml::to_string(&saved).context("network.toml")?;
            crate::private_file::write_atomic(&self.dir.join(SAVED), text.as_bytes())?;
        }
        let db = open_db(&self.dir)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("kept-issuer".into()).spawn(move || {
            let mut last = String::new();
            loop {
                let done = !matches!(
                    stopped.recv_timeout(SAVE_EVERY),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                let state = issuer.issuer.lock().unwrap_or_else(|p| p.into_inner()).kept();
                match serde_json::to_string(&state) {
                    Ok(body) if body != last => {
                        match db.execute(
                            "INSERT INTO kept (name, body) VALUES ('issuer', ?1)
                             ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                            [&body],
                        ) {
                            Ok(_) => last = body,
                            Err(e) => tracing::error!(error = %e, "the issuer's state could not be saved"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "the issuer's state could not be written"),
                }
                if done {
                    return;
                }
            }
        })?;
        Ok(Keeper { stop, thread: Some(thread), _lock: self.lock })
    }

    /// The switch's listeners, admin port and provisioning API on the ports of the last run
    /// (`ports.json`) where they are free, so that a device configured with them reaches the
    /// network again; the others stay on ports from the OS.
    pub fn same_ports(&self, cfg: &mut switch::config::SwitchConfig) {
        let Ok(text) = std::fs::read_to_string(self.dir.join("ports.json")) else { return };
        let Ok(last) = serde_json::from_str::<serde_json::Value>(&text) else { return };
        let port_of_url = |key: &str| {
            last[key].as_str().and_then(|u| u.rsplit(':').next()).and_then(|p| p.parse::<u16>().ok())
        };
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        let again = |port: Option<u16>, listen: &mut String| {
            if let Some(p) = port.filter(|p| *p != 0 && free(*p)) {
                *listen = format!("127.0.0.1:{p}");
            }
        };
        for l in &mut cfg.listeners {
            let port = last[l.name.as_str()]["port"].as_u64().and_then(|p| u16::try_from(p).ok());
            again(port, &mut l.listen);
        }
        again(port_of_url("admin"), &mut cfg.admin.listen);
        again(port_of_url("provisioning_api"), &mut cfg.token_service.listen);
    }

    /// The LMK's check value (hex), for `network.toml`.
    pub fn lmk_kcv(&self) -> Result<String> {
        Ok(to_hex(&Lmk::from_hex(&self.lmk_hex)?.kcv()))
    }
}

/// Saves the issuer's state while the network runs; [`Keeper::stop`] saves it a last time.
pub struct Keeper {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The folder's lock, until the network has stopped.
    _lock: std::fs::File,
}

impl Keeper {
    pub async fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

fn open_db(dir: &Path) -> Result<rusqlite::Connection> {
    let path = dir.join(DB);
    let db = rusqlite::Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA busy_timeout = 5000;
         CREATE TABLE IF NOT EXISTS kept (name TEXT PRIMARY KEY, body TEXT NOT NULL);",
    )?;
    Ok(db)
}

/// The key that seals the providers' state, in the switch's keystore.
pub const PROVIDERS_KEY: &str = "providers.kept";

/// The providers' store: rows `provider/<name>` of `network.db`, sealed.
pub struct ProvidersStore {
    db: std::sync::Mutex<rusqlite::Connection>,
    sealer: terminal_kit::state::Sealer,
}

impl ProvidersStore {
    /// The store of the kept network in `dir`, sealing under [`PROVIDERS_KEY`] of `switch_keys`.
    pub fn open(dir: &Path, switch_keys: &Keystore) -> Result<Arc<ProvidersStore>> {
        let key = switch_keys.get_aes(&KeyName::new(PROVIDERS_KEY)?, KeyUsage::DATA_ENCRYPTION)?;
        let sealer = terminal_kit::state::Sealer::derived(key.expose(), b"paynet providers state v1");
        Ok(Arc::new(ProvidersStore { db: std::sync::Mutex::new(open_db(dir)?), sealer }))
    }
}

impl wallet_sim::providers::kept::KeptStore for ProvidersStore {
    fn load(&self, name: &str) -> std::result::Result<Option<Vec<u8>>, String> {
        let db = self.db.lock().map_err(|_| "store unavailable".to_string())?;
        let row: Option<String> = db
            .query_row("SELECT body FROM kept WHERE name = ?1", [format!("provider/{name}")], |r| r.get(0))
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })
            .map_err(|e| e.to_string())?;
        match row {
            Some(sealed) => Ok(Some(self.sealer.open(&sealed).map_err(|e| e.to_string())?.to_vec())),
            None => Ok(None),
        }
    }

    fn save(&self, name: &str, body: &[u8]) -> std::result::Result<(), String> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let sealed = self.sealer.seal(body, nonce).map_err(|e| e.to_string())?;
        let db = self.db.lock().map_err(|_| "store unavailable".to_string())?;
        db.execute(
            "INSERT INTO kept (name, body) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET body = excluded.body",
            [format!("provider/{name}"), sealed],
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The LMK (hex) that is the XOR of the components.
fn xor_hex(components: &[LmkComponent]) -> Zeroizing<String> {
    let mut lmk = Zeroizing::new(vec![0u8; 32]);
    for c in components {
        let h = c.expose_hex();
        let b = Zeroizing::new(hex::decode(h.as_bytes()).unwrap_or_default());
        for (x, y) in lmk.iter_mut().zip(b.iter()) {
            *x ^= y;
        }
    }
    Zeroizing::new(to_hex(&lmk))
}

/// The link MAC key the issuer's keystore holds (a restored network's).
pub fn link_mac_key(issuer_keys: &Keystore) -> Result<crypto::keys::AesKey> {
    Ok(issuer_keys.get_aes(&KeyName::new("issuer.mac")?, KeyUsage::MAC_CMAC)?)
}
