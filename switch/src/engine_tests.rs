//! The shell over the pipeline, with an in-memory issuer and a store that refuses commits on
//! demand (a full or failing disk): an answer leaves only once its journal row is durable; while
//! the store refuses, requests are answered 96 and nothing reaches the issuer; the rows of those
//! answers are kept and land when the store takes commits again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::*;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::tests::{approval, listener, local, pipeline_on, purchase};
use crate::saf::RetryPolicy;
use crate::state::{OriginalRecord, StateWrites};
use crate::store::sqlite::SqliteStore;
use crate::store::{JournalRow, NewSafEntry, SafEntry, Store};
use crypto::seal::Sealer;

/// SQLite, except that state commits (which carry the journal rows) fail while `refuse` is set,
/// and wait (`holding` set meanwhile) while `held` is.
struct Refusing {
    inner: SqliteStore,
    refuse: AtomicBool,
    held: std::sync::Mutex<bool>,
    released: std::sync::Condvar,
    holding: AtomicBool,
}

impl Refusing {
    fn hold(&self, on: bool) {
        *self.held.lock().expect("held") = on;
        self.released.notify_all();
    }
}

impl Store for Refusing {
    fn journal_append(&self, rows: &[JournalRow]) -> Result<()> {
        self.inner.journal_append(rows)
    }
    fn journal_count(&self) -> Result<u64> {
        self.inner.journal_count()
    }
    fn journal_by_card(&self, fingerprint: &str, limit: u32) -> Result<Vec<JournalRow>> {
        self.inner.journal_by_card(fingerprint, limit)
    }
    fn journal_read(&self, offset: u64, limit: u32) -> Result<Vec<JournalRow>> {
        self.inner.journal_read(offset, limit)
    }
    fn saf_put(&self, entry: NewSafEntry<'_>) -> Result<i64> {
        self.inner.saf_put(entry)
    }
    fn saf_due(&self, link: &str, now_ms: u64, limit: u32) -> Result<Vec<SafEntry>> {
        self.inner.saf_due(link, now_ms, limit)
    }
    fn saf_reschedule(&self, id: i64, attempts: u32, next_attempt_ms: u64) -> Result<()> {
        self.inner.saf_reschedule(id, attempts, next_attempt_ms)
    }
    fn saf_done(&self, id: i64) -> Result<()> {
        self.inner.saf_done(id)
    }
    fn saf_quarantine(&self, id: i64, reason: &str, now_ms: u64) -> Result<()> {
        self.inner.saf_quarantine(id, reason, now_ms)
    }
    fn saf_quarantined(&self, link: &str) -> Result<u64> {
        self.inner.saf_quarantined(link)
    }
    fn saf_pending(&self, link: Option<&str>) -> Result<u64> {
        self.inner.saf_pending(link)
    }
    fn state_commit(&self, writes: &StateWrites) -> Result<crate::records::CommitOutcome> {
        let mut held = self.held.lock().expect("held");
        while *held {
            self.holding.store(true, Ordering::Release);
            held = self.released.wait(held).expect("held");
        }
        self.holding.store(false, Ordering::Release);
        drop(held);
        if self.refuse.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Store, "test", "disk full"));
        }
        self.inner.state_commit(writes)
    }
    fn atc_windows_load(&self, limit: u64) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.atc_windows_load(limit)
    }
    fn atc_window_get(&self, card: &str) -> Result<Option<Vec<u8>>> {
        self.inner.atc_window_get(card)
    }
    fn standin_totals_load(&self) -> Result<Vec<(String, String, crate::records::StandInTotal)>> {
        self.inner.standin_totals_load()
    }
    fn standin_expire(&self, before_ms: u64) -> Result<u64> {
        self.inner.standin_expire(before_ms)
    }
    fn original_get(&self, key: &str) -> Result<Option<OriginalRecord>> {
        self.inner.original_get(key)
    }
}

