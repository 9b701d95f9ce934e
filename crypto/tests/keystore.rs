//! Keystore behaviour: loading and checking configured key blocks, usage enforcement, generation,
//! import/export, and what Debug shows.
#![allow(clippy::unwrap_used)]

use crypto::keyblock::{self, Exportability, Header, KeyAlgorithm, KeyBlockVersion, KeyUsage, ModeOfUse};
use crypto::keys::Algorithm;
use crypto::keys::{SymmetricKey, TdesKey, to_hex};
use crypto::keystore::{KeyName, Keystore, LMK_ENV_VAR, Lmk, LmkComponent};
use crypto::{ErrorKind, Result};

const LMK_AES: &str = "0123456789ABCDEFFEDCBA98765432100123456789ABCDEFFEDCBA9876543210";
const LMK_TDES: &str = "0123456789ABCDEFFEDCBA987654321089ABCDEF01234567";

fn name(s: &str) -> KeyName {
    KeyName::new(s).unwrap()
}

fn header(usage: KeyUsage, alg: KeyAlgorithm, mode: ModeOfUse, exp: Exportability) -> Header {
    Header::new(KeyBlockVersion::D, usage, alg, mode, exp)
}

/// A store with a PIN key, a MAC key, an AES data key and a KEK.
fn sample(lmk: &str) -> Keystore {
    let mut ks = Keystore::new(Lmk::from_hex(lmk).unwrap());
    let rnd: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    let h =
        header(KeyUsage::PIN_ENCRYPTION, KeyAlgorithm::TDES, ModeOfUse::ENCRYPT, Exportability::EXPORTABLE);
    ks.generate(name("zpk.acq1"), &h, 16, &rnd).unwrap();
    let h = header(
        KeyUsage::MAC_ISO9797_3,
        KeyAlgorithm::TDES,
        ModeOfUse::GENERATE_VERIFY,
        Exportability::NON_EXPORTABLE,
    );
    ks.generate(name("mak.acq1"), &h, 16, &rnd[3..]).unwrap();
    let h = header(
        KeyUsage::DATA_ENCRYPTION,
        KeyAlgorithm::AES,
        ModeOfUse::ENCRYPT_DECRYPT,
        Exportability::SENSITIVE,
    );
    ks.generate(name("dek"), &h, 32, &rnd[5..]).unwrap();
    let h =
        header(KeyUsage::KEK, KeyAlgorithm::TDES, ModeOfUse::ENCRYPT_DECRYPT, Exportability::NON_EXPORTABLE);
    ks.generate(name("zmk.acq1"), &h, 24, &rnd[7..]).unwrap();
    ks
}

#[test]
fn lmk_parsing() {
    assert_eq!(LMK_ENV_VAR, "PAYNET_LMK");
    assert_eq!(Lmk::from_hex(LMK_AES).unwrap().version(), KeyBlockVersion::D);
    assert_eq!(Lmk::from_hex(LMK_TDES).unwrap().version(), KeyBlockVersion::B);
    let e = Lmk::from_hex(&LMK_AES[..32]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Keystore);
    assert!(e.to_string().contains("PAYNET_LMK, found 32"), "{e}");
    assert!(Lmk::from_hex("zz").is_err());
    let d = format!("{:?}", Lmk::from_hex(LMK_AES).unwrap());
    assert!(!d.contains("0123456789"), "{d}");
}

#[test]
fn toml_roundtrip_checks_every_block() -> Result<()> {
    for lmk in [LMK_AES, LMK_TDES] {
        let ks = sample(lmk);
        let text = ks.to_toml();
        assert!(text.contains("[[key]]"), "{text}");
        let back = Keystore::from_toml(Lmk::from_hex(lmk)?, &text)?;
        assert_eq!(back.len(), 4);
        for n in ks.names() {
            assert_eq!(back.kcv(n)?, ks.kcv(n)?);
            assert_eq!(back.header(n)?, ks.header(n)?);
        }
        // Another LMK cannot load it: every block's MAC fails, and the error names the key.
        let other = if lmk == LMK_AES { LMK_AES.replace('0', "1") } else { LMK_TDES.replace('0', "1") };
        let e = Keystore::from_toml(Lmk::from_hex(&other)?, &text).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KeyBlockMac);
        assert!(e.to_string().contains("key dek"), "{e}");
    }
    Ok(())
}

