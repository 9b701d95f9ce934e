//! Fuzzes the terminal configuration file (`terminal_sim::terminal::TerminalFile`, TOML over the
//! embedded defaults) with arbitrary text. Never panics; a file that parses validates to a terminal
//! or to problems that each name the key they are about.
#![no_main]

use libfuzzer_sys::fuzz_target;
use terminal_sim::terminal::TerminalFile;

const KEYS: [&str; 12] = [
    "name",
    "tid",
    "mid",
    "mcc",
    "country",
    "currency",
    "floor_limit",
    "ttq",
    "tac_denial",
    "tac_online",
    "tac_default",
    "tpdu",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = TerminalFile::parse(text) else { return };
    match file.validate() {
        Ok(t) => {
            assert_eq!((t.tid.len(), t.mid.len()), (8, 15), "DE 41 and DE 42 padded");
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "an invalid file with no problem named");
            for p in &problems {
                assert!(
                    KEYS.iter().any(|k| p.strip_prefix(k).is_some_and(|r| r.starts_with(": "))),
                    "a problem that names no key: {p:?}"
                );
            }
        }
    }
});
