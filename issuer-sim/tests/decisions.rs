//! Every decision of the issuer host, as the pure function it is: (state, request, clock) →
//! answer, with no socket. The cards and keys are generated test material (BIN 476173); requests
//! carry real ARQCs computed from the card's ICC master key and real format-0 PIN blocks under the
//! zone PIN key, so approvals and declines come from actual verification.

use std::sync::Arc;

use codecs::iso8583::{Message, Spec};
use codecs::tlv::{Tag, TlvBuilder};
use crypto::hsm::SoftHsm;
use crypto::keystore::Lmk;
use issuer_sim::cards::{ClearTestCard, TestIssuer, ZPK_NAME, generate_test_issuer};
use issuer_sim::host::{Issuer, Origin};
use issuer_sim::testing::{
    Tx, card_accepts_arpc, chip_request, pin_block, reversal, tag91, with_tsp_verified, with_zero_cryptogram,
};
use testkit::TestRng;

/// Today for the expiry checks: November 2026. Test cards expire in December 2029.
const NOW_YYMM: &str = "2611";
const NOW_MS: u64 = 1_795_000_000_000;

fn test_issuer(edit: impl FnOnce(&mut TestIssuer)) -> (Issuer, TestIssuer) {
    let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("test LMK");
    let mut test =
        generate_test_issuer(4, lmk.clone(), "2912", &mut TestRng::seeded(7).filler()).expect("test issuer");
    edit(&mut test);
    let ks = crypto::keystore::Keystore::from_toml(lmk, &test.keystore.to_toml()).expect("keystore");
    let hsm = Arc::new(SoftHsm::new(ks, TestRng::seeded(9).source()));
    (Issuer::new(hsm, ZPK_NAME, &test.cards), test)
}

fn spec() -> Arc<Spec> {
    Spec::builtin("network").expect("network spec").clone()
}

fn call(issuer: &mut Issuer, req: &Message) -> Message {
    issuer.handle(req, Origin::Unauthenticated, NOW_MS, NOW_YYMM, 424_242).expect("an answer")
}

fn rc(m: &Message) -> String {
    m.text(39).map(|c| c.into_owned()).unwrap_or_default()
}

fn with_pin(mut m: Message, t: &TestIssuer, card: &ClearTestCard, pin: &str) -> Message {
    let block = pin_block(&t.zpk_clear, &card.pan, pin).expect("PIN block");
    m.set_bytes(52, block).expect("DE 52");
    m
}

#[test]
fn purchase_is_approved_booked_and_answered_with_an_arpc_the_card_accepts() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    let before = iss.open_to_buy(&card.pan).expect("card");
    let req = chip_request(&spec(), card, &Tx::purchase(1, 12_345, 1));
    let rsp = call(&mut iss, &req);
    assert_eq!(rsp.mti().as_str(), "0110");
    assert_eq!(rc(&rsp), "00");
    assert_eq!(rsp.text(38).as_deref(), Some("424242"), "authorization code");
    assert_eq!(rsp.text(11), req.text(11), "STAN echoed");
    assert!(card_accepts_arpc(card, &req, &rsp), "tag 91: ARPC method 2 (visa18) the card verifies");
    assert_eq!(iss.open_to_buy(&card.pan), Some(before - 12_345));
}

#[test]
fn method_1_arpc_carries_the_response_code_as_arc() {
    let (mut iss, mut t) = test_issuer(|t| t.cards.cards[0].cvn = "visa10".into());
    t.clear[0].cvn = "visa10".into();
    let card = &t.clear[0];
    let ok = chip_request(&spec(), card, &Tx::purchase(1, 100, 1));
    let rsp = call(&mut iss, &ok);
    assert_eq!(rc(&rsp), "00");
    let t91 = tag91(&rsp).expect("tag 91");
    assert_eq!((t91.len(), &t91[8..]), (10, &b"00"[..]), "ARPC 8 ‖ ARC '00'");
    assert!(card_accepts_arpc(card, &ok, &rsp));
    let over = chip_request(&spec(), card, &Tx::purchase(2, 6_000_000, 2));
    let rsp = call(&mut iss, &over);
    assert_eq!(rc(&rsp), "51");
    assert_eq!(&tag91(&rsp).expect("tag 91 on a decline")[8..], b"51");
    assert!(card_accepts_arpc(card, &over, &rsp));
}

#[test]
fn unknown_card_is_14() {
    let (mut iss, t) = test_issuer(|_| {});
    let mut card = t.clear[0].clone();
    card.pan = "4761739999999990".into();
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), &card, &Tx::purchase(1, 100, 1)))), "14");
}

