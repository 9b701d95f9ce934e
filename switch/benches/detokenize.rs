//! The detokenize stage per tokenized authorization: the vault look-up (from the cache), status,
//! expiry and domain checks, opening the sealed PAN and rewriting DE 2/14/35 + DE 123 — and,
//! separately, the same with the token cryptogram verified (TDES, the dominant cost).

#[path = "../tests/fixtures/token_vault.rs"]
mod token_vault;

use std::hint::black_box;

use codecs::iso8583::Spec;
use criterion::{Criterion, criterion_group, criterion_main};
use terminal_kit::pos::{Tx, chip_request};
use tsp::VaultDetokenizer;
use tsp::detokenize::Detokenizer;

const NOW_MS: u64 = 1_764_028_800_000;

fn benches(c: &mut Criterion) {
    let (hsm, vault) = token_vault::hsm_and_vault();
    // A vault of 10,000 tokens.
    let tokens: Vec<String> = (0..10_000u32).map(token_vault::token).collect();
    for (i, t) in tokens.iter().enumerate() {
        token_vault::issue(&vault, t, &["07"], [i as u8; 12]);
    }
    let token = tokens[4242].clone();
    let phone = token_vault::phone(&token);
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
