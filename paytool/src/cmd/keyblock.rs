//! `paytool keyblock wrap|unwrap`: TR-31 / ANSI X9.143 key blocks.
//!
//! `wrap` takes the 16-character header with any length digits (e.g. `B0000P0TE00N0000`, optional
//! blocks may follow), computes the length, adds the PB block and random padding from the OS;
//! `unwrap` verifies the MAC and prints the key. The KBPK's algorithm follows the version: TDES
//! for A/B/C, AES for D. Usage and mode-of-use rules are the keystore's, not paytool's.

use clap::{Args, Subcommand};
use crypto::ErrorKind;
use crypto::keyblock::{self, Header, KeyBlockVersion};
use crypto::keys::{AesKey, SymmetricKey, TdesKey, to_hex};
use serde_json::json;
use zeroize::Zeroize;

use crate::output::{Answer, BadInput, CmdResult, crypto_arg, hex_arg};

#[derive(Subcommand)]
pub enum KeyblockCmd {
    /// Wrap a key into a key block.
    Wrap(WrapArgs),
    /// Unwrap a key block and print the key.
    Unwrap(UnwrapArgs),
}

#[derive(Args)]
pub struct WrapArgs {
    /// The key block protection key (hex): TDES for versions A/B/C, AES for D.
    #[arg(long)]
    kbpk: String,
    /// The key to wrap (hex).
    #[arg(long)]
    key: String,
    /// The TR-31 header, 16 characters with any length digits, then any optional blocks.
    #[arg(long)]
    header: String,
}

#[derive(Args)]
pub struct UnwrapArgs {
    /// The key block protection key (hex).
    #[arg(long)]
    kbpk: String,
    /// The key block.
    #[arg(long)]
    block: String,
}

pub fn run(cmd: KeyblockCmd) -> CmdResult {
    match cmd {
        KeyblockCmd::Wrap(a) => wrap(a),
        KeyblockCmd::Unwrap(a) => unwrap(a),
    }
}

fn kbpk_for(version: KeyBlockVersion, hex: &str) -> Result<SymmetricKey, BadInput> {
    let mut bytes = hex_arg("--kbpk", hex)?;
    let k = match version {
        KeyBlockVersion::D => AesKey::from_slice(&bytes).map(SymmetricKey::Aes),
        _ => TdesKey::from_slice(&bytes).map(SymmetricKey::Tdes),
    };
    bytes.zeroize();
    k.map_err(|e| BadInput::new("--kbpk", format!("version {} key blocks: {}", version.as_char(), e.detail)))
}

fn wrap(a: WrapArgs) -> CmdResult {
    let header = Header::parse_template(a.header.trim()).map_err(crypto_arg("--header"))?;
    let kbpk = kbpk_for(header.version, &a.kbpk)?;
    let mut key = hex_arg("--key", &a.key)?;
    let mut random = vec![0u8; keyblock::padding_len(header.version, key.len(), 0)];
    getrandom::fill(&mut random).map_err(|e| BadInput::new("random", format!("OS RNG failed: {e}")))?;
    let block = keyblock::wrap(&kbpk, &header, &key, &random);
    key.zeroize();
    random.zeroize();
    let block = block.map_err(|e| match e.what {
        "key" => BadInput::new("--key", e.detail),
        "KBPK" => BadInput::new("--kbpk", e.detail),
        _ => BadInput::new("--header", e.detail),
    })?;
    Ok(Answer::Line { json: json!({ "keyblock": block }), text: block })
}

fn unwrap(a: UnwrapArgs) -> CmdResult {
    let block = a.block.trim();
    let version = match block.as_bytes().first() {
        Some(b'A') => KeyBlockVersion::A,
        Some(b'B') => KeyBlockVersion::B,
        Some(b'C') => KeyBlockVersion::C,
        Some(b'D') => KeyBlockVersion::D,
        _ => return Err(BadInput::new("--block", "version ID at position 0: expected A, B, C or D")),
    };
    let kbpk = kbpk_for(version, &a.kbpk)?;
    let k = keyblock::unwrap(&kbpk, block).map_err(|e| {
        if e.kind == ErrorKind::KeyUsage {
            BadInput::new("--kbpk", e.detail)
        } else {
            BadInput::new("--block", e.detail)
        }
    })?;
    let text = to_hex(k.expose());
    let h = &k.header;
    let mut json = json!({
        "key": text,
        "version": h.version.as_char().to_string(),
        "usage": h.usage.to_string(),
        "algorithm": h.algorithm.to_string(),
        "mode_of_use": h.mode_of_use.to_string(),
        "key_version": String::from_utf8_lossy(&h.key_version),
        "exportability": h.exportability.to_string(),
        "optional_blocks": h.optional_blocks.iter().map(|b| json!({"id": b.id_str(), "data": b.data})).collect::<Vec<_>>(),
    });
    if let Some(kcv) = k.kcv() {
        json["kcv"] = json!(to_hex(&kcv));
    }
    Ok(Answer::Line { json, text })
}
