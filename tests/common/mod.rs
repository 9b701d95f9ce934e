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

/// The device key pair of the test phones that [`provision_token`] provisions for.
pub const DEVICE_SECRET: [u8; 32] = [0x2A; 32];

/// Provisions a wallet token for the ports file's `card` through the provisioning API (the first
/// token requestor, ID&V approved by the issuer), confirms its installation, and returns the
/// phone's card: the token as its PAN, the token's keys.
pub async fn provision_token(
    net: &paynet::network::Network,
    request_id: &str,
    card: &ClearTestCard,
) -> terminal_kit::pos::TestCard {
    let r = &net.ports.token_requestors[0];
    let auth = format!("{}:{}", r.id, r.secret);
    provision_token_at(&net.ports.provisioning_api, &auth, request_id, &card.pan, &card.expiry).await
}

/// [`provision_token`] through the provisioning API at `api` (one node's, of `serve --nodes N`),
/// as the requestor `auth` (`id:secret`), for the card `pan`/`expiry`.
pub async fn provision_token_at(
    api: &str,
    auth: &str,
    request_id: &str,
    pan: &str,
    expiry: &str,
) -> terminal_kit::pos::TestCard {
    let device = hex::encode(crypto::device::public_key(&DEVICE_SECRET).expect("public key"));
    let body = serde_json::json!({"request_id": request_id, "pan": pan, "expiry": expiry, "device_public_key": device}).to_string();
    let a = testkit::http::post(api, "/v1/provision", Some(auth), &body).await;
    let a = a.json();
    assert_eq!(a["status"], "approved", "provisioning: {a}");
    let token_ref = a["token_ref"].as_str().expect("token_ref");
    let (phone, _, v) = open_token_profile(a["encrypted_token_data"].as_str().expect("sealed"));
    assert!(v["icc_mk"].is_string(), "a wallet token's profile holds its ICC master key");
    let confirmed =
        testkit::http::post(api, &format!("/v1/tokens/{token_ref}/confirm"), Some(auth), "").await;
    assert_eq!(confirmed.status, 200, "confirming the token");
    phone
}

/// The phone opens its sealed card profile (hex, as `encrypted_token_data` gives it) with its
/// device key [`DEVICE_SECRET`]: the token card (the token as its PAN; the ICC master key of a
/// wallet token, none for a cloud one), its limited-use keys by ATC (none for a wallet token), and
/// the profile's JSON.
pub fn open_token_profile(
    encrypted: &str,
) -> (terminal_kit::pos::TestCard, Vec<(u16, crypto::keys::TdesKey)>, serde_json::Value) {
    let sealed = hex::decode(encrypted).expect("hex");
    let plain = crypto::device::open(&DEVICE_SECRET, tsp::service::PROFILE_INFO, &sealed)
        .expect("opens on the device");
    let v: serde_json::Value = serde_json::from_slice(&plain).expect("profile JSON");
    let luks = v["luks"].as_array().map(Vec::as_slice).unwrap_or_default();
    let luks = luks
        .iter()
        .map(|k| {
            let atc = u16::from_str_radix(k["atc"].as_str().expect("atc"), 16).expect("atc hex");
            (atc, crypto::keys::TdesKey::from_hex("luk", k["key"].as_str().expect("key")).expect("key"))
        })
        .collect();
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let card = terminal_kit::pos::TestCard {
        pan: v["token"].as_str().expect("token").into(),
        expiry: v["expiry"].as_str().expect("expiry").into(),
        psn: v["psn"].as_str().expect("psn").into(),
        cvn: v["cvn"].as_str().expect("cvn").into(),
        icc_mk: text("icc_mk"),
        pin: String::new(),
        balance: String::new(),
    };
    (card, luks, v)
}

/// Whether `bytes` hold `pan` in any form an answer could carry it: its ASCII digits, or its
/// digits packed two to a byte (BCD, an odd one padded with F or 0, right or left).
pub fn holds_pan(bytes: &[u8], pan: &str) -> bool {
    let packed = |digits: &str| hex::decode(digits).unwrap_or_default();
    let mut forms = vec![pan.as_bytes().to_vec()];
    if pan.len().is_multiple_of(2) {
        forms.push(packed(pan));
    } else {
        for padded in [format!("{pan}F"), format!("{pan}0"), format!("0{pan}"), format!("F{pan}")] {
            forms.push(packed(&padded));
        }
    }
    forms.iter().any(|f| !f.is_empty() && bytes.windows(f.len()).any(|w| w == f.as_slice()))
}

/// A contactless chip 0100 on the network spec for a terminal-side card (a phone's token).
pub fn chip_request_for(card: &terminal_kit::pos::TestCard, tx: &Tx) -> Message {
    terminal_kit::pos::chip_request(Spec::builtin("network").expect("spec"), card, tx).expect("request")
}

/// The e-commerce 0100 of an in-app payment: the phone's online cryptogram for `amount` (EUR, at
/// a merchant in France) in a request of STAN `stan`, DE 22 `100`.
pub fn in_app_request(phone: &mut phone::Phone, stan: u32, amount: u64) -> Message {
    let tx = phone::OnlineTx {
        amount,
        country: [0x02, 0x50],
        currency: [0x09, 0x78],
        date: [0x26, 0x11, 0x25],
        tx_type: 0x00,
        un: [stan as u8, 0x0E, 0xC0, 0x11],
    };
    let tapped = emv::kernel::Tapped::from(phone.online_cryptogram(&tx).expect("online cryptogram"));
    let spec = Spec::builtin("network").expect("spec");
    let mut req =
        terminal_kit::pos::tap_request(spec, &tapped, &terminal_kit::pos::Tx::purchase(stan, amount, 0))
            .expect("request");
    req.set_text(22, "100").expect("DE 22");
    req
}
