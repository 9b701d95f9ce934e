//! The merchant-terminal tools against the real network on 127.0.0.1 (switch + issuer simulator
//! started as `paynet serve` starts them): the open-loop load generator's own report adding up over
//! many connections (every request sent ends as exactly one outcome, answers matched to the right
//! requests, latency percentiles ordered); a short `terminal-sim load` run whose report adds up
//! and carries its plots; `terminal-sim certify --suite basic` passing; and a deliberately broken
//! device on a certification-mode listener getting precise findings on the admin endpoint.

mod common;

use std::time::Duration;

use codecs::framing::FramingKind;
use codecs::tlv::{Tag, TlvBuilder};
use common::{Tx, chip_request, rc};
use paynet::network::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_load_report_adds_up() {
    use std::sync::Arc;

    use codecs::iso8583::{Message, Mti, Spec};
    use terminal_kit::link::Target;
    use terminal_sim::load::{self, Plan};

    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(&dir.path().join("net"))).await.expect("network");
    let a = &net.ports.acquirer;
    let spec = Spec::builtin("network").expect("spec").clone();
    let target =
        Target { addr: format!("{}:{}", a.host, a.port), spec: spec.clone(), framing: FramingKind::Binary2 };
    let plan = Plan {
        rate: 2000,
        duration: Duration::from_secs(2),
        connections: 4,
        timeout: Duration::from_secs(2),
    };
    let source = Arc::new(move |seq: u64, conn: usize| {
        let mut m = Message::new(spec.clone(), Mti::NETWORK_MANAGEMENT_REQUEST);
        m.set_text(7, "1125101010").expect("DE 7");
        m.set_text(11, &load::stan(seq)).expect("DE 11");
        m.set_text(41, &load::terminal_id(conn)).expect("DE 41");
        m.set_text(70, "301").expect("DE 70");
        // Every 10th request is an unsupported MTI class: declined with 12, not an error.
        if seq % 10 == 9 {
            m.set_mti("0600".parse().expect("MTI"));
        }
        m
    });
    let report = load::run(target, plan, source, Arc::new(|_| {})).await;
    net.shutdown().await;
    assert_eq!(report.sent, 4000);
    assert_eq!(
        report.approved + report.declined + report.errors + report.timeouts,
        report.sent,
        "{report:?}"
    );
    assert_eq!(report.unmatched, 0);
    assert_eq!(report.declined, 400, "{report:?}");
    assert_eq!(report.approved, 3600, "{report:?}");
    let l = &report.latency_us;
    assert!(l.p50 > 0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, "{l:?}");
    assert!(report.timeline.len() >= 2);
    let json = serde_json::to_value(&report).expect("JSON");
    testkit::assert_load_report_keys(&json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_run_report_adds_up_and_has_its_plots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(&dir.path().join("net"))).await.expect("network");
    let ports = dir.path().join("ports.json");
    net.write_ports_file(&ports).expect("ports file");
    let out = dir.path().join("load").join("report.json");
    let args = terminal_sim::cli::load::Args {
        ports_file: Some(ports),
        endpoint: "acquirer".into(),
        target: None,
        spec: "network".into(),
        framing: "2-byte-binary".into(),
        cards: None,
        rate: 200,
        duration: 2.0,
        report: out.clone(),
        connections: 4,
        timeout_ms: 5_000,
        mix: None,
        atc_state: Some(dir.path().join("atc.json")),
        progress: false,
        quiet: true,
    };
    let run = terminal_sim::cli::load::execute(&args).await.expect("load run");
    net.shutdown().await;

    let r = &run.report;
    assert_eq!(r.sent, 400);
    assert_eq!(r.approved + r.declined + r.errors + r.timeouts, r.sent, "{r:?}");
    assert_eq!((r.errors, r.timeouts, r.unmatched), (0, 0, 0), "{r:?}");
    assert!((r.achieved_tps - (r.approved + r.declined) as f64 / r.duration_s).abs() < 1e-9);
    // The mix: approvals for purchases and balance inquiries (POS and ATM), each decline reason
    // with its own code.
    for (kind, code) in [
        ("purchase", "00"),
        ("balance", "00"),
        ("atm-balance", "00"),
        ("decline-funds", "51"),
        ("decline-expiry", "54"),
    ] {
        let k = r.by_kind.get(kind).unwrap_or_else(|| panic!("kind {kind} in {r:?}"));
        assert!(k.sent > 0);
        assert_eq!(k.response_codes.get(code), Some(&k.sent), "{kind}: {k:?}");
    }
    assert_eq!(r.timeline.iter().map(|s| s.sent).sum::<u64>(), r.sent);
    assert!(
        r.latency_us.p50 > 0 && r.latency_us.p50 <= r.latency_us.p99 && r.latency_us.p99 <= r.latency_us.max
    );

    // The JSON of INTERFACES.md §4, every key of the contract there.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("report")).expect("json");
    testkit::assert_load_report_keys(&json);
    assert_eq!(json["sent"], 400);

    // The page beside it, with its three plots inline, and the SVGs on their own.
    assert_eq!(run.html, out.with_extension("html"));
    let html = std::fs::read_to_string(&run.html).expect("html");
    assert_eq!(html.matches("<svg").count(), 3);
    for title in ["Throughput per second", "Latency per second (p50, p99)", "Latency by percentile"] {
        assert!(html.contains(title), "{title}");
    }
    for svg in ["report-throughput.svg", "report-latency.svg", "report-distribution.svg"] {
        let s = std::fs::read_to_string(out.with_file_name(svg)).expect("svg");
        assert!(s.contains("<svg") && s.contains("<polyline"), "{svg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_basic_passes_against_the_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(&dir.path().join("net"));
    // The timeout case waits for the switch's issuer timeout.
    opts.issuer_timeout_ms = 400;
    let net = network::start(opts).await.expect("network");
    let ports = dir.path().join("ports.json");
    net.write_ports_file(&ports).expect("ports file");
    let args = terminal_sim::cli::certify::Args {
        ports_file: ports,
        suite: "basic".into(),
        report: Some(dir.path().join("certify.json")),
        endpoint: "acquirer".into(),
        target: None,
        spec: "network".into(),
        framing: "2-byte-binary".into(),
        issuer_admin: None,
        issuer_admin_token: None,
        response_timeout_ms: 10_000,
        tid: "CERT0001".into(),
    };
    let report = terminal_sim::cli::certify::execute(&args).await.expect("suite");
    net.shutdown().await;
    assert!(report.ok, "{}", report.table());
    assert_eq!((report.failed, report.skipped), (0, 0));
    assert_eq!(report.passed, report.cases.len());
    let names: Vec<&str> = report.cases.iter().map(|c| c.name.as_str()).collect();
    for n in ["approve", "reversal", "issuer-timeout", "malformed-message", "duplicate-transmission"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("certify.json")).expect("report"))
            .expect("json");
    assert_eq!(json["ok"], true);
    assert_eq!(json["cases"][0]["status"], "pass");
}

