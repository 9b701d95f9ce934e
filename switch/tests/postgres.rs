//! The PostgreSQL store against a real database (`DATABASE_URL`, else the local one; each test in
//! a schema of its own): the journal, the SAF queue leased by one node at a time and taken over
//! when a lease runs out, ATC claims decided once across nodes, state reloaded, migrations applied
//! once. Skipped without a database unless `PAYNET_REQUIRE_POSTGRES=1`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use common::Db;
use switch::records::{OriginalRecord, StandInTotal, StateWrites};
use switch::state::StateBook;
use switch::store::postgres::PgStore;
use switch::store::{Direction, JournalRow, NewSafEntry, SafKind, Store};

impl Db {
    fn node(&self, node: &str) -> PgStore {
        PgStore::open(&self.node_opts(node)).expect("open the store")
    }
}

fn row(i: u64, fp: &str) -> JournalRow {
    JournalRow {
        at_ms: 1000 + i,
        direction: Direction::AcquirerExchange,
        mti: "0100".into(),
        stan: Some(format!("{i:06}")),
        rrn: None,
        terminal_id: Some("TERM0001".into()),
        pan_masked: Some("476173******0011".into()),
        pan_fingerprint: Some(fp.into()),
        amount_minor: Some(1000 + i),
        currency: Some("978".into()),
        response_code: if i.is_multiple_of(2) { Some("00".into()) } else { None },
        route: Some("issuer-a".into()),
        latency_us: None,
        message_masked: format!("{{\"i\":{i}}}"),
        message_packed: None,
    }
}

#[test]
fn journal_rows_and_decision_state_round_trip_and_migrations_apply_once() {
    let Some(db) = Db::new("journal_round_trip") else { return };
    let s = db.node("a");
    let rows: Vec<_> = (0..300).map(|i| row(i, if i.is_multiple_of(3) { "AA" } else { "BB" })).collect();
    s.journal_append(&rows[..100]).expect("append");
    let mut w = StateWrites { journal: rows[100..].to_vec(), ..StateWrites::default() };
    w.windows.insert("CARD1".into(), switch::records::AtcWindow { highest: Some(77), below: vec![5] });
    let total = StandInTotal { total_minor: 4_500, since_ms: 7 };
    w.totals.insert(("issuer-a".into(), "CARD1".into()), Some(total));
    w.totals.insert(("issuer-a".into(), "CARD2".into()), None);
    let original = OriginalRecord {
        key: "400001|TERM0001|0100|000001|1125101010".into(),
        card: "CARD1".into(),
        amount_minor: 1234,
        currency: "978".into(),
        response_code: None,
        issuer: "issuer-a".into(),
        settled_minor: 0,
        at_ms: 5,
    };
    w.originals.insert(original.key.clone(), original.clone());
    assert!(s.state_commit(&w).expect("commit").lost.is_empty());
    assert_eq!(s.journal_count().expect("count"), 300);
    assert_eq!(s.journal_read(0, 300).expect("read"), rows, "insertion order, every column");
    assert_eq!(s.journal_read(250, 10).expect("read"), rows[250..260].to_vec());
    let aa = s.journal_by_card("AA", 1000).expect("by card");
    assert_eq!(aa.len(), 100);
    assert!(aa.iter().all(|r| r.pan_fingerprint.as_deref() == Some("AA")));
    assert_eq!(
        s.journal_by_card("AA", 3).expect("by card"),
        vec![rows[0].clone(), rows[3].clone(), rows[6].clone()]
    );

    // Another node over the same schema (migrations found applied) sees the same state.
    let t = db.node("b");
    // The windows stay each node's own view: the shared store decides by ATC claims.
    assert!(t.atc_windows_load(u64::MAX).expect("windows").is_empty());
    assert_eq!(t.standin_totals_load().expect("totals"), vec![("issuer-a".into(), "CARD1".into(), total)]);
    assert_eq!(t.original_get(&original.key).expect("original"), Some(original.clone()));
    assert_eq!(t.original_get("nothing").expect("original"), None);
    let settled =
        OriginalRecord { settled_minor: 1234, response_code: Some("00".into()), ..original.clone() };
    let mut w2 = StateWrites::default();
    w2.originals.insert(settled.key.clone(), settled.clone());
    t.state_commit(&w2).expect("commit");
    assert_eq!(s.original_get(&original.key).expect("original"), Some(settled), "upserted by key");
}

