//! `terminal-sim` — the merchant-terminal side of the network from the command line: `pos` (a
//! contactless POS terminal), `checkout` (online checkout), `load` (the open-loop load generator
//! and its report) and `certify` (certification suites against a switch).
//! The subcommands live in the library's [`terminal_sim::cli`].

/// mimalloc, as the switch's binaries: the load generator builds and drops many small messages,
/// and its own CPU per request is part of what a load run measures.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    door::process::no_huge_pages();
    terminal_sim::cli::main()
}
