//! The issuer simulator's listener as the switch's MAC-authenticated link, over TCP on 127.0.0.1
//! (ports from the OS): the token service's "cryptogram verified" (DE 123 DF8106) gets a forger
//! nothing on a listener without a link MAC, a request with a wrong MAC is answered 63 and books
//! nothing, and a genuine request is answered with a MAC the switch verifies over the bytes as
//! they arrived.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use crypto::keystore::{Keystore, Lmk};
use crypto::mac::MacAlgorithm;
use futures_util::{SinkExt, StreamExt};
use issuer_sim::cards::{TestIssuer, ZPK_NAME, generate_test_issuer};
use issuer_sim::host::Issuer;
use issuer_sim::link_mac::LinkMac;
use issuer_sim::server::{self, ServerState};
use issuer_sim::testing::{Tx, chip_request, link_mac, tag91, with_tsp_verified, with_zero_cryptogram};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// The key the switch and the issuer share (test material).
const LINK_KEY: [u8; 16] = *b"0123456789abcdef";

fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut x = seed | 1;
    move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            *b = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
    }
}

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
    let lmk = Lmk::from_hex(&"0123456789ABCDEF".repeat(4)).expect("LMK");
    let test = generate_test_issuer(4, lmk.clone(), "2912", &mut rng(7)).expect("test issuer");
    let ks = Keystore::from_toml(lmk, &test.keystore.to_toml()).expect("keystore");
    let hsm = Arc::new(crypto::hsm::SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.fill(0x3C))));
    let state = Arc::new(ServerState {
        issuer: Mutex::new(Issuer::new(hsm, ZPK_NAME, &test.cards)),
        spec: Spec::builtin("network").expect("spec").clone(),
        framing: FramingKind::Binary2,
        faults: std::sync::RwLock::new(Vec::new()),
        clock: Box::new(|| 1_795_000_000_000),
        random: Box::new(|| 424_242),
        link_mac,
    });
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

/// The switch's end of a connection: frames out, raw answers in.
struct Conn {
    framed: Framed<TcpStream, FrameCodec>,
    spec: Arc<Spec>,
}

impl Conn {
    async fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Conn {
            framed: Framed::new(stream, FrameCodec::new(FramingKind::Binary2)),
            spec: Spec::builtin("network").expect("spec").clone(),
        }
    }

    /// Sends `payload`; the answer as it arrived, and decoded.
    async fn exchange(&mut self, payload: Bytes) -> (Bytes, Message) {
        self.framed.send(Frame::new(payload)).await.expect("send");
        let frame = tokio::time::timeout(Duration::from_secs(10), self.framed.next())
            .await
            .expect("an answer in time")
            .expect("the connection stays")
            .expect("a frame");
        let m = Message::decode(&self.spec, frame.payload.clone()).expect("the answer decodes");
        (frame.payload, m)
    }

    async fn call(&mut self, m: &Message) -> (Bytes, Message) {
        self.exchange(m.encode().expect("encode")).await
    }
}

fn rc(m: &Message) -> String {
    m.text(39).map(|c| c.into_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_tsp_flag_over_an_unauthenticated_connection_is_not_approved_and_books_nothing() {
    let sim = serve(None).await;
    let mut c = Conn::connect(&sim.addr).await;
    let card = &sim.test.clear[0];
    let before = sim.open_to_buy(&card.pan).expect("card");
    let forged =
        with_tsp_verified(with_zero_cryptogram(chip_request(&c.spec, card, &Tx::purchase(1, 9_000, 1))));
    let (_, a) = c.call(&forged).await;
    assert_eq!(rc(&a), "82", "the issuer verified the all-zero cryptogram itself");
    assert!(tag91(&a).is_some(), "with its own ARPC");
    // On a token PAN (the token service's own range): no card of the issuer's.
    let mut token = card.clone();
    token.pan = "4895370000000001".into();
    let (_, a) = c.call(&with_tsp_verified(chip_request(&c.spec, &token, &Tx::purchase(2, 9_000, 2)))).await;
    assert_eq!(rc(&a), "14");
    assert_eq!(sim.open_to_buy(&card.pan), Some(before), "nothing booked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_macd_link_a_wrong_mac_is_63_and_a_genuine_request_is_answered_signed() {
    let sim = serve(Some(link_mac(&LINK_KEY))).await;
    let switch = link_mac(&LINK_KEY);
    let mut c = Conn::connect(&sim.addr).await;
    let card = &sim.test.clear[0];
    let before = sim.open_to_buy(&card.pan).expect("card");

    // The forged flag under a MAC of another key, and with none at all: 63, nothing booked.
    let forged =
        with_tsp_verified(with_zero_cryptogram(chip_request(&c.spec, card, &Tx::purchase(1, 9_000, 1))));
    let mut wrong = forged.clone();
    link_mac(b"fedcba9876543210").sign(&mut wrong).expect("sign");
    for req in [&wrong, &forged] {
        let (raw, a) = c.call(req).await;
        assert_eq!((a.mti().as_str(), rc(&a).as_str()), ("0110", "63"));
        assert_eq!(a.text(11), req.text(11));
        assert!(switch.verify(&raw, &a).is_ok(), "the refusal is signed");
    }
    assert_eq!(sim.open_to_buy(&card.pan), Some(before), "nothing booked");

    // Genuine: answered, and its MAC verifies over the bytes as they arrived — by the switch's
    // link and by the algorithm itself under the clear key.
    let mut genuine = chip_request(&c.spec, card, &Tx::purchase(2, 9_000, 2));
    switch.sign(&mut genuine).expect("sign");
    let (raw, a) = c.call(&genuine).await;
    assert_eq!(rc(&a), "00");
    switch.verify(&raw, &a).expect("the answer's MAC verifies");
    let mac = &raw[raw.len() - 8..];
    assert_eq!(a.field(64).map(|f| &f.data[..]), Some(mac), "DE 64, last");
    MacAlgorithm::CmacAes
        .verify(&LINK_KEY, &raw[..raw.len() - 8], mac)
        .expect("AES-CMAC over the bytes before it");
    assert_eq!(sim.open_to_buy(&card.pan), Some(before - 9_000));

    // Network management is signed both ways too.
    let mut echo = Message::new(c.spec.clone(), "0800".parse().expect("MTI"));
    echo.set_text(11, "000003").expect("DE 11");
    echo.set_text(70, "301").expect("DE 70");
    let (_, a) = c.call(&echo).await;
    assert_eq!(rc(&a), "63", "unsigned echo");
    switch.sign(&mut echo).expect("sign");
    let (raw, a) = c.call(&echo).await;
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
