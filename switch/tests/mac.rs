//! Message MACs on an acquirer link (retail MAC, ANSI X9.19, in DE 64, or DE 128 with a secondary bitmap): a request signed with the
//! shared key is served and its answer carries a MAC the terminal verifies independently (here with
//! `crypto::mac` directly, as a terminal would); an unsigned or tampered request is answered 63.

mod common;

use codecs::framing::FramingKind;
use codecs::iso8583::Message;
use common::{Client, add_key, echo, start_in};
use crypto::mac::MacAlgorithm;

const MAC_KEY: &str = "0123456789ABCDEFFEDCBA9876543210";

/// DE 128 when the secondary bitmap is in use (echo carries DE 70), else DE 64.
fn mac_de(m: &Message) -> u16 {
    if m.fields().iter().any(|f| (65..=127).contains(&f.de)) { 128 } else { 64 }
}

fn sign(m: &mut Message) {
    let de = mac_de(m);
    m.set_bytes(de, vec![0u8; 8]).expect("MAC element");
    let enc = m.encode().expect("encode");
    let mac = MacAlgorithm::Retail
        .compute_len(&hex::decode(MAC_KEY).expect("hex"), &enc[..enc.len() - 8], Some(8))
        .expect("mac");
    m.set_bytes(de, mac).expect("MAC element");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retail_mac_on_an_acquirer_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    add_key(dir.path(), "acq.mac", "D0000M3TC00N0000", MAC_KEY);
    let cfg = r#"
[node]
name = "mac-node"
[admin]
listen = "127.0.0.1:0"
[keys]
keystore = "keys.toml"
[[listener]]
name = "acquirer"
listen = "127.0.0.1:0"
spec = "network"
framing = "2-byte-binary"
[listener.mac]
key = "acq.mac"
alg = "retail"
"#;
    let sw = start_in(dir, cfg);
    let mut c = Client::connect(&sw.addr("acquirer"), FramingKind::Binary2, "network").await;

    let mut req = echo("network", 10);
    sign(&mut req);
    c.send(&req).await;
    let raw = c.recv_raw().await.expect("answer");
    let a = Message::decode(&c.spec, raw.clone()).expect("decode");
    assert_eq!(a.text(39).as_deref(), Some("00"));
    let mac = a.bytes(mac_de(&a)).expect("answer MAC");
    assert_eq!(a.fields().last().map(|f| f.de), Some(128), "the MAC is the last element");
    MacAlgorithm::Retail
        .verify(&hex::decode(MAC_KEY).expect("hex"), &raw[..raw.len() - 8], &mac)
        .expect("the answer's MAC verifies under the shared key");

    // Unsigned: 63.
    let a = c.call(&echo("network", 11)).await;
    assert_eq!(a.text(39).as_deref(), Some("63"));
    // Tampered after signing: 63.
    let mut t = echo("network", 12);
    sign(&mut t);
    t.set_text(70, "302").expect("DE 70");
    let a = c.call(&t).await;
    assert_eq!(a.text(39).as_deref(), Some("63"));
}
