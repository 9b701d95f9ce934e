//! A merchant terminal's own settings and counters: its configuration (TID, MID, MCC, country,
//! currency, floor limit, terminal action codes, TPDU — one TOML file, embedded defaults), the
//! moment of a transaction as the messages carry it (DE 7, 12, 13, 37, tag 9A), and its STAN
//! counter kept in a state folder so that invocations one after another never repeat a STAN.
//!
//! A duplicate transmission is the same DE 41 + DE 11 + DE 7 again (docs/network-spec.md §2): the
//! STAN counter makes DE 11 differ between any two invocations of one terminal (until it wraps
//! after 999,999), and DE 7 is the real transmission second on top of that.

use codecs::iso8583::datetime::Utc;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use codecs::framing::Tpdu;
use serde::{Deserialize, Serialize};

use crate::receipt::Currency;
use emv::kernel::TerminalConfig;

/// The terminal configuration file (TOML); every key optional, the defaults embedded.
///
/// ```toml
/// name = "PAYNET TEST SHOP"
/// tid = "TERM0001"          # DE 41, up to 8 characters
/// mid = "MERCHANT0000001"   # DE 42, up to 15 characters
/// mcc = "5411"              # DE 18
/// country = 250             # 9F1A, ISO 3166 numeric
/// currency = 978            # 5F2A and DE 49, ISO 4217 numeric
/// floor_limit = 0           # minor units; above it the TVR says so
/// ttq = "36004000"          # 9F66
/// tac_denial = "0060000000" # EMV Book 3 §10.7
/// tac_online = "FC50BCF800"
/// tac_default = "FC50BCA000"
/// tpdu = "6000010000"       # only for a framing with a TPDU (…+tpdu)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TerminalFile {
    pub name: String,
    pub tid: String,
    pub mid: String,
    pub mcc: String,
    pub country: u16,
    pub currency: u16,
    pub floor_limit: u64,
    pub ttq: String,
    pub tac_denial: String,
    pub tac_online: String,
    pub tac_default: String,
    pub tpdu: Option<String>,
}

impl Default for TerminalFile {
    fn default() -> Self {
        let k = TerminalConfig::default();
        TerminalFile {
            name: "PAYNET TEST MERCHANT".into(),
            tid: "TERM0001".into(),
            mid: "MERCHANT0000001".into(),
            mcc: "5411".into(),
            country: k.country,
            currency: k.currency,
            floor_limit: k.floor_limit,
            ttq: hex::encode_upper(k.ttq),
            tac_denial: hex::encode_upper(k.tac_denial),
            tac_online: hex::encode_upper(k.tac_online),
            tac_default: hex::encode_upper(k.tac_default),
            tpdu: None,
        }
    }
}

/// The settings, checked: what the messages and the kernel use.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub name: String,
    /// DE 41, space-padded to 8.
    pub tid: String,
    /// DE 42, space-padded to 15.
    pub mid: String,
    pub mcc: String,
    pub currency: Currency,
    pub kernel: TerminalConfig,
    pub tpdu: Option<Tpdu>,
}

impl TerminalFile {
    /// Reads a TOML file over the embedded defaults.
    pub fn parse(text: &str) -> Result<TerminalFile, String> {
        TerminalFile::parse_over(&TerminalFile::default(), text)
    }

    /// Reads a TOML file: the keys it has replace those of `defaults`.
    pub fn parse_over(defaults: &TerminalFile, text: &str) -> Result<TerminalFile, String> {
        let one_line = |e: &dyn std::fmt::Display| e.to_string().trim().replace('\n', " ");
        let file: toml::Table = toml::from_str(text).map_err(|e| one_line(&e))?;
        let mut merged = toml::Table::try_from(defaults).map_err(|e| one_line(&e))?;
        merged.extend(file);
        merged.try_into().map_err(|e| one_line(&e))
    }

