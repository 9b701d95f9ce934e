//! `wallet-sim`: the phone and its providers from the command line (see `wallet_sim::cli`).

use clap::Parser;

fn main() {
    door::process::no_huge_pages();
    let cli = wallet_sim::cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wallet-sim: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout();
    if let Err(e) = rt.block_on(wallet_sim::cli::run(cli, &mut out)) {
        eprintln!("wallet-sim: {e:#}");
        std::process::exit(1);
    }
}
