//! `paynet` — the network in one binary: key management for a node today; `serve` (switch +
//! issuer simulator on the embedded defaults) and `demo` (the four operating models end to end)
//! join it as those parts land.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "paynet", version, about = "Payment-network switch and simulators")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Key management: the LMK and the keystore of key blocks under it.
    #[command(subcommand)]
    Keys(cmd::keys::Keys),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(k) => cmd::keys::run(k),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paynet: {e:#}");
            ExitCode::from(2)
        }
    }
}
