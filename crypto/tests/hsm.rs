//! The software HSM by key name: ARQC verification and ARPC, PIN translation from a DUKPT terminal
//! (TDES and AES) and from a zone key to an issuer's ZPK, PVV and CVV verification — each checked
//! against the module functions run on the clear keys, with key usage enforced.

use crypto::ErrorKind;
use crypto::dukpt;
use crypto::emv::{ArpcInput, Atc, CardInputs, Cvn, PanDigits, Psn, UnpredictableNumber};
use crypto::hsm::{Hsm, PinSource, SoftHsm};
use crypto::keyblock::Header;
use crypto::keys::{AesKey, SymmetricKey, TdesKey};
use crypto::keystore::{KeyName, Keystore, Lmk};
use crypto::pin::{self, Pin, PinBlockFormat};

const LMK: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
const PAN: &str = "4761739001010010";

fn tdes(h: &str) -> TdesKey {
    TdesKey::from_hex("key", h).expect("tdes")
}

fn hsm() -> SoftHsm {
    let mut ks = Keystore::new(Lmk::from_hex(LMK).expect("lmk"));
    let pad = [0x5Au8; 64];
    let mut add = |name: &str, header: &str, key: SymmetricKey| {
        ks.import(
            KeyName::new(name).expect("name"),
            &Header::parse_template(header).expect("header"),
            &key,
            &pad,
        )
        .expect("import");
    };
    add("iss.imk", "D0000E0TX00N0000", SymmetricKey::Tdes(tdes("0123456789ABCDEFFEDCBA9876543210")));
    add("acq.bdk", "D0000B0TX00N0000", SymmetricKey::Tdes(tdes("0123456789ABCDEFFEDCBA9876543210")));
    add("acq.bdk-aes", "D0000B0AX00N0000", SymmetricKey::Aes(AesKey::from_slice(&[0x11; 16]).expect("aes")));
    add("iss.zpk", "D0000P0TB00N0000", SymmetricKey::Tdes(tdes("1C1C1C1C1C1C1C1C2A2A2A2A2A2A2A2A")));
    add("acq.zpk", "D0000P0TB00N0000", SymmetricKey::Tdes(tdes("3E3E3E3E3E3E3E3E4F4F4F4F4F4F4F4F")));
    add("iss.pvk", "D0000V2TC00N0000", SymmetricKey::Tdes(tdes("5B5B5B5B5B5B5B5B6D6D6D6D6D6D6D6D")));
    add("iss.cvk", "D0000C0TC00N0000", SymmetricKey::Tdes(tdes("0123456789ABCDEFFEDCBA9876543210")));
    SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.iter_mut().enumerate().for_each(|(i, x)| *x = 0xA0 ^ i as u8)))
}

#[test]
fn arqc_verification_and_arpc_by_key_name() {
    let h = hsm();
    let imk = SymmetricKey::Tdes(tdes("0123456789ABCDEFFEDCBA9876543210"));
    let pan = PanDigits::new(PAN).expect("pan");
    let card = CardInputs {
        pan: &pan,
        psn: Psn::new(1).expect("psn"),
        atc: Atc(0x1E),
        un: Some(UnpredictableNumber([1, 2, 3, 4])),
    };
    let data = b"transaction data for the cryptogram".to_vec();
    for cvn in Cvn::ALL {
        let arqc = cvn.generate_ac(&imk, &card, &data).expect("ac");
        let input = if cvn.arpc_method() == Some(2) {
            ArpcInput::Csu { csu: [0, 0, 0, 0x80], proprietary: vec![] }
        } else {
            ArpcInput::Arc(*b"00")
        };
        let arpc = h
            .verify_arqc("iss.imk", cvn, &card, &data, &arqc, Some(&input))
            .expect("verifies")
            .expect("arpc");
        assert_eq!(arpc, cvn.generate_arpc(&imk, &card, &arqc, &input).expect("arpc"), "{cvn}");
        let mut bad = arqc;
        bad[7] ^= 1;
        let e = h.verify_arqc("iss.imk", cvn, &card, &data, &bad, Some(&input)).expect_err("bad ARQC");
        assert_eq!(e.kind, ErrorKind::Verification);
    }
    // A PIN key is not an IMK.
    let e = h.verify_arqc("iss.zpk", Cvn::Visa18, &card, &data, &[0; 8], None).expect_err("usage");
    assert_eq!(e.kind, ErrorKind::KeyUsage);
}

