//! `paytool pin encrypt|decrypt|translate`, `paytool pvv` and `paytool dukpt ipek|key`
//! (INTERFACES.md §2). PIN block formats 0, 1 and 3 take TDES keys, format 4 an AES key; random
//! fill comes from the operating system. DUKPT is ANSI X9.24-1:2009 (TDES, 10-byte KSN) or, with
//! `--aes`, X9.24-3-2017 (12-byte KSN). Clear PINs and keys given here are test material and are
//! never echoed in an error.

use clap::{Args, Subcommand};
use crypto::dukpt::{self, AesKsn, KeyUsage, TdesKsn};
use crypto::keys::{AesKey, SymmetricKey, TdesKey, to_hex};
use crypto::pin::{self, Pin, PinBlockFormat};

use crate::output::{Answer, BadInput, CmdResult, crypto_arg, hex_arg};

#[derive(Subcommand)]
pub enum PinCmd {
    /// Encrypt a PIN into a PIN block.
    Encrypt {
        #[arg(long)]
        format: u8,
        #[arg(long)]
        key: String,
        #[arg(long)]
        pin: String,
        #[arg(long)]
        pan: String,
    },
    /// Decrypt a PIN block to its PIN.
    Decrypt {
        #[arg(long)]
        format: u8,
        #[arg(long)]
        key: String,
        #[arg(long)]
        block: String,
        #[arg(long)]
        pan: String,
    },
    /// Translate a PIN block to another key and format.
    Translate {
        #[arg(long)]
        from_format: u8,
        #[arg(long)]
        from_key: String,
        #[arg(long)]
        to_format: u8,
        #[arg(long)]
        to_key: String,
        #[arg(long)]
        block: String,
        #[arg(long)]
        pan: String,
    },
}

fn format(arg: &'static str, n: u8) -> Result<PinBlockFormat, BadInput> {
    PinBlockFormat::from_number(n).map_err(crypto_arg(arg))
}

/// The key for a format: AES for format 4, TDES otherwise.
fn key(arg: &'static str, f: PinBlockFormat, hex: &str) -> Result<SymmetricKey, BadInput> {
    Ok(match f {
        PinBlockFormat::Iso4 => SymmetricKey::Aes(AesKey::from_hex(arg, hex).map_err(crypto_arg(arg))?),
        _ => SymmetricKey::Tdes(TdesKey::from_hex(arg, hex).map_err(crypto_arg(arg))?),
    })
}

fn os_fill() -> Result<pin::PinFill, BadInput> {
    let mut f = [0u8; 8];
    getrandom::fill(&mut f)
        .map_err(|e| BadInput::new("random", format!("the OS random source failed: {e}")))?;
    Ok(f)
}

/// Names the argument a PIN-module error is about.
fn pin_err(e: crypto::Error) -> BadInput {
    let arg = match e.what {
        "PIN" | "pin" => "--pin",
        "PAN" | "pan" => "--pan",
        "PIN block" => "--block",
        "from key" => "--from-key",
        "to key" => "--to-key",
        _ => "--key",
    };
    BadInput::new(arg, e.detail)
}

pub fn run(cmd: PinCmd) -> CmdResult {
    match cmd {
        PinCmd::Encrypt { format: f, key: k, pin: p, pan } => {
            let f = format("--format", f)?;
            let k = key("--key", f, &k)?;
            let p = Pin::new(&p).map_err(|e| BadInput::new("--pin", e.detail))?;
            let block = pin::encrypt_pin_block(&k, f, &p, &pan, &os_fill()?).map_err(pin_err)?;
            Ok(Answer::line("pin_block", to_hex(&block)))
        }
        PinCmd::Decrypt { format: f, key: k, block, pan } => {
            let f = format("--format", f)?;
            let k = key("--key", f, &k)?;
            let block = hex_arg("--block", &block)?;
            let p = pin::decrypt_pin_block(&k, f, &block, &pan).map_err(pin_err)?;
            Ok(Answer::line("pin", p.expose_string().as_str()))
        }
        PinCmd::Translate { from_format, from_key, to_format, to_key, block, pan } => {
            let ff = format("--from-format", from_format)?;
            let tf = format("--to-format", to_format)?;
            let fk = key("--from-key", ff, &from_key)?;
            let tk = key("--to-key", tf, &to_key)?;
            let block = hex_arg("--block", &block)?;
            let out =
                pin::translate_pin_block(&fk, ff, &tk, tf, &block, &pan, &os_fill()?).map_err(pin_err)?;
            Ok(Answer::line("pin_block", to_hex(&out)))
        }
    }
}

