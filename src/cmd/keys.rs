//! `paynet keys`: an operator's key management for a switch node.
//!
//! The LMK comes from the environment variable `PAYNET_LMK` (hex) or `--lmk-file`; the keystore
//! file holds only key blocks under it with their check values, so it can be versioned and copied
//! like any config file. Nothing here prints a clear key except `new-lmk`, whose whole purpose is
//! to hand the operator a fresh LMK to place in their secret store.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use crypto::keyblock::Header;
use crypto::keys::to_hex;
use crypto::keystore::{KeyName, Keystore, LMK_ENV_VAR, Lmk};

#[derive(Subcommand)]
pub enum Keys {
    /// Print a fresh AES-256 LMK (hex) for PAYNET_LMK.
    NewLmk,
    /// Generate a key under the LMK and add it to the keystore file (created if absent).
    Generate {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's name, e.g. `issuer-a.imk-ac`.
        #[arg(long)]
        name: String,
        /// TR-31 header template, 16 characters with any length digits, e.g. `D0000E0TE00N0000`
        /// (usage E0 = EMV master key for cryptograms, algorithm T = TDES, mode E, not exportable).
        #[arg(long)]
        header: String,
        /// Key length in bytes: 16 or 24 (TDES), 16, 24 or 32 (AES).
        #[arg(long)]
        len: usize,
    },
    /// List the keys: name, usage, algorithm, mode of use, exportability, KCV.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Unwrap every key block under the LMK and check its KCV; non-zero exit on any problem.
    Check {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args)]
pub struct StoreArgs {
    /// The keystore file (TOML of key blocks).
    #[arg(long)]
    keystore: PathBuf,
    /// Read the LMK from this file instead of the PAYNET_LMK environment variable.
    #[arg(long)]
    lmk_file: Option<PathBuf>,
}

fn lmk(args: &StoreArgs) -> Result<Lmk> {
    let hex = match &args.lmk_file {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading the LMK file {}", p.display()))?
        }
        None => std::env::var(LMK_ENV_VAR)
            .with_context(|| format!("{LMK_ENV_VAR} is not set (or use --lmk-file)"))?,
    };
    Ok(Lmk::from_hex(hex.trim())?)
}

fn load(args: &StoreArgs, must_exist: bool) -> Result<Keystore> {
    let lmk = lmk(args)?;
    match std::fs::read_to_string(&args.keystore) {
        Ok(text) => {
            Keystore::from_toml(lmk, &text).with_context(|| format!("loading {}", args.keystore.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(Keystore::new(lmk)),
        Err(e) => Err(e).with_context(|| format!("reading {}", args.keystore.display())),
    }
}

/// Writes the file atomically: a temporary file beside it, then a rename.
fn save(path: &Path, store: &Keystore) -> Result<()> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, store.to_toml()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn random(n: usize) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; n]);
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
    Ok(buf)
}

pub fn run(cmd: Keys) -> Result<()> {
    match cmd {
        Keys::NewLmk => {
            let key = random(32)?;
            println!("{}", to_hex(&key));
        }
        Keys::Generate { store, name, header, len } => {
            let mut ks = load(&store, false)?;
            let header = Header::parse_template(&header).context("--header")?;
            let name = KeyName::new(&name).context("--name")?;
            let rnd = random(ks.random_len(len))?;
            let kcv = ks.generate(name.clone(), &header, len, &rnd).context("generating the key")?;
            save(&store.keystore, &ks)?;
            println!("{name} KCV {}", to_hex(&kcv));
        }
        Keys::List { store } => {
            let ks = load(&store, true)?;
            for name in ks.names() {
                let h = ks.header(name)?;
                println!(
                    "{name}\tusage {}\talgorithm {}\tmode {}\texport {}\tKCV {}",
                    h.usage,
                    h.algorithm,
                    h.mode_of_use,
                    h.exportability,
                    to_hex(&ks.kcv(name)?)
                );
            }
        }
        Keys::Check { store } => {
            // Loading unwraps every block and checks every KCV; any failure names the key.
            let ks = load(&store, true)?;
            if ks.is_empty() {
                bail!("{} holds no keys", store.keystore.display());
            }
            println!("{} keys OK", ks.len());
        }
    }
    Ok(())
}