#[test]
fn pin_translation_from_dukpt_and_zone_keys_and_pvv() {
    let h = hsm();
    let pin = Pin::new("1234").expect("pin");
    let zpk = SymmetricKey::Tdes(tdes("1C1C1C1C1C1C1C1C2A2A2A2A2A2A2A2A"));
    // TDES DUKPT terminal: PIN working key for this KSN.
    let ksn = dukpt::TdesKsn::from_hex("FFFF9876543210E00008").expect("ksn");
    let bdk = tdes("0123456789ABCDEFFEDCBA9876543210");
    let pek =
        SymmetricKey::Tdes(dukpt::tdes::derive_working_key(&bdk, &ksn, dukpt::KeyUsage::Pin).expect("pek"));
    let block = pin::encrypt_pin_block(&pek, PinBlockFormat::Iso0, &pin, PAN, &[0xFF; 8]).expect("block");
    let src = PinSource::Dukpt { bdk: "acq.bdk", ksn: ksn.as_bytes(), format: PinBlockFormat::Iso0 };
    let out = h.translate_pin(&src, &block, PAN, "iss.zpk", PinBlockFormat::Iso0).expect("translate");
    assert_ne!(out, block);
    assert_eq!(pin::decrypt_pin_block(&zpk, PinBlockFormat::Iso0, &out, PAN).expect("decrypt"), pin);
    // AES DUKPT terminal, format 4 in, format 0 out.
    let aes_bdk = AesKey::from_slice(&[0x11; 16]).expect("aes");
    let aksn = dukpt::AesKsn::from_hex("123456789012345600000001").expect("ksn");
    let apek = dukpt::aes::derive_working_key(&aes_bdk, &aksn, dukpt::KeyUsage::Pin, None).expect("pek");
    let ablock = pin::encrypt_pin_block(&apek, PinBlockFormat::Iso4, &pin, PAN, &[0x42; 8]).expect("block");
    let asrc = PinSource::Dukpt { bdk: "acq.bdk-aes", ksn: aksn.as_bytes(), format: PinBlockFormat::Iso4 };
    let out = h.translate_pin(&asrc, &ablock, PAN, "iss.zpk", PinBlockFormat::Iso0).expect("translate");
    assert_eq!(pin::decrypt_pin_block(&zpk, PinBlockFormat::Iso0, &out, PAN).expect("decrypt"), pin);
    // Zone to zone, format 0 to format 3.
    let acq = SymmetricKey::Tdes(tdes("3E3E3E3E3E3E3E3E4F4F4F4F4F4F4F4F"));
    let zblock = pin::encrypt_pin_block(&acq, PinBlockFormat::Iso0, &pin, PAN, &[0xFF; 8]).expect("block");
    let zsrc = PinSource::Zone { key: "acq.zpk", format: PinBlockFormat::Iso0 };
    let out = h.translate_pin(&zsrc, &zblock, PAN, "iss.zpk", PinBlockFormat::Iso3).expect("translate");
    assert_eq!(pin::decrypt_pin_block(&zpk, PinBlockFormat::Iso3, &out, PAN).expect("decrypt"), pin);
    // PVV: the right PIN verifies, a wrong one does not.
    let pvv = pin::visa_pvv(&tdes("5B5B5B5B5B5B5B5B6D6D6D6D6D6D6D6D"), PAN, 1, &pin).expect("pvv");
    h.verify_pin_pvv(&zsrc, &zblock, PAN, "iss.pvk", 1, &pvv).expect("PIN verifies");
    let wrong =
        pin::encrypt_pin_block(&acq, PinBlockFormat::Iso0, &Pin::new("4321").expect("pin"), PAN, &[0xFF; 8])
            .expect("block");
    assert_eq!(
        h.verify_pin_pvv(&zsrc, &wrong, PAN, "iss.pvk", 1, &pvv).expect_err("wrong PIN").kind,
        ErrorKind::Verification
    );
    // CVV.
    let cvv = crypto::cvv::cvv(&tdes("0123456789ABCDEFFEDCBA9876543210"), PAN, "2812", "101").expect("cvv");
    h.verify_cvv("iss.cvk", PAN, "2812", "101", &cvv).expect("cvv verifies");
    assert!(h.verify_cvv("iss.cvk", PAN, "2812", "101", "000").is_err() || cvv == "000");
}

