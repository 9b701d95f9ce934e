//! `paytool iso8583 decode|encode|describe` — ISO 8583 messages to and from the JSON form of
//! INTERFACES.md §1.
//!
//! `--spec` names a built-in spec (`iso87ascii`, `iso87binary`) or a spec file (`.toml` or
//! `.json`, see `docs/iso8583-spec-format.md`). The message comes on stdin: raw bytes, or hex text
//! (either case, trailing whitespace allowed) with `--hex`. `decode` prints the clear JSON form (test
//! material, as paytool's inputs are); `describe` prints the masked, human-readable dump the switch
//! logs.

use std::io::Read;
use std::sync::Arc;

use clap::{Args, Subcommand};
use codecs::iso8583::{Message, Spec};

use crate::output::{Answer, BadInput, CmdResult};

#[derive(Args)]
pub struct Iso8583Cmd {
    #[command(subcommand)]
    action: Action,
}

#[derive(Args)]
struct Common {
    /// A built-in spec (iso87ascii, iso87binary) or the path of a TOML/JSON spec file.
    #[arg(long, value_name = "S")]
    spec: String,
    /// The message on stdin (decode, describe) or stdout (encode) is hex text, not raw bytes.
    #[arg(long)]
    hex: bool,
}

#[derive(Subcommand)]
enum Action {
    /// Message on stdin → its JSON form.
    Decode(Common),
    /// JSON form on stdin → the message bytes (hex text with --hex).
    Encode(Common),
    /// Message on stdin → a masked, human-readable dump, one line per data element.
    Describe(Common),
}

pub fn run(cmd: Iso8583Cmd) -> CmdResult {
    match cmd.action {
        Action::Decode(c) => decode(&c).map(|m| Answer::Json(m.to_json())),
        Action::Describe(c) => decode(&c).map(|m| {
            let text = m.describe();
            Answer::Line { text: text.trim_end().to_string(), json: m.to_masked_json() }
        }),
        Action::Encode(c) => encode(&c),
    }
}

/// Loads `--spec`: a built-in name, else a TOML/JSON spec file.
pub fn load_spec(name: &str) -> Result<Arc<Spec>, BadInput> {
    Spec::load(name, std::path::Path::new(".")).map_err(|e| BadInput::new("--spec", e.to_string()))
}

fn read_stdin(limit: usize) -> Result<Vec<u8>, BadInput> {
    let mut buf = Vec::new();
    // One byte over the cap tells "too large" from "exactly at the cap".
    let cap = limit.saturating_mul(2).saturating_add(64) as u64;
    std::io::stdin()
        .take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| BadInput::new("stdin", format!("cannot read: {e}")))?;
    if buf.len() as u64 > cap {
        return Err(BadInput::new("stdin", format!("more than {cap} bytes: larger than any message")));
    }
    Ok(buf)
}

fn decode(c: &Common) -> Result<Message, BadInput> {
    let spec = load_spec(&c.spec)?;
    let input = read_stdin(spec.max_message_len)?;
    let bytes = if c.hex {
        let text = std::str::from_utf8(&input)
            .map_err(|_| BadInput::new("stdin", "hex text expected (--hex), found non-UTF-8 bytes"))?;
        crate::output::hex_arg("stdin", text.trim_end())?
    } else {
        input
    };
    Message::decode_slice(&spec, &bytes).map_err(|e| BadInput::new("stdin", e.to_string()))
}

fn encode(c: &Common) -> CmdResult {
    let spec = load_spec(&c.spec)?;
    let input = read_stdin(spec.max_message_len)?;
    let json: serde_json::Value =
        serde_json::from_slice(&input).map_err(|e| BadInput::new("stdin", format!("not JSON: {e}")))?;
    let msg = Message::from_json(&spec, &json).map_err(|e| BadInput::new("stdin", e.to_string()))?;
    let bytes = msg.encode().map_err(|e| BadInput::new("stdin", e.to_string()))?;
    if c.hex {
        let text = crypto::keys::to_hex(&bytes);
        Ok(Answer::Line { json: serde_json::json!({ "message": text }), text })
    } else {
        Ok(Answer::Bytes(bytes.to_vec()))
    }
}
