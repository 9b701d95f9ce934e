//! `paytool` — the payments engineer's calculator (INTERFACES.md §2).
//!
//! Thin by design: every subcommand parses its arguments, calls `codecs` or `crypto`, and prints
//! the answer. Clear keys and PINs given on the command line are test material; paytool never logs
//! them and never echoes them in an error.

mod cmd;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "paytool", version, about = "The payments engineer's calculator")]
struct Cli {
    /// Print one JSON object instead of the bare answer.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A MAC over hex data (ISO 9797-1 alg 1/3, CMAC, HMAC-SHA256).
    Mac(cmd::mac::MacArgs),
    /// A key check value (6 hex digits).
    Kcv(cmd::kcv::KcvArgs),
    /// TR-31 / X9.143 key blocks.
    #[command(subcommand)]
    Keyblock(cmd::keyblock::KeyblockCmd),
    /// EMV BER-TLV: decode to JSON.
    Tlv(cmd::tlv::TlvCmd),
    /// EMV application cryptograms, ARPCs and ICC master keys.
    #[command(subcommand)]
    Emv(cmd::emv::EmvCmd),
    /// CVV / iCVV / CVV2.
    Cvv(cmd::cvv::CvvArgs),
    /// ISO 9564 PIN blocks: encrypt, decrypt, translate.
    #[command(subcommand)]
    Pin(cmd::pin::PinCmd),
    /// Visa PIN verification value.
    Pvv(cmd::pin::PvvArgs),
    /// DUKPT initial and working keys (TDES X9.24-1, AES X9.24-3 with --aes).
    #[command(subcommand)]
    Dukpt(cmd::pin::DukptCmd),
    /// ISO 8583 messages: decode to JSON, encode from JSON, describe (masked).
    Iso8583(cmd::iso8583::Iso8583Cmd),
}

fn run(command: Command) -> output::CmdResult {
    match command {
        Command::Mac(a) => cmd::mac::run(a),
        Command::Kcv(a) => cmd::kcv::run(a),
        Command::Keyblock(c) => cmd::keyblock::run(c),
        Command::Tlv(c) => cmd::tlv::run(c),
        Command::Iso8583(c) => cmd::iso8583::run(c),
        Command::Emv(c) => cmd::emv::run(c),
        Command::Cvv(a) => cmd::cvv::run(a),
        Command::Pin(c) => cmd::pin::run(c),
        Command::Pvv(a) => cmd::pin::pvv(a),
        Command::Dukpt(c) => cmd::pin::dukpt(c),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            use clap::error::{ContextKind, ContextValue};
            if let Some(ContextValue::Strings(missing)) = e.get(ContextKind::InvalidArg) {
                eprintln!("paytool: {}: required but not given", missing.join(", "));
                return ExitCode::from(2);
            }
            // One line: clap's first line names the argument and the reason.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ");
            eprintln!("paytool: {first}");
            return ExitCode::from(2);
        }
    };
    match run(cli.command) {
        Ok(answer) => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            if answer.write(cli.json, &mut lock).and_then(|_| lock.flush()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(bad) => {
            eprintln!("paytool: {bad}");
            ExitCode::from(2)
        }
    }
}