/// An issuer that approves everything and counts what it saw; with `fail_disk`, the store starts
/// refusing commits while it decides (after the request was made durable and forwarded).
struct Approver {
    name: Arc<str>,
    spec: Arc<Spec>,
    seen: AtomicUsize,
    fail_disk: Option<Arc<Refusing>>,
    mtis: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

impl IssuerLink for Approver {
    fn name(&self) -> &Arc<str> {
        &self.name
    }
    fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }
    fn is_up(&self) -> bool {
        true
    }
    fn request<'a>(
        &'a self,
        msg: &'a Message,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<Message, LinkError>> + Send + 'a>> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.mtis
            .lock()
            .expect("mtis")
            .push((msg.mti().as_str().to_string(), msg.text(90).map(|t| t.into_owned())));
        if let Some(store) = &self.fail_disk {
            store.refuse.store(true, Ordering::Release);
        }
        Box::pin(async move { Ok(approval(msg)) })
    }
}

fn engine(store: Arc<Refusing>, issuer: Arc<Approver>) -> Engine {
    let pipeline = pipeline_on(store.clone());
    pipeline.state.set_commit_timeout(std::time::Duration::from_millis(300));
    let metrics = Arc::new(Metrics::new("t"));
    let journal = pipeline.state.journal(Arc::new(|p: &str| format!("fp{}", p.len())), metrics.clone());
    let key = crypto::keys::AesKey::from_slice(&[4; 32]).expect("key");
    let saf = Arc::new(SafQueue::new(
        store,
        Arc::new(Sealer::new(1, &key).expect("sealer")),
        RetryPolicy::default(),
        "issuer-a",
    ));
    let handle = IssuerHandle { link: issuer, saf, saf_wake: Arc::new(tokio::sync::Notify::new()) };
    Engine {
        pipeline,
        issuers: HashMap::from([(Arc::from("issuer-a"), handle)]),
        journal,
        metrics,
        clock: Arc::new(crate::clock::ManualClock(AtomicU64::new(1_795_000_000_000))),
        entropy: Arc::new(testkit::TestRng::seeded(7)),
    }
}

/// A store that refuses on demand, an approving issuer (that fails the disk while it decides,
/// with `fail_disk`), and the engine over both.
fn setup(fail_disk: bool) -> (Arc<Refusing>, Arc<Approver>, Engine) {
    let store = Arc::new(Refusing {
        inner: SqliteStore::in_memory().expect("store"),
        refuse: AtomicBool::new(false),
        held: std::sync::Mutex::new(false),
        released: std::sync::Condvar::new(),
        holding: AtomicBool::new(false),
    });
    let issuer = Arc::new(Approver {
        name: Arc::from("issuer-a"),
        spec: Spec::builtin("network").expect("spec").clone(),
        seen: AtomicUsize::new(0),
        fail_disk: fail_disk.then(|| store.clone()),
        mtis: Default::default(),
    });
    let e = engine(store.clone(), issuer.clone());
    (store, issuer, e)
}

