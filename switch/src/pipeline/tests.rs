//! The pipeline without sockets: a registry with one loopback acquirer, one issuer whose IMK-AC
//! the switch holds, the state book on an in-memory store, and the issuer's answers made up here.

use std::sync::Arc;

use codecs::iso8583::{Message, Mti, ResponseCode, Spec};
use crypto::keyblock::Header;
use crypto::keys::{SymmetricKey, TdesKey};
use crypto::keystore::{KeyName, Keystore, Lmk};
use terminal_kit::pos::{TestCard, Tx, chip_request};

use super::*;
use crate::detokenize::NoTokens;
use crate::store::sqlite::SqliteStore;

const IMK: &str = "0123456789ABCDEFFEDCBA9876543210";
const NOW: u64 = 1_795_000_000_000;

fn pipeline() -> Pipeline {
    pipeline_on(Arc::new(SqliteStore::in_memory().expect("store")))
}

/// The fixture's pipeline over `store` (the engine's tests give it one that fails on demand).
pub(crate) fn pipeline_on(store: Arc<dyn crate::store::Store>) -> Pipeline {
    let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("LMK");
    let mut ks = Keystore::new(lmk);
    let imk = TdesKey::from_hex("imk", IMK).expect("imk");
    ks.import(
        KeyName::new("issuer-a.imk-ac").expect("name"),
        &Header::parse_template("D0000E0TX00N0000").expect("header"),
        &SymmetricKey::Tdes(imk),
        &[0u8; 64],
    )
    .expect("import");
    // The writer goes on as long as the state book lives.
    let (pipeline, _writer) = fixture::Fixture {
        hsm: Arc::new(crypto::hsm::SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.fill(1)))),
        detokenizer: Arc::new(NoTokens),
        imk_ac: Some("issuer-a.imk-ac".into()),
        routes: vec!["476173"],
        stand_in_max_minor: (10_000, 15_000),
        dedupe: (60_000, 10_000),
        entropy: Arc::new(testkit::TestRng::seeded(7)),
        fingerprint_key: 9,
    }
    .build(store)
    .expect("pipeline");
    pipeline
}

pub(crate) use fixture::{listener, local};

fn card(pan: &str) -> TestCard {
    TestCard::visa18(&TdesKey::from_hex("imk", IMK).expect("imk"), pan).expect("test card")
}

const PAN: &str = "4761739001010010";

pub(crate) fn purchase(stan: u32, amount: u64, atc: u16) -> Message {
    purchase_by(PAN, stan, amount, atc)
}

fn purchase_by(pan: &str, stan: u32, amount: u64, atc: u16) -> Message {
    chip_request(Spec::builtin("network").expect("spec"), &card(pan), &Tx::purchase(stan, amount, atc))
        .expect("request")
}

fn begin(p: &Pipeline, m: Message) -> Step {
    let raw = m.encode().expect("encode");
    p.begin(&listener(), &local(), &raw, m, NOW)
}

/// The answer of a step that answers at once.
fn answered(step: Step) -> Done {
    match step {
        Step::Answer(d) => *d,
        _ => panic!("expected an answer"),
    }
}

fn rc(d: &Done) -> String {
    d.answer.text(39).map(|c| c.into_owned()).unwrap_or_default()
}

fn forwarded(step: Step) -> Forward {
    match step {
        Step::Forward(f) => *f,
        Step::Answer(d) => panic!("expected a forward, got {} ({:?})", rc(&d), d.decline),
        _ => panic!("expected a forward"),
    }
}

/// The issuer's approval of `sent`.
pub(crate) fn approval(sent: &Message) -> Message {
    let mut a = respond::answer(sent, ResponseCode::APPROVED);
    a.set_text(38, "123456").expect("DE 38");
    a
}

/// Completes a forwarded request with the issuer's approval.
fn approve(p: &Pipeline, f: Forward) -> Done {
    let a = approval(f.msg());
    p.complete(f.pending, Ok(a), NOW)
}

