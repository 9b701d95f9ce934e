//! Independent oracle for data sealed for a device (ECIES: P-256 ECDH, HKDF-SHA256, AES-256-GCM):
//! pyca/cryptography 44.0.0 implements the same construction from its own primitives; given the
//! same ephemeral key and nonce, both produce the same bytes, and each opens the other's.

use crypto::device;
use serde_json::json;

const SCRIPT: &str = r#"
import sys, json
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def pub(sk):
    return sk.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)

out = []
for c in json.load(sys.stdin):
    dsk = ec.derive_private_key(int(c["device"], 16), ec.SECP256R1())
    esk = ec.derive_private_key(int(c["ephemeral"], 16), ec.SECP256R1())
    epk, dpk = pub(esk), pub(dsk)
    shared = esk.exchange(ec.ECDH(), dsk.public_key())
    info = bytes.fromhex(c["info"])
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + dpk, info=info).derive(shared)
    nonce = bytes.fromhex(c["nonce"])
    sealed = epk + nonce + AESGCM(key).encrypt(nonce, bytes.fromhex(c["plaintext"]), info)
    # Open the Rust side's bytes with the device key.
    theirs = bytes.fromhex(c["ours"])
    shared2 = dsk.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), theirs[:65]))
    key2 = HKDF(algorithm=hashes.SHA256(), length=32, salt=theirs[:65] + dpk, info=info).derive(shared2)
    opened = AESGCM(key2).decrypt(theirs[65:77], theirs[77:], info)
    out.append({"sealed": sealed.hex().upper(), "opened": opened.hex().upper(), "device_pub": dpk.hex().upper()})
print(json.dumps(out))
"#;

#[test]
fn pyca_cryptography_agrees_on_sealing_for_a_device() {
    let oracle = testkit::oracle_or_skip!(&["cryptography==44.0.0"]);
    let mut cases = Vec::new();
    let mut seed = 0x1234_5678_9ABC_DEF0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..200u64 {
        let mut device_secret = [0u8; 32];
        let mut eph = [0u8; 32];
        for b in device_secret.iter_mut().chain(eph.iter_mut()) {
            *b = next() as u8;
        }
        // Keep the scalars well inside (0, n).
        device_secret[0] &= 0x7F;
        eph[0] &= 0x7F;
        device_secret[31] |= 1;
        eph[31] |= 1;
        let nonce: [u8; 12] = std::array::from_fn(|k| (next() as u8) ^ k as u8);
        let plaintext: Vec<u8> = (0..(i % 97)).map(|_| next() as u8).collect();
        let info = format!("paynet token data v1 #{i}").into_bytes();
        let dpub = device::public_key(&device_secret).expect("public key");
        let ours = device::seal(&dpub, &eph, nonce, &info, &plaintext).expect("seal");
        cases.push((device_secret, eph, nonce, plaintext, info, dpub, ours));
    }
    let input: Vec<_> = cases
        .iter()
        .map(|(d, e, n, p, info, _, ours)| {
            json!({"device": hex::encode(d), "ephemeral": hex::encode(e), "nonce": hex::encode(n),
                   "plaintext": hex::encode(p), "info": hex::encode(info), "ours": hex::encode(ours)})
        })
        .collect();
    let answers = oracle.run(SCRIPT, &json!(input));
    let answers = answers.as_array().expect("array");
    assert_eq!(answers.len(), cases.len());
    for ((d, _, _, p, info, dpub, ours), a) in cases.iter().zip(answers) {
        assert_eq!(a["device_pub"].as_str(), Some(hex::encode_upper(dpub).as_str()), "public key");
        assert_eq!(a["sealed"].as_str(), Some(hex::encode_upper(ours).as_str()), "same sealed bytes");
        assert_eq!(a["opened"].as_str(), Some(hex::encode_upper(p).as_str()), "Python opens ours");
        let theirs = hex::decode(a["sealed"].as_str().expect("hex")).expect("hex");
        assert_eq!(device::open(d, info, &theirs).expect("we open theirs").as_slice(), p.as_slice());
    }
    eprintln!("cryptography oracle: {} device seals agree", cases.len());
}
