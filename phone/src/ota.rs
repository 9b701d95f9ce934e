//! The secure channel into a secure element's security domain: an SCP03-like scheme (GlobalPlatform
//! Card Specification v2.3 Amendment D) for scripts pushed over the air, and the script format.
//!
//! * Static keys per security domain and key version (KVN): S-ENC, S-MAC, DEK (AES-128).
//! * Session keys per script (Amendment D §6.2.1): the NIST SP 800-108 KDF in counter mode with
//!   AES-CMAC as PRF (§4.1.5): `label = 00 × 11 ‖ constant` (04 S-ENC, 06 S-MAC), separator `00`,
//!   `L` = 0080 (bits), `i` = 01, then the context. A push script has no card challenge, so the
//!   context is the script's sequence counter (8 bytes, big-endian) ‖ the domain's AID — the
//!   counter plays the role of the challenges, as the counter of ETSI TS 102 225 §5.1.1 does for
//!   OTA (SCP80) and a replayed counter is refused.
//! * Each command (§6.2.6, §6.2.4): its data padded `80 00..` to a block and AES-CBC encrypted
//!   under S-ENC with ICV = AES(S-ENC, encryption counter as 16 bytes); then the C-MAC, AES-CMAC
//!   under S-MAC over the MAC chaining value ‖ `CLA|04 INS P1 P2 Lc'` ‖ the encrypted data, first 8
//!   bytes appended; the full 16 bytes chain to the next command.
//! * New keys (PUT KEY) are also wrapped under the parent domain's DEK (AES-ECB, GP §11.8.2.3).
//!
//! The builder ([`seal_script`]) runs in the TSM / the issuer's perso bureau; the checking side
//! ([`SessionKeys::unwrap`]) runs inside the secure element.

use crypto::keys::AesKey;
use crypto::mac::cmac_aes;
use serde::{Deserialize, Serialize};

use emv::Sw;

/// Status words the secure element answers a script with.
pub mod sw {
    use emv::Sw;
    /// A C-MAC did not verify (ISO 7816-4: security status not satisfied).
    pub const BAD_MAC: Sw = Sw(0x6982);
    /// The sequence counter is not above the last one accepted: a replay (ETSI TS 102 225 PoR 02).
    pub const COUNTER_LOW: Sw = Sw(0x6985);
    /// The key version is not one the security domain holds (referenced data not found).
    pub const KEY_VERSION: Sw = Sw(0x6A88);
    /// No such security domain on this secure element.
    pub const NO_DOMAIN: Sw = Sw(0x6A82);
    /// The secure element could not write its storage.
    pub const MEMORY: Sw = Sw(0x6581);
}

/// A security domain's static key set.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeySet {
    /// Key version number.
    pub kvn: u8,
    /// S-ENC, S-MAC and DEK, 16 bytes each, hex.
    pub enc: String,
    pub mac: String,
    pub dek: String,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySet(kvn {:02X})", self.kvn)
    }
}

impl Drop for KeySet {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.enc.zeroize();
        self.mac.zeroize();
        self.dek.zeroize();
    }
}

impl KeySet {
    /// A fresh key set from 48 random bytes.
    pub fn from_random(kvn: u8, r: &[u8; 48]) -> KeySet {
        KeySet {
            kvn,
            enc: hex::encode_upper(&r[..16]),
            mac: hex::encode_upper(&r[16..32]),
            dek: hex::encode_upper(&r[32..]),
        }
    }

    fn key(which: &'static str, h: &str) -> Result<AesKey, Sw> {
        AesKey::from_hex(which, h).map_err(|_| sw::KEY_VERSION)
    }

    /// Wraps a key for PUT KEY under this set's DEK (AES-ECB).
    pub fn wrap_under_dek(&self, key: &[u8]) -> Result<Vec<u8>, Sw> {
        Self::key("dek", &self.dek)?.ecb_encrypt(key).map_err(|_| Sw::WRONG_DATA)
    }

    pub fn unwrap_under_dek(&self, wrapped: &[u8]) -> Result<Vec<u8>, Sw> {
        Self::key("dek", &self.dek)?.ecb_decrypt(wrapped).map_err(|_| Sw::WRONG_DATA)
    }
}

/// A script for one security domain, as the TSM sends it over the air.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OtaScript {
    pub se_id: String,
    /// The security domain's AID, hex.
    pub sd_aid: String,
    pub kvn: u8,
    /// Sequence counter: above the last the domain accepted.
    pub counter: u64,
    /// Wrapped command APDUs, hex.
    pub commands: Vec<String>,
}

/// What the secure element answers a script with (its proof of receipt).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OtaReceipt {
    pub sd_aid: String,
    pub counter: u64,
    /// The status word of the script: 9000, or the first failure.
    pub sw: String,
    /// How many commands ran.
    pub executed: usize,
}

const DERIVE_S_ENC: u8 = 0x04;
const DERIVE_S_MAC: u8 = 0x06;

