//! The switch as an acquirer sees it, with its issuer unreachable: echo, stand-in approvals within
//! limits and declines beyond them, duplicate transmissions answered from the original, format
//! errors answered with 30 or the connection closed, 1,000 requests on one connection all matched,
//! metrics and readiness on the admin port, and a clean shutdown on SIGTERM. Real `switch` process,
//! 127.0.0.1, ports from the OS.

mod common;

use codecs::framing::FramingKind;
use common::{Client, echo, http_get, purchase, start_with_imk as start};

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn config() -> String {
    format!(
        r#"
[node]
name = "test-switch"
data_dir = "data"
shutdown_grace_ms = 3000

[admin]
listen = "127.0.0.1:0"

[keys]
keystore = "keys.toml"
lmk_env = "PAYNET_LMK"

[[listener]]
name = "acquirer"
listen = "127.0.0.1:0"
spec = "network"
framing = "2-byte-binary"
read_timeout_ms = 500

[[listener]]
name = "acquirer_ascii"
listen = "127.0.0.1:0"
spec = "iso87ascii"
framing = "4-ascii"

[[issuer]]
name = "issuer-a"
connect = ["127.0.0.1:{port}"]
connections = 1
timeout_ms = 500
imk_ac = "issuer-a.imk-ac"     # the switch verifies the card's ARQC: stand-in may approve it

[issuer.stand_in]
enabled = true
max_amount_minor = 10000
currency = "978"
max_total_per_card_minor = 25000
transaction_types = ["00"]

[[route]]
prefix = "476173"
issuer = "issuer-a"
"#,
        port = closed_port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_down_stand_in_duplicates_format_errors_and_matching() {
    let mut sw = start(&config());
    let mut c = Client::connect(&sw.addr("acquirer"), FramingKind::Binary2, "network").await;

    // Echo answered by the switch itself.
    let a = c.call(&echo("network", 1)).await;
    assert_eq!(a.mti().as_str(), "0810");
    assert_eq!(a.text(39).as_deref(), Some("00"));
    assert_eq!(a.text(11).as_deref(), Some("000001"));

    // Stand-in: approved within the per-transaction limit, with a stand-in authorization code.
    let a = c.call(&purchase("network", 100, 10_000)).await;
    assert_eq!(a.mti().as_str(), "0110");
    assert_eq!(a.text(39).as_deref(), Some("00"), "{a:?}");
    let code = a.text(38).expect("DE 38").into_owned();
    assert!(code.starts_with('S') && code.len() == 6, "{code}");
    assert_eq!(a.text(11).as_deref(), Some("000100"));
    // The answer echoes the request and masks nothing on the wire, but never adds a PIN or track.
    assert!(!a.contains(35) && !a.contains(52));

    // Over the single-transaction limit: declined 91 (issuer unavailable).
    let a = c.call(&purchase("network", 101, 10_001)).await;
    assert_eq!(a.text(39).as_deref(), Some("91"));

    // Duplicate transmission: the original answer again, not a second authorization.
    let again = c.call(&purchase("network", 100, 10_000)).await;
    assert_eq!(again.text(38).as_deref(), Some(code.as_str()));
    assert_eq!(again.text(39).as_deref(), Some("00"));

    // Per-card running total: 10,000 approved; 10,000 more fits 25,000; the third does not.
    assert_eq!(c.call(&purchase("network", 102, 10_000)).await.text(39).as_deref(), Some("00"));
    assert_eq!(c.call(&purchase("network", 103, 10_000)).await.text(39).as_deref(), Some("91"));

    // Reversals matched to their original: a declined original needs none (answered locally,
    // nothing queued); an approved one is owed to the issuer through SAF (the issuer is down).
    let declined = purchase("network", 101, 10_001);
    let a = c.call(&common::reversal(&declined)).await;
    assert_eq!((a.mti().as_str(), a.text(39).as_deref()), ("0410", Some("00")));
    let approved = purchase("network", 100, 10_000);
    let a = c.call(&common::reversal(&approved)).await;
    assert_eq!((a.mti().as_str(), a.text(39).as_deref()), ("0410", Some("00")));

    // Missing required element (DE 41 absent is unreadable for an answer: use DE 49 instead).
    let mut bad = purchase("network", 104, 500);
    bad.remove(49);
    let a = c.call(&bad).await;
    assert_eq!(a.text(39).as_deref(), Some("30"));

    // A frame that does not decode but whose MTI, DE 11, DE 41 can be read: 30.
    let good = purchase("network", 105, 500).encode().expect("encode");
    let mut broken = good.to_vec();
    let at = broken.len() - 20; // inside the last elements
    broken[at] = 0xFF;
    broken[at + 1] = 0xFF;
    c.send_raw(&broken).await;
    let a = c.recv().await;
    assert_eq!(a.text(39).as_deref(), Some("30"));
    assert_eq!(a.text(11).as_deref(), Some("000105"));

    // Over ASCII with a 4-digit header, as pyiso8583-based tools speak.
    let mut ca = Client::connect(&sw.addr("acquirer_ascii"), FramingKind::Ascii4, "iso87ascii").await;
    let a = ca.call(&echo("iso87ascii", 7)).await;
    assert_eq!(a.text(39).as_deref(), Some("00"));

    // Garbage: the connection is closed; others carry on.
    let mut g = Client::connect(&sw.addr("acquirer"), FramingKind::Binary2, "network").await;
    g.send_raw(b"\x01\x02garbage").await;
    assert!(g.recv_raw().await.is_none(), "unreadable frame closes the connection");
    let a = c.call(&echo("network", 2)).await;
    assert_eq!(a.text(39).as_deref(), Some("00"));

    // A partial frame is dropped with its connection after the read timeout (500 ms here).
    let mut p = Client::connect(&sw.addr("acquirer"), FramingKind::Binary2, "network").await;
    tokio::io::AsyncWriteExt::write_all(&mut p.stream, b"\x00\x40\x30\x31").await.expect("write");
    assert!(p.recv_raw().await.is_none(), "partial frame times out");

    // 1,000 requests in flight on one connection: every answer matches exactly one request.
    let mut m = Client::connect(&sw.addr("acquirer"), FramingKind::Binary2, "network").await;
    let n = 1000u32;
    let mut wire = bytes::BytesMut::new();
    for i in 0..n {
        let mut e = echo("network", 200_000 + i);
        e.set_text(41, &format!("T{:07}", i % 37)).expect("DE 41");
        let b = e.encode().expect("encode");
        tokio_util::codec::Encoder::encode(&mut m.codec, codecs::framing::Frame::new(b), &mut wire)
            .expect("frame");
    }
    tokio::io::AsyncWriteExt::write_all(&mut m.stream, &wire).await.expect("write all");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let a = m.recv().await;
        let stan: u32 = a.text(11).expect("DE 11").parse().expect("digits");
        let tid = a.text(41).expect("DE 41").into_owned();
        assert_eq!(tid, format!("T{:07}", (stan - 200_000) % 37), "answer matched to the wrong terminal");
        assert!(seen.insert(stan), "STAN {stan} answered twice");
    }
    assert_eq!(seen.len(), n as usize);

    // Admin: ready, metrics by MTI and response code; no card data in labels.
    assert!(http_get(&sw.admin, "/ready").await.starts_with("HTTP/1.1 200"));
    let metrics = http_get(&sw.admin, "/metrics").await;
    assert!(metrics.contains("paynet_stand_in_approvals_total{issuer=\"issuer-a\""), "{metrics}");
    assert!(metrics.contains("response_code=\"30\""));
    assert!(metrics.contains("paynet_duplicate_transmissions_total"));
    assert!(!metrics.contains("4761739001010010"));

    let dir = common::data_dir(&sw);
    let status = sw.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    // The journal and the SAF queue (two stand-in advices owed) hold no clear PAN.
    let db = std::fs::read(dir.join("switch.db")).expect("database");
    let hay = String::from_utf8_lossy(&db);
    assert!(!hay.contains("4761739001010010"), "clear PAN in the database");
    assert!(hay.contains("476173******0010"), "masked PAN journaled");
    let conn = rusqlite::Connection::open(dir.join("switch.db")).expect("open db");
    let advices: i64 = conn
        .query_row("SELECT COUNT(*) FROM saf WHERE kind = 'advice'", [], |r| r.get(0))
        .expect("saf table");
    assert_eq!(advices, 2, "two stand-in approvals owe the issuer two advices");
    let reversals: i64 = conn
        .query_row("SELECT COUNT(*) FROM saf WHERE kind = 'reversal'", [], |r| r.get(0))
        .expect("saf table");
    assert_eq!(reversals, 1, "only the approved original's reversal is owed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_limits_and_routes_without_dropping_the_connection() {
    let cfg = config();
    let sw = start(&cfg);
    let mut c = Client::connect(&sw.addr("acquirer"), FramingKind::Binary2, "network").await;
    assert_eq!(c.call(&purchase("network", 1, 15_000)).await.text(39).as_deref(), Some("91"));

    // Raise the stand-in limit and route another BIN; reload with SIGHUP.
    let raised = common::with_test_acquirer(
        &(cfg.replace("max_amount_minor = 10000", "max_amount_minor = 20000")
            + "\n[[route]]\nprefix = \"411111\"\nissuer = \"issuer-a\"\n"),
    );
    std::fs::write(sw.dir.path().join("switch.toml"), raised).expect("rewrite config");
    let pid = sw.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());

    // The same connection, still open, now gets the new limit.
    let mut approved = false;
    for stan in 2..60u32 {
        let a = c.call(&purchase("network", stan, 15_000)).await;
        if a.text(39).as_deref() == Some("00") {
            approved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(approved, "the raised stand-in limit applies after SIGHUP");

    // A broken file is refused and the running configuration stays.
    std::fs::write(sw.dir.path().join("switch.toml"), "this is not toml").expect("rewrite");
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let a = c.call(&echo("network", 99)).await;
    assert_eq!(a.text(39).as_deref(), Some("00"));
}
