//! The contactless kernel against real cards and phones: the terminal runs the APDU dialogue with
//! the EMV card application (a plastic card from the ports file, a forged card, an HCE phone on
//! limited-use keys provisioned by the cloud requestor), sends the 0100 built from what it read to
//! the switch, and hands tag 91 back to the card, which checks the ARPC.

mod common;

use codecs::iso8583::{Message, Spec};
use common::profile;
use common::{Client, rc};
use emv::card::{CardKeys, EmvApplet, Luk};
use emv::kernel::{TerminalConfig, TxData, issuer_authenticate, tag91, tap};
use paynet::network::{self, Options};
use terminal_kit::pos::{Tx, tap_request};

/// Taps `card`, sends the request, gives the answer's tag 91 to the card: (DE 39, ARPC accepted).
async fn pay(c: &mut Client, card: &mut EmvApplet, stan: u32, amount: u64) -> (String, bool) {
    let spec = Spec::builtin("network").expect("spec");
    let tx = TxData { amount, tx_type: 0x00, date: [0x26, 0x11, 0x25], un: [stan as u8, 0x11, 0x22, 0x33] };
    let tapped = tap(card, &TerminalConfig::default(), &tx).expect("tap");
    assert_eq!(tapped.cid, 0x80, "an ARQC");
    let req = tap_request(spec, &tapped, &Tx::purchase(stan, amount, 0)).expect("request");
    assert_card_named(&req);
    let rsp = c.call(&req).await;
    let icc = rsp.icc_data().ok().flatten().expect("DE 55 in the answer");
    let t91 = tag91(&icc).expect("tag 91");
    (rc(&rsp), issuer_authenticate(card, &t91))
}

/// The value of `tag` in the request's DE 55.
fn chip_tag(req: &Message, tag: u32) -> Option<Vec<u8>> {
    let icc = req.icc_data().ok().flatten()?;
    let nodes = codecs::tlv::decode_strict(&icc).ok()?;
    codecs::tlv::find(&nodes, codecs::tlv::Tag::new(tag)).map(|n| n.value().to_vec())
}