/// SP 800-108 counter-mode KDF with AES-CMAC, the SCP03 layout, for one 128-bit key.
fn kdf(key: &AesKey, constant: u8, context: &[u8]) -> Result<AesKey, Sw> {
    let mut d = vec![0u8; 11];
    d.push(constant);
    d.push(0x00); // separation indicator
    d.extend_from_slice(&[0x00, 0x80]); // L = 128 bits
    d.push(0x01); // i
    d.extend_from_slice(context);
    AesKey::from_slice(&cmac_aes(key, &d)).map_err(|_| Sw::WRONG_DATA)
}

/// The per-script session keys and the channel's running state.
pub struct SessionKeys {
    s_enc: AesKey,
    s_mac: AesKey,
    chain: [u8; 16],
    enc_counter: u32,
}

impl SessionKeys {
    /// Derives the session keys of the script `counter` for the domain `sd_aid`.
    pub fn derive(keys: &KeySet, sd_aid: &[u8], counter: u64) -> Result<SessionKeys, Sw> {
        let mut context = counter.to_be_bytes().to_vec();
        context.extend_from_slice(sd_aid);
        Ok(SessionKeys {
            s_enc: kdf(&KeySet::key("s-enc", &keys.enc)?, DERIVE_S_ENC, &context)?,
            s_mac: kdf(&KeySet::key("s-mac", &keys.mac)?, DERIVE_S_MAC, &context)?,
            chain: [0; 16],
            enc_counter: 0,
        })
    }

    fn icv(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[12..].copy_from_slice(&self.enc_counter.to_be_bytes());
        self.s_enc.encrypt(b)
    }

    /// Encrypts and MACs one command (`CLA INS P1 P2` and its data). Data up to 239 bytes.
    pub fn wrap(&mut self, cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Result<Vec<u8>, Sw> {
        self.enc_counter = self.enc_counter.wrapping_add(1);
        let mut padded = data.to_vec();
        padded.push(0x80);
        while !padded.len().is_multiple_of(16) {
            padded.push(0);
        }
        let enc = self.s_enc.cbc_encrypt(self.icv(), &padded).map_err(|_| Sw::WRONG_DATA)?;
        let lc = u8::try_from(enc.len() + 8).map_err(|_| Sw::WRONG_LENGTH)?;
        let mut header = vec![cla | 0x04, ins, p1, p2, lc];
        let mut m = self.chain.to_vec();
        m.extend_from_slice(&header);
        m.extend_from_slice(&enc);
        self.chain = cmac_aes(&self.s_mac, &m);
        header.extend_from_slice(&enc);
        header.extend_from_slice(&self.chain[..8]);
        Ok(header)
    }

    /// Checks the C-MAC of one wrapped command and decrypts its data: `(CLA, INS, P1, P2, data)`.
    pub fn unwrap(&mut self, apdu: &[u8]) -> Result<(u8, u8, u8, u8, Vec<u8>), Sw> {
        let [cla, ins, p1, p2, lc, rest @ ..] = apdu else { return Err(Sw::WRONG_LENGTH) };
        if usize::from(*lc) != rest.len() || rest.len() < 8 + 16 || !(rest.len() - 8).is_multiple_of(16) {
            return Err(Sw::WRONG_LENGTH);
        }
        if cla & 0x04 == 0 {
            return Err(sw::BAD_MAC);
        }
        let (enc, mac) = rest.split_at(rest.len() - 8);
        let mut m = self.chain.to_vec();
        m.extend_from_slice(&apdu[..5]);
        m.extend_from_slice(enc);
        let full = cmac_aes(&self.s_mac, &m);
        use subtle::ConstantTimeEq;
        if !bool::from(full[..8].ct_eq(mac)) {
            return Err(sw::BAD_MAC);
        }
        self.chain = full;
        self.enc_counter = self.enc_counter.wrapping_add(1);
        let plain = self.s_enc.cbc_decrypt(self.icv(), enc).map_err(|_| Sw::WRONG_DATA)?;
        let end = plain.iter().rposition(|b| *b == 0x80).ok_or(Sw::WRONG_DATA)?;
        if plain[end + 1..].iter().any(|b| *b != 0) {
            return Err(Sw::WRONG_DATA);
        }
        Ok((cla & !0x04, *ins, *p1, *p2, plain[..end].to_vec()))
    }
}

/// A plain command of a script before it is wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainCommand {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
}

/// GlobalPlatform-style commands a script carries (GP Card Specification §11).
pub mod commands {
    use super::PlainCommand;

    /// INSTALL [for install and make selectable] of a card application instance (§11.5).
    pub fn install_applet(instance_aid: &[u8]) -> PlainCommand {
        PlainCommand { cla: 0x80, ins: 0xE6, p1: 0x0C, p2: 0x00, data: instance_aid.to_vec() }
    }

