//! The token service end to end (the wallet / TSM / cloud models): a requestor provisions a card
//! over the HTTP API, the issuer simulator decides ID&V over the issuer link (approve, or OTP
//! step-up), the card profile arrives sealed for the device, installation is confirmed and the
//! issuer notified; then the phone pays with the token at a contactless terminal — the issuer sees
//! the card's PAN, the terminal gets the token back — and a suspended token is declined.

mod common;

use codecs::iso8583::Spec;
use common::{DEVICE_SECRET, rc};
use paynet::network::{self, Network, Options};
use terminal_kit::pos::{Tx, card_accepts_arpc, chip_request};

/// A POST with a JSON body on the provisioning API; (status, body).
async fn post(net: &Network, path: &str, auth: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let r = testkit::http::post(&net.ports.provisioning_api, path, auth, body).await;
    (r.status, r.json())
}

fn device_key_hex() -> String {
    hex::encode(crypto::device::public_key(&DEVICE_SECRET).expect("public key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_approve_and_otp_then_pay_with_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let r = &net.ports.token_requestors[0];
    let auth = format!("{}:{}", r.id, r.secret);
    let cards = net.ports.test_cards.clone();

    // Unauthenticated and wrong-secret calls are refused.
    let body = serde_json::json!({"request_id": "r1", "pan": cards[0].pan, "expiry": cards[0].expiry, "device_public_key": device_key_hex()}).to_string();
    assert_eq!(post(&net, "/v1/provision", None, &body).await.0, 401);
    assert_eq!(post(&net, "/v1/provision", Some(&format!("{}:wrong", r.id)), &body).await.0, 401);
    // Bad input is a clear 400 that does not quote the PAN back.
    let (st, e) = post(
        &net,
        "/v1/provision",
        Some(&auth),
        &format!(
            "{{\"request_id\":\"x\",\"pan\":{},\"expiry\":\"2911\",\"device_public_key\":\"00\"}}",
            cards[0].pan
        ),
    )
    .await;
    assert_eq!(st, 400);
    assert!(!e.to_string().contains(&cards[0].pan), "{e}");

    // ID&V approved by the issuer: the token and its sealed profile.
    let (st, a) = post(&net, "/v1/provision", Some(&auth), &body).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["status"], "approved", "{a}");
    assert!(!a.to_string().contains(&cards[0].pan), "no PAN in the answer");
    // The same request again: the same answer, no second token.
    let (_, again) = post(&net, "/v1/provision", Some(&auth), &body).await;
    assert_eq!(again, a);
    let token_ref = a["token_ref"].as_str().expect("ref").to_string();
    let (phone, _, _) = common::open_token_profile(a["encrypted_token_data"].as_str().expect("sealed"));
    assert!(phone.pan.starts_with("489537") && phone.pan != cards[0].pan);

    // Not yet installed: the token is inactive and declined (62).
    let mut c = common::acquirer_client(&net).await;
    let spec = Spec::builtin("network").expect("spec");
    let early = chip_request(spec, &phone, &Tx::purchase(1, 1_000, 1)).expect("request");
    assert_eq!(rc(&c.call(&early).await), "62");

    // Confirmed: active, and the issuer has the completion notice.
    let (st, s) = post(&net, &format!("/v1/tokens/{token_ref}/confirm"), Some(&auth), "").await;
    assert_eq!((st, s["status"].as_str()), (200, Some("active")));
    let notices = net.issuer_state.issuer.lock().expect("issuer").notices.clone();
    assert!(notices.iter().any(|n| n.processing_code == "920000" && n.token_data_len > 0), "{notices:?}");

    // The phone pays with the token: approved by the issuer on the card's account, the terminal
    // sees only the token, and the card accepts the ARPC.
    let before = net.issuer_state.issuer.lock().expect("issuer").open_to_buy(&cards[0].pan).expect("card");
    let req = chip_request(spec, &phone, &Tx::purchase(2, 2_500, 2)).expect("request");
    let rsp = c.call(&req).await;
    assert_eq!(rc(&rsp), "00", "{rsp:?}");
    assert_eq!(rsp.text(2).as_deref(), Some(phone.pan.as_str()), "the token comes back to the terminal");
    let after = net.issuer_state.issuer.lock().expect("issuer").open_to_buy(&cards[0].pan).expect("card");
    assert_eq!(after, before - 2_500, "booked on the card's account");
    assert!(card_accepts_arpc(&phone, &req, &rsp), "the phone accepts the token service's ARPC");

    // Suspended: 57; resumed: approved again.
    assert_eq!(
        post(&net, &format!("/v1/tokens/{token_ref}/suspend"), Some(&auth), "").await.1["status"],
        "suspended"
    );
    assert_eq!(rc(&c.call(&chip_request(spec, &phone, &Tx::purchase(3, 100, 3)).expect("req")).await), "57");
    assert_eq!(
        post(&net, &format!("/v1/tokens/{token_ref}/resume"), Some(&auth), "").await.1["status"],
        "active"
    );
    assert_eq!(rc(&c.call(&chip_request(spec, &phone, &Tx::purchase(4, 100, 4)).expect("req")).await), "00");

    // OTP step-up (the second test card's issuer policy): 202, then the OTP the cardholder got.
    let body = serde_json::json!({"request_id": "r2", "pan": cards[1].pan, "expiry": cards[1].expiry, "device_public_key": device_key_hex()}).to_string();
    let (st, a) = post(&net, "/v1/provision", Some(&auth), &body).await;
    assert_eq!((st, a["status"].as_str()), (202, Some("otp_required")), "{a}");
    let id = a["provisioning_id"].as_str().expect("id").to_string();
    let (st, _) = post(&net, &format!("/v1/provision/{id}/otp"), Some(&auth), "{\"otp\":\"000000\"}").await;
    assert_eq!(st, 200);
    let otp = net.issuer_state.issuer.lock().expect("issuer").otp_outbox.get(&id).cloned().expect("OTP sent");
    let (st, a) =
        post(&net, &format!("/v1/provision/{id}/otp"), Some(&auth), &format!("{{\"otp\":\"{otp}\"}}")).await;
    assert_eq!((st, a["status"].as_str()), (200, Some("approved")), "{a}");

    // The issuer declines ID&V (the expiry the cardholder typed is not the card's): no token.
    let wrong_expiry = if cards[2].expiry == "3912" { "3911" } else { "3912" };
    let body = serde_json::json!({"request_id": "r3", "pan": cards[2].pan, "expiry": wrong_expiry, "device_public_key": device_key_hex()}).to_string();
    let (st, d) = post(&net, "/v1/provision", Some(&auth), &body).await;
    assert_eq!((st, d["status"].as_str()), (200, Some("declined")), "{d}");
    assert!(d["response_code"].is_string() && d.get("token_ref").is_none(), "{d}");
    assert!(!d.to_string().contains(&cards[2].pan));

    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_vault_row_is_an_error_not_a_wrong_card() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let r = net.ports.token_requestors[0].clone();
    let auth = format!("{}:{}", r.id, r.secret);
    let card = net.ports.test_cards[0].clone();
    let body = serde_json::json!({"request_id": "t1", "pan": card.pan, "expiry": card.expiry, "device_public_key": device_key_hex()}).to_string();
    let (_, a) = post(&net, "/v1/provision", Some(&auth), &body).await;
    let token_ref = a["token_ref"].as_str().expect("ref").to_string();
    let (phone, _, _) = common::open_token_profile(a["encrypted_token_data"].as_str().expect("sealed"));
    assert_eq!(post(&net, &format!("/v1/tokens/{token_ref}/confirm"), Some(&auth), "").await.0, 200);

    // Someone with write access to the database flips one bit of the sealed card data.
    let db = rusqlite::Connection::open(dir.path().join("data/vault.db")).expect("vault db");
    db.busy_timeout(std::time::Duration::from_secs(5)).expect("timeout");
    let mut sealed: Vec<u8> = db
        .query_row("SELECT pan_sealed FROM vault WHERE token = ?1", [&phone.pan], |r| r.get(0))
        .expect("row");
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    db.execute("UPDATE vault SET pan_sealed = ?1 WHERE token = ?2", rusqlite::params![sealed, phone.pan])
        .expect("update");
    drop(db);

    // The switch restarts and reads the vault from disk: the token's authorization fails closed
    // (96), nothing reaches the issuer.
    let net = net.restart_switch().await.expect("restart");
    let before = net.issuer_state.issuer.lock().expect("issuer").open_to_buy(&card.pan).expect("card");
    let mut c = common::acquirer_client(&net).await;
    let req = chip_request(Spec::builtin("network").expect("spec"), &phone, &Tx::purchase(1, 500, 1))
        .expect("request");
    assert_eq!(rc(&c.call(&req).await), "96");
    assert_eq!(net.issuer_state.issuer.lock().expect("issuer").open_to_buy(&card.pan).expect("card"), before);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_phone_pays_on_limited_use_keys_and_replenishes() {
    use terminal_kit::pos::{CardKey, card_accepts_arpc_with, chip_request_with};
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let r = net.ports.token_requestors.iter().find(|r| r.kind == "cloud").expect("cloud requestor").clone();
    let auth = format!("{}:{}", r.id, r.secret);
    let card = net.ports.test_cards[0].clone();
    let body = serde_json::json!({"request_id": "c1", "pan": card.pan, "expiry": card.expiry, "device_public_key": device_key_hex()}).to_string();
    let (st, a) = post(&net, "/v1/provision", Some(&auth), &body).await;
    assert_eq!(st, 200, "{a}");
    let token_ref = a["token_ref"].as_str().expect("ref").to_string();
    let (phone, luks, profile) =
        common::open_token_profile(a["encrypted_token_data"].as_str().expect("sealed"));
    assert!(profile.get("icc_mk").is_none(), "a cloud phone never holds the master key");
    assert_eq!(luks.iter().map(|(a, _)| *a).collect::<Vec<_>>(), (1..=10).collect::<Vec<u16>>());
    assert_eq!(post(&net, &format!("/v1/tokens/{token_ref}/confirm"), Some(&auth), "").await.0, 200);

    let spec = Spec::builtin("network").expect("spec");
    let mut c = common::acquirer_client(&net).await;
    let mut stan = 0;
    let mut pay = async |atc: u16, key: &crypto::keys::TdesKey| {
        stan += 1;
        let req = chip_request_with(spec, &phone, &Tx::purchase(stan, 700, atc), CardKey::SessionKey(key))
            .expect("request");
        let rsp = c.call(&req).await;
        (rc(&rsp), card_accepts_arpc_with(&phone, &req, &rsp, CardKey::SessionKey(key)))
    };
    // Every key of the batch pays once, and the phone accepts the ARPC under the same key.
    for (atc, key) in &luks {
        assert_eq!(pay(*atc, key).await, ("00".to_string(), true), "ATC {atc}");
    }
    // A used key does not pay twice.
    assert_eq!(pay(luks[3].0, &luks[3].1).await.0, "82");

    // Replenishment: the next batch, sealed for the same device; a non-cloud call is refused.
    let replenish = format!("/v1/tokens/{token_ref}/replenish");
    let (st, b) = post(&net, &replenish, Some(&auth), "").await;
    assert_eq!(st, 200, "{b}");
    let (_, second, _) = common::open_token_profile(b["encrypted_token_data"].as_str().expect("sealed"));
    assert_eq!(second.first().map(|k| k.0), Some(11));
    assert_eq!(pay(second[0].0, &second[0].1).await, ("00".to_string(), true));
    // Another replenishment retires the second batch: its unused keys no longer pay, the third
    // batch's do.
    let (_, c3) = post(&net, &replenish, Some(&auth), "").await;
    let (_, third, _) = common::open_token_profile(c3["encrypted_token_data"].as_str().expect("sealed"));
    assert_eq!(third.first().map(|k| k.0), Some(21));
    assert_eq!(pay(second[1].0, &second[1].1).await.0, "82", "a retired batch");
    assert_eq!(pay(third[0].0, &third[0].1).await.0, "00");
    drop(c);

    // A wallet token holds its own keys: replenishment is not for it.
    let w = &net.ports.token_requestors[0];
    let wauth = format!("{}:{}", w.id, w.secret);
    let body = serde_json::json!({"request_id": "w1", "pan": card.pan, "expiry": card.expiry, "device_public_key": device_key_hex()}).to_string();
    let (_, wa) = post(&net, "/v1/provision", Some(&wauth), &body).await;
    let wref = wa["token_ref"].as_str().expect("ref");
    assert_eq!(post(&net, &format!("/v1/tokens/{wref}/replenish"), Some(&wauth), "").await.0, 409);
    // Another requestor cannot replenish the cloud token.
    assert_eq!(post(&net, &replenish, Some(&wauth), "").await.0, 404);

    // After a switch restart the batch and the device are still known: the phone replenishes and pays.
    let net = net.restart_switch().await.expect("restart");
    let (st, d) = post(&net, &replenish, Some(&auth), "").await;
    assert_eq!(st, 200, "{d}");
    let (_, fourth, _) = common::open_token_profile(d["encrypted_token_data"].as_str().expect("sealed"));
    assert_eq!(fourth.first().map(|k| k.0), Some(31));
    let mut c = common::acquirer_client(&net).await;
    let req = chip_request_with(spec, &phone, &Tx::purchase(90, 700, 31), CardKey::SessionKey(&fourth[0].1))
        .expect("request");
    assert_eq!(rc(&c.call(&req).await), "00");
    net.shutdown().await;
}

/// A GET with the requestor's credentials; the JSON body.
async fn get(net: &Network, path: &str, auth: &str) -> (u16, serde_json::Value) {
    let r = testkit::http::get(&net.ports.provisioning_api, path, Some(auth)).await;
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuer_manages_its_cardholders_tokens_and_missed_notices_are_repeated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(dir.path());
    opts.issuer_timeout_ms = 1_000;
    let net = network::start(opts).await.expect("network");
    let spec = Spec::builtin("network").expect("spec");
    let card = net.ports.test_cards[0].clone();
    let r = net.ports.token_requestors[0].clone();
    let auth = format!("{}:{}", r.id, r.secret);
    let iss = net.ports.token_issuers[0].clone();
    let iauth = format!("{}:{}", iss.name, iss.secret);

    // The issuer's answers to notices are lost when the token is confirmed: the 0620 waits in the
    // store-and-forward queue and is repeated until the issuer answers.
    net.issuer_state.issuer.lock().expect("issuer").notices.clear();
    net.issuer_state.faults.write().expect("faults").push(issuer_sim::server::FaultRule {
        when_amount: None,
        when_mti: Some("0620".into()),
        when_pan_suffix: None,
        when_stan_multiple_of: None,
        action: "drop".into(),
    });
    let body = serde_json::json!({"request_id": "i1", "pan": card.pan, "expiry": card.expiry, "device_public_key": device_key_hex()}).to_string();
    let (_, a) = post(&net, "/v1/provision", Some(&auth), &body).await;
    let token_ref = a["token_ref"].as_str().expect("ref").to_string();
    let (phone, _, _) = common::open_token_profile(a["encrypted_token_data"].as_str().expect("sealed"));
    assert_eq!(post(&net, &format!("/v1/tokens/{token_ref}/confirm"), Some(&auth), "").await.0, 200);
    let unanswered = net.issuer_state.issuer.lock().expect("issuer").notices.len();
    net.issuer_state.faults.write().expect("faults").clear();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let n = net.issuer_state.issuer.lock().expect("issuer").notices.clone();
        if n.len() > unanswered && n.iter().all(|n| n.processing_code == "920000") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the queued notice never arrived");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let mut c = common::acquirer_client(&net).await;
    assert_eq!(rc(&c.call(&chip_request(spec, &phone, &Tx::purchase(1, 100, 1)).expect("req")).await), "00");

    // Only issuers, with their secret, and only for their own PANs.
    let pan_body = serde_json::json!({"pan": card.pan}).to_string();
    assert_eq!(post(&net, "/v1/issuer/tokens/suspend", Some(&auth), &pan_body).await.0, 401, "a requestor");
    assert_eq!(
        post(&net, "/v1/issuer/tokens/suspend", Some(&format!("{}:wrong", iss.name)), &pan_body).await.0,
        401
    );
    let foreign = serde_json::json!({"pan": "5413330000000019"}).to_string();
    assert_eq!(post(&net, "/v1/issuer/tokens/suspend", Some(&iauth), &foreign).await.0, 404, "not its BIN");

    // Card reported lost: the issuer suspends every token of the PAN; the token is declined (57)
    // and the requestor learns of it from its events.
    let (st, s) = post(&net, "/v1/issuer/tokens/suspend", Some(&iauth), &pan_body).await;
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["tokens"][0]["status"], "suspended", "{s}");
    assert_eq!(s["tokens"][0]["token_ref"], token_ref.as_str());
    assert!(!s.to_string().contains(&card.pan), "no PAN in the answer");
    assert_eq!(rc(&c.call(&chip_request(spec, &phone, &Tx::purchase(2, 100, 2)).expect("req")).await), "57");
    let (st, ev) = get(&net, "/v1/events", &auth).await;
    assert_eq!(st, 200);
    let events = ev["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 1, "{ev}");
    assert_eq!(
        (events[0]["token_ref"].as_str(), events[0]["status"].as_str(), events[0]["by"].as_str()),
        (Some(token_ref.as_str()), Some("suspended"), Some("issuer"))
    );
    let seq = events[0]["seq"].as_u64().expect("seq");
    // Found again: resumed and paying; then the account closes: deleted, and a deleted token
    // cannot be resumed.
    assert_eq!(
        post(&net, "/v1/issuer/tokens/resume", Some(&iauth), &pan_body).await.1["tokens"][0]["status"],
        "active"
    );
    assert_eq!(rc(&c.call(&chip_request(spec, &phone, &Tx::purchase(3, 100, 3)).expect("req")).await), "00");
    assert_eq!(
        post(&net, "/v1/issuer/tokens/delete", Some(&iauth), &pan_body).await.1["tokens"][0]["status"],
        "deleted"
    );
    let (_, again) = post(&net, "/v1/issuer/tokens/resume", Some(&iauth), &pan_body).await;
    assert_eq!(again["tokens"][0]["status"], "deleted");
    assert!(again["tokens"][0]["refused"].is_string(), "{again}");
    assert_eq!(rc(&c.call(&chip_request(spec, &phone, &Tx::purchase(4, 100, 4)).expect("req")).await), "62");
    let (_, ev) = get(&net, &format!("/v1/events?after={seq}"), &auth).await;
    let statuses: Vec<&str> =
        ev["events"].as_array().expect("events").iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses, ["active", "deleted"]);
    net.shutdown().await;

    // Nothing the network wrote (journal, vault, SAF queue, LUK table, their WAL files) holds the
    // clear PAN.
    fn files(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() { files(&p, out) } else { out.push(p) }
        }
    }
    let mut all = Vec::new();
    files(dir.path(), &mut all);
    assert!(all.iter().any(|p| p.ends_with("vault.db")), "{all:?}");
    for p in all {
        let bytes = std::fs::read(&p).expect("read");
        assert!(
            !bytes.windows(card.pan.len()).any(|w| w == card.pan.as_bytes()),
            "clear PAN in {}",
            p.display()
        );
    }
}