/// The tap's DE 55 names the card as DE 2 and DE 23 do: 5A is DE 2 in BCD (F-padded), 5F34 is
/// DE 23's last two digits.
fn assert_card_named(req: &Message) {
    let pan = req.text(2).expect("DE 2").into_owned();
    let mut nibbles = pan.clone();
    if nibbles.len() % 2 == 1 {
        nibbles.push('F');
    }
    assert_eq!(chip_tag(req, 0x5A), Some(hex::decode(&nibbles).expect("digits")), "5A is DE 2");
    let de23 = req.text(23).expect("DE 23").into_owned();
    assert_eq!(chip_tag(req, 0x5F34), Some(hex::decode(&de23[1..]).expect("digits")), "5F34 is DE 23");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_pays_with_a_card_and_an_hce_phone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let mut c = common::acquirer_client(&net).await;
    let tc = net.ports.test_cards[0].clone();

    // A plastic card personalised with the issuer's ICC master key.
    let mut card =
        EmvApplet::new(profile(&tc.pan, &tc.expiry, &tc.cvn, CardKeys::Master { icc_mk: tc.icc_mk.clone() }));
    let before = net.issuer_state.issuer.lock().expect("issuer").open_to_buy(&tc.pan).expect("card");
    assert_eq!(pay(&mut c, &mut card, 1, 1_250).await, ("00".to_string(), true));
    assert_eq!(pay(&mut c, &mut card, 2, 750).await, ("00".to_string(), true), "the ATC moved on");
    let after = net.issuer_state.issuer.lock().expect("issuer").open_to_buy(&tc.pan).expect("card");
    assert_eq!(after, before - 2_000);
    // Over the open-to-buy: declined, and the card still checks the issuer's ARPC on the decline.
    assert_eq!(pay(&mut c, &mut card, 3, after + 1).await, ("51".to_string(), true));

    // Another card's PAN (DE 2) or another PAN sequence number (DE 23) under this tap's valid
    // cryptogram: the card named itself in DE 55 (5A, 5F34), so the switch refuses it (12) and the
    // other card's issuer never hears of it.
    let other = net.ports.test_cards.iter().find(|o| o.pan != tc.pan).expect("a second test card").clone();
    let other_before = net.issuer_state.issuer.lock().expect("issuer").open_to_buy(&other.pan).expect("card");
    let spec = Spec::builtin("network").expect("spec");
    let tx = TxData { amount: 500, tx_type: 0x00, date: [0x26, 0x11, 0x25], un: [5, 0x11, 0x22, 0x33] };
    let tapped = tap(&mut card, &TerminalConfig::default(), &tx).expect("tap");
    let mut swapped = tap_request(spec, &tapped, &Tx::purchase(5, 500, 0)).expect("request");
    swapped.set_text(2, &other.pan).expect("DE 2");
    assert_eq!(rc(&c.call(&swapped).await), "12", "DE 2 is not the card's 5A");
    let tapped = tap(&mut card, &TerminalConfig::default(), &tx).expect("tap");
    let mut psn = tap_request(spec, &tapped, &Tx::purchase(6, 500, 0)).expect("request");
    psn.set_text(23, "001").expect("DE 23");
    assert_eq!(rc(&c.call(&psn).await), "12", "DE 23 is not the card's 5F34");
    let other_after = net.issuer_state.issuer.lock().expect("issuer").open_to_buy(&other.pan).expect("card");
    assert_eq!(other_after, other_before, "nothing booked on the other card");

    // A card with a wrong key: the switch verifies on behalf of the issuer — declined (82), and
    // the card refuses the answer's ARPC.
    let mut forged = EmvApplet::new(profile(
        &tc.pan,
        &tc.expiry,
        &tc.cvn,
        CardKeys::Master { icc_mk: "0123456789ABCDEFFEDCBA9876543210".into() },
    ));
    let (code, accepted) = pay(&mut c, &mut forged, 4, 100).await;
    assert_ne!(code, "00");
    assert!(!accepted, "a forged card cannot verify the real issuer's ARPC");

    // An HCE phone: provisioned by the cloud requestor, limited-use keys in the sealed profile.
    let secret = [0x3Bu8; 32];
    let device = hex::encode(crypto::device::public_key(&secret).expect("device key"));
    let r = net.ports.token_requestors.iter().find(|r| r.kind == "cloud").expect("cloud").clone();
    let body = serde_json::json!({"request_id": "k1", "pan": tc.pan, "expiry": tc.expiry, "device_public_key": device});
    let http = common::post(
        &net.ports.provisioning_api,
        "/v1/provision",
        &format!("{}:{}", r.id, r.secret),
        &body.to_string(),
    )
    .await;
    let sealed = hex::decode(http["encrypted_token_data"].as_str().expect("sealed")).expect("hex");
    let plain = crypto::device::open(&secret, tsp::service::PROFILE_INFO, &sealed).expect("opens");
    let v: serde_json::Value = serde_json::from_slice(&plain).expect("json");
    let luks: Vec<Luk> = serde_json::from_value(v["luks"].clone()).expect("luks");
    let token = v["token"].as_str().expect("token").to_string();
    let token_ref = http["token_ref"].as_str().expect("ref").to_string();
    common::post(
        &net.ports.provisioning_api,
        &format!("/v1/tokens/{token_ref}/confirm"),
        &format!("{}:{}", r.id, r.secret),
        "",
    )
    .await;
    let mut phone = EmvApplet::new(profile(
        &token,
        v["expiry"].as_str().expect("expiry"),
        v["cvn"].as_str().expect("cvn"),
        CardKeys::Limited { luks },
    ));
    for stan in 10..20 {
        assert_eq!(pay(&mut c, &mut phone, stan, 300).await, ("00".to_string(), true), "stan {stan}");
    }
    // Keys used up: the phone cannot make a cryptogram until it replenishes.
    let tx = TxData { amount: 300, tx_type: 0, date: [0x26, 0x11, 0x25], un: [9, 9, 9, 9] };
    assert!(tap(&mut phone, &TerminalConfig::default(), &tx).is_err(), "no limited-use key left");
    net.shutdown().await;
}
