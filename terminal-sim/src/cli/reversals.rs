//! `terminal-sim reversals --ports-file F [--tid T] [--state DIR]`: delivers now the reversal
//! advices (0420) merchant terminals owe — kept in their state folder by `pos` and `checkout` when
//! no acknowledgement came (owed.rs) — and lists, masked, what is still owed. Every terminal with
//! owed advices in the folder, or only `--tid`. Exit 0 when nothing is owed any more, 1 when some
//! advice is still owed (or a failure, one line), 2 on bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::merchant::{self, Usage};
use crate::receipt::Currency;
use crate::terminal;
use terminal_kit::owed::{self, Connection, OwedAdvice, OwedAdvices, Refused};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The ports file of a running network (`paynet serve --ports-file`, INTERFACES.md §5).
    #[arg(long, value_name = "FILE")]
    pub ports_file: PathBuf,
    /// Which listener of the ports file: `acquirer` or `acquirer_ascii`.
    #[arg(long, default_value = "acquirer")]
    pub endpoint: String,
    /// Only this terminal's advices (default: every terminal with advices in the state folder).
    #[arg(long)]
    pub tid: Option<String>,
    /// The terminals' state folder (default: terminal-sim under the system temporary folder).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// How long to wait for each advice's acknowledgement (0430).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub advice_timeout_ms: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One terminal's outcome.
#[derive(Debug, Serialize)]
pub struct TerminalOutcome {
    pub tid: String,
    pub delivered: usize,
    pub refused: Vec<Refused>,
    pub remaining: Vec<OwedAdvice>,
}

/// What the command did.
#[derive(Debug, Serialize)]
pub struct Report {
    pub state: String,
    pub delivered: usize,
    pub refused: usize,
    pub remaining: usize,
    pub terminals: Vec<TerminalOutcome>,
}

pub async fn run(a: Args) -> Result<ExitCode> {
    match execute(&a).await {
        Ok(r) => {
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", text(&r));
            }
            Ok(if r.remaining == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Err(e) if e.is::<Usage>() => Err(e),
        Err(e) => {
            eprintln!("terminal-sim reversals: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Delivers what each terminal owes and collects what remains.
pub async fn execute(a: &Args) -> Result<Report> {
    if let Some(t) = &a.tid
        && (t.is_empty() || t.len() > 8 || !t.is_ascii())
    {
        return Err(merchant::usage(format!("--tid {t:?}: expected 1 to 8 ASCII characters")));
    }
    let (_, _, target) = merchant::acquirer(&a.ports_file, &a.endpoint)?;
    let dir = a.state.clone().unwrap_or_else(terminal::default_state_dir);
    let tids = match &a.tid {
        Some(t) => vec![t.clone()],
        None => OwedAdvices::tids(&dir).with_context(|| format!("--state {}", dir.display()))?,
    };
    let wait = Duration::from_millis(a.advice_timeout_ms);
    let mut conn = Connection::new(&target, None);
    let mut report = Report {
        state: dir.display().to_string(),
        delivered: 0,
        refused: 0,
        remaining: 0,
        terminals: vec![],
    };
    for tid in tids {
        let mut store = OwedAdvices::open(&dir, &tid)
            .with_context(|| format!("the reversal advices of {tid} in {}", dir.display()))?;
        let s = owed::settle(&mut store, &mut conn, &target.spec, wait)
            .await
            .with_context(|| format!("the reversal advices of {tid} in {}", dir.display()))?;
        report.delivered += s.delivered;
        report.refused += s.refused.len();
        report.remaining += s.remaining.len();
        report.terminals.push(TerminalOutcome {
            tid,
            delivered: s.delivered,
            refused: s.refused,
            remaining: s.remaining,
        });
    }
    Ok(report)
}

fn amount(a: &OwedAdvice) -> String {
    match a.currency.parse().ok().and_then(Currency::from_numeric) {
        Some(c) => format!("{} {}", c.alpha, c.format(a.amount_minor)),
        None => format!("{} {}", a.currency, a.amount_minor),
    }
}

fn line(a: &OwedAdvice) -> String {
    format!(
        "  STAN {} reverses {}  RRN {}  {}  {}  DE 39 {}  sent {}x",
        a.stan,
        a.original_stan,
        a.rrn,
        a.pan,
        amount(a),
        a.reason,
        a.attempts
    )
}

/// The report as a table.
pub fn text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if r.terminals.is_empty() {
        let _ = writeln!(s, "no reversal advices owed in {}", r.state);
    }
    for t in &r.terminals {
        let _ = writeln!(
            s,
            "{}: {} delivered, {} refused, {} still owed",
            t.tid,
            t.delivered,
            t.refused.len(),
            t.remaining.len()
        );
        for f in &t.refused {
            let _ = writeln!(s, "{}  refused: DE 39 {}", line(&f.advice), f.response_code);
        }
        for a in &t.remaining {
            let _ = writeln!(s, "{}  still owed", line(a));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_terminal_and_lists_what_is_owed_masked() {
        let owed = OwedAdvice {
            stan: "000043".into(),
            original_stan: "000042".into(),
            rrn: "633009000042".into(),
            pan: "476173******0010".into(),
            amount_minor: 1250,
            currency: "978".into(),
            reason: "68".into(),
            transmitted: "1125093115".into(),
            attempts: 3,
            sealed: String::new(),
        };
        let r = Report {
            state: "/tmp/terminal-sim".into(),
            delivered: 1,
            refused: 1,
            remaining: 1,
            terminals: vec![TerminalOutcome {
                tid: "TERM0001".into(),
                delivered: 1,
                refused: vec![Refused { advice: owed.clone(), response_code: "30".into() }],
                remaining: vec![owed],
            }],
        };
        let t = text(&r);
        assert!(t.contains("TERM0001: 1 delivered, 1 refused, 1 still owed"), "{t}");
        assert!(t.contains("STAN 000043 reverses 000042") && t.contains("476173******0010"), "{t}");
        assert!(t.contains("EUR 12.50") && t.contains("sent 3x  still owed"), "{t}");
        assert!(t.contains("refused: DE 39 30"), "{t}");
        let none = Report { terminals: vec![], delivered: 0, refused: 0, remaining: 0, state: "D".into() };
        assert_eq!(text(&none), "no reversal advices owed in D\n");
    }
}