#[test]
fn saf_entries_are_leased_by_one_node_and_taken_over_when_the_lease_runs_out() {
    let Some(db) = Db::new("saf_lease") else { return };
    let (a, b) = (db.node("node-a"), db.node("node-b"));
    let put = |s: &PgStore, i: usize, now| {
        s.saf_put(NewSafEntry {
            kind: SafKind::Reversal,
            link: "issuer-a",
            original_key: &format!("TERM0001:{i:06}"),
            sealed: b"sealed",
            now_ms: now,
        })
        .expect("put")
    };
    let ids: Vec<i64> = (0..5).map(|i| put(&a, i, 100)).collect();
    assert_eq!(put(&b, 0, 200), ids[0], "the same original and kind is one entry, whichever node queues it");
    assert_eq!(a.saf_pending(Some("issuer-a")).expect("pending"), 5);

    let leased = a.saf_due("issuer-a", 1_000, 3).expect("due");
    assert_eq!(leased.iter().map(|e| e.id).collect::<Vec<_>>(), ids[..3]);
    let rest = b.saf_due("issuer-a", 1_000, 10).expect("due");
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), ids[3..], "node b skips what node a holds");
    let own = a.saf_due("issuer-a", 1_000, 10).expect("due");
    assert_eq!(
        own.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[..3],
        "a node takes its own leases again, not others'"
    );

    // Node a dies holding ids[0..3]: once the lease runs out, node b delivers them.
    let later = 1_000 + switch::store::postgres::DEFAULT_LEASE_MS;
    assert!(b.saf_due("issuer-a", later - 1, 10).expect("due").iter().all(|e| !ids[..3].contains(&e.id)));
    let taken = b.saf_due("issuer-a", later, 10).expect("due");
    assert_eq!(taken.iter().map(|e| e.id).collect::<Vec<_>>(), ids, "every entry, node a's too");
    for e in &taken[..4] {
        b.saf_done(e.id).expect("done");
    }
    b.saf_reschedule(ids[4], 1, later + 5_000).expect("reschedule");
    assert!(a.saf_due("issuer-a", later + 4_999, 10).expect("due").is_empty());
    let again = a.saf_due("issuer-a", later + 5_000, 10).expect("due");
    assert_eq!((again.len(), again[0].attempts), (1, 1), "a rescheduled entry is free for any node");
    a.saf_quarantine(ids[4], "does not open", later).expect("quarantine");
    assert_eq!(a.saf_pending(None).expect("pending"), 0);
    assert_eq!(b.saf_quarantined("issuer-a").expect("quarantined"), 1);
    a.saf_done(ids[4]).expect("removing an absent entry is not an error");
}