/// `paynet serve` builds its token service from the `[token_service]` it writes for the switch:
/// the LUK batch size and lifetime given on its command line are in the run's `switch.toml`, and a
/// cloud (HCE) phone provisioned over the provisioning API receives a batch of that size.
#[test]
fn serve_honours_the_token_service_settings() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ports_path = tmp.path().join("ports.json");
    let _serve =
        common::process::serve_with(&ports_path, tmp.path(), &["--luk-batch", "4", "--luk-ttl-s", "600"]);
    let ports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ports_path).expect("ports file")).expect("ports JSON");
    // The switch's configuration, as the run wrote it (owner-only, like the keystores).
    let config = std::fs::read_dir(tmp.path())
        .expect("TMPDIR")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("paynet-serve-"))
        .map(|d| d.path().join("switch.toml"))
        .find(|p| p.exists())
        .expect("the run's switch.toml");
    common::process::assert_private(&config);
    let cfg = switch::config::SwitchConfig::from_toml(&std::fs::read_to_string(&config).expect("config"))
        .expect("a valid switch configuration");
    assert!(cfg.token_service.enabled);
    assert_eq!((cfg.token_service.luk_batch, cfg.token_service.luk_ttl_s), (4, 600));
    assert_eq!(cfg.token_service.ranges.len(), 1, "the network's token range is configured");

    let r = ports["token_requestors"]
        .as_array()
        .expect("requestors")
        .iter()
        .find(|r| r["kind"] == "cloud")
        .expect("cloud requestor");
    let auth = format!("{}:{}", r["id"].as_str().expect("id"), r["secret"].as_str().expect("secret"));
    let card = &ports["test_cards"][0];
    let body = serde_json::json!({"request_id": "serve-luk", "pan": card["pan"], "expiry": card["expiry"],
                                  "device_public_key": device_key_hex()})
    .to_string();
    let api = ports["provisioning_api"].as_str().expect("provisioning API").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let a = rt.block_on(common::post(&api, "/v1/provision", &auth, &body));
    assert_eq!(a["status"], "approved", "{a}");
    let (_, luks, _) = common::open_token_profile(a["encrypted_token_data"].as_str().expect("sealed"));
    assert_eq!(luks.iter().map(|(atc, _)| *atc).collect::<Vec<_>>(), vec![1, 2, 3, 4], "a batch of 4 keys");
}
