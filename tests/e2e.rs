//! The mission end to end (MISSION.md, `paynet demo`), one test per operating model × channel:
//! a phone provisioned by the model's flow (issuer simulator, providers, token service, all real)
//! pays by tap at a contactless POS, pays online, or takes a cash advance at an ATM — approved,
//! its cryptogram verified by the issuer (or the token service) and the answer's ARPC accepted by
//! the phone, a token on the wire exactly for the tokenized models, and the issuer's booking on the
//! card's account equal to the amount. Then: a declined case per reason the network knows; no clear
//! PAN, PIN or key anywhere in what the demo prints; the switch restarted mid-run — the phones
//! still pay, and the reversal an ATM owed for an answer lost while the switch went down reaches
//! the issuer after the restart; and the real binary's `demo --report`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atm_sim::atm::{Fault, ReversalKind};
use atm_sim::{Endpoint, SwitchLink};
use crypto::pin::Pin;
use paynet::demo::{self, Channel, World};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wallet_sim::flows::Model;

/// Output captured from the demo's steps.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn sink(&self) -> impl FnMut(&str) + Send + use<> {
        let c = self.0.clone();
        move |line: &str| {
            let mut s = c.lock().expect("capture");
            s.push_str(line);
            s.push('\n');
        }
    }

    fn text(&self) -> String {
        self.0.lock().expect("capture").clone()
    }
}

/// Provisions `model`'s phone and runs `channel`, checking the run against the issuer's ledger.
async fn one(model: Model, channel: Channel) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = World::start(dir.path()).await.expect("network");
    let cap = Captured::default();
    let mut out = cap.sink();
    let mut phone = demo::provision(&mut w, model, &mut out).await.expect("provisioned");
    let card = demo::card_of(model);
    let pan = w.net.ports.test_cards[card].pan.clone();
    let before = w.open_to_buy(card).expect("open-to-buy");
    let run = demo::pay(&mut w, &mut phone, channel, &mut out).await;
    let text = cap.text();
    assert_eq!(run.response_code, "00", "{run:?}\n{text}");
    assert!(run.cryptogram_verified, "ARQC verified and ARPC accepted: {run:?}\n{text}");
    assert_eq!(run.token_used, demo::tokenized(model), "{run:?}");
    assert!(run.provisioned && run.ok(), "{run:?}");
    // The issuer's ledger, read here: the card's account carries exactly the amount.
    let after = w.open_to_buy(card).expect("open-to-buy");
    assert_eq!(before - after, run.billed_minor, "booked on the card's account: {run:?}");
    // The merchant sells in TWD; a card billed in EUR is charged the converted amount.
    if w.net.ports.test_cards[card].currency == "978" {
        assert!(run.billed_minor < run.amount_minor && run.billed_minor > 0, "converted: {run:?}");
    } else {
        assert_eq!(run.billed_minor, run.amount_minor, "a TWD card, nothing converted: {run:?}");
    }
    // What the terminal read: a token of the network's range, or the card's own PAN.
    let device_pan = phone.phone.profile(&phone.card_id).expect("card").pan.clone();
    if demo::tokenized(model) {
        assert!(device_pan.starts_with(demo::TOKEN_BIN) && device_pan != pan, "a token on the phone");
        assert!(run.device_pan.starts_with(demo::TOKEN_BIN), "{run:?}");
    } else {
        assert_eq!(device_pan, pan, "the card's PAN on the phone");
        assert!(run.device_pan.starts_with("476173"), "{run:?}");
    }
    assert_eq!(run.device_pan, emv::card::mask(&device_pan));
    let answer = match channel {
        Channel::Pos => "switch → POS terminal: 0110 DE 39 00",
        Channel::Online => "switch → merchant: 0110 DE 39 00",
        Channel::Atm => "switch → ATM: 0210 DE 39 00",
    };
    assert!(text.contains(answer), "{text}");
    assert!(text.contains("checked by the phone: accepted"), "{text}");
    if channel == Channel::Atm {
        assert!(text.contains(&format!("{} dispensed", demo::twd(run.amount_minor))), "{text}");
    }
    assert!(!text.contains(&pan) && !text.contains(&device_pan), "a clear PAN in the output:\n{text}");
    w.shutdown().await;
}

macro_rules! model_channel_tests {
    ($($name:ident: $model:expr, $channel:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            one($model, $channel).await;
        }
    )*};
}

