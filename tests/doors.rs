//! Every HTTP door of a running network, attacked from outside on 127.0.0.1: refused without
//! its credential (401) or with a wrong one (403), served with it; the SP TSM's answers hold no
//! key in clear; a slow-header client is cut off without starving others.

mod common;

use std::time::{Duration, Instant};

use paynet::network::{self, Options};
use phone::Phone;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wallet_sim::providers::http;

/// One raw HTTP call: status and body.
async fn raw(base: &str, method: &str, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
    let r = testkit::http::request(base, method, path, bearer, body).await;
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_door_wants_its_credential_and_no_answer_holds_a_clear_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let a = net.providers().expect("providers").addrs.clone();
    let bureau = a.bureau_token.clone().expect("bureau credential");
    let card = net.ports.test_cards[0].clone();
    let mut phone = Phone::new().expect("phone");

    // The SP TSM's issuer-SE doors: the attacker's one-call card clone is gone.
    let se_pk = phone.order_secure_element("issuer").expect("order");
    let issue = json!({"se_public_key": se_pk}).to_string();
    assert_eq!(raw(&a.sp_tsm, "POST", "/v1/issuer-se/issue", None, &issue).await.0, 401);
    assert_eq!(raw(&a.sp_tsm, "POST", "/v1/issuer-se/issue", Some("guess:guess"), &issue).await.0, 403);
    let perso = json!({"se_id": "ISE0000000000000000", "pan": card.pan}).to_string();
    let (s, b) = raw(&a.sp_tsm, "POST", "/v1/issuer-se/perso", None, &perso).await;
    assert_eq!(s, 401, "{b}");
    assert!(!b.contains(&card.pan), "a clear PAN in the refusal: {b}");
    assert_eq!(raw(&a.sp_tsm, "POST", "/v1/issuer-se/perso", Some("guess"), &perso).await.0, 403);
    // The bureau is served; the keys are sealed for the SE, the script for its ISD.
    let (s, b) = raw(&a.sp_tsm, "POST", "/v1/issuer-se/issue", Some(&bureau), &issue).await;
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).expect("JSON");
    assert!(v.get("isd_keys").is_none(), "ISD keys in clear: {b}");
    let se_id = v["se_id"].as_str().expect("se_id").to_string();
    phone
        .fit_sealed_secure_element(
            &se_id,
            "issuer",
            v["isd_aid"].as_str().expect("aid"),
            v["sealed_isd_keys"].as_str().expect("sealed"),
        )
        .expect("the SE opens its keys");
    // The clear keys (as the SE holds them) appear nowhere in the answer.
    let held = serde_json::to_value(&phone.state().secure_elements[0].domains[0]).expect("domain");
    let keys: Vec<&str> = held["keys"]
        .as_object()
        .expect("key set")
        .values()
        .filter_map(Value::as_str)
        .filter(|k| k.len() >= 32)
        .collect();
    assert!(!keys.is_empty(), "{held}");
    for k in keys {
        assert!(!b.to_uppercase().contains(&k.to_uppercase()), "an ISD key in clear in the answer");
    }
    // Another party's key cannot open them.
    let mut thief = Phone::new().expect("thief");
    thief.order_secure_element("issuer").expect("order");
    assert!(
        thief
            .fit_sealed_secure_element(
                &se_id,
                "issuer",
                "A000000151000001",
                v["sealed_isd_keys"].as_str().expect("sealed")
            )
            .is_err(),
        "the ISD keys opened for another SE"
    );
    let perso = json!({"se_id": se_id, "pan": card.pan}).to_string();
    let (s, b) = raw(&a.sp_tsm, "POST", "/v1/issuer-se/perso", Some(&bureau), &perso).await;
    assert_eq!(s, 200, "{b}");
    assert!(!b.to_uppercase().contains(&card.icc_mk.to_uppercase()), "the ICC master key in clear: {b}");
    assert!(!b.contains(&card.pan), "the clear PAN in the perso answer");

    // The SE operator: an SE's owner acts for that SE only; the SP endpoints want the SP TSM.
    let mut p2 = Phone::new().expect("phone");
    let pk2 = p2.order_secure_element("se-operator").expect("order");
    let se = http::ok(
        "se",
        http::post(&a.se_operator, "/v1/se/issue", None, &json!({"se_public_key": pk2}))
            .await
            .expect("issue"),
    )
    .expect("issued");
    assert!(se.get("isd_keys").is_none(), "ISD keys in clear: {se}");
    let se2 = se["se_id"].as_str().expect("id").to_string();
    let owner2 = se["owner_token"].as_str().expect("owner").to_string();
    let mut p3 = Phone::new().expect("phone");
    let pk3 = p3.order_secure_element("se-operator").expect("order");
    let other = http::ok(
        "se",
        http::post(&a.se_operator, "/v1/se/issue", None, &json!({"se_public_key": pk3}))
            .await
            .expect("issue"),
    )
    .expect("issued");
    let owner3 = other["owner_token"].as_str().expect("owner").to_string();
    let apply = json!({"se_id": se2, "cardholder": "t"}).to_string();
    assert_eq!(raw(&a.se_operator, "POST", "/v1/applications", None, &apply).await.0, 401);
    assert_eq!(raw(&a.se_operator, "POST", "/v1/applications", Some(&owner3), &apply).await.0, 403);
    assert_eq!(raw(&a.se_operator, "POST", "/v1/applications", Some(&owner2), &apply).await.0, 200);
    let ota = format!("/v1/ota/{se2}");
    assert_eq!(raw(&a.se_operator, "GET", &ota, None, "").await.0, 401);
    assert_eq!(raw(&a.se_operator, "GET", &ota, Some(&owner3), "").await.0, 403);
    assert_eq!(raw(&a.se_operator, "GET", &ota, Some(&owner2), "").await.0, 200);
    let tokens = json!({"se_id": se2, "pan": card.pan, "expiry": card.expiry}).to_string();
    assert_eq!(raw(&a.se_operator, "POST", "/v1/tokens", Some(&owner3), &tokens).await.0, 403);
    for path in ["/v1/cross-check", "/v1/auth/verify", "/v1/perso"] {
        let body = json!({"se_id": se2, "application_id": "APP000001", "auth_code": "00", "sp_id": "issuer-a", "perso_data": "00"});
        assert_eq!(raw(&a.se_operator, "POST", path, None, &body.to_string()).await.0, 401, "{path}");
        assert_eq!(
            raw(&a.se_operator, "POST", path, Some(&owner2), &body.to_string()).await.0,
            403,
            "{path}"
        );
    }

    // The cloud platform and the wallet server: no longer an open proxy to their requestor
    // credential — a registered device, acting for itself.
    for base in [&a.cloud, &a.wallet] {
        let body =
            json!({"device_id": "DEV1", "device_public_key": "04", "pan": card.pan, "expiry": card.expiry});
        let (s, b) = raw(base, "POST", "/v1/cards", None, &body.to_string()).await;
        assert_eq!(s, 401, "{b}");
        assert_eq!(raw(base, "POST", "/v1/cards", Some("DEV1:0000"), &body.to_string()).await.0, 403);
        assert_eq!(raw(base, "POST", "/v1/pan-cards", None, &body.to_string()).await.0, 401);
        assert_eq!(raw(base, "POST", "/v1/cards/otp", None, "{}").await.0, 401);
    }
    let dev = Phone::new().expect("device");
    let reg =
        json!({"device_id": dev.device_id(), "device_public_key": dev.device_public_key().expect("dpk")})
            .to_string();
    let (s, b) = raw(&a.wallet, "POST", "/v1/devices", None, &reg).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = raw(&a.wallet, "POST", "/v1/devices", None, &reg).await;
    assert_eq!(s, 409, "re-registering a device id would take it over");
    let bad = json!({"device_id": "DEVX", "device_public_key": "0102"}).to_string();
    let (s, b) = raw(&a.wallet, "POST", "/v1/devices", None, &bad).await;
    assert_eq!(s, 400, "{b}");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuer_admin_port_wants_its_token_and_a_slow_client_starves_nobody() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let admin = net.ports.issuer_admin.clone();
    let token = net.ports.issuer_admin_token.clone();
    assert!(token.len() >= 32, "a random credential");
    for (m, p) in [("GET", "/v1/faults"), ("PUT", "/v1/faults"), ("DELETE", "/v1/faults"), ("GET", "/v1/sms")]
    {
        let body = if m == "PUT" { r#"[{"action":"drop"}]"# } else { "" };
        assert_eq!(raw(&admin, m, p, None, body).await.0, 401, "{m} {p}");
        assert_eq!(
            raw(&admin, m, p, Some("0000000000000000000000000000000000000000"), body).await.0,
            403,
            "{m} {p}"
        );
    }
    assert!(net.issuer_state.faults.read().expect("faults").is_empty(), "nothing changed");
    assert_eq!(raw(&admin, "GET", "/v1/faults", Some(&token), "").await, (200, "[]".into()));
    assert_eq!(raw(&admin, "GET", "/v1/sms", Some(&token), "").await.0, 200, "serve runs in test mode");

    // Slowloris on the provisioning API: half a header, then silence. Others are served at once;
    // the slow client is cut off after the header timeout (5 s by default).
    let api = net.ports.provisioning_api.clone();
    let host = api.strip_prefix("http://").expect("http").to_string();
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(&host).await.expect("connect");
        s.write_all(b"POST /v1/provision HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("write");
        slow.push(s);
    }
    let t0 = Instant::now();
    let (s, _) = raw(&api, "GET", "/openapi.json", None, "").await;
    assert_eq!(s, 200);
    assert!(t0.elapsed() < Duration::from_secs(2), "others waited for the slow clients");
    for mut s in slow {
        let mut b = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut b)).await;
        assert!(r.is_ok(), "a slow client was never cut off");
    }
    assert!(t0.elapsed() >= Duration::from_secs(4), "cut off before the header timeout");
    net.shutdown().await;
}

