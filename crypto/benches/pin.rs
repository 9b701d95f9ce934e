//! PIN translation as the switch runs it for every PIN transaction: a terminal's DUKPT PIN block
//! (the host derives that transaction's PIN key from the BDK and the KSN) decrypted and
//! re-encrypted as ISO format 0 under the issuer's ZPK, through the SoftHsm by key name.
//! Goal: under 10 µs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use crypto::dukpt::{self, AesKsn, KeyUsage, TdesKsn};
use crypto::hsm::{Hsm, PinSource, SoftHsm};
use crypto::keyblock::Header;
use crypto::keys::{AesKey, SymmetricKey, TdesKey};
use crypto::keystore::{KeyName, Keystore, Lmk};
use crypto::pin::{self, Pin, PinBlockFormat};

const PAN: &str = "4761739001010010";

fn benches(c: &mut Criterion) {
    let bdk = TdesKey::from_hex("bdk", "0123456789ABCDEFFEDCBA9876543210").expect("bdk");
    let aes_bdk = AesKey::from_slice(&[0x11; 16]).expect("aes");
    let zpk = TdesKey::from_hex("zpk", "1C1C1C1C1C1C1C1C2A2A2A2A2A2A2A2A").expect("zpk");
    let mut ks = Keystore::new(
        Lmk::from_hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F").expect("lmk"),
    );
    for (name, header, key) in [
        ("acq.bdk", "D0000B0TX00N0000", SymmetricKey::Tdes(bdk.clone())),
        ("acq.bdk-aes", "D0000B0AX00N0000", SymmetricKey::Aes(aes_bdk.clone())),
        ("iss.zpk", "D0000P0TB00N0000", SymmetricKey::Tdes(zpk)),
    ] {
        ks.import(
            KeyName::new(name).expect("name"),
            &Header::parse_template(header).expect("h"),
            &key,
            &[0x5A; 32],
        )
        .expect("import");
    }
    let hsm = SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.fill(0x42)));
    let pin = Pin::new("1234").expect("pin");

    let ksn = TdesKsn::from_hex("FFFF9876543210E00008").expect("ksn");
    let pek = SymmetricKey::Tdes(dukpt::tdes::derive_working_key(&bdk, &ksn, KeyUsage::Pin).expect("pek"));
    let block = pin::encrypt_pin_block(&pek, PinBlockFormat::Iso0, &pin, PAN, &[0xFF; 8]).expect("block");
    let src = PinSource::Dukpt { bdk: "acq.bdk", ksn: ksn.as_bytes(), format: PinBlockFormat::Iso0 };
    c.bench_function("pin_translate_dukpt_tdes_to_zpk", |b| {
        b.iter(|| hsm.translate_pin(&src, black_box(&block), PAN, "iss.zpk", PinBlockFormat::Iso0))
    });

    // The worst case: a counter with ten one-bits, ten derivation steps from the IPEK.
    let worst = TdesKsn::from_hex("FFFF9876543210FFF800").expect("ksn");
    let wpek = SymmetricKey::Tdes(dukpt::tdes::derive_working_key(&bdk, &worst, KeyUsage::Pin).expect("pek"));
    let wblock = pin::encrypt_pin_block(&wpek, PinBlockFormat::Iso0, &pin, PAN, &[0xFF; 8]).expect("block");
    let wsrc = PinSource::Dukpt { bdk: "acq.bdk", ksn: worst.as_bytes(), format: PinBlockFormat::Iso0 };
    c.bench_function("pin_translate_dukpt_tdes_to_zpk_ten_steps", |b| {
        b.iter(|| hsm.translate_pin(&wsrc, black_box(&wblock), PAN, "iss.zpk", PinBlockFormat::Iso0))
    });

    let aksn = AesKsn::from_hex("123456789012345600000008").expect("ksn");
    let apek = dukpt::aes::derive_working_key(&aes_bdk, &aksn, KeyUsage::Pin, None).expect("pek");
    let ablock = pin::encrypt_pin_block(&apek, PinBlockFormat::Iso4, &pin, PAN, &[0x42; 8]).expect("block");
    let asrc = PinSource::Dukpt { bdk: "acq.bdk-aes", ksn: aksn.as_bytes(), format: PinBlockFormat::Iso4 };
    c.bench_function("pin_translate_dukpt_aes_iso4_to_zpk_iso0", |b| {
        b.iter(|| hsm.translate_pin(&asrc, black_box(&ablock), PAN, "iss.zpk", PinBlockFormat::Iso0))
    });
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