#[test]
fn identify_refuses_strangers_and_spoofed_merchants_with_58() {
    let p = pipeline();
    let stranger = {
        let mut m = purchase(1, 100, 1);
        m.set_text(41, "EVIL0001").expect("DE 41");
        m
    };
    let d = answered(begin(&p, stranger));
    assert_eq!(rc(&d), "58");
    assert_eq!(d.decline.as_ref().map(|d| d.stage), Some(Stage::Identify));
    let mut spoofed = purchase(2, 100, 2);
    spoofed.set_text(42, "MERCHANT0000666").expect("DE 42");
    assert_eq!(rc(&answered(begin(&p, spoofed))), "58");
    let elsewhere = Peer::tcp("192.0.2.1".parse().expect("ip"));
    let m = purchase(3, 100, 3);
    let raw = m.encode().expect("encode");
    assert_eq!(rc(&answered(p.begin(&listener(), &elsewhere, &raw, m, NOW))), "58");
}

#[test]
fn sanitize_strips_network_data_and_sets_the_acquirer() {
    let p = pipeline();
    let mut m = purchase(1, 100, 1);
    m.set_bytes(123, vec![0xDF, 0x81, 0x06, 0x01, b'1']).expect("DE 123");
    m.set_text(32, "999999").expect("DE 32");
    m.set_text(38, "ABC123").expect("DE 38");
    let f = forwarded(begin(&p, m));
    assert!(!f.msg().contains(123) && !f.msg().contains(38), "{:?}", f.msg());
    assert_eq!(f.msg().text(32).as_deref(), Some("400001"));
    let mut idv = purchase(2, 0, 2);
    idv.set_text(3, "900000").expect("DE 3");
    let d = answered(begin(&p, idv));
    assert_eq!((rc(&d).as_str(), d.decline.map(|d| d.stage)), ("12", Some(Stage::Sanitize)));
}

#[test]
fn chip_data_must_agree_with_the_message() {
    let p = pipeline();
    let mut amount = purchase(1, 100, 1);
    amount.set_text(4, "000000000001").expect("DE 4");
    assert_eq!(rc(&answered(begin(&p, amount))), "13");
    let mut currency = purchase(2, 100, 2);
    currency.set_text(49, "840").expect("DE 49");
    assert_eq!(rc(&answered(begin(&p, currency))), "13");
    // The card gave its PSN (5F34 = 01); DE 23 says 02.
    let mut psn = purchase(3, 100, 3);
    psn.set_text(23, "002").expect("DE 23");
    assert_eq!(rc(&answered(begin(&p, psn))), "12");
    // The card gave its PAN (5A); DE 2 names another card.
    let mut pan = purchase(5, 100, 5);
    pan.set_text(2, "4761739001010028").expect("DE 2");
    let d = answered(begin(&p, pan));
    assert_eq!((rc(&d).as_str(), d.decline.map(|d| d.stage)), ("12", Some(Stage::Validate)));
    let mut magstripe = purchase(4, 100, 4);
    magstripe.set_text(22, "901").expect("DE 22");
    assert_eq!(rc(&answered(begin(&p, magstripe))), "12");
}

#[test]
fn chip_data_without_a_required_tag_or_unparsable_is_a_format_error() {
    let p = pipeline();
    // The same chip data without 9F37 (the unpredictable number the cryptogram covers).
    let mut m = purchase(1, 100, 1);
    let icc = m.icc_data().expect("DE 55").expect("present");
    let mut b = codecs::tlv::TlvBuilder::new();
    for n in codecs::tlv::decode_lenient(&icc).expect("parses") {
        if n.tag().value() != 0x9F37 {
            b.primitive(n.tag(), n.value()).expect("tag");
        }
    }
    m.set_icc_data(&b.finish()).expect("DE 55");
    let d = answered(begin(&p, m));
    let decline = d.decline.as_ref().expect("declined");
    assert_eq!((rc(&d).as_str(), decline.stage), ("30", Stage::Validate));
    assert!(decline.reason.contains("9F37"), "{}", decline.reason);
    // A tag announcing more bytes than DE 55 has.
    let mut broken = purchase(2, 100, 2);
    broken.set_icc_data(&[0x9F, 0x26, 0x08, 0x01, 0x02]).expect("DE 55");
    let d = answered(begin(&p, broken));
    assert_eq!((rc(&d).as_str(), d.decline.map(|d| d.stage)), ("30", Some(Stage::Validate)));
}