/// ID&V through the provisioning API, as a guesser sees it: one generic decline whatever was
/// wrong, and after five failures the card is locked — the right expiry no longer helps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_and_v_gives_one_decline_and_locks_the_card_after_five_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let api = net.ports.provisioning_api.clone();
    let r = &net.ports.token_requestors[0];
    let auth = format!("{}:{}", r.id, r.secret);
    let dev = Phone::new().expect("device");
    let dpk = dev.device_public_key().expect("dpk");
    let card = net.ports.test_cards[2].clone();
    let provision = |n: u32, pan: &str, expiry: &str, cvv2: Option<&str>| {
        let mut b = json!({"request_id": format!("guess-{n}"), "pan": pan, "expiry": expiry,
                           "device_public_key": dpk, "entry_modes": ["07"]});
        if let Some(c) = cvv2 {
            b["cvv2"] = json!(c);
        }
        b.to_string()
    };
    // A PAN of the issuer's range that is no card, a wrong expiry, a wrong CVV2: the same answer.
    let other = if &card.pan[14..15] == "7" { "8" } else { "7" };
    let prefix = format!("{}{other}", &card.pan[..14]);
    let unknown = (0..10)
        .map(|d| format!("{prefix}{d}"))
        .find(|p| codecs::pan::luhn_valid(p.as_bytes()))
        .expect("a Luhn-valid PAN");
    assert!(net.ports.test_cards.iter().all(|c| c.pan != unknown), "not a test card");
    let wrong_cvv2 = if card.cvv2 == "999" { "998" } else { "999" };
    let mut answers = Vec::new();
    for (n, (pan, expiry, cvv2)) in [
        (unknown.as_str(), card.expiry.as_str(), None),
        (card.pan.as_str(), "0101", None),
        (card.pan.as_str(), card.expiry.as_str(), Some(wrong_cvv2)),
    ]
    .into_iter()
    .enumerate()
    {
        let v = common::post(&api, "/v1/provision", &auth, &provision(n as u32, pan, expiry, cvv2)).await;
        assert!(!v.to_string().contains(&card.pan), "a clear PAN in the answer: {v}");
        answers.push((
            v["status"].as_str().map(str::to_string),
            v["response_code"].as_str().map(str::to_string),
        ));
    }
    let generic = (Some("declined".to_string()), Some("05".to_string()));
    assert!(answers.iter().all(|a| *a == generic), "{answers:?}");
    // Three more wrong expiries: five failures on the card.
    for n in 3..6 {
        let v = common::post(&api, "/v1/provision", &auth, &provision(n, &card.pan, "0202", None)).await;
        assert_eq!(v["response_code"], "05", "{v}");
    }
    let v =
        common::post(&api, "/v1/provision", &auth, &provision(9, &card.pan, &card.expiry, Some(&card.cvv2)))
            .await;
    assert_eq!(
        (v["status"].as_str(), v["response_code"].as_str()),
        (Some("declined"), Some("05")),
        "locked: {v}"
    );
    net.shutdown().await;
}

