//! `terminal-sim load` (INTERFACES.md §4): builds the run's mixed traffic from the ports file's
//! test cards and ATMs, sends it open-loop at `--rate` for `--duration` seconds over
//! `--connections` connections, and writes the JSON report to `--report` and the page with
//! plots beside it (`.html` for `.json`). A progress bar goes to stderr when it is a terminal
//! (or with `--progress`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::load::{self, Plan};
use crate::mix::{Mix, Traffic, TrafficPlan};
use terminal_kit::ports::{self, PortsFile};
use terminal_kit::pos::TestCard;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The ports file of a running network (INTERFACES.md §5): endpoint, test cards, ATMs.
    #[arg(long, value_name = "FILE")]
    pub ports_file: Option<PathBuf>,
    /// Which listener of the ports file: `acquirer` (network spec, binary framing) or
    /// `acquirer_ascii`.
    #[arg(long, default_value = "acquirer")]
    pub endpoint: String,
    /// Send here instead of the ports file's endpoint (with --spec and --framing).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    #[arg(long, default_value = "network")]
    pub spec: String,
    #[arg(long, default_value = "2-byte-binary", value_name = "2-byte-binary|4-ascii")]
    pub framing: String,
    /// Test cards (a JSON array as in the ports file's `test_cards`) when there is no ports file.
    #[arg(long, value_name = "FILE")]
    pub cards: Option<PathBuf>,
    /// Offered rate, requests per second.
    #[arg(long)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long)]
    pub duration: f64,
    /// Where the JSON report goes; the HTML page and SVG plots go beside it.
    #[arg(long, value_name = "OUT")]
    pub report: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// An answer later than this after the intended send time is a timeout.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u64,
    /// Request kinds and weights: purchase, balance, atm-balance, atm-cash, decline-funds,
    /// decline-expiry (default: purchase=60,balance=10,atm-balance=10,decline-funds=10,decline-expiry=10).
    #[arg(long)]
    pub mix: Option<String>,
    /// Where each test card's next ATC is kept between runs (default: terminal-sim-atc.json in
    /// the system temporary folder), so that runs against the same network never replay one.
    #[arg(long, value_name = "FILE")]
    pub atc_state: Option<PathBuf>,
    /// Show the progress bar even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
}

/// What a finished run produced.
pub struct Outcome {
    pub report: load::Report,
    pub json: serde_json::Value,
    pub html: PathBuf,
}