#[test]
fn chip_data_naming_a_tag_twice_is_refused_before_anything_is_checked_or_sent() {
    let p = pipeline();
    // The card signed 1.00; a 9F02 of 50.00 put before its own, and DE 4 to match: the switch
    // would read one amount and the issuer's cryptogram cover the other.
    let mut m = purchase(1, 100, 1);
    let icc = m.icc_data().expect("DE 55").expect("present");
    let mut forged = vec![0x9F, 0x02, 0x06, 0x00, 0x00, 0x00, 0x00, 0x50, 0x00];
    forged.extend_from_slice(&icc);
    m.set_icc_data(&forged).expect("DE 55");
    m.set_text(4, "000000005000").expect("DE 4");
    let d = answered(begin(&p, m));
    let decline = d.decline.as_ref().expect("declined");
    assert_eq!((rc(&d).as_str(), decline.stage), ("30", Stage::Validate));
    assert!(decline.reason.contains("9F02"), "{}", decline.reason);
    // Nothing was used up: the card's own request with the same ATC goes to the issuer.
    let f = forwarded(begin(&p, purchase(2, 100, 1)));
    assert_eq!(rc(&approve(&p, f)), "00");
}

#[test]
fn verify_refuses_a_bad_cryptogram_and_a_replayed_atc_before_the_issuer() {
    let p = pipeline();
    let f = forwarded(begin(&p, purchase(1, 100, 5)));
    let done = approve(&p, f);
    assert_eq!(rc(&done), "00");
    // The same ATC under a new STAN: refused here, with the issuer's tag 91.
    let d = answered(begin(&p, purchase(2, 100, 5)));
    assert_eq!(rc(&d), "82");
    assert_eq!(d.route, "issuer-a:verify");
    assert!(d.answer.contains(55), "tag 91 on the decline");
}

#[test]
fn a_repeat_gets_the_original_answer_and_a_different_transaction_94() {
    let p = pipeline();
    let m = purchase(1, 100, 1);
    let f = forwarded(begin(&p, m.clone()));
    // Still in flight: the repeat waits for it.
    assert!(matches!(begin(&p, m.clone()), Step::AwaitDuplicate { .. }));
    let done = approve(&p, f);
    let sealed = p.seal(&done).expect("encodes");
    let again = answered(begin(&p, m.clone()));
    assert_eq!(again.route, "duplicate");
    assert_eq!(again.answer.encode().expect("encode"), sealed);
    // Same terminal, STAN and DE 7, another card and amount (its own valid cryptogram): 94 and
    // none of the original's answer.
    let other = purchase_by("4761739001010028", 1, 200, 1);
    assert_eq!(other.text(7), m.text(7));
    let d = answered(begin(&p, other));
    assert_eq!(rc(&d), "94");
    assert!(!d.answer.contains(38));
}

#[test]
fn the_issuer_down_means_stand_in_for_what_was_verified_and_an_advice_owed() {
    let p = pipeline();
    let f = forwarded(begin(&p, purchase(1, 9_000, 1)));
    let done = p.complete(f.pending, Err(LinkError::Down), NOW);
    assert_eq!(rc(&done), "00");
    assert_eq!(done.route, "issuer-a:stand-in");
    assert_eq!(done.owed.len(), 1);
    assert_eq!(done.owed[0].kind, SafKind::Advice);
    // The approval stands only with its advice made durable: otherwise the terminal is told 96
    // (an approval the issuer would never hear of is money nobody books).
    assert_eq!(done.owed[0].on_failure, Some(ResponseCode::SYSTEM_ERROR));
    // Over the card's running total (15,000): 91, nothing owed.
    let f = forwarded(begin(&p, purchase(2, 9_000, 2)));
    let done = p.complete(f.pending, Err(LinkError::Down), NOW);
    assert_eq!(rc(&done), "91");
    assert!(done.owed.is_empty());
    // A timeout: 91, and a reversal owed.
    let f = forwarded(begin(&p, purchase(3, 100, 3)));
    let done = p.complete(f.pending, Err(LinkError::Timeout), NOW);
    assert_eq!(rc(&done), "91");
    assert_eq!(
        done.owed.first().map(|o| (o.kind, o.msg.mti())),
        Some((SafKind::Reversal, Mti::REVERSAL_ADVICE))
    );
}