#[test]
fn wrong_kcv_names_the_key() {
    let ks = sample(LMK_AES);
    let block = ks.block(&name("mak.acq1")).unwrap().to_string();
    let text = format!("[[key]]\nname = \"mak.acq1\"\nblock = \"{block}\"\nkcv = \"000000\"\n");
    let e = Keystore::from_toml(Lmk::from_hex(LMK_AES).unwrap(), &text).unwrap_err();
    assert_eq!(e.kind, ErrorKind::KeyCheckValue);
    assert!(e.to_string().contains("key mak.acq1: KCV"), "{e}");
    // A 4-digit KCV is accepted when it matches.
    let kcv = to_hex(&ks.kcv(&name("mak.acq1")).unwrap()[..2]);
    let text = format!("[[key]]\nname = \"mak.acq1\"\nblock = \"{block}\"\nkcv = \"{kcv}\"\n");
    Keystore::from_toml(Lmk::from_hex(LMK_AES).unwrap(), &text).unwrap();
}

#[test]
fn bad_config_is_a_clear_error() {
    let lmk = || Lmk::from_hex(LMK_AES).unwrap();
    let e = Keystore::from_toml(lmk(), "[[key]]\nname = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("TOML"), "{e}");
    let e = Keystore::from_toml(lmk(), "[[key]]\nname = \"a b\"\nblock=\"\"\nkcv=\"\"\n").unwrap_err();
    assert!(e.to_string().contains("[[key]] number 1"), "{e}");
    let e = Keystore::from_toml(lmk(), "[[key]]\nname = \"k\"\nblock = \"D0016\"\nkcv = \"123456\"\n")
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::KeyBlockFormat);
    assert!(e.to_string().contains("key k"), "{e}");
    let ks = sample(LMK_AES);
    let block = ks.block(&name("dek")).unwrap();
    let kcv = to_hex(&ks.kcv(&name("dek")).unwrap());
    let twice = format!("[[key]]\nname=\"d\"\nblock=\"{block}\"\nkcv=\"{kcv}\"\n").repeat(2);
    let e = Keystore::from_toml(lmk(), &twice).unwrap_err();
    assert!(e.to_string().contains("defined twice"), "{e}");
}

#[test]
fn usage_and_mode_are_enforced() {
    let ks = sample(LMK_AES);
    let pin = ks.get_tdes(&name("zpk.acq1"), KeyUsage::PIN_ENCRYPTION).unwrap();
    assert_eq!(pin.kcv(), ks.kcv(&name("zpk.acq1")).unwrap());
    pin.check_parity().unwrap();
    let e = ks.get_tdes(&name("mak.acq1"), KeyUsage::PIN_ENCRYPTION).unwrap_err();
    assert_eq!(e.kind, ErrorKind::KeyUsage);
    assert!(e.to_string().contains("key mak.acq1 has usage M3, not P0"), "{e}");
    ks.get_for(&name("zpk.acq1"), KeyUsage::PIN_ENCRYPTION, ModeOfUse::ENCRYPT).unwrap();
    let e = ks.get_for(&name("zpk.acq1"), KeyUsage::PIN_ENCRYPTION, ModeOfUse::DECRYPT).unwrap_err();
    assert!(e.to_string().contains("mode of use E, which does not permit D"), "{e}");
    ks.get_for(&name("mak.acq1"), KeyUsage::MAC_ISO9797_3, ModeOfUse::VERIFY).unwrap();
    assert_eq!(ks.get_tdes(&name("dek"), KeyUsage::DATA_ENCRYPTION).unwrap_err().kind, ErrorKind::KeyUsage);
    ks.get_aes(&name("dek"), KeyUsage::DATA_ENCRYPTION).unwrap();
    assert_eq!(ks.get(&name("nope"), KeyUsage::KEK).unwrap_err().kind, ErrorKind::Keystore);
}