async fn call(e: &Engine, stan: u32, atc: u16) -> String {
    let req = purchase(stan, 1_000, atc);
    let raw = req.encode().expect("encode");
    match e.handle(&listener(), &local(), &raw, req).await {
        Outcome::Answer { msg, .. } => msg.text(39).map(|c| c.into_owned()).unwrap_or_default(),
        Outcome::Nothing => "none".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_leaves_only_with_its_row_and_a_refusing_disk_stops_authorizations() {
    let (store, issuer, e) = setup(false);

    assert_eq!(call(&e, 1, 1).await, "00");
    assert_eq!(store.journal_count().expect("count"), 1, "the row is in the store when the answer leaves");

    // The disk refuses: the request in hand is not forwarded (its state cannot be made durable)
    // and is answered 96; the next ones are answered 96 at once.
    store.refuse.store(true, Ordering::Release);
    assert_eq!(call(&e, 2, 2).await, "96");
    assert!(!e.pipeline.state.healthy());
    assert_eq!(call(&e, 3, 3).await, "96");
    assert_eq!(issuer.seen.load(Ordering::SeqCst), 1, "nothing reached the issuer while the disk refused");
    assert_eq!(store.journal_count().expect("count"), 1);

    // The disk is back: the kept rows land, nothing lost, and authorizations resume.
    store.refuse.store(false, Ordering::Release);
    let mut waited = 0;
    while !e.pipeline.state.healthy() || store.journal_count().expect("count") < 3 {
        assert!(waited < 100, "the kept rows were not written once the disk took commits again");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    let rows = store.journal_read(0, 100).expect("rows");
    let codes: Vec<_> = rows.iter().map(|r| r.response_code.clone().unwrap_or_default()).collect();
    assert!(codes.iter().filter(|c| *c == "96").count() >= 2, "the 96 answers have their rows: {codes:?}");
    assert_eq!(call(&e, 4, 4).await, "00");
    assert_eq!(issuer.seen.load(Ordering::SeqCst), 2);
}

/// The issuer approved, then the disk failed before the answer's row was durable: the terminal
/// hears 96 — and the issuer must not keep an approval nobody was told of. The switch reverses it
/// at once (0420 pointing at the original), since the store that would queue it is the one failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_the_journal_cannot_keep_is_answered_96_and_reversed_at_the_issuer() {
    let (_store, issuer, e) = setup(true);
    assert_eq!(call(&e, 7, 1).await, "96");
    let seen = issuer.mtis.lock().expect("mtis").clone();
    assert_eq!(seen.len(), 2, "the authorization, then its reversal: {seen:?}");
    assert_eq!(seen[0].0, "0100");
    assert_eq!(seen[1].0, "0420", "{seen:?}");
    let de90 = seen[1].1.clone().expect("DE 90 names the original");
    assert!(de90.starts_with("0100000007"), "original MTI and STAN in DE 90: {de90}");
}

/// A store-and-forward row that does not open (sealed under a key the node does not have, or not
/// sealed at all) is moved to quarantine by the issuer's SAF worker, and the quarantine is
/// counted in `paynet_saf_quarantined_total`; nothing of it reaches the issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saf_row_that_does_not_open_is_quarantined_and_counted() {
    use tokio::io::AsyncReadExt;
    let store = Arc::new(SqliteStore::in_memory().expect("store"));
    let sealer = |k: u8| {
        Arc::new(Sealer::new(1, &crypto::keys::AesKey::from_slice(&[k; 32]).expect("key")).expect("sealer"))
    };
    let saf = Arc::new(SafQueue::new(store.clone(), sealer(4), RetryPolicy::default(), "issuer-a"));
    // Sealed under another node's key, and garbage: neither opens here.
    let foreign = SafQueue::new(store.clone(), sealer(5), RetryPolicy::default(), "issuer-a");
    foreign
        .enqueue(SafKind::Advice, "400001|TERM0001|0100|000001|1204101010", b"0120", 1_000, [1; 12])
        .expect("put");
    store
        .saf_put(NewSafEntry {
            kind: SafKind::Reversal,
            link: "issuer-a",
            original_key: "400001|TERM0001|0100|000002|1204101010",
            sealed: b"not sealed at all",
            now_ms: 1_000,
        })
        .expect("put");

    // The issuer: a connection that is up and hears whatever the worker sends.
    let issuer = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = issuer.local_addr().expect("addr").port();
    let heard = Arc::new(AtomicUsize::new(0));
    let ears = heard.clone();
    let server = tokio::spawn(async move {
        let (mut s, _) = issuer.accept().await.expect("accept");
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            ears.fetch_add(n, Ordering::SeqCst);
        }
    });
    let metrics = Arc::new(Metrics::new("t"));
    let stop = tokio_util::sync::CancellationToken::new();
    let pool = IssuerPool::start(
        crate::issuer::LinkSettings {
            name: Arc::from("issuer-a"),
            addrs: vec![format!("127.0.0.1:{port}")],
            connections: 1,
            spec: Spec::builtin("network").expect("spec").clone(),
            framing: codecs::framing::FramingKind::Binary2,
            timeout: std::time::Duration::from_secs(5),
            echo_interval: std::time::Duration::from_secs(3600),
            sign_on: false,
            tls: None,
            mac: None,
        },
        metrics.clone(),
        stop.clone(),
    );
    let wake = Arc::new(tokio::sync::Notify::new());
    let resets = Arc::new(AtomicUsize::new(0));
    let counted = resets.clone();
    let worker = tokio::spawn(saf_worker(
        SafWorker {
            issuer: pool,
            saf: saf.clone(),
            wake: wake.clone(),
            clock: Arc::new(crate::clock::ManualClock(AtomicU64::new(1_795_000_000_000))),
            entropy: Arc::new(testkit::TestRng::seeded(7)),
            metrics: metrics.clone(),
        },
        move || {
            counted.fetch_add(1, Ordering::SeqCst);
        },
        stop.clone(),
    ));
    let quarantined = || metrics.saf_quarantined.with_label_values(&["issuer-a"]).get();
    let mut rounds = 0;
    while saf.quarantined().expect("quarantined") < 2 {
        assert!(rounds < 600, "the rows were not quarantined");
        wake.notify_one();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        rounds += 1;
    }
    assert_eq!(quarantined(), 2, "each quarantined row is counted");
    assert_eq!(saf.pending().expect("pending"), 0, "out of the queue");
    assert_eq!(heard.load(Ordering::SeqCst), 0, "nothing of them reached the issuer");
    assert_eq!(resets.load(Ordering::SeqCst), 0, "no advice was delivered: the stand-in totals stay");
    stop.cancel();
    worker.await.expect("worker");
    server.abort();
}

