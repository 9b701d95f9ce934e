//! The token service's PostgreSQL store against a real database (each test in a schema of its
//! own): vault rows put once, read one by one, by card and all together, status changed only from
//! the status the writer saw, PANs re-sealed, limited-use key batches replaced only after the one
//! they follow; every change announced to the other nodes' listeners, whose vaults then read the
//! token again (a token suspended on one node is refused by the other), and a listener that loses
//! its connection says so and listens again. Skipped without a database unless
//! `PAYNET_REQUIRE_POSTGRES=1`.

mod common;

use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use common::Db;
use crypto::AesKey;
use crypto::seal::Sealer;
use switch::store::postgres_tokens::{Change, PgTokenStore};
use tsp::luk::{LukRegistry, LukStore, StoredBatch};
use tsp::vault::VaultStore;
use tsp::{DomainControls, NewToken, TokenRecord, TokenStatus, TokenVault};
use zeroize::Zeroizing;

const PAN: &str = "4761739001010010";

impl Db {
    /// One node's token store.
    fn node(&self, node: &str) -> Arc<PgTokenStore> {
        Arc::new(PgTokenStore::open(&self.node_opts(node)).expect("open the token store"))
    }
}

fn record(token: &str, fp: &str) -> TokenRecord {
    TokenRecord {
        token: token.into(),
        pan_sealed: vec![1, 2, 3],
        pan_fingerprint: fp.into(),
        par: "V0011234567890123456789012345".into(),
        expiry: "2912".into(),
        status: TokenStatus::Inactive,
        domain: DomainControls {
            entry_modes: vec!["07".into()],
            transaction_types: vec!["00".into(), "01".into()],
            requestor_id: "40010030273".into(),
        },
        created_ms: 1_000,
    }
}

/// The changes a listener reports.
fn listener(store: &PgTokenStore) -> Receiver<Change> {
    let (tx, rx) = channel();
    store
        .listen(move |c| {
            let _ = tx.send(c);
        })
        .expect("listen");
    rx
}

/// The next change reported (waiting at most 20 s: a bound for a stuck test, not a timing check).
fn next(rx: &Receiver<Change>) -> Change {
    rx.recv_timeout(Duration::from_secs(20)).expect("a change is reported")
}

/// Waits until `rx` reports `want`, skipping the others.
fn until(rx: &Receiver<Change>, want: &Change) {
    while next(rx) != *want {}
}

