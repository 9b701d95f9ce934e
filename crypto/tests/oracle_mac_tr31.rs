//! Independent oracle: hundreds of random MACs and TR-31 key blocks compared with psec 1.3.0
//! (and, for CMAC and HMAC, the `cryptography` package psec depends on and Python's `hmac`).
//!
//! - MACs: ISO 9797-1 algorithm 1 (TDES and AES) and algorithm 3 with padding methods 1–3
//!   (psec.mac), TDES/AES CMAC (cryptography), HMAC-SHA256 (hmac).
//! - TR-31 versions B and D: our blocks are unwrapped by psec (key and header fields compared);
//!   psec's blocks, made with the same padding bytes (psec's `_urandom` replaced by ours), must be
//!   byte-for-byte our blocks, and we unwrap them.
//!
//! Skipped, with the reason printed, when Python or the package registry is unavailable.
#![allow(clippy::unwrap_used)]

use crypto::keyblock::{self, Exportability, Header, KeyAlgorithm, KeyBlockVersion, KeyUsage, ModeOfUse};
use crypto::keys::{AesKey, SymmetricKey, TdesKey, to_hex};
use crypto::mac::{self, Padding};
use serde_json::{Value, json};

/// The tests' seeded source (testkit) with the draws these cases use.
struct Rng(testkit::TestRng);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.u64()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

const SCRIPT: &str = r#"
import sys, json, hmac, hashlib, warnings
warnings.simplefilter("ignore")
import psec
import psec.tr31 as tr31
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.ciphers import algorithms

cases = json.load(sys.stdin)
out = []
for c in cases:
    t = c["type"]
    if t == "cbc":
        alg = psec.mac.Algorithm.AES if c["aes"] else psec.mac.Algorithm.DES
        out.append(psec.mac.generate_cbc_mac(bytes.fromhex(c["key"]), bytes.fromhex(c["data"]), c["pad"], None, alg).hex().upper())
    elif t == "retail":
        k = bytes.fromhex(c["key"])
        out.append(psec.mac.generate_retail_mac(k[:8] * 2, k[8:] * 2, bytes.fromhex(c["data"]), c["pad"]).hex().upper())
    elif t == "cmac":
        k = bytes.fromhex(c["key"])
        a = algorithms.AES(k) if c["aes"] else algorithms.TripleDES(k)
        m = CMAC(a); m.update(bytes.fromhex(c["data"]))
        out.append(m.finalize().hex().upper())
    elif t == "hmac":
        out.append(hmac.new(bytes.fromhex(c["key"]), bytes.fromhex(c["data"]), hashlib.sha256).hexdigest().upper())
    elif t == "unwrap":
        try:
            h, key = tr31.unwrap(bytes.fromhex(c["kbpk"]), c["block"])
            out.append({"key": key.hex().upper(), "usage": h.key_usage, "algorithm": h.algorithm,
                        "mode": h.mode_of_use, "kvn": h.version_num, "exp": h.exportability,
                        "blocks": dict(h.blocks)})
        except Exception as e:
            out.append({"error": str(e)})
    elif t == "wrap":
        pad = bytes.fromhex(c["pad"])
        tr31._urandom = lambda n: pad[:n]
        key = bytes.fromhex(c["key"])
        out.append(tr31.wrap(bytes.fromhex(c["kbpk"]), c["header"], key, len(key)))
    else:
        raise ValueError(t)
json.dump(out, sys.stdout)
"#;

