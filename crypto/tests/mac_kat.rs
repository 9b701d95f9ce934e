//! Known-answer tests for the MACs, from published vectors (source beside each).
#![allow(clippy::unwrap_used)]

use crypto::keys::{AesKey, TdesKey, from_hex, to_hex};
use crypto::mac::{self, MacAlgorithm, Padding};
use crypto::{ErrorKind, Result};

fn tdes(h: &str) -> TdesKey {
    TdesKey::from_hex("k", h).unwrap()
}

#[test]
fn iso9797_alg1_des_now_is_the_time() {
    // ISO/IEC 9797-1 Annex B (MAC algorithm 1, DES key 0123456789ABCDEF, padding method 1), the
    // classic ANSI X9.9 example: "Now is the time for all " -> 70A30640CC76DD8B. Single DES is
    // expressed as the TDES key K||K.
    let k = tdes("0123456789ABCDEF0123456789ABCDEF");
    let m = mac::cbc_mac_tdes(&k, b"Now is the time for all ", Padding::Method1);
    assert_eq!(to_hex(&m), "70A30640CC76DD8B");
}

#[test]
fn iso9797_alg3_retail_mac_annex_b4() {
    // ISO/IEC 9797-1:2011 Annex B.4: MAC algorithm 3, padding method 1, K = 0123456789ABCDEF,
    // K' = FEDCBA9876543210 (reproduced in RustCrypto retail-mac's README and openemv crypto tests).
    let k = tdes("0123456789ABCDEFFEDCBA9876543210");
    assert_eq!(
        to_hex(&mac::retail_mac(&k, b"Now is the time for all ", Padding::Method1).unwrap()),
        "A1C72E74EA3FA9B6"
    );
    assert_eq!(
        to_hex(&mac::retail_mac(&k, b"Now is the time for it", Padding::Method1).unwrap()),
        "2E2B1428CC78254F"
    );
}

#[test]
fn psec_documented_examples() {
    // psec 1.3.0 docstrings (psec.mac.generate_cbc_mac / generate_retail_mac examples).
    let k = tdes("0123456789ABCDEFFEDCBA9876543210");
    let d = from_hex("d", "1234567890ABCDEF").unwrap();
    assert_eq!(to_hex(&mac::cbc_mac_tdes(&k, &d, Padding::Method2)), "925B1737EF681AD3");
    // psec's retail example uses key1 = K||K', key2 = K'||K as TDES keys; K1=K2 halves differ, so
    // it is not the X9.19 retail MAC and is covered by the oracle test instead.
}

#[test]
fn tdes_cmac_sp800_38b_d5_two_key() {
    // NIST SP 800-38B Appendix D (two-key TDEA): K1 = 4cf15134a2850dd5, K2 = 8a3d10ba80570d38.
    let k = tdes("4cf15134a2850dd58a3d10ba80570d38");
    let m = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51";
    for (len, tag) in
        [(0, "BD2EBF9A3BA00361"), (8, "4FF2AB813C53CE83"), (20, "62DD1B471902BD4E"), (32, "31B1E431DABC4EB8")]
    {
        let data = &from_hex("m", m).unwrap()[..len];
        assert_eq!(to_hex(&mac::cmac_tdes(&k, data)), tag, "Mlen {len}");
    }
}

#[test]
fn tdes_cmac_sp800_38b_d4_three_key() {
    // NIST SP 800-38B Appendix D (three-key TDEA): K1 8aa83bf8cbda1062, K2 0bc1bf19fbb6cd58,
    // K3 bc313d4a371ca8b5.
    let k = tdes("8aa83bf8cbda10620bc1bf19fbb6cd58bc313d4a371ca8b5");
    let m = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51";
    for (len, tag) in
        [(0, "B7A688E122FFAF95"), (8, "8E8F293136283797"), (20, "743DDBE0CE2DC2ED"), (32, "33E6B1092400EAE5")]
    {
        let data = &from_hex("m", m).unwrap()[..len];
        assert_eq!(to_hex(&mac::cmac_tdes(&k, data)), tag, "Mlen {len}");
    }
}

#[test]
fn aes_cmac_sp800_38b_d1_to_d3() {
    // NIST SP 800-38B Appendix D.1 (AES-128), D.3 (AES-256), examples 1, 2 and 4.
    let m = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
             30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
    let cases = [
        ("2b7e151628aed2a6abf7158809cf4f3c", 0, "BB1D6929E95937287FA37D129B756746"),
        ("2b7e151628aed2a6abf7158809cf4f3c", 16, "070A16B46B4D4144F79BDD9DD04A287C"),
        ("2b7e151628aed2a6abf7158809cf4f3c", 64, "51F0BEBF7E3B9D92FC49741779363CFE"),
        (
            "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
            0,
            "028962F61B7BF89EFC6B551F4667D983",
        ),
        (
            "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
            64,
            "E1992190549F6ED5696A2C056C315410",
        ),
    ];
    for (key, len, tag) in cases {
        let k = AesKey::from_hex("k", key).unwrap();
        let data = &from_hex("m", m).unwrap()[..len];
        assert_eq!(to_hex(&mac::cmac_aes(&k, data)), tag, "key {} Mlen {len}", key.len() * 4);
    }
}

