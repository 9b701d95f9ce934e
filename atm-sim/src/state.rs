//! The state folder (`--state DIR`): what an ATM must remember between runs so that no STAN,
//! KSN or ATC is used twice and no reversal it owes is forgotten.
//!
//! ```text
//! DIR/atm-ATM00001.lock      exclusive lock: one transaction at a time per ATM, others wait
//! DIR/atm-ATM00001.json      next STAN, next KSN counter, cassettes, reversal advices owed
//! DIR/atm-ATM00001.journal   the electronic journal (append-only, masked)
//! DIR/cards.lock, cards.json per test card (by a hash of its PAN, never the PAN): the last ATC
//! ```
//!
//! Files are replaced atomically (write, sync, rename; `terminal_kit::state`, which the merchant
//! terminal's state folder uses too). A reversal advice owed carries the PAN,
//! so it is kept sealed (AES-256-GCM under a key derived from the ATM's initial key): the folder
//! holds no clear PAN, PIN or key.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::cassette::Cassettes;

use terminal_kit::state::{Sealer, write_atomic};

/// What an ATM keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtmRecord {
    pub tid: String,
    /// The STAN the next message will carry (1..=999999).
    pub next_stan: u32,
    /// The DUKPT counter the next PIN entry will use.
    pub next_ksn_counter: u32,
    pub cassettes: Cassettes,
    /// Reversal advices not yet acknowledged, sealed (hex of nonce ‖ ciphertext ‖ tag).
    #[serde(default)]
    pub owed: Vec<String>,
}

/// The state folder.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// A held lock; released when dropped (the file is closed).
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] File);

impl From<File> for Lock {
    /// A file the caller has locked already.
    fn from(f: File) -> Self {
        Lock(f)
    }
}

fn safe_name(tid: &str) -> String {
    tid.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

impl StateDir {
    /// The default folder: `atm-sim` under the system temporary directory (honours `TMPDIR`).
    pub fn default_root() -> PathBuf {
        std::env::temp_dir().join("atm-sim")
    }

    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(StateDir { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock_file(&self, name: &str) -> std::io::Result<Lock> {
        terminal_kit::state::lock_file(&self.root.join(name)).map(Lock)
    }

    /// Waits for and takes the ATM's lock.
    pub fn lock_atm(&self, tid: &str) -> std::io::Result<Lock> {
        self.lock_file(&format!("atm-{}.lock", safe_name(tid)))
    }

    fn atm_path(&self, tid: &str) -> PathBuf {
        self.root.join(format!("atm-{}.json", safe_name(tid)))
    }

    pub fn journal_path(&self, tid: &str) -> PathBuf {
        self.root.join(format!("atm-{}.journal", safe_name(tid)))
    }

    /// The ATM's record, if it ran here before (call with its lock held).
    pub fn load_atm(&self, tid: &str) -> std::io::Result<Option<AtmRecord>> {
        match std::fs::read(self.atm_path(tid)) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves the ATM's record (call with its lock held).
    pub fn save_atm(&self, rec: &AtmRecord) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        write_atomic(&self.atm_path(&rec.tid), &json)
    }

    /// Runs `f` with the last ATC this folder recorded for the card `pan` (`None` before its
    /// first use), under the cards' lock, and records the ATC `f` returns.
    pub fn with_card_atc<R>(
        &self,
        pan: &str,
        f: impl FnOnce(Option<u16>) -> (R, Option<u16>),
    ) -> std::io::Result<R> {
        let _lock = self.lock_file("cards.lock")?;
        let path = self.root.join("cards.json");
        let mut all: BTreeMap<String, u16> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        let key = card_key(pan);
        let (r, new) = f(all.get(&key).copied());
        if let Some(atc) = new {
            all.insert(key, atc);
            write_atomic(&path, &serde_json::to_vec_pretty(&all).map_err(std::io::Error::other)?)?;
        }
        Ok(r)
    }
}

/// A card's identity in the state folder: SHA-256 over a label and the PAN, 16 bytes, hex.
fn card_key(pan: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"atm-sim card\0");
    h.update(pan.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The sealer of the reversal advices an ATM owes (they carry the PAN): its key is HMAC-SHA256 of
/// a label under the ATM's initial DUKPT key.
pub fn owed_sealer(initial_key: &[u8]) -> Sealer {
    Sealer::derived(initial_key, b"atm-sim owed reversals")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_card_atcs_persist() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path()).unwrap();
        let _l = s.lock_atm("ATM00001").unwrap();
        assert_eq!(s.load_atm("ATM00001").unwrap(), None);
        let rec = AtmRecord {
            tid: "ATM00001".into(),
            next_stan: 7,
            next_ksn_counter: 3,
            cassettes: Cassettes::test_atm(),
            owed: vec![],
        };
        s.save_atm(&rec).unwrap();
        assert_eq!(s.load_atm("ATM00001").unwrap(), Some(rec));
        let pan = "4761739001010010";
        assert_eq!(s.with_card_atc(pan, |a| (a, Some(5))).unwrap(), None);
        assert_eq!(s.with_card_atc(pan, |a| (a, None)).unwrap(), Some(5));
        let text = std::fs::read_to_string(d.path().join("cards.json")).unwrap();
        assert!(!text.contains(pan), "no clear PAN in the state folder");
    }

    #[test]
    fn sealed_advices_open_only_with_the_atm_key() {
        let s = owed_sealer(&[1; 16]);
        let sealed = s.seal(b"0420 with a PAN 4761739001010010", [9; 12]).unwrap();
        assert!(!sealed.contains("4761739001010010"));
        assert_eq!(&s.open(&sealed).unwrap()[..], b"0420 with a PAN 4761739001010010");
        assert!(owed_sealer(&[2; 16]).open(&sealed).is_err());
    }
}