#[test]
fn concurrent_nodes_lease_each_entry_once() {
    let Some(db) = Db::new("saf_concurrent") else { return };
    let nodes: Vec<Arc<PgStore>> = (0..6).map(|i| Arc::new(db.node(&format!("node-{i}")))).collect();
    for i in 0..200 {
        nodes[i % 3]
            .saf_put(NewSafEntry {
                kind: SafKind::Advice,
                link: "issuer-a",
                original_key: &format!("K{i}"),
                sealed: b"x",
                now_ms: 1,
            })
            .expect("put");
    }
    let start = Arc::new(Barrier::new(6));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (s, start) = (nodes[w].clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut mine = Vec::new();
                loop {
                    let due = s.saf_due("issuer-a", 10, 7).expect("due");
                    if due.is_empty() {
                        return mine;
                    }
                    for e in due {
                        s.saf_done(e.id).expect("done");
                        mine.push(e.id);
                    }
                }
            })
        })
        .collect();
    let mut seen = HashMap::new();
    for w in workers {
        for id in w.join().expect("worker") {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 200, "every entry delivered");
    assert!(seen.values().all(|n| *n == 1), "none delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atc_is_accepted_once_across_nodes() {
    let Some(db) = Db::new("atc_claims") else { return };
    let books: Vec<_> = (0..3)
        .map(|i| {
            let store: Arc<dyn Store> = Arc::new(db.node(&format!("node-{i}")));
            StateBook::open(store).expect("book")
        })
        .collect();
    // Every node accepts ATCs 1..=40 of one card in its own window; after the commits, each ATC
    // was won by exactly one node.
    let mut claims = Vec::new();
    for atc in 1..=40u32 {
        for (i, (book, _)) in books.iter().enumerate() {
            let claim = book
                .accept_atc("CARD", atc, 256, 1)
                .expect("new to this node")
                .expect("a shared store claims");
            claims.push((atc, i, claim));
        }
    }
    let syncs = books.iter().map(|(b, _)| b.sync());
    for r in futures_util::future::join_all(syncs).await {
        r.expect("durable");
    }
    for atc in 1..=40u32 {
        let won = claims.iter().filter(|(a, _, c)| *a == atc && !c.lost()).count();
        assert_eq!(won, 1, "ATC {atc} won {won} times");
    }
    // Too old: 40 is claimed, so 40 - 300 (beyond the window of 256) is refused anywhere.
    let (b0, _) = &books[0];
    let high = b0.accept_atc("CARD2", 400, 256, 1).expect("new").expect("claim");
    b0.sync().await.expect("durable");
    assert!(!high.lost());
    let (b1, _) = &books[1];
    let old = b1.accept_atc("CARD2", 100, 256, 1).expect("new to node 1").expect("claim");
    b1.sync().await.expect("durable");
    assert!(old.lost(), "an ATC further below another node's than the window reaches");
    for (book, writer) in books {
        drop(book);
        writer.finish();
    }
}

/// One commit of `claims` (card, ATC) with window `width`: which of them won.
fn claim(s: &PgStore, claims: &[(&str, u32)], width: u32) -> Vec<bool> {
    let mut w = StateWrites::default();
    for (card, atc) in claims {
        w.claims.push(switch::records::AtcClaim {
            card: card.to_string(),
            atc: *atc,
            width,
            at_ms: 1,
            lost: Arc::default(),
        });
    }
    let lost = s.state_commit(&w).expect("commit").lost;
    (0..claims.len()).map(|i| !lost.contains(&i)).collect()
}

/// The ATCs of `card` still in the `atc_claim` table, ascending.
fn claim_rows(db: &Db, card: &str) -> Vec<i32> {
    let sql = format!("SELECT atc FROM {}.atc_claim WHERE card = $1 ORDER BY atc", db.opts.schema);
    query(db, &sql, &[&card]).iter().map(|r| r.get(0)).collect()
}

/// The rows `sql` gives, on a connection of its own (not the store's).
fn query(
    db: &Db,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<tokio_postgres::Row> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&db.opts.url, tokio_postgres::NoTls).await.expect("connect");
        let task = tokio::spawn(conn);
        let rows = client.query(sql, params).await.expect("query");
        drop(client);
        let _ = task.await;
        rows
    })
}

