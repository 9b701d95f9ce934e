//! The ATM against the real switch and issuer simulator: cash advances with a plastic card, a
//! wallet token phone (master key in the profile), an HCE phone (limited-use keys) and an SE phone;
//! wrong PIN (55) and PIN tries exceeded (75); over the credit line (51); a jam (full reversal), a
//! partial dispense (partial reversal, DE 95), an answer lost or never sent (timeout: full
//! reversal); a balance inquiry answered with DE 54. Every time, what the issuer booked equals the
//! cash that left the ATM, and the cassettes lost exactly that.
//!
//! The card sources are small functions (`plastic`, `se_phone`, `wallet_phone`, `hce_phone`) so
//! that the wallet's real phones can replace them.

mod common;

use common::post;
use std::time::Duration;

use atm_sim::atm::{Atm, AtmConfig, Fault, Outcome, ReversalKind};
use atm_sim::{Cassettes, Endpoint, PinPad, SwitchLink};
use common::profile;
use crypto::pin::Pin;
use emv::card::{CardKeys, EmvApplet, Luk};
use issuer_sim::server::FaultRule;
use paynet::network::{self, Network, Options};

/// Test card `i` of the ports file as a plastic card.
fn plastic(net: &Network, i: usize) -> EmvApplet {
    let c = &net.ports.test_cards[i];
    EmvApplet::new(profile(&c.pan, &c.expiry, &c.cvn, CardKeys::Master { icc_mk: c.icc_mk.clone() }))
}

/// An SE phone of the issuer-owned model: the issuer's card profile and ICC master key in the
/// secure element (the same applet; the wallet helper's phone will replace this).
fn se_phone(net: &Network, i: usize) -> EmvApplet {
    plastic(net, i)
}

/// Provisions card `i` through the requestor of `kind`; the opened profile (JSON) of the device.
async fn provision(net: &Network, i: usize, kind: &str, secret: [u8; 32]) -> serde_json::Value {
    let c = &net.ports.test_cards[i];
    let device = hex::encode(crypto::device::public_key(&secret).expect("device key"));
    let r = net.ports.token_requestors.iter().find(|r| r.kind == kind).expect("requestor").clone();
    let auth = format!("{}:{}", r.id, r.secret);
    let body = serde_json::json!({"request_id": format!("atm-{kind}-{i}"), "pan": c.pan, "expiry": c.expiry, "device_public_key": device});
    let a = post(&net.ports.provisioning_api, "/v1/provision", &auth, &body.to_string()).await;
    assert_eq!(a["status"], "approved", "{a}");
    let sealed = hex::decode(a["encrypted_token_data"].as_str().expect("sealed")).expect("hex");
    let plain = crypto::device::open(&secret, tsp::service::PROFILE_INFO, &sealed).expect("opens");
    let token_ref = a["token_ref"].as_str().expect("ref").to_string();
    post(&net.ports.provisioning_api, &format!("/v1/tokens/{token_ref}/confirm"), &auth, "").await;
    serde_json::from_slice(&plain).expect("profile JSON")
}

/// A wallet token phone: the token's profile with its ICC master key (token keys).
async fn wallet_phone(net: &Network, i: usize) -> EmvApplet {
    let v = provision(net, i, "wallet", [0x5C; 32]).await;
    EmvApplet::new(profile(
        v["token"].as_str().expect("token"),
        v["expiry"].as_str().expect("expiry"),
        v["cvn"].as_str().expect("cvn"),
        CardKeys::Master { icc_mk: v["icc_mk"].as_str().expect("icc_mk").into() },
    ))
}

/// An HCE phone: the token's profile with limited-use keys.
async fn hce_phone(net: &Network, i: usize) -> EmvApplet {
    let v = provision(net, i, "cloud", [0x3B; 32]).await;
    let luks: Vec<Luk> = serde_json::from_value(v["luks"].clone()).expect("luks");
    EmvApplet::new(profile(
        v["token"].as_str().expect("token"),
        v["expiry"].as_str().expect("expiry"),
        v["cvn"].as_str().expect("cvn"),
        CardKeys::Limited { luks },
    ))
}

fn atm(net: &Network, n: usize, response_timeout_ms: u64) -> (Atm, SwitchLink) {
    let t = &net.ports.atm_terminals[n];
    let ipek = crypto::keys::TdesKey::from_hex("ipek", &t.ipek).expect("ipek");
    let ksn = crypto::dukpt::TdesKsn::from_hex(&t.ksn).expect("ksn");
    let mut cfg = AtmConfig::new(&t.tid);
    cfg.response_timeout = Duration::from_millis(response_timeout_ms);
    let atm = Atm::in_memory(cfg, PinPad::tdes(&ipek, &ksn, 0).expect("PIN pad"), Cassettes::test_atm());
    let ep = Endpoint {
        host: net.ports.acquirer.host.clone(),
        port: net.ports.acquirer.port,
        spec: "network".into(),
        framing: "2-byte-binary".into(),
    };
    (atm, SwitchLink::connect(&ep, Duration::from_secs(5)).expect("switch"))
}

