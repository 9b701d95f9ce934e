//! The issuer side of every chip authorisation: verify the ARQC and make the ARPC, from the
//! issuer master key — directly, and through the SoftHsm by key name as the switch and the issuer
//! simulator call it (unwrapped keys cached). Goal: under 5 µs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use crypto::emv::{ArpcInput, Atc, CardInputs, Cvn, PanDigits, Psn, UnpredictableNumber};
use crypto::hsm::{Hsm, SoftHsm};
use crypto::keyblock::Header;
use crypto::keys::{AesKey, SymmetricKey, TdesKey};
use crypto::keystore::{KeyName, Keystore, Lmk};

const DATA: &str = "0000000100000000000000000250000000000002611250000A1B2C3D420000001E06011203A0B80000000000000000000000000000000000";

fn benches(c: &mut Criterion) {
    let tdes = SymmetricKey::Tdes(TdesKey::from_hex("imk", "0123456789ABCDEFFEDCBA9876543210").expect("key"));
    let aes = SymmetricKey::Aes(AesKey::from_slice(&[0x2B; 16]).expect("aes"));
    let pan = PanDigits::new("4761739001010010").expect("pan");
    let card = CardInputs {
        pan: &pan,
        psn: Psn::new(1).expect("psn"),
        atc: Atc(0x1E),
        un: Some(UnpredictableNumber([0xA1, 0xB2, 0xC3, 0xD4])),
    };
    let data = hex::decode(DATA).expect("hex");
    for (cvn, key, input) in [
        (Cvn::Visa18, &tdes, ArpcInput::Csu { csu: [0, 0, 0, 0x80], proprietary: vec![] }),
        (Cvn::Mc16, &tdes, ArpcInput::Arc(*b"00")),
        (Cvn::EmvCsk, &aes, ArpcInput::Arc(*b"00")),
    ] {
        let arqc = cvn.generate_ac(key, &card, &data).expect("ac");
        let alg = if matches!(key, SymmetricKey::Aes(_)) { "aes" } else { "tdes" };
        c.bench_function(&format!("arqc_verify_and_arpc_{cvn}_{alg}"), |b| {
            b.iter(|| cvn.verify_ac_and_arpc(key, &card, black_box(&data), black_box(&arqc), &input))
        });
    }
    // Through the HSM facade, by key name.
    let mut ks = Keystore::new(
        Lmk::from_hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F").expect("lmk"),
    );
    ks.import(
        KeyName::new("iss.imk").expect("name"),
        &Header::parse_template("D0000E0TX00N0000").expect("h"),
        &tdes,
        &[0x5A; 32],
    )
    .expect("import");
    let hsm = SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.fill(0x42)));
    let arqc = Cvn::Visa18.generate_ac(&tdes, &card, &data).expect("ac");
    let input = ArpcInput::Csu { csu: [0, 0, 0, 0x80], proprietary: vec![] };
    c.bench_function("hsm_verify_arqc_and_arpc_visa18", |b| {
        b.iter(|| {
            hsm.verify_arqc("iss.imk", Cvn::Visa18, &card, black_box(&data), black_box(&arqc), Some(&input))
        })
    });
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
