//! The SQLite store's work per authorization, as the decision state's writer does it: group
//! commits of 8 and 32 authorizations (each its card's ATC window, its original and the journal
//! row of its chip purchase and approval, built from the messages: masking, fingerprint, stored
//! form), and the background pass that files the state log and the journal's look-up tables.
//!
//! The database lives on `/dev/shm` when there is one (a sync there costs next to nothing: the
//! figures are the CPU's, not the disk's). Criterion gives the time per group commit and per pass
//! of 1,536 authorizations (throughput in authorizations). `STATE_COMMIT_FIXED=n` runs a fixed
//! workload instead (n authorizations in commits of 32, a pass every 1,536) for an instruction
//! count, e.g.
//!
//! ```text
//! STATE_COMMIT_FIXED=15360 valgrind --tool=callgrind --toggle-collect='*measured_*' \
//!     target/release/deps/state_commit-… --bench
//! ```
//!
//! then `callgrind_annotate --inclusive=yes` gives `measured_commit` and `measured_pass` (divide
//! by n).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use codecs::iso8583::{Message, ResponseCode, Spec};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use crypto::keys::TdesKey;
use switch::journal::{Direction, Fingerprint, MessageEntry, message_row};
use switch::records::{AtcWindow, OriginalRecord, StateWrites, WINDOW, original_key};
use switch::store::Store;
use switch::store::sqlite::SqliteStore;
use terminal_kit::pos::{TestCard, Tx, chip_request};

/// The switch's allocator (see its `main`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Authorizations between two background passes (250 ms at 6,000/s).
const PASS_EVERY: u64 = 1_536;
const CARDS: u64 = 128;

/// Chip purchases and their approvals, a pool reused in turn (building one runs the card's
/// cryptogram), and the state every authorization leaves.
/// An exchange to journal: the request, its approval and when.
type Journaled = (Message, Message, u64);

struct Load {
    pool: Vec<(Message, Message)>,
    windows: HashMap<String, AtcWindow>,
    fingerprint: Fingerprint,
    next: u64,
}

impl Load {
    fn new() -> Load {
        let imk = TdesKey::from_hex("imk", "0123456789ABCDEFFEDCBA9876543210").expect("imk");
        let card = TestCard::visa18(&imk, "4761739001010010").expect("test card");
        let spec = Spec::builtin("network").expect("spec");
        let pool = (1..=256u32)
            .map(|i| {
                let req = chip_request(spec, &card, &Tx::purchase(i, 100 + u64::from(i) * 7, i as u16))
                    .expect("request");
                let mut answer = switch::pipeline::respond::answer(&req, ResponseCode::APPROVED);
                answer.set_text(38, "123456").expect("DE 38");
                (req, answer)
            })
            .collect();
        let fingerprint: Fingerprint =
            std::sync::Arc::new(|p: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(p.as_bytes())));
        Load { pool, windows: HashMap::new(), fingerprint, next: 0 }
    }

    /// The next `n` authorizations: their state, and their journal items (rows still to build).
    fn group(&mut self, n: u64) -> (StateWrites, Vec<Journaled>) {
        let mut w = StateWrites::default();
        let mut items = Vec::with_capacity(n as usize);
        for _ in 0..n {
            self.next += 1;
            let i = self.next;
            let card = format!("{:064x}", i % CARDS);
            let win = self.windows.entry(card.clone()).or_default();
            let _ = win.accept((i / CARDS + 1) as u32, WINDOW);
            w.windows.insert(card.clone(), win.clone());
            let key = original_key(
                "ACQ001",
                "TERM0001",
                "0100",
                &format!("{:06}", i % 1_000_000),
                &format!("{i:010}"),
            );
            w.originals.insert(
                key.clone(),
                OriginalRecord {
                    key,
                    card,
                    amount_minor: 100 + i % 900,
                    currency: "978".into(),
                    response_code: Some("00".into()),
                    issuer: "issuer-a".into(),
                    settled_minor: 0,
                    at_ms: 1_700_000_000_000 + i,
                },
            );
            let (msg, response) = &self.pool[(i % self.pool.len() as u64) as usize];
            items.push((msg.clone(), response.clone(), 1_700_000_000_000 + i));
        }
        (w, items)
    }
}

/// The store's work for one group: the journal rows built (by the threads answering, since a
/// later round), the group committed.
#[inline(never)]
fn measured_commit(store: &SqliteStore, mut w: StateWrites, items: Vec<Journaled>, fp: &Fingerprint) {
    w.journal.extend(items.iter().map(|(msg, response, at_ms)| {
        let entry = MessageEntry {
            msg,
            response: Some(response),
            direction: Direction::AcquirerExchange,
            at_ms: *at_ms,
            route: Some("issuer-a"),
            latency_us: Some(900),
        };
        message_row(entry, Some(fp))
    }));
    store.state_commit(black_box(&w)).expect("commit");
}

#[inline(never)]
fn measured_pass(store: &SqliteStore) {
    store.background_pass().expect("pass");
}

fn temp_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("temp dir")
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open_without_background(&dir.path().join("switch.db")).expect("store")
}

/// Commits of `size` authorizations, a pass (not timed) every [`PASS_EVERY`].
fn commits(store: &SqliteStore, load: &mut Load, size: u64, iters: u64) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        let (w, items) = load.group(size);
        let t = Instant::now();
        measured_commit(store, w, items, &load.fingerprint.clone());
        spent += t.elapsed();
        if load.next % PASS_EVERY < size {
            measured_pass(store);
        }
    }
    spent
}

fn fixed(n: u64) {
    let dir = temp_dir();
    let store = open(&dir);
    let mut load = Load::new();
    let fp = load.fingerprint.clone();
    let t = Instant::now();
    for _ in 0..n / 32 {
        let (w, items) = load.group(32);
        measured_commit(&store, w, items, &fp);
        if load.next.is_multiple_of(PASS_EVERY) {
            measured_pass(&store);
        }
    }
    measured_pass(&store);
    let wal = std::fs::metadata(dir.path().join("switch.db-wal")).map(|m| m.len()).unwrap_or(0);
    println!("{n} authorizations in {:?} ({wal} WAL bytes at the end)", t.elapsed());
}

fn benches(c: &mut Criterion) {
    let dir = temp_dir();
    let store = open(&dir);
    let mut load = Load::new();
    let mut g = c.benchmark_group("state_commit");
    for size in [8u64, 32] {
        g.throughput(Throughput::Elements(size));
        g.bench_function(BenchmarkId::new("commit", size), |b| {
            b.iter_custom(|iters| commits(&store, &mut load, size, iters))
        });
    }
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.throughput(Throughput::Elements(PASS_EVERY));
    g.bench_function(BenchmarkId::new("pass", PASS_EVERY), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..PASS_EVERY / 32 {
                    let (w, items) = load.group(32);
                    measured_commit(&store, w, items, &load.fingerprint.clone());
                }
                let t = Instant::now();
                measured_pass(&store);
                spent += t.elapsed();
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches_group, benches);

fn main() {
    if let Some(n) = std::env::var("STATE_COMMIT_FIXED").ok().and_then(|v| v.parse().ok()) {
        fixed(n);
        return;
    }
    benches_group();
    Criterion::default().configure_from_args().final_summary();
}
