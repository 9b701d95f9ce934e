//! The four operating models end to end (docs/operating-models.md): the real switch, issuer
//! simulator and token service on 127.0.0.1, the providers (SP TSM, SE operator + SE TSM, cloud
//! platform, wallet server) as HTTP servers, a phone with its state file. Each flow ends with the
//! phone tapped at a contactless POS — the terminal kernel's dialogue, the 0100 through the switch,
//! the answer's ARPC checked by the phone — and approved. Plus: an OTA script with a bad MAC is
//! refused by the SE, an HCE phone out of limited-use keys replenishes and pays again, a phone
//! restarted from its file still pays, and the wallet's OTP step-up.

mod common;

use codecs::iso8583::Spec;
use common::{Client, rc};
use emv::kernel::{TerminalConfig, TxData, issuer_authenticate, tag91, tap};
use paynet::network::{self, Network, Options};
use phone::Phone;
use phone::ota::OtaScript;
use terminal_kit::pos::{Tx, tap_request};
use wallet_sim::flows::{self, CardholderCard, Io, Model, Step};
use wallet_sim::providers::ProviderAddrs;

/// Where the network's providers listen.
struct Providers {
    addrs: ProviderAddrs,
}

struct World {
    net: Network,
    providers: Providers,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    // The providers run beside the network (the issuer's perso bureau answers from its HSM).
    let providers = net.providers().expect("providers").addrs.clone();
    let client = common::acquirer_client(&net).await;
    World { net, providers: Providers { addrs: providers }, client, _dir: dir }
}

impl World {
    fn card(&self, n: usize) -> CardholderCard {
        let c = &self.net.ports.test_cards[n];
        CardholderCard { pan: c.pan.clone(), expiry: c.expiry.clone(), cvv2: Some(c.cvv2.clone()) }
    }

    async fn provision(&self, model: Model, phone: &mut Phone, card: usize) -> (String, Vec<Step>) {
        let mut steps = Vec::new();
        let issuer = self.net.issuer_state.clone();
        let mut log = |s: &Step| steps.push(s.clone());
        let mut otp = move || -> wallet_sim::Result<String> {
            let i =
                issuer.issuer.lock().map_err(|_| wallet_sim::Error::Otp("issuer state poisoned".into()))?;
            i.otp_outbox.values().next().cloned().ok_or_else(|| wallet_sim::Error::Otp("none sent".into()))
        };
        let id = flows::provision(
            model,
            phone,
            &self.providers.addrs,
            &self.card(card),
            &mut Io { log: &mut log, otp: &mut otp },
        )
        .await
        .unwrap_or_else(|e| panic!("{model}: {e:#}"));
        (id, steps)
    }

    /// Taps the phone at the POS: (DE 39, the phone accepted the ARPC).
    async fn pay(&mut self, phone: &mut Phone, stan: u32, amount: u64) -> (String, bool) {
        self.pay_device(phone, stan, amount).await
    }

    async fn pay_device(
        &mut self,
        phone: &mut dyn emv::card::Contactless,
        stan: u32,
        amount: u64,
    ) -> (String, bool) {
        let spec = Spec::builtin("network").expect("spec");
        let tx =
            TxData { amount, tx_type: 0x00, date: [0x26, 0x11, 0x25], un: [stan as u8, 0x5A, 0x22, 0x33] };
        let tapped = tap(phone, &TerminalConfig::default(), &tx).expect("tap");
        assert_eq!(tapped.cid, 0x80, "an ARQC");
        let req = tap_request(spec, &tapped, &Tx::purchase(stan, amount, 0)).expect("request");
        let rsp = self.client.call(&req).await;
        let icc = rsp.icc_data().ok().flatten().expect("DE 55 in the answer");
        let t91 = tag91(&icc).expect("tag 91");
        (rc(&rsp), issuer_authenticate(phone, &t91))
    }