/// Six nodes, each on its own connections, race claims of two cards around the highest ATC so
/// far: fresh ones, ones just below it and replays of ones already pruned. The claims of a card
/// are decided one after another across the nodes: no ATC is accepted twice (a pruned one
/// included), and no claim that began after a higher ATC's commit was durable is accepted when
/// it is further below it than the window.
#[test]
fn racing_nodes_accept_each_atc_once_and_never_one_below_a_durable_highest() {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    let Some(db) = Db::new("atc_race") else { return };
    const WIDTH: u32 = 64;
    const NODES: usize = 6;
    let nodes: Vec<Arc<PgStore>> = (0..NODES).map(|i| Arc::new(db.node(&format!("node-{i}")))).collect();
    let clock = Arc::new(AtomicU64::new(0));
    let highest = Arc::new([AtomicU32::new(WIDTH), AtomicU32::new(WIDTH)]);
    let start = Arc::new(Barrier::new(NODES));
    let workers: Vec<_> = (0..NODES)
        .map(|n| {
            let (s, clock, highest, start) =
                (nodes[n].clone(), clock.clone(), highest.clone(), start.clone());
            std::thread::spawn(move || {
                let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (n as u64 + 1);
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                // (card, ATC, began, durable) of every claim this node won.
                let mut won = Vec::new();
                start.wait();
                for _ in 0..150 {
                    let mut batch: Vec<(&str, u32)> = Vec::new();
                    for (c, card) in ["CARD-A", "CARD-B"].iter().enumerate() {
                        if c == 1 && next() % 2 == 0 {
                            continue;
                        }
                        let h = highest[c].load(Ordering::SeqCst);
                        // From twice the window below the highest (pruned replays) to a few above.
                        let atc = (h + 8).saturating_sub((next() % u64::from(2 * WIDTH + 8)) as u32);
                        batch.push((card, atc));
                    }
                    // Half the batches name the cards in the other order: the commits still never
                    // wait for each other in a circle.
                    if next() % 2 == 0 {
                        batch.reverse();
                    }
                    let began = clock.fetch_add(1, Ordering::SeqCst);
                    let results = claim(&s, &batch, WIDTH);
                    let durable = clock.fetch_add(1, Ordering::SeqCst);
                    for ((card, atc), ok) in batch.into_iter().zip(results) {
                        if ok {
                            let c = usize::from(card == "CARD-B");
                            highest[c].fetch_max(atc, Ordering::SeqCst);
                            won.push((card, atc, began, durable));
                        }
                    }
                }
                won
            })
        })
        .collect();
    let mut won = Vec::new();
    for w in workers {
        won.extend(w.join().expect("node"));
    }
    let mut seen = HashMap::new();
    for (card, atc, _, _) in &won {
        *seen.entry((*card, *atc)).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ATCs accepted more than once: {twice:?}");
    for card in ["CARD-A", "CARD-B"] {
        let mine: Vec<_> = won.iter().filter(|w| w.0 == card).collect();
        assert!(mine.len() > 50, "{card}: the race accepted {} claims", mine.len());
        for old in &mine {
            for high in &mine {
                assert!(
                    !(old.1 + WIDTH < high.1 && old.2 > high.3),
                    "{card}: ATC {} accepted after ATC {} was durable",
                    old.1,
                    high.1
                );
            }
        }
        // One more claim after the race: what is left of the card is its window, nothing below.
        let h = mine.iter().map(|w| w.1).max().expect("claims");
        assert_eq!(claim(&nodes[0], &[(card, h + 1)], WIDTH), vec![true]);
        let rows = claim_rows(&db, card);
        assert!(rows.iter().all(|a| *a as u32 + WIDTH > h), "{card}: claims below the window kept: {rows:?}");
        assert!(rows.len() as u32 <= WIDTH + 1, "{card}: {} claims kept", rows.len());
    }
}

/// Claims below a card's window are deleted by the commits of the card, a bounded number each
/// time; a deleted ATC is still refused (it is too old), and so is one the window never reached.
#[test]
fn claims_below_the_window_are_pruned_in_bounded_batches_and_stay_refused() {
    let Some(db) = Db::new("atc_prune") else { return };
    let (a, b) = (db.node("node-a"), db.node("node-b"));
    for atc in 1..=300u32 {
        assert_eq!(claim(if atc % 2 == 0 { &a } else { &b }, &[("CARD", atc)], 64), vec![true]);
    }
    assert_eq!(claim_rows(&db, "CARD"), (236..=300).collect::<Vec<i32>>(), "the window only");
    assert_eq!(claim(&a, &[("CARD", 10)], 64), vec![false], "a pruned ATC is refused");
    assert_eq!(claim(&b, &[("CARD", 250)], 64), vec![false], "one still claimed is refused");
    assert_eq!(claim(&b, &[("CARD", 235)], 64), vec![false], "just below the window");
    assert_eq!(claim(&b, &[("CARD", 320)], 64), vec![true], "beyond the highest");
    assert_eq!(claim(&a, &[("CARD", 255)], 64), vec![false], "below the new window");
    assert_eq!(claim(&a, &[("CARD", 310)], 64), vec![true], "in the window, unclaimed");
    assert_eq!(claim_rows(&db, "CARD"), (256..=300).chain([310, 320]).collect::<Vec<i32>>());

    // A card with a long history (claims of an earlier version, never pruned): each commit of
    // the card deletes a bounded batch, until only the window is left.
    let backlog = 2 * switch::store::postgres::PRUNE_CLAIMS_PER_COMMIT as u32 + 500;
    let old: Vec<(&str, u32)> = (1..=backlog).map(|atc| ("LONG", atc)).collect();
    assert!(claim(&a, &old, u32::from(u16::MAX)).iter().all(|w| *w), "a window as wide as the ATCs");
    let mut left = claim_rows(&db, "LONG").len() as u32;
    assert_eq!(left, backlog);
    let mut atc = backlog;
    while left > 65 {
        atc += 1;
        assert_eq!(claim(&b, &[("LONG", atc)], 64), vec![true]);
        let now = claim_rows(&db, "LONG").len() as u32;
        let batch = switch::store::postgres::PRUNE_CLAIMS_PER_COMMIT as u32;
        assert!(now + batch + 1 >= left, "at most one batch deleted: {left} then {now}");
        assert!(now < left, "some deleted: {left} then {now}");
        left = now;
    }
    assert_eq!(atc, backlog + 3, "three commits: two full batches, then the rest");
    assert_eq!(claim_rows(&db, "LONG"), ((atc - 64) as i32..=atc as i32).collect::<Vec<_>>());
}

#[test]
fn check_config_reaches_the_database_and_migrates_it() {
    let Some(db) = Db::new("check_config") else { return };
    let bin = env!("CARGO_BIN_EXE_switch");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/switch.toml");
    let text = std::fs::read_to_string(sample).expect("sample config");
    let dir = tempfile::tempdir().expect("tempdir");
    let with_store = |url: &str| {
        let cfg = text.replace(
            "# url = \"postgres://postgres@127.0.0.1:5432/paynet\"\nschema = \"paynet\"",
            &format!("url = \"{url}\"\nschema = \"{}\"", db.opts.schema),
        );
        assert_ne!(cfg, text, "the sample's [store] section");
        let path = dir.path().join("switch.toml");
        std::fs::write(&path, cfg).expect("write");
        std::process::Command::new(bin)
            .args(["--config", path.to_str().expect("path"), "--check-config"])
            .output()
            .expect("run")
    };
    let out = with_store(&db.opts.url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(db.node("ops").journal_count().expect("the tables exist"), 0);

    // A database that is not there is a problem of the config, and the password is not shown.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let out = with_store(&format!("postgres://paynet:s3cret-pw@127.0.0.1:{port}/nowhere"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store.url"), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
}

#[test]
fn stand_in_totals_count_every_nodes_approvals() {
    let Some(db) = Db::new("standin_shared") else { return };
    let books: Vec<_> = (0..3)
        .map(|i| {
            let store: Arc<dyn Store> = Arc::new(db.node(&format!("node-{i}")));
            StateBook::open(store).expect("book")
        })
        .collect();
    let (a, b) = (&books[0].0, &books[1].0);
    assert!(a.add_stand_in("issuer-a", "CARD", 6_000, 10_000));
    assert!(!b.add_stand_in("issuer-a", "CARD", 6_000, 10_000), "node a's 60.00 counts on node b");
    assert!(b.add_stand_in("issuer-a", "CARD", 4_000, 10_000));
    assert!(b.add_stand_in("issuer-b", "CARD", 6_000, 10_000), "per issuer");
    assert!(!a.add_stand_in("issuer-a", "OTHER", 10_001, 10_000), "one amount over the limit");
    b.reset_stand_in("issuer-a");
    assert!(a.add_stand_in("issuer-a", "CARD", 6_000, 10_000), "the issuer has the advices: a new total");

    // Many approvals at once over three nodes: exactly as many as the limit holds.
    let start = Arc::new(Barrier::new(3));
    let won: usize = std::thread::scope(|s| {
        let handles: Vec<_> = books
            .iter()
            .map(|(book, _)| {
                let start = start.clone();
                s.spawn(move || {
                    start.wait();
                    (0..10).filter(|_| book.add_stand_in("issuer-c", "CARD", 1_000, 10_000)).count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("node")).sum()
    });
    assert_eq!(won, 10);
    for (book, writer) in books {
        drop(book);
        writer.finish();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmissions_are_claimed_once_and_forgotten_after_their_window() {
    let Some(db) = Db::new("transmissions") else { return };
    let (a, b): (Arc<PgStore>, Arc<PgStore>) = (Arc::new(db.node("a")), Arc::new(db.node("b")));
    let (book_a, wa) = StateBook::open(a.clone()).expect("book");
    let (book_b, wb) = StateBook::open(b.clone()).expect("book");
    let key = || ("network|400001|0100|TERM0001|000001|1204101010".to_string(), "DIGEST".to_string());
    // Each node's writer commits on its own thread: the claim made durable first wins.
    let first = book_a.claim_transmission(key, 1_000).expect("a shared store claims");
    book_a.sync().await.expect("durable");
    let second = book_b.claim_transmission(key, 2_000).expect("a shared store claims");
    book_b.sync().await.expect("durable");
    assert!(!first.lost() && second.lost(), "the first claim wins");
    book_a.record_answer(key().0, b"answer");
    book_a.sync().await.expect("durable");
    assert_eq!(
        b.transmission_get(&key().0).expect("read"),
        Some(("DIGEST".into(), Some(b"answer".to_vec())))
    );
    assert_eq!(a.prune_transmissions(1_000).expect("prune"), 0, "claimed at 1000: kept");
    assert_eq!(a.prune_transmissions(1_001).expect("prune"), 1);
    assert_eq!(b.transmission_get(&key().0).expect("read"), None);
    for (book, writer) in [(book_a, wa), (book_b, wb)] {
        drop(book);
        writer.finish();
    }
}

#[test]
fn every_pooled_connection_commits_synchronously() {
    let Some(db) = Db::new("synchronous_commit") else { return };
    let mut opts = db.opts.clone();
    opts.pool_size = 3;
    // Even when the client asks for asynchronous commits, the store's connections commit
    // synchronously.
    let sep = if opts.url.contains('?') { '&' } else { '?' };
    opts.url = format!("{}{sep}options=-c%20synchronous_commit%3Doff", opts.url);
    let s = PgStore::open(&opts).expect("open the store");
    assert_eq!(s.connection_setting("synchronous_commit").expect("setting"), vec!["on"; 3]);
}

#[test]
fn shared_stand_in_totals_start_again_after_their_period_and_are_deleted_not_zeroed() {
    let Some(db) = Db::new("standin_period") else { return };
    let s = db.node("a");
    const T0: u64 = 1_795_000_000_000;
    const PERIOD: u64 = 3_600_000;
    let add =
        |card: &str, amount, now| s.standin_add("issuer-a", card, amount, 5_000, now, PERIOD).expect("add");
    assert_eq!(add("OLD", 5_000, T0), Some(StandInTotal { total_minor: 5_000, since_ms: T0 }));
    assert_eq!(add("OLD", 1, T0 + PERIOD - 1), None, "within its period the limit holds");
    assert_eq!(
        add("NEW", 1_000, T0 + PERIOD / 2),
        Some(StandInTotal { total_minor: 1_000, since_ms: T0 + PERIOD / 2 })
    );
    // OLD's period is over: the next approval starts a new total.
    assert_eq!(
        add("OLD", 4_000, T0 + PERIOD),
        Some(StandInTotal { total_minor: 4_000, since_ms: T0 + PERIOD })
    );
    assert_eq!(add("OLD", 1_001, T0 + PERIOD), None);
    // The prune deletes the totals over by then, and only those.
    assert_eq!(s.standin_expire(T0 + PERIOD / 2 + PERIOD - PERIOD).expect("expire"), 1, "NEW");
    let cards: Vec<String> = s.standin_totals_load().expect("load").into_iter().map(|t| t.1).collect();
    assert_eq!(cards, ["OLD"]);
    s.standin_reset("issuer-a").expect("reset");
    assert!(s.standin_totals_load().expect("load").is_empty());
    let rows = db.node("b").standin_expire(u64::MAX >> 1).expect("expire");
    assert_eq!(rows, 0, "a reset deletes the rows: nothing is left to expire");
}

/// A database of the version before stand-in periods: its zero totals (left by resets) go, the
/// others are kept and their period starts at the upgrade, not at the epoch (which would expire
/// them all, and reopen every card's limit, at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_databases_stand_in_totals_are_upgraded_without_reopening_any_limit() {
    let Some(db) = Db::new("standin_upgrade") else { return };
    earlier_database(
        &db,
        2,
        "INSERT INTO standin_total (issuer, card, total_minor) VALUES ('issuer-a', 'LIVE', 2500), \
         ('issuer-a', 'RESET', 0)",
    )
    .await;
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("now").as_millis() as u64;
    // The store may be called from a runtime's thread (it waits on its own runtime).
    let s = PgStore::open(&db.opts).expect("open and migrate");
    let rows = s.standin_totals_load().expect("load");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].1.as_str(), rows[0].2.total_minor), ("LIVE", 2500));
    assert!(rows[0].2.since_ms >= before, "the period starts at the upgrade: {rows:?}");
}

/// A database of the version before `atc_high`: its cards' highest ATCs are taken from their
/// claims at the upgrade, so an old ATC is refused at once, and the history is pruned by the
/// cards' next commits.
#[test]
fn an_earlier_databases_atc_claims_are_upgraded_with_their_highest() {
    let Some(db) = Db::new("atc_upgrade") else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(earlier_database(
        &db,
        3,
        "INSERT INTO atc_claim (card, atc, at_ms) SELECT 'CARD', g, 1 FROM generate_series(100, 400) g",
    ));
    let s = PgStore::open(&db.opts).expect("open and migrate");
    assert_eq!(claim(&s, &[("CARD", 300)], 64), vec![false], "too old: 400 is the highest");
    assert_eq!(claim(&s, &[("CARD", 380)], 64), vec![false], "claimed before the upgrade");
    assert_eq!(claim(&s, &[("CARD", 401)], 64), vec![true]);
    assert_eq!(
        claim_rows(&db, "CARD"),
        (337..=401).collect::<Vec<i32>>(),
        "the history below the window went"
    );
}

/// The schema of `db` as an earlier version left it: its first `versions` migrations applied and
/// recorded, then `rows` (SQL) run in it.
async fn earlier_database(db: &Db, versions: usize, rows: &str) {
    let (client, conn) = tokio_postgres::connect(&db.opts.url, tokio_postgres::NoTls).await.expect("connect");
    let task = tokio::spawn(conn);
    let schema = &db.opts.schema;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path = {schema}; CREATE TABLE schema_migrations \
             (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());"
        ))
        .await
        .expect("schema");
    for (version, sql) in &switch::store::postgres::MIGRATIONS[..versions] {
        client.batch_execute(sql).await.expect("an earlier migration");
        client
            .execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version])
            .await
            .expect("record");
    }
    client.batch_execute(rows).await.expect("the earlier version's rows");
    drop(client);
    let _ = task.await;
}