#[test]
fn expired_card_is_54_and_a_wrong_expiry_too() {
    let (mut iss, mut t) = test_issuer(|t| t.cards.cards[0].expiry = "2610".into());
    t.clear[0].expiry = "2610".into();
    let rsp = call(&mut iss, &chip_request(&spec(), &t.clear[0], &Tx::purchase(1, 100, 1)));
    assert_eq!(rc(&rsp), "54");
    let mut other = t.clear[1].clone();
    other.expiry = "3001".into();
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), &other, &Tx::purchase(2, 100, 1)))), "54");
}

#[test]
fn blocked_and_closed_cards_are_62_lost_is_41() {
    let (mut iss, t) = test_issuer(|t| {
        t.cards.cards[0].status = "blocked".into();
        t.cards.cards[1].status = "closed".into();
        t.cards.cards[2].status = "lost".into();
    });
    for (i, want) in [(0, "62"), (1, "62"), (2, "41")] {
        let rsp = call(&mut iss, &chip_request(&spec(), &t.clear[i], &Tx::purchase(1, 100, 1)));
        assert_eq!(rc(&rsp), want, "card {i}");
        assert!(tag91(&rsp).is_some(), "tag 91 on every chip answer");
    }
}

#[test]
fn over_the_open_to_buy_is_51_and_books_nothing() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[3];
    let otb = iss.open_to_buy(&card.pan).expect("card");
    assert!(otb <= 1_000_000);
    let req = chip_request(&spec(), card, &Tx::purchase(1, otb + 1, 1));
    let rsp = call(&mut iss, &req);
    assert_eq!(rc(&rsp), "51");
    assert!(card_accepts_arpc(card, &req, &rsp));
    assert_eq!(iss.open_to_buy(&card.pan), Some(otb));
    // Exactly the open-to-buy is fine.
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), card, &Tx::purchase(2, otb, 2)))), "00");
    assert_eq!(iss.open_to_buy(&card.pan), Some(0));
}

#[test]
fn right_pin_approves_wrong_pin_is_55_and_the_third_is_75() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    let ok = with_pin(chip_request(&spec(), card, &Tx::purchase(1, 100, 1)), &t, card, &card.pin);
    assert_eq!(rc(&call(&mut iss, &ok)), "00");
    for (atc, want) in (2u16..).zip(["55", "55", "75"]) {
        let req =
            with_pin(chip_request(&spec(), card, &Tx::purchase(atc.into(), 100, atc)), &t, card, "9999");
        assert_eq!(rc(&call(&mut iss, &req)), want, "wrong PIN try {}", atc - 1);
    }
    // Tries exhausted: even the right PIN is refused now.
    let right = with_pin(chip_request(&spec(), card, &Tx::purchase(9, 100, 9)), &t, card, &card.pin);
    assert_eq!(rc(&call(&mut iss, &right)), "75");
}

#[test]
fn a_right_pin_resets_the_tries() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[2];
    let wrong =
        |s: u16| with_pin(chip_request(&spec(), card, &Tx::purchase(s.into(), 100, s)), &t, card, "0000");
    assert_eq!(rc(&call(&mut iss, &wrong(1))), "55");
    assert_eq!(rc(&call(&mut iss, &wrong(2))), "55");
    let right = with_pin(chip_request(&spec(), card, &Tx::purchase(3, 100, 3)), &t, card, &card.pin);
    assert_eq!(rc(&call(&mut iss, &right)), "00");
    assert_eq!(rc(&call(&mut iss, &wrong(4))), "55", "three tries again after a right PIN");
}

#[test]
fn tampered_arqc_is_82_with_tag_91_and_books_nothing() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    let otb = iss.open_to_buy(&card.pan).expect("card");
    let mut req = chip_request(&spec(), card, &Tx::purchase(1, 100, 1));
    let mut icc = req.icc_data().expect("ok").expect("DE 55").to_vec();
    icc[3] ^= 0x01; // first byte of the 9F26 value
    req.set_icc_data(&icc).expect("DE 55");
    let rsp = call(&mut iss, &req);
    assert_eq!(rc(&rsp), "82");
    assert!(tag91(&rsp).is_some(), "tag 91 on a cryptogram failure too");
    assert_eq!(iss.open_to_buy(&card.pan), Some(otb));
}

#[test]
fn a_replayed_atc_is_82_even_when_lower_atcs_come_later() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[1];
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), card, &Tx::purchase(1, 100, 5)))), "00");
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), card, &Tx::purchase(2, 100, 5)))), "82", "replay");
    // ATCs need not rise (INTERFACES.md §5): an unused lower one is fine.
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), card, &Tx::purchase(3, 100, 4)))), "00");
    // Another card may use the same ATC.
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), &t.clear[0], &Tx::purchase(4, 100, 5)))), "00");
}