fn reversal_of(orig: &Message, tid: &str, stan: u32, amount: u64) -> Message {
    let mut m = Message::new(orig.spec().clone(), Mti::REVERSAL_REQUEST);
    for de in [2u16, 3, 4, 7, 11, 22, 41, 42, 49] {
        m.copy_from(orig, de).expect("copy");
    }
    m.set_text(41, tid).expect("DE 41");
    m.set_text(11, &format!("{stan:06}")).expect("DE 11");
    m.set_text(4, &format!("{amount:012}")).expect("DE 4");
    let t = |de| orig.text(de).map(|c| c.into_owned()).unwrap_or_default();
    m.set_text(90, &format!("0100{}{}{}", t(11), t(7), "0".repeat(22))).expect("DE 90");
    m
}

/// Runs a reversal as the shell would: through `begin`, its original read from the book,
/// `resume_reference`, and the answer sealed into the duplicate cache.
fn reverse(p: &Pipeline, m: Message) -> Done {
    let d = match begin(p, m) {
        Step::NeedOriginal(r) => {
            let original = p.state.original(&r.original_key).expect("read");
            let already = p.state.original(&r.own_key).expect("read");
            p.resume_reference(*r, original, already, NOW)
        }
        Step::Answer(d) => *d,
        _ => panic!("expected a reversal step"),
    };
    p.seal(&d).expect("encodes");
    d
}

#[test]
fn a_reversal_needs_its_own_original_for_no_more_than_its_amount() {
    let p = pipeline();
    let orig = purchase(1, 5_000, 1);
    let f = forwarded(begin(&p, orig.clone()));
    assert_eq!(rc(&approve(&p, f)), "00");
    assert_eq!(rc(&reverse(&p, reversal_of(&orig, "TERM0002", 50, 5_000))), "25", "another terminal's");
    assert_eq!(rc(&reverse(&p, reversal_of(&orig, "TERM0001", 51, 9_000))), "12", "more than the original");
    let d = reverse(&p, reversal_of(&orig, "TERM0001", 52, 5_000));
    assert_eq!(rc(&d), "00");
    assert_eq!(d.owed.len(), 1, "owed to the issuer");
    assert!(d.owed[0].online_first, "a 0400 is offered to the issuer at once");
    // The same reversal again: its first answer, nothing owed a second time.
    let d = reverse(&p, reversal_of(&orig, "TERM0001", 52, 5_000));
    assert_eq!((rc(&d).as_str(), d.route.as_str()), ("00", "duplicate"));
    assert!(d.owed.is_empty());
    // Another reversal of the same original: accepted, and the original being fully reversed
    // already, nothing more owed.
    let d = reverse(&p, reversal_of(&orig, "TERM0001", 53, 5_000));
    assert_eq!(rc(&d), "00");
    assert!(d.owed.is_empty());
}

fn repeat_mti(mut m: Message, mti: &[u8; 4]) -> Message {
    m.set_mti(Mti::from_digits(mti).expect("MTI"));
    m
}