/// A flood of provisioning requests (each a new request id, each remembered for repeats) and of
/// step-ups nobody answers: the token service's memory stays at its bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_service_state_stays_bounded_under_a_flood() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    net.token_service.limit_state(tsp::service::StateLimits {
        answered: 40,
        answered_ttl_ms: 60_000,
        pending: 10,
        pending_ttl_ms: 60_000,
    });
    let api = net.ports.provisioning_api.clone();
    let r = &net.ports.token_requestors[0];
    let auth = format!("{}:{}", r.id, r.secret);
    let dpk = Phone::new().expect("device").device_public_key().expect("dpk");
    // Card 1's policy steps up: every request leaves a step-up pending.
    let card = net.ports.test_cards[1].clone();
    for n in 0..120 {
        let body = json!({"request_id": format!("flood-{n}"), "pan": card.pan, "expiry": card.expiry,
                          "device_public_key": dpk, "entry_modes": ["07"]});
        let v = common::post(&api, "/v1/provision", &auth, &body.to_string()).await;
        assert!(v["status"].is_string(), "{v}");
        let (answered, pending) = net.token_service.state_sizes();
        assert!(answered <= 40 && pending <= 10, "{answered} answers, {pending} step-ups after {n}");
    }
    assert_eq!(net.token_service.state_sizes(), (40, 10));

    // The issuer simulator's side of the same flood: every step-up texted an OTP (both outboxes),
    // every lifecycle change sent a notice (0620). Its admin port shows the texts.
    let issuer_kept = || net.issuer_state.issuer.lock().expect("issuer").kept_sizes();
    let (notices, sms, otps) = issuer_kept();
    assert!(sms <= 64 && otps <= 256 && notices <= 1024, "{notices} {sms} {otps}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis();
    let small = issuer_sim::host::KeptLimits { notices: 8, sms: 6, otps: 5, ..Default::default() };
    net.issuer_state.issuer.lock().expect("issuer").limit_kept(small, now as u64);
    let admin = net.ports.issuer_admin.clone();
    let admin_token = net.ports.issuer_admin_token.clone();
    for n in 0..30 {
        let body = json!({"request_id": format!("flood-sms-{n}"), "pan": card.pan, "expiry": card.expiry,
                          "device_public_key": dpk, "entry_modes": ["07"]});
        let v = common::post(&api, "/v1/provision", &auth, &body.to_string()).await;
        assert_eq!(v["status"], "otp_required", "{v}");
        let (_, sms, otps) = issuer_kept();
        assert!(sms <= 6 && otps <= 5, "{sms} texts, {otps} OTPs after {n}");
    }
    let (s, b) = raw(&admin, "GET", "/v1/sms", Some(&admin_token), "").await;
    assert_eq!(s, 200, "{b}");
    let texts: Vec<Value> = serde_json::from_str(&b).expect("JSON");
    assert_eq!(texts.len(), 6, "the admin port shows the bounded outbox: {b}");
    assert!(!b.contains(&card.pan), "a clear PAN in the outbox");
    let approve = net.ports.test_cards[0].clone();
    let body = json!({"request_id": "flood-notices", "pan": approve.pan, "expiry": approve.expiry,
                      "device_public_key": dpk, "entry_modes": ["07"]});
    let v = common::post(&api, "/v1/provision", &auth, &body.to_string()).await;
    let token_ref = v["token_ref"].as_str().expect("approved").to_string();
    let mut sent = 0;
    for action in ["confirm"].into_iter().chain(["suspend", "resume"].into_iter().cycle().take(20)) {
        let v = common::post(&api, &format!("/v1/tokens/{token_ref}/{action}"), &auth, "").await;
        assert!(v["status"].is_string(), "{action}: {v}");
        sent += 1;
        assert!(issuer_kept().0 <= 8, "{} notices after {sent}", issuer_kept().0);
    }
    common::until("the notices reach the bound", || issuer_kept().0 == 8).await;
    net.shutdown().await;
}