/// The issuer's verification keeps each card's master key: a card's later cryptograms (other
/// ATCs) verify against it as against a fresh derivation, under every cryptogram version; cards
/// that share a PAN with another sequence number, or share nothing, get their own; a wrong
/// cryptogram still fails.
#[test]
fn a_kept_card_master_key_verifies_as_a_derived_one() {
    let h = hsm();
    let imk = SymmetricKey::Tdes(tdes("0123456789ABCDEFFEDCBA9876543210"));
    let (pan_a, pan_b) =
        (PanDigits::new(PAN).expect("pan"), PanDigits::new("4761739001010028").expect("pan"));
    let data = b"transaction data for the cryptogram".to_vec();
    for cvn in Cvn::ALL {
        let input = if cvn.arpc_method() == Some(2) {
            ArpcInput::Csu { csu: [0, 0, 0, 0x80], proprietary: vec![] }
        } else {
            ArpcInput::Arc(*b"00")
        };
        for atc in [0x1E, 0x1F, 0x200] {
            for (pan, psn) in [(&pan_a, 1), (&pan_a, 2), (&pan_b, 1)] {
                let card = CardInputs {
                    pan,
                    psn: Psn::new(psn).expect("psn"),
                    atc: Atc(atc),
                    un: Some(UnpredictableNumber([1, 2, 3, 4])),
                };
                let arqc = cvn.generate_ac(&imk, &card, &data).expect("ac");
                let verified = h
                    .verify_arqc_keeping_keys("iss.imk", cvn, &card, &data, &arqc)
                    .unwrap_or_else(|e| panic!("{cvn} ATC {atc} PSN {psn}: {e}"));
                assert_eq!(
                    verified.arpc(&input).expect("arpc"),
                    cvn.generate_arpc(&imk, &card, &arqc, &input).expect("arpc"),
                    "{cvn}"
                );
                let mut bad = arqc;
                bad[0] ^= 0x80;
                let e = h.verify_arqc_keeping_keys("iss.imk", cvn, &card, &data, &bad).expect_err("bad ARQC");
                assert_eq!(e.kind, ErrorKind::Verification);
            }
        }
    }
}

/// A master key replaced (the keystore reloaded with another key under the same name): no card
/// key kept from the old one verifies anything; cryptograms under the new one verify. And a key
/// of another usage is still refused, kept card keys or not.
#[test]
fn kept_card_keys_go_with_their_master_key() {
    let h = hsm();
    let old = SymmetricKey::Tdes(tdes("0123456789ABCDEFFEDCBA9876543210"));
    let new = SymmetricKey::Tdes(tdes("F1E2D3C4B5A6978812345678ABCDEF01"));
    let pan = PanDigits::new(PAN).expect("pan");
    let card = CardInputs { pan: &pan, psn: Psn::new(1).expect("psn"), atc: Atc(7), un: None };
    let data = b"transaction data".to_vec();
    let under_old = Cvn::Visa18.generate_ac(&old, &card, &data).expect("ac");
    h.verify_arqc_keeping_keys("iss.imk", Cvn::Visa18, &card, &data, &under_old).expect("kept now");
    let mut ks = Keystore::new(Lmk::from_hex(LMK).expect("lmk"));
    ks.import(
        KeyName::new("iss.imk").expect("name"),
        &Header::parse_template("D0000E0TX00N0000").expect("header"),
        &new,
        &[0x5A; 64],
    )
    .expect("import");
    h.replace_keystore(ks);
    let e = h
        .verify_arqc_keeping_keys("iss.imk", Cvn::Visa18, &card, &data, &under_old)
        .expect_err("the old master key's card key is gone");
    assert_eq!(e.kind, ErrorKind::Verification);
    let under_new = Cvn::Visa18.generate_ac(&new, &card, &data).expect("ac");
    h.verify_arqc_keeping_keys("iss.imk", Cvn::Visa18, &card, &data, &under_new).expect("the new one's");
    let h = hsm();
    h.verify_arqc_keeping_keys("iss.imk", Cvn::Visa18, &card, &data, &under_old).expect("kept");
    let e = h.verify_arqc_keeping_keys("iss.zpk", Cvn::Visa18, &card, &data, &under_old).expect_err("usage");
    assert_eq!(e.kind, ErrorKind::KeyUsage);
}

