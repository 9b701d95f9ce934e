//! The switch's edge, attacked by clients that know the wire (the network as `paynet serve` runs
//! it, on 127.0.0.1): forged token-service flags, unregistered and spoofed terminals, advices and
//! reversals without an original or against someone else's, repeated reversals and repeat MTIs,
//! amount, currency, PAN and PAN sequence number swapped under a valid cryptogram, a card's
//! decline sent online, network-reserved processing codes, duplicate-cache probing, ATC replays
//! before and after a restart (online, in stand-in, and a token's), stand-in totals across a
//! restart, token answers on every failure path, and a CVV2, track 2 and PIN block looked for at
//! rest and in the logs. Each is answered as docs/network-spec.md says, the issuer's ledger does
//! not move, and a genuine approval is still served afterwards.

mod common;

use std::time::Duration;

use codecs::iso8583::Message;
use common::{Client, Tx, acquirer_client, chip_request, otb, rc, until};
use issuer_sim::cards::ClearTestCard;
use paynet::network::{self, Network, Options};

/// A genuine approval still goes through, and moves the ledger by its amount.
async fn genuine(net: &Network, c: &mut Client, card: &ClearTestCard, stan: u32, atc: u16) {
    let before = otb(net, &card.pan);
    let r = c.call(&chip_request("network", card, &Tx::purchase(stan, 123, atc))).await;
    assert_eq!(rc(&r), "00", "a genuine request after the attack: {r:?}");
    assert_eq!(otb(net, &card.pan), before - 123);
}

/// The routes (an issuer, or the stage that refused) of the journal rows written since row `from`,
/// each once, in order.
fn decided_by(net: &Network, from: u64) -> Vec<String> {
    let rows = net.switch.store.journal_read(from, 1_000).expect("journal");
    let mut routes: Vec<String> = Vec::new();
    for r in rows.into_iter().filter_map(|r| r.route) {
        if !routes.contains(&r) {
            routes.push(r);
        }
    }
    routes
}

fn with_icc(m: &mut Message, f: impl FnOnce(&mut Vec<u8>)) {
    let mut icc = m.icc_data().expect("ok").expect("DE 55").to_vec();
    f(&mut icc);
    m.set_icc_data(&icc).expect("DE 55");
}

