//! The issuer's decision per request, without the network: what the server does while holding
//! the state's mutex. A contactless purchase (ARQC verified, ATC recorded, booked, ARPC made), the
//! same with a PIN (format-0 block decrypted under the ZPK, PVV checked), a balance inquiry, and
//! an echo. Each chip request carries a fresh ATC; a new issuer is built (untimed) before the
//! 65,536 ATCs of a card run out.
//!
//! `DECIDE_FIXED=n` runs n contactless purchases instead, for an instruction count, e.g.
//!
//! ```text
//! DECIDE_FIXED=4096 valgrind --tool=callgrind --toggle-collect='*measured_*' \
//!     target/release/deps/decide-… --bench
//! ```
//!
//! then `callgrind_annotate --inclusive=yes` gives `measured_handle` (divide by n).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::iso8583::{Message, Spec};
use criterion::{Criterion, criterion_group};
use crypto::hsm::SoftHsm;
use crypto::keystore::Lmk;
use issuer_sim::cards::{TestIssuer, ZPK_NAME, generate_test_issuer};
use issuer_sim::host::{Issuer, Origin};
use issuer_sim::testing::{Tx, chip_request, pin_block};

fn issuer(test: &TestIssuer, lmk: &Lmk) -> Issuer {
    let ks = crypto::keystore::Keystore::from_toml(lmk.clone(), &test.keystore.to_toml()).expect("keystore");
    let mut cards = test.cards.clone();
    for c in &mut cards.cards {
        c.credit_limit = u64::MAX / 4;
    }
    Issuer::new(Arc::new(SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.fill(0x5A)))), ZPK_NAME, &cards)
}

/// Times `iters` requests of `make(atc)`, with a fresh issuer every 60,000.
fn run(iters: u64, test: &TestIssuer, lmk: &Lmk, make: &dyn Fn(u16) -> Message) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(60_000);
        let mut iss = issuer(test, lmk);
        let reqs: Vec<Message> = (0..n).map(|i| make(i as u16)).collect();
        let start = Instant::now();
        for r in &reqs {
            black_box(iss.handle(black_box(r), Origin::AuthenticatedLink, 1_795_000_000_000, "2611", 1));
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

#[inline(never)]
fn measured_handle(iss: &mut Issuer, req: &Message) -> Option<Message> {
    iss.handle(req, Origin::AuthenticatedLink, 1_795_000_000_000, "2611", 1)
}

fn test_issuer() -> (Lmk, TestIssuer) {
    let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("LMK");
    let test = generate_test_issuer(4, lmk.clone(), "2912", &mut testkit::TestRng::seeded(1).filler())
        .expect("test issuer");
    (lmk, test)
}

/// `n` contactless purchases on the test issuer's four cards in turn, each with its card's next ATC.
fn fixed(n: u32) {
    let (lmk, test) = test_issuer();
    let spec: Arc<Spec> = Spec::builtin("network").expect("spec").clone();
    let reqs: Vec<Message> = (0..n)
        .map(|i| {
            let card = &test.clear[(i % 4) as usize];
            let atc = (i / 4 + 1) as u16;
            chip_request(&spec, card, &Tx::purchase(i % 999_999 + 1, 100, atc))
        })
        .collect();
    let mut iss = issuer(&test, &lmk);
    for r in &reqs {
        black_box(measured_handle(&mut iss, r));
    }
}

fn benches(c: &mut Criterion) {
    let (lmk, test) = test_issuer();
    let spec: Arc<Spec> = Spec::builtin("network").expect("spec").clone();
    let card = test.clear[0].clone();
    let block = pin_block(&test.zpk_clear, &card.pan, &card.pin).expect("PIN block");
    let purchase = |atc: u16| chip_request(&spec, &card, &Tx::purchase(u32::from(atc), 100, atc));
    c.bench_function("issuer_purchase_arqc", |b| b.iter_custom(|n| run(n, &test, &lmk, &purchase)));
    let with_pin = |atc: u16| {
        let mut m = purchase(atc);
        m.set_bytes(52, block.clone()).expect("DE 52");
        m
    };
    c.bench_function("issuer_purchase_arqc_pin", |b| b.iter_custom(|n| run(n, &test, &lmk, &with_pin)));
    let inquiry = |atc: u16| chip_request(&spec, &card, &Tx::balance_inquiry(u32::from(atc), atc));
    c.bench_function("issuer_balance_inquiry", |b| b.iter_custom(|n| run(n, &test, &lmk, &inquiry)));
    let mut echo = Message::new(spec.clone(), "0800".parse().expect("mti"));
    echo.set_text(11, "000001").expect("DE 11");
    echo.set_text(70, "301").expect("DE 70");
    let mut iss = issuer(&test, &lmk);
    c.bench_function("issuer_echo", |b| {
        b.iter(|| iss.handle(black_box(&echo), Origin::AuthenticatedLink, 0, "2611", 1))
    });
}

criterion_group! {
    name = decide;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = benches
}

fn main() {
    if let Some(n) = std::env::var("DECIDE_FIXED").ok().and_then(|v| v.parse().ok()) {
        fixed(n);
        return;
    }
    decide();
    Criterion::default().configure_from_args().final_summary();
}
