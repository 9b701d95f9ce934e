//! The pipeline's own work per authorization, without sockets or disk: a chip purchase from a
//! known terminal decoded from its wire bytes, taken through every stage to the issuer
//! (`Pipeline::begin`), the issuer's approval taken back (`Pipeline::complete`), and the answer
//! encoded once and sealed into the duplicate cache (`Pipeline::publish`) — what a runtime worker
//! does for each authorization besides reading, writing and waking. The decision state goes to an
//! in-memory store whose writer runs on its own thread (its work is the `state_commit` bench's).
//!
//! 128 cards of the test BIN, each request a fresh STAN and the card's next ATC, as in the load
//! bench. Criterion gives the time per authorization; `PIPELINE_FIXED=n` runs n authorizations
//! instead, for an instruction count, e.g.
//!
//! ```text
//! PIPELINE_FIXED=4096 valgrind --tool=callgrind --toggle-collect='*measured_*' \
//!     target/release/deps/pipeline-… --bench
//! ```
//!
//! then `callgrind_annotate --inclusive=yes` gives `measured_begin`, `measured_complete` and
//! `measured_answer` (divide by n).

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use codecs::iso8583::{Message, ResponseCode, Spec};
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use crypto::keys::TdesKey;
use crypto::keystore::{Keystore, Lmk};
use switch::detokenize::NoTokens;
use switch::pipeline::{Done, ListenerCtx, Pipeline, Step, fixture};
use switch::registry::Peer;
use switch::store::sqlite::SqliteStore;
use terminal_kit::pos::{TestCard, Tx, chip_request};

/// The switch's allocator (see its `main`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CARDS: u32 = 128;
/// A fixed "now" (the pipeline takes the clock as an input).
const NOW: u64 = 1_795_000_000_000;

/// The pipeline for one acquirer and one issuer (the switch's test fixture), on an in-memory
/// store, with the node's default bounds for the duplicate cache.
struct Fixture {
    pipeline: Pipeline,
    listener: ListenerCtx,
    peer: Peer,
}

fn fixture() -> Fixture {
    let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("LMK");
    let (pipeline, _writer) = switch::pipeline::fixture::Fixture {
        hsm: Arc::new(crypto::hsm::SoftHsm::new(Keystore::new(lmk), Box::new(|b: &mut [u8]| b.fill(1)))),
        detokenizer: Arc::new(NoTokens),
        imk_ac: None,
        routes: vec!["476173"],
        stand_in_max_minor: (10_000, 15_000),
        dedupe: (600_000, 262_144),
        entropy: Arc::new(testkit::TestRng::seeded(7)),
        fingerprint_key: 9,
    }
    .build(Arc::new(SqliteStore::in_memory().expect("store")))
    .expect("pipeline");
    Fixture { pipeline, listener: fixture::listener(), peer: fixture::local() }
}

/// Chip purchases on 128 cards, in turn: each one's wire bytes (building one runs the card's
/// cryptogram, outside what is measured).
struct Requests {
    cards: Vec<TestCard>,
    spec: Arc<Spec>,
    next: u32,
}

impl Requests {
    fn new() -> Requests {
        let imk = TdesKey::from_hex("imk", "0123456789ABCDEFFEDCBA9876543210").expect("imk");
        let cards = (0..CARDS)
            .map(|i| TestCard::visa18(&imk, &format!("476173900101{:04}", i)).expect("test card"))
            .collect();
        Requests { cards, spec: Spec::builtin("network").expect("spec").clone(), next: 0 }
    }

    fn next(&mut self) -> Bytes {
        self.next += 1;
        let i = self.next;
        let card = &self.cards[(i % CARDS) as usize];
        let tx = Tx::purchase(i % 999_999 + 1, 100 + u64::from(i % 50) * 7, (i / CARDS + 1) as u16);
        chip_request(&self.spec, card, &tx).expect("request").encode().expect("encode")
    }
}

#[inline(never)]
fn measured_begin(f: &Fixture, raw: Bytes) -> Step {
    let msg = Message::decode(&f.listener.spec, raw.clone()).expect("decodes");
    f.pipeline.begin(&f.listener, &f.peer, &raw, msg, NOW)
}

#[inline(never)]
fn measured_complete(f: &Fixture, pending: switch::pipeline::Pending, approval: Message) -> Done {
    f.pipeline.complete(pending, Ok(approval), NOW)
}

#[inline(never)]
fn measured_answer(f: &Fixture, mut done: Done) -> Option<Bytes> {
    let encoded = Pipeline::encode_answer(&done.answer);
    f.pipeline.publish(done.dedupe.take().as_ref(), encoded.clone());
    encoded
}

/// The issuer's approval of what it was sent (the issuer's work, not measured).
fn approval(sent: &Message) -> Message {
    let mut a = switch::pipeline::respond::answer(sent, ResponseCode::APPROVED);
    a.set_text(38, "123456").expect("DE 38");
    a
}

/// One authorization, start to answer; the answer's bytes.
fn authorize(f: &Fixture, raw: Bytes) -> Bytes {
    let forward = match measured_begin(f, raw) {
        Step::Forward(fw) => *fw,
        Step::Answer(d) => panic!("answered at once: {:?} {:?}", d.answer.text(39), d.decline),
        _ => panic!("not forwarded"),
    };
    let answer = approval(forward.msg());
    let done = measured_complete(f, forward.pending, answer);
    assert_eq!(done.answer.text(39).as_deref(), Some("00"), "approved");
    measured_answer(f, done).expect("encodes")
}

fn fixed(n: u32) {
    let f = fixture();
    let mut reqs = Requests::new();
    let raws: Vec<Bytes> = (0..n).map(|_| reqs.next()).collect();
    for raw in raws {
        black_box(authorize(&f, raw));
    }
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let mut reqs = Requests::new();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    g.bench_function("chip_purchase_begin_to_answer", |b| {
        b.iter_batched(|| reqs.next(), |raw| authorize(&f, raw), BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches_group, benches);

fn main() {
    if let Some(n) = std::env::var("PIPELINE_FIXED").ok().and_then(|v| v.parse().ok()) {
        fixed(n);
        return;
    }
    benches_group();
    Criterion::default().configure_from_args().final_summary();
}
