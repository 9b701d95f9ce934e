//! Load benchmark of the switch (not a test): the whole network on loopback — the load generator
//! (open loop), the switch node, the issuer simulator verifying the ARQC of every request — and,
//! in the same run, the same load through a plain length-prefixed TCP relay straight to the
//! issuer simulator, the floor any switch pays. Prints one JSON object: both reports and their
//! ratio; `--report FILE` writes it too.
//!
//! ```text
//! cargo bench --bench switch_load -- [--rate 20000] [--seconds 10] [--connections 8] [--cards 64]
//!                                    [--only switch|relay] [--report FILE]
//!                                    [--find-max [--p99-ms 10] [--settle-s 3]]
//!                                    [--database-url postgres://… [--nodes N]]
//!                                    [--group-commit-us 1000]
//! ```
//!
//! `--database-url` puts the switch's store in that PostgreSQL database (a schema of the run's
//! own, dropped at the end) instead of SQLite; `--nodes N` runs N switch nodes over it in this
//! process, the load's connections spread over them. `--group-commit-us` sets the switch's
//! `[store] group_commit_us` (the shortest time between two group commits).
//!
//! Each phase also reports the process's CPU time per request (user + system, from
//! `/proc/self/stat`: generator, switch and issuer simulator together) and its parts: the load
//! generator's (`generator_cpu_us_per_request`: the CPU time of the thread it runs on, from its
//! report), the issuer simulator's (`issuer_simulator_cpu_us_per_request`: its thread,
//! `issuer-sim`, from `/proc/self/task`) and the rest (`switch_cpu_us_per_request`: the switch in
//! the switch phase, the relay in the relay phase); and the resident memory at the phase's end
//! and every 10 s.
//! `--find-max` searches (`--seconds` per step) the highest offered rate each path holds with p99
//! within `--p99-ms` and no timeouts: from `--rate` doubling while it holds (up to 16 times it:
//! `held_at_cap` then), then by bisection; with both paths, `switch_to_relay_held_ratio`. Each
//! step after the first starts `--settle-s` seconds after the one before ended, so that a step
//! the network did not hold (its queues, its store's background filing of what it wrote) does
//! not weigh on the next.

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
    /// The first of the phase's terminals (one per connection) and of its STANs: no request
    /// repeats an earlier phase's transmission (terminal, STAN, DE 7), which the switch would
    /// answer from its duplicate cache, forwarding nothing.
    tid_base: usize,
    stan_base: u64,
}

impl Purchases {
    fn build(&self, seq: u64, conn: usize) -> Message {
        let n = self.cards.len() as u64;
        let card = &self.cards[(seq % n) as usize];
        let stan = self.stan_base + seq;
        let tx = Tx {
            tid: load::terminal_id(self.tid_base + conn),
            ..Tx::purchase(stan as u32, 100 + seq % 900, (self.atc_base + seq / n + 1) as u16)
        };
        let mut m = chip_request(&self.spec, card, &tx).unwrap_or_else(|e| panic!("request: {e}"));
        let _ = m.set_text(11, &load::stan(stan));
        m
    }
}

/// The requests of a run built before it starts (the card cryptograms are the expensive part), so
/// that during the run the generator spends its CPU on sending, not on being the cards.
struct Prebuilt {
    spec: Arc<Spec>,
    /// Each request encoded, with its DE 11 and DE 41 (what its answer is matched by).
    wire: Vec<load::Prepared>,
}

impl Prebuilt {
    fn new(p: &Purchases, total: u64, conns: usize) -> Self {
        let wire = (0..total)
            .map(|seq| {
                let m = p.build(seq, (seq % conns as u64) as usize);
                let element = |de| m.bytes(de).unwrap_or_default();
                load::Prepared { bytes: m.encode().unwrap_or_default(), stan: element(11), tid: element(41) }
            })
            .collect();
        Prebuilt { spec: p.spec.clone(), wire }
    }
}