#[test]
fn format_errors_are_30() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    let good = chip_request(&spec(), card, &Tx::purchase(1, 100, 1));
    for de in [11u16, 3, 4, 49] {
        let mut m = good.clone();
        m.remove(de);
        let rsp = call(&mut iss, &m);
        assert_eq!(rc(&rsp), "30", "without DE {de}");
        assert!(card_accepts_arpc(card, &m, &rsp), "tag 91 on a format error of a known chip card");
    }
    let mut m = good.clone();
    m.remove(2);
    assert_eq!(rc(&call(&mut iss, &m)), "30", "without a PAN");
    let mut m = good.clone();
    m.set_icc_data(&[0x9F, 0x26, 0x08, 0x01]).expect("DE 55");
    assert_eq!(rc(&call(&mut iss, &m)), "30", "DE 55 that is not TLV");
    let mut m = good;
    let icc = m.icc_data().expect("ok").expect("DE 55");
    m.set_icc_data(&icc[11..]).expect("DE 55"); // 9F26 and 9F27 cut off
    assert_eq!(rc(&call(&mut iss, &m)), "30", "DE 55 without an ARQC");
}

#[test]
fn unsupported_processing_code_is_12() {
    let (mut iss, t) = test_issuer(|_| {});
    let mut tx = Tx::purchase(1, 100, 1);
    tx.processing_code = "200000"; // a refund: not offered by this issuer
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), &t.clear[0], &tx))), "12");
}

#[test]
fn balance_inquiry_answers_the_open_to_buy_in_de_54_and_books_nothing() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), card, &Tx::purchase(1, 2_500, 1)))), "00");
    let otb = iss.open_to_buy(&card.pan).expect("card");
    let req = chip_request(&spec(), card, &Tx::balance_inquiry(2, 2));
    let rsp = call(&mut iss, &req);
    assert_eq!(rc(&rsp), "00");
    // Account type 30 (credit), amount type 02 (available), currency, C (credit), 12 digits.
    assert_eq!(rsp.text(54).as_deref(), Some(format!("3002978C{otb:012}").as_str()));
    assert!(card_accepts_arpc(card, &req, &rsp));
    assert_eq!(iss.open_to_buy(&card.pan), Some(otb));
}

#[test]
fn cash_advance_then_partial_and_full_reversal_idempotent() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    let start = iss.open_to_buy(&card.pan).expect("card");
    // No cash without a PIN.
    let no_pin = chip_request(&spec(), card, &Tx::cash_advance(9, 50_000, 9));
    assert_eq!(rc(&call(&mut iss, &no_pin)), "55");
    assert_eq!(iss.open_to_buy(&card.pan), Some(start));
    let req = with_pin(chip_request(&spec(), card, &Tx::cash_advance(10, 50_000, 1)), &t, card, &card.pin);
    let rsp = call(&mut iss, &req);
    assert_eq!((rsp.mti().as_str(), rc(&rsp).as_str()), ("0210", "00"));
    assert_eq!(iss.open_to_buy(&card.pan), Some(start - 50_000));
    // The ATM dispensed 200.00 of 500.00: a partial reversal advice (DE 95).
    let partial = reversal(&req, "0420", 11, Some(20_000));
    for _ in 0..2 {
        let r = call(&mut iss, &partial);
        assert_eq!((r.mti().as_str(), rc(&r).as_str()), ("0430", "00"));
        assert_eq!(iss.open_to_buy(&card.pan), Some(start - 20_000), "a repeated advice moves nothing");
    }
    // A DE 95 that does not read as an amount releases nothing.
    let mut bad = partial.clone();
    bad.set_text(95, &format!("{:42}", "ABC")).expect("DE 95");
    assert_eq!(rc(&call(&mut iss, &bad)), "30");
    assert_eq!(iss.open_to_buy(&card.pan), Some(start - 20_000));
    // Then the rest is reversed too (0400, full).
    let full = reversal(&req, "0400", 12, None);
    for _ in 0..2 {
        let r = call(&mut iss, &full);
        assert_eq!((r.mti().as_str(), rc(&r).as_str()), ("0410", "00"));
        assert_eq!(iss.open_to_buy(&card.pan), Some(start));
    }
    // A reversal of something never booked is acknowledged and changes nothing.
    let never = reversal(&chip_request(&spec(), card, &Tx::purchase(99, 7, 99)), "0400", 13, None);
    assert_eq!(rc(&call(&mut iss, &never)), "00");
    assert_eq!(iss.open_to_buy(&card.pan), Some(start));
}

