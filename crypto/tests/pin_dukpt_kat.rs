//! Published known answers for PIN blocks, PVV, IBM 3624 and DUKPT.
//!
//! - ANSI X9.24-1:2009 Annex A.4 (TDES DUKPT): BDK 0123456789ABCDEFFEDCBA9876543210, KSN
//!   FFFF9876543210E00000 → IPEK 6AC292FAA1315B4D858AB3A3D7D5933A; the transaction keys of the
//!   first transactions (counter 1, 2, 3) as the standard's table lists them, and their PIN keys.
//! - psec 1.3.0 documentation examples (ISO 9564 formats 0 and 4 fields, Visa PVV 4021, IBM 3624
//!   offset 0000).

use crypto::dukpt::{KeyUsage, TdesKsn, tdes};
use crypto::keys::{SymmetricKey, TdesKey, to_hex};
use crypto::pin::{self, Ibm3624Params, Pin, PinBlockFormat};

fn tdes_key(h: &str) -> TdesKey {
    TdesKey::from_hex("key", h).expect("key")
}

#[test]
fn x9_24_1_annex_a_ipek_and_pin_keys() {
    let bdk = tdes_key("0123456789ABCDEFFEDCBA9876543210");
    let ksn = TdesKsn::from_hex("FFFF9876543210E00000").expect("ksn");
    assert_eq!(
        to_hex(tdes::derive_ipek(&bdk, &ksn).expect("ipek").expose()),
        "6AC292FAA1315B4D858AB3A3D7D5933A"
    );
    // The table's keys are the transaction keys; the PIN encryption key is each XOR the PIN
    // variant 00000000000000FF00000000000000FF (§A.6).
    for (counter, key, pin_key) in [
        ("E00001", "042666B49184CFA368DE9628D0397BC9", "042666B49184CF5C68DE9628D0397B36"),
        ("E00002", "C46551CEF9FD24B0AA9AD834130D3BC7", "C46551CEF9FD244FAA9AD834130D3B38"),
        ("E00003", "0DF3D9422ACA56E547676D07AD6BADFA", "0DF3D9422ACA561A47676D07AD6BAD05"),
    ] {
        let ksn = TdesKsn::from_hex(&format!("FFFF9876543210{counter}")).expect("ksn");
        assert_eq!(
            to_hex(tdes::transaction_key(&bdk, &ksn).expect("key").expose()),
            key,
            "KSN counter {counter}"
        );
        let k = tdes::derive_working_key(&bdk, &ksn, KeyUsage::Pin).expect("key");
        assert_eq!(to_hex(k.expose()), pin_key, "KSN counter {counter}");
    }
    // The host's kept derivation for the device gives the table's keys too, one after the other.
    let mut host = tdes::HostDevice::new(&bdk, &ksn).expect("device");
    for (counter, key) in [
        ("E00001", "042666B49184CFA368DE9628D0397BC9"),
        ("E00002", "C46551CEF9FD24B0AA9AD834130D3BC7"),
        ("E00003", "0DF3D9422ACA56E547676D07AD6BADFA"),
    ] {
        let ksn = TdesKsn::from_hex(&format!("FFFF9876543210{counter}")).expect("ksn");
        assert_eq!(to_hex(host.transaction_key(&ksn).expect("key").expose()), key, "kept, {counter}");
    }
}

#[test]
fn device_and_host_derive_the_same_keys() {
    let bdk = tdes_key("0123456789ABCDEFFEDCBA9876543210");
    let ksn0 = TdesKsn::from_hex("FFFF9876543210E00000").expect("ksn");
    let ipek = tdes::derive_ipek(&bdk, &ksn0).expect("ipek");
    let mut device = tdes::TdesDukptDevice::load_initial_key(&ipek, &ksn0).expect("device");
    for _ in 0..40 {
        let (ksn, key) = device.next_transaction().expect("next");
        assert_eq!(key, tdes::transaction_key(&bdk, &ksn).expect("host"), "counter {}", ksn.counter());
    }
}

#[test]
fn psec_documented_examples() {
    // psec 1.3.0 pinblock.encode_pinblock_iso_0 docstring: PIN 1234, PAN 5544332211009966.
    let pin = Pin::new("1234").expect("pin");
    let block =
        pin::encode_pin_block(PinBlockFormat::Iso0, &pin, "5544332211009966", &[0xFF; 8]).expect("block");
    assert_eq!(to_hex(&block), "041277CDDEEFF669");
    // psec 1.3.0 pin.generate_visa_pvv docstring.
    let pvk = tdes_key("0123456789ABCDEFFEDCBA9876543210");
    assert_eq!(
        pin::visa_pvv(&pvk, "1122334455667788", 3, &Pin::new("4524").expect("pin")).expect("pvv"),
        "4021"
    );
    // psec 1.3.0 pin.generate_ibm3624_offset docstring.
    let params = Ibm3624Params {
        decimalization_table: "1234567890123456",
        validation_data: "1122334455667788",
        pad: 'F',
        check_length: 4,
    };
    assert_eq!(pin::ibm3624_offset(&pvk, &params, &Pin::new("4524").expect("pin")).expect("offset"), "0000");
}

#[test]
fn pin_refusals_are_clear() {
    assert!(Pin::new("123").is_err(), "too short");
    assert!(Pin::new("1234567890123").is_err(), "too long");
    let e = Pin::new("12a4").expect_err("non-digit");
    assert!(!e.to_string().contains("12a4"), "the PIN is never echoed: {e}");
    let zpk = SymmetricKey::Tdes(tdes_key("0123456789ABCDEFFEDCBA9876543210"));
    let e = pin::decrypt_pin_block(&zpk, PinBlockFormat::Iso0, &[0u8; 7], "4761739001010010")
        .expect_err("short block");
    assert!(e.to_string().contains("8 bytes"), "{e}");
    // A KSN at its last counter cannot advance.
    let last = TdesKsn::from_hex("FFFF9876543210FFF800").expect("ksn");
    assert!(last.next().is_err());
}

#[test]
fn aes_dukpt_initial_key_and_device_host_agreement() {
    use crypto::dukpt::{AesKsn, aes};
    use crypto::keys::AesKey;
    // ANSI X9.24-3-2017 Annex B: AES-128 BDK FEDCBA9876543210F1F1F1F1F1F1F1F1, initial key ID
    // 1234567890123456 → initial key 1273671EA26AC29AFA4D1084127652A1.
    let bdk = AesKey::from_hex("bdk", "FEDCBA9876543210F1F1F1F1F1F1F1F1").expect("bdk");
    let ksn = AesKsn::from_hex("123456789012345600000000").expect("ksn");
    let ik = aes::derive_initial_key(&bdk, &ksn.initial_key_id());
    assert_eq!(to_hex(ik.expose()), "1273671EA26AC29AFA4D1084127652A1");
    let mut device = aes::AesDukptDevice::load_initial_key(&ik, ksn.initial_key_id());
    for _ in 0..40 {
        let (ksn, key) = device.next_transaction().expect("next");
        assert_eq!(key, aes::transaction_key(&bdk, &ksn).expect("host"), "counter {}", ksn.counter());
    }
}
