//! `terminal-sim certify --ports-file FILE --suite NAME --report OUT`: runs a certification suite
//! against the switch, writes the JSON report (every case with pass/fail/skipped, expected and
//! observed), prints the table, and exits 0 only when every case passed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::certify::{self, IssuerAdmin, Setup, SuiteReport};
use terminal_kit::ports::{self, PortsFile};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The ports file of a running network (INTERFACES.md §5).
    #[arg(long, value_name = "FILE")]
    pub ports_file: PathBuf,
    /// The suite to run (`basic`).
    #[arg(long, default_value = "basic")]
    pub suite: String,
    /// Where the JSON report goes.
    #[arg(long, value_name = "OUT")]
    pub report: Option<PathBuf>,
    /// Which listener: `acquirer` or `acquirer_ascii`.
    #[arg(long, default_value = "acquirer")]
    pub endpoint: String,
    /// Run against this address instead (with --spec and --framing).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    #[arg(long, default_value = "network")]
    pub spec: String,
    #[arg(long, default_value = "2-byte-binary")]
    pub framing: String,
    /// The issuer simulator's admin port, for the issuer-timeout case (default: the ports
    /// file's `issuer_admin`; the case is skipped without one).
    #[arg(long, value_name = "HOST:PORT")]
    pub issuer_admin: Option<String>,
    /// The admin port's bearer credential (default: the ports file's `issuer_admin_token`).
    #[arg(long)]
    pub issuer_admin_token: Option<String>,
    /// How long to wait for each answer (above the switch's issuer timeout).
    #[arg(long, default_value_t = 15_000)]
    pub response_timeout_ms: u64,
    /// DE 41 of the suite's requests.
    #[arg(long, default_value = "CERT0001")]
    pub tid: String,
}

pub async fn run(a: Args) -> Result<ExitCode> {
    let report = execute(&a).await?;
    print!("{}", report.table());
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Runs the suite and writes the report; for callers that want the report itself.
pub async fn execute(a: &Args) -> Result<SuiteReport> {
    let p = PortsFile::load(&a.ports_file)?;
    let target = match &a.target {
        Some(addr) => ports::target(addr, &a.spec, &a.framing)?,
        None => match p.endpoint(&a.endpoint) {
            Some(ep) => ep.target()?,
            None => bail!("--endpoint {:?}: expected acquirer or acquirer_ascii", a.endpoint),
        },
    };
    let setup = Setup {
        target,
        cards: p.test_cards.clone(),
        issuer_admin: a.issuer_admin.clone().or_else(|| p.issuer_admin.clone()).map(|addr| IssuerAdmin {
            addr,
            token: a.issuer_admin_token.clone().or_else(|| p.issuer_admin_token.clone()).unwrap_or_default(),
        }),
        response_timeout: Duration::from_millis(a.response_timeout_ms),
        tid: a.tid.clone(),
    };
    let report = certify::run_suite(&a.suite, &setup).await?;
    if let Some(out) = &a.report {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(report)
}
