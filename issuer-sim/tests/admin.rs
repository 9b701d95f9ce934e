//! The issuer simulator's admin port under attack: without its bearer credential nothing is read
//! or changed (401/403), and the cardholders' OTPs exist only in test mode.

use std::sync::Arc;

use issuer_sim::admin::{AdminAccess, run_admin};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn call(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let r = testkit::http::request(addr, method, path, token, body).await;
    (r.status, r.body)
}

async fn start(test_mode: bool) -> (String, Arc<issuer_sim::server::ServerState>, CancellationToken) {
    let (addr, state, stop, _) = start_with_cards(test_mode).await;
    (addr, state, stop)
}

async fn start_with_cards(
    test_mode: bool,
) -> (String, Arc<issuer_sim::server::ServerState>, CancellationToken, issuer_sim::cards::TestIssuer) {
    let (state, cards) = issuer_sim::testing::server_state(None, &mut testkit::TestRng::seeded(7).filler());
    let state = Arc::new(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let stop = CancellationToken::new();
    let access = AdminAccess::new(TOKEN, test_mode).expect("access");
    tokio::spawn(run_admin(l, state.clone(), access, door::DoorConfig::default(), stop.clone()));
    (addr, state, stop, cards)
}

/// A text is shown for its OTP's lifetime only, even when no request came since to sweep it.
#[tokio::test]
async fn a_text_past_its_otps_lifetime_is_not_shown() {
    let (addr, state, stop, cards) = start_with_cards(true).await;
    let now = (state.clock)();
    let ttl = issuer_sim::idv::IdvLimits::default().otp_ttl_ms;
    // Card 1 steps up: two OTPs texted, one just past its lifetime by now, one within it.
    for (session, at) in [("old", now - ttl - 1), ("new", now - ttl)] {
        let c = &cards.clear[1];
        let ask = issuer_sim::host::IdvAsk {
            pan: &c.pan,
            expiry: &c.expiry,
            cvv2: None,
            requestor: "wallet",
            session,
            otp: None,
        };
        let mut i = state.issuer.lock().expect("issuer");
        assert_eq!(i.verify_cardholder(&ask, at, "2611", 7), issuer_sim::host::CardholderCheck::OtpSent);
    }
    let (s, b) = call(&addr, "GET", "/v1/sms", Some(TOKEN), "").await;
    assert_eq!(s, 200, "{b}");
    let texts: Vec<serde_json::Value> = serde_json::from_str(&b).expect("JSON");
    assert_eq!(texts.len(), 1, "{b}");
    assert_eq!(texts[0]["at_ms"], now - ttl);
    assert_eq!(state.issuer.lock().expect("issuer").kept_sizes(), (0, 1, 1), "the OTP outbox too");
    stop.cancel();
}

#[tokio::test]
async fn every_admin_call_needs_the_bearer_credential() {
    let (addr, state, stop) = start(true).await;
    let rules = r#"[{"when_amount": 777, "action": "drop"}]"#;
    for (method, path, body) in [
        ("GET", "/v1/faults", ""),
        ("PUT", "/v1/faults", rules),
        ("DELETE", "/v1/faults", ""),
        ("GET", "/v1/sms", ""),
    ] {
        let (s, b) = call(&addr, method, path, None, body).await;
        assert_eq!(s, 401, "{method} {path} without a credential: {b}");
        let (s, b) = call(&addr, method, path, Some("0123456789abcdef0123456789abcdeX"), body).await;
        assert_eq!(s, 403, "{method} {path} with a wrong credential: {b}");
        assert!(!b.contains(TOKEN), "the answer shows the credential");
    }
    assert!(state.faults.read().expect("faults").is_empty(), "an unauthenticated PUT changed the rules");
    // With it: served.
    assert_eq!(call(&addr, "PUT", "/v1/faults", Some(TOKEN), rules).await, (200, r#"{"rules":1}"#.into()));
    let (s, b) = call(&addr, "GET", "/v1/faults", Some(TOKEN), "").await;
    assert!(s == 200 && b.contains("\"drop\""), "{s} {b}");
    let (s, b) = call(&addr, "PUT", "/v1/faults", Some(TOKEN), r#"[{"action": "explode"}]"#).await;
    assert!(s == 400 && b.contains("explode"), "{s} {b}");
    assert_eq!(state.faults.read().expect("faults").len(), 1, "bad rules changed nothing");
    let (s, b) = call(&addr, "GET", "/v1/sms", Some(TOKEN), "").await;
    assert_eq!((s, b.as_str()), (200, "[]"));
    assert_eq!(call(&addr, "DELETE", "/v1/faults", Some(TOKEN), "").await.0, 200);
    assert!(state.faults.read().expect("faults").is_empty());
    stop.cancel();
}

#[tokio::test]
async fn outside_test_mode_there_are_no_otps_to_read() {
    let (addr, _, stop) = start(false).await;
    assert_eq!(call(&addr, "GET", "/v1/sms", None, "").await.0, 401);
    assert_eq!(call(&addr, "GET", "/v1/sms", Some(TOKEN), "").await.0, 404);
    assert_eq!(call(&addr, "GET", "/v1/faults", Some(TOKEN), "").await.0, 200);
    stop.cancel();
}

#[test]
fn a_short_credential_is_refused() {
    assert!(AdminAccess::new("", true).is_err());
    assert!(AdminAccess::new("password", true).is_err());
    assert!(AdminAccess::new(TOKEN, false).is_ok());
}
