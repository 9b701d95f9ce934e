//! End-to-end test support: framed clients, and the terminal-sim POS functions (chip requests with
//! the card's real cryptogram, the card's ARPC check) applied to the ports file's test cards.
#![allow(dead_code)]

pub mod process;

use std::time::Duration;

use bytes::Bytes;
use codecs::framing::FramingKind;
use codecs::iso8583::{Message, Spec};
use issuer_sim::cards::ClearTestCard;

#[allow(unused_imports)]
pub use testkit::iso::Client;

pub use terminal_kit::pos::Tx;

/// A client on the in-process network's binary acquirer listener.
pub async fn acquirer_client(net: &paynet::network::Network) -> Client {
    Client::connect_to(&net.ports.acquirer.host, net.ports.acquirer.port, FramingKind::Binary2, "network")
        .await
}

/// A client on the in-process network's ASCII acquirer listener (iso87ascii, 4-digit header).
pub async fn acquirer_ascii_client(net: &paynet::network::Network) -> Client {
    let a = &net.ports.acquirer_ascii;
    Client::connect_to(&a.host, a.port, FramingKind::Ascii4, "iso87ascii").await
}

/// The issuer simulator's open-to-buy of `pan`.
pub fn otb(net: &paynet::network::Network, pan: &str) -> u64 {
    net.issuer_state.issuer.lock().expect("issuer").open_to_buy(pan).expect("card")
}

/// Waits (up to 10 s) until `f` holds.
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The ports file's card as a terminal sees it.
pub fn card(c: &ClearTestCard) -> terminal_kit::pos::TestCard {
    serde_json::from_value(serde_json::to_value(c).expect("json")).expect("card")
}

/// A contactless chip 0100 for `card`, its ARQC computed from the card's ICC master key.
pub fn chip_request(spec: &str, c: &ClearTestCard, tx: &Tx) -> Message {
    terminal_kit::pos::chip_request(Spec::builtin(spec).expect("spec"), &card(c), tx).expect("request")
}

/// Checks tag 91 of an answer as the card would.
pub fn card_accepts_arpc(c: &ClearTestCard, req: &Message, rsp: &Message) -> bool {
    terminal_kit::pos::card_accepts_arpc(&card(c), req, rsp)
}

pub fn rc(m: &Message) -> String {
    m.text(39).map(|c| c.into_owned()).unwrap_or_default()
}

pub fn bytes_of(m: &Message) -> Bytes {
    m.encode().expect("encode")
}

/// `POST base+path` with a JSON body and `Authorization: Bearer auth`: the answer's JSON body
/// (`null` when it has none).
pub async fn post(base: &str, path: &str, auth: &str, body: &str) -> serde_json::Value {
    let body: serde_json::Value = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).expect("a JSON body")
    };
    wallet_sim::providers::http::post(base, path, Some(auth), &body).await.expect("POST").body
}

/// A Visa-style contactless card profile (PSN 00, ATC 0) for a test card with these keys.
pub fn profile(pan: &str, expiry: &str, cvn: &str, keys: emv::card::CardKeys) -> emv::card::CardProfile {
    emv::card::CardProfile {
        pan: pan.into(),
        expiry: expiry.into(),
        psn: "00".into(),
        cvn: cvn.into(),
        aid: "A0000000031010".into(),
        label: "PAYNET CREDIT".into(),
        keys,
        atc: 0,
    }
}