/// A plain HTTP GET on the admin endpoint: status line and body.
async fn get(base: &str, path: &str) -> (String, String) {
    let r = testkit::http::get(base, path, None).await;
    (r.status_line().to_string(), r.body)
}

/// DE 55 of `m` rebuilt: `drop` left out, `stretch` given one byte more.
fn rebuild_icc(m: &mut codecs::iso8583::Message, drop: Option<u32>, stretch: Option<u32>) {
    let icc = m.icc_data().expect("DE 55").expect("present").to_vec();
    let nodes = codecs::tlv::decode_lenient(&icc).expect("tlv");
    let mut b = TlvBuilder::new();
    for n in &nodes {
        let t = n.tag().value();
        if Some(t) == drop {
            continue;
        }
        let mut v = n.value().to_vec();
        if Some(t) == stretch {
            v.push(0);
        }
        b.primitive(Tag::new(t), &v).expect("tlv");
    }
    m.set_icc_data(&b.finish()).expect("DE 55");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certification_listener_reports_a_broken_device_precisely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(dir.path());
    opts.certification = true;
    let net = network::start(opts).await.expect("network");
    let card = net.ports.test_cards[0].clone();
    let mut c = common::acquirer_client(&net).await;
    let broken = |stan: u32, atc: u16| Tx { tid: "BROKEN01".into(), ..Tx::purchase(stan, 500, atc) };

    // 1. DE 55 without the unpredictable number (9F37).
    let mut m = chip_request("network", &card, &broken(1, 101));
    rebuild_icc(&mut m, Some(0x9F37), None);
    assert_eq!(rc(&c.call(&m).await), "30", "validation refuses it as on any listener");
    // 2. DE 22 = 071 (contactless chip) without any DE 55.
    let mut m = chip_request("network", &card, &broken(2, 102));
    m.remove(55);
    assert_eq!(rc(&c.call(&m).await), "30");
    // 3. The ATC (9F36) one byte too long.
    let mut m = chip_request("network", &card, &broken(3, 103));
    rebuild_icc(&mut m, None, Some(0x9F36));
    let raw = m.encode().expect("encode");
    let _ = c.call(&m).await;
    // 4. A length prefix that is not a number: DE 55's, the last element.
    let m4 = chip_request("network", &card, &broken(4, 104));
    let mut head = m4.clone();
    head.remove(55);
    let at = head.encode().expect("encode").len() + 1;
    let mut bad = m4.encode().expect("encode").to_vec();
    bad[at] = b'X';
    {
        use tokio::io::AsyncWriteExt;
        let mut framed = (bad.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bad);
        c.stream.write_all(&framed).await.expect("write");
    }
    assert_eq!(rc(&c.recv().await), "30");
    // And a good device beside it.
    let mut good = common::acquirer_client(&net).await;
    let ok = chip_request("network", &card, &Tx { tid: "GOODDEV1".into(), ..Tx::purchase(5, 500, 105) });
    assert_eq!(rc(&good.call(&ok).await), "00");

    let (status, body) = get(&net.ports.admin, "/certification/BROKEN01").await;
    assert!(status.contains("200"), "{status} {body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["terminal_id"], "BROKEN01");
    assert_eq!((report["messages"].as_u64(), report["failed"].as_u64()), (Some(4), Some(4)), "{report:#}");
    let fails = |i: usize| -> Vec<serde_json::Value> {
        report["recent"][i]["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter(|c| c["verdict"] == "fail")
            .cloned()
            .collect()
    };
    // 1: exactly the missing tag.
    let f = fails(0);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(
        (f[0]["check"].as_str(), f[0]["element"].as_str(), f[0]["found"].as_str()),
        (Some("icc-tag"), Some("tag 9F37"), Some("absent"))
    );
    assert!(f[0]["expected"].as_str().is_some_and(|e| e.contains("DE 22 = 071")), "{f:#?}");
    // 2: DE 55, required by the entry mode.
    let f = fails(1);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!((f[0]["element"].as_str(), f[0]["found"].as_str()), (Some("DE 55"), Some("absent")));
    assert!(f[0]["expected"].as_str().is_some_and(|e| e.contains("required by DE 22 = 071")));
    // 3: the tag, its expected and found length, its place in the message and its bytes.
    let f = fails(2);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(
        (f[0]["check"].as_str(), f[0]["element"].as_str(), f[0]["expected"].as_str(), f[0]["found"].as_str()),
        (Some("icc-tag-length"), Some("tag 9F36"), Some("2 bytes"), Some("3 bytes"))
    );
    let off = f[0]["offset"].as_u64().expect("offset") as usize;
    assert_eq!(&raw[off..off + 3], &[0x9F, 0x36, 0x03]);
    assert_eq!(f[0]["bytes"].as_str(), Some(format!("9F3603{:04X}00", 103).as_str()));
    // 4: the codec's finding: which element, which byte, what was expected.
    let f = fails(3);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!((f[0]["check"].as_str(), f[0]["element"].as_str()), (Some("format"), Some("DE 55")));
    assert_eq!(f[0]["offset"].as_u64(), Some(at as u64));
    assert!(f[0]["bytes"].as_str().is_some_and(|b| !b.is_empty()));
    // No clear PAN anywhere in the report.
    assert!(!body.contains(&card.pan));

    let (_, good_body) = get(&net.ports.admin, "/certification/GOODDEV1").await;
    let good_report: serde_json::Value = serde_json::from_str(&good_body).expect("json");
    assert_eq!(
        (good_report["messages"].as_u64(), good_report["failed"].as_u64()),
        (Some(1), Some(0)),
        "{good_report:#}"
    );
    let (status, _) = get(&net.ports.admin, "/certification/NOBODY00").await;
    assert!(status.contains("404"));
    let (_, list) = get(&net.ports.admin, "/certification").await;
    assert!(list.contains("BROKEN01") && list.contains("GOODDEV1"));
    drop(c);
    drop(good);
    tokio::time::sleep(Duration::from_millis(10)).await;
    net.shutdown().await;
}