#[test]
fn export_and_import_under_a_kek() -> Result<()> {
    let src = sample(LMK_AES);
    let rnd = [0x5Au8; 64];
    let exported = src.export(&name("zpk.acq1"), &name("zmk.acq1"), &rnd)?;
    assert!(exported.starts_with("B0080P0TE00E0000"), "{exported}");
    // The receiving side shares the KEK (exported by hand here) and imports the block.
    let kek = src.get(&name("zmk.acq1"), KeyUsage::KEK)?;
    let mut dst = Keystore::new(Lmk::from_hex(LMK_TDES)?);
    let kek_h = Header::new(
        KeyBlockVersion::B,
        KeyUsage::KEK,
        KeyAlgorithm::TDES,
        ModeOfUse::ENCRYPT_DECRYPT,
        Exportability::NON_EXPORTABLE,
    );
    dst.import(name("zmk"), &kek_h, &kek, &rnd)?;
    let kcv = dst.import_block(name("zpk"), &name("zmk"), &exported, &rnd)?;
    assert_eq!(kcv, src.kcv(&name("zpk.acq1"))?);
    assert!(dst.block(&name("zpk"))?.starts_with("B0080P0TE00E0000"));
    // Non-exportable keys stay home; a non-KEK cannot wrap.
    let e = src.export(&name("mak.acq1"), &name("zmk.acq1"), &rnd).unwrap_err();
    assert!(e.to_string().contains("not exportable"), "{e}");
    let e = src.export(&name("dek"), &name("mak.acq1"), &rnd).unwrap_err();
    assert!(e.to_string().contains("not a key-encryption key"), "{e}");
    // A tampered import is refused and stores nothing.
    let mut bad = exported.clone().into_bytes();
    bad[40] ^= 1;
    let e = dst.import_block(name("zpk2"), &name("zmk"), std::str::from_utf8(&bad).unwrap(), &rnd);
    assert!(e.is_err());
    assert!(dst.kcv(&name("zpk2")).is_err());
    Ok(())
}

#[test]
fn import_checks_algorithm_and_duplicates() {
    let mut ks = sample(LMK_AES);
    let k = SymmetricKey::Tdes(TdesKey::from_hex("k", "0123456789ABCDEFFEDCBA9876543210").unwrap());
    let h =
        header(KeyUsage::CVK, KeyAlgorithm::AES, ModeOfUse::GENERATE_VERIFY, Exportability::NON_EXPORTABLE);
    assert!(ks.import(name("cvk"), &h, &k, &[0; 32]).is_err());
    let h = Header { algorithm: KeyAlgorithm::TDES, ..h };
    assert_eq!(to_hex(&ks.import(name("cvk"), &h, &k, &[0; 32]).unwrap()), "08D7B4");
    assert!(ks.import(name("cvk"), &h, &k, &[0; 32]).is_err());
    assert!(ks.generate(name("short"), &h, 16, &[0; 10]).is_err());
    assert!(KeyName::new("").is_err() && KeyName::new(&"x".repeat(65)).is_err());
    ks.remove(&name("cvk")).unwrap();
    assert!(ks.remove(&name("cvk")).is_err());
}

#[test]
fn debug_shows_names_and_kcvs_only() {
    let ks = sample(LMK_AES);
    let d = format!("{ks:?}");
    let key = ks.get(&name("zpk.acq1"), KeyUsage::PIN_ENCRYPTION).unwrap();
    assert!(d.contains("zpk.acq1") && d.contains(&to_hex(&key.kcv())), "{d}");
    assert!(!d.contains(&to_hex(key.expose())), "{d}");
    assert!(!d.contains(ks.block(&name("zpk.acq1")).unwrap()), "{d}");
    // And the stored blocks really are key blocks under the LMK.
    let lmk = SymmetricKey::Aes(crypto::AesKey::from_hex("lmk", LMK_AES).unwrap());
    let k = keyblock::unwrap(&lmk, ks.block(&name("zpk.acq1")).unwrap()).unwrap();
    assert_eq!(k.expose(), key.expose());
}

