//! `paynet demo [--report FILE]`: the whole mission in one command ([`paynet::demo`]). The
//! network starts on 127.0.0.1 with ports from the OS, on the embedded defaults (SQLite in a
//! temporary folder, generated test keys under a generated LMK); the five provisioning flows each
//! put a card into a phone that then pays by tap, pays online and takes a cash advance; then one
//! declined case per reason. Each step prints as it happens, then the closing table; `--report`
//! writes the JSON of INTERFACES.md §3. Exit 0 only when every run did what it should.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct DemoArgs {
    /// Where to write the report (JSON, INTERFACES.md §3).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

pub fn run(a: DemoArgs) -> ExitCode {
    match demo(a) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("paynet demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn demo(a: DemoArgs) -> Result<bool> {
    // Quiet by default: the printed steps are the output; RUST_LOG shows the network's logs.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let started = std::time::Instant::now();
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let report = rt.block_on(async {
        let dir = tempfile::Builder::new().prefix("paynet-demo-").tempdir().context("temporary folder")?;
        let mut world = paynet::demo::World::start(dir.path()).await?;
        let p = &world.net.ports;
        println!(
            "network up on 127.0.0.1 (ports from the OS): switch {}:{} (network spec, 2-byte framing), \
             issuer simulator {}, token service {}, the phone's providers; {} test cards, {} test ATMs",
            p.acquirer.host,
            p.acquirer.port,
            p.issuer,
            p.provisioning_api,
            p.test_cards.len(),
            p.atm_terminals.len()
        );
        println!(
            "embedded defaults: SQLite stores under {}, generated test keys under a fresh LMK (memory only)",
            dir.path().display()
        );
        let stdout = std::io::stdout();
        let mut print = |line: &str| {
            let mut o = stdout.lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        };
        let report = paynet::demo::run_all(&mut world, &mut print).await;
        world.shutdown().await;
        Ok::<_, anyhow::Error>(report)
    })?;
    println!();
    print!("{}", report.table());
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    if let Some(path) = &a.report {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if !report.ok {
        for f in report.failures() {
            eprintln!("paynet demo: FAILED {f}");
        }
    }
    Ok(report.ok)
}
