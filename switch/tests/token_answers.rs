//! A token request's answer, whatever happens to it after detokenization, carries the token and
//! never the card behind it: the issuer's decline (even one that echoes the card's PAN, expiry and
//! track), a timeout, stand-in for an issuer that is down, an encoding
//! failure and a BIN no issuer serves. The whole pipeline without sockets, over the real vault.

#[path = "fixtures/token_vault.rs"]
mod token_vault;

use std::sync::Arc;

use codecs::iso8583::{Message, ResponseCode, Spec};
use switch::issuer::LinkError;
use switch::pipeline::{Pipeline, Step, respond};
use switch::store::sqlite::SqliteStore;
use terminal_kit::pos::{TestCard, Tx, chip_request};
use token_vault::{CARD_EXPIRY, CARD_PAN, phone, token};
use tsp::{TokenStatus, TokenVault, VaultDetokenizer};

const NOW_MS: u64 = 1_764_028_800_000; // 2025-11-25

/// A pipeline whose one issuer serves the card BIN (when `routed`), with stand-in on.
fn pipeline(routed: bool) -> (Pipeline, Arc<TokenVault>) {
    let (hsm, vault) = token_vault::hsm_and_vault();
    let detokenizer = Arc::new(VaultDetokenizer::new(vault.clone(), hsm.clone(), token_vault::token_keys()));
    let (p, _writer) = switch::pipeline::fixture::Fixture {
        hsm,
        detokenizer,
        imk_ac: None,
        routes: if routed { vec!["476173"] } else { vec!["999999"] },
        stand_in_max_minor: (100_000, 100_000),
        dedupe: (60_000, 1_000),
        entropy: Arc::new(testkit::TestRng::seeded(3)),
        fingerprint_key: 5,
    }
    .build(Arc::new(SqliteStore::in_memory().expect("store")))
    .expect("pipeline");
    (p, vault)
}

use switch::pipeline::fixture::{listener, local};

fn begin(p: &Pipeline, card: &TestCard, stan: u32, atc: u16) -> Step {
    let spec = Spec::builtin("network").expect("spec");
    let req = chip_request(spec, card, &Tx::purchase(stan, 1_000, atc)).expect("request");
    let raw = req.encode().expect("encode");
    p.begin(&listener(), &local(), &raw, req, NOW_MS)
}

/// The answer must carry the token and hold nothing of the card: not its PAN in any element or
/// any byte, not its expiry, no track.
fn assert_token_only(answer: &Message, token: &str, what: &str) {
    assert_eq!(answer.text(2).as_deref(), Some(token), "{what}: DE 2 is the token");
    assert_ne!(answer.text(14).as_deref(), Some(CARD_EXPIRY), "{what}: the card's expiry");
    assert!(!answer.contains(35), "{what}: no track 2 in an answer");
    let bytes = answer.encode().expect("encode");
    assert!(
        !bytes.windows(CARD_PAN.len()).any(|w| w == CARD_PAN.as_bytes()),
        "{what}: the card's PAN is somewhere in the answer's bytes"
    );
    let card_bcd = hex::decode(CARD_PAN).expect("bcd");
    assert!(!bytes.windows(card_bcd.len()).any(|w| w == card_bcd), "{what}: the card's PAN in BCD");
}

/// The issuer's answer as a careless issuer would send it: the card's PAN, expiry and track echoed.
fn careless_answer(sent: &Message, rc: ResponseCode) -> Message {
    assert_eq!(sent.text(2).as_deref(), Some(CARD_PAN), "the issuer is sent the card");
    let mut a = respond::answer(sent, rc);
    a.set_text(2, CARD_PAN).expect("DE 2");
    a.set_text(14, CARD_EXPIRY).expect("DE 14");
    a.set_text(35, &format!("{CARD_PAN}D{CARD_EXPIRY}2010000000000000")).expect("DE 35");
    a
}

#[test]
fn every_answer_to_a_token_request_carries_the_token() {
    let (p, vault) = pipeline(true);
    let t = token(1);
    token_vault::issue(&vault, &t, &["07"], [1; 12]);
    let device = phone(&t);
    let forward = |stan: u32, atc: u16| match begin(&p, &device, stan, atc) {
        Step::Forward(f) => f,
        Step::Answer(d) => panic!("expected a forward, got {:?}", d.decline),
        _ => panic!("expected a forward"),
    };

    // Approved and declined by an issuer that echoes the card.
    for (stan, atc, rc) in [(1, 1, ResponseCode::APPROVED), (2, 2, ResponseCode::DO_NOT_HONOUR)] {
        let f = forward(stan, atc);
        let issuer = careless_answer(f.msg(), rc);
        let done = p.complete(f.pending, Ok(issuer), NOW_MS);
        assert_eq!(done.answer.text(39).as_deref(), Some(rc.as_str()));
        assert_token_only(&done.answer, &t, rc.as_str());
    }
    // Timeout, issuer down (stand-in), the link cannot encode it.
    for (stan, atc, err) in [(3, 3, LinkError::Timeout), (4, 4, LinkError::Down), (5, 5, LinkError::Encode)] {
        let f = forward(stan, atc);
        let done = p.complete(f.pending, Err(err), NOW_MS);
        let approved = done.answer.text(39).as_deref() == Some("00");
        // Stand-in may approve: the token service verified the token's cryptogram and its ATC.
        assert_eq!(approved, matches!(err, LinkError::Down), "{err:?}");
        assert_token_only(&done.answer, &t, &format!("{err:?}"));
    }
}

#[test]
fn a_token_whose_card_no_issuer_serves_is_declined_with_the_token() {
    let (p, vault) = pipeline(false);
    let t = token(2);
    token_vault::issue(&vault, &t, &["07"], [1; 12]);
    match begin(&p, &phone(&t), 1, 1) {
        Step::Answer(d) => {
            assert!(d.decline.is_some(), "declined");
            assert_ne!(d.answer.text(39).as_deref(), Some("00"));
            assert_token_only(&d.answer, &t, "no route");
        }
        _ => panic!("no issuer serves the card: answered at once"),
    }
}

#[test]
fn refused_tokens_are_answered_with_what_the_acquirer_sent() {
    let (p, vault) = pipeline(true);
    let t = token(3);
    token_vault::issue(&vault, &t, &["07"], [1; 12]);
    vault.set_status(&t, TokenStatus::Suspended).expect("suspend");
    match begin(&p, &phone(&t), 1, 1) {
        Step::Answer(d) => {
            assert_eq!(d.answer.text(39).as_deref(), Some("57"));
            assert_token_only(&d.answer, &t, "suspended token");
        }
        _ => panic!("a suspended token is refused at once"),
    }
}