fn open_to_buy(net: &Network, i: usize) -> u64 {
    let pan = &net.ports.test_cards[i].pan;
    net.issuer_state.issuer.lock().expect("issuer").open_to_buy(pan).expect("card")
}

/// Waits until the issuer's booking for card `i` since `before` equals `cash` (reversal advices
/// reach the issuer through the switch's store-and-forward, a moment after the 0430).
async fn assert_booked(net: &Network, i: usize, before: u64, cash: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let booked = before - open_to_buy(net, i);
        if booked == cash {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the issuer booked {booked}, the ATM gave {cash}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one cash advance and checks the ATM's own books: the cassettes lost what it dispensed.
fn advance(
    atm: &mut Atm,
    link: &mut SwitchLink,
    card: &mut EmvApplet,
    amount: u64,
    pin: &str,
    fault: Fault,
) -> Outcome {
    let cash_before = atm.cassettes.total();
    let o = atm.cash_advance(link, card, amount, &Pin::new(pin).expect("pin"), fault).expect("cash advance");
    assert_eq!(cash_before - atm.cassettes.total(), o.dispensed, "cassettes vs dispensed: {o:?}");
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cash_advances_with_cards_and_phones_and_every_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let (mut atm, mut link) = atm(&net, 0, 10_000);
    let pin = |i: usize| net.ports.test_cards[i].pin.clone();

    // A plastic card: approved, the card accepts the ARPC, the screen shows the line left.
    let mut card = plastic(&net, 4);
    let before = open_to_buy(&net, 4);
    let o = advance(&mut atm, &mut link, &mut card, 200_000, &pin(4), Fault::None);
    assert_eq!(
        (o.response_code.as_deref(), o.dispensed, o.reversal),
        (Some("00"), 200_000, ReversalKind::None)
    );
    assert_eq!(o.arpc_accepted, Some(true));
    assert_eq!(o.available_after, Some(before - 200_000), "DE 54 on the 0210");
    assert_booked(&net, 4, before, 200_000, "card").await;

    // A balance inquiry answers with the open-to-buy (DE 54).
    let b = atm.balance_inquiry(&mut link, &mut card, None).expect("balance");
    assert_eq!((b.response_code.as_deref(), b.available), (Some("00"), Some(before - 200_000)));

    // An SE phone.
    let mut se = se_phone(&net, 3);
    let before = open_to_buy(&net, 3);
    let o = advance(&mut atm, &mut link, &mut se, 300_000, &pin(3), Fault::None);
    assert_eq!((o.response_code.as_deref(), o.dispensed, o.arpc_accepted), (Some("00"), 300_000, Some(true)));
    assert_booked(&net, 3, before, 300_000, "SE phone").await;

    // A wallet token phone: the PIN block binds the token, the issuer checks it with the card's
    // PAN (the switch re-binds it in the HSM); the token's ARPC comes from the token service.
    let mut wallet = wallet_phone(&net, 0).await;
    let before = open_to_buy(&net, 0);
    let o = advance(&mut atm, &mut link, &mut wallet, 100_000, &pin(0), Fault::None);
    assert_eq!(
        (o.response_code.as_deref(), o.dispensed, o.arpc_accepted),
        (Some("00"), 100_000, Some(true)),
        "{o:?}"
    );
    assert_booked(&net, 0, before, 100_000, "wallet phone").await;
    // A partial dispense with the token: the partial reversal (DE 95) reaches the card's issuer.
    let before = open_to_buy(&net, 0);
    let o = advance(&mut atm, &mut link, &mut wallet, 500_000, &pin(0), Fault::Partial(200_000));
    assert_eq!(
        (o.dispensed, o.reversal, o.reversal_acknowledged),
        (200_000, ReversalKind::Partial, true),
        "{o:?}"
    );
    assert_eq!(o.available_after, Some(before - 200_000));
    assert_booked(&net, 0, before, 200_000, "partial dispense").await;

    // An HCE phone on limited-use keys.
    let mut hce = hce_phone(&net, 2).await;
    let before = open_to_buy(&net, 2);
    let o = advance(&mut atm, &mut link, &mut hce, 100_000, &pin(2), Fault::None);
    assert_eq!(
        (o.response_code.as_deref(), o.dispensed, o.arpc_accepted),
        (Some("00"), 100_000, Some(true)),
        "{o:?}"
    );
    assert_booked(&net, 2, before, 100_000, "HCE phone").await;
    // The answer lost: the ATM gives it all back.
    let before = open_to_buy(&net, 2);
    let o = advance(&mut atm, &mut link, &mut hce, 100_000, &pin(2), Fault::NoResponse);
    assert_eq!(
        (o.response_code.clone(), o.dispensed, o.reversal, o.reversal_acknowledged),
        (None, 0, ReversalKind::Full, true)
    );
    assert_booked(&net, 2, before, 0, "no response").await;

    // A jam after an approval: a full reversal.
    let before = open_to_buy(&net, 4);
    let o = advance(&mut atm, &mut link, &mut card, 300_000, &pin(4), Fault::Jam);
    assert_eq!(
        (o.response_code.as_deref(), o.dispensed, o.reversal, o.reversal_acknowledged),
        (Some("00"), 0, ReversalKind::Full, true)
    );
    assert_booked(&net, 4, before, 0, "jam").await;

    // Over the credit line: 51, nothing dispensed, nothing booked.
    let mut small = plastic(&net, 5);
    let before = open_to_buy(&net, 5);
    let o = advance(&mut atm, &mut link, &mut small, before + 10_000, &pin(5), Fault::None);
    assert_eq!((o.response_code.as_deref(), o.dispensed, o.reversal), (Some("51"), 0, ReversalKind::None));
    assert_booked(&net, 5, before, 0, "over the line").await;

    // Wrong PIN: 55; the third wrong try: 75, and then even the right PIN gets 75.
    let before = open_to_buy(&net, 5);
    let wrong = if pin(5) == "0000" { "1111" } else { "0000" };
    for want in ["55", "55", "75"] {
        let o = advance(&mut atm, &mut link, &mut small, 10_000, wrong, Fault::None);
        assert_eq!((o.response_code.as_deref(), o.dispensed), (Some(want), 0));
    }
    let o = advance(&mut atm, &mut link, &mut small, 10_000, &pin(5), Fault::None);
    assert_eq!(o.response_code.as_deref(), Some("75"), "PIN tries exceeded");
    assert_booked(&net, 5, before, 0, "PIN declines").await;
    assert_eq!(atm.owed(), 0, "every reversal acknowledged");
    net.shutdown().await;
}

/// The switch does not answer in the ATM's time (the issuer's answer is lost): the ATM times
/// out and sends its reversal advice while the switch is still waiting; the issuer, which had
/// booked the advance, ends with nothing booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_timeout_sends_a_full_reversal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(dir.path());
    opts.issuer_faults = vec![FaultRule::on_amount(70_000, Some("0200"), "drop")];
    opts.issuer_timeout_ms = 3_000;
    let net = network::start(opts).await.expect("network");
    let (mut atm, mut link) = atm(&net, 1, 800);
    let mut card = plastic(&net, 4);
    let before = open_to_buy(&net, 4);
    let pin = net.ports.test_cards[4].pin.clone();
    let o = advance(&mut atm, &mut link, &mut card, 70_000, &pin, Fault::None);
    assert_eq!(
        (o.response_code.clone(), o.dispensed, o.reversal, o.reversal_acknowledged),
        (None, 0, ReversalKind::Full, true)
    );
    assert_booked(&net, 4, before, 0, "timeout").await;
    // The late 91 from the switch is dropped by the ATM; the next advance goes through.
    let o = advance(&mut atm, &mut link, &mut card, 50_000, &pin, Fault::None);
    assert_eq!((o.response_code.as_deref(), o.dispensed), (Some("00"), 50_000));
    assert_booked(&net, 4, before, 50_000, "after the timeout").await;
    net.shutdown().await;
}

/// Unattended mode (the load generator's): a run of cash advances over two cards with a jam
/// every third one; the issuer's bookings add up to the cash that left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattended_run_books_what_was_dispensed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let (mut atm, mut link) = atm(&net, 2, 10_000);
    let before = open_to_buy(&net, 0) + open_to_buy(&net, 2);
    let mut cards = vec![
        atm_sim::unattended::Cardholder {
            card: Box::new(plastic(&net, 0)),
            pin: Pin::new(&net.ports.test_cards[0].pin).expect("pin"),
        },
        atm_sim::unattended::Cardholder {
            card: Box::new(hce_phone(&net, 2).await),
            pin: Pin::new(&net.ports.test_cards[2].pin).expect("pin"),
        },
    ];
    let r = atm_sim::unattended::run(&mut atm, &mut link, &mut cards, 9, 20_000, |i| {
        if i % 3 == 2 { Fault::Jam } else { Fault::None }
    });
    assert_eq!((r.attempted, r.approved, r.errors), (9, 9, 0), "{r:?}");
    assert_eq!((r.reversals, r.reversals_acknowledged), (3, 3));
    assert_eq!(r.dispensed_minor, 6 * 20_000);
    assert_eq!(r.cash_before_minor - r.cash_after_minor, r.dispensed_minor);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while before - (open_to_buy(&net, 0) + open_to_buy(&net, 2)) != r.dispensed_minor {
        assert!(tokio::time::Instant::now() < deadline, "issuer bookings differ from the cash dispensed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    net.shutdown().await;
}
