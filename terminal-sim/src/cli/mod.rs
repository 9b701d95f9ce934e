//! The `terminal-sim` command line: one module per subcommand, each an `Args` (clap) and an
//! `async fn run(Args) -> anyhow::Result<ExitCode>`. Adding a subcommand is a variant of
//! [`Command`] and its module.

pub mod certify;
pub mod checkout;
pub mod load;
pub mod merchant;
pub mod pos;
pub mod reversals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "terminal-sim",
    version,
    about = "Merchant terminals: contactless POS, online checkout, load generator, certification"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Contactless POS: tap a phone or card file, send the 0100, check the ARPC, print the receipt.
    Pos(pos::Args),
    /// Online checkout: in-app with a phone's token and cryptogram, or card not present with CVV2.
    Checkout(checkout::Args),
    /// Deliver now the reversal advices terminals owe (kept in their state folder), list what is left.
    Reversals(reversals::Args),
    /// Open-loop load at a fixed rate with mixed POS/ATM traffic; JSON report + HTML with plots.
    Load(load::Args),
    /// Run a certification suite of cases against a switch; JSON report, table, exit 0 if all pass.
    Certify(certify::Args),
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Pos(a) => pos::run(a).await,
        Command::Checkout(a) => checkout::run(a).await,
        Command::Reversals(a) => reversals::run(a).await,
        Command::Load(a) => load::run(a).await,
        Command::Certify(a) => certify::run(a).await,
    }
}

/// The binary's entry point: exit 2 with a one-line error on bad input or failure to run.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("terminal-sim: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("terminal-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}
