//! The node's keys from its keystore: the LMK from the environment variable, a file, or 2–3
//! custodians' component files the config names, every other key a key block under it.
//!
//! The node's own keys, each used for one purpose only (AES-256 bytes, usage D0; the HMAC keys
//! are used as HMAC-SHA256 keys):
//!
//! | key | what it keys |
//! |---|---|
//! | `switch.saf` | seals store-and-forward messages at rest (AES-256-GCM) |
//! | `switch.fingerprint` | the journal's PAN fingerprints, ATC windows and stand-in totals per card |
//! | `tsp.vault-index` | the token vault's PAN index (PAN → tokens look-ups) |
//! | `tsp.token-ref` | the references requestors know tokens by |
//!
//! A fingerprint under one key says nothing about one under another: the journal's readers cannot
//! join it to the vault's index, nor a requestor's token reference to either. `paynet keys
//! generate --node-keys` (or `ensure_node_keys`) adds whichever of them a keystore lacks.
//!
//! Files holding an LMK or a component are read only when private to the node's user (unix mode
//! 0600 or stricter, owned by the effective user; [`crypto::custody`], which the issuer simulator
//! shares); their contents stay in zeroizing buffers, and no error names more than the file, its
//! mode or a check value.

use std::path::{Path, PathBuf};

use crypto::custody;
use crypto::keyblock::{Header, KeyUsage};
use crypto::keystore::{KeyName, Keystore, Lmk};
use crypto::seal::Sealer;
use zeroize::Zeroizing;

use crate::config::KeysConfig;
use crate::error::{Error, ErrorKind, Result};

pub use crate::config::SAF_KEY;
pub const FINGERPRINT_KEY: &str = "switch.fingerprint";
pub const VAULT_INDEX_KEY: &str = "tsp.vault-index";
pub const TOKEN_REF_KEY: &str = "tsp.token-ref";

/// Every key [`ensure_node_keys`] makes, with what it is for.
pub const NODE_KEYS: [(&str, &str); 4] = [
    (SAF_KEY, "seals the store-and-forward queue"),
    (FINGERPRINT_KEY, "keys the journal's PAN fingerprints"),
    (VAULT_INDEX_KEY, "keys the token vault's PAN index"),
    (TOKEN_REF_KEY, "keys token references"),
];

/// The header of every node key: AES, usage D0, mode B (both ways), not exportable.
const NODE_KEY_HEADER: &str = "D0000D0AB00N0000";

fn key_err(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Crypto, "keys", detail)
}

/// Reads a file of secret material (see [`crypto::custody::read_secret_file`]).
pub fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    custody::read_secret_file(path, what).map_err(custody_err)
}

fn custody_err(e: crypto::Error) -> Error {
    key_err(e.to_string())
}

/// The LMK from a file holding it in hex, checked against `kcv` when given.
pub fn lmk_from_file(path: &Path, kcv: Option<&str>) -> Result<Lmk> {
    custody::lmk_from_file(path, kcv).map_err(custody_err)
}

/// The LMK from an environment variable holding it in hex, checked against `kcv` when given.
pub fn lmk_from_env(var: &str, kcv: Option<&str>) -> Result<Lmk> {
    custody::lmk_from_env(var, kcv).map_err(custody_err)
}

/// The LMK as the XOR of the components in `files` (2 or 3: each a file and its expected KCV).
pub fn lmk_from_component_files(files: &[(PathBuf, String)], lmk_kcv: &str) -> Result<Lmk> {
    custody::lmk_from_component_files(files, lmk_kcv).map_err(custody_err)
}

/// The LMK the `[keys]` table names (relative paths against `base`).
pub fn load_lmk(cfg: &KeysConfig, base: &Path) -> Result<Lmk> {
    cfg.lmk_source().load(base).map_err(custody_err)
}

/// Reads the LMK (env var, file or components) and the keystore file, unwrapping and checking
/// every block.
pub fn load_keystore(cfg: &KeysConfig, base: &Path) -> Result<Keystore> {
    let lmk = load_lmk(cfg, base)?;
    let path = base.join(&cfg.keystore);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| key_err(format!("cannot read the keystore {}: {e}", path.display())))?;
    Keystore::from_toml(lmk, &text).map_err(|e| key_err(format!("keystore {}: {e}", path.display())))
}

