//! `paytool mac`: a MAC over hex data (INTERFACES.md §2): ISO 9797-1 algorithm 1 with padding
//! method 1 or 2, algorithm 3 (retail, X9.19), AES-CMAC, TDES-CMAC, HMAC-SHA256.

use clap::Args;
use crypto::keys::to_hex;
use crypto::mac::MacAlgorithm;
use serde_json::json;

use crate::output::{Answer, BadInput, CmdResult, crypto_arg, hex_arg};

#[derive(Args)]
pub struct MacArgs {
    /// iso9797-1-m1 | iso9797-1-m2 | retail | cmac | cmac-tdes | hmac-sha256
    #[arg(long)]
    alg: String,
    /// The MAC key (hex).
    #[arg(long)]
    key: String,
    /// The data to MAC (hex), without padding.
    #[arg(long)]
    data: String,
    /// Output only the leftmost N bytes.
    #[arg(long)]
    len: Option<usize>,
}

pub fn run(a: MacArgs) -> CmdResult {
    let alg = MacAlgorithm::from_name(&a.alg).map_err(crypto_arg("--alg"))?;
    let key = hex_arg("--key", &a.key)?;
    let data = hex_arg("--data", &a.data)?;
    let full = alg.compute(&key, &data).map_err(crypto_arg("--key"))?;
    let mac = match a.len {
        None => full,
        Some(n) => crypto::mac::truncate(&full, n).map_err(crypto_arg("--len"))?,
    };
    let text = to_hex(&mac);
    if text.is_empty() {
        return Err(BadInput::new("--len", "empty MAC"));
    }
    Ok(Answer::Line { json: json!({ "mac": text, "alg": alg.name() }), text })
}
