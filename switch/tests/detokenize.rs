//! The detokenize stage over the vault: a contactless token request (cryptogram from the token's
//! ICC key) becomes the card's PAN, expiry and track towards the issuer with the token data in
//! DE 123, and the answer gets the token back; replayed or tampered cryptograms, suspended and
//! deleted tokens, expired tokens, use outside the domain and unknown tokens are declined with
//! their codes before any issuer sees them.

#[path = "fixtures/token_vault.rs"]
mod token_vault;

use std::sync::Arc;
use token_vault::{CARD_PAN, phone, token};

use codecs::iso8583::{Message, Spec};
use terminal_kit::pos::{TestCard, Tx, chip_request};
use tsp::detokenize::{Detokenizer, retokenize};
use tsp::{TokenStatus, TokenVault, VaultDetokenizer};

const NOW_MS: u64 = 1_764_028_800_000; // 2025-11-25

struct Setup {
    det: VaultDetokenizer,
    vault: Arc<TokenVault>,
    spec: Arc<Spec>,
}

fn setup() -> Setup {
    let (hsm, vault) = token_vault::hsm_and_vault();
    let det = VaultDetokenizer::new(vault.clone(), hsm, token_vault::token_keys());
    Setup { det, vault, spec: Spec::builtin("network").expect("spec").clone() }
}

fn request(s: &Setup, card: &TestCard, atc: u16) -> Message {
    chip_request(&s.spec, card, &Tx::purchase(u32::from(atc), 1_000, atc)).expect("request")
}

#[test]
fn token_becomes_the_card_towards_the_issuer_and_the_token_comes_back() {
    let s = setup();
    let t = token(1);
    token_vault::issue(&s.vault, &t, &["07"], [1; 12]);
    let card = phone(&t);
    let mut req = request(&s, &card, 1);
    let ctx = s.det.detokenize(&mut req, NOW_MS).expect("accepted").expect("a token");
    assert_eq!(req.text(2).as_deref(), Some(CARD_PAN), "the issuer sees the card's PAN");
    assert_eq!(req.text(14).as_deref(), Some("2812"), "and the card's expiry");
    let data = req.bytes(123).expect("DE 123");
    let nodes = codecs::tlv::decode_lenient(&data).expect("tlv");
    let get = |t: u32| nodes.iter().find(|n| n.tag().value() == t).map(|n| n.value().to_vec());
    assert_eq!(get(0xDF8101), Some(t.clone().into_bytes()));
    assert_eq!(get(0x9F19), Some(b"40010030273".to_vec()));
    assert_eq!(get(0x9F24).map(|p| p.len()), Some(29));
    // The answer to the acquirer carries the token again.
    let mut rsp = switch::pipeline::respond::answer(&req, codecs::iso8583::ResponseCode::APPROVED);
    retokenize(&mut rsp, &ctx);
    assert_eq!(rsp.text(2).as_deref(), Some(t.as_str()));
    assert_eq!(rsp.text(14).as_deref(), Some("2911"));
    // Not a token: untouched.
    let mut plain = request(&s, &TestCard { pan: CARD_PAN.into(), ..card.clone() }, 9);
    assert!(s.det.detokenize(&mut plain, NOW_MS).expect("ok").is_none());
}

#[test]
fn refusals_with_their_codes() {
    let s = setup();
    let t = token(2);
    token_vault::issue(&s.vault, &t, &["07"], [1; 12]);
    let card = phone(&t);
    let rc = |m: &mut Message| s.det.detokenize(m, NOW_MS).map(|_| "00").unwrap_or_else(|r| r.0);
    // The verified cryptogram's ATC goes to the pipeline, which accepts it once (its durable
    // window: see the pipeline's tests and tests/attacks.rs).
    let atc = s.det.detokenize(&mut request(&s, &card, 5), NOW_MS).expect("accepted").expect("token").atc;
    assert_eq!(atc, Some(5));
    let mut tampered = request(&s, &card, 6);
    let mut icc = tampered.icc_data().expect("ok").expect("DE 55").to_vec();
    let p = icc.windows(2).position(|w| w == [0x9F, 0x26]).expect("9F26") + 3;
    icc[p] ^= 1;
    tampered.set_icc_data(&icc).expect("DE 55");
    assert_eq!(rc(&mut tampered), "82", "tampered cryptogram");
    let mut contact = request(&s, &card, 7);
    contact.set_text(22, "051").expect("DE 22");
    assert_eq!(rc(&mut contact), "12", "outside the token's domain");
    let mut wrong_exp = request(&s, &card, 8);
    wrong_exp.set_text(14, "2912").expect("DE 14");
    assert_eq!(rc(&mut wrong_exp), "54");
    assert_eq!(rc(&mut request(&s, &phone(&token(99)), 1)), "14", "unknown token");
    s.vault.set_status(&t, TokenStatus::Suspended).expect("suspend");
    assert_eq!(rc(&mut request(&s, &card, 9)), "57");
    s.vault.set_status(&t, TokenStatus::Deleted).expect("delete");
    assert_eq!(rc(&mut request(&s, &card, 10)), "62");
}