#[test]
fn macs_and_key_blocks_agree_with_psec() {
    let oracle = testkit::oracle_or_skip!(&["psec==1.3.0"]);
    let mut rng = Rng(testkit::TestRng::seeded(0x5EED_0000_7231_9797));
    let mut cases = Vec::new();
    let mut ours = Vec::new();

    // MACs: 6 kinds x 60 cases.
    for i in 0..360 {
        let data = {
            let n = rng.below(70);
            rng.bytes(n)
        };
        let pad = rng.pick(&[Padding::Method1, Padding::Method2, Padding::Method3]);
        let pad_n = match pad {
            Padding::Method1 => 1,
            Padding::Method2 => 2,
            Padding::Method3 => 3,
        };
        match i % 6 {
            0 => {
                let k = {
                    let n = rng.pick(&[16, 24]);
                    rng.bytes(n)
                };
                let key = TdesKey::from_slice(&k).unwrap();
                ours.push(json!(to_hex(&mac::cbc_mac_tdes(&key, &data, pad))));
                cases.push(json!({"type": "cbc", "aes": false, "key": to_hex(&k), "data": to_hex(&data), "pad": pad_n}));
            }
            1 => {
                let k = {
                    let n = rng.pick(&[16, 24, 32]);
                    rng.bytes(n)
                };
                let key = AesKey::from_slice(&k).unwrap();
                ours.push(json!(to_hex(&mac::cbc_mac_aes(&key, &data, pad))));
                cases.push(json!({"type": "cbc", "aes": true, "key": to_hex(&k), "data": to_hex(&data), "pad": pad_n}));
            }
            2 => {
                let k = rng.bytes(16);
                let key = TdesKey::from_slice(&k).unwrap();
                ours.push(json!(to_hex(&mac::retail_mac(&key, &data, pad).unwrap())));
                cases.push(json!({"type": "retail", "key": to_hex(&k), "data": to_hex(&data), "pad": pad_n}));
            }
            3 => {
                let k = {
                    let n = rng.pick(&[16, 24]);
                    rng.bytes(n)
                };
                let key = TdesKey::from_slice(&k).unwrap();
                ours.push(json!(to_hex(&mac::cmac_tdes(&key, &data))));
                cases.push(json!({"type": "cmac", "aes": false, "key": to_hex(&k), "data": to_hex(&data)}));
            }
            4 => {
                let k = {
                    let n = rng.pick(&[16, 24, 32]);
                    rng.bytes(n)
                };
                let key = AesKey::from_slice(&k).unwrap();
                ours.push(json!(to_hex(&mac::cmac_aes(&key, &data))));
                cases.push(json!({"type": "cmac", "aes": true, "key": to_hex(&k), "data": to_hex(&data)}));
            }
            _ => {
                let k = {
                    let n = 1 + rng.below(100);
                    rng.bytes(n)
                };
                ours.push(json!(to_hex(&mac::hmac_sha256(&k, &data))));
                cases.push(json!({"type": "hmac", "key": to_hex(&k), "data": to_hex(&data)}));
            }
        }
    }

    // Key blocks: 200 of each version; each is wrapped by us (psec unwraps it) and by psec with the
    // same padding (must equal ours).
    let usages = [
        (KeyUsage::PIN_ENCRYPTION, ModeOfUse::ENCRYPT),
        (KeyUsage::MAC_ISO9797_3, ModeOfUse::GENERATE_VERIFY),
        (KeyUsage::BDK, ModeOfUse::DERIVE),
        (KeyUsage::KEK, ModeOfUse::ENCRYPT_DECRYPT),
        (KeyUsage::DATA_ENCRYPTION, ModeOfUse::DECRYPT),
        (KeyUsage::CVK, ModeOfUse::GENERATE_VERIFY),
        (KeyUsage::EMV_IMK_AC, ModeOfUse::DERIVE),
        (KeyUsage::PVK_VISA_PVV, ModeOfUse::VERIFY),
    ];
    let mut blocks = Vec::new();
    for i in 0..400 {
        let version = if i % 2 == 0 { KeyBlockVersion::B } else { KeyBlockVersion::D };
        let (kbpk, kbpk_bytes) = if version == KeyBlockVersion::B {
            let b = {
                let n = rng.pick(&[16, 24]);
                rng.bytes(n)
            };
            (SymmetricKey::Tdes(TdesKey::from_slice(&b).unwrap()), b)
        } else {
            let b = {
                let n = rng.pick(&[16, 24, 32]);
                rng.bytes(n)
            };
            (SymmetricKey::Aes(AesKey::from_slice(&b).unwrap()), b)
        };
        let (alg, key_len) = if version == KeyBlockVersion::D && rng.below(2) == 0 {
            (KeyAlgorithm::AES, rng.pick(&[16, 24, 32]))
        } else {
            (KeyAlgorithm::TDES, rng.pick(&[16, 24]))
        };
        let (usage, mode) = rng.pick(&usages);
        let exp =
            rng.pick(&[Exportability::EXPORTABLE, Exportability::NON_EXPORTABLE, Exportability::SENSITIVE]);
        let mut header = Header::new(version, usage, alg, mode, exp);
        header.key_version = [b'0' + rng.below(10) as u8, b'A' + rng.below(26) as u8];
        if rng.below(3) == 0 {
            let ksn: String = {
                let n = rng.below(30);
                (0..n).map(|_| rng.pick(b"07FA") as char).collect()
            };
            header = header.with_optional_block("KS", &ksn).unwrap();
        }
        if rng.below(5) == 0 {
            header = header.with_optional_block("TT", &"Z".repeat(rng.below(300))).unwrap();
        }
        let key = rng.bytes(key_len);
        let pad = rng.bytes(keyblock::padding_len(version, key_len, 0));
        let block = keyblock::wrap(&kbpk, &header, &key, &pad).unwrap();
        let header_text =
            block[..block.len() - 2 * (key_len + 2 + pad.len()) - 2 * version.mac_len()].to_string();
        cases.push(json!({"type": "unwrap", "kbpk": to_hex(&kbpk_bytes), "block": block}));
        let mut blocks_json = serde_json::Map::new();
        for b in &header.optional_blocks {
            blocks_json.insert(b.id_str(), json!(b.data));
        }
        ours.push(json!({
            "key": to_hex(&key), "usage": usage.to_string(), "algorithm": alg.to_string(),
            "mode": mode.to_string(), "kvn": String::from_utf8_lossy(&header.key_version),
            "exp": exp.to_string(), "blocks": blocks_json,
        }));
        cases.push(json!({"type": "wrap", "kbpk": to_hex(&kbpk_bytes), "header": header_text, "key": to_hex(&key), "pad": to_hex(&pad)}));
        ours.push(json!(block));
        blocks.push((kbpk, key));
    }

    let theirs = oracle.run(SCRIPT, &Value::Array(cases.clone()));
    let theirs = theirs.as_array().unwrap();
    assert_eq!(theirs.len(), ours.len());
    let mut compared = 0;
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(a, b, "case {i}: {}", cases[i]);
        compared += 1;
    }
    // And we unwrap every block psec made.
    let psec_blocks = theirs.iter().skip(360).skip(1).step_by(2);
    for (b, (kbpk, key)) in psec_blocks.zip(&blocks) {
        let k = keyblock::unwrap(kbpk, b.as_str().unwrap()).unwrap();
        assert_eq!(k.expose(), key.as_slice());
    }
    eprintln!("compared {compared} cases with psec 1.3.0");
}
