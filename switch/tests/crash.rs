//! The switch killed with SIGKILL while it answers under load, then started again on the same
//! data: every answer a terminal received has its journal row; every reversal advice the switch
//! acknowledged (0430) is still owed after the crash and reaches the issuer afterwards, once; and
//! every stand-in approval a terminal received (the issuer unreachable, the switch deciding on its
//! behalf) has its 0120 advice delivered to the issuer once it is back, once.
//! Real `switch` process on 127.0.0.1 (ports from the OS); the issuer is a small host in the test
//! that answers authorizations and, after the restart only, takes the advices in charge — so
//! that what it counts is exactly what the switch delivered.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Mti, Spec};
use common::{Client, purchase, reversal, start_in};
use futures_util::{SinkExt, StreamExt};
use switch::store::Store;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// What the test issuer saw: reversals it took in charge, by the original's STAN.
#[derive(Default)]
struct Seen {
    reversals: Mutex<HashMap<String, u32>>,
    take_reversals: AtomicBool,
}

fn answer_to(req: &Message) -> Message {
    let mut a = codecs::iso8583::reply::response(req, "00");
    if a.mti() == Mti::AUTHORIZATION_RESPONSE {
        a.set_text(38, "A1B2C3").expect("DE 38");
    }
    a
}

/// Answers every request of the switch's issuer links; reversal advices only once
/// `take_reversals` is set (before that they go unanswered, so they stay owed).
async fn issuer(seen: Arc<Seen>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let spec = Spec::builtin("network").expect("spec").clone();
                let mut framed = Framed::new(s, FrameCodec::new(FramingKind::Binary2));
                while let Some(Ok(frame)) = framed.next().await {
                    let Ok(req) = Message::decode(&spec, frame.payload.clone()) else { continue };
                    if req.mti() == Mti::REVERSAL_ADVICE {
                        if !seen.take_reversals.load(Ordering::Acquire) {
                            continue;
                        }
                        let original = req.text(90).map(|t| t[4..10].to_string()).unwrap_or_default();
                        *seen.reversals.lock().expect("lock").entry(original).or_default() += 1;
                    }
                    let bytes = answer_to(&req).encode().expect("encode");
                    if framed.send(Frame::new(bytes)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn config(port: u16) -> String {
    common::node_config("crash-switch", port, 300, "", "\n[saf]\nretry_base_ms = 100\nretry_max_ms = 500\n")
}

/// What one terminal connection was answered: (STAN, MTI of the answer, DE 39).
type Answered = Vec<(String, String, String)>;

/// Sends purchases on one connection, and a reversal advice for every third approval, until the
/// switch goes away; returns what was answered.
async fn terminal(addr: String, first_stan: u32) -> Answered {
    let mut answered = Vec::new();
    let Ok(mut c) =
        tokio::time::timeout(Duration::from_secs(5), Client::connect(&addr, FramingKind::Binary2, "network"))
            .await
    else {
        return answered;
    };
    for i in 0..100_000u32 {
        let stan = first_stan + 2 * i;
        let req = purchase("network", stan, 100 + u64::from(i % 50));
        c.send(&req).await;
        let Some(raw) = c.recv_raw().await else { return answered };
        let Ok(a) = Message::decode(&c.spec, raw) else { return answered };
        let rc = a.text(39).map(|t| t.into_owned()).unwrap_or_default();
        answered.push((format!("{stan:06}"), a.mti().as_str().to_string(), rc.clone()));
        if rc == "00" && i % 3 == 0 {
            let mut rev = reversal(&req);
            rev.set_mti(Mti::REVERSAL_ADVICE);
            rev.set_text(11, &format!("{:06}", stan + 1)).expect("DE 11");
            c.send(&rev).await;
            let Some(raw) = c.recv_raw().await else { return answered };
            let Ok(a) = Message::decode(&c.spec, raw) else { return answered };
            let rc = a.text(39).map(|t| t.into_owned()).unwrap_or_default();
            answered.push((format!("{:06}", stan + 1), a.mti().as_str().to_string(), rc));
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_switch_forgets_nothing_it_answered_and_owes_what_it_acknowledged() {
    let seen = Arc::new(Seen::default());
    let port = issuer(seen.clone()).await;
    let mut sw = start_in(tempfile::tempdir().expect("tempdir"), &config(port));
    let dir_path = sw.dir.path().to_path_buf();
    let addr = sw.addr("acquirer");

    // Four terminals under load, then SIGKILL in the middle of it.
    let terminals: Vec<_> = (0..4u32).map(|t| tokio::spawn(terminal(addr.clone(), 1 + t * 10_000))).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sw.child.kill().expect("SIGKILL");
    sw.child.wait().expect("wait");
    let mut answered: Answered = Vec::new();
    for t in terminals {
        answered.extend(t.await.expect("terminal"));
    }
    let approvals = answered.iter().filter(|(_, m, rc)| m == "0110" && rc == "00").count();
    let acknowledged: HashSet<String> = answered
        .iter()
        .filter(|(_, m, rc)| m == "0430" && rc == "00")
        .map(|(stan, _, _)| format!("{:06}", stan.parse::<u32>().expect("stan") - 1))
        .collect();
    assert!(approvals > 50, "the switch was under load when it was killed ({approvals} approvals)");
    assert!(!acknowledged.is_empty(), "some reversals were acknowledged before the kill");

    // Every answer the terminals got has its row in the journal left by the killed process.
    let db = dir_path.join("data").join("switch.db");
    {
        let store = switch::store::sqlite::SqliteStore::open(&db).expect("open the journal");
        let n = store.journal_count().expect("count");
        let rows = store.journal_read(0, n as u32).expect("rows");
        let journaled: HashSet<(String, String)> =
            rows.iter().filter_map(|r| Some((r.stan.clone()?, r.response_code.clone()?))).collect();
        for (stan, mti, rc) in &answered {
            assert!(
                journaled.contains(&(stan.clone(), rc.clone())),
                "answer {mti} {rc} to STAN {stan} has no journal row"
            );
        }
    }

    // Started again on the same data, the issuer now taking reversals: every acknowledged
    // reversal is delivered, and once.
    seen.take_reversals.store(true, Ordering::Release);
    common::restart(&mut sw);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: HashSet<String> = seen.reversals.lock().expect("lock").keys().cloned().collect();
        if acknowledged.is_subset(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged reversals never delivered after the restart: {:?}",
            acknowledged.difference(&got).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give the SAF worker time to (wrongly) repeat anything.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counts = seen.reversals.lock().expect("lock").clone();
    for stan in &acknowledged {
        assert_eq!(
            counts.get(stan),
            Some(&1),
            "reversal of STAN {stan} delivered {:?} times",
            counts.get(stan)
        );
    }
}

/// An issuer host that can be made unreachable: while down it closes its connections and every
/// new one at once (the switch's link cannot sign on, so the switch stands in). It counts the
/// advices it took in charge (0120 and 0420) by MTI and STAN.
struct Host {
    up: tokio::sync::watch::Sender<bool>,
    advices: Mutex<HashMap<(String, String), u32>>,
}

async fn host(h: Arc<Host>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            if !*h.up.borrow() {
                drop(s);
                continue;
            }
            let h = h.clone();
            let mut up = h.up.subscribe();
            tokio::spawn(async move {
                let spec = Spec::builtin("network").expect("spec").clone();
                let mut framed = Framed::new(s, FrameCodec::new(FramingKind::Binary2));
                loop {
                    let frame = tokio::select! {
                        f = framed.next() => f,
                        _ = up.wait_for(|u| !*u) => return,
                    };
                    let Some(Ok(frame)) = frame else { return };
                    let Ok(req) = Message::decode(&spec, frame.payload.clone()) else { continue };
                    if req.mti() == Mti::AUTHORIZATION_ADVICE || req.mti() == Mti::REVERSAL_ADVICE {
                        let stan = req.text(11).map(|t| t.into_owned()).unwrap_or_default();
                        let key = (req.mti().as_str().to_string(), stan);
                        *h.advices.lock().expect("lock").entry(key).or_default() += 1;
                    }
                    let bytes = answer_to(&req).encode().expect("encode");
                    if framed.send(Frame::new(bytes)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// What the terminals were answered: (STAN, MTI of the answer, DE 39, DE 38).
type Approvals = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// Sends purchases of the test card on one connection (STANs from `first_stan`, the ATC the
/// STAN) until the switch goes away, recording each answer as it comes.
async fn purchaser(addr: String, first_stan: u32, answered: Approvals) {
    let Ok(mut c) =
        tokio::time::timeout(Duration::from_secs(5), Client::connect(&addr, FramingKind::Binary2, "network"))
            .await
    else {
        return;
    };
    for i in 0..4_000u32 {
        let stan = first_stan + i;
        c.send(&purchase("network", stan, 100 + u64::from(i % 50))).await;
        let Some(raw) = c.recv_raw().await else { return };
        let Ok(a) = Message::decode(&c.spec, raw) else { return };
        let text = |de| a.text(de).map(|t| t.into_owned()).unwrap_or_default();
        answered.lock().expect("lock").push((
            format!("{stan:06}"),
            a.mti().as_str().to_string(),
            text(39),
            text(38),
        ));
    }
}

fn stand_in_config(port: u16) -> String {
    let issuer = format!(
        "imk_ac = \"{}\"\natc_window = 65536\n\n[issuer.stand_in]\nenabled = true\nmax_amount_minor = 10000\n\
         currency = \"978\"\nmax_total_per_card_minor = 100000000\ntransaction_types = [\"00\"]\n",
        common::TEST_IMK_NAME
    );
    common::node_config(
        "crash-stand-in",
        port,
        300,
        &issuer,
        "\n[saf]\nretry_base_ms = 100\nretry_max_ms = 500\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_switch_delivers_every_stand_in_advice_it_acknowledged_once() {
    let h = Arc::new(Host { up: tokio::sync::watch::channel(true).0, advices: Mutex::default() });
    let port = host(h.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    common::add_test_imk(dir.path());
    let mut sw = start_in(dir, &stand_in_config(port));
    let addr = sw.addr("acquirer");
    let answered: Approvals = Arc::default();
    let stand_ins = |a: &Approvals| {
        a.lock()
            .expect("lock")
            .iter()
            .filter(|(_, m, rc, code)| m == "0110" && rc == "00" && code.starts_with('S'))
            .map(|(stan, ..)| stan.clone())
            .collect::<HashSet<String>>()
    };

    // Three terminals under load with the issuer answering; then the issuer becomes unreachable
    // and the switch stands in; SIGKILL while it does.
    let terminals: Vec<_> =
        (0..3u32).map(|t| tokio::spawn(purchaser(addr.clone(), 1 + t * 10_000, answered.clone()))).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.lock().expect("lock").iter().filter(|(_, _, rc, _)| rc == "00").count() < 20 {
        assert!(Instant::now() < deadline, "no approvals from the issuer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.up.send_replace(false);
    while stand_ins(&answered).len() < 30 {
        assert!(Instant::now() < deadline, "the switch did not stand in for the unreachable issuer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sw.child.kill().expect("SIGKILL");
    sw.child.wait().expect("wait");
    for t in terminals {
        t.await.expect("terminal");
    }
    let acknowledged = stand_ins(&answered);
    assert!(!acknowledged.is_empty());
    {
        let db = sw.dir.path().join("data").join("switch.db");
        let store = switch::store::sqlite::SqliteStore::open(&db).expect("open the store");
        let owed = store.saf_pending(Some("issuer-a")).expect("pending");
        assert!(
            owed >= acknowledged.len() as u64,
            "{owed} owed for {} stand-in approvals",
            acknowledged.len()
        );
    }
    let early: Vec<_> =
        h.advices.lock().expect("lock").keys().filter(|(mti, _)| mti == "0120").cloned().collect();
    assert!(early.is_empty(), "no stand-in advice could reach the issuer while it was down: {early:?}");

    // Started again on the same data, and the issuer back: every acknowledged stand-in approval's
    // advice is delivered, and nothing twice.
    common::restart(&mut sw);
    h.up.send_replace(true);
    let deadline = Instant::now() + Duration::from_secs(60);
    let advised = |h: &Host| -> HashSet<String> {
        let seen = h.advices.lock().expect("lock");
        seen.keys().filter(|(mti, _)| mti == "0120").map(|(_, stan)| stan.clone()).collect()
    };
    while !acknowledged.is_subset(&advised(&h)) {
        assert!(
            Instant::now() < deadline,
            "stand-in advices never delivered after the restart: {:?}",
            acknowledged.difference(&advised(&h)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give the SAF worker time to (wrongly) repeat anything.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counts = h.advices.lock().expect("lock").clone();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    sw.terminate();
}