#[test]
fn vault_rows_and_batches_round_trip_with_their_guards() {
    let Some(db) = Db::new("token_store_rows") else { return };
    let s = db.node("a");
    assert!(VaultStore::shared(s.as_ref()) && LukStore::shared(s.as_ref()));
    let (t1, t2) = ("4895370000000013", "4895370000000021");
    s.vault_put(&record(t1, "FP1")).expect("put");
    s.vault_put(&record(t2, "FP1")).expect("put");
    assert!(matches!(s.vault_put(&record(t1, "FP9")), Err(tsp::Error::Exists)), "put once");
    // Read one, by card, all.
    assert_eq!(s.vault_get(t1).expect("get"), Some(record(t1, "FP1")));
    assert_eq!(s.vault_get("4895370000000039").expect("get"), None);
    let mut by_card: Vec<String> =
        s.vault_of_fingerprint("FP1").expect("by card").into_iter().map(|r| r.token).collect();
    by_card.sort();
    assert_eq!(by_card, [t1, t2]);
    assert!(s.vault_of_fingerprint("FP2").expect("by card").is_empty());
    assert_eq!(s.vault_all().expect("all").len(), 2);
    // The status changes only from the one the writer saw.
    assert!(s.vault_set_status(t1, TokenStatus::Inactive, TokenStatus::Active).expect("status"));
    assert!(!s.vault_set_status(t1, TokenStatus::Inactive, TokenStatus::Deleted).expect("status"), "stale");
    assert!(
        !s.vault_set_status("4895370000000039", TokenStatus::Inactive, TokenStatus::Active).expect("unknown")
    );
    assert_eq!(s.vault_get(t1).expect("get").map(|r| r.status), Some(TokenStatus::Active));
    // Re-sealed.
    s.vault_set_sealed(t2, &[9, 9]).expect("re-seal");
    assert_eq!(s.vault_get(t2).expect("get").map(|r| r.pan_sealed), Some(vec![9, 9]));
    // Another node's store reads the same rows.
    let other = db.node("b");
    assert_eq!(other.vault_get(t1).expect("get").map(|r| r.status), Some(TokenStatus::Active));

    // Batches: the first only where there is none, the next only after the one it follows.
    let batch =
        |first: u16| StoredBatch { first_atc: first, count: 10, expires_ms: 5_000, device_key: vec![4; 65] };
    assert!(s.luk_put(t1, None, &batch(1)).expect("first batch"));
    assert!(!other.luk_put(t1, None, &batch(1)).expect("a second first batch"), "refused");
    assert!(other.luk_put(t1, Some(1), &batch(11)).expect("next batch"));
    assert!(!s.luk_put(t1, Some(1), &batch(11)).expect("stale"), "it no longer follows the stored batch");
    assert_eq!(s.luk_get(t1).expect("get"), Some(batch(11)));
    assert_eq!(s.luk_get(t2).expect("get"), None);
    assert_eq!(s.luk_all().expect("all"), vec![(t1.to_string(), batch(11))]);
    // The registry over the shared store follows the batch another node issued.
    let reg = LukRegistry::persistent(s.clone(), 10, 1_000).expect("registry");
    let next_batch = reg.issue(t1, &[4; 65], 10).expect("store").expect("batch");
    assert_eq!(next_batch.first_atc, 21);
    assert!(reg.permits(t1, 21, 20).expect("read") && !reg.permits(t1, 11, 20).expect("read"));
    assert!(reg.permits(t2, 1, 20).expect("read"), "not a cloud token: no limited-use key needed");
}

fn vault(store: Arc<PgTokenStore>) -> Arc<TokenVault> {
    let sealer = Sealer::new(1, &AesKey::from_slice(&[3; 32]).expect("aes")).expect("sealer");
    Arc::new(TokenVault::open(store, sealer, Zeroizing::new(vec![9; 32])).expect("vault"))
}

/// Node `b`'s vault, kept fresh by its listener as the node does; the changes are also passed on
/// to the returned receiver.
fn listening_vault(store: Arc<PgTokenStore>) -> (Arc<TokenVault>, Receiver<Change>) {
    let v = vault(store.clone());
    let (tx, rx) = channel();
    let fresh = v.clone();
    store
        .listen(move |c| {
            match &c {
                Change::Token(t) => fresh.evict(t),
                Change::Listening => fresh.set_live(true),
                Change::Lost => fresh.set_live(false),
            }
            let _ = tx.send(c);
        })
        .expect("listen");
    (v, rx)
}