model_channel_tests! {
    issuer_se_pos: Model::IssuerSe, Channel::Pos;
    issuer_se_online: Model::IssuerSe, Channel::Online;
    issuer_se_atm: Model::IssuerSe, Channel::Atm;
    tsm_se_pan_pos: Model::TsmSePan, Channel::Pos;
    tsm_se_pan_online: Model::TsmSePan, Channel::Online;
    tsm_se_pan_atm: Model::TsmSePan, Channel::Atm;
    tsm_se_token_pos: Model::TsmSeToken, Channel::Pos;
    tsm_se_token_online: Model::TsmSeToken, Channel::Online;
    tsm_se_token_atm: Model::TsmSeToken, Channel::Atm;
    hce_pos: Model::Hce, Channel::Pos;
    hce_online: Model::Hce, Channel::Online;
    hce_atm: Model::Hce, Channel::Atm;
    wallet_pos: Model::Wallet, Channel::Pos;
    wallet_online: Model::Wallet, Channel::Online;
    wallet_atm: Model::Wallet, Channel::Atm;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decline_gets_the_response_code_of_its_reason_and_books_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = World::start(dir.path()).await.expect("network");
    let cap = Captured::default();
    let mut out = cap.sink();
    let lines: Vec<u64> = (0..demo::CARDS).map(|i| w.open_to_buy(i).expect("open-to-buy")).collect();
    let declines = demo::declines(&mut w, &mut out).await;
    let text = cap.text();
    for d in &declines {
        assert!(d.ok && d.got == d.expected, "{d:?}\n{text}");
    }
    // docs/network-spec.md §6: a case for each of these codes.
    let codes: BTreeSet<&str> = declines.iter().map(|d| d.expected.as_str()).collect();
    for rc in ["05", "12", "14", "15", "51", "54", "55", "57", "62", "75", "82"] {
        assert!(codes.contains(rc), "no declined case for {rc}: {declines:?}");
    }
    let reasons: Vec<&str> = declines.iter().map(|d| d.reason.as_str()).collect();
    for r in ["wrong PIN", "over the credit line", "suspended", "tampered cryptogram", "replayed ATC"] {
        assert!(reasons.iter().any(|x| x.contains(r)), "{r} missing: {reasons:?}");
    }
    // The issuer booked nothing for a decline: only the replay case's original (EUR 10.00 at a
    // euro terminal) on test card 5 was approved — a card billed in TWD, charged TWD 350.00 at the
    // network's EUR→TWD rate of 35.
    assert_eq!(w.net.ports.test_cards[5].currency, "901");
    for (i, before) in lines.iter().enumerate() {
        let booked = before - w.open_to_buy(i).expect("open-to-buy");
        assert_eq!(booked, if i == 5 { 35_000 } else { 0 }, "card {i}\n{text}");
    }
    // ID&V declined: the phones of those flows hold no card.
    for label in ["declines-otp", "declines-expiry"] {
        let p = phone::Phone::open(&w.dir.join("phones").join(format!("{label}.json"))).expect("phone");
        assert!(p.cards().is_empty(), "{label}");
    }
    assert!(text.contains("switch → ATM: 0210 DE 39 55"), "{text}");
    assert!(text.contains("token service → issuer: token 489537******"), "{text}");
    w.shutdown().await;
}

/// All hex strings of 32 characters or more among a JSON document's values (keys, in a phone's
/// state file), and its `pan` values.
fn secrets_of(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::String(s) if s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            out.insert(s.to_ascii_uppercase());
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if let (true, Some(s)) = (k == "pan", x.as_str()) {
                    out.insert(s.to_string());
                }
                secrets_of(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| secrets_of(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_no_clear_pan_pin_or_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = World::start(dir.path()).await.expect("network");
    let cap = Captured::default();
    let mut out = cap.sink();
    let report = demo::run_all(&mut w, &mut out).await;
    let mut text = cap.text();
    text.push_str(&report.table());
    text.push_str(&serde_json::to_string(&report).expect("json"));
    assert!(report.ok, "{}\n{text}", report.failures().join("\n"));
    let upper = text.to_ascii_uppercase();

    let mut secrets = BTreeSet::new();
    let mut pins = BTreeSet::from(["0000".to_string(), "1111".to_string()]);
    for c in &w.net.ports.test_cards {
        secrets.insert(c.pan.clone());
        secrets.insert(c.icc_mk.to_ascii_uppercase());
        pins.insert(c.pin.clone());
    }
    for a in &w.net.ports.atm_terminals {
        secrets.insert(a.ipek.to_ascii_uppercase());
    }
    for r in &w.net.ports.token_requestors {
        secrets.insert(r.secret.to_ascii_uppercase());
    }
    for i in &w.net.ports.token_issuers {
        secrets.insert(i.secret.to_ascii_uppercase());
    }
    // The phones' state files: token PANs, ICC master keys, limited-use keys, ISD keys.
    let mut phone_files = 0;
    for e in std::fs::read_dir(w.dir.join("phones")).expect("phones").flatten() {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(e.path()).expect("read")).expect("json");
        secrets_of(&v, &mut secrets);
        phone_files += 1;
    }
    assert!(phone_files >= 5 && secrets.len() > 30, "{phone_files} phones, {} secrets", secrets.len());
    assert!(secrets.iter().any(|s| s.starts_with(demo::TOKEN_BIN)), "the tokens are checked too");
    for s in &secrets {
        assert!(!upper.contains(s.as_str()), "a clear PAN or key in the output ({}…)\n{text}", &s[..6]);
    }
    // No PIN as a word of its own, no run of 13 or more digits (a PAN of any length).
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        assert!(!pins.contains(word), "a PIN in the output: {word}\n{text}");
    }
    assert!(pan_like(&text).is_none(), "a clear PAN in the output: {:?}\n{text}", pan_like(&text));
    assert!(text.contains("476173******") && text.contains("489537******"), "masked PANs and tokens");
    w.shutdown().await;
}