#[test]
fn stand_in_advice_is_booked_once_without_a_limit_check() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[3];
    let otb = iss.open_to_buy(&card.pan).expect("card");
    let mut adv = chip_request(&spec(), card, &Tx::purchase(1, otb + 5_000, 1));
    adv.set_mti("0120".parse().expect("mti"));
    adv.remove(55);
    for _ in 0..3 {
        let r = call(&mut iss, &adv);
        assert_eq!((r.mti().as_str(), rc(&r).as_str()), ("0130", "00"));
    }
    assert_eq!(iss.open_to_buy(&card.pan), Some(0), "booked once; the card is now over its line");
}

#[test]
fn token_notifications_are_recorded_with_a_masked_pan() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    let mut m = Message::new(spec(), "0620".parse().expect("mti"));
    m.set_text(2, &card.pan).expect("DE 2");
    m.set_text(3, "920000").expect("DE 3");
    m.set_text(11, "000001").expect("DE 11");
    let mut tok = TlvBuilder::new();
    tok.primitive(Tag::new(0xDF8104), b"A").expect("tlv");
    m.set_bytes(123, tok.finish().freeze()).expect("DE 123");
    let r = call(&mut iss, &m);
    assert_eq!((r.mti().as_str(), rc(&r).as_str()), ("0630", "00"));
    assert_eq!(iss.notices.len(), 1);
    assert_eq!(iss.notices[0].pan_masked, "476173******0011".replace("0011", &card.pan[12..]));
    assert!(!iss.notices[0].pan_masked.contains(&card.pan[6..12]));
}

/// The token service's "cryptogram verified" (DE 123 DF8106) is its word, believed only of a
/// request from the switch's authenticated link. From anyone else a forged flag on an all-zero
/// cryptogram is the bad cryptogram it is (82; 14 on a token PAN the issuer has no card for) —
/// never an approval, and nothing is booked.
#[test]
fn a_forged_tsp_flag_is_believed_only_from_the_authenticated_link() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    let before = iss.open_to_buy(&card.pan).expect("card");
    let forged = |stan: u32| {
        with_tsp_verified(with_zero_cryptogram(chip_request(&spec(), card, &Tx::purchase(stan, 10_000, 1))))
    };
    let rsp = iss.handle(&forged(1), Origin::Unauthenticated, NOW_MS, NOW_YYMM, 7).expect("an answer");
    assert_eq!(rc(&rsp), "82", "the issuer verified the cryptogram itself");
    assert!(tag91(&rsp).is_some(), "and answers with its own ARPC");
    assert_eq!(iss.open_to_buy(&card.pan), Some(before), "nothing booked");
    let mut token = card.clone();
    token.pan = "4895370000000001".into();
    let on_token = with_tsp_verified(chip_request(&spec(), &token, &Tx::purchase(2, 10_000, 2)));
    let rsp = iss.handle(&on_token, Origin::Unauthenticated, NOW_MS, NOW_YYMM, 7).expect("an answer");
    assert_eq!(rc(&rsp), "14", "a token PAN is no card of the issuer's");
    // From the switch's link the flag is the token service's: the issuer leaves the cryptogram
    // (under token keys it does not hold) and the ARPC to it.
    let rsp = iss.handle(&forged(3), Origin::AuthenticatedLink, NOW_MS, NOW_YYMM, 7).expect("an answer");
    assert_eq!(rc(&rsp), "00");
    assert!(tag91(&rsp).is_none(), "the token service makes the ARPC");
    assert_eq!(iss.open_to_buy(&card.pan), Some(before - 10_000));
}

#[test]
fn network_management_sign_on_sign_off_echo() {
    let (mut iss, _) = test_issuer(|_| {});
    let msg = |code: Option<&str>| {
        let mut m = Message::new(spec(), "0800".parse().expect("mti"));
        m.set_text(7, "1125101010").expect("DE 7");
        m.set_text(11, "000321").expect("DE 11");
        if let Some(c) = code {
            m.set_text(70, c).expect("DE 70");
        }
        m
    };
    for (code, want) in
        [(Some("001"), "00"), (Some("002"), "00"), (Some("301"), "00"), (Some("161"), "12"), (None, "30")]
    {
        let r = call(&mut iss, &msg(code));
        assert_eq!(r.mti().as_str(), "0810");
        assert_eq!(rc(&r), want, "DE 70 {code:?}");
        assert_eq!(r.text(11).as_deref(), Some("000321"));
        assert_eq!(r.text(70).as_deref(), code);
    }
}

