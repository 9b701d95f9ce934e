//! TR-31 unwrap cost (header parse, key derivation, decryption, MAC check) for versions B and D,
//! and a keystore fetch (which unwraps under the LMK every time).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use crypto::keyblock::{self, KeyUsage};
use crypto::keys::{AesKey, SymmetricKey, TdesKey};
use crypto::keystore::{KeyName, Keystore, Lmk};

fn bench(c: &mut Criterion) {
    // TR-31:2018 A.7.2.2 (version B) and A.7.4 (version D).
    let b_kbpk =
        SymmetricKey::Tdes(TdesKey::from_hex("kbpk", "DD7515F2BFC17F85CE48F3CA25CB21F6").expect("key"));
    let b_block = "B0080P0TE00E000094B420079CC80BA3461F86FE26EFC4A3B8E4FA4C5F5341176EED7B727B8A248E";
    let d_kbpk = SymmetricKey::Aes(
        AesKey::from_hex("kbpk", "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6")
            .expect("key"),
    );
    let d_block = "D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A27E8E31DA05F7425509593D03A457DC34";
    c.bench_function("tr31_unwrap_B_tdes2", |b| {
        b.iter(|| keyblock::unwrap(black_box(&b_kbpk), black_box(b_block)).expect("unwrap"))
    });
    c.bench_function("tr31_unwrap_D_aes256", |b| {
        b.iter(|| keyblock::unwrap(black_box(&d_kbpk), black_box(d_block)).expect("unwrap"))
    });
    let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("lmk");
    let mut ks = Keystore::new(lmk);
    let h = keyblock::Header::parse_template("D0000P0TE00N0000").expect("header");
    let name = KeyName::new("zpk").expect("name");
    ks.generate(name.clone(), &h, 16, &[0x5A; 64]).expect("generate");
    c.bench_function("keystore_get_tdes_pin_key", |b| {
        b.iter(|| ks.get_tdes(black_box(&name), KeyUsage::PIN_ENCRYPTION).expect("get"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
