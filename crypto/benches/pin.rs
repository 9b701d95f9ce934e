//! PIN translation as the switch runs it for every PIN transaction: a terminal's DUKPT PIN block
//! (the host derives that transaction's PIN key from the BDK and the KSN) decrypted and
//! re-encrypted as ISO format 0 under the issuer's ZPK, through the SoftHsm by key name: a
//! terminal's successive transactions (the HSM keeps its derivation), and devices it does not
//! keep (each derived from the BDK). Goal: under 10 µs.

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

    // A terminal's transactions one after another: the HSM keeps each device's derivation, so
    // a KSN resumes from the steps its counter shares with the device's last one.
    let initial = TdesKsn::from_hex("FFFF9876543210E00000").expect("ksn");
    let ipek = dukpt::tdes::derive_ipek(&bdk, &initial).expect("ipek");
    let mut device = dukpt::tdes::TdesDukptDevice::load_initial_key(&ipek, &initial).expect("device");
    // A terminal's PIN block under the PIN key of a transaction key.
    let block_under = |key: &TdesKey| {
        let pek = SymmetricKey::Tdes(dukpt::tdes::working_key(key, KeyUsage::Pin).expect("pek"));
        pin::encrypt_pin_block(&pek, PinBlockFormat::Iso0, &pin, PAN, &[0xFF; 8]).expect("block")
    };
    // Each PIN block of `blocks` translated in turn.
    let mut translate_in_turn = |name: &str, blocks: &[(TdesKsn, Vec<u8>)]| {
        let mut next = blocks.iter().cycle();
        c.bench_function(name, |b| {
            b.iter(|| {
                let (ksn, block) = next.next().expect("cycle");
                let src =
                    PinSource::Dukpt { bdk: "acq.bdk", ksn: ksn.as_bytes(), format: PinBlockFormat::Iso0 };
                hsm.translate_pin(&src, black_box(block), PAN, "iss.zpk", PinBlockFormat::Iso0)
            })
        });
    };
    let rising: Vec<(TdesKsn, Vec<u8>)> = (0..4096)
        .map(|_| {
            let (ksn, key) = device.next_transaction().expect("next");
            (ksn, block_under(&key))
        })
        .collect();
    translate_in_turn("pin_translate_dukpt_tdes_rising_counter", &rising);

    // Devices the HSM does not keep (more of them, in turn, than it keeps): each PIN block
    // derives its key from the BDK — the initial key, then a step per one-bit of the counter
    // (here 0x1F, five).
    let devices: Vec<(TdesKsn, Vec<u8>)> = (0..(crypto::hsm::DUKPT_DEVICES_KEPT + 1024) as u32)
        .map(|d| {
            let ksn = TdesKsn::from_hex(&format!("FFFF98{d:08X}E0001F")).expect("ksn");
            (ksn, block_under(&dukpt::tdes::transaction_key(&bdk, &ksn).expect("key")))
        })
        .collect();
    translate_in_turn("pin_translate_dukpt_tdes_device_not_kept", &devices);

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