pub async fn run(a: Args) -> Result<ExitCode> {
    let out = execute(&a).await?;
    if !a.quiet {
        let r = &out.report;
        println!(
            "sent {} approved {} declined {} errors {} timeouts {} unmatched {} | offered {}/s achieved {:.1}/s | p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms",
            r.sent,
            r.approved,
            r.declined,
            r.errors,
            r.timeouts,
            r.unmatched,
            r.offered_tps,
            r.achieved_tps,
            r.latency_us.p50 as f64 / 1000.0,
            r.latency_us.p99 as f64 / 1000.0,
            r.latency_us.p999 as f64 / 1000.0
        );
        if let Some(us) = r.generator_cpu_us_per_request {
            println!("generator CPU {us:.1} µs per request");
        }
        println!(
            "send lag (after the intended time) p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            r.send_lag_us.p50 as f64 / 1000.0,
            r.send_lag_us.p99 as f64 / 1000.0,
            r.send_lag_us.max as f64 / 1000.0
        );
        println!("report: {} and {}", a.report.display(), out.html.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The run itself, for callers that want the report (tests, other tools).
pub async fn execute(a: &Args) -> Result<Outcome> {
    if a.rate == 0 || a.duration.is_nan() || a.duration <= 0.0 {
        bail!("--rate and --duration must be above 0");
    }
    let ports = a.ports_file.as_ref().map(|p| PortsFile::load(p)).transpose()?;
    // With the ports file of a network of several switch nodes, the connections are spread over
    // every node's listener.
    let mut others = Vec::new();
    let (target, cards, atms) = match (&a.target, &ports) {
        (Some(addr), _) => {
            let cards: Vec<TestCard> = match (&a.cards, &ports) {
                (Some(f), _) => serde_json::from_str(
                    &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
                )
                .with_context(|| format!("{}: expected a JSON array of test cards", f.display()))?,
                (None, Some(p)) => p.test_cards.clone(),
                (None, None) => bail!("--target needs test cards: --ports-file or --cards"),
            };
            let atms = ports.as_ref().map(|p| p.atm_terminals.clone()).unwrap_or_default();
            (ports::target(addr, &a.spec, &a.framing)?, cards, atms)
        }
        (None, Some(p)) => {
            let Some(ep) = p.endpoint(&a.endpoint) else {
                bail!("--endpoint {:?}: expected acquirer or acquirer_ascii", a.endpoint)
            };
            for node in p.endpoints(&a.endpoint).into_iter().skip(1) {
                others.push(node.target()?);
            }
            (ep.target()?, p.test_cards.clone(), p.atm_terminals.clone())
        }
        (None, None) => bail!("give --ports-file, or --target with --cards"),
    };
    let mix: Mix = match &a.mix {
        Some(m) => m.parse()?,
        None => Mix::default(),
    };
    let plan = Plan {
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration),
        connections: a.connections.max(1),
        timeout: Duration::from_millis(a.timeout_ms),
    };
    let total = load::total_requests(&plan);
    let show = a.progress || (!a.quiet && std::io::stderr().is_terminal());
    if !a.quiet {
        eprintln!("building {total} requests ({mix}) ...");
    }
    let atc_state = a.atc_state.clone().unwrap_or_else(|| std::env::temp_dir().join("terminal-sim-atc.json"));
    // A missing or unreadable state file only means random starting ATCs.
    let atc_start: BTreeMap<String, u16> = std::fs::read_to_string(&atc_state)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let traffic = {
        let tp = TrafficPlan {
            atc_start: Some(&atc_start),
            spec: target.spec.clone(),
            cards: &cards,
            atms: &atms,
            mix: &mix,
            total,
            connections: plan.connections,
        };
        // The cards' cryptograms and the PIN blocks: CPU work off the runtime's threads.
        let built = std::thread::scope(|s| s.spawn(|| Traffic::build(&tp)).join());
        match built {
            Ok(t) => t?,
            Err(_) => bail!("building the requests failed"),
        }
    };
    let mut state = atc_start.clone();
    state.extend(traffic.next_atc.clone());
    std::fs::write(&atc_state, serde_json::to_string_pretty(&state)?)
        .with_context(|| format!("writing the ATC state {}", atc_state.display()))?;
    let bar = if show {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} sent ({per_sec})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let progress: Arc<dyn Fn(u64) + Send + Sync> = match bar.clone() {
        Some(b) => Arc::new(move |n| b.set_position(n)),
        None => Arc::new(|_| {}),
    };
    let addr = target.addr.clone();
    let spec_name = target.spec.name.clone();
    let framing = target.framing.to_string();
    let report =
        load::run_spread(std::iter::once(target).chain(others).collect(), plan, Arc::new(traffic), progress)
            .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let params: Vec<(&str, String)> = vec![
        ("target", addr.clone()),
        ("spec", spec_name.clone()),
        ("framing", framing.clone()),
        ("offered rate", format!("{} requests/s", a.rate)),
        ("duration", format!("{} s", a.duration)),
        ("connections", plan.connections.to_string()),
        ("response timeout", format!("{} ms", a.timeout_ms)),
        ("mix", mix.to_string()),
        ("test cards", cards.len().to_string()),
        ("test ATMs", atms.len().to_string()),
        ("finished", crate::mix::utc_now_text()),
    ];
    let mut json = serde_json::to_value(&report)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "parameters".into(),
            serde_json::json!({
                "target": addr, "spec": spec_name, "framing": framing, "rate": a.rate,
                "duration_s": a.duration, "connections": plan.connections, "timeout_ms": a.timeout_ms,
                "mix": mix.to_string(),
            }),
        );
    }
    if let Some(dir) = a.report.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&a.report, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", a.report.display()))?;
    let title = format!("Load report: {} requests/s for {} s against {}", a.rate, a.duration, addr);
    let html = crate::report::write(&report, &a.report, &title, &params)?;
    Ok(Outcome { report, json, html })
}