/// A flood of made-up terminal IDs on a certification listener: the certification log keeps at
/// most its 10,000 terminals, the newest among them, as its admin endpoint shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certification_log_stays_bounded_under_a_flood_of_terminal_ids() {
    use codecs::iso8583::{Message, Mti, Spec};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(dir.path());
    opts.certification = true;
    opts.wallet_providers = false;
    let net = network::start(opts).await.expect("network");
    let bound = switch::certify::MAX_TERMINALS;
    let spec = Spec::builtin("network").expect("spec").clone();
    let mut c = common::acquirer_client(&net).await;
    let total = bound + 100;
    for chunk in (0..total).collect::<Vec<_>>().chunks(200) {
        let batch: Vec<Message> = chunk
            .iter()
            .map(|i| {
                let mut m = Message::new(spec.clone(), Mti::NETWORK_MANAGEMENT_REQUEST);
                m.set_text(7, "1204120000").expect("DE 7");
                m.set_text(11, &format!("{:06}", i % 999_999 + 1)).expect("DE 11");
                m.set_text(41, &format!("F{i:07}")).expect("DE 41");
                m.set_text(70, "301").expect("DE 70");
                m
            })
            .collect();
        c.send_many(&batch).await;
        for _ in chunk {
            c.recv().await;
        }
    }
    let r = testkit::http::request(&net.ports.admin, "GET", "/certification", None, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let terminals = r.json()["terminals"].as_array().expect("terminals").clone();
    assert_eq!(terminals.len(), bound, "the log stayed at its bound");
    let newest = format!("F{:07}", total - 1);
    let r =
        testkit::http::request(&net.ports.admin, "GET", &format!("/certification/{newest}"), None, "").await;
    assert_eq!(r.status, 200, "the newest terminal is kept: {}", r.body);
    let r = testkit::http::request(&net.ports.admin, "GET", "/certification/F0000000", None, "").await;
    assert_eq!(r.status, 404, "the stalest made room");
    net.shutdown().await;
}

