//! `paytool kcv`: a key check value, 6 hex digits (TDES: the key encrypting 8 zero bytes; AES:
//! AES-CMAC over 16 zero bytes, as X9.24-3 and TR-31 version D use).

use clap::{Args, ValueEnum};
use crypto::keys::{AesKey, TdesKey, to_hex};

use crate::output::{Answer, CmdResult, crypto_arg};

#[derive(Clone, Copy, ValueEnum)]
pub enum KcvAlg {
    Tdes,
    Aes,
}

#[derive(Args)]
pub struct KcvArgs {
    /// The key (hex).
    #[arg(long)]
    key: String,
    /// tdes (default) or aes.
    #[arg(long, value_enum, default_value = "tdes")]
    alg: KcvAlg,
}

pub fn run(a: KcvArgs) -> CmdResult {
    let kcv = match a.alg {
        KcvAlg::Tdes => TdesKey::from_hex("--key", &a.key).map_err(crypto_arg("--key"))?.kcv(),
        KcvAlg::Aes => AesKey::from_hex("--key", &a.key).map_err(crypto_arg("--key"))?.kcv(),
    };
    Ok(Answer::line("kcv", to_hex(&kcv)))
}
