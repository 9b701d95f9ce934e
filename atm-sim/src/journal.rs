//! The electronic journal: the ATM's own append-only record of what it asked, what it was told,
//! what cash left and what it still owes — the paper roll of older ATMs. One JSON object a line;
//! the PAN (or token) masked to its first six and last four digits, never a PIN, PIN block or key.
//! Lines are only ever appended, and flushed to disk when they concern money.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub tid: String,
    pub stan: String,
    /// `request`, `answer`, `no-answer`, `arpc`, `dispensed`, `reversal`, `reversal-ack`, `owed`,
    /// `balance`, `refused`.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<String>,
    /// Notes left per cassette after a dispense.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cassettes: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Entry {
    pub fn new(tid: &str, stan: &str, event: &str) -> Self {
        Entry {
            at_ms: crate::now_ms(),
            tid: tid.into(),
            stan: stan.into(),
            event: event.into(),
            pan: None,
            amount: None,
            response_code: None,
            cassettes: None,
            detail: None,
        }
    }
}

/// The journal: kept in memory, and appended to a file when the ATM has a state folder.
#[derive(Debug, Default)]
pub struct Journal {
    file: Option<(PathBuf, File)>,
    pub entries: Vec<Entry>,
}

impl Journal {
    /// A journal appended to `path` (created if absent; earlier lines are kept).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Journal { file: Some((path.to_path_buf(), f)), entries: Vec::new() })
    }

    /// Appends `e`; `durable` forces it to disk before returning (money events).
    pub fn append(&mut self, e: Entry, durable: bool) -> std::io::Result<()> {
        if let Some((_, f)) = &mut self.file {
            let mut line = serde_json::to_string(&e).map_err(std::io::Error::other)?;
            line.push('\n');
            f.write_all(line.as_bytes())?;
            if durable {
                f.sync_data()?;
            }
        }
        self.entries.push(e);
        Ok(())
    }

    /// The file's path, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// Every line of a journal file.
    pub fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
        let text = std::fs::read_to_string(path)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
            .collect()
    }
}
