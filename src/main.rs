//! `paynet` — the network in one binary: key management for a node (`keys`), and `serve` (switch +
//! issuer simulator on the embedded defaults, INTERFACES.md §5); `tour` (a short contactless
//! session); `demo` (the whole mission: the five provisioning flows × POS, online and ATM, and the
//! declines, INTERFACES.md §3).

mod cmd;

/// mimalloc: measurably faster than the system allocator under many small allocations.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the network (switch + issuer simulator) on 127.0.0.1 and write the ports file.
    Serve(cmd::serve::ServeArgs),
    /// One switch node from its configuration, as `serve --nodes N` runs the nodes after the first.
    #[command(hide = true)]
    Node(cmd::node::NodeArgs),
    /// Start the network, run a contactless terminal session against it, print the receipts.
    Tour(cmd::tour::TourArgs),
    /// The whole mission: five provisioning flows × POS, online and ATM, and the declines.
    Demo(cmd::demo::DemoArgs),
}

fn main() -> ExitCode {
    door::process::no_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(k) => cmd::keys::run(k),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Node(a) => cmd::node::run(a),
        Command::Tour(a) => cmd::tour::run(a),
        Command::Demo(a) => return cmd::demo::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paynet: {e:#}");
            ExitCode::from(2)
        }
    }
}
