//! `paynet keys`: an operator's key management for a switch node.
//!
//! The LMK comes from a switch configuration's `[keys]` table (`--config`), from 2 or 3
//! custodians' component files (`--lmk-components FILE:KCV ...` with `--lmk-kcv`), from a file
//! (`--lmk-file`) or from the environment variable `PAYNET_LMK` (hex). LMK and component files are
//! read only when private to the user (mode 0600 or stricter). The keystore file holds only key
//! blocks under the LMK with their check values, so it can be versioned and copied like any config
//! file; it is written atomically, mode 0600.
//!
//! Nothing here prints a clear key, except `new-lmk` without `--components`, whose purpose is to
//! hand a test setup a fresh LMK for `PAYNET_LMK`. `new-lmk --components N --out DIR` writes each
//! component to its own new file (one per custodian) and prints only check values; `rewrap` moves
//! every key to a new LMK and prints names and check values.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use crypto::keyblock::Header;
use crypto::keys::{Algorithm, to_hex};
use crypto::keystore::{KeyName, Keystore, Lmk, LmkComponent};
use paynet::private_file;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum Keys {
    /// A fresh LMK: without --components, printed (hex) for PAYNET_LMK in tests; with
    /// --components N --out DIR, N custodians' component files (mode 0600, never overwritten)
    /// whose XOR is the LMK, their KCVs, the LMK's KCV and the [keys] configuration.
    NewLmk {
        /// Split the LMK into this many components (2 or 3), one file each.
        #[arg(long, value_parser = clap::value_parser!(u8).range(2..=3), requires = "out")]
        components: Option<u8>,
        /// The folder the component files go to (created, mode 0700, when missing).
        #[arg(long, value_name = "DIR", requires = "components")]
        out: Option<PathBuf>,
        /// An AES-256 LMK (key blocks version D; the default).
        #[arg(long, conflicts_with = "tdes")]
        aes: bool,
        /// A triple-length TDES LMK (key blocks version B).
        #[arg(long)]
        tdes: bool,
    },
    /// Generate a key under the LMK and add it to the keystore file (created if absent).
    Generate {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's name, e.g. `issuer-a.imk-ac`.
        #[arg(long, required_unless_present = "node_keys")]
        name: Option<String>,
        /// TR-31 header template, 16 characters with any length digits, e.g. `D0000E0TE00N0000`
        /// (usage E0 = EMV master key for cryptograms, algorithm T = TDES, mode E, not exportable).
        #[arg(long, required_unless_present = "node_keys")]
        header: Option<String>,
        /// Key length in bytes: 16 or 24 (TDES), 16, 24 or 32 (AES).
        #[arg(long, required_unless_present = "node_keys")]
        len: Option<usize>,
        /// Instead: add whichever of the node's own keys the keystore lacks (switch.saf,
        /// switch.fingerprint, tsp.vault-index, tsp.token-ref).
        #[arg(long, conflicts_with_all = ["name", "header", "len"])]
        node_keys: bool,
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
    /// Re-wrap every key of the keystore under a new LMK, check that every key's KCV is
    /// unchanged, and replace the keystore atomically (mode 0600). Prints each key's name and KCV.
    Rewrap {
        #[command(flatten)]
        store: StoreArgs,
        /// The new LMK's components: 2 or 3 of FILE:KCV (with --new-lmk-kcv).
        #[arg(long, value_name = "FILE:KCV", num_args = 2..=3, conflicts_with = "new_lmk_file")]
        new_lmk_components: Vec<String>,
        /// Or the new LMK whole, from a file (hex, mode 0600); `--new-lmk FILE` says the same.
        #[arg(long, value_name = "FILE", visible_alias = "new-lmk")]
        new_lmk_file: Option<PathBuf>,
        /// The new LMK's KCV (required with --new-lmk-components).
        #[arg(long, value_name = "KCV")]
        new_lmk_kcv: Option<String>,
        /// Write the re-wrapped keystore here instead of replacing the keystore file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct StoreArgs {
    /// The keystore file (TOML of key blocks); by default the one --config names.
    #[arg(long, required_unless_present = "config")]
    keystore: Option<PathBuf>,
    /// A switch configuration whose [keys] table says where the LMK (and the keystore) is.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["lmk_file", "lmk_components"])]
    config: Option<PathBuf>,
    /// Read the LMK from this file (hex, mode 0600) instead of the PAYNET_LMK environment variable.
    #[arg(long, conflicts_with = "lmk_components")]
    lmk_file: Option<PathBuf>,
    /// The LMK as the XOR of 2 or 3 custodians' components: FILE:KCV each (with --lmk-kcv).
    #[arg(long, value_name = "FILE:KCV", num_args = 2..=3)]
    lmk_components: Vec<String>,
    /// The LMK's KCV: required with --lmk-components, checked whenever given.
    #[arg(long, value_name = "KCV")]
    lmk_kcv: Option<String>,
}

/// `FILE:KCV` arguments as (file, KCV); the KCV is what follows the last colon.
fn component_args(flag: &str, args: &[String]) -> Result<Vec<(PathBuf, String)>> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            let (file, kcv) = a
                .rsplit_once(':')
                .filter(|(f, k)| !f.is_empty() && !k.is_empty())
                .ok_or_else(|| anyhow!("{flag} argument {}: expected FILE:KCV, found {a:?}", i + 1))?;
            Ok((PathBuf::from(file), kcv.to_string()))
        })
        .collect()
}

