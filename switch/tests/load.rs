//! The open-loop load generator (terminal-sim) against the real switch: its report adds up (every
//! request sent ends as exactly one outcome), answers are matched to the right requests across many
//! connections, and latency percentiles are ordered.

mod common;

use std::sync::Arc;
use std::time::Duration;

use codecs::framing::FramingKind;
use codecs::iso8583::Spec;
use terminal_kit::link::Target;
use terminal_sim::load::{self, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_load_report_adds_up() {
    let sw = common::start(
        "[node]\nname = \"load\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[keys]\nkeystore = \"keys.toml\"\n[[listener]]\nname = \"acquirer\"\nlisten = \"127.0.0.1:0\"\nspec = \"network\"\nframing = \"2-byte-binary\"\n",
    );
    let target = Target {
        addr: sw.addr("acquirer"),
        spec: Spec::builtin("network").expect("spec").clone(),
        framing: FramingKind::Binary2,
    };
    let plan = Plan {
        rate: 2000,
        duration: Duration::from_secs(2),
        connections: 4,
        timeout: Duration::from_secs(2),
    };
    let source = Arc::new(|seq: u64, conn: usize| {
        let mut m = common::echo("network", 0);
        m.set_text(11, &load::stan(seq)).expect("DE 11");
        m.set_text(41, &load::terminal_id(conn)).expect("DE 41");
        // Every 10th request is an unsupported MTI class: declined with 12, not an error.
        if seq % 10 == 9 {
            m.set_mti("0600".parse().expect("MTI"));
        }
        m
    });
    let report = load::run(target, plan, source, Arc::new(|_| {})).await;
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
