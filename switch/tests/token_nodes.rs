//! Two `switch` processes running the token service over one PostgreSQL database (a schema of the
//! test's own), in front of one issuer that steps every ID&V up to an OTP: a provisioning begun on
//! node A's API is completed on node B's (a retried request id gets the same answer on either
//! node), the token B issued pays on A (which never saw it) and on
//! a third node C that publishes no provisioning API (`[token_service] api = false`), and a
//! suspension through B is refused by A. Skipped without a database unless
//! `PAYNET_REQUIRE_POSTGRES=1`.

mod common;

use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use common::Client;
use futures_util::{SinkExt, StreamExt};
use sha2::Digest;
use switch::store::postgres::PgOptions;
use terminal_kit::pos::{TestCard, Tx, chip_request};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

const DEVICE_SECRET: [u8; 32] = [0x2A; 32];
const CARD: &str = "4761739001010010";
const REQUESTOR: &str = "40010030273";
const SECRET: &str = "requestor-secret";

/// ID&V (DE 3 900000) is stepped up (1A); the OTP step (910000) and everything else approved.
async fn issuer() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let spec = Spec::builtin("network").expect("spec").clone();
                let mut framed = Framed::new(s, FrameCodec::new(FramingKind::Binary2));
                while let Some(Ok(frame)) = framed.next().await {
                    let Ok(req) = Message::decode(&spec, frame.payload.clone()) else { continue };
                    let rc = if req.text(3).as_deref() == Some("900000") { "1A" } else { "00" };
                    let mut a = codecs::iso8583::reply::response(&req, rc);
                    if rc == "00" && req.mti() == codecs::iso8583::Mti::AUTHORIZATION_REQUEST {
                        a.set_text(38, "A00001").expect("DE 38");
                    }
                    if framed.send(Frame::new(a.encode().expect("encode"))).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Node `node`'s configuration: the token service (range 489537 on `token.imk-ac`, one wallet
/// requestor) over the shared database.
fn config(node: &str, port: u16, db: &PgOptions) -> String {
    config_with(node, port, db, "listen = \"127.0.0.1:0\"")
}

/// [`config`] with `token_service` settings of its own (`listen`, `api`).
fn config_with(node: &str, port: u16, db: &PgOptions, token_service: &str) -> String {
    let sha = hex::encode(sha2::Sha256::digest(SECRET.as_bytes()));
    let more = format!(
        "\n[store]\nurl = \"{}\"\nschema = \"{}\"\npool_size = 4\n\
         [token_service]\nenabled = true\n{token_service}\nvault_key = \"switch.vault\"\n\
         [[token_service.range]]\nprefix = \"489537\"\nlength = 16\nimk_ac = \"token.imk-ac\"\n\
         [[token_service.requestor]]\nid = \"{REQUESTOR}\"\nkind = \"wallet\"\nsecret_sha256 = \"{sha}\"\n",
        db.url, db.schema
    );
    common::node_config(node, port, 5000, "", &more)
}

/// A node with the network's keys: the same keystore (vault key, PAN index, token references,
/// token IMK) on every node.
fn node(cfg: &str) -> (common::SwitchProcess, String) {
    let (p, api) = node_serving(cfg);
    (p, api.expect("provisioning API"))
}

/// A node with the network's keys, and its provisioning API if it serves one.
fn node_serving(cfg: &str) -> (common::SwitchProcess, Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    common::add_key(dir.path(), "switch.vault", "D0000D0AB00N0000", &"11".repeat(32));
    common::add_key(dir.path(), "token.imk-ac", "D0000E0TX00N0000", "0123456789ABCDEFFEDCBA9876543210");
    let p = common::start_in(dir, cfg);
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.dir.path().join("ready.json")).expect("ready"))
            .expect("JSON");
    let api = ready["provisioning_api"].as_str().map(str::to_string);
    (p, api)
}

async fn post(api: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = testkit::http::post(api, path, Some(&format!("{REQUESTOR}:{SECRET}")), body).await;
    (r.status, r.json())
}