fn idv_request(card: &ClearTestCard, pc: &str, rrn: &str, otp: Option<&str>) -> Message {
    let mut m = Message::new(spec(), "0100".parse().expect("mti"));
    m.set_text(2, &card.pan).expect("DE 2");
    m.set_text(3, pc).expect("DE 3");
    m.set_text(11, "000777").expect("DE 11");
    m.set_text(14, &card.expiry).expect("DE 14");
    m.set_text(37, rrn).expect("DE 37");
    let mut tok = TlvBuilder::new();
    tok.primitive(Tag::new(0xDF8105), b"wallet").expect("tlv");
    if let Some(o) = otp {
        tok.primitive(Tag::new(0xDF8110), o.as_bytes()).expect("tlv");
    }
    m.set_bytes(123, tok.finish().freeze()).expect("DE 123");
    m
}

#[test]
fn token_idv_by_policy_with_otp_step_up() {
    let (mut iss, t) = test_issuer(|t| t.cards.cards[2].idv = "decline".into());
    // Card 0: approve at once; card 1: step up (generated so); card 2: decline.
    assert_eq!(rc(&call(&mut iss, &idv_request(&t.clear[0], "900000", "PROV00000001", None))), "00");
    assert_eq!(rc(&call(&mut iss, &idv_request(&t.clear[2], "900000", "PROV00000003", None))), "05");
    assert_eq!(rc(&call(&mut iss, &idv_request(&t.clear[1], "900000", "PROV00000002", None))), "1A");
    let otp = iss.otp_outbox.get("PROV00000002").cloned().expect("OTP sent to the cardholder");
    assert_eq!(otp, "424242");
    assert_eq!(
        rc(&call(&mut iss, &idv_request(&t.clear[1], "910000", "PROV00000002", Some("000000")))),
        "05"
    );
    assert_eq!(rc(&call(&mut iss, &idv_request(&t.clear[1], "910000", "PROV00000002", Some(&otp)))), "00");
    assert_eq!(
        rc(&call(&mut iss, &idv_request(&t.clear[1], "910000", "PROV00000002", Some(&otp)))),
        "05",
        "an OTP is used once"
    );
    // No token on a wrong expiry: the generic decline.
    let mut wrong = t.clear[0].clone();
    wrong.expiry = "3001".into();
    assert_eq!(rc(&call(&mut iss, &idv_request(&wrong, "900000", "PROV00000004", None))), "05");
}

/// The attacker guesses: whatever was wrong (no such card, the expiry, the CVV2), the answer is
/// the same 05; after five failures the card is locked for every requestor, and a requestor that
/// failed a hundred times (it speaks for many cardholders) is locked on every card — the right
/// data no longer helps.
#[test]
fn idv_gives_one_generic_decline_and_locks_out_guessers() {
    let (mut iss, t) = test_issuer(|_| {});
    let req = |card: &ClearTestCard, rrn: &str, requestor: &str, cvv2: Option<&str>| {
        let mut m = idv_request(card, "900000", rrn, None);
        let mut tok = TlvBuilder::new();
        tok.primitive(Tag::new(0x9F19), requestor.as_bytes()).expect("tlv");
        tok.primitive(Tag::new(0xDF8105), b"wallet").expect("tlv");
        m.set_bytes(123, tok.finish().freeze()).expect("DE 123");
        if let Some(c) = cvv2 {
            m.set_text(48, &format!("92{:02}{c}", c.len())).expect("DE 48");
        }
        m
    };
    let card = &t.clear[0];
    let mut unknown = card.clone();
    unknown.pan = "4761739001010010".into();
    let mut bad_expiry = card.clone();
    bad_expiry.expiry = "3001".into();
    let wrong_cvv2 = if card.cvv2 == "999" { "998" } else { "999" };
    let answers = [
        rc(&call(&mut iss, &req(&unknown, "0000000000G1", "40000000001", None))),
        rc(&call(&mut iss, &req(&bad_expiry, "0000000000G2", "40000000002", None))),
        rc(&call(&mut iss, &req(card, "0000000000G3", "40000000002", Some(wrong_cvv2)))),
    ];
    assert_eq!(answers, ["05", "05", "05"], "no oracle: the same answer whatever was wrong");
    // The right data with the right CVV2 is approved (two failures so far on this card).
    assert_eq!(rc(&call(&mut iss, &req(card, "0000000000G4", "40000000003", Some(&card.cvv2)))), "00");
    // Five failures on card 1 from five requestors: card 1 is locked, for everyone.
    let c1 = &t.clear[1];
    let mut c1_bad = c1.clone();
    c1_bad.expiry = "3001".into();
    for i in 0..5 {
        assert_eq!(
            rc(&call(&mut iss, &req(&c1_bad, &format!("L{i:011}"), &format!("4100000000{i}"), None))),
            "05"
        );
    }
    assert_eq!(
        rc(&call(&mut iss, &req(c1, "0000000000L9", "42000000000", Some(&c1.cvv2)))),
        "05",
        "the card is locked: even the right data is declined"
    );
    // One requestor guessing unknown PANs is locked on every card at its own limit.
    let limit = issuer_sim::idv::IdvLimits::default().max_requestor_failures;
    for i in 0..limit {
        let mut u = card.clone();
        u.pan = format!("476173900101{i:04}");
        assert_eq!(rc(&call(&mut iss, &req(&u, &format!("U{i:011}"), "43000000000", None))), "05");
    }
    assert_eq!(
        rc(&call(&mut iss, &req(card, "0000000000U9", "43000000000", None))),
        "05",
        "the requestor is locked"
    );
    assert_eq!(rc(&call(&mut iss, &req(card, "000000000U10", "44000000000", None))), "00", "others are not");
}

