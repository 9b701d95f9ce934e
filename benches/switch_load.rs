//! Load benchmark of the switch (not a test): the whole network on loopback — the load generator
//! (open loop), the switch node, the issuer simulator verifying the ARQC of every request — and,
//! in the same run, the same load through a plain length-prefixed TCP relay straight to the
//! issuer simulator, the floor any switch pays. Prints one JSON object: both reports and their
//! ratio; `--report FILE` writes it too.
//!
//! ```text
//! cargo bench --bench switch_load -- [--rate 20000] [--seconds 10] [--connections 8] [--cards 64]
//!                                    [--only switch|relay] [--report FILE]
//! ```

use std::sync::Arc;
use std::time::Duration;

use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use futures_util::{SinkExt, StreamExt};
use terminal_kit::link::Target;
use terminal_kit::pos::{TestCard, Tx, chip_request};
use terminal_sim::load::{self, Plan, Report};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Contactless purchases for the test cards, each ATC used once per card (the issuer's replay
/// protection would decline a repeat), cryptograms computed as the card would.
struct Purchases {
    spec: Arc<Spec>,
    cards: Vec<TestCard>,
    /// Offsets the ATCs of the second phase so that no (card, ATC) repeats across phases.
    atc_base: u64,
}

impl Purchases {
    fn build(&self, seq: u64, conn: usize) -> Message {
        let n = self.cards.len() as u64;
        let card = &self.cards[(seq % n) as usize];
        let tx = Tx {
            tid: load::terminal_id(conn),
            ..Tx::purchase(seq as u32, 100 + seq % 900, (self.atc_base + seq / n + 1) as u16)
        };
        let mut m = chip_request(&self.spec, card, &tx).unwrap_or_else(|e| panic!("request: {e}"));
        let _ = m.set_text(11, &load::stan(seq));
        m
    }
}

/// The requests of a run built before it starts (the card cryptograms are the expensive part), so
/// that during the run the generator spends its CPU on sending, not on being the cards.
struct Prebuilt {
    spec: Arc<Spec>,
    wire: Vec<bytes::Bytes>,
}

impl Prebuilt {
    fn new(p: &Purchases, total: u64, conns: usize) -> Self {
        let wire = (0..total)
            .map(|seq| p.build(seq, (seq % conns as u64) as usize).encode().unwrap_or_default())
            .collect();
        Prebuilt { spec: p.spec.clone(), wire }
    }
}

impl load::RequestSource for Prebuilt {
    fn request(&self, seq: u64, _conn: usize) -> Message {
        let bytes = self.wire.get(seq as usize).cloned().unwrap_or_default();
        Message::decode(&self.spec, bytes).unwrap_or_else(|e| panic!("prebuilt request {seq}: {e}"))
    }
}

/// A plain length-prefixed relay: frames from the client to the upstream and back, nothing else.
async fn relay(listener: TcpListener, upstream: String) {
    while let Ok((client, _)) = listener.accept().await {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let codec = FrameCodec::new(FramingKind::Binary2);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let pump = |r, w| async move {
                let mut r = FramedRead::new(r, codec);
                let mut w = FramedWrite::new(w, codec);
                while let Some(Ok(f)) = r.next().await {
                    if w.feed(Frame::new(f.payload)).await.is_err() {
                        break;
                    }
                    // Flush when nothing more is buffered (batches like the switch's writer).
                    if r.read_buffer().is_empty() && SinkExt::<Frame>::flush(&mut w).await.is_err() {
                        break;
                    }
                }
            };
            tokio::join!(pump(cr, sw), pump(sr, cw));
        });
    }
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // Warnings and errors of the network under load go to stderr (RUST_LOG to change).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let rate = arg(&args, "--rate", 20_000);
    let seconds = arg(&args, "--seconds", 10);
    let connections = arg(&args, "--connections", 8) as usize;
    let ncards = arg(&args, "--cards", 64) as usize;
    let report_path = args.iter().position(|a| a == "--report").and_then(|i| args.get(i + 1)).cloned();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = paynet::network::Options::new(dir.path());
        opts.cards = ncards;
        // The relay below talks to the issuer directly and cannot sign: both paths run without
        // the link MAC, so that they compare like with like.
        opts.issuer_link_mac = false;
        // Roomy test accounts: the bench measures throughput, not declines.
        let net = paynet::network::start(opts).await.expect("network");
        let spec = Spec::builtin("network").expect("spec").clone();
        let cards: Vec<TestCard> = net
            .ports
            .test_cards
            .iter()
            .map(|c| serde_json::from_value(serde_json::to_value(c).expect("json")).expect("card"))
            .collect();
        let total = rate * seconds;
        assert!(total / ncards as u64 * 2 < 65_000, "too few cards for that many requests: raise --cards");
        let plan = Plan {
            rate,
            duration: Duration::from_secs(seconds),
            connections,
            timeout: Duration::from_secs(5),
        };
        let relay_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let relay_addr = relay_listener.local_addr().expect("addr");
        tokio::spawn(relay(relay_listener, net.issuer_addr.to_string()));
        let run = |addr: String, atc_base: u64| {
            let spec = spec.clone();
            let purchases = Purchases { spec: spec.clone(), cards: cards.clone(), atc_base };
            let source = Arc::new(Prebuilt::new(&purchases, total, connections));
            async move {
                load::run(
                    Target { addr, spec, framing: FramingKind::Binary2 },
                    plan,
                    source,
                    Arc::new(|_| {}),
                )
                .await
            }
        };
        let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
        let relay_report: Report = if only.as_deref() == Some("switch") {
            Report::default()
        } else {
            run(relay_addr.to_string(), 0).await
        };
        let switch_addr = format!("{}:{}", net.ports.acquirer.host, net.ports.acquirer.port);
        let switch_report: Report = if only.as_deref() == Some("relay") {
            Report::default()
        } else {
            run(switch_addr, total / ncards as u64 + 1).await
        };
        let ratio = if relay_report.achieved_tps > 0.0 {
            switch_report.achieved_tps / relay_report.achieved_tps
        } else {
            0.0
        };
        let brief = |r: &Report| {
            serde_json::json!({"offered_tps": r.offered_tps, "achieved_tps": r.achieved_tps, "sent": r.sent,
                "approved": r.approved, "declined": r.declined, "errors": r.errors, "timeouts": r.timeouts,
                "unmatched": r.unmatched, "response_codes": r.response_codes, "latency_us": r.latency_us})
        };
        let out = serde_json::json!({
            "relay": brief(&relay_report),
            "switch": brief(&switch_report),
            "switch_to_relay_throughput_ratio": ratio,
            "connections": connections, "seconds": seconds, "cards": ncards,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        if let Some(p) = report_path {
            let _ = std::fs::write(p, out.to_string());
        }
        net.shutdown().await;
    });
}