#[test]
fn a_reversal_already_covered_or_repeated_is_answered_here_and_owes_the_issuer_nothing() {
    let p = pipeline();
    let orig = purchase(1, 5_000, 1);
    let f = forwarded(begin(&p, orig.clone()));
    assert_eq!(rc(&approve(&p, f)), "00");
    // A partial reversal (3,000 of 5,000 given back) goes to the issuer.
    let mut partial = reversal_of(&orig, "TERM0001", 40, 5_000);
    partial.set_text(95, &format!("{:012}{:012}C00000000C00000000", 2_000, 2_000)).expect("DE 95");
    let d = reverse(&p, partial);
    assert_eq!((rc(&d).as_str(), d.owed.len()), ("00", 1));
    // Another one giving back less than that (1,000): already covered, nothing owed.
    let mut less = reversal_of(&orig, "TERM0001", 41, 5_000);
    less.set_text(95, &format!("{:012}{:012}C00000000C00000000", 4_000, 4_000)).expect("DE 95");
    let d = reverse(&p, less);
    assert_eq!((rc(&d).as_str(), d.route.as_str()), ("00", "local"));
    assert!(d.owed.is_empty(), "covered by the first reversal: {:?}", d.owed.len());
    // The full reversal: the rest goes to the issuer.
    let d = reverse(&p, reversal_of(&orig, "TERM0001", 42, 5_000));
    assert_eq!((rc(&d).as_str(), d.owed.len()), ("00", 1));
    // A second full reversal under a new STAN: the original is fully reversed, nothing owed.
    let d = reverse(&p, reversal_of(&orig, "TERM0001", 43, 5_000));
    assert_eq!((rc(&d).as_str(), d.route.as_str()), ("00", "local"));
    assert!(d.owed.is_empty(), "a fully reversed original owes the issuer nothing more");
    // Its retransmission as 0401 is the same message, and a 0421 under a new STAN is covered too.
    let d = reverse(&p, repeat_mti(reversal_of(&orig, "TERM0001", 42, 5_000), b"0401"));
    assert_eq!(rc(&d), "00");
    assert_eq!(d.answer.mti().as_str(), "0411");
    assert!(d.owed.is_empty(), "a repeat MTI is its first MTI's repeat");
    let mut advice = repeat_mti(reversal_of(&orig, "TERM0001", 42, 5_000), b"0421");
    advice.set_text(11, "000044").expect("DE 11");
    let d = reverse(&p, advice);
    assert_eq!((rc(&d).as_str(), d.owed.len()), ("00", 0));
}

#[test]
fn a_repeat_mti_of_a_reversal_never_seen_is_decided_as_its_first_and_only_once() {
    let p = pipeline();
    let orig = purchase(1, 5_000, 1);
    let f = forwarded(begin(&p, orig.clone()));
    assert_eq!(rc(&approve(&p, f)), "00");
    // The 0400 was lost on the way; its 0401 is the first the switch sees: it goes to the issuer.
    let d = reverse(&p, repeat_mti(reversal_of(&orig, "TERM0001", 50, 5_000), b"0401"));
    assert_eq!((rc(&d).as_str(), d.owed.len()), ("00", 1));
    assert!(d.owed[0].online_first, "offered to the issuer at once, as its 0400 would be");
    // The 0400 arriving late, and another 0401: the same transaction, answered again.
    for m in [
        reversal_of(&orig, "TERM0001", 50, 5_000),
        repeat_mti(reversal_of(&orig, "TERM0001", 50, 5_000), b"0401"),
    ] {
        let d = reverse(&p, m);
        assert_eq!((rc(&d).as_str(), d.owed.len()), ("00", 0));
    }
    // Issuer-originated MTIs are not an acquirer's to send.
    let d = answered(begin(&p, repeat_mti(reversal_of(&orig, "TERM0001", 51, 5_000), b"0402")));
    assert_eq!(rc(&d), "12");
}

#[test]
fn an_unreadable_original_answers_96_and_lets_the_retry_through() {
    let p = pipeline();
    let orig = purchase(1, 5_000, 1);
    let f = forwarded(begin(&p, orig.clone()));
    approve(&p, f);
    let rev = reversal_of(&orig, "TERM0001", 60, 5_000);
    let Step::NeedOriginal(r) = begin(&p, rev.clone()) else { panic!("expected a reversal step") };
    let d = p.unreadable_reference(*r);
    assert_eq!(rc(&d), "96");
    assert!(d.dedupe.is_none(), "nothing cached");
    // The retry is decided afresh, not held waiting on an answer that never comes.
    assert!(matches!(begin(&p, rev), Step::NeedOriginal(_)));
}

