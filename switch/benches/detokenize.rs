//! The detokenize stage per tokenized authorization: the vault look-up (from the cache), status,
//! expiry and domain checks, opening the sealed PAN and rewriting DE 2/14/35 + DE 123 — and,
//! separately, the same with the token cryptogram verified (TDES, the dominant cost).

#[path = "../tests/fixtures/token_vault.rs"]
mod token_vault;

use std::hint::black_box;
use token_vault::TOKEN_IMK;

use codecs::iso8583::Spec;
use criterion::{Criterion, criterion_group, criterion_main};
use crypto::emv::{Cvn, PanDigits, Psn};
use crypto::keys::{TdesKey, to_hex};
use switch::detokenize::Detokenizer;
use switch::token::{DomainControls, NewToken, TokenStatus, VaultDetokenizer};
use terminal_kit::pos::{TestCard, Tx, chip_request};

const NOW_MS: u64 = 1_764_028_800_000;

fn benches(c: &mut Criterion) {
    let (hsm, vault) = token_vault::hsm_and_vault();
    // A vault of 10,000 tokens.
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
    let det = VaultDetokenizer::new(vault.clone(), hsm, token_vault::token_keys());
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
