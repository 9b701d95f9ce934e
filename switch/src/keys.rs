//! The node's keys from its keystore: the LMK from the environment variable (or file) the config
//! names, every other key a key block under it. The node's own keys are `switch.saf` (seals
//! store-and-forward messages, AES-256, usage D0) and `switch.fingerprint` (keys the journal's PAN
//! fingerprints, AES-256 bytes used as an HMAC-SHA256 key, usage D0); `paynet keys generate` makes
//! them, `ensure_node_keys` adds them to a keystore that lacks them.

use std::path::Path;

use crypto::keyblock::{Header, KeyUsage};
use crypto::keystore::{KeyName, Keystore, Lmk};
use zeroize::Zeroizing;

use crate::config::KeysConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::node::NodeKeys;

pub const SAF_KEY: &str = "switch.saf";
pub const FINGERPRINT_KEY: &str = "switch.fingerprint";

fn key_err(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Crypto, "keys", detail)
}

/// Reads the LMK (env var or file) and the keystore file, unwrapping and checking every block.
pub fn load_keystore(cfg: &KeysConfig, base: &Path) -> Result<Keystore> {
    let hex = match &cfg.lmk_file {
        Some(p) => std::fs::read_to_string(base.join(p))
            .map_err(|e| key_err(format!("cannot read the LMK file {}: {e}", p.display())))?,
        None => std::env::var(&cfg.lmk_env)
            .map_err(|_| key_err(format!("the LMK variable {} is not set", cfg.lmk_env)))?,
    };
    let lmk = Lmk::from_hex(hex.trim()).map_err(|e| key_err(format!("LMK: {e}")))?;
    let path = base.join(&cfg.keystore);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| key_err(format!("cannot read the keystore {}: {e}", path.display())))?;
    Keystore::from_toml(lmk, &text).map_err(|e| key_err(format!("keystore {}: {e}", path.display())))
}

fn name(s: &str) -> Result<KeyName> {
    KeyName::new(s).map_err(|e| key_err(e.to_string()))
}

/// The node's own keys.
pub fn node_keys(ks: &Keystore) -> Result<NodeKeys> {
    let saf = ks.get_aes(&name(SAF_KEY)?, KeyUsage::DATA_ENCRYPTION).map_err(|e| key_err(e.to_string()))?;
    let fp =
        ks.get_aes(&name(FINGERPRINT_KEY)?, KeyUsage::DATA_ENCRYPTION).map_err(|e| key_err(e.to_string()))?;
    Ok(NodeKeys { saf_seal: saf, fingerprint: Zeroizing::new(fp.expose().to_vec()) })
}

/// Adds the node's keys to `ks` when missing, from `random` (call with fresh OS randomness).
pub fn ensure_node_keys(ks: &mut Keystore, random: &mut dyn FnMut(&mut [u8])) -> Result<bool> {
    let mut added = false;
    for key in [SAF_KEY, FINGERPRINT_KEY] {
        let n = name(key)?;
        if ks.names().any(|k| k == &n) {
            continue;
        }
        let header = Header::parse_template("D0000D0AB00N0000").map_err(|e| key_err(e.to_string()))?;
        let mut rnd = Zeroizing::new(vec![0u8; ks.random_len(32)]);
        random(&mut rnd);
        ks.generate(n, &header, 32, &rnd).map_err(|e| key_err(e.to_string()))?;
        added = true;
    }
    Ok(added)
}
