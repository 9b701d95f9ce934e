//! Where a process's LMK comes from, and how its files are read: an environment variable holding
//! it in hex (tests, containers), a file holding it, or the XOR of 2 or 3 custodians' component
//! files each with the check value its custodian read out at the ceremony.
//!
//! Files holding an LMK or a component are read only when private to the process's user (unix
//! mode 0600 or stricter, owned by the effective user); their contents stay in zeroizing buffers,
//! and no error names more than the file, its mode or a check value. The switch and the issuer
//! simulator both take their `[keys]` LMK options through [`LmkSource`].

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};
use crate::keystore::{Lmk, LmkComponent};

fn custody_err(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Keystore, "LMK", detail)
}

/// One LMK component: the custodian's file and the KCV they read out at the ceremony.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmkComponentConfig {
    pub file: PathBuf,
    pub kcv: String,
}

/// The LMK options of a `[keys]` table: `components` (with `kcv`) when given, else `file`, else
/// the environment variable `env`. Relative paths are taken against the configuration's folder.
#[derive(Debug, Clone, Copy)]
pub struct LmkSource<'a> {
    pub env: &'a str,
    pub file: Option<&'a Path>,
    pub components: &'a [LmkComponentConfig],
    pub kcv: Option<&'a str>,
}

fn kcv_ok(k: &str) -> bool {
    matches!(k.len(), 4 | 6) && k.bytes().all(|b| b.is_ascii_hexdigit())
}

impl LmkSource<'_> {
    /// Every problem of these options, each naming its `table.field` under `table`.
    pub fn problems(&self, table: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !self.components.is_empty() {
            if !matches!(self.components.len(), 2 | 3) {
                p.push(format!(
                    "{table}.lmk_components: expected 2 or 3 components, found {}",
                    self.components.len()
                ));
            }
            if self.file.is_some() {
                p.push(format!("{table}: lmk_file and lmk_components are exclusive; the LMK comes from one"));
            }
            if self.kcv.is_none() {
                p.push(format!("{table}.lmk_kcv: required with lmk_components (the combined LMK's KCV)"));
            }
            for (i, c) in self.components.iter().enumerate() {
                if !kcv_ok(&c.kcv) {
                    p.push(format!(
                        "{table}.lmk_components[{i}].kcv: expected 4 or 6 hex digits, found {:?}",
                        c.kcv
                    ));
                }
                if c.file.as_os_str().is_empty() {
                    p.push(format!("{table}.lmk_components[{i}].file: must not be empty"));
                }
            }
        }
        if let Some(k) = self.kcv
            && !kcv_ok(k)
        {
            p.push(format!("{table}.lmk_kcv: expected 4 or 6 hex digits, found {k:?}"));
        }
        p
    }

    /// Whether the LMK can be looked for here: the files are named, or the variable is set.
    pub fn available(&self) -> bool {
        !self.components.is_empty() || self.file.is_some() || std::env::var_os(self.env).is_some()
    }

    /// The LMK these options name (relative paths against `base`), checked against its KCV.
    pub fn load(&self, base: &Path) -> Result<Lmk> {
        if !self.components.is_empty() {
            let problems = self.problems("keys");
            if !problems.is_empty() {
                return Err(custody_err(problems.join("; ")));
            }
            let files: Vec<(PathBuf, String)> =
                self.components.iter().map(|c| (base.join(&c.file), c.kcv.clone())).collect();
            return lmk_from_component_files(&files, self.kcv.unwrap_or_default());
        }
        match self.file {
            Some(p) => lmk_from_file(&base.join(p), self.kcv),
            None => lmk_from_env(self.env, self.kcv),
        }
    }
}

