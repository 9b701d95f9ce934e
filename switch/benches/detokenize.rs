//! The detokenize stage per tokenized authorization: the vault look-up (from the cache), status,
//! expiry and domain checks, opening the sealed PAN and rewriting DE 2/14/35 + DE 123 — and,
//! separately, the same with the token cryptogram verified (TDES, the dominant cost).

use std::hint::black_box;
use std::sync::Arc;

use codecs::iso8583::Spec;
use criterion::{Criterion, criterion_group, criterion_main};
use crypto::emv::{Cvn, PanDigits, Psn};
use crypto::hsm::{Hsm, SoftHsm};
use crypto::keyblock::Header;
use crypto::keys::{AesKey, SymmetricKey, TdesKey, to_hex};
use crypto::keystore::{KeyName, Keystore, Lmk};
use switch::detokenize::Detokenizer;
use switch::seal::Sealer;
use switch::store::sqlite::SqliteStore;
use switch::token::{
    DomainControls, NewToken, TokenKeys, TokenRange, TokenStatus, TokenVault, VaultDetokenizer,
};
use terminal_sim::pos::{TestCard, Tx, chip_request};
use zeroize::Zeroizing;

const TOKEN_IMK: &str = "0123456789ABCDEFFEDCBA9876543210";
const NOW_MS: u64 = 1_764_028_800_000;

fn benches(c: &mut Criterion) {
    let mut ks = Keystore::new(
        Lmk::from_hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F").expect("lmk"),
    );
    ks.import(
        KeyName::new("token.imk-ac").expect("name"),
        &Header::parse_template("D0000E0TX00N0000").expect("header"),
        &SymmetricKey::Tdes(TdesKey::from_hex("k", TOKEN_IMK).expect("key")),
        &[0x5A; 32],
    )
    .expect("import");
    let hsm: Arc<dyn Hsm> = Arc::new(SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.fill(7))));
    let store = Arc::new(SqliteStore::in_memory().expect("store"));
    let vault = Arc::new(
        TokenVault::open(
            store,
            Sealer::new(1, &AesKey::from_slice(&[3; 32]).expect("aes")).expect("sealer"),
            Zeroizing::new(vec![9; 32]),
        )
        .expect("vault"),
    );
    // A vault of 10,000 tokens.
    let range = TokenRange::new("489537", 16, ["476173"]).expect("range");
    let mut tokens = Vec::new();
    for i in 0..10_000u32 {
        let body = format!("489537{i:09}");
        let token = format!(
            "{body}{}",
            char::from(switch::token::luhn_check_digit(body.as_bytes()).expect("digits"))
        );
        let domain = DomainControls {
            entry_modes: vec!["07".into()],
            transaction_types: vec!["00".into()],
            requestor_id: "40010030273".into(),
        };
        vault
            .insert(
                NewToken {
                    token: &token,
                    pan: "4761739001010010",
                    pan_expiry: "2812",
                    par: "V0010013817209843751234567890",
                    expiry: "2911",
                    domain,
                },
                1,
                [i as u8; 12],
            )
            .expect("insert");
        vault.set_status(&token, TokenStatus::Active).expect("active");
        tokens.push(token);
    }
    let token = tokens[4242].clone();
    let imk = TdesKey::from_hex("imk", TOKEN_IMK).expect("imk");
    let icc =
        Cvn::Visa18.icc_master_key(&imk, &PanDigits::new(&token).expect("pan"), Psn::new(0).expect("psn"));
    let phone = TestCard {
        pan: token.clone(),
        expiry: "2911".into(),
        psn: "00".into(),
        cvn: "visa18".into(),
        icc_mk: to_hex(icc.expose()),
        pin: String::new(),
        balance: String::new(),
    };
    let spec = Spec::builtin("network").expect("spec");
    // The whole stage, a fresh ATC each time (the replay window would refuse a repeat).
    let det =
        VaultDetokenizer::new(vault.clone(), hsm, vec![TokenKeys { range, imk_ac: "token.imk-ac".into() }]);
    let mut atc = 0u16;
    c.bench_function("detokenize_with_token_cryptogram_tdes", |b| {
        b.iter_batched(
            || {
                atc = atc.wrapping_add(1).max(1);
                chip_request(spec, &phone, &Tx::purchase(u32::from(atc), 1_000, atc)).expect("request")
            },
            |mut req| det.detokenize(black_box(&mut req), NOW_MS),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("vault_lookup_and_open_pan", |b| {
        b.iter(|| {
            let rec = vault.get(black_box(&token)).expect("cached");
            vault.card(&rec).map(|(p, e)| p.len() + e.len())
        })
    });
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