    /// Checks every setting; all problems at once, each naming its key.
    pub fn validate(&self) -> Result<Terminal, Vec<String>> {
        let mut problems = Vec::new();
        let text = |key: &str, v: &str, max: usize, problems: &mut Vec<String>| {
            if v.is_empty() || v.len() > max || !v.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                problems.push(format!("{key}: expected 1 to {max} printable characters, found {v:?}"));
            }
            format!("{v:<max$}")
        };
        let tid = text("tid", &self.tid, 8, &mut problems);
        let mid = text("mid", &self.mid, 15, &mut problems);
        if self.mcc.len() != 4 || !self.mcc.bytes().all(|b| b.is_ascii_digit()) {
            problems.push(format!("mcc: expected 4 digits, found {:?}", self.mcc));
        }
        if self.country == 0 || self.country > 999 {
            problems
                .push(format!("country: expected an ISO 3166 numeric code (1-999), found {}", self.country));
        }
        let currency = Currency::from_numeric(self.currency);
        if currency.is_none() {
            problems.push(format!("currency: {} is not an active ISO 4217 numeric code", self.currency));
        }
        fn bytes<const N: usize>(key: &str, v: &str, problems: &mut Vec<String>) -> [u8; N] {
            match hex::decode(v).ok().and_then(|b| <[u8; N]>::try_from(b).ok()) {
                Some(b) => b,
                None => {
                    problems.push(format!("{key}: expected {} hex digits, found {v:?}", N * 2));
                    [0; N]
                }
            }
        }
        let ttq = bytes::<4>("ttq", &self.ttq, &mut problems);
        let tac_denial = bytes::<5>("tac_denial", &self.tac_denial, &mut problems);
        let tac_online = bytes::<5>("tac_online", &self.tac_online, &mut problems);
        let tac_default = bytes::<5>("tac_default", &self.tac_default, &mut problems);
        let tpdu = self.tpdu.as_deref().map(|t| Tpdu::from_bytes(bytes::<5>("tpdu", t, &mut problems)));
        match currency {
            Some(currency) if problems.is_empty() => Ok(Terminal {
                name: self.name.clone(),
                tid,
                mid,
                mcc: self.mcc.clone(),
                currency,
                kernel: TerminalConfig {
                    country: self.country,
                    currency: self.currency,
                    ttq,
                    floor_limit: self.floor_limit,
                    tac_denial,
                    tac_online,
                    tac_default,
                },
                tpdu,
            }),
            _ => Err(problems),
        }
    }
}

/// A moment in UTC, as the messages carry it (`codecs::iso8583::datetime::Utc`), with the
/// retrieval reference number a terminal derives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment(pub Utc);

impl Moment {
    pub fn now() -> Moment {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Moment(Utc::from_ms(ms))
    }

    /// The moment `secs` after the Unix epoch.
    pub fn at(secs: u64) -> Moment {
        Moment(Utc::from_ms(secs.saturating_mul(1000)))
    }

    /// DE 7, transmission date and time: MMDDhhmmss.
    pub fn transmitted(&self) -> String {
        self.0.transmission()
    }

    /// Tag 9A, transaction date: YYMMDD in BCD.
    pub fn emv_date(&self) -> [u8; 3] {
        self.0.emv_date()
    }

    /// Day of the year, 1-366.
    pub fn day_of_year(&self) -> u32 {
        self.0.day_of_year()
    }

    /// DE 37, retrieval reference number: YDDDhh + STAN (the common 12-character layout).
    pub fn rrn(&self, stan: u32) -> String {
        format!("{}{:03}{:02}{:06}", self.0.year % 10, self.0.day_of_year(), self.0.hour, stan % 1_000_000)
    }

    /// For people: `2026-11-25 09:30:49 UTC`.
    pub fn text(&self) -> String {
        self.0.text()
    }
}

/// The default state folder: `terminal-sim` under the system temporary folder.
pub fn default_state_dir() -> PathBuf {
    std::env::temp_dir().join("terminal-sim")
}