/// The value offset of the first `tag` (two-byte tag, one-byte length) in DE 55.
fn value_at(icc: &[u8], tag: [u8; 2]) -> usize {
    icc.windows(2).position(|w| w == tag).expect("tag present") + 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_flags_spoofed_terminals_and_swapped_chip_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let card = net.ports.test_cards[0].clone();
    let mut c = acquirer_client(&net).await;
    let start = otb(&net, &card.pan);
    assert!(net.ports.terminals.len() >= 8, "the ports file lists the registered terminals");

    // 1. An all-zero ARQC with DE 123 claiming the token service verified it (DF8106 = "1").
    let mut forged = chip_request("network", &card, &Tx::purchase(1, 700_000, 40));
    with_icc(&mut forged, |icc| {
        let at = value_at(icc, [0x9F, 0x26]);
        icc[at..at + 8].fill(0);
    });
    let mut t = codecs::tlv::TlvBuilder::new();
    t.primitive(codecs::tlv::Tag::new(0xDF8106), b"1").expect("tag");
    forged.set_bytes(123, t.finish().to_vec()).expect("DE 123");
    let r = c.call(&forged).await;
    assert_ne!(rc(&r), "00", "a forged cryptogram-verified flag is not trusted");
    assert_eq!(rc(&r), "82");
    assert!(!r.contains(123) && !r.contains(38), "nothing of the forgery comes back: {r:?}");
    // The same ATC again, with a new STAN: still refused.
    let mut again = forged.clone();
    again.set_text(11, "000002").expect("DE 11");
    assert_eq!(rc(&c.call(&again).await), "82");
    assert_eq!(otb(&net, &card.pan), start, "nothing booked");

    // 2. A terminal nobody registered, and a registered TID with another merchant ID: 58.
    let stranger = Tx { tid: "EVIL0001".into(), ..Tx::purchase(3, 100, 41) };
    assert_eq!(rc(&c.call(&chip_request("network", &card, &stranger)).await), "58");
    let mut spoofed = chip_request("network", &card, &Tx::purchase(4, 100, 42));
    spoofed.set_text(42, "MERCHANT0000666").expect("DE 42");
    assert_eq!(rc(&c.call(&spoofed).await), "58");
    // The same over the ASCII listener.
    let mut ca = common::acquirer_ascii_client(&net).await;
    assert_eq!(rc(&ca.call(&chip_request("iso87ascii", &card, &stranger)).await), "58");
    assert_eq!(otb(&net, &card.pan), start);

    // 3. An advice of 7,000.00 with no original, from a stranger and from a registered terminal.
    let mut advice = chip_request("network", &card, &Tx::purchase(5, 700_000, 43));
    advice.set_mti(codecs::iso8583::Mti::AUTHORIZATION_ADVICE);
    advice.set_text(39, "00").expect("DE 39");
    let mut from_stranger = advice.clone();
    from_stranger.set_text(41, "EVIL0001").expect("DE 41");
    assert_eq!(rc(&c.call(&from_stranger).await), "58");
    assert_eq!(rc(&c.call(&advice).await), "25", "no original: unable to locate");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(otb(&net, &card.pan), start, "no advice reaches the issuer");
    assert_eq!(net.switch.store.saf_pending(None).expect("saf"), 0, "nothing queued for the issuer");

    // 4. Chip data that disagrees with the message, under a valid cryptogram.
    let mut amount = chip_request("network", &card, &Tx::purchase(6, 100, 44));
    amount.set_text(4, "000000000001").expect("DE 4");
    assert_eq!(rc(&c.call(&amount).await), "13", "DE 4 is not what the card signed");
    let mut currency = chip_request("network", &card, &Tx::purchase(7, 100, 45));
    currency.set_text(49, "840").expect("DE 49");
    assert_eq!(rc(&c.call(&currency).await), "13", "DE 49 is not what the card signed");
    let mut aac = chip_request("network", &card, &Tx::purchase(8, 100, 46));
    with_icc(&mut aac, |icc| {
        let at = value_at(icc, [0x9F, 0x27]);
        icc[at] = 0x00;
    });
    assert_eq!(rc(&c.call(&aac).await), "12", "the card's own decline sent online");
    let mut keyed = chip_request("network", &card, &Tx::purchase(9, 100, 47));
    keyed.set_text(22, "012").expect("DE 22");
    assert_eq!(rc(&c.call(&keyed).await), "12", "DE 22 says keyed, the request carries chip data");
    // Another card's PAN (DE 2), or another PAN sequence number (DE 23), under this card's valid
    // cryptogram: the card named itself in its chip data (5A, 5F34), so the switch refuses it (12)
    // and nothing reaches the issuer.
    let other_before = otb(&net, &net.ports.test_cards[1].pan);
    let journal_before = net.switch.store.journal_count().expect("journal");
    let mut other_card = chip_request("network", &card, &Tx::purchase(10, 100, 48));
    other_card.set_text(2, &net.ports.test_cards[1].pan).expect("DE 2");
    let r = c.call(&other_card).await;
    assert_eq!(rc(&r), "12", "another card's PAN under this card's cryptogram: {r:?}");
    assert!(!r.contains(38));
    let mut other_psn = chip_request("network", &card, &Tx::purchase(13, 100, 51));
    assert_eq!(other_psn.text(23).as_deref(), Some("000"));
    other_psn.set_text(23, "001").expect("DE 23");
    let r = c.call(&other_psn).await;
    assert_eq!(rc(&r), "12", "another PAN sequence number under this card's cryptogram: {r:?}");
    assert_eq!(decided_by(&net, journal_before), ["validate"], "refused at the edge, nothing forwarded");
    assert_eq!(otb(&net, &net.ports.test_cards[1].pan), other_before);
    assert_eq!(otb(&net, &card.pan), start);

    // 5. Processing codes only the network originates (token ID&V): 12.
    let mut idv = chip_request("network", &card, &Tx::purchase(11, 0, 49));
    idv.set_text(3, "900000").expect("DE 3");
    assert_eq!(rc(&c.call(&idv).await), "12");

    genuine(&net, &mut c, &card, 12, 50).await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversals_need_their_own_original_and_the_cache_answers_only_the_same_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut net = network::start(Options::new(dir.path())).await.expect("network");
    let card = net.ports.test_cards[0].clone();
    let other = net.ports.test_cards[1].clone();
    let mut c = acquirer_client(&net).await;

    // TERM0001 is approved for 50.00.
    let original = chip_request("network", &card, &Tx::purchase(21, 5_000, 60));
    let r = c.call(&original).await;
    assert_eq!(rc(&r), "00");
    let booked = otb(&net, &card.pan);

    // Another terminal of the same acquirer reverses it: no original of its own, 25.
    let reversal_by = |tid: &str, amount: u64, stan: u32| {
        let mut m = Message::new(original.spec().clone(), codecs::iso8583::Mti::REVERSAL_REQUEST);
        for de in [2u16, 3, 4, 7, 11, 12, 13, 22, 37, 41, 42, 49] {
            m.copy_from(&original, de).expect("copy");
        }
        m.set_text(41, tid).expect("DE 41");
        m.set_text(11, &format!("{stan:06}")).expect("DE 11");
        m.set_text(4, &format!("{amount:012}")).expect("DE 4");
        let t = |de| original.text(de).map(|c| c.into_owned()).unwrap_or_default();
        m.set_text(90, &format!("0100{}{}{}", t(11), t(7), "0".repeat(22))).expect("DE 90");
        m
    };
    assert_eq!(rc(&c.call(&reversal_by("TERM0002", 5_000, 91)).await), "25");
    // The terminal itself, for more than the original: 12.
    assert_eq!(rc(&c.call(&reversal_by("TERM0001", 9_000, 92)).await), "12");
    // With another card's PAN: 12.
    let mut swapped = reversal_by("TERM0001", 5_000, 93);
    swapped.set_text(2, &other.pan).expect("DE 2");
    assert_eq!(rc(&c.call(&swapped).await), "12");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(otb(&net, &card.pan), booked, "no refused reversal reached the issuer");

    // Cache probing: another card and amount under the original's TID, STAN and DE 7 gets 94 and
    // none of the original's answer (its PAN, expiry or authorization code).
    let mut probe = chip_request("network", &other, &Tx::purchase(21, 1, 61));
    probe.set_text(7, &original.text(7).expect("DE 7")).expect("DE 7");
    let p = c.call(&probe).await;
    assert_eq!(rc(&p), "94");
    assert_eq!(p.text(2).as_deref(), Some(other.pan.as_str()), "only the prober's own PAN");
    assert!(!p.contains(38), "no authorization code: {p:?}");
    assert_eq!(p.text(14), probe.text(14), "DE 14 is the prober's own, echoed");
    // The real repeat still gets the original answer, booked once.
    let again = c.call(&original).await;
    assert_eq!(again.text(38), r.text(38));
    assert_eq!(otb(&net, &card.pan), booked);

    // The genuine reversal is accepted once; its repeat is answered again and books nothing more.
    let genuine_reversal = reversal_by("TERM0001", 5_000, 94);
    assert_eq!(rc(&c.call(&genuine_reversal).await), "00");
    until("the reversal reaches the issuer", || otb(&net, &card.pan) == booked + 5_000).await;
    let repeat = reversal_by("TERM0001", 5_000, 95);
    assert_eq!(rc(&c.call(&repeat).await), "00", "a second reversal of the same original");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(otb(&net, &card.pan), booked + 5_000, "released once");
    assert_eq!(net.switch.store.saf_pending(None).expect("saf"), 0);
    let journal_before = net.switch.store.journal_count().expect("journal");

    // With the issuer away, anything still owed to it would wait in the store-and-forward queue:
    // a third reversal under a new STAN, the first one's repeat as 0401 and a 0421 under another
    // STAN are all answered from the switch's own record, and nothing is queued for the issuer.
    net.stop_issuer().await;
    until("the link notices", || !net.switch.engine.issuers.values().any(|h| h.link.is_up())).await;
    let mut c = acquirer_client(&net).await;
    let mut repeat_mti = reversal_by("TERM0001", 5_000, 94);
    repeat_mti.set_mti(codecs::iso8583::Mti::from_digits(b"0401").expect("MTI"));
    let mut repeat_advice = reversal_by("TERM0001", 5_000, 97);
    repeat_advice.set_mti(codecs::iso8583::Mti::from_digits(b"0421").expect("MTI"));
    for (m, answer_mti) in
        [(reversal_by("TERM0001", 5_000, 96), "0410"), (repeat_mti, "0411"), (repeat_advice, "0431")]
    {
        let r = c.call(&m).await;
        assert_eq!((r.mti().as_str(), rc(&r).as_str()), (answer_mti, "00"), "{r:?}");
    }
    assert_eq!(net.switch.store.saf_pending(None).expect("saf"), 0, "nothing owed to the issuer");
    assert_eq!(decided_by(&net, journal_before), ["local", "duplicate"], "nothing sent");
    net.start_issuer().await.expect("issuer back");
    until("the link is back", || net.switch.engine.issuers.values().all(|h| h.link.is_up())).await;
    assert_eq!(otb(&net, &card.pan), booked + 5_000, "the ledger did not move");
    assert_eq!(net.switch.store.saf_pending(None).expect("saf"), 0);

    let mut c = acquirer_client(&net).await;
    genuine(&net, &mut c, &card, 30, 62).await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atc_is_accepted_once_across_a_restart_and_in_stand_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The switch verifies on the issuer's behalf, so it keeps the cards' ATC windows itself.
    let mut opts = Options::new(dir.path());
    opts.on_behalf = true;
    let net = network::start(opts).await.expect("network");
    let card = net.ports.test_cards[2].clone();
    let token_card = net.ports.test_cards[3].clone();
    let phone = common::provision_token(&net, "replay-1", &token_card).await;
    let mut c = acquirer_client(&net).await;
    let r = c.call(&chip_request("network", &card, &Tx::purchase(1, 1_000, 7))).await;
    assert_eq!(rc(&r), "00");
    let booked = otb(&net, &card.pan);
    let r = c.call(&common::chip_request_for(&phone, &Tx::purchase(2, 500, 1))).await;
    assert_eq!(rc(&r), "00", "the token pays once");
    let token_booked = otb(&net, &token_card.pan);

    // The approved ATC replayed under a new STAN while the issuer is up: refused before it.
    let replay = c.call(&chip_request("network", &card, &Tx::purchase(3, 1_000, 7))).await;
    assert_eq!(rc(&replay), "82", "a replayed ATC, online");
    assert!(!replay.contains(38));
    assert_eq!(otb(&net, &card.pan), booked, "nothing booked");
    drop(c);

    // The switch restarts: the windows are read back from its store.
    let mut net = net.restart_switch().await.expect("restart");
    let mut c = acquirer_client(&net).await;
    let replay = c.call(&chip_request("network", &card, &Tx::purchase(4, 1_000, 7))).await;
    assert_eq!(rc(&replay), "82", "the ATC used before the restart, with the issuer up");
    let token_replay = c.call(&common::chip_request_for(&phone, &Tx::purchase(5, 500, 1))).await;
    assert_eq!(rc(&token_replay), "82", "the token's ATC used before the restart");
    assert_eq!(token_replay.text(2).as_deref(), Some(phone.pan.as_str()));
    assert_eq!(otb(&net, &card.pan), booked);
    assert_eq!(otb(&net, &token_card.pan), token_booked);
    drop(c);

    // Then the issuer goes away: stand-in is the switch's own decision.
    net.stop_issuer().await;
    until("the link notices", || !net.switch.engine.issuers.values().any(|h| h.link.is_up())).await;
    let mut c = acquirer_client(&net).await;
    let replay = c.call(&chip_request("network", &card, &Tx::purchase(6, 1_000, 7))).await;
    assert_eq!(rc(&replay), "82", "the ATC used before the restart is refused, in stand-in too");
    // A fresh ATC is approved in stand-in; the same ATC again is not.
    assert_eq!(rc(&c.call(&chip_request("network", &card, &Tx::purchase(7, 1_000, 8))).await), "00");
    assert_eq!(rc(&c.call(&chip_request("network", &card, &Tx::purchase(8, 1_000, 8))).await), "82");
    // A card the switch cannot verify (a tampered cryptogram) is never approved in stand-in.
    let mut bad = chip_request("network", &card, &Tx::purchase(9, 1_000, 9));
    with_icc(&mut bad, |icc| {
        let at = value_at(icc, [0x9F, 0x26]);
        icc[at] ^= 1;
    });
    assert_eq!(rc(&c.call(&bad).await), "82");

    // The issuer back: the one stand-in approval reaches it as an advice, nothing else.
    net.start_issuer().await.expect("issuer back");
    until("the stand-in advice is delivered", || {
        net.switch.store.saf_pending(None).is_ok_and(|n| n == 0) && otb(&net, &card.pan) == booked - 1_000
    })
    .await;
    assert_eq!(otb(&net, &token_card.pan), token_booked);
    let mut c = acquirer_client(&net).await;
    genuine(&net, &mut c, &card, 10, 10).await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_issuers_key_stand_in_approves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut net = network::start(Options::new(dir.path())).await.expect("network");
    let card = net.ports.test_cards[0].clone();
    let start = otb(&net, &card.pan);
    net.stop_issuer().await;
    until("the link notices", || !net.switch.engine.issuers.values().any(|h| h.link.is_up())).await;
    let mut c = acquirer_client(&net).await;
    let r = c.call(&chip_request("network", &card, &Tx::purchase(1, 1_000, 1))).await;
    assert_eq!(rc(&r), "91", "a cryptogram the switch could not verify is not approved in stand-in");
    assert!(!r.contains(38));
    net.start_issuer().await.expect("issuer back");
    until("the link is back", || net.switch.engine.issuers.values().all(|h| h.link.is_up())).await;
    assert_eq!(net.switch.store.saf_pending(None).expect("saf"), 0, "no advice owed");
    assert_eq!(otb(&net, &card.pan), start, "nothing booked");
    let mut c = acquirer_client(&net).await;
    genuine(&net, &mut c, &card, 2, 2).await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cards_stand_in_total_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The switch verifies on the issuer's behalf (so stand-in may approve) and keeps its decision
    // state in its own SQLite store.
    let mut opts = Options::new(dir.path());
    opts.on_behalf = true;
    assert!(opts.store.url.is_none(), "the node's own SQLite store");
    let max_total = opts.stand_in.max_total_per_card_minor;
    let each = opts.stand_in.max_amount_minor;
    assert!(max_total.is_multiple_of(each), "the limit is reached exactly");
    let mut net = network::start(opts).await.expect("network");
    let card = net.ports.test_cards[4].clone();
    let start = otb(&net, &card.pan);
    net.stop_issuer().await;
    until("the link notices", || !net.switch.engine.issuers.values().any(|h| h.link.is_up())).await;
    let mut c = acquirer_client(&net).await;
    let mut atc = 0u16;
    let mut stan = 0u32;
    let mut next = |amount: u64| {
        atc += 1;
        stan += 1;
        chip_request("network", &card, &Tx::purchase(stan, amount, atc))
    };
    // Stand-in approves up to the card's total.
    for _ in 0..max_total / each {
        let r = c.call(&next(each)).await;
        assert_eq!(rc(&r), "00", "within the card's stand-in total: {r:?}");
    }
    drop(c);

    // The switch restarts, the issuer still away: the card's total is read back, and one minor
    // unit more is over it.
    let mut net = net.restart_switch().await.expect("restart");
    until("the link is down", || !net.switch.engine.issuers.values().any(|h| h.link.is_up())).await;
    let mut c = acquirer_client(&net).await;
    // Stand-in is deciding after the restart: another card is approved by it...
    let other = net.ports.test_cards[5].clone();
    let other_start = otb(&net, &other.pan);
    let r = c.call(&chip_request("network", &other, &Tx::purchase(50, each, 1))).await;
    assert_eq!(rc(&r), "00", "stand-in decides after the restart: {r:?}");
    assert!(r.text(38).is_some_and(|a| a.starts_with('S')), "a stand-in approval code: {r:?}");
    // ...and this card, whose total is reached, is not.
    let r = c.call(&next(1)).await;
    assert_eq!(rc(&r), "91", "over the card's stand-in total after the restart: {r:?}");
    assert!(!r.contains(38));

    // The issuer back: exactly the stand-in approvals reach it as advices.
    net.start_issuer().await.expect("issuer back");
    until("the advices are delivered", || {
        net.switch.store.saf_pending(None).is_ok_and(|n| n == 0)
            && otb(&net, &card.pan) == start - max_total
            && otb(&net, &other.pan) == other_start - each
    })
    .await;
    let mut c = acquirer_client(&net).await;
    genuine(&net, &mut c, &card, 100, 100).await;
    net.shutdown().await;
}