/// A TDES DUKPT terminal's PIN blocks, one transaction after another (and back, and from a second
/// terminal under the same BDK), translate as the PIN key derived from the BDK gives them: the
/// HSM keeps each device's derivation, and its answers are those of a fresh derivation. The BDK
/// replaced under the same name, the kept derivation goes with it; a key of another usage is
/// still refused.
#[test]
fn kept_dukpt_derivations_translate_as_derived_ones() {
    let h = hsm();
    let zpk = SymmetricKey::Tdes(tdes("1C1C1C1C1C1C1C1C2A2A2A2A2A2A2A2A"));
    let pin = Pin::new("4321").expect("pin");
    let translate = |h: &SoftHsm, bdk: &TdesKey, ksn: &str| {
        let ksn = dukpt::TdesKsn::from_hex(ksn).expect("ksn");
        let pek = SymmetricKey::Tdes(
            dukpt::tdes::derive_working_key(bdk, &ksn, dukpt::KeyUsage::Pin).expect("pek"),
        );
        let block = pin::encrypt_pin_block(&pek, PinBlockFormat::Iso0, &pin, PAN, &[0xFF; 8]).expect("block");
        let src = PinSource::Dukpt { bdk: "acq.bdk", ksn: ksn.as_bytes(), format: PinBlockFormat::Iso0 };
        h.translate_pin(&src, &block, PAN, "iss.zpk", PinBlockFormat::Iso0)
            .map(|out| pin::decrypt_pin_block(&zpk, PinBlockFormat::Iso0, &out, PAN).expect("decrypt"))
    };
    let bdk = tdes("0123456789ABCDEFFEDCBA9876543210");
    for ksn in [
        "FFFF9876543210E00001",
        "FFFF9876543210E00002",
        "FFFF9876543210E00003",
        "FFFF9876543210E00004",
        "FFFF9876543210E0FF00",
        "FFFF9876543210E00005",
        "FFFF1234567890E00001",
        "FFFF9876543210E00006",
        "FFFF1234567890E00002",
    ] {
        assert_eq!(translate(&h, &bdk, ksn).expect(ksn), pin, "{ksn}");
    }
    // A counter no device uses is refused, kept device or not.
    let ksn = dukpt::TdesKsn::from_hex("FFFF9876543210E00000").expect("ksn");
    let src = PinSource::Dukpt { bdk: "acq.bdk", ksn: ksn.as_bytes(), format: PinBlockFormat::Iso0 };
    let e = h.translate_pin(&src, &[0; 8], PAN, "iss.zpk", PinBlockFormat::Iso0).expect_err("counter 0");
    assert_eq!(e.kind, ErrorKind::Ksn);
    // The BDK replaced: blocks under the old one no longer translate to the PIN; the new one's do.
    let new_bdk = tdes("F1E2D3C4B5A6978812345678ABCDEF01");
    let mut ks = Keystore::new(Lmk::from_hex(LMK).expect("lmk"));
    for (name, header, key) in [
        ("acq.bdk", "D0000B0TX00N0000", new_bdk.clone()),
        ("iss.zpk", "D0000P0TB00N0000", tdes("1C1C1C1C1C1C1C1C2A2A2A2A2A2A2A2A")),
    ] {
        ks.import(
            KeyName::new(name).expect("name"),
            &Header::parse_template(header).expect("header"),
            &SymmetricKey::Tdes(key),
            &[0x5A; 64],
        )
        .expect("import");
    }
    h.replace_keystore(ks);
    assert_ne!(
        translate(&h, &bdk, "FFFF9876543210E00007").ok(),
        Some(pin.clone()),
        "the old BDK's device is gone"
    );
    assert_eq!(translate(&h, &new_bdk, "FFFF9876543210E00008").expect("new BDK"), pin);
    let ksn = dukpt::TdesKsn::from_hex("FFFF9876543210E00009").expect("ksn");
    let src = PinSource::Dukpt { bdk: "iss.zpk", ksn: ksn.as_bytes(), format: PinBlockFormat::Iso0 };
    let e = h.translate_pin(&src, &[0; 8], PAN, "iss.zpk", PinBlockFormat::Iso0).expect_err("usage");
    assert_eq!(e.kind, ErrorKind::KeyUsage);
}
