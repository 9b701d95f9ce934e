//! The issuer simulator's listener as the switch's MAC-authenticated link, over TCP on 127.0.0.1
//! (ports from the OS): the token service's "cryptogram verified" (DE 123 DF8106) gets a forger
//! nothing on a listener without a link MAC, a request with a wrong MAC is answered 63 and books
//! nothing, and a genuine request is answered with a MAC the switch verifies over the bytes as
//! they arrived.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use codecs::iso8583::Message;
use common::{Link, rc};
use crypto::mac::MacAlgorithm;
use issuer_sim::cards::TestIssuer;
use issuer_sim::link_mac::LinkMac;
use issuer_sim::server::{self, ServerState};
use issuer_sim::testing::{
    Tx, chip_request, link_mac, server_state, tag91, with_tsp_verified, with_zero_cryptogram,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The key the switch and the issuer share (test material).
const LINK_KEY: [u8; 16] = *b"0123456789abcdef";

/// An issuer simulator serving on 127.0.0.1 port 0 (four generated test cards, expiring 2912;
/// the clock says November 2026), with or without a link MAC; stopped when dropped.
struct Served {
    state: Arc<ServerState>,
    addr: String,
    test: TestIssuer,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(link_mac: Option<LinkMac>) -> Served {
    let (state, test) = server_state(link_mac, &mut testkit::TestRng::seeded(7).filler());
    let state = Arc::new(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let stop = CancellationToken::new();
    tokio::spawn(server::run(listener, state.clone(), stop.clone()));
    Served { state, addr, test, stop }
}

impl Served {
    fn open_to_buy(&self, pan: &str) -> Option<u64> {
        self.state.issuer.lock().expect("issuer").open_to_buy(pan)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_tsp_flag_over_an_unauthenticated_connection_is_not_approved_and_books_nothing() {
    let sim = serve(None).await;
    let mut c = Link::connect(&sim.addr).await;
    let card = &sim.test.clear[0];
    let before = sim.open_to_buy(&card.pan).expect("card");
    let forged =
        with_tsp_verified(with_zero_cryptogram(chip_request(&c.spec, card, &Tx::purchase(1, 9_000, 1))));
    let (_, a) = c.call_raw(&forged).await;
    assert_eq!(rc(&a), "82", "the issuer verified the all-zero cryptogram itself");
    assert!(tag91(&a).is_some(), "with its own ARPC");
    // On a token PAN (the token service's own range): no card of the issuer's.
    let mut token = card.clone();
    token.pan = "4895370000000001".into();
    let (_, a) =
        c.call_raw(&with_tsp_verified(chip_request(&c.spec, &token, &Tx::purchase(2, 9_000, 2)))).await;
    assert_eq!(rc(&a), "14");
    assert_eq!(sim.open_to_buy(&card.pan), Some(before), "nothing booked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_macd_link_a_wrong_mac_is_63_and_a_genuine_request_is_answered_signed() {
    let sim = serve(Some(link_mac(&LINK_KEY))).await;
    let switch = link_mac(&LINK_KEY);
    let mut c = Link::connect(&sim.addr).await;
    let card = &sim.test.clear[0];
    let before = sim.open_to_buy(&card.pan).expect("card");

    // The forged flag under a MAC of another key, and with none at all: 63, nothing booked.
    let forged =
        with_tsp_verified(with_zero_cryptogram(chip_request(&c.spec, card, &Tx::purchase(1, 9_000, 1))));
    let mut wrong = forged.clone();
    link_mac(b"fedcba9876543210").sign(&mut wrong).expect("sign");
    for req in [&wrong, &forged] {
        let (raw, a) = c.call_raw(req).await;
        assert_eq!((a.mti().as_str(), rc(&a).as_str()), ("0110", "63"));
        assert_eq!(a.text(11), req.text(11));
        assert!(switch.verify(&raw, &a).is_ok(), "the refusal is signed");
    }
    assert_eq!(sim.open_to_buy(&card.pan), Some(before), "nothing booked");

    // Genuine: answered, and its MAC verifies over the bytes as they arrived — by the switch's
    // link and by the algorithm itself under the clear key.
    let mut genuine = chip_request(&c.spec, card, &Tx::purchase(2, 9_000, 2));
    switch.sign(&mut genuine).expect("sign");
    let (raw, a) = c.call_raw(&genuine).await;
    assert_eq!(rc(&a), "00");
    switch.verify(&raw, &a).expect("the answer's MAC verifies");
    let mac = &raw[raw.len() - 8..];
    assert_eq!(a.field(64).map(|f| f.data), Some(mac), "DE 64, last");
    MacAlgorithm::CmacAes
        .verify(&LINK_KEY, &raw[..raw.len() - 8], mac)
        .expect("AES-CMAC over the bytes before it");
    assert_eq!(sim.open_to_buy(&card.pan), Some(before - 9_000));

    // Network management is signed both ways too.
    let mut echo = Message::new(c.spec.clone(), "0800".parse().expect("MTI"));
    echo.set_text(11, "000003").expect("DE 11");
    echo.set_text(70, "301").expect("DE 70");
    let (_, a) = c.call_raw(&echo).await;
    assert_eq!(rc(&a), "63", "unsigned echo");
    switch.sign(&mut echo).expect("sign");
    let (raw, a) = c.call_raw(&echo).await;
    assert_eq!((a.mti().as_str(), rc(&a).as_str()), ("0810", "00"));
    switch.verify(&raw, &a).expect("signed");

    // A request that breaks the spec is answered 30, signed like every answer.
    let mut bad = genuine.encode().expect("encode").to_vec();
    let de4 = bad.windows(12).position(|w| w == b"000000009000").expect("DE 4");
    bad[de4 + 5] = b'X';
    let (raw, a) = c.exchange(Bytes::from(bad)).await;
    assert_eq!(rc(&a), "30");
    switch.verify(&raw, &a).expect("signed");
}