/// The pages of each transmission's row before and after its answer was recorded (`ctid`'s page).
fn transmission_pages(db: &Db) -> HashMap<String, String> {
    let sql = format!("SELECT key, split_part(ctid::TEXT, ',', 1) FROM {}.transmission", db.opts.schema);
    query(db, &sql, &[]).iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// A transmission's answer is recorded moments after it was claimed: the new version of its row
/// goes beside the old one on the same page (a heap-only update: no index entry, the old version
/// reclaimed at the page's next visit), where full pages sent it to another page and into every
/// index — and left the dead row for autovacuum, a minute away.
#[test]
fn answers_are_recorded_in_their_transmissions_own_pages() {
    let Some(db) = Db::new("transmission_pages") else { return };
    let s = db.node("a");
    let claim = |i: usize| switch::records::TransmissionClaim {
        key: format!("network|400001|0100|TERM0001|{i:06}|1204101010"),
        content: format!("{:064x}", i),
        at_ms: 1_000 + i as u64,
        lost: Default::default(),
    };
    let n = 600;
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let w = StateWrites {
            transmissions: chunk.iter().map(|&i| claim(i)).collect(),
            ..StateWrites::default()
        };
        s.state_commit(&w).expect("claims");
    }
    let before = transmission_pages(&db);
    assert_eq!(before.len(), n);
    // Answered as the writer commits them, a few at a time, each commit its own transaction; a
    // third of them, so that a page's room does not depend on reclaiming old versions (which a
    // snapshot open elsewhere in the database may hold back).
    let answered: Vec<usize> = (0..n).step_by(3).collect();
    for chunk in answered.chunks(5) {
        let answers = chunk.iter().map(|&i| (claim(i).key, vec![0x30u8; 120])).collect();
        s.state_commit(&StateWrites { answers, ..StateWrites::default() }).expect("answers");
    }
    let after = transmission_pages(&db);
    let moved = answered.iter().filter(|&&i| after.get(&claim(i).key) != before.get(&claim(i).key)).count();
    // Seen with full pages: 127 of the 200 moved.
    assert!(moved * 20 <= answered.len(), "{moved} of {} answered rows left their page", answered.len());
    assert_eq!(
        s.transmission_get(&claim(6).key).expect("read"),
        Some((claim(6).content, Some(vec![0x30; 120])))
    );
}