/// A TCP relay between an ATM and the switch that passes the ATM's request on and holds back the
/// switch's answer: it reports when the answer arrived, and on `cut` drops both connections (its
/// listener is gone already, so the ATM cannot reconnect through it).
struct Relay {
    port: u16,
    held: tokio::sync::oneshot::Receiver<()>,
    cut: tokio::sync::oneshot::Sender<()>,
}

async fn relay(switch: (String, u16)) -> Relay {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (held_tx, held) = tokio::sync::oneshot::channel();
    let (cut, mut cut_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok((mut atm, _)) = l.accept().await else { return };
        drop(l);
        let Ok(mut sw) = tokio::net::TcpStream::connect((switch.0.as_str(), switch.1)).await else { return };
        let mut held_tx = Some(held_tx);
        let (mut a, mut s) = ([0u8; 4096], [0u8; 4096]);
        let mut switch_open = true;
        loop {
            tokio::select! {
                n = atm.read(&mut a) => match n {
                    Ok(n) if n > 0 => {
                        if sw.write_all(&a[..n]).await.is_err() {
                            switch_open = false;
                        }
                    }
                    _ => break,
                },
                n = sw.read(&mut s), if switch_open => match n {
                    // The answer: held back, never delivered.
                    Ok(n) if n > 0 => {
                        if let Some(t) = held_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    _ => switch_open = false,
                },
                _ = &mut cut_rx => break,
            }
        }
    });
    Relay { port, held, cut }
}