#[test]
fn hmac_sha256_rfc4231() -> Result<()> {
    // RFC 4231 §4.2–4.8, test cases 1–4, 6, 7 (full output) and 5 (truncated to 128 bits).
    let aa131 = "aa".repeat(131);
    let cases: [(String, Vec<u8>, &str); 6] = [
        (
            "0b".repeat(20),
            b"Hi There".to_vec(),
            "B0344C61D8DB38535CA8AFCEAF0BF12B881DC200C9833DA726E9376C2E32CFF7",
        ),
        (
            "4a656665".into(),
            b"what do ya want for nothing?".to_vec(),
            "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843",
        ),
        ("aa".repeat(20), vec![0xdd; 50], "773EA91E36800E46854DB8EBD09181A72959098B3EF8C122D9635514CED565FE"),
        (
            "0102030405060708090a0b0c0d0e0f10111213141516171819".into(),
            vec![0xcd; 50],
            "82558A389A443C0EA4CC819899F2083A85F0FAA3E578F8077A2E3FF46729665B",
        ),
        (
            aa131.clone(),
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "60E431591EE0B67F0D8A26AACBF5B77F8E0BC6213728C5140546040F0EE37F54",
        ),
        (
            aa131,
            b"This is a test using a larger than block-size key and a larger than block-size data. \
The key needs to be hashed before being used by the HMAC algorithm."
                .to_vec(),
            "9B09FFA71B942FCB27635FBCD5B0E944BFDC63644F0713938A7F51535C3A35E2",
        ),
    ];
    for (key, data, tag) in cases {
        let k = from_hex("k", &key)?;
        assert_eq!(to_hex(&mac::hmac_sha256(&k, &data)), tag);
        MacAlgorithm::HmacSha256.verify(&k, &data, &from_hex("t", tag)?)?;
        // Keyed once, the same tag every time it is used.
        let keyed = mac::HmacSha256Key::new(&k);
        for _ in 0..2 {
            assert_eq!(to_hex(&keyed.mac(&data)), tag);
        }
        assert_eq!(format!("{keyed:?}"), "HmacSha256Key(..)", "no key material in Debug");
    }
    // Test case 5: truncation to 128 bits.
    let k = from_hex("k", &"0c".repeat(20))?;
    let t = MacAlgorithm::HmacSha256.compute_len(&k, b"Test With Truncation", Some(16))?;
    assert_eq!(to_hex(&t), "A3B6167473100EE06E0C796C2955552B");
    Ok(())
}

#[test]
fn verification_is_strict() {
    let k = from_hex("k", "0123456789ABCDEFFEDCBA9876543210").unwrap();
    let data = b"Now is the time for all ";
    let good = from_hex("t", "A1C72E74EA3FA9B6").unwrap();
    MacAlgorithm::Retail.verify(&k, data, &good).unwrap();
    MacAlgorithm::Retail.verify(&k, data, &good[..4]).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 1;
        let e = MacAlgorithm::Retail.verify(&k, data, &bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Verification);
    }
    assert_eq!(MacAlgorithm::Retail.verify(&k, data, &good[..3]).unwrap_err().kind, ErrorKind::Input);
}

#[test]
fn wrong_keys_are_clear_errors() {
    for alg in MacAlgorithm::ALL {
        let e = alg.compute(&[0x11; 15], b"x");
        if alg == MacAlgorithm::HmacSha256 {
            assert!(e.is_ok());
            assert_eq!(alg.compute(&[], b"x").unwrap_err().kind, ErrorKind::KeyLength);
        } else {
            let e = e.unwrap_err();
            assert_eq!(e.kind, ErrorKind::KeyLength, "{alg:?}");
            assert_eq!(e.what, "MAC key");
        }
    }
    let e = MacAlgorithm::Retail.compute(&[0x11; 24], b"x").unwrap_err();
    assert!(e.to_string().contains("16-byte key"), "{e}");
    assert!(MacAlgorithm::from_name("cbc").is_err());
    for alg in MacAlgorithm::ALL {
        assert_eq!(MacAlgorithm::from_name(alg.name()).unwrap(), alg);
    }
}