/// A reversal read while its original's newest version is being committed (taken from the
/// uncommitted writes, not yet in the store) sees that version, not the one the store still has.
#[tokio::test]
async fn an_original_being_committed_reads_as_its_newest_version() {
    let (store, _issuer, e) = setup(false);
    let book = e.pipeline.state.clone();
    let record = |settled_minor| OriginalRecord {
        key: "400001|TERM0001|0100|000001|1205101010".into(),
        card: "fp16".into(),
        amount_minor: 1_000,
        currency: "978".into(),
        response_code: Some("00".into()),
        issuer: "issuer-a".into(),
        settled_minor,
        at_ms: 1,
    };
    let key = record(0).key;
    let settled = |r: Result<Option<OriginalRecord>>| r.expect("read").map(|o| o.settled_minor);
    book.record_original(record(0));
    book.sync().await.expect("durable");
    // A reversal of 400 recorded; its commit held in the store.
    store.hold(true);
    book.record_original(record(400));
    let b = book.clone();
    let commit = tokio::spawn(async move { b.sync().await });
    for _ in 0..400 {
        if store.holding.load(Ordering::Acquire) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(store.holding.load(Ordering::Acquire), "the writer is committing");
    assert_eq!(settled(store.inner.original_get(&key)), Some(0), "the store has the older version");
    assert_eq!(settled(book.original(&key)), Some(400));
    store.hold(false);
    commit.await.expect("joined").expect("durable");
    assert_eq!(settled(store.inner.original_get(&key)), Some(400));
    assert_eq!(settled(book.original(&key)), Some(400));
}

/// A transaction recorded just before a commit is readable while that commit is in progress
/// (shared with it, not copied), still readable when the commit fails and its writes are put
/// back — a newer version recorded meanwhile winning over the one put back — and in the store
/// once a commit succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_is_read_during_its_commit_after_a_failed_one_and_once_durable() {
    let (store, _issuer, e) = setup(false);
    let book = e.pipeline.state.clone();
    let rec = |code: Option<&str>, settled: u64| OriginalRecord {
        key: "A1|T1|0100|000001|1205101010".into(),
        card: "fp".into(),
        amount_minor: 1_000,
        currency: "978".into(),
        response_code: code.map(str::to_string),
        issuer: "issuer-a".into(),
        settled_minor: settled,
        at_ms: 1,
    };
    let read = |book: &Arc<crate::state::StateBook>| {
        let b = book.clone();
        async move {
            tokio::task::spawn_blocking(move || b.original("A1|T1|0100|000001|1205101010"))
                .await
                .expect("read")
                .expect("store")
        }
    };
    store.hold(true);
    book.record_original(rec(None, 0));
    let first = tokio::spawn({
        let b = book.clone();
        async move { b.sync().await }
    });
    while !store.holding.load(Ordering::Acquire) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(read(&book).await, Some(rec(None, 0)), "read from the commit in progress");
    // A newer version comes while that commit is held, and the commit fails.
    book.record_original(rec(Some("00"), 0));
    store.refuse.store(true, Ordering::Release);
    store.hold(false);
    assert!(first.await.expect("joined").is_err(), "the commit failed");
    assert_eq!(read(&book).await, Some(rec(Some("00"), 0)), "the newer version, not the one put back");
    assert_eq!(store.original_get("A1|T1|0100|000001|1205101010").expect("store"), None);
    store.refuse.store(false, Ordering::Release);
    book.sync().await.expect("durable");
    assert_eq!(store.original_get("A1|T1|0100|000001|1205101010").expect("store"), Some(rec(Some("00"), 0)));
    assert_eq!(read(&book).await, Some(rec(Some("00"), 0)));
}