/// Waits until the issuer's booking on test card `card` since `before` is `want`.
async fn booked_becomes(w: &World, card: usize, before: u64, want: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let booked = before - w.open_to_buy(card).expect("open-to-buy");
        if booked == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the issuer booked {booked}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_restarts_mid_run_the_phones_still_pay_and_no_reversal_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = World::start(dir.path()).await.expect("network");
    let cap = Captured::default();
    let mut out = cap.sink();
    let mut phones = Vec::new();
    for model in Model::ALL {
        let mut p = demo::provision(&mut w, model, &mut out).await.expect("provisioned");
        let r = demo::pay(&mut w, &mut p, Channel::Pos, &mut out).await;
        assert!(r.ok(), "{r:?}\n{}", cap.text());
        phones.push(p);
    }
    let old_port = w.net.ports.acquirer.port;
    let mut w = w.restart_switch().await.expect("restart");
    assert_ne!(w.net.ports.acquirer.port, old_port, "a new switch process, new acquirer ports");
    // Tokens, limited-use keys and the phones' ATCs all survived: every phone pays again.
    for p in &mut phones {
        for channel in [Channel::Pos, Channel::Online] {
            let r = demo::pay(&mut w, p, channel, &mut out).await;
            assert!(r.ok(), "after the restart: {r:?}\n{}", cap.text());
        }
    }

    // An ATM (test ATM 1, state folder) takes a cash advance with the issuer-SE phone; the
    // switch's answer is lost on the way and the switch goes down before the ATM can reverse.
    let mut p = phones.remove(0);
    assert_eq!(p.model, Model::IssuerSe);
    let card = p.card;
    let pin = pin_of(&w, card);
    let before = w.open_to_buy(card).expect("open-to-buy");
    let sw = w.atm_endpoint();
    let r = relay((sw.host.clone(), sw.port)).await;
    let quick = |c: &mut atm_sim::AtmConfig| {
        c.response_timeout = Duration::from_secs(20);
        c.reversal_attempts = 2;
        c.reversal_timeout = Duration::from_secs(1);
    };
    let mut atm = w.open_atm(1, quick).expect("ATM");
    let via = Endpoint { port: r.port, ..sw.clone() };
    let task = tokio::task::spawn_blocking(move || {
        let mut link = SwitchLink::connect(&via, Duration::from_secs(5)).expect("link");
        let o = atm.cash_advance(&mut link, &mut p.phone, 30_000, &pin, Fault::None).expect("cash advance");
        (atm, p, o)
    });
    tokio::time::timeout(Duration::from_secs(15), r.held).await.expect("the answer in time").expect("relay");
    // The issuer approved and booked it; the ATM has not seen the answer.
    assert_eq!(before - w.open_to_buy(card).expect("otb"), 30_000, "approved and booked by the issuer");
    let mut w = w.restart_switch().await.expect("restart");
    let _ = r.cut.send(());
    let (atm, mut p, o) = task.await.expect("ATM thread");
    assert_eq!(
        (o.response_code.clone(), o.dispensed, o.reversal, o.reversal_acknowledged),
        (None, 0, ReversalKind::Full, false),
        "no answer, no cash, a full reversal owed: {o:?}"
    );
    assert_eq!(atm.owed(), 1);
    assert_eq!(before - w.open_to_buy(card).expect("otb"), 30_000, "still booked at the issuer, no cash out");
    // The ATM restarts too: the owed advice comes back from its state folder and goes to the
    // restarted switch before anything else.
    drop(atm);
    let mut atm = w.open_atm(1, quick).expect("ATM again");
    assert_eq!(atm.owed(), 1, "the owed reversal survived the ATM's restart");
    let ep = w.atm_endpoint();
    let mut link =
        tokio::task::block_in_place(|| SwitchLink::connect(&ep, Duration::from_secs(5))).expect("link");
    assert_eq!(tokio::task::block_in_place(|| atm.settle_owed(&mut link)), 0, "the reversal acknowledged");
    booked_becomes(&w, card, before, 0, "the lost advance reversed: no cash left, nothing booked").await;
    let pin = pin_of(&w, card);
    let o =
        tokio::task::block_in_place(|| atm.cash_advance(&mut link, &mut p.phone, 20_000, &pin, Fault::None))
            .expect("cash advance");
    assert_eq!((o.response_code.as_deref(), o.dispensed, o.arpc_accepted), (Some("00"), 20_000, Some(true)));
    booked_becomes(&w, card, before, 20_000, "the cash that left: the second advance only").await;
    let r = demo::pay(&mut w, &mut p, Channel::Pos, &mut out).await;
    assert!(r.ok(), "{r:?}");
    w.shutdown().await;
}

/// A word of 13 to 19 digits (a PAN or token of any length; AIDs and identifiers mix in letters).
fn pan_like(text: &str) -> Option<&str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| w.len() >= 13 && w.bytes().all(|b| b.is_ascii_digit()))
}

fn pin_of(w: &World, card: usize) -> Pin {
    Pin::new(&w.net.ports.test_cards[card].pin).expect("pin")
}

#[test]
fn the_binary_runs_the_demo_and_writes_the_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paynet"))
        .args(["demo", "--report"])
        .arg(&report)
        .output()
        .expect("run paynet demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    assert_eq!(v["ok"], true, "{v}");
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 15);
    let mut seen = BTreeSet::new();
    for r in runs {
        for f in ["model", "channel", "response_code", "detail"] {
            assert!(r[f].is_string(), "{f} in {r}");
        }
        for f in ["provisioned", "token_used", "cryptogram_verified"] {
            assert!(r[f].is_boolean(), "{f} in {r}");
        }
        assert_eq!(
            (r["provisioned"].as_bool(), r["cryptogram_verified"].as_bool()),
            (Some(true), Some(true))
        );
        assert_eq!(r["response_code"], "00");
        let model: Model = r["model"].as_str().expect("model").parse().expect("a model name");
        assert_eq!(r["token_used"].as_bool(), Some(demo::tokenized(model)), "{r}");
        seen.insert((r["model"].as_str().map(String::from), r["channel"].as_str().map(String::from)));
    }
    assert_eq!(seen.len(), 15, "each model × channel once");
    for ch in ["pos", "online", "atm"] {
        assert!(seen.iter().any(|(_, c)| c.as_deref() == Some(ch)));
    }
    let declines = v["declines"].as_array().expect("declines");
    assert!(
        declines.len() >= 10 && declines.iter().all(|d| d["ok"] == true && d["got"] == d["expected"]),
        "{v}"
    );
    assert!(stdout.contains("15 of 15 runs approved with a verified cryptogram"), "{stdout}");
    assert!(pan_like(&stdout).is_none(), "a clear PAN in the output: {:?}\n{stdout}", pan_like(&stdout));
}