/// The CVV2 where the requestor has it: the test wallet is configured `cvv2 = "required"`. The
/// wallet-sim flow sends the card's CVV2 and is approved; a provisioning without it is refused
/// with its own error before the issuer hears of it; a wrong one is the generic decline and
/// counts as an ID&V failure (two lock the card here), so the right one no longer helps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requestor_that_must_send_the_cvv2_is_refused_without_it_and_a_wrong_one_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(dir.path());
    opts.cvv2_required = vec!["wallet".into()];
    opts.idv = issuer_sim::idv::IdvLimits { max_failures: 2, ..Default::default() };
    let net = network::start(opts).await.expect("network");
    let api = net.ports.provisioning_api.clone();
    let wallet = net.ports.token_requestors.iter().find(|r| r.kind == "wallet").expect("wallet").clone();
    let auth = format!("{}:{}", wallet.id, wallet.secret);
    let dpk = Phone::new().expect("device").device_public_key().expect("dpk");
    let tracked = || net.issuer_state.issuer.lock().expect("issuer").idv_tracked();

    // Without the CVV2 (card 1 steps up: had the issuer been asked, an OTP would be out).
    let before = tracked();
    let card = net.ports.test_cards[1].clone();
    let body = json!({"request_id": "no-cvv2", "pan": card.pan, "expiry": card.expiry,
                      "device_public_key": dpk});
    let (s, b) = raw(&api, "POST", "/v1/provision", Some(&auth), &body.to_string()).await;
    assert_eq!(s, 400, "{b}");
    let v: Value = serde_json::from_str(&b).expect("JSON");
    assert_eq!(v["error"], "cvv2_required", "{b}");
    assert!(!b.contains(&card.pan), "a clear PAN in the refusal: {b}");
    assert_eq!(tracked(), before, "nothing reached the issuer");
    // Another requestor (cvv2 optional) is not held to it.
    let cloud = net.ports.token_requestors.iter().find(|r| r.kind == "cloud").expect("cloud");
    let v = common::post(&api, "/v1/provision", &format!("{}:{}", cloud.id, cloud.secret), &body.to_string())
        .await;
    assert_eq!(v["status"], "otp_required", "{v}");

    // Through the wallet server, as a phone adds a card: the flow sends the card's CVV2.
    let providers = net.providers().expect("providers").addrs.clone();
    let holder = |n: usize, cvv2: Option<String>| {
        let c = &net.ports.test_cards[n];
        wallet_sim::flows::CardholderCard { pan: c.pan.clone(), expiry: c.expiry.clone(), cvv2 }
    };
    let add = |mut phone: Phone, card: wallet_sim::flows::CardholderCard| {
        let providers = providers.clone();
        async move {
            let mut log = |_: &wallet_sim::flows::Step| {};
            let mut otp = || Err(wallet_sim::Error::Otp("no step-up expected".into()));
            let io = &mut wallet_sim::flows::Io { log: &mut log, otp: &mut otp };
            wallet_sim::flows::provision(wallet_sim::flows::Model::Wallet, &mut phone, &providers, &card, io)
                .await
        }
    };
    let right = |n: usize| Some(net.ports.test_cards[n].cvv2.clone());
    add(Phone::new().expect("phone"), holder(0, right(0))).await.expect("approved with the CVV2");
    // No CVV2 at hand: the wallet server passes the token service's refusal on, as it is.
    let e = add(Phone::new().expect("phone"), holder(2, None)).await.expect_err("refused");
    assert!(
        matches!(&e, wallet_sim::Error::Status { status: 400, body, .. } if body.contains("cvv2_required")),
        "{e}"
    );
    // A wrong CVV2, twice: the generic decline each time, and the card is locked.
    let c2 = net.ports.test_cards[2].clone();
    let wrong = format!("{:03}", (c2.cvv2.parse::<u32>().expect("digits") + 1) % 1000);
    for _ in 0..2 {
        let e =
            add(Phone::new().expect("phone"), holder(2, Some(wrong.clone()))).await.expect_err("declined");
        let wallet_sim::Error::Refused(r) = &e else { panic!("not a decline: {e}") };
        assert_eq!((r.status.as_str(), r.response_code.as_deref()), ("declined", Some("05")), "{e}");
    }
    let e = add(Phone::new().expect("phone"), holder(2, right(2))).await.expect_err("locked");
    let wallet_sim::Error::Refused(r) = &e else { panic!("not a decline: {e}") };
    assert_eq!(r.response_code.as_deref(), Some("05"), "the wrong CVV2s counted: {e}");
    net.shutdown().await;
}

