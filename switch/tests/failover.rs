//! Three `switch` processes over one PostgreSQL database, terminals spread over them, one node
//! killed with SIGKILL under load. Terminals fail over as a real terminal does: a request whose
//! answer was lost is reversed by an advice sent to the next node. Afterwards the terminals'
//! answers are reconciled against the issuer's ledger: every approval a terminal received is
//! booked once; every request whose answer was lost is reversed or was never booked; every
//! reversal advice a node acknowledged — the dead node's too, which the others deliver once its
//! lease on them ran out — reaches the issuer once; no ATC is authorized twice.
//! Skipped without a database unless `PAYNET_REQUIRE_POSTGRES=1`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Mti, Spec};
use common::{purchase, reversal};
use futures_util::{SinkExt, StreamExt};
use switch::store::postgres::{PgOptions, PgStore};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// The issuer's ledger: authorizations booked and reversals taken, by the original's STAN.
#[derive(Default)]
struct Ledger {
    booked: Mutex<HashMap<String, u32>>,
    reversed: Mutex<HashMap<String, u32>>,
    take_reversals: AtomicBool,
}

async fn issuer(ledger: Arc<Ledger>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let spec = Spec::builtin("network").expect("spec").clone();
                let mut framed = Framed::new(s, FrameCodec::new(FramingKind::Binary2));
                while let Some(Ok(frame)) = framed.next().await {
                    let Ok(req) = Message::decode(&spec, frame.payload.clone()) else { continue };
                    let stan = req.text(11).map(|t| t.into_owned()).unwrap_or_default();
                    if req.mti() == Mti::REVERSAL_ADVICE {
                        // Unanswered (so still owed) until the test says so.
                        if !ledger.take_reversals.load(Ordering::Acquire) {
                            continue;
                        }
                        let original = req.text(90).map(|t| t[4..10].to_string()).unwrap_or_default();
                        *ledger.reversed.lock().expect("lock").entry(original).or_default() += 1;
                    } else if req.mti() == Mti::AUTHORIZATION_REQUEST {
                        *ledger.booked.lock().expect("lock").entry(stan).or_default() += 1;
                    }
                    let mut a = codecs::iso8583::reply::response(&req, "00");
                    if a.mti() == Mti::AUTHORIZATION_RESPONSE {
                        a.set_text(38, "A1B2C3").expect("DE 38");
                    }
                    if framed.send(Frame::new(a.encode().expect("encode"))).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn config(node: &str, port: u16, db: &PgOptions) -> String {
    // One test card for every terminal, each its own ATC range: the whole ATC space is remembered.
    let issuer = format!("imk_ac = \"{}\"\natc_window = 65536", common::TEST_IMK_NAME);
    let more = format!(
        "\n[saf]\nretry_base_ms = 100\nretry_max_ms = 500\n\n[store]\nurl = \"{}\"\nschema = \"{}\"\npool_size = 4\nsaf_lease_ms = 1000\n",
        db.url, db.schema
    );
    common::node_config(node, port, 1000, &issuer, &more)
}

/// What one terminal saw.
#[derive(Default)]
struct Terminal {
    /// Purchases answered: STAN → DE 39.
    answered: HashMap<String, String>,
    /// Purchases whose answer was lost (the node went away), reversed by an advice to the next.
    lost: HashSet<String>,
    /// Originals (by STAN) whose reversal advice a node acknowledged, with that node.
    reversals_acknowledged: HashMap<String, usize>,
}

type Link = Framed<TcpStream, FrameCodec>;

async fn connect(addr: &str) -> Option<Link> {
    let s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await.ok()?.ok()?;
    Some(Framed::new(s, FrameCodec::new(FramingKind::Binary2)))
}

/// One exchange; `None` when the connection failed before the answer came.
async fn exchange(link: &mut Link, m: &Message) -> Option<Message> {
    link.send(Frame::new(m.encode().expect("encode"))).await.ok()?;
    let frame = tokio::time::timeout(Duration::from_secs(10), link.next()).await.ok()??.ok()?;
    Message::decode(m.spec(), frame.payload).ok()
}

/// The terminal's reversal advice (0420) of `orig`, under its own STAN.
fn advice(orig: &Message, stan: u32) -> Message {
    let mut rev = reversal(orig);
    rev.set_mti(Mti::REVERSAL_ADVICE);
    rev.set_text(11, &format!("{stan:06}")).expect("DE 11");
    rev
}

/// Sends `m` until some node answers it, from node `at` on; returns the node and its DE 39.
async fn deliver(nodes: &[String], link: &mut Option<Link>, at: &mut usize, m: &Message) -> (usize, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no node acknowledged a reversal advice");
        if link.is_none() {
            *link = connect(&nodes[*at]).await;
        }
        if let Some(l) = link.as_mut()
            && let Some(a) = exchange(l, m).await
        {
            return (*at, a.text(39).map(|t| t.into_owned()).unwrap_or_default());
        }
        // The node went away: the next one.
        *link = None;
        *at = (*at + 1) % nodes.len();
    }
}

/// Purchases (every third approval reversed by the terminal itself) until `stop`, failing over
/// to the next node when one goes away. STANs from `first` on, two per purchase (the second for
/// its advice); the ATC is the STAN, so every purchase has a cryptogram of its own.
async fn terminal(nodes: Vec<String>, mut at: usize, first: u32, stop: Arc<AtomicBool>) -> Terminal {
    let mut seen = Terminal::default();
    let mut link: Option<Link> = None;
    let mut stan = first;
    while !stop.load(Ordering::Acquire) {
        let req = purchase("network", stan, 100 + u64::from(stan % 50));
        let key = format!("{stan:06}");
        if link.is_none() {
            link = connect(&nodes[at]).await;
            if link.is_none() {
                at = (at + 1) % nodes.len();
                continue;
            }
        }
        let answer = match link.as_mut() {
            Some(l) => exchange(l, &req).await,
            None => None,
        };
        match answer {
            Some(a) => {
                let rc = a.text(39).map(|t| t.into_owned()).unwrap_or_default();
                seen.answered.insert(key.clone(), rc.clone());
                if rc == "00" && stan.is_multiple_of(3) {
                    let (node, rc) = deliver(&nodes, &mut link, &mut at, &advice(&req, stan + 1)).await;
                    assert_eq!(rc, "00", "the reversal of an approval of STAN {key} is acknowledged");
                    seen.reversals_acknowledged.insert(key, node);
                }
            }
            None => {
                // The answer is lost: the terminal reverses it at the next node.
                seen.lost.insert(key.clone());
                link = None;
                at = (at + 1) % nodes.len();
                match deliver(&nodes, &mut link, &mut at, &advice(&req, stan + 1)).await {
                    (node, rc) if rc == "00" => {
                        seen.reversals_acknowledged.insert(key, node);
                    }
                    // No node has the original: it was never forwarded.
                    (_, rc) => assert_eq!(rc, "25", "the reversal of a lost answer (STAN {key})"),
                }
            }
        }
        stan += 2;
        assert!(stan < first + 9_000, "a terminal's STAN range is used up");
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_no_money() {
    let Some(t) = testkit::pg::database("failover") else { return };
    // `t` is dropped last, pass or fail: the test's schema goes with it.
    let db = PgOptions::new(t.url.clone(), t.schema.clone());
    let ledger = Arc::new(Ledger::default());
    let port = issuer(ledger.clone()).await;
    let mut nodes: Vec<_> =
        (0..3).map(|i| common::start_with_imk(&config(&format!("node-{i}"), port, &db))).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr("acquirer")).collect();

    // Two generators of three terminals each, spread over the nodes.
    let stop = Arc::new(AtomicBool::new(false));
    let terminals: Vec<_> = (0..6u32)
        .map(|i| tokio::spawn(terminal(addrs.clone(), i as usize % 3, 1 + i * 10_000, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dead = 1;
    nodes[dead].child.kill().expect("SIGKILL");
    nodes[dead].child.wait().expect("wait");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Release);
    let mut seen = Terminal::default();
    for t in terminals {
        let t = t.await.expect("terminal");
        seen.answered.extend(t.answered);
        seen.lost.extend(t.lost);
        seen.reversals_acknowledged.extend(t.reversals_acknowledged);
    }
    let approvals = seen.answered.values().filter(|rc| *rc == "00").count();
    let mut by_node = [0usize; 3];
    for n in seen.reversals_acknowledged.values() {
        by_node[*n] += 1;
    }
    let mut codes: HashMap<&String, usize> = HashMap::new();
    for rc in seen.answered.values() {
        *codes.entry(rc).or_default() += 1;
    }
    eprintln!(
        "answered {codes:?}, lost {}, reversal advices acknowledged by node {by_node:?}",
        seen.lost.len()
    );
    assert!(approvals > 30, "the nodes were under load ({approvals} approvals)");
    assert!(!seen.lost.is_empty(), "the kill cut some answers short");
    assert!(
        seen.reversals_acknowledged.values().any(|n| *n == dead),
        "the dead node had acknowledged reversal advices it still owed"
    );

    // The issuer takes reversals now: the survivors deliver every owed one, the dead node's too.
    ledger.take_reversals.store(true, Ordering::Release);
    let owed: HashSet<&String> = seen.reversals_acknowledged.keys().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: HashSet<String> = ledger.reversed.lock().expect("lock").keys().cloned().collect();
        let missing: Vec<_> = owed.iter().filter(|s| !got.contains(**s)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "acknowledged reversals never delivered: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for anything to be (wrongly) delivered twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let booked = ledger.booked.lock().expect("lock").clone();
    let reversed = ledger.reversed.lock().expect("lock").clone();
    for (stan, rc) in &seen.answered {
        let n = booked.get(stan).copied().unwrap_or(0);
        if rc == "00" {
            assert_eq!(n, 1, "approval of STAN {stan} booked {n} times");
        }
        if !seen.reversals_acknowledged.contains_key(stan) {
            assert_eq!(reversed.get(stan), None, "STAN {stan} reversed though the terminal kept it");
        }
    }
    for stan in &seen.lost {
        let (b, r) = (booked.get(stan).copied().unwrap_or(0), reversed.get(stan).copied().unwrap_or(0));
        assert!(b == 0 || r == 1, "STAN {stan}, answer lost: booked {b} times, reversed {r} times");
        if !seen.reversals_acknowledged.contains_key(stan) {
            assert_eq!(b, 0, "STAN {stan}: no node had its original, yet the issuer booked it");
        }
    }
    for (stan, n) in &booked {
        assert!(*n <= 1, "STAN {stan} (its own ATC) authorized {n} times");
    }
    for (stan, n) in &reversed {
        assert_eq!(*n, 1, "reversal of STAN {stan} delivered {n} times");
    }
    let pending: u64 = {
        let store = PgStore::open(&db).expect("store");
        switch::store::Store::saf_pending(&store, None).expect("pending")
    };
    assert_eq!(pending, 0, "nothing left owed");
    drop(nodes);
}
