//! Files that hold keys or key blocks (the ports file's test keys, keystores, LMK components):
//! created readable and writable by their owner only (unix mode 0600), never world-readable for
//! even a moment, and either written atomically or created new so that nothing is overwritten.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` atomically: a new temporary file beside it (mode 0600), synced,
/// then renamed over `path`. A reader sees the old file or the whole new one.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // tempfile creates its files with mode 0600 on unix.
    let mut tmp = tempfile::Builder::new().prefix(".paynet-").suffix(".tmp").tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Creates `path` (mode 0600) with `contents`; fails if anything exists there already.
pub fn create_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ports.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let c = dir.path().join("component");
        create_new(&c, b"abc").unwrap();
        let e = create_new(&c, b"xyz").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&c).unwrap(), b"abc");
        #[cfg(unix)]
        {
            assert_eq!(mode(&p), 0o600);
            assert_eq!(mode(&c), 0o600);
        }
        // Nothing left beside the file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