/// The per-requestor lock: one requestor's failures on many different PANs — each PAN far from
/// its own limit — lock that requestor; another requestor is still served on the same cards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_on_many_pans_lock_the_requestor_and_others_are_still_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(dir.path());
    opts.idv =
        issuer_sim::idv::IdvLimits { max_failures: 5, max_requestor_failures: 4, ..Default::default() };
    let net = network::start(opts).await.expect("network");
    let api = net.ports.provisioning_api.clone();
    let cred = |kind: &str| {
        let r = net.ports.token_requestors.iter().find(|r| r.kind == kind).expect("requestor");
        format!("{}:{}", r.id, r.secret)
    };
    let (guesser, other) = (cred("wallet"), cred("cloud"));
    let dpk = Phone::new().expect("device").device_public_key().expect("dpk");
    let provision = |id: String, n: usize, expiry: Option<&str>| {
        let c = &net.ports.test_cards[n];
        json!({"request_id": id, "pan": c.pan, "expiry": expiry.unwrap_or(&c.expiry),
               "device_public_key": dpk, "cvv2": c.cvv2})
        .to_string()
    };
    let answer = |v: &Value| {
        (v["status"].as_str().map(str::to_string), v["response_code"].as_str().map(str::to_string))
    };
    let declined = (Some("declined".to_string()), Some("05".to_string()));
    // Four cards, one wrong expiry each: no card is near its own limit of five.
    for (i, n) in [0usize, 2, 3, 4].into_iter().enumerate() {
        let v =
            common::post(&api, "/v1/provision", &guesser, &provision(format!("g{i}"), n, Some("0101"))).await;
        assert_eq!(answer(&v), declined, "{v}");
    }
    // The guesser is locked: even a card's right data is declined for it, unchecked.
    let v = common::post(&api, "/v1/provision", &guesser, &provision("g-right".into(), 5, None)).await;
    assert_eq!(answer(&v), declined, "the requestor is locked: {v}");
    // Another requestor is served, on the same cards the guesser tried.
    for (i, n) in [5usize, 0].into_iter().enumerate() {
        let v = common::post(&api, "/v1/provision", &other, &provision(format!("o{i}"), n, None)).await;
        assert_eq!(v["status"], "approved", "card {n}: {v}");
    }
    net.shutdown().await;
}

/// A test CA and a server certificate for 127.0.0.1 and localhost signed by it, as PEM files in
/// `dir`: the door TLS of a server on this machine.
fn test_pki(dir: &std::path::Path) -> door::DoorTls {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("sign");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
    door::DoorTls { cert: dir.join("server.pem"), key: dir.join("server.key"), client_ca: None }
}