    /// Pays in-app: the phone's online cryptogram in an e-commerce 0100, the ARPC back to the phone.
    async fn pay_online(&mut self, phone: &mut Phone, stan: u32, amount: u64) -> (String, bool) {
        let req = common::in_app_request(phone, stan, amount);
        // The card's own PAN (the token) and sequence number travel in DE 55, as a tap's do, for
        // the network to hold DE 2 and DE 23 against.
        let de55 = req.icc_data().expect("DE 55").expect("DE 55 present");
        let nodes = codecs::tlv::decode_lenient(&de55).expect("TLV");
        let tag = |t: u32| codecs::tlv::find(&nodes, codecs::tlv::Tag::new(t)).map(|n| n.value().to_vec());
        let de2 = req.text(2).expect("DE 2").into_owned();
        assert_eq!(tag(0x5A), codecs::pan::to_cn(&de2), "5A is DE 2");
        let de23 = req.text(23).expect("DE 23");
        let psn = codecs::pan::psn_n2(&de23[de23.len().saturating_sub(2)..]).expect("DE 23 digits");
        assert_eq!(tag(0x5F34), Some(vec![psn]), "5F34 is DE 23");
        let rsp = self.client.call(&req).await;
        let icc =
            rsp.icc_data().ok().flatten().unwrap_or_else(|| panic!("DE 55 in the answer: {}", rc(&rsp)));
        let t91 = tag91(&icc).expect("tag 91");
        (rc(&rsp), issuer_authenticate(phone, &t91))
    }

    fn open_to_buy(&self, n: usize) -> u64 {
        let pan = &self.net.ports.test_cards[n].pan;
        self.net.issuer_state.issuer.lock().expect("issuer").open_to_buy(pan).expect("card")
    }

    fn notices(&self) -> usize {
        self.net.issuer_state.issuer.lock().expect("issuer").notices.len()
    }

    async fn stop(self) {
        self.net.shutdown().await;
    }
}

fn has(steps: &[Step], from: &str, to: &str) -> bool {
    steps.iter().any(|s| s.from == from && s.to == to)
}