/// OTPs: three tries, then the step-up is closed (75); an OTP past its lifetime is refused.
#[test]
fn otp_tries_are_limited_and_otps_expire() {
    let (iss, t) = test_issuer(|_| {});
    let limits = issuer_sim::idv::IdvLimits { otp_ttl_ms: 1_000, max_failures: 50, ..Default::default() };
    let mut iss = iss.with_idv_limits(limits);
    let c1 = &t.clear[1];
    assert_eq!(rc(&call(&mut iss, &idv_request(c1, "900000", "00000000OTP1", None))), "1A");
    let otp = iss.otp_outbox.get("00000000OTP1").cloned().expect("OTP");
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    assert_eq!(rc(&call(&mut iss, &idv_request(c1, "910000", "00000000OTP1", Some(wrong)))), "05");
    assert_eq!(rc(&call(&mut iss, &idv_request(c1, "910000", "00000000OTP1", Some(wrong)))), "05");
    assert_eq!(rc(&call(&mut iss, &idv_request(c1, "910000", "00000000OTP1", Some(wrong)))), "75");
    assert_eq!(rc(&call(&mut iss, &idv_request(c1, "910000", "00000000OTP1", Some(&otp)))), "05", "closed");
    // Expiry: the OTP is issued at NOW_MS; a second later it is refused.
    assert_eq!(rc(&call(&mut iss, &idv_request(c1, "900000", "00000000OTP2", None))), "1A");
    let otp = iss.otp_outbox.get("00000000OTP2").cloned().expect("OTP");
    let late = idv_request(c1, "910000", "00000000OTP2", Some(&otp));
    let r = iss.handle(&late, Origin::Unauthenticated, NOW_MS + 1_001, NOW_YYMM, 1).expect("answer");
    assert_eq!(rc(&r), "05", "expired");
}

#[test]
fn responses_are_not_answered() {
    let (mut iss, _) = test_issuer(|_| {});
    let mut m = Message::new(spec(), "0110".parse().expect("mti"));
    m.set_text(11, "000001").expect("DE 11");
    assert!(iss.handle(&m, Origin::Unauthenticated, NOW_MS, NOW_YYMM, 1).is_none());
    assert!(iss.handle(&m, Origin::AuthenticatedLink, NOW_MS, NOW_YYMM, 1).is_none());
}

/// Perso data for a secure element: sealed for the recipient's key only, holding the card's ICC
/// master key as the issuer's HSM derives it; refused for a card not ours, not active or expired.
#[test]
fn perso_data_is_sealed_for_the_recipient_and_refused_for_cards_it_should_not_leave() {
    let (issuer, t) = test_issuer(|t| t.cards.cards[2].status = "blocked".into());
    let secret = [0x21u8; 32];
    let recipient = crypto::device::public_key(&secret).expect("recipient key");
    let card = &t.clear[0];
    let sealed = issuer.perso_data(&card.pan, NOW_YYMM, &recipient, b"perso").expect("perso data");
    let plain = crypto::device::open(&secret, b"perso", &sealed).expect("opens for the recipient");
    let v: serde_json::Value = serde_json::from_slice(&plain).expect("json");
    assert_eq!(v["pan"], card.pan.as_str());
    assert_eq!(v["icc_mk"], card.icc_mk.as_str(), "the key the card's ARQCs verify under");
    assert_eq!((v["psn"].as_str(), v["cvn"].as_str()), (Some("00"), Some("visa18")));
    assert!(crypto::device::open(&[0x22u8; 32], b"perso", &sealed).is_err(), "another key cannot open it");
    let e = issuer.perso_data("4761739999999995", NOW_YYMM, &recipient, b"perso").expect_err("not ours");
    assert!(!e.contains("4761739999999995"), "no clear PAN in the error: {e}");
    assert!(issuer.perso_data(&t.clear[2].pan, NOW_YYMM, &recipient, b"perso").is_err(), "blocked");
    assert!(issuer.perso_data(&card.pan, "3001", &recipient, b"perso").is_err(), "expired");
}