// LMK components. The expected KCVs were computed independently (Python `cryptography`: 3DES-ECB
// of 8 zero bytes, AES-CMAC of 16 zero bytes), and the TDES combined LMK's 08D7B4 is the widely
// published KCV of the test key 0123456789ABCDEF FEDCBA9876543210.
const TDES_C1: &str = "111111111111111111111111111111111111111111111111";
const TDES_C2: &str = "222222222222222222222222222222222222222222222222";
const TDES_C3: &str = "32107654BA98FEDCCDEF89AB4567012332107654BA98FEDC";
const AES_C1: &str = "A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5";
const AES_C2: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
const AES_C3: &str = "A487E2C1280B6E4D53701536DFFC99BAB497F2D1381B7E5D43600526CFEC89AA";

fn components(hex: &[&str]) -> Vec<LmkComponent> {
    hex.iter().enumerate().map(|(i, h)| LmkComponent::from_hex(i + 1, h).unwrap()).collect()
}

#[test]
fn lmk_from_three_tdes_components_is_their_xor() {
    let c = components(&[TDES_C1, TDES_C2, TDES_C3]);
    let kcvs: Vec<String> = c.iter().map(|c| to_hex(&c.kcv())).collect();
    assert_eq!(kcvs, ["82E136", "00962B", "9D61E6"]);
    let lmk = Lmk::from_components(&c, &["82E136", "00962B", "9D61E6"], "08D7B4").unwrap();
    assert_eq!(to_hex(&lmk.kcv()), "08D7B4");
    assert_eq!(lmk.version(), KeyBlockVersion::B);
    // The same LMK as its XOR entered whole: a store written under one opens under the other.
    let whole = Lmk::from_hex("0123456789ABCDEFFEDCBA98765432100123456789ABCDEF").unwrap();
    let ks = sample(LMK_TDES);
    let text = ks.rewrap(whole, &mut |b| b.fill(0x5A)).unwrap().to_toml();
    assert_eq!(Keystore::from_toml(lmk, &text).unwrap().len(), 4);
    // 4-digit KCVs are accepted too, in either case.
    assert!(Lmk::from_components(&c, &["82e1", "0096", "9D61"], "08d7").is_ok());
}

#[test]
fn lmk_from_aes_components() {
    let c = components(&[AES_C1, AES_C2, AES_C3]);
    let kcvs: Vec<String> = c.iter().map(|c| to_hex(&c.kcv())).collect();
    assert_eq!(kcvs, ["3DF80C", "377822", "1781F8"]);
    let lmk = Lmk::from_components(&c, &["3DF80C", "377822", "1781F8"], "8B9802").unwrap();
    assert_eq!(to_hex(&lmk.kcv()), to_hex(&Lmk::from_hex(LMK_AES).unwrap().kcv()));
    assert_eq!(to_hex(&lmk.kcv()), "8B9802");
    // Two components: A5.. XOR the LMK.
    let two = components(&[AES_C1, "A486E0C22C0E684A5B791F3DD3F197B5A486E0C22C0E684A5B791F3DD3F197B5"]);
    let k2 = to_hex(&two[1].kcv());
    assert!(Lmk::from_components(&two, &["3DF80C", &k2], "8B9802").is_ok());
}