    /// INSTALL of a supplementary security domain under the script's domain (P2 = 01 marks a
    /// security domain here).
    pub fn install_domain(aid: &[u8]) -> PlainCommand {
        PlainCommand { cla: 0x80, ins: 0xE6, p1: 0x0C, p2: 0x01, data: aid.to_vec() }
    }

    /// PUT KEY (§11.8) for the domain `aid`: `len aid ‖ KVN ‖ three keys wrapped under the DEK`.
    pub fn put_key(aid: &[u8], kvn: u8, wrapped_keys: &[u8]) -> PlainCommand {
        let mut data = vec![aid.len() as u8];
        data.extend_from_slice(aid);
        data.push(kvn);
        data.extend_from_slice(wrapped_keys);
        PlainCommand { cla: 0x80, ins: 0xD8, p1: 0x00, p2: 0x81, data }
    }

    /// STORE DATA (§11.11) blocks of the personalisation data for `instance_aid`: the first block
    /// names the instance (`len aid ‖ aid`), P1 bit 8 marks the last block, P2 numbers the blocks.
    pub fn store_data(instance_aid: &[u8], perso: &[u8]) -> Vec<PlainCommand> {
        let mut payload = vec![instance_aid.len() as u8];
        payload.extend_from_slice(instance_aid);
        payload.extend_from_slice(perso);
        let chunks: Vec<&[u8]> = payload.chunks(200).collect();
        let n = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| PlainCommand {
                cla: 0x80,
                ins: 0xE2,
                p1: if i + 1 == n { 0x80 } else { 0x00 },
                p2: i as u8,
                data: c.to_vec(),
            })
            .collect()
    }
}

/// Builds the wrapped script for `commands` under the domain's key set.
pub fn seal_script(
    se_id: &str,
    sd_aid: &[u8],
    keys: &KeySet,
    counter: u64,
    commands: &[PlainCommand],
) -> Result<OtaScript, Sw> {
    let mut s = SessionKeys::derive(keys, sd_aid, counter)?;
    let wrapped = commands
        .iter()
        .map(|c| s.wrap(c.cla, c.ins, c.p1, c.p2, &c.data).map(hex::encode_upper))
        .collect::<Result<Vec<_>, Sw>>()?;
    Ok(OtaScript {
        se_id: se_id.to_string(),
        sd_aid: hex::encode_upper(sd_aid),
        kvn: keys.kvn,
        counter,
        commands: wrapped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeySet {
        KeySet::from_random(0x30, &[7u8; 48])
    }

    #[test]
    fn wrapped_commands_unwrap_in_order_and_tampering_is_caught() {
        let aid = hex::decode("A000000151000000").expect("aid");
        let mut tx = SessionKeys::derive(&keys(), &aid, 5).expect("keys");
        let a = tx.wrap(0x80, 0xE6, 0x0C, 0, b"first").expect("wrap");
        let b = tx.wrap(0x80, 0xE2, 0x80, 0, &[0x11; 200]).expect("wrap");
        let mut rx = SessionKeys::derive(&keys(), &aid, 5).expect("keys");
        assert_eq!(rx.unwrap(&a).expect("a").4, b"first");
        assert_eq!(rx.unwrap(&b).expect("b").4, vec![0x11; 200]);
        // Out of order: the chain breaks.
        let mut rx = SessionKeys::derive(&keys(), &aid, 5).expect("keys");
        assert_eq!(rx.unwrap(&b).err(), Some(sw::BAD_MAC));
        // Another counter: other session keys.
        let mut rx = SessionKeys::derive(&keys(), &aid, 6).expect("keys");
        assert_eq!(rx.unwrap(&a).err(), Some(sw::BAD_MAC));
        // A flipped bit of the ciphertext.
        let mut bad = a.clone();
        bad[6] ^= 1;
        let mut rx = SessionKeys::derive(&keys(), &aid, 5).expect("keys");
        assert_eq!(rx.unwrap(&bad).err(), Some(sw::BAD_MAC));
        // Truncated input never panics.
        for n in 0..a.len() {
            let mut rx = SessionKeys::derive(&keys(), &aid, 5).expect("keys");
            assert!(rx.unwrap(&a[..n]).is_err());
        }
    }

    #[test]
    fn the_kdf_follows_the_sp800_108_layout() {
        // The derivation data the SCP03 KDF MACs: label (11 × 00 ‖ constant), 00, L, i, context.
        let k = AesKey::from_slice(&[0x40; 16]).expect("key");
        let direct = {
            let mut d = vec![0u8; 11];
            d.extend_from_slice(&[0x04, 0x00, 0x00, 0x80, 0x01, 0xAA]);
            cmac_aes(&k, &d)
        };
        assert_eq!(kdf(&k, 0x04, &[0xAA]).expect("kdf").expose(), &direct);
        assert!(!format!("{:?}", keys()).contains("0707"), "no key in Debug");
    }
}