/// Reads a file of secret material (`what` names it in errors, e.g. "LMK component 2 file"): it
/// must be a regular file owned by this process's effective user with no permission for group or
/// others. The contents are returned in a zeroizing buffer, read without reallocation.
pub fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| custody_err(format!("cannot read the {what} {}: {e}", path.display())))?;
    // The checks are on the opened file, so the file read is the file checked.
    let meta =
        f.metadata().map_err(|e| custody_err(format!("cannot stat the {what} {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(custody_err(format!("the {what} {} is not a regular file", path.display())));
    }
    check_private(path, what, &meta)?;
    let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    if len > 4096 {
        return Err(custody_err(format!(
            "the {what} {} holds {len} bytes; a key file holds at most 64 hex digits",
            path.display()
        )));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(len + 1));
    f.by_ref()
        .take(4096)
        .read_to_end(&mut buf)
        .map_err(|e| custody_err(format!("cannot read the {what} {}: {e}", path.display())))?;
    Ok(buf)
}

#[cfg(unix)]
fn check_private(path: &Path, what: &str, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(custody_err(format!(
            "the {what} {} has mode {mode:04o}: it must be readable by its owner only \
             (0600 or stricter: chmod 600 {})",
            path.display(),
            path.display()
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(custody_err(format!(
            "the {what} {} is owned by uid {}, not by this process's user (uid {me})",
            path.display(),
            meta.uid()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _what: &str, _meta: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

/// The text of a secret file, trimmed (no copy: a view into the zeroizing buffer).
fn secret_text<'a>(bytes: &'a [u8], path: &Path, what: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes)
        .map(str::trim)
        .map_err(|_| custody_err(format!("the {what} {} is not text (expected hex digits)", path.display())))
}

/// The LMK from a file holding it in hex, checked against `kcv` when given.
pub fn lmk_from_file(path: &Path, kcv: Option<&str>) -> Result<Lmk> {
    let bytes = read_secret_file(path, "LMK file")?;
    let lmk = Lmk::from_hex(secret_text(&bytes, path, "LMK file")?)
        .map_err(|e| custody_err(format!("the LMK file {}: {}", path.display(), e.detail)))?;
    check_lmk_kcv(&lmk, kcv)?;
    Ok(lmk)
}

/// The LMK from an environment variable holding it in hex, checked against `kcv` when given.
pub fn lmk_from_env(var: &str, kcv: Option<&str>) -> Result<Lmk> {
    let hex = Zeroizing::new(
        std::env::var(var).map_err(|_| custody_err(format!("the LMK variable {var} is not set")))?,
    );
    let lmk = Lmk::from_hex(hex.trim()).map_err(|e| custody_err(e.detail))?;
    check_lmk_kcv(&lmk, kcv)?;
    Ok(lmk)
}

/// The LMK as the XOR of the components in `files` (2 or 3: each a file and its expected KCV),
/// checked against their KCVs and the combined `lmk_kcv`. Errors name the component and its file.
pub fn lmk_from_component_files(files: &[(PathBuf, String)], lmk_kcv: &str) -> Result<Lmk> {
    if !matches!(files.len(), 2 | 3) {
        return Err(custody_err(format!("the LMK needs 2 or 3 components, found {}", files.len())));
    }
    let mut components = Vec::with_capacity(files.len());
    for (i, (path, _)) in files.iter().enumerate() {
        let what = format!("LMK component {} file", i + 1);
        let bytes = read_secret_file(path, &what)?;
        let c = LmkComponent::from_hex(i + 1, secret_text(&bytes, path, &what)?)
            .map_err(|e| custody_err(format!("{}: {}", path.display(), e.detail)))?;
        components.push(c);
    }
    let expected: Vec<&str> = files.iter().map(|(_, k)| k.as_str()).collect();
    Lmk::from_components(&components, &expected, lmk_kcv).map_err(|e| {
        // Name the file of the component at fault, when one is.
        let file = (1..=files.len())
            .find(|i| e.detail.contains(&format!("LMK component {i} ")))
            .map(|i| format!(" (file {})", files[i - 1].0.display()))
            .unwrap_or_default();
        custody_err(format!("{}{file}", e.detail))
    })
}

fn check_lmk_kcv(lmk: &Lmk, kcv: Option<&str>) -> Result<()> {
    match kcv {
        Some(k) => lmk.check_kcv(k).map_err(|e| custody_err(e.detail)),
        None => Ok(()),
    }
}
