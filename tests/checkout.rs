//! Online checkout against the real switch and issuer simulator: an in-app payment with a wallet
//! token and the phone's online cryptogram (DE 22 100), the same token refused outside its domain,
//! and the card-not-present fallback with a key-entered PAN and its CVV2 (right, wrong, missing).

mod common;

use codecs::iso8583::Spec;
use common::rc;
use emv::card::{CardKeys, CardProfile, EmvApplet};
use emv::kernel::{TerminalConfig, TxData, issuer_authenticate, tag91, tap};
use paynet::network::{self, Network, Options};
use terminal_sim::checkout::{Order, in_app_request, key_entered_request};

fn order(stan: u32, amount: u64) -> Order {
    Order {
        stan,
        amount,
        currency: 978,
        tid: "WEB00001".into(),
        mid: "SHOP00000000001".into(),
        mcc: "5999".into(),
        transmitted: "1125101010".into(),
    }
}

/// A wallet phone provisioned for `entry_modes`, confirmed: its card application.
async fn wallet_phone(net: &Network, card: usize, request_id: &str, entry_modes: &[&str]) -> EmvApplet {
    let secret = [0x51u8; 32];
    let device = hex::encode(crypto::device::public_key(&secret).expect("key"));
    let r = net.ports.token_requestors.iter().find(|r| r.kind == "wallet").expect("wallet").clone();
    let auth = format!("{}:{}", r.id, r.secret);
    let c = &net.ports.test_cards[card];
    let body = serde_json::json!({"request_id": request_id, "pan": c.pan, "expiry": c.expiry,
        "device_public_key": device, "entry_modes": entry_modes});
    let a = common::post(&net.ports.provisioning_api, "/v1/provision", &auth, &body.to_string()).await;
    assert_eq!(a["status"], "approved", "{a}");
    let sealed = hex::decode(a["encrypted_token_data"].as_str().expect("sealed")).expect("hex");
    let plain = crypto::device::open(&secret, tsp::service::PROFILE_INFO, &sealed).expect("opens");
    let v: serde_json::Value = serde_json::from_slice(&plain).expect("json");
    let token_ref = a["token_ref"].as_str().expect("ref");
    assert_eq!(
        common::post(&net.ports.provisioning_api, &format!("/v1/tokens/{token_ref}/confirm"), &auth, "")
            .await["status"],
        "active"
    );
    EmvApplet::new(CardProfile {
        pan: v["token"].as_str().expect("token").into(),
        expiry: v["expiry"].as_str().expect("expiry").into(),
        psn: v["psn"].as_str().expect("psn").into(),
        cvn: v["cvn"].as_str().expect("cvn").into(),
        aid: "A0000000031010".into(),
        label: "PAYNET WALLET".into(),
        keys: CardKeys::Master { icc_mk: v["icc_mk"].as_str().expect("icc_mk").into() },
        atc: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_app_with_a_token_and_card_not_present_with_cvv2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let spec = Spec::builtin("network").expect("spec");
    let mut c = common::acquirer_client(&net).await;

    // In-app: the phone's wallet app gets an online cryptogram over the order from its card
    // application; the gateway sends it with the token.
    let mut phone = wallet_phone(&net, 0, "a1", &["07", "10"]).await;
    let pan = net.ports.test_cards[0].pan.clone();
    let before = net.issuer_state.issuer.lock().expect("issuer").open_to_buy(&pan).expect("card");
    let o = order(1, 4_990);
    let tx = TxData { amount: o.amount, tx_type: 0, date: [0x26, 0x11, 0x25], un: [1, 2, 3, 4] };
    let tapped = tap(&mut phone, &TerminalConfig::default(), &tx).expect("online cryptogram");
    let req = in_app_request(spec, &tapped, &o).expect("request");
    assert!(!req.contains(35), "no track data in-app");
    let rsp = c.call(&req).await;
    assert_eq!(rc(&rsp), "00", "{rsp:?}");
    let t91 = tag91(&rsp.icc_data().ok().flatten().expect("DE 55")).expect("tag 91");
    assert!(issuer_authenticate(&mut phone, &t91), "the phone accepts the ARPC");
    let after = net.issuer_state.issuer.lock().expect("issuer").open_to_buy(&pan).expect("card");
    assert_eq!(after, before - 4_990);

    // A token provisioned for contactless only is refused in-app (12), and the issuer never sees it.
    let mut tap_only = wallet_phone(&net, 2, "a2", &["07"]).await;
    let tx = TxData { amount: 100, ..tx };
    let tapped = tap(&mut tap_only, &TerminalConfig::default(), &tx).expect("cryptogram");
    assert_eq!(rc(&c.call(&in_app_request(spec, &tapped, &order(2, 100)).expect("request")).await), "12");

    // Card not present, key-entered PAN: right CVV2 approved, wrong or missing declined N7.
    let card = net.ports.test_cards[1].clone();
    let ok =
        key_entered_request(spec, &card.pan, &card.expiry, &card.cvv2, &order(3, 1_500)).expect("request");
    assert_eq!(rc(&c.call(&ok).await), "00");
    let wrong_cvv2 = format!("{:03}", (card.cvv2.parse::<u32>().expect("digits") + 1) % 1000);
    let bad =
        key_entered_request(spec, &card.pan, &card.expiry, &wrong_cvv2, &order(4, 1_500)).expect("request");
    assert_eq!(rc(&c.call(&bad).await), "N7");
    let mut missing =
        key_entered_request(spec, &card.pan, &card.expiry, "000", &order(5, 1_500)).expect("request");
    missing.remove(48);
    assert_eq!(rc(&c.call(&missing).await), "N7");
    net.shutdown().await;
}