/// Sends `m` and returns its answer's bytes as received, and the answer.
async fn exchange(c: &mut Client, m: &Message) -> (bytes::Bytes, Message) {
    c.send(m).await;
    let raw = c.recv_raw().await.expect("an answer");
    let answer = Message::decode(&c.spec, raw.clone()).expect("the answer decodes");
    (raw, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_to_a_token_request_carries_the_token_and_never_the_cards_pan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(dir.path());
    opts.issuer_timeout_ms = 1_000;
    let mut net = network::start(opts).await.expect("network");
    let card = net.ports.test_cards[0].clone();
    let phone = common::provision_token(&net, "edge-1", &card).await;
    assert_ne!(phone.pan, card.pan);
    let start = otb(&net, &card.pan);
    let mut c = acquirer_client(&net).await;
    // The check below finds the card's PAN where a message carries it.
    let own = chip_request("network", &card, &Tx::purchase(99, 100, 99));
    assert!(common::holds_pan(&common::bytes_of(&own), &card.pan));
    let token_answer = |what: &str, raw: &[u8], r: &Message| {
        assert_eq!(r.text(2).as_deref(), Some(phone.pan.as_str()), "{what}: DE 2 is the token");
        assert!(!common::holds_pan(raw, &card.pan), "{what}: the card's PAN is in the answer");
        assert!(!r.contains(35), "{what}: no track 2");
    };

    // The issuer declines: more than the card's open-to-buy.
    let (raw, r) = exchange(&mut c, &common::chip_request_for(&phone, &Tx::purchase(1, start + 1, 1))).await;
    assert!(!["00", "91", "96"].contains(&rc(&r).as_str()), "the issuer's decline: {r:?}");
    token_answer("issuer decline", &raw, &r);

    // The request is malformed (no processing code): 30 at the edge.
    let mut malformed = common::chip_request_for(&phone, &Tx::purchase(2, 100, 2));
    malformed.remove(3);
    let (raw, r) = exchange(&mut c, &malformed).await;
    assert_eq!(rc(&r), "30", "{r:?}");
    token_answer("format error", &raw, &r);

    // The issuer takes the request and its answer is lost: the switch times out (91) and owes the
    // issuer a reversal, which puts the ledger back.
    net.issuer_state.faults.write().expect("faults").push(issuer_sim::server::FaultRule::on_amount(
        777,
        Some("0100"),
        "drop",
    ));
    let (raw, r) = exchange(&mut c, &common::chip_request_for(&phone, &Tx::purchase(3, 777, 3))).await;
    assert_eq!(rc(&r), "91", "{r:?}");
    token_answer("timeout", &raw, &r);
    // Its answer garbled on the way back: no answer the switch can read.
    net.issuer_state.faults.write().expect("faults").push(issuer_sim::server::FaultRule::on_amount(
        778,
        Some("0100"),
        "garble",
    ));
    let (raw, r) = exchange(&mut c, &common::chip_request_for(&phone, &Tx::purchase(4, 778, 4))).await;
    assert_ne!(rc(&r), "00", "{r:?}");
    token_answer("garbled issuer answer", &raw, &r);
    net.issuer_state.faults.write().expect("faults").clear();
    until("the reversals put the ledger back", || otb(&net, &card.pan) == start).await;

    // The issuer is down: more than stand-in may approve, 91.
    net.stop_issuer().await;
    until("the link notices", || !net.switch.engine.issuers.values().any(|h| h.link.is_up())).await;
    let mut c = acquirer_client(&net).await;
    let (raw, r) = exchange(&mut c, &common::chip_request_for(&phone, &Tx::purchase(5, 20_000, 5))).await;
    assert_eq!(rc(&r), "91", "{r:?}");
    token_answer("issuer down", &raw, &r);
    net.start_issuer().await.expect("issuer back");
    until("the link is back", || net.switch.engine.issuers.values().all(|h| h.link.is_up())).await;
    until("nothing owed", || net.switch.store.saf_pending(None).is_ok_and(|n| n == 0)).await;
    assert_eq!(otb(&net, &card.pan), start, "nothing booked on the card's account");

    // A genuine token payment: approved on the card's account, the token in the answer.
    let mut c = acquirer_client(&net).await;
    let (raw, r) = exchange(&mut c, &common::chip_request_for(&phone, &Tx::purchase(6, 250, 6))).await;
    assert_eq!(rc(&r), "00", "{r:?}");
    token_answer("approval", &raw, &r);
    assert_eq!(otb(&net, &card.pan), start - 250);
    net.shutdown().await;
}

/// The files of `dir` and below.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(files_under(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn cvv2_track_2_and_pin_blocks_are_nowhere_at_rest_or_in_the_logs() {
    use common::process::serve_kept_logged;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ports_path, state) = (dir.path().join("ports.json"), dir.path().join("state"));
    let (out, err) = (dir.path().join("serve.out"), dir.path().join("serve.err"));
    // Everything logged, as verbosely as an operator could ask for.
    let serve = serve_kept_logged(&ports_path, &state, dir.path(), &out, &err, "debug");
    let ports = terminal_kit::ports::PortsFile::load(&ports_path).expect("ports file");
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ports_path).expect("read")).expect("JSON");
    let card = ports.test_cards[0].clone();
    let cvv2 = raw["test_cards"][0]["cvv2"].as_str().expect("cvv2").to_string();
    let spec = codecs::iso8583::Spec::builtin("network").expect("spec");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (track2, block) = rt.block_on(async {
        let a = &ports.acquirer;
        let mut c =
            Client::connect_to(&a.host, a.port, codecs::framing::FramingKind::Binary2, "network").await;
        // Card not present: the CVV2 in DE 48 subelement 92.
        let order = terminal_sim::checkout::Order {
            stan: 1,
            amount: 1_500,
            currency: 978,
            tid: "WEB00001".into(),
            mid: "SHOP00000000001".into(),
            mcc: "5999".into(),
            transmitted: "1125101010".into(),
        };
        let m = terminal_sim::checkout::key_entered_request(spec, &card.pan, &card.expiry, &cvv2, &order)
            .expect("request");
        assert_eq!(rc(&c.call(&m).await), "00", "the right CVV2");
        // At an ATM: the card's track 2 (DE 35) and its PIN block under the ATM's DUKPT key (DE 52).
        let atm = &ports.atm_terminals[0];
        let ipek = crypto::keys::TdesKey::from_hex("ipek", &atm.ipek).expect("ipek");
        let ksn0 = crypto::dukpt::TdesKsn::from_hex(&atm.ksn).expect("ksn");
        let mut device =
            crypto::dukpt::tdes::TdesDukptDevice::load_initial_key(&ipek, &ksn0).expect("device");
        let (ksn, key) = device.next_transaction().expect("dukpt");
        let pek = crypto::dukpt::tdes::working_key(&key, crypto::dukpt::KeyUsage::Pin).expect("pek");
        let block = crypto::pin::encrypt_pin_block(
            &crypto::keys::SymmetricKey::Tdes(pek),
            crypto::pin::PinBlockFormat::Iso0,
            &crypto::pin::Pin::new(&card.pin).expect("pin"),
            &card.pan,
            &[0xFF; 8],
        )
        .expect("block");
        let track2 = format!("{}D{}2010000093715", card.pan, card.expiry);
        let mut m = terminal_kit::pos::chip_request(
            spec,
            &card,
            &Tx { tid: atm.tid.clone(), ..Tx::purchase(2, 500, 2) },
        )
        .expect("request");
        m.set_text(35, &track2).expect("DE 35");
        m.set_bytes(52, block.clone()).expect("DE 52");
        m.set_bytes(53, ksn.as_bytes().to_vec()).expect("DE 53");
        m.set_text(42, terminal_sim::mix::ATM_ACCEPTOR_ID).expect("DE 42");
        assert_eq!(rc(&c.call(&m).await), "00", "the right PIN");
        (track2, block)
    });
    // Stopped as an operator stops it: what it wrote is all on disk.
    drop(serve);

    let hex_forms =
        |b: &[u8]| vec![b.to_vec(), hex::encode(b).into_bytes(), hex::encode_upper(b).into_bytes()];
    let mut secrets: Vec<(&str, Vec<u8>)> = Vec::new();
    for form in hex_forms(&block) {
        secrets.push(("the PIN block", form));
    }
    secrets.push(("track 2", track2.as_bytes().to_vec()));
    secrets.push(("track 2", track2.replace('D', "=").into_bytes()));
    let padded = if track2.len().is_multiple_of(2) { track2.clone() } else { format!("{track2}F") };
    secrets.push(("track 2 (packed)", hex::decode(&padded).expect("hex digits and D")));
    secrets.push(("track 2 (packed, in hex)", track2.clone().into_bytes().to_ascii_lowercase()));
    let subelement = format!("92{:02}{cvv2}", cvv2.len());
    for form in hex_forms(subelement.as_bytes()) {
        secrets.push(("the CVV2 subelement", form));
    }
    secrets.push(("the PAN", card.pan.as_bytes().to_vec()));

    // The switch's SQLite files (the databases and their journals), and both logs.
    let databases: Vec<_> = files_under(&state)
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".db")))
        .collect();
    assert!(databases.len() >= 2, "the switch's store and the token vault: {databases:?}");
    let logs = [out, err];
    let logged = std::fs::read(&logs[1]).expect("stderr");
    assert!(logged.len() > 1_000, "the switch logged (at debug)");
    // The journal did keep both transactions (masked).
    let masked = codecs::pan::mask(&card.pan);
    let journal = std::fs::read(state.join("data/switch.db")).expect("the switch's store");
    assert!(journal.windows(masked.len()).any(|w| w == masked.as_bytes()), "journal rows of the card");
    let shown = format!("92{:02}{}", cvv2.len(), "*".repeat(cvv2.len()));
    assert!(journal.windows(shown.len()).any(|w| w == shown.as_bytes()), "DE 48 journaled masked");
    for f in databases.iter().chain(logs.iter()) {
        let bytes = std::fs::read(f).expect("read");
        for (what, s) in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_slice()),
                "{what} is in {}",
                f.file_name().and_then(|n| n.to_str()).unwrap_or("?")
            );
        }
    }
}