#[test]
fn a_wrong_component_is_named() {
    let c = components(&[TDES_C1, TDES_C2, TDES_C3]);
    let e = Lmk::from_components(&c, &["82E136", "00962C", "9D61E6"], "08D7B4").unwrap_err();
    assert_eq!(e.kind, ErrorKind::KeyCheckValue);
    assert!(e.to_string().contains("LMK component 2 has KCV 00962B, not the configured 00962C"), "{e}");
    // Components entered in the wrong slots: the first mismatch is named.
    let e = Lmk::from_components(&c, &["00962B", "82E136", "9D61E6"], "08D7B4").unwrap_err();
    assert!(e.to_string().contains("LMK component 1"), "{e}");
    // Right components, wrong combined KCV.
    let e = Lmk::from_components(&c, &["82E136", "00962B", "9D61E6"], "000000").unwrap_err();
    assert!(e.to_string().contains("combined LMK has KCV 08D7B4, not the configured 000000"), "{e}");
    // One component only, four, mixed lengths, a bad KCV: clear errors, and no key material.
    let one = Lmk::from_components(&c[..1], &["82E136"], "08D7B4").unwrap_err();
    assert!(one.to_string().contains("expected 2 or 3 components, found 1"), "{one}");
    let mixed = components(&[TDES_C1, AES_C2]);
    let e = Lmk::from_components(&mixed, &["82E136", "377822"], "08D7B4").unwrap_err();
    assert!(e.to_string().contains("LMK component 2 is Aes of 32 bytes"), "{e}");
    let e = Lmk::from_components(&c, &["82E136", "00962B", "9D61E"], "08D7B4").unwrap_err();
    assert!(e.to_string().contains("LMK component 3"), "{e}");
    let e = LmkComponent::from_hex(2, &TDES_C1[..46]).unwrap_err();
    assert!(e.to_string().contains("component 2: expected 64 hex digits"), "{e}");
    let e = LmkComponent::from_hex(3, &format!("{}zz", &TDES_C1[..46])).unwrap_err();
    assert!(e.to_string().contains("component 3: non-hex character at position 46"), "{e}");
    for e in [one, e] {
        assert!(!e.to_string().contains("1111111111"), "{e}");
    }
    let d = format!("{:?}", c[0]);
    assert!(!d.contains("1111") && d.contains("82E136"), "{d}");
}

#[test]
fn generated_components_combine() {
    let rnd: Vec<u8> = (0u8..32).collect();
    let c = LmkComponent::generate(Algorithm::Tdes, &rnd).unwrap();
    assert!(crypto::keys::has_odd_parity(&crypto::keys::from_hex("c", &c.expose_hex()).unwrap()));
    assert_eq!(LmkComponent::generate(Algorithm::Aes, &rnd).unwrap().algorithm(), Algorithm::Aes);
    assert!(LmkComponent::generate(Algorithm::Aes, &rnd[..31]).is_err());
}

#[test]
fn rewrap_keeps_every_key_and_leaves_the_old_lmk_behind() {
    let ks = sample(LMK_AES);
    let new_lmk = Lmk::from_components(&components(&[AES_C1, AES_C2]), &["3DF80C", "377822"], "").err();
    assert!(new_lmk.is_some(), "an empty LMK KCV is refused");
    let new_hex = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF";
    let re = ks.rewrap(Lmk::from_hex(new_hex).unwrap(), &mut |b| b.fill(7)).unwrap();
    assert_eq!(re.len(), ks.len());
    for n in ks.names() {
        assert_eq!(re.kcv(n).unwrap(), ks.kcv(n).unwrap(), "{n}");
        assert_eq!(re.header(n).unwrap().usage, ks.header(n).unwrap().usage, "{n}");
        assert_ne!(re.block(n).unwrap(), ks.block(n).unwrap(), "{n}");
    }
    assert_eq!(to_hex(&re.lmk_kcv()), to_hex(&Lmk::from_hex(new_hex).unwrap().kcv()));
    let text = re.to_toml();
    assert_eq!(Keystore::from_toml(Lmk::from_hex(new_hex).unwrap(), &text).unwrap().len(), 4);
    let e = Keystore::from_toml(Lmk::from_hex(LMK_AES).unwrap(), &text).unwrap_err();
    assert_eq!(e.kind, ErrorKind::KeyBlockMac, "{e}");
    // AES LMK → TDES LMK: version B blocks.
    let tdes = ks.rewrap(Lmk::from_hex(LMK_TDES).unwrap(), &mut |b| b.fill(1)).unwrap();
    assert!(tdes.names().all(|n| tdes.block(n).unwrap().starts_with('B')));
}

#[test]
fn lmk_and_components_zeroize_on_drop() {
    fn zeroizes<T: zeroize::ZeroizeOnDrop>() {}
    zeroizes::<Lmk>();
    zeroizes::<LmkComponent>();
    zeroizes::<crypto::keys::AesKey>();
    zeroizes::<TdesKey>();
}