/// TLS on every door a phone's card goes through: the provisioning API and the four providers
/// serve HTTPS with certificates of a test CA. A client trusting no CA refuses to call them;
/// wallet-sim's command line, given the CA with `--ca-file`, provisions a phone; a client
/// trusting that CA provisions a token on
/// the provisioning API directly, and phones provision through the wallet server (wallet server →
/// token service) and the TSM path (SE operator, SP TSM → SE TSM) end to end; a plaintext
/// connection to any of them gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provisioning_api_and_every_provider_serve_https_to_clients_trusting_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = tempfile::tempdir().expect("pki dir");
    let tls = test_pki(pki.path());
    let mut opts = Options::new(dir.path());
    opts.provisioning_tls = Some(tls.clone());
    opts.provider_doors = wallet_sim::providers::ProviderDoors::all(door::DoorConfig {
        tls: Some(tls),
        ..door::DoorConfig::default()
    });
    let net = network::start(opts).await.expect("network");
    let api = net.ports.provisioning_api.clone();
    let a = net.providers().expect("providers").addrs.clone();
    let doors = [&api, &a.sp_tsm, &a.se_operator, &a.cloud, &a.wallet];
    assert!(doors.iter().all(|d| d.starts_with("https://127.0.0.1:")), "{doors:?}");
    // Trusting no CA yet, the client refuses to call them.
    let e = http::get(&api, "/openapi.json", None).await.expect_err("no trusted CA");
    assert!(e.to_string().contains("trusted CA"), "{e}");
    // wallet-sim, told the CA with --ca-file, provisions a phone from the ports file.
    {
        use clap::Parser;
        let ports_file = dir.path().join("ports.json");
        net.write_ports_file(&ports_file).expect("ports file");
        let (pf, ph) =
            (ports_file.display().to_string(), dir.path().join("phone.json").display().to_string());
        let ca = pki.path().join("ca.pem").display().to_string();
        let args = [
            "provision",
            "--model",
            "wallet",
            "--ports-file",
            &pf,
            "--card",
            "4",
            "--phone",
            &ph,
            "--ca-file",
            &ca,
        ];
        let cli =
            wallet_sim::cli::Cli::try_parse_from(std::iter::once("wallet-sim").chain(args)).expect("args");
        let mut out = Vec::new();
        wallet_sim::cli::run(cli, &mut out).await.expect("provisioned over TLS");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("provisioned and enabled"), "{text}");
    }

    // The provisioning API over TLS, as a requestor calls it.
    let r = net.ports.token_requestors.iter().find(|r| r.kind == "wallet").expect("wallet");
    let auth = format!("{}:{}", r.id, r.secret);
    let card = net.ports.test_cards[0].clone();
    let dpk = Phone::new().expect("device").device_public_key().expect("dpk");
    let body = json!({"request_id": "tls-1", "pan": card.pan, "expiry": card.expiry, "cvv2": card.cvv2,
                      "device_public_key": dpk});
    let v = common::post(&api, "/v1/provision", &auth, &body.to_string()).await;
    assert_eq!(v["status"], "approved", "{v}");

    // Phones through the providers, every hop over TLS.
    let mut log = |_: &wallet_sim::flows::Step| {};
    let issuer = net.issuer_state.clone();
    let mut otp = move || {
        let i = issuer.issuer.lock().map_err(|_| wallet_sim::Error::Otp("issuer".into()))?;
        i.otp_outbox.values().next().cloned().ok_or_else(|| wallet_sim::Error::Otp("none sent".into()))
    };
    for (model, n) in [(wallet_sim::flows::Model::Wallet, 3), (wallet_sim::flows::Model::TsmSePan, 2)] {
        let c = &net.ports.test_cards[n];
        let holder = wallet_sim::flows::CardholderCard {
            pan: c.pan.clone(),
            expiry: c.expiry.clone(),
            cvv2: Some(c.cvv2.clone()),
        };
        let mut phone = Phone::new().expect("phone");
        let io = &mut wallet_sim::flows::Io { log: &mut log, otp: &mut otp };
        let id = wallet_sim::flows::provision(model, &mut phone, &a, &holder, io).await;
        assert!(id.is_ok(), "{model}: {:?}", id.err());
    }

    // In clear, no door answers.
    for d in doors {
        let plain = d.replace("https://", "http://");
        let r = http::get(&plain, "/openapi.json", None).await;
        assert!(r.is_err(), "{plain} answered in clear: {:?}", r.map(|a| a.status));
    }
    net.shutdown().await;
}