#[test]
fn changes_on_one_node_reach_the_others_vault() {
    let Some(db) = Db::new("token_store_notify") else { return };
    let (a, b) = (db.node("a"), db.node("b"));
    let va = vault(a.clone());
    let (vb, changes) = listening_vault(b.clone());
    until(&changes, &Change::Listening);
    let token = "4895370000000013";
    assert!(vb.get(token).is_none(), "unknown yet (and remembered as absent)");
    let domain = DomainControls {
        entry_modes: vec!["07".into()],
        transaction_types: vec!["00".into()],
        requestor_id: "40010030273".into(),
    };
    let new = NewToken { token, pan: PAN, pan_expiry: "2812", par: "P1", expiry: "2912", domain };
    va.insert(new, 1, [1; 12]).expect("issue on node a");
    until(&changes, &Change::Token(token.into()));
    // Node b reads the token node a issued, and opens its PAN with the network's key.
    let rec = vb.get(token).expect("issued on the other node");
    assert_eq!(vb.pan(&rec).expect("opens").as_str(), PAN);
    assert_eq!(vb.tokens_of(PAN).len(), 1);
    va.set_status(token, TokenStatus::Active).expect("activate");
    until(&changes, &Change::Token(token.into()));
    assert_eq!(vb.get(token).map(|r| r.status), Some(TokenStatus::Active), "cached on node b now");
    // Suspended on node a: node b's cached copy is evicted, and node b sees the suspension.
    va.set_status(token, TokenStatus::Suspended).expect("suspend");
    until(&changes, &Change::Token(token.into()));
    assert_eq!(vb.get(token).map(|r| r.status), Some(TokenStatus::Suspended));
    // A lifecycle change decided on node b's stale view is checked against the stored status.
    assert_eq!(vb.set_status(token, TokenStatus::Active).map(|r| r.status).ok(), Some(TokenStatus::Active));
    until(&changes, &Change::Token(token.into()));
    assert!(va.set_status(token, TokenStatus::Deleted).is_ok());
    assert!(
        matches!(
            vb.set_status(token, TokenStatus::Suspended),
            Err(tsp::Error::Lifecycle { from: "deleted", .. })
        ),
        "node b decides on the stored status, not on its cache"
    );
}

#[test]
fn a_lost_listener_says_so_and_listens_again() {
    let Some(db) = Db::new("token_store_lost") else { return };
    let (a, b) = (db.node("a"), db.node("lost-b"));
    let changes = listener(&b);
    assert_eq!(next(&changes), Change::Listening);
    // The database ends node b's listening connection (as a restart or a network cut would).
    let url = db.opts.url.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let ended: i64 = rt.block_on(async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        let row = c
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'paynet-lost-b/listener'",
                &[],
            )
            .await
            .expect("terminate");
        row.get(0)
    });
    assert_eq!(ended, 1, "one listening connection");
    assert_eq!(next(&changes), Change::Lost);
    until(&changes, &Change::Listening);
    // Listening again: a change on node a reaches it.
    a.vault_put(&record("4895370000000021", "FP1")).expect("put");
    until(&changes, &Change::Token("4895370000000021".into()));
}

#[test]
fn a_step_up_begun_on_one_node_is_completed_on_another_and_its_card_is_sealed() {
    use tsp::pending::{Pending, PendingBook, PendingStore};
    let Some(db) = Db::new("token_store_pending") else { return };
    let (a, b) = (db.node("a"), db.node("b"));
    let (book_a, book_b) = (
        PendingBook::shared(a.clone(), vault(a.clone()), 3, 60_000),
        PendingBook::shared(b.clone(), vault(b.clone()), 3, 60_000),
    );
    let step_up = |request: &str| Pending {
        requestor: "40010030273".into(),
        pan: Zeroizing::new(PAN.into()),
        expiry: "2812".into(),
        device_key: vec![4; 65],
        entry_modes: vec!["07".into(), "81".into()],
        request_id: request.into(),
    };
    book_a.insert("000000000001".into(), step_up("r1"), 1_000, [1; 12]).expect("record");
    // Node b completes it: the card opens there.
    let p = book_b.get("000000000001", 2_000).expect("read").expect("pending");
    assert_eq!((p.pan.as_str(), p.expiry.as_str(), p.request_id.as_str()), (PAN, "2812", "r1"));
    assert_eq!(p.entry_modes, ["07", "81"]);
    // The row holds no clear PAN nor expiry, and moved onto another id it does not open.
    let row = b.pending_get("000000000001", 0).expect("read").expect("row");
    let sealed = String::from_utf8_lossy(&row.sealed).to_string();
    assert!(!sealed.contains(PAN) && !hex::encode(&row.sealed).contains(PAN), "sealed");
    b.pending_put(&tsp::pending::StoredPending { id: "000000000009".into(), ..row }, 0, 10).expect("moved");
    assert!(book_b.get("000000000009", 2_000).is_err(), "a moved row is an error, never a card");
    book_b.remove("000000000009").expect("remove");
    // Too old: gone; over the bound: the oldest go.
    assert!(book_a.get("000000000001", 61_001).expect("read").is_none(), "expired");
    for (i, at) in [(2, 2_000), (3, 3_000), (4, 4_000)] {
        book_a.insert(format!("00000000000{i}"), step_up("r"), at, [i as u8; 12]).expect("record");
    }
    assert_eq!(book_b.len(4_000).expect("count"), 3, "at the bound");
    assert!(book_b.get("000000000001", 4_000).expect("read").is_none(), "the oldest went");
    book_b.remove("000000000004").expect("completed");
    assert_eq!(book_a.len(4_000).expect("count"), 2);
    book_a.set_limits(1, 60_000, 4_000).expect("limits");
    assert_eq!(book_b.len(4_000).expect("count"), 1, "trimmed to the new bound");
}