impl load::RequestSource for Prebuilt {
    fn request(&self, seq: u64, _conn: usize) -> Message {
        let bytes = self.wire.get(seq as usize).map(|p| p.bytes.clone()).unwrap_or_default();
        Message::decode(&self.spec, bytes).unwrap_or_else(|e| panic!("prebuilt request {seq}: {e}"))
    }

    /// The generator sends the bytes as built: its CPU goes to sending, not to decoding and
    /// encoding each request again.
    fn prepared(&self, seq: u64, _conn: usize) -> Option<load::Prepared> {
        self.wire.get(seq as usize).cloned()
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

/// The name and CPU time (user + system, in µs) of a `/proc/…/stat` line: fields 14 and 15
/// (after the parenthesised name) are utime and stime in clock ticks; Linux's USER_HZ is 100.
fn stat_cpu_us(stat: &str) -> Option<(&str, u64)> {
    let (head, after) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    Some((comm, (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10_000))
}

/// CPU time of this process so far (all threads, user + system), in µs.
fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat_cpu_us(&stat).map_or(0, |(_, us)| us)
}

/// CPU time so far (user + system) of this process's threads named `name`, in µs.
fn threads_cpu_us(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| stat_cpu_us(&stat).filter(|(comm, _)| *comm == name).map(|(_, us)| us))
        .sum()
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    door::process::resident_kib().unwrap_or(0)
}

/// One phase's report with its cost.
struct Phase {
    report: Report,
    cpu_us_per_request: f64,
    /// The issuer simulator's share (its thread, `issuer-sim`).
    issuer_cpu_us_per_request: f64,
    rss_mib: u64,
    /// Resident memory at every 10 s of the phase (10 s, 20 s, …).
    rss_mib_every_10s: Vec<u64>,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Phase {
    fn json(&self) -> serde_json::Value {
        let r = &self.report;
        serde_json::json!({"offered_tps": r.offered_tps, "achieved_tps": r.achieved_tps, "sent": r.sent,
            "approved": r.approved, "declined": r.declined, "errors": r.errors, "timeouts": r.timeouts,
            "unmatched": r.unmatched, "response_codes": r.response_codes, "latency_us": r.latency_us,
            "send_lag_us": r.send_lag_us,
            "cpu_us_per_request": round1(self.cpu_us_per_request),
            "generator_cpu_us_per_request": r.generator_cpu_us_per_request,
            "issuer_simulator_cpu_us_per_request": round1(self.issuer_cpu_us_per_request),
            // What is left: the switch (or the relay) and the bench's own sampling.
            "switch_cpu_us_per_request": round1(self.cpu_us_per_request
                - self.issuer_cpu_us_per_request
                - r.generator_cpu_us_per_request.unwrap_or(0.0)),
            "rss_mib_at_end": self.rss_mib, "rss_mib_every_10s": self.rss_mib_every_10s})
    }

    /// Within the bound, nothing lost, and every answer the issuer's own: approved, or declined
    /// for funds (the test cards' open-to-buy runs out over a long search). A refusal by the path
    /// itself (58, 91, 96…) is fast, and must not pass for a rate held.
    fn holds(&self, p99_us: u64) -> bool {
        let r = &self.report;
        r.timeouts == 0
            && r.errors == 0
            && r.latency_us.p99 <= p99_us
            && r.sent > 0
            && r.response_codes.keys().all(|c| c == "00" || c == "51")
    }
}

fn main() {
    // As the network's binaries do (see `door::process::no_huge_pages`).
    door::process::no_huge_pages();
    // Warnings and errors of the network under load go to stderr (RUST_LOG to change).
    door::process::init_logging("warn");
    let args: Vec<String> = std::env::args().collect();
    let rate = arg(&args, "--rate", 20_000);
    let seconds = arg(&args, "--seconds", 10);
    let settle = Duration::from_secs(arg(&args, "--settle-s", 3));
    let connections = arg(&args, "--connections", 8) as usize;
    let ncards = arg(&args, "--cards", 64) as usize;
    let p99_us = arg(&args, "--p99-ms", 10) * 1000;
    let find_max = args.iter().any(|a| a == "--find-max");
    let report_path = args.iter().position(|a| a == "--report").and_then(|i| args.get(i + 1)).cloned();
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let database_url = args.iter().position(|a| a == "--database-url").and_then(|i| args.get(i + 1)).cloned();
    let nodes = arg(&args, "--nodes", 1) as usize;
    let group_commit_us =
        args.iter().any(|a| a == "--group-commit-us").then(|| arg(&args, "--group-commit-us", 1000));
    let schema = format!("bench_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = paynet::network::Options::new(dir.path());
        opts.cards = ncards;
        // The relay below talks to the issuer directly and cannot sign: both paths run without
        // the link MAC, so that they compare like with like.
        opts.issuer_link_mac = false;
        if let Some(url) = &database_url {
            opts.store.url = Some(url.clone());
            opts.store.schema = schema.clone();
        }
        opts.nodes = nodes;
        if let Some(us) = group_commit_us {
            opts.store.group_commit_us = us;
        }
        let net = paynet::network::start(opts).await.expect("network");
        let spec = Spec::builtin("network").expect("spec").clone();
        let cards: Vec<TestCard> = net
            .ports
            .test_cards
            .iter()
            .map(|c| serde_json::from_value(serde_json::to_value(c).expect("json")).expect("card"))
            .collect();
        let relay_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let relay_addr = relay_listener.local_addr().expect("addr").to_string();
        tokio::spawn(relay(relay_listener, net.issuer_addr.to_string()));
        let switch_addr: Vec<String> = net.acquirer_nodes().iter().map(|a| a.to_string()).collect();
        // Every phase gives each card ATCs no earlier phase used (the issuer refuses a repeat).
        let mut next_atc = 0u64;
        // The test network's load-generator terminals, in groups of one per connection taken in
        // turn by the phases; each group's STANs go on from its last phase.
        let terminals = paynet::network::test_terminals(&[]).iter().filter(|t| t.tid.starts_with("LG")).count();
        let groups = (terminals / connections).max(1);
        let mut next_stan = vec![0u64; groups];
        let mut phases = 0usize;
        let mut phase = |addrs: Vec<String>, rate: u64| {
            let total = rate * seconds;
            let per_card = total / ncards as u64 + 1;
            let atc_base = next_atc;
            next_atc += per_card;
            let group = phases % groups;
            phases += 1;
            let (tid_base, stan_base) = (group * connections, next_stan[group]);
            next_stan[group] += total;
            assert!(next_stan[group] < 1_000_000, "the STANs are used up: fewer or shorter phases");
            assert!(next_atc < 65_000, "the cards' ATCs are used up: raise --cards or lower the rates");
            let spec = spec.clone();
            let purchases = Purchases { spec: spec.clone(), cards: cards.clone(), atc_base, tid_base, stan_base };
            let source = Arc::new(Prebuilt::new(&purchases, total, connections));
            let plan = Plan { rate, duration: Duration::from_secs(seconds), connections, timeout: Duration::from_secs(5) };
            async move {
                let cpu = cpu_us();
                let issuer_cpu = threads_cpu_us("issuer-sim");
                let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
                let sampler = tokio::spawn({
                    let samples = samples.clone();
                    async move {
                        let mut tick = tokio::time::interval(Duration::from_secs(10));
                        tick.tick().await;
                        loop {
                            tick.tick().await;
                            samples.lock().expect("samples").push(rss_kib() / 1024);
                        }
                    }
                });
                let targets =
                    addrs.into_iter().map(|addr| Target { addr, spec: spec.clone(), framing: FramingKind::Binary2 }).collect();
                let report = load::run_spread(targets, plan, source, Arc::new(|_| {})).await;
                sampler.abort();
                let rss_mib_every_10s = std::mem::take(&mut *samples.lock().expect("samples"));
                let used = cpu_us().saturating_sub(cpu);
                let issuer_used = threads_cpu_us("issuer-sim").saturating_sub(issuer_cpu);
                let per = |us: u64| if report.sent > 0 { us as f64 / report.sent as f64 } else { 0.0 };
                let (cpu_us_per_request, issuer_cpu_us_per_request) = (per(used), per(issuer_used));
                Phase { report, cpu_us_per_request, issuer_cpu_us_per_request, rss_mib: rss_kib() / 1024, rss_mib_every_10s }
            }
        };
        let out = if find_max {
            let mut found = serde_json::Map::new();
            for (name, addr) in [("relay", &vec![relay_addr.clone()]), ("switch", &switch_addr)] {
                if only.as_deref().is_some_and(|o| o != name) {
                    continue;
                }
                // Up from the first rate, doubling, while it holds (to at most 16 times it), then
                // bisection between a rate that held and one that did not.
                let cap = rate.max(1_000).saturating_mul(16);
                let (mut lo, mut hi) = (0u64, rate.max(1_000));
                let mut growing = true;
                let mut steps = Vec::new();
                let mut best: Option<Phase> = None;
                while growing || hi - lo > hi / 20 {
                    let r = if growing { hi } else { (lo + hi) / 2 };
                    if !steps.is_empty() {
                        tokio::time::sleep(settle).await;
                    }
                    let p = phase(addr.clone(), r).await;
                    let held = p.holds(p99_us);
                    eprintln!("{name}: {r}/s p99 {} µs {}", p.report.latency_us.p99, if held { "held" } else { "not held" });
                    steps.push(serde_json::json!({"offered_tps": r, "held": held, "p99_us": p.report.latency_us.p99}));
                    if held {
                        lo = r;
                        best = Some(p);
                        if growing {
                            if hi >= cap {
                                break;
                            }
                            hi = hi.saturating_mul(2).min(cap);
                        }
                    } else {
                        hi = r;
                        growing = false;
                    }
                }
                found.insert(
                    name.into(),
                    serde_json::json!({"max_held_tps": lo, "held_at_cap": lo >= cap,
                        "at_max": best.map(|p| p.json()), "steps": steps}),
                );
            }
            let held = |name: &str| found.get(name).and_then(|f| f["max_held_tps"].as_u64());
            if let (Some(switch), Some(relay)) = (held("switch"), held("relay"))
                && relay > 0
            {
                found.insert("switch_to_relay_held_ratio".into(), serde_json::json!(switch as f64 / relay as f64));
            }
            serde_json::json!({"find_max": found, "p99_bound_ms": p99_us / 1000, "connections": connections,
                "seconds_per_step": seconds, "settle_s": settle.as_secs(), "cards": ncards, "nodes": nodes,
                "store": if database_url.is_some() { "postgres" } else { "sqlite" }})
        } else {
            let relay = if only.as_deref() == Some("switch") { None } else { Some(phase(vec![relay_addr.clone()], rate).await) };
            let switch = if only.as_deref() == Some("relay") { None } else { Some(phase(switch_addr.clone(), rate).await) };
            let tps = |p: &Option<Phase>| p.as_ref().map(|p| p.report.achieved_tps).unwrap_or(0.0);
            let ratio = if tps(&relay) > 0.0 { tps(&switch) / tps(&relay) } else { 0.0 };
            let cpu = |p: &Option<Phase>| p.as_ref().map(|p| p.cpu_us_per_request).unwrap_or(0.0);
            serde_json::json!({
                "relay": relay.as_ref().map(Phase::json),
                "switch": switch.as_ref().map(Phase::json),
                "switch_to_relay_throughput_ratio": ratio,
                "switch_cpu_us_beyond_relay": ((cpu(&switch) - cpu(&relay)) * 10.0).round() / 10.0,
                "connections": connections, "seconds": seconds, "cards": ncards, "nodes": nodes,
                "store": if database_url.is_some() { "postgres" } else { "sqlite" },
            })
        };
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        if let Some(p) = report_path {
            let _ = std::fs::write(p, out.to_string());
        }
        net.shutdown().await;
        if let Some(url) = database_url {
            let _ = switch::store::postgres::PgStore::drop_schema(&switch::store::postgres::PgOptions::new(url, schema));
        }
    });
}