#[test]
fn cloud_platform_idv_by_policy_expiry_and_otp() {
    use issuer_sim::host::CardholderCheck;
    let (mut iss, t) = test_issuer(|_| {});
    let v = |iss: &mut Issuer, c: &ClearTestCard, expiry: &str, session: &str, otp: Option<&str>| {
        let ask =
            issuer_sim::host::IdvAsk { pan: &c.pan, expiry, cvv2: None, requestor: "cloud", session, otp };
        iss.verify_cardholder(&ask, NOW_MS, NOW_YYMM, 424_242)
    };
    assert_eq!(v(&mut iss, &t.clear[0], &t.clear[0].expiry, "cloud-1", None), CardholderCheck::Approved);
    assert_eq!(
        v(&mut iss, &t.clear[0], "0101", "cloud-2", None),
        CardholderCheck::Declined { response_code: "05" },
        "a wrong expiry"
    );
    let mut unknown = t.clear[0].clone();
    unknown.pan = "4761739001010010".into();
    assert_eq!(
        v(&mut iss, &unknown, &t.clear[0].expiry, "cloud-3", None),
        CardholderCheck::Declined { response_code: "05" },
        "the same answer for a card that does not exist"
    );
    // Card 1's policy steps up: an OTP to the cardholder, checked on the second request.
    assert_eq!(v(&mut iss, &t.clear[1], &t.clear[1].expiry, "cloud-4", None), CardholderCheck::OtpSent);
    let otp = iss.otp_outbox.get("cloud-4").cloned().expect("OTP sent");
    assert_eq!(
        v(&mut iss, &t.clear[1], &t.clear[1].expiry, "cloud-4", Some("000000")),
        CardholderCheck::Declined { response_code: "05" }
    );
    assert_eq!(
        v(&mut iss, &t.clear[1], &t.clear[1].expiry, "cloud-4", Some(&otp)),
        CardholderCheck::Approved
    );
    assert_eq!(
        v(&mut iss, &t.clear[1], &t.clear[1].expiry, "cloud-4", Some(&otp)),
        CardholderCheck::Declined { response_code: "05" },
        "an OTP is good once"
    );
}

#[test]
fn limited_use_keys_are_the_session_keys_sealed_for_the_device_and_never_reissued() {
    use crypto::emv::{Atc, common_session_key};
    use crypto::hsm::LukBatch;
    use crypto::keys::TdesKey;
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    let secret = [0x42u8; 32];
    let pk = crypto::device::public_key(&secret).expect("device key");
    let info = b"paynet hce perso data v1";
    let sealed =
        iss.perso_luks(&card.pan, NOW_YYMM, LukBatch { first_atc: 1, count: 3 }, &pk, info).expect("sealed");
    let plain = crypto::device::open(&secret, info, &sealed).expect("opens for the device");
    let v: serde_json::Value = serde_json::from_slice(&plain).expect("JSON");
    assert_eq!(v["pan"], card.pan.as_str());
    assert!(v.get("icc_mk").is_none(), "no master key for a device");
    let icc_mk = TdesKey::from_hex("icc mk", &card.icc_mk).expect("icc mk");
    let luks = v["luks"].as_array().expect("luks");
    assert_eq!(luks.len(), 3);
    for (i, l) in luks.iter().enumerate() {
        let atc = i as u16 + 1;
        assert_eq!(l["atc"], format!("{atc:04X}"));
        let sk = common_session_key(&icc_mk, Atc(atc));
        assert_eq!(l["key"], hex::encode_upper(sk.expose()), "ATC {atc}");
    }
    assert!(crypto::device::open(&[0x43u8; 32], info, &sealed).is_err(), "another device");
    // An ATC's key goes out once: a batch overlapping the last is refused, the next one is not.
    let again = iss.perso_luks(&card.pan, NOW_YYMM, LukBatch { first_atc: 3, count: 3 }, &pk, info);
    assert!(again.expect_err("overlap").contains("already issued"));
    // ATC 1 of the first batch pays; after the next batch (4-6), ATC 2 and 3 are retired.
    let rsp = call(&mut iss, &chip_request(&spec(), card, &Tx::purchase(1, 100, 1)));
    assert_eq!(rc(&rsp), "00");
    assert!(card_accepts_arpc(card, &chip_request(&spec(), card, &Tx::purchase(1, 100, 1)), &rsp));
    iss.perso_luks(&card.pan, NOW_YYMM, LukBatch { first_atc: 4, count: 3 }, &pk, info).expect("next batch");
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), card, &Tx::purchase(2, 100, 2)))), "82", "retired");
    assert_eq!(rc(&call(&mut iss, &chip_request(&spec(), card, &Tx::purchase(3, 100, 4)))), "00", "current");
    assert!(
        iss.perso_luks(&card.pan, "3001", LukBatch { first_atc: 7, count: 1 }, &pk, info).is_err(),
        "expired"
    );
}

