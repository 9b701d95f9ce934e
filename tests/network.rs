//! The network end to end on 127.0.0.1 — the switch node and the issuer simulator started as
//! `paynet serve` starts them, driven over the wire like a terminal: approvals with the ARPC the
//! card checks, each decline reason, issuer timeout answered and reversed (also across a switch
//! restart), stand-in with its advice delivered when the issuer returns, duplicate transmission,
//! PIN through DUKPT translation, balance inquiry, and 1,000 requests in flight on one connection.

mod common;

use common::{Tx, acquirer_client, card_accepts_arpc, chip_request, otb, rc, until};
use issuer_sim::server::FaultRule;
use paynet::network::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_declines_arpc_duplicates_balance_and_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let cards = net.ports.test_cards.clone();
    let card = &cards[0];
    let mut c = acquirer_client(&net).await;

    // Approved, with tag 91 the card accepts; the issuer's open-to-buy falls by the amount.
    let before = otb(&net, &card.pan);
    let req = chip_request("network", card, &Tx::purchase(1, 12_345, 1));
    let rsp = c.call(&req).await;
    assert_eq!(rc(&rsp), "00", "{rsp:?}");
    assert_eq!(rsp.text(38).map(|s| s.len()), Some(6));
    assert!(card_accepts_arpc(card, &req, &rsp), "ARPC in tag 91 verifies on the card");
    assert_eq!(otb(&net, &card.pan), before - 12_345);

    // The same transmission again: the original answer, booked once.
    let again = c.call(&req).await;
    assert_eq!(again.text(38), rsp.text(38));
    assert_eq!(otb(&net, &card.pan), before - 12_345);

    // Replayed ATC: cryptogram failure (82), still with tag 91.
    let replay = chip_request("network", card, &Tx::purchase(2, 100, 1));
    let r = c.call(&replay).await;
    assert_eq!(rc(&r), "82");
    assert!(card_accepts_arpc(card, &replay, &r), "tag 91 on declines too");

    // Tampered cryptogram: 82.
    let mut bad = chip_request("network", card, &Tx::purchase(3, 100, 3));
    let mut icc = bad.icc_data().expect("ok").expect("DE 55").to_vec();
    let pos = icc.windows(2).position(|w| w == [0x9F, 0x26]).expect("9F26") + 3;
    icc[pos] ^= 0x01;
    bad.set_icc_data(&icc).expect("DE 55");
    assert_eq!(rc(&c.call(&bad).await), "82");

    // Over the open-to-buy: 51. The last test card has 800,000.
    let small = cards.last().expect("cards");
    assert_eq!(rc(&c.call(&chip_request("network", small, &Tx::purchase(4, 900_000, 1))).await), "51");

    // Expiry that does not match the card: 54. Unknown card in the BIN: 14.
    let mut wrong_exp = chip_request("network", card, &Tx::purchase(5, 100, 5));
    wrong_exp.set_text(14, "2001").expect("DE 14");
    assert_eq!(rc(&c.call(&wrong_exp).await), "54");
    let mut stranger = card.clone();
    stranger.pan = "4761739999999995".into();
    assert_eq!(rc(&c.call(&chip_request("network", &stranger, &Tx::purchase(6, 100, 1))).await), "14");

    // Balance inquiry: DE 54 carries the open-to-buy (account type 30, amount type 02, currency, C).
    let tx = Tx { processing_code: "313000".into(), ..Tx::purchase(7, 0, 7) };
    let r = c.call(&chip_request("network", card, &tx)).await;
    assert_eq!(rc(&r), "00");
    assert_eq!(r.text(54).as_deref(), Some(format!("3002978C{:012}", otb(&net, &card.pan)).as_str()));

    // PIN from a DUKPT terminal: translated to the issuer's ZPK by the switch's HSM; right PIN
    // approved, wrong PIN 55.
    let atm = &net.ports.atm_terminals[0];
    let ipek = crypto::keys::TdesKey::from_hex("ipek", &atm.ipek).expect("ipek");
    let ksn0 = crypto::dukpt::TdesKsn::from_hex(&atm.ksn).expect("ksn");
    let mut device = crypto::dukpt::tdes::TdesDukptDevice::load_initial_key(&ipek, &ksn0).expect("device");
    for (i, (pin, want)) in [(card.pin.as_str(), "00"), ("9999", "55")].into_iter().enumerate() {
        let (ksn, key) = device.next_transaction().expect("dukpt");
        let pek = crypto::dukpt::tdes::working_key(&key, crypto::dukpt::KeyUsage::Pin).expect("pek");
        let block = crypto::pin::encrypt_pin_block(
            &crypto::keys::SymmetricKey::Tdes(pek),
            crypto::pin::PinBlockFormat::Iso0,
            &crypto::pin::Pin::new(pin).expect("pin"),
            &card.pan,
            &[0xFF; 8],
        )
        .expect("block");
        let mut m = chip_request(
            "network",
            card,
            &Tx { tid: atm.tid.clone(), ..Tx::purchase(20 + i as u32, 500, 20 + i as u16) },
        );
        m.set_bytes(52, block).expect("DE 52");
        m.set_bytes(53, ksn.as_bytes().to_vec()).expect("DE 53");
        m.set_text(42, terminal_sim::mix::ATM_ACCEPTOR_ID).expect("DE 42");
        let r = c.call(&m).await;
        assert_eq!(rc(&r), want, "PIN {}", if want == "00" { "right" } else { "wrong" });
    }

    // The same over the ASCII listener pyiso8583-based tools use.
    let mut a = common::acquirer_ascii_client(&net).await;
    let req = chip_request("iso87ascii", &cards[2], &Tx::purchase(30, 2_500, 1));
    let r = a.call(&req).await;
    assert_eq!(rc(&r), "00");
    assert!(card_accepts_arpc(&cards[2], &req, &r));

    // 1,000 requests in flight on one connection through the issuer: every answer matched.
    let mut c = acquirer_client(&net).await;
    // Spread over the registered test terminals (each with its merchant ID).
    let terminals = net.ports.terminals.clone();
    let terminal = |i: u32| &terminals[i as usize % terminals.len()];
    let reqs: Vec<_> = (0..1000u32)
        .map(|i| {
            let card = &cards[(i % 3) as usize];
            let t = terminal(i);
            let tx = Tx {
                processing_code: "313000".into(),
                tid: t.tid.clone(),
                ..Tx::purchase(1000 + i, 0, 1000 + i as u16)
            };
            let mut m = chip_request("network", card, &tx);
            m.set_text(42, &t.mid).expect("DE 42");
            m
        })
        .collect();
    c.send_many(&reqs).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..reqs.len() {
        let r = c.recv().await;
        assert_eq!(rc(&r), "00", "{r:?}");
        let stan: u32 = r.text(11).expect("DE 11").parse().expect("digits");
        let i = stan - 1000;
        assert_eq!(r.text(41).as_deref(), Some(terminal(i).tid.as_str()), "answer to the wrong terminal");
        assert_eq!(r.text(2).as_deref(), Some(cards[(i % 3) as usize].pan.as_str()));
        assert!(seen.insert(stan));
    }
    net.shutdown().await;
    // Nothing the network wrote (stores, keystores) holds a clear PAN or a test card's key.
    for entry in walk(dir.path()) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).expect("read")).into_owned();
        for c in &cards {
            assert!(!text.contains(&c.pan), "clear PAN in {}", entry.display());
            assert!(!text.contains(&c.icc_mk), "clear key in {}", entry.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_timeout_reversal_stand_in_advice_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(dir.path());
    opts.issuer_timeout_ms = 400;
    // 0100s for 777 are dropped by the issuer after it has booked them.
    opts.issuer_faults = vec![FaultRule::on_amount(777, Some("0100"), "drop")];
    let mut net = network::start(opts).await.expect("network");
    let cards = net.ports.test_cards.clone();
    let card = &cards[0];
    let mut c = acquirer_client(&net).await;
    let start = otb(&net, &card.pan);

    // Issuer timeout: the terminal is answered 91; the issuer booked it, and the switch's reversal
    // (0420 through SAF) releases it again.
    let r = c.call(&chip_request("network", card, &Tx::purchase(1, 777, 1))).await;
    assert_eq!(rc(&r), "91");
    until("the reversal releases the booking", || otb(&net, &card.pan) == start).await;

    // Issuer down: the switch does not hold this issuer's key, so it cannot verify the card and
    // stand-in approves nothing (approvals with the key: `on_behalf_verification_and_stand_in_arpc`,
    // tests/attacks.rs, switch/tests/acquirer.rs).
    net.stop_issuer().await;
    until("the link notices the issuer is gone", || {
        !net.switch.engine.issuers.values().any(|h| h.link.is_up())
    })
    .await;
    let r = c.call(&chip_request("network", card, &Tx::purchase(2, 5_000, 2))).await;
    assert_eq!(rc(&r), "91");
    assert!(!r.contains(38), "no stand-in authorization code");

    // A timeout whose reversal cannot be delivered yet: the issuer comes back only after the
    // switch has restarted, and the reversal — persisted, sealed — is delivered then.
    net.start_issuer().await.expect("issuer back");
    until("the link is up again", || net.switch.engine.issuers.values().all(|h| h.link.is_up())).await;
    // 778: the issuer books the 0100 and drops it, and drops the reversals too for now.
    net.issuer_state.faults.write().expect("faults").push(FaultRule::on_amount(778, None, "drop"));
    let r = c.call(&chip_request("network", card, &Tx::purchase(4, 778, 4))).await;
    assert_eq!(rc(&r), "91");
    until("the reversal is queued", || net.switch.store.saf_pending(None).map(|n| n >= 1).unwrap_or(false))
        .await;
    net.stop_issuer().await;
    drop(c);
    let mut net = net.restart_switch().await.expect("restart");
    assert!(net.switch.store.saf_pending(None).expect("store") >= 1, "the reversal survived the restart");
    net.issuer_state.faults.write().expect("faults").clear();
    net.start_issuer().await.expect("issuer back");
    until("the reversal is delivered after the restart", || otb(&net, &card.pan) == start).await;
    until("the SAF queue empties", || net.switch.store.saf_pending(None).map(|n| n == 0).unwrap_or(false))
        .await;

    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_behalf_verification_and_stand_in_arpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(dir.path());
    opts.on_behalf = true;
    let mut net = network::start(opts).await.expect("network");
    let cards = net.ports.test_cards.clone();
    let card = &cards[0];
    let mut c = acquirer_client(&net).await;
    let start = otb(&net, &card.pan);

    // A tampered cryptogram is declined by the switch itself: the issuer never books or sees it.
    let mut bad = chip_request("network", card, &Tx::purchase(1, 100, 1));
    let mut icc = bad.icc_data().expect("ok").expect("DE 55").to_vec();
    let pos = icc.windows(2).position(|w| w == [0x9F, 0x26]).expect("9F26") + 3;
    icc[pos] ^= 0x01;
    bad.set_icc_data(&icc).expect("DE 55");
    assert_eq!(rc(&c.call(&bad).await), "82");
    let metrics = reqwest_like_get(&net.ports.admin, "/metrics").await;
    assert!(metrics.contains("route=\"issuer-a:verify\""), "{metrics}");
    // A good one goes through to the issuer.
    let good = chip_request("network", card, &Tx::purchase(2, 100, 2));
    let r = c.call(&good).await;
    assert_eq!(rc(&r), "00");
    assert_eq!(otb(&net, &card.pan), start - 100);
    // Where its time went: the wait for the decision state before forwarding, the issuer's
    // round trip, the wait for its row before answering.
    let metrics = reqwest_like_get(&net.ports.admin, "/metrics").await;
    for stage in ["state_sync", "issuer", "journal_durable"] {
        let n = count(&metrics, "paynet_stage_latency_seconds", &format!("stage=\"{stage}\""));
        assert!(n.is_some_and(|n| n >= 1), "{stage}: {metrics}");
    }
    // The group commits it waited for, timed apart (the disk's share).
    let commits = count(&metrics, "paynet_store_commit_seconds", "");
    assert!(commits.is_some_and(|n| n >= 2), "{metrics}");

    // Issuer down: the stand-in approval carries an ARPC made with the issuer's key, which the
    // card accepts.
    net.stop_issuer().await;
    until("the link notices", || !net.switch.engine.issuers.values().any(|h| h.link.is_up())).await;
    let req = chip_request("network", card, &Tx::purchase(3, 2_000, 3));
    let r = c.call(&req).await;
    assert_eq!(rc(&r), "00");
    assert!(card_accepts_arpc(card, &req, &r), "stand-in ARPC verifies on the card");
    net.shutdown().await;
}

/// The observation count of `histogram`'s series whose labels contain `label`, in the
/// Prometheus text of `metrics`.
fn count(metrics: &str, histogram: &str, label: &str) -> Option<u64> {
    let prefix = format!("{histogram}_count{{");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}

/// A plain HTTP GET (the admin endpoint): the whole answer.
async fn reqwest_like_get(base: &str, path: &str) -> String {
    testkit::http::get(base, path, None).await.raw()
}
