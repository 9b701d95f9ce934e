//! Two `switch` processes over one PostgreSQL database (a schema of the test's own), in front of
//! one issuer: what one node decided holds on the other. A card's ATC sent to both is approved
//! once; a retransmission reaching the other node gets the first node's answer (also while the
//! first is still waiting for its issuer), never a second authorization; a reversal reaching the
//! other node finds its original, and its repeat on the first node passes nothing on again.
//! Skipped without a database unless `PAYNET_REQUIRE_POSTGRES=1`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Mti, Spec};
use common::{Client, purchase, reversal};
use futures_util::{SinkExt, StreamExt};
use switch::store::postgres::PgOptions;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// What the test issuer was sent: requests by (MTI, STAN).
#[derive(Default)]
struct Seen {
    requests: Mutex<HashMap<(String, String), u32>>,
    auth_code: AtomicU32,
}

impl Seen {
    fn count(&self, mti: &str, stan: &str) -> u32 {
        self.requests.lock().expect("lock").get(&(mti.to_string(), stan.to_string())).copied().unwrap_or(0)
    }
}

/// Approves everything with a fresh authorization code; an authorization of 7.77 is answered
/// after 800 ms (so that its retransmission arrives while it is in flight).
async fn issuer(seen: Arc<Seen>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let spec = Spec::builtin("network").expect("spec").clone();
                let (mut tx, mut rx) = Framed::new(s, FrameCodec::new(FramingKind::Binary2)).split();
                let (out, mut answers) = tokio::sync::mpsc::unbounded_channel::<Message>();
                tokio::spawn(async move {
                    while let Some(a) = answers.recv().await {
                        if tx.send(Frame::new(a.encode().expect("encode"))).await.is_err() {
                            return;
                        }
                    }
                });
                while let Some(Ok(frame)) = rx.next().await {
                    let Ok(req) = Message::decode(&spec, frame.payload.clone()) else { continue };
                    let stan = req.text(11).map(|t| t.into_owned()).unwrap_or_default();
                    if req.mti() != Mti::NETWORK_MANAGEMENT_REQUEST {
                        *seen
                            .requests
                            .lock()
                            .expect("lock")
                            .entry((req.mti().as_str().into(), stan))
                            .or_default() += 1;
                    }
                    let mut a = codecs::iso8583::reply::response(&req, "00");
                    let slow = req.mti() == Mti::AUTHORIZATION_REQUEST
                        && req.text(4).as_deref() == Some("000000000777");
                    if req.mti() == Mti::AUTHORIZATION_REQUEST {
                        let n = seen.auth_code.fetch_add(1, Ordering::Relaxed);
                        a.set_text(38, &format!("A{n:05}")).expect("DE 38");
                    }
                    let out = out.clone();
                    tokio::spawn(async move {
                        if slow {
                            tokio::time::sleep(Duration::from_millis(800)).await;
                        }
                        let _ = out.send(a);
                    });
                }
            });
        }
    });
    port
}

fn config(node: &str, port: u16, db: &PgOptions) -> String {
    let store = format!("\n[store]\nurl = \"{}\"\nschema = \"{}\"\npool_size = 4\n", db.url, db.schema);
    common::node_config(node, port, 5000, &format!("imk_ac = \"{}\"", common::TEST_IMK_NAME), &store)
}

fn rc(m: &Message) -> String {
    m.text(39).map(|t| t.into_owned()).unwrap_or_default()
}

async fn client(addr: &str) -> Client {
    Client::connect(addr, FramingKind::Binary2, "network").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_one_database_decide_each_transaction_once() {
    let Some(t) = testkit::pg::database("two_nodes") else { return };
    // `t` is dropped last, pass or fail: the test's schema goes with it.
    let db = PgOptions::new(t.url.clone(), t.schema.clone());
    let seen = Arc::new(Seen::default());
    let port = issuer(seen.clone()).await;
    // The same keystore (the fingerprint key, the SAF sealing key) on both: one network.
    let a = common::start_with_imk(&config("node-a", port, &db));
    let b = common::start_with_imk(&config("node-b", port, &db));
    let (mut ca, mut cb) = (client(&a.addr("acquirer")).await, client(&b.addr("acquirer")).await);

    // One card cryptogram (ATC 1) under two STANs, one to each node at once: one approval.
    let first = purchase("network", 1, 1_000);
    let mut replay = first.clone();
    replay.set_text(11, "000002").expect("DE 11");
    let (ra, rb) = tokio::join!(ca.call(&first), cb.call(&replay));
    let mut codes = [rc(&ra), rc(&rb)];
    codes.sort();
    assert_eq!(codes, ["00".to_string(), "82".to_string()], "the ATC is accepted by one node only");
    assert_eq!(seen.count("0100", "000001") + seen.count("0100", "000002"), 1, "one reached the issuer");

    // A retransmission reaching the other node gets the first answer, not a second authorization.
    let tx = purchase("network", 10, 2_500);
    let answered = ca.call(&tx).await;
    assert_eq!(rc(&answered), "00");
    let again = cb.call(&tx).await;
    assert_eq!((rc(&again), again.text(38)), (rc(&answered), answered.text(38)), "the same answer");
    assert_eq!(seen.count("0100", "000010"), 1, "authorized once");
    // The same identifiers with another amount are another transaction: 94, nothing sent.
    let other = purchase("network", 10, 9_999);
    assert_eq!((other.text(7), other.text(11)), (tx.text(7), tx.text(11)));
    assert_eq!(rc(&cb.call(&other).await), "94");
    assert_eq!(seen.count("0100", "000010"), 1);

    // While the first node still waits for its issuer, the retransmission on the other waits for
    // that answer.
    let slow = purchase("network", 20, 777);
    let mut ca2 = client(&a.addr("acquirer")).await;
    let first_call = tokio::spawn(async move { ca2.call(&slow).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let slow = purchase("network", 20, 777);
    let second = cb.call(&slow).await;
    let first = first_call.await.expect("first");
    assert_eq!(rc(&first), "00");
    assert_eq!((rc(&second), second.text(38)), (rc(&first), first.text(38)));
    assert_eq!(seen.count("0100", "000020"), 1, "authorized once");

    // A reversal sent to the other node finds its original there, and its repeat on the first
    // node passes nothing on again.
    let rev = reversal(&tx);
    assert_eq!(rc(&cb.call(&rev).await), "00");
    assert_eq!(rc(&ca.call(&rev).await), "00");
    assert_eq!(seen.count("0400", "000010") + seen.count("0420", "000010"), 1, "reversed once");

    drop((a, b));
}