#[derive(Args)]
pub struct PvvArgs {
    /// The PIN verification key pair PVK A ‖ PVK B (32 hex digits).
    #[arg(long)]
    pvk: String,
    #[arg(long)]
    pan: String,
    /// The PIN verification key index, one digit.
    #[arg(long)]
    pvki: u8,
    #[arg(long)]
    pin: String,
}

pub fn pvv(a: PvvArgs) -> CmdResult {
    let pvk = TdesKey::from_hex("--pvk", &a.pvk).map_err(crypto_arg("--pvk"))?;
    let p = Pin::new(&a.pin).map_err(|e| BadInput::new("--pin", e.detail))?;
    let v = pin::visa_pvv(&pvk, &a.pan, a.pvki, &p).map_err(|e| {
        let arg = match e.what {
            "PVKI" => "--pvki",
            "PAN" | "pan" => "--pan",
            _ => "--pvk",
        };
        BadInput::new(arg, e.detail)
    })?;
    Ok(Answer::line("pvv", v))
}

#[derive(Subcommand)]
pub enum DukptCmd {
    /// The initial key (IPEK) of a device.
    Ipek {
        #[arg(long)]
        bdk: String,
        #[arg(long)]
        ksn: String,
        /// AES DUKPT (X9.24-3-2017): AES BDK, 12-byte KSN.
        #[arg(long)]
        aes: bool,
    },
    /// The working key of a transaction.
    Key {
        #[arg(long)]
        bdk: String,
        #[arg(long)]
        ksn: String,
        /// pin, mac-req, mac-resp, data-req or data-resp.
        #[arg(long)]
        usage: String,
        #[arg(long)]
        aes: bool,
        /// AES DUKPT: aes128, aes192, aes256, tdes2 or tdes3 (default: the BDK's type).
        #[arg(long)]
        key_type: Option<String>,
    },
}

pub fn dukpt(cmd: DukptCmd) -> CmdResult {
    match cmd {
        DukptCmd::Ipek { bdk, ksn, aes } => {
            if aes {
                let bdk = AesKey::from_hex("--bdk", &bdk).map_err(crypto_arg("--bdk"))?;
                let ksn = AesKsn::from_hex(&ksn).map_err(crypto_arg("--ksn"))?;
                let ik = dukpt::aes::derive_initial_key(&bdk, &ksn.initial_key_id());
                Ok(Answer::line("ipek", to_hex(ik.expose())))
            } else {
                let bdk = TdesKey::from_hex("--bdk", &bdk).map_err(crypto_arg("--bdk"))?;
                let ksn = TdesKsn::from_hex(&ksn).map_err(crypto_arg("--ksn"))?;
                let ipek = dukpt::tdes::derive_ipek(&bdk, &ksn).map_err(crypto_arg("--bdk"))?;
                Ok(Answer::line("ipek", to_hex(ipek.expose())))
            }
        }
        DukptCmd::Key { bdk, ksn, usage, aes, key_type } => {
            let usage = KeyUsage::from_name(&usage).map_err(crypto_arg("--usage"))?;
            if aes {
                let bdk = AesKey::from_hex("--bdk", &bdk).map_err(crypto_arg("--bdk"))?;
                let ksn = AesKsn::from_hex(&ksn).map_err(crypto_arg("--ksn"))?;
                let kt = key_type
                    .map(|t| dukpt::aes::AesDukptKeyType::from_name(&t))
                    .transpose()
                    .map_err(crypto_arg("--key-type"))?;
                let k = dukpt::aes::derive_working_key(&bdk, &ksn, usage, kt).map_err(|e| {
                    let arg = if e.what == "key type" { "--key-type" } else { "--ksn" };
                    BadInput::new(arg, e.detail)
                })?;
                Ok(Answer::line("key", to_hex(k.expose())))
            } else {
                if key_type.is_some() {
                    return Err(BadInput::new(
                        "--key-type",
                        "only with --aes (TDES DUKPT keys are double-length TDES)",
                    ));
                }
                let bdk = TdesKey::from_hex("--bdk", &bdk).map_err(crypto_arg("--bdk"))?;
                let ksn = TdesKsn::from_hex(&ksn).map_err(crypto_arg("--ksn"))?;
                let k = dukpt::tdes::derive_working_key(&bdk, &ksn, usage).map_err(crypto_arg("--ksn"))?;
                Ok(Answer::line("key", to_hex(k.expose())))
            }
        }
    }
}