fn name(s: &str) -> Result<KeyName> {
    KeyName::new(s).map_err(|e| key_err(e.to_string()))
}

/// One of the node's AES keys; a missing one is named with how to add it.
fn node_key(ks: &Keystore, key: &str) -> Result<crypto::AesKey> {
    let n = name(key)?;
    if !ks.names().any(|k| k == &n) {
        let purpose = NODE_KEYS.iter().find(|(k, _)| *k == key).map(|(_, p)| *p).unwrap_or("a node key");
        return Err(key_err(format!(
            "the keystore has no key {key} ({purpose}); add the node's missing keys with \
             `paynet keys generate --keystore FILE --node-keys`"
        )));
    }
    ks.get_aes(&n, KeyUsage::DATA_ENCRYPTION).map_err(|e| key_err(e.to_string()))
}

/// The node's own keys; the SAF queue's sealer from `saf` (its current key and version, and the
/// retired versions still readable).
pub fn node_keys(ks: &Keystore, saf: &crate::config::SafConfig) -> Result<NodeKeys> {
    let sealer = versioned_sealer(ks, (&saf.key, saf.key_version), &saf.old_keys, "saf")?;
    let fp = node_key(ks, FINGERPRINT_KEY)?;
    Ok(NodeKeys {
        saf_seal: std::sync::Arc::new(sealer),
        fingerprint: Zeroizing::new(fp.expose().to_vec()),
        token_service: None,
    })
}

/// Keys the node itself uses (from the keystore: `switch.saf` and `switch.fingerprint`; with the
/// token service its vault keys too).
pub struct NodeKeys {
    /// Seals store-and-forward messages at rest (AES-256-GCM).
    pub saf_seal: std::sync::Arc<Sealer>,
    /// Keys the journal's PAN fingerprints (HMAC-SHA256).
    pub fingerprint: Zeroizing<Vec<u8>>,
    /// The token service's keys, when `[token_service]` is enabled.
    pub token_service: Option<TokenServiceKeys>,
}

/// The node's keys for `cfg`: [`node_keys`], and the token service's when it is enabled.
pub fn load_node_keys(ks: &Keystore, cfg: &crate::config::SwitchConfig) -> Result<NodeKeys> {
    let mut keys = node_keys(ks, &cfg.saf)?;
    if cfg.token_service.enabled {
        keys.token_service = Some(token_service_keys(ks, &cfg.token_service)?);
    }
    Ok(keys)
}

/// A sealer whose current key is `current` (keystore name, version) and which still opens what
/// the `old` versions sealed. `what` names the config section in errors.
pub fn versioned_sealer(
    ks: &Keystore,
    current: (&str, u32),
    old: &[crate::config::VaultKeyVersion],
    what: &str,
) -> Result<Sealer> {
    let (name, version) = current;
    let mut sealer = Sealer::new(version, &node_key(ks, name)?)?;
    for (i, k) in old.iter().enumerate() {
        let key = node_key(ks, &k.key).map_err(|e| key_err(format!("{what}.old_key[{i}]: {e}")))?;
        sealer.add_key(k.version, &key)?;
    }
    sealer.set_current(version)?;
    Ok(sealer)
}

/// The token service's keys: the vault's data keys and its two HMAC keys, each its own keystore
/// key.
pub struct TokenServiceKeys {
    /// Seals the vault's PANs: the current data key (`token_service.vault_key`) and the older
    /// versions still readable (`vault_old_key`).
    pub vault_seal: Sealer,
    /// Keys the vault's PAN index (`tsp.vault-index`).
    pub vault_index: Zeroizing<Vec<u8>>,
    /// Keys token references (`tsp.token-ref`).
    pub token_ref: Zeroizing<Vec<u8>>,
}

/// The token service's keys, by the names `ts` gives for the vault's data keys.
pub fn token_service_keys(ks: &Keystore, ts: &crate::config::TokenServiceConfig) -> Result<TokenServiceKeys> {
    let index = node_key(ks, VAULT_INDEX_KEY)?;
    let token_ref = node_key(ks, TOKEN_REF_KEY)?;
    let vault_seal =
        versioned_sealer(ks, (&ts.vault_key, ts.vault_key_version), &ts.vault_old_keys, "token_service")?;
    Ok(TokenServiceKeys {
        vault_seal,
        vault_index: Zeroizing::new(index.expose().to_vec()),
        token_ref: Zeroizing::new(token_ref.expose().to_vec()),
    })
}