fn rc(m: &Message) -> String {
    m.text(39).map(|t| t.into_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_begun_on_one_node_completes_on_the_other_and_its_token_pays_on_every_node() {
    let Some(t) = testkit::pg::database("token_nodes") else { return };
    // `t` is dropped last, pass or fail: the test's schema goes with it.
    let db = PgOptions::new(t.url.clone(), t.schema.clone());
    let port = issuer().await;
    let (a, api_a) = node(&config("node-a", port, &db));
    let (b, api_b) = node(&config("node-b", port, &db));

    // Node A's API: the issuer steps up.
    let device = hex::encode(crypto::device::public_key(&DEVICE_SECRET).expect("public key"));
    let body =
        serde_json::json!({"request_id": "r1", "pan": CARD, "expiry": "2812", "device_public_key": device});
    let (st, s) = post(&api_a, "/v1/provision", &body.to_string()).await;
    assert_eq!((st, s["status"].as_str()), (202, Some("otp_required")), "{s}");
    let id = s["provisioning_id"].as_str().expect("id");
    // The requestor lost that answer and retries on node B: the same answer, the same step-up
    // (the answers to request ids are shared), not a second one.
    let (st, again) = post(&api_b, "/v1/provision", &body.to_string()).await;
    assert_eq!((st, &again), (202, &s), "the answer node A gave");
    // Node B completes it with the cardholder's OTP, issues the token and activates it.
    let (st, s) = post(&api_b, &format!("/v1/provision/{id}/otp"), "{\"otp\":\"123456\"}").await;
    assert_eq!((st, s["status"].as_str()), (200, Some("approved")), "{s}");
    let token_ref = s["token_ref"].as_str().expect("ref").to_string();
    let (st, c) = post(&api_b, &format!("/v1/tokens/{token_ref}/confirm"), "").await;
    assert_eq!((st, c["status"].as_str()), (200, Some("active")), "{c}");
    // Retried once more, on node A: now the answer node B gave when the OTP completed it.
    let (st, again) = post(&api_a, "/v1/provision", &body.to_string()).await;
    assert_eq!(
        (st, again["status"].as_str(), again["token_ref"].as_str()),
        (200, Some("approved"), Some(token_ref.as_str()))
    );
    assert_eq!(again["encrypted_token_data"], s["encrypted_token_data"], "{again}");
    // A step-up is completed once: gone from every node.
    assert_eq!(post(&api_a, &format!("/v1/provision/{id}/otp"), "{\"otp\":\"123456\"}").await.0, 404);

    let sealed = hex::decode(s["encrypted_token_data"].as_str().expect("sealed")).expect("hex");
    let plain = crypto::device::open(&DEVICE_SECRET, tsp::service::PROFILE_INFO, &sealed).expect("opens");
    let v: serde_json::Value = serde_json::from_slice(&plain).expect("profile");
    let text = |k: &str| v[k].as_str().expect("profile field").to_string();
    let phone = TestCard {
        pan: text("token"),
        expiry: text("expiry"),
        psn: text("psn"),
        cvn: text("cvn"),
        icc_mk: text("icc_mk"),
        pin: String::new(),
        balance: String::new(),
    };
    let spec = Spec::builtin("network").expect("spec");
    let pay =
        |stan: u32| chip_request(spec, &phone, &Tx::purchase(stan, 1_000, stan as u16)).expect("request");
    let mut ca = Client::connect(&a.addr("acquirer"), FramingKind::Binary2, "network").await;
    let mut cb = Client::connect(&b.addr("acquirer"), FramingKind::Binary2, "network").await;
    // The token node B issued pays on node A, which never saw it, and on node B.
    let rsp = ca.call(&pay(1)).await;
    assert_eq!((rc(&rsp), rsp.text(2).map(|t| t.into_owned())), ("00".into(), Some(phone.pan.clone())));
    assert_eq!(rc(&cb.call(&pay(2)).await), "00");
    // Node C runs the token service without its API: its `listen` address stays this test's (C
    // would not start if it tried to bind it), it names no API, and the token pays on it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = format!("api = false\nlisten = \"{}\"", held.local_addr().expect("addr"));
    let (c, api_c) = node_serving(&config_with("node-c", port, &db, &listen));
    assert_eq!(api_c, None, "no provisioning API published");
    let mut cc = Client::connect(&c.addr("acquirer"), FramingKind::Binary2, "network").await;
    let rsp = cc.call(&pay(3)).await;
    assert_eq!((rc(&rsp), rsp.text(2).map(|t| t.into_owned())), ("00".into(), Some(phone.pan.clone())));
    drop(held);
    // Suspended through node B: node A refuses it once the change notice reached it (answering
    // as before until then).
    let (st, s) = post(&api_b, &format!("/v1/tokens/{token_ref}/suspend"), "").await;
    assert_eq!((st, s["status"].as_str()), (200, Some("suspended")), "{s}");
    let mut stan = 3;
    let refused = loop {
        stan += 1;
        let got = rc(&ca.call(&pay(stan)).await);
        if got != "00" || stan > 200 {
            break got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert_eq!(refused, "57", "a suspended token is refused on the other node");
    drop((a, b, c));
}
