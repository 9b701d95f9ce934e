//! `paynet serve --nodes 3 --database-url URL`: three switch nodes over one PostgreSQL database,
//! each in a process of its own (serve keeps the issuer simulator and the providers), listed in
//! the ports file's `nodes` with their process IDs and provisioning APIs; each answers the test
//! cards; one killed with SIGKILL — node 0 too, under load — leaves the others and the issuer
//! simulator answering; stopping serve stops them all, and so does killing it. Every node runs the token service over the shared vault: a token
//! provisioned through node 0's API pays on node 1, a suspension on node 0 is refused on node 1,
//! and a cloud token's limited-use key spent on one node does not pay again on the other.
//! Skipped without a database unless `PAYNET_REQUIRE_POSTGRES=1`.

mod common;

use codecs::framing::FramingKind;
use codecs::iso8583::Spec;
use common::{Client, DEVICE_SECRET, Tx, rc};
use terminal_kit::pos::TestCard;

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_in_their_own_processes_share_one_database() {
    let Some((Nodes { schema: _schema, tmp, ports: _ports, serve }, doc)) =
        serve_over_postgres("serve_nodes", &["--nodes", "3"])
    else {
        return;
    };
    let nodes = doc["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["acquirer"], doc["acquirer"], "node 0 is the ports file's acquirer");
    assert_eq!(nodes[0]["acquirer_ascii"], doc["acquirer_ascii"]);
    let pids: Vec<u64> = nodes.iter().map(|n| n["pid"].as_u64().expect("pid")).collect();
    let serve_pid = u64::from(serve.0.id());
    assert!(
        pids.iter().all(|p| *p != serve_pid && alive(*p)),
        "every node is a process of its own: {pids:?}"
    );
    assert!(pids[1] != pids[0] && pids[2] != pids[0] && pids[1] != pids[2], "{pids:?}");
    assert!(nodes.iter().all(|n| n["admin"].as_str().is_some_and(|a| a.starts_with("http://127.0.0.1:"))));
    assert_eq!(nodes[0]["admin"], doc["admin"]);
    assert_eq!(nodes[0]["provisioning_api"], doc["provisioning_api"], "node 0's API is the network's");
    let apis: std::collections::BTreeSet<&str> =
        nodes.iter().map(|n| n["provisioning_api"].as_str().expect("each node's API")).collect();
    assert_eq!(apis.len(), 3, "each node serves its own provisioning API: {apis:?}");
    let cards: Vec<TestCard> = serde_json::from_value(doc["test_cards"].clone()).expect("cards");

    let purchase_at = |i: usize, stan: u32| purchase_on(&nodes[i], &cards[i], stan, stan as u16);
    for i in 0..3 {
        assert_eq!(purchase_at(i, 1 + i as u32).await, "00", "node {i}");
    }
    // One node killed: the others go on.
    let st = std::process::Command::new("kill").args(["-KILL", &pids[2].to_string()]).status().expect("kill");
    assert!(st.success());
    assert_eq!(purchase_at(0, 11).await, "00");
    assert_eq!(purchase_at(1, 12).await, "00");

    // An ATM whose ports file names the dead node first fails over to the next and is served.
    let mut failover = doc.clone();
    failover["acquirer"] = nodes[2]["acquirer"].clone();
    failover["nodes"] = serde_json::json!([nodes[2], nodes[0], nodes[1]]);
    let path = tmp.path().join("ports-dead-first.json");
    paynet::private_file::write_atomic(&path, failover.to_string().as_bytes()).expect("write");
    cash_advance_is_dispensed(&path, &cards, 4, &tmp.path().join("atm-state"));
    drop(serve);
    assert!(!alive(pids[0]) && !alive(pids[1]), "serve stopped its nodes");
}

/// `atm-sim cash-advance` of 100.00 on test card `n` through the network of the ports file `ports`
/// (failing over as its `nodes` say): approved and dispensed.
fn cash_advance_is_dispensed(ports: &std::path::Path, cards: &[TestCard], n: usize, state: &std::path::Path) {
    let out = std::process::Command::new(common::process::workspace_bin("atm-sim"))
        .args(["cash-advance", "--json", "--card", &n.to_string(), "--amount", "10000", "--pin"])
        .arg(cards[n].pin.as_str())
        .arg("--ports-file")
        .arg(ports)
        .arg("--state")
        .arg(state)
        .output()
        .expect("atm-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!((v["response_code"].as_str(), v["dispensed"].as_u64()), (Some("00"), Some(10_000)), "{v}");
}

/// `paynet serve` with `args` over a schema of the test's own (gone with the returned guard, pass
/// or fail), and its ports file; `None` when no database is reachable (and allowed to be absent).
fn serve_over_postgres(name: &str, args: &[&str]) -> Option<(Nodes, serde_json::Value)> {
    let schema = testkit::pg::database(name)?;
    let tmp = tempfile::tempdir().expect("tempdir");
    let ports = tmp.path().join("ports.json");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--database-url", &schema.url, "--schema", &schema.schema]);
    let serve = common::process::serve_with(&ports, tmp.path(), &all);
    let doc = serde_json::from_str(&std::fs::read_to_string(&ports).expect("ports file")).expect("JSON");
    Some((Nodes { schema, tmp, ports, serve }, doc))
}

/// A running `serve --nodes`, its folder, ports file and schema. Bound by a pattern listing them
/// in this order, they are dropped in the reverse: serve (and its nodes) first, the schema last.
struct Nodes {
    schema: testkit::pg::PgTest,
    tmp: tempfile::TempDir,
    ports: std::path::PathBuf,
    serve: common::process::Serve,
}

/// Purchases of the ports file's cards, one ATC each, from terminal `LG…` of each connection.
struct Purchases {
    cards: Vec<TestCard>,
}

impl terminal_sim::load::RequestSource for Purchases {
    fn request(&self, seq: u64, conn: usize) -> codecs::iso8583::Message {
        let n = self.cards.len() as u64;
        let tx = Tx {
            tid: terminal_sim::load::terminal_id(conn),
            ..Tx::purchase(seq as u32, 100 + seq % 900, (seq / n + 1) as u16)
        };
        let spec = Spec::builtin("network").expect("spec");
        let mut m =
            terminal_kit::pos::chip_request(spec, &self.cards[(seq % n) as usize], &tx).expect("request");
        m.set_text(11, &terminal_sim::load::stan(seq)).expect("DE 11");
        m
    }
}

/// Waits (up to 30 s: a node drains before it exits) until process `pid` is gone.
async fn until_gone(pid: u64, what: &str) {
    for _ in 0..300 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: process {pid} is still running");
}

/// A purchase of `card` at the binary acquirer listener of node `node` of the ports file: the
/// answer's response code.
async fn purchase_on(node: &serde_json::Value, card: &TestCard, stan: u32, atc: u16) -> String {
    let spec = Spec::builtin("network").expect("spec");
    let req = terminal_kit::pos::chip_request(spec, card, &Tx::purchase(stan, 1_000, atc)).expect("request");
    rc(&connect(node).await.call(&req).await)
}

/// A client of the binary acquirer listener of node `node` of the ports file.
async fn connect(node: &serde_json::Value) -> Client {
    let a = &node["acquirer"];
    Client::connect_to(
        a["host"].as_str().expect("host"),
        a["port"].as_u64().expect("port") as u16,
        FramingKind::Binary2,
        "network",
    )
    .await
}

/// Node 0 — the ports file's `acquirer`, `admin` and `provisioning_api` — killed with SIGKILL
/// under load: the load generator's connections to it go on at the others, and everything is
/// reconciled; the issuer simulator (in serve) is untouched; a token provisioned through node 0
/// pays on the others; an ATM whose ports file names node 0 first is served; provisioning goes on
/// through the other nodes' APIs, an OTP step-up started on one completed on another. Serve
/// killed with SIGKILL takes its nodes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_fails_over_when_node_0_dies_under_it() {
    let Some((Nodes { schema: _schema, tmp, ports, mut serve }, doc)) =
        serve_over_postgres("load_failover", &["--nodes", "3", "--cards", "16"])
    else {
        return;
    };
    let nodes = doc["nodes"].as_array().expect("nodes").clone();
    let pids: Vec<u64> = nodes.iter().map(|n| n["pid"].as_u64().expect("pid")).collect();
    let victim = pids[0].to_string();
    let cards: Vec<TestCard> = serde_json::from_value(doc["test_cards"].clone()).expect("cards");
    let requestor = doc["token_requestors"]
        .as_array()
        .expect("requestors")
        .iter()
        .find(|r| r["kind"] == "wallet")
        .map(|r| format!("{}:{}", r["id"].as_str().expect("id"), r["secret"].as_str().expect("secret")))
        .expect("a wallet requestor");
    // A token provisioned through node 0's API (the ports file's), before it dies.
    let api_0 = doc["provisioning_api"].as_str().expect("API");
    let phone =
        common::provision_token_at(api_0, &requestor, "kill0-w1", &cards[0].pan, &cards[0].expiry).await;
    let spec = Spec::builtin("network").expect("spec");
    let targets: Vec<terminal_kit::link::Target> = nodes
        .iter()
        .map(|n| terminal_kit::link::Target {
            addr: format!("{}:{}", n["acquirer"]["host"].as_str().expect("host"), n["acquirer"]["port"]),
            spec: spec.clone(),
            framing: FramingKind::Binary2,
        })
        .collect();
    let plan = terminal_sim::load::Plan {
        rate: 200,
        duration: std::time::Duration::from_secs(4),
        connections: 6,
        timeout: std::time::Duration::from_secs(10),
    };
    // Node 0 is killed once a third of the requests went out: its connections go on at the next.
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = {
        let killed = killed.clone();
        std::sync::Arc::new(move |sent: u64| {
            if sent >= 270 && !killed.swap(true, std::sync::atomic::Ordering::AcqRel) {
                let _ = std::process::Command::new("kill").args(["-KILL", &victim]).status();
            }
        })
    };
    let report = terminal_sim::load::run_spread(
        targets,
        plan,
        std::sync::Arc::new(Purchases { cards: cards.clone() }),
        progress,
    )
    .await;
    assert!(killed.load(std::sync::atomic::Ordering::Acquire), "the node was killed during the run");
    assert_eq!(report.sent, 800, "the whole schedule went out, the dead node's share at the next");
    assert_eq!(report.failovers, 2, "both connections of the dead node went on elsewhere");
    assert_eq!(report.errors, report.reversal_advices, "every answer lost with the node is reversed");
    assert_eq!(
        report.reversal_advices, report.reversal_advices_settled,
        "each taken in charge, or had no original"
    );
    assert_eq!(report.approved + report.declined + report.errors + report.timeouts, report.sent);
    assert!(!alive(pids[0]), "node 0 is dead");
    // Serve notices and reaps it: its process ID is gone, not left a zombie.
    let proc_0 = std::path::PathBuf::from(format!("/proc/{}", pids[0]));
    for _ in 0..100 {
        if !proc_0.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!proc_0.exists(), "serve reaped node 0");
    assert!(matches!(serve.0.try_wait(), Ok(None)), "serve, with the issuer simulator, runs on");

    // The issuer simulator is untouched: its admin port answers, and the other nodes' payments
    // reach it (an ATC beyond the load's, each card's own).
    let sms = testkit::http::get(
        doc["issuer_admin"].as_str().expect("issuer admin"),
        "/v1/sms",
        doc["issuer_admin_token"].as_str(),
    )
    .await;
    assert_eq!(sms.status, 200, "the issuer's admin port answers");
    assert_eq!(purchase_on(&nodes[1], &cards[2], 901, 900).await, "00", "a card pays on node 1");
    assert_eq!(purchase_on(&nodes[2], &cards[3], 902, 900).await, "00", "and on node 2");
    // The token node 0 provisioned pays on node 1 and node 2.
    assert_eq!(purchase_on(&nodes[1], &phone, 903, 1).await, "00", "the token pays on node 1");
    assert_eq!(purchase_on(&nodes[2], &phone, 904, 2).await, "00", "and on node 2");

    // An ATM reading the ports file as serve wrote it (node 0 first) fails over and is served.
    cash_advance_is_dispensed(&ports, &cards, 5, &tmp.path().join("atm-state"));

    // Provisioning goes on through node 1's API; a step-up started there (the second test card's
    // issuer asks for an OTP) is completed through node 2's, and the token pays on node 1.
    let api = |i: usize| nodes[i]["provisioning_api"].as_str().expect("node's API").to_string();
    let other =
        common::provision_token_at(&api(1), &requestor, "kill0-w2", &cards[4].pan, &cards[4].expiry).await;
    assert_eq!(purchase_on(&nodes[2], &other, 905, 1).await, "00", "a token provisioned on node 1");
    let device = hex::encode(crypto::device::public_key(&DEVICE_SECRET).expect("public key"));
    let body = serde_json::json!({"request_id": "kill0-w3", "pan": cards[1].pan, "expiry": cards[1].expiry, "device_public_key": device});
    let a = testkit::http::post(&api(1), "/v1/provision", Some(&requestor), &body.to_string()).await;
    let a = a.json();
    assert_eq!(a["status"], "otp_required", "{a}");
    let id = a["provisioning_id"].as_str().expect("id");
    let otp = last_otp(&doc, &cards[1].pan).await;
    let done = testkit::http::post(
        &api(2),
        &format!("/v1/provision/{id}/otp"),
        Some(&requestor),
        &format!("{{\"otp\":\"{otp}\"}}"),
    )
    .await
    .json();
    assert_eq!(done["status"], "approved", "the step-up completed on node 2: {done}");

    // Serve killed outright: its nodes see their standard input close and stop.
    let st =
        std::process::Command::new("kill").args(["-KILL", &serve.0.id().to_string()]).status().expect("kill");
    assert!(st.success());
    until_gone(pids[1], "node 1 outlived serve").await;
    until_gone(pids[2], "node 2 outlived serve").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_provisioned_on_node_0_pays_on_node_1_until_node_0_suspends_it() {
    use terminal_kit::pos::{CardKey, chip_request, chip_request_with};
    let Some((Nodes { schema: _schema, tmp: _tmp, ports: _ports, serve: _serve }, doc)) =
        serve_over_postgres("serve_tokens", &["--nodes", "2"])
    else {
        return;
    };
    let api = doc["provisioning_api"].as_str().expect("node 0's provisioning API").to_string();
    let nodes = doc["nodes"].as_array().expect("nodes").clone();
    let card: TestCard = serde_json::from_value(doc["test_cards"][0].clone()).expect("card");
    let requestor = |kind: &str| {
        let r = doc["token_requestors"]
            .as_array()
            .expect("requestors")
            .iter()
            .find(|r| r["kind"] == kind)
            .expect("requestor")
            .clone();
        format!("{}:{}", r["id"].as_str().expect("id"), r["secret"].as_str().expect("secret"))
    };
    let call = async |path: String, auth: &str, body: String| {
        let r = testkit::http::post(&api, &path, Some(auth), &body).await;
        (r.status, r.json())
    };
    let device = hex::encode(crypto::device::public_key(&DEVICE_SECRET).expect("public key"));
    let provision = async |auth: &str, id: &str| {
        let body = serde_json::json!({"request_id": id, "pan": card.pan, "expiry": card.expiry, "device_public_key": device});
        let (st, a) = call("/v1/provision".into(), auth, body.to_string()).await;
        assert_eq!((st, a["status"].as_str()), (200, Some("approved")), "{a}");
        let token_ref = a["token_ref"].as_str().expect("ref").to_string();
        let (st, c) = call(format!("/v1/tokens/{token_ref}/confirm"), auth, String::new()).await;
        assert_eq!((st, c["status"].as_str()), (200, Some("active")), "{c}");
        let (phone, luks, _) =
            common::open_token_profile(a["encrypted_token_data"].as_str().expect("sealed"));
        (token_ref, phone, luks)
    };
    let spec = Spec::builtin("network").expect("spec");
    let send = async |node: usize, req: codecs::iso8583::Message| {
        let rsp = connect(&nodes[node]).await.call(&req).await;
        (rc(&rsp), rsp.text(2).map(|t| t.into_owned()))
    };

    // A wallet token provisioned through node 0 pays on node 1 (the issuer sees the card, the
    // terminal gets the token back), and on node 0.
    let wallet = requestor("wallet");
    let (token_ref, phone, _) = provision(&wallet, "nodes-w1").await;
    assert!(phone.pan.starts_with("489537"), "a token");
    let pay =
        |stan: u32| chip_request(spec, &phone, &Tx::purchase(stan, 1_000, stan as u16)).expect("request");
    assert_eq!(send(1, pay(1)).await, ("00".to_string(), Some(phone.pan.clone())), "paid on node 1");
    assert_eq!(send(0, pay(2)).await.0, "00", "and on node 0");
    // Its ATC, once spent on node 1, does not pay again on node 0.
    let mut replay = pay(1);
    replay.set_text(11, "000091").expect("DE 11");
    assert_eq!(send(0, replay).await.0, "82", "an ATC of the token is accepted once across the nodes");
    // Suspended through node 0: refused on node 1 once the change notice reached it (node 1 had
    // the token cached as active); resumed: paid there again.
    let mut stan = 2;
    let mut until_node_1_answers = async |want: &str, meanwhile: &str| {
        for _ in 0..200 {
            stan += 1;
            let got = send(1, pay(stan)).await.0;
            if got == want {
                return;
            }
            assert_eq!(got, meanwhile, "only the previous state's answer until the notice lands");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("node 1 never answered {want}");
    };
    let (st, s) = call(format!("/v1/tokens/{token_ref}/suspend"), &wallet, String::new()).await;
    assert_eq!((st, s["status"].as_str()), (200, Some("suspended")), "{s}");
    until_node_1_answers("57", "00").await;
    let (st, s) = call(format!("/v1/tokens/{token_ref}/resume"), &wallet, String::new()).await;
    assert_eq!((st, s["status"].as_str()), (200, Some("active")), "{s}");
    until_node_1_answers("00", "57").await;

    // A step-up (the second test card's issuer asks for an OTP) is kept in the shared database
    // and completed with the OTP the cardholder got; the token pays on node 1.
    let stepped: TestCard = serde_json::from_value(doc["test_cards"][1].clone()).expect("card");
    let body = serde_json::json!({"request_id": "nodes-w2", "pan": stepped.pan, "expiry": stepped.expiry, "device_public_key": device});
    let (st, a) = call("/v1/provision".into(), &wallet, body.to_string()).await;
    assert_eq!((st, a["status"].as_str()), (202, Some("otp_required")), "{a}");
    let id = a["provisioning_id"].as_str().expect("id").to_string();
    let otp = last_otp(&doc, &stepped.pan).await;
    let (st, a) = call(format!("/v1/provision/{id}/otp"), &wallet, format!("{{\"otp\":\"{otp}\"}}")).await;
    assert_eq!((st, a["status"].as_str()), (200, Some("approved")), "{a}");
    let token_ref = a["token_ref"].as_str().expect("ref").to_string();
    call(format!("/v1/tokens/{token_ref}/confirm"), &wallet, String::new()).await;
    let (second, _, _) = common::open_token_profile(a["encrypted_token_data"].as_str().expect("sealed"));
    let req = chip_request(spec, &second, &Tx::purchase(30, 500, 1)).expect("request");
    assert_eq!(send(1, req).await.0, "00", "the stepped-up token pays on node 1");

    // A cloud token: a limited-use key spent on node 0 does not pay again on node 1; the batch
    // node 0 issued is known on node 1.
    let (_, cloud, luks) = provision(&requestor("cloud"), "nodes-c1").await;
    assert!(luks.len() >= 2, "a batch of limited-use keys");
    let spend = |stan: u32, (atc, key): &(u16, crypto::keys::TdesKey)| {
        chip_request_with(spec, &cloud, &Tx::purchase(stan, 700, *atc), CardKey::SessionKey(key))
            .expect("request")
    };
    assert_eq!(send(0, spend(10, &luks[0])).await.0, "00", "paid on node 0");
    assert_eq!(send(1, spend(11, &luks[0])).await.0, "82", "the same key again, on node 1");
    assert_eq!(send(1, spend(12, &luks[1])).await.0, "00", "the batch's next key pays on node 1");
}

/// The last one-time password the issuer simulator texted to the cardholder of `pan` (its SMS
/// outbox on the admin port the ports file `doc` names; messages name the card by its last four
/// digits).
async fn last_otp(doc: &serde_json::Value, pan: &str) -> String {
    let sms = testkit::http::get(
        doc["issuer_admin"].as_str().expect("issuer admin"),
        "/v1/sms",
        doc["issuer_admin_token"].as_str(),
    )
    .await
    .json();
    let last4 = &pan[pan.len() - 4..];
    let otp = sms
        .as_array()
        .expect("messages")
        .iter()
        .rev()
        .find(|m| m["card"].as_str().is_some_and(|c| c.ends_with(last4)));
    otp.and_then(|m| m["otp"].as_str()).expect("the cardholder's OTP").to_string()
}