#[test]
fn an_answer_given_on_one_node_is_given_again_on_another_sealed_bounded_and_aged() {
    use tsp::ProvisionOutcome;
    use tsp::answered::{AnsweredBook, AnsweredStore, StoredAnswer};
    let Some(db) = Db::new("token_store_answered") else { return };
    let (a, b) = (db.node("a"), db.node("b"));
    let (book_a, book_b) = (
        AnsweredBook::shared(a.clone(), vault(a.clone()), 3, 60_000),
        AnsweredBook::shared(b.clone(), vault(b.clone()), 3, 60_000),
    );
    const REQUESTOR: &str = "40010030273";
    let approved = ProvisionOutcome::Approved {
        token_ref: "tr_0011223344556677".into(),
        token_last4: "0019".into(),
        token_expiry: "2812".into(),
        par: "Q1J4AWSCZWKZW8T7QKN4VT7PQ2F21".into(),
        encrypted_token_data: "04aabbcc".into(),
    };
    let step_up = ProvisionOutcome::OtpRequired { provisioning_id: "000000000001".into() };
    book_a.insert(REQUESTOR, "r1", &step_up, 1_000, [1; 12]).expect("record");
    assert_eq!(book_b.get(REQUESTOR, "r1", 2_000).expect("read"), Some(step_up), "node b repeats it");
    assert_eq!(book_b.get("40010030274", "r1", 2_000).expect("read"), None, "another requestor's");
    // The step-up completed on node b: its answer replaces the earlier one, on every node.
    book_b.insert(REQUESTOR, "r1", &approved, 2_000, [2; 12]).expect("record");
    assert_eq!(book_a.get(REQUESTOR, "r1", 3_000).expect("read"), Some(approved.clone()));
    // The row names no token reference in clear, and moved onto another request it does not open.
    let row = b.answered_get(REQUESTOR, "r1", 0).expect("read").expect("row");
    assert!(!String::from_utf8_lossy(&row.sealed).contains("tr_0011223344556677"), "sealed");
    b.answered_put(&StoredAnswer { request_id: "r9".into(), ..row }, 0, 10).expect("moved");
    assert!(book_a.get(REQUESTOR, "r9", 3_000).is_err(), "a moved row is an error, never an answer");
    // Too old: gone; over the bound: the oldest go.
    assert_eq!(book_a.get(REQUESTOR, "r1", 62_001).expect("read"), None, "expired");
    for (i, at) in [(2u8, 3_000), (3, 4_000), (4, 5_000)] {
        let o = ProvisionOutcome::Declined { response_code: format!("0{i}") };
        book_a.insert(REQUESTOR, &format!("r{i}"), &o, at, [i; 12]).expect("record");
    }
    assert_eq!(book_b.len(5_000).expect("count"), 3, "at the bound");
    assert_eq!(book_b.get(REQUESTOR, "r1", 5_000).expect("read"), None, "the oldest went");
    assert_eq!(
        book_b.get(REQUESTOR, "r4", 5_000).expect("read"),
        Some(ProvisionOutcome::Declined { response_code: "04".into() })
    );
    book_a.set_limits(1, 60_000, 5_000).expect("limits");
    assert_eq!(book_b.len(5_000).expect("count"), 1, "trimmed to the new bound");
}