/// Adds the node's keys ([`NODE_KEYS`]) to `ks` when missing, from `random` (call with fresh OS
/// randomness). Returns the names added, with their KCVs.
pub fn ensure_node_keys(
    ks: &mut Keystore,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<Vec<(&'static str, [u8; 3])>> {
    let mut added = Vec::new();
    for (key, _) in NODE_KEYS {
        let n = name(key)?;
        if ks.names().any(|k| k == &n) {
            continue;
        }
        let header = Header::parse_template(NODE_KEY_HEADER).map_err(|e| key_err(e.to_string()))?;
        let mut rnd = Zeroizing::new(vec![0u8; ks.random_len(32)]);
        random(&mut rnd);
        let kcv = ks.generate(n, &header, 32, &rnd).map_err(|e| key_err(e.to_string()))?;
        added.push((key, kcv));
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LMK: &str = "0123456789ABCDEFFEDCBA98765432100123456789ABCDEFFEDCBA9876543210";

    fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        p
    }

    #[test]
    fn the_saf_key_rotates_with_versions() {
        let mut ks = Keystore::new(Lmk::from_hex(LMK).unwrap());
        ensure_node_keys(&mut ks, &mut |b| b.fill(3)).unwrap();
        let header = Header::parse_template("D0000D0AB00N0000").unwrap();
        let rnd = vec![5u8; ks.random_len(32)];
        ks.generate(name("switch.saf.v2").unwrap(), &header, 32, &rnd).unwrap();
        let before = node_keys(&ks, &crate::config::SafConfig::default()).unwrap().saf_seal;
        let old = before.seal([1; 12], b"saf|k", b"owed before the rotation").unwrap();
        let rotated = crate::config::SafConfig {
            key: "switch.saf.v2".into(),
            key_version: 2,
            old_keys: vec![crate::config::VaultKeyVersion { version: 1, key: SAF_KEY.into() }],
            ..Default::default()
        };
        let after = node_keys(&ks, &rotated).unwrap().saf_seal;
        assert_eq!(after.open(b"saf|k", &old).unwrap(), b"owed before the rotation");
        let new = after.seal([2; 12], b"saf|k", b"owed after").unwrap();
        assert_eq!(&new[..4], &2u32.to_be_bytes(), "sealed under version 2");
        assert!(before.open(b"saf|k", &new).is_err(), "the old sealer cannot read version 2");
        // Version 1 retired: what it sealed no longer opens (the SAF queue quarantines it).
        let retired = crate::config::SafConfig { old_keys: vec![], ..rotated.clone() };
        assert!(node_keys(&ks, &retired).unwrap().saf_seal.open(b"saf|k", &old).is_err());
        let missing = crate::config::SafConfig { key: "switch.saf.v3".into(), ..rotated };
        let e = node_keys(&ks, &missing).err().expect("a missing key is an error").to_string();
        assert!(e.contains("switch.saf.v3"), "{e}");
    }

    #[test]
    fn every_node_key_is_its_own() {
        let mut ks = Keystore::new(Lmk::from_hex(LMK).unwrap());
        let mut n = 0u8;
        let added = ensure_node_keys(&mut ks, &mut |b| {
            for x in b.iter_mut() {
                n = n.wrapping_add(1);
                *x = n;
            }
        })
        .unwrap();
        assert_eq!(added.iter().map(|(k, _)| *k).collect::<Vec<_>>(), NODE_KEYS.map(|(k, _)| k));
        assert!(ensure_node_keys(&mut ks, &mut |b| b.fill(1)).unwrap().is_empty(), "idempotent");
        let node = node_keys(&ks, &crate::config::SafConfig::default()).unwrap();
        let saf = node_key(&ks, SAF_KEY).unwrap();
        let header = Header::parse_template(NODE_KEY_HEADER).unwrap();
        let rnd = vec![9u8; ks.random_len(32)];
        ks.generate(name("switch.vault").unwrap(), &header, 32, &rnd).unwrap();
        let ts = crate::config::TokenServiceConfig::default();
        let tsp = token_service_keys(&ks, &ts).unwrap();
        let keys = [saf.expose(), &node.fingerprint[..], &tsp.vault_index[..], &tsp.token_ref[..]];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // A keystore from before the token service's keys: a clear error naming the key.
        ks.remove(&name(TOKEN_REF_KEY).unwrap()).unwrap();
        let e = token_service_keys(&ks, &ts).err().unwrap().to_string();
        assert!(
            e.contains("no key tsp.token-ref (keys token references)") && e.contains("--node-keys"),
            "{e}"
        );
    }

    #[test]
    fn lmk_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = private_file(dir.path(), "lmk.hex", &format!("{LMK}\n"));
        let lmk = lmk_from_file(&p, None).unwrap();
        assert!(lmk_from_file(&p, Some(&crypto::keys::to_hex(&lmk.kcv()))).is_ok());
        let e = lmk_from_file(&p, Some("000000")).err().unwrap().to_string();
        assert!(e.contains("combined LMK has KCV") && !e.contains("0123456789AB"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for mode in [0o644, 0o640, 0o604, 0o660] {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
                let e = lmk_from_file(&p, None).err().unwrap().to_string();
                assert!(e.contains(&format!("{} has mode {mode:04o}", p.display())), "{e}");
                assert!(e.contains("chmod 600"), "{e}");
                assert!(!e.contains("0123456789AB"), "{e}");
            }
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
            assert!(lmk_from_file(&p, None).is_ok(), "stricter than 0600 is fine");
        }
        let e = lmk_from_file(&dir.path().join("absent"), None).err().unwrap().to_string();
        assert!(e.contains("cannot read the LMK file"), "{e}");
        let bad = private_file(dir.path(), "bad.hex", &LMK[..60]);
        let e = lmk_from_file(&bad, None).err().unwrap().to_string();
        assert!(e.contains("found 60") && !e.contains("0123456789AB"), "{e}");
    }

    #[test]
    fn lmk_from_components_names_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        // TDES components whose XOR is 0123456789ABCDEF FEDCBA9876543210 0123456789ABCDEF (KCV 08D7B4).
        let files = [
            (private_file(dir.path(), "c1", "111111111111111111111111111111111111111111111111"), "82E136"),
            (private_file(dir.path(), "c2", "222222222222222222222222222222222222222222222222"), "00962B"),
            (private_file(dir.path(), "c3", "32107654BA98FEDCCDEF89AB4567012332107654BA98FEDC"), "9D61E6"),
        ];
        let mut cfg = KeysConfig {
            lmk_components: files
                .iter()
                .map(|(f, k)| crate::config::LmkComponentConfig { file: f.clone(), kcv: k.to_string() })
                .collect(),
            lmk_kcv: Some("08D7B4".into()),
            ..KeysConfig::default()
        };
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        assert_eq!(crypto::keys::to_hex(&load_lmk(&cfg, dir.path()).unwrap().kcv()), "08D7B4");
        cfg.lmk_components[2].kcv = "9D61E7".into();
        let e = load_lmk(&cfg, dir.path()).err().unwrap().to_string();
        assert!(e.contains("LMK component 3 has KCV 9D61E6, not the configured 9D61E7"), "{e}");
        assert!(e.contains(&format!("(file {})", files[2].0.display())), "{e}");
        assert!(!e.contains("32107654"), "{e}");
        cfg.lmk_components[2].kcv = "9D61E6".into();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&files[1].0, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = load_lmk(&cfg, dir.path()).err().unwrap().to_string();
            assert!(
                e.contains(&format!("LMK component 2 file {} has mode 0644", files[1].0.display())),
                "{e}"
            );
        }
        cfg.lmk_components.truncate(1);
        cfg.lmk_kcv = None;
        let p = cfg.problems();
        assert!(p.iter().any(|p| p.contains("expected 2 or 3 components, found 1")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("keys.lmk_kcv: required")), "{p:?}");
        assert!(load_lmk(&cfg, dir.path()).is_err());
    }
}