fn approved() -> (String, bool) {
    ("00".to_string(), true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_1_issuer_owned_se_personalised_by_the_issuer_pays() {
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut phone = Phone::open_or_create(&dir.path().join("phone.json")).expect("phone");
    let (id, steps) = w.provision(Model::IssuerSe, &mut phone, 0).await;
    assert!(id.starts_with("se:ISE"), "{id}");
    assert!(
        has(&steps, "issuer", "perso bureau") && has(&steps, "perso bureau", "issuer SE (contact interface)")
    );
    assert!(!steps.iter().any(|s| s.from.contains("TSM")), "no TSM, no OTA");
    let before = w.open_to_buy(0);
    assert_eq!(w.pay(&mut phone, 1, 1_500).await, approved());
    assert_eq!(w.open_to_buy(0), before - 1_500, "a real-PAN card: the issuer books it");
    assert_eq!(w.pay_online(&mut phone, 2, 500).await, approved(), "in-app");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_2_tsm_real_pan_over_the_air_pays() {
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut phone = Phone::open_or_create(&dir.path().join("phone.json")).expect("phone");
    let (id, steps) = w.provision(Model::TsmSePan, &mut phone, 2).await;
    for (from, to) in [
        ("issuer", "SE operator"),
        ("issuer", "SP TSM"),
        ("SP TSM", "SE operator"),
        ("SP TSM", "SE TSM"),
        ("SE TSM", "phone (SE)"),
        ("phone (SE)", "SE TSM"),
    ] {
        assert!(has(&steps, from, to), "{from} → {to} missing: {steps:#?}");
    }
    let se = phone.state().secure_elements.first().expect("SE");
    assert_eq!(se.domains.len(), 2, "the ISD and the issuer's supplementary domain");
    assert!(id.starts_with(&format!("se:{}:", se.se_id)));
    assert_eq!(w.pay(&mut phone, 1, 2_000).await, approved());
    assert_eq!(w.pay(&mut phone, 2, 100).await, approved(), "the ATC moved on");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_2_tsm_tokenized_over_the_air_pays_and_the_issuer_is_notified() {
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut phone = Phone::open_or_create(&dir.path().join("phone.json")).expect("phone");
    let notices = w.notices();
    let (id, steps) = w.provision(Model::TsmSeToken, &mut phone, 0).await;
    assert!(has(&steps, "SE TSM", "token service") && has(&steps, "token service", "issuer"));
    assert_eq!(w.notices(), notices + 1, "the issuer got the token's completion notice");
    let p = phone.profile(&id).expect("card");
    assert!(p.pan.starts_with("489537"), "a token in the SE, not the PAN");
    let before = w.open_to_buy(0);
    assert_eq!(w.pay(&mut phone, 1, 700).await, approved());
    assert_eq!(w.open_to_buy(0), before - 700, "detokenized to the card's account");
    assert_eq!(w.pay_online(&mut phone, 2, 300).await, approved(), "in-app");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_3_hce_pays_runs_out_of_keys_replenishes_and_pays_again() {
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut phone = Phone::open_or_create(&dir.path().join("phone.json")).expect("phone");
    let (id, steps) = w.provision(Model::Hce, &mut phone, 3).await;
    assert!(has(&steps, "cloud platform", "token service") && has(&steps, "cloud platform", "phone"));
    assert!(id.starts_with("hce:"));
    let n = phone.cards()[0].luks_left.expect("limited-use keys");
    assert!(n > 0);
    for stan in 0..n as u32 {
        assert_eq!(w.pay(&mut phone, 10 + stan, 100).await, approved(), "payment {stan}");
    }
    let tx = TxData { amount: 100, tx_type: 0, date: [0x26, 0x11, 0x25], un: [1, 2, 3, 4] };
    assert!(tap(&mut phone, &TerminalConfig::default(), &tx).is_err(), "no limited-use key left");
    let mut log = |_: &Step| {};
    let mut otp = || -> wallet_sim::Result<String> { Err(wallet_sim::Error::Otp("no OTP".into())) };
    let got = flows::replenish(&mut phone, &w.providers.addrs, &id, &mut Io { log: &mut log, otp: &mut otp })
        .await
        .expect("replenish");
    assert_eq!(got, n);
    assert_eq!(w.pay(&mut phone, 90, 100).await, approved(), "paying again on the new batch");
    assert_eq!(w.pay_online(&mut phone, 91, 100).await, approved(), "in-app, next limited-use key");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_3_hce_real_pan_on_limited_use_keys_pays_replenishes_through_the_issuer_and_pays_again() {
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("phone.json");
    let mut phone = Phone::open_or_create(&file).expect("phone");
    // Test card 1: the issuer's ID&V policy steps up with an OTP.
    let (id, steps) = w.provision(Model::HcePan, &mut phone, 1).await;
    for (from, to) in [
        ("phone", "cloud platform"),
        ("cloud platform", "issuer"),
        ("issuer", "cardholder"),
        ("cardholder", "cloud platform"),
        ("cloud platform", "phone"),
        ("phone", "phone (secure area)"),
    ] {
        assert!(has(&steps, from, to), "{from} → {to} missing: {steps:#?}");
    }
    assert!(
        steps.iter().any(|s| s.from == "issuer" && s.what.contains("ID&V approved")),
        "the issuer verified cardholder and device: {steps:#?}"
    );
    assert!(
        steps.iter().any(|s| s.from == "issuer" && s.what.contains("sealed for the device")),
        "perso sealed for the device: {steps:#?}"
    );
    assert!(!steps.iter().any(|s| s.to == "token service" || s.from == "token service"), "no token");
    let tc = w.net.ports.test_cards[1].clone();
    for s in &steps {
        assert!(!s.to_string().contains(&tc.pan), "a clear PAN in a step: {s}");
    }
    // The phone file: the real PAN in the OS secure area, on limited-use keys, no master key.
    let text = std::fs::read_to_string(&file).expect("phone file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let c = &v["hce"]["cards"][0];
    assert_eq!(c["kind"], "real_pan", "{c}");
    assert_eq!(c["profile"]["pan"], tc.pan.as_str(), "the real PAN, not a token");
    assert_eq!(c["profile"]["keys"]["kind"], "limited");
    assert!(!text.contains("icc_mk") && !text.contains(&tc.icc_mk), "the master key is not on the phone");
    let summary = phone.cards().into_iter().find(|c| c.id == id).expect("card");
    assert_eq!(summary.model, "hce-pan");
    assert!(summary.location.contains("real PAN"), "{}", summary.location);
    let n = summary.luks_left.expect("limited-use keys");
    assert_eq!(n, 5);
    // Paid like any chip card: the issuer verifies the ARQC from its IMK-derived key, books it.
    let before = w.open_to_buy(1);
    assert_eq!(w.pay(&mut phone, 1, 1_000).await, approved(), "at the POS, ARPC accepted");
    assert_eq!(w.open_to_buy(1), before - 1_000, "the real PAN's account");
    assert_eq!(w.pay_online(&mut phone, 2, 200).await, approved(), "in-app");
    for stan in 3..=n as u32 {
        assert_eq!(w.pay(&mut phone, stan, 100).await, approved(), "payment {stan}");
    }
    let tx = TxData { amount: 100, tx_type: 0, date: [0x26, 0x11, 0x25], un: [1, 2, 3, 4] };
    assert!(tap(&mut phone, &TerminalConfig::default(), &tx).is_err(), "no limited-use key left");
    let mut steps = Vec::new();
    let mut log = |s: &Step| steps.push(s.clone());
    let mut otp = || -> wallet_sim::Result<String> { Err(wallet_sim::Error::Otp("no OTP".into())) };
    let got = flows::replenish(&mut phone, &w.providers.addrs, &id, &mut Io { log: &mut log, otp: &mut otp })
        .await
        .expect("replenish");
    assert_eq!(got, n);
    assert!(has(&steps, "cloud platform", "issuer") && has(&steps, "issuer", "cloud platform"), "{steps:#?}");
    assert!(!steps.iter().any(|s| s.to == "token service"), "no token service");
    assert_eq!(w.pay(&mut phone, 90, 100).await, approved(), "paying again on the new batch");
    assert_eq!(phone.profile(&id).expect("card").atc, 6, "the next ATC after the first batch");
    assert_eq!(w.pay_online(&mut phone, 91, 100).await, approved(), "in-app, next limited-use key");
    assert!(!std::fs::read_to_string(&file).expect("phone file").contains(&tc.icc_mk));
    // Nobody can replenish that card without a device credential, nor another device with its own.
    let path = format!("/v1/pan-cards/{}/replenish", id.trim_start_matches("hce:"));
    let body = serde_json::json!({"device_id": phone.device_id()});
    let anon =
        wallet_sim::providers::http::post(&w.providers.addrs.cloud, &path, None, &body).await.expect("post");
    assert_eq!(anon.status, 401, "{:?}", anon.body);
    let stranger = Phone::new().expect("another phone");
    let cred = register(&w.providers.addrs.cloud, &stranger).await;
    let other = wallet_sim::providers::http::post(
        &w.providers.addrs.cloud,
        &path,
        Some(&cred),
        &serde_json::json!({}),
    )
    .await
    .expect("post");
    assert_eq!(other.status, 409, "{:?}", other.body);
    // Nor claim to be the owner with its own credential.
    let claim = wallet_sim::providers::http::post(&w.providers.addrs.cloud, &path, Some(&cred), &body)
        .await
        .expect("post");
    assert_eq!(claim.status, 403, "{:?}", claim.body);
    w.stop().await;
}

/// Registers `phone` with the front at `base`: its device credential.
async fn register(base: &str, phone: &Phone) -> String {
    use wallet_sim::providers::http;
    let body = serde_json::json!({"device_id": phone.device_id(),
        "device_public_key": phone.device_public_key().expect("dpk")});
    let a = http::ok("register", http::post(base, "/v1/devices", None, &body).await.expect("register"))
        .expect("ok");
    a["device_token"].as_str().expect("device token").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_4_wallet_with_otp_step_up_pays_and_the_issuer_learns_the_download_completed() {
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut phone = Phone::open_or_create(&dir.path().join("phone.json")).expect("phone");
    let notices = w.notices();
    // Test card 1: the issuer's ID&V policy asks for an OTP.
    let (id, steps) = w.provision(Model::Wallet, &mut phone, 1).await;
    assert!(has(&steps, "issuer", "cardholder"), "step-up: {steps:#?}");
    assert!(has(&steps, "cardholder", "wallet server"), "the OTP went back");
    assert_eq!(w.notices(), notices + 1, "download completed");
    assert_eq!(phone.cards()[0].luks_left, None, "a wallet token holds its own key");
    assert!(phone.profile(&id).expect("card").pan.starts_with("489537"));
    assert_eq!(w.pay(&mut phone, 1, 900).await, approved());
    assert_eq!(w.pay(&mut phone, 2, 900).await, approved());
    // In-app: the wallet's online cryptogram in an e-commerce 0100 (DE 22 = 100).
    assert_eq!(w.pay_online(&mut phone, 3, 1_200).await, approved());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ota_script_with_a_bad_mac_is_refused_by_the_se() {
    use serde_json::json;
    use wallet_sim::providers::http;
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut phone = Phone::open_or_create(&dir.path().join("phone.json")).expect("phone");
    let a = w.providers.addrs.clone();
    // The SE and the real-PAN application, by hand up to the OTA delivery.
    let se_pk = phone.order_secure_element("se-operator").expect("order");
    let se = http::ok(
        "se",
        http::post(&a.se_operator, "/v1/se/issue", None, &json!({"se_public_key": se_pk}))
            .await
            .expect("issue"),
    )
    .expect("se");
    assert!(se.get("isd_keys").is_none(), "ISD keys in clear: {se}");
    let se_id = se["se_id"].as_str().expect("id").to_string();
    let owner = se["owner_token"].as_str().expect("owner credential").to_string();
    phone
        .fit_sealed_secure_element(
            &se_id,
            "se-operator",
            se["isd_aid"].as_str().expect("aid"),
            se["sealed_isd_keys"].as_str().expect("sealed keys"),
        )
        .expect("fit");
    let app = http::ok(
        "app",
        http::post(
            &a.se_operator,
            "/v1/applications",
            Some(&owner),
            &json!({"se_id": se_id, "cardholder": "t"}),
        )
        .await
        .expect("apply"),
    )
    .expect("app");
    let card = w.card(0);
    let r = http::ok(
        "sp",
        http::post(
            &a.sp_tsm,
            "/v1/applications",
            None,
            &json!({"pan": card.pan, "expiry": card.expiry, "se_id": se_id,
                    "application_id": app["application_id"], "auth_code": app["auth_code"]}),
        )
        .await
        .expect("sp"),
    )
    .expect("sp");
    let card_id = r["card_id"].as_str().expect("card id").to_string();
    // A wrong authentication code is refused by the SE operator.
    let bad = http::post(
        &a.sp_tsm,
        "/v1/applications",
        None,
        &json!({"pan": card.pan, "expiry": card.expiry, "se_id": se_id, "application_id": app["application_id"],
                "auth_code": "0000000000000000"}),
    )
    .await
    .expect("sp");
    assert_eq!(bad.status, 409, "{:?}", bad.body);
    let ota_path = format!("/v1/ota/{se_id}");
    assert_eq!(http::get(&a.se_operator, &ota_path, None).await.expect("ota").status, 401);
    let ota =
        http::ok("ota", http::get(&a.se_operator, &ota_path, Some(&owner)).await.expect("ota")).expect("ota");
    let scripts: Vec<OtaScript> = serde_json::from_value(ota["scripts"].clone()).expect("scripts");
    assert_eq!(scripts.len(), 2, "create the domain, then install the card");
    assert_eq!(phone.deliver_script(&scripts[0]).expect("deliver").sw, "9000");
    // One bit of the last command's MAC flipped on the air.
    let mut tampered = scripts[1].clone();
    let last = tampered.commands.len() - 1;
    let mut b = hex::decode(&tampered.commands[last]).expect("hex");
    let n = b.len() - 1;
    b[n] ^= 0x01;
    tampered.commands[last] = hex::encode_upper(b);
    let before = phone.state().clone();
    let r = phone.deliver_script(&tampered).expect("deliver");
    assert_eq!((r.sw.as_str(), r.executed), ("6982", last), "refused at the bad command");
    assert_eq!(phone.state(), &before, "nothing of the script stays");
    assert!(phone.enable(&card_id).is_err(), "no card to enable");
    // The genuine script goes in; the same script again is a replay.
    assert_eq!(phone.deliver_script(&scripts[1]).expect("deliver").sw, "9000");
    assert_eq!(phone.deliver_script(&scripts[1]).expect("deliver").sw, "6985");
    let mut wrong_kvn = scripts[1].clone();
    wrong_kvn.kvn ^= 0x7F;
    wrong_kvn.counter += 10;
    assert_eq!(phone.deliver_script(&wrong_kvn).expect("deliver").sw, "6A88");
    phone.enable(&card_id).expect("enable");
    assert_eq!(w.pay(&mut phone, 1, 300).await, approved());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_phone_still_pays() {
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("phone.json");
    let mut phone = Phone::open_or_create(&path).expect("phone");
    let (se_card, _) = w.provision(Model::TsmSePan, &mut phone, 0).await;
    let (hce_card, _) = w.provision(Model::Hce, &mut phone, 3).await;
    assert_eq!(phone.default_card().as_deref(), Some(se_card.as_str()), "the first card enabled");
    assert_eq!(w.pay(&mut phone, 1, 100).await, approved());
    phone.set_default(&hce_card).expect("default");
    assert_eq!(w.pay(&mut phone, 2, 100).await, approved());
    drop(phone);
    // Power cycle: everything comes back from the file — keys, ATCs, limited-use keys used.
    let mut phone = Phone::open(&path).expect("reopen");
    assert_eq!(phone.default_card().as_deref(), Some(hce_card.as_str()));
    assert_eq!(w.pay(&mut phone, 3, 100).await, approved(), "the HCE card, next limited-use key");
    phone.set_default(&se_card).expect("default");
    assert_eq!(w.pay(&mut phone, 4, 100).await, approved(), "the SE card, next ATC");
    assert_eq!(phone.profile(&se_card).expect("se").atc, 2);
    // The exported card is the plain profile other tools read.
    let json = phone::export_card(&phone, None).expect("export");
    let p: emv::card::CardProfile = serde_json::from_str(&json).expect("profile");
    assert_eq!(p.atc, 2);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_provisions_shows_status_and_exports_the_card() {
    use clap::Parser;
    use wallet_sim::cli::{Cli, run};
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The ports file as `paynet serve` writes it, with the providers listed.
    let ports = serde_json::to_value(&w.net.ports).expect("ports");
    assert_eq!(ports["wallet_providers"], serde_json::to_value(&w.providers.addrs).expect("addrs"));
    let ports_file = dir.path().join("ports.json");
    std::fs::write(&ports_file, ports.to_string()).expect("write");
    let phone_file = dir.path().join("phone.json");
    let (pf, ph) = (ports_file.display().to_string(), phone_file.display().to_string());
    let cli = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("wallet-sim").chain(args.iter().copied())).expect("args")
    };
    let mut out = Vec::new();
    // The wallet's card (test card 1) asks for an OTP: the CLI reads the issuer's text message
    // through the ports file's issuer admin port.
    for (model, card) in [("tsm-se-pan", "0"), ("hce", "3"), ("wallet", "1"), ("hce-pan", "2")] {
        run(
            cli(&["provision", "--model", model, "--ports-file", &pf, "--card", card, "--phone", &ph]),
            &mut out,
        )
        .await
        .unwrap_or_else(|e| panic!("{model}: {e:#}"));
    }
    run(cli(&["status", "--phone", &ph]), &mut out).await.expect("status");
    let card_json = dir.path().join("card.json");
    run(cli(&["export-card", "--phone", &ph, "--out", &card_json.display().to_string()]), &mut out)
        .await
        .expect("export");
    let text = String::from_utf8(out).expect("utf8");
    assert!(text.contains("SP TSM → SE operator: verify the authentication data: verified"), "{text}");
    assert!(text.contains("cloud platform → token service"), "{text}");
    assert!(text.contains("cardholder → wallet server: one-time password"), "{text}");
    assert!(text.contains("issuer → cloud platform: ID&V approved"), "{text}");
    assert!(text.contains("OS secure area (cloud, real PAN)"), "{text}");
    assert!(text.contains("* se:"), "the default card marked: {text}");
    assert!(text.contains("limited-use keys left"), "{text}");
    for c in &w.net.ports.test_cards {
        assert!(!text.contains(&c.pan) && !text.contains(&c.icc_mk), "a clear PAN or key: {text}");
    }
    assert!(text.contains("476173******"), "PANs masked: {text}");
    let p: emv::card::CardProfile =
        serde_json::from_str(&std::fs::read_to_string(&card_json).expect("card")).expect("profile");
    assert_eq!(p.pan, w.net.ports.test_cards[0].pan);
    // The phone the CLI left behind pays, opened as a phone or as the device a terminal reads.
    let mut phone = Phone::open(&phone_file).expect("phone");
    assert_eq!(w.pay(&mut phone, 1, 100).await, approved());
    drop(phone);
    let mut device = phone::Device::open(&phone_file).expect("device");
    assert!(matches!(device, phone::Device::Phone(_)));
    assert_eq!(device.profile().map(|p| p.atc), Some(1));
    assert_eq!(w.pay_device(&mut device, 2, 100).await, approved());
    let d = phone::Device::open(&card_json).expect("card file");
    assert!(matches!(d, phone::Device::Card(_)));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_id_and_v_leaves_nothing_on_the_phone() {
    let w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("phone.json");
    let mut phone = Phone::open_or_create(&file).expect("phone");
    phone.save().expect("save");
    let before = std::fs::read(&file).expect("phone file");
    // The cardholder types an expiry that is not the card's: the issuer declines ID&V.
    let mut card = w.card(2);
    card.expiry = "0101".into();
    for model in [Model::Wallet, Model::Hce, Model::HcePan, Model::TsmSeToken] {
        let mut steps = Vec::new();
        let mut log = |s: &Step| steps.push(s.clone());
        let mut otp =
            || -> wallet_sim::Result<String> { Err(wallet_sim::Error::Otp("no OTP expected".into())) };
        let r = flows::provision(
            model,
            &mut phone,
            &w.providers.addrs,
            &card,
            &mut Io { log: &mut log, otp: &mut otp },
        )
        .await;
        let err = r.expect_err("a declined ID&V provisions nothing");
        let wallet_sim::Error::Refused(refused) = &err else { panic!("{model}: {err:#}") };
        assert_eq!(
            (refused.status.as_str(), refused.response_code.as_deref()),
            ("declined", Some("05")),
            "{model}"
        );
        let e = format!("{err:#}");
        assert!(!e.contains(&w.net.ports.test_cards[2].pan), "a clear PAN in the error: {e}");
        assert!(phone.cards().is_empty(), "{model}: {:?}", phone.cards().len());
    }
    // Nothing written either (the SE model may have fitted the operator's SE, but no card).
    let reopened = Phone::open(&file).expect("reopen");
    assert!(reopened.cards().is_empty());
    assert!(reopened.default_card().is_none());
    if reopened.secure_element("se-operator").is_none() {
        assert_eq!(std::fs::read(&file).expect("phone file"), before);
    }
    w.stop().await;
}

/// The phone's add-card call to the cloud platform (`path`), by hand, to get the sealed package:
/// the approved answer.
async fn add_card_by_hand(w: &World, phone: &Phone, path: &str, card: &CardholderCard) -> serde_json::Value {
    use wallet_sim::providers::http;
    let cred = register(&w.providers.addrs.cloud, phone).await;
    let body = serde_json::json!({"device_id": phone.device_id(),
        "device_public_key": phone.device_public_key().expect("dpk"), "pan": card.pan, "expiry": card.expiry});
    let a = http::ok(
        "cloud",
        http::post(&w.providers.addrs.cloud, path, Some(&cred), &body).await.expect("add card"),
    )
    .expect("approved");
    assert_eq!(a["status"], "approved", "{a}");
    let mut a = a;
    a["device_token"] = serde_json::Value::String(cred);
    a
}

/// One bit flipped anywhere in `sealed` — the ephemeral key, the nonce, the ciphertext or the
/// tag — and `install` refuses it, leaving the phone's state as it was.
fn assert_tampering_refused(
    phone: &mut Phone,
    sealed: &str,
    install: impl Fn(&mut Phone, &str) -> Result<String, phone::PhoneError>,
) {
    let saved = serde_json::to_string(phone.state()).expect("state");
    let raw = hex::decode(sealed).expect("hex");
    for at in [0, raw.len() / 3, raw.len() / 2, raw.len() - 1] {
        let mut bad = raw.clone();
        bad[at] ^= 0x01;
        assert!(
            install(phone, &hex::encode_upper(&bad)).is_err(),
            "a package tampered at byte {at} was installed"
        );
        assert_eq!(serde_json::to_string(phone.state()).expect("state"), saved, "byte {at}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_token_package_is_refused_by_the_phone() {
    use serde_json::json;
    use wallet_sim::providers::http;
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("phone.json");
    let mut phone = Phone::open_or_create(&file).expect("phone");
    let card = w.card(2);
    let a = add_card_by_hand(&w, &phone, "/v1/cards", &card).await;
    let token_ref = a["token_ref"].as_str().expect("token ref").to_string();
    let sealed = a["encrypted_token_data"].as_str().expect("package").to_string();
    assert_tampering_refused(&mut phone, &sealed, |p, bad| p.install_token(&token_ref, "cloud", bad));
    assert!(phone.cards().is_empty());
    // The package as sealed installs, and the phone pays with it.
    let id = phone.install_token(&token_ref, "cloud", &sealed).expect("the genuine package");
    phone.enable(&id).expect("enable");
    let device_id = phone.device_id().to_string();
    let path = format!("/v1/cards/{token_ref}/loaded");
    let body = json!({"device_id": device_id});
    let cred = a["device_token"].as_str().expect("credential");
    let l = http::post(&w.providers.addrs.cloud, &path, Some(cred), &body).await.expect("loaded");
    http::ok("cloud", l).expect("activated");
    assert_eq!(w.pay(&mut phone, 1, 500).await, approved());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_real_pan_perso_package_is_refused_by_the_phone() {
    use serde_json::json;
    use wallet_sim::providers::http;
    let mut w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut phone = Phone::open_or_create(&dir.path().join("phone.json")).expect("phone");
    let card = w.card(3);
    let a = add_card_by_hand(&w, &phone, "/v1/pan-cards", &card).await;
    let phone_cred = a["device_token"].as_str().expect("credential").to_string();
    let card_ref = a["card_ref"].as_str().expect("card ref").to_string();
    let sealed = a["encrypted_card_data"].as_str().expect("package").to_string();
    assert_tampering_refused(&mut phone, &sealed, |p, bad| p.install_pan_card(&card_ref, "cloud", bad));
    let saved = serde_json::to_string(phone.state()).expect("state");
    // Sealed under the issuer's perso label: it does not pass for token data, nor open on
    // another phone.
    assert!(phone.install_token(&card_ref, "cloud", &sealed).is_err());
    let mut other = Phone::new().expect("other phone");
    assert!(other.install_pan_card(&card_ref, "cloud", &sealed).is_err());
    assert_eq!(serde_json::to_string(phone.state()).expect("state"), saved);
    // The package as sealed installs, and the phone pays with it.
    let id = phone.install_pan_card(&card_ref, "cloud", &sealed).expect("the genuine package");
    phone.enable(&id).expect("enable");
    assert_eq!(w.pay(&mut phone, 1, 500).await, approved());
    // Card 1 steps up: a wrong OTP is declined and the provisioning stays open for the right one.
    let card = w.card(1);
    let cloud = w.providers.addrs.cloud.clone();
    let body = json!({"device_id": other.device_id(), "device_public_key": other.device_public_key().expect("dpk"),
                      "pan": card.pan, "expiry": card.expiry});
    let other_cred = register(&cloud, &other).await;
    let oc = Some(other_cred.as_str());
    let a =
        http::ok("cloud", http::post(&cloud, "/v1/pan-cards", oc, &body).await.expect("add")).expect("ok");
    assert_eq!(a["status"], "otp_required", "{a}");
    let pid = a["provisioning_id"].clone();
    let wrong =
        http::post(&cloud, "/v1/pan-cards/otp", oc, &json!({"provisioning_id": pid, "otp": "000000"}))
            .await
            .expect("otp");
    let wrong = http::ok("cloud", wrong).expect("answer");
    assert_eq!((wrong["status"].as_str(), wrong["response_code"].as_str()), (Some("declined"), Some("05")));
    let code =
        w.net.issuer_state.issuer.lock().expect("issuer").otp_outbox.values().next().cloned().expect("OTP");
    // The provisioning is the other phone's: this phone's credential does not find it.
    let r = http::post(
        &cloud,
        "/v1/pan-cards/otp",
        Some(&phone_cred),
        &json!({"provisioning_id": pid, "otp": "000000"}),
    )
    .await
    .expect("otp");
    assert_eq!(r.status, 404, "{:?}", r.body);
    let right = http::post(&cloud, "/v1/pan-cards/otp", oc, &json!({"provisioning_id": pid, "otp": code}))
        .await
        .expect("otp");
    let right = http::ok("cloud", right).expect("answer");
    assert_eq!(right["status"], "approved", "{right}");
    let id = other
        .install_pan_card(
            right["card_ref"].as_str().expect("ref"),
            "cloud",
            right["encrypted_card_data"].as_str().expect("data"),
        )
        .expect("install on the other phone");
    other.enable(&id).expect("enable");
    assert_eq!(w.pay(&mut other, 2, 300).await, approved());
    w.stop().await;
}