#[test]
fn responses_from_acquirers_are_ignored_and_echo_is_answered_locally() {
    let p = pipeline();
    let mut rsp = purchase(1, 100, 1);
    rsp.set_mti(Mti::AUTHORIZATION_RESPONSE);
    assert!(matches!(begin(&p, rsp), Step::Ignore));
    let mut echo =
        Message::new(Spec::builtin("network").expect("spec").clone(), Mti::NETWORK_MANAGEMENT_REQUEST);
    echo.set_text(7, "1125101010").expect("DE 7");
    echo.set_text(11, "000001").expect("DE 11");
    echo.set_text(70, "301").expect("DE 70");
    let d = answered(begin(&p, echo));
    assert_eq!((rc(&d).as_str(), d.route.as_str()), ("00", "local"));
}

/// A purchase the terminal sells in `currency` (DE 49 and tag 5F2A; the card's ARQC over it).
fn purchase_in(currency: &str, stan: u32, amount: u64, atc: u16) -> Message {
    let tx = Tx { currency: currency.into(), ..Tx::purchase(stan, amount, atc) };
    chip_request(Spec::builtin("network").expect("spec"), &card(PAN), &tx).expect("request")
}

/// The fixture's pipeline with the card range billed in EUR and a TWD → EUR rate.
fn converting_pipeline() -> Pipeline {
    let p = pipeline();
    let cfg = crate::config::SwitchConfig {
        routes: vec![crate::config::RouteConfig {
            prefix: "476173".into(),
            issuer: "issuer-a".into(),
            billing_currency: Some("978".into()),
        }],
        rates: vec![crate::config::RateConfig {
            from: "901".into(),
            to: "978".into(),
            rate: "0.0285714".into(),
        }],
        ..Default::default()
    };
    *p.routes.write().expect("routes") = Arc::new(cfg.route_table().expect("table"));
    p
}

#[test]
fn a_sale_in_another_currency_is_converted_for_the_issuer_and_shown_to_the_terminal() {
    let p = converting_pipeline();
    // TWD 1,000.00 → EUR 28.57 at 0.0285714.
    let f = forwarded(begin(&p, purchase_in("901", 1, 100_000, 1)));
    let sent = f.msg().clone();
    assert_eq!(sent.text(4).as_deref(), Some("000000100000"), "the issuer sees the terminal's amount");
    assert_eq!(sent.text(49).as_deref(), Some("901"));
    assert_eq!(sent.text(6).as_deref(), Some("000000002857"), "and the billing amount");
    assert_eq!(sent.text(10).as_deref(), Some("70285714"));
    assert_eq!(sent.text(51).as_deref(), Some("978"));
    let d = approve(&p, f);
    assert_eq!(rc(&d), "00");
    for (de, v) in [(4, "000000100000"), (6, "000000002857"), (10, "70285714"), (51, "978")] {
        assert_eq!(d.answer.text(de).as_deref(), Some(v), "the answer shows DE {de}");
    }
    // In the card's own currency: nothing converted.
    let f = forwarded(begin(&p, purchase_in("978", 2, 1_000, 2)));
    assert!(!f.msg().contains(6) && !f.msg().contains(10) && !f.msg().contains(51));
    // A currency with no rate to EUR: 13, nothing forwarded.
    let d = answered(begin(&p, purchase_in("392", 3, 1_000, 3)));
    assert_eq!(rc(&d), "13");
    assert_eq!(d.decline.as_ref().map(|d| d.stage), Some(Stage::Convert));
    assert!(d.decline.as_ref().is_some_and(|d| d.reason.contains("JPY to EUR")), "{:?}", d.decline);
}

#[test]
fn the_acquirer_cannot_supply_its_own_billing_amount_or_rate() {
    let p = converting_pipeline();
    let mut m = purchase_in("901", 1, 100_000, 1);
    m.set_text(6, "000000000001").expect("DE 6");
    m.set_text(10, "10000001").expect("DE 10");
    m.set_text(51, "978").expect("DE 51");
    let f = forwarded(begin(&p, m));
    assert_eq!(
        f.msg().text(6).as_deref(),
        Some("000000002857"),
        "the network's conversion, not the acquirer's"
    );
    assert_eq!(f.msg().text(10).as_deref(), Some("70285714"));
}
