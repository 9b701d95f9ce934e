//! A test network a terminal vendor can keep: `paynet serve --state DIR` in its own process,
//! stopped (SIGTERM) and started again on the same DIR between a phone's provisioning and its
//! payments — contactless POS, in-app, and an ATM cash advance — and between a test ATM's two cash
//! advances with the same initial key (atm-sim keeps its DUKPT counter, the switch its BDK). The
//! second start lists the same cards, ATMs and credentials; the balances continue; the providers
//! know their phones again: the cloud platform replenishes the HCE phone's keys, the SE TSM puts
//! a second card into the secure element it set up before the restart.

mod common;

use std::path::Path;
use std::process::Command;

use codecs::framing::FramingKind;
use codecs::iso8583::Spec;
use common::process::{serve_kept, workspace_bin};
use common::{Client, rc};
use emv::kernel::{TerminalConfig, TxData, issuer_authenticate, tag91, tap};
use phone::Phone;
use terminal_kit::pos::{Tx, tap_request};

fn ports_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("ports file")).expect("JSON")
}

fn wallet_sim(args: &[&str], ports: &Path, phone: &Path) {
    let out = Command::new(workspace_bin("wallet-sim"))
        .args(args)
        .arg("--ports-file")
        .arg(ports)
        .arg("--phone")
        .arg(phone)
        .output()
        .expect("wallet-sim");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn cash_advance(ports: &Path, atm_state: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(workspace_bin("atm-sim"))
        .args(["cash-advance", "--json", "--ports-file"])
        .arg(ports)
        .arg("--state")
        .arg(atm_state)
        .args(args)
        .output()
        .expect("atm-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

async fn acquirer(ports: &serde_json::Value) -> Client {
    let a = &ports["acquirer"];
    let port = a["port"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("port");
    Client::connect_to(a["host"].as_str().expect("host"), port, FramingKind::Binary2, "network").await
}

/// The phone tapped at a contactless POS: (DE 39, the phone accepted the ARPC).
async fn pay_pos(c: &mut Client, phone: &mut Phone, stan: u32, amount: u64) -> (String, bool) {
    let tx = TxData { amount, tx_type: 0x00, date: [0x26, 0x11, 0x25], un: [stan as u8, 0x5A, 0x22, 0x33] };
    let tapped = tap(phone, &TerminalConfig::default(), &tx).expect("tap");
    let req = tap_request(Spec::builtin("network").expect("spec"), &tapped, &Tx::purchase(stan, amount, 0))
        .expect("request");
    let rsp = c.call(&req).await;
    let t91 = rsp.icc_data().ok().flatten().and_then(|icc| tag91(&icc)).expect("tag 91");
    (rc(&rsp), issuer_authenticate(phone, &t91))
}

/// The phone's in-app cryptogram in an e-commerce 0100.
async fn pay_online(c: &mut Client, phone: &mut Phone, stan: u32, amount: u64) -> (String, bool) {
    let req = common::in_app_request(phone, stan, amount);
    let rsp = c.call(&req).await;
    let t91 = rsp.icc_data().ok().flatten().and_then(|icc| tag91(&icc)).expect("tag 91");
    (rc(&rsp), issuer_authenticate(phone, &t91))
}

fn balance(ports: &serde_json::Value, card: usize) -> u64 {
    ports["test_cards"][card]["balance"].as_str().and_then(|b| b.parse().ok()).expect("balance")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_network_comes_back_with_its_phones_atms_and_balances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("network");
    let atm_state = dir.path().join("atm");
    let phone_path = dir.path().join("phone.json");
    let (first, second) = (dir.path().join("ports-1.json"), dir.path().join("ports-2.json"));

    // First start: an HCE phone provisioned on card 5 (a token), a cash advance by card 0.
    let serve = serve_kept(&first, &state, dir.path());
    let before = ports_json(&first);
    wallet_sim(&["provision", "--model", "hce", "--card", "5"], &first, &phone_path);
    // A second phone: a secure element the SE operator issued, card 3 put in over the air.
    let se_phone = dir.path().join("se-phone.json");
    wallet_sim(&["provision", "--model", "tsm-se-pan", "--card", "3"], &first, &se_phone);
    let pin = |i: usize| before["test_cards"][i]["pin"].as_str().expect("pin").to_string();
    let v = cash_advance(&first, &atm_state, &["--card", "0", "--amount", "200000", "--pin", &pin(0)]);
    assert_eq!(v["response_code"], "00", "{v}");
    // One network per folder: a second serve on it while it runs is refused.
    let other = Command::new(env!("CARGO_BIN_EXE_paynet"))
        .args(["serve", "--state"])
        .arg(&state)
        .env("RUST_LOG", "off")
        .output()
        .expect("paynet serve");
    assert_eq!(other.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other.stderr).contains("in use"), "{other:?}");
    drop(serve);

    // Second start on the same folder: the same network.
    let serve = serve_kept(&second, &state, dir.path());
    let after = ports_json(&second);
    let keys = [
        "test_cards",
        "atm_terminals",
        "token_requestors",
        "token_issuers",
        "terminals",
        "issuer_admin_token",
        // Back on the same ports (they were free): a device configured with them reaches it.
        "acquirer",
        "acquirer_ascii",
        "admin",
        "provisioning_api",
        "wallet_providers",
    ];
    for k in keys {
        if k == "test_cards" {
            let strip = |v: &serde_json::Value| {
                let mut v = v.clone();
                v.as_array_mut().into_iter().flatten().for_each(|c| c["balance"] = serde_json::Value::Null);
                v
            };
            assert_eq!(strip(&before[k]), strip(&after[k]), "the same test cards");
        } else {
            assert_eq!(before[k], after[k], "the same {k}");
        }
    }
    assert_eq!(balance(&after, 0), balance(&before, 0) - 200_000, "the balance continues");
    assert_eq!(balance(&after, 5), balance(&before, 5));

    // The phone provisioned before the restart pays after it: POS, in-app, ATM.
    let mut c = acquirer(&after).await;
    let mut phone = Phone::open(&phone_path).expect("phone");
    assert_eq!(pay_pos(&mut c, &mut phone, 1, 1_500).await, ("00".to_string(), true), "POS");
    assert_eq!(pay_online(&mut c, &mut phone, 2, 2_500).await, ("00".to_string(), true), "in-app");
    drop(phone);
    let phone_arg = phone_path.to_str().expect("path");
    let v =
        cash_advance(&second, &atm_state, &["--device", phone_arg, "--amount", "20000", "--pin", &pin(5)]);
    assert_eq!((v["response_code"].as_str(), v["dispensed"].as_u64()), (Some("00"), Some(20_000)), "{v}");

    // The providers' state came back: the cloud platform knows the HCE phone and its token, the SE
    // TSM the secure element and its domains' keys.
    wallet_sim(&["replenish"], &second, &phone_path);
    wallet_sim(&["provision", "--model", "tsm-se-token", "--card", "2"], &second, &se_phone);
    let mut se = Phone::open(&se_phone).expect("SE phone");
    assert_eq!(se.cards().len(), 2, "both cards in the secure element");
    assert_eq!(pay_pos(&mut c, &mut se, 3, 700).await, ("00".to_string(), true), "the SE phone");

    // The test ATM's second cash advance, on the same initial key and the next KSN.
    let v = cash_advance(&second, &atm_state, &["--card", "0", "--amount", "100000", "--pin", &pin(0)]);
    assert_eq!(v["response_code"], "00", "{v}");
    drop(serve);

    // A third start shows what the second booked: card 0 down by both advances, card 5 by the
    // phone's three payments.
    let third = dir.path().join("ports-3.json");
    let _serve = serve_kept(&third, &state, dir.path());
    let last = ports_json(&third);
    assert_eq!(balance(&last, 0), balance(&before, 0) - 300_000);
    assert_eq!(balance(&last, 5), balance(&before, 5) - 1_500 - 2_500 - 20_000);
    // Nothing the network keeps but the ports file holds a clear PAN.
    for entry in walk(&state) {
        if entry.file_name().is_some_and(|n| n == "ports.json") {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for card in last["test_cards"].as_array().expect("cards") {
            let pan = card["pan"].as_str().expect("pan").as_bytes();
            assert!(!bytes.windows(pan.len()).any(|w| w == pan), "clear PAN in {}", entry.display());
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