/// The LMK of `components` (FILE:KCV, with `kcv`), else of `file`, else of `PAYNET_LMK`.
fn lmk_from_flags(flag: &str, components: &[String], file: Option<&Path>, kcv: Option<&str>) -> Result<Lmk> {
    if !components.is_empty() {
        let files = component_args(flag, components)?;
        let kcv = kcv.ok_or_else(|| anyhow!("{flag} needs the combined LMK's KCV too"))?;
        return Ok(switch::keys::lmk_from_component_files(&files, kcv)?);
    }
    Ok(match file {
        Some(p) => switch::keys::lmk_from_file(p, kcv)?,
        None => switch::keys::lmk_from_env(crypto::keystore::LMK_ENV_VAR, kcv)
            .context("no LMK: use --config, --lmk-components, --lmk-file or PAYNET_LMK")?,
    })
}

/// The keystore file and the current LMK the arguments name.
fn source(args: &StoreArgs) -> Result<(PathBuf, Lmk)> {
    if let Some(cfg_path) = &args.config {
        let text =
            std::fs::read_to_string(cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
        let cfg =
            switch::config::SwitchConfig::from_toml(&text).with_context(|| cfg_path.display().to_string())?;
        let base = cfg_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut keys = cfg.keys;
        if args.lmk_kcv.is_some() {
            keys.lmk_kcv = args.lmk_kcv.clone();
        }
        let lmk = switch::keys::load_lmk(&keys, &base)?;
        let keystore = args.keystore.clone().unwrap_or_else(|| base.join(&keys.keystore));
        return Ok((keystore, lmk));
    }
    let keystore = args.keystore.clone().ok_or_else(|| anyhow!("--keystore or --config is needed"))?;
    let lmk = lmk_from_flags(
        "--lmk-components",
        &args.lmk_components,
        args.lmk_file.as_deref(),
        args.lmk_kcv.as_deref(),
    )?;
    Ok((keystore, lmk))
}

fn load(args: &StoreArgs, must_exist: bool) -> Result<(PathBuf, Keystore)> {
    let (path, lmk) = source(args)?;
    let ks = match std::fs::read_to_string(&path) {
        Ok(text) => Keystore::from_toml(lmk, &text).with_context(|| format!("loading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Keystore::new(lmk),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok((path, ks))
}

/// Writes the keystore atomically (a temporary file beside it, then a rename), mode 0600.
fn save(path: &Path, store: &Keystore) -> Result<()> {
    private_file::write_atomic(path, store.to_toml().as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn random(n: usize) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; n]);
    fill_random(&mut buf)?;
    Ok(buf)
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| anyhow!("the OS random source failed: {e}"))
}

/// A TOML basic string (JSON's string escapes are valid TOML).
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn new_lmk(components: Option<u8>, out: Option<PathBuf>, tdes: bool) -> Result<()> {
    let algorithm = if tdes { Algorithm::Tdes } else { Algorithm::Aes };
    let (Some(n), Some(dir)) = (components, out) else {
        // One whole LMK for PAYNET_LMK (tests, a developer's machine).
        let c = LmkComponent::generate(algorithm, &random(32)?)?;
        println!("{}", c.expose_hex().as_str());
        return Ok(());
    };
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let files: Vec<PathBuf> = (1..=n).map(|i| dir.join(format!("lmk-component-{i}.hex"))).collect();
    if let Some(f) = files.iter().find(|f| f.exists()) {
        bail!("{} exists already; components are never overwritten (choose another --out)", f.display());
    }
    let mut components = Vec::with_capacity(files.len());
    for _ in &files {
        components.push(LmkComponent::generate(algorithm, &random(32)?)?);
    }
    let kcvs: Vec<String> = components.iter().map(|c| to_hex(&c.kcv())).collect();
    let expected: Vec<&str> = kcvs.iter().map(String::as_str).collect();
    // The combined LMK, only for its check value; then loaded as a node will load it.
    let lmk_kcv = to_hex(&Lmk::combine(&components)?.kcv());
    Lmk::from_components(&components, &expected, &lmk_kcv)?;
    for (i, (f, c)) in files.iter().zip(&components).enumerate() {
        // Built in one allocation, so no copy of the component is left behind by a reallocation.
        let hex = c.expose_hex();
        let mut text = Zeroizing::new(Vec::with_capacity(hex.len() + 1));
        text.extend_from_slice(hex.as_bytes());
        text.push(b'\n');
        if let Err(e) = private_file::create_new(f, &text) {
            // Leave no partial set behind.
            for g in &files[..i] {
                let _ = std::fs::remove_file(g);
            }
            return Err(e).with_context(|| format!("creating {}", f.display()));
        }
    }
    let alg = if tdes { "TDES triple length, key blocks version B" } else { "AES-256, key blocks version D" };
    for (i, (f, k)) in files.iter().zip(&kcvs).enumerate() {
        println!("LMK component {}: {}  KCV {k}", i + 1, f.display());
    }
    println!("LMK ({alg}) = XOR of the {n} components: KCV {lmk_kcv}");
    println!();
    println!("# [keys] in the switch configuration (hand each component file to its custodian):");
    println!("lmk_components = [");
    for (f, k) in files.iter().zip(&kcvs) {
        println!("  {{ file = {}, kcv = \"{k}\" }},", toml_string(&f.display().to_string()));
    }
    println!("]");
    println!("lmk_kcv = \"{lmk_kcv}\"");
    Ok(())
}

fn rewrap(
    store: StoreArgs,
    new_components: Vec<String>,
    new_file: Option<PathBuf>,
    new_kcv: Option<String>,
    out: Option<PathBuf>,
) -> Result<()> {
    if new_components.is_empty() && new_file.is_none() {
        bail!("the new LMK: --new-lmk-components FILE:KCV ... with --new-lmk-kcv, or --new-lmk-file");
    }
    let (path, ks) = load(&store, true)?;
    let new_lmk =
        lmk_from_flags("--new-lmk-components", &new_components, new_file.as_deref(), new_kcv.as_deref())
            .context("the new LMK")?;
    let new_lmk_kcv = to_hex(&new_lmk.kcv());
    if new_lmk_kcv == to_hex(&ks.lmk_kcv()) {
        bail!("the new LMK has the current LMK's KCV {new_lmk_kcv}: it is the same key");
    }
    let mut failed = None;
    let re = ks.rewrap(new_lmk.clone(), &mut |b| {
        if let Err(e) = fill_random(b) {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let re = re.context("re-wrapping")?;
    // What is written is read back under the new LMK, and every key must still be there with
    // the KCV it had.
    let text = re.to_toml();
    let back = Keystore::from_toml(new_lmk, &text).context("reading the re-wrapped keystore back")?;
    for name in ks.names() {
        if back.kcv(name)? != ks.kcv(name)? {
            bail!("key {name}: its KCV changed in re-wrapping; nothing written");
        }
    }
    if back.len() != ks.len() {
        bail!("{} keys re-wrapped, {} expected; nothing written", back.len(), ks.len());
    }
    let target = out.unwrap_or_else(|| path.clone());
    private_file::write_atomic(&target, text.as_bytes())
        .with_context(|| format!("writing {}", target.display()))?;
    println!(
        "{} keys re-wrapped from the LMK with KCV {} to the LMK with KCV {new_lmk_kcv}, written to {}",
        back.len(),
        to_hex(&ks.lmk_kcv()),
        target.display()
    );
    for name in back.names() {
        println!("{name}\tKCV {}", to_hex(&back.kcv(name)?));
    }
    Ok(())
}

pub fn run(cmd: Keys) -> Result<()> {
    match cmd {
        Keys::NewLmk { components, out, aes: _, tdes } => new_lmk(components, out, tdes)?,
        Keys::Generate { store, node_keys: true, .. } => {
            let (path, mut ks) = load(&store, false)?;
            let mut failed = None;
            let added = switch::keys::ensure_node_keys(&mut ks, &mut |b| {
                if let Err(e) = fill_random(b) {
                    failed = Some(e);
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            let added = added?;
            if added.is_empty() {
                println!("the keystore has every node key already");
            } else {
                save(&path, &ks)?;
            }
            for (name, kcv) in added {
                println!("{name} KCV {}", to_hex(&kcv));
            }
        }
        Keys::Generate { store, name, header, len, node_keys: false } => {
            let (Some(name), Some(header), Some(len)) = (name, header, len) else {
                bail!("--name, --header and --len are needed (or --node-keys)");
            };
            let (path, mut ks) = load(&store, false)?;
            let header = Header::parse_template(&header).context("--header")?;
            let name = KeyName::new(&name).context("--name")?;
            let rnd = random(ks.random_len(len))?;
            let kcv = ks.generate(name.clone(), &header, len, &rnd).context("generating the key")?;
            save(&path, &ks)?;
            println!("{name} KCV {}", to_hex(&kcv));
        }
        Keys::List { store } => {
            let (_, ks) = load(&store, true)?;
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
            let (path, ks) = load(&store, true)?;
            if ks.is_empty() {
                bail!("{} holds no keys", path.display());
            }
            println!("{} keys OK", ks.len());
        }
        Keys::Rewrap { store, new_lmk_components, new_lmk_file, new_lmk_kcv, out } => {
            rewrap(store, new_lmk_components, new_lmk_file, new_lmk_kcv, out)?
        }
    }
    Ok(())
}