/// The next STAN of terminal `tid` (1 to 999,999, then 1 again), counted in `state_dir`: the file
/// is locked while it is read and rewritten, so invocations side by side get distinct STANs.
pub fn next_stan(state_dir: &Path, tid: &str) -> std::io::Result<u32> {
    std::fs::create_dir_all(state_dir)?;
    let safe: String =
        tid.trim_end().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let path = state_dir.join(format!("stan-{safe}.txt"));
    let mut f =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    f.lock()?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let last: u32 = text.trim().parse().unwrap_or(0);
    let next = last % 999_999 + 1;
    f.set_len(0)?;
    f.rewind()?;
    f.write_all(next.to_string().as_bytes())?;
    f.sync_data()?;
    f.unlock()?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_file_reads_and_checks() {
        let f =
            TerminalFile::parse(include_str!("../../config/terminal.toml")).expect("config/terminal.toml");
        let t = f.validate().expect("valid");
        assert_eq!(
            (t.name.as_str(), f.mcc.as_str(), f.country, f.currency),
            ("PAYNET TEST MERCHANT", "5411", 250, 978)
        );
        assert!(t.tpdu.is_none());
        // It shows the embedded defaults, value for value.
        assert_eq!(
            toml::Table::try_from(&f).expect("toml"),
            toml::Table::try_from(TerminalFile::default()).expect("toml")
        );
    }

    #[test]
    fn the_defaults_validate_and_mistakes_are_named() {
        let t = TerminalFile::default().validate().expect("defaults");
        assert_eq!(
            (t.tid.as_str(), t.mid.as_str(), t.currency.alpha),
            ("TERM0001", "MERCHANT0000001", "EUR")
        );
        let short = TerminalFile { tid: "T1".into(), ..TerminalFile::default() }.validate().expect("padded");
        assert_eq!(short.tid, "T1      ");
        let bad = TerminalFile {
            mcc: "54".into(),
            currency: 999,
            tac_denial: "00600000".into(),
            tid: "TOO-LONG-TID".into(),
            ..TerminalFile::default()
        };
        let problems = bad.validate().expect_err("four problems");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("tac_denial: expected 10 hex digits")));
        assert!(problems.iter().any(|p| p.starts_with("currency: 999")));
    }

    #[test]
    fn a_toml_file_overrides_what_it_names() {
        let f = TerminalFile::parse("tid = \"SHOP0042\"\nfloor_limit = 5000\ntac_denial = \"0060008000\"\n")
            .expect("toml");
        let t = f.validate().expect("valid");
        assert_eq!((t.tid.as_str(), t.kernel.floor_limit, t.kernel.tac_denial[3]), ("SHOP0042", 5000, 0x80));
        assert_eq!(t.mcc, "5411", "the rest stays default");
        let e = TerminalFile::parse("tidd = \"x\"").expect_err("unknown key");
        assert!(e.contains("tidd"), "{e}");
        let shop = TerminalFile { tid: "WEB00001".into(), ..TerminalFile::default() };
        let f = TerminalFile::parse_over(&shop, "mcc = \"5999\"").expect("toml");
        assert_eq!((f.tid.as_str(), f.mcc.as_str()), ("WEB00001", "5999"), "over the given defaults");
        assert!(TerminalFile::parse("floor_limit = \"ten\"").expect_err("type").contains("floor_limit"));
    }

    #[test]
    fn moments_as_the_messages_carry_them() {
        // 2024-02-29 13:14:15 UTC (leap day: day 60).
        let m = Moment::at(1_709_212_455);
        assert_eq!(m.text(), "2024-02-29 13:14:15 UTC");
        assert_eq!(m.transmitted(), "0229131415");
        assert_eq!(m.emv_date(), [0x24, 0x02, 0x29]);
        assert_eq!(m.day_of_year(), 60);
        assert_eq!(m.rrn(42), "406013000042");
        assert_eq!(Moment::at(1_735_603_200).day_of_year(), 366, "2024-12-31");
    }

    #[test]
    fn stans_count_up_per_terminal_and_wrap() {
        let dir = std::env::temp_dir().join(format!("terminal-sim-stan-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(next_stan(&dir, "TERM0001").expect("stan"), 1);
        assert_eq!(next_stan(&dir, "TERM0001").expect("stan"), 2);
        assert_eq!(next_stan(&dir, "OTHER001").expect("stan"), 1);
        std::fs::write(dir.join("stan-TERM0001.txt"), "999999").expect("write");
        assert_eq!(next_stan(&dir, "TERM0001").expect("stan"), 1, "wraps");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