/// A sale in TWD on a card billed in EUR, converted by the network (DE 6, DE 10, DE 51): the
/// account is charged DE 6 in EUR; a partial reversal (DE 95, in TWD) releases what the sale's
/// rate makes of the difference; an incomplete conversion is a format error that books nothing.
#[test]
fn a_converted_sale_is_booked_in_the_billing_currency_and_reversed_at_its_rate() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    let start = iss.open_to_buy(&card.pan).expect("card");
    let converted = |stan: u32, twd: u64, eur: u64| {
        let mut m = chip_request(&spec(), card, &Tx::purchase(stan, twd, stan as u16));
        m.set_text(49, "901").expect("DE 49");
        m.set_text(6, &format!("{eur:012}")).expect("DE 6");
        m.set_text(10, "70285714").expect("DE 10");
        m.set_text(51, "978").expect("DE 51");
        m
    };
    // TWD 1,000.00 at 0.0285714 = EUR 28.57.
    let sale = converted(1, 100_000, 2_857);
    assert_eq!(rc(&call(&mut iss, &sale)), "00");
    assert_eq!(iss.open_to_buy(&card.pan), Some(start - 2_857), "charged in EUR");
    // TWD 400.00 stays: EUR 11.43 at the sale's rate (11.428560 → 11.43), 17.14 released.
    let partial = reversal(&sale, "0420", 2, Some(40_000));
    assert_eq!(rc(&call(&mut iss, &partial)), "00");
    assert_eq!(iss.open_to_buy(&card.pan), Some(start - 1_143));
    // Without the rate the conversion cannot be read: 30, nothing booked.
    let mut no_rate = converted(3, 10_000, 286);
    no_rate.remove(10);
    assert_eq!(rc(&call(&mut iss, &no_rate)), "30");
    // Billed in a currency that is not the card's: 13.
    let mut usd = converted(4, 10_000, 300);
    usd.set_text(51, "840").expect("DE 51");
    assert_eq!(rc(&call(&mut iss, &usd)), "13");
    assert_eq!(iss.open_to_buy(&card.pan), Some(start - 1_143));
}

#[test]
fn a_kept_issuer_comes_back_with_its_balances_bookings_rates_and_atcs() {
    let (mut iss, t) = test_issuer(|_| {});
    let card = &t.clear[0];
    let before = iss.open_to_buy(&card.pan).expect("card");
    // A TWD sale converted by the network: EUR 28.57 booked at 0.0285714.
    let mut sale = chip_request(&spec(), card, &Tx::purchase(1, 100_000, 1));
    for (de, v) in [(49, "901"), (6, "000000002857"), (10, "70285714"), (51, "978")] {
        sale.set_text(de, v).expect("conversion");
    }
    // The ARQC covers 5F2A = 0978 here: the issuer checks the chip data, not DE 49.
    let rsp = call(&mut iss, &sale);
    assert_eq!(rc(&rsp), "00");
    let kept = iss.kept();
    let saved = serde_json::to_string(&kept).expect("JSON");
    assert!(!saved.contains(&card.pan), "no PAN in the kept state");

    // The same issuer started again from its cards, then the kept state.
    let (mut again, _) = test_issuer(|_| {});
    again.restore(&serde_json::from_str(&saved).expect("parse")).expect("restore");
    assert_eq!(again.kept(), kept);
    assert_eq!(again.open_to_buy(&card.pan), Some(before - 2_857));
    // The ATC is remembered: the same cryptogram again is refused.
    let replay = chip_request(&spec(), card, &Tx::purchase(2, 500, 1));
    assert_ne!(rc(&call(&mut again, &replay)), "00", "ATC 1 was used before the restart");
    // A partial reversal of the sale (TWD 400.00 dispensed) at the sale's rate: EUR 11.43 stays.
    let rev = reversal(&sale, "0420", 3, Some(40_000));
    assert_eq!(rc(&call(&mut again, &rev)), "00");
    assert_eq!(again.open_to_buy(&card.pan), Some(before - 1_143));
}
